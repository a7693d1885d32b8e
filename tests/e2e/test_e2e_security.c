/*  Security, as docs/PROTOCOL.md section 7 promises it: with CURVE keys,
    who gets in (no key, an unknown key, a revoked key, a wrong broker key
    are refused; a key added to the clients directory is let in at once),
    what each role may do (403 with the request's tag, nothing changed),
    per-queue grants, sessions and producer ids bound to keys (the hijack
    attempts), items bound to the session they were delivered to; and,
    without keys, the loopback-only default and what --insecure says. Then
    a producer id taken over by a second session (no keys, or one shared
    key), and the shared limits one key cannot use up.

    Every refused attempt is checked against the broker's own numbers (its
    INFO line and every STATS line, read on one long-lived admin session so
    that reading them changes nothing), and every test ends with a valid
    round trip that must still work. */
/* nftw, to remove a test's key directories, is an X/Open function. */
#define _XOPEN_SOURCE 700
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "asyncq/security.h"
#include "harness.h"

/*  A HELLO refused at the handshake gets no WELCOME: how long a client
    waits before it says why (the library's own time-out for producers and
    consumers is AQ_CONNECT_TIMEOUT_MS). */
#define REFUSED_WAIT_MS 2000

typedef struct {
    harness_t h;
    aq_inbox_t *inbox;
    char dir[64];            /* keys/ (every pair) and clients/ (allowed public keys) */
    char broker_key[41];     /* the broker's public key, Z85 */
    aq_session_t *observer;  /* admin session that reads INFO and STATS */
} fixture_t;

/* ------------------------------------------------------------------ */
/*  Files and keys                                                     */

static const char *s_path(const fixture_t *f, char *buf, size_t size, const char *format, ...)
{
    int at = snprintf(buf, size, "%s/", f->dir);
    va_list args;
    va_start(args, format);
    vsnprintf(buf + at, size - (size_t) at, format, args);
    va_end(args);
    return buf;
}

/*  A key pair NAME in keys/; its public key also in clients/ if allowed. */
static void s_allow(const fixture_t *f, const char *name);

static void s_keygen(const fixture_t *f, const char *name, const char *roles, const char *queues,
                     int allowed)
{
    char keys[512];
    assert_int_equal(aq_keygen(s_path(f, keys, sizeof keys, "keys"), name, roles, queues), 0);
    if (allowed)
        s_allow(f, name);
}

/*  Copies keys/NAME.key into clients/ whole, by a rename: the broker and
    zauth never see half a certificate. */
static void s_allow(const fixture_t *f, const char *name)
{
    char from[512], tmp[512], to[512];
    s_path(f, from, sizeof from, "keys/%s.key", name);
    s_path(f, tmp, sizeof tmp, "keys/%s.key.copy", name);
    s_path(f, to, sizeof to, "clients/%s.key", name);
    FILE *in = fopen(from, "r"), *out = fopen(tmp, "w");
    assert_non_null(in);
    assert_non_null(out);
    char buf[4096];
    size_t got;
    while ((got = fread(buf, 1, sizeof buf, in)) > 0)
        assert_int_equal(fwrite(buf, 1, got, out), got);
    fclose(in);
    assert_int_equal(fclose(out), 0);
    assert_int_equal(rename(tmp, to), 0);
}

static void s_revoke(const fixture_t *f, const char *name)
{
    char path[512];
    assert_int_equal(unlink(s_path(f, path, sizeof path, "clients/%s.key", name)), 0);
}

/*  The public key of keys/NAME.key, Z85. */
static void s_public_key(const fixture_t *f, const char *name, char key[41])
{
    char path[512];
    zcert_t *cert = zcert_load(s_path(f, path, sizeof path, "keys/%s.key", name));
    assert_non_null(cert);
    snprintf(key, 41, "%s", zcert_public_txt(cert));
    zcert_destroy(&cert);
}

/*  From now on the library's sockets use NAME's key pair and the broker
    key of `server` (a certificate name in keys/; NULL: the real broker);
    NAME NULL: no keys at all. Process-wide: a producer's PUSH is made at
    its first send, so a producer's puts are flushed before this changes. */
static void s_as(const fixture_t *f, const char *name, const char *server)
{
    if (!name) {
        assert_int_equal(aq_security_set(NULL, NULL), AQ_OK);
        assert_false(aq_security_enabled());
        return;
    }
    char secret[512], server_key[512];
    s_path(f, secret, sizeof secret, "keys/%s.key_secret", name);
    s_path(f, server_key, sizeof server_key, "keys/%s.key", server ? server : "broker");
    assert_int_equal(aq_security_set(secret, server_key), AQ_OK);
    assert_true(aq_security_enabled());
}

/* ------------------------------------------------------------------ */
/*  Fixture                                                            */

static fixture_t *s_new(void **state)
{
    fixture_t *f = calloc(1, sizeof *f);
    assert_non_null(f);
    *state = f; /* from here on the teardown cleans up whatever happens */
    f->inbox = aq_inbox_new(AQ_REPORT_FRAMES_MAX);
    assert_non_null(f->inbox);
    return f;
}

/*  A broker with CURVE: its own pair, an "admin" key with every role in
    clients/, and the process speaking as admin; extra flags NULL-ended. */
static fixture_t *s_start(void **state, char *const *flags, int logged)
{
    fixture_t *f = s_new(state);
    snprintf(f->dir, sizeof f->dir, "/tmp/asyncq-security-XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    char path[512];
    assert_int_equal(mkdir(s_path(f, path, sizeof path, "keys"), 0700), 0);
    assert_int_equal(mkdir(s_path(f, path, sizeof path, "clients"), 0700), 0);
    s_keygen(f, "broker", "admin", NULL, 0);
    s_keygen(f, "admin", "produce,consume,admin", NULL, 1);
    s_public_key(f, "broker", f->broker_key);
    s_as(f, "admin", NULL);
    char secret[512], clients[512];
    s_path(f, secret, sizeof secret, "keys/broker.key_secret");
    s_path(f, clients, sizeof clients, "clients");
    char *argv[32] = {"--curve-secret", secret, "--clients", clients};
    int argc = 4;
    for (int i = 0; flags && flags[i]; i++) {
        assert_true(argc < 31);
        argv[argc++] = flags[i];
    }
    argv[argc] = NULL;
    if (logged)
        harness_start_broker_logged(&f->h, argv);
    else
        harness_start_broker(&f->h, argv);
    aq_status_t rc;
    f->observer = aq_session_open(f->h.address, "observer", 0, HARNESS_DEADLINE_MS, &rc);
    assert_int_equal(rc, AQ_OK);
    assert_string_equal(aq_session_welcome(f->observer)->roles, "produce,consume,admin");
    return f;
}

static int s_teardown(void **state)
{
    fixture_t *f = *state;
    if (!f)
        return 0;
    aq_session_destroy(&f->observer);
    harness_stop(&f->h);
    aq_inbox_destroy(&f->inbox);
    if (f->dir[0])
        harness_remove_tree(f->dir);
    aq_security_set(NULL, NULL);
    free(f);
    *state = NULL;
    return 0;
}

/* ------------------------------------------------------------------ */
/*  The broker's numbers, read on the observer session                 */

static void s_append_line(void *ctx, const char *line)
{
    fprintf(ctx, "stats %s\n", line);
}

/*  INFO without the two values that change by themselves. */
static void s_append_info(void *ctx, const char *line)
{
    char *copy = strdup(line), *save = NULL;
    fprintf(ctx, "info");
    for (char *word = strtok_r(copy, " ", &save); word; word = strtok_r(NULL, " ", &save))
        if (strncmp(word, "broker=", 7) != 0 && strncmp(word, "uptime_ms=", 10) != 0)
            fprintf(ctx, " %s", word);
    fprintf(ctx, "\n");
    free(copy);
}

/*  The INFO line and every STATS line (malloc'd). */
static char *s_snapshot(fixture_t *f)
{
    char *text = NULL;
    size_t size = 0;
    FILE *out = open_memstream(&text, &size);
    assert_int_equal(aq_info(f->observer, s_append_info, out), AQ_OK);
    assert_int_equal(aq_stats(f->observer, "", s_append_line, out), AQ_OK);
    fclose(out);
    return text;
}

/*  The snapshot without the key=value words of `except` (NULL-ended). */
static char *s_without(const char *snapshot, const char *const *except)
{
    char *copy = strdup(snapshot), *text = NULL, *save = NULL;
    size_t size = 0;
    FILE *out = open_memstream(&text, &size);
    for (char *line = strtok_r(copy, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        char *word_save = NULL;
        const char *sep = "";
        for (char *word = strtok_r(line, " ", &word_save); word;
             word = strtok_r(NULL, " ", &word_save)) {
            int skip = 0;
            for (int i = 0; except && except[i]; i++)
                if (strncmp(word, except[i], strlen(except[i])) == 0
                    && word[strlen(except[i])] == '=')
                    skip = 1;
            if (!skip) {
                fprintf(out, "%s%s", sep, word);
                sep = " ";
            }
        }
        fprintf(out, "\n");
    }
    fclose(out);
    free(copy);
    return text;
}

/*  A number from a snapshot: `key` of the INFO line, or of the STATS line
    of `queue`. */
static uint64_t s_number(const char *snapshot, const char *queue, const char *key)
{
    char line_start[128], pattern[80];
    if (queue)
        snprintf(line_start, sizeof line_start, "stats queue=%s ", queue);
    else
        snprintf(line_start, sizeof line_start, "info ");
    snprintf(pattern, sizeof pattern, " %s=", key);
    const char *line = strstr(snapshot, line_start);
    if (!line)
        return 0; /* no such queue: all its numbers are 0 */
    const char *end = strchr(line, '\n');
    const char *at = strstr(line, pattern);
    if (!at || (end && at > end))
        fail_msg("no %s in: %.*s", key, (int) (end ? end - line : (long) strlen(line)), line);
    return strtoull(at + strlen(pattern), NULL, 10);
}

static uint64_t s_info(fixture_t *f, const char *key)
{
    char *now = s_snapshot(f);
    uint64_t value = s_number(now, NULL, key);
    free(now);
    return value;
}

static uint64_t s_stat(fixture_t *f, const char *queue, const char *key)
{
    char *now = s_snapshot(f);
    uint64_t value = s_number(now, queue, key);
    free(now);
    return value;
}

/*  The broker's numbers are those of `before` now, but for `except`. */
static void s_assert_same(fixture_t *f, const char *before, const char *const *except)
{
    char *now = s_snapshot(f);
    char *a = s_without(before, except), *b = s_without(now, except);
    assert_string_equal(b, a);
    free(a), free(b), free(now);
}

/*  The same once connections being closed are gone (libzmq closes them
    in its own time): polls, as the harness does for counters. */
static void s_wait_same(fixture_t *f, const char *before, const char *const *except)
{
    int64_t deadline = zclock_mono() + HARNESS_DEADLINE_MS;
    for (;;) {
        char *now = s_snapshot(f);
        char *a = s_without(before, except), *b = s_without(now, except);
        int same = strcmp(a, b) == 0;
        if (!same && zclock_mono() > deadline)
            assert_string_equal(b, a);
        free(a), free(b), free(now);
        if (same)
            return;
        zclock_sleep(20); /* polling a remote counter: there is nothing to wait on */
    }
}

static void s_wait_stat(fixture_t *f, const char *queue, const char *key, uint64_t value)
{
    int64_t deadline = zclock_mono() + HARNESS_DEADLINE_MS;
    uint64_t now;
    while ((now = s_stat(f, queue, key)) != value) {
        if (zclock_mono() > deadline)
            fail_msg("%s %s stayed %llu, expected %llu", queue, key, (unsigned long long) now,
                     (unsigned long long) value);
        zclock_sleep(20); /* polling a remote counter */
    }
}

static void s_wait_info(fixture_t *f, const char *key, uint64_t value)
{
    int64_t deadline = zclock_mono() + HARNESS_DEADLINE_MS;
    uint64_t now;
    while ((now = s_info(f, key)) != value) {
        if (zclock_mono() > deadline)
            fail_msg("%s stayed %llu, expected %llu", key, (unsigned long long) now,
                     (unsigned long long) value);
        zclock_sleep(20); /* polling a remote counter */
    }
}

/*  A snapshot once the broker counts `connections` connections: those of
    clients that just left are closed by libzmq in its own time, and a
    snapshot taken before that would not compare with a later one. */
static char *s_settled_snapshot(fixture_t *f, uint64_t connections)
{
    s_wait_info(f, "connections", connections);
    return s_snapshot(f);
}

/*  Waits until the broker's log holds `text`. */
static void s_wait_log(const harness_t *h, const char *text)
{
    int64_t deadline = zclock_mono() + HARNESS_DEADLINE_MS;
    for (;;) {
        char *log = harness_log(h);
        int found = strstr(log, text) != NULL;
        if (!found && zclock_mono() > deadline)
            fail_msg("the broker's log has no \"%s\":\n%s", text, log);
        free(log);
        if (found)
            return;
        zclock_sleep(20); /* the log is a file: nothing to wait on */
    }
}

static const char *const NOTHING[] = {NULL};
static const char *const CONNECTIONS[] = {"connections", NULL};
static const char *const CONNECTIONS_AND_BAD_INPUT[] = {"connections", "bad_input", NULL};
static const char *const BAD_INPUT[] = {"bad_input", NULL};

/* ------------------------------------------------------------------ */
/*  Raw sockets with keys                                              */

/*  A raw DEALER (or PUSH) as keys/NAME (NULL: no keys), trusting the broker
    key `server_key` (Z85; NULL: the real one). With `watch`, a monitor of
    its handshake too. */
static zsock_t *s_raw(fixture_t *f, int type, const char *name, const char *server_key,
                      aq_handshake_watch_t **watch)
{
    zsock_t *socket = zsock_new(type);
    assert_non_null(socket);
    zsock_set_linger(socket, 0);
    if (name) {
        char path[512];
        zcert_t *cert = zcert_load(s_path(f, path, sizeof path, "keys/%s.key_secret", name));
        assert_non_null(cert);
        zcert_apply(cert, socket);
        zcert_destroy(&cert);
        zsock_set_curve_serverkey(socket, server_key ? server_key : f->broker_key);
    }
    if (watch) {
        *watch = aq_handshake_watch_new(socket);
        assert_non_null(*watch);
    }
    aq_endpoint_t endpoint;
    assert_int_equal(aq_endpoint_parse(f->h.address, 0, &endpoint), AQ_OK);
    char address[AQ_ENDPOINT_MAX];
    if (type == ZMQ_PUSH)
        aq_endpoint_pull(&endpoint, address, sizeof address);
    else
        aq_endpoint_router(&endpoint, address, sizeof address);
    assert_int_equal(zsock_connect(socket, "%s", address), 0);
    return socket;
}

/*  Waits until the monitor has seen the handshake fail; returns how. */
static aq_status_t s_wait_handshake_failed(aq_handshake_watch_t *watch)
{
    int64_t deadline = zclock_mono() + HARNESS_DEADLINE_MS;
    aq_status_t status;
    while ((status = aq_handshake_watch_status(watch)) == AQ_OK) {
        if (zclock_mono() > deadline)
            fail_msg("the handshake did not fail");
        zclock_sleep(10); /* the monitor's events: polled through the library */
    }
    return status;
}

/*  HELLO; WELCOME must come, with these roles. */
static void s_hello(fixture_t *f, zsock_t *dealer, const char *client_id, uint64_t seq,
                    const char *roles)
{
    aq_msg_t hello = {.cmd = AQ_CMD_HELLO, .tag = aq_bytes_str("hello"),
                      .client = aq_bytes_str(client_id), .seq = seq};
    harness_send_msg(dealer, &hello);
    aq_msg_t msg;
    assert_int_equal(harness_recv(dealer, f->inbox, &msg), AQ_CMD_WELCOME);
    assert_int_equal(msg.text.size, strlen(roles));
    assert_memory_equal(msg.text.data, roles, msg.text.size);
}

static void s_expect_error(fixture_t *f, zsock_t *socket, int code, const char *tag,
                           const char *subject)
{
    aq_msg_t msg;
    aq_cmd_t cmd = harness_recv(socket, f->inbox, &msg);
    if (cmd != AQ_CMD_ERROR)
        fail_msg("expected ERROR %d (tag '%s'), got %s", code, tag, aq_cmd_name(cmd));
    if ((int) msg.code != code || msg.tag.size != strlen(tag)
        || memcmp(msg.tag.data, tag, msg.tag.size) != 0)
        fail_msg("expected ERROR %d with tag '%s', got ERROR %d with tag '%.*s' (%.*s)", code, tag,
                 (int) msg.code, (int) msg.tag.size, (const char *) msg.tag.data,
                 (int) msg.text.size, (const char *) msg.text.data);
    if (subject && (msg.subject.size != strlen(subject)
                    || memcmp(msg.subject.data, subject, msg.subject.size) != 0))
        fail_msg("ERROR %d: expected subject '%s', got '%.*s'", code, subject,
                 (int) msg.subject.size, (const char *) msg.subject.data);
}

static void s_expect(fixture_t *f, zsock_t *socket, aq_cmd_t cmd, aq_msg_t *msg)
{
    aq_cmd_t got = harness_recv(socket, f->inbox, msg);
    if (got != cmd)
        fail_msg("expected %s, got %s (%d %.*s)", aq_cmd_name(cmd), aq_cmd_name(got),
                 (int) msg->code, (int) msg->text.size, (const char *) msg->text.data);
}

/*  ACK, TOUCH or NACK of one id. */
static void s_send_ids(zsock_t *socket, aq_cmd_t cmd, const char *tag, uint64_t id)
{
    static uint8_t ids[8];
    aq_put_u64(ids, id);
    aq_msg_t msg = {.cmd = cmd, .tag = aq_bytes_str(tag), .ids = {ids, 8}};
    if (cmd == AQ_CMD_NACK)
        msg.text = aq_bytes_str("not mine");
    harness_send_msg(socket, &msg);
}

static void s_send_put(zsock_t *push, const char *producer, uint64_t seq, const char *queue,
                       const char *payload)
{
    aq_msg_t put = {.cmd = AQ_CMD_PUT, .producer = aq_bytes_str(producer), .seq = seq,
                    .queue = aq_bytes_str(queue), .payload = aq_bytes_str(payload)};
    harness_send_msg(push, &put);
}

/*  Someone's raw PUSH and DEALER (as keys/NAME, NULL: no keys, trusting
    `server_key`, NULL: the real one), each with a monitor of its handshake,
    and on them a put and a HELLO as `id` that must never arrive. */
typedef struct {
    zsock_t *push, *dealer;
    aq_handshake_watch_t *push_watch, *dealer_watch;
} intruder_t;

static void s_intrude(fixture_t *f, intruder_t *in, const char *name, const char *server_key,
                      const char *id)
{
    in->push = s_raw(f, ZMQ_PUSH, name, server_key, &in->push_watch);
    in->dealer = s_raw(f, ZMQ_DEALER, name, server_key, &in->dealer_watch);
    s_send_put(in->push, id, 1, "q", "sneaked in");
    harness_send_frames(in->dealer, "asyncq/2", "HELLO", "h", id, "1", NULL);
}

static void s_intruder_leaves(intruder_t *in)
{
    aq_handshake_watch_destroy(&in->push_watch);
    aq_handshake_watch_destroy(&in->dealer_watch);
    zsock_destroy(&in->push);
    zsock_destroy(&in->dealer);
}

/*  A PUTS of `count` copies of `payload`. */
static void s_send_puts(zsock_t *push, const char *producer, uint64_t seq, uint64_t count,
                        const char *queue, const char *payload)
{
    static uint8_t batch[4096];
    size_t size = 0;
    for (uint64_t i = 0; i < count; i++)
        size += aq_puts_entry_write(batch + size, payload, (uint32_t) strlen(payload));
    aq_msg_t puts = {.cmd = AQ_CMD_PUTS, .producer = aq_bytes_str(producer), .seq = seq,
                     .count = count, .queue = aq_bytes_str(queue), .batch = {batch, size}};
    harness_send_msg(push, &puts);
}

/* ------------------------------------------------------------------ */
/*  Items, through the library                                         */

/*  Puts the payloads (NULL-ended) into `queue` as keys/NAME and syncs. */
static void s_put_as(fixture_t *f, const char *name, const char *queue, const char *const *payloads)
{
    s_as(f, name, NULL);
    aq_status_t rc;
    aq_producer_t *producer = aq_producer_new(f->h.address, name, &rc);
    assert_int_equal(rc, AQ_OK);
    for (int i = 0; payloads[i]; i++)
        assert_int_equal(aq_producer_put(producer, queue, payloads[i], strlen(payloads[i])), AQ_OK);
    assert_int_equal(aq_producer_sync(producer, HARNESS_DEADLINE_MS), AQ_OK);
    aq_producer_destroy(&producer);
    s_as(f, "admin", NULL);
}

static void s_put(fixture_t *f, const char *queue, const char *const *payloads)
{
    s_put_as(f, "admin", queue, payloads);
}

/*  Gets `count` items as admin and acks them; each payload must be one of
    `expected` (NULL-ended), each exactly once, and nothing else. */
static void s_drain_exactly(fixture_t *f, const char *queue, const char *const *expected)
{
    int count = 0, seen[64] = {0};
    while (expected[count])
        count++;
    assert_true(count <= 64);
    aq_status_t rc;
    aq_consumer_t *consumer = aq_consumer_new(f->h.address, "drain", queue, 16, &rc);
    assert_int_equal(rc, AQ_OK);
    for (int n = 0; n < count; n++) {
        aq_item_t item;
        assert_int_equal(aq_consumer_get(consumer, &item, HARNESS_DEADLINE_MS), AQ_OK);
        int found = -1;
        for (int i = 0; i < count; i++)
            if (strlen(expected[i]) == item.size && memcmp(expected[i], item.data, item.size) == 0)
                found = i;
        if (found < 0)
            fail_msg("delivered an item that was never put: '%.*s'", (int) item.size,
                     (const char *) item.data);
        if (seen[found]++)
            fail_msg("'%s' delivered twice", expected[found]);
        aq_consumer_ack(consumer, item.id);
    }
    aq_consumer_flush(consumer);
    aq_consumer_destroy(&consumer);
    s_wait_stat(f, queue, "outstanding", 0);
}

/*  Three items in `queue`: one dead (--max-attempts 1, nacked once), one
    held by the returned admin consumer (its id in *held), one queued. */
static aq_consumer_t *s_populate(fixture_t *f, const char *queue, uint64_t *held)
{
    const char *const payloads[] = {"first", "second", "third", NULL};
    s_put(f, queue, payloads);
    aq_status_t rc;
    aq_consumer_t *consumer = aq_consumer_new(f->h.address, "holder", queue, 1, &rc);
    assert_int_equal(rc, AQ_OK);
    aq_item_t item;
    assert_int_equal(aq_consumer_get(consumer, &item, HARNESS_DEADLINE_MS), AQ_OK);
    assert_int_equal(aq_consumer_nack(consumer, item.id, 0, "to the dead letters"), AQ_OK);
    assert_int_equal(aq_consumer_get(consumer, &item, HARNESS_DEADLINE_MS), AQ_OK);
    assert_memory_equal(item.data, "second", 6);
    *held = item.id;
    s_wait_stat(f, queue, "dead", 1);
    assert_int_equal(s_stat(f, queue, "queued"), 1);
    assert_int_equal(s_stat(f, queue, "inflight"), 1);
    return consumer;
}

/*  The holder of s_populate acks its item and leaves without taking the
    queued one: with credit 1 its ack would bring it the next item, which
    its BYE would give back, and --max-attempts 1 makes an item given back
    a dead letter. Credit 0 first (ACK and BYE follow it in order). */
static void s_release_holder(aq_consumer_t **holder, uint64_t held)
{
    assert_int_equal(aq_consumer_set_credit(*holder, 0), AQ_OK);
    assert_int_equal(aq_consumer_ack(*holder, held), AQ_OK);
    aq_consumer_destroy(holder);
}

/*  Every session the test opened is gone (closed sockets end theirs once
    the broker sees the connection close; until then a consumer's session
    could be handed the check's item), and the broker still serves. */
static void s_assert_serving(fixture_t *f, const char *queue)
{
    s_wait_info(f, "sessions", 1); /* the observer's */
    harness_assert_serving(&f->h, queue);
}

/* ================================================================== */
/*  1. Who gets in                                                     */

/*  A client without keys never completes the handshake: the library says
    the broker requires keys, and nothing it sends reaches the broker. */
static void test_a_client_without_a_key_is_refused(void **state)
{
    fixture_t *f = s_start(state, NULL, 0);
    const char *const payloads[] = {"before", NULL};
    s_put(f, "q", payloads);
    char *before = s_settled_snapshot(f, 1); /* the observer's */

    intruder_t in;
    s_intrude(f, &in, NULL, NULL, "stranger");
    harness_send_frames(in.dealer, "asyncq/2", "STATS", "s", "", NULL);
    assert_int_not_equal(s_wait_handshake_failed(in.push_watch), AQ_OK);
    assert_int_not_equal(s_wait_handshake_failed(in.dealer_watch), AQ_OK);

    s_as(f, NULL, NULL);
    aq_status_t rc;
    int64_t started = zclock_mono();
    aq_consumer_t *consumer = aq_consumer_new(f->h.address, "keyless", "q", 1, &rc);
    printf("    a client without keys was told %s after %lld ms\n", aq_status_name(rc),
           (long long) (zclock_mono() - started));
    assert_null(consumer);
    assert_int_equal(rc, AQ_KEY_REQUIRED);
    s_as(f, "admin", NULL);

    s_assert_same(f, before, CONNECTIONS); /* while its sockets still try */
    s_intruder_leaves(&in);
    s_wait_same(f, before, NOTHING);
    free(before);
    s_drain_exactly(f, "q", payloads); /* and nothing it sent */
    s_assert_serving(f, "q");
}

/*  A key that is not in the clients directory: refused at the handshake
    (ZAP), said so to the client (AQ_KEY_REFUSED) and in the broker's log. */
static void test_a_key_not_in_the_clients_directory_is_refused(void **state)
{
    fixture_t *f = s_start(state, NULL, 1);
    s_keygen(f, "stranger", "produce,consume,admin", NULL, 0);
    const char *const payloads[] = {"before", NULL};
    s_put(f, "q", payloads);
    char *before = s_settled_snapshot(f, 1); /* the observer's */

    intruder_t in;
    s_intrude(f, &in, "stranger", NULL, "stranger");
    assert_int_equal(s_wait_handshake_failed(in.push_watch), AQ_KEY_REFUSED);
    assert_int_equal(s_wait_handshake_failed(in.dealer_watch), AQ_KEY_REFUSED);

    s_as(f, "stranger", NULL);
    aq_status_t rc;
    aq_producer_t *producer = aq_producer_new(f->h.address, "stranger", &rc);
    assert_null(producer);
    assert_int_equal(rc, AQ_KEY_REFUSED);
    s_as(f, "admin", NULL);

    s_assert_same(f, before, CONNECTIONS);
    s_intruder_leaves(&in);
    s_wait_same(f, before, NOTHING);
    free(before);
    char key[41], line[128];
    s_public_key(f, "stranger", key);
    snprintf(line, sizeof line, "client key %s from 127.0.0.1", key);
    s_wait_log(&f->h, line);
    s_wait_log(&f->h, "is not in the clients directory");
    s_drain_exactly(f, "q", payloads); /* and nothing it sent */
    s_assert_serving(f, "q");
}

/*  A client that trusts another broker key (an allowed client key, the
    wrong server key): the handshake fails; AQ_KEY_MISMATCH. */
static void test_a_wrong_server_key_is_refused(void **state)
{
    fixture_t *f = s_start(state, NULL, 0);
    s_keygen(f, "impostor", "admin", NULL, 0);
    const char *const payloads[] = {"before", NULL};
    s_put(f, "q", payloads);
    char *before = s_settled_snapshot(f, 1); /* the observer's */
    char impostor[41];
    s_public_key(f, "impostor", impostor);

    intruder_t in;
    s_intrude(f, &in, "admin", impostor, "admin-lost");
    assert_int_not_equal(s_wait_handshake_failed(in.push_watch), AQ_OK);
    assert_int_not_equal(s_wait_handshake_failed(in.dealer_watch), AQ_OK);

    s_as(f, "admin", "impostor");
    aq_status_t rc;
    aq_session_t *session = aq_session_open(f->h.address, "wrong-server", 0, REFUSED_WAIT_MS, &rc);
    assert_null(session);
    assert_int_equal(rc, AQ_KEY_MISMATCH);
    aq_producer_t *producer = aq_producer_new(f->h.address, "wrong-server", &rc);
    assert_null(producer);
    assert_int_equal(rc, AQ_KEY_MISMATCH);
    s_as(f, "admin", NULL);

    s_assert_same(f, before, CONNECTIONS);
    s_intruder_leaves(&in);
    s_wait_same(f, before, NOTHING);
    free(before);
    s_drain_exactly(f, "q", payloads); /* and nothing it sent */
    s_assert_serving(f, "q");
}

/*  A key removed from the clients directory, then SIGHUP: its sessions
    (a consumer holding an item, a producer) are closed, the item goes
    back to the queue, and the key cannot come back. Other keys go on. */
static void test_a_revoked_key_loses_its_sessions_and_cannot_reconnect(void **state)
{
    fixture_t *f = s_start(state, NULL, 1);
    s_keygen(f, "victim", "produce,consume", NULL, 1);
    s_keygen(f, "bystander", "consume", NULL, 1);
    const char *const payloads[] = {"one", "two", NULL};
    s_put(f, "q", payloads);

    s_as(f, "victim", NULL);
    aq_status_t rc;
    aq_consumer_t *consumer = aq_consumer_new(f->h.address, "victim-consumer", "q", 1, &rc);
    assert_int_equal(rc, AQ_OK);
    aq_item_t item;
    assert_int_equal(aq_consumer_get(consumer, &item, HARNESS_DEADLINE_MS), AQ_OK);
    uint64_t held = item.id;
    aq_producer_t *producer = aq_producer_new(f->h.address, "victim-producer", &rc);
    assert_int_equal(rc, AQ_OK);
    assert_int_equal(aq_producer_put(producer, "q", "three", 5), AQ_OK);
    assert_int_equal(aq_producer_sync(producer, HARNESS_DEADLINE_MS), AQ_OK);
    s_as(f, "bystander", NULL);
    aq_consumer_t *bystander = aq_consumer_new(f->h.address, "bystander", "other", 1, &rc);
    assert_int_equal(rc, AQ_OK);
    s_as(f, "admin", NULL);
    assert_int_equal(s_info(f, "sessions"), 4); /* observer, consumer, producer, bystander */
    assert_int_equal(s_stat(f, "q", "inflight"), 1);

    s_revoke(f, "victim");
    assert_int_equal(kill(f->h.broker.pid, SIGHUP), 0);
    s_wait_info(f, "sessions", 2);
    s_wait_stat(f, "q", "inflight", 0);
    assert_int_equal(s_stat(f, "q", "queued"), 3);
    assert_int_equal(s_stat(f, "q", "puts"), 3);
    assert_int_equal(s_stat(f, "other", "consumers"), 1);
    s_wait_log(&f->h, "2 sessions of revoked keys closed");
    /* The observer, the bystander, and the revoked producer's PUSH: the
       refused reconnections of its two DEALERs closed. */
    char *before = s_settled_snapshot(f, 3);

    /* Its old sessions are gone: an ack does nothing, a put is not taken. */
    s_as(f, "victim", NULL);
    assert_int_equal(aq_consumer_ack(consumer, held), AQ_OK);
    assert_int_equal(aq_consumer_flush(consumer), AQ_OK);
    assert_int_equal(aq_session_hello(aq_consumer_session(consumer), REFUSED_WAIT_MS),
                     AQ_KEY_REFUSED);
    assert_int_equal(aq_producer_put(producer, "q", "four", 4), AQ_OK);
    rc = aq_producer_sync(producer, REFUSED_WAIT_MS);
    printf("    a revoked producer's sync returned %s\n", aq_status_name(rc));
    assert_int_not_equal(rc, AQ_OK);
    assert_int_equal(aq_producer_unconfirmed(producer), 1);
    aq_consumer_destroy(&consumer);
    aq_producer_destroy(&producer);
    /* A new connection with the key: refused at the handshake. */
    aq_consumer_t *again = aq_consumer_new(f->h.address, "victim-again", "q", 1, &rc);
    assert_null(again);
    assert_int_equal(rc, AQ_KEY_REFUSED);
    s_as(f, "admin", NULL);

    /* Nothing changed but this: the put "four" left on the producer's PUSH
       connection (the revocation closed sessions, and a put connection is
       none) and was dropped for want of a session, and counted; that
       connection closed with the producer. */
    s_wait_info(f, "bad_input", s_number(before, NULL, "bad_input") + 1);
    s_wait_info(f, "connections", s_number(before, NULL, "connections") - 1);
    s_assert_same(f, before, CONNECTIONS_AND_BAD_INPUT);
    s_wait_log(&f->h, "which has no session: dropped");
    free(before);
    /* The bystander's session was not touched. */
    const char *const others[] = {"for the bystander", NULL};
    s_put(f, "other", others);
    assert_int_equal(aq_consumer_get(bystander, &item, HARNESS_DEADLINE_MS), AQ_OK);
    aq_consumer_ack(bystander, item.id);
    aq_consumer_destroy(&bystander);
    s_wait_stat(f, "other", "acked", 1);
    const char *const left[] = {"one", "two", "three", NULL};
    s_drain_exactly(f, "q", left);
    s_assert_serving(f, "q");
}

/*  A key copied into the clients directory is let in at once, without
    SIGHUP (zauth re-reads the directory, and the broker reads it when a key
    it does not know says HELLO); so is a second one added right after. */
static void test_a_key_added_to_the_directory_is_let_in_without_sighup(void **state)
{
    fixture_t *f = s_start(state, NULL, 0);
    s_keygen(f, "newcomer", "produce", NULL, 0);
    s_keygen(f, "latecomer", "consume", "late", 0);

    s_as(f, "newcomer", NULL);
    aq_status_t rc;
    aq_session_t *session = aq_session_open(f->h.address, "newcomer", 0, REFUSED_WAIT_MS, &rc);
    assert_null(session);
    assert_int_equal(rc, AQ_KEY_REFUSED);

    s_allow(f, "newcomer");
    session = aq_session_open(f->h.address, "newcomer", 0, HARNESS_DEADLINE_MS, &rc);
    assert_int_equal(rc, AQ_OK);
    assert_string_equal(aq_session_welcome(session)->roles, "produce");
    aq_session_destroy(&session);
    const char *const payloads[] = {"from the newcomer", NULL};
    s_put_as(f, "newcomer", "q", payloads);

    /* Within the second: the broker must not answer from its old table. */
    s_allow(f, "latecomer");
    s_as(f, "latecomer", NULL);
    session = aq_session_open(f->h.address, "latecomer", 0, HARNESS_DEADLINE_MS, &rc);
    if (rc != AQ_OK)
        fail_msg("a key added to the clients directory was not let in: %s%s", aq_status_name(rc),
                 rc == AQ_REFUSED ? " (an ERROR to its HELLO: the broker's table was old)" : "");
    assert_string_equal(aq_session_welcome(session)->roles, "consume");
    aq_session_destroy(&session);
    s_as(f, "admin", NULL);
    assert_int_equal(s_stat(f, "q", "puts"), 1);
    s_drain_exactly(f, "q", payloads);
    s_assert_serving(f, "q");
}

/* ================================================================== */
/*  2. Roles and queues                                                */

/*  A produce key may put, sync, join, ask STATS and INFO; CREDIT, ACK,
    TOUCH, NACK, DEAD and SHUTDOWN get 403 with their tag and change
    nothing (bad_input counts each). */
static void test_a_produce_key_may_not_consume_or_administer(void **state)
{
    char *const flags[] = {"--max-attempts", "1", NULL};
    fixture_t *f = s_start(state, flags, 0);
    s_keygen(f, "producer", "produce", NULL, 1);
    uint64_t held;
    aq_consumer_t *holder = s_populate(f, "q", &held);

    zsock_t *dealer = s_raw(f, ZMQ_DEALER, "producer", NULL, NULL);
    zsock_t *push = s_raw(f, ZMQ_PUSH, "producer", NULL, NULL);
    s_hello(f, dealer, "p-1", 1, "produce");
    char *before = s_snapshot(f);
    harness_send_frames(dealer, "asyncq/2", "CREDIT", "credit", "q", "5", "0", NULL);
    s_expect_error(f, dealer, AQ_FORBIDDEN, "credit", NULL);
    s_send_ids(dealer, AQ_CMD_ACK, "ack", held);
    s_expect_error(f, dealer, AQ_FORBIDDEN, "ack", NULL);
    s_send_ids(dealer, AQ_CMD_TOUCH, "touch", held);
    s_expect_error(f, dealer, AQ_FORBIDDEN, "touch", NULL);
    s_send_ids(dealer, AQ_CMD_NACK, "nack", held);
    s_expect_error(f, dealer, AQ_FORBIDDEN, "nack", NULL);
    harness_send_frames(dealer, "asyncq/2", "DEAD", "purge", "q", "purge", NULL);
    s_expect_error(f, dealer, AQ_FORBIDDEN, "purge", NULL);
    harness_send_frames(dealer, "asyncq/2", "DEAD", "requeue", "q", "requeue", NULL);
    s_expect_error(f, dealer, AQ_FORBIDDEN, "requeue", NULL);
    harness_send_frames(dealer, "asyncq/2", "DEAD", "list", "q", "list", NULL);
    s_expect_error(f, dealer, AQ_FORBIDDEN, "list", NULL);
    harness_send_frames(dealer, "asyncq/2", "SHUTDOWN", "shut-q", "q", "immediate", NULL);
    s_expect_error(f, dealer, AQ_FORBIDDEN, "shut-q", NULL);
    harness_send_frames(dealer, "asyncq/2", "SHUTDOWN", "shut-all", "", "drain", NULL);
    s_expect_error(f, dealer, AQ_FORBIDDEN, "shut-all", NULL);
    s_assert_same(f, before, BAD_INPUT);
    assert_int_equal(s_info(f, "bad_input"), s_number(before, NULL, "bad_input") + 9);
    free(before);

    /* What it may do, it can. */
    aq_msg_t msg;
    harness_send_frames(dealer, "asyncq/2", "STATS", "stats", "q", NULL);
    s_expect(f, dealer, AQ_CMD_REPORT, &msg);
    assert_int_equal(msg.list_size, 1);
    harness_send_frames(dealer, "asyncq/2", "INFO", "info", NULL);
    s_expect(f, dealer, AQ_CMD_REPORT, &msg);
    harness_send_frames(dealer, "asyncq/2", "JOIN", "join", "q", "1", "before", NULL);
    s_expect(f, dealer, AQ_CMD_TIMEOUT, &msg); /* two items outstanding */
    s_send_put(push, "p-1", 1, "q", "allowed");
    harness_send_frames(dealer, "asyncq/2", "SYNC", "sync", "p-1", "1", NULL);
    s_expect(f, dealer, AQ_CMD_SYNCED, &msg);
    assert_int_equal(s_stat(f, "q", "puts"), 4);
    assert_int_equal(s_stat(f, "q", "dead"), 1);
    assert_int_equal(s_stat(f, "q", "inflight"), 1);
    s_release_holder(&holder, held);
    zsock_destroy(&push);
    zsock_destroy(&dealer);
    s_wait_stat(f, "q", "acked", 1);
    const char *const left[] = {"third", "allowed", NULL};
    s_drain_exactly(f, "q", left);
    s_assert_serving(f, "q");
}

/*  A consume key may credit, ack, join, ask STATS and INFO; its PUT and
    PUTS are received and refused (403 to its session, naming the seqs,
    nothing enqueued); SYNC, DEAD and SHUTDOWN get 403 with their tag. */
static void test_a_consume_key_may_not_put_or_administer(void **state)
{
    char *const flags[] = {"--max-attempts", "1", NULL};
    fixture_t *f = s_start(state, flags, 0);
    s_keygen(f, "consumer", "consume", NULL, 1);
    uint64_t held;
    aq_consumer_t *holder = s_populate(f, "q", &held);

    zsock_t *dealer = s_raw(f, ZMQ_DEALER, "consumer", NULL, NULL);
    zsock_t *push = s_raw(f, ZMQ_PUSH, "consumer", NULL, NULL);
    s_hello(f, dealer, "c-1", 1, "consume"); /* seq 1: it says it will put */
    char *before = s_snapshot(f);
    s_send_put(push, "c-1", 1, "q", "not allowed");
    s_expect_error(f, dealer, AQ_FORBIDDEN, "", "1");
    s_send_puts(push, "c-1", 2, 3, "new-queue", "not allowed either");
    s_expect_error(f, dealer, AQ_FORBIDDEN, "", "2-4");
    harness_send_frames(dealer, "asyncq/2", "SYNC", "sync", "c-1", "4", NULL);
    s_expect_error(f, dealer, AQ_FORBIDDEN, "sync", NULL);
    harness_send_frames(dealer, "asyncq/2", "DEAD", "purge", "q", "purge", NULL);
    s_expect_error(f, dealer, AQ_FORBIDDEN, "purge", NULL);
    harness_send_frames(dealer, "asyncq/2", "DEAD", "requeue", "q", "requeue", NULL);
    s_expect_error(f, dealer, AQ_FORBIDDEN, "requeue", NULL);
    harness_send_frames(dealer, "asyncq/2", "SHUTDOWN", "shut-q", "q", "immediate", NULL);
    s_expect_error(f, dealer, AQ_FORBIDDEN, "shut-q", NULL);
    harness_send_frames(dealer, "asyncq/2", "SHUTDOWN", "shut-all", "", "drain", NULL);
    s_expect_error(f, dealer, AQ_FORBIDDEN, "shut-all", NULL);
    s_assert_same(f, before, BAD_INPUT); /* no new-queue either */
    assert_int_equal(s_info(f, "bad_input"), s_number(before, NULL, "bad_input") + 7);
    free(before);

    /* What it may do, it can: the queued item comes to it. */
    aq_msg_t msg;
    harness_send_frames(dealer, "asyncq/2", "CREDIT", "credit", "q", "1", "0", NULL);
    s_expect(f, dealer, AQ_CMD_CREDITED, &msg);
    s_expect(f, dealer, AQ_CMD_ITEM, &msg);
    assert_int_equal(msg.payload.size, 5);
    assert_memory_equal(msg.payload.data, "third", 5);
    s_send_ids(dealer, AQ_CMD_ACK, "ack", msg.id);
    harness_send_frames(dealer, "asyncq/2", "STATS", "stats", "", NULL);
    s_expect(f, dealer, AQ_CMD_REPORT, &msg); /* after the ack: no error came */
    assert_int_equal(msg.list_size, 1);
    assert_int_equal(s_stat(f, "q", "acked"), 1);
    assert_int_equal(s_stat(f, "q", "puts"), 3);
    s_release_holder(&holder, held);
    zsock_destroy(&push);
    zsock_destroy(&dealer);
    s_wait_stat(f, "q", "acked", 2);
    s_assert_serving(f, "q");
}

/*  An admin key (role "admin" alone) may do everything. */
static void test_an_admin_key_may_do_everything(void **state)
{
    char *const flags[] = {"--max-attempts", "1", NULL};
    fixture_t *f = s_start(state, flags, 0);
    s_keygen(f, "operator", "admin", NULL, 1);
    uint64_t held;
    aq_consumer_t *holder = s_populate(f, "q", &held);
    s_release_holder(&holder, held);
    s_wait_stat(f, "q", "acked", 1);

    zsock_t *dealer = s_raw(f, ZMQ_DEALER, "operator", NULL, NULL);
    zsock_t *push = s_raw(f, ZMQ_PUSH, "operator", NULL, NULL);
    s_hello(f, dealer, "op-1", 1, "admin");
    aq_msg_t msg;
    harness_send_frames(dealer, "asyncq/2", "DEAD", "list", "q", "list", NULL);
    s_expect(f, dealer, AQ_CMD_REPORT, &msg);
    assert_int_equal(msg.list_size, 1);
    harness_send_frames(dealer, "asyncq/2", "DEAD", "purge", "q", "purge", NULL);
    s_expect(f, dealer, AQ_CMD_REPORT, &msg);
    assert_memory_equal(msg.list[0].data, "purged=1", 8);
    s_send_put(push, "op-1", 1, "q", "from the operator");
    harness_send_frames(dealer, "asyncq/2", "SYNC", "sync", "op-1", "1", NULL);
    s_expect(f, dealer, AQ_CMD_SYNCED, &msg);
    harness_send_frames(dealer, "asyncq/2", "CREDIT", "credit", "q", "2", "0", NULL);
    s_expect(f, dealer, AQ_CMD_CREDITED, &msg);
    uint64_t ids[2];
    for (int i = 0; i < 2; i++) {
        s_expect(f, dealer, AQ_CMD_ITEM, &msg);
        ids[i] = msg.id;
    }
    s_send_ids(dealer, AQ_CMD_TOUCH, "touch", ids[0]);
    s_send_ids(dealer, AQ_CMD_ACK, "ack", ids[0]);
    s_send_ids(dealer, AQ_CMD_ACK, "ack", ids[1]);
    harness_send_frames(dealer, "asyncq/2", "JOIN", "join", "q", "0", "before", NULL);
    s_expect(f, dealer, AQ_CMD_JOINED, &msg);
    harness_send_frames(dealer, "asyncq/2", "SHUTDOWN", "shut", "q", "drain", NULL);
    /* q is empty: its consumer (this session, by its CREDIT) is told at
       once, before the SHUTDOWN is answered. */
    s_expect_error(f, dealer, AQ_SHUT_DOWN, "credit", "q");
    s_expect(f, dealer, AQ_CMD_REPORT, &msg);
    assert_non_null(strstr((const char *) msg.list[0].data, "state=draining"));
    harness_send_frames(dealer, "asyncq/2", "INFO", "info", NULL);
    s_expect(f, dealer, AQ_CMD_REPORT, &msg);
    zsock_destroy(&push);
    zsock_destroy(&dealer);
    assert_int_equal(s_stat(f, "q", "acked"), 3);
    assert_int_equal(s_stat(f, "q", "dead"), 0);
    s_assert_serving(f, "open-queue");
}

/*  The asyncq command, refused by the broker, says what the broker said:
    its code, the code's name and its reason, not "broker refused the
    request"; and the refused request changed nothing. */
static void test_the_cli_shows_the_brokers_code_and_reason_when_refused(void **state)
{
    fixture_t *f = s_start(state, NULL, 0);
    s_keygen(f, "worker", "produce,consume", NULL, 1);
    s_keygen(f, "reader", "consume", NULL, 1);
    char worker[512], reader[512], server[512], out[4096], err[4096];
    s_path(f, worker, sizeof worker, "keys/worker.key_secret");
    s_path(f, reader, sizeof reader, "keys/reader.key_secret");
    s_path(f, server, sizeof server, "keys/broker.key");
    const char *forbidden = "the broker refused: FORBIDDEN (403): this client's roles do not "
                            "allow that command";
    char *shutdown[] = {"asyncq", "shutdown", "-b", f->h.address, "--curve-secret", worker,
                        "--server-key", server, NULL};
    assert_int_equal(harness_run_err(shutdown, out, sizeof out, err, sizeof err), 1);
    printf("    %s", err);
    assert_non_null(strstr(err, "asyncq shutdown: "));
    assert_non_null(strstr(err, forbidden));
    char *dead[] = {"asyncq", "dead", "purge", "-b", f->h.address, "-q", "q", "--curve-secret",
                    worker, "--server-key", server, NULL};
    assert_int_equal(harness_run_err(dead, out, sizeof out, err, sizeof err), 1);
    printf("    %s", err);
    assert_non_null(strstr(err, "asyncq dead: "));
    assert_non_null(strstr(err, forbidden));
    char *put[] = {"asyncq", "put", "-b", f->h.address, "-q", "q", "--curve-secret", reader,
                   "--server-key", server, "refused", NULL};
    assert_int_equal(harness_run_err(put, out, sizeof out, err, sizeof err), 1);
    printf("    %s", err);
    /* Its put is received and refused, and so is its SYNC. */
    assert_non_null(strstr(err, "asyncq put: "));
    assert_non_null(strstr(err, forbidden));
    /* Nothing was shut down, nothing put. */
    assert_int_equal(s_stat(f, "q", "puts"), 0);
    s_assert_serving(f, "q");
    assert_int_equal(s_stat(f, "q", "puts"), 1);
}

/*  A key granted some queues: a request naming another queue gets 403
    (with its tag, the queue as subject), a put into one is refused (403
    naming its seq), STATS for every queue lists only its own, and nothing
    of the other queues changes. */
static void test_a_key_limited_to_some_queues_sees_and_touches_only_those(void **state)
{
    fixture_t *f = s_start(state, NULL, 0);
    s_keygen(f, "jobs", "produce,consume,admin", "jobs,emails", 1);
    const char *const secret[] = {"payroll", NULL}, *const jobs[] = {"job", NULL},
                      *const emails[] = {"mail", NULL};
    s_put(f, "secret", secret);
    s_put(f, "jobs", jobs);
    s_put(f, "emails", emails);

    zsock_t *dealer = s_raw(f, ZMQ_DEALER, "jobs", NULL, NULL);
    zsock_t *push = s_raw(f, ZMQ_PUSH, "jobs", NULL, NULL);
    s_hello(f, dealer, "jobs-1", 1, "produce,consume,admin");
    char *before = s_snapshot(f);
    harness_send_frames(dealer, "asyncq/2", "CREDIT", "credit", "secret", "1", "0", NULL);
    s_expect_error(f, dealer, AQ_FORBIDDEN, "credit", "secret");
    harness_send_frames(dealer, "asyncq/2", "JOIN", "join", "secret", "0", "all", NULL);
    s_expect_error(f, dealer, AQ_FORBIDDEN, "join", "secret");
    harness_send_frames(dealer, "asyncq/2", "STATS", "stats", "secret", NULL);
    s_expect_error(f, dealer, AQ_FORBIDDEN, "stats", "secret");
    harness_send_frames(dealer, "asyncq/2", "DEAD", "dead", "secret", "purge", NULL);
    s_expect_error(f, dealer, AQ_FORBIDDEN, "dead", "secret");
    harness_send_frames(dealer, "asyncq/2", "SHUTDOWN", "shut", "secret", "immediate", NULL);
    s_expect_error(f, dealer, AQ_FORBIDDEN, "shut", "secret");
    harness_send_frames(dealer, "asyncq/2", "SHUTDOWN", "shut-all", "", "immediate", NULL);
    s_expect_error(f, dealer, AQ_FORBIDDEN, "shut-all", NULL);
    s_send_put(push, "jobs-1", 1, "secret", "injected");
    s_expect_error(f, dealer, AQ_FORBIDDEN, "", "1");
    s_send_puts(push, "jobs-1", 2, 2, "elsewhere", "injected");
    s_expect_error(f, dealer, AQ_FORBIDDEN, "", "2-3");
    s_assert_same(f, before, BAD_INPUT);
    free(before);

    aq_msg_t msg;
    harness_send_frames(dealer, "asyncq/2", "STATS", "every", "", NULL);
    s_expect(f, dealer, AQ_CMD_REPORT, &msg);
    assert_int_equal(msg.list_size, 2);
    assert_memory_equal(msg.list[0].data, "queue=emails ", 13);
    assert_memory_equal(msg.list[1].data, "queue=jobs ", 11);
    /* Its own queues work as usual. */
    s_send_put(push, "jobs-1", 4, "jobs", "another job");
    harness_send_frames(dealer, "asyncq/2", "SYNC", "sync", "jobs-1", "4", NULL);
    s_expect(f, dealer, AQ_CMD_SYNCED, &msg);
    harness_send_frames(dealer, "asyncq/2", "CREDIT", "credit", "jobs", "2", "0", NULL);
    s_expect(f, dealer, AQ_CMD_CREDITED, &msg);
    for (int i = 0; i < 2; i++) {
        s_expect(f, dealer, AQ_CMD_ITEM, &msg);
        s_send_ids(dealer, AQ_CMD_ACK, "ack", msg.id);
    }
    harness_send_frames(dealer, "asyncq/2", "JOIN", "join", "jobs", "0", "before", NULL);
    s_expect(f, dealer, AQ_CMD_JOINED, &msg);
    zsock_destroy(&push);
    zsock_destroy(&dealer);
    assert_int_equal(s_stat(f, "secret", "queued"), 1);
    assert_int_equal(s_stat(f, "secret", "puts"), 1);
    assert_int_equal(s_stat(f, "jobs", "acked"), 2);
    s_drain_exactly(f, "secret", secret);
    s_drain_exactly(f, "emails", emails);
    s_assert_serving(f, "emails");
}

/*  INFO's bad_input counts "messages refused as malformed or not allowed,
    ever" (PROTOCOL.md 4.8a): every 403 is one, whatever its cause. */
static void test_every_refusal_is_counted_in_bad_input(void **state)
{
    fixture_t *f = s_start(state, NULL, 0);
    s_keygen(f, "alice", "produce,consume", "mine", 1);
    s_keygen(f, "mallory", "produce,consume", NULL, 1);
    zsock_t *victim = s_raw(f, ZMQ_DEALER, "alice", NULL, NULL);
    s_hello(f, victim, "alice-1", 1, "produce,consume");
    zsock_t *dealer = s_raw(f, ZMQ_DEALER, "alice", NULL, NULL);
    zsock_t *thief = s_raw(f, ZMQ_DEALER, "mallory", NULL, NULL);
    s_hello(f, dealer, "alice-2", 0, "produce,consume");
    struct {
        zsock_t *socket;
        const char *what;
        const char *frames[6];
    } refusals[] = {
        {dealer, "a command outside its roles", {"SHUTDOWN", "r1", "mine", "drain", NULL}},
        {dealer, "CREDIT for a queue outside its grant", {"CREDIT", "r2", "theirs", "1", "0", NULL}},
        {dealer, "STATS for a queue outside its grant", {"STATS", "r3", "theirs", NULL}},
        {dealer, "JOIN for a queue outside its grant", {"JOIN", "r4", "theirs", "0", "all", NULL}},
        {thief, "HELLO with another key's live client id", {"HELLO", "r5", "alice-1", "0", NULL}},
        {thief, "HELLO with another key's producer id", {"HELLO", "r6", "alice-1", "7", NULL}},
    };
    int failed = 0;
    for (size_t i = 0; i < sizeof refusals / sizeof refusals[0]; i++) {
        uint64_t was = s_info(f, "bad_input");
        const char *const *fr = refusals[i].frames;
        zsock_t *s = refusals[i].socket;
        if (!fr[3])
            harness_send_frames(s, "asyncq/2", fr[0], fr[1], fr[2], NULL);
        else if (!fr[4])
            harness_send_frames(s, "asyncq/2", fr[0], fr[1], fr[2], fr[3], NULL);
        else
            harness_send_frames(s, "asyncq/2", fr[0], fr[1], fr[2], fr[3], fr[4], NULL);
        s_expect_error(f, s, AQ_FORBIDDEN, fr[1], NULL);
        uint64_t now = s_info(f, "bad_input");
        printf("    %-45s 403, bad_input %llu -> %llu\n", refusals[i].what,
               (unsigned long long) was, (unsigned long long) now);
        failed += now != was + 1;
    }
    zsock_t *mallory = s_raw(f, ZMQ_DEALER, "mallory", NULL, NULL);
    s_hello(f, mallory, "mallory-1", 1, "produce,consume");
    uint64_t was = s_info(f, "bad_input");
    harness_send_frames(mallory, "asyncq/2", "SYNC", "r7", "alice-1", "1", NULL);
    s_expect_error(f, mallory, AQ_FORBIDDEN, "r7", "alice-1");
    uint64_t now = s_info(f, "bad_input");
    printf("    %-45s 403, bad_input %llu -> %llu\n", "SYNC for another key's producer id",
           (unsigned long long) was, (unsigned long long) now);
    failed += now != was + 1;
    zsock_destroy(&mallory);
    zsock_destroy(&thief);
    zsock_destroy(&dealer);
    zsock_destroy(&victim);
    if (failed)
        fail_msg("%d of 7 refusals (403) were not counted in INFO's bad_input", failed);
    s_assert_serving(f, "q");
}

/* ================================================================== */
/*  3. Hijack attempts (CURVE: they are about keys)                    */

/*  (a) A HELLO with a live consumer's client id from another key: 403; the
    consumer keeps its session and its items, and acks them. */
static void test_hijack_a_consumers_client_id_from_another_key_is_refused(void **state)
{
    fixture_t *f = s_start(state, NULL, 0);
    s_keygen(f, "alice", "consume", NULL, 1);
    s_keygen(f, "mallory", "produce,consume", NULL, 1);
    const char *const payloads[] = {"a1", "a2", NULL};
    s_put(f, "q", payloads);

    s_as(f, "alice", NULL);
    aq_status_t rc;
    aq_consumer_t *victim = aq_consumer_new(f->h.address, "alice", "q", 2, &rc);
    assert_int_equal(rc, AQ_OK);
    s_as(f, "admin", NULL);
    aq_item_t item;
    uint64_t ids[2];
    for (int i = 0; i < 2; i++) {
        assert_int_equal(aq_consumer_get(victim, &item, HARNESS_DEADLINE_MS), AQ_OK);
        ids[i] = item.id;
    }
    const char *victim_id = aq_session_client_id(aq_consumer_session(victim));
    char *before = s_snapshot(f);
    assert_int_equal(s_number(before, "q", "inflight"), 2);

    zsock_t *thief = s_raw(f, ZMQ_DEALER, "mallory", NULL, NULL);
    harness_send_frames(thief, "asyncq/2", "HELLO", "hijack", victim_id, "0", NULL);
    s_expect_error(f, thief, AQ_FORBIDDEN, "hijack", victim_id);
    /* Nor with a session of its own first. */
    s_hello(f, thief, "mallory-1", 0, "produce,consume");
    harness_send_frames(thief, "asyncq/2", "HELLO", "hijack-2", victim_id, "0", NULL);
    s_expect_error(f, thief, AQ_FORBIDDEN, "hijack-2", victim_id);
    harness_send_frames(thief, "asyncq/2", "BYE", "bye", NULL);
    s_assert_same(f, before, CONNECTIONS_AND_BAD_INPUT);

    /* The victim's session is whole: it acks both, and gets the next. */
    for (int i = 0; i < 2; i++)
        assert_int_equal(aq_consumer_ack(victim, ids[i]), AQ_OK);
    const char *const next[] = {"a3", NULL};
    s_put(f, "q", next);
    assert_int_equal(aq_consumer_get(victim, &item, HARNESS_DEADLINE_MS), AQ_OK);
    assert_int_equal(item.size, 2);
    assert_memory_equal(item.data, "a3", 2);
    assert_int_equal(item.attempt, 1);
    aq_consumer_ack(victim, item.id);
    aq_consumer_flush(victim);
    s_wait_stat(f, "q", "acked", 3);
    assert_int_equal(s_stat(f, "q", "redelivered"), 0);
    aq_consumer_destroy(&victim);
    zsock_destroy(&thief);
    free(before);
    s_assert_serving(f, "q");
}

/*  (b) A HELLO with a live producer's id from another key, claiming seq
    10^12: refused; every put of the victim is confirmed and enqueued
    exactly once. */
static void test_hijack_a_producers_id_from_another_key_is_refused(void **state)
{
    fixture_t *f = s_start(state, NULL, 0);
    s_keygen(f, "alice", "produce", NULL, 1);
    s_keygen(f, "mallory", "produce,consume", NULL, 1);
    const char *const payloads[] = {"p1", "p2", "p3", "p4", "p5", "p6", "p7", "p8", NULL};

    s_as(f, "alice", NULL);
    aq_status_t rc;
    aq_producer_t *victim = aq_producer_new(f->h.address, "alice", &rc);
    assert_int_equal(rc, AQ_OK);
    for (int i = 0; i < 4; i++)
        assert_int_equal(aq_producer_put(victim, "q", payloads[i], 2), AQ_OK);
    assert_int_equal(aq_producer_flush(victim), AQ_OK);
    char victim_id[AQ_NAME_MAX + 1];
    snprintf(victim_id, sizeof victim_id, "%s", aq_session_client_id(aq_producer_session(victim)));
    s_as(f, "admin", NULL);

    zsock_t *thief = s_raw(f, ZMQ_DEALER, "mallory", NULL, NULL);
    harness_send_frames(thief, "asyncq/2", "HELLO", "hijack", victim_id, "1000000000000", NULL);
    s_expect_error(f, thief, AQ_FORBIDDEN, "hijack", victim_id);
    s_as(f, "alice", NULL);
    for (int i = 4; i < 8; i++)
        assert_int_equal(aq_producer_put(victim, "q", payloads[i], 2), AQ_OK);
    assert_int_equal(aq_producer_sync(victim, HARNESS_DEADLINE_MS), AQ_OK);
    assert_int_equal(aq_producer_refused(victim), 0);
    assert_int_equal(aq_producer_resends(victim), 0);
    /* Once more after the victim confirmed everything. */
    harness_send_frames(thief, "asyncq/2", "HELLO", "hijack-2", victim_id, "1000000000000", NULL);
    s_expect_error(f, thief, AQ_FORBIDDEN, "hijack-2", victim_id);
    assert_int_equal(aq_producer_put(victim, "q", "p9", 2), AQ_OK);
    assert_int_equal(aq_producer_sync(victim, HARNESS_DEADLINE_MS), AQ_OK);
    aq_producer_destroy(&victim);
    s_as(f, "admin", NULL);
    zsock_destroy(&thief);
    assert_int_equal(s_stat(f, "q", "puts"), 9);
    const char *const all[] = {"p1", "p2", "p3", "p4", "p5", "p6", "p7", "p8", "p9", NULL};
    s_drain_exactly(f, "q", all);
    s_assert_serving(f, "q");
}

/*  (c) PUT and PUTS naming the victim's producer id and its next seq (and
    one beyond), sent by another key: dropped. The victim's own puts with
    those seqs go in, its SYNCs are answered SYNCED (not LOST), and no
    consumer ever sees a forged payload. A SYNC for the victim's id from
    the other key gets 403. */
static void test_hijack_puts_forged_with_a_producers_id_are_dropped(void **state)
{
    fixture_t *f = s_start(state, NULL, 0);
    s_keygen(f, "alice", "produce", NULL, 1);
    s_keygen(f, "mallory", "produce,consume", NULL, 1);
    zsock_t *session = s_raw(f, ZMQ_DEALER, "alice", NULL, NULL);
    zsock_t *push = s_raw(f, ZMQ_PUSH, "alice", NULL, NULL);
    s_hello(f, session, "alice-p", 1, "produce");
    aq_msg_t msg;
    s_send_put(push, "alice-p", 1, "q", "genuine-1");
    harness_send_frames(session, "asyncq/2", "SYNC", "s1", "alice-p", "1", NULL);
    s_expect(f, session, AQ_CMD_SYNCED, &msg);
    assert_int_equal(msg.seq, 1);

    zsock_t *forger = s_raw(f, ZMQ_DEALER, "mallory", NULL, NULL);
    zsock_t *forged = s_raw(f, ZMQ_PUSH, "mallory", NULL, NULL);
    s_hello(f, forger, "mallory-p", 1, "produce,consume");
    char *before = s_snapshot(f);
    s_send_put(forged, "alice-p", 2, "q", "FORGED-put");
    s_send_puts(forged, "alice-p", 2, 3, "q", "FORGED-puts");
    s_send_put(forged, "alice-p", 9, "q", "FORGED-ahead");
    /* Dropped and counted: once counted, they were read before what follows. */
    uint64_t bad = s_number(before, NULL, "bad_input");
    s_wait_info(f, "bad_input", bad + 3);
    harness_send_frames(forger, "asyncq/2", "SYNC", "forged-sync", "alice-p", "4", NULL);
    s_expect_error(f, forger, AQ_FORBIDDEN, "forged-sync", "alice-p");
    s_assert_same(f, before, BAD_INPUT);
    free(before);

    s_send_put(push, "alice-p", 2, "q", "genuine-2");
    s_send_put(push, "alice-p", 3, "q", "genuine-3");
    harness_send_frames(session, "asyncq/2", "SYNC", "s3", "alice-p", "3", NULL);
    s_expect(f, session, AQ_CMD_SYNCED, &msg); /* not LOST, no ERROR first */
    assert_int_equal(msg.seq, 3);
    /* The forger's own puts still work: it is only refused what is not its. */
    s_send_put(forged, "mallory-p", 1, "q", "mallory's own");
    harness_send_frames(forger, "asyncq/2", "SYNC", "own", "mallory-p", "1", NULL);
    s_expect(f, forger, AQ_CMD_SYNCED, &msg);
    zsock_destroy(&forged);
    zsock_destroy(&forger);
    zsock_destroy(&push);
    zsock_destroy(&session);
    assert_int_equal(s_stat(f, "q", "puts"), 4);
    const char *const expected[] = {"genuine-1", "genuine-2", "genuine-3", "mallory's own", NULL};
    s_drain_exactly(f, "q", expected);
    s_assert_serving(f, "q");
}

/*  (d) SHUTDOWN and DEAD purge from a session without the admin role get
    403, from a peer without a session (even one with an admin key) 412;
    nothing changes: the queue stays open with its dead item. */
static void test_hijack_shutdown_and_purge_without_admin_or_session_change_nothing(void **state)
{
    char *const flags[] = {"--max-attempts", "1", NULL};
    fixture_t *f = s_start(state, flags, 0);
    s_keygen(f, "worker", "produce,consume", NULL, 1);
    uint64_t held;
    aq_consumer_t *holder = s_populate(f, "q", &held);
    char *before = s_snapshot(f);

    zsock_t *worker = s_raw(f, ZMQ_DEALER, "worker", NULL, NULL);
    s_hello(f, worker, "worker-1", 0, "produce,consume");
    harness_send_frames(worker, "asyncq/2", "SHUTDOWN", "w1", "q", "immediate", NULL);
    s_expect_error(f, worker, AQ_FORBIDDEN, "w1", NULL);
    harness_send_frames(worker, "asyncq/2", "SHUTDOWN", "w2", "", "immediate", NULL);
    s_expect_error(f, worker, AQ_FORBIDDEN, "w2", NULL);
    harness_send_frames(worker, "asyncq/2", "DEAD", "w3", "q", "purge", NULL);
    s_expect_error(f, worker, AQ_FORBIDDEN, "w3", NULL);
    harness_send_frames(worker, "asyncq/2", "BYE", "bye", NULL);
    const char *keys[] = {"worker", "admin", NULL};
    for (int i = 0; keys[i]; i++) {
        zsock_t *anonymous = s_raw(f, ZMQ_DEALER, keys[i], NULL, NULL);
        harness_send_frames(anonymous, "asyncq/2", "SHUTDOWN", "n1", "q", "immediate", NULL);
        s_expect_error(f, anonymous, AQ_NO_SESSION, "n1", NULL);
        harness_send_frames(anonymous, "asyncq/2", "SHUTDOWN", "n2", "", "drain", NULL);
        s_expect_error(f, anonymous, AQ_NO_SESSION, "n2", NULL);
        harness_send_frames(anonymous, "asyncq/2", "DEAD", "n3", "q", "purge", NULL);
        s_expect_error(f, anonymous, AQ_NO_SESSION, "n3", NULL);
        zsock_destroy(&anonymous);
    }
    zsock_destroy(&worker);
    s_wait_same(f, before, BAD_INPUT);
    assert_true(strstr(before, "state=open") != NULL);
    free(before);
    /* Puts are still taken, the dead item still there. */
    const char *const more[] = {"after", NULL};
    s_put(f, "q", more);
    assert_int_equal(s_stat(f, "q", "puts"), 4);
    assert_int_equal(s_stat(f, "q", "dead"), 1);
    s_release_holder(&holder, held);
    const char *const left[] = {"third", "after", NULL};
    s_drain_exactly(f, "q", left);
    s_assert_serving(f, "q");
}

/*  (e) A consumer cannot ack, touch or nack an item delivered to another
    session, whether of another key or of its own key: 404 naming the id;
    the item stays with its holder, who acks it. */
static void test_hijack_ack_touch_nack_of_another_sessions_item_is_refused(void **state)
{
    fixture_t *f = s_start(state, NULL, 0);
    s_keygen(f, "alice", "consume", NULL, 1);
    s_keygen(f, "mallory", "consume", NULL, 1);
    const char *const payloads[] = {"precious", NULL};
    s_put(f, "q", payloads);
    zsock_t *victim = s_raw(f, ZMQ_DEALER, "alice", NULL, NULL);
    s_hello(f, victim, "alice-c", 0, "consume");
    harness_send_frames(victim, "asyncq/2", "CREDIT", "c", "q", "1", "0", NULL);
    aq_msg_t msg;
    s_expect(f, victim, AQ_CMD_CREDITED, &msg);
    s_expect(f, victim, AQ_CMD_ITEM, &msg);
    uint64_t id = msg.id;
    char subject[24];
    snprintf(subject, sizeof subject, "%llu", (unsigned long long) id);
    char *before = s_snapshot(f);

    const char *thieves[] = {"mallory", "alice", NULL};
    for (int i = 0; thieves[i]; i++) {
        zsock_t *thief = s_raw(f, ZMQ_DEALER, thieves[i], NULL, NULL);
        s_hello(f, thief, i ? "alice-other" : "mallory-c", 0, "consume");
        harness_send_frames(thief, "asyncq/2", "CREDIT", "c", "q", "1", "0", NULL);
        s_expect(f, thief, AQ_CMD_CREDITED, &msg);
        s_send_ids(thief, AQ_CMD_ACK, "ack", id);
        s_expect_error(f, thief, AQ_UNKNOWN_ITEM, "ack", subject);
        s_send_ids(thief, AQ_CMD_TOUCH, "touch", id);
        s_expect_error(f, thief, AQ_UNKNOWN_ITEM, "touch", subject);
        s_send_ids(thief, AQ_CMD_NACK, "nack", id);
        s_expect_error(f, thief, AQ_UNKNOWN_ITEM, "nack", subject);
        harness_send_frames(thief, "asyncq/2", "BYE", "bye", NULL);
        zsock_destroy(&thief);
    }
    s_wait_same(f, before, BAD_INPUT);
    free(before);
    assert_int_equal(s_stat(f, "q", "inflight"), 1);
    s_send_ids(victim, AQ_CMD_ACK, "mine", id);
    s_wait_stat(f, "q", "acked", 1);
    assert_int_equal(s_stat(f, "q", "redelivered"), 0);
    assert_int_equal(s_stat(f, "q", "delivered"), 1);
    zsock_destroy(&victim);
    s_assert_serving(f, "q");
}

/* ================================================================== */
/*  4. Without keys                                                    */

static fixture_t *s_start_keyless(void **state, char *const *flags)
{
    fixture_t *f = s_new(state);
    s_as(f, NULL, NULL);
    harness_start_broker_logged(&f->h, flags);
    aq_status_t rc;
    f->observer = aq_session_open(f->h.address, "observer", 0, HARNESS_DEADLINE_MS, &rc);
    assert_int_equal(rc, AQ_OK);
    /* Without keys every client that gets in has every role. */
    assert_string_equal(aq_session_welcome(f->observer)->roles, "produce,consume,admin");
    return f;
}

/*  The startup line says what protects the broker (written before the
    broker answers anything: the observer's HELLO was answered). */
static void test_without_keys_the_broker_accepts_loopback_only_and_says_so(void **state)
{
    fixture_t *f = s_start_keyless(state, NULL);
    char *log = harness_log(&f->h);
    assert_non_null(strstr(log, "no keys: loopback connections only"));
    assert_null(strstr(log, "--insecure"));
    free(log);
    /* A client with keys meets a broker without: its handshake fails. */
    fixture_t keys = {0};
    snprintf(keys.dir, sizeof keys.dir, "/tmp/asyncq-security-XXXXXX");
    assert_non_null(mkdtemp(keys.dir));
    snprintf(f->dir, sizeof f->dir, "%s", keys.dir); /* removed by the teardown */
    char path[512];
    assert_int_equal(mkdir(s_path(f, path, sizeof path, "keys"), 0700), 0);
    s_keygen(f, "broker", "admin", NULL, 0);
    s_keygen(f, "admin", "admin", NULL, 0);
    s_as(f, "admin", NULL);
    aq_status_t rc;
    aq_session_t *session = aq_session_open(f->h.address, "with-keys", 0, REFUSED_WAIT_MS, &rc);
    assert_null(session);
    assert_int_equal(rc, AQ_KEY_MISMATCH);
    s_as(f, NULL, NULL);
    s_assert_serving(f, "q");
}

static void test_with_insecure_the_broker_says_it_is_open_to_anyone(void **state)
{
    char *const flags[] = {"--insecure", NULL};
    fixture_t *f = s_start_keyless(state, flags);
    char *log = harness_log(&f->h);
    assert_non_null(strstr(log, "no keys and --insecure: anyone who reaches it is let in"));
    assert_non_null(strstr(log, "nothing is encrypted"));
    assert_null(strstr(log, "loopback connections only"));
    free(log);
    s_assert_serving(f, "q");
}

static void test_with_keys_the_broker_says_clients_need_an_allowed_key(void **state)
{
    fixture_t *f = s_start(state, NULL, 1);
    char *log = harness_log(&f->h);
    assert_non_null(strstr(log, "CURVE: clients need an allowed key"));
    assert_null(strstr(log, "loopback connections only"));
    free(log);
    s_assert_serving(f, "q");
}

/* ================================================================== */
/*  5. A producer id taken over by a second session                    */

/*  Two processes with one producer id (replicas sharing a key, or no keys
    at all), or a reconnect the broker has not noticed yet: the second
    HELLO takes the id. The first session must never be told that a put
    was confirmed that the broker does not hold: its SYNCs, waiting or
    later, get 409, and nothing it sent is enqueued twice. */

#define SHARED_ID "shared-producer"

static void s_put_range(zsock_t *push, const char *prefix, uint64_t from, uint64_t to)
{
    char payload[32];
    for (uint64_t seq = from; seq <= to; seq++) {
        snprintf(payload, sizeof payload, "%s-%llu", prefix, (unsigned long long) seq);
        s_send_put(push, SHARED_ID, seq, "q", payload);
    }
}

static void s_send_sync(zsock_t *dealer, const char *tag, uint64_t seq)
{
    aq_msg_t sync = {.cmd = AQ_CMD_SYNC, .tag = aq_bytes_str(tag),
                     .producer = aq_bytes_str(SHARED_ID), .seq = seq};
    harness_send_msg(dealer, &sync);
}

/*  The first producer, on raw sockets, doing what PROTOCOL.md tells a
    client to do. */
typedef struct {
    zsock_t *dealer, *push;
    uint64_t confirmed; /* highest seq it was told SYNCED */
    uint64_t sent;      /* highest seq it sent */
    int refused;        /* the code of an ERROR about one of its SYNCs, but 410 and 412 */
} first_t;

/*  Reads one reply: SYNCED confirms up to its seq; 412 about its SYNC
    `tag`: HELLO with the oldest unconfirmed seq, every unconfirmed put
    again, SYNC again; 410: the puts again, SYNC again; any other ERROR
    about a SYNC: nothing more is confirmed. Returns 1 once `tag` is
    answered for good. */
static int s_first_reads(fixture_t *f, first_t *a, const char *tag)
{
    aq_msg_t msg;
    aq_cmd_t cmd = harness_recv(a->dealer, f->inbox, &msg);
    int ours = msg.tag.size == strlen(tag) && memcmp(msg.tag.data, tag, msg.tag.size) == 0;
    if (cmd == AQ_CMD_SYNCED) {
        if (msg.seq > a->confirmed)
            a->confirmed = msg.seq;
        return ours;
    }
    if (cmd != AQ_CMD_ERROR || msg.tag.size == 0)
        return 0;
    if (ours && (msg.code == AQ_NO_SESSION || msg.code == AQ_LOST)) {
        if (msg.code == AQ_NO_SESSION) {
            aq_msg_t hello = {.cmd = AQ_CMD_HELLO, .tag = aq_bytes_str("again"),
                              .client = aq_bytes_str(SHARED_ID), .seq = a->confirmed + 1};
            harness_send_msg(a->dealer, &hello);
            while (harness_recv(a->dealer, f->inbox, &msg) != AQ_CMD_WELCOME)
                ;
        }
        s_put_range(a->push, "a", a->confirmed + 1, a->sent);
        s_send_sync(a->dealer, tag, a->sent);
        return 0;
    }
    a->refused = (int) msg.code;
    return ours;
}

static void s_takeover(void **state, int keys, int bye)
{
    fixture_t *f;
    if (keys) {
        f = s_start(state, NULL, 0);
        s_keygen(f, "replica", "produce", NULL, 1); /* the key both share */
    }
    else
        f = s_start_keyless(state, NULL);
    const char *key = keys ? "replica" : NULL;
    const char *roles = keys ? "produce" : "produce,consume,admin";
    aq_msg_t msg;

    first_t a = {s_raw(f, ZMQ_DEALER, key, NULL, NULL), s_raw(f, ZMQ_PUSH, key, NULL, NULL), 0, 0,
                 0};
    s_hello(f, a.dealer, SHARED_ID, 1, roles);
    s_put_range(a.push, "a", 1, 200);
    a.sent = 200;
    s_send_sync(a.dealer, "s1", 200);
    while (!s_first_reads(f, &a, "s1"))
        ;
    assert_int_equal(a.confirmed, 200);
    /* 201-250 received, not confirmed; a SYNC waits for 251-260. */
    s_put_range(a.push, "a", 201, 250);
    a.sent = 250;
    s_wait_stat(f, "q", "puts", 250);
    s_send_sync(a.dealer, "w", 260);
    harness_send_frames(a.dealer, "asyncq/2", "INFO", "i", NULL); /* after the SYNC, in order */
    while (harness_recv(a.dealer, f->inbox, &msg) != AQ_CMD_REPORT)
        ;

    /* The second session takes the id and puts 1-300 of its own (251-300
       are new to the broker), then (bye) leaves. */
    zsock_t *b_dealer = s_raw(f, ZMQ_DEALER, key, NULL, NULL);
    zsock_t *b_push = s_raw(f, ZMQ_PUSH, key, NULL, NULL);
    s_hello(f, b_dealer, SHARED_ID, 1, roles);
    s_put_range(b_push, "b", 1, 300);
    s_send_sync(b_dealer, "b", 300);
    s_expect(f, b_dealer, AQ_CMD_SYNCED, &msg);
    assert_int_equal(msg.seq, 300);
    if (bye) {
        harness_send_frames(b_dealer, "asyncq/2", "BYE", "bye", NULL);
        s_wait_info(f, "producers", 0);
    }

    /* The first goes on, unaware, and asks for its confirm. */
    s_put_range(a.push, "a", 251, 400);
    a.sent = 400;
    s_send_sync(a.dealer, "fin", 400);
    while (!s_first_reads(f, &a, "fin"))
        ;
    if (a.confirmed != 200 || a.refused != AQ_CONFLICT)
        fail_msg("the first producer was told puts up to %llu confirmed (ERROR %d), of which "
                 "the broker took only 1-250 and (without the BYE) 301-400",
                 (unsigned long long) a.confirmed, a.refused);
    /* What the broker took: 1-250 of the first, 251-300 of the second,
       and, while the second holds the id, 301-400 of the first. */
    uint64_t puts = bye ? 300 : 400;
    s_wait_stat(f, "q", "puts", puts);

    /* The first starts afresh, as a client that got 409 may: a new session
       from its next seq, and its put is confirmed. */
    zsock_t *again = s_raw(f, ZMQ_DEALER, key, NULL, NULL);
    s_hello(f, again, SHARED_ID, 401, roles);
    s_put_range(a.push, "a", 401, 401);
    s_send_sync(again, "last", 401);
    s_expect(f, again, AQ_CMD_SYNCED, &msg);
    assert_int_equal(msg.seq, 401);
    puts++;
    assert_int_equal(s_stat(f, "q", "puts"), puts);

    /* Every put the first was told confirmed is in the queue, once; no
       payload is there twice. */
    int seen_a[402] = {0}, seen_b[301] = {0};
    aq_status_t rc;
    aq_consumer_t *consumer = aq_consumer_new(f->h.address, "drain", "q", 64, &rc);
    assert_int_equal(rc, AQ_OK);
    for (uint64_t n = 0; n < puts; n++) {
        aq_item_t item;
        assert_int_equal(aq_consumer_get(consumer, &item, HARNESS_DEADLINE_MS), AQ_OK);
        char payload[32];
        snprintf(payload, sizeof payload, "%.*s", (int) item.size, (const char *) item.data);
        unsigned long seq = strtoul(payload + 2, NULL, 10);
        int *seen = payload[0] == 'a' && seq <= 401 ? &seen_a[seq]
                    : payload[0] == 'b' && seq <= 300 ? &seen_b[seq] : NULL;
        if (!seen)
            fail_msg("delivered an item that was never put: '%s'", payload);
        if ((*seen)++)
            fail_msg("'%s' delivered twice", payload);
        assert_int_equal(aq_consumer_ack(consumer, item.id), AQ_OK);
    }
    aq_consumer_flush(consumer);
    aq_consumer_destroy(&consumer);
    for (uint64_t seq = 1; seq <= a.confirmed; seq++)
        if (!seen_a[seq])
            fail_msg("a-%llu was confirmed to the first producer and is not in the queue",
                     (unsigned long long) seq);
    assert_int_equal(seen_a[401], 1);
    s_wait_stat(f, "q", "outstanding", 0);

    zsock_destroy(&again);
    zsock_destroy(&b_dealer);
    zsock_destroy(&b_push);
    zsock_destroy(&a.dealer);
    zsock_destroy(&a.push);
    s_assert_serving(f, "q2");
}

/*  The C library as the first producer: its puts 4-6 sent, another
    session takes its id and puts 4-6 of its own; the library's sync must
    not say AQ_OK (its 4-6 are not in the queue), but AQ_REFUSED with the
    409, its three puts unconfirmed. */
static void test_takeover_the_c_library_reports_its_puts_unconfirmed(void **state)
{
    fixture_t *f = s_start_keyless(state, NULL);
    aq_status_t rc;
    aq_producer_t *victim = aq_producer_new(f->h.address, "victim", &rc);
    assert_int_equal(rc, AQ_OK);
    char id[AQ_NAME_MAX + 1];
    snprintf(id, sizeof id, "%s", aq_session_client_id(aq_producer_session(victim)));
    const char *const mine[] = {"a-1", "a-2", "a-3", "a-4", "a-5", "a-6"};
    for (int i = 0; i < 3; i++)
        assert_int_equal(aq_producer_put(victim, "q", mine[i], 3), AQ_OK);
    assert_int_equal(aq_producer_sync(victim, HARNESS_DEADLINE_MS), AQ_OK);

    zsock_t *intruder = s_raw(f, ZMQ_DEALER, NULL, NULL, NULL);
    zsock_t *push = s_raw(f, ZMQ_PUSH, NULL, NULL, NULL);
    s_hello(f, intruder, id, 4, "produce,consume,admin");
    for (uint64_t seq = 4; seq <= 6; seq++)
        s_send_put(push, id, seq, "q", "b");
    harness_send_frames(intruder, "asyncq/2", "SYNC", "s", id, "6", NULL);
    aq_msg_t msg;
    s_expect(f, intruder, AQ_CMD_SYNCED, &msg);

    for (int i = 3; i < 6; i++)
        assert_int_equal(aq_producer_put(victim, "q", mine[i], 3), AQ_OK);
    rc = aq_producer_sync(victim, HARNESS_DEADLINE_MS);
    if (rc == AQ_OK)
        fail_msg("the library confirmed a-4..a-6, which the broker dropped as resends");
    assert_int_equal(rc, AQ_REFUSED);
    assert_int_equal(aq_session_error(aq_producer_session(victim))->code, AQ_CONFLICT);
    assert_int_equal(aq_producer_unconfirmed(victim), 3);
    aq_producer_destroy(&victim);
    zsock_destroy(&intruder);
    zsock_destroy(&push);
    assert_int_equal(s_stat(f, "q", "puts"), 6);
    s_wait_info(f, "sessions", 1);
    harness_assert_serving(&f->h, "q2");
}

static void test_takeover_without_keys_never_confirms_a_lost_put(void **state)
{
    s_takeover(state, 0, 0);
}

static void test_takeover_without_keys_then_bye_never_enqueues_twice(void **state)
{
    s_takeover(state, 0, 1);
}

static void test_takeover_with_a_shared_key_never_confirms_a_lost_put(void **state)
{
    s_takeover(state, 1, 0);
}

static void test_takeover_with_a_shared_key_then_bye_never_enqueues_twice(void **state)
{
    s_takeover(state, 1, 1);
}

/* ================================================================== */
/*  6. Limits one key cannot use up                                    */

/*  True if the text names `flag`. */
static int s_names(aq_bytes_t text, const char *flag)
{
    char copy[AQ_TEXT_MAX + 1];
    snprintf(copy, sizeof copy, "%.*s", (int) text.size, (const char *) text.data);
    return strstr(copy, flag) != NULL;
}

/*  The next ERROR on `socket` (other replies skipped) is 429 with `tag`,
    and its text names `flag`. */
static void s_expect_limit(fixture_t *f, zsock_t *socket, const char *tag, const char *flag)
{
    aq_msg_t msg;
    aq_cmd_t cmd;
    while ((cmd = harness_recv(socket, f->inbox, &msg)) != AQ_CMD_ERROR)
        ;
    char text[AQ_TEXT_MAX + 1];
    snprintf(text, sizeof text, "%.*s", (int) msg.text.size, (const char *) msg.text.data);
    if (msg.code != AQ_LIMIT || msg.tag.size != strlen(tag)
        || memcmp(msg.tag.data, tag, msg.tag.size) != 0 || !strstr(text, flag))
        fail_msg("expected ERROR 429 naming %s (tag '%s'), got ERROR %d tag '%.*s': %s", flag, tag,
                 (int) msg.code, (int) msg.tag.size, (const char *) msg.tag.data, text);
}

/*  `count` JOINs (waiting for ever) on `queue`, then INFO: returns how many
    were refused before the REPORT came (each must be 429 naming `flag`). */
static int s_joins(fixture_t *f, zsock_t *dealer, const char *queue, int count, const char *flag)
{
    for (int i = 0; i < count; i++)
        harness_send_frames(dealer, "asyncq/2", "JOIN", "j", queue, "0", "before", NULL);
    harness_send_frames(dealer, "asyncq/2", "INFO", "i", NULL);
    int refused = 0;
    aq_msg_t msg;
    aq_cmd_t cmd;
    while ((cmd = harness_recv(dealer, f->inbox, &msg)) != AQ_CMD_REPORT) {
        if (cmd != AQ_CMD_ERROR || msg.code != AQ_LIMIT
            || !s_names(msg.text, flag))
            fail_msg("JOIN: expected ERROR 429 naming %s, got %s %d %.*s", flag,
                     aq_cmd_name(cmd), (int) msg.code, (int) msg.text.size,
                     (const char *) msg.text.data);
        refused++;
    }
    return refused;
}

/*  A JOIN with a short time-out is taken (it times out), not refused. */
static void s_join_taken(fixture_t *f, zsock_t *dealer, const char *queue)
{
    harness_send_frames(dealer, "asyncq/2", "JOIN", "ok", queue, "50", "before", NULL);
    aq_msg_t msg;
    s_expect(f, dealer, AQ_CMD_TIMEOUT, &msg);
}

/*  Joins: one key holds at most --max-joins-per-key, the others together
    leave the last tenth of --max-joins to admin clients. */
static void test_limits_a_key_cannot_use_up_the_joins(void **state)
{
    char *const flags[] = {"--max-joins", "10", "--max-joins-per-key", "5", NULL};
    fixture_t *f = s_start(state, flags, 0);
    s_keygen(f, "narrow", "consume", "jobs", 1);
    s_keygen(f, "other", "consume", "jobs", 1);
    const char *const one[] = {"outstanding", NULL};
    s_put(f, "jobs", one); /* joins on jobs wait */

    zsock_t *narrow[2], *other = s_raw(f, ZMQ_DEALER, "other", NULL, NULL);
    for (int i = 0; i < 2; i++) {
        narrow[i] = s_raw(f, ZMQ_DEALER, "narrow", NULL, NULL);
        s_hello(f, narrow[i], i ? "narrow-2" : "narrow-1", 0, "consume");
    }
    s_hello(f, other, "other", 0, "consume");
    /* Two sessions of one key: 5 joins in all. */
    assert_int_equal(s_joins(f, narrow[0], "jobs", 3, "--max-joins-per-key"), 0);
    assert_int_equal(s_joins(f, narrow[1], "jobs", 3, "--max-joins-per-key"), 1);
    /* Another key is still served, up to the admin's tenth. */
    assert_int_equal(s_joins(f, other, "jobs", 5, "--max-joins 10"), 1);
    assert_int_equal(s_info(f, "joiners"), 9);
    zsock_t *admin = s_raw(f, ZMQ_DEALER, "admin", NULL, NULL);
    s_hello(f, admin, "admin-joiner", 0, "produce,consume,admin");
    s_join_taken(f, admin, "jobs");

    zsock_destroy(&admin);
    zsock_destroy(&other);
    zsock_destroy(&narrow[0]);
    zsock_destroy(&narrow[1]);
    s_wait_info(f, "joiners", 0);
    s_assert_serving(f, "q");
}

/*  PUTs as `dealer`'s producer `id` to queues prefix1..prefixN, then SYNC:
    returns how many were refused (each 429 naming `flag`). */
static int s_puts_to_new_queues(fixture_t *f, zsock_t *dealer, zsock_t *push, const char *id,
                                const char *prefix, int count, const char *flag)
{
    char queue[32], seq[16];
    for (int i = 1; i <= count; i++) {
        snprintf(queue, sizeof queue, "%s%d", prefix, i);
        s_send_put(push, id, (uint64_t) i, queue, "x");
    }
    snprintf(seq, sizeof seq, "%d", count);
    harness_send_frames(dealer, "asyncq/2", "SYNC", "s", id, seq, NULL);
    int refused = 0;
    aq_msg_t msg;
    aq_cmd_t cmd;
    while ((cmd = harness_recv(dealer, f->inbox, &msg)) != AQ_CMD_SYNCED) {
        if (cmd != AQ_CMD_ERROR || msg.code != AQ_LIMIT
            || !s_names(msg.text, flag))
            fail_msg("PUT: expected ERROR 429 naming %s, got %s %d %.*s", flag, aq_cmd_name(cmd),
                     (int) msg.code, (int) msg.text.size, (const char *) msg.text.data);
        refused++;
    }
    return refused;
}

/*  Queues: one key makes at most --max-queues-per-key, and the last tenth
    of --max-queues is kept for admin clients. */
static void test_limits_a_key_cannot_use_up_the_queues(void **state)
{
    char *const flags[] = {"--max-queues", "11", "--max-queues-per-key", "6", NULL};
    fixture_t *f = s_start(state, flags, 0);
    s_keygen(f, "maker-a", "produce", NULL, 1);
    s_keygen(f, "maker-b", "produce", NULL, 1);
    zsock_t *a = s_raw(f, ZMQ_DEALER, "maker-a", NULL, NULL);
    zsock_t *a_push = s_raw(f, ZMQ_PUSH, "maker-a", NULL, NULL);
    zsock_t *b = s_raw(f, ZMQ_DEALER, "maker-b", NULL, NULL);
    zsock_t *b_push = s_raw(f, ZMQ_PUSH, "maker-b", NULL, NULL);
    s_hello(f, a, "maker-a", 1, "produce");
    s_hello(f, b, "maker-b", 1, "produce");
    assert_int_equal(s_puts_to_new_queues(f, a, a_push, "maker-a", "a", 7, "--max-queues-per-key"),
                     1);
    assert_int_equal(s_info(f, "queues"), 6);
    /* The other key: 4 more fit, then the admin's tenth. */
    assert_int_equal(s_puts_to_new_queues(f, b, b_push, "maker-b", "b", 5, "--max-queues 11"), 1);
    assert_int_equal(s_info(f, "queues"), 10);
    zsock_t *admin = s_raw(f, ZMQ_DEALER, "admin", NULL, NULL);
    s_hello(f, admin, "admin-maker", 0, "produce,consume,admin");
    harness_send_frames(admin, "asyncq/2", "CREDIT", "c", "admin-q", "0", "0", NULL);
    aq_msg_t msg;
    s_expect(f, admin, AQ_CMD_CREDITED, &msg);
    assert_int_equal(s_info(f, "queues"), 11);

    zsock_destroy(&admin);
    zsock_destroy(&a);
    zsock_destroy(&a_push);
    zsock_destroy(&b);
    zsock_destroy(&b_push);
    s_assert_serving(f, "admin-q");
}

/*  Sessions: one key opens at most --max-sessions-per-key, and the last
    tenth of --max-connections is kept for admin clients. */
static void test_limits_a_key_cannot_use_up_the_sessions(void **state)
{
    char *const flags[] = {"--max-connections", "20", "--max-sessions-per-key", "9", NULL};
    fixture_t *f = s_start(state, flags, 0);
    s_keygen(f, "many", "consume", NULL, 1);
    s_keygen(f, "more", "consume", NULL, 1);
    zsock_t *many[10], *more[10];
    char id[32];
    for (int i = 0; i < 10; i++) {
        many[i] = s_raw(f, ZMQ_DEALER, "many", NULL, NULL);
        snprintf(id, sizeof id, "many-%d", i);
        if (i < 9)
            s_hello(f, many[i], id, 0, "consume");
        else {
            harness_send_frames(many[i], "asyncq/2", "HELLO", "h", id, "0", NULL);
            s_expect_limit(f, many[i], "h", "--max-sessions-per-key 9");
        }
    }
    zsock_destroy(&many[9]);
    s_wait_info(f, "connections", 10); /* the observer's and nine */
    /* Another key gets in, up to the admin's tenth. */
    for (int i = 0; i < 10; i++) {
        more[i] = s_raw(f, ZMQ_DEALER, "more", NULL, NULL);
        snprintf(id, sizeof id, "more-%d", i);
        if (i < 9)
            s_hello(f, more[i], id, 0, "consume");
        else {
            harness_send_frames(more[i], "asyncq/2", "HELLO", "h", id, "0", NULL);
            s_expect_limit(f, more[i], "h", "--max-connections 20");
        }
    }
    zsock_destroy(&more[9]);
    s_wait_info(f, "connections", 19);
    zsock_t *admin = s_raw(f, ZMQ_DEALER, "admin", NULL, NULL);
    s_hello(f, admin, "admin-session", 0, "produce,consume,admin");
    assert_int_equal(s_info(f, "sessions"), 20);
    /* A HELLO that replaces a session of the same key counts once: on the
       same DEALER, and with the client id of another connection. */
    s_hello(f, many[0], "many-0", 0, "consume");
    zsock_destroy(&admin);
    s_wait_info(f, "connections", 19);
    zsock_t *moved = s_raw(f, ZMQ_DEALER, "many", NULL, NULL);
    s_hello(f, moved, "many-2", 0, "consume");
    s_wait_info(f, "sessions", 19); /* the admin's goes, many-2 moved */

    zsock_destroy(&moved);
    for (int i = 0; i < 9; i++) {
        zsock_destroy(&many[i]);
        zsock_destroy(&more[i]);
    }
    s_wait_info(f, "sessions", 1); /* each goes at its first HEARTBEAT that fails */
    /* A key's only session saying HELLO again on its DEALER. */
    zsock_t *solo = s_raw(f, ZMQ_DEALER, "more", NULL, NULL);
    s_hello(f, solo, "solo", 0, "consume");
    s_hello(f, solo, "solo", 0, "consume");
    s_wait_info(f, "sessions", 2);
    zsock_destroy(&solo);
    s_assert_serving(f, "q");
}

/*  Held puts: one key's producers together hold at most
    --max-held-bytes-per-key for full queues; another key's put is held. */
static void test_limits_a_key_cannot_use_up_the_held_puts(void **state)
{
    char *const flags[] = {"--maxsize", "1", "--max-item", "1024", "--window-bytes", "4096",
                           "--max-held-bytes-per-key", "3000", NULL};
    fixture_t *f = s_start(state, flags, 0);
    s_keygen(f, "pusher", "produce", NULL, 1);
    s_keygen(f, "other", "produce", NULL, 1);
    const char *const one[] = {"fills it", NULL};
    s_put(f, "full", one);
    static char big[1001];
    memset(big, 'x', 1000);
    zsock_t *push = s_raw(f, ZMQ_PUSH, "pusher", NULL, NULL);
    zsock_t *p1 = s_raw(f, ZMQ_DEALER, "pusher", NULL, NULL);
    zsock_t *p2 = s_raw(f, ZMQ_DEALER, "pusher", NULL, NULL);
    s_hello(f, p1, "pusher-1", 1, "produce");
    s_hello(f, p2, "pusher-2", 1, "produce");
    aq_msg_t msg;
    s_send_put(push, "pusher-1", 1, "full", big);
    s_send_put(push, "pusher-1", 2, "full", big);
    s_wait_info(f, "held", 2);
    s_send_put(push, "pusher-2", 1, "full", big);
    s_wait_info(f, "held", 3);
    s_send_put(push, "pusher-2", 2, "full", big);
    s_expect_limit(f, p2, "", "--max-held-bytes-per-key");
    assert_int_equal(s_info(f, "held"), 3);
    /* Another key's put is held, not refused. */
    zsock_t *other = s_raw(f, ZMQ_DEALER, "other", NULL, NULL);
    zsock_t *other_push = s_raw(f, ZMQ_PUSH, "other", NULL, NULL);
    s_hello(f, other, "other", 1, "produce");
    s_send_put(other_push, "other", 1, "full", big);
    harness_send_frames(other, "asyncq/2", "SYNC", "s", "other", "1", NULL);
    s_expect(f, other, AQ_CMD_HELD, &msg);
    assert_int_equal(s_info(f, "held"), 4);

    zsock_destroy(&other);
    zsock_destroy(&other_push);
    zsock_destroy(&p1);
    zsock_destroy(&p2);
    zsock_destroy(&push);
    s_assert_serving(f, "q");
}

int main(void)
{
    /* The broker and this process read keys from the environment too. */
    unsetenv("ASYNCQ_CURVE_SECRET");
    unsetenv("ASYNCQ_SERVER_KEY");
    unsetenv("ASYNCQ_CLIENTS");
    unsetenv("ASYNCQ_INSECURE");
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_a_client_without_a_key_is_refused, s_teardown),
        cmocka_unit_test_teardown(test_a_key_not_in_the_clients_directory_is_refused, s_teardown),
        cmocka_unit_test_teardown(test_a_wrong_server_key_is_refused, s_teardown),
        cmocka_unit_test_teardown(test_a_revoked_key_loses_its_sessions_and_cannot_reconnect, s_teardown),
        cmocka_unit_test_teardown(test_a_key_added_to_the_directory_is_let_in_without_sighup, s_teardown),
        cmocka_unit_test_teardown(test_a_produce_key_may_not_consume_or_administer, s_teardown),
        cmocka_unit_test_teardown(test_a_consume_key_may_not_put_or_administer, s_teardown),
        cmocka_unit_test_teardown(test_an_admin_key_may_do_everything, s_teardown),
        cmocka_unit_test_teardown(test_a_key_limited_to_some_queues_sees_and_touches_only_those, s_teardown),
        cmocka_unit_test_teardown(test_the_cli_shows_the_brokers_code_and_reason_when_refused, s_teardown),
        cmocka_unit_test_teardown(test_every_refusal_is_counted_in_bad_input, s_teardown),
        cmocka_unit_test_teardown(test_hijack_a_consumers_client_id_from_another_key_is_refused, s_teardown),
        cmocka_unit_test_teardown(test_hijack_a_producers_id_from_another_key_is_refused, s_teardown),
        cmocka_unit_test_teardown(test_hijack_puts_forged_with_a_producers_id_are_dropped, s_teardown),
        cmocka_unit_test_teardown(test_hijack_shutdown_and_purge_without_admin_or_session_change_nothing, s_teardown),
        cmocka_unit_test_teardown(test_hijack_ack_touch_nack_of_another_sessions_item_is_refused, s_teardown),
        cmocka_unit_test_teardown(test_without_keys_the_broker_accepts_loopback_only_and_says_so, s_teardown),
        cmocka_unit_test_teardown(test_with_insecure_the_broker_says_it_is_open_to_anyone, s_teardown),
        cmocka_unit_test_teardown(test_with_keys_the_broker_says_clients_need_an_allowed_key, s_teardown),
        cmocka_unit_test_teardown(test_takeover_without_keys_never_confirms_a_lost_put, s_teardown),
        cmocka_unit_test_teardown(test_takeover_without_keys_then_bye_never_enqueues_twice, s_teardown),
        cmocka_unit_test_teardown(test_takeover_with_a_shared_key_never_confirms_a_lost_put, s_teardown),
        cmocka_unit_test_teardown(test_takeover_with_a_shared_key_then_bye_never_enqueues_twice, s_teardown),
        cmocka_unit_test_teardown(test_takeover_the_c_library_reports_its_puts_unconfirmed, s_teardown),
        cmocka_unit_test_teardown(test_limits_a_key_cannot_use_up_the_joins, s_teardown),
        cmocka_unit_test_teardown(test_limits_a_key_cannot_use_up_the_queues, s_teardown),
        cmocka_unit_test_teardown(test_limits_a_key_cannot_use_up_the_sessions, s_teardown),
        cmocka_unit_test_teardown(test_limits_a_key_cannot_use_up_the_held_puts, s_teardown),
    };
    return harness_run_group(tests);
}
