/*  The broker's invariants (docs/DESIGN.md), checked whole. */
#ifndef BROKER_CHECK_H
#define BROKER_CHECK_H

#include <stddef.h>

#include "broker.h"

/*  0 if every invariant holds; else -1 with the first one broken, in words,
    in `why`. O(items + sessions + producers): for tests and the fuzzer. */
int broker_check(broker_t *self, char *why, size_t size);

#endif
