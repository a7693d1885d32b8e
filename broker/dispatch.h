/*  Delivering items (dispatch.c): what leaves a queue's ready list and to
    whom, items taken back (leases that run out, sessions that end), joins
    answered, queues shut down. */
#ifndef BROKER_DISPATCH_H
#define BROKER_DISPATCH_H

#include "broker.h"

void broker_dispatch(broker_t *self, queue_t *queue);
void broker_release_joiners(broker_t *self, queue_t *queue);
/*  Takes an item back from its holder: delayed, or to the front of its
    queue, or dead once its attempts reach the queue's limit. */
void broker_take_back(broker_t *self, item_t *item, uint64_t delay_ms, death_cause_t cause,
                      aq_bytes_t text);
/*  The item dies (to the back of the dead letters), of `cause`, with its
    last consumer's reason; counted by the joins waiting, and logged. */
void broker_die(broker_t *self, item_t *item, death_cause_t cause, aq_bytes_t text);
/*  Every item the consumer holds goes back, oldest first at the front. */
void broker_give_back_all(broker_t *self, struct peer *peer);
/*  An item's move to `state` (state_move), applied; and what a dead item
    means for the joins waiting. */
void broker_move(broker_t *self, item_t *item, item_state_t state);
void broker_on_lease_expired(broker_t *self, item_t *item);
/*  Shuts one queue down (see queue_state_t), releasing its joins with
    SHUT_DOWN if `state` is QUEUE_DISCARDING. */
void broker_shut_queue(broker_t *self, queue_t *queue, queue_state_t state);
/*  Shuts every queue down, and any queue made later. */
void broker_shut_all(broker_t *self, queue_state_t state);
/*  Moves every dead item of the queue back to its end (DEAD requeue, the
    dashboard's button): recorded, and delivered by the pass. Returns how
    many moved. */
uint64_t broker_requeue_dead(broker_t *self, queue_t *queue);
/*  One dead item back to the end of its queue. -1 if out of memory (it
    stays dead). */
int broker_requeue_dead_item(broker_t *self, item_t *item);
/*  A dead item deleted, as DEAD delete ID and the dashboard do. */
void broker_delete_dead_item(broker_t *self, item_t *item);
/*  Deletes every dead item of the queue (DEAD purge). Returns how many. */
uint64_t broker_purge_dead(broker_t *self, queue_t *queue);
/*  Pauses (1) or resumes (0) the queue's deliveries. */
void broker_pause_queue(broker_t *self, queue_t *queue, int paused);
/*  A shut-down queue takes puts again (REOPEN); NULL: every queue, and
    those made later (after a SHUTDOWN of every queue). -1 while the broker
    stops on a signal: nothing changed. */
int broker_reopen_queue(broker_t *self, queue_t *queue);
/*  Discards the queue's queued and delayed items (PURGE), which count as
    finished for joins; items in flight stay with their consumers. Returns
    how many. */
uint64_t broker_purge_queue(broker_t *self, queue_t *queue);
/*  Deletes the queue (DELETE): shut down at once (joins and held puts
    refused), every item discarded, in flight and dead ones too, its
    consumers told it is shut down and let go of, and the queue forgotten
    (`queue` is freed; while a snapshot is being written, the sweep forgets
    it after). Returns how many items it held. */
uint64_t broker_delete_queue(broker_t *self, queue_t *queue);

#endif
