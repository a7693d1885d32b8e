/*  The HTTP port (--metrics) under bad input: unknown paths, wrong methods,
    actions without the token, huge headers, garbage, slow clients and 500
    idle connections change nothing in the queues and do not stall the
    broker's loop. Put-to-ack latency is measured with and without the
    abuse, for the record (a test never fails on timing).

    The dashboard's actions (POST /api/requeue, /api/reopen, /api/purge,
    /api/delete, /api/purge-dead) and its dead letters (GET /api/dead):
    each refused without the token (401), for a bad name (400), an unknown
    queue (404) and the wrong method (405), changing nothing, and each
    error test ends with a request that succeeds; each action's effect
    checked in the broker's stats, in memory and durable (answered once
    the journal has the change).

    One dead item (&id=N): viewed whole (its payload byte for byte, from
    base64), requeued alone and deleted alone; a bad id (400), an id that
    is not a dead item of the queue (404), no token (401) change nothing,
    nor does an id given to an action on the whole queue (400). */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
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
    temporary directory) if `durable`; with one delivery per item (a NACK
    kills it) if `one_attempt`. */
static int s_start(void **state, int durable, int one_attempt)
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
    char *flags[10] = {"--metrics", "127.0.0.1:0", "--metrics-token-file", f->token_path};
    int count = 4;
    if (one_attempt) {
        flags[count++] = "--max-attempts";
        flags[count++] = "1";
    }
    if (durable) {
        flags[count++] = "--data-dir";
        flags[count++] = f->data_dir;
    }
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
    return s_start(state, 0, 0);
}

static int s_setup_durable(void **state)
{
    return s_start(state, 1, 0);
}

static int s_setup_one_attempt(void **state)
{
    return s_start(state, 0, 1);
}

static int s_setup_one_attempt_durable(void **state)
{
    return s_start(state, 1, 1);
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
    /* The metric says why they died. */
    char *metrics = malloc(1 << 20);
    assert_non_null(metrics);
    assert_int_equal(s_get(f, "/metrics", metrics, 1 << 20), 200);
    assert_non_null(strstr(metrics, "asyncq_dead_lettered_total{queue=\"d\",cause=\"nack\"} 3\n"));
    assert_non_null(strstr(metrics, "asyncq_dead_lettered_total{queue=\"d\",cause=\"lease\"} 0\n"));
    assert_non_null(strstr(metrics, "asyncq_queue_paused{queue=\"d\"} 0\n"));
    /* A paused queue says so, in the metrics and the JSON. */
    aq_session_t *session = harness_session(h);
    assert_int_equal(aq_queue_action(session, "d", AQ_QUEUE_PAUSE, NULL, NULL), AQ_OK);
    aq_session_destroy(&session);
    assert_int_equal(s_get(f, "/metrics", metrics, 1 << 20), 200);
    assert_non_null(strstr(metrics, "asyncq_queue_paused{queue=\"d\"} 1\n"));
    assert_int_equal(s_get(f, "/stats.json", metrics, 1 << 20), 200);
    assert_non_null(strstr(metrics, "\"name\":\"d\",\"state\":\"open\",\"paused\":true"));
    session = harness_session(h);
    assert_int_equal(aq_queue_action(session, "d", AQ_QUEUE_RESUME, NULL, NULL), AQ_OK);
    aq_session_destroy(&session);
    free(metrics);
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

/*  POST `path` (with the token if `token`), its status; the body in
    `body` if given. */
static int s_post(const fixture_t *f, const char *path, const char *token, char *body,
                  size_t size)
{
    char request[1024];
    snprintf(request, sizeof request,
             "POST %s HTTP/1.1\r\nHost: x\r\n%s%s%sContent-Length: 0\r\n"
             "Connection: close\r\n\r\n",
             path, token ? "Authorization: Bearer " : "", token ? token : "", token ? "\r\n" : "");
    return s_request(f, request, body, size);
}

/*  GET `path` with the token. */
static int s_get_with_token(const fixture_t *f, const char *path, char *body, size_t size)
{
    char request[1024];
    snprintf(request, sizeof request,
             "GET %s HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " TOKEN "\r\n"
             "Connection: close\r\n\r\n",
             path);
    return s_request(f, request, body, size);
}

/*  The queue's stats line from the broker ("" if it has none: it does not
    exist). */
typedef struct {
    char line[1024];
    int lines;
} line_t;

static void s_keep_line(void *ctx, const char *text)
{
    line_t *line = ctx;
    snprintf(line->line, sizeof line->line, "%s", text);
    line->lines++;
}

static line_t s_stats_line(const harness_t *h, const char *queue)
{
    line_t line = {"", 0};
    aq_session_t *session = harness_session(h);
    assert_int_equal(aq_stats(session, queue, s_keep_line, &line), AQ_OK);
    aq_session_destroy(&session);
    return line;
}

/*  The queue's state word from its stats line ("open", "draining"...). */
static void s_assert_state(const harness_t *h, const char *queue, const char *state)
{
    line_t line = s_stats_line(h, queue);
    char want[64];
    snprintf(want, sizeof want, " state=%s", state);
    if (!strstr(line.line, want))
        fail_msg("%s: expected%s in '%s'", queue, want, line.line);
}

/*  One put of `data` to `queue`, and its sync: AQ_OK, or AQ_REFUSED (a
    shut-down queue). */
static aq_status_t s_put(const harness_t *h, const char *queue, const void *data, size_t size)
{
    aq_status_t rc;
    aq_producer_t *producer = aq_producer_new(h->address, "http-test", &rc);
    assert_non_null(producer);
    assert_int_equal(aq_producer_put(producer, queue, data, size), AQ_OK);
    rc = aq_producer_sync(producer, HARNESS_DEADLINE_MS);
    aq_producer_destroy(&producer);
    return rc;
}

/*  Gets and NACKs `queue`'s items, with `reason`, until `count` are dead. */
static void s_kill_items(const harness_t *h, const char *queue, uint64_t count, const char *reason)
{
    aq_status_t rc;
    aq_consumer_t *consumer = aq_consumer_new(h->address, "killer", queue, 8, &rc);
    assert_non_null(consumer);
    int64_t deadline = zclock_mono() + HARNESS_DEADLINE_MS;
    while (harness_stat(h, queue, "dead") < count) {
        assert_true(zclock_mono() < deadline);
        aq_item_t item;
        if (aq_consumer_get(consumer, &item, 100) == AQ_OK)
            assert_int_equal(aq_consumer_nack(consumer, item.id, 0, reason), AQ_OK);
        else
            assert_int_equal(aq_consumer_flush(consumer), AQ_OK);
    }
    aq_consumer_destroy(&consumer);
}

/*  A queue that every error below must leave as it is: 4 queued, 2 dead,
    shut down (draining). */
static void s_make_target(const harness_t *h)
{
    harness_put_items(h, "t", 2);
    s_kill_items(h, "t", 2, "failed");
    harness_put_items(h, "t", 4);
    aq_session_t *session = harness_session(h);
    assert_int_equal(aq_shutdown(session, "t", AQ_SHUTDOWN_DRAIN, NULL, NULL), AQ_OK);
    aq_session_destroy(&session);
}

static void s_assert_target_unchanged(const harness_t *h)
{
    assert_int_equal(harness_stat(h, "t", "queued"), 4);
    assert_int_equal(harness_stat(h, "t", "dead"), 2);
    assert_int_equal(harness_stat(h, "t", "discarded"), 0);
    s_assert_state(h, "t", "draining");
}

static const char *const s_actions[] = {"requeue", "reopen", "purge", "delete", "purge-dead"};
#define ACTIONS (sizeof s_actions / sizeof *s_actions)

/*  Every action and /api/dead: 405 for the wrong method (with Allow),
    401 without the token or with a wrong one, 400 without a name or with
    a bad one, 404 for a queue the broker does not have; none changes the
    queue. Then each with everything right succeeds. */
static void test_actions_refuse_bad_requests_and_change_nothing(void **state)
{
    fixture_t *f = *state;
    harness_t *h = &f->h;
    s_make_target(h);
    char body[4096], path[256];
    for (size_t i = 0; i < ACTIONS; i++) {
        snprintf(path, sizeof path, "/api/%s?queue=t", s_actions[i]);
        char request[512];
        snprintf(request, sizeof request, "GET %s HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
                 TOKEN "\r\nConnection: close\r\n\r\n", path);
        assert_int_equal(s_request(f, request, body, sizeof body), 405);
        assert_non_null(strstr(body, "POST only"));
        int fd = s_connect(f); /* the Allow header names POST */
        s_send_all(fd, request, strlen(request));
        static char answer[8192];
        s_read_all(fd, answer, sizeof answer);
        close(fd);
        assert_non_null(strstr(answer, "\r\nAllow: POST\r\n"));
        assert_int_equal(s_post(f, path, NULL, body, sizeof body), 401);
        assert_non_null(strstr(body, "token"));
        assert_int_equal(s_post(f, path, "0123456789abcdef0123456789abcdeX", NULL, 0), 401);
        assert_int_equal(s_post(f, path, "Bearer", NULL, 0), 401);
        snprintf(path, sizeof path, "/api/%s", s_actions[i]);
        assert_int_equal(s_post(f, path, TOKEN, body, sizeof body), 400);
        assert_non_null(strstr(body, "queue=NAME"));
        snprintf(path, sizeof path, "/api/%s?queue=", s_actions[i]);
        assert_int_equal(s_post(f, path, TOKEN, NULL, 0), 400);
        snprintf(path, sizeof path, "/api/%s?queue=a%%20b", s_actions[i]);
        assert_int_equal(s_post(f, path, TOKEN, NULL, 0), 400);
        snprintf(path, sizeof path, "/api/%s?queue=%%2e%%2e%%2f", s_actions[i]);
        assert_int_equal(s_post(f, path, TOKEN, NULL, 0), 400);
        snprintf(path, sizeof path, "/api/%s?queue=nope", s_actions[i]);
        assert_int_equal(s_post(f, path, TOKEN, body, sizeof body), 404);
        assert_non_null(strstr(body, "no such queue"));
        s_assert_target_unchanged(h);
    }
    /* /api/dead: GET only, and behind the token too. */
    assert_int_equal(s_post(f, "/api/dead?queue=t", TOKEN, body, sizeof body), 405);
    assert_non_null(strstr(body, "GET only"));
    assert_int_equal(s_get(f, "/api/dead?queue=t", body, sizeof body), 401);
    assert_null(strstr(body, "\"items\""));
    assert_int_equal(s_get_with_token(f, "/api/dead", NULL, 0), 400);
    assert_int_equal(s_get_with_token(f, "/api/dead?queue=a/b", NULL, 0), 400);
    assert_int_equal(s_get_with_token(f, "/api/dead?queue=nope", NULL, 0), 404);
    assert_int_equal(s_get(f, "/api/nope", NULL, 0), 404);
    /* None made a queue. */
    assert_int_equal(s_stats_line(h, "nope").lines, 0);
    s_assert_target_unchanged(h);

    /* And with everything right, each succeeds. */
    assert_int_equal(s_get_with_token(f, "/api/dead?queue=t", body, sizeof body), 200);
    assert_non_null(strstr(body, "\"dead\":2"));
    assert_int_equal(s_post(f, "/api/reopen?queue=t", TOKEN, body, sizeof body), 200);
    assert_non_null(strstr(body, "\"state\":\"open\""));
    assert_int_equal(s_post(f, "/api/requeue?queue=t", TOKEN, body, sizeof body), 200);
    assert_non_null(strstr(body, "\"requeued\":2"));
    assert_int_equal(s_post(f, "/api/purge-dead?queue=t", TOKEN, body, sizeof body), 200);
    assert_non_null(strstr(body, "\"purged_dead\":0"));
    assert_int_equal(s_post(f, "/api/purge?queue=t", TOKEN, body, sizeof body), 200);
    assert_non_null(strstr(body, "\"purged\":6"));
    assert_int_equal(s_post(f, "/api/delete?queue=t", TOKEN, body, sizeof body), 200);
    assert_non_null(strstr(body, "\"deleted\":0"));
    harness_assert_serving(h, "t");
}

/*  Reopen: a queue shut down (draining, then discarding) takes puts again;
    an open one is answered as it is. */
static void test_reopen_makes_a_shut_down_queue_take_puts_again(void **state)
{
    fixture_t *f = *state;
    harness_t *h = &f->h;
    harness_put_items(h, "r", 3);
    aq_session_t *session = harness_session(h);
    assert_int_equal(aq_shutdown(session, "r", AQ_SHUTDOWN_DRAIN, NULL, NULL), AQ_OK);
    assert_int_equal(s_put(h, "r", "late", 4), AQ_REFUSED);
    s_assert_state(h, "r", "draining");
    char body[4096];
    assert_int_equal(s_post(f, "/api/reopen?queue=r", TOKEN, body, sizeof body), 200);
    assert_non_null(strstr(body, "\"queue\":\"r\""));
    assert_non_null(strstr(body, "\"state\":\"open\""));
    assert_non_null(strstr(body, "\"was\":\"draining\""));
    assert_non_null(strstr(body, "\"queued\":3"));
    s_assert_state(h, "r", "open");
    assert_int_equal(s_put(h, "r", "again", 5), AQ_OK);
    assert_int_equal(harness_stat(h, "r", "queued"), 4);

    /* An open queue: answered as it is, nothing changed. */
    assert_int_equal(s_post(f, "/api/reopen?queue=r", TOKEN, body, sizeof body), 200);
    assert_non_null(strstr(body, "\"was\":\"open\""));
    assert_non_null(strstr(body, "\"queued\":4"));

    /* Shut down at once (its items discarded), then reopened. */
    assert_int_equal(aq_shutdown(session, "r", AQ_SHUTDOWN_IMMEDIATE, NULL, NULL), AQ_OK);
    assert_int_equal(harness_stat(h, "r", "queued"), 0);
    assert_int_equal(s_post(f, "/api/reopen?queue=r", TOKEN, body, sizeof body), 200);
    assert_non_null(strstr(body, "\"was\":\"discarding\""));
    assert_non_null(strstr(body, "\"queued\":0"));
    s_assert_state(h, "r", "open");
    aq_session_destroy(&session);
    harness_assert_serving(h, "r");
}

/*  Purge: queued items discarded, the one in flight kept; the queue stays
    open. */
static void test_purge_discards_queued_items_and_keeps_those_in_flight(void **state)
{
    fixture_t *f = *state;
    harness_t *h = &f->h;
    harness_put_items(h, "p", 10);
    aq_status_t rc;
    aq_consumer_t *consumer = aq_consumer_new(h->address, "holder", "p", 1, &rc);
    assert_non_null(consumer);
    aq_item_t held;
    assert_int_equal(aq_consumer_get(consumer, &held, HARNESS_DEADLINE_MS), AQ_OK);
    harness_wait_stat(h, "p", "inflight", 1);
    char body[4096];
    assert_int_equal(s_post(f, "/api/purge?queue=p", TOKEN, body, sizeof body), 200);
    assert_non_null(strstr(body, "\"queue\":\"p\""));
    assert_non_null(strstr(body, "\"purged\":9"));
    assert_int_equal(harness_stat(h, "p", "queued"), 0);
    assert_int_equal(harness_stat(h, "p", "inflight"), 1);
    assert_int_equal(harness_stat(h, "p", "discarded"), 9);
    s_assert_state(h, "p", "open");
    aq_consumer_ack(consumer, held.id);
    assert_int_equal(aq_consumer_flush(consumer), AQ_OK);
    aq_consumer_destroy(&consumer);
    harness_wait_stat(h, "p", "acked", 1);
    /* Nothing outstanding: a join is answered at once. */
    aq_session_t *session = harness_session(h);
    aq_join_result_t result;
    assert_int_equal(aq_join(session, "p", HARNESS_DEADLINE_MS, AQ_JOIN_ALL, &result), AQ_OK);
    aq_session_destroy(&session);
    /* An empty queue: nothing purged. */
    assert_int_equal(s_post(f, "/api/purge?queue=p", TOKEN, body, sizeof body), 200);
    assert_non_null(strstr(body, "\"purged\":0"));
    harness_assert_serving(h, "p");
}

/*  Delete: everything discarded, dead items too, and the queue forgotten;
    a put then makes a new, empty, open queue. */
static void test_delete_forgets_the_queue_and_a_put_makes_a_fresh_one(void **state)
{
    fixture_t *f = *state;
    harness_t *h = &f->h;
    harness_put_items(h, "x", 2);
    s_kill_items(h, "x", 2, "bad");
    harness_put_items(h, "x", 5);
    /* One in flight, with its consumer. */
    aq_status_t rc;
    aq_consumer_t *consumer = aq_consumer_new(h->address, "holder", "x", 1, &rc);
    assert_non_null(consumer);
    aq_item_t held;
    assert_int_equal(aq_consumer_get(consumer, &held, HARNESS_DEADLINE_MS), AQ_OK);
    harness_wait_stat(h, "x", "inflight", 1);
    aq_session_t *session = harness_session(h);
    assert_int_equal(aq_shutdown(session, "x", AQ_SHUTDOWN_DRAIN, NULL, NULL), AQ_OK);
    aq_session_destroy(&session);
    char body[1 << 16];
    assert_int_equal(s_post(f, "/api/delete?queue=x", TOKEN, body, sizeof body), 200);
    assert_non_null(strstr(body, "\"queue\":\"x\""));
    assert_non_null(strstr(body, "\"deleted\":7"));
    /* Its consumer hears the queue is shut down (PROTOCOL.md 4.13). */
    aq_item_t none;
    assert_int_equal(aq_consumer_get(consumer, &none, HARNESS_DEADLINE_MS), AQ_SHUT_DOWN);
    aq_consumer_destroy(&consumer);
    assert_int_equal(s_stats_line(h, "x").lines, 0);
    assert_int_equal(s_get(f, "/stats.json", body, sizeof body), 200);
    assert_null(strstr(body, "\"name\":\"x\""));
    /* Gone: the actions find no queue. */
    assert_int_equal(s_post(f, "/api/delete?queue=x", TOKEN, NULL, 0), 404);
    assert_int_equal(s_get_with_token(f, "/api/dead?queue=x", NULL, 0), 404);
    /* A put makes it again: open, empty but for that put, no dead. */
    assert_int_equal(s_put(h, "x", "fresh", 5), AQ_OK);
    line_t line = s_stats_line(h, "x");
    assert_int_equal(line.lines, 1);
    assert_non_null(strstr(line.line, " state=open"));
    assert_int_equal(harness_stat(h, "x", "queued"), 1);
    assert_int_equal(harness_stat(h, "x", "puts"), 1);
    assert_int_equal(harness_stat(h, "x", "dead"), 0);
    assert_int_equal(harness_stat(h, "x", "discarded"), 0);
    harness_assert_serving(h, "x2");
}

/*  Purge-dead deletes the dead items only; requeue then has none. */
static void test_purge_dead_deletes_the_dead_items(void **state)
{
    fixture_t *f = *state;
    harness_t *h = &f->h;
    harness_put_items(h, "d", 3);
    s_kill_items(h, "d", 3, "bad");
    harness_put_items(h, "d", 2);
    char body[4096];
    assert_int_equal(s_post(f, "/api/purge-dead?queue=d", TOKEN, body, sizeof body), 200);
    assert_non_null(strstr(body, "\"queue\":\"d\""));
    assert_non_null(strstr(body, "\"purged_dead\":3"));
    assert_int_equal(harness_stat(h, "d", "dead"), 0);
    assert_int_equal(harness_stat(h, "d", "queued"), 2);
    assert_int_equal(s_post(f, "/api/requeue?queue=d", TOKEN, body, sizeof body), 200);
    assert_non_null(strstr(body, "\"requeued\":0"));
    assert_int_equal(harness_stat(h, "d", "queued"), 2);
    harness_assert_serving(h, "d2");
}

/*  /api/dead: the dead items, oldest death first, with why they died and
    the start of their payload (escaped); at most 100. */
static void test_dead_lists_items_with_cause_reason_and_payload(void **state)
{
    fixture_t *f = *state;
    harness_t *h = &f->h;
    char big[100];
    memset(big, 'b', sizeof big);
    const struct {
        const char *data;
        size_t size;
    } payloads[] = {{"hello \"world\"", 13}, {"\x00\xff\\z\n", 5}, {"caf\xc3\xa9", 5},
                    {big, sizeof big}};
    /* One at a time, so their deaths come in this order. */
    for (uint64_t i = 0; i < 4; i++) {
        assert_int_equal(s_put(h, "dl", payloads[i].data, payloads[i].size), AQ_OK);
        s_kill_items(h, "dl", i + 1, i == 1 ? "exit 3\n\x01" : "exit 3");
    }
    char *body = malloc(1 << 18);
    assert_non_null(body);
    assert_int_equal(s_get_with_token(f, "/api/dead?queue=dl", body, 1 << 18), 200);
    printf("    %.400s...\n", body);
    assert_non_null(strstr(body, "{\"queue\":\"dl\",\"state\":\"open\",\"dead\":4,\"items\":[{\"id\":\""));
    const char *first = strstr(body, "\"payload_preview\":\"hello \\\"world\\\"\"");
    const char *second = strstr(body, "\"payload_preview\":\"\\\\x00\\\\xff\\\\\\\\z\\\\n\"");
    const char *third = strstr(body, "\"payload_preview\":\"caf\xc3\xa9\"");
    char want[200];
    snprintf(want, sizeof want, "\"size\":100,\"died\":\"");
    const char *fourth = strstr(body, want);
    assert_non_null(first);
    assert_non_null(second);
    assert_non_null(third);
    assert_non_null(fourth);
    assert_true(first < second && second < third && third < fourth);
    snprintf(want, sizeof want, "\"payload_preview\":\"%.64s\",\"payload_cut\":true", big);
    assert_non_null(strstr(body, want));
    assert_non_null(strstr(body, "\"attempts\":1,\"size\":13,\"died\":\"20"));
    assert_non_null(strstr(body, "Z\",\"cause\":\"nack\",\"reason\":\"exit 3\",\"payload_preview\""));
    assert_non_null(strstr(body, "\"reason\":\"exit 3\\\\n\\\\x01\""));
    assert_non_null(strstr(body, "\"payload_cut\":false"));

    /* More than 100: the oldest 100. */
    harness_put_items(h, "many", 120);
    s_kill_items(h, "many", 120, "x");
    assert_int_equal(s_get_with_token(f, "/api/dead?queue=many", body, 1 << 18), 200);
    assert_non_null(strstr(body, "\"dead\":120"));
    int items = 0;
    for (const char *at = body; (at = strstr(at, "\"id\":\"")); at++)
        items++;
    assert_int_equal(items, 100);
    /* An empty list. */
    harness_put_items(h, "none", 1);
    assert_int_equal(s_get_with_token(f, "/api/dead?queue=none", body, 1 << 18), 200);
    assert_non_null(strstr(body, "\"dead\":0,\"items\":[]"));
    free(body);
    harness_assert_serving(h, "dl");
}

/*  The ids of the queue's dead items, as /api/dead lists them (oldest
    death first), into `ids`; how many. */
typedef char item_id_t[24];

static size_t s_dead_ids(const fixture_t *f, const char *queue, item_id_t *ids, size_t max)
{
    char path[128];
    snprintf(path, sizeof path, "/api/dead?queue=%s", queue);
    char *body = malloc(1 << 18);
    assert_non_null(body);
    assert_int_equal(s_get_with_token(f, path, body, 1 << 18), 200);
    size_t count = 0;
    /* A payload's `"` is escaped: the pattern is found in ids only. */
    for (const char *at = body; (at = strstr(at, "\"id\":\"")); count++) {
        at += 6;
        size_t length = strspn(at, "0123456789");
        assert_true(length > 0 && length < sizeof *ids && at[length] == '"');
        assert_true(count < max);
        snprintf(ids[count], sizeof *ids, "%.*s", (int) length, at);
    }
    free(body);
    return count;
}

/*  The value of a string member of a JSON text that has no escapes in it
    (an id, base64), into `out`; fails the test if it is not there. */
static void s_member(const char *body, const char *key, char *out, size_t size)
{
    char want[64];
    snprintf(want, sizeof want, "\"%s\":\"", key);
    const char *at = strstr(body, want);
    if (!at)
        fail_msg("no \"%s\" in %.300s", key, body);
    at += strlen(want);
    const char *end = strchr(at, '"');
    assert_non_null(end);
    assert_true((size_t) (end - at) < size);
    memcpy(out, at, (size_t) (end - at));
    out[end - at] = '\0';
}

/*  GET /api/dead?queue=QUEUE&id=ID: 200, the item whole, whose base64
    payload decodes to exactly `data`; the answer in `body`. */
static void s_assert_item(const fixture_t *f, const char *queue, const char *id,
                          const void *data, size_t size, char *body, size_t body_size)
{
    char path[256];
    snprintf(path, sizeof path, "/api/dead?queue=%s&id=%s", queue, id);
    assert_int_equal(s_get_with_token(f, path, body, body_size), 200);
    char want[256];
    snprintf(want, sizeof want, "{\"queue\":\"%s\",\"item\":{\"id\":\"%s\",\"attempts\":1,"
             "\"size\":%zu,\"died\":\"20", queue, id, size);
    if (strncmp(body, want, strlen(want)) != 0)
        fail_msg("expected %s... in %.300s", want, body);
    assert_non_null(strstr(body, "\"payload\":\""));
    size_t room = size * 2 + 8;
    char *base64 = malloc(room);
    assert_non_null(base64);
    s_member(body, "payload_base64", base64, room);
    assert_int_equal(strlen(base64) % 4, 0); /* padded */
    assert_int_equal(strlen(base64), (size + 2) / 3 * 4);
    zarmour_t *armour = zarmour_new();
    assert_non_null(armour);
    zarmour_set_mode(armour, ZARMOUR_MODE_BASE64_STD);
    zarmour_set_line_breaks(armour, false);
    zchunk_t *chunk = zarmour_decode(armour, base64);
    assert_non_null(chunk);
    /* zarmour_decode's chunk ends in a NUL of its own, counted in its size. */
    assert_int_equal(zchunk_size(chunk), size + 1);
    if (size)
        assert_memory_equal(zchunk_data(chunk), data, size);
    zchunk_destroy(&chunk);
    zarmour_destroy(&armour);
    free(base64);
}

/*  One dead item: viewed whole (bytes, text, an empty one), requeued alone
    (the others stay dead; it is delivered), deleted alone; once gone, each
    is 404. On a durable broker the answers wait for the journal. */
static void test_one_dead_item_viewed_requeued_and_deleted(void **state)
{
    fixture_t *f = *state;
    harness_t *h = &f->h;
    uint8_t binary[300];
    for (size_t i = 0; i < sizeof binary; i++)
        binary[i] = (uint8_t) (i * 37 + 11); /* every byte value, 0 and 0xff too */
    char text[101];
    snprintf(text, sizeof text, "line one\nline \"two\" caf\xc3\xa9 \\ end%069d", 0);
    memset(text + 31, 'x', 69);
    const struct {
        const void *data;
        size_t size;
    } payloads[] = {{binary, sizeof binary}, {text, 100}, {"", 0}, {"requeue me", 10},
                    {"delete me", 9}};
    enum { A, B, EMPTY, REQUEUED, DELETED, ITEMS };
    for (uint64_t i = 0; i < ITEMS; i++) { /* one at a time: they die in this order */
        assert_int_equal(s_put(h, "v", payloads[i].data, payloads[i].size), AQ_OK);
        s_kill_items(h, "v", i + 1, "why");
    }
    harness_put_items(h, "v", 2); /* queued, untouched throughout */
    item_id_t ids[8];
    assert_int_equal(s_dead_ids(f, "v", ids, 8), ITEMS);
    char *body = malloc(1 << 18);
    assert_non_null(body);

    /* Viewed whole: the bytes, whatever they are. */
    s_assert_item(f, "v", ids[A], binary, sizeof binary, body, 1 << 18);
    assert_non_null(strstr(body, "\"cause\":\"nack\",\"reason\":\"why\",\"payload_preview\":\""));
    assert_non_null(strstr(body, "\"payload_cut\":true,\"payload\":\""));
    printf("    %.200s...\n", body);
    /* Text: whole where the preview stops at 64 bytes; escaped as it is. */
    s_assert_item(f, "v", ids[B], text, 100, body, 1 << 18);
    char want[400];
    snprintf(want, sizeof want,
             "\"payload_preview\":\"line one\\\\nline \\\"two\\\" caf\xc3\xa9 \\\\\\\\ end%.33s\","
             "\"payload_cut\":true,"
             "\"payload\":\"line one\\\\nline \\\"two\\\" caf\xc3\xa9 \\\\\\\\ end%s\",",
             text + 31, text + 31);
    if (!strstr(body, want))
        fail_msg("expected %s in %s", want, body);
    s_assert_item(f, "v", ids[EMPTY], "", 0, body, 1 << 18);
    assert_non_null(
        strstr(body, "\"payload_cut\":false,\"payload\":\"\",\"payload_base64\":\"\"}}"));

    /* Requeued alone: the others stay dead, it is queued and delivered. */
    char path[256];
    snprintf(path, sizeof path, "/api/requeue?queue=v&id=%s", ids[REQUEUED]);
    assert_int_equal(s_post(f, path, TOKEN, body, 1 << 18), 200);
    snprintf(want, sizeof want, "{\"queue\":\"v\",\"requeued\":1,\"id\":\"%s\"}", ids[REQUEUED]);
    assert_string_equal(body, want);
    assert_int_equal(harness_stat(h, "v", "dead"), ITEMS - 1);
    assert_int_equal(harness_stat(h, "v", "queued"), 3);
    item_id_t left[8];
    assert_int_equal(s_dead_ids(f, "v", left, 8), ITEMS - 1);
    assert_string_equal(left[0], ids[A]);
    assert_string_equal(left[1], ids[B]);
    assert_string_equal(left[2], ids[EMPTY]);
    assert_string_equal(left[3], ids[DELETED]);
    snprintf(path, sizeof path, "/api/dead?queue=v&id=%s", ids[REQUEUED]);
    assert_int_equal(s_get_with_token(f, path, body, 1 << 18), 404);
    assert_non_null(strstr(body, ids[REQUEUED]));
    /* Again: no longer dead, nothing changes. */
    snprintf(path, sizeof path, "/api/requeue?queue=v&id=%s", ids[REQUEUED]);
    assert_int_equal(s_post(f, path, TOKEN, body, 1 << 18), 404);
    assert_int_equal(harness_stat(h, "v", "queued"), 3);

    /* Deleted alone. */
    snprintf(path, sizeof path, "/api/purge-dead?queue=v&id=%s", ids[DELETED]);
    assert_int_equal(s_post(f, path, TOKEN, body, 1 << 18), 200);
    snprintf(want, sizeof want, "{\"queue\":\"v\",\"purged_dead\":1,\"id\":\"%s\"}", ids[DELETED]);
    assert_string_equal(body, want);
    assert_int_equal(harness_stat(h, "v", "dead"), ITEMS - 2);
    assert_int_equal(harness_stat(h, "v", "queued"), 3);
    assert_int_equal(s_dead_ids(f, "v", left, 8), ITEMS - 2);
    assert_string_equal(left[0], ids[A]);
    assert_string_equal(left[1], ids[B]);
    assert_string_equal(left[2], ids[EMPTY]);
    assert_int_equal(s_post(f, path, TOKEN, body, 1 << 18), 404);
    assert_non_null(strstr(body, ids[DELETED]));
    snprintf(path, sizeof path, "/api/dead?queue=v&id=%s", ids[DELETED]);
    assert_int_equal(s_get_with_token(f, path, body, 1 << 18), 404);
    assert_int_equal(harness_stat(h, "v", "dead"), ITEMS - 2);

    /* The requeued item is delivered: the two queued before it, then it. */
    aq_status_t rc;
    aq_consumer_t *consumer = aq_consumer_new(h->address, "taker", "v", 1, &rc);
    assert_non_null(consumer);
    for (int i = 0; i < 3; i++) {
        aq_item_t item;
        assert_int_equal(aq_consumer_get(consumer, &item, HARNESS_DEADLINE_MS), AQ_OK);
        if (i < 2)
            assert_memory_equal(item.data, "item", 4);
        else {
            assert_int_equal(item.size, 10);
            assert_memory_equal(item.data, "requeue me", 10);
        }
        aq_consumer_ack(consumer, item.id);
    }
    assert_int_equal(aq_consumer_flush(consumer), AQ_OK);
    aq_consumer_destroy(&consumer);
    harness_wait_stat(h, "v", "acked", 3);
    assert_int_equal(harness_stat(h, "v", "dead"), ITEMS - 2);
    /* What is left is still there, whole. */
    s_assert_item(f, "v", ids[A], binary, sizeof binary, body, 1 << 18);
    free(body);
    harness_assert_serving(h, "v2");
}

/*  One dead item, asked for wrongly: without the token (401), with an id
    that is none (400), one that is not a dead item of the queue (404,
    naming it), an id for an action on the whole queue (400); nothing
    changes. Then each with everything right succeeds. */
static void test_one_dead_item_refuses_bad_requests_and_changes_nothing(void **state)
{
    fixture_t *f = *state;
    harness_t *h = &f->h;
    s_make_target(h); /* t: 4 queued, 2 dead, draining */
    item_id_t dead[4], other[2];
    assert_int_equal(s_dead_ids(f, "t", dead, 4), 2);
    /* A dead item of another queue, and an item in flight. */
    harness_put_items(h, "o", 1);
    s_kill_items(h, "o", 1, "other");
    assert_int_equal(s_dead_ids(f, "o", other, 2), 1);
    harness_put_items(h, "held", 1);
    aq_status_t rc;
    aq_consumer_t *holder = aq_consumer_new(h->address, "holder", "held", 1, &rc);
    assert_non_null(holder);
    aq_item_t held;
    assert_int_equal(aq_consumer_get(holder, &held, HARNESS_DEADLINE_MS), AQ_OK);
    harness_wait_stat(h, "held", "inflight", 1);

    static const struct {
        const char *method, *path;
    } targets[] = {{"GET", "/api/dead"}, {"POST", "/api/requeue"}, {"POST", "/api/purge-dead"}};
    static const char *const bad_ids[] = {
        "id=abc", "id=", "id", "id=-1", "id=1.5", "id=0x10", "id=%2B5", "id=%205", "id=5%20",
        "id=18446744073709551616", "id=123456789012345678901", "id=1&id=2"};
    char body[4096], path[256], request[1024];
    for (size_t i = 0; i < sizeof targets / sizeof *targets; i++) {
        int get = targets[i].method[0] == 'G';
        /* Without the token, or with a wrong one: 401, whatever the id. */
        snprintf(path, sizeof path, "%s?queue=t&id=%s", targets[i].path, dead[0]);
        snprintf(request, sizeof request,
                 "%s %s HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                 targets[i].method, path);
        assert_int_equal(s_request(f, request, body, sizeof body), 401);
        assert_non_null(strstr(body, "token"));
        assert_null(strstr(body, "payload"));
        snprintf(request, sizeof request,
                 "%s %s HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
                 "0123456789abcdef0123456789abcdeX\r\nContent-Length: 0\r\n"
                 "Connection: close\r\n\r\n",
                 targets[i].method, path);
        assert_int_equal(s_request(f, request, NULL, 0), 401);
        snprintf(path, sizeof path, "%s?queue=t&id=abc", targets[i].path);
        assert_int_equal(get ? s_get(f, path, NULL, 0) : s_post(f, path, NULL, NULL, 0), 401);
        /* The wrong method: 405. */
        snprintf(path, sizeof path, "%s?queue=t&id=%s", targets[i].path, dead[0]);
        assert_int_equal(get ? s_post(f, path, TOKEN, NULL, 0) : s_get_with_token(f, path, NULL, 0),
                         405);
        /* Not an id: 400. */
        for (size_t j = 0; j < sizeof bad_ids / sizeof *bad_ids; j++) {
            snprintf(path, sizeof path, "%s?queue=t&%s", targets[i].path, bad_ids[j]);
            int status = get ? s_get_with_token(f, path, body, sizeof body)
                             : s_post(f, path, TOKEN, body, sizeof body);
            if (status != 400)
                fail_msg("%s %s: %d, not 400 (%s)", targets[i].method, path, status, body);
            assert_non_null(strstr(body, "id"));
        }
        /* Not a dead item of t: 404 naming the id. */
        const char *not_dead[] = {"987654321012", "0", other[0]};
        for (size_t j = 0; j < 3; j++) {
            snprintf(path, sizeof path, "%s?queue=t&id=%s", targets[i].path, not_dead[j]);
            int status = get ? s_get_with_token(f, path, body, sizeof body)
                             : s_post(f, path, TOKEN, body, sizeof body);
            if (status != 404 || !strstr(body, not_dead[j]))
                fail_msg("%s %s: %d %s, not 404 naming the id", targets[i].method, path, status,
                         body);
        }
        snprintf(path, sizeof path, "%s?queue=held&id=%llu", targets[i].path,
                 (unsigned long long) held.id);
        assert_int_equal(get ? s_get_with_token(f, path, body, sizeof body)
                             : s_post(f, path, TOKEN, body, sizeof body),
                         404);
        assert_non_null(strstr(body, "is not a dead item"));
        /* An unknown queue, or no name: as without an id. */
        snprintf(path, sizeof path, "%s?queue=nope&id=%s", targets[i].path, dead[0]);
        assert_int_equal(get ? s_get_with_token(f, path, body, sizeof body)
                             : s_post(f, path, TOKEN, body, sizeof body),
                         404);
        assert_non_null(strstr(body, "no such queue"));
        snprintf(path, sizeof path, "%s?id=%s", targets[i].path, dead[0]);
        assert_int_equal(get ? s_get_with_token(f, path, NULL, 0) : s_post(f, path, TOKEN, NULL, 0),
                         400);
        s_assert_target_unchanged(h);
        assert_int_equal(harness_stat(h, "o", "dead"), 1);
        assert_int_equal(harness_stat(h, "held", "inflight"), 1);
        item_id_t still[4];
        assert_int_equal(s_dead_ids(f, "t", still, 4), 2);
        assert_string_equal(still[0], dead[0]);
        assert_string_equal(still[1], dead[1]);
    }
    /* The actions on the whole queue take no id: 400, nothing done. */
    for (size_t i = 0; i < 3; i++) {
        static const char *const whole[] = {"reopen", "purge", "delete"};
        snprintf(path, sizeof path, "/api/%s?queue=t&id=%s", whole[i], dead[0]);
        assert_int_equal(s_post(f, path, TOKEN, body, sizeof body), 400);
        assert_non_null(strstr(body, "no id"));
        s_assert_target_unchanged(h);
    }
    aq_consumer_destroy(&holder);

    /* And with everything right, each succeeds, on that item only. */
    snprintf(path, sizeof path, "/api/dead?queue=t&id=%s", dead[0]);
    assert_int_equal(s_get_with_token(f, path, body, sizeof body), 200);
    assert_non_null(strstr(body, "\"payload\":\"item\",\"payload_base64\":\"aXRlbQ==\""));
    snprintf(path, sizeof path, "/api/requeue?queue=t&id=%s", dead[0]);
    assert_int_equal(s_post(f, path, TOKEN, body, sizeof body), 200);
    assert_non_null(strstr(body, "\"requeued\":1"));
    assert_int_equal(harness_stat(h, "t", "dead"), 1);
    assert_int_equal(harness_stat(h, "t", "queued"), 5);
    snprintf(path, sizeof path, "/api/purge-dead?queue=t&id=%s", dead[1]);
    assert_int_equal(s_post(f, path, TOKEN, body, sizeof body), 200);
    assert_non_null(strstr(body, "\"purged_dead\":1"));
    assert_int_equal(harness_stat(h, "t", "dead"), 0);
    assert_int_equal(harness_stat(h, "t", "queued"), 5);
    assert_int_equal(harness_stat(h, "o", "dead"), 1);
    harness_assert_serving(h, "o");
}

/*  After a SHUTDOWN of every queue, one queue reopens (the others stay
    shut down); 503 only while the broker stops on a signal (below). */
static void test_one_queue_reopens_after_every_queue_was_shut_down(void **state)
{
    fixture_t *f = *state;
    harness_t *h = &f->h;
    harness_put_items(h, "s", 3);
    harness_put_items(h, "t", 1);
    aq_session_t *session = harness_session(h);
    assert_int_equal(aq_shutdown(session, NULL, AQ_SHUTDOWN_DRAIN, NULL, NULL), AQ_OK);
    aq_session_destroy(&session);
    char body[4096];
    assert_int_equal(s_post(f, "/api/reopen?queue=s", TOKEN, body, sizeof body), 200);
    s_assert_state(h, "s", "open");
    s_assert_state(h, "t", "draining");
    assert_int_equal(s_post(f, "/api/purge?queue=s", TOKEN, body, sizeof body), 200);
    assert_non_null(strstr(body, "\"purged\":3"));
}

static void test_reopen_refused_while_the_broker_stops(void **state)
{
    fixture_t *f = *state;
    harness_t *h = &f->h;
    harness_put_items(h, "s", 3); /* nobody takes them: the drain waits */
    kill(h->broker.pid, SIGTERM);
    char body[4096];
    int64_t deadline = zclock_mono() + HARNESS_DEADLINE_MS;
    while (s_get(f, "/stats.json", body, sizeof body) != 200
           || !strstr(body, "\"name\":\"s\",\"state\":\"draining\"")) {
        assert_true(zclock_mono() < deadline);
        zclock_sleep(20);
    }
    assert_int_equal(s_post(f, "/api/reopen?queue=s", TOKEN, body, sizeof body), 503);
    assert_non_null(strstr(body, "\"error\":\"the broker is stopping"));
    assert_int_equal(s_get(f, "/stats.json", body, sizeof body), 200);
    assert_non_null(strstr(body, "\"name\":\"s\",\"state\":\"draining\",\"paused\":false,\"queued\":3"));
    assert_int_equal(s_get_with_token(f, "/api/dead?queue=s", body, sizeof body), 200);
    assert_non_null(strstr(body, "\"state\":\"draining\",\"dead\":0"));
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
        cmocka_unit_test_setup_teardown(test_actions_refuse_bad_requests_and_change_nothing,
                                        s_setup_one_attempt, s_teardown),
        cmocka_unit_test_setup_teardown(test_reopen_makes_a_shut_down_queue_take_puts_again,
                                        s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_reopen_makes_a_shut_down_queue_take_puts_again,
                                        s_setup_durable, s_teardown),
        cmocka_unit_test_setup_teardown(
            test_purge_discards_queued_items_and_keeps_those_in_flight, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(
            test_purge_discards_queued_items_and_keeps_those_in_flight, s_setup_durable,
            s_teardown),
        cmocka_unit_test_setup_teardown(
            test_delete_forgets_the_queue_and_a_put_makes_a_fresh_one, s_setup_one_attempt,
            s_teardown),
        cmocka_unit_test_setup_teardown(
            test_delete_forgets_the_queue_and_a_put_makes_a_fresh_one,
            s_setup_one_attempt_durable, s_teardown),
        cmocka_unit_test_setup_teardown(test_purge_dead_deletes_the_dead_items,
                                        s_setup_one_attempt, s_teardown),
        cmocka_unit_test_setup_teardown(test_purge_dead_deletes_the_dead_items,
                                        s_setup_one_attempt_durable, s_teardown),
        cmocka_unit_test_setup_teardown(test_dead_lists_items_with_cause_reason_and_payload,
                                        s_setup_one_attempt, s_teardown),
        cmocka_unit_test_setup_teardown(test_dead_lists_items_with_cause_reason_and_payload,
                                        s_setup_one_attempt_durable, s_teardown),
        cmocka_unit_test_setup_teardown(test_one_dead_item_viewed_requeued_and_deleted,
                                        s_setup_one_attempt, s_teardown),
        cmocka_unit_test_setup_teardown(test_one_dead_item_viewed_requeued_and_deleted,
                                        s_setup_one_attempt_durable, s_teardown),
        cmocka_unit_test_setup_teardown(
            test_one_dead_item_refuses_bad_requests_and_changes_nothing, s_setup_one_attempt,
            s_teardown),
        cmocka_unit_test_setup_teardown(test_one_queue_reopens_after_every_queue_was_shut_down,
                                        s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_reopen_refused_while_the_broker_stops, s_setup,
                                        s_teardown),
    };
    return harness_run_group(tests);
}
