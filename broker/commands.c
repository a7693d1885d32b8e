/*  One handler per command on the ROUTER socket. Each message has been
    decoded and checked whole before its handler runs, its connection was
    admitted, and its session and roles were checked (the table below); a
    handler checks what depends on state (the item's holder, limits) before
    it changes anything. */
#include "commands.h"
#include "dispatch.h"
#include "journal.h"
#include "persist.h"
#include "producers.h"
#include "sessions.h"

#include <czmq.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct {
    broker_t *broker;
    aq_bytes_t routing_id;
    peer_t *peer;      /* NULL without a session */
    const aq_msg_t *msg;
    const char *key;   /* the connection's client key ("" without CURVE) */
    int fd;
} request_t;

typedef void(handler_fn)(const request_t *request);

typedef struct {
    handler_fn *fn;
    int needs_session;
    unsigned roles;   /* any of these (admin has all); 0: none needed */
} handler_t;

static void s_error(const request_t *request, int code, aq_bytes_t subject, const char *text)
{
    broker_send_error(request->broker, request->routing_id, code, request->msg->tag, subject,
                      text);
}

static const char *s_peer_name(const peer_t *peer, aq_bytes_t routing_id, char *buf,
                               size_t size);

/*  403, counted in INFO's bad_input and logged like a request outside the
    client's roles: every refusal is (PROTOCOL.md 4.8a). */
static void s_forbidden(const request_t *request, aq_bytes_t subject, const char *text)
{
    char name[600];
    ratelog_line(&request->broker->bad_input, broker_now_ms(), "%s: %s refused: %s",
                 s_peer_name(request->peer, request->routing_id, name, sizeof name),
                 aq_cmd_name(request->msg->cmd), text);
    s_error(request, AQ_FORBIDDEN, subject, text);
}

static void s_reply(const request_t *request, const aq_msg_t *msg)
{
    broker_send(request->broker, request->routing_id, msg, NULL);
}

/*  The answer to a change that must survive a restart: sent once its
    records are on disk (broker_reply_logged). */
static void s_reply_durable(const request_t *request, const aq_msg_t *msg)
{
    broker_reply_logged(request->broker, request->routing_id, msg);
}

static char *s_escape(char *buf, size_t size, aq_bytes_t bytes)
{
    return log_escape(buf, size, bytes.data, bytes.size);
}

/*  The queue is one this client may use; else answers 403. */
static int s_queue_allowed(const request_t *request, aq_bytes_t queue)
{
    if (!request->peer || auth_allows_queue(&request->peer->grant, queue.data, queue.size))
        return 1;
    s_forbidden(request, queue, "this client may not use that queue");
    return 0;
}

/*  Whose share of the limits a new session counts against: its key; without
    keys its host, unless it is this host (loopback, ipc). NULL: nobody's. */
static auth_owner_t *s_owner(const request_t *request)
{
    broker_t *self = request->broker;
    char name[AUTH_KEY_SIZE + 48];
    if (request->key[0])
        snprintf(name, sizeof name, "%s", request->key);
    else {
        char host[80];
        if (!conns_peer_host(request->fd, host, sizeof host))
            return NULL;
        snprintf(name, sizeof name, "host %s", host);
    }
    if (!self->owners && !(self->owners = auth_owners_new()))
        return NULL;
    return auth_owner_get(self->owners, name);
}

static peer_t *s_open_peer(const request_t *request)
{
    const aq_msg_t *msg = request->msg;
    peer_t *peer = calloc(1, sizeof *peer);
    if (!peer || request->routing_id.size > sizeof peer->routing_id) {
        free(peer);
        return NULL;
    }
    memcpy(peer->routing_id, request->routing_id.data, request->routing_id.size);
    peer->routing_id_size = request->routing_id.size;
    memcpy(peer->client_id, msg->client.data, msg->client.size);
    snprintf(peer->key, sizeof peer->key, "%s", request->key);
    peer->fd = request->fd;
    peer->serial = ++request->broker->next_serial;
    consumer_init(&peer->consumer);
    list_init(&peer->dropped_link);
    list_init(&peer->joins);
    broker_t *self = request->broker;
    if (dict_set(self->peers, peer->routing_id, peer->routing_id_size, peer)) {
        free(peer);
        return NULL;
    }
    if (dict_set(self->clients, peer->client_id, strlen(peer->client_id), peer)) {
        dict_delete(self->peers, peer->routing_id, peer->routing_id_size);
        free(peer);
        return NULL;
    }
    return peer;
}

/*  A client id belongs to the key that holds it: another key's HELLO is
    refused, the same key's replaces the old session (a client that
    reconnected). */
static void s_on_hello(const request_t *request)
{
    broker_t *self = request->broker;
    const aq_msg_t *msg = request->msg;
    if (broker_follows(self)) {
        /* Only the leader of a group serves (PROTOCOL.md 4.16). */
        char address[AQ_ENDPOINT_MAX + 8];
        const char *leader = persist_leader(self, address, sizeof address);
        char text[AQ_TEXT_MAX + 1];
        if (*leader)
            snprintf(text, sizeof text, "this replica does not lead its group: the leader is %s",
                     leader);
        else
            snprintf(text, sizeof text, "this replica does not lead its group, and no leader "
                                        "is known yet: an election is under way");
        s_error(request, AQ_NOT_LEADER, aq_bytes_str(leader), text);
        return;
    }
    if (aq_with_has(msg->with, "priority") || aq_with_has(msg->with, "ready")) {
        s_error(request, AQ_MALFORMED, msg->client, "HELLO's `with` takes `service` only");
        return;
    }
    const auth_grant_t *grant = auth_admit(self->auth, request->key);
    if (!grant) {
        s_forbidden(request, (aq_bytes_t){0}, "this client's key is not allowed");
        return;
    }
    peer_t *same_client = dict_get(self->clients, msg->client.data, msg->client.size);
    producer_t *producer = producers_get(self, msg->client);
    if ((same_client && strcmp(same_client->key, request->key) != 0)
        || (producer && strcmp(producer->key, request->key) != 0)) {
        s_forbidden(request, msg->client, "that client id belongs to another key");
        return;
    }
    /* Sessions this HELLO ends do not count against the new one. */
    auth_owner_t *owner = s_owner(request);
    peer_t probe = {.grant = *grant, .owner = owner};
    int replaced = (request->peer && request->peer->plain)
                   + (same_client && same_client != request->peer && same_client->plain);
    int replaced_own = (request->peer && request->peer->owner == owner)
                       + (same_client && same_client != request->peer
                          && same_client->owner == owner);
    char why[160];
    why[0] = '\0';
    if (!broker_is_admin(&probe)
        && self->plain_sessions - (uint64_t) replaced
               >= broker_unreserved(self->config.max_connections))
        snprintf(why, sizeof why,
                 "too many sessions (--max-connections %llu; the last tenth is kept for admin "
                 "clients)",
                 (unsigned long long) self->config.max_connections);
    else if (broker_counts_limits(self, &probe)
             && owner->sessions - (uint64_t) replaced_own >= self->config.max_sessions_per_key)
        snprintf(why, sizeof why, "too many sessions of this key (--max-sessions-per-key %llu)",
                 (unsigned long long) self->config.max_sessions_per_key);
    if (why[0]) {
        char name[600];
        ratelog_line(&self->bad_input, broker_now_ms(), "%s: HELLO refused: %s",
                     s_peer_name(request->peer, request->routing_id, name, sizeof name), why);
        auth_owner_release(self->owners, owner);
        s_error(request, AQ_LIMIT, msg->client, why);
        return;
    }
    /* Another session takes the producer id: the one that had it hears 409
       for its SYNCs, waiting or later, never a confirm that the other
       session's puts could have earned (PROTOCOL.md 4.2). */
    if (producer)
        producers_take_over(self, producer,
                            producer->peer != request->peer ? producer->peer : NULL,
                            request->routing_id);
    producers_unsupersede(self, request->routing_id);
    if (owner)
        owner->sessions++; /* now: dropping the sessions below must not free it */
    if (request->peer)
        broker_drop_peer(self, request->peer, "new HELLO on the same connection", 0);
    if (same_client && same_client != request->peer)
        broker_drop_peer(self, same_client, "replaced by a new connection of the same client", 0);
    peer_t *peer = s_open_peer(request);
    if (!peer) {
        if (owner) {
            owner->sessions--;
            auth_owner_release(self->owners, owner);
        }
        s_error(request, AQ_INTERNAL, (aq_bytes_t){0}, "cannot open a session");
        return;
    }
    peer->grant = *grant;
    peer->owner = owner;
    peer->plain = !broker_is_admin(peer);
    self->plain_sessions += (uint64_t) peer->plain;
    peer->conn_stamp = conns_greet(self->conns, 0, request->fd);
    /* Found again: dropping the sessions above may have forgotten it (an
       idle producer beyond --max-producers). A producer says where its
       unconfirmed puts start; the broker takes puts from a producer id only
       from its live session. */
    producer = producers_get(self, msg->client);
    if (!producer && msg->seq > 0)
        producer = producers_open(self, msg->client, request->key);
    if (producer) {
        producers_attach(self, producer, peer);
        if (msg->seq)
            producers_resume(self, producer, msg->seq);
    }
    char roles[64];
    aq_msg_t welcome = {.cmd = AQ_CMD_WELCOME, .tag = msg->tag};
    welcome.broker = aq_bytes_str(self->broker_id);
    welcome.max_item = self->config.max_item;
    welcome.heartbeat_ms = self->config.heartbeat_ms;
    welcome.batch_max = self->config.max_batch;
    welcome.window = self->config.window;
    welcome.window_bytes = self->config.window_bytes;
    welcome.text = aq_bytes_str(auth_roles_text(grant->roles, roles, sizeof roles));
    welcome.persistence = aq_bytes_str(broker_persistence(self));
    if (aq_with_has(msg->with, "service"))
        welcome.service = aq_bytes_str(self->service);
    s_reply(request, &welcome);
}

static void s_on_credit(const request_t *request)
{
    broker_t *self = request->broker;
    const aq_msg_t *msg = request->msg;
    peer_t *peer = request->peer;
    consumer_t *consumer = &peer->consumer;
    if (aq_with_has(msg->with, "service")) {
        s_error(request, AQ_MALFORMED, msg->queue, "CREDIT's `with` takes `priority` and `ready`");
        return;
    }
    if (consumer->queue && (strlen(consumer->queue->name) != msg->queue.size
                            || memcmp(consumer->queue->name, msg->queue.data, msg->queue.size))) {
        s_error(request, AQ_CONFLICT, msg->queue,
                "a session consumes one queue; open another session for this one");
        return;
    }
    if (!s_queue_allowed(request, msg->queue))
        return;
    if (msg->credit > self->config.max_credit || msg->batch_max > self->config.max_batch) {
        char text[120];
        snprintf(text, sizeof text, "credit is at most %llu and batch at most %llu",
                 (unsigned long long) self->config.max_credit,
                 (unsigned long long) self->config.max_batch);
        s_error(request, AQ_LIMIT, msg->queue, text);
        return;
    }
    aq_status_t rc;
    const char *why = NULL;
    queue_t *queue = broker_queue_for(self, msg->queue, peer, &rc, &why);
    if (!queue) {
        s_error(request, rc, msg->queue, why);
        return;
    }
    peer->credit_batch = msg->batch_max;
    peer->with_priority = aq_with_has(msg->with, "priority");
    memcpy(peer->credit_tag, msg->tag.data, msg->tag.size);
    peer->credit_tag_size = msg->tag.size;
    peer->expired_streak = 0;
    int attached = consumer->queue != NULL;
    if (consumer->queue)
        queue_set_credit(queue, consumer, msg->credit);
    else {
        consumer->credit = msg->credit;
        queue_attach(queue, consumer);
    }
    /* Told READY once, again only after a later CREDIT that asks (4.15). */
    if (list_linked(&consumer->ready_link))
        list_remove(&consumer->ready_link);
    if (aq_with_has(msg->with, "ready"))
        list_push_back(&queue->ready_waiters, &consumer->ready_link);
    aq_msg_t credited = {.cmd = AQ_CMD_CREDITED, .tag = msg->tag, .queue = msg->queue,
                         .credit = msg->credit};
    /* What a later CREDIT lets the broker send goes before its CREDITED: a
       consumer that gets CREDITED with nothing before it knows that nothing
       was ready for it then (PROTOCOL.md 4.3, 4.15). The first one's come
       after, as clients that wait for it expect. */
    if (attached) {
        /* This session hears a "shut down and empty" that pass finds
           after its CREDITED (below), not before it with its tag. */
        self->untold = peer;
        broker_dispatch(self, queue);
        self->untold = NULL;
    }
    s_reply(request, &credited);
    if (queue->drained_told) /* it came too late to hear it */
        s_error(request, AQ_SHUT_DOWN, msg->queue, "queue shut down and empty");
    broker_touch_queue(self, queue);
}

/*  Ids of one message that cannot be acted on, by kind: answered in one
    ERROR each, listing them. */
typedef struct {
    char text[AQ_LIST_MAX * (AQ_U64_DIGITS + 1) + 1];
    size_t size;
    size_t count;
} id_list_t;

static void s_list_add(id_list_t *list, uint64_t id)
{
    if (list->size)
        list->text[list->size++] = ' ';
    list->size += aq_format_u64(id, list->text + list->size);
    list->count++;
}

typedef struct {
    id_list_t unknown;   /* 404 */
    id_list_t expired;   /* 408 */
} id_errors_t;

/*  The item with this id if this peer holds it; otherwise notes the id as
    LEASE_EXPIRED (taken back from this very session) or UNKNOWN_ITEM and
    returns NULL. */
static item_t *s_held_item(const request_t *request, uint64_t id, id_errors_t *errors)
{
    peer_t *peer = request->peer;
    item_t *item = store_find(request->broker->store, id);
    if (item && item->holder == &peer->consumer)
        return item;
    if (item && item->taken_from == (uint32_t) peer->serial)
        s_list_add(&errors->expired, id);
    else
        s_list_add(&errors->unknown, id);
    return NULL;
}

static void s_answer_id_errors(const request_t *request, id_errors_t *errors, const char *verb)
{
    if (errors->unknown.count) {
        char name[AQ_NAME_MAX * 4 + 1];
        ratelog_line(&request->broker->bad_input, broker_now_ms(),
                     "%s: %s of %zu items it does not hold",
                     log_escape(name, sizeof name, request->peer->client_id,
                                strlen(request->peer->client_id)),
                     verb, errors->unknown.count);
        s_error(request, AQ_UNKNOWN_ITEM,
                (aq_bytes_t){(const uint8_t *) errors->unknown.text, errors->unknown.size},
                "this consumer holds no item with these ids");
    }
    if (errors->expired.count)
        s_error(request, AQ_LEASE_EXPIRED,
                (aq_bytes_t){(const uint8_t *) errors->expired.text, errors->expired.size},
                "taken back from this consumer (lease expired or returned): delivered again");
}

static void s_on_ack(const request_t *request)
{
    broker_t *self = request->broker;
    consumer_t *consumer = &request->peer->consumer;
    static id_errors_t errors;
    errors.unknown.size = errors.unknown.count = errors.expired.size = errors.expired.count = 0;
    size_t count = aq_ids_count(request->msg->ids);
    int64_t now_us = broker_now_us();
    for (size_t i = 0; i < count; i++) {
        item_t *item = s_held_item(request, aq_ids_get(request->msg->ids, i), &errors);
        if (!item)
            continue;
        deadlines_cancel(&self->deadlines, &item->timer);
        histogram_observe(&item->queue->to_ack, broker_age_us(item, now_us));
        queue_release(item->queue, consumer, item);
        record_t record;
        state_effects_t effects;
        state_gone(item, GONE_ACKED, &record);
        broker_apply_must(self, &record, &effects);
        request->peer->expired_streak = 0;
    }
    s_answer_id_errors(request, &errors, "ack");
    if (consumer->queue) {
        broker_release_joiners(self, consumer->queue);
        broker_touch_queue(self, consumer->queue);
    }
}

static void s_on_touch(const request_t *request)
{
    broker_t *self = request->broker;
    static id_errors_t errors;
    errors.unknown.size = errors.unknown.count = errors.expired.size = errors.expired.count = 0;
    int64_t now = broker_now_ms();
    size_t count = aq_ids_count(request->msg->ids);
    for (size_t i = 0; i < count; i++) {
        item_t *item = s_held_item(request, aq_ids_get(request->msg->ids, i), &errors);
        if (item) /* scheduled already: cannot fail */
            deadlines_set(&self->deadlines, &item->timer, now + (int64_t) broker_lease_ms(item));
    }
    s_answer_id_errors(request, &errors, "touch");
}

static void s_on_nack(const request_t *request)
{
    broker_t *self = request->broker;
    const aq_msg_t *msg = request->msg;
    if (msg->delay_ms > AQ_WAIT_MAX_MS) {
        s_error(request, AQ_MALFORMED, (aq_bytes_t){0},
                "NACK delay-ms is at most 86400000 (24 hours)");
        return;
    }
    static id_errors_t errors;
    errors.unknown.size = errors.unknown.count = errors.expired.size = errors.expired.count = 0;
    size_t count = aq_ids_count(msg->ids);
    for (size_t i = 0; i < count; i++) {
        item_t *item = s_held_item(request, aq_ids_get(msg->ids, i), &errors);
        if (!item)
            continue;
        if (msg->text.size && self->config.verbose) {
            char reason[AQ_TEXT_MAX * 4 + 1], name[AQ_NAME_MAX * 4 + 1];
            log_line("item %llu of %s returned by %s, attempt %u: %s",
                     (unsigned long long) item->id, item->queue->name,
                     log_escape(name, sizeof name, request->peer->client_id,
                                strlen(request->peer->client_id)),
                     item->attempts, s_escape(reason, sizeof reason, msg->text));
        }
        item->queue->nacked_total++;
        uint64_t delay_ms = msg->delay_ms ? msg->delay_ms
                                          : broker_retry_delay_ms(self, item->queue, item->attempts);
        broker_take_back(self, item, delay_ms, DEATH_NACK, msg->text);
    }
    s_answer_id_errors(request, &errors, "nack");
}

static void s_send_joined(const request_t *request, uint64_t waited)
{
    const aq_msg_t *msg = request->msg;
    aq_msg_t joined = {.cmd = AQ_CMD_JOINED, .tag = msg->tag, .queue = msg->queue,
                       .count = waited};
    s_reply_durable(request, &joined);
}

static void s_on_join(const request_t *request)
{
    broker_t *self = request->broker;
    const aq_msg_t *msg = request->msg;
    peer_t *peer = request->peer;
    if (msg->timeout_ms > AQ_WAIT_MAX_MS) {
        s_error(request, AQ_MALFORMED, msg->queue,
                "JOIN timeout-ms is at most 86400000 (24 hours); 0 waits for ever");
        return;
    }
    if (!s_queue_allowed(request, msg->queue))
        return;
    aq_status_t rc;
    queue_t *queue = broker_queue(self, msg->queue, 0, &rc);
    if (!queue) {
        s_send_joined(request, 0); /* never had an item */
        return;
    }
    if (queue->state == QUEUE_DISCARDING) {
        s_error(request, AQ_SHUT_DOWN, msg->queue,
                "queue shut down at once: not every item was processed");
        return;
    }
    if (peer->join_count >= self->config.max_joins_per_peer) {
        char name[AQ_NAME_MAX * 4 + 1];
        ratelog_line(&self->bad_input, broker_now_ms(), "%s: more than %llu joins waiting at once",
                     log_escape(name, sizeof name, peer->client_id, strlen(peer->client_id)),
                     (unsigned long long) self->config.max_joins_per_peer);
        s_error(request, AQ_LIMIT, msg->queue,
                "too many joins waiting for this session (--max-joins-per-peer)");
        return;
    }
    char why[160];
    why[0] = '\0';
    if (self->joiner_count >= (broker_is_admin(peer) ? self->config.max_joiners
                                                : broker_unreserved(self->config.max_joiners)))
        snprintf(why, sizeof why,
                 "too many joins waiting (--max-joins %llu; the last tenth is kept for admin "
                 "clients)",
                 (unsigned long long) self->config.max_joiners);
    else if (broker_counts_limits(self, peer) && peer->owner->joins >= self->config.max_joins_per_key)
        snprintf(why, sizeof why, "too many joins waiting for this key (--max-joins-per-key %llu)",
                 (unsigned long long) self->config.max_joins_per_key);
    if (why[0]) {
        char name[AQ_NAME_MAX * 4 + 1];
        ratelog_line(&self->bad_input, broker_now_ms(), "%s: JOIN refused: %s",
                     log_escape(name, sizeof name, peer->client_id, strlen(peer->client_id)), why);
        s_error(request, AQ_LIMIT, msg->queue, why);
        return;
    }
    joiner_t *joiner = calloc(1, sizeof *joiner);
    if (!joiner) {
        s_error(request, AQ_INTERNAL, msg->queue, NULL);
        return;
    }
    queue->last_active_ms = broker_now_ms();
    self->joiner_count++;
    joiner->peer = peer;
    list_push_back(&peer->joins, &joiner->peer_link);
    peer->join_count++;
    if (peer->owner)
        peer->owner->joins++;
    deadline_init(&joiner->deadline, TIMER_JOIN);
    joiner->mode = (aq_join_mode_t) msg->mode;
    memcpy(joiner->routing_id, request->routing_id.data, request->routing_id.size);
    joiner->routing_id_size = request->routing_id.size;
    memcpy(joiner->tag, msg->tag.data, msg->tag.size);
    joiner->tag_size = msg->tag.size;
    if (queue_join_start(queue, joiner)) {
        s_send_joined(request, joiner->waited);
        broker_free_joiner(self, joiner);
        return;
    }
    if (msg->timeout_ms
        && deadlines_set(&self->deadlines, &joiner->deadline,
                         broker_now_ms() + (int64_t) msg->timeout_ms)) {
        s_error(request, AQ_INTERNAL, msg->queue, NULL);
        broker_free_joiner(self, joiner);
        return;
    }
    queue_add_joiner(queue, joiner);
}

void broker_on_join_timeout(broker_t *self, joiner_t *joiner)
{
    queue_t *queue = joiner->queue;
    aq_msg_t reply = {.cmd = AQ_CMD_TIMEOUT};
    reply.tag = (aq_bytes_t){joiner->tag, joiner->tag_size};
    reply.queue = aq_bytes_str(queue->name);
    reply.count = queue_join_remaining(queue, joiner);
    broker_send(self, (aq_bytes_t){joiner->routing_id, joiner->routing_id_size}, &reply, NULL);
    queue_remove_joiner(queue, joiner);
    broker_free_joiner(self, joiner);
}

static void s_on_sync(const request_t *request)
{
    broker_t *self = request->broker;
    const aq_msg_t *msg = request->msg;
    producer_t *producer = producers_get(self, msg->producer);
    if (producer && strcmp(producer->key, request->key) != 0) {
        s_forbidden(request, msg->producer, "that producer id belongs to another key");
        return;
    }
    if (!producer || !producer->peer) {
        s_error(request, AQ_NO_SESSION, msg->producer,
                "no session for this producer: its puts were dropped; say HELLO with the "
                "first unconfirmed seq and send them again");
        return;
    }
    producers_sync(self, producer, request->routing_id, msg->tag, msg->seq);
}

typedef struct {
    char (*text)[AQ_TEXT_MAX + 1];
    aq_bytes_t *lines;
    size_t count;
    size_t capacity;
    const auth_grant_t *grant;
} report_t;

static const char *s_state_name(queue_state_t state)
{
    return state == QUEUE_OPEN ? "open" : state == QUEUE_DRAINING ? "draining" : "discarding";
}

static void s_report_line(report_t *report, const queue_t *queue)
{
    if (report->count == report->capacity)
        return; /* more queues than one REPORT carries */
    if (report->grant && !auth_allows_queue(report->grant, (const uint8_t *) queue->name,
                                            strlen(queue->name)))
        return;
    char *text = report->text[report->count];
    int length = snprintf(
        text, AQ_TEXT_MAX + 1,
        "queue=%s queued=%llu inflight=%llu delayed=%llu held=%llu acked=%llu dead=%llu "
        "consumers=%llu joiners=%llu outstanding=%llu puts=%llu delivered=%llu "
        "redelivered=%llu expired=%llu maxsize=%llu lease_ms=%llu state=%s discarded=%llu "
        "paused=%d",
        queue->name, (unsigned long long) queue->ready_count,
        (unsigned long long) queue->inflight_count, (unsigned long long) queue->delayed_count,
        (unsigned long long) queue->held_count, (unsigned long long) queue->acked_total,
        (unsigned long long) queue->dead_count, (unsigned long long) queue->consumer_count,
        (unsigned long long) queue->joiner_count, (unsigned long long) queue->ledger.outstanding,
        (unsigned long long) queue->put_total, (unsigned long long) queue->delivered_total,
        (unsigned long long) queue->redelivered_total, (unsigned long long) queue->expired_total,
        (unsigned long long) queue->maxsize, (unsigned long long) queue->lease_ms,
        s_state_name(queue->state), (unsigned long long) queue->discarded_total,
        (int) queue->paused);
    report->lines[report->count++] = (aq_bytes_t){(const uint8_t *) text, (size_t) length};
}

static void s_report_each(void *ctx, void *value)
{
    s_report_line(ctx, value);
}

static int s_compare_lines(const void *a, const void *b)
{
    const aq_bytes_t *left = a, *right = b;
    size_t size = left->size < right->size ? left->size : right->size;
    int order = memcmp(left->data, right->data, size);
    return order ? order : (left->size > right->size) - (left->size < right->size);
}

/*  One line for `queue` (if it exists), or for every queue the client may
    see; sorted. Static buffers: one REPORT is built at a time. */
static void s_send_report(const request_t *request, queue_t *queue, int every,
                          void (*send)(const request_t *, const aq_msg_t *))
{
    static char text[AQ_LIST_MAX][AQ_TEXT_MAX + 1];
    static aq_bytes_t lines[AQ_LIST_MAX];
    report_t report = {text, lines, 0, AQ_LIST_MAX, &request->peer->grant};
    if (queue)
        s_report_line(&report, queue);
    else if (every)
        dict_each(request->broker->queues, s_report_each, &report);
    qsort(report.lines, report.count, sizeof *report.lines, s_compare_lines);
    aq_msg_t reply = {.cmd = AQ_CMD_REPORT, .tag = request->msg->tag, .list = lines,
                      .list_size = report.count};
    send(request, &reply);
}

static void s_on_stats(const request_t *request)
{
    const aq_msg_t *msg = request->msg;
    if (msg->queue.size && !s_queue_allowed(request, msg->queue))
        return;
    aq_status_t rc;
    queue_t *queue = msg->queue.size ? broker_queue(request->broker, msg->queue, 0, &rc) : NULL;
    s_send_report(request, queue, msg->queue.size == 0, s_reply);
}

/*  The broker's own numbers, one line: what an operator (and a test of
    the limits) needs to see without a queue. */
static void s_on_info(const request_t *request)
{
    broker_t *self = request->broker;
    char text[AQ_TEXT_MAX + 1];
    snprintf(text, sizeof text,
             "broker=%s uptime_ms=%lld connections=%zu refused_connections=%llu sessions=%zu "
             "producers=%zu idle_producers=%llu queues=%zu items=%zu held=%llu joiners=%llu "
             "bad_input=%llu persistence=%s journal_bytes=%llu shard=%u",
             self->broker_id, (long long) (broker_now_ms() - self->started_ms),
             conns_count(self->conns), (unsigned long long) conns_refused_total(self->conns),
             dict_size(self->peers), dict_size(self->producers),
             (unsigned long long) self->idle_producer_count, dict_size(self->queues),
             store_count(self->store), (unsigned long long) self->held_total,
             (unsigned long long) self->joiner_count,
             (unsigned long long) self->bad_input.total, broker_persistence(self),
             (unsigned long long) (self->journal ? journal_disk_bytes(self->journal) : 0),
             (unsigned) self->config.shard);
    aq_bytes_t line = aq_bytes_str(text);
    aq_msg_t reply = {.cmd = AQ_CMD_REPORT, .tag = request->msg->tag, .list = &line,
                      .list_size = 1};
    s_reply(request, &reply);
}

/*  The one-line answer to DEAD requeue or purge, once it is on disk. */
static void s_report_text(const request_t *request, const char *text)
{
    aq_bytes_t line = aq_bytes_str(text);
    aq_msg_t reply = {.cmd = AQ_CMD_REPORT, .tag = request->msg->tag, .list = &line,
                      .list_size = 1};
    s_reply_durable(request, &reply);
}

/*  One line per dead item, or one line with the count moved or deleted. */
/*  Bytes as a quoted string of printable ASCII: `"` and `\` escaped, any
    other byte as \xNN; at most `max` bytes of it, "..." after it if cut.
    Returns the length written (dest has room for 4 * max + 6). */
static size_t s_quote(char *dest, const uint8_t *data, size_t size, size_t max)
{
    size_t at = 0;
    dest[at++] = '"';
    for (size_t i = 0; i < size && i < max; i++) {
        uint8_t c = data[i];
        if (c == '"' || c == '\\') {
            dest[at++] = '\\';
            dest[at++] = (char) c;
        }
        else if (c >= 0x20 && c < 0x7f)
            dest[at++] = (char) c;
        else
            at += (size_t) sprintf(dest + at, "\\x%02x", c);
    }
    dest[at++] = '"';
    if (size > max) {
        memcpy(dest + at, "...", 3);
        at += 3;
    }
    dest[at] = '\0';
    return at;
}

/*  Bytes of a dead item's payload shown by DEAD list. */
#define DEAD_PREVIEW 32
/*  Bytes of its reason: with the preview, a line stays within 1024 bytes. */
#define DEAD_REASON_SHOWN 150

/*  One line of DEAD list (PROTOCOL.md 4.12): the item, when and why it
    died, the reason its last consumer gave, the start of its payload. */
static size_t s_dead_line(const item_t *item, char *line, size_t size)
{
    char when[32] = "unknown", reason[DEAD_REASON_SHOWN * 4 + 8] = "\"\"";
    char payload[DEAD_PREVIEW * 4 + 8];
    const epitaph_t *epitaph = item->epitaph;
    if (epitaph) {
        time_t seconds = (time_t) (epitaph->at_ms / 1000);
        struct tm tm;
        gmtime_r(&seconds, &tm);
        size_t n = strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%S", &tm);
        snprintf(when + n, sizeof when - n, ".%03dZ", (int) (epitaph->at_ms % 1000));
        s_quote(reason, (const uint8_t *) epitaph->text, epitaph->size, DEAD_REASON_SHOWN);
    }
    s_quote(payload, item->data, item->size, DEAD_PREVIEW);
    int length = snprintf(line, size, "id=%llu attempts=%u size=%u died=%s cause=%s reason=%s payload=%s",
                          (unsigned long long) item->id, item->attempts, item->size, when,
                          state_death_names[epitaph ? epitaph->cause : DEATH_UNKNOWN], reason,
                          payload);
    return length < 0 ? 0 : (size_t) length < size ? (size_t) length : size - 1;
}

/*  DEAD "requeue ID..." or "delete ID...": those dead items of the queue,
    all or none: an id that is not a dead item of it is answered 404 (every
    such id named), and nothing changes. */
static void s_dead_items(const request_t *request, queue_t *queue)
{
    const aq_msg_t *msg = request->msg;
    int requeue = msg->text.data[0] == 'r';
    const uint8_t *at = msg->text.data + (requeue ? 8 : 7), *end = msg->text.data + msg->text.size;
    item_t *items[AQ_TEXT_MAX / 2];
    size_t count = 0;
    id_list_t unknown = {0};
    while (at < end) {
        const uint8_t *space = memchr(at, ' ', (size_t) (end - at)), *stop = space ? space : end;
        uint64_t id;
        if (!aq_parse_u64(at, (size_t) (stop - at), &id)) {
            s_error(request, AQ_MALFORMED, msg->queue,
                    "DEAD requeue and delete take item ids, one space between them");
            return;
        }
        item_t *item = store_find(request->broker->store, id);
        int again = 0;
        for (size_t i = 0; i < count && !again; i++)
            again = items[i] == item;
        if (!queue || !item || item->queue != queue || item->state != ITEM_DEAD)
            s_list_add(&unknown, id);
        else if (!again) /* named twice: once */
            items[count++] = item;
        at = space ? space + 1 : end;
    }
    if (unknown.count) {
        s_error(request, AQ_UNKNOWN_ITEM, (aq_bytes_t){(const uint8_t *) unknown.text, unknown.size},
                "not dead items of this queue: nothing was changed");
        return;
    }
    uint64_t done = 0;
    for (size_t i = 0; i < count; i++) {
        if (requeue) {
            if (broker_requeue_dead_item(request->broker, items[i]))
                break;
        }
        else
            broker_delete_dead_item(request->broker, items[i]);
        done++;
    }
    char text[48];
    snprintf(text, sizeof text, "%s=%llu", requeue ? "requeued" : "deleted",
             (unsigned long long) done);
    s_report_text(request, text);
}

/*  DEAD "show ID [FROM]": the dead item's list line, then its payload from
    byte FROM in base64, DEAD_SHOW_LINE bytes a line, as many lines as a
    REPORT holds; a client asks again from where the answer stopped. */
#define DEAD_SHOW_LINE 768 /* 1024 characters of base64 */
static void s_dead_show(const request_t *request, queue_t *queue)
{
    const aq_msg_t *msg = request->msg;
    const uint8_t *at = msg->text.data + 5, *end = msg->text.data + msg->text.size;
    const uint8_t *space = memchr(at, ' ', (size_t) (end - at));
    uint64_t id, from = 0;
    if (!aq_parse_u64(at, (size_t) ((space ? space : end) - at), &id)
        || (space && !aq_parse_u64(space + 1, (size_t) (end - space - 1), &from))) {
        s_error(request, AQ_MALFORMED, msg->queue,
                "DEAD show takes an item id, then the byte to start from if not 0");
        return;
    }
    item_t *item = store_find(request->broker->store, id);
    if (!queue || !item || item->queue != queue || item->state != ITEM_DEAD) {
        char subject[AQ_U64_DIGITS + 1];
        s_error(request, AQ_UNKNOWN_ITEM,
                (aq_bytes_t){(const uint8_t *) subject, aq_format_u64(id, subject)},
                "not a dead item of this queue");
        return;
    }
    static char first[AQ_TEXT_MAX];
    static aq_bytes_t lines[AQ_LIST_MAX];
    lines[0] = (aq_bytes_t){(const uint8_t *) first, s_dead_line(item, first, sizeof first)};
    size_t start = from < item->size ? (size_t) from : item->size;
    size_t size = item->size - start;
    if (size > (AQ_LIST_MAX - 1) * (size_t) DEAD_SHOW_LINE)
        size = (AQ_LIST_MAX - 1) * (size_t) DEAD_SHOW_LINE;
    char *base64 = NULL;
    size_t count = 1;
    if (size) {
        zarmour_t *armour = zarmour_new();
        if (armour) {
            zarmour_set_mode(armour, ZARMOUR_MODE_BASE64_STD);
            zarmour_set_line_breaks(armour, false);
            base64 = zarmour_encode(armour, item->data + start, size);
            zarmour_destroy(&armour);
        }
        if (!base64) {
            s_error(request, AQ_INTERNAL, msg->queue, "out of memory");
            return;
        }
        size_t length = strlen(base64), line = DEAD_SHOW_LINE / 3 * 4;
        for (size_t offset = 0; offset < length; offset += line)
            lines[count++] = (aq_bytes_t){(const uint8_t *) base64 + offset,
                                          length - offset < line ? length - offset : line};
    }
    aq_msg_t reply = {.cmd = AQ_CMD_REPORT, .tag = msg->tag, .list = lines, .list_size = count};
    s_reply(request, &reply);
    freen(base64);
}

static void s_on_dead(const request_t *request)
{
    broker_t *self = request->broker;
    const aq_msg_t *msg = request->msg;
    if (!s_queue_allowed(request, msg->queue))
        return;
    aq_status_t rc;
    queue_t *queue = broker_queue(self, msg->queue, 0, &rc);
    char text[80];
    if (msg->text.size == 4 && memcmp(msg->text.data, "list", 4) == 0) {
        static char lines_text[AQ_LIST_MAX][AQ_TEXT_MAX];
        static aq_bytes_t lines[AQ_LIST_MAX];
        size_t count = 0;
        list_node_t *node;
        for (node = queue ? queue->dead.next : NULL;
             node && node != &queue->dead && count < AQ_LIST_MAX; node = node->next, count++) {
            size_t length = s_dead_line(list_entry(node, item_t, link), lines_text[count],
                                        sizeof lines_text[count]);
            lines[count] = (aq_bytes_t){(const uint8_t *) lines_text[count], length};
        }
        aq_msg_t reply = {.cmd = AQ_CMD_REPORT, .tag = msg->tag, .list = lines, .list_size = count};
        s_reply(request, &reply);
    }
    else if (msg->text.size > 5 && memcmp(msg->text.data, "show ", 5) == 0)
        s_dead_show(request, queue);
    else if ((msg->text.size > 8 && memcmp(msg->text.data, "requeue ", 8) == 0)
             || (msg->text.size > 7 && memcmp(msg->text.data, "delete ", 7) == 0))
        s_dead_items(request, queue);
    else if (msg->text.size == 7 && memcmp(msg->text.data, "requeue", 7) == 0) {
        uint64_t moved = queue ? broker_requeue_dead(self, queue) : 0;
        snprintf(text, sizeof text, "requeued=%llu", (unsigned long long) moved);
        s_report_text(request, text);
    }
    else if (msg->text.size == 5 && memcmp(msg->text.data, "purge", 5) == 0) {
        uint64_t purged = queue ? broker_purge_dead(self, queue) : 0;
        snprintf(text, sizeof text, "purged=%llu", (unsigned long long) purged);
        s_report_text(request, text);
    }
    else
        s_error(request, AQ_MALFORMED, msg->queue,
                "DEAD takes list, requeue, purge, show ID, requeue ID..., or delete ID...");
}

/*  SHUTDOWN of one queue or of all: one report line per queue shut. */
static void s_on_shutdown(const request_t *request)
{
    broker_t *self = request->broker;
    const aq_msg_t *msg = request->msg;
    if (msg->queue.size && !s_queue_allowed(request, msg->queue))
        return;
    if (!msg->queue.size && request->peer->grant.queues[0]) {
        s_forbidden(request, (aq_bytes_t){0},
                    "this client may shut down only its own queues, one at a time");
        return;
    }
    queue_state_t state = msg->mode == AQ_SHUTDOWN_IMMEDIATE ? QUEUE_DISCARDING : QUEUE_DRAINING;
    char name[AQ_NAME_MAX * 4 + 1];
    log_line("%s: shutdown (%s) of %s",
             log_escape(name, sizeof name, request->peer->client_id,
                        strlen(request->peer->client_id)),
             state == QUEUE_DISCARDING ? "immediate" : "drain",
             msg->queue.size ? "one queue" : "every queue");
    aq_status_t rc;
    const char *why = NULL;
    queue_t *queue =
        msg->queue.size ? broker_queue_for(self, msg->queue, request->peer, &rc, &why) : NULL;
    if (msg->queue.size && !queue) {
        s_error(request, rc, msg->queue, why);
        return;
    }
    if (queue)
        broker_shut_queue(self, queue, state);
    else
        broker_shut_all(self, state);
    s_send_report(request, queue, queue == NULL, s_reply_durable);
}

/*  REOPEN, PURGE, DELETE: one queue, by name; an unknown one is answered
    with no line, and nothing made. */
static queue_t *s_existing_queue(const request_t *request)
{
    const aq_msg_t *msg = request->msg;
    if (!s_queue_allowed(request, msg->queue))
        return NULL;
    aq_status_t rc;
    queue_t *queue = broker_queue(request->broker, msg->queue, 0, &rc);
    if (!queue) {
        aq_msg_t reply = {.cmd = AQ_CMD_REPORT, .tag = msg->tag};
        s_reply(request, &reply);
    }
    return queue;
}

static void s_log_action(const request_t *request, const char *action, const char *queue,
                         uint64_t count)
{
    char name[AQ_NAME_MAX * 4 + 1];
    ratelog_line(&request->broker->actions, broker_now_ms(), "%s: %s of %s (%llu items)",
                 log_escape(name, sizeof name, request->peer->client_id,
                            strlen(request->peer->client_id)),
                 action, queue, (unsigned long long) count);
}

static void s_on_reopen(const request_t *request)
{
    if (!request->msg->queue.size) { /* every queue */
        if (request->peer->grant.queues[0]) {
            s_forbidden(request, (aq_bytes_t){0},
                        "this client may reopen only its own queues, one at a time");
            return;
        }
        if (broker_reopen_queue(request->broker, NULL)) {
            s_error(request, AQ_SHUT_DOWN, request->msg->queue,
                    "the broker is stopping: no queue takes puts");
            return;
        }
        ratelog_line(&request->broker->actions, broker_now_ms(), "every queue reopened");
        s_send_report(request, NULL, 1, s_reply_durable);
        return;
    }
    queue_t *queue = s_existing_queue(request);
    if (!queue)
        return;
    if (broker_reopen_queue(request->broker, queue)) {
        s_error(request, AQ_SHUT_DOWN, request->msg->queue,
                "the broker is stopping: no queue takes puts");
        return;
    }
    s_log_action(request, "reopen", queue->name, queue->ready_count);
    s_send_report(request, queue, 0, s_reply_durable);
}

static void s_on_purge(const request_t *request)
{
    queue_t *queue = s_existing_queue(request);
    if (!queue)
        return;
    uint64_t purged = broker_purge_queue(request->broker, queue);
    s_log_action(request, "purge", queue->name, purged);
    char text[48];
    snprintf(text, sizeof text, "purged=%llu", (unsigned long long) purged);
    s_report_text(request, text);
}

static void s_on_delete(const request_t *request)
{
    queue_t *queue = s_existing_queue(request);
    if (!queue)
        return;
    char name[AQ_NAME_MAX + 1];
    memcpy(name, queue->name, sizeof name);
    uint64_t deleted = broker_delete_queue(request->broker, queue); /* frees it */
    s_log_action(request, "delete", name, deleted);
    char text[48];
    snprintf(text, sizeof text, "deleted=%llu", (unsigned long long) deleted);
    s_report_text(request, text);
}

static void s_on_pause(const request_t *request)
{
    const aq_msg_t *msg = request->msg;
    if (!s_queue_allowed(request, msg->queue))
        return;
    aq_status_t rc;
    const char *why = NULL;
    queue_t *queue = broker_queue_for(request->broker, msg->queue, request->peer, &rc, &why);
    if (!queue) {
        s_error(request, rc, msg->queue, why);
        return;
    }
    int paused = msg->cmd == AQ_CMD_PAUSE;
    broker_pause_queue(request->broker, queue, paused);
    s_log_action(request, paused ? "pause" : "resume", queue->name, queue->ready_count);
    s_send_report(request, queue, 0, s_reply_durable);
}

/*  Bytes of each item's payload PEEK shows, and most items it shows. */
#define PEEK_PREVIEW 64
#define PEEK_MAX 1024

static void s_on_peek(const request_t *request)
{
    const aq_msg_t *msg = request->msg;
    if (!s_queue_allowed(request, msg->queue))
        return;
    aq_status_t rc;
    queue_t *queue = broker_queue(request->broker, msg->queue, 0, &rc);
    static char lines_text[PEEK_MAX][AQ_TEXT_MAX];
    static aq_bytes_t lines[PEEK_MAX];
    size_t count = 0, max = msg->count < PEEK_MAX ? (size_t) msg->count : PEEK_MAX;
    for (list_node_t *node = queue ? queue->ready.next : NULL;
         node && node != &queue->ready && count < max; node = node->next, count++) {
        const item_t *item = list_entry(node, item_t, link);
        char payload[PEEK_PREVIEW * 4 + 8];
        s_quote(payload, item->data, item->size, PEEK_PREVIEW);
        int length = snprintf(lines_text[count], sizeof lines_text[count],
                              "id=%llu attempts=%u size=%u priority=%d age_ms=%llu payload=%s",
                              (unsigned long long) item->id, item->attempts, item->size,
                              (int) item->priority,
                              (unsigned long long) (broker_age_us(item, broker_now_us()) / 1000),
                              payload);
        lines[count] = (aq_bytes_t){(const uint8_t *) lines_text[count],
                                    length < 0 ? 0 : (size_t) length};
    }
    aq_msg_t reply = {.cmd = AQ_CMD_REPORT, .tag = msg->tag, .list = lines, .list_size = count};
    s_reply(request, &reply);
}

static void s_on_bye(const request_t *request)
{
    peer_t *peer = request->peer;
    producer_t *producer = peer->producer;
    broker_drop_peer(request->broker, peer, "said BYE", 0);
    if (producer && list_empty(&producer->syncs))
        producers_forget(request->broker, producer);
}

/*  The answer to heartbeat n: the peer has read everything sent before it. */
static void s_on_heartbeat(const request_t *request)
{
    peer_t *peer = request->peer;
    uint64_t beat = request->msg->beat;
    if (!peer || beat > peer->beat || peer->beat - beat >= PEER_BEATS)
        return;
    uint64_t read = peer->beat_bytes[beat % PEER_BEATS];
    if (read > peer->read_bytes)
        peer->read_bytes = read;
}

/*  REPLICAS (PROTOCOL.md 4.16): the group, listed to anyone; changed by
    an admin. */
static void s_on_replicas(const request_t *request)
{
    broker_t *self = request->broker;
    const aq_msg_t *msg = request->msg;
    char action[AQ_TEXT_MAX + 1];
    snprintf(action, sizeof action, "%.*s", (int) msg->text.size, (const char *) msg->text.data);
    persist_group_t group;
    if (persist_group(self, &group)) {
        s_error(request, AQ_MALFORMED, (aq_bytes_t){0},
                "this broker is not one of a group of replicas (asyncq-broker --peers)");
        return;
    }
    if (strcmp(action, "list") == 0) {
        static char lines_text[PERSIST_MEMBERS_MAX][AQ_TEXT_MAX];
        static aq_bytes_t lines[PERSIST_MEMBERS_MAX];
        for (size_t i = 0; i < group.count; i++) {
            int at = snprintf(lines_text[i], sizeof lines_text[i], "id=%llu address=%s kind=%s "
                              "role=%s", (unsigned long long) group.replicas[i].id,
                              group.replicas[i].address, group.replicas[i].kind,
                              group.replicas[i].id == group.node ? group.role
                              : group.replicas[i].id == group.leader ? "leader" : "follower");
            if (group.replicas[i].known && at > 0 && (size_t) at < sizeof lines_text[i])
                at += snprintf(lines_text[i] + at, sizeof lines_text[i] - (size_t) at,
                               " match_index=%llu lag=%llu",
                               (unsigned long long) group.replicas[i].match_index,
                               (unsigned long long) group.replicas[i].lag);
            /* The leader's view: how long since each other replica answered
               it (a replica down or cut off goes silent). */
            if (group.replicas[i].known && group.replicas[i].id != group.node && at > 0
                && (size_t) at < sizeof lines_text[i]) {
                char silent[24] = "never";
                if (group.replicas[i].silent_ms >= 0)
                    snprintf(silent, sizeof silent, "%lld",
                             (long long) group.replicas[i].silent_ms);
                at += snprintf(lines_text[i] + at, sizeof lines_text[i] - (size_t) at,
                               " silent_ms=%s", silent);
            }
            if (group.replicas[i].id == group.node && at > 0 && (size_t) at < sizeof lines_text[i])
                snprintf(lines_text[i] + at, sizeof lines_text[i] - (size_t) at,
                         " term=%llu commit_index=%llu", (unsigned long long) group.term,
                         (unsigned long long) group.commit_index);
            lines[i] = aq_bytes_str(lines_text[i]);
        }
        aq_msg_t reply = {.cmd = AQ_CMD_REPORT, .tag = msg->tag, .list = lines,
                          .list_size = group.count};
        s_reply(request, &reply);
        return;
    }
    static const struct {
        const char *word;
        persist_change_t change;
        int argument; /* 1: one needed; 0: one may be given */
    } changes[] = {{"add", PERSIST_ADD, 1}, {"remove", PERSIST_REMOVE, 1},
                   {"transfer", PERSIST_TRANSFER, 0}};
    const char *argument = NULL;
    size_t which = 0;
    for (; which < sizeof changes / sizeof changes[0]; which++) {
        size_t length = strlen(changes[which].word);
        if (strncmp(action, changes[which].word, length) == 0
            && (action[length] == '\0' || action[length] == ' ')) {
            argument = action + length + (action[length] == ' ');
            break;
        }
    }
    if (!argument || (changes[which].argument && !*argument) || strchr(argument, ' ')) {
        s_error(request, AQ_MALFORMED, (aq_bytes_t){0},
                "REPLICAS takes list, add HOST:PORT, remove ID|HOST:PORT or transfer [ID]");
        return;
    }
    if (!(request->peer->grant.roles & ROLE_ADMIN)) {
        s_forbidden(request, (aq_bytes_t){0}, "changing the group of replicas needs the admin "
                                              "role");
        return;
    }
    char line[AQ_TEXT_MAX];
    int rc = persist_change(self, request->routing_id, msg->tag, changes[which].change, argument,
                            line, sizeof line);
    if (rc == PERSIST_PENDING)
        return; /* answered once the group has committed it */
    if (rc == 0) {
        s_report_text(request, line);
        return;
    }
    const char *text;
    int code = persist_change_error(rc, &text);
    char address[AQ_ENDPOINT_MAX + 8];
    s_error(request, code,
            code == AQ_NOT_LEADER ? aq_bytes_str(persist_leader(self, address, sizeof address))
                                  : aq_bytes_str(argument),
            text);
}

static const handler_t s_handlers[AQ_CMD_COUNT_] = {
    [AQ_CMD_HELLO] = {s_on_hello, 0, 0},
    [AQ_CMD_CREDIT] = {s_on_credit, 1, ROLE_CONSUME},
    [AQ_CMD_ACK] = {s_on_ack, 1, ROLE_CONSUME},
    [AQ_CMD_TOUCH] = {s_on_touch, 1, ROLE_CONSUME},
    [AQ_CMD_NACK] = {s_on_nack, 1, ROLE_CONSUME},
    [AQ_CMD_JOIN] = {s_on_join, 1, ROLE_PRODUCE | ROLE_CONSUME},
    [AQ_CMD_SYNC] = {s_on_sync, 1, ROLE_PRODUCE},
    [AQ_CMD_STATS] = {s_on_stats, 1, ROLE_PRODUCE | ROLE_CONSUME},
    [AQ_CMD_INFO] = {s_on_info, 1, ROLE_PRODUCE | ROLE_CONSUME},
    [AQ_CMD_DEAD] = {s_on_dead, 1, ROLE_ADMIN},
    [AQ_CMD_SHUTDOWN] = {s_on_shutdown, 1, ROLE_ADMIN},
    [AQ_CMD_REOPEN] = {s_on_reopen, 1, ROLE_ADMIN},
    [AQ_CMD_PURGE] = {s_on_purge, 1, ROLE_ADMIN},
    [AQ_CMD_DELETE] = {s_on_delete, 1, ROLE_ADMIN},
    [AQ_CMD_PEEK] = {s_on_peek, 1, ROLE_CONSUME},
    [AQ_CMD_PAUSE] = {s_on_pause, 1, ROLE_ADMIN},
    [AQ_CMD_RESUME] = {s_on_pause, 1, ROLE_ADMIN},
    [AQ_CMD_REPLICAS] = {s_on_replicas, 1, ROLE_PRODUCE | ROLE_CONSUME},
    [AQ_CMD_BYE] = {s_on_bye, 1, 0},
    [AQ_CMD_HEARTBEAT] = {s_on_heartbeat, 0, 0},
};

static const char *s_peer_name(const peer_t *peer, aq_bytes_t routing_id, char *buf,
                               size_t size)
{
    if (peer)
        return log_escape(buf, size, peer->client_id, strlen(peer->client_id));
    size_t at = (size_t) snprintf(buf, size, "peer ");
    for (size_t i = 0; i < routing_id.size && at + 3 < size; i++)
        at += (size_t) snprintf(buf + at, size - at, "%02x", routing_id.data[i]);
    return buf;
}

/*  A message that did not decode: answered with the code, and its tag if
    the tag could be read (every request's first field). A client of
    version 1 is answered in its own layout. */
static void s_refuse_malformed(broker_t *self, const request_t *request, aq_status_t rc)
{
    size_t count;
    const aq_bytes_t *frames = aq_inbox_frames(self->router_inbox, &count);
    char name[600];
    ratelog_line(&self->bad_input, broker_now_ms(), "%s: %s (%s)",
                 s_peer_name(request->peer, request->routing_id, name, sizeof name),
                 aq_strerror(rc), aq_cmd_name(request->msg->cmd));
    if (rc == AQ_BAD_VERSION && count && frames[0].size == strlen(AQ_SIGNATURE_V1)
        && memcmp(frames[0].data, AQ_SIGNATURE_V1, frames[0].size) == 0) {
        if (self->router)
            aq_error_send_v1(self->router, &request->routing_id, ZMQ_DONTWAIT);
        return;
    }
    if (rc == AQ_BAD_VERSION && count >= 3 && count <= AQ_FIELDS_FRAMES_MAX) {
        /* A wrong signature: the tag read as the same message with the
           right one would be (the first field of every request but
           HEARTBEAT), so that the client can match the 406 to its request.
           Nothing else of it is acted on. */
        aq_bytes_t copy[AQ_FIELDS_FRAMES_MAX];
        memcpy(copy, frames, count * sizeof *copy);
        copy[0] = (aq_bytes_t){(const uint8_t *) AQ_SIGNATURE, strlen(AQ_SIGNATURE)};
        aq_msg_t read;
        aq_msg_decode(&read, copy, count);
        if (read.fields_read && read.cmd != AQ_CMD_HEARTBEAT) {
            broker_send_error(self, request->routing_id, rc, read.tag, (aq_bytes_t){0}, NULL);
            return;
        }
    }
    s_error(request, rc, (aq_bytes_t){0}, NULL);
}

void broker_on_router(broker_t *self)
{
    aq_inbox_t *inbox = self->router_inbox;
    int64_t now = broker_now_ms();
    int fd = aq_inbox_fd(inbox);
    if (!conns_admitted(self->conns, 0, fd, now)) {
        ratelog_line(&self->refusals, now, "message on %s connection %d (%s): dropped",
                     "ROUTER", fd, conns_state_name(self->conns, 0, fd));
        return; /* refused or closing: its messages are not looked at */
    }
    aq_msg_t msg;
    aq_status_t rc = aq_inbox_decode(inbox, &msg);
    aq_bytes_t routing_id = aq_inbox_routing_id(inbox);
    peer_t *peer = dict_get(self->peers, routing_id.data, routing_id.size);
    request_t request = {self, routing_id, peer, &msg, aq_inbox_user_id(inbox), fd};
    if (msg.fields_read == 0 || msg.cmd == AQ_CMD_HEARTBEAT)
        msg.tag = (aq_bytes_t){0}; /* no tag read: an ERROR cannot name one */
    if (rc) {
        s_refuse_malformed(self, &request, rc);
        return;
    }
    const handler_t *handler = &s_handlers[msg.cmd];
    char name[600];
    if (!handler->fn) {
        ratelog_line(&self->bad_input, now, "%s: %s is not a command for the ROUTER socket",
                     s_peer_name(peer, routing_id, name, sizeof name), aq_cmd_name(msg.cmd));
        s_error(&request, AQ_UNKNOWN_COMMAND, (aq_bytes_t){0},
                msg.cmd == AQ_CMD_PUT || msg.cmd == AQ_CMD_PUTS
                    ? "puts go to the broker's PULL socket"
                    : "not a command the broker accepts");
        return;
    }
    const char *superseded;
    if (!peer && msg.cmd == AQ_CMD_SYNC
        && (superseded = producers_superseded(self, routing_id))
        && strlen(superseded) == msg.producer.size
        && memcmp(superseded, msg.producer.data, msg.producer.size) == 0) {
        producers_refuse_superseded(self, routing_id, msg.tag, superseded);
        return;
    }
    if (handler->needs_session && !peer) {
        s_error(&request, AQ_NO_SESSION, (aq_bytes_t){0}, NULL);
        return;
    }
    if (handler->roles && !(peer->grant.roles & (handler->roles | ROLE_ADMIN))) {
        ratelog_line(&self->bad_input, now, "%s: %s refused: not in its roles",
                     s_peer_name(peer, routing_id, name, sizeof name), aq_cmd_name(msg.cmd));
        s_error(&request, AQ_FORBIDDEN, (aq_bytes_t){0},
                "this client's roles do not allow that command");
        return;
    }
    handler->fn(&request);
}
