#include "asyncq/wire.h"

#include <assert.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

aq_inbox_t *aq_inbox_new(size_t capacity)
{
    assert(capacity >= 2);
    aq_inbox_t *self = calloc(1, sizeof *self);
    if (!self)
        return NULL;
    self->capacity = capacity;
    self->parts = calloc(capacity, sizeof *self->parts);
    self->frames = calloc(capacity, sizeof *self->frames);
    if (!self->parts || !self->frames) {
        free(self->parts);
        free(self->frames);
        free(self);
        return NULL;
    }
    for (size_t i = 0; i < capacity; i++)
        zmq_msg_init(&self->parts[i]);
    return self;
}

void aq_inbox_destroy(aq_inbox_t **self_p)
{
    aq_inbox_t *self = *self_p;
    if (!self)
        return;
    for (size_t i = 0; i < self->capacity; i++)
        zmq_msg_close(&self->parts[i]);
    free(self->parts);
    free(self->frames);
    free(self);
    *self_p = NULL;
}

void aq_inbox_clear(aq_inbox_t *self)
{
    for (size_t i = 0; i < self->count; i++) {
        zmq_msg_close(&self->parts[i]);
        zmq_msg_init(&self->parts[i]);
        self->frames[i] = (aq_bytes_t){0};
    }
    self->count = 0;
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
    aq_inbox_clear(self);
    self->overflow = 0;
    self->bytes = 0;
    self->has_routing_id = routing_id;
    zmq_msg_t *part = &self->parts[0];
    if (zmq_msg_recv(part, socket, flags) < 0)
        return s_recv_error();
    self->count = 1;
    self->bytes = zmq_msg_size(part);
    /* The rest of a multipart message is already here: read it whole. */
    while (zmq_msg_more(part)) {
        if (self->count < self->capacity)
            part = &self->parts[self->count++];
        else
            self->overflow = 1; /* read into the last part, releasing the one before */
        int rc;
        do
            rc = zmq_msg_recv(part, socket, 0);
        while (rc < 0 && errno == EINTR);
        if (rc < 0)
            return AQ_TRANSPORT;
        self->bytes += (size_t) rc;
    }
    for (size_t i = 0; i < self->count; i++) {
        self->frames[i].data = zmq_msg_data(&self->parts[i]);
        self->frames[i].size = zmq_msg_size(&self->parts[i]);
    }
    return AQ_OK;
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

const aq_bytes_t *aq_inbox_frames(const aq_inbox_t *self, size_t *count)
{
    size_t skip = self->has_routing_id && self->count > 0 ? 1 : 0;
    *count = self->count - skip;
    return self->frames + skip;
}

aq_bytes_t aq_inbox_routing_id(const aq_inbox_t *self)
{
    assert(self->has_routing_id && self->count > 0);
    return self->frames[0];
}

/*  Connection properties travel on the frames ZeroMQ received; a ROUTER's
    routing id frame is made locally and has none. */
static const zmq_msg_t *s_first_content(const aq_inbox_t *self)
{
    size_t first = self->has_routing_id ? 1 : 0;
    return self->count > first ? &self->parts[first] : NULL;
}

int aq_inbox_fd(const aq_inbox_t *self)
{
    const zmq_msg_t *part = s_first_content(self);
    return part ? zmq_msg_get((zmq_msg_t *) part, ZMQ_SRCFD) : -1;
}

const char *aq_inbox_user_id(const aq_inbox_t *self)
{
    const zmq_msg_t *part = s_first_content(self);
    const char *value = part ? zmq_msg_gets(part, "User-Id") : NULL;
    return value ? value : "";
}

typedef struct {
    void *socket;
    zmq_msg_t *bulk;
    int flags;
    int first;
} send_ctx_t;

static int s_send_frame(void *arg, const void *data, size_t size, int more, int is_bulk)
{
    send_ctx_t *ctx = arg;
    int flags = (more ? ZMQ_SNDMORE : 0) | (ctx->first ? ctx->flags : 0);
    /* A signal may stop a blocked first frame; once a message has started it
       must be finished, and later frames never block. */
    int retry_eintr = !ctx->first;
    ctx->first = 0;
    int rc;
    if (is_bulk && ctx->bulk) {
        zmq_msg_t copy;
        zmq_msg_init(&copy);
        zmq_msg_copy(&copy, ctx->bulk); /* shares the bytes, no copy */
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
                        zmq_msg_t *bulk, int flags)
{
    send_ctx_t ctx = {socket, bulk, flags, 1};
    /* Validate before the routing id goes out: a ROUTER cannot take back a
       started message. A bulk frame stands in for the payload or batch: the
       check sees its bytes. */
    aq_msg_t checked = *msg;
    if (bulk) {
        aq_bytes_t bytes = {zmq_msg_data(bulk), zmq_msg_size(bulk)};
        if (msg->cmd == AQ_CMD_PUTS || msg->cmd == AQ_CMD_ITEMS)
            checked.batch = bytes;
        else
            checked.payload = bytes;
    }
    if (aq_msg_check(&checked) != AQ_OK)
        return AQ_MALFORMED;
    if (routing_id) {
        if (s_send_frame(&ctx, routing_id->data, routing_id->size, 1, 0))
            return AQ_TRANSPORT;
    }
    return aq_msg_emit(&checked, s_send_frame, &ctx);
}

aq_bytes_t aq_text_cut(const char *text, size_t max)
{
    aq_bytes_t bytes = aq_bytes_str(text);
    if (bytes.size <= max)
        return bytes;
    size_t size = max;
    /* Step back over continuation bytes to the start of a character. */
    while (size > 0 && (bytes.data[size] & 0xC0) == 0x80)
        size--;
    bytes.size = size;
    return bytes;
}

aq_status_t aq_error_send(void *socket, const aq_bytes_t *routing_id, int code, aq_bytes_t tag,
                          aq_bytes_t subject, const char *text, int flags)
{
    aq_msg_t msg = {.cmd = AQ_CMD_ERROR};
    msg.code = (uint64_t) code;
    msg.name = aq_bytes_str(aq_status_name(code));
    if (tag.size > AQ_TAG_MAX)
        tag.size = 0; /* not a tag the client could have sent */
    msg.tag = tag;
    msg.subject = subject.size > AQ_SUBJECT_MAX ? aq_bytes_str("") : subject;
    msg.text = aq_text_cut(text ? text : aq_strerror(code), AQ_TEXT_MAX);
    return aq_msg_send(socket, routing_id, &msg, NULL, flags);
}

aq_status_t aq_error_send_v1(void *socket, const aq_bytes_t *routing_id, int flags)
{
    static const char *frames[] = {
        AQ_SIGNATURE_V1, "ERROR", "406", "BAD_VERSION", "",
        ("this broker speaks asyncq/2: upgrade the client (docs/PROTOCOL.md)")};
    int count = (int) (sizeof frames / sizeof frames[0]);
    if (routing_id
        && zmq_send(socket, routing_id->data, routing_id->size, ZMQ_SNDMORE | flags) < 0)
        return AQ_TRANSPORT;
    for (int i = 0; i < count; i++)
        if (zmq_send(socket, frames[i], strlen(frames[i]), i + 1 < count ? ZMQ_SNDMORE : 0) < 0)
            return AQ_TRANSPORT;
    return AQ_OK;
}
