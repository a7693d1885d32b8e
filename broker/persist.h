/*  What a durable broker writes to its journal, and how it reads it back.
    The broker calls these where its state changes; they know the journal
    and the broker's data, never a socket.

    Records (journal.h frames them; numbers big-endian):
      STATE    id u64, seq u64, state u8, attempts u16, until_ms u64 (wall
               clock, delayed items): a delivery (attempt counted), a
               delay, a dead-letter requeue.
      ITEM     STATE's fields, lease_ms u32, pseq u64, queue (u8 length +
               bytes), producer (u8 length + bytes), payload (the rest). At
               put, and in snapshots.
      GONE     id u64: acked, discarded or purged.
      PRODUCER next u64, id (u8 length + bytes), key (the rest): when a
               producer is opened, and in snapshots.
      QUEUE    state u8, name (the rest; empty: every queue, later ones too):
               a SHUTDOWN.
      RESET    first record of a snapshot: forget everything read before.

    Every record states a result, not a step ("item 7 is in flight with 3
    attempts"), so reading one twice, or after a snapshot that already has
    it, changes nothing. Items in flight, and dead ones, need no record
    when they come back: in flight is read back as queued (or dead, once
    its attempts reach the queue's limit), which is what losing its
    session does. */
#ifndef BROKER_PERSIST_H
#define BROKER_PERSIST_H

#include <stdint.h>

#include "broker.h"

enum {
    PERSIST_ITEM = 1,
    PERSIST_STATE,
    PERSIST_GONE,
    PERSIST_PRODUCER,
    PERSIST_QUEUE,
    PERSIST_RESET
};

/*  Opens the journal in config.data_dir and rebuilds the queues, items and
    producers it holds. Returns 0, or the journal_status_t of the failure
    with the reason in `error`. */
int persist_open(broker_t *self, char *error, size_t error_size);
void persist_close(broker_t *self);

/*  State changes, as they happen (no-ops for a broker in memory). */
void persist_item_added(broker_t *self, const item_t *item, producer_t *producer,
                        uint64_t pseq);
void persist_item_changed(broker_t *self, const item_t *item);
void persist_item_gone(broker_t *self, const item_t *item);
void persist_producer(broker_t *self, const producer_t *producer);
void persist_queue(broker_t *self, const queue_t *queue);

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
