/*  Garbage on both sockets from raw ZeroMQ peers while real producer and
    consumer programs work: every item is still acked, the join is exact. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"

enum { ITEMS = 2000, CONSUMERS = 2, GARBAGE = 600 };

/* Started by the test, stopped by the teardown even if an assertion failed. */
static aq_process_t s_consumers[CONSUMERS], s_producer;

static int s_teardown(void **state)
{
    for (int i = 0; i < CONSUMERS; i++)
        aq_process_stop(&s_consumers[i], SIGTERM, 5000);
    aq_process_stop(&s_producer, SIGTERM, 5000);
    return harness_teardown(state);
}

static const char *s_words[] = {"HELLO", "CREDIT", "ACK", "JOIN", "SYNC", "STATS", "BYE",
                                "ITEM", "ERROR", "PUTS", "NOPE", ""};

/*  One random message: random frames, sometimes behind a valid signature and
    command word. On the PULL socket it never forms a valid PUT. */
static void s_send_garbage(zsock_t *socket, int for_pull, unsigned *seed)
{
    void *raw = zsock_resolve(socket);
    int frames = 1 + rand_r(seed) % 6;
    int shaped = rand_r(seed) % 2;
    for (int i = 0; i < frames; i++) {
        char frame[40];
        size_t size = (size_t) (rand_r(seed) % (int) sizeof frame);
        for (size_t j = 0; j < size; j++)
            frame[j] = (char) rand_r(seed);
        const char *text = NULL;
        if (shaped && i == 0)
            text = rand_r(seed) % 4 ? "asyncq/2" : "asyncq/1";
        else if (shaped && i == 1)
            text = for_pull ? "PUT" : s_words[rand_r(seed) % 12];
        if (shaped && for_pull && i == 1)
            frames = 3; /* PUT with too few fields */
        int more = i + 1 < frames ? ZMQ_SNDMORE : 0;
        if (text)
            zmq_send(raw, text, strlen(text), more);
        else
            zmq_send(raw, frame, size, more);
    }
}

static void test_garbage_on_both_sockets_loses_nothing(void **state)
{
    harness_t *h = *state;
    aq_process_t *consumers = s_consumers, *producer = &s_producer;
    for (int i = 0; i < CONSUMERS; i++) {
        char *argv[] = {"asyncq-consumer", "--broker", h->address, "--max-sleep", "0",
                        "--quiet", "--credit", "8", NULL};
        harness_spawn(&consumers[i], argv);
    }
    char count[16];
    snprintf(count, sizeof count, "%d", ITEMS);
    char *argv[] = {"asyncq-producer", "--broker", h->address, "--count", count,
                    "--max-sleep", "0", "--quiet", NULL};
    harness_spawn(producer, argv);

    zsock_t *dealer = harness_raw(h, ZMQ_DEALER), *push = harness_raw(h, ZMQ_PUSH);
    unsigned seed = 42;
    for (int i = 0; i < GARBAGE; i++) {
        s_send_garbage(dealer, 0, &seed);
        s_send_garbage(push, 1, &seed);
        zmq_msg_t reply; /* drain answers so they never pile up */
        zmq_msg_init(&reply);
        while (zmq_msg_recv(&reply, zsock_resolve(dealer), ZMQ_DONTWAIT) >= 0)
            ;
        zmq_msg_close(&reply);
    }
    zsock_destroy(&dealer);
    zsock_destroy(&push);

    assert_int_equal(aq_process_wait(producer, HARNESS_DEADLINE_MS), 1);
    assert_int_equal(producer->exit_code, 0);
    aq_session_t *session = harness_session(h);
    aq_join_result_t result;
    assert_int_equal(aq_join(session, "default", HARNESS_DEADLINE_MS, AQ_JOIN_BEFORE, &result), AQ_OK);
    aq_session_destroy(&session);
    assert_int_equal(harness_stat(h, "default", "puts"), ITEMS);
    assert_int_equal(harness_stat(h, "default", "acked"), ITEMS);
    assert_int_equal(harness_stat(h, "default", "outstanding"), 0);
    for (int i = 0; i < CONSUMERS; i++) {
        aq_process_stop(&consumers[i], SIGTERM, 5000);
        assert_int_equal(consumers[i].exit_code, 0);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_garbage_on_both_sockets_loses_nothing, harness_setup,
                                        s_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
