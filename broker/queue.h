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
    uint64_t hold_count;
    list_node_t holds;    /* items delivered and not yet acked, oldest first */
    list_node_t link;     /* in its queue's idle or busy list, or in none */
    list_node_t ready_link; /* in its queue's ready_waiters: asked for READY (4.15) */
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

/*  The ready items of one priority: a run of the ready list. */
typedef struct band {
    int32_t priority;
    struct item *first, *last;
} band_t;

/*  Room for state.h's causes of death (DEATH_CAUSES, checked there). */
#define QUEUE_DEATH_CAUSES 8

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
    uint8_t paused;          /* deliveries paused (PAUSE): replicated */
    int drained_told;        /* consumers were told it is shut down and empty */
    uint64_t lease_ms;       /* lease of a delivery, unless the put asked for another */
    uint64_t maxsize;        /* most items queued at once; 0 = unbounded */
    uint64_t max_attempts;   /* deliveries before an item is dead-lettered; 0 = no limit */
    uint64_t retry_first_ms, retry_max_ms, retry_factor; /* NACK without a delay (broker.h) */
    /* Replicated (state.c changes these, by records): */
    list_node_t dead;        /* dead-lettered items, oldest first */
    uint64_t dead_count;
    list_node_t ready;       /* queued items, next to deliver first: by priority, then rank */
    uint64_t ready_count;
    /*  Where each priority's run of `ready` starts and ends, lowest first,
        once an item of a priority other than 0 is ready (none before: a
        queue whose puts give no priority pays nothing for them). */
    band_t *bands;
    uint32_t band_count, band_cap;
    uint64_t inflight_count;
    uint64_t delayed_count;  /* put or nacked with a delay, waiting to be queued */
    int64_t front, back;     /* lowest and highest rank a queued item had */
    int64_t dead_back;       /* highest rank a dead item had */
    uint64_t next_seen;      /* a log read back: the ledger's next is at least this */
    int unsorted;            /* a log read back: lists to sort by rank */
    ledger_t ledger;
    /* The leader's: */
    uint64_t put_total;
    uint64_t acked_total;
    uint64_t delivered_total;
    uint64_t redelivered_total;
    uint64_t discarded_total;    /* dropped by an immediate shutdown */
    uint64_t expired_total;      /* leases that ran out */
    uint64_t nacked_total;
    uint64_t dead_lettered_total;
    uint64_t dead_by_cause[QUEUE_DEATH_CAUSES]; /* of those, by state.h's death_cause_t */
    uint64_t refused_total[REFUSED_REASONS];
    histogram_t to_delivery;     /* put to first delivery */
    histogram_t to_ack;          /* put to ack */
    uint64_t held_count;     /* puts held back for room, of every producer */
    list_node_t blocked;     /* producers whose oldest held put waits for this queue */
    list_node_t dirty_link;  /* in the broker's list of queues to dispatch */
    int64_t last_active_ms;  /* last put, get, ack, join or credit */
    list_node_t idle;        /* consumers holding nothing, with credit */
    list_node_t busy;        /* consumers holding some, with credit left */
    list_node_t ready_waiters; /* consumers to tell READY when they have no room */
    uint64_t consumer_count;
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

/*  Items that may be accepted now: maxsize minus those queued or delayed
    (UINT64_MAX when unbounded). */
uint64_t queue_room(const queue_t *self);

/*  True if nothing is queued, delivered, delayed, dead or held, nobody
    consumes or joins, and it is not paused: the queue can be forgotten
    (shut down or not: a put after that makes a new queue, open). */
int queue_is_unused(const queue_t *self);

/*  True if nothing is queued, delivered or delayed. */
int queue_is_drained(const queue_t *self);

/*  An item left the ledger dead (state.c moved it): every waiting join
    that covers it counts it. O(joins waiting). */
void queue_count_dead(queue_t *self, const item_t *item);

void consumer_init(consumer_t *consumer);

/*  Attaches a consumer (which holds nothing) to this queue. */
void queue_attach(queue_t *self, consumer_t *consumer);

/*  Detaches a consumer, which must hold nothing (its items were given
    back first). */
void queue_detach(queue_t *self, consumer_t *consumer);

/*  The consumer that should get the next item: one holding nothing first,
    then the others in turn; NULL if none has credit left. */
consumer_t *queue_next_consumer(const queue_t *self);

/*  A consumer with credit left other than `not`, or NULL. O(consumers) at
    worst; used only for items taken back from `not`. */
consumer_t *queue_other_consumer(const queue_t *self, const consumer_t *not);

/*  The consumer holds the item, in flight (state.c made it so) / lets go
    of it (acked, or taken back): it is linked nowhere afterwards. Both
    reorder the consumer. */
void queue_hold(queue_t *self, consumer_t *consumer, item_t *item);
void queue_release(queue_t *self, consumer_t *consumer, item_t *item);

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
