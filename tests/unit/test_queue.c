/*  Queue: FIFO, fair dispatch by credit, requeue at the front, exact joins. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "queue.h"

typedef struct {
    store_t *store;
    queue_t *queue;
} fixture_t;

static int s_setup(void **state)
{
    fixture_t *f = calloc(1, sizeof *f);
    f->store = store_new();
    f->queue = queue_new("q", 0, 0, 1000);
    *state = f;
    return 0;
}

static int s_teardown(void **state)
{
    fixture_t *f = *state;
    queue_destroy(&f->queue);
    store_destroy(&f->store);
    free(f);
    return 0;
}

static item_t *s_put(fixture_t *f)
{
    item_t *item = store_add(f->store);
    assert_int_equal(queue_accept(f->queue, item), 0);
    return item;
}

static void test_items_come_out_in_order_put(void **state)
{
    fixture_t *f = *state;
    item_t *a = s_put(f), *b = s_put(f);
    assert_ptr_equal(queue_pop(f->queue), a);
    assert_ptr_equal(queue_pop(f->queue), b);
    assert_null(queue_pop(f->queue));
}

static void test_idle_consumer_gets_the_next_item_before_a_busy_one(void **state)
{
    fixture_t *f = *state;
    consumer_t busy, idle;
    consumer_init(&busy);
    consumer_init(&idle);
    busy.credit = 10;
    idle.credit = 1;
    queue_attach(f->queue, &busy);
    s_put(f);
    queue_deliver(f->queue, &busy, queue_pop(f->queue));
    queue_attach(f->queue, &idle);
    assert_ptr_equal(queue_next_consumer(f->queue), &idle);
    queue_detach(f->queue, &busy);
    queue_detach(f->queue, &idle);
}

static void test_consumer_never_gets_more_than_its_credit(void **state)
{
    fixture_t *f = *state;
    consumer_t c;
    consumer_init(&c);
    c.credit = 2;
    queue_attach(f->queue, &c);
    for (int i = 0; i < 3; i++)
        s_put(f);
    queue_deliver(f->queue, &c, queue_pop(f->queue));
    assert_ptr_equal(queue_next_consumer(f->queue), &c);
    queue_deliver(f->queue, &c, queue_pop(f->queue));
    assert_null(queue_next_consumer(f->queue));
    queue_detach(f->queue, &c);
}

static void test_detached_consumers_items_go_back_first_in_their_order(void **state)
{
    fixture_t *f = *state;
    consumer_t c;
    consumer_init(&c);
    c.credit = 5;
    queue_attach(f->queue, &c);
    item_t *a = s_put(f), *b = s_put(f), *later = s_put(f);
    queue_deliver(f->queue, &c, queue_pop(f->queue));
    queue_deliver(f->queue, &c, queue_pop(f->queue));
    queue_detach(f->queue, &c);
    assert_int_equal(f->queue->inflight_count, 0);
    assert_ptr_equal(queue_pop(f->queue), a);
    assert_ptr_equal(queue_pop(f->queue), b);
    assert_ptr_equal(queue_pop(f->queue), later);
    assert_null(a->holder);
}

static void test_taken_back_item_leaves_its_holder_and_frees_credit(void **state)
{
    fixture_t *f = *state;
    consumer_t c;
    consumer_init(&c);
    c.credit = 1;
    queue_attach(f->queue, &c);
    item_t *item = s_put(f);
    queue_deliver(f->queue, &c, queue_pop(f->queue));
    assert_null(queue_next_consumer(f->queue));
    queue_take_back(f->queue, &c, item);
    assert_null(item->holder);
    assert_int_equal(c.held_count, 0);
    assert_int_equal(f->queue->inflight_count, 0);
    assert_int_equal(f->queue->redelivered_total, 1);
    assert_ptr_equal(queue_next_consumer(f->queue), &c);
    assert_int_equal(f->queue->ledger.outstanding, 1); /* still owed to join */
    queue_requeue(f->queue, item);
    assert_ptr_equal(queue_pop(f->queue), item);
    queue_detach(f->queue, &c);
}

static void test_join_waits_only_for_items_accepted_before_it(void **state)
{
    fixture_t *f = *state;
    consumer_t c;
    consumer_init(&c);
    c.credit = 10;
    queue_attach(f->queue, &c);
    item_t *before = s_put(f);
    joiner_t join = {.mode = AQ_JOIN_BEFORE};
    assert_false(queue_join_start(f->queue, &join));
    queue_add_joiner(f->queue, &join);
    item_t *after = s_put(f);
    queue_deliver(f->queue, &c, queue_pop(f->queue));
    queue_deliver(f->queue, &c, queue_pop(f->queue));
    queue_ack(f->queue, &c, after);
    assert_null(queue_take_satisfied(f->queue));
    assert_int_equal(queue_join_remaining(f->queue, &join), 1);
    queue_ack(f->queue, &c, before);
    assert_ptr_equal(queue_take_satisfied(f->queue), &join);
    assert_int_equal(join.waited, 1);
    queue_detach(f->queue, &c);
}

static void test_discarded_items_finish_for_joins_and_drain_the_queue(void **state)
{
    fixture_t *f = *state;
    item_t *a = s_put(f), *b = s_put(f);
    joiner_t join = {.mode = AQ_JOIN_BEFORE};
    assert_false(queue_join_start(f->queue, &join));
    queue_add_joiner(f->queue, &join);
    assert_false(queue_is_drained(f->queue));
    assert_ptr_equal(queue_discard_next(f->queue), a);
    assert_null(queue_take_satisfied(f->queue));
    assert_ptr_equal(queue_discard_next(f->queue), b);
    assert_null(queue_discard_next(f->queue));
    assert_ptr_equal(queue_take_satisfied(f->queue), &join);
    assert_int_equal(f->queue->discarded_total, 2);
    assert_int_equal(f->queue->acked_total, 0);
    assert_true(queue_is_drained(f->queue));
    store_remove(f->store, a);
    store_remove(f->store, b);
}

static void test_join_all_is_held_back_by_later_items(void **state)
{
    fixture_t *f = *state;
    consumer_t c;
    consumer_init(&c);
    c.credit = 10;
    queue_attach(f->queue, &c);
    item_t *first = s_put(f);
    joiner_t join = {.mode = AQ_JOIN_ALL};
    assert_false(queue_join_start(f->queue, &join));
    queue_add_joiner(f->queue, &join);
    item_t *later = s_put(f);
    queue_deliver(f->queue, &c, queue_pop(f->queue));
    queue_deliver(f->queue, &c, queue_pop(f->queue));
    queue_ack(f->queue, &c, first);
    assert_null(queue_take_satisfied(f->queue));
    queue_ack(f->queue, &c, later);
    assert_ptr_equal(queue_take_satisfied(f->queue), &join);
    queue_detach(f->queue, &c);
}

static void test_join_on_an_empty_queue_is_satisfied_at_once(void **state)
{
    fixture_t *f = *state;
    joiner_t join = {.mode = AQ_JOIN_BEFORE};
    assert_true(queue_join_start(f->queue, &join));
    join.mode = AQ_JOIN_ALL;
    assert_true(queue_join_start(f->queue, &join));
}

static void test_maxsize_counts_queued_items_only(void **state)
{
    fixture_t *f = *state;
    f->queue->maxsize = 1;
    consumer_t c;
    consumer_init(&c);
    c.credit = 1;
    queue_attach(f->queue, &c);
    s_put(f);
    assert_true(queue_is_full(f->queue));
    queue_deliver(f->queue, &c, queue_pop(f->queue));
    assert_false(queue_is_full(f->queue));
    queue_detach(f->queue, &c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_items_come_out_in_order_put, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_idle_consumer_gets_the_next_item_before_a_busy_one, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_consumer_never_gets_more_than_its_credit, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_detached_consumers_items_go_back_first_in_their_order, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_taken_back_item_leaves_its_holder_and_frees_credit, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_join_waits_only_for_items_accepted_before_it, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_discarded_items_finish_for_joins_and_drain_the_queue, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_join_all_is_held_back_by_later_items, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_join_on_an_empty_queue_is_satisfied_at_once, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_maxsize_counts_queued_items_only, s_setup, s_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
