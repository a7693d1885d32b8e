/*  A service of several brokers, each a shard (PROTOCOL.md 4.15): the
    producer, the consumer and the control requests open a session with
    each. */
#ifndef ASYNCQ_SERVICE_H
#define ASYNCQ_SERVICE_H

#include <stddef.h>
#include <stdint.h>

#include "asyncq/endpoint.h"
#include "asyncq/session.h"

/*  Brokers in one service: an id's top 8 bits. */
#define AQ_SERVICE_MAX 256

/*  Room for what aq_service_open says it left out. */
#define AQ_LEFT_OUT_MAX 1024

/*  The addresses in `given` (comma-separated; a host name that resolves to
    several IPv4 addresses stands for each), at most `max`. 0, with
    *status AQ_BAD_ENDPOINT and aq_last_error() saying which, for one that
    is not an address. */
size_t aq_service_split(const char *given, char (*out)[AQ_ENDPOINT_MAX], size_t max,
                        aq_status_t *status);

/*  A session with every broker of the service: those given, and every
    broker their WELCOMEs name, each once (the same broker reached under
    two names is one). A broker of the service that does not answer gets a
    session that says HELLO in the background (aq_session_is_up says when
    it is up); an address given that answers nothing and that no broker
    lists is left out, and `left_out` (if not NULL) says which, with why
    ("" if none). NULL, with *status and aq_last_error(), if none answers,
    one refuses, or two say the same shard. The array (AQ_SERVICE_MAX long)
    is the caller's to free, after destroying each session. */
aq_session_t **aq_service_open(const char *given, const char *client_id, uint64_t producer_seq,
                               int timeout_ms, char *left_out, size_t left_out_size,
                               size_t *count, aq_status_t *status);

/*  FNV-1a, 32 bits: a put's key picks shard hash % shards. */
uint32_t aq_service_key_hash(const void *key, size_t size);

#endif
