/*  Replicas (PROTOCOL.md 4.16): three asyncq-broker processes with
    --peers on loopback are one shard. They elect a leader; a follower
    answers HELLO with 421 and the leader's address; programs given every
    replica find the leader. The leader SIGKILLed while producers and
    consumers run is replaced within 2 s (a client asking a follower at
    once passes over the leader it still names), every confirmed put is
    delivered and acked, the join is exact, and the killed replica, started
    again, comes back as a follower; a leader paused is replaced and,
    resumed, steps down; a replica far behind comes back from a snapshot;
    a replica whose directory was wiped comes back removed, added under a
    new id and started with --join, and is made a voter; one started again
    under its old id votes only once it holds what the group had
    committed; one lagging since the group's first start and one wiped
    elect no one while the third, which holds the items, is down; a group
    whose majority is lost for good goes on as its third replica alone
    (--recover-alone), to which a new replica is added, and which the
    replicas left out cannot unseat; the lead is handed over on request;
    three hosts of `--shards 2 --peers` make a group per shard, each led
    from a host of its own, that survive a host lost whole and go on from
    one host alone; a data directory is one replica's or one broker's. At the end every replica's state (written on SIGUSR1) is the
    same, item by item. The killed and paused leaders and the snapshot run
    again with CURVE keys, through the replicas' authenticated, encrypted
    connections. */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>

#include "asyncq/program.h"
#include "asyncq/security.h"
#include "harness.h"

#define REPLICAS 3
#define WORKERS 4

typedef struct replica_group {
    harness_dir_t dir;
    aq_process_t replicas[REPLICAS];
    char address[REPLICAS][64];
    int metrics[REPLICAS];   /* each replica's HTTP port (--metrics) */
    char metrics_bind[REPLICAS][64];
    char peers[REPLICAS * 64];
    char all[REPLICAS * 64]; /* every replica, for the programs */
    char data[REPLICAS][160];
    char dump[REPLICAS][160];
    char log[REPLICAS][160];
    aq_process_t workers[WORKERS];
    const char *snapshot; /* --replica-snapshot, or NULL */
    const char *heartbeat; /* --heartbeat-ms, or NULL */
    int keyed;            /* CURVE keys: the replicas' connections authenticated, encrypted */
    unsigned unlisted;    /* replicas (bit i) out of the group, which WELCOME does not list */
    char secret[300], clients[300];
    /* A shard of a service (--shard, --service; PROTOCOL.md 4.16), with
       the group of the other shard, torn down with this one. */
    int shard;
    char service[2 * REPLICAS * 64];
    struct replica_group *other;
    /*  A replica started with another --peers and --node-id than its
        place in `peers` (set: the first not empty). */
    char peers_as[REPLICAS][REPLICAS * 64];
    char node_as[REPLICAS][16];
} group_t;

/*  The replicas' ports, four each from `base`, and the lists made of them. */
static void s_place(group_t *g, int base)
{
    g->peers[0] = '\0';
    for (int i = 0; i < REPLICAS; i++) {
        snprintf(g->address[i], sizeof g->address[i], "127.0.0.1:%d", base + 4 * i);
        g->metrics[i] = base + 4 * i + 3;
        snprintf(g->metrics_bind[i], sizeof g->metrics_bind[i], "127.0.0.1:%d", g->metrics[i]);
        size_t used = strlen(g->peers);
        snprintf(g->peers + used, sizeof g->peers - used, "%s%s", i ? "," : "", g->address[i]);
    }
    snprintf(g->all, sizeof g->all, "%s", g->peers);
}

static int s_setup(void **state)
{
    group_t *g = calloc(1, sizeof *g);
    assert_non_null(g);
    void *dir = &g->dir;
    harness_dir_setup(&dir);
    memcpy(&g->dir, dir, sizeof g->dir);
    free(dir);
    s_place(g, harness_free_ports(4 * REPLICAS)); /* PULL, ROUTER, the group's, HTTP */
    for (int i = 0; i < REPLICAS; i++) {
        snprintf(g->data[i], sizeof g->data[i], "%s/data-%d", g->dir.root, i + 1);
        snprintf(g->dump[i], sizeof g->dump[i], "%s/state-%d.txt", g->dir.root, i + 1);
        snprintf(g->log[i], sizeof g->log[i], "%s/log-%d.txt", g->dir.root, i + 1);
    }
    *state = g;
    return 0;
}

/*  The same, with keys: the broker's (every replica's), and a client's
    that this process and the programs it starts use. */
static int s_setup_keyed(void **state)
{
    s_setup(state);
    group_t *g = *state;
    char keys[250], client[300], server[300];
    assert_true(strlen(g->dir.root) < 200);
    snprintf(keys, sizeof keys, "%s/keys", g->dir.root);
    snprintf(g->clients, sizeof g->clients, "%s/clients", g->dir.root);
    assert_int_equal(aq_keygen(keys, "broker", "admin", NULL), 0);
    assert_int_equal(aq_keygen(keys, "client", "produce,consume,admin", NULL), 0);
    /* The client's public certificate, in the directory the replicas read. */
    char from[300], to[sizeof g->clients + 16];
    snprintf(from, sizeof from, "%s/client.key", keys);
    snprintf(to, sizeof to, "%s/client.key", g->clients);
    assert_int_equal(mkdir(g->clients, 0700), 0);
    char *certificate = harness_read_file(from);
    assert_non_null(certificate);
    FILE *file = fopen(to, "w");
    assert_non_null(file);
    assert_int_equal(fputs(certificate, file) >= 0, 1);
    assert_int_equal(fclose(file), 0);
    free(certificate);
    snprintf(g->secret, sizeof g->secret, "%s/broker.key_secret", keys);
    snprintf(client, sizeof client, "%s/client.key_secret", keys);
    snprintf(server, sizeof server, "%s/broker.key", keys);
    assert_int_equal(aq_security_set(client, server), AQ_OK);
    setenv("ASYNCQ_CURVE_SECRET", client, 1);
    setenv("ASYNCQ_SERVER_KEY", server, 1);
    g->keyed = 1;
    return 0;
}

static int s_teardown(void **state)
{
    group_t *g = *state;
    if (g->other) {
        void *other = g->other;
        s_teardown(&other);
    }
    if (g->keyed) {
        aq_security_set(NULL, NULL);
        unsetenv("ASYNCQ_CURVE_SECRET");
        unsetenv("ASYNCQ_SERVER_KEY");
    }
    for (int i = 0; i < WORKERS; i++)
        aq_process_stop(&g->workers[i], SIGTERM, 5000);
    for (int i = 0; i < REPLICAS; i++) {
        aq_process_stop(&g->replicas[i], SIGKILL, 5000);
        char command[512]; /* a data directory on a disk of its own (the full disk) */
        snprintf(command, sizeof command, "mountpoint -q '%s' && umount '%s'", g->data[i],
                 g->data[i]);
        (void) !system(command);
    }
    harness_remove_tree(g->dir.root);
    free(g);
    return 0;
}

static int s_hello(const group_t *g, int i, char *leader, size_t size, int wait_ms);

/*  Starts replica i (from 0) and waits for its READY, then for an answer
    from its loop (which installs its signal handlers: a SIGUSR1 before
    would end it). `join`: the id `asyncq replica add` gave it, to join the
    group that runs (--join); NULL: one of the first group (--peers). */
static void s_start_as(group_t *g, int i, const char *join)
{
    char path[4096], node[16];
    assert_int_equal(aq_program_path("asyncq-broker", path, sizeof path), 0);
    snprintf(node, sizeof node, "%d", i + 1);
    const char *peers = g->peers_as[i][0] ? g->peers_as[i] : g->peers;
    if (g->peers_as[i][0])
        snprintf(node, sizeof node, "%s", g->node_as[i]);
    char *argv[] = {path, "--bind", g->address[i], join ? "--join" : "--peers",
                    join ? g->address[i] : (char *) peers, "--node-id",
                    join ? (char *) join : node,
                    "--data-dir", g->data[i], "--state-dump", g->dump[i],
                    "--metrics", g->metrics_bind[i], NULL, NULL, NULL, NULL, NULL, NULL, NULL,
                    NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL};
    size_t argc = 13;
    if (g->keyed) {
        argv[argc++] = "--curve-secret";
        argv[argc++] = g->secret;
        argv[argc++] = "--clients";
        argv[argc++] = g->clients;
    }
    if (g->snapshot) {
        argv[argc++] = "--replica-snapshot";
        argv[argc++] = (char *) g->snapshot;
    }
    if (g->heartbeat) {
        argv[argc++] = "--heartbeat-ms";
        argv[argc++] = (char *) g->heartbeat;
    }
    char shard[16];
    if (g->service[0]) {
        snprintf(shard, sizeof shard, "%d", g->shard);
        argv[argc++] = "--shard";
        argv[argc++] = shard;
        argv[argc++] = "--service";
        argv[argc++] = g->service;
        argv[argc++] = "--lead-balance-ms"; /* each lead stays where its election put it */
        argv[argc++] = "0";
    }
    assert_int_equal(aq_process_spawn_logged(&g->replicas[i], argv, 1, 1, g->log[i]), 0);
    char ready[256];
    if (!aq_process_expect(&g->replicas[i], "READY ", ready, sizeof ready, HARNESS_DEADLINE_MS))
        fail_msg("replica %d did not print READY", i + 1);
    char leader[64];
    if (s_hello(g, i, leader, sizeof leader, HARNESS_DEADLINE_MS) < 0)
        fail_msg("replica %d does not answer HELLO", i + 1);
}

static void s_start(group_t *g, int i)
{
    s_start_as(g, i, NULL);
}

/*  Says HELLO to replica i on a raw DEALER: 1 if it WELCOMEs (it leads),
    0 if it answers 421 (subject: the leader it names, into `leader`), -1
    if it does not answer within `wait_ms`. */
static int s_hello_at(const char *address, const char *const *listed, int count, char *leader,
                      size_t size, int wait_ms);

static int s_hello(const group_t *g, int i, char *leader, size_t size, int wait_ms)
{
    const char *listed[REPLICAS];
    int count = 0;
    for (int k = 0; k < REPLICAS; k++)
        if (!(g->unlisted & (1u << k)))
            listed[count++] = g->address[k];
    return s_hello_at(g->address[i], listed, count, leader, size, wait_ms);
}

/*  s_hello at an address, whose WELCOME must list each of `listed`. */
static int s_hello_at(const char *address, const char *const *listed, int count, char *leader,
                      size_t size, int wait_ms)
{
    harness_t h = {0};
    snprintf(h.address, sizeof h.address, "%s", address);
    zsock_t *dealer = harness_raw(&h, ZMQ_DEALER);
    zsock_set_rcvtimeo(dealer, wait_ms);
    aq_msg_t hello = {.cmd = AQ_CMD_HELLO, .tag = aq_bytes_str("h1"),
                      .client = aq_bytes_str("probe"), .with = aq_bytes_str("service")};
    harness_send_msg(dealer, &hello);
    aq_inbox_t *inbox = aq_inbox_new(AQ_REPORT_FRAMES_MAX);
    int result = -1;
    while (aq_inbox_recv(inbox, zsock_resolve(dealer), 0, 0) == AQ_OK) {
        aq_msg_t msg;
        assert_int_equal(aq_inbox_decode(inbox, &msg), AQ_OK);
        if (msg.cmd == AQ_CMD_HEARTBEAT)
            continue;
        if (msg.cmd == AQ_CMD_WELCOME) {
            char service[256];
            snprintf(service, sizeof service, "%.*s", (int) msg.service.size,
                     (const char *) msg.service.data);
            /* Every replica, in the group's order (which membership
               changes may have changed). */
            for (int k = 0; k < count; k++) {
                const char *at = strstr(service, "replicas=");
                if (!at || !strstr(at, listed[k]))
                    fail_msg("the leader's WELCOME says '%s': no %s", service, listed[k]);
            }
            assert_int_equal(msg.persistence.size, strlen("replicated"));
            assert_memory_equal(msg.persistence.data, "replicated", msg.persistence.size);
            result = 1;
        }
        else {
            assert_int_equal(msg.cmd, AQ_CMD_ERROR);
            assert_int_equal(msg.code, AQ_NOT_LEADER);
            snprintf(leader, size, "%.*s", (int) msg.subject.size, (const char *) msg.subject.data);
            result = 0;
        }
        break;
    }
    aq_inbox_destroy(&inbox);
    zsock_destroy(&dealer);
    return result;
}

/*  `count` items put to `queue` through the group by asyncq-producer,
    pausing up to `max_sleep` seconds between puts: every one confirmed. */
static void s_produce(group_t *g, const char *queue, const char *count, const char *max_sleep)
{
    char *producer[] = {"asyncq-producer", "--broker", g->all, "--queue", (char *) queue,
                        "--count", (char *) count, "--max-sleep", (char *) max_sleep, "--quiet",
                        NULL};
    harness_spawn(&g->workers[0], producer);
    assert_int_equal(harness_wait_exit(&g->workers[0]), 0);
}

/*  The replica that leads (from 0), once one does and every running
    follower names it; fails the test after `within_ms`. */
static int s_leader(const group_t *g, int64_t within_ms)
{
    int64_t deadline = zclock_mono() + within_ms;
    while (zclock_mono() < deadline) {
        int leader = -1, named = 1;
        for (int i = 0; i < REPLICAS; i++) {
            if (!g->replicas[i].pid)
                continue;
            char name[64] = "";
            int rc = s_hello(g, i, name, sizeof name, 200);
            if (rc == 1)
                leader = i;
            else if (rc == 0 && !name[0])
                named = 0;
        }
        if (leader >= 0 && named)
            return leader;
        zclock_sleep(20); /* an election is under way: ask again */
    }
    for (int i = 0; i < REPLICAS; i++) { /* what each said, for the failure */
        char name[64] = "";
        int rc = g->replicas[i].pid ? s_hello(g, i, name, sizeof name, 200) : -2;
        fprintf(stderr, "--- replica %d: %s%s\n", i + 1,
                rc == 1 ? "leads" : rc == 0 ? "names the leader " : rc == -1 ? "no answer"
                                                                           : "not running",
                rc == 0 ? (name[0] ? name : "(none)") : "");
        char *log = harness_read_file(g->log[i]);
        size_t size = log ? strlen(log) : 0;
        fprintf(stderr, "--- replica %d's log (its end):\n%s\n", i + 1,
                log ? log + (size > 1500 ? size - 1500 : 0) : "(none)");
        free(log);
    }
    fail_msg("no replica led within %lld ms", (long long) within_ms);
    return -1;
}

/*  Every replica started: the one that leads. */
static int s_start_all(group_t *g)
{
    for (int i = 0; i < REPLICAS; i++)
        s_start(g, i);
    return s_leader(g, 10000);
}

/*  A harness_t that asks the group through replica i: a session follows
    the leader it names (4.16). */
static harness_t s_group(const group_t *g, int i)
{
    harness_t h = {0};
    snprintf(h.address, sizeof h.address, "%s", g->address[i]);
    return h;
}

/*  Replica i's state, written on SIGUSR1 (malloc'd). */
static char *s_dump(group_t *g, int i)
{
    if (unlink(g->dump[i]) && errno != ENOENT)
        fail_msg("cannot remove %s: %s", g->dump[i], strerror(errno));
    int watch = inotify_init1(IN_CLOEXEC | IN_NONBLOCK);
    assert_true(watch >= 0);
    assert_true(inotify_add_watch(watch, g->dir.root, IN_MOVED_TO | IN_CREATE) >= 0);
    assert_int_equal(kill(g->replicas[i].pid, SIGUSR1), 0);
    int64_t deadline = zclock_mono() + HARNESS_DEADLINE_MS;
    while (access(g->dump[i], F_OK) != 0) {
        int64_t left = deadline - zclock_mono();
        if (left <= 0) {
            char *log = harness_read_file(g->log[i]);
            fprintf(stderr, "--- replica %d's log:\n%s\n", i + 1, log ? log : "(none)");
            fail_msg("no state dump at %s after SIGUSR1 (replica %d's log above)", g->dump[i],
                     i + 1);
        }
        struct pollfd item = {watch, POLLIN, 0};
        if (poll(&item, 1, left < 100 ? (int) left : 100) > 0) {
            char events[4096];
            while (read(watch, events, sizeof events) > 0)
                ;
        }
    }
    close(watch);
    return harness_read_file(g->dump[i]);
}

/*  Every running replica's state is the leader's, item by item (the
    followers apply what the group committed: they may be a heartbeat
    behind). */
static void s_assert_same_state(group_t *g, int leader)
{
    /* A snapshot lost on the way to a replica is sent again after 10 s. */
    int64_t deadline = zclock_mono() + 2 * HARNESS_DEADLINE_MS;
    for (;;) {
        char *expected = s_dump(g, leader);
        int same = 1;
        for (int i = 0; i < REPLICAS && same; i++) {
            if (i == leader || !g->replicas[i].pid)
                continue;
            char *text = s_dump(g, i);
            same = strcmp(text, expected) == 0;
            if (!same && zclock_mono() >= deadline)
                fail_msg("replica %d's state is not the leader's (replica %d):\n%s\n-----\n%s",
                         i + 1, leader + 1, text, expected);
            free(text);
        }
        assert_true(strlen(expected) > 0);
        free(expected);
        if (same)
            return;
        zclock_sleep(100); /* a heartbeat brings the commit index */
    }
}

/*  GET `path` from replica i's HTTP port: the status; the body in `body`. */
static int s_http_get(const group_t *g, int i, const char *path, char *body, size_t size)
{
    char request[256];
    int length = snprintf(request, sizeof request,
                          "GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", path);
    return harness_http(g->metrics[i], request, (size_t) length, body, size);
}

/*  Replica i's place in the group, from its /stats.json (a new reference). */
static json_t *s_replica_stats(const group_t *g, int i)
{
    static char body[1 << 16];
    assert_int_equal(s_http_get(g, i, "/stats.json", body, sizeof body), 200);
    json_t *stats = json_loads(body, 0, NULL);
    assert_non_null(stats);
    json_t *replica = json_object_get(json_object_get(stats, "broker"), "replica");
    assert_true(json_is_object(replica));
    json_incref(replica);
    json_decref(stats);
    return replica;
}

/*  A counter of `queue` on replica i alone, from its /stats.json. */
static json_int_t s_queue_total(const group_t *g, int i, const char *queue, const char *key)
{
    static char body[1 << 16];
    assert_int_equal(s_http_get(g, i, "/stats.json", body, sizeof body), 200);
    json_t *stats = json_loads(body, 0, NULL);
    assert_non_null(stats);
    json_int_t value = -1;
    size_t index;
    json_t *entry;
    json_array_foreach(json_object_get(stats, "queues"), index, entry)
        if (strcmp(json_string_value(json_object_get(entry, "name")), queue) == 0)
            value = json_integer_value(json_object_get(entry, key));
    json_decref(stats);
    return value;
}

static void test_followers_name_the_leader_and_programs_find_it(void **state)
{
    group_t *g = *state;
    int leader = s_start_all(g);
    for (int i = 0; i < REPLICAS; i++) {
        if (i == leader)
            continue;
        char name[64];
        assert_int_equal(s_hello(g, i, name, sizeof name, 2000), 0);
        assert_string_equal(name, g->address[leader]);
    }
    /* A program given one follower finds the leader through it. */
    int follower = (leader + 1) % REPLICAS;
    char *put[] = {"asyncq", "put", "--broker", g->address[follower], "--queue", "q", "one",
                   "two", NULL};
    char out[512];
    assert_int_equal(harness_run(put, out, sizeof out), 0);
    harness_t h = s_group(g, follower);
    assert_int_equal(harness_stat(&h, "q", "queued"), 2);
    harness_assert_serving(&h, "ok");
    s_assert_same_state(g, leader);

    /* Given every replica, one of them stopped (its host cut off, say):
       the program does not wait for it the whole connect time (5 s), as
       the others answer. */
    int silent = (leader + 2) % REPLICAS;
    assert_int_equal(kill(g->replicas[silent].pid, SIGSTOP), 0);
    char *three[] = {"asyncq", "put", "--broker", g->all, "--queue", "q", "three", NULL};
    int64_t started = zclock_mono();
    int put_rc = harness_run(three, out, sizeof out);
    int64_t took_ms = zclock_mono() - started;
    assert_int_equal(kill(g->replicas[silent].pid, SIGCONT), 0);
    assert_int_equal(put_rc, 0);
    if (took_ms >= 4000)
        fail_msg("asyncq put through every replica, one stopped, took %lld ms",
                 (long long) took_ms);
    harness_wait_stat(&h, "q", "queued", 3);
    s_assert_same_state(g, leader);

    /* What operators see on each replica's HTTP port. */
    json_t *lead = s_replica_stats(g, leader);
    assert_string_equal(json_string_value(json_object_get(lead, "role")), "leader");
    assert_int_equal(json_integer_value(json_object_get(lead, "node")), leader + 1);
    json_t *replicas = json_object_get(lead, "replicas");
    assert_int_equal(json_array_size(replicas), REPLICAS);
    for (int i = 0; i < REPLICAS; i++)
        assert_true(json_is_integer(json_object_get(json_array_get(replicas, (size_t) i), "lag")));
    json_decref(lead);
    json_t *follows = s_replica_stats(g, follower);
    assert_string_equal(json_string_value(json_object_get(follows, "role")), "follower");
    assert_int_equal(json_integer_value(json_object_get(follows, "leader")), leader + 1);
    assert_true(json_integer_value(json_object_get(follows, "commit_index")) > 0);
    json_decref(follows);
    static char body[1 << 16];
    assert_int_equal(s_http_get(g, leader, "/metrics", body, sizeof body), 200);
    char sample[96];
    snprintf(sample, sizeof sample, "asyncq_replica_info{node=\"%d\",role=\"leader\"} 1",
             leader + 1);
    assert_non_null(strstr(body, sample));
    assert_non_null(strstr(body, "asyncq_info{persistence=\"replicated\""));
    /* An action on a follower's port is refused, naming the leader's. */
    char request[256];
    int length = snprintf(request, sizeof request,
                          "POST /api/purge?queue=q HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                          "Content-Length: 0\r\n\r\n");
    assert_int_equal(harness_http(g->metrics[follower], request, (size_t) length, body,
                                  sizeof body), 421);

    /* Something that is not a replica, on a follower's replication port
       (PORT+2): closed before the group reads it, and counted. */
    static const char garbage[] = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
    assert_int_equal(harness_http(g->metrics[follower] - 1, garbage, sizeof garbage - 1, body,
                                  sizeof body), 0);
    int64_t deadline = zclock_mono() + HARNESS_DEADLINE_MS;
    json_int_t refused = 0;
    for (;;) {
        json_t *stats = s_replica_stats(g, follower);
        json_t *in = json_object_get(json_object_get(stats, "connections_refused"), "in");
        refused = json_integer_value(json_object_get(in, "protocol"));
        assert_int_equal(json_integer_value(json_object_get(in, "key")), 0);
        json_decref(stats);
        if (refused || zclock_mono() >= deadline)
            break;
        zclock_sleep(20); /* the replica reads the preamble on its next turn */
    }
    assert_int_equal(refused, 1);
    assert_int_equal(s_http_get(g, follower, "/metrics", body, sizeof body), 200);
    assert_non_null(strstr(body, "asyncq_replica_connections_refused_total{direction=\"in\","
                                 "cause=\"protocol\"} 1"));
    assert_non_null(strstr(body, "asyncq_replica_connections_refused_total{direction=\"out\","
                                 "cause=\"key\"} 0"));
    char *again[] = {"asyncq", "put", "--broker", g->address[follower], "--queue", "q", "four",
                     NULL};
    assert_int_equal(harness_run(again, out, sizeof out), 0);
    harness_wait_stat(&h, "q", "queued", 4);
    s_assert_same_state(g, leader);
}

/*  Two producers of 3000 puts each to queue `m`, through every address,
    and two consumers. Each put is sent as it is made (a pause after
    each): their PUSH fills up towards a leader killed, which never comes
    back while they run. */
static void s_start_workers(group_t *g)
{
    for (int i = 0; i < 2; i++) {
        char *producer[] = {"asyncq-producer", "--broker", g->all, "--queue", "m", "--count",
                            "3000", "--max-sleep", "0.002", "--quiet", NULL};
        harness_spawn(&g->workers[i], producer);
        char *consumer[] = {"asyncq-consumer", "--broker", g->all, "--queue", "m",
                            "--max-sleep", "0", "--quiet", "--credit", "8", NULL};
        harness_spawn(&g->workers[2 + i], consumer);
    }
}

/*  The group started, its producers and consumers running: the leader,
    once it has taken 300 puts. */
static int s_start_busy(group_t *g)
{
    int leader = s_start_all(g);
    s_start_workers(g);
    harness_t h = {0};
    snprintf(h.address, sizeof h.address, "%s", g->address[leader]);
    harness_wait_stat_at_least(&h, "m", "puts", 300);
    return leader;
}

/*  Replica `back` started again (a follower), the producers done: the
    join is exact, every put enqueued once and acked, and every replica
    holds the same state. */
static void s_assert_every_put_done(group_t *g, int back)
{
    for (int i = 0; i < 2; i++)
        assert_int_equal(harness_wait_exit(&g->workers[i]), 0); /* every put confirmed */
    s_start(g, back);
    harness_t group = s_group(g, back); /* a follower now: it names the leader */
    char out[512];
    char *join[] = {"asyncq", "join", "--broker", g->all, "--queue", "m", "--timeout", "20",
                    NULL};
    assert_int_equal(harness_run(join, out, sizeof out), 0);
    assert_int_equal(harness_stat(&group, "m", "outstanding"), 0);
    /* Every put once (the group's log has each producer's seqs: a put sent
       again to the new leader is not enqueued twice), every one acked. */
    assert_int_equal(harness_stat(&group, "m", "puts"), 6000);
    assert_int_equal(harness_stat(&group, "m", "acked"), 6000);
    assert_int_equal(harness_stat(&group, "m", "dead"), 0);
    harness_assert_serving(&group, "ok");
    s_assert_same_state(g, s_leader(g, 10000));
}

static void test_a_leader_killed_mid_run_loses_no_confirmed_put(void **state)
{
    group_t *g = *state;
    int leader = s_start_busy(g);
    int64_t killed = zclock_mono();
    aq_process_stop(&g->replicas[leader], SIGKILL, 5000);
    /* Asked at once through a follower, which still names the leader
       gone: the client passes it over and finds the new one (asked while
       the election is timed). */
    char *stats[] = {"asyncq", "stats", "--broker", g->address[(leader + 1) % REPLICAS],
                     "--queue", "m", NULL};
    aq_process_t asking = {0};
    harness_spawn(&asking, stats);
    int next = s_leader(g, 10000);
    int64_t took = zclock_mono() - killed;
    if (harness_wait_exit(&asking) != 0)
        fail_msg("asyncq stats through a follower right after the leader was killed failed");
    print_message("replica %d led %lld ms after replica %d was killed\n", next + 1,
                  (long long) took, leader + 1);
    assert_true(next != leader);
    assert_true(took < 2000);
    s_assert_every_put_done(g, leader);
}

static void s_wait_logged(const group_t *g, int i, const char *text);

/*  A leader asked to stop (SIGTERM, as docker stop and systemd ask)
    while producers and consumers run settles (the acks of what it has in
    flight), hands its lead to a voter and exits 0 once that one leads:
    the group goes on without an election's time-out, loses nothing, and
    delivers nothing twice. */
static void test_a_leader_asked_to_stop_hands_its_lead_over(void **state)
{
    group_t *g = *state;
    int leader = s_start_busy(g);
    int64_t asked = zclock_mono();
    assert_int_equal(kill(g->replicas[leader].pid, SIGTERM), 0);
    assert_int_equal(harness_wait_exit(&g->replicas[leader]), 0);
    int next = s_leader(g, 10000);
    print_message("replica %d led %lld ms after replica %d was asked to stop\n", next + 1,
                  (long long) (zclock_mono() - asked), leader + 1);
    char handed[96];
    snprintf(handed, sizeof handed, "replica %d hands the lead to replica %d before it stops",
             leader + 1, next + 1);
    s_wait_logged(g, leader, handed);
    s_wait_logged(g, leader, "; stopping, as asked"); /* it stepped down: not at its deadline */
    /* Taken at the first ask: the voter told to lead while it still wrote
       the last entries took the lead once they were written (libraft
       drops the request then, and the leader asks again only after an
       election time-out). */
    char *log = harness_read_file(g->log[leader]);
    if (strstr(log, "(asked again)"))
        fail_msg("replica %d had to ask again:\n%s", leader + 1, log);
    free(log);
    /* It delivered nothing more once asked, and the acks of what was in
       flight came in before it handed its lead over: the next leader
       delivers none of those again. */
    s_assert_every_put_done(g, leader);
    harness_t group = s_group(g, leader);
    assert_int_equal(harness_stat(&group, "m", "redelivered"), 0);

    /* A follower asked to stop stops at once. */
    int follower = REPLICAS - next - leader; /* neither: it never led */
    aq_process_stop(&g->replicas[follower], SIGTERM, HARNESS_DEADLINE_MS);
    assert_int_equal(g->replicas[follower].exit_code, 0);
    log = harness_read_file(g->log[follower]);
    assert_null(strstr(log, "before it stops"));
    free(log);
}

/*  Clients of the C library that wait on a group's leader go to the next
    one as soon as the connection to the leader that stopped (`signal`)
    closes, not at their next heartbeat: with heartbeats a minute apart
    (longer than any wait here), a consumer waiting for an item and a join
    waiting for one to be acked both go on with the next leader. */
static void s_waiting_clients_follow(group_t *g, int signal)
{
    g->heartbeat = "60000";
    int leader = s_start_all(g);
    s_produce(g, "j", "1", "0"); /* what the join waits for */
    char *consumer[] = {"asyncq-consumer", "--broker", g->all, "--queue", "w", "--max-sleep",
                        "0", "--quiet", "--count", "1", NULL};
    harness_spawn(&g->workers[1], consumer);
    char *join[] = {"asyncq", "join", "--broker", g->all, "--queue", "j", "--timeout", "50",
                    NULL};
    harness_spawn(&g->workers[2], join);
    harness_t h = s_group(g, leader);
    harness_wait_stat_at_least(&h, "w", "consumers", 1);
    harness_wait_stat_at_least(&h, "j", "joiners", 1);
    if (signal == SIGTERM) {
        assert_int_equal(kill(g->replicas[leader].pid, SIGTERM), 0);
        assert_int_equal(harness_wait_exit(&g->replicas[leader]), 0);
    }
    else
        aq_process_stop(&g->replicas[leader], signal, 5000);
    int next = s_leader(g, 10000);
    assert_true(next != leader);
    s_produce(g, "w", "1", "0");
    assert_int_equal(harness_wait_exit(&g->workers[1]), 0); /* it got the item */
    char *take[] = {"asyncq-consumer", "--broker", g->all, "--queue", "j", "--max-sleep", "0",
                    "--quiet", "--count", "1", NULL};
    harness_spawn(&g->workers[3], take);
    assert_int_equal(harness_wait_exit(&g->workers[3]), 0);
    assert_int_equal(harness_wait_exit(&g->workers[2]), 0); /* the join was answered */
    harness_t group = s_group(g, next);
    assert_int_equal(harness_stat(&group, "j", "outstanding"), 0);
    harness_assert_serving(&group, "ok");
}

static void test_waiting_clients_follow_a_stopped_leader_at_once(void **state)
{
    s_waiting_clients_follow(*state, SIGTERM);
}

static void test_waiting_clients_follow_a_killed_leader(void **state)
{
    s_waiting_clients_follow(*state, SIGKILL);
}

/*  `asyncq put` waits for its confirm as long as the group answers, but
    not for ever when the group loses its majority as the put is made:
    with both followers stopped, it ends with exit 3 and says so (as a put
    begun once no replica leads does). Once they run again, the group
    takes puts. */
static void test_a_put_made_as_the_majority_is_lost_ends(void **state)
{
    group_t *g = *state;
    int leader = s_start_all(g);
    int one = (leader + 1) % REPLICAS, two = (leader + 2) % REPLICAS;
    assert_int_equal(kill(g->replicas[one].pid, SIGSTOP), 0);
    assert_int_equal(kill(g->replicas[two].pid, SIGSTOP), 0);
    char *put[] = {"asyncq", "put", "--broker", g->all, "--queue", "p", "x", NULL};
    char out[512], err[1024];
    int rc = harness_run_err(put, out, sizeof out, err, sizeof err);
    assert_int_equal(kill(g->replicas[one].pid, SIGCONT), 0);
    assert_int_equal(kill(g->replicas[two].pid, SIGCONT), 0);
    if (rc != 3 || !strstr(err, "answered"))
        fail_msg("asyncq put as the majority was lost: exit %d: %s%s", rc, out, err);
    s_leader(g, 10000);
    char *again[] = {"asyncq", "put", "--broker", g->all, "--queue", "p", "y", NULL};
    assert_int_equal(harness_run(again, out, sizeof out), 0);
    harness_t h = s_group(g, leader);
    harness_assert_serving(&h, "ok");
}

/*  A leader paused (SIGSTOP) for 4 s is replaced; resumed, it finds a
    newer term, steps down and starts again from the group's log as a
    follower: nothing it held alone is confirmed, the producers finish
    with every put confirmed once, and every state is the same. A
    follower paused as long catches up. Neither takes its time away for a
    disk that cannot write (its log said so, of a follower). */
static void test_a_paused_leader_is_replaced_and_steps_down(void **state)
{
    group_t *g = *state;
    int leader = s_start_all(g);
    char *producer[] = {"asyncq-producer", "--broker", g->all, "--queue", "s", "--count",
                        "1000", "--max-sleep", "0.002", "--quiet", NULL};
    harness_spawn(&g->workers[0], producer);
    char *consumer[] = {"asyncq-consumer", "--broker", g->all, "--queue", "s", "--max-sleep",
                        "0", "--quiet", "--credit", "4", NULL};
    harness_spawn(&g->workers[1], consumer);
    harness_t h = s_group(g, leader);
    harness_wait_stat_at_least(&h, "s", "puts", 200);
    assert_int_equal(kill(g->replicas[leader].pid, SIGSTOP), 0);
    int64_t stopped = zclock_mono();
    pid_t paused = g->replicas[leader].pid;
    g->replicas[leader].pid = 0; /* s_leader asks the others */
    int next = s_leader(g, 10000);
    print_message("replica %d led %lld ms after replica %d was paused\n", next + 1,
                  (long long) (zclock_mono() - stopped), leader + 1);
    assert_true(next != leader);
    /* Paused past the 3 s after which entries not on disk mean a disk that
       cannot write: the time it was stopped is not its disk's. */
    int64_t paused_ms = zclock_mono() - stopped;
    if (paused_ms < 4000)
        zclock_sleep((int) (4000 - paused_ms)); /* the fault's length, not a wait for an event */
    g->replicas[leader].pid = paused;
    assert_int_equal(kill(paused, SIGCONT), 0);
    /* It steps down, and starts again (the same process) as a follower. */
    char line[256];
    if (!aq_process_expect(&g->replicas[leader], "READY ", line, sizeof line,
                           HARNESS_DEADLINE_MS))
        fail_msg("the paused leader did not start again after it was resumed");
    char *log = harness_read_file(g->log[leader]);
    assert_non_null(strstr(log, "; starting again from the group's log"));
    if (strstr(log, "cannot write its log"))
        fail_msg("the paused leader blamed its disk:\n%s", log);
    free(log);
    assert_int_equal(harness_wait_exit(&g->workers[0]), 0);
    char *join[] = {"asyncq", "join", "--broker", g->all, "--queue", "s", "--timeout", "20",
                    NULL};
    char out[512];
    assert_int_equal(harness_run(join, out, sizeof out), 0);
    harness_t group = s_group(g, leader);
    assert_int_equal(harness_stat(&group, "s", "puts"), 1000);
    assert_int_equal(harness_stat(&group, "s", "acked"), 1000);
    harness_assert_serving(&group, "ok");

    /* A follower paused as long, the group going on meanwhile: once
       resumed it writes what it missed, and blames no disk either. */
    int now = s_leader(g, 10000), follower = (now + 1) % REPLICAS;
    assert_int_equal(kill(g->replicas[follower].pid, SIGSTOP), 0);
    stopped = zclock_mono();
    s_produce(g, "s", "300", "0");
    paused_ms = zclock_mono() - stopped;
    if (paused_ms < 4000)
        zclock_sleep((int) (4000 - paused_ms)); /* the fault's length */
    assert_int_equal(kill(g->replicas[follower].pid, SIGCONT), 0);
    s_assert_same_state(g, now);
    log = harness_read_file(g->log[follower]);
    if (strstr(log, "cannot write its log"))
        fail_msg("the paused follower blamed its disk:\n%s", log);
    free(log);
}

/*  A follower stopped while the group goes on past the log it keeps (a
    snapshot every 16 entries here) comes back from a snapshot the leader
    sends, then follows the log: its state is the leader's. */
static void test_a_replica_far_behind_catches_up_from_a_snapshot(void **state)
{
    group_t *g = *state;
    g->snapshot = "16";
    int leader = s_start_all(g);
    int behind = (leader + 1) % REPLICAS;
    aq_process_stop(&g->replicas[behind], SIGKILL, 5000);
    /* A put every few milliseconds: each its own pass, its own entry. */
    s_produce(g, "w", "300", "0.006");
    s_start(g, behind);
    s_assert_same_state(g, leader);
    char *log = harness_read_file(g->log[behind]);
    assert_non_null(strstr(log, "state restored from a snapshot of the group"));
    free(log);
    harness_t h = s_group(g, behind);
    assert_int_equal(harness_stat(&h, "w", "queued"), 300);
    harness_assert_serving(&h, "ok");
}

/*  asyncq replica ACTION... through the group: its exit code; its
    stdout in `out`, its stderr in `err`. */
static int s_replica(const group_t *g, const char *verb, const char *argument, char *out,
                     size_t size, char *err, size_t err_size)
{
    char *argv[] = {"asyncq", "replica", (char *) verb, "--broker", (char *) g->all,
                    (char *) argument, NULL};
    return harness_run_err(argv, out, size, err, err_size);
}

/*  Waits until `asyncq replica list` has a line with each of `words`. */
static void s_wait_listed(const group_t *g, const char *first, const char *second)
{
    int64_t deadline = zclock_mono() + 3 * HARNESS_DEADLINE_MS;
    char out[2048], err[1024];
    for (;;) {
        int rc = s_replica(g, "list", NULL, out, sizeof out, err, sizeof err);
        for (char *line = strtok(rc == 0 ? out : NULL, "\n"); line; line = strtok(NULL, "\n"))
            if (strstr(line, first) && strstr(line, second))
                return;
        if (zclock_mono() >= deadline)
            fail_msg("asyncq replica list never showed '%s' with '%s': %s%s", first, second,
                     out, err);
        zclock_sleep(100);
    }
}

/*  A replica whose data directory is lost rejoins as a new one: removed
    from the group, added again at its address (a new id), and started with
    --join on an empty directory. The leader sends it the log (a snapshot:
    the log was compacted), makes it a voter once it has caught up, and its
    state is the leader's; then the leader is killed and the group elects
    another with the new voter in its majority. */
static void test_a_wiped_replica_rejoins_as_a_new_one(void **state)
{
    group_t *g = *state;
    g->snapshot = "16";
    int leader = s_start_all(g);
    int lost = (leader + 1) % REPLICAS;
    s_produce(g, "r", "200", "0.004");
    aq_process_stop(&g->replicas[lost], SIGKILL, 5000);
    harness_remove_tree(g->data[lost]);

    char out[2048], err[1024], id[16];
    snprintf(id, sizeof id, "%d", lost + 1);
    assert_int_equal(s_replica(g, "remove", id, out, sizeof out, err, sizeof err), 0);
    char removed[96];
    snprintf(removed, sizeof removed, "removed id=%d address=%s", lost + 1, g->address[lost]);
    if (!strstr(out, removed))
        fail_msg("asyncq replica remove said '%s' '%s', not %s", out, err, removed);
    assert_int_equal(s_replica(g, "list", NULL, out, sizeof out, err, sizeof err), 0);
    assert_null(strstr(out, g->address[lost]));

    assert_int_equal(s_replica(g, "add", g->address[lost], out, sizeof out, err, sizeof err), 0);
    char *given = strstr(out, "id=");
    assert_non_null(given);
    char new_id[32];
    snprintf(new_id, sizeof new_id, "%.*s", (int) strcspn(given + 3, " "), given + 3);
    assert_true(strtoull(new_id, NULL, 10) > REPLICAS);
    assert_non_null(strstr(out, "kind=standby"));
    assert_non_null(strstr(err, "--join"));
    /* The same address again is refused; the group still answers. */
    assert_true(s_replica(g, "add", g->address[lost], out, sizeof out, err, sizeof err) != 0);
    assert_non_null(strstr(err, "in the group already"));

    s_start_as(g, lost, new_id);
    char voter[64];
    snprintf(voter, sizeof voter, "id=%s ", new_id);
    s_wait_listed(g, voter, "kind=voter");
    s_assert_same_state(g, leader);
    char *log = harness_read_file(g->log[lost]);
    assert_non_null(strstr(log, "state restored from a snapshot of the group"));
    free(log);

    aq_process_stop(&g->replicas[leader], SIGKILL, 5000);
    int next = s_leader(g, 10000);
    assert_true(next != leader);
    harness_t h = s_group(g, lost);
    assert_int_equal(harness_stat(&h, "r", "queued"), 200);
    harness_assert_serving(&h, "ok");
}

/*  The lead handed over on purpose (before maintenance): the replica
    asked leads, the old leader starts again as a follower, and the group
    serves; the leader cannot be removed, nor a replica that is not there,
    and a request that is not one is refused, each with its reason. */
/*  Waits until replica i's log holds `text`; fails the test after the
    deadline. */
static void s_wait_logged(const group_t *g, int i, const char *text)
{
    int64_t deadline = zclock_mono() + HARNESS_DEADLINE_MS;
    for (;;) {
        char *log = harness_read_file(g->log[i]);
        int found = log && strstr(log, text);
        if (!found && zclock_mono() > deadline) {
            fprintf(stderr, "--- replica %d's log:\n%s\n", i + 1, log ? log : "");
            free(log);
            log = NULL;
            fail_msg("replica %d never logged '%s'", i + 1, text);
        }
        free(log);
        if (found)
            return;
        zclock_sleep(20); /* a file: no event to wait on */
    }
}

/*  A replica whose directory was wiped and that is started again under
    its old id (the same --peers and --node-id, as a container whose
    volume was lost would be) takes no part in elections until it holds
    what the group had committed: its vote could otherwise elect a leader
    that lacks what it had acknowledged. The leader, whose library would
    go on sending from where the replica was, hands the lead to the third
    replica, which sends it the log again. Once it holds it, it votes, its
    state is the leader's, and the group survives its leader's loss
    through it with every item. */
static void test_a_wiped_replica_under_its_old_id_votes_once_caught_up(void **state)
{
    group_t *g = *state;
    int leader = s_start_all(g);
    int lost = (leader + 1) % REPLICAS;
    s_produce(g, "v", "300", "0");
    aq_process_stop(&g->replicas[lost], SIGKILL, 5000);
    harness_remove_tree(g->data[lost]);
    s_start(g, lost);
    s_wait_logged(g, lost, "it takes no part in elections until it holds the ");
    /* The leader, which the library would have go on sending from where
       the replica was, hands the lead to the third, which starts afresh. */
    char handed[160];
    snprintf(handed, sizeof handed, "replica %d answers that its log ends at 1, below the ",
             lost + 1);
    s_wait_logged(g, leader, handed);
    s_wait_logged(g, leader, "(its directory wiped, and started again under its old id?): the "
                             "lead goes to replica ");
    /* A leader that hands the lead over starts again from the group's log
       (as in the hand-over test): its state is read once it is back. */
    char line[256];
    if (!aq_process_expect(&g->replicas[leader], "READY ", line, sizeof line,
                           HARNESS_DEADLINE_MS))
        fail_msg("the old leader did not start again as a follower");
    s_wait_logged(g, lost, "entries its group had committed: it votes again");
    int now = s_leader(g, 10000);
    assert_true(now != lost);
    s_assert_same_state(g, now);
    aq_process_stop(&g->replicas[now], SIGKILL, 5000);
    int next = s_leader(g, 10000);
    assert_true(next != now);
    harness_t h = s_group(g, lost);
    assert_int_equal(harness_stat(&h, "v", "queued"), 300);
    harness_assert_serving(&h, "ok");
}

/*  A replica whose directory was wiped, started again with two replicas
    swapped in its --peers (and --node-id its place in that list), says it
    is another replica than the group has at its address. The leader
    refuses its connections, saying so (with keys: that the replica there
    is another one than its own --peers says), and the group confirms
    every put meanwhile. Before, the leader took its answers for the other
    replica's (a log that ends at 1) and handed its lead to it. Started
    again with the group's --peers, it catches up. */
static void test_a_replica_started_with_other_peers_is_refused(void **state)
{
    group_t *g = *state;
    int leader = s_start_all(g);
    int wrong = (leader + 1) % REPLICAS, other = (leader + 2) % REPLICAS;
    s_produce(g, "o", "200", "0");
    aq_process_stop(&g->replicas[wrong], SIGKILL, 5000);
    char swapped[sizeof g->peers_as[0]] = "";
    for (int i = 0; i < REPLICAS; i++) {
        size_t used = strlen(swapped);
        int at = i == wrong ? other : i == other ? wrong : i;
        snprintf(swapped + used, sizeof swapped - used, "%s%s", i ? "," : "", g->address[at]);
    }
    /* Started on its directory with that list and its own --node-id, its
       address is the other's: it cannot listen there, and says why. */
    char path[4096], node[16], out[512], err[1024];
    assert_int_equal(aq_program_path("asyncq-broker", path, sizeof path), 0);
    snprintf(node, sizeof node, "%d", wrong + 1);
    char *argv[] = {path, "--bind", g->address[wrong], "--peers", swapped, "--node-id", node,
                    "--data-dir", g->data[wrong], NULL, NULL, NULL, NULL, NULL};
    if (g->keyed) {
        argv[9] = "--curve-secret";
        argv[10] = g->secret;
        argv[11] = "--clients";
        argv[12] = g->clients;
    }
    assert_true(harness_run_err(argv, out, sizeof out, err, sizeof err) != 0);
    if (!strstr(err, "every replica needs the same --peers, in the same order"))
        fail_msg("a replica started with its --peers in another order said: %s%s", out, err);
    harness_remove_tree(g->data[wrong]);
    memcpy(g->peers_as[wrong], swapped, sizeof swapped);
    snprintf(g->node_as[wrong], sizeof g->node_as[wrong], "%d", other + 1);
    s_start(g, wrong);
    char said[160];
    if (g->keyed)
        snprintf(said, sizeof said, "the replica there is replica %d by its --peers, not "
                 "replica %d as this one's says", other + 1, wrong + 1);
    else
        snprintf(said, sizeof said, "says it is replica %d, where this one's group has replica "
                 "%d: every replica needs the same --peers", other + 1, wrong + 1);
    s_wait_logged(g, leader, said);
    json_t *stats = s_replica_stats(g, leader);
    json_t *refused = json_object_get(json_object_get(stats, "connections_refused"),
                                      g->keyed ? "out" : "in");
    assert_true(json_integer_value(json_object_get(refused, "id")) >= 1);
    assert_int_equal(json_integer_value(json_object_get(refused, "key")), 0);
    json_decref(stats);
    s_produce(g, "o", "100", "0"); /* every put confirmed */
    char name[64];
    assert_int_equal(s_hello(g, leader, name, sizeof name, HARNESS_DEADLINE_MS), 1);
    harness_t h = s_group(g, leader);
    assert_int_equal(harness_stat(&h, "o", "queued"), 300);

    aq_process_stop(&g->replicas[wrong], SIGKILL, 5000);
    harness_remove_tree(g->data[wrong]);
    g->peers_as[wrong][0] = '\0';
    s_start(g, wrong);
    s_wait_logged(g, wrong, "entries its group had committed: it votes again");
    s_assert_same_state(g, s_leader(g, HARNESS_DEADLINE_MS));
}

/*  A new group whose third replica's --peers misspells the second
    (127.0.0.2, where it is not): the third refuses the second's
    connections (it calls itself by another address) and takes no vote to
    lead, so one of the two whose lists agree leads, and every put is
    confirmed. Before, the third could lead (the first voted for it), and
    its group then ran without the second for good. Started again with the
    others' --peers on an empty directory, it catches up; started once more
    with the misspelled list, it follows its log's and says that --peers
    differs. */
static int s_leads(const group_t *g, int wait_ms);

static void test_a_replica_whose_peers_misspell_another_does_not_lead(void **state)
{
    group_t *g = *state;
    const int odd = 2;
    const char *port = strrchr(g->address[1], ':') + 1;
    snprintf(g->peers_as[odd], sizeof g->peers_as[odd], "%s,127.0.0.2:%s,%s", g->address[0],
             port, g->address[2]);
    snprintf(g->node_as[odd], sizeof g->node_as[odd], "3");
    for (int i = 0; i < REPLICAS; i++)
        s_start(g, i);
    char said[160];
    snprintf(said, sizeof said, "replica 2 calls itself 127.0.0.1:%d, where this one's group "
             "has it at 127.0.0.2:%d: every replica needs the same --peers", atoi(port) + 2,
             atoi(port) + 2);
    s_wait_logged(g, odd, said);
    int64_t deadline = zclock_mono() + HARNESS_DEADLINE_MS;
    int leader;
    while ((leader = s_leads(g, 200)) < 0 && zclock_mono() < deadline)
        zclock_sleep(20); /* an election is under way */
    assert_true(leader == 0 || leader == 1);
    s_produce(g, "m", "100", "0");
    assert_int_equal(s_leads(g, 200), leader);

    aq_process_stop(&g->replicas[odd], SIGKILL, 5000);
    harness_remove_tree(g->data[odd]);
    g->peers_as[odd][0] = '\0';
    s_start(g, odd);
    s_assert_same_state(g, s_leader(g, HARNESS_DEADLINE_MS));

    /* Misspelled again at a later start, --peers is not read: its log
       says who the members are, and the replica says so. */
    aq_process_stop(&g->replicas[odd], SIGTERM, HARNESS_DEADLINE_MS);
    snprintf(g->peers_as[odd], sizeof g->peers_as[odd], "%s,127.0.0.2:%s,%s", g->address[0],
             port, g->address[2]);
    s_start(g, odd);
    snprintf(said, sizeof said, "--peers has replica 2 at 127.0.0.2:%s, the group's log at %s",
             port, g->address[1]);
    s_wait_logged(g, odd, said);
    s_produce(g, "m", "100", "0");
    s_assert_same_state(g, s_leader(g, HARNESS_DEADLINE_MS));
}

/*  The replica that leads among those running, or -1 if none does; asks
    each for `wait_ms` at most. */
static int s_leads(const group_t *g, int wait_ms)
{
    for (int i = 0; i < REPLICAS; i++) {
        char name[64];
        if (g->replicas[i].pid && s_hello(g, i, name, sizeof name, wait_ms) == 1)
            return i;
    }
    return -1;
}

/*  A replica lagging since its group's first start (its log holds that
    first entry alone) and one whose directory was wiped, both started
    while the third, which holds what the group committed, is down: each
    holds nothing, so for either of them an election between the two looks
    like a new group's first. Neither is elected, since a new group's first
    election takes every replica heard holding nothing; each says why, and
    after 4 s without a leader what a leader needs. With the third back, it
    leads, and no item is lost. */
static void test_a_lagging_and_a_wiped_replica_elect_no_one_without_the_third(void **state)
{
    group_t *g = *state;
    const int holder = 0, lagging = 1, wiped = 2;
    char first[200];
    snprintf(first, sizeof first, "%s/first-%d", g->dir.root, lagging + 1);
    s_start(g, lagging); /* its first start, alone: its log holds the first entry */
    aq_process_stop(&g->replicas[lagging], SIGKILL, 5000);
    assert_int_equal(rename(g->data[lagging], first), 0);
    int leader = s_start_all(g);
    s_produce(g, "w", "300", "0");
    s_assert_same_state(g, leader); /* every replica holds the 300 items */
    for (int i = 0; i < REPLICAS; i++)
        aq_process_stop(&g->replicas[i], SIGKILL, 5000);
    harness_remove_tree(g->data[lagging]);
    assert_int_equal(rename(first, g->data[lagging]), 0);
    harness_remove_tree(g->data[wiped]);

    s_start(g, lagging);
    s_start(g, wiped);
    /* Each asks the other for its vote, again and again (an election
       time-out is 0.5 to 1 s): neither is given it. */
    int64_t until = zclock_mono() + 4000;
    while (zclock_mono() < until) {
        int leads = s_leads(g, 200);
        if (leads >= 0)
            fail_msg("replica %d leads, elected without what replica %d holds", leads + 1,
                     holder + 1);
        zclock_sleep(100); /* watching for what must not happen: nothing to wait on */
    }
    s_wait_logged(g, lagging, "holds nothing, asks for a new group's first election: no vote");
    s_wait_logged(g, wiped, "holds nothing, asks for a new group's first election: no vote");
    /* Each says, too, what a leader needs, and the way on if the third
       were lost for good. */
    s_wait_logged(g, lagging, "has known no leader for 4 s: its group elects one once 2 of its 3 "
                              "voters run and reach each other");
    s_wait_logged(g, wiped, "one replica can go on alone: --recover-alone (README)");

    s_start(g, holder);
    assert_int_equal(s_leader(g, 10000), holder);
    s_assert_same_state(g, holder);
    harness_t h = s_group(g, wiped);
    assert_int_equal(harness_stat(&h, "w", "queued"), 300);
    harness_assert_serving(&h, "ok");
}

/*  asyncq-broker --recover-alone with replica i's flags, but --node-id
    `id`: its exit code; its stdout in `out`, its stderr in `err`. */
static int s_recover_alone(const group_t *g, int i, int id, char *out, size_t size, char *err,
                           size_t err_size)
{
    char node[16];
    snprintf(node, sizeof node, "%d", id);
    char *argv[] = {"asyncq-broker", "--bind", (char *) g->address[i], "--peers",
                    (char *) g->peers, "--node-id", node, "--data-dir", (char *) g->data[i],
                    "--recover-alone", NULL};
    return harness_run_err(argv, out, size, err, err_size);
}

/*  A group whose majority is lost for good (two replicas' directories
    gone with their hosts): the third, stopped, is made the group's only
    member with --recover-alone, which names who was left out; started
    again, it leads alone with every item and takes puts, and a replica
    added on an empty directory becomes a voter with the same state.
    --recover-alone is refused while the replica runs (its directory is
    locked), and where there is no log. */
static void test_a_group_whose_majority_is_lost_goes_on_alone(void **state)
{
    group_t *g = *state;
    const int kept = s_start_all(g); /* the leader holds every item it confirmed */
    s_produce(g, "m", "150", "0");
    char out[2048], err[1024];
    assert_int_equal(s_recover_alone(g, kept, kept + 1, out, sizeof out, err, sizeof err), 5);
    if (!strstr(err, "is using the data directory"))
        fail_msg("--recover-alone on a running replica said '%s' '%s'", out, err);
    for (int i = 0; i < REPLICAS; i++)
        aq_process_stop(&g->replicas[i], SIGKILL, 5000);
    const int lost[2] = {(kept + 1) % REPLICAS, (kept + 2) % REPLICAS};
    harness_remove_tree(g->data[lost[0]]);
    harness_remove_tree(g->data[lost[1]]);

    /* Where there is no log it makes nothing; another replica's id than
       the directory's (its NODE) is refused. */
    assert_int_not_equal(
        s_recover_alone(g, lost[0], lost[0] + 1, out, sizeof out, err, sizeof err), 0);
    if (!strstr(err, "holds no log of a replica"))
        fail_msg("--recover-alone where there is no log said '%s' '%s'", out, err);
    assert_int_not_equal(access(g->data[lost[0]], F_OK), 0);
    assert_int_not_equal(s_recover_alone(g, kept, lost[0] + 1, out, sizeof out, err, sizeof err),
                         0);
    char said[160];
    snprintf(said, sizeof said, "is replica %d's directory", kept + 1);
    if (!strstr(err, said))
        fail_msg("--recover-alone with replica %d's id said '%s' '%s'", lost[0] + 1, out, err);
    if (s_recover_alone(g, kept, kept + 1, out, sizeof out, err, sizeof err) != 0)
        fail_msg("--recover-alone failed: '%s' '%s'", out, err);
    snprintf(said, sizeof said,
             "replica %d is its group's only member now, a voter (it was a voter;", kept + 1);
    assert_non_null(strstr(out, said));
    for (int k = 0; k < 2; k++) {
        snprintf(said, sizeof said, "replica %d (%s, a voter)", lost[k] + 1, g->address[lost[k]]);
        if (!strstr(out, said))
            fail_msg("--recover-alone said '%s', not '%s'", out, said);
    }

    g->unlisted = 1u << lost[0] | 1u << lost[1];
    s_start(g, kept);
    assert_int_equal(s_leader(g, 10000), kept);
    harness_t h = s_group(g, kept);
    assert_int_equal(harness_stat(&h, "m", "queued"), 150);
    char *put[] = {"asyncq", "put", "--broker", g->all, "--queue", "m", "alone", NULL};
    assert_int_equal(harness_run(put, out, sizeof out), 0);

    assert_int_equal(s_replica(g, "add", g->address[lost[0]], out, sizeof out, err, sizeof err),
                     0);
    char *given = strstr(out, "id=");
    assert_non_null(given);
    char id[32], listed[48];
    snprintf(id, sizeof id, "%.*s", (int) strcspn(given + 3, " "), given + 3);
    g->unlisted &= ~(1u << lost[0]);
    s_start_as(g, lost[0], id);
    snprintf(listed, sizeof listed, "id=%s ", id);
    s_wait_listed(g, listed, "kind=voter");
    s_assert_same_state(g, kept); /* the new voter's, item by item */
    assert_int_equal(harness_stat(&h, "m", "queued"), 151);
    harness_assert_serving(&h, "ok");
}

/*  `asyncq put` of one item to replica i alone: its exit code. */
static int s_put_alone(const group_t *g, int i)
{
    char out[512];
    char *put[] = {"asyncq", "put", "--broker", (char *) g->address[i], "--queue", "o", "alone",
                   NULL};
    return harness_run(put, out, sizeof out);
}

/*  Replicas left out by --recover-alone and started again on their old
    directories (against the README) elect one of them among themselves,
    in a later term, with entries that conflict with what the replica gone
    on alone has committed since: what they send it is dropped, and said
    in its log, so that it goes on leading and serving (libraft 0.22.1,
    given those entries, frees them twice and aborts). */
static void test_replicas_left_out_cannot_unseat_the_one_gone_on_alone(void **state)
{
    group_t *g = *state;
    const int kept = s_start_all(g);
    s_produce(g, "o", "100", "0");
    for (int i = 0; i < REPLICAS; i++)
        aq_process_stop(&g->replicas[i], SIGKILL, 5000);
    char out[2048], err[1024];
    if (s_recover_alone(g, kept, kept + 1, out, sizeof out, err, sizeof err) != 0)
        fail_msg("--recover-alone failed: '%s' '%s'", out, err);
    const int left[2] = {(kept + 1) % REPLICAS, (kept + 2) % REPLICAS};
    g->unlisted = 1u << left[0] | 1u << left[1];
    s_start(g, kept);
    assert_int_equal(s_leader(g, 10000), kept);
    harness_t h = {0};
    snprintf(h.address, sizeof h.address, "%s", g->address[kept]);
    assert_int_equal(s_put_alone(g, kept), 0);

    s_start(g, left[0]);
    s_start(g, left[1]);
    int64_t deadline = zclock_mono() + HARNESS_DEADLINE_MS;
    char name[64];
    while (s_hello(g, left[0], name, sizeof name, 200) != 1
           && s_hello(g, left[1], name, sizeof name, 200) != 1) {
        if (zclock_mono() >= deadline)
            fail_msg("the replicas left out elected none of them");
        zclock_sleep(50); /* an election is under way: ask again */
    }
    s_wait_logged(g, kept, "is not in this group, whose only voter this replica is");
    for (int i = 0; i < 3; i++) /* it still runs, leads, and takes puts */
        assert_int_equal(s_put_alone(g, kept), 0);
    assert_int_equal(kill(g->replicas[kept].pid, 0), 0);
    assert_int_equal(s_hello(g, kept, name, sizeof name, HARNESS_DEADLINE_MS), 1);
    assert_int_equal(harness_stat(&h, "o", "queued"), 104);
    harness_assert_serving(&h, "ok");
}

/*  `asyncq replica transfer ID` hands the lead to that replica, which the
    group then follows; the changes it cannot make are refused, each with
    its reason: the leader's own removal, an id or an address the group
    does not have, and a transfer to a replica that cannot take the lead. */
static void test_the_lead_is_handed_over(void **state)
{
    group_t *g = *state;
    int leader = s_start_all(g);
    int target = (leader + 2) % REPLICAS;
    char out[2048], err[1024], id[16];
    snprintf(id, sizeof id, "%d", target + 1);
    if (s_replica(g, "transfer", id, out, sizeof out, err, sizeof err) != 0)
        fail_msg("asyncq replica transfer %s: %s%s", id, out, err);
    char leads[64];
    snprintf(leads, sizeof leads, "replica %d leads now", target + 1);
    if (!strstr(out, leads))
        fail_msg("asyncq replica transfer %s said '%s' '%s', not '%s'", id, out, err, leads);
    assert_int_equal(s_leader(g, 10000), target);
    char line[256];
    if (!aq_process_expect(&g->replicas[leader], "READY ", line, sizeof line,
                           HARNESS_DEADLINE_MS))
        fail_msg("the old leader did not start again as a follower");
    char listed[64];
    snprintf(listed, sizeof listed, "id=%d ", target + 1);
    s_wait_listed(g, listed, "role=leader");

    assert_true(s_replica(g, "remove", id, out, sizeof out, err, sizeof err) != 0);
    assert_non_null(strstr(err, "hand the lead over first"));
    assert_true(s_replica(g, "remove", "99", out, sizeof out, err, sizeof err) != 0);
    assert_non_null(strstr(err, "no such replica"));
    assert_true(s_replica(g, "add", "ipc:///tmp/x", out, sizeof out, err, sizeof err) != 0);
    assert_non_null(strstr(err, "not HOST:PORT"));
    assert_true(s_replica(g, "transfer", "99", out, sizeof out, err, sizeof err) != 0);
    assert_non_null(strstr(err, "no such replica"));
    assert_true(s_replica(g, "transfer", id, out, sizeof out, err, sizeof err) != 0);
    assert_non_null(strstr(err, "leads the group already"));
    /* A replica that cannot take the lead (stopped): the leader still
       leads once the time asked is over, the program says so, and it
       still leads once that replica runs again. */
    int paused = (target + 1) % REPLICAS;
    snprintf(id, sizeof id, "%d", paused + 1);
    assert_int_equal(kill(g->replicas[paused].pid, SIGSTOP), 0);
    int transfer_rc = s_replica(g, "transfer", id, out, sizeof out, err, sizeof err);
    assert_int_equal(kill(g->replicas[paused].pid, SIGCONT), 0);
    assert_true(transfer_rc != 0);
    char still[64];
    snprintf(still, sizeof still, "replica %d still leads", target + 1);
    if (!strstr(err, still) || !strstr(err, "did not take over"))
        fail_msg("asyncq replica transfer to a stopped replica said '%s' '%s'", out, err);
    /* Resumed, it reads the requests to take over that came while it was
       stopped, which the leader gave up (and the program said so): it
       takes none, and the leader leads on. */
    s_wait_logged(g, paused, "came while this one did not run");
    int now = s_leader(g, 10000);
    assert_int_equal(now, target);
    harness_t h = s_group(g, leader);
    char *put[] = {"asyncq", "put", "--broker", g->all, "--queue", "t", "x", NULL};
    assert_int_equal(harness_run(put, out, sizeof out), 0);
    assert_int_equal(harness_stat(&h, "t", "queued"), 1);
    harness_assert_serving(&h, "ok");
    s_assert_same_state(g, now);
}

/*  Replica i, which starts again as the same process (execv), has done so
    and runs its loop (whose signal handlers a SIGUSR1 needs). */
static void s_restarted(group_t *g, int i)
{
    char line[256], leader[64];
    if (!aq_process_expect(&g->replicas[i], "READY ", line, sizeof line, HARNESS_DEADLINE_MS))
        fail_msg("replica %d did not start again", i + 1);
    if (s_hello(g, i, leader, sizeof leader, HARNESS_DEADLINE_MS) < 0)
        fail_msg("replica %d does not answer HELLO after it started again", i + 1);
}

/*  `asyncq put` of `count` (at most 100) items of 4 KiB through the group,
    each of bytes of its own that do not compress (libraft compresses its
    log): its exit code. */
static int s_put_big(const group_t *g, const char *queue, int count)
{
    static const char digits[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    static char payloads[100][4097];
    static uint64_t random = 88172645463325252ULL;
    char *argv[8 + 100] = {"asyncq", "put", "--broker", (char *) g->all, "--queue",
                           (char *) queue};
    int n = 6;
    for (int i = 0; i < count && i < 100; i++) {
        for (int k = 0; k < 4096; k++) {
            random ^= random << 13, random ^= random >> 7, random ^= random << 17;
            payloads[i][k] = digits[random & 63];
        }
        argv[n++] = payloads[i];
    }
    argv[n] = NULL;
    char out[512], err[512];
    return harness_run_err(argv, out, sizeof out, err, sizeof err);
}

/*  A full disk on one replica (its data directory a small ext4 of its own,
    nearly filled): it says it cannot write its log, and the group, whose
    majority can, confirms every put meanwhile; once there is room again it
    starts again from its log and catches up: every state the same. */
static void test_a_replica_whose_disk_is_full_catches_up_once_there_is_room(void **state)
{
    group_t *g = *state;
    if (geteuid() != 0)
        skip(); /* a loop mount needs root; CI runs as root */
    char command[1024], filler[256];
    int full = 2;
    snprintf(filler, sizeof filler, "%s/filler", g->data[full]);
    snprintf(command, sizeof command,
             "mkdir -p '%s' && truncate -s 64M '%s/disk.img' && mkfs.ext4 -q '%s/disk.img' "
             "&& mount -o loop '%s/disk.img' '%s' && fallocate -l 40M '%s'",
             g->data[full], g->dir.root, g->dir.root, g->dir.root, g->data[full], filler);
    if (system(command) != 0)
        skip(); /* no loop devices here */
    int leader = s_start_all(g);
    if (leader == full) { /* the full one follows: its puts are the others' to confirm */
        char out[256], err[256], to[8];
        snprintf(to, sizeof to, "%d", (full + 1) % REPLICAS + 1);
        assert_int_equal(s_replica(g, "transfer", to, out, sizeof out, err, sizeof err), 0);
        s_restarted(g, full);
        leader = s_leader(g, 10000);
    }
    /* Its two segments (16 MiB, made ahead) take what is left but a few
       MiB: the third has no room. Every put is confirmed by the other two. */
    int puts = 0;
    for (int i = 0; i < 56; i++) { /* 22 MiB: past what it has room for, not much more */
        assert_int_equal(s_put_big(g, "full", 100), 0);
        puts += 100;
    }
    int64_t deadline = zclock_mono() + 2 * HARNESS_DEADLINE_MS;
    char *log;
    while (!strstr(log = harness_read_file(g->log[full]), "cannot write its log")) {
        if (zclock_mono() >= deadline)
            fail_msg("replica %d never said it cannot write its log:\n%s", full + 1, log);
        free(log);
        zclock_sleep(100);
    }
    free(log);
    /* Room again: it starts again from its log and catches up. */
    assert_int_equal(unlink(filler), 0);
    s_restarted(g, full);
    s_assert_same_state(g, leader);
    log = harness_read_file(g->log[full]);
    assert_non_null(strstr(log, "its disk has room again"));
    free(log);
    harness_t h = s_group(g, full);
    assert_int_equal(harness_stat(&h, "full", "queued"), puts);
    harness_assert_serving(&h, "ok");
}

/*  A new group's first leader, killed as soon as every replica names it
    (its followers hold its first entry, but most often have not heard it
    committed yet): the other two elect one of them, and it serves. */
static void test_a_new_groups_first_leader_killed_at_once_is_replaced(void **state)
{
    group_t *g = *state;
    int first = s_start_all(g);
    int64_t killed = zclock_mono();
    aq_process_stop(&g->replicas[first], SIGKILL, 5000);
    int leader = s_leader(g, HARNESS_DEADLINE_MS);
    assert_true(leader != first);
    printf("# a new leader in %lld ms\n", (long long) (zclock_mono() - killed));
    harness_t h = s_group(g, leader);
    harness_assert_serving(&h, "q");
}

/*  A service of two shards, each a group of three replicas: every replica
    is listed in --service (a group's joined by '|'), and WELCOME lists them
    in `groups`. With shard 1's first replica dead, a client given shard
    0's addresses only still finds shard 1 through the others (`brokers`
    names only the first of each group), spreads its puts over both, gets
    every item, and its join returns, exact. */
static void test_a_service_of_groups_finds_a_shard_past_a_dead_replica(void **state)
{
    group_t *g = *state;
    void *made = NULL;
    s_setup(&made);
    group_t *other = g->other = made;
    int base = harness_free_ports(8 * REPLICAS); /* both groups' ports, none shared */
    s_place(g, base);
    s_place(other, base + 4 * REPLICAS);
    size_t used = 0;
    for (int k = 0; k < 2; k++)
        for (int i = 0; i < REPLICAS; i++)
            used += (size_t) snprintf(g->service + used, sizeof g->service - used, "%s%s",
                                      i ? "|" : k ? "," : "",
                                      (k ? other : g)->address[i]);
    snprintf(other->service, sizeof other->service, "%s", g->service);
    other->shard = 1;
    s_start_all(g);
    s_start_all(other);
    aq_process_stop(&other->replicas[0], SIGKILL, 5000);
    int leader = s_leader(other, HARNESS_DEADLINE_MS); /* another, if it led */
    assert_true(leader > 0);

    enum { ITEMS = 40 };
    aq_status_t rc;
    aq_producer_t *producer = aq_producer_new(g->all, "spread", &rc);
    assert_non_null(producer);
    assert_int_equal(aq_producer_brokers(producer), 2);
    for (int i = 0; i < ITEMS; i++) {
        char item[16];
        int size = snprintf(item, sizeof item, "item %d", i);
        assert_int_equal(aq_producer_put(producer, "q", item, (size_t) size), AQ_OK);
        if (i % 4 == 3) /* a batch each, to the next shard in turn */
            assert_int_equal(aq_producer_flush(producer), AQ_OK);
    }
    assert_int_equal(aq_producer_sync(producer, HARNESS_DEADLINE_MS), AQ_OK);
    aq_producer_destroy(&producer);
    json_int_t second = s_queue_total(other, leader, "q", "puts_total");
    if (second <= 0 || second >= ITEMS)
        fail_msg("shard 1 (replica %d leads) took %lld of the %d puts: not spread", leader + 1,
                 (long long) second, ITEMS);

    aq_consumer_t *consumer = aq_consumer_new(g->address[0], "gather", "q", 8, &rc);
    assert_non_null(consumer);
    int seen[ITEMS] = {0};
    for (int i = 0; i < ITEMS; i++) {
        aq_item_t item;
        assert_int_equal(aq_consumer_get(consumer, &item, HARNESS_DEADLINE_MS), AQ_OK);
        char text[16];
        snprintf(text, sizeof text, "%.*s", (int) item.size, (const char *) item.data);
        int number = -1;
        assert_int_equal(sscanf(text, "item %d", &number), 1);
        assert_true(number >= 0 && number < ITEMS);
        seen[number]++;
        assert_int_equal(aq_consumer_ack(consumer, item.id), AQ_OK);
    }
    for (int i = 0; i < ITEMS; i++)
        assert_int_equal(seen[i], 1);
    aq_consumer_destroy(&consumer); /* its acks sent */
    char *join[] = {"asyncq", "join", "--broker", g->address[1], "-q", "q", "--timeout", "10",
                    NULL};
    char out[512];
    assert_int_equal(harness_run(join, out, sizeof out), 0);
    assert_int_equal(s_queue_total(other, leader, "q", "acks_total"), second);
}

/*  Three hosts (three supervisors on loopback, each `--shards 2 --peers
    A,B,C --node-id N`): shard K is a group of its own, with host N's
    replica at its PORT+3K. Each shard's lead settles on a host of its
    own; a host lost whole while producers and consumers run loses no
    confirmed put and the join is exact; back, it leads its shard again;
    with the other two lost for good, it goes on alone with every shard
    (--recover-alone). */
enum { HOST_SHARDS = 2 };

static void s_shard_at(const group_t *g, int host, int shard, char *out, size_t size)
{
    int port = atoi(strrchr(g->address[host], ':') + 1);
    snprintf(out, size, "127.0.0.1:%d", port + 3 * shard);
}

static void s_start_host(group_t *g, int host)
{
    char path[4096], node[16], line[256];
    assert_int_equal(aq_program_path("asyncq-broker", path, sizeof path), 0);
    snprintf(node, sizeof node, "%d", host + 1);
    char *argv[] = {path, "--shards", "2", "--bind", g->address[host], "--peers", g->peers,
                    "--node-id", node, "--data-dir", g->data[host], "--lead-balance-ms", "2000",
                    NULL};
    assert_int_equal(aq_process_spawn_logged(&g->replicas[host], argv, 1, 1, g->log[host]), 0);
    for (int k = 0; k < HOST_SHARDS; k++)
        if (!aq_process_expect(&g->replicas[host], "READY ", line, sizeof line,
                               HARNESS_DEADLINE_MS))
            fail_msg("host %d's shard %d did not print READY", host + 1, k);
}

static void s_print_host_logs(const group_t *g)
{
    for (int i = 0; i < REPLICAS; i++) {
        char *log = harness_read_file(g->log[i]);
        size_t size = log ? strlen(log) : 0;
        fprintf(stderr, "--- host %d's log (its end):\n%s\n", i + 1,
                log ? log + (size > 4000 ? size - 4000 : 0) : "(none)");
        free(log);
    }
}

/*  Waits until host `host` leads shard `shard` and every other running
    host's replica names it: the milliseconds it took. Its WELCOME lists
    every host's replica, or (`alone`) its own. */
static int64_t s_wait_host_leads(const group_t *g, int shard, int host, int alone,
                                 int64_t within_ms)
{
    const char *listed[REPLICAS];
    char addresses[REPLICAS][64];
    for (int i = 0; i < REPLICAS; i++) {
        s_shard_at(g, i, shard, addresses[i], sizeof addresses[i]);
        listed[i] = addresses[i];
    }
    int64_t start = zclock_mono();
    while (zclock_mono() - start < within_ms) {
        int settled = 1;
        for (int i = 0; i < REPLICAS && settled; i++) {
            if (!g->replicas[i].pid)
                continue;
            char leader[64] = "";
            int rc = s_hello_at(addresses[i], alone ? &listed[host] : listed,
                                alone ? 1 : REPLICAS, leader, sizeof leader, 200);
            settled = i == host ? rc == 1 : rc == 0 && strcmp(leader, addresses[host]) == 0;
        }
        if (settled)
            return zclock_mono() - start;
        zclock_sleep(50);
    }
    s_print_host_logs(g);
    fail_msg("host %d did not lead shard %d within %lld ms", host + 1, shard,
             (long long) within_ms);
    return -1;
}

/*  `asyncq stats` of queue `queue` through every host: the shards added up. */
static void s_assert_service_totals(const group_t *g, const char *queue, int puts)
{
    char *stats[] = {"asyncq", "stats", "--broker", (char *) g->all, "--queue", (char *) queue,
                     NULL};
    char out[1024], want[64];
    assert_int_equal(harness_run(stats, out, sizeof out), 0);
    const char *keys[] = {"puts", "acked"};
    for (int i = 0; i < 2; i++) {
        snprintf(want, sizeof want, " %s=%d ", keys[i], puts);
        if (!strstr(out, want)) {
            char *each[] = {"asyncq", "stats", "--broker", (char *) g->all, "--queue",
                            (char *) queue, "--brokers", NULL};
            char rows[2048] = "";
            harness_run(each, rows, sizeof rows);
            s_print_host_logs(g);
            fail_msg("asyncq stats says '%s': not%s (each shard: %s)", out, want, rows);
        }
    }
    if (!strstr(out, " outstanding=0 ") || !strstr(out, " dead=0 "))
        fail_msg("asyncq stats says '%s': items outstanding or dead", out);
    /* Every item delivered once, and again each time it was taken back,
       whichever leader took it back: the counts are the records'. */
    const char *delivered = strstr(out, " delivered="), *again = strstr(out, " redelivered=");
    assert_non_null(delivered);
    assert_non_null(again);
    if (atoll(delivered + 11) != puts + atoll(again + 13))
        fail_msg("asyncq stats says '%s': delivered is not puts + redelivered", out);
}

/*  Waits until host `host` holds every entry of each shard's leader's log
    (its replica list row says lag=0). */
static void s_wait_host_holds_all(const group_t *g, int host)
{
    char *list[] = {"asyncq", "replica", "list", "--broker", (char *) g->all, NULL};
    char listed[2048] = "";
    int64_t deadline = zclock_mono() + HARNESS_DEADLINE_MS;
    for (;;) {
        int holds = harness_run(list, listed, sizeof listed) == 0;
        for (int k = 0; k < HOST_SHARDS && holds; k++) {
            char row[32];
            snprintf(row, sizeof row, "shard=%d id=%d ", k, host + 1);
            const char *at = strstr(listed, row);
            const char *lag = at ? strstr(at, " lag=") : NULL;
            holds = lag && lag < at + strcspn(at, "\n") && atoi(lag + 5) == 0;
        }
        if (holds)
            return;
        if (zclock_mono() >= deadline)
            fail_msg("host %d does not hold every shard's log: asyncq replica list says '%s'",
                     host + 1, listed);
        zclock_sleep(50); /* the leaders' next appends */
    }
}

static void test_shards_of_groups_spread_their_leaders_and_survive_a_host(void **state)
{
    group_t *g = *state;
    int base = harness_free_ports(6 * REPLICAS); /* each host: 2 shards, 3 ports each */
    g->peers[0] = '\0';
    for (int i = 0; i < REPLICAS; i++) {
        snprintf(g->address[i], sizeof g->address[i], "127.0.0.1:%d", base + 6 * i);
        size_t used = strlen(g->peers);
        snprintf(g->peers + used, sizeof g->peers - used, "%s%s", i ? "," : "", g->address[i]);
    }
    snprintf(g->all, sizeof g->all, "%s", g->peers);
    for (int i = 0; i < REPLICAS; i++)
        s_start_host(g, i);
    /* Shard K's lead settles on host K+1, wherever the first election
       put it. */
    for (int k = 0; k < HOST_SHARDS; k++)
        print_message("host %d leads shard %d after %lld ms\n", k + 1, k,
                      (long long) s_wait_host_leads(g, k, k, 0, 20000));
    /* replica list through the service: every shard's group. */
    char *list[] = {"asyncq", "replica", "list", "--broker", g->all, NULL};
    char listed[2048];
    assert_int_equal(harness_run(list, listed, sizeof listed), 0);
    for (int k = 0; k < HOST_SHARDS; k++) {
        char at[64], leads[160];
        s_shard_at(g, k, k, at, sizeof at);
        snprintf(leads, sizeof leads, "shard=%d id=%d address=%s kind=voter role=leader", k,
                 k + 1, at);
        if (!strstr(listed, leads))
            fail_msg("asyncq replica list says '%s': not '%s'", listed, leads);
    }

    s_start_workers(g);
    harness_t one = {0};
    s_shard_at(g, 1, 1, one.address, sizeof one.address);
    harness_wait_stat_at_least(&one, "m", "puts", 300);
    /* Host 2 lost whole: its shards' processes killed at once, its
       supervisor (stopped first, so it restarts none) too. */
    assert_int_equal(kill(g->replicas[1].pid, SIGSTOP), 0);
    harness_kill_shards(g->data[1]);
    aq_process_stop(&g->replicas[1], SIGKILL, 5000);
    for (int i = 0; i < 2; i++)
        assert_int_equal(harness_wait_exit(&g->workers[i]), 0); /* every put confirmed */
    char *join[] = {"asyncq", "join", "--broker", g->all, "--queue", "m", "--timeout", "20",
                    NULL};
    char out[512];
    assert_int_equal(harness_run(join, out, sizeof out), 0);
    s_assert_service_totals(g, "m", 6000);

    /* Back, it catches up, and its shard's lead comes back to it. */
    s_start_host(g, 1);
    print_message("host 2 leads shard 1 again %lld ms after it started again\n",
                  (long long) s_wait_host_leads(g, 1, 1, 0, 20000));
    s_wait_host_leads(g, 0, 0, 0, 1000);
    char *put[] = {"asyncq", "put", "--broker", g->all, "--queue", "m", "after", NULL};
    assert_int_equal(harness_run(put, out, sizeof out), 0);
    char *get[] = {"asyncq", "join", "--broker", g->all, "--queue", "m", "--timeout", "20",
                   NULL};
    assert_int_equal(harness_run(get, out, sizeof out), 0); /* the consumers took it */
    s_assert_service_totals(g, "m", 6001);

    /* Every host stopped, hosts 2 and 3 lost for good: host 1 goes on
       alone with both shards, from the flags it starts with. It goes on
       with what its log holds: it is stopped once that is everything
       (a group commits on two of three, so a follower may lag). */
    s_wait_host_holds_all(g, 0);
    /* Host 1's supervisor passes the stop on to each shard once: shard
       0, which host 1 leads, hands its lead over before it stops. */
    aq_process_stop(&g->replicas[0], SIGTERM, HARNESS_DEADLINE_MS);
    assert_int_equal(g->replicas[0].exit_code, 0);
    s_wait_logged(g, 0, "[shard 0]: replica 1 hands the lead to replica ");
    for (int i = 1; i < REPLICAS; i++)
        aq_process_stop(&g->replicas[i], SIGTERM, HARNESS_DEADLINE_MS);
    char *recover[] = {"asyncq-broker", "--shards", "2", "--bind", g->address[0], "--peers",
                       g->peers, "--node-id", "1", "--data-dir", g->data[0], "--recover-alone",
                       NULL};
    char said[2048];
    assert_int_equal(harness_run(recover, said, sizeof said), 0);
    for (int k = 0; k < HOST_SHARDS; k++) {
        char want[64];
        snprintf(want, sizeof want, "shard %d: replica 1 is its group's only member now", k);
        if (!strstr(said, want))
            fail_msg("--recover-alone said '%s': not '%s'", said, want);
    }
    s_start_host(g, 0);
    for (int k = 0; k < HOST_SHARDS; k++)
        s_wait_host_leads(g, k, 0, 1, HARNESS_DEADLINE_MS);
    s_assert_service_totals(g, "m", 6001);
}

static int s_teardown_hosts(void **state)
{
    group_t *g = *state;
    for (int i = 0; i < WORKERS; i++)
        aq_process_stop(&g->workers[i], SIGTERM, 5000);
    for (int i = 0; i < REPLICAS; i++)
        aq_process_stop(&g->replicas[i], SIGKILL, 5000);
    harness_kill_shards(g->dir.root);
    return s_teardown(state);
}

/*  A data directory is one replica's or one plain broker's, never taken
    for the other's, nor for another replica's: each start the wrong way
    is refused, saying why. */
static void test_a_directory_is_one_replicas_or_one_brokers(void **state)
{
    group_t *g = *state;
    char path[256], out[512], err[1024];
    snprintf(path, sizeof path, "%s/replica", g->data[0]);
    assert_int_equal(mkdir(g->data[0], 0700), 0);
    assert_int_equal(mkdir(path, 0700), 0);
    char *plain[] = {"asyncq-broker", "--bind", g->address[0], "--data-dir", g->data[0], NULL};
    assert_int_not_equal(harness_run_err(plain, out, sizeof out, err, sizeof err), 0);
    assert_non_null(strstr(err, "holds the log of a replica of a group"));

    snprintf(path, sizeof path, "%s/0000000000000001.log", g->data[1]);
    assert_int_equal(mkdir(g->data[1], 0700), 0);
    FILE *segment = fopen(path, "w");
    assert_non_null(segment);
    fclose(segment);
    char *grouped[] = {"asyncq-broker", "--bind", g->address[1], "--peers", g->peers,
                       "--node-id", "2", "--data-dir", g->data[1], NULL};
    assert_int_not_equal(harness_run_err(grouped, out, sizeof out, err, sizeof err), 0);
    assert_non_null(strstr(err, "holds the journal of a broker that is not a replica"));

    /* Replica 2's directory (its NODE), started as replica 3. */
    snprintf(path, sizeof path, "%s/NODE", g->data[2]);
    assert_int_equal(mkdir(g->data[2], 0700), 0);
    FILE *node = fopen(path, "w");
    assert_non_null(node);
    fputs("2\n", node);
    fclose(node);
    char *other[] = {"asyncq-broker", "--bind", g->address[2], "--peers", g->peers,
                     "--node-id", "3", "--data-dir", g->data[2], NULL};
    assert_int_not_equal(harness_run_err(other, out, sizeof out, err, sizeof err), 0);
    if (!strstr(err, "is replica 2's directory") || !strstr(err, "not replica 3's"))
        fail_msg("a replica started on another's directory said '%s' '%s'", out, err);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_followers_name_the_leader_and_programs_find_it,
                                        s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_a_leader_asked_to_stop_hands_its_lead_over,
                                        s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_a_leader_killed_mid_run_loses_no_confirmed_put,
                                        s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_waiting_clients_follow_a_stopped_leader_at_once,
                                        s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_waiting_clients_follow_a_killed_leader, s_setup,
                                        s_teardown),
        cmocka_unit_test_setup_teardown(test_a_put_made_as_the_majority_is_lost_ends, s_setup,
                                        s_teardown),
        cmocka_unit_test_setup_teardown(test_a_paused_leader_is_replaced_and_steps_down,
                                        s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_a_replica_far_behind_catches_up_from_a_snapshot,
                                        s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_a_wiped_replica_rejoins_as_a_new_one, s_setup,
                                        s_teardown),
        cmocka_unit_test_setup_teardown(test_a_wiped_replica_under_its_old_id_votes_once_caught_up,
                                        s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(
            test_a_lagging_and_a_wiped_replica_elect_no_one_without_the_third, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_a_group_whose_majority_is_lost_goes_on_alone,
                                        s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_replicas_left_out_cannot_unseat_the_one_gone_on_alone,
                                        s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_the_lead_is_handed_over, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_a_replica_started_with_other_peers_is_refused,
                                        s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_a_replica_whose_peers_misspell_another_does_not_lead,
                                        s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_a_new_groups_first_leader_killed_at_once_is_replaced,
                                        s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_a_service_of_groups_finds_a_shard_past_a_dead_replica,
                                        s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_a_directory_is_one_replicas_or_one_brokers, s_setup,
                                        s_teardown),
        cmocka_unit_test_setup_teardown(
            test_shards_of_groups_spread_their_leaders_and_survive_a_host, s_setup,
            s_teardown_hosts),
        cmocka_unit_test_setup_teardown(
            test_a_replica_whose_disk_is_full_catches_up_once_there_is_room, s_setup, s_teardown),
        /* With keys: the same through connections that are authenticated
           and encrypted (a pump each way, a snapshot through it). */
        cmocka_unit_test_setup_teardown(test_a_leader_killed_mid_run_loses_no_confirmed_put,
                                        s_setup_keyed, s_teardown),
        cmocka_unit_test_setup_teardown(test_a_paused_leader_is_replaced_and_steps_down,
                                        s_setup_keyed, s_teardown),
        cmocka_unit_test_setup_teardown(test_a_replica_far_behind_catches_up_from_a_snapshot,
                                        s_setup_keyed, s_teardown),
        cmocka_unit_test_setup_teardown(test_a_replica_started_with_other_peers_is_refused,
                                        s_setup_keyed, s_teardown),
        cmocka_unit_test_setup_teardown(test_the_lead_is_handed_over, s_setup_keyed, s_teardown),
    };
    return harness_run_group(tests);
}
