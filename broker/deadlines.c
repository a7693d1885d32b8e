#include "deadlines.h"

#include <stdlib.h>

void deadlines_init(deadlines_t *self)
{
    self->heap = NULL;
    self->count = self->capacity = 0;
}

void deadlines_fini(deadlines_t *self)
{
    free(self->heap);
    deadlines_init(self);
}

void deadline_init(deadline_t *deadline, int32_t kind)
{
    deadline->at = 0;
    deadline->index = DEADLINE_UNSET;
    deadline->kind = kind;
}

int deadlines_reserve(deadlines_t *self, size_t count)
{
    if (count <= self->capacity)
        return 0;
    if (count >= DEADLINE_UNSET)
        return -1;
    size_t capacity = self->capacity ? self->capacity : 64;
    while (capacity < count)
        capacity *= 2;
    deadline_t **heap = realloc(self->heap, capacity * sizeof *heap);
    if (!heap)
        return -1;
    self->heap = heap;
    self->capacity = capacity;
    return 0;
}

static void s_place(deadlines_t *self, size_t index, deadline_t *deadline)
{
    self->heap[index] = deadline;
    deadline->index = (uint32_t) index;
}

static void s_sift_up(deadlines_t *self, size_t index)
{
    deadline_t *moving = self->heap[index];
    while (index > 0) {
        size_t parent = (index - 1) / 2;
        if (self->heap[parent]->at <= moving->at)
            break;
        s_place(self, index, self->heap[parent]);
        index = parent;
    }
    s_place(self, index, moving);
}

static void s_sift_down(deadlines_t *self, size_t index)
{
    deadline_t *moving = self->heap[index];
    for (;;) {
        size_t child = index * 2 + 1;
        if (child >= self->count)
            break;
        if (child + 1 < self->count && self->heap[child + 1]->at < self->heap[child]->at)
            child++;
        if (self->heap[child]->at >= moving->at)
            break;
        s_place(self, index, self->heap[child]);
        index = child;
    }
    s_place(self, index, moving);
}

int deadlines_set(deadlines_t *self, deadline_t *deadline, int64_t at)
{
    if (deadline->index != DEADLINE_UNSET) {
        deadline->at = at;
        s_sift_up(self, deadline->index);
        s_sift_down(self, deadline->index);
        return 0;
    }
    if (self->count == self->capacity && deadlines_reserve(self, self->count + 1))
        return -1;
    deadline->at = at;
    s_place(self, self->count++, deadline);
    s_sift_up(self, deadline->index);
    return 0;
}

void deadlines_cancel(deadlines_t *self, deadline_t *deadline)
{
    size_t index = deadline->index;
    if (deadline->index == DEADLINE_UNSET)
        return;
    deadline->index = DEADLINE_UNSET;
    deadline_t *last = self->heap[--self->count];
    if (last == deadline)
        return;
    s_place(self, index, last);
    s_sift_up(self, last->index);
    s_sift_down(self, last->index);
}

deadline_t *deadlines_first(const deadlines_t *self)
{
    return self->count ? self->heap[0] : NULL;
}
