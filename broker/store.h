/*  Every item the broker holds, queued, delivered, delayed or dead, by id.

    Items live in fixed chunks that never move, so pointers to them stay
    valid and adding one allocates only when every chunk is full. An id is
    (generation << 32 | slot): finding it is an array index plus a check of
    the generation, so ids of finished items, and forged ones, are simply
    not found. An item owns its payload bytes (one allocation, freed with
    it); the broker copies a payload in once, at put.

    Ids come from records: the leader picks one (store_pick) and claims it,
    and a replica, or a broker reading its journal, claims the same id, so
    an item has one id everywhere. Add, claim, find and remove are O(1).
    The free slots are a stack, and which id is picked next depends only on
    the claims and removes made, in their order: two stores that see the
    same claims and removes pick the same id next.

    Memory per item beyond its payload: sizeof(item_t) (120 bytes), 8 bytes
    of free-slot stack (the stack and each slot's place in it, so that a
    claim takes any free slot off it at once), the allocator's header of
    the payload (about 16 bytes) and, elsewhere, 8 bytes of lease-heap slot
    and a ledger bit. */
#ifndef BROKER_STORE_H
#define BROKER_STORE_H

#include <stddef.h>
#include <stdint.h>

#include "deadlines.h"
#include "list.h"

struct queue;
struct consumer;

/*  Where an item is: what the journal records and the invariants check. */
typedef enum {
    ITEM_QUEUED = 1, /* in its queue's ready list */
    ITEM_INFLIGHT,   /* in its holder's list, its lease running */
    ITEM_DELAYED,    /* put or nacked with a delay: only in the timer heap */
    ITEM_DEAD        /* in its queue's dead-letter list */
} item_state_t;

/*  Why and when a dead item died (state.h's causes), with the reason its
    last consumer gave, if any: what `DEAD list` shows. */
typedef struct epitaph {
    int64_t at_ms;        /* wall clock */
    uint8_t cause;
    uint8_t size;         /* of text */
    char text[];          /* not NUL-terminated */
} epitaph_t;

typedef struct item {
    uint64_t id;          /* 0 while the slot is free */
    uint64_t seq;         /* position in its queue's ledger (join) */
    union {
        int64_t rank;     /* QUEUED, DEAD: its place in its list (state.h) */
        uint64_t until_ms; /* DELAYED: until when, on the wall clock */
    };
    int64_t accepted_us;  /* broker's monotonic clock at put */
    list_node_t link;     /* in its queue's ready or dead list, or its holder's */
    deadline_t timer;     /* its lease while delivered; its delay after a NACK */
    struct queue *queue;
    struct consumer *holder; /* consumer holding it, NULL unless ITEM_INFLIGHT */
    uint8_t *data;        /* payload, owned; NULL when empty */
    epitaph_t *epitaph;   /* DEAD: why, owned; NULL otherwise (or unknown) */
    uint32_t size;
    uint32_t lease_ms;    /* asked for by its put; 0: its queue's */
    uint32_t taken_from;  /* serial (low bits) of the session that last lost it, or 0 */
    int32_t priority;     /* lowest first among its queue's ready items (its put's) */
    uint16_t attempts;    /* deliveries so far */
    uint8_t state;        /* item_state_t */
} item_t;

typedef struct store store_t;

store_t *store_new(void);

/*  Frees every item still held (and its payload). */
void store_destroy(store_t **self_p);

/*  Ids made from now on carry `shard` in their top 8 bits (PROTOCOL.md
    4.15: an id names its broker in a service). */
void store_set_shard(store_t *self, uint8_t shard);

/*  The id the next new item gets: the top of the free stack, or the first
    slot of the next chunk if none is free, with the slot's next
    generation. Changes nothing (twice gives the same id) and allocates
    nothing; 0 if every slot there can be is in use. */
uint64_t store_pick(const store_t *self);

/*  A new empty item with exactly this id, at any time: the leader's ids are
    claimed as they are by its replicas and by recovery. Takes the slot off
    the free stack wherever it is in it, adding chunks up to it if needed.
    The slot's next item, after store_remove, gets the generation after
    this id's (1 after the last). NULL if the id is 0, its generation is 0,
    its slot is in use, or out of memory. */
item_t *store_claim(store_t *self, uint64_t id);

/*  store_claim(self, store_pick(self)): a new empty item with a fresh id;
    NULL if out of memory. */
item_t *store_add(store_t *self);

/*  The item with this id, or NULL. */
item_t *store_find(const store_t *self, uint64_t id);

/*  Gives the item `size` bytes of payload (copied from data). -1 if out of
    memory (nothing changed). */
int store_set_payload(item_t *item, const void *data, size_t size);

/*  Releases the item and its payload; its id is never found again. */
void store_remove(store_t *self, item_t *item);

size_t store_count(const store_t *self);

/*  Visits every item in use, in slot order. O(slots). */
void store_each(const store_t *self, void (*fn)(void *ctx, item_t *item), void *ctx);

/*  Visits the items in use in slots [from, from + count), in slot order:
    a walk a slice at a time, while the store changes in between (a
    snapshot written in slices). Returns the slot to go on from, or
    SIZE_MAX past the last. */
size_t store_each_slice(const store_t *self, size_t from, size_t count,
                        void (*fn)(void *ctx, item_t *item), void *ctx);

#endif
