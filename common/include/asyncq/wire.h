/*  Moving codec messages through ZeroMQ sockets.

    aq_inbox_t receives one whole multipart message and keeps its frames
    as zmq_msg_t, so the broker can take the payload frame without copying
    it. Sending formats the fields straight into zmq_send calls. */
#ifndef ASYNCQ_WIRE_H
#define ASYNCQ_WIRE_H

#include <zmq.h>

#include "asyncq/codec.h"

typedef struct {
    zmq_msg_t parts[AQ_FRAMES_MAX];
    aq_bytes_t frames[AQ_FRAMES_MAX];
    size_t count;        /* parts received (capped at AQ_FRAMES_MAX) */
    int overflow;        /* more parts arrived than fit; they were dropped */
    int has_routing_id;  /* parts[0] is a ROUTER's routing id */
} aq_inbox_t;

/*  Allocates an inbox; NULL if out of memory. */
aq_inbox_t *aq_inbox_new(void);
void aq_inbox_destroy(aq_inbox_t **self_p);

/*  Receives one whole message. With `routing_id` set, the first part is the
    ROUTER's routing id and is not part of the frames. Returns AQ_OK,
    AQ_TIMEOUT (nothing to read with ZMQ_DONTWAIT, or the socket's receive
    timeout passed), AQ_INTERRUPTED (EINTR) or AQ_TRANSPORT. A message with
    more than AQ_FRAMES_MAX parts is read whole and flagged `overflow`. */
aq_status_t aq_inbox_recv(aq_inbox_t *self, void *socket, int routing_id, int flags);

/*  Decodes the message last received into *msg. A message that overflowed
    the inbox is AQ_MALFORMED without being read; whatever the outcome,
    *msg holds only what was decoded (zeroed otherwise), so an error path
    may read its fields. */
aq_status_t aq_inbox_decode(const aq_inbox_t *self, aq_msg_t *msg);

/*  The frames after the routing id, for aq_msg_decode. */
const aq_bytes_t *aq_inbox_frames(const aq_inbox_t *self, size_t *count);

/*  Routing id of the last message (ROUTER only). */
aq_bytes_t aq_inbox_routing_id(const aq_inbox_t *self);

/*  Moves the last frame out into `dest` (an initialised zmq_msg_t), so its
    bytes live on after the inbox is reused. */
void aq_inbox_take_last(aq_inbox_t *self, zmq_msg_t *dest);

/*  Encodes and sends `msg`. `routing_id` (may be NULL) is sent first, for a
    ROUTER. If `payload` is not NULL, it is sent (by reference, not copied) in
    place of msg->payload. `flags` is 0 or ZMQ_DONTWAIT. Returns AQ_OK,
    AQ_MALFORMED (nothing sent), or AQ_TRANSPORT with errno from zmq_send
    (EAGAIN, EHOSTUNREACH...). */
aq_status_t aq_msg_send(void *socket, const aq_bytes_t *routing_id, const aq_msg_t *msg,
                        zmq_msg_t *payload, int flags);

/*  Sends an ERROR message: code, its name, subject and text. */
aq_status_t aq_error_send(void *socket, const aq_bytes_t *routing_id, int code,
                          aq_bytes_t subject, const char *text, int flags);

#endif
