/*  asyncq status codes: one code per outcome.

    Codes from 400 to 599 travel on the wire in ERROR messages (see
    docs/PROTOCOL.md); the others only ever arise inside a process. AQ_OK is 0
    so that `if (rc)` reads as "if it failed". */
#ifndef ASYNCQ_STATUS_H
#define ASYNCQ_STATUS_H

typedef enum {
    AQ_OK = 0,

    /* Sent by the broker in ERROR messages. */
    AQ_MALFORMED = 400,       /* frames or fields not as the protocol says */
    AQ_FORBIDDEN = 403,       /* outside the client's roles, queues or key */
    AQ_UNKNOWN_ITEM = 404,    /* ack of an item id this peer does not hold */
    AQ_UNKNOWN_COMMAND = 405, /* command word not defined in this version */
    AQ_BAD_VERSION = 406,     /* first frame is not the protocol signature */
    AQ_LEASE_EXPIRED = 408,   /* item was taken back from this consumer */
    AQ_CONFLICT = 409,        /* request contradicts this session's state */
    AQ_LOST = 410,            /* puts of a producer never reached the broker */
    AQ_NO_SESSION = 412,      /* command needs a HELLO first: say HELLO again */
    AQ_TOO_BIG = 413,         /* item larger than the broker's limit */
    AQ_NOT_LEADER = 421,      /* a replica that does not lead: the leader's address */
    AQ_LIMIT = 429,           /* a broker limit was reached (queues, joins...) */
    AQ_INTERNAL = 500,        /* broker could not do it (out of memory) */
    AQ_SHUT_DOWN = 503,       /* the queue (or broker) was shut down */
    AQ_STORAGE = 507,         /* the broker cannot write to disk: puts refused */

    /* Local outcomes, never on the wire. */
    AQ_TIMEOUT = 1001,     /* no answer before the deadline */
    AQ_INTERRUPTED = 1002, /* a signal asked the process to stop */
    AQ_UNREACHABLE = 1003, /* broker did not answer HELLO in time */
    AQ_BAD_ENDPOINT = 1004, /* address could not be parsed */
    AQ_TRANSPORT = 1005,   /* ZeroMQ call failed (see errno) */
    AQ_NOMEM = 1006,       /* out of memory */
    AQ_REFUSED = 1007,     /* broker answered with an ERROR */
    AQ_KEY_MISMATCH = 1008, /* CURVE handshake failed: wrong server key */
    AQ_KEY_REFUSED = 1009, /* the broker does not allow this client's key */
    AQ_BAD_KEY = 1010,     /* a certificate file cannot be read */
    AQ_KEY_REQUIRED = 1011 /* the broker speaks CURVE and this client has no keys */
} aq_status_t;

/*  Short fixed name of a status ("TOO_BIG"), as sent in ERROR messages.
    Never returns NULL: unknown codes give "UNKNOWN". */
const char *aq_status_name(int status);

/*  One-line human description. Never returns NULL. */
const char *aq_strerror(int status);

#endif
