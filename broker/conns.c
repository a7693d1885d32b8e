#include "conns.h"

#include <arpa/inet.h>
#include <errno.h>
#include <czmq.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

/*  A connection's life. libzmq reports a connection closed before the
    application has read the messages it sent last (a consumer's final ACK
    and BYE), so a closed connection keeps its verdict until its descriptor
    is reused on the same socket: LEFT (it was admitted: its last messages
    count) or SHUT (the broker closed it: they do not). */
typedef enum {
    CONN_FREE = 0, /* never seen */
    CONN_OPEN,     /* admitted, not greeted yet */
    CONN_GREETED,
    CONN_CLOSING,  /* closed by the broker, libzmq not done yet */
    CONN_LEFT,
    CONN_SHUT
} conn_state_t;

typedef struct {
    conn_state_t state;
    uint64_t stamp;     /* which connection of this descriptor: 1, 2, ... in order of ACCEPTED */
    int64_t deadline;   /* while OPEN */
    int prev, next;     /* in the list of OPEN connections, oldest first; -1 ends */
} conn_t;

/*  The table has one entry per descriptor and socket: a descriptor closed
    on one socket can be reused on the other before the first socket's
    monitor says so, and each socket's events come in order on its own
    monitor. Entry 2 * fd + socket. */
struct conns {
    conns_config_t config;
    zsock_t *monitors[2];
    conn_t *table;
    size_t size;        /* entries */
    int head, tail;     /* OPEN connections: deadlines in order, since all are equal */
    size_t count;
    uint64_t refused;
    uint64_t stamps;
};

static int s_start_monitor(conns_t *self, int index, void *socket)
{
    char endpoint[64];
    snprintf(endpoint, sizeof endpoint, "inproc://asyncq-monitor-%p", socket);
    if (zmq_socket_monitor(socket, endpoint, ZMQ_EVENT_ACCEPTED | ZMQ_EVENT_DISCONNECTED))
        return -1;
    self->monitors[index] = zsock_new(ZMQ_PAIR);
    if (!self->monitors[index])
        return -1;
    /* Unbounded: libzmq's I/O thread blocks on a full monitor pipe. */
    zsock_set_rcvhwm(self->monitors[index], 0);
    return zsock_connect(self->monitors[index], "%s", endpoint);
}

conns_t *conns_new(void *router, void *pull, const conns_config_t *config)
{
    conns_t *self = calloc(1, sizeof *self);
    if (!self)
        return NULL;
    self->config = *config;
    self->head = self->tail = -1;
    if (router && (s_start_monitor(self, 0, router) || s_start_monitor(self, 1, pull)))
        conns_destroy(&self);
    return self;
}

void conns_destroy(conns_t **self_p)
{
    conns_t *self = *self_p;
    if (!self)
        return;
    for (int i = 0; i < 2; i++)
        zsock_destroy(&self->monitors[i]);
    free(self->table);
    free(self);
    *self_p = NULL;
}

void *conns_monitor(conns_t *self, int index)
{
    return zsock_resolve(self->monitors[index]);
}

/*  The entry's index, or -1 if there is none (and, with `grow`, none can
    be made). */
static int s_index(conns_t *self, int socket, int fd, int grow)
{
    if (fd < 0 || fd > (INT32_MAX - 1) / 2)
        return -1;
    size_t index = (size_t) fd * 2 + (size_t) socket;
    if (index >= self->size) {
        if (!grow)
            return -1;
        size_t size = self->size ? self->size : 2048;
        while (size <= index)
            size *= 2;
        conn_t *table = realloc(self->table, size * sizeof *table);
        if (!table)
            return -1;
        memset(table + self->size, 0, (size - self->size) * sizeof *table);
        self->table = table;
        self->size = size;
    }
    return (int) index;
}

static conn_state_t s_state(conns_t *self, int socket, int fd)
{
    int index = s_index(self, socket, fd, 0);
    return index < 0 ? CONN_FREE : self->table[index].state;
}

static void s_unlink(conns_t *self, int index)
{
    conn_t *conn = &self->table[index];
    if (conn->prev >= 0)
        self->table[conn->prev].next = conn->next;
    else
        self->head = conn->next;
    if (conn->next >= 0)
        self->table[conn->next].prev = conn->prev;
    else
        self->tail = conn->prev;
    conn->prev = conn->next = -1;
}

void conns_peer_name(int fd, char *buf, size_t size)
{
    struct sockaddr_storage address;
    socklen_t length = sizeof address;
    char host[INET6_ADDRSTRLEN] = "?";
    if (getpeername(fd, (struct sockaddr *) &address, &length) != 0) {
        snprintf(buf, size, "fd %d", fd);
        return;
    }
    if (address.ss_family == AF_INET) {
        struct sockaddr_in *in = (struct sockaddr_in *) &address;
        inet_ntop(AF_INET, &in->sin_addr, host, sizeof host);
        snprintf(buf, size, "%s:%d", host, ntohs(in->sin_port));
    }
    else if (address.ss_family == AF_INET6) {
        struct sockaddr_in6 *in6 = (struct sockaddr_in6 *) &address;
        inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof host);
        snprintf(buf, size, "[%s]:%d", host, ntohs(in6->sin6_port));
    }
    else
        snprintf(buf, size, "ipc");
}

/*  1 if the peer of `fd` is on this host, 0 if not, -1 if the descriptor
    is no connection any more (closed since its event was sent). */
static int s_is_loopback(int fd)
{
    struct sockaddr_storage address;
    socklen_t length = sizeof address;
    if (getpeername(fd, (struct sockaddr *) &address, &length) != 0)
        return -1;
    if (address.ss_family == AF_UNIX)
        return 1;
    if (address.ss_family == AF_INET) {
        uint32_t ip = ntohl(((struct sockaddr_in *) &address)->sin_addr.s_addr);
        return (ip >> 24) == 127;
    }
    if (address.ss_family == AF_INET6) {
        const struct in6_addr *ip = &((struct sockaddr_in6 *) &address)->sin6_addr;
        if (IN6_IS_ADDR_LOOPBACK(ip))
            return 1;
        return IN6_IS_ADDR_V4MAPPED(ip) && ip->s6_addr[12] == 127;
    }
    return 0;
}

int conns_peer_host(int fd, char *buf, size_t size)
{
    if (fd < 0 || s_is_loopback(fd) != 0)
        return 0;
    conns_peer_name(fd, buf, size);
    char *colon = strrchr(buf, ':'); /* the port: "[::1]:80" keeps its brackets */
    if (colon)
        *colon = '\0';
    return 1;
}

/*  Closes the connection at `index` (descriptor `fd`) if it is open. */
static void s_close(conns_t *self, int index, int fd)
{
    conn_t *conn = &self->table[index];
    if (conn->state != CONN_OPEN && conn->state != CONN_GREETED)
        return;
    if (conn->state == CONN_OPEN)
        s_unlink(self, index);
    conn->state = CONN_CLOSING; /* until libzmq reports it closed */
    shutdown(fd, SHUT_RDWR);
}

static void s_refuse(conns_t *self, int index, int fd, const char *why)
{
    self->refused++;
    if (self->config.refused) {
        char peer[80];
        conns_peer_name(fd, peer, sizeof peer);
        self->config.refused(self->config.ctx, peer, why);
    }
    s_close(self, index, fd);
}

/*  The connection at `index` is over without its event having been read. */
static void s_forget(conns_t *self, int index)
{
    conn_t *conn = &self->table[index];
    if (conn->state != CONN_OPEN && conn->state != CONN_GREETED && conn->state != CONN_CLOSING)
        return;
    if (conn->state == CONN_OPEN)
        s_unlink(self, index);
    self->count--;
    conn->state = conn->state == CONN_CLOSING ? CONN_SHUT : CONN_LEFT;
}

static void s_on_accepted(conns_t *self, int socket, int fd, int64_t now_ms)
{
    int index = s_index(self, socket, fd, 1);
    if (index < 0) {
        shutdown(fd, SHUT_RDWR); /* cannot track it: cannot keep it */
        return;
    }
    /* The descriptor is this connection's now: any other connection that
       had it, on either socket, is over. */
    s_forget(self, index);
    int other = s_index(self, !socket, fd, 0);
    if (other >= 0)
        s_forget(self, other);
    self->count++;
    conn_t *conn = &self->table[index];
    *conn = (conn_t){.state = CONN_OPEN, .stamp = ++self->stamps,
                     .deadline = now_ms + self->config.hello_timeout_ms, .prev = self->tail,
                     .next = -1};
    if (self->tail >= 0)
        self->table[self->tail].next = index;
    else
        self->head = index;
    self->tail = index;
    if (self->count > self->config.max)
        s_refuse(self, index, fd, "too many connections (--max-connections)");
    else if (self->config.loopback_only && s_is_loopback(fd) == 0)
        s_refuse(self, index, fd,
                 "not from loopback: the broker has no keys; give it keys "
                 "(--curve-secret, --clients) or start it with --insecure");
    /* A descriptor that is no connection any more: this one closed before
       its event was read, and its DISCONNECTED follows. Refusing it would
       shut whatever has the descriptor now. */
}

static void s_on_disconnected(conns_t *self, int socket, int fd)
{
    int index = s_index(self, socket, fd, 0);
    if (index >= 0)
        s_forget(self, index);
}

/*  One event: a frame of u16 event and u32 value (the descriptor), then a
    frame with the endpoint. */
static int s_read_event(conns_t *self, int index, int64_t now_ms)
{
    if (!self->monitors[index])
        return 0;
    zmq_msg_t frame;
    zmq_msg_init(&frame);
    void *socket = zsock_resolve(self->monitors[index]);
    int rc;
    while ((rc = zmq_msg_recv(&frame, socket, ZMQ_DONTWAIT)) < 0 && errno == EINTR)
        ; /* read to the end: the broker polls the monitors by descriptor */
    if (rc < 0) {
        zmq_msg_close(&frame);
        return 0;
    }
    uint16_t event = 0;
    uint32_t value = 0;
    if (zmq_msg_size(&frame) == 6) {
        memcpy(&event, zmq_msg_data(&frame), 2);
        memcpy(&value, (char *) zmq_msg_data(&frame) + 2, 4);
    }
    while (zmq_msg_more(&frame))
        zmq_msg_recv(&frame, socket, 0);
    zmq_msg_close(&frame);
    if (event == ZMQ_EVENT_ACCEPTED)
        s_on_accepted(self, index, (int) value, now_ms);
    else if (event == ZMQ_EVENT_DISCONNECTED)
        s_on_disconnected(self, index, (int) value);
    return 1;
}

void conns_on_events(conns_t *self, int64_t now_ms)
{
    for (int index = 0; index < 2; index++)
        while (s_read_event(self, index, now_ms))
            ;
}

int conns_admitted(conns_t *self, int socket, int fd, int64_t now_ms)
{
    if (fd < 0)
        return 1; /* inproc, or a transport without descriptors: nothing to check */
    conn_state_t state = s_state(self, socket, fd);
    /* A connection's ACCEPTED is sent before its first message: if the
       entry is not a live connection, a new one may have the descriptor. */
    if (state != CONN_OPEN && state != CONN_GREETED) {
        conns_on_events(self, now_ms);
        state = s_state(self, socket, fd);
    }
    return state == CONN_OPEN || state == CONN_GREETED || state == CONN_LEFT;
}

const char *conns_state_name(conns_t *self, int socket, int fd)
{
    static const char *names[] = {"unknown", "open", "greeted", "closing", "left", "shut"};
    return names[s_state(self, socket, fd)];
}

uint64_t conns_greet(conns_t *self, int socket, int fd)
{
    int index = s_index(self, socket, fd, 0);
    if (index < 0)
        return 0;
    conn_t *conn = &self->table[index];
    if (conn->state == CONN_OPEN) {
        s_unlink(self, index);
        conn->state = CONN_GREETED;
    }
    return conn->stamp;
}

void conns_close(conns_t *self, int socket, int fd, uint64_t stamp, int64_t now_ms)
{
    /* Events first: the connection may be gone, and its descriptor another's. */
    conns_on_events(self, now_ms);
    int index = s_index(self, socket, fd, 0);
    if (index >= 0 && self->table[index].stamp == stamp)
        s_close(self, index, fd);
}

void conns_expire(conns_t *self, int64_t now_ms)
{
    if (self->head < 0 || self->table[self->head].deadline > now_ms)
        return;
    /* Descriptors closed meanwhile must not be mistaken for new ones. */
    conns_on_events(self, now_ms);
    while (self->head >= 0 && self->table[self->head].deadline <= now_ms)
        s_refuse(self, self->head, self->head / 2,
                 "no HELLO (or put) in time (--hello-timeout-ms)");
}

int64_t conns_next_deadline(const conns_t *self)
{
    return self->head >= 0 ? self->table[self->head].deadline : -1;
}

size_t conns_count(const conns_t *self)
{
    return self->count;
}

uint64_t conns_refused_total(const conns_t *self)
{
    return self->refused;
}
