/*  Sockets, the event loop, and the operations that touch sockets: sending
    (with each session's unread bytes counted), heartbeats, dropping peers,
    forgetting idle queues. */
#include "server.h"
#include "commands.h"
#include "dispatch.h"
#include "http.h"
#include "journal.h"
#include "persist.h"
#include "producers.h"
#include "puts.h"
#include "sessions.h"

#include <assert.h>
#include <czmq.h>
#include <errno.h>
#include <limits.h>
#include <malloc.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

/*  Messages handled from one socket before looking at the other: keeps one
    busy socket from starving the other, and bounds a pass of the loop. */
#define BATCH 256
/*  Messages ZeroMQ may queue towards one peer. Deliveries are bounded by
    credit and replies by --max-pending (4.9), so this only catches a peer
    that stopped reading altogether. */
#define ROUTER_SNDHWM_SLACK 10000
/*  Messages ZeroMQ buffers per connection before it stops reading from it.
    PUTS carry many items each, so a few suffice. */
#define PULL_RCVHWM 32
#define ROUTER_RCVHWM 256
/*  Largest frame ZeroMQ reads on the ROUTER socket; beyond it, it drops the
    connection and the broker never sees the message. No valid frame is over
    16 KiB (an ACK of 1024 ids is 8 KiB, a NACK reason 1 KiB): one from 16 to
    64 KiB is read and refused with an ERROR carrying the request's tag, so
    the client hears what it did and keeps its session (PROTOCOL.md 9.1). */
#define ROUTER_MAXMSGSIZE (64 * 1024)
#define SWEEP_INTERVAL_MS 1000
#define BIND_ATTEMPTS 50
/*  Growth of the resident set since the last trim after which memory is
    handed back to the system: a burst of large messages must not stay in
    the broker's RSS. */
#define TRIM_AFTER_BYTES (16 * 1024 * 1024)
/*  A leader asked to stop first waits this long at most for the acks of
    what it has in flight (it delivers nothing more meanwhile), then this
    long at most for a voter to take its lead: one election's round,
    usually milliseconds, or a few election time-outs (0.5 s) if libraft
    dropped the request (asked again). */
#define SETTLE_MS 250
#define HAND_OVER_MS 3000

static void s_set_int(void *socket, int option, int value)
{
    zmq_setsockopt(socket, option, &value, sizeof value);
}

static void s_set_int64(void *socket, int option, int64_t value)
{
    zmq_setsockopt(socket, option, &value, sizeof value);
}

/*  Binds both sockets. With port 0 the PULL socket takes a free port P and
    the ROUTER must get P+1; if P+1 is taken, try another P. */
static aq_status_t s_bind(broker_t *self, aq_endpoint_t *endpoint)
{
    char pull[AQ_ENDPOINT_MAX], router[AQ_ENDPOINT_MAX];
    int wildcard = !endpoint->is_ipc && endpoint->port == 0;
    for (int attempt = 0; attempt < (wildcard ? BIND_ATTEMPTS : 1); attempt++) {
        if (wildcard) {
            snprintf(pull, sizeof pull, "tcp://%s:*", endpoint->host);
            if (zmq_bind(self->pull, pull) != 0)
                return AQ_BAD_ENDPOINT;
            char bound[AQ_ENDPOINT_MAX];
            size_t size = sizeof bound;
            zmq_getsockopt(self->pull, ZMQ_LAST_ENDPOINT, bound, &size);
            endpoint->port = atoi(strrchr(bound, ':') + 1);
            if (endpoint->port >= 65535) {
                zmq_unbind(self->pull, bound);
                endpoint->port = 0;
                continue;
            }
            aq_endpoint_router(endpoint, router, sizeof router);
            if (zmq_bind(self->router, router) == 0)
                return AQ_OK;
            zmq_unbind(self->pull, bound);
            endpoint->port = 0;
            continue;
        }
        aq_endpoint_pull(endpoint, pull, sizeof pull);
        aq_endpoint_router(endpoint, router, sizeof router);
        if (zmq_bind(self->pull, pull) != 0)
            return AQ_BAD_ENDPOINT;
        if (zmq_bind(self->router, router) != 0)
            return AQ_BAD_ENDPOINT;
        return AQ_OK;
    }
    return AQ_BAD_ENDPOINT;
}

/*  Options both sockets share. No ZMTP heartbeats: libzmq 4.3.4 cancels a
    timer by scanning every timer of its I/O thread, on every message of
    every connection that has one, and a broker with thousands of
    connections stalled on it. A peer host that vanished is found by TCP
    instead: unacknowledged data (our HEARTBEATs) times out after
    ZMQ_TCP_MAXRT (TCP_USER_TIMEOUT), an idle connection by keepalives. */
static void s_configure_common(broker_t *self, void *socket)
{
    int heartbeat = (int) self->config.heartbeat_ms;
    s_set_int(socket, ZMQ_LINGER, 0);
    s_set_int(socket, ZMQ_HANDSHAKE_IVL, (int) self->config.hello_timeout_ms);
    s_set_int(socket, ZMQ_TCP_MAXRT, heartbeat * 3);
    s_set_int(socket, ZMQ_TCP_KEEPALIVE, 1);
    s_set_int(socket, ZMQ_TCP_KEEPALIVE_IDLE, heartbeat * 3 / 1000 + 1);
    s_set_int(socket, ZMQ_TCP_KEEPALIVE_INTVL, heartbeat / 1000 + 1);
    s_set_int(socket, ZMQ_TCP_KEEPALIVE_CNT, 3);
}

static void s_configure(broker_t *self)
{
    s_configure_common(self, self->router);
    s_configure_common(self, self->pull);
    s_set_int(self->router, ZMQ_ROUTER_MANDATORY, 1);
    s_set_int(self->router, ZMQ_SNDHWM, (int) self->config.max_credit + ROUTER_SNDHWM_SLACK);
    s_set_int(self->router, ZMQ_RCVHWM, ROUTER_RCVHWM);
    s_set_int64(self->router, ZMQ_MAXMSGSIZE, ROUTER_MAXMSGSIZE);
    s_set_int(self->pull, ZMQ_RCVHWM, PULL_RCVHWM);
    /* Oversized puts up to twice the limit still get a TOO_BIG answer;
       beyond that ZeroMQ drops the connection before reading them whole. */
    uint64_t limit = self->config.max_item * 2 + 64 * 1024;
    s_set_int64(self->pull, ZMQ_MAXMSGSIZE, limit > INT64_MAX ? -1 : (int64_t) limit);
}

static void s_on_refused_connection(void *ctx, const char *peer, const char *why)
{
    broker_t *self = ctx;
    ratelog_line(&self->refusals, broker_now_ms(), "connection from %s closed: %s", peer, why);
}

/*  Enough descriptors for --max-connections (and a margin for the data
    directory and libzmq's own): the soft limit goes up to the hard one. */
static void s_raise_fd_limit(broker_t *self)
{
    struct rlimit limit;
    if (getrlimit(RLIMIT_NOFILE, &limit) != 0)
        return;
    rlim_t want = (rlim_t) self->config.max_connections + 256;
    if (limit.rlim_cur < want) {
        limit.rlim_cur = limit.rlim_max == RLIM_INFINITY || limit.rlim_max > want
                             ? want : limit.rlim_max;
        setrlimit(RLIMIT_NOFILE, &limit);
        getrlimit(RLIMIT_NOFILE, &limit);
    }
    if (limit.rlim_cur < want) {
        self->config.max_connections = limit.rlim_cur > 512 ? limit.rlim_cur - 256 : 256;
        log_line("only %llu file descriptors allowed: --max-connections lowered to %llu",
                 (unsigned long long) limit.rlim_cur,
                 (unsigned long long) self->config.max_connections);
    }
}

static aq_status_t s_open(broker_t *self, aq_endpoint_t *endpoint)
{
    char error[512];
    self->auth = auth_new(self->config.curve_secret, self->config.clients_dir, error,
                          sizeof error);
    if (!self->auth) {
        log_line("%s", error);
        return AQ_BAD_KEY;
    }
    self->pull_zsock = zsock_new(ZMQ_PULL);
    self->router_zsock = zsock_new(ZMQ_ROUTER);
    if (!self->pull_zsock || !self->router_zsock)
        return AQ_NOMEM;
    self->pull = zsock_resolve(self->pull_zsock);
    self->router = zsock_resolve(self->router_zsock);
    auth_apply(self->auth, self->pull_zsock);
    auth_apply(self->auth, self->router_zsock);
    s_configure(self);
    s_raise_fd_limit(self);
    conns_config_t conns = {
        .max = self->config.max_connections,
        .loopback_only = !auth_enabled(self->auth) && !self->config.insecure,
        .hello_timeout_ms = (int64_t) self->config.hello_timeout_ms,
        .refused = s_on_refused_connection,
        .ctx = self,
    };
    self->conns = conns_new(self->router, self->pull, &conns);
    if (!self->conns)
        return AQ_NOMEM;
    return s_bind(self, endpoint);
}

static aq_status_t s_send_zmq(void *ctx, aq_bytes_t routing_id, const aq_msg_t *msg,
                              zmq_msg_t *bulk)
{
    broker_t *self = ctx;
    return aq_msg_send(self->router, &routing_id, msg, bulk, ZMQ_DONTWAIT);
}

static void s_catch_signals(void);

/*  The state machine's side of queues: made with the broker's
    configuration, freed with their key's count. */
static queue_t *s_state_queue_make(void *ctx, aq_bytes_t name)
{
    aq_status_t status; /* a client's limits were checked when it asked */
    return broker_queue(ctx, name, BROKER_QUEUE_UNLIMITED, &status);
}

static void s_state_queue_free(void *ctx, queue_t *queue)
{
    broker_queue_forgotten(ctx, queue);
    queue_destroy(&queue);
}

/*  Everything but the sockets. NULL if out of memory. */
static broker_t *s_new(const broker_config_t *config, broker_send_fn *send, void *ctx)
{
    broker_t *self = calloc(1, sizeof *self);
    if (!self)
        return NULL;
    self->config = *config;
    self->send = send;
    self->send_ctx = ctx ? ctx : self;
    self->started_ms = broker_now_ms();
    self->random = (uint64_t) broker_now_us() ^ ((uint64_t) getpid() << 32) ^ (uintptr_t) self;
    ratelog_init(&self->bad_input, "bad input", 20);
    ratelog_init(&self->expiries, "lease expired", 10);
    ratelog_init(&self->dead_letters, "dead letters", 10);
    ratelog_init(&self->refusals, "refused", 20);
    ratelog_init(&self->actions, "queue actions", 20);
    deadlines_init(&self->deadlines);
    deadline_init(&self->sweep, TIMER_SWEEP);
    deadline_init(&self->heartbeat, TIMER_HEARTBEAT);
    list_init(&self->dropped_peers);
    list_init(&self->doomed_peers);
    list_init(&self->idle_producers);
    list_init(&self->dirty);
    list_init(&self->durable_waits);
    list_init(&self->waiting_answers);
    self->store = store_new();
    self->queues = dict_new();
    self->peers = dict_new();
    self->clients = dict_new();
    self->producers = dict_new();
    self->state = (state_t){.store = self->store, .queues = self->queues,
                            .queue_make = s_state_queue_make, .queue_free = s_state_queue_free,
                            .ctx = self};
    self->router_inbox = aq_inbox_new(AQ_FIELDS_FRAMES_MAX + 1);
    self->pull_inbox = aq_inbox_new(AQ_FIELDS_FRAMES_MAX);
    if (!self->store || !self->queues || !self->peers || !self->clients || !self->producers
        || !self->router_inbox || !self->pull_inbox
        || deadlines_set(&self->deadlines, &self->sweep, broker_now_ms() + SWEEP_INTERVAL_MS)
        || deadlines_set(&self->deadlines, &self->heartbeat,
                         broker_now_ms() + (int64_t) config->heartbeat_ms))
        broker_destroy(&self);
    if (self) {
        zuuid_t *uuid = zuuid_new();
        snprintf(self->broker_id, sizeof self->broker_id, "%s", uuid ? zuuid_str(uuid) : "broker");
        zuuid_destroy(&uuid);
        store_set_shard(self->store, (uint8_t) config->shard);
        /* A replica's lists its group's members too (persist.c); main.c
           checked that --service fits. */
        broker_service_field(self, NULL);
    }
    return self;
}

broker_t *broker_new_detached(const broker_config_t *config, broker_send_fn *send, void *ctx)
{
    broker_t *self = s_new(config, send, ctx);
    char error[256];
    conns_config_t conns = {.max = config->max_connections};
    if (self && (!(self->auth = auth_new(NULL, NULL, error, sizeof error))
                 || !(self->conns = conns_new(NULL, NULL, &conns))))
        broker_destroy(&self);
    return self;
}

broker_t *broker_new(const broker_config_t *config, aq_status_t *status)
{
    aq_endpoint_t endpoint;
    *status = aq_endpoint_parse(config->bind, 1, &endpoint);
    if (*status)
        return NULL;
    broker_t *self = s_new(config, s_send_zmq, NULL);
    if (!self) {
        *status = AQ_NOMEM;
        return NULL;
    }
    *status = s_open(self, &endpoint);
    if (*status) {
        int error = errno; /* why the bind failed, for the caller's message */
        broker_destroy(&self);
        errno = error;
        return NULL;
    }
    aq_endpoint_local(&endpoint, self->address, sizeof self->address);
    s_catch_signals();
    return self;
}

/*  Drops the sessions doomed while the message or pass was handled. */
static void s_drop_doomed_peers(broker_t *self)
{
    list_node_t *node;
    while ((node = list_first(&self->doomed_peers))) {
        peer_t *peer = list_entry(node, peer_t, doomed_link);
        broker_drop_peer(self, peer, peer->doom_reason, peer->doom_close);
    }
}

static void s_free_dropped_peers(broker_t *self)
{
    list_node_t *node;
    while ((node = list_first(&self->dropped_peers))) {
        list_remove(node);
        free(list_entry(node, peer_t, dropped_link));
    }
}

static void s_detach_each_peer(void *ctx, void *value)
{
    (void) ctx;
    peer_t *peer = value;
    /* dict_each must not see the dict change; the items and queues are
       freed whole next. */
    if (peer->consumer.queue)
        peer->consumer.queue->consumer_count--;
    if (peer->producer)
        peer->producer->peer = NULL;
    list_node_t *node;
    while ((node = list_first(&peer->joins))) /* freed with their queues */
        list_remove(node);
    free(peer);
}

static void s_free_joiners(list_node_t *list)
{
    list_node_t *node;
    while ((node = list_first(list))) {
        list_remove(node);
        free(list_entry(node, joiner_t, link));
    }
}

static void s_free_queue(void *ctx, void *value)
{
    (void) ctx;
    queue_t *queue = value;
    s_free_joiners(&queue->joiners_before);
    s_free_joiners(&queue->joiners_all);
    queue->joiner_count = 0;
    queue_destroy(&queue);
}

void broker_destroy(broker_t **self_p)
{
    broker_t *self = *self_p;
    if (!self)
        return;
    http_destroy(&self->http);
    /* What the journal has buffered is written and synced; what follows
       (sessions ending, queues freed) is not a change to record. */
    persist_close(self);
    /* Peers first, then producers (their held puts), then queues, then
       the store with every item. */
    list_init(&self->doomed_peers); /* every peer goes now */
    if (self->peers)
        dict_each(self->peers, s_detach_each_peer, self);
    s_free_dropped_peers(self);
    if (self->producers)
        producers_destroy_all(self);
    auth_owners_destroy(&self->owners);
    if (self->queues)
        dict_each(self->queues, s_free_queue, self);
    dict_destroy(&self->queues);
    dict_destroy(&self->peers);
    dict_destroy(&self->clients);
    dict_destroy(&self->producers);
    store_destroy(&self->store);
    deadlines_fini(&self->deadlines);
    aq_inbox_destroy(&self->router_inbox);
    aq_inbox_destroy(&self->pull_inbox);
    conns_destroy(&self->conns);
    zsock_destroy((zsock_t **) &self->pull_zsock);
    zsock_destroy((zsock_t **) &self->router_zsock);
    auth_destroy(&self->auth);
    free(self);
    *self_p = NULL;
}

/*  Collects peers into an array, for visits that may drop them. */
typedef struct {
    peer_t **list;
    size_t count;
} peer_list_t;

static void s_collect_peer(void *ctx, void *value)
{
    peer_list_t *peers = ctx;
    peers->list[peers->count++] = value;
}

static int s_collect_peers(broker_t *self, peer_list_t *peers)
{
    peers->count = 0;
    peers->list = calloc(dict_size(self->peers) + 1, sizeof *peers->list);
    if (!peers->list)
        return -1;
    dict_each(self->peers, s_collect_peer, peers);
    return 0;
}

/*  Sends HEARTBEAT n to every session. libzmq does not say which peer's
    connection closed, but with ROUTER_MANDATORY a send to it fails: that is
    how a consumer killed while holding items loses them back to the queue
    within one interval. O(sessions) per interval. */
static void s_probe_sessions(broker_t *self)
{
    peer_list_t peers;
    if (s_collect_peers(self, &peers))
        return; /* out of memory: try at the next interval */
    int64_t now = broker_now_ms();
    for (size_t i = 0; i < peers.count; i++) {
        peer_t *peer = peers.list[i];
        /* A probe unanswered for a whole interval (s_count_reply); one
           answered is forgotten before its slot in beat_bytes is reused. */
        if (peer->probe_beat) {
            if (peer->read_bytes >= peer->beat_bytes[peer->probe_beat % PEER_BEATS])
                peer->probe_beat = 0;
            else if (now - peer->probe_ms >= (int64_t) self->config.heartbeat_ms) {
                broker_doom_unread(self, peer, peer->reply_bytes - peer->read_bytes);
                continue;
            }
        }
        aq_msg_t heartbeat = {.cmd = AQ_CMD_HEARTBEAT, .beat = peer->beat + 1};
        aq_bytes_t rid = {peer->routing_id, peer->routing_id_size};
        if (broker_send(self, rid, &heartbeat, NULL)) {
            broker_drop_peer(self, peer, errno == EHOSTUNREACH ? "peer gone" : "peer too slow",
                             0);
            continue;
        }
        peer->beat++;
        peer->beat_bytes[peer->beat % PEER_BEATS] = peer->reply_bytes;
    }
    free(peers.list);
}

/*  SIGHUP: the clients directory again. Sessions of keys no longer there
    are closed with their connections; the others get their new grants. */
static void s_reload_keys(broker_t *self)
{
    char error[512];
    int keys = auth_reload(self->auth, error, sizeof error);
    if (keys < 0) {
        log_line("SIGHUP: clients directory not reloaded, the old keys stay: %s", error);
        return;
    }
    peer_list_t peers;
    if (s_collect_peers(self, &peers))
        return;
    size_t closed = 0;
    for (size_t i = 0; i < peers.count; i++) {
        const auth_grant_t *grant = auth_lookup(self->auth, peers.list[i]->key);
        if (grant)
            peers.list[i]->grant = *grant;
        else {
            broker_drop_peer(self, peers.list[i], "its key was revoked", 1);
            closed++;
        }
    }
    free(peers.list);
    log_line("SIGHUP: %d client keys allowed; %zu sessions of revoked keys closed", keys, closed);
}

typedef struct {
    broker_t *broker;
    queue_t **list;
    size_t count;
    int64_t before_ms;
} queue_sweep_t;

static void s_collect_unused(void *ctx, void *value)
{
    queue_sweep_t *sweep = ctx;
    queue_t *queue = value;
    if (queue_is_unused(queue) && queue->last_active_ms < sweep->before_ms
        && !list_linked(&queue->dirty_link))
        sweep->list[sweep->count++] = queue;
}

/*  Queues with nothing in them and nobody using them are forgotten after
    --queue-idle-ms, so names cannot pile up to --max-queues. O(queues) per
    sweep. */
static void s_forget_unused_queues(broker_t *self)
{
    /* Not while a snapshot is written in slices: it may have the queue's
       numbering already and an item of a queue made again under its name
       later, and reading it back would mix the two. */
    if (broker_log_snapshot_busy(self))
        return;
    queue_sweep_t sweep = {self, calloc(dict_size(self->queues) + 1, sizeof(queue_t *)), 0,
                           broker_now_ms() - (int64_t) self->config.queue_idle_ms};
    if (!sweep.list)
        return;
    dict_each(self->queues, s_collect_unused, &sweep);
    for (size_t i = 0; i < sweep.count; i++) {
        char name[AQ_NAME_MAX + 1]; /* the record outlives the queue it names */
        memcpy(name, sweep.list[i]->name, sizeof name);
        record_t record = {.type = RECORD_FORGET, .queue = aq_bytes_str(name)};
        state_effects_t effects;
        if (broker_apply(self, &record, &effects) == 0)
            self->queues_forgotten++; /* renders in progress re-sort (metrics.c) */
    }
    free(sweep.list);
}

/*  The process's resident set, in bytes (0 if it cannot be read). */
static uint64_t s_rss_bytes(void)
{
    FILE *file = fopen("/proc/self/statm", "r");
    unsigned long long pages = 0, resident = 0;
    if (file) {
        if (fscanf(file, "%llu %llu", &pages, &resident) != 2)
            resident = 0;
        fclose(file);
    }
    return (uint64_t) resident * (uint64_t) sysconf(_SC_PAGESIZE);
}

/*  Hands freed memory back when the resident set grew by TRIM_AFTER_BYTES
    since the last trim. The RSS decides, not mallinfo: libzmq's I/O thread
    allocates incoming frames in an arena of its own, which mallinfo does
    not count and malloc_trim does trim. */
static void s_trim(broker_t *self)
{
    uint64_t rss = s_rss_bytes();
    if (rss < self->trimmed_rss + TRIM_AFTER_BYTES)
        return;
    malloc_trim(0);
    self->trimmed_rss = s_rss_bytes();
}

/*  Once a second: forgotten producers and queues, stalled SYNCs, and memory
    a burst took handed back. */
static void s_sweep(broker_t *self)
{
    producers_sweep(self);
    s_forget_unused_queues(self);
    s_trim(self);
}

static void s_fire(broker_t *self, deadline_t *deadline, int64_t now)
{
    switch (deadline->kind) {
    case TIMER_SWEEP:
        if (!broker_follows(self)) /* a follower's state is the group's records */
            s_sweep(self);
        deadlines_set(&self->deadlines, &self->sweep, now + SWEEP_INTERVAL_MS);
        break;
    case TIMER_HEARTBEAT:
        s_probe_sessions(self);
        s_drop_doomed_peers(self);
        s_free_dropped_peers(self);
        deadlines_set(&self->deadlines, &self->heartbeat, now + (int64_t) self->config.heartbeat_ms);
        break;
    case TIMER_JOIN:
        deadlines_cancel(&self->deadlines, deadline);
        broker_on_join_timeout(self, list_entry(deadline, joiner_t, deadline));
        break;
    case TIMER_LEASE:
        broker_on_lease_expired(self, list_entry(deadline, item_t, timer));
        break;
    case TIMER_DELAY:
        assert(!"delays are s_fire_deadlines' own");
        break;
    case TIMER_DRAIN:
        deadlines_cancel(&self->deadlines, deadline);
        self->stopping = 2;
        break;
    default:
        assert(!"deadline of unknown kind");
    }
}

static void s_dispatch_dirty(broker_t *self);

/*  Delays that ended, in the order of their times, then of their seqs:
    delayed puts due at one time are queued in the order they were put. */
static int s_by_due(const void *a, const void *b)
{
    const item_t *x = *(item_t *const *) a, *y = *(item_t *const *) b;
    if (x->until_ms != y->until_ms)
        return (x->until_ms > y->until_ms) - (x->until_ms < y->until_ms);
    return (x->seq > y->seq) - (x->seq < y->seq);
}

#define DUE_BATCH 256

static void s_queue_due(broker_t *self, item_t **due, size_t count)
{
    qsort(due, count, sizeof *due, s_by_due);
    for (size_t i = 0; i < count; i++) {
        broker_move(self, due[i], ITEM_QUEUED);
        broker_touch_queue(self, due[i]->queue);
    }
}

static void s_fire_deadlines(broker_t *self)
{
    int64_t now = broker_now_ms();
    deadline_t *deadline;
    item_t *due[DUE_BATCH];
    size_t due_count = 0;
    while ((deadline = deadlines_first(&self->deadlines)) && deadline->at <= now) {
        if (deadline->kind != TIMER_DELAY) {
            s_fire(self, deadline, now);
            continue;
        }
        deadlines_cancel(&self->deadlines, deadline);
        due[due_count++] = list_entry(deadline, item_t, timer);
        if (due_count == DUE_BATCH) {
            s_queue_due(self, due, due_count);
            due_count = 0;
        }
    }
    s_queue_due(self, due, due_count);
    conns_expire(self->conns, now);
}

void broker_pass(broker_t *self)
{
    s_fire_deadlines(self);
    /* Written before delivered: an item a consumer gets is in the journal
       (the system's, at least), so a crash cannot make it vanish and come
       back under another id when its producer sends it again. */
    persist_pass(self);
    s_dispatch_dirty(self);
    persist_pass(self);
}

static int s_poll_timeout(broker_t *self)
{
    deadline_t *first = deadlines_first(&self->deadlines);
    int64_t at = first ? first->at : -1;
    int64_t conn = conns_next_deadline(self->conns);
    if (conn >= 0 && (at < 0 || conn < at))
        at = conn;
    if (at < 0)
        return -1;
    int64_t wait = at - broker_now_ms();
    return wait <= 0 ? 0 : wait > 60000 ? 60000 : (int) wait;
}

static void s_drain_router(broker_t *self)
{
    for (int i = 0; i < BATCH; i++) {
        if (aq_inbox_recv(self->router_inbox, self->router, 1, ZMQ_DONTWAIT) != AQ_OK)
            break;
        broker_on_router(self);
        s_drop_doomed_peers(self);
        s_free_dropped_peers(self);
    }
    aq_inbox_clear(self->router_inbox);
}

static void s_drain_pull(broker_t *self)
{
    for (int i = 0; i < BATCH; i++) {
        if (aq_inbox_recv(self->pull_inbox, self->pull, 0, ZMQ_DONTWAIT) != AQ_OK)
            break;
        broker_on_pull(self);
        s_drop_doomed_peers(self);
        s_free_dropped_peers(self);
    }
    aq_inbox_clear(self->pull_inbox);
}

/*  Delivers what this pass made deliverable: one dispatch per queue per
    pass, so items that arrived together leave together (ITEMS batches). */
static void s_dispatch_dirty(broker_t *self)
{
    for (;;) {
        /* A peer dropped gives its items back: their queue is dispatched
           in this pass too. */
        s_drop_doomed_peers(self);
        list_node_t *node = list_first(&self->dirty);
        if (!node)
            break;
        list_remove(node);
        /* Puts a dispatch let in (held ones, the queue having room again)
           are written before any of them is delivered (invariant 8). */
        persist_write(self);
        broker_dispatch(self, list_entry(node, queue_t, dirty_link));
    }
    s_free_dropped_peers(self);
}

static void s_read_auth_log(broker_t *self)
{
    char key[AUTH_KEY_SIZE + 1], from[64];
    while (auth_read_refusal(self->auth, key, sizeof key, from, sizeof from)) {
        char escaped[256];
        ratelog_line(&self->refusals, broker_now_ms(),
                     "client key %s from %s is not in the clients directory",
                     log_escape(escaped, sizeof escaped, key, strlen(key)), from);
    }
}

/*  SIGINT and SIGTERM: the first starts a graceful stop, the second ends
    it at once. SIGHUP: re-read the clients directory. SIGUSR1: write the
    state to --state-dump. */
static volatile sig_atomic_t s_signals;

static void s_on_signal(int sig)
{
    if (sig == SIGHUP || sig == SIGUSR1)
        broker_ask(sig);
    else {
        s_signals++;
        broker_ask_stop();
    }
}

static int s_dump_write(void *ctx, const char *text, size_t size)
{
    return fwrite(text, 1, size, ctx) == size ? 0 : -1;
}

/*  The whole replicated state, as text, to a file beside --state-dump
    renamed over it once complete: a reader never sees half of it. Written
    on the loop (about a microsecond per item). */
static void s_dump_state(broker_t *self)
{
    if (!self->config.state_dump) {
        log_line("SIGUSR1: no --state-dump file: ignored");
        return;
    }
    char partial[PATH_MAX];
    snprintf(partial, sizeof partial, "%s.partial", self->config.state_dump);
    int64_t started = broker_now_us();
    FILE *file = fopen(partial, "w");
    int rc = file ? state_dump(&self->state, s_dump_write, file) : -1;
    if (file && fclose(file))
        rc = -1;
    if (rc < 0 || rename(partial, self->config.state_dump)) {
        log_line("SIGUSR1: cannot write the state to %s: %s", self->config.state_dump,
                 strerror(errno));
        unlink(partial);
        return;
    }
    log_line("state written to %s: %zu items in %lld us", self->config.state_dump,
             store_count(self->store), (long long) (broker_now_us() - started));
}

static void s_count_outstanding(void *ctx, void *value)
{
    const queue_t *queue = value;
    *(uint64_t *) ctx += queue->ready_count + queue->inflight_count + queue->delayed_count;
}

static uint64_t s_outstanding(broker_t *self)
{
    uint64_t count = 0;
    dict_each(self->queues, s_count_outstanding, &count);
    return count;
}

static void s_count_in_flight(void *ctx, void *value)
{
    *(uint64_t *) ctx += ((const queue_t *) value)->inflight_count;
}

static uint64_t s_in_flight(broker_t *self)
{
    uint64_t count = 0;
    dict_each(self->queues, s_count_in_flight, &count);
    return count;
}

/*  The graceful form of shutdown for every queue; the loop ends once they
    have drained, or when the drain timer fires. */
static void s_start_stopping(broker_t *self)
{
    if (self->replica) {
        /* The group's log holds everything; another replica leads. */
        log_line("stopping: replica %llu (%zu items in the group's log; it stays in its group: "
                 "asyncq replica remove takes it out)",
                 (unsigned long long) self->config.node_id, store_count(self->store));
        if (!self->handing_over && persist_can_hand_over(self)) {
            /* First it settles: it delivers nothing more, and the acks of
               what is in flight come in (the next leader would deliver
               those items again). Then it hands its lead over, and exits
               once another leads (s_step_down, a stop asked); the drain
               timer bounds the whole. */
            int64_t now = broker_now_ms();
            self->handing_over = 1;
            self->settle_until_ms = now + SETTLE_MS;
            deadline_init(&self->drain, TIMER_DRAIN);
            deadlines_set(&self->deadlines, &self->drain, now + SETTLE_MS + HAND_OVER_MS);
            return;
        }
        self->stopping = 2;
        return;
    }
    if (self->journal) {
        /* Everything is in the journal: nothing is lost by stopping now,
           and the queues are not shut down for the next start. */
        log_line("stopping: %llu items kept in %s for the next start",
                 (unsigned long long) store_count(self->store), self->config.data_dir);
        self->stopping = 2;
        return;
    }
    self->stopping = 1;
    log_line("stopping: puts refused, %llu items to drain (at most %llu ms; a second "
             "signal stops at once)",
             (unsigned long long) s_outstanding(self), (unsigned long long) self->config.drain_ms);
    broker_shut_all(self, QUEUE_DRAINING);
    deadline_init(&self->drain, TIMER_DRAIN);
    deadlines_set(&self->deadlines, &self->drain,
                  broker_now_ms() + (int64_t) self->config.drain_ms);
}

static int s_should_exit(broker_t *self)
{
    /* Settled (nothing in flight, or its time up), it asks a voter to
       lead; asked again until the drain timer fires (a change of the
       group under way, or a voter that did not take the lead). */
    if (self->handing_over && !self->stopping && !persist_handing_over(self)
        && (self->handing_over == 2 || s_in_flight(self) == 0
            || broker_now_ms() >= self->settle_until_ms)) {
        int again = self->handing_over == 2;
        self->handing_over = 2;
        if (!persist_hand_over_to_stop(self, again)) {
            log_line("replica %llu still leads: no voter to hand the lead to; stopping",
                     (unsigned long long) self->config.node_id);
            self->stopping = 2;
        }
    }
    if (s_signals && !self->stopping && !self->handing_over)
        s_start_stopping(self);
    if (s_signals > 1 || self->stopping > 1) {
        if (!self->journal && !self->replica)
            log_line("stopping now: %llu items not processed are lost",
                     (unsigned long long) s_outstanding(self));
        return 1;
    }
    return self->stopping && s_outstanding(self) == 0;
}

/*  Caught from the moment the broker listens (before it says READY):
    a SIGUSR1 sent at once must not end it. */
static void s_catch_signals(void)
{
    struct sigaction action = {0};
    action.sa_handler = s_on_signal;
    sigemptyset(&action.sa_mask);
    sigaction(SIGINT, &action, NULL); /* replaces czmq's handler */
    sigaction(SIGTERM, &action, NULL);
    sigaction(SIGHUP, &action, NULL);
    sigaction(SIGUSR1, &action, NULL);
    /* A replica that starts again (execv) was stepping down with these
       blocked (persist.c), so that one sent meanwhile waits for this. */
    sigset_t caught;
    broker_caught_signals(&caught);
    sigprocmask(SIG_UNBLOCK, &caught, NULL);
}

aq_status_t broker_run(broker_t *self)
{
    s_catch_signals();
    /* The monitors are polled by their descriptors, as plain files: a
       socket in zmq_poll costs two mailbox checks (a system call each) on
       every wake, and these carry only connection events. A descriptor
       signals messages that arrive after a read found none: they are read
       to the end once here, and conns_on_events always reads to the end. */
    int monitor_fds[2] = {zsock_fd(conns_monitor(self->conns, 0)),
                          zsock_fd(conns_monitor(self->conns, 1))};
    conns_on_events(self->conns, broker_now_ms());
    while (!s_should_exit(self)) {
        int sync_fd = self->journal ? journal_sync_fd(self->journal) : persist_fd(self);
        /* A leader handing its lead over takes no request meanwhile (they
           would wait for the hand-over's end, s_group_append): they stay
           in its sockets, and once another leads their clients ask that
           one again. */
        short requests = persist_handing_over(self) ? 0 : ZMQ_POLLIN;
        zmq_pollitem_t items[7] = {{self->router, 0, requests, 0},
                                   {self->pull, 0, requests, 0},
                                   {NULL, monitor_fds[0], ZMQ_POLLIN, 0},
                                   {NULL, monitor_fds[1], ZMQ_POLLIN, 0}};
        int count = 4, auth_at = -1, sync_at = -1;
        if (auth_log_socket(self->auth))
            items[auth_at = count++] = (zmq_pollitem_t){auth_log_socket(self->auth), 0, ZMQ_POLLIN, 0};
        if (sync_fd >= 0)
            items[sync_at = count++] = (zmq_pollitem_t){NULL, sync_fd, ZMQ_POLLIN, 0};
        int http_at = -1, http_timeout = -1;
        if (self->http) {
            items[http_at = count++] = (zmq_pollitem_t){NULL, http_fd(self->http), ZMQ_POLLIN, 0};
            http_timeout = http_timeout_ms(self->http);
        }
        int64_t http_due = http_timeout >= 0 ? broker_now_ms() + http_timeout : INT64_MAX;
        int timeout = s_poll_timeout(self);
        if (http_timeout >= 0 && (timeout < 0 || http_timeout < timeout))
            timeout = http_timeout;
        int group_timeout = persist_timeout_ms(self);
        if (group_timeout >= 0 && (timeout < 0 || group_timeout < timeout))
            timeout = group_timeout;
        if (self->handing_over == 1) { /* settling: looked at again by then */
            int64_t left = self->settle_until_ms - broker_now_ms();
            int settle = left > 0 ? (int) left : 0;
            if (timeout < 0 || settle < timeout)
                timeout = settle;
        }
        /* A journal that cannot write tries again every second. */
        if (self->journal && journal_error(self->journal) && (timeout < 0 || timeout > 1000))
            timeout = 1000;
        int rc = zmq_poll(items, count, timeout);
        if (rc < 0 && errno != EINTR) {
            log_line("poll failed: %s", zmq_strerror(errno));
            return AQ_TRANSPORT;
        }
        if (broker_take_asked(SIGHUP))
            s_reload_keys(self);
        if (broker_take_asked(SIGUSR1))
            s_dump_state(self);
        int64_t now = broker_now_ms();
        /* Only what poll found readable is read: every read that finds
           nothing costs libzmq a system call or two (its command mailbox),
           and with one item in flight (credit 1) those were a quarter of
           the broker's system calls per item. */
        if ((items[2].revents | items[3].revents) & ZMQ_POLLIN)
            conns_on_events(self->conns, now);
        if (sync_at >= 0 && (items[sync_at].revents & ZMQ_POLLIN) && self->journal)
            persist_on_synced(self);
        /* A replica's log runs every turn: its timers (heartbeats,
           elections) are due whether its descriptor was readable or not. */
        persist_run(self);
        /* A hand-over started in this turn (persist_run, lead balancing)
           leaves what came in it unread too. */
        int taking = !persist_handing_over(self);
        if (taking && (items[0].revents & ZMQ_POLLIN))
            s_drain_router(self);
        if (taking && (items[1].revents & ZMQ_POLLIN))
            s_drain_pull(self);
        if (auth_at >= 0 && (items[auth_at].revents & ZMQ_POLLIN))
            s_read_auth_log(self);
        /* HTTP requests are read and answered here, between two passes,
           like messages: a render sees one moment of the broker. Only when
           the port has input or a time-out is due: a pass without HTTP
           pays no system call for it. */
        if (http_at >= 0 && ((items[http_at].revents & ZMQ_POLLIN) || now >= http_due))
            http_run(self->http);
        broker_pass(self);
        if (self->http)
            http_resume(self->http);
    }
    return AQ_OK;
}
