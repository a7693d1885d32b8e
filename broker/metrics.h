/*  What the broker tells operators: its numbers in the Prometheus text
    format (/metrics) and as JSON (/stats.json, the dashboard's data). A
    data module: it reads the broker's state on the loop's thread, between
    two messages, so every figure of one answer comes from the same moment
    and nothing on the per-item path takes a lock. It knows nothing of HTTP
    (http.c serves what it renders).

    Costs: a render is O(queues + sessions + dead items shown), about 2 KiB
    of text per queue; it runs only when asked. */
#ifndef BROKER_METRICS_H
#define BROKER_METRICS_H

#include <stddef.h>

#include "broker.h"

/*  The text exposition format 0.0.4, malloc'd (its size in *size); NULL
    if out of memory. */
char *metrics_render_prometheus(broker_t *self, size_t *size);

/*  /stats.json (docs/PROTOCOL.md, section 12), malloc'd; NULL if out
    of memory. */
char *metrics_render_json(broker_t *self, size_t *size);

#endif
