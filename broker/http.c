#include "http.h"

#include <arpa/inet.h>
#include <jansson.h>
#include <microhttpd.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "metrics.h"
#include "persist.h"

/*  broker/web/index.html, embedded at build time (cmake/Embed.cmake). */
extern const unsigned char http_index_html[];
extern const size_t http_index_html_size;

/*  A POST whose change waits for the journal: its connection is suspended
    until the journal position it needs is confirmed. */
typedef struct action {
    struct action *next;
    struct MHD_Connection *connection;
    uint64_t position;
    int suspended;
    int answered;
    char queue[AQ_NAME_MAX + 1];
    uint64_t moved;
} action_t;

struct http {
    broker_t *broker;
    struct MHD_Daemon *daemon;
    char token[128];
    action_t *waiting; /* suspended actions, oldest first */
    int port;
    char url[300];
    int resumed; /* connections resumed since the last MHD_run */
};

static enum MHD_Result s_answer(struct MHD_Connection *connection, unsigned status,
                                const char *type, const void *data, size_t size,
                                enum MHD_ResponseMemoryMode mode)
{
    struct MHD_Response *response = MHD_create_response_from_buffer(size, (void *) data, mode);
    if (!response)
        return MHD_NO;
    MHD_add_response_header(response, MHD_HTTP_HEADER_CONTENT_TYPE, type);
    MHD_add_response_header(response, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
    if (status == MHD_HTTP_UNAUTHORIZED)
        MHD_add_response_header(response, MHD_HTTP_HEADER_WWW_AUTHENTICATE, "Bearer");
    if (status == MHD_HTTP_METHOD_NOT_ALLOWED)
        MHD_add_response_header(response, MHD_HTTP_HEADER_ALLOW, "GET, HEAD, POST");
    enum MHD_Result rc = MHD_queue_response(connection, status, response);
    MHD_destroy_response(response);
    return rc;
}

/*  A JSON answer built with jansson (NULL: out of memory, answered 500). */
static enum MHD_Result s_json(struct MHD_Connection *connection, unsigned status, json_t *body)
{
    char *text = body ? json_dumps(body, JSON_COMPACT) : NULL;
    json_decref(body);
    if (!text)
        return s_answer(connection, MHD_HTTP_INTERNAL_SERVER_ERROR, "text/plain",
                        "out of memory\n", 14, MHD_RESPMEM_PERSISTENT);
    return s_answer(connection, status, "application/json", text, strlen(text),
                    MHD_RESPMEM_MUST_FREE);
}

static enum MHD_Result s_error(struct MHD_Connection *connection, unsigned status,
                               const char *text)
{
    return s_json(connection, status, json_pack("{s:s}", "error", text));
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

static int s_authorized(http_t *self, struct MHD_Connection *connection)
{
    const char *header =
        MHD_lookup_connection_value(connection, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);
    return header && strncmp(header, "Bearer ", 7) == 0 && s_token_matches(header + 7, self->token);
}

static enum MHD_Result s_render(struct MHD_Connection *connection, broker_t *broker,
                                char *(*render)(broker_t *, size_t *), const char *type)
{
    size_t size = 0;
    char *text = render(broker, &size);
    if (!text)
        return s_error(connection, MHD_HTTP_INTERNAL_SERVER_ERROR, "out of memory");
    return s_answer(connection, MHD_HTTP_OK, type, text, size, MHD_RESPMEM_MUST_FREE);
}

/*  POST /api/requeue?queue=NAME, at the end of its request. */
static enum MHD_Result s_requeue(http_t *self, struct MHD_Connection *connection,
                                 action_t *action)
{
    if (action->answered)
        return s_json(connection, MHD_HTTP_OK,
                      json_pack("{s:s,s:I}", "queue", action->queue, "requeued",
                                (json_int_t) action->moved));
    if (!s_authorized(self, connection))
        return s_error(connection, MHD_HTTP_UNAUTHORIZED,
                       "this action needs the dashboard token (Authorization: Bearer TOKEN)");
    const char *name = MHD_lookup_connection_value(connection, MHD_GET_ARGUMENT_KIND, "queue");
    if (!name || !aq_name_is_valid((const uint8_t *) name, strlen(name)))
        return s_error(connection, MHD_HTTP_BAD_REQUEST, "queue=NAME is missing or not a name");
    aq_status_t rc;
    queue_t *queue = broker_queue(self->broker, aq_bytes_str(name), 0, &rc);
    if (!queue)
        return s_error(connection, MHD_HTTP_NOT_FOUND, "no such queue");
    action->moved = broker_requeue_dead(self->broker, queue);
    log_line("dashboard: %llu dead items of %s requeued", (unsigned long long) action->moved,
             queue->name);
    snprintf(action->queue, sizeof action->queue, "%s", queue->name);
    action->answered = 1;
    action->position = persist_appended(self->broker);
    if (persist_is_confirmed(self->broker, action->position))
        return s_requeue(self, connection, action);
    /* Answered once the journal has the change: see http_run. */
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

static enum MHD_Result s_on_request(void *cls, struct MHD_Connection *connection, const char *url,
                                    const char *method, const char *version,
                                    const char *upload_data, size_t *upload_data_size,
                                    void **state)
{
    (void) version, (void) upload_data;
    http_t *self = cls;
    int get = strcmp(method, MHD_HTTP_METHOD_GET) == 0 || strcmp(method, MHD_HTTP_METHOD_HEAD) == 0;
    if (strcmp(url, "/api/requeue") == 0) {
        if (strcmp(method, MHD_HTTP_METHOD_POST) != 0)
            return s_error(connection, MHD_HTTP_METHOD_NOT_ALLOWED, "POST only");
        /* libmicrohttpd calls for the headers, for each piece of the body
           (ignored), and once more at the end. */
        if (!*state) {
            *state = calloc(1, sizeof(action_t));
            return *state ? MHD_YES : MHD_NO;
        }
        if (*upload_data_size) {
            *upload_data_size = 0;
            return MHD_YES;
        }
        return s_requeue(self, connection, *state);
    }
    int known = strcmp(url, "/") == 0 || strcmp(url, "/metrics") == 0
                || strcmp(url, "/stats.json") == 0;
    if (!known)
        return s_error(connection, MHD_HTTP_NOT_FOUND, "no such page");
    if (!get)
        return s_error(connection, MHD_HTTP_METHOD_NOT_ALLOWED, "GET only");
    if (strcmp(url, "/metrics") == 0)
        return s_render(connection, self->broker, metrics_render_prometheus,
                        "text/plain; version=0.0.4; charset=utf-8");
    if (strcmp(url, "/stats.json") == 0)
        return s_render(connection, self->broker, metrics_render_json, "application/json");
    return s_answer(connection, MHD_HTTP_OK, "text/html; charset=utf-8", http_index_html,
                    http_index_html_size, MHD_RESPMEM_PERSISTENT);
}

static void s_on_completed(void *cls, struct MHD_Connection *connection, void **state,
                           enum MHD_RequestTerminationCode code)
{
    (void) connection, (void) code;
    http_t *self = cls;
    action_t *action = *state;
    if (!action)
        return;
    for (action_t **at = &self->waiting; *at; at = &(*at)->next)
        if (*at == action) {
            *at = action->next;
            break;
        }
    free(action);
    *state = NULL;
}

/*  "HOST:PORT", "[V6]:PORT" or "PORT" into an address to bind. */
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

http_t *http_new(broker_t *broker, const char *address, const char *token, char *error,
                 size_t error_size)
{
    struct sockaddr_storage bind_to;
    socklen_t length;
    if (s_resolve(address, &bind_to, &length)) {
        snprintf(error, error_size, "--metrics %s: not an address (HOST:PORT)", address);
        return NULL;
    }
    http_t *self = calloc(1, sizeof *self);
    if (!self) {
        snprintf(error, error_size, "out of memory");
        return NULL;
    }
    self->broker = broker;
    snprintf(self->token, sizeof self->token, "%s", token);
    unsigned flags = MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME;
    if (bind_to.ss_family == AF_INET6)
        flags |= MHD_USE_IPv6;
    self->daemon = MHD_start_daemon(
        flags, 0, NULL, NULL, s_on_request, self, MHD_OPTION_SOCK_ADDR, &bind_to,
        MHD_OPTION_CONNECTION_LIMIT, (unsigned) HTTP_CONNECTIONS_MAX,
        MHD_OPTION_PER_IP_CONNECTION_LIMIT, (unsigned) HTTP_CONNECTIONS_PER_ADDRESS,
        MHD_OPTION_CONNECTION_TIMEOUT, (unsigned) HTTP_IDLE_S, MHD_OPTION_CONNECTION_MEMORY_LIMIT,
        (size_t) HTTP_MEMORY_MAX, MHD_OPTION_NOTIFY_COMPLETED, s_on_completed, self,
        MHD_OPTION_END);
    const union MHD_DaemonInfo *info =
        self->daemon ? MHD_get_daemon_info(self->daemon, MHD_DAEMON_INFO_BIND_PORT) : NULL;
    if (!info) {
        snprintf(error, error_size, "--metrics %s: cannot listen there (in use?)", address);
        http_destroy(&self);
        return NULL;
    }
    self->port = info->port;
    char host[INET6_ADDRSTRLEN] = "127.0.0.1";
    if (bind_to.ss_family == AF_INET6)
        inet_ntop(AF_INET6, &((struct sockaddr_in6 *) &bind_to)->sin6_addr, host, sizeof host);
    else
        inet_ntop(AF_INET, &((struct sockaddr_in *) &bind_to)->sin_addr, host, sizeof host);
    snprintf(self->url, sizeof self->url, bind_to.ss_family == AF_INET6 ? "http://[%s]:%d"
                                                                         : "http://%s:%d",
             host, self->port);
    return self;
}

void http_destroy(http_t **self_p)
{
    http_t *self = *self_p;
    if (!self)
        return;
    if (self->daemon)
        MHD_stop_daemon(self->daemon); /* completes every request: frees the actions */
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

int http_timeout_ms(const http_t *self)
{
    if (self->resumed)
        return 0; /* libmicrohttpd picks them up in its next run */
    MHD_UNSIGNED_LONG_LONG timeout;
    if (MHD_get_timeout(self->daemon, &timeout) != MHD_YES)
        return -1;
    return timeout > 60000 ? 60000 : (int) timeout;
}

void http_run(http_t *self)
{
    self->resumed = 0;
    MHD_run(self->daemon);
}

void http_resume(http_t *self)
{
    /* A resumed connection is answered by the next http_run, which the
       loop then makes at once (http_timeout_ms says 0). */
    for (action_t *action = self->waiting; action; action = action->next)
        if (action->suspended && persist_is_confirmed(self->broker, action->position)) {
            action->suspended = 0;
            self->resumed = 1;
            MHD_resume_connection(action->connection);
        }
}
