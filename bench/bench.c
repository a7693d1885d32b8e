/*  asyncq-bench: end-to-end throughput and latency of a real broker.

    Starts asyncq-broker on a free loopback port, P producer and C consumer
    processes (forks of this program using the client library), puts N items
    of SIZE bytes, joins, and prints items/s (first put to join), put-to-
    delivery latency percentiles (the producer's send time travels in the
    item; all processes share this host's monotonic clock) and the broker's
    peak resident memory. A benchmark, not a test: it asserts nothing. */
#include <czmq.h>
#include <getopt.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "asyncq/consumer.h"
#include "asyncq/control.h"
#include "asyncq/process.h"
#include "asyncq/producer.h"
#include "asyncq/program.h"

typedef struct {
    uint64_t producers, consumers, items, size, credit;
} bench_options_t;

/*  Shared with the children: one latency slot per item. */
typedef struct {
    atomic_uint_fast64_t received;
    uint32_t latency_us[];
} shared_t;

static int64_t s_now_us(void)
{
    return zclock_usecs(); /* monotonic */
}

static int s_produce(const char *address, const bench_options_t *opts, uint64_t count)
{
    aq_status_t rc;
    aq_producer_t *producer = aq_producer_new(address, "bench", &rc);
    if (!producer)
        return 1;
    char *item = calloc(1, opts->size);
    for (uint64_t i = 0; i < count && rc == AQ_OK; i++) {
        int64_t now = s_now_us();
        memcpy(item, &now, sizeof now);
        rc = aq_producer_put(producer, "bench", item, opts->size);
    }
    if (rc == AQ_OK)
        rc = aq_producer_sync(producer, -1);
    free(item);
    aq_producer_destroy(&producer);
    return rc == AQ_OK ? 0 : 1;
}

static int s_consume(const char *address, const bench_options_t *opts, shared_t *shared)
{
    aq_status_t rc;
    aq_consumer_t *consumer = aq_consumer_new(address, "bench", opts->credit, "bench", &rc);
    if (!consumer)
        return 1;
    while (!aq_interrupted()) {
        aq_item_t item;
        rc = aq_consumer_get(consumer, &item, 200);
        if (rc == AQ_TIMEOUT)
            continue;
        if (rc)
            break;
        int64_t sent;
        memcpy(&sent, item.data, sizeof sent);
        uint64_t slot = atomic_fetch_add(&shared->received, 1);
        if (slot < opts->items)
            shared->latency_us[slot] = (uint32_t) (s_now_us() - sent);
        aq_consumer_ack(consumer, item.id);
    }
    aq_consumer_destroy(&consumer);
    return 0;
}

static pid_t s_fork(int (*run)(void), int *failed)
{
    pid_t pid = fork();
    if (pid == 0)
        _exit(run());
    if (pid < 0)
        (*failed)++;
    return pid;
}

static int s_compare_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *) a, y = *(const uint32_t *) b;
    return (x > y) - (x < y);
}

static uint64_t s_broker_peak_kib(pid_t pid)
{
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/status", (int) pid);
    FILE *file = fopen(path, "r");
    uint64_t kib = 0;
    while (file && fgets(line, sizeof line, file))
        if (strncmp(line, "VmHWM:", 6) == 0)
            kib = strtoull(line + 6, NULL, 10);
    if (file)
        fclose(file);
    return kib;
}

/* The children's job, set before fork. */
static const char *g_address;
static bench_options_t g_opts;
static shared_t *g_shared;
static uint64_t g_count;
static int s_run_producer(void) { return s_produce(g_address, &g_opts, g_count); }
static int s_run_consumer(void) { return s_consume(g_address, &g_opts, g_shared); }

static int s_parse(int argc, char **argv, bench_options_t *opts)
{
    static const struct option options[] = {
        {"producers", required_argument, 0, 'p'}, {"consumers", required_argument, 0, 'c'},
        {"items", required_argument, 0, 'n'},     {"size", required_argument, 0, 's'},
        {"credit", required_argument, 0, 'C'},    {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0}};
    *opts = (bench_options_t){1, 1, 100000, 64, 256};
    int opt;
    while ((opt = getopt_long(argc, argv, "p:c:n:s:h", options, NULL)) != -1) {
        uint64_t *target = opt == 'p' ? &opts->producers : opt == 'c' ? &opts->consumers
                         : opt == 'n' ? &opts->items : opt == 's' ? &opts->size
                         : opt == 'C' ? &opts->credit : NULL;
        if (opt == 'h') {
            printf("Usage: asyncq-bench [-p PRODUCERS] [-c CONSUMERS] [-n ITEMS] [-s SIZE] [--credit N]\n"
                   "Defaults: 1 producer, 1 consumer, 100000 items of 64 bytes, credit 256.\n");
            exit(0);
        }
        if (!target || !aq_arg_u64(optarg, target) || *target == 0) {
            fprintf(stderr, "asyncq-bench: bad option (see --help)\n");
            return 0;
        }
    }
    if (opts->size < sizeof(int64_t))
        opts->size = sizeof(int64_t);
    return 1;
}

int main(int argc, char **argv)
{
    bench_options_t opts;
    if (!s_parse(argc, argv, &opts))
        return AQ_EXIT_USAGE;
    size_t shared_size = sizeof(shared_t) + opts.items * sizeof(uint32_t);
    shared_t *shared = mmap(NULL, shared_size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (shared == MAP_FAILED)
        return AQ_EXIT_FAILURE;
    char path[4096], address[256];
    aq_process_t broker;
    if (aq_program_path("asyncq-broker", path, sizeof path))
        return AQ_EXIT_FAILURE;
    char *broker_argv[] = {path, "--bind", "tcp://127.0.0.1:0", NULL};
    if (aq_process_spawn(&broker, broker_argv, 1, 1)
        || !aq_process_expect(&broker, "READY ", address, sizeof address, 10000)) {
        fprintf(stderr, "asyncq-bench: broker did not start\n");
        aq_process_stop(&broker, SIGKILL, 1000);
        return AQ_EXIT_FAILURE;
    }
    g_address = address;
    g_opts = opts;
    g_shared = shared;
    int failed = 0;
    pid_t *children = calloc(opts.producers + opts.consumers, sizeof *children);
    for (uint64_t i = 0; i < opts.consumers; i++)
        children[i] = s_fork(s_run_consumer, &failed);
    int64_t started = s_now_us();
    for (uint64_t i = 0; i < opts.producers; i++) {
        g_count = opts.items / opts.producers + (i < opts.items % opts.producers ? 1 : 0);
        children[opts.consumers + i] = s_fork(s_run_producer, &failed);
    }
    for (uint64_t i = 0; i < opts.producers; i++) {
        int status;
        waitpid(children[opts.consumers + i], &status, 0);
        failed += !(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    }
    /* The parent talks to the broker only now, after every fork. */
    aq_status_t rc;
    aq_session_t *session = aq_session_new(address, "bench-join", 0, 5000, &rc);
    aq_join_result_t result;
    rc = session ? aq_join(session, "bench", 0, AQ_JOIN_BEFORE, &result) : rc;
    int64_t elapsed = s_now_us() - started;
    aq_session_destroy(&session);
    uint64_t peak_kib = s_broker_peak_kib(broker.pid);
    for (uint64_t i = 0; i < opts.consumers; i++) {
        kill(children[i], SIGTERM);
        waitpid(children[i], NULL, 0);
    }
    aq_process_stop(&broker, SIGTERM, 5000);

    uint64_t received = atomic_load(&shared->received);
    uint64_t samples = received < opts.items ? received : opts.items;
    qsort(shared->latency_us, samples, sizeof(uint32_t), s_compare_u32);
    printf("asyncq-bench: %llu producers, %llu consumers, %llu items of %llu bytes, credit %llu\n",
           (unsigned long long) opts.producers, (unsigned long long) opts.consumers,
           (unsigned long long) opts.items, (unsigned long long) opts.size,
           (unsigned long long) opts.credit);
    if (rc != AQ_OK || failed || samples == 0) {
        printf("  FAILED: join %s, %d producers failed, %llu items received\n", aq_strerror(rc),
               failed, (unsigned long long) received);
        return AQ_EXIT_FAILURE;
    }
    printf("  throughput   %.0f items/s (first put to join: %.3f s)\n",
           (double) opts.items * 1e6 / (double) elapsed, (double) elapsed / 1e6);
    printf("  put->get     p50 %.3f ms, p99 %.3f ms, max %.3f ms\n",
           shared->latency_us[samples / 2] / 1e3, shared->latency_us[samples * 99 / 100] / 1e3,
           shared->latency_us[samples - 1] / 1e3);
    printf("  broker peak RSS %.1f MiB; deliveries %llu (redeliveries %llu)\n", peak_kib / 1024.0,
           (unsigned long long) received, (unsigned long long) (received - opts.items));
    free(children);
    munmap(shared, shared_size);
    return AQ_EXIT_OK;
}
