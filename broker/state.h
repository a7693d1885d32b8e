/*  The replicated state: every item (its queue, payload, place, attempts,
    id), every queue's order, dead letters, shutdown state and join
    numbering, and what each producer's puts reached. It changes only
    through state_apply(), one record at a time: live (the handlers decide
    and emit records), when a durable broker reads its journal back, and,
    later, on a replica. The same records in the same order give the same
    state, whoever applies them.

    A record states a result, never a step ("item 7 is queued at rank -3
    with 2 attempts"): applying one twice, or after a snapshot that already
    saw it, changes nothing. The state machine reads no clock, draws no
    random number and sends nothing: times come in records (a delay's end,
    on the wall clock), and what the leader must do after a change comes
    back in state_effects_t.

    What only the leader keeps (sessions, consumers and the items they
    hold, credit, waiting joins and SYNCs, timers, held puts) lives beside
    this state, in the queue's and item's other fields, and is rebuilt, not
    replayed: an item in flight has no holder here, and a broker that
    recovers gives every item in flight back (its session is gone).

    Order: each item has a rank in its queue. Puts go to the back (the
    queue's highest rank plus one), items given back, and puts asking for
    the front, to the front (its lowest minus one), dead items to the back
    of the dead list. The ready list is ordered by priority, then rank: the
    queue's bands (queue.h) find a priority's run in O(log priorities).
    A delayed item has no rank until its time comes: a put's then goes to
    the back, a retry's (an item delivered before) to the front. Live, a
    rank is always past an end of its list, so linking is O(1); records
    read back in another order (a snapshot is written in slot order, while
    records of changes made meanwhile follow it) are linked unordered and
    state_rebuild() sorts each list once, O(n log n), and numbers the
    ledgers. */
#ifndef BROKER_STATE_H
#define BROKER_STATE_H

#include <stddef.h>
#include <stdint.h>

#include "asyncq/codec.h"
#include "dict.h"
#include "queue.h"
#include "store.h"

/*  Records (journal.h frames them; numbers big-endian). Types 1, 2 and 5
    are those of journals written before 2.2: read, never written. */
typedef enum {
    RECORD_ITEM_V1 = 1, /* as ITEM without rank */
    RECORD_STATE_V1,    /* as STATE without rank */
    RECORD_GONE,        /* id u64, reason u8 (absent before 2.2: acked) */
    RECORD_PRODUCER,    /* next u64, id (u8 length + bytes), key (the rest) */
    RECORD_QUEUE_V1,    /* state u8, name (the rest; empty: every queue) */
    RECORD_RESET,       /* a snapshot's first record: forget what came before */
    /*  id u64, seq u64, rank i64, state u8, attempts u16, until_ms u64 (wall
        clock, delayed items), lease_ms u32, pseq u64, priority i32, queue
        (u8 length + bytes), producer (u8 length + bytes), payload (the
        rest). A put, and every item of a snapshot. */
    RECORD_ITEM,
    /*  id u64, seq u64, rank i64, state u8, attempts u16, until_ms u64: an
        item moved (delivered, given back, delayed, dead, requeued). */
    RECORD_STATE,
    /*  state u8, next u64 (the ledger's), front i64, back i64, dead_back
        i64, name (the rest; empty: every queue, and any made later): a
        SHUTDOWN, and every queue of a snapshot. */
    RECORD_QUEUE,
    /*  name (the rest): a queue with nothing in it, queued, delayed, in
        flight or dead, forgotten (unused, or deleted); its numbering starts
        again if it is made again. */
    RECORD_FORGET,
    /*  STATE's fields (state DEAD), cause u8, at_ms u64 (wall clock), text
        (the rest, at most EPITAPH_TEXT_MAX bytes): an item dead-lettered,
        and why; in snapshots, after the ITEM of every dead item. */
    RECORD_DIED,
    /*  name (the rest): a shut-down queue takes puts again (REOPEN); empty:
        every queue, and those made later (undoes an empty-named QUEUE). */
    RECORD_REOPEN,
    /*  paused u8, name (the rest): a queue's deliveries paused or resumed;
        in snapshots, after the QUEUE of every paused queue. */
    RECORD_PAUSE
} record_type_t;

/*  Why an item died (RECORD_DIED), as `DEAD list` names it. */
typedef enum {
    DEATH_UNKNOWN = 0, /* a journal written before 2.2 */
    DEATH_LEASE,       /* its last lease ran out */
    DEATH_NACK,        /* its last consumer NACKed it (text: the reason given) */
    DEATH_SESSION,     /* its last consumer's session ended while it held it */
    DEATH_RESTART,     /* it was in flight when the broker stopped */
    DEATH_CAUSES
} death_cause_t;

extern const char *const state_death_names[DEATH_CAUSES];
_Static_assert(DEATH_CAUSES <= QUEUE_DEATH_CAUSES, "queue_t counts deaths by cause");

/*  Bytes of a NACK's reason kept with a dead item: enough to say why. */
#define EPITAPH_TEXT_MAX 200

/*  Why an item left (RECORD_GONE). */
typedef enum { GONE_ACKED = 1, GONE_DISCARDED, GONE_PURGED } gone_reason_t;

typedef struct {
    uint8_t type;
    uint64_t id;
    uint64_t seq;        /* its number in its queue's ledger (join) */
    int64_t rank;        /* its place in its list */
    uint8_t state;       /* item_state_t; QUEUE: queue_state_t; PAUSE: paused */
    uint16_t attempts;
    uint64_t until_ms;   /* DELAYED: until when, wall clock */
    uint32_t lease_ms;
    int32_t priority;    /* ITEM */
    uint64_t pseq;       /* ITEM: its producer's seq; 0: none (snapshots) */
    uint8_t reason;      /* GONE: gone_reason_t */
    uint8_t cause;       /* DIED: death_cause_t */
    uint64_t at_ms;      /* DIED: when, wall clock */
    aq_bytes_t text;     /* DIED: its last consumer's reason */
    uint64_t next;       /* PRODUCER: its next seq; QUEUE: the ledger's */
    int64_t front, back, dead_back; /* QUEUE: its rank counters */
    aq_bytes_t queue;    /* ITEM, QUEUE, FORGET: the queue's name */
    aq_bytes_t producer; /* ITEM, PRODUCER: the producer's id */
    aq_bytes_t key;      /* PRODUCER: the key that opened it */
    aq_bytes_t payload;  /* ITEM */
    /*  Not written: the leader's own lookups of the item the record names
        (STATE, GONE) and of its queue (ITEM), handed over so that applying
        does not look them up again; NULL in records read back. */
    item_t *item_ref;
    queue_t *queue_ref;
} record_t;

/*  Bytes of the record's body, and writing it (exactly that many). */
size_t record_size(const record_t *record);
void record_encode(const record_t *record, uint8_t *body);

/*  Reads a body of this type (any version); -1 if it is not one. The
    record's byte strings point into `body`. */
int record_decode(uint8_t type, const uint8_t *body, size_t size, record_t *record);

/*  Whether this version reads records of this type. One it does not read
    was written by a newer broker: skipping it would serve a state that
    lacks what it says, so whoever reads one stops instead. */
int record_known(uint8_t type);

/*  What the leader must act on after a record: every waiting join that
    covers a dead item counts it (queue_count_dead). */
typedef struct {
    item_t *item;        /* the item the record named, if it still exists */
    queue_t *queue;      /* its queue, or the queue the record named */
    int died;            /* the item went to the dead letters */
    int finished;        /* it left the ledger (acked, discarded, dead) */
} state_effects_t;

typedef struct state {
    store_t *store;
    dict_t *queues;      /* name -> queue_t */
    int shut_down;       /* every queue, and any made later, refuses puts */
    /*  Records may come out of order (a journal being read): lists are
        linked unordered and ledgers left alone until state_rebuild(). */
    int replaying;
    /*  The leader's side: makes a queue (with its configuration) and adds it
        to `queues`, or returns the one there; NULL if out of memory. */
    queue_t *(*queue_make)(void *ctx, aq_bytes_t name);
    /*  Frees a queue already taken out of `queues`. */
    void (*queue_free)(void *ctx, queue_t *queue);
    /*  A producer's puts are accepted up to next - 1; the key opened it. -1
        if out of memory. */
    int (*producer_seen)(void *ctx, aq_bytes_t id, aq_bytes_t key, uint64_t next);
    void *ctx;
} state_t;

/*  Applies one record. Returns 0; 1 if it names what does not exist (an
    item gone meanwhile: a snapshot's overlap) or is not valid here, and
    nothing changed; -1 if out of memory, and nothing changed. */
int state_apply(state_t *self, const record_t *record, state_effects_t *effects);

/*  After records read out of order: each list in rank order, each ledger
    numbered from its items, `replaying` off. -1 if out of memory. */
int state_rebuild(state_t *self);

/*  The records the leader emits, filled from the state now: the next put
    to `queue` (id, seq and rank to come), an item's move to `state` (at
    the front when queued, at the back when dead), and its end. A move and
    an end set only the fields of their type and the hints (the leader's
    records, once per item: the other fields are left as they are, unread). */
void state_next_put(state_t *self, queue_t *queue, record_t *record);
/*  Its priority, at the front instead of the back, delayed until `until_ms`
    (wall clock; 0: not delayed). */
void state_put_options(const queue_t *queue, int32_t priority, int front, uint64_t until_ms,
                       record_t *record);
void state_move(const item_t *item, item_state_t state, record_t *record);
/*  An item's death (to the back of its queue's dead list), and why. */
void state_die(const item_t *item, death_cause_t cause, int64_t at_ms, aq_bytes_t text,
               record_t *record);
void state_gone(const item_t *item, gone_reason_t reason, record_t *record);

/*  Writes the items and queues, as text, in a canonical order (queues by
    name, items in list order, delayed and in-flight ones by id; queues
    that no record ever named left out), for tests that compare a state with another (replay equals live;
    before a crash equals after). Returns bytes written, or -1. */
typedef int(state_write_fn)(void *ctx, const char *text, size_t size);
int state_dump(const state_t *self, state_write_fn *write, void *ctx);

#endif
