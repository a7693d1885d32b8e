/*  asyncq-redis-bench: Redis Streams used as a work queue, the comparison
    the README's performance section makes. A benchmark, not a test: it
    prints figures and asserts nothing. hiredis only, nothing of asyncq.

    Starts its own redis-server on a free loopback port (no persistence; or,
    with --durable, an append-only file fsynced before every reply, which is
    what asyncq's confirms promise with --fsync always; with --aof everysec,
    fsynced once a second, like asyncq's --fsync 1000), then producer and
    consumer processes, and removes the server and its directory afterwards.

    Used the way an expert would, pipelined as far as the protocol allows:
    - producers XADD, one command per item (XADD takes one entry), in
      pipelined batches of --pipeline commands, with the next batch sent
      before the replies of the previous one are read (a window of two);
    - consumers, in one consumer group, XREADGROUP COUNT credit BLOCK, then
      ack the whole batch with one XACK (it takes many ids), sent in the
      same round trip as the next XREADGROUP;
    - Redis keeps acked entries in the stream, so something must remove
      them or the queue grows for ever. By default (--acked trim) a trimmer
      process does what is cheapest: every TRIM_INTERVAL_MS, XTRIM MINID ~
      below the oldest entry still pending or undelivered, which frees whole
      radix-tree nodes. --acked xdel deletes each batch with one XDEL in the
      consumer's round trip instead (the usual pattern, dearer: entry by
      entry); --acked keep removes nothing.
    Every item carries its put time and number, as in asyncq-bench;
    throughput runs from the first XADD to the XACK reply that completes the
    count (asyncq-bench's runs to the JOINED). */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <hiredis/hiredis.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "benchlib.h"

#define STREAM "bench"
#define GROUP "workers"
#define ITEM_HEADER 16
#define ID_MAX 48
#define RUN_TIMEOUT_MS 900000
/*  How long an XREADGROUP waits for entries before the consumer looks at
    the stop flag again. */
#define BLOCK_MS "100"
#define TRIM_INTERVAL_MS 50

/*  What becomes of acked entries. */
enum { ACKED_TRIM, ACKED_XDEL, ACKED_KEEP };
static const char *const ACKED_NAMES[] = {"trim", "xdel", "keep"};

typedef struct {
    uint64_t producers, consumers, items, size, credit, pipeline;
    const char *appendfsync; /* NULL: no persistence; else "always" or "everysec" */
    int acked;
    const char *server;
} redis_options_t;

typedef struct {
    atomic_uint_fast64_t consumers_ready, producers_ready, failed, go, stop;
    atomic_uint_fast64_t deliveries, unique, acked, bad_items;
    atomic_int_fast64_t first_put_us, last_ack_us;
} shared_t;

static redis_options_t g_opts;
static shared_t *g_shared;
static uint32_t *g_delivery_us;
static uint8_t *g_seen;
static int g_port;

static uint32_t s_clamp_us(int64_t us)
{
    return us < 0 ? 0 : us >= UINT32_MAX ? UINT32_MAX - 1 : (uint32_t) us;
}

static void s_fail(const char *who, const char *what)
{
    fprintf(stderr, "asyncq-redis-bench: %s: %s\n", who, what);
    atomic_fetch_add(&g_shared->failed, 1);
}

/*  Connects, retrying for up to timeout_ms while the server starts. */
static redisContext *redis_connect(int timeout_ms)
{
    int64_t deadline = bench_now_us() + (int64_t) timeout_ms * 1000;
    for (;;) {
        redisContext *redis = redisConnect("127.0.0.1", g_port);
        if (redis && !redis->err) {
            redisReply *reply = redisCommand(redis, "PING");
            int up = reply && reply->type == REDIS_REPLY_STATUS;
            if (reply)
                freeReplyObject(reply);
            if (up)
                return redis;
        }
        if (redis)
            redisFree(redis);
        if (bench_signalled || bench_now_us() >= deadline)
            return NULL;
        bench_sleep_us(20000);
    }
}

/*  Reads one pipelined reply; 0 if the connection failed or Redis said
    ERR. */
static int redis_read(redisContext *redis, redisReply **reply)
{
    *reply = NULL;
    if (redisGetReply(redis, (void **) reply) != REDIS_OK || !*reply)
        return 0;
    if ((*reply)->type == REDIS_REPLY_ERROR) {
        fprintf(stderr, "asyncq-redis-bench: redis: %s\n", (*reply)->str);
        freeReplyObject(*reply);
        *reply = NULL;
        return 0;
    }
    return 1;
}

static int redis_discard(redisContext *redis)
{
    redisReply *reply;
    if (!redis_read(redis, &reply))
        return 0;
    freeReplyObject(reply);
    return 1;
}

/*  Queues one XADD of item `number` in hiredis's output buffer. */
static void producer_append(redisContext *redis, uint8_t *item, uint64_t number)
{
    int64_t now = bench_now_us();
    memcpy(item, &now, sizeof now);
    memcpy(item + 8, &number, sizeof number);
    const char *argv[5] = {"XADD", STREAM, "*", "d", (const char *) item};
    size_t lengths[5] = {4, sizeof STREAM - 1, 1, 1, g_opts.size};
    redisAppendCommandArgv(redis, 5, argv, lengths);
}

/*  Producer p's items, a contiguous slice. Replies are read a batch
    behind: reading the first reply sends everything appended, so Redis
    works on batch k+1 while this process reads batch k's replies. */
static int producer_run(void *arg)
{
    uint64_t p = (uint64_t) (uintptr_t) arg;
    uint64_t first = g_opts.items * p / g_opts.producers;
    uint64_t end = g_opts.items * (p + 1) / g_opts.producers;
    redisContext *redis = redis_connect(10000);
    if (!redis) {
        s_fail("producer", "cannot connect");
        return 1;
    }
    uint8_t *item = calloc(1, g_opts.size);
    atomic_fetch_add(&g_shared->producers_ready, 1);
    bench_wait_count(&g_shared->go, 1, &g_shared->failed, -1);
    bench_atomic_min(&g_shared->first_put_us, bench_now_us());
    uint64_t outstanding = 0;
    int ok = 1;
    for (uint64_t number = first; number < end && ok; number++) {
        producer_append(redis, item, number);
        outstanding++;
        int batch_full = (number - first + 1) % g_opts.pipeline == 0;
        while (ok && batch_full && outstanding > g_opts.pipeline)
            ok = redis_discard(redis), outstanding--;
    }
    while (ok && outstanding)
        ok = redis_discard(redis), outstanding--;
    if (!ok)
        s_fail("producer", redis->err ? redis->errstr : "XADD refused");
    free(item);
    redisFree(redis);
    return ok ? 0 : 1;
}

/*  Records one entry ([id, [field, value]]) and keeps its id to ack. */
static void consumer_record(const redisReply *entry, char (*ids)[ID_MAX], size_t *count,
                            int64_t now)
{
    atomic_fetch_add(&g_shared->deliveries, 1);
    const redisReply *fields = entry->type == REDIS_REPLY_ARRAY && entry->elements == 2
                                   ? entry->element[1] : NULL;
    if (!fields || fields->type != REDIS_REPLY_ARRAY || fields->elements != 2
        || entry->element[0]->len >= ID_MAX || fields->element[1]->len < ITEM_HEADER) {
        atomic_fetch_add(&g_shared->bad_items, 1);
        return;
    }
    memcpy(ids[(*count)++], entry->element[0]->str, entry->element[0]->len + 1);
    int64_t sent;
    uint64_t number;
    memcpy(&sent, fields->element[1]->str, sizeof sent);
    memcpy(&number, fields->element[1]->str + 8, sizeof number);
    if (number >= g_opts.items) {
        atomic_fetch_add(&g_shared->bad_items, 1);
        return;
    }
    if (!__atomic_exchange_n(&g_seen[number], 1, __ATOMIC_SEQ_CST)) {
        g_delivery_us[number] = s_clamp_us(now - sent);
        atomic_fetch_add(&g_shared->unique, 1);
    }
}

/*  Appends one command NAME STREAM [GROUP] id... for the ids held. */
static void consumer_append_ids(redisContext *redis, const char *name, int with_group,
                                char (*ids)[ID_MAX], size_t count, const char **argv,
                                size_t *lengths)
{
    size_t argc = 0;
    argv[argc++] = name;
    argv[argc++] = STREAM;
    if (with_group)
        argv[argc++] = GROUP;
    for (size_t i = 0; i < count; i++)
        argv[argc++] = ids[i];
    for (size_t i = 0; i < argc; i++)
        lengths[i] = strlen(argv[i]);
    redisAppendCommandArgv(redis, (int) argc, argv, lengths);
}

/*  The XACK's reply: how many entries it acked. When the count of every
    consumer reaches the total, this is the end of the run. */
static int consumer_read_ack(redisContext *redis)
{
    redisReply *reply;
    if (!redis_read(redis, &reply))
        return 0;
    uint64_t acked = reply->type == REDIS_REPLY_INTEGER ? (uint64_t) reply->integer : 0;
    freeReplyObject(reply);
    if (atomic_fetch_add(&g_shared->acked, acked) + acked >= g_opts.items && acked)
        bench_atomic_max(&g_shared->last_ack_us, bench_now_us());
    return 1;
}

/*  The XREADGROUP's reply: nil after BLOCK_MS without entries, else
    [[stream, [entry...]]]. */
static int consumer_read_entries(redisContext *redis, char (*ids)[ID_MAX], size_t *count)
{
    redisReply *reply;
    if (!redis_read(redis, &reply))
        return 0;
    int64_t now = bench_now_us();
    if (reply->type == REDIS_REPLY_ARRAY && reply->elements == 1
        && reply->element[0]->type == REDIS_REPLY_ARRAY && reply->element[0]->elements == 2) {
        const redisReply *entries = reply->element[0]->element[1];
        for (size_t i = 0; i < entries->elements && *count < g_opts.credit; i++)
            consumer_record(entries->element[i], ids, count, now);
    }
    freeReplyObject(reply);
    return 1;
}

/*  One round trip: XACK and XDEL of the entries got last time, then
    XREADGROUP for the next ones, all in one write. */
static int consumer_round(redisContext *redis, const char *name, char (*ids)[ID_MAX],
                          size_t *count, const char **argv, size_t *lengths)
{
    size_t acking = *count;
    if (acking) {
        consumer_append_ids(redis, "XACK", 1, ids, acking, argv, lengths);
        if (g_opts.acked == ACKED_XDEL)
            consumer_append_ids(redis, "XDEL", 0, ids, acking, argv, lengths);
    }
    char credit[24];
    snprintf(credit, sizeof credit, "%llu", (unsigned long long) g_opts.credit);
    redisAppendCommand(redis, "XREADGROUP GROUP %s %s COUNT %s BLOCK %s STREAMS %s >", GROUP,
                       name, credit, BLOCK_MS, STREAM);
    *count = 0;
    int deleting = acking && g_opts.acked == ACKED_XDEL;
    if ((acking && !consumer_read_ack(redis)) || (deleting && !redis_discard(redis)))
        return 0;
    return consumer_read_entries(redis, ids, count);
}

static int consumer_run(void *arg)
{
    char name[32];
    snprintf(name, sizeof name, "consumer-%llu", (unsigned long long) (uintptr_t) arg);
    redisContext *redis = redis_connect(10000);
    if (!redis) {
        s_fail(name, "cannot connect");
        return 1;
    }
    char (*ids)[ID_MAX] = calloc(g_opts.credit, ID_MAX);
    const char **argv = calloc(g_opts.credit + 3, sizeof *argv);
    size_t *lengths = calloc(g_opts.credit + 3, sizeof *lengths);
    size_t count = 0;
    int ok = ids && argv && lengths;
    atomic_fetch_add(&g_shared->consumers_ready, 1);
    while (ok && !atomic_load(&g_shared->stop))
        ok = consumer_round(redis, name, ids, &count, argv, lengths);
    if (!ok && !atomic_load(&g_shared->stop))
        s_fail(name, redis->err ? redis->errstr : "command refused");
    free(ids);
    free(argv);
    free(lengths);
    redisFree(redis);
    return ok ? 0 : 1;
}

/*  A stream id ("ms-seq") as two numbers, to compare. */
static int s_id_less(const char *a, const char *b)
{
    unsigned long long a_ms = 0, a_seq = 0, b_ms = 0, b_seq = 0;
    sscanf(a, "%llu-%llu", &a_ms, &a_seq);
    sscanf(b, "%llu-%llu", &b_ms, &b_seq);
    return a_ms < b_ms || (a_ms == b_ms && a_seq < b_seq);
}

/*  The group's last-delivered-id, from XINFO GROUPS (a list of key, value
    pairs per group). */
static int trimmer_last_delivered(redisContext *redis, char *id, size_t size)
{
    redisReply *reply = redisCommand(redis, "XINFO GROUPS %s", STREAM);
    int found = 0;
    for (size_t g = 0; reply && reply->type == REDIS_REPLY_ARRAY && g < reply->elements; g++) {
        const redisReply *group = reply->element[g];
        for (size_t k = 0; group->type == REDIS_REPLY_ARRAY && k + 1 < group->elements; k += 2)
            if (group->element[k]->str && strcmp(group->element[k]->str, "last-delivered-id") == 0
                && group->element[k + 1]->str) {
                snprintf(id, size, "%s", group->element[k + 1]->str);
                found = 1;
            }
    }
    if (reply)
        freeReplyObject(reply);
    return found;
}

/*  One trim: every entry below both the group's last-delivered-id (read
    first: what is delivered later has higher ids) and the oldest pending
    entry (read second) has been acked. */
static int trimmer_once(redisContext *redis)
{
    char below[ID_MAX];
    if (!trimmer_last_delivered(redis, below, sizeof below))
        return 0;
    redisReply *reply = redisCommand(redis, "XPENDING %s %s", STREAM, GROUP);
    if (!reply || reply->type != REDIS_REPLY_ARRAY || reply->elements < 2) {
        if (reply)
            freeReplyObject(reply);
        return 0;
    }
    const redisReply *oldest = reply->element[1];
    if (oldest->type == REDIS_REPLY_STRING && s_id_less(oldest->str, below))
        snprintf(below, sizeof below, "%s", oldest->str);
    freeReplyObject(reply);
    reply = redisCommand(redis, "XTRIM %s MINID ~ %s", STREAM, below);
    int ok = reply && reply->type == REDIS_REPLY_INTEGER;
    if (reply)
        freeReplyObject(reply);
    return ok;
}

static int trimmer_run(void *arg)
{
    (void) arg;
    redisContext *redis = redis_connect(10000);
    if (!redis) {
        s_fail("trimmer", "cannot connect");
        return 1;
    }
    int ok = 1;
    while (ok && !atomic_load(&g_shared->stop)) {
        bench_sleep_us(TRIM_INTERVAL_MS * 1000);
        ok = trimmer_once(redis);
    }
    if (!ok && !atomic_load(&g_shared->stop))
        s_fail("trimmer", redis->err ? redis->errstr : "XTRIM refused");
    redisFree(redis);
    return ok ? 0 : 1;
}

/*  redis-server on g_port, its files in dir; stdout and stderr to
    dir/redis.log. Returns its pid, or -1. */
static pid_t redis_server_start(const char *dir)
{
    char port[16], log[1200];
    snprintf(port, sizeof port, "%d", g_port);
    snprintf(log, sizeof log, "%s/redis.log", dir);
    const char *argv[32];
    int argc = 0;
    const char *fixed[] = {g_opts.server, "--port", port, "--bind", "127.0.0.1", "--dir", dir,
                           "--save", "", "--daemonize", "no", "--protected-mode", "no",
                           "--appendonly", g_opts.appendfsync ? "yes" : "no"};
    for (size_t i = 0; i < sizeof fixed / sizeof fixed[0]; i++)
        argv[argc++] = fixed[i];
    if (g_opts.appendfsync) {
        argv[argc++] = "--appendfsync";
        argv[argc++] = g_opts.appendfsync;
    }
    argv[argc] = NULL;
    pid_t pid = fork();
    if (pid == 0) {
        int fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0600);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
        }
        execvp(argv[0], (char *const *) argv);
        _exit(127);
    }
    if (pid > 0)
        bench_track(pid);
    return pid;
}

static int redis_prepare(void)
{
    redisContext *redis = redis_connect(10000);
    if (!redis)
        return 0;
    redisReply *reply = redisCommand(redis, "XGROUP CREATE %s %s $ MKSTREAM", STREAM, GROUP);
    int ok = reply && reply->type != REDIS_REPLY_ERROR;
    if (reply)
        freeReplyObject(reply);
    redisFree(redis);
    return ok;
}

/*  What Redis says is left: entries pending in the group, and the
    stream's length. */
static void redis_leftovers(long long *pending, long long *length)
{
    *pending = *length = -1;
    redisContext *redis = redis_connect(2000);
    if (!redis)
        return;
    redisReply *reply = redisCommand(redis, "XPENDING %s %s", STREAM, GROUP);
    if (reply && reply->type == REDIS_REPLY_ARRAY && reply->elements >= 1
        && reply->element[0]->type == REDIS_REPLY_INTEGER)
        *pending = reply->element[0]->integer;
    if (reply)
        freeReplyObject(reply);
    reply = redisCommand(redis, "XLEN %s", STREAM);
    if (reply && reply->type == REDIS_REPLY_INTEGER)
        *length = reply->integer;
    if (reply)
        freeReplyObject(reply);
    redisFree(redis);
}

static void s_usage(void)
{
    printf("Usage: asyncq-redis-bench [OPTIONS]\n"
           "  -p, --producers N     producer processes (1)\n"
           "  -c, --consumers N     consumer processes (1)\n"
           "  -n, --items N         items in all (100000; k and M suffixes)\n"
           "  -s, --size BYTES      item size (64; at least 16: put time and item number)\n"
           "      --credit N        XREADGROUP COUNT, entries a consumer holds (256)\n"
           "      --pipeline N      XADDs per pipelined batch (1024, asyncq's max-batch)\n"
           "      --durable         appendonly yes, appendfsync always (= --aof always)\n"
           "      --aof MODE        appendonly yes, appendfsync MODE: always (fsync before\n"
           "                        each reply) or everysec (fsync once a second)\n"
           "      --acked MODE      what removes acked entries: trim (XTRIM MINID ~ every\n"
           "                        50 ms, the default), xdel (one XDEL per batch), keep\n"
           "      --redis-server P  the server program (redis-server, from PATH)\n"
           "Items/s from the first XADD to the XACK reply that completes the count.\n");
}

static int s_parse_acked(const char *text, int *acked)
{
    for (int i = 0; i < (int) (sizeof ACKED_NAMES / sizeof ACKED_NAMES[0]); i++)
        if (strcmp(text, ACKED_NAMES[i]) == 0) {
            *acked = i;
            return 1;
        }
    return 0;
}

static int s_parse(int argc, char **argv, redis_options_t *opts)
{
    static const struct option options[] = {
        {"producers", required_argument, 0, 'p'}, {"consumers", required_argument, 0, 'c'},
        {"items", required_argument, 0, 'n'},     {"size", required_argument, 0, 's'},
        {"credit", required_argument, 0, 'C'},    {"pipeline", required_argument, 0, 'P'},
        {"durable", no_argument, 0, 'D'},         {"acked", required_argument, 0, 'K'},
        {"aof", required_argument, 0, 'A'},
        {"redis-server", required_argument, 0, 'R'}, {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0}};
    *opts = (redis_options_t){1, 1, 100000, 64, 256, 1024, NULL, ACKED_TRIM, "redis-server"};
    int opt;
    while ((opt = getopt_long(argc, argv, "p:c:n:s:h", options, NULL)) != -1) {
        uint64_t *target = opt == 'p' ? &opts->producers : opt == 'c' ? &opts->consumers
                         : opt == 'n' ? &opts->items : opt == 's' ? &opts->size
                         : opt == 'C' ? &opts->credit : opt == 'P' ? &opts->pipeline : NULL;
        if (opt == 'h') {
            s_usage();
            exit(0);
        } else if (opt == 'D') {
            opts->appendfsync = "always";
        } else if (opt == 'A' && (strcmp(optarg, "always") == 0 || strcmp(optarg, "everysec") == 0)) {
            opts->appendfsync = optarg;
        } else if (opt == 'K' && s_parse_acked(optarg, &opts->acked)) {
            continue;
        } else if (opt == 'R') {
            opts->server = optarg;
        } else if (!target || !bench_parse_u64(optarg, target) || *target == 0) {
            fprintf(stderr, "asyncq-redis-bench: bad option or value (see --help)\n");
            return 0;
        }
    }
    if (optind < argc || opts->credit > 100000) {
        fprintf(stderr, "asyncq-redis-bench: bad arguments (see --help)\n");
        return 0;
    }
    if (opts->size < ITEM_HEADER)
        opts->size = ITEM_HEADER;
    return 1;
}

static void s_print(uint64_t peak_kib)
{
    printf("asyncq-redis-bench: throughput, %llu producers, %llu consumers, %llu items of %llu"
           " bytes, credit %llu, XADD pipeline %llu, %s%s%s\n",
           (unsigned long long) g_opts.producers, (unsigned long long) g_opts.consumers,
           (unsigned long long) g_opts.items, (unsigned long long) g_opts.size,
           (unsigned long long) g_opts.credit, (unsigned long long) g_opts.pipeline,
           g_opts.appendfsync ? "appendfsync " : "no persistence",
           g_opts.appendfsync ? g_opts.appendfsync : "",
           g_opts.acked == ACKED_TRIM ? ", XACK, XTRIM MINID every 50 ms"
           : g_opts.acked == ACKED_XDEL ? ", XACK+XDEL" : ", XACK only");
    double seconds
        = (double) (atomic_load(&g_shared->last_ack_us) - atomic_load(&g_shared->first_put_us))
          / 1e6;
    printf("  throughput   %.0f items/s (first XADD to the last XACK's reply: %.3f s)\n",
           (double) g_opts.items / seconds, seconds);
    bench_print_percentiles("put->deliver", g_delivery_us, g_opts.items);
    long long pending, length;
    redis_leftovers(&pending, &length);
    uint64_t deliveries = atomic_load(&g_shared->deliveries);
    printf("  every item acked: %llu items delivered, %llu acked (XACK replies); deliveries"
           " %llu; left: %lld pending, stream length %lld\n",
           (unsigned long long) atomic_load(&g_shared->unique),
           (unsigned long long) atomic_load(&g_shared->acked), (unsigned long long) deliveries,
           pending, length);
    printf("  redis-server peak RSS %.1f MiB\n", peak_kib / 1024.0);
}

/*  The server, the group, the consumers, then the producers, each waiting
    for the one before. */
static int s_start(const char *dir, pid_t *server)
{
    g_port = bench_free_port();
    *server = g_port ? redis_server_start(dir) : -1;
    if (*server < 0 || !redis_prepare()) {
        fprintf(stderr, "asyncq-redis-bench: redis-server did not start (see %s/redis.log)\n",
                dir);
        return 0;
    }
    if (g_opts.acked == ACKED_TRIM && bench_fork(trimmer_run, NULL) < 0)
        return 0;
    for (uint64_t i = 0; i < g_opts.consumers; i++)
        if (bench_fork(consumer_run, (void *) (uintptr_t) i) < 0)
            return 0;
    if (!bench_wait_count(&g_shared->consumers_ready, g_opts.consumers, &g_shared->failed, 10000))
        return 0;
    for (uint64_t i = 0; i < g_opts.producers; i++)
        if (bench_fork(producer_run, (void *) (uintptr_t) i) < 0)
            return 0;
    return bench_wait_count(&g_shared->producers_ready, g_opts.producers, &g_shared->failed,
                            10000);
}

int main(int argc, char **argv)
{
    if (!s_parse(argc, argv, &g_opts))
        return 2;
    bench_catch_signals();
    size_t shared_size = sizeof(shared_t) + g_opts.items * (sizeof(uint32_t) + 1);
    char *memory = bench_shared_new(shared_size);
    char dir[1024];
    if (!memory || bench_temp_dir("asyncq-redis-bench", dir, sizeof dir)) {
        fprintf(stderr, "asyncq-redis-bench: no memory or no temp dir\n");
        return 1;
    }
    g_shared = (shared_t *) memory;
    g_delivery_us = (uint32_t *) (memory + sizeof(shared_t));
    g_seen = (uint8_t *) (g_delivery_us + g_opts.items);
    atomic_store(&g_shared->first_put_us, INT64_MAX);
    pid_t server = -1;
    int ok = s_start(dir, &server);
    if (ok) {
        atomic_store(&g_shared->go, 1);
        ok = bench_wait_count(&g_shared->acked, g_opts.items, &g_shared->failed, RUN_TIMEOUT_MS);
    }
    atomic_store(&g_shared->stop, 1);
    uint64_t peak_kib = server > 0 ? bench_proc_kib(server, "VmHWM:") : 0;
    if (server > 0)
        bench_untrack(server);
    bench_stop_all(0, 3000); /* signal 0: clients exit on `stop`; SIGKILL after 3 s */
    if (ok && atomic_load(&g_shared->unique) == g_opts.items
        && atomic_load(&g_shared->bad_items) == 0) {
        s_print(peak_kib);
    } else {
        printf("asyncq-redis-bench: FAILED: %llu of %llu items delivered, %llu acked\n",
               (unsigned long long) atomic_load(&g_shared->unique),
               (unsigned long long) g_opts.items,
               (unsigned long long) atomic_load(&g_shared->acked));
        ok = 0;
    }
    if (server > 0) {
        kill(server, SIGKILL); /* nothing of it is kept */
        waitpid(server, NULL, 0);
    }
    bench_remove_tree(dir);
    bench_shared_free(memory, shared_size);
    return bench_signalled ? 130 : ok ? 0 : 1;
}
