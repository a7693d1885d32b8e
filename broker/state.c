#include "state.h"

#include <assert.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------- records */

const char *const state_death_names[DEATH_CAUSES] = {"unknown", "lease", "nack", "session",
                                                      "restart"};

/*  id, seq, rank, state, attempts, until: what STATE holds and ITEM starts with. */
#define MOVE_SIZE (8 + 8 + 8 + 1 + 2 + 8)
#define MOVE_V1_SIZE (8 + 8 + 1 + 2 + 8)
#define QUEUE_FIXED (1 + 8 + 8 + 8 + 8)

static void s_put_i64(uint8_t *at, int64_t value)
{
    aq_put_u64(at, (uint64_t) value);
}

static uint8_t *s_put_name(uint8_t *at, aq_bytes_t name)
{
    *at++ = (uint8_t) name.size;
    if (name.size)
        memcpy(at, name.data, name.size);
    return at + name.size;
}

static uint8_t *s_put_move(uint8_t *at, const record_t *record)
{
    aq_put_u64(at, record->id);
    aq_put_u64(at + 8, record->seq);
    s_put_i64(at + 16, record->rank);
    at[24] = record->state;
    at[25] = (uint8_t) (record->attempts >> 8);
    at[26] = (uint8_t) record->attempts;
    aq_put_u64(at + 27, record->until_ms);
    return at + MOVE_SIZE;
}

size_t record_size(const record_t *record)
{
    switch (record->type) {
    case RECORD_ITEM:
        return MOVE_SIZE + 4 + 8 + 4 + 1 + record->queue.size + 1 + record->producer.size
               + record->payload.size;
    case RECORD_STATE: return MOVE_SIZE;
    case RECORD_DIED: return MOVE_SIZE + 1 + 8 + record->text.size;
    case RECORD_GONE: return 9;
    case RECORD_PRODUCER: return 8 + 1 + record->producer.size + record->key.size;
    case RECORD_QUEUE: return QUEUE_FIXED + record->queue.size;
    case RECORD_FORGET:
    case RECORD_REOPEN: return record->queue.size;
    case RECORD_PAUSE: return 1 + record->queue.size;
    default: return 0;
    }
}

void record_encode(const record_t *record, uint8_t *at)
{
    switch (record->type) {
    case RECORD_ITEM:
        at = s_put_move(at, record);
        aq_put_u32(at, record->lease_ms);
        aq_put_u64(at + 4, record->pseq);
        aq_put_u32(at + 12, (uint32_t) record->priority);
        at = s_put_name(at + 16, record->queue);
        at = s_put_name(at, record->producer);
        if (record->payload.size)
            memcpy(at, record->payload.data, record->payload.size);
        break;
    case RECORD_STATE: s_put_move(at, record); break;
    case RECORD_DIED:
        at = s_put_move(at, record);
        at[0] = record->cause;
        aq_put_u64(at + 1, record->at_ms);
        if (record->text.size)
            memcpy(at + 9, record->text.data, record->text.size);
        break;
    case RECORD_GONE:
        aq_put_u64(at, record->id);
        at[8] = record->reason;
        break;
    case RECORD_PRODUCER:
        aq_put_u64(at, record->next);
        at = s_put_name(at + 8, record->producer);
        if (record->key.size)
            memcpy(at, record->key.data, record->key.size);
        break;
    case RECORD_QUEUE:
        at[0] = record->state;
        aq_put_u64(at + 1, record->next);
        s_put_i64(at + 9, record->front);
        s_put_i64(at + 17, record->back);
        s_put_i64(at + 25, record->dead_back);
        if (record->queue.size)
            memcpy(at + QUEUE_FIXED, record->queue.data, record->queue.size);
        break;
    case RECORD_FORGET:
    case RECORD_REOPEN:
        if (record->queue.size)
            memcpy(at, record->queue.data, record->queue.size);
        break;
    case RECORD_PAUSE:
        at[0] = record->state;
        if (record->queue.size)
            memcpy(at + 1, record->queue.data, record->queue.size);
        break;
    default: break;
    }
}

typedef struct {
    const uint8_t *at;
    size_t left;
    int ok;
} reader_t;

static const uint8_t *s_take(reader_t *r, size_t n)
{
    if (!r->ok || r->left < n) {
        r->ok = 0;
        return NULL;
    }
    const uint8_t *at = r->at;
    r->at += n;
    r->left -= n;
    return at;
}

static uint64_t s_u64(reader_t *r)
{
    const uint8_t *at = s_take(r, 8);
    return at ? aq_get_u64(at) : 0;
}

static uint32_t s_u32(reader_t *r)
{
    const uint8_t *at = s_take(r, 4);
    return at ? aq_get_u32(at) : 0;
}

static unsigned s_byte(reader_t *r)
{
    const uint8_t *at = s_take(r, 1);
    return at ? *at : 0;
}

static aq_bytes_t s_name(reader_t *r)
{
    size_t length = s_byte(r);
    const uint8_t *at = s_take(r, length);
    return at ? (aq_bytes_t){at, length} : (aq_bytes_t){0};
}

static aq_bytes_t s_rest(reader_t *r)
{
    aq_bytes_t rest = {r->at, r->left};
    r->at += r->left;
    r->left = 0;
    return rest;
}

/*  A move's fields; before 2.2 without rank: a queue's order was its seq
    order, so the seq is the rank. */
static void s_move(reader_t *r, record_t *record, int v1)
{
    record->id = s_u64(r);
    record->seq = s_u64(r);
    record->rank = v1 ? (int64_t) record->seq : (int64_t) s_u64(r);
    record->state = (uint8_t) s_byte(r);
    record->attempts = (uint16_t) (s_byte(r) << 8);
    record->attempts |= (uint16_t) s_byte(r);
    record->until_ms = s_u64(r);
    if (record->state < ITEM_QUEUED || record->state > ITEM_DEAD)
        r->ok = 0;
}

int record_known(uint8_t type)
{
    return type >= RECORD_ITEM_V1 && type <= RECORD_PAUSE;
}

int record_decode(uint8_t type, const uint8_t *body, size_t size, record_t *record)
{
    reader_t r = {body, size, 1};
    *record = (record_t){.type = type};
    switch (type) {
    case RECORD_ITEM_V1:
    case RECORD_ITEM:
        record->type = RECORD_ITEM;
        s_move(&r, record, type == RECORD_ITEM_V1);
        record->lease_ms = s_u32(&r);
        record->pseq = s_u64(&r);
        record->priority = type == RECORD_ITEM ? (int32_t) s_u32(&r) : 0;
        record->queue = s_name(&r);
        record->producer = s_name(&r);
        record->payload = s_rest(&r);
        if (record->queue.size == 0 || !aq_name_is_valid(record->queue.data, record->queue.size)
            || (record->producer.size
                && !aq_name_is_valid(record->producer.data, record->producer.size)))
            r.ok = 0;
        break;
    case RECORD_STATE_V1:
    case RECORD_STATE:
        record->type = RECORD_STATE;
        s_move(&r, record, type == RECORD_STATE_V1);
        break;
    case RECORD_DIED:
        s_move(&r, record, 0);
        record->cause = (uint8_t) s_byte(&r);
        record->at_ms = s_u64(&r);
        record->text = s_rest(&r);
        if (record->state != ITEM_DEAD || record->cause >= DEATH_CAUSES
            || record->text.size > EPITAPH_TEXT_MAX)
            r.ok = 0;
        break;
    case RECORD_GONE:
        record->id = s_u64(&r);
        record->reason = r.left ? (uint8_t) s_byte(&r) : GONE_ACKED;
        if (record->reason < GONE_ACKED || record->reason > GONE_PURGED)
            r.ok = 0;
        break;
    case RECORD_PRODUCER:
        record->next = s_u64(&r);
        record->producer = s_name(&r);
        record->key = s_rest(&r);
        if (!record->producer.size || !aq_name_is_valid(record->producer.data, record->producer.size))
            r.ok = 0;
        break;
    case RECORD_QUEUE_V1:
    case RECORD_QUEUE:
        record->type = RECORD_QUEUE;
        record->state = (uint8_t) s_byte(&r);
        if (type == RECORD_QUEUE) {
            record->next = s_u64(&r);
            record->front = (int64_t) s_u64(&r);
            record->back = (int64_t) s_u64(&r);
            record->dead_back = (int64_t) s_u64(&r);
        }
        record->queue = s_rest(&r);
        if (record->state > QUEUE_DISCARDING
            || (record->queue.size && !aq_name_is_valid(record->queue.data, record->queue.size)))
            r.ok = 0;
        break;
    case RECORD_PAUSE:
        record->state = (uint8_t) s_byte(&r);
        if (record->state > 1)
            r.ok = 0;
        __attribute__((fallthrough)); /* the name */
    case RECORD_FORGET:
    case RECORD_REOPEN:
        record->queue = s_rest(&r);
        if ((!record->queue.size && type != RECORD_REOPEN)
            || (record->queue.size && !aq_name_is_valid(record->queue.data, record->queue.size)))
            r.ok = 0;
        break;
    case RECORD_RESET: break;
    default: r.ok = 0;
    }
    return r.ok && r.left == 0 ? 0 : -1;
}

/* --------------------------------------------------------------- apply */

/*  The counter of the items in `state`. */
static uint64_t *s_count(queue_t *queue, uint8_t state)
{
    switch (state) {
    case ITEM_QUEUED: return &queue->ready_count;
    case ITEM_INFLIGHT: return &queue->inflight_count;
    case ITEM_DELAYED: return &queue->delayed_count;
    default: return &queue->dead_count;
    }
}

static int s_outstanding(uint8_t state)
{
    return state != ITEM_DEAD;
}

/*  Links the item into `list` by its rank: at an end (live, always), or
    anywhere while replaying (sorted by state_rebuild). */
static void s_link(const state_t *self, queue_t *queue, list_node_t *list, item_t *item)
{
    list_node_t *last = list_last(list), *first = list_first(list);
    if (!last || list_entry(last, item_t, link)->rank < item->rank)
        list_push_back(list, &item->link);
    else if (list_entry(first, item_t, link)->rank > item->rank)
        list_push_front(list, &item->link);
    else if (self->replaying) {
        list_push_back(list, &item->link);
        queue->unsorted = 1;
    }
    else {
        /* Not from a leader's record: kept right at O(n). */
        list_node_t *node = last;
        while (node != list && list_entry(node, item_t, link)->rank > item->rank)
            node = node->prev;
        list_insert_between(&item->link, node, node->next);
    }
}

/* ---------------------------------------------------------- priorities */

/*  The first band whose priority is not below `priority`. */
static uint32_t s_band_at(const queue_t *queue, int32_t priority)
{
    uint32_t low = 0, high = queue->band_count;
    while (low < high) {
        uint32_t middle = low + (high - low) / 2;
        if (queue->bands[middle].priority < priority)
            low = middle + 1;
        else
            high = middle;
    }
    return low;
}

/*  Room for the bands that linking an item of this priority may add (its
    own, and priority 0's when the first other comes), so that linking
    cannot fail: called before anything changes. -1 if out of memory. */
static int s_band_grow(queue_t *queue)
{
    if (queue->band_count + 2 <= queue->band_cap)
        return 0;
    uint32_t cap = queue->band_cap ? queue->band_cap * 2 : 4;
    band_t *bands = realloc(queue->bands, cap * sizeof *bands);
    if (!bands)
        return -1;
    queue->bands = bands;
    queue->band_cap = cap;
    return 0;
}

static int s_band_reserve(queue_t *queue, int32_t priority)
{
    return priority == 0 && queue->band_count == 0 ? 0 : s_band_grow(queue);
}

static item_t *s_item_of(list_node_t *node)
{
    return list_entry(node, item_t, link);
}

/*  Links a ready item into its priority's run, by rank (see s_link). */
static void s_ready_link(const state_t *self, queue_t *queue, item_t *item)
{
    if (!queue->band_count) {
        if (item->priority == 0) {
            s_link(self, queue, &queue->ready, item);
            return;
        }
        if (!list_empty(&queue->ready)) /* every item so far is of priority 0 */
            queue->bands[queue->band_count++] = (band_t){0, s_item_of(list_first(&queue->ready)),
                                                         s_item_of(list_last(&queue->ready))};
    }
    uint32_t at = s_band_at(queue, item->priority);
    band_t *band = &queue->bands[at];
    if (at == queue->band_count || band->priority != item->priority) {
        list_node_t *next = at < queue->band_count ? &band->first->link : &queue->ready;
        list_insert_between(&item->link, next->prev, next);
        memmove(band + 1, band, (queue->band_count - at) * sizeof *band);
        *band = (band_t){item->priority, item, item};
        queue->band_count++;
    }
    else if (band->last->rank < item->rank || self->replaying) {
        if (band->last->rank > item->rank)
            queue->unsorted = 1; /* sorted by state_rebuild */
        list_insert_between(&item->link, &band->last->link, band->last->link.next);
        band->last = item;
    }
    else if (band->first->rank > item->rank) {
        list_insert_between(&item->link, band->first->link.prev, &band->first->link);
        band->first = item;
    }
    else {
        /* Not from a leader's record: kept right at O(n). */
        list_node_t *node = &band->last->link;
        while (s_item_of(node)->rank > item->rank)
            node = node->prev;
        list_insert_between(&item->link, node, node->next);
    }
}

/*  Takes a ready item out of the ready list and its band. */
static void s_ready_unlink(queue_t *queue, item_t *item)
{
    if (queue->band_count) {
        uint32_t at = s_band_at(queue, item->priority);
        band_t *band = &queue->bands[at];
        assert(at < queue->band_count && band->priority == item->priority);
        if (band->first == item && band->last == item) {
            memmove(band, band + 1, (queue->band_count - at - 1) * sizeof *band);
            queue->band_count--;
        }
        else if (band->first == item)
            band->first = s_item_of(item->link.next);
        else if (band->last == item)
            band->last = s_item_of(item->link.prev);
        if (queue->band_count == 1 && queue->bands[0].priority == 0)
            queue->band_count = 0; /* only priority 0 is left: no bands needed */
    }
    list_remove(&item->link);
}

/*  Takes the item out of its place (its holder, if any, let go of it). */
static void s_leave(queue_t *queue, item_t *item)
{
    assert(!item->holder);
    if (item->state == ITEM_QUEUED)
        s_ready_unlink(queue, item);
    else if (list_linked(&item->link))
        list_remove(&item->link);
    (*s_count(queue, item->state))--;
    if (item->epitaph) { /* a dead item's */
        free(item->epitaph);
        item->epitaph = NULL;
    }
}

/*  Puts the item where `record` says. */
static void s_enter(const state_t *self, queue_t *queue, item_t *item, const record_t *record)
{
    item->state = record->state;
    item->attempts = record->attempts;
    if (record->state == ITEM_DELAYED)
        item->until_ms = record->until_ms;
    else
        item->rank = record->rank;
    (*s_count(queue, item->state))++;
    if (item->state == ITEM_QUEUED) {
        s_ready_link(self, queue, item);
        if (item->rank < queue->front)
            queue->front = item->rank;
        if (item->rank > queue->back)
            queue->back = item->rank;
    }
    else if (item->state == ITEM_DEAD) {
        s_link(self, queue, &queue->dead, item);
        if (item->rank > queue->dead_back)
            queue->dead_back = item->rank;
    }
}

/*  The item enters the queue's ledger at `seq`. */
static int s_open(const state_t *self, queue_t *queue, uint64_t seq)
{
    if (self->replaying) {
        if (seq >= queue->next_seen)
            queue->next_seen = seq + 1;
        return 0;
    }
    if (seq == queue->ledger.next) {
        uint64_t opened;
        return ledger_open(&queue->ledger, &opened);
    }
    return ledger_open_at(&queue->ledger, seq);
}

static void s_close(const state_t *self, queue_t *queue, uint64_t seq)
{
    if (!self->replaying)
        ledger_close(&queue->ledger, seq);
}

static queue_t *s_queue(state_t *self, aq_bytes_t name, int create)
{
    queue_t *queue = dict_get(self->queues, name.data, name.size);
    if (!queue && create) {
        queue = self->queue_make(self->ctx, name);
        if (queue && self->shut_down && queue->state == QUEUE_OPEN)
            queue->state = QUEUE_DRAINING;
    }
    return queue;
}

__attribute__((noinline)) static int s_apply_item(state_t *self, const record_t *record,
                                                  state_effects_t *effects)
{
    queue_t *queue = record->queue_ref ? record->queue_ref : s_queue(self, record->queue, 1);
    if (!queue)
        return -1;
    /* A put to the back of a queue without priorities: the fast path below. */
    int plain = record->state == ITEM_QUEUED && record->rank > queue->back
                && !(queue->band_count | (uint32_t) record->priority);
    if (!plain && record->state == ITEM_QUEUED && s_band_reserve(queue, record->priority))
        return -1;
    item_t *item = store_claim(self->store, record->id);
    if (!item) /* read again (a snapshot saw it too: its last record wins), or
                  its slot is another item's: not a record of this log */
        return 1;
    if (store_set_payload(item, record->payload.data, record->payload.size)
        || (s_outstanding(record->state) && s_open(self, queue, record->seq))) {
        store_remove(self->store, item);
        return -1;
    }
    item->queue = queue;
    item->seq = record->seq;
    item->lease_ms = record->lease_ms;
    item->priority = record->priority;
    if (plain) {
        /* A put, at the back of the ready list past every rank it had
           (front <= back, so the front stays): what s_enter does then,
           without its branches. Taken live, and on replay alike. */
        item->state = ITEM_QUEUED;
        item->attempts = record->attempts;
        item->rank = record->rank;
        list_push_back(&queue->ready, &item->link);
        queue->ready_count++;
        queue->back = record->rank;
    }
    else
        s_enter(self, queue, item, record);
    queue->put_total++;
    effects->item = item;
    effects->queue = queue;
    /* Out of memory there, the item stays: only its producer is less known. */
    if (record->pseq && self->producer_seen)
        self->producer_seen(self->ctx, record->producer, (aq_bytes_t){0}, record->pseq + 1);
    return 0;
}

/*  The item a record names. */
static item_t *s_item(const state_t *self, const record_t *record)
{
    assert(!record->item_ref || record->item_ref->id == record->id);
    return record->item_ref ? record->item_ref : store_find(self->store, record->id);
}

__attribute__((noinline)) static int s_apply_state(state_t *self, const record_t *record,
                                                   state_effects_t *effects)
{
    item_t *item = s_item(self, record);
    if (!item || item->holder)
        return 1;
    queue_t *queue = item->queue;
    if (item->state == ITEM_QUEUED && record->state == ITEM_INFLIGHT) {
        /* A delivery, the most frequent move: out of the ready list, in
           flight, outstanding before and after (the ledger is left alone).
           What the general path below does then, without its branches. */
        if (queue->band_count)
            s_ready_unlink(queue, item);
        else
            list_remove(&item->link);
        queue->ready_count--;
        queue->inflight_count++;
        queue->delivered_total++;
        item->state = ITEM_INFLIGHT;
        item->seq = record->seq;
        item->attempts = record->attempts;
        item->rank = record->rank;
        effects->item = item;
        effects->queue = queue;
        return 0;
    }
    int was = s_outstanding(item->state), will = s_outstanding(record->state);
    if (!was && will && !self->replaying && record->seq < queue->ledger.next)
        return 1; /* a requeue from the dead numbered before later puts: stale */
    if (record->state == ITEM_QUEUED && s_band_reserve(queue, item->priority))
        return -1;
    if (!was && will && s_open(self, queue, record->seq))
        return -1;
    /* Taken back from its holder (given back, its lease or session over,
       or a new leader's or a restart's): counted here, so that every
       replica counts it, and a leader after another too. */
    if (item->state == ITEM_INFLIGHT)
        queue->redelivered_total++;
    s_leave(queue, item);
    if (was && !will)
        s_close(self, queue, item->seq);
    if (was && !will) {
        queue->dead_lettered_total++;
        effects->died = effects->finished = 1;
    }
    item->seq = record->seq;
    s_enter(self, queue, item, record);
    effects->item = item;
    effects->queue = queue;
    return 0;
}

/*  A death is a move to the dead list, and its epitaph. Without memory for
    the epitaph the item is dead all the same, its cause unknown. */
__attribute__((noinline)) static int s_apply_died(state_t *self, const record_t *record,
                                                  state_effects_t *effects)
{
    int rc = s_apply_state(self, record, effects);
    if (rc)
        return rc;
    if (effects->died)
        effects->queue->dead_by_cause[record->cause]++;
    epitaph_t *epitaph = malloc(sizeof *epitaph + record->text.size);
    if (epitaph) {
        epitaph->at_ms = (int64_t) record->at_ms;
        epitaph->cause = record->cause;
        epitaph->size = (uint8_t) record->text.size;
        if (record->text.size)
            memcpy(epitaph->text, record->text.data, record->text.size);
    }
    effects->item->epitaph = epitaph;
    return 0;
}

__attribute__((noinline)) static int s_apply_gone(state_t *self, const record_t *record,
                                                  state_effects_t *effects)
{
    item_t *item = s_item(self, record);
    if (!item || item->holder)
        return 1;
    queue_t *queue = item->queue;
    if (item->state == ITEM_INFLIGHT) /* an ack: linked nowhere, its holder let go of it */
        queue->inflight_count--;
    else
        s_leave(queue, item);
    if (s_outstanding(item->state)) {
        s_close(self, queue, item->seq);
        effects->finished = 1;
    }
    if (record->reason == GONE_ACKED)
        queue->acked_total++;
    else if (record->reason == GONE_DISCARDED)
        queue->discarded_total++;
    effects->queue = queue;
    store_remove(self->store, item);
    return 0;
}

/*  A queue's state only goes on: open, draining, discarding. */
static void s_raise_state(void *ctx, void *value)
{
    const record_t *record = ctx;
    queue_t *queue = value;
    if (record->state > queue->state)
        queue->state = (queue_state_t) record->state;
}

static void s_raise(queue_t *queue, const record_t *record)
{
    s_raise_state((void *) record, queue);
    if (record->front < queue->front)
        queue->front = record->front;
    if (record->back > queue->back)
        queue->back = record->back;
    if (record->dead_back > queue->dead_back)
        queue->dead_back = record->dead_back;
    if (record->next > queue->next_seen)
        queue->next_seen = record->next;
}

__attribute__((noinline)) static int s_apply_queue(state_t *self, const record_t *record,
                                                   state_effects_t *effects)
{
    if (!record->queue.size) {
        self->shut_down = 1;
        dict_each(self->queues, s_raise_state, (void *) record);
        return 0;
    }
    queue_t *queue = s_queue(self, record->queue, 1);
    if (!queue)
        return -1;
    s_raise(queue, record);
    if (!self->replaying && queue->next_seen > queue->ledger.next
        && ledger_advance(&queue->ledger, queue->next_seen))
        return -1;
    effects->queue = queue;
    return 0;
}

__attribute__((noinline)) static int s_apply_forget(state_t *self, const record_t *record)
{
    queue_t *queue = s_queue(self, record->queue, 0);
    if (!queue || !queue_is_drained(queue) || queue->dead_count)
        return 1;
    dict_delete(self->queues, record->queue.data, record->queue.size);
    self->queue_free(self->ctx, queue);
    return 0;
}

static void s_remove_item(void *ctx, item_t *item)
{
    state_t *self = ctx;
    if (list_linked(&item->link))
        list_remove(&item->link);
    store_remove(self->store, item);
}

typedef struct {
    queue_t **queues;
    size_t count;
} queues_t;

static void s_collect_queue(void *ctx, void *value)
{
    queues_t *all = ctx;
    all->queues[all->count++] = value;
}

/*  Every queue, in an array (the dict must not change while visited). */
static queues_t s_queues(const state_t *self)
{
    queues_t all = {calloc(dict_size(self->queues) + 1, sizeof(queue_t *)), 0};
    if (all.queues)
        dict_each(self->queues, s_collect_queue, &all);
    return all;
}

/*  A snapshot follows: what was read before it is replaced. */
__attribute__((noinline)) static int s_apply_reset(state_t *self)
{
    if (!self->replaying)
        return 1;
    queues_t all = s_queues(self);
    if (!all.queues)
        return -1;
    store_each(self->store, s_remove_item, self);
    for (size_t i = 0; i < all.count; i++) {
        queue_t *queue = all.queues[i];
        dict_delete(self->queues, queue->name, strlen(queue->name));
        self->queue_free(self->ctx, queue);
    }
    free(all.queues);
    self->shut_down = 0;
    return 0;
}

static void s_reopen_each(void *ctx, void *value)
{
    (void) ctx;
    ((queue_t *) value)->state = QUEUE_OPEN;
}

/*  The rarer records, out of state_apply's way. */
__attribute__((noinline)) static int s_apply_other(state_t *self, const record_t *record,
                                                   state_effects_t *effects)
{
    switch (record->type) {
    case RECORD_PRODUCER:
        if (!self->producer_seen)
            return 0;
        return self->producer_seen(self->ctx, record->producer, record->key, record->next);
    case RECORD_PAUSE: {
        queue_t *queue = s_queue(self, record->queue, 1);
        if (!queue)
            return -1;
        queue->paused = record->state;
        effects->queue = queue;
        return 0;
    }
    case RECORD_REOPEN: {
        if (!record->queue.size) {
            self->shut_down = 0;
            dict_each(self->queues, s_reopen_each, NULL);
            return 0;
        }
        /* Made if need be: the leader may have made it without a record
           (for a consumer or a join), born shut down after a SHUTDOWN of
           every queue; a replica must have it open too. */
        queue_t *queue = s_queue(self, record->queue, 1);
        if (!queue)
            return -1;
        queue->state = QUEUE_OPEN;
        effects->queue = queue;
        return 0;
    }
    default: return 1;
    }
}

/*  A dispatch only, each case a jump: three of these per item. */
int state_apply(state_t *self, const record_t *record, state_effects_t *effects)
{
    *effects = (state_effects_t){0};
    switch (record->type) {
    case RECORD_ITEM: return s_apply_item(self, record, effects);
    case RECORD_STATE: return s_apply_state(self, record, effects);
    case RECORD_GONE: return s_apply_gone(self, record, effects);
    case RECORD_DIED: return s_apply_died(self, record, effects);
    case RECORD_QUEUE: return s_apply_queue(self, record, effects);
    case RECORD_FORGET: return s_apply_forget(self, record);
    case RECORD_RESET: return s_apply_reset(self);
    default: return s_apply_other(self, record, effects);
    }
}

/* ------------------------------------------------------------- rebuild */

static int s_by_rank(const void *a, const void *b)
{
    const item_t *x = *(item_t *const *) a, *y = *(item_t *const *) b;
    return (x->rank > y->rank) - (x->rank < y->rank);
}

static int s_by_priority_rank(const void *a, const void *b)
{
    const item_t *x = *(item_t *const *) a, *y = *(item_t *const *) b;
    if (x->priority != y->priority)
        return (x->priority > y->priority) - (x->priority < y->priority);
    return s_by_rank(a, b);
}

/*  The bands of a sorted ready list, made again. -1 if out of memory. */
static int s_rebuild_bands(queue_t *queue)
{
    queue->band_count = 0;
    item_t *previous = NULL;
    for (list_node_t *node = queue->ready.next; node != &queue->ready; node = node->next) {
        item_t *item = s_item_of(node);
        if (previous && previous->priority == item->priority) {
            queue->bands[queue->band_count - 1].last = item;
        }
        else {
            if (s_band_grow(queue))
                return -1;
            queue->bands[queue->band_count++] = (band_t){item->priority, item, item};
        }
        previous = item;
    }
    if (queue->band_count == 1 && queue->bands[0].priority == 0)
        queue->band_count = 0;
    return 0;
}

/*  Relinks a list in rank order (the ready list: priority, then rank). */
static int s_sort(list_node_t *list, uint64_t count, int (*order)(const void *, const void *))
{
    item_t **items = malloc((count + 1) * sizeof *items);
    if (!items)
        return -1;
    size_t n = 0;
    list_node_t *node;
    while ((node = list_first(list))) {
        list_remove(node);
        items[n++] = list_entry(node, item_t, link);
    }
    qsort(items, n, sizeof *items, order);
    for (size_t i = 0; i < n; i++)
        list_push_back(list, &items[i]->link);
    free(items);
    return 0;
}

typedef struct {
    item_t **items;
    size_t count;
} items_t;

static void s_collect_outstanding(void *ctx, item_t *item)
{
    items_t *all = ctx;
    if (s_outstanding(item->state))
        all->items[all->count++] = item;
}

/*  By queue, then seq. */
static int s_by_seq(const void *a, const void *b)
{
    const item_t *x = *(item_t *const *) a, *y = *(item_t *const *) b;
    if (x->queue != y->queue)
        return ((uintptr_t) x->queue > (uintptr_t) y->queue)
               - ((uintptr_t) x->queue < (uintptr_t) y->queue);
    return (x->seq > y->seq) - (x->seq < y->seq);
}

int state_rebuild(state_t *self)
{
    queues_t all = s_queues(self);
    items_t outstanding = {calloc(store_count(self->store) + 1, sizeof(item_t *)), 0};
    int rc = all.queues && outstanding.items ? 0 : -1;
    for (size_t i = 0; rc == 0 && i < all.count; i++) {
        queue_t *queue = all.queues[i];
        if (queue->unsorted
            && (s_sort(&queue->ready, queue->ready_count, s_by_priority_rank)
                || s_sort(&queue->dead, queue->dead_count, s_by_rank) || s_rebuild_bands(queue)))
            rc = -1;
        queue->unsorted = 0;
        ledger_fini(&queue->ledger);
        if (ledger_init(&queue->ledger))
            rc = -1;
    }
    if (rc == 0) {
        store_each(self->store, s_collect_outstanding, &outstanding);
        qsort(outstanding.items, outstanding.count, sizeof *outstanding.items, s_by_seq);
        for (size_t i = 0; rc == 0 && i < outstanding.count; i++)
            if (ledger_open_at(&outstanding.items[i]->queue->ledger, outstanding.items[i]->seq))
                rc = -1;
        for (size_t i = 0; rc == 0 && i < all.count; i++)
            if (ledger_advance(&all.queues[i]->ledger, all.queues[i]->next_seen))
                rc = -1;
    }
    free(all.queues);
    free(outstanding.items);
    self->replaying = 0;
    return rc;
}

/* ------------------------------------------------------------- records */

void state_next_put(state_t *self, queue_t *queue, record_t *record)
{
    record->type = RECORD_ITEM;
    record->queue_ref = queue;
    record->id = store_pick(self->store);
    record->seq = queue->ledger.next;
    record->rank = queue->back + 1;
    record->state = ITEM_QUEUED;
    record->attempts = 0;
    record->until_ms = 0;
    record->priority = 0;
}

void state_put_options(const queue_t *queue, int32_t priority, int front, uint64_t until_ms,
                       record_t *record)
{
    record->priority = priority;
    if (front)
        record->rank = queue->front - 1;
    if (until_ms) {
        record->state = ITEM_DELAYED;
        record->until_ms = until_ms;
        record->rank = 0;
    }
}

/*  Only the fields of a STATE record (those record_size, record_encode and
    state_apply read), and item_ref: a record_t is about 170 bytes, and
    zeroing it all cost more than the rest of the move. */
void state_move(const item_t *item, item_state_t state, record_t *record)
{
    const queue_t *queue = item->queue;
    record->type = RECORD_STATE;
    record->id = item->id;
    record->seq = item->seq;
    record->rank = item->rank;
    record->state = (uint8_t) state;
    record->attempts = item->attempts;
    record->until_ms = 0;
    record->item_ref = (item_t *) item;
    record->queue_ref = NULL;
    if (state == ITEM_QUEUED && item->state == ITEM_DELAYED && item->attempts == 0)
        record->rank = queue->back + 1; /* a delayed put, due: as if put now */
    else if (state == ITEM_QUEUED)
        record->rank = queue->front - 1;
    else if (state == ITEM_DEAD)
        record->rank = queue->dead_back + 1;
    else if (state == ITEM_INFLIGHT && item->attempts < UINT16_MAX)
        record->attempts++; /* with no attempts limit, it stops counting there */
}

void state_die(const item_t *item, death_cause_t cause, int64_t at_ms, aq_bytes_t text,
               record_t *record)
{
    state_move(item, ITEM_DEAD, record);
    record->type = RECORD_DIED;
    record->cause = (uint8_t) cause;
    record->at_ms = (uint64_t) at_ms;
    /* Cut at a character's start: the text stays valid UTF-8. */
    if (text.size > EPITAPH_TEXT_MAX) {
        text.size = EPITAPH_TEXT_MAX;
        while (text.size && (text.data[text.size] & 0xc0) == 0x80)
            text.size--;
    }
    record->text = text;
}

void state_gone(const item_t *item, gone_reason_t reason, record_t *record)
{
    record->type = RECORD_GONE;
    record->id = item->id;
    record->reason = (uint8_t) reason;
    record->item_ref = (item_t *) item;
    record->queue_ref = NULL;
}

/* ---------------------------------------------------------------- dump */

typedef struct {
    state_write_fn *write;
    void *ctx;
    int failed;
    long total;
} out_t;

static void s_out(out_t *out, const char *format, ...) __attribute__((format(printf, 2, 3)));

static void s_out(out_t *out, const char *format, ...)
{
    char line[512];
    va_list args;
    va_start(args, format);
    int length = vsnprintf(line, sizeof line, format, args);
    va_end(args);
    if (length < 0 || out->failed)
        return;
    if ((size_t) length >= sizeof line)
        length = (int) sizeof line - 1;
    if (out->write(out->ctx, line, (size_t) length))
        out->failed = 1;
    out->total += length;
}

static uint32_t s_hash(const uint8_t *data, size_t size)
{
    uint32_t hash = 2166136261u; /* FNV-1a: to tell payloads apart in a dump */
    for (size_t i = 0; i < size; i++)
        hash = (hash ^ data[i]) * 16777619u;
    return hash;
}

static void s_out_item(out_t *out, const item_t *item)
{
    s_out(out, "  item %" PRIu64 " seq=%" PRIu64 " %s=%" PRId64 " attempts=%u lease=%u size=%u hash=%08x",
          item->id, item->seq, item->state == ITEM_DELAYED ? "until" : "rank",
          item->state == ITEM_DELAYED ? (int64_t) item->until_ms : item->rank, item->attempts,
          item->lease_ms, item->size, s_hash(item->data, item->size));
    if (item->priority)
        s_out(out, " priority=%" PRId32, item->priority);
    if (item->epitaph)
        s_out(out, " died=%" PRId64 " cause=%s reason=%08x", item->epitaph->at_ms,
              state_death_names[item->epitaph->cause],
              s_hash((const uint8_t *) item->epitaph->text, item->epitaph->size));
    s_out(out, "\n");
}

static int s_by_name(const void *a, const void *b)
{
    return strcmp((*(queue_t *const *) a)->name, (*(queue_t *const *) b)->name);
}

static int s_by_id(const void *a, const void *b)
{
    const item_t *x = *(item_t *const *) a, *y = *(item_t *const *) b;
    return (x->id > y->id) - (x->id < y->id);
}

/*  Items neither queued nor dead are in no list: those of every queue are
    gathered in one walk of the store, then sorted by queue, state and id. */
static void s_pick_waiting(void *ctx, item_t *item)
{
    items_t *items = ctx;
    if (item->state == ITEM_INFLIGHT || item->state == ITEM_DELAYED)
        items->items[items->count++] = item;
}

static int s_by_queue_state_id(const void *a, const void *b)
{
    const item_t *x = *(item_t *const *) a, *y = *(item_t *const *) b;
    if (x->queue != y->queue)
        return ((uintptr_t) x->queue > (uintptr_t) y->queue)
               - ((uintptr_t) x->queue < (uintptr_t) y->queue);
    if (x->state != y->state)
        return (x->state > y->state) - (x->state < y->state);
    return s_by_id(a, b);
}

int state_dump(const state_t *self, state_write_fn *write, void *ctx)
{
    out_t out = {write, ctx, 0, 0};
    queues_t all = s_queues(self);
    items_t some = {calloc(store_count(self->store) + 1, sizeof(item_t *)), 0};
    if (!all.queues || !some.items) {
        free(all.queues);
        free(some.items);
        return -1;
    }
    qsort(all.queues, all.count, sizeof *all.queues, s_by_name);
    store_each(self->store, s_pick_waiting, &some);
    qsort(some.items, some.count, sizeof *some.items, s_by_queue_state_id);
    s_out(&out, "shut_down=%d items=%zu\n", self->shut_down, store_count(self->store));
    for (size_t i = 0; i < all.count; i++) {
        const queue_t *queue = all.queues[i];
        /* Made by the leader for a consumer or a join, and never in a
           record: nothing of it is replicated. */
        if (queue->ledger.next == 1 && !queue->front && !queue->back && !queue->dead_back
            && queue_is_drained(queue) && !queue->dead_count && !queue->paused
            && (queue->state == QUEUE_OPEN || (self->shut_down && queue->state == QUEUE_DRAINING)))
            continue;
        s_out(&out,
              "queue %s state=%d%s next=%" PRIu64 " low=%" PRIu64 " outstanding=%" PRIu64
              " queued=%" PRIu64 " inflight=%" PRIu64 " delayed=%" PRIu64 " dead=%" PRIu64 "\n",
              queue->name, (int) queue->state, queue->paused ? " paused" : "", queue->ledger.next,
              queue->ledger.low,
              queue->ledger.outstanding, queue->ready_count, queue->inflight_count,
              queue->delayed_count, queue->dead_count);
        const list_node_t *lists[2] = {&queue->ready, &queue->dead};
        const char *names[2] = {"queued", "dead"};
        for (int l = 0; l < 2; l++) {
            s_out(&out, " %s\n", names[l]);
            for (const list_node_t *node = lists[l]->next; node != lists[l]; node = node->next)
                s_out_item(&out, list_entry(node, item_t, link));
        }
        uint8_t states[2] = {ITEM_INFLIGHT, ITEM_DELAYED};
        const char *others[2] = {"inflight", "delayed"};
        for (int s = 0; s < 2; s++) {
            s_out(&out, " %s\n", others[s]);
            for (size_t k = 0; k < some.count; k++)
                if (some.items[k]->queue == queue && some.items[k]->state == states[s])
                    s_out_item(&out, some.items[k]);
        }
    }
    free(all.queues);
    free(some.items);
    return out.failed ? -1 : (int) out.total;
}
