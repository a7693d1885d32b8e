#include "asyncq/consumer.h"

#include <czmq.h>
#include <string.h>

struct aq_consumer {
    aq_session_t *session;
    char queue[AQ_NAME_MAX + 1];
    uint64_t credit;
    char pending_text[AQ_ACK_BATCH][AQ_U64_DIGITS + 1];
    aq_bytes_t pending[AQ_ACK_BATCH];
    size_t pending_count;
};

aq_consumer_t *aq_consumer_new(const char *address, const char *queue, uint64_t credit,
                               const char *name, aq_status_t *status)
{
    if (!queue || !aq_name_is_valid((const uint8_t *) queue, strlen(queue))) {
        *status = AQ_MALFORMED;
        return NULL;
    }
    aq_consumer_t *self = calloc(1, sizeof *self);
    if (!self) {
        *status = AQ_NOMEM;
        return NULL;
    }
    strcpy(self->queue, queue);
    char client_id[AQ_NAME_MAX + 1];
    aq_client_id_make(name ? name : "consumer", client_id, sizeof client_id);
    self->session = aq_session_new(address, client_id, 0, AQ_CONNECT_TIMEOUT_MS, status);
    if (self->session)
        *status = aq_consumer_set_credit(self, credit);
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
    aq_msg_t msg = {.cmd = AQ_CMD_CREDIT};
    msg.queue = aq_bytes_str(self->queue);
    msg.credit = credit;
    self->credit = credit;
    return aq_session_send(self->session, &msg);
}

aq_status_t aq_consumer_flush(aq_consumer_t *self)
{
    if (self->pending_count == 0)
        return AQ_OK;
    aq_msg_t msg = {.cmd = AQ_CMD_ACK};
    msg.list = self->pending;
    msg.list_size = self->pending_count;
    self->pending_count = 0;
    return aq_session_send(self->session, &msg);
}

aq_status_t aq_consumer_ack(aq_consumer_t *self, uint64_t id)
{
    char *text = self->pending_text[self->pending_count];
    size_t length = aq_format_u64(id, text);
    self->pending[self->pending_count++] = (aq_bytes_t){(const uint8_t *) text, length};
    return self->pending_count == AQ_ACK_BATCH ? aq_consumer_flush(self) : AQ_OK;
}

/*  A new session and the same credit, after the broker forgot this consumer.
    Items it held from the old session are the broker's to redeliver; their
    acks are dropped. */
static aq_status_t s_rejoin(aq_consumer_t *self)
{
    self->pending_count = 0;
    aq_status_t rc = aq_session_hello(self->session, AQ_CONNECT_TIMEOUT_MS);
    return rc ? rc : aq_consumer_set_credit(self, self->credit);
}

/*  TOUCH or NACK for one id, after the pending acks so order is kept. */
static aq_status_t s_send_one(aq_consumer_t *self, aq_msg_t *msg, uint64_t id)
{
    aq_status_t rc = aq_consumer_flush(self);
    if (rc)
        return rc;
    char text[AQ_U64_DIGITS + 1];
    aq_bytes_t frame = {(const uint8_t *) text, aq_format_u64(id, text)};
    msg->list = &frame;
    msg->list_size = 1;
    return aq_session_send(self->session, msg);
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
    msg.text = aq_bytes_str(reason);
    if (msg.text.size > AQ_TEXT_MAX)
        msg.text.size = AQ_TEXT_MAX;
    return s_send_one(self, &msg, id);
}

static aq_status_t s_take_item(aq_consumer_t *self, aq_item_t *item, int timeout_ms)
{
    aq_msg_t msg;
    aq_status_t rc = aq_session_recv(self->session, &msg, timeout_ms);
    const aq_error_t *error = aq_session_error(self->session);
    if (rc == AQ_REFUSED && error->code == AQ_NO_SESSION) {
        s_rejoin(self);
        return AQ_TIMEOUT; /* no item yet: the caller looks again */
    }
    if (rc == AQ_REFUSED && error->code == AQ_SHUT_DOWN && strcmp(error->subject, self->queue) == 0)
        return AQ_SHUT_DOWN;
    if (rc)
        return rc;
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
