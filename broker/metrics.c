#include "metrics.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "journal.h"
#include "persist.h"

#define DEAD_ITEMS_SHOWN 100
#define HELD_IDS_SHOWN 20

/* ------------------------------------------------------------- the state */

static int s_compare_queues(const void *a, const void *b)
{
    return strcmp((*(queue_t *const *) a)->name, (*(queue_t *const *) b)->name);
}

typedef struct {
    queue_t **list;
    size_t count;
} queues_t;

static void s_collect_queue(void *ctx, void *value)
{
    queues_t *queues = ctx;
    queues->list[queues->count++] = value;
}

/*  The queues, sorted by name (malloc'd; NULL with none or out of memory). */
static queue_t **s_sorted_queues(broker_t *self, size_t *count)
{
    queues_t queues = {calloc(dict_size(self->queues) + 1, sizeof(queue_t *)), 0};
    if (queues.list) {
        dict_each(self->queues, s_collect_queue, &queues);
        qsort(queues.list, queues.count, sizeof *queues.list, s_compare_queues);
    }
    *count = queues.count;
    return queues.list;
}

static uint64_t s_resident_bytes(void)
{
    unsigned long pages = 0, resident = 0;
    FILE *file = fopen("/proc/self/statm", "r");
    if (!file)
        return 0;
    if (fscanf(file, "%lu %lu", &pages, &resident) != 2)
        resident = 0;
    fclose(file);
    return (uint64_t) resident * (uint64_t) sysconf(_SC_PAGESIZE);
}

static double s_wall_seconds(void)
{
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    return (double) now.tv_sec + (double) now.tv_nsec / 1e9;
}

static const char *s_security(const broker_t *self)
{
    return auth_enabled(self->auth) ? "keys" : self->config.insecure ? "insecure" : "loopback";
}

static const char *s_state_name(queue_state_t state)
{
    return state == QUEUE_OPEN ? "open" : state == QUEUE_DRAINING ? "draining" : "discarding";
}

/* ------------------------------------------------------------ Prometheus */

/*  A label value: backslash, double quote and newline escaped. */
static void s_label(FILE *out, const char *value)
{
    for (; *value; value++) {
        if (*value == '\\' || *value == '"')
            fputc('\\', out);
        if (*value == '\n')
            fputs("\\n", out);
        else
            fputc(*value, out);
    }
}

static void s_family(FILE *out, const char *name, const char *type, const char *help)
{
    fprintf(out, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/*  A sample's name and labels: `name{queue="Q",extra}`, either label
    left out when NULL (no braces without labels); the caller adds the
    value. */
static void s_name(FILE *out, const char *name, const char *queue, const char *extra)
{
    fputs(name, out);
    if (!queue && !extra)
        return;
    fputc('{', out);
    if (queue) {
        fputs("queue=\"", out);
        s_label(out, queue);
        fputc('"', out);
    }
    if (extra)
        fprintf(out, "%s%s", queue ? "," : "", extra);
    fputc('}', out);
}

/*  One sample per queue of a figure read by `get`. */
static void s_per_queue(FILE *out, queue_t **queues, size_t count, const char *name,
                        const char *type, const char *help,
                        unsigned long long (*get)(const queue_t *))
{
    s_family(out, name, type, help);
    for (size_t i = 0; i < count; i++) {
        s_name(out, name, queues[i]->name, NULL);
        fprintf(out, " %llu\n", get(queues[i]));
    }
}

/*  The samples of one histogram, for one queue or (NULL) the broker. */
static void s_histogram(FILE *out, const char *name, const char *queue,
                        const histogram_t *histogram)
{
    char sample[128], le[32];
    snprintf(sample, sizeof sample, "%s_bucket", name);
    uint64_t cumulative = 0;
    for (int i = 0; i <= HISTOGRAM_BUCKETS; i++) {
        cumulative += histogram->counts[i];
        if (i < HISTOGRAM_BUCKETS)
            snprintf(le, sizeof le, "le=\"%g\"", (double) histogram_bounds_us[i] / 1e6);
        else
            snprintf(le, sizeof le, "le=\"+Inf\"");
        s_name(out, sample, queue, le);
        fprintf(out, " %llu\n", (unsigned long long) cumulative);
    }
    snprintf(sample, sizeof sample, "%s_sum", name);
    s_name(out, sample, queue, NULL);
    fprintf(out, " %.6f\n", (double) histogram->sum_us / 1e6);
    snprintf(sample, sizeof sample, "%s_count", name);
    s_name(out, sample, queue, NULL);
    fprintf(out, " %llu\n", (unsigned long long) histogram->count);
}

#define GETTER(field)                                                                          \
    static unsigned long long s_get_##field(const queue_t *queue)                             \
    {                                                                                          \
        return (unsigned long long) queue->field;                                              \
    }
GETTER(held_count)
GETTER(consumer_count)
GETTER(joiner_count)
GETTER(put_total)
GETTER(delivered_total)
GETTER(redelivered_total)
GETTER(acked_total)
GETTER(nacked_total)
GETTER(expired_total)
GETTER(dead_lettered_total)
GETTER(discarded_total)

static unsigned long long s_get_outstanding(const queue_t *queue)
{
    return (unsigned long long) queue->ledger.outstanding;
}

static unsigned long long s_get_accepting(const queue_t *queue)
{
    return queue->state == QUEUE_OPEN;
}

static void s_queue_families(FILE *out, queue_t **queues, size_t count)
{
    s_family(out, "asyncq_queue_items", "gauge",
             "Items held by a queue, by state: queued (ready), in_flight (delivered, not acked), "
             "delayed (nacked with a delay), dead (dead-lettered).");
    for (size_t i = 0; i < count; i++) {
        const queue_t *queue = queues[i];
        const char *states[] = {"queued", "in_flight", "delayed", "dead"};
        uint64_t values[] = {queue->ready_count, queue->inflight_count, queue->delayed_count,
                             queue->dead_count};
        for (int s = 0; s < 4; s++) {
            char state[32];
            snprintf(state, sizeof state, "state=\"%s\"", states[s]);
            s_name(out, "asyncq_queue_items", queue->name, state);
            fprintf(out, " %llu\n", (unsigned long long) values[s]);
        }
    }
    s_per_queue(out, queues, count, "asyncq_queue_outstanding", "gauge",
                "Items put and not yet finished (acked, dead-lettered or discarded): what a "
                "join waits for.",
                s_get_outstanding);
    s_per_queue(out, queues, count, "asyncq_queue_held_puts", "gauge",
                "Puts held back by the broker until the queue has room (maxsize).",
                s_get_held_count);
    s_per_queue(out, queues, count, "asyncq_queue_consumers", "gauge",
                "Consumer sessions taking from the queue.", s_get_consumer_count);
    s_per_queue(out, queues, count, "asyncq_queue_joins_waiting", "gauge",
                "JOIN requests waiting on the queue.", s_get_joiner_count);
    s_per_queue(out, queues, count, "asyncq_queue_accepting_puts", "gauge",
                "1 while the queue takes puts, 0 once it was shut down.", s_get_accepting);
    s_per_queue(out, queues, count, "asyncq_puts_total", "counter", "Puts accepted.",
                s_get_put_total);
    s_family(out, "asyncq_puts_refused_total", "counter",
             "Puts refused, by reason (the ERROR code's name in lower case).");
    for (size_t i = 0; i < count; i++)
        for (int r = 0; r < REFUSED_REASONS; r++) {
            char reason[32];
            snprintf(reason, sizeof reason, "reason=\"%s\"", queue_refusal_names[r]);
            s_name(out, "asyncq_puts_refused_total", queues[i]->name, reason);
            fprintf(out, " %llu\n", (unsigned long long) queues[i]->refused_total[r]);
        }
    s_per_queue(out, queues, count, "asyncq_deliveries_total", "counter",
                "Items delivered to consumers, redeliveries included.", s_get_delivered_total);
    s_per_queue(out, queues, count, "asyncq_redeliveries_total", "counter",
                "Deliveries taken back (lease expired, NACK, consumer gone) to be delivered again.",
                s_get_redelivered_total);
    s_per_queue(out, queues, count, "asyncq_acks_total", "counter", "Items acked.",
                s_get_acked_total);
    s_per_queue(out, queues, count, "asyncq_nacks_total", "counter",
                "Items given back by their consumer (NACK).", s_get_nacked_total);
    s_per_queue(out, queues, count, "asyncq_lease_expiries_total", "counter",
                "Deliveries whose lease ran out before an ack.", s_get_expired_total);
    s_per_queue(out, queues, count, "asyncq_dead_lettered_total", "counter",
                "Items dead-lettered after their last allowed attempt.",
                s_get_dead_lettered_total);
    s_per_queue(out, queues, count, "asyncq_discarded_total", "counter",
                "Items discarded by an immediate shutdown.", s_get_discarded_total);
    s_family(out, "asyncq_put_to_delivery_seconds", "histogram",
             "Time from an item's put to its first delivery.");
    for (size_t i = 0; i < count; i++)
        s_histogram(out, "asyncq_put_to_delivery_seconds", queues[i]->name,
                    &queues[i]->to_delivery);
    s_family(out, "asyncq_put_to_ack_seconds", "histogram",
             "Time from an item's put to its ack.");
    for (size_t i = 0; i < count; i++)
        s_histogram(out, "asyncq_put_to_ack_seconds", queues[i]->name, &queues[i]->to_ack);
}

static void s_broker_families(FILE *out, broker_t *self)
{
    double uptime = (double) (broker_now_ms() - self->started_ms) / 1000.0;
    s_family(out, "asyncq_info", "gauge", "The broker's persistence mode and security, as labels.");
    fprintf(out, "asyncq_info{persistence=\"%s\",security=\"%s\"} 1\n", persist_mode(self),
            s_security(self));
    s_family(out, "asyncq_uptime_seconds", "gauge", "Time since the broker started.");
    fprintf(out, "asyncq_uptime_seconds %.3f\n", uptime);
    s_family(out, "process_start_time_seconds", "gauge",
             "Start time of the process since the Unix epoch.");
    fprintf(out, "process_start_time_seconds %.3f\n", s_wall_seconds() - uptime);
    s_family(out, "process_resident_memory_bytes", "gauge", "Resident memory of the broker.");
    fprintf(out, "process_resident_memory_bytes %llu\n",
            (unsigned long long) s_resident_bytes());
    s_family(out, "asyncq_sessions", "gauge", "Client sessions (a HELLO answered).");
    fprintf(out, "asyncq_sessions %zu\n", dict_size(self->peers));
    s_family(out, "asyncq_connections", "gauge", "Connections open on both sockets.");
    fprintf(out, "asyncq_connections %zu\n", conns_count(self->conns));
    s_family(out, "asyncq_connections_refused_total", "counter",
             "Connections refused or closed for a cause (limit, address, no HELLO).");
    fprintf(out, "asyncq_connections_refused_total %llu\n",
            (unsigned long long) conns_refused_total(self->conns));
    s_family(out, "asyncq_producers", "gauge", "Producers remembered (with or without a session).");
    fprintf(out, "asyncq_producers %zu\n", dict_size(self->producers));
    s_family(out, "asyncq_items", "gauge", "Items held, every queue and state.");
    fprintf(out, "asyncq_items %zu\n", store_count(self->store));
    s_family(out, "asyncq_bad_messages_total", "counter",
             "Messages refused as malformed, forbidden or out of place.");
    fprintf(out, "asyncq_bad_messages_total %llu\n", (unsigned long long) self->bad_input.total);
    s_family(out, "asyncq_broker_puts_refused_total", "counter",
             "Puts refused, every queue (and puts for no queue the broker could make), by reason.");
    for (int r = 0; r < REFUSED_REASONS; r++)
        fprintf(out, "asyncq_broker_puts_refused_total{reason=\"%s\"} %llu\n",
                queue_refusal_names[r], (unsigned long long) self->refused_total[r]);
    if (!self->journal)
        return;
    s_family(out, "asyncq_journal_bytes", "gauge", "Bytes of the journal's segments on disk.");
    fprintf(out, "asyncq_journal_bytes %llu\n",
            (unsigned long long) journal_disk_bytes(self->journal));
    s_family(out, "asyncq_journal_segments", "gauge", "Segment files of the journal.");
    fprintf(out, "asyncq_journal_segments %zu\n", journal_segment_count(self->journal));
    histogram_t latency;
    journal_sync_latency(self->journal, &latency);
    s_family(out, "asyncq_journal_sync_seconds", "histogram",
             "Time each fdatasync of the journal took (one per group commit).");
    s_histogram(out, "asyncq_journal_sync_seconds", NULL, &latency);
}

char *metrics_render_prometheus(broker_t *self, size_t *size)
{
    char *text = NULL;
    FILE *out = open_memstream(&text, size);
    if (!out)
        return NULL;
    size_t count;
    queue_t **queues = s_sorted_queues(self, &count);
    s_broker_families(out, self);
    if (queues)
        s_queue_families(out, queues, count);
    free(queues);
    if (fclose(out) != 0) {
        free(text);
        return NULL;
    }
    return text;
}

/* ------------------------------------------------------------------ JSON */

static json_t *s_json_queue(const queue_t *queue)
{
    json_t *dead = json_array();
    size_t shown = 0;
    for (const list_node_t *node = queue->dead.next; node != &queue->dead && shown < DEAD_ITEMS_SHOWN;
         node = node->next, shown++) {
        const item_t *item = list_entry(node, item_t, link);
        json_array_append_new(dead, json_pack("{s:I,s:i,s:I}", "id", (json_int_t) item->id,
                                              "attempts", (int) item->attempts, "size",
                                              (json_int_t) item->size));
    }
    return json_pack("{s:s,s:s,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:o}",
                     "name", queue->name, "state", s_state_name(queue->state), "queued",
                     (json_int_t) queue->ready_count, "in_flight",
                     (json_int_t) queue->inflight_count, "delayed",
                     (json_int_t) queue->delayed_count, "dead", (json_int_t) queue->dead_count,
                     "held_puts", (json_int_t) queue->held_count, "consumers",
                     (json_int_t) queue->consumer_count, "joins_waiting",
                     (json_int_t) queue->joiner_count, "outstanding",
                     (json_int_t) queue->ledger.outstanding, "puts_total",
                     (json_int_t) queue->put_total, "deliveries_total",
                     (json_int_t) queue->delivered_total, "redeliveries_total",
                     (json_int_t) queue->redelivered_total, "acks_total",
                     (json_int_t) queue->acked_total, "nacks_total",
                     (json_int_t) queue->nacked_total, "lease_expiries_total",
                     (json_int_t) queue->expired_total, "dead_lettered_total",
                     (json_int_t) queue->dead_lettered_total, "discarded_total",
                     (json_int_t) queue->discarded_total, "dead_items", dead);
}

typedef struct {
    json_t *list;
    int64_t now_ms;
} consumers_t;

static void s_json_consumer(void *ctx, void *value)
{
    consumers_t *consumers = ctx;
    const peer_t *peer = value;
    const consumer_t *consumer = &peer->consumer;
    if (!consumer->queue || peer->dropped)
        return;
    json_t *ids = json_array();
    int64_t oldest_ms = 0;
    size_t shown = 0;
    for (const list_node_t *node = consumer->held.next; node != &consumer->held;
         node = node->next) {
        const item_t *item = list_entry(node, item_t, link);
        if (shown == 0) /* delivered (or last touched) when its lease started */
            oldest_ms = consumers->now_ms - (item->timer.at - (int64_t) broker_lease_ms(item));
        if (shown++ < HELD_IDS_SHOWN)
            json_array_append_new(ids, json_integer((json_int_t) item->id));
    }
    json_array_append_new(
        consumers->list,
        json_pack("{s:s,s:s,s:I,s:I,s:o,s:I}", "client", peer->client_id, "queue",
                  consumer->queue->name, "credit", (json_int_t) consumer->credit, "held",
                  (json_int_t) consumer->held_count, "held_ids", ids, "oldest_held_ms",
                  (json_int_t) (oldest_ms > 0 ? oldest_ms : 0)));
}

static int s_compare_consumers(const void *a, const void *b)
{
    json_t *x = *(json_t *const *) a, *y = *(json_t *const *) b;
    int by_queue = strcmp(json_string_value(json_object_get(x, "queue")),
                          json_string_value(json_object_get(y, "queue")));
    return by_queue ? by_queue
                    : strcmp(json_string_value(json_object_get(x, "client")),
                             json_string_value(json_object_get(y, "client")));
}

/*  The consumers, sorted by queue then client. */
static json_t *s_json_consumers(broker_t *self)
{
    consumers_t consumers = {json_array(), broker_now_ms()};
    dict_each(self->peers, s_json_consumer, &consumers);
    size_t count = json_array_size(consumers.list);
    json_t **sorted = calloc(count + 1, sizeof *sorted);
    if (!sorted)
        return consumers.list;
    for (size_t i = 0; i < count; i++)
        sorted[i] = json_incref(json_array_get(consumers.list, i));
    qsort(sorted, count, sizeof *sorted, s_compare_consumers);
    json_array_clear(consumers.list);
    for (size_t i = 0; i < count; i++)
        json_array_append_new(consumers.list, sorted[i]);
    free(sorted);
    return consumers.list;
}

char *metrics_render_json(broker_t *self, size_t *size)
{
    size_t count;
    queue_t **queues = s_sorted_queues(self, &count);
    json_t *list = json_array();
    for (size_t i = 0; queues && i < count; i++)
        json_array_append_new(list, s_json_queue(queues[i]));
    free(queues);
    json_t *broker = json_pack(
        "{s:s,s:f,s:I,s:s,s:s,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I}", "id", self->broker_id,
        "uptime_seconds", (double) (broker_now_ms() - self->started_ms) / 1000.0, "time_ms",
        (json_int_t) (s_wall_seconds() * 1000.0), "persistence", persist_mode(self), "security",
        s_security(self), "sessions", (json_int_t) dict_size(self->peers), "connections",
        (json_int_t) conns_count(self->conns), "producers", (json_int_t) dict_size(self->producers),
        "queues", (json_int_t) dict_size(self->queues), "items",
        (json_int_t) store_count(self->store), "bad_messages_total",
        (json_int_t) self->bad_input.total, "resident_memory_bytes",
        (json_int_t) s_resident_bytes(), "journal_bytes",
        (json_int_t) (self->journal ? journal_disk_bytes(self->journal) : 0));
    json_t *root = json_pack("{s:o,s:o,s:o}", "broker", broker, "queues", list, "consumers",
                             s_json_consumers(self));
    char *text = root ? json_dumps(root, JSON_COMPACT | JSON_REAL_PRECISION(9)) : NULL;
    json_decref(root);
    *size = text ? strlen(text) : 0;
    return text;
}
