#include "store.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

#define CHUNK_ITEMS 4096
#define SLOT_MAX UINT32_MAX

struct store {
    item_t **chunks;
    size_t chunk_count;
    size_t chunk_capacity;
    uint32_t *free_slots; /* stack of free slot numbers */
    size_t free_count;
    size_t count;
    int claiming;         /* store_claim since the last store_claims_done: the free
                             stack is stale and rebuilt then */
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
                free(self->chunks[c][i].data);
        free(self->chunks[c]);
    }
    free(self->chunks);
    free(self->free_slots);
    free(self);
    *self_p = NULL;
}

/*  Adds a chunk; with `push`, pushes its slots on the free stack (highest
    first, so slots are handed out in increasing order). */
static int s_grow(store_t *self, int push)
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
    for (uint32_t i = CHUNK_ITEMS; push && i > 0; i--)
        self->free_slots[self->free_count++] = base + i - 1;
    return 0;
}

static void s_init_item(item_t *item, uint64_t id)
{
    *item = (item_t){0};
    item->id = id;
    list_init(&item->link);
    deadline_init(&item->timer, 0);
}

item_t *store_add(store_t *self)
{
    assert(!self->claiming);
    if (self->free_count == 0 && s_grow(self, 1))
        return NULL;
    uint32_t slot = self->free_slots[--self->free_count];
    item_t *item = s_slot(self, slot);
    uint32_t generation = (uint32_t) (item->timer.at + 1); /* kept in a free slot's timer */
    if (generation == 0)
        generation = 1; /* id 0 means free */
    s_init_item(item, ((uint64_t) generation << 32) | slot);
    self->count++;
    return item;
}

item_t *store_claim(store_t *self, uint64_t id)
{
    uint64_t slot = id & SLOT_MAX;
    if (id == 0 || (id >> 32) == 0)
        return NULL;
    while (slot >= self->chunk_count * (uint64_t) CHUNK_ITEMS)
        if (s_grow(self, 0))
            return NULL;
    item_t *item = s_slot(self, slot);
    if (item->id)
        return NULL;
    self->claiming = 1;
    s_init_item(item, id);
    self->count++;
    return item;
}

int store_claims_done(store_t *self)
{
    self->claiming = 0;
    self->free_count = 0;
    size_t slots = self->chunk_count * CHUNK_ITEMS;
    for (size_t slot = slots; slot > 0; slot--)
        if (!s_slot(self, slot - 1)->id)
            self->free_slots[self->free_count++] = (uint32_t) (slot - 1);
    return 0;
}

item_t *store_find(const store_t *self, uint64_t id)
{
    uint64_t slot = id & SLOT_MAX;
    if (id == 0 || slot >= self->chunk_count * (uint64_t) CHUNK_ITEMS)
        return NULL;
    item_t *item = s_slot(self, slot);
    return item->id == id ? item : NULL;
}

int store_set_payload(item_t *item, const void *data, size_t size)
{
    if (size > UINT32_MAX)
        return -1;
    uint8_t *copy = NULL;
    if (size) {
        copy = malloc(size);
        if (!copy)
            return -1;
        memcpy(copy, data, size);
    }
    free(item->data);
    item->data = copy;
    item->size = (uint32_t) size;
    return 0;
}

void store_remove(store_t *self, item_t *item)
{
    assert(item->id && store_find(self, item->id) == item);
    assert(!list_linked(&item->link));
    assert(item->timer.index == DEADLINE_UNSET);
    free(item->data);
    uint32_t slot = (uint32_t) (item->id & SLOT_MAX);
    uint32_t generation = (uint32_t) (item->id >> 32);
    *item = (item_t){0};
    item->timer.at = generation; /* the next item in this slot gets the next one */
    if (!self->claiming)
        self->free_slots[self->free_count++] = slot;
    self->count--;
}

size_t store_count(const store_t *self)
{
    return self->count;
}

size_t store_each_slice(const store_t *self, size_t from, size_t count,
                        void (*fn)(void *ctx, item_t *item), void *ctx)
{
    size_t slots = self->chunk_count * CHUNK_ITEMS, end = from + count;
    for (size_t slot = from; slot < end && slot < slots; slot++) {
        item_t *item = &self->chunks[slot / CHUNK_ITEMS][slot % CHUNK_ITEMS];
        if (item->id)
            fn(ctx, item);
    }
    return end < slots ? end : SIZE_MAX;
}

void store_each(const store_t *self, void (*fn)(void *ctx, item_t *item), void *ctx)
{
    for (size_t c = 0; c < self->chunk_count; c++)
        for (size_t i = 0; i < CHUNK_ITEMS; i++)
            if (self->chunks[c][i].id)
                fn(ctx, &self->chunks[c][i]);
}
