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
    assert_null(store_claim(store, 0));
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

/*  Picking changes nothing; adding takes the id picked. */
static void test_pick_is_the_id_the_next_add_gets(void **state)
{
    (void) state;
    store_t *store = store_new();
    uint64_t id = store_pick(store);
    assert_true(id == (1ULL << 32)); /* slot 0, generation 1 */
    assert_true(store_pick(store) == id);
    assert_int_equal(store_count(store), 0);
    item_t *item = store_add(store);
    assert_non_null(item);
    assert_true(item->id == id);
    assert_true(store_pick(store) == ((1ULL << 32) | 1));
    store_destroy(&store);
}

/*  A claim takes a free slot from the middle of the free stack: every
    later pick and add still gives a slot not in use, and each slot once. */
static void test_claim_from_the_middle_of_the_free_stack(void **state)
{
    (void) state;
    enum { N = 9000 };
    store_t *store = store_new();
    static uint8_t used[3 * 4096];
    memset(used, 0, sizeof used);
    item_t *first[10];
    for (int i = 0; i < 10; i++) {
        first[i] = store_add(store);
        used[first[i]->id & UINT32_MAX] = 1;
    }
    store_remove(store, first[3]); /* slot 3 back on top of the stack */
    used[3] = 0;
    /* Slot 2000 is deep in the stack; slot 6 is in use. */
    item_t *claimed = store_claim(store, (5ULL << 32) | 2000);
    assert_non_null(claimed);
    assert_true(claimed->id == ((5ULL << 32) | 2000));
    used[2000] = 1;
    assert_null(store_claim(store, (5ULL << 32) | 6));
    assert_null(store_claim(store, (9ULL << 32) | 2000));
    assert_ptr_equal(store_find(store, first[6]->id), first[6]);
    for (int i = 0; i < N; i++) {
        uint64_t id = store_pick(store);
        item_t *item = store_add(store);
        assert_non_null(item);
        assert_true(item->id == id);
        uint64_t slot = id & UINT32_MAX;
        assert_true(slot < sizeof used);
        assert_false(used[slot]);
        used[slot] = 1;
    }
    assert_ptr_equal(store_find(store, claimed->id), claimed);
    assert_int_equal(store_count(store), 10 - 1 + 1 + N);
    store_destroy(&store);
}

/*  A claim beyond the chunks adds them; their other slots are free. */
static void test_claim_beyond_the_chunks(void **state)
{
    (void) state;
    store_t *store = store_new();
    assert_non_null(store_add(store)); /* slot 0 */
    uint64_t far = (2ULL << 32) | (3 * 4096 + 7);
    item_t *item = store_claim(store, far);
    assert_non_null(item);
    assert_true(item->id == far);
    assert_ptr_equal(store_find(store, far), item);
    assert_null(store_claim(store, far));
    assert_null(store_find(store, (1ULL << 32) | (3 * 4096 + 8)));
    /* The new chunks' other slots are free: each is handed out once, and
       the claimed one never. */
    static uint8_t given[4 * 4096];
    memset(given, 0, sizeof given);
    given[0] = given[3 * 4096 + 7] = 1;
    for (int i = 2; i < 4 * 4096; i++) {
        uint64_t id = store_pick(store);
        item_t *next = store_add(store);
        assert_non_null(next);
        assert_true(next->id == id);
        assert_true(id >> 32 == 1);
        assert_true((id & UINT32_MAX) < sizeof given);
        assert_false(given[id & UINT32_MAX]);
        given[id & UINT32_MAX] = 1;
    }
    assert_int_equal(store_count(store), 4 * 4096);
    /* All full: the next is the first slot of a new chunk. */
    assert_true(store_pick(store) == ((1ULL << 32) | (4 * 4096)));
    store_destroy(&store);
}

/*  A slot's next item has a later generation than the one removed, also
    when that one's id was claimed with a generation of its own. */
static void test_next_generation_after_remove(void **state)
{
    (void) state;
    store_t *store = store_new();
    item_t *item = store_claim(store, (40ULL << 32) | 12);
    assert_non_null(item);
    store_remove(store, item);
    assert_true(store_pick(store) == ((41ULL << 32) | 12)); /* removed last: on top */
    item = store_add(store);
    assert_true(item->id == ((41ULL << 32) | 12));
    store_remove(store, item);
    /* A claim may go back in generation (the leader says so); the slot
       goes on from there. */
    item = store_claim(store, (2ULL << 32) | 12);
    assert_non_null(item);
    store_remove(store, item);
    assert_true(store_pick(store) == ((3ULL << 32) | 12));
    /* The last generation is followed by 1, never by 0. */
    item = store_claim(store, ((uint64_t) UINT32_MAX << 32) | 12);
    assert_non_null(item);
    store_remove(store, item);
    assert_true(store_pick(store) == ((1ULL << 32) | 12));
    store_destroy(&store);
}

static uint64_t s_random(uint64_t *x)
{
    /* splitmix64: the same numbers everywhere */
    uint64_t z = (*x += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

typedef struct {
    uint64_t *ids;
    size_t count;
} ids_t;

static void s_collect(void *ctx, item_t *item)
{
    ids_t *ids = ctx;
    ids->ids[ids->count++] = item->id;
}

/*  A leader and its replica: the replica claims the ids the leader added
    or claimed, and removes what it removed. They end alike and pick the
    same id next, however often either picked meanwhile. */
static void test_same_claims_and_removes_give_the_same_store(void **state)
{
    (void) state;
    enum { OPS = 10000, SLOTS = 3 * 4096 };
    store_t *leader = store_new(), *replica = store_new();
    static uint64_t live[OPS];
    size_t live_count = 0;
    uint64_t x = 20240611;
    for (int op = 0; op < OPS; op++) {
        uint64_t r = s_random(&x);
        if (r % 8 < 3 && live_count) { /* remove one at random */
            size_t k = (size_t) (s_random(&x) % live_count);
            item_t *a = store_find(leader, live[k]), *b = store_find(replica, live[k]);
            assert_non_null(a);
            assert_non_null(b);
            store_remove(leader, a);
            store_remove(replica, b);
            live[k] = live[--live_count];
        } else if (r % 8 < 6) { /* a new item at the leader */
            if (r & 256)
                assert_true(store_pick(replica) == store_pick(leader));
            item_t *a = store_add(leader);
            assert_non_null(a);
            item_t *b = store_claim(replica, a->id);
            assert_non_null(b);
            live[live_count++] = a->id;
        } else { /* an id from a record: any slot, any generation */
            uint64_t id = ((1 + s_random(&x) % 50) << 32) | (s_random(&x) % SLOTS);
            item_t *a = store_claim(leader, id), *b = store_claim(replica, id);
            assert_true((a == NULL) == (b == NULL));
            if (a)
                live[live_count++] = id;
        }
        if (r & 512)
            (void) store_pick(replica);
    }
    assert_int_equal(store_count(leader), live_count);
    assert_int_equal(store_count(replica), live_count);
    assert_true(store_pick(leader) == store_pick(replica));
    ids_t a = {calloc(live_count + 1, sizeof(uint64_t)), 0};
    ids_t b = {calloc(live_count + 1, sizeof(uint64_t)), 0};
    store_each(leader, s_collect, &a);
    store_each(replica, s_collect, &b);
    assert_int_equal(a.count, live_count);
    assert_int_equal(b.count, live_count);
    assert_memory_equal(a.ids, b.ids, live_count * sizeof(uint64_t));
    /* And they go on alike: the next thousand adds give the same ids. */
    for (int i = 0; i < 1000; i++) {
        item_t *ia = store_add(leader), *ib = store_add(replica);
        assert_non_null(ia);
        assert_non_null(ib);
        assert_true(ia->id == ib->id);
    }
    free(a.ids);
    free(b.ids);
    store_destroy(&leader);
    store_destroy(&replica);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_added_items_are_found_by_id),
        cmocka_unit_test(test_store_ack_of_unknown_or_reused_id_finds_nothing),
        cmocka_unit_test(test_many_items_keep_stable_addresses),
        cmocka_unit_test(test_claimed_ids_survive_and_new_items_avoid_them),
        cmocka_unit_test(test_pick_is_the_id_the_next_add_gets),
        cmocka_unit_test(test_claim_from_the_middle_of_the_free_stack),
        cmocka_unit_test(test_claim_beyond_the_chunks),
        cmocka_unit_test(test_next_generation_after_remove),
        cmocka_unit_test(test_same_claims_and_removes_give_the_same_store),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
