/*  Putting items into a broker.

    Items travel on a PUSH socket to the broker's PULL socket: fast, but with
    no reply. put() gathers consecutive items for one queue into a PUTS batch
    and sends it when it is full (the broker's max-batch items, or max-item
    bytes), when the queue or lease changes, or on flush(), sync() and
    destroy(); an item too large to share a batch goes alone. A program that
    pauses between puts calls flush() before it pauses, so nothing waits in
    this process.

    Each put carries this producer's id and a sequence number, and sync()
    asks the broker, on the session's DEALER, to confirm it holds every put
    up to the last one. Only after a successful sync is it safe to say the
    items are in the broker (and, for example, to join).

    The producer keeps the puts not yet confirmed (at most the broker's
    window, in puts and bytes, and AQ_PRODUCER_WINDOW / _BYTES) as
    the very frames it sent, and sends them again if they were lost on the
    way or the broker restarted; the broker drops any it already has. put()
    waits while the window is full. */
#ifndef ASYNCQ_PRODUCER_H
#define ASYNCQ_PRODUCER_H

#include <stddef.h>
#include <stdint.h>

#include "asyncq/session.h"

#define AQ_PRODUCER_WINDOW 4096
#define AQ_PRODUCER_WINDOW_BYTES (64u * 1024 * 1024)
/*  Items at least this large are sent alone, as a PUT, not copied into a
    batch. */
#define AQ_PUT_ALONE_BYTES (64u * 1024)

typedef struct aq_producer aq_producer_t;

/*  Connects to the broker at `address` (HOST[:PORT], tcp://HOST:PORT or
    ipc://PATH; several, comma-separated, and every broker they name: a
    service of shards, PROTOCOL.md 4.15, whose every batch of puts goes to
    the next broker that is up) as a producer named `name` (NULL:
    "producer"; a random suffix is added to make its id), waiting up to
    AQ_CONNECT_TIMEOUT_MS for the broker. NULL on failure, with *status set as aq_session_new says,
    and aq_last_error() saying why. */
aq_producer_t *aq_producer_new(const char *address, const char *name, aq_status_t *status);

/*  Sends what is gathered, then closes the sockets. Items not confirmed by
    a sync may be lost. */
void aq_producer_destroy(aq_producer_t **self_p);

/*  Puts one item of `size` bytes into `queue` (it may wait in this process
    for its batch: see flush()). Refuses locally, sending nothing, an invalid
    queue name (AQ_MALFORMED) or an item larger than the broker accepts
    (AQ_TOO_BIG). Waits while the window is full; returns AQ_INTERRUPTED if
    a signal arrives meanwhile. */
aq_status_t aq_producer_put(aq_producer_t *self, const char *queue, const void *data,
                            size_t size);

/*  put, asking for a lease of lease_ms for each delivery of this item
    instead of the queue's (0: the queue's). */
aq_status_t aq_producer_put_lease(aq_producer_t *self, const char *queue, const void *data,
                                  size_t size, uint64_t lease_ms);

/*  How a put asks to be delivered (PROTOCOL.md 4.1). Zeroed: a plain put. */
typedef struct {
    uint64_t lease_ms; /* each delivery's lease; 0: the queue's */
    int32_t priority;  /* among ready items, the lowest is delivered first; 0 by default */
    uint64_t delay_ms; /* not delivered before this long after the broker accepts it; 0: at once */
    uint64_t at_ms;    /* or not before this time, ms since 1970 on the broker's clock; 0: none */
    int front;         /* to the front of its priority: last in, first out; not with a delay */
} aq_put_options_t;

/*  put, with options (NULL: none). AQ_MALFORMED, sending nothing, for both
    delay_ms and at_ms, or front with either. A broker before 2.2 refuses
    a put with options (AQ_REFUSED at the sync, 400); the broker refuses a
    delay over its --max-delay the same way. */
aq_status_t aq_producer_put_with(aq_producer_t *self, const char *queue, const void *data,
                                 size_t size, const aq_put_options_t *options);

/*  put_with, pinned by `key` (key_size bytes) to one broker of a service
    (PROTOCOL.md 4.15: shard FNV-1a(key) mod shards), so that the items of
    one key keep their order; it waits for that broker if it is down.
    AQ_MALFORMED if the service's shards are not numbered 0 to N-1. */
aq_status_t aq_producer_put_key(aq_producer_t *self, const char *queue, const void *key,
                                size_t key_size, const void *data, size_t size,
                                const aq_put_options_t *options);

/*  How many brokers the producer puts to: every broker of the service at
    `address` (PROTOCOL.md 4.15), 1 for a broker alone. */
size_t aq_producer_brokers(const aq_producer_t *self);

/*  The addresses given that answered nothing and that no broker of the
    service lists, with why, as one line ("" if none): they were left out,
    and the others are served. (A broker of the service that is down is
    not left out: it is said HELLO to in the background and used once it
    answers; puts with a key of its shard wait for it.) */
const char *aq_producer_unreachable(const aq_producer_t *self);

/*  Sends the items gathered so far, without waiting for anything. */
aq_status_t aq_producer_flush(aq_producer_t *self);

/*  Waits up to `timeout_ms` (-1: for ever; 0: only reads the confirmations
    already here) until the broker confirms every put so far, sending again what was lost, across broker restarts.
    AQ_OK: all of them are held by the broker. AQ_REFUSED: the broker
    received all of them but refused some (aq_producer_refused says how
    many; aq_session_error the last reason), or refused the confirm itself:
    409 when another session said HELLO with this producer's id, after which
    the puts not confirmed (aq_producer_unconfirmed) may be lost and are
    never sent again under it. AQ_TIMEOUT, AQ_INTERRUPTED:
    some are not confirmed yet (aq_producer_unconfirmed says how many). */
aq_status_t aq_producer_sync(aq_producer_t *self, int timeout_ms);

/*  Puts so far, and how many of them the broker refused (known after sync). */
uint64_t aq_producer_sent(const aq_producer_t *self);
uint64_t aq_producer_refused(const aq_producer_t *self);
/*  Puts not yet confirmed, and how many times they were sent again. */
uint64_t aq_producer_unconfirmed(const aq_producer_t *self);
uint64_t aq_producer_resends(const aq_producer_t *self);

/*  The queue whose lack of room holds this producer's puts back, as the
    broker last said (HELD), or NULL. */
const char *aq_producer_held(const aq_producer_t *self);

aq_session_t *aq_producer_session(aq_producer_t *self);

#endif
