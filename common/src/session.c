#include "asyncq/session.h"

#include <czmq.h>
#include <stdio.h>
#include <string.h>

struct aq_session {
    zsock_t *dealer;
    void *socket;
    aq_endpoint_t endpoint;
    char client_id[AQ_NAME_MAX + 1];
    uint64_t max_item;
    uint64_t heartbeat_ms; /* the broker's, from WELCOME */
    int64_t last_heard;    /* when the broker last sent anything */
    uint64_t next_tag;
    uint64_t producer_seq; /* sent in HELLO: first unconfirmed put, 0 if none */
    char tag[AQ_U64_DIGITS + 1];
    aq_inbox_t *inbox;
    aq_error_t error;
};

void aq_client_id_make(const char *name, char *buf, size_t size)
{
    char clean[AQ_NAME_MAX - 13 + 1];
    size_t length = 0;
    for (const char *c = name ? name : "client"; *c && length < sizeof clean - 1; c++) {
        uint8_t byte = (uint8_t) *c;
        clean[length++] = aq_name_is_valid(&byte, 1) ? *c : '_';
    }
    clean[length] = '\0';
    zuuid_t *uuid = zuuid_new();
    snprintf(buf, size, "%s-%.12s", length ? clean : "client", uuid ? zuuid_str_canonical(uuid) + 24 : "000000000000");
    zuuid_destroy(&uuid);
}

int64_t aq_deadline_at(int timeout_ms)
{
    return timeout_ms < 0 ? -1 : zclock_mono() + timeout_ms;
}

int aq_deadline_left(int64_t deadline)
{
    if (deadline < 0)
        return -1;
    int64_t remaining = deadline - zclock_mono();
    return remaining > 0 ? (int) remaining : 0;
}

aq_status_t aq_session_hello(aq_session_t *self, int timeout_ms)
{
    aq_msg_t hello = {.cmd = AQ_CMD_HELLO};
    hello.client = aq_bytes_str(self->client_id);
    hello.seq = self->producer_seq;
    aq_status_t rc = aq_session_send(self, &hello);
    if (rc)
        return rc;
    int64_t deadline = aq_deadline_at(timeout_ms);
    for (;;) {
        aq_msg_t reply;
        rc = aq_session_recv(self, &reply, aq_deadline_left(deadline));
        if (rc == AQ_TIMEOUT)
            return AQ_UNREACHABLE;
        if (rc == AQ_REFUSED && self->error.subject[0])
            continue; /* about an earlier request, not this HELLO */
        if (rc)
            return rc;
        if (reply.cmd == AQ_CMD_WELCOME) {
            self->max_item = reply.max_item;
            self->heartbeat_ms = reply.heartbeat_ms;
            return AQ_OK;
        }
    }
}

aq_session_t *aq_session_new(const char *address, const char *client_id, uint64_t producer_seq,
                             int timeout_ms, aq_status_t *status)
{
    aq_session_t *self = calloc(1, sizeof *self);
    aq_status_t rc = self ? AQ_OK : AQ_NOMEM;
    if (self)
        self->producer_seq = producer_seq;
    if (!rc)
        rc = aq_endpoint_parse(address, 0, &self->endpoint);
    if (!rc && !aq_name_is_valid((const uint8_t *) client_id, strlen(client_id)))
        rc = AQ_MALFORMED;
    if (!rc) {
        strcpy(self->client_id, client_id);
        self->inbox = aq_inbox_new();
        self->dealer = zsock_new(ZMQ_DEALER);
        rc = self->inbox && self->dealer ? AQ_OK : AQ_NOMEM;
    }
    if (!rc) {
        char router[AQ_ENDPOINT_MAX];
        aq_endpoint_router(&self->endpoint, router, sizeof router);
        self->socket = zsock_resolve(self->dealer);
        if (zsock_connect(self->dealer, "%s", router) != 0)
            rc = AQ_BAD_ENDPOINT;
    }
    if (!rc)
        rc = aq_session_hello(self, timeout_ms);
    if (rc) {
        if (self && self->dealer)
            zsock_set_linger(self->dealer, 0);
        aq_session_destroy(&self);
    }
    if (status)
        *status = rc;
    return self;
}

void aq_session_destroy(aq_session_t **self_p)
{
    aq_session_t *self = *self_p;
    if (!self)
        return;
    if (self->dealer && self->max_item) {
        aq_msg_t bye = {.cmd = AQ_CMD_BYE};
        zsock_set_linger(self->dealer, 1000);
        aq_session_send(self, &bye);
    }
    zsock_destroy(&self->dealer);
    aq_inbox_destroy(&self->inbox);
    free(self);
    *self_p = NULL;
}

aq_status_t aq_session_send(aq_session_t *self, const aq_msg_t *msg)
{
    return aq_msg_send(self->socket, NULL, msg, NULL, 0);
}

static void s_copy_text(char *dest, size_t size, aq_bytes_t bytes)
{
    size_t length = bytes.size < size - 1 ? bytes.size : size - 1;
    memcpy(dest, bytes.data, length);
    dest[length] = '\0';
}

aq_status_t aq_session_recv(aq_session_t *self, aq_msg_t *msg, int timeout_ms)
{
    zmq_pollitem_t item = {self->socket, 0, ZMQ_POLLIN, 0};
    int ready = zmq_poll(&item, 1, timeout_ms);
    if (ready < 0)
        return errno == EINTR ? AQ_INTERRUPTED : AQ_TRANSPORT;
    if (ready == 0)
        return AQ_TIMEOUT;
    aq_status_t rc = aq_inbox_recv(self->inbox, self->socket, 0, ZMQ_DONTWAIT);
    if (rc)
        return rc;
    self->last_heard = zclock_mono();
    rc = aq_inbox_decode(self->inbox, msg);
    if (rc)
        return rc;
    if (msg->cmd == AQ_CMD_ERROR) {
        self->error.code = (int) msg->code;
        s_copy_text(self->error.subject, sizeof self->error.subject, msg->subject);
        s_copy_text(self->error.text, sizeof self->error.text, msg->text);
        return AQ_REFUSED;
    }
    return AQ_OK;
}

static int s_has_tag(const aq_msg_t *msg, const char *tag, aq_status_t status)
{
    aq_bytes_t field = status == AQ_REFUSED ? msg->subject : msg->tag;
    switch (status == AQ_REFUSED ? AQ_CMD_ERROR : msg->cmd) {
    case AQ_CMD_ERROR: case AQ_CMD_JOINED: case AQ_CMD_TIMEOUT:
    case AQ_CMD_SYNCED: case AQ_CMD_REPORT:
        return field.size == strlen(tag) && memcmp(field.data, tag, field.size) == 0;
    default:
        return 0;
    }
}

aq_status_t aq_session_await(aq_session_t *self, const char *tag, aq_msg_t *reply,
                             int timeout_ms, aq_session_other_fn *other, void *ctx)
{
    int64_t deadline = aq_deadline_at(timeout_ms);
    for (;;) {
        aq_status_t rc = aq_session_recv(self, reply, aq_deadline_left(deadline));
        if (rc == AQ_TIMEOUT || rc == AQ_INTERRUPTED || rc == AQ_TRANSPORT)
            return rc;
        if ((rc == AQ_OK || rc == AQ_REFUSED) && s_has_tag(reply, tag, rc))
            return rc;
        if (other)
            other(ctx, reply, rc);
    }
}

const char *aq_session_next_tag(aq_session_t *self)
{
    aq_format_u64(++self->next_tag, self->tag);
    return self->tag;
}

const aq_error_t *aq_session_error(const aq_session_t *self)
{
    return &self->error;
}

const aq_endpoint_t *aq_session_endpoint(const aq_session_t *self)
{
    return &self->endpoint;
}

void aq_session_set_producer_seq(aq_session_t *self, uint64_t seq)
{
    self->producer_seq = seq;
}

const char *aq_session_client_id(const aq_session_t *self)
{
    return self->client_id;
}

int aq_session_broker_silent(const aq_session_t *self)
{
    /* Three missed heartbeats, as the ZeroMQ guide's Paranoid Pirate. */
    return self->heartbeat_ms
           && zclock_mono() - self->last_heard > 3 * (int64_t) self->heartbeat_ms;
}

uint64_t aq_session_heartbeat_ms(const aq_session_t *self)
{
    return self->heartbeat_ms;
}

uint64_t aq_session_max_item(const aq_session_t *self)
{
    return self->max_item;
}

void *aq_session_socket(aq_session_t *self)
{
    return self->socket;
}
