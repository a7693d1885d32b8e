#include "asyncq/wire.h"

#include <assert.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

aq_inbox_t *aq_inbox_new(void)
{
    aq_inbox_t *self = calloc(1, sizeof *self);
    if (!self)
        return NULL;
    for (size_t i = 0; i < AQ_FRAMES_MAX; i++)
        zmq_msg_init(&self->parts[i]);
    return self;
}

void aq_inbox_destroy(aq_inbox_t **self_p)
{
    aq_inbox_t *self = *self_p;
    if (!self)
        return;
    for (size_t i = 0; i < AQ_FRAMES_MAX; i++)
        zmq_msg_close(&self->parts[i]);
    free(self);
    *self_p = NULL;
}

static aq_status_t s_recv_error(void)
{
    if (errno == EAGAIN)
        return AQ_TIMEOUT;
    if (errno == EINTR)
        return AQ_INTERRUPTED;
    return AQ_TRANSPORT;
}

aq_status_t aq_inbox_recv(aq_inbox_t *self, void *socket, int routing_id, int flags)
{
    self->count = 0;
    self->overflow = 0;
    self->has_routing_id = routing_id;
    zmq_msg_t *part = &self->parts[0];
    if (zmq_msg_recv(part, socket, flags) < 0)
        return s_recv_error();
    self->count = 1;
    /* The rest of a multipart message is already here: read it whole. */
    while (zmq_msg_more(part)) {
        if (self->count < AQ_FRAMES_MAX) {
            part = &self->parts[self->count++];
        }
        else {
            self->overflow = 1; /* keep reading into the last part: drop them */
        }
        int rc;
        do
            rc = zmq_msg_recv(part, socket, 0);
        while (rc < 0 && errno == EINTR);
        if (rc < 0)
            return AQ_TRANSPORT;
    }
    for (size_t i = 0; i < self->count; i++) {
        self->frames[i].data = zmq_msg_data(&self->parts[i]);
        self->frames[i].size = zmq_msg_size(&self->parts[i]);
    }
    return AQ_OK;
}

const aq_bytes_t *aq_inbox_frames(const aq_inbox_t *self, size_t *count)
{
    size_t skip = self->has_routing_id && self->count > 0 ? 1 : 0;
    *count = self->count - skip;
    return self->frames + skip;
}

aq_status_t aq_inbox_decode(const aq_inbox_t *self, aq_msg_t *msg)
{
    if (self->overflow) {
        memset(msg, 0, sizeof *msg);
        return AQ_MALFORMED;
    }
    size_t count;
    const aq_bytes_t *frames = aq_inbox_frames(self, &count);
    return aq_msg_decode(msg, frames, count);
}

aq_bytes_t aq_inbox_routing_id(const aq_inbox_t *self)
{
    assert(self->has_routing_id && self->count > 0);
    return self->frames[0];
}

void aq_inbox_take_last(aq_inbox_t *self, zmq_msg_t *dest)
{
    assert(self->count > 0);
    zmq_msg_t *last = &self->parts[self->count - 1];
    int rc = zmq_msg_move(dest, last);
    assert(rc == 0);
    (void) rc;
    self->frames[self->count - 1].data = NULL;
    self->frames[self->count - 1].size = 0;
}

typedef struct {
    void *socket;
    zmq_msg_t *payload;
    int flags;
    int first;
} send_ctx_t;

static int s_send_frame(void *arg, const void *data, size_t size, int more, int is_payload)
{
    send_ctx_t *ctx = arg;
    int flags = (more ? ZMQ_SNDMORE : 0) | (ctx->first ? ctx->flags : 0);
    /* A signal may stop a blocked first frame; once a message has started it
       must be finished, and later frames never block. */
    int retry_eintr = !ctx->first;
    ctx->first = 0;
    int rc;
    if (is_payload && ctx->payload) {
        zmq_msg_t copy;
        zmq_msg_init(&copy);
        zmq_msg_copy(&copy, ctx->payload); /* shares the bytes, no copy */
        do
            rc = zmq_msg_send(&copy, ctx->socket, flags);
        while (rc < 0 && errno == EINTR && retry_eintr);
        if (rc < 0)
            zmq_msg_close(&copy);
    }
    else {
        do
            rc = zmq_send(ctx->socket, data, size, flags);
        while (rc < 0 && errno == EINTR && retry_eintr);
    }
    return rc < 0 ? -1 : 0;
}

aq_status_t aq_msg_send(void *socket, const aq_bytes_t *routing_id, const aq_msg_t *msg,
                        zmq_msg_t *payload, int flags)
{
    send_ctx_t ctx = {socket, payload, flags, 1};
    /* Validate before the routing id goes out: a ROUTER cannot take back a
       started message. */
    if (aq_msg_check(msg) != AQ_OK)
        return AQ_MALFORMED;
    if (routing_id) {
        if (s_send_frame(&ctx, routing_id->data, routing_id->size, 1, 0))
            return AQ_TRANSPORT;
    }
    return aq_msg_emit(msg, s_send_frame, &ctx);
}

aq_status_t aq_error_send(void *socket, const aq_bytes_t *routing_id, int code,
                          aq_bytes_t subject, const char *text, int flags)
{
    aq_msg_t msg = {.cmd = AQ_CMD_ERROR};
    msg.code = (uint64_t) code;
    msg.name = aq_bytes_str(aq_status_name(code));
    if (subject.size > AQ_TAG_MAX)
        subject.size = AQ_TAG_MAX;
    msg.subject = subject;
    msg.text = aq_bytes_str(text ? text : aq_strerror(code));
    if (msg.text.size > AQ_TEXT_MAX)
        msg.text.size = AQ_TEXT_MAX;
    return aq_msg_send(socket, routing_id, &msg, NULL, flags);
}
