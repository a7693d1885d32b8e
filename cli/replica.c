/*  asyncq replica: a group of replicas (PROTOCOL.md 4.16) listed and
    changed through its leader. */
#include <czmq.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "asyncq/control.h"
#include "asyncq/internal.h"
#include "asyncq/program.h"
#include "cli.h"

#define BUSY_RETRY_MS 10000 /* a change under way (a replica being promoted) is waited out */
#define TRANSFER_WAIT_MS 10000
/*  libraft gives a transfer up after an election time-out if the replica
    asked has not caught up (just after an election, say): asked again
    after this, while the old leader still leads. */
#define TRANSFER_AGAIN_MS 2000

static const char *s_usage =
    "Usage: asyncq replica list|add HOST:PORT|remove ID|transfer [ID] [-b ADDR]\n"
    "ADDR is any replica of the group, or several (A,B,C): the request goes to its\n"
    "leader.\n"
    "list: every replica of the group: its id, address, kind (a voter, or a standby\n"
    "  that is catching up), role, and how far it has the leader's log; of a service\n"
    "  of several groups, every shard's, each line after its shard=K.\n"
    "add HOST:PORT: a new replica at that address (as clients reach it) joins the\n"
    "  group; prints its id. Start it there with\n"
    "    asyncq-broker --join HOST:PORT --node-id ID --data-dir DIR\n"
    "  (on an empty DIR): the leader sends it the log, and makes it a voter once it\n"
    "  has caught up. A replica whose data directory was lost comes back this way,\n"
    "  after remove.\n"
    "remove ID|HOST:PORT: that replica leaves the group (not the leader: transfer\n"
    "  first); stop it.\n"
    "transfer [ID]: the leader hands the lead to that replica (or to the one most up\n"
    "  to date) and starts again as a follower; prints the new leader.\n"
    "add, remove and transfer need the admin role.\n";

static void s_print_prefixed(void *ctx, const char *line)
{
    printf("%s%s\n", (const char *) ctx, line);
}

static int s_by_shard(const void *a, const void *b)
{
    int one = aq_session_welcome(*(aq_session_t *const *) a)->shard;
    int other = aq_session_welcome(*(aq_session_t *const *) b)->shard;
    return (one > other) - (one < other);
}

/*  `list`: the group's replicas; in a service of several groups, every
    shard's, each line after its shard=K. */
static int s_list(const char *broker)
{
    size_t count = 0;
    aq_status_t rc;
    aq_session_t **sessions = cli_connect_all("replica", broker, &count, &rc);
    if (!sessions)
        return aq_exit_code(rc);
    qsort(sessions, count, sizeof *sessions, s_by_shard);
    int exit_code = AQ_EXIT_OK;
    for (size_t k = 0; k < count; k++) {
        char prefix[32] = "";
        if (count > 1)
            snprintf(prefix, sizeof prefix, "shard=%d ", aq_session_welcome(sessions[k])->shard);
        rc = aq_replicas(sessions[k], "list", s_print_prefixed, prefix);
        if (rc) {
            cli_report("replica", sessions[k], rc);
            exit_code = aq_exit_code(rc);
        }
    }
    cli_disconnect_all(sessions, count);
    return exit_code;
}

typedef struct {
    char leader[64]; /* the id of the line with role=leader */
    char first[256]; /* the first line */
} lines_t;

static void s_keep_line(void *ctx, const char *line)
{
    lines_t *lines = ctx;
    if (!lines->first[0])
        snprintf(lines->first, sizeof lines->first, "%s", line);
    if (strstr(line, " role=leader") && strncmp(line, "id=", 3) == 0)
        snprintf(lines->leader, sizeof lines->leader, "%.*s", (int) strcspn(line + 3, " "),
                 line + 3);
}

/*  A session with the group's leader, found from the first of `brokers`
    (ADDR,ADDR,...: any replicas of the group) that answers within
    `timeout_ms` each; NULL, with the latest reason in aq_last_error(), if
    none does. */
static aq_session_t *s_connect(const char *brokers, int timeout_ms, aq_status_t *rc)
{
    aq_session_t *session = NULL;
    *rc = AQ_UNREACHABLE;
    for (const char *at = brokers; !session && *at;) {
        size_t length = strcspn(at, ",");
        char address[AQ_ENDPOINT_MAX];
        snprintf(address, sizeof address, "%.*s", (int) length, at);
        session = aq_session_new(address, "replica", timeout_ms, rc);
        at += length + (at[length] == ',');
    }
    return session;
}

/*  The leader's id as the group lists it, asked anew (a new session finds
    the leader from `broker`); "" if none answered within a second (a
    replica may be starting again). */
static void s_leader_now(const char *broker, char *leader, size_t size)
{
    aq_status_t rc;
    leader[0] = '\0';
    aq_session_t *session = s_connect(broker, 1000, &rc);
    if (!session)
        return;
    lines_t lines = {0};
    if (aq_replicas(session, "list", s_keep_line, &lines) == AQ_OK)
        snprintf(leader, size, "%s", lines.leader);
    aq_session_destroy(&session);
}

/*  The request, asked again while the group says another change is under
    way (it makes a replica that caught up a voter on its own). */
static aq_status_t s_ask(aq_session_t *session, const char *action, aq_stats_line_fn *line,
                         void *ctx)
{
    int64_t until = aq_deadline_at(BUSY_RETRY_MS);
    for (;;) {
        aq_status_t rc = aq_replicas(session, action, line, ctx);
        if (rc != AQ_REFUSED || aq_session_error(session)->code != AQ_CONFLICT
            || !strstr(aq_session_error(session)->text, "under way") || !aq_deadline_left(until))
            return rc;
        zclock_sleep(100);
    }
}

int cli_replica(int argc, char **argv)
{
    static const struct option options[] = {
        {"broker", required_argument, 0, 'b'}, {"help", no_argument, 0, 'h'},
        AQ_SECURITY_OPTIONS, {0, 0, 0, 0}};
    const char *broker = NULL, *curve_secret = NULL, *server_key = NULL;
    int opt;
    optind = 1;
    while ((opt = getopt_long(argc, argv, "b:h", options, NULL)) != -1) {
        if (opt == 'b')
            broker = optarg;
        else if (opt == AQ_OPT_CURVE_SECRET)
            curve_secret = optarg;
        else if (opt == AQ_OPT_SERVER_KEY)
            server_key = optarg;
        else if (opt == 'h') {
            printf("%s%s", s_usage, AQ_SECURITY_USAGE);
            return AQ_EXIT_OK;
        }
        else {
            fprintf(stderr, "%s%s", s_usage, AQ_SECURITY_USAGE);
            return AQ_EXIT_USAGE;
        }
    }
    const char *verb = optind < argc ? argv[optind] : "";
    int arguments = argc - optind - 1;
    int needs = strcmp(verb, "add") == 0 || strcmp(verb, "remove") == 0;
    int fits = strcmp(verb, "list") == 0 ? arguments == 0
               : needs                    ? arguments == 1
               : strcmp(verb, "transfer") == 0 ? arguments <= 1
                                               : 0;
    if (!fits) {
        fprintf(stderr, "%s", s_usage);
        return AQ_EXIT_USAGE;
    }
    if (!aq_security_args("asyncq replica", curve_secret, server_key))
        return AQ_EXIT_USAGE;
    broker = aq_endpoint_choose(broker, "ASYNCQ_BROKER", "localhost");
    char action[AQ_TEXT_MAX];
    snprintf(action, sizeof action, "%s%s%s", verb, arguments ? " " : "",
             arguments ? argv[optind + 1] : "");
    aq_status_t rc;
    if (strcmp(verb, "list") == 0)
        return s_list(broker);
    aq_session_t *session = s_connect(broker, AQ_CONNECT_TIMEOUT_MS, &rc);
    if (!session) {
        fprintf(stderr, "asyncq replica: %s\n", aq_last_error());
        return aq_exit_code(rc);
    }
    char before[64];
    lines_t lines = {0};
    if (strcmp(verb, "transfer") == 0) {
        /* The leader as it is, to see the lead move. */
        rc = aq_replicas(session, "list", s_keep_line, &lines);
        snprintf(before, sizeof before, "%s", lines.leader);
        memset(&lines, 0, sizeof lines);
    }
    if (!rc)
        rc = s_ask(session, action, s_keep_line, &lines);
    if (rc) {
        cli_report("replica", session, rc);
        aq_session_destroy(&session);
        return aq_exit_code(rc);
    }
    aq_session_destroy(&session);
    printf("%s\n", lines.first);
    if (strcmp(verb, "add") == 0) {
        const char *id = strstr(lines.first, "id=");
        fprintf(stderr, "asyncq replica: start it at %s with:\n"
                        "  asyncq-broker --join %s --node-id %.*s --data-dir DIR\n"
                        "(an empty DIR, and the flags the others run with): it becomes a voter "
                        "once it has caught up (asyncq replica list)\n",
                argv[optind + 1], argv[optind + 1], id ? (int) strcspn(id + 3, " ") : 0,
                id ? id + 3 : "");
        return AQ_EXIT_OK;
    }
    if (strcmp(verb, "transfer") != 0)
        return AQ_EXIT_OK;
    /* The old leader starts again as a follower once the new one leads:
       asked until one answer names another (an answer may not come from
       a replica starting again). */
    int64_t until = aq_deadline_at(TRANSFER_WAIT_MS), again = aq_deadline_at(TRANSFER_AGAIN_MS);
    char now[64] = "", seen[64] = "";
    while (aq_deadline_left(until)) {
        s_leader_now(broker, now, sizeof now);
        if (now[0])
            snprintf(seen, sizeof seen, "%s", now);
        if (seen[0] && strcmp(seen, before) != 0)
            break;
        if (!aq_deadline_left(again) && strcmp(now, before) == 0) {
            aq_session_t *asking = s_connect(broker, 1000, &rc);
            if (asking)
                aq_replicas(asking, action, NULL, NULL);
            aq_session_destroy(&asking);
            again = aq_deadline_at(TRANSFER_AGAIN_MS);
        }
        zclock_sleep(100);
    }
    snprintf(now, sizeof now, "%s", seen);
    if (!now[0] || strcmp(now, before) == 0) {
        fprintf(stderr, "asyncq replica: replica %s still leads after %d s: the one asked did "
                        "not take over (asyncq replica list)\n", before, TRANSFER_WAIT_MS / 1000);
        return AQ_EXIT_FAILURE;
    }
    /* An id asked (not 0, any; not HOST:PORT), and another replica won
       the election the transfer started. */
    char *end = NULL;
    unsigned long long asked = arguments == 1 ? strtoull(argv[optind + 1], &end, 10) : 0;
    if (asked && end && !*end && asked != strtoull(now, NULL, 10)) {
        fprintf(stderr, "asyncq replica: replica %s, asked, did not take the lead (has it "
                        "answered the leader lately? asyncq replica list, silent_ms): replica %s "
                        "leads now\n", argv[optind + 1], now);
        return AQ_EXIT_FAILURE;
    }
    printf("replica %s leads now\n", now);
    return AQ_EXIT_OK;
}
