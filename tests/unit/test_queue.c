/*  Queue: FIFO, fair dispatch by credit, requeue at the front, exact joins.
    Items move only through records (state_apply), as the broker moves them;
    consumers hold them with queue_hold / queue_release (dispatch.c's order). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "queue.h"
#include "state.h"

typedef struct {
    store_t *store;
    dict_t *queues;
    state_t state;
    queue_t *queue;
} fixture_t;

static queue_t *s_queue_make(void *ctx, aq_bytes_t name)
{
    fixture_t *f = ctx;
    queue_t *queue = dict_get(f->queues, name.data, name.size);
    if (queue)
        return queue;
    char text[AQ_NAME_MAX + 1];
    memcpy(text, name.data, name.size);
    text[name.size] = '\0';
    queue = queue_new(text, 0, 0, 1000);
    if (!queue || dict_set(f->queues, name.data, name.size, queue)) {
        queue_destroy(&queue);
        return NULL;
    }
    return queue;
}

static void s_queue_free(void *ctx, queue_t *queue)
{
    (void) ctx;
    queue_destroy(&queue);
}

static void s_free_each(void *ctx, void *value)
{
    (void) ctx;
    queue_t *queue = value;
    queue_destroy(&queue);
}

static int s_setup(void **state)
{
    fixture_t *f = calloc(1, sizeof *f);
    f->store = store_new();
    f->queues = dict_new();
    f->state = (state_t){.store = f->store, .queues = f->queues, .queue_make = s_queue_make,
                         .queue_free = s_queue_free, .ctx = f};
    f->queue = s_queue_make(f, aq_bytes_str("q"));
    assert_non_null(f->queue);
    *state = f;
    return 0;
}

static int s_teardown(void **state)
{
    fixture_t *f = *state;
    dict_each(f->queues, s_free_each, NULL);
    dict_destroy(&f->queues);
    store_destroy(&f->store);
    free(f);
    return 0;
}

static void s_apply(fixture_t *f, const record_t *record, state_effects_t *effects)
{
    assert_int_equal(state_apply(&f->state, record, effects), 0);
}

static item_t *s_put(fixture_t *f)
{
    record_t record = {.queue = aq_bytes_str(f->queue->name),
                       .payload = aq_bytes_str("payload")};
    state_effects_t effects;
    state_next_put(&f->state, f->queue, &record);
    s_apply(f, &record, &effects);
    assert_non_null(effects.item);
    assert_ptr_equal(effects.queue, f->queue);
    assert_int_equal(effects.item->state, ITEM_QUEUED);
    return effects.item;
}

/*  The next item in line, as dispatch sees it (left in place). */
static item_t *s_head(fixture_t *f)
{
    list_node_t *node = list_first(&f->queue->ready);
    return node ? list_entry(node, item_t, link) : NULL;
}

static void s_move(fixture_t *f, item_t *item, item_state_t to, state_effects_t *effects)
{
    record_t record;
    state_move(item, to, &record);
    s_apply(f, &record, effects);
    if (effects->died)
        queue_count_dead(item->queue, item);
}

/*  broker_dispatch: the head goes in flight, then the consumer holds it. */
static item_t *s_deliver(fixture_t *f, consumer_t *consumer)
{
    item_t *item = s_head(f);
    assert_non_null(item);
    state_effects_t effects;
    s_move(f, item, ITEM_INFLIGHT, &effects);
    assert_int_equal(item->state, ITEM_INFLIGHT);
    queue_hold(f->queue, consumer, item);
    assert_ptr_equal(item->holder, consumer);
    return item;
}

/*  s_give_back: the holder lets go, then the item goes to the front (or to
    the dead letters once its attempts are spent). */
static void s_give_back(fixture_t *f, consumer_t *consumer, item_t *item)
{
    queue_release(f->queue, consumer, item);
    state_effects_t effects;
    if (f->queue->max_attempts && item->attempts >= f->queue->max_attempts)
        s_move(f, item, ITEM_DEAD, &effects);
    else
        s_move(f, item, ITEM_QUEUED, &effects);
}

/*  An ack: the holder lets go, then the item is gone. */
static void s_ack(fixture_t *f, consumer_t *consumer, item_t *item)
{
    queue_release(f->queue, consumer, item);
    record_t record = {.type = RECORD_GONE, .id = item->id, .reason = GONE_ACKED};
    state_effects_t effects;
    s_apply(f, &record, &effects);
    assert_true(effects.finished);
}

static void s_discard(fixture_t *f, item_t *item)
{
    record_t record = {.type = RECORD_GONE, .id = item->id, .reason = GONE_DISCARDED};
    state_effects_t effects;
    s_apply(f, &record, &effects);
}

static void test_items_come_out_in_order_put(void **state)
{
    fixture_t *f = *state;
    consumer_t c;
    consumer_init(&c);
    queue_attach(f->queue, &c);
    queue_set_credit(f->queue, &c, 10);
    item_t *a = s_put(f), *b = s_put(f), *d = s_put(f);
    assert_int_equal(f->queue->ready_count, 3);
    assert_ptr_equal(s_deliver(f, &c), a);
    assert_ptr_equal(s_deliver(f, &c), b);
    assert_ptr_equal(s_deliver(f, &c), d);
    assert_null(s_head(f));
    assert_int_equal(f->queue->ready_count, 0);
    assert_int_equal(f->queue->inflight_count, 3);
    assert_int_equal(c.hold_count, 3);
    /* Held oldest first. */
    assert_ptr_equal(list_entry(list_first(&c.holds), item_t, link), a);
    assert_ptr_equal(list_entry(list_last(&c.holds), item_t, link), d);
    s_ack(f, &c, a);
    s_ack(f, &c, b);
    s_ack(f, &c, d);
    assert_int_equal(f->queue->acked_total, 3);
    queue_detach(f->queue, &c);
}

static void test_attach_detach_and_next_consumer_in_turn(void **state)
{
    fixture_t *f = *state;
    consumer_t a, b, none;
    consumer_init(&a);
    consumer_init(&b);
    consumer_init(&none);
    a.credit = 2;
    b.credit = 2;
    queue_attach(f->queue, &a);
    queue_attach(f->queue, &b);
    queue_attach(f->queue, &none); /* no credit: in neither list */
    assert_int_equal(f->queue->consumer_count, 3);
    assert_ptr_equal(queue_next_consumer(f->queue), &a);
    for (int i = 0; i < 4; i++)
        s_put(f);
    item_t *one = s_deliver(f, &a);
    /* a holds one: b, idle, comes first; then in turn. */
    assert_ptr_equal(queue_next_consumer(f->queue), &b);
    item_t *two = s_deliver(f, &b);
    assert_ptr_equal(queue_next_consumer(f->queue), &a);
    item_t *three = s_deliver(f, &a);
    assert_ptr_equal(queue_next_consumer(f->queue), &b);
    item_t *four = s_deliver(f, &b);
    assert_null(queue_next_consumer(f->queue)); /* all credit used */
    assert_null(queue_other_consumer(f->queue, &a));
    s_ack(f, &a, one);
    assert_ptr_equal(queue_next_consumer(f->queue), &a);
    assert_null(queue_other_consumer(f->queue, &a));
    assert_ptr_equal(queue_other_consumer(f->queue, &b), &a);
    s_ack(f, &a, three);
    s_ack(f, &b, two);
    s_ack(f, &b, four);
    queue_detach(f->queue, &a);
    assert_ptr_equal(queue_next_consumer(f->queue), &b);
    queue_detach(f->queue, &b);
    queue_detach(f->queue, &none);
    assert_null(queue_next_consumer(f->queue));
    assert_int_equal(f->queue->consumer_count, 0);
    assert_null(a.queue);
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
    item_t *item = s_deliver(f, &busy);
    queue_attach(f->queue, &idle);
    assert_ptr_equal(queue_next_consumer(f->queue), &idle);
    assert_ptr_equal(queue_other_consumer(f->queue, &idle), &busy);
    /* Released, busy becomes idle again, behind the other idle one. */
    s_ack(f, &busy, item);
    assert_ptr_equal(queue_next_consumer(f->queue), &idle);
    queue_detach(f->queue, &idle);
    assert_ptr_equal(queue_next_consumer(f->queue), &busy);
    queue_detach(f->queue, &busy);
}

static void test_consumer_never_gets_more_than_its_credit(void **state)
{
    fixture_t *f = *state;
    consumer_t c;
    consumer_init(&c);
    c.credit = 2;
    queue_attach(f->queue, &c);
    item_t *items[3];
    for (int i = 0; i < 3; i++)
        items[i] = s_put(f);
    s_deliver(f, &c);
    assert_ptr_equal(queue_next_consumer(f->queue), &c);
    s_deliver(f, &c);
    assert_null(queue_next_consumer(f->queue));
    /* More credit puts it back in line; none takes it out. */
    queue_set_credit(f->queue, &c, 3);
    assert_ptr_equal(queue_next_consumer(f->queue), &c);
    queue_set_credit(f->queue, &c, 0);
    assert_null(queue_next_consumer(f->queue));
    queue_set_credit(f->queue, &c, 2);
    s_ack(f, &c, items[0]);
    assert_ptr_equal(queue_next_consumer(f->queue), &c);
    s_ack(f, &c, items[1]);
    queue_detach(f->queue, &c);
}

static void test_given_back_items_go_first_in_their_order(void **state)
{
    fixture_t *f = *state;
    consumer_t c;
    consumer_init(&c);
    c.credit = 5;
    queue_attach(f->queue, &c);
    item_t *a = s_put(f), *b = s_put(f), *later = s_put(f);
    s_deliver(f, &c);
    s_deliver(f, &c);
    /* A session closing: newest first to the front (broker_give_back_all). */
    list_node_t *node;
    while ((node = list_last(&c.holds)))
        s_give_back(f, &c, list_entry(node, item_t, link));
    queue_detach(f->queue, &c);
    assert_int_equal(f->queue->inflight_count, 0);
    assert_int_equal(f->queue->ready_count, 3);
    assert_int_equal(f->queue->redelivered_total, 2);
    assert_null(a->holder);
    assert_true(a->rank < b->rank && b->rank < later->rank);
    assert_int_equal(a->attempts, 1);
    assert_int_equal(later->attempts, 0);
    consumer_t d;
    consumer_init(&d);
    d.credit = 5;
    queue_attach(f->queue, &d);
    assert_ptr_equal(s_deliver(f, &d), a);
    assert_ptr_equal(s_deliver(f, &d), b);
    assert_ptr_equal(s_deliver(f, &d), later);
    assert_int_equal(a->attempts, 2);
    s_ack(f, &d, a);
    s_ack(f, &d, b);
    s_ack(f, &d, later);
    queue_detach(f->queue, &d);
}

static void test_given_back_item_leaves_its_holder_and_frees_credit(void **state)
{
    fixture_t *f = *state;
    consumer_t c;
    consumer_init(&c);
    c.credit = 1;
    queue_attach(f->queue, &c);
    item_t *item = s_put(f), *second = s_put(f);
    s_deliver(f, &c);
    assert_null(queue_next_consumer(f->queue));
    queue_release(f->queue, &c, item);
    assert_null(item->holder);
    assert_int_equal(c.hold_count, 0);
    assert_ptr_equal(queue_next_consumer(f->queue), &c);
    assert_int_equal(f->queue->inflight_count, 1); /* until its record */
    state_effects_t effects;
    s_move(f, item, ITEM_QUEUED, &effects);
    assert_int_equal(f->queue->inflight_count, 0);
    assert_int_equal(f->queue->ready_count, 2);
    assert_int_equal(f->queue->ledger.outstanding, 2); /* still owed to join */
    assert_ptr_equal(s_head(f), item);
    assert_ptr_equal(s_deliver(f, &c), item);
    s_ack(f, &c, item);
    assert_ptr_equal(s_deliver(f, &c), second);
    s_ack(f, &c, second);
    queue_detach(f->queue, &c);
}

static void test_a_held_item_is_moved_by_no_record(void **state)
{
    fixture_t *f = *state;
    consumer_t c;
    consumer_init(&c);
    c.credit = 1;
    queue_attach(f->queue, &c);
    s_put(f);
    item_t *item = s_deliver(f, &c);
    record_t record;
    state_effects_t effects;
    state_move(item, ITEM_QUEUED, &record);
    assert_int_equal(state_apply(&f->state, &record, &effects), 1);
    record = (record_t){.type = RECORD_GONE, .id = item->id, .reason = GONE_ACKED};
    assert_int_equal(state_apply(&f->state, &record, &effects), 1);
    assert_ptr_equal(item->holder, &c);
    assert_int_equal(item->state, ITEM_INFLIGHT);
    s_ack(f, &c, item);
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
    assert_int_equal(join.waited, 1);
    assert_int_equal(join.end, 2);
    queue_add_joiner(f->queue, &join);
    item_t *after = s_put(f);
    s_deliver(f, &c);
    s_deliver(f, &c);
    s_ack(f, &c, after);
    assert_null(queue_take_satisfied(f->queue));
    assert_int_equal(queue_join_remaining(f->queue, &join), 1);
    s_ack(f, &c, before);
    assert_int_equal(queue_join_remaining(f->queue, &join), 0);
    assert_ptr_equal(queue_take_satisfied(f->queue), &join);
    assert_null(queue_take_satisfied(f->queue));
    assert_int_equal(join.waited, 1);
    assert_int_equal(join.dead, 0);
    assert_int_equal(f->queue->joiner_count, 0);
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
    assert_ptr_equal(s_head(f), a);
    s_discard(f, a);
    assert_null(queue_take_satisfied(f->queue));
    assert_ptr_equal(s_head(f), b);
    s_discard(f, b);
    assert_null(s_head(f));
    assert_ptr_equal(queue_take_satisfied(f->queue), &join);
    assert_int_equal(f->queue->discarded_total, 2);
    assert_int_equal(f->queue->acked_total, 0);
    assert_true(queue_is_drained(f->queue));
    assert_true(queue_is_unused(f->queue));
    assert_int_equal(store_count(f->store), 0);
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
    s_deliver(f, &c);
    s_deliver(f, &c);
    s_ack(f, &c, first);
    assert_null(queue_take_satisfied(f->queue));
    assert_int_equal(queue_join_remaining(f->queue, &join), 1);
    s_ack(f, &c, later);
    assert_ptr_equal(queue_take_satisfied(f->queue), &join);
    queue_detach(f->queue, &c);
}

static void test_join_on_an_empty_queue_is_satisfied_at_once(void **state)
{
    fixture_t *f = *state;
    joiner_t join = {.mode = AQ_JOIN_BEFORE};
    assert_true(queue_join_start(f->queue, &join));
    assert_int_equal(join.waited, 0);
    join.mode = AQ_JOIN_ALL;
    assert_true(queue_join_start(f->queue, &join));
    /* Still so once every item put is gone. */
    item_t *item = s_put(f);
    assert_false(queue_join_start(f->queue, &join));
    s_discard(f, item);
    assert_true(queue_join_start(f->queue, &join));
    join.mode = AQ_JOIN_BEFORE;
    assert_true(queue_join_start(f->queue, &join));
    assert_int_equal(join.end, 2);
}

/*  Dead letters finish for joins, counted as dead by the joins that cover
    them: a BEFORE join only for items before its end, an ALL join for any. */
static void test_dead_items_are_counted_by_the_joins_that_cover_them(void **state)
{
    fixture_t *f = *state;
    f->queue->max_attempts = 1;
    consumer_t c;
    consumer_init(&c);
    c.credit = 10;
    queue_attach(f->queue, &c);
    item_t *early = s_put(f);
    joiner_t before = {.mode = AQ_JOIN_BEFORE}, all = {.mode = AQ_JOIN_ALL};
    assert_false(queue_join_start(f->queue, &before));
    queue_add_joiner(f->queue, &before);
    item_t *late = s_put(f);
    assert_false(queue_join_start(f->queue, &all));
    queue_add_joiner(f->queue, &all);
    assert_int_equal(all.waited, 2);
    s_deliver(f, &c);
    s_deliver(f, &c);
    s_give_back(f, &c, late); /* attempts spent: dead */
    assert_int_equal(late->state, ITEM_DEAD);
    assert_int_equal(before.dead, 0);
    assert_int_equal(all.dead, 1);
    assert_null(queue_take_satisfied(f->queue));
    s_give_back(f, &c, early);
    assert_int_equal(early->state, ITEM_DEAD);
    assert_int_equal(before.dead, 1);
    assert_int_equal(all.dead, 2);
    assert_int_equal(f->queue->dead_count, 2);
    assert_int_equal(f->queue->dead_lettered_total, 2);
    assert_true(queue_is_drained(f->queue));
    assert_false(queue_is_unused(f->queue)); /* dead letters kept */
    joiner_t *first = queue_take_satisfied(f->queue);
    joiner_t *second = queue_take_satisfied(f->queue);
    assert_true((first == &before && second == &all) || (first == &all && second == &before));
    assert_null(queue_take_satisfied(f->queue));
    /* Dead in order of death. */
    assert_ptr_equal(list_entry(list_first(&f->queue->dead), item_t, link), late);
    assert_ptr_equal(list_entry(list_last(&f->queue->dead), item_t, link), early);
    queue_detach(f->queue, &c);
}

static void test_joins_time_out_and_are_removed(void **state)
{
    fixture_t *f = *state;
    s_put(f);
    joiner_t join = {.mode = AQ_JOIN_BEFORE};
    assert_false(queue_join_start(f->queue, &join));
    queue_add_joiner(f->queue, &join);
    assert_int_equal(f->queue->joiner_count, 1);
    assert_false(queue_is_unused(f->queue));
    queue_remove_joiner(f->queue, &join);
    assert_int_equal(f->queue->joiner_count, 0);
    assert_null(queue_take_satisfied(f->queue));
}

static void test_maxsize_counts_queued_items_only(void **state)
{
    fixture_t *f = *state;
    f->queue->maxsize = 2;
    consumer_t c;
    consumer_init(&c);
    c.credit = 1;
    queue_attach(f->queue, &c);
    assert_int_equal(queue_room(f->queue), 2);
    s_put(f);
    assert_int_equal(queue_room(f->queue), 1);
    assert_false(queue_is_full(f->queue));
    s_put(f);
    assert_true(queue_is_full(f->queue));
    assert_int_equal(queue_room(f->queue), 0);
    item_t *item = s_deliver(f, &c);
    assert_false(queue_is_full(f->queue));
    assert_int_equal(queue_room(f->queue), 1);
    s_give_back(f, &c, item);
    assert_true(queue_is_full(f->queue));
    f->queue->maxsize = 0;
    assert_false(queue_is_full(f->queue));
    assert_int_equal(queue_room(f->queue), UINT64_MAX);
    queue_detach(f->queue, &c);
}

static void test_unused_and_drained(void **state)
{
    fixture_t *f = *state;
    assert_true(queue_is_unused(f->queue));
    assert_true(queue_is_drained(f->queue));
    consumer_t c;
    consumer_init(&c);
    c.credit = 1;
    queue_attach(f->queue, &c);
    assert_false(queue_is_unused(f->queue));
    assert_true(queue_is_drained(f->queue));
    item_t *item = s_put(f);
    assert_false(queue_is_drained(f->queue));
    s_deliver(f, &c);
    assert_false(queue_is_drained(f->queue)); /* in flight */
    queue_release(f->queue, &c, item);
    record_t record;
    state_effects_t effects;
    state_move(item, ITEM_DELAYED, &record);
    record.until_ms = 12345;
    s_apply(f, &record, &effects);
    assert_int_equal(f->queue->delayed_count, 1);
    assert_int_equal(item->until_ms, 12345);
    assert_false(queue_is_drained(f->queue)); /* delayed */
    queue_detach(f->queue, &c);
    assert_false(queue_is_unused(f->queue));
    s_discard(f, item);
    assert_true(queue_is_drained(f->queue));
    assert_true(queue_is_unused(f->queue));
    f->queue->held_count = 1; /* a put held back for room */
    assert_false(queue_is_unused(f->queue));
    f->queue->held_count = 0;
    f->queue->state = QUEUE_DRAINING; /* shut down and empty: forgotten all the same */
    assert_true(queue_is_unused(f->queue));
    f->queue->state = QUEUE_OPEN;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_items_come_out_in_order_put, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_attach_detach_and_next_consumer_in_turn, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_idle_consumer_gets_the_next_item_before_a_busy_one, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_consumer_never_gets_more_than_its_credit, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_given_back_items_go_first_in_their_order, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_given_back_item_leaves_its_holder_and_frees_credit, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_a_held_item_is_moved_by_no_record, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_join_waits_only_for_items_accepted_before_it, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_discarded_items_finish_for_joins_and_drain_the_queue, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_join_all_is_held_back_by_later_items, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_join_on_an_empty_queue_is_satisfied_at_once, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_dead_items_are_counted_by_the_joins_that_cover_them, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_joins_time_out_and_are_removed, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_maxsize_counts_queued_items_only, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_unused_and_drained, s_setup, s_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
