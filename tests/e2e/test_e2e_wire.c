/*  What PROTOCOL.md promises a client written from it alone, on the edges
    of the wire: a ROUTER frame over 16 KiB is answered with an ERROR that
    carries the request's tag, and the session goes on (an error reply never
    closes a session); a message with a wrong signature is answered 406 with
    its tag when the tag frame can be read; a PUTS that must wait and is
    larger than the producer's window is refused whole (429), and counts as
    received. Each test ends with a valid request that must still succeed. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"

typedef struct {
    harness_t h;
    aq_inbox_t *inbox;
} fixture_t;

static int s_setup(void **state)
{
    fixture_t *f = calloc(1, sizeof *f);
    assert_non_null(f);
    char *const flags[] = {"--window", "4", "--maxsize", "2", NULL};
    harness_start_broker(&f->h, flags);
    f->inbox = aq_inbox_new(AQ_REPORT_FRAMES_MAX);
    *state = f;
    return 0;
}

static int s_teardown(void **state)
{
    fixture_t *f = *state;
    harness_stop(&f->h);
    aq_inbox_destroy(&f->inbox);
    free(f);
    return 0;
}

static void s_expect_error(fixture_t *f, zsock_t *socket, int code, const char *tag,
                           const char *subject)
{
    aq_msg_t msg;
    assert_int_equal(harness_recv(socket, f->inbox, &msg), AQ_CMD_ERROR);
    assert_int_equal(msg.code, code);
    if (msg.tag.size != strlen(tag) || memcmp(msg.tag.data, tag, msg.tag.size) != 0)
        fail_msg("ERROR %d with tag '%.*s', not '%s'", code, (int) msg.tag.size,
                 (const char *) msg.tag.data, tag);
    if (subject)
        assert_true(msg.subject.size == strlen(subject)
                    && memcmp(msg.subject.data, subject, msg.subject.size) == 0);
}

/*  INFO on the same DEALER, no HELLO again: the session is still there. */
static void s_expect_session(fixture_t *f, zsock_t *dealer)
{
    harness_send_frames(dealer, "asyncq/2", "INFO", "still", NULL);
    aq_msg_t msg;
    assert_int_equal(harness_recv(dealer, f->inbox, &msg), AQ_CMD_REPORT);
    assert_int_equal(msg.tag.size, 5);
    assert_memory_equal(msg.tag.data, "still", 5);
}

static void s_send_big(zsock_t *dealer, const char *command, const char *tag, size_t size)
{
    void *raw = zsock_resolve(dealer);
    char *frame = calloc(1, size);
    assert_non_null(frame);
    memset(frame, 'x', size);
    assert_true(zmq_send(raw, "asyncq/2", 8, ZMQ_SNDMORE) == 8);
    assert_true(zmq_send(raw, command, strlen(command), ZMQ_SNDMORE) >= 0);
    assert_true(zmq_send(raw, tag, strlen(tag), ZMQ_SNDMORE) >= 0);
    assert_true(zmq_send(raw, frame, size, 0) == (int) size);
    free(frame);
}

/*  The old broker's ZMQ_MAXMSGSIZE of 16 KiB dropped the connection, so
    the session went with it and the client heard nothing. */
static void test_a_router_frame_over_16_kib_gets_an_error_with_its_tag_and_the_session_goes_on(
    void **state)
{
    fixture_t *f = *state;
    zsock_t *dealer = harness_raw(&f->h, ZMQ_DEALER);
    harness_hello(dealer, f->inbox, "big-frames", 0);
    s_send_big(dealer, "ACK", "a1", 20 * 1024);            /* ids over 16 KiB */
    s_expect_error(f, dealer, AQ_MALFORMED, "a1", NULL);
    s_send_big(dealer, "STATS", "s1", 60 * 1024);          /* a queue name of 60 KiB */
    s_expect_error(f, dealer, AQ_MALFORMED, "s1", NULL);
    s_expect_session(f, dealer);
    zsock_destroy(&dealer);
    assert_true(harness_info(&f->h, "bad_input") >= 2);
    harness_assert_serving(&f->h, "q");
}

/*  The old broker answered 406 with an empty tag. */
static void test_a_wrong_signature_gets_406_with_its_tag(void **state)
{
    fixture_t *f = *state;
    zsock_t *dealer = harness_raw(&f->h, ZMQ_DEALER);
    harness_hello(dealer, f->inbox, "versions", 0);
    harness_send_frames(dealer, "asyncq/3", "INFO", "v1", NULL);
    s_expect_error(f, dealer, AQ_BAD_VERSION, "v1", NULL);
    harness_send_frames(dealer, "ASYNCQ/2", "JOIN", "v2", "q", "0", "all", NULL);
    s_expect_error(f, dealer, AQ_BAD_VERSION, "v2", NULL);
    /* Where no tag can be read (no command, a heartbeat, a tag that is not
       one), the tag is empty, as before. */
    harness_send_frames(dealer, "hello there", NULL);
    s_expect_error(f, dealer, AQ_BAD_VERSION, "", NULL);
    harness_send_frames(dealer, "asyncq/3", "HEARTBEAT", "7", NULL);
    s_expect_error(f, dealer, AQ_BAD_VERSION, "", NULL);
    s_send_big(dealer, "INFO", "", 100); /* the tag frame empty, then one too many */
    s_expect_error(f, dealer, AQ_MALFORMED, "", NULL);
    s_expect_session(f, dealer);
    zsock_destroy(&dealer);
    harness_assert_serving(&f->h, "q");
}

/*  --window 4, --maxsize 2: a PUTS of 8 items to an empty queue has room
    for 2 and must hold 6, over the window: all 8 are refused (429, subject
    "1-8"), none queued, and SYNC 8 is answered (refused puts are received).
    A PUTS of 2 then goes in. */
static void test_a_puts_over_the_window_that_must_wait_is_refused_whole(void **state)
{
    fixture_t *f = *state;
    zsock_t *dealer = harness_raw(&f->h, ZMQ_DEALER);
    zsock_t *push = harness_raw(&f->h, ZMQ_PUSH);
    harness_hello(dealer, f->inbox, "windowed", 1);
    uint8_t batch[8 * 5];
    for (int i = 0; i < 8; i++) {
        aq_put_u32(batch + i * 5, 1);
        batch[i * 5 + 4] = (uint8_t) ('a' + i);
    }
    aq_msg_t puts = {.cmd = AQ_CMD_PUTS, .producer = aq_bytes_str("windowed"), .seq = 1,
                     .count = 8, .queue = aq_bytes_str("w"), .batch = {batch, sizeof batch}};
    harness_send_msg(push, &puts);
    aq_msg_t sync = {.cmd = AQ_CMD_SYNC, .tag = aq_bytes_str("y1"),
                     .producer = aq_bytes_str("windowed"), .seq = 8};
    harness_send_msg(dealer, &sync);
    s_expect_error(f, dealer, AQ_LIMIT, "", "1-8");
    aq_msg_t msg;
    assert_int_equal(harness_recv(dealer, f->inbox, &msg), AQ_CMD_SYNCED);
    assert_int_equal(msg.seq, 8);
    assert_int_equal(harness_stat(&f->h, "w", "queued"), 0);
    /* Within the queue's room: in, whole. */
    puts.seq = 9;
    puts.count = 2;
    puts.batch.size = 2 * 5;
    harness_send_msg(push, &puts);
    sync.seq = 10;
    harness_send_msg(dealer, &sync);
    assert_int_equal(harness_recv(dealer, f->inbox, &msg), AQ_CMD_SYNCED);
    assert_int_equal(msg.seq, 10);
    assert_int_equal(harness_stat(&f->h, "w", "queued"), 2);
    zsock_destroy(&push);
    zsock_destroy(&dealer);
    harness_assert_serving(&f->h, "q");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(
            test_a_router_frame_over_16_kib_gets_an_error_with_its_tag_and_the_session_goes_on,
            s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_a_wrong_signature_gets_406_with_its_tag, s_setup,
                                        s_teardown),
        cmocka_unit_test_setup_teardown(test_a_puts_over_the_window_that_must_wait_is_refused_whole,
                                        s_setup, s_teardown),
    };
    return harness_run_group(tests);
}
