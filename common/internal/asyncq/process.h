/*  Starting and stopping asyncq programs from another program: the demo,
    the benchmark and the end-to-end tests. posix_spawn, since czmq's zproc
    is not in Debian's build. */
#ifndef ASYNCQ_PROCESS_H
#define ASYNCQ_PROCESS_H

#include <stddef.h>
#include <sys/types.h>

typedef struct {
    pid_t pid;         /* 0 when not running */
    int out_fd;        /* read end of its stdout, or -1 if not captured */
    int in_fd;         /* write end of its stdin (non-blocking), or -1 */
    char buf[8192];    /* bytes read from out_fd, not yet returned as lines */
    size_t buffered;
    int exit_code;     /* after aq_process_wait: exit status, or 128+signal */
} aq_process_t;

/*  Where a started program's stdin comes from. */
enum { AQ_STDIN_INHERIT = 0, AQ_STDIN_NULL = 1, AQ_STDIN_PIPE = 2 };

/*  Starts argv[0] (a path) with argv. With capture, its stdout is a pipe read
    by aq_process_read_line; otherwise it shares ours. stdin_mode is one of
    AQ_STDIN_*; with AQ_STDIN_PIPE the caller writes to in_fd. Returns 0, or
    -1 with errno. */
int aq_process_spawn(aq_process_t *self, char *const argv[], int capture, int stdin_mode);

/*  aq_process_spawn with its stderr appended to the file at `stderr_path`
    (NULL: shared with ours). */
int aq_process_spawn_logged(aq_process_t *self, char *const argv[], int capture, int stdin_mode,
                            const char *stderr_path);

/*  Reads one line of its stdout (without the newline) into buf, waiting up
    to timeout_ms. Returns 1 for a line, 0 on time-out, -1 at end of output. */
int aq_process_read_line(aq_process_t *self, char *buf, size_t size, int timeout_ms);

/*  Reads lines until one starts with prefix; copies the rest of it to buf.
    Returns 1 if found, 0 if the time ran out or the output ended. */
int aq_process_expect(aq_process_t *self, const char *prefix, char *buf, size_t size,
                      int timeout_ms);

/*  Waits up to timeout_ms (-1: forever) for it to exit. Returns 1 if it
    exited (exit_code set), 0 if still running. */
int aq_process_wait(aq_process_t *self, int timeout_ms);

/*  Sends sig, waits up to timeout_ms, then SIGKILLs if needed and reaps.
    Harmless on a process that is not running. */
void aq_process_stop(aq_process_t *self, int sig, int timeout_ms);

/*  Path of a sibling asyncq program: $ASYNCQ_BIN_DIR/name, else the folder of
    the running program. Returns 0, or -1 if it cannot be found. */
int aq_program_path(const char *name, char *buf, size_t size);

#endif
