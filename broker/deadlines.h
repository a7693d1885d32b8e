/*  Things that must happen at a time: a binary min-heap of deadline_t
    embedded in their owners (joins that time out; later leases and delayed
    retries). Add, remove and update are O(log n); the earliest is O(1). */
#ifndef BROKER_DEADLINES_H
#define BROKER_DEADLINES_H

#include <stddef.h>
#include <stdint.h>

#define DEADLINE_UNSET UINT32_MAX

typedef struct {
    int64_t at;      /* monotonic milliseconds */
    uint32_t index;  /* in the heap, or DEADLINE_UNSET */
    int32_t kind;    /* the owner's business: what to do when it fires */
} deadline_t;

typedef struct {
    deadline_t **heap;
    size_t count;
    size_t capacity;
} deadlines_t;

void deadlines_init(deadlines_t *self);
void deadlines_fini(deadlines_t *self);

/*  Initialises a deadline of this kind that is in no heap. */
void deadline_init(deadline_t *deadline, int32_t kind);

/*  Makes room for `count` deadlines in all, so that setting up to that many
    cannot fail. Returns -1 if out of memory. */
int deadlines_reserve(deadlines_t *self, size_t count);

/*  Schedules `deadline` at `at` (moving it if already scheduled). Returns
    -1 if out of memory (nothing changed). */
int deadlines_set(deadlines_t *self, deadline_t *deadline, int64_t at);

/*  Unschedules it; harmless if it is not scheduled. */
void deadlines_cancel(deadlines_t *self, deadline_t *deadline);

/*  The earliest deadline, or NULL. */
deadline_t *deadlines_first(const deadlines_t *self);

#endif
