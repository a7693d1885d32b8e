/*  The HTTP port (--metrics) under bad input: unknown paths, wrong methods,
    actions without the token, huge headers, garbage, slow clients and 500
    idle connections change nothing in the queues and do not stall the
    broker's loop. Put-to-ack latency is measured with and without the
    abuse, for the record (a test never fails on timing). */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "harness.h"

#define TOKEN "0123456789abcdef0123456789abcdef"

typedef struct {
    harness_t h;
    char url[256];
    int port;
    char token_path[64];
    char data_dir[64];
} fixture_t;

/*  A broker with the HTTP port and a known token; durable (a journal in a
    temporary directory) if `durable`. */
static int s_start(void **state, int durable)
{
    fixture_t *f = calloc(1, sizeof *f);
    assert_non_null(f);
    snprintf(f->token_path, sizeof f->token_path, "/tmp/asyncq-token-XXXXXX");
    int fd = mkstemp(f->token_path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, TOKEN "\n", strlen(TOKEN) + 1), (ssize_t) strlen(TOKEN) + 1);
    close(fd);
    snprintf(f->data_dir, sizeof f->data_dir, "/tmp/asyncq-http-XXXXXX");
    assert_non_null(mkdtemp(f->data_dir));
    char *const flags[] = {"--metrics", "127.0.0.1:0", "--metrics-token-file", f->token_path,
                           durable ? "--data-dir" : NULL, f->data_dir, NULL};
    harness_start_broker(&f->h, flags);
    if (!aq_process_expect(&f->h.broker, "METRICS ", f->url, sizeof f->url, HARNESS_DEADLINE_MS))
        fail_msg("broker did not print METRICS");
    const char *colon = strrchr(f->url, ':');
    assert_non_null(colon);
    f->port = atoi(colon + 1);
    *state = f;
    return 0;
}

static int s_setup(void **state)
{
    return s_start(state, 0);
}

static int s_setup_durable(void **state)
{
    return s_start(state, 1);
}

static int s_teardown(void **state)
{
    fixture_t *f = *state;
    harness_stop(&f->h);
    unlink(f->token_path);
    char command[128];
    snprintf(command, sizeof command, "rm -rf '%s'", f->data_dir);
    assert_int_equal(system(command), 0);
    free(f);
    return 0;
}

static int s_connect(const fixture_t *f)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct sockaddr_in address = {.sin_family = AF_INET, .sin_port = htons((uint16_t) f->port)};
    inet_pton(AF_INET, "127.0.0.1", &address.sin_addr);
    assert_int_equal(connect(fd, (struct sockaddr *) &address, sizeof address), 0);
    return fd;
}

/*  Sends everything (a peer that closes early is fine: what it answered
    is read after). */
static void s_send_all(int fd, const char *data, size_t size)
{
    while (size) {
        ssize_t sent = send(fd, data, size, MSG_NOSIGNAL);
        if (sent <= 0)
            return;
        data += sent;
        size -= (size_t) sent;
    }
}

/*  Reads until the peer closes or `size` - 1 bytes; NUL-terminated. */
static size_t s_read_all(int fd, char *buf, size_t size)
{
    size_t got = 0;
    int64_t deadline = zclock_mono() + HARNESS_DEADLINE_MS;
    while (got + 1 < size) {
        struct pollfd item = {fd, POLLIN, 0};
        int left = (int) (deadline - zclock_mono());
        if (left <= 0 || poll(&item, 1, left) != 1)
            fail_msg("no answer from the HTTP port in time");
        ssize_t n = recv(fd, buf + got, size - 1 - got, 0);
        if (n <= 0)
            break;
        got += (size_t) n;
    }
    buf[got] = '\0';
    return got;
}

/*  One request on a new connection (closed after): the status code, and
    the body in `body` if given. */
static int s_request(const fixture_t *f, const char *request, char *body, size_t size)
{
    int fd = s_connect(f);
    s_send_all(fd, request, strlen(request));
    static char answer[1 << 20];
    s_read_all(fd, answer, sizeof answer);
    close(fd);
    int status = 0;
    if (sscanf(answer, "HTTP/1.%*d %d", &status) != 1)
        return 0; /* closed without an answer */
    const char *start = strstr(answer, "\r\n\r\n");
    if (body)
        snprintf(body, size, "%s", start ? start + 4 : "");
    return status;
}

static int s_get(const fixture_t *f, const char *path, char *body, size_t size)
{
    char request[512];
    snprintf(request, sizeof request, "GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
             path);
    return s_request(f, request, body, size);
}

static int s_compare_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *) a, y = *(const uint64_t *) b;
    return x < y ? -1 : x > y;
}

/*  Put, get, ack and a join that confirms the ack, `rounds` times: prints
    the latency percentiles of the whole round trip. */
static void s_round_trips(const harness_t *h, const char *when, int rounds)
{
    aq_status_t rc;
    aq_producer_t *producer = aq_producer_new(h->address, "probe", &rc);
    aq_consumer_t *consumer = aq_consumer_new(h->address, "probe", "probe", 1, &rc);
    aq_session_t *session = harness_session(h);
    assert_non_null(producer);
    assert_non_null(consumer);
    uint64_t *took = calloc((size_t) rounds, sizeof *took);
    assert_non_null(took);
    for (int i = 0; i < rounds; i++) {
        int64_t started = zclock_usecs();
        assert_int_equal(aq_producer_put(producer, "probe", "x", 1), AQ_OK);
        assert_int_equal(aq_producer_sync(producer, HARNESS_DEADLINE_MS), AQ_OK);
        aq_item_t item;
        assert_int_equal(aq_consumer_get(consumer, &item, HARNESS_DEADLINE_MS), AQ_OK);
        aq_consumer_ack(consumer, item.id);
        assert_int_equal(aq_consumer_flush(consumer), AQ_OK);
        aq_join_result_t result;
        assert_int_equal(
            aq_join(session, "probe", HARNESS_DEADLINE_MS, AQ_JOIN_BEFORE, &result), AQ_OK);
        took[i] = (uint64_t) (zclock_usecs() - started);
    }
    qsort(took, (size_t) rounds, sizeof *took, s_compare_u64);
    printf("    put -> synced -> got -> acked -> joined %s: p50 %.2f ms, p99 %.2f ms, max %.2f ms "
           "(%d rounds)\n",
           when, took[rounds / 2] / 1000.0, took[rounds * 99 / 100] / 1000.0,
           took[rounds - 1] / 1000.0, rounds);
    free(took);
    aq_session_destroy(&session);
    aq_consumer_destroy(&consumer);
    aq_producer_destroy(&producer);
}

/*  What the bad requests get, each on its own connection. */
static void s_bad_requests(const fixture_t *f)
{
    char body[4096];
    assert_int_equal(s_get(f, "/nope", body, sizeof body), 404);
    assert_int_equal(s_get(f, "/../../etc/passwd", NULL, 0), 404);
    assert_int_equal(s_request(f, "DELETE /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
                               NULL, 0),
                     405);
    assert_int_equal(s_request(f, "GET /api/requeue?queue=q HTTP/1.1\r\nHost: x\r\n"
                                  "Connection: close\r\n\r\n",
                               NULL, 0),
                     405);
    assert_int_equal(s_request(f, "POST /api/requeue?queue=q HTTP/1.1\r\nHost: x\r\n"
                                  "Content-Length: 0\r\nConnection: close\r\n\r\n",
                               body, sizeof body),
                     401);
    assert_non_null(strstr(body, "token"));
    assert_int_equal(s_request(f, "POST /api/requeue?queue=q HTTP/1.1\r\nHost: x\r\n"
                                  "Authorization: Bearer 0123456789abcdef0123456789abcdeX\r\n"
                                  "Content-Length: 0\r\nConnection: close\r\n\r\n",
                               NULL, 0),
                     401);
    assert_int_equal(s_request(f, "POST /api/requeue?queue=no%20such HTTP/1.1\r\nHost: x\r\n"
                                  "Authorization: Bearer " TOKEN "\r\n"
                                  "Content-Length: 0\r\nConnection: close\r\n\r\n",
                               NULL, 0),
                     400);
    /* A header of 1 MiB: refused, never buffered whole. */
    size_t huge = 1 << 20;
    char *request = malloc(huge + 128);
    assert_non_null(request);
    int length = snprintf(request, 128, "GET /metrics HTTP/1.1\r\nHost: x\r\nX-Big: ");
    memset(request + length, 'a', huge);
    memcpy(request + length + huge, "\r\n\r\n", 5);
    int status = s_request(f, request, NULL, 0);
    printf("    a 1 MiB header: %d%s\n", status, status ? "" : " (closed without an answer)");
    assert_true(status == 0 || status == 431 || status == 413 || status == 400);
    free(request);
    /* Bytes that are no HTTP at all. */
    assert_true(s_request(f, "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n", NULL, 0)
                != 200);
}

static void test_bad_http_input_changes_nothing_and_does_not_stall_the_loop(void **state)
{
    fixture_t *f = *state;
    harness_t *h = &f->h;
    harness_put_items(h, "q", 100);
    s_round_trips(h, "before", 300);
    s_bad_requests(f);

    /* Idle connections, more than the port takes (beyond its limit from one
       address, the rest are closed at once), and slow clients that send
       half a request and stop. */
    enum { IDLE = 500, SLOW = 20 };
    int idle[IDLE], slow[SLOW];
    for (int i = 0; i < IDLE; i++)
        idle[i] = s_connect(f);
    for (int i = 0; i < SLOW; i++) {
        slow[i] = s_connect(f);
        s_send_all(slow[i], "GET /metrics HTTP/1.1\r\nHost: x\r\nX-Slow: ", 40);
    }
    s_round_trips(h, "with 500 idle HTTP connections, 20 stalled requests", 300);
    for (int i = 0; i < IDLE; i++)
        close(idle[i]);
    for (int i = 0; i < SLOW; i++)
        close(slow[i]);

    /* The queues are as they were. */
    assert_int_equal(harness_stat(h, "q", "queued"), 100);
    assert_int_equal(harness_stat(h, "q", "puts"), 100);
    assert_int_equal(harness_stat(h, "q", "dead"), 0);
    /* The port serves again once the abusers are gone. */
    char *body = malloc(1 << 20);
    assert_non_null(body);
    int64_t deadline = zclock_mono() + HARNESS_DEADLINE_MS;
    while (s_get(f, "/metrics", body, 1 << 20) != 200) {
        assert_true(zclock_mono() < deadline);
        zclock_sleep(50); /* its slots free as libmicrohttpd sees the closes */
    }
    assert_non_null(strstr(body, "asyncq_queue_items{queue=\"q\",state=\"queued\"} 100\n"));
    free(body);
    harness_assert_serving(h, "q2");
}

/*  The dashboard's action: with the token it requeues the dead items, and
    answers with how many (on a durable broker, once the journal has the
    change: the answer comes, so the wait ends). */
static void test_requeue_with_the_token_moves_dead_items_back(void **state)
{
    fixture_t *f = *state;
    harness_t *h = &f->h;
    harness_put_items(h, "d", 3);
    aq_status_t rc;
    aq_consumer_t *consumer = aq_consumer_new(h->address, "c", "d", 3, &rc);
    assert_non_null(consumer);
    /* Five deliveries each (the default --max-attempts), every one NACKed. */
    for (int i = 0; i < 15; i++) {
        aq_item_t item;
        assert_int_equal(aq_consumer_get(consumer, &item, HARNESS_DEADLINE_MS), AQ_OK);
        assert_int_equal(aq_consumer_nack(consumer, item.id, 0, "failed"), AQ_OK);
    }
    aq_consumer_destroy(&consumer);
    harness_wait_stat(h, "d", "dead", 3);
    char body[4096];
    assert_int_equal(s_request(f, "POST /api/requeue?queue=d HTTP/1.1\r\nHost: x\r\n"
                                  "Authorization: Bearer " TOKEN "\r\n"
                                  "Content-Length: 0\r\nConnection: close\r\n\r\n",
                               body, sizeof body),
                     200);
    assert_non_null(strstr(body, "\"requeued\":3"));
    assert_int_equal(harness_stat(h, "d", "dead"), 0);
    assert_int_equal(harness_stat(h, "d", "queued"), 3);
    assert_int_equal(s_get(f, "/stats.json", body, sizeof body), 200);
    assert_non_null(strstr(body, "\"name\":\"d\""));
    harness_assert_serving(h, "d2");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(
            test_bad_http_input_changes_nothing_and_does_not_stall_the_loop, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_requeue_with_the_token_moves_dead_items_back,
                                        s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_requeue_with_the_token_moves_dead_items_back,
                                        s_setup_durable, s_teardown),
    };
    return harness_run_group(tests);
}
