/*  asyncq: put, join, stats, dead, shutdown and demo. */
#include <stdio.h>
#include <string.h>

#include "asyncq/program.h"
#include "asyncq/status.h"
#include "asyncq/version.h"
#include "cli.h"

static void s_usage(FILE *out)
{
    fprintf(out,
            "Usage: asyncq COMMAND [OPTIONS]\n"
            "\n"
            "  asyncq put [-b ADDR] [-q Q] [--priority N] [--delay S | --at TIME | --front] ITEM...\n"
            "                                           put items, wait for the broker to confirm\n"
            "  asyncq join [-b ADDR] [-q Q] [--timeout S] [--all]\n"
            "                                           wait until every item put before now is acked\n"
            "                                           (progress on stderr, on a terminal)\n"
            "  asyncq stats [-b ADDR] [-q Q] [--format table|kv|json] [--watch [S]]\n"
            "                                           per-queue numbers: a table on a terminal,\n"
            "                                           key=value lines piped\n"
            "  asyncq dead list|requeue|purge [-b ADDR] [-q Q]\n"
            "                                           the queue's dead-letter list\n"
            "  asyncq shutdown [-b ADDR] [-q Q] [--immediate]\n"
            "                                           refuse puts; drain (or discard) the queue\n"
            "  asyncq reopen|purge|delete -q Q [-b ADDR]\n"
            "                                           a shut-down queue takes puts again; its\n"
            "                                           queued items discarded; the queue deleted\n"
            "  asyncq pause|resume -q Q [-b ADDR]      stop and start a queue's deliveries\n"
            "  asyncq peek [-q Q] [-n N] [-b ADDR]      the next N items, left in the queue\n"
            "  asyncq keygen NAME[=ROLES]... [--role ROLES] [--queues Q,...] [--dir DIR]\n"
            "                [--clients DIR] [--keep]\n"
            "                                           a CURVE certificate pair (NAME.key,\n"
            "                                           NAME.key_secret) for a client or the broker\n"
            "  asyncq replica list|add HOST:PORT|remove ID|transfer [ID] [-b ADDR]\n"
            "                                           a group of replicas: its members, one\n"
            "                                           added or removed, the lead handed over\n"
            "  asyncq demo [-p NPROD] [-c NCON] [-b ADDR] [--max-sleep S]\n"
            "                                           the reference main(): a broker, NPROD\n"
            "                                           producers, NCON consumers, join\n"
            "\n"
            "ADDR is HOST[:PORT] (env ASYNCQ_BROKER; localhost:5557), tcp://HOST:PORT or\n"
            "ipc://PATH. 'asyncq COMMAND --help' tells more.\n"
            "Exit codes: 0 success; 1 failure; 2 bad usage; 3 broker unreachable;\n"
            "4 join timed out; 130 interrupted.\n"
            "'asyncq --version' prints the version.\n");
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        s_usage(stderr);
        return AQ_EXIT_USAGE;
    }
    const char *command = argv[1];
    if (strcmp(command, "-h") == 0 || strcmp(command, "--help") == 0 || strcmp(command, "help") == 0) {
        s_usage(stdout);
        return AQ_EXIT_OK;
    }
    if (strcmp(command, "--version") == 0) {
        printf("asyncq %s\n", aq_version());
        return AQ_EXIT_OK;
    }
    static const struct {
        const char *name;
        int (*run)(int, char **);
    } commands[] = {{"put", cli_put},           {"join", cli_join},
                    {"stats", cli_stats},       {"dead", cli_dead},
                    {"shutdown", cli_shutdown}, {"reopen", cli_queue_action},
                    {"purge", cli_queue_action}, {"delete", cli_queue_action},
                    {"pause", cli_queue_action}, {"resume", cli_queue_action},
                    {"peek", cli_peek},         {"demo", cli_demo},
                    {"keygen", cli_keygen},     {"replica", cli_replica}};
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (strcmp(command, commands[i].name) == 0)
            return commands[i].run(argc - 1, argv + 1);
    fprintf(stderr, "asyncq: unknown command '%s' (see asyncq --help)\n", command);
    return AQ_EXIT_USAGE;
}
