/*  Map from byte-string keys to pointers: open addressing with linear
    probing, keys copied in. O(1) expected for every operation; grows by
    doubling. Used for queues by name, peers by routing id and client id,
    producers by id. */
#ifndef BROKER_DICT_H
#define BROKER_DICT_H

#include <stddef.h>
#include <stdint.h>

typedef struct dict dict_t;

dict_t *dict_new(void);
void dict_destroy(dict_t **self_p);

void *dict_get(const dict_t *self, const void *key, size_t size);

/*  Adds or replaces. Returns 0, or -1 if out of memory (nothing changed). */
int dict_set(dict_t *self, const void *key, size_t size, void *value);

/*  Removes the key if present. */
void dict_delete(dict_t *self, const void *key, size_t size);

size_t dict_size(const dict_t *self);

/*  Visits every value; the callback must not change the dict. */
void dict_each(const dict_t *self, void (*fn)(void *ctx, void *value), void *ctx);

#endif
