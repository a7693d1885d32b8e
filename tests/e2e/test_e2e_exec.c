/*  asyncq-consumer --exec: the payload on the command's stdin, ack on exit
    0, the item back in the queue otherwise, the lease kept while it runs. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"

#define ITEMS 20

static aq_process_t s_consumer;
static char s_dir[] = "/tmp/asyncq-test-exec-XXXXXX";

static int s_setup(void **state)
{
    assert_non_null(mkdtemp(s_dir));
    char *const flags[] = {"--lease-ms", "300", NULL};
    return harness_setup_flags(state, flags);
}

static int s_teardown(void **state)
{
    aq_process_stop(&s_consumer, SIGTERM, 5000);
    char command[256];
    snprintf(command, sizeof command, "rm -rf %s", s_dir);
    assert_int_equal(system(command), 0);
    strcpy(s_dir, "/tmp/asyncq-test-exec-XXXXXX");
    return harness_teardown(state);
}

static void s_put_numbers(const harness_t *h, int count)
{
    aq_status_t rc;
    aq_producer_t *producer = aq_producer_new(h->address, "p", &rc);
    assert_non_null(producer);
    for (int i = 1; i <= count; i++) {
        char item[16];
        snprintf(item, sizeof item, "%d", i);
        assert_int_equal(aq_producer_put(producer, "q", item, strlen(item)), AQ_OK);
    }
    assert_int_equal(aq_producer_sync(producer, HARNESS_DEADLINE_MS), AQ_OK);
    aq_producer_destroy(&producer);
}

static void s_join(const harness_t *h, aq_join_result_t *result)
{
    aq_session_t *session = harness_session(h);
    assert_int_equal(aq_join(session, "q", HARNESS_DEADLINE_MS, AQ_JOIN_BEFORE, result), AQ_OK);
    aq_session_destroy(&session);
}

static void s_start(const harness_t *h, const char *command, const char *credit)
{
    char *argv[] = {"asyncq-consumer", "--broker", (char *) h->address, "--queue", "q",
                    "--credit", (char *) credit, "--quiet", "--exec", (char *) command, NULL};
    harness_spawn(&s_consumer, argv);
}

/*  Odd items fail on their first attempt: half of the runs fail. */
static void test_failing_command_returns_the_item_and_success_acks_it(void **state)
{
    harness_t *h = *state;
    s_put_numbers(h, ITEMS);
    char command[512];
    snprintf(command, sizeof command,
             "x=$(cat); echo \"$x $ASYNCQ_ATTEMPT $ASYNCQ_QUEUE\" >> %s/runs; "
             "[ $((x %% 2)) = 0 ] || [ \"$ASYNCQ_ATTEMPT\" -gt 1 ]",
             s_dir);
    s_start(h, command, "4");
    aq_join_result_t result;
    s_join(h, &result);
    assert_int_equal(result.waited, ITEMS);
    assert_int_equal(result.dead, 0);
    assert_int_equal(harness_stat(h, "q", "acked"), ITEMS);
    assert_int_equal(harness_stat(h, "q", "redelivered"), ITEMS / 2);

    /* Every item ran once, odd ones twice, each with its payload. */
    char path[256], line[64];
    snprintf(path, sizeof path, "%s/runs", s_dir);
    FILE *runs = fopen(path, "r");
    assert_non_null(runs);
    int seen[ITEMS + 1][3] = {{0}};
    int lines = 0;
    while (fgets(line, sizeof line, runs)) {
        int x, attempt;
        char queue[16];
        assert_int_equal(sscanf(line, "%d %d %15s", &x, &attempt, queue), 3);
        assert_true(x >= 1 && x <= ITEMS && attempt >= 1 && attempt <= 2);
        assert_string_equal(queue, "q");
        seen[x][attempt]++;
        lines++;
    }
    fclose(runs);
    assert_int_equal(lines, ITEMS + ITEMS / 2);
    for (int x = 1; x <= ITEMS; x++) {
        assert_int_equal(seen[x][1], 1);
        assert_int_equal(seen[x][2], x % 2);
    }
}

static void s_put_big_and(const harness_t *h, const char *small)
{
    static char big[512 * 1024];
    memset(big, 'x', sizeof big);
    aq_status_t rc;
    aq_producer_t *producer = aq_producer_new(h->address, "p", &rc);
    assert_non_null(producer);
    assert_int_equal(aq_producer_put(producer, "q", big, sizeof big), AQ_OK);
    assert_int_equal(aq_producer_put(producer, "q", small, strlen(small)), AQ_OK);
    assert_int_equal(aq_producer_sync(producer, HARNESS_DEADLINE_MS), AQ_OK);
    aq_producer_destroy(&producer);
}

/*  Commands that run 3 lease lengths and never read their stdin (one of
    them a 512 KiB item): the consumer's TOUCHes keep the leases. */
static void test_lease_is_kept_alive_while_the_command_runs(void **state)
{
    harness_t *h = *state;
    s_put_big_and(h, "small");
    s_start(h, "sleep 0.9", "2");
    aq_join_result_t result;
    s_join(h, &result);
    assert_int_equal(result.waited, 2);
    assert_int_equal(harness_stat(h, "q", "acked"), 2);
    assert_int_equal(harness_stat(h, "q", "redelivered"), 0);
}

/*  The whole payload reaches stdin; a command killed by a signal returns
    its item, which runs again. */
static void test_payload_arrives_whole_and_a_killed_command_runs_again(void **state)
{
    harness_t *h = *state;
    s_put_big_and(h, "killed");
    char command[512];
    snprintf(command, sizeof command,
             "n=$(wc -c); echo $n >> %s/sizes; "
             "[ $n -gt 100 ] || [ \"$ASYNCQ_ATTEMPT\" -gt 1 ] || kill -9 $$",
             s_dir);
    s_start(h, command, "1");
    aq_join_result_t result;
    s_join(h, &result);
    assert_int_equal(result.waited, 2);
    assert_int_equal(harness_stat(h, "q", "acked"), 2);
    assert_int_equal(harness_stat(h, "q", "redelivered"), 1);
    char path[256];
    snprintf(path, sizeof path, "%s/sizes", s_dir);
    FILE *sizes = fopen(path, "r");
    assert_non_null(sizes);
    int size, big = 0, small = 0;
    while (fscanf(sizes, "%d", &size) == 1) {
        big += size == 512 * 1024;
        small += size == 6;
    }
    fclose(sizes);
    assert_int_equal(big, 1);
    assert_int_equal(small, 2);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_failing_command_returns_the_item_and_success_acks_it,
                                        s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_lease_is_kept_alive_while_the_command_runs, s_setup,
                                        s_teardown),
        cmocka_unit_test_setup_teardown(
            test_payload_arrives_whole_and_a_killed_command_runs_again, s_setup, s_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
