/*  The whole service on one HTTP port: `asyncq-broker --shards 3 --metrics
    PORT` serves the service on PORT and shard K its own on PORT+1+K.
    Items put over the shards add up in /stats.json, which lists each
    shard's part; /metrics is one exposition (each family once) with every
    shard's samples, each labelled with its shard, as each shard's own port
    labels them; a purge on PORT empties every shard; a shard killed shows
    as down (shard_up 0, an error entry) until it is back, while the page
    answers on; dead items of every shard are listed oldest death first,
    and one of them is asked of the shard its id names; bad input gets an
    error, and a valid request after it succeeds. The token is drawn by
    the supervisor and reaches the shards by a pipe: the same token works
    on every port. --dashboard-of serves the same port for brokers started
    on their own, from their --metrics ports. */
#include <arpa/inet.h>
#include <jansson.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "harness.h"

#define SHARDS 3
#define ANSWER_MAX (1 << 20)

typedef struct {
    harness_t h;
    char root[48];
    int port;          /* the service's; shard K's is port + 1 + K */
    char token[128];
    char *answer;      /* the last answer's body */
} fixture_t;

/* ------------------------------------------------------------ HTTP */

/*  One request on a new connection to `port` (closed after): the status
    code (0 if closed without an answer), the body in f->answer. */
static int s_request_at(fixture_t *f, int port, const char *request, size_t size)
{
    return harness_http(port, request, size, f->answer, ANSWER_MAX);
}

static int s_call(fixture_t *f, int port, const char *method, const char *path, int with_token)
{
    char request[1024];
    int size = snprintf(request, sizeof request,
                        "%s %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n%s%s%s%s\r\n", method,
                        path, with_token ? "Authorization: Bearer " : "",
                        with_token ? f->token : "", with_token ? "\r\n" : "",
                        strcmp(method, "POST") == 0 ? "Content-Length: 0\r\n" : "");
    return s_request_at(f, port, request, (size_t) size);
}

static int s_get(fixture_t *f, const char *path)
{
    return s_call(f, f->port, "GET", path, 0);
}

/*  GET /stats.json of the service, parsed (200 asserted). */
static json_t *s_stats(fixture_t *f)
{
    assert_int_equal(s_get(f, "/stats.json"), 200);
    json_t *stats = json_loads(f->answer, 0, NULL);
    assert_non_null(stats);
    return stats;
}

static json_t *s_queue(json_t *stats, const char *name)
{
    size_t i;
    json_t *queue;
    json_array_foreach(json_object_get(stats, "queues"), i, queue)
        if (strcmp(json_string_value(json_object_get(queue, "name")), name) == 0)
            return queue;
    return NULL;
}

static json_int_t s_count(json_t *stats, const char *queue, const char *key)
{
    json_t *entry = s_queue(stats, queue);
    return entry ? json_integer_value(json_object_get(entry, key)) : 0;
}

/*  The value of one sample line `sample` (name and labels) in f->answer;
    -1 if there is none. */
static long long s_sample(const fixture_t *f, const char *sample)
{
    char line[512];
    snprintf(line, sizeof line, "\n%s ", sample);
    const char *at = strstr(f->answer, line);
    return at ? atoll(at + strlen(line)) : -1;
}

/* ------------------------------------------------------- the service */

static void s_start(fixture_t *f, const char *max_attempts)
{
    char path[4096], bind[128], metrics[32];
    assert_int_equal(aq_program_path("asyncq-broker", path, sizeof path), 0);
    snprintf(bind, sizeof bind, "ipc://%s/b", f->root);
    snprintf(f->h.log_path, sizeof f->h.log_path, "%s/log", f->root);
    snprintf(f->h.address, sizeof f->h.address, "%s", bind);
    /* Ports picked outside the kernel's range are free but for a race
       with another program picking so: a supervisor that cannot bind its
       port exits at once, and the next ports are tried. */
    for (int attempt = 0;; attempt++) {
        f->port = harness_free_ports(SHARDS + 1);
        snprintf(metrics, sizeof metrics, "127.0.0.1:%d", f->port);
        char *argv[] = {path, "--shards", "3", "--bind", bind, "--metrics", metrics,
                        "--max-attempts", (char *) max_attempts, NULL};
        assert_int_equal(aq_process_spawn_logged(&f->h.broker, argv, 1, 1, f->h.log_path), 0);
        char url[256];
        if (aq_process_expect(&f->h.broker, "METRICS ", url, sizeof url, HARNESS_DEADLINE_MS)) {
            char want[64];
            snprintf(want, sizeof want, "http://127.0.0.1:%d", f->port);
            assert_string_equal(url, want);
            break;
        }
        aq_process_stop(&f->h.broker, SIGKILL, 1000);
        if (attempt == 2)
            fail_msg("the supervisor did not serve its port");
    }
    char ready[256];
    for (int k = 0; k < SHARDS; k++)
        if (!aq_process_expect(&f->h.broker, "READY ", ready, sizeof ready, HARNESS_DEADLINE_MS))
            fail_msg("shard %d of 3 did not print READY", k);
    /* The token it drew, from its log: "... need the token HEX". */
    char *log = harness_log(&f->h);
    const char *at = strstr(log, "need the token ");
    assert_non_null(at);
    assert_int_equal(sscanf(at + 15, "%127[0-9a-f]", f->token), 1);
    assert_int_equal(strlen(f->token), 32);
    free(log);
}

/*  Shard K's broker, for harness_stat and the like. */
static harness_t s_shard(const fixture_t *f, int shard)
{
    harness_t h = {0};
    if (shard)
        snprintf(h.address, sizeof h.address, "ipc://%s/b-%d", f->root, shard);
    else
        snprintf(h.address, sizeof h.address, "ipc://%s/b", f->root);
    return h;
}

/*  `batches` batches of `size` numbered items, each batch to the next
    shard: every shard gets some. */
static void s_put_to(const fixture_t *f, int brokers, const char *queue, int batches, int size)
{
    aq_status_t rc;
    aq_producer_t *producer = aq_producer_new(f->h.address, "p", &rc);
    assert_non_null(producer);
    assert_int_equal(aq_producer_brokers(producer), brokers);
    for (int i = 0; i < batches * size; i++) {
        char item[16];
        int length = snprintf(item, sizeof item, "%d", i);
        assert_int_equal(aq_producer_put(producer, queue, item, (size_t) length), AQ_OK);
        if (i % size == size - 1)
            assert_int_equal(aq_producer_flush(producer), AQ_OK);
    }
    assert_int_equal(aq_producer_sync(producer, HARNESS_DEADLINE_MS), AQ_OK);
    aq_producer_destroy(&producer);
}

static void s_put(const fixture_t *f, const char *queue, int batches, int size)
{
    s_put_to(f, SHARDS, queue, batches, size);
}

static int s_setup(void **state)
{
    fixture_t *f = calloc(1, sizeof *f);
    assert_non_null(f);
    f->answer = malloc(ANSWER_MAX);
    assert_non_null(f->answer);
    snprintf(f->root, sizeof f->root, "/tmp/asyncq-service-XXXXXX");
    assert_non_null(mkdtemp(f->root));
    *state = f;
    return 0;
}

static int s_teardown(void **state)
{
    fixture_t *f = *state;
    f->h.log_path[0] = '\0'; /* in the directory, removed with it */
    harness_stop(&f->h);
    harness_kill_shards(f->root); /* any shard the supervisor left, if it was killed */
    harness_remove_tree(f->root);
    free(f->answer);
    free(f);
    return 0;
}

/* ----------------------------------------------------------- the tests */

static void test_the_service_port_adds_up_every_shard(void **state)
{
    fixture_t *f = *state;
    s_start(f, "5");
    s_put(f, "q", 9, 100); /* three batches to each shard */

    json_t *stats = s_stats(f);
    assert_int_equal(s_count(stats, "q", "queued"), 900);
    assert_int_equal(s_count(stats, "q", "puts_total"), 900);
    assert_int_equal(json_integer_value(json_object_get(json_object_get(stats, "broker"), "items")),
                     900);
    json_t *shards = json_object_get(stats, "shards");
    assert_int_equal(json_array_size(shards), SHARDS);
    json_int_t parts[SHARDS], total = 0;
    for (int k = 0; k < SHARDS; k++) {
        json_t *shard = json_array_get(shards, (size_t) k);
        assert_int_equal(json_integer_value(json_object_get(shard, "shard")), k);
        assert_null(json_object_get(shard, "error"));
        parts[k] = s_count(shard, "q", "queued");
        assert_true(parts[k] > 0);
        harness_t h = s_shard(f, k);
        assert_int_equal((json_int_t) harness_stat(&h, "q", "queued"), parts[k]);
        total += parts[k];
    }
    assert_int_equal(total, 900);
    json_decref(stats);

    /* One exposition: each family announced once, every shard's samples. */
    assert_int_equal(s_get(f, "/metrics"), 200);
    char seen[128][128];
    int families = 0;
    for (const char *at = strstr(f->answer, "# TYPE "); at; at = strstr(at + 1, "\n# TYPE ")) {
        if (*at == '\n')
            at++;
        char name[128];
        assert_int_equal(sscanf(at + 7, "%127s", name), 1);
        for (int i = 0; i < families; i++)
            if (strcmp(seen[i], name) == 0)
                fail_msg("# TYPE %s twice", name);
        assert_true(families < 128);
        snprintf(seen[families++], sizeof seen[0], "%s", name);
    }
    assert_true(families > 20);
    for (int k = 0; k < SHARDS; k++) {
        char sample[128];
        snprintf(sample, sizeof sample,
                 "asyncq_queue_items{queue=\"q\",state=\"queued\",shard=\"%d\"}", k);
        assert_int_equal(s_sample(f, sample), parts[k]);
        snprintf(sample, sizeof sample, "asyncq_service_shard_up{shard=\"%d\"}", k);
        assert_int_equal(s_sample(f, sample), 1);
        snprintf(sample, sizeof sample, "asyncq_uptime_seconds{shard=\"%d\"}", k);
        assert_true(s_sample(f, sample) >= 0);
    }
    /* Each shard's own port, its samples labelled with its shard. */
    for (int k = 0; k < SHARDS; k++) {
        assert_int_equal(s_call(f, f->port + 1 + k, "GET", "/metrics", 0), 200);
        char sample[128];
        snprintf(sample, sizeof sample,
                 "asyncq_queue_items{queue=\"q\",state=\"queued\",shard=\"%d\"}", k);
        assert_int_equal(s_sample(f, sample), parts[k]);
        snprintf(sample, sizeof sample, "asyncq_info{persistence=\"memory\",security=\"loopback\","
                                        "shard=\"%d\"}", k);
        assert_int_equal(s_sample(f, sample), 1);
        assert_null(strstr(f->answer, "asyncq_service_shard_up"));
    }
    /* The dashboard. */
    assert_int_equal(s_get(f, "/"), 200);
    assert_non_null(strstr(f->answer, "<title>asyncq"));

    /* A purge on the service's port empties every shard. */
    assert_int_equal(s_call(f, f->port, "POST", "/api/purge?queue=q", 0), 401);
    assert_int_equal(s_call(f, f->port, "POST", "/api/purge?queue=q", 1), 200);
    assert_non_null(strstr(f->answer, "\"purged\":900"));
    for (int k = 0; k < SHARDS; k++) {
        harness_t h = s_shard(f, k);
        assert_int_equal(harness_stat(&h, "q", "queued"), 0);
        assert_int_equal(harness_stat(&h, "q", "discarded"), (uint64_t) parts[k]);
    }
    stats = s_stats(f);
    assert_int_equal(s_count(stats, "q", "queued"), 0);
    assert_int_equal(s_count(stats, "q", "discarded_total"), 900);
    json_decref(stats);
    /* The token the supervisor drew is every shard's too. */
    assert_int_equal(s_call(f, f->port + 2, "POST", "/api/reopen?queue=q", 1), 200);
    harness_t one = s_shard(f, 1);
    harness_assert_serving(&one, "ok");
}

static void test_a_killed_shard_is_down_until_it_is_back_and_the_page_answers_on(void **state)
{
    fixture_t *f = *state;
    s_start(f, "5");
    s_put(f, "q", 6, 50);
    /* Killed (and killed again, should it be back before both were seen:
       the supervisor waits longer each time). */
    int down_in_metrics = 0, down_in_stats = 0;
    int64_t deadline = zclock_mono() + HARNESS_DEADLINE_MS;
    pid_t killed = 0;
    while (!down_in_metrics || !down_in_stats) {
        assert_true(zclock_mono() < deadline);
        pid_t pid = harness_shard_pid(f->root, 1);
        if (pid > 0 && pid != killed) {
            assert_int_equal(kill(pid, SIGKILL), 0);
            killed = pid;
            down_in_metrics = down_in_stats = 0;
        }
        assert_int_equal(s_get(f, "/metrics"), 200);
        if (s_sample(f, "asyncq_service_shard_up{shard=\"1\"}") == 0) {
            down_in_metrics = 1;
            assert_int_equal(s_sample(f, "asyncq_service_shard_up{shard=\"0\"}"), 1);
            /* None of its samples but that one. */
            assert_int_equal(s_sample(f, "asyncq_uptime_seconds{shard=\"1\"}"), -1);
            assert_null(strstr(f->answer, ",shard=\"1\"}"));
        }
        json_t *stats = s_stats(f);
        json_t *entry = json_array_get(json_object_get(stats, "shards"), 1);
        if (json_is_string(json_object_get(entry, "error"))) {
            down_in_stats = 1;
            assert_int_equal(json_integer_value(json_object_get(entry, "shard")), 1);
            assert_null(json_object_get(entry, "broker"));
            json_t *zero = json_array_get(json_object_get(stats, "shards"), 0);
            assert_null(json_object_get(zero, "error"));
        }
        json_decref(stats);
        assert_int_equal(s_get(f, "/"), 200);
        zclock_sleep(5);
    }
    /* Back: every shard answers again, on its own port too. */
    deadline = zclock_mono() + HARNESS_DEADLINE_MS;
    for (;;) {
        assert_true(zclock_mono() < deadline);
        assert_int_equal(s_get(f, "/metrics"), 200);
        if (s_sample(f, "asyncq_service_shard_up{shard=\"1\"}") == 1)
            break;
        zclock_sleep(20);
    }
    json_t *stats = s_stats(f);
    json_t *shards = json_object_get(stats, "shards");
    json_int_t total = 0;
    for (int k = 0; k < SHARDS; k++) {
        assert_null(json_object_get(json_array_get(shards, (size_t) k), "error"));
        total += s_count(json_array_get(shards, (size_t) k), "q", "queued");
    }
    assert_int_equal(s_count(stats, "q", "queued"), total); /* shard 1's items died with it */
    json_decref(stats);
    assert_int_equal(s_call(f, f->port + 2, "GET", "/stats.json", 0), 200);
    harness_t one = s_shard(f, 1);
    harness_assert_serving(&one, "ok");
}

static void test_dead_items_of_every_shard_oldest_first_and_an_id_goes_to_its_shard(void **state)
{
    fixture_t *f = *state;
    s_start(f, "1"); /* a NACK kills */
    s_put(f, "d", 3, 10);
    aq_status_t rc;
    aq_consumer_t *consumer = aq_consumer_new(f->h.address, "c", "d", 1, &rc);
    assert_non_null(consumer);
    uint64_t last_id[SHARDS] = {0};
    for (int i = 0; i < 30; i++) {
        aq_item_t item;
        assert_int_equal(aq_consumer_get(consumer, &item, HARNESS_DEADLINE_MS), AQ_OK);
        last_id[item.id >> 56] = item.id;
        assert_int_equal(aq_consumer_nack(consumer, item.id, 0, "failed"), AQ_OK);
    }
    aq_consumer_destroy(&consumer);
    for (int k = 0; k < SHARDS; k++) {
        assert_true(last_id[k] != 0); /* every shard had some */
        harness_t h = s_shard(f, k);
        harness_wait_stat(&h, "d", "dead", 10);
    }
    assert_int_equal(s_call(f, f->port, "GET", "/api/dead?queue=d", 0), 401);
    assert_int_equal(s_call(f, f->port, "GET", "/api/dead?queue=d", 1), 200);
    json_t *dead = json_loads(f->answer, 0, NULL);
    assert_non_null(dead);
    assert_int_equal(json_integer_value(json_object_get(dead, "dead")), 30);
    json_t *items = json_object_get(dead, "items");
    assert_int_equal(json_array_size(items), 30);
    int from[SHARDS] = {0};
    const char *before = "";
    size_t i;
    json_t *item;
    json_array_foreach(items, i, item) {
        const char *died = json_string_value(json_object_get(item, "died"));
        assert_non_null(died);
        assert_true(strcmp(before, died) <= 0); /* oldest death first */
        before = died;
        from[strtoull(json_string_value(json_object_get(item, "id")), NULL, 10) >> 56]++;
    }
    for (int k = 0; k < SHARDS; k++)
        assert_int_equal(from[k], 10);
    json_decref(dead);
    /* One dead item, of shard 2: shown whole, then requeued, by its shard. */
    char path[128];
    snprintf(path, sizeof path, "/api/dead?queue=d&id=%llu", (unsigned long long) last_id[2]);
    assert_int_equal(s_call(f, f->port, "GET", path, 1), 200);
    assert_non_null(strstr(f->answer, "\"payload_base64\""));
    snprintf(path, sizeof path, "/api/requeue?queue=d&id=%llu", (unsigned long long) last_id[2]);
    assert_int_equal(s_call(f, f->port, "POST", path, 1), 200);
    assert_non_null(strstr(f->answer, "\"requeued\":1"));
    harness_t two = s_shard(f, 2), zero = s_shard(f, 0);
    assert_int_equal(harness_stat(&two, "d", "dead"), 9);
    assert_int_equal(harness_stat(&two, "d", "queued"), 1);
    assert_int_equal(harness_stat(&zero, "d", "dead"), 10);
    /* Requeued now, so not a dead item: its shard's 404, as it said it. */
    assert_int_equal(s_call(f, f->port, "POST", path, 1), 404);
    assert_non_null(strstr(f->answer, "is not a dead item of queue d"));
    /* An id of a shard the service does not have. */
    snprintf(path, sizeof path, "/api/dead?queue=d&id=%llu", (unsigned long long) 7 << 56);
    assert_int_equal(s_call(f, f->port, "GET", path, 1), 404);
    /* The rest of them, on every shard. */
    assert_int_equal(s_call(f, f->port, "POST", "/api/requeue?queue=d", 1), 200);
    assert_non_null(strstr(f->answer, "\"requeued\":29"));
    json_t *stats = s_stats(f);
    assert_int_equal(s_count(stats, "d", "dead"), 0);
    assert_int_equal(s_count(stats, "d", "queued"), 30);
    json_decref(stats);
    harness_assert_serving(&zero, "ok");
}

static void test_bad_input_to_the_service_port_gets_an_error_and_it_serves_on(void **state)
{
    fixture_t *f = *state;
    s_start(f, "5");
    s_put(f, "q", 3, 10);
    /* An over-long URL, a huge header, bytes that are no HTTP. */
    size_t huge = 1 << 20;
    char *request = malloc(huge + 128);
    assert_non_null(request);
    memcpy(request, "GET /", 5);
    memset(request + 5, 'a', huge);
    int length = snprintf(request + 5 + huge, 64, " HTTP/1.1\r\nHost: x\r\n\r\n");
    int status = s_request_at(f, f->port, request, 5 + huge + (size_t) length);
    assert_true(status != 200);
    length = snprintf(request, 128, "GET /metrics HTTP/1.1\r\nHost: x\r\nX-Big: ");
    memset(request + length, 'a', huge);
    memcpy(request + length + huge, "\r\n\r\n", 4);
    status = s_request_at(f, f->port, request, (size_t) length + huge + 4);
    assert_true(status == 0 || status == 431 || status == 413 || status == 400);
    free(request);
    static const char garbage[] = "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n";
    assert_true(s_request_at(f, f->port, garbage, sizeof garbage - 1) != 200);
    /* Unknown paths, wrong methods, the token, names and ids. */
    assert_int_equal(s_get(f, "/nope"), 404);
    assert_int_equal(s_call(f, f->port, "DELETE", "/metrics", 0), 405);
    assert_int_equal(s_call(f, f->port, "GET", "/api/purge?queue=q", 1), 405);
    assert_int_equal(s_call(f, f->port, "POST", "/api/dead?queue=q", 1), 405);
    static const char wrong[] = "POST /api/purge?queue=q HTTP/1.1\r\nHost: x\r\n"
                                "Authorization: Bearer 0123456789abcdef0123456789abcdeX\r\n"
                                "Content-Length: 0\r\nConnection: close\r\n\r\n";
    assert_int_equal(s_request_at(f, f->port, wrong, sizeof wrong - 1), 401);
    assert_int_equal(s_call(f, f->port, "POST", "/api/purge?queue=no%20such", 1), 400);
    assert_int_equal(s_call(f, f->port, "POST", "/api/purge?queue=q&id=1", 1), 400);
    assert_non_null(strstr(f->answer, "takes no id"));
    assert_int_equal(s_call(f, f->port, "GET", "/api/dead?queue=q&id=1&id=2", 1), 400);
    assert_int_equal(s_call(f, f->port, "GET", "/api/dead?queue=q&id=x", 1), 400);
    assert_int_equal(s_call(f, f->port, "POST", "/api/delete?queue=nope", 1), 404);
    assert_non_null(strstr(f->answer, "no such queue"));
    /* Nothing changed, and it serves. */
    json_t *stats = s_stats(f);
    assert_int_equal(s_count(stats, "q", "queued"), 30);
    json_decref(stats);
    assert_int_equal(s_get(f, "/metrics"), 200);
    harness_t zero = s_shard(f, 0);
    harness_assert_serving(&zero, "ok");
}


/*  --dashboard-of: no broker, the service's port for brokers started on
    their own (on other hosts, as docker-compose.shards.yml runs them),
    asked at their own --metrics ports by name; one listed that does not
    resolve is a shard down. One token file for all. */
static aq_process_t s_brokers[2];

static int s_brokers_teardown(void **state)
{
    for (int k = 0; k < 2; k++)
        aq_process_stop(&s_brokers[k], SIGTERM, 5000);
    return s_teardown(state);
}

static void test_dashboard_of_brokers_started_on_their_own(void **state)
{
    fixture_t *f = *state;
    char path[4096], token_file[128], service[256], of[256], metrics[3][32];
    assert_int_equal(aq_program_path("asyncq-broker", path, sizeof path), 0);
    /* The token every one reads: asyncq keygen --token, kept with --keep. */
    snprintf(token_file, sizeof token_file, "%s/token", f->root);
    char *keygen[] = {"asyncq", "keygen", "ctl", "--dir", f->root, "--token", "token", "--keep",
                      NULL};
    assert_int_equal(harness_run(keygen, NULL, 0), 0);
    char *text = harness_read_file(token_file);
    assert_int_equal(sscanf(text, "%127[0-9a-f]", f->token), 1);
    assert_int_equal(strlen(f->token), 32);
    struct stat st;
    assert_int_equal(stat(token_file, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    char *again[] = {"asyncq", "keygen", "ctl", "--dir", f->root, "--token", "token", "--keep",
                     NULL};
    assert_int_equal(harness_run(again, NULL, 0), 0);
    char *kept = harness_read_file(token_file);
    assert_string_equal(kept, text);
    free(kept);
    free(text);
    snprintf(service, sizeof service, "ipc://%s/s0,ipc://%s/s1", f->root, f->root);
    f->port = harness_free_ports(3);
    for (int k = 0; k < 3; k++)
        snprintf(metrics[k], sizeof metrics[k], "127.0.0.1:%d", f->port + k);
    for (int k = 0; k < 2; k++) {
        char bind[128], shard[4];
        snprintf(bind, sizeof bind, "ipc://%s/s%d", f->root, k);
        snprintf(shard, sizeof shard, "%d", k);
        char *argv[] = {path, "--bind", bind, "--shard", shard, "--service", service,
                        "--metrics", metrics[k + 1], "--metrics-token-file", token_file, NULL};
        assert_int_equal(aq_process_spawn_logged(&s_brokers[k], argv, 1, 1, NULL), 0);
        char ready[256];
        assert_true(aq_process_expect(&s_brokers[k], "READY ", ready, sizeof ready,
                                      HARNESS_DEADLINE_MS));
    }
    /* Listed by mistake: a name that does not resolve, and its own port
       (a service's port is refused when a service's port asks it: no loop). */
    snprintf(of, sizeof of, "%s,%s,no-such-broker.invalid:9557,%s", metrics[1], metrics[2],
             metrics[0]);
    char *argv[] = {path, "--dashboard-of", of, "--metrics", metrics[0], "--metrics-token-file",
                    token_file, NULL};
    assert_int_equal(aq_process_spawn_logged(&f->h.broker, argv, 1, 1, NULL), 0);
    char url[256];
    assert_true(aq_process_expect(&f->h.broker, "METRICS ", url, sizeof url,
                                  HARNESS_DEADLINE_MS));
    snprintf(f->h.address, sizeof f->h.address, "ipc://%s/s0", f->root);
    s_put_to(f, 2, "q", 4, 50);

    json_t *stats = s_stats(f);
    assert_int_equal(s_count(stats, "q", "queued"), 200);
    json_t *shards = json_object_get(stats, "shards");
    assert_int_equal(json_array_size(shards), 4);
    for (int k = 0; k < 2; k++)
        assert_null(json_object_get(json_array_get(shards, (size_t) k), "error"));
    const char *error = json_string_value(json_object_get(json_array_get(shards, 2), "error"));
    assert_non_null(error);
    assert_non_null(strstr(error, "no-such-broker.invalid:9557 does not resolve"));
    error = json_string_value(json_object_get(json_array_get(shards, 3), "error"));
    assert_non_null(error);
    assert_non_null(strstr(error, "this is a service's port"));
    json_decref(stats);

    assert_int_equal(s_get(f, "/metrics"), 200);
    assert_int_equal(s_sample(f, "asyncq_service_shard_up{shard=\"0\"}"), 1);
    assert_int_equal(s_sample(f, "asyncq_service_shard_up{shard=\"1\"}"), 1);
    assert_int_equal(s_sample(f, "asyncq_service_shard_up{shard=\"2\"}"), 0);
    assert_int_equal(s_sample(f, "asyncq_service_shard_up{shard=\"3\"}"), 0);
    const char *help = strstr(f->answer, "# HELP asyncq_service_shard_up ");
    assert_non_null(help);
    assert_null(strstr(help + 1, "# HELP asyncq_service_shard_up ")); /* one exposition */
    /* The actions take the one token, and every broker does them. */
    assert_int_equal(s_call(f, f->port, "POST", "/api/purge?queue=q", 0), 401);
    /* A broker that cannot be asked is the answer: no purge said done. */
    assert_int_equal(s_call(f, f->port, "POST", "/api/purge?queue=q", 1), 502);
    assert_non_null(strstr(f->answer, "shard 2"));
    harness_t one = {0};
    snprintf(one.address, sizeof one.address, "ipc://%s/s1", f->root);
    harness_assert_serving(&one, "ok");
    /* SIGTERM ends it, with exit 0. */
    aq_process_stop(&f->h.broker, SIGTERM, 5000);
    assert_int_equal(f->h.broker.exit_code, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_the_service_port_adds_up_every_shard, s_setup,
                                        s_teardown),
        cmocka_unit_test_setup_teardown(
            test_a_killed_shard_is_down_until_it_is_back_and_the_page_answers_on, s_setup,
            s_teardown),
        cmocka_unit_test_setup_teardown(
            test_dead_items_of_every_shard_oldest_first_and_an_id_goes_to_its_shard, s_setup,
            s_teardown),
        cmocka_unit_test_setup_teardown(
            test_bad_input_to_the_service_port_gets_an_error_and_it_serves_on, s_setup,
            s_teardown),
        cmocka_unit_test_setup_teardown(test_dashboard_of_brokers_started_on_their_own, s_setup,
                                        s_brokers_teardown),
    };
    return harness_run_group(tests);
}
