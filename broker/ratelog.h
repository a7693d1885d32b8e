/*  The broker's log: one line per event on stderr, with a UTC time stamp;
    lines caused by peers rate-limited per cause, and anything a peer sent
    escaped before it is written.

    A flood of bad input, expired leases or refused connections must not
    flood the log (the old broker wrote 199 449 "lease expired" lines in one
    run): each cause gets a ratelog_t that writes at most `per_second` lines
    a second and then says how many it left out. */
#ifndef BROKER_RATELOG_H
#define BROKER_RATELOG_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    const char *cause;   /* "bad input", "lease expired"... */
    int per_second;
    int64_t window_ms;   /* start of the current second */
    int lines;           /* lines asked for in it */
    uint64_t total;      /* lines asked for, ever */
} ratelog_t;

void ratelog_init(ratelog_t *self, const char *cause, int per_second);

/*  Writes "CAUSE: text" unless this second's lines are spent (counted
    either way). */
void ratelog_line(ratelog_t *self, int64_t now_ms, const char *format, ...)
    __attribute__((format(printf, 3, 4)));

/*  Writes one line, not limited: the broker's own events. */
void log_line(const char *format, ...) __attribute__((format(printf, 1, 2)));

/*  Every later line names shard K (a broker of a service, PROTOCOL.md 4.15). */
void log_set_shard(int shard);

/*  Copies `data` into dest (NUL-terminated, cut to fit) with every byte
    outside printable ASCII, and the backslash, written as \xNN: nothing a
    peer sends can start a line or a terminal escape in the log. Returns
    dest. */
char *log_escape(char *dest, size_t size, const void *data, size_t length);

#endif
