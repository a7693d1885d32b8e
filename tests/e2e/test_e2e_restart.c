/*  A broker restarted on the same address: a waiting consumer notices the
    silence, says HELLO again with its credit, and gets items put after the
    restart. (Queues are in memory: items of the old broker are gone.) */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"

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
    aq_consumer_t *consumer = aq_consumer_new(h->address, "q", 1, "c", &rc);
    assert_non_null(consumer);
    s_put(h->address, "before");
    s_get(consumer, "before");

    aq_process_stop(&h->broker, SIGKILL, 1000);
    char path[4096], ready[256];
    assert_int_equal(aq_program_path("asyncq-broker", path, sizeof path), 0);
    char *argv[] = {path, "--bind", h->address, "--heartbeat-ms", "100", NULL};
    assert_int_equal(aq_process_spawn(&h->broker, argv, 1, 1), 0);
    assert_true(aq_process_expect(&h->broker, "READY ", ready, sizeof ready, HARNESS_DEADLINE_MS));

    s_put(h->address, "after");
    s_get(consumer, "after");
    aq_consumer_flush(consumer);
    harness_wait_stat(h, "q", "acked", 1);
    aq_consumer_destroy(&consumer);
}

static int s_setup(void **state)
{
    char *const flags[] = {"--heartbeat-ms", "100", NULL};
    return harness_setup_flags(state, flags);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_consumer_rejoins_a_restarted_broker_by_itself,
                                        s_setup, harness_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
