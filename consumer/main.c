/*  asyncq-consumer: the reference consumer. Forever: sleep a random time,
    get an item, print it and how long it waited since its put, ack it.
    With --exec, runs a command per item instead and acks it if the command
    succeeds. Stops cleanly on SIGINT/SIGTERM: unacked items go back to the
    queue. */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <czmq.h>

#include "asyncq/consumer.h"
#include "asyncq/program.h"
#include "asyncq/version.h"
#include "exec.h"

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
    const char *exec;
    uint64_t retry_delay_ms;
    int print_config;
    const char *curve_secret;
    const char *server_key;
} options_t;

static void s_usage(FILE *out)
{
    fprintf(out,
            "Usage: asyncq-consumer [OPTIONS]\n"
            "Gets items from an asyncq queue and acks each one, like the reference\n"
            "consumer: a random sleep, get, print how long the item waited, ack.\n"
            "\n"
            "  -b, --broker HOST[:PORT]  broker address (env ASYNCQ_BROKER; localhost:5557);\n"
            "                            also tcp://HOST:PORT or ipc://PATH; or a list\n"
            "                            A,B,C: a service's brokers, or a group's replicas\n"
            "  -q, --queue Q             queue name (env ASYNCQ_QUEUE; default)\n"
            "  -n, --name NAME           name shown in output and logs (env ASYNCQ_NAME)\n"
            "      --credit N            items it may hold unacked at once, and with --exec\n"
            "                            commands run at once (env ASYNCQ_CREDIT; 1)\n"
            "      --max-sleep SECONDS   random sleep up to this before each get; 0 for\n"
            "                            none (env ASYNCQ_MAX_SLEEP; 1, or 0 with --exec)\n"
            "      --count N             exit after handling N items (default: run until stopped)\n"
            "      --exec 'CMD ARGS'     run CMD with /bin/sh for each item instead, the item on\n"
            "                            its stdin and ASYNCQ_QUEUE, ASYNCQ_ITEM_ID and\n"
            "                            ASYNCQ_ATTEMPT set; ack if it exits 0, else return the\n"
            "                            item to be delivered again (env ASYNCQ_EXEC). The item's\n"
            "                            lease is renewed while CMD runs.\n"
            "      --retry-delay SECONDS  with --exec, delay before an item whose command\n"
            "                            failed is delivered again (env ASYNCQ_RETRY_DELAY; 0)\n"
            AQ_SECURITY_USAGE
            "      --print-config        print the settings in effect and exit\n"
            "      --quiet               print nothing per item\n"
            "      --seed N              random seed, for repeatable runs\n"
            "  -h, --help                this text\n"
            "      --version             print the version and exit\n"
            "\n"
            "The time printed is measured by the broker's clock (from the put's arrival to\n"
            "the item's delivery), so it is right even when hosts' clocks disagree.\n"
            "Exit codes: 0 stopped by a signal, --count reached or the queue shut down;\n"
            "1 failure; 2 bad usage; 3 broker unreachable.\n");
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
        {"exec", required_argument, 0, 'e'},  {"retry-delay", required_argument, 0, 'r'},
        {"print-config", no_argument, 0, 'p'},
        {"help", no_argument, 0, 'h'},         {"version", no_argument, 0, 'V'},
        AQ_SECURITY_OPTIONS, {0, 0, 0, 0}};
    const char *credit = NULL, *max_sleep = NULL, *count = NULL, *seed = NULL;
    const char *retry_delay = NULL;
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
        case 'e': opts->exec = optarg; break;
        case 'r': retry_delay = optarg; break;
        case 'p': opts->print_config = 1; break;
        case AQ_OPT_CURVE_SECRET: opts->curve_secret = optarg; break;
        case AQ_OPT_SERVER_KEY: opts->server_key = optarg; break;
        case 'h': s_usage(stdout); exit(AQ_EXIT_OK);
        case 'V': printf("asyncq-consumer %s\n", aq_version()); exit(AQ_EXIT_OK);
        default: s_usage(stderr); return 0;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "asyncq-consumer: unexpected argument '%s' (see --help)\n", argv[optind]);
        return 0;
    }
    credit = aq_arg_env(credit, "ASYNCQ_CREDIT");
    max_sleep = aq_arg_env(max_sleep, "ASYNCQ_MAX_SLEEP");
    opts->exec = aq_arg_env(opts->exec, "ASYNCQ_EXEC");
    if (opts->exec && !*opts->exec)
        opts->exec = NULL;
    retry_delay = aq_arg_env(retry_delay, "ASYNCQ_RETRY_DELAY");
    if (!aq_client_defaults("asyncq-consumer", &opts->broker, &opts->queue, &opts->name,
                            "consumer"))
        return 0;
    opts->credit = 1;
    if (credit && (!aq_arg_u64(credit, &opts->credit) || opts->credit == 0))
        return s_bad("--credit", "a whole number of at least 1", credit);
    opts->max_sleep_ms = opts->exec ? 0 : 1000; /* a command is the work; no pretend work */
    if (max_sleep && !aq_arg_seconds_ms(max_sleep, &opts->max_sleep_ms))
        return s_bad("--max-sleep", "seconds", max_sleep);
    opts->has_count = count != NULL;
    if (count && !aq_arg_u64(count, &opts->count))
        return s_bad("--count", "a whole number", count);
    if (seed && !aq_arg_u64(seed, &opts->seed))
        return s_bad("--seed", "a whole number", seed);
    if (retry_delay && !aq_arg_seconds_ms(retry_delay, &opts->retry_delay_ms))
        return s_bad("--retry-delay", "seconds", retry_delay);
    if (!opts->exec && !retry_delay)
        return 1;
    if (!opts->exec) {
        fprintf(stderr, "asyncq-consumer: --retry-delay goes with --exec\n");
        return 0;
    }
    return 1;
}

static void s_print_config(const options_t *opts)
{
    printf("ASYNCQ_BROKER=%s\nASYNCQ_QUEUE=%s\nASYNCQ_NAME=%s\nASYNCQ_CREDIT=%llu\n"
           "ASYNCQ_MAX_SLEEP=%.3f\nASYNCQ_EXEC=%s\nASYNCQ_RETRY_DELAY=%.3f\n",
           opts->broker, opts->queue, opts->name, (unsigned long long) opts->credit,
           (double) opts->max_sleep_ms / 1000, opts->exec ? opts->exec : "",
           (double) opts->retry_delay_ms / 1000);
    aq_security_print_config(opts->curve_secret, opts->server_key);
}

static aq_status_t s_report_refusal(aq_consumer_t *consumer, const options_t *opts,
                                    aq_status_t rc);

typedef struct {
    aq_consumer_t *consumer;
    const options_t *opts;
    uint64_t done;
} exec_run_t;

/*  A command exited: ack its item on 0, else give it back. */
static aq_status_t s_exec_done(void *ctx, const aq_item_t *item, int exit_code,
                               const char *reason)
{
    exec_run_t *run = ctx;
    const options_t *opts = run->opts;
    int ok = exit_code == 0;
    run->done++;
    if (!opts->quiet || !ok)
        fprintf(ok ? stdout : stderr, "Consumer %s ran item %llu (attempt %llu): %s, %s\n",
                opts->name, (unsigned long long) item->id, (unsigned long long) item->attempt,
                reason, ok ? "acked" : "returned to the queue");
    return ok ? aq_consumer_ack(run->consumer, item->id)
              : aq_consumer_nack(run->consumer, item->id, opts->retry_delay_ms, reason);
}

/*  --exec: as many commands at once as the credit allows, each started as
    soon as its item arrives. */
static aq_status_t s_run_exec(aq_consumer_t *consumer, const options_t *opts)
{
    exec_pool_t *pool = exec_pool_new(opts->credit, opts->exec, opts->queue);
    if (!pool)
        return AQ_NOMEM;
    exec_run_t run = {consumer, opts, 0};
    aq_status_t rc = AQ_OK;
    uint64_t started = 0;
    while (!rc) {
        rc = exec_pool_tend(pool, consumer, s_exec_done, &run);
        if (rc || (opts->has_count && run.done >= opts->count))
            break;
        if (zsys_interrupted) {
            rc = AQ_INTERRUPTED;
            break;
        }
        if (!exec_pool_has_room(pool) || (opts->has_count && started >= opts->count)) {
            aq_sleep_ms(EXEC_POLL_MS);
            continue;
        }
        aq_item_t item;
        rc = aq_consumer_get(consumer, &item, exec_pool_running(pool) ? EXEC_POLL_MS : -1);
        if (rc == AQ_TIMEOUT)
            rc = AQ_OK;
        else if (rc == AQ_REFUSED || rc == AQ_SHUT_DOWN)
            rc = s_report_refusal(consumer, opts, rc);
        else if (rc == AQ_OK) {
            rc = exec_pool_start(pool, &item);
            started++;
            if (rc == AQ_TRANSPORT)
                fprintf(stderr, "asyncq-consumer: cannot start /bin/sh: %s\n", strerror(errno));
        }
    }
    exec_pool_destroy(&pool); /* stops commands still running: their items go back */
    return rc == AQ_SHUT_DOWN ? AQ_OK : rc;
}

/*  An ERROR instead of an item: a refused ack (reported, and the work goes
    on) or the queue shut down and empty (AQ_SHUT_DOWN: time to stop). */
static aq_status_t s_report_refusal(aq_consumer_t *consumer, const options_t *opts,
                                    aq_status_t rc)
{
    if (rc == AQ_SHUT_DOWN) {
        fprintf(stderr, "asyncq-consumer: queue %s was shut down and is empty\n", opts->queue);
        return AQ_SHUT_DOWN;
    }
    const aq_error_t *error = aq_session_error(aq_consumer_session(consumer));
    fprintf(stderr, "asyncq-consumer: broker says %s: %s (%s)\n", aq_status_name(error->code),
            error->text, error->subject);
    return AQ_OK;
}

static aq_status_t s_run(aq_consumer_t *consumer, const options_t *opts)
{
    uint64_t done = 0;
    while (!opts->has_count || done < opts->count) {
        if (opts->max_sleep_ms && aq_sleep_ms((uint64_t) (aq_random() * opts->max_sleep_ms)))
            return AQ_INTERRUPTED;
        aq_item_t item;
        aq_status_t rc = aq_consumer_get(consumer, &item, -1);
        if (rc == AQ_REFUSED || rc == AQ_SHUT_DOWN) {
            rc = s_report_refusal(consumer, opts, rc);
            if (rc)
                return rc == AQ_SHUT_DOWN ? AQ_OK : rc;
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
    if (opts.print_config) {
        s_print_config(&opts);
        return AQ_EXIT_OK;
    }
    signal(SIGPIPE, SIG_IGN); /* a command that does not read its stdin */
    aq_stdout_lines();
    aq_random_seed(opts.seed);
    if (!aq_security_args("asyncq-consumer", opts.curve_secret, opts.server_key))
        return AQ_EXIT_USAGE;

    aq_status_t rc;
    aq_consumer_t *consumer = aq_consumer_new(opts.broker, opts.name, opts.queue, opts.credit, &rc);
    if (!consumer) {
        fprintf(stderr, "asyncq-consumer: %s\n", aq_last_error());
        return aq_exit_code(rc);
    }
    if (aq_consumer_unreachable(consumer)[0])
        fprintf(stderr, "asyncq-consumer: warning: %s; getting from the others\n",
                aq_consumer_unreachable(consumer));
    rc = opts.exec ? s_run_exec(consumer, &opts) : s_run(consumer, &opts);
    aq_consumer_destroy(&consumer);
    if (rc == AQ_OK || rc == AQ_INTERRUPTED)
        return AQ_EXIT_OK;
    fprintf(stderr, "asyncq-consumer: %s\n", aq_strerror(rc));
    return AQ_EXIT_FAILURE;
}
