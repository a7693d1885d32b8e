/*  The slow-reader verdict (PROTOCOL.md 4.9): a session is closed for the
    replies it has not read, never for those it has. A client that ACKs
    ids it does not hold gets an ERROR per ACK; one that reads them all as
    they come survives 16 MiB of them within one heartbeat interval (the
    broker asked, by an extra HEARTBEAT, and it answered); one that never
    reads is closed. Each ends with a valid request that succeeds. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"

#define IDS 1024
#define FLOOD_BYTES (16u << 20)

static int s_setup(void **state)
{
    /* A long interval: the whole flood fits in one, even on a busy host. */
    char *const flags[] = {"--heartbeat-ms", "5000", NULL};
    return harness_setup_flags(state, flags);
}

static int s_setup_deaf(void **state)
{
    char *const flags[] = {"--heartbeat-ms", "1000", NULL};
    return harness_setup_flags(state, flags);
}

/*  One ACK of IDS ids that this session does not hold (8 KiB). */
static int s_send_bad_ack(void *socket, int flags)
{
    static uint8_t ids[IDS * 8];
    for (size_t i = 0; i < sizeof ids; i++)
        ids[i] = (uint8_t) (0x70 + i % 8);
    if (zmq_send(socket, "asyncq/2", 8, ZMQ_SNDMORE | flags) < 0)
        return -1;
    zmq_send(socket, "ACK", 3, ZMQ_SNDMORE);
    zmq_send(socket, "a", 1, ZMQ_SNDMORE);
    return zmq_send(socket, ids, sizeof ids, 0) < 0 ? -1 : 0;
}

/*  Reads one whole message if there is one: its size (0: none), its
    command in `cmd`; a HEARTBEAT is answered at once. */
static size_t s_read_one(zsock_t *dealer, aq_inbox_t *inbox, aq_cmd_t *cmd)
{
    if (aq_inbox_recv(inbox, zsock_resolve(dealer), 0, ZMQ_DONTWAIT) != AQ_OK)
        return 0;
    aq_msg_t msg;
    assert_int_equal(aq_inbox_decode(inbox, &msg), AQ_OK);
    size_t size = inbox->bytes;
    *cmd = msg.cmd;
    if (msg.cmd == AQ_CMD_HEARTBEAT)
        harness_send_msg(dealer, &msg);
    return size;
}

/*  STATS answered with a REPORT: the session is still there. */
static void s_assert_session_serves(zsock_t *dealer, aq_inbox_t *inbox)
{
    harness_send_frames(dealer, "asyncq/2", "STATS", "s", "", NULL);
    aq_msg_t msg;
    assert_int_equal(harness_recv(dealer, inbox, &msg), AQ_CMD_REPORT);
}

static void test_a_client_that_reads_every_reply_is_not_closed(void **state)
{
    harness_t *h = *state;
    zsock_t *dealer = harness_raw(h, ZMQ_DEALER);
    aq_inbox_t *inbox = aq_inbox_new(AQ_FIELDS_FRAMES_MAX + 1);
    assert_non_null(inbox);
    harness_hello(dealer, inbox, "reader", 0);
    void *socket = zsock_resolve(dealer);
    size_t got = 0, errors = 0, in_flight = 0, acks = 0;
    int64_t started = zclock_mono(), deadline = started + HARNESS_DEADLINE_MS;
    while (got < FLOOD_BYTES) {
        assert_true(zclock_mono() < deadline);
        /* Up to 64 ACKs ahead of their answers: the client pipelines,
           as a real one does. */
        while (in_flight < 64 && s_send_bad_ack(socket, ZMQ_DONTWAIT) == 0) {
            in_flight++;
            acks++;
        }
        zmq_pollitem_t item = {socket, 0, ZMQ_POLLIN, 0};
        zmq_poll(&item, 1, 100);
        aq_cmd_t cmd;
        size_t size;
        while ((size = s_read_one(dealer, inbox, &cmd))) {
            if (cmd == AQ_CMD_ERROR) {
                got += size;
                errors++;
                in_flight--;
            }
        }
    }
    int64_t took = zclock_mono() - started;
    printf("    %zu ACKs, %zu ERROR replies, %.1f MiB read in %lld ms (heartbeat 5000 ms)\n", acks,
           errors, got / 1048576.0, (long long) took);
    /* What is still on its way is read too, and heartbeats answered for
       more than an interval: no verdict comes late. */
    int64_t until = zclock_mono() + 6000;
    while (zclock_mono() < until) {
        zmq_pollitem_t item = {socket, 0, ZMQ_POLLIN, 0};
        zmq_poll(&item, 1, 100);
        aq_cmd_t cmd;
        while (s_read_one(dealer, inbox, &cmd))
            ;
    }
    s_assert_session_serves(dealer, inbox);
    assert_int_equal(harness_info(h, "sessions"), 2); /* this one and the asker */
    aq_inbox_destroy(&inbox);
    zsock_destroy(&dealer);
    harness_assert_serving(h, "q");
}

static void test_a_client_that_never_reads_is_closed(void **state)
{
    harness_t *h = *state;
    zsock_t *dealer = harness_raw(h, ZMQ_DEALER);
    aq_inbox_t *inbox = aq_inbox_new(AQ_FIELDS_FRAMES_MAX + 1);
    assert_non_null(inbox);
    harness_hello(dealer, inbox, "deaf", 0);
    void *socket = zsock_resolve(dealer);
    /* 4000 ACKs (about 4 times --max-pending of answers), never read. */
    int sent = 0;
    int64_t stuck_since = zclock_mono();
    while (sent < 4000 && zclock_mono() - stuck_since < 2000) {
        if (s_send_bad_ack(socket, ZMQ_DONTWAIT) == 0) {
            sent++;
            stuck_since = zclock_mono();
        } else
            zclock_sleep(5); /* every queue on the way is full */
    }
    printf("    %d ACKs sent, no reply read\n", sent);
    harness_wait_info(h, "sessions", 1); /* the one asking: the deaf one is gone */
    aq_inbox_destroy(&inbox);
    zsock_destroy(&dealer);
    harness_assert_serving(h, "q");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_a_client_that_reads_every_reply_is_not_closed,
                                        s_setup, harness_teardown),
        cmocka_unit_test_setup_teardown(test_a_client_that_never_reads_is_closed, s_setup_deaf,
                                        harness_teardown),
    };
    return harness_run_group(tests);
}
