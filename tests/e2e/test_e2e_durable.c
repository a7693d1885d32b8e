/*  A durable broker (--data-dir): what it confirmed survives SIGKILL and a
    restart (queued, in flight, delayed, dead items, their order and
    attempts, each producer's de-duplication, shutdown states); one broker
    per directory; a torn tail is cut, a damaged middle or a missing segment
    (in the middle, or the oldest) refuses to start naming it and --repair
    keeps the rest and says what is gone; the log stays proportional to what is live; a
    full disk refuses puts with 507 and the broker resumes by itself. */
#define _XOPEN_SOURCE 700
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include "asyncq/program.h"
#include "harness.h"

typedef struct {
    harness_t h;
    char dir[64];
    char *flags[16];
} fixture_t;

static int s_setup(void **state)
{
    fixture_t *f = calloc(1, sizeof *f);
    assert_non_null(f);
    snprintf(f->dir, sizeof f->dir, "/tmp/asyncq-durable-XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    char *flags[] = {"--data-dir", f->dir, "--heartbeat-ms", "100", "--max-attempts", "2", NULL};
    memcpy(f->flags, flags, sizeof flags);
    *state = f;
    return 0;
}

static int s_teardown(void **state)
{
    fixture_t *f = *state;
    harness_stop(&f->h);
    umount2(f->dir, MNT_DETACH); /* the disk-full test's tmpfs, if any */
    harness_remove_tree(f->dir);
    free(f);
    return 0;
}

/*  Puts `count` items "<prefix><i>" on queue as producer `name`, all
    confirmed; `each`: each confirmed before the next put (a write, so a
    frame of the journal, each). */
static void s_put(const harness_t *h, const char *name, const char *queue, int count,
                  const char *prefix, int each)
{
    aq_status_t rc;
    aq_producer_t *producer = aq_producer_new(h->address, name, &rc);
    assert_non_null(producer);
    for (int i = 0; i < count; i++) {
        char item[64];
        int size = snprintf(item, sizeof item, "%s%d", prefix, i);
        assert_int_equal(aq_producer_put(producer, queue, item, (size_t) size), AQ_OK);
        if (each || i == count - 1)
            assert_int_equal(aq_producer_sync(producer, HARNESS_DEADLINE_MS), AQ_OK);
    }
    aq_producer_destroy(&producer);
}

static void s_put_all(const harness_t *h, const char *name, const char *queue, int count,
                      const char *prefix)
{
    s_put(h, name, queue, count, prefix, 0);
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

static aq_consumer_t *s_consumer(const harness_t *h, const char *queue, uint64_t credit)
{
    aq_status_t rc;
    aq_consumer_t *consumer = aq_consumer_new(h->address, "c", queue, credit, &rc);
    assert_non_null(consumer);
    return consumer;
}

static void test_a_restart_keeps_every_item_in_its_state_and_order(void **state)
{
    fixture_t *f = *state;
    harness_t *h = &f->h;
    harness_start_broker(h, f->flags);
    s_put_all(h, "p", "q", 5, "a");
    s_put_all(h, "p", "later", 1, "d");
    s_put_all(h, "p", "doomed", 1, "x");

    /* q: a0 acked, a1 in flight when the broker dies. */
    aq_consumer_t *consumer = s_consumer(h, "q", 1);
    aq_consumer_ack(consumer, s_expect(consumer, "a0", 1));
    aq_consumer_flush(consumer);
    harness_wait_stat(h, "q", "acked", 1);
    s_expect(consumer, "a1", 1);
    aq_consumer_destroy(&consumer);
    /* later: nacked with an hour's delay. */
    consumer = s_consumer(h, "later", 1);
    assert_int_equal(aq_consumer_nack(consumer, s_expect(consumer, "d0", 1), 3600000, "later"),
                     AQ_OK);
    aq_consumer_flush(consumer);
    harness_wait_stat(h, "later", "delayed", 1);
    aq_consumer_destroy(&consumer);
    /* doomed: two deliveries (--max-attempts 2), then dead. */
    consumer = s_consumer(h, "doomed", 1);
    aq_consumer_nack(consumer, s_expect(consumer, "x0", 1), 0, "no");
    aq_consumer_nack(consumer, s_expect(consumer, "x0", 2), 0, "no");
    aq_consumer_flush(consumer);
    harness_wait_stat(h, "doomed", "dead", 1);
    aq_consumer_destroy(&consumer);

    harness_restart_broker(h, f->flags); /* SIGKILL */

    harness_wait_stat(h, "q", "queued", 4);
    harness_wait_stat(h, "later", "delayed", 1);
    harness_wait_stat(h, "doomed", "dead", 1);
    consumer = s_consumer(h, "q", 1);
    /* a1 was in flight: back first, its first delivery counted. */
    aq_consumer_ack(consumer, s_expect(consumer, "a1", 2));
    for (int i = 2; i < 5; i++) {
        char payload[8];
        snprintf(payload, sizeof payload, "a%d", i);
        aq_consumer_ack(consumer, s_expect(consumer, payload, 1));
    }
    aq_consumer_flush(consumer);
    harness_wait_stat(h, "q", "outstanding", 0);
    aq_consumer_destroy(&consumer);

    /* An ack survives a restart too: nothing of q comes back. */
    harness_restart_broker(h, f->flags);
    harness_wait_stat(h, "later", "delayed", 1);
    assert_int_equal(harness_stat(h, "q", "queued"), 0);
    aq_session_t *session = harness_session(h);
    aq_join_result_t result;
    assert_int_equal(aq_join(session, "q", 5000, AQ_JOIN_BEFORE, &result), AQ_OK);
    aq_session_destroy(&session);
    harness_assert_serving(h, "q");
}

/*  A producer that says after the restart that nothing was confirmed (its
    HELLO seq 1) and sends its 100 puts again: the broker recovered the
    producer's next and keeps each put once. */
static void test_a_producer_resending_after_a_restart_enqueues_each_put_once(void **state)
{
    fixture_t *f = *state;
    harness_t *h = &f->h;
    harness_start_broker(h, f->flags);
    aq_inbox_t *inbox = aq_inbox_new(AQ_FIELDS_FRAMES_MAX + 1);
    for (int round = 0; round < 2; round++) {
        zsock_t *dealer = harness_raw(h, ZMQ_DEALER), *push = harness_raw(h, ZMQ_PUSH);
        harness_hello(dealer, inbox, "resender", 1);
        for (uint64_t seq = 1; seq <= 100; seq++) {
            char payload[16];
            snprintf(payload, sizeof payload, "r%llu", (unsigned long long) seq);
            aq_msg_t put = {.cmd = AQ_CMD_PUT, .producer = aq_bytes_str("resender"), .seq = seq,
                            .queue = aq_bytes_str("q"), .payload = aq_bytes_str(payload)};
            harness_send_msg(push, &put);
        }
        aq_msg_t sync = {.cmd = AQ_CMD_SYNC, .tag = aq_bytes_str("t"),
                         .producer = aq_bytes_str("resender"), .seq = 100};
        harness_send_msg(dealer, &sync);
        aq_msg_t reply;
        assert_int_equal(harness_recv(dealer, inbox, &reply), AQ_CMD_SYNCED);
        assert_int_equal(reply.seq, 100);
        zsock_destroy(&dealer);
        zsock_destroy(&push);
        assert_int_equal(harness_stat(h, "q", "queued"), 100);
        if (round == 0)
            harness_restart_broker(h, f->flags);
    }
    aq_inbox_destroy(&inbox);
    harness_assert_serving(h, "other");
}

static void s_ignore_line(void *ctx, const char *line)
{
    (void) ctx, (void) line;
}

/*  --max-queues limits what clients make, not what the journal holds: a
    restart with a smaller limit recovers every queue (it stopped, saying
    "out of memory", before). */
static void test_a_smaller_max_queues_still_recovers_every_queue(void **state)
{
    fixture_t *f = *state;
    harness_t *h = &f->h;
    harness_start_broker(h, f->flags);
    s_put_all(h, "p", "qa", 1, "a");
    s_put_all(h, "p", "qb", 2, "b");
    s_put_all(h, "p", "qc", 3, "c");
    char *flags[16];
    int n = 0;
    while (f->flags[n])
        flags[n] = f->flags[n], n++;
    flags[n++] = "--max-queues";
    flags[n++] = "2";
    flags[n] = NULL;
    harness_restart_broker(h, flags); /* SIGKILL */
    harness_wait_stat(h, "qa", "queued", 1);
    harness_wait_stat(h, "qb", "queued", 2);
    harness_wait_stat(h, "qc", "queued", 3);
    /* An existing queue serves. */
    aq_consumer_t *consumer = s_consumer(h, "qa", 1);
    aq_consumer_ack(consumer, s_expect(consumer, "a0", 1));
    aq_consumer_flush(consumer);
    harness_wait_stat(h, "qa", "acked", 1);
    aq_consumer_destroy(&consumer);
}

static void test_a_shutdown_survives_a_restart(void **state)
{
    fixture_t *f = *state;
    harness_t *h = &f->h;
    harness_start_broker(h, f->flags);
    s_put_all(h, "p", "closing", 2, "s");
    aq_session_t *session = harness_session(h);
    assert_int_equal(aq_shutdown(session, "closing", AQ_SHUTDOWN_DRAIN, s_ignore_line, NULL),
                     AQ_OK);
    aq_session_destroy(&session);
    harness_restart_broker(h, f->flags);
    harness_wait_stat(h, "closing", "queued", 2);
    aq_status_t rc;
    aq_producer_t *producer = aq_producer_new(h->address, "p", &rc);
    assert_non_null(producer);
    aq_producer_put(producer, "closing", "no", 2);
    assert_int_equal(aq_producer_sync(producer, HARNESS_DEADLINE_MS), AQ_REFUSED);
    aq_producer_destroy(&producer);
    aq_consumer_t *consumer = s_consumer(h, "closing", 2);
    aq_consumer_ack(consumer, s_expect(consumer, "s0", 1));
    aq_consumer_ack(consumer, s_expect(consumer, "s1", 1));
    aq_consumer_destroy(&consumer);
    harness_assert_serving(h, "open");
}

/*  Runs asyncq-broker with these arguments to its end; its stderr in err. */
static int s_broker_run(char **args, char *err, size_t size)
{
    char path[4096], log[] = "/tmp/asyncq-durable-err-XXXXXX";
    assert_int_equal(aq_program_path("asyncq-broker", path, sizeof path), 0);
    int fd = mkstemp(log);
    assert_true(fd >= 0);
    char *argv[16] = {path};
    for (int i = 0; args[i] && i < 14; i++)
        argv[i + 1] = args[i];
    aq_process_t process;
    assert_int_equal(aq_process_spawn_logged(&process, argv, 0, AQ_STDIN_NULL, log), 0);
    if (aq_process_wait(&process, HARNESS_DEADLINE_MS) != 1) {
        aq_process_stop(&process, SIGKILL, 1000);
        unlink(log);
        fail_msg("asyncq-broker %s did not exit: it started where it should have refused",
                 args[0]);
    }
    ssize_t got = pread(fd, err, size - 1, 0);
    err[got > 0 ? got : 0] = '\0';
    close(fd);
    unlink(log);
    return process.exit_code;
}

static void test_a_second_broker_on_the_same_directory_is_refused(void **state)
{
    fixture_t *f = *state;
    harness_start_broker(&f->h, f->flags);
    char err[4096];
    char *args[] = {"--bind", "tcp://127.0.0.1:0", "--data-dir", f->dir, NULL};
    assert_int_equal(s_broker_run(args, err, sizeof err), AQ_EXIT_LOCKED);
    assert_non_null(strstr(err, "another broker"));
    assert_non_null(strstr(err, f->dir));
    harness_assert_serving(&f->h, "q");
}

static void s_segment(const fixture_t *f, char *path, size_t size)
{
    snprintf(path, size, "%s/0000000000000001.log", f->dir);
}

static void s_kill_broker(harness_t *h)
{
    aq_process_stop(&h->broker, SIGKILL, 1000);
    h->broker.pid = 0;
}

static void test_a_torn_tail_is_cut_and_the_rest_recovered(void **state)
{
    fixture_t *f = *state;
    harness_t *h = &f->h;
    harness_start_broker(h, f->flags);
    s_put(h, "p", "q", 10, "t", 1);
    s_kill_broker(h);
    char path[4200];
    s_segment(f, path, sizeof path);
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    /* A crash in the middle of the last write (its frame: the last put). */
    assert_int_equal(truncate(path, st.st_size - 3), 0);
    harness_start_broker(h, f->flags);
    harness_wait_stat(h, "q", "queued", 9);
    harness_assert_serving(h, "serving");
}

static void test_damage_in_the_middle_refuses_to_start_and_repair_keeps_the_rest(void **state)
{
    fixture_t *f = *state;
    harness_t *h = &f->h;
    harness_start_broker(h, f->flags);
    s_put(h, "p", "q", 10, "m", 1);
    s_kill_broker(h);
    char path[4200];
    s_segment(f, path, sizeof path);
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    int fd = open(path, O_RDWR);
    assert_true(fd >= 0);
    off_t middle = st.st_size / 2;
    uint8_t byte;
    assert_int_equal(pread(fd, &byte, 1, middle), 1);
    byte ^= 0x5a;
    assert_int_equal(pwrite(fd, &byte, 1, middle), 1);
    close(fd);

    char err[4096];
    char *start[] = {"--bind", "tcp://127.0.0.1:0", "--data-dir", f->dir, NULL};
    assert_int_equal(s_broker_run(start, err, sizeof err), AQ_EXIT_CORRUPT);
    assert_non_null(strstr(err, path));
    assert_non_null(strstr(err, "offset"));
    assert_non_null(strstr(err, "--repair"));
    char *repair[] = {"--data-dir", f->dir, "--repair", NULL};
    assert_int_equal(s_broker_run(repair, err, sizeof err), AQ_EXIT_OK);

    harness_start_broker(h, f->flags);
    harness_wait_stat(h, "q", "queued", 9); /* the frame of one put was damaged */
    harness_assert_serving(h, "serving");
}

/*  Runs asyncq-broker with these arguments to its end; its stdout in out. */
static int s_broker_report(char **args, char *out, size_t size)
{
    char path[4096];
    assert_int_equal(aq_program_path("asyncq-broker", path, sizeof path), 0);
    char *argv[16] = {path};
    for (int i = 0; args[i] && i < 14; i++)
        argv[i + 1] = args[i];
    aq_process_t process;
    assert_int_equal(aq_process_spawn(&process, argv, 1, AQ_STDIN_NULL), 0);
    size_t used = 0;
    char line[8192];
    out[0] = '\0';
    while (aq_process_read_line(&process, line, sizeof line, HARNESS_DEADLINE_MS) == 1) {
        int wrote = snprintf(out + used, size - used, "%s\n", line);
        if (wrote > 0 && (size_t) wrote < size - used)
            used += (size_t) wrote;
    }
    assert_int_equal(aq_process_wait(&process, HARNESS_DEADLINE_MS), 1);
    return process.exit_code;
}

/*  600 items in segments of 4 KiB (about 10); segment `number` deleted.
    The start is refused, naming it; --repair says what is gone and keeps
    the rest; the broker then starts with what is left and serves. */
static void s_lose_segment(fixture_t *f, unsigned number, const char *says)
{
    harness_t *h = &f->h;
    char *flags[] = {"--data-dir", f->dir, "--segment-bytes", "4096", NULL};
    harness_start_broker(h, flags);
    aq_status_t rc;
    aq_producer_t *producer = aq_producer_new(h->address, "p", &rc);
    assert_non_null(producer);
    for (int i = 0; i < 600; i++) {
        char item[64];
        int size = snprintf(item, sizeof item, "g%d", i);
        assert_int_equal(aq_producer_put(producer, "q", item, (size_t) size), AQ_OK);
        if (i % 20 == 19) /* a journal write each: the segments fill one after another */
            assert_int_equal(aq_producer_sync(producer, HARNESS_DEADLINE_MS), AQ_OK);
    }
    aq_producer_destroy(&producer);
    s_kill_broker(h);
    char path[4200], next[4200];
    snprintf(path, sizeof path, "%s/%016x.log", f->dir, number);
    snprintf(next, sizeof next, "%s/%016x.log", f->dir, number + 2);
    struct stat st;
    assert_int_equal(stat(next, &st), 0); /* segments after it */
    assert_int_equal(unlink(path), 0);

    char err[4096];
    char *start[] = {"--bind", "tcp://127.0.0.1:0", "--data-dir", f->dir, NULL};
    assert_int_equal(s_broker_run(start, err, sizeof err), AQ_EXIT_CORRUPT);
    assert_non_null(strstr(err, path));
    assert_non_null(strstr(err, "missing"));
    assert_non_null(strstr(err, "--repair"));
    /* Refused again: nothing was changed by the refusal. */
    assert_int_equal(s_broker_run(start, err, sizeof err), AQ_EXIT_CORRUPT);

    char report[32768];
    char *repair[] = {"--data-dir", f->dir, "--repair", NULL};
    assert_int_equal(s_broker_report(repair, report, sizeof report), AQ_EXIT_OK);
    print_message("%s", report);
    assert_non_null(strstr(report, path));
    assert_non_null(strstr(report, "lost"));
    assert_non_null(strstr(report, says));

    harness_start_broker(h, flags);
    uint64_t queued = harness_stat(h, "q", "queued");
    print_message("%llu of 600 items left\n", (unsigned long long) queued);
    assert_true(queued > 400 && queued < 600);
    /* The items left come in order, and the broker takes new ones. */
    aq_consumer_t *consumer = s_consumer(h, "q", 10);
    aq_item_t item;
    assert_int_equal(aq_consumer_get(consumer, &item, HARNESS_DEADLINE_MS), AQ_OK);
    assert_true(item.size >= 2 && memcmp(item.data, "g", 1) == 0);
    aq_consumer_ack(consumer, item.id);
    aq_consumer_destroy(&consumer);
    harness_assert_serving(h, "serving");
    /* And a restart after the repair starts at once, with the same items. */
    harness_restart_broker(h, flags);
    harness_wait_stat(h, "q", "queued", queued - 1);
    harness_assert_serving(h, "serving");
}

static void test_a_missing_middle_segment_refuses_to_start_and_repair_says_what_is_gone(
    void **state)
{
    s_lose_segment(*state, 3, "records");
}

static void test_a_missing_oldest_segment_refuses_to_start_and_repair_says_what_is_gone(
    void **state)
{
    s_lose_segment(*state, 1, "oldest segment the log needs");
}

static uint64_t s_dir_bytes(const char *dir)
{
    char command[256], out[64] = "";
    snprintf(command, sizeof command, "du -sb %s", dir);
    FILE *pipe = popen(command, "r");
    assert_non_null(pipe);
    assert_non_null(fgets(out, sizeof out, pipe));
    pclose(pipe);
    return strtoull(out, NULL, 10);
}

/*  50 000 items through a backlog of at most 2 000, with 64 KiB segments:
    the directory holds what is live, not what was ever put. */
static void test_the_log_stays_proportional_to_what_is_live(void **state)
{
    fixture_t *f = *state;
    harness_t *h = &f->h;
    char *flags[] = {"--data-dir", f->dir, "--segment-bytes", "65536", NULL};
    harness_start_broker(h, flags);
    aq_status_t rc;
    aq_producer_t *producer = aq_producer_new(h->address, "p", &rc);
    aq_consumer_t *consumer = s_consumer(h, "q", 100);
    assert_non_null(producer);
    char payload[64];
    memset(payload, 'x', sizeof payload);
    uint64_t acked = 0, total = 50000;
    for (uint64_t put = 0; put < total; put += 1000) {
        for (int i = 0; i < 1000; i++)
            assert_int_equal(aq_producer_put(producer, "q", payload, sizeof payload), AQ_OK);
        assert_int_equal(aq_producer_sync(producer, HARNESS_DEADLINE_MS), AQ_OK);
        while (acked + 2000 < put + 1000) {
            aq_item_t item;
            assert_int_equal(aq_consumer_get(consumer, &item, HARNESS_DEADLINE_MS), AQ_OK);
            aq_consumer_ack(consumer, item.id);
            acked++;
        }
    }
    while (acked < total) {
        aq_item_t item;
        assert_int_equal(aq_consumer_get(consumer, &item, HARNESS_DEADLINE_MS), AQ_OK);
        aq_consumer_ack(consumer, item.id);
        acked++;
    }
    aq_consumer_flush(consumer);
    harness_wait_stat(h, "q", "acked", total);
    aq_producer_destroy(&producer);
    aq_consumer_destroy(&consumer);
    /* Every item ever put took about 150 bytes of log (7.5 MB); what is
       left is a few segments. */
    uint64_t bytes = s_dir_bytes(f->dir);
    print_message("data directory after %llu items: %llu bytes\n", (unsigned long long) total,
                  (unsigned long long) bytes);
    assert_true(bytes < 512 * 1024);
    harness_restart_broker(h, flags);
    assert_int_equal(harness_stat(h, "q", "outstanding"), 0);
    harness_assert_serving(h, "q");
}

/*  A 1 MiB tmpfs mostly taken by another file: puts fill the rest and are
    refused with 507; the file goes, and the broker takes puts again by
    itself; every put it confirmed is there after a restart. */
static void test_a_full_disk_refuses_puts_and_the_broker_resumes_when_space_returns(void **state)
{
    fixture_t *f = *state;
    harness_t *h = &f->h;
    if (mount("tmpfs", f->dir, "tmpfs", 0, "size=1m") != 0)
        fail_msg("mounting a tmpfs needs root (CI runs as root): %s", strerror(errno));
    char data[200], filler[200];
    snprintf(data, sizeof data, "%s/data", f->dir);
    snprintf(filler, sizeof filler, "%s/filler", f->dir);
    int fd = open(filler, O_WRONLY | O_CREAT, 0600);
    assert_true(fd >= 0);
    static char block[64 * 1024];
    for (int i = 0; i < 12; i++)
        assert_int_equal(write(fd, block, sizeof block), (ssize_t) sizeof block);
    close(fd);
    char *flags[] = {"--data-dir", data, "--heartbeat-ms", "100", NULL};
    harness_start_broker(h, flags);

    aq_status_t rc;
    aq_producer_t *producer = aq_producer_new(h->address, "p", &rc);
    assert_non_null(producer);
    static char item[4096];
    uint64_t confirmed = 0;
    /* Each SYNC waits for its puts' records; once the disk is full they are
       never confirmed (a time-out) or, later, refused. */
    for (int round = 0; round < 200 && rc == AQ_OK; round++) {
        for (int i = 0; i < 10; i++)
            assert_int_equal(aq_producer_put(producer, "q", item, sizeof item), AQ_OK);
        rc = aq_producer_sync(producer, 2000);
        if (rc == AQ_OK)
            confirmed += 10;
    }
    assert_true(rc == AQ_TIMEOUT || rc == AQ_REFUSED);
    assert_true(confirmed > 0);
    aq_producer_destroy(&producer);
    /* A new put is refused, with the reason. */
    aq_producer_t *refused = aq_producer_new(h->address, "p1", &rc);
    assert_non_null(refused);
    assert_int_equal(aq_producer_put(refused, "q", "no", 2), AQ_OK);
    assert_int_equal(aq_producer_sync(refused, HARNESS_DEADLINE_MS), AQ_REFUSED);
    assert_int_equal(aq_session_error(aq_producer_session(refused))->code, AQ_STORAGE);
    aq_producer_destroy(&refused);
    /* Gets still work. */
    assert_true(harness_stat(h, "q", "queued") >= confirmed);

    unlink(filler);
    /* Retried every second: puts are taken again. A producer's sync says
       REFUSED once any of its puts was: a new producer each try. */
    int64_t deadline = zclock_mono() + HARNESS_DEADLINE_MS;
    do {
        producer = aq_producer_new(h->address, "p2", &rc);
        assert_non_null(producer);
        assert_int_equal(aq_producer_put(producer, "q", "ok", 2), AQ_OK);
        rc = aq_producer_sync(producer, HARNESS_DEADLINE_MS);
        aq_producer_destroy(&producer);
    } while (rc == AQ_REFUSED && zclock_mono() < deadline);
    assert_int_equal(rc, AQ_OK);
    uint64_t held = harness_stat(h, "q", "queued");

    harness_restart_broker(h, flags);
    harness_wait_stat(h, "q", "queued", held);
    harness_assert_serving(h, "other");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_a_restart_keeps_every_item_in_its_state_and_order,
                                        s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(
            test_a_producer_resending_after_a_restart_enqueues_each_put_once, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_a_shutdown_survives_a_restart, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_a_smaller_max_queues_still_recovers_every_queue,
                                        s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_a_second_broker_on_the_same_directory_is_refused,
                                        s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_a_torn_tail_is_cut_and_the_rest_recovered, s_setup,
                                        s_teardown),
        cmocka_unit_test_setup_teardown(
            test_damage_in_the_middle_refuses_to_start_and_repair_keeps_the_rest, s_setup,
            s_teardown),
        cmocka_unit_test_setup_teardown(
            test_a_missing_middle_segment_refuses_to_start_and_repair_says_what_is_gone, s_setup,
            s_teardown),
        cmocka_unit_test_setup_teardown(
            test_a_missing_oldest_segment_refuses_to_start_and_repair_says_what_is_gone, s_setup,
            s_teardown),
        cmocka_unit_test_setup_teardown(test_the_log_stays_proportional_to_what_is_live, s_setup,
                                        s_teardown),
        cmocka_unit_test_setup_teardown(
            test_a_full_disk_refuses_puts_and_the_broker_resumes_when_space_returns, s_setup,
            s_teardown),
    };
    return harness_run_group(tests);
}
