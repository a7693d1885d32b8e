#include "asyncq/producer.h"

#include <czmq.h>
#include <errno.h>
#include <string.h>

/*  PUSH queues at most this many puts in this process before put blocks.
    Small, so that back-pressure from the broker reaches the caller soon. */
#define PRODUCER_SNDHWM 1000

struct aq_producer {
    aq_session_t *session;
    zsock_t *push;
    void *push_socket;
    uint64_t seq;      /* sequence number of the last put */
    uint64_t refused;  /* ERRORs received for puts */
};

aq_producer_t *aq_producer_new(const char *address, const char *name, aq_status_t *status)
{
    aq_producer_t *self = calloc(1, sizeof *self);
    if (!self) {
        *status = AQ_NOMEM;
        return NULL;
    }
    char client_id[AQ_NAME_MAX + 1];
    aq_client_id_make(name ? name : "producer", client_id, sizeof client_id);
    self->session = aq_session_new(address, client_id, AQ_CONNECT_TIMEOUT_MS, status);
    if (!self->session) {
        free(self);
        return NULL;
    }
    self->push = zsock_new(ZMQ_PUSH);
    if (!self->push) {
        *status = AQ_NOMEM;
        aq_producer_destroy(&self);
        return NULL;
    }
    self->push_socket = zsock_resolve(self->push);
    zsock_set_sndhwm(self->push, PRODUCER_SNDHWM);
    char pull[AQ_ENDPOINT_MAX];
    aq_endpoint_pull(aq_session_endpoint(self->session), pull, sizeof pull);
    if (zsock_connect(self->push, "%s", pull) != 0) {
        *status = AQ_BAD_ENDPOINT;
        aq_producer_destroy(&self);
        return NULL;
    }
    *status = AQ_OK;
    return self;
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
    free(self);
    *self_p = NULL;
}

aq_status_t aq_producer_put(aq_producer_t *self, const char *queue, const void *data,
                            size_t size)
{
    aq_msg_t msg = {.cmd = AQ_CMD_PUT};
    msg.queue = aq_bytes_str(queue);
    if (!aq_name_is_valid(msg.queue.data, msg.queue.size))
        return AQ_MALFORMED;
    if (size > aq_session_max_item(self->session))
        return AQ_TOO_BIG;
    msg.producer = aq_bytes_str(aq_session_client_id(self->session));
    msg.seq = self->seq + 1;
    msg.payload = (aq_bytes_t){data, size};
    aq_status_t rc = aq_msg_send(self->push_socket, NULL, &msg, NULL, 0);
    if (rc == AQ_TRANSPORT && errno == EINTR)
        return AQ_INTERRUPTED;
    if (rc == AQ_OK)
        self->seq++;
    return rc;
}

static void s_count_refusal(void *ctx, const aq_msg_t *msg, aq_status_t status)
{
    aq_producer_t *self = ctx;
    (void) msg;
    if (status == AQ_REFUSED)
        self->refused++;
}

aq_status_t aq_producer_sync(aq_producer_t *self, int timeout_ms)
{
    aq_msg_t msg = {.cmd = AQ_CMD_SYNC};
    const char *tag = aq_session_next_tag(self->session);
    msg.tag = aq_bytes_str(tag);
    msg.producer = aq_bytes_str(aq_session_client_id(self->session));
    msg.seq = self->seq;
    aq_status_t rc = aq_session_send(self->session, &msg);
    if (rc)
        return rc;
    aq_msg_t reply;
    rc = aq_session_await(self->session, tag, &reply, timeout_ms, s_count_refusal, self);
    if (rc == AQ_REFUSED && aq_session_error(self->session)->code == AQ_LOST)
        return AQ_LOST;
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

aq_session_t *aq_producer_session(aq_producer_t *self)
{
    return self->session;
}
