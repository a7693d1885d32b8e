/*  The broker: its configuration, its state and the functions its parts
    share. server.c owns the sockets and the loop, commands.c turns each
    received message into calls on the data modules (queue, store, ledger),
    producers.c keeps track of producers and their SYNCs. */
#ifndef BROKER_BROKER_H
#define BROKER_BROKER_H

#include <stdint.h>

#include "asyncq/codec.h"
#include "asyncq/endpoint.h"
#include "asyncq/wire.h"
#include "deadlines.h"
#include "dict.h"
#include "queue.h"
#include "store.h"

/*  A lease for one queue's deliveries, other than the default. */
typedef struct {
    char queue[AQ_NAME_MAX + 1];
    uint64_t lease_ms;
} queue_lease_t;

#define BROKER_QUEUE_LEASES_MAX 64

typedef struct {
    const char *bind;       /* address to bind (endpoint.h) */
    uint64_t max_item;      /* largest item, in bytes */
    uint64_t maxsize;       /* most items queued per queue; 0 = unbounded */
    uint64_t max_queues;
    uint64_t max_joiners;
    uint64_t max_credit;
    uint64_t heartbeat_ms;  /* probe every session this often */
    uint64_t lease_ms;      /* an item not acked this long after delivery is taken back */
    uint64_t max_attempts;  /* deliveries before dead-lettering; 0 = no limit */
    queue_lease_t queue_leases[BROKER_QUEUE_LEASES_MAX];
    size_t queue_lease_count;
    uint64_t max_joins_per_peer;
    uint64_t drain_ms;      /* on SIGTERM, wait this long at most for queues to drain */
    int verbose;
} broker_config_t;

#define BROKER_DEFAULT_MAX_ITEM (1024 * 1024)
#define BROKER_DEFAULT_MAX_QUEUES 1024
#define BROKER_DEFAULT_MAX_JOINERS 10000
#define BROKER_DEFAULT_MAX_CREDIT 10000
#define BROKER_DEFAULT_HEARTBEAT_MS 1000
#define BROKER_DEFAULT_LEASE_MS 60000
#define BROKER_DEFAULT_MAX_ATTEMPTS 5
#define BROKER_DEFAULT_MAX_JOINS_PER_PEER 100
#define BROKER_DEFAULT_DRAIN_MS 30000

/*  What a deadline_t in the broker's heap is for. */
enum { TIMER_SWEEP = 1, TIMER_HEARTBEAT, TIMER_JOIN, TIMER_LEASE, TIMER_DELAY, TIMER_DRAIN };

struct producer;

/*  A client that said HELLO on the ROUTER socket. */
typedef struct peer {
    uint8_t routing_id[256];
    size_t routing_id_size;
    char client_id[AQ_NAME_MAX + 1];
    uint64_t serial;           /* unique per session over the broker's life */
    consumer_t consumer;
    struct producer *producer; /* the producer whose id is this client id */
    list_node_t joins;         /* joiner_t of this session still waiting */
    uint64_t join_count;
    int dropped;               /* out of every table, freed at end of turn */
    list_node_t dropped_link;
} peer_t;

/*  A SYNC waiting for puts still on their way. */
typedef struct sync_wait {
    list_node_t link;
    uint64_t seq;
    uint8_t routing_id[256];
    size_t routing_id_size;
    uint8_t tag[AQ_TAG_MAX];
    size_t tag_size;
} sync_wait_t;

/*  What the broker knows of one producer id. */
typedef struct producer {
    char id[AQ_NAME_MAX + 1];
    uint64_t next_seq;   /* every put with a lower seq has been received */
    uint64_t lost_from;  /* a later put came first: next_seq was lost; 0: none */
    peer_t *peer;        /* its session, to send errors to; may be NULL */
    list_node_t syncs;   /* sync_wait_t, ordered by seq */
    int64_t last_seen_ms;
} producer_t;

typedef struct broker {
    broker_config_t config;
    void *pull;             /* puts */
    void *router;           /* everything else */
    void *pull_zsock;
    void *router_zsock;
    char address[AQ_ENDPOINT_MAX]; /* what clients connect to */
    char broker_id[AQ_NAME_MAX + 1];
    aq_inbox_t *router_inbox;
    aq_inbox_t *pull_inbox;
    int put_parked;         /* pull_inbox holds a put for a full queue */
    queue_t *parked_queue;
    store_t *store;
    dict_t *queues;         /* name -> queue_t */
    dict_t *peers;          /* routing id -> peer_t */
    dict_t *clients;        /* client id -> peer_t */
    dict_t *producers;      /* producer id -> producer_t */
    deadlines_t deadlines;
    deadline_t sweep;       /* periodic clean-up of forgotten producers */
    deadline_t heartbeat;   /* periodic probe of every session */
    list_node_t dropped_peers; /* freed once the current message is handled */
    uint64_t joiner_count;
    int shut_down;          /* every queue, and any new one, refuses puts */
    int stopping;           /* exit once every queue has drained */
    deadline_t drain;       /* ... or when this fires */
    uint64_t next_serial;
    uint64_t bad_input_total;
    int64_t log_window_ms;  /* start of the current rate-limit second */
    int log_lines;          /* bad-input lines logged in that second */
} broker_t;

/* server.c */
broker_t *broker_new(const broker_config_t *config, aq_status_t *status);
void broker_destroy(broker_t **self_p);
aq_status_t broker_run(broker_t *self);
void broker_log(broker_t *self, const char *format, ...)
    __attribute__((format(printf, 2, 3)));
void broker_log_bad_input(broker_t *self, const char *format, ...)
    __attribute__((format(printf, 2, 3)));
aq_status_t broker_send(broker_t *self, const uint8_t *routing_id, size_t routing_id_size,
                        const aq_msg_t *msg, zmq_msg_t *payload);
void broker_send_error(broker_t *self, const uint8_t *routing_id, size_t routing_id_size,
                       int code, aq_bytes_t subject, const char *text);
void broker_dispatch(broker_t *self, queue_t *queue);
void broker_release_joiners(broker_t *self, queue_t *queue);
void broker_drop_peer(broker_t *self, peer_t *peer, const char *reason);
void broker_take_back(broker_t *self, item_t *item, uint64_t delay_ms);
/*  Shuts one queue down (see queue_state_t), releasing its joins with
    SHUT_DOWN if `state` is QUEUE_DISCARDING. */
void broker_shut_queue(broker_t *self, queue_t *queue, queue_state_t state);
/*  Shuts every queue down, and any queue made later. */
void broker_shut_all(broker_t *self, queue_state_t state);
/*  The lease of a delivery of this item. */
uint64_t broker_lease_ms(const item_t *item);
queue_t *broker_queue(broker_t *self, aq_bytes_t name, int create, aq_status_t *status);
int64_t broker_now_ms(void);

/* commands.c */
void broker_on_router(broker_t *self);
/*  Handles the put in pull_inbox. Returns 1 if it had to be parked. */
int broker_on_put(broker_t *self);
void broker_on_join_timeout(broker_t *self, joiner_t *joiner);
void broker_free_joiner(broker_t *self, joiner_t *joiner);

/* producers.c */
producer_t *producers_get(broker_t *self, aq_bytes_t id, int create);
/*  A HELLO said the producer's first unconfirmed put is seq. */
void producers_resume(broker_t *self, producer_t *producer, uint64_t seq);
/*  True if a put with this seq is the next one expected, to be handled;
    false if it must be dropped (a duplicate, or out of sequence). */
int producers_check(broker_t *self, producer_t *producer, uint64_t seq);
/*  The put with this seq was handled (accepted or refused). */
void producers_received(broker_t *self, producer_t *producer, uint64_t seq);
void producers_sync(broker_t *self, producer_t *producer, aq_bytes_t routing_id,
                    aq_bytes_t tag, uint64_t seq);
void producers_forget(broker_t *self, producer_t *producer);
void producers_sweep(broker_t *self);
void producers_destroy_all(broker_t *self);

#endif
