/*  Broker addresses (internal: the library, the broker and the tests).

    One address names a broker: HOST[:PORT] (PORT defaults to 5557), or a
    full ZeroMQ endpoint tcp://HOST:PORT or ipc://PATH. The broker's PULL
    socket (puts) is at PORT and its ROUTER socket (everything else) at
    PORT+1; for ipc://PATH they are ipc://PATH.pull and ipc://PATH.router.
    A broker may bind port 0 or *: it then takes a free pair of ports. */
#ifndef ASYNCQ_ENDPOINT_H
#define ASYNCQ_ENDPOINT_H

#include <stddef.h>

#include "asyncq/status.h"
#include "asyncq/types.h" /* AQ_DEFAULT_PORT */

#define AQ_ENDPOINT_MAX 300

typedef struct {
    int is_ipc;
    char host[256]; /* tcp: host name or address, "*" for all interfaces */
    int port;       /* tcp: PULL port; 0 = pick one when binding */
    char path[256]; /* ipc: path */
} aq_endpoint_t;

/*  Parses an address. `for_bind` allows "*" hosts and port 0 or "*"; a
    missing host means all interfaces when binding. Returns AQ_OK or
    AQ_BAD_ENDPOINT. */
aq_status_t aq_endpoint_parse(const char *address, int for_bind, aq_endpoint_t *endpoint);

/*  ZeroMQ endpoint of the PULL socket (puts) / of the ROUTER socket. */
void aq_endpoint_pull(const aq_endpoint_t *endpoint, char *buf, size_t size);
void aq_endpoint_router(const aq_endpoint_t *endpoint, char *buf, size_t size);

/*  The one address clients use for this broker (tcp://HOST:PORT or ipc://PATH). */
void aq_endpoint_format(const aq_endpoint_t *endpoint, char *buf, size_t size);

/*  The address a client on this host uses for a broker bound to `bound`:
    all interfaces ("*") become 127.0.0.1. */
void aq_endpoint_local(const aq_endpoint_t *bound, char *buf, size_t size);

/*  The address to use: `flag` if given, else environment variable `env`,
    else `fallback`. */
const char *aq_endpoint_choose(const char *flag, const char *env, const char *fallback);

#endif
