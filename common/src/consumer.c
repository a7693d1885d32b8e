#include "asyncq/consumer.h"

#include <czmq.h>
#include <string.h>

#include "asyncq/internal.h"

struct aq_consumer {
    aq_session_t *session;
    char queue[AQ_NAME_MAX + 1];
    uint64_t credit;
    uint64_t batch;           /* items per ITEMS asked for */
    int credit_withdrawn;     /* the broker took the credit: ask again */
    aq_batch_iter_t items;    /* the rest of the ITEMS being handed out */
    int has_items;
    int shut_down;            /* the broker said SHUT_DOWN: nothing more will come */
    uint8_t pending[AQ_ACK_BATCH * 8];
    size_t pending_count;
};

/*  Sends CREDIT and waits for CREDITED: a consumer that has it and gets
    nothing knows the queue is empty. Items that arrive meanwhile stay in
    the socket for get(). */
static aq_status_t s_credit(aq_consumer_t *self, int timeout_ms)
{
    aq_msg_t msg = {.cmd = AQ_CMD_CREDIT};
    msg.queue = aq_bytes_str(self->queue);
    msg.credit = self->credit;
    msg.batch_max = self->batch;
    aq_status_t rc = aq_session_request(self->session, &msg);
    if (rc || timeout_ms == 0)
        return rc;
    char tag[AQ_TAG_MAX + 1];
    snprintf(tag, sizeof tag, "%.*s", (int) msg.tag.size, (const char *) msg.tag.data);
    aq_msg_t reply;
    int64_t deadline = aq_deadline_at(timeout_ms);
    /* Items can only come after CREDITED, so nothing else is lost here. */
    rc = aq_session_await(self->session, tag, &reply, aq_deadline_left(deadline), NULL, NULL);
    return rc == AQ_TIMEOUT ? AQ_UNREACHABLE : rc;
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
    self->session = aq_session_open(address, client_id, 0, AQ_CONNECT_TIMEOUT_MS, status);
    if (self->session) {
        uint64_t max_batch = aq_session_welcome(self->session)->max_batch;
        self->batch = credit < max_batch ? credit : max_batch;
        *status = s_credit(self, AQ_CONNECT_TIMEOUT_MS);
        if (*status)
            aq_last_error_status(address, *status, self->session);
    }
    if (*status)
        aq_consumer_destroy(&self);
    return self;
}

void aq_consumer_destroy(aq_consumer_t **self_p)
{
    aq_consumer_t *self = *self_p;
    if (!self)
        return;
    if (self->session)
        aq_consumer_flush(self);
    aq_session_destroy(&self->session);
    free(self);
    *self_p = NULL;
}

aq_status_t aq_consumer_set_credit(aq_consumer_t *self, uint64_t credit)
{
    self->credit = credit;
    return s_credit(self, 0);
}

static aq_status_t s_send_ids(aq_consumer_t *self, aq_msg_t *msg, const uint8_t *ids,
                              size_t count)
{
    msg->ids = (aq_bytes_t){ids, count * 8};
    return aq_session_request(self->session, msg);
}

aq_status_t aq_consumer_flush(aq_consumer_t *self)
{
    if (self->pending_count == 0)
        return AQ_OK;
    aq_msg_t msg = {.cmd = AQ_CMD_ACK};
    size_t count = self->pending_count;
    self->pending_count = 0;
    return s_send_ids(self, &msg, self->pending, count);
}

aq_status_t aq_consumer_ack(aq_consumer_t *self, uint64_t id)
{
    aq_put_u64(self->pending + self->pending_count * 8, id);
    self->pending_count++;
    return self->pending_count == AQ_ACK_BATCH ? aq_consumer_flush(self) : AQ_OK;
}

/*  A new session and the same credit, after the broker forgot this consumer.
    Items it held from the old session are the broker's to redeliver; their
    acks are dropped. */
static aq_status_t s_rejoin(aq_consumer_t *self)
{
    self->pending_count = 0;
    self->has_items = 0;
    aq_status_t rc = aq_session_hello(self->session, AQ_CONNECT_TIMEOUT_MS);
    return rc ? rc : s_credit(self, 0);
}

/*  TOUCH or NACK for one id, after the pending acks so order is kept. */
static aq_status_t s_send_one(aq_consumer_t *self, aq_msg_t *msg, uint64_t id)
{
    aq_status_t rc = aq_consumer_flush(self);
    if (rc)
        return rc;
    uint8_t frame[8];
    aq_put_u64(frame, id);
    return s_send_ids(self, msg, frame, 1);
}

aq_status_t aq_consumer_touch(aq_consumer_t *self, uint64_t id)
{
    aq_msg_t msg = {.cmd = AQ_CMD_TOUCH};
    return s_send_one(self, &msg, id);
}

aq_status_t aq_consumer_nack(aq_consumer_t *self, uint64_t id, uint64_t delay_ms,
                             const char *reason)
{
    aq_msg_t msg = {.cmd = AQ_CMD_NACK, .delay_ms = delay_ms};
    msg.text = aq_text_cut(reason ? reason : "", AQ_TEXT_MAX);
    if (!aq_utf8_is_valid(msg.text.data, msg.text.size))
        msg.text = aq_bytes_str("");
    return s_send_one(self, &msg, id);
}

static int s_next_from_batch(aq_consumer_t *self, aq_item_t *item)
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
    return 1;
}

static aq_status_t s_take_item(aq_consumer_t *self, aq_item_t *item, int timeout_ms)
{
    if (s_next_from_batch(self, item))
        return AQ_OK;
    aq_msg_t msg;
    aq_status_t rc = aq_session_recv(self->session, &msg, timeout_ms);
    const aq_error_t *error = aq_session_error(self->session);
    if (rc == AQ_REFUSED && error->code == AQ_NO_SESSION) {
        s_rejoin(self);
        return AQ_TIMEOUT; /* no item yet: the caller looks again */
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
    if (msg.cmd != AQ_CMD_ITEM)
        return AQ_TIMEOUT; /* not for us: the caller looks again */
    item->id = msg.id;
    item->attempt = msg.attempt;
    item->age_us = msg.age_us;
    item->lease_ms = msg.lease_ms;
    item->data = msg.payload.data;
    item->size = msg.payload.size;
    return AQ_OK;
}

aq_status_t aq_consumer_get(aq_consumer_t *self, aq_item_t *item, int timeout_ms)
{
    /* Shut down and empty: every get says so at once, the one that was
       waiting when the broker told and every later one, without waiting.
       (Items of a batch that came before would still be handed out first;
       the broker tells only once nothing is in flight.) */
    if (self->shut_down) {
        if (s_next_from_batch(self, item))
            return AQ_OK;
        aq_status_t rc = aq_consumer_flush(self);
        return rc ? rc : AQ_SHUT_DOWN;
    }
    /* A get() proves this consumer reads again: ask for the credit the
       broker withdrew. */
    if (self->credit_withdrawn) {
        self->credit_withdrawn = 0;
        aq_status_t rc = s_credit(self, 0);
        if (rc)
            return rc;
    }
    /* An item already here is taken without flushing acks, so acks coalesce
       under load; before waiting, pending acks go out (they are what earns
       the next items). */
    aq_status_t rc = s_take_item(self, item, 0);
    if (rc != AQ_TIMEOUT)
        return rc;
    rc = aq_consumer_flush(self);
    if (rc)
        return rc;
    int64_t deadline = aq_deadline_at(timeout_ms);
    for (;;) {
        int left = aq_deadline_left(deadline);
        /* Wake at least once per heartbeat to notice a silent broker. */
        int slice = (int) aq_session_heartbeat_ms(self->session);
        int wait = slice && (left < 0 || left > slice) ? slice : left;
        rc = s_take_item(self, item, wait);
        if (rc == AQ_TIMEOUT && aq_session_broker_silent(self->session))
            s_rejoin(self); /* if the broker is still away, try again later */
        if (rc != AQ_TIMEOUT || left == 0)
            return rc;
    }
}

aq_session_t *aq_consumer_session(aq_consumer_t *self)
{
    return self->session;
}
