#include "asyncq/session.h"

#include <czmq.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "asyncq/internal.h"
#include "asyncq/security.h"

/*  The first HELLO of a session waits this long for WELCOME before it
    looks whether anything listens at the broker's address (a broker
    answers in well under a millisecond), and the look takes at most
    PROBE_MAX_MS (a connect to a host that answers takes microseconds). */
#define PROBE_AFTER_MS 100
#define PROBE_MAX_MS 1000

/*  A HELLO said in the background (a broker that is down or cut off) is
    said again, on a fresh DEALER, this long after the last one went
    unanswered. */
#define HELLO_AGAIN_MS 2000

/*  A replica that does not lead and knows no leader (an election is under
    way) is asked again, or the next replica is, this long after (4.16);
    a session following a group says HELLO to the next replica this long
    after one went unanswered. */
#define REPLICA_AGAIN_MS 250
#define REPLICA_HELLO_AGAIN_MS 500
/*  Redirections followed in one foreground HELLO, at most. */
#define REDIRECTS_MAX 32
#define REPLICA_HOP_MS 500 /* a replica named or next that does not answer: the next one */
/*  A group's broker heard from this recently is not asked whether its
    connection was lost (a read of the socket monitor). */
#define GROUP_QUIET_MS 100

struct aq_handshake_watch {
    void *socket;      /* the socket watched */
    zsock_t *monitor;
    aq_status_t status;
    int disconnected; /* the connection was lost (its broker's process died, say) */
    int broken;       /* a handshake failed, keys or not: the DEALER is given up */
};

struct aq_session {
    zsock_t *dealer;
    void *socket;
    aq_handshake_watch_t *watch; /* why a HELLO may go unanswered (CURVE) */
    aq_endpoint_t endpoint;
    char address[AQ_ENDPOINT_MAX]; /* as the user gave it, for messages */
    char client_id[AQ_NAME_MAX + 1];
    aq_welcome_t welcome;
    int welcomed;          /* a WELCOME came: BYE is worth sending */
    int hello_unanswered;  /* the last HELLO got no WELCOME: retry on a new DEALER */
    int no_service;        /* the broker refused HELLO's `with service`: before 2.2 */
    int64_t last_heard;    /* when the broker last sent anything */
    char hello_tag[AQ_TAG_MAX + 1]; /* a HELLO said in the background, until answered */
    int64_t hello_at;      /* when it was said */
    uint64_t next_tag;
    uint64_t producer_seq; /* sent in HELLO: first unconfirmed put, 0 if none */
    char tag[AQ_TAG_MAX + 1];
    aq_inbox_t *inbox;
    aq_error_t error;
    /*  The replicas of a group this session follows (4.16): the address
        given first, then those its leader lists; `target` is the one its
        DEALER connects to. */
    char targets[AQ_REPLICAS_MAX][AQ_ENDPOINT_MAX];
    size_t target_count, target;
};

static int s_has_tag(const aq_msg_t *msg, const char *tag);

static _Thread_local char s_last_error[AQ_TEXT_MAX + 2 * AQ_ENDPOINT_MAX];

const char *aq_last_error(void)
{
    return s_last_error;
}

void aq_last_error_set(const char *format, ...)
{
    va_list args;
    va_start(args, format);
    vsnprintf(s_last_error, sizeof s_last_error, format, args);
    va_end(args);
}

void aq_last_error_status(const char *address, aq_status_t status, const aq_session_t *session)
{
    if (status == AQ_OK)
        aq_last_error_set("%s", "");
    else if (status == AQ_BAD_ENDPOINT)
        aq_last_error_set("'%s' is not a broker address: HOST[:PORT], tcp://HOST:PORT or "
                          "ipc://PATH", address ? address : "(none)");
    else if (status == AQ_BAD_KEY)
        aq_last_error_set("%s", aq_security_error());
    else if (status == AQ_NOMEM)
        aq_last_error_set("%s", aq_strerror(status));
    else if (status == AQ_REFUSED && session) {
        const aq_error_t *error = aq_session_error(session);
        aq_last_error_set("the broker at '%s' refused: %s (%d): %s", address,
                          aq_status_name(error->code), error->code, error->text);
    }
    else
        aq_last_error_set("cannot reach the broker at '%s': %s", address, aq_strerror(status));
}

void aq_client_id_make(const char *name, char *buf, size_t size)
{
    char clean[AQ_NAME_MAX - 13 + 1];
    size_t length = 0;
    for (const char *c = name ? name : "client"; *c && length < sizeof clean - 1; c++) {
        uint8_t byte = (uint8_t) *c;
        clean[length++] = aq_name_is_valid(&byte, 1) ? *c : '_';
    }
    clean[length] = '\0';
    zuuid_t *uuid = zuuid_new();
    snprintf(buf, size, "%s-%.12s", length ? clean : "client",
             uuid ? zuuid_str_canonical(uuid) + 24 : "000000000000");
    zuuid_destroy(&uuid);
}

int64_t aq_deadline_at(int timeout_ms)
{
    return timeout_ms < 0 ? -1 : zclock_mono() + timeout_ms;
}


int aq_deadline_left(int64_t deadline)
{
    if (deadline < 0)
        return -1;
    int64_t remaining = deadline - zclock_mono();
    return remaining > 0 ? (int) remaining : 0;
}

aq_handshake_watch_t *aq_handshake_watch_new(void *zsock)
{
    aq_handshake_watch_t *self = calloc(1, sizeof *self);
    if (!self)
        return NULL;
    /* Named by a counter, not by the socket's address: a new socket can
       get the address of one just closed, whose monitor endpoint libzmq
       may not have unbound yet (the bind would fail, and no watch). */
    static atomic_uint s_watches;
    char endpoint[64];
    snprintf(endpoint, sizeof endpoint, "inproc://asyncq-handshake-%u",
             atomic_fetch_add(&s_watches, 1));
    int events = ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL | ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL
                 | ZMQ_EVENT_HANDSHAKE_FAILED_AUTH | ZMQ_EVENT_DISCONNECTED;
    if (zmq_socket_monitor(zsock_resolve(zsock), endpoint, events) == 0) {
        self->socket = zsock_resolve(zsock);
        self->monitor = zsock_new(ZMQ_PAIR);
    }
    if (!self->monitor || zsock_connect(self->monitor, "%s", endpoint) != 0)
        aq_handshake_watch_destroy(&self);
    return self;
}

/*  A refused key is a ZAP failure (AUTH); a wrong server key makes the
    broker unable to read the client's HELLO box: a protocol failure. A
    client without keys meeting a CURVE broker fails on the mechanism: a
    protocol failure too. */
aq_status_t aq_handshake_watch_status(aq_handshake_watch_t *self)
{
    if (!self)
        return AQ_OK;
    zmsg_t *event;
    while ((event = zmsg_recv_nowait(self->monitor))) {
        zframe_t *frame = zmsg_first(event);
        uint16_t id = 0;
        if (frame && zframe_size(frame) >= 2)
            memcpy(&id, zframe_data(frame), 2);
        if (id == ZMQ_EVENT_DISCONNECTED) {
            self->disconnected = 1;
        }
        else {
            self->broken = 1;
            /* Without keys, a failure with no detail is a connection lost
               during the handshake (its broker dying): nothing about keys,
               which a CURVE broker's refusal of the mechanism says. */
            if (id == ZMQ_EVENT_HANDSHAKE_FAILED_AUTH)
                self->status = AQ_KEY_REFUSED;
            else if (self->status == AQ_OK && aq_security_enabled())
                self->status = AQ_KEY_MISMATCH;
            else if (self->status == AQ_OK && id == ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL)
                self->status = AQ_KEY_REQUIRED;
        }
        zmsg_destroy(&event);
    }
    return self->status;
}

/*  A handshake failed (a key status is set then too): the DEALER is given
    up. And: the connection was lost. Both read the events first. */
static int s_watch_broken(aq_handshake_watch_t *self)
{
    aq_handshake_watch_status(self);
    return self && self->broken;
}

static int s_watch_lost(aq_handshake_watch_t *self)
{
    aq_handshake_watch_status(self);
    return self && self->disconnected;
}

void aq_handshake_watch_destroy(aq_handshake_watch_t **self_p)
{
    aq_handshake_watch_t *self = *self_p;
    if (!self)
        return;
    /* Monitoring stops first: libzmq sends an event (a DISCONNECTED as
       the socket closes) blocking, and with no reader left that send
       would stop the I/O thread of every socket of the process. */
    if (self->socket)
        zmq_socket_monitor(self->socket, NULL, 0);
    zsock_destroy(&self->monitor);
    free(self);
    *self_p = NULL;
}

static aq_status_t s_connect(aq_session_t *self)
{
    aq_handshake_watch_destroy(&self->watch);
    zsock_destroy(&self->dealer);
    self->dealer = zsock_new(ZMQ_DEALER);
    if (!self->dealer)
        return AQ_NOMEM;
    aq_security_apply(self->dealer);
    self->watch = aq_handshake_watch_new(self->dealer);
    char router[AQ_ENDPOINT_MAX];
    aq_endpoint_router(&self->endpoint, router, sizeof router);
    self->socket = zsock_resolve(self->dealer);
    return zsock_connect(self->dealer, "%s", router) == 0 ? AQ_OK : AQ_BAD_ENDPOINT;
}

static void s_copy_text(char *dest, size_t size, aq_bytes_t bytes)
{
    size_t length = bytes.size < size - 1 ? bytes.size : size - 1;
    memcpy(dest, bytes.data, length);
    dest[length] = '\0';
}

/*  A replica of the group, known from now on (its index). */
static size_t s_add_target(aq_session_t *self, const char *address)
{
    for (size_t i = 0; i < self->target_count; i++)
        if (strcmp(self->targets[i], address) == 0)
            return i;
    aq_endpoint_t endpoint;
    if (!address[0] || self->target_count == AQ_REPLICAS_MAX
        || aq_endpoint_parse(address, 0, &endpoint) != AQ_OK)
        return self->target;
    snprintf(self->targets[self->target_count], AQ_ENDPOINT_MAX, "%s", address);
    return self->target_count++;
}

/*  Each replica of `list` (addresses separated by `separator`), known
    from now on. */
static void s_add_targets(aq_session_t *self, const char *list, char separator)
{
    const char separators[] = {separator, '\0'};
    for (const char *at = list; *at;) {
        size_t length = strcspn(at, separators);
        char entry[AQ_ENDPOINT_MAX];
        snprintf(entry, sizeof entry, "%.*s", (int) (length < sizeof entry ? length : 0), at);
        s_add_target(self, entry);
        at += length + (at[length] == separator);
    }
}

/*  The next HELLO goes to replica `index`, on a fresh DEALER. */
static void s_retarget(aq_session_t *self, size_t index)
{
    aq_endpoint_t endpoint;
    if (index >= self->target_count
        || aq_endpoint_parse(self->targets[index], 0, &endpoint) != AQ_OK)
        return;
    self->target = index;
    self->endpoint = endpoint;
    self->hello_unanswered = 1;
}

/*  A replica answered 421 (4.16): to the leader it names, or on to the
    next replica. 1 if the leader was named. */
static int s_follow(aq_session_t *self, aq_bytes_t leader)
{
    char address[AQ_ENDPOINT_MAX];
    s_copy_text(address, sizeof address, leader);
    if (address[0]) {
        s_retarget(self, s_add_target(self, address));
        return 1;
    }
    s_retarget(self, (self->target + 1) % (self->target_count ? self->target_count : 1));
    return 0;
}

static void s_keep_welcome(aq_session_t *self, const aq_msg_t *reply)
{
    self->welcome.max_item = reply->max_item;
    self->welcome.heartbeat_ms = reply->heartbeat_ms;
    self->welcome.max_batch = reply->batch_max ? reply->batch_max : 1;
    self->welcome.window = reply->window ? reply->window : 1;
    self->welcome.window_bytes = reply->window_bytes;
    s_copy_text(self->welcome.roles, sizeof self->welcome.roles, reply->text);
    s_copy_text(self->welcome.persistence, sizeof self->welcome.persistence, reply->persistence);
    s_copy_text(self->welcome.broker_id, sizeof self->welcome.broker_id, reply->broker);
    /* "shard=K [replicas=A,B,C ]brokers=A,B,C[ groups=A|B|C,D|E|F]" (4.15, 4.16),
       keys this client does not know ignored; a broker before 2.2 says
       nothing: shard 0, alone. */
    char service[AQ_TEXT_MAX + 1];
    s_copy_text(service, sizeof service, reply->service);
    unsigned shard = 0;
    self->welcome.brokers[0] = self->welcome.replicas[0] = self->welcome.groups[0] = '\0';
    for (char *word = strtok(service, " "); word; word = strtok(NULL, " ")) {
        if (strncmp(word, "shard=", 6) == 0)
            sscanf(word + 6, "%u", &shard);
        else if (strncmp(word, "brokers=", 8) == 0)
            snprintf(self->welcome.brokers, sizeof self->welcome.brokers, "%s", word + 8);
        else if (strncmp(word, "replicas=", 9) == 0)
            snprintf(self->welcome.replicas, sizeof self->welcome.replicas, "%s", word + 9);
        else if (strncmp(word, "groups=", 7) == 0)
            snprintf(self->welcome.groups, sizeof self->welcome.groups, "%s", word + 7);
    }
    self->welcome.shard = (int) shard;
    self->welcomed = 1;
    s_add_targets(self, self->welcome.replicas, ','); /* where to look for the next leader */
}

/*  The host of a tcp endpoint as the resolver takes it: without the
    brackets of an IPv6 address. 0 if the endpoint has no host to resolve
    (ipc, or a source address "IFACE;HOST" that ZeroMQ reads itself). */
static int s_host(const aq_endpoint_t *endpoint, char *host, size_t size)
{
    if (endpoint->is_ipc || strchr(endpoint->host, ';'))
        return 0;
    const char *name = endpoint->host;
    size_t length = strlen(name);
    if (length >= 2 && name[0] == '[' && name[length - 1] == ']') {
        name++;
        length -= 2;
    }
    if (length >= size)
        return 0;
    memcpy(host, name, length);
    host[length] = '\0';
    return 1;
}

/*  ZeroMQ resolves a host name in the background and retries for ever: a
    name that does not resolve would look like a broker that never answers.
    Resolving it here first reports it at once, with the resolver's cause. */
static aq_status_t s_resolve(aq_session_t *self)
{
    char host[sizeof self->endpoint.host];
    if (!s_host(&self->endpoint, host, sizeof host))
        return AQ_OK;
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    struct addrinfo *found = NULL;
    int rc = getaddrinfo(host, NULL, &hints, &found);
    if (found)
        freeaddrinfo(found);
    if (rc == 0)
        return AQ_OK;
    aq_last_error_set("cannot reach the broker at '%s': the host name '%s' does not resolve: %s",
                      self->address, host,
                      rc == EAI_SYSTEM ? strerror(errno) : gai_strerror(rc));
    return AQ_UNREACHABLE;
}

/*  One non-blocking connect to `addr`: 0 if it connected, the errno it
    failed with, or -1 if it did not finish within timeout_ms. */
static int s_probe_one(const struct sockaddr *addr, socklen_t length, int timeout_ms)
{
    int fd = socket(addr->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return errno;
    int error = 0;
    if (connect(fd, addr, length) != 0) {
        error = errno;
        if (error == EINPROGRESS) {
            struct pollfd out = {.fd = fd, .events = POLLOUT};
            socklen_t size = sizeof error;
            if (poll(&out, 1, timeout_ms) != 1)
                error = -1;
            else if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &size) != 0)
                error = errno;
        }
    }
    close(fd);
    return error;
}

/*  Whether anything listens at the broker's ROUTER: ZeroMQ retries a
    refused connection for ever and says nothing, so a connect is made here
    once, to learn it and why. The errno of the failure (ECONNREFUSED,
    ENOENT for an ipc path...), or 0 if it connected or did not finish in
    time (then the HELLO waits on). */
static int s_probe(const aq_session_t *self, int timeout_ms)
{
    if (timeout_ms < 0 || timeout_ms > PROBE_MAX_MS)
        timeout_ms = PROBE_MAX_MS;
    if (self->endpoint.is_ipc) {
        struct sockaddr_un addr = {.sun_family = AF_UNIX};
        int length = snprintf(addr.sun_path, sizeof addr.sun_path, "%s.router",
                              self->endpoint.path);
        if (length < 0 || (size_t) length >= sizeof addr.sun_path)
            return 0;
        int error = s_probe_one((const struct sockaddr *) &addr, sizeof addr, timeout_ms);
        return error > 0 ? error : 0;
    }
    char host[sizeof self->endpoint.host], port[16];
    if (!s_host(&self->endpoint, host, sizeof host))
        return 0;
    snprintf(port, sizeof port, "%d", self->endpoint.port + 1);
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    struct addrinfo *found = NULL;
    if (getaddrinfo(host, port, &hints, &found) != 0)
        return 0;
    /* Refused only if every address refuses ("localhost" may be ::1 and
       127.0.0.1, and the broker listen on one of them). */
    int refused = 0;
    for (struct addrinfo *at = found; at; at = at->ai_next) {
        int error = s_probe_one(at->ai_addr, at->ai_addrlen, timeout_ms);
        if (error <= 0) {
            refused = 0;
            break;
        }
        refused = error;
    }
    freeaddrinfo(found);
    return refused;
}

/*  Sends HELLO; its tag is self->tag. */
static aq_status_t s_send_hello(aq_session_t *self)
{
    /* ZeroMQ queues messages for a broker that is down: a pile of old HELLOs
       reaching a broker that comes back would each start a session again,
       after this client's later requests. A fresh DEALER leaves them. One
       is needed too after a failed CURVE handshake: libzmq gives that
       connection up for good, so a HELLO on the old DEALER never leaves. */
    if (self->hello_unanswered || s_watch_broken(self->watch)) {
        zsock_set_linger(self->dealer, 0);
        aq_status_t rc = s_connect(self);
        if (rc)
            return rc;
    }
    self->hello_unanswered = 1;
    self->hello_tag[0] = '\0';
    aq_msg_t hello = {.cmd = AQ_CMD_HELLO};
    hello.client = aq_bytes_str(self->client_id);
    hello.seq = self->producer_seq;
    if (!self->no_service)
        hello.with = aq_bytes_str("service");
    return aq_session_request(self, &hello);
}

/*  Sends HELLO and waits for WELCOME. With `fail_fast` (the first HELLO of
    a session), nothing listening at the address is reported at once, with
    its cause, rather than after the whole timeout. */
static aq_status_t s_hello(aq_session_t *self, int timeout_ms, int fail_fast)
{
    aq_status_t rc = s_send_hello(self);
    if (rc)
        return rc;
    char tag[AQ_TAG_MAX + 1];
    snprintf(tag, sizeof tag, "%s", self->tag);
    aq_msg_t reply;
    int64_t deadline = aq_deadline_at(timeout_ms);
    if (fail_fast && (timeout_ms < 0 || timeout_ms > PROBE_AFTER_MS)) {
        /* A broker answers at once: no WELCOME by now, and nothing
           listening there, is a connection refused, said now rather than
           after the whole wait. */
        rc = aq_session_await(self, tag, &reply, PROBE_AFTER_MS, NULL, NULL);
        if (rc == AQ_TIMEOUT && !aq_handshake_watch_status(self->watch)) {
            int error = s_probe(self, aq_deadline_left(deadline));
            if (error) {
                aq_last_error_set("cannot reach the broker at '%s': nothing listens there: %s",
                                  self->address, strerror(error));
                return AQ_UNREACHABLE;
            }
        }
    }
    else
        rc = AQ_TIMEOUT;
    if (rc == AQ_TIMEOUT)
        rc = aq_session_await(self, tag, &reply, aq_deadline_left(deadline), NULL, NULL);
    if (rc == AQ_TIMEOUT) {
        aq_status_t handshake = aq_handshake_watch_status(self->watch);
        if (!handshake && fail_fast)
            aq_last_error_set("cannot reach the broker at '%s': no answer within %.1f s",
                              self->address, timeout_ms / 1000.0);
        return handshake ? handshake : AQ_UNREACHABLE;
    }
    if (rc == AQ_OK && reply.cmd == AQ_CMD_WELCOME) {
        s_keep_welcome(self, &reply);
        self->hello_unanswered = 0;
        return AQ_OK;
    }
    if (rc == AQ_REFUSED && self->error.code == AQ_MALFORMED && !self->no_service) {
        /* A broker before 2.2 takes no `with`: it is alone (4.15). */
        self->no_service = 1;
        self->hello_unanswered = 0;
        return s_hello(self, aq_deadline_left(deadline), fail_fast);
    }
    if (rc == AQ_REFUSED && self->error.code == AQ_NOT_LEADER) {
        /* A replica that does not lead (4.16): its leader next, or the
           next replica a little later; one that does not answer within a
           hop (a leader just gone, whose followers still name it) is
           passed over for the next; all within the time left. */
        for (int hops = 0; hops < REDIRECTS_MAX && aq_deadline_left(deadline); hops++) {
            int left = aq_deadline_left(deadline);
            if (rc == AQ_INTERRUPTED || zsys_interrupted)
                return AQ_INTERRUPTED;
            if (rc == AQ_REFUSED && self->error.code == AQ_NOT_LEADER) {
                /* zmq_poll with no items: a sleep that a signal ends */
                if (!s_follow(self, aq_bytes_str(self->error.subject))
                    && zmq_poll(NULL, 0, left >= 0 && left < REPLICA_AGAIN_MS ? left
                                                                              : REPLICA_AGAIN_MS)
                           < 0
                    && errno == EINTR)
                    return AQ_INTERRUPTED;
            }
            else if (rc == AQ_REFUSED || rc == AQ_OK)
                break; /* led, or refused for another cause */
            else
                s_retarget(self, (self->target + 1) % self->target_count);
            left = aq_deadline_left(deadline);
            rc = s_hello(self, left >= 0 && left < REPLICA_HOP_MS ? left : REPLICA_HOP_MS, 0);
        }
        /* Hops spent, or the time, with no leader: still told 421 is no
           leader too. */
        if (rc != AQ_OK && (rc != AQ_REFUSED || self->error.code == AQ_NOT_LEADER)) {
            char known[AQ_TEXT_MAX] = "";
            for (size_t i = 0, at = 0; i < self->target_count && at < sizeof known; i++)
                at += (size_t) snprintf(known + at, sizeof known - at, "%s%s", i ? ", " : "",
                                        self->targets[i]);
            aq_last_error_set("no leader of the group of replicas %s answered within %.1f s",
                              known, timeout_ms / 1000.0);
            rc = AQ_UNREACHABLE;
        }
        return rc;
    }
    return rc ? rc : AQ_MALFORMED;
}

aq_status_t aq_session_hello(aq_session_t *self, int timeout_ms)
{
    /* A group's replica whose connection was lost, or that left the last
       HELLO unanswered (a leader stopped or dead): the next replica is
       asked, which leads or names the one that does. */
    if (self->target_count > 1 && (self->hello_unanswered || aq_session_lost(self)))
        s_retarget(self, (self->target + 1) % self->target_count);
    return s_hello(self, timeout_ms, 0);
}

/*  `rotate`: a group's leader gone silent, or a replica that did not
    answer, makes the next replica the one asked (it names the leader, or
    leads). */
static aq_status_t s_hello_begin(aq_session_t *self, int rotate)
{
    if (rotate && self->target_count > 1
        && (self->hello_unanswered || aq_session_broker_silent(self)))
        s_retarget(self, (self->target + 1) % self->target_count);
    aq_status_t rc = s_send_hello(self);
    if (!rc)
        snprintf(self->hello_tag, sizeof self->hello_tag, "%s", self->tag);
    self->hello_at = zclock_mono();
    return rc;
}

aq_status_t aq_session_hello_begin(aq_session_t *self)
{
    return s_hello_begin(self, 1);
}

/*  When the HELLO said in the background is due again, if one is waiting. */
static int64_t s_hello_again_at(const aq_session_t *self)
{
    return self->hello_at + (self->target_count > 1 ? REPLICA_HELLO_AGAIN_MS : HELLO_AGAIN_MS);
}

int aq_session_hello_due(const aq_session_t *self)
{
    if (self->hello_tag[0] || self->hello_unanswered)
        return zclock_mono() >= s_hello_again_at(self);
    return aq_session_broker_silent(self);
}

int aq_session_slice(const aq_session_t *self, int left)
{
    int slice = (int) self->welcome.heartbeat_ms;
    if (self->hello_tag[0] || self->hello_unanswered) {
        /* One already due is the caller's to say again: no shorter wait. */
        int64_t due = s_hello_again_at(self) - zclock_mono();
        if (due > 0 && (!slice || due < slice))
            slice = (int) due;
    }
    return slice && (left < 0 || left > slice) ? slice : left;
}

int aq_session_answers(aq_session_t *self)
{
    if (self->hello_unanswered) {
        /* Only its HELLO's answer (or heartbeats) can have come: read. */
        aq_msg_t msg;
        aq_status_t rc = AQ_OK;
        while (self->hello_unanswered && (rc == AQ_OK || rc == AQ_REFUSED))
            rc = aq_session_recv(self, &msg, 0);
        if (self->hello_unanswered && aq_session_hello_due(self))
            aq_session_hello_begin(self);
    }
    return !self->hello_unanswered;
}

int aq_session_is_up(const aq_session_t *self)
{
    return self->welcomed && !self->hello_unanswered && !aq_session_broker_silent(self);
}

/*  The answer to a HELLO said in the background: a WELCOME is kept and
    handed on (the caller sends again what the new session needs); a
    broker before 2.2 is asked again without `service`; another refusal
    is handed on as AQ_REFUSED, and the HELLO said again later. 1 if the
    message was that answer and nothing is to be handed on. */
static int s_on_hello_answer(aq_session_t *self, const aq_msg_t *msg)
{
    self->hello_tag[0] = '\0';
    if (msg->cmd == AQ_CMD_WELCOME) {
        s_keep_welcome(self, msg);
        self->hello_unanswered = 0;
        return 0;
    }
    if (msg->cmd == AQ_CMD_ERROR && msg->code == AQ_MALFORMED && !self->no_service) {
        self->no_service = 1;
        self->hello_unanswered = 0; /* the same DEALER: it was answered */
        aq_session_hello_begin(self);
        return 1;
    }
    if (msg->cmd == AQ_CMD_ERROR && msg->code == AQ_NOT_LEADER) {
        /* To the leader named, at once; or the next replica, soon. */
        if (msg->subject.size && s_follow(self, msg->subject))
            s_hello_begin(self, 0);
        else /* the next replica, from aq_session_hello_begin */
            self->hello_at = zclock_mono() - REPLICA_HELLO_AGAIN_MS + REPLICA_AGAIN_MS;
        return 1;
    }
    return 0;
}

/*  The end of an opening: *status, and aq_last_error() on failure. */
static aq_session_t *s_done(aq_session_t *self, const char *address, aq_status_t rc,
                            aq_status_t *status)
{
    if (rc && !aq_last_error()[0])
        aq_last_error_status(address, rc, self);
    if (rc)
        aq_session_drop(&self);
    if (status)
        *status = rc;
    return self;
}

/*  A session not yet opened: the address parsed and resolved, the DEALER
    connected. NULL, with *status, if it cannot be. */
static aq_session_t *s_prepare(const char *address, const char *client_id, uint64_t producer_seq,
                               int resolve, aq_status_t *status)
{
    aq_last_error_set("%s", "");
    aq_session_t *self = calloc(1, sizeof *self);
    aq_status_t rc = self ? aq_security_status() : AQ_NOMEM;
    if (!rc) {
        snprintf(self->address, sizeof self->address, "%s", address ? address : "");
        self->producer_seq = producer_seq;
        rc = aq_endpoint_parse(address, 0, &self->endpoint);
        if (!rc) {
            snprintf(self->targets[0], AQ_ENDPOINT_MAX, "%s", self->address);
            self->target_count = 1;
        }
    }
    if (!rc && !aq_name_is_valid((const uint8_t *) client_id, strlen(client_id))) {
        rc = AQ_MALFORMED;
        aq_last_error_set("'%s' is not a valid client id: 1 to %d of A-Z a-z 0-9 . _ : -",
                          client_id, AQ_NAME_MAX);
    }
    if (!rc && resolve)
        rc = s_resolve(self);
    if (!rc) {
        strcpy(self->client_id, client_id);
        self->inbox = aq_inbox_new(AQ_REPORT_FRAMES_MAX);
        rc = self->inbox ? s_connect(self) : AQ_NOMEM;
    }
    return s_done(self, address, rc, status);
}

aq_session_t *aq_session_open(const char *address, const char *client_id, uint64_t producer_seq,
                              int timeout_ms, aq_status_t *status)
{
    aq_session_t *self = s_prepare(address, client_id, producer_seq, 1, status);
    return self ? s_done(self, address, s_hello(self, timeout_ms, 1), status) : NULL;
}

aq_session_t *aq_session_open_later(const char *address, const char *client_id,
                                    uint64_t producer_seq, const aq_welcome_t *like, int shard,
                                    const char *group, aq_status_t *status)
{
    /* ZeroMQ resolves its name when it can: a host that is gone may be
       back, under its name, later. */
    aq_session_t *self = s_prepare(address, client_id, producer_seq, 0, status);
    if (!self)
        return NULL;
    self->welcome = *like;
    self->welcome.shard = shard;
    self->welcome.broker_id[0] = '\0';
    self->welcome.brokers[0] = self->welcome.replicas[0] = self->welcome.groups[0] = '\0';
    s_add_targets(self, group ? group : "", '|'); /* asked in turn while none answers */
    aq_session_hello_begin(self); /* a failure here is tried again, as a silence */
    return self;
}

aq_session_t *aq_session_new(const char *address, const char *name, int timeout_ms,
                             aq_status_t *status)
{
    char client_id[AQ_NAME_MAX + 1];
    aq_client_id_make(name ? name : "client", client_id, sizeof client_id);
    return aq_session_open(address, client_id, 0, timeout_ms, status);
}

void aq_session_destroy(aq_session_t **self_p)
{
    aq_session_t *self = *self_p;
    if (!self)
        return;
    if (self->dealer && self->welcomed) {
        aq_msg_t bye = {.cmd = AQ_CMD_BYE};
        zsock_set_linger(self->dealer, 1000);
        aq_session_request(self, &bye);
    }
    aq_handshake_watch_destroy(&self->watch);
    zsock_destroy(&self->dealer);
    aq_inbox_destroy(&self->inbox);
    free(self);
    *self_p = NULL;
}

void aq_session_drop(aq_session_t **self_p)
{
    if (*self_p) {
        (*self_p)->welcomed = 0;
        if ((*self_p)->dealer)
            zsock_set_linger((*self_p)->dealer, 0);
    }
    aq_session_destroy(self_p);
}

aq_status_t aq_session_send(aq_session_t *self, const aq_msg_t *msg)
{
    /* A DEALER whose CURVE handshake failed (its key refused or revoked, a
       wrong broker key) has no pipe left: libzmq does not reconnect after a
       handshake failure, and a blocking send would wait for ever. Blocking
       is kept for a full pipe, which the broker empties. */
    aq_status_t rc = aq_msg_send(self->socket, NULL, msg, NULL, ZMQ_DONTWAIT);
    if (rc != AQ_TRANSPORT || errno != EAGAIN)
        return rc;
    aq_status_t handshake = aq_handshake_watch_status(self->watch);
    return handshake != AQ_OK ? handshake : aq_msg_send(self->socket, NULL, msg, NULL, 0);
}

aq_status_t aq_session_request(aq_session_t *self, aq_msg_t *msg)
{
    msg->tag = aq_bytes_str(aq_session_next_tag(self));
    return aq_session_send(self, msg);
}

void *aq_session_watch_socket(aq_session_t *self)
{
    return self->target_count > 1 && self->watch ? zsock_resolve(self->watch->monitor) : NULL;
}

int aq_session_watch_read(aq_session_t *self)
{
    return s_watch_lost(self->watch);
}

int aq_session_lost(const aq_session_t *self)
{
    return self->target_count > 1 && self->watch && self->watch->disconnected;
}

/*  Waits for the DEALER, and with `watching` for the socket monitor of a
    group's replica too: a lost connection ends the wait (AQ_TIMEOUT). */
static aq_status_t s_recv(aq_session_t *self, aq_msg_t *msg, int timeout_ms, int watching)
{
    int64_t deadline = aq_deadline_at(timeout_ms);
    for (;;) {
        /* A message already here is read without a poll: zmq_poll makes
           system calls every time, a receive only when nothing is queued.
           The poll is for waiting. */
        aq_status_t rc = aq_inbox_recv(self->inbox, self->socket, 0, ZMQ_DONTWAIT);
        if (rc == AQ_TIMEOUT) {
            int left = aq_deadline_left(deadline);
            if (left == 0 || (watching && aq_session_lost(self)))
                return AQ_TIMEOUT; /* lost: read once what it sent, then given up */
            /* Both asked again each time: an answer to a HELLO read here
               can have replaced the DEALER and its monitor. */
            void *monitor = watching ? aq_session_watch_socket(self) : NULL;
            zmq_pollitem_t items[2] = {{self->socket, 0, ZMQ_POLLIN, 0},
                                       {monitor, 0, ZMQ_POLLIN, 0}};
            int ready = zmq_poll(items, monitor ? 2 : 1, left);
            if (ready < 0)
                return errno == EINTR ? AQ_INTERRUPTED : AQ_TRANSPORT;
            if (ready == 0)
                return AQ_TIMEOUT;
            if (items[1].revents & ZMQ_POLLIN)
                aq_session_watch_read(self);
            continue;
        }
        if (rc)
            return rc;
        self->last_heard = zclock_mono();
        rc = aq_inbox_decode(self->inbox, msg);
        if (rc)
            return rc;
        if (self->hello_tag[0] && s_has_tag(msg, self->hello_tag) && s_on_hello_answer(self, msg))
            continue;
        if (msg->cmd == AQ_CMD_HEARTBEAT) {
            /* Answered at once: the broker learns that this client reads.
               The connection's events are read now and then too, so that
               they never fill the monitor's pipe (whose blocked send
               would stop libzmq's I/O thread). */
            aq_session_send(self, msg);
            aq_handshake_watch_status(self->watch);
            continue;
        }
        if (msg->cmd == AQ_CMD_ERROR) {
            self->error.code = (int) msg->code;
            s_copy_text(self->error.tag, sizeof self->error.tag, msg->tag);
            s_copy_text(self->error.subject, sizeof self->error.subject, msg->subject);
            s_copy_text(self->error.text, sizeof self->error.text, msg->text);
            return AQ_REFUSED;
        }
        return AQ_OK;
    }
}

aq_status_t aq_session_recv(aq_session_t *self, aq_msg_t *msg, int timeout_ms)
{
    return s_recv(self, msg, timeout_ms, 0);
}

aq_status_t aq_session_recv_watching(aq_session_t *self, aq_msg_t *msg, int timeout_ms)
{
    return s_recv(self, msg, timeout_ms, 1);
}

static int s_has_tag(const aq_msg_t *msg, const char *tag)
{
    switch (msg->cmd) {
    case AQ_CMD_ITEM: case AQ_CMD_ITEMS: case AQ_CMD_HEARTBEAT: case AQ_CMD_HELD:
        return 0; /* not replies (HELD is a notice, before the SYNCED) */
    default:
        return msg->tag.size == strlen(tag) && memcmp(msg->tag.data, tag, msg->tag.size) == 0;
    }
}

static aq_status_t s_await(aq_session_t *self, const char *tag, aq_msg_t *reply,
                           int timeout_ms, aq_session_other_fn *other, void *ctx, int watching)
{
    int64_t deadline = aq_deadline_at(timeout_ms);
    for (;;) {
        aq_status_t rc = s_recv(self, reply, aq_deadline_left(deadline), watching);
        if (rc == AQ_TIMEOUT || rc == AQ_INTERRUPTED || rc == AQ_TRANSPORT)
            return rc;
        if ((rc == AQ_OK || rc == AQ_REFUSED) && s_has_tag(reply, tag))
            return rc;
        if (other)
            other(ctx, reply, rc);
    }
}

aq_status_t aq_session_await(aq_session_t *self, const char *tag, aq_msg_t *reply,
                             int timeout_ms, aq_session_other_fn *other, void *ctx)
{
    return s_await(self, tag, reply, timeout_ms, other, ctx, 0);
}

aq_status_t aq_session_await_watching(aq_session_t *self, const char *tag, aq_msg_t *reply,
                                      int timeout_ms)
{
    return s_await(self, tag, reply, timeout_ms, NULL, NULL, 1);
}

const char *aq_session_next_tag(aq_session_t *self)
{
    aq_format_u64(++self->next_tag, self->tag);
    return self->tag;
}

const aq_error_t *aq_session_error(const aq_session_t *self)
{
    return &self->error;
}

const aq_welcome_t *aq_session_welcome(const aq_session_t *self)
{
    return &self->welcome;
}

const aq_endpoint_t *aq_session_endpoint(const aq_session_t *self)
{
    return &self->endpoint;
}

const char *aq_session_address(const aq_session_t *self)
{
    return self->address;
}

void aq_session_set_producer_seq(aq_session_t *self, uint64_t seq)
{
    self->producer_seq = seq;
}

const char *aq_session_client_id(const aq_session_t *self)
{
    return self->client_id;
}

int aq_session_broker_silent(const aq_session_t *self)
{
    /* Three missed heartbeats, as the ZeroMQ guide's Paranoid Pirate. A
       message waiting unread is not missed: a client busy elsewhere has
       not heard it yet. */
    if (!self->welcome.heartbeat_ms)
        return 0;
    int64_t quiet = zclock_mono() - self->last_heard;
    /* A group's leader whose connection was lost (its process died: the
       host closed its sockets) is silent at once: its group has another
       leader within an election time-out, and three heartbeats would keep
       the clients waiting longer (PROTOCOL.md 4.16). */
    int lost = aq_session_lost(self)
               || (self->target_count > 1 && quiet > GROUP_QUIET_MS && s_watch_lost(self->watch));
    if (!lost && quiet <= 3 * (int64_t) self->welcome.heartbeat_ms)
        return 0;
    zmq_pollitem_t unread = {self->socket, 0, ZMQ_POLLIN, 0};
    return zmq_poll(&unread, 1, 0) <= 0;
}

uint64_t aq_session_heartbeat_ms(const aq_session_t *self)
{
    return self->welcome.heartbeat_ms;
}

uint64_t aq_session_max_item(const aq_session_t *self)
{
    return self->welcome.max_item;
}

void *aq_session_socket(aq_session_t *self)
{
    return self->socket;
}
