/*  asyncq-bench: end-to-end figures of a real broker. A benchmark, not a
    test: it prints figures and asserts nothing.

    Starts asyncq-broker on a free loopback port (with --broker-arg ARGs,
    and CURVE keys with --curve), then P producer and C consumer processes
    (forks of this program using the client library). Every item carries the
    producer's send time (this host's monotonic clock, shared by all
    processes) and its number. Three modes:

    throughput (default): producers put N items as fast as the library
        sends them (PUTS batches); consumers get with credit CREDIT and ack
        through the library (batched acks); once every producer's sync is
        confirmed, a JOIN (before) returns when every item has been acked.
        Prints items/s from the first put to JOINED, put-to-delivery
        percentiles (under saturation: queueing, not the broker's overhead)
        and the broker's peak RSS.

    --rate R: producers put R items/s in total, evenly paced, flushing each
        put; consumers ack each item at once. Prints put->delivery and
        put->ack percentiles at that load, and how long after the last ack
        left its consumer the JOINED reached the joiner.

    --fill N[,N2...]: no consumer; producers put up to N items (then N2...),
        and after each step the broker's resident memory is read: the growth
        per queued item beyond its payload. */
#include <czmq.h>
#include <getopt.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "asyncq/consumer.h"
#include "asyncq/control.h"
#include "asyncq/internal.h" /* s_join speaks JOIN itself */
#include "asyncq/process.h"
#include "asyncq/producer.h"
#include "asyncq/program.h"
#include "asyncq/security.h"
#include "asyncq/service.h"
#include "benchlib.h"

#define QUEUE "bench"
#define BROKER_ARGS_MAX 64
#define FILL_STEPS_MAX 8
/*  Every item starts with its put time (int64) and its number (uint64). */
#define ITEM_HEADER 16
/*  How long a run may take before the bench gives up, beyond the rate
    mode's own duration. */
#define RUN_TIMEOUT_MS 900000

typedef struct {
    uint64_t producers, consumers, items, size, credit;
    uint64_t rate;                   /* items/s in total; 0: as fast as possible */
    uint64_t priorities;             /* item k has priority k % priorities; 0: none */
    uint64_t run;                    /* puts in a row with the same priority */
    uint64_t delay_ms;               /* every put delayed this long; 0: none */
    uint64_t shards;                 /* asyncq-broker --shards N; 0: one broker */
    uint64_t replicas;               /* a group of N replicas (--peers); 0: one broker */
    uint64_t kill_leader_ms;         /* the leader SIGKILLed this long after the go; 0: none */
    int stop_leader;                 /* ... SIGTERMed instead (--stop-leader) */
    uint64_t fill[FILL_STEPS_MAX];   /* cumulative item counts; fill_count 0: not a fill */
    size_t fill_count;
    int curve;
    const char *broker_args[BROKER_ARGS_MAX];
    size_t broker_arg_count;
} bench_options_t;

/*  Shared with the children. The arrays after it are indexed by item number. */
typedef struct {
    atomic_uint_fast64_t consumers_ready, producers_ready, producers_done, failed;
    atomic_uint_fast64_t go;          /* producers may do steps up to this one */
    atomic_uint_fast64_t deliveries;  /* redeliveries included */
    atomic_uint_fast64_t unique;      /* items delivered at least once */
    atomic_uint_fast64_t acks;        /* aq_consumer_ack calls */
    atomic_uint_fast64_t join_sent;   /* rate mode: the JOIN is in the broker */
    atomic_uint_fast64_t bad_items;   /* too short, or a number out of range */
    atomic_int_fast64_t first_put_us, last_ack_us, max_lag_us;
    atomic_int_fast64_t last_delivery_us, max_gap_us, max_gap_end_us; /* --kill-leader */
    int64_t start_us;                 /* rate mode: item i is due at start + i/rate */
} shared_t;

static bench_options_t g_opts;
static shared_t *g_shared;
static uint32_t *g_delivery_us; /* put -> delivery, per item (first delivery) */
static uint32_t *g_ack_us;      /* put -> ack sent (rate mode) */
static uint8_t *g_seen;
static char g_address[256];
/*  --replicas: each replica's pid, by id - 1. */
static pid_t g_replica_pids[7];

static uint32_t s_clamp_us(int64_t us)
{
    return us < 0 ? 0 : us >= UINT32_MAX ? UINT32_MAX - 1 : (uint32_t) us;
}

/*  The items producer p puts in step `step`: [first, first + count * stride). */
static void s_share(uint64_t p, size_t step, uint64_t *first, uint64_t *count, uint64_t *stride)
{
    uint64_t low = 0, high = g_opts.items, producers = g_opts.producers;
    if (g_opts.fill_count) {
        low = step ? g_opts.fill[step - 1] : 0;
        high = g_opts.fill[step];
    }
    if (g_opts.rate) { /* interleaved, so the total rate is even */
        *first = low + p;
        *count = high > low + p ? (high - low - p + producers - 1) / producers : 0;
        *stride = producers;
    } else { /* a contiguous slice each */
        *first = low + (high - low) * p / producers;
        *count = low + (high - low) * (p + 1) / producers - *first;
        *stride = 1;
    }
}

static int s_producer(void *arg)
{
    uint64_t p = (uint64_t) (uintptr_t) arg;
    aq_status_t rc;
    aq_producer_t *producer = aq_producer_new(g_address, "bench", &rc);
    if (!producer) {
        fprintf(stderr, "asyncq-bench: producer: %s\n", aq_strerror(rc));
        atomic_fetch_add(&g_shared->failed, 1);
        return 1;
    }
    atomic_fetch_add(&g_shared->producers_ready, 1);
    uint8_t *item = calloc(1, g_opts.size);
    size_t steps = g_opts.fill_count ? g_opts.fill_count : 1;
    for (size_t step = 0; step < steps && rc == AQ_OK; step++) {
        if (!bench_wait_count(&g_shared->go, step + 1, &g_shared->failed, -1))
            break;
        uint64_t first, count, stride;
        s_share(p, step, &first, &count, &stride);
        for (uint64_t k = 0; k < count && rc == AQ_OK; k++) {
            uint64_t number = first + k * stride;
            int64_t due = 0;
            if (g_opts.rate) {
                due = g_shared->start_us + (int64_t) ((double) number * 1e6 / (double) g_opts.rate);
                bench_sleep_until_us(due);
            }
            int64_t now = bench_now_us();
            if (k == 0)
                bench_atomic_min(&g_shared->first_put_us, now);
            memcpy(item, &now, sizeof now);
            memcpy(item + 8, &number, sizeof number);
            if (g_opts.priorities || g_opts.delay_ms) {
                aq_put_options_t options = {
                    .priority = g_opts.priorities
                                    ? (int32_t) (number / g_opts.run % g_opts.priorities)
                                    : 0,
                    .delay_ms = g_opts.delay_ms};
                rc = aq_producer_put_with(producer, QUEUE, item, g_opts.size, &options);
            }
            else
                rc = aq_producer_put(producer, QUEUE, item, g_opts.size);
            if (g_opts.rate) {
                if (rc == AQ_OK)
                    rc = aq_producer_flush(producer); /* nothing waits in this process */
                bench_atomic_max(&g_shared->max_lag_us, now - due);
            }
        }
        if (rc == AQ_OK)
            rc = aq_producer_sync(producer, RUN_TIMEOUT_MS);
        if (rc != AQ_OK)
            break;
        atomic_fetch_add(&g_shared->producers_done, 1);
    }
    if (rc != AQ_OK) {
        fprintf(stderr, "asyncq-bench: producer: %s (refused %llu)\n", aq_strerror(rc),
                (unsigned long long) aq_producer_refused(producer));
        atomic_fetch_add(&g_shared->failed, 1);
    }
    free(item);
    aq_producer_destroy(&producer);
    return rc == AQ_OK ? 0 : 1;
}

static int s_consumer(void *arg)
{
    (void) arg;
    aq_status_t rc;
    aq_consumer_t *consumer = aq_consumer_new(g_address, "bench", QUEUE, g_opts.credit, &rc);
    if (!consumer) {
        fprintf(stderr, "asyncq-bench: consumer: %s\n", aq_strerror(rc));
        atomic_fetch_add(&g_shared->failed, 1);
        return 1;
    }
    atomic_fetch_add(&g_shared->consumers_ready, 1);
    while (!aq_interrupted()) {
        aq_item_t item;
        rc = aq_consumer_get(consumer, &item, 200);
        if (rc == AQ_TIMEOUT)
            continue;
        if (rc) {
            if (rc != AQ_INTERRUPTED)
                fprintf(stderr, "asyncq-bench: consumer: %s\n", aq_strerror(rc));
            break;
        }
        int64_t now = bench_now_us(), sent;
        uint64_t number;
        atomic_fetch_add(&g_shared->deliveries, 1);
        if (g_opts.kill_leader_ms) { /* the longest time without a delivery */
            int64_t previous = atomic_exchange(&g_shared->last_delivery_us, now);
            if (previous && now - previous > atomic_load(&g_shared->max_gap_us)) {
                bench_atomic_max(&g_shared->max_gap_us, now - previous);
                atomic_store(&g_shared->max_gap_end_us, now);
            }
        }
        if (item.size < ITEM_HEADER) {
            atomic_fetch_add(&g_shared->bad_items, 1);
            aq_consumer_ack(consumer, item.id);
            continue;
        }
        memcpy(&sent, item.data, sizeof sent);
        memcpy(&number, (const uint8_t *) item.data + 8, sizeof number);
        int first = number < g_opts.items
                    && !__atomic_exchange_n(&g_seen[number], 1, __ATOMIC_SEQ_CST);
        int last = 0;
        if (number >= g_opts.items)
            atomic_fetch_add(&g_shared->bad_items, 1);
        if (first) {
            g_delivery_us[number] = s_clamp_us(now - sent);
            last = atomic_fetch_add(&g_shared->unique, 1) + 1 == g_opts.items;
        }
        if (!g_opts.rate) {
            aq_consumer_ack(consumer, item.id); /* batched by the library */
            atomic_fetch_add(&g_shared->acks, 1);
            continue;
        }
        /* Rate mode: the last item's ack waits until the JOIN is in the
           broker, so that the JOINED answers that ack. */
        if (last)
            while (!atomic_load(&g_shared->join_sent) && !aq_interrupted())
                bench_sleep_us(100);
        rc = aq_consumer_ack(consumer, item.id);
        if (rc == AQ_OK)
            rc = aq_consumer_flush(consumer);
        int64_t acked = bench_now_us();
        atomic_fetch_add(&g_shared->acks, 1);
        bench_atomic_max(&g_shared->last_ack_us, acked);
        if (first)
            g_ack_us[number] = last ? UINT32_MAX : s_clamp_us(acked - sent);
    }
    aq_consumer_destroy(&consumer);
    return 0;
}

static int s_parse_fill(const char *text, bench_options_t *opts)
{
    char buf[256];
    snprintf(buf, sizeof buf, "%s", text);
    opts->fill_count = 0;
    for (char *save = NULL, *part = strtok_r(buf, ",", &save); part;
         part = strtok_r(NULL, ",", &save)) {
        uint64_t value;
        if (opts->fill_count == FILL_STEPS_MAX || !bench_parse_u64(part, &value) || value == 0
            || (opts->fill_count && value <= opts->fill[opts->fill_count - 1]))
            return 0;
        opts->fill[opts->fill_count++] = value;
    }
    return opts->fill_count > 0;
}

static void s_usage(void)
{
    printf("Usage: asyncq-bench [OPTIONS]\n"
           "  -p, --producers N     producer processes (1)\n"
           "  -c, --consumers N     consumer processes (1)\n"
           "  -n, --items N         items in all (100000; k and M suffixes)\n"
           "  -s, --size BYTES      item size (64; at least 16: put time and item number)\n"
           "      --credit N        each consumer's credit (256)\n"
           "      --rate R          fixed rate: R items/s in total, each put flushed, each\n"
           "                        ack sent at once; prints latency percentiles\n"
           "      --priorities N    put k has priority (k / RUN) %% N: N priorities, RUN\n"
           "                        puts in a row with one (--run, 1)\n"
           "      --run RUN\n"
           "      --delay-ms D      every put delayed D ms\n"
           "      --fill N[,N2...]  no consumer: put N items (then up to N2...) and print the\n"
           "                        broker's resident memory per queued item\n"
           "      --broker-arg ARG  passed to asyncq-broker (repeatable), e.g. --broker-arg\n"
           "                        --data-dir --broker-arg {tmpdir}; {tmpdir} is replaced by\n"
           "                        a fresh directory, removed afterwards\n"
           "      --curve           CURVE keys for the broker and the clients (temp dir)\n"
           "      --shards N        the broker as N shards of one service (asyncq-broker\n"
           "                        --shards N, on ipc://): clients spread and gather\n"
           "      --replicas N      the broker as a group of N replicas on loopback\n"
           "                        (--peers, each with a data directory of its own): the\n"
           "                        clients are given every replica and find the leader\n"
           "      --kill-leader MS  with --replicas: SIGKILL the group's leader MS ms after\n"
           "                        the first put, and print the longest time no consumer\n"
           "                        got an item (the failover, as clients see it)\n"
           "      --stop-leader MS  the same with SIGTERM: the leader hands its lead over\n"
           "                        and stops (a planned stop, as clients see it)\n"
           "Default mode: items/s from the first put to the JOINED of a join made once\n"
           "every producer's puts are confirmed; every item acked through the library.\n");
}

static int s_parse(int argc, char **argv, bench_options_t *opts)
{
    enum { OPT_CREDIT = 1000, OPT_RATE, OPT_FILL, OPT_BROKER_ARG, OPT_CURVE, OPT_PRIORITIES,
           OPT_RUN, OPT_DELAY, OPT_SHARDS, OPT_REPLICAS, OPT_KILL_LEADER,
           OPT_STOP_LEADER };
    static const struct option options[] = {
        {"producers", required_argument, 0, 'p'}, {"consumers", required_argument, 0, 'c'},
        {"items", required_argument, 0, 'n'},     {"size", required_argument, 0, 's'},
        {"credit", required_argument, 0, OPT_CREDIT},
        {"rate", required_argument, 0, OPT_RATE},
        {"fill", required_argument, 0, OPT_FILL},
        {"broker-arg", required_argument, 0, OPT_BROKER_ARG},
        {"curve", no_argument, 0, OPT_CURVE},
        {"priorities", required_argument, 0, OPT_PRIORITIES},
        {"run", required_argument, 0, OPT_RUN},
        {"delay-ms", required_argument, 0, OPT_DELAY},
        {"shards", required_argument, 0, OPT_SHARDS},
        {"replicas", required_argument, 0, OPT_REPLICAS},
        {"kill-leader", required_argument, 0, OPT_KILL_LEADER},
        {"stop-leader", required_argument, 0, OPT_STOP_LEADER},
        {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0}};
    memset(opts, 0, sizeof *opts);
    opts->producers = opts->consumers = 1;
    opts->items = 100000;
    opts->size = 64;
    opts->credit = 256;
    opts->run = 1;
    int opt;
    while ((opt = getopt_long(argc, argv, "p:c:n:s:h", options, NULL)) != -1) {
        uint64_t *target = opt == 'p' ? &opts->producers : opt == 'c' ? &opts->consumers
                         : opt == 'n' ? &opts->items : opt == 's' ? &opts->size
                         : opt == OPT_CREDIT ? &opts->credit : opt == OPT_RATE ? &opts->rate
                         : opt == OPT_PRIORITIES ? &opts->priorities : opt == OPT_RUN ? &opts->run
                         : opt == OPT_DELAY ? &opts->delay_ms
                         : opt == OPT_SHARDS ? &opts->shards
                         : opt == OPT_REPLICAS ? &opts->replicas
                         : opt == OPT_KILL_LEADER || opt == OPT_STOP_LEADER
                             ? &opts->kill_leader_ms
                             : NULL;
        if (opt == OPT_STOP_LEADER)
            opts->stop_leader = 1;
        if (opt == 'h') {
            s_usage();
            exit(0);
        }
        if (target) {
            if (!bench_parse_u64(optarg, target) || *target == 0) {
                fprintf(stderr, "asyncq-bench: bad value '%s' (see --help)\n", optarg);
                return 0;
            }
        } else if (opt == OPT_FILL) {
            if (!s_parse_fill(optarg, opts)) {
                fprintf(stderr, "asyncq-bench: --fill needs increasing counts, N[,N2...]\n");
                return 0;
            }
        } else if (opt == OPT_BROKER_ARG) {
            if (opts->broker_arg_count == BROKER_ARGS_MAX) {
                fprintf(stderr, "asyncq-bench: too many --broker-arg\n");
                return 0;
            }
            opts->broker_args[opts->broker_arg_count++] = optarg;
        } else if (opt == OPT_CURVE) {
            opts->curve = 1;
        } else {
            fprintf(stderr, "asyncq-bench: bad option (see --help)\n");
            return 0;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "asyncq-bench: unexpected argument '%s'\n", argv[optind]);
        return 0;
    }
    if (opts->replicas > 7 || (opts->replicas && opts->shards)) {
        fprintf(stderr, "asyncq-bench: --replicas takes 1 to 7, and not with --shards\n");
        return 0;
    }
    if (opts->kill_leader_ms && (!opts->replicas || opts->fill_count)) {
        fprintf(stderr, "asyncq-bench: --kill-leader and --stop-leader need --replicas, and "
                        "no --fill\n");
        return 0;
    }
    if (opts->rate && opts->fill_count) {
        fprintf(stderr, "asyncq-bench: --rate and --fill do not go together\n");
        return 0;
    }
    if (opts->size < ITEM_HEADER)
        opts->size = ITEM_HEADER;
    if (opts->fill_count) {
        opts->items = opts->fill[opts->fill_count - 1];
        opts->consumers = 0; /* a fill has none, whatever -c says */
    }
    return 1;
}

/*  Copies a small file (a public certificate). Returns 0, or -1. */
static int s_copy_file(const char *from, const char *to)
{
    FILE *in = fopen(from, "rb"), *out = fopen(to, "wb");
    char buf[4096];
    size_t got;
    while (in && out && (got = fread(buf, 1, sizeof buf, in)) > 0)
        fwrite(buf, 1, got, out);
    int failed = !in || !out || ferror(in);
    if (in)
        fclose(in);
    if (out && fclose(out))
        failed = 1;
    return failed ? -1 : 0;
}

/*  Keys for --curve in dir: the broker's, and one client key (every role)
    in dir/clients that every process of the bench uses. The clients are
    forks: they inherit the library's keys set here. */
static int s_curve_setup(const char dir[1024], char **argv_extra)
{
    char clients[1100], from[1200], to[1200], secret[1200], server[1200];
    snprintf(clients, sizeof clients, "%s/clients", dir);
    snprintf(from, sizeof from, "%s/bench.key", dir);
    snprintf(to, sizeof to, "%s/bench.key", clients);
    if (aq_keygen(dir, "broker", "admin", NULL)
        || aq_keygen(dir, "bench", "produce,consume,admin", NULL) || mkdir(clients, 0700)
        || s_copy_file(from, to))
        return -1;
    /* The broker's certificate by its path: with the default TMPDIR that
       path is 40 characters, which the library reads as a file. */
    snprintf(secret, sizeof secret, "%s/bench.key_secret", dir);
    snprintf(server, sizeof server, "%s/broker.key", dir);
    if (aq_security_set(secret, server) != AQ_OK) {
        fprintf(stderr, "asyncq-bench: %s\n", aq_security_error());
        return -1;
    }
    snprintf(secret, sizeof secret, "%s/broker.key_secret", dir);
    argv_extra[0] = strdup("--curve-secret");
    argv_extra[1] = strdup(secret);
    argv_extra[2] = strdup("--clients");
    argv_extra[3] = strdup(clients);
    return 0;
}

/*  An argument with {tmpdir} replaced. */
static char *s_expand(const char *arg, const char *tmpdir)
{
    const char *at = strstr(arg, "{tmpdir}");
    if (!at)
        return strdup(arg);
    size_t size = strlen(arg) + strlen(tmpdir) + 1;
    char *out = malloc(size);
    snprintf(out, size, "%.*s%s%s", (int) (at - arg), arg, tmpdir, at + 8);
    return out;
}

static void s_ignore_line(void *ctx, const char *line)
{
    (void) ctx;
    (void) line;
}

static void s_queued_line(void *ctx, const char *line)
{
    const char *at = strstr(line, " queued=");
    if (at)
        *(uint64_t *) ctx = strtoull(at + 8, NULL, 10);
}

/*  Sends JOIN (before) and waits for JOINED. In rate mode, an INFO round
    trip on the same DEALER first proves the JOIN is in the broker; then
    the consumer holding the last item may ack it. */
static aq_status_t s_join(aq_session_t *session, aq_join_result_t *result, int64_t *joined_us)
{
    int64_t deadline = bench_now_us() + (int64_t) RUN_TIMEOUT_MS * 1000;
    aq_status_t rc;
    aq_msg_t reply;
    for (;;) {
        aq_msg_t msg = {.cmd = AQ_CMD_JOIN};
        msg.queue = aq_bytes_str(QUEUE);
        msg.mode = AQ_JOIN_BEFORE;
        rc = aq_session_request(session, &msg);
        char tag[AQ_TAG_MAX + 1];
        snprintf(tag, sizeof tag, "%.*s", (int) msg.tag.size, (const char *) msg.tag.data);
        if (rc == AQ_OK && g_opts.rate)
            rc = aq_info(session, s_ignore_line, NULL);
        atomic_store(&g_shared->join_sent, 1);
        while (rc == AQ_OK || rc == AQ_TIMEOUT) {
            rc = aq_session_await(session, tag, &reply, 500, NULL, NULL);
            if (rc != AQ_TIMEOUT || bench_signalled || bench_now_us() > deadline
                || atomic_load(&g_shared->failed) || aq_session_broker_silent(session))
                break;
        }
        /* The broker gone (--kill-leader: the group's leader): the join
           again, at the new leader, as aq_join does. */
        if (rc != AQ_TIMEOUT || !aq_session_broker_silent(session) || bench_signalled
            || bench_now_us() > deadline)
            break;
        do
            rc = aq_session_hello(session, 5000);
        while (rc == AQ_UNREACHABLE && !bench_signalled && bench_now_us() < deadline);
        if (rc != AQ_OK)
            break;
    }
    *joined_us = bench_now_us();
    if (rc == AQ_OK && reply.cmd != AQ_CMD_JOINED)
        rc = AQ_REFUSED;
    if (rc == AQ_OK) {
        result->waited = reply.count;
        result->dead = reply.dead;
    }
    return rc;
}

static void s_print_header(const char *mode)
{
    printf("asyncq-bench: %s, %llu producers, %llu consumers, %llu items of %llu bytes,"
           " credit %llu",
           mode, (unsigned long long) g_opts.producers, (unsigned long long) g_opts.consumers,
           (unsigned long long) g_opts.items, (unsigned long long) g_opts.size,
           (unsigned long long) g_opts.credit);
    if (g_opts.curve)
        printf(", CURVE");
    if (g_opts.broker_arg_count) {
        printf(", broker args:");
        for (size_t i = 0; i < g_opts.broker_arg_count; i++)
            printf(" %s", g_opts.broker_args[i]);
    }
    printf("\n");
}

static int s_run_fill(aq_process_t *broker)
{
    s_print_header("fill (no consumer)");
    uint64_t base_kib = bench_proc_kib(broker->pid, "VmRSS:");
    printf("  broker RSS %.1f MiB with the producers' sessions open, before the first put\n",
           base_kib / 1024.0);
    uint64_t previous_items = 0, previous_kib = base_kib;
    for (size_t step = 0; step < g_opts.fill_count; step++) {
        int64_t started = bench_now_us();
        atomic_store(&g_shared->go, step + 1);
        if (!bench_wait_count(&g_shared->producers_done, g_opts.producers * (step + 1),
                              &g_shared->failed, RUN_TIMEOUT_MS)) {
            printf("  FAILED: step %zu did not complete\n", step + 1);
            return 0;
        }
        double seconds = (double) (bench_now_us() - started) / 1e6;
        uint64_t kib = bench_proc_kib(broker->pid, "VmRSS:");
        uint64_t items = g_opts.fill[step];
        double per_item = (double) (kib - base_kib) * 1024.0 / (double) items;
        printf("  %10llu items: RSS %8.1f MiB (+%.1f), %6.1f bytes/item = %llu payload + %.1f"
               " beyond it; puts %.0f items/s\n",
               (unsigned long long) items, kib / 1024.0, (kib - base_kib) / 1024.0, per_item,
               (unsigned long long) g_opts.size, per_item - (double) g_opts.size,
               (double) (items - previous_items) / seconds);
        if (step > 0) {
            double marginal = ((double) kib - (double) previous_kib) * 1024.0
                              / (double) (items - previous_items);
            printf("  %10s marginal, items %llu to %llu: %.1f bytes/item beyond the payload\n", "",
                   (unsigned long long) previous_items, (unsigned long long) items,
                   marginal - (double) g_opts.size);
        }
        previous_items = items;
        previous_kib = kib;
    }
    aq_status_t rc;
    uint64_t queued = 0;
    aq_session_t *session = aq_session_new(g_address, "bench-stats", 5000, &rc);
    if (session)
        rc = aq_stats(session, QUEUE, s_queued_line, &queued);
    aq_session_destroy(&session);
    printf("  broker says queued=%llu (%s); peak RSS %.1f MiB\n", (unsigned long long) queued,
           aq_strerror(rc), bench_proc_kib(broker->pid, "VmHWM:") / 1024.0);
    return queued == g_opts.items;
}

static void s_leader_line(void *ctx, const char *line)
{
    if (strstr(line, " role=leader"))
        sscanf(line, "id=%llu", (unsigned long long *) ctx);
}

/*  --kill-leader: SIGKILLs the replica that leads now (--stop-leader:
    SIGTERMs it). Its id, or 0. */
static unsigned long long s_kill_leader(void)
{
    aq_status_t rc;
    unsigned long long leader = 0;
    size_t count = 0;
    aq_session_t **sessions = aq_service_open(g_address, "bench-kill", 0, 5000, NULL, 0, &count,
                                              &rc);
    if (sessions)
        rc = aq_replicas(sessions[0], "list", s_leader_line, &leader);
    for (size_t i = 0; i < count; i++)
        aq_session_destroy(&sessions[i]);
    free(sessions);
    if (rc != AQ_OK || leader == 0 || leader > g_opts.replicas) {
        fprintf(stderr, "asyncq-bench: no leader to kill (%s)\n", aq_strerror(rc));
        return 0;
    }
    kill(g_replica_pids[leader - 1], g_opts.stop_leader ? SIGTERM : SIGKILL);
    return leader;
}

static int s_run_flow(aq_process_t *broker)
{
    if (g_opts.rate)
        g_shared->start_us = bench_now_us() + 100000;
    atomic_store(&g_shared->go, 1);
    int64_t timeout = RUN_TIMEOUT_MS;
    if (g_opts.rate)
        timeout += (int64_t) ((double) g_opts.items * 1000.0 / (double) g_opts.rate);
    unsigned long long killed = 0;
    int64_t killed_us = 0;
    if (g_opts.kill_leader_ms) {
        /* The first put starts the clock (the clients connect first). */
        while (atomic_load(&g_shared->first_put_us) == INT64_MAX && !bench_signalled
               && !atomic_load(&g_shared->failed))
            bench_sleep_us(1000);
        bench_sleep_until_us(atomic_load(&g_shared->first_put_us)
                             + (int64_t) g_opts.kill_leader_ms * 1000);
        killed_us = bench_now_us();
        killed = s_kill_leader();
    }
    int done = bench_wait_count(&g_shared->producers_done, g_opts.producers, &g_shared->failed,
                                timeout > INT32_MAX ? INT32_MAX : (int) timeout);
    aq_status_t rc = AQ_INTERRUPTED;
    aq_join_result_t result = {0};
    int64_t joined_us = 0;
    aq_session_t *session = NULL;
    if (done) {
        /* Every broker of the service in turn (one, without --shards). */
        size_t count = 0;
        aq_session_t **sessions = aq_service_open(g_address, "bench-join", 0, 5000, NULL, 0, &count,
                                                  &rc);
        for (size_t i = 0; sessions && i < count && rc == AQ_OK; i++) {
            aq_join_result_t one = {0};
            rc = s_join(sessions[i], &one, &joined_us);
            result.waited += one.waited;
            result.dead += one.dead;
        }
        for (size_t i = 0; i < count; i++)
            aq_session_destroy(&sessions[i]);
        free(sessions);
    }
    atomic_store(&g_shared->join_sent, 1);
    uint64_t unique = atomic_load(&g_shared->unique), acks = atomic_load(&g_shared->acks);
    uint64_t peak_kib = bench_proc_kib(broker->pid, "VmHWM:");
    aq_session_destroy(&session);

    s_print_header(g_opts.rate ? "fixed rate" : "throughput");
    uint64_t deliveries = atomic_load(&g_shared->deliveries);
    uint64_t bad = atomic_load(&g_shared->bad_items);
    if (rc != AQ_OK || unique != g_opts.items || result.dead || bad) {
        printf("  FAILED: producers %s, join %s, %llu of %llu items delivered, %llu dead, "
               "%llu malformed\n",
               done ? "done" : "not done", aq_strerror(rc), (unsigned long long) unique,
               (unsigned long long) g_opts.items, (unsigned long long) result.dead,
               (unsigned long long) bad);
        return 0;
    }
    int64_t first_put = atomic_load(&g_shared->first_put_us);
    double seconds = (double) (joined_us - first_put) / 1e6;
    if (g_opts.rate) {
        printf("  rate         %llu items/s asked, %.0f achieved (first put to JOINED %.3f s); "
               "puts at most %.3f ms behind schedule\n",
               (unsigned long long) g_opts.rate, (double) g_opts.items / seconds, seconds,
               atomic_load(&g_shared->max_lag_us) / 1e3);
        bench_print_percentiles("put->deliver", g_delivery_us, g_opts.items);
        bench_print_percentiles("put->ack", g_ack_us, g_opts.items);
        printf("  join         answered %.3f ms after the last ack (ack sent by its consumer ->"
               " JOINED received)\n",
               (joined_us - atomic_load(&g_shared->last_ack_us)) / 1e3);
    } else {
        printf("  throughput   %.0f items/s (first put to JOINED: %.3f s)\n",
               (double) g_opts.items / seconds, seconds);
        bench_print_percentiles("put->deliver", g_delivery_us, g_opts.items);
    }
    printf("  every item acked before the JOINED: %llu items delivered once or more, %llu acks"
           " sent, 0 dead; deliveries %llu (redeliveries %llu)\n",
           (unsigned long long) unique, (unsigned long long) acks, (unsigned long long) deliveries,
           (unsigned long long) (deliveries - unique));
    if (g_opts.kill_leader_ms) {
        int64_t gap = atomic_load(&g_shared->max_gap_us);
        int64_t gap_end = atomic_load(&g_shared->max_gap_end_us);
        printf("  failover     the leader (replica %llu) %s %.3f s after the first put;"
               " the longest time no consumer got an item: %.3f s, from %.3f s after the kill\n",
               killed, g_opts.stop_leader ? "SIGTERMed" : "SIGKILLed",
               (double) (killed_us - first_put) / 1e6, (double) gap / 1e6,
               (double) (gap_end - gap - killed_us) / 1e6);
        return killed != 0;
    }
    printf("  broker peak RSS %.1f MiB\n", peak_kib / 1024.0);
    return 1;
}

/*  --replicas N: N asyncq-broker processes, `argv` (its "--bind" last but
    the flags) given each replica's address, --peers, --node-id and a data
    directory of its own in `dir`; g_address is every replica's address.
    0 once each has said READY. */
static int s_start_group(char **argv, size_t argc, aq_process_t *group, char *dir,
                         size_t dir_size)
{
    int count = (int) g_opts.replicas;
    int base = bench_free_ports(3 * count);
    if (!base || bench_temp_dir("asyncq-bench-replicas", dir, dir_size)) {
        fprintf(stderr, "asyncq-bench: no free ports or temp dir for the replicas\n");
        return -1;
    }
    char peers[7 * 24] = "";
    for (int i = 0; i < count; i++)
        snprintf(peers + strlen(peers), sizeof peers - strlen(peers), "%s127.0.0.1:%d",
                 i ? "," : "", base + 3 * i);
    snprintf(g_address, sizeof g_address, "%s", peers);
    for (int i = 0; i < count; i++) {
        char bind[32], node[16], data[256];
        snprintf(bind, sizeof bind, "127.0.0.1:%d", base + 3 * i);
        snprintf(node, sizeof node, "%d", i + 1);
        snprintf(data, sizeof data, "%s/%d", dir, i + 1);
        char *replica_argv[BROKER_ARGS_MAX + 24];
        size_t n = 0;
        replica_argv[n++] = argv[0];
        replica_argv[n++] = "--bind";
        replica_argv[n++] = bind;
        for (size_t k = 2; k < argc; k++) /* the flags after --bind */
            replica_argv[n++] = argv[k];
        char *own[] = {"--peers", peers, "--node-id", node, "--data-dir", data, NULL};
        for (size_t k = 0; own[k]; k++)
            replica_argv[n++] = own[k];
        replica_argv[n] = NULL;
        char ready[256];
        if (aq_process_spawn(&group[i], replica_argv, 1, AQ_STDIN_NULL)) {
            fprintf(stderr, "asyncq-bench: cannot start replica %d\n", i + 1);
            return -1;
        }
        bench_track(group[i].pid);
        g_replica_pids[i] = group[i].pid;
        if (!aq_process_expect(&group[i], "READY ", ready, sizeof ready, 10000)) {
            fprintf(stderr, "asyncq-bench: replica %d did not start (its stderr says why)\n",
                    i + 1);
            return -1;
        }
    }
    return 0;
}

int main(int argc, char **argv)
{
    if (!s_parse(argc, argv, &g_opts))
        return AQ_EXIT_USAGE;
    bench_catch_signals();
    size_t items = g_opts.fill_count ? 0 : g_opts.items;
    size_t shared_size = sizeof(shared_t) + items * (2 * sizeof(uint32_t) + 1);
    char *memory = bench_shared_new(shared_size);
    if (!memory) {
        fprintf(stderr, "asyncq-bench: no memory for %zu items\n", items);
        return AQ_EXIT_FAILURE;
    }
    g_shared = (shared_t *) memory;
    g_delivery_us = (uint32_t *) (memory + sizeof(shared_t));
    g_ack_us = g_delivery_us + items;
    g_seen = (uint8_t *) (g_ack_us + items);
    atomic_store(&g_shared->first_put_us, INT64_MAX);
    atomic_store(&g_shared->last_ack_us, 0);
    atomic_store(&g_shared->max_lag_us, INT64_MIN);

    int ok = 0;
    char key_dir[1024] = "", tmpdir[1024] = "", shard_dir[200] = "", group_dir[200] = "";
    aq_process_t group[7] = {{0}};
    char *broker_argv[BROKER_ARGS_MAX + 16] = {0};
    size_t argc_broker = 0;
    char path[4096];
    aq_process_t broker = {0};
    if (aq_program_path("asyncq-broker", path, sizeof path)) {
        fprintf(stderr, "asyncq-bench: asyncq-broker not found next to this program\n");
        goto done;
    }
    broker_argv[argc_broker++] = strdup(path);
    broker_argv[argc_broker++] = strdup("--bind");
    if (g_opts.shards) {
        /* Shard K binds PATH-K: ipc:// addresses in a directory of its own. */
        char bind[256];
        if (bench_temp_dir("asyncq-bench-shards", shard_dir, sizeof shard_dir)) {
            fprintf(stderr, "asyncq-bench: could not make a temp dir\n");
            goto done;
        }
        snprintf(bind, sizeof bind, "ipc://%s/b", shard_dir);
        broker_argv[argc_broker++] = strdup(bind);
        broker_argv[argc_broker++] = strdup("--shards");
        char count[24];
        snprintf(count, sizeof count, "%llu", (unsigned long long) g_opts.shards);
        broker_argv[argc_broker++] = strdup(count);
    }
    else if (!g_opts.replicas) /* a group's replicas bind ports of their own */
        broker_argv[argc_broker++] = strdup("tcp://127.0.0.1:0");
    if (g_opts.curve) {
        if (bench_temp_dir("asyncq-bench-keys", key_dir, sizeof key_dir)
            || s_curve_setup(key_dir, broker_argv + argc_broker)) {
            fprintf(stderr, "asyncq-bench: could not make CURVE keys\n");
            goto done;
        }
        argc_broker += 4;
    }
    for (size_t i = 0; i < g_opts.broker_arg_count; i++) {
        if (strstr(g_opts.broker_args[i], "{tmpdir}") && !tmpdir[0]
            && bench_temp_dir("asyncq-bench-data", tmpdir, sizeof tmpdir)) {
            fprintf(stderr, "asyncq-bench: could not make a temp dir\n");
            goto done;
        }
        broker_argv[argc_broker++] = s_expand(g_opts.broker_args[i], tmpdir);
    }
    if (g_opts.replicas) {
        if (s_start_group(broker_argv, argc_broker, group, group_dir, sizeof group_dir))
            goto done;
        broker = group[0]; /* its memory is the one reported */
        group[0].pid = 0;
    }
    else {
        if (aq_process_spawn(&broker, broker_argv, 1, AQ_STDIN_NULL)) {
            fprintf(stderr, "asyncq-bench: cannot start %s\n", path);
            goto done;
        }
        bench_track(broker.pid);
        for (uint64_t i = 0; i < (g_opts.shards ? g_opts.shards : 1); i++)
            if (!aq_process_expect(&broker, "READY ", g_address, sizeof g_address, 10000)) {
                fprintf(stderr, "asyncq-bench: the broker did not start (its stderr says "
                                "why)\n");
                goto done;
            }
    }
    if (g_opts.shards) /* the service's address: shard 0's */
        snprintf(g_address, sizeof g_address, "ipc://%s/b", shard_dir);
    uint64_t consumers = g_opts.fill_count ? 0 : g_opts.consumers;
    for (uint64_t i = 0; i < consumers; i++)
        if (bench_fork(s_consumer, NULL) < 0)
            goto done;
    if (!bench_wait_count(&g_shared->consumers_ready, consumers, &g_shared->failed, 30000)) {
        fprintf(stderr, "asyncq-bench: consumers did not start\n");
        goto done;
    }
    for (uint64_t i = 0; i < g_opts.producers; i++)
        if (bench_fork(s_producer, (void *) (uintptr_t) i) < 0)
            goto done;
    if (!bench_wait_count(&g_shared->producers_ready, g_opts.producers, &g_shared->failed, 30000)) {
        fprintf(stderr, "asyncq-bench: producers did not start\n");
        goto done;
    }
    /* The parent uses ZeroMQ only now, after every fork; czmq must not
       replace our signal handler (which stops the children). */
    zsys_handler_set(NULL);
    ok = g_opts.fill_count ? s_run_fill(&broker) : s_run_flow(&broker);

done:
    if (bench_signalled)
        fprintf(stderr, "asyncq-bench: interrupted\n");
    /* Consumers (and producers stuck on a failure) first: they say BYE. */
    atomic_fetch_add(&g_shared->failed, ok ? 0 : 1);
    atomic_store(&g_shared->join_sent, 1);
    /* Children still running (consumers, producers stuck on a failure):
       SIGTERM, so consumers say BYE, then SIGKILL what is left. */
    if (broker.pid)
        bench_untrack(broker.pid);
    bench_stop_all(SIGTERM, 3000);
    if (broker.pid)
        aq_process_stop(&broker, g_opts.fill_count || !ok ? SIGKILL : SIGTERM, 5000);
    for (int i = 0; i < 7; i++)
        if (group[i].pid) {
            bench_untrack(group[i].pid);
            aq_process_stop(&group[i], SIGKILL, 5000);
        }
    if (group_dir[0])
        bench_remove_tree(group_dir);
    if (key_dir[0])
        bench_remove_tree(key_dir);
    if (tmpdir[0])
        bench_remove_tree(tmpdir);
    if (shard_dir[0])
        bench_remove_tree(shard_dir);
    for (size_t i = 0; i < argc_broker; i++)
        free(broker_argv[i]);
    bench_shared_free(memory, shared_size);
    return bench_signalled ? AQ_EXIT_INTERRUPTED : ok ? AQ_EXIT_OK : AQ_EXIT_FAILURE;
}
