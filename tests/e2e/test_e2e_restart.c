/*  A broker restarted on the same address: a waiting consumer notices the
    silence, says HELLO again with its credit, and gets items put after the
    restart; producers send again what the old broker had not confirmed, and
    the new broker keeps each put once. (Queues are in memory: items the old
    broker had confirmed are gone.) */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"

static char *const s_flags[] = {"--heartbeat-ms", "100", NULL};

static void s_put(const char *address, const char *item)
{
    aq_status_t rc;
    aq_producer_t *producer = aq_producer_new(address, "p", &rc);
    assert_non_null(producer);
    assert_int_equal(aq_producer_put(producer, "q", item, strlen(item)), AQ_OK);
    assert_int_equal(aq_producer_sync(producer, HARNESS_DEADLINE_MS), AQ_OK);
    aq_producer_destroy(&producer);
}

static void s_get(aq_consumer_t *consumer, const char *expected)
{
    aq_item_t item;
    aq_status_t rc;
    do
        rc = aq_consumer_get(consumer, &item, HARNESS_DEADLINE_MS);
    while (rc == AQ_REFUSED); /* acks of the old broker's items are refused */
    assert_int_equal(rc, AQ_OK);
    assert_int_equal(item.size, strlen(expected));
    assert_memory_equal(item.data, expected, item.size);
    aq_consumer_ack(consumer, item.id);
}

static void test_consumer_rejoins_a_restarted_broker_by_itself(void **state)
{
    harness_t *h = *state;
    aq_status_t rc;
    aq_consumer_t *consumer = aq_consumer_new(h->address, "c", "q", 1, &rc);
    assert_non_null(consumer);
    s_put(h->address, "before");
    s_get(consumer, "before");

    harness_restart_broker(h, s_flags);

    s_put(h->address, "after");
    s_get(consumer, "after");
    aq_consumer_flush(consumer);
    harness_wait_stat(h, "q", "acked", 1);
    aq_consumer_destroy(&consumer);
}

#define PRODUCERS 3
#define CONSUMERS 2
#define ITEMS_EACH 1500

static aq_process_t s_workers[PRODUCERS + CONSUMERS];

static void test_producers_and_consumers_carry_on_across_a_restart(void **state)
{
    harness_t *h = *state;
    aq_process_t *producers = s_workers, *consumers = s_workers + PRODUCERS;
    char count[16];
    snprintf(count, sizeof count, "%d", ITEMS_EACH);
    for (int i = 0; i < PRODUCERS; i++) {
        char *argv[] = {"asyncq-producer", "--broker", h->address, "--queue", "q", "--count", count,
                        "--max-sleep", "0.004", "--quiet", NULL};
        harness_spawn(&producers[i], argv);
    }
    for (int i = 0; i < CONSUMERS; i++) {
        char *argv[] = {"asyncq-consumer", "--broker", h->address, "--queue", "q", "--max-sleep",
                        "0", "--quiet", "--credit", "8", NULL};
        harness_spawn(&consumers[i], argv);
    }
    /* Mid-run: some items in, most still to come. */
    harness_wait_stat_at_least(h, "q", "puts", PRODUCERS * ITEMS_EACH / 4);
    harness_restart_broker(h, s_flags);

    int resent = 0;
    for (int i = 0; i < PRODUCERS; i++) {
        char line[256] = "";
        assert_true(aq_process_expect(&producers[i], "Producer ", line, sizeof line,
                                      HARNESS_DEADLINE_MS));
        resent += strstr(line, "sent again") != NULL;
        assert_int_equal(harness_wait_exit(&producers[i]), 0); /* all confirmed */
    }
    assert_true(resent > 0);

    aq_session_t *session = harness_session(h);
    aq_join_result_t result;
    assert_int_equal(aq_join(session, "q", HARNESS_DEADLINE_MS, AQ_JOIN_ALL, &result), AQ_OK);
    aq_session_destroy(&session);
    /* What the new broker holds: every put exactly once, each delivered
       once and acked: nothing lost, nothing twice. */
    uint64_t puts = harness_stat(h, "q", "puts");
    assert_true(puts > 0 && puts <= PRODUCERS * ITEMS_EACH);
    assert_int_equal(harness_stat(h, "q", "acked"), puts);
    assert_int_equal(harness_stat(h, "q", "delivered"), puts);
    assert_int_equal(harness_stat(h, "q", "redelivered"), 0);
    assert_int_equal(harness_stat(h, "q", "outstanding"), 0);
}

static int s_setup(void **state)
{
    return harness_setup_flags(state, s_flags);
}

static int s_teardown(void **state)
{
    for (int i = 0; i < PRODUCERS + CONSUMERS; i++)
        aq_process_stop(&s_workers[i], SIGTERM, 5000);
    return harness_teardown(state);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_consumer_rejoins_a_restarted_broker_by_itself,
                                        s_setup, harness_teardown),
        cmocka_unit_test_setup_teardown(test_producers_and_consumers_carry_on_across_a_restart,
                                        s_setup, s_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
