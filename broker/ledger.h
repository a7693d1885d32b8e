/*  Which of a queue's items are still outstanding, in order of acceptance.

    This is what makes join exact. Each accepted item gets the next sequence
    number; the ledger keeps one bit per number from the oldest outstanding
    item to the newest, in a ring that doubles when full. A join that
    arrives when the next number is N is satisfied once the lowest
    outstanding number is N or more: items accepted later never hold it
    back, and nothing accepted before it can be missed.

    Cost: open and close are O(1) amortised; memory is one bit per item
    between the oldest outstanding item and the newest (a stuck item keeps
    the window open: 1 million items behind it cost 128 KiB). */
#ifndef BROKER_LEDGER_H
#define BROKER_LEDGER_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    uint64_t *bits;       /* ring; bit (seq % capacity) set = outstanding */
    uint64_t capacity;    /* bits, a power of two, >= 64 */
    uint64_t low;         /* lowest outstanding seq, == next when none */
    uint64_t next;        /* seq the next item gets; the first is 1 */
    uint64_t outstanding; /* bits set */
} ledger_t;

/*  Returns 0, or -1 if out of memory. */
int ledger_init(ledger_t *self);
void ledger_fini(ledger_t *self);

/*  Records a new outstanding item and stores its seq. Returns -1 (nothing
    recorded) if the window could not grow. */
int ledger_open(ledger_t *self, uint64_t *seq);

/*  Records an outstanding item with a given seq, not below next (recovery,
    in seq order); the seqs skipped are finished. -1 if out of memory. */
int ledger_open_at(ledger_t *self, uint64_t seq);

/*  The next item gets `next` or more (the numbers skipped were finished):
    a log read back says where numbering was. -1 if out of memory. */
int ledger_advance(ledger_t *self, uint64_t next);

/*  Marks seq finished; it must be outstanding. Never fails. */
void ledger_close(ledger_t *self, uint64_t seq);

int ledger_is_outstanding(const ledger_t *self, uint64_t seq);

/*  How many outstanding items have seq < end. O(window / 64): used only
    for a join's time-out answer, never per item. */
uint64_t ledger_outstanding_before(const ledger_t *self, uint64_t end);

#endif
