/*  Producers by id: which of their puts have arrived, and the SYNCs that
    wait for the rest. Puts travel on PUSH/PULL and SYNCs on DEALER/ROUTER,
    and ZeroMQ does not order the two, so a SYNC may arrive before the puts
    it covers: it waits here until they do.

    Puts are taken strictly in sequence (go-back-N): a put below next_seq is
    a resend of one already received and is dropped; a put above it means
    some were lost on the way (a connection broke), so it is dropped too,
    and the waiting SYNCs are told LOST at once; the producer then resends
    everything unconfirmed, from its oldest, and the gap fills in order. */
#include "broker.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SYNCS_PER_PRODUCER 16
/*  A producer with no session and no pending SYNC is forgotten after this
    long without a put. */
#define PRODUCER_IDLE_MS (10 * 60 * 1000)

producer_t *producers_get(broker_t *self, aq_bytes_t id, int create)
{
    producer_t *producer = dict_get(self->producers, id.data, id.size);
    if (producer || !create)
        return producer;
    producer = calloc(1, sizeof *producer);
    if (!producer)
        return NULL;
    memcpy(producer->id, id.data, id.size);
    producer->next_seq = 1; /* HELLO sets where a returning producer resumes */
    producer->last_seen_ms = broker_now_ms();
    list_init(&producer->syncs);
    if (dict_set(self->producers, id.data, id.size, producer)) {
        free(producer);
        return NULL;
    }
    peer_t *peer = dict_get(self->clients, id.data, id.size);
    if (peer) {
        producer->peer = peer;
        peer->producer = producer;
    }
    return producer;
}

static void s_answer(broker_t *self, producer_t *producer, const uint8_t *routing_id,
                     size_t routing_id_size, aq_bytes_t tag, uint64_t seq)
{
    if (producer->lost_from && producer->lost_from <= seq) {
        char text[160];
        snprintf(text, sizeof text, "puts from seq %llu on never reached the broker: "
                 "resend from there",
                 (unsigned long long) producer->lost_from);
        broker_send_error(self, routing_id, routing_id_size, AQ_LOST, tag, text);
        return;
    }
    aq_msg_t reply = {.cmd = AQ_CMD_SYNCED};
    reply.tag = tag;
    reply.producer = aq_bytes_str(producer->id);
    reply.seq = seq;
    broker_send(self, routing_id, routing_id_size, &reply, NULL);
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

/*  Answers every SYNC still waiting: LOST, since the puts they wait for
    will only come again if the producer resends them. */
static void s_answer_all(broker_t *self, producer_t *producer)
{
    list_node_t *node;
    while ((node = list_first(&producer->syncs))) {
        sync_wait_t *wait = list_entry(node, sync_wait_t, link);
        s_answer(self, producer, wait->routing_id, wait->routing_id_size,
                 (aq_bytes_t){wait->tag, wait->tag_size}, wait->seq);
        list_remove(node);
        free(wait);
    }
}

int producers_check(broker_t *self, producer_t *producer, uint64_t seq)
{
    producer->last_seen_ms = broker_now_ms();
    if (seq < producer->next_seq)
        return 0; /* a resend of a put already received */
    if (seq == producer->next_seq)
        return 1;
    if (!producer->lost_from) {
        producer->lost_from = producer->next_seq;
        broker_log(self, "producer %s: put %llu arrived while %llu was expected: "
                         "dropping until it resends from there",
                   producer->id, (unsigned long long) seq,
                   (unsigned long long) producer->next_seq);
        s_answer_all(self, producer);
    }
    return 0;
}

void producers_received(broker_t *self, producer_t *producer, uint64_t seq)
{
    producer->next_seq = seq + 1;
    producer->lost_from = 0;
    list_node_t *node;
    while ((node = list_first(&producer->syncs))) {
        sync_wait_t *wait = list_entry(node, sync_wait_t, link);
        if (wait->seq >= producer->next_seq)
            break;
        s_answer(self, producer, wait->routing_id, wait->routing_id_size,
                 (aq_bytes_t){wait->tag, wait->tag_size}, wait->seq);
        list_remove(node);
        free(wait);
    }
}

void producers_sync(broker_t *self, producer_t *producer, aq_bytes_t routing_id,
                    aq_bytes_t tag, uint64_t seq)
{
    if (seq < producer->next_seq || producer->lost_from) {
        s_answer(self, producer, routing_id.data, routing_id.size, tag, seq);
        return;
    }
    size_t waiting = 0;
    list_node_t *node;
    for (node = producer->syncs.next; node != &producer->syncs; node = node->next)
        waiting++;
    sync_wait_t *wait = waiting < SYNCS_PER_PRODUCER ? calloc(1, sizeof *wait) : NULL;
    if (!wait) {
        broker_send_error(self, routing_id.data, routing_id.size, AQ_LIMIT, tag,
                          "too many SYNCs waiting for this producer");
        return;
    }
    wait->seq = seq;
    memcpy(wait->routing_id, routing_id.data, routing_id.size);
    wait->routing_id_size = routing_id.size;
    memcpy(wait->tag, tag.data, tag.size);
    wait->tag_size = tag.size;
    /* Keep the list ordered by seq: insert before the first larger one. */
    for (node = producer->syncs.next; node != &producer->syncs; node = node->next)
        if (list_entry(node, sync_wait_t, link)->seq > seq)
            break;
    list_insert_between(&wait->link, node->prev, node);
}

void producers_forget(broker_t *self, producer_t *producer)
{
    list_node_t *node;
    while ((node = list_first(&producer->syncs))) {
        list_remove(node);
        free(list_entry(node, sync_wait_t, link));
    }
    if (producer->peer)
        producer->peer->producer = NULL;
    dict_delete(self->producers, producer->id, strlen(producer->id));
    free(producer);
}

typedef struct {
    producer_t **list;
    size_t count;
    int64_t before_ms;
} sweep_t;

static void s_collect_idle(void *ctx, void *value)
{
    sweep_t *sweep = ctx;
    producer_t *producer = value;
    if (!producer->peer && list_empty(&producer->syncs)
        && producer->last_seen_ms < sweep->before_ms)
        sweep->list[sweep->count++] = producer;
}

static void s_collect_all(void *ctx, void *value)
{
    sweep_t *sweep = ctx;
    sweep->list[sweep->count++] = value;
}

static void s_forget_collected(broker_t *self, void (*collect)(void *, void *))
{
    sweep_t sweep = {calloc(dict_size(self->producers) + 1, sizeof(producer_t *)), 0,
                     broker_now_ms() - PRODUCER_IDLE_MS};
    if (!sweep.list)
        return; /* try again at the next sweep */
    dict_each(self->producers, collect, &sweep);
    for (size_t i = 0; i < sweep.count; i++)
        producers_forget(self, sweep.list[i]);
    free(sweep.list);
}

void producers_sweep(broker_t *self)
{
    s_forget_collected(self, s_collect_idle);
}

void producers_destroy_all(broker_t *self)
{
    s_forget_collected(self, s_collect_all);
}
