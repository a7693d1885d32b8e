/*  Moving codec messages through ZeroMQ sockets. Internal, like codec.h:
    the only header that includes zmq.h, not installed.

    aq_inbox_t receives one whole multipart message into a fixed number of
    frames, keeps them as zmq_msg_t while the message is handled, and lets
    them go afterwards (aq_inbox_clear), so one large message does not stay
    in memory. Sending formats the fields straight into zmq_send calls. */
#ifndef ASYNCQ_WIRE_H
#define ASYNCQ_WIRE_H

#include <zmq.h>

#include "asyncq/codec.h"

typedef struct {
    size_t capacity;     /* frames it keeps, routing id included */
    size_t count;        /* frames received (at most capacity) */
    size_t bytes;        /* bytes of the whole message, dropped frames included */
    int overflow;        /* more frames arrived than fit; they were dropped */
    int has_routing_id;  /* parts[0] is a ROUTER's routing id */
    zmq_msg_t *parts;
    aq_bytes_t *frames;
} aq_inbox_t;

/*  An inbox for messages of at most `capacity` frames (routing id
    included); NULL if out of memory. */
aq_inbox_t *aq_inbox_new(size_t capacity);
void aq_inbox_destroy(aq_inbox_t **self_p);

/*  Receives one whole message. With `routing_id` set, the first part is the
    ROUTER's routing id and is not part of the frames. Returns AQ_OK,
    AQ_TIMEOUT (nothing to read with ZMQ_DONTWAIT, or the socket's receive
    timeout passed), AQ_INTERRUPTED (EINTR) or AQ_TRANSPORT. A message with
    more frames than the inbox holds is read whole (the extra frames are
    released as they are read) and flagged `overflow`. */
aq_status_t aq_inbox_recv(aq_inbox_t *self, void *socket, int routing_id, int flags);

/*  Releases the frames of the last message. */
void aq_inbox_clear(aq_inbox_t *self);

/*  Decodes the message last received into *msg. A message that overflowed
    the inbox is AQ_MALFORMED without being read; whatever the outcome,
    *msg holds only what was decoded (zeroed otherwise), so an error path
    may read its fields. */
aq_status_t aq_inbox_decode(const aq_inbox_t *self, aq_msg_t *msg);

/*  The frames after the routing id, for aq_msg_decode. */
const aq_bytes_t *aq_inbox_frames(const aq_inbox_t *self, size_t *count);

/*  Routing id of the last message (ROUTER only). */
aq_bytes_t aq_inbox_routing_id(const aq_inbox_t *self);

/*  Properties ZeroMQ attached to the last message, from the connection it
    came on: the file descriptor of that connection (-1 if unknown) and the
    CURVE client key, as Z85 ("" without CURVE). */
int aq_inbox_fd(const aq_inbox_t *self);
const char *aq_inbox_user_id(const aq_inbox_t *self);

/*  Encodes and sends `msg`. `routing_id` (may be NULL) is sent first, for a
    ROUTER. If `bulk` is not NULL, it is sent (by reference, not copied) in
    place of the message's payload or batch frame. `flags` is 0 or
    ZMQ_DONTWAIT. Returns AQ_OK, AQ_MALFORMED (nothing sent), or AQ_TRANSPORT
    with errno from zmq_send (EAGAIN, EHOSTUNREACH...). */
aq_status_t aq_msg_send(void *socket, const aq_bytes_t *routing_id, const aq_msg_t *msg,
                        zmq_msg_t *bulk, int flags);

/*  Sends an ERROR message: code, its name, the request's tag, subject and
    text (texts longer than the protocol allows are cut at a character
    boundary). */
aq_status_t aq_error_send(void *socket, const aq_bytes_t *routing_id, int code, aq_bytes_t tag,
                          aq_bytes_t subject, const char *text, int flags);

/*  Sends asyncq/1's ERROR 406, so that a client of the old version shows why
    it is refused. */
aq_status_t aq_error_send_v1(void *socket, const aq_bytes_t *routing_id, int flags);

/*  `text` cut to at most `max` bytes without splitting a UTF-8 character. */
aq_bytes_t aq_text_cut(const char *text, size_t max);

#endif
