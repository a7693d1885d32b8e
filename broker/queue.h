/*  One named queue: its items waiting for delivery (FIFO), the consumers
    that take from it, its ledger of outstanding items and the joins waiting
    on it. Plain data: no sockets here. Every operation is O(1) except where
    noted. */
#ifndef BROKER_QUEUE_H
#define BROKER_QUEUE_H

#include <stdint.h>

#include "asyncq/codec.h"
#include "deadlines.h"
#include "histogram.h"
#include "ledger.h"
#include "list.h"
#include "store.h"

/*  Why puts were refused, for the counters (`queue_refusal_names` in
    queue.c names them for the metrics). */
typedef enum {
    REFUSED_SHUT_DOWN,
    REFUSED_TOO_BIG,
    REFUSED_FORBIDDEN,
    REFUSED_LIMIT,
    REFUSED_STORAGE,
    REFUSED_MALFORMED,
    REFUSED_INTERNAL,
    REFUSED_REASONS
} refusal_t;

extern const char *const queue_refusal_names[REFUSED_REASONS];

/*  The consumer side of a peer: its credit and the items it holds. */
typedef struct consumer {
    struct queue *queue;  /* NULL until the peer sends CREDIT */
    uint64_t credit;      /* most items it may hold at once */
    uint64_t held_count;
    list_node_t held;     /* items delivered and not yet acked, oldest first */
    list_node_t link;     /* in its queue's idle or busy list, or in none */
} consumer_t;

struct peer;

/*  A JOIN waiting for its answer. */
typedef struct joiner {
    list_node_t link;     /* in its queue's before or all list */
    list_node_t peer_link; /* in its session's list */
    struct peer *peer;    /* the session that asked */
    deadline_t deadline;  /* time-out, if any */
    struct queue *queue;
    aq_join_mode_t mode;
    uint64_t end;         /* satisfied when no item with seq < end is outstanding */
    uint64_t waited;      /* items outstanding when the join arrived */
    uint64_t dead;        /* of those, how many were dead-lettered */
    uint8_t routing_id[256];
    size_t routing_id_size;
    uint8_t tag[AQ_TAG_MAX];
    size_t tag_size;
} joiner_t;

/*  A queue's shutdown state (Python 3.13's Queue.shutdown). */
typedef enum {
    QUEUE_OPEN = 0,
    QUEUE_DRAINING,  /* puts refused; what is queued is still delivered */
    QUEUE_DISCARDING /* puts refused; what is queued, or comes back, is discarded */
} queue_state_t;

typedef struct queue {
    char name[AQ_NAME_MAX + 1];
    uint64_t serial;         /* unique over the broker's life: a queue forgotten and made
                                again under its name is another queue */
    queue_state_t state;
    int drained_told;        /* consumers were told it is shut down and empty */
    uint64_t lease_ms;       /* lease of a delivery, unless the put asked for another */
    uint64_t maxsize;        /* most items queued at once; 0 = unbounded */
    uint64_t max_attempts;   /* deliveries before an item is dead-lettered; 0 = no limit */
    list_node_t dead;        /* dead-lettered items, oldest first */
    uint64_t dead_count;
    list_node_t ready;       /* queued items, next to deliver first */
    uint64_t ready_count;
    uint64_t inflight_count;
    uint64_t delayed_count;  /* nacked with a delay, waiting to be queued again */
    uint64_t put_total;
    uint64_t acked_total;
    uint64_t delivered_total;
    uint64_t redelivered_total;
    uint64_t discarded_total;    /* dropped by an immediate shutdown */
    uint64_t expired_total;      /* leases that ran out */
    uint64_t nacked_total;
    uint64_t dead_lettered_total;
    uint64_t refused_total[REFUSED_REASONS];
    histogram_t to_delivery;     /* put to first delivery */
    histogram_t to_ack;          /* put to ack */
    uint64_t held_count;     /* puts held back for room, of every producer */
    list_node_t blocked;     /* producers whose oldest held put waits for this queue */
    list_node_t dirty_link;  /* in the broker's list of queues to dispatch */
    int64_t last_active_ms;  /* last put, get, ack, join or credit */
    list_node_t idle;        /* consumers holding nothing, with credit */
    list_node_t busy;        /* consumers holding some, with credit left */
    uint64_t consumer_count;
    ledger_t ledger;
    list_node_t joiners_before;  /* ordered by end, as ends only grow */
    list_node_t joiners_all;
    uint64_t joiner_count;
    struct auth_owner *owner; /* the key that made it, counted against its limit; may be NULL */
} queue_t;

/*  NULL if out of memory. `name` must be a valid name. */
queue_t *queue_new(const char *name, uint64_t maxsize, uint64_t max_attempts, uint64_t lease_ms);

/*  Frees the queue. Its items belong to the store, its joiners and
    consumers to their owners: they must be gone already. */
void queue_destroy(queue_t **self_p);

int queue_is_full(const queue_t *self);

/*  Items that may be accepted now: maxsize minus queued (UINT64_MAX when
    unbounded). */
uint64_t queue_room(const queue_t *self);

/*  True if nothing is queued, delivered, delayed, dead or held, and nobody
    consumes or joins: the queue can be forgotten. */
int queue_is_unused(const queue_t *self);

/*  Accepts a new item at the back. -1 if out of memory (nothing changed). */
int queue_accept(queue_t *self, item_t *item);

/*  Takes the next item to deliver, or NULL. */
item_t *queue_pop(queue_t *self);

/*  Puts a delivered item back at the front: it is delivered next. */
void queue_requeue(queue_t *self, item_t *item);

/*  An item taken back: dead-lettered if it has had max_attempts deliveries
    (returns 1; it is finished for joins, which count it as dead), else
    requeued at the front (returns 0). O(joins waiting) when it dies. */
int queue_return(queue_t *self, item_t *item);

/*  Moves every dead-lettered item back to the end of the queue with its
    attempts reset, counting them in *count. -1 if the ledger could not grow:
    the items counted were moved, the others stay dead. */
int queue_requeue_dead(queue_t *self, uint64_t *count);

/*  Takes the next queued item and finishes it unacked (an immediate
    shutdown): joins stop waiting for it. NULL if none is queued. */
item_t *queue_discard_next(queue_t *self);

/*  True if nothing is queued, delivered or delayed. */
int queue_is_drained(const queue_t *self);

/*  Unlinks and returns the oldest dead-lettered item, or NULL. */
item_t *queue_take_dead(queue_t *self);

void consumer_init(consumer_t *consumer);

/*  Attaches a consumer (which holds nothing) to this queue. */
void queue_attach(queue_t *self, consumer_t *consumer);

/*  Returns every item the consumer holds to the front of the queue, oldest
    first, and detaches it. O(items held). */
void queue_detach(queue_t *self, consumer_t *consumer);

/*  The consumer that should get the next item: one holding nothing first,
    then the others in turn; NULL if none has credit left. */
consumer_t *queue_next_consumer(const queue_t *self);

/*  A consumer with credit left other than `not`, or NULL. O(consumers) at
    worst; used only for items taken back from `not`. */
consumer_t *queue_other_consumer(const queue_t *self, const consumer_t *not);

/*  Records a delivery to / an ack from a consumer, and reorders it. */
void queue_deliver(queue_t *self, consumer_t *consumer, item_t *item);
void queue_ack(queue_t *self, consumer_t *consumer, item_t *item);

/*  Takes a delivered item back from its holder (lease expired, NACK): it is
    linked nowhere afterwards; the caller requeues or delays it. */
void queue_take_back(queue_t *self, consumer_t *consumer, item_t *item);

/*  Changes a consumer's credit. */
void queue_set_credit(queue_t *self, consumer_t *consumer, uint64_t credit);

/*  Adds a join. It must not be satisfied already (see queue_join_is_done). */
void queue_add_joiner(queue_t *self, joiner_t *joiner);

/*  Sets joiner->end and ->waited from the queue's state now; true if the
    join is satisfied at once. */
int queue_join_start(const queue_t *self, joiner_t *joiner);

/*  Unlinks and returns a join that is now satisfied, or NULL. */
joiner_t *queue_take_satisfied(queue_t *self);

/*  Unlinks a join (timed out or its peer gone). */
void queue_remove_joiner(queue_t *self, joiner_t *joiner);

/*  Items a join still waits for. O(window / 64). */
uint64_t queue_join_remaining(const queue_t *self, const joiner_t *joiner);

#endif
