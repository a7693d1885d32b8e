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
    address (its oldest idle one makes room for a new one, or the new one
    is closed); a request read whole within
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

#include <jansson.h>
#include <microhttpd.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "broker.h"

#define HTTP_CONNECTIONS_MAX 128
/*  Past this many, the oldest connections that have waited
    HTTP_EVICT_AFTER_MS for their request are shut, so a flood of idle
    or slow connections from many addresses cannot keep a scraper out. */
#define HTTP_CONNECTIONS_KEPT 112
#define HTTP_EVICT_AFTER_MS 250
/*  ... and then the scrapes whose reader took nothing for this long. */
#define HTTP_STALLED_MS 1000
/*  From one address at most; past it, that address's oldest connection
    that has waited HTTP_EVICT_AFTER_MS for its request makes room (else
    the new one is shut), so idle connections from one address (every
    local user is 127.0.0.1) cannot keep a scraper from that address out.
    libmicrohttpd itself refuses at HTTP_ACCEPTED_PER_ADDRESS. */
#define HTTP_CONNECTIONS_PER_ADDRESS 8
#define HTTP_ACCEPTED_PER_ADDRESS 16
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

/*  What http_new uses, for a server of the same rules (the supervisor of
    --shards serves the whole service so). */

/*  One connection, from libmicrohttpd's NOTIFY_CONNECTION: on the list of
    those waiting for a request (`since`: accepted, or its last answer
    done), or of those answering one (`since`: the request read). */
typedef struct http_link {
    struct http_link *prev, *next;
    int fd; /* -1 once cut */
    int answering;
    int64_t since_ms;
    int64_t progress_ms;   /* a scrape's last slice taken by its reader */
    struct scrape *scrape; /* its /metrics answer, if one is being sent */
    struct sockaddr_storage from; /* the client's address (its port not compared) */
} http_link_t;

typedef struct {
    http_link_t *head, *tail; /* oldest first */
} http_link_list_t;

/*  A port's connections, for the deadlines and limits above. The
    functions take no lock: a server of several threads calls them under
    one of its own. */
typedef struct {
    http_link_list_t idle;      /* connections waiting for a request */
    http_link_list_t answering; /* connections with a request being answered */
    size_t count;               /* on both lists */
    uint64_t cut_total;         /* connections shut by a deadline or to make room */
} http_links_t;

/*  A connection accepted at `now`: its link (for `*socket_context`), or
    NULL, untracked (libmicrohttpd's own time-out still ends it). */
http_link_t *http_links_opened(http_links_t *self, struct MHD_Connection *connection,
                               int64_t now);
/*  Its close: off the lists, freed (NULL: untracked). */
void http_links_closed(http_links_t *self, http_link_t *link);
/*  The connection's request is read (answering) or answered (waiting). */
void http_links_mark(http_links_t *self, struct MHD_Connection *connection, int answering,
                     int64_t now);
/*  Connections past their deadline, or in the way of the next ones, are
    shut; the next deadline, or -1. */
int64_t http_links_expire(http_links_t *self, int64_t now);

/*  "HOST:PORT", "[V6]:PORT" or "PORT" (127.0.0.1; "*" for every
    interface), --metrics's, into an address to bind: 0, or -1 with the
    reason in `error`. */
int http_resolve(const char *address, struct sockaddr_storage *out, socklen_t *length,
                 char *error, size_t error_size);

/*  The token: the first line of `file` (16 characters at least) or, with
    no file, 32 random hex digits. 0, or -1 with the reason on stderr. */
int http_token_load(const char *file, char *token, size_t size);

/*  libmicrohttpd listening on `bind_to` with the connection limits,
    HTTP_IDLE_S and HTTP_MEMORY_MAX above, with `flags` (and MHD_USE_IPv6
    for a V6 address); each callback is given `cls`. NULL if it cannot. */
struct MHD_Daemon *http_start(unsigned flags, const struct sockaddr_storage *bind_to,
                              MHD_AccessHandlerCallback on_request,
                              MHD_RequestCompletedCallback on_completed,
                              MHD_NotifyConnectionCallback on_connection, void *cls);

/*  "http://HOST:PORT" ("http://[V6]:PORT") of `address`'s host. */
void http_format_url(const struct sockaddr_storage *address, int port, char *url, size_t size);

/*  The paths, a broker's and the service's alike: the dashboard's
    actions, POST /api/ACTION?queue=NAME (requeue and purge-dead also of
    one dead item, with &id=N), then what is read with GET (or HEAD). */
typedef enum {
    HTTP_PATH_REQUEUE,    /* dead items back to the queue (DEAD requeue) */
    HTTP_PATH_REOPEN,     /* a shut-down queue takes puts again (REOPEN) */
    HTTP_PATH_PURGE,      /* queued and delayed items discarded (PURGE) */
    HTTP_PATH_DELETE,     /* the queue and everything in it (DELETE) */
    HTTP_PATH_PURGE_DEAD, /* dead items deleted (DEAD purge) */
    HTTP_PATH_DEAD,       /* /api/dead?queue=NAME[&id=N] */
    HTTP_PATH_METRICS,    /* /metrics */
    HTTP_PATH_STATS,      /* /stats.json */
    HTTP_PATH_DASHBOARD,  /* / */
    HTTP_PATH_ANSWERED    /* none of them, or not with its method: answered */
} http_path_t;
/*  The actions come first. */
#define HTTP_ACTIONS HTTP_PATH_DEAD

/*  Which path `url` is, where `method` is the one it takes; else
    HTTP_PATH_ANSWERED, answered 404 or 405 (`*answered`). */
http_path_t http_route(struct MHD_Connection *connection, const char *url, const char *method,
                       enum MHD_Result *answered);

/*  The answers. `data` with `mode` as libmicrohttpd takes them (freed on
    failure if MHD_RESPMEM_MUST_FREE), no-store, and a 401 asks for the
    token (WWW-Authenticate: Bearer). */
enum MHD_Result http_answer(struct MHD_Connection *connection, unsigned status, const char *type,
                            const void *data, size_t size, enum MHD_ResponseMemoryMode mode);
/*  `body` as compact JSON (reals to 9 digits), taken; NULL (out of
    memory) is answered 500. */
enum MHD_Result http_json(struct MHD_Connection *connection, unsigned status, json_t *body);
/*  {"error":TEXT}. */
enum MHD_Result http_error(struct MHD_Connection *connection, unsigned status, const char *text);
/*  405, with the methods the path takes (`allow`: "GET, HEAD" or "POST"). */
enum MHD_Result http_not_allowed(struct MHD_Connection *connection, const char *allow);
/*  The dashboard (GET /). */
enum MHD_Result http_dashboard(struct MHD_Connection *connection);

/*  What a request on a queue (an action, /api/dead) names: queue=NAME
    and, if given, id=N. */
typedef struct {
    const char *name;
    int has_id;
    uint64_t id;
} http_target_t;

/*  The checks such a request passes first: the token after "Bearer "
    (401), a name (400), no id where the path takes none (400, lest an
    action meant for one item hit the whole queue), one id at most, a
    number (400). 0, or -1 when answered so (`*answered`). */
int http_target(struct MHD_Connection *connection, const char *token, int takes_id,
                http_target_t *target, enum MHD_Result *answered);

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
