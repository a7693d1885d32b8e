/*  The ROUTER socket's requests (commands.c): one handler per command,
    and the joins that time out. */
#ifndef BROKER_COMMANDS_H
#define BROKER_COMMANDS_H

#include "broker.h"

void broker_on_router(broker_t *self);
void broker_on_join_timeout(broker_t *self, joiner_t *joiner);

#endif
