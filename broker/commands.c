/*  One handler per command. Each message has been decoded and checked whole
    before its handler runs; a handler checks what depends on state (the
    session, the item's holder, limits) before it changes anything. */
#include "broker.h"

#include <czmq.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef void(handler_fn)(broker_t *self, aq_bytes_t routing_id, peer_t *peer,
                         const aq_msg_t *msg);

typedef struct {
    handler_fn *fn;
    int needs_session;
} handler_t;

static void s_error(broker_t *self, aq_bytes_t routing_id, int code, aq_bytes_t subject,
                    const char *text)
{
    broker_send_error(self, routing_id.data, routing_id.size, code, subject, text);
}

static void s_reply(broker_t *self, aq_bytes_t routing_id, const aq_msg_t *msg)
{
    broker_send(self, routing_id.data, routing_id.size, msg, NULL);
}

/*  Drops a peer and lets the items it held go to others. */
static void s_drop(broker_t *self, peer_t *peer, const char *reason)
{
    queue_t *queue = peer->consumer.queue;
    broker_drop_peer(self, peer, reason);
    if (queue)
        broker_dispatch(self, queue);
}

static void s_on_hello(broker_t *self, aq_bytes_t routing_id, peer_t *peer, const aq_msg_t *msg)
{
    if (peer)
        s_drop(self, peer, "new HELLO on the same connection");
    peer_t *same_client = dict_get(self->clients, msg->client.data, msg->client.size);
    if (same_client)
        s_drop(self, same_client, "replaced by a new connection with the same client id");

    peer = calloc(1, sizeof *peer);
    if (!peer || routing_id.size > sizeof peer->routing_id) {
        free(peer);
        s_error(self, routing_id, AQ_INTERNAL, (aq_bytes_t){0}, "cannot open a session");
        return;
    }
    memcpy(peer->routing_id, routing_id.data, routing_id.size);
    peer->routing_id_size = routing_id.size;
    memcpy(peer->client_id, msg->client.data, msg->client.size);
    peer->serial = ++self->next_serial;
    consumer_init(&peer->consumer);
    list_init(&peer->dropped_link);
    list_init(&peer->joins);
    if (dict_set(self->peers, routing_id.data, routing_id.size, peer)) {
        free(peer);
        s_error(self, routing_id, AQ_INTERNAL, (aq_bytes_t){0}, "cannot open a session");
        return;
    }
    if (dict_set(self->clients, msg->client.data, msg->client.size, peer)) {
        dict_delete(self->peers, routing_id.data, routing_id.size);
        free(peer);
        s_error(self, routing_id, AQ_INTERNAL, (aq_bytes_t){0}, "cannot open a session");
        return;
    }
    /* A producer says where its unconfirmed puts start; the broker takes
       puts from a producer id only after such a HELLO. */
    producer_t *producer = producers_get(self, msg->client, msg->seq > 0);
    if (producer) {
        producer->peer = peer;
        peer->producer = producer;
        if (msg->seq)
            producers_resume(self, producer, msg->seq);
    }
    aq_msg_t welcome = {.cmd = AQ_CMD_WELCOME};
    welcome.broker = aq_bytes_str(self->broker_id);
    welcome.max_item = self->config.max_item;
    welcome.heartbeat_ms = self->config.heartbeat_ms;
    s_reply(self, routing_id, &welcome);
}

static void s_on_credit(broker_t *self, aq_bytes_t routing_id, peer_t *peer,
                        const aq_msg_t *msg)
{
    consumer_t *consumer = &peer->consumer;
    if (consumer->queue && (strlen(consumer->queue->name) != msg->queue.size
                            || memcmp(consumer->queue->name, msg->queue.data, msg->queue.size))) {
        s_error(self, routing_id, AQ_CONFLICT, msg->queue,
                "a session consumes one queue; open another session for this one");
        return;
    }
    if (msg->credit > self->config.max_credit) {
        char text[80];
        snprintf(text, sizeof text, "credit is at most %llu",
                 (unsigned long long) self->config.max_credit);
        s_error(self, routing_id, AQ_LIMIT, msg->queue, text);
        return;
    }
    aq_status_t rc;
    queue_t *queue = broker_queue(self, msg->queue, 1, &rc);
    if (!queue) {
        s_error(self, routing_id, rc, msg->queue, NULL);
        return;
    }
    if (consumer->queue)
        queue_set_credit(queue, consumer, msg->credit);
    else {
        consumer->credit = msg->credit;
        queue_attach(queue, consumer);
    }
    if (queue->drained_told) /* it came too late to hear it */
        s_error(self, routing_id, AQ_SHUT_DOWN, msg->queue, "queue shut down and empty");
    broker_dispatch(self, queue);
}

/*  The item with the id in `frame` if this peer holds it; otherwise answers
    the error (LEASE_EXPIRED if the item was taken back from this very
    session, UNKNOWN_ITEM else) and returns NULL. */
static item_t *s_held_item(broker_t *self, aq_bytes_t routing_id, peer_t *peer, aq_bytes_t frame,
                           const char *verb)
{
    uint64_t id = 0;
    aq_parse_u64(frame.data, frame.size, &id); /* checked by the codec */
    item_t *item = store_find(self->store, id);
    if (item && item->holder == &peer->consumer)
        return item;
    if (item && item->taken_from == peer->serial) {
        s_error(self, routing_id, AQ_LEASE_EXPIRED, frame, NULL);
        return NULL;
    }
    broker_log_bad_input(self, "%s: %s of item %llu it does not hold", peer->client_id, verb,
                         (unsigned long long) id);
    s_error(self, routing_id, AQ_UNKNOWN_ITEM, frame, "this consumer holds no item with that id");
    return NULL;
}

static void s_on_ack(broker_t *self, aq_bytes_t routing_id, peer_t *peer, const aq_msg_t *msg)
{
    consumer_t *consumer = &peer->consumer;
    for (size_t i = 0; i < msg->list_size; i++) {
        item_t *item = s_held_item(self, routing_id, peer, msg->list[i], "ack");
        if (!item)
            continue;
        deadlines_cancel(&self->deadlines, &item->timer);
        queue_ack(item->queue, consumer, item);
        store_remove(self->store, item);
    }
    if (consumer->queue) {
        broker_release_joiners(self, consumer->queue);
        broker_dispatch(self, consumer->queue);
    }
}

static void s_on_touch(broker_t *self, aq_bytes_t routing_id, peer_t *peer, const aq_msg_t *msg)
{
    int64_t now = broker_now_ms();
    for (size_t i = 0; i < msg->list_size; i++) {
        item_t *item = s_held_item(self, routing_id, peer, msg->list[i], "touch");
        if (item) /* scheduled already: cannot fail */
            deadlines_set(&self->deadlines, &item->timer, now + (int64_t) broker_lease_ms(item));
    }
}

static void s_on_nack(broker_t *self, aq_bytes_t routing_id, peer_t *peer, const aq_msg_t *msg)
{
    uint64_t delay_ms = msg->delay_ms > INT32_MAX ? INT32_MAX : msg->delay_ms;
    for (size_t i = 0; i < msg->list_size; i++) {
        item_t *item = s_held_item(self, routing_id, peer, msg->list[i], "nack");
        if (!item)
            continue;
        if (msg->text.size)
            broker_log(self, "item %llu of %s returned by %s, attempt %u: %.*s",
                       (unsigned long long) item->id, item->queue->name, peer->client_id,
                       item->attempts, (int) msg->text.size, (const char *) msg->text.data);
        broker_take_back(self, item, delay_ms);
    }
    if (peer->consumer.queue)
        broker_dispatch(self, peer->consumer.queue);
}

void broker_free_joiner(broker_t *self, joiner_t *joiner)
{
    deadlines_cancel(&self->deadlines, &joiner->deadline);
    if (joiner->peer) {
        list_remove(&joiner->peer_link);
        joiner->peer->join_count--;
    }
    self->joiner_count--;
    free(joiner);
}

static void s_send_joined(broker_t *self, aq_bytes_t routing_id, const aq_msg_t *join,
                          uint64_t waited)
{
    aq_msg_t joined = {.cmd = AQ_CMD_JOINED};
    joined.tag = join->tag;
    joined.queue = join->queue;
    joined.count = waited;
    s_reply(self, routing_id, &joined);
}

static void s_on_join(broker_t *self, aq_bytes_t routing_id, peer_t *peer, const aq_msg_t *msg)
{
    aq_status_t rc;
    queue_t *queue = broker_queue(self, msg->queue, 0, &rc);
    if (!queue) {
        s_send_joined(self, routing_id, msg, 0); /* never had an item */
        return;
    }
    if (peer->join_count >= self->config.max_joins_per_peer) {
        broker_log_bad_input(self, "%s: more than %llu joins waiting at once", peer->client_id,
                             (unsigned long long) self->config.max_joins_per_peer);
        s_error(self, routing_id, AQ_LIMIT, msg->tag, "too many joins waiting for this session");
        return;
    }
    if (self->joiner_count >= self->config.max_joiners) {
        s_error(self, routing_id, AQ_LIMIT, msg->tag, "too many joins are waiting");
        return;
    }
    joiner_t *joiner = calloc(1, sizeof *joiner);
    if (!joiner) {
        s_error(self, routing_id, AQ_INTERNAL, msg->tag, NULL);
        return;
    }
    self->joiner_count++;
    joiner->peer = peer;
    list_push_back(&peer->joins, &joiner->peer_link);
    peer->join_count++;
    deadline_init(&joiner->deadline, TIMER_JOIN);
    joiner->mode = (aq_join_mode_t) msg->mode;
    memcpy(joiner->routing_id, routing_id.data, routing_id.size);
    joiner->routing_id_size = routing_id.size;
    memcpy(joiner->tag, msg->tag.data, msg->tag.size);
    joiner->tag_size = msg->tag.size;
    if (queue_join_start(queue, joiner)) {
        s_send_joined(self, routing_id, msg, joiner->waited);
        broker_free_joiner(self, joiner);
        return;
    }
    if (msg->timeout_ms) {
        uint64_t timeout = msg->timeout_ms > INT32_MAX ? INT32_MAX : msg->timeout_ms;
        if (deadlines_set(&self->deadlines, &joiner->deadline,
                          broker_now_ms() + (int64_t) timeout)) {
            s_error(self, routing_id, AQ_INTERNAL, msg->tag, NULL);
            broker_free_joiner(self, joiner);
            return;
        }
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
    broker_send(self, joiner->routing_id, joiner->routing_id_size, &reply, NULL);
    queue_remove_joiner(queue, joiner);
    broker_free_joiner(self, joiner);
}

static void s_on_sync(broker_t *self, aq_bytes_t routing_id, peer_t *peer, const aq_msg_t *msg)
{
    (void) peer;
    producer_t *producer = producers_get(self, msg->producer, 0);
    if (!producer) {
        s_error(self, routing_id, AQ_NO_SESSION, msg->tag,
                "no HELLO from this producer: its puts were dropped; say HELLO with the "
                "first unconfirmed seq and resend");
        return;
    }
    producers_sync(self, producer, routing_id, msg->tag, msg->seq);
}

typedef struct {
    char (*text)[AQ_TEXT_MAX + 1];
    aq_bytes_t *lines;
    size_t count;
    size_t capacity;
} report_t;

static const char *s_state_name(queue_state_t state)
{
    return state == QUEUE_OPEN ? "open" : state == QUEUE_DRAINING ? "draining" : "discarding";
}

static void s_report_line(report_t *report, const char *name, const queue_t *queue)
{
    static const queue_t empty = {.name = ""};
    if (!queue)
        queue = &empty;
    if (report->count == report->capacity)
        return; /* more queues than one REPORT carries */
    char *text = report->text[report->count];
    int length = snprintf(
        text, AQ_TEXT_MAX + 1,
        "queue=%s queued=%llu inflight=%llu delayed=%llu acked=%llu dead=%llu consumers=%llu joiners=%llu "
        "outstanding=%llu puts=%llu delivered=%llu redelivered=%llu maxsize=%llu "
        "lease_ms=%llu state=%s discarded=%llu",
        name, (unsigned long long) queue->ready_count,
        (unsigned long long) queue->inflight_count, (unsigned long long) queue->delayed_count,
        (unsigned long long) queue->acked_total, (unsigned long long) queue->dead_count,
        (unsigned long long) queue->consumer_count, (unsigned long long) queue->joiner_count,
        (unsigned long long) queue->ledger.outstanding, (unsigned long long) queue->put_total,
        (unsigned long long) queue->delivered_total,
        (unsigned long long) queue->redelivered_total, (unsigned long long) queue->maxsize,
        (unsigned long long) queue->lease_ms, s_state_name(queue->state),
        (unsigned long long) queue->discarded_total);
    report->lines[report->count++] = (aq_bytes_t){(const uint8_t *) text, (size_t) length};
}

static void s_report_each(void *ctx, void *value)
{
    queue_t *queue = value;
    s_report_line(ctx, queue->name, queue);
}

static int s_compare_lines(const void *a, const void *b)
{
    const aq_bytes_t *left = a, *right = b;
    size_t size = left->size < right->size ? left->size : right->size;
    int order = memcmp(left->data, right->data, size);
    return order ? order : (left->size > right->size) - (left->size < right->size);
}

static void s_on_stats(broker_t *self, aq_bytes_t routing_id, peer_t *peer, const aq_msg_t *msg)
{
    (void) peer;
    size_t capacity = msg->queue.size ? 1 : dict_size(self->queues);
    if (capacity > AQ_LIST_MAX)
        capacity = AQ_LIST_MAX;
    report_t report = {calloc(capacity ? capacity : 1, sizeof *report.text),
                       calloc(capacity ? capacity : 1, sizeof *report.lines), 0,
                       capacity};
    if (!report.text || !report.lines) {
        s_error(self, routing_id, AQ_INTERNAL, msg->tag, NULL);
    }
    else {
        if (msg->queue.size) {
            char name[AQ_NAME_MAX + 1];
            memcpy(name, msg->queue.data, msg->queue.size);
            name[msg->queue.size] = '\0';
            aq_status_t rc;
            s_report_line(&report, name, broker_queue(self, msg->queue, 0, &rc));
        }
        else if (capacity)
            dict_each(self->queues, s_report_each, &report);
        qsort(report.lines, report.count, sizeof *report.lines, s_compare_lines);
        aq_msg_t reply = {.cmd = AQ_CMD_REPORT};
        reply.tag = msg->tag;
        reply.list = report.lines;
        reply.list_size = report.count;
        s_reply(self, routing_id, &reply);
    }
    free(report.text);
    free(report.lines);
}

/*  One line per dead item, or one line with the count moved or deleted. */
static void s_on_dead(broker_t *self, aq_bytes_t routing_id, peer_t *peer, const aq_msg_t *msg)
{
    (void) peer;
    aq_status_t rc;
    queue_t *queue = broker_queue(self, msg->queue, 0, &rc);
    static char text[AQ_LIST_MAX][80];
    static aq_bytes_t lines[AQ_LIST_MAX];
    size_t count = 0;
    if (msg->text.size == 4 && memcmp(msg->text.data, "list", 4) == 0) {
        list_node_t *node;
        for (node = queue ? queue->dead.next : NULL; node && node != &queue->dead && count < AQ_LIST_MAX;
             node = node->next, count++) {
            item_t *item = list_entry(node, item_t, link);
            int length = snprintf(text[count], sizeof text[count], "id=%llu attempts=%u size=%zu",
                                  (unsigned long long) item->id, item->attempts,
                                  zmq_msg_size(&item->payload));
            lines[count] = (aq_bytes_t){(const uint8_t *) text[count], (size_t) length};
        }
    }
    else if (msg->text.size == 7 && memcmp(msg->text.data, "requeue", 7) == 0) {
        uint64_t moved = 0;
        if (queue && queue_requeue_dead(queue, &moved))
            broker_log(self, "out of memory: some dead items of %s stay dead", queue->name);
        int length = snprintf(text[0], sizeof text[0], "requeued=%llu", (unsigned long long) moved);
        lines[count++] = (aq_bytes_t){(const uint8_t *) text[0], (size_t) length};
        if (queue)
            broker_dispatch(self, queue);
    }
    else if (msg->text.size == 5 && memcmp(msg->text.data, "purge", 5) == 0) {
        uint64_t purged = 0;
        item_t *item;
        while (queue && (item = queue_take_dead(queue))) {
            store_remove(self->store, item);
            purged++;
        }
        int length = snprintf(text[0], sizeof text[0], "purged=%llu", (unsigned long long) purged);
        lines[count++] = (aq_bytes_t){(const uint8_t *) text[0], (size_t) length};
    }
    else {
        s_error(self, routing_id, AQ_MALFORMED, msg->tag, "DEAD takes list, requeue or purge");
        return;
    }
    aq_msg_t reply = {.cmd = AQ_CMD_REPORT, .tag = msg->tag, .list = lines, .list_size = count};
    s_reply(self, routing_id, &reply);
}

/*  SHUTDOWN of one queue or of all: one report line per queue shut. */
static void s_on_shutdown(broker_t *self, aq_bytes_t routing_id, peer_t *peer,
                          const aq_msg_t *msg)
{
    queue_state_t state = msg->mode == AQ_SHUTDOWN_IMMEDIATE ? QUEUE_DISCARDING : QUEUE_DRAINING;
    broker_log(self, "%s: shutdown (%s) of %s",
               peer ? peer->client_id : "a client without a session",
               state == QUEUE_DISCARDING ? "immediate" : "drain",
               msg->queue.size ? "one queue" : "every queue");
    aq_status_t rc;
    char name[AQ_NAME_MAX + 1] = "";
    memcpy(name, msg->queue.data, msg->queue.size);
    name[msg->queue.size] = '\0';
    queue_t *queue = msg->queue.size ? broker_queue(self, msg->queue, 1, &rc) : NULL;
    if (msg->queue.size && !queue) {
        s_error(self, routing_id, rc, msg->tag, NULL);
        return;
    }
    if (queue)
        broker_shut_queue(self, queue, state);
    else
        broker_shut_all(self, state);
    static char text[AQ_LIST_MAX][AQ_TEXT_MAX + 1];
    static aq_bytes_t lines[AQ_LIST_MAX];
    report_t report = {text, lines, 0, AQ_LIST_MAX};
    if (queue)
        s_report_line(&report, name, queue);
    else
        dict_each(self->queues, s_report_each, &report);
    qsort(report.lines, report.count, sizeof *report.lines, s_compare_lines);
    aq_msg_t reply = {.cmd = AQ_CMD_REPORT, .tag = msg->tag, .list = lines, .list_size = report.count};
    s_reply(self, routing_id, &reply);
}

static void s_on_bye(broker_t *self, aq_bytes_t routing_id, peer_t *peer, const aq_msg_t *msg)
{
    (void) routing_id;
    (void) msg;
    if (!peer)
        return;
    producer_t *producer = peer->producer;
    s_drop(self, peer, "said BYE");
    if (producer && list_empty(&producer->syncs))
        producers_forget(self, producer);
}

static void s_on_heartbeat(broker_t *self, aq_bytes_t routing_id, peer_t *peer,
                           const aq_msg_t *msg)
{
    (void) self, (void) routing_id, (void) peer, (void) msg;
}

static const handler_t s_handlers[AQ_CMD_COUNT_] = {
    [AQ_CMD_HELLO] = {s_on_hello, 0},   [AQ_CMD_CREDIT] = {s_on_credit, 1},
    [AQ_CMD_ACK] = {s_on_ack, 1},       [AQ_CMD_JOIN] = {s_on_join, 1},
    [AQ_CMD_SYNC] = {s_on_sync, 0},     [AQ_CMD_STATS] = {s_on_stats, 0},
    [AQ_CMD_BYE] = {s_on_bye, 0},       [AQ_CMD_HEARTBEAT] = {s_on_heartbeat, 0},
    [AQ_CMD_TOUCH] = {s_on_touch, 1},   [AQ_CMD_NACK] = {s_on_nack, 1},
    [AQ_CMD_DEAD] = {s_on_dead, 0},     [AQ_CMD_SHUTDOWN] = {s_on_shutdown, 0},
};

static const char *s_peer_name(const peer_t *peer, aq_bytes_t routing_id, char *buf,
                               size_t size)
{
    if (peer)
        return peer->client_id;
    size_t at = (size_t) snprintf(buf, size, "peer ");
    for (size_t i = 0; i < routing_id.size && at + 3 < size; i++)
        at += (size_t) snprintf(buf + at, size - at, "%02x", routing_id.data[i]);
    return buf;
}

void broker_on_router(broker_t *self)
{
    aq_inbox_t *inbox = self->router_inbox;
    aq_bytes_t routing_id = aq_inbox_routing_id(inbox);
    aq_msg_t msg;
    aq_status_t rc = aq_inbox_decode(inbox, &msg);
    peer_t *peer = dict_get(self->peers, routing_id.data, routing_id.size);
    char name[600];
    if (rc) {
        broker_log_bad_input(self, "%s: %s (%s)", s_peer_name(peer, routing_id, name, sizeof name),
                             aq_strerror(rc), aq_cmd_name(msg.cmd));
        s_error(self, routing_id, rc, msg.tag, NULL);
        return;
    }
    const handler_t *handler = &s_handlers[msg.cmd];
    if (!handler->fn) {
        broker_log_bad_input(self, "%s: %s is not a command for the ROUTER socket",
                             s_peer_name(peer, routing_id, name, sizeof name), aq_cmd_name(msg.cmd));
        s_error(self, routing_id, AQ_UNKNOWN_COMMAND, msg.tag,
                msg.cmd == AQ_CMD_PUT ? "PUT goes to the broker's PULL socket"
                                      : "not a command the broker accepts");
        return;
    }
    if (handler->needs_session && !peer) {
        s_error(self, routing_id, AQ_NO_SESSION, msg.tag, NULL);
        return;
    }
    handler->fn(self, routing_id, peer, &msg);
}

/*  A put that cannot be accepted is still received: it advances its
    producer's sequence, and the producer hears why (if it said HELLO). */
static void s_refuse_put(broker_t *self, producer_t *producer, const aq_msg_t *msg, int code,
                         const char *text)
{
    broker_log_bad_input(self, "put of %zu bytes to %.*s refused: %s", msg->payload.size,
                         (int) msg->queue.size, (const char *) msg->queue.data, text);
    if (!producer)
        return;
    if (producer->peer) {
        char seq[AQ_U64_DIGITS + 1];
        size_t length = aq_format_u64(msg->seq, seq);
        broker_send_error(self, producer->peer->routing_id, producer->peer->routing_id_size, code,
                          (aq_bytes_t){(const uint8_t *) seq, length}, text);
    }
    producers_received(self, producer, msg->seq);
}

int broker_on_put(broker_t *self)
{
    aq_inbox_t *inbox = self->pull_inbox;
    aq_msg_t msg;
    aq_status_t rc = aq_inbox_decode(inbox, &msg);
    if (rc == AQ_OK && msg.cmd != AQ_CMD_PUT)
        rc = AQ_UNKNOWN_COMMAND;
    if (rc == AQ_OK && (msg.producer.size == 0) != (msg.seq == 0))
        rc = AQ_MALFORMED; /* a producer id goes with a seq from 1, none with 0 */
    if (rc) {
        broker_log_bad_input(self, "on the PULL socket: %s (%s)", aq_strerror(rc),
                             aq_cmd_name(msg.cmd));
        return 0;
    }
    producer_t *producer = NULL;
    if (msg.producer.size) {
        producer = producers_get(self, msg.producer, 0);
        if (!producer) {
            /* Sent before this broker heard the producer's HELLO (left in
               its socket from a broker run that ended, say): it resends. */
            broker_log_bad_input(self, "put from producer %.*s, which has not said HELLO, dropped",
                                 (int) msg.producer.size, (const char *) msg.producer.data);
            return 0;
        }
        if (!producers_check(self, producer, msg.seq))
            return 0;
    }
    char text[120];
    if (msg.payload.size > self->config.max_item) {
        snprintf(text, sizeof text, "item of %zu bytes is larger than the limit of %llu",
                 msg.payload.size, (unsigned long long) self->config.max_item);
        s_refuse_put(self, producer, &msg, AQ_TOO_BIG, text);
        return 0;
    }
    queue_t *queue = broker_queue(self, msg.queue, 1, &rc);
    if (!queue) {
        s_refuse_put(self, producer, &msg, rc,
                     rc == AQ_LIMIT ? "too many queues" : "cannot create the queue");
        return 0;
    }
    if (queue->state != QUEUE_OPEN) {
        s_refuse_put(self, producer, &msg, AQ_SHUT_DOWN, "queue shut down: puts are refused");
        return 0;
    }
    if (queue_is_full(queue)) {
        self->parked_queue = queue;
        return 1;
    }
    /* Room for this item's lease timer is secured now, so delivering it can
       never fail for lack of memory. */
    item_t *item = deadlines_reserve(&self->deadlines, store_count(self->store) + 64)
                       ? NULL
                       : store_add(self->store);
    if (!item || queue_accept(queue, item)) {
        if (item)
            store_remove(self->store, item);
        s_refuse_put(self, producer, &msg, AQ_INTERNAL, "out of memory");
        return 0;
    }
    item->accepted_us = zclock_usecs();
    item->lease_ms = msg.lease_ms > INT32_MAX ? INT32_MAX : (uint32_t) msg.lease_ms;
    aq_inbox_take_last(inbox, &item->payload);
    if (producer)
        producers_received(self, producer, msg.seq);
    broker_dispatch(self, queue);
    return 0;
}
