#include "histogram.h"

/*  From 100 µs (a delivery on loopback) to an hour (a job that waits):
    roughly 1-2.5-5 per decade, Prometheus's usual steps. */
const uint64_t histogram_bounds_us[HISTOGRAM_BUCKETS] = {
    100,       250,       500,        1000,       2500,       5000,       10000,
    25000,     50000,     100000,     250000,     500000,     1000000,    2500000,
    5000000,   10000000,  30000000,   60000000,   300000000,  3600000000};

void histogram_observe(histogram_t *self, uint64_t us)
{
    int bucket = 0;
    while (bucket < HISTOGRAM_BUCKETS && us > histogram_bounds_us[bucket])
        bucket++;
    self->counts[bucket]++;
    self->count++;
    self->sum_us += us;
}
