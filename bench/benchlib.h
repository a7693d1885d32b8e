/*  What the three benchmark programs (asyncq-bench, asyncq-relay-bench,
    asyncq-redis-bench) do the same way, so that their figures compare: the
    clock, shared memory between forked processes, percentiles, a process's
    resident memory, cleanup on a signal. No ZeroMQ, no asyncq library: the
    baselines must not depend on what they are compared with. */
#ifndef ASYNCQ_BENCHLIB_H
#define ASYNCQ_BENCHLIB_H

#include <signal.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/*  Every process of one run stamps times from this clock (CLOCK_MONOTONIC,
    shared by all processes of the host), in microseconds. */
int64_t bench_now_us(void);

/*  Sleeps until bench_now_us() reaches `when_us`. */
void bench_sleep_until_us(int64_t when_us);
void bench_sleep_us(int64_t us);

/*  Anonymous memory shared with the processes forked after it; zeroed. */
void *bench_shared_new(size_t size);
void bench_shared_free(void *shared, size_t size);

/*  Lock-free max and min of a shared time. */
void bench_atomic_max(atomic_int_fast64_t *target, int64_t value);
void bench_atomic_min(atomic_int_fast64_t *target, int64_t value);

/*  Forks a child that runs `run(arg)` and exits with its result. The child
    dies with its parent (PR_SET_PDEATHSIG) and starts with default
    SIGINT/SIGTERM handling. The pid is remembered, for bench_stop_all.
    Returns the pid, or -1. */
pid_t bench_fork(int (*run)(void *arg), void *arg);

/*  Remembers a process started some other way (a server), for
    bench_stop_all and the signal handler. */
void bench_track(pid_t pid);
void bench_untrack(pid_t pid);

/*  SIGINT, SIGTERM and SIGHUP in the parent: SIGKILL every tracked process
    and set bench_signalled (wait loops look at it; the caller then cleans
    up files and exits). */
void bench_catch_signals(void);
extern volatile sig_atomic_t bench_signalled;

/*  Sends `sig` to every tracked process still running, waits up to
    timeout_ms for them, then SIGKILLs and reaps the rest. */
void bench_stop_all(int sig, int timeout_ms);

/*  Waits for `pid` up to timeout_ms (-1: for ever). Returns 1 if it exited
    with status 0, 0 if it failed, -1 if it is still running. */
int bench_wait(pid_t pid, int timeout_ms);

/*  Waits until *counter >= target, a failure is counted in *failed, a
    signal arrives, or timeout_ms passes. Returns 1 when reached. */
int bench_wait_count(atomic_uint_fast64_t *counter, uint64_t target, atomic_uint_fast64_t *failed,
                     int timeout_ms);

/*  A line of /proc/PID/status ("VmRSS:", "VmHWM:"), in KiB; 0 if absent. */
uint64_t bench_proc_kib(pid_t pid, const char *field);

/*  Sorts `samples` and writes p50, p99, p99.9 and max (ms) after `label`.
    Samples equal to UINT32_MAX are left out. */
void bench_print_percentiles(const char *label, uint32_t *samples, size_t count);

/*  A peer's throughput line: `items` over the window from the first
    publish to the later of the last ack sent and the last confirm
    received. `ack` and `confirm` name the two in the peer's words, `note`
    says how its acks end. */
void bench_print_window(uint64_t items, int64_t first_put_us, int64_t last_ack_us,
                        int64_t last_confirm_us, const char *ack, const char *confirm,
                        const char *note);

/*  A whole number, with an optional k/M suffix (1000, 1000000). */
int bench_parse_u64(const char *text, uint64_t *value);

/*  A free TCP port on 127.0.0.1 (bound, then released), or 0. */
int bench_free_port(void);
/*  The first of `count` (at most 16) consecutive loopback ports free now;
    0 if none was found. */
int bench_free_ports(int count);

/*  A new directory under $TMPDIR (default /tmp) named prefix-XXXXXX,
    written into buf; and removing one with everything in it. */
int bench_temp_dir(const char *prefix, char *buf, size_t size);
void bench_remove_tree(const char *path);

/*  Writes `text` to dir/name; 1 if it did. */
int bench_write_file(const char *dir, const char *name, const char *text);

/*  In a forked child about to exec a server: its stdout and stderr to
    dir/name (appended), default signal handling, death with the parent. */
void bench_child_output(const char *dir, const char *name);

#endif
