/*  A put's options (PROTOCOL.md 4.1), with the real broker: priorities
    (lowest first, FIFO within one), the front (LIFO), delayed puts (not
    before their time, outstanding for a join, in the order of their
    times, across a SIGKILL of a durable broker), times on the broker's
    clock, and bad options refused with 400 and a text naming them, each
    test ending with a valid put that must still succeed. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"

typedef harness_dir_t fixture_t;

static int64_t s_now_ms(void)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (int64_t) now.tv_sec * 1000 + now.tv_nsec / 1000000;
}

static int64_t s_wall_ms(void)
{
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    return (int64_t) now.tv_sec * 1000 + now.tv_nsec / 1000000;
}

static int s_contains(aq_bytes_t text, const char *part)
{
    size_t length = strlen(part);
    for (size_t i = 0; i + length <= text.size; i++)
        if (memcmp(text.data + i, part, length) == 0)
            return 1;
    return 0;
}

static aq_producer_t *s_producer(const harness_t *h)
{
    aq_status_t rc;
    aq_producer_t *producer = aq_producer_new(h->address, "p", &rc);
    assert_non_null(producer);
    return producer;
}

static void s_put(aq_producer_t *producer, const char *queue, const char *payload,
                  aq_put_options_t options)
{
    assert_int_equal(aq_producer_put_with(producer, queue, payload, strlen(payload), &options),
                     AQ_OK);
}

static aq_consumer_t *s_consumer(const harness_t *h, const char *queue)
{
    aq_status_t rc;
    aq_consumer_t *consumer = aq_consumer_new(h->address, "c", queue, 1, &rc);
    assert_non_null(consumer);
    return consumer;
}

/*  Gets the next item, which must be `payload`, and acks it. */
static void s_get_ack(aq_consumer_t *consumer, const char *payload)
{
    aq_item_t item;
    assert_int_equal(aq_consumer_get(consumer, &item, HARNESS_DEADLINE_MS), AQ_OK);
    if (item.size != strlen(payload) || memcmp(item.data, payload, item.size) != 0)
        fail_msg("got '%.*s', expected '%s'", (int) item.size, (const char *) item.data, payload);
    assert_int_equal(aq_consumer_ack(consumer, item.id), AQ_OK);
}

/*  Lowest priority first, FIFO within one, the front of its own priority;
    puts of different options in a row go in one batch each, in order. */
static void test_priorities_and_the_front(void **state)
{
    fixture_t *f = *state;
    harness_start_broker(&f->h, NULL);
    aq_producer_t *producer = s_producer(&f->h);
    s_put(producer, "q", "plain-1", (aq_put_options_t){0});
    s_put(producer, "q", "low-1", (aq_put_options_t){.priority = 7});
    s_put(producer, "q", "urgent-1", (aq_put_options_t){.priority = -3});
    s_put(producer, "q", "plain-2", (aq_put_options_t){0});
    s_put(producer, "q", "urgent-2", (aq_put_options_t){.priority = -3});
    s_put(producer, "q", "low-2", (aq_put_options_t){.priority = 7});
    s_put(producer, "q", "stack-1", (aq_put_options_t){.front = 1});
    s_put(producer, "q", "stack-2", (aq_put_options_t){.front = 1});
    s_put(producer, "q", "lowest", (aq_put_options_t){.priority = INT32_MAX});
    assert_int_equal(aq_producer_sync(producer, HARNESS_DEADLINE_MS), AQ_OK);
    aq_producer_destroy(&producer);
    /* And from the command line. */
    char *argv[] = {"asyncq", "put", "--broker", f->h.address, "--queue", "q", "--priority",
                    "-2147483648", "first-of-all", NULL};
    assert_int_equal(harness_run(argv, NULL, 0), 0);
    aq_consumer_t *consumer = s_consumer(&f->h, "q");
    const char *order[] = {"first-of-all", "urgent-1", "urgent-2", "stack-2", "stack-1",
                           "plain-1",      "plain-2",  "low-1",    "low-2",   "lowest"};
    for (size_t i = 0; i < sizeof order / sizeof *order; i++)
        s_get_ack(consumer, order[i]);
    aq_consumer_destroy(&consumer);
    harness_assert_serving(&f->h, "q");
}

/*  Puts of mixed priorities and delays, made in a row, go as `each`
    batches (one message, not one per run) and each keeps its own: the
    items come out by priority, FIFO within one, the delayed ones no sooner
    than their own delays. */
static void test_mixed_options_in_one_batch(void **state)
{
    fixture_t *f = *state;
    harness_start_broker(&f->h, NULL);
    aq_producer_t *producer = s_producer(&f->h);
    enum { ITEMS = 500, PRIORITIES = 5 };
    unsigned seed = 7;
    int64_t start = s_now_ms();
    for (int i = 0; i < ITEMS; i++) {
        char payload[32];
        int priority = rand_r(&seed) % PRIORITIES;
        snprintf(payload, sizeof payload, "%d:%04d", priority, i);
        s_put(producer, "m", payload, (aq_put_options_t){.priority = priority});
    }
    s_put(producer, "m", "9:late", (aq_put_options_t){.priority = 9, .delay_ms = 900});
    s_put(producer, "m", "9:soon", (aq_put_options_t){.priority = 9, .delay_ms = 300});
    s_put(producer, "m", "9:now", (aq_put_options_t){.priority = 9});
    assert_int_equal(aq_producer_sync(producer, HARNESS_DEADLINE_MS), AQ_OK);
    aq_producer_destroy(&producer);
    aq_consumer_t *consumer = s_consumer(&f->h, "m");
    int last_priority = -1, last_number = -1;
    for (int i = 0; i < ITEMS; i++) {
        aq_item_t item;
        assert_int_equal(aq_consumer_get(consumer, &item, HARNESS_DEADLINE_MS), AQ_OK);
        char text[32] = "";
        memcpy(text, item.data, item.size < sizeof text - 1 ? item.size : sizeof text - 1);
        int priority, number;
        assert_int_equal(sscanf(text, "%d:%d", &priority, &number), 2);
        assert_true(priority >= last_priority);
        if (priority == last_priority && number <= last_number)
            fail_msg("item %d: %d:%04d after %d:%04d", i, priority, number, last_priority,
                     last_number);
        last_priority = priority;
        last_number = number;
        assert_int_equal(aq_consumer_ack(consumer, item.id), AQ_OK);
    }
    s_get_ack(consumer, "9:now");
    s_get_ack(consumer, "9:soon");
    assert_true(s_now_ms() - start >= 300);
    s_get_ack(consumer, "9:late");
    assert_true(s_now_ms() - start >= 900);
    aq_consumer_destroy(&consumer);
    harness_assert_serving(&f->h, "m");
}

/*  A delayed put is outstanding (a join waits for it) and comes no sooner
    than its delay; puts after it go first; delayed puts come out in the
    order of their times, not of their puts. */
static void test_delayed_puts_wait_their_time(void **state)
{
    fixture_t *f = *state;
    harness_start_broker(&f->h, NULL);
    aq_producer_t *producer = s_producer(&f->h);
    int64_t start = s_now_ms();
    s_put(producer, "d", "late", (aq_put_options_t){.delay_ms = 1500});
    s_put(producer, "d", "sooner", (aq_put_options_t){.delay_ms = 800});
    s_put(producer, "d", "now", (aq_put_options_t){0});
    s_put(producer, "d", "past", (aq_put_options_t){.at_ms = (uint64_t) s_wall_ms() - 60000});
    assert_int_equal(aq_producer_sync(producer, HARNESS_DEADLINE_MS), AQ_OK);
    aq_producer_destroy(&producer);
    assert_int_equal(harness_stat(&f->h, "d", "delayed"), 2);
    assert_int_equal(harness_stat(&f->h, "d", "outstanding"), 4);
    /* From the command line, at a time given in seconds since 1970. */
    char at[32];
    snprintf(at, sizeof at, "%lld.5", (long long) (s_wall_ms() / 1000 + 3600));
    char *argv[] = {"asyncq", "put", "--broker", f->h.address, "--queue", "cli", "--at", at,
                    "in-an-hour", NULL};
    assert_int_equal(harness_run(argv, NULL, 0), 0);
    assert_int_equal(harness_stat(&f->h, "cli", "delayed"), 1);
    aq_consumer_t *consumer = s_consumer(&f->h, "d");
    s_get_ack(consumer, "now");
    s_get_ack(consumer, "past");
    /* The join waits for the delayed two. */
    aq_session_t *session = harness_session(&f->h);
    aq_join_result_t result;
    assert_int_equal(aq_join(session, "d", 200, AQ_JOIN_BEFORE, &result), AQ_TIMEOUT);
    s_get_ack(consumer, "sooner");
    assert_true(s_now_ms() - start >= 800);
    s_get_ack(consumer, "late");
    assert_true(s_now_ms() - start >= 1500);
    assert_int_equal(aq_consumer_flush(consumer), AQ_OK); /* the acks go now */
    assert_int_equal(aq_join(session, "d", HARNESS_DEADLINE_MS, AQ_JOIN_BEFORE, &result), AQ_OK);
    assert_int_equal(result.waited, 0);
    aq_session_destroy(&session);
    aq_consumer_destroy(&consumer);
    harness_assert_serving(&f->h, "d");
}

/*  A durable broker killed keeps each delayed put's time and each item's
    priority: after a restart the priorities come out in order, and the
    delayed put no sooner than its time. An immediate shutdown discards
    a delayed put at once. */
static void test_options_survive_a_kill(void **state)
{
    fixture_t *f = *state;
    char *const flags[] = {"--data-dir", f->data, "--fsync", "always", NULL};
    harness_start_broker(&f->h, flags);
    aq_producer_t *producer = s_producer(&f->h);
    int64_t due = s_wall_ms() + 2000;
    s_put(producer, "k", "delayed", (aq_put_options_t){.at_ms = (uint64_t) due});
    s_put(producer, "k", "two", (aq_put_options_t){.priority = 2});
    s_put(producer, "k", "one", (aq_put_options_t){.priority = 1});
    s_put(producer, "k", "zero", (aq_put_options_t){0});
    s_put(producer, "k", "minus", (aq_put_options_t){.priority = -1});
    assert_int_equal(aq_producer_sync(producer, HARNESS_DEADLINE_MS), AQ_OK);
    aq_producer_destroy(&producer);
    harness_restart_broker(&f->h, flags);
    assert_int_equal(harness_stat(&f->h, "k", "delayed"), 1);
    assert_int_equal(harness_stat(&f->h, "k", "queued"), 4);
    aq_consumer_t *consumer = s_consumer(&f->h, "k");
    s_get_ack(consumer, "minus");
    s_get_ack(consumer, "zero");
    s_get_ack(consumer, "one");
    s_get_ack(consumer, "two");
    s_get_ack(consumer, "delayed");
    assert_true(s_wall_ms() >= due);
    aq_consumer_destroy(&consumer);
    /* A delayed put for a day, then an immediate shutdown: discarded now. */
    producer = s_producer(&f->h);
    s_put(producer, "gone", "tomorrow", (aq_put_options_t){.delay_ms = 86400000});
    assert_int_equal(aq_producer_sync(producer, HARNESS_DEADLINE_MS), AQ_OK);
    aq_producer_destroy(&producer);
    assert_int_equal(harness_stat(&f->h, "gone", "delayed"), 1);
    aq_session_t *session = harness_session(&f->h);
    assert_int_equal(aq_shutdown(session, "gone", AQ_SHUTDOWN_IMMEDIATE, NULL, NULL), AQ_OK);
    aq_session_destroy(&session);
    assert_int_equal(harness_stat(&f->h, "gone", "delayed"), 0);
    assert_int_equal(harness_stat(&f->h, "gone", "discarded"), 1);
    harness_assert_serving(&f->h, "k");
}

/*  Retries with backoff (--retry FIRST:MAX): an item NACKed without a delay
    waits at least half of FIRST, then of 2 x FIRST, then of MAX; a queue's
    own policy wins (--queue-retry Q=0: at once); a NACK's own delay wins
    over the policy. */
static void test_retries_back_off(void **state)
{
    fixture_t *f = *state;
    char *const flags[] = {"--retry", "300:600", "--queue-retry", "fast=0", "--queue-retry",
                           "slow=600000", "--max-attempts", "0", NULL};
    harness_start_broker(&f->h, flags);
    aq_producer_t *producer = s_producer(&f->h);
    s_put(producer, "r", "again", (aq_put_options_t){0});
    s_put(producer, "fast", "again", (aq_put_options_t){0});
    s_put(producer, "slow", "again", (aq_put_options_t){0});
    assert_int_equal(aq_producer_sync(producer, HARNESS_DEADLINE_MS), AQ_OK);
    aq_producer_destroy(&producer);
    aq_consumer_t *consumer = s_consumer(&f->h, "r");
    static const int64_t at_least[] = {150, 300, 300};
    aq_item_t item;
    assert_int_equal(aq_consumer_get(consumer, &item, HARNESS_DEADLINE_MS), AQ_OK);
    for (int i = 0; i < 3; i++) {
        int64_t nacked = s_now_ms();
        assert_int_equal(aq_consumer_nack(consumer, item.id, 0, "failed"), AQ_OK);
        if (i == 0)
            harness_wait_stat(&f->h, "r", "delayed", 1);
        assert_int_equal(aq_consumer_get(consumer, &item, HARNESS_DEADLINE_MS), AQ_OK);
        assert_int_equal(item.attempt, (uint32_t) i + 2);
        if (s_now_ms() - nacked < at_least[i])
            fail_msg("retry %d after %lld ms, under %lld", i + 1,
                     (long long) (s_now_ms() - nacked), (long long) at_least[i]);
    }
    assert_int_equal(aq_consumer_ack(consumer, item.id), AQ_OK);
    aq_consumer_destroy(&consumer);
    /* fast: no policy, back at once (never delayed); slow: ten minutes, but
       a NACK that names its delay gets it. */
    consumer = s_consumer(&f->h, "fast");
    assert_int_equal(aq_consumer_get(consumer, &item, HARNESS_DEADLINE_MS), AQ_OK);
    assert_int_equal(aq_consumer_nack(consumer, item.id, 0, "failed"), AQ_OK);
    s_get_ack(consumer, "again");
    assert_int_equal(harness_stat(&f->h, "fast", "redelivered"), 1);
    aq_consumer_destroy(&consumer);
    consumer = s_consumer(&f->h, "slow");
    assert_int_equal(aq_consumer_get(consumer, &item, HARNESS_DEADLINE_MS), AQ_OK);
    assert_int_equal(aq_consumer_nack(consumer, item.id, 100, "failed"), AQ_OK);
    s_get_ack(consumer, "again");
    aq_consumer_destroy(&consumer);
    harness_assert_serving(&f->h, "r");
}

/*  Bad options: the library refuses what it can tell (sending nothing);
    the broker refuses the rest with 400 and a text that names the option,
    a delay past --max-delay included; nothing of them reaches a queue. */
static void test_bad_options_are_refused_with_their_reason(void **state)
{
    fixture_t *f = *state;
    char *const flags[] = {"--max-delay", "60", NULL};
    harness_start_broker(&f->h, flags);
    aq_producer_t *producer = s_producer(&f->h);
    assert_int_equal(aq_producer_put_with(producer, "b", "x", 1,
                                          &(aq_put_options_t){.delay_ms = 1, .at_ms = 1}),
                     AQ_MALFORMED);
    assert_int_equal(aq_producer_put_with(producer, "b", "x", 1,
                                          &(aq_put_options_t){.front = 1, .delay_ms = 1}),
                     AQ_MALFORMED);
    s_put(producer, "b", "too-late", (aq_put_options_t){.delay_ms = 3600000});
    assert_int_equal(aq_producer_sync(producer, HARNESS_DEADLINE_MS), AQ_REFUSED);
    const aq_error_t *error = aq_session_error(aq_producer_session(producer));
    assert_int_equal(error->code, AQ_MALFORMED);
    assert_non_null(strstr(error->text, "--max-delay (60 s)"));
    aq_producer_destroy(&producer);
    /* In a batch of mixed options (`each`), one entry too late refuses the batch. */
    producer = s_producer(&f->h);
    s_put(producer, "b", "fine", (aq_put_options_t){.priority = 1});
    s_put(producer, "b", "too-late", (aq_put_options_t){.delay_ms = 3600000});
    assert_int_equal(aq_producer_sync(producer, HARNESS_DEADLINE_MS), AQ_REFUSED);
    assert_int_equal(aq_producer_refused(producer), 2);
    error = aq_session_error(aq_producer_session(producer));
    assert_non_null(strstr(error->text, "delay-ms is more than this broker's --max-delay"));
    aq_producer_destroy(&producer);
    char err[512];
    char *argv[] = {"asyncq", "put", "--broker", f->h.address, "--queue", "b", "--at",
                    "2999-01-01T00:00:00Z", "far", NULL};
    assert_int_equal(harness_run_err(argv, NULL, 0, err, sizeof err), 1);
    assert_non_null(strstr(err, "at-ms is more than this broker's --max-delay"));
    char *bad_flag[] = {"asyncq", "put", "--broker", f->h.address, "--priority", "high", "x",
                        NULL};
    assert_int_equal(harness_run_err(bad_flag, NULL, 0, err, sizeof err), 2);
    assert_non_null(strstr(err, "--priority needs a whole number"));

    /* Options the library would never send, on a raw socket. */
    aq_inbox_t *inbox = aq_inbox_new(AQ_REPORT_FRAMES_MAX);
    zsock_t *dealer = harness_raw(&f->h, ZMQ_DEALER), *push = harness_raw(&f->h, ZMQ_PUSH);
    harness_hello(dealer, inbox, "raw", 1);
    static const struct {
        const char *options;
        const char *why;
    } bad[] = {
        {"prio=1", "unknown option"},
        {"priority=2147483648", "priority is a whole number"},
        {"delay-ms=5 at-ms=5", "cannot both be given"},
        {"front delay-ms=5", "front cannot be given with a delay"},
        {"delay-ms=1 delay-ms=2", "delay-ms given twice"},
        {"each", "each is for PUTS only"},
        {"each priority=1", "each is given alone"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        char seq[8];
        snprintf(seq, sizeof seq, "%zu", i + 1);
        harness_send_frames(push, "asyncq/2", "PUT", "raw", seq, "b", "0", "x", bad[i].options,
                            NULL);
        aq_msg_t msg;
        assert_int_equal(harness_recv(dealer, inbox, &msg), AQ_CMD_ERROR);
        assert_int_equal(msg.code, 400);
        if (msg.subject.size != strlen(seq) || memcmp(msg.subject.data, seq, msg.subject.size))
            fail_msg("the error names seq '%.*s', not %s", (int) msg.subject.size,
                     (const char *) msg.subject.data, seq);
        if (!s_contains(msg.text, bad[i].why))
            fail_msg("'%s' refused with '%.*s'", bad[i].options, (int) msg.text.size,
                     (const char *) msg.text.data);
    }
    zsock_destroy(&dealer);
    zsock_destroy(&push);
    aq_inbox_destroy(&inbox);
    assert_int_equal(harness_stat(&f->h, "b", "puts"), 0);
    harness_assert_serving(&f->h, "b");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        harness_dir_test(test_priorities_and_the_front),
        harness_dir_test(test_mixed_options_in_one_batch),
        harness_dir_test(test_delayed_puts_wait_their_time),
        harness_dir_test(test_options_survive_a_kill),
        harness_dir_test(test_retries_back_off),
        harness_dir_test(test_bad_options_are_refused_with_their_reason),
    };
    return harness_run_group(tests);
}
