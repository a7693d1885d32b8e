/*  The broker: its configuration, its state and the functions its parts
    share. server.c owns the sockets and the loop; conns.c admits and closes
    connections; commands.c turns each ROUTER message into calls on the data
    modules (queue, store, ledger); puts.c takes puts from the PULL socket;
    producers.c keeps producers' sequences, held puts and SYNCs; dispatch.c
    delivers items; auth.c holds client keys and roles. */
#ifndef BROKER_BROKER_H
#define BROKER_BROKER_H

#include <stdint.h>

#include "asyncq/codec.h"
#include "asyncq/endpoint.h"
#include "asyncq/wire.h"
#include "auth.h"
#include "conns.h"
#include "deadlines.h"
#include "dict.h"
#include "queue.h"
#include "ratelog.h"
#include "state.h"
#include "store.h"

/*  A lease for one queue's deliveries, other than the default. */
typedef struct {
    char queue[AQ_NAME_MAX + 1];
    uint64_t lease_ms;
} queue_lease_t;

#define BROKER_QUEUE_LEASES_MAX 64

typedef struct {
    const char *bind;       /* address to bind (endpoint.h) */
    uint64_t max_item;      /* largest item (and PUTS items frame), in bytes */
    uint64_t max_batch;     /* most items in one PUTS or ITEMS */
    uint64_t maxsize;       /* most items queued per queue; 0 = unbounded */
    uint64_t max_queues;
    uint64_t max_joiners;
    uint64_t max_credit;
    uint64_t max_producers; /* producers remembered without a session */
    uint64_t max_connections;
    uint64_t max_pending;   /* reply bytes a session may leave unread (4.9) */
    uint64_t window;        /* puts of one producer held back for a full queue */
    uint64_t window_bytes;  /* and their bytes */
    uint64_t heartbeat_ms;  /* probe every session this often */
    uint64_t hello_timeout_ms; /* a connection must say HELLO (or put) by then */
    uint64_t queue_idle_ms; /* an empty, unused queue is forgotten after this */
    uint64_t lease_ms;      /* an item not acked this long after delivery is taken back */
    uint64_t max_attempts;  /* deliveries before dead-lettering; 0 = no limit */
    uint64_t max_expired;   /* leases expired in a row before credit is withdrawn */
    queue_lease_t queue_leases[BROKER_QUEUE_LEASES_MAX];
    size_t queue_lease_count;
    uint64_t max_joins_per_peer;
    /* What one key (without keys: one host other than loopback) may hold of
       the broker's shared limits; admin keys are exempt, and the last tenth
       of --max-joins, --max-queues and --max-connections is kept for them. */
    uint64_t max_joins_per_key;
    uint64_t max_queues_per_key;
    uint64_t max_sessions_per_key;
    uint64_t max_held_bytes_per_key;
    uint64_t drain_ms;      /* on SIGTERM, wait this long at most for queues to drain */
    const char *curve_secret; /* the broker's secret certificate; NULL: no CURVE */
    const char *clients_dir;  /* allowed client certificates */
    int insecure;           /* without keys, accept connections from anywhere */
    const char *data_dir;   /* the journal's directory; NULL: in memory */
    int fsync;              /* journal_fsync_t */
    int64_t fsync_interval_ms;
    uint64_t segment_bytes; /* journal segments close at this size */
    const char *metrics;    /* the HTTP port's address (http.c); NULL: none */
    const char *metrics_token_file;
    const char *state_dump;   /* SIGUSR1 writes state_dump() here; NULL: ignored */
    int verbose;
} broker_config_t;

#define BROKER_DEFAULT_MAX_ITEM (1024 * 1024)
#define BROKER_DEFAULT_MAX_BATCH 1024
#define BROKER_DEFAULT_MAX_QUEUES 1024
#define BROKER_DEFAULT_MAX_JOINERS 10000
#define BROKER_DEFAULT_MAX_CREDIT 10000
#define BROKER_DEFAULT_MAX_PRODUCERS 10000
#define BROKER_DEFAULT_MAX_CONNECTIONS 10000
#define BROKER_DEFAULT_MAX_PENDING (8 * 1024 * 1024)
#define BROKER_DEFAULT_WINDOW 4096
#define BROKER_DEFAULT_WINDOW_BYTES (8 * 1024 * 1024)
#define BROKER_DEFAULT_HEARTBEAT_MS 1000
#define BROKER_DEFAULT_HELLO_TIMEOUT_MS 5000
#define BROKER_DEFAULT_QUEUE_IDLE_MS 60000
#define BROKER_DEFAULT_LEASE_MS 60000
#define BROKER_DEFAULT_MAX_ATTEMPTS 5
#define BROKER_DEFAULT_MAX_EXPIRED 3
#define BROKER_DEFAULT_MAX_JOINS_PER_PEER 100
#define BROKER_DEFAULT_MAX_JOINS_PER_KEY 1000
#define BROKER_DEFAULT_MAX_QUEUES_PER_KEY 256
#define BROKER_DEFAULT_MAX_SESSIONS_PER_KEY 1000
#define BROKER_DEFAULT_MAX_HELD_BYTES_PER_KEY (64 * 1024 * 1024)
#define BROKER_DEFAULT_DRAIN_MS 30000
#define BROKER_DEFAULT_SEGMENT_BYTES (4 * 1024 * 1024)

/*  What a deadline_t in the broker's heap is for. */
enum {
    TIMER_SWEEP = 1,
    TIMER_HEARTBEAT,
    TIMER_JOIN,
    TIMER_LEASE,
    TIMER_DELAY,
    TIMER_DRAIN
};

struct producer;

/*  Heartbeats remembered per session, to know how much of what was sent it
    has read (4.9). */
#define PEER_BEATS 8

/*  A client that said HELLO on the ROUTER socket. */
typedef struct peer {
    uint8_t routing_id[256];
    size_t routing_id_size;
    char client_id[AQ_NAME_MAX + 1];
    char key[AUTH_KEY_SIZE + 1];  /* the client's CURVE key; "" without CURVE */
    auth_grant_t grant;           /* its roles and queues */
    auth_owner_t *owner;          /* its key's share of the limits; NULL: none counted */
    int plain;                    /* counted in plain_sessions (not admin when it began) */
    int fd;                       /* its connection, or -1 */
    uint64_t conn_stamp;          /* which connection of fd (conns_greet) */
    uint64_t serial;              /* unique per session over the broker's life */
    consumer_t consumer;
    uint64_t credit_batch;        /* items per ITEMS; 0: one ITEM per message */
    char credit_tag[AQ_TAG_MAX];
    size_t credit_tag_size;
    struct producer *producer;    /* the producer whose id is this client id */
    list_node_t joins;            /* joiner_t of this session still waiting */
    uint64_t join_count;
    uint32_t expired_streak;      /* leases expired in a row, no ack between */
    uint64_t reply_bytes;         /* bytes of replies sent, ever */
    uint64_t beat;                /* last heartbeat number sent */
    uint64_t beat_bytes[PEER_BEATS]; /* reply_bytes when heartbeat n % PEER_BEATS went */
    uint64_t read_bytes;          /* reply bytes known read: at its last echoed beat */
    uint64_t probe_beat;          /* an extra heartbeat sent for unread replies; 0: none */
    int64_t probe_ms;             /* when it went */
    int dropped;                  /* out of every table, freed at end of turn */
    list_node_t dropped_link;
    int doomed;                   /* to be dropped once the message or pass in hand is
                                     done, in doomed_link (unread replies, a failed send) */
    const char *doom_reason;
    int doom_close;               /* ... closing its connection */
    list_node_t doomed_link;
} peer_t;

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
    peer_t *peer;        /* its session, to send errors to; may be NULL */
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

/*  How the broker sends on its ROUTER socket; replaced by tests, which run
    a broker without sockets (broker_new_detached). Returns AQ_OK, or
    AQ_TRANSPORT with errno EHOSTUNREACH (peer gone) or EAGAIN (too slow). */
typedef aq_status_t(broker_send_fn)(void *ctx, aq_bytes_t routing_id, const aq_msg_t *msg,
                                    zmq_msg_t *bulk);

typedef struct broker {
    broker_config_t config;
    broker_send_fn *send;
    void *send_ctx;
    void *pull;             /* puts */
    void *router;           /* everything else */
    void *pull_zsock;
    void *router_zsock;
    char address[AQ_ENDPOINT_MAX]; /* what clients connect to */
    char broker_id[AQ_NAME_MAX + 1];
    aq_inbox_t *router_inbox;
    aq_inbox_t *pull_inbox;
    conns_t *conns;
    auth_t *auth;
    store_t *store;
    dict_t *queues;         /* name -> queue_t */
    state_t state;          /* store and queues, changed only by broker_apply */
    /*  Sees every record applied (the fuzzer keeps them, to replay). */
    void (*on_record)(void *ctx, const record_t *record);
    void *on_record_ctx;
    dict_t *peers;          /* routing id -> peer_t */
    dict_t *clients;        /* client id -> peer_t */
    dict_t *producers;      /* producer id -> producer_t */
    list_node_t idle_producers; /* producers without a session, least recent first */
    uint64_t idle_producer_count;
    list_node_t dirty;      /* queues to dispatch at the end of this pass */
    deadlines_t deadlines;
    deadline_t sweep;       /* periodic clean-up: idle producers and queues */
    deadline_t heartbeat;   /* periodic probe of every session */
    list_node_t dropped_peers; /* freed once the current message is handled */
    list_node_t doomed_peers; /* dropped once the current message is handled:
                                  never in the middle of a send, whose caller
                                  may hold the peer's joiners */
    uint64_t joiner_count;
    uint64_t held_total;    /* puts held for full queues, every producer */
    int shut_down;          /* every queue, and any new one, refuses puts */
    int stopping;           /* exit once every queue has drained */
    deadline_t drain;       /* ... or when this fires */
    uint64_t next_serial;   /* sessions and queues */
    uint64_t queues_forgotten; /* queues freed by the sweep, ever (metrics.c) */
    int64_t started_ms;
    uint64_t trimmed_rss;   /* resident bytes after the last malloc_trim */
    uint64_t refused_total[REFUSED_REASONS]; /* puts refused, every queue or none */
    ratelog_t bad_input;    /* rate-limited log lines, by cause */
    ratelog_t expiries;
    ratelog_t refusals;
    struct journal *journal; /* durable brokers (persist.c); NULL: in memory */
    struct http *http;       /* the HTTP port (--metrics); NULL: none */
    uint64_t live_bytes;    /* journal bytes of the items held, near enough */
    size_t snapshot_slot;   /* where a snapshot being written goes on (persist.c) */
    int64_t snapshot_started_us;
    int64_t snapshot_slice_max_us; /* its longest slice */
    list_node_t durable_waits; /* producers with SYNCs waiting only for the disk */
    list_node_t waiting_answers;  /* answers waiting for their changes' records (persist.c) */
    auth_owners_t *owners;         /* each key's share of the limits (commands.c) */
    uint64_t plain_sessions;       /* sessions without the admin role */
    struct superseded *superseded; /* sessions whose producer id was taken over (producers.c) */
    dict_t *superseded_index;      /* their routing ids -> entries */
    size_t superseded_next;
    uint64_t waiting_answer_bytes;
    int broken_logged;
} broker_t;

/* broker.c: what every part shares, below the handlers. */
int64_t broker_now_ms(void);
int64_t broker_now_us(void);
/*  The wall clock (what records hold: it survives a reboot). */
int64_t broker_wall_ms(void);
/*  Tests move the broker's clock forward instead of waiting. */
void broker_clock_advance(int64_t ms);
/*  How long ago the item was put, at now_us (0 if the clock says earlier). */
uint64_t broker_age_us(const item_t *item, int64_t now_us);
/*  Sends a reply to a ROUTER peer, counted against its pending bytes if it
    has a session (so a peer that never reads is found, 4.9). */
aq_status_t broker_send(broker_t *self, aq_bytes_t routing_id, const aq_msg_t *msg,
                        zmq_msg_t *bulk);
void broker_send_error(broker_t *self, aq_bytes_t routing_id, int code, aq_bytes_t tag,
                       aq_bytes_t subject, const char *text);
/*  The session is to be closed once the message or pass in hand is done
    (the server does it: sessions_drop): a send to it failed. Until then it
    is offered no item. */
void broker_doom_peer(broker_t *self, peer_t *peer, const char *reason);
/*  The same for a session that left `unread` bytes of replies unread past
    what --max-pending allows (4.9): its connection is closed too. */
void broker_doom_unread(broker_t *self, peer_t *peer, uint64_t unread);
/*  Marks a queue for dispatch at the end of this pass of the loop. */
void broker_touch_queue(broker_t *self, queue_t *queue);
queue_t *broker_queue(broker_t *self, aq_bytes_t name, int create, aq_status_t *status);
/*  The queue, made if new and `peer` may make it (NULL: no client asked):
    the last tenth of --max-queues is for admin clients, and a key makes at
    most --max-queues-per-key. NULL with *status and *text otherwise. */
queue_t *broker_queue_for(broker_t *self, aq_bytes_t name, const peer_t *peer,
                          aq_status_t *status, const char **text);
/*  The lease of a delivery of this item. */
uint64_t broker_lease_ms(const item_t *item);
/*  What a client without the admin role may use of a broker-wide limit. */
uint64_t broker_unreserved(uint64_t limit);
int broker_is_admin(const peer_t *peer);
/*  The per-key limits apply to this session (not an admin key). */
int broker_counts_limits(const broker_t *self, const peer_t *peer);
/*  The queue is being forgotten: its key may make another. */
void broker_queue_forgotten(broker_t *self, queue_t *queue);
/*  The session is over: its key may open another. */
void broker_peer_forgotten(broker_t *self, peer_t *peer);
void broker_free_joiner(broker_t *self, joiner_t *joiner);
/*  The one way the replicated state changes: applies the record
    (state_apply), then appends it to the journal. 0, or what state_apply
    returned (nothing changed). */
int broker_apply(broker_t *self, const record_t *record, state_effects_t *effects);
/*  Whether a put may be accepted: the journal writes. */
int broker_log_accepting(const broker_t *self);
/*  Where the journal ends now: what a change just made waits for (0 in
    memory); whether a confirm up to `position` may go: the records are
    where the fsync mode says. */
uint64_t broker_log_end(const broker_t *self);
int broker_log_reached(const broker_t *self, uint64_t position);
/*  A SYNC that waits only for the disk: answered once the journal is there
    (persist_pass). */
void broker_log_wait(broker_t *self, producer_t *producer);
/*  What the journal counts an item's records as while it lives. */
uint64_t broker_log_size(const item_t *item);
/*  "memory", "always", "interval" or "never" (WELCOME's persistence). */
const char *broker_persistence(const broker_t *self);
/*  Sends `msg` to `routing_id` once every record appended so far is where
    the fsync mode says (at once in memory): the answer to a request whose
    change must survive a restart before the client hears of it (SHUTDOWN,
    DEAD requeue and purge, JOINED). Answers keep their order. If a sync
    failed, so that nothing more is ever confirmed, the client gets 507
    instead. Costs one copy of the encoded answer while it waits: one pass
    of the loop, or one sync. */
void broker_reply_logged(broker_t *self, aq_bytes_t routing_id, const aq_msg_t *msg);
/*  Sends the answers whose records the journal now holds. */
void broker_release_replies(broker_t *self);
/*  The broker is going away: the answers still waiting are not sent (their
    clients ask the next one again). */
void broker_forget_replies(broker_t *self);

/* producers.c */
producer_t *producers_get(broker_t *self, aq_bytes_t id);
producer_t *producers_open(broker_t *self, aq_bytes_t id, const char *key);
/*  state_t's producer_seen: a log read back says the producer with this id
    (and key, if not empty) has had its puts up to next - 1. */
int producers_seen(void *ctx, aq_bytes_t id, aq_bytes_t key, uint64_t next);
/*  The producer's session is `peer` (it said HELLO). */
void producers_attach(broker_t *self, producer_t *producer, peer_t *peer);
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
void producers_take_over(broker_t *self, producer_t *producer, const peer_t *old,
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


/* puts.c */
void broker_on_pull(broker_t *self);
/*  Tries the held puts of producers blocked on this queue, oldest first,
    while it has room (or refuses them if it was shut down). */
void broker_unblock(broker_t *self, queue_t *queue);

/* dispatch.c */
void broker_dispatch(broker_t *self, queue_t *queue);
void broker_release_joiners(broker_t *self, queue_t *queue);
/*  Takes an item back from its holder: delayed, or to the front of its
    queue, or dead once its attempts reach the queue's limit. */
void broker_take_back(broker_t *self, item_t *item, uint64_t delay_ms);
/*  Every item the consumer holds goes back, oldest first at the front. */
void broker_give_back_all(broker_t *self, peer_t *peer);
/*  An item's move to `state` (state_move), applied; and what a dead item
    means for the joins waiting. */
void broker_move(broker_t *self, item_t *item, item_state_t state);
void broker_on_lease_expired(broker_t *self, item_t *item);
/*  Shuts one queue down (see queue_state_t), releasing its joins with
    SHUT_DOWN if `state` is QUEUE_DISCARDING. */
void broker_shut_queue(broker_t *self, queue_t *queue, queue_state_t state);
/*  Shuts every queue down, and any queue made later. */
void broker_shut_all(broker_t *self, queue_state_t state);
/*  Moves every dead item of the queue back to its end (DEAD requeue, the
    dashboard's button): recorded, and delivered by the pass. Returns how
    many moved. */
uint64_t broker_requeue_dead(broker_t *self, queue_t *queue);

/* sessions.c */
/*  Ends a session: its items go back, its joins go, its connection closes
    if `close_connection`. */
void broker_drop_peer(broker_t *self, peer_t *peer, const char *reason, int close_connection);

/* commands.c */
void broker_on_router(broker_t *self);
void broker_on_join_timeout(broker_t *self, joiner_t *joiner);

/* server.c */
broker_t *broker_new(const broker_config_t *config, aq_status_t *status);
/*  A broker without sockets, keys or connection table: its handlers are
    fed by the caller (broker_on_router, broker_on_pull with the inboxes
    filled), its sends go to `send`. For tests and the fuzzer. */
broker_t *broker_new_detached(const broker_config_t *config, broker_send_fn *send, void *ctx);
/*  The end of one pass of the loop: deadlines due, deliveries of the
    queues this pass touched, sessions doomed by a failed send closed,
    dropped sessions freed. */
void broker_pass(broker_t *self);
void broker_destroy(broker_t **self_p);
aq_status_t broker_run(broker_t *self);

#endif
