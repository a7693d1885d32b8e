/*  The session's insides: what the library's own modules, the broker
    (--health) and the tests use beyond the public API. Internal: not
    installed, not exported by libasyncq.so.

    A session is a DEALER connected to the broker's ROUTER, a HELLO/WELCOME
    exchange that proves the broker is there, tagged requests and their
    replies. Receiving answers the broker's HEARTBEATs by itself
    (PROTOCOL.md 4.9), so a client that reads is known to read. */
#ifndef ASYNCQ_INTERNAL_H
#define ASYNCQ_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "asyncq/codec.h"
#include "asyncq/endpoint.h"
#include "asyncq/wire.h"
#include "asyncq/producer.h"
#include "asyncq/session.h"

/*  What the broker said in WELCOME. */
typedef struct {
    uint64_t max_item;
    uint64_t heartbeat_ms;
    uint64_t max_batch;
    uint64_t window;
    uint64_t window_bytes;
    char roles[64];
    char persistence[16];
    char broker_id[AQ_NAME_MAX + 1];
    int shard;                       /* its number in its service (4.15); 0 if alone */
    char brokers[AQ_TEXT_MAX + 1];   /* the service's brokers as it lists them; "" */
    char replicas[AQ_TEXT_MAX + 1];  /* its group's replicas (4.16); "" if not one */
    char groups[AQ_TEXT_MAX + 1];    /* every shard's replicas, '|' within one (4.16); "" */
} aq_welcome_t;

/*  Replicas of one group a session follows at most (4.16). */
#define AQ_REPLICAS_MAX 7

/*  aq_session_new with the exact `client_id` (no suffix added). A producer
    gives `producer_seq`, the sequence number of its first put the broker
    has not confirmed (1 for a new producer); any other client gives 0. */
aq_session_t *aq_session_open(const char *address, const char *client_id, uint64_t producer_seq,
                              int timeout_ms, aq_status_t *status);

/*  Closes without a BYE: the broker's session of this client id is left
    as it is (another session of the same id may hold it). */
void aq_session_drop(aq_session_t **self_p);

/*  The producer_seq the next HELLO carries. */
void aq_session_set_producer_seq(aq_session_t *self, uint64_t seq);

/*  Says HELLO (again) and waits up to timeout_ms for WELCOME: how a client
    opens a new session after the broker lost the old one (it restarted, or
    answered NO_SESSION). AQ_UNREACHABLE if no WELCOME came (AQ_KEY_MISMATCH
    or AQ_KEY_REFUSED if the CURVE handshake failed). Unlike the first HELLO
    of aq_session_open, it waits out a broker that refuses connections (one
    that is restarting). With a group, a replica whose connection was lost or
    whose last HELLO went unanswered is passed over for the next. */
aq_status_t aq_session_hello(aq_session_t *self, int timeout_ms);

/*  A session with a broker of the service that did not answer when the
    service was opened: `like` (a WELCOME of another broker of the service)
    stands for its settings until it answers, as shard `shard`; its HELLO
    is said in the background (aq_session_hello_begin), and its host name
    resolved when it can be; `group` (its shard's replicas, '|' between,
    or NULL) are asked in turn. NULL, with *status, if the address is not
    one. */
aq_session_t *aq_session_open_later(const char *address, const char *client_id,
                                    uint64_t producer_seq, const aq_welcome_t *like, int shard,
                                    const char *group, aq_status_t *status);

/*  Says HELLO without waiting (on a fresh DEALER if the last one went
    unanswered): the WELCOME arrives as a message that aq_session_recv keeps
    and hands on (cmd AQ_CMD_WELCOME), and the caller then sends again what
    the new session needs (credit, unconfirmed puts). Until then the
    session is not up. */
aq_status_t aq_session_hello_begin(aq_session_t *self);

/*  Whether to say HELLO (again) in the background: the broker is silent
    and none is waiting, or the last one has gone unanswered a while. */
int aq_session_hello_due(const aq_session_t *self);

/*  Whether its last HELLO was answered: reads what has come, without
    waiting, and says HELLO again if it is due. A session that is not
    answering is not worth a request that waits for an answer. */
int aq_session_answers(aq_session_t *self);

/*  Whether every broker holding puts of this producer not confirmed yet
    answers (reading what came, and saying HELLO again to one that fell
    silent): a full queue's (HELD) does. */
int aq_producer_answered(aq_producer_t *self);

/*  Welcomed, no HELLO unanswered, and not silent: worth sending work to. */
int aq_session_is_up(const aq_session_t *self);

/*  True if the broker, which sends HEARTBEAT every heartbeat_ms, has been
    silent for three of them, with nothing waiting unread. */
int aq_session_broker_silent(const aq_session_t *self);
uint64_t aq_session_heartbeat_ms(const aq_session_t *self);

/*  How long a wait with `left` ms to go (-1: for ever) polls before it
    looks at the session again: a heartbeat at most (a silent broker is
    noticed), and no later than a HELLO said in the background is due
    again (a group with no leader yet is asked again soon). */
int aq_session_slice(const aq_session_t *self, int left);

/*  Sends one message on the DEALER. */
aq_status_t aq_session_send(aq_session_t *self, const aq_msg_t *msg);

/*  Gives msg a new tag (kept in the session until the next call) and sends
    it. */
aq_status_t aq_session_request(aq_session_t *self, aq_msg_t *msg);

/*  Waits up to `timeout_ms` (-1: for ever) for the next message and decodes
    it into *msg (valid until the next receive). An ERROR from the broker is
    returned as AQ_REFUSED with its details in aq_session_error(). */
aq_status_t aq_session_recv(aq_session_t *self, aq_msg_t *msg, int timeout_ms);

/*  The same for a wait made of heartbeat slices, which looks for a silent
    broker after each: with a group, the loss of the connection to the
    replica it talks to (the leader stopped or died) ends the wait at once
    with AQ_TIMEOUT, and aq_session_broker_silent then says so. */
aq_status_t aq_session_recv_watching(aq_session_t *self, aq_msg_t *msg, int timeout_ms);

/*  Receives until a reply carrying `tag` arrives (other messages go to
    `other`, if given, else are dropped); an ERROR with the tag ends the wait
    with AQ_REFUSED. */
typedef void (aq_session_other_fn)(void *ctx, const aq_msg_t *msg, aq_status_t status);
aq_status_t aq_session_await(aq_session_t *self, const char *tag, aq_msg_t *reply,
                             int timeout_ms, aq_session_other_fn *other, void *ctx);
/*  The same, other messages dropped, for a heartbeat slice: ends at once,
    AQ_TIMEOUT, when a group's connection is lost (aq_session_recv_watching). */
aq_status_t aq_session_await_watching(aq_session_t *self, const char *tag, aq_msg_t *reply,
                                      int timeout_ms);

/*  A new tag for a request, unique within this session. */
const char *aq_session_next_tag(aq_session_t *self);

const aq_welcome_t *aq_session_welcome(const aq_session_t *self);
const aq_endpoint_t *aq_session_endpoint(const aq_session_t *self);

/*  The broker's address as the user gave it, for messages. */
const char *aq_session_address(const aq_session_t *self);

/*  The 0MQ socket, for polling. */
void *aq_session_socket(aq_session_t *self);

/*  With a group, the socket monitor of the connection to the replica the
    session talks to, for polling beside the DEALER (NULL otherwise); once
    it is readable, aq_session_watch_read reads its events and says whether
    the connection was lost (aq_session_broker_silent then says so too). */
void *aq_session_watch_socket(aq_session_t *self);
int aq_session_watch_read(aq_session_t *self);
/*  With a group: the connection to the replica it talks to was lost, as
    its monitor said (read by aq_session_watch_read, or a silence check). */
int aq_session_lost(const aq_session_t *self);

/*  A deadline `timeout_ms` from now (negative: none), and the milliseconds
    left until it (-1 for none, 0 once passed), for waits made of several
    polls. */
int64_t aq_deadline_at(int timeout_ms);
int aq_deadline_left(int64_t deadline);

/*  A client id: NAME (cleaned to the name alphabet) plus a random suffix. */
void aq_client_id_make(const char *name, char *buf, size_t size);

/*  Sets what aq_last_error() says: "" for success, else one line. */
void aq_last_error_set(const char *format, ...) __attribute__((format(printf, 1, 2)));

/*  aq_last_error() for a connection to `address` that failed with
    `status` after the session was made: the broker's ERROR (AQ_REFUSED,
    from `session`, may be NULL) or the status's description. */
void aq_last_error_status(const char *address, aq_status_t status, const aq_session_t *session);

/*  How a DEALER's (or PUSH's) CURVE handshake went, from its monitor:
    AQ_KEY_MISMATCH, AQ_KEY_REFUSED, or AQ_OK if no failure was seen. */
typedef struct aq_handshake_watch aq_handshake_watch_t;
aq_handshake_watch_t *aq_handshake_watch_new(void *zsock);
aq_status_t aq_handshake_watch_status(aq_handshake_watch_t *self);
void aq_handshake_watch_destroy(aq_handshake_watch_t **self_p);

/*  Makes a czmq socket (zsock_t *) a CURVE client, if enabled. */
void aq_security_apply(void *zsock);

#endif
