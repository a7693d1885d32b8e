#include "persist.h"

#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <netdb.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "asyncq/program.h"
#include "dispatch.h"
#include "journal.h"
#include "producers.h"
#include "ratelog.h"
#include "replica.h"

/*  Answers the SYNCs that waited for the disk, as far as it now allows. */
static void s_answer_waits(broker_t *self)
{
    broker_release_replies(self);
    list_node_t waiting, *node;
    list_init(&waiting);
    /* Apart first: an answer may put its producer back in the list. */
    while ((node = list_first(&self->durable_waits))) {
        list_remove(node);
        list_push_back(&waiting, node);
    }
    while ((node = list_first(&waiting))) {
        list_remove(node);
        producers_answer(self, list_entry(node, producer_t, durable_link));
    }
}

/* ------------------------------------------------------------ snapshot */

/*  Where a snapshot's records go: the journal's snapshot file, or a
    replica's snapshot buffer. */
typedef struct {
    void (*write)(void *ctx, const record_t *record);
    void *ctx;
} sink_t;

static void s_snapshot_write(sink_t *sink, const record_t *record)
{
    sink->write(sink->ctx, record);
}

/*  Appends a record to the journal's snapshot being written. */
static void s_journal_write(void *journal, const record_t *record)
{
    uint8_t *at = journal_snapshot_add(journal, record->type, record_size(record));
    if (at)
        record_encode(record, at);
}

/*  An item as one ITEM record: where it is now. */
static void s_item_record(const item_t *item, record_t *record)
{
    *record = (record_t){.type = RECORD_ITEM, .id = item->id, .seq = item->seq,
                         .rank = item->rank, .state = item->state,
                         .attempts = item->attempts, .lease_ms = item->lease_ms,
                         .priority = item->priority, .queue = aq_bytes_str(item->queue->name),
                         .payload = {item->data, item->size}};
    if (item->state == ITEM_DELAYED)
        record->until_ms = item->until_ms, record->rank = 0;
}

static void s_snapshot_item(void *sink, item_t *item)
{
    record_t record;
    s_item_record(item, &record);
    s_snapshot_write(sink, &record);
    if (item->epitaph) { /* why it died, where it lies */
        record = (record_t){.type = RECORD_DIED, .id = item->id, .seq = item->seq,
                            .rank = item->rank, .state = ITEM_DEAD, .attempts = item->attempts,
                            .cause = item->epitaph->cause,
                            .at_ms = (uint64_t) item->epitaph->at_ms,
                            .text = {(const uint8_t *) item->epitaph->text, item->epitaph->size}};
        s_snapshot_write(sink, &record);
    }
}

static void s_snapshot_producer(void *sink, void *value)
{
    const producer_t *producer = value;
    record_t record = {.type = RECORD_PRODUCER, .next = producer->next_seq,
                       .producer = aq_bytes_str(producer->id),
                       .key = aq_bytes_str(producer->key)};
    s_snapshot_write(sink, &record);
}

/*  Every queue, with where its numbering and ranks are: its items come
    after, in slot order, and are put in rank order on reading. */
static void s_snapshot_queue(void *sink, void *value)
{
    const queue_t *queue = value;
    record_t record = {.type = RECORD_QUEUE, .state = (uint8_t) queue->state,
                       .next = queue->ledger.next, .front = queue->front, .back = queue->back,
                       .dead_back = queue->dead_back, .queue = aq_bytes_str(queue->name)};
    s_snapshot_write(sink, &record);
    if (queue->paused) {
        record = (record_t){.type = RECORD_PAUSE, .state = 1, .queue = aq_bytes_str(queue->name)};
        s_snapshot_write(sink, &record);
    }
}

/*  What comes before the items: RESET, every queue, the shutdown of every
    queue, every producer. */
static void s_snapshot_head(broker_t *self, sink_t *sink)
{
    dict_each(self->queues, s_snapshot_queue, sink);
    if (self->state.shut_down) {
        record_t record = {.type = RECORD_QUEUE, .state = QUEUE_DRAINING};
        s_snapshot_write(sink, &record);
    }
    dict_each(self->producers, s_snapshot_producer, sink);
}

/*  Items a pass writes to a snapshot: about a millisecond (0.6 us each,
    measured), twice per turn of the loop. */
#define SNAPSHOT_SLICE 1024

static void s_snapshot_over(broker_t *self, int rc)
{
    if (rc < 0)
        log_line("journal: a snapshot of %zu items could not be written (%s); the log stays "
                 "as it is, and the snapshot is tried again later",
                 store_count(self->store), strerror(errno));
    else if (self->config.verbose)
        log_line("journal: snapshot of %zu items, %llu bytes of log after, in %lld ms; the "
                 "loop stopped at most %lld us for it at a time",
                 store_count(self->store), (unsigned long long) journal_disk_bytes(self->journal),
                 (long long) (broker_now_us() - self->snapshot_started_us) / 1000,
                 (long long) self->snapshot_slice_max_us);
}

/*  The next slice of a snapshot being written, or its end. Items change
    between slices, and their records go to the head, which is replayed
    after the snapshot: each record states a result, so every item ends
    where its last record says, whether the snapshot saw it before or after
    the change. Without a sync thread (nothing to wake the loop with), the
    whole snapshot at once. */
static void s_snapshot_step(broker_t *self)
{
    journal_t *journal = self->journal;
    int64_t started = broker_now_us();
    int rc = 1;
    if (journal_snapshot_busy(journal) == 1) {
        sink_t sink = {s_journal_write, journal};
        do
            self->snapshot_slot = store_each_slice(self->store, self->snapshot_slot,
                                                   SNAPSHOT_SLICE, s_snapshot_item, &sink);
        while (self->snapshot_slot != SIZE_MAX && journal_sync_fd(journal) < 0);
        if (self->snapshot_slot != SIZE_MAX)
            journal_wake(journal);
        else
            rc = journal_snapshot_finish(journal);
    }
    else
        rc = journal_snapshot_poll(journal);
    int64_t took = broker_now_us() - started;
    if (took > self->snapshot_slice_max_us)
        self->snapshot_slice_max_us = took;
    if (rc <= 0)
        s_snapshot_over(self, rc);
}

/*  The whole state in one file in place of the closed segments, once they
    hold more garbage than live records (and more than a segment): disk use
    stays within about twice what is live plus two segments, and each byte
    is rewritten O(1) times on average. Written a slice per pass, so that
    the loop never stops for long (DESIGN.md, invariant 11). */
static void s_snapshot_if_due(broker_t *self)
{
    journal_t *journal = self->journal;
    if (journal_snapshot_busy(journal)) {
        s_snapshot_step(self);
        return;
    }
    uint64_t disk = journal_disk_bytes(journal), live = self->live_bytes;
    uint64_t floor = live > self->config.segment_bytes ? live : self->config.segment_bytes;
    if (journal_segment_count(journal) < 2 || disk < live || disk - live <= 2 * floor)
        return;
    int64_t started = broker_now_us();
    if (journal_snapshot_begin(journal))
        return;
    journal_snapshot_add(journal, RECORD_RESET, 0);
    sink_t sink = {s_journal_write, journal};
    s_snapshot_head(self, &sink);
    self->snapshot_slot = 0;
    self->snapshot_started_us = started;
    self->snapshot_slice_max_us = broker_now_us() - started;
    s_snapshot_step(self);
}

static void s_group_append(broker_t *self);

void persist_pass(broker_t *self)
{
    if (self->replica) {
        if (self->serving)
            s_group_append(self);
        s_answer_waits(self);
        return;
    }
    if (!self->journal)
        return;
    /* Said once per change, whether this flush or persist_write's met it. */
    int was = self->write_error_logged;
    int error = journal_flush(self->journal, broker_now_ms());
    self->write_error_logged = error != 0;
    if (error && !was)
        log_line("journal: cannot write to %s: %s; puts are refused (507) until it can, "
                 "tried every second",
                 self->config.data_dir, strerror(error));
    else if (!error && was && !journal_broken(self->journal))
        log_line("journal: writing again to %s; puts are accepted", self->config.data_dir);
    if (journal_broken(self->journal) && !self->broken_logged) {
        self->broken_logged = 1;
        log_line("journal: a sync of %s failed (%s): what it covered may not be on disk, so "
                 "nothing more is confirmed and puts are refused; restart the broker",
                 self->config.data_dir, strerror(journal_error(self->journal)));
    }
    if (!error)
        s_snapshot_if_due(self);
    s_answer_waits(self);
}

void persist_write(broker_t *self)
{
    if (self->journal && journal_written(self->journal) < self->puts_end)
        journal_flush(self->journal, broker_now_ms());
}

void persist_on_synced(broker_t *self)
{
    if (!self->journal)
        return;
    journal_on_synced(self->journal);
    if (journal_snapshot_busy(self->journal) == 2)
        s_snapshot_step(self);
    s_answer_waits(self);
}

/* ------------------------------------------------------------- recovery */

typedef struct {
    broker_t *broker;
    uint64_t records;
    uint64_t skipped;     /* records that do not parse, or name what no longer exists */
    uint64_t unknown;     /* records of a type this version does not read */
    uint8_t unknown_type; /* the first one's */
    int failed;           /* out of memory */
    int64_t started_ms;
} replay_t;

/*  Each record read goes through the one function that changes the state,
    as it did live. */
static void s_on_record(void *ctx, uint8_t type, const uint8_t *body, size_t size)
{
    replay_t *replay = ctx;
    record_t record;
    state_effects_t effects;
    replay->records++;
    if (!record_known(type)) {
        if (!replay->unknown++)
            replay->unknown_type = type;
        return;
    }
    if (record_decode(type, body, size, &record)) {
        replay->skipped++;
        return;
    }
    int rc = state_apply(&replay->broker->state, &record, &effects);
    if (rc > 0)
        replay->skipped++;
    else if (rc < 0)
        replay->failed = 1;
}

static void s_on_progress(void *ctx, uint64_t done, uint64_t total)
{
    replay_t *replay = ctx;
    log_line("journal: read %llu of %llu MiB (%llu records) in %lld ms",
             (unsigned long long) (done >> 20), (unsigned long long) (total >> 20),
             (unsigned long long) replay->records,
             (long long) (broker_now_ms() - replay->started_ms));
}

typedef struct {
    item_t **items;
    size_t count;
} collect_t;

static void s_accepted_now(void *ctx, item_t *item)
{
    item->accepted_us = *(const int64_t *) ctx;
}

static void s_touch_each(void *ctx, void *value)
{
    broker_touch_queue(ctx, value);
}

static void s_collect_waiting(void *ctx, item_t *item)
{
    collect_t *collect = ctx;
    if (item->state == ITEM_INFLIGHT || item->state == ITEM_DELAYED)
        collect->items[collect->count++] = item;
}

/*  Items in flight by rank, oldest first; then delayed items by their
    time (they have no rank), then by seq (the order they were put). */
static int s_by_rank(const void *a, const void *b)
{
    const item_t *x = *(item_t *const *) a, *y = *(item_t *const *) b;
    int dx = x->state == ITEM_DELAYED, dy = y->state == ITEM_DELAYED;
    if (dx != dy)
        return dx - dy;
    int64_t p = dx ? (int64_t) x->until_ms : x->rank, q = dy ? (int64_t) y->until_ms : y->rank;
    if (p != q)
        return (p > q) - (p < q);
    return (x->seq > y->seq) - (x->seq < y->seq);
}

/*  Where an item the records left in flight, or delayed, goes now: nowhere
    (a delay still running), dead, or queued. */
static item_state_t s_resumed(const item_t *item, int64_t wall)
{
    const queue_t *queue = item->queue;
    if (item->state == ITEM_DELAYED && (int64_t) item->until_ms > wall)
        return ITEM_DELAYED;
    if (item->state == ITEM_INFLIGHT && queue->max_attempts
        && item->attempts >= queue->max_attempts)
        return ITEM_DEAD;
    return ITEM_QUEUED;
}

/*  What the records left waiting on the leader: the items in flight go
    back (their sessions are gone), as records, as if each session had
    closed: to the dead letters oldest first, to the front newest first,
    so that both keep their order; the delays still running get their
    timers; of those that ran out while the broker was down, the puts go
    to the back in the order of their times, the retries to the front. */
static int s_resume(broker_t *self)
{
    collect_t collect = {calloc(store_count(self->store) + 1, sizeof(item_t *)), 0};
    if (!collect.items || deadlines_reserve(&self->deadlines, store_count(self->store) + 64)) {
        free(collect.items);
        return -1;
    }
    store_each(self->store, s_collect_waiting, &collect);
    qsort(collect.items, collect.count, sizeof *collect.items, s_by_rank);
    int64_t now_ms = broker_now_ms(), wall = broker_wall_ms(), now_us = broker_now_us();
    for (size_t i = 0; i < collect.count; i++) {
        item_t *item = collect.items[i];
        if (s_resumed(item, wall) == ITEM_DELAYED) {
            item->timer.kind = TIMER_DELAY;
            deadlines_set(&self->deadlines, &item->timer,
                          now_ms + ((int64_t) item->until_ms - wall));
        }
        else if (s_resumed(item, wall) == ITEM_DEAD)
            broker_die(self, item, DEATH_RESTART, (aq_bytes_t){0});
        else if (item->state == ITEM_DELAYED && item->attempts == 0)
            broker_move(self, item, ITEM_QUEUED); /* to the back: see state_move */
    }
    for (size_t i = collect.count; i > 0; i--) {
        item_t *item = collect.items[i - 1];
        if (item->state == ITEM_DEAD || item->state == ITEM_QUEUED
            || s_resumed(item, wall) != ITEM_QUEUED)
            continue;
        broker_move(self, item, ITEM_QUEUED);
    }
    free(collect.items);
    store_each(self->store, s_accepted_now, &now_us);
    dict_each(self->queues, s_touch_each, self);
    return 0;
}

static void s_live_sum(void *ctx, item_t *item)
{
    *(uint64_t *) ctx += broker_log_size(item);
}

static void s_idle_each(void *ctx, void *value)
{
    producers_detach(ctx, value);
}

/* ------------------------------------------------------------ replicas */

#define JOIN_HINT_MS 10000 /* a replica that joins and hears nothing says what to check */
#define LEADERLESS_HINT_MS 4000   /* a voter without a leader this long says what to check, */
#define LEADERLESS_AGAIN_MS 60000 /* and again this often while it lasts */
#define BALANCE_HEARD_MS 1000 /* a lead is handed to a voter that answered this lately, */
#define BALANCE_LAG 1024 /* lacking this many entries at most (libraft sends them first) */
/*  Entries not on disk for this long, with none written meanwhile: the
    replica cannot write its log (a full disk: libraft waits for room to
    open its next segment, silently). */
#define DISK_STUCK_MS 3000
/*  A loop that did not run for this long was stopped (SIGSTOP), or its
    machine was: the time away is not time the disk took. */
#define DISK_AWAY_MS 1000
/*  Free bytes that make room again: two of libraft's 8 MiB segments. */
#define DISK_ROOM_BYTES (16u << 20)

/*  An entry the leader appended, and the position its records end at. */
typedef struct {
    uint64_t token, end;
} appended_t;

typedef struct group group_t;

struct group {
    /*  The group at its first start (--peers), as replication addresses
        (HOST:PORT+2); none for a replica that joins (--join). */
    char peers[REPLICAS_MAX][AQ_ENDPOINT_MAX + 8];
    unsigned count;
    char address[AQ_ENDPOINT_MAX + 8]; /* this replica's replication address */
    char dir[PATH_MAX];
    appended_t *appended; /* a ring of the entries not yet applied */
    size_t head, length, capacity;
    uint64_t own_appended, own_applied; /* the leader's entries */
    int stepping_down;
    int member; /* in the group it knows, as last seen */
    uint64_t stored; /* the last entry on disk, as last seen, and when it moved */
    int64_t stored_ms;
    int64_t disk_checked_ms; /* the last look at it */
    int stuck;       /* told that it cannot write its log: 1, 2 with its disk full then */
    int64_t opened_ms; /* a replica that joins: when it started waiting for the leader */
    int hinted;
    int64_t leaderless_ms; /* since when no leader is known (0: one is), and when last said */
    int64_t leaderless_said_ms;
    int shards;          /* the service's (--service), 1 without one */
    int64_t balanced_ms; /* a leader: when it last looked whether to hand the lead over, */
    int64_t balance_wait_ms; /* how long until it looks again, */
    uint64_t balance_asked;  /* and the voter it asked to take it (0: none) */
    int lock_fd; /* the data directory's lock (journal_lock_dir) */
    /*  The change a client asked for (REPLICAS add or remove), answered
        once the group has committed it. */
    int asking;
    uint8_t asker[256];
    size_t asker_size;
    char asked_tag[AQ_TAG_MAX + 1];
    size_t asked_tag_size;
    char asked_line[256];
};

/*  A leader that stops leading may have applied records the group never
    committed (and a replica out of memory may have applied only part of
    one): it starts again, as a follower, from the group's log. */
static void s_step_down(broker_t *self, const char *why)
{
    if (self->group->stepping_down)
        return;
    self->group->stepping_down = 1;
    /* A stop asked now is not lost with this process image: asked before,
       it stops here; asked after, it waits (blocked) for the next one. */
    sigset_t caught;
    broker_caught_signals(&caught);
    sigprocmask(SIG_BLOCK, &caught, NULL);
    if (broker_stop_asked()) {
        log_line("replica %llu: %s; stopping, as asked", (unsigned long long) self->config.node_id,
                 why);
        fflush(NULL);
        _exit(0);
    }
    log_line("replica %llu: %s; starting again from the group's log",
             (unsigned long long) self->config.node_id, why);
    if (self->config.argv) {
        /* A dump or re-read asked and not yet done is done by the next. */
        broker_carry_asked();
        if (broker_stop_asked()) { /* taken on another thread meanwhile */
            fflush(NULL);
            _exit(0);
        }
        fflush(NULL);
        execv("/proc/self/exe", self->config.argv);
        log_line("cannot start again (%s): stopping", strerror(errno));
    }
    _exit(1);
}

/*  Each record of an entry through the one function that changes the
    state, as the leader applied it. */
static void s_apply_records(broker_t *self, const uint8_t *data, size_t size)
{
    while (size >= ENTRY_RECORD_HEADER) {
        uint8_t type = data[0];
        uint32_t length = aq_get_u32(data + 1);
        if (length > size - ENTRY_RECORD_HEADER)
            return; /* cannot be: the leader framed it */
        if (!record_known(type)) {
            /* Written by a leader of a newer version: applied without it,
               this replica's state would differ from its group's. */
            log_line("replica %llu: the group's log holds a record of a type this version "
                     "does not read (type %u): a newer asyncq-broker wrote it. Stopping rather "
                     "than differ from the group: start this replica with that version",
                     (unsigned long long) self->config.node_id, (unsigned) type);
            fflush(NULL);
            _exit(AQ_EXIT_FAILURE);
        }
        record_t record;
        state_effects_t effects;
        int rc = record_decode(type, data + ENTRY_RECORD_HEADER, length, &record)
                     ? 1 : state_apply(&self->state, &record, &effects);
        if (rc < 0) /* a state that would differ from the others': from the log again */
            s_step_down(self, "out of memory while applying the group's records");
        data += ENTRY_RECORD_HEADER + length;
        size -= ENTRY_RECORD_HEADER + length;
    }
}

static void s_group_apply(void *ctx, const uint8_t *data, size_t size)
{
    broker_t *self = ctx;
    if (!self->serving) /* a serving leader's entries are its own, applied already */
        s_apply_records(self, data, size);
    else
        self->group->own_applied++;
}

typedef struct {
    uint8_t *data;
    size_t size, capacity;
    int failed;
} buffer_t;

static void s_buffer_write(void *ctx, const record_t *record)
{
    buffer_t *buffer = ctx;
    size_t size = record_size(record), need = buffer->size + ENTRY_RECORD_HEADER + size;
    if (buffer->failed)
        return;
    if (need > buffer->capacity) {
        size_t capacity = buffer->capacity ? buffer->capacity : 65536;
        while (capacity < need)
            capacity *= 2;
        uint8_t *data = realloc(buffer->data, capacity);
        if (!data) {
            buffer->failed = 1;
            return;
        }
        buffer->data = data;
        buffer->capacity = capacity;
    }
    uint8_t *at = buffer->data + buffer->size;
    at[0] = record->type;
    aq_put_u32(at + 1, (uint32_t) size);
    record_encode(record, at + ENTRY_RECORD_HEADER);
    buffer->size = need;
}

/*  The whole state as records, as a journal's snapshot holds it. */
static int s_group_snapshot(void *ctx, uint8_t **data, size_t *size)
{
    broker_t *self = ctx;
    /* A leader's state is ahead of what the group applied while its own
       entries are on their way: a snapshot then would hold records the
       group may never commit. Refused; the library asks again after the
       next entry applied. */
    if (self->serving && (self->group->own_appended != self->group->own_applied
                          || self->entry.size))
        return -1;
    buffer_t buffer = {0};
    sink_t sink = {s_buffer_write, &buffer};
    record_t reset = {.type = RECORD_RESET};
    s_buffer_write(&buffer, &reset);
    s_snapshot_head(self, &sink);
    store_each(self->store, s_snapshot_item, &sink);
    if (buffer.failed) {
        free(buffer.data);
        return -1;
    }
    *data = buffer.data;
    *size = buffer.size;
    return 0;
}

static int s_group_restore(void *ctx, const uint8_t *data, size_t size)
{
    broker_t *self = ctx;
    if (self->serving)
        s_step_down(self, "a snapshot replaces the state it serves");
    self->state.replaying = 1;
    s_apply_records(self, data, size);
    int rc = state_rebuild(&self->state);
    log_line("replica %llu: state restored from a snapshot of the group: %zu items in %zu "
             "queues (%zu bytes)", (unsigned long long) self->config.node_id,
             store_count(self->store), dict_size(self->queues), size);
    return rc ? -1 : 0;
}

/*  A new leader takes over what the records left waiting, as a durable
    broker does at a restart (s_resume), then serves. */
static void s_take_over(broker_t *self)
{
    self->serving = 1;
    self->state.producer_seen = NULL; /* the leader's own table is ahead of its records */
    if (s_resume(self)) {
        self->serving = 0;
        s_step_down(self, "out of memory while taking over");
    }
    dict_each(self->producers, s_idle_each, self);
    log_line("replica %llu leads its group (term %llu): %zu items in %zu queues",
             (unsigned long long) self->config.node_id,
             (unsigned long long) replica_term(self->replica), store_count(self->store),
             dict_size(self->queues));
}

static void s_group_changed(void *ctx)
{
    broker_t *self = ctx;
    if (!self->replica)
        return; /* still opening */
    replica_role_t role = replica_role(self->replica);
    if (self->serving && role != REPLICA_LEADER)
        s_step_down(self, "no longer the leader");
    else if (!self->serving && role == REPLICA_LEADER && replica_ready(self->replica))
        s_take_over(self);
}

static void s_group_done(void *ctx, uint64_t token, int status)
{
    broker_t *self = ctx;
    group_t *group = self->group;
    if (status) {
        s_step_down(self, "an entry it appended was not committed");
        return;
    }
    while (group->length && group->appended[group->head].token <= token) {
        self->entry_committed = group->appended[group->head].end;
        group->head = (group->head + 1) % group->capacity;
        group->length--;
    }
}

/*  The pass's records as one entry of the group's log. While the lead is
    being handed over libraft takes no entry: they wait, in one entry, for
    the hand-over's end (the lead gone, the leader starts again; else they
    are appended). */
static void s_group_append(broker_t *self)
{
    group_t *group = self->group;
    if (!self->entry.size || replica_transferring(self->replica))
        return;
    if (group->length == group->capacity) {
        size_t capacity = group->capacity ? group->capacity * 2 : 64;
        appended_t *ring = malloc(capacity * sizeof *ring);
        if (!ring)
            s_step_down(self, "out of memory");
        for (size_t i = 0; i < group->length; i++)
            ring[i] = group->appended[(group->head + i) % group->capacity];
        free(group->appended);
        group->appended = ring;
        group->head = 0;
        group->capacity = capacity;
    }
    uint64_t token = replica_append(self->replica, self->entry.data, self->entry.size);
    if (!token) /* what it applied for them is the group's no more */
        s_step_down(self, "the group's log did not take its records");
    group->appended[(group->head + group->length++) % group->capacity] =
        (appended_t){token, self->entry_end};
    group->own_appended++;
    self->entry.size = 0;
}

/*  A replica's replication address from its client address (HOST:PORT,
    as clients reach it): HOST:PORT+2. -1 if it is not such an address. */
static int s_replication_address(const char *client, char *out, size_t size)
{
    aq_endpoint_t endpoint;
    if (aq_endpoint_parse(client, 0, &endpoint) != AQ_OK || endpoint.is_ipc
        || endpoint.port == 0 || endpoint.port > 65533 || strchr(endpoint.host, ';')
        || strchr(endpoint.host, ',') || strcmp(endpoint.host, "*") == 0)
        return -1;
    int length = snprintf(out, size, "%s:%u", endpoint.host, (unsigned) endpoint.port + 2);
    return length < 0 || (size_t) length >= size ? -1 : 0;
}

/*  The other way: HOST:PORT-2, as clients reach the replica. */
static void s_client_address(const char *replication, char *out, size_t size)
{
    const char *colon = strrchr(replication, ':');
    unsigned long port = colon ? strtoul(colon + 1, NULL, 10) : 0;
    if (!colon || port < 3)
        snprintf(out, size, "%s", replication);
    else
        snprintf(out, size, "%.*s:%lu", (int) (colon - replication), replication, port - 2);
}

/*  --peers: HOST:PORT each (as clients reach the replicas); the group's
    own traffic goes to PORT+2. This replica is at --node-id's place, or,
    joining a group that runs, at --join's address. */
static int s_group_addresses(group_t *group, const broker_config_t *config, char *error,
                             size_t error_size)
{
    const char *at = config->peers ? config->peers : "";
    while (*at) {
        size_t length = strcspn(at, ",");
        char entry[AQ_ENDPOINT_MAX];
        if (group->count == REPLICAS_MAX || length == 0 || length >= sizeof entry) {
            snprintf(error, error_size, "--peers lists 1 to %d replicas, HOST:PORT each",
                     REPLICAS_MAX);
            return -1;
        }
        snprintf(entry, sizeof entry, "%.*s", (int) length, at);
        if (s_replication_address(entry, group->peers[group->count],
                                  sizeof group->peers[0])) {
            snprintf(error, error_size,
                     "--peers: '%s' is not HOST:PORT (a host other replicas and clients reach, "
                     "a port below 65534)", entry);
            return -1;
        }
        group->count++;
        at += length + (at[length] == ',');
    }
    if (config->join) {
        if (s_replication_address(config->join, group->address, sizeof group->address)) {
            snprintf(error, error_size,
                     "--join: '%s' is not HOST:PORT (this replica's address, as `asyncq "
                     "replica add` was given it)", config->join);
            return -1;
        }
        group->count = 0; /* the group runs: its leader sends the log, members included */
        return 0;
    }
    if (!config->node_id || config->node_id > group->count) {
        snprintf(error, error_size, "--node-id %llu is not a place in --peers' %u replicas "
                 "(counted from 1); a replica added with `asyncq replica add` starts with "
                 "--join HOST:PORT (its own address) too", (unsigned long long) config->node_id,
                 group->count);
        return -1;
    }
    snprintf(group->address, sizeof group->address, "%s", group->peers[config->node_id - 1]);
    return 0;
}

static void s_group_membership(void *ctx, int status);
static void s_group_service(broker_t *self);

static void s_group_note(void *ctx, const char *line)
{
    broker_t *self = ctx;
    log_line("replica %llu: %s", (unsigned long long) self->config.node_id, line);
}

/*  One process per replica's data directory, as per journal: its LOCK
    (not kept across the execv of a replica that steps down). 0, or the
    journal_status_t of the failure. */
static int s_group_lock(group_t *group, const char *dir, char *error, size_t error_size)
{
    if (mkdir(dir, 0700) && errno != EEXIST) {
        snprintf(error, error_size, "cannot make %s: %s", dir, strerror(errno));
        return JOURNAL_IO;
    }
    int rc = journal_lock_dir(dir, &group->lock_fd, error, error_size);
    return rc == -2 ? JOURNAL_LOCKED : rc ? JOURNAL_IO : 0;
}

/*  Which replica a data directory is: DIR/NODE holds its id, written at
    its first start (or the first by a version that writes it). A replica
    started on another's directory, whose log is the same until it
    differs, would count in a majority as that one: refused. 0, or -1
    with why in `error`. */
static int s_group_identity(const char *dir, uint64_t node_id, char *error, size_t error_size)
{
    char path[PATH_MAX + 8], text[32] = "";
    snprintf(path, sizeof path, "%s/NODE", dir);
    FILE *file = fopen(path, "r");
    if (file) {
        size_t got = fread(text, 1, sizeof text - 1, file);
        fclose(file);
        text[got] = '\0';
        char *end = NULL;
        unsigned long long held = strtoull(text, &end, 10);
        if (end == text || held != node_id) {
            snprintf(error, error_size, "%s is replica %.*s's directory (%s), not replica "
                     "%llu's: is --node-id this replica's?", dir, (int) strcspn(text, "\n"),
                     text, path, (unsigned long long) node_id);
            return -1;
        }
        return 0;
    }
    if (errno != ENOENT) {
        snprintf(error, error_size, "cannot read %s: %s", path, strerror(errno));
        return -1;
    }
    char temporary[PATH_MAX + 16];
    snprintf(temporary, sizeof temporary, "%s/NODE.new", dir);
    file = fopen(temporary, "w");
    int written = file && fprintf(file, "%llu\n", (unsigned long long) node_id) > 0;
    if (file && (fflush(file) || fsync(fileno(file))))
        written = 0;
    if (file)
        fclose(file);
    if (!written || rename(temporary, path)) {
        snprintf(error, error_size, "cannot write %s: %s", path, strerror(errno));
        return -1;
    }
    return 0;
}

/*  A replica's place (s_group_addresses), its data directory locked and
    its id checked, its log's directory in group->dir: 0, or the
    journal_status_t of the failure. */
static int s_group_claim(group_t *group, const broker_config_t *config, char *error,
                         size_t error_size)
{
    group->lock_fd = -1;
    if (s_group_addresses(group, config, error, error_size))
        return JOURNAL_IO;
    int locked = s_group_lock(group, config->data_dir, error, error_size);
    if (locked)
        return locked;
    if (s_group_identity(config->data_dir, config->node_id, error, error_size))
        return JOURNAL_IO;
    snprintf(group->dir, sizeof group->dir, "%s/replica", config->data_dir);
    return 0;
}

/*  Replicas whose host does not resolve now are named at the start
    (libraft's transport would try them in silence): a name mistyped in
    --peers, or one a container's DNS knows only once it runs. */
static void s_group_resolve(const broker_t *self)
{
    const group_t *group = self->group;
    for (unsigned i = 0; i < group->count; i++) {
        aq_endpoint_t endpoint; /* group->peers are valid HOST:PORT (s_group_addresses) */
        if (aq_endpoint_parse(group->peers[i], 0, &endpoint) != AQ_OK)
            continue;
        struct addrinfo hints = {.ai_family = AF_INET, .ai_socktype = SOCK_STREAM};
        struct addrinfo *found = NULL;
        int rv = getaddrinfo(endpoint.host, NULL, &hints, &found);
        if (found)
            freeaddrinfo(found);
        if (rv)
            log_line("replica %llu: replica %u's host %s does not resolve (%s): the group "
                     "reaches it once it does; is --peers right?",
                     (unsigned long long) self->config.node_id, i + 1, endpoint.host,
                     gai_strerror(rv));
    }
}

static int s_group_open(broker_t *self, char *error, size_t error_size)
{
    self->group = calloc(1, sizeof *self->group);
    if (!self->group) {
        snprintf(error, error_size, "out of memory");
        return JOURNAL_IO;
    }
    group_t *group = self->group;
    int claimed = s_group_claim(group, &self->config, error, error_size);
    if (claimed)
        return claimed;
    unsigned threshold = (unsigned) self->config.replica_snapshot; /* 0: by bytes */
    replica_config_t config = {.count = group->count, .id = self->config.node_id,
                               .address = group->address, .dir = group->dir,
                               .snapshot_threshold = threshold,
                               .snapshot_trailing = threshold / 4,
                               .key = auth_secret_key(self->auth),
                               .insecure = self->config.insecure};
    for (unsigned i = 0; i < group->count; i++)
        config.addresses[i] = group->peers[i];
    replica_owner_t owner = {.apply = s_group_apply,
                             .snapshot = s_group_snapshot,
                             .restore = s_group_restore,
                             .changed = s_group_changed,
                             .done = s_group_done,
                             .membership = s_group_membership,
                             .note = s_group_note,
                             .ctx = self};
    /* Until it leads, the state follows the group's records: producers'
       seqs included. */
    self->state.producer_seen = producers_seen;
    self->replica = replica_open(&config, &owner, error, error_size);
    if (!self->replica)
        return JOURNAL_IO;
    group->opened_ms = broker_now_ms();
    group->member = replica_is_member(self->replica);
    group->shards = 1;
    for (const char *at = self->config.service; at && *at; at++)
        group->shards += *at == ',';
    if (self->config.join)
        log_line("replica %llu: the group's log in %s, replicas reach it on %s; it joins a "
                 "group that runs, and waits for its leader",
                 (unsigned long long) self->config.node_id, group->dir, group->address);
    else { /* the group as its log says (--peers makes it at the first start only) */
        replica_member_t members[REPLICAS_MAX + 1];
        size_t count = replica_members(self->replica, members, REPLICAS_MAX + 1);
        log_line("replica %llu of %zu: the group's log in %s, replicas reach it on %s",
                 (unsigned long long) self->config.node_id, count, group->dir,
                 group->address);
        /* A --peers edited (or mistyped) since the first start is not read. */
        for (size_t i = 0; i < count; i++) {
            uint64_t id = members[i].id;
            if (id < 1 || id > group->count || !strcmp(members[i].address, group->peers[id - 1]))
                continue;
            char listed[AQ_ENDPOINT_MAX + 8], logged[AQ_ENDPOINT_MAX + 8];
            s_client_address(group->peers[id - 1], listed, sizeof listed);
            s_client_address(members[i].address, logged, sizeof logged);
            log_line("replica %llu: --peers has replica %llu at %s, the group's log at %s: the "
                     "log's members are the group's (asyncq replica list)",
                     (unsigned long long) self->config.node_id, (unsigned long long) id, listed,
                     logged);
        }
    }
    s_group_resolve(self);
    s_group_service(self);
    return 0;
}

int persist_recover_alone(const broker_config_t *config, char *text, size_t text_size)
{
    group_t *group = calloc(1, sizeof *group);
    if (!group) {
        snprintf(text, text_size, "out of memory");
        return -1;
    }
    group->lock_fd = -1;
    char dir[sizeof group->dir];
    struct stat held;
    snprintf(dir, sizeof dir, "%s/replica", config->data_dir);
    int rc = 0;
    if (stat(dir, &held) != 0) { /* nothing made where nothing was */
        snprintf(text, text_size, "%s holds no log of a replica (no %s)", config->data_dir, dir);
        rc = -1;
    }
    else if ((rc = s_group_claim(group, config, text, text_size)) != 0)
        rc = rc == JOURNAL_LOCKED ? -2 : -1;
    replica_recovered_t recovered = {0};
    if (rc == 0)
        rc = replica_recover_alone(group->dir, config->node_id, group->address, &recovered,
                                   text, text_size);
    if (rc == 0) {
        size_t at = (size_t) snprintf(text, text_size,
                                      "replica %llu is its group's only member now, a voter "
                                      "(it was a %s; its log ended at entry %llu); left out:",
                                      (unsigned long long) config->node_id,
                                      recovered.was_voter ? "voter"
                                                          : "standby, which may lack what "
                                                            "the group committed",
                                      (unsigned long long) recovered.last_index);
        for (size_t i = 0; i < recovered.count && at < text_size; i++) {
            char client[AQ_ENDPOINT_MAX + 8];
            s_client_address(recovered.left_out[i].address, client, sizeof client);
            at += (size_t) snprintf(text + at, text_size - at, "%s replica %llu (%s, a %s)",
                                    i ? "," : "", (unsigned long long) recovered.left_out[i].id,
                                    client, recovered.left_out[i].voter ? "voter" : "standby");
        }
        if (!recovered.count && at < text_size)
            snprintf(text + at, text_size - at, " none");
    }
    if (group->lock_fd >= 0)
        close(group->lock_fd);
    free(group);
    return rc;
}

int persist_fd(const broker_t *self)
{
    return self->replica ? replica_fd(self->replica) : -1;
}

int persist_timeout_ms(const broker_t *self)
{
    return self->replica ? replica_timeout_ms(self->replica) : -1;
}

/*  WELCOME's service field (4.15, 4.16): the group's members as clients
    reach them, from the group's latest configuration. */
static void s_group_service(broker_t *self)
{
    replica_member_t members[REPLICAS_MAX + 1];
    size_t count = replica_members(self->replica, members, REPLICAS_MAX + 1);
    char list[AQ_TEXT_MAX] = "";
    size_t at = 0;
    for (size_t i = 0; i < count && at < sizeof list; i++) {
        char client[AQ_ENDPOINT_MAX + 8];
        s_client_address(members[i].address, client, sizeof client);
        int length = snprintf(list + at, sizeof list - at, "%s%s", i ? "," : "", client);
        if (length < 0 || (size_t) length >= sizeof list - at)
            break;
        at += (size_t) length;
    }
    if (broker_service_field(self, list)) /* not with 7 names of 100 */
        log_line("replica %llu: the group's addresses and the service's are too long for "
                 "WELCOME (%zu bytes at most)",
                 (unsigned long long) self->config.node_id, sizeof self->service - 1);
}

/*  A replica that cannot write its log says so, and hands the lead over if
    it has it (a leader with no disk makes the group wait on the others');
    once its disk has room again it starts again from its log (libraft
    does not try its segment again on its own). */
static void s_check_disk(broker_t *self)
{
    group_t *group = self->group;
    uint64_t last = replica_last_index(self->replica);
    uint64_t stored = replica_last_stored(self->replica);
    int64_t now = broker_now_ms();
    if (now - group->disk_checked_ms > DISK_AWAY_MS)
        group->stored_ms = now;
    group->disk_checked_ms = now;
    if (stored >= last || stored != group->stored) {
        if (group->stuck)
            log_line("replica %llu writes its log again", (unsigned long long) self->config.node_id);
        group->stuck = 0;
        group->stored = stored;
        group->stored_ms = now;
        return;
    }
    if (now - group->stored_ms < DISK_STUCK_MS)
        return;
    struct statvfs disk;
    uint64_t room = statvfs(group->dir, &disk) == 0 ? (uint64_t) disk.f_bavail * disk.f_frsize : 0;
    if (!group->stuck) {
        group->stuck = room < DISK_ROOM_BYTES ? 2 : 1;
        log_line("replica %llu cannot write its log in %s: %llu entries not on disk for %d s, "
                 "%llu MiB free (is the disk full?)%s", (unsigned long long) self->config.node_id,
                 group->dir, (unsigned long long) (last - stored), DISK_STUCK_MS / 1000,
                 (unsigned long long) (room >> 20),
                 self->serving ? "; it hands the lead over" : "; the others go on without it");
        uint64_t anyone = 0;
        if (self->serving)
            replica_transfer(self->replica, &anyone);
    }
    else if (group->stuck == 2 && room >= DISK_ROOM_BYTES) /* not a disk only slow */
        s_step_down(self, "its disk has room again");
}

/*  A voter that has known no leader for a while says what a leader needs,
    and the way on when most of the group is lost for good. */
static void s_leaderless_hint(broker_t *self)
{
    group_t *group = self->group;
    if (replica_leader(self->replica, NULL)) { /* the usual case: nothing else read */
        group->leaderless_ms = group->leaderless_said_ms = 0;
        return;
    }
    int64_t now = broker_now_ms();
    if (!group->leaderless_ms)
        group->leaderless_ms = now;
    if (now - group->leaderless_ms < LEADERLESS_HINT_MS
        || (group->leaderless_said_ms && now - group->leaderless_said_ms < LEADERLESS_AGAIN_MS))
        return;
    int voter;
    unsigned voters = replica_voters(self->replica, &voter);
    if (!voter)
        return; /* one that joins has its own hint; a standby waits for its leader */
    group->leaderless_said_ms = now;
    log_line("replica %llu has known no leader for %lld s: its group elects one once %u of its "
             "%u voters run and reach each other (a new group's first: all of them, started "
             "with the same --peers in the same order%s; each replica's log names one it has "
             "not heard). If most of their directories are lost for good, one replica can go "
             "on alone: --recover-alone (README)",
             (unsigned long long) self->config.node_id,
             (long long) ((now - group->leaderless_ms) / 1000), voters / 2 + 1, voters,
             group->shards > 1 ? " and the same --shards or --service" : "");
}

/*  The shards' leaders spread over the hosts: a service's shard K leads,
    while it can, on voter K mod V of its group (in the group's order),
    so that with `--shards N --peers A,B,C` on three hosts each host leads
    a third of the shards. A leader that is not that voter hands it the
    lead once it has led for --lead-balance-ms and that voter answers and
    lacks little of the log; one that is down or behind leaves the lead
    where it is, looked at again each --lead-balance-ms. */
static void s_balance_leaders(broker_t *self)
{
    group_t *group = self->group;
    int64_t every = (int64_t) self->config.lead_balance_ms;
    if (group->shards < 2 || !self->serving || !every) {
        group->balanced_ms = 0;
        return;
    }
    int64_t now = broker_now_ms();
    if (!group->balanced_ms) {
        group->balanced_ms = now;
        group->balance_wait_ms = every;
        group->balance_asked = 0;
    }
    if (now - group->balanced_ms < group->balance_wait_ms)
        return;
    group->balanced_ms = now;
    if (group->balance_asked) /* still leading: that voter did not take over */
        log_line("replica %llu still leads shard %llu: replica %llu did not take the lead; "
                 "asked again in %lld s at the soonest",
                 (unsigned long long) self->config.node_id,
                 (unsigned long long) self->config.shard,
                 (unsigned long long) group->balance_asked,
                 (long long) (group->balance_wait_ms / 1000));
    group->balance_asked = 0;
    replica_member_t members[REPLICAS_MAX + 1];
    size_t count = replica_members(self->replica, members, REPLICAS_MAX + 1);
    uint64_t voters[REPLICAS_MAX + 1];
    size_t voter_count = 0;
    for (size_t i = 0; i < count; i++)
        if (members[i].kind == REPLICA_VOTER)
            voters[voter_count++] = members[i].id;
    if (!voter_count)
        return;
    uint64_t own = voters[self->config.shard % voter_count], match;
    if (own == self->config.node_id || replica_match_index(self->replica, own, &match)
        || match + BALANCE_LAG < replica_last_index(self->replica)
        || (uint64_t) replica_silent_ms(self->replica, own) > BALANCE_HEARD_MS)
        return;
    if (replica_transfer(self->replica, &own) == 0) {
        log_line("replica %llu hands the lead of shard %llu to replica %llu, its own leader "
                 "(each host leads its share of the shards)",
                 (unsigned long long) self->config.node_id,
                 (unsigned long long) self->config.shard, (unsigned long long) own);
        /* Each try that fails waits twice as long for the next, up to 64
           times --lead-balance-ms: a voter that answers yet cannot lead
           (its disk full) costs the group a pause only now and then. */
        group->balance_asked = own;
        if (group->balance_wait_ms < every * 64)
            group->balance_wait_ms *= 2;
    }
}

/*  The voter furthest on among those heard lately (one down would only be
    waited for), or 0. */
static uint64_t s_hand_over_target(broker_t *self)
{
    replica_member_t members[REPLICAS_MAX + 1];
    size_t count = replica_members(self->replica, members, REPLICAS_MAX + 1);
    uint64_t to = 0, best = 0;
    for (size_t i = 0; i < count; i++) {
        uint64_t match;
        if (members[i].kind != REPLICA_VOTER || members[i].id == self->config.node_id
            || replica_match_index(self->replica, members[i].id, &match) || match < best
            || (uint64_t) replica_silent_ms(self->replica, members[i].id) > BALANCE_HEARD_MS)
            continue;
        to = members[i].id;
        best = match;
    }
    return to;
}

int persist_can_hand_over(broker_t *self)
{
    return self->replica && self->serving
           && (replica_transferring(self->replica) || s_hand_over_target(self));
}

int persist_hand_over_to_stop(broker_t *self, int again)
{
    if (!self->replica || !self->serving)
        return 0;
    uint64_t to = s_hand_over_target(self);
    if (!to && !replica_transferring(self->replica))
        return 0;
    int rc = replica_transfer(self->replica, &to);
    if (rc == REPLICA_EBUSY) { /* a hand-over or a change of the group under way */
        if (!again)
            log_line("replica %llu hands the lead over once the %s under way is done",
                     (unsigned long long) self->config.node_id,
                     replica_transferring(self->replica) ? "hand-over" : "change of its group");
        return 1;
    }
    if (rc)
        return 0;
    log_line("replica %llu hands the lead to replica %llu before it stops%s",
             (unsigned long long) self->config.node_id, (unsigned long long) to,
             again ? " (asked again)" : "");
    return 1;
}

int persist_handing_over(const broker_t *self)
{
    return self->replica && replica_transferring(self->replica);
}

void persist_run(broker_t *self)
{
    if (!self->replica)
        return;
    uint64_t version = replica_configuration_version(self->replica);
    replica_run(self->replica);
    if (!version && self->config.join && !self->group->hinted
        && broker_now_ms() - self->group->opened_ms > JOIN_HINT_MS) {
        self->group->hinted = 1;
        log_line("replica %llu has heard nothing from its group's leader in %d s: was it added "
                 "(asyncq replica add %s), with this id (asyncq replica list names each "
                 "replica's), and can the leader reach %s?",
                 (unsigned long long) self->config.node_id, JOIN_HINT_MS / 1000,
                 self->config.join, self->group->address);
    }
    s_check_disk(self);
    s_leaderless_hint(self);
    s_balance_leaders(self);
    if (version != replica_configuration_version(self->replica)) {
        s_group_service(self);
        /* Told once, when it leaves (a replica that joins learns of the
           group before it is in it). */
        int member = replica_is_member(self->replica);
        if (!member && self->group->member)
            log_line("replica %llu is not in its group any more (removed with `asyncq replica "
                     "remove`): it serves nothing; stop it", (unsigned long long) self->config.node_id);
        self->group->member = member;
    }
    s_answer_waits(self);
}

const char *persist_leader(broker_t *self, char *out, size_t size)
{
    const char *address = "";
    uint64_t leader = self->replica ? replica_leader(self->replica, &address) : 0;
    if (!leader || leader == self->config.node_id || !*address)
        return "";
    s_client_address(address, out, size);
    return out;
}

int persist_group(broker_t *self, persist_group_t *out)
{
    if (!self->replica)
        return -1;
    static const char *const roles[] = {"follower", "candidate", "leader", "stopped"};
    static const char *const kinds[] = {"voter", "standby", "spare"};
    replica_role_t role = replica_role(self->replica);
    *out = (persist_group_t){.node = self->config.node_id,
                             .leader = replica_leader(self->replica, NULL),
                             .role = roles[role],
                             .term = replica_term(self->replica),
                             .commit_index = replica_commit_index(self->replica),
                             .applied_index = replica_applied_index(self->replica),
                             .last_index = replica_last_index(self->replica)};
    for (int made = 0; made < 2; made++)
        for (int cause = 0; cause < LINK_REFUSED_CAUSES; cause++)
            out->refused[made][cause] = replica_refused(self->replica, made, cause);
    replica_member_t members[PERSIST_MEMBERS_MAX];
    out->count = replica_members(self->replica, members, PERSIST_MEMBERS_MAX);
    for (size_t i = 0; i < out->count; i++) {
        s_client_address(members[i].address, out->replicas[i].address,
                         sizeof out->replicas[i].address);
        out->replicas[i].id = members[i].id;
        out->replicas[i].kind = kinds[members[i].kind];
        uint64_t match = 0;
        if (replica_match_index(self->replica, members[i].id, &match) == 0) {
            out->replicas[i].known = 1;
            out->replicas[i].match_index = match;
            out->replicas[i].lag = out->last_index > match ? out->last_index - match : 0;
            out->replicas[i].silent_ms = replica_silent_ms(self->replica, members[i].id);
        }
    }
    return 0;
}

int persist_change_error(int error, const char **text)
{
    if (error == PERSIST_EADDRESS) {
        *text = "not HOST:PORT (the replica's address, as clients reach it; a port below 65534)";
        return AQ_MALFORMED;
    }
    *text = replica_strerror(error);
    switch (error) {
    case REPLICA_ENOTLEADER: return AQ_NOT_LEADER;
    case REPLICA_EBUSY: case REPLICA_ELEADER: case REPLICA_ELEADS: return AQ_CONFLICT;
    case REPLICA_ENOID: case REPLICA_EDUPLICATE: return AQ_MALFORMED;
    default: return AQ_INTERNAL;
    }
}

/*  The change a client asked for is committed or failed: its answer. */
static void s_group_membership(void *ctx, int status)
{
    broker_t *self = ctx;
    group_t *group = self->group;
    if (!group || !group->asking)
        return;
    group->asking = 0;
    aq_bytes_t asker = {group->asker, group->asker_size};
    aq_bytes_t tag = {(const uint8_t *) group->asked_tag, group->asked_tag_size};
    if (status) {
        const char *text;
        int code = persist_change_error(status, &text);
        broker_send_error(self, asker, code, tag, (aq_bytes_t){0}, text);
        return;
    }
    aq_bytes_t line = aq_bytes_str(group->asked_line);
    aq_msg_t reply = {.cmd = AQ_CMD_REPORT, .tag = tag, .list = &line, .list_size = 1};
    broker_send(self, asker, &reply, NULL);
}

int persist_change(broker_t *self, aq_bytes_t asker, aq_bytes_t tag, persist_change_t change,
                   const char *argument, char *line, size_t line_size)
{
    if (!self->replica)
        return REPLICA_ENOID;
    group_t *group = self->group;
    uint64_t id = 0;
    int rv;
    char replication[AQ_ENDPOINT_MAX + 8];
    if (change == PERSIST_ADD) {
        if (s_replication_address(argument, replication, sizeof replication))
            return PERSIST_EADDRESS;
        rv = replica_add(self->replica, replication, &id);
        if (rv == 0)
            snprintf(line, line_size, "id=%llu address=%s kind=standby",
                     (unsigned long long) id, argument);
    }
    else {
        persist_group_t known;
        persist_group(self, &known);
        char *end = NULL;
        id = strtoull(argument, &end, 10);
        if (!*argument || *end) { /* an address */
            id = 0;
            if (s_replication_address(argument, replication, sizeof replication) == 0)
                for (size_t i = 0; i < known.count; i++) {
                    char other[AQ_ENDPOINT_MAX + 8];
                    if (s_replication_address(known.replicas[i].address, other, sizeof other) == 0
                        && strcmp(other, replication) == 0)
                        id = known.replicas[i].id;
                }
            if (!id && *argument)
                return REPLICA_ENOID;
        }
        rv = change == PERSIST_REMOVE ? replica_remove(self->replica, id)
                                      : replica_transfer(self->replica, &id);
        const char *address = "";
        for (size_t i = 0; i < known.count; i++)
            if (known.replicas[i].id == id)
                address = known.replicas[i].address;
        snprintf(line, line_size, "%s=%llu address=%s",
                 change == PERSIST_REMOVE ? "removed id" : "transfer to",
                 (unsigned long long) id, address);
    }
    if (rv || change == PERSIST_TRANSFER)
        return rv;
    group->asking = 1;
    group->asker_size = asker.size < sizeof group->asker ? asker.size : sizeof group->asker;
    memcpy(group->asker, asker.data, group->asker_size);
    group->asked_tag_size = tag.size < AQ_TAG_MAX ? tag.size : AQ_TAG_MAX;
    memcpy(group->asked_tag, tag.data, group->asked_tag_size);
    snprintf(group->asked_line, sizeof group->asked_line, "%s", line);
    return PERSIST_PENDING;
}

void persist_dir_holds(const char *dir, persist_dir_t *holds)
{
    char path[PATH_MAX];
    struct stat info;
    snprintf(path, sizeof path, "%s/replica", dir);
    *holds = (persist_dir_t){.replica = stat(path, &info) == 0 && S_ISDIR(info.st_mode)};
    DIR *entries = opendir(dir);
    struct dirent *entry;
    while (entries && (entry = readdir(entries))) {
        size_t length = strlen(entry->d_name);
        if (length == 20 && strcmp(entry->d_name + 16, ".log") == 0)
            holds->journal = 1;
        unsigned shard;
        char end;
        if (sscanf(entry->d_name, "shard-%u%c", &shard, &end) != 1 || shard >= 1u << 16
            || (int) shard < holds->shards)
            continue;
        snprintf(path, sizeof path, "%s/%s", dir, entry->d_name);
        if (stat(path, &info) == 0 && S_ISDIR(info.st_mode))
            holds->shards = (int) shard + 1;
    }
    if (entries)
        closedir(entries);
}

int persist_dir_mixed(const char *dir, const persist_dir_t *holds, char *error,
                      size_t error_size)
{
    if (!holds->shards || (!holds->journal && !holds->replica))
        return 0;
    snprintf(error, error_size, "%s holds both %s and the shards of a service (shard-0 to "
             "shard-%d): one was started on the other's directory (which asyncq-broker 2.5.0 "
             "and before took without a word); move one of them to a directory of its own", dir,
             holds->replica ? "a replica's log (DIR/replica)" : "a broker's journal",
             holds->shards - 1);
    return 1;
}

int persist_open(broker_t *self, char *error, size_t error_size)
{
    int grouped = self->config.peers || self->config.join;
    persist_dir_t holds;
    persist_dir_holds(self->config.data_dir, &holds);
    if (persist_dir_mixed(self->config.data_dir, &holds, error, error_size))
        return JOURNAL_IO;
    if (holds.shards) {
        snprintf(error, error_size, "%s holds the shards of a service (%s/shard-0 to shard-%d, "
                 "each its own journal or log): start it as that service, with --shards %d",
                 self->config.data_dir, self->config.data_dir, holds.shards - 1, holds.shards);
        return JOURNAL_IO;
    }
    if (holds.replica && !grouped) {
        snprintf(error, error_size, "%s holds the log of a replica of a group (%s/replica): "
                 "start it as one, with --peers (or --join) and its --node-id, as before",
                 self->config.data_dir, self->config.data_dir);
        return JOURNAL_IO;
    }
    if (holds.journal && grouped) {
        snprintf(error, error_size, "%s holds the journal of a broker that is not a replica: a "
                 "replica starts from an empty directory of its own (the group's log is not "
                 "that journal)", self->config.data_dir);
        return JOURNAL_IO;
    }
    if (grouped)
        return s_group_open(self, error, error_size);
    journal_config_t config = {
        .dir = self->config.data_dir,
        .fsync = (journal_fsync_t) self->config.fsync,
        .interval_ms = self->config.fsync_interval_ms,
        .segment_bytes = self->config.segment_bytes,
        .sync_thread = 1,
    };
    replay_t replay = {.broker = self, .started_ms = broker_now_ms()};
    journal_status_t status;
    self->state.replaying = 1;
    self->state.producer_seen = producers_seen;
    self->journal = journal_open(&config, s_on_record, &replay, s_on_progress, &status, error,
                                 error_size);
    self->state.producer_seen = NULL; /* the leader's own table is ahead of its records */
    if (!self->journal) {
        self->state.replaying = 0;
        return (int) status;
    }
    if (replay.unknown) {
        /* Its records are kept: the version that wrote them reads them all. */
        snprintf(error, error_size, "%s holds %llu records of a type this version does not "
                 "read (type %u, the first): a newer asyncq-broker wrote them, and serving "
                 "without them would lose what they say. Start the version that wrote them",
                 self->config.data_dir, (unsigned long long) replay.unknown,
                 (unsigned) replay.unknown_type);
        journal_close(&self->journal);
        return JOURNAL_IO;
    }
    /* The records of what recovery changes go to the new head. */
    if (replay.failed || state_rebuild(&self->state) || s_resume(self)) {
        snprintf(error, error_size, "out of memory while reading the journal of %s",
                 self->config.data_dir);
        journal_close(&self->journal);
        return JOURNAL_IO;
    }
    /* Recovered producers have no session yet: idle, forgotten in time. */
    dict_each(self->producers, s_idle_each, self);
    uint64_t live = 0;
    store_each(self->store, s_live_sum, &live);
    self->live_bytes = live;
    log_line("journal: %s: %zu items in %zu queues and %zu producers recovered from %llu "
             "records (%llu bytes) in %lld ms%s",
             self->config.data_dir, store_count(self->store), dict_size(self->queues),
             dict_size(self->producers), (unsigned long long) replay.records,
             (unsigned long long) journal_disk_bytes(self->journal),
             (long long) (broker_now_ms() - replay.started_ms),
             replay.skipped ? " (some records named what was gone: skipped)" : "");
    if (journal_lost_segments(self->journal))
        log_line("journal: %s: %llu segment(s) of this log were missing and marked lost by "
                 "--repair: what they held is gone (%llu records named items no longer there); "
                 "said at every start until the next snapshot",
                 self->config.data_dir,
                 (unsigned long long) journal_lost_segments(self->journal),
                 (unsigned long long) replay.skipped);
    return 0;
}

void persist_close(broker_t *self)
{
    broker_forget_replies(self);
    journal_close(&self->journal);
    replica_close(&self->replica);
    if (self->group) {
        free(self->group->appended);
        if (self->group->lock_fd >= 0)
            close(self->group->lock_fd);
    }
    free(self->group);
    self->group = NULL;
}
