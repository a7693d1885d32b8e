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

/*  Whether a put may be accepted: the journal writes. */
int persist_accepting(const broker_t *self);

/*  Where the records of the producer's accepted puts end in the journal,
    and whether a confirm up to there may go: the records are where the
    fsync mode says they must be. A producer whose puts were all refused
    waits for nothing. */
uint64_t persist_position(const producer_t *producer);
/*  Where the journal ends now: what a change just made waits for. */
uint64_t persist_appended(const broker_t *self);
int persist_is_confirmed(const broker_t *self, uint64_t position);

/*  The end of a pass: one write of the pass's records, a sync as the mode
    says, a snapshot when the log is mostly garbage, and the SYNCs whose
    puts are now durable answered. */
void persist_pass(broker_t *self);

/*  The sync thread finished a sync (its descriptor was readable). */
void persist_on_synced(broker_t *self);

/*  A SYNC that waits only for the disk: answered by persist_pass. */
void persist_wait(broker_t *self, producer_t *producer);

/*  Sends `msg` to `routing_id` once every record appended so far is where
    the fsync mode says (at once in memory): the answer to a request whose
    change must survive a restart before the client hears of it (SHUTDOWN,
    DEAD requeue and purge, JOINED). Answers keep their order. If a sync
    failed, so that nothing more is ever confirmed, the client gets 507
    instead. Costs one copy of the encoded answer while it waits: one pass
    of the loop, or one sync. */
void persist_reply(broker_t *self, aq_bytes_t routing_id, const aq_msg_t *msg);

/*  "memory", "always", "interval" or "never" (WELCOME's persistence). */
const char *persist_mode(const broker_t *self);

#endif
