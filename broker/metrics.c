#include "metrics.h"

#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "journal.h"
#include "persist.h"
#include "sessions.h"

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

/*  Text appended to a growing buffer (the staging of a render). */
typedef struct {
    char *data;
    size_t size, capacity;
    int failed;         /* out of memory: the render ends with an error */
    const char *shard;  /* `shard="K"`, the label every sample carries, or NULL */
} text_t;

static void s_reserve(text_t *out, size_t more)
{
    if (out->failed || out->size + more + 1 <= out->capacity)
        return;
    size_t capacity = out->capacity ? out->capacity : 4096;
    while (capacity < out->size + more + 1)
        capacity *= 2;
    char *data = realloc(out->data, capacity);
    if (!data) {
        out->failed = 1;
        return;
    }
    out->data = data;
    out->capacity = capacity;
}

static void s_puts(text_t *out, const char *text, size_t size)
{
    s_reserve(out, size);
    if (out->failed)
        return;
    memcpy(out->data + out->size, text, size);
    out->size += size;
}

#define s_put(out, literal) s_puts(out, literal, sizeof literal - 1)

__attribute__((format(printf, 2, 3))) static void s_printf(text_t *out, const char *format, ...)
{
    char line[512];
    va_list args;
    va_start(args, format);
    int size = vsnprintf(line, sizeof line, format, args);
    va_end(args);
    if (size < 0)
        return;
    if ((size_t) size < sizeof line) {
        s_puts(out, line, (size_t) size);
        return;
    }
    s_reserve(out, (size_t) size);
    if (out->failed)
        return;
    va_start(args, format);
    vsnprintf(out->data + out->size, (size_t) size + 1, format, args);
    va_end(args);
    out->size += (size_t) size;
}

static void s_u64(text_t *out, uint64_t value)
{
    char digits[24];
    int size = snprintf(digits, sizeof digits, " %llu\n", (unsigned long long) value);
    s_puts(out, digits, (size_t) size);
}

/*  A label value: backslash, double quote and newline escaped. */
static void s_label(text_t *out, const char *value)
{
    const char *plain = value;
    for (; *value; value++)
        if (*value == '\\' || *value == '"' || *value == '\n') {
            s_puts(out, plain, (size_t) (value - plain));
            if (*value == '\n')
                s_put(out, "\\n");
            else
                s_puts(out, (const char[]){'\\', *value}, 2);
            plain = value + 1;
        }
    s_puts(out, plain, (size_t) (value - plain));
}

static void s_family(text_t *out, const char *name, const char *type, const char *help)
{
    s_printf(out, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/*  A sample's name and labels: `name{queue="Q",extra,shard="K"}`, each
    label left out when NULL (no braces without labels); the caller adds
    the value. */
static void s_name(text_t *out, const char *name, const char *queue, const char *extra)
{
    s_puts(out, name, strlen(name));
    if (!queue && !extra && !out->shard)
        return;
    const char *comma = "";
    s_put(out, "{");
    if (queue) {
        s_put(out, "queue=\"");
        s_label(out, queue);
        s_put(out, "\"");
        comma = ",";
    }
    if (extra) {
        s_puts(out, comma, strlen(comma));
        s_puts(out, extra, strlen(extra));
        comma = ",";
    }
    if (out->shard) {
        s_puts(out, comma, strlen(comma));
        s_puts(out, out->shard, strlen(out->shard));
    }
    s_put(out, "}");
}

/*  A sample of the broker's (no queue label). */
static void s_broker_u64(text_t *out, const char *name, const char *labels, uint64_t value)
{
    s_name(out, name, NULL, labels);
    s_u64(out, value);
}

static void s_broker_seconds(text_t *out, const char *name, double value)
{
    s_name(out, name, NULL, NULL);
    s_printf(out, " %.3f\n", value);
}

/*  The samples of one histogram, for one queue or (NULL) the broker. */
static void s_histogram(text_t *out, const char *name, const char *queue,
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
        s_u64(out, cumulative);
    }
    snprintf(sample, sizeof sample, "%s_sum", name);
    s_name(out, sample, queue, NULL);
    s_printf(out, " %.6f\n", (double) histogram->sum_us / 1e6);
    snprintf(sample, sizeof sample, "%s_count", name);
    s_name(out, sample, queue, NULL);
    s_u64(out, histogram->count);
}

/*  The per-queue families, in the order they are written. */
enum {
    F_ITEMS,
    F_OUTSTANDING,
    F_HELD,
    F_CONSUMERS,
    F_JOINERS,
    F_ACCEPTING,
    F_PAUSED,
    F_PUTS,
    F_REFUSED,
    F_DELIVERED,
    F_REDELIVERED,
    F_ACKED,
    F_NACKED,
    F_EXPIRED,
    F_DEAD_LETTERED,
    F_DISCARDED,
    F_TO_DELIVERY,
    F_TO_ACK,
    F_COUNT
};

static const struct {
    const char *name, *type, *help;
} s_families[F_COUNT] = {
    [F_ITEMS] = {"asyncq_queue_items", "gauge",
                 "Items held by a queue, by state: queued (ready), in_flight (delivered, not "
                 "acked), delayed (nacked with a delay), dead (dead-lettered)."},
    [F_OUTSTANDING] = {"asyncq_queue_outstanding", "gauge",
                       "Items put and not yet finished (acked, dead-lettered or discarded): "
                       "what a join waits for."},
    [F_HELD] = {"asyncq_queue_held_puts", "gauge",
                "Puts held back by the broker until the queue has room (maxsize)."},
    [F_CONSUMERS] = {"asyncq_queue_consumers", "gauge", "Consumer sessions taking from the queue."},
    [F_JOINERS] = {"asyncq_queue_joins_waiting", "gauge", "JOIN requests waiting on the queue."},
    [F_ACCEPTING] = {"asyncq_queue_accepting_puts", "gauge",
                     "1 while the queue takes puts, 0 once it was shut down."},
    [F_PAUSED] = {"asyncq_queue_paused", "gauge",
                  "1 while the queue's deliveries are paused (PAUSE), 0 otherwise."},
    [F_PUTS] = {"asyncq_puts_total", "counter", "Puts accepted."},
    [F_REFUSED] = {"asyncq_puts_refused_total", "counter",
                   "Puts refused, by reason (the ERROR code's name in lower case)."},
    [F_DELIVERED] = {"asyncq_deliveries_total", "counter",
                     "Items delivered to consumers, redeliveries included."},
    [F_REDELIVERED] = {"asyncq_redeliveries_total", "counter",
                       "Deliveries taken back (lease expired, NACK, consumer gone) to be "
                       "delivered again."},
    [F_ACKED] = {"asyncq_acks_total", "counter", "Items acked."},
    [F_NACKED] = {"asyncq_nacks_total", "counter", "Items given back by their consumer (NACK)."},
    [F_EXPIRED] = {"asyncq_lease_expiries_total", "counter",
                   "Deliveries whose lease ran out before an ack."},
    [F_DEAD_LETTERED] = {"asyncq_dead_lettered_total", "counter",
                         "Items dead-lettered after their last allowed attempt, by the cause of "
                         "the last: lease (ran out), nack (its consumer's, with a reason: a "
                         "failed command), session (its consumer went away), restart (in "
                         "flight when the broker stopped), unknown."},
    [F_DISCARDED] = {"asyncq_discarded_total", "counter",
                     "Items discarded by an immediate shutdown, a PURGE or a DELETE."},
    [F_TO_DELIVERY] = {"asyncq_put_to_delivery_seconds", "histogram",
                       "Time from an item's put to its first delivery."},
    [F_TO_ACK] = {"asyncq_put_to_ack_seconds", "histogram", "Time from an item's put to its ack."},
};

/*  One queue's samples of one family. */
static void s_queue_samples(text_t *out, int family, const queue_t *queue)
{
    const char *name = s_families[family].name;
    uint64_t value = 0;
    switch (family) {
    case F_ITEMS: {
        static const char *const states[] = {"state=\"queued\"", "state=\"in_flight\"",
                                             "state=\"delayed\"", "state=\"dead\""};
        uint64_t values[] = {queue->ready_count, queue->inflight_count, queue->delayed_count,
                             queue->dead_count};
        for (int i = 0; i < 4; i++) {
            s_name(out, name, queue->name, states[i]);
            s_u64(out, values[i]);
        }
        return;
    }
    case F_REFUSED:
        for (int r = 0; r < REFUSED_REASONS; r++) {
            char reason[48];
            snprintf(reason, sizeof reason, "reason=\"%s\"", queue_refusal_names[r]);
            s_name(out, name, queue->name, reason);
            s_u64(out, queue->refused_total[r]);
        }
        return;
    case F_DEAD_LETTERED:
        for (int c = 0; c < DEATH_CAUSES; c++) {
            char cause[48];
            snprintf(cause, sizeof cause, "cause=\"%s\"", state_death_names[c]);
            s_name(out, name, queue->name, cause);
            s_u64(out, queue->dead_by_cause[c]);
        }
        return;
    case F_TO_DELIVERY:
        s_histogram(out, name, queue->name, &queue->to_delivery);
        return;
    case F_TO_ACK:
        s_histogram(out, name, queue->name, &queue->to_ack);
        return;
    case F_OUTSTANDING: value = queue->ledger.outstanding; break;
    case F_HELD: value = queue->held_count; break;
    case F_CONSUMERS: value = queue->consumer_count; break;
    case F_JOINERS: value = queue->joiner_count; break;
    case F_ACCEPTING: value = queue->state == QUEUE_OPEN; break;
    case F_PAUSED: value = queue->paused; break;
    case F_PUTS: value = queue->put_total; break;
    case F_DELIVERED: value = queue->delivered_total; break;
    case F_REDELIVERED: value = queue->redelivered_total; break;
    case F_ACKED: value = queue->acked_total; break;
    case F_NACKED: value = queue->nacked_total; break;
    case F_EXPIRED: value = queue->expired_total; break;
    case F_DISCARDED: value = queue->discarded_total; break;
    default: break;
    }
    s_name(out, name, queue->name, NULL);
    s_u64(out, value);
}

/*  A replica's place in its group (--peers): its role, the term, how far
    the log is committed and applied, and, on the leader, how far behind
    each replica is. */
static void s_group_families(text_t *out, broker_t *self)
{
    persist_group_t group;
    if (persist_group(self, &group))
        return;
    char labels[160];
    s_family(out, "asyncq_replica_info", "gauge",
             "This replica of a group: its node id and role (leader, follower, candidate).");
    snprintf(labels, sizeof labels, "node=\"%llu\",role=\"%s\"",
             (unsigned long long) group.node, group.role);
    s_broker_u64(out, "asyncq_replica_info", labels, 1);
    s_family(out, "asyncq_replica_leader", "gauge", "The leader's node id as this replica knows it (0: none).");
    s_broker_u64(out, "asyncq_replica_leader", NULL, group.leader);
    s_family(out, "asyncq_replica_term", "gauge", "The group's term as this replica knows it.");
    s_broker_u64(out, "asyncq_replica_term", NULL, group.term);
    s_family(out, "asyncq_replica_commit_index", "gauge", "The last entry of the group's log known committed.");
    s_broker_u64(out, "asyncq_replica_commit_index", NULL, group.commit_index);
    s_family(out, "asyncq_replica_applied_index", "gauge", "The last entry this replica applied.");
    s_broker_u64(out, "asyncq_replica_applied_index", NULL, group.applied_index);
    s_family(out, "asyncq_replica_lag_entries", "gauge",
             "On the leader: entries of its log each replica is not known to hold.");
    for (size_t i = 0; i < group.count; i++) {
        if (!group.replicas[i].known)
            continue;
        snprintf(labels, sizeof labels, "node=\"%llu\"", (unsigned long long) group.replicas[i].id);
        s_broker_u64(out, "asyncq_replica_lag_entries", labels, group.replicas[i].lag);
    }
    s_family(out, "asyncq_replica_connections_refused_total", "counter",
             "Connections between replicas closed before the group's protocol read them, "
             "by direction (in: taken, out: made) and cause (key: a wrong proof of the "
             "group's key; protocol: not a replica's preamble, handshake or frame; "
             "timeout: no handshake within 5 s; limit: too many handshakes at once; "
             "address: not from loopback, without keys; id: another replica than the "
             "group's configuration has there).");
    for (int made = 0; made < 2; made++)
        for (int cause = 0; cause < LINK_REFUSED_CAUSES; cause++) {
            snprintf(labels, sizeof labels, "direction=\"%s\",cause=\"%s\"",
                     made ? "out" : "in", replica_link_refusal_name(cause));
            s_broker_u64(out, "asyncq_replica_connections_refused_total", labels,
                         group.refused[made][cause]);
        }
}

/*  The same for /stats.json: null for a broker that is not a replica. */
static json_t *s_json_group(broker_t *self)
{
    persist_group_t group;
    if (persist_group(self, &group))
        return json_null();
    json_t *replicas = json_array();
    for (size_t i = 0; i < group.count; i++) {
        json_t *replica = json_pack("{s:I,s:s,s:s}", "node", (json_int_t) group.replicas[i].id,
                                    "address", group.replicas[i].address, "kind",
                                    group.replicas[i].kind);
        if (replica && group.replicas[i].known) {
            json_object_set_new(replica, "match_index",
                                json_integer((json_int_t) group.replicas[i].match_index));
            json_object_set_new(replica, "lag", json_integer((json_int_t) group.replicas[i].lag));
        }
        json_array_append_new(replicas, replica);
    }
    json_t *refused = json_object();
    for (int made = 0; made < 2; made++) {
        json_t *causes = json_object();
        for (int cause = 0; cause < LINK_REFUSED_CAUSES; cause++)
            json_object_set_new(causes, replica_link_refusal_name(cause),
                                json_integer((json_int_t) group.refused[made][cause]));
        json_object_set_new(refused, made ? "out" : "in", causes);
    }
    return json_pack("{s:I,s:s,s:I,s:I,s:I,s:I,s:I,s:o,s:o}", "node", (json_int_t) group.node,
                     "role", group.role, "leader", (json_int_t) group.leader, "term",
                     (json_int_t) group.term, "commit_index", (json_int_t) group.commit_index,
                     "applied_index", (json_int_t) group.applied_index, "last_index",
                     (json_int_t) group.last_index, "replicas", replicas,
                     "connections_refused", refused);
}

static void s_broker_families(text_t *out, broker_t *self)
{
    double uptime = (double) (broker_now_ms() - self->started_ms) / 1000.0;
    char labels[96];
    s_family(out, "asyncq_info", "gauge", "The broker's persistence mode and security, as labels.");
    snprintf(labels, sizeof labels, "persistence=\"%s\",security=\"%s\"",
             broker_persistence(self), s_security(self));
    s_broker_u64(out, "asyncq_info", labels, 1);
    s_family(out, "asyncq_uptime_seconds", "gauge", "Time since the broker started.");
    s_broker_seconds(out, "asyncq_uptime_seconds", uptime);
    s_family(out, "process_start_time_seconds", "gauge",
             "Start time of the process since the Unix epoch.");
    s_broker_seconds(out, "process_start_time_seconds", s_wall_seconds() - uptime);
    s_family(out, "process_resident_memory_bytes", "gauge", "Resident memory of the broker.");
    s_broker_u64(out, "process_resident_memory_bytes", NULL, s_resident_bytes());
    s_family(out, "asyncq_sessions", "gauge", "Client sessions (a HELLO answered).");
    s_broker_u64(out, "asyncq_sessions", NULL, dict_size(self->peers));
    s_family(out, "asyncq_connections", "gauge", "Connections open on both sockets.");
    s_broker_u64(out, "asyncq_connections", NULL, conns_count(self->conns));
    s_family(out, "asyncq_connections_refused_total", "counter",
             "Connections refused or closed for a cause (limit, address, no HELLO).");
    s_broker_u64(out, "asyncq_connections_refused_total", NULL,
                 conns_refused_total(self->conns));
    s_family(out, "asyncq_producers", "gauge", "Producers remembered (with or without a session).");
    s_broker_u64(out, "asyncq_producers", NULL, dict_size(self->producers));
    s_family(out, "asyncq_queues", "gauge", "Queues the broker knows.");
    s_broker_u64(out, "asyncq_queues", NULL, dict_size(self->queues));
    s_family(out, "asyncq_items", "gauge", "Items held, every queue and state.");
    s_broker_u64(out, "asyncq_items", NULL, store_count(self->store));
    s_family(out, "asyncq_bad_messages_total", "counter",
             "Messages refused as malformed, forbidden or out of place.");
    s_broker_u64(out, "asyncq_bad_messages_total", NULL, self->bad_input.total);
    s_family(out, "asyncq_broker_puts_refused_total", "counter",
             "Puts refused, every queue (and puts for no queue the broker could make), by reason.");
    for (int r = 0; r < REFUSED_REASONS; r++) {
        snprintf(labels, sizeof labels, "reason=\"%s\"", queue_refusal_names[r]);
        s_broker_u64(out, "asyncq_broker_puts_refused_total", labels, self->refused_total[r]);
    }
    s_group_families(out, self);
    if (!self->journal)
        return;
    s_family(out, "asyncq_journal_bytes", "gauge", "Bytes of the journal's segments on disk.");
    s_broker_u64(out, "asyncq_journal_bytes", NULL, journal_disk_bytes(self->journal));
    s_family(out, "asyncq_journal_segments", "gauge", "Segment files of the journal.");
    s_broker_u64(out, "asyncq_journal_segments", NULL, journal_segment_count(self->journal));
    histogram_t latency;
    journal_sync_latency(self->journal, &latency);
    s_family(out, "asyncq_journal_sync_seconds", "histogram",
             "Time each fdatasync of the journal took (one per group commit).");
    s_histogram(out, "asyncq_journal_sync_seconds", NULL, &latency);
}

/* ------------------------------------------------- the queues, in order */

/*  The queues sorted by name, shared by the renders that use it. Its
    pointers are valid while no queue was forgotten since it was made
    (broker->queues_forgotten unchanged): a render checks that before
    each slice and otherwise moves to a new order, after the last name it
    wrote. */
typedef struct {
    int refs;
    uint64_t forgotten; /* broker->queues_forgotten when made */
    int64_t made_ms;
    size_t count;
    queue_t *list[];
} order_t;

struct metrics {
    broker_t *broker;
    order_t *order; /* the newest, or NULL */
    char shard[24]; /* `shard="K"` for a broker of a service, "" for one alone */
};

metrics_t *metrics_new(broker_t *broker)
{
    metrics_t *self = calloc(1, sizeof *self);
    if (!self)
        return NULL;
    self->broker = broker;
    /* One Prometheus scraping every broker of a service tells their
       series apart by shard, and adds them up with sum without(shard). */
    if (broker->config.service || broker->config.shard)
        snprintf(self->shard, sizeof self->shard, "shard=\"%u\"",
                 (unsigned) broker->config.shard);
    return self;
}

static void s_order_release(order_t **order_p)
{
    order_t *order = *order_p;
    if (order && --order->refs == 0)
        free(order);
    *order_p = NULL;
}

void metrics_destroy(metrics_t **self_p)
{
    metrics_t *self = *self_p;
    if (!self)
        return;
    s_order_release(&self->order);
    free(self);
    *self_p = NULL;
}

typedef struct {
    order_t *order;
} collect_t;

static void s_collect_into(void *ctx, void *value)
{
    order_t *order = ctx;
    order->list[order->count++] = value;
}

/*  The current order (a reference for the caller), made again when a
    queue was forgotten since, or when it is older than ORDER_MAX_AGE_MS
    and queues were made since. NULL if out of memory. */
#define ORDER_MAX_AGE_MS 1000
static order_t *s_order(metrics_t *self)
{
    broker_t *broker = self->broker;
    order_t *order = self->order;
    int64_t now = broker_now_ms();
    if (order && order->forgotten == broker->queues_forgotten
        && (order->count == dict_size(broker->queues) || now - order->made_ms < ORDER_MAX_AGE_MS)) {
        order->refs++;
        return order;
    }
    size_t size = dict_size(broker->queues);
    order = malloc(sizeof *order + (size + 1) * sizeof(queue_t *));
    if (!order)
        return NULL;
    order->refs = 1;
    order->forgotten = broker->queues_forgotten;
    order->made_ms = now;
    order->count = 0;
    dict_each(broker->queues, s_collect_into, order);
    qsort(order->list, order->count, sizeof *order->list, s_compare_queues);
    s_order_release(&self->order);
    self->order = order;
    order->refs++;
    return order;
}

/* -------------------------------------------- the render, slice by slice */

struct metrics_render {
    metrics_t *metrics;
    order_t *order;
    int family;          /* -1: the broker's families; F_COUNT: done */
    size_t next;         /* index in order->list of the next queue */
    char last[AQ_NAME_MAX + 1]; /* the last queue written ("" if none) */
    text_t staged;       /* rendered, not yet taken */
    size_t taken;        /* of staged */
};

metrics_render_t *metrics_render_new(metrics_t *metrics)
{
    metrics_render_t *self = calloc(1, sizeof *self);
    if (!self)
        return NULL;
    self->metrics = metrics;
    self->family = -1;
    self->staged.shard = metrics->shard[0] ? metrics->shard : NULL;
    return self;
}

void metrics_render_destroy(metrics_render_t **self_p)
{
    metrics_render_t *self = *self_p;
    if (!self)
        return;
    s_order_release(&self->order);
    free(self->staged.data);
    free(self);
    *self_p = NULL;
}

/*  The first index whose queue's name comes after `name`. */
static size_t s_after(const order_t *order, const char *name)
{
    size_t low = 0, high = order->count;
    while (low < high) {
        size_t middle = (low + high) / 2;
        if (strcmp(order->list[middle]->name, name) <= 0)
            low = middle + 1;
        else
            high = middle;
    }
    return low;
}

/*  Renders the next unit (the broker's families, a family's header, or
    one queue's samples of a family) into staged. 0 when done. */
static int s_step(metrics_render_t *self)
{
    broker_t *broker = self->metrics->broker;
    if (self->family == -1) {
        s_broker_families(&self->staged, broker);
        self->family = 0;
        self->next = 0;
        self->last[0] = '\0';
        return 1;
    }
    if (self->family >= F_COUNT)
        return 0;
    if (!self->order) {
        if (!(self->order = s_order(self->metrics))) {
            self->staged.failed = 1;
            return 0;
        }
    } else if (self->order->forgotten != broker->queues_forgotten) {
        /* A queue was forgotten: this order may point at freed memory.
           Go on in a new one, after the last name written. */
        s_order_release(&self->order);
        if (!(self->order = s_order(self->metrics))) {
            self->staged.failed = 1;
            return 0;
        }
        self->next = self->last[0] ? s_after(self->order, self->last) : 0;
    }
    if (self->next == 0 && !self->last[0]) {
        s_family(&self->staged, s_families[self->family].name, s_families[self->family].type,
                 s_families[self->family].help);
        if (self->order->count == 0) {
            self->family++;
            return 1;
        }
    }
    const queue_t *queue = self->order->list[self->next++];
    s_queue_samples(&self->staged, self->family, queue);
    snprintf(self->last, sizeof self->last, "%s", queue->name);
    if (self->next >= self->order->count) {
        self->family++;
        self->next = 0;
        self->last[0] = '\0';
    }
    return 1;
}

ssize_t metrics_render_read(metrics_render_t *self, char *buf, size_t max, int64_t until_us)
{
    if (self->taken) { /* what is left (less than a unit) goes to the front */
        memmove(self->staged.data, self->staged.data + self->taken,
                self->staged.size - self->taken);
        self->staged.size -= self->taken;
        self->taken = 0;
    }
    while (self->staged.size - self->taken < max && !self->staged.failed) {
        if (until_us && broker_now_us() >= until_us && self->staged.size > self->taken)
            break;
        if (until_us && broker_now_us() >= until_us)
            return 0; /* no time left in this turn: called again in the next */
        if (!s_step(self))
            break;
    }
    if (self->staged.failed)
        return -2;
    size_t size = self->staged.size - self->taken;
    if (size == 0)
        return -1; /* the end */
    if (size > max)
        size = max;
    memcpy(buf, self->staged.data + self->taken, size);
    self->taken += size;
    if (self->taken == self->staged.size)
        self->staged.size = self->taken = 0; /* the buffer is kept for the next units */
    return (ssize_t) size;
}

char *metrics_render_prometheus(broker_t *self, size_t *size)
{
    metrics_t *metrics = metrics_new(self);
    metrics_render_t *render = metrics ? metrics_render_new(metrics) : NULL;
    text_t all = {0};
    char buf[16384];
    ssize_t got = -2;
    while (render && (got = metrics_render_read(render, buf, sizeof buf, 0)) > 0)
        s_puts(&all, buf, (size_t) got);
    metrics_render_destroy(&render);
    metrics_destroy(&metrics);
    if (got != -1 || all.failed) {
        free(all.data);
        return NULL;
    }
    s_reserve(&all, 0);
    if (all.failed)
        return NULL;
    all.data[all.size] = '\0';
    *size = all.size;
    return all.data;
}

/* ------------------------------------------------------------------ JSON */

static json_t *s_json_queue(const queue_t *queue)
{
    json_t *dead = json_array();
    size_t shown = 0;
    for (const list_node_t *node = queue->dead.next; node != &queue->dead && shown < DEAD_ITEMS_SHOWN;
         node = node->next, shown++) {
        const item_t *item = list_entry(node, item_t, link);
        char id[24];
        aq_format_u64(item->id, id);
        json_array_append_new(dead, json_pack("{s:s,s:i,s:I}", "id", id, "attempts",
                                              (int) item->attempts, "size",
                                              (json_int_t) item->size));
    }
    return json_pack("{s:s,s:s,s:b,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:o}",
                     "name", queue->name, "state", s_state_name(queue->state), "paused",
                     (int) queue->paused, "queued",
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
    for (const list_node_t *node = consumer->holds.next; node != &consumer->holds;
         node = node->next) {
        const item_t *item = list_entry(node, item_t, link);
        if (shown == 0) /* delivered (or last touched) when its lease started */
            oldest_ms = consumers->now_ms - (item->timer.at - (int64_t) broker_lease_ms(item));
        char id[24];
        aq_format_u64(item->id, id);
        if (shown++ < HELD_IDS_SHOWN)
            json_array_append_new(ids, json_string(id));
    }
    json_array_append_new(
        consumers->list,
        json_pack("{s:s,s:s,s:I,s:I,s:o,s:I}", "client", peer->client_id, "queue",
                  consumer->queue->name, "credit", (json_int_t) consumer->credit, "held",
                  (json_int_t) consumer->hold_count, "held_ids", ids, "oldest_held_ms",
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
        (json_int_t) (s_wall_seconds() * 1000.0), "persistence", broker_persistence(self), "security",
        s_security(self), "sessions", (json_int_t) dict_size(self->peers), "connections",
        (json_int_t) conns_count(self->conns), "producers", (json_int_t) dict_size(self->producers),
        "queues", (json_int_t) dict_size(self->queues), "items",
        (json_int_t) store_count(self->store), "bad_messages_total",
        (json_int_t) self->bad_input.total, "resident_memory_bytes",
        (json_int_t) s_resident_bytes(), "journal_bytes",
        (json_int_t) (self->journal ? journal_disk_bytes(self->journal) : 0));
    if (broker)
        json_object_set_new(broker, "replica", s_json_group(self));
    json_t *root = json_pack("{s:o,s:o,s:o}", "broker", broker, "queues", list, "consumers",
                             s_json_consumers(self));
    char *text = root ? json_dumps(root, JSON_COMPACT | JSON_REAL_PRECISION(9)) : NULL;
    json_decref(root);
    *size = text ? strlen(text) : 0;
    return text;
}
