/*  A consumer killed while it holds items: every item is still acked exactly
    once, by someone else, and join completes. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"

enum { ITEMS = 10, HELD = 3 };

/*  Gets HELD items, tells the parent, then hangs until killed. Runs in a
    fork made before the parent touches ZeroMQ. */
static void s_doomed_consumer(const char *address, int ready_fd)
{
    aq_status_t rc;
    aq_consumer_t *consumer = aq_consumer_new(address, "doomed", "q", HELD, &rc);
    for (int i = 0; consumer && i < HELD; i++) {
        aq_item_t item;
        if (aq_consumer_get(consumer, &item, HARNESS_DEADLINE_MS) != AQ_OK)
            _exit(1);
    }
    if (write(ready_fd, "x", 1) != 1)
        _exit(1);
    for (;;)
        pause();
}

static int s_setup(void **state)
{
    char *const flags[] = {"--heartbeat-ms", "100", NULL};
    return harness_setup_flags(state, flags);
}

static void test_sigkilled_consumers_items_go_to_another_and_join_completes(void **state)
{
    harness_t *h = *state;
    char *put[ITEMS + 8] = {"asyncq", "put", "--broker", h->address, "--queue", "q"};
    char items[ITEMS][8];
    for (int i = 0; i < ITEMS; i++) {
        snprintf(items[i], sizeof items[i], "i%d", i);
        put[6 + i] = items[i];
    }
    assert_int_equal(harness_run(put, NULL, 0), 0);

    int ready[2];
    assert_int_equal(pipe(ready), 0);
    pid_t doomed = h->child = fork();
    assert_true(doomed >= 0);
    if (doomed == 0)
        s_doomed_consumer(h->address, ready[1]);
    char byte;
    assert_int_equal(read(ready[0], &byte, 1), 1);
    kill(doomed, SIGKILL);
    assert_int_equal(waitpid(doomed, NULL, 0), doomed);
    h->child = 0;

    aq_status_t rc;
    aq_consumer_t *survivor = aq_consumer_new(h->address, "survivor", "q", ITEMS, &rc);
    assert_non_null(survivor);
    int seen[ITEMS] = {0}, retried = 0;
    for (int i = 0; i < ITEMS; i++) {
        aq_item_t item;
        assert_int_equal(aq_consumer_get(survivor, &item, HARNESS_DEADLINE_MS), AQ_OK);
        char text[8] = {0};
        memcpy(text, item.data, item.size < sizeof text - 1 ? item.size : sizeof text - 1);
        int index = atoi(text + 1);
        assert_true(index >= 0 && index < ITEMS);
        seen[index]++;
        retried += item.attempt > 1;
        aq_consumer_ack(survivor, item.id);
    }
    aq_consumer_flush(survivor);
    for (int i = 0; i < ITEMS; i++)
        assert_int_equal(seen[i], 1);
    assert_int_equal(retried, HELD);
    aq_session_t *session = harness_session(h);
    aq_join_result_t result;
    assert_int_equal(aq_join(session, "q", -1, AQ_JOIN_BEFORE, &result), AQ_OK);
    aq_session_destroy(&session);
    assert_int_equal(harness_stat(h, "q", "acked"), ITEMS);
    assert_int_equal(harness_stat(h, "q", "redelivered"), HELD);
    aq_consumer_destroy(&survivor);
    close(ready[0]);
    close(ready[1]);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_sigkilled_consumers_items_go_to_another_and_join_completes,
                                        s_setup, harness_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
