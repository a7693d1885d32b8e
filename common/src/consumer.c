#include "asyncq/consumer.h"

#include <czmq.h>
#include <errno.h>
#include <string.h>

#include "asyncq/internal.h"
#include "asyncq/service.h"

/*  The consumer's part at one broker of the service (PROTOCOL.md 4.15). */
typedef struct {
    aq_session_t *session;
    const char *queue;
    uint64_t credit;          /* granted this broker */
    uint64_t held;            /* items it delivered that are not acked or nacked */
    uint64_t batch;           /* items per ITEMS asked for */
    int credit_withdrawn;     /* the broker took the credit: ask again */
    aq_batch_iter_t items;    /* the rest of the ITEMS being handed out */
    int has_items;
    int shut_down;            /* the broker said SHUT_DOWN: nothing more will come */
    int drained;              /* its last receive found nothing waiting */
    int ready;                /* it said READY: it has items and no room for us */
    char lowering[AQ_TAG_MAX + 1]; /* the CREDIT that lowers its credit, until CREDITED */
    char credit_tag[AQ_TAG_MAX + 1]; /* the last CREDIT's */
    int in_force;             /* its CREDITED came: what it allowed came before */
    uint64_t lowered_from;    /* the credit before it */
    int shard;
    uint8_t pending[AQ_ACK_BATCH * 8];
    size_t pending_count;
} link_t;

/*  Its credit is shared by the links: what they may hold together, held
    items included, never exceeds it; a link with items and no room (READY)
    gets credit from one with room and nothing coming. */
struct aq_consumer {
    link_t links[AQ_SERVICE_MAX];
    size_t count;
    size_t next;              /* the link get() looks at first */
    char queue[AQ_NAME_MAX + 1];
    uint64_t credit;
    unsigned gets;            /* aq_consumer_get calls: every 1024th looks at the links */
    char left_out[AQ_LEFT_OUT_MAX]; /* addresses given that answered nothing */
};

/*  What a link may hold: its credit, or more if items came before a lower
    credit took effect. */
static uint64_t s_share(const link_t *link)
{
    uint64_t credit = link->lowering[0] ? link->lowered_from : link->credit;
    return credit > link->held ? credit : link->held;
}

/*  Sends CREDIT and waits for CREDITED: a consumer that has it and gets
    nothing knows the queue is empty. Items that arrive meanwhile stay in
    the socket for get(). */
static aq_status_t s_credit(link_t *self, int timeout_ms)
{
    aq_msg_t msg = {.cmd = AQ_CMD_CREDIT};
    msg.queue = aq_bytes_str(self->queue);
    msg.credit = self->credit;
    msg.batch_max = self->batch;
    msg.with = aq_bytes_str("ready");
    self->ready = 0; /* asked anew */
    self->in_force = 0;
    aq_status_t rc = aq_session_request(self->session, &msg);
    snprintf(self->credit_tag, sizeof self->credit_tag, "%.*s", (int) msg.tag.size,
             (const char *) msg.tag.data);
    if (rc || timeout_ms == 0)
        return rc;
    char tag[AQ_TAG_MAX + 1];
    snprintf(tag, sizeof tag, "%s", self->credit_tag);
    aq_msg_t reply;
    int64_t deadline = aq_deadline_at(timeout_ms);
    /* Items can only come after CREDITED, so nothing else is lost here. */
    rc = aq_session_await(self->session, tag, &reply, aq_deadline_left(deadline), NULL, NULL);
    self->in_force = rc == AQ_OK;
    return rc == AQ_TIMEOUT ? AQ_UNREACHABLE : rc;
}

/*  The credit shared out: every link that is up a part, the first ones one
    more; one that is down gets its part once it is back and says READY. */
static void s_share_out(aq_consumer_t *self)
{
    size_t up = 0;
    for (size_t i = 0; i < self->count; i++)
        up += aq_session_is_up(self->links[i].session);
    for (size_t i = 0, k = 0; i < self->count; i++) {
        link_t *link = &self->links[i];
        link->credit = 0;
        if (up && aq_session_is_up(link->session)) {
            link->credit = self->credit / up + (k < self->credit % up);
            k++;
        }
        uint64_t max_batch = aq_session_welcome(link->session)->max_batch;
        uint64_t most = self->credit > 0 ? self->credit : 1;
        link->batch = most < max_batch ? most : max_batch;
    }
}

aq_consumer_t *aq_consumer_new(const char *address, const char *name, const char *queue,
                               uint64_t credit, aq_status_t *status)
{
    if (!queue || !aq_name_is_valid((const uint8_t *) queue, strlen(queue))) {
        *status = AQ_MALFORMED;
        aq_last_error_set("queue name '%s' is not valid: 1 to %d of A-Z a-z 0-9 . _ : -",
                          queue ? queue : "", AQ_NAME_MAX);
        return NULL;
    }
    aq_consumer_t *self = calloc(1, sizeof *self);
    if (!self) {
        *status = AQ_NOMEM;
        aq_last_error_status(address, AQ_NOMEM, NULL);
        return NULL;
    }
    strcpy(self->queue, queue);
    self->credit = credit;
    char client_id[AQ_NAME_MAX + 1];
    aq_client_id_make(name ? name : "consumer", client_id, sizeof client_id);
    aq_session_t **sessions =
        aq_service_open(address, client_id, 0, AQ_CONNECT_TIMEOUT_MS, self->left_out,
                        sizeof self->left_out, &self->count, status);
    for (size_t i = 0; i < self->count; i++) {
        self->links[i].session = sessions[i];
        self->links[i].queue = self->queue;
        self->links[i].shard = aq_session_welcome(sessions[i])->shard;
    }
    free(sessions);
    if (self->count)
        s_share_out(self);
    for (size_t i = 0; i < self->count && !*status; i++) {
        if (!aq_session_is_up(self->links[i].session))
            continue; /* its CREDIT follows its WELCOME */
        *status = s_credit(&self->links[i], AQ_CONNECT_TIMEOUT_MS);
        if (*status)
            aq_last_error_status(aq_session_address(self->links[i].session), *status,
                                 self->links[i].session);
    }
    if (*status)
        aq_consumer_destroy(&self);
    return self;
}

static aq_status_t s_flush(link_t *self);

void aq_consumer_destroy(aq_consumer_t **self_p)
{
    aq_consumer_t *self = *self_p;
    if (!self)
        return;
    for (size_t i = 0; i < self->count; i++) {
        if (self->links[i].session)
            s_flush(&self->links[i]);
        aq_session_destroy(&self->links[i].session);
    }
    free(self);
    *self_p = NULL;
}

aq_status_t aq_consumer_set_credit(aq_consumer_t *self, uint64_t credit)
{
    self->credit = credit;
    s_share_out(self);
    aq_status_t first = AQ_OK;
    for (size_t i = 0; i < self->count; i++) {
        self->links[i].lowering[0] = '\0';
        if (!aq_session_is_up(self->links[i].session))
            continue;
        aq_status_t rc = s_credit(&self->links[i], 0);
        if (rc && !first)
            first = rc;
    }
    return first;
}

static aq_status_t s_send_ids(link_t *self, aq_msg_t *msg, const uint8_t *ids,
                              size_t count)
{
    msg->ids = (aq_bytes_t){ids, count * 8};
    return aq_session_request(self->session, msg);
}

static aq_status_t s_flush(link_t *self)
{
    if (self->pending_count == 0)
        return AQ_OK;
    aq_msg_t msg = {.cmd = AQ_CMD_ACK};
    size_t count = self->pending_count;
    self->pending_count = 0;
    return s_send_ids(self, &msg, self->pending, count);
}

aq_status_t aq_consumer_flush(aq_consumer_t *self)
{
    aq_status_t first = AQ_OK;
    for (size_t i = 0; i < self->count; i++) {
        aq_status_t rc = s_flush(&self->links[i]);
        if (rc && !first)
            first = rc;
    }
    return first;
}

/*  The link of the broker that gave item `id`: its shard is the id's top
    8 bits (PROTOCOL.md 4.15). */
static link_t *s_link_of(aq_consumer_t *self, uint64_t id)
{
    int shard = (int) (id >> 56);
    for (size_t i = 0; i < self->count; i++)
        if (self->links[i].shard == shard)
            return &self->links[i];
    return &self->links[0]; /* the broker answers 404 */
}

/*  An item acked or nacked: the link holds one fewer. */
static void s_release_one(link_t *link)
{
    if (link->held)
        link->held--;
}

aq_status_t aq_consumer_ack(aq_consumer_t *self, uint64_t id)
{
    link_t *link = s_link_of(self, id);
    aq_put_u64(link->pending + link->pending_count * 8, id);
    link->pending_count++;
    s_release_one(link);
    return link->pending_count == AQ_ACK_BATCH ? s_flush(link) : AQ_OK;
}

/*  A new session, after the broker forgot this consumer or went silent:
    HELLO in the background, and CREDIT once it is welcomed. Items it held
    from the old session are the broker's to redeliver; their acks are
    dropped, and its credit is free for the other links meanwhile. */
static aq_status_t s_rejoin(link_t *self)
{
    self->pending_count = 0;
    self->has_items = 0;
    self->held = 0;
    self->credit = 0;
    self->ready = 0;
    self->in_force = 0;
    self->lowering[0] = '\0';
    return aq_session_hello_begin(self->session);
}

/*  TOUCH or NACK for one id, after the pending acks so order is kept. */
static aq_status_t s_send_one(link_t *self, aq_msg_t *msg, uint64_t id)
{
    aq_status_t rc = s_flush(self);
    if (rc)
        return rc;
    uint8_t frame[8];
    aq_put_u64(frame, id);
    return s_send_ids(self, msg, frame, 1);
}

aq_status_t aq_consumer_touch(aq_consumer_t *self, uint64_t id)
{
    aq_msg_t msg = {.cmd = AQ_CMD_TOUCH};
    return s_send_one(s_link_of(self, id), &msg, id);
}

aq_status_t aq_consumer_nack(aq_consumer_t *self, uint64_t id, uint64_t delay_ms,
                             const char *reason)
{
    aq_msg_t msg = {.cmd = AQ_CMD_NACK, .delay_ms = delay_ms};
    msg.text = aq_text_cut(reason ? reason : "", AQ_TEXT_MAX);
    if (!aq_utf8_is_valid(msg.text.data, msg.text.size))
        msg.text = aq_bytes_str("");
    link_t *link = s_link_of(self, id);
    s_release_one(link);
    return s_send_one(link, &msg, id);
}

static int s_next_from_batch(link_t *self, aq_item_t *item)
{
    aq_delivery_t delivery;
    if (!self->has_items || !aq_items_next(&self->items, &delivery)) {
        self->has_items = 0;
        return 0;
    }
    item->id = delivery.id;
    item->attempt = delivery.attempt;
    item->age_us = delivery.age_us;
    item->lease_ms = delivery.lease_ms;
    item->data = delivery.payload.data;
    item->size = delivery.payload.size;
    self->held++;
    return 1;
}

static void s_on_credited(link_t *self, const aq_msg_t *msg);

static aq_status_t s_take_item(link_t *self, aq_item_t *item, int timeout_ms)
{
    if (s_next_from_batch(self, item))
        return AQ_OK;
    aq_msg_t msg;
    aq_status_t rc = aq_session_recv(self->session, &msg, timeout_ms);
    self->drained = rc == AQ_TIMEOUT;
    const aq_error_t *error = aq_session_error(self->session);
    if (rc == AQ_REFUSED && error->code == AQ_NO_SESSION) {
        s_rejoin(self);
        return AQ_TIMEOUT; /* no item yet: the caller looks again */
    }
    if (rc == AQ_OK && msg.cmd == AQ_CMD_WELCOME) {
        /* Back: asked for what it has (READY moves credit to it). */
        s_credit(self, 0);
        return AQ_TIMEOUT;
    }
    int about_queue = rc == AQ_REFUSED && strcmp(error->subject, self->queue) == 0;
    if (about_queue && error->code == AQ_SHUT_DOWN) {
        /* Said once per consumer (PROTOCOL.md 4.11), and final: the queue
           holds nothing and takes no more puts. */
        self->shut_down = 1;
        return AQ_SHUT_DOWN;
    }
    if (about_queue && error->code == AQ_LEASE_EXPIRED)
        self->credit_withdrawn = 1;
    if (rc)
        return rc;
    if (msg.cmd == AQ_CMD_ITEMS) {
        aq_batch_iter_init(&self->items, msg.batch);
        self->has_items = 1;
        return s_next_from_batch(self, item) ? AQ_OK : AQ_TIMEOUT;
    }
    if (msg.cmd == AQ_CMD_READY)
        self->ready = 1;
    if (msg.cmd == AQ_CMD_CREDITED)
        s_on_credited(self, &msg);
    if (msg.cmd != AQ_CMD_ITEM)
        return AQ_TIMEOUT; /* not for us: the caller looks again */
    self->held++;
    item->id = msg.id;
    item->attempt = msg.attempt;
    item->age_us = msg.age_us;
    item->lease_ms = msg.lease_ms;
    item->data = msg.payload.data;
    item->size = msg.payload.size;
    return AQ_OK;
}

/*  A lowered credit in force: every item the broker sent under the old
    one has come (they come before CREDITED); s_rebalance gives what it
    freed to another link. */
static void s_on_credited(link_t *self, const aq_msg_t *msg)
{
    if (msg->tag.size == strlen(self->credit_tag)
        && memcmp(msg->tag.data, self->credit_tag, msg->tag.size) == 0)
        self->in_force = 1;
    if (self->lowering[0] && msg->tag.size == strlen(self->lowering)
        && memcmp(msg->tag.data, self->lowering, msg->tag.size) == 0)
        self->lowering[0] = '\0';
}

/*  A link that wants credit: its broker said READY, and it has no room
    (with room, the items come by themselves: the READY is old). */
static int s_wants(const link_t *link)
{
    return link->ready && !link->lowering[0] && !link->shut_down && link->credit <= link->held;
}

/*  Credit no link has (freed by a lowering, or by an ack of an item held
    beyond a link's credit) goes to a link that said READY, else to the
    next link in turn. */
static void s_rebalance(aq_consumer_t *self)
{
    uint64_t used = 0;
    for (size_t i = 0; i < self->count; i++)
        used += s_share(&self->links[i]);
    if (used >= self->credit)
        return;
    link_t *to = NULL;
    for (size_t i = 0; i < self->count && !to; i++)
        if (s_wants(&self->links[i]))
            to = &self->links[i];
    for (size_t step = 0; step < self->count && !to; step++) {
        link_t *link = &self->links[(self->next + step) % self->count];
        if (!link->lowering[0] && !link->shut_down && aq_session_is_up(link->session))
            to = link;
    }
    if (!to)
        return;
    to->credit = s_share(to) + (self->credit - used);
    s_credit(to, 0);
}

/*  A link said READY: credit that another link holds without items (room
    it does not use) is lowered there first; s_rebalance moves it once
    that broker confirms. */
static void s_move_credit(aq_consumer_t *self)
{
    int wanted = 0;
    for (size_t i = 0; i < self->count; i++) {
        if (self->links[i].lowering[0])
            return; /* one at a time */
        wanted |= s_wants(&self->links[i]);
    }
    if (!wanted || self->count < 2)
        return;
    for (size_t i = 0; i < self->count; i++) {
        link_t *from = &self->links[i];
        /* Only once its credit is in force: items it allowed come before
           CREDITED, so a link with room and none has nothing for us. */
        if (!from->in_force || from->has_items || from->credit <= from->held)
            continue;
        from->lowered_from = from->credit;
        from->credit = from->held;
        if (s_credit(from, 0) == AQ_OK)
            memcpy(from->lowering, from->credit_tag, sizeof from->lowering);
        return;
    }
}

/*  An item already here, from any link (the next link first, in turn), or
    AQ_TIMEOUT; a link's final word (shut down, an error) is returned. */
/*  A link whose broker went silent is said HELLO to in the background. */
static void s_look_at_links(aq_consumer_t *self)
{
    for (size_t i = 0; i < self->count; i++)
        if (!self->links[i].shut_down && aq_session_hello_due(self->links[i].session))
            s_rejoin(&self->links[i]);
}

static aq_status_t s_take_any(aq_consumer_t *self, aq_item_t *item)
{
    for (size_t step = 0; step < self->count; step++) {
        size_t i = (self->next + step) % self->count;
        link_t *link = &self->links[i];
        if (link->shut_down) {
            if (s_next_from_batch(link, item))
                return AQ_OK;
            continue;
        }
        if (link->credit_withdrawn) {
            /* A get() proves this consumer reads again: ask for the credit
               the broker withdrew. */
            link->credit_withdrawn = 0;
            aq_status_t rc = s_credit(link, 0);
            if (rc)
                return rc;
        }
        aq_status_t rc;
        do
            rc = s_take_item(link, item, 0);
        while (rc == AQ_TIMEOUT && !link->drained);
        if (rc == AQ_SHUT_DOWN)
            continue; /* the others may still have items */
        if (rc != AQ_TIMEOUT) {
            self->next = (i + 1) % self->count;
            return rc;
        }
    }
    s_rebalance(self); /* credit freed by a link that went, or that came back */
    if (self->count > 1)
        s_move_credit(self);
    for (size_t i = 0; i < self->count; i++)
        if (!self->links[i].shut_down)
            return AQ_TIMEOUT;
    return AQ_SHUT_DOWN; /* every broker said so */
}

aq_status_t aq_consumer_get(aq_consumer_t *self, aq_item_t *item, int timeout_ms)
{
    /* Shut down and empty everywhere: every get says so at once, the one
       that was waiting when the brokers told and every later one, without
       waiting. (Items of a batch that came before are handed out first;
       a broker tells only once nothing is in flight.) An item already
       here is taken without flushing acks, so acks coalesce under load;
       before waiting, pending acks go out (they are what earns the next
       items). */
    /* Items from the others may never stop: a silent one is still noticed. */
    if (self->count > 1 && ++self->gets % 1024 == 0)
        s_look_at_links(self);
    aq_status_t rc = s_take_any(self, item);
    if (rc == AQ_SHUT_DOWN) {
        aq_status_t flushed = aq_consumer_flush(self);
        return flushed ? flushed : AQ_SHUT_DOWN;
    }
    if (rc != AQ_TIMEOUT)
        return rc;
    rc = aq_consumer_flush(self);
    if (rc)
        return rc;
    int64_t deadline = aq_deadline_at(timeout_ms);
    /* Each link's DEALER, then the monitors of those with a group: the
       leader's connection lost wakes the wait at once (a planned stop
       hands the lead over within tens of milliseconds). */
    zmq_pollitem_t polls[2 * AQ_SERVICE_MAX];
    aq_session_t *watched[AQ_SERVICE_MAX];
    for (;;) {
        /* A SIGINT or SIGTERM (czmq's handler) that came between two
           polls ends the wait too, not only one that cut a poll short. */
        if (zsys_interrupted)
            return AQ_INTERRUPTED;
        int left = aq_deadline_left(deadline);
        /* A leader's connection lost while items still came (read since)
           is not waited on: its group is asked again now. */
        for (size_t i = 0; i < self->count; i++)
            if (!self->links[i].shut_down && aq_session_lost(self->links[i].session)) {
                s_look_at_links(self);
                break;
            }
        int wait = left;
        size_t count = self->count, monitors = 0;
        for (size_t i = 0; i < self->count; i++) {
            aq_session_t *session = self->links[i].session;
            /* Wake at least once per heartbeat to notice a silent broker. */
            wait = aq_session_slice(session, wait);
            polls[i] = (zmq_pollitem_t){aq_session_socket(session), 0, ZMQ_POLLIN, 0};
            void *monitor = aq_session_watch_socket(session);
            if (monitor) {
                watched[monitors++] = session;
                polls[count++] = (zmq_pollitem_t){monitor, 0, ZMQ_POLLIN, 0};
            }
        }
        if (zmq_poll(polls, (int) count, wait) < 0)
            return errno == EINTR ? AQ_INTERRUPTED : AQ_TRANSPORT;
        for (size_t k = 0; k < monitors; k++)
            if (polls[self->count + k].revents & ZMQ_POLLIN)
                aq_session_watch_read(watched[k]);
        rc = s_take_any(self, item);
        if (rc == AQ_TIMEOUT)
            s_look_at_links(self);
        if (rc == AQ_SHUT_DOWN) {
            aq_status_t flushed = aq_consumer_flush(self);
            return flushed ? flushed : AQ_SHUT_DOWN;
        }
        if (rc != AQ_TIMEOUT || left == 0)
            return rc;
    }
}

aq_session_t *aq_consumer_session(aq_consumer_t *self)
{
    return self->links[0].session;
}

const char *aq_consumer_unreachable(const aq_consumer_t *self)
{
    return self->left_out;
}
