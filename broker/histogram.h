/*  A latency histogram with fixed buckets, as Prometheus reads them: how
    many observations fell at or below each bound, their count and sum.
    A data module: no clock, no I/O.

    Costs: 23 counters (184 bytes) per histogram; an observation is a
    lookup by the value's bit length (two loads); no allocation, no lock
    (one thread owns it). */
#ifndef BROKER_HISTOGRAM_H
#define BROKER_HISTOGRAM_H

#include <stdint.h>

#define HISTOGRAM_BUCKETS 20

typedef struct {
    uint64_t counts[HISTOGRAM_BUCKETS + 1]; /* per bucket, not cumulative; the last is +Inf */
    uint64_t count;
    uint64_t sum_us;
} histogram_t;

/*  The upper bounds, in microseconds, smallest first. */
extern const uint64_t histogram_bounds_us[HISTOGRAM_BUCKETS];

void histogram_observe(histogram_t *self, uint64_t us);

#endif
