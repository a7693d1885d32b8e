/*  What a person sees and what a script reads: asyncq stats as a table on a
    pseudo-terminal, the broker's key=value lines when piped, JSON that
    parses; --watch redrawing until SIGINT; the progress line of asyncq join
    and of asyncq-producer --stdin on a terminal, and nothing of it when
    their output is piped. */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <poll.h>
#include <pty.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"

#define MAX_RUNS 4
#define OUTPUT_MAX (1 << 18)

/*  A program started by a test: its pid, the terminal's (or pipe's) read
    end and everything it wrote so far. */
typedef struct {
    aq_process_t process;
    char out[OUTPUT_MAX];
    size_t used;
    int ended; /* end of output seen */
} run_t;

typedef struct {
    harness_t broker;
    run_t runs[MAX_RUNS];
    size_t count;
} fixture_t;

static int s_setup(void **state)
{
    fixture_t *f = calloc(1, sizeof *f);
    assert_non_null(f);
    harness_start_broker(&f->broker, NULL);
    *state = f;
    return 0;
}

/*  Every program a test started is gone after it, passed or failed. */
static int s_teardown(void **state)
{
    fixture_t *f = *state;
    for (size_t i = 0; i < f->count; i++) {
        aq_process_stop(&f->runs[i].process, SIGKILL, 1000);
        if (f->runs[i].process.out_fd >= 0)
            close(f->runs[i].process.out_fd);
    }
    harness_stop(&f->broker);
    free(f);
    return 0;
}

extern char **environ;

/*  The environment with TERM set, as on a person's terminal (a test run may
    have none, or "dumb"). Made before fork: the child of a process with
    threads may only make async-signal-safe calls before exec. */
static char **s_environment(void)
{
    size_t count = 0;
    while (environ[count])
        count++;
    char **env = calloc(count + 2, sizeof *env);
    assert_non_null(env);
    size_t used = 0;
    for (size_t i = 0; i < count; i++)
        if (strncmp(environ[i], "TERM=", 5) != 0)
            env[used++] = environ[i];
    env[used] = "TERM=xterm";
    return env;
}

/*  In the child: stdin from the input pipe if there is one, the other
    ends of the pipes closed (or the program would never see the end of
    its input), then the program. */
static void s_child_exec(char **argv, char **env, const int in[2], const int out[2])
{
    if (out[0] >= 0) {
        int null = open("/dev/null", O_RDONLY);
        dup2(null, STDIN_FILENO);
        dup2(out[1], STDOUT_FILENO);
        dup2(out[1], STDERR_FILENO);
        close(out[0]);
        close(out[1]);
    }
    if (in[0] >= 0) {
        dup2(in[0], STDIN_FILENO);
        close(in[0]);
        close(in[1]);
    }
    execve(argv[0], argv, env);
    _exit(127);
}

/*  Starts a program of build/bin with stdin, stdout and stderr on a new
    80-column pseudo-terminal (tty) or with stdout and stderr on one pipe
    and stdin from /dev/null. `input`, if given, is its stdin instead,
    through a pipe closed once written. */
static run_t *s_start(fixture_t *f, char **argv, int tty, const char *input)
{
    assert_true(f->count < MAX_RUNS);
    run_t *run = &f->runs[f->count++];
    memset(run, 0, sizeof *run);
    run->process.out_fd = run->process.in_fd = -1;
    char path[4096];
    assert_int_equal(aq_program_path(argv[0], path, sizeof path), 0);
    char *args[32] = {path};
    for (size_t i = 1; argv[i]; i++) {
        assert_true(i < 31);
        args[i] = argv[i];
    }
    char **env = s_environment();
    int in[2] = {-1, -1}, out[2] = {-1, -1};
    if (input)
        assert_int_equal(pipe(in), 0);
    pid_t pid;
    if (tty) {
        struct winsize size = {.ws_row = 24, .ws_col = 80};
        pid = forkpty(&run->process.out_fd, NULL, NULL, &size);
    }
    else {
        assert_int_equal(pipe(out), 0);
        pid = fork();
    }
    assert_true(pid >= 0);
    if (pid == 0)
        s_child_exec(args, env, in, out);
    free(env);
    run->process.pid = pid;
    if (!tty) {
        close(out[1]);
        run->process.out_fd = out[0];
    }
    if (input) {
        close(in[0]);
        size_t length = strlen(input);
        assert_true(write(in[1], input, length) == (ssize_t) length);
        close(in[1]);
    }
    return run;
}

/*  Reads what is there within timeout_ms. Returns 0 once the output has
    ended (a terminal says EIO when the program and its children are gone). */
static int s_read(run_t *run, int timeout_ms)
{
    if (run->ended)
        return 0;
    struct pollfd item = {run->process.out_fd, POLLIN, 0};
    if (poll(&item, 1, timeout_ms) <= 0)
        return 1;
    assert_true(run->used + 4096 < sizeof run->out);
    ssize_t got = read(run->process.out_fd, run->out + run->used, 4096);
    if (got < 0 && errno == EINTR)
        return 1;
    if (got <= 0) {
        run->ended = 1;
        return 0;
    }
    run->used += (size_t) got;
    run->out[run->used] = '\0';
    return 1;
}

static size_t s_occurrences(const char *text, const char *part)
{
    size_t count = 0;
    for (const char *at = strstr(text, part); at; at = strstr(at + 1, part))
        count++;
    return count;
}

/*  Waits until `part` has been written `times` times; fails the test after
    the deadline or if the program ends first. */
static void s_expect(run_t *run, const char *part, size_t times)
{
    int64_t deadline = zclock_mono() + HARNESS_DEADLINE_MS;
    while (s_occurrences(run->out, part) < times) {
        if (zclock_mono() > deadline || !s_read(run, 200))
            fail_msg("waited for '%s' x%zu; got:\n%s", part, times, run->out);
    }
}

/*  Reads to the end of its output and waits for it to exit; returns the
    exit code. The output loses the carriage returns a terminal adds to
    each newline, so that it reads as the program wrote it. */
static int s_finish(run_t *run)
{
    int64_t deadline = zclock_mono() + HARNESS_DEADLINE_MS;
    while (s_read(run, 200))
        if (zclock_mono() > deadline)
            fail_msg("output did not end; got:\n%s", run->out);
    assert_true(harness_wait_exit(&run->process) >= 0);
    return run->process.exit_code;
}

static void s_strip_crlf(char *text)
{
    char *to = text;
    for (const char *from = text; *from; from++)
        if (!(from[0] == '\r' && from[1] == '\n'))
            *to++ = *from;
    *to = '\0';
}

static void s_fill(const fixture_t *f, const char *queue, int count)
{
    aq_status_t rc;
    aq_producer_t *producer = aq_producer_new(f->broker.address, "fill", &rc);
    assert_non_null(producer);
    for (int i = 0; i < count; i++)
        assert_int_equal(aq_producer_put(producer, queue, "x", 1), AQ_OK);
    assert_int_equal(aq_producer_sync(producer, HARNESS_DEADLINE_MS), AQ_OK);
    aq_producer_destroy(&producer);
}

/*  Gets and acks `count` items of the queue. */
static void s_consume(aq_consumer_t *consumer, int count)
{
    for (int i = 0; i < count; i++) {
        aq_item_t item;
        assert_int_equal(aq_consumer_get(consumer, &item, HARNESS_DEADLINE_MS), AQ_OK);
        assert_int_equal(aq_consumer_ack(consumer, item.id), AQ_OK);
    }
    assert_int_equal(aq_consumer_flush(consumer), AQ_OK);
}

/*  The line of `text` that starts with `prefix`, copied into line. */
static int s_line(const char *text, const char *prefix, char *line, size_t size)
{
    const char *at = text;
    while (at) {
        if (strncmp(at, prefix, strlen(prefix)) == 0) {
            snprintf(line, size, "%.*s", (int) strcspn(at, "\r\n"), at);
            return 1;
        }
        at = strchr(at, '\n');
        at = at ? at + 1 : NULL;
    }
    return 0;
}

/*  The column where the word that ends at or spans the header's `title`
    ends in `row`: right-aligned numbers end where their title ends. */
static void s_assert_right_aligned(const char *header, const char *row, const char *title,
                                   const char *value)
{
    char padded[64];
    snprintf(padded, sizeof padded, " %s", title);
    const char *at = strstr(header, padded);
    assert_non_null(at);
    size_t end = (size_t) (at - header) + strlen(padded);
    assert_true(strlen(row) >= end);
    assert_true(end >= strlen(value));
    if (memcmp(row + end - strlen(value), value, strlen(value)) != 0
        || (row[end] != ' ' && row[end] != '\0') || row[end - strlen(value) - 1] != ' ')
        fail_msg("%s: '%s' does not end under its title\n%s\n%s", title, value, header, row);
}

static void test_stats_is_an_aligned_table_on_a_terminal(void **state)
{
    fixture_t *f = *state;
    s_fill(f, "jobs", 1234);
    s_fill(f, "other", 5);
    char *argv[] = {"asyncq", "stats", "-b", f->broker.address, NULL};
    run_t *run = s_start(f, argv, 1, NULL);
    assert_int_equal(s_finish(run), 0);
    assert_null(strchr(run->out, '\033')); /* once: no escapes, nothing to redraw */
    char header[256], jobs[256], other[256];
    assert_true(s_line(run->out, "QUEUE ", header, sizeof header));
    assert_true(s_line(run->out, "jobs ", jobs, sizeof jobs));
    assert_true(s_line(run->out, "other ", other, sizeof other));
    const char *titles[] = {"QUEUED", "INFLIGHT", "DELAYED", "DEAD", "ACKED", "CONSUMERS"};
    const char *at = header;
    for (size_t i = 0; i < sizeof titles / sizeof titles[0]; i++) {
        at = strstr(at, titles[i]);
        assert_non_null(at); /* every title, in this order */
    }
    assert_null(strstr(header, "PUT/S")); /* rates with --watch only */
    s_assert_right_aligned(header, jobs, "QUEUED", "1,234");
    s_assert_right_aligned(header, other, "QUEUED", "5");
    for (size_t i = 1; i < sizeof titles / sizeof titles[0]; i++) {
        s_assert_right_aligned(header, jobs, titles[i], "0");
        s_assert_right_aligned(header, other, titles[i], "0");
    }
    /* Words to the left: names under QUEUE, states under STATE. */
    size_t state_at = (size_t) (strstr(header, "STATE") - header);
    assert_string_equal(jobs + state_at, "open");
    assert_string_equal(other + state_at, "open");
    assert_true(strlen(header) <= 80 && strlen(jobs) <= 80);
}

/*  The broker's own lines, as `asyncq stats` printed them before it had
    other formats. */
static void s_broker_lines_add(void *ctx, const char *line)
{
    strcat(ctx, line);
    strcat(ctx, "\n");
}

static void test_stats_piped_is_the_brokers_lines_unchanged(void **state)
{
    fixture_t *f = *state;
    s_fill(f, "jobs", 7);
    s_fill(f, "other", 3);
    static char expected[8192];
    expected[0] = '\0';
    aq_session_t *session = harness_session(&f->broker);
    assert_int_equal(aq_stats(session, "", s_broker_lines_add, expected), AQ_OK);
    aq_session_destroy(&session);
    assert_non_null(strstr(expected, "queue=jobs queued=7 "));

    char *piped[] = {"asyncq", "stats", "-b", f->broker.address, NULL};
    run_t *run = s_start(f, piped, 0, NULL);
    assert_int_equal(s_finish(run), 0);
    assert_string_equal(run->out, expected);

    /* Asked for by name, on a terminal too. */
    char *tty[] = {"asyncq", "stats", "-b", f->broker.address, "--format", "kv", NULL};
    run = s_start(f, tty, 1, NULL);
    assert_int_equal(s_finish(run), 0);
    s_strip_crlf(run->out);
    assert_string_equal(run->out, expected);

    /* And a table when piped, if asked for. */
    char *table[] = {"asyncq", "stats", "-b", f->broker.address, "--format", "table", NULL};
    run = s_start(f, table, 0, NULL);
    assert_int_equal(s_finish(run), 0);
    assert_true(strncmp(run->out, "QUEUE ", 6) == 0);
}

static json_t *s_json_queue(json_t *queues, const char *name)
{
    size_t index;
    json_t *queue;
    json_array_foreach(queues, index, queue)
    {
        json_t *value = json_object_get(queue, "queue");
        if (json_is_string(value) && strcmp(json_string_value(value), name) == 0)
            return queue;
    }
    fail_msg("no queue '%s' in the JSON", name);
    return NULL;
}

static void test_stats_json_parses_with_numbers_as_numbers(void **state)
{
    fixture_t *f = *state;
    s_fill(f, "jobs", 1234);
    s_fill(f, "42", 2); /* a name of digits stays a string */
    aq_status_t rc;
    aq_consumer_t *consumer = aq_consumer_new(f->broker.address, "test", "jobs", 10, &rc);
    assert_non_null(consumer);
    s_consume(consumer, 10);
    harness_wait_stat(&f->broker, "jobs", "acked", 10);
    aq_consumer_destroy(&consumer);
    harness_wait_stat(&f->broker, "jobs", "queued", 1224); /* what it held, back */

    char *argv[] = {"asyncq", "stats", "-b", f->broker.address, "--format", "json", NULL};
    for (int tty = 0; tty <= 1; tty++) {
        run_t *run = s_start(f, argv, tty, NULL);
        assert_int_equal(s_finish(run), 0);
        s_strip_crlf(run->out);
        json_error_t error;
        json_t *queues = json_loads(run->out, 0, &error);
        if (!queues)
            fail_msg("not JSON (%s): %s", error.text, run->out);
        assert_true(json_is_array(queues));
        assert_int_equal(json_array_size(queues), 2);
        json_t *jobs = s_json_queue(queues, "jobs");
        assert_true(json_is_integer(json_object_get(jobs, "queued")));
        assert_int_equal(json_integer_value(json_object_get(jobs, "queued")), 1224);
        assert_int_equal(json_integer_value(json_object_get(jobs, "acked")), 10);
        assert_int_equal(json_integer_value(json_object_get(jobs, "puts")), 1234);
        assert_int_equal(json_integer_value(json_object_get(jobs, "lease_ms")), 60000);
        assert_string_equal(json_string_value(json_object_get(jobs, "state")), "open");
        json_t *digits = s_json_queue(queues, "42");
        assert_int_equal(json_integer_value(json_object_get(digits, "queued")), 2);
        json_decref(queues);
    }
}

static void test_stats_watch_redraws_until_sigint(void **state)
{
    fixture_t *f = *state;
    s_fill(f, "jobs", 1000);
    char *argv[] = {"asyncq", "stats", "-b", f->broker.address, "--watch", "0.2", NULL};
    run_t *run = s_start(f, argv, 1, NULL);
    s_expect(run, "\033[H\033[J", 2);
    s_expect(run, "PUT/S", 2);
    /* New numbers show in a later frame. */
    s_fill(f, "jobs", 100);
    s_expect(run, "1,100", 1);
    kill(run->process.pid, SIGINT);
    assert_int_equal(s_finish(run), 0);
    assert_true(strncmp(run->out, "\033[?25l", 6) == 0); /* cursor hidden while drawing */
    size_t length = strlen(run->out);
    assert_true(length > 6 && strcmp(run->out + length - 6, "\033[?25h") == 0); /* and back */

    /* Piped: a block each time, blank lines between, no escapes. */
    char *piped[] = {"asyncq", "stats", "-b", f->broker.address, "--watch=0.2", "--format",
                     "kv", NULL};
    run = s_start(f, piped, 0, NULL);
    s_expect(run, "queue=jobs queued=1100 ", 2);
    kill(run->process.pid, SIGINT);
    assert_int_equal(s_finish(run), 0);
    assert_null(strchr(run->out, '\033'));
    assert_true(strncmp(run->out, "queue=jobs queued=1100 ", 23) == 0);
    assert_non_null(strstr(run->out, "\n\nqueue=jobs queued=1100 "));
}

static void test_join_shows_progress_on_a_terminal(void **state)
{
    fixture_t *f = *state;
    s_fill(f, "jobs", 100);
    char *argv[] = {"asyncq", "join", "-b", f->broker.address, "-q", "jobs", NULL};
    run_t *run = s_start(f, argv, 1, NULL);
    s_expect(run, "\rjobs: 0 of 100 acked (0.0 %)", 1);
    aq_status_t rc;
    aq_consumer_t *consumer = aq_consumer_new(f->broker.address, "test", "jobs", 100, &rc);
    assert_non_null(consumer);
    s_consume(consumer, 40);
    s_expect(run, "\rjobs: 40 of 100 acked (40.0 %), ", 1);
    s_consume(consumer, 60);
    assert_int_equal(s_finish(run), 0);
    aq_consumer_destroy(&consumer);
    /* The line is erased before the result, which is as it always was. */
    assert_non_null(strstr(run->out, "\r\033[Kjoined jobs: 100 items were outstanding, "
                                     "0 of them dead-lettered\r\n"));
}

static void test_join_time_out_keeps_its_exit_code_on_a_terminal(void **state)
{
    fixture_t *f = *state;
    s_fill(f, "jobs", 3);
    char *argv[] = {"asyncq", "join", "-b", f->broker.address, "-q", "jobs", "--timeout", "0.3",
                    NULL};
    run_t *run = s_start(f, argv, 1, NULL);
    assert_int_equal(s_finish(run), 4);
    assert_non_null(strstr(run->out, "timed out on jobs: 3 items still outstanding\r\n"));
}

static void test_join_piped_prints_its_result_only(void **state)
{
    fixture_t *f = *state;
    s_fill(f, "jobs", 50);
    char *argv[] = {"asyncq", "join", "-b", f->broker.address, "-q", "jobs", NULL};
    run_t *run = s_start(f, argv, 0, NULL);
    harness_wait_stat(&f->broker, "jobs", "joiners", 1);
    aq_status_t rc;
    aq_consumer_t *consumer = aq_consumer_new(f->broker.address, "test", "jobs", 50, &rc);
    assert_non_null(consumer);
    s_consume(consumer, 50);
    assert_int_equal(s_finish(run), 0);
    aq_consumer_destroy(&consumer);
    assert_string_equal(run->out,
                        "joined jobs: 50 items were outstanding, 0 of them dead-lettered\n");
}

static void test_producer_stdin_shows_sent_and_confirmed_on_a_terminal(void **state)
{
    fixture_t *f = *state;
    char input[4096] = "";
    for (int i = 1; i <= 500; i++)
        snprintf(input + strlen(input), sizeof input - strlen(input), "%d\n", i);
    char *argv[] = {"asyncq-producer", "-b", f->broker.address, "-q", "lines", "--stdin",
                    "--quiet", NULL};
    run_t *run = s_start(f, argv, 1, input);
    assert_int_equal(s_finish(run), 0);
    /* The last status line stays, then the summary. */
    assert_non_null(strstr(run->out, "\rProducer producer: 500 sent, 500 confirmed, "));
    assert_non_null(strstr(run->out, "/s\033[K\r\nProducer producer done: 500 items confirmed "
                                     "by the broker.\r\n"));
    harness_wait_stat(&f->broker, "lines", "queued", 500);

    /* Piped: as it always was. */
    char *piped[] = {"asyncq-producer", "-b", f->broker.address, "-q", "lines", "--stdin",
                     "--quiet", NULL};
    run = s_start(f, piped, 0, input);
    assert_int_equal(s_finish(run), 0);
    assert_string_equal(run->out, "Producer producer done: 500 items confirmed by the broker.\n");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_stats_is_an_aligned_table_on_a_terminal, s_setup,
                                        s_teardown),
        cmocka_unit_test_setup_teardown(test_stats_piped_is_the_brokers_lines_unchanged, s_setup,
                                        s_teardown),
        cmocka_unit_test_setup_teardown(test_stats_json_parses_with_numbers_as_numbers, s_setup,
                                        s_teardown),
        cmocka_unit_test_setup_teardown(test_stats_watch_redraws_until_sigint, s_setup,
                                        s_teardown),
        cmocka_unit_test_setup_teardown(test_join_shows_progress_on_a_terminal, s_setup,
                                        s_teardown),
        cmocka_unit_test_setup_teardown(test_join_time_out_keeps_its_exit_code_on_a_terminal,
                                        s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_join_piped_prints_its_result_only, s_setup,
                                        s_teardown),
        cmocka_unit_test_setup_teardown(test_producer_stdin_shows_sent_and_confirmed_on_a_terminal,
                                        s_setup, s_teardown),
    };
    return harness_run_group(tests);
}
