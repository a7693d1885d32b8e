/*  The replicated log alone (replica.h), three replicas in this process
    on loopback, each on its own libuv loop, driven as the broker drives
    one (poll its descriptor, run it): a leader is elected and ready; every
    entry appended, of sizes up to 64 KiB and many in flight, is applied
    once, in order, with the same bytes, on every replica; every
    connection the replicas hold has TCP_NODELAY; a leader closed is
    replaced within 2 s and the group goes on, and the old leader catches
    up when it comes back; a replica stopped while the others went on past
    the log they keep catches up from a snapshot; a whole group stopped and
    started again comes back to the same state. */
#define _GNU_SOURCE
#include <dirent.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "harness.h"
#include "replica.h"

#define NODES 3
#define SLOTS (NODES + 1) /* the fourth joins a group that runs */

typedef struct {
    replica_t *replica;
    char dir[256];
    uint64_t count;      /* entries applied */
    uint64_t hash;       /* FNV-1a over every entry applied, in order */
    uint64_t done_ok, done_failed, last_token;
    int bad_order;       /* a done token out of order */
    int changes, change_status; /* membership callbacks, and the latest status */
    uint64_t id;         /* 0: i + 1 (one of the first group) */
} node_t;

typedef struct {
    node_t nodes[SLOTS];
    char addresses[SLOTS][64];
    char root[128];
    unsigned threshold, trailing;
} group_t;

static uint64_t s_fnv(uint64_t hash, const uint8_t *data, size_t size)
{
    for (size_t i = 0; i < size; i++)
        hash = (hash ^ data[i]) * 0x100000001b3ULL;
    return hash;
}

static void s_apply(void *ctx, const uint8_t *data, size_t size)
{
    node_t *node = ctx;
    uint8_t length[8];
    for (int i = 0; i < 8; i++)
        length[i] = (uint8_t) (size >> (8 * i));
    node->hash = s_fnv(s_fnv(node->hash, length, 8), data, size);
    node->count++;
}

static int s_snapshot(void *ctx, uint8_t **data, size_t *size)
{
    node_t *node = ctx;
    *data = malloc(16);
    if (!*data)
        return -1;
    memcpy(*data, &node->count, 8);
    memcpy(*data + 8, &node->hash, 8);
    *size = 16;
    return 0;
}

static int s_restore(void *ctx, const uint8_t *data, size_t size)
{
    node_t *node = ctx;
    if (size != 16)
        return -1;
    memcpy(&node->count, data, 8);
    memcpy(&node->hash, data + 8, 8);
    return 0;
}

static void s_done(void *ctx, uint64_t token, int status)
{
    node_t *node = ctx;
    if (status) {
        node->done_failed++;
        return;
    }
    if (token <= node->last_token)
        node->bad_order = 1;
    node->last_token = token;
    node->done_ok++;
}

static void s_membership(void *ctx, int status)
{
    node_t *node = ctx;
    node->changes++;
    node->change_status = status;
}

static const uint64_t s_hash_start = 0xcbf29ce484222325ULL;

static void s_open(group_t *group, int i)
{
    node_t *node = &group->nodes[i];
    node->count = 0;
    node->hash = s_hash_start;
    node->done_ok = node->done_failed = node->last_token = 0;
    replica_config_t config = {.count = node->id ? 0 : NODES,
                               .id = node->id ? node->id : (uint64_t) i + 1,
                               .address = group->addresses[i],
                               .dir = node->dir,
                               .snapshot_threshold = group->threshold,
                               .snapshot_trailing = group->trailing};
    for (int k = 0; k < NODES; k++)
        config.addresses[k] = group->addresses[k];
    replica_owner_t owner = {.apply = s_apply,
                             .snapshot = s_snapshot,
                             .restore = s_restore,
                             .done = s_done,
                             .membership = s_membership,
                             .ctx = node};
    char error[256] = "";
    node->replica = replica_open(&config, &owner, error, sizeof error);
    if (!node->replica)
        fail_msg("replica %d: %s", i + 1, error);
}

static group_t *s_group(unsigned threshold, unsigned trailing)
{
    group_t *group = calloc(1, sizeof *group);
    assert_non_null(group);
    group->threshold = threshold;
    group->trailing = trailing;
    snprintf(group->root, sizeof group->root, "/tmp/asyncq-replica-XXXXXX");
    assert_non_null(mkdtemp(group->root));
    int port = harness_free_ports(SLOTS);
    for (int i = 0; i < SLOTS; i++) {
        snprintf(group->addresses[i], sizeof group->addresses[i], "127.0.0.1:%d", port + i);
        snprintf(group->nodes[i].dir, sizeof group->nodes[i].dir, "%s/%d", group->root, i + 1);
    }
    for (int i = 0; i < NODES; i++)
        s_open(group, i);
    return group;
}

static void s_free(group_t *group)
{
    for (int i = 0; i < SLOTS; i++)
        replica_close(&group->nodes[i].replica);
    char command[256];
    snprintf(command, sizeof command, "rm -rf '%s'", group->root);
    assert_int_equal(system(command), 0);
    free(group);
}

static int64_t s_now_ms(void)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (int64_t) now.tv_sec * 1000 + now.tv_nsec / 1000000;
}

/*  One turn of every open replica: poll their descriptors as the broker
    polls its one, at most `max_ms`. */
static void s_turn(group_t *group, int max_ms)
{
    struct pollfd fds[SLOTS];
    int count = 0, timeout = max_ms;
    for (int i = 0; i < SLOTS; i++) {
        replica_t *replica = group->nodes[i].replica;
        if (!replica)
            continue;
        fds[count++] = (struct pollfd){.fd = replica_fd(replica), .events = POLLIN};
        int wait = replica_timeout_ms(replica);
        if (wait >= 0 && wait < timeout)
            timeout = wait;
    }
    poll(fds, (nfds_t) count, timeout);
    for (int i = 0; i < SLOTS; i++)
        if (group->nodes[i].replica)
            replica_run(group->nodes[i].replica);
}

/*  The ready leader, or -1. */
static int s_leader(group_t *group)
{
    for (int i = 0; i < SLOTS; i++) {
        replica_t *replica = group->nodes[i].replica;
        if (replica && replica_role(replica) == REPLICA_LEADER && replica_ready(replica))
            return i;
    }
    return -1;
}

static int s_wait_leader(group_t *group, int64_t within_ms)
{
    int64_t until = s_now_ms() + within_ms;
    int leader;
    while ((leader = s_leader(group)) < 0 && s_now_ms() < until)
        s_turn(group, 20);
    if (leader < 0)
        fail_msg("no ready leader within %lld ms", (long long) within_ms);
    return leader;
}

/*  Every open replica has applied `count` entries with the same hash. */
static int s_converged(group_t *group, uint64_t count)
{
    uint64_t hash = 0;
    int first = 1;
    for (int i = 0; i < SLOTS; i++) {
        node_t *node = &group->nodes[i];
        if (!node->replica)
            continue;
        if (node->count != count)
            return 0;
        if (!first && node->hash != hash)
            return 0;
        hash = node->hash;
        first = 0;
    }
    return 1;
}

static void s_wait_converged(group_t *group, uint64_t count, int64_t within_ms)
{
    int64_t until = s_now_ms() + within_ms;
    while (!s_converged(group, count) && s_now_ms() < until)
        s_turn(group, 20);
    if (!s_converged(group, count))
        fail_msg("not every replica applied %llu entries within %lld ms: %llu, %llu, %llu",
                 (unsigned long long) count, (long long) within_ms,
                 (unsigned long long) group->nodes[0].count,
                 (unsigned long long) group->nodes[1].count,
                 (unsigned long long) group->nodes[2].count);
}

/*  Entry `n`'s bytes: its size follows n, up to 64 KiB, its bytes too. */
static size_t s_entry(uint64_t n, uint8_t *buffer)
{
    size_t size = (size_t) ((n * 7919) % 65536) + 1;
    for (size_t i = 0; i < size; i++)
        buffer[i] = (uint8_t) (n * 31 + i);
    return size;
}

/*  Appends entries first..last at the leader, at most `window` in flight,
    and returns the hash every replica must reach from `hash`. */
static uint64_t s_append(group_t *group, int leader, uint64_t first, uint64_t last,
                         uint64_t window, uint64_t hash)
{
    static uint8_t buffer[65536];
    node_t *node = &group->nodes[leader];
    uint64_t sent = 0, base = node->done_ok;
    int64_t until = s_now_ms() + 60000;
    for (uint64_t n = first; n <= last; n++) {
        while (sent - (node->done_ok - base) >= window && s_now_ms() < until)
            s_turn(group, 20);
        size_t size = s_entry(n, buffer);
        assert_true(replica_append(node->replica, buffer, size) > 0);
        sent++;
        uint8_t length[8];
        for (int i = 0; i < 8; i++)
            length[i] = (uint8_t) (size >> (8 * i));
        hash = s_fnv(s_fnv(hash, length, 8), buffer, size);
    }
    while (node->done_ok - base < sent && s_now_ms() < until)
        s_turn(group, 20);
    assert_int_equal(node->done_ok - base, sent);
    assert_int_equal(node->done_failed, 0);
    assert_false(node->bad_order);
    return hash;
}

/*  A group with a ready leader (its index in *leader) that every replica
    has seen apply entries 1..count; the hash they reached. */
static uint64_t s_running(group_t *group, uint64_t count, int *leader)
{
    *leader = s_wait_leader(group, 10000);
    uint64_t hash = s_append(group, *leader, 1, count, 16, s_hash_start);
    s_wait_converged(group, count, 10000);
    return hash;
}

/*  Every connected TCP socket of this process (the replicas' only) has
    TCP_NODELAY; returns how many there are. */
static int s_check_nodelay(void)
{
    DIR *fds = opendir("/proc/self/fd");
    assert_non_null(fds);
    int connected = 0;
    struct dirent *entry;
    while ((entry = readdir(fds))) {
        int fd = atoi(entry->d_name);
        if (entry->d_name[0] == '.' || fd == dirfd(fds))
            continue;
        int type = 0, listening = 0, nodelay = 0;
        socklen_t length = sizeof type;
        struct sockaddr_storage peer;
        socklen_t peer_length = sizeof peer;
        if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &length) || type != SOCK_STREAM)
            continue;
        length = sizeof listening;
        if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &length) || listening)
            continue;
        if (getpeername(fd, (struct sockaddr *) &peer, &peer_length)
            || peer.ss_family != AF_INET)
            continue;
        length = sizeof nodelay;
        assert_int_equal(getsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &nodelay, &length), 0);
        if (!nodelay)
            fail_msg("descriptor %d: a replica's connection without TCP_NODELAY", fd);
        connected++;
    }
    closedir(fds);
    return connected;
}

static void test_replicates_every_entry_in_order(void **state)
{
    (void) state;
    group_t *group = s_group(0, 0);
    int leader = s_wait_leader(group, 10000);
    uint64_t hash = s_append(group, leader, 1, 2000, 64, s_hash_start);
    s_wait_converged(group, 2000, 30000);
    assert_true(group->nodes[leader].hash == hash);
    /* Each replica connects to the two others and accepts their
       connections: every one of them without Nagle's delay. */
    assert_true(s_check_nodelay() >= 2 * (NODES - 1));
    for (int i = 0; i < NODES; i++)
        assert_int_equal(replica_restores(group->nodes[i].replica), 0);
    s_free(group);
}

static void test_leader_lost_is_replaced(void **state)
{
    (void) state;
    group_t *group = s_group(0, 0);
    int leader;
    uint64_t hash = s_running(group, 100, &leader);

    int64_t lost = s_now_ms();
    replica_close(&group->nodes[leader].replica);
    int next = s_wait_leader(group, 5000);
    int64_t took = s_now_ms() - lost;
    print_message("a new leader was ready %lld ms after the old one stopped\n", (long long) took);
    assert_true(next != leader);
    assert_true(took < 2000);

    hash = s_append(group, next, 101, 300, 16, hash);
    s_wait_converged(group, 300, 10000);
    /* The old leader comes back as a follower and catches up. */
    s_open(group, leader);
    s_wait_converged(group, 300, 10000);
    assert_true(group->nodes[leader].hash == hash);
    assert_int_equal(replica_role(group->nodes[leader].replica) == REPLICA_LEADER, 0);
    s_free(group);
}

static void test_replica_far_behind_catches_up_from_a_snapshot(void **state)
{
    (void) state;
    group_t *group = s_group(64, 16); /* a snapshot every 64 entries */
    int leader;
    uint64_t hash = s_running(group, 100, &leader);

    /* Stopped while the others go on far past the log they keep. */
    int behind = (leader + 1) % NODES;
    replica_close(&group->nodes[behind].replica);
    hash = s_append(group, leader, 101, 600, 16, hash);
    s_open(group, behind);
    /* A snapshot lost on the way is sent again after 10 s. */
    s_wait_converged(group, 600, 40000);
    assert_true(group->nodes[behind].hash == hash);
    assert_true(replica_restores(group->nodes[behind].replica) >= 1);
    s_free(group);
}

static void test_group_restarted_comes_back(void **state)
{
    (void) state;
    group_t *group = s_group(64, 16);
    int leader;
    uint64_t hash = s_running(group, 300, &leader);
    for (int i = 0; i < NODES; i++)
        replica_close(&group->nodes[i].replica);
    for (int i = 0; i < NODES; i++)
        s_open(group, i);
    /* A ready leader has applied everything committed before it led. */
    leader = s_wait_leader(group, 10000);
    assert_int_equal(group->nodes[leader].count, 300);
    assert_true(group->nodes[leader].hash == hash);
    s_wait_converged(group, 300, 10000);
    hash = s_append(group, leader, 301, 350, 16, hash);
    s_wait_converged(group, 350, 10000);
    assert_true(group->nodes[0].hash == hash);
    s_free(group);
}

static void test_follower_refuses_to_append(void **state)
{
    (void) state;
    group_t *group = s_group(0, 0);
    int leader = s_wait_leader(group, 10000);
    int follower = (leader + 1) % NODES;
    int64_t until = s_now_ms() + 5000;
    while (replica_leader(group->nodes[follower].replica, NULL) == 0 && s_now_ms() < until)
        s_turn(group, 20);
    assert_int_equal(replica_append(group->nodes[follower].replica, "x", 1), 0);
    assert_int_equal(replica_leader(group->nodes[follower].replica, NULL), leader + 1);
    assert_int_equal(replica_role(group->nodes[follower].replica), REPLICA_FOLLOWER);
    s_free(group);
}

/*  A change of the group asked at the leader, then committed: its
    callback's status. */
static int s_changed(group_t *group, int leader)
{
    node_t *node = &group->nodes[leader];
    int before = node->changes;
    int64_t until = s_now_ms() + 10000;
    while (node->changes == before && s_now_ms() < until)
        s_turn(group, 20);
    if (node->changes == before)
        fail_msg("the change of the group was not committed within 10 s");
    return node->change_status;
}

/*  The kind of replica `id` in the group as replica `i` knows it; -1 if
    not there. */
static int s_kind(group_t *group, int i, uint64_t id)
{
    replica_member_t members[8];
    size_t count = replica_members(group->nodes[i].replica, members, 8);
    for (size_t k = 0; k < count; k++)
        if (members[k].id == id)
            return (int) members[k].kind;
    return -1;
}

/*  A replica added to a group that runs gets a new id, joins (no
    bootstrap), catches up from a snapshot, and is made a voter once it
    has; one removed leaves the group; the lead handed over moves to the
    replica asked; changes are refused where they cannot be. */
static void test_membership_changes(void **state)
{
    (void) state;
    group_t *group = s_group(64, 16);
    int leader;
    uint64_t hash = s_running(group, 200, &leader);
    replica_t *lead = group->nodes[leader].replica;
    int follower = (leader + 1) % NODES;
    uint64_t id = 0;
    assert_int_equal(replica_add(group->nodes[follower].replica, group->addresses[NODES], &id),
                     REPLICA_ENOTLEADER);
    assert_int_equal(replica_add(lead, group->addresses[follower], &id), REPLICA_EDUPLICATE);
    assert_int_equal(replica_remove(lead, (uint64_t) leader + 1), REPLICA_ELEADER);

    assert_int_equal(replica_add(lead, group->addresses[NODES], &id), 0);
    assert_true(id > REPLICAS_MAX);
    uint64_t other = 0; /* one change at a time */
    assert_int_equal(replica_add(lead, "127.0.0.1:1", &other), REPLICA_EBUSY);
    assert_int_equal(s_changed(group, leader), 0);
    assert_int_equal(s_kind(group, leader, id), REPLICA_STANDBY);
    assert_int_equal(replica_members(lead, (replica_member_t[8]){0}, 8), NODES + 1);

    /* It joins: no group of its own, the leader sends it the log. */
    group->nodes[NODES].id = id;
    s_open(group, NODES);
    s_wait_converged(group, 200, 30000);
    assert_true(group->nodes[NODES].hash == hash);
    assert_true(replica_restores(group->nodes[NODES].replica) >= 1);
    int64_t until = s_now_ms() + 10000;
    while (s_kind(group, leader, id) != REPLICA_VOTER && s_now_ms() < until)
        s_turn(group, 20);
    assert_int_equal(s_kind(group, leader, id), REPLICA_VOTER);
    assert_true(replica_is_member(group->nodes[NODES].replica));

    /* One of the first group leaves (once the promotion is committed). */
    int rv;
    until = s_now_ms() + 10000;
    while ((rv = replica_remove(lead, (uint64_t) follower + 1)) == REPLICA_EBUSY
           && s_now_ms() < until)
        s_turn(group, 20);
    assert_int_equal(rv, 0);
    assert_int_equal(s_changed(group, leader), 0);
    assert_int_equal(s_kind(group, leader, (uint64_t) follower + 1), -1);
    replica_close(&group->nodes[follower].replica);
    hash = s_append(group, leader, 201, 260, 16, hash);
    s_wait_converged(group, 260, 10000);

    /* The lead handed to the replica that joined. */
    uint64_t to = 9999;
    assert_int_equal(replica_transfer(lead, &to), REPLICA_ENOID);
    to = id;
    assert_int_equal(replica_transfer(lead, &to), 0);
    assert_int_equal(to, id);
    until = s_now_ms() + 10000;
    while (s_leader(group) != NODES && s_now_ms() < until)
        s_turn(group, 20);
    assert_int_equal(s_leader(group), NODES);
    hash = s_append(group, NODES, 261, 300, 16, hash);
    s_wait_converged(group, 300, 10000);
    assert_true(group->nodes[leader].hash == hash);
    s_free(group);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_replicates_every_entry_in_order),
        cmocka_unit_test(test_leader_lost_is_replaced),
        cmocka_unit_test(test_replica_far_behind_catches_up_from_a_snapshot),
        cmocka_unit_test(test_group_restarted_comes_back),
        cmocka_unit_test(test_follower_refuses_to_append),
        cmocka_unit_test(test_membership_changes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
