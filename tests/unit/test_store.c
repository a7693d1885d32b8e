/*  Store: ids find their item, and never find anything once it is gone. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "store.h"

static void test_added_items_are_found_by_id(void **state)
{
    (void) state;
    store_t *store = store_new();
    item_t *a = store_add(store), *b = store_add(store);
    assert_non_null(a);
    assert_true(a->id != b->id);
    assert_ptr_equal(store_find(store, a->id), a);
    assert_ptr_equal(store_find(store, b->id), b);
    assert_int_equal(store_count(store), 2);
    store_destroy(&store);
    assert_null(store);
}

static void test_store_ack_of_unknown_or_reused_id_finds_nothing(void **state)
{
    (void) state;
    store_t *store = store_new();
    item_t *item = store_add(store);
    uint64_t old_id = item->id;
    store_remove(store, item);
    item_t *reused = store_add(store); /* same slot, new generation */
    assert_true(reused->id != old_id);
    assert_null(store_find(store, old_id));
    assert_null(store_find(store, 0));
    assert_null(store_find(store, UINT64_MAX));
    assert_null(store_find(store, 12345678));
    store_destroy(&store);
}

static void test_many_items_keep_stable_addresses(void **state)
{
    (void) state;
    enum { N = 20000 };
    store_t *store = store_new();
    static item_t *items[N];
    for (int i = 0; i < N; i++) {
        items[i] = store_add(store);
        zmq_msg_init_size(&items[i]->payload, 100); /* freed by the store */
    }
    for (int i = 0; i < N; i++)
        assert_ptr_equal(store_find(store, items[i]->id), items[i]);
    for (int i = 0; i < N; i += 2)
        store_remove(store, items[i]);
    assert_int_equal(store_count(store), N / 2);
    store_destroy(&store);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_added_items_are_found_by_id),
        cmocka_unit_test(test_store_ack_of_unknown_or_reused_id_finds_nothing),
        cmocka_unit_test(test_many_items_keep_stable_addresses),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
