#include "queue.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

const char *const queue_refusal_names[REFUSED_REASONS] = {
    "shut_down", "too_big", "forbidden", "limit", "storage", "malformed", "internal"};

queue_t *queue_new(const char *name, uint64_t maxsize, uint64_t max_attempts, uint64_t lease_ms)
{
    assert(aq_name_is_valid((const uint8_t *) name, strlen(name)));
    queue_t *self = calloc(1, sizeof *self);
    if (!self)
        return NULL;
    if (ledger_init(&self->ledger)) {
        free(self);
        return NULL;
    }
    strcpy(self->name, name);
    self->maxsize = maxsize;
    self->max_attempts = max_attempts;
    self->lease_ms = lease_ms;
    list_init(&self->dead);
    list_init(&self->ready);
    list_init(&self->idle);
    list_init(&self->busy);
    list_init(&self->ready_waiters);
    list_init(&self->joiners_before);
    list_init(&self->joiners_all);
    list_init(&self->blocked);
    list_init(&self->dirty_link);
    return self;
}

void queue_destroy(queue_t **self_p)
{
    queue_t *self = *self_p;
    if (!self)
        return;
    assert(self->joiner_count == 0 && self->consumer_count == 0);
    ledger_fini(&self->ledger);
    free(self->bands);
    free(self);
    *self_p = NULL;
}

int queue_is_full(const queue_t *self)
{
    return self->maxsize && self->ready_count + self->delayed_count >= self->maxsize;
}

uint64_t queue_room(const queue_t *self)
{
    if (!self->maxsize)
        return UINT64_MAX;
    uint64_t waiting = self->ready_count + self->delayed_count;
    return waiting >= self->maxsize ? 0 : self->maxsize - waiting;
}

int queue_is_unused(const queue_t *self)
{
    return !self->paused && self->ready_count == 0 && self->inflight_count == 0
           && self->delayed_count == 0 && self->dead_count == 0 && self->held_count == 0
           && self->consumer_count == 0 && self->joiner_count == 0 && list_empty(&self->blocked);
}

int queue_is_drained(const queue_t *self)
{
    return self->ready_count == 0 && self->inflight_count == 0 && self->delayed_count == 0;
}

void queue_count_dead(queue_t *self, const item_t *item)
{
    list_node_t *node;
    for (node = self->joiners_before.next; node != &self->joiners_before; node = node->next) {
        joiner_t *joiner = list_entry(node, joiner_t, link);
        if (item->seq < joiner->end)
            joiner->dead++;
    }
    for (node = self->joiners_all.next; node != &self->joiners_all; node = node->next)
        list_entry(node, joiner_t, link)->dead++;
}

void consumer_init(consumer_t *consumer)
{
    memset(consumer, 0, sizeof *consumer);
    list_init(&consumer->holds);
    list_init(&consumer->link);
    list_init(&consumer->ready_link);
}

/*  Puts the consumer where it belongs: at the back of idle or busy, or in
    no list when it has no credit left. */
static void s_reorder(queue_t *self, consumer_t *consumer)
{
    if (list_linked(&consumer->link))
        list_remove(&consumer->link);
    if (consumer->hold_count >= consumer->credit)
        return;
    list_push_back(consumer->hold_count ? &self->busy : &self->idle, &consumer->link);
}

void queue_attach(queue_t *self, consumer_t *consumer)
{
    assert(!consumer->queue && consumer->hold_count == 0);
    consumer->queue = self;
    self->consumer_count++;
    s_reorder(self, consumer);
}

void queue_detach(queue_t *self, consumer_t *consumer)
{
    assert(consumer->queue == self && consumer->hold_count == 0);
    if (list_linked(&consumer->link))
        list_remove(&consumer->link);
    if (list_linked(&consumer->ready_link))
        list_remove(&consumer->ready_link);
    consumer->queue = NULL;
    self->consumer_count--;
}

consumer_t *queue_next_consumer(const queue_t *self)
{
    list_node_t *node = list_first(&self->idle);
    if (!node)
        node = list_first(&self->busy);
    return node ? list_entry(node, consumer_t, link) : NULL;
}

consumer_t *queue_other_consumer(const queue_t *self, const consumer_t *not)
{
    const list_node_t *lists[2] = {&self->idle, &self->busy};
    for (int i = 0; i < 2; i++)
        for (const list_node_t *node = lists[i]->next; node != lists[i]; node = node->next)
            if (list_entry(node, consumer_t, link) != not)
                return list_entry(node, consumer_t, link);
    return NULL;
}

void queue_hold(queue_t *self, consumer_t *consumer, item_t *item)
{
    assert(consumer->queue == self && !list_linked(&item->link) && item->state == ITEM_INFLIGHT);
    item->holder = consumer;
    list_push_back(&consumer->holds, &item->link);
    consumer->hold_count++;
    s_reorder(self, consumer);
}

void queue_release(queue_t *self, consumer_t *consumer, item_t *item)
{
    assert(item->holder == consumer && consumer->queue == self);
    list_remove(&item->link);
    item->holder = NULL;
    consumer->hold_count--;
    s_reorder(self, consumer);
}

void queue_set_credit(queue_t *self, consumer_t *consumer, uint64_t credit)
{
    consumer->credit = credit;
    s_reorder(self, consumer);
}

int queue_join_start(const queue_t *self, joiner_t *joiner)
{
    joiner->queue = (queue_t *) self;
    joiner->end = self->ledger.next;
    joiner->waited = self->ledger.outstanding;
    if (joiner->mode == AQ_JOIN_ALL)
        return self->ledger.outstanding == 0;
    return self->ledger.low >= joiner->end;
}

void queue_add_joiner(queue_t *self, joiner_t *joiner)
{
    list_push_back(joiner->mode == AQ_JOIN_ALL ? &self->joiners_all : &self->joiners_before,
                   &joiner->link);
    self->joiner_count++;
}

void queue_remove_joiner(queue_t *self, joiner_t *joiner)
{
    list_remove(&joiner->link);
    self->joiner_count--;
}

joiner_t *queue_take_satisfied(queue_t *self)
{
    list_node_t *node = list_first(&self->joiners_before);
    joiner_t *joiner = node ? list_entry(node, joiner_t, link) : NULL;
    if (joiner && self->ledger.low >= joiner->end) {
        queue_remove_joiner(self, joiner);
        return joiner;
    }
    node = list_first(&self->joiners_all);
    if (node && self->ledger.outstanding == 0) {
        joiner = list_entry(node, joiner_t, link);
        queue_remove_joiner(self, joiner);
        return joiner;
    }
    return NULL;
}

uint64_t queue_join_remaining(const queue_t *self, const joiner_t *joiner)
{
    if (joiner->mode == AQ_JOIN_ALL)
        return self->ledger.outstanding;
    return ledger_outstanding_before(&self->ledger, joiner->end);
}
