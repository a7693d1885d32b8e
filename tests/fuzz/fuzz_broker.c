/*  libFuzzer target for the broker itself: a broker without sockets
    (broker_new_detached) is fed a sequence of operations read from the
    input: messages from four peers on the ROUTER (mostly well formed, with
    fields the input chooses, sometimes raw frames), puts on the PULL socket
    (in sequence, resent, or with gaps), time moving on (leases, delays,
    join time-outs, heartbeats), and sends that fail (a peer gone or too
    slow). After every operation the invariants of docs/DESIGN.md must hold
    (broker_check), every JOINED the broker sends must be exact: no item
    accepted before its JOIN is still outstanding, and the records the
    broker applied, encoded and decoded, must give the live state exactly
    (state_dump: every item, order included): applied as they come by a
    follower, as a replica will, after every operation; and replayed into
    a fresh state as a restart does, every 16th operation.

    Built with clang only (-DASYNCQ_FUZZ=ON): build-fuzz/tests/fuzz_broker
    CORPUS_DIR. The corpus kept in tests/fuzz/corpus/broker seeds it. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "broker.h"
#include "check.h"
#include "commands.h"
#include "puts.h"
#include "server.h"

#define PEERS 4
#define SEEN 64

typedef struct {
    const uint8_t *at;
    size_t left;
} input_t;

static uint64_t s_byte(input_t *in)
{
    if (!in->left)
        return 0;
    in->left--;
    return *in->at++;
}

static uint64_t s_u16(input_t *in)
{
    return s_byte(in) | s_byte(in) << 8;
}

/*  What the fuzzer remembers between operations. */
typedef struct {
    broker_t *broker;
    uint64_t seen[PEERS][SEEN];  /* item ids delivered to each peer, to ack */
    size_t seen_count[PEERS];
    uint64_t next_seq[8];        /* per producer id: the next seq it would send */
    uint64_t join_end[256];      /* per join tag: the ledger position it waits for */
    uint64_t join_queue[256];    /* ... and the serial of its queue */
    int fail_next;               /* errno for the next send, or 0 */
    uint64_t operations;
    uint64_t tags;
} fuzz_t;

static fuzz_t s_fuzz;

/*  The records the broker applied, encoded as a journal holds them: type,
    u32 size, body. */
static uint8_t *s_log;
static size_t s_log_size, s_log_capacity;

static void s_keep_record(void *ctx, const record_t *record)
{
    (void) ctx;
    size_t size = record_size(record);
    if (s_log_size + 5 + size > s_log_capacity) {
        s_log_capacity = (s_log_size + 5 + size) * 2;
        s_log = realloc(s_log, s_log_capacity);
        if (!s_log)
            abort();
    }
    s_log[s_log_size] = record->type;
    aq_put_u32(s_log + s_log_size + 1, (uint32_t) size);
    record_encode(record, s_log + s_log_size + 5);
    s_log_size += 5 + size;
}

/*  A state of its own, built from the records alone. */
typedef struct {
    state_t state;
    const broker_config_t *config;
} replica_t;

static queue_t *s_replica_make(void *ctx, aq_bytes_t name)
{
    replica_t *replica = ctx;
    char text[AQ_NAME_MAX + 1];
    memcpy(text, name.data, name.size);
    text[name.size] = '\0';
    queue_t *queue = queue_new(text, replica->config->maxsize, replica->config->max_attempts,
                               replica->config->lease_ms);
    if (queue && dict_set(replica->state.queues, name.data, name.size, queue))
        queue_destroy(&queue);
    return queue;
}

static void s_replica_free(void *ctx, queue_t *queue)
{
    (void) ctx;
    queue_destroy(&queue);
}

static void s_replica_free_each(void *ctx, void *value)
{
    s_replica_free(ctx, value);
}

typedef struct {
    char *text;
    size_t size, capacity;
} text_t;

static int s_text_write(void *ctx, const char *data, size_t size)
{
    text_t *text = ctx;
    if (text->size + size + 1 > text->capacity) {
        text->capacity = (text->size + size + 1) * 2;
        text->text = realloc(text->text, text->capacity);
        if (!text->text)
            abort();
    }
    memcpy(text->text + text->size, data, size);
    text->size += size;
    text->text[text->size] = '\0';
    return 0;
}

static replica_t *s_replica_new(const broker_config_t *config, int replaying)
{
    replica_t *replica = calloc(1, sizeof *replica);
    if (!replica)
        abort();
    replica->config = config;
    replica->state = (state_t){.store = store_new(), .queues = dict_new(),
                               .replaying = replaying, .queue_make = s_replica_make,
                               .queue_free = s_replica_free, .ctx = replica};
    if (!replica->state.store || !replica->state.queues)
        abort();
    return replica;
}

static void s_replica_destroy(replica_t **replica_p)
{
    replica_t *replica = *replica_p;
    if (!replica)
        return;
    dict_each(replica->state.queues, s_replica_free_each, NULL);
    dict_destroy(&replica->state.queues);
    store_destroy(&replica->state.store);
    free(replica);
    *replica_p = NULL;
}

/*  Applies the records kept from `at` on; returns where they end. */
static size_t s_replica_apply(replica_t *replica, size_t at)
{
    while (at < s_log_size) {
        uint32_t size = aq_get_u32(s_log + at + 1);
        record_t record;
        state_effects_t effects;
        if (record_decode(s_log[at], s_log + at + 5, size, &record)
            || state_apply(&replica->state, &record, &effects) < 0) {
            fprintf(stderr, "record of type %u at %zu does not apply\n", s_log[at], at);
            abort();
        }
        at += 5 + size;
    }
    return at;
}

static void s_assert_same(const replica_t *replica, const char *what)
{
    text_t live = {0}, other = {0};
    state_dump(&s_fuzz.broker->state, s_text_write, &live);
    state_dump(&replica->state, s_text_write, &other);
    if (strcmp(live.text, other.text) != 0) {
        fprintf(stderr, "%s differs from live\n--- live\n%s--- %s\n%s", what, live.text, what,
                other.text);
        abort();
    }
    free(live.text);
    free(other.text);
}

/*  A follower: a state that applies the broker's records as they come, in
    order, as a replica will; after every operation it must equal live. */
static replica_t *s_follower;
static size_t s_followed;

static void s_check_follower(void)
{
    s_followed = s_replica_apply(s_follower, s_followed);
    s_assert_same(s_follower, "follower");
}

/*  Replay equals live: the records so far, read into a fresh state the way
    a restart reads them (replaying, then state_rebuild), give the broker's
    state exactly. */
static void s_check_replay(const broker_config_t *config)
{
    replica_t *replica = s_replica_new(config, 1);
    s_replica_apply(replica, 0);
    if (state_rebuild(&replica->state))
        abort();
    s_assert_same(replica, "replay");
    s_replica_destroy(&replica);
}

static const char *const s_queues[] = {"a", "b", "c", "d"};
static const char *const s_clients[] = {"p0", "p1", "p2", "c0", "c1", "c2", "x", "y"};

static int s_peer_of(aq_bytes_t routing_id)
{
    return routing_id.size == 1 && routing_id.data[0] < PEERS ? routing_id.data[0] : -1;
}

static void s_remember(int peer, uint64_t id)
{
    if (peer < 0)
        return;
    s_fuzz.seen[peer][s_fuzz.seen_count[peer]++ % SEEN] = id;
}

/*  A JOINED: no item accepted before the join may still be outstanding. */
static void s_check_joined(const aq_msg_t *msg)
{
    uint64_t tag = 0;
    if (msg->tag.size < 2 || msg->tag.data[0] != 'j' || !aq_parse_u64(msg->tag.data + 1, msg->tag.size - 1, &tag)
        || tag >= 256 || !s_fuzz.join_queue[tag])
        return;
    queue_t *queue = dict_get(s_fuzz.broker->queues, msg->queue.data, msg->queue.size);
    if (!queue || queue->serial != s_fuzz.join_queue[tag])
        return; /* forgotten since: nothing of it was outstanding */
    if (ledger_outstanding_before(&queue->ledger, s_fuzz.join_end[tag]) != 0) {
        fprintf(stderr, "JOINED %.*s while items accepted before it are outstanding\n",
                (int) msg->tag.size, (const char *) msg->tag.data);
        abort();
    }
}

static aq_status_t s_send(void *ctx, aq_bytes_t routing_id, const aq_msg_t *msg, zmq_msg_t *bulk)
{
    (void) ctx;
    if (s_fuzz.fail_next) {
        errno = s_fuzz.fail_next;
        s_fuzz.fail_next = 0;
        return AQ_TRANSPORT;
    }
    aq_msg_t checked = *msg;
    if (bulk && msg->cmd == AQ_CMD_ITEMS)
        checked.batch = (aq_bytes_t){zmq_msg_data(bulk), zmq_msg_size(bulk)};
    if (aq_msg_check(&checked) != AQ_OK) {
        fprintf(stderr, "the broker sent an invalid %s\n", aq_cmd_name(msg->cmd));
        abort();
    }
    int peer = s_peer_of(routing_id);
    if (msg->cmd == AQ_CMD_ITEM)
        s_remember(peer, msg->id);
    if (msg->cmd == AQ_CMD_ITEMS) {
        aq_batch_iter_t iter;
        aq_delivery_t delivery;
        aq_batch_iter_init(&iter, checked.batch);
        while (aq_items_next(&iter, &delivery))
            s_remember(peer, delivery.id);
    }
    if (msg->cmd == AQ_CMD_JOINED)
        s_check_joined(msg);
    return AQ_OK;
}

/*  Frames for one message, kept until the broker has handled it. */
typedef struct {
    uint8_t storage[16384];
    size_t used;
    aq_bytes_t frames[16];
    size_t count;
} frames_t;

static int s_collect(void *ctx, const void *data, size_t size, int more, int bulk)
{
    frames_t *out = ctx;
    (void) more, (void) bulk;
    if (out->count == 16 || out->used + size > sizeof out->storage)
        return -1;
    if (size)
        memcpy(out->storage + out->used, data, size);
    out->frames[out->count++] = (aq_bytes_t){out->storage + out->used, size};
    out->used += size;
    return 0;
}

/*  Puts frames in an inbox as if a socket had delivered them. */
static void s_fill(aq_inbox_t *inbox, int routing_id, const aq_bytes_t *frames, size_t count)
{
    aq_inbox_clear(inbox);
    inbox->overflow = 0;
    inbox->has_routing_id = routing_id >= 0;
    size_t at = 0;
    if (routing_id >= 0) {
        zmq_msg_init_size(&inbox->parts[at], 1);
        *(uint8_t *) zmq_msg_data(&inbox->parts[at]) = (uint8_t) routing_id;
        at++;
    }
    for (size_t i = 0; i < count && at < inbox->capacity; i++, at++) {
        zmq_msg_init_size(&inbox->parts[at], frames[i].size);
        if (frames[i].size)
            memcpy(zmq_msg_data(&inbox->parts[at]), frames[i].data, frames[i].size);
    }
    inbox->overflow = count + (routing_id >= 0) > inbox->capacity;
    inbox->count = at;
    for (size_t i = 0; i < at; i++)
        inbox->frames[i] = (aq_bytes_t){zmq_msg_data(&inbox->parts[i]), zmq_msg_size(&inbox->parts[i])};
}

static void s_router(int peer, const aq_msg_t *msg)
{
    static frames_t f;
    f.used = f.count = 0;
    if (aq_msg_emit(msg, s_collect, &f))
        return;
    s_fill(s_fuzz.broker->router_inbox, peer, f.frames, f.count);
    broker_on_router(s_fuzz.broker);
}

static void s_pull(const aq_msg_t *msg)
{
    static frames_t f;
    f.used = f.count = 0;
    if (aq_msg_emit(msg, s_collect, &f))
        return;
    s_fill(s_fuzz.broker->pull_inbox, -1, f.frames, f.count);
    broker_on_pull(s_fuzz.broker);
}

/*  Raw frames from the input: [count][length][bytes]... */
static void s_raw(input_t *in, int router)
{
    static frames_t f;
    f.used = f.count = 0;
    size_t count = s_byte(in) % 12;
    for (size_t i = 0; i < count; i++) {
        size_t size = s_byte(in) % 40;
        if (size > in->left)
            size = in->left;
        s_collect(&f, in->at, size, 1, 0);
        in->at += size;
        in->left -= size;
    }
    if (router) {
        s_fill(s_fuzz.broker->router_inbox, (int) (s_byte(in) % PEERS), f.frames, f.count);
        broker_on_router(s_fuzz.broker);
    }
    else {
        s_fill(s_fuzz.broker->pull_inbox, -1, f.frames, f.count);
        broker_on_pull(s_fuzz.broker);
    }
}

static aq_bytes_t s_queue(input_t *in)
{
    uint64_t pick = s_byte(in);
    return aq_bytes_str(pick == 255 ? "bad name" : s_queues[pick % 4]);
}

/*  1 to 4 ids, mostly ones the broker delivered to this peer. */
static aq_bytes_t s_ids(input_t *in, int peer, uint8_t *buf)
{
    size_t count = 1 + s_byte(in) % 4;
    for (size_t i = 0; i < count; i++) {
        uint64_t pick = s_byte(in);
        uint64_t id = pick < 200 && s_fuzz.seen_count[peer]
                          ? s_fuzz.seen[peer][pick % (s_fuzz.seen_count[peer] < SEEN ? s_fuzz.seen_count[peer] : SEEN)]
                          : pick << 32 | (pick & 3);
        aq_put_u64(buf + i * 8, id);
    }
    return (aq_bytes_t){buf, count * 8};
}

static void s_put(input_t *in, int batch)
{
    uint64_t producer = s_byte(in) % 3;
    uint64_t shift = s_byte(in);
    uint64_t seq = s_fuzz.next_seq[producer] ? s_fuzz.next_seq[producer] : 1;
    if (shift == 1 && seq > 1)
        seq--; /* a resend */
    else if (shift == 2)
        seq++; /* a gap: puts lost on the way */
    uint64_t count = batch ? 1 + s_byte(in) % 6 : 1;
    static uint8_t items[4096];
    size_t size = 0;
    /* A batch in four has options per item (`each`): a priority from -2 to
       2, some to the front, some delayed. */
    int each = batch && s_byte(in) % 4 == 0;
    for (uint64_t i = 0; i < count; i++) {
        uint64_t length = s_byte(in) % 200;
        uint32_t taken = (uint32_t) (length < in->left ? length : 0);
        if (each) {
            uint8_t how = (uint8_t) s_byte(in);
            aq_options_t put = {.priority = (int32_t) (how % 5) - 2};
            if (how & 0x10)
                put.flags = AQ_PUT_FRONT;
            else if (how & 0x20)
                put.flags = AQ_PUT_DELAY, put.delay_ms = (how >> 6) * 700u;
            char text[AQ_OPTIONS_MAX + 1];
            size += aq_puts_entry_write_each(items + size,
                                             (aq_bytes_t){(const uint8_t *) text,
                                                          aq_put_options_format(&put, text)},
                                             in->at, taken);
        }
        else
            size += aq_puts_entry_write(items + size, in->at, taken);
    }
    aq_msg_t msg = {.cmd = batch ? AQ_CMD_PUTS : AQ_CMD_PUT, .producer = aq_bytes_str(s_clients[producer]),
                    .seq = seq, .count = count, .queue = s_queue(in), .lease_ms = s_byte(in) * 10};
    if (batch)
        msg.batch = (aq_bytes_t){items, size};
    else
        msg.payload = (aq_bytes_t){items + 4, aq_get_u32(items)};
    /* Options on one put in two: a priority from -2 to 2, and the front, a
       delay (some past --max-delay) or a time (some past). */
    uint8_t how = (uint8_t) s_byte(in);
    char options[AQ_OPTIONS_MAX + 1];
    if (each)
        msg.options = aq_bytes_str("each");
    else if (how & 1) {
        aq_options_t put = {.priority = (int32_t) (how >> 1) % 5 - 2};
        switch ((how >> 4) % 4) {
        case 1: put.flags = AQ_PUT_FRONT; break;
        case 2: put.flags = AQ_PUT_DELAY, put.delay_ms = s_u16(in) % 2500; break;
        case 3:
            put.flags = AQ_PUT_AT;
            put.at_ms = (uint64_t) (broker_wall_ms() + (int64_t) (s_u16(in) % 2500) - 500);
            break;
        }
        msg.options = (aq_bytes_t){(const uint8_t *) options,
                                   aq_put_options_format(&put, options)};
    }
    s_pull(&msg);
    if (seq + count > s_fuzz.next_seq[producer])
        s_fuzz.next_seq[producer] = seq + count;
}

static void s_operation(input_t *in)
{
    broker_t *broker = s_fuzz.broker;
    int peer = (int) (s_byte(in) % PEERS);
    char tag[8];
    snprintf(tag, sizeof tag, "t%llu", (unsigned long long) (s_fuzz.tags++ % 1000));
    aq_msg_t msg = {.tag = aq_bytes_str(tag)};
    uint8_t ids[64];
    switch (s_byte(in) % 20) {
    case 0: {
        uint64_t client = s_byte(in) % 8;
        msg.cmd = AQ_CMD_HELLO;
        msg.client = aq_bytes_str(s_clients[client]);
        msg.with = aq_bytes_str(client & 1 ? "service" : "");
        msg.seq = client < 3 ? s_byte(in) % 3 : 0;
        if (msg.seq && msg.seq > s_fuzz.next_seq[client])
            s_fuzz.next_seq[client] = msg.seq;
        s_router(peer, &msg);
        break;
    }
    case 1:
        msg.cmd = AQ_CMD_CREDIT;
        msg.queue = s_queue(in);
        msg.credit = s_byte(in) % 12;
        msg.batch_max = s_byte(in) % 6;
        static const char *const with[] = {"", "priority", "ready", "priority ready"};
        msg.with = aq_bytes_str(with[s_byte(in) & 3]);
        s_router(peer, &msg);
        break;
    case 2: case 3:
        msg.cmd = AQ_CMD_ACK;
        msg.ids = s_ids(in, peer, ids);
        s_router(peer, &msg);
        break;
    case 4:
        msg.cmd = AQ_CMD_TOUCH;
        msg.ids = s_ids(in, peer, ids);
        s_router(peer, &msg);
        break;
    case 5:
        msg.cmd = AQ_CMD_NACK;
        msg.delay_ms = s_byte(in) == 255 ? AQ_WAIT_MAX_MS + 1 : s_byte(in) * 20;
        msg.text = aq_bytes_str("because");
        msg.ids = s_ids(in, peer, ids);
        s_router(peer, &msg);
        break;
    case 6: {
        uint64_t number = s_fuzz.tags % 256;
        snprintf(tag, sizeof tag, "j%llu", (unsigned long long) number);
        msg.cmd = AQ_CMD_JOIN;
        msg.tag = aq_bytes_str(tag);
        msg.queue = s_queue(in);
        msg.timeout_ms = s_byte(in) * 20;
        msg.mode = s_byte(in) & 1;
        queue_t *queue = dict_get(broker->queues, msg.queue.data, msg.queue.size);
        s_fuzz.join_queue[number] = queue && msg.mode == AQ_JOIN_BEFORE ? queue->serial : 0;
        s_fuzz.join_end[number] = queue ? queue->ledger.next : 0;
        s_router(peer, &msg);
        break;
    }
    case 7:
        msg.cmd = AQ_CMD_SYNC;
        msg.producer = aq_bytes_str(s_clients[s_byte(in) % 3]);
        msg.seq = s_byte(in) % 24;
        s_router(peer, &msg);
        break;
    case 8:
        msg.cmd = s_byte(in) & 1 ? AQ_CMD_INFO : AQ_CMD_STATS;
        msg.queue = s_byte(in) & 1 ? s_queue(in) : aq_bytes_str("");
        s_router(peer, &msg);
        break;
    case 9: {
        static const char *const actions[] = {"list", "requeue", "purge", "eat"};
        msg.cmd = AQ_CMD_DEAD;
        msg.queue = s_queue(in);
        uint64_t which = s_byte(in);
        char text[64];
        if (which >= 12 && which < 16) { /* one item whole, from a byte */
            snprintf(text, sizeof text, "show %llu %llu",
                     (unsigned long long) (1ULL << 32 | which % 3),
                     (unsigned long long) (which & 1 ? s_byte(in) : 0));
            msg.text = aq_bytes_str(text);
        }
        else if (which >= 4 && which < 12) { /* by id: the first items' ids, or one twice */
            snprintf(text, sizeof text, "%s %llu %llu", which & 1 ? "requeue" : "delete",
                     (unsigned long long) (1ULL << 32 | (which >> 1) % 3),
                     (unsigned long long) (1ULL << 32 | (which >> 2) % 3));
            msg.text = aq_bytes_str(text);
        }
        else
            msg.text = aq_bytes_str(actions[which % 4]);
        s_router(peer, &msg);
        break;
    }
    case 10: {
        /* A queue's life, now and then: shut down, reopened, purged, deleted. */
        uint64_t which = s_byte(in);
        if (which >= 150 && which < 160) { /* a broker that is not a replica: 400 */
            static const char *const actions[] = {"list", "add 127.0.0.1:9", "remove 2",
                                                  "transfer", "transfer 1 2"};
            msg.cmd = AQ_CMD_REPLICAS;
            msg.text = aq_bytes_str(actions[which % 5]);
            s_router(peer, &msg);
            break;
        }
        if (which < 160)
            break;
        msg.cmd = which < 180 ? AQ_CMD_PEEK : which < 190 ? AQ_CMD_PAUSE : which < 200 ? AQ_CMD_RESUME
                  : which < 215 ? AQ_CMD_REOPEN : which < 228 ? AQ_CMD_PURGE
                  : which < 240 ? AQ_CMD_DELETE : AQ_CMD_SHUTDOWN;
        msg.count = which % 7;
        msg.queue = s_byte(in) & 1 || msg.cmd != AQ_CMD_SHUTDOWN ? s_queue(in) : aq_bytes_str("");
        msg.mode = s_byte(in) & 1;
        s_router(peer, &msg);
        break;
    }
    case 11:
        msg.cmd = AQ_CMD_BYE;
        s_router(peer, &msg);
        break;
    case 12:
        msg.cmd = AQ_CMD_HEARTBEAT;
        msg.beat = s_byte(in);
        s_router(peer, &msg);
        break;
    case 13: case 14:
        s_put(in, 0);
        break;
    case 15:
        s_put(in, 1);
        break;
    case 16:
        s_raw(in, 1);
        break;
    case 17:
        s_raw(in, 0);
        break;
    case 18:
        broker_clock_advance((int64_t) s_u16(in) % 3000);
        break;
    case 19:
        s_fuzz.fail_next = s_byte(in) & 1 ? EHOSTUNREACH : EAGAIN;
        break;
    }
    broker_pass(broker);
    char why[512];
    if (broker_check(broker, why, sizeof why)) {
        fprintf(stderr, "invariant broken: %s\n", why);
        abort();
    }
    s_check_follower();
    /* A whole replay costs O(records): every 16th operation and at the end
       of the input (a state that differs stays different). */
    if (++s_fuzz.operations % 16 == 0 || !in->left)
        s_check_replay(&broker->config);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    input_t in = {data, size};
    broker_config_t config = {
        .bind = "unused",
        .max_item = 256,
        .max_batch = 8,
        .maxsize = s_byte(&in) % 4,
        .max_queues = 3,
        .max_joiners = 8,
        .max_credit = 10,
        .max_producers = 2,
        .max_connections = 100,
        .max_pending = 4096,
        .window = 12,
        .window_bytes = 1024,
        .heartbeat_ms = 200,
        .hello_timeout_ms = 1000,
        .queue_idle_ms = 2000,
        .lease_ms = 300,
        .max_attempts = s_byte(&in) % 4,
        .max_expired = 1 + s_byte(&in) % 3,
        .max_joins_per_peer = 3,
        .drain_ms = 1000,
        .max_delay_s = 2,
    };
    /* Retries with backoff when items may be delivered a few times. */
    if (config.max_attempts == 3)
        config.retry = (retry_t){100, 1000, 2};
    memset(&s_fuzz, 0, sizeof s_fuzz);
    s_fuzz.broker = broker_new_detached(&config, s_send, NULL);
    if (!s_fuzz.broker)
        abort();
    s_fuzz.broker->on_record = s_keep_record;
    s_log_size = 0;
    s_follower = s_replica_new(&config, 0);
    s_followed = 0;
    while (in.left)
        s_operation(&in);
    s_replica_destroy(&s_follower);
    broker_destroy(&s_fuzz.broker);
    return 0;
}
