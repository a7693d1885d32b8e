/*  A durable broker's whole replicated state before a SIGKILL is exactly
    its state after the restart: the broker writes it as text on SIGUSR1
    (--state-dump, broker/state.h), once before the kill and once after the
    restart, and the two are compared byte for byte. The state is a
    demanding one: queue order after NACKs to the front, dead letters in
    their order of death (one of the deaths a lease that ran out), items
    delayed for hours with their ends, a queue shut down (drain) with items
    queued, dead letters requeued with their new numbering, item ids. Items
    in flight at the kill come back at the front of their queue, oldest
    first, with their attempts counted, and nothing else changes. The same
    holds through snapshots (segments of 4 KiB) and successive kills. After
    each restart, what the protocol says (DEAD list, the order of
    deliveries) is what the dump said. */
#define _XOPEN_SOURCE 700
#include <errno.h>
#include <ftw.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <unistd.h>

#include "harness.h"

#define LONG_LEASE_MS 3600000 /* the items meant to stay in flight, or not to expire */
#define HOUR_MS 3600000

typedef struct {
    harness_t h;
    char root[64];  /* the test's temporary directory */
    char data[96];  /* root/data: --data-dir */
    char dump[96];  /* root/state.txt: --state-dump */
} fixture_t;

static int s_setup(void **state)
{
    fixture_t *f = calloc(1, sizeof *f);
    assert_non_null(f);
    snprintf(f->root, sizeof f->root, "/tmp/asyncq-recovery-XXXXXX");
    assert_non_null(mkdtemp(f->root));
    snprintf(f->data, sizeof f->data, "%s/data", f->root);
    snprintf(f->dump, sizeof f->dump, "%s/state.txt", f->root);
    *state = f;
    return 0;
}

static int s_teardown(void **state)
{
    fixture_t *f = *state;
    harness_stop(&f->h); /* the broker, even after a failed assertion */
    harness_remove_tree(f->root);
    free(f);
    return 0;
}

/* ------------------------------------------------------------ the broker */

static void s_start(fixture_t *f, char *const *flags)
{
    harness_t *h = &f->h;
    if (h->log_path[0]) /* the log of the broker before, if any */
        unlink(h->log_path);
    h->log_path[0] = '\0';
    /* A fresh pair of free ports each start: nothing that still talks to
       the killed broker can reach the new one. */
    harness_start_broker_logged(h, flags);
}

static void s_kill(fixture_t *f)
{
    /* The broker is a single process (no children): SIGKILL, reaped. */
    aq_process_stop(&f->h.broker, SIGKILL, 1000);
    assert_int_equal(f->h.broker.exit_code, 128 + SIGKILL);
    f->h.broker.pid = 0;
}

/*  SIGUSR1, then waits (inotify, not a sleep) for the dump to be renamed
    into place, and returns it (malloc'd). */
static char *s_dump(fixture_t *f)
{
    harness_t *h = &f->h;
    /* A round trip first: the broker answers only from its loop, whose
       start installs the SIGUSR1 handler (READY comes before it). */
    harness_info(h, "queues");
    if (unlink(f->dump) && errno != ENOENT)
        fail_msg("cannot remove %s: %s", f->dump, strerror(errno));
    int watch = inotify_init1(IN_CLOEXEC | IN_NONBLOCK);
    assert_true(watch >= 0);
    assert_true(inotify_add_watch(watch, f->root, IN_MOVED_TO | IN_CREATE) >= 0);
    assert_int_equal(kill(h->broker.pid, SIGUSR1), 0);
    int64_t deadline = zclock_mono() + HARNESS_DEADLINE_MS;
    while (access(f->dump, F_OK) != 0) {
        if (aq_process_wait(&h->broker, 0))
            fail_msg("the broker exited (code %d) on SIGUSR1", h->broker.exit_code);
        int64_t left = deadline - zclock_mono();
        if (left <= 0)
            fail_msg("no state dump at %s after SIGUSR1", f->dump);
        struct pollfd item = {watch, POLLIN, 0};
        /* Woken by the rename; at most every 100 ms, to notice a broker
           that died instead. */
        if (poll(&item, 1, left < 100 ? (int) left : 100) > 0) {
            char events[4096];
            while (read(watch, events, sizeof events) > 0)
                ;
        }
    }
    close(watch);
    char *text = harness_read_file(f->dump);
    /* The log says so: a round trip makes sure the line is out. */
    harness_info(h, "queues");
    char *log = harness_log(h);
    char said[200];
    snprintf(said, sizeof said, "state written to %s", f->dump);
    if (!strstr(log, said))
        fail_msg("the broker's log does not say '%s':\n%s", said, log);
    free(log);
    return text;
}

/* ---------------------------------------------------------- comparing */

static void s_print_numbered(const char *title, const char *text)
{
    print_message("----- %s\n", title);
    int number = 1;
    for (const char *line = text; *line; number++) {
        const char *end = strchr(line, '\n');
        int length = end ? (int) (end - line) : (int) strlen(line);
        print_message("%3d %.*s\n", number, length, line);
        line += length + (end ? 1 : 0);
    }
}

/*  Fails, showing both texts and their first difference, unless equal. */
static void s_assert_same_text(const char *expected, const char *got, const char *what)
{
    if (strcmp(expected, got) == 0)
        return;
    int number = 1;
    const char *a = expected, *b = got;
    for (;;) {
        const char *ea = strchr(a, '\n'), *eb = strchr(b, '\n');
        size_t la = ea ? (size_t) (ea - a) : strlen(a), lb = eb ? (size_t) (eb - b) : strlen(b);
        if (la != lb || memcmp(a, b, la) != 0 || !ea || !eb) {
            s_print_numbered("expected", expected);
            s_print_numbered("got", got);
            fail_msg("%s: the dumps differ first at line %d:\n  expected: %.*s\n  got:      %.*s",
                     what, number, (int) la, a, (int) lb, b);
        }
        a = ea + 1, b = eb + 1, number++;
    }
}

/*  The lines of one queue's section ("queued", "dead", "inflight",
    "delayed") of a dump: calls `each` with every item line. */
typedef void(item_line_fn)(void *ctx, const char *line, size_t length);

static void s_each_item(const char *dump, const char *queue, const char *section,
                        item_line_fn *each, void *ctx)
{
    char header[128], title[32];
    int header_length = snprintf(header, sizeof header, "queue %s ", queue);
    snprintf(title, sizeof title, " %s", section);
    int in_queue = 0, in_section = 0, found = 0;
    for (const char *line = dump; *line;) {
        const char *end = strchr(line, '\n');
        size_t length = end ? (size_t) (end - line) : strlen(line);
        if (strncmp(line, "queue ", 6) == 0) {
            in_queue = strncmp(line, header, (size_t) header_length) == 0;
            found |= in_queue;
            in_section = 0;
        }
        else if (in_queue && line[0] == ' ' && line[1] != ' ')
            in_section = length == strlen(title) && memcmp(line, title, length) == 0;
        else if (in_queue && in_section)
            each(ctx, line, length);
        line += length + (end ? 1 : 0);
    }
    if (!found)
        fail_msg("no queue %s in the dump:\n%s", queue, dump);
}

typedef struct {
    uint64_t ids[64];
    int64_t ranks[64];
    uint64_t attempts[64];
    uint32_t hashes[64];
    uint64_t seqs[64];
    int count;
} items_t;

/*  The dump's hash of a payload (FNV-1a, as state.c): it tells items of
    which the test never saw the id (never delivered) by their payload. */
static uint32_t s_hash(const char *payload)
{
    uint32_t hash = 2166136261u;
    for (const char *at = payload; *at; at++)
        hash = (hash ^ (uint8_t) *at) * 16777619u;
    return hash;
}

static void s_collect(void *ctx, const char *line, size_t length)
{
    items_t *items = ctx;
    (void) length;
    assert_true(items->count < 64);
    unsigned long long id;
    long long rank;
    unsigned attempts;
    const char *place = strstr(line, " rank=");
    if (sscanf(line, "  item %llu", &id) != 1)
        fail_msg("not an item line: %.*s", (int) length, line);
    items->ids[items->count] = id;
    items->ranks[items->count] = place && sscanf(place, " rank=%lld", &rank) == 1 ? rank : 0;
    const char *at = strstr(line, " attempts=");
    assert_non_null(at);
    assert_int_equal(sscanf(at, " attempts=%u", &attempts), 1);
    items->attempts[items->count] = attempts;
    const char *hash = strstr(line, " hash=");
    assert_non_null(hash);
    unsigned value;
    assert_int_equal(sscanf(hash, " hash=%x", &value), 1);
    items->hashes[items->count] = value;
    unsigned long long seq;
    assert_int_equal(sscanf(line, "  item %*u seq=%llu", &seq), 1);
    items->seqs[items->count] = seq;
    items->count++;
}

static items_t s_items(const char *dump, const char *queue, const char *section)
{
    items_t items = {.count = 0};
    s_each_item(dump, queue, section, s_collect, &items);
    return items;
}

/*  Copies a line with `key=N` changed to `key=N+delta`. */
static void s_shift_number(FILE *out, const char *line, size_t length, const char *key,
                           long delta)
{
    char pattern[32];
    int size = snprintf(pattern, sizeof pattern, " %s=", key);
    const char *at = strstr(line, pattern);
    assert_true(at && at < line + length);
    at += size;
    char *end;
    long value = strtol(at, &end, 10);
    fprintf(out, "%.*s%ld%.*s", (int) (at - line), line, value + delta,
            (int) (line + length - end), end);
}

/*  An item line with its rank replaced. */
static void s_with_rank(FILE *out, const char *line, size_t length, int64_t rank)
{
    const char *at = strstr(line, " rank=");
    assert_true(at && at < line + length);
    at += 6;
    char *end;
    (void) strtoll(at, &end, 10);
    fprintf(out, "%.*s%" PRId64 "%.*s\n", (int) (at - line), line, rank,
            (int) (line + length - end), end);
}

/*  The dump expected after a restart, from the one before it, when the
    items `moved` (in their order) of `queue` were in flight: they leave the
    inflight list and head the queued one, at these ranks; nothing else
    changes. */
static char *s_given_back(const char *before, const char *queue, const items_t *moved,
                          const int64_t *ranks)
{
    char header[128];
    int header_length = snprintf(header, sizeof header, "queue %s ", queue);
    /* The moved items' lines, as they were (in the inflight section). */
    const char *lines[64] = {0};
    size_t lengths[64] = {0};
    char *text = NULL;
    size_t size = 0;
    FILE *out = open_memstream(&text, &size);
    assert_non_null(out);
    for (int pass = 0; pass < 2; pass++) {
        int in_queue = 0;
        char section[32] = "";
        for (const char *line = before; *line;) {
            const char *end = strchr(line, '\n');
            size_t length = end ? (size_t) (end - line) : strlen(line);
            int skip = 0;
            if (strncmp(line, "queue ", 6) == 0) {
                in_queue = strncmp(line, header, (size_t) header_length) == 0;
                section[0] = '\0';
                if (in_queue && pass == 1) {
                    /* queued=X+n inflight=Y-n, the rest as it was. */
                    char *first = NULL;
                    size_t first_size = 0;
                    FILE *tmp = open_memstream(&first, &first_size);
                    s_shift_number(tmp, line, length, "queued", moved->count);
                    fclose(tmp);
                    s_shift_number(out, first, strlen(first), "inflight", -moved->count);
                    fputc('\n', out);
                    free(first);
                    skip = 1;
                }
            }
            else if (line[0] == ' ' && line[1] != ' ')
                snprintf(section, sizeof section, "%.*s", (int) length - 1, line + 1);
            else if (in_queue && strcmp(section, "inflight") == 0) {
                unsigned long long id;
                assert_int_equal(sscanf(line, "  item %llu", &id), 1);
                for (int k = 0; k < moved->count; k++)
                    if (moved->ids[k] == id) {
                        lines[k] = line, lengths[k] = length;
                        skip = 1;
                    }
            }
            if (pass == 1 && !skip) {
                fprintf(out, "%.*s\n", (int) length, line);
                if (in_queue && line[0] == ' ' && line[1] != ' '
                    && strcmp(section, "queued") == 0)
                    for (int k = 0; k < moved->count; k++)
                        s_with_rank(out, lines[k], lengths[k], ranks[k]);
            }
            line += length + (end ? 1 : 0);
        }
        if (pass == 0)
            for (int k = 0; k < moved->count; k++)
                if (!lines[k])
                    fail_msg("item %" PRIu64 " is not in flight in queue %s before the kill",
                             moved->ids[k], queue);
    }
    fclose(out);
    return text;
}

/* ----------------------------------------------------------- clients */

static void s_put(const harness_t *h, const char *queue, const char *prefix, int from, int to,
                  int short_lease)
{
    aq_status_t rc;
    aq_producer_t *producer = aq_producer_new(h->address, "p", &rc);
    assert_non_null(producer);
    for (int i = from; i < to; i++) {
        char item[64];
        int size = snprintf(item, sizeof item, "%s%d", prefix, i);
        /* Every item with an hour's lease but `short_lease`, which gets the
           broker's (--lease-ms) and is meant to expire. */
        assert_int_equal(aq_producer_put_lease(producer, queue, item, (size_t) size,
                                               i == short_lease ? 0 : LONG_LEASE_MS),
                         AQ_OK);
    }
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

/*  Gets one item, expecting this payload and attempt; returns its id. */
static uint64_t s_get(aq_consumer_t *consumer, const char *payload, uint64_t attempt)
{
    aq_item_t item;
    aq_status_t rc = aq_consumer_get(consumer, &item, HARNESS_DEADLINE_MS);
    if (rc != AQ_OK)
        fail_msg("expected '%s' (attempt %llu), got status %d (%s)", payload,
                 (unsigned long long) attempt, (int) rc,
                 aq_session_error(aq_consumer_session(consumer))->text);
    if (item.size != strlen(payload) || memcmp(item.data, payload, item.size) != 0)
        fail_msg("expected '%s', got '%.*s' (attempt %llu)", payload, (int) item.size,
                 (const char *) item.data, (unsigned long long) item.attempt);
    if (item.attempt != attempt)
        fail_msg("'%s': expected attempt %llu, got %llu", payload, (unsigned long long) attempt,
                 (unsigned long long) item.attempt);
    return item.id;
}

/*  Credit 0 stops deliveries: the NACKs and ACKs that follow (the same
    DEALER, so in order) move items without any being delivered between
    them, whatever the broker's passes. */
static void s_credit(aq_consumer_t *consumer, uint64_t credit)
{
    assert_int_equal(aq_consumer_set_credit(consumer, credit), AQ_OK);
}

static void s_nack(aq_consumer_t *consumer, uint64_t id, uint64_t delay_ms)
{
    assert_int_equal(aq_consumer_nack(consumer, id, delay_ms, "test"), AQ_OK);
}

static void s_ack(aq_consumer_t *consumer, uint64_t id)
{
    assert_int_equal(aq_consumer_ack(consumer, id), AQ_OK);
    assert_int_equal(aq_consumer_flush(consumer), AQ_OK);
}

static void s_dead_line(void *ctx, const char *line)
{
    items_t *items = ctx;
    unsigned long long id;
    assert_true(items->count < 64);
    if (sscanf(line, "id=%llu", &id) != 1)
        fail_msg("DEAD list line: %s", line);
    items->ids[items->count++] = id;
}

/*  DEAD list, in the broker's order. */
static items_t s_dead_list(const harness_t *h, const char *queue)
{
    items_t items = {.count = 0};
    aq_session_t *session = harness_session(h);
    assert_int_equal(aq_dead(session, queue, "list", s_dead_line, &items), AQ_OK);
    aq_session_destroy(&session);
    return items;
}

static void s_requeued_line(void *ctx, const char *line)
{
    snprintf(ctx, 64, "%s", line);
}

static void s_assert_ids(const items_t *got, const uint64_t *ids, int count, const char *what)
{
    if (got->count != count)
        fail_msg("%s: %d ids, expected %d", what, got->count, count);
    for (int k = 0; k < count; k++)
        if (got->ids[k] != ids[k])
            fail_msg("%s: id %d is %" PRIu64 ", expected %" PRIu64, what, k, got->ids[k],
                     ids[k]);
}

/* ----------------------------------------------------- the scenario */

typedef struct {
    uint64_t a[20], b[4], c[5], d[7];
    uint64_t dead_a[3];    /* A's dead letters, in their order of death */
    uint64_t held[2];      /* variant 2: what a consumer holds at the kill */
} ids_t;

/*  A: 20 items. Acked: a0 a1 a3 a4 a6 a10. Dead, in order: a5, a2 (NACKed
    three times), a7 (its first lease ran out, then two NACKs). Queued:
    a9 a8 (NACKed to the front, a8 first), then a11..a19. */
static void s_queue_a(const harness_t *h, ids_t *ids)
{
    uint64_t *a = ids->a;
    s_put(h, "A", "a", 0, 20, 7);
    aq_consumer_t *c = s_consumer(h, "A", 2);
    a[0] = s_get(c, "a0", 1);
    a[1] = s_get(c, "a1", 1);
    s_credit(c, 0);
    s_ack(c, a[0]);
    s_ack(c, a[1]);
    s_credit(c, 5);
    for (int i = 2; i <= 6; i++) {
        char payload[16];
        snprintf(payload, sizeof payload, "a%d", i);
        a[i] = s_get(c, payload, 1);
    }
    s_credit(c, 0);
    s_nack(c, a[6], 0);
    s_nack(c, a[4], 0); /* A: a4 a6 a7 ... */
    s_ack(c, a[3]);
    /* a5 dies first: NACKed at each of its three deliveries. */
    s_nack(c, a[5], 0); /* A: a5 a4 a6 a7 ...; a2 still held */
    s_credit(c, 2);
    assert_int_equal(s_get(c, "a5", 2), a[5]);
    s_nack(c, a[5], 0);
    assert_int_equal(s_get(c, "a5", 3), a[5]);
    s_credit(c, 0);
    s_nack(c, a[5], 0);
    /* Then a2, put before it. */
    s_nack(c, a[2], 0); /* A: a2 a4 a6 a7 ... */
    s_credit(c, 1);
    assert_int_equal(s_get(c, "a2", 2), a[2]);
    s_nack(c, a[2], 0);
    assert_int_equal(s_get(c, "a2", 3), a[2]);
    s_credit(c, 0);
    s_nack(c, a[2], 0);
    s_credit(c, 2);
    assert_int_equal(s_get(c, "a4", 2), a[4]);
    assert_int_equal(s_get(c, "a6", 2), a[6]);
    s_credit(c, 0);
    s_ack(c, a[4]);
    s_ack(c, a[6]);
    /* a7, with the broker's short lease: its first delivery expires (the
       broker takes it back and, this being the only consumer, delivers it
       here again), the two others are NACKed. */
    s_credit(c, 1);
    a[7] = s_get(c, "a7", 1);
    assert_int_equal(s_get(c, "a7", 2), a[7]); /* once the lease ran out */
    s_nack(c, a[7], 0);
    assert_int_equal(s_get(c, "a7", 3), a[7]);
    s_credit(c, 0);
    s_nack(c, a[7], 0);
    /* a8 and a9 go back to the front, a8 first: A is a9 a8 a11 ... */
    s_credit(c, 3);
    a[8] = s_get(c, "a8", 1);
    a[9] = s_get(c, "a9", 1);
    a[10] = s_get(c, "a10", 1);
    s_credit(c, 0);
    s_nack(c, a[8], 0);
    s_nack(c, a[9], 0);
    s_ack(c, a[10]);
    aq_consumer_destroy(&c); /* nothing held */
    harness_wait_stat(h, "A", "dead", 3);
    harness_wait_stat(h, "A", "queued", 11);
    harness_wait_stat(h, "A", "inflight", 0);
    harness_wait_stat(h, "A", "consumers", 0);
    assert_int_equal(harness_stat(h, "A", "expired"), 1);
    ids->dead_a[0] = a[5], ids->dead_a[1] = a[2], ids->dead_a[2] = a[7];
    items_t dead = s_dead_list(h, "A");
    s_assert_ids(&dead, ids->dead_a, 3, "A's dead letters before the kill");
}

/*  B: b0 and b2 delayed for two hours and one, b1 acked, b3 given back by
    the consumer's BYE. */
static void s_queue_b(const harness_t *h, ids_t *ids)
{
    uint64_t *b = ids->b;
    s_put(h, "B", "b", 0, 4, -1);
    aq_consumer_t *c = s_consumer(h, "B", 4);
    for (int i = 0; i < 4; i++) {
        char payload[16];
        snprintf(payload, sizeof payload, "b%d", i);
        b[i] = s_get(c, payload, 1);
    }
    s_nack(c, b[2], HOUR_MS);
    s_nack(c, b[0], 2 * HOUR_MS);
    s_ack(c, b[1]);
    aq_consumer_destroy(&c); /* b3 back to the queue */
    harness_wait_stat(h, "B", "delayed", 2);
    harness_wait_stat(h, "B", "queued", 1);
    harness_wait_stat(h, "B", "consumers", 0);
}

/*  C: c0 acked, c1..c4 queued, then shut down (drain) with `asyncq
    shutdown`. */
static void s_queue_c(const harness_t *h, ids_t *ids)
{
    s_put(h, "C", "c", 0, 5, -1);
    aq_consumer_t *c = s_consumer(h, "C", 1);
    ids->c[0] = s_get(c, "c0", 1);
    s_credit(c, 0);
    s_ack(c, ids->c[0]);
    aq_consumer_destroy(&c);
    harness_wait_stat(h, "C", "acked", 1);
    harness_wait_stat(h, "C", "consumers", 0);
    char address[sizeof h->address], out[4096];
    snprintf(address, sizeof address, "%s", h->address);
    char *argv[] = {"asyncq", "shutdown", "-b", address, "-q", "C", NULL};
    assert_int_equal(harness_run(argv, out, sizeof out), 0);
    if (!strstr(out, "state=draining") || !strstr(out, "queued=4"))
        fail_msg("asyncq shutdown said: %s", out);
}

/*  D: d0 d2 acked; d3 then d1 dead; DEAD requeue puts them back at the end
    (attempts 0, new numbering); then d6 put: D is d4 d5 d3 d1 d6. */
static void s_queue_d(const harness_t *h, ids_t *ids)
{
    uint64_t *d = ids->d;
    s_put(h, "D", "d", 0, 6, -1);
    aq_consumer_t *c = s_consumer(h, "D", 4);
    for (int i = 0; i < 4; i++) {
        char payload[16];
        snprintf(payload, sizeof payload, "d%d", i);
        d[i] = s_get(c, payload, 1);
    }
    s_credit(c, 0);
    s_ack(c, d[0]);
    s_ack(c, d[2]);
    s_nack(c, d[3], 0); /* D: d3 d4 d5; d1 held */
    s_credit(c, 2);
    assert_int_equal(s_get(c, "d3", 2), d[3]);
    s_nack(c, d[3], 0);
    assert_int_equal(s_get(c, "d3", 3), d[3]);
    s_credit(c, 0);
    s_nack(c, d[3], 0);
    s_nack(c, d[1], 0); /* D: d1 d4 d5 */
    s_credit(c, 1);
    assert_int_equal(s_get(c, "d1", 2), d[1]);
    s_nack(c, d[1], 0);
    assert_int_equal(s_get(c, "d1", 3), d[1]);
    s_credit(c, 0);
    s_nack(c, d[1], 0);
    aq_consumer_destroy(&c);
    harness_wait_stat(h, "D", "dead", 2);
    harness_wait_stat(h, "D", "consumers", 0);
    items_t dead = s_dead_list(h, "D");
    uint64_t order[] = {d[3], d[1]};
    s_assert_ids(&dead, order, 2, "D's dead letters");
    aq_session_t *session = harness_session(h);
    char said[64] = "";
    assert_int_equal(aq_dead(session, "D", "requeue", s_requeued_line, said), AQ_OK);
    aq_session_destroy(&session);
    assert_string_equal(said, "requeued=2");
    s_put(h, "D", "d", 6, 7, -1);
    harness_wait_stat(h, "D", "queued", 5);
    assert_int_equal(harness_stat(h, "D", "dead"), 0);
}

static char **s_flags(const fixture_t *f)
{
    static char *flags[32];
    char *these[] = {"--data-dir", (char *) f->data, "--fsync", "always", "--max-attempts", "3",
                     "--lease-ms", "500", "--state-dump", (char *) f->dump, NULL};
    memcpy(flags, these, sizeof these);
    return flags;
}

/*  Gets every item of `queue` in the order of the dump's queued list: the
    ids in that order, with these payloads and attempts; acks each. */
static void s_drain_in_dump_order(const harness_t *h, const char *dump, const char *queue,
                                  const char *const *payloads, const uint64_t *attempts,
                                  int count)
{
    items_t queued = s_items(dump, queue, "queued");
    assert_int_equal(queued.count, count);
    aq_consumer_t *c = s_consumer(h, queue, 1);
    for (int k = 0; k < count; k++) {
        uint64_t id = s_get(c, payloads[k], attempts[k]);
        if (id != queued.ids[k])
            fail_msg("%s: delivery %d is item %" PRIu64 " (%s), the dump says %" PRIu64, queue,
                     k, id, payloads[k], queued.ids[k]);
        assert_int_equal(queued.attempts[k] + 1, attempts[k]);
        aq_consumer_ack(c, id);
    }
    aq_consumer_flush(c);
    harness_wait_stat(h, queue, "outstanding", 0);
    aq_consumer_destroy(&c);
}

/*  The whole scenario; with `in_flight`, a consumer then holds A's first
    two items (a9, a8) when the broker is killed. */
static void s_scenario(fixture_t *f, int in_flight)
{
    harness_t *h = &f->h;
    char **flags = s_flags(f);
    s_start(f, flags);
    ids_t ids;
    memset(&ids, 0, sizeof ids);
    s_queue_a(h, &ids);
    s_queue_b(h, &ids);
    s_queue_c(h, &ids);
    s_queue_d(h, &ids);

    aq_consumer_t *holder = NULL;
    if (in_flight) {
        holder = s_consumer(h, "A", 2);
        ids.held[0] = s_get(holder, "a9", 2);
        ids.held[1] = s_get(holder, "a8", 2);
        assert_int_equal(ids.held[0], ids.a[9]);
        assert_int_equal(ids.held[1], ids.a[8]);
        harness_wait_stat(h, "A", "inflight", 2);
    }

    char *before = s_dump(f);
    /* What the scenario made, as the dump says it. */
    items_t dead = s_items(before, "A", "dead");
    s_assert_ids(&dead, ids.dead_a, 3, "A's dead list in the dump");
    /* A: a9 a8 (unless held) a11 ... a19, by payload (a11 and after were
       never delivered: their ids are the dump's). */
    items_t queued = s_items(before, "A", "queued");
    assert_int_equal(queued.count, in_flight ? 9 : 11);
    for (int k = 0; k < queued.count; k++) {
        int i = in_flight ? 11 + k : k == 0 ? 9 : k == 1 ? 8 : 9 + k;
        char payload[16];
        snprintf(payload, sizeof payload, "a%d", i);
        if (queued.hashes[k] != s_hash(payload))
            fail_msg("A's queued item %d in the dump is not %s", k, payload);
        if (i < 11)
            assert_int_equal(queued.ids[k], ids.a[i]);
    }
    if (in_flight) {
        items_t held = s_items(before, "A", "inflight");
        uint64_t by_id[] = {ids.a[8] < ids.a[9] ? ids.a[8] : ids.a[9],
                            ids.a[8] < ids.a[9] ? ids.a[9] : ids.a[8]};
        s_assert_ids(&held, by_id, 2, "A's inflight list in the dump");
    }
    assert_int_equal(s_items(before, "B", "delayed").count, 2);
    assert_int_equal(s_items(before, "C", "queued").count, 4);
    /* D: d4 d5 (never delivered), d3 d1 (requeued: new numbering, attempts
       0), d6. */
    items_t requeued = s_items(before, "D", "queued");
    const char *d_names[] = {"d4", "d5", "d3", "d1", "d6"};
    assert_int_equal(requeued.count, 5);
    for (int k = 0; k < 5; k++) {
        if (requeued.hashes[k] != s_hash(d_names[k]))
            fail_msg("D's queued item %d in the dump is not %s", k, d_names[k]);
        assert_int_equal(requeued.attempts[k], 0);
    }
    assert_int_equal(requeued.ids[2], ids.d[3]);
    assert_int_equal(requeued.ids[3], ids.d[1]);
    for (int k = 1; k < 5; k++) /* numbered as they came back: after d5, before d6 */
        assert_true(requeued.seqs[k - 1] < requeued.seqs[k]);

    s_kill(f);
    if (holder)
        aq_consumer_destroy(&holder); /* its BYE goes nowhere: that broker is gone */
    s_start(f, flags);
    char *after = s_dump(f);

    if (!in_flight)
        s_assert_same_text(before, after, "before the kill and after the restart");
    else {
        /* a9 then a8 at the front (oldest first: a9 was ahead of a8), at
           ranks below every rank A had, their attempts counted; the rest
           exactly as before. */
        items_t front = s_items(after, "A", "queued");
        assert_true(front.count >= 2);
        if (front.ids[0] != ids.a[9] || front.ids[1] != ids.a[8])
            fail_msg("A's queue after the restart starts with items %" PRIu64 " %" PRIu64
                     ", expected a9 %" PRIu64 " then a8 %" PRIu64,
                     front.ids[0], front.ids[1], ids.a[9], ids.a[8]);
        items_t was_queued = s_items(before, "A", "queued"),
                was_inflight = s_items(before, "A", "inflight");
        assert_int_equal(was_inflight.count, 2);
        assert_true(front.ranks[0] < front.ranks[1]);
        for (int k = 0; k < was_queued.count; k++)
            assert_true(front.ranks[1] < was_queued.ranks[k]);
        for (int k = 0; k < was_inflight.count; k++)
            assert_true(front.ranks[1] < was_inflight.ranks[k]);
        items_t moved = {.count = 2};
        moved.ids[0] = ids.a[9], moved.ids[1] = ids.a[8];
        char *expected = s_given_back(before, "A", &moved, front.ranks);
        s_assert_same_text(expected, after, "after the restart, with a9 and a8 given back");
        free(expected);
    }

    /* The protocol agrees: the dead letters, in their order... */
    items_t listed = s_dead_list(h, "A");
    s_assert_ids(&listed, ids.dead_a, 3, "A's dead letters after the restart");
    /* ...and A's items come in the dump's order, their attempts counted. */
    const char *payloads[11] = {"a9", "a8"};
    uint64_t attempts[11] = {in_flight ? 3 : 2, in_flight ? 3 : 2};
    for (int i = 11; i < 20; i++) {
        static char names[20][8];
        snprintf(names[i], sizeof names[i], "a%d", i);
        payloads[i - 9] = names[i];
        attempts[i - 9] = 1;
    }
    s_drain_in_dump_order(h, after, "A", payloads, attempts, 11);
    const char *const d_payloads[] = {"d4", "d5", "d3", "d1", "d6"};
    const uint64_t d_attempts[] = {1, 1, 1, 1, 1};
    s_drain_in_dump_order(h, after, "D", d_payloads, d_attempts, 5);
    /* C still refuses puts; B's delayed items are still delayed. */
    assert_int_equal(harness_stat(h, "B", "delayed"), 2);
    aq_status_t rc;
    aq_producer_t *producer = aq_producer_new(h->address, "p", &rc);
    assert_non_null(producer);
    assert_int_equal(aq_producer_put(producer, "C", "no", 2), AQ_OK);
    assert_int_equal(aq_producer_sync(producer, HARNESS_DEADLINE_MS), AQ_REFUSED);
    aq_producer_destroy(&producer);
    /* A put and a get still work. */
    harness_assert_serving(h, "A");
    free(before);
    free(after);
}

static void test_the_state_before_a_kill_is_the_state_after_the_restart(void **state)
{
    s_scenario(*state, 0);
}

static void test_items_in_flight_at_the_kill_come_back_at_the_front_and_nothing_else_changes(
    void **state)
{
    s_scenario(*state, 1);
}

/* ----------------------------------------------------- with snapshots */

#define SNAP_QUEUES 4
#define SNAP_ROUNDS 3
#define SNAP_PUTS 1500

static int s_count(const char *text, const char *what)
{
    int count = 0;
    for (const char *at = text; (at = strstr(at, what)); at++)
        count++;
    return count;
}

/*  One round of work on 4 queues: puts (a journal write per 100), gets,
    acks, NACKs (to the front, delayed an hour, to death), dead letters
    requeued (s1) and purged (s2), s3 shut down (drain) in round 0. Ends
    with nothing in flight and no consumer. */
static void s_churn(const harness_t *h, int round, uint64_t *counter)
{
    char payload[64];
    aq_status_t rc;
    aq_producer_t *producer = aq_producer_new(h->address, "p", &rc);
    assert_non_null(producer);
    for (int q = 0; q < SNAP_QUEUES; q++) {
        if (q == 3 && round > 0)
            continue; /* shut down in the first round */
        char queue[8];
        snprintf(queue, sizeof queue, "s%d", q);
        for (int i = 0; i < SNAP_PUTS; i++) {
            int size = snprintf(payload, sizeof payload, "round %d queue %d item %d", round, q, i);
            assert_int_equal(aq_producer_put(producer, queue, payload, (size_t) size), AQ_OK);
            if (i % 100 == 99)
                assert_int_equal(aq_producer_sync(producer, HARNESS_DEADLINE_MS), AQ_OK);
        }
    }
    assert_int_equal(aq_producer_sync(producer, HARNESS_DEADLINE_MS), AQ_OK);
    aq_producer_destroy(&producer);
    for (int q = 0; q < SNAP_QUEUES; q++) {
        char queue[8];
        snprintf(queue, sizeof queue, "s%d", q);
        /* Items it will still get: queued now, less those acked, delayed
           or dead; it gets while more than `keep` are left, so that it
           never waits for an item that is not there. */
        uint64_t left = harness_stat(h, queue, "queued");
        uint64_t keep = q == 3 ? 300 - 50 * (uint64_t) round : 10;
        aq_consumer_t *c = s_consumer(h, queue, 8);
        while (left > keep) {
            aq_item_t item;
            assert_int_equal(aq_consumer_get(c, &item, HARNESS_DEADLINE_MS), AQ_OK);
            ++*counter;
            if (*counter % 10 == 6 || *counter % 10 == 8) {
                s_nack(c, item.id, 0); /* to the front, or dead at the third */
                left -= item.attempt >= 3;
            }
            else {
                if (*counter % 300 == 7)
                    s_nack(c, item.id, HOUR_MS + *counter); /* delayed across the kills */
                else
                    aq_consumer_ack(c, item.id);
                left--;
            }
        }
        aq_consumer_destroy(&c); /* what it still holds goes back to the front */
        harness_wait_stat(h, queue, "consumers", 0);
    }
    aq_session_t *session = harness_session(h);
    assert_int_equal(aq_dead(session, "s1", "requeue", NULL, NULL), AQ_OK);
    assert_int_equal(aq_dead(session, "s2", "purge", NULL, NULL), AQ_OK);
    if (round == 0)
        assert_int_equal(aq_shutdown(session, "s3", AQ_SHUTDOWN_DRAIN, NULL, NULL), AQ_OK);
    aq_session_destroy(&session);
    for (int q = 0; q < SNAP_QUEUES; q++) {
        char queue[8];
        snprintf(queue, sizeof queue, "s%d", q);
        harness_wait_stat(h, queue, "inflight", 0);
    }
}

/*  Snapshot files being written or synced (journal.c: NUMBER.log.tmp until
    renamed into place). */
static int s_snapshots_in_progress(const fixture_t *f)
{
    char command[256], out[16] = "";
    snprintf(command, sizeof command, "ls %s | grep -c '\\.tmp$'", f->data);
    FILE *pipe = popen(command, "r");
    assert_non_null(pipe);
    if (!fgets(out, sizeof out, pipe))
        out[0] = '\0';
    pclose(pipe);
    return atoi(out);
}

static char **s_snapshot_flags(const fixture_t *f)
{
    static char *flags[32];
    char *these[] = {"--data-dir", (char *) f->data, "--fsync", "always", "--max-attempts", "3",
                     "--segment-bytes", "4096", "--state-dump", (char *) f->dump, "--verbose",
                     NULL};
    memcpy(flags, these, sizeof these);
    return flags;
}

/*  Three rounds of that work with segments of 4 KiB, so that snapshots
    replace the log again and again (the verbose log says each one). After
    each round: dump, SIGKILL, restart, dump: the same, byte for byte. */
static void test_snapshots_and_kills_keep_the_state(void **state)
{
    fixture_t *f = *state;
    harness_t *h = &f->h;
    char **flags = s_snapshot_flags(f);
    s_start(f, flags);
    uint64_t counter = 0;
    for (int round = 0; round < SNAP_ROUNDS; round++) {
        s_churn(h, round, &counter);
        char *before = s_dump(f);
        char *log = harness_log(h);
        int snapshots = s_count(log, "journal: snapshot of");
        free(log);
        s_kill(f);
        int in_progress = s_snapshots_in_progress(f);
        s_start(f, flags);
        char *after = s_dump(f);
        char what[64];
        snprintf(what, sizeof what, "round %d: before the kill and after the restart", round);
        s_assert_same_text(before, after, what);
        print_message("round %d: %d lines of state the same; %d snapshots before the kill, "
                      "%d in progress at it\n",
                      round, s_count(before, "\n"), snapshots, in_progress);
        /* The log was replaced by snapshots in this broker's life. */
        assert_true(snapshots >= 1);
        assert_true(s_count(before, "  item ") > 100);
        free(before);
        free(after);
    }
    harness_assert_serving(h, "after");
}

/*  The dump without any line about a producer: state_dump writes none
    today, but state.h says a dump has them, and this test adds producers
    between its dumps on purpose (below). Frees `dump`. */
static char *s_without_producers(char *dump)
{
    char *text = NULL;
    size_t size = 0;
    FILE *out = open_memstream(&text, &size);
    assert_non_null(out);
    for (const char *line = dump; *line;) {
        const char *end = strchr(line, '\n');
        size_t length = end ? (size_t) (end - line) + 1 : strlen(line);
        if (strncmp(line, "producer", 8) != 0)
            fwrite(line, 1, length, out);
        line += length;
    }
    fclose(out);
    free(dump);
    return text;
}

/*  Says HELLO as new producers, one after another on one DEALER, until a
    snapshot file appears in the data directory, and SIGKILLs the broker
    the moment it does. A new producer id is a record (its key) that the
    dump does not show: the dumped state does not change, but the log
    grows until a snapshot is due. Returns whether the snapshot was still
    being written or synced when the broker died. */
static int s_kill_in_a_snapshot(fixture_t *f, int *producers)
{
    harness_t *h = &f->h;
    int watch = inotify_init1(IN_CLOEXEC | IN_NONBLOCK);
    assert_true(watch >= 0);
    assert_true(inotify_add_watch(watch, f->data, IN_CREATE) >= 0);
    harness_info(h, "queues"); /* the broker serves */
    zsock_t *dealer = harness_raw(h, ZMQ_DEALER);
    aq_inbox_t *inbox = aq_inbox_new(AQ_FIELDS_FRAMES_MAX + 1);
    int64_t deadline = zclock_mono() + HARNESS_DEADLINE_MS;
    int began = 0, waiting = 0, before = *producers;
    while (!began) {
        /* About 2 000 are needed (--max-producers is 10 000 in all). */
        if (zclock_mono() > deadline || *producers - before > 6000)
            fail_msg("no snapshot began after %d new producers", *producers - before);
        char id[32];
        snprintf(id, sizeof id, "snap-%d", (*producers)++);
        aq_msg_t hello = {.cmd = AQ_CMD_HELLO, .tag = aq_bytes_str("h"),
                          .client = aq_bytes_str(id), .seq = 1};
        harness_send_msg(dealer, &hello);
        if (++waiting == 32) { /* paced by the WELCOMEs */
            while (waiting) {
                aq_msg_t msg;
                assert_int_equal(harness_recv(dealer, inbox, &msg), AQ_CMD_WELCOME);
                waiting--;
            }
        }
        char events[4096] __attribute__((aligned(__alignof__(struct inotify_event))));
        ssize_t got;
        while ((got = read(watch, events, sizeof events)) > 0)
            for (char *at = events; at < events + got;) {
                const struct inotify_event *event = (const struct inotify_event *) at;
                size_t length = event->len ? strlen(event->name) : 0;
                if (length > 4 && strcmp(event->name + length - 4, ".tmp") == 0)
                    began = 1;
                at += sizeof *event + event->len;
            }
    }
    kill(h->broker.pid, SIGKILL);
    s_kill(f);
    close(watch);
    zsock_destroy(&dealer);
    aq_inbox_destroy(&inbox);
    return s_snapshots_in_progress(f) > 0;
}

/*  A SIGKILL in the middle of a snapshot: the state after the restart is
    the state dumped before, each of three times; at least one of the kills
    found the snapshot unfinished (its .tmp file left behind). */
static void test_a_kill_in_the_middle_of_a_snapshot_keeps_the_state(void **state)
{
    fixture_t *f = *state;
    harness_t *h = &f->h;
    char **flags = s_snapshot_flags(f);
    s_start(f, flags);
    uint64_t counter = 0;
    s_churn(h, 0, &counter);
    char *before = s_without_producers(s_dump(f));
    int producers = 0, interrupted = 0;
    for (int kill = 0; kill < 3; kill++) {
        interrupted += s_kill_in_a_snapshot(f, &producers);
        s_start(f, flags);
        char *after = s_without_producers(s_dump(f));
        char what[64];
        snprintf(what, sizeof what, "kill %d, in a snapshot", kill);
        s_assert_same_text(before, after, what);
        free(after);
    }
    print_message("%d of 3 kills in an unfinished snapshot (%d new producers); %d lines of "
                  "state the same\n",
                  interrupted, producers, s_count(before, "\n"));
    assert_true(interrupted >= 1);
    free(before);
    harness_assert_serving(h, "after");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_the_state_before_a_kill_is_the_state_after_the_restart,
                                        s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(
            test_items_in_flight_at_the_kill_come_back_at_the_front_and_nothing_else_changes,
            s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_snapshots_and_kills_keep_the_state, s_setup,
                                        s_teardown),
        cmocka_unit_test_setup_teardown(test_a_kill_in_the_middle_of_a_snapshot_keeps_the_state,
                                        s_setup, s_teardown),
    };
    return harness_run_group(tests);
}
