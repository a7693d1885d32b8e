/*  The programs as a user runs them, over ipc://: seq | producer --stdin,
    a consumer, asyncq join and asyncq stats. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"

typedef struct {
    aq_process_t broker;
    char dir[64];
    char address[128];
    FILE *pipe; /* a producer's standard input, closed by the teardown if a test failed */
    aq_process_t producer; /* a producer in the background, stopped by the teardown */
} fixture_t;

static int s_setup(void **state)
{
    fixture_t *f = calloc(1, sizeof *f);
    strcpy(f->dir, "/tmp/asyncq-ipc-XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    snprintf(f->address, sizeof f->address, "ipc://%s/broker", f->dir);
    char path[4096];
    assert_int_equal(aq_program_path("asyncq-broker", path, sizeof path), 0);
    char *argv[] = {path, "--bind", f->address, NULL};
    assert_int_equal(aq_process_spawn(&f->broker, argv, 1, 1), 0);
    char ready[256];
    assert_true(aq_process_expect(&f->broker, "READY ", ready, sizeof ready, HARNESS_DEADLINE_MS));
    assert_string_equal(ready, f->address);
    *state = f;
    return 0;
}

static int s_teardown(void **state)
{
    fixture_t *f = *state;
    if (f->pipe) /* end of input: the producer syncs and exits */
        pclose(f->pipe);
    aq_process_stop(&f->producer, SIGKILL, 5000);
    aq_process_stop(&f->broker, SIGTERM, 5000);
    char command[128];
    snprintf(command, sizeof command, "rm -rf %s", f->dir);
    assert_int_equal(system(command), 0);
    free(f);
    return 0;
}

static void test_piped_lines_are_consumed_and_joined_over_ipc(void **state)
{
    fixture_t *f = *state;
    char command[1024];
    snprintf(command, sizeof command,
             "seq 1000 | %s/asyncq-producer --broker %s --queue lines --stdin --quiet",
             getenv("ASYNCQ_BIN_DIR"), f->address);
    int status = system(command);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);

    static char out[1 << 18];
    char *consumer[] = {"asyncq-consumer", "--broker", f->address, "--queue", "lines",
                        "--max-sleep", "0", "--credit", "32", "--count", "1000", NULL};
    assert_int_equal(harness_run(consumer, out, sizeof out), 0);
    /* In order, with one consumer: line N is the Nth item. */
    char *line = strstr(out, "got element <1>");
    assert_non_null(line);
    assert_non_null(strstr(out, "got element <1000>"));

    char *join[] = {"asyncq", "join", "--broker", f->address, "--queue", "lines", NULL};
    assert_int_equal(harness_run(join, out, sizeof out), 0);
    assert_non_null(strstr(out, "joined lines"));
    char *stats[] = {"asyncq", "stats", "--broker", f->address, NULL};
    assert_int_equal(harness_run(stats, out, sizeof out), 0);
    assert_non_null(strstr(out, "queue=lines queued=0 inflight=0 delayed=0 held=0 acked=1000 dead=0 "));
}

/*  Waits until `asyncq stats` shows `expected`, up to within_ms. */
static int s_stats_show_within(const fixture_t *f, const char *expected, int within_ms)
{
    char *stats[] = {"asyncq", "stats", "--broker", (char *) f->address, NULL};
    static char out[1 << 14];
    int64_t deadline = zclock_mono() + within_ms;
    while (zclock_mono() < deadline) {
        if (harness_run(stats, out, sizeof out) == 0 && strstr(out, expected))
            return 1;
        zclock_sleep(20);
    }
    return 0;
}

/*  Waits until `asyncq stats` shows `expected` (within the deadline). */
static int s_stats_show(const fixture_t *f, const char *expected)
{
    return s_stats_show_within(f, expected, HARNESS_DEADLINE_MS);
}

/*  The reference producer sends as it puts: an item printed as "added" is
    at the broker at once, even with a long --max-sleep before the next put
    (it used to wait in the producer's batch until 1024 items or the end).
    With --seed 849 and --max-sleep 100, the sleeps before the first two
    puts are 0.009 s and 87 s (aq_random: xorshift64*), so the first item
    must be queued well before the second is put; the wait for it is
    bounded at 10 s, far below the 87 s. */
static void test_the_producer_sends_each_item_as_it_prints_it_added(void **state)
{
    fixture_t *f = *state;
    char *argv[] = {"asyncq-producer", "--broker", f->address, "--queue", "sent", "--count", "2",
                    "--max-sleep", "100", "--seed", "849", "--name", "slow", NULL};
    aq_process_t *producer = &f->producer;
    harness_spawn(producer, argv);
    char line[256];
    assert_true(aq_process_expect(producer, "Producer slow added <", line, sizeof line,
                                  HARNESS_DEADLINE_MS));
    int64_t added = zclock_mono();
    int queued = s_stats_show_within(f, "queue=sent queued=1 ", 10000);
    int64_t took = zclock_mono() - added;
    /* Still sleeping before its second put: nothing more printed. */
    int more = aq_process_read_line(producer, line, sizeof line, 0);
    aq_process_stop(producer, SIGTERM, 5000);
    printf("    the item printed as added: %s at the broker after %lld ms\n",
           queued ? "queued" : "not queued", (long long) took);
    assert_true(queued);
    assert_int_equal(more, 0);
}

/*  A pipe that gives a line now and then: each line reaches the broker
    while the pipe is still open (the producer sends a partial batch as
    soon as nothing more is waiting), not all at the end. */
static void test_a_slow_pipe_s_lines_reach_the_broker_as_they_come(void **state)
{
    fixture_t *f = *state;
    char command[1024];
    snprintf(command, sizeof command,
             "%s/asyncq-producer --broker %s --queue slow --stdin --quiet",
             getenv("ASYNCQ_BIN_DIR"), f->address);
    f->pipe = popen(command, "w");
    assert_non_null(f->pipe);
    fputs("first\n", f->pipe);
    fflush(f->pipe);
    assert_true(s_stats_show(f, "queue=slow queued=1 "));
    fputs("second\nthird", f->pipe); /* the last line without a newline counts too */
    fflush(f->pipe);
    assert_true(s_stats_show(f, "queue=slow queued=2 "));
    int status = pclose(f->pipe);
    f->pipe = NULL;
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    assert_true(s_stats_show(f, "queue=slow queued=3 "));
    char out[4096];
    char *consumer[] = {"asyncq-consumer", "--broker", f->address, "--queue", "slow",
                        "--max-sleep", "0", "--count", "3", NULL};
    assert_int_equal(harness_run(consumer, out, sizeof out), 0);
    assert_non_null(strstr(out, "<first>"));
    assert_non_null(strstr(out, "<third>"));
}

static void test_put_command_items_come_out_in_order(void **state)
{
    fixture_t *f = *state;
    char *put[] = {"asyncq", "put", "--broker", f->address, "one", "two", "three", NULL};
    char out[4096];
    assert_int_equal(harness_run(put, out, sizeof out), 0);
    char *consumer[] = {"asyncq-consumer", "--broker", f->address, "--max-sleep", "0",
                        "--count", "3", NULL};
    assert_int_equal(harness_run(consumer, out, sizeof out), 0);
    char *one = strstr(out, "<one>"), *two = strstr(out, "<two>"), *three = strstr(out, "<three>");
    assert_true(one && two && three && one < two && two < three);
}

static void test_broker_health_answers_for_a_live_broker_only(void **state)
{
    fixture_t *f = *state;
    char out[4096];
    char *health[] = {"asyncq-broker", "--bind", f->address, "--health", NULL};
    assert_int_equal(harness_run(health, out, sizeof out), 0);
    assert_non_null(strstr(out, "healthy"));
    char gone[200];
    snprintf(gone, sizeof gone, "ipc://%s/no-broker", f->dir);
    char *dead[] = {"asyncq-broker", "--bind", gone, "--health", NULL};
    assert_int_equal(harness_run(dead, out, sizeof out), 3);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_piped_lines_are_consumed_and_joined_over_ipc, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_a_slow_pipe_s_lines_reach_the_broker_as_they_come, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_the_producer_sends_each_item_as_it_prints_it_added, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_put_command_items_come_out_in_order, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_broker_health_answers_for_a_live_broker_only, s_setup, s_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
