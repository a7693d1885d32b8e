/*  Sockets, the event loop, and the operations that touch sockets: sending,
    dispatching items to consumers, answering joins, dropping peers. */
#include "broker.h"

#include <assert.h>
#include <czmq.h>
#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

/*  Messages handled from one socket before looking at the other: keeps one
    busy socket from starving the other. */
#define BATCH 256
/*  Outgoing messages queued for one peer before it counts as too slow and is
    dropped. Credit bounds item deliveries far below this. */
#define ROUTER_SNDHWM 100000
/*  Puts buffered by ZeroMQ per producer connection; with the queue's
    maxsize, this bounds what a full queue costs in memory. */
#define PULL_RCVHWM 100
/*  Largest message accepted on the ROUTER socket (commands, acks). */
#define ROUTER_MAXMSGSIZE (64 * 1024)
#define SWEEP_INTERVAL_MS (60 * 1000)
#define BAD_INPUT_LOG_PER_SECOND 20
#define BIND_ATTEMPTS 50

int64_t broker_now_ms(void)
{
    return zclock_mono();
}

void broker_log(broker_t *self, const char *format, ...)
{
    (void) self;
    char line[1024];
    va_list args;
    va_start(args, format);
    vsnprintf(line, sizeof line, format, args);
    va_end(args);
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    fprintf(stderr, "%04d-%02d-%02dT%02d:%02d:%02dZ asyncq-broker: %s\n", tm.tm_year + 1900,
            tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, line);
}

/*  One line per bad message, at most BAD_INPUT_LOG_PER_SECOND a second so a
    flood of garbage cannot flood the log; the rest are counted. */
void broker_log_bad_input(broker_t *self, const char *format, ...)
{
    self->bad_input_total++;
    int64_t now = broker_now_ms();
    if (now - self->log_window_ms >= 1000) {
        if (self->log_lines > BAD_INPUT_LOG_PER_SECOND)
            broker_log(self, "%d more bad messages not logged",
                       self->log_lines - BAD_INPUT_LOG_PER_SECOND);
        self->log_window_ms = now;
        self->log_lines = 0;
    }
    if (self->log_lines++ >= BAD_INPUT_LOG_PER_SECOND)
        return;
    char line[900];
    va_list args;
    va_start(args, format);
    vsnprintf(line, sizeof line, format, args);
    va_end(args);
    broker_log(self, "bad input: %s", line);
}

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

static void s_configure(broker_t *self)
{
    s_set_int(self->router, ZMQ_ROUTER_MANDATORY, 1);
    s_set_int(self->router, ZMQ_SNDHWM, ROUTER_SNDHWM);
    s_set_int64(self->router, ZMQ_MAXMSGSIZE, ROUTER_MAXMSGSIZE);
    s_set_int(self->router, ZMQ_LINGER, 0);
    /* ZMTP heartbeats close a connection whose peer stopped answering (a
       host gone, a cut link); the next probe then finds the peer gone. */
    int heartbeat = (int) self->config.heartbeat_ms;
    s_set_int(self->router, ZMQ_HEARTBEAT_IVL, heartbeat);
    s_set_int(self->router, ZMQ_HEARTBEAT_TIMEOUT, heartbeat * 3);
    s_set_int(self->pull, ZMQ_RCVHWM, PULL_RCVHWM);
    /* Oversized puts up to twice the limit still get a TOO_BIG answer;
       beyond that ZeroMQ drops the connection before reading them whole. */
    uint64_t limit = self->config.max_item * 2 + 64 * 1024;
    s_set_int64(self->pull, ZMQ_MAXMSGSIZE, limit > INT64_MAX ? -1 : (int64_t) limit);
    s_set_int(self->pull, ZMQ_LINGER, 0);
}

broker_t *broker_new(const broker_config_t *config, aq_status_t *status)
{
    aq_endpoint_t endpoint;
    *status = aq_endpoint_parse(config->bind, 1, &endpoint);
    if (*status)
        return NULL;
    broker_t *self = calloc(1, sizeof *self);
    if (!self) {
        *status = AQ_NOMEM;
        return NULL;
    }
    self->config = *config;
    deadlines_init(&self->deadlines);
    deadline_init(&self->sweep, TIMER_SWEEP);
    deadline_init(&self->heartbeat, TIMER_HEARTBEAT);
    list_init(&self->dropped_peers);
    self->pull_zsock = zsock_new(ZMQ_PULL);
    self->router_zsock = zsock_new(ZMQ_ROUTER);
    self->store = store_new();
    self->queues = dict_new();
    self->peers = dict_new();
    self->clients = dict_new();
    self->producers = dict_new();
    self->router_inbox = aq_inbox_new();
    self->pull_inbox = aq_inbox_new();
    if (!self->pull_zsock || !self->router_zsock || !self->store || !self->queues
        || !self->peers || !self->clients || !self->producers || !self->router_inbox
        || !self->pull_inbox
        || deadlines_set(&self->deadlines, &self->sweep, broker_now_ms() + SWEEP_INTERVAL_MS)
        || deadlines_set(&self->deadlines, &self->heartbeat,
                         broker_now_ms() + (int64_t) config->heartbeat_ms)) {
        *status = AQ_NOMEM;
        broker_destroy(&self);
        return NULL;
    }
    self->pull = zsock_resolve(self->pull_zsock);
    self->router = zsock_resolve(self->router_zsock);
    s_configure(self);
    *status = s_bind(self, &endpoint);
    if (*status) {
        broker_destroy(&self);
        return NULL;
    }
    aq_endpoint_local(&endpoint, self->address, sizeof self->address);
    zuuid_t *uuid = zuuid_new();
    snprintf(self->broker_id, sizeof self->broker_id, "%s", uuid ? zuuid_str(uuid) : "broker");
    zuuid_destroy(&uuid);
    return self;
}

static void s_free_peer(peer_t *peer)
{
    free(peer);
}

static void s_free_dropped_peers(broker_t *self)
{
    list_node_t *node;
    while ((node = list_first(&self->dropped_peers))) {
        list_remove(node);
        s_free_peer(list_entry(node, peer_t, dropped_link));
    }
}

static void s_drop_each_peer(void *ctx, void *value)
{
    broker_t *self = ctx;
    peer_t *peer = value;
    /* dict_each must not see the dict change: only detach here. */
    if (peer->consumer.queue)
        queue_detach(peer->consumer.queue, &peer->consumer);
    if (peer->producer)
        peer->producer->peer = NULL;
    list_node_t *node;
    while ((node = list_first(&peer->joins))) { /* freed with their queues */
        list_remove(node);
        list_entry(node, joiner_t, peer_link)->peer = NULL;
    }
    list_push_back(&self->dropped_peers, &peer->dropped_link);
}

static void s_free_queue_joiners(broker_t *self, queue_t *queue)
{
    list_node_t *lists[2] = {&queue->joiners_before, &queue->joiners_all};
    for (int i = 0; i < 2; i++) {
        list_node_t *node;
        while ((node = list_first(lists[i]))) {
            joiner_t *joiner = list_entry(node, joiner_t, link);
            queue_remove_joiner(queue, joiner);
            broker_free_joiner(self, joiner);
        }
    }
}

static void s_destroy_each_queue(void *ctx, void *value)
{
    queue_t *queue = value;
    s_free_queue_joiners(ctx, queue);
    queue_destroy(&queue);
}

void broker_destroy(broker_t **self_p)
{
    broker_t *self = *self_p;
    if (!self)
        return;
    if (self->peers)
        dict_each(self->peers, s_drop_each_peer, self);
    s_free_dropped_peers(self);
    if (self->producers)
        producers_destroy_all(self);
    if (self->queues)
        dict_each(self->queues, s_destroy_each_queue, self);
    store_destroy(&self->store);
    dict_destroy(&self->queues);
    dict_destroy(&self->peers);
    dict_destroy(&self->clients);
    dict_destroy(&self->producers);
    deadlines_fini(&self->deadlines);
    aq_inbox_destroy(&self->router_inbox);
    aq_inbox_destroy(&self->pull_inbox);
    zsock_destroy((zsock_t **) &self->pull_zsock);
    if (self->router_zsock) /* a second for the last replies: SHUT_DOWN, say */
        zsock_set_linger(self->router_zsock, 1000);
    zsock_destroy((zsock_t **) &self->router_zsock);
    free(self);
    *self_p = NULL;
}

aq_status_t broker_send(broker_t *self, const uint8_t *routing_id, size_t routing_id_size,
                        const aq_msg_t *msg, zmq_msg_t *payload)
{
    aq_bytes_t rid = {routing_id, routing_id_size};
    return aq_msg_send(self->router, &rid, msg, payload, ZMQ_DONTWAIT);
}

void broker_send_error(broker_t *self, const uint8_t *routing_id, size_t routing_id_size,
                       int code, aq_bytes_t subject, const char *text)
{
    aq_bytes_t rid = {routing_id, routing_id_size};
    /* A peer that is gone or too slow to read its errors loses them. */
    aq_error_send(self->router, &rid, code, subject, text, ZMQ_DONTWAIT);
}

queue_t *broker_queue(broker_t *self, aq_bytes_t name, int create, aq_status_t *status)
{
    *status = AQ_OK;
    queue_t *queue = dict_get(self->queues, name.data, name.size);
    if (queue || !create)
        return queue;
    if (dict_size(self->queues) >= self->config.max_queues) {
        *status = AQ_LIMIT;
        return NULL;
    }
    char text[AQ_NAME_MAX + 1];
    memcpy(text, name.data, name.size);
    text[name.size] = '\0';
    uint64_t lease_ms = self->config.lease_ms;
    for (size_t i = 0; i < self->config.queue_lease_count; i++)
        if (strcmp(self->config.queue_leases[i].queue, text) == 0)
            lease_ms = self->config.queue_leases[i].lease_ms;
    queue = queue_new(text, self->config.maxsize, self->config.max_attempts, lease_ms);
    if (!queue || dict_set(self->queues, name.data, name.size, queue)) {
        queue_destroy(&queue);
        *status = AQ_INTERNAL;
        return NULL;
    }
    if (self->shut_down)
        queue->state = QUEUE_DRAINING; /* exists only to answer: refuses puts */
    return queue;
}

void broker_drop_peer(broker_t *self, peer_t *peer, const char *reason)
{
    if (peer->dropped)
        return;
    peer->dropped = 1;
    if (self->config.verbose || peer->consumer.held_count)
        broker_log(self, "session %s closed (%s), %llu items returned to the queue",
                   peer->client_id, reason, (unsigned long long) peer->consumer.held_count);
    if (peer->consumer.queue) {
        list_node_t *node;
        for (node = peer->consumer.held.next; node != &peer->consumer.held; node = node->next) {
            item_t *item = list_entry(node, item_t, link);
            deadlines_cancel(&self->deadlines, &item->timer);
            item->taken_from = peer->serial;
        }
        queue_t *queue = peer->consumer.queue;
        queue_detach(queue, &peer->consumer);
        broker_release_joiners(self, queue); /* items may have been dead-lettered */
    }
    if (peer->producer) {
        peer->producer->peer = NULL;
        peer->producer = NULL;
    }
    /* Nobody is left to answer. */
    list_node_t *node;
    while ((node = list_first(&peer->joins))) {
        joiner_t *joiner = list_entry(node, joiner_t, peer_link);
        queue_remove_joiner(joiner->queue, joiner);
        broker_free_joiner(self, joiner);
    }
    dict_delete(self->peers, peer->routing_id, peer->routing_id_size);
    if (dict_get(self->clients, peer->client_id, strlen(peer->client_id)) == peer)
        dict_delete(self->clients, peer->client_id, strlen(peer->client_id));
    list_push_back(&self->dropped_peers, &peer->dropped_link);
}

static int s_send_item(broker_t *self, peer_t *peer, item_t *item, int64_t now_us)
{
    aq_msg_t msg = {.cmd = AQ_CMD_ITEM};
    queue_t *queue = item->queue;
    msg.queue = (aq_bytes_t){(const uint8_t *) queue->name, strlen(queue->name)};
    msg.id = item->id;
    msg.attempt = (uint64_t) item->attempts + 1;
    msg.age_us = now_us > item->accepted_us ? (uint64_t) (now_us - item->accepted_us) : 0;
    msg.lease_ms = broker_lease_ms(item);
    return broker_send(self, peer->routing_id, peer->routing_id_size, &msg, &item->payload);
}

uint64_t broker_lease_ms(const item_t *item)
{
    return item->lease_ms ? item->lease_ms : item->queue->lease_ms;
}

/*  Tells every consumer of a shut-down queue with nothing left that no
    item will come (Python's get raising QueueShutDown), once. */
static void s_tell_drained(broker_t *self, queue_t *queue)
{
    if (queue->state == QUEUE_OPEN || queue->drained_told || !queue_is_drained(queue))
        return;
    queue->drained_told = 1;
    list_node_t *lists[2] = {&queue->idle, &queue->busy};
    for (int i = 0; i < 2; i++) {
        list_node_t *node;
        for (node = lists[i]->next; node != lists[i]; node = node->next) {
            peer_t *peer = list_entry(list_entry(node, consumer_t, link), peer_t, consumer);
            broker_send_error(self, peer->routing_id, peer->routing_id_size, AQ_SHUT_DOWN,
                              aq_bytes_str(queue->name), "queue shut down and empty");
        }
    }
}

void broker_dispatch(broker_t *self, queue_t *queue)
{
    consumer_t *consumer;
    int64_t now_us = zclock_usecs();
    if (queue->state == QUEUE_DISCARDING) {
        item_t *item;
        while ((item = queue_discard_next(queue)))
            store_remove(self->store, item);
        broker_release_joiners(self, queue);
    }
    while (queue->ready_count && (consumer = queue_next_consumer(queue))) {
        peer_t *peer = list_entry(consumer, peer_t, consumer);
        item_t *item = queue_pop(queue);
        if (s_send_item(self, peer, item, now_us) == AQ_OK) {
            queue_deliver(queue, consumer, item);
            item->timer.kind = TIMER_LEASE;
            /* Cannot fail: room for every item's timer is reserved at put. */
            deadlines_set(&self->deadlines, &item->timer,
                          now_us / 1000 + (int64_t) broker_lease_ms(item));
            continue;
        }
        /* Unreachable or not reading: the item goes back first in line, and
           so does everything else that peer held. */
        int gone = errno == EHOSTUNREACH;
        queue_requeue(queue, item);
        broker_drop_peer(self, peer, gone ? "peer unreachable" : "peer too slow");
    }
    s_tell_drained(self, queue);
}

void broker_shut_queue(broker_t *self, queue_t *queue, queue_state_t state)
{
    if (state <= queue->state)
        return; /* draining can become discarding, never the other way */
    queue->state = state;
    if (state == QUEUE_DISCARDING) {
        list_node_t *lists[2] = {&queue->joiners_before, &queue->joiners_all};
        for (int i = 0; i < 2; i++) {
            list_node_t *node;
            while ((node = list_first(lists[i]))) {
                joiner_t *joiner = list_entry(node, joiner_t, link);
                broker_send_error(self, joiner->routing_id, joiner->routing_id_size,
                                  AQ_SHUT_DOWN, (aq_bytes_t){joiner->tag, joiner->tag_size},
                                  "queue shut down at once: not every item was processed");
                queue_remove_joiner(queue, joiner);
                broker_free_joiner(self, joiner);
            }
        }
    }
    broker_dispatch(self, queue);
}

typedef struct {
    broker_t *broker;
    queue_state_t state;
} shut_all_t;

static void s_shut_each(void *ctx, void *value)
{
    shut_all_t *shut = ctx;
    broker_shut_queue(shut->broker, value, shut->state);
}

void broker_shut_all(broker_t *self, queue_state_t state)
{
    self->shut_down = 1;
    shut_all_t shut = {self, state};
    dict_each(self->queues, s_shut_each, &shut);
}

void broker_release_joiners(broker_t *self, queue_t *queue)
{
    joiner_t *joiner;
    while ((joiner = queue_take_satisfied(queue))) {
        aq_msg_t msg = {.cmd = AQ_CMD_JOINED};
        msg.tag = (aq_bytes_t){joiner->tag, joiner->tag_size};
        msg.queue = (aq_bytes_t){(const uint8_t *) queue->name, strlen(queue->name)};
        msg.count = joiner->waited;
        msg.dead = joiner->dead;
        broker_send(self, joiner->routing_id, joiner->routing_id_size, &msg, NULL);
        broker_free_joiner(self, joiner);
    }
}

typedef struct {
    broker_t *broker;
    peer_t **gone;
    size_t count;
} probe_t;

static void s_probe_peer(void *ctx, void *value)
{
    probe_t *probe = ctx;
    peer_t *peer = value;
    aq_msg_t heartbeat = {.cmd = AQ_CMD_HEARTBEAT};
    if (broker_send(probe->broker, peer->routing_id, peer->routing_id_size, &heartbeat, NULL))
        probe->gone[probe->count++] = peer;
}

/*  Sends HEARTBEAT to every session. libzmq does not say which peer's
    connection closed, but with ROUTER_MANDATORY a send to it fails: that
    is how a consumer killed while holding items loses them back to the
    queue within one interval. O(sessions) per interval. */
static void s_probe_sessions(broker_t *self)
{
    probe_t probe = {self, calloc(dict_size(self->peers) + 1, sizeof(peer_t *)), 0};
    if (!probe.gone)
        return; /* out of memory: try at the next interval */
    dict_each(self->peers, s_probe_peer, &probe);
    for (size_t i = 0; i < probe.count; i++) {
        queue_t *queue = probe.gone[i]->consumer.queue;
        broker_drop_peer(self, probe.gone[i], "heartbeat not delivered: peer gone or too slow");
        if (queue)
            broker_dispatch(self, queue);
    }
    free(probe.gone);
}

void broker_take_back(broker_t *self, item_t *item, uint64_t delay_ms)
{
    queue_t *queue = item->queue;
    peer_t *peer = list_entry(item->holder, peer_t, consumer);
    deadlines_cancel(&self->deadlines, &item->timer);
    item->taken_from = peer->serial;
    queue_take_back(queue, item->holder, item);
    if (delay_ms == 0 || (queue->max_attempts && item->attempts >= queue->max_attempts)) {
        if (queue_return(queue, item)) {
            broker_log(self, "item %llu of %s dead-lettered after %u deliveries",
                       (unsigned long long) item->id, queue->name, item->attempts);
            broker_release_joiners(self, queue);
        }
        return;
    }
    item->timer.kind = TIMER_DELAY;
    deadlines_set(&self->deadlines, &item->timer, broker_now_ms() + (int64_t) delay_ms);
    queue->delayed_count++;
}

static void s_fire(broker_t *self, deadline_t *deadline, int64_t now)
{
    switch (deadline->kind) {
    case TIMER_SWEEP:
        producers_sweep(self);
        deadlines_set(&self->deadlines, &self->sweep, now + SWEEP_INTERVAL_MS);
        break;
    case TIMER_HEARTBEAT:
        s_probe_sessions(self);
        s_free_dropped_peers(self);
        deadlines_set(&self->deadlines, &self->heartbeat, now + (int64_t) self->config.heartbeat_ms);
        break;
    case TIMER_JOIN:
        deadlines_cancel(&self->deadlines, deadline);
        broker_on_join_timeout(self, list_entry(deadline, joiner_t, deadline));
        break;
    case TIMER_LEASE: {
        item_t *item = list_entry(deadline, item_t, timer);
        peer_t *peer = list_entry(item->holder, peer_t, consumer);
        broker_log(self, "lease of item %llu held by %s expired: delivered again",
                   (unsigned long long) item->id, peer->client_id);
        broker_take_back(self, item, 0);
        broker_dispatch(self, item->queue);
        break;
    }
    case TIMER_DELAY: {
        item_t *item = list_entry(deadline, item_t, timer);
        deadlines_cancel(&self->deadlines, deadline);
        item->queue->delayed_count--;
        queue_requeue(item->queue, item);
        broker_dispatch(self, item->queue);
        break;
    }
    case TIMER_DRAIN:
        deadlines_cancel(&self->deadlines, deadline);
        self->stopping = 2;
        break;
    default:
        assert(!"deadline of unknown kind");
    }
}

static void s_fire_deadlines(broker_t *self)
{
    int64_t now = broker_now_ms();
    deadline_t *deadline;
    while ((deadline = deadlines_first(&self->deadlines)) && deadline->at <= now)
        s_fire(self, deadline, now);
}

static int s_poll_timeout(broker_t *self)
{
    deadline_t *first = deadlines_first(&self->deadlines);
    if (!first)
        return -1;
    int64_t wait = first->at - broker_now_ms();
    return wait <= 0 ? 0 : wait > 60000 ? 60000 : (int) wait;
}

static void s_drain_router(broker_t *self)
{
    for (int i = 0; i < BATCH; i++) {
        if (aq_inbox_recv(self->router_inbox, self->router, 1, ZMQ_DONTWAIT) != AQ_OK)
            return;
        broker_on_router(self);
        s_free_dropped_peers(self);
    }
}

static void s_drain_pull(broker_t *self)
{
    if (self->put_parked) {
        /* A queue shut down meanwhile refuses the put at once, as Python's
           shutdown wakes blocked putters. */
        if (queue_is_full(self->parked_queue) && self->parked_queue->state == QUEUE_OPEN)
            return;
        self->put_parked = broker_on_put(self);
        s_free_dropped_peers(self);
    }
    for (int i = 0; i < BATCH && !self->put_parked; i++) {
        if (aq_inbox_recv(self->pull_inbox, self->pull, 0, ZMQ_DONTWAIT) != AQ_OK)
            return;
        self->put_parked = broker_on_put(self);
        s_free_dropped_peers(self);
    }
}

/*  SIGINT and SIGTERM: the first starts a graceful stop, the second ends
    it at once. */
static volatile sig_atomic_t s_signals;

static void s_on_signal(int sig)
{
    (void) sig;
    s_signals++;
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

/*  The graceful form of shutdown for every queue; the loop ends once they
    have drained, or when the drain timer fires. */
static void s_start_stopping(broker_t *self)
{
    self->stopping = 1;
    broker_log(self, "stopping: puts refused, %llu items to drain (at most %llu ms; a second "
                     "signal stops at once)",
               (unsigned long long) s_outstanding(self), (unsigned long long) self->config.drain_ms);
    broker_shut_all(self, QUEUE_DRAINING);
    deadline_init(&self->drain, TIMER_DRAIN);
    deadlines_set(&self->deadlines, &self->drain,
                  broker_now_ms() + (int64_t) self->config.drain_ms);
}

static int s_should_exit(broker_t *self)
{
    if (s_signals && !self->stopping)
        s_start_stopping(self);
    if (s_signals > 1 || self->stopping > 1) {
        broker_log(self, "stopping now: %llu items not processed are lost",
                   (unsigned long long) s_outstanding(self));
        return 1;
    }
    return self->stopping && s_outstanding(self) == 0;
}

aq_status_t broker_run(broker_t *self)
{
    struct sigaction action = {0};
    action.sa_handler = s_on_signal;
    sigemptyset(&action.sa_mask);
    sigaction(SIGINT, &action, NULL); /* replaces czmq's handler */
    sigaction(SIGTERM, &action, NULL);
    while (!s_should_exit(self)) {
        zmq_pollitem_t items[2] = {{self->router, 0, ZMQ_POLLIN, 0},
                                   {self->pull, 0, ZMQ_POLLIN, 0}};
        /* A parked put means a full queue: stop reading puts, and ZeroMQ's
           buffers fill up until producers block. */
        int count = self->put_parked ? 1 : 2;
        int rc = zmq_poll(items, count, s_poll_timeout(self));
        if (rc < 0) {
            if (errno == EINTR)
                continue;
            broker_log(self, "poll failed: %s", zmq_strerror(errno));
            return AQ_TRANSPORT;
        }
        s_drain_router(self);
        s_drain_pull(self);
        s_fire_deadlines(self);
    }
    return AQ_OK;
}
