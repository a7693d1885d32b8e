#include "http.h"

#include <arpa/inet.h>
#include <czmq.h>
#include <jansson.h>
#include <microhttpd.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <time.h>

#include "dispatch.h"
#include "metrics.h"
#include "persist.h"

/*  broker/web/index.html, embedded at build time (cmake/Embed.cmake). */
extern const unsigned char http_index_html[];
extern const size_t http_index_html_size;

/*  http_path_t's paths, in its order. */
static const char *const s_paths[HTTP_PATH_ANSWERED] = {
    "/api/requeue", "/api/reopen", "/api/purge", "/api/delete", "/api/purge-dead",
    "/api/dead",    "/metrics",    "/stats.json", "/"};

/*  A POST whose change waits for the journal: its connection is suspended
    until the journal position it needs is confirmed. */
typedef struct action {
    struct action *next;
    struct MHD_Connection *connection;
    uint64_t position;
    int suspended;
    http_path_t kind; /* the action (s_act) */
    json_t *answer; /* once the change is made: the 200 answer, owned */
} action_t;

struct http {
    broker_t *broker;
    struct MHD_Daemon *daemon;
    char token[128];
    action_t *waiting; /* suspended actions, oldest first */
    int port;
    char url[300];
    int again;          /* MHD_run is due at once: a resume, or a connection closed */
    http_links_t links; /* its connections */
    metrics_t *metrics; /* what /metrics renders share */
    int64_t until_us;   /* the end of this run's time for rendering */
};

/*  A /metrics answer being rendered (s_scrape). */
typedef struct scrape {
    http_t *http;
    metrics_render_t *render;
    http_link_t *link; /* its connection, while open */
} scrape_t;

static void s_unlink(http_link_list_t *list, http_link_t *link)
{
    *(link->prev ? &link->prev->next : &list->head) = link->next;
    *(link->next ? &link->next->prev : &list->tail) = link->prev;
    link->prev = link->next = NULL;
}

static void s_append(http_link_list_t *list, http_link_t *link)
{
    link->prev = list->tail;
    link->next = NULL;
    *(list->tail ? &list->tail->next : &list->head) = link;
    list->tail = link;
}

/*  Ends a connection from outside libmicrohttpd: shutdown(2) makes its
    socket readable at end of stream, and libmicrohttpd closes it in its
    next run (or its thread) as for any peer that left. It leaves the
    lists at once. */
static void s_cut(http_links_t *self, http_link_t *link)
{
    s_unlink(link->answering ? &self->answering : &self->idle, link);
    self->count--;
    self->cut_total++;
    if (link->scrape) /* freed with the connection, in the next run */
        link->scrape->link = NULL;
    link->scrape = NULL;
    shutdown(link->fd, SHUT_RDWR);
    link->fd = -1;
}

/*  Room for the next ones: past HTTP_CONNECTIONS_KEPT the oldest
    connections that have waited HTTP_EVICT_AFTER_MS for a request go (a
    scraper sends its request at once, a flood of idle or slow
    connections does not). */
static void s_make_room(http_links_t *self, int64_t now)
{
    while (self->count > HTTP_CONNECTIONS_KEPT && self->idle.head
           && self->idle.head->since_ms + HTTP_EVICT_AFTER_MS <= now)
        s_cut(self, self->idle.head);
    /* Then scrapes whose reader took nothing for HTTP_STALLED_MS, the
       longest stalled first: a reader that stopped cannot hold a place
       that a reader that reads is waiting for. */
    while (self->count > HTTP_CONNECTIONS_KEPT) {
        http_link_t *stalled = NULL;
        for (http_link_t *link = self->answering.head; link; link = link->next)
            if (link->scrape && link->progress_ms + HTTP_STALLED_MS <= now
                && (!stalled || link->progress_ms < stalled->progress_ms))
                stalled = link;
        if (!stalled)
            break;
        s_cut(self, stalled);
    }
}

/*  Whether two links come from one address (their ports are zeroed). */
static int s_same_address(const http_link_t *a, const http_link_t *b)
{
    if (a->from.ss_family != b->from.ss_family)
        return 0;
    if (a->from.ss_family == AF_INET)
        return ((const struct sockaddr_in *) &a->from)->sin_addr.s_addr
               == ((const struct sockaddr_in *) &b->from)->sin_addr.s_addr;
    if (a->from.ss_family == AF_INET6)
        return memcmp(&((const struct sockaddr_in6 *) &a->from)->sin6_addr,
                      &((const struct sockaddr_in6 *) &b->from)->sin6_addr,
                      sizeof(struct in6_addr)) == 0;
    return 0;
}

/*  Past HTTP_CONNECTIONS_PER_ADDRESS from the new link's address: that
    address's oldest connection waiting HTTP_EVICT_AFTER_MS for a request
    goes, or, if none, the new one. 0, or -1 if the new one was shut. */
static int s_room_at_address(http_links_t *self, http_link_t *fresh, int64_t now)
{
    size_t same = 0;
    http_link_t *oldest_idle = NULL;
    for (int list = 0; list < 2; list++)
        for (http_link_t *link = list ? self->answering.head : self->idle.head; link;
             link = link->next)
            if (s_same_address(link, fresh)) {
                same++;
                if (!list && !oldest_idle && link != fresh
                    && link->since_ms + HTTP_EVICT_AFTER_MS <= now)
                    oldest_idle = link;
            }
    if (same <= HTTP_CONNECTIONS_PER_ADDRESS)
        return 0;
    s_cut(self, oldest_idle ? oldest_idle : fresh);
    return oldest_idle ? 0 : -1;
}

http_link_t *http_links_opened(http_links_t *self, struct MHD_Connection *connection,
                               int64_t now)
{
    const union MHD_ConnectionInfo *info =
        MHD_get_connection_info(connection, MHD_CONNECTION_INFO_CONNECTION_FD);
    const union MHD_ConnectionInfo *from =
        MHD_get_connection_info(connection, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    http_link_t *link = calloc(1, sizeof *link);
    if (!link || !info) {
        free(link);
        return NULL;
    }
    link->fd = info->connect_fd;
    link->since_ms = now;
    if (from && from->client_addr) {
        socklen_t size = from->client_addr->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6)
                                                                  : sizeof(struct sockaddr_in);
        memcpy(&link->from, from->client_addr, size);
    }
    s_append(&self->idle, link);
    self->count++;
    /* A link shut here stays libmicrohttpd's until it closes (fd -1). */
    s_room_at_address(self, link, now);
    s_make_room(self, now);
    return link;
}

void http_links_closed(http_links_t *self, http_link_t *link)
{
    if (link && link->fd >= 0) {
        s_unlink(link->answering ? &self->answering : &self->idle, link);
        self->count--;
    }
    if (link && link->scrape)
        link->scrape->link = NULL;
    free(link);
}

void http_links_mark(http_links_t *self, struct MHD_Connection *connection, int answering,
                     int64_t now)
{
    const union MHD_ConnectionInfo *info =
        MHD_get_connection_info(connection, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    http_link_t *link = info ? info->socket_context : NULL;
    if (!link || link->fd < 0 || link->answering == answering)
        return;
    s_unlink(link->answering ? &self->answering : &self->idle, link);
    link->answering = answering;
    link->since_ms = now;
    s_append(answering ? &self->answering : &self->idle, link);
}

int64_t http_links_expire(http_links_t *self, int64_t now)
{
    while (self->idle.head && self->idle.head->since_ms + HTTP_REQUEST_MS <= now)
        s_cut(self, self->idle.head);
    while (self->answering.head && self->answering.head->since_ms + HTTP_ANSWER_MS <= now)
        s_cut(self, self->answering.head);
    s_make_room(self, now);
    int64_t next = -1;
    if (self->idle.head)
        next = self->idle.head->since_ms + (self->count > HTTP_CONNECTIONS_KEPT
                                                ? HTTP_EVICT_AFTER_MS : HTTP_REQUEST_MS);
    if (self->answering.head
        && (next < 0 || self->answering.head->since_ms + HTTP_ANSWER_MS < next))
        next = self->answering.head->since_ms + HTTP_ANSWER_MS;
    if (self->count > HTTP_CONNECTIONS_KEPT) /* when a scrape counts as stalled */
        for (http_link_t *link = self->answering.head; link; link = link->next)
            if (link->scrape && (next < 0 || link->progress_ms + HTTP_STALLED_MS < next))
                next = link->progress_ms + HTTP_STALLED_MS;
    return next;
}

static void s_on_connection(void *cls, struct MHD_Connection *connection, void **socket_context,
                            enum MHD_ConnectionNotificationCode code)
{
    http_t *self = cls;
    if (code == MHD_CONNECTION_NOTIFY_CLOSED) {
        http_links_closed(&self->links, *socket_context);
        *socket_context = NULL;
        /* libmicrohttpd puts its listening socket back in its epoll set
           only at the start of a run: after a close, run again, or a
           backlog left at the connection limit is never accepted. */
        self->again = 1;
        return;
    }
    http_link_t *link = http_links_opened(&self->links, connection, broker_now_ms());
    if (link) {
        /* A fixed send buffer: a reader that stops holds that much of the
           kernel's memory, and stops taking slices, soon. */
        int sndbuf = HTTP_SNDBUF;
        setsockopt(link->fd, SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof sndbuf);
    }
    *socket_context = link;
}

enum MHD_Result http_answer(struct MHD_Connection *connection, unsigned status, const char *type,
                            const void *data, size_t size, enum MHD_ResponseMemoryMode mode)
{
    struct MHD_Response *response = MHD_create_response_from_buffer(size, (void *) data, mode);
    if (!response) {
        if (mode == MHD_RESPMEM_MUST_FREE)
            free((void *) data);
        return MHD_NO;
    }
    MHD_add_response_header(response, MHD_HTTP_HEADER_CONTENT_TYPE, type);
    MHD_add_response_header(response, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
    if (status == MHD_HTTP_UNAUTHORIZED)
        MHD_add_response_header(response, MHD_HTTP_HEADER_WWW_AUTHENTICATE, "Bearer");
    enum MHD_Result rc = MHD_queue_response(connection, status, response);
    MHD_destroy_response(response);
    return rc;
}

enum MHD_Result http_json(struct MHD_Connection *connection, unsigned status, json_t *body)
{
    /* The precision of stats.json's reals (metrics_render_json): the
       service's sum of them is answered here. */
    char *text = body ? json_dumps(body, JSON_COMPACT | JSON_REAL_PRECISION(9)) : NULL;
    json_decref(body);
    if (!text)
        return http_answer(connection, MHD_HTTP_INTERNAL_SERVER_ERROR, "text/plain",
                           "out of memory\n", 14, MHD_RESPMEM_PERSISTENT);
    return http_answer(connection, status, "application/json", text, strlen(text),
                       MHD_RESPMEM_MUST_FREE);
}

enum MHD_Result http_error(struct MHD_Connection *connection, unsigned status, const char *text)
{
    return http_json(connection, status, json_pack("{s:s}", "error", text));
}

enum MHD_Result http_not_allowed(struct MHD_Connection *connection, const char *allow)
{
    char text[48];
    int size = snprintf(text, sizeof text, "{\"error\":\"%s only\"}",
                        strcmp(allow, "POST") == 0 ? "POST" : "GET");
    struct MHD_Response *response =
        MHD_create_response_from_buffer((size_t) size, text, MHD_RESPMEM_MUST_COPY);
    if (!response)
        return MHD_NO;
    MHD_add_response_header(response, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
    MHD_add_response_header(response, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
    MHD_add_response_header(response, MHD_HTTP_HEADER_ALLOW, allow);
    enum MHD_Result rc = MHD_queue_response(connection, MHD_HTTP_METHOD_NOT_ALLOWED, response);
    MHD_destroy_response(response);
    return rc;
}

http_path_t http_route(struct MHD_Connection *connection, const char *url, const char *method,
                       enum MHD_Result *answered)
{
    int path = 0;
    while (path < HTTP_PATH_ANSWERED && strcmp(url, s_paths[path]) != 0)
        path++;
    int action = path < HTTP_ACTIONS;
    int get = strcmp(method, MHD_HTTP_METHOD_GET) == 0 || strcmp(method, MHD_HTTP_METHOD_HEAD) == 0;
    if (path == HTTP_PATH_ANSWERED)
        *answered = http_error(connection, MHD_HTTP_NOT_FOUND, "no such page");
    else if (action ? strcmp(method, MHD_HTTP_METHOD_POST) != 0 : !get) {
        *answered = http_not_allowed(connection, action ? "POST" : "GET, HEAD");
        path = HTTP_PATH_ANSWERED;
    }
    return (http_path_t) path;
}

enum MHD_Result http_dashboard(struct MHD_Connection *connection)
{
    return http_answer(connection, MHD_HTTP_OK, "text/html; charset=utf-8", http_index_html,
                       http_index_html_size, MHD_RESPMEM_PERSISTENT);
}

/*  Compares in time independent of where they differ. */
static int s_token_matches(const char *given, const char *token)
{
    size_t a = strlen(given), b = strlen(token);
    unsigned char differ = a != b;
    for (size_t i = 0; i < b; i++)
        differ |= (unsigned char) (given[i < a ? i : 0] ^ token[i]);
    return !differ;
}

static int s_authorized(const char *token, struct MHD_Connection *connection)
{
    const char *header =
        MHD_lookup_connection_value(connection, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);
    /* The scheme is case-insensitive (RFC 7235 2.1). */
    return header && strncasecmp(header, "Bearer ", 7) == 0 && s_token_matches(header + 7, token);
}

static enum MHD_Result s_render(struct MHD_Connection *connection, broker_t *broker,
                                char *(*render)(broker_t *, size_t *), const char *type)
{
    size_t size = 0;
    char *text = render(broker, &size);
    if (!text)
        return http_error(connection, MHD_HTTP_INTERNAL_SERVER_ERROR, "out of memory");
    return http_answer(connection, MHD_HTTP_OK, type, text, size, MHD_RESPMEM_MUST_FREE);
}

/*  /metrics, rendered as the client reads it, within each run's time
    for rendering (HTTP_SLICE_US, shared by every scrape in that run). */

static ssize_t s_scrape_read(void *cls, uint64_t position, char *buf, size_t max)
{
    (void) position;
    scrape_t *scrape = cls;
    if (scrape->link) /* called when the reader took the last slice */
        scrape->link->progress_ms = broker_now_ms();
    ssize_t got = metrics_render_read(scrape->render, buf, max, scrape->http->until_us);
    if (got == 0)
        scrape->http->again = 1; /* out of time: the next run goes on */
    return got == -1 ? MHD_CONTENT_READER_END_OF_STREAM
                     : got < 0 ? MHD_CONTENT_READER_END_WITH_ERROR : got;
}

static void s_scrape_free(void *cls)
{
    scrape_t *scrape = cls;
    if (scrape->link)
        scrape->link->scrape = NULL;
    metrics_render_destroy(&scrape->render);
    free(scrape);
}

static enum MHD_Result s_scrape(http_t *self, struct MHD_Connection *connection)
{
    scrape_t *scrape = calloc(1, sizeof *scrape);
    if (scrape)
        scrape->render = metrics_render_new(self->metrics);
    if (!scrape || !scrape->render) {
        free(scrape);
        return http_error(connection, MHD_HTTP_INTERNAL_SERVER_ERROR, "out of memory");
    }
    scrape->http = self;
    const union MHD_ConnectionInfo *info =
        MHD_get_connection_info(connection, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    http_link_t *link = info ? info->socket_context : NULL;
    if (link && link->fd >= 0 && !link->scrape) {
        scrape->link = link;
        link->scrape = scrape;
        link->progress_ms = broker_now_ms();
    }
    struct MHD_Response *response = MHD_create_response_from_callback(
        MHD_SIZE_UNKNOWN, HTTP_BLOCK_SIZE, s_scrape_read, scrape, s_scrape_free);
    if (!response) {
        s_scrape_free(scrape);
        return MHD_NO;
    }
    MHD_add_response_header(response, MHD_HTTP_HEADER_CONTENT_TYPE,
                            "text/plain; version=0.0.4; charset=utf-8");
    MHD_add_response_header(response, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
    enum MHD_Result rc = MHD_queue_response(connection, MHD_HTTP_OK, response);
    MHD_destroy_response(response);
    return rc;
}

static const char *s_state_name(queue_state_t state)
{
    return state == QUEUE_OPEN ? "open" : state == QUEUE_DRAINING ? "draining" : "discarding";
}

/*  The query's `id` arguments: how many, and the last one's value (NULL
    for a bare `id` without `=`). */
typedef struct {
    int count;
    const char *value;
} id_arg_t;

static enum MHD_Result s_on_argument(void *cls, enum MHD_ValueKind kind, const char *key,
                                     const char *value)
{
    (void) kind;
    id_arg_t *arg = cls;
    if (strcmp(key, "id") == 0) {
        arg->count++;
        arg->value = value;
    }
    return MHD_YES;
}

int http_target(struct MHD_Connection *connection, const char *token, int takes_id,
                http_target_t *target, enum MHD_Result *answered)
{
    const char *why = NULL;
    unsigned status = MHD_HTTP_BAD_REQUEST;
    target->name = MHD_lookup_connection_value(connection, MHD_GET_ARGUMENT_KIND, "queue");
    id_arg_t id = {0, NULL};
    MHD_get_connection_values(connection, MHD_GET_ARGUMENT_KIND, s_on_argument, &id);
    target->has_id = id.count > 0;
    target->id = 0;
    if (!s_authorized(token, connection))
        why = "this needs the dashboard token (Authorization: Bearer TOKEN)",
        status = MHD_HTTP_UNAUTHORIZED;
    else if (!target->name
             || !aq_name_is_valid((const uint8_t *) target->name, strlen(target->name)))
        why = "queue=NAME is missing or not a name";
    else if (id.count && !takes_id)
        why = "this acts on the whole queue: it takes no id=N";
    else if (id.count > 1)
        why = "id=N names one item: give it once";
    else if (id.count
             && (!id.value
                 || !aq_parse_u64((const uint8_t *) id.value, strlen(id.value), &target->id)))
        why = "id=N must be an item id (a decimal number)";
    if (why)
        *answered = http_error(connection, status, why);
    return why ? -1 : 0;
}

/*  What an action and /api/dead need first: what http_target checks, a
    queue the broker has (404) and, for an id, a dead item of that queue
    (404, naming the id). `item`: where the item goes (NULL without an
    id), or NULL where the path takes no id. NULL when answered so. */
static queue_t *s_target(http_t *self, struct MHD_Connection *connection, item_t **item,
                         enum MHD_Result *answered)
{
    if (item)
        *item = NULL;
    http_target_t target;
    if (http_target(connection, self->token, item != NULL, &target, answered))
        return NULL;
    aq_status_t rc;
    queue_t *queue = broker_queue(self->broker, aq_bytes_str(target.name), 0, &rc);
    if (!queue) {
        *answered = http_error(connection, MHD_HTTP_NOT_FOUND, "no such queue");
        return NULL;
    }
    if (target.has_id) {
        item_t *found = store_find(self->broker->store, target.id);
        if (!found || found->queue != queue || found->state != ITEM_DEAD) {
            char text[128];
            snprintf(text, sizeof text, "item %llu is not a dead item of queue %s",
                     (unsigned long long) target.id, queue->name);
            *answered = http_error(connection, MHD_HTTP_NOT_FOUND, text);
            return NULL;
        }
        *item = found;
    }
    return queue;
}

/*  POST /api/ACTION?queue=NAME (requeue and purge-dead also &id=N: that
    dead item only), at the end of its request: the change made, and
    answered (again, when resumed) once the journal has it. */
static enum MHD_Result s_act(http_t *self, struct MHD_Connection *connection, action_t *action)
{
    if (action->answer) {
        json_t *answer = action->answer;
        action->answer = NULL;
        return http_json(connection, MHD_HTTP_OK, answer);
    }
    if (broker_follows(self->broker))
        return http_error(connection, 421, "this replica does not lead its group: act on the "
                                           "leader's port");
    enum MHD_Result answered = MHD_NO;
    item_t *item = NULL;
    int takes_id = action->kind == HTTP_PATH_REQUEUE || action->kind == HTTP_PATH_PURGE_DEAD;
    queue_t *queue = s_target(self, connection, takes_id ? &item : NULL, &answered);
    if (!queue)
        return answered;
    char name[AQ_NAME_MAX + 1]; /* DELETE frees the queue */
    snprintf(name, sizeof name, "%s", queue->name);
    char id[24] = "";
    if (item)
        snprintf(id, sizeof id, "%llu", (unsigned long long) item->id);
    uint64_t count = 0;
    switch (action->kind) {
    case HTTP_PATH_REQUEUE:
        if (item) {
            if (broker_requeue_dead_item(self->broker, item)) /* nothing changed */
                return http_error(connection, MHD_HTTP_INTERNAL_SERVER_ERROR,
                                  "out of memory: the item stays dead");
            log_line("dashboard: dead item %s of %s requeued", id, name);
            action->answer = json_pack("{s:s,s:i,s:s}", "queue", name, "requeued", 1, "id", id);
            break;
        }
        count = broker_requeue_dead(self->broker, queue);
        log_line("dashboard: %llu dead items of %s requeued", (unsigned long long) count, name);
        action->answer = json_pack("{s:s,s:I}", "queue", name, "requeued", (json_int_t) count);
        break;
    case HTTP_PATH_PURGE_DEAD:
        if (item) {
            broker_delete_dead_item(self->broker, item); /* frees it */
            item = NULL;
            log_line("dashboard: dead item %s of %s deleted", id, name);
            action->answer =
                json_pack("{s:s,s:i,s:s}", "queue", name, "purged_dead", 1, "id", id);
            break;
        }
        count = broker_purge_dead(self->broker, queue);
        log_line("dashboard: %llu dead items of %s purged", (unsigned long long) count, name);
        action->answer = json_pack("{s:s,s:I}", "queue", name, "purged_dead", (json_int_t) count);
        break;
    case HTTP_PATH_PURGE:
        count = broker_purge_queue(self->broker, queue);
        log_line("dashboard: purge of %s (%llu items)", name, (unsigned long long) count);
        action->answer = json_pack("{s:s,s:I}", "queue", name, "purged", (json_int_t) count);
        break;
    case HTTP_PATH_DELETE:
        count = broker_delete_queue(self->broker, queue); /* frees it */
        queue = NULL;
        log_line("dashboard: delete of %s (%llu items)", name, (unsigned long long) count);
        action->answer = json_pack("{s:s,s:I}", "queue", name, "deleted", (json_int_t) count);
        break;
    case HTTP_PATH_REOPEN: {
        queue_state_t was = queue->state;
        if (broker_reopen_queue(self->broker, queue)) /* stopping on a signal */
            return http_error(connection, MHD_HTTP_SERVICE_UNAVAILABLE,
                              "the broker is stopping: no queue takes puts");
        log_line("dashboard: reopen of %s (was %s)", name, s_state_name(was));
        action->answer = json_pack(
            "{s:s,s:s,s:s,s:I,s:I,s:I,s:I,s:I}", "queue", name, "state",
            s_state_name(queue->state), "was", s_state_name(was), "queued",
            (json_int_t) queue->ready_count, "in_flight", (json_int_t) queue->inflight_count,
            "delayed", (json_int_t) queue->delayed_count, "dead", (json_int_t) queue->dead_count,
            "consumers", (json_int_t) queue->consumer_count);
        break;
    }
    default:
        return http_error(connection, MHD_HTTP_NOT_FOUND, "no such page");
    }
    if (!action->answer) /* the change is made: only its answer is lost */
        return http_error(connection, MHD_HTTP_INTERNAL_SERVER_ERROR, "out of memory");
    action->position = broker_log_end(self->broker);
    if (broker_log_reached(self->broker, action->position))
        return s_act(self, connection, action);
    /* Answered once the journal has the change: see http_resume. */
    action->connection = connection;
    action->suspended = 1;
    action->next = NULL;
    action_t **tail = &self->waiting;
    while (*tail)
        tail = &(*tail)->next;
    *tail = action;
    MHD_suspend_connection(connection);
    return MHD_YES;
}

/*  Bytes as text (/api/dead's reason and payload_preview): well-formed
    UTF-8 kept, but `\` as `\\`, newline, return and tab as `\n`, `\r`,
    `\t`, and any other control character or byte that is not UTF-8 as
    `\xNN`. `out` has room for size * 4 + 1. */
static void s_escape(char *out, const uint8_t *data, size_t size)
{
    size_t at = 0;
    for (size_t i = 0; i < size;) {
        uint8_t c = data[i];
        size_t length = aq_utf8_sequence(data + i, size - i);
        const char *short_form = c == '\\' ? "\\\\" : c == '\n' ? "\\n" : c == '\r' ? "\\r"
                                 : c == '\t' ? "\\t" : NULL;
        if (short_form) {
            memcpy(out + at, short_form, 2);
            at += 2, i++;
        }
        else if (length && (c >= 0x80 || (c >= 0x20 && c != 0x7f))) {
            memcpy(out + at, data + i, length);
            at += length, i += length;
        }
        else {
            snprintf(out + at, 5, "\\x%02x", c);
            at += 4, i++;
        }
    }
    out[at] = '\0';
}

static json_t *s_dead_item(const item_t *item)
{
    char id[24], died[40] = "";
    snprintf(id, sizeof id, "%llu", (unsigned long long) item->id);
    char reason[EPITAPH_TEXT_MAX * 4 + 1] = "", preview[HTTP_PREVIEW * 4 + 1];
    const epitaph_t *epitaph = item->epitaph;
    death_cause_t cause = DEATH_UNKNOWN;
    if (epitaph) {
        time_t seconds = (time_t) (epitaph->at_ms / 1000);
        struct tm tm;
        if (gmtime_r(&seconds, &tm)) {
            size_t n = strftime(died, sizeof died, "%Y-%m-%dT%H:%M:%S", &tm);
            snprintf(died + n, sizeof died - n, ".%03dZ", (int) (epitaph->at_ms % 1000));
        }
        if (epitaph->cause < DEATH_CAUSES)
            cause = (death_cause_t) epitaph->cause;
        s_escape(reason, (const uint8_t *) epitaph->text, epitaph->size);
    }
    size_t shown = item->size < HTTP_PREVIEW ? item->size : HTTP_PREVIEW;
    s_escape(preview, item->data, item->data ? shown : 0);
    return json_pack("{s:s,s:i,s:I,s:o,s:s,s:s,s:s,s:b}", "id", id, "attempts",
                     (int) item->attempts, "size", (json_int_t) item->size, "died",
                     died[0] ? json_string(died) : json_null(), "cause",
                     state_death_names[cause], "reason", reason, "payload_preview", preview,
                     "payload_cut", item->size > shown);
}

/*  One dead item whole: as listed, with its whole payload escaped
    (`payload`, as payload_preview) and in padded standard base64
    (`payload_base64`, the bytes as they are). NULL: out of memory. */
static json_t *s_dead_item_whole(const queue_t *queue, const item_t *item)
{
    json_t *entry = s_dead_item(item), *answer = NULL;
    char *text = malloc((size_t) item->size * 4 + 1);
    char *base64 = NULL;
    zarmour_t *armour = zarmour_new();
    if (armour) {
        zarmour_set_mode(armour, ZARMOUR_MODE_BASE64_STD);
        zarmour_set_pad(armour, true);
        zarmour_set_line_breaks(armour, false);
        /* zarmour asserts on NULL data: an empty payload has none. */
        base64 = zarmour_encode(armour, item->data ? item->data : (const byte *) "",
                                item->data ? item->size : 0);
        zarmour_destroy(&armour);
    }
    if (entry && text && base64) {
        s_escape(text, item->data, item->data ? item->size : 0);
        if (json_object_set_new(entry, "payload", json_string(text)) == 0
            && json_object_set_new(entry, "payload_base64", json_string(base64)) == 0) {
            answer = json_pack("{s:s,s:o}", "queue", queue->name, "item", entry);
            entry = NULL; /* stolen by json_pack, even when it fails */
        }
    }
    json_decref(entry);
    free(text);
    free(base64);
    return answer;
}

/*  GET /api/dead?queue=NAME: the queue's dead items, oldest death first,
    HTTP_DEAD_SHOWN at most (payloads are data: the token is needed); with
    &id=N, that dead item whole (s_dead_item_whole). */
static enum MHD_Result s_dead(http_t *self, struct MHD_Connection *connection)
{
    enum MHD_Result answered = MHD_NO;
    item_t *item = NULL;
    queue_t *queue = s_target(self, connection, &item, &answered);
    if (!queue)
        return answered;
    if (item)
        return http_json(connection, MHD_HTTP_OK, s_dead_item_whole(queue, item));
    json_t *items = json_array();
    size_t shown = 0;
    for (const list_node_t *node = queue->dead.next;
         items && node != &queue->dead && shown < HTTP_DEAD_SHOWN; node = node->next, shown++)
        if (json_array_append_new(items, s_dead_item(list_entry(node, item_t, link)))) {
            json_decref(items);
            items = NULL;
        }
    return http_json(connection, MHD_HTTP_OK,
                     items ? json_pack("{s:s,s:s,s:I,s:o}", "queue", queue->name, "state",
                                       s_state_name(queue->state), "dead",
                                       (json_int_t) queue->dead_count, "items", items)
                           : NULL);
}

static enum MHD_Result s_on_request(void *cls, struct MHD_Connection *connection, const char *url,
                                    const char *method, const char *version,
                                    const char *upload_data, size_t *upload_data_size,
                                    void **state)
{
    (void) version, (void) upload_data;
    http_t *self = cls;
    http_links_mark(&self->links, connection, 1, broker_now_ms());
    enum MHD_Result answered = MHD_NO;
    http_path_t path = http_route(connection, url, method, &answered);
    if (path < HTTP_ACTIONS) {
        /* libmicrohttpd calls for the headers, for each piece of the body
           (ignored), and once more at the end. */
        if (!*state) {
            action_t *action = calloc(1, sizeof *action);
            if (action)
                action->kind = path;
            *state = action;
            return action ? MHD_YES : MHD_NO;
        }
        if (*upload_data_size) {
            *upload_data_size = 0;
            return MHD_YES;
        }
        return s_act(self, connection, *state);
    }
    switch (path) {
    case HTTP_PATH_DEAD:
        return s_dead(self, connection);
    case HTTP_PATH_METRICS:
        return s_scrape(self, connection);
    case HTTP_PATH_STATS:
        return s_render(connection, self->broker, metrics_render_json, "application/json");
    case HTTP_PATH_DASHBOARD:
        return http_dashboard(connection);
    default:
        return answered;
    }
}

static void s_on_completed(void *cls, struct MHD_Connection *connection, void **state,
                           enum MHD_RequestTerminationCode code)
{
    (void) code;
    http_t *self = cls;
    http_links_mark(&self->links, connection, 0, broker_now_ms());
    action_t *action = *state;
    if (!action)
        return;
    for (action_t **at = &self->waiting; *at; at = &(*at)->next)
        if (*at == action) {
            *at = action->next;
            break;
        }
    json_decref(action->answer);
    free(action);
    *state = NULL;
}

/*  http_resolve, but for the reason. */
static int s_resolve(const char *address, struct sockaddr_storage *out, socklen_t *length)
{
    char host[256] = "127.0.0.1", port[16];
    const char *colon = strrchr(address, ':');
    if (!colon)
        snprintf(port, sizeof port, "%s", address);
    else {
        size_t size = (size_t) (colon - address);
        if (size >= sizeof host)
            return -1;
        if (size >= 2 && address[0] == '[' && address[size - 1] == ']')
            snprintf(host, sizeof host, "%.*s", (int) size - 2, address + 1);
        else if (size)
            snprintf(host, sizeof host, "%.*s", (int) size, address);
        snprintf(port, sizeof port, "%s", colon + 1);
    }
    struct addrinfo hints = {.ai_flags = AI_PASSIVE | AI_NUMERICSERV, .ai_socktype = SOCK_STREAM};
    struct addrinfo *found = NULL;
    if (getaddrinfo(strcmp(host, "*") == 0 ? "0.0.0.0" : host, port, &hints, &found) != 0)
        return -1;
    memcpy(out, found->ai_addr, found->ai_addrlen);
    *length = found->ai_addrlen;
    freeaddrinfo(found);
    return 0;
}

int http_resolve(const char *address, struct sockaddr_storage *out, socklen_t *length,
                 char *error, size_t error_size)
{
    if (s_resolve(address, out, length) == 0)
        return 0;
    snprintf(error, error_size, "--metrics %s: not an address (HOST:PORT)", address);
    return -1;
}

struct MHD_Daemon *http_start(unsigned flags, const struct sockaddr_storage *bind_to,
                              MHD_AccessHandlerCallback on_request,
                              MHD_RequestCompletedCallback on_completed,
                              MHD_NotifyConnectionCallback on_connection, void *cls)
{
    if (bind_to->ss_family == AF_INET6)
        flags |= MHD_USE_IPv6;
    return MHD_start_daemon(
        flags, 0, NULL, NULL, on_request, cls, MHD_OPTION_SOCK_ADDR, bind_to,
        MHD_OPTION_CONNECTION_LIMIT, (unsigned) HTTP_CONNECTIONS_MAX,
        MHD_OPTION_PER_IP_CONNECTION_LIMIT, (unsigned) HTTP_ACCEPTED_PER_ADDRESS,
        MHD_OPTION_CONNECTION_TIMEOUT, (unsigned) HTTP_IDLE_S, MHD_OPTION_CONNECTION_MEMORY_LIMIT,
        (size_t) HTTP_MEMORY_MAX, MHD_OPTION_NOTIFY_COMPLETED, on_completed, cls,
        MHD_OPTION_NOTIFY_CONNECTION, on_connection, cls, MHD_OPTION_END);
}

void http_format_url(const struct sockaddr_storage *address, int port, char *url, size_t size)
{
    char host[INET6_ADDRSTRLEN] = "127.0.0.1";
    if (address->ss_family == AF_INET6)
        inet_ntop(AF_INET6, &((const struct sockaddr_in6 *) address)->sin6_addr, host,
                  sizeof host);
    else
        inet_ntop(AF_INET, &((const struct sockaddr_in *) address)->sin_addr, host, sizeof host);
    snprintf(url, size, address->ss_family == AF_INET6 ? "http://[%s]:%d" : "http://%s:%d", host,
             port);
}

http_t *http_new(broker_t *broker, const char *address, const char *token, char *error,
                 size_t error_size)
{
    struct sockaddr_storage bind_to;
    socklen_t length;
    if (http_resolve(address, &bind_to, &length, error, error_size))
        return NULL;
    http_t *self = calloc(1, sizeof *self);
    if (!self) {
        snprintf(error, error_size, "out of memory");
        return NULL;
    }
    self->broker = broker;
    self->metrics = metrics_new(broker);
    if (!self->metrics) {
        snprintf(error, error_size, "out of memory");
        free(self);
        return NULL;
    }
    snprintf(self->token, sizeof self->token, "%s", token);
    self->daemon = http_start(MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME, &bind_to, s_on_request,
                              s_on_completed, s_on_connection, self);
    const union MHD_DaemonInfo *info =
        self->daemon ? MHD_get_daemon_info(self->daemon, MHD_DAEMON_INFO_BIND_PORT) : NULL;
    if (!info) {
        snprintf(error, error_size, "--metrics %s: cannot listen there (in use?)", address);
        http_destroy(&self);
        return NULL;
    }
    self->port = info->port;
    http_format_url(&bind_to, self->port, self->url, sizeof self->url);
    return self;
}

int http_token_load(const char *file, char *token, size_t size)
{
    if (file) {
        FILE *in = fopen(file, "r");
        if (!in || !fgets(token, (int) size, in)) {
            fprintf(stderr, "asyncq-broker: --metrics-token-file %s: cannot read it\n", file);
            if (in)
                fclose(in);
            return -1;
        }
        fclose(in);
        token[strcspn(token, "\r\n")] = '\0';
        if (strlen(token) < 16) {
            fprintf(stderr, "asyncq-broker: --metrics-token-file %s: the token needs at least "
                            "16 characters\n", file);
            return -1;
        }
        return 0;
    }
    uint8_t random[16];
    if (getrandom(random, sizeof random, 0) != (ssize_t) sizeof random) {
        fprintf(stderr, "asyncq-broker: cannot make a dashboard token\n");
        return -1;
    }
    for (size_t i = 0; i < sizeof random && 2 * i + 2 < size; i++)
        snprintf(token + 2 * i, 3, "%02x", random[i]);
    return 0;
}

void http_destroy(http_t **self_p)
{
    http_t *self = *self_p;
    if (!self)
        return;
    if (self->daemon)
        MHD_stop_daemon(self->daemon); /* completes every request: frees the actions */
    metrics_destroy(&self->metrics);
    free(self);
    *self_p = NULL;
}

int http_port(const http_t *self)
{
    return self->port;
}

const char *http_url(const http_t *self)
{
    return self->url;
}

int http_fd(const http_t *self)
{
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(self->daemon, MHD_DAEMON_INFO_EPOLL_FD);
    return info ? info->epoll_fd : -1;
}

int http_timeout_ms(http_t *self)
{
    if (self->again)
        return 0; /* resumed connections, or a close: see s_on_connection */
    int64_t now = broker_now_ms();
    int64_t next = http_links_expire(&self->links, now); /* what it shuts, epoll reports */
    MHD_UNSIGNED_LONG_LONG timeout;
    int64_t wait = -1;
    if (MHD_get_timeout(self->daemon, &timeout) == MHD_YES)
        wait = timeout > 60000 ? 60000 : (int64_t) timeout;
    if (next >= 0 && (wait < 0 || next - now < wait))
        wait = next - now;
    return wait < 0 ? -1 : (int) wait;
}

void http_run(http_t *self)
{
    self->again = 0;
    http_links_expire(&self->links, broker_now_ms());
    self->until_us = broker_now_us() + HTTP_SLICE_US;
    MHD_run(self->daemon);
}

void http_resume(http_t *self)
{
    /* A resumed connection is answered by the next http_run, which the
       loop then makes at once (http_timeout_ms says 0). */
    for (action_t *action = self->waiting; action; action = action->next)
        if (action->suspended && broker_log_reached(self->broker, action->position)) {
            action->suspended = 0;
            self->again = 1;
            MHD_resume_connection(action->connection);
        }
}
