/*  The HTTP port (--metrics) under connection attacks from many source
    addresses (127.0.0.2 and up, all loopback): idle connections beyond
    libmicrohttpd's connection limit then closed, a flood of idle
    connections held open, and a slowloris that trickles its headers. In
    each, the port must answer a scrape from another address during the
    attack (where the test says so) and within a second of its end, and
    the ZeroMQ side must still serve. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "harness.h"

typedef struct {
    harness_t h;
    int port;
} fixture_t;

static int s_start(void **state, char *const *flags)
{
    fixture_t *f = calloc(1, sizeof *f);
    assert_non_null(f);
    harness_start_broker(&f->h, flags);
    char url[256];
    if (!aq_process_expect(&f->h.broker, "METRICS ", url, sizeof url, HARNESS_DEADLINE_MS))
        fail_msg("broker did not print METRICS");
    const char *colon = strrchr(url, ':');
    assert_non_null(colon);
    f->port = atoi(colon + 1);
    *state = f;
    return 0;
}

static int s_setup(void **state)
{
    char *const flags[] = {"--metrics", "127.0.0.1:0", NULL};
    return s_start(state, flags);
}

/*  Room for 3 000 queues from one client (a limit per client is a tenth
    of --max-queues). */
static int s_setup_many_queues(void **state)
{
    char *const flags[] = {"--metrics", "127.0.0.1:0", "--max-queues", "40000", NULL};
    return s_start(state, flags);
}

static int s_teardown(void **state)
{
    fixture_t *f = *state;
    harness_stop(&f->h);
    free(f);
    return 0;
}

/*  A non-blocking connection from 127.0.0.`from` (a full listen queue
    must not block the attacker); -1 if the system refuses. */
static int s_connect_from(const fixture_t *f, int from)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    assert_true(fd >= 0);
    struct sockaddr_in local = {.sin_family = AF_INET};
    char address[32];
    snprintf(address, sizeof address, "127.0.0.%d", from);
    inet_pton(AF_INET, address, &local.sin_addr);
    assert_int_equal(bind(fd, (struct sockaddr *) &local, sizeof local), 0);
    struct sockaddr_in to = {.sin_family = AF_INET, .sin_port = htons((uint16_t) f->port)};
    inet_pton(AF_INET, "127.0.0.1", &to.sin_addr);
    if (connect(fd, (struct sockaddr *) &to, sizeof to) != 0 && errno != EINPROGRESS) {
        close(fd);
        return -1;
    }
    return fd;
}

/*  GET /metrics from 127.0.0.1 on a new connection, within `limit_ms`:
    the status (0 if no whole answer came in time). A valid scrape is 200
    with the broker's uptime in it. */
static int s_scrape(const fixture_t *f, int limit_ms)
{
    int64_t deadline = zclock_mono() + limit_ms;
    int fd = s_connect_from(f, 1);
    assert_true(fd >= 0);
    const char *request = "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    size_t sent = 0, got = 0, size = 1 << 20;
    char *answer = malloc(size);
    assert_non_null(answer);
    int done = 0;
    while (!done) {
        int left = (int) (deadline - zclock_mono());
        struct pollfd item = {fd, sent < strlen(request) ? POLLOUT : POLLIN, 0};
        if (left <= 0 || poll(&item, 1, left) != 1)
            break;
        if (sent < strlen(request)) {
            ssize_t n = send(fd, request + sent, strlen(request) - sent, MSG_NOSIGNAL);
            if (n < 0 && errno != EAGAIN)
                break;
            sent += n > 0 ? (size_t) n : 0;
            continue;
        }
        ssize_t n = recv(fd, answer + got, size - 1 - got, 0);
        if (n < 0 && errno == EAGAIN)
            continue;
        if (n <= 0 || got + (size_t) n + 1 >= size)
            done = 1;
        else
            got += (size_t) n;
    }
    close(fd);
    answer[got] = '\0';
    int status = 0;
    if (!done || sscanf(answer, "HTTP/1.%*d %d", &status) != 1
        || (status == 200 && !strstr(answer, "\nasyncq_uptime_seconds ")))
        status = 0;
    free(answer);
    return status;
}

/*  After the attack: a valid scrape within a second, and the ZeroMQ side
    serving. */
static void s_assert_serving_after(const fixture_t *f, const char *queue)
{
    int64_t started = zclock_mono();
    int status = 0;
    while (status != 200 && zclock_mono() - started < 1000)
        status = s_scrape(f, (int) (1000 - (zclock_mono() - started)));
    printf("    scrape after the attack: %d in %lld ms\n", status,
           (long long) (zclock_mono() - started));
    assert_int_equal(status, 200);
    harness_assert_serving(&f->h, queue);
}

/*  200 idle connections from 40 addresses (beyond the 128 libmicrohttpd
    takes), then all closed. libmicrohttpd takes its listening socket out
    of its epoll set at its limit and puts it back only at the start of a
    run; the broker ran it only when its epoll descriptor was readable, so
    once the closes were handled nothing accepted again. */
static void test_idle_connections_beyond_the_limit_then_closed(void **state)
{
    fixture_t *f = *state;
    enum { ADDRESSES = 40, EACH = 5 };
    int fds[ADDRESSES * EACH];
    for (int round = 0; round < 5; round++) {
        for (int i = 0; i < ADDRESSES * EACH; i++)
            fds[i] = s_connect_from(f, 2 + i % ADDRESSES);
        /* The port takes what it takes, up to its limit of 128, and the
           rest wait in the listen queue; all are closed before any is
           old enough to be shut to make room (250 ms). */
        zclock_sleep(100);
        for (int i = 0; i < ADDRESSES * EACH; i++)
            if (fds[i] >= 0)
                close(fds[i]);
        s_assert_serving_after(f, "q");
    }
}

/*  320 idle connections held open from 40 addresses (8 each, the limit
    per address): a scrape from another address is answered at once
    during the attack (the oldest connection that has not sent a request
    makes room), and within a second of its end. */
static void test_a_flood_of_idle_connections_from_many_addresses(void **state)
{
    fixture_t *f = *state;
    enum { ADDRESSES = 40, EACH = 8 };
    int fds[ADDRESSES * EACH];
    for (int i = 0; i < ADDRESSES * EACH; i++)
        fds[i] = s_connect_from(f, 2 + i % ADDRESSES);
    zclock_sleep(300);
    for (int i = 0; i < 5; i++) {
        int64_t started = zclock_mono();
        int status = s_scrape(f, 1000);
        printf("    scrape during the flood: %d in %lld ms\n", status,
               (long long) (zclock_mono() - started));
        assert_int_equal(status, 200);
    }
    for (int i = 0; i < ADDRESSES * EACH; i++)
        if (fds[i] >= 0)
            close(fds[i]);
    s_assert_serving_after(f, "q");
}

/*  A slowloris: 40 addresses × 5 connections, each sending a byte of its
    headers every 300 ms (well within the idle time-out) and reconnecting
    when closed, for about 4 s. Scrapes from another address during it are
    answered within a second each, and one within a second of its end. */
static void test_a_slowloris_from_many_addresses(void **state)
{
    fixture_t *f = *state;
    enum { ADDRESSES = 40, EACH = 5, COUNT = ADDRESSES * EACH };
    static const char head[] = "GET /metrics HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaa"
                               "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    int fds[COUNT];
    size_t sent[COUNT];
    for (int i = 0; i < COUNT; i++) {
        fds[i] = s_connect_from(f, 2 + i % ADDRESSES);
        sent[i] = 0;
    }
    int answered = 0, asked = 0, reconnects = 0;
    int64_t end = zclock_mono() + 4000, next_scrape = zclock_mono() + 500;
    while (zclock_mono() < end) {
        for (int i = 0; i < COUNT; i++) {
            char byte = head[sent[i] % (sizeof head - 1)];
            ssize_t n = fds[i] >= 0 ? send(fds[i], &byte, 1, MSG_NOSIGNAL) : -1;
            if (n == 1)
                sent[i]++;
            else if (n < 0 && (errno == EAGAIN || errno == ENOTCONN))
                continue; /* not connected yet, or in the listen queue */
            else {
                if (fds[i] >= 0)
                    close(fds[i]);
                fds[i] = s_connect_from(f, 2 + i % ADDRESSES);
                sent[i] = 0;
                reconnects++;
            }
        }
        if (zclock_mono() >= next_scrape) {
            int64_t started = zclock_mono();
            int status = s_scrape(f, 1000);
            printf("    scrape during the slowloris: %d in %lld ms\n", status,
                   (long long) (zclock_mono() - started));
            asked++;
            answered += status == 200;
            next_scrape = zclock_mono() + 300;
        } else
            zclock_sleep(300);
    }
    printf("    slowloris: %d of %d scrapes answered, %d reconnections\n", answered, asked,
           reconnects);
    assert_true(asked >= 3);
    assert_int_equal(answered, asked);
    for (int i = 0; i < COUNT; i++)
        if (fds[i] >= 0)
            close(fds[i]);
    s_assert_serving_after(f, "q");
}

/*  128 scrapes of 3 000 queues (13 MB of text each) from 16 addresses
    that never read: the broker renders each as it is taken, so they hold
    a slice each, not a whole answer; the place of one that took nothing
    for a second goes to a scrape that reads; and the broker's memory
    stays within 64 MiB of what it was. */
static void test_scrapes_that_never_read(void **state)
{
    fixture_t *f = *state;
    aq_status_t rc;
    aq_producer_t *producer = aq_producer_new(f->h.address, "p", &rc);
    assert_non_null(producer);
    for (int i = 0; i < 3000; i++) {
        char queue[32];
        snprintf(queue, sizeof queue, "queue-%04d", i);
        assert_int_equal(aq_producer_put(producer, queue, "x", 1), AQ_OK);
    }
    assert_int_equal(aq_producer_sync(producer, HARNESS_DEADLINE_MS), AQ_OK);
    aq_producer_destroy(&producer);
    uint64_t before = harness_rss_kib(f->h.broker.pid);
    enum { COUNT = 128 };
    int fds[COUNT];
    for (int i = 0; i < COUNT; i++) {
        fds[i] = s_connect_from(f, 2 + i / 8);
        int small = 4096;
        if (fds[i] >= 0)
            setsockopt(fds[i], SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
    }
    zclock_sleep(200);
    const char *request = "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n";
    for (int i = 0; i < COUNT; i++)
        if (fds[i] >= 0)
            send(fds[i], request, strlen(request), MSG_NOSIGNAL);
    zclock_sleep(1500);
    uint64_t during = harness_rss_kib(f->h.broker.pid);
    int64_t started = zclock_mono();
    int status = s_scrape(f, 5000);
    printf("    scrape beside 128 that never read: %d in %lld ms; broker RSS %llu KiB before, "
           "%llu KiB during\n",
           status, (long long) (zclock_mono() - started), (unsigned long long) before,
           (unsigned long long) during);
    assert_int_equal(status, 200);
    assert_true(harness_rss_kib(f->h.broker.pid) < before + 64 * 1024);
    for (int i = 0; i < COUNT; i++)
        if (fds[i] >= 0)
            close(fds[i]);
    s_assert_serving_after(f, "q");
}


/*  Idle connections from the scraper's own address, more than the limit
    per address and held open (every local user is 127.0.0.1): a scrape
    from that address is still answered at once, the oldest idle one
    making room for it. */
static void test_idle_connections_from_the_scrapers_own_address(void **state)
{
    fixture_t *f = *state;
    enum { IDLE = 12 };
    int fds[IDLE];
    for (int i = 0; i < IDLE; i++)
        fds[i] = s_connect_from(f, 1);
    zclock_sleep(300); /* older than HTTP_EVICT_AFTER_MS */
    for (int i = 0; i < 5; i++) {
        int64_t started = zclock_mono();
        int status = s_scrape(f, 1000);
        printf("    scrape from the same address: %d in %lld ms\n", status,
               (long long) (zclock_mono() - started));
        assert_int_equal(status, 200);
    }
    for (int i = 0; i < IDLE; i++)
        if (fds[i] >= 0)
            close(fds[i]);
    s_assert_serving_after(f, "q");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_idle_connections_beyond_the_limit_then_closed,
                                        s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_idle_connections_from_the_scrapers_own_address,
                                        s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_a_flood_of_idle_connections_from_many_addresses,
                                        s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_a_slowloris_from_many_addresses, s_setup,
                                        s_teardown),
        cmocka_unit_test_setup_teardown(test_scrapes_that_never_read, s_setup_many_queues,
                                        s_teardown),
    };
    return harness_run_group(tests);
}
