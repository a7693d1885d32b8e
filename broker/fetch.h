/*  A minimal HTTP/1.1 client for the supervisor of --shards (service_http.c):
    one request to each of several servers at once, every answer read
    within one deadline. Strict and bounded: one request per connection
    (Connection: close); an answer's body is framed by Content-Length or
    chunked transfer coding, nothing else; a status line, headers or body
    out of form, or a body over `body_max`, is an error for that server
    alone, never a crash or a wait past the deadline. Blocking: it polls
    its own sockets, on the calling thread. */
#ifndef BROKER_FETCH_H
#define BROKER_FETCH_H

#include <stddef.h>
#include <sys/socket.h>

/*  The request line and headers of one answer, at most. */
#define FETCH_HEAD_MAX (16 * 1024)

typedef struct {
    /* Set by the caller. */
    struct sockaddr_storage address;
    socklen_t address_size;
    const char *request; /* the whole request, sent as it is */
    size_t request_size;
    const char *unreachable; /* not NULL: why there is no address (fails at once) */
    /* Set by fetch_all. */
    int status;         /* the answer's status code; 0: no answer (`error` says why) */
    char *body;         /* the answer's body, malloc'd and NUL-terminated; NULL if none */
    size_t size;        /* of body */
    char error[128];    /* why there is no answer */
    /* Private. */
    int fd;
    size_t sent;
    char *buf;
    size_t used, capacity;
    size_t head;        /* bytes of the status line and headers; 0 until read */
    long long length;   /* Content-Length; -1: chunked */
    size_t at, out;     /* chunked: the next chunk's line in buf, the body decoded so far */
    int done;
} fetch_t;

/*  Sends each fetch's request to its address and reads its answer, all
    at once, until every one is answered or failed or `timeout_ms` has
    passed (those not answered by then fail). A body over `body_max`
    bytes fails its fetch. */
void fetch_all(fetch_t *fetches, size_t count, int timeout_ms, size_t body_max);

/*  Frees what fetch_all left in a fetch (its body). */
void fetch_clear(fetch_t *fetch);

#endif
