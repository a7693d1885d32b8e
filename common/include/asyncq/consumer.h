/*  Getting items from a broker and acking them (asyncio's get/task_done).

    A consumer announces its credit: how many items it may hold unacked at
    once; the broker never sends more, and confirms the credit (CREDITED)
    before aq_consumer_new returns. The broker sends what is ready in ITEMS
    batches; get() hands them out one by one. Acks are sent in batches: an
    ack waits in this process until AQ_ACK_BATCH of them are pending, or
    until get() is about to wait, or until flush() or destroy(), so an idle
    consumer never sits on an ack.

    There is no bare task_done(), on purpose: asyncio's task_done() marks
    "one" item done, whichever, which is exact only while one task gets and
    finishes items in order. An ack here always names its item (the id that
    get() handed out), so it is exact whatever the threading or the order in
    which items finish, and nothing acks "the oldest" item behind the
    caller's back. */
#ifndef ASYNCQ_CONSUMER_H
#define ASYNCQ_CONSUMER_H

#include <stddef.h>
#include <stdint.h>

#include "asyncq/session.h"

#define AQ_ACK_BATCH 256

typedef struct aq_consumer aq_consumer_t;

typedef struct {
    uint64_t id;       /* what to ack */
    uint64_t attempt;  /* 1 on the first delivery */
    uint64_t age_us;   /* time since the broker accepted the put, by the broker's clock */
    uint64_t lease_ms; /* taken back this long after delivery unless acked or touched */
    const void *data;  /* valid until the next get */
    size_t size;
} aq_item_t;

/*  Connects to the broker at `address` (HOST[:PORT], tcp://HOST:PORT or
    ipc://PATH), says HELLO as `name` (NULL: "consumer"; plus a random
    suffix) and asks for items of `queue` with `credit` (>= 1): how many it
    may hold unacked at once. Waits up to AQ_CONNECT_TIMEOUT_MS for the
    broker. NULL on failure, with *status set as aq_session_new says, and
    aq_last_error() saying why. */
aq_consumer_t *aq_consumer_new(const char *address, const char *name, const char *queue,
                               uint64_t credit, aq_status_t *status);

/*  Flushes pending acks, says BYE (the broker re-queues what this consumer
    still holds, at the front of the queue) and closes the socket. */
void aq_consumer_destroy(aq_consumer_t **self_p);

/*  Waits up to `timeout_ms` (-1: for ever; 0: takes an item only if one
    is already here) for the next item. AQ_TIMEOUT: none came.
    AQ_SHUT_DOWN: the queue was shut down and nothing is left in it (Python's
    QueueShutDown); from then on every get() returns AQ_SHUT_DOWN at once,
    without waiting. AQ_REFUSED: an ERROR arrived instead (a refused ack,
    say, or the credit withdrawn after leases expired, which the next get()
    restores): see aq_session_error(). */
aq_status_t aq_consumer_get(aq_consumer_t *self, aq_item_t *item, int timeout_ms);

/*  Marks the item `id` done (asyncio's task_done, for that item). An id
    this consumer does not hold is reported by the broker as an
    UNKNOWN_ITEM error, returned by a later get. */
aq_status_t aq_consumer_ack(aq_consumer_t *self, uint64_t id);

/*  Extends the lease of an item this consumer holds (its lease_ms from
    now). Sent at once. */
aq_status_t aq_consumer_touch(aq_consumer_t *self, uint64_t id);

/*  Gives an item back: it is delivered again (to any consumer) after
    delay_ms, with a higher attempt number. `reason` (may be NULL) goes to
    the broker's log. Sent at once, after pending acks. */
aq_status_t aq_consumer_nack(aq_consumer_t *self, uint64_t id, uint64_t delay_ms,
                             const char *reason);

/*  Sends the pending acks now. */
aq_status_t aq_consumer_flush(aq_consumer_t *self);

/*  Changes the credit (0 pauses deliveries). */
aq_status_t aq_consumer_set_credit(aq_consumer_t *self, uint64_t credit);

aq_session_t *aq_consumer_session(aq_consumer_t *self);

/*  The addresses given that answered nothing and that no broker of the
    service lists, with why, as one line ("" if none): they were left out,
    and the others are served. (A broker of the service that is down is
    not left out: it is said HELLO to in the background and gets credit
    once it answers.) */
const char *aq_consumer_unreachable(const aq_consumer_t *self);

#endif
