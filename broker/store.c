#include "store.h"

#include <assert.h>
#include <stdlib.h>

#define CHUNK_ITEMS 4096
#define SLOT_MAX UINT32_MAX

struct store {
    item_t **chunks;
    size_t chunk_count;
    size_t chunk_capacity;
    uint32_t *free_slots; /* stack of free slot numbers */
    size_t free_count;
    size_t count;
};

store_t *store_new(void)
{
    return calloc(1, sizeof(store_t));
}

static item_t *s_slot(const store_t *self, uint64_t slot)
{
    return &self->chunks[slot / CHUNK_ITEMS][slot % CHUNK_ITEMS];
}

void store_destroy(store_t **self_p)
{
    store_t *self = *self_p;
    if (!self)
        return;
    for (size_t c = 0; c < self->chunk_count; c++) {
        for (size_t i = 0; i < CHUNK_ITEMS; i++)
            if (self->chunks[c][i].id)
                zmq_msg_close(&self->chunks[c][i].payload);
        free(self->chunks[c]);
    }
    free(self->chunks);
    free(self->free_slots);
    free(self);
    *self_p = NULL;
}

/*  Adds a chunk and pushes its slots on the free stack (highest first, so
    slots are handed out in increasing order). */
static int s_grow(store_t *self)
{
    if ((self->chunk_count + 1) * (uint64_t) CHUNK_ITEMS > SLOT_MAX)
        return -1;
    if (self->chunk_count == self->chunk_capacity) {
        size_t capacity = self->chunk_capacity ? self->chunk_capacity * 2 : 16;
        item_t **chunks = realloc(self->chunks, capacity * sizeof *chunks);
        if (!chunks)
            return -1;
        self->chunks = chunks;
        self->chunk_capacity = capacity;
    }
    size_t slots = (self->chunk_count + 1) * CHUNK_ITEMS;
    uint32_t *free_slots = realloc(self->free_slots, slots * sizeof *free_slots);
    if (!free_slots)
        return -1;
    self->free_slots = free_slots;
    item_t *chunk = calloc(CHUNK_ITEMS, sizeof *chunk);
    if (!chunk)
        return -1;
    uint32_t base = (uint32_t) (self->chunk_count * CHUNK_ITEMS);
    self->chunks[self->chunk_count++] = chunk;
    for (uint32_t i = CHUNK_ITEMS; i > 0; i--)
        self->free_slots[self->free_count++] = base + i - 1;
    return 0;
}

item_t *store_add(store_t *self)
{
    if (self->free_count == 0 && s_grow(self))
        return NULL;
    uint32_t slot = self->free_slots[--self->free_count];
    item_t *item = s_slot(self, slot);
    uint32_t generation = item->generation + 1;
    if (generation == 0)
        generation = 1; /* id 0 means free */
    *item = (item_t){0};
    item->generation = generation;
    item->id = ((uint64_t) generation << 32) | slot;
    list_init(&item->link);
    deadline_init(&item->timer, 0);
    zmq_msg_init(&item->payload);
    self->count++;
    return item;
}

item_t *store_find(const store_t *self, uint64_t id)
{
    uint64_t slot = id & SLOT_MAX;
    if (id == 0 || slot >= self->chunk_count * (uint64_t) CHUNK_ITEMS)
        return NULL;
    item_t *item = s_slot(self, slot);
    return item->id == id ? item : NULL;
}

void store_remove(store_t *self, item_t *item)
{
    assert(item->id && store_find(self, item->id) == item);
    assert(!list_linked(&item->link));
    zmq_msg_close(&item->payload);
    uint32_t slot = (uint32_t) (item->id & SLOT_MAX);
    item->id = 0;
    self->free_slots[self->free_count++] = slot;
    self->count--;
}

size_t store_count(const store_t *self)
{
    return self->count;
}
