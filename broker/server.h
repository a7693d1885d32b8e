/*  The broker as a whole (server.c): made, run, and destroyed; its
    sockets, its loop and the end of each pass of it. */
#ifndef BROKER_SERVER_H
#define BROKER_SERVER_H

#include "broker.h"

broker_t *broker_new(const broker_config_t *config, aq_status_t *status);
/*  A broker without sockets, keys or connection table: its handlers are
    fed by the caller (broker_on_router, broker_on_pull with the inboxes
    filled), its sends go to `send`. For tests and the fuzzer. */
broker_t *broker_new_detached(const broker_config_t *config, broker_send_fn *send, void *ctx);
/*  The end of one pass of the loop: deadlines due, deliveries of the
    queues this pass touched, sessions doomed by a failed send closed,
    dropped sessions freed. */
void broker_pass(broker_t *self);
void broker_destroy(broker_t **self_p);
aq_status_t broker_run(broker_t *self);

#endif
