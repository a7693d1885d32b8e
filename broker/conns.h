/*  The broker's connections, as ZeroMQ's socket monitors report them.

    libzmq 4.3.4 tells the application neither when a peer connects nor
    which routing id a connection has, and cannot close one connection of a
    socket. Its monitor does report each accepted connection with its file
    descriptor, and every message carries the descriptor it came on
    (ZMQ_SRCFD). So the broker keeps a table by socket and descriptor: it
    refuses a connection above the limit, or from outside loopback when it
    has no keys, at once; it closes one that has not said HELLO (or put)
    after a deadline; and it can close the connection of a session it
    drops. It closes with shutdown(2), which leaves the descriptor to
    libzmq: libzmq sees the end of the stream and cleans up as for any peer
    that left.

    Descriptors are reused as soon as libzmq closes them, and the monitors'
    events arrive after the fact. So: a message whose entry is not a live
    connection makes the table read the events first (a connection's
    ACCEPTED is sent before its first message); a descriptor that is no
    connection any more when its ACCEPTED is read is not refused (it closed;
    shutting it would shut whoever has the number now); and a session's
    connection is closed only if it is still the one the session greeted
    on (each ACCEPTED gets a new stamp).

    Costs: a connection is O(1) to admit, greet, expire and close; a message
    on a live connection costs one table look-up. The race left: a message
    of a new connection that arrives before its ACCEPTED is read, on a
    descriptor whose previous connection was greeted and whose DISCONNECTED
    is not read either, is taken as the old connection's (checked only when
    its ACCEPTED is read). Without keys that lets one message of a
    non-loopback peer through in that window; with keys, CURVE has already
    authenticated it. */
#ifndef BROKER_CONNS_H
#define BROKER_CONNS_H

#include <stddef.h>
#include <stdint.h>

typedef struct conns conns_t;

/*  Told of each connection refused or closed for a cause: the peer's
    address and why. */
typedef void(conns_refused_fn)(void *ctx, const char *peer, const char *why);

typedef struct {
    uint64_t max;              /* most connections at once, both sockets */
    int loopback_only;         /* refuse peers outside loopback */
    int64_t hello_timeout_ms;  /* a connection must be greeted by then */
    conns_refused_fn *refused;
    void *ctx;
} conns_config_t;

/*  Starts monitors on both sockets (none if they are NULL: a table that
    admits every message, for a broker without sockets). NULL if it
    cannot. */
conns_t *conns_new(void *router, void *pull, const conns_config_t *config);
void conns_destroy(conns_t **self_p);

/*  The two monitor sockets, to poll for input (the loop polls their
    ZMQ_FD and calls conns_on_events when either is readable; every caller
    reads to the end, which the descriptor's signal relies on). */
void *conns_monitor(conns_t *self, int index);

/*  Reads every event waiting: admits or refuses new connections, forgets
    closed ones. */
void conns_on_events(conns_t *self, int64_t now_ms);

/*  `socket` is 0 for the ROUTER, 1 for the PULL socket. */

/*  True if a message that came on `fd` of `socket` may be handled: its
    connection was admitted. Reads waiting events first if the entry is not
    a live connection. */
int conns_admitted(conns_t *self, int socket, int fd, int64_t now_ms);

/*  What the table holds, for log lines: "open", "greeted", "closing",
    "left", "shut", "unknown". */
const char *conns_state_name(conns_t *self, int socket, int fd);

/*  The connection said HELLO (or sent a put of a live session): no
    deadline. Returns its stamp, for conns_close (0: no descriptor). */
uint64_t conns_greet(conns_t *self, int socket, int fd);

/*  Closes the connection if it is still the one with this stamp
    (idempotent). */
void conns_close(conns_t *self, int socket, int fd, uint64_t stamp, int64_t now_ms);

/*  Closes connections not greeted in time. */
void conns_expire(conns_t *self, int64_t now_ms);

/*  When conns_expire next has work, or -1. */
int64_t conns_next_deadline(const conns_t *self);

/*  Connections open now, and refused or closed for a cause so far. */
size_t conns_count(const conns_t *self);
uint64_t conns_refused_total(const conns_t *self);

/*  The peer's address ("10.0.0.2:4711", "ipc") of a descriptor. */
void conns_peer_name(int fd, char *buf, size_t size);

/*  The peer's host ("10.0.0.2", no port) if it is not on this host: 1;
    0 for loopback, ipc, or a descriptor that is no connection. */
int conns_peer_host(int fd, char *buf, size_t size);

#endif
