/*  A service of several brokers (PROTOCOL.md 4.15): the addresses a client
    is given, and those the brokers name, each opened as a session. */
#include "asyncq/service.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "asyncq/internal.h"

/*  A host name that resolves to several IPv4 addresses (a scaled
    docker-compose service) stands for each; one of them, or IPv4 and IPv6
    of one host (localhost), stays a name. Returns how many it added. */
static size_t s_expand(const aq_endpoint_t *endpoint, const char *address,
                       char (*out)[AQ_ENDPOINT_MAX], size_t room)
{
    struct addrinfo hints = {.ai_family = AF_INET, .ai_socktype = SOCK_STREAM}, *found = NULL;
    struct in_addr probe;
    size_t added = 0;
    if (!endpoint->is_ipc && inet_pton(AF_INET, endpoint->host, &probe) != 1
        && endpoint->host[0] != '[' && getaddrinfo(endpoint->host, NULL, &hints, &found) == 0) {
        /* Each address once: a hosts file may name one twice. */
        for (struct addrinfo *at = found; at && added < room; at = at->ai_next) {
            char ip[INET_ADDRSTRLEN];
            const struct sockaddr_in *in = (const struct sockaddr_in *) at->ai_addr;
            if (!inet_ntop(AF_INET, &in->sin_addr, ip, sizeof ip))
                continue;
            snprintf(out[added], AQ_ENDPOINT_MAX, "tcp://%s:%d", ip, endpoint->port);
            size_t same = 0;
            while (same < added && strcmp(out[same], out[added]) != 0)
                same++;
            added += same == added;
        }
        if (added < 2)
            added = 0; /* one address: the name, as given */
        freeaddrinfo(found);
    }
    if (!added && room)
        snprintf(out[added++], AQ_ENDPOINT_MAX, "%s", address);
    return added;
}

size_t aq_service_split(const char *given, char (*out)[AQ_ENDPOINT_MAX], size_t max,
                        aq_status_t *status)
{
    size_t count = 0;
    *status = AQ_OK;
    for (const char *at = given ? given : ""; *at && count < max;) {
        size_t length = strcspn(at, ",");
        char address[AQ_ENDPOINT_MAX];
        aq_endpoint_t endpoint;
        snprintf(address, sizeof address, "%.*s", (int) length, at);
        if (length == 0 || length >= sizeof address
            || aq_endpoint_parse(address, 0, &endpoint) != AQ_OK) {
            aq_last_error_set("'%s' is not a broker address (HOST[:PORT], tcp://HOST:PORT or "
                              "ipc://PATH, several with commas)", address);
            *status = AQ_BAD_ENDPOINT;
            return 0;
        }
        count += s_expand(&endpoint, address, out + count, max - count);
        at += length + (at[length] == ',');
    }
    if (!count) {
        aq_last_error_set("no broker address given");
        *status = AQ_BAD_ENDPOINT;
    }
    return count;
}

/*  A broker a WELCOME lists, as an address: ":PORT" on the host that
    broker was reached at. */
static void s_listed(const aq_session_t *reached, const char *entry, char *out, size_t size)
{
    const aq_endpoint_t *endpoint = aq_session_endpoint(reached);
    int length = entry[0] == ':' && !endpoint->is_ipc
                     ? snprintf(out, size, "tcp://%s:%.8s", endpoint->host, entry + 1)
                     : snprintf(out, size, "%s", entry);
    if (length < 0 || (size_t) length >= size)
        out[0] = '\0'; /* too long to be an address: not one */
}

/*  The endpoint an address names, for comparing addresses. */
static void s_key(const char *address, char *key, size_t size)
{
    aq_endpoint_t endpoint;
    if (aq_endpoint_parse(address, 0, &endpoint) == AQ_OK)
        aq_endpoint_format(&endpoint, key, size);
    else
        snprintf(key, size, "%s", address);
}

aq_session_t **aq_service_open(const char *given, const char *client_id, uint64_t producer_seq,
                               int timeout_ms, size_t *count, aq_status_t *status)
{
    char (*addresses)[AQ_ENDPOINT_MAX] = calloc(AQ_SERVICE_MAX, sizeof *addresses);
    size_t known = addresses ? aq_service_split(given, addresses, AQ_SERVICE_MAX, status) : 0;
    aq_session_t **sessions = known ? calloc(AQ_SERVICE_MAX, sizeof *sessions) : NULL;
    if (!addresses || (known && !sessions))
        *status = AQ_NOMEM;
    *count = 0;
    /* Opened in order; every broker a WELCOME names joins the list. */
    for (size_t i = 0; sessions && i < known && !*status; i++) {
        aq_session_t *session =
            aq_session_open(addresses[i], client_id, producer_seq, timeout_ms, status);
        if (!session)
            break;
        const aq_welcome_t *welcome = aq_session_welcome(session);
        size_t same = 0;
        while (same < *count && strcmp(aq_session_welcome(sessions[same])->broker_id,
                                       welcome->broker_id) != 0)
            same++;
        if (same < *count) {
            /* The same broker under another name: this HELLO, of the same
               client id, replaced the first session there, so this one
               stays (and the first one's BYE is answered 412, unheard). */
            aq_session_destroy(&sessions[same]);
            sessions[same] = session;
            continue;
        }
        for (size_t k = 0; k < *count; k++)
            if (aq_session_welcome(sessions[k])->shard == welcome->shard) {
                aq_last_error_set("'%s' and '%s' both say they are shard %d: give every broker "
                                  "of a service its own --shard (PROTOCOL.md 4.15)",
                                  aq_session_address(sessions[k]), addresses[i], welcome->shard);
                *status = AQ_BAD_ENDPOINT;
            }
        sessions[(*count)++] = session;
        for (const char *at = welcome->brokers; *at && !*status;) {
            size_t length = strcspn(at, ",");
            char entry[AQ_ENDPOINT_MAX], address[AQ_ENDPOINT_MAX], key[AQ_ENDPOINT_MAX];
            snprintf(entry, sizeof entry, "%.*s", (int) length, at);
            s_listed(session, entry, address, sizeof address);
            at += length + (at[length] == ',');
            if (!address[0])
                continue;
            s_key(address, key, sizeof key);
            size_t k = 0;
            for (char other[AQ_ENDPOINT_MAX]; k < known; k++) {
                s_key(addresses[k], other, sizeof other);
                if (strcmp(other, key) == 0)
                    break;
            }
            if (k == known && known < AQ_SERVICE_MAX)
                snprintf(addresses[known++], AQ_ENDPOINT_MAX, "%s", address);
        }
    }
    free(addresses);
    if (*status) {
        for (size_t k = 0; sessions && k < *count; k++)
            aq_session_destroy(&sessions[k]);
        free(sessions);
        *count = 0;
        return NULL;
    }
    return sessions;
}

uint32_t aq_service_key_hash(const void *key, size_t size)
{
    const uint8_t *bytes = key;
    uint32_t hash = 2166136261u;
    for (size_t i = 0; i < size; i++) {
        hash ^= bytes[i];
        hash *= 16777619u;
    }
    return hash;
}
