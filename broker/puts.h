/*  Puts, from the PULL socket (puts.c): checked, put in sequence, then
    accepted, refused or held for a full queue until it has room. */
#ifndef BROKER_PUTS_H
#define BROKER_PUTS_H

#include "broker.h"

void broker_on_pull(broker_t *self);
/*  Tries the held puts of producers blocked on this queue, oldest first,
    while it has room (or refuses them if it was shut down). */
void broker_unblock(broker_t *self, queue_t *queue);

#endif
