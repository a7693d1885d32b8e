#include "store.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

#define CHUNK_ITEMS 4096
#define SLOT_MAX UINT32_MAX
#define GENERATION_MAX 0xffffffu /* the 24 bits of an id above its slot */

struct store {
    uint64_t shard_bits;  /* the shard's number << 56, in every id (4.15) */
    item_t **chunks;
    size_t chunk_count;
    size_t chunk_capacity;
    uint32_t *free_slots; /* stack of free slot numbers */
    uint32_t *free_at;    /* by slot: its place in free_slots while it is free */
    size_t free_count;
    size_t count;
    /* Slots from here on were never claimed: all zero, and never read
       (a new chunk's pages are the kernel's zero page until written; a
       read before the first write would cost a second page fault). */
    uint64_t fresh;
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
            if (self->chunks[c][i].id) {
                free(self->chunks[c][i].data);
                free(self->chunks[c][i].epitaph);
            }
        free(self->chunks[c]);
    }
    free(self->chunks);
    free(self->free_slots);
    free(self->free_at);
    free(self);
    *self_p = NULL;
}

static void s_push(store_t *self, uint32_t slot)
{
    self->free_at[slot] = (uint32_t) self->free_count;
    self->free_slots[self->free_count++] = slot;
}

/*  Adds a chunk, its slots not yet on the free stack. */
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
    uint32_t *free_at = realloc(self->free_at, slots * sizeof *free_at);
    if (!free_at)
        return -1;
    self->free_at = free_at;
    item_t *chunk = calloc(CHUNK_ITEMS, sizeof *chunk);
    if (!chunk)
        return -1;
    self->chunks[self->chunk_count++] = chunk;
    return 0;
}

/*  Grows the chunks until `slot` is in one (or out of memory: -1), then
    pushes all their new slots on the free stack, highest first, so that
    they are picked in increasing order. Cold and not inlined: called once
    per CHUNK_ITEMS claims at most, and store_claim, without it, saves
    fewer registers. */
__attribute__((cold, noinline)) static int s_grow_to(store_t *self, uint64_t slot)
{
    uint64_t first = self->chunk_count * (uint64_t) CHUNK_ITEMS;
    int rc = 0;
    while (rc == 0 && slot >= self->chunk_count * (uint64_t) CHUNK_ITEMS)
        rc = s_grow(self);
    for (uint64_t end = self->chunk_count * (uint64_t) CHUNK_ITEMS; end > first; end--)
        s_push(self, (uint32_t) (end - 1));
    return rc;
}

/*  A free slot is all zero but its timer's `at` (a new chunk is zeroed,
    store_remove zeroes the item it frees): only what is not zero is set. */
static void s_init_item(item_t *item, uint64_t id)
{
    item->id = id;
    list_init(&item->link);
    deadline_init(&item->timer, 0);
}

void store_set_shard(store_t *self, uint8_t shard)
{
    self->shard_bits = (uint64_t) shard << 56;
}

uint64_t store_pick(const store_t *self)
{
    uint64_t slot = self->chunk_count * (uint64_t) CHUNK_ITEMS; /* of the next chunk */
    uint32_t generation = 1;
    if (self->free_count) {
        slot = self->free_slots[self->free_count - 1];
        /* Kept in a free slot's timer; 24 bits, under the shard's 8. */
        if (slot < self->fresh)
            generation = (uint32_t) (s_slot(self, slot)->timer.at + 1) & GENERATION_MAX;
        if (generation == 0)
            generation = 1; /* id 0 means free */
    } else if (slot + CHUNK_ITEMS > SLOT_MAX)
        return 0;
    return self->shard_bits | ((uint64_t) generation << 32) | slot;
}

item_t *store_claim(store_t *self, uint64_t id)
{
    uint64_t slot = id & SLOT_MAX;
    if (id == 0 || (id >> 32) == 0)
        return NULL;
    if (slot >= self->chunk_count * (uint64_t) CHUNK_ITEMS && s_grow_to(self, slot))
        return NULL;
    item_t *item = s_slot(self, slot);
    if (slot >= self->fresh)
        self->fresh = slot + 1;
    else if (item->id)
        return NULL;
    /* Off the free stack: the top takes its place. */
    uint32_t at = self->free_at[slot], top = self->free_slots[--self->free_count];
    assert(at <= self->free_count && self->free_slots[at] == slot);
    self->free_slots[at] = top;
    self->free_at[top] = at;
    s_init_item(item, id);
    self->count++;
    return item;
}

item_t *store_add(store_t *self)
{
    uint64_t id = store_pick(self);
    return id ? store_claim(self, id) : NULL;
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
    if (item->epitaph)
        free(item->epitaph);
    uint32_t slot = (uint32_t) (item->id & SLOT_MAX);
    uint32_t generation = (uint32_t) (item->id >> 32) & GENERATION_MAX;
    *item = (item_t){0};
    item->timer.at = generation; /* the next item in this slot gets the next one */
    s_push(self, slot);
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
