/*  State: records round trip and reject what is not one; queues keep FIFO
    order by rank; a record applied twice changes nothing; replaying the
    records of a live run (in order, interleaved, or after a snapshot)
    rebuilds the very same state, ledgers included. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "state.h"

/* ------------------------------------------------------------ a world */

typedef struct {
    store_t *store;
    dict_t *queues;
    state_t state;
} world_t;

static queue_t *s_queue_make(void *ctx, aq_bytes_t name)
{
    world_t *w = ctx;
    queue_t *queue = dict_get(w->queues, name.data, name.size);
    if (queue)
        return queue;
    char text[AQ_NAME_MAX + 1];
    memcpy(text, name.data, name.size);
    text[name.size] = '\0';
    queue = queue_new(text, 0, 3, 1000);
    if (!queue || dict_set(w->queues, name.data, name.size, queue)) {
        queue_destroy(&queue);
        return NULL;
    }
    return queue;
}

static void s_queue_free(void *ctx, queue_t *queue)
{
    (void) ctx;
    queue_destroy(&queue);
}

static world_t *s_world_new(void)
{
    world_t *w = calloc(1, sizeof *w);
    assert_non_null(w);
    w->store = store_new();
    w->queues = dict_new();
    assert_non_null(w->store);
    assert_non_null(w->queues);
    w->state = (state_t){.store = w->store, .queues = w->queues, .queue_make = s_queue_make,
                         .queue_free = s_queue_free, .ctx = w};
    return w;
}

static void s_free_each(void *ctx, void *value)
{
    (void) ctx;
    queue_t *queue = value;
    queue_destroy(&queue);
}

static void s_world_destroy(world_t **w_p)
{
    world_t *w = *w_p;
    dict_each(w->queues, s_free_each, NULL);
    dict_destroy(&w->queues);
    store_destroy(&w->store);
    free(w);
    *w_p = NULL;
}

static queue_t *s_get(world_t *w, const char *name)
{
    return dict_get(w->queues, name, strlen(name));
}

typedef struct {
    char *text;
    size_t size, capacity;
} text_t;

static int s_write(void *ctx, const char *text, size_t size)
{
    text_t *out = ctx;
    if (out->size + size + 1 > out->capacity) {
        size_t capacity = (out->size + size + 1) * 2;
        char *grown = realloc(out->text, capacity);
        if (!grown)
            return -1;
        out->text = grown;
        out->capacity = capacity;
    }
    memcpy(out->text + out->size, text, size);
    out->size += size;
    out->text[out->size] = '\0';
    return 0;
}

/*  The state as text; free() it. */
static char *s_dump(const world_t *w)
{
    text_t out = {0};
    int rc = state_dump(&w->state, s_write, &out);
    assert_true(rc >= 0);
    assert_int_equal((size_t) rc, out.size);
    return out.text;
}

static void s_assert_same_text(const char *a, const char *b)
{
    if (strcmp(a, b) != 0) {
        /* Where they part, for the log. */
        size_t at = 0;
        while (a[at] && a[at] == b[at])
            at++;
        size_t from = at > 300 ? at - 300 : 0;
        print_error("states differ at byte %zu\n--- one:\n%.*s\n--- other:\n%.*s\n", at,
                    600, a + from, 600, b + from);
    }
    assert_string_equal(a, b);
}

/*  Dumps don't show a queue's rank counters: compare those too. */
typedef struct {
    const world_t *other;
    int mismatches;
} counters_t;

static void s_compare_counters(void *ctx, void *value)
{
    counters_t *c = ctx;
    const queue_t *queue = value, *other = dict_get(c->other->queues, queue->name, strlen(queue->name));
    if (!other || queue->front != other->front || queue->back != other->back
        || queue->dead_back != other->dead_back || queue->state != other->state) {
        print_error("queue %s: front %lld/%lld back %lld/%lld dead_back %lld/%lld\n", queue->name,
                    (long long) queue->front, other ? (long long) other->front : 0,
                    (long long) queue->back, other ? (long long) other->back : 0,
                    (long long) queue->dead_back, other ? (long long) other->dead_back : 0);
        c->mismatches++;
    }
}

static void s_assert_same(const world_t *a, const world_t *b)
{
    char *x = s_dump(a), *y = s_dump(b);
    s_assert_same_text(x, y);
    free(x);
    free(y);
    assert_int_equal(dict_size(a->queues), dict_size(b->queues));
    counters_t c = {b, 0};
    dict_each(a->queues, s_compare_counters, &c);
    assert_int_equal(c.mismatches, 0);
    assert_int_equal(a->state.shut_down, b->state.shut_down);
}

/* ------------------------------------------------------------- records */

static void s_put_u64(uint8_t *at, uint64_t value)
{
    for (int i = 7; i >= 0; i--) {
        at[i] = (uint8_t) value;
        value >>= 8;
    }
}

static int s_bytes_equal(aq_bytes_t a, aq_bytes_t b)
{
    return a.size == b.size && (a.size == 0 || memcmp(a.data, b.data, a.size) == 0);
}

/*  Encodes, decodes, and checks every field comes back. */
static void s_round_trip(const record_t *record)
{
    size_t size = record_size(record);
    uint8_t *body = malloc(size + 1);
    record_encode(record, body);
    record_t back;
    assert_int_equal(record_decode(record->type, body, size, &back), 0);
    assert_int_equal(back.type, record->type);
    assert_true(back.id == record->id);
    assert_true(back.seq == record->seq);
    assert_true(back.rank == record->rank);
    assert_int_equal(back.state, record->state);
    assert_int_equal(back.attempts, record->attempts);
    assert_true(back.until_ms == record->until_ms);
    assert_int_equal(back.lease_ms, record->lease_ms);
    assert_true(back.pseq == record->pseq);
    assert_int_equal(back.priority, record->priority);
    assert_int_equal(back.reason, record->reason);
    assert_true(back.next == record->next);
    assert_true(back.front == record->front);
    assert_true(back.back == record->back);
    assert_true(back.dead_back == record->dead_back);
    assert_true(s_bytes_equal(back.queue, record->queue));
    assert_true(s_bytes_equal(back.producer, record->producer));
    assert_true(s_bytes_equal(back.key, record->key));
    assert_true(s_bytes_equal(back.payload, record->payload));
    /* Anything shorter than its fixed part is not one; nor is anything
       longer, where nothing runs to the end. */
    size_t fixed;
    switch (record->type) {
    case RECORD_ITEM: fixed = size - record->payload.size; break;
    case RECORD_PRODUCER: fixed = size - record->key.size; break;
    case RECORD_QUEUE: fixed = size - record->queue.size; break;
    case RECORD_FORGET: fixed = 1; break;
    case RECORD_REOPEN: fixed = 0; break; /* empty: every queue */
    case RECORD_PAUSE: fixed = 2; break;
    case RECORD_GONE: fixed = 8; break; /* 8 bytes: a GONE from before 2.2 */
    default: fixed = size;
    }
    for (size_t cut = 0; cut < fixed; cut++)
        assert_int_equal(record_decode(record->type, body, cut, &back), -1);
    if (record->type == RECORD_STATE || record->type == RECORD_GONE
        || record->type == RECORD_RESET) {
        body[size] = 0;
        assert_int_equal(record_decode(record->type, body, size + 1, &back), -1);
    }
    free(body);
}

static void test_records_round_trip(void **unused)
{
    (void) unused;
    static const uint8_t payload[] = {0, 1, 2, 0xff, 'x'};
    record_t item = {.type = RECORD_ITEM, .id = 0x0102030405060708ULL, .seq = 77,
                     .rank = -12345, .state = ITEM_DELAYED, .attempts = 0x1234,
                     .until_ms = 1700000000123ULL, .lease_ms = 30000, .pseq = 99,
                     .priority = INT32_MIN + 5,
                     .queue = aq_bytes_str("jobs.high:1-x"), .producer = aq_bytes_str("prod_1"),
                     .payload = {payload, sizeof payload}};
    s_round_trip(&item);
    item.payload = (aq_bytes_t){0};
    item.producer = (aq_bytes_t){0};
    item.state = ITEM_QUEUED;
    item.rank = INT64_MIN + 1;
    s_round_trip(&item);
    record_t move = {.type = RECORD_STATE, .id = 42, .seq = UINT64_MAX, .rank = INT64_MAX,
                     .state = ITEM_DEAD, .attempts = UINT16_MAX, .until_ms = 5};
    s_round_trip(&move);
    move.rank = -1;
    move.state = ITEM_INFLIGHT;
    s_round_trip(&move);
    for (uint8_t reason = GONE_ACKED; reason <= GONE_PURGED; reason++) {
        record_t gone = {.type = RECORD_GONE, .id = 0xdeadbeef00000001ULL, .reason = reason};
        s_round_trip(&gone);
    }
    record_t producer = {.type = RECORD_PRODUCER, .next = 123456789,
                         .producer = aq_bytes_str("p-1"), .key = aq_bytes_str("secret key bytes")};
    s_round_trip(&producer);
    producer.key = (aq_bytes_t){0};
    s_round_trip(&producer);
    record_t queue = {.type = RECORD_QUEUE, .state = QUEUE_DISCARDING, .next = 1000,
                      .front = -50, .back = 900, .dead_back = 17, .queue = aq_bytes_str("q")};
    s_round_trip(&queue);
    record_t every = {.type = RECORD_QUEUE, .state = QUEUE_DRAINING};
    s_round_trip(&every);
    record_t forget = {.type = RECORD_FORGET, .queue = aq_bytes_str("old.queue")};
    s_round_trip(&forget);
    record_t reopen = {.type = RECORD_REOPEN, .queue = aq_bytes_str("shut.queue")};
    s_round_trip(&reopen);
    record_t reopen_all = {.type = RECORD_REOPEN};
    s_round_trip(&reopen_all);
    record_t pause = {.type = RECORD_PAUSE, .state = 1, .queue = aq_bytes_str("p")};
    s_round_trip(&pause);
    record_t reset = {.type = RECORD_RESET};
    assert_int_equal(record_size(&reset), 0);
    s_round_trip(&reset);
}

static void test_decode_rejects_bad_bytes_and_names(void **unused)
{
    (void) unused;
    record_t back;
    uint8_t body[256];
    /* STATE with a state byte out of range. */
    record_t move = {.type = RECORD_STATE, .id = 1, .seq = 1, .state = ITEM_QUEUED};
    for (unsigned bad = 0; bad < 256; bad++) {
        if (bad >= ITEM_QUEUED && bad <= ITEM_DEAD)
            continue;
        record_encode(&move, body);
        body[24] = (uint8_t) bad;
        assert_int_equal(record_decode(RECORD_STATE, body, record_size(&move), &back), -1);
    }
    /* ITEM likewise. */
    record_t item = {.type = RECORD_ITEM, .id = 1, .seq = 1, .state = ITEM_QUEUED,
                     .queue = aq_bytes_str("q")};
    record_encode(&item, body);
    body[24] = 0;
    assert_int_equal(record_decode(RECORD_ITEM, body, record_size(&item), &back), -1);
    body[24] = ITEM_DEAD + 1;
    assert_int_equal(record_decode(RECORD_ITEM, body, record_size(&item), &back), -1);
    /* ITEM with an empty or invalid queue name. */
    item.queue = (aq_bytes_t){0};
    record_encode(&item, body);
    assert_int_equal(record_decode(RECORD_ITEM, body, record_size(&item), &back), -1);
    item.queue = aq_bytes_str("a b");
    record_encode(&item, body);
    assert_int_equal(record_decode(RECORD_ITEM, body, record_size(&item), &back), -1);
    item.queue = aq_bytes_str("q/x");
    record_encode(&item, body);
    assert_int_equal(record_decode(RECORD_ITEM, body, record_size(&item), &back), -1);
    /* ITEM whose queue name's length runs past the end. */
    item.queue = aq_bytes_str("q");
    record_encode(&item, body);
    body[8 + 8 + 8 + 1 + 2 + 8 + 4 + 8 + 4] = 200;
    assert_int_equal(record_decode(RECORD_ITEM, body, record_size(&item), &back), -1);
    /* GONE with a bad reason. */
    record_t gone = {.type = RECORD_GONE, .id = 5, .reason = GONE_ACKED};
    record_encode(&gone, body);
    body[8] = 0;
    assert_int_equal(record_decode(RECORD_GONE, body, 9, &back), -1);
    body[8] = GONE_PURGED + 1;
    assert_int_equal(record_decode(RECORD_GONE, body, 9, &back), -1);
    /* QUEUE with a bad state, or a bad name. */
    record_t queue = {.type = RECORD_QUEUE, .state = QUEUE_OPEN, .queue = aq_bytes_str("q")};
    record_encode(&queue, body);
    body[0] = QUEUE_DISCARDING + 1;
    assert_int_equal(record_decode(RECORD_QUEUE, body, record_size(&queue), &back), -1);
    queue.queue = aq_bytes_str("no spaces");
    record_encode(&queue, body);
    assert_int_equal(record_decode(RECORD_QUEUE, body, record_size(&queue), &back), -1);
    /* FORGET of nothing, or of a bad name. */
    assert_int_equal(record_decode(RECORD_FORGET, body, 0, &back), -1);
    memcpy(body, "bad\n", 4);
    assert_int_equal(record_decode(RECORD_FORGET, body, 4, &back), -1);
    /* PRODUCER without an id, or with a bad one. */
    record_t producer = {.type = RECORD_PRODUCER, .next = 1, .producer = {0}};
    record_encode(&producer, body);
    assert_int_equal(record_decode(RECORD_PRODUCER, body, record_size(&producer), &back), -1);
    producer.producer = aq_bytes_str("x y");
    record_encode(&producer, body);
    assert_int_equal(record_decode(RECORD_PRODUCER, body, record_size(&producer), &back), -1);
    /* Unknown types. */
    assert_int_equal(record_decode(0, body, 0, &back), -1);
    assert_int_equal(record_decode(RECORD_FORGET + 1, body, 0, &back), -1);
    assert_int_equal(record_decode(255, body, 9, &back), -1);
}

static void test_old_records_decode_with_rank_from_seq(void **unused)
{
    (void) unused;
    record_t back;
    uint8_t body[128];
    /* ITEM_V1: id, seq, state, attempts, until, lease, pseq, queue, producer, payload. */
    size_t at = 0;
    s_put_u64(body + at, 0x100000002ULL), at += 8;
    s_put_u64(body + at, 31), at += 8;
    body[at++] = ITEM_DEAD;
    body[at++] = 0x01, body[at++] = 0x02;
    s_put_u64(body + at, 0), at += 8;
    body[at++] = 0, body[at++] = 0, body[at++] = 0x03, body[at++] = 0xe8; /* 1000 */
    s_put_u64(body + at, 9), at += 8;
    body[at++] = 2, body[at++] = 'q', body[at++] = '1';
    body[at++] = 1, body[at++] = 'p';
    memcpy(body + at, "hello", 5), at += 5;
    assert_int_equal(record_decode(RECORD_ITEM_V1, body, at, &back), 0);
    assert_int_equal(back.type, RECORD_ITEM);
    assert_true(back.id == 0x100000002ULL);
    assert_int_equal(back.seq, 31);
    assert_int_equal(back.rank, 31);
    assert_int_equal(back.state, ITEM_DEAD);
    assert_int_equal(back.attempts, 0x0102);
    assert_int_equal(back.lease_ms, 1000);
    assert_int_equal(back.pseq, 9);
    assert_true(s_bytes_equal(back.queue, aq_bytes_str("q1")));
    assert_true(s_bytes_equal(back.producer, aq_bytes_str("p")));
    assert_true(s_bytes_equal(back.payload, aq_bytes_str("hello")));
    assert_int_equal(record_decode(RECORD_ITEM_V1, body, 30, &back), -1);
    /* STATE_V1: id, seq, state, attempts, until. */
    at = 0;
    s_put_u64(body + at, 7), at += 8;
    s_put_u64(body + at, 1234), at += 8;
    body[at++] = ITEM_DELAYED;
    body[at++] = 0, body[at++] = 3;
    s_put_u64(body + at, 555), at += 8;
    assert_int_equal(record_decode(RECORD_STATE_V1, body, at, &back), 0);
    assert_int_equal(back.type, RECORD_STATE);
    assert_int_equal(back.id, 7);
    assert_int_equal(back.seq, 1234);
    assert_int_equal(back.rank, 1234);
    assert_int_equal(back.state, ITEM_DELAYED);
    assert_int_equal(back.attempts, 3);
    assert_int_equal(back.until_ms, 555);
    assert_int_equal(record_decode(RECORD_STATE_V1, body, at - 1, &back), -1);
    assert_int_equal(record_decode(RECORD_STATE_V1, body, at + 1, &back), -1);
    body[16] = 0;
    assert_int_equal(record_decode(RECORD_STATE_V1, body, at, &back), -1);
    /* QUEUE_V1: state, name. */
    body[0] = QUEUE_DRAINING;
    memcpy(body + 1, "old", 3);
    assert_int_equal(record_decode(RECORD_QUEUE_V1, body, 4, &back), 0);
    assert_int_equal(back.type, RECORD_QUEUE);
    assert_int_equal(back.state, QUEUE_DRAINING);
    assert_true(s_bytes_equal(back.queue, aq_bytes_str("old")));
    assert_int_equal(back.next, 0);
    assert_int_equal(record_decode(RECORD_QUEUE_V1, body, 1, &back), 0);
    assert_int_equal(back.queue.size, 0);
    assert_int_equal(record_decode(RECORD_QUEUE_V1, body, 0, &back), -1);
    body[0] = 3;
    assert_int_equal(record_decode(RECORD_QUEUE_V1, body, 4, &back), -1);
    /* GONE before 2.2: the id only, acked. */
    s_put_u64(body, 0xabcdef);
    assert_int_equal(record_decode(RECORD_GONE, body, 8, &back), 0);
    assert_int_equal(back.id, 0xabcdef);
    assert_int_equal(back.reason, GONE_ACKED);
    assert_int_equal(record_decode(RECORD_GONE, body, 7, &back), -1);
}

/* ---------------------------------------------------------- live moves */

static void s_apply(world_t *w, const record_t *record, state_effects_t *effects)
{
    assert_int_equal(state_apply(&w->state, record, effects), 0);
}

static item_t *s_put(world_t *w, const char *name, const char *payload)
{
    queue_t *queue = s_queue_make(w, aq_bytes_str(name));
    record_t record = {.queue = aq_bytes_str(name), .payload = aq_bytes_str(payload)};
    state_effects_t effects;
    state_next_put(&w->state, queue, &record);
    s_apply(w, &record, &effects);
    assert_non_null(effects.item);
    return effects.item;
}

static void s_move(world_t *w, item_t *item, item_state_t to)
{
    record_t record;
    state_effects_t effects;
    state_move(item, to, &record);
    s_apply(w, &record, &effects);
    assert_int_equal(item->state, to);
}

static item_t *s_nth(const list_node_t *list, int n)
{
    const list_node_t *node = list->next;
    for (; n > 0 && node != list; n--)
        node = node->next;
    return node == list ? NULL : list_entry(node, item_t, link);
}

static void s_requeue_dead(world_t *w, queue_t *queue)
{
    list_node_t *node;
    while ((node = list_first(&queue->dead))) {
        item_t *item = list_entry(node, item_t, link);
        record_t record = {.type = RECORD_STATE, .id = item->id, .seq = queue->ledger.next,
                           .rank = queue->back + 1, .state = ITEM_QUEUED};
        state_effects_t effects;
        s_apply(w, &record, &effects);
    }
}

static void test_fifo_puts_back_given_back_front_dead_in_order(void **unused)
{
    (void) unused;
    world_t *w = s_world_new();
    item_t *a = s_put(w, "q", "a"), *b = s_put(w, "q", "b"), *c = s_put(w, "q", "c");
    queue_t *q = s_get(w, "q");
    assert_ptr_equal(s_nth(&q->ready, 0), a);
    assert_ptr_equal(s_nth(&q->ready, 1), b);
    assert_ptr_equal(s_nth(&q->ready, 2), c);
    assert_int_equal(a->seq, 1);
    assert_int_equal(c->seq, 3);
    /* a and b delivered; b given back first, then a: a is first again. */
    s_move(w, a, ITEM_INFLIGHT);
    s_move(w, b, ITEM_INFLIGHT);
    assert_int_equal(q->inflight_count, 2);
    assert_int_equal(q->delivered_total, 2);
    assert_int_equal(a->attempts, 1);
    assert_ptr_equal(s_nth(&q->ready, 0), c);
    s_move(w, b, ITEM_QUEUED);
    s_move(w, a, ITEM_QUEUED);
    assert_ptr_equal(s_nth(&q->ready, 0), a);
    assert_ptr_equal(s_nth(&q->ready, 1), b);
    assert_ptr_equal(s_nth(&q->ready, 2), c);
    assert_true(a->rank < b->rank && b->rank < c->rank);
    item_t *d = s_put(w, "q", "d");
    assert_ptr_equal(s_nth(&q->ready, 3), d);
    /* Dead in order of death: c, then a, then b. */
    s_move(w, c, ITEM_INFLIGHT);
    s_move(w, c, ITEM_DEAD);
    s_move(w, a, ITEM_INFLIGHT);
    s_move(w, a, ITEM_DEAD);
    s_move(w, b, ITEM_INFLIGHT);
    s_move(w, b, ITEM_DEAD);
    assert_int_equal(q->dead_count, 3);
    assert_ptr_equal(s_nth(&q->dead, 0), c);
    assert_ptr_equal(s_nth(&q->dead, 1), a);
    assert_ptr_equal(s_nth(&q->dead, 2), b);
    assert_int_equal(q->ledger.outstanding, 1); /* d only */
    assert_int_equal(b->attempts, 2);
    /* Requeued from the dead: to the back, in their order, new seqs, attempts 0. */
    uint64_t next = q->ledger.next;
    s_requeue_dead(w, q);
    assert_int_equal(q->dead_count, 0);
    assert_int_equal(q->ready_count, 4);
    assert_ptr_equal(s_nth(&q->ready, 0), d);
    assert_ptr_equal(s_nth(&q->ready, 1), c);
    assert_ptr_equal(s_nth(&q->ready, 2), a);
    assert_ptr_equal(s_nth(&q->ready, 3), b);
    assert_int_equal(c->seq, next);
    assert_int_equal(a->seq, next + 1);
    assert_int_equal(b->seq, next + 2);
    assert_int_equal(a->attempts, 0);
    assert_int_equal(b->attempts, 0);
    assert_int_equal(q->ledger.outstanding, 4);
    assert_int_equal(q->ledger.next, next + 3);
    /* A join now waits for all four; after them, a given-back item still goes first. */
    joiner_t join = {.mode = AQ_JOIN_BEFORE};
    assert_false(queue_join_start(q, &join));
    assert_int_equal(join.waited, 4);
    s_move(w, b, ITEM_INFLIGHT);
    s_move(w, b, ITEM_QUEUED);
    assert_ptr_equal(s_nth(&q->ready, 0), b);
    s_world_destroy(&w);
}

/*  A delayed item keeps its until, and goes to the front when its delay ends. */
static void test_delayed_item_comes_back_to_the_front(void **unused)
{
    (void) unused;
    world_t *w = s_world_new();
    item_t *a = s_put(w, "q", "a"), *b = s_put(w, "q", "b");
    queue_t *q = s_get(w, "q");
    s_move(w, a, ITEM_INFLIGHT);
    record_t record;
    state_effects_t effects;
    state_move(a, ITEM_DELAYED, &record);
    record.until_ms = 1700000000000ULL;
    s_apply(w, &record, &effects);
    assert_int_equal(q->delayed_count, 1);
    assert_int_equal(a->until_ms, 1700000000000ULL);
    assert_false(list_linked(&a->link));
    assert_ptr_equal(s_nth(&q->ready, 0), b);
    s_move(w, a, ITEM_QUEUED);
    assert_int_equal(q->delayed_count, 0);
    assert_ptr_equal(s_nth(&q->ready, 0), a);
    assert_int_equal(a->attempts, 1);
    s_world_destroy(&w);
}

/*  A queue's ready list is in (priority, rank) order, and its bands say
    where each priority's run starts and ends (none if all are of 0). */
static void s_check_order(void *ctx, void *value)
{
    (void) ctx;
    const queue_t *queue = value;
    const item_t *previous = NULL;
    uint32_t band = 0;
    int any_priority = 0;
    for (const list_node_t *node = queue->ready.next; node != &queue->ready; node = node->next) {
        const item_t *item = list_entry(node, item_t, link);
        any_priority |= item->priority != 0;
        if (previous)
            assert_true(previous->priority < item->priority
                        || (previous->priority == item->priority && previous->rank < item->rank));
        if (queue->band_count && (!previous || previous->priority != item->priority)) {
            assert_true(band < queue->band_count);
            assert_int_equal(queue->bands[band].priority, item->priority);
            assert_ptr_equal(queue->bands[band].first, item);
            if (previous)
                assert_ptr_equal(queue->bands[band - 1].last, previous);
            band++;
        }
        previous = item;
    }
    if (queue->band_count) {
        assert_int_equal(band, queue->band_count);
        assert_ptr_equal(queue->bands[band - 1].last, previous);
    }
    assert_int_equal(queue->band_count != 0, any_priority);
}

/*  Priorities: lowest first, FIFO within one; the front of one's own
    priority; a delayed put due goes to the back of its priority, a retry
    to the front; bands come and go with the priorities ready. */
static item_t *s_put_with(world_t *w, const char *payload, int32_t priority, int front,
                          uint64_t until_ms)
{
    queue_t *queue = s_queue_make(w, aq_bytes_str("q"));
    record_t record = {.queue = aq_bytes_str("q"), .payload = aq_bytes_str(payload)};
    state_effects_t effects;
    state_next_put(&w->state, queue, &record);
    state_put_options(queue, priority, front, until_ms, &record);
    s_apply(w, &record, &effects);
    return effects.item;
}

static void s_assert_ready(const queue_t *queue, const char *expected)
{
    char order[256] = "";
    for (const list_node_t *node = queue->ready.next; node != &queue->ready; node = node->next) {
        const item_t *item = list_entry(node, item_t, link);
        strncat(order, (const char *) item->data, item->size);
        strcat(order, " ");
    }
    assert_string_equal(order, expected);
    s_check_order(NULL, (void *) queue);
}

static void test_priorities_order_the_ready_items(void **unused)
{
    (void) unused;
    world_t *w = s_world_new();
    s_put_with(w, "a", 0, 0, 0);
    s_put_with(w, "b", 0, 0, 0);
    queue_t *q = s_get(w, "q");
    assert_int_equal(q->band_count, 0);
    s_put_with(w, "u1", -5, 0, 0);
    s_put_with(w, "l1", 3, 0, 0);
    s_put_with(w, "u2", -5, 0, 0);
    s_put_with(w, "c", 0, 0, 0);
    s_put_with(w, "f", 0, 1, 0);
    item_t *d = s_put_with(w, "d", 3, 0, 1700000000000ULL);
    assert_int_equal(d->state, ITEM_DELAYED);
    assert_int_equal(q->band_count, 3);
    s_assert_ready(q, "u1 u2 f a b c l1 ");
    /* Delivered from the head; given back to the front of its own priority. */
    item_t *u1 = list_entry(list_first(&q->ready), item_t, link);
    s_move(w, u1, ITEM_INFLIGHT);
    s_assert_ready(q, "u2 f a b c l1 ");
    item_t *a = s_nth(&q->ready, 2);
    s_move(w, a, ITEM_INFLIGHT);
    s_move(w, u1, ITEM_QUEUED);
    s_move(w, a, ITEM_QUEUED);
    s_assert_ready(q, "u1 u2 a f b c l1 ");
    /* The delayed put, due: the back of priority 3. */
    s_move(w, d, ITEM_QUEUED);
    s_assert_ready(q, "u1 u2 a f b c l1 d ");
    /* The urgent ones leave: bands for 0 and 3 stay; then 3 leaves: none. */
    for (int i = 0; i < 2; i++)
        s_move(w, list_entry(list_first(&q->ready), item_t, link), ITEM_INFLIGHT);
    assert_int_equal(q->band_count, 2);
    item_t *l1 = s_nth(&q->ready, 4), *last = s_nth(&q->ready, 5);
    s_move(w, l1, ITEM_INFLIGHT);
    s_move(w, last, ITEM_INFLIGHT);
    assert_int_equal(q->band_count, 0);
    s_assert_ready(q, "a f b c ");
    /* A retry of priority 3, delayed then due, goes to the front of 3. */
    record_t record;
    state_effects_t effects;
    state_move(l1, ITEM_DELAYED, &record);
    record.until_ms = 1700000000000ULL;
    s_apply(w, &record, &effects);
    s_move(w, last, ITEM_QUEUED);
    s_move(w, l1, ITEM_QUEUED);
    s_assert_ready(q, "a f b c l1 d ");
    s_world_destroy(&w);
}

/* ---------------------------------------------------------- idempotence */

static void s_twice(world_t *w, const record_t *record)
{
    state_effects_t effects;
    char *before = s_dump(w);
    int rc = state_apply(&w->state, record, &effects);
    assert_true(rc == 0 || rc == 1);
    char *once = s_dump(w);
    assert_int_equal(state_apply(&w->state, record, &effects), record->type == RECORD_ITEM ? 1 : 0);
    char *twice = s_dump(w);
    s_assert_same_text(once, twice);
    free(before);
    free(once);
    free(twice);
}

static void test_applying_a_record_twice_changes_nothing(void **unused)
{
    (void) unused;
    world_t *w = s_world_new();
    s_put(w, "q", "first");
    queue_t *q = s_get(w, "q");
    record_t record = {.queue = aq_bytes_str("q"), .payload = aq_bytes_str("second")};
    state_next_put(&w->state, q, &record);
    s_twice(w, &record); /* a put */
    item_t *a = s_nth(&q->ready, 0), *b = s_nth(&q->ready, 1);
    assert_non_null(b);
    assert_int_equal(q->ready_count, 2);
    state_move(b, ITEM_INFLIGHT, &record);
    s_twice(w, &record); /* a delivery */
    assert_int_equal(b->attempts, 1);
    state_move(b, ITEM_QUEUED, &record);
    s_twice(w, &record); /* given back */
    assert_ptr_equal(s_nth(&q->ready, 0), b);
    assert_ptr_equal(s_nth(&q->ready, 1), a);
    state_move(a, ITEM_INFLIGHT, &record);
    s_twice(w, &record);
    state_move(a, ITEM_DELAYED, &record);
    record.until_ms = 99;
    s_twice(w, &record); /* delayed */
    state_move(a, ITEM_QUEUED, &record);
    s_twice(w, &record);
    state_move(a, ITEM_DEAD, &record);
    s_twice(w, &record); /* dead: closed in the ledger once */
    assert_int_equal(q->ledger.outstanding, 1);
    assert_int_equal(q->dead_count, 1);
    record = (record_t){.type = RECORD_STATE, .id = a->id, .seq = q->ledger.next,
                        .rank = q->back + 1, .state = ITEM_QUEUED};
    s_twice(w, &record); /* requeued from the dead: opened once */
    assert_int_equal(q->ledger.outstanding, 2);
    assert_int_equal(q->ledger.next, 4);
    record = (record_t){.type = RECORD_QUEUE, .state = QUEUE_DRAINING, .next = q->ledger.next,
                        .front = q->front, .back = q->back, .dead_back = q->dead_back,
                        .queue = aq_bytes_str("q")};
    s_twice(w, &record);
    /* A snapshot's ITEM of an item that exists: nothing changes. */
    record = (record_t){.type = RECORD_ITEM, .id = a->id, .seq = 1, .rank = 100,
                        .state = ITEM_DEAD, .queue = aq_bytes_str("q")};
    char *before = s_dump(w);
    state_effects_t effects;
    assert_int_equal(state_apply(&w->state, &record, &effects), 1);
    char *after = s_dump(w);
    s_assert_same_text(before, after);
    free(before);
    free(after);
    /* GONE twice: the second names nothing. */
    record = (record_t){.type = RECORD_GONE, .id = a->id, .reason = GONE_ACKED};
    assert_int_equal(state_apply(&w->state, &record, &effects), 0);
    assert_int_equal(state_apply(&w->state, &record, &effects), 1);
    s_world_destroy(&w);
}

/* -------------------------------------------------- replay equals live */

typedef struct {
    uint8_t type;
    uint64_t slot;  /* the store slot an item record is about; UINT64_MAX: a barrier */
    size_t size;
    uint8_t *body;
} logged_t;

typedef struct {
    logged_t *records;
    size_t count, capacity;
} log_t;

static void s_log_add(log_t *log, const record_t *record)
{
    if (log->count == log->capacity) {
        log->capacity = log->capacity ? log->capacity * 2 : 256;
        log->records = realloc(log->records, log->capacity * sizeof *log->records);
        assert_non_null(log->records);
    }
    logged_t *entry = &log->records[log->count++];
    entry->type = record->type;
    entry->size = record_size(record);
    entry->body = malloc(entry->size + 1);
    assert_non_null(entry->body);
    record_encode(record, entry->body);
    int about_an_item = record->type == RECORD_ITEM || record->type == RECORD_STATE
                        || record->type == RECORD_GONE;
    entry->slot = about_an_item ? (record->id & 0xffffffffULL) : UINT64_MAX;
}

static void s_log_free(log_t *log)
{
    for (size_t i = 0; i < log->count; i++)
        free(log->records[i].body);
    free(log->records);
    *log = (log_t){0};
}

static uint64_t s_rand_state;

static uint64_t s_rand(void)
{
    /* xorshift64*: the same numbers everywhere for a seed. */
    s_rand_state ^= s_rand_state >> 12;
    s_rand_state ^= s_rand_state << 25;
    s_rand_state ^= s_rand_state >> 27;
    return s_rand_state * 2685821657736338717ULL;
}

static uint64_t s_below(uint64_t n)
{
    return n ? s_rand() % n : 0;
}

typedef struct {
    world_t *w;
    log_t *log;
    /* Applied besides (after a rebuild: it must follow live). */
    world_t *mirror;
    uint64_t clock_ms;
    uint64_t pseq;
} live_t;

/*  The broker's broker_apply: apply, then log; a death is counted by joins. */
static int s_emit(live_t *live, const record_t *record)
{
    state_effects_t effects;
    int rc = state_apply(&live->w->state, record, &effects);
    assert_int_equal(rc, 0);
    if (effects.died)
        queue_count_dead(effects.queue, effects.item);
    if (live->log)
        s_log_add(live->log, record);
    if (live->mirror) {
        /* The hints point into the live state: another state looks up. */
        record_t copy = *record;
        copy.item_ref = NULL;
        copy.queue_ref = NULL;
        state_effects_t other;
        assert_int_equal(state_apply(&live->mirror->state, &copy, &other), 0);
        assert_int_equal(other.died, effects.died);
        assert_int_equal(other.finished, effects.finished);
        if (other.died)
            queue_count_dead(other.queue, other.item);
    }
    return rc;
}

static void s_emit_move(live_t *live, item_t *item, item_state_t to)
{
    record_t record;
    state_move(item, to, &record);
    if (to == ITEM_DELAYED)
        record.until_ms = live->clock_ms + 1 + s_below(1000);
    s_emit(live, &record);
}

static void s_emit_gone(live_t *live, item_t *item, uint8_t reason)
{
    record_t record = {.type = RECORD_GONE, .id = item->id, .reason = reason};
    s_emit(live, &record);
}

static const char *const s_names[3] = {"alpha", "beta", "gamma"};

typedef struct {
    item_t **items;
    size_t count;
    uint8_t state;
    const queue_t *queue;
} picked_t;

static void s_pick_each(void *ctx, item_t *item)
{
    picked_t *picked = ctx;
    if ((!picked->state || item->state == picked->state)
        && (!picked->queue || item->queue == picked->queue))
        picked->items[picked->count++] = item;
}

/*  A random item in this state (any queue), or NULL. */
static item_t *s_random_item(world_t *w, uint8_t state, const queue_t *queue)
{
    picked_t picked = {calloc(store_count(w->store) + 1, sizeof(item_t *)), 0, state, queue};
    store_each(w->store, s_pick_each, &picked);
    item_t *item = picked.count ? picked.items[s_below(picked.count)] : NULL;
    free(picked.items);
    return item;
}

static void s_discard_ready(live_t *live, queue_t *queue)
{
    list_node_t *node;
    while ((node = list_first(&queue->ready)))
        s_emit_gone(live, list_entry(node, item_t, link), GONE_DISCARDED);
}

/*  broker_shut_queue's record; an immediate shutdown discards what waits. */
static void s_shut(live_t *live, queue_t *queue, queue_state_t state)
{
    if (state <= queue->state)
        return;
    record_t record = {.type = RECORD_QUEUE, .state = (uint8_t) state,
                       .queue = aq_bytes_str(queue->name), .next = queue->ledger.next,
                       .front = queue->front, .back = queue->back, .dead_back = queue->dead_back};
    s_emit(live, &record);
    if (state == QUEUE_DISCARDING) {
        item_t *item;
        while ((item = s_random_item(live->w, ITEM_DELAYED, queue)))
            s_emit_gone(live, item, GONE_DISCARDED);
        s_discard_ready(live, queue);
    }
}

typedef struct {
    queue_t **queues;
    size_t count;
} all_queues_t;

static void s_collect_queue(void *ctx, void *value)
{
    all_queues_t *all = ctx;
    all->queues[all->count++] = value;
}

static void s_shut_all(live_t *live, queue_state_t state)
{
    all_queues_t all = {calloc(dict_size(live->w->queues) + 1, sizeof(queue_t *)), 0};
    dict_each(live->w->queues, s_collect_queue, &all);
    for (size_t i = 0; i < all.count; i++)
        s_shut(live, all.queues[i], state);
    free(all.queues);
    record_t record = {.type = RECORD_QUEUE, .state = (uint8_t) state};
    s_emit(live, &record);
}

/*  One random operation, as the broker would make it. */
static void s_random_op(live_t *live)
{
    world_t *w = live->w;
    live->clock_ms += s_below(20);
    unsigned op = (unsigned) s_below(100);
    const char *name = s_names[s_below(3)];
    queue_t *queue = s_get(w, name);
    item_t *item;
    if (op < 35) { /* a put */
        if (w->state.shut_down || (queue && queue->state != QUEUE_OPEN))
            return;
        queue = s_queue_make(w, aq_bytes_str(name));
        assert_non_null(queue);
        char payload[32];
        int size = snprintf(payload, sizeof payload, "payload %llu",
                            (unsigned long long) s_rand() % 100000);
        record_t record = {.lease_ms = (uint32_t) s_below(3) * 500,
                           .producer = aq_bytes_str("producer-1"),
                           .queue = aq_bytes_str(name),
                           .payload = {(const uint8_t *) payload, (size_t) s_below((uint64_t) size + 1)}};
        state_next_put(&w->state, queue, &record);
        /* Some with a priority, some to the front, some delayed. */
        static const int32_t priorities[] = {0, 0, 0, -1, 1, 2, INT32_MIN};
        unsigned how = (unsigned) s_below(16);
        int32_t priority = priorities[s_below(sizeof priorities / sizeof *priorities)];
        state_put_options(queue, priority, how == 1,
                          how == 2 ? (uint64_t) live->clock_ms + 1000 : 0, &record);
        record.pseq = ++live->pseq;
        s_emit(live, &record);
    }
    else if (op < 55) { /* deliveries: the head, a few at a time */
        if (!queue || queue->state == QUEUE_DISCARDING)
            return;
        for (uint64_t n = 1 + s_below(3); n && queue->ready_count; n--)
            s_emit_move(live, list_entry(list_first(&queue->ready), item_t, link), ITEM_INFLIGHT);
    }
    else if (op < 70) { /* given back: dead once out of attempts, delayed, or to the front */
        if (!(item = s_random_item(w, ITEM_INFLIGHT, NULL)))
            return;
        queue = item->queue;
        if (queue->max_attempts && item->attempts >= queue->max_attempts)
            s_emit_move(live, item, ITEM_DEAD);
        else if (s_below(3) == 0)
            s_emit_move(live, item, ITEM_DELAYED);
        else {
            s_emit_move(live, item, ITEM_QUEUED);
            if (queue->state == QUEUE_DISCARDING)
                s_discard_ready(live, queue);
        }
    }
    else if (op < 75) { /* a delay ends */
        if (!(item = s_random_item(w, ITEM_DELAYED, NULL)))
            return;
        queue = item->queue;
        s_emit_move(live, item, ITEM_QUEUED);
        if (queue->state == QUEUE_DISCARDING)
            s_discard_ready(live, queue);
    }
    else if (op < 90) { /* an ack */
        if ((item = s_random_item(w, ITEM_INFLIGHT, NULL)))
            s_emit_gone(live, item, GONE_ACKED);
    }
    else if (op < 93) { /* the dead requeued (broker_requeue_dead), or purged */
        if (!queue || !queue->dead_count)
            return;
        list_node_t *node;
        if (s_below(4) == 0) {
            while ((node = list_first(&queue->dead)))
                s_emit_gone(live, list_entry(node, item_t, link), GONE_PURGED);
            return;
        }
        while ((node = list_first(&queue->dead))) {
            item = list_entry(node, item_t, link);
            record_t record = {.type = RECORD_STATE, .id = item->id, .seq = queue->ledger.next,
                               .rank = queue->back + 1, .state = ITEM_QUEUED};
            s_emit(live, &record);
        }
        if (queue->state == QUEUE_DISCARDING)
            s_discard_ready(live, queue);
    }
    else if (op < 98) { /* an unused queue forgotten (shut down or not), after its
                           consumers caught up */
        if (queue && queue->state != QUEUE_DISCARDING && s_below(8) == 0) {
            while ((item = s_random_item(w, ITEM_DELAYED, queue)))
                s_emit_move(live, item, ITEM_QUEUED);
            while (queue->ready_count)
                s_emit_move(live, list_entry(list_first(&queue->ready), item_t, link),
                            ITEM_INFLIGHT);
            while ((item = s_random_item(w, ITEM_INFLIGHT, queue)))
                s_emit_gone(live, item, GONE_ACKED);
            while ((item = s_random_item(w, ITEM_DEAD, queue)))
                s_emit_gone(live, item, GONE_PURGED);
        }
        if (queue && queue_is_unused(queue)) {
            record_t record = {.type = RECORD_FORGET, .queue = aq_bytes_str(name)};
            s_emit(live, &record);
            assert_null(s_get(w, name));
        }
    }
    else if (op == 98) { /* a queue shut down now and then, and reopened */
        if (queue && queue->state != QUEUE_OPEN && !w->state.shut_down && s_below(3) == 0) {
            record_t record = {.type = RECORD_REOPEN, .queue = aq_bytes_str(name)};
            s_emit(live, &record);
            assert_int_equal(queue->state, QUEUE_OPEN);
        }
        else if (queue && s_below(20) == 0)
            s_shut(live, queue, s_below(2) ? QUEUE_DRAINING : QUEUE_DISCARDING);
        else if (queue && s_below(4) == 0) { /* paused or resumed (deliveries go on here) */
            record_t record = {.type = RECORD_PAUSE, .state = (uint8_t) !queue->paused,
                               .queue = aq_bytes_str(name)};
            s_emit(live, &record);
        }
    }
    else { /* an ack of something held by nobody known: a purge of a random dead item */
        if ((item = s_random_item(w, ITEM_DEAD, NULL)))
            s_emit_gone(live, item, GONE_PURGED);
    }
}

/*  Decodes and applies one logged record. */
static int s_replay_one(world_t *w, const logged_t *entry)
{
    record_t record;
    state_effects_t effects;
    assert_int_equal(record_decode(entry->type, entry->body, entry->size, &record), 0);
    return state_apply(&w->state, &record, &effects);
}

/*  The records [from, to) in an order that keeps each slot's records in
    order and never moves one across a record about no item. */
static size_t *s_interleave(const log_t *log, size_t from, size_t to)
{
    size_t n = to - from;
    size_t *order = malloc((n + 1) * sizeof *order), out = 0;
    size_t *next = malloc((n + 1) * sizeof *next); /* per record: the next of its slot */
    size_t *heads = malloc((n + 1) * sizeof *heads);
    assert_true(order && next && heads);
    size_t start = from;
    while (start < to) {
        if (log->records[start].slot == UINT64_MAX) {
            order[out++] = start++;
            continue;
        }
        size_t end = start;
        while (end < to && log->records[end].slot != UINT64_MAX)
            end++;
        /* Chains by slot: for each record, the next one of its slot. */
        size_t chains = 0;
        for (size_t i = start; i < end; i++) {
            next[i - from] = SIZE_MAX;
            size_t j;
            for (j = i; j > start && log->records[j - 1].slot != log->records[i].slot; j--)
                ;
            if (j == start)
                heads[chains++] = i; /* the first of its slot here */
            else
                next[j - 1 - from] = i;
        }
        while (chains) {
            size_t pick = (size_t) s_below(chains);
            size_t i = heads[pick];
            order[out++] = i;
            if (next[i - from] != SIZE_MAX)
                heads[pick] = next[i - from];
            else
                heads[pick] = heads[--chains];
        }
        start = end;
    }
    assert_int_equal(out, n);
    free(next);
    free(heads);
    return order;
}

/*  persist.c's snapshot: RESET, every queue with its counters, the
    shutdown, every item where it is now (in slot order). */
typedef struct {
    log_t *log;
} snap_t;

static void s_snapshot_queue(void *ctx, void *value)
{
    const queue_t *queue = value;
    record_t record = {.type = RECORD_QUEUE, .state = (uint8_t) queue->state,
                       .next = queue->ledger.next, .front = queue->front, .back = queue->back,
                       .dead_back = queue->dead_back, .queue = aq_bytes_str(queue->name)};
    s_log_add(ctx, &record);
    if (queue->paused) {
        record = (record_t){.type = RECORD_PAUSE, .state = 1, .queue = aq_bytes_str(queue->name)};
        s_log_add(ctx, &record);
    }
}

static void s_snapshot_item(void *ctx, item_t *item)
{
    record_t record = {.type = RECORD_ITEM, .id = item->id, .seq = item->seq,
                       .rank = item->rank, .state = item->state,
                       .attempts = item->attempts, .lease_ms = item->lease_ms,
                       .priority = item->priority, .queue = aq_bytes_str(item->queue->name),
                       .payload = {item->data, item->size}};
    if (item->state == ITEM_DELAYED)
        record.until_ms = item->until_ms, record.rank = 0;
    s_log_add(ctx, &record);
}

static void s_snapshot(const world_t *w, log_t *snapshot)
{
    record_t reset = {.type = RECORD_RESET};
    s_log_add(snapshot, &reset);
    dict_each(w->queues, s_snapshot_queue, snapshot);
    if (w->state.shut_down) {
        record_t record = {.type = RECORD_QUEUE, .state = QUEUE_DRAINING};
        s_log_add(snapshot, &record);
    }
    store_each(w->store, s_snapshot_item, snapshot);
}

/*  A join on each queue, both ways, must start the same on both. */
static void s_assert_same_joins(world_t *a, world_t *b)
{
    for (int i = 0; i < 3; i++) {
        queue_t *x = s_get(a, s_names[i]), *y = s_get(b, s_names[i]);
        assert_true((x == NULL) == (y == NULL));
        if (!x)
            continue;
        for (int mode = AQ_JOIN_BEFORE; mode <= AQ_JOIN_ALL; mode++) {
            joiner_t p = {.mode = (aq_join_mode_t) mode}, q = {.mode = (aq_join_mode_t) mode};
            assert_int_equal(queue_join_start(x, &p), queue_join_start(y, &q));
            assert_int_equal(p.end, q.end);
            assert_int_equal(p.waited, q.waited);
            assert_int_equal(queue_join_remaining(x, &p), queue_join_remaining(y, &q));
        }
    }
}

enum { SEEDS = 20, OPS = 3000 };

typedef enum { REPLAY_IN_ORDER, REPLAY_INTERLEAVED, REPLAY_SNAPSHOT } replay_mode_t;

static void s_replay_equals_live(uint64_t seed, replay_mode_t mode)
{
    s_rand_state = seed * 0x9e3779b97f4a7c15ULL + 1;
    world_t *live_world = s_world_new();
    log_t log = {0}, snapshot = {0};
    live_t live = {.w = live_world, .log = &log};
    size_t mid_op = OPS / 3 + (size_t) s_below(OPS / 3), mid = 0;
    int shut_all_at = seed % 5 == 0 ? (int) (OPS * 4 / 5) : -1;
    for (int op = 0; op < OPS; op++) {
        if ((size_t) op == mid_op) {
            mid = log.count;
            s_snapshot(live_world, &snapshot);
        }
        if (op == shut_all_at)
            s_shut_all(&live, s_below(2) ? QUEUE_DRAINING : QUEUE_DISCARDING);
        s_random_op(&live);
        dict_each(live_world->queues, s_check_order, NULL);
    }
    world_t *replayed = s_world_new();
    replayed->state.replaying = 1;
    if (mode == REPLAY_IN_ORDER) {
        for (size_t i = 0; i < log.count; i++)
            assert_int_equal(s_replay_one(replayed, &log.records[i]), 0);
    }
    else if (mode == REPLAY_INTERLEAVED) {
        size_t *order = s_interleave(&log, 0, log.count);
        for (size_t i = 0; i < log.count; i++)
            assert_int_equal(s_replay_one(replayed, &log.records[order[i]]), 0);
        free(order);
    }
    else {
        /* What came before the snapshot (part of it), then the snapshot,
           then the records after it, interleaved. */
        for (size_t i = 0; i < mid / 2; i++)
            assert_int_equal(s_replay_one(replayed, &log.records[i]), 0);
        for (size_t i = 0; i < snapshot.count; i++)
            assert_int_equal(s_replay_one(replayed, &snapshot.records[i]), 0);
        size_t *order = s_interleave(&log, mid, log.count);
        for (size_t i = 0; i < log.count - mid; i++)
            assert_true(s_replay_one(replayed, &log.records[order[i]]) >= 0);
        free(order);
    }
    if (getenv("TEST_STATE_VERBOSE")) {
        char *text = s_dump(live_world);
        size_t types[16] = {0}, states[8] = {0};
        for (size_t i = 0; i < log.count; i++) {
            types[log.records[i].type]++;
            if (log.records[i].type == RECORD_STATE)
                states[log.records[i].body[24]]++;
        }
        fprintf(stderr, "types: item %zu state %zu gone %zu queue %zu forget %zu; to queued %zu "
                "inflight %zu delayed %zu dead %zu\n", types[RECORD_ITEM], types[RECORD_STATE],
                types[RECORD_GONE], types[RECORD_QUEUE], types[RECORD_FORGET], states[1],
                states[2], states[3], states[4]);
        fprintf(stderr, "seed %llu mode %d: %zu records, %zu items, mid %zu\n%s",
                (unsigned long long) seed, (int) mode, log.count, store_count(live_world->store),
                mid, seed == 1 ? text : "");
        free(text);
    }
    assert_int_equal(state_rebuild(&replayed->state), 0);
    assert_int_equal(replayed->state.replaying, 0);
    dict_each(replayed->queues, s_check_order, NULL);
    s_assert_same(live_world, replayed);
    s_assert_same_joins(live_world, replayed);
    /* After the rebuild, it follows live record for record, joins too. */
    joiner_t joins[2][3][2];
    int added[3] = {0};
    for (int i = 0; i < 3; i++) {
        queue_t *x = s_get(live_world, s_names[i]), *y = s_get(replayed, s_names[i]);
        if (!x)
            continue;
        added[i] = 1;
        for (int mode_ = 0; mode_ < 2; mode_++) {
            joins[0][i][mode_] = (joiner_t){.mode = (aq_join_mode_t) mode_};
            joins[1][i][mode_] = (joiner_t){.mode = (aq_join_mode_t) mode_};
            int done_x = queue_join_start(x, &joins[0][i][mode_]);
            int done_y = queue_join_start(y, &joins[1][i][mode_]);
            assert_int_equal(done_x, done_y);
            queue_add_joiner(x, &joins[0][i][mode_]);
            queue_add_joiner(y, &joins[1][i][mode_]);
        }
    }
    live.log = NULL;
    live.mirror = replayed;
    for (int op = 0; op < 500; op++) {
        s_random_op(&live);
        for (int i = 0; i < 3; i++) {
            if (!added[i])
                continue;
            queue_t *x = s_get(live_world, s_names[i]), *y = s_get(replayed, s_names[i]);
            assert_true((x == NULL) == (y == NULL));
            if (!x)
                continue; /* forgotten, its joins answered */
            joiner_t *p, *q;
            do {
                p = queue_take_satisfied(x);
                q = queue_take_satisfied(y);
                assert_true((p == NULL) == (q == NULL));
                if (p) {
                    assert_int_equal(p - &joins[0][i][0], q - &joins[1][i][0]);
                    assert_int_equal(p->waited, q->waited);
                    assert_int_equal(p->dead, q->dead);
                }
            } while (p);
            for (int mode_ = 0; mode_ < 2; mode_++)
                if (list_linked(&joins[0][i][mode_].link))
                    assert_int_equal(queue_join_remaining(x, &joins[0][i][mode_]),
                                     queue_join_remaining(y, &joins[1][i][mode_]));
        }
    }
    s_assert_same(live_world, replayed);
    for (int i = 0; i < 3; i++) {
        if (!added[i])
            continue;
        queue_t *x = s_get(live_world, s_names[i]), *y = s_get(replayed, s_names[i]);
        for (int mode_ = 0; x && y && mode_ < 2; mode_++) {
            if (list_linked(&joins[0][i][mode_].link))
                queue_remove_joiner(x, &joins[0][i][mode_]);
            if (list_linked(&joins[1][i][mode_].link))
                queue_remove_joiner(y, &joins[1][i][mode_]);
        }
    }
    s_log_free(&log);
    s_log_free(&snapshot);
    s_world_destroy(&live_world);
    s_world_destroy(&replayed);
}

static void test_replay_in_order_equals_live(void **unused)
{
    (void) unused;
    for (uint64_t seed = 1; seed <= SEEDS; seed++)
        s_replay_equals_live(seed, REPLAY_IN_ORDER);
}

static void test_replay_interleaved_equals_live(void **unused)
{
    (void) unused;
    for (uint64_t seed = 1; seed <= SEEDS; seed++)
        s_replay_equals_live(seed, REPLAY_INTERLEAVED);
}

static void test_replay_after_a_snapshot_equals_live(void **unused)
{
    (void) unused;
    for (uint64_t seed = 1; seed <= SEEDS; seed++)
        s_replay_equals_live(seed, REPLAY_SNAPSHOT);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_records_round_trip),
        cmocka_unit_test(test_decode_rejects_bad_bytes_and_names),
        cmocka_unit_test(test_old_records_decode_with_rank_from_seq),
        cmocka_unit_test(test_fifo_puts_back_given_back_front_dead_in_order),
        cmocka_unit_test(test_delayed_item_comes_back_to_the_front),
        cmocka_unit_test(test_priorities_order_the_ready_items),
        cmocka_unit_test(test_applying_a_record_twice_changes_nothing),
        cmocka_unit_test(test_replay_in_order_equals_live),
        cmocka_unit_test(test_replay_interleaved_equals_live),
        cmocka_unit_test(test_replay_after_a_snapshot_equals_live),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
