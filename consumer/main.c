/*  asyncq-consumer: the reference consumer. Forever: sleep a random time,
    get an item, print it and how long it waited since its put, ack it.
    Stops cleanly on SIGINT/SIGTERM: unacked items go back to the queue. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "asyncq/consumer.h"
#include "asyncq/program.h"

typedef struct {
    const char *broker;
    const char *queue;
    const char *name;
    uint64_t credit;
    uint64_t max_sleep_ms;
    int has_count;
    uint64_t count;
    int quiet;
    uint64_t seed;
} options_t;

static void s_usage(FILE *out)
{
    fprintf(out,
            "Usage: asyncq-consumer [OPTIONS]\n"
            "Gets items from an asyncq queue and acks each one, like the reference\n"
            "consumer: a random sleep, get, print how long the item waited, ack.\n"
            "\n"
            "  -b, --broker HOST[:PORT]  broker address (env ASYNCQ_BROKER; localhost:5557);\n"
            "                            also tcp://HOST:PORT or ipc://PATH\n"
            "  -q, --queue Q             queue name (env ASYNCQ_QUEUE; default)\n"
            "  -n, --name NAME           name shown in output and logs (env ASYNCQ_NAME)\n"
            "      --credit N            items it may hold unacked at once (env ASYNCQ_CREDIT; 1)\n"
            "      --max-sleep SECONDS   random sleep up to this before each get; 0 for\n"
            "                            none (env ASYNCQ_MAX_SLEEP; 1)\n"
            "      --count N             exit after acking N items (default: run until stopped)\n"
            "      --quiet               print nothing per item\n"
            "      --seed N              random seed, for repeatable runs\n"
            "  -h, --help                this text\n"
            "\n"
            "The time printed is measured by the broker's clock (from the put's arrival to\n"
            "the item's delivery), so it is right even when hosts' clocks disagree.\n"
            "Exit codes: 0 stopped by a signal or --count reached; 1 failure; 2 bad usage;\n"
            "3 broker unreachable.\n");
}

static int s_bad(const char *flag, const char *what, const char *value)
{
    fprintf(stderr, "asyncq-consumer: %s needs %s, not '%s'\n", flag, what, value);
    return 0;
}

static int s_parse(int argc, char **argv, options_t *opts)
{
    static const struct option options[] = {
        {"broker", required_argument, 0, 'b'}, {"queue", required_argument, 0, 'q'},
        {"name", required_argument, 0, 'n'},   {"credit", required_argument, 0, 'c'},
        {"max-sleep", required_argument, 0, 's'}, {"count", required_argument, 0, 'N'},
        {"quiet", no_argument, 0, 'Q'},        {"seed", required_argument, 0, 'S'},
        {"help", no_argument, 0, 'h'},         {0, 0, 0, 0}};
    const char *credit = NULL, *max_sleep = NULL, *count = NULL, *seed = NULL;
    int opt;
    while ((opt = getopt_long(argc, argv, "b:q:n:h", options, NULL)) != -1) {
        switch (opt) {
        case 'b': opts->broker = optarg; break;
        case 'q': opts->queue = optarg; break;
        case 'n': opts->name = optarg; break;
        case 'c': credit = optarg; break;
        case 's': max_sleep = optarg; break;
        case 'N': count = optarg; break;
        case 'Q': opts->quiet = 1; break;
        case 'S': seed = optarg; break;
        case 'h': s_usage(stdout); exit(AQ_EXIT_OK);
        default: s_usage(stderr); return 0;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "asyncq-consumer: unexpected argument '%s' (see --help)\n", argv[optind]);
        return 0;
    }
    credit = aq_arg_env(credit, "ASYNCQ_CREDIT");
    max_sleep = aq_arg_env(max_sleep, "ASYNCQ_MAX_SLEEP");
    if (!aq_client_defaults("asyncq-consumer", &opts->broker, &opts->queue, &opts->name,
                            "consumer"))
        return 0;
    opts->credit = 1;
    if (credit && (!aq_arg_u64(credit, &opts->credit) || opts->credit == 0))
        return s_bad("--credit", "a whole number of at least 1", credit);
    opts->max_sleep_ms = 1000;
    if (max_sleep && !aq_arg_seconds_ms(max_sleep, &opts->max_sleep_ms))
        return s_bad("--max-sleep", "seconds", max_sleep);
    opts->has_count = count != NULL;
    if (count && !aq_arg_u64(count, &opts->count))
        return s_bad("--count", "a whole number", count);
    if (seed && !aq_arg_u64(seed, &opts->seed))
        return s_bad("--seed", "a whole number", seed);
    return 1;
}

static aq_status_t s_run(aq_consumer_t *consumer, const options_t *opts)
{
    uint64_t done = 0;
    while (!opts->has_count || done < opts->count) {
        if (opts->max_sleep_ms && aq_sleep_ms((uint64_t) (aq_random() * opts->max_sleep_ms)))
            return AQ_INTERRUPTED;
        aq_item_t item;
        aq_status_t rc = aq_consumer_get(consumer, &item, -1);
        if (rc == AQ_REFUSED) { /* an error about an earlier ack: report, go on */
            const aq_error_t *error = aq_session_error(aq_consumer_session(consumer));
            fprintf(stderr, "asyncq-consumer: broker says %s: %s (%s)\n",
                    aq_status_name(error->code), error->text, error->subject);
            continue;
        }
        if (rc)
            return rc;
        done++;
        if (!opts->quiet)
            printf("Consumer %s got element <%.*s> in %.5f seconds.\n", opts->name,
                   (int) item.size, (const char *) item.data, (double) item.age_us / 1e6);
        rc = aq_consumer_ack(consumer, item.id);
        if (rc)
            return rc;
    }
    return AQ_OK;
}

int main(int argc, char **argv)
{
    options_t opts = {0};
    if (!s_parse(argc, argv, &opts))
        return AQ_EXIT_USAGE;
    aq_stdout_lines();
    aq_random_seed(opts.seed);

    aq_status_t rc;
    aq_consumer_t *consumer = aq_consumer_new(opts.broker, opts.queue, opts.credit, opts.name, &rc);
    if (!consumer) {
        fprintf(stderr, "asyncq-consumer: cannot reach the broker at '%s': %s\n", opts.broker,
                aq_strerror(rc));
        return rc == AQ_UNREACHABLE || rc == AQ_BAD_ENDPOINT ? AQ_EXIT_UNREACHABLE
                                                             : AQ_EXIT_FAILURE;
    }
    rc = s_run(consumer, &opts);
    aq_consumer_destroy(&consumer);
    if (rc == AQ_OK || rc == AQ_INTERRUPTED)
        return AQ_EXIT_OK;
    fprintf(stderr, "asyncq-consumer: %s\n", aq_strerror(rc));
    return AQ_EXIT_FAILURE;
}
