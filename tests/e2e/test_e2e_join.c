/*  join, exactly: never early, never held back by later items, at once on
    an empty queue, time-out with the outstanding count, several joiners,
    and the producer-exit-then-join guarantee. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"

/*  Long enough that a wrongly sent JOINED would have arrived. */
#define NOT_YET_MS 300

static void s_put(const harness_t *h, const char *queue, int count)
{
    aq_status_t rc;
    aq_producer_t *producer = aq_producer_new(h->address, "test-producer", &rc);
    assert_non_null(producer);
    for (int i = 0; i < count; i++)
        assert_int_equal(aq_producer_put(producer, queue, "item", 4), AQ_OK);
    assert_int_equal(aq_producer_sync(producer, HARNESS_DEADLINE_MS), AQ_OK);
    aq_producer_destroy(&producer);
}

static void s_send_join(aq_session_t *session, const char *tag, uint64_t timeout_ms,
                        aq_join_mode_t mode)
{
    aq_msg_t join = {.cmd = AQ_CMD_JOIN, .tag = aq_bytes_str(tag), .queue = aq_bytes_str("q"),
                     .timeout_ms = timeout_ms, .mode = mode};
    assert_int_equal(aq_session_send(session, &join), AQ_OK);
}

static void s_expect_silence(aq_session_t *session)
{
    aq_msg_t msg;
    assert_int_equal(aq_session_recv(session, &msg, NOT_YET_MS), AQ_TIMEOUT);
}

static void s_expect_joined(aq_session_t *session, const char *tag, uint64_t waited)
{
    aq_msg_t msg;
    assert_int_equal(aq_session_await(session, tag, &msg, HARNESS_DEADLINE_MS, NULL, NULL), AQ_OK);
    assert_int_equal(msg.cmd, AQ_CMD_JOINED);
    assert_int_equal(msg.count, waited);
}

static void test_join_on_empty_queue_returns_at_once_twice(void **state)
{
    harness_t *h = *state;
    aq_session_t *session = harness_session(h);
    aq_join_result_t result;
    assert_int_equal(aq_join(session, "never-used", -1, AQ_JOIN_BEFORE, &result), AQ_OK);
    assert_int_equal(aq_join(session, "never-used", -1, AQ_JOIN_ALL, &result), AQ_OK);
    s_put(h, "q", 1);
    aq_status_t rc;
    aq_consumer_t *consumer = aq_consumer_new(h->address, "c", "q", 1, &rc);
    aq_item_t item;
    assert_int_equal(aq_consumer_get(consumer, &item, HARNESS_DEADLINE_MS), AQ_OK);
    assert_int_equal(aq_consumer_ack(consumer, item.id), AQ_OK);
    aq_consumer_destroy(&consumer);
    harness_wait_stat(h, "q", "outstanding", 0);
    assert_int_equal(aq_join(session, "q", -1, AQ_JOIN_BEFORE, &result), AQ_OK);
    assert_int_equal(result.waited, 0);
    aq_session_destroy(&session);
}

static void test_join_waits_for_the_slow_consumers_ack_and_returns_right_after(void **state)
{
    harness_t *h = *state;
    s_put(h, "q", 1);
    aq_status_t rc;
    aq_consumer_t *consumer = aq_consumer_new(h->address, "slow", "q", 1, &rc);
    aq_item_t item;
    assert_int_equal(aq_consumer_get(consumer, &item, HARNESS_DEADLINE_MS), AQ_OK);
    aq_session_t *joiner = harness_session(h);
    s_send_join(joiner, "j", 0, AQ_JOIN_BEFORE);
    s_expect_silence(joiner);
    assert_int_equal(aq_consumer_ack(consumer, item.id), AQ_OK);
    assert_int_equal(aq_consumer_flush(consumer), AQ_OK);
    s_expect_joined(joiner, "j", 1);
    aq_session_destroy(&joiner);
    aq_consumer_destroy(&consumer);
}

static void test_join_times_out_with_the_outstanding_count(void **state)
{
    harness_t *h = *state;
    s_put(h, "q", 3);
    char out[1024];
    char *argv[] = {"asyncq", "join", "--broker", h->address, "--queue", "q", "--timeout", "0.2", NULL};
    assert_int_equal(harness_run(argv, out, sizeof out), 4);
    assert_non_null(strstr(out, "3 items still outstanding"));
    /* In the library, timeout 0 does not wait (where the wire's 0 would
       wait for ever): it says at once that 3 items are outstanding. */
    aq_session_t *session = harness_session(h);
    aq_join_result_t result;
    int64_t started = zclock_mono();
    assert_int_equal(aq_join(session, "q", 0, AQ_JOIN_BEFORE, &result), AQ_TIMEOUT);
    assert_true(zclock_mono() - started < 1000);
    assert_int_equal(result.outstanding, 3);
    assert_int_equal(aq_join(session, "q", AQ_WAIT_MAX_MS + 1, AQ_JOIN_BEFORE, &result),
                     AQ_MALFORMED);
    aq_session_destroy(&session);
}

static void test_two_concurrent_joiners_are_both_answered(void **state)
{
    harness_t *h = *state;
    s_put(h, "q", 2);
    aq_session_t *first = harness_session(h), *second = harness_session(h);
    s_send_join(first, "a", 0, AQ_JOIN_BEFORE);
    s_send_join(second, "b", 0, AQ_JOIN_BEFORE);
    s_expect_silence(first);
    aq_status_t rc;
    aq_consumer_t *consumer = aq_consumer_new(h->address, "c", "q", 2, &rc);
    for (int i = 0; i < 2; i++) {
        aq_item_t item;
        assert_int_equal(aq_consumer_get(consumer, &item, HARNESS_DEADLINE_MS), AQ_OK);
        aq_consumer_ack(consumer, item.id);
    }
    aq_consumer_flush(consumer);
    s_expect_joined(first, "a", 2);
    s_expect_joined(second, "b", 2);
    aq_consumer_destroy(&consumer);
    aq_session_destroy(&first);
    aq_session_destroy(&second);
}

static void test_items_put_after_the_join_do_not_hold_it_but_hold_join_all(void **state)
{
    harness_t *h = *state;
    s_put(h, "q", 1);
    aq_status_t rc;
    aq_consumer_t *consumer = aq_consumer_new(h->address, "c", "q", 1, &rc);
    aq_item_t first;
    assert_int_equal(aq_consumer_get(consumer, &first, HARNESS_DEADLINE_MS), AQ_OK);
    aq_session_t *before = harness_session(h), *all = harness_session(h);
    s_send_join(before, "before", 0, AQ_JOIN_BEFORE);
    s_send_join(all, "all", 0, AQ_JOIN_ALL);
    harness_wait_stat(h, "q", "joiners", 2);
    s_put(h, "q", 1); /* after both joins */
    aq_consumer_ack(consumer, first.id);
    aq_consumer_flush(consumer);
    s_expect_joined(before, "before", 1);
    s_expect_silence(all);
    aq_item_t later;
    assert_int_equal(aq_consumer_get(consumer, &later, HARNESS_DEADLINE_MS), AQ_OK);
    aq_consumer_ack(consumer, later.id);
    aq_consumer_flush(consumer);
    s_expect_joined(all, "all", 1);
    aq_consumer_destroy(&consumer);
    aq_session_destroy(&before);
    aq_session_destroy(&all);
}

static void test_join_right_after_producers_exit_sees_every_item(void **state)
{
    harness_t *h = *state;
    for (int round = 0; round < 3; round++) {
        char *argv[] = {"asyncq-producer", "--broker", h->address, "--queue", "q", "--count",
                        "500", "--max-sleep", "0", "--quiet", NULL};
        assert_int_equal(harness_run(argv, NULL, 0), 0);
    }
    /* No consumer: every item put must be outstanding at once. */
    char out[1024];
    char *argv[] = {"asyncq", "join", "--broker", h->address, "--queue", "q", "--timeout", "0.1", NULL};
    assert_int_equal(harness_run(argv, out, sizeof out), 4);
    assert_non_null(strstr(out, "1500 items still outstanding"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_join_on_empty_queue_returns_at_once_twice, harness_setup, harness_teardown),
        cmocka_unit_test_setup_teardown(test_join_waits_for_the_slow_consumers_ack_and_returns_right_after, harness_setup, harness_teardown),
        cmocka_unit_test_setup_teardown(test_join_times_out_with_the_outstanding_count, harness_setup, harness_teardown),
        cmocka_unit_test_setup_teardown(test_two_concurrent_joiners_are_both_answered, harness_setup, harness_teardown),
        cmocka_unit_test_setup_teardown(test_items_put_after_the_join_do_not_hold_it_but_hold_join_all, harness_setup, harness_teardown),
        cmocka_unit_test_setup_teardown(test_join_right_after_producers_exit_sees_every_item, harness_setup, harness_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
