/*  Dead letters keep why and when they died: `asyncq dead list` (DEAD
    list, PROTOCOL.md 4.12) shows, oldest death first, one line per item,
    `id=N attempts=N size=N died=TIME cause=CAUSE reason="..." payload="..."`.
    One item dies of each cause (a NACK, a lease that ran out, a session
    that ended, a durable broker killed while it was in flight); a durable
    broker shows the same list, byte for byte, after a SIGKILL and restart;
    long reasons and payloads are cut, binary bytes escaped; the broker logs
    each death; a requeued item that dies again shows its new death. */
/* timegm, strdup: _DEFAULT_SOURCE, defined by the build */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"

#define LONG_LEASE "60000" /* the items meant to stay held */
#define SHORT_LEASE_MS 200 /* the items meant to expire (their put asks for it) */
#define LIST_SIZE 65536

typedef harness_dir_t fixture_t;

/* ------------------------------------------------------------ the broker */

/*  Starts a broker (its log kept), on a fresh free port each time: nothing
    that still talks to a killed broker can reach the new one. */
static void s_start(fixture_t *f, char *const *flags)
{
    harness_t *h = &f->h;
    if (h->log_path[0]) /* the log of the broker before, if any */
        unlink(h->log_path);
    h->log_path[0] = '\0';
    harness_start_broker_logged(h, flags);
}

static void s_start_durable(fixture_t *f)
{
    char *const flags[] = {"--data-dir", f->data, "--fsync", "always", "--max-attempts", "1",
                           "--lease-ms", LONG_LEASE, NULL};
    s_start(f, flags);
}

static void s_start_in_memory(fixture_t *f)
{
    char *const flags[] = {"--max-attempts", "1", "--lease-ms", LONG_LEASE, NULL};
    s_start(f, flags);
}

static void s_kill(fixture_t *f)
{
    aq_process_stop(&f->h.broker, SIGKILL, 1000);
    assert_int_equal(f->h.broker.exit_code, 128 + SIGKILL);
    f->h.broker.pid = 0;
}

/* ---------------------------------------------------------- items */

/*  Puts one item (lease_ms 0: the queue's lease) and waits for the confirm. */
static void s_put(const harness_t *h, const char *queue, const void *data, size_t size,
                  uint32_t lease_ms)
{
    aq_status_t rc;
    aq_producer_t *producer = aq_producer_new(h->address, "p", &rc);
    assert_non_null(producer);
    assert_int_equal(aq_producer_put_lease(producer, queue, data, size, lease_ms), AQ_OK);
    assert_int_equal(aq_producer_sync(producer, HARNESS_DEADLINE_MS), AQ_OK);
    aq_producer_destroy(&producer);
}

static aq_consumer_t *s_consumer(const harness_t *h, const char *queue, uint64_t credit)
{
    aq_status_t rc;
    aq_consumer_t *consumer = aq_consumer_new(h->address, "c", queue, credit, &rc);
    assert_non_null(consumer);
    return consumer;
}

/*  Gets the next item, which must be `payload` at its first delivery;
    returns its id. */
static uint64_t s_get(aq_consumer_t *consumer, const char *payload)
{
    aq_item_t item;
    assert_int_equal(aq_consumer_get(consumer, &item, HARNESS_DEADLINE_MS), AQ_OK);
    assert_int_equal(item.size, strlen(payload));
    assert_memory_equal(item.data, payload, item.size);
    assert_int_equal(item.attempt, 1);
    return item.id;
}

/* ---------------------------------------------------------- the list */

/*  `asyncq dead list` for `queue`: its whole output (malloc'd). */
static char *s_dead_list(const harness_t *h, const char *queue)
{
    char *out = calloc(1, LIST_SIZE);
    assert_non_null(out);
    char *argv[] = {"asyncq", "dead", "list", "--broker", (char *) h->address,
                    "--queue", (char *) queue, NULL};
    assert_int_equal(harness_run(argv, out, LIST_SIZE), 0);
    return out;
}

/*  Splits a list into its lines (in place); returns how many. */
static int s_lines(char *text, char **lines, int max)
{
    int count = 0;
    for (char *line = text; *line;) {
        char *end = strchr(line, '\n');
        assert_non_null(end); /* every line ends */
        *end = '\0';
        assert_true(count < max);
        lines[count++] = line;
        line = end + 1;
    }
    return count;
}

/*  The time a line's died= field says, in ms since the epoch (UTC); fails
    unless it is exactly YYYY-MM-DDTHH:MM:SS.mmmZ. Copies the field into
    `died` (25 bytes). */
static int64_t s_died_ms(const char *line, char *died)
{
    const char *field = strstr(line, " died=");
    if (!field)
        fail_msg("no died= in: %s", line);
    field += 6;
    const char *end = strchr(field, ' ');
    if (!end || end - field != 24)
        fail_msg("died= is not YYYY-MM-DDTHH:MM:SS.mmmZ in: %s", line);
    memcpy(died, field, 24);
    died[24] = '\0';
    struct tm tm;
    memset(&tm, 0, sizeof tm);
    int ms, used = 0;
    if (sscanf(died, "%4d-%2d-%2dT%2d:%2d:%2d.%3dZ%n", &tm.tm_year, &tm.tm_mon, &tm.tm_mday,
               &tm.tm_hour, &tm.tm_min, &tm.tm_sec, &ms, &used) != 7
        || used != 24 || died[4] != '-' || died[7] != '-' || died[10] != 'T' || died[13] != ':'
        || died[16] != ':' || died[19] != '.')
        fail_msg("died=%s does not parse", died);
    tm.tm_year -= 1900;
    tm.tm_mon -= 1;
    return (int64_t) timegm(&tm) * 1000 + ms;
}

/*  The line must be exactly the item `id` with these fields (reason and
    payload as the line writes them, quoted), and its death between `from`
    and `to` (wall clock, ms). */
static void s_assert_line(const char *line, uint64_t id, unsigned attempts, size_t size,
                          const char *cause, const char *reason, const char *payload,
                          int64_t from, int64_t to)
{
    char died[32], expected[4096];
    int64_t at = s_died_ms(line, died);
    snprintf(expected, sizeof expected,
             "id=%llu attempts=%u size=%zu died=%s cause=%s reason=%s payload=%s",
             (unsigned long long) id, attempts, size, died, cause, reason, payload);
    if (strcmp(line, expected) != 0)
        fail_msg("the dead list's line\n  got:      %s\n  expected: %s", line, expected);
    if (at < from || at > to)
        fail_msg("died=%s (%lld ms) is not between %lld and %lld: %s", died, (long long) at,
                 (long long) from, (long long) to, line);
}

/*  Waits until the broker's log holds `text` (it is written by the broker's
    loop, read here from the file); fails after the deadline. */
static void s_wait_log(const harness_t *h, const char *text)
{
    int64_t deadline = zclock_mono() + HARNESS_DEADLINE_MS;
    for (;;) {
        harness_info(h, "queues"); /* a round trip: the lines before it are out */
        char *log = harness_log(h);
        int found = strstr(log, text) != NULL;
        if (found || zclock_mono() > deadline) {
            if (!found)
                fail_msg("the broker's log does not say '%s':\n%s", text, log);
            free(log);
            return;
        }
        free(log);
        zclock_sleep(20);
    }
}

/* ------------------------------------------------------------ the tests */

/*  The reason of the NACK: a quote, a backslash, a UTF-8 é (c3 a9). */
#define NACK_REASON "said \"no\" \\ caf\xc3\xa9 ok"
#define NACK_REASON_SHOWN "\"said \\\"no\\\" \\\\ caf\\xc3\\xa9 ok\""

static void test_each_cause_is_shown_with_its_reason_time_and_payload(void **state)
{
    fixture_t *f = *state;
    harness_t *h = &f->h;
    s_start_durable(f);
    uint64_t ids[4];
    int64_t from[4], to[4];

    /* nack: its only attempt returned with a reason. */
    s_put(h, "q", "nack-item", 9, 0);
    aq_consumer_t *c = s_consumer(h, "q", 1);
    ids[0] = s_get(c, "nack-item");
    from[0] = zclock_time();
    assert_int_equal(aq_consumer_nack(c, ids[0], 0, NACK_REASON), AQ_OK);
    harness_wait_stat(h, "q", "dead", 1);
    to[0] = zclock_time();
    char said[256];
    snprintf(said, sizeof said,
             "dead letters: item %llu of q dead-lettered after 1 deliveries (nack: said \"no\" "
             "\\x5c caf\\xc3\\xa9 ok)",
             (unsigned long long) ids[0]);
    s_wait_log(h, said);

    /* lease: held past its lease (its put asked for a short one). */
    s_put(h, "q", "lease-item", 10, SHORT_LEASE_MS);
    from[1] = zclock_time();
    ids[1] = s_get(c, "lease-item");
    harness_wait_stat(h, "q", "dead", 2);
    to[1] = zclock_time();
    aq_consumer_destroy(&c); /* it holds nothing */
    snprintf(said, sizeof said,
             "dead letters: item %llu of q dead-lettered after 1 deliveries (lease)",
             (unsigned long long) ids[1]);
    s_wait_log(h, said);

    /* session: its consumer closed while holding it. */
    s_put(h, "q", "session-item", 12, 0);
    c = s_consumer(h, "q", 1);
    ids[2] = s_get(c, "session-item");
    from[2] = zclock_time();
    aq_consumer_destroy(&c); /* no ack: BYE while holding it */
    harness_wait_stat(h, "q", "dead", 3);
    to[2] = zclock_time();
    snprintf(said, sizeof said,
             "dead letters: item %llu of q dead-lettered after 1 deliveries (session)",
             (unsigned long long) ids[2]);
    s_wait_log(h, said);

    /* restart: held at its last attempt when the broker is killed. */
    s_put(h, "q", "restart-item", 12, 0);
    c = s_consumer(h, "q", 1);
    ids[3] = s_get(c, "restart-item");
    harness_wait_stat(h, "q", "inflight", 1);
    assert_int_equal(harness_stat(h, "q", "dead"), 3);
    from[3] = zclock_time();
    s_kill(f);
    aq_consumer_destroy(&c); /* its BYE goes nowhere: that broker is gone */
    s_start_durable(f);
    harness_wait_stat(h, "q", "dead", 4);
    to[3] = zclock_time();
    assert_int_equal(harness_stat(h, "q", "inflight"), 0);
    assert_int_equal(harness_stat(h, "q", "queued"), 0);
    snprintf(said, sizeof said,
             "dead letters: item %llu of q dead-lettered after 1 deliveries (restart)",
             (unsigned long long) ids[3]);
    s_wait_log(h, said);

    char *list = s_dead_list(h, "q"), *lines[8];
    assert_int_equal(s_lines(list, lines, 8), 4);
    s_assert_line(lines[0], ids[0], 1, 9, "nack", NACK_REASON_SHOWN, "\"nack-item\"", from[0],
                  to[0]);
    s_assert_line(lines[1], ids[1], 1, 10, "lease", "\"\"", "\"lease-item\"", from[1], to[1]);
    s_assert_line(lines[2], ids[2], 1, 12, "session", "\"\"", "\"session-item\"", from[2],
                  to[2]);
    s_assert_line(lines[3], ids[3], 1, 12, "restart", "\"\"", "\"restart-item\"", from[3],
                  to[3]);
    free(list);
    harness_assert_serving(h, "ok");
}

static void test_a_durable_broker_shows_the_same_list_after_a_restart(void **state)
{
    fixture_t *f = *state;
    harness_t *h = &f->h;
    s_start_durable(f);
    uint64_t ids[3];
    int64_t from = zclock_time();
    s_put(h, "q", "first", 5, 0);
    s_put(h, "q", "third", 5, 0);
    aq_consumer_t *c = s_consumer(h, "q", 2);
    ids[0] = s_get(c, "first");
    ids[2] = s_get(c, "third");
    /* They die in another order than their puts': third, then second (put
       last, to another consumer; its lease runs out), then first. */
    assert_int_equal(aq_consumer_set_credit(c, 1), AQ_OK); /* it takes no more */
    assert_int_equal(aq_consumer_nack(c, ids[2], 0, "third: \"x\""), AQ_OK);
    harness_wait_stat(h, "q", "dead", 1);
    s_put(h, "q", "second", 6, SHORT_LEASE_MS);
    aq_consumer_t *late = s_consumer(h, "q", 1);
    ids[1] = s_get(late, "second");
    harness_wait_stat(h, "q", "dead", 2);
    aq_consumer_destroy(&late);
    assert_int_equal(aq_consumer_nack(c, ids[0], 0, "first \xe2\x82\xac"), AQ_OK);
    harness_wait_stat(h, "q", "dead", 3);
    int64_t to = zclock_time();
    aq_consumer_destroy(&c);

    char *before = s_dead_list(h, "q");
    char *copy = strdup(before), *lines[8];
    assert_int_equal(s_lines(copy, lines, 8), 3);
    s_assert_line(lines[0], ids[2], 1, 5, "nack", "\"third: \\\"x\\\"\"", "\"third\"", from, to);
    s_assert_line(lines[1], ids[1], 1, 6, "lease", "\"\"", "\"second\"", from, to);
    s_assert_line(lines[2], ids[0], 1, 5, "nack", "\"first \\xe2\\x82\\xac\"", "\"first\"", from,
                  to);
    char died[3][32];
    for (int i = 0; i < 3; i++)
        s_died_ms(lines[i], died[i]);
    assert_true(strcmp(died[0], died[1]) <= 0 && strcmp(died[1], died[2]) <= 0);
    free(copy);

    s_kill(f);
    s_start_durable(f);
    assert_int_equal(harness_stat(h, "q", "dead"), 3);
    char *after = s_dead_list(h, "q");
    if (strcmp(before, after) != 0)
        fail_msg("the dead list changed across the restart:\n----- before\n%s----- after\n%s",
                 before, after);
    free(before);
    free(after);
    /* And once more: a restart of a restarted broker changes nothing. */
    before = s_dead_list(h, "q");
    s_kill(f);
    s_start_durable(f);
    after = s_dead_list(h, "q");
    assert_string_equal(before, after);
    free(before);
    free(after);
    harness_assert_serving(h, "ok");
}

static void test_a_long_reason_is_cut_and_logged(void **state)
{
    fixture_t *f = *state;
    harness_t *h = &f->h;
    s_start_in_memory(f);
    char reason[301];
    for (int i = 0; i < 300; i++)
        reason[i] = (char) ('a' + i % 26);
    reason[300] = '\0';
    s_put(h, "q", "long", 4, 0);
    aq_consumer_t *c = s_consumer(h, "q", 1);
    uint64_t id = s_get(c, "long");
    int64_t from = zclock_time();
    assert_int_equal(aq_consumer_nack(c, id, 0, reason), AQ_OK);
    harness_wait_stat(h, "q", "dead", 1);
    int64_t to = zclock_time();
    aq_consumer_destroy(&c);

    char shown[200];
    snprintf(shown, sizeof shown, "\"%.150s\"...", reason);
    char *list = s_dead_list(h, "q"), *lines[4];
    assert_int_equal(s_lines(list, lines, 4), 1);
    s_assert_line(lines[0], id, 1, 4, "nack", shown, "\"long\"", from, to);
    free(list);

    /* The log says it, with (at least) as much of the reason. */
    char said[512];
    snprintf(said, sizeof said,
             "dead letters: item %llu of q dead-lettered after 1 deliveries (nack: %.150s",
             (unsigned long long) id, reason);
    s_wait_log(h, said);
    harness_assert_serving(h, "ok");
}

static void test_a_binary_payload_is_escaped_and_cut(void **state)
{
    fixture_t *f = *state;
    harness_t *h = &f->h;
    s_start_in_memory(f);
    /* 32 bytes shown: controls, a quote, a backslash, printable ASCII, DEL,
       bytes above it; then 68 more that are not. */
    uint8_t payload[100];
    static const uint8_t head[32] = {0x00, 0x01, 0x1f, ' ', '"', '\\', 'A', 'z', '~', 0x7f,
                                     0x80, 0xff, '\n', '\t', '\r', 0xc3, 0xa9, '0', '9', '=',
                                     0x1b, '[', '3', '1', 'm', '\'', '.', 0xfe, 0x10, 'x',
                                     '"', '\\'};
    memcpy(payload, head, sizeof head);
    for (int i = 32; i < 100; i++)
        payload[i] = (uint8_t) (i * 37 + 11);
    const char *shown = "\"\\x00\\x01\\x1f \\\"\\\\Az~\\x7f\\x80\\xff\\x0a\\x09\\x0d\\xc3\\xa909="
                        "\\x1b[31m'.\\xfe\\x10x\\\"\\\\\"...";
    s_put(h, "q", payload, sizeof payload, 0);
    /* And the edges: exactly 32 bytes (nothing cut), 33 (cut). */
    const char *exact = "0123456789abcdef0123456789ABCDEF";
    const char *over = "0123456789abcdef0123456789ABCDEF!";
    s_put(h, "q", exact, 32, 0);
    s_put(h, "q", over, 33, 0);

    aq_consumer_t *c = s_consumer(h, "q", 1);
    uint64_t ids[3];
    aq_item_t item;
    int64_t from = zclock_time();
    for (int i = 0; i < 3; i++) {
        assert_int_equal(aq_consumer_get(c, &item, HARNESS_DEADLINE_MS), AQ_OK);
        ids[i] = item.id;
        assert_int_equal(aq_consumer_nack(c, item.id, 0, NULL), AQ_OK);
        harness_wait_stat(h, "q", "dead", (uint64_t) i + 1);
    }
    int64_t to = zclock_time();
    aq_consumer_destroy(&c);

    char *list = s_dead_list(h, "q"), *lines[4];
    assert_int_equal(s_lines(list, lines, 4), 3);
    s_assert_line(lines[0], ids[0], 1, 100, "nack", "\"\"", shown, from, to);
    s_assert_line(lines[1], ids[1], 1, 32, "nack", "\"\"",
                  "\"0123456789abcdef0123456789ABCDEF\"", from, to);
    s_assert_line(lines[2], ids[2], 1, 33, "nack", "\"\"",
                  "\"0123456789abcdef0123456789ABCDEF\"...", from, to);
    free(list);
    harness_assert_serving(h, "ok");
}

static void test_a_requeued_item_that_dies_again_shows_its_new_death(void **state)
{
    fixture_t *f = *state;
    harness_t *h = &f->h;
    s_start_in_memory(f);
    s_put(h, "q", "again", 5, 0);
    s_put(h, "q", "once", 4, 0);
    aq_consumer_t *c = s_consumer(h, "q", 2);
    uint64_t again = s_get(c, "again"), once = s_get(c, "once");
    assert_int_equal(aq_consumer_nack(c, again, 0, "old reason"), AQ_OK);
    assert_int_equal(aq_consumer_nack(c, once, 0, "old reason too"), AQ_OK);
    harness_wait_stat(h, "q", "dead", 2);
    aq_consumer_destroy(&c);
    char *list = s_dead_list(h, "q");
    assert_non_null(strstr(list, "reason=\"old reason\""));
    free(list);

    char out[4096];
    char *requeue[] = {"asyncq", "dead", "requeue", "--broker", h->address, "--queue", "q",
                       NULL};
    int64_t from = zclock_time();
    assert_int_equal(harness_run(requeue, out, sizeof out), 0);
    assert_non_null(strstr(out, "requeued=2"));
    assert_int_equal(harness_stat(h, "q", "dead"), 0);
    assert_int_equal(harness_stat(h, "q", "queued"), 2);
    list = s_dead_list(h, "q");
    assert_string_equal(list, ""); /* nothing dead */
    free(list);

    /* "again" dies again, of another cause: its consumer closes. */
    c = s_consumer(h, "q", 1);
    assert_int_equal(s_get(c, "again"), again);
    aq_consumer_destroy(&c);
    harness_wait_stat(h, "q", "dead", 1);
    int64_t to = zclock_time();
    c = s_consumer(h, "q", 1);
    assert_int_equal(s_get(c, "once"), once);
    aq_consumer_ack(c, once);
    aq_consumer_flush(c);
    harness_wait_stat(h, "q", "acked", 1);
    aq_consumer_destroy(&c);

    list = s_dead_list(h, "q");
    char *lines[4];
    assert_int_equal(s_lines(list, lines, 4), 1);
    s_assert_line(lines[0], again, 1, 5, "session", "\"\"", "\"again\"", from, to);
    free(list);
    harness_assert_serving(h, "ok");
}

/*  `asyncq dead show ID`: one dead item whole, its list line first; a
    binary item larger than one answer (785 664 bytes) comes whole in JSON's
    payload_base64, and the same after a SIGKILL and restart of a durable
    broker; an unknown id is a 404 naming it and a bad one a usage error,
    and neither changes anything. */
static void test_dead_show_gives_one_item_whole(void **state)
{
    fixture_t *f = *state;
    harness_t *h = &f->h;
    s_start_durable(f);
    size_t big_size = 900000;
    uint8_t *big = malloc(big_size);
    assert_non_null(big);
    for (size_t i = 0; i < big_size; i++)
        big[i] = (uint8_t) (i * 2654435761u >> 13);
    s_put(h, "q", big, big_size, 0);
    s_put(h, "q", "h\xc3\xa9llo\nworld", 12, 0);
    aq_consumer_t *c = s_consumer(h, "q", 2);
    aq_item_t item;
    uint64_t ids[2];
    for (int i = 0; i < 2; i++) {
        assert_int_equal(aq_consumer_get(c, &item, HARNESS_DEADLINE_MS), AQ_OK);
        ids[i] = item.id;
        assert_int_equal(aq_consumer_nack(c, item.id, 0, "no"), AQ_OK);
    }
    harness_wait_stat(h, "q", "dead", 2);
    aq_consumer_destroy(&c);
    char *list = s_dead_list(h, "q"), *lines[3];
    assert_int_equal(s_lines(list, lines, 3), 2);

    size_t out_size = 2 * big_size;
    char *out = malloc(out_size), id[24], err[512];
    assert_non_null(out);
    snprintf(id, sizeof id, "%llu", (unsigned long long) ids[1]);
    char *show[] = {"asyncq", "dead", "show", id, "--broker", h->address, "--queue", "q", NULL};
    assert_int_equal(harness_run(show, out, out_size), 0);
    char want[1200];
    snprintf(want, sizeof want, "%s\nh\xc3\xa9llo\nworld\n", lines[1]);
    assert_string_equal(out, want);

    snprintf(id, sizeof id, "%llu", (unsigned long long) ids[0]);
    char asyncq[4096], command[8192];
    assert_int_equal(aq_program_path("asyncq", asyncq, sizeof asyncq), 0);
    /* One line of 1.2 MB: read whole (harness_run reads lines of 4 KiB). */
    for (int round = 0; round < 2; round++) { /* the broker's port changes at its restart */
        snprintf(command, sizeof command,
                 "'%s' dead show %s --broker %s --queue q --format json", asyncq, id, h->address);
        FILE *pipe = popen(command, "r");
        assert_non_null(pipe);
        size_t got = fread(out, 1, out_size - 1, pipe);
        out[got] = '\0';
        assert_int_equal(pclose(pipe), 0);
        const char *at = strstr(out, "\"payload_base64\": \"");
        assert_non_null(at);
        at += strlen("\"payload_base64\": \"");
        char *end = strchr(at, '"');
        assert_non_null(end);
        *end = '\0';
        zarmour_t *armour = zarmour_new();
        zarmour_set_mode(armour, ZARMOUR_MODE_BASE64_STD);
        zchunk_t *chunk = zarmour_decode(armour, at);
        zarmour_destroy(&armour);
        assert_non_null(chunk);
        assert_int_equal(zchunk_size(chunk), big_size + 1); /* and zarmour's NUL */
        assert_memory_equal(zchunk_data(chunk), big, big_size);
        zchunk_destroy(&chunk);
        assert_non_null(strstr(out, "\"cause\": \"nack\", \"reason\": \"no\""));
        if (round == 0) {
            s_kill(f);
            s_start_durable(f);
        }
    }

    char *unknown[] = {"asyncq", "dead", "show", "77", "--broker", h->address, "--queue", "q",
                       NULL};
    assert_int_equal(harness_run_err(unknown, out, out_size, err, sizeof err), 1);
    assert_non_null(strstr(err, "UNKNOWN_ITEM (404)"));
    assert_non_null(strstr(err, ": 77"));
    char *bad[] = {"asyncq", "dead", "show", "x1", "--broker", h->address, NULL};
    assert_int_equal(harness_run_err(bad, out, out_size, err, sizeof err), 2);
    assert_non_null(strstr(err, "'x1' is not an item id"));
    assert_int_equal(harness_stat(h, "q", "dead"), 2);
    free(list);
    free(out);
    free(big);
    harness_assert_serving(h, "ok");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        harness_dir_test(test_each_cause_is_shown_with_its_reason_time_and_payload),
        harness_dir_test(test_a_durable_broker_shows_the_same_list_after_a_restart),
        harness_dir_test(test_a_long_reason_is_cut_and_logged),
        harness_dir_test(test_a_binary_payload_is_escaped_and_cut),
        harness_dir_test(test_dead_show_gives_one_item_whole),
        harness_dir_test(test_a_requeued_item_that_dies_again_shows_its_new_death),
    };
    return harness_run_group(tests);
}
