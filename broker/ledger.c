#include "ledger.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

#define INITIAL_BITS 1024

static uint64_t s_word(uint64_t capacity, uint64_t seq)
{
    return (seq & (capacity - 1)) / 64;
}

static uint64_t s_mask(uint64_t seq)
{
    return 1ULL << (seq % 64);
}

int ledger_init(ledger_t *self)
{
    memset(self, 0, sizeof *self);
    self->bits = calloc(INITIAL_BITS / 64, sizeof *self->bits);
    if (!self->bits)
        return -1;
    self->capacity = INITIAL_BITS;
    self->low = self->next = 1;
    return 0;
}

void ledger_fini(ledger_t *self)
{
    free(self->bits);
    self->bits = NULL;
}

int ledger_is_outstanding(const ledger_t *self, uint64_t seq)
{
    if (seq < self->low || seq >= self->next)
        return 0;
    return (self->bits[s_word(self->capacity, seq)] & s_mask(seq)) != 0;
}

/*  Doubles the ring, copying the window [low, next) bit by bit into place.
    O(window), and happens only when the window doubles, so O(1) amortised. */
static int s_grow(ledger_t *self)
{
    uint64_t capacity = self->capacity * 2;
    uint64_t *bits = calloc(capacity / 64, sizeof *bits);
    if (!bits)
        return -1;
    for (uint64_t seq = self->low; seq < self->next; seq++)
        if (self->bits[s_word(self->capacity, seq)] & s_mask(seq))
            bits[s_word(capacity, seq)] |= s_mask(seq);
    free(self->bits);
    self->bits = bits;
    self->capacity = capacity;
    return 0;
}

int ledger_open(ledger_t *self, uint64_t *seq)
{
    if (self->next - self->low >= self->capacity && s_grow(self))
        return -1;
    uint64_t number = self->next++;
    self->bits[s_word(self->capacity, number)] |= s_mask(number);
    self->outstanding++;
    *seq = number;
    return 0;
}

int ledger_open_at(ledger_t *self, uint64_t seq)
{
    if (seq < self->next)
        return -1;
    if (self->low == self->next)
        self->low = self->next = seq; /* nothing outstanding: the window starts here */
    while (seq + 1 - self->low > self->capacity)
        if (s_grow(self))
            return -1;
    /* The ring's bits past next are clear: they belonged to finished seqs. */
    self->next = seq;
    uint64_t opened;
    return ledger_open(self, &opened);
}

int ledger_advance(ledger_t *self, uint64_t next)
{
    if (next <= self->next)
        return 0;
    if (self->low == self->next) {
        self->low = self->next = next; /* nothing outstanding: the window starts here */
        return 0;
    }
    while (next - self->low > self->capacity)
        if (s_grow(self))
            return -1;
    self->next = next; /* the ring's bits past next are clear */
    return 0;
}

/*  Moves low up to the next outstanding seq, skipping whole zero words. */
static void s_advance(ledger_t *self)
{
    while (self->low < self->next) {
        uint64_t word = self->bits[s_word(self->capacity, self->low)] >> (self->low % 64);
        if (word) {
            self->low += (uint64_t) __builtin_ctzll(word);
            return;
        }
        self->low += 64 - self->low % 64;
    }
    self->low = self->next;
}

void ledger_close(ledger_t *self, uint64_t seq)
{
    assert(ledger_is_outstanding(self, seq));
    self->bits[s_word(self->capacity, seq)] &= ~s_mask(seq);
    self->outstanding--;
    if (seq == self->low)
        s_advance(self);
}

uint64_t ledger_outstanding_before(const ledger_t *self, uint64_t end)
{
    uint64_t count = 0;
    if (end > self->next)
        end = self->next;
    for (uint64_t seq = self->low; seq < end;) {
        if (seq % 64 == 0 && seq + 64 <= end) {
            count += (uint64_t) __builtin_popcountll(self->bits[s_word(self->capacity, seq)]);
            seq += 64;
        }
        else {
            count += ledger_is_outstanding(self, seq) ? 1 : 0;
            seq++;
        }
    }
    return count;
}
