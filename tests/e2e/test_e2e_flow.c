/*  Items as bytes, independent queues, and back-pressure from maxsize. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"

static int s_setup(void **state)
{
    char *const flags[] = {"--maxsize", "10", NULL};
    return harness_setup_flags(state, flags);
}

static void test_binary_payloads_come_out_byte_for_byte(void **state)
{
    harness_t *h = *state;
    static uint8_t max[1024 * 1024];
    for (size_t i = 0; i < sizeof max; i++)
        max[i] = (uint8_t) (i * 7 + 3);
    const uint8_t zeros[] = {0, 'a', 0, 0, 255, 0};
    struct {
        const void *data;
        size_t size;
    } items[] = {{zeros, sizeof zeros}, {"", 0}, {max, sizeof max}};
    aq_status_t rc;
    aq_producer_t *producer = aq_producer_new(h->address, "p", &rc);
    for (int i = 0; i < 3; i++)
        assert_int_equal(aq_producer_put(producer, "bin", items[i].data, items[i].size), AQ_OK);
    assert_int_equal(aq_producer_sync(producer, HARNESS_DEADLINE_MS), AQ_OK);
    aq_producer_destroy(&producer);
    aq_consumer_t *consumer = aq_consumer_new(h->address, "c", "bin", 1, &rc);
    for (int i = 0; i < 3; i++) {
        aq_item_t item;
        assert_int_equal(aq_consumer_get(consumer, &item, HARNESS_DEADLINE_MS), AQ_OK);
        assert_int_equal(item.size, items[i].size);
        if (item.size)
            assert_memory_equal(item.data, items[i].data, item.size);
        aq_consumer_ack(consumer, item.id);
    }
    aq_consumer_destroy(&consumer);
}

static void test_two_named_queues_do_not_affect_each_other(void **state)
{
    harness_t *h = *state;
    aq_status_t rc;
    aq_producer_t *producer = aq_producer_new(h->address, "p", &rc);
    aq_producer_put(producer, "alpha", "a", 1);
    aq_producer_put(producer, "beta", "b", 1);
    assert_int_equal(aq_producer_sync(producer, HARNESS_DEADLINE_MS), AQ_OK);
    aq_producer_destroy(&producer);
    aq_consumer_t *consumer = aq_consumer_new(h->address, "c", "alpha", 5, &rc);
    aq_item_t item;
    assert_int_equal(aq_consumer_get(consumer, &item, HARNESS_DEADLINE_MS), AQ_OK);
    assert_memory_equal(item.data, "a", 1);
    aq_consumer_ack(consumer, item.id);
    assert_int_equal(aq_consumer_get(consumer, &item, 200), AQ_TIMEOUT); /* beta's is not for it */
    aq_session_t *session = harness_session(h);
    aq_join_result_t result;
    assert_int_equal(aq_join(session, "alpha", -1, AQ_JOIN_BEFORE, &result), AQ_OK);
    assert_int_equal(aq_join(session, "beta", 100, AQ_JOIN_BEFORE, &result), AQ_TIMEOUT);
    assert_int_equal(result.outstanding, 1);
    aq_session_destroy(&session);
    aq_consumer_destroy(&consumer);
    assert_int_equal(harness_stat(h, "beta", "queued"), 1);
}

enum { BIG = 100 * 1024, BIG_COUNT = 600 };

/*  The real producer program putting BIG_COUNT lines of BIG - 1 bytes
    (plus newline) from a file; returns its pid. */
static pid_t s_start_producer(const harness_t *h, char *file)
{
    int fd = mkstemp(file);
    assert_true(fd >= 0);
    FILE *out = fdopen(fd, "w");
    static char line[BIG];
    memset(line, 'm', sizeof line - 1);
    line[sizeof line - 1] = '\n';
    for (int i = 0; i < BIG_COUNT; i++)
        assert_int_equal(fwrite(line, 1, sizeof line, out), sizeof line);
    fclose(out);
    char command[1024];
    snprintf(command, sizeof command,
             "exec %s/asyncq-producer --broker %s --queue bounded --stdin --quiet < %s",
             getenv("ASYNCQ_BIN_DIR"), h->address, file);
    char *argv[] = {"/bin/sh", "-c", command, NULL};
    aq_process_t producer;
    assert_int_equal(aq_process_spawn(&producer, argv, 0, 0), 0);
    return producer.pid;
}

static void test_maxsize_blocks_the_producer_and_bounds_broker_memory(void **state)
{
    harness_t *h = *state;
    uint64_t rss_before = harness_rss_kib(h->broker.pid);
    char file[] = "/tmp/asyncq-test-bulk-XXXXXX";
    pid_t producer = h->child = s_start_producer(h, file);
    harness_wait_stat(h, "bounded", "queued", 10);
    /* Full: the producer is held back, never more than maxsize queued. */
    for (int i = 0; i < 5; i++) {
        assert_int_equal(harness_stat(h, "bounded", "queued"), 10);
        assert_int_equal(waitpid(producer, NULL, WNOHANG), 0);
        zclock_sleep(50); /* observing that nothing changes takes time */
    }
    /* 600 items of 100 KiB are 60 MiB; the broker holds maxsize of them, the
       producer's window of held puts (8 MiB) and what ZeroMQ buffers
       (PULL_RCVHWM), whatever the producer sends. */
    uint64_t grown = harness_rss_kib(h->broker.pid) - rss_before;
    assert_true(grown < 30 * 1024);
    aq_status_t rc;
    aq_consumer_t *consumer = aq_consumer_new(h->address, "drain", "bounded", 10, &rc);
    for (int i = 0; i < BIG_COUNT; i++) {
        aq_item_t item;
        assert_int_equal(aq_consumer_get(consumer, &item, HARNESS_DEADLINE_MS), AQ_OK);
        assert_int_equal(item.size, BIG - 1);
        aq_consumer_ack(consumer, item.id);
    }
    aq_consumer_destroy(&consumer);
    int status;
    assert_int_equal(waitpid(producer, &status, 0), producer);
    h->child = 0;
    unlink(file);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    harness_wait_stat(h, "bounded", "acked", BIG_COUNT);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_binary_payloads_come_out_byte_for_byte, s_setup, harness_teardown),
        cmocka_unit_test_setup_teardown(test_two_named_queues_do_not_affect_each_other, s_setup, harness_teardown),
        cmocka_unit_test_setup_teardown(test_maxsize_blocks_the_producer_and_bounds_broker_memory, s_setup, harness_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
