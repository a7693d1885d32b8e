/*  Histogram: every value lands in the first bucket whose bound is at or
    above it (Prometheus's "le"), whichever bucket that is. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "histogram.h"

/*  The bucket a value went to, from a fresh histogram. */
static int s_bucket_of(uint64_t us)
{
    histogram_t histogram;
    memset(&histogram, 0, sizeof histogram);
    histogram_observe(&histogram, us);
    for (int bucket = 0; bucket <= HISTOGRAM_BUCKETS; bucket++)
        if (histogram.counts[bucket])
            return bucket;
    return -1;
}

static void test_each_bound_and_its_neighbours_land_where_le_says(void **state)
{
    (void) state;
    assert_int_equal(s_bucket_of(0), 0);
    for (int bucket = 0; bucket < HISTOGRAM_BUCKETS; bucket++) {
        uint64_t bound = histogram_bounds_us[bucket];
        assert_int_equal(s_bucket_of(bound), bucket);
        if (bucket > 0) /* the bounds are more than 1 apart */
            assert_int_equal(s_bucket_of(histogram_bounds_us[bucket - 1] + 1), bucket);
        assert_int_equal(s_bucket_of(bound + 1), bucket + 1);
    }
    assert_int_equal(s_bucket_of(UINT64_MAX), HISTOGRAM_BUCKETS);
}

/*  The lookup by bit length needs every bound to be at least twice the one
    before: a new bound must keep it so. */
static void test_bounds_at_least_double(void **state)
{
    (void) state;
    for (int bucket = 1; bucket < HISTOGRAM_BUCKETS; bucket++)
        assert_true(histogram_bounds_us[bucket] >= 2 * histogram_bounds_us[bucket - 1]);
}

/*  Every value from 0 to 4 s by steps of 1 µs to 1 ms, then coarser: the
    bucket found is the first bound at or above the value. */
static void test_every_value_lands_in_the_first_bound_at_or_above(void **state)
{
    (void) state;
    int expected = 0;
    for (uint64_t us = 0; us < 4000000; us += us < 1000 ? 1 : 37) {
        while (expected < HISTOGRAM_BUCKETS && histogram_bounds_us[expected] < us)
            expected++;
        assert_int_equal(s_bucket_of(us), expected);
    }
}

static void test_count_and_sum_follow_every_observation(void **state)
{
    (void) state;
    histogram_t histogram;
    memset(&histogram, 0, sizeof histogram);
    uint64_t sum = 0;
    for (uint64_t us = 0; us < 5000000; us += 997) {
        histogram_observe(&histogram, us);
        sum += us;
    }
    uint64_t in_buckets = 0;
    for (int bucket = 0; bucket <= HISTOGRAM_BUCKETS; bucket++)
        in_buckets += histogram.counts[bucket];
    assert_int_equal(histogram.count, 5016);
    assert_int_equal(in_buckets, histogram.count);
    assert_int_equal(histogram.sum_us, sum);
    assert_int_equal(histogram.counts[0], 1); /* only 0 is at or below 100 µs */
    assert_int_equal(histogram.counts[14], 2508); /* (2.5 s, 5 s] */
    assert_int_equal(histogram.counts[15], 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_each_bound_and_its_neighbours_land_where_le_says),
        cmocka_unit_test(test_bounds_at_least_double),
        cmocka_unit_test(test_every_value_lands_in_the_first_bound_at_or_above),
        cmocka_unit_test(test_count_and_sum_follow_every_observation),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
