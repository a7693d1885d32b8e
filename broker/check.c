/*  The invariants of docs/DESIGN.md, checked against the whole state: what
    the fuzzer runs after every message. O(items + sessions + producers):
    never called by the broker itself. */
#include "check.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "producers.h"
#include "sessions.h"

typedef struct {
    broker_t *broker;
    char *why;
    size_t size;
    int failed;
    uint64_t items;       /* counted through the queues */
    uint64_t delayed;     /* counted through the store, per the queue being checked */
    const queue_t *queue; /* the queue whose delayed items are being counted */
    uint64_t held;        /* puts held, counted through the producers */
} check_t;

static void s_fail(check_t *check, const char *format, ...)
{
    if (check->failed++)
        return; /* the first one says most */
    va_list args;
    va_start(args, format);
    vsnprintf(check->why, check->size, format, args);
    va_end(args);
}

static void s_count_delayed(void *ctx, item_t *item)
{
    check_t *check = ctx;
    if (item->queue == check->queue && item->state == ITEM_DELAYED) {
        check->delayed++;
        if (item->timer.index == DEADLINE_UNSET || item->timer.kind != TIMER_DELAY)
            s_fail(check, "delayed item %llu has no delay timer", (unsigned long long) item->id);
        if (list_linked(&item->link))
            s_fail(check, "delayed item %llu is in a list", (unsigned long long) item->id);
    }
}

/*  Items in one list: all of `state`, of this queue, held by `holder`. */
static uint64_t s_check_list(check_t *check, const list_node_t *list, const queue_t *queue,
                             item_state_t state, const consumer_t *holder)
{
    uint64_t count = 0;
    for (const list_node_t *node = list->next; node != list; node = node->next, count++) {
        const item_t *item = list_entry(node, item_t, link);
        /* Queued and dead lists are in rank order (queued: by priority
           first), within the queue's ends. */
        if (state == ITEM_QUEUED || state == ITEM_DEAD) {
            const item_t *prev = node->prev != list ? list_entry(node->prev, item_t, link) : NULL;
            int64_t low = state == ITEM_QUEUED ? queue->front : INT64_MIN;
            int64_t high = state == ITEM_QUEUED ? queue->back : queue->dead_back;
            int same = !prev || state == ITEM_DEAD || prev->priority == item->priority;
            if ((prev && !same && prev->priority > item->priority)
                || (prev && same && prev->rank >= item->rank) || item->rank < low
                || item->rank > high)
                s_fail(check, "item %llu of %s: rank %lld out of order",
                       (unsigned long long) item->id, queue->name, (long long) item->rank);
        }
        if (item->queue != queue || item->state != state || item->holder != holder)
            s_fail(check, "item %llu of %s: in the wrong list (state %d)",
                   (unsigned long long) item->id, queue->name, item->state);
        int timed = item->timer.index != DEADLINE_UNSET;
        if (timed != (state == ITEM_INFLIGHT))
            s_fail(check, "item %llu of %s: lease timer %s", (unsigned long long) item->id,
                   queue->name, timed ? "running while not delivered" : "missing");
        if (store_find(check->broker->store, item->id) != item)
            s_fail(check, "item %llu of %s is not in the store", (unsigned long long) item->id,
                   queue->name);
        if (state != ITEM_DEAD && !ledger_is_outstanding(&queue->ledger, item->seq))
            s_fail(check, "item %llu of %s is not outstanding in the ledger",
                   (unsigned long long) item->id, queue->name);
    }
    return count;
}

/*  The bands: one per priority of the ready items, in order, each the
    first and last of its run; none when every ready item is of priority 0. */
static void s_check_bands(check_t *check, const queue_t *queue)
{
    const list_node_t *node = queue->ready.next;
    if (!queue->band_count) {
        for (; node != &queue->ready; node = node->next)
            if (list_entry(node, item_t, link)->priority)
                s_fail(check, "%s has a ready item of priority %d but no bands", queue->name,
                       list_entry(node, item_t, link)->priority);
        return;
    }
    for (uint32_t i = 0; i < queue->band_count; i++) {
        const band_t *band = &queue->bands[i];
        if (i && queue->bands[i - 1].priority >= band->priority)
            s_fail(check, "%s: bands out of order", queue->name);
        if (node == &queue->ready || list_entry(node, item_t, link) != band->first)
            s_fail(check, "%s: band %d does not start where its run does", queue->name,
                   band->priority);
        while (node != &queue->ready && list_entry(node, item_t, link)->priority == band->priority
               && list_entry(node, item_t, link) != band->last)
            node = node->next;
        if (node == &queue->ready || list_entry(node, item_t, link) != band->last) {
            s_fail(check, "%s: band %d does not end where its run does", queue->name,
                   band->priority);
            return;
        }
        node = node->next;
    }
    if (node != &queue->ready)
        s_fail(check, "%s: ready items after the last band", queue->name);
    if (queue->band_count == 1 && queue->bands[0].priority == 0)
        s_fail(check, "%s keeps a band for priority 0 alone", queue->name);
}

static void s_check_consumers(check_t *check, const queue_t *queue)
{
    /* Consumers with credit left are in idle (holding nothing) or busy. */
    const list_node_t *lists[2] = {&queue->idle, &queue->busy};
    for (int i = 0; i < 2; i++)
        for (const list_node_t *node = lists[i]->next; node != lists[i]; node = node->next) {
            const consumer_t *consumer = list_entry(node, consumer_t, link);
            if (consumer->queue != queue || consumer->hold_count >= consumer->credit
                || (i == 0) != (consumer->hold_count == 0))
                s_fail(check, "a consumer of %s is in the wrong list", queue->name);
        }
}

typedef struct {
    check_t *check;
    const queue_t *queue;
    uint64_t inflight;
    uint64_t consumers;
} peer_sum_t;

static void s_sum_peer(void *ctx, void *value)
{
    peer_sum_t *sum = ctx;
    const peer_t *peer = value;
    const consumer_t *consumer = &peer->consumer;
    if (consumer->queue != sum->queue)
        return;
    sum->consumers++;
    uint64_t held = s_check_list(sum->check, &consumer->holds, sum->queue, ITEM_INFLIGHT, consumer);
    if (held != consumer->hold_count)
        s_fail(sum->check, "%s holds %llu items but counts %llu", peer->client_id,
               (unsigned long long) held, (unsigned long long) consumer->hold_count);
    int listed = list_linked(&consumer->link);
    if (listed != (consumer->hold_count < consumer->credit))
        s_fail(sum->check, "%s with credit %llu holding %llu is %s", peer->client_id,
               (unsigned long long) consumer->credit, (unsigned long long) consumer->hold_count,
               listed ? "offered items" : "forgotten");
    sum->inflight += held;
}

/*  No waiting join is already satisfied (it would have been answered). */
static void s_check_joiners(check_t *check, const queue_t *queue)
{
    uint64_t count = 0;
    const list_node_t *lists[2] = {&queue->joiners_before, &queue->joiners_all};
    for (int i = 0; i < 2; i++)
        for (const list_node_t *node = lists[i]->next; node != lists[i]; node = node->next) {
            const joiner_t *joiner = list_entry(node, joiner_t, link);
            count++;
            int satisfied = i == 0 ? queue->ledger.low >= joiner->end
                                   : queue->ledger.outstanding == 0;
            if (satisfied)
                s_fail(check, "a join on %s is satisfied but still waits", queue->name);
            if (queue->state == QUEUE_DISCARDING)
                s_fail(check, "a join waits on %s, shut down at once", queue->name);
        }
    if (count != queue->joiner_count)
        s_fail(check, "%s counts %llu joins, has %llu", queue->name,
               (unsigned long long) queue->joiner_count, (unsigned long long) count);
}

static void s_check_queue(void *ctx, void *value)
{
    check_t *check = ctx;
    queue_t *queue = value;
    uint64_t ready = s_check_list(check, &queue->ready, queue, ITEM_QUEUED, NULL);
    s_check_bands(check, queue);
    uint64_t dead = s_check_list(check, &queue->dead, queue, ITEM_DEAD, NULL);
    if (ready != queue->ready_count || dead != queue->dead_count)
        s_fail(check, "%s counts %llu queued and %llu dead, has %llu and %llu", queue->name,
               (unsigned long long) queue->ready_count, (unsigned long long) queue->dead_count,
               (unsigned long long) ready, (unsigned long long) dead);
    peer_sum_t sum = {check, queue, 0, 0};
    dict_each(check->broker->peers, s_sum_peer, &sum);
    s_check_consumers(check, queue);
    if (sum.inflight != queue->inflight_count || sum.consumers != queue->consumer_count)
        s_fail(check, "%s counts %llu in flight and %llu consumers, has %llu and %llu",
               queue->name, (unsigned long long) queue->inflight_count,
               (unsigned long long) queue->consumer_count, (unsigned long long) sum.inflight,
               (unsigned long long) sum.consumers);
    check->queue = queue;
    check->delayed = 0;
    store_each(check->broker->store, s_count_delayed, check);
    if (check->delayed != queue->delayed_count)
        s_fail(check, "%s counts %llu delayed, has %llu", queue->name,
               (unsigned long long) queue->delayed_count, (unsigned long long) check->delayed);
    uint64_t outstanding = ready + sum.inflight + check->delayed;
    if (outstanding != queue->ledger.outstanding)
        s_fail(check, "%s: %llu items outstanding, the ledger says %llu", queue->name,
               (unsigned long long) outstanding, (unsigned long long) queue->ledger.outstanding);
    check->items += outstanding + dead;
    s_check_joiners(check, queue);
}

static void s_check_producer(void *ctx, void *value)
{
    check_t *check = ctx;
    const producer_t *producer = value;
    uint64_t held = 0;
    for (const list_node_t *node = producer->held.next; node != &producer->held;
         node = node->next) {
        const held_put_t *put = list_entry(node, held_put_t, link);
        if (put->skip >= put->count)
            s_fail(check, "producer %s keeps a held put with nothing left", producer->id);
        held += put->count - put->skip;
    }
    if (held != producer->held_count)
        s_fail(check, "producer %s counts %llu held puts, has %llu", producer->id,
               (unsigned long long) producer->held_count, (unsigned long long) held);
    if ((held != 0) != (producer->blocked_on != NULL))
        s_fail(check, "producer %s holds %llu puts but is %sblocked", producer->id,
               (unsigned long long) held, producer->blocked_on ? "" : "not ");
    if (producers_done(producer) >= producer->next_seq)
        s_fail(check, "producer %s: done past what was received", producer->id);
    if (producer->peer && producer->peer->producer != producer)
        s_fail(check, "producer %s and its session disagree", producer->id);
    check->held += held;
}

static void s_check_peer(void *ctx, void *value)
{
    check_t *check = ctx;
    const peer_t *peer = value;
    if (peer->dropped)
        s_fail(check, "dropped session %s is still in the table", peer->client_id);
    if (dict_get(check->broker->clients, peer->client_id, strlen(peer->client_id)) != peer)
        s_fail(check, "session %s is not found by its client id", peer->client_id);
}

int broker_check(broker_t *self, char *why, size_t size)
{
    check_t check = {.broker = self, .why = why, .size = size};
    dict_each(self->queues, s_check_queue, &check);
    if (check.items != store_count(self->store))
        s_fail(&check, "the store holds %zu items, the queues %llu", store_count(self->store),
               (unsigned long long) check.items);
    dict_each(self->producers, s_check_producer, &check);
    if (check.held != self->held_total)
        s_fail(&check, "%llu puts held, counted %llu", (unsigned long long) self->held_total,
               (unsigned long long) check.held);
    dict_each(self->peers, s_check_peer, &check);
    if (dict_size(self->clients) != dict_size(self->peers))
        s_fail(&check, "%zu sessions but %zu client ids", dict_size(self->peers),
               dict_size(self->clients));
    return check.failed ? -1 : 0;
}
