/*  Delivering items: what leaves a queue's ready list, in which messages,
    to whom; leases that run out; joins answered; shutdowns. */
#include "dispatch.h"
#include "puts.h"
#include "sessions.h"

#include <czmq.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>

static peer_t *s_peer(consumer_t *consumer)
{
    return list_entry(consumer, peer_t, consumer);
}

static int s_taken_from(const item_t *item, const peer_t *peer)
{
    return item->taken_from && item->taken_from == (uint32_t) peer->serial;
}

/*  Up to `max` items from the front of the ready list for this consumer,
    left in place: it stops before an item this consumer let expire while
    another consumer could take it (the first item is taken regardless: the
    caller chose this consumer for it). */
static size_t s_take(queue_t *queue, peer_t *peer, item_t **items, size_t max)
{
    size_t count = 0;
    list_node_t *node = queue->ready.next;
    while (count < max && node != &queue->ready) {
        item_t *item = list_entry(node, item_t, link);
        if (count && s_taken_from(item, peer))
            break;
        items[count++] = item;
        node = node->next;
    }
    return count;
}

void broker_move(broker_t *self, item_t *item, item_state_t state)
{
    record_t record;
    state_effects_t effects;
    state_move(item, state, &record);
    /* The item exists and nobody holds it: only the journal can fail. */
    broker_apply_must(self, &record, &effects);
    if (effects.died)
        queue_count_dead(item->queue, item);
}

/*  Discards the item (an immediate shutdown): it counts as finished. */
static void s_discard(broker_t *self, item_t *item)
{
    record_t record;
    state_effects_t effects;
    state_gone(item, GONE_DISCARDED, &record);
    deadlines_cancel(&self->deadlines, &item->timer);
    broker_apply_must(self, &record, &effects);
}

/*  One message with `count` deliveries: ITEMS, or ITEM for a consumer that
    asked for single items (then count is 1). `recorded`: the deliveries'
    records are applied already (their attempts counted), and the message
    waits for them to be committed (a replica's leader). */
static aq_status_t s_send(broker_t *self, peer_t *peer, queue_t *queue, item_t **items,
                          size_t count, int64_t now_us, int recorded)
{
    aq_bytes_t rid = {peer->routing_id, peer->routing_id_size};
    uint64_t attempt_add = recorded ? 0 : 1;
    if (!peer->credit_batch) {
        item_t *item = items[0];
        aq_msg_t msg = {.cmd = AQ_CMD_ITEM};
        msg.queue = aq_bytes_str(queue->name);
        msg.id = item->id;
        msg.attempt = (uint64_t) item->attempts + attempt_add;
        msg.age_us = broker_age_us(item, now_us);
        msg.lease_ms = broker_lease_ms(item);
        msg.payload = (aq_bytes_t){item->data, item->size};
        msg.priority = item->priority;
        msg.has_priority = peer->with_priority;
        return recorded ? broker_send_logged(self, rid, &msg, NULL)
                        : broker_send(self, rid, &msg, NULL);
    }
    size_t size = 0;
    for (size_t i = 0; i < count; i++)
        size += AQ_ITEMS_ENTRY_HEADER + items[i]->size;
    zmq_msg_t batch;
    if (zmq_msg_init_size(&batch, size))
        return AQ_NOMEM;
    uint8_t *at = zmq_msg_data(&batch);
    for (size_t i = 0; i < count; i++) {
        item_t *item = items[i];
        aq_delivery_t delivery = {
            .id = item->id,
            .attempt = (uint32_t) (item->attempts + attempt_add),
            .age_us = broker_age_us(item, now_us),
            .lease_ms = (uint32_t) broker_lease_ms(item),
            .payload = {item->data, item->size},
        };
        at += aq_items_entry_write(at, &delivery);
    }
    aq_msg_t msg = {.cmd = AQ_CMD_ITEMS, .count = count};
    msg.queue = aq_bytes_str(queue->name);
    uint8_t priorities[AQ_LIST_MAX * 4]; /* count <= max-batch <= AQ_LIST_MAX */
    if (peer->with_priority) {
        for (size_t i = 0; i < count; i++)
            aq_put_u32(priorities + 4 * i, (uint32_t) items[i]->priority);
        msg.priorities = (aq_bytes_t){priorities, 4 * count};
    }
    aq_status_t rc = recorded ? broker_send_logged(self, rid, &msg, &batch)
                              : broker_send(self, rid, &msg, &batch);
    zmq_msg_close(&batch);
    return rc;
}

/*  The items are the consumer's now: recorded in flight, held, leased. */
static void s_delivered(broker_t *self, queue_t *queue, consumer_t *consumer, item_t **items,
                        size_t count, int64_t now_us)
{
    for (size_t i = 0; i < count; i++) {
        item_t *item = items[i];
        broker_move(self, item, ITEM_INFLIGHT);
        queue_hold(queue, consumer, item);
        if (item->attempts == 1)
            histogram_observe(&queue->to_delivery, broker_age_us(item, now_us));
        item->timer.kind = TIMER_LEASE;
        /* Cannot fail: room for every item's timer is reserved at put. */
        deadlines_set(&self->deadlines, &item->timer,
                      now_us / 1000 + (int64_t) broker_lease_ms(item));
    }
}

typedef struct {
    queue_t *queue;
    peer_t **peers;
    size_t count, capacity;
} consumers_t;

static void s_collect_consumer(void *ctx, void *value)
{
    consumers_t *consumers = ctx;
    peer_t *peer = value;
    if (peer->consumer.queue == consumers->queue && consumers->count < consumers->capacity)
        consumers->peers[consumers->count++] = peer;
}

/*  The sessions that consume `queue`, with credit or not (none if out of
    memory). The caller frees .peers. */
static consumers_t s_consumers_of(broker_t *self, queue_t *queue)
{
    consumers_t consumers = {queue, calloc(queue->consumer_count + 1, sizeof(peer_t *)), 0,
                             queue->consumer_count};
    if (consumers.peers)
        dict_each(self->peers, s_collect_consumer, &consumers);
    return consumers;
}

/*  Tells every consumer of a shut-down queue with nothing left that no
    item will come (Python's get raising QueueShutDown), once: those with
    credit and those without (a client of several shards has credit at some
    only, PROTOCOL.md 4.15). Once per queue: a walk over the sessions. */
static void s_tell_drained(broker_t *self, queue_t *queue)
{
    if (queue->state == QUEUE_OPEN || queue->drained_told || !queue_is_drained(queue))
        return;
    queue->drained_told = 1;
    consumers_t consumers = s_consumers_of(self, queue);
    for (size_t i = 0; i < consumers.count; i++) {
        peer_t *peer = consumers.peers[i];
        if (peer == self->untold)
            continue;
        broker_send_error(self, (aq_bytes_t){peer->routing_id, peer->routing_id_size},
                          AQ_SHUT_DOWN,
                          (aq_bytes_t){(const uint8_t *) peer->credit_tag, peer->credit_tag_size},
                          aq_bytes_str(queue->name), "queue shut down and empty");
    }
    free(consumers.peers);
}

/*  Ready items that no consumer has room for: every consumer that asked
    for READY (all of them without room, or the pass would have gone on)
    hears it, once (PROTOCOL.md 4.15). */
static void s_tell_ready(broker_t *self, queue_t *queue)
{
    list_node_t *node;
    while ((node = list_first(&queue->ready_waiters))) {
        consumer_t *consumer = list_entry(node, consumer_t, ready_link);
        list_remove(node);
        peer_t *peer = s_peer(consumer);
        aq_msg_t msg = {.cmd = AQ_CMD_READY, .queue = aq_bytes_str(queue->name)};
        broker_send(self, (aq_bytes_t){peer->routing_id, peer->routing_id_size}, &msg, NULL);
    }
}

/*  Consumers without credit are in neither list, so a consumer whose credit
    was used up is not visited; a consumer that cannot be sent to loses its
    session (and its items go back first in line). */
void broker_dispatch(broker_t *self, queue_t *queue)
{
    if (queue->state == QUEUE_DISCARDING) {
        list_node_t *node;
        while ((node = list_first(&queue->ready)))
            s_discard(self, list_entry(node, item_t, link));
        broker_release_joiners(self, queue);
    }
    if (self->handing_over)
        return; /* a leader about to hand its lead over delivers nothing more */
    int64_t now_us = broker_now_us();
    consumer_t *consumer;
    item_t *items[AQ_LIST_MAX];
    while (queue->ready_count && !queue->paused && (consumer = queue_next_consumer(queue))) {
        item_t *head = list_entry(queue->ready.next, item_t, link);
        if (s_taken_from(head, s_peer(consumer))) {
            consumer_t *other = queue_other_consumer(queue, consumer);
            if (other)
                consumer = other;
        }
        peer_t *peer = s_peer(consumer);
        uint64_t room = consumer->credit - consumer->hold_count;
        uint64_t max = peer->credit_batch ? peer->credit_batch : 1;
        size_t count = s_take(queue, peer, items, room < max ? (size_t) room : (size_t) max);
        if (self->replica) {
            /* A replica's leader: recorded first, sent once committed
               (PROTOCOL.md 4.16); a send that fails later loses the
               session, whose items then go back. */
            s_delivered(self, queue, consumer, items, count, now_us);
            if (s_send(self, peer, queue, items, count, now_us, 1) != AQ_OK)
                broker_doom_peer(self, peer, "out of memory");
            continue;
        }
        if (s_send(self, peer, queue, items, count, now_us, 0) != AQ_OK) {
            /* Nothing changed: the items are still first in line. */
            broker_doom_peer(self, peer, errno == EHOSTUNREACH ? "peer unreachable" : "peer too slow");
            continue;
        }
        s_delivered(self, queue, consumer, items, count, now_us);
    }
    if (queue->ready_count && !queue->paused && !list_empty(&queue->ready_waiters))
        s_tell_ready(self, queue);
    if (!list_empty(&queue->blocked))
        broker_unblock(self, queue);
    s_tell_drained(self, queue);
}

typedef struct {
    queue_t *queue;
    item_t **items;
    size_t count;
} delayed_t;

static void s_collect_delayed(void *ctx, item_t *item)
{
    delayed_t *delayed = ctx;
    if (item->queue == delayed->queue && item->state == ITEM_DELAYED)
        delayed->items[delayed->count++] = item;
}

/*  An immediate shutdown discards the delayed items at once, not when
    their delay ends. O(items held by the broker): once per queue shut. */
static void s_discard_delayed(broker_t *self, queue_t *queue)
{
    if (!queue->delayed_count)
        return;
    delayed_t delayed = {queue, malloc(queue->delayed_count * sizeof(item_t *)), 0};
    if (!delayed.items) {
        log_line("out of memory: the delayed items of %s are discarded when their delay ends",
                 queue->name);
        return;
    }
    store_each(self->store, s_collect_delayed, &delayed);
    for (size_t i = 0; i < delayed.count; i++)
        s_discard(self, delayed.items[i]);
    free(delayed.items);
}

void broker_shut_queue(broker_t *self, queue_t *queue, queue_state_t state)
{
    if (state <= queue->state)
        return; /* draining can become discarding, never the other way */
    record_t record = {.type = RECORD_QUEUE, .state = (uint8_t) state,
                       .queue = aq_bytes_str(queue->name), .next = queue->ledger.next,
                       .front = queue->front, .back = queue->back,
                       .dead_back = queue->dead_back};
    state_effects_t effects;
    if (broker_apply(self, &record, &effects)) {
        log_line("out of memory: %s could not be shut down", queue->name);
        return;
    }
    if (state == QUEUE_DISCARDING) {
        s_discard_delayed(self, queue);
        list_node_t *lists[2] = {&queue->joiners_before, &queue->joiners_all};
        for (int i = 0; i < 2; i++) {
            list_node_t *node;
            while ((node = list_first(lists[i]))) {
                joiner_t *joiner = list_entry(node, joiner_t, link);
                broker_send_error(self, (aq_bytes_t){joiner->routing_id, joiner->routing_id_size},
                                  AQ_SHUT_DOWN, (aq_bytes_t){joiner->tag, joiner->tag_size},
                                  (aq_bytes_t){0},
                                  "queue shut down at once: not every item was processed");
                queue_remove_joiner(queue, joiner);
                broker_free_joiner(self, joiner);
            }
        }
    }
    broker_dispatch(self, queue);
}

typedef struct {
    broker_t *broker;
    queue_state_t state;
} shut_all_t;

static void s_shut_each(void *ctx, void *value)
{
    shut_all_t *shut = ctx;
    broker_shut_queue(shut->broker, value, shut->state);
}

void broker_shut_all(broker_t *self, queue_state_t state)
{
    shut_all_t shut = {self, state};
    dict_each(self->queues, s_shut_each, &shut);
    /* Then queues made later refuse puts too. */
    record_t record = {.type = RECORD_QUEUE, .state = (uint8_t) state};
    state_effects_t effects;
    broker_apply(self, &record, &effects);
}

void broker_release_joiners(broker_t *self, queue_t *queue)
{
    joiner_t *joiner;
    while ((joiner = queue_take_satisfied(queue))) {
        aq_msg_t msg = {.cmd = AQ_CMD_JOINED};
        msg.tag = (aq_bytes_t){joiner->tag, joiner->tag_size};
        msg.queue = aq_bytes_str(queue->name);
        msg.count = joiner->waited;
        msg.dead = joiner->dead;
        /* Once the acks it waited for are on disk: a join answered is
           never undone by a crash. */
        broker_reply_logged(self, (aq_bytes_t){joiner->routing_id, joiner->routing_id_size}, &msg);
        broker_free_joiner(self, joiner);
    }
}

int broker_requeue_dead_item(broker_t *self, item_t *item)
{
    queue_t *queue = item->queue;
    /* To the back, numbered as a new put, its attempts reset. */
    record_t record = {.type = RECORD_STATE, .id = item->id, .seq = queue->ledger.next,
                       .rank = queue->back + 1, .state = ITEM_QUEUED, .item_ref = item};
    state_effects_t effects;
    if (broker_apply(self, &record, &effects)) {
        log_line("out of memory: some dead items of %s stay dead", queue->name);
        return -1;
    }
    broker_touch_queue(self, queue);
    return 0;
}

uint64_t broker_requeue_dead(broker_t *self, queue_t *queue)
{
    uint64_t moved = 0;
    list_node_t *node;
    while ((node = list_first(&queue->dead))
           && broker_requeue_dead_item(self, list_entry(node, item_t, link)) == 0)
        moved++;
    broker_touch_queue(self, queue);
    return moved;
}

void broker_delete_dead_item(broker_t *self, item_t *item)
{
    record_t record;
    state_effects_t effects;
    state_gone(item, GONE_PURGED, &record);
    broker_apply_must(self, &record, &effects);
}

uint64_t broker_purge_dead(broker_t *self, queue_t *queue)
{
    uint64_t purged = 0;
    list_node_t *node;
    while ((node = list_first(&queue->dead))) {
        broker_delete_dead_item(self, list_entry(node, item_t, link));
        purged++;
    }
    return purged;
}

void broker_pause_queue(broker_t *self, queue_t *queue, int paused)
{
    if (queue->paused == paused)
        return;
    record_t record = {.type = RECORD_PAUSE, .state = (uint8_t) paused,
                       .queue = aq_bytes_str(queue->name)};
    state_effects_t effects;
    broker_apply_must(self, &record, &effects);
    broker_touch_queue(self, queue);
}

static void s_reopened(void *ctx, void *value)
{
    queue_t *queue = value;
    queue->drained_told = 0; /* its consumers' gets wait again */
    broker_touch_queue(ctx, queue);
}

int broker_reopen_queue(broker_t *self, queue_t *queue)
{
    if (self->stopping)
        return -1;
    if (queue && queue->state == QUEUE_OPEN)
        return 0;
    record_t record = {.type = RECORD_REOPEN, .queue = aq_bytes_str(queue ? queue->name : "")};
    state_effects_t effects;
    broker_apply_must(self, &record, &effects);
    if (queue)
        s_reopened(self, queue);
    else
        dict_each(self->queues, s_reopened, self);
    return 0;
}

uint64_t broker_purge_queue(broker_t *self, queue_t *queue)
{
    uint64_t before = queue->ready_count + queue->delayed_count;
    s_discard_delayed(self, queue);
    list_node_t *node;
    while ((node = list_first(&queue->ready)))
        s_discard(self, list_entry(node, item_t, link));
    broker_release_joiners(self, queue);
    broker_unblock(self, queue); /* room for puts held for it */
    broker_touch_queue(self, queue);
    return before - (queue->ready_count + queue->delayed_count);
}

uint64_t broker_delete_queue(broker_t *self, queue_t *queue)
{
    uint64_t held = queue->ready_count + queue->inflight_count + queue->delayed_count
                    + queue->dead_count;
    queue->drained_told = 1; /* its consumers hear "queue deleted" below, once */
    broker_shut_queue(self, queue, QUEUE_DISCARDING); /* queued, delayed, joins */
    broker_unblock(self, queue);                      /* held puts: refused */
    /* Its consumers let go of what they hold, which is discarded, and of the
       queue; they hear it is shut down. */
    consumers_t consumers = s_consumers_of(self, queue);
    for (size_t i = 0; i < consumers.count; i++) {
        peer_t *peer = consumers.peers[i];
        list_node_t *node;
        while ((node = list_first(&peer->consumer.holds))) {
            item_t *item = list_entry(node, item_t, link);
            deadlines_cancel(&self->deadlines, &item->timer);
            queue_release(queue, &peer->consumer, item);
            s_discard(self, item);
        }
        queue_detach(queue, &peer->consumer);
        broker_send_error(self, (aq_bytes_t){peer->routing_id, peer->routing_id_size},
                          AQ_SHUT_DOWN,
                          (aq_bytes_t){(const uint8_t *) peer->credit_tag, peer->credit_tag_size},
                          aq_bytes_str(queue->name), "queue deleted");
    }
    free(consumers.peers);
    broker_purge_dead(self, queue);
    broker_release_joiners(self, queue);
    broker_pause_queue(self, queue, 0);
    if (list_linked(&queue->dirty_link))
        list_remove(&queue->dirty_link);
    char name[AQ_NAME_MAX + 1]; /* the record outlives the queue it names */
    memcpy(name, queue->name, sizeof name);
    if (queue_is_unused(queue) && !broker_log_snapshot_busy(self)) {
        record_t record = {.type = RECORD_FORGET, .queue = aq_bytes_str(name)};
        state_effects_t effects;
        if (broker_apply(self, &record, &effects) == 0)
            self->queues_forgotten++;
    }
    return held;
}

void broker_die(broker_t *self, item_t *item, death_cause_t cause, aq_bytes_t text)
{
    record_t record;
    state_effects_t effects;
    state_die(item, cause, broker_wall_ms(), text, &record);
    broker_apply_must(self, &record, &effects);
    if (effects.died)
        queue_count_dead(item->queue, item);
    char escaped[EPITAPH_TEXT_MAX * 4 + 1];
    ratelog_line(&self->dead_letters, broker_now_ms(),
                 "item %llu of %s dead-lettered after %u deliveries (%s%s%s)",
                 (unsigned long long) item->id, item->queue->name, item->attempts,
                 state_death_names[cause], record.text.size ? ": " : "",
                 log_escape(escaped, sizeof escaped, (const char *) record.text.data,
                            record.text.size));
}

/*  The holder lets go of the item; it goes where `delay_ms` and its
    attempts say (dead of `cause`, with `text`, if they are used up). */
static void s_give_back(broker_t *self, peer_t *peer, item_t *item, uint64_t delay_ms,
                        death_cause_t cause, aq_bytes_t text)
{
    queue_t *queue = item->queue;
    deadlines_cancel(&self->deadlines, &item->timer);
    item->taken_from = (uint32_t) peer->serial;
    queue_release(queue, &peer->consumer, item);
    broker_touch_queue(self, queue);
    if (queue->max_attempts && item->attempts >= queue->max_attempts) {
        broker_die(self, item, cause, text);
        return;
    }
    if (delay_ms == 0) {
        broker_move(self, item, ITEM_QUEUED);
        return;
    }
    record_t record;
    state_effects_t effects;
    state_move(item, ITEM_DELAYED, &record);
    record.until_ms = (uint64_t) (broker_wall_ms() + (int64_t) delay_ms);
    broker_apply_must(self, &record, &effects);
    item->timer.kind = TIMER_DELAY;
    deadlines_set(&self->deadlines, &item->timer, broker_now_ms() + (int64_t) delay_ms);
}

void broker_take_back(broker_t *self, item_t *item, uint64_t delay_ms, death_cause_t cause,
                      aq_bytes_t text)
{
    queue_t *queue = item->queue;
    s_give_back(self, s_peer(item->holder), item, delay_ms, cause, text);
    broker_release_joiners(self, queue); /* it may have died */
}

void broker_give_back_all(broker_t *self, peer_t *peer)
{
    /* Newest first to the front, so the oldest ends up delivered first. */
    list_node_t *node;
    while ((node = list_last(&peer->consumer.holds)))
        s_give_back(self, peer, list_entry(node, item_t, link), 0, DEATH_SESSION,
                    (aq_bytes_t){0});
}

/*  A lease ran out: the item goes to another consumer if one can take it.
    A consumer that lets --max-expired leases run out in a row, acking
    nothing in between, is not reading (its thread hung, say): its credit is
    withdrawn until it sends CREDIT again (RabbitMQ's consumer timeout). */
void broker_on_lease_expired(broker_t *self, item_t *item)
{
    peer_t *peer = s_peer(item->holder);
    queue_t *queue = item->queue;
    char name[AQ_NAME_MAX * 4 + 1];
    ratelog_line(&self->expiries, broker_now_ms(),
                 "item %llu, delivered to %s, not acked in time: taken back",
                 (unsigned long long) item->id,
                 log_escape(name, sizeof name, peer->client_id, strlen(peer->client_id)));
    queue->expired_total++;
    broker_take_back(self, item, 0, DEATH_LEASE, (aq_bytes_t){0});
    if (++peer->expired_streak < self->config.max_expired || !peer->consumer.credit)
        return;
    peer->expired_streak = 0;
    queue_set_credit(queue, &peer->consumer, 0);
    char text[160];
    snprintf(text, sizeof text,
             "%llu leases expired in a row without an ack: credit withdrawn; send CREDIT to "
             "resume",
             (unsigned long long) self->config.max_expired);
    broker_send_error(self, (aq_bytes_t){peer->routing_id, peer->routing_id_size},
                      AQ_LEASE_EXPIRED,
                      (aq_bytes_t){(const uint8_t *) peer->credit_tag, peer->credit_tag_size},
                      aq_bytes_str(queue->name), text);
}
