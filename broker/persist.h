/*  The journal of a durable broker: every record broker_apply() applies
    (state.h says what each holds) is appended to it, snapshots of the
    whole state keep it bounded, and a restart reads it back through the
    same state_apply(). It knows the journal and the broker's data, never a
    socket. A broker in memory keeps no journal: these calls then answer
    at once. */
#ifndef BROKER_PERSIST_H
#define BROKER_PERSIST_H

#include <stdint.h>

#include "broker.h"

/*  Opens the journal in config.data_dir and rebuilds the queues, items and
    producers it holds; the items that were in flight go back to their
    queues (their sessions are gone), by records. Returns 0, or the
    journal_status_t of the failure with the reason in `error`. */
int persist_open(broker_t *self, char *error, size_t error_size);
void persist_close(broker_t *self);

/*  The end of a pass: one write of the pass's records, a sync as the mode
    says, a snapshot when the log is mostly garbage, and the SYNCs whose
    puts are now durable answered. */
void persist_pass(broker_t *self);

/*  Writes what is buffered if puts accepted since the last write are in it
    (one write): an item about to be delivered is in the journal first. A
    pass that let no put in mid-dispatch writes nothing more. */
void persist_write(broker_t *self);

/*  The sync thread finished a sync (its descriptor was readable). */
void persist_on_synced(broker_t *self);

#endif
