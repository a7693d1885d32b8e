/*  Deadlines: the earliest is always first, through sets, moves and cancels. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "deadlines.h"

static void test_earliest_comes_first_through_moves_and_cancels(void **state)
{
    (void) state;
    enum { N = 500 };
    deadlines_t heap;
    deadlines_init(&heap);
    static deadline_t d[N];
    srand(3);
    for (int i = 0; i < N; i++) {
        deadline_init(&d[i], 0);
        assert_int_equal(deadlines_set(&heap, &d[i], rand() % 1000), 0);
    }
    int scheduled = N;
    for (int i = 0; i < N; i += 3, scheduled--)
        deadlines_cancel(&heap, &d[i]);
    for (int i = 1; i < N; i += 7) {
        scheduled += d[i].index == DEADLINE_UNSET; /* a cancelled one comes back */
        deadlines_set(&heap, &d[i], rand() % 1000);
    }
    int64_t last = -1;
    int seen = 0;
    deadline_t *first;
    while ((first = deadlines_first(&heap))) {
        assert_true(first->at >= last);
        last = first->at;
        deadlines_cancel(&heap, first);
        seen++;
    }
    assert_int_equal(seen, scheduled);
    deadlines_cancel(&heap, &d[0]); /* not scheduled: harmless */
    deadlines_fini(&heap);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_earliest_comes_first_through_moves_and_cancels),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
