/*  The whole service on one HTTP port: asyncq-broker --shards N --metrics
    [HOST:]PORT serves it on PORT, shard K its own on PORT+1+K (on the same
    host). Each request is answered from the shards' answers, asked of
    each over loopback HTTP (fetch.c), all at once, within SERVICE_ASK_MS
    (SERVICE_SCRAPE_MS for /metrics):

    - /metrics: every shard's families once each (their samples carry
      shard="K"), and asyncq_service_shard_up{shard="K"} 1 or 0 (its
      samples missing).
    - /stats.json: the same schema as a broker's, the shards added up (see
      s_add: counts summed, ages in ms the greatest, a queue's state the
      least open, paused if any is), with `shards`: each shard's own
      stats.json and its `shard`, or {"shard":K,"error":"..."}.
    - / the dashboard; GET /api/dead?queue=Q the shards' dead items, oldest
      death first; POST /api/ACTION?queue=Q to every shard, the counts
      added up. With &id=N, to the shard the id names (its top 8 bits),
      the answer as it gave it. A shard without the queue (404) is left
      out, unless none has it; any other error, or no answer (502), is the
      answer, naming the first shard that gave one.

    The same rules as a broker's port (http.h): bound to 127.0.0.1 unless
    HOST says otherwise, the token checked before any shard is asked (and
    sent on to them: they check it too), the same connection limits and
    deadlines. libmicrohttpd runs its own threads here, one per
    connection: asking the shards blocks only that connection's. */
#ifndef BROKER_SERVICE_HTTP_H
#define BROKER_SERVICE_HTTP_H

#include <stddef.h>

#define SERVICE_ASK_MS 2000
/*  Sent with every request a service port makes; a service port refuses
    one that carries it (508), so that ports cannot ask each other in a
    loop. */
#define SERVICE_ASK_HEADER "X-Asyncq-Service"
#define SERVICE_SCRAPE_MS 8000
/*  A shard's answer, at most: more is an error for that shard. */
#define SERVICE_ANSWER_MAX (64u * 1024 * 1024)

typedef struct service_http service_http_t;

/*  Serves a service of `shards` shards on `address` (--metrics: "PORT",
    "HOST:PORT", "[V6]:PORT", with a port that is not 0); the shards are
    asked at the next ports, on HOST (loopback when HOST is every
    interface or none). With `of` ("HOST:PORT,...": every broker's
    --metrics port, in shard order; --dashboard-of), they are asked there
    instead, each name resolved at each ask, and `shards` is ignored.
    `token`: what the actions need after "Bearer ". NULL on failure, with
    the reason in `error`. */
service_http_t *service_http_new(const char *address, int shards, const char *of,
                                 const char *token, char *error, size_t error_size);
void service_http_destroy(service_http_t **self_p);

/*  Whether `of` is a --dashboard-of list (HOST:PORT, comma-separated, at
    most SHARDS_MAX): 0, or -1 with the reason in `error`. */
int service_http_check_of(const char *of, char *error, size_t error_size);

/*  "http://HOST:PORT". */
const char *service_http_url(const service_http_t *self);

#endif
