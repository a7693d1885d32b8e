/*  A queue's life (PROTOCOL.md 4.13), with the real broker: a shut-down
    queue reopened takes puts again, across a SIGKILL of a durable broker
    too; PURGE discards what is queued or delayed and leaves what is in
    flight; DELETE discards everything, answers the joins and the consumers
    SHUT_DOWN, and frees the name, for good on a durable broker; an empty,
    unused, shut-down queue is forgotten after --queue-idle-ms. Each test
    ends with a valid request that must succeed. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"

typedef harness_dir_t fixture_t;

/*  Puts items and waits for the confirm; the status of the sync. */
static aq_status_t s_put(const harness_t *h, const char *queue, const char *payload,
                         uint64_t delay_ms)
{
    aq_status_t rc;
    aq_producer_t *producer = aq_producer_new(h->address, "p", &rc);
    assert_non_null(producer);
    aq_put_options_t options = {.delay_ms = delay_ms};
    assert_int_equal(aq_producer_put_with(producer, queue, payload, strlen(payload), &options),
                     AQ_OK);
    rc = aq_producer_sync(producer, HARNESS_DEADLINE_MS);
    aq_producer_destroy(&producer);
    return rc;
}

typedef struct {
    char text[1024];
    int lines;
} lines_t;

static void s_line(void *ctx, const char *line)
{
    lines_t *lines = ctx;
    snprintf(lines->text, sizeof lines->text, "%s", line);
    lines->lines++;
}

/*  REOPEN, PURGE or DELETE; the one line of the answer (or "" for none). */
static lines_t s_action(const harness_t *h, const char *queue, aq_queue_action_t action)
{
    aq_session_t *session = harness_session(h);
    lines_t lines = {"", 0};
    assert_int_equal(aq_queue_action(session, queue, action, s_line, &lines), AQ_OK);
    aq_session_destroy(&session);
    return lines;
}

static aq_consumer_t *s_consumer(const harness_t *h, const char *queue, uint64_t credit)
{
    aq_status_t rc;
    aq_consumer_t *consumer = aq_consumer_new(h->address, "c", queue, credit, &rc);
    assert_non_null(consumer);
    return consumer;
}

static void s_get_ack(aq_consumer_t *consumer, const char *payload)
{
    aq_item_t item;
    assert_int_equal(aq_consumer_get(consumer, &item, HARNESS_DEADLINE_MS), AQ_OK);
    assert_int_equal(item.size, strlen(payload));
    assert_memory_equal(item.data, payload, item.size);
    assert_int_equal(aq_consumer_ack(consumer, item.id), AQ_OK);
    assert_int_equal(aq_consumer_flush(consumer), AQ_OK);
}

/*  Shut down, drained, its consumer told; reopened: puts go in again and
    a consumer gets them; a durable broker killed keeps it open. */
static void test_a_shut_down_queue_reopens(void **state)
{
    fixture_t *f = *state;
    char *const flags[] = {"--data-dir", f->data, "--fsync", "always", NULL};
    harness_start_broker(&f->h, flags);
    assert_int_equal(s_put(&f->h, "r", "before", 0), AQ_OK);
    aq_session_t *session = harness_session(&f->h);
    assert_int_equal(aq_shutdown(session, "r", AQ_SHUTDOWN_DRAIN, NULL, NULL), AQ_OK);
    aq_session_destroy(&session);
    assert_int_equal(s_put(&f->h, "r", "refused", 0), AQ_REFUSED);
    aq_consumer_t *consumer = s_consumer(&f->h, "r", 1);
    s_get_ack(consumer, "before");
    aq_item_t item;
    assert_int_equal(aq_consumer_get(consumer, &item, HARNESS_DEADLINE_MS), AQ_SHUT_DOWN);
    aq_consumer_destroy(&consumer);
    lines_t reopened = s_action(&f->h, "r", AQ_QUEUE_REOPEN);
    assert_non_null(strstr(reopened.text, "state=open"));
    harness_restart_broker(&f->h, flags);
    assert_int_equal(s_put(&f->h, "r", "after", 0), AQ_OK);
    consumer = s_consumer(&f->h, "r", 1);
    s_get_ack(consumer, "after");
    aq_consumer_destroy(&consumer);
    /* Every queue shut down, and those made later: all reopened. */
    session = harness_session(&f->h);
    assert_int_equal(aq_shutdown(session, NULL, AQ_SHUTDOWN_DRAIN, NULL, NULL), AQ_OK);
    aq_session_destroy(&session);
    assert_int_equal(s_put(&f->h, "later", "refused", 0), AQ_REFUSED);
    assert_non_null(strstr(s_action(&f->h, "", AQ_QUEUE_REOPEN).text, "state=open"));
    assert_int_equal(s_put(&f->h, "later", "taken", 0), AQ_OK);
    assert_int_equal(s_put(&f->h, "r", "taken", 0), AQ_OK);
    consumer = s_consumer(&f->h, "r", 1);
    s_get_ack(consumer, "taken");
    aq_consumer_destroy(&consumer);
    /* Reopening an open queue changes nothing; an unknown one is no line. */
    assert_non_null(strstr(s_action(&f->h, "r", AQ_QUEUE_REOPEN).text, "state=open"));
    assert_int_equal(s_action(&f->h, "nosuch", AQ_QUEUE_REOPEN).lines, 0);
    assert_int_equal(harness_stat(&f->h, "nosuch", "puts"), 0);
    harness_assert_serving(&f->h, "r");
}

/*  Purged: what is queued or delayed is discarded, and a join on them
    returns; an item in flight stays its consumer's, and its ack counts. */
static void test_purge_discards_what_waits(void **state)
{
    fixture_t *f = *state;
    harness_start_broker(&f->h, NULL);
    for (int i = 0; i < 3; i++)
        assert_int_equal(s_put(&f->h, "p", "queued", 0), AQ_OK);
    assert_int_equal(s_put(&f->h, "p", "delayed", 3600000), AQ_OK);
    aq_consumer_t *consumer = s_consumer(&f->h, "p", 1);
    aq_item_t held;
    assert_int_equal(aq_consumer_get(consumer, &held, HARNESS_DEADLINE_MS), AQ_OK);
    harness_wait_stat(&f->h, "p", "inflight", 1);
    assert_string_equal(s_action(&f->h, "p", AQ_QUEUE_PURGE).text, "purged=3");
    assert_int_equal(harness_stat(&f->h, "p", "queued"), 0);
    assert_int_equal(harness_stat(&f->h, "p", "delayed"), 0);
    assert_int_equal(harness_stat(&f->h, "p", "discarded"), 3);
    assert_int_equal(aq_consumer_ack(consumer, held.id), AQ_OK);
    assert_int_equal(aq_consumer_flush(consumer), AQ_OK);
    aq_session_t *session = harness_session(&f->h);
    aq_join_result_t result;
    assert_int_equal(aq_join(session, "p", HARNESS_DEADLINE_MS, AQ_JOIN_BEFORE, &result), AQ_OK);
    aq_session_destroy(&session);
    assert_int_equal(harness_stat(&f->h, "p", "acked"), 1);
    /* Still open: a put goes in and out. */
    assert_int_equal(s_put(&f->h, "p", "next", 0), AQ_OK);
    s_get_ack(consumer, "next");
    aq_consumer_destroy(&consumer);
    harness_assert_serving(&f->h, "p");
}

/*  Deleted with items of every kind: the count, the consumer holding one
    hears SHUT_DOWN and its ack is unknown, a waiting join hears SHUT_DOWN,
    and the name is free: a put makes a new queue. A durable broker killed
    does not bring it back. */
static void test_delete_discards_everything_and_frees_the_name(void **state)
{
    fixture_t *f = *state;
    char *const flags[] = {"--data-dir", f->data, "--fsync", "always", "--max-attempts", "1",
                           NULL};
    harness_start_broker(&f->h, flags);
    assert_int_equal(s_put(&f->h, "d", "to-die", 0), AQ_OK);
    aq_consumer_t *consumer = s_consumer(&f->h, "d", 1);
    aq_item_t item;
    assert_int_equal(aq_consumer_get(consumer, &item, HARNESS_DEADLINE_MS), AQ_OK);
    assert_int_equal(aq_consumer_nack(consumer, item.id, 0, "gone"), AQ_OK); /* dead: 1 attempt */
    harness_wait_stat(&f->h, "d", "dead", 1);
    assert_int_equal(s_put(&f->h, "d", "held", 0), AQ_OK);
    assert_int_equal(s_put(&f->h, "d", "queued", 0), AQ_OK);
    assert_int_equal(s_put(&f->h, "d", "delayed", 3600000), AQ_OK);
    aq_item_t held;
    assert_int_equal(aq_consumer_get(consumer, &held, HARNESS_DEADLINE_MS), AQ_OK);
    harness_wait_stat(&f->h, "d", "inflight", 1);
    aq_session_t *joiner = harness_session(&f->h);
    aq_msg_t join = {.cmd = AQ_CMD_JOIN, .queue = aq_bytes_str("d"), .mode = AQ_JOIN_BEFORE};
    assert_int_equal(aq_session_request(joiner, &join), AQ_OK);
    char tag[AQ_TAG_MAX + 1];
    snprintf(tag, sizeof tag, "%.*s", (int) join.tag.size, (const char *) join.tag.data);
    harness_wait_stat(&f->h, "d", "joiners", 1);
    assert_string_equal(s_action(&f->h, "d", AQ_QUEUE_DELETE).text, "deleted=4");
    /* The join and the consumer hear it. */
    aq_msg_t reply;
    assert_int_equal(aq_session_await(joiner, tag, &reply, HARNESS_DEADLINE_MS, NULL, NULL),
                     AQ_REFUSED);
    assert_int_equal(aq_session_error(joiner)->code, AQ_SHUT_DOWN);
    aq_session_destroy(&joiner);
    assert_int_equal(aq_consumer_get(consumer, &item, HARNESS_DEADLINE_MS), AQ_SHUT_DOWN);
    aq_consumer_destroy(&consumer);
    /* Gone: no stats line, not even after a restart. */
    assert_int_equal(harness_stat(&f->h, "d", "puts"), 0);
    harness_restart_broker(&f->h, flags);
    assert_int_equal(harness_stat(&f->h, "d", "puts"), 0);
    assert_int_equal(s_put(&f->h, "d", "fresh", 0), AQ_OK);
    assert_int_equal(harness_stat(&f->h, "d", "puts"), 1);
    assert_int_equal(harness_stat(&f->h, "d", "dead"), 0);
    consumer = s_consumer(&f->h, "d", 1);
    s_get_ack(consumer, "fresh");
    aq_consumer_destroy(&consumer);
    harness_assert_serving(&f->h, "d");
}

static void s_peek_line(void *ctx, const char *line)
{
    lines_t *lines = ctx;
    size_t used = strlen(lines->text);
    snprintf(lines->text + used, sizeof lines->text - used, "%s\n", line);
    lines->lines++;
}

/*  Paused: puts go in, nothing is delivered, PEEK shows what comes next
    (priority first) and takes nothing; a durable broker killed stays
    paused; resumed: delivered in that order. */
static void test_pause_peek_resume(void **state)
{
    fixture_t *f = *state;
    char *const flags[] = {"--data-dir", f->data, "--fsync", "always", NULL};
    harness_start_broker(&f->h, flags);
    lines_t paused = s_action(&f->h, "pp", AQ_QUEUE_PAUSE);
    assert_non_null(strstr(paused.text, "paused=1"));
    assert_int_equal(s_put(&f->h, "pp", "second", 0), AQ_OK);
    aq_status_t rc;
    aq_producer_t *producer = aq_producer_new(f->h.address, "p", &rc);
    assert_non_null(producer);
    aq_put_options_t urgent = {.priority = -1};
    assert_int_equal(aq_producer_put_with(producer, "pp", "first", 5, &urgent), AQ_OK);
    assert_int_equal(aq_producer_sync(producer, HARNESS_DEADLINE_MS), AQ_OK);
    aq_producer_destroy(&producer);
    aq_consumer_t *consumer = s_consumer(&f->h, "pp", 1);
    aq_item_t item;
    assert_int_equal(aq_consumer_get(consumer, &item, 300), AQ_TIMEOUT);
    aq_consumer_destroy(&consumer);
    aq_session_t *session = harness_session(&f->h);
    lines_t peeked = {"", 0};
    assert_int_equal(aq_peek(session, "pp", 10, s_peek_line, &peeked), AQ_OK);
    assert_int_equal(peeked.lines, 2);
    char *first = strstr(peeked.text, "payload=\"first\""),
         *second = strstr(peeked.text, "payload=\"second\"");
    assert_true(first && second && first < second);
    assert_non_null(strstr(peeked.text, "priority=-1"));
    peeked = (lines_t){"", 0};
    assert_int_equal(aq_peek(session, "pp", 1, s_peek_line, &peeked), AQ_OK);
    assert_int_equal(peeked.lines, 1);
    aq_session_destroy(&session);
    assert_int_equal(harness_stat(&f->h, "pp", "queued"), 2); /* peeking took nothing */
    harness_restart_broker(&f->h, flags);
    assert_int_equal(harness_stat(&f->h, "pp", "paused"), 1);
    consumer = s_consumer(&f->h, "pp", 1);
    assert_int_equal(aq_consumer_get(consumer, &item, 300), AQ_TIMEOUT);
    assert_non_null(strstr(s_action(&f->h, "pp", AQ_QUEUE_RESUME).text, "paused=0"));
    s_get_ack(consumer, "first");
    s_get_ack(consumer, "second");
    aq_consumer_destroy(&consumer);
    harness_assert_serving(&f->h, "pp");
}

/*  DEAD requeue/delete of some ids: all or none (an id that is not a dead
    item of the queue: 404, nothing changed), each id once. */
static void test_dead_items_by_id(void **state)
{
    fixture_t *f = *state;
    char *const flags[] = {"--max-attempts", "1", NULL};
    harness_start_broker(&f->h, flags);
    uint64_t ids[3];
    aq_consumer_t *consumer = s_consumer(&f->h, "di", 1);
    for (int i = 0; i < 3; i++) {
        char payload[8];
        snprintf(payload, sizeof payload, "d%d", i);
        assert_int_equal(s_put(&f->h, "di", payload, 0), AQ_OK);
        aq_item_t item;
        assert_int_equal(aq_consumer_get(consumer, &item, HARNESS_DEADLINE_MS), AQ_OK);
        ids[i] = item.id;
        assert_int_equal(aq_consumer_nack(consumer, item.id, 0, "bad"), AQ_OK);
        harness_wait_stat(&f->h, "di", "dead", (uint64_t) i + 1);
    }
    aq_consumer_destroy(&consumer);
    /* As JSON: an object per item, the id a string, the cause and reason. */
    char out[4096];
    char *list[] = {"asyncq", "dead", "list", "--broker", f->h.address, "--queue", "di",
                    "--format", "json", NULL};
    assert_int_equal(harness_run(list, out, sizeof out), 0);
    char id[32];
    snprintf(id, sizeof id, "\"id\": \"%llu\"", (unsigned long long) ids[0]);
    assert_non_null(strstr(out, id));
    assert_non_null(strstr(out, "\"cause\": \"nack\", \"reason\": \"bad\", \"payload\": \"d0\""));
    aq_session_t *session = harness_session(&f->h);
    char action[128];
    lines_t lines = {"", 0};
    snprintf(action, sizeof action, "requeue %llu 99", (unsigned long long) ids[0]);
    assert_int_equal(aq_dead(session, "di", action, s_line, &lines), AQ_REFUSED);
    assert_int_equal(aq_session_error(session)->code, AQ_UNKNOWN_ITEM);
    assert_int_equal(harness_stat(&f->h, "di", "dead"), 3);
    snprintf(action, sizeof action, "requeue %llu %llu", (unsigned long long) ids[1],
             (unsigned long long) ids[1]);
    assert_int_equal(aq_dead(session, "di", action, s_line, &lines), AQ_OK);
    assert_string_equal(lines.text, "requeued=1");
    snprintf(action, sizeof action, "delete %llu", (unsigned long long) ids[2]);
    assert_int_equal(aq_dead(session, "di", action, s_line, &lines), AQ_OK);
    assert_string_equal(lines.text, "deleted=1");
    assert_int_equal(aq_dead(session, "di", "delete 1x", s_line, &lines), AQ_REFUSED);
    assert_int_equal(aq_session_error(session)->code, AQ_MALFORMED);
    aq_session_destroy(&session);
    assert_int_equal(harness_stat(&f->h, "di", "dead"), 1);
    assert_int_equal(harness_stat(&f->h, "di", "queued"), 1);
    consumer = s_consumer(&f->h, "di", 1);
    s_get_ack(consumer, "d1");
    aq_consumer_destroy(&consumer);
    harness_assert_serving(&f->h, "di");
}

/*  An empty, unused, shut-down queue leaves stats after --queue-idle-ms;
    then a put makes it again, open. */
static void test_an_empty_shut_down_queue_is_forgotten(void **state)
{
    fixture_t *f = *state;
    char *const flags[] = {"--queue-idle-ms", "300", NULL};
    harness_start_broker(&f->h, flags);
    assert_int_equal(s_put(&f->h, "old", "x", 0), AQ_OK);
    aq_consumer_t *consumer = s_consumer(&f->h, "old", 1);
    s_get_ack(consumer, "x");
    aq_consumer_destroy(&consumer);
    aq_session_t *session = harness_session(&f->h);
    assert_int_equal(aq_shutdown(session, "old", AQ_SHUTDOWN_DRAIN, NULL, NULL), AQ_OK);
    aq_session_destroy(&session);
    assert_int_equal(s_put(&f->h, "old", "refused", 0), AQ_REFUSED);
    harness_wait_stat(&f->h, "old", "puts", 0); /* no line: forgotten */
    assert_int_equal(s_put(&f->h, "old", "again", 0), AQ_OK);
    assert_int_equal(harness_stat(&f->h, "old", "queued"), 1);
    consumer = s_consumer(&f->h, "old", 1);
    s_get_ack(consumer, "again");
    aq_consumer_destroy(&consumer);
    harness_assert_serving(&f->h, "old");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        harness_dir_test(test_a_shut_down_queue_reopens),
        harness_dir_test(test_purge_discards_what_waits),
        harness_dir_test(test_delete_discards_everything_and_frees_the_name),
        harness_dir_test(test_an_empty_shut_down_queue_is_forgotten),
        harness_dir_test(test_pause_peek_resume),
        harness_dir_test(test_dead_items_by_id),
    };
    return harness_run_group(tests);
}
