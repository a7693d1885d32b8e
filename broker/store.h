/*  Every item the broker holds, queued or delivered, by id.

    Items live in fixed chunks that never move, so pointers to them stay
    valid and adding one allocates only when every chunk is full. An id is
    (generation << 32 | slot): finding it is an array index plus a check of
    the generation, so ids of finished items, and forged ones, are simply
    not found. */
#ifndef BROKER_STORE_H
#define BROKER_STORE_H

#include <stddef.h>
#include <stdint.h>
#include <zmq.h>

#include "deadlines.h"
#include "list.h"

struct queue;
struct consumer;

typedef struct item {
    uint64_t id;          /* 0 while the slot is free */
    uint64_t seq;         /* position in its queue's ledger (join) */
    int64_t accepted_us;  /* broker's monotonic clock at put */
    uint32_t attempts;    /* deliveries so far */
    uint32_t generation;  /* of the slot; part of the id */
    uint32_t lease_ms;    /* asked for by its put; 0: its queue's */
    struct queue *queue;
    struct consumer *holder; /* consumer holding it, NULL while queued */
    list_node_t link;     /* in its queue's ready list or its holder's list */
    deadline_t timer;     /* its lease while delivered; its delay after a NACK */
    uint64_t taken_from;  /* serial of the session that last lost it, or 0 */
    zmq_msg_t payload;
} item_t;

typedef struct store store_t;

store_t *store_new(void);

/*  Frees every item still held (and its payload). */
void store_destroy(store_t **self_p);

/*  A new empty item with a fresh id; NULL if out of memory. */
item_t *store_add(store_t *self);

/*  The item with this id, or NULL. */
item_t *store_find(const store_t *self, uint64_t id);

/*  Releases the item and its payload; its id is never found again. */
void store_remove(store_t *self, item_t *item);

size_t store_count(const store_t *self);

#endif
