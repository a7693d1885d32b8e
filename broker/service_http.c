#include "service_http.h"

#include <arpa/inet.h>
#include <czmq.h>
#include <jansson.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include "asyncq/codec.h"
#include "broker.h"
#include "fetch.h"
#include "http.h"

/*  Families of one /metrics, at most (a broker writes about 40). */
#define FAMILIES_MAX 4096
/*  How often the deadlines of connections are looked at. */
#define WATCH_MS 100

struct service_http {
    struct MHD_Daemon *daemon;
    int count;
    struct sockaddr_storage shards[SHARDS_MAX];
    socklen_t shard_size;
    char *of;             /* --dashboard-of: the brokers' ports by name, resolved at each ask */
    char *names[SHARDS_MAX]; /* in `of` */
    char token[128];
    char url[300];
    char id[40];
    int64_t started_ms;
    pthread_mutex_t lock; /* guards the links */
    pthread_cond_t wake;
    pthread_t watch;
    int watching, stopping;
    http_links_t links;
};

/* ------------------------------------------------- connections' deadlines */

/*  The deadlines of http.c's connections (http_links_expire), kept by a
    thread of its own: libmicrohttpd's per-connection threads keep only an
    idle time-out. */
static void *s_watch(void *arg)
{
    service_http_t *self = arg;
    pthread_mutex_lock(&self->lock);
    while (!self->stopping) {
        http_links_expire(&self->links, broker_now_ms());
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_nsec += WATCH_MS * 1000000L;
        if (until.tv_nsec >= 1000000000L) {
            until.tv_sec++;
            until.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&self->wake, &self->lock, &until);
    }
    pthread_mutex_unlock(&self->lock);
    return NULL;
}

static void s_on_connection(void *cls, struct MHD_Connection *connection, void **socket_context,
                            enum MHD_ConnectionNotificationCode code)
{
    service_http_t *self = cls;
    pthread_mutex_lock(&self->lock);
    if (code == MHD_CONNECTION_NOTIFY_CLOSED) {
        http_links_closed(&self->links, *socket_context);
        *socket_context = NULL;
    }
    else {
        int64_t now = broker_now_ms();
        *socket_context = http_links_opened(&self->links, connection, now);
        http_links_expire(&self->links, now);
    }
    pthread_mutex_unlock(&self->lock);
}

/*  The connection's request is read (answering) or answered (waiting). */
static void s_mark(service_http_t *self, struct MHD_Connection *connection, int answering)
{
    pthread_mutex_lock(&self->lock);
    http_links_mark(&self->links, connection, answering, broker_now_ms());
    pthread_mutex_unlock(&self->lock);
}

/* ------------------------------------------------------- asking shards */

/*  Asks shards first .. first + count - 1 the same request (the token
    sent along if `with_token`); their answers, or NULL if out of memory. */
static fetch_t *s_ask(service_http_t *self, int first, int count, const char *method,
                      const char *target, int with_token, int timeout_ms)
{
    int post = strcmp(method, "POST") == 0;
    /* SERVICE_ASK_HEADER: a service port asked by one is refused, so that
       a --dashboard-of that lists itself or another service cannot loop. */
    char *request = zsys_sprintf("%s %s HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n"
                                 SERVICE_ASK_HEADER ": 1\r\n%s%s%s%s\r\n",
                                 method, target, with_token ? "Authorization: Bearer " : "",
                                 with_token ? self->token : "", with_token ? "\r\n" : "",
                                 post ? "Content-Length: 0\r\n" : "");
    fetch_t *fetches = request ? calloc((size_t) count, sizeof *fetches) : NULL;
    if (!fetches) {
        zstr_free(&request);
        return NULL;
    }
    char why[SHARDS_MAX][sizeof fetches->error];
    for (int i = 0; i < count; i++) {
        fetches[i].address = self->shards[first + i];
        fetches[i].address_size = self->shard_size;
        fetches[i].request = request;
        fetches[i].request_size = strlen(request);
        /* A broker of another host, by name: where it is now (a container
           started again may have a new address). */
        char error[256];
        if (self->of && http_resolve(self->names[first + i], &fetches[i].address,
                                     &fetches[i].address_size, error, sizeof error)) {
            snprintf(why[i], sizeof why[i], "%.100s does not resolve", self->names[first + i]);
            fetches[i].unreachable = why[i];
        }
    }
    fetch_all(fetches, (size_t) count, timeout_ms, SERVICE_ANSWER_MAX);
    zstr_free(&request);
    return fetches;
}

static void s_release(fetch_t *fetches, int count)
{
    for (int i = 0; fetches && i < count; i++)
        fetch_clear(&fetches[i]);
    free(fetches);
}

/*  A shard's answer as JSON (an object), or NULL. */
static json_t *s_parse(const fetch_t *fetch)
{
    json_t *json = fetch->body ? json_loadb(fetch->body, fetch->size, 0, NULL) : NULL;
    if (json && !json_is_object(json)) {
        json_decref(json);
        json = NULL;
    }
    return json;
}

/*  Shard K's failure as the answer: no answer (502), or its status with
    its error, naming it. */
static enum MHD_Result s_shard_error(struct MHD_Connection *connection, int shard,
                                     const fetch_t *fetch)
{
    char text[512];
    unsigned status = MHD_HTTP_BAD_GATEWAY;
    if (!fetch->status)
        snprintf(text, sizeof text, "shard %d did not answer: %s", shard, fetch->error);
    else if (fetch->status / 100 == 2) /* a 200 that is not JSON */
        snprintf(text, sizeof text, "shard %d: an answer that is not JSON", shard);
    else {
        json_t *body = s_parse(fetch);
        const char *why = json_string_value(json_object_get(body, "error"));
        if (why)
            snprintf(text, sizeof text, "shard %d: %s", shard, why);
        else
            snprintf(text, sizeof text, "shard %d: HTTP %d", shard, fetch->status);
        json_decref(body);
        status = (unsigned) fetch->status;
    }
    return http_json(connection, status, json_pack("{s:s,s:i}", "error", text, "shard", shard));
}

/* -------------------------------------------------------- adding up JSON */

static int s_state_rank(const char *state)
{
    return !state ? -1 : strcmp(state, "open") == 0 ? 0 : strcmp(state, "draining") == 0 ? 1 : 2;
}

static int s_ends_with(const char *text, const char *end)
{
    size_t a = strlen(text), b = strlen(end);
    return a >= b && strcmp(text + a - b, end) == 0;
}

/*  Adds one shard's object to the sum of the others': counts (integers)
    summed, but times in ms (`*_ms`) and reals the greatest; `state` and
    `was` the least open; true if either is; arrays joined (held_ids to
    20, dead_items to 100, as a broker shows them); other values kept from
    the first. Out of memory leaves a sum short, never wrong in form. */
static void s_add(json_t *into, json_t *from)
{
    const char *key;
    json_t *value;
    json_object_foreach(from, key, value) {
        json_t *have = json_object_get(into, key);
        if (!have)
            json_object_set_new(into, key, json_deep_copy(value));
        else if (json_is_integer(have) && json_is_integer(value)) {
            json_int_t a = json_integer_value(have), b = json_integer_value(value);
            json_integer_set(have, s_ends_with(key, "_ms") ? (a > b ? a : b) : a + b);
        }
        else if (json_is_real(have) && json_is_number(value)) {
            if (json_number_value(value) > json_real_value(have))
                json_real_set(have, json_number_value(value));
        }
        else if (json_is_boolean(have) && json_is_boolean(value)) {
            if (json_is_true(value))
                json_object_set_new(into, key, json_true());
        }
        else if (json_is_string(have) && json_is_string(value)
                 && (strcmp(key, "state") == 0 || strcmp(key, "was") == 0)) {
            if (s_state_rank(json_string_value(value)) > s_state_rank(json_string_value(have)))
                json_string_set(have, json_string_value(value));
        }
        else if (json_is_array(have) && json_is_array(value)) {
            size_t cap = strcmp(key, "held_ids") == 0     ? 20
                         : strcmp(key, "dead_items") == 0 ? HTTP_DEAD_SHOWN
                                                          : (size_t) -1;
            size_t i;
            json_t *element;
            json_array_foreach(value, i, element) {
                if (json_array_size(have) >= cap)
                    break;
                json_array_append(have, element);
            }
        }
    }
}

/*  Adds `entry` to the sum kept under `key` in `sums`. */
static void s_add_keyed(json_t *sums, const char *key, json_t *entry)
{
    json_t *sum = json_object_get(sums, key);
    if (sum)
        s_add(sum, entry);
    else
        json_object_set_new(sums, key, json_deep_copy(entry));
}

static int s_compare_keys(const void *a, const void *b)
{
    return strcmp(*(const char *const *) a, *(const char *const *) b);
}

/*  The sums, sorted by their keys, as an array (takes `sums`). */
static json_t *s_sorted(json_t *sums)
{
    json_t *list = json_array();
    size_t count = json_object_size(sums), n = 0;
    const char **keys = calloc(count + 1, sizeof *keys);
    const char *key;
    json_t *value;
    if (keys && list) {
        json_object_foreach(sums, key, value)
            keys[n++] = key;
        qsort(keys, n, sizeof *keys, s_compare_keys);
        for (size_t i = 0; i < n; i++)
            json_array_append(list, json_object_get(sums, keys[i]));
    }
    free(keys);
    json_decref(sums);
    return list;
}

/* ---------------------------------------------------------- /stats.json */

/*  Shard K's entry in `shards`: its stats.json with its number first, or
    the reason there is none. The stats (borrowed) when it answered. */
static json_t *s_shard_stats(const fetch_t *fetch, int shard, json_t **entry)
{
    json_t *stats = fetch->status == 200 ? s_parse(fetch) : NULL;
    if (!json_is_object(json_object_get(stats, "broker"))
        || !json_is_array(json_object_get(stats, "queues"))
        || !json_is_array(json_object_get(stats, "consumers"))) {
        char why[300];
        json_t *body = fetch->status && fetch->status != 200 ? s_parse(fetch) : NULL;
        const char *said = json_string_value(json_object_get(body, "error"));
        if (!fetch->status)
            snprintf(why, sizeof why, "%s", fetch->error);
        else if (fetch->status != 200)
            snprintf(why, sizeof why, "HTTP %d%s%.200s", fetch->status, said ? ": " : "",
                     said ? said : "");
        else
            snprintf(why, sizeof why, "an answer that is not its stats");
        json_decref(stats);
        json_decref(body);
        *entry = json_pack("{s:i,s:s}", "shard", shard, "error", why);
        return NULL;
    }
    *entry = json_pack("{s:i}", "shard", shard);
    if (*entry)
        json_object_update(*entry, stats);
    json_decref(stats);
    return *entry;
}

static json_t *s_stats_merge(service_http_t *self, fetch_t *fetches)
{
    json_t *shards = json_array(), *queues = json_object(), *consumers = json_object();
    json_t *broker = NULL;
    for (int k = 0; k < self->count; k++) {
        json_t *entry = NULL;
        json_t *stats = s_shard_stats(&fetches[k], k, &entry);
        json_array_append_new(shards, entry);
        if (!stats)
            continue;
        json_t *b = json_object_get(stats, "broker");
        if (broker)
            s_add(broker, b);
        else
            broker = json_deep_copy(b);
        size_t i;
        json_t *q, *c;
        json_array_foreach(json_object_get(stats, "queues"), i, q)
            if (json_is_string(json_object_get(q, "name")))
                s_add_keyed(queues, json_string_value(json_object_get(q, "name")), q);
        json_array_foreach(json_object_get(stats, "consumers"), i, c) {
            const char *queue = json_string_value(json_object_get(c, "queue"));
            const char *client = json_string_value(json_object_get(c, "client"));
            if (!queue || !client)
                continue;
            char *key = zsys_sprintf("%s\n%s", queue, client); /* sorts by queue, client */
            if (key)
                s_add_keyed(consumers, key, c);
            zstr_free(&key);
        }
    }
    json_t *root = NULL;
    if (broker) { /* the service's own: its id, its uptime, now */
        json_object_set_new(broker, "id", json_string(self->id));
        json_object_set_new(broker, "uptime_seconds",
                            json_real((double) (broker_now_ms() - self->started_ms) / 1000.0));
        json_object_set_new(broker, "time_ms",
                            json_integer((json_int_t) broker_wall_ms()));
        json_object_set_new(broker, "queues", json_integer((json_int_t) json_object_size(queues)));
        root = json_pack("{s:o,s:o,s:o,s:o}", "broker", broker, "queues", s_sorted(queues),
                         "consumers", s_sorted(consumers), "shards", shards);
    }
    else {
        json_decref(queues);
        json_decref(consumers);
        json_decref(shards);
    }
    return root;
}

static enum MHD_Result s_stats(service_http_t *self, struct MHD_Connection *connection)
{
    fetch_t *fetches = s_ask(self, 0, self->count, "GET", "/stats.json", 0, SERVICE_ASK_MS);
    if (!fetches)
        return http_error(connection, MHD_HTTP_INTERNAL_SERVER_ERROR, "out of memory");
    json_t *root = s_stats_merge(self, fetches);
    enum MHD_Result rc;
    if (root)
        rc = http_json(connection, MHD_HTTP_OK, root);
    else { /* none answered: the page says the service is unreachable */
        char text[300];
        snprintf(text, sizeof text, "no shard answered (shard 0: %s)",
                 fetches[0].status ? "an answer that is not its stats" : fetches[0].error);
        rc = http_error(connection, MHD_HTTP_BAD_GATEWAY, text);
    }
    s_release(fetches, self->count);
    return rc;
}

/* ------------------------------------------------------------- /metrics */

typedef struct {
    const char *at;
    size_t size;
} span_t;

/*  One family: its HELP and TYPE lines (the first shard's that has it),
    and its samples, a span of lines of each shard's text. */
typedef struct {
    const char *name;
    size_t name_size;
    span_t help, type;
    span_t *spans;
    size_t spans_count, spans_capacity;
} family_t;

typedef struct {
    family_t *list;
    size_t count, capacity;
    int failed;
} families_t;

/*  The family `name`, added if new; -1 if out of memory or past
    FAMILIES_MAX. */
static long s_family(families_t *self, const char *name, size_t size)
{
    for (size_t i = 0; i < self->count; i++)
        if (self->list[i].name_size == size && memcmp(self->list[i].name, name, size) == 0)
            return (long) i;
    if (self->count == self->capacity) {
        size_t capacity = self->capacity ? self->capacity * 2 : 64;
        family_t *list = capacity <= FAMILIES_MAX ? realloc(self->list, capacity * sizeof *list)
                                                  : NULL;
        if (!list) {
            self->failed = 1;
            return -1;
        }
        self->list = list;
        self->capacity = capacity;
    }
    self->list[self->count] = (family_t){.name = name, .name_size = size};
    return (long) self->count++;
}

static void s_sample_lines(families_t *self, family_t *family, const char *line, size_t size)
{
    span_t *last = family->spans_count ? &family->spans[family->spans_count - 1] : NULL;
    if (last && last->at + last->size == line) {
        last->size += size;
        return;
    }
    if (family->spans_count == family->spans_capacity) {
        size_t capacity = family->spans_capacity ? family->spans_capacity * 2 : 8;
        span_t *spans = realloc(family->spans, capacity * sizeof *spans);
        if (!spans) {
            self->failed = 1;
            return;
        }
        family->spans = spans;
        family->spans_capacity = capacity;
    }
    family->spans[family->spans_count++] = (span_t){line, size};
}

/*  One shard's text into the families: its lines stay where they are. A
    last line without its newline is left out. */
static void s_scan(families_t *self, const char *text, size_t size)
{
    const char *end = text + size;
    long current = -1;
    for (const char *line = text; line < end && !self->failed;) {
        const char *eol = memchr(line, '\n', (size_t) (end - line));
        if (!eol)
            break;
        size_t length = (size_t) (eol + 1 - line);
        if (length > 7 && (memcmp(line, "# HELP ", 7) == 0 || memcmp(line, "# TYPE ", 7) == 0)) {
            const char *name = line + 7;
            size_t name_size = strcspn(name, " \n");
            if ((current = s_family(self, name, name_size)) >= 0) {
                span_t *slot = line[2] == 'H' ? &self->list[current].help
                                              : &self->list[current].type;
                if (!slot->at)
                    *slot = (span_t){line, length};
            }
        }
        else if (line[0] != '#' && line[0] != '\n') { /* a sample */
            if (current < 0) /* none announced: a family of its own, untyped */
                current = s_family(self, line, strcspn(line, "{ \n"));
            if (current >= 0)
                s_sample_lines(self, &self->list[current], line, length);
        }
        line = eol + 1;
    }
}

static char *s_metrics_merge(service_http_t *self, fetch_t *fetches, size_t *size)
{
    families_t families = {0};
    for (int k = 0; k < self->count; k++)
        if (fetches[k].status == 200)
            s_scan(&families, fetches[k].body, fetches[k].size);
    static const char up_head[] =
        "# HELP asyncq_service_shard_up 1 if the shard answered this scrape of the service, 0 "
        "if not (its samples are then missing).\n# TYPE asyncq_service_shard_up gauge\n";
    size_t total = sizeof up_head + (size_t) self->count * 48;
    for (size_t i = 0; i < families.count; i++) {
        total += families.list[i].help.size + families.list[i].type.size;
        for (size_t s = 0; s < families.list[i].spans_count; s++)
            total += families.list[i].spans[s].size;
    }
    char *text = families.failed ? NULL : malloc(total);
    size_t used = 0;
    for (size_t i = 0; text && i < families.count; i++) {
        family_t *family = &families.list[i];
        const span_t *head[] = {&family->help, &family->type};
        for (int h = 0; h < 2; h++)
            if (head[h]->at) {
                memcpy(text + used, head[h]->at, head[h]->size);
                used += head[h]->size;
            }
        for (size_t s = 0; s < family->spans_count; s++) {
            memcpy(text + used, family->spans[s].at, family->spans[s].size);
            used += family->spans[s].size;
        }
    }
    if (text) {
        memcpy(text + used, up_head, sizeof up_head - 1);
        used += sizeof up_head - 1;
        for (int k = 0; k < self->count; k++)
            used += (size_t) snprintf(text + used, total - used,
                                      "asyncq_service_shard_up{shard=\"%d\"} %d\n", k,
                                      fetches[k].status == 200);
    }
    for (size_t i = 0; i < families.count; i++)
        free(families.list[i].spans);
    free(families.list);
    *size = used;
    return text;
}

static enum MHD_Result s_metrics(service_http_t *self, struct MHD_Connection *connection)
{
    fetch_t *fetches = s_ask(self, 0, self->count, "GET", "/metrics", 0, SERVICE_SCRAPE_MS);
    size_t size = 0;
    char *text = fetches ? s_metrics_merge(self, fetches, &size) : NULL;
    s_release(fetches, self->count);
    if (!text)
        return http_error(connection, MHD_HTTP_INTERNAL_SERVER_ERROR, "out of memory");
    return http_answer(connection, MHD_HTTP_OK, "text/plain; version=0.0.4; charset=utf-8", text,
                       size, MHD_RESPMEM_MUST_FREE);
}

/* ------------------------------------------- /api/dead and the actions */

/*  One dead item's request, to the shard its id names: its answer as it
    gave it. */
static enum MHD_Result s_to_owner(service_http_t *self, struct MHD_Connection *connection,
                                  const char *method, const char *path, const http_target_t *target)
{
    int shard = (int) (target->id >> 56);
    char text[128];
    if (shard >= self->count) {
        snprintf(text, sizeof text, "item %llu is not a dead item of queue %s",
                 (unsigned long long) target->id, target->name);
        return http_error(connection, MHD_HTTP_NOT_FOUND, text);
    }
    char *request = zsys_sprintf("%s?queue=%s&id=%llu", path, target->name,
                                 (unsigned long long) target->id);
    fetch_t *fetch = request ? s_ask(self, shard, 1, method, request, 1, SERVICE_ASK_MS) : NULL;
    zstr_free(&request);
    if (!fetch)
        return http_error(connection, MHD_HTTP_INTERNAL_SERVER_ERROR, "out of memory");
    enum MHD_Result rc;
    if (!fetch->status || !fetch->body)
        rc = s_shard_error(connection, shard, fetch);
    else {
        rc = http_answer(connection, (unsigned) fetch->status, "application/json", fetch->body,
                         fetch->size, MHD_RESPMEM_MUST_FREE);
        fetch->body = NULL; /* libmicrohttpd's now */
    }
    s_release(fetch, 1);
    return rc;
}

typedef struct {
    int died_null;
    const char *died;
    size_t order; /* shard by shard, each oldest death first */
    json_t *item;
} dead_t;

static int s_compare_dead(const void *a, const void *b)
{
    const dead_t *x = a, *y = b;
    if (x->died_null != y->died_null)
        return x->died_null ? -1 : 1; /* died before deaths were dated */
    int by_time = x->died_null ? 0 : strcmp(x->died, y->died);
    return by_time ? by_time : x->order < y->order ? -1 : x->order > y->order;
}

/*  The dead items of every shard in one list, oldest death first (each
    shard lists its oldest, so the oldest of all are among them), at most
    HTTP_DEAD_SHOWN. */
static void s_dead_sort(json_t *sum)
{
    json_t *items = json_object_get(sum, "items");
    size_t count = json_array_size(items);
    dead_t *dead = calloc(count + 1, sizeof *dead);
    json_t *sorted = json_array();
    if (!dead || !sorted) {
        free(dead);
        json_decref(sorted);
        return;
    }
    for (size_t i = 0; i < count; i++) {
        json_t *item = json_array_get(items, i), *died = json_object_get(item, "died");
        dead[i] = (dead_t){!json_is_string(died), json_string_value(died), i, item};
    }
    qsort(dead, count, sizeof *dead, s_compare_dead);
    for (size_t i = 0; i < count && i < HTTP_DEAD_SHOWN; i++)
        json_array_append(sorted, dead[i].item);
    free(dead);
    json_object_set_new(sum, "items", sorted);
}

/*  One request on a whole queue, to every shard: their 200s added up, a
    404 (the shard has no such queue) left out unless every shard said
    it, or the first other error. */
static enum MHD_Result s_to_all(service_http_t *self, struct MHD_Connection *connection,
                                const char *method, const char *path, const http_target_t *target)
{
    char *request = zsys_sprintf("%s?queue=%s", path, target->name);
    fetch_t *fetches =
        request ? s_ask(self, 0, self->count, method, request, 1, SERVICE_ASK_MS) : NULL;
    zstr_free(&request);
    if (!fetches)
        return http_error(connection, MHD_HTTP_INTERNAL_SERVER_ERROR, "out of memory");
    int failed = -1;
    json_t *sum = NULL;
    for (int k = 0; k < self->count && failed < 0; k++) {
        json_t *answer = fetches[k].status == 200 ? s_parse(&fetches[k]) : NULL;
        if (answer) {
            if (sum)
                s_add(sum, answer);
            else
                sum = json_incref(answer);
        }
        else if (fetches[k].status != 404)
            failed = k;
        json_decref(answer);
    }
    enum MHD_Result rc;
    if (failed >= 0)
        rc = s_shard_error(connection, failed, &fetches[failed]);
    else if (!sum) /* no shard has the queue: as one broker says it */
        rc = http_error(connection, MHD_HTTP_NOT_FOUND, "no such queue");
    else {
        if (strcmp(path, "/api/dead") == 0)
            s_dead_sort(sum);
        rc = http_json(connection, MHD_HTTP_OK, json_incref(sum));
    }
    json_decref(sum);
    s_release(fetches, self->count);
    return rc;
}

/*  GET /api/dead?queue=Q[&id=N], POST /api/ACTION?queue=Q[&id=N]. */
static enum MHD_Result s_queue_request(service_http_t *self, struct MHD_Connection *connection,
                                       const char *method, const char *path, int takes_id)
{
    http_target_t target;
    enum MHD_Result answered = MHD_NO;
    if (http_target(connection, self->token, takes_id, &target, &answered))
        return answered;
    return target.has_id ? s_to_owner(self, connection, method, path, &target)
                         : s_to_all(self, connection, method, path, &target);
}

static enum MHD_Result s_on_request(void *cls, struct MHD_Connection *connection, const char *url,
                                    const char *method, const char *version,
                                    const char *upload_data, size_t *upload_data_size,
                                    void **state)
{
    (void) version, (void) upload_data;
    static int started; /* a POST's first call (its headers) was seen */
    service_http_t *self = cls;
    s_mark(self, connection, 1);
    if (MHD_lookup_connection_value(connection, MHD_HEADER_KIND, SERVICE_ASK_HEADER))
        return http_error(connection, 508, "this is a service's port (asyncq-broker --shards or "
                                           "--dashboard-of), not a broker's: list the brokers' "
                                           "own --metrics ports");
    enum MHD_Result answered = MHD_NO;
    http_path_t path = http_route(connection, url, method, &answered);
    if (path < HTTP_ACTIONS) {
        /* Called for the headers, for each piece of the body (ignored),
           and once more at the end. */
        if (!*state) {
            *state = &started;
            return MHD_YES;
        }
        if (*upload_data_size) {
            *upload_data_size = 0;
            return MHD_YES;
        }
        int takes_id = path == HTTP_PATH_REQUEUE || path == HTTP_PATH_PURGE_DEAD;
        return s_queue_request(self, connection, "POST", url, takes_id);
    }
    switch (path) {
    case HTTP_PATH_DEAD:
        return s_queue_request(self, connection, "GET", url, 1);
    case HTTP_PATH_METRICS:
        return s_metrics(self, connection);
    case HTTP_PATH_STATS:
        return s_stats(self, connection);
    case HTTP_PATH_DASHBOARD:
        return http_dashboard(connection);
    default:
        return answered;
    }
}

static void s_on_completed(void *cls, struct MHD_Connection *connection, void **state,
                           enum MHD_RequestTerminationCode code)
{
    (void) code, (void) state;
    s_mark(cls, connection, 0);
}

/* ------------------------------------------------------------- its life */

/*  Where the shards listen: `bind_to`'s host (loopback if it is every
    interface), from the next port up. */
static void s_shard_addresses(service_http_t *self, const struct sockaddr_storage *bind_to,
                              socklen_t size, int port)
{
    for (int k = 0; k < self->count; k++) {
        struct sockaddr_storage *to = &self->shards[k];
        memcpy(to, bind_to, size);
        if (to->ss_family == AF_INET6) {
            struct sockaddr_in6 *v6 = (struct sockaddr_in6 *) to;
            if (IN6_IS_ADDR_UNSPECIFIED(&v6->sin6_addr))
                v6->sin6_addr = in6addr_loopback;
            v6->sin6_port = htons((uint16_t) (port + 1 + k));
        }
        else {
            struct sockaddr_in *v4 = (struct sockaddr_in *) to;
            if (v4->sin_addr.s_addr == htonl(INADDR_ANY))
                v4->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
            v4->sin_port = htons((uint16_t) (port + 1 + k));
        }
    }
    self->shard_size = size;
}

/*  The brokers' HTTP ports of `of`, each checked for form (resolved later,
    at each ask). 0, or -1 with the reason. */
static int s_names(service_http_t *self, const char *of, char *error, size_t error_size)
{
    self->of = strdup(of);
    if (!self->of) {
        snprintf(error, error_size, "out of memory");
        return -1;
    }
    self->count = 0;
    for (char *at = self->of, *next; at; at = next) {
        next = strchr(at, ',');
        if (next)
            *next++ = '\0';
        const char *colon = strrchr(at, ':');
        int port = colon ? atoi(colon + 1) : 0;
        if (!*at || !colon || colon == at || !colon[1] || strchr(at, '/')
            || strspn(colon + 1, "0123456789") != strlen(colon + 1) || strlen(colon + 1) > 5
            || port < 1 || port > 65535) {
            snprintf(error, error_size, "--dashboard-of: '%s' is not HOST:PORT (a broker's "
                                        "--metrics port)", at);
            return -1;
        }
        if (self->count == SHARDS_MAX) {
            snprintf(error, error_size, "--dashboard-of: %d brokers at most", SHARDS_MAX);
            return -1;
        }
        self->names[self->count++] = at;
    }
    return 0;
}

int service_http_check_of(const char *of, char *error, size_t error_size)
{
    service_http_t names = {0};
    int rc = s_names(&names, of, error, error_size);
    free(names.of);
    return rc;
}

service_http_t *service_http_new(const char *address, int shards, const char *of,
                                 const char *token, char *error, size_t error_size)
{
    struct sockaddr_storage bind_to;
    socklen_t length;
    if (http_resolve(address, &bind_to, &length, error, error_size))
        return NULL;
    int port = ntohs(bind_to.ss_family == AF_INET6 ? ((struct sockaddr_in6 *) &bind_to)->sin6_port
                                                   : ((struct sockaddr_in *) &bind_to)->sin_port);
    if (!of && (shards < 1 || shards > SHARDS_MAX || port == 0 || port + shards > 65535)) {
        snprintf(error, error_size, "--metrics %s: the service needs a port with %d more above it",
                 address, shards);
        return NULL;
    }
    service_http_t *self = calloc(1, sizeof *self);
    if (!self) {
        snprintf(error, error_size, "out of memory");
        return NULL;
    }
    self->count = shards;
    self->started_ms = broker_now_ms();
    snprintf(self->token, sizeof self->token, "%s", token);
    zuuid_t *uuid = zuuid_new();
    snprintf(self->id, sizeof self->id, "%s", uuid ? zuuid_str(uuid) : "service");
    zuuid_destroy(&uuid);
    if (of && s_names(self, of, error, error_size)) {
        service_http_destroy(&self);
        return NULL;
    }
    if (!of)
        s_shard_addresses(self, &bind_to, length, port);
    pthread_mutex_init(&self->lock, NULL);
    pthread_cond_init(&self->wake, NULL);
    /* Its threads leave the supervisor's signals to its main thread (they
       inherit this mask). */
    sigset_t block, was;
    sigemptyset(&block);
    sigaddset(&block, SIGTERM);
    sigaddset(&block, SIGINT);
    sigaddset(&block, SIGHUP);
    sigaddset(&block, SIGCHLD);
    pthread_sigmask(SIG_BLOCK, &block, &was);
    self->watching = pthread_create(&self->watch, NULL, s_watch, self) == 0;
    /* poll(2), not select(2): descriptors past FD_SETSIZE work too. */
    if (self->watching)
        self->daemon = http_start(MHD_USE_INTERNAL_POLLING_THREAD
                                      | MHD_USE_THREAD_PER_CONNECTION | MHD_USE_POLL,
                                  &bind_to, s_on_request, s_on_completed, s_on_connection, self);
    pthread_sigmask(SIG_SETMASK, &was, NULL);
    if (!self->daemon) {
        snprintf(error, error_size, "--metrics %s: cannot listen there (in use?)", address);
        service_http_destroy(&self);
        return NULL;
    }
    http_format_url(&bind_to, port, self->url, sizeof self->url);
    return self;
}

void service_http_destroy(service_http_t **self_p)
{
    service_http_t *self = *self_p;
    if (!self)
        return;
    if (self->daemon)
        MHD_stop_daemon(self->daemon); /* every connection closed: the links freed */
    if (self->watching) {
        pthread_mutex_lock(&self->lock);
        self->stopping = 1;
        pthread_cond_signal(&self->wake);
        pthread_mutex_unlock(&self->lock);
        pthread_join(self->watch, NULL);
    }
    pthread_cond_destroy(&self->wake);
    pthread_mutex_destroy(&self->lock);
    free(self->of);
    free(self);
    *self_p = NULL;
}

const char *service_http_url(const service_http_t *self)
{
    return self->url;
}
