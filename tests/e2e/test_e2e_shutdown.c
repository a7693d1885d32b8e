/*  Shutdown, as Python 3.13's Queue.shutdown: puts refused; the graceful
    form drains and join completes, the immediate form discards what is
    queued and releases joins; once shut down and empty, every get, the
    waiting ones and every later one, says so at once; SIGTERM on the
    broker drains, then exits. */
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"

static aq_process_t s_worker;

static int s_teardown(void **state)
{
    aq_process_stop(&s_worker, SIGTERM, 5000);
    return harness_teardown(state);
}

static int s_setup_short_drain(void **state)
{
    char *const flags[] = {"--drain-ms", "300", NULL};
    return harness_setup_flags(state, flags);
}

static void s_put(const harness_t *h, const char *queue, int count)
{
    aq_status_t rc;
    aq_producer_t *producer = aq_producer_new(h->address, "p", &rc);
    assert_non_null(producer);
    for (int i = 0; i < count; i++)
        assert_int_equal(aq_producer_put(producer, queue, "item", 4), AQ_OK);
    assert_int_equal(aq_producer_sync(producer, HARNESS_DEADLINE_MS), AQ_OK);
    aq_producer_destroy(&producer);
}

static int s_cli(const harness_t *h, const char *command, const char *extra, char *out,
                 size_t size)
{
    char *argv[] = {"asyncq", (char *) command, "--broker", (char *) h->address, "--queue", "q",
                    (char *) extra, NULL};
    return harness_run(argv, out, size);
}

/*  Reads a process's output to its end; returns the lines starting with prefix. */
static int s_count_lines(aq_process_t *process, const char *prefix)
{
    char line[512];
    int count = 0, rc;
    while ((rc = aq_process_read_line(process, line, sizeof line, HARNESS_DEADLINE_MS)) == 1)
        count += strncmp(line, prefix, strlen(prefix)) == 0;
    assert_int_equal(rc, -1); /* the end, not a time-out */
    return count;
}

static void test_graceful_shutdown_refuses_puts_and_drains(void **state)
{
    harness_t *h = *state;
    s_put(h, "q", 30);
    char out[4096];
    assert_int_equal(s_cli(h, "shutdown", NULL, out, sizeof out), 0);
    assert_non_null(strstr(out, "state=draining"));
    assert_int_equal(s_cli(h, "put", "late", out, sizeof out), 1); /* refused */
    assert_int_equal(harness_stat(h, "q", "puts"), 30);
    s_put(h, "other", 1); /* other queues are open */

    char *argv[] = {"asyncq-consumer", "--broker", h->address, "--queue", "q", "--max-sleep",
                    "0", "--credit", "4", NULL};
    harness_spawn(&s_worker, argv);
    aq_session_t *session = harness_session(h);
    aq_join_result_t result;
    assert_int_equal(aq_join(session, "q", HARNESS_DEADLINE_MS, AQ_JOIN_BEFORE, &result), AQ_OK);
    assert_int_equal(result.waited, 30);
    aq_session_destroy(&session);
    /* Told the queue is shut down and empty, the consumer stops by itself. */
    assert_int_equal(s_count_lines(&s_worker, "Consumer "), 30);
    assert_int_equal(harness_wait_exit(&s_worker), 0);
    assert_int_equal(harness_stat(h, "q", "acked"), 30);
    assert_int_equal(harness_stat(h, "other", "queued"), 1);
}

static void test_immediate_shutdown_discards_and_releases_joins(void **state)
{
    harness_t *h = *state;
    s_put(h, "q", 30);
    aq_status_t rc;
    aq_consumer_t *consumer = aq_consumer_new(h->address, "holder", "q", 1, &rc);
    aq_item_t held;
    assert_int_equal(aq_consumer_get(consumer, &held, HARNESS_DEADLINE_MS), AQ_OK);

    char *join[] = {"asyncq", "join", "--broker", h->address, "--queue", "q", NULL};
    harness_spawn(&s_worker, join);
    harness_wait_stat(h, "q", "joiners", 1);
    char out[4096];
    assert_int_equal(s_cli(h, "shutdown", "--immediate", out, sizeof out), 0);
    assert_int_equal(harness_wait_exit(&s_worker), 1); /* the join was refused */
    assert_int_equal(harness_stat(h, "q", "discarded"), 29);
    assert_int_equal(harness_stat(h, "q", "queued"), 0);
    assert_int_equal(harness_stat(h, "q", "joiners"), 0);

    /* The item being processed may still be acked; then nothing is left. */
    aq_consumer_ack(consumer, held.id);
    aq_consumer_flush(consumer);
    harness_wait_stat(h, "q", "acked", 1);
    assert_int_equal(harness_stat(h, "q", "outstanding"), 0);
    assert_int_equal(aq_consumer_get(consumer, &held, HARNESS_DEADLINE_MS), AQ_SHUT_DOWN);
    aq_consumer_destroy(&consumer);
    /* A join asked later is refused too: not every item was processed
       (PROTOCOL.md 4.6). */
    assert_int_equal(s_cli(h, "join", NULL, out, sizeof out), 1);
}

/*  PROTOCOL.md 4.11: an immediate shutdown discards the delayed items at
    once, not when their delay ends: a consumer waiting on the queue hears
    QueueShutDown at once, not in 24 hours. */
static void test_immediate_shutdown_discards_delayed_items_at_once(void **state)
{
    harness_t *h = *state;
    s_put(h, "q", 2);
    aq_status_t rc;
    aq_consumer_t *consumer = aq_consumer_new(h->address, "c", "q", 2, &rc);
    assert_non_null(consumer);
    aq_item_t first, second;
    assert_int_equal(aq_consumer_get(consumer, &first, HARNESS_DEADLINE_MS), AQ_OK);
    assert_int_equal(aq_consumer_get(consumer, &second, HARNESS_DEADLINE_MS), AQ_OK);
    assert_int_equal(aq_consumer_nack(consumer, first.id, 86400000, "later"), AQ_OK);
    assert_int_equal(aq_consumer_ack(consumer, second.id), AQ_OK);
    assert_int_equal(aq_consumer_flush(consumer), AQ_OK);
    harness_wait_stat(h, "q", "delayed", 1);
    harness_wait_stat(h, "q", "acked", 1);

    char out[4096];
    assert_int_equal(s_cli(h, "shutdown", "--immediate", out, sizeof out), 0);
    assert_int_equal(harness_stat(h, "q", "delayed"), 0);
    assert_int_equal(harness_stat(h, "q", "discarded"), 1);
    assert_int_equal(harness_stat(h, "q", "outstanding"), 0);
    aq_item_t item;
    int64_t started = zclock_mono();
    assert_int_equal(aq_consumer_get(consumer, &item, HARNESS_DEADLINE_MS), AQ_SHUT_DOWN);
    assert_true(zclock_mono() - started < HARNESS_DEADLINE_MS / 2);
    aq_consumer_destroy(&consumer);
}

typedef struct {
    aq_consumer_t *consumer;
    aq_status_t rc;
} waiter_t;

/*  A get that waits (up to the deadline) in a thread of its own; the
    consumer is this thread's alone until it is joined. */
static void *s_wait_get(void *arg)
{
    waiter_t *waiter = arg;
    aq_item_t item;
    waiter->rc = aq_consumer_get(waiter->consumer, &item, HARNESS_DEADLINE_MS);
    return NULL;
}

/*  aq_consumer_get, which must return AQ_SHUT_DOWN without waiting. */
static void s_expect_shut_down_at_once(aq_consumer_t *consumer, int timeout_ms)
{
    aq_item_t item;
    int64_t started = zclock_mono();
    assert_int_equal(aq_consumer_get(consumer, &item, timeout_ms), AQ_SHUT_DOWN);
    assert_true(zclock_mono() - started < 1000);
}

/*  Python's get() raises QueueShutDown in every task waiting on a queue
    shut down and empty, and in every get after: a consumer waiting in get
    wakes with AQ_SHUT_DOWN, and from then on every get of every consumer
    of the queue returns AQ_SHUT_DOWN at once, whatever its timeout (0,
    -1), never waiting. */
static void test_shutdown_wakes_every_waiting_get_and_every_later_one(void **state)
{
    harness_t *h = *state;
    s_put(h, "q", 1);
    aq_status_t rc;
    aq_consumer_t *holder = aq_consumer_new(h->address, "holder", "q", 1, &rc);
    assert_non_null(holder);
    aq_item_t held;
    assert_int_equal(aq_consumer_get(holder, &held, HARNESS_DEADLINE_MS), AQ_OK);
    waiter_t waiter = {NULL, AQ_OK};
    waiter.consumer = aq_consumer_new(h->address, "waiter", "q", 1, &rc);
    assert_non_null(waiter.consumer);
    harness_wait_stat(h, "q", "consumers", 2);
    pthread_t thread;
    assert_int_equal(pthread_create(&thread, NULL, s_wait_get, &waiter), 0);

    /* Shut down while one item is in flight: not empty yet, nobody told. */
    aq_session_t *session = harness_session(h);
    assert_int_equal(aq_shutdown(session, "q", AQ_SHUTDOWN_DRAIN, NULL, NULL), AQ_OK);
    aq_session_destroy(&session);
    /* The last item acked: the queue is empty, the waiting get wakes. */
    int64_t acked = zclock_mono();
    assert_int_equal(aq_consumer_ack(holder, held.id), AQ_OK);
    assert_int_equal(aq_consumer_flush(holder), AQ_OK);
    assert_int_equal(pthread_join(thread, NULL), 0);
    assert_int_equal(waiter.rc, AQ_SHUT_DOWN);
    assert_true(zclock_mono() - acked < HARNESS_DEADLINE_MS / 2);

    /* Every later get, of the woken consumer and of the one that was not
       waiting, says so at once, for any timeout. */
    s_expect_shut_down_at_once(waiter.consumer, 0);
    s_expect_shut_down_at_once(waiter.consumer, HARNESS_DEADLINE_MS);
    s_expect_shut_down_at_once(waiter.consumer, -1);
    aq_item_t item;
    assert_int_equal(aq_consumer_get(holder, &item, HARNESS_DEADLINE_MS), AQ_SHUT_DOWN);
    s_expect_shut_down_at_once(holder, 0);
    s_expect_shut_down_at_once(holder, -1);
    /* A consumer that comes later hears it at its first get, and after. */
    aq_consumer_t *late = aq_consumer_new(h->address, "late", "q", 1, &rc);
    assert_non_null(late);
    assert_int_equal(aq_consumer_get(late, &item, HARNESS_DEADLINE_MS), AQ_SHUT_DOWN);
    s_expect_shut_down_at_once(late, 0);
    s_expect_shut_down_at_once(late, -1);
    aq_consumer_destroy(&late);
    aq_consumer_destroy(&holder);
    aq_consumer_destroy(&waiter.consumer);
    assert_int_equal(harness_stat(h, "q", "acked"), 1);
}

static void test_sigterm_drains_the_queues_then_exits(void **state)
{
    harness_t *h = *state;
    s_put(h, "q", 20);
    char *argv[] = {"asyncq-consumer", "--broker", h->address, "--queue", "q", "--max-sleep",
                    "0.02", "--credit", "1", NULL};
    harness_spawn(&s_worker, argv);
    harness_wait_stat(h, "q", "consumers", 1);
    kill(h->broker.pid, SIGTERM);
    assert_int_equal(s_count_lines(&s_worker, "Consumer "), 20); /* all, before the end */
    assert_int_equal(harness_wait_exit(&s_worker), 0);
    assert_int_equal(harness_wait_exit(&h->broker), 0);
}

static void test_sigterm_with_nobody_to_drain_exits_after_the_drain_time(void **state)
{
    harness_t *h = *state;
    s_put(h, "q", 5);
    kill(h->broker.pid, SIGTERM);
    assert_int_equal(harness_wait_exit(&h->broker), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_graceful_shutdown_refuses_puts_and_drains,
                                        harness_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_immediate_shutdown_discards_and_releases_joins,
                                        harness_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_immediate_shutdown_discards_delayed_items_at_once,
                                        harness_setup, harness_teardown),
        cmocka_unit_test_setup_teardown(test_shutdown_wakes_every_waiting_get_and_every_later_one,
                                        harness_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_sigterm_drains_the_queues_then_exits, harness_setup,
                                        s_teardown),
        cmocka_unit_test_setup_teardown(
            test_sigterm_with_nobody_to_drain_exits_after_the_drain_time, s_setup_short_drain,
            s_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
