/*  asyncq-broker: flags, environment, signals; the work is in server.c. */
#include <czmq.h>
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "asyncq/program.h"
#include "broker.h"

static void s_usage(FILE *out)
{
    fprintf(out,
            "Usage: asyncq-broker [OPTIONS]\n"
            "Holds asyncq queues: accepts puts, delivers items to consumers, answers joins.\n"
            "\n"
            "  -b, --bind ADDR[:PORT]  where to listen (env ASYNCQ_BIND; default all\n"
            "                          interfaces, port 5557). PULL for puts on PORT,\n"
            "                          ROUTER on PORT+1. Also tcp://HOST:PORT, ipc://PATH;\n"
            "                          port 0 or * picks a free pair of ports.\n"
            "      --max-item BYTES    largest item accepted (env ASYNCQ_MAX_ITEM; 1048576)\n"
            "      --maxsize N         most items queued per queue, 0 = unbounded\n"
            "                          (env ASYNCQ_MAXSIZE; 0). A full queue makes\n"
            "                          producers of every queue wait.\n"
            "      --max-queues N      most queues (1024)\n"
            "      --max-joins N       most joins waiting at once (10000)\n"
            "      --max-credit N      most credit one consumer may ask for (10000)\n"
            "      --heartbeat-ms MS   probe every session this often; a consumer found\n"
            "                          gone gives its items back (1000)\n"
            "      --lease-ms MS       an item not acked (or touched) this long after its\n"
            "                          delivery is delivered again (env ASYNCQ_LEASE_MS; 60000)\n"
            "      --max-attempts N    deliveries before an item goes to its queue's\n"
            "                          dead-letter list; 0 = no limit (5)\n"
            "  -v, --verbose           log every session\n"
            "  -h, --help              this text\n"
            "\n"
            "Prints \"READY <address>\" on stdout once it listens. Logs to stderr.\n"
            "Stops cleanly on SIGINT or SIGTERM.\n"
            "Exit codes: 0 stopped by a signal, 1 failure, 2 bad usage, 3 cannot bind.\n");
}

static int s_number(const char *flag, const char *text, uint64_t *value)
{
    if (aq_arg_u64(text, value))
        return 1;
    fprintf(stderr, "asyncq-broker: %s needs a whole number, not '%s'\n", flag, text);
    return 0;
}

int main(int argc, char **argv)
{
    broker_config_t config = {
        .bind = NULL,
        .max_item = BROKER_DEFAULT_MAX_ITEM,
        .maxsize = 0,
        .max_queues = BROKER_DEFAULT_MAX_QUEUES,
        .max_joiners = BROKER_DEFAULT_MAX_JOINERS,
        .max_credit = BROKER_DEFAULT_MAX_CREDIT,
        .heartbeat_ms = BROKER_DEFAULT_HEARTBEAT_MS,
        .lease_ms = BROKER_DEFAULT_LEASE_MS,
        .max_attempts = BROKER_DEFAULT_MAX_ATTEMPTS,
    };
    const char *max_item = NULL, *maxsize = NULL, *lease = NULL;
    static const struct option options[] = {
        {"bind", required_argument, 0, 'b'},     {"max-item", required_argument, 0, 'I'},
        {"maxsize", required_argument, 0, 'm'},  {"max-queues", required_argument, 0, 'Q'},
        {"max-joins", required_argument, 0, 'J'}, {"max-credit", required_argument, 0, 'C'},
        {"heartbeat-ms", required_argument, 0, 'H'}, {"lease-ms", required_argument, 0, 'L'},
        {"max-attempts", required_argument, 0, 'A'},
        {"verbose", no_argument, 0, 'v'},        {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0}};
    int opt;
    while ((opt = getopt_long(argc, argv, "b:vh", options, NULL)) != -1) {
        switch (opt) {
        case 'b': config.bind = optarg; break;
        case 'I': max_item = optarg; break;
        case 'm': maxsize = optarg; break;
        case 'Q': if (!s_number("--max-queues", optarg, &config.max_queues)) return AQ_EXIT_USAGE; break;
        case 'J': if (!s_number("--max-joins", optarg, &config.max_joiners)) return AQ_EXIT_USAGE; break;
        case 'C': if (!s_number("--max-credit", optarg, &config.max_credit)) return AQ_EXIT_USAGE; break;
        case 'H':
            if (!s_number("--heartbeat-ms", optarg, &config.heartbeat_ms))
                return AQ_EXIT_USAGE;
            if (config.heartbeat_ms < 10 || config.heartbeat_ms > 600000) {
                fprintf(stderr, "asyncq-broker: --heartbeat-ms must be from 10 to 600000\n");
                return AQ_EXIT_USAGE;
            }
            break;
        case 'L': lease = optarg; break;
        case 'A': if (!s_number("--max-attempts", optarg, &config.max_attempts)) return AQ_EXIT_USAGE; break;
        case 'v': config.verbose = 1; break;
        case 'h': s_usage(stdout); return AQ_EXIT_OK;
        default: s_usage(stderr); return AQ_EXIT_USAGE;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "asyncq-broker: unexpected argument '%s' (see --help)\n", argv[optind]);
        return AQ_EXIT_USAGE;
    }
    max_item = aq_arg_env(max_item, "ASYNCQ_MAX_ITEM");
    maxsize = aq_arg_env(maxsize, "ASYNCQ_MAXSIZE");
    lease = aq_arg_env(lease, "ASYNCQ_LEASE_MS");
    if ((max_item && !s_number("--max-item", max_item, &config.max_item))
        || (maxsize && !s_number("--maxsize", maxsize, &config.maxsize))
        || (lease && !s_number("--lease-ms", lease, &config.lease_ms)))
        return AQ_EXIT_USAGE;
    if (config.lease_ms == 0 || config.lease_ms > INT32_MAX) {
        fprintf(stderr, "asyncq-broker: --lease-ms must be from 1 to %d\n", INT32_MAX);
        return AQ_EXIT_USAGE;
    }
    config.bind = aq_endpoint_choose(config.bind, "ASYNCQ_BIND", "*");

    aq_status_t status;
    broker_t *broker = broker_new(&config, &status);
    if (!broker) {
        fprintf(stderr, "asyncq-broker: cannot listen on '%s': %s (%s)\n", config.bind,
                aq_strerror(status), status == AQ_BAD_ENDPOINT ? zmq_strerror(errno) : "");
        return status == AQ_BAD_ENDPOINT ? AQ_EXIT_UNREACHABLE : AQ_EXIT_FAILURE;
    }
    printf("READY %s\n", broker->address);
    fflush(stdout);
    broker_log(broker, "listening on %s (max item %llu bytes, maxsize %llu)", broker->address,
               (unsigned long long) config.max_item, (unsigned long long) config.maxsize);
    status = broker_run(broker);
    broker_log(broker, "stopping");
    broker_destroy(&broker);
    return status == AQ_OK ? AQ_EXIT_OK : AQ_EXIT_FAILURE;
}
