/*  asyncq demo: the reference main(nprod, ncon) as processes. Starts a
    broker (unless --broker names a running one), NCON consumers and NPROD
    producers, waits for the producers, joins, stops the consumers and the
    broker, and prints the totals. Leaves no process behind. */
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <czmq.h>

#include "asyncq/control.h"
#include "asyncq/process.h"
#include "asyncq/program.h"
#include "cli.h"

#define READY_TIMEOUT_MS 10000
#define STOP_TIMEOUT_MS 5000
#define MAX_WORKERS 1000

typedef struct {
    uint64_t producers;
    uint64_t consumers;
    const char *broker;
    const char *queue;
    const char *max_sleep;
    const char *credit;
} demo_options_t;

typedef struct {
    aq_process_t broker;
    aq_process_t *producers;
    aq_process_t *consumers;
    char address[512];
} demo_t;

static int s_parse(int argc, char **argv, demo_options_t *opts)
{
    static const struct option options[] = {
        {"producers", required_argument, 0, 'p'}, {"consumers", required_argument, 0, 'c'},
        {"broker", required_argument, 0, 'b'},    {"queue", required_argument, 0, 'q'},
        {"max-sleep", required_argument, 0, 's'}, {"credit", required_argument, 0, 'C'},
        {"help", no_argument, 0, 'h'},            {0, 0, 0, 0}};
    const char *usage =
        "Usage: asyncq demo [-p NPROD] [-c NCON] [-b ADDR] [-q QUEUE] [--max-sleep S]\n"
        "                   [--credit N]\n"
        "The reference main(): NPROD producers (default 5) and NCON consumers (default\n"
        "10) as processes around a broker it starts on a free local port (or the one\n"
        "at ADDR). Waits for the producers, joins, stops the consumers, prints totals.\n"
        "--max-sleep is passed to every producer and consumer (default 1 second).\n";
    int opt;
    optind = 1;
    opts->producers = 5;
    opts->consumers = 10;
    while ((opt = getopt_long(argc, argv, "p:c:b:q:h", options, NULL)) != -1) {
        switch (opt) {
        case 'p': case 'c': {
            uint64_t *count = opt == 'p' ? &opts->producers : &opts->consumers;
            if (!aq_arg_u64(optarg, count) || *count > MAX_WORKERS) {
                fprintf(stderr, "asyncq demo: -%c needs a number from 0 to %d\n", opt, MAX_WORKERS);
                return 0;
            }
            break;
        }
        case 'b': opts->broker = optarg; break;
        case 'q': opts->queue = optarg; break;
        case 's': opts->max_sleep = optarg; break;
        case 'C': opts->credit = optarg; break;
        case 'h': printf("%s", usage); exit(AQ_EXIT_OK);
        default: fprintf(stderr, "%s", usage); return 0;
        }
    }
    uint64_t ignored;
    if (opts->max_sleep && !aq_arg_seconds_ms(opts->max_sleep, &ignored)) {
        fprintf(stderr, "asyncq demo: --max-sleep needs seconds, not '%s'\n", opts->max_sleep);
        return 0;
    }
    if (opts->credit && (!aq_arg_u64(opts->credit, &ignored) || ignored == 0)) {
        fprintf(stderr, "asyncq demo: --credit needs a whole number of at least 1\n");
        return 0;
    }
    if (opts->consumers == 0 && opts->producers > 0)
        fprintf(stderr, "asyncq demo: no consumers: the join waits until you start some\n");
    if (!opts->queue)
        opts->queue = "default";
    if (!aq_name_is_valid((const uint8_t *) opts->queue, strlen(opts->queue))) {
        fprintf(stderr, "asyncq demo: queue name '%s' is not valid\n", opts->queue);
        return 0;
    }
    return 1;
}

static int s_start_broker(demo_t *demo)
{
    char path[4096];
    if (aq_program_path("asyncq-broker", path, sizeof path)) {
        fprintf(stderr, "asyncq demo: cannot find asyncq-broker next to asyncq\n");
        return 0;
    }
    char *argv[] = {path, "--bind", "tcp://127.0.0.1:0", NULL};
    if (aq_process_spawn(&demo->broker, argv, 1, 1)) {
        fprintf(stderr, "asyncq demo: cannot start %s: %s\n", path, strerror(errno));
        return 0;
    }
    if (!aq_process_expect(&demo->broker, "READY ", demo->address, sizeof demo->address,
                           READY_TIMEOUT_MS)) {
        fprintf(stderr, "asyncq demo: the broker did not start\n");
        return 0;
    }
    return 1;
}

/*  Starts one producer or consumer named after its role and number. */
static int s_spawn_worker(aq_process_t *process, const char *program, uint64_t number,
                          const demo_t *demo, const demo_options_t *opts)
{
    char path[4096], name[32];
    if (aq_program_path(program, path, sizeof path)) {
        fprintf(stderr, "asyncq demo: cannot find %s next to asyncq\n", program);
        return 0;
    }
    snprintf(name, sizeof name, "%llu", (unsigned long long) number);
    char *argv[16] = {path, "--broker", (char *) demo->address, "--queue", (char *) opts->queue,
                      "--name", name};
    int argc = 7;
    if (opts->max_sleep) {
        argv[argc++] = "--max-sleep";
        argv[argc++] = (char *) opts->max_sleep;
    }
    if (opts->credit && strcmp(program, "asyncq-consumer") == 0) {
        argv[argc++] = "--credit";
        argv[argc++] = (char *) opts->credit;
    }
    argv[argc] = NULL;
    if (aq_process_spawn(process, argv, 0, 1)) {
        fprintf(stderr, "asyncq demo: cannot start %s: %s\n", path, strerror(errno));
        return 0;
    }
    return 1;
}

/*  Waits for every producer; returns how many failed, or -1 if interrupted. */
static int s_wait_producers(demo_t *demo, uint64_t count)
{
    int failed = 0;
    for (uint64_t i = 0; i < count; i++) {
        while (!aq_process_wait(&demo->producers[i], 100))
            if (aq_interrupted())
                return -1;
        if (demo->producers[i].exit_code != 0) {
            fprintf(stderr, "asyncq demo: producer %llu failed (exit %d)\n",
                    (unsigned long long) i + 1, demo->producers[i].exit_code);
            failed++;
        }
    }
    return failed;
}

static void s_totals(void *ctx, const char *line)
{
    unsigned long long *totals = ctx;
    const char *puts = strstr(line, " puts="), *acked = strstr(line, " acked=");
    if (puts && acked) {
        totals[0] = strtoull(puts + 6, NULL, 10);
        totals[1] = strtoull(acked + 7, NULL, 10);
    }
}

/*  Joins the queue, then prints the queue's totals. */
static aq_status_t s_join(const demo_t *demo, const demo_options_t *opts)
{
    aq_status_t rc;
    aq_session_t *session = cli_connect("demo", demo->address, &rc);
    if (!session)
        return rc;
    aq_join_result_t result;
    rc = aq_join(session, opts->queue, -1, AQ_JOIN_BEFORE, &result);
    unsigned long long totals[2] = {0, 0};
    if (rc == AQ_OK)
        rc = aq_stats(session, opts->queue, s_totals, totals);
    if (rc == AQ_OK)
        printf("Joined: %llu items put by %llu producers, %llu acked by %llu consumers.\n",
               totals[0], (unsigned long long) opts->producers, totals[1],
               (unsigned long long) opts->consumers);
    else
        cli_report("demo", session, rc);
    aq_session_destroy(&session);
    return rc;
}

static void s_stop_all(demo_t *demo, const demo_options_t *opts)
{
    for (uint64_t i = 0; i < opts->producers; i++)
        aq_process_stop(&demo->producers[i], SIGTERM, STOP_TIMEOUT_MS);
    for (uint64_t i = 0; i < opts->consumers; i++)
        aq_process_stop(&demo->consumers[i], SIGTERM, STOP_TIMEOUT_MS);
    aq_process_stop(&demo->broker, SIGTERM, STOP_TIMEOUT_MS);
}

int cli_demo(int argc, char **argv)
{
    demo_options_t opts = {0};
    if (!s_parse(argc, argv, &opts))
        return AQ_EXIT_USAGE;
    aq_stdout_lines();
    aq_random_seed(0); /* installs the signal handlers before any child starts */
    int64_t started = zclock_usecs();
    demo_t demo = {0};
    demo.producers = calloc(opts.producers + 1, sizeof *demo.producers);
    demo.consumers = calloc(opts.consumers + 1, sizeof *demo.consumers);
    int ok = demo.producers && demo.consumers;
    if (ok && opts.broker)
        snprintf(demo.address, sizeof demo.address, "%s", opts.broker);
    else if (ok)
        ok = s_start_broker(&demo);
    for (uint64_t i = 0; ok && i < opts.consumers; i++)
        ok = s_spawn_worker(&demo.consumers[i], "asyncq-consumer", i + 1, &demo, &opts);
    for (uint64_t i = 0; ok && i < opts.producers; i++)
        ok = s_spawn_worker(&demo.producers[i], "asyncq-producer", i + 1, &demo, &opts);
    int failed = ok ? s_wait_producers(&demo, opts.producers) : 0;
    aq_status_t rc = ok && failed >= 0 ? s_join(&demo, &opts) : AQ_INTERRUPTED; /* says why */
    s_stop_all(&demo, &opts);
    double elapsed = (double) (zclock_usecs() - started) / 1e6;
    if (ok && rc == AQ_OK)
        printf("Program completed in %.5f seconds.\n", elapsed);
    free(demo.producers);
    free(demo.consumers);
    if (!ok)
        return AQ_EXIT_FAILURE;
    if (rc != AQ_OK)
        return aq_exit_code(rc);
    return failed ? AQ_EXIT_FAILURE : AQ_EXIT_OK;
}
