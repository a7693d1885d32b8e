/*  Producers by id: which of their puts have arrived, and the SYNCs that
    wait for the rest. Puts travel on PUSH/PULL and SYNCs on DEALER/ROUTER,
    and ZeroMQ does not order the two, so a SYNC may arrive before the puts
    it covers: it waits here until they do.

    Puts are taken strictly in sequence (go-back-N): a put below next_seq is
    a resend of one already received and is dropped; a put above it means
    some were lost on the way (a connection broke), so it is dropped too, and
    the SYNCs waiting then are told LOST; the producer resends everything
    unconfirmed, from its oldest, and the gap fills in order. A SYNC that
    arrives while the gap is open waits for the resends rather than hearing
    LOST again, so recovery converges; one that waits 3 heartbeats while no
    put of its producer arrives hears LOST (its resends were lost too).

    A put is *received* when it passes the sequence check (next_seq moves)
    and *done* when it is accepted or refused; held puts (a full queue) are
    received but not done, and SYNC waits for done. */
#include "producers.h"
#include "sessions.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SYNCS_PER_PRODUCER 16
/*  A producer with no session and no pending SYNC is forgotten after this
    long without a put, or sooner when --max-producers are remembered. */
#define PRODUCER_IDLE_MS (10 * 60 * 1000)
/*  Heartbeat intervals a SYNC waits, with no put arriving, before LOST. */
#define STALL_HEARTBEATS 3

producer_t *producers_get(broker_t *self, aq_bytes_t id)
{
    return dict_get(self->producers, id.data, id.size);
}

static void s_idle_push(broker_t *self, producer_t *producer)
{
    list_push_back(&self->idle_producers, &producer->idle_link);
    self->idle_producer_count++;
}

static void s_idle_remove(broker_t *self, producer_t *producer)
{
    if (!list_linked(&producer->idle_link))
        return;
    list_remove(&producer->idle_link);
    self->idle_producer_count--;
}

/*  Keeps the producers without a session within --max-producers: the one
    idle the longest goes first. A producer forgotten while it still had
    unconfirmed puts loses its de-duplication: when it comes back, puts it
    resends that were already received are queued again. */
static void s_evict(broker_t *self)
{
    while (self->idle_producer_count > self->config.max_producers) {
        list_node_t *node = list_first(&self->idle_producers);
        producers_forget(self, list_entry(node, producer_t, idle_link));
    }
}

static producer_t *s_new(broker_t *self, aq_bytes_t id, const char *key)
{
    producer_t *producer = calloc(1, sizeof *producer);
    if (!producer)
        return NULL;
    memcpy(producer->id, id.data, id.size);
    snprintf(producer->key, sizeof producer->key, "%s", key);
    producer->next_seq = 1; /* HELLO sets where a returning producer resumes */
    producer->last_seen_ms = producer->progress_ms = broker_now_ms();
    list_init(&producer->syncs);
    list_init(&producer->held);
    list_init(&producer->idle_link);
    list_init(&producer->blocked_link);
    list_init(&producer->durable_link);
    if (dict_set(self->producers, id.data, id.size, producer)) {
        free(producer);
        return NULL;
    }
    return producer;
}

producer_t *producers_open(broker_t *self, aq_bytes_t id, const char *key)
{
    producer_t *producer = s_new(self, id, key);
    if (producer) { /* its key, so that only it may resume after a restart */
        record_t record = {.type = RECORD_PRODUCER, .next = producer->next_seq, .producer = id,
                           .key = aq_bytes_str(producer->key)};
        state_effects_t effects;
        broker_apply(self, &record, &effects);
    }
    return producer;
}

int producers_seen(void *ctx, aq_bytes_t id, aq_bytes_t key, uint64_t next)
{
    broker_t *self = ctx;
    producer_t *producer = producers_get(self, id);
    if (!producer && !(producer = s_new(self, id, "")))
        return -1;
    if (key.size && key.size < sizeof producer->key) {
        memcpy(producer->key, key.data, key.size);
        producer->key[key.size] = '\0';
    }
    if (producer->next_seq < next)
        producer->next_seq = next;
    return 0;
}

void producers_attach(broker_t *self, producer_t *producer, peer_t *peer)
{
    if (producer->peer)
        producers_detach(self, producer);
    s_idle_remove(self, producer);
    producer->peer = peer;
    peer->producer = producer;
}

void producers_detach(broker_t *self, producer_t *producer)
{
    if (producer->peer)
        producer->peer->producer = NULL;
    producer->peer = NULL;
    producer->last_seen_ms = broker_now_ms();
    if (!list_linked(&producer->idle_link))
        s_idle_push(self, producer);
    s_evict(self);
}

uint64_t producers_done(const producer_t *producer)
{
    list_node_t *node = list_first(&producer->held);
    if (!node)
        return producer->next_seq - 1;
    const held_put_t *held = list_entry(node, held_put_t, link);
    return held->seq + held->skip - 1;
}

static void s_answer(broker_t *self, producer_t *producer, sync_wait_t *wait, int lost)
{
    aq_bytes_t rid = {wait->routing_id, wait->routing_id_size};
    aq_bytes_t tag = {wait->tag, wait->tag_size};
    if (lost) {
        char text[160];
        snprintf(text, sizeof text, "puts from seq %llu on never reached the broker: "
                 "send again every put not confirmed",
                 (unsigned long long) (producer->lost_from ? producer->lost_from
                                                           : producer->next_seq));
        broker_send_error(self, rid, AQ_LOST, tag, aq_bytes_str(producer->id), text);
        return;
    }
    aq_msg_t reply = {.cmd = AQ_CMD_SYNCED, .tag = tag, .seq = wait->seq};
    reply.producer = aq_bytes_str(producer->id);
    broker_send(self, rid, &reply, NULL);
}

static void s_remove_wait(producer_t *producer, sync_wait_t *wait)
{
    list_remove(&wait->link);
    producer->sync_count--;
    free(wait);
}

/*  Answers every SYNC waiting: LOST, since the puts they wait for will only
    come again if the producer resends them. */
static void s_answer_all_lost(broker_t *self, producer_t *producer)
{
    list_node_t *node;
    while ((node = list_first(&producer->syncs))) {
        sync_wait_t *wait = list_entry(node, sync_wait_t, link);
        s_answer(self, producer, wait, 1);
        s_remove_wait(producer, wait);
    }
}

void producers_answer(broker_t *self, producer_t *producer)
{
    uint64_t done = producers_done(producer);
    list_node_t *node;
    while ((node = list_first(&producer->syncs))) {
        sync_wait_t *wait = list_entry(node, sync_wait_t, link);
        if (wait->seq > done)
            break;
        /* Its puts are all handled; SYNCED waits for their records to be
           where the fsync mode says (everything appended so far covers
           them; later puts never hold it back). */
        if (!wait->positioned) {
            wait->positioned = 1;
            wait->position = (producer)->journal_position;
        }
        if (!broker_log_reached(self, wait->position)) {
            broker_log_wait(self, producer);
            break;
        }
        s_answer(self, producer, wait, 0);
        s_remove_wait(producer, wait);
    }
}

void producers_resume(broker_t *self, producer_t *producer, uint64_t seq)
{
    (void) self;
    /* A producer only forgets puts this broker confirmed, so seq is never
       above next_seq unless this broker forgot the producer: take its word. */
    if (seq > producer->next_seq) {
        producer->next_seq = seq;
        producer->lost_from = 0;
    }
}

int producers_check(broker_t *self, producer_t *producer, uint64_t first, uint64_t count,
                    uint64_t *skip)
{
    int64_t now = broker_now_ms();
    producer->last_seen_ms = producer->progress_ms = now;
    uint64_t last = first + count - 1;
    if (last < producer->next_seq)
        return 0; /* resends of puts already received */
    if (first <= producer->next_seq) {
        *skip = producer->next_seq - first;
        return 1;
    }
    if (!producer->lost_from) {
        producer->lost_from = producer->next_seq;
        char name[AQ_NAME_MAX * 4 + 1];
        ratelog_line(&self->bad_input, now,
                     "producer %s: put %llu arrived while %llu was expected: "
                     "dropping until it sends again from there",
                     log_escape(name, sizeof name, producer->id, strlen(producer->id)),
                     (unsigned long long) first, (unsigned long long) producer->next_seq);
        s_answer_all_lost(self, producer);
    }
    return 0;
}

void producers_received(broker_t *self, producer_t *producer, uint64_t last)
{
    producer->next_seq = last + 1;
    producer->lost_from = 0;
    producers_answer(self, producer);
}

/*  Tells each waiting SYNC that covers a held put why it waits, once. */
void producers_tell_held(broker_t *self, producer_t *producer)
{
    list_node_t *first = list_first(&producer->held);
    if (!first)
        return;
    const held_put_t *held = list_entry(first, held_put_t, link);
    uint64_t from = held->seq + held->skip;
    list_node_t *node;
    for (node = producer->syncs.next; node != &producer->syncs; node = node->next) {
        sync_wait_t *wait = list_entry(node, sync_wait_t, link);
        if (wait->told_held || wait->seq < from)
            continue;
        wait->told_held = 1;
        aq_msg_t msg = {.cmd = AQ_CMD_HELD, .tag = {wait->tag, wait->tag_size}, .seq = from};
        msg.producer = aq_bytes_str(producer->id);
        msg.queue = aq_bytes_str(held->queue->name);
        broker_send(self, (aq_bytes_t){wait->routing_id, wait->routing_id_size}, &msg, NULL);
    }
}

void producers_sync(broker_t *self, producer_t *producer, aq_bytes_t routing_id,
                    aq_bytes_t tag, uint64_t seq)
{
    sync_wait_t probe = {.seq = seq};
    memcpy(probe.routing_id, routing_id.data, routing_id.size);
    probe.routing_id_size = routing_id.size;
    memcpy(probe.tag, tag.data, tag.size);
    probe.tag_size = tag.size;
    int handled = seq <= producers_done(producer);
    if (handled && broker_log_reached(self, (producer)->journal_position)) {
        s_answer(self, producer, &probe, 0);
        return;
    }
    sync_wait_t *wait =
        producer->sync_count < SYNCS_PER_PRODUCER ? malloc(sizeof *wait) : NULL;
    if (!wait) {
        broker_send_error(self, routing_id, AQ_LIMIT, tag, aq_bytes_str(producer->id),
                          "too many SYNCs waiting for this producer");
        return;
    }
    *wait = probe;
    wait->since_ms = broker_now_ms();
    /* Keep the list ordered by seq: insert before the first larger one. */
    list_node_t *node;
    for (node = producer->syncs.next; node != &producer->syncs; node = node->next)
        if (list_entry(node, sync_wait_t, link)->seq > seq)
            break;
    list_insert_between(&wait->link, node->prev, node);
    producer->sync_count++;
    if (handled)
        producers_answer(self, producer); /* waits for the disk only */
    else
        producers_tell_held(self, producer);
}

/*  Sessions that lost their producer id to another session's HELLO (two
    processes with one client id, or a reconnect while the broker still
    had the old session), by routing id. Their SYNCs are answered 409, never
    412: after a 412 a client says HELLO again and resends its unconfirmed
    puts, and the other session's puts may have taken those seqs, so the
    resends would be dropped as duplicates and then confirmed. A ROUTER
    never reuses a routing id; the latest SUPERSEDED_MAX are kept. */
#define SUPERSEDED_MAX 1024

typedef struct superseded {
    uint8_t routing_id[256];
    size_t routing_id_size;
    char producer[AQ_NAME_MAX + 1];
    int used;
} superseded_t;

static void s_supersede(broker_t *self, aq_bytes_t routing_id, const char *producer)
{
    if (!self->superseded) {
        self->superseded = calloc(SUPERSEDED_MAX, sizeof *self->superseded);
        self->superseded_index = dict_new();
        if (!self->superseded || !self->superseded_index) {
            free(self->superseded);
            self->superseded = NULL;
            dict_destroy(&self->superseded_index);
            return;
        }
    }
    if (routing_id.size > sizeof self->superseded->routing_id
        || dict_get(self->superseded_index, routing_id.data, routing_id.size))
        return;
    superseded_t *entry = &self->superseded[self->superseded_next];
    self->superseded_next = (self->superseded_next + 1) % SUPERSEDED_MAX;
    if (entry->used)
        dict_delete(self->superseded_index, entry->routing_id, entry->routing_id_size);
    memcpy(entry->routing_id, routing_id.data, routing_id.size);
    entry->routing_id_size = routing_id.size;
    snprintf(entry->producer, sizeof entry->producer, "%s", producer);
    entry->used = !dict_set(self->superseded_index, routing_id.data, routing_id.size, entry);
}

const char *producers_superseded(broker_t *self, aq_bytes_t routing_id)
{
    if (!self->superseded_index)
        return NULL;
    const superseded_t *entry =
        dict_get(self->superseded_index, routing_id.data, routing_id.size);
    return entry ? entry->producer : NULL;
}

void producers_unsupersede(broker_t *self, aq_bytes_t routing_id)
{
    if (!self->superseded_index)
        return;
    superseded_t *entry = dict_get(self->superseded_index, routing_id.data, routing_id.size);
    if (!entry)
        return;
    dict_delete(self->superseded_index, routing_id.data, routing_id.size);
    entry->used = 0;
}

void producers_refuse_superseded(broker_t *self, aq_bytes_t routing_id, aq_bytes_t tag,
                                 const char *producer)
{
    broker_send_error(self, routing_id, AQ_CONFLICT, tag, aq_bytes_str(producer),
                      "another session said HELLO with this producer id: puts not confirmed "
                      "may be lost, and are not confirmed; do not send them again under "
                      "this id");
}

void producers_take_over(broker_t *self, producer_t *producer, const peer_t *old,
                         aq_bytes_t routing_id)
{
    if (old && (old->routing_id_size != routing_id.size
                || memcmp(old->routing_id, routing_id.data, routing_id.size)))
        s_supersede(self, (aq_bytes_t){old->routing_id, old->routing_id_size}, producer->id);
    list_node_t *node, *next;
    for (node = producer->syncs.next; node != &producer->syncs; node = next) {
        next = node->next;
        sync_wait_t *wait = list_entry(node, sync_wait_t, link);
        aq_bytes_t rid = {wait->routing_id, wait->routing_id_size};
        if (rid.size == routing_id.size && memcmp(rid.data, routing_id.data, rid.size) == 0)
            continue; /* the same DEALER saying HELLO again: its own */
        s_supersede(self, rid, producer->id);
        producers_refuse_superseded(self, rid, (aq_bytes_t){wait->tag, wait->tag_size},
                                    producer->id);
        s_remove_wait(producer, wait);
    }
}

/*  SYNCs that waited STALL_HEARTBEATS intervals while no put of their
    producer arrived (and none is held): their puts are not coming. */
static void s_check_stalled(broker_t *self, producer_t *producer, int64_t now)
{
    if (list_empty(&producer->syncs) || !list_empty(&producer->held))
        return;
    int64_t patience = STALL_HEARTBEATS * (int64_t) self->config.heartbeat_ms;
    list_node_t *node, *next;
    for (node = producer->syncs.next; node != &producer->syncs; node = next) {
        next = node->next;
        sync_wait_t *wait = list_entry(node, sync_wait_t, link);
        if (wait->positioned)
            continue; /* waits for the disk, not for puts */
        int64_t since = wait->since_ms > producer->progress_ms ? wait->since_ms
                                                                : producer->progress_ms;
        if (now - since < patience)
            continue;
        s_answer(self, producer, wait, 1);
        s_remove_wait(producer, wait);
    }
}

void producers_forget(broker_t *self, producer_t *producer)
{
    list_node_t *node;
    while ((node = list_first(&producer->syncs)))
        s_remove_wait(producer, list_entry(node, sync_wait_t, link));
    producers_free_held(self, producer);
    if (producer->peer)
        producer->peer->producer = NULL;
    s_idle_remove(self, producer);
    if (list_linked(&producer->durable_link))
        list_remove(&producer->durable_link);
    dict_delete(self->producers, producer->id, strlen(producer->id));
    free(producer);
}

typedef struct {
    broker_t *broker;
    producer_t **list;
    size_t count;
} sweep_t;

static void s_collect_syncing(void *ctx, void *value)
{
    sweep_t *sweep = ctx;
    producer_t *producer = value;
    if (!list_empty(&producer->syncs))
        sweep->list[sweep->count++] = producer;
}

/*  Producers idle without a session for PRODUCER_IDLE_MS are forgotten
    (oldest first: the idle list is in order), and stalled SYNCs answered. */
void producers_sweep(broker_t *self)
{
    int64_t now = broker_now_ms();
    list_node_t *node;
    while ((node = list_first(&self->idle_producers))) {
        producer_t *producer = list_entry(node, producer_t, idle_link);
        if (now - producer->last_seen_ms < PRODUCER_IDLE_MS)
            break;
        producers_forget(self, producer);
    }
    sweep_t sweep = {self, calloc(dict_size(self->producers) + 1, sizeof(producer_t *)), 0};
    if (!sweep.list)
        return;
    dict_each(self->producers, s_collect_syncing, &sweep);
    for (size_t i = 0; i < sweep.count; i++)
        s_check_stalled(self, sweep.list[i], now);
    free(sweep.list);
}

static void s_collect_all(void *ctx, void *value)
{
    sweep_t *sweep = ctx;
    sweep->list[sweep->count++] = value;
}

void producers_destroy_all(broker_t *self)
{
    free(self->superseded);
    self->superseded = NULL;
    dict_destroy(&self->superseded_index);
    sweep_t sweep = {self, calloc(dict_size(self->producers) + 1, sizeof(producer_t *)), 0};
    if (!sweep.list)
        return;
    dict_each(self->producers, s_collect_all, &sweep);
    for (size_t i = 0; i < sweep.count; i++)
        producers_forget(self, sweep.list[i]);
    free(sweep.list);
}

/* ---------------------------------------------------------- held puts */

void producers_block(producer_t *producer, queue_t *queue)
{
    if (producer->blocked_on == queue)
        return;
    if (producer->blocked_on)
        list_remove(&producer->blocked_link);
    producer->blocked_on = queue;
    if (queue)
        list_push_back(&queue->blocked, &producer->blocked_link);
}

void producers_free_held_put(broker_t *self, producer_t *producer, held_put_t *held)
{
    uint64_t left = held->count - held->skip;
    held->queue->held_count -= left;
    producer->held_count -= left;
    producer->held_bytes -= zmq_msg_size(&held->frame);
    self->held_total -= left;
    if (held->owner) {
        held->owner->held_puts -= left;
        held->owner->held_bytes -= zmq_msg_size(&held->frame);
        auth_owner_release(self->owners, held->owner);
    }
    list_remove(&held->link);
    zmq_msg_close(&held->frame);
    free(held);
}

void producers_free_held(broker_t *self, producer_t *producer)
{
    list_node_t *node;
    while ((node = list_first(&producer->held)))
        producers_free_held_put(self, producer, list_entry(node, held_put_t, link));
    producers_block(producer, NULL);
}

