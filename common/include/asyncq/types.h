/*  What the API's arguments are bounded by and choose between: the
    protocol's limits (docs/PROTOCOL.md) and the modes of join and shutdown.

    Timeouts, everywhere in the API, are `int timeout_ms`: -1 (any negative
    value) waits for ever, 0 does not wait (the call looks once, at what has
    already arrived), anything else waits up to that many milliseconds, as
    zmq_poll's timeout does. */
#ifndef ASYNCQ_TYPES_H
#define ASYNCQ_TYPES_H

#define AQ_DEFAULT_PORT 5557 /* a broker address without a port: HOST:5557 */
#define AQ_NAME_MAX 64    /* queue names and client ids: [A-Za-z0-9._:-] */
#define AQ_TAG_MAX 64     /* request tags, echoed in replies */
#define AQ_TEXT_MAX 1024  /* error texts, NACK reasons, report lines */
#define AQ_LIST_MAX 1024  /* item ids in one ACK, lines in one REPORT */
#define AQ_U64_DIGITS 20
/*  An ERROR's subject: up to AQ_LIST_MAX ids in decimal, space-separated. */
#define AQ_SUBJECT_MAX (AQ_LIST_MAX * (AQ_U64_DIGITS + 1))
/*  The longest a NACK delay or a join's timeout may be (24 hours). */
#define AQ_WAIT_MAX_MS 86400000

/*  aq_join: wait for the items accepted before the join (Python's
    Queue.join), or until nothing at all is outstanding. aq_shutdown: let
    consumers take what is queued, or discard it. */
typedef enum { AQ_JOIN_BEFORE = 0, AQ_JOIN_ALL = 1 } aq_join_mode_t;
typedef enum { AQ_SHUTDOWN_DRAIN = 0, AQ_SHUTDOWN_IMMEDIATE = 1 } aq_shutdown_mode_t;

#endif
