/*  A session with a broker: what join, stats, dead and shutdown (control.h)
    are asked on, and what a producer and a consumer hold inside. Opening
    one says HELLO and waits for WELCOME, so an absent broker is reported
    at once rather than as a request that never returns. Not thread-safe:
    one session per thread.

    Every constructor of the API takes its arguments in one order: the
    broker's address, the names (this client's name, then the queue), the
    options, and the status out-parameter last. */
#ifndef ASYNCQ_SESSION_H
#define ASYNCQ_SESSION_H

#include <stdint.h>

#include "asyncq/status.h"
#include "asyncq/types.h"

/*  How long aq_producer_new and aq_consumer_new wait for the broker. */
#define AQ_CONNECT_TIMEOUT_MS 5000

typedef struct aq_session aq_session_t;

/*  The last ERROR the broker sent this session: why a call returned
    AQ_REFUSED. */
typedef struct {
    int code;          /* status code from the broker (AQ_FORBIDDEN...) */
    char tag[AQ_TAG_MAX + 1];
    char subject[AQ_SUBJECT_MAX + 1]; /* the ids, seq range or queue it concerns */
    char text[AQ_TEXT_MAX + 1];       /* the broker's reason, for a person */
} aq_error_t;

/*  Connects to the broker at `address`: HOST[:PORT] (PORT 5557 if not
    given), tcp://HOST:PORT or ipc://PATH. Says HELLO as `name` (NULL:
    "client") plus a random suffix, and waits up to `timeout_ms` (-1: for
    ever) for the broker's WELCOME. NULL on failure, with *status set:
    AQ_BAD_ENDPOINT (not an address), AQ_UNREACHABLE (the host name does
    not resolve, nothing listens there, or no answer in time),
    AQ_KEY_MISMATCH, AQ_KEY_REFUSED, AQ_KEY_REQUIRED, AQ_BAD_KEY (CURVE),
    AQ_NOMEM...; aq_last_error() then says why in one line. */
aq_session_t *aq_session_new(const char *address, const char *name, int timeout_ms,
                             aq_status_t *status);

/*  Says BYE (the broker releases what this client holds at once), then
    closes, waiting at most a second for unsent messages. */
void aq_session_destroy(aq_session_t **self_p);

/*  Why the last call that returned AQ_REFUSED was refused. */
const aq_error_t *aq_session_error(const aq_session_t *self);

/*  The id this session said HELLO with (its name and a suffix). */
const char *aq_session_client_id(const aq_session_t *self);

/*  The largest item the broker accepts, in bytes (its WELCOME). */
uint64_t aq_session_max_item(const aq_session_t *self);

/*  Why the last aq_session_new, aq_producer_new or aq_consumer_new of this
    thread failed, as one line for a person: the broker's address as it was
    given, and the cause ("cannot reach the broker at 'nosuch:5557': host
    'nosuch' not found: Name or service not known", "... nothing listens
    there: Connection refused", "... the broker refused: FORBIDDEN (403):
    ..."). "" after one that succeeded. */
const char *aq_last_error(void);

#endif
