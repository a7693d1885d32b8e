/*  Upgrade: a data directory written by 2.1 (tests/e2e/fixtures/journal-2.1,
    old record types 1 ITEM, 2 STATE, 3 GONE without reason, 4 PRODUCER,
    5 QUEUE, the broker SIGKILLed) is read by this broker: nothing lost, each
    list in the order 2.1 kept (seq order), delays still running, the queue
    shut down still refusing puts, the producer's de-duplication kept, and
    the broker serves. The fixture is copied first: a broker writes a new
    segment in its directory. And the other way: a journal that holds a
    record of a type this broker does not read (a newer one wrote it) is
    refused, not served without it. */
#define _XOPEN_SOURCE 700
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "harness.h"
#include "journal.h"

#ifndef ASYNCQ_FIXTURES
#error "ASYNCQ_FIXTURES: the directory of tests/e2e/fixtures"
#endif
#define FIXTURE ASYNCQ_FIXTURES "/journal-2.1"

/*  The producer that put every item of the fixture, and its last seq. */
#define PRODUCER "prod-a-4d234e686fd2"
#define PRODUCER_LAST 13

typedef struct {
    harness_t h;
    char top[64];
    char data[96];
    char dump[96];
} fixture_t;

static void s_copy(const char *from, const char *to)
{
    int in = open(from, O_RDONLY), out = open(to, O_WRONLY | O_CREAT | O_EXCL, 0600);
    assert_true(in >= 0 && out >= 0);
    char buf[65536];
    ssize_t got;
    while ((got = read(in, buf, sizeof buf)) > 0)
        assert_int_equal(write(out, buf, (size_t) got), got);
    assert_int_equal(got, 0);
    close(in);
    assert_int_equal(close(out), 0);
}

static int s_setup(void **state)
{
    fixture_t *f = calloc(1, sizeof *f);
    assert_non_null(f);
    snprintf(f->top, sizeof f->top, "/tmp/asyncq-upgrade-XXXXXX");
    assert_non_null(mkdtemp(f->top));
    snprintf(f->data, sizeof f->data, "%s/data", f->top);
    snprintf(f->dump, sizeof f->dump, "%s/dump.txt", f->top);
    assert_int_equal(mkdir(f->data, 0700), 0);
    /* The segments only: README and the expected dump stay behind. */
    DIR *dir = opendir(FIXTURE);
    assert_non_null(dir);
    int segments = 0;
    for (struct dirent *entry; (entry = readdir(dir));) {
        size_t length = strlen(entry->d_name);
        if (length < 4 || strcmp(entry->d_name + length - 4, ".log") != 0)
            continue;
        char from[4096], to[4096];
        snprintf(from, sizeof from, "%s/%s", FIXTURE, entry->d_name);
        snprintf(to, sizeof to, "%s/%s", f->data, entry->d_name);
        s_copy(from, to);
        segments++;
    }
    closedir(dir);
    assert_int_equal(segments, 1);
    *state = f;
    return 0;
}

static int s_teardown(void **state)
{
    fixture_t *f = *state;
    if (!f)
        return 0;
    harness_stop(&f->h);
    harness_remove_tree(f->top);
    free(f);
    *state = NULL;
    return 0;
}

/*  A whole file, malloc'd and NUL-terminated; NULL if it cannot be read. */
static char *s_read(const char *path)
{
    FILE *file = fopen(path, "r");
    if (!file)
        return NULL;
    size_t size = 0, capacity = 4096;
    char *text = malloc(capacity);
    assert_non_null(text);
    size_t got;
    while ((got = fread(text + size, 1, capacity - size - 1, file)) > 0) {
        size += got;
        if (capacity - size < 2) {
            capacity *= 2;
            text = realloc(text, capacity);
            assert_non_null(text);
        }
    }
    fclose(file);
    text[size] = '\0';
    return text;
}

/*  The dump without its rank numbers and times of death: a rank is only a
    place, the order of the lines says it, and the items 2.1 left dead are
    found dead when the journal is read (cause=restart, now); everything
    else (ids, seqs, attempts, the end of each delay, sizes and payload
    hashes, causes, each queue's counts) must be equal. */
static void s_drop_ranks(char *text)
{
    char *to = text;
    for (const char *at = text; *at;) {
        if (strncmp(at, " rank=", 6) == 0 || strncmp(at, " died=", 6) == 0) {
            at += 6;
            if (*at == '-')
                at++;
            while (*at >= '0' && *at <= '9')
                at++;
            continue;
        }
        *to++ = *at++;
    }
    *to = '\0';
}

/*  Fails naming the first line that differs; both whole on stderr. */
static void s_assert_same(const char *what, const char *dump, const char *expected)
{
    if (strcmp(dump, expected) == 0)
        return;
    fprintf(stderr, "%s:\n%s\nexpected (ranks left out):\n%s\n", what, dump, expected);
    int line = 1;
    const char *a = dump, *b = expected;
    for (; *a && *a == *b; a++, b++)
        if (*a == '\n')
            line++;
    while (a > dump && a[-1] != '\n')
        a--, b--;
    fail_msg("%s: line %d is '%.*s', expected '%.*s'", what, line, (int) strcspn(a, "\n"), a,
             (int) strcspn(b, "\n"), b);
}

/*  SIGUSR1, then waits for the dump (written beside and renamed over it). */
static char *s_dump(const fixture_t *f)
{
    unlink(f->dump);
    /* READY comes before the broker's loop sets its signal handlers, and
       SIGUSR1's default ends a process: an answer first says it runs. */
    (void) harness_info(&f->h, "connections");
    assert_int_equal(kill(f->h.broker.pid, SIGUSR1), 0);
    for (int waited = 0; waited < HARNESS_DEADLINE_MS; waited += 10) {
        char *text = s_read(f->dump);
        if (text)
            return text;
        usleep(10000);
    }
    fail_msg("no state dump in %s", f->dump);
    return NULL;
}

static void s_start(fixture_t *f)
{
    char *flags[] = {"--data-dir", f->data, "--max-attempts", "2", "--heartbeat-ms", "100",
                     "--state-dump", f->dump, NULL};
    harness_start_broker(&f->h, flags);
}

/*  Gets one item, expecting this payload and attempt. */
static uint64_t s_expect(aq_consumer_t *consumer, const char *payload, uint64_t attempt)
{
    aq_item_t item;
    assert_int_equal(aq_consumer_get(consumer, &item, HARNESS_DEADLINE_MS), AQ_OK);
    if (item.size != strlen(payload) || memcmp(item.data, payload, item.size) != 0)
        fail_msg("expected '%s', got '%.*s'", payload, (int) item.size, (const char *) item.data);
    assert_int_equal(item.attempt, attempt);
    return item.id;
}

/*  The whole state read back from the 2.1 journal equals expected-dump.txt
    (derived from what 2.1 wrote: see the fixture's README.txt). */
static void test_a_2_1_journal_is_read_back_whole_and_in_order(void **state)
{
    fixture_t *f = *state;
    s_start(f);
    char *expected = s_read(FIXTURE "/expected-dump.txt");
    assert_non_null(expected);
    char *dump = s_dump(f);
    s_drop_ranks(expected);
    s_drop_ranks(dump);
    s_assert_same("state read back from the 2.1 journal", dump, expected);
    free(dump);
    free(expected);
    /* Once more after a SIGKILL and a new start: what recovery wrote, in
       the new formats, reads back the same. */
    harness_restart_broker(&f->h, (char *[]){"--data-dir", f->data, "--max-attempts", "2",
                                             "--heartbeat-ms", "100", "--state-dump",
                                             f->dump, NULL});
    expected = s_read(FIXTURE "/expected-dump.txt");
    dump = s_dump(f);
    s_drop_ranks(expected);
    s_drop_ranks(dump);
    s_assert_same("state after a second start", dump, expected);
    free(dump);
    free(expected);
}

/*  mail was shut down (drain) under 2.1: puts are still refused, 503. */
static void test_the_queue_shut_down_under_2_1_still_refuses_puts(void **state)
{
    fixture_t *f = *state;
    s_start(f);
    char out[1024] = "", err[1024] = "";
    char *put[] = {"asyncq", "put", "-b", f->h.address, "-q", "mail", "late", NULL};
    assert_int_equal(harness_run_err(put, out, sizeof out, err, sizeof err), 1);
    if (!strstr(err, "SHUT_DOWN (503)"))
        fail_msg("expected a 503 refusal, got: %s", err);
    assert_int_equal(harness_stat(&f->h, "mail", "queued"), 3);
    /* Draining: what it holds is still delivered, in order. */
    aq_status_t rc;
    aq_consumer_t *consumer = aq_consumer_new(f->h.address, "c", "mail", 1, &rc);
    assert_non_null(consumer);
    aq_consumer_ack(consumer, s_expect(consumer, "m2", 2));
    aq_consumer_ack(consumer, s_expect(consumer, "m3", 2));
    aq_consumer_ack(consumer, s_expect(consumer, "m4", 1));
    aq_consumer_flush(consumer);
    aq_consumer_destroy(&consumer);
    harness_wait_stat(&f->h, "mail", "queued", 0);
    assert_int_equal(harness_stat(&f->h, "mail", "delayed"), 1);
}

/*  The 2.1 producer says after the upgrade that nothing was confirmed
    (HELLO seq 1) and sends its puts again: each is kept once, none added. */
static void test_the_2_1_producer_is_still_de_duplicated(void **state)
{
    fixture_t *f = *state;
    s_start(f);
    aq_inbox_t *inbox = aq_inbox_new(AQ_FIELDS_FRAMES_MAX + 1);
    zsock_t *dealer = harness_raw(&f->h, ZMQ_DEALER), *push = harness_raw(&f->h, ZMQ_PUSH);
    harness_hello(dealer, inbox, PRODUCER, 1);
    for (uint64_t seq = 1; seq <= PRODUCER_LAST; seq++) {
        aq_msg_t put = {.cmd = AQ_CMD_PUT, .producer = aq_bytes_str(PRODUCER), .seq = seq,
                        .queue = aq_bytes_str("jobs"), .payload = aq_bytes_str("again")};
        harness_send_msg(push, &put);
    }
    aq_msg_t sync = {.cmd = AQ_CMD_SYNC, .tag = aq_bytes_str("t"),
                     .producer = aq_bytes_str(PRODUCER), .seq = PRODUCER_LAST};
    harness_send_msg(dealer, &sync);
    aq_msg_t reply;
    assert_int_equal(harness_recv(dealer, inbox, &reply), AQ_CMD_SYNCED);
    assert_int_equal(reply.seq, PRODUCER_LAST);
    assert_int_equal(harness_stat(&f->h, "jobs", "queued"), 3);
    /* Its next put is new. */
    aq_msg_t put = {.cmd = AQ_CMD_PUT, .producer = aq_bytes_str(PRODUCER),
                    .seq = PRODUCER_LAST + 1, .queue = aq_bytes_str("jobs"),
                    .payload = aq_bytes_str("j8")};
    harness_send_msg(push, &put);
    sync.seq = PRODUCER_LAST + 1;
    harness_send_msg(dealer, &sync);
    assert_int_equal(harness_recv(dealer, inbox, &reply), AQ_CMD_SYNCED);
    assert_int_equal(reply.seq, PRODUCER_LAST + 1);
    assert_int_equal(harness_stat(&f->h, "jobs", "queued"), 4);
    zsock_destroy(&dealer);
    zsock_destroy(&push);
    aq_inbox_destroy(&inbox);
}

/*  A put and a get on jobs: the new item comes after those read back, which
    come in their order. */
static void test_jobs_still_serves_in_order_after_the_upgrade(void **state)
{
    fixture_t *f = *state;
    s_start(f);
    aq_status_t rc;
    aq_producer_t *producer = aq_producer_new(f->h.address, "p", &rc);
    assert_non_null(producer);
    assert_int_equal(aq_producer_put(producer, "jobs", "new", 3), AQ_OK);
    assert_int_equal(aq_producer_sync(producer, HARNESS_DEADLINE_MS), AQ_OK);
    aq_producer_destroy(&producer);
    aq_consumer_t *consumer = aq_consumer_new(f->h.address, "c", "jobs", 1, &rc);
    assert_non_null(consumer);
    aq_consumer_ack(consumer, s_expect(consumer, "j5", 2));
    aq_consumer_ack(consumer, s_expect(consumer, "j6", 1));
    aq_consumer_ack(consumer, s_expect(consumer, "j7", 1));
    aq_consumer_ack(consumer, s_expect(consumer, "new", 1));
    aq_consumer_flush(consumer);
    aq_consumer_destroy(&consumer);
    harness_wait_stat(&f->h, "jobs", "queued", 0);
    assert_int_equal(harness_stat(&f->h, "jobs", "dead"), 2);
    assert_int_equal(harness_stat(&f->h, "jobs", "delayed"), 1);
}


/*  A record type this version does not read (the journal's own types aside). */
#define NEWER_TYPE 0x7f

static void s_count_newer(void *ctx, uint8_t type, const uint8_t *body, size_t size)
{
    (void) body;
    (void) size;
    if (type == NEWER_TYPE)
        (*(int *) ctx)++;
}

/*  The journal of dir, opened; *newer counts its records of NEWER_TYPE. */
static journal_t *s_journal(const char *dir, int *newer)
{
    journal_config_t config = {.dir = dir, .fsync = JOURNAL_FSYNC_ALWAYS};
    journal_status_t status;
    char error[512];
    journal_t *journal = journal_open(&config, s_count_newer, newer, NULL, &status, error,
                                      sizeof error);
    if (!journal)
        fail_msg("%s", error);
    return journal;
}

/*  Records of NEWER_TYPE in the journal of dir. */
static int s_newer_records(const char *dir)
{
    int count = 0;
    journal_t *journal = s_journal(dir, &count);
    journal_close(&journal);
    return count;
}

/*  The 2.1 journal with one record appended that a newer broker might
    write: this broker refuses to start on it, says why, and leaves it
    there (served without it, the state would lack what it says); the
    directory as it was serves once that record is not in it. */
static void test_a_record_this_version_does_not_read_stops_the_broker(void **state)
{
    fixture_t *f = *state;
    int none = 0;
    journal_t *journal = s_journal(f->data, &none);
    uint8_t *body = journal_begin(journal, NEWER_TYPE, 5);
    assert_non_null(body);
    memcpy(body, "newer", 5);
    journal_end(journal);
    journal_close(&journal);
    assert_int_equal(s_newer_records(f->data), 1);

    char err[4096], bind[32];
    snprintf(bind, sizeof bind, "127.0.0.1:%d", harness_free_ports(2));
    char *argv[] = {"asyncq-broker", "--bind", bind, "--data-dir", f->data, NULL};
    assert_int_equal(harness_run_err(argv, NULL, 0, err, sizeof err), 1);
    if (!strstr(err, "1 records of a type this version") || !strstr(err, "(type 127, the first)")
        || !strstr(err, "a newer asyncq-broker wrote them"))
        fail_msg("the broker did not say why it stopped: %s", err);
    assert_int_equal(s_newer_records(f->data), 1); /* left as it was */

    /* The fixture alone (a fresh copy) still serves. */
    s_teardown(state);
    s_setup(state);
    f = *state;
    s_start(f);
    harness_assert_serving(&f->h, "after-the-refusal");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_a_2_1_journal_is_read_back_whole_and_in_order,
                                        s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_the_queue_shut_down_under_2_1_still_refuses_puts,
                                        s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_the_2_1_producer_is_still_de_duplicated, s_setup,
                                        s_teardown),
        cmocka_unit_test_setup_teardown(test_jobs_still_serves_in_order_after_the_upgrade,
                                        s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(
            test_a_record_this_version_does_not_read_stops_the_broker, s_setup, s_teardown),
    };
    return harness_run_group(tests);
}
