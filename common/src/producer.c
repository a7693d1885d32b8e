/*  The producer keeps every put the broker has not yet confirmed, as a
    zmq_msg_t that shares its bytes with the one ZeroMQ sends (so keeping it
    costs no copy). A SYNC goes out when half the window is in use and its
    SYNCED releases what it covers; a full window makes put wait for it.

    When the broker answers LOST (puts vanished with a broken connection),
    or forgets this producer (NO_SESSION: it restarted), or falls silent,
    the producer says HELLO again with its oldest unconfirmed seq and sends
    every unconfirmed put again, in order. The broker takes puts strictly in
    sequence per producer, so a put it already has is dropped, never queued
    twice. */
#include "asyncq/producer.h"

#include <czmq.h>
#include <errno.h>
#include <string.h>

/*  PUSH queues at most this many puts in this process before put blocks.
    Small, so that back-pressure from the broker reaches the caller soon. */
#define PRODUCER_SNDHWM 1000

typedef struct {
    uint64_t seq;
    uint64_t lease_ms;
    char queue[AQ_NAME_MAX + 1];
    zmq_msg_t payload;
} unconfirmed_t;

struct aq_producer {
    aq_session_t *session;
    zsock_t *push;
    uint64_t seq;           /* sequence number of the last put */
    uint64_t refused;       /* ERRORs received for puts */
    uint64_t resends;       /* times the unconfirmed puts were sent again */
    unconfirmed_t *window;  /* ring of AQ_PRODUCER_WINDOW, oldest at head */
    size_t head;
    size_t count;
    size_t bytes;
    char sync_tag[AQ_U64_DIGITS + 6]; /* the SYNC in flight, "" if none */
    uint64_t sync_seq;
};

static aq_status_t s_connect_push(aq_producer_t *self)
{
    self->push = zsock_new(ZMQ_PUSH);
    if (!self->push)
        return AQ_NOMEM;
    zsock_set_sndhwm(self->push, PRODUCER_SNDHWM);
    char pull[AQ_ENDPOINT_MAX];
    aq_endpoint_pull(aq_session_endpoint(self->session), pull, sizeof pull);
    return zsock_connect(self->push, "%s", pull) == 0 ? AQ_OK : AQ_BAD_ENDPOINT;
}

aq_producer_t *aq_producer_new(const char *address, const char *name, aq_status_t *status)
{
    aq_producer_t *self = calloc(1, sizeof *self);
    unconfirmed_t *window = calloc(AQ_PRODUCER_WINDOW, sizeof *window);
    if (!self || !window) {
        free(self);
        free(window);
        *status = AQ_NOMEM;
        return NULL;
    }
    self->window = window;
    char client_id[AQ_NAME_MAX + 1];
    aq_client_id_make(name ? name : "producer", client_id, sizeof client_id);
    self->session = aq_session_new(address, client_id, 1, AQ_CONNECT_TIMEOUT_MS, status);
    if (self->session)
        *status = s_connect_push(self);
    if (*status)
        aq_producer_destroy(&self);
    return self;
}

static unconfirmed_t *s_at(aq_producer_t *self, size_t index)
{
    return &self->window[(self->head + index) % AQ_PRODUCER_WINDOW];
}

/*  Forgets the puts up to and including seq: the broker has them. */
static void s_release(aq_producer_t *self, uint64_t seq)
{
    while (self->count && s_at(self, 0)->seq <= seq) {
        unconfirmed_t *put = s_at(self, 0);
        self->bytes -= zmq_msg_size(&put->payload);
        zmq_msg_close(&put->payload);
        self->head = (self->head + 1) % AQ_PRODUCER_WINDOW;
        self->count--;
    }
}

void aq_producer_destroy(aq_producer_t **self_p)
{
    aq_producer_t *self = *self_p;
    if (!self)
        return;
    if (self->push)
        zsock_set_linger(self->push, 0); /* only synced puts are promised */
    zsock_destroy(&self->push);
    aq_session_destroy(&self->session);
    s_release(self, UINT64_MAX);
    free(self->window);
    free(self);
    *self_p = NULL;
}

static aq_status_t s_send_put(aq_producer_t *self, unconfirmed_t *put)
{
    aq_msg_t msg = {.cmd = AQ_CMD_PUT};
    msg.queue = aq_bytes_str(put->queue);
    msg.producer = aq_bytes_str(aq_session_client_id(self->session));
    msg.seq = put->seq;
    msg.lease_ms = put->lease_ms;
    aq_status_t rc = aq_msg_send(zsock_resolve(self->push), NULL, &msg, &put->payload, 0);
    return rc == AQ_TRANSPORT && errno == EINTR ? AQ_INTERRUPTED : rc;
}

static aq_status_t s_send_sync(aq_producer_t *self)
{
    aq_msg_t msg = {.cmd = AQ_CMD_SYNC};
    /* Not a bare number: ERRORs about puts name their seq as the subject. */
    snprintf(self->sync_tag, sizeof self->sync_tag, "sync-%s",
             aq_session_next_tag(self->session));
    msg.tag = aq_bytes_str(self->sync_tag);
    msg.producer = aq_bytes_str(aq_session_client_id(self->session));
    msg.seq = self->sync_seq = self->seq;
    return aq_session_send(self->session, &msg);
}

/*  A new session (if the broker lost ours), and every unconfirmed put sent
    again, oldest first. */
static aq_status_t s_resend(aq_producer_t *self, int new_session)
{
    self->sync_tag[0] = '\0';
    aq_status_t rc = AQ_OK;
    if (new_session) {
        aq_session_set_producer_seq(self->session,
                                    self->count ? s_at(self, 0)->seq : self->seq + 1);
        rc = aq_session_hello(self->session, AQ_CONNECT_TIMEOUT_MS);
    }
    /* The same PUSH socket: puts still in its pipe reach the broker before
       the resent ones, in one ordered stream, and are dropped there as
       unannounced or out of sequence. */
    self->resends++;
    for (size_t i = 0; !rc && i < self->count; i++)
        rc = s_send_put(self, s_at(self, i));
    return rc ? rc : s_send_sync(self);
}

/*  Handles one message from the broker: a SYNCED, an ERROR about a put
    or about the SYNC. Returns AQ_OK, or what the caller must act on. */
static aq_status_t s_handle(aq_producer_t *self, const aq_msg_t *msg, aq_status_t status)
{
    const aq_error_t *error = aq_session_error(self->session);
    int about_sync = self->sync_tag[0] && strcmp(error->subject, self->sync_tag) == 0;
    if (status == AQ_REFUSED && (error->code == AQ_LOST || error->code == AQ_NO_SESSION)) {
        if (error->code == AQ_NO_SESSION)
            return s_resend(self, 1);
        return about_sync ? s_resend(self, 0) : AQ_OK;
    }
    if (status == AQ_REFUSED && !about_sync) {
        self->refused++; /* a put the broker received and refused */
        return AQ_OK;
    }
    if (status == AQ_REFUSED)
        return AQ_REFUSED; /* the SYNC itself was refused */
    if (status == AQ_OK && msg->cmd == AQ_CMD_SYNCED && self->sync_tag[0]
        && msg->tag.size == strlen(self->sync_tag)
        && memcmp(msg->tag.data, self->sync_tag, msg->tag.size) == 0) {
        s_release(self, msg->seq);
        self->sync_tag[0] = '\0';
    }
    return status == AQ_TIMEOUT || status == AQ_MALFORMED ? AQ_OK : status;
}

/*  Handles the replies that have already arrived, without waiting. */
static aq_status_t s_read_replies(aq_producer_t *self)
{
    for (;;) {
        aq_msg_t msg;
        aq_status_t rc = aq_session_recv(self->session, &msg, 0);
        if (rc == AQ_TIMEOUT)
            return AQ_OK;
        rc = s_handle(self, &msg, rc);
        if (rc)
            return rc;
    }
}

/*  Reads replies until the window holds at most `keep` puts, waiting up to
    timeout_ms (-1: forever). Resends after a broker restart. */
static aq_status_t s_confirm(aq_producer_t *self, size_t keep, int timeout_ms)
{
    int64_t deadline = aq_deadline_at(timeout_ms);
    while (self->count > keep || (keep == 0 && self->sync_tag[0])) {
        if (!self->sync_tag[0]) {
            aq_status_t rc = s_send_sync(self);
            if (rc)
                return rc;
        }
        int left = aq_deadline_left(deadline);
        if (left == 0)
            return AQ_TIMEOUT;
        int slice = (int) aq_session_heartbeat_ms(self->session);
        int wait = slice && (left < 0 || left > slice) ? slice : left;
        aq_msg_t msg;
        aq_status_t rc = aq_session_recv(self->session, &msg, wait);
        if (rc == AQ_TIMEOUT && aq_session_broker_silent(self->session))
            rc = s_resend(self, 1); /* AQ_UNREACHABLE while it is still away */
        else
            rc = s_handle(self, &msg, rc);
        if (rc == AQ_UNREACHABLE)
            continue; /* keep trying until the deadline */
        if (rc)
            return rc;
    }
    return AQ_OK;
}

aq_status_t aq_producer_put_lease(aq_producer_t *self, const char *queue, const void *data,
                                  size_t size, uint64_t lease_ms)
{
    size_t length = queue ? strlen(queue) : 0;
    if (!aq_name_is_valid((const uint8_t *) queue, length))
        return AQ_MALFORMED;
    if (size > aq_session_max_item(self->session))
        return AQ_TOO_BIG;
    /* Room in the window first: wait for the broker to confirm older puts. */
    if (self->count == AQ_PRODUCER_WINDOW
        || (self->count && self->bytes + size > AQ_PRODUCER_WINDOW_BYTES)) {
        aq_status_t rc = s_confirm(self, self->count / 2, -1);
        if (rc)
            return rc;
    }
    unconfirmed_t *put = s_at(self, self->count);
    if (zmq_msg_init_size(&put->payload, size))
        return AQ_NOMEM;
    if (size)
        memcpy(zmq_msg_data(&put->payload), data, size);
    memcpy(put->queue, queue, length + 1);
    put->seq = self->seq + 1;
    put->lease_ms = lease_ms;
    aq_status_t rc = s_send_put(self, put);
    if (rc) {
        zmq_msg_close(&put->payload);
        return rc;
    }
    self->seq++;
    self->count++;
    self->bytes += size;
    /* Half the window in use: ask for a confirmation now, so that the
       window rarely fills. */
    if (!self->sync_tag[0] && self->count >= AQ_PRODUCER_WINDOW / 2)
        rc = s_send_sync(self);
    else if (self->sync_tag[0] && (self->seq & 63) == 0)
        rc = s_read_replies(self);
    return rc;
}

aq_status_t aq_producer_put(aq_producer_t *self, const char *queue, const void *data,
                            size_t size)
{
    return aq_producer_put_lease(self, queue, data, size, 0);
}

aq_status_t aq_producer_sync(aq_producer_t *self, int timeout_ms)
{
    /* A SYNC for the latest put, even if one is in flight for an older. */
    aq_status_t rc = self->count ? s_send_sync(self) : AQ_OK;
    if (!rc)
        rc = s_confirm(self, 0, timeout_ms);
    if (rc)
        return rc;
    return self->refused ? AQ_REFUSED : AQ_OK;
}

uint64_t aq_producer_sent(const aq_producer_t *self)
{
    return self->seq;
}

uint64_t aq_producer_refused(const aq_producer_t *self)
{
    return self->refused;
}

uint64_t aq_producer_unconfirmed(const aq_producer_t *self)
{
    return self->count;
}

uint64_t aq_producer_resends(const aq_producer_t *self)
{
    return self->resends;
}

aq_session_t *aq_producer_session(aq_producer_t *self)
{
    return self->session;
}
