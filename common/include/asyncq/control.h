/*  Requests about queues, asked on a session (aq_session_new, or a
    producer's or consumer's): join, stats and info, which every client may
    ask, and dead and shutdown, which need the admin role when the broker
    uses CURVE keys. A request the broker refuses returns AQ_REFUSED, its
    code and reason in aq_session_error(). */
#ifndef ASYNCQ_CONTROL_H
#define ASYNCQ_CONTROL_H

#include <stdint.h>

#include "asyncq/session.h"
#include "asyncq/types.h"

typedef struct {
    uint64_t waited;      /* JOINED: items outstanding when the join arrived */
    uint64_t dead;        /* JOINED: of those, how many were dead-lettered */
    uint64_t outstanding; /* TIMEOUT: items still holding the join back */
} aq_join_result_t;

/*  Waits until every item of `queue` accepted before the join reached the
    broker has been acked (AQ_JOIN_BEFORE), or until the queue has nothing
    outstanding at all (AQ_JOIN_ALL). `timeout_ms`: -1 waits for ever; 0
    only asks whether the queue is joined now (the wire has no "do not
    wait": the broker is given its shortest time-out, 1 ms); at most
    AQ_WAIT_MAX_MS, else AQ_MALFORMED. AQ_OK: joined. AQ_TIMEOUT: not
    joined in time; result->outstanding says how many items were left.
    AQ_SHUT_DOWN: the queue was shut down at once (immediate) before the
    join was satisfied. If the broker restarts meanwhile, the join is asked
    again of the new broker. */
aq_status_t aq_join(aq_session_t *session, const char *queue, int timeout_ms,
                    aq_join_mode_t mode, aq_join_result_t *result);

/*  Asks for per-queue statistics (`queue` NULL or "" for every queue) and
    calls `line` once per queue with its report line. In this call and the
    ones below, `line` may be NULL: the lines are not wanted. */
typedef void (aq_stats_line_fn)(void *ctx, const char *line);
aq_status_t aq_stats(aq_session_t *session, const char *queue, aq_stats_line_fn *line,
                     void *ctx);

/*  The broker's own numbers (connections, sessions, producers, queues...),
    one line of key=value pairs, handed to `line`. */
aq_status_t aq_info(aq_session_t *session, aq_stats_line_fn *line, void *ctx);

/*  Acts on `queue`'s dead-letter list: "list" calls `line` once per item
    (id, attempts, size; the first 1024), "requeue" puts them all back in
    the queue, "purge" deletes them; both call `line` once with the count. */
aq_status_t aq_dead(aq_session_t *session, const char *queue, const char *action,
                    aq_stats_line_fn *line, void *ctx);

/*  A group of replicas (PROTOCOL.md 4.16), asked of its leader: "list"
    calls `line` once per replica (id, address, kind, and on the leader
    how far each has the log); "add HOST:PORT" (admin) adds a replica at
    that address, once the group has committed it (`line` gets its new
    id: start it with --join HOST:PORT --node-id ID); "remove ID" or
    "remove HOST:PORT" (admin) takes one out; "transfer [ID]" (admin) asks
    that replica (or the one most up to date) to lead. */
aq_status_t aq_replicas(aq_session_t *session, const char *action, aq_stats_line_fn *line,
                        void *ctx);

/*  A queue's life (admin), each answered once the broker's journal has it:
    REOPEN a shut-down queue (it takes puts again: `line` gets its stats
    line); PURGE its queued and delayed items (`line` gets "purged=N");
    DELETE it, with everything it holds, in flight and dead items too
    (`line` gets "deleted=N"; its consumers hear it is shut down, and the
    name is free); PAUSE or RESUME its deliveries (puts still go in; `line`
    gets its stats line). An unknown queue: AQ_OK, and `line` is not called
    (PAUSE and RESUME make it). */
typedef enum {
    AQ_QUEUE_REOPEN = 0,
    AQ_QUEUE_PURGE = 1,
    AQ_QUEUE_DELETE = 2,
    AQ_QUEUE_PAUSE = 3,
    AQ_QUEUE_RESUME = 4
} aq_queue_action_t;
aq_status_t aq_queue_action(aq_session_t *session, const char *queue, aq_queue_action_t action,
                            aq_stats_line_fn *line, void *ctx);

/*  The next `count` (at most 1024) items `queue` would deliver, left where
    they are: `line` once per item, "id=N attempts=N size=N priority=P
    age_ms=N payload=\"...\"" (the first 64 bytes, escaped as DEAD list's). */
aq_status_t aq_peek(aq_session_t *session, const char *queue, uint64_t count,
                    aq_stats_line_fn *line, void *ctx);

/*  Shuts `queue` down (NULL or "": every queue, and any made later): puts
    are refused from then on. AQ_SHUTDOWN_DRAIN lets consumers take what is
    queued; AQ_SHUTDOWN_IMMEDIATE discards it and answers waiting joins
    with SHUT_DOWN. Calls `line` with each queue's stats after. */
aq_status_t aq_shutdown(aq_session_t *session, const char *queue, aq_shutdown_mode_t mode,
                        aq_stats_line_fn *line, void *ctx);

#endif
