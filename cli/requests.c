/*  asyncq put, join, stats, dead and shutdown. */
#include <errno.h>
#include <getopt.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <czmq.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "asyncq/control.h"
#include "asyncq/producer.h"
#include "asyncq/program.h"
#include "asyncq/internal.h"
#include "asyncq/service.h"
#include "cli.h"

typedef struct {
    const char *broker;
    const char *queue;
    uint64_t timeout_ms;
    int all;
    int immediate;
    const char *format;
    uint64_t watch_ms; /* 0: no --watch */
    int per_broker;    /* stats --brokers: each broker's rows, not the service's */
    aq_put_options_t put; /* put: --priority, --delay, --at, --front */
    int queue_given;      /* by -q or ASYNCQ_QUEUE, not the default */
} request_options_t;

#define WATCH_DEFAULT_MS 1000

/*  --watch takes an optional SECONDS, as --watch=2 or as the next word
    (--watch 2) when that word is a number. */
static int s_watch_arg(int argc, char **argv, request_options_t *opts)
{
    const char *seconds = optarg;
    if (!seconds && optind < argc && aq_arg_seconds_ms(argv[optind], &opts->watch_ms))
        seconds = argv[optind++];
    if (!seconds) {
        opts->watch_ms = WATCH_DEFAULT_MS;
        return 1;
    }
    if (aq_arg_seconds_ms(seconds, &opts->watch_ms) && opts->watch_ms >= 100
        && opts->watch_ms <= AQ_WAIT_MAX_MS)
        return 1;
    fprintf(stderr, "asyncq stats: --watch needs seconds, from 0.1 to 86400, not '%s'\n",
            seconds);
    return 0;
}

/*  Flags shared by every request; join also takes --timeout and --all,
    shutdown --immediate, stats --format and --watch. Without --queue, stats and shutdown act on every
    queue, the others on "default". */
static int s_parse(const char *command, const char *usage, int argc, char **argv,
                   request_options_t *opts)
{
    static const struct option options[] = {
        {"broker", required_argument, 0, 'b'}, {"queue", required_argument, 0, 'q'},
        {"timeout", required_argument, 0, 't'}, {"all", no_argument, 0, 'a'},
        {"immediate", no_argument, 0, 'i'},    {"help", no_argument, 0, 'h'},
        {"print-config", no_argument, 0, 'p'}, {"format", required_argument, 0, 'f'},
        {"watch", optional_argument, 0, 'w'},  {"priority", required_argument, 0, 'P'},
        {"delay", required_argument, 0, 'D'},  {"at", required_argument, 0, 'A'},
        {"front", no_argument, 0, 'F'},        {"brokers", no_argument, 0, 'B'},
        AQ_SECURITY_OPTIONS, {0, 0, 0, 0}};
    int is_join = strcmp(command, "join") == 0;
    int is_stats = strcmp(command, "stats") == 0;
    int every_queue = strcmp(command, "stats") == 0 || strcmp(command, "shutdown") == 0;
    int is_put = strcmp(command, "put") == 0;
    const char *timeout = NULL, *curve_secret = NULL, *server_key = NULL;
    const char *priority = NULL, *delay = NULL, *at = NULL;
    int print_config = 0, front = 0;
    int opt;
    optind = 1;
    while ((opt = getopt_long(argc, argv, "b:q:h", options, NULL)) != -1) {
        if (opt == 'b')
            opts->broker = optarg;
        else if (opt == 'q')
            opts->queue = optarg;
        else if (opt == 't' && is_join)
            timeout = optarg;
        else if (opt == 'a' && is_join)
            opts->all = 1;
        else if (opt == 'i' && strcmp(command, "shutdown") == 0)
            opts->immediate = 1;
        else if (opt == 'f' && (is_stats || strcmp(command, "dead") == 0
                                || strcmp(command, "peek") == 0))
            opts->format = optarg;
        else if (opt == 'B' && is_stats)
            opts->per_broker = 1;
        else if (opt == 'w' && is_stats) {
            if (!s_watch_arg(argc, argv, opts))
                return 0;
        }
        else if (opt == 'P' && is_put)
            priority = optarg;
        else if (opt == 'D' && is_put)
            delay = optarg;
        else if (opt == 'A' && is_put)
            at = optarg;
        else if (opt == 'F' && is_put)
            front = 1;
        else if (opt == 'p')
            print_config = 1;
        else if (opt == AQ_OPT_CURVE_SECRET)
            curve_secret = optarg;
        else if (opt == AQ_OPT_SERVER_KEY)
            server_key = optarg;
        else if (opt == 'h') {
            printf("%s%s", usage, AQ_SECURITY_USAGE);
            exit(AQ_EXIT_OK);
        }
        else {
            fprintf(stderr, "%s%s", usage, AQ_SECURITY_USAGE);
            return 0;
        }
    }
    opts->broker = aq_endpoint_choose(opts->broker, "ASYNCQ_BROKER", "localhost");
    opts->queue = aq_arg_env(opts->queue, "ASYNCQ_QUEUE");
    opts->queue_given = opts->queue != NULL;
    if (!opts->queue)
        opts->queue = every_queue ? "" : "default";
    if (*opts->queue && !aq_name_is_valid((const uint8_t *) opts->queue, strlen(opts->queue))) {
        fprintf(stderr, "asyncq %s: queue name '%s' is not valid: 1 to %d of A-Z a-z 0-9 . _ : -\n",
                command, opts->queue, AQ_NAME_MAX);
        return 0;
    }
    timeout = is_join ? aq_arg_env(timeout, "ASYNCQ_JOIN_TIMEOUT") : NULL;
    if (timeout
        && (!aq_arg_seconds_ms(timeout, &opts->timeout_ms) || opts->timeout_ms > AQ_WAIT_MAX_MS)) {
        fprintf(stderr,
                "asyncq %s: --timeout (ASYNCQ_JOIN_TIMEOUT) needs seconds, at most 86400 "
                "(0: none), not '%s'\n",
                command, timeout);
        return 0;
    }
    const char *why;
    if (is_put && !aq_arg_put_options(priority, delay, at, front, &opts->put, &why)) {
        fprintf(stderr, "asyncq %s: %s\n", command, why);
        return 0;
    }
    if (print_config) {
        printf("ASYNCQ_BROKER=%s\nASYNCQ_QUEUE=%s\n", opts->broker, opts->queue);
        if (is_join)
            printf("ASYNCQ_JOIN_TIMEOUT=%.3f\n", (double) opts->timeout_ms / 1000.0);
        aq_security_print_config(curve_secret, server_key);
        exit(AQ_EXIT_OK);
    }
    char program[32];
    snprintf(program, sizeof program, "asyncq %s", command);
    return aq_security_args(program, curve_secret, server_key);
}

aq_session_t *cli_connect(const char *command, const char *broker, aq_status_t *rc)
{
    aq_session_t *session = aq_session_new(broker, command, AQ_CONNECT_TIMEOUT_MS, rc);
    if (!session)
        fprintf(stderr, "asyncq %s: %s\n", command, aq_last_error());
    return session;
}

aq_session_t **cli_connect_all_within(const char *command, const char *broker, int timeout_ms,
                                      size_t *count, aq_status_t *rc)
{
    char client_id[AQ_NAME_MAX + 1];
    aq_client_id_make(command, client_id, sizeof client_id);
    char left_out[AQ_LEFT_OUT_MAX];
    aq_session_t **sessions = aq_service_open(broker, client_id, 0, timeout_ms, left_out,
                                              sizeof left_out, count, rc);
    if (!sessions)
        fprintf(stderr, "asyncq %s: %s\n", command, aq_last_error());
    else if (left_out[0])
        fprintf(stderr, "asyncq %s: warning: %s; asking the others\n", command, left_out);
    return sessions;
}

aq_session_t **cli_connect_all(const char *command, const char *broker, size_t *count,
                               aq_status_t *rc)
{
    return cli_connect_all_within(command, broker, AQ_CONNECT_TIMEOUT_MS, count, rc);
}

void cli_disconnect_all(aq_session_t **sessions, size_t count)
{
    for (size_t i = 0; i < count; i++)
        aq_session_destroy(&sessions[i]);
    free(sessions);
}

void cli_report(const char *command, const aq_session_t *session, aq_status_t rc)
{
    const aq_error_t *error = session ? aq_session_error(session) : NULL;
    /* A refusal is AQ_REFUSED, or the ERROR's own code where the library
       passes it on (a join answered SHUT_DOWN). */
    if (error && error->code && (rc == AQ_REFUSED || (int) rc == error->code))
        fprintf(stderr, "asyncq %s: the broker refused: %s (%d): %s%s%s\n", command,
                aq_status_name(error->code), error->code,
                error->text[0] ? error->text : aq_strerror(error->code),
                error->code == AQ_UNKNOWN_ITEM && error->subject[0] ? ": " : "",
                error->code == AQ_UNKNOWN_ITEM ? error->subject : "");
    else
        fprintf(stderr, "asyncq %s: %s\n", command, aq_strerror(rc));
}

/*  Waits for the brokers to confirm every put, as long as it takes while
    they answer (a full queue holds puts: asyncio's put waits too). Brokers
    that stop answering for the time a connection is given (a group left
    without a leader) end the wait, as they end a put begun then:
    AQ_UNREACHABLE, and the puts not confirmed may or may not be kept. */
static aq_status_t s_await_confirms(aq_producer_t *producer)
{
    int64_t silent_since = 0;
    for (;;) {
        aq_status_t rc = aq_producer_sync(producer, 1000);
        if (rc != AQ_TIMEOUT)
            return rc;
        int64_t now = zclock_mono();
        if (aq_producer_answered(producer))
            silent_since = 0;
        else if (!silent_since)
            silent_since = now;
        else if (now - silent_since >= AQ_CONNECT_TIMEOUT_MS)
            return AQ_UNREACHABLE;
    }
}

int cli_put(int argc, char **argv)
{
    const char *usage = "Usage: asyncq put [-b ADDR] [-q QUEUE] [OPTIONS] ITEM...\n"
                        "Puts each ITEM and exits once the broker has confirmed all of them\n"
                        "(waiting while a full queue holds them); exit 3 if no broker answers\n"
                        "for 5 s meanwhile (a group of replicas without a leader).\n"
                        AQ_PUT_OPTIONS_USAGE;
    request_options_t opts = {0};
    if (!s_parse("put", usage, argc, argv, &opts))
        return AQ_EXIT_USAGE;
    aq_status_t rc;
    aq_producer_t *producer = aq_producer_new(opts.broker, "asyncq-put", &rc);
    if (!producer) {
        fprintf(stderr, "asyncq put: %s\n", aq_last_error());
        return aq_exit_code(rc);
    }
    if (aq_producer_unreachable(producer)[0])
        fprintf(stderr, "asyncq put: warning: %s; putting to the others\n",
                aq_producer_unreachable(producer));
    for (int i = optind; i < argc && rc == AQ_OK; i++) {
        rc = aq_producer_put_with(producer, opts.queue, argv[i], strlen(argv[i]), &opts.put);
        if (rc)
            fprintf(stderr, "asyncq put: item %d: %s\n", i - optind + 1, aq_strerror(rc));
    }
    if (rc == AQ_OK)
        rc = s_await_confirms(producer);
    if (rc == AQ_UNREACHABLE)
        fprintf(stderr, "asyncq put: no broker answered for %d s (a group of replicas without "
                        "a leader?): %llu of the items not confirmed, which may or may not be "
                        "kept\n", AQ_CONNECT_TIMEOUT_MS / 1000,
                (unsigned long long) aq_producer_unconfirmed(producer));
    else if (rc == AQ_REFUSED && aq_producer_refused(producer)) {
        const aq_error_t *error = aq_session_error(aq_producer_session(producer));
        fprintf(stderr, "asyncq put: %llu items refused by the broker: %s (%d): %s\n",
                (unsigned long long) aq_producer_refused(producer),
                aq_status_name(error->code), error->code, error->text);
    }
    else if (rc) /* the SYNC itself refused, say */
        cli_report("put", aq_producer_session(producer), rc);
    else
        printf("put %llu item%s into %s\n", (unsigned long long) aq_producer_sent(producer),
               aq_producer_sent(producer) == 1 ? "" : "s", opts.queue);
    aq_producer_destroy(&producer);
    return aq_exit_code(rc);
}

/*  The `outstanding` number of a stats line. */
static void s_outstanding_line(void *ctx, const char *line)
{
    const char *at = strstr(line, " outstanding=");
    if (at)
        *(uint64_t *) ctx = strtoull(at + 13, NULL, 10);
}

/*  One broker's part of a join (cli_join), on a thread of its own. */
typedef struct {
    aq_session_t *session;
    const char *queue;
    int64_t deadline;
    int timed; /* a --timeout: the deadline holds */
    aq_join_mode_t mode;
    aq_join_result_t result;
    aq_status_t rc;
    pthread_t thread;
    int started;
    atomic_int done;
} join_one_t;

static void *s_join_one(void *arg)
{
    join_one_t *one = arg;
    int left = aq_deadline_left(one->deadline);
    one->rc = aq_join(one->session, one->queue, one->timed ? (left ? left : 1) : -1, one->mode,
                      &one->result);
    atomic_store(&one->done, 1);
    return NULL;
}

/*  Waits for the joins' threads. A signal (Ctrl-C) ends a wait only in
    the thread that takes it: once one was taken, it is passed to every
    thread still waiting, so that each returns AQ_INTERRUPTED. */
static void s_join_wait(join_one_t *joins, size_t count)
{
    for (;;) {
        int waiting = 0;
        for (size_t i = 0; i < count; i++)
            if (joins[i].started && !atomic_load(&joins[i].done)) {
                waiting = 1;
                if (zsys_interrupted)
                    pthread_kill(joins[i].thread, SIGINT);
            }
        if (!waiting)
            break;
        zmq_poll(NULL, 0, 50); /* a sleep that a signal ends */
    }
    for (size_t i = 0; i < count; i++)
        if (joins[i].started)
            pthread_join(joins[i].thread, NULL);
}

int cli_join(int argc, char **argv)
{
    const char *usage =
        "Usage: asyncq join [-b ADDR] [-q QUEUE] [--timeout SECONDS] [--all] [--print-config]\n"
        "Waits until every item the broker accepted on QUEUE before the join arrived\n"
        "has been acked. --all waits until nothing at all is outstanding, items put\n"
        "later included (asyncio's Queue.join). Exit 0 when joined, 4 on time-out.\n"
        "On a terminal, a line on stderr shows the progress while it waits (items\n"
        "acked of those waited for, the rate, the time left) and is erased at the\n"
        "end; piped or redirected, only the result is printed.\n"
        "Environment: ASYNCQ_BROKER, ASYNCQ_QUEUE, ASYNCQ_JOIN_TIMEOUT (seconds, 0 = none).\n";
    request_options_t opts = {0};
    if (!s_parse("join", usage, argc, argv, &opts))
        return AQ_EXIT_USAGE;
    if (optind < argc) {
        fprintf(stderr, "asyncq join: unexpected argument '%s'\n", argv[optind]);
        return AQ_EXIT_USAGE;
    }
    aq_status_t rc;
    size_t count;
    /* --timeout 0 (and no --timeout) is "none", as the flag always said;
       the library's -1. It counts from now: a broker of the service that
       does not answer is waited for within it. */
    int64_t deadline = aq_deadline_at(opts.timeout_ms ? (int) opts.timeout_ms : -1);
    int within = opts.timeout_ms && opts.timeout_ms < AQ_CONNECT_TIMEOUT_MS
                     ? (int) opts.timeout_ms : AQ_CONNECT_TIMEOUT_MS;
    aq_session_t **sessions = cli_connect_all_within("join", opts.broker, within, &count, &rc);
    if (!sessions)
        return aq_exit_code(rc);
    aq_join_result_t result = {0};
    join_progress_t *progress = join_progress_start(opts.broker, opts.queue, opts.all);
    /* Every broker of a service at once (PROTOCOL.md 4.15), a thread each:
       each covers the puts it accepted before the JOIN reached it, so
       together they cover every put confirmed before this join, and the
       items they say were outstanding are counted at one moment. */
    join_one_t *joins = calloc(count, sizeof *joins);
    if (!joins) {
        join_progress_stop(&progress);
        cli_disconnect_all(sessions, count);
        return aq_exit_code(AQ_NOMEM);
    }
    for (size_t i = 0; i < count; i++) {
        joins[i] = (join_one_t){.session = sessions[i], .queue = opts.queue,
                                .deadline = deadline, .timed = opts.timeout_ms != 0,
                                .mode = opts.all ? AQ_JOIN_ALL : AQ_JOIN_BEFORE};
        joins[i].started = count > 1 && pthread_create(&joins[i].thread, NULL, s_join_one,
                                                       &joins[i]) == 0;
        if (!joins[i].started)
            s_join_one(&joins[i]);
    }
    s_join_wait(joins, count);
    size_t k = count;
    for (size_t i = 0; i < count; i++) {
        result.waited += joins[i].result.waited;
        result.dead += joins[i].result.dead;
        result.outstanding += joins[i].result.outstanding;
        if (joins[i].rc != AQ_OK && k == count)
            k = i; /* the first shard that did not join: its answer is said */
    }
    rc = k < count ? joins[k].rc : AQ_OK;
    free(joins);
    join_progress_stop(&progress);
    if (rc == AQ_OK)
        printf("joined %s: %llu items were outstanding, %llu of them dead-lettered\n", opts.queue,
               (unsigned long long) result.waited, (unsigned long long) result.dead);
    else if (rc == AQ_TIMEOUT && count > 1) {
        /* Each shard's outstanding items now, asked again: those that
           joined have none left of what they waited for. */
        char shards[1024] = "";
        size_t used = 0;
        uint64_t total = 0;
        for (size_t i = 0; i < count && used < sizeof shards; i++) {
            uint64_t outstanding = 0;
            aq_status_t asked = aq_session_answers(sessions[i])
                                    ? aq_stats(sessions[i], opts.queue, s_outstanding_line,
                                               &outstanding)
                                    : AQ_UNREACHABLE;
            total += outstanding;
            used += (size_t) snprintf(shards + used, sizeof shards - used,
                                      asked ? "%sshard %d: no answer" : "%sshard %d: %llu",
                                      i ? ", " : "", aq_session_welcome(sessions[i])->shard,
                                      (unsigned long long) outstanding);
        }
        printf("timed out on %s: %llu items still outstanding in a service of %zu brokers "
               "(%s)\n", opts.queue, (unsigned long long) total, count, shards);
    }
    else if (rc == AQ_TIMEOUT)
        printf("timed out on %s: %llu items still outstanding\n", opts.queue,
               (unsigned long long) result.outstanding);
    else
        cli_report("join", sessions[k < count ? k : 0], rc);
    cli_disconnect_all(sessions, count);
    return aq_exit_code(rc);
}

static void s_print_line(void *ctx, const char *line)
{
    (void) ctx;
    printf("%s\n", line);
}

/*  A `key=value ...` line of DEAD list or PEEK as a JSON object: whole
    numbers as numbers (ids as strings: they exceed 2^53), quoted values
    unescaped (\" \\ \xNN) into a string when the bytes are UTF-8, else
    kept escaped. NULL if the line is not of that form. */
static json_t *s_line_object(const char *line)
{
    json_t *object = json_object();
    const char *at = line;
    while (object && *at) {
        const char *equals = strchr(at, '=');
        if (!equals)
            break;
        char key[64];
        snprintf(key, sizeof key, "%.*s", (int) (equals - at), at);
        const char *value = equals + 1, *end;
        json_t *json;
        if (*value == '"') {
            char bytes[AQ_TEXT_MAX + 1];
            size_t size = 0;
            for (end = value + 1; *end && *end != '"'; end++) {
                unsigned byte;
                if (*end == '\\' && end[1] == 'x' && sscanf(end + 2, "%2x", &byte) == 1) {
                    bytes[size++] = (char) byte;
                    end += 3;
                }
                else if (*end == '\\' && end[1])
                    bytes[size++] = *++end;
                else
                    bytes[size++] = *end;
            }
            int cut = end[0] == '"' && strncmp(end + 1, "...", 3) == 0;
            json = json_stringn(bytes, size);
            if (!json) /* not UTF-8: as the broker wrote it */
                json = json_stringn(value + 1, (size_t) (end - value - 1));
            if (cut) {
                char cut_key[80];
                snprintf(cut_key, sizeof cut_key, "%s_cut", key);
                json_object_set_new(object, cut_key, json_true());
            }
            end += *end == '"' ? 1 + (cut ? 3 : 0) : 0;
        }
        else {
            end = strchr(value, ' ');
            if (!end)
                end = value + strlen(value);
            char text[128];
            snprintf(text, sizeof text, "%.*s", (int) (end - value), value);
            char *rest;
            errno = 0;
            long long integer = strtoll(text, &rest, 10);
            json = strcmp(key, "id") != 0 && *text && !*rest && !errno
                       ? json_integer(integer)
                       : json_string(text);
        }
        json_object_set_new(object, key, json ? json : json_null());
        at = *end == ' ' ? end + 1 : end;
    }
    return object;
}

typedef struct {
    json_t *array;
} json_lines_t;

static void s_json_line(void *ctx, const char *line)
{
    json_lines_t *lines = ctx;
    json_t *object = s_line_object(line);
    if (object)
        json_array_append_new(lines->array, object);
}

/*  --format: kv (the broker's lines), or json (one array of objects). */
static int s_format_is_json(const char *command, const char *format, int *json)
{
    *json = format && strcmp(format, "json") == 0;
    if (!format || *json || strcmp(format, "kv") == 0)
        return 1;
    fprintf(stderr, "asyncq %s: --format is kv or json, not '%s'\n", command, format);
    return 0;
}

static void s_print_json_lines(json_lines_t *lines)
{
    json_dumpf(lines->array, stdout, 0);
    printf("\n");
    json_decref(lines->array);
}

/*  Prints the lines of a DEAD (action) or SHUTDOWN reply; returns the exit
    code. */
/*  The broker of a service whose shard is `shard` (an item id's top 8
    bits, PROTOCOL.md 4.15); NULL if none. */
static aq_session_t *s_shard_session(aq_session_t **sessions, size_t count, int shard)
{
    for (size_t i = 0; i < count; i++)
        if (aq_session_welcome(sessions[i])->shard == shard)
            return sessions[i];
    return NULL;
}

/*  Prints the lines of a DEAD (action) or SHUTDOWN reply, from every
    broker of the service; with item ids, from the broker they name (ids
    of one shard at a time). Returns the exit code. */
/*  The lines of several brokers' answers, gathered to be put in one order
    (a service's dead letters by death, its peeked items by priority and
    age, PROTOCOL.md 4.15). */
typedef struct {
    char **lines;
    size_t count;
    size_t capacity;
    int out_of_memory;
} gathered_t;

static void s_gather_line(void *ctx, const char *line)
{
    gathered_t *self = ctx;
    if (self->count == self->capacity) {
        size_t capacity = self->capacity ? 2 * self->capacity : 64;
        char **lines = realloc(self->lines, capacity * sizeof *lines);
        if (!lines) {
            self->out_of_memory = 1;
            return;
        }
        self->lines = lines;
        self->capacity = capacity;
    }
    char *copy = strdup(line);
    if (copy)
        self->lines[self->count++] = copy;
    else
        self->out_of_memory = 1;
}

/*  The value of `key=` in a line, as text up to the next space ("" if none). */
static void s_field(const char *line, const char *key, char *out, size_t size)
{
    size_t length = strlen(key);
    out[0] = '\0';
    for (const char *at = line; at; at = strchr(at, ' ')) {
        at += *at == ' ';
        if (strncmp(at, key, length) == 0 && at[length] == '=') {
            snprintf(out, size, "%.*s", (int) strcspn(at + length + 1, " "), at + length + 1);
            return;
        }
    }
}

/*  Dead letters, oldest death first ("died=" is an ISO 8601 time in UTC,
    whose text sorts as its time; one whose time is unknown comes first, as
    the clients put it). */
static int s_by_death(const void *a, const void *b)
{
    char one[40], other[40];
    s_field(*(char *const *) a, "died", one, sizeof one);
    s_field(*(char *const *) b, "died", other, sizeof other);
    int known = one[0] && strcmp(one, "unknown"), other_known = other[0] && strcmp(other, "unknown");
    if (!known || !other_known)
        return known - other_known;
    return strcmp(one, other);
}

/*  Peeked items in the order they would be delivered: priority, then the
    oldest first. */
static int s_by_delivery(const void *a, const void *b)
{
    char text[24];
    s_field(*(char *const *) a, "priority", text, sizeof text);
    long long priority_a = strtoll(text, NULL, 10);
    s_field(*(char *const *) b, "priority", text, sizeof text);
    long long priority_b = strtoll(text, NULL, 10);
    if (priority_a != priority_b)
        return priority_a < priority_b ? -1 : 1;
    s_field(*(char *const *) a, "age_ms", text, sizeof text);
    unsigned long long age_a = strtoull(text, NULL, 10);
    s_field(*(char *const *) b, "age_ms", text, sizeof text);
    unsigned long long age_b = strtoull(text, NULL, 10);
    return age_a == age_b ? 0 : age_a > age_b ? -1 : 1;
}

/*  The gathered lines in `order`, the first `most` of them, to `line`;
    then freed. */
static void s_gathered_out(gathered_t *self, int (*order)(const void *, const void *),
                           size_t most, aq_stats_line_fn *line, void *ctx)
{
    if (self->count > 1)
        qsort(self->lines, self->count, sizeof *self->lines, order);
    for (size_t i = 0; i < self->count; i++) {
        if (i < most)
            line(ctx, self->lines[i]);
        free(self->lines[i]);
    }
    free(self->lines);
}

static int s_print_report(const char *command, const request_options_t *opts, const char *action)
{
    int json = 0;
    if (!s_format_is_json(command, opts->format, &json))
        return AQ_EXIT_USAGE;
    aq_status_t rc;
    size_t count;
    aq_session_t **sessions = cli_connect_all(command, opts->broker, &count, &rc);
    if (!sessions)
        return aq_exit_code(rc);
    const char *ids = action ? strchr(action, ' ') : NULL;
    int shard = -1;
    for (const char *at = ids; at && *at; at = strchr(at + 1, ' ')) {
        int of = (int) (strtoull(at + 1, NULL, 10) >> 56);
        if (shard >= 0 && of != shard) {
            fprintf(stderr, "asyncq %s: these ids are of several shards (an id's top 8 bits): "
                            "act on one shard's at a time\n", command);
            cli_disconnect_all(sessions, count);
            return AQ_EXIT_USAGE;
        }
        shard = of;
    }
    aq_session_t *only = shard >= 0 ? s_shard_session(sessions, count, shard) : NULL;
    json_lines_t lines = {json ? json_array() : NULL};
    aq_session_t *failed = NULL;
    /* A service's dead letters in one list, oldest death first. */
    int listing = strcmp(command, "dead") == 0 && strcmp(action, "list") == 0 && count > 1;
    gathered_t gathered = {0};
    for (size_t k = 0; k < count && !rc; k++) {
        aq_session_t *session = sessions[k];
        if (only && session != only)
            continue;
        if (strcmp(command, "shutdown") == 0)
            rc = aq_shutdown(session, opts->queue,
                             opts->immediate ? AQ_SHUTDOWN_IMMEDIATE : AQ_SHUTDOWN_DRAIN,
                             s_print_line, NULL);
        else if (listing)
            rc = aq_dead(session, opts->queue, action, s_gather_line, &gathered);
        else
            rc = aq_dead(session, opts->queue, action, json ? s_json_line : s_print_line,
                         &lines);
        failed = rc ? session : NULL;
        if (shard >= 0 && !only)
            break; /* no such shard: the first broker answers 404 */
    }
    if (!rc && gathered.out_of_memory)
        rc = AQ_NOMEM;
    if (listing)
        s_gathered_out(&gathered, s_by_death, rc ? 0 : SIZE_MAX,
                       json ? s_json_line : s_print_line, &lines);
    if (json && rc == AQ_OK)
        s_print_json_lines(&lines);
    else if (json)
        json_decref(lines.array);
    if (rc)
        cli_report(command, failed ? failed : sessions[0], rc);
    cli_disconnect_all(sessions, count);
    return aq_exit_code(rc);
}

int cli_stats(int argc, char **argv)
{
    const char *usage =
        "Usage: asyncq stats [-b ADDR] [-q QUEUE] [--format table|kv|json] [--watch [SECONDS]]\n"
        "Prints the numbers of every queue (or of QUEUE): queued, inflight, delayed,\n"
        "held, acked, dead, consumers, joiners, outstanding, puts, delivered,\n"
        "redelivered, expired, maxsize, lease_ms, state (open, draining or\n"
        "discarding) and discarded.\n"
        "      --brokers             of a service of shards (PROTOCOL.md 4.15), each\n"
        "                            broker's rows, first naming it (broker=, shard=);\n"
        "                            without it, the shards' numbers added up\n"
        "      --format FORMAT       table: an aligned table of the main numbers (the\n"
        "                            default on a terminal); kv: one line per queue,\n"
        "                            every number as name=value (the default\n"
        "                            otherwise); json: one array, an object per queue\n"
        "      --watch [SECONDS]     again every SECONDS (default 1) until Ctrl-C, which\n"
        "                            exits 0; the table adds puts and acks per second.\n"
        "                            On a terminal it redraws in place; piped, it\n"
        "                            prints a block each time (a blank line after kv\n"
        "                            and table blocks, JSON one document per line)\n";
    request_options_t opts = {0};
    if (!s_parse("stats", usage, argc, argv, &opts))
        return AQ_EXIT_USAGE;
    if (optind < argc) {
        fprintf(stderr, "asyncq stats: unexpected argument '%s'\n", argv[optind]);
        return AQ_EXIT_USAGE;
    }
    stats_format_t format;
    if (!stats_format_parse(opts.format, &format)) {
        fprintf(stderr, "asyncq stats: --format needs table, kv or json, not '%s'\n",
                opts.format);
        return AQ_EXIT_USAGE;
    }
    return stats_show(opts.broker, opts.queue, format, opts.watch_ms, opts.per_broker);
}

/*  `dead show ID`: the item's list line, then its payload, gathered from
    as many answers as it takes (each holds up to 785 664 bytes, PROTOCOL.md
    4.12). */
typedef struct {
    char header[AQ_TEXT_MAX + 1];
    zchunk_t *payload;
    uint64_t size; /* the item's, from the header */
    int lines;
    int bad;
} dead_show_t;

static void s_show_line(void *ctx, const char *line)
{
    dead_show_t *show = ctx;
    if (show->lines++ == 0) {
        snprintf(show->header, sizeof show->header, "%s", line);
        const char *size = strstr(line, " size=");
        show->size = size ? strtoull(size + 6, NULL, 10) : 0;
        return;
    }
    zarmour_t *armour = zarmour_new();
    zarmour_set_mode(armour, ZARMOUR_MODE_BASE64_STD);
    zarmour_set_line_breaks(armour, false);
    zchunk_t *chunk = zarmour_decode(armour, line);
    zarmour_destroy(&armour);
    /* zarmour_decode ends the bytes with a NUL of its own, counted. */
    size_t size = chunk && zchunk_size(chunk) ? zchunk_size(chunk) - 1 : 0;
    size_t before = zchunk_size(show->payload);
    if (!size || zchunk_extend(show->payload, zchunk_data(chunk), size) != before + size)
        show->bad = 1;
    zchunk_destroy(&chunk);
}

static int s_dead_show(request_options_t *opts, const char *id)
{
    uint64_t number;
    if (!aq_arg_u64(id, &number)) {
        fprintf(stderr, "asyncq dead show: '%s' is not an item id (see asyncq dead list)\n", id);
        return AQ_EXIT_USAGE;
    }
    int json = 0;
    if (!s_format_is_json("dead", opts->format, &json))
        return AQ_EXIT_USAGE;
    aq_status_t rc;
    size_t count;
    aq_session_t **sessions = cli_connect_all("dead", opts->broker, &count, &rc);
    if (!sessions)
        return aq_exit_code(rc);
    aq_session_t *session = s_shard_session(sessions, count, (int) (number >> 56));
    if (!session)
        session = sessions[0]; /* it answers 404 */
    dead_show_t show = {.payload = zchunk_new(NULL, 0)};
    do {
        char action[64];
        snprintf(action, sizeof action, "show %s %zu", id, zchunk_size(show.payload));
        size_t before = zchunk_size(show.payload);
        show.lines = 0;
        rc = aq_dead(session, opts->queue, action, s_show_line, &show);
        if (rc == AQ_OK && (show.bad || (zchunk_size(show.payload) == before
                                         && before < show.size))) {
            fprintf(stderr, "asyncq dead show: the broker's answer is not as PROTOCOL.md 4.12 says\n");
            zchunk_destroy(&show.payload);
            cli_disconnect_all(sessions, count);
            return AQ_EXIT_FAILURE;
        }
    } while (rc == AQ_OK && zchunk_size(show.payload) < show.size);
    if (rc == AQ_OK && json) {
        json_t *object = s_line_object(show.header);
        json_object_del(object, "payload");
        json_object_del(object, "payload_cut");
        const char *data = (const char *) zchunk_data(show.payload);
        size_t size = zchunk_size(show.payload);
        json_t *text = json_stringn(data, size);
        if (text)
            json_object_set_new(object, "payload", text);
        else {
            zarmour_t *armour = zarmour_new();
            zarmour_set_mode(armour, ZARMOUR_MODE_BASE64_STD);
            zarmour_set_line_breaks(armour, false);
            char *base64 = zarmour_encode(armour, zchunk_data(show.payload), size);
            zarmour_destroy(&armour);
            json_object_set_new(object, "payload_base64", json_string(base64 ? base64 : ""));
            freen(base64);
        }
        json_dumpf(object, stdout, 0);
        printf("\n");
        json_decref(object);
    }
    else if (rc == AQ_OK) {
        size_t size = zchunk_size(show.payload);
        printf("%s\n", show.header);
        fwrite(zchunk_data(show.payload), 1, size, stdout);
        /* On a terminal the prompt goes on a line of its own; piped, the
           bytes are the item's, as it was put. */
        if (size && zchunk_data(show.payload)[size - 1] != '\n' && isatty(STDOUT_FILENO))
            printf("\n");
    }
    else
        cli_report("dead", session, rc);
    zchunk_destroy(&show.payload);
    cli_disconnect_all(sessions, count);
    return aq_exit_code(rc);
}

int cli_dead(int argc, char **argv)
{
    const char *usage = "Usage: asyncq dead list|requeue|purge [-b ADDR] [-q QUEUE]\n"
                        "       asyncq dead list --format json  (one array of objects)\n"
                        "       asyncq dead show ID [--format json] [-b ADDR] [-q QUEUE]\n"
                        "       asyncq dead requeue|delete ID... [-b ADDR] [-q QUEUE]\n"
                        "Items delivered --max-attempts times without an ack go to their queue's\n"
                        "dead-letter list. list shows them (id, attempts, size, when and why\n"
                        "each died, its last reason, the start of it), show one of them whole\n"
                        "(its list line, then its payload as it was put, byte for byte; json:\n"
                        "\"payload\", or \"payload_base64\" if it is not UTF-8), requeue puts\n"
                        "them back at the end of the queue, purge deletes them; with ids, only\n"
                        "those (all or none: an id that is not a dead item of QUEUE changes\n"
                        "nothing).\n";
    request_options_t opts = {0};
    if (!s_parse("dead", usage, argc, argv, &opts))
        return AQ_EXIT_USAGE;
    const char *action = optind < argc ? argv[optind] : NULL;
    if (action && strcmp(action, "show") == 0 && optind + 2 == argc)
        return s_dead_show(&opts, argv[optind + 1]);
    int with_ids = action && optind + 1 < argc
                   && (strcmp(action, "requeue") == 0 || strcmp(action, "delete") == 0);
    if (!action || (optind + 1 != argc && !with_ids)
        || (strcmp(action, "list") && strcmp(action, "requeue") && strcmp(action, "purge")
            && !with_ids)) {
        fprintf(stderr, "%s", usage);
        return AQ_EXIT_USAGE;
    }
    if (!with_ids)
        return s_print_report("dead", &opts, action);
    /* "requeue ID ID...": the ids checked here, so that a typo says so. */
    char text[AQ_TEXT_MAX + 1];
    size_t length = (size_t) snprintf(text, sizeof text, "%s", action);
    for (int i = optind + 1; i < argc; i++) {
        uint64_t id;
        if (!aq_arg_u64(argv[i], &id)) {
            fprintf(stderr, "asyncq dead %s: '%s' is not an item id (see asyncq dead list)\n",
                    action, argv[i]);
            return AQ_EXIT_USAGE;
        }
        if (length + 1 + strlen(argv[i]) > AQ_TEXT_MAX) {
            fprintf(stderr,
                    "asyncq dead %s: too many ids for one request: the action and its ids\n"
                    "are at most %d bytes (about 50 ids of 20 digits); the first %d ids fit\n",
                    action, AQ_TEXT_MAX, i - optind - 1);
            return AQ_EXIT_USAGE;
        }
        length += (size_t) snprintf(text + length, sizeof text - length, " %s", argv[i]);
    }
    return s_print_report("dead", &opts, text);
}

static void s_count_line(void *ctx, const char *line)
{
    (*(int *) ctx)++;
    printf("%s\n", line);
}

/*  asyncq reopen|purge|delete -q QUEUE. */
int cli_queue_action(int argc, char **argv)
{
    static const char *const names[] = {"reopen", "purge", "delete", "pause", "resume"};
    const char *usage =
        "Usage: asyncq reopen|purge|delete|pause|resume -q QUEUE [-b ADDR]\n"
        "reopen: a shut-down QUEUE takes puts again (prints its stats); without -q,\n"
        "  every queue, and those made later (undoes asyncq shutdown without -q).\n"
        "purge: discards QUEUE's queued and delayed items; items being processed stay\n"
        "  with their consumers; joins count the discarded items as done (prints\n"
        "  purged=N).\n"
        "delete: discards everything QUEUE holds, items being processed and dead ones\n"
        "  too; its consumers and joins hear it is shut down; the name is then free\n"
        "  (prints deleted=N).\n"
        "pause: QUEUE's deliveries stop (puts still go in) until resume; a durable broker\n"
        "  keeps it across restarts (prints its stats).\n"
        "Each needs the admin role; the broker answers once its journal has it.\n";
    const char *command = argv[0];
    int action = -1;
    for (int i = 0; i < 5; i++)
        if (strcmp(command, names[i]) == 0)
            action = i;
    request_options_t opts = {0};
    if (action < 0 || !s_parse(command, usage, argc, argv, &opts))
        return AQ_EXIT_USAGE;
    if (action == AQ_QUEUE_REOPEN && !opts.queue_given)
        opts.queue = ""; /* every queue, as shutdown without -q */
    else if (optind < argc || !opts.queue_given) {
        fprintf(stderr, optind < argc ? "asyncq %s: unexpected argument '%s'\n"
                                      : "asyncq %s: which queue? -q QUEUE (or ASYNCQ_QUEUE)\n",
                command, optind < argc ? argv[optind] : "");
        return AQ_EXIT_USAGE;
    }
    aq_status_t rc;
    size_t count;
    aq_session_t **sessions = cli_connect_all(command, opts.broker, &count, &rc);
    if (!sessions)
        return aq_exit_code(rc);
    int lines = 0;
    size_t k = 0;
    for (; k < count && !rc; k += !rc) /* every broker of the service */
        rc = aq_queue_action(sessions[k], opts.queue, (aq_queue_action_t) action, s_count_line,
                             &lines);
    if (rc)
        cli_report(command, sessions[k], rc);
    else if (!lines && *opts.queue) {
        fprintf(stderr, "asyncq %s: the broker has no queue %s\n", command, opts.queue);
        rc = AQ_REFUSED;
    }
    cli_disconnect_all(sessions, count);
    return aq_exit_code(rc);
}

/*  asyncq peek -q QUEUE [-n N]. */
int cli_peek(int argc, char **argv)
{
    const char *usage = "Usage: asyncq peek [-q QUEUE] [-n N] [-b ADDR] [--format kv|json]\n"
                        "Shows the next N (10; at most 1024) items QUEUE would deliver, without\n"
                        "taking them: id, attempts, size, priority, age and the start of each.\n";
    /* -n N is taken out before the common flags are read. */
    uint64_t count = 10;
    int kept = 1;
    for (int i = 1; i < argc; i++) {
        const char *value = NULL;
        if ((strcmp(argv[i], "-n") == 0 || strcmp(argv[i], "--count") == 0) && i + 1 < argc)
            value = argv[++i];
        else if (strncmp(argv[i], "--count=", 8) == 0)
            value = argv[i] + 8;
        else {
            argv[kept++] = argv[i];
            continue;
        }
        if (!aq_arg_u64(value, &count) || count == 0 || count > 1024) {
            fprintf(stderr, "asyncq peek: -n needs a whole number from 1 to 1024, not '%s'\n", value);
            return AQ_EXIT_USAGE;
        }
    }
    argc = kept;
    request_options_t opts = {0};
    if (!s_parse("peek", usage, argc, argv, &opts))
        return AQ_EXIT_USAGE;
    if (optind < argc) {
        fprintf(stderr, "asyncq peek: unexpected argument '%s'\n", argv[optind]);
        return AQ_EXIT_USAGE;
    }
    int json = 0;
    if (!s_format_is_json("peek", opts.format, &json))
        return AQ_EXIT_USAGE;
    aq_status_t rc;
    size_t brokers;
    aq_session_t **sessions = cli_connect_all("peek", opts.broker, &brokers, &rc);
    if (!sessions)
        return aq_exit_code(rc);
    json_lines_t lines = {json ? json_array() : NULL};
    /* Every shard's next items, and of them the next `count` the service
       would deliver. */
    gathered_t gathered = {0};
    size_t k = 0;
    for (; k < brokers && !rc; k += !rc)
        rc = aq_peek(sessions[k], opts.queue, count, s_gather_line, &gathered);
    if (!rc && gathered.out_of_memory)
        rc = AQ_NOMEM;
    s_gathered_out(&gathered, s_by_delivery, rc ? 0 : (size_t) count,
                   json ? s_json_line : s_print_line, &lines);
    if (json && rc == AQ_OK)
        s_print_json_lines(&lines);
    else if (json)
        json_decref(lines.array);
    if (rc)
        cli_report("peek", sessions[k], rc);
    cli_disconnect_all(sessions, brokers);
    return aq_exit_code(rc);
}

int cli_shutdown(int argc, char **argv)
{
    const char *usage =
        "Usage: asyncq shutdown [-b ADDR] [-q QUEUE] [--immediate]\n"
        "Shuts QUEUE down (default: every queue, and any made later), like Python's\n"
        "Queue.shutdown: puts are refused from then on. Consumers still get what is\n"
        "queued, joins complete as usual, and once the queue is empty its consumers\n"
        "are told so (asyncq-consumer exits 0). With --immediate, what is queued is\n"
        "discarded and waiting joins are answered SHUT_DOWN at once; items being\n"
        "processed may still be acked. Prints the stats of each queue shut.\n";
    request_options_t opts = {0};
    if (!s_parse("shutdown", usage, argc, argv, &opts))
        return AQ_EXIT_USAGE;
    if (optind < argc) {
        fprintf(stderr, "asyncq shutdown: unexpected argument '%s'\n", argv[optind]);
        return AQ_EXIT_USAGE;
    }
    return s_print_report("shutdown", &opts, NULL);
}
