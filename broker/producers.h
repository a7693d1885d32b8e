/*  What the broker knows of one producer id: how far its puts have come,
    the SYNCs that wait for the rest, and its puts held for a full queue.
    A producer id outlives its sessions (a client that reconnects resends
    under the same id), so a producer is kept apart from them, by id in
    broker.producers, and points at its session while it has one.
    producers.c makes and frees producers and SYNCs, and frees held puts
    with what they counted (puts.c, which holds them, makes them). */
#ifndef BROKER_PRODUCERS_H
#define BROKER_PRODUCERS_H

#include "broker.h"

/*  A SYNC waiting for puts still on their way, or held. */
typedef struct sync_wait {
    list_node_t link;
    uint64_t seq;
    uint8_t routing_id[256];
    size_t routing_id_size;
    uint8_t tag[AQ_TAG_MAX];
    size_t tag_size;
    int64_t since_ms;      /* when it started waiting, or last saw progress */
    int told_held;         /* HELD already sent */
    int positioned;        /* its puts are all handled: position is set */
    uint64_t position;     /* the journal position its SYNCED waits for */
} sync_wait_t;

/*  A put (or a PUTS) waiting for room in a full queue. */
typedef struct held_put {
    list_node_t link;      /* in its producer's list, oldest first */
    uint64_t seq;          /* first seq of the message */
    uint64_t count;        /* items in it */
    uint64_t skip;         /* of them, handled already */
    uint64_t lease_ms;
    aq_options_t options;
    struct queue *queue;
    zmq_msg_t frame;       /* the payload, or the PUTS items frame */
    int is_batch;
    auth_owner_t *owner;   /* counted against this key's --max-held-bytes-per-key */
} held_put_t;

/*  What the broker knows of one producer id. */
typedef struct producer {
    char id[AQ_NAME_MAX + 1];
    char key[AUTH_KEY_SIZE + 1]; /* the key that opened it */
    uint64_t next_seq;   /* every put with a lower seq has been received */
    uint64_t lost_from;  /* a later put came first: next_seq was lost; 0: none */
    struct peer *peer;   /* its session, to send errors to; may be NULL */
    list_node_t syncs;   /* sync_wait_t, ordered by seq */
    size_t sync_count;
    list_node_t held;    /* held_put_t, oldest first */
    uint64_t held_count; /* puts held */
    uint64_t held_bytes; /* their frames' bytes */
    int64_t last_seen_ms;
    list_node_t idle_link; /* in the broker's list of producers without a session */
    struct queue *blocked_on; /* the full queue its oldest held put waits for */
    list_node_t blocked_link; /* in that queue's list */
    int64_t progress_ms; /* last put received from it */
    list_node_t durable_link; /* in the broker's list of SYNCs waiting for the disk */
    uint64_t journal_position; /* the journal's end after its last accepted put */
} producer_t;

producer_t *producers_get(broker_t *self, aq_bytes_t id);
producer_t *producers_open(broker_t *self, aq_bytes_t id, const char *key);
/*  state_t's producer_seen: a log read back says the producer with this id
    (and key, if not empty) has had its puts up to next - 1. */
int producers_seen(void *ctx, aq_bytes_t id, aq_bytes_t key, uint64_t next);
/*  The producer's session is `peer` (it said HELLO). */
void producers_attach(broker_t *self, producer_t *producer, struct peer *peer);
/*  Every put up to this seq is handled (accepted or refused): what SYNC
    waits for. */
uint64_t producers_done(const producer_t *producer);
/*  Answers the SYNCs that producers_done now covers. */
void producers_answer(broker_t *self, producer_t *producer);
/*  A HELLO said the producer's first unconfirmed put is seq. */
void producers_resume(broker_t *self, producer_t *producer, uint64_t seq);
/*  Puts [first, first + count) arrived: how many of them to skip as
    resends (*skip), and whether any are left to handle. A jump past next
    starts LOST. */
int producers_check(broker_t *self, producer_t *producer, uint64_t first, uint64_t count,
                    uint64_t *skip);
/*  Puts up to and including `last` were received (accepted, refused or
    held); answers the SYNCs this covers. */
void producers_received(broker_t *self, producer_t *producer, uint64_t last);
/*  The producer's puts are held behind a full queue: tell waiting SYNCs. */
void producers_tell_held(broker_t *self, producer_t *producer);
void producers_sync(broker_t *self, producer_t *producer, aq_bytes_t routing_id,
                    aq_bytes_t tag, uint64_t seq);
void producers_detach(broker_t *self, producer_t *producer);
/*  A HELLO from `routing_id` takes the producer id: every SYNC waiting
    from another routing id, and every later SYNC of the session that held
    it (`old`, may be NULL), is answered 409 (PROTOCOL.md 4.2). */
void producers_take_over(broker_t *self, producer_t *producer, const struct peer *old,
                         aq_bytes_t routing_id);
/*  The producer id a session lost to a takeover, if `routing_id` is one
    (its SYNCs get 409, not 412); NULL otherwise. */
const char *producers_superseded(broker_t *self, aq_bytes_t routing_id);
/*  A new HELLO on `routing_id`: it is a session again. */
void producers_unsupersede(broker_t *self, aq_bytes_t routing_id);
/*  409 to a SYNC of a session whose producer id was taken over. */
void producers_refuse_superseded(broker_t *self, aq_bytes_t routing_id, aq_bytes_t tag,
                                 const char *producer);
void producers_forget(broker_t *self, producer_t *producer);
void producers_sweep(broker_t *self);
void producers_destroy_all(broker_t *self);
/*  Held puts, a producer's list: the producer waits on `queue` (NULL: on
    none); one held put, or all, freed with what they counted. */
void producers_block(producer_t *producer, queue_t *queue);
void producers_free_held_put(broker_t *self, producer_t *producer, held_put_t *held);
void producers_free_held(broker_t *self, producer_t *producer);

#endif
