/*  The broker: its configuration, its state and what its parts share
    (broker.c, below the handlers). Each part has its header: server.h owns
    the sockets and the loop; conns.h admits and closes connections;
    commands.h turns each ROUTER message into calls on the data modules
    (queue, store, ledger); puts.h takes puts from the PULL socket;
    producers.h keeps producers' sequences, held puts and SYNCs;
    dispatch.h delivers items; sessions.h is a session, and its end; auth.h
    holds client keys and roles. broker_t reaches sessions and producers
    only by pointer: their types belong to their modules. */
#ifndef BROKER_BROKER_H
#define BROKER_BROKER_H

#include <signal.h>
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

/*  How long an item NACKed without a delay waits before it is queued
    again: first_ms after its first delivery, times factor after each
    later one, at most max_ms, less up to half of it at random (jitter).
    first_ms 0: no wait (queued again at once). */
typedef struct {
    uint64_t first_ms, max_ms, factor;
} retry_t;

/*  A retry policy for one queue, other than the default. */
typedef struct {
    char queue[AQ_NAME_MAX + 1];
    retry_t retry;
} queue_retry_t;

#define ENTRY_RECORD_HEADER 5 /* a record in a replica's entry: u8 type, u32 length */
#define SHARDS_MAX 256 /* brokers in one service: an id's top 8 bits (PROTOCOL.md 4.15) */

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
    retry_t retry;          /* --retry: every queue's, unless --queue-retry says */
    queue_retry_t queue_retries[BROKER_QUEUE_LEASES_MAX];
    size_t queue_retry_count;
    uint64_t max_joins_per_peer;
    /* What one key (without keys: one host other than loopback) may hold of
       the broker's shared limits; admin keys are exempt, and the last tenth
       of --max-joins, --max-queues and --max-connections is kept for them. */
    uint64_t max_joins_per_key;
    uint64_t max_queues_per_key;
    uint64_t max_sessions_per_key;
    uint64_t max_held_bytes_per_key;
    uint64_t drain_ms;      /* on SIGTERM, wait this long at most for queues to drain */
    uint64_t max_delay_s;   /* a put may be delayed this long at most */
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
    uint64_t shard;         /* this broker's number in its service, 0-255 (4.15) */
    const char *service;    /* every broker of the service, comma-separated; NULL: alone */
    const char *peers;      /* every replica of this shard's group, HOST:PORT,...; NULL: none */
    const char *join;       /* this replica's HOST:PORT, joining a group that runs; or NULL */
    uint64_t node_id;       /* this replica's id: its place in `peers`, from 1, or the one
                               `asyncq replica add` gave it */
    uint64_t replica_snapshot; /* entries of the group's log between snapshots */
    uint64_t lead_balance_ms;  /* a service's shard hands the lead to its own voter (0: never) */
    char *const *argv;      /* how this broker was started: a leader that steps down
                               starts again from the group's log (persist.c) */
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
#define BROKER_REPLICA_HEARTBEAT_MS 300 /* --peers or --join */
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
#define BROKER_DEFAULT_MAX_DELAY_S 2592000 /* 30 days */
#define BROKER_DEFAULT_SEGMENT_BYTES (4 * 1024 * 1024)
#define BROKER_DEFAULT_REPLICA_SNAPSHOT 0 /* by the log's bytes: replica.h */
#define BROKER_DEFAULT_LEAD_BALANCE_MS 10000

/*  What a deadline_t in the broker's heap is for. */
enum {
    TIMER_SWEEP = 1,
    TIMER_HEARTBEAT,
    TIMER_JOIN,
    TIMER_LEASE,
    TIMER_DELAY,
    TIMER_DRAIN
};

/*  A session (sessions.h) and a producer (producers.h). */
struct peer;
struct producer;

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
    char service[AQ_TEXT_MAX + 1]; /* WELCOME's `service` field (4.15) */
    struct peer *untold;    /* told "shut down and empty" by its CREDIT's answer, not the pass */
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
    int handing_over;       /* a leader asked to stop: 1 settling (no deliveries), 2 its
                               lead asked to move; it exits once it has */
    int64_t settle_until_ms; /* ... 2 once nothing is in flight, or then */
    uint64_t next_serial;   /* sessions and queues */
    uint64_t random;        /* xorshift state: retry jitter (the leader's; never in a record) */
    uint64_t queues_forgotten; /* queues freed by the sweep, ever (metrics.c) */
    int64_t started_ms;
    uint64_t trimmed_rss;   /* resident bytes after the last malloc_trim */
    uint64_t refused_total[REFUSED_REASONS]; /* puts refused, every queue or none */
    ratelog_t bad_input;    /* rate-limited log lines, by cause */
    ratelog_t expiries;
    ratelog_t dead_letters;
    ratelog_t refusals;
    ratelog_t actions;      /* REOPEN, PURGE, DELETE, PAUSE, RESUME */
    struct journal *journal; /* durable brokers (persist.c); NULL: in memory */
    /*  A replica of a group (--peers, persist.c): the records of this pass,
        to be one entry of the group's log (u8 type, u32 length, body each),
        positions in bytes ever appended to entries, and how far the group
        has committed them. Only a serving leader changes the state through
        broker_apply; a follower applies the group's entries itself. */
    struct replica *replica;
    struct group *group;      /* persist.c's bookkeeping of the group */
    struct {
        uint8_t *data;
        size_t size, capacity;
    } entry;
    uint64_t entry_end;       /* position after the last record appended */
    uint64_t entry_committed; /* position the group has committed */
    int serving;              /* a replica: the leader, ready for clients */
    struct http *http;       /* the HTTP port (--metrics); NULL: none */
    uint64_t puts_end;      /* the journal's end after the last put accepted */
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
    int write_error_logged;    /* the journal cannot write, and the log said so */
} broker_t;

/*  A replica of a group that does not serve (a follower, or a leader not
    yet ready): it holds no session, takes no put, and changes its state
    only by the group's records (persist.c). */
static inline int broker_follows(const broker_t *self)
{
    return self->replica && !self->serving;
}

/* broker.c: what every part shares, below the handlers. */
int64_t broker_now_ms(void);
int64_t broker_now_us(void);
/*  The wall clock (what records hold: it survives a reboot). */
int64_t broker_wall_ms(void);
/*  How long an item of this queue NACKed without a delay waits, after its
    `attempts` deliveries (0: none): the queue's retry policy, jittered. */
uint64_t broker_retry_delay_ms(broker_t *self, const queue_t *queue, uint64_t attempts);
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
void broker_doom_peer(broker_t *self, struct peer *peer, const char *reason);
/*  The same for a session that left `unread` bytes of replies unread past
    what --max-pending allows (4.9): its connection is closed too. */
void broker_doom_unread(broker_t *self, struct peer *peer, uint64_t unread);
/*  Marks a queue for dispatch at the end of this pass of the loop. */
void broker_touch_queue(broker_t *self, queue_t *queue);
/*  The queue of that name; with `create`, made if new, within --max-queues
    (429 in *status past it) unless `create` is BROKER_QUEUE_UNLIMITED: a
    record names a queue that exists in the log (a restart, a replica),
    whatever the limit is now. */
queue_t *broker_queue(broker_t *self, aq_bytes_t name, int create, aq_status_t *status);
#define BROKER_QUEUE_UNLIMITED 2
/*  The queue, made if new and `peer` may make it (NULL: no client asked):
    the last tenth of --max-queues is for admin clients, and a key makes at
    most --max-queues-per-key. NULL with *status and *text otherwise. */
queue_t *broker_queue_for(broker_t *self, aq_bytes_t name, const struct peer *peer,
                          aq_status_t *status, const char **text);
/*  The lease of a delivery of this item. */
uint64_t broker_lease_ms(const item_t *item);
/*  What a client without the admin role may use of a broker-wide limit. */
uint64_t broker_unreserved(uint64_t limit);
int broker_is_admin(const struct peer *peer);
/*  The per-key limits apply to this session (not an admin key). */
int broker_counts_limits(const broker_t *self, const struct peer *peer);
/*  WELCOME's `service` field (PROTOCOL.md 4.15, 4.16), into self->service:
    `shard=K [replicas=R ]brokers=B[ groups=G]`. B names one address per
    shard of --service (a group's first), as clients before groups read it;
    G, only when a shard is a group of replicas, every shard's addresses
    ("a|b|c,d"). `replicas`: this replica's group as it is now
    (comma-separated; it takes this shard's place in G), or NULL. 0, or -1
    if the field would not fit in a WELCOME. */
int broker_service_field(broker_t *self, const char *replicas);
/*  The queue is being forgotten: its key may make another. */
void broker_queue_forgotten(broker_t *self, queue_t *queue);
/*  The session is over: its key may open another. */
void broker_peer_forgotten(broker_t *self, struct peer *peer);
void broker_free_joiner(broker_t *self, joiner_t *joiner);
/*  The one way the replicated state changes: applies the record
    (state_apply), then appends it to the journal. 0, or what state_apply
    returned (nothing changed). */
int broker_apply(broker_t *self, const record_t *record, state_effects_t *effects);
/*  The same, for a record that cannot fail to apply (a move of an item
    that exists and that nobody holds, an item gone): only the journal's
    buffer can fail to grow then, and the broker stops rather than leave an
    item half moved (its journal has everything before). */
void broker_apply_failed(const record_t *record) __attribute__((noreturn, cold));
static inline void broker_apply_must(broker_t *self, const record_t *record,
                                     state_effects_t *effects)
{
    if (broker_apply(self, record, effects))
        broker_apply_failed(record);
}
/*  Whether a put may be accepted: the journal writes. */
int broker_log_accepting(const broker_t *self);
/*  A snapshot is being written in slices: no queue may be forgotten (it
    may hold the queue's numbering, and an item of a queue made again under
    that name would mix with it when read back). */
int broker_log_snapshot_busy(const broker_t *self);
/*  Where the journal ends now: what a change just made waits for (0 in
    memory); whether a confirm up to `position` may go: the records are
    where the fsync mode says. */
uint64_t broker_log_end(const broker_t *self);
int broker_log_reached(const broker_t *self, uint64_t position);
/*  A SYNC that waits only for the disk: answered once the journal is there
    (persist_pass). */
void broker_log_wait(broker_t *self, struct producer *producer);
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
/*  A delivery (ITEM, ITEMS; `bulk` its batch, or NULL) of a replica's
    leader: sent once its records are committed, like the answers above,
    but not refused past their bound (credit bounds deliveries). Elsewhere
    sent at once. */
aq_status_t broker_send_logged(broker_t *self, aq_bytes_t routing_id, const aq_msg_t *msg,
                               zmq_msg_t *bulk);
/*  Sends the answers whose records the journal now holds. */
void broker_release_replies(broker_t *self);
/*  The broker is going away: the answers still waiting are not sent (their
    clients ask the next one again). */
void broker_forget_replies(broker_t *self);

/*  A stop was asked (SIGINT or SIGTERM, from the handler: async-signal
    safe), and whether it was: a replica that starts again must not lose
    one (persist.c). */
void broker_ask_stop(void);
int broker_stop_asked(void);
/*  A re-read of the clients directory (SIGHUP) or a state dump (SIGUSR1)
    was asked (from the handler: async-signal safe); broker_take_asked
    says whether one is still to do, and takes it. */
void broker_ask(int signal);
int broker_take_asked(int signal);
/*  Those asked and not yet done are raised again, with the caught signals
    blocked: a replica that starts again (execv) does them once its new
    loop runs, instead of losing them with this process image. */
void broker_carry_asked(void);
/*  The signals the broker catches (server.c): SIGINT, SIGTERM, SIGHUP,
    SIGUSR1. */
void broker_caught_signals(sigset_t *set);

#endif
