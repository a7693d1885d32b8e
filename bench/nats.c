/*  asyncq-nats-bench: NATS JetStream used as a work queue, the peer
    baseline for asyncq's replicated mode. A benchmark, not a test: it
    prints figures and asserts nothing. cnats (libnats) only, nothing of
    asyncq.

    Starts its own nats-server processes with JetStream on free loopback
    ports, each with its store in a temp dir of its own: --nodes 3 (the
    default) makes them a cluster (routes between them, one cluster name),
    --nodes 1 a single server. Then consumer and producer processes, and
    removes the servers and their directories afterwards.

    The queue is a stream with WorkQueue retention (a message goes once
    acked), file storage, --replicas copies (default: one per node), one
    subject, and one durable pull consumer with explicit acks shared by
    every consumer process.

    Durability: a PubAck means the stream's leader (and with replicas, a
    majority of them through JetStream's Raft) has written the message,
    not that anyone fsynced it. nats-server 2.9 flushes and fsyncs a
    stream's files every 2 minutes in the background (stream.go sets the
    file store's SyncInterval) and its Raft logs every 5, and nothing in
    its configuration changes that. 2.10 added `jetstream { sync_interval }`
    (default 2 min); --sync always gives the servers a configuration file
    that sets it to `always` (fsync on every write), and is refused, before
    anything starts, with a server older than 2.10.

    Used the way an expert would, pipelined as far as JetStream allows:
    - producers publish with js_PublishAsync, up to --credit publishes
      without their PubAck per producer. The window is kept here as well
      as by cnats (jsOptions.PublishAsync.MaxPending = credit), so that a
      publish is stamped when it goes out, not before it waits for room.
      An item counts as put only once its PubAck arrives; a publish error
      or an error PubAck fails the run;
    - consumers: natsSubscription_Fetch of up to --credit messages, then
      one natsMsg_Ack (+ACK, no reply: the cheapest ack that counts under
      explicit acks; AckAll would take other processes' messages with it)
      per message. Against nats-server 2.9, cnats's Fetch of more than one
      message is a no_wait request with an expiry: the server sends what
      it has and ends the request, or waits for the first message and
      then does the same, so a batch never waits to fill (the "nothing
      readable" rule of asyncq-rabbitmq-bench). The consumer's max ack
      pending is credit x consumers: each process may hold a whole batch.
    Producers connect to the stream leader's server, consumers to the
    consumer leader's (as asyncq's clients find the leader).
    Every item carries its put time and number, as in asyncq-bench.
    natsMsg_Ack has no reply: an item counts as done when its ack is handed
    to the connection (cnats's flusher writes it at once); the acks that
    complete the count are flushed with a PING/PONG round trip first, so
    the server has read them. Throughput runs from the first publish to
    that, or to the last PubAck if that comes later; asyncq-bench's runs
    to the JOINED, which comes after every put is confirmed and the broker
    has taken every ack. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <nats/nats.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "benchlib.h"

#define ITEM_HEADER 16
#define NODES_MAX 5
#define CLIENTS_MAX 200 /* producers and consumers */
#define SIZE_MAX_BYTES (64 << 20) /* nats-server's max_payload is 1 MiB unless raised */
#define STREAM "asyncq-bench"
#define SUBJECT "asyncq-bench.items"
#define DURABLE "workers"
#define CLUSTER_NAME "asyncq-bench"
#define RUN_TIMEOUT_MS 900000
/*  How long the setup waits for JetStream: a cluster first elects a meta
    leader (seconds), then the stream's and the consumer's Raft groups. */
#define BOOT_TIMEOUT_MS 60000
/*  JetStream API requests (binding to the consumer, info). */
#define API_WAIT_MS 5000
/*  The setup's: a request sent before the cluster has a meta leader gets
    no answer, and the next try should not wait long (a create that timed
    out and was done after all is done again, which changes nothing). */
#define SETUP_WAIT_MS 1000
/*  How long a Fetch or a wait for PubAcks blocks before the process looks
    at the stop and failed flags again. */
#define POLL_MS 100

typedef struct {
    uint64_t producers, consumers, items, size, credit, nodes, replicas;
    int sync_always;
    const char *server_program;
} nats_options_t;

typedef struct {
    atomic_uint_fast64_t consumers_ready, producers_ready, failed, go, stop;
    atomic_uint_fast64_t confirmed, deliveries, redelivered, unique, acked, bad_items;
    atomic_int_fast64_t first_put_us, last_ack_us, last_confirm_us;
    /* Written by the setup process: the leaders, whose servers the clients
       connect to. */
    int producer_port, consumer_port;
    char stream_leader[64], consumer_leader[64];
    /* Written by the leftovers process once the consumers have closed. */
    long long left_msgs, left_ack_pending, left_undelivered;
} shared_t;

/*  A nats-server of our own: its client and cluster ports, its directory
    (store, log, configuration). */
typedef struct {
    pid_t pid;
    int client_port, cluster_port;
    char name[16];
    char dir[1024];
} node_t;

static nats_options_t g_opts;
static shared_t *g_shared;
static uint32_t *g_confirm_us, *g_delivery_us, *g_ack_us;
static uint8_t *g_seen;
static node_t g_nodes[NODES_MAX];
static char g_server_version[64];
static int g_has_sync_interval; /* jetstream { sync_interval }: 2.10 or later */

static uint32_t s_clamp_us(int64_t us)
{
    return us < 0 ? 0 : us >= UINT32_MAX ? UINT32_MAX - 1 : (uint32_t) us;
}

static void s_fail(const char *who, const char *what)
{
    fprintf(stderr, "asyncq-nats-bench: %s: %s\n", who, what);
    atomic_fetch_add(&g_shared->failed, 1);
}

/*  A failed cnats call: its status, the library's last error if that is
    this failure's (the thread's last error stays until the next one), and
    JetStream's error code. */
static void s_fail_status(const char *who, const char *what, natsStatus status, jsErrCode code)
{
    char why[512];
    natsStatus last = NATS_OK;
    const char *detail = nats_GetLastError(&last);
    if (last != status)
        detail = NULL;
    snprintf(why, sizeof why, "%s: %s%s%s (JetStream error %d)", what, natsStatus_GetText(status),
             detail && *detail ? ": " : "", detail ? detail : "", (int) code);
    s_fail(who, why);
}

static int s_stopping(void)
{
    return atomic_load(&g_shared->stop) || atomic_load(&g_shared->failed) || bench_signalled;
}

/*  A connection to our server on `port`; NULL after saying why (`quiet`:
    not a failure yet, the caller tries again). No reconnects: a lost
    connection fails the run. */
static natsConnection *nats_connect(int port, const char *who, int quiet)
{
    natsOptions *options = NULL;
    natsConnection *conn = NULL;
    char url[64];
    snprintf(url, sizeof url, "nats://127.0.0.1:%d", port);
    natsStatus status = natsOptions_Create(&options);
    if (status == NATS_OK)
        status = natsOptions_SetURL(options, url);
    if (status == NATS_OK)
        status = natsOptions_SetAllowReconnect(options, false);
    if (status == NATS_OK)
        status = natsOptions_SetTimeout(options, 2000);
    if (status == NATS_OK)
        status = natsConnection_Connect(&conn, options);
    natsOptions_Destroy(options);
    if (status != NATS_OK && !quiet)
        s_fail_status(who, "connect", status, 0);
    return status == NATS_OK ? conn : NULL;
}

/*  ---- Producers ---------------------------------------------------------- */

/*  One producer. The PubAck handler runs on cnats's thread for the reply
    subscription; `inflight` (publishes without their PubAck, of any kind)
    is shared with it under `lock`. */
typedef struct {
    natsConnection *conn;
    jsCtx *js;
    uint64_t first, count;
    uint8_t *item;
    pthread_mutex_t lock;
    pthread_cond_t changed;
    uint64_t inflight;
} producer_t;

/*  A PubAck, or the error in its place, for one item. cnats hands back
    the message it sent: its data has the item's put time and number. */
static void producer_on_puback(jsCtx *js, natsMsg *msg, jsPubAck *pa, jsPubAckErr *pae,
                               void *closure)
{
    (void) js;
    producer_t *p = closure;
    int64_t now = bench_now_us();
    const char *data = natsMsg_GetData(msg);
    int64_t sent = 0;
    uint64_t number = UINT64_MAX;
    if (data && natsMsg_GetDataLength(msg) >= ITEM_HEADER) {
        memcpy(&sent, data, sizeof sent);
        memcpy(&number, data + 8, sizeof number);
    }
    if (pa && number < g_opts.items) {
        g_confirm_us[number] = s_clamp_us(now - sent);
        if (atomic_fetch_add(&g_shared->confirmed, 1) + 1 >= g_opts.items)
            bench_atomic_max(&g_shared->last_confirm_us, now);
    } else if (pa) {
        s_fail("producer", "a PubAck for an item never published");
    } else {
        char why[512];
        snprintf(why, sizeof why, "PubAck: %s (JetStream error %d%s%s)",
                 pae ? natsStatus_GetText(pae->Err) : "none", pae ? (int) pae->ErrCode : 0,
                 pae && pae->ErrText ? ", " : "", pae && pae->ErrText ? pae->ErrText : "");
        s_fail("producer", why);
    }
    natsMsg_Destroy(msg);
    pthread_mutex_lock(&p->lock);
    p->inflight--;
    pthread_cond_signal(&p->changed);
    pthread_mutex_unlock(&p->lock);
}

/*  Waits until fewer than `limit` publishes lack their PubAck, looking at
    the flags every POLL_MS. */
static int producer_wait_window(producer_t *p, uint64_t limit)
{
    pthread_mutex_lock(&p->lock);
    while (p->inflight >= limit && !s_stopping()) {
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_nsec += POLL_MS * 1000000L;
        until.tv_sec += until.tv_nsec / 1000000000L;
        until.tv_nsec %= 1000000000L;
        pthread_cond_timedwait(&p->changed, &p->lock, &until);
    }
    int ok = p->inflight < limit;
    pthread_mutex_unlock(&p->lock);
    return ok;
}

static int producer_publish(producer_t *p, uint64_t number)
{
    pthread_mutex_lock(&p->lock);
    p->inflight++;
    pthread_mutex_unlock(&p->lock);
    int64_t now = bench_now_us();
    memcpy(p->item, &now, sizeof now);
    memcpy(p->item + 8, &number, sizeof number);
    natsStatus status = js_PublishAsync(p->js, SUBJECT, p->item, (int) g_opts.size, NULL);
    if (status != NATS_OK) {
        s_fail_status("producer", "js_PublishAsync", status, 0);
        return 0;
    }
    return 1;
}

static int producer_loop(producer_t *p)
{
    bench_atomic_min(&g_shared->first_put_us, bench_now_us());
    int ok = 1;
    for (uint64_t i = 0; ok && i < p->count; i++)
        ok = producer_wait_window(p, g_opts.credit) && producer_publish(p, p->first + i);
    ok = ok && producer_wait_window(p, 1); /* every PubAck in */
    if (ok) {
        /* cnats has finished with every handler before the context goes. */
        jsPubOptions options;
        jsPubOptions_Init(&options);
        options.MaxWait = 10000;
        natsStatus status = js_PublishAsyncComplete(p->js, &options);
        if (status != NATS_OK) {
            s_fail_status("producer", "js_PublishAsyncComplete", status, 0);
            ok = 0;
        }
    }
    return ok;
}

/*  Producer i's items, a contiguous slice. */
static int producer_run(void *arg)
{
    uint64_t i = (uint64_t) (uintptr_t) arg;
    producer_t p = {.first = g_opts.items * i / g_opts.producers};
    p.count = g_opts.items * (i + 1) / g_opts.producers - p.first;
    pthread_mutex_init(&p.lock, NULL);
    pthread_cond_init(&p.changed, NULL);
    p.item = calloc(1, g_opts.size);
    p.conn = p.item ? nats_connect(g_shared->producer_port, "producer", 0) : NULL;
    if (!p.item)
        s_fail("producer", "no memory");
    int ok = p.conn != NULL;
    if (ok) {
        jsOptions options;
        jsOptions_Init(&options);
        options.Wait = API_WAIT_MS;
        options.PublishAsync.MaxPending = (int64_t) g_opts.credit;
        options.PublishAsync.AckHandler = producer_on_puback;
        options.PublishAsync.AckHandlerClosure = &p;
        /* cnats counts a publish as done once its handler has returned,
           ours inside the handler: a publish may wait in cnats for that
           instant, never longer. */
        options.PublishAsync.StallWait = 10000;
        natsStatus status = natsConnection_JetStream(&p.js, p.conn, &options);
        if (status != NATS_OK) {
            s_fail_status("producer", "natsConnection_JetStream", status, 0);
            ok = 0;
        }
    }
    if (ok) {
        atomic_fetch_add(&g_shared->producers_ready, 1);
        bench_wait_count(&g_shared->go, 1, &g_shared->failed, -1);
        ok = !s_stopping() && producer_loop(&p);
    }
    if (p.conn)
        natsConnection_Close(p.conn);
    jsCtx_Destroy(p.js);
    natsConnection_Destroy(p.conn);
    free(p.item);
    return ok ? 0 : 1;
}

/*  ---- Consumers ---------------------------------------------------------- */

/*  How many times the message has been delivered, from its reply subject:
    $JS.ACK.<stream>.<consumer>.<delivered>.<stream seq>.<consumer seq>.
    <time>.<pending>, or from newer servers the same with a domain and an
    account hash after ACK and a token at the end. 0 if neither. */
static uint64_t s_delivered_count(const char *reply)
{
    const char *tokens[16];
    int count = 0;
    for (const char *at = reply; at && count < 16;) {
        tokens[count++] = at;
        at = strchr(at, '.');
        at = at ? at + 1 : NULL;
    }
    if (count < 9 || strncmp(reply, "$JS.ACK.", 8) != 0)
        return 0;
    return strtoull(tokens[count == 9 ? 4 : 6], NULL, 10);
}

/*  One consumer: its connection and its subscription to the durable, and
    the numbers and put times of the batch in hand. */
typedef struct {
    natsConnection *conn;
    jsCtx *js;
    natsSubscription *sub;
    uint64_t *numbers;
    int64_t *sent_us;
} consumer_t;

/*  A batch from Fetch: record every message, ack every one (+ACK, no
    reply), record the acks. */
static int consumer_batch(consumer_t *c, natsMsgList *list)
{
    int64_t now = bench_now_us();
    for (int i = 0; i < list->Count; i++) {
        natsMsg *msg = list->Msgs[i];
        const char *data = natsMsg_GetData(msg);
        c->numbers[i] = UINT64_MAX;
        atomic_fetch_add(&g_shared->deliveries, 1);
        if (s_delivered_count(natsMsg_GetReply(msg)) > 1)
            atomic_fetch_add(&g_shared->redelivered, 1);
        if (data && natsMsg_GetDataLength(msg) >= ITEM_HEADER) {
            memcpy(&c->sent_us[i], data, sizeof c->sent_us[i]);
            memcpy(&c->numbers[i], data + 8, sizeof c->numbers[i]);
        }
        if (c->numbers[i] >= g_opts.items) {
            atomic_fetch_add(&g_shared->bad_items, 1);
            c->numbers[i] = UINT64_MAX;
        } else if (!__atomic_exchange_n(&g_seen[c->numbers[i]], 1, __ATOMIC_SEQ_CST)) {
            g_delivery_us[c->numbers[i]] = s_clamp_us(now - c->sent_us[i]);
            atomic_fetch_add(&g_shared->unique, 1);
        }
    }
    for (int i = 0; i < list->Count; i++) {
        natsStatus status = natsMsg_Ack(list->Msgs[i], NULL);
        if (status != NATS_OK) {
            s_fail_status("consumer", "natsMsg_Ack", status, 0);
            return 0;
        }
    }
    uint64_t acked = (uint64_t) list->Count;
    int last = atomic_fetch_add(&g_shared->acked, acked) + acked >= g_opts.items;
    /* The acks that complete the count: the server has read them once it
       answers a PING sent after them. */
    natsStatus status = last ? natsConnection_FlushTimeout(c->conn, 10000) : NATS_OK;
    if (status != NATS_OK) {
        s_fail_status("consumer", "flush", status, 0);
        return 0;
    }
    now = bench_now_us();
    for (int i = 0; i < list->Count; i++)
        if (c->numbers[i] < g_opts.items)
            g_ack_us[c->numbers[i]] = s_clamp_us(now - c->sent_us[i]);
    if (last)
        bench_atomic_max(&g_shared->last_ack_us, now);
    return 1;
}

/*  cnats before 3.9.0 (nats.c#749) writes past the array it fetches into
    when a Fetch finds messages already in the subscription (answers to an
    earlier request that came after that Fetch gave up) and they fill more
    than half its batch but not all of it: those are taken with Fetches of
    1, which take one message already there and send no request. */
static int consumer_loop(consumer_t *c)
{
    int ok = 1;
    while (ok && !atomic_load(&g_shared->stop)) {
        natsMsgList list = {0};
        jsErrCode code = 0;
        int waiting = 0;
        natsStatus status = natsSubscription_GetPending(c->sub, &waiting, NULL);
        if (status == NATS_OK)
            status = natsSubscription_Fetch(&list, c->sub, waiting ? 1 : (int) g_opts.credit,
                                            POLL_MS, &code);
        if (status == NATS_TIMEOUT || status == NATS_NOT_FOUND)
            continue; /* nothing came in POLL_MS */
        if (status != NATS_OK) {
            s_fail_status("consumer", "natsSubscription_Fetch", status, code);
            return 0;
        }
        ok = consumer_batch(c, &list);
        natsMsgList_Destroy(&list);
    }
    return ok;
}

/*  Binds to the durable consumer the setup made. The connection is closed
    at the end: anything unacked goes back to the consumer's pending, where
    the leftovers process counts it. */
static int consumer_run(void *arg)
{
    (void) arg;
    consumer_t c = {.numbers = calloc(g_opts.credit, sizeof *c.numbers),
                    .sent_us = calloc(g_opts.credit, sizeof *c.sent_us)};
    int ok = c.numbers && c.sent_us;
    if (!ok)
        s_fail("consumer", "no memory");
    c.conn = ok ? nats_connect(g_shared->consumer_port, "consumer", 0) : NULL;
    ok = c.conn != NULL;
    if (ok) {
        jsOptions options;
        jsOptions_Init(&options);
        options.Wait = API_WAIT_MS;
        jsSubOptions sub_options;
        jsSubOptions_Init(&sub_options);
        sub_options.Stream = STREAM;
        sub_options.Consumer = DURABLE;
        jsErrCode code = 0;
        natsStatus status = natsConnection_JetStream(&c.js, c.conn, &options);
        if (status == NATS_OK)
            status = js_PullSubscribe(&c.sub, c.js, SUBJECT, DURABLE, NULL, &sub_options, &code);
        if (status != NATS_OK) {
            s_fail_status("consumer", "js_PullSubscribe", status, code);
            ok = 0;
        }
    }
    if (ok) {
        atomic_fetch_add(&g_shared->consumers_ready, 1);
        ok = consumer_loop(&c);
    }
    natsSubscription_Destroy(c.sub);
    if (c.conn)
        natsConnection_Close(c.conn);
    jsCtx_Destroy(c.js);
    natsConnection_Destroy(c.conn);
    free(c.numbers);
    free(c.sent_us);
    return ok ? 0 : 1;
}

/*  ---- Setup and leftovers, each in a process of its own ------------------ */

/*  The main process never calls cnats (its threads would not survive a
    fork): the stream, the consumer and the counts at the end are made and
    read by short-lived children. */

static int s_node_of(const char *name)
{
    for (uint64_t i = 0; name && i < g_opts.nodes; i++)
        if (strcmp(name, g_nodes[i].name) == 0)
            return (int) i;
    return -1;
}

/*  The stream, then the consumer, each made try after try until JetStream
    answers (a cluster has no meta leader for its first seconds) or the
    deadline passes. */
static int setup_create(jsCtx *js, int64_t deadline)
{
    const char *subjects[] = {SUBJECT};
    jsStreamConfig stream;
    jsStreamConfig_Init(&stream);
    stream.Name = STREAM;
    stream.Subjects = subjects;
    stream.SubjectsLen = 1;
    stream.Retention = js_WorkQueuePolicy;
    stream.Storage = js_FileStorage;
    stream.Replicas = (int64_t) g_opts.replicas;
    jsConsumerConfig consumer;
    jsConsumerConfig_Init(&consumer);
    consumer.Durable = DURABLE;
    consumer.AckPolicy = js_AckExplicit;
    consumer.DeliverPolicy = js_DeliverAll;
    consumer.MaxAckPending = (int64_t) (g_opts.credit * g_opts.consumers);
    natsStatus status;
    jsErrCode code = 0;
    for (int made = 0; made < 2;) {
        if (made == 0) {
            jsStreamInfo *info = NULL;
            status = js_AddStream(&info, js, &stream, NULL, &code);
            jsStreamInfo_Destroy(info);
        } else {
            jsConsumerInfo *info = NULL;
            status = js_AddConsumer(&info, js, STREAM, &consumer, NULL, &code);
            jsConsumerInfo_Destroy(info);
        }
        if (status == NATS_OK) {
            made++;
            continue;
        }
        if (bench_signalled || bench_now_us() >= deadline) {
            s_fail_status("setup", made ? "js_AddConsumer" : "js_AddStream", status, code);
            return 0;
        }
        bench_sleep_us(250000);
    }
    return 1;
}

/*  The servers the stream's and the consumer's leaders run on, once both
    groups have one (a single server leads both). */
static int setup_find_leaders(jsCtx *js, int64_t deadline)
{
    for (;;) {
        jsStreamInfo *stream = NULL;
        jsConsumerInfo *consumer = NULL;
        jsErrCode code = 0;
        natsStatus status = js_GetStreamInfo(&stream, js, STREAM, NULL, &code);
        if (status == NATS_OK)
            status = js_GetConsumerInfo(&consumer, js, STREAM, DURABLE, NULL, &code);
        int stream_node = 0, consumer_node = 0;
        if (status == NATS_OK && g_opts.nodes > 1) {
            stream_node = s_node_of(stream->Cluster ? stream->Cluster->Leader : NULL);
            consumer_node = s_node_of(consumer->Cluster ? consumer->Cluster->Leader : NULL);
        }
        jsStreamInfo_Destroy(stream);
        jsConsumerInfo_Destroy(consumer);
        if (status == NATS_OK && stream_node >= 0 && consumer_node >= 0) {
            g_shared->producer_port = g_nodes[stream_node].client_port;
            g_shared->consumer_port = g_nodes[consumer_node].client_port;
            snprintf(g_shared->stream_leader, sizeof g_shared->stream_leader, "%s",
                     g_nodes[stream_node].name);
            snprintf(g_shared->consumer_leader, sizeof g_shared->consumer_leader, "%s",
                     g_nodes[consumer_node].name);
            return 1;
        }
        if (bench_signalled || bench_now_us() >= deadline) {
            if (status != NATS_OK)
                s_fail_status("setup", "stream or consumer info", status, code);
            else
                s_fail("setup", "the stream or the consumer has no leader");
            return 0;
        }
        bench_sleep_us(100000);
    }
}

static int setup_run(void *arg)
{
    (void) arg;
    int64_t deadline = bench_now_us() + (int64_t) BOOT_TIMEOUT_MS * 1000;
    natsConnection *conn = NULL;
    while (!conn) {
        int last_try = bench_signalled || bench_now_us() >= deadline;
        conn = nats_connect(g_nodes[0].client_port, "setup", !last_try); /* the last says why */
        if (!conn && last_try)
            return 1;
        if (!conn)
            bench_sleep_us(50000);
    }
    jsOptions options;
    jsOptions_Init(&options);
    options.Wait = SETUP_WAIT_MS;
    jsCtx *js = NULL;
    natsStatus status = natsConnection_JetStream(&js, conn, &options);
    if (status != NATS_OK)
        s_fail_status("setup", "natsConnection_JetStream", status, 0);
    int ok = status == NATS_OK && setup_create(js, deadline) && setup_find_leaders(js, deadline);
    jsCtx_Destroy(js);
    natsConnection_Destroy(conn);
    return ok ? 0 : 1;
}

/*  What the stream still holds once the consumers have closed. Acks are
    applied after the consumers have sent them (and, with replicas, once
    the consumer's group has agreed): up to 5 s for the count to settle
    at 0. */
static int leftovers_run(void *arg)
{
    (void) arg;
    natsConnection *conn = nats_connect(g_shared->producer_port, "leftovers", 0);
    jsCtx *js = NULL;
    jsOptions options;
    jsOptions_Init(&options);
    options.Wait = API_WAIT_MS;
    natsStatus status = conn ? natsConnection_JetStream(&js, conn, &options) : NATS_ERR;
    int64_t deadline = bench_now_us() + 5000000;
    while (status == NATS_OK) {
        jsStreamInfo *stream = NULL;
        jsConsumerInfo *consumer = NULL;
        jsErrCode code = 0;
        status = js_GetStreamInfo(&stream, js, STREAM, NULL, &code);
        if (status == NATS_OK)
            status = js_GetConsumerInfo(&consumer, js, STREAM, DURABLE, NULL, &code);
        if (status == NATS_OK) {
            g_shared->left_msgs = (long long) stream->State.Msgs;
            g_shared->left_ack_pending = (long long) consumer->NumAckPending;
            g_shared->left_undelivered = (long long) consumer->NumPending;
        }
        jsStreamInfo_Destroy(stream);
        jsConsumerInfo_Destroy(consumer);
        if (status != NATS_OK || g_shared->left_msgs == 0 || bench_now_us() >= deadline)
            break;
        bench_sleep_us(50000);
    }
    jsCtx_Destroy(js);
    if (conn)
        natsConnection_Destroy(conn);
    return status == NATS_OK ? 0 : 1;
}

/*  ---- The servers --------------------------------------------------------- */

/*  `nats-server --version` ("nats-server: v2.9.10"): the version in
    g_server_version and g_has_sync_interval; 0 if the program does not
    run. */
static int s_server_version(void)
{
    int fds[2];
    if (pipe(fds) != 0)
        return 0;
    pid_t pid = fork();
    if (pid == 0) {
        dup2(fds[1], 1);
        dup2(fds[1], 2);
        close(fds[0]);
        close(fds[1]);
        execlp(g_opts.server_program, g_opts.server_program, "--version", (char *) NULL);
        _exit(127);
    }
    close(fds[1]);
    char text[256] = "";
    size_t got = 0;
    ssize_t n;
    while (pid > 0 && got < sizeof text - 1
           && ((n = read(fds[0], text + got, sizeof text - 1 - got)) > 0
               || (n < 0 && errno == EINTR)))
        got += n > 0 ? (size_t) n : 0;
    close(fds[0]);
    int status = 0;
    if (pid < 0 || waitpid(pid, &status, 0) != pid || !WIFEXITED(status)
        || WEXITSTATUS(status) != 0)
        return 0;
    const char *v = strstr(text, " v");
    int major = 0, minor = 0;
    if (!v || sscanf(v + 2, "%d.%d", &major, &minor) != 2)
        return 0;
    snprintf(g_server_version, sizeof g_server_version, "%.*s", (int) strcspn(v + 1, " \r\n"),
             v + 1);
    g_has_sync_interval = major > 2 || (major == 2 && minor >= 10);
    return 1;
}

/*  In a node's child: nats-server with JetStream, its store in the node's
    directory, its name, and with more than one node its cluster port and
    routes to the others. */
static void node_exec(const node_t *node)
{
    char port[16], store[1100], listen[64], routes[NODES_MAX * 40] = "", config[1100];
    const char *argv[32];
    int n = 0;
    snprintf(port, sizeof port, "%d", node->client_port);
    snprintf(store, sizeof store, "%s/store", node->dir);
    argv[n++] = g_opts.server_program;
    argv[n++] = "-a";
    argv[n++] = "127.0.0.1";
    argv[n++] = "-p";
    argv[n++] = port;
    argv[n++] = "-n";
    argv[n++] = node->name;
    argv[n++] = "-js";
    argv[n++] = "-sd";
    argv[n++] = store;
    if (g_opts.nodes > 1) {
        snprintf(listen, sizeof listen, "nats://127.0.0.1:%d", node->cluster_port);
        for (uint64_t k = 0; k < g_opts.nodes; k++)
            if (&g_nodes[k] != node)
                snprintf(routes + strlen(routes), sizeof routes - strlen(routes),
                         "%snats://127.0.0.1:%d", *routes ? "," : "", g_nodes[k].cluster_port);
        argv[n++] = "--cluster_name";
        argv[n++] = CLUSTER_NAME;
        argv[n++] = "--cluster";
        argv[n++] = listen;
        argv[n++] = "--routes";
        argv[n++] = routes;
    }
    if (g_opts.sync_always) {
        snprintf(config, sizeof config, "%s/nats-server.conf", node->dir);
        argv[n++] = "-c";
        argv[n++] = config;
    }
    argv[n] = NULL;
    execvp(argv[0], (char *const *) argv);
    fprintf(stderr, "cannot run %s: %s\n", g_opts.server_program, strerror(errno));
    _exit(127);
}

static int node_start(node_t *node)
{
    if (g_opts.sync_always
        && !bench_write_file(node->dir, "nats-server.conf",
                         "# asyncq-nats-bench --sync always\n"
                         "jetstream {\n  sync_interval: always\n}\n"))
        return 0;
    node->pid = fork();
    if (node->pid == 0) {
        bench_child_output(node->dir, "nats-server.log");
        node_exec(node);
    }
    if (node->pid < 0)
        return 0;
    bench_track(node->pid);
    return 1;
}

/*  The last lines of a server's output, to say why it failed before its
    directory goes. */
static void node_print_log(const node_t *node)
{
    char path[1200], line[512], tail[20][512];
    snprintf(path, sizeof path, "%s/nats-server.log", node->dir);
    FILE *file = fopen(path, "r");
    size_t count = 0;
    while (file && fgets(line, sizeof line, file))
        snprintf(tail[count++ % 20], sizeof tail[0], "%s", line);
    if (file)
        fclose(file);
    fprintf(stderr, "asyncq-nats-bench: %s's output ends:\n", node->name);
    for (size_t i = count > 20 ? count - 20 : 0; i < count; i++)
        fprintf(stderr, "  %s", tail[i % 20]);
}

/*  Nothing of a server is kept: SIGKILL (its directory goes later). */
static void node_stop(node_t *node)
{
    if (node->pid > 0) {
        bench_untrack(node->pid);
        kill(node->pid, SIGKILL);
        waitpid(node->pid, NULL, 0);
    }
    node->pid = -1;
}

/*  The servers, then the setup process; fails at once if a server exits. */
static int nodes_start(void)
{
    int base = bench_free_ports((int) g_opts.nodes * 2);
    if (!base) {
        fprintf(stderr, "asyncq-nats-bench: no free ports\n");
        return 0;
    }
    for (uint64_t i = 0; i < g_opts.nodes; i++) {
        g_nodes[i].client_port = base + (int) i;
        g_nodes[i].cluster_port = base + (int) (g_opts.nodes + i);
    }
    for (uint64_t i = 0; i < g_opts.nodes; i++)
        if (!node_start(&g_nodes[i])) {
            fprintf(stderr, "asyncq-nats-bench: cannot start %s\n", g_nodes[i].name);
            return 0;
        }
    pid_t setup = bench_fork(setup_run, NULL);
    int done = setup < 0 ? 0 : -1, exited = 0;
    while (done < 0 && !bench_signalled) {
        done = bench_wait(setup, POLL_MS);
        for (uint64_t i = 0; done < 0 && !bench_signalled && i < g_opts.nodes; i++)
            if (waitpid(g_nodes[i].pid, NULL, WNOHANG) != 0) {
                fprintf(stderr, "asyncq-nats-bench: %s exited while starting\n",
                        g_nodes[i].name);
                bench_untrack(g_nodes[i].pid);
                g_nodes[i].pid = -1;
                node_print_log(&g_nodes[i]);
                done = 0;
                exited = 1;
            }
    }
    if (setup > 0 && done != 1)
        kill(setup, SIGKILL); /* bench_stop_all reaps it */
    if (done == 0 && !exited && !bench_signalled) {
        fprintf(stderr, "asyncq-nats-bench: JetStream did not start\n");
        for (uint64_t i = 0; i < g_opts.nodes; i++)
            if (g_nodes[i].pid > 0)
                node_print_log(&g_nodes[i]);
    }
    return done == 1;
}

/*  ---- Options, the run, the figures -------------------------------------- */

static void s_usage(void)
{
    printf("Usage: asyncq-nats-bench [OPTIONS]\n"
           "  -p, --producers N     producer processes (1)\n"
           "  -c, --consumers N     consumer processes (1)\n"
           "  -n, --items N         items in all (100000; k and M suffixes)\n"
           "  -s, --size BYTES      item size (64; at least 16: put time and item number)\n"
           "      --credit N        publishes without their PubAck per producer, and each\n"
           "                        consumer's Fetch batch (256); the consumer's max ack\n"
           "                        pending is credit x consumers\n"
           "      --nodes N         nats-server processes (3, a cluster; 1: one server, no\n"
           "                        cluster; at most %d)\n"
           "      --replicas R      the stream's replicas (default: one per node)\n"
           "      --sync MODE       default: the server's own fsync (2.9: stream files every\n"
           "                        2 min, Raft logs every 5 min, not configurable); always:\n"
           "                        jetstream { sync_interval: always }, fsync on every write\n"
           "                        (nats-server 2.10 or later)\n"
           "      --nats-server P   the server program (nats-server, from PATH)\n"
           "Items/s from the first publish to the natsMsg_Ack that completes the count (no\n"
           "reply; flushed with a PING/PONG), or to the last PubAck if later. An item counts\n"
           "as put once its PubAck arrives.\n",
           NODES_MAX);
}

static int s_parse(int argc, char **argv, nats_options_t *opts)
{
    static const struct option options[] = {
        {"producers", required_argument, 0, 'p'}, {"consumers", required_argument, 0, 'c'},
        {"items", required_argument, 0, 'n'},     {"size", required_argument, 0, 's'},
        {"credit", required_argument, 0, 'C'},    {"nodes", required_argument, 0, 'N'},
        {"replicas", required_argument, 0, 'R'},  {"sync", required_argument, 0, 'Y'},
        {"nats-server", required_argument, 0, 'S'}, {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0}};
    *opts = (nats_options_t){1, 1, 100000, 64, 256, 3, 0, 0, "nats-server"};
    int opt;
    while ((opt = getopt_long(argc, argv, "p:c:n:s:h", options, NULL)) != -1) {
        uint64_t *target = opt == 'p' ? &opts->producers : opt == 'c' ? &opts->consumers
                         : opt == 'n' ? &opts->items : opt == 's' ? &opts->size
                         : opt == 'C' ? &opts->credit : opt == 'N' ? &opts->nodes
                         : opt == 'R' ? &opts->replicas : NULL;
        if (opt == 'h') {
            s_usage();
            exit(0);
        } else if (opt == 'Y' && strcmp(optarg, "always") == 0) {
            opts->sync_always = 1;
        } else if (opt == 'Y' && strcmp(optarg, "default") == 0) {
            opts->sync_always = 0;
        } else if (opt == 'S') {
            opts->server_program = optarg;
        } else if (!target || !bench_parse_u64(optarg, target) || *target == 0) {
            fprintf(stderr, "asyncq-nats-bench: bad option or value (see --help)\n");
            return 0;
        }
    }
    if (!opts->replicas)
        opts->replicas = opts->nodes;
    if (optind < argc || opts->credit > 1000000 || opts->size > SIZE_MAX_BYTES
        || opts->producers + opts->consumers > CLIENTS_MAX || opts->nodes > NODES_MAX
        || opts->replicas > opts->nodes) {
        fprintf(stderr, "asyncq-nats-bench: bad arguments (see --help)\n");
        return 0;
    }
    if (opts->size < ITEM_HEADER)
        opts->size = ITEM_HEADER;
    return 1;
}

static const char *s_sync_text(void)
{
    if (g_opts.sync_always)
        return "sync_interval always (fsync on every write)";
    if (!g_has_sync_interval)
        return "the server's own fsync: stream files every 2 min, Raft logs (clusters) every"
               " 5 min, in the background, not configurable before 2.10; a PubAck is no fsync";
    return "the server's default sync_interval (2 min, in the background); a PubAck is no"
           " fsync";
}

static void s_print(uint64_t peak_kib)
{
    printf("asyncq-nats-bench: throughput, %llu producers, %llu consumers, %llu items of %llu"
           " bytes, credit %llu, nats-server %s, %llu node%s%s, JetStream stream R%llu"
           " (WorkQueue retention, file storage; %s); js_PublishAsync, %llu without PubAck per"
           " producer; one durable pull consumer (explicit ack, max ack pending %llu), Fetch of"
           " up to %llu, natsMsg_Ack per message (+ACK, no reply); producers on the stream"
           " leader's server, consumers on the consumer leader's\n",
           (unsigned long long) g_opts.producers, (unsigned long long) g_opts.consumers,
           (unsigned long long) g_opts.items, (unsigned long long) g_opts.size,
           (unsigned long long) g_opts.credit, g_server_version,
           (unsigned long long) g_opts.nodes, g_opts.nodes > 1 ? "s" : "",
           g_opts.nodes > 1 ? " (a cluster)" : "", (unsigned long long) g_opts.replicas,
           s_sync_text(), (unsigned long long) g_opts.credit,
           (unsigned long long) (g_opts.credit * g_opts.consumers),
           (unsigned long long) g_opts.credit);
    bench_print_window(g_opts.items, atomic_load(&g_shared->first_put_us),
                       atomic_load(&g_shared->last_ack_us),
                       atomic_load(&g_shared->last_confirm_us), "ack", "PubAck",
                       "natsMsg_Ack has no reply, the last acks are flushed with a PING/PONG");
    bench_print_percentiles("put->confirm", g_confirm_us, g_opts.items);
    bench_print_percentiles("put->deliver", g_delivery_us, g_opts.items);
    bench_print_percentiles("put->ack", g_ack_us, g_opts.items);
    printf("  every item acked: %llu items confirmed (PubAck), %llu delivered, %llu acks sent"
           " (items); deliveries %llu (%llu redelivered); left: %lld messages in the stream"
           " after the consumers closed (%lld pending ack, %lld undelivered)\n",
           (unsigned long long) atomic_load(&g_shared->confirmed),
           (unsigned long long) atomic_load(&g_shared->unique),
           (unsigned long long) atomic_load(&g_shared->acked),
           (unsigned long long) atomic_load(&g_shared->deliveries),
           (unsigned long long) atomic_load(&g_shared->redelivered), g_shared->left_msgs,
           g_shared->left_ack_pending, g_shared->left_undelivered);
    if (peak_kib)
        printf("  nats-server peak RSS %.1f MiB (%s); stream leader %s, consumer leader %s\n",
               peak_kib / 1024.0, g_opts.nodes > 1 ? "the servers' summed" : "one server",
               g_shared->stream_leader, g_shared->consumer_leader);
}

static pid_t g_clients[CLIENTS_MAX];
static int g_client_count;

/*  bench_wait_count, and a failure as soon as a client process dies or
    exits with a failure (a producer that is done exits with 0). */
static int s_wait_count(atomic_uint_fast64_t *counter, uint64_t target, int timeout_ms)
{
    int64_t deadline = bench_now_us() + (int64_t) timeout_ms * 1000;
    while (!bench_wait_count(counter, target, &g_shared->failed, 100)) {
        if (atomic_load(&g_shared->failed) || bench_signalled || bench_now_us() >= deadline)
            return 0;
        for (int i = 0; i < g_client_count; i++) {
            int status;
            if (g_clients[i] <= 0 || waitpid(g_clients[i], &status, WNOHANG) != g_clients[i])
                continue;
            bench_untrack(g_clients[i]);
            g_clients[i] = -1;
            if (WIFSIGNALED(status) || WEXITSTATUS(status) != 0) {
                char why[64];
                snprintf(why, sizeof why, "%s %d",
                         WIFSIGNALED(status) ? "killed by signal" : "exited with",
                         WIFSIGNALED(status) ? WTERMSIG(status) : WEXITSTATUS(status));
                s_fail("a client process", why);
                return 0;
            }
        }
    }
    return 1;
}

/*  The consumers, then the producers, each waiting for the one before. */
static int s_start_clients(void)
{
    for (uint64_t i = 0; i < g_opts.consumers; i++)
        if ((g_clients[g_client_count++] = bench_fork(consumer_run, (void *) (uintptr_t) i)) < 0)
            return 0;
    if (!s_wait_count(&g_shared->consumers_ready, g_opts.consumers, 30000))
        return 0;
    for (uint64_t i = 0; i < g_opts.producers; i++)
        if ((g_clients[g_client_count++] = bench_fork(producer_run, (void *) (uintptr_t) i)) < 0)
            return 0;
    return s_wait_count(&g_shared->producers_ready, g_opts.producers, 30000);
}

static int s_run(uint64_t *peak_kib)
{
    int ok = nodes_start() && s_start_clients();
    if (ok) {
        atomic_store(&g_shared->go, 1);
        ok = s_wait_count(&g_shared->acked, g_opts.items, RUN_TIMEOUT_MS)
             && s_wait_count(&g_shared->confirmed, g_opts.items, 60000);
    }
    atomic_store(&g_shared->stop, 1);
    *peak_kib = 0;
    for (uint64_t i = 0; i < g_opts.nodes; i++)
        if (g_nodes[i].pid > 0) {
            *peak_kib += bench_proc_kib(g_nodes[i].pid, "VmHWM:");
            bench_untrack(g_nodes[i].pid);
        }
    bench_stop_all(0, 5000); /* signal 0: clients close and exit on `stop`; SIGKILL after 5 s */
    if (ok && !bench_signalled) {
        pid_t leftovers = bench_fork(leftovers_run, NULL);
        if (leftovers < 0 || bench_wait(leftovers, 15000) != 1)
            g_shared->left_msgs = g_shared->left_ack_pending = g_shared->left_undelivered = -1;
        bench_stop_all(SIGKILL, 0);
    }
    for (uint64_t i = 0; i < g_opts.nodes; i++)
        node_stop(&g_nodes[i]);
    return ok;
}

/*  The figures, or what failed; 1 if the run succeeded. */
static int s_report(int ok, uint64_t peak_kib)
{
    if (ok && atomic_load(&g_shared->unique) == g_opts.items
        && atomic_load(&g_shared->bad_items) == 0) {
        s_print(peak_kib);
        return 1;
    }
    printf("asyncq-nats-bench: FAILED: %llu of %llu items confirmed, %llu delivered, %llu acked\n",
           (unsigned long long) atomic_load(&g_shared->confirmed),
           (unsigned long long) g_opts.items, (unsigned long long) atomic_load(&g_shared->unique),
           (unsigned long long) atomic_load(&g_shared->acked));
    return 0;
}

int main(int argc, char **argv)
{
    if (!s_parse(argc, argv, &g_opts))
        return 2;
    if (!s_server_version()) {
        fprintf(stderr, "asyncq-nats-bench: cannot run %s --version (apt-get install nats-server,"
                        " or --nats-server PATH)\n",
                g_opts.server_program);
        return 1;
    }
    if (g_opts.sync_always && !g_has_sync_interval) {
        fprintf(stderr, "asyncq-nats-bench: --sync always needs nats-server 2.10 or later: %s has"
                        " no sync_interval (it fsyncs stream files every 2 min and Raft logs every"
                        " 5 min, in the background, and nothing changes that)\n",
                g_server_version);
        return 2;
    }
    bench_catch_signals();
    size_t shared_size = sizeof(shared_t) + g_opts.items * (3 * sizeof(uint32_t) + 1);
    char *memory = bench_shared_new(shared_size);
    uint64_t dirs = 0;
    for (; memory && dirs < g_opts.nodes; dirs++) {
        node_t *node = &g_nodes[dirs];
        node->pid = -1;
        snprintf(node->name, sizeof node->name, "node%d", (int) dirs + 1);
        if (bench_temp_dir("asyncq-nats-bench", node->dir, sizeof node->dir))
            break;
    }
    int ok = 0;
    if (!memory || dirs < g_opts.nodes) {
        fprintf(stderr, "asyncq-nats-bench: no memory or no temp dir\n");
    } else {
        g_shared = (shared_t *) memory;
        g_confirm_us = (uint32_t *) (memory + sizeof(shared_t));
        g_delivery_us = g_confirm_us + g_opts.items;
        g_ack_us = g_delivery_us + g_opts.items;
        g_seen = (uint8_t *) (g_ack_us + g_opts.items);
        atomic_store(&g_shared->first_put_us, INT64_MAX);
        uint64_t peak_kib = 0;
        ok = s_run(&peak_kib);
        ok = s_report(ok, peak_kib);
    }
    for (uint64_t i = 0; i < dirs; i++)
        bench_remove_tree(g_nodes[i].dir);
    bench_shared_free(memory, shared_size);
    return bench_signalled ? 130 : ok ? 0 : 1;
}
