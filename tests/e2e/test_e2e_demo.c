/*  The reference main(5, 10) as processes: every item produced is consumed
    and acked exactly once, and the demo leaves no process behind. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"

#define MAX_ITEMS 200

typedef struct {
    char item[MAX_ITEMS][32];
    int consumed[MAX_ITEMS];
    int count;
} ledger_t;

static int s_index(ledger_t *ledger, const char *item)
{
    for (int i = 0; i < ledger->count; i++)
        if (strcmp(ledger->item[i], item) == 0)
            return i;
    return -1;
}

static void s_item_of(const char *line, char *item)
{
    const char *open = strchr(line, '<'), *close = strchr(line, '>');
    assert_non_null(open);
    assert_non_null(close);
    snprintf(item, 32, "%.*s", (int) (close - open - 1), open + 1);
}

static void test_demo_consumes_and_acks_every_item_exactly_once(void **state)
{
    (void) state;
    static char out[1 << 20];
    char *argv[] = {"asyncq", "demo", "-p", "5", "-c", "10", "--max-sleep", "0.05", NULL};
    assert_int_equal(harness_run(argv, out, sizeof out), 0);

    /* Producers and consumers share the pipe, so a consumer's line may come
       before its producer's: read all "added" lines first. */
    static ledger_t ledger;
    static char copy[1 << 20];
    char item[32];
    strcpy(copy, out);
    for (char *line = strtok(copy, "\n"); line; line = strtok(NULL, "\n")) {
        if (strncmp(line, "Producer ", 9) == 0 && strstr(line, " added <")) {
            s_item_of(line, item);
            assert_true(ledger.count < MAX_ITEMS);
            snprintf(ledger.item[ledger.count++], 32, "%s", item);
        }
    }
    int joined = 0;
    for (char *line = strtok(out, "\n"); line; line = strtok(NULL, "\n")) {
        if (strncmp(line, "Consumer ", 9) == 0 && strstr(line, " got element <")) {
            s_item_of(line, item);
            int index = s_index(&ledger, item);
            assert_true(index >= 0); /* every item consumed was produced */
            ledger.consumed[index]++;
        }
        else if (strncmp(line, "Joined: ", 8) == 0) {
            unsigned long long put, acked;
            assert_int_equal(sscanf(line, "Joined: %llu items put by 5 producers, %llu acked", &put, &acked), 2);
            assert_int_equal(put, (unsigned long long) ledger.count);
            assert_int_equal(acked, put);
            joined = 1;
        }
    }
    assert_true(joined);
    for (int i = 0; i < ledger.count; i++)
        assert_int_equal(ledger.consumed[i], 1);
}

static void test_demo_leaves_no_process_behind(void **state)
{
    (void) state;
    char out[1 << 16];
    char *argv[] = {"asyncq", "demo", "-p", "2", "-c", "3", "--max-sleep", "0", NULL};
    aq_process_t demo;
    harness_spawn(&demo, argv);
    pid_t pid = demo.pid;
    size_t used = 0;
    char line[1024];
    while (aq_process_read_line(&demo, line, sizeof line, HARNESS_DEADLINE_MS) == 1)
        used += (size_t) snprintf(out + used, sizeof out - used, "%s\n", line);
    assert_int_equal(aq_process_wait(&demo, HARNESS_DEADLINE_MS), 1);
    assert_int_equal(demo.exit_code, 0);
    assert_non_null(strstr(out, "Program completed in "));
    /* No child of the demo may survive it: none has it as parent any more,
       and none is left as a process of this name reparented to us. */
    char command[128];
    snprintf(command, sizeof command, "pgrep -P %d >/dev/null", (int) pid);
    assert_int_not_equal(system(command), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_demo_consumes_and_acks_every_item_exactly_once),
        cmocka_unit_test(test_demo_leaves_no_process_behind),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
