/*  Leases: an item not acked in time goes to another consumer, a late ack is
    refused as LEASE_EXPIRED and not counted, TOUCH keeps a lease, NACK with a
    delay returns an item later; a queue and a put can have their own lease. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"

static int s_setup(void **state)
{
    char *const flags[] = {"--lease-ms", "300", "--max-attempts", "2", NULL};
    return harness_setup_flags(state, flags);
}

/*  A longer lease for the TOUCH test: touching every 100 ms, it passes even
    if the machine stalls for 900 ms. */
static int s_setup_long_lease(void **state)
{
    char *const flags[] = {"--lease-ms", "1000", NULL};
    return harness_setup_flags(state, flags);
}

static int s_setup_queue_lease(void **state)
{
    char *const flags[] = {"--lease-ms", "60000", "--queue-lease", "fast=250", NULL};
    return harness_setup_flags(state, flags);
}

static void s_put_one(const harness_t *h)
{
    aq_status_t rc;
    aq_producer_t *producer = aq_producer_new(h->address, "p", &rc);
    assert_int_equal(aq_producer_put(producer, "q", "job", 3), AQ_OK);
    assert_int_equal(aq_producer_sync(producer, HARNESS_DEADLINE_MS), AQ_OK);
    aq_producer_destroy(&producer);
}

static aq_consumer_t *s_consumer(const harness_t *h, const char *name)
{
    aq_status_t rc;
    aq_consumer_t *consumer = aq_consumer_new(h->address, name, "q", 1, &rc);
    assert_non_null(consumer);
    return consumer;
}

static void test_expired_lease_goes_to_another_and_late_ack_is_refused(void **state)
{
    harness_t *h = *state;
    s_put_one(h);
    aq_consumer_t *slow = s_consumer(h, "slow"), *other = s_consumer(h, "other");
    aq_item_t first, second;
    assert_int_equal(aq_consumer_get(slow, &first, HARNESS_DEADLINE_MS), AQ_OK);
    assert_int_equal(first.attempt, 1);
    assert_int_equal(aq_consumer_get(other, &second, HARNESS_DEADLINE_MS), AQ_OK);
    assert_true(second.id == first.id);
    assert_int_equal(second.attempt, 2);
    aq_consumer_ack(slow, first.id); /* too late */
    aq_consumer_flush(slow);
    assert_int_equal(aq_consumer_get(slow, &first, HARNESS_DEADLINE_MS), AQ_REFUSED);
    assert_int_equal(aq_session_error(aq_consumer_session(slow))->code, AQ_LEASE_EXPIRED);
    assert_int_equal(harness_stat(h, "q", "acked"), 0);
    aq_consumer_ack(other, second.id);
    aq_consumer_flush(other);
    aq_session_t *session = harness_session(h);
    aq_join_result_t result;
    assert_int_equal(aq_join(session, "q", -1, AQ_JOIN_BEFORE, &result), AQ_OK);
    aq_session_destroy(&session);
    assert_int_equal(harness_stat(h, "q", "acked"), 1);
    aq_consumer_destroy(&slow);
    aq_consumer_destroy(&other);
}

static void test_touch_keeps_the_lease_past_its_length(void **state)
{
    harness_t *h = *state;
    s_put_one(h);
    aq_consumer_t *holder = s_consumer(h, "holder"), *other = s_consumer(h, "other");
    aq_item_t item, none;
    assert_int_equal(aq_consumer_get(holder, &item, HARNESS_DEADLINE_MS), AQ_OK);
    for (int i = 0; i < 30; i++) { /* 30 x 100 ms: three leases */
        assert_int_equal(aq_consumer_touch(holder, item.id), AQ_OK);
        assert_int_equal(aq_consumer_get(other, &none, 100), AQ_TIMEOUT);
    }
    assert_int_equal(aq_consumer_ack(holder, item.id), AQ_OK);
    aq_consumer_flush(holder);
    harness_wait_stat(h, "q", "acked", 1);
    assert_int_equal(harness_stat(h, "q", "redelivered"), 0);
    aq_consumer_destroy(&holder);
    aq_consumer_destroy(&other);
}

static void test_nack_with_delay_returns_the_item_after_the_delay(void **state)
{
    harness_t *h = *state;
    s_put_one(h);
    aq_consumer_t *consumer = s_consumer(h, "c");
    aq_item_t item;
    assert_int_equal(aq_consumer_get(consumer, &item, HARNESS_DEADLINE_MS), AQ_OK);
    int64_t nacked = zclock_mono();
    assert_int_equal(aq_consumer_nack(consumer, item.id, 400, "try later"), AQ_OK);
    harness_wait_stat(h, "q", "delayed", 1);
    assert_int_equal(aq_consumer_get(consumer, &item, HARNESS_DEADLINE_MS), AQ_OK);
    assert_true(zclock_mono() - nacked >= 390); /* not before its delay */
    assert_int_equal(item.attempt, 2);
    aq_consumer_ack(consumer, item.id);
    aq_consumer_flush(consumer);
    harness_wait_stat(h, "q", "acked", 1);
    assert_int_equal(harness_stat(h, "q", "outstanding"), 0);
    aq_consumer_destroy(&consumer);
}

static void s_nack_twice(aq_consumer_t *consumer)
{
    for (int attempt = 1; attempt <= 2; attempt++) {
        aq_item_t item;
        assert_int_equal(aq_consumer_get(consumer, &item, HARNESS_DEADLINE_MS), AQ_OK);
        assert_int_equal(item.attempt, attempt);
        assert_int_equal(aq_consumer_nack(consumer, item.id, 0, NULL), AQ_OK);
    }
}

static void test_poison_item_is_dead_lettered_and_join_reports_it(void **state)
{
    harness_t *h = *state;
    s_put_one(h);
    aq_session_t *joiner = harness_session(h);
    aq_msg_t join = {.cmd = AQ_CMD_JOIN, .tag = aq_bytes_str("j"), .queue = aq_bytes_str("q")};
    assert_int_equal(aq_session_send(joiner, &join), AQ_OK);
    aq_consumer_t *consumer = s_consumer(h, "c");
    s_nack_twice(consumer);
    aq_msg_t reply;
    assert_int_equal(aq_session_await(joiner, "j", &reply, HARNESS_DEADLINE_MS, NULL, NULL), AQ_OK);
    assert_int_equal(reply.cmd, AQ_CMD_JOINED);
    assert_int_equal(reply.count, 1);
    assert_int_equal(reply.dead, 1);
    aq_session_destroy(&joiner);
    assert_int_equal(harness_stat(h, "q", "dead"), 1);
    assert_int_equal(harness_stat(h, "q", "outstanding"), 0);

    char out[4096];
    char *list[] = {"asyncq", "dead", "list", "--broker", h->address, "--queue", "q", NULL};
    assert_int_equal(harness_run(list, out, sizeof out), 0);
    assert_non_null(strstr(out, "attempts=2 size=3"));
    char *requeue[] = {"asyncq", "dead", "requeue", "--broker", h->address, "--queue", "q", NULL};
    assert_int_equal(harness_run(requeue, out, sizeof out), 0);
    assert_non_null(strstr(out, "requeued=1"));
    aq_item_t item;
    assert_int_equal(aq_consumer_get(consumer, &item, HARNESS_DEADLINE_MS), AQ_OK);
    assert_int_equal(item.attempt, 1); /* a fresh start */
    aq_consumer_ack(consumer, item.id);
    aq_consumer_flush(consumer);
    harness_wait_stat(h, "q", "acked", 1);

    s_put_one(h);
    s_nack_twice(consumer);
    harness_wait_stat(h, "q", "dead", 1);
    char *purge[] = {"asyncq", "dead", "purge", "--broker", h->address, "--queue", "q", NULL};
    assert_int_equal(harness_run(purge, out, sizeof out), 0);
    assert_non_null(strstr(out, "purged=1"));
    assert_int_equal(harness_stat(h, "q", "dead"), 0);
    aq_consumer_destroy(&consumer);
}

/*  Gets the item on `queue`, lets its lease run out, and checks that it
    comes again with the same lease. */
static void s_expect_lease(const harness_t *h, const char *queue, uint64_t lease_ms)
{
    aq_status_t rc;
    aq_consumer_t *consumer = aq_consumer_new(h->address, "c", queue, 2, &rc);
    assert_non_null(consumer);
    aq_item_t item;
    assert_int_equal(aq_consumer_get(consumer, &item, HARNESS_DEADLINE_MS), AQ_OK);
    assert_int_equal(item.lease_ms, lease_ms);
    assert_int_equal(aq_consumer_get(consumer, &item, HARNESS_DEADLINE_MS), AQ_OK);
    assert_int_equal(item.attempt, 2); /* taken back while held, delivered again */
    assert_int_equal(item.lease_ms, lease_ms);
    aq_consumer_ack(consumer, item.id);
    aq_consumer_flush(consumer);
    harness_wait_stat(h, queue, "acked", 1);
    aq_consumer_destroy(&consumer);
}

static void test_a_queue_and_a_put_can_have_their_own_lease(void **state)
{
    harness_t *h = *state;
    aq_status_t rc;
    aq_producer_t *producer = aq_producer_new(h->address, "p", &rc);
    assert_int_equal(aq_producer_put(producer, "fast", "a", 1), AQ_OK);
    assert_int_equal(aq_producer_put_lease(producer, "slow", "b", 1, 200), AQ_OK);
    assert_int_equal(aq_producer_put(producer, "other", "c", 1), AQ_OK);
    assert_int_equal(aq_producer_sync(producer, HARNESS_DEADLINE_MS), AQ_OK);
    aq_producer_destroy(&producer);
    assert_int_equal(harness_stat(h, "fast", "lease_ms"), 250);
    assert_int_equal(harness_stat(h, "other", "lease_ms"), 60000);
    s_expect_lease(h, "fast", 250);
    s_expect_lease(h, "slow", 200);

    aq_consumer_t *consumer = aq_consumer_new(h->address, "c", "other", 1, &rc);
    aq_item_t item;
    assert_int_equal(aq_consumer_get(consumer, &item, HARNESS_DEADLINE_MS), AQ_OK);
    assert_int_equal(item.lease_ms, 60000);
    aq_consumer_destroy(&consumer);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_expired_lease_goes_to_another_and_late_ack_is_refused, s_setup, harness_teardown),
        cmocka_unit_test_setup_teardown(test_touch_keeps_the_lease_past_its_length, s_setup_long_lease, harness_teardown),
        cmocka_unit_test_setup_teardown(test_nack_with_delay_returns_the_item_after_the_delay, s_setup, harness_teardown),
        cmocka_unit_test_setup_teardown(test_poison_item_is_dead_lettered_and_join_reports_it, s_setup, harness_teardown),
        cmocka_unit_test_setup_teardown(test_a_queue_and_a_put_can_have_their_own_lease, s_setup_queue_lease, harness_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
