/*  Ledger: the exact accounting behind join. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "ledger.h"

static void test_fresh_ledger_has_nothing_outstanding(void **state)
{
    (void) state;
    ledger_t ledger;
    assert_int_equal(ledger_init(&ledger), 0);
    assert_int_equal(ledger.outstanding, 0);
    assert_int_equal(ledger.low, ledger.next);
    ledger_fini(&ledger);
}

static void test_low_stays_at_the_oldest_unfinished_item(void **state)
{
    (void) state;
    ledger_t ledger;
    ledger_init(&ledger);
    uint64_t seq[5];
    for (int i = 0; i < 5; i++)
        assert_int_equal(ledger_open(&ledger, &seq[i]), 0);
    ledger_close(&ledger, seq[1]);
    ledger_close(&ledger, seq[2]);
    assert_int_equal(ledger.low, seq[0]);
    ledger_close(&ledger, seq[0]);
    assert_int_equal(ledger.low, seq[3]);
    assert_int_equal(ledger_outstanding_before(&ledger, seq[4]), 1);
    ledger_close(&ledger, seq[4]);
    ledger_close(&ledger, seq[3]);
    assert_int_equal(ledger.low, ledger.next);
    assert_int_equal(ledger.outstanding, 0);
    ledger_fini(&ledger);
}

static void test_one_stuck_item_grows_the_window_and_keeps_counts_exact(void **state)
{
    (void) state;
    ledger_t ledger;
    ledger_init(&ledger);
    uint64_t stuck;
    ledger_open(&ledger, &stuck);
    for (int round = 0; round < 100000; round++) {
        uint64_t seq;
        assert_int_equal(ledger_open(&ledger, &seq), 0);
        if (round % 3)
            ledger_close(&ledger, seq);
    }
    assert_int_equal(ledger.low, stuck);
    uint64_t expected = 1 + 100000 / 3 + 1; /* stuck + every third round */
    assert_int_equal(ledger.outstanding, expected);
    assert_int_equal(ledger_outstanding_before(&ledger, ledger.next), expected);
    ledger_close(&ledger, stuck);
    assert_true(ledger.low > stuck);
    assert_true(ledger_is_outstanding(&ledger, ledger.low));
    ledger_fini(&ledger);
}

static void test_random_order_of_closes_matches_a_plain_array(void **state)
{
    (void) state;
    enum { N = 5000 };
    ledger_t ledger;
    ledger_init(&ledger);
    static int open[N + 1];
    uint64_t seqs[N];
    srand(7);
    for (int i = 0; i < N; i++) {
        ledger_open(&ledger, &seqs[i]);
        open[seqs[i]] = 1;
    }
    for (int i = N - 1; i > 0; i--) { /* shuffle */
        int j = rand() % (i + 1);
        uint64_t t = seqs[i]; seqs[i] = seqs[j]; seqs[j] = t;
    }
    for (int i = 0; i < N; i++) {
        ledger_close(&ledger, seqs[i]);
        open[seqs[i]] = 0;
        uint64_t low = 1;
        while (low <= N && !open[low])
            low++;
        assert_int_equal(ledger.low, low);
    }
    ledger_fini(&ledger);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fresh_ledger_has_nothing_outstanding),
        cmocka_unit_test(test_low_stays_at_the_oldest_unfinished_item),
        cmocka_unit_test(test_one_stuck_item_grows_the_window_and_keeps_counts_exact),
        cmocka_unit_test(test_random_order_of_closes_matches_a_plain_array),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
