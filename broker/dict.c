#include "dict.h"

#include <stdlib.h>
#include <string.h>

typedef struct {
    uint8_t *key; /* NULL: empty slot */
    size_t size;
    uint64_t hash;
    void *value;
    int deleted;  /* tombstone: keeps probe chains intact */
} slot_t;

struct dict {
    slot_t *slots;
    size_t capacity; /* power of two */
    size_t used;     /* live entries */
    size_t filled;   /* live entries plus tombstones */
};

static uint64_t s_hash(const void *key, size_t size)
{
    /* FNV-1a: keys are short (ids, names); no need for more. */
    const uint8_t *bytes = key;
    uint64_t hash = 1469598103934665603ULL;
    for (size_t i = 0; i < size; i++) {
        hash ^= bytes[i];
        hash *= 1099511628211ULL;
    }
    return hash;
}

dict_t *dict_new(void)
{
    dict_t *self = calloc(1, sizeof *self);
    if (!self)
        return NULL;
    self->capacity = 16;
    self->slots = calloc(self->capacity, sizeof *self->slots);
    if (!self->slots) {
        free(self);
        return NULL;
    }
    return self;
}

void dict_destroy(dict_t **self_p)
{
    dict_t *self = *self_p;
    if (!self)
        return;
    for (size_t i = 0; i < self->capacity; i++)
        free(self->slots[i].key);
    free(self->slots);
    free(self);
    *self_p = NULL;
}

static slot_t *s_find(const dict_t *self, const void *key, size_t size, uint64_t hash)
{
    size_t mask = self->capacity - 1;
    for (size_t i = hash & mask;; i = (i + 1) & mask) {
        slot_t *slot = &self->slots[i];
        if (!slot->key && !slot->deleted)
            return NULL;
        if (slot->key && slot->hash == hash && slot->size == size
            && memcmp(slot->key, key, size) == 0)
            return slot;
    }
}

void *dict_get(const dict_t *self, const void *key, size_t size)
{
    slot_t *slot = s_find(self, key, size, s_hash(key, size));
    return slot ? slot->value : NULL;
}

static int s_resize(dict_t *self, size_t capacity)
{
    slot_t *slots = calloc(capacity, sizeof *slots);
    if (!slots)
        return -1;
    for (size_t i = 0; i < self->capacity; i++) {
        slot_t *old = &self->slots[i];
        if (!old->key)
            continue;
        size_t j = old->hash & (capacity - 1);
        while (slots[j].key)
            j = (j + 1) & (capacity - 1);
        slots[j] = *old;
        slots[j].deleted = 0;
    }
    free(self->slots);
    self->slots = slots;
    self->capacity = capacity;
    self->filled = self->used;
    return 0;
}

int dict_set(dict_t *self, const void *key, size_t size, void *value)
{
    uint64_t hash = s_hash(key, size);
    slot_t *slot = s_find(self, key, size, hash);
    if (slot) {
        slot->value = value;
        return 0;
    }
    if ((self->filled + 1) * 10 > self->capacity * 7) {
        size_t capacity = self->used * 2 + 2 > self->capacity / 2 ? self->capacity * 2
                                                                  : self->capacity;
        if (s_resize(self, capacity))
            return -1;
    }
    uint8_t *copy = malloc(size ? size : 1);
    if (!copy)
        return -1;
    memcpy(copy, key, size);
    size_t mask = self->capacity - 1;
    size_t i = hash & mask;
    while (self->slots[i].key)
        i = (i + 1) & mask;
    if (!self->slots[i].deleted)
        self->filled++;
    self->slots[i] = (slot_t){copy, size, hash, value, 0};
    self->used++;
    return 0;
}

void dict_delete(dict_t *self, const void *key, size_t size)
{
    slot_t *slot = s_find(self, key, size, s_hash(key, size));
    if (!slot)
        return;
    free(slot->key);
    *slot = (slot_t){NULL, 0, 0, NULL, 1};
    self->used--;
}

size_t dict_size(const dict_t *self)
{
    return self->used;
}

void dict_each(const dict_t *self, void (*fn)(void *ctx, void *value), void *ctx)
{
    for (size_t i = 0; i < self->capacity; i++)
        if (self->slots[i].key)
            fn(ctx, self->slots[i].value);
}
