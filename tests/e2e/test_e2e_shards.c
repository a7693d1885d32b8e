/*  Shards (PROTOCOL.md 4.15): `asyncq-broker --shards 3` runs three
    brokers as one service, on ipc:// addresses that cannot collide; a
    client given the one address finds all three, its puts spread over
    them, a consumer of credit 1 gets every item from every shard while
    holding at most one, the join covers them all, a shard SIGKILLed is
    restarted with its items; a key pins its items to one shard; two
    brokers that say the same shard are refused with a clear error. */
#include <dirent.h>
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

static pid_t s_shard_pid(const fixture_t *f, int shard);

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
    pid_t stopped = s_shard_pid(f, 2);
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
    s_get_all(f, "q", ITEMS);
    assert_int_equal(s_join(f, "q", out, sizeof out), 0);
    assert_non_null(strstr(out, "joined q"));
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

/*  The process of shard K: its command line names --shard K and this
    test's directory. */
static pid_t s_shard_pid(const fixture_t *f, int shard)
{
    DIR *proc = opendir("/proc");
    assert_non_null(proc);
    struct dirent *entry;
    char want[16];
    snprintf(want, sizeof want, "%d", shard);
    pid_t found = 0;
    while (!found && (entry = readdir(proc))) {
        char path[300], args[4096];
        snprintf(path, sizeof path, "/proc/%s/cmdline", entry->d_name);
        FILE *file = fopen(path, "r");
        if (!file)
            continue;
        size_t size = fread(args, 1, sizeof args - 1, file);
        fclose(file);
        args[size] = '\0';
        int is_shard = 0, in_dir = 0;
        for (size_t at = 0; at < size; at += strlen(args + at) + 1) {
            if (strcmp(args + at, "--shard") == 0 && at + 8 < size
                && strcmp(args + at + 8, want) == 0)
                is_shard = 1;
            if (strstr(args + at, f->root))
                in_dir = 1;
        }
        if (is_shard && in_dir)
            found = (pid_t) atoi(entry->d_name);
    }
    closedir(proc);
    return found;
}

static void test_a_killed_shard_comes_back_with_its_items(void **state)
{
    fixture_t *f = *state;
    s_start(f, 1);
    s_put(f, "d", 600);
    harness_t one = s_shard(f, 1);
    uint64_t on_one = harness_stat(&one, "d", "queued");
    assert_true(on_one > 0);
    pid_t pid = s_shard_pid(f, 1);
    assert_true(pid > 0);
    assert_int_equal(kill(pid, SIGKILL), 0);
    /* The supervisor starts it again; it answers with what it had. */
    int64_t deadline = zclock_mono() + HARNESS_DEADLINE_MS;
    while (s_shard_pid(f, 1) == pid || s_shard_pid(f, 1) == 0) {
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

int main(void)
{
    const struct CMUnitTest tests[] = {
        harness_dir_test(test_one_address_finds_every_shard_and_the_join_covers_them),
        harness_dir_test(test_a_killed_shard_comes_back_with_its_items),
        harness_dir_test(test_a_stopped_shard_gets_no_batches_and_loses_nothing),
        harness_dir_test(test_a_key_pins_its_items_to_one_shard_in_order),
        harness_dir_test(test_two_brokers_of_one_shard_number_are_refused),
    };
    return harness_run_group(tests);
}
