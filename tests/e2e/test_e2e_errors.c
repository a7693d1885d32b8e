/*  Bad input gets a clear error and changes nothing; every test ends with a
    valid exchange that must still work. */
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "harness.h"

typedef struct {
    harness_t h;
    aq_inbox_t *inbox;
} fixture_t;

static int s_setup(void **state)
{
    fixture_t *f = calloc(1, sizeof *f);
    char *const flags[] = {"--max-item", "1000", NULL};
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

static void s_expect_error(fixture_t *f, zsock_t *socket, int code)
{
    aq_msg_t msg;
    assert_int_equal(harness_recv(socket, f->inbox, &msg), AQ_CMD_ERROR);
    assert_int_equal(msg.code, code);
    assert_true(msg.text.size > 0);
}

static void test_ack_of_an_unknown_id_is_refused_and_changes_nothing(void **state)
{
    fixture_t *f = *state;
    aq_status_t rc;
    aq_producer_t *producer = aq_producer_new(f->h.address, "p", &rc);
    aq_producer_put(producer, "q", "held", 4);
    assert_int_equal(aq_producer_sync(producer, HARNESS_DEADLINE_MS), AQ_OK);
    aq_producer_destroy(&producer);

    aq_consumer_t *consumer = aq_consumer_new(f->h.address, "c", "q", 1, &rc);
    aq_item_t item;
    assert_int_equal(aq_consumer_get(consumer, &item, HARNESS_DEADLINE_MS), AQ_OK);
    assert_int_equal(aq_consumer_ack(consumer, item.id + 1), AQ_OK);
    assert_int_equal(aq_consumer_get(consumer, &item, HARNESS_DEADLINE_MS), AQ_REFUSED);
    assert_int_equal(aq_session_error(aq_consumer_session(consumer))->code, AQ_UNKNOWN_ITEM);
    assert_int_equal(harness_stat(&f->h, "q", "inflight"), 1);
    assert_int_equal(harness_stat(&f->h, "q", "acked"), 0);
    /* Another consumer cannot ack it either. */
    aq_consumer_t *thief = aq_consumer_new(f->h.address, "thief", "q", 1, &rc);
    aq_consumer_ack(thief, item.id);
    aq_item_t none;
    assert_int_equal(aq_consumer_get(thief, &none, HARNESS_DEADLINE_MS), AQ_REFUSED);
    assert_int_equal(harness_stat(&f->h, "q", "acked"), 0);
    aq_consumer_destroy(&thief);
    aq_consumer_ack(consumer, item.id);
    aq_consumer_destroy(&consumer);
    harness_wait_stat(&f->h, "q", "acked", 1);
    harness_assert_serving(&f->h, "q");
}

static void s_expect_error_tagged(fixture_t *f, zsock_t *socket, int code, const char *tag)
{
    aq_msg_t msg;
    assert_int_equal(harness_recv(socket, f->inbox, &msg), AQ_CMD_ERROR);
    assert_int_equal(msg.code, code);
    assert_int_equal(msg.tag.size, strlen(tag));
    assert_memory_equal(msg.tag.data, tag, msg.tag.size);
}

static void test_garbage_on_the_router_gets_errors_and_the_broker_goes_on(void **state)
{
    fixture_t *f = *state;
    zsock_t *raw = harness_raw(&f->h, ZMQ_DEALER);
    harness_send_frames(raw, "hello there", NULL);
    s_expect_error(f, raw, AQ_BAD_VERSION);
    harness_send_frames(raw, "asyncq/9", "HELLO", "t", "x", "0", NULL);
    s_expect_error(f, raw, AQ_BAD_VERSION);
    harness_send_frames(raw, "asyncq/2", "DANCE", NULL);
    s_expect_error(f, raw, AQ_UNKNOWN_COMMAND);
    harness_send_frames(raw, "asyncq/2", "HELLO", "t1", "bad id!", "0", NULL);
    s_expect_error_tagged(f, raw, AQ_MALFORMED, "t1");
    harness_send_frames(raw, "asyncq/2", "JOIN", "t2", "q", NULL);
    s_expect_error_tagged(f, raw, AQ_MALFORMED, "t2");
    harness_send_frames(raw, "asyncq/2", "CREDIT", "t3", "q", "1", "0", NULL);
    s_expect_error_tagged(f, raw, AQ_NO_SESSION, "t3");
    harness_send_frames(raw, "asyncq/2", "STATS", "t4", "", NULL);
    s_expect_error_tagged(f, raw, AQ_NO_SESSION, "t4"); /* STATS needs a session now */
    harness_send_frames(raw, "asyncq/2", "PUT", "p", "1", "q", "0", "x", NULL);
    s_expect_error(f, raw, AQ_UNKNOWN_COMMAND);
    harness_hello(raw, f->inbox, "raw", 0);
    harness_send_frames(raw, "asyncq/2", "CREDIT", "t5", "q", "99999999", "0", NULL);
    s_expect_error_tagged(f, raw, AQ_LIMIT, "t5");
    harness_send_frames(raw, "asyncq/2", "ACK", "t6", "1234567", NULL); /* not 8-byte ids */
    s_expect_error_tagged(f, raw, AQ_MALFORMED, "t6");
    harness_send_frames(raw, "asyncq/2", "NACK", "t7", "86400001", "", "12345678", NULL);
    s_expect_error_tagged(f, raw, AQ_MALFORMED, "t7"); /* delay above the maximum */
    harness_send_frames(raw, "asyncq/2", "JOIN", "t8", "q", "86400001", "all", NULL);
    s_expect_error_tagged(f, raw, AQ_MALFORMED, "t8"); /* time-out above the maximum */
    harness_send_frames(raw, "asyncq/2", "NACK", "t9", "0", "\xc0\xaf", "12345678", NULL);
    s_expect_error_tagged(f, raw, AQ_MALFORMED, "t9"); /* a reason that is not UTF-8 */
    zsock_destroy(&raw);
    harness_assert_serving(&f->h, "q");
    assert_int_equal(harness_stat(&f->h, "q", "puts"), 1);
}

/*  A client of version 1 gets a version 1 ERROR it can show, not silence. */
static void test_an_old_client_is_told_to_upgrade(void **state)
{
    fixture_t *f = *state;
    zsock_t *raw = harness_raw(&f->h, ZMQ_DEALER);
    harness_send_frames(raw, "asyncq/1", "HELLO", "old-client", "0", "0", NULL);
    zmsg_t *reply = zmsg_recv(raw);
    assert_non_null(reply);
    char *signature = zmsg_popstr(reply), *command = zmsg_popstr(reply);
    char *code = zmsg_popstr(reply), *name = zmsg_popstr(reply);
    char *subject = zmsg_popstr(reply), *text = zmsg_popstr(reply);
    assert_string_equal(signature, "asyncq/1");
    assert_string_equal(command, "ERROR");
    assert_string_equal(code, "406");
    assert_string_equal(name, "BAD_VERSION");
    assert_non_null(strstr(text, "asyncq/2"));
    zstr_free(&signature), zstr_free(&command), zstr_free(&code), zstr_free(&name);
    zstr_free(&subject), zstr_free(&text);
    zmsg_destroy(&reply);
    zsock_destroy(&raw);
    harness_assert_serving(&f->h, "q");
}

/*  A message of more frames than any command has: read whole, never decoded,
    answered MALFORMED with an empty subject (no byte of the broker's memory),
    from a peer that never said HELLO; 20 times, then on the PULL socket. */
static void test_a_message_of_too_many_frames_is_refused_and_reveals_nothing(void **state)
{
    fixture_t *f = *state;
    zsock_t *raw = harness_raw(&f->h, ZMQ_DEALER);
    zsock_t *push = harness_raw(&f->h, ZMQ_PUSH);
    for (int trial = 0; trial < 20; trial++) {
        zmq_send(zsock_resolve(raw), "asyncq/2", 8, ZMQ_SNDMORE);
        zmq_send(zsock_resolve(raw), "ACK", 3, ZMQ_SNDMORE);
        for (int i = 0; i < 1100; i++)
            zmq_send(zsock_resolve(raw), "12345678", 8, i + 1 < 1100 ? ZMQ_SNDMORE : 0);
        aq_msg_t msg;
        assert_int_equal(harness_recv(raw, f->inbox, &msg), AQ_CMD_ERROR);
        assert_int_equal(msg.code, AQ_MALFORMED);
        assert_int_equal(msg.subject.size, 0);
    }
    zmq_send(zsock_resolve(push), "asyncq/2", 8, ZMQ_SNDMORE);
    zmq_send(zsock_resolve(push), "PUT", 3, ZMQ_SNDMORE);
    for (int i = 0; i < 1100; i++)
        zmq_send(zsock_resolve(push), "q", 1, i + 1 < 1100 ? ZMQ_SNDMORE : 0);
    zsock_destroy(&push);
    zsock_destroy(&raw);
    harness_assert_serving(&f->h, "q");
    assert_int_equal(harness_stat(&f->h, "q", "puts"), 1);
}

static void test_garbage_on_the_pull_socket_is_dropped_and_counted_nowhere(void **state)
{
    fixture_t *f = *state;
    zsock_t *push = harness_raw(&f->h, ZMQ_PUSH);
    zsock_t *session = harness_raw(&f->h, ZMQ_DEALER);
    harness_hello(session, f->inbox, "raw-p", 1);
    harness_send_frames(push, "junk", NULL);
    harness_send_frames(push, "asyncq/2", "PUT", "q", NULL);
    harness_send_frames(push, "asyncq/1", "PUT", "q", "", "0", "0", "x", NULL);
    /* A producer id with no session: its puts cannot be confirmed. */
    harness_send_frames(push, "asyncq/2", "PUT", "stranger", "1", "q", "0", "x", NULL);
    harness_send_frames(push, "asyncq/2", "JOIN", "t", "q", "0", "all", NULL);
    /* A valid put after the garbage must still land. */
    harness_send_frames(push, "asyncq/2", "PUT", "raw-p", "1", "q", "0", "fine", NULL);
    harness_send_frames(session, "asyncq/2", "SYNC", "s1", "raw-p", "1", NULL);
    aq_msg_t msg;
    assert_int_equal(harness_recv(session, f->inbox, &msg), AQ_CMD_SYNCED);
    zsock_destroy(&push);
    zsock_destroy(&session);
    assert_int_equal(harness_stat(&f->h, "q", "puts"), 1);
    assert_int_equal(harness_stat(&f->h, "q", "queued"), 1);
}

static void test_oversized_item_is_refused_and_not_truncated(void **state)
{
    fixture_t *f = *state;
    static char big[1002];
    memset(big, 'x', sizeof big - 1); /* 1001 bytes and a NUL */
    aq_status_t rc;
    aq_producer_t *producer = aq_producer_new(f->h.address, "p", &rc);
    assert_int_equal(aq_producer_put(producer, "q", big, strlen(big)), AQ_TOO_BIG);
    aq_producer_destroy(&producer);

    /* A raw producer that ignores the limit gets TOO_BIG from the broker. */
    zsock_t *session = harness_raw(&f->h, ZMQ_DEALER);
    zsock_t *push = harness_raw(&f->h, ZMQ_PUSH);
    aq_msg_t msg;
    harness_send_frames(session, "asyncq/2", "HELLO", "h", "raw-producer", "1", NULL);
    assert_int_equal(harness_recv(session, f->inbox, &msg), AQ_CMD_WELCOME);
    assert_int_equal(msg.max_item, 1000);
    harness_send_frames(push, "asyncq/2", "PUT", "raw-producer", "1", "q", "0", big, NULL);
    harness_send_frames(session, "asyncq/2", "SYNC", "s1", "raw-producer", "1", NULL);
    assert_int_equal(harness_recv(session, f->inbox, &msg), AQ_CMD_ERROR);
    assert_int_equal(msg.code, AQ_TOO_BIG);
    assert_int_equal(msg.subject.size, 1);
    assert_memory_equal(msg.subject.data, "1", 1); /* the put's seq */
    assert_int_equal(harness_recv(session, f->inbox, &msg), AQ_CMD_SYNCED);
    zsock_destroy(&push);
    zsock_destroy(&session);
    assert_int_equal(harness_stat(&f->h, "q", "puts"), 0);

    /* The program says so and exits 1. */
    char path[] = "/tmp/asyncq-test-big-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    FILE *file = fdopen(fd, "w");
    fprintf(file, "small\n%s\n", big);
    fclose(file);
    char command[1024];
    snprintf(command, sizeof command, "%s/asyncq-producer --broker %s --queue q --stdin --quiet < %s 2>/dev/null",
             getenv("ASYNCQ_BIN_DIR"), f->h.address, path);
    int status = system(command);
    unlink(path);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 1);
    assert_int_equal(harness_stat(&f->h, "q", "puts"), 1);
    harness_assert_serving(&f->h, "other");
}

/*  A flood of joins from one session: the first 100 wait, the next is
    refused with LIMIT; when the session ends, its joins are freed. */
static void test_join_flood_from_one_session_is_limited(void **state)
{
    fixture_t *f = *state;
    aq_status_t rc;
    aq_producer_t *producer = aq_producer_new(f->h.address, "p", &rc);
    assert_int_equal(aq_producer_put(producer, "q", "x", 1), AQ_OK);
    assert_int_equal(aq_producer_sync(producer, HARNESS_DEADLINE_MS), AQ_OK);
    aq_producer_destroy(&producer);

    zsock_t *raw = harness_raw(&f->h, ZMQ_DEALER);
    harness_send_frames(raw, "asyncq/2", "JOIN", "early", "q", "0", "before", NULL);
    s_expect_error(f, raw, AQ_NO_SESSION); /* a join needs a session */
    harness_hello(raw, f->inbox, "flood", 0);
    for (int i = 0; i <= 100; i++) {
        char tag[16];
        snprintf(tag, sizeof tag, "j%d", i);
        harness_send_frames(raw, "asyncq/2", "JOIN", tag, "q", "0", "before", NULL);
    }
    s_expect_error_tagged(f, raw, AQ_LIMIT, "j100");
    assert_int_equal(harness_stat(&f->h, "q", "joiners"), 100);
    harness_send_frames(raw, "asyncq/2", "BYE", "b", NULL);
    harness_wait_stat(&f->h, "q", "joiners", 0);
    zsock_destroy(&raw);
    harness_assert_serving(&f->h, "other");
}

static void test_unreachable_broker_and_bad_flags_give_one_line_errors(void **state)
{
    (void) state;
    char out[256];
    char *unreachable[] = {"asyncq", "stats", "--broker", "127.0.0.1:1", NULL};
    assert_int_equal(harness_run(unreachable, out, sizeof out), 3);
    char *bad_flag[] = {"asyncq-consumer", "--credit", "zero", NULL};
    assert_int_equal(harness_run(bad_flag, out, sizeof out), 2);
    char *bad_address[] = {"asyncq-producer", "--broker", "tcp://nowhere", NULL};
    assert_int_equal(harness_run(bad_address, out, sizeof out), 3);
}

/*  "Reported at once": well under the 5 s a HELLO waits for a broker. */
#define AT_ONCE_MS 2000

/*  Runs a program that cannot reach the broker at `address`: it must exit 3
    within AT_ONCE_MS, saying "cannot reach the broker at 'ADDRESS'"; its
    stderr is left in err. (harness_run_err replaces argv[0] with the
    program's path.) */
static void s_run_unreachable(char *argv[], const char *address, char *err, size_t size)
{
    char out[1024];
    int64_t started = zclock_mono();
    assert_int_equal(harness_run_err(argv, out, sizeof out, err, size), 3);
    int64_t took = zclock_mono() - started;
    printf("    in %lld ms: %s", (long long) took, err);
    assert_true(took < AT_ONCE_MS);
    char expected[256];
    snprintf(expected, sizeof expected, "cannot reach the broker at '%s'", address);
    assert_non_null(strstr(err, expected));
}

/*  A loopback port where nothing listens: one the kernel just gave out and
    took back (ports are handed out in turn, so no other test gets it in
    the meantime). */
static int s_closed_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(bind(fd, (struct sockaddr *) &addr, sizeof addr), 0);
    socklen_t size = sizeof addr;
    assert_int_equal(getsockname(fd, (struct sockaddr *) &addr, &size), 0);
    close(fd);
    return ntohs(addr.sin_port);
}

/*  A host name that does not resolve (.invalid never does, RFC 2606) is
    reported at once, with the address as given and the resolver's cause,
    not as a broker that did not answer after 5 s. */
static void test_a_host_name_that_does_not_resolve_is_reported_at_once_with_its_cause(void **state)
{
    (void) state;
    const char *host = "nosuch-broker.invalid";
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    struct addrinfo *found = NULL;
    int gai = getaddrinfo(host, NULL, &hints, &found);
    if (found)
        freeaddrinfo(found);
    assert_int_not_equal(gai, 0);
    const char *cause = gai == EAI_SYSTEM ? strerror(errno) : gai_strerror(gai);

    char address[128], err[4096];
    snprintf(address, sizeof address, "%s:5600", host);
    char *programs[][8] = {
        {"asyncq-producer", "--broker", address, "--count", "1", "--max-sleep", "0", NULL},
        {"asyncq-consumer", "--broker", address, "--count", "1", NULL},
        {"asyncq", "stats", "--broker", address, NULL},
    };
    for (size_t i = 0; i < sizeof programs / sizeof programs[0]; i++) {
        s_run_unreachable(programs[i], address, err, sizeof err);
        assert_non_null(strstr(err, "does not resolve"));
        assert_non_null(strstr(err, cause));
    }
    /* The library says the same, without a program around it. */
    aq_status_t rc = AQ_OK;
    int64_t started = zclock_mono();
    aq_producer_t *producer = aq_producer_new(address, "p", &rc);
    assert_null(producer);
    assert_int_equal(rc, AQ_UNREACHABLE);
    assert_true(zclock_mono() - started < AT_ONCE_MS);
    assert_non_null(strstr(aq_last_error(), address));
    assert_non_null(strstr(aq_last_error(), cause));
}

/*  A port where nothing listens: reported at once (not after 5 s), with
    the address as the user typed it (not the derived ROUTER endpoint,
    tcp://HOST:PORT+1) and the connection's cause. */
static void test_a_port_where_nothing_listens_is_reported_at_once_with_its_cause(void **state)
{
    (void) state;
    int router_port = s_closed_port();
    assert_true(router_port > 1);
    char address[64], derived[64], err[4096];
    snprintf(address, sizeof address, "localhost:%d", router_port - 1);
    snprintf(derived, sizeof derived, "tcp://127.0.0.1:%d", router_port);
    const char *cause = strerror(ECONNREFUSED);
    char *programs[][8] = {
        {"asyncq-producer", "--broker", address, "--count", "1", "--max-sleep", "0", NULL},
        {"asyncq-consumer", "--broker", address, "--count", "1", NULL},
        {"asyncq", "join", "--broker", address, NULL},
        {"asyncq", "shutdown", "--broker", address, NULL},
    };
    for (size_t i = 0; i < sizeof programs / sizeof programs[0]; i++) {
        s_run_unreachable(programs[i], address, err, sizeof err);
        assert_non_null(strstr(err, "nothing listens there"));
        assert_non_null(strstr(err, cause));
        assert_null(strstr(err, derived));
        assert_null(strstr(err, "tcp://"));
    }
    aq_status_t rc = AQ_OK;
    int64_t started = zclock_mono();
    aq_consumer_t *consumer = aq_consumer_new(address, "c", "q", 1, &rc);
    assert_null(consumer);
    assert_int_equal(rc, AQ_UNREACHABLE);
    assert_true(zclock_mono() - started < AT_ONCE_MS);
    assert_non_null(strstr(aq_last_error(), address));
    assert_non_null(strstr(aq_last_error(), cause));
    /* Even told to wait for ever: nothing listening is not a slow broker. */
    aq_session_t *session = aq_session_new(address, "s", -1, &rc);
    assert_null(session);
    assert_int_equal(rc, AQ_UNREACHABLE);
}

/*  An ipc path where no broker is: the same, with the cause of the path. */
static void test_an_ipc_path_without_a_broker_is_reported_at_once_with_its_cause(void **state)
{
    (void) state;
    char address[128], err[4096];
    snprintf(address, sizeof address, "ipc:///tmp/asyncq-no-broker-%d", (int) getpid());
    char *put[] = {"asyncq", "put", "--broker", address, "x", NULL};
    s_run_unreachable(put, address, err, sizeof err);
    char expected[256];
    snprintf(expected, sizeof expected, "cannot reach the broker at '%s': nothing listens there: %s",
             address, strerror(ENOENT));
    assert_non_null(strstr(err, expected));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_ack_of_an_unknown_id_is_refused_and_changes_nothing, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_garbage_on_the_router_gets_errors_and_the_broker_goes_on, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_an_old_client_is_told_to_upgrade, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_a_message_of_too_many_frames_is_refused_and_reveals_nothing, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_garbage_on_the_pull_socket_is_dropped_and_counted_nowhere, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_oversized_item_is_refused_and_not_truncated, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_join_flood_from_one_session_is_limited, s_setup, s_teardown),
        cmocka_unit_test(test_unreachable_broker_and_bad_flags_give_one_line_errors),
        cmocka_unit_test(test_a_host_name_that_does_not_resolve_is_reported_at_once_with_its_cause),
        cmocka_unit_test(test_a_port_where_nothing_listens_is_reported_at_once_with_its_cause),
        cmocka_unit_test(test_an_ipc_path_without_a_broker_is_reported_at_once_with_its_cause),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
