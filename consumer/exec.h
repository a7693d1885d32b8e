/*  Running a command per item, several at once: the payload on the
    command's stdin, the item's lease kept alive while it runs. */
#ifndef CONSUMER_EXEC_H
#define CONSUMER_EXEC_H

#include <stddef.h>

#include "asyncq/consumer.h"

/*  How long to wait between looks at running commands (waitpid cannot
    wait with a time-out). */
#define EXEC_POLL_MS 2

typedef struct exec_pool exec_pool_t;

/*  Called once per command that exited: exit_code is its status, or 128 +
    the signal that ended it; reason says which, for the broker's log. */
typedef aq_status_t(exec_done_fn)(void *ctx, const aq_item_t *item, int exit_code,
                                  const char *reason);

/*  Room for `slots` commands at once, each `command` run with /bin/sh -c
    and ASYNCQ_QUEUE=queue, ASYNCQ_ITEM_ID and ASYNCQ_ATTEMPT in its
    environment; their stdout and stderr are this program's. NULL if out
    of memory. */
exec_pool_t *exec_pool_new(size_t slots, const char *command, const char *queue);

/*  Sends SIGTERM to the commands still running and waits for them. */
void exec_pool_destroy(exec_pool_t **self_p);

size_t exec_pool_running(const exec_pool_t *self);
int exec_pool_has_room(const exec_pool_t *self);

/*  Starts the command for an item (its payload is copied). AQ_TRANSPORT:
    it could not be started (errno says why). */
aq_status_t exec_pool_start(exec_pool_t *self, const aq_item_t *item);

/*  Feeds the commands' stdin, TOUCHes every item each third of its lease,
    and calls `done` for each command that has exited. Stops at the first
    error `done` returns. */
aq_status_t exec_pool_tend(exec_pool_t *self, aq_consumer_t *consumer, exec_done_fn *done,
                           void *ctx);

#endif
