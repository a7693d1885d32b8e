/*  What a person waiting at a terminal sees: one status line on stderr,
    rewritten in place, numbers written to be read (1,234,567; 3 min 12 s)
    and a smoothed rate. The line is drawn only when stderr is a terminal,
    so what a program writes to a pipe or a file stays as it was. */
#ifndef ASYNCQ_PROGRESS_H
#define ASYNCQ_PROGRESS_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    int active;       /* stderr is a terminal: the line is drawn */
    int shown;        /* a line is on the screen and not ended yet */
    int64_t drawn_ms; /* when it was last drawn (monotonic) */
} aq_progress_t;

/*  Active if stderr is a terminal (and TERM is not "dumb"). */
void aq_progress_init(aq_progress_t *self);

/*  True if active and at least `interval_ms` have passed since the last
    draw: a caller that counts fast redraws a few times a second only. */
int aq_progress_due(const aq_progress_t *self, int interval_ms);

/*  Replaces the line with the formatted text, cut to the terminal's width
    so that it never wraps (a wrapped line could not be rewritten). */
void aq_progress_show(aq_progress_t *self, const char *format, ...)
    __attribute__((format(printf, 2, 3)));

/*  Erases the line, leaving the cursor at its start: before other output
    goes to the same terminal, or once the wait is over. */
void aq_progress_hide(aq_progress_t *self);

/*  Ends the line with a newline, so it stays on the screen. */
void aq_progress_keep(aq_progress_t *self);

/*  A counter's rate per second, smoothed over a few seconds so that an
    estimate of the time left does not jump about. */
typedef struct {
    int64_t at_ms;   /* when the counter was last sampled; 0 before the first */
    uint64_t count;  /* its value then */
    double per_s;    /* the smoothed rate; < 0 until two samples */
} aq_rate_t;

void aq_rate_init(aq_rate_t *self);

/*  Feeds the counter's value now. Samples closer than 200 ms to the last
    are ignored; the rate is known once the counter has moved; a counter
    that went down restarts it. */
void aq_rate_update(aq_rate_t *self, uint64_t count);

/*  Writes `value` with thousands separators ("1,234,567"); returns buf. */
char *aq_format_count(uint64_t value, char *buf, size_t size);

/*  Writes a duration in words a person reads at a glance ("45 s",
    "3 min 12 s", "2 h 5 min", "3 d 4 h"); returns buf. */
char *aq_format_duration(double seconds, char *buf, size_t size);

#endif
