/*  The broker's HTTP port (--metrics): /metrics for Prometheus,
    /stats.json and the dashboard at /, the dashboard's actions on a
    queue (POST /api/requeue, /api/reopen, /api/purge, /api/delete,
    /api/purge-dead, each ?queue=NAME) and its dead letters (GET
    /api/dead?queue=NAME). libmicrohttpd runs in the broker's own event loop:
    the loop polls its epoll descriptor and calls http_run, so a handler
    reads and changes the broker's state like any message does, with no
    lock and no copy (DESIGN.md, "The HTTP port").

    What protects the loop: every socket is non-blocking; at most
    HTTP_CONNECTIONS_MAX connections, HTTP_CONNECTIONS_PER_ADDRESS from one
    address (more are closed at accept); a request read whole within
    HTTP_REQUEST_MS, an answer taken within HTTP_ANSWER_MS, an idle
    connection closed after HTTP_IDLE_S seconds; past
    HTTP_CONNECTIONS_KEPT, connections waiting for a request, then scrapes
    whose reader stopped, make room; each request's headers within
    HTTP_MEMORY_MAX bytes (libmicrohttpd answers 431 beyond); /metrics is
    rendered as it is read, HTTP_SLICE_US per run at most. After any close
    libmicrohttpd runs again at once: it puts its listening socket back
    (taken out at its connection limit) only at the start of a run.
    Actions and /api/dead (payloads are data) need the bearer token; an
    action's answer waits, like any answer that says a change was made,
    until the journal has the change (broker_log_reached). */
#ifndef BROKER_HTTP_H
#define BROKER_HTTP_H

#include <stddef.h>

#include "broker.h"

#define HTTP_CONNECTIONS_MAX 128
/*  Past this many, the oldest connections that have waited
    HTTP_EVICT_AFTER_MS for their request are shut, so a flood of idle
    or slow connections from many addresses cannot keep a scraper out. */
#define HTTP_CONNECTIONS_KEPT 112
#define HTTP_EVICT_AFTER_MS 250
/*  ... and then the scrapes whose reader took nothing for this long. */
#define HTTP_STALLED_MS 1000
#define HTTP_CONNECTIONS_PER_ADDRESS 8
#define HTTP_IDLE_S 5
/*  A request must be read whole within this of its connection (or of its
    previous answer): a slowloris cannot hold a connection by trickling
    bytes. An answer must be taken whole within HTTP_ANSWER_MS. */
#define HTTP_REQUEST_MS 2000
#define HTTP_ANSWER_MS 30000
#define HTTP_MEMORY_MAX (32 * 1024)
/*  /metrics is rendered as it is sent, at most HTTP_BLOCK_SIZE bytes per
    connection per run and HTTP_SLICE_US of rendering per run, all
    connections together: a scrape costs the loop a slice, never a whole
    render. */
#define HTTP_BLOCK_SIZE (16 * 1024)
#define HTTP_SNDBUF (128 * 1024)
#define HTTP_SLICE_US 300
/*  /api/dead: the oldest dead items shown, and the payload bytes shown of
    each. */
#define HTTP_DEAD_SHOWN 100
#define HTTP_PREVIEW 64

typedef struct http http_t;

/*  Listens on `address` ("HOST:PORT", "[V6]:PORT", or "PORT" for
    127.0.0.1; port 0 picks one). `token` is what POST needs after
    "Bearer ". NULL on failure, with the reason in `error`. */
http_t *http_new(broker_t *broker, const char *address, const char *token, char *error,
                 size_t error_size);
void http_destroy(http_t **self_p);

/*  The port it listens on, and "http://HOST:PORT". */
int http_port(const http_t *self);
const char *http_url(const http_t *self);

/*  The descriptor to poll for input, and how long the loop may wait before
    http_run must be called anyway (-1: no limit). */
int http_fd(const http_t *self);
int http_timeout_ms(http_t *self);

/*  Handles what is ready: new connections, requests, time-outs. */
void http_run(http_t *self);

/*  Lets the actions whose change is now on disk answer (after each pass). */
void http_resume(http_t *self);

#endif
