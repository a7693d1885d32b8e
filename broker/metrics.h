/*  What the broker tells operators: its numbers in the Prometheus text
    format (/metrics) and as JSON (/stats.json, the dashboard's data). A
    data module: it reads the broker's state on the loop's thread, between
    two messages, and nothing on the per-item path takes a lock. It knows
    nothing of HTTP (http.c serves what it renders).

    /metrics is rendered in slices as it is read (metrics_render_read):
    each queue's samples of a family are read at one moment, different
    queues and families at different moments of the scrape (DESIGN.md,
    "The HTTP port"). About 4.5 KB of text per queue. /stats.json is one
    render, O(queues + sessions + dead items shown).

    A broker of a service (--shard, --service) gives every sample of
    /metrics the label shard="K"; a broker alone gives none. */
#ifndef BROKER_METRICS_H
#define BROKER_METRICS_H

#include <stddef.h>
#include <sys/types.h>

#include "broker.h"

/*  The text exposition format 0.0.4, malloc'd (its size in *size); NULL
    if out of memory. All at once: for tests and tools (http.c renders
    slice by slice, below). */
char *metrics_render_prometheus(broker_t *self, size_t *size);

/*  What renders share: the queues sorted by name (made again at most once
    a second, or when a queue was forgotten). */
typedef struct metrics metrics_t;
metrics_t *metrics_new(broker_t *broker);
void metrics_destroy(metrics_t **self_p);

/*  /metrics rendered as it is read: each metrics_render_read renders one
    unit after another (the broker's families; then, family by family,
    one queue's samples) until `max` bytes are ready or the clock passes
    `until_us` (broker_now_us; 0: no limit), and copies them to `buf`.
    Returns the bytes copied; 0 when the time ran out before any; -1 at
    the end; -2 if out of memory. Each sample is read from the live state
    when its unit is rendered. */
typedef struct metrics_render metrics_render_t;
metrics_render_t *metrics_render_new(metrics_t *metrics);
void metrics_render_destroy(metrics_render_t **self_p);
ssize_t metrics_render_read(metrics_render_t *self, char *buf, size_t max, int64_t until_us);

/*  /stats.json (docs/PROTOCOL.md, section 12), malloc'd; NULL if out
    of memory. */
char *metrics_render_json(broker_t *self, size_t *size);

#endif
