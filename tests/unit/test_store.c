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
    static const char payload[100];
    for (int i = 0; i < N; i++) {
        items[i] = store_add(store);
        assert_int_equal(store_set_payload(items[i], payload, sizeof payload), 0); /* freed by the store */
    }
    for (int i = 0; i < N; i++)
        assert_ptr_equal(store_find(store, items[i]->id), items[i]);
    for (int i = 0; i < N; i += 2)
        store_remove(store, items[i]);
    assert_int_equal(store_count(store), N / 2);
    store_destroy(&store);
}

/*  Recovery puts items back at the ids they had: a claimed id is found,
    a second claim of it fails, and new items after the claims never reuse
    a claimed slot. */
static void test_claimed_ids_survive_and_new_items_avoid_them(void **state)
{
    (void) state;
    store_t *store = store_new();
    uint64_t claimed[] = {(3ULL << 32) | 5, (1ULL << 32) | 9000, (7ULL << 32) | 0};
    for (size_t i = 0; i < 3; i++) {
        item_t *item = store_claim(store, claimed[i]);
        assert_non_null(item);
        assert_true(item->id == claimed[i]);
    }
    assert_null(store_claim(store, (4ULL << 32) | 5)); /* slot 5 is taken */
    assert_null(store_claim(store, 5));                /* generation 0 is never an id */
    store_claims_done(store);
    for (int i = 0; i < 10000; i++) {
        item_t *item = store_add(store);
        assert_non_null(item);
        for (size_t k = 0; k < 3; k++)
            assert_true((item->id & UINT32_MAX) != (claimed[k] & UINT32_MAX));
    }
    for (size_t i = 0; i < 3; i++)
        assert_non_null(store_find(store, claimed[i]));
    assert_int_equal(store_count(store), 10003);
    store_destroy(&store);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_added_items_are_found_by_id),
        cmocka_unit_test(test_store_ack_of_unknown_or_reused_id_finds_nothing),
        cmocka_unit_test(test_many_items_keep_stable_addresses),
        cmocka_unit_test(test_claimed_ids_survive_and_new_items_avoid_them),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
