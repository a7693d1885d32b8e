/*  Shards (PROTOCOL.md 4.15): `asyncq-broker --shards 3` runs three
    brokers as one service, on ipc:// addresses that cannot collide; a
    client given the one address finds all three, its puts spread over
    them, a consumer of credit 1 gets every item from every shard while
    holding at most one, the join covers them all, a shard SIGKILLed is
    restarted with its items; a key pins its items to one shard; two
    brokers that say the same shard are refused with a clear error. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "asyncq/program.h"
#include "asyncq/service.h"
#include "harness.h"

#define SHARDS 3
#define ITEMS 3000

typedef harness_dir_t fixture_t;

/*  Shard K's address: the supervisor's, with -K for K > 0. */
static void s_shard_address(const fixture_t *f, int shard, char *address, size_t size)
{
    if (shard)
        snprintf(address, size, "ipc://%s/b-%d", f->root, shard);
    else
        snprintf(address, size, "ipc://%s/b", f->root);
}

/*  A harness_t that asks shard K (for harness_stat and the like). */
static harness_t s_shard(const fixture_t *f, int shard)
{
    harness_t h = {0};
    s_shard_address(f, shard, h.address, sizeof h.address);
    return h;
}

static void s_start_with(fixture_t *f, int durable, const char *heartbeat_ms)
{
    char path[4096], bind[128];
    assert_int_equal(aq_program_path("asyncq-broker", path, sizeof path), 0);
    s_shard_address(f, 0, bind, sizeof bind);
    char shards[] = "3";
    char *argv[] = {path, "--shards", shards, "--bind", bind, "--fsync", "never",
                    "--heartbeat-ms", (char *) heartbeat_ms,
                    durable ? "--data-dir" : NULL, f->data, NULL};
    assert_int_equal(aq_process_spawn_logged(&f->h.broker, argv, 1, 1, NULL), 0);
    snprintf(f->h.address, sizeof f->h.address, "%s", bind);
    char ready[256];
    for (int i = 0; i < SHARDS; i++)
        if (!aq_process_expect(&f->h.broker, "READY ", ready, sizeof ready, HARNESS_DEADLINE_MS))
            fail_msg("shard %d of 3 did not print READY", i);
}

static void s_start(fixture_t *f, int durable)
{
    s_start_with(f, durable, "1000");
}

/*  The sum of one number of a queue over the shards. */
static uint64_t s_total(const fixture_t *f, const char *queue, const char *key)
{
    uint64_t total = 0;
    for (int k = 0; k < SHARDS; k++) {
        harness_t h = s_shard(f, k);
        total += harness_stat(&h, queue, key);
    }
    return total;
}

/*  Puts items "from" to "to - 1", in batches of a hundred: one shard each,
    in turn. */
static void s_put_numbered(aq_producer_t *producer, const char *queue, int from, int to)
{
    char item[32];
    for (int i = from; i < to; i++) {
        int size = snprintf(item, sizeof item, "%d", i);
        assert_int_equal(aq_producer_put(producer, queue, item, (size_t) size), AQ_OK);
        if (i % 100 == 99)
            assert_int_equal(aq_producer_flush(producer), AQ_OK);
    }
}

static void s_put(const fixture_t *f, const char *queue, int count)
{
    aq_status_t rc;
    aq_producer_t *producer = aq_producer_new(f->h.address, "p", &rc);
    assert_non_null(producer);
    assert_int_equal(aq_producer_brokers(producer), SHARDS);
    s_put_numbered(producer, queue, 0, count);
    assert_int_equal(aq_producer_sync(producer, HARNESS_DEADLINE_MS), AQ_OK);
    aq_producer_destroy(&producer);
}

/*  Gets `count` items with credit 1, checking now and then that the
    service holds at most one in flight for it; each item seen once. */
static void s_get_all(const fixture_t *f, const char *queue, int count)
{
    aq_status_t rc;
    aq_consumer_t *consumer = aq_consumer_new(f->h.address, "c", queue, 1, &rc);
    assert_non_null(consumer);
    uint8_t *seen = calloc((size_t) count, 1);
    assert_non_null(seen);
    int shards_seen = 0;
    for (int i = 0; i < count; i++) {
        aq_item_t item;
        assert_int_equal(aq_consumer_get(consumer, &item, HARNESS_DEADLINE_MS), AQ_OK);
        char text[32];
        snprintf(text, sizeof text, "%.*s", (int) item.size, (const char *) item.data);
        int n = atoi(text);
        assert_true(n >= 0 && n < count);
        assert_false(seen[n]);
        seen[n] = 1;
        shards_seen |= 1 << (int) (item.id >> 56);
        if (i % 250 == 0)
            assert_true(s_total(f, queue, "inflight") <= 1);
        assert_int_equal(aq_consumer_ack(consumer, item.id), AQ_OK);
    }
    assert_int_equal(shards_seen, (1 << SHARDS) - 1);
    aq_consumer_destroy(&consumer);
    free(seen);
}

static int s_join(const fixture_t *f, const char *queue, char *out, size_t size)
{
    char *argv[] = {"asyncq", "join", "--broker", (char *) f->h.address, "--queue",
                    (char *) queue, "--timeout", "10", NULL};
    return harness_run(argv, out, size);
}

/*  A shard stopped (SIGSTOP) while a producer puts: once it is silent for
    three heartbeats, the producer's batches go to the others; its puts to
    the stopped shard stay unconfirmed, kept for it, and are confirmed once
    it runs again: every item delivered once, the join exact. */
static void test_a_stopped_shard_gets_no_batches_and_loses_nothing(void **state)
{
    fixture_t *f = *state;
    s_start_with(f, 0, "100");
    aq_status_t rc;
    aq_producer_t *producer = aq_producer_new(f->h.address, "p", &rc);
    assert_non_null(producer);
    pid_t stopped = harness_shard_pid(f->root, 2);
    assert_true(stopped > 0);
    s_put_numbered(producer, "s", 0, 900); /* 9 batches: three to each shard */
    assert_int_equal(aq_producer_sync(producer, HARNESS_DEADLINE_MS), AQ_OK);
    harness_t two = s_shard(f, 2);
    uint64_t on_two = harness_stat(&two, "s", "puts");
    assert_int_equal(kill(stopped, SIGSTOP), 0);
    zclock_sleep(400); /* four of its heartbeats: silent */
    s_put_numbered(producer, "s", 900, 2100); /* 12 batches more, to shards 0 and 1 */
    /* Confirmed by the two that run, but for at most one batch: heartbeats
       the stopped shard sent just before, read only now, make it look
       alive for one batch more. That batch is kept for it, unconfirmed. */
    aq_status_t synced = aq_producer_sync(producer, 2000);
    assert_true(synced == AQ_OK || synced == AQ_TIMEOUT);
    harness_t zero = s_shard(f, 0), one = s_shard(f, 1);
    uint64_t on_others = harness_stat(&zero, "s", "puts") + harness_stat(&one, "s", "puts");
    assert_true(on_others + 100 >= 2100 - on_two);
    assert_int_equal(kill(stopped, SIGCONT), 0);
    /* Running again, it takes what was kept for it: every put confirmed. */
    assert_int_equal(aq_producer_sync(producer, HARNESS_DEADLINE_MS), AQ_OK);
    assert_int_equal(harness_stat(&two, "s", "puts") + on_others, 2100);
    aq_producer_destroy(&producer);
    s_get_all(f, "s", 2100);
    char out[512];
    assert_int_equal(s_join(f, "s", out, sizeof out), 0);
    harness_assert_serving(&two, "ok");
}

static void test_one_address_finds_every_shard_and_the_join_covers_them(void **state)
{
    fixture_t *f = *state;
    s_start(f, 0);
    s_put(f, "q", ITEMS);
    assert_int_equal(s_total(f, "q", "queued"), ITEMS);
    for (int k = 0; k < SHARDS; k++) { /* every shard took some */
        harness_t h = s_shard(f, k);
        assert_true(harness_stat(&h, "q", "puts") >= ITEMS / 10);
    }
    char out[512];
    /* Not done: the join times out, naming the shard it waited on. */
    char *argv[] = {"asyncq", "join", "--broker", f->h.address, "--queue", "q", "--timeout",
                    "0.2", NULL};
    assert_int_equal(harness_run(argv, out, sizeof out), AQ_EXIT_TIMEOUT);
    char total[96];
    snprintf(total, sizeof total, "%d items still outstanding in a service of 3 brokers", ITEMS);
    assert_non_null(strstr(out, total));
    /* A join asks every shard at once: each holds it while the items are
       got, and it counts every item outstanding when it was asked. */
    char *join[] = {"asyncq", "join", "--broker", f->h.address, "--queue", "q", "--timeout",
                    "20", NULL};
    aq_process_t joiner = {0};
    harness_spawn(&joiner, join);
    for (int k = 0; k < SHARDS; k++) {
        harness_t h = s_shard(f, k);
        harness_wait_stat(&h, "q", "joiners", 1);
    }
    s_get_all(f, "q", ITEMS);
    char joined[256], want_joined[64];
    if (!aq_process_expect(&joiner, "joined q: ", joined, sizeof joined, HARNESS_DEADLINE_MS))
        fail_msg("asyncq join did not say it joined");
    assert_int_equal(harness_wait_exit(&joiner), 0);
    snprintf(want_joined, sizeof want_joined, "%d items were outstanding", ITEMS);
    if (!strstr(joined, want_joined))
        fail_msg("asyncq join said '%s': not '%s'", joined, want_joined);
    /* asyncq stats adds the shards up. */
    char *stats[] = {"asyncq", "stats", "--broker", f->h.address, "--queue", "q", "--format",
                     "kv", NULL};
    assert_int_equal(harness_run(stats, out, sizeof out), 0);
    char want[64];
    snprintf(want, sizeof want, "acked=%d ", ITEMS);
    assert_non_null(strstr(out, want));
    /* --brokers: a row per shard, each named. */
    char *per[] = {"asyncq", "stats", "--broker", f->h.address, "--queue", "q", "--brokers",
                   NULL};
    char rows[4096];
    assert_int_equal(harness_run(per, rows, sizeof rows), 0);
    for (int k = 0; k < SHARDS; k++) {
        char shard[16];
        snprintf(shard, sizeof shard, " shard=%d ", k);
        assert_non_null(strstr(rows, shard));
    }
    harness_t one = s_shard(f, 1);
    harness_assert_serving(&one, "ok");
}

static void test_a_killed_shard_comes_back_with_its_items(void **state)
{
    fixture_t *f = *state;
    s_start(f, 1);
    s_put(f, "d", 600);
    harness_t one = s_shard(f, 1);
    uint64_t on_one = harness_stat(&one, "d", "queued");
    assert_true(on_one > 0);
    pid_t pid = harness_shard_pid(f->root, 1);
    assert_true(pid > 0);
    assert_int_equal(kill(pid, SIGKILL), 0);
    /* The supervisor starts it again; it answers with what it had. */
    int64_t deadline = zclock_mono() + HARNESS_DEADLINE_MS;
    while (harness_shard_pid(f->root, 1) == pid || harness_shard_pid(f->root, 1) == 0) {
        assert_true(zclock_mono() < deadline);
        zclock_sleep(20);
    }
    harness_wait_stat(&one, "d", "queued", on_one);
    s_get_all(f, "d", 600);
    char out[512];
    assert_int_equal(s_join(f, "d", out, sizeof out), 0);
    harness_assert_serving(&one, "ok");
}

static void test_a_key_pins_its_items_to_one_shard_in_order(void **state)
{
    fixture_t *f = *state;
    s_start(f, 0);
    aq_status_t rc;
    aq_producer_t *producer = aq_producer_new(f->h.address, "p", &rc);
    assert_non_null(producer);
    for (int i = 0; i < 300; i++) {
        char item[16];
        int size = snprintf(item, sizeof item, "%d", i);
        assert_int_equal(aq_producer_put_key(producer, "k", "order-42", 8, item, (size_t) size,
                                             NULL),
                         AQ_OK);
        if (i % 10 == 9)
            assert_int_equal(aq_producer_flush(producer), AQ_OK);
    }
    assert_int_equal(aq_producer_sync(producer, HARNESS_DEADLINE_MS), AQ_OK);
    aq_producer_destroy(&producer);
    int pinned = (int) (aq_service_key_hash("order-42", 8) % SHARDS);
    harness_t h = s_shard(f, pinned);
    assert_int_equal(harness_stat(&h, "k", "queued"), 300);
    aq_consumer_t *consumer = aq_consumer_new(h.address, "c", "k", 10, &rc);
    assert_non_null(consumer);
    for (int i = 0; i < 300; i++) {
        aq_item_t item;
        assert_int_equal(aq_consumer_get(consumer, &item, HARNESS_DEADLINE_MS), AQ_OK);
        char text[16];
        snprintf(text, sizeof text, "%.*s", (int) item.size, (const char *) item.data);
        assert_int_equal(atoi(text), i);
        assert_int_equal((int) (item.id >> 56), pinned);
        aq_consumer_ack(consumer, item.id);
    }
    aq_consumer_destroy(&consumer);
    harness_assert_serving(&h, "ok");
}

static void test_two_brokers_of_one_shard_number_are_refused(void **state)
{
    fixture_t *f = *state;
    harness_t other = {0};
    harness_start_broker(&f->h, NULL);
    harness_start_broker(&other, NULL);
    char both[600];
    snprintf(both, sizeof both, "%s,%s", f->h.address, other.address);
    aq_status_t rc;
    aq_producer_t *producer = aq_producer_new(both, "p", &rc);
    assert_null(producer);
    assert_int_equal(rc, AQ_BAD_ENDPOINT);
    assert_non_null(strstr(aq_last_error(), "both say they are shard 0"));
    assert_non_null(strstr(aq_last_error(), other.address));
    /* A wrong address in a list is named too. */
    snprintf(both, sizeof both, "%s,tcp://no such", f->h.address);
    assert_null(aq_producer_new(both, "p", &rc));
    assert_int_equal(rc, AQ_BAD_ENDPOINT);
    assert_non_null(strstr(aq_last_error(), "'tcp://no such' is not a broker address"));
    harness_stop(&other);
    /* One broker given twice is one: the second HELLO, of the same client
       id, took the first one's place, and that session is the one kept. */
    snprintf(both, sizeof both, "%s,%s", f->h.address, f->h.address);
    producer = aq_producer_new(both, "p", &rc);
    assert_non_null(producer);
    assert_int_equal(aq_producer_brokers(producer), 1);
    assert_int_equal(aq_producer_put(producer, "twice", "x", 1), AQ_OK);
    assert_int_equal(aq_producer_sync(producer, HARNESS_DEADLINE_MS), AQ_OK);
    aq_producer_destroy(&producer);
    char *stats[] = {"asyncq", "stats", "--broker", both, "--queue", "twice", "--format", "kv",
                     NULL};
    char out[1024];
    assert_int_equal(harness_run(stats, out, sizeof out), 0);
    assert_non_null(strstr(out, " queued=1 "));
    harness_assert_serving(&f->h, "ok");
}

/*  Brokers of a service started one by one (not by --shards): shard K of
    three at ipc://ROOT/sK. */
static aq_process_t s_alone[SHARDS];

static void s_start_alone(const fixture_t *f, int shard)
{
    char path[4096], bind[128], number[8], service[400];
    assert_int_equal(aq_program_path("asyncq-broker", path, sizeof path), 0);
    snprintf(bind, sizeof bind, "ipc://%s/s%d", f->root, shard);
    snprintf(number, sizeof number, "%d", shard);
    snprintf(service, sizeof service, "ipc://%s/s0,ipc://%s/s1,ipc://%s/s2", f->root, f->root,
             f->root);
    char *argv[] = {path, "--bind", bind, "--shard", number, "--service", service,
                    "--heartbeat-ms", "200", NULL};
    assert_int_equal(aq_process_spawn_logged(&s_alone[shard], argv, 1, 1, NULL), 0);
    char ready[256];
    assert_true(aq_process_expect(&s_alone[shard], "READY ", ready, sizeof ready,
                                  HARNESS_DEADLINE_MS));
}

static int s_alone_teardown(void **state)
{
    for (int k = 0; k < SHARDS; k++)
        aq_process_stop(&s_alone[k], SIGTERM, 5000);
    return harness_dir_teardown(state);
}

/*  A key whose shard is `shard` of three. */
static void s_key_of(int shard, char *key, size_t size)
{
    for (int i = 0;; i++) {
        snprintf(key, size, "key-%d", i);
        if ((int) (aq_service_key_hash(key, strlen(key)) % SHARDS) == shard)
            return;
    }
}

/*  Shard 2 of three is down when the clients start, and one address given
    is wrong: the clients serve the others (the wrong one named, shard 2
    said HELLO to in the background); a join waits for shard 2, naming it;
    puts with a key of shard 2 are kept until it comes, then confirmed and
    delivered. */
static void test_a_shard_down_at_start_is_used_once_it_answers(void **state)
{
    fixture_t *f = *state;
    s_start_alone(f, 0);
    s_start_alone(f, 1);
    char given[600], one[200];
    snprintf(one, sizeof one, "ipc://%s/s0", f->root);
    snprintf(given, sizeof given, "%s,ipc://%s/nowhere", one, f->root);
    aq_status_t rc;
    aq_producer_t *producer = aq_producer_new(given, "p", &rc);
    assert_non_null(producer);
    assert_int_equal(aq_producer_brokers(producer), SHARDS);
    assert_non_null(strstr(aq_producer_unreachable(producer), "/nowhere"));
    assert_null(strstr(aq_producer_unreachable(producer), "/s2"));
    aq_consumer_t *consumer = aq_consumer_new(given, "c", "q", 2, &rc);
    assert_non_null(consumer);
    assert_non_null(strstr(aq_consumer_unreachable(consumer), "/nowhere"));

    s_put_numbered(producer, "q", 0, 300);
    assert_int_equal(aq_producer_sync(producer, HARNESS_DEADLINE_MS), AQ_OK);
    harness_t h0 = {0}, h1 = {0};
    snprintf(h0.address, sizeof h0.address, "%s", one);
    snprintf(h1.address, sizeof h1.address, "ipc://%s/s1", f->root);
    assert_int_equal(harness_stat(&h0, "q", "puts") + harness_stat(&h1, "q", "puts"), 300);
    for (int i = 0; i < 300; i++) {
        aq_item_t item;
        assert_int_equal(aq_consumer_get(consumer, &item, HARNESS_DEADLINE_MS), AQ_OK);
        assert_true((item.id >> 56) < 2);
        assert_int_equal(aq_consumer_ack(consumer, item.id), AQ_OK);
    }
    assert_int_equal(aq_consumer_flush(consumer), AQ_OK);

    /* The join waits for shard 2, and says so. */
    char out[1024], err[1024];
    char *join[] = {"asyncq", "join", "--broker", given, "--queue", "q", "--timeout", "0.5",
                    NULL};
    assert_int_equal(harness_run_err(join, out, sizeof out, err, sizeof err), AQ_EXIT_TIMEOUT);
    assert_non_null(strstr(out, "shard 2: no answer"));
    assert_non_null(strstr(err, "warning: "));
    assert_non_null(strstr(err, "/nowhere"));

    /* Stats: the others' numbers, and which shard they leave out. */
    char *stats[] = {"asyncq", "stats", "--broker", given, "--queue", "q", "--format", "kv",
                     NULL};
    assert_int_equal(harness_run_err(stats, out, sizeof out, err, sizeof err), AQ_EXIT_UNREACHABLE);
    assert_non_null(strstr(out, " acked=300 "));
    assert_non_null(strstr(err, "no answer from shard 2 (ipc://"));

    /* Puts with a key of shard 2 wait for it: not confirmed while it is away. */
    char key[32];
    s_key_of(2, key, sizeof key);
    for (int i = 0; i < 5; i++)
        assert_int_equal(aq_producer_put_key(producer, "q", key, strlen(key), "k", 1, NULL),
                         AQ_OK);
    assert_int_equal(aq_producer_sync(producer, 300), AQ_TIMEOUT);
    s_start_alone(f, 2);
    assert_int_equal(aq_producer_sync(producer, HARNESS_DEADLINE_MS), AQ_OK);
    harness_t h2 = {0};
    snprintf(h2.address, sizeof h2.address, "ipc://%s/s2", f->root);
    assert_int_equal(harness_stat(&h2, "q", "puts"), 5);
    /* The consumer gets them from shard 2 once it answers. */
    for (int i = 0; i < 5; i++) {
        aq_item_t item;
        assert_int_equal(aq_consumer_get(consumer, &item, HARNESS_DEADLINE_MS), AQ_OK);
        assert_int_equal((int) (item.id >> 56), 2);
        assert_int_equal(aq_consumer_ack(consumer, item.id), AQ_OK);
    }
    aq_consumer_destroy(&consumer);
    aq_producer_destroy(&producer);
    char *again[] = {"asyncq", "join", "--broker", given, "--queue", "q", "--timeout", "10",
                     NULL};
    assert_int_equal(harness_run(again, out, sizeof out), 0);
    assert_non_null(strstr(out, "joined q"));
    assert_int_equal(harness_stat(&h0, "q", "acked") + harness_stat(&h1, "q", "acked")
                         + harness_stat(&h2, "q", "acked"),
                     305);
    harness_assert_serving(&h2, "ok");
}


/*  Producers and consumers (the programs) at work while shard 1, durable,
    is SIGKILLed and restarted by the supervisor: every producer exits 0
    (every put confirmed, those to shard 1 sent again once it is back),
    every put is on a shard once, and after the join every one is acked. */
#define WORKERS 4
static aq_process_t s_workers[WORKERS];

static int s_workers_teardown(void **state)
{
    for (int i = 0; i < WORKERS; i++)
        aq_process_stop(&s_workers[i], SIGTERM, 5000);
    return harness_dir_teardown(state);
}

static void test_a_shard_killed_mid_run_loses_no_confirmed_put(void **state)
{
    fixture_t *f = *state;
    s_start(f, 1);
    for (int i = 0; i < 2; i++) {
        char *argv[] = {"asyncq-producer", "--broker", f->h.address, "--queue", "m", "--count",
                        "1500", "--max-sleep", "0.004", "--quiet", NULL};
        harness_spawn(&s_workers[i], argv);
        char *consumer[] = {"asyncq-consumer", "--broker", f->h.address, "--queue", "m",
                            "--max-sleep", "0", "--quiet", "--credit", "8", NULL};
        harness_spawn(&s_workers[2 + i], consumer);
    }
    harness_t one = s_shard(f, 1);
    harness_wait_stat_at_least(&one, "m", "puts", 100);
    pid_t pid = harness_shard_pid(f->root, 1);
    assert_true(pid > 0);
    assert_int_equal(kill(pid, SIGKILL), 0);
    int resent = 0;
    for (int i = 0; i < 2; i++) {
        char line[256] = "";
        assert_true(aq_process_expect(&s_workers[i], "Producer ", line, sizeof line,
                                      HARNESS_DEADLINE_MS));
        resent += strstr(line, "sent again") != NULL;
        assert_int_equal(harness_wait_exit(&s_workers[i]), 0); /* all confirmed */
    }
    assert_true(resent > 0);
    assert_true(harness_shard_pid(f->root, 1) != pid);
    char out[512];
    assert_int_equal(s_join(f, "m", out, sizeof out), 0);
    assert_int_equal(s_total(f, "m", "puts"), 3000);
    assert_int_equal(s_total(f, "m", "acked"), 3000);
    assert_int_equal(s_total(f, "m", "outstanding"), 0);
    harness_assert_serving(&one, "ok");
}


/*  A consumer that takes its time between gets (longer than three of the
    brokers' heartbeats) has not lost its brokers: what they sent meanwhile
    is unread, not missing. Nothing it holds is taken back, nothing is
    delivered twice. (The consumer looks for silent brokers at every
    1024th get, so a slow 1024th get is the test.) */
static void test_a_slow_consumer_keeps_its_sessions(void **state)
{
    fixture_t *f = *state;
    s_start_with(f, 0, "50");
    s_put(f, "slow", 1100);
    aq_status_t rc;
    aq_consumer_t *consumer = aq_consumer_new(f->h.address, "c", "slow", 8, &rc);
    assert_non_null(consumer);
    uint8_t seen[1100] = {0};
    for (int i = 0; i < 1100; i++) {
        if (i >= 1020 && i < 1028)
            zclock_sleep(200); /* four heartbeats, unread */
        aq_item_t item;
        assert_int_equal(aq_consumer_get(consumer, &item, HARNESS_DEADLINE_MS), AQ_OK);
        char text[16];
        snprintf(text, sizeof text, "%.*s", (int) item.size, (const char *) item.data);
        int n = atoi(text);
        assert_true(n >= 0 && n < 1100);
        assert_false(seen[n]);
        seen[n] = 1;
        assert_int_equal(aq_consumer_ack(consumer, item.id), AQ_OK);
    }
    assert_int_equal(aq_consumer_flush(consumer), AQ_OK);
    aq_consumer_destroy(&consumer);
    char out[512];
    assert_int_equal(s_join(f, "slow", out, sizeof out), 0);
    assert_int_equal(s_total(f, "slow", "redelivered"), 0);
    assert_int_equal(s_total(f, "slow", "acked"), 1100);
}


/*  A supervisor SIGKILLed (it cannot pass that on) takes its shards with
    it: none is left holding its ports, and the same command starts again. */
/*  A service's data directory is served whole. Started with fewer shards
    than it holds, it is refused (what the others hold would be served by
    none), unless --shards auto, which then runs as many as it holds; a
    broker without --shards is refused it, and a service the directory of
    a broker. Each refusal says what to start instead. Before, each of
    these started and served without the items of the rest. */
static void test_a_services_directory_is_served_whole(void **state)
{
    fixture_t *f = *state;
    s_start(f, 1);
    s_put(f, "w", 300);
    aq_process_stop(&f->h.broker, SIGTERM, HARNESS_DEADLINE_MS);
    char bind[128], out[512], err[1024];
    s_shard_address(f, 0, bind, sizeof bind);
    char *fewer[] = {"asyncq-broker", "--shards", "2", "--bind", bind, "--data-dir", f->data,
                     NULL};
    assert_int_equal(harness_run_err(fewer, out, sizeof out, err, sizeof err), AQ_EXIT_USAGE);
    if (!strstr(err, "--shards 2 would leave what shard 2 holds unserved. Start it with "
                     "--shards 3"))
        fail_msg("--shards 2 on 3 shards said '%s'", err);
    char *plain[] = {"asyncq-broker", "--bind", bind, "--data-dir", f->data, NULL};
    assert_int_not_equal(harness_run_err(plain, out, sizeof out, err, sizeof err), 0);
    if (!strstr(err, "holds the shards of a service") || !strstr(err, "with --shards 3"))
        fail_msg("a broker without --shards on 3 shards said '%s'", err);

    /* auto: one per core, and at least as many as it holds. */
    char path[4096];
    assert_int_equal(aq_program_path("asyncq-broker", path, sizeof path), 0);
    char *automatic[] = {path, "--shards", "auto", "--bind", bind, "--fsync", "never",
                         "--data-dir", f->data, NULL};
    assert_int_equal(aq_process_spawn_logged(&f->h.broker, automatic, 1, 1, NULL), 0);
    char ready[256];
    for (int i = 0; i < SHARDS; i++)
        if (!aq_process_expect(&f->h.broker, "READY ", ready, sizeof ready, HARNESS_DEADLINE_MS))
            fail_msg("shard %d of --shards auto did not print READY", i);
    assert_int_equal(s_total(f, "w", "queued"), 300);
    aq_process_stop(&f->h.broker, SIGTERM, HARNESS_DEADLINE_MS);

    /* A broker's own directory, with its items, is not a service's. */
    harness_t one = {0};
    char own[128];
    snprintf(own, sizeof own, "%s/own", f->root);
    char *flags[] = {"--data-dir", own, NULL};
    harness_start_broker(&one, flags);
    harness_put_items(&one, "w", 5);
    harness_stop(&one);
    char *over[] = {"asyncq-broker", "--shards", "2", "--bind", bind, "--data-dir", own, NULL};
    assert_int_equal(harness_run_err(over, out, sizeof out, err, sizeof err), AQ_EXIT_USAGE);
    if (!strstr(err, "holds the journal of a broker, not a service's shards"))
        fail_msg("--shards on a broker's directory said '%s'", err);
}

static void test_shards_go_with_a_killed_supervisor(void **state)
{
    fixture_t *f = *state;
    s_start(f, 1);
    for (int k = 0; k < SHARDS; k++) {
        /* Each in a process group of its own: a terminal's Ctrl-C reaches
           the supervisor alone, which passes it on once (twice would stop
           the shards at once, undrained). */
        pid_t shard = harness_shard_pid(f->root, k);
        assert_true(shard > 0);
        assert_int_equal(getpgid(shard), shard);
    }
    assert_int_equal(kill(f->h.broker.pid, SIGKILL), 0);
    aq_process_wait(&f->h.broker, HARNESS_DEADLINE_MS);
    int64_t deadline = zclock_mono() + HARNESS_DEADLINE_MS;
    for (int k = 0; k < SHARDS; k++)
        while (harness_shard_pid(f->root, k) > 0) {
            assert_true(zclock_mono() < deadline);
            zclock_sleep(20);
        }
    s_start(f, 1);
    harness_t two = s_shard(f, 2);
    harness_assert_serving(&two, "ok");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        harness_dir_test(test_one_address_finds_every_shard_and_the_join_covers_them),
        harness_dir_test(test_a_killed_shard_comes_back_with_its_items),
        harness_dir_test(test_a_stopped_shard_gets_no_batches_and_loses_nothing),
        harness_dir_test(test_a_key_pins_its_items_to_one_shard_in_order),
        harness_dir_test(test_two_brokers_of_one_shard_number_are_refused),
        cmocka_unit_test_setup_teardown(test_a_shard_down_at_start_is_used_once_it_answers,
                                        harness_dir_setup, s_alone_teardown),
        cmocka_unit_test_setup_teardown(test_a_shard_killed_mid_run_loses_no_confirmed_put,
                                        harness_dir_setup, s_workers_teardown),
        harness_dir_test(test_a_slow_consumer_keeps_its_sessions),
        harness_dir_test(test_shards_go_with_a_killed_supervisor),
        harness_dir_test(test_a_services_directory_is_served_whole),
    };
    return harness_run_group(tests);
}
