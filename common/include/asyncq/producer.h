/*  Putting items into a broker.

    Items travel on a PUSH socket to the broker's PULL socket: fast, but with
    no reply. Each put carries this producer's id and a sequence number, and
    aq_producer_sync asks the broker, on the session's DEALER, to confirm it
    has received every put up to the last one. Only after a successful sync
    is it safe to say the items are in the broker (and, for example, to join).

    The producer keeps the puts not yet confirmed (at most AQ_PRODUCER_WINDOW
    of them, and AQ_PRODUCER_WINDOW_BYTES) and sends them again if they were
    lost on the way or the broker restarted; the broker drops any it already
    has. put blocks while the window is full, and while the broker is
    applying back-pressure (a full queue). */
#ifndef ASYNCQ_PRODUCER_H
#define ASYNCQ_PRODUCER_H

#include <stddef.h>
#include <stdint.h>

#include "asyncq/session.h"

#define AQ_PRODUCER_WINDOW 4096
#define AQ_PRODUCER_WINDOW_BYTES (64u * 1024 * 1024)

typedef struct aq_producer aq_producer_t;

/*  Connects to the broker at `address` (see endpoint.h) as a producer named
    `name` (a random suffix is added to make its id). NULL on failure, with
    *status set. */
aq_producer_t *aq_producer_new(const char *address, const char *name, aq_status_t *status);

/*  Closes the sockets. Items not confirmed by a sync may be lost. */
void aq_producer_destroy(aq_producer_t **self_p);

/*  Puts one item of `size` bytes into `queue`. Refuses locally, sending
    nothing, an invalid queue name (AQ_MALFORMED) or an item larger than the
    broker accepts (AQ_TOO_BIG). Blocks while the broker holds back puts;
    returns AQ_INTERRUPTED if a signal arrives meanwhile. */
aq_status_t aq_producer_put(aq_producer_t *self, const char *queue, const void *data,
                            size_t size);

/*  put, asking for a lease of lease_ms for each delivery of this item
    instead of the queue's (0: the queue's). */
aq_status_t aq_producer_put_lease(aq_producer_t *self, const char *queue, const void *data,
                                  size_t size, uint64_t lease_ms);

/*  Waits up to `timeout_ms` (-1: forever) until the broker confirms every
    put so far, sending again what was lost, across broker restarts.
    AQ_OK: all of them are held by the broker. AQ_REFUSED: the broker
    received all of them but refused some (aq_producer_refused says how
    many; aq_session_error the last reason). AQ_TIMEOUT, AQ_INTERRUPTED:
    some are not confirmed yet (aq_producer_unconfirmed says how many). */
aq_status_t aq_producer_sync(aq_producer_t *self, int timeout_ms);

/*  Puts so far, and how many of them the broker refused (known after sync). */
uint64_t aq_producer_sent(const aq_producer_t *self);
uint64_t aq_producer_refused(const aq_producer_t *self);
/*  Puts not yet confirmed, and how many times they were sent again. */
uint64_t aq_producer_unconfirmed(const aq_producer_t *self);
uint64_t aq_producer_resends(const aq_producer_t *self);

aq_session_t *aq_producer_session(aq_producer_t *self);

#endif
