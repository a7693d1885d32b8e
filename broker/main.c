/*  asyncq-broker: flags, environment, signals; the work is in server.c. */
#include <czmq.h>
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "asyncq/control.h"
#include "asyncq/program.h"
#include "asyncq/security.h"
#include "asyncq/internal.h"
#include "asyncq/version.h"
#include "broker.h"
#include "http.h"
#include "journal.h"
#include "persist.h"
#include "server.h"
#include "shards.h"

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
            "      --curve-secret FILE the broker's secret certificate (asyncq keygen): both\n"
            "                          sockets use CURVE (env ASYNCQ_CURVE_SECRET)\n"
            "      --clients DIR       public certificates of the clients allowed in, with their\n"
            "                          roles; re-read on SIGHUP (env ASYNCQ_CLIENTS)\n"
            "      --insecure          without keys, accept connections from anywhere, not only\n"
            "                          loopback (env ASYNCQ_INSECURE=1)\n"
            "      --data-dir DIR      durable: every item and state change goes to a journal\n"
            "                          in DIR, read back at start (env ASYNCQ_DATA_DIR; none:\n"
            "                          in memory, a restart loses the queues)\n"
            "      --fsync always|MS|never  what a confirm (SYNCED) waits for, with --data-dir:\n"
            "                          always: on disk (fdatasync, one per pass for every put\n"
            "                          in it); MS: written, synced at most MS ms later; never:\n"
            "                          written, synced by the system (env ASYNCQ_FSYNC; always)\n"
            "      --segment-bytes N   journal segment size (env ASYNCQ_SEGMENT_BYTES; 4194304)\n"
            "      --repair            with --data-dir: keep every intact record of a damaged\n"
            "                          journal (originals kept in DIR/damaged/), mark missing\n"
            "                          segments lost, say what is gone, then exit\n"
            "      --state-dump FILE   on SIGUSR1, write the whole state (queues, items in\n"
            "                          order) as text to FILE, for support and tests (env\n"
            "                          ASYNCQ_STATE_DUMP; none: SIGUSR1 is ignored)\n"
            "      --metrics ADDR      serve HTTP on HOST:PORT (or PORT, on 127.0.0.1): Prometheus\n"
            "                          metrics at /metrics, a live dashboard at /, its data at\n"
            "                          /stats.json (env ASYNCQ_METRICS; none: off)\n"
            "      --metrics-token-file FILE  the token the dashboard's actions need (env\n"
            "                          ASYNCQ_METRICS_TOKEN_FILE; none: a new one each start,\n"
            "                          in the log)\n"
            "      --max-item BYTES    largest item accepted (env ASYNCQ_MAX_ITEM; 1048576)\n"
            "      --max-batch N       most items in one PUTS or ITEMS (env ASYNCQ_MAX_BATCH; 1024)\n"
            "      --maxsize N         most items queued per queue, 0 = unbounded\n"
            "                          (env ASYNCQ_MAXSIZE; 0). A full queue holds back\n"
            "                          its own producers' puts.\n"
            "      --max-queues N      most queues (env ASYNCQ_MAX_QUEUES; 1024); an empty queue\n"
            "                          nobody uses is forgotten after --queue-idle-ms\n"
            "      --queue-idle-ms MS  (env ASYNCQ_QUEUE_IDLE_MS; 60000)\n"
            "      --max-connections N most connections at once; more are closed at once\n"
            "                          (env ASYNCQ_MAX_CONNECTIONS; 10000)\n"
            "      --hello-timeout-ms MS  a connection that has not said HELLO (or put) by then\n"
            "                          is closed (env ASYNCQ_HELLO_TIMEOUT_MS; 5000)\n"
            "      --max-pending BYTES replies a session may leave unread before it is closed\n"
            "                          (env ASYNCQ_MAX_PENDING; 8388608)\n"
            "      --max-producers N   producers remembered without a session (env\n"
            "                          ASYNCQ_MAX_PRODUCERS; 10000)\n"
            "      --window N          puts of one producer held for a full queue (env\n"
            "                          ASYNCQ_WINDOW; 4096)\n"
            "      --window-bytes BYTES  and their bytes (env ASYNCQ_WINDOW_BYTES; 8388608)\n"
            "      --max-joins N       most joins waiting at once (env ASYNCQ_MAX_JOINS; 10000)\n"
            "      --max-credit N      most credit one consumer may ask for (env\n"
            "                          ASYNCQ_MAX_CREDIT; 10000)\n"
            "      --heartbeat-ms MS   probe every session this often; a consumer found\n"
            "                          gone gives its items back (env ASYNCQ_HEARTBEAT_MS; 1000,\n"
            "                          300 for a replica)\n"
            "      --lease-ms MS       an item not acked (or touched) this long after its\n"
            "                          delivery is delivered again (env ASYNCQ_LEASE_MS; 60000)\n"
            "      --queue-lease Q=MS  the lease for queue Q instead; repeatable (env\n"
            "                          ASYNCQ_QUEUE_LEASE, as Q=MS,Q2=MS). A put may ask for\n"
            "                          its own.\n"
            "      --max-attempts N    deliveries before an item goes to its queue's\n"
            "                          dead-letter list; 0 = no limit (env ASYNCQ_MAX_ATTEMPTS; 5)\n"
            "      --max-delay SECONDS a put may ask to be delayed this long at most; 0 = no\n"
            "                          delayed puts (env ASYNCQ_MAX_DELAY; 2592000, 30 days)\n"
            "      --retry FIRST_MS[:MAX_MS[:FACTOR]]  an item NACKed without a delay (a\n"
            "                          consumer's --exec command that failed, say) waits\n"
            "                          FIRST_MS before it is queued again, FACTOR (2) times\n"
            "                          longer after each later delivery, at most MAX_MS\n"
            "                          (86400000), less up to half at random (env\n"
            "                          ASYNCQ_RETRY; 0: none, queued again at once)\n"
            "      --queue-retry Q=FIRST_MS[:MAX_MS[:FACTOR]]  the policy for queue Q instead;\n"
            "                          repeatable (env ASYNCQ_QUEUE_RETRY, as Q=..,Q2=..)\n"
            "      --max-expired N     leases a consumer lets expire in a row before its credit\n"
            "                          is withdrawn (env ASYNCQ_MAX_EXPIRED; 3)\n"
            "      --max-joins-per-peer N  most joins one session may have waiting (env\n"
            "                          ASYNCQ_MAX_JOINS_PER_PEER; 100)\n"
            "      --max-joins-per-key N, --max-queues-per-key N, --max-sessions-per-key N,\n"
            "      --max-held-bytes-per-key BYTES  what one client key (without keys: one\n"
            "                          host other than loopback) may hold of the broker's\n"
            "                          joins, queues made, sessions and bytes of puts held for\n"
            "                          full queues (env ASYNCQ_MAX_JOINS_PER_KEY...; 1000, 256,\n"
            "                          1000, 67108864); admin keys are exempt, and the last\n"
            "                          tenth of --max-joins, --max-queues and\n"
            "                          --max-connections is kept for them\n"
            "      --drain-ms MS       on SIGTERM or SIGINT, refuse puts and wait this long at\n"
            "                          most for every queue to drain before exiting; a second\n"
            "                          signal exits at once (env ASYNCQ_DRAIN_MS; 30000). A\n"
            "                          durable broker exits at once: its items stay in DIR.\n"
            "      --shards N|auto     run N brokers (auto: one per core) as one service on\n"
            "                          this host: shard K listens on PORT+2K, keeps its data\n"
            "                          in DIR/shard-K, and is restarted if it dies; clients\n"
            "                          given PORT find them all (env ASYNCQ_SHARDS; PROTOCOL.md\n"
            "                          4.15). --metrics PORT serves the whole service, shard\n"
            "                          K its own on PORT+1+K. With --peers, each shard is a\n"
            "                          group of one replica on each host of --peers, at its\n"
            "                          PORT+3K (PROTOCOL.md 4.16)\n"
            "      --dashboard-of ADDR,...  run no broker: serve the whole service's dashboard,\n"
            "                          /metrics and /stats.json on --metrics, from every\n"
            "                          broker's --metrics port (HOST:PORT, in shard order;\n"
            "                          env ASYNCQ_DASHBOARD_OF); give them all one\n"
            "                          --metrics-token-file\n"
            "      --shard K           this broker's number in its service, 0 to 255, each\n"
            "                          its own (env ASYNCQ_SHARD; 0)\n"
            "      --service ADDR,...  every broker of the service, in shard order, this one\n"
            "                          at place K: HOST:PORT, :PORT (the host a client\n"
            "                          reached) or ipc://PATH; a shard that is a group of\n"
            "                          replicas lists them joined by '|' (A|B|C), and its\n"
            "                          replicas take --peers from there (env ASYNCQ_SERVICE)\n"
            "      --peers A,B,C       this broker is a replica of a group: every replica's\n"
            "                          address (HOST:PORT, as clients reach it; the same list\n"
            "                          in the same order on each), this one at --node-id's\n"
            "                          place; the group elects a leader, which alone serves,\n"
            "                          and replicates every change on PORT+2 (needs\n"
            "                          --data-dir; env ASYNCQ_PEERS; PROTOCOL.md 4.16)\n"
            "      --node-id N         this replica's place in --peers, from 1, or the id\n"
            "                          `asyncq replica add` gave it (env ASYNCQ_NODE_ID)\n"
            "      --join HOST:PORT    this broker joins a group that runs, as the replica\n"
            "                          `asyncq replica add HOST:PORT` added (its address, as\n"
            "                          clients reach it; with --node-id and --data-dir; env\n"
            "                          ASYNCQ_JOIN): the leader sends it the log, and makes\n"
            "                          it a voter once it has caught up; --peers, if given\n"
            "                          too, is not read\n"
            "      --recover-alone     with the flags this stopped replica starts with: when\n"
            "                          its group's majority is lost for good, make it the\n"
            "                          group's only member, keeping its log (what it held\n"
            "                          but the group had not committed included), print who\n"
            "                          was left out, and exit; then start it as usual, and\n"
            "                          add replicas (asyncq replica add, --join)\n"
            "      --replica-snapshot N  a replica writes its state as a snapshot, and drops\n"
            "                          the log before it, every N entries (one a pass of its\n"
            "                          loop); the last quarter is kept, so that a replica a\n"
            "                          little behind catches up from the log (env\n"
            "                          ASYNCQ_REPLICA_SNAPSHOT; 0: about every 64 MiB of log,\n"
            "                          1024 to 262144 entries, as the entries' size goes)\n"
            "      --lead-balance-ms MS  a shard of a service of groups (--shards N --peers, or\n"
            "                          --shard K --service with groups) leads on its group's\n"
            "                          voter K mod V when it can: a leader that is not hands\n"
            "                          it the lead after leading MS, and looks again each MS\n"
            "                          (env ASYNCQ_LEAD_BALANCE_MS; 10000; 0: never)\n"
            "      --print-config      print the settings in effect, one NAME=VALUE a line,\n"
            "                          and exit\n"
            "      --health            ask the broker these settings describe, on this host,\n"
            "                          for its stats and exit: 0 if it answers, 3 if not\n"
            "                          (a container HEALTHCHECK that follows ASYNCQ_BIND)\n"
            "  -v, --verbose           log every session (env ASYNCQ_VERBOSE=1)\n"
            "  -h, --help              this text\n"
            "      --version           print the version and exit\n"
            "\n"
            "Prints \"READY <address>\" on stdout once it listens (then \"METRICS <url>\" with\n"
            "--metrics). Logs to stderr.\n"
            "On SIGINT or SIGTERM, shuts every queue down gracefully, then exits.\n"
            "On SIGHUP, re-reads the clients directory and closes sessions of revoked keys.\n"
            "Exit codes: 0 stopped by a signal, 1 failure, 2 bad usage, 3 cannot bind,\n"
            "5 the data directory is in use by another broker, 6 the journal is corrupt or\n"
            "has a segment missing (--repair).\n");
}

static int s_lease_is_valid(uint64_t lease_ms)
{
    if (lease_ms >= 1 && lease_ms <= INT32_MAX)
        return 1;
    fprintf(stderr, "asyncq-broker: a lease must be from 1 to %d ms\n", INT32_MAX);
    return 0;
}

/*  Adds the leases in "Q=MS[,Q=MS...]" to config. */
static int s_queue_leases(broker_config_t *config, const char *text)
{
    char buf[4096];
    if (snprintf(buf, sizeof buf, "%s", text) >= (int) sizeof buf)
        return 0;
    for (char *save = NULL, *entry = strtok_r(buf, ",", &save); entry;
         entry = strtok_r(NULL, ",", &save)) {
        char *equals = strchr(entry, '=');
        queue_lease_t *lease = &config->queue_leases[config->queue_lease_count];
        if (!equals || config->queue_lease_count == BROKER_QUEUE_LEASES_MAX
            || !aq_name_is_valid((const uint8_t *) entry, (size_t) (equals - entry))
            || !aq_arg_u64(equals + 1, &lease->lease_ms) || !s_lease_is_valid(lease->lease_ms)) {
            fprintf(stderr, "asyncq-broker: --queue-lease needs QUEUE=MS (at most %d), not '%s'\n",
                    BROKER_QUEUE_LEASES_MAX, entry);
            return 0;
        }
        *equals = '\0';
        strcpy(lease->queue, entry);
        config->queue_lease_count++;
    }
    return 1;
}

/*  "FIRST_MS[:MAX_MS[:FACTOR]]" (MAX_MS: 86400000, FACTOR: 2 if not given;
    "0": no policy) into a retry policy. */
static int s_retry_parse(const char *text, retry_t *retry)
{
    char buf[64];
    if (snprintf(buf, sizeof buf, "%s", text) >= (int) sizeof buf)
        return 0;
    *retry = (retry_t){0, AQ_WAIT_MAX_MS, 2};
    char *save = NULL, *first = strtok_r(buf, ":", &save), *max = strtok_r(NULL, ":", &save);
    char *factor = strtok_r(NULL, ":", &save);
    if (!first || strtok_r(NULL, ":", &save) || !aq_arg_u64(first, &retry->first_ms)
        || (max && !aq_arg_u64(max, &retry->max_ms))
        || (factor && !aq_arg_u64(factor, &retry->factor)))
        return 0;
    return retry->first_ms <= AQ_WAIT_MAX_MS && retry->max_ms <= AQ_WAIT_MAX_MS
           && retry->max_ms >= retry->first_ms && retry->factor >= 1 && retry->factor <= 100;
}

/*  Adds the policies in "Q=SPEC[,Q=SPEC...]" to config. */
static int s_queue_retries(broker_config_t *config, const char *text)
{
    char buf[4096];
    if (snprintf(buf, sizeof buf, "%s", text) >= (int) sizeof buf)
        return 0;
    for (char *save = NULL, *entry = strtok_r(buf, ",", &save); entry;
         entry = strtok_r(NULL, ",", &save)) {
        char *equals = strchr(entry, '=');
        queue_retry_t *retry = &config->queue_retries[config->queue_retry_count];
        if (!equals || config->queue_retry_count == BROKER_QUEUE_LEASES_MAX
            || !aq_name_is_valid((const uint8_t *) entry, (size_t) (equals - entry))
            || !s_retry_parse(equals + 1, &retry->retry)) {
            fprintf(stderr,
                    "asyncq-broker: --queue-retry needs QUEUE=FIRST_MS[:MAX_MS[:FACTOR]] (at "
                    "most %d queues; delays up to 86400000 ms, FACTOR 1 to 100), not '%s'\n",
                    BROKER_QUEUE_LEASES_MAX, entry);
            return 0;
        }
        *equals = '\0';
        strcpy(retry->queue, entry);
        config->queue_retry_count++;
    }
    return 1;
}

static void s_print_retry(const retry_t *retry)
{
    if (retry->first_ms)
        printf("%llu:%llu:%llu", (unsigned long long) retry->first_ms,
               (unsigned long long) retry->max_ms, (unsigned long long) retry->factor);
    else
        printf("0");
}

/*  A numeric setting: its flag, the environment variable read when the flag
    is not given, and where its value goes. */
typedef struct {
    const char *flag;
    const char *env;
    uint64_t *value;
    const char *text; /* from the flag, else the environment, else NULL */
} setting_t;

enum { SETTINGS = 29 };

static void s_settings_init(setting_t *settings, broker_config_t *config)
{
    setting_t table[SETTINGS] = {
        {"max-item", "ASYNCQ_MAX_ITEM", &config->max_item, NULL},
        {"max-batch", "ASYNCQ_MAX_BATCH", &config->max_batch, NULL},
        {"max-connections", "ASYNCQ_MAX_CONNECTIONS", &config->max_connections, NULL},
        {"hello-timeout-ms", "ASYNCQ_HELLO_TIMEOUT_MS", &config->hello_timeout_ms, NULL},
        {"max-pending", "ASYNCQ_MAX_PENDING", &config->max_pending, NULL},
        {"max-producers", "ASYNCQ_MAX_PRODUCERS", &config->max_producers, NULL},
        {"window", "ASYNCQ_WINDOW", &config->window, NULL},
        {"window-bytes", "ASYNCQ_WINDOW_BYTES", &config->window_bytes, NULL},
        {"queue-idle-ms", "ASYNCQ_QUEUE_IDLE_MS", &config->queue_idle_ms, NULL},
        {"max-expired", "ASYNCQ_MAX_EXPIRED", &config->max_expired, NULL},
        {"maxsize", "ASYNCQ_MAXSIZE", &config->maxsize, NULL},
        {"max-queues", "ASYNCQ_MAX_QUEUES", &config->max_queues, NULL},
        {"max-joins", "ASYNCQ_MAX_JOINS", &config->max_joiners, NULL},
        {"max-joins-per-peer", "ASYNCQ_MAX_JOINS_PER_PEER", &config->max_joins_per_peer, NULL},
        {"max-joins-per-key", "ASYNCQ_MAX_JOINS_PER_KEY", &config->max_joins_per_key, NULL},
        {"max-queues-per-key", "ASYNCQ_MAX_QUEUES_PER_KEY", &config->max_queues_per_key, NULL},
        {"max-sessions-per-key", "ASYNCQ_MAX_SESSIONS_PER_KEY", &config->max_sessions_per_key,
         NULL},
        {"max-held-bytes-per-key", "ASYNCQ_MAX_HELD_BYTES_PER_KEY",
         &config->max_held_bytes_per_key, NULL},
        {"max-credit", "ASYNCQ_MAX_CREDIT", &config->max_credit, NULL},
        {"heartbeat-ms", "ASYNCQ_HEARTBEAT_MS", &config->heartbeat_ms, NULL},
        {"lease-ms", "ASYNCQ_LEASE_MS", &config->lease_ms, NULL},
        {"max-attempts", "ASYNCQ_MAX_ATTEMPTS", &config->max_attempts, NULL},
        {"drain-ms", "ASYNCQ_DRAIN_MS", &config->drain_ms, NULL},
        {"max-delay", "ASYNCQ_MAX_DELAY", &config->max_delay_s, NULL},
        {"segment-bytes", "ASYNCQ_SEGMENT_BYTES", &config->segment_bytes, NULL},
        {"shard", "ASYNCQ_SHARD", &config->shard, NULL},
        {"node-id", "ASYNCQ_NODE_ID", &config->node_id, NULL},
        {"replica-snapshot", "ASYNCQ_REPLICA_SNAPSHOT", &config->replica_snapshot, NULL},
        {"lead-balance-ms", "ASYNCQ_LEAD_BALANCE_MS", &config->lead_balance_ms, NULL},
    };
    memcpy(settings, table, sizeof table);
}

/*  The setting of that flag (one of the table's). */
static const setting_t *s_setting(const setting_t *settings, const char *flag)
{
    int i = 0;
    while (i < SETTINGS - 1 && strcmp(settings[i].flag, flag) != 0)
        i++;
    return &settings[i];
}

/*  Reads the environment for settings no flag gave, then parses them all. */
static int s_settings_parse(setting_t *settings)
{
    for (int i = 0; i < SETTINGS; i++) {
        const char *text = aq_arg_env(settings[i].text, settings[i].env);
        if (text && !aq_arg_u64(text, settings[i].value)) {
            fprintf(stderr, "asyncq-broker: --%s (%s) needs a whole number, not '%s'\n",
                    settings[i].flag, settings[i].env, text);
            return 0;
        }
    }
    return 1;
}

/*  A setting outside its range: says which and returns 0. */
static int s_range(const char *flag, uint64_t value, uint64_t low, uint64_t high)
{
    if (value >= low && value <= high)
        return 1;
    fprintf(stderr, "asyncq-broker: --%s must be from %llu to %llu\n", flag,
            (unsigned long long) low, (unsigned long long) high);
    return 0;
}

/*  --service: every broker of the service, in shard order, this one at
    --shard's place: HOST:PORT, :PORT or ipc://PATH, comma-separated; a
    shard that is a group of replicas lists them all, joined by '|'
    (PROTOCOL.md 4.16): HOST:PORT each. This shard's group is --peers, or
    gives it: the same addresses in the same order. */
static int s_service_is_valid(broker_config_t *config)
{
    static char peers[AQ_TEXT_MAX];
    if (!config->service)
        return 1;
    size_t count = 0, groups = 0;
    char entry[AQ_ENDPOINT_MAX], own[AQ_TEXT_MAX] = "";
    for (const char *at = config->service; *at;) {
        size_t length = strcspn(at, ",");
        int group = memchr(at, '|', length) != NULL;
        groups += (size_t) group;
        if (count == config->shard && length < sizeof own) {
            snprintf(own, sizeof own, "%.*s", (int) length, at);
            for (char *bar = strchr(own, '|'); bar; bar = strchr(bar, '|'))
                *bar = ',';
        }
        const char *address = at, *end = at + length;
        do { /* each address of the entry: one, or a group's, '|' between */
            size_t size = strcspn(address, "|,");
            aq_endpoint_t endpoint;
            snprintf(entry, sizeof entry, "%.*s", (int) (size < sizeof entry ? size : 0),
                     address);
            int bad = size == 0 || size >= sizeof entry
                      || aq_endpoint_parse(entry, !group && entry[0] == ':', &endpoint) != AQ_OK
                      || (!endpoint.is_ipc && endpoint.port == 0)
                      || (group && (endpoint.is_ipc || !endpoint.host[0]));
            if (bad) {
                fprintf(stderr, "asyncq-broker: --service: '%.*s' is not %s\n", (int) size,
                        address,
                        group ? "HOST:PORT (a group's replicas, joined by '|')"
                              : "HOST:PORT, :PORT or ipc://PATH");
                return 0;
            }
            address += size + (address + size < end);
        } while (address < end);
        count++;
        at += length + (at[length] == ',');
    }
    /* WELCOME says it once as is and, with groups, once more (4.16). */
    if ((groups ? 2 : 1) * strlen(config->service) + 32 > AQ_TEXT_MAX || count > SHARDS_MAX) {
        fprintf(stderr, "asyncq-broker: --service lists too many brokers (%d at most, %d "
                        "characters%s)\n",
                SHARDS_MAX, (groups ? AQ_TEXT_MAX / 2 : AQ_TEXT_MAX) - 32,
                groups ? " with groups" : "");
        return 0;
    }
    if (config->shard >= count) {
        fprintf(stderr, "asyncq-broker: --shard %llu is not a place in --service's %zu brokers "
                        "(counted from 0)\n", (unsigned long long) config->shard, count);
        return 0;
    }
    if (strchr(own, ',') && !config->peers && !config->join) {
        snprintf(peers, sizeof peers, "%s", own); /* this shard's group */
        config->peers = peers;
    }
    else if (config->peers && strcmp(config->peers, own) != 0) {
        fprintf(stderr, "asyncq-broker: --peers (%s) is not shard %llu's place in --service "
                        "(%s): list the group's replicas there, joined by '|', in the same "
                        "order\n", config->peers, (unsigned long long) config->shard,
                own[0] ? own : "empty");
        return 0;
    }
    return 1;
}

static int s_config_is_valid(broker_config_t *config)
{
    if (!s_range("heartbeat-ms", config->heartbeat_ms, 10, 600000)
        || !s_range("max-item", config->max_item, 1, (uint64_t) UINT32_MAX / 2)
        || !s_range("max-batch", config->max_batch, 1, AQ_LIST_MAX)
        || !s_range("max-connections", config->max_connections, 1, 1000000)
        || !s_range("hello-timeout-ms", config->hello_timeout_ms, 100, 600000)
        || !s_range("max-attempts", config->max_attempts, 0, UINT16_MAX - 1)
        || !s_range("max-expired", config->max_expired, 1, 1000000)
        || !s_range("max-credit", config->max_credit, 1, 1000000)
        || !s_range("window", config->window, 1, 1000000)
        || !s_range("max-joins-per-key", config->max_joins_per_key, 1, UINT32_MAX)
        || !s_range("max-queues-per-key", config->max_queues_per_key, 1, UINT32_MAX)
        || !s_range("max-sessions-per-key", config->max_sessions_per_key, 1, UINT32_MAX)
        || !s_range("max-held-bytes-per-key", config->max_held_bytes_per_key, 1,
                    UINT64_MAX / 2)
        || !s_range("window-bytes", config->window_bytes, config->max_item, UINT64_MAX / 2)
        || !s_range("max-pending", config->max_pending, 1024, UINT32_MAX)
        || !s_range("max-delay", config->max_delay_s, 0, 315360000) /* 10 years */
        || !s_range("segment-bytes", config->segment_bytes, 4096, UINT32_MAX)
        || !s_range("shard", config->shard, 0, SHARDS_MAX - 1)
        || (config->replica_snapshot
            && !s_range("replica-snapshot", config->replica_snapshot, 16, 1u << 30))
        || (config->lead_balance_ms
            && !s_range("lead-balance-ms", config->lead_balance_ms, 100, 86400000))
        || !s_service_is_valid(config))
        return 0;
    if (config->drain_ms > INT32_MAX)
        config->drain_ms = INT32_MAX;
    return s_lease_is_valid(config->lease_ms);
}

static void s_print_config(const broker_config_t *config, const setting_t *settings,
                           const char *shards, const char *dashboard_of)
{
    printf("ASYNCQ_BIND=%s\n", config->bind);
    for (int i = 0; i < SETTINGS; i++)
        printf("%s=%llu\n", settings[i].env, (unsigned long long) *settings[i].value);
    printf("ASYNCQ_QUEUE_LEASE=");
    for (size_t i = 0; i < config->queue_lease_count; i++)
        printf("%s%s=%llu", i ? "," : "", config->queue_leases[i].queue,
               (unsigned long long) config->queue_leases[i].lease_ms);
    printf("\nASYNCQ_RETRY=");
    s_print_retry(&config->retry);
    printf("\nASYNCQ_QUEUE_RETRY=");
    for (size_t i = 0; i < config->queue_retry_count; i++) {
        printf("%s%s=", i ? "," : "", config->queue_retries[i].queue);
        s_print_retry(&config->queue_retries[i].retry);
    }
    printf("\nASYNCQ_CURVE_SECRET=%s\nASYNCQ_CLIENTS=%s\nASYNCQ_INSECURE=%d\n",
           config->curve_secret ? config->curve_secret : "",
           config->clients_dir ? config->clients_dir : "", config->insecure);
    printf("ASYNCQ_DATA_DIR=%s\n", config->data_dir ? config->data_dir : "");
    if (config->fsync == JOURNAL_FSYNC_INTERVAL)
        printf("ASYNCQ_FSYNC=%lld\n", (long long) config->fsync_interval_ms);
    else
        printf("ASYNCQ_FSYNC=%s\n", config->fsync == JOURNAL_FSYNC_NEVER ? "never" : "always");
    printf("ASYNCQ_METRICS=%s\nASYNCQ_METRICS_TOKEN_FILE=%s\n",
           config->metrics ? config->metrics : "",
           config->metrics_token_file ? config->metrics_token_file : "");
    printf("ASYNCQ_STATE_DUMP=%s\n", config->state_dump ? config->state_dump : "");
    printf("ASYNCQ_PEERS=%s\nASYNCQ_JOIN=%s\n", config->peers ? config->peers : "",
           config->join ? config->join : "");
    printf("ASYNCQ_SERVICE=%s\nASYNCQ_SHARDS=%s\nASYNCQ_DASHBOARD_OF=%s\n",
           config->service ? config->service : "", shards ? shards : "",
           dashboard_of ? dashboard_of : "");
    printf("ASYNCQ_VERBOSE=%d\n", config->verbose);
}

/*  --fsync: always, never or a number of milliseconds. */
static int s_fsync_parse(const char *text, broker_config_t *config)
{
    uint64_t ms;
    if (!text || strcmp(text, "always") == 0)
        config->fsync = JOURNAL_FSYNC_ALWAYS;
    else if (strcmp(text, "never") == 0)
        config->fsync = JOURNAL_FSYNC_NEVER;
    else if (aq_arg_u64(text, &ms) && ms >= 1 && ms <= 60000) {
        config->fsync = JOURNAL_FSYNC_INTERVAL;
        config->fsync_interval_ms = (int64_t) ms;
    }
    else {
        fprintf(stderr, "asyncq-broker: --fsync (ASYNCQ_FSYNC) takes always, never or 1 to "
                        "60000 ms, not '%s'\n", text);
        return 0;
    }
    return 1;
}

static void s_report_line(void *ctx, const char *line)
{
    (void) ctx;
    printf("%s\n", line);
}

/*  --repair: every intact record of the journal kept, damaged parts cut. */
static int s_repair(const char *dir)
{
    if (!dir) {
        fprintf(stderr, "asyncq-broker: --repair needs --data-dir (or ASYNCQ_DATA_DIR)\n");
        return AQ_EXIT_USAGE;
    }
    char error[1024];
    int rc = journal_repair(dir, NULL, s_report_line, NULL, error, sizeof error);
    if (rc != 0) {
        fprintf(stderr, "asyncq-broker: --repair: %s\n", error);
        return rc == -2 ? AQ_EXIT_LOCKED : AQ_EXIT_FAILURE;
    }
    printf("repaired %s: start the broker on it as usual\n", dir);
    return AQ_EXIT_OK;
}

/*  One replica's --recover-alone (`label`: which, "" if alone): its exit
    code, with what it did or why not said. */
static int s_recover_one(const broker_config_t *config, const char *label)
{
    char text[1024];
    int rc = persist_recover_alone(config, text, sizeof text);
    if (rc) {
        fprintf(stderr, "asyncq-broker: --recover-alone: %s%s\n", label, text);
        return rc == -2 ? AQ_EXIT_LOCKED : AQ_EXIT_FAILURE;
    }
    printf("%s%s.\n", label, text);
    return AQ_EXIT_OK;
}

/*  --recover-alone: a group whose majority is lost for good goes on as
    this replica alone, with what its log holds. */
static int s_recover_alone(const broker_config_t *config)
{
    if (!config->peers && !config->join) {
        fprintf(stderr, "asyncq-broker: --recover-alone is for a replica of a group: give it "
                        "the flags it starts with (--peers or --join, --node-id, --data-dir)\n");
        return AQ_EXIT_USAGE;
    }
    int code = s_recover_one(config, "");
    if (code == AQ_EXIT_OK)
        printf("Start it again as before (without --recover-alone): it leads alone, with "
               "every item its log holds. Add replicas with `asyncq replica add`, each started "
               "with --join on an empty directory; never start a replica left out on its old "
               "directory.\n");
    return code;
}

/*  --recover-alone with --shards N --peers: each shard's replica on this
    host, as it starts (shards.h), goes on alone. */
static int s_recover_shards_alone(const broker_config_t *config, int count)
{
    if (!config->peers) {
        fprintf(stderr, "asyncq-broker: --recover-alone is for replicas of groups: give it the "
                        "flags they start with (--shards, --peers, --node-id, --data-dir)\n");
        return AQ_EXIT_USAGE;
    }
    int code = AQ_EXIT_OK;
    for (int k = 0; k < count; k++) {
        char peers[AQ_TEXT_MAX], dir[4096], label[32];
        broker_config_t own = *config;
        if (shards_group(config->peers, k, ',', peers, sizeof peers)
            || snprintf(dir, sizeof dir, "%s/shard-%d", config->data_dir, k) >= (int) sizeof dir) {
            fprintf(stderr, "asyncq-broker: --recover-alone: shard %d: --peers or --data-dir "
                            "does not fit --shards %d\n", k, count);
            return AQ_EXIT_USAGE;
        }
        own.peers = peers;
        own.data_dir = dir;
        own.shard = (uint64_t) k;
        snprintf(label, sizeof label, "shard %d: ", k);
        int one = s_recover_one(&own, label);
        if (one != AQ_EXIT_OK && (code == AQ_EXIT_OK || one == AQ_EXIT_LOCKED))
            code = one; /* a shard's replica that runs says most */
    }
    if (code == AQ_EXIT_OK)
        printf("Start them again as before (without --recover-alone): each leads its shard "
               "alone, with every item its log holds. Add replicas with `asyncq replica add`; "
               "never start a replica left out on its old directory.\n");
    return code;
}

static void s_ignore_line(void *ctx, const char *line)
{
    (void) ctx;
    (void) line;
}

/*  --health: the broker bound to `bind` answers a STATS request. With
    CURVE, it connects with the broker's own certificate, which must then be
    in the clients directory (with a role that may ask for stats). */
static int s_health(const char *bind, const char *curve_secret)
{
    if (aq_security_set(curve_secret, curve_secret) != AQ_OK) {
        fprintf(stderr, "asyncq-broker: --health: %s\n", aq_security_error());
        return AQ_EXIT_USAGE;
    }
    aq_endpoint_t endpoint;
    if (aq_endpoint_parse(bind, 1, &endpoint) || (!endpoint.is_ipc && endpoint.port == 0)) {
        fprintf(stderr, "asyncq-broker: --health needs a fixed address, not '%s'\n", bind);
        return AQ_EXIT_USAGE;
    }
    char address[AQ_ENDPOINT_MAX], client_id[AQ_NAME_MAX + 1];
    aq_endpoint_local(&endpoint, address, sizeof address);
    aq_client_id_make("health", client_id, sizeof client_id);
    aq_status_t rc;
    /* Well within a HEALTHCHECK's time-out (5 s in the Dockerfile). */
    aq_session_t *session = aq_session_open(address, client_id, 0, 3000, &rc);
    if (session)
        rc = aq_stats(session, "", s_ignore_line, NULL);
    aq_session_destroy(&session);
    if (rc) {
        fprintf(stderr, "asyncq-broker: no broker answers at %s: %s\n", address, aq_strerror(rc));
        return AQ_EXIT_UNREACHABLE;
    }
    printf("healthy: %s\n", address);
    return AQ_EXIT_OK;
}

int main(int argc, char **argv)
{
    broker_config_t config = {
        .bind = NULL,
        .max_item = BROKER_DEFAULT_MAX_ITEM,
        .max_batch = BROKER_DEFAULT_MAX_BATCH,
        .max_connections = BROKER_DEFAULT_MAX_CONNECTIONS,
        .hello_timeout_ms = BROKER_DEFAULT_HELLO_TIMEOUT_MS,
        .max_pending = BROKER_DEFAULT_MAX_PENDING,
        .max_producers = BROKER_DEFAULT_MAX_PRODUCERS,
        .window = BROKER_DEFAULT_WINDOW,
        .window_bytes = BROKER_DEFAULT_WINDOW_BYTES,
        .queue_idle_ms = BROKER_DEFAULT_QUEUE_IDLE_MS,
        .max_expired = BROKER_DEFAULT_MAX_EXPIRED,
        .maxsize = 0,
        .max_queues = BROKER_DEFAULT_MAX_QUEUES,
        .max_joiners = BROKER_DEFAULT_MAX_JOINERS,
        .max_credit = BROKER_DEFAULT_MAX_CREDIT,
        .heartbeat_ms = BROKER_DEFAULT_HEARTBEAT_MS,
        .lease_ms = BROKER_DEFAULT_LEASE_MS,
        .max_attempts = BROKER_DEFAULT_MAX_ATTEMPTS,
        .max_joins_per_peer = BROKER_DEFAULT_MAX_JOINS_PER_PEER,
        .max_joins_per_key = BROKER_DEFAULT_MAX_JOINS_PER_KEY,
        .max_queues_per_key = BROKER_DEFAULT_MAX_QUEUES_PER_KEY,
        .max_sessions_per_key = BROKER_DEFAULT_MAX_SESSIONS_PER_KEY,
        .max_held_bytes_per_key = BROKER_DEFAULT_MAX_HELD_BYTES_PER_KEY,
        .drain_ms = BROKER_DEFAULT_DRAIN_MS,
        .max_delay_s = BROKER_DEFAULT_MAX_DELAY_S,
        .segment_bytes = BROKER_DEFAULT_SEGMENT_BYTES,
        .replica_snapshot = BROKER_DEFAULT_REPLICA_SNAPSHOT,
        .lead_balance_ms = BROKER_DEFAULT_LEAD_BALANCE_MS,
        .fsync = JOURNAL_FSYNC_ALWAYS,
    };
    const char *fsync = NULL;
    int repair = 0, recover_alone = 0;
    setting_t settings[SETTINGS];
    s_settings_init(settings, &config);
    int queue_lease_given = 0, queue_retry_given = 0, print_config = 0, health = 0;
    const char *retry = NULL, *shards = NULL, *dashboard_of = NULL;
    /* Options 0..SETTINGS-1 are the numeric settings, by index. */
    struct option options[SETTINGS + 25];
    for (int i = 0; i < SETTINGS; i++)
        options[i] = (struct option){settings[i].flag, required_argument, 0, 1000 + i};
    options[SETTINGS] = (struct option){"bind", required_argument, 0, 'b'};
    options[SETTINGS + 1] = (struct option){"queue-lease", required_argument, 0, 'q'};
    options[SETTINGS + 2] = (struct option){"print-config", no_argument, 0, 'p'};
    options[SETTINGS + 3] = (struct option){"verbose", no_argument, 0, 'v'};
    options[SETTINGS + 4] = (struct option){"help", no_argument, 0, 'h'};
    options[SETTINGS + 5] = (struct option){"health", no_argument, 0, 'k'};
    options[SETTINGS + 6] = (struct option){"curve-secret", required_argument, 0, 'c'};
    options[SETTINGS + 7] = (struct option){"clients", required_argument, 0, 'C'};
    options[SETTINGS + 8] = (struct option){"insecure", no_argument, 0, 'i'};
    options[SETTINGS + 9] = (struct option){"data-dir", required_argument, 0, 'D'};
    options[SETTINGS + 10] = (struct option){"fsync", required_argument, 0, 'F'};
    options[SETTINGS + 11] = (struct option){"repair", no_argument, 0, 'R'};
    options[SETTINGS + 12] = (struct option){"metrics", required_argument, 0, 'M'};
    options[SETTINGS + 13] = (struct option){"metrics-token-file", required_argument, 0, 'T'};
    options[SETTINGS + 14] = (struct option){"version", no_argument, 0, 'V'};
    options[SETTINGS + 15] = (struct option){"state-dump", required_argument, 0, 'S'};
    options[SETTINGS + 16] = (struct option){"retry", required_argument, 0, 'y'};
    options[SETTINGS + 17] = (struct option){"queue-retry", required_argument, 0, 'Y'};
    options[SETTINGS + 18] = (struct option){"service", required_argument, 0, 'e'};
    options[SETTINGS + 19] = (struct option){"shards", required_argument, 0, 'n'};
    options[SETTINGS + 20] = (struct option){"dashboard-of", required_argument, 0, 'O'};
    options[SETTINGS + 21] = (struct option){"peers", required_argument, 0, 'P'};
    options[SETTINGS + 22] = (struct option){"join", required_argument, 0, 'J'};
    options[SETTINGS + 23] = (struct option){"recover-alone", no_argument, 0, 'L'};
    options[SETTINGS + 24] = (struct option){0, 0, 0, 0};
    int opt;
    while ((opt = getopt_long(argc, argv, "b:vh", options, NULL)) != -1) {
        if (opt >= 1000 && opt < 1000 + SETTINGS) {
            settings[opt - 1000].text = optarg;
            continue;
        }
        switch (opt) {
        case 'b': config.bind = optarg; break;
        case 'q':
            queue_lease_given = 1;
            if (!s_queue_leases(&config, optarg))
                return AQ_EXIT_USAGE;
            break;
        case 'y': retry = optarg; break;
        case 'Y':
            queue_retry_given = 1;
            if (!s_queue_retries(&config, optarg))
                return AQ_EXIT_USAGE;
            break;
        case 'p': print_config = 1; break;
        case 'k': health = 1; break;
        case 'c': config.curve_secret = optarg; break;
        case 'C': config.clients_dir = optarg; break;
        case 'i': config.insecure = 1; break;
        case 'D': config.data_dir = optarg; break;
        case 'F': fsync = optarg; break;
        case 'R': repair = 1; break;
        case 'L': recover_alone = 1; break;
        case 'M': config.metrics = optarg; break;
        case 'T': config.metrics_token_file = optarg; break;
        case 'S': config.state_dump = optarg; break;
        case 'e': config.service = optarg; break;
        case 'n': shards = optarg; break;
        case 'O': dashboard_of = optarg; break;
        case 'P': config.peers = optarg; break;
        case 'J': config.join = optarg; break;
        case 'v': config.verbose = 1; break;
        case 'h': s_usage(stdout); return AQ_EXIT_OK;
        case 'V': printf("asyncq-broker %s\n", aq_version()); return AQ_EXIT_OK;
        default: s_usage(stderr); return AQ_EXIT_USAGE;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "asyncq-broker: unexpected argument '%s' (see --help)\n", argv[optind]);
        return AQ_EXIT_USAGE;
    }
    const char *queue_leases = getenv("ASYNCQ_QUEUE_LEASE");
    const char *queue_retries = getenv("ASYNCQ_QUEUE_RETRY");
    retry = aq_arg_env(retry, "ASYNCQ_RETRY");
    if (retry && !s_retry_parse(retry, &config.retry)) {
        fprintf(stderr, "asyncq-broker: --retry needs FIRST_MS[:MAX_MS[:FACTOR]] (delays up to "
                        "86400000 ms, FACTOR 1 to 100; 0: none), not '%s'\n", retry);
        return AQ_EXIT_USAGE;
    }
    if (!queue_retry_given && queue_retries && *queue_retries
        && !s_queue_retries(&config, queue_retries))
        return AQ_EXIT_USAGE;
    const char *verbose = getenv("ASYNCQ_VERBOSE");
    if (verbose && strcmp(verbose, "1") == 0)
        config.verbose = 1;
    const char *insecure = getenv("ASYNCQ_INSECURE");
    if (insecure && strcmp(insecure, "1") == 0)
        config.insecure = 1;
    config.curve_secret = aq_arg_env(config.curve_secret, "ASYNCQ_CURVE_SECRET");
    config.clients_dir = aq_arg_env(config.clients_dir, "ASYNCQ_CLIENTS");
    if (config.curve_secret && !*config.curve_secret)
        config.curve_secret = NULL;
    if (config.clients_dir && !*config.clients_dir)
        config.clients_dir = NULL;
    config.data_dir = aq_arg_env(config.data_dir, "ASYNCQ_DATA_DIR");
    if (config.data_dir && !*config.data_dir)
        config.data_dir = NULL;
    config.metrics = aq_arg_env(config.metrics, "ASYNCQ_METRICS");
    if (config.metrics && !*config.metrics)
        config.metrics = NULL;
    config.service = aq_arg_env(config.service, "ASYNCQ_SERVICE");
    if (config.service && !*config.service)
        config.service = NULL;
    config.peers = aq_arg_env(config.peers, "ASYNCQ_PEERS");
    if (config.peers && !*config.peers)
        config.peers = NULL;
    config.join = aq_arg_env(config.join, "ASYNCQ_JOIN");
    if (config.join && !*config.join)
        config.join = NULL;
    config.argv = argv;
    shards = aq_arg_env(shards, "ASYNCQ_SHARDS");
    if (shards && !*shards)
        shards = NULL;
    dashboard_of = aq_arg_env(dashboard_of, "ASYNCQ_DASHBOARD_OF");
    if (dashboard_of && !*dashboard_of)
        dashboard_of = NULL;
    config.state_dump = aq_arg_env(config.state_dump, "ASYNCQ_STATE_DUMP");
    if (config.state_dump && !*config.state_dump)
        config.state_dump = NULL;
    config.metrics_token_file = aq_arg_env(config.metrics_token_file, "ASYNCQ_METRICS_TOKEN_FILE");
    if (config.metrics_token_file && !*config.metrics_token_file)
        config.metrics_token_file = NULL;
    if (!s_fsync_parse(aq_arg_env(fsync, "ASYNCQ_FSYNC"), &config))
        return AQ_EXIT_USAGE;
    /* A replica's clients hear that their leader is gone within three
       heartbeats, and a group has a new leader within an election time-out
       (0.5 s): a shorter default keeps the failover as clients see it
       under 2 s when no connection closes (a host lost, a cut link). */
    const setting_t *heartbeat = s_setting(settings, "heartbeat-ms");
    if (!s_settings_parse(settings) || !s_config_is_valid(&config)
        || (!queue_lease_given && queue_leases && *queue_leases
            && !s_queue_leases(&config, queue_leases)))
        return AQ_EXIT_USAGE;
    if ((config.peers || config.join) && !aq_arg_env(heartbeat->text, heartbeat->env))
        config.heartbeat_ms = BROKER_REPLICA_HEARTBEAT_MS;
    config.bind = aq_endpoint_choose(config.bind, "ASYNCQ_BIND", "*");
    if (print_config) {
        s_print_config(&config, settings, shards, dashboard_of);
        return AQ_EXIT_OK;
    }
    if (health)
        return s_health(config.bind, config.curve_secret);
    if (repair)
        return s_repair(config.data_dir);
    if (dashboard_of && shards) {
        fprintf(stderr, "asyncq-broker: --dashboard-of runs no broker: not with --shards (whose "
                        "--metrics port is the service's already)\n");
        return AQ_EXIT_USAGE;
    }
    if (dashboard_of)
        return shards_dashboard(&config, dashboard_of);
    if ((config.peers || config.join) && !config.data_dir) {
        fprintf(stderr, "asyncq-broker: --%s makes this broker a replica of a group: it "
                        "needs --data-dir (the group's log)\n", config.peers ? "peers" : "join");
        return AQ_EXIT_USAGE;
    }
    if (config.join && shards) {
        fprintf(stderr, "asyncq-broker: --join adds one replica to one group, not --shards: "
                        "start this host's replica of each shard K as `asyncq replica add` "
                        "said, with --shard K and --service (PROTOCOL.md 4.16)\n");
        return AQ_EXIT_USAGE;
    }
    if (config.join && !config.node_id) {
        fprintf(stderr, "asyncq-broker: --join needs --node-id: the id `asyncq replica add "
                        "%s` gave this replica\n", config.join);
        return AQ_EXIT_USAGE;
    }
    int count = 0;
    if (shards && !shards_count(shards, &count)) {
        fprintf(stderr, "asyncq-broker: --shards (ASYNCQ_SHARDS) takes 1 to %d or auto, "
                        "not '%s'\n", SHARDS_MAX, shards);
        return AQ_EXIT_USAGE;
    }
    if (shards) {
        int unfit = shards_fit_data(&config, strcmp(shards, "auto") == 0, &count);
        if (unfit)
            return unfit;
    }
    if (recover_alone)
        return shards ? s_recover_shards_alone(&config, count) : s_recover_alone(&config);
    if (shards)
        return shards_run(argc, argv, &config, count);
    if (config.service) /* a shard's lines say which it is */
        log_set_shard((int) config.shard);

    aq_status_t status;
    broker_t *broker = broker_new(&config, &status);
    if (!broker) {
        if (status == AQ_BAD_KEY)
            return AQ_EXIT_USAGE; /* the reason is logged */
        fprintf(stderr, "asyncq-broker: cannot listen on '%s': %s (%s)\n", config.bind,
                aq_strerror(status), status == AQ_BAD_ENDPOINT ? zmq_strerror(errno) : "");
        return status == AQ_BAD_ENDPOINT ? AQ_EXIT_UNREACHABLE : AQ_EXIT_FAILURE;
    }
    if (config.data_dir) {
        char error[1024];
        int rc = persist_open(broker, error, sizeof error);
        if (rc) {
            fprintf(stderr, "asyncq-broker: %s\n", error);
            broker_destroy(&broker);
            return rc == JOURNAL_LOCKED    ? AQ_EXIT_LOCKED
                   : rc == JOURNAL_CORRUPT ? AQ_EXIT_CORRUPT
                                           : AQ_EXIT_FAILURE;
        }
    }
    char token[128] = "";
    if (config.metrics) {
        if (http_token_load(config.metrics_token_file, token, sizeof token)) {
            broker_destroy(&broker);
            return AQ_EXIT_USAGE;
        }
        char error[1024];
        broker->http = http_new(broker, config.metrics, token, error, sizeof error);
        if (!broker->http) {
            fprintf(stderr, "asyncq-broker: %s\n", error);
            broker_destroy(&broker);
            return AQ_EXIT_UNREACHABLE;
        }
    }
    char durability[4200];
    if (config.peers || config.join)
        snprintf(durability, sizeof durability, "replica %llu of the group %s, its log in %s",
                 (unsigned long long) config.node_id, config.peers ? config.peers : config.join,
                 config.data_dir);
    else if (config.data_dir)
        snprintf(durability, sizeof durability, "durable in %s, fsync %s", config.data_dir,
                 broker_persistence(broker));
    else
        snprintf(durability, sizeof durability, "in memory: a restart loses the queues");
    printf("READY %s\n", broker->address);
    if (broker->http)
        printf("METRICS %s\n", http_url(broker->http));
    fflush(stdout);
    /* Bound on every interface, READY's address is one that works here. */
    aq_endpoint_t bound;
    char where[AQ_ENDPOINT_MAX + 64];
    if (aq_endpoint_parse(config.bind, 1, &bound) == AQ_OK && !bound.is_ipc
        && strcmp(bound.host, "*") == 0)
        snprintf(where, sizeof where, "every interface on port %d, %s from this host", bound.port,
                 broker->address);
    else
        snprintf(where, sizeof where, "%s", broker->address);
    log_line("listening on %s (max item %llu bytes, maxsize %llu); %s; %s",
             where, (unsigned long long) config.max_item,
             (unsigned long long) config.maxsize, durability,
             auth_enabled(broker->auth) ? "CURVE: clients need an allowed key"
             : config.insecure ? "no keys and --insecure: anyone who reaches it is let in, "
                                 "nothing is encrypted"
                               : "no keys: loopback connections only");
    if (broker->http)
        log_line("metrics on %s/metrics, dashboard on %s/; its actions need the token %s",
                 http_url(broker->http), http_url(broker->http),
                 config.metrics_token_file ? "in --metrics-token-file" : token);
    status = broker_run(broker);
    log_line("stopping");
    broker_destroy(&broker);
    return status == AQ_OK ? AQ_EXIT_OK : AQ_EXIT_FAILURE;
}
