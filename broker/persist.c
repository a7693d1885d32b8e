#include "persist.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "dispatch.h"
#include "journal.h"
#include "producers.h"
#include "ratelog.h"

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

/*  Appends a record to the snapshot being written. */
static void s_snapshot_write(journal_t *journal, const record_t *record)
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

static void s_snapshot_item(void *journal, item_t *item)
{
    record_t record;
    s_item_record(item, &record);
    s_snapshot_write(journal, &record);
    if (item->epitaph) { /* why it died, where it lies */
        record = (record_t){.type = RECORD_DIED, .id = item->id, .seq = item->seq,
                            .rank = item->rank, .state = ITEM_DEAD, .attempts = item->attempts,
                            .cause = item->epitaph->cause,
                            .at_ms = (uint64_t) item->epitaph->at_ms,
                            .text = {(const uint8_t *) item->epitaph->text, item->epitaph->size}};
        s_snapshot_write(journal, &record);
    }
}

static void s_snapshot_producer(void *journal, void *value)
{
    const producer_t *producer = value;
    record_t record = {.type = RECORD_PRODUCER, .next = producer->next_seq,
                       .producer = aq_bytes_str(producer->id),
                       .key = aq_bytes_str(producer->key)};
    s_snapshot_write(journal, &record);
}

/*  Every queue, with where its numbering and ranks are: its items come
    after, in slot order, and are put in rank order on reading. */
static void s_snapshot_queue(void *journal, void *value)
{
    const queue_t *queue = value;
    record_t record = {.type = RECORD_QUEUE, .state = (uint8_t) queue->state,
                       .next = queue->ledger.next, .front = queue->front, .back = queue->back,
                       .dead_back = queue->dead_back, .queue = aq_bytes_str(queue->name)};
    s_snapshot_write(journal, &record);
    if (queue->paused) {
        record = (record_t){.type = RECORD_PAUSE, .state = 1, .queue = aq_bytes_str(queue->name)};
        s_snapshot_write(journal, &record);
    }
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
        do
            self->snapshot_slot = store_each_slice(self->store, self->snapshot_slot,
                                                   SNAPSHOT_SLICE, s_snapshot_item, journal);
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
    dict_each(self->queues, s_snapshot_queue, journal);
    if (self->state.shut_down) {
        record_t record = {.type = RECORD_QUEUE, .state = QUEUE_DRAINING};
        s_snapshot_write(journal, &record);
    }
    dict_each(self->producers, s_snapshot_producer, journal);
    self->snapshot_slot = 0;
    self->snapshot_started_us = started;
    self->snapshot_slice_max_us = broker_now_us() - started;
    s_snapshot_step(self);
}

void persist_pass(broker_t *self)
{
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
        else if (s_resumed(item, wall) == ITEM_DEAD) {
            item->queue->redelivered_total++;
            broker_die(self, item, DEATH_RESTART, (aq_bytes_t){0});
        }
        else if (item->state == ITEM_DELAYED && item->attempts == 0)
            broker_move(self, item, ITEM_QUEUED); /* to the back: see state_move */
    }
    for (size_t i = collect.count; i > 0; i--) {
        item_t *item = collect.items[i - 1];
        if (item->state == ITEM_DEAD || item->state == ITEM_QUEUED
            || s_resumed(item, wall) != ITEM_QUEUED)
            continue;
        if (item->state == ITEM_INFLIGHT)
            item->queue->redelivered_total++;
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

int persist_open(broker_t *self, char *error, size_t error_size)
{
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
}
