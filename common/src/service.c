/*  A service of several brokers (PROTOCOL.md 4.15): the addresses a client
    is given, and those the brokers name, each opened as a session. */
#include "asyncq/service.h"

#include <arpa/inet.h>
#include <czmq.h>
#include <netdb.h>
#include <pthread.h>
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

/*  The endpoint an address names, for comparing addresses: a host name as
    its first IPv4 address (a broker given as an address of a name that
    resolves to several, and listed by its own name, is one). */
static void s_key(const char *address, char *key, size_t size)
{
    aq_endpoint_t endpoint;
    if (aq_endpoint_parse(address, 0, &endpoint) != AQ_OK) {
        snprintf(key, size, "%s", address);
        return;
    }
    struct addrinfo hints = {.ai_family = AF_INET, .ai_socktype = SOCK_STREAM}, *found = NULL;
    struct in_addr probe;
    char ip[INET_ADDRSTRLEN];
    if (!endpoint.is_ipc && inet_pton(AF_INET, endpoint.host, &probe) != 1
        && endpoint.host[0] != '[' && getaddrinfo(endpoint.host, NULL, &hints, &found) == 0
        && found
        && inet_ntop(AF_INET, &((const struct sockaddr_in *) found->ai_addr)->sin_addr, ip,
                     sizeof ip)) {
        snprintf(key, size, "tcp://%s:%d", ip, endpoint.port);
        freeaddrinfo(found);
        return;
    }
    if (found)
        freeaddrinfo(found);
    aq_endpoint_format(&endpoint, key, size);
}

/*  The addresses of a service being opened: those given first, then
    those the brokers list; for each, its shard if a broker lists it (-1
    if none does), and why it did not answer (NULL if it did, or was not
    tried). */
typedef struct {
    char (*address)[AQ_ENDPOINT_MAX];
    char (*key)[AQ_ENDPOINT_MAX]; /* s_key of each, made once */
    int *listed;
    char *member;                 /* a replica of a group that `groups` lists (4.16) */
    char **why;
    size_t known;
    size_t keyed;                 /* places whose key is made */
} places_t;

/*  A place that is a replica of a group that answered (4.16). */
#define REPLICA_PLACE (-2)
/*  What each of several addresses opened at once gets first (below). */
#define FIRST_TRY_MS 1500

/*  Every place's key made. */
static void s_keys(places_t *places)
{
    for (; places->keyed < places->known; places->keyed++)
        s_key(places->address[places->keyed], places->key[places->keyed], AQ_ENDPOINT_MAX);
}

/*  Every broker `welcome` lists, as a place of the service: added, or
    marked as listed if given. */
static void s_add_listed(places_t *places, const aq_session_t *session)
{
    /* With groups (4.16), every replica of each shard; else one broker each. */
    const aq_welcome_t *welcome = aq_session_welcome(session);
    const char *at = welcome->groups[0] ? welcome->groups : welcome->brokers;
    for (int shard = 0; *at; shard++) {
        size_t length = strcspn(at, ",");
        int group = memchr(at, '|', length) != NULL;
        for (const char *end = at + length; at < end;) {
            size_t size = strcspn(at, "|,");
            char entry[AQ_ENDPOINT_MAX], address[AQ_ENDPOINT_MAX], key[AQ_ENDPOINT_MAX];
            snprintf(entry, sizeof entry, "%.*s", (int) (size < sizeof entry ? size : 0), at);
            s_listed(session, entry, address, sizeof address);
            at += size + (at + size < end);
            if (!address[0])
                continue;
            s_key(address, key, sizeof key);
            s_keys(places);
            size_t k = 0;
            while (k < places->known && strcmp(places->key[k], key) != 0)
                k++;
            if (k == places->known && k < AQ_SERVICE_MAX)
                snprintf(places->address[places->known++], AQ_ENDPOINT_MAX, "%s", address);
            if (k < places->known && places->listed[k] < 0)
                places->listed[k] = shard;
            if (k < places->known && group)
                places->member[k] = 1;
        }
        at += *at == ',';
    }
    /* The replicas of its group (4.16) are that shard, not others: one
       given that did not answer is neither a shard down nor left out. */
    at = aq_session_welcome(session)->replicas;
    while (*at) {
        size_t length = strcspn(at, ",");
        char entry[AQ_ENDPOINT_MAX], key[AQ_ENDPOINT_MAX];
        snprintf(entry, sizeof entry, "%.*s", (int) (length < sizeof entry ? length : 0), at);
        at += length + (at[length] == ',');
        if (!entry[0])
            continue;
        s_key(entry, key, sizeof key);
        s_keys(places);
        for (size_t k = 0; k < places->known; k++)
            if (strcmp(places->key[k], key) == 0 && places->listed[k] == -1)
                places->listed[k] = REPLICA_PLACE;
    }
}

/*  A session that answered, added to `sessions`: the same broker under
    another name is one; two of one shard are an error. */
static aq_status_t s_add_session(aq_session_t **sessions, size_t *count, aq_session_t *session,
                                 int timeout_ms)
{
    const aq_welcome_t *welcome = aq_session_welcome(session);
    for (size_t k = 0; k < *count; k++) {
        const aq_welcome_t *other = aq_session_welcome(sessions[k]);
        if (welcome->broker_id[0] && strcmp(other->broker_id, welcome->broker_id) == 0) {
            /* Two HELLOs of one client id: the broker kept the session of
               whichever came last. This one goes without a BYE (which
               would end that session), and the first says HELLO again,
               last. */
            aq_session_drop(&session);
            return aq_session_hello(sessions[k], timeout_ms);
        }
    }
    sessions[(*count)++] = session;
    for (size_t k = 0; k + 1 < *count; k++)
        if (aq_session_welcome(sessions[k])->shard == welcome->shard) {
            aq_last_error_set("'%s' and '%s' both say they are shard %d: give every broker "
                              "of a service its own --shard (PROTOCOL.md 4.15)",
                              aq_session_address(sessions[k]), aq_session_address(session),
                              welcome->shard);
            return AQ_BAD_ENDPOINT;
        }
    return AQ_OK;
}

/*  After every place was tried: a broker of the service that did not
    answer gets a session that says HELLO in the background; an address
    given that no broker lists is left out, and said in `left_out`. */
static aq_status_t s_add_absent(places_t *places, aq_session_t **sessions, size_t *count,
                                const char *client_id, uint64_t producer_seq, char *left_out,
                                size_t left_out_size)
{
    aq_welcome_t like = *aq_session_welcome(sessions[0]);
    size_t used = 0;
    for (size_t i = 0; i < places->known; i++) {
        if (!places->why[i] || places->listed[i] == REPLICA_PLACE)
            continue;
        int shard = places->listed[i];
        for (size_t k = 0; k < *count && shard >= 0; k++)
            if (aq_session_welcome(sessions[k])->shard == shard)
                shard = -1; /* its shard answered elsewhere, or has its session below */
        char group[AQ_TEXT_MAX] = ""; /* its replicas, asked in turn (4.16) */
        const char *at = like.groups;
        for (int place = 0; shard >= 0 && *at; place++) {
            size_t length = strcspn(at, ",");
            if (place == shard)
                snprintf(group, sizeof group, "%.*s", (int) length, at);
            at += length + (at[length] == ',');
        }
        aq_status_t rc = AQ_OK;
        aq_session_t *session =
            shard >= 0 ? aq_session_open_later(places->address[i], client_id, producer_seq,
                                               &like, shard, group, &rc)
                       : NULL;
        if (rc == AQ_NOMEM)
            return rc;
        if (session) {
            sessions[(*count)++] = session;
            continue;
        }
        if (places->member[i])
            continue; /* a replica of a group the service has a session with */
        if (left_out && used < left_out_size)
            used += (size_t) snprintf(left_out + used, left_out_size - used, "%s%s",
                                      used ? "; " : "", places->why[i]);
    }
    return AQ_OK;
}

/*  One address being opened, in a thread of its own: the brokers of a
    service are said HELLO to at once, so that one that does not answer
    costs one wait, not one each. */
typedef struct {
    pthread_t thread;
    int started;
    const char *address;
    const char *client_id;
    uint64_t producer_seq;
    int timeout_ms;
    aq_session_t *session;
    aq_status_t status;
    char why[AQ_TEXT_MAX + 2 * AQ_ENDPOINT_MAX]; /* its aq_last_error(), a thread's own */
} opening_t;

static void *s_open_one(void *arg)
{
    opening_t *self = arg;
    self->session = aq_session_open(self->address, self->client_id, self->producer_seq,
                                    self->timeout_ms, &self->status);
    snprintf(self->why, sizeof self->why, "%s", aq_last_error());
    return NULL;
}

/*  Opens the `n` places `which` names at once (in order when a thread
    cannot be had), each within `timeout_ms`, and takes what each said: a
    session (its brokers listed as places), or why it did not answer.
    AQ_OK, or the error of one that refused (the others' sessions closed). */
static aq_status_t s_open_places(places_t *places, const size_t *which, size_t n,
                                 opening_t *openings, const char *client_id,
                                 uint64_t producer_seq, int timeout_ms, aq_session_t **sessions,
                                 size_t *count)
{
    zsys_init(); /* once, before the threads make sockets */
    for (size_t k = 0; k < n; k++) {
        opening_t *opening = &openings[k];
        *opening = (opening_t){.address = places->address[which[k]], .client_id = client_id,
                               .producer_seq = producer_seq, .timeout_ms = timeout_ms};
        opening->started = n > 1 && pthread_create(&opening->thread, NULL, s_open_one, opening) == 0;
        if (!opening->started)
            s_open_one(opening);
    }
    for (size_t k = 0; k < n; k++)
        if (openings[k].started)
            pthread_join(openings[k].thread, NULL);
    aq_status_t status = AQ_OK;
    for (size_t k = 0; k < n; k++) {
        opening_t *opening = &openings[k];
        size_t i = which[k];
        if (status)
            aq_session_destroy(&opening->session);
        else if (!opening->session && opening->status == AQ_UNREACHABLE) {
            places->why[i] = strdup(opening->why);
            status = places->why[i] ? AQ_OK : AQ_NOMEM;
        }
        else if (!opening->session) {
            aq_last_error_set("%s", opening->why);
            status = opening->status;
        }
        else {
            s_add_listed(places, opening->session);
            status = s_add_session(sessions, count, opening->session, timeout_ms);
        }
    }
    return status;
}

aq_session_t **aq_service_open(const char *given, const char *client_id, uint64_t producer_seq,
                               int timeout_ms, char *left_out, size_t left_out_size,
                               size_t *count, aq_status_t *status)
{
    places_t places = {.address = calloc(AQ_SERVICE_MAX, sizeof *places.address),
                       .key = calloc(AQ_SERVICE_MAX, sizeof *places.key),
                       .listed = calloc(AQ_SERVICE_MAX, sizeof *places.listed),
                       .member = calloc(AQ_SERVICE_MAX, sizeof *places.member),
                       .why = calloc(AQ_SERVICE_MAX, sizeof *places.why)};
    aq_session_t **sessions = calloc(AQ_SERVICE_MAX, sizeof *sessions);
    *status = places.address && places.key && places.listed && places.member && places.why
                      && sessions
                  ? AQ_OK : AQ_NOMEM;
    if (left_out && left_out_size)
        left_out[0] = '\0';
    if (!*status)
        places.known = aq_service_split(given, places.address, AQ_SERVICE_MAX, status);
    for (size_t i = 0; places.listed && i < AQ_SERVICE_MAX; i++)
        places.listed[i] = -1;
    *count = 0;
    /* Opened in rounds, each round's at once: those given, then those
       their WELCOMEs name that are not known yet, and so on. A round waits
       for its slowest, so that one silent address (a host cut off, or
       stopped) would make every open wait the whole time: each of several
       gets FIRST_TRY_MS first, and only if none of them answered are those
       tried again with the time left. One that does not answer is tried
       no more here (a broker of the service that is down is said HELLO to
       in the background, below). */
    opening_t *openings = *status ? NULL : calloc(AQ_SERVICE_MAX, sizeof *openings);
    size_t *which = *status ? NULL : calloc(AQ_SERVICE_MAX, sizeof *which);
    if (!*status && (!openings || !which))
        *status = AQ_NOMEM;
    int64_t deadline = aq_deadline_at(timeout_ms);
    for (size_t from = 0, to; !*status && from < places.known; from = to) {
        to = places.known;
        size_t n = 0, before = *count;
        for (size_t i = from; i < to; i++)
            which[n++] = i;
        int first = n > 1 && (timeout_ms < 0 || timeout_ms > FIRST_TRY_MS) ? FIRST_TRY_MS
                                                                            : timeout_ms;
        *status = s_open_places(&places, which, n, openings, client_id, producer_seq, first,
                                sessions, count);
        if (*status || *count > before || first == timeout_ms || !aq_deadline_left(deadline))
            continue;
        n = 0;
        for (size_t i = from; i < to; i++)
            if (places.why[i]) {
                free(places.why[i]);
                places.why[i] = NULL;
                which[n++] = i;
            }
        *status = s_open_places(&places, which, n, openings, client_id, producer_seq,
                                aq_deadline_left(deadline), sessions, count);
    }
    free(openings);
    free(which);
    if (!*status && !*count) {
        /* None answered: each is named, with why. */
        char all[AQ_TEXT_MAX + 2 * AQ_ENDPOINT_MAX] = "";
        size_t used = 0;
        for (size_t i = 0; i < places.known && used < sizeof all; i++)
            if (places.why[i])
                used += (size_t) snprintf(all + used, sizeof all - used, "%s%s",
                                          used ? "; " : "", places.why[i]);
        aq_last_error_set("%s", all);
        *status = AQ_UNREACHABLE;
    }
    if (!*status)
        *status = s_add_absent(&places, sessions, count, client_id, producer_seq, left_out,
                               left_out_size);
    for (size_t i = 0; places.why && i < places.known; i++)
        free(places.why[i]);
    free(places.address);
    free(places.key);
    free(places.listed);
    free(places.member);
    free(places.why);
    if (*status) {
        for (size_t k = 0; sessions && k < *count; k++)
            aq_session_destroy(&sessions[k]);
        free(sessions);
        *count = 0;
        return NULL;
    }
    if (!*status)
        aq_last_error_set("%s", "");
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
