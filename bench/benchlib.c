#define _GNU_SOURCE
#include "benchlib.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

volatile sig_atomic_t bench_signalled;

#define TRACKED_MAX 256
static volatile pid_t s_tracked[TRACKED_MAX];

int64_t bench_now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t) ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

void bench_sleep_until_us(int64_t when_us)
{
    struct timespec ts = {(time_t) (when_us / 1000000), (long) (when_us % 1000000) * 1000};
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR && !bench_signalled)
        ;
}

void bench_sleep_us(int64_t us)
{
    bench_sleep_until_us(bench_now_us() + us);
}

void *bench_shared_new(size_t size)
{
    void *shared = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    return shared == MAP_FAILED ? NULL : shared;
}

void bench_shared_free(void *shared, size_t size)
{
    if (shared)
        munmap(shared, size);
}

void bench_atomic_max(atomic_int_fast64_t *target, int64_t value)
{
    int64_t seen = atomic_load(target);
    while (value > seen && !atomic_compare_exchange_weak(target, &seen, value))
        ;
}

void bench_atomic_min(atomic_int_fast64_t *target, int64_t value)
{
    int64_t seen = atomic_load(target);
    while (value < seen && !atomic_compare_exchange_weak(target, &seen, value))
        ;
}

void bench_track(pid_t pid)
{
    for (int i = 0; i < TRACKED_MAX; i++)
        if (s_tracked[i] == 0) {
            s_tracked[i] = pid;
            return;
        }
}

void bench_untrack(pid_t pid)
{
    for (int i = 0; i < TRACKED_MAX; i++)
        if (s_tracked[i] == pid)
            s_tracked[i] = 0;
}

pid_t bench_fork(int (*run)(void *arg), void *arg)
{
    pid_t parent = getpid();
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid == 0) {
        signal(SIGINT, SIG_DFL);
        signal(SIGTERM, SIG_DFL);
        signal(SIGHUP, SIG_DFL);
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent)
            _exit(1);
        for (int i = 0; i < TRACKED_MAX; i++)
            s_tracked[i] = 0; /* the parent's list, not ours */
        _exit(run(arg));
    }
    if (pid > 0)
        bench_track(pid);
    return pid;
}

static void s_on_signal(int sig)
{
    bench_signalled = sig;
    for (int i = 0; i < TRACKED_MAX; i++)
        if (s_tracked[i] > 0)
            kill(s_tracked[i], SIGKILL);
}

void bench_catch_signals(void)
{
    struct sigaction action;
    memset(&action, 0, sizeof action);
    action.sa_handler = s_on_signal;
    sigemptyset(&action.sa_mask);
    sigaction(SIGINT, &action, NULL);
    sigaction(SIGTERM, &action, NULL);
    sigaction(SIGHUP, &action, NULL);
}

void bench_stop_all(int sig, int timeout_ms)
{
    for (int i = 0; i < TRACKED_MAX; i++)
        if (s_tracked[i] > 0)
            kill(s_tracked[i], sig);
    int64_t deadline = bench_now_us() + (int64_t) timeout_ms * 1000;
    for (int i = 0; i < TRACKED_MAX; i++) {
        pid_t pid = s_tracked[i];
        if (pid <= 0)
            continue;
        while (waitpid(pid, NULL, WNOHANG) == 0) {
            if (bench_now_us() >= deadline) {
                kill(pid, SIGKILL);
                waitpid(pid, NULL, 0);
                break;
            }
            struct timespec pause = {0, 1000000};
            nanosleep(&pause, NULL);
        }
        s_tracked[i] = 0;
    }
}

int bench_wait(pid_t pid, int timeout_ms)
{
    int64_t deadline = timeout_ms < 0 ? INT64_MAX : bench_now_us() + (int64_t) timeout_ms * 1000;
    for (;;) {
        int status;
        pid_t done = waitpid(pid, &status, WNOHANG);
        if (done == pid) {
            bench_untrack(pid);
            return WIFEXITED(status) && WEXITSTATUS(status) == 0;
        }
        if (done < 0) {
            bench_untrack(pid);
            return 0;
        }
        if (bench_signalled || bench_now_us() >= deadline)
            return -1;
        bench_sleep_us(1000);
    }
}

int bench_wait_count(atomic_uint_fast64_t *counter, uint64_t target, atomic_uint_fast64_t *failed,
                     int timeout_ms)
{
    int64_t deadline = timeout_ms < 0 ? INT64_MAX : bench_now_us() + (int64_t) timeout_ms * 1000;
    while (atomic_load(counter) < target) {
        if (bench_signalled || (failed && atomic_load(failed)) || bench_now_us() >= deadline)
            return 0;
        bench_sleep_us(200);
    }
    return 1;
}

uint64_t bench_proc_kib(pid_t pid, const char *field)
{
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/status", (int) pid);
    FILE *file = fopen(path, "r");
    uint64_t kib = 0;
    size_t length = strlen(field);
    while (file && fgets(line, sizeof line, file))
        if (strncmp(line, field, length) == 0)
            kib = strtoull(line + length, NULL, 10);
    if (file)
        fclose(file);
    return kib;
}

static int s_compare_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *) a, y = *(const uint32_t *) b;
    return (x > y) - (x < y);
}

void bench_print_window(uint64_t items, int64_t first_put_us, int64_t last_ack_us,
                        int64_t last_confirm_us, const char *ack, const char *confirm,
                        const char *note)
{
    int64_t end_us = last_ack_us > last_confirm_us ? last_ack_us : last_confirm_us;
    double seconds = (double) (end_us - first_put_us) / 1e6;
    int64_t apart_us = last_confirm_us > last_ack_us ? last_confirm_us - last_ack_us
                                                     : last_ack_us - last_confirm_us;
    printf("  throughput   %.0f items/s (first publish to the last %s sent or %s received,"
           " whichever is later: %.3f s; %s; last %s %.3f ms %s the last ack)\n",
           (double) items / seconds, ack, confirm, seconds, note, confirm,
           (double) apart_us / 1e3, last_confirm_us > last_ack_us ? "after" : "before");
}

void bench_print_percentiles(const char *label, uint32_t *samples, size_t count)
{
    qsort(samples, count, sizeof *samples, s_compare_u32);
    while (count && samples[count - 1] == UINT32_MAX)
        count--;
    if (count == 0) {
        printf("  %-12s no samples\n", label);
        return;
    }
    printf("  %-12s p50 %.3f ms, p99 %.3f ms, p99.9 %.3f ms, max %.3f ms (%zu samples)\n", label,
           samples[count / 2] / 1e3, samples[count * 99 / 100] / 1e3,
           samples[count * 999 / 1000] / 1e3, samples[count - 1] / 1e3, count);
}

int bench_parse_u64(const char *text, uint64_t *value)
{
    if (!text || *text < '0' || *text > '9')
        return 0;
    char *end;
    errno = 0;
    unsigned long long number = strtoull(text, &end, 10);
    uint64_t scale = 1;
    if (*end == 'k' || *end == 'K')
        scale = 1000, end++;
    else if (*end == 'M')
        scale = 1000000, end++;
    if (errno || *end || number > UINT64_MAX / scale)
        return 0;
    *value = (uint64_t) number * scale;
    return 1;
}

int bench_free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        return 0;
    struct sockaddr_in address = {.sin_family = AF_INET, .sin_port = 0};
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t length = sizeof address;
    int port = 0;
    if (bind(fd, (struct sockaddr *) &address, sizeof address) == 0
        && getsockname(fd, (struct sockaddr *) &address, &length) == 0)
        port = ntohs(address.sin_port);
    close(fd);
    return port;
}

int bench_free_ports(int count)
{
    for (int attempt = 0; attempt < 64; attempt++) {
        int base = bench_free_port();
        if (!base || base + count > 65535)
            continue;
        int fds[16], bound = 0;
        for (; bound < count && bound < 16; bound++) {
            fds[bound] = socket(AF_INET, SOCK_STREAM, 0);
            struct sockaddr_in address = {.sin_family = AF_INET,
                                          .sin_port = htons((uint16_t) (base + bound))};
            address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
            if (fds[bound] < 0
                || bind(fds[bound], (struct sockaddr *) &address, sizeof address) != 0) {
                if (fds[bound] >= 0)
                    close(fds[bound]);
                break;
            }
        }
        for (int i = 0; i < bound; i++)
            close(fds[i]);
        if (bound == count)
            return base;
    }
    return 0;
}

int bench_temp_dir(const char *prefix, char *buf, size_t size)
{
    const char *base = getenv("TMPDIR");
    if (!base || !*base)
        base = "/tmp";
    if (snprintf(buf, size, "%s/%s-XXXXXX", base, prefix) >= (int) size)
        return -1;
    return mkdtemp(buf) ? 0 : -1;
}

static int s_remove_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void) st;
    (void) flag;
    (void) ftw;
    remove(path);
    return 0;
}

void bench_remove_tree(const char *path)
{
    if (path && *path)
        nftw(path, s_remove_one, 16, FTW_DEPTH | FTW_PHYS);
}

int bench_write_file(const char *dir, const char *name, const char *text)
{
    char path[1200];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *file = fopen(path, "w");
    int ok = file && fputs(text, file) >= 0;
    if (file)
        ok = fclose(file) == 0 && ok;
    return ok;
}

void bench_child_output(const char *dir, const char *name)
{
    char path[1200];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    int fd = open(path, O_WRONLY | O_CREAT | O_APPEND, 0600);
    if (fd >= 0) {
        dup2(fd, 1);
        dup2(fd, 2);
        close(fd);
    }
    signal(SIGINT, SIG_DFL);
    signal(SIGTERM, SIG_DFL);
    signal(SIGHUP, SIG_DFL);
    prctl(PR_SET_PDEATHSIG, SIGKILL);
}
