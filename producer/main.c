/*  asyncq-producer: the reference producer (a random number of random items,
    a random sleep before each), or a pipe of lines into a queue (--stdin).
    Exits 0 only once the broker has confirmed it holds every item. */
#define _GNU_SOURCE
#include <errno.h>
#include <getopt.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <czmq.h>

#include "asyncq/producer.h"
#include "asyncq/program.h"
#include "asyncq/progress.h"
#include "asyncq/version.h"

/*  How often the --stdin status line is redrawn: often enough to look live,
    rarely enough to cost nothing at a million items a second. */
#define STATUS_EVERY_MS 250

typedef struct {
    const char *broker;
    const char *queue;
    const char *name;
    int has_count;
    uint64_t count;
    uint64_t max_sleep_ms;
    int from_stdin;
    int quiet;
    uint64_t seed;
    uint64_t lease_ms;
    aq_put_options_t put; /* --priority, --delay, --at, --front */
    int print_config;
    const char *curve_secret;
    const char *server_key;
} options_t;

/*  The status line of --stdin on a terminal: items sent and confirmed. */
typedef struct {
    aq_progress_t line;
    aq_rate_t rate;
    int64_t started_ms;
    int over_stdout; /* stdout is a terminal too: erase the line before a line of it */
} status_t;

static void s_usage(FILE *out)
{
    fprintf(out,
            "Usage: asyncq-producer [OPTIONS]\n"
            "Puts items into an asyncq queue. By default behaves like the reference\n"
            "producer: 0 to 10 random items, a random sleep before each.\n"
            "\n"
            "  -b, --broker HOST[:PORT]  broker address (env ASYNCQ_BROKER; localhost:5557);\n"
            "                            also tcp://HOST:PORT or ipc://PATH; or a list\n"
            "                            A,B,C: a service's brokers, or a group's replicas\n"
            "  -q, --queue Q             queue name (env ASYNCQ_QUEUE; default)\n"
            "  -n, --name NAME           name shown in output and logs (env ASYNCQ_NAME)\n"
            "      --count N             put N items instead of a random 0 to 10\n"
            "                            (env ASYNCQ_COUNT)\n"
            "      --max-sleep SECONDS   sleep a random time up to this before each put;\n"
            "                            0 for none (env ASYNCQ_MAX_SLEEP; 1, or 0 with --stdin)\n"
            "                            (an item printed as added is at the broker already:\n"
            "                            with a sleep each is sent as it is put; without,\n"
            "                            items go in batches as fast as they come)\n"
            "      --stdin               put each line of standard input as an item; on a\n"
            "                            terminal, a line on stderr shows the items sent\n"
            "                            and confirmed, and the rate\n"
            "      --quiet               print only the summary\n"
            "      --seed N              random seed, for repeatable runs\n"
            "      --lease SECONDS       ask for this lease on each delivery of these items,\n"
            "                            instead of the queue's (env ASYNCQ_ITEM_LEASE)\n"
            AQ_PUT_OPTIONS_USAGE
            AQ_SECURITY_USAGE
            "      --print-config        print the settings in effect and exit\n"
            "  -h, --help                this text\n"
            "      --version             print the version and exit\n"
            "\n"
            "Puts the broker has not confirmed are sent again if the broker restarts;\n"
            "it keeps each once.\n"
            "Exit codes: 0 every item confirmed by the broker; 1 some item refused;\n"
            "2 bad usage; 3 broker unreachable; 130 interrupted.\n");
}

static int s_parse(int argc, char **argv, options_t *opts)
{
    static const struct option options[] = {
        {"broker", required_argument, 0, 'b'}, {"queue", required_argument, 0, 'q'},
        {"name", required_argument, 0, 'n'},   {"count", required_argument, 0, 'c'},
        {"max-sleep", required_argument, 0, 's'}, {"stdin", no_argument, 0, 'i'},
        {"quiet", no_argument, 0, 'Q'},        {"seed", required_argument, 0, 'S'},
        {"lease", required_argument, 0, 'L'},  {"print-config", no_argument, 0, 'p'},
        {"help", no_argument, 0, 'h'},         {"version", no_argument, 0, 'V'},
        {"priority", required_argument, 0, 'P'}, {"delay", required_argument, 0, 'D'},
        {"at", required_argument, 0, 'A'},     {"front", no_argument, 0, 'F'},
        AQ_SECURITY_OPTIONS, {0, 0, 0, 0}};
    const char *count = NULL, *max_sleep = NULL, *seed = NULL, *lease = NULL;
    const char *priority = NULL, *delay = NULL, *at = NULL;
    int front = 0;
    int opt;
    while ((opt = getopt_long(argc, argv, "b:q:n:h", options, NULL)) != -1) {
        switch (opt) {
        case 'b': opts->broker = optarg; break;
        case 'q': opts->queue = optarg; break;
        case 'n': opts->name = optarg; break;
        case 'c': count = optarg; break;
        case 's': max_sleep = optarg; break;
        case 'i': opts->from_stdin = 1; break;
        case 'Q': opts->quiet = 1; break;
        case 'S': seed = optarg; break;
        case 'L': lease = optarg; break;
        case 'P': priority = optarg; break;
        case 'D': delay = optarg; break;
        case 'A': at = optarg; break;
        case 'F': front = 1; break;
        case 'p': opts->print_config = 1; break;
        case AQ_OPT_CURVE_SECRET: opts->curve_secret = optarg; break;
        case AQ_OPT_SERVER_KEY: opts->server_key = optarg; break;
        case 'h': s_usage(stdout); exit(AQ_EXIT_OK);
        case 'V': printf("asyncq-producer %s\n", aq_version()); exit(AQ_EXIT_OK);
        default: s_usage(stderr); return 0;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "asyncq-producer: unexpected argument '%s' (see --help)\n", argv[optind]);
        return 0;
    }
    count = aq_arg_env(count, "ASYNCQ_COUNT");
    max_sleep = aq_arg_env(max_sleep, "ASYNCQ_MAX_SLEEP");
    lease = aq_arg_env(lease, "ASYNCQ_ITEM_LEASE");
    if (lease && *lease
        && (!aq_arg_seconds_ms(lease, &opts->lease_ms) || opts->lease_ms > INT32_MAX)) {
        fprintf(stderr, "asyncq-producer: --lease needs seconds (under 24 days), not '%s'\n",
                lease);
        return 0;
    }
    const char *why;
    if (!aq_arg_put_options(priority, delay, at, front, &opts->put, &why)) {
        fprintf(stderr, "asyncq-producer: %s\n", why);
        return 0;
    }
    opts->put.lease_ms = opts->lease_ms;
    if (!aq_client_defaults("asyncq-producer", &opts->broker, &opts->queue, &opts->name,
                            "producer"))
        return 0;
    opts->has_count = count != NULL;
    if (count && !aq_arg_u64(count, &opts->count)) {
        fprintf(stderr, "asyncq-producer: --count needs a whole number, not '%s'\n", count);
        return 0;
    }
    opts->max_sleep_ms = opts->from_stdin ? 0 : 1000;
    if (max_sleep && !aq_arg_seconds_ms(max_sleep, &opts->max_sleep_ms)) {
        fprintf(stderr, "asyncq-producer: --max-sleep needs seconds, not '%s'\n", max_sleep);
        return 0;
    }
    if (seed && !aq_arg_u64(seed, &opts->seed)) {
        fprintf(stderr, "asyncq-producer: --seed needs a whole number, not '%s'\n", seed);
        return 0;
    }
    return 1;
}

static void s_print_config(const options_t *opts)
{
    printf("ASYNCQ_BROKER=%s\nASYNCQ_QUEUE=%s\nASYNCQ_NAME=%s\nASYNCQ_COUNT=", opts->broker,
           opts->queue, opts->name);
    if (opts->has_count)
        printf("%llu", (unsigned long long) opts->count);
    printf("\nASYNCQ_MAX_SLEEP=%.3f\nASYNCQ_ITEM_LEASE=%.3f\n", (double) opts->max_sleep_ms / 1000,
           (double) opts->lease_ms / 1000);
    aq_security_print_config(opts->curve_secret, opts->server_key);
}

static void s_status_init(status_t *status, int from_stdin)
{
    memset(status, 0, sizeof *status);
    if (from_stdin)
        aq_progress_init(&status->line);
    aq_rate_init(&status->rate);
    status->started_ms = zclock_mono();
    status->over_stdout = isatty(STDOUT_FILENO);
}

/*  "Producer NAME: 1,234,567 sent, 1,230,000 confirmed, 45,678/s", at most
    every STATUS_EVERY_MS; the final one (the average rate) always. */
static void s_status_show(status_t *status, const options_t *opts, aq_producer_t *producer,
                          int final)
{
    if (!final && !aq_progress_due(&status->line, STATUS_EVERY_MS))
        return;
    uint64_t sent = aq_producer_sent(producer);
    uint64_t unconfirmed = aq_producer_unconfirmed(producer);
    aq_rate_update(&status->rate, sent);
    double rate = status->rate.per_s;
    int64_t elapsed = zclock_mono() - status->started_ms;
    if (final) /* the average of the whole run */
        rate = (double) sent * 1000.0 / (double) (elapsed > 0 ? elapsed : 1);
    char sent_text[32], confirmed_text[32], rate_count[32], rate_text[48] = "";
    if (rate >= 0)
        snprintf(rate_text, sizeof rate_text, ", %s/s",
                 aq_format_count((uint64_t) (rate + 0.5), rate_count, sizeof rate_count));
    aq_progress_show(&status->line, "Producer %s: %s sent, %s confirmed%s", opts->name,
                     aq_format_count(sent, sent_text, sizeof sent_text),
                     aq_format_count(sent - unconfirmed, confirmed_text, sizeof confirmed_text),
                     rate_text);
}

/*  One put, reported. Refusals the producer can see itself (too big) are
    reported and skipped; anything else stops the run.

    "added" means sent: a producer about to wait (a --max-sleep before its
    next put) sends the item now rather than leave it in its batch for the
    whole sleep, so the broker has it before the line is printed. Without a
    sleep the batch fills as fast as items come (with --stdin, it is sent
    as soon as no more input is waiting: s_next_line). */
static aq_status_t s_put(aq_producer_t *producer, const options_t *opts, const char *data,
                         size_t size, uint64_t *refused, status_t *status)
{
    aq_status_t rc = aq_producer_put_with(producer, opts->queue, data, size, &opts->put);
    if (rc == AQ_OK && opts->max_sleep_ms)
        rc = aq_producer_flush(producer);
    if ((rc == AQ_TOO_BIG || (rc == AQ_OK && !opts->quiet)) && status->over_stdout)
        aq_progress_hide(&status->line);
    if (rc == AQ_TOO_BIG) {
        fprintf(stderr, "asyncq-producer: item of %zu bytes refused: larger than the broker's limit of %llu\n",
                size, (unsigned long long) aq_session_max_item(aq_producer_session(producer)));
        (*refused)++;
        return AQ_OK;
    }
    if (rc == AQ_OK && !opts->quiet)
        printf("Producer %s added <%.*s> to queue.\n", opts->name, (int) size, data);
    return rc;
}

/*  Lines of standard input, read with read() so that the producer knows
    when nothing more is waiting: then it sends its partial batch at once
    (aq_producer_flush), so a slow pipe's items reach the broker as they
    come, and a fast one still fills whole batches. */
typedef struct {
    char *data;
    size_t start, end, capacity;
    int eof;
} lines_t;

/*  1 and the next line (without its newline) in *line and *size; or 0, with
    *rc AQ_OK at the end of input, else why it stopped (a signal, memory, a
    failed flush). */
static int s_next_line(lines_t *lines, aq_producer_t *producer, char **line, size_t *size,
                       aq_status_t *rc)
{
    for (;;) {
        char *data = lines->data + lines->start;
        size_t waiting = lines->end - lines->start;
        char *newline = waiting ? memchr(data, '\n', waiting) : NULL;
        if (newline || (lines->eof && waiting)) {
            *line = data;
            *size = newline ? (size_t) (newline - data) : waiting;
            lines->start += *size + (newline != NULL);
            return 1;
        }
        if (lines->eof)
            return 0;
        if (lines->start) { /* the partial line to the front */
            memmove(lines->data, data, waiting);
            lines->start = 0;
            lines->end = waiting;
        }
        if (lines->end == lines->capacity) {
            size_t capacity = lines->capacity * 2;
            char *grown = realloc(lines->data, capacity);
            if (!grown) {
                *rc = AQ_NOMEM;
                return 0;
            }
            lines->data = grown;
            lines->capacity = capacity;
        }
        struct pollfd input = {.fd = STDIN_FILENO, .events = POLLIN};
        if (poll(&input, 1, 0) == 0 /* nothing more for now: send the batch */
            && (*rc = aq_producer_flush(producer)) != AQ_OK)
            return 0;
        ssize_t got = read(STDIN_FILENO, lines->data + lines->end, lines->capacity - lines->end);
        if (got < 0 && errno == EINTR) {
            if (aq_interrupted()) {
                *rc = AQ_INTERRUPTED;
                return 0;
            }
            continue;
        }
        if (got <= 0)
            lines->eof = 1; /* a read error ends the input like its end */
        else
            lines->end += (size_t) got;
    }
}

static aq_status_t s_put_stdin(aq_producer_t *producer, const options_t *opts, uint64_t *refused,
                               status_t *status)
{
    lines_t lines = {.capacity = 65536};
    lines.data = malloc(lines.capacity);
    if (!lines.data)
        return AQ_NOMEM;
    char *line;
    size_t length;
    aq_status_t rc = AQ_OK;
    uint64_t done = 0;
    while (rc == AQ_OK && (!opts->has_count || done < opts->count)
           && s_next_line(&lines, producer, &line, &length, &rc)) {
        if (opts->max_sleep_ms && aq_sleep_ms((uint64_t) (aq_random() * opts->max_sleep_ms)))
            rc = AQ_INTERRUPTED;
        else
            rc = s_put(producer, opts, line, length, refused, status);
        s_status_show(status, opts, producer, 0);
        done++;
    }
    free(lines.data);
    return rc;
}

static aq_status_t s_put_random(aq_producer_t *producer, const options_t *opts, uint64_t *refused,
                                status_t *status)
{
    uint64_t count = opts->has_count ? opts->count : (uint64_t) (aq_random() * 11);
    aq_status_t rc = AQ_OK;
    for (uint64_t i = 0; i < count && rc == AQ_OK; i++) {
        if (opts->max_sleep_ms && aq_sleep_ms((uint64_t) (aq_random() * opts->max_sleep_ms)))
            return AQ_INTERRUPTED;
        char item[11]; /* like the reference: five random bytes in hex */
        for (int j = 0; j < 10; j++)
            item[j] = "0123456789abcdef"[(int) (aq_random() * 16)];
        item[10] = '\0';
        rc = s_put(producer, opts, item, 10, refused, status);
    }
    return rc;
}

/*  The final sync; with a status line, in slices, so that the line shows
    the confirmations coming in. */
static aq_status_t s_sync(aq_producer_t *producer, const options_t *opts, status_t *status)
{
    if (!status->line.active)
        return aq_producer_sync(producer, -1);
    aq_status_t rc;
    while ((rc = aq_producer_sync(producer, STATUS_EVERY_MS)) == AQ_TIMEOUT)
        s_status_show(status, opts, producer, 0);
    return rc;
}

int main(int argc, char **argv)
{
    options_t opts = {0};
    if (!s_parse(argc, argv, &opts))
        return AQ_EXIT_USAGE;
    if (opts.print_config) {
        s_print_config(&opts);
        return AQ_EXIT_OK;
    }
    aq_stdout_lines();
    aq_random_seed(opts.seed);
    if (!aq_security_args("asyncq-producer", opts.curve_secret, opts.server_key))
        return AQ_EXIT_USAGE;

    aq_status_t rc;
    aq_producer_t *producer = aq_producer_new(opts.broker, opts.name, &rc);
    if (!producer) {
        fprintf(stderr, "asyncq-producer: %s\n", aq_last_error());
        return aq_exit_code(rc);
    }
    if (aq_producer_unreachable(producer)[0])
        fprintf(stderr, "asyncq-producer: warning: %s; putting to the others\n",
                aq_producer_unreachable(producer));
    uint64_t refused = 0;
    status_t status;
    s_status_init(&status, opts.from_stdin);
    rc = opts.from_stdin ? s_put_stdin(producer, &opts, &refused, &status)
                         : s_put_random(producer, &opts, &refused, &status);
    if (rc == AQ_OK)
        rc = s_sync(producer, &opts, &status);
    if (status.line.active) {
        s_status_show(&status, &opts, producer, 1);
        aq_progress_keep(&status.line);
    }
    uint64_t sent = aq_producer_sent(producer);
    refused += aq_producer_refused(producer);
    if (rc == AQ_REFUSED || (rc == AQ_OK && refused)) {
        const aq_error_t *error = aq_session_error(aq_producer_session(producer));
        if (error->code)
            fprintf(stderr, "asyncq-producer: %llu items refused; the broker says: %s (%d): %s\n",
                    (unsigned long long) refused, aq_status_name(error->code), error->code,
                    error->text);
        else
            fprintf(stderr, "asyncq-producer: %llu items refused\n", (unsigned long long) refused);
        rc = AQ_REFUSED;
    }
    else if (rc)
        fprintf(stderr, "asyncq-producer: %s\n", aq_strerror(rc));
    else
        printf("Producer %s done: %llu items confirmed by the broker%s.\n", opts.name,
               (unsigned long long) sent,
               aq_producer_resends(producer) ? " (some sent again after a reconnect)" : "");
    aq_producer_destroy(&producer);
    return aq_exit_code(rc);
}
