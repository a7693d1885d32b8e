/*  asyncq-broker --shards N|auto: N shard processes of one service on one
    host (PROTOCOL.md 4.15), shard K bound at PORT + 2K with its data in
    DATA-DIR/shard-K (with --peers, each shard a replica of its own group,
    at PORT + 3K on every host: PROTOCOL.md 4.16); one that dies is
    restarted (after 0.5 s, doubling to 30 s) or, if a restart would only
    fail again, reported. With --metrics
    METRICS-PORT, the whole service's HTTP port is served there
    (service_http.h) and shard K's own at METRICS-PORT + 1 + K. */
#ifndef ASYNCQ_SHARDS_H
#define ASYNCQ_SHARDS_H

#include "broker.h"

/*  N (1 to SHARDS_MAX) or "auto" (one per core); 0 if neither. */
int shards_count(const char *text, int *count);

/*  asyncq-broker --dashboard-of HOST:PORT,... --metrics PORT: no broker,
    only the whole service's HTTP port (service_http.h), asking the brokers'
    own --metrics ports (every broker of a service across hosts); until
    SIGTERM or SIGINT. Returns the exit code. */
int shards_dashboard(const broker_config_t *config, const char *of);

/*  Shard K's group when every replica of --peers (HOST:PORT,...) runs
    shards: each port moved up by 3K, the addresses joined by `separator`.
    0, or -1 if one is not HOST:PORT or it does not fit in `size`. */
int shards_group(const char *peers, int shard, char separator, char *out, size_t size);

/*  Whether --data-dir (if any) holds what `count` shards serve: not a
    broker's journal or a replica's log of its own, nor more shards than
    `count` (their items would be left unserved: refused, unless `is_auto`,
    which then takes as many as it holds). 0, or the exit code, said. */
int shards_fit_data(const broker_config_t *config, int is_auto, int *count);

/*  Runs the shards until a signal stops them; returns the exit code. */
int shards_run(int argc, char **argv, const broker_config_t *config, int count);

#endif
