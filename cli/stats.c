/*  asyncq stats: the broker's per-queue lines as they come (kv), as a table
    a person reads, or as one JSON document; once, or again every interval
    (--watch), with rates from the counters' differences. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <czmq.h>

#include "asyncq/control.h"
#include "asyncq/program.h"
#include "asyncq/progress.h"
#include "cli.h"

#define STATS_MAX_FIELDS 64

/*  One queue's line: as the broker sent it (kv prints it untouched) and cut
    into keys and values (table and JSON). */
typedef struct {
    char line[AQ_TEXT_MAX + 1];
    char fields[AQ_TEXT_MAX + 1];
    const char *keys[STATS_MAX_FIELDS];
    const char *values[STATS_MAX_FIELDS];
    size_t count;
} stats_row_t;

/*  Every queue's row at one moment. */
typedef struct {
    stats_row_t *rows;
    size_t count;
    size_t capacity;
    int out_of_memory;
    int64_t at_ms;
    char missing[512]; /* the brokers that did not answer: "shard 2 (ADDR)", "" */
    char group[2048];  /* the table's last lines: each group of replicas' members */
} stats_snapshot_t;

/*  The table's columns: the numbers that say how a queue is doing. Every
    field is in kv and JSON; these fit 80 columns. A column with `rate_of`
    shows that counter's change per second (with --watch only). */
typedef struct {
    const char *title;
    const char *key;
    const char *rate_of;
    int left;
} stats_column_t;

static const stats_column_t s_columns[] = {
    {"QUEUE", "queue", NULL, 1},        {"QUEUED", "queued", NULL, 0},
    {"INFLIGHT", "inflight", NULL, 0},  {"DELAYED", "delayed", NULL, 0},
    {"DEAD", "dead", NULL, 0},          {"ACKED", "acked", NULL, 0},
    {"CONSUMERS", "consumers", NULL, 0}, {"PUT/S", NULL, "puts", 0},
    {"ACK/S", NULL, "acked", 0},        {"STATE", "state", NULL, 1},
};
#define STATS_COLUMNS (sizeof s_columns / sizeof s_columns[0])
#define STATS_CELL 32

/*  Splits "key=value key=value" in place; a word without '=' is skipped. */
static void s_row_split(stats_row_t *row)
{
    memcpy(row->fields, row->line, sizeof row->fields);
    row->count = 0;
    char *save = NULL;
    for (char *word = strtok_r(row->fields, " ", &save); word && row->count < STATS_MAX_FIELDS;
         word = strtok_r(NULL, " ", &save)) {
        char *equals = strchr(word, '=');
        if (!equals)
            continue;
        *equals = '\0';
        row->keys[row->count] = word;
        row->values[row->count++] = equals + 1;
    }
}

static const char *s_row_get(const stats_row_t *row, const char *key)
{
    for (size_t i = 0; i < row->count; i++)
        if (strcmp(row->keys[i], key) == 0)
            return row->values[i];
    return NULL;
}

static void s_snapshot_add(void *ctx, const char *line)
{
    stats_snapshot_t *snapshot = ctx;
    if (snapshot->count == snapshot->capacity) {
        size_t capacity = snapshot->capacity ? snapshot->capacity * 2 : 16;
        stats_row_t *rows = realloc(snapshot->rows, capacity * sizeof *rows);
        if (!rows) {
            snapshot->out_of_memory = 1;
            return;
        }
        snapshot->rows = rows;
        snapshot->capacity = capacity;
    }
    stats_row_t *row = &snapshot->rows[snapshot->count++];
    snprintf(row->line, sizeof row->line, "%s", line);
    s_row_split(row);
}

static const stats_row_t *s_snapshot_find(const stats_snapshot_t *snapshot, const char *queue);

/*  A service's row of a queue from its brokers' (PROTOCOL.md 4.15): the
    counts added up; maxsize and lease_ms, the largest; state, the furthest
    from open (discarding, then draining); paused if one is. */
static void s_row_merge(stats_row_t *into, const stats_row_t *row)
{
    char line[AQ_TEXT_MAX + 1];
    size_t used = 0;
    for (size_t i = 0; i < into->count && used < sizeof line; i++) {
        const char *key = into->keys[i], *value = into->values[i];
        const char *other = s_row_get(row, key);
        uint64_t a, b;
        char number[24];
        if (other && strcmp(key, "queue") && aq_arg_u64(value, &a) && aq_arg_u64(other, &b)) {
            int largest = !strcmp(key, "maxsize") || !strcmp(key, "lease_ms")
                          || !strcmp(key, "paused");
            snprintf(number, sizeof number, "%llu",
                     (unsigned long long) (largest ? (a > b ? a : b) : a + b));
            value = number;
        }
        else if (other && !strcmp(key, "state") && strcmp(value, "discarding")
                 && strcmp(other, "open"))
            value = other;
        used += (size_t) snprintf(line + used, sizeof line - used, "%s%s=%s", i ? " " : "", key,
                                  value);
    }
    snprintf(into->line, sizeof into->line, "%s", line);
    s_row_split(into);
}

/*  Where the rows come from: every broker of the service, and whether
    they are shown broker by broker (--brokers) or added up. */
typedef struct {
    aq_session_t **sessions;
    size_t count;
    int per_broker;
    int groups; /* the table: a group of replicas' members under it */
} stats_source_t;

/*  One line of REPLICAS list (4.16), as a row under the table. */
static void s_group_add(void *ctx, const char *line)
{
    stats_snapshot_t *snapshot = ctx;
    stats_row_t row;
    snprintf(row.line, sizeof row.line, "%s", line);
    s_row_split(&row);
    static const char *const keys[] = {"id", "address", "kind", "role", "lag"};
    const char *cells[5];
    for (int i = 0; i < 5; i++)
        cells[i] = s_row_get(&row, keys[i]) ? s_row_get(&row, keys[i]) : "-";
    const char *term = s_row_get(&row, "term"), *commit = s_row_get(&row, "commit_index");
    char note[96] = "";
    if (term && commit) /* the leader's own line */
        snprintf(note, sizeof note, "  (term %s, commit index %s)", term, commit);
    size_t used = strlen(snapshot->group);
    if (used == 0)
        used = (size_t) snprintf(snapshot->group, sizeof snapshot->group,
                                 "\n%-8s %-24s %-8s %-10s %s\n", "REPLICA", "ADDRESS", "KIND",
                                 "ROLE", "LAG");
    if (used < sizeof snapshot->group)
        snprintf(snapshot->group + used, sizeof snapshot->group - used,
                 "%-8s %-24s %-8s %-10s %s%s\n", cells[0], cells[1], cells[2], cells[3],
                 cells[4], note);
}

/*  Every broker's rows, a queue's merged into one (--brokers: each row,
    after the broker's address and shard). */
static aq_status_t s_snapshot_fetch(const stats_source_t *source, const char *queue,
                                    stats_snapshot_t *snapshot)
{
    aq_session_t **sessions = source->sessions;
    size_t count = source->count;
    int per_broker = source->per_broker;
    snapshot->count = 0;
    snapshot->out_of_memory = 0;
    snapshot->missing[0] = '\0';
    snapshot->group[0] = '\0';
    aq_status_t rc = AQ_OK;
    size_t answered = 0, used = 0;
    stats_snapshot_t one = {0};
    for (size_t k = 0; k < count && !rc; k++) {
        one.count = 0;
        rc = count > 1 && !aq_session_answers(sessions[k])
                 ? AQ_UNREACHABLE
                 : aq_stats(sessions[k], queue, s_snapshot_add,
                            answered || per_broker ? &one : snapshot);
        if ((rc == AQ_TIMEOUT || rc == AQ_UNREACHABLE) && count > 1) {
            /* A broker of the service that does not answer: the others'
               numbers, and which one they leave out. */
            if (used < sizeof snapshot->missing)
                used += (size_t) snprintf(snapshot->missing + used, sizeof snapshot->missing - used,
                                          "%sshard %d (%s)", used ? ", " : "",
                                          aq_session_welcome(sessions[k])->shard,
                                          aq_session_address(sessions[k]));
            rc = AQ_OK;
            continue;
        }
        for (size_t i = 0; per_broker && !rc && i < one.count; i++) {
            char line[AQ_TEXT_MAX + 1], address[AQ_ENDPOINT_MAX];
            aq_endpoint_format(aq_session_endpoint(sessions[k]), address, sizeof address);
            snprintf(line, sizeof line, "broker=%.200s shard=%d %.780s", address,
                     aq_session_welcome(sessions[k])->shard, one.rows[i].line);
            s_snapshot_add(snapshot, line);
        }
        for (size_t i = 0; answered && !per_broker && !rc && i < one.count; i++) {
            stats_row_t *row = &one.rows[i];
            stats_row_t *same = (stats_row_t *) s_snapshot_find(snapshot, s_row_get(row, "queue"));
            if (same)
                s_row_merge(same, row);
            else
                s_snapshot_add(snapshot, row->line);
        }
        snapshot->out_of_memory |= one.out_of_memory;
        if (!rc && source->groups
            && strcmp(aq_session_welcome(sessions[k])->persistence, "replicated") == 0)
            aq_replicas(sessions[k], "list", s_group_add, snapshot); /* without: no lines */
        answered += !rc;
    }
    free(one.rows);
    if (!rc && !answered)
        rc = AQ_UNREACHABLE;
    snapshot->at_ms = zclock_mono();
    return rc == AQ_OK && snapshot->out_of_memory ? AQ_NOMEM : rc;
}

static const stats_row_t *s_snapshot_find(const stats_snapshot_t *snapshot, const char *queue)
{
    for (size_t i = 0; snapshot && queue && i < snapshot->count; i++) {
        const char *name = s_row_get(&snapshot->rows[i], "queue");
        if (name && strcmp(name, queue) == 0)
            return &snapshot->rows[i];
    }
    return NULL;
}

/*  A counter's change per second since `before`, or "-" when there is no
    earlier value to compare with (first frame, new queue, broker restart). */
static void s_cell_rate(const stats_row_t *row, const stats_snapshot_t *now,
                        const stats_snapshot_t *before, const char *key, char *cell)
{
    const stats_row_t *old = s_snapshot_find(before, s_row_get(row, "queue"));
    uint64_t current, previous;
    int64_t elapsed = before ? now->at_ms - before->at_ms : 0;
    if (!old || elapsed <= 0 || !aq_arg_u64(s_row_get(row, key), &current)
        || !aq_arg_u64(s_row_get(old, key), &previous) || current < previous) {
        strcpy(cell, "-");
        return;
    }
    double rate = (double) (current - previous) * 1000.0 / (double) elapsed;
    aq_format_count((uint64_t) (rate + 0.5), cell, STATS_CELL);
}

static void s_cell(const stats_row_t *row, const stats_column_t *column,
                   const stats_snapshot_t *now, const stats_snapshot_t *before, char *cell)
{
    if (column->rate_of) {
        s_cell_rate(row, now, before, column->rate_of, cell);
        return;
    }
    const char *value = s_row_get(row, column->key);
    uint64_t number;
    if (!value)
        strcpy(cell, "-");
    else if (!column->left && aq_arg_u64(value, &number))
        aq_format_count(number, cell, STATS_CELL);
    else
        snprintf(cell, STATS_CELL, "%s", value);
}

static void s_table_line(FILE *out, char cells[][STATS_CELL], const size_t *widths,
                         int with_rates)
{
    const char *gap = "";
    for (size_t c = 0; c < STATS_COLUMNS; c++) {
        if (s_columns[c].rate_of && !with_rates)
            continue;
        int width = (int) widths[c];
        if (c == STATS_COLUMNS - 1)
            fprintf(out, "%s%s", gap, cells[c]); /* no spaces at the end of the line */
        else
            fprintf(out, s_columns[c].left ? "%s%-*s" : "%s%*s", gap, width, cells[c]);
        gap = "  ";
    }
    fputc('\n', out);
}

/*  Columns aligned to their widest cell: words to the left, numbers to the
    right, a header above. */
static void s_print_table(FILE *out, const stats_snapshot_t *now, const stats_snapshot_t *before,
                          int with_rates)
{
    if (now->count == 0) {
        fprintf(out, "no queues\n%s", now->group);
        return;
    }
    char (*cells)[STATS_COLUMNS][STATS_CELL] = calloc(now->count + 1, sizeof *cells);
    if (!cells) {
        fprintf(stderr, "asyncq stats: %s\n", aq_strerror(AQ_NOMEM));
        return;
    }
    size_t widths[STATS_COLUMNS] = {0};
    for (size_t c = 0; c < STATS_COLUMNS; c++) {
        snprintf(cells[0][c], STATS_CELL, "%s", s_columns[c].title);
        for (size_t r = 0; r < now->count; r++)
            s_cell(&now->rows[r], &s_columns[c], now, before, cells[r + 1][c]);
        for (size_t r = 0; r <= now->count; r++)
            if (strlen(cells[r][c]) > widths[c])
                widths[c] = strlen(cells[r][c]);
    }
    for (size_t r = 0; r <= now->count; r++)
        s_table_line(out, cells[r], widths, with_rates);
    free(cells);
    fputs(now->group, out);
}

static void s_print_kv(FILE *out, const stats_snapshot_t *now)
{
    for (size_t r = 0; r < now->count; r++)
        fprintf(out, "%s\n", now->rows[r].line);
}

/*  A value as JSON: a whole number as a number, anything else (the queue's
    name above all, even one made of digits) as a string. */
static json_t *s_json_value(const char *key, const char *value)
{
    uint64_t number;
    if (strcmp(key, "queue") != 0 && aq_arg_u64(value, &number) && number <= INT64_MAX)
        return json_integer((json_int_t) number);
    json_t *text = json_string(value);
    return text ? text : json_null();
}

/*  One document: an array with an object per queue, on one line. */
static void s_print_json(FILE *out, const stats_snapshot_t *now)
{
    json_t *queues = json_array();
    int ok = queues != NULL;
    for (size_t r = 0; ok && r < now->count; r++) {
        json_t *object = json_object();
        const stats_row_t *row = &now->rows[r];
        for (size_t i = 0; object && i < row->count; i++)
            json_object_set_new(object, row->keys[i], s_json_value(row->keys[i], row->values[i]));
        ok = object && json_array_append_new(queues, object) == 0;
    }
    if (ok && json_dumpf(queues, out, 0) == 0)
        fputc('\n', out);
    else
        fprintf(stderr, "asyncq stats: %s\n", aq_strerror(AQ_NOMEM));
    json_decref(queues);
}

static void s_print(FILE *out, stats_format_t format, const stats_snapshot_t *now,
                    const stats_snapshot_t *before, int with_rates)
{
    if (format == STATS_KV)
        s_print_kv(out, now);
    else if (format == STATS_JSON)
        s_print_json(out, now);
    else
        s_print_table(out, now, before, with_rates);
}

int stats_format_parse(const char *text, stats_format_t *format)
{
    if (!text)
        *format = isatty(STDOUT_FILENO) ? STATS_TABLE : STATS_KV;
    else if (strcmp(text, "table") == 0)
        *format = STATS_TABLE;
    else if (strcmp(text, "kv") == 0)
        *format = STATS_KV;
    else if (strcmp(text, "json") == 0)
        *format = STATS_JSON;
    else
        return 0;
    return 1;
}

static void s_snapshot_free(stats_snapshot_t *snapshot)
{
    free(snapshot->rows);
    memset(snapshot, 0, sizeof *snapshot);
}

static int s_show_once(const stats_source_t *source, const char *queue, stats_format_t format)
{
    stats_snapshot_t now = {0};
    aq_status_t rc = s_snapshot_fetch(source, queue, &now);
    if (rc)
        cli_report("stats", source->sessions[0], rc);
    else
        s_print(stdout, format, &now, NULL, 0);
    if (!rc && now.missing[0]) {
        /* A partial answer is still an answer, and said to be one. */
        fflush(stdout);
        fprintf(stderr, "asyncq stats: no answer from %s: the numbers leave it out\n",
                now.missing);
        rc = AQ_UNREACHABLE;
    }
    s_snapshot_free(&now);
    return aq_exit_code(rc);
}

/*  One frame of --watch, written at once so the terminal never shows half
    of it. On a terminal: cursor home, clear, a title line, the numbers (or
    why there are none this time). Piped: the block, then a blank line
    between blocks of kv or table so that a reader can tell them apart. */
static void s_watch_frame(const stats_snapshot_t *now, const stats_snapshot_t *before,
                          aq_status_t rc, stats_format_t format, uint64_t interval_ms, int tty)
{
    char *text = NULL;
    size_t size = 0;
    FILE *out = open_memstream(&text, &size);
    if (!out)
        return;
    if (tty) {
        char clock[16];
        time_t seconds = time(NULL);
        struct tm local;
        strftime(clock, sizeof clock, "%H:%M:%S", localtime_r(&seconds, &local));
        fprintf(out, "\033[H\033[J");
        fprintf(out, "asyncq stats every %g s (Ctrl-C to stop)  %s\n\n",
                (double) interval_ms / 1000.0, clock);
        if (rc)
            fprintf(out, "asyncq stats: %s; trying again\n", aq_strerror(rc));
        else if (now->missing[0])
            fprintf(out, "no answer from %s: left out\n\n", now->missing);
    }
    if (!rc)
        s_print(out, format, now, before, 1);
    if (!tty && !rc && format != STATS_JSON)
        fputc('\n', out);
    fclose(out);
    if (!tty && rc)
        fprintf(stderr, "asyncq stats: %s; trying again\n", aq_strerror(rc));
    else if (!tty && now->missing[0])
        fprintf(stderr, "asyncq stats: no answer from %s: left out\n", now->missing);
    fwrite(text, 1, size, stdout);
    fflush(stdout);
    free(text);
}

/*  The stats again every interval until SIGINT or SIGTERM, which end it
    with exit 0: stopping is how a watch is meant to end. A broker that
    went away or restarted is asked again (with a new session) at the next
    interval rather than ending the watch. */
static int s_watch(const stats_source_t *source, const char *queue, stats_format_t format,
                   uint64_t interval_ms)
{
    int tty = isatty(STDOUT_FILENO);
    if (tty)
        fputs("\033[?25l", stdout); /* hide the cursor while redrawing */
    stats_snapshot_t snapshots[2] = {{0}, {0}};
    stats_snapshot_t *now = &snapshots[0], *before = NULL;
    int64_t next = zclock_mono();
    int stale = 0;
    while (!aq_interrupted()) {
        aq_status_t rc = AQ_OK;
        for (size_t k = 0; stale && !rc && k < source->count; k++)
            rc = aq_session_hello(source->sessions[k], AQ_CONNECT_TIMEOUT_MS);
        if (!rc)
            rc = s_snapshot_fetch(source, queue, now);
        if (rc == AQ_INTERRUPTED || aq_interrupted())
            break;
        stale = rc != AQ_OK;
        s_watch_frame(now, before, rc, format, interval_ms, tty);
        if (!rc) {
            before = now;
            now = now == &snapshots[0] ? &snapshots[1] : &snapshots[0];
        }
        next += (int64_t) interval_ms;
        int64_t left = next - zclock_mono();
        if (left < 0) /* fell behind (a slow broker): start counting again */
            next = zclock_mono() + (left = 0);
        if (aq_sleep_ms((uint64_t) left))
            break;
    }
    if (tty)
        fputs("\033[?25h", stdout); /* the cursor back, as it was */
    fflush(stdout);
    s_snapshot_free(&snapshots[0]);
    s_snapshot_free(&snapshots[1]);
    return AQ_EXIT_OK;
}

int stats_show(const char *broker, const char *queue, stats_format_t format, uint64_t watch_ms,
               int per_broker)
{
    if (per_broker && format == STATS_TABLE)
        format = STATS_KV; /* a row per broker and queue: its fields name them */
    aq_status_t rc;
    stats_source_t source = {.per_broker = per_broker, .groups = format == STATS_TABLE};
    source.sessions = cli_connect_all("stats", broker, &source.count, &rc);
    if (!source.sessions)
        return aq_exit_code(rc);
    int code = watch_ms ? s_watch(&source, queue, format, watch_ms)
                        : s_show_once(&source, queue, format);
    cli_disconnect_all(source.sessions, source.count);
    return code;
}
