#include "conns.h"

#include <arpa/inet.h>
#include <czmq.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

/*  A connection's life. libzmq reports a connection closed before the
    application has read the messages it sent last (a consumer's final ACK
    and BYE), so a closed connection keeps its verdict until its descriptor
    is reused: LEFT (it was admitted: its last messages count) or SHUT (the
    broker closed it: they do not). */
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
    int socket;         /* 0: ROUTER, 1: PULL (each has its own monitor) */
    int64_t deadline;   /* while OPEN */
    int prev, next;     /* in the list of OPEN connections, oldest first; -1 ends */
} conn_t;

struct conns {
    conns_config_t config;
    zsock_t *monitors[2];
    conn_t *table;      /* by descriptor */
    size_t size;
    int head, tail;     /* OPEN connections: deadlines in order, since all are equal */
    size_t count;
    uint64_t refused;
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

static conn_t *s_entry(conns_t *self, int fd)
{
    if (fd < 0)
        return NULL;
    if ((size_t) fd >= self->size) {
        size_t size = self->size ? self->size : 1024;
        while (size <= (size_t) fd)
            size *= 2;
        conn_t *table = realloc(self->table, size * sizeof *table);
        if (!table)
            return NULL;
        memset(table + self->size, 0, (size - self->size) * sizeof *table);
        self->table = table;
        self->size = size;
    }
    return &self->table[fd];
}

static void s_unlink(conns_t *self, int fd)
{
    conn_t *conn = &self->table[fd];
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

static int s_is_loopback(int fd)
{
    struct sockaddr_storage address;
    socklen_t length = sizeof address;
    if (getpeername(fd, (struct sockaddr *) &address, &length) != 0)
        return 0;
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

static void s_refuse(conns_t *self, int fd, const char *why)
{
    self->refused++;
    if (self->config.refused) {
        char peer[80];
        conns_peer_name(fd, peer, sizeof peer);
        self->config.refused(self->config.ctx, peer, why);
    }
    conns_close(self, fd);
}

/*  A descriptor closed on one socket can be reused by a connection on the
    other before the first socket's monitor says so: an event is about the
    entry only if it comes from the entry's socket. */
static void s_on_accepted(conns_t *self, int socket, int fd, int64_t now_ms)
{
    conn_t *conn = s_entry(self, fd);
    if (!conn) {
        shutdown(fd, SHUT_RDWR); /* cannot track it: cannot keep it */
        return;
    }
    if (conn->state == CONN_OPEN)
        s_unlink(self, fd); /* a close whose event we have not seen: start again */
    if (conn->state == CONN_FREE || conn->state == CONN_LEFT || conn->state == CONN_SHUT)
        self->count++;
    *conn = (conn_t){.state = CONN_OPEN, .socket = socket,
                     .deadline = now_ms + self->config.hello_timeout_ms, .prev = self->tail,
                     .next = -1};
    if (self->tail >= 0)
        self->table[self->tail].next = fd;
    else
        self->head = fd;
    self->tail = fd;
    if (self->count > self->config.max)
        s_refuse(self, fd, "too many connections (--max-connections)");
    else if (self->config.loopback_only && !s_is_loopback(fd))
        s_refuse(self, fd, "not from loopback: the broker has no keys; give it keys "
                           "(--curve-secret, --clients) or start it with --insecure");
}

static void s_on_disconnected(conns_t *self, int socket, int fd)
{
    if (fd < 0 || (size_t) fd >= self->size || self->table[fd].socket != socket)
        return;
    conn_t *conn = &self->table[fd];
    if (conn->state == CONN_FREE || conn->state == CONN_LEFT || conn->state == CONN_SHUT)
        return;
    if (conn->state == CONN_OPEN)
        s_unlink(self, fd);
    conn->state = conn->state == CONN_CLOSING ? CONN_SHUT : CONN_LEFT;
    self->count--;
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
    if (zmq_msg_recv(&frame, socket, ZMQ_DONTWAIT) < 0) {
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

int conns_admitted(conns_t *self, int fd, int64_t now_ms)
{
    if (fd < 0)
        return 1; /* inproc, or a transport without descriptors: nothing to check */
    if ((size_t) fd >= self->size || self->table[fd].state == CONN_FREE)
        conns_on_events(self, now_ms); /* its ACCEPTED was sent before its first message */
    if ((size_t) fd >= self->size)
        return 0;
    conn_state_t state = self->table[fd].state;
    return state == CONN_OPEN || state == CONN_GREETED || state == CONN_LEFT;
}

const char *conns_state_name(const conns_t *self, int fd)
{
    static const char *names[] = {"unknown", "open", "greeted", "closing", "left", "shut"};
    if (fd < 0 || (size_t) fd >= self->size)
        return "unknown";
    return names[self->table[fd].state];
}

void conns_greet(conns_t *self, int fd)
{
    if (fd < 0 || (size_t) fd >= self->size || self->table[fd].state != CONN_OPEN)
        return;
    s_unlink(self, fd);
    self->table[fd].state = CONN_GREETED;
}

void conns_close(conns_t *self, int fd)
{
    if (fd < 0 || (size_t) fd >= self->size)
        return;
    conn_t *conn = &self->table[fd];
    if (conn->state != CONN_OPEN && conn->state != CONN_GREETED)
        return;
    if (conn->state == CONN_OPEN)
        s_unlink(self, fd);
    conn->state = CONN_CLOSING; /* until libzmq reports it closed */
    shutdown(fd, SHUT_RDWR);
}

void conns_expire(conns_t *self, int64_t now_ms)
{
    if (self->head < 0 || self->table[self->head].deadline > now_ms)
        return;
    /* Descriptors closed meanwhile must not be mistaken for new ones. */
    conns_on_events(self, now_ms);
    while (self->head >= 0 && self->table[self->head].deadline <= now_ms)
        s_refuse(self, self->head, "no HELLO (or put) in time (--hello-timeout-ms)");
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
