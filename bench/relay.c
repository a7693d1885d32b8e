/*  asyncq-relay-bench: the ideal ZeroMQ relay, the baseline asyncq-bench's
    figures are compared with. A benchmark, not a test: it prints figures
    and asserts nothing. libzmq only, nothing of asyncq.

    Producers PUSH items to a relay process's PULL socket; the relay
    forwards each message to a consumer (DEALER) through its ROUTER, in
    turn among the consumers that have credit, and stops reading the PULL
    socket while none has (ZeroMQ's buffers then hold the producers back).
    Consumers ack back with one message per AQ_ACK_BATCH items (or before
    they wait, as asyncq's library does), each giving their credit back.

    What it leaves out is what asyncq pays for: no item ids, no queue, no
    ledger for joins, no leases, no confirm to the producer, nothing kept
    for a consumer that dies. The figure is what ZeroMQ alone moves with the
    same sockets and the same flow control, so asyncq/relay is the cost of
    that bookkeeping.

    --awaited is the ideal awaited put instead: each producer sends an
    item on a DEALER and waits for the relay's answer before its next, as
    an awaited put does (asyncq's PUT and SYNC, a Redis command); no
    consumers. Its figure is the most any client of libzmq can do one
    round trip at a time on this machine.

    --batch B packs B items into one message on the way in (as PUTS does);
    the relay forwards it whole, charging its B items to one consumer's
    credit (it may overdraw by B-1), so the consumer leg is batched too (as
    ITEMS is). --credit 1 is the one-at-a-time mode: each item waits for its
    ack's round trip. Every item carries its put time and number, as in
    asyncq-bench; throughput runs from the first put to the last ack
    reaching the relay (asyncq-bench's runs to the JOINED, one round trip
    more). */
#include <getopt.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#include "benchlib.h"

/*  Every item starts with its put time (int64) and its number (uint64). */
#define ITEM_HEADER 16
/*  As the asyncq library: an ack message per this many items. */
#define ACK_BATCH 256
#define CONSUMERS_MAX 256
#define RUN_TIMEOUT_MS 900000
/*  Messages the relay moves before it looks at the ROUTER again, so acks
    (credit) are not starved by a busy PULL socket. */
#define RELAY_BURST 256

/*  Consumer -> relay: one byte of command and a u32 count. */
#define CMD_CREDIT 'C'
#define CMD_ACK 'A'

typedef struct {
    uint64_t producers, consumers, items, size, credit, batch, ack_batch, awaited;
} relay_options_t;

typedef struct {
    atomic_uint_fast64_t relay_ready, consumers_ready, producers_ready, failed, go, stop;
    atomic_uint_fast64_t deliveries, unique, acks_sent, acks_relayed, bad_items;
    atomic_int_fast64_t first_put_us, last_ack_us;
    char pull_endpoint[64], router_endpoint[64];
} shared_t;

typedef struct {
    uint8_t id[256];
    size_t id_size;
    int64_t credit; /* may go below 0 by up to batch-1 */
} relay_peer_t;

static relay_options_t g_opts;
static shared_t *g_shared;
static uint32_t *g_delivery_us;
static uint8_t *g_seen;

static uint32_t s_clamp_us(int64_t us)
{
    return us < 0 ? 0 : us >= UINT32_MAX ? UINT32_MAX - 1 : (uint32_t) us;
}

static void s_last_endpoint(void *socket, char *buf, size_t size)
{
    size_t length = size;
    if (zmq_getsockopt(socket, ZMQ_LAST_ENDPOINT, buf, &length) != 0)
        buf[0] = '\0';
}

/*  The peer a ROUTER message came from, added on its first CREDIT. */
static relay_peer_t *relay_peer_find(relay_peer_t *peers, size_t *count, const zmq_msg_t *id,
                                     int add)
{
    size_t size = zmq_msg_size((zmq_msg_t *) id);
    const void *data = zmq_msg_data((zmq_msg_t *) id);
    for (size_t i = 0; i < *count; i++)
        if (peers[i].id_size == size && memcmp(peers[i].id, data, size) == 0)
            return &peers[i];
    if (!add || *count == CONSUMERS_MAX || size > sizeof peers[0].id)
        return NULL;
    relay_peer_t *peer = &peers[(*count)++];
    memcpy(peer->id, data, size);
    peer->id_size = size;
    peer->credit = 0;
    return peer;
}

/*  One message from a consumer: CREDIT sets its credit, ACK gives some
    back. Returns 0 when none was waiting. */
static int relay_read_router(void *router, relay_peer_t *peers, size_t *count)
{
    zmq_msg_t id, body;
    zmq_msg_init(&id);
    zmq_msg_init(&body);
    if (zmq_msg_recv(&id, router, ZMQ_DONTWAIT) < 0) {
        zmq_msg_close(&id);
        zmq_msg_close(&body);
        return 0;
    }
    if (!zmq_msg_more(&id) || zmq_msg_recv(&body, router, 0) < 0 || zmq_msg_size(&body) != 5) {
        zmq_msg_close(&id);
        zmq_msg_close(&body);
        return 1;
    }
    const uint8_t *data = zmq_msg_data(&body);
    uint32_t value;
    memcpy(&value, data + 1, sizeof value);
    relay_peer_t *peer = relay_peer_find(peers, count, &id, data[0] == CMD_CREDIT);
    if (peer && data[0] == CMD_CREDIT) {
        peer->credit = value;
        atomic_fetch_add(&g_shared->consumers_ready, 1);
    } else if (peer && data[0] == CMD_ACK) {
        peer->credit += value;
        uint64_t acked = atomic_fetch_add(&g_shared->acks_relayed, value) + value;
        if (acked >= g_opts.items)
            bench_atomic_max(&g_shared->last_ack_us, bench_now_us());
    }
    zmq_msg_close(&id);
    zmq_msg_close(&body);
    return 1;
}

/*  The next peer with credit after *turn, in turn; NULL if none. */
static relay_peer_t *relay_pick(relay_peer_t *peers, size_t count, size_t *turn)
{
    for (size_t k = 0; k < count; k++) {
        size_t i = (*turn + k) % count;
        if (peers[i].credit > 0) {
            *turn = i + 1;
            return &peers[i];
        }
    }
    return NULL;
}

static int relay_has_credit(const relay_peer_t *peers, size_t count)
{
    for (size_t i = 0; i < count; i++)
        if (peers[i].credit > 0)
            return 1;
    return 0;
}

/*  Forwards up to RELAY_BURST messages from the PULL socket, each to a
    consumer with credit, the received frame itself (no copy). */
static void relay_forward(void *pull, void *router, relay_peer_t *peers, size_t count,
                          size_t *turn)
{
    for (int n = 0; n < RELAY_BURST; n++) {
        relay_peer_t *peer = relay_pick(peers, count, turn);
        if (!peer)
            return;
        zmq_msg_t msg;
        zmq_msg_init(&msg);
        if (zmq_msg_recv(&msg, pull, ZMQ_DONTWAIT) < 0) {
            zmq_msg_close(&msg);
            return;
        }
        peer->credit -= (int64_t) (zmq_msg_size(&msg) / g_opts.size);
        zmq_send(router, peer->id, peer->id_size, ZMQ_SNDMORE);
        if (zmq_msg_send(&msg, router, 0) < 0)
            zmq_msg_close(&msg);
    }
}

/*  --awaited: answers each item at once, to the DEALER that sent it. */
static void relay_answer(void *router)
{
    for (int n = 0; n < RELAY_BURST; n++) {
        zmq_msg_t id, item;
        zmq_msg_init(&id);
        zmq_msg_init(&item);
        if (zmq_msg_recv(&id, router, ZMQ_DONTWAIT) < 0) {
            zmq_msg_close(&id);
            zmq_msg_close(&item);
            return;
        }
        if (zmq_msg_more(&id) && zmq_msg_recv(&item, router, 0) >= 0
            && zmq_msg_size(&item) == g_opts.size
            && zmq_msg_send(&id, router, ZMQ_SNDMORE) >= 0 && zmq_send(router, "OK", 2, 0) == 2) {
            uint64_t answered = atomic_fetch_add(&g_shared->acks_relayed, 1) + 1;
            if (answered >= g_opts.items)
                bench_atomic_max(&g_shared->last_ack_us, bench_now_us());
        }
        zmq_msg_close(&id);
        zmq_msg_close(&item);
    }
}

static int relay_run(void *arg)
{
    (void) arg;
    void *context = zmq_ctx_new();
    void *pull = zmq_socket(context, ZMQ_PULL), *router = zmq_socket(context, ZMQ_ROUTER);
    int unbounded = 0; /* credit bounds what is sent to each consumer */
    zmq_setsockopt(router, ZMQ_SNDHWM, &unbounded, sizeof unbounded);
    if (zmq_bind(pull, "tcp://127.0.0.1:*") || zmq_bind(router, "tcp://127.0.0.1:*")) {
        atomic_fetch_add(&g_shared->failed, 1);
        return 1;
    }
    s_last_endpoint(pull, g_shared->pull_endpoint, sizeof g_shared->pull_endpoint);
    s_last_endpoint(router, g_shared->router_endpoint, sizeof g_shared->router_endpoint);
    atomic_store(&g_shared->relay_ready, 1);
    static relay_peer_t peers[CONSUMERS_MAX];
    size_t count = 0, turn = 0;
    while (!atomic_load(&g_shared->stop)) {
        zmq_pollitem_t items[2] = {{router, 0, ZMQ_POLLIN, 0}, {pull, 0, ZMQ_POLLIN, 0}};
        /* Without credit the PULL socket is not read: producers wait. */
        int with_credit = relay_has_credit(peers, count);
        if (zmq_poll(items, with_credit ? 2 : 1, 100) < 0)
            break;
        if ((items[0].revents & ZMQ_POLLIN) && g_opts.awaited)
            relay_answer(router);
        else if (items[0].revents & ZMQ_POLLIN)
            for (int n = 0; n < RELAY_BURST && relay_read_router(router, peers, &count); n++)
                ;
        if (with_credit && (items[1].revents & ZMQ_POLLIN))
            relay_forward(pull, router, peers, count, &turn);
    }
    zmq_close(pull);
    zmq_close(router);
    zmq_ctx_term(context);
    return 0;
}

/*  Records one item: its put->delivery time, the first time it is seen. */
static void consumer_record(const uint8_t *item, int64_t now)
{
    int64_t sent;
    uint64_t number;
    memcpy(&sent, item, sizeof sent);
    memcpy(&number, item + 8, sizeof number);
    atomic_fetch_add(&g_shared->deliveries, 1);
    if (number >= g_opts.items) {
        atomic_fetch_add(&g_shared->bad_items, 1);
        return;
    }
    if (!__atomic_exchange_n(&g_seen[number], 1, __ATOMIC_SEQ_CST)) {
        g_delivery_us[number] = s_clamp_us(now - sent);
        atomic_fetch_add(&g_shared->unique, 1);
    }
}

static int consumer_send(void *dealer, char command, uint32_t value)
{
    uint8_t body[5] = {(uint8_t) command};
    memcpy(body + 1, &value, sizeof value);
    return zmq_send(dealer, body, sizeof body, 0) == (int) sizeof body ? 0 : -1;
}

/*  Acks what is pending: one message for all of them. */
static void consumer_flush(void *dealer, uint32_t *pending)
{
    if (*pending && consumer_send(dealer, CMD_ACK, *pending) == 0)
        atomic_fetch_add(&g_shared->acks_sent, *pending);
    *pending = 0;
}

/*  Takes every message already received, acking each ACK_BATCH items;
    acks the rest before returning to wait, so credit is never held by
    a consumer that has nothing to do. */
static void consumer_drain(void *dealer, uint32_t *pending)
{
    zmq_msg_t msg;
    zmq_msg_init(&msg);
    while (zmq_msg_recv(&msg, dealer, ZMQ_DONTWAIT) >= 0) {
        int64_t now = bench_now_us();
        const uint8_t *data = zmq_msg_data(&msg);
        size_t items = zmq_msg_size(&msg) / g_opts.size;
        for (size_t i = 0; i < items; i++)
            consumer_record(data + i * g_opts.size, now);
        *pending += (uint32_t) items;
        if (*pending >= g_opts.ack_batch)
            consumer_flush(dealer, pending);
    }
    zmq_msg_close(&msg);
    consumer_flush(dealer, pending);
}

static int consumer_run(void *arg)
{
    (void) arg;
    void *context = zmq_ctx_new();
    void *dealer = zmq_socket(context, ZMQ_DEALER);
    if (zmq_connect(dealer, g_shared->router_endpoint)
        || consumer_send(dealer, CMD_CREDIT, (uint32_t) g_opts.credit)) {
        atomic_fetch_add(&g_shared->failed, 1);
        return 1;
    }
    uint32_t pending = 0;
    while (!atomic_load(&g_shared->stop)) {
        zmq_pollitem_t item = {dealer, 0, ZMQ_POLLIN, 0};
        if (zmq_poll(&item, 1, 100) < 0)
            break;
        if (item.revents & ZMQ_POLLIN)
            consumer_drain(dealer, &pending);
    }
    int linger = 0;
    zmq_setsockopt(dealer, ZMQ_LINGER, &linger, sizeof linger);
    zmq_close(dealer);
    zmq_ctx_term(context);
    return 0;
}

/*  --awaited: producer p's items, each sent on a DEALER and answered by
    the relay before the next; the round trip is its put->answer time. */
static int producer_await(void *context, uint64_t first, uint64_t end)
{
    void *dealer = zmq_socket(context, ZMQ_DEALER);
    if (zmq_connect(dealer, g_shared->router_endpoint)) {
        atomic_fetch_add(&g_shared->failed, 1);
        return 1;
    }
    uint8_t *item = calloc(1, g_opts.size);
    char answer[8];
    atomic_fetch_add(&g_shared->producers_ready, 1);
    bench_wait_count(&g_shared->go, 1, &g_shared->failed, -1);
    bench_atomic_min(&g_shared->first_put_us, bench_now_us());
    for (uint64_t number = first; number < end && !atomic_load(&g_shared->stop); number++) {
        int64_t sent = bench_now_us();
        memcpy(item, &sent, sizeof sent);
        memcpy(item + 8, &number, sizeof number);
        if (zmq_send(dealer, item, g_opts.size, 0) < 0
            || zmq_recv(dealer, answer, sizeof answer, 0) != 2)
            break;
        g_seen[number] = 1;
        g_delivery_us[number] = s_clamp_us(bench_now_us() - sent);
        atomic_fetch_add(&g_shared->unique, 1);
    }
    free(item);
    int linger = 0;
    zmq_setsockopt(dealer, ZMQ_LINGER, &linger, sizeof linger);
    zmq_close(dealer);
    zmq_ctx_term(context);
    return 0;
}

/*  Producer p's items: a contiguous slice, in messages of `batch` items. */
static int producer_run(void *arg)
{
    uint64_t p = (uint64_t) (uintptr_t) arg;
    uint64_t first = g_opts.items * p / g_opts.producers;
    uint64_t end = g_opts.items * (p + 1) / g_opts.producers;
    void *context = zmq_ctx_new();
    if (g_opts.awaited)
        return producer_await(context, first, end);
    void *push = zmq_socket(context, ZMQ_PUSH);
    if (zmq_connect(push, g_shared->pull_endpoint)) {
        atomic_fetch_add(&g_shared->failed, 1);
        return 1;
    }
    uint8_t *buf = calloc(g_opts.batch, g_opts.size);
    atomic_fetch_add(&g_shared->producers_ready, 1);
    bench_wait_count(&g_shared->go, 1, &g_shared->failed, -1);
    bench_atomic_min(&g_shared->first_put_us, bench_now_us());
    for (uint64_t number = first; number < end && !atomic_load(&g_shared->stop);) {
        size_t n = 0;
        for (; n < g_opts.batch && number < end; n++, number++) {
            int64_t now = bench_now_us();
            memcpy(buf + n * g_opts.size, &now, sizeof now);
            memcpy(buf + n * g_opts.size + 8, &number, sizeof number);
        }
        if (zmq_send(push, buf, n * g_opts.size, 0) < 0)
            break;
    }
    free(buf);
    zmq_close(push); /* linger: what is queued is still sent */
    zmq_ctx_term(context);
    return 0;
}

static void s_usage(void)
{
    printf("Usage: asyncq-relay-bench [OPTIONS]\n"
           "  -p, --producers N     producer processes (1)\n"
           "  -c, --consumers N     consumer processes (1)\n"
           "  -n, --items N         items in all (100000; k and M suffixes)\n"
           "  -s, --size BYTES      item size (64; at least 16: put time and item number)\n"
           "      --credit N        each consumer's credit (256); 1: one item at a time\n"
           "      --batch N         items per message, in and out (1)\n"
           "      --ack-batch N     items acked per ack message (256, as the asyncq library)\n"
           "      --awaited         no consumers: each producer sends an item on a DEALER and\n"
           "                        waits for the relay's answer before the next (the ideal\n"
           "                        awaited put, one round trip each)\n"
           "Items/s from the first put to the last ack reaching the relay (--awaited: to\n"
           "the last answer sent).\n");
}

static int s_parse(int argc, char **argv, relay_options_t *opts)
{
    static const struct option options[] = {
        {"producers", required_argument, 0, 'p'}, {"consumers", required_argument, 0, 'c'},
        {"items", required_argument, 0, 'n'},     {"size", required_argument, 0, 's'},
        {"credit", required_argument, 0, 'C'},    {"batch", required_argument, 0, 'B'},
        {"ack-batch", required_argument, 0, 'A'}, {"awaited", no_argument, 0, 'W'},
        {"help", no_argument, 0, 'h'},            {0, 0, 0, 0}};
    *opts = (relay_options_t){1, 1, 100000, 64, 256, 1, ACK_BATCH, 0};
    int opt;
    while ((opt = getopt_long(argc, argv, "p:c:n:s:h", options, NULL)) != -1) {
        if (opt == 'W') {
            opts->awaited = 1;
            continue;
        }
        uint64_t *target = opt == 'p' ? &opts->producers : opt == 'c' ? &opts->consumers
                         : opt == 'n' ? &opts->items : opt == 's' ? &opts->size
                         : opt == 'C' ? &opts->credit : opt == 'B' ? &opts->batch
                         : opt == 'A' ? &opts->ack_batch : NULL;
        if (opt == 'h') {
            s_usage();
            exit(0);
        }
        if (!target || !bench_parse_u64(optarg, target) || *target == 0) {
            fprintf(stderr, "asyncq-relay-bench: bad option or value (see --help)\n");
            return 0;
        }
    }
    if (optind < argc || opts->consumers > CONSUMERS_MAX || opts->credit > UINT32_MAX) {
        fprintf(stderr, "asyncq-relay-bench: bad arguments (see --help)\n");
        return 0;
    }
    if (opts->size < ITEM_HEADER)
        opts->size = ITEM_HEADER;
    if (opts->awaited)
        opts->consumers = 0;
    return 1;
}

static void s_print(uint64_t peak_kib)
{
    double seconds
        = (double) (atomic_load(&g_shared->last_ack_us) - atomic_load(&g_shared->first_put_us))
          / 1e6;
    if (g_opts.awaited) {
        printf("asyncq-relay-bench: awaited, %llu producers, %llu items of %llu bytes, each"
               " answered before the next\n",
               (unsigned long long) g_opts.producers, (unsigned long long) g_opts.items,
               (unsigned long long) g_opts.size);
        printf("  throughput   %.0f items/s (first put to the last answer: %.3f s)\n",
               (double) g_opts.items / seconds, seconds);
        bench_print_percentiles("put->answer", g_delivery_us, g_opts.items);
        return;
    }
    printf("asyncq-relay-bench: throughput, %llu producers, %llu consumers, %llu items of %llu"
           " bytes, credit %llu, %llu items per message, acks %llu to a message\n",
           (unsigned long long) g_opts.producers, (unsigned long long) g_opts.consumers,
           (unsigned long long) g_opts.items, (unsigned long long) g_opts.size,
           (unsigned long long) g_opts.credit, (unsigned long long) g_opts.batch,
           (unsigned long long) g_opts.ack_batch);
    printf("  throughput   %.0f items/s (first put to the last ack at the relay: %.3f s)\n",
           (double) g_opts.items / seconds, seconds);
    bench_print_percentiles("put->deliver", g_delivery_us, g_opts.items);
    uint64_t deliveries = atomic_load(&g_shared->deliveries);
    printf("  every item acked: %llu items delivered, %llu acks sent; deliveries %llu\n",
           (unsigned long long) atomic_load(&g_shared->unique),
           (unsigned long long) atomic_load(&g_shared->acks_sent),
           (unsigned long long) deliveries);
    printf("  relay peak RSS %.1f MiB\n", peak_kib / 1024.0);
}

/*  Starts the relay, the consumers (their credit registered) and the
    producers, in that order, each waiting for the one before. */
static int s_start(pid_t *relay)
{
    *relay = bench_fork(relay_run, NULL);
    if (*relay < 0 || !bench_wait_count(&g_shared->relay_ready, 1, &g_shared->failed, 10000))
        return 0;
    for (uint64_t i = 0; i < g_opts.consumers; i++)
        if (bench_fork(consumer_run, NULL) < 0)
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
    if (!memory) {
        fprintf(stderr, "asyncq-relay-bench: no memory for %llu items\n",
                (unsigned long long) g_opts.items);
        return 1;
    }
    g_shared = (shared_t *) memory;
    g_delivery_us = (uint32_t *) (memory + sizeof(shared_t));
    g_seen = (uint8_t *) (g_delivery_us + g_opts.items);
    atomic_store(&g_shared->first_put_us, INT64_MAX);
    pid_t relay = -1;
    int ok = s_start(&relay);
    if (!ok)
        fprintf(stderr, "asyncq-relay-bench: the relay or a client did not start\n");
    if (ok) {
        atomic_store(&g_shared->go, 1);
        ok = bench_wait_count(&g_shared->acks_relayed, g_opts.items, &g_shared->failed,
                              RUN_TIMEOUT_MS);
    }
    uint64_t peak_kib = relay > 0 ? bench_proc_kib(relay, "VmHWM:") : 0;
    atomic_store(&g_shared->stop, 1);
    bench_stop_all(0, 3000); /* signal 0: they exit on `stop`; SIGKILL after 3 s */
    if (ok && atomic_load(&g_shared->unique) == g_opts.items
        && atomic_load(&g_shared->bad_items) == 0) {
        s_print(peak_kib);
    } else {
        printf("asyncq-relay-bench: FAILED: %llu of %llu items delivered, %llu acked at the"
               " relay\n",
               (unsigned long long) atomic_load(&g_shared->unique),
               (unsigned long long) g_opts.items,
               (unsigned long long) atomic_load(&g_shared->acks_relayed));
        ok = 0;
    }
    bench_shared_free(memory, shared_size);
    return bench_signalled ? 130 : ok ? 0 : 1;
}
