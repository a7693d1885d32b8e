#include "persist.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "journal.h"
#include "ratelog.h"

/*  What an item's records are counted as while it lives, to tell live
    bytes from garbage: its ITEM record, near enough. */
#define ITEM_OVERHEAD (JOURNAL_HEADER + 48 + 2 + AQ_NAME_MAX)

static uint64_t s_live_size(const item_t *item)
{
    return ITEM_OVERHEAD + item->size;
}

/*  Appends a record through `add` (the journal's head, or a snapshot). */
static void s_write(journal_t *journal, uint8_t *(*add)(journal_t *, uint8_t, size_t),
                    const record_t *record)
{
    uint8_t *at = add(journal, record->type, record_size(record));
    if (at)
        record_encode(record, at);
}

static uint8_t *s_head_add(journal_t *journal, uint8_t type, size_t size)
{
    return journal_begin(journal, type, size);
}

/*  The record is written after it was applied: what it points to must
    outlive the change (a FORGET names its queue from a copy). Not inlined:
    broker_apply would save and restore this path's registers every time. */
__attribute__((noinline)) static int s_apply_written(broker_t *self, const record_t *record, state_effects_t *effects)
{
    uint64_t gone = 0;
    if (self->journal && record->type == RECORD_GONE) {
        const item_t *item =
            record->item_ref ? record->item_ref : store_find(self->store, record->id);
        gone = item ? s_live_size(item) : 0;
    }
    int rc = state_apply(&self->state, record, effects);
    if (rc)
        return rc;
    if (self->journal) {
        s_write(self->journal, s_head_add, record);
        journal_end(self->journal);
        if (record->type == RECORD_ITEM)
            self->live_bytes += s_live_size(effects->item);
        else
            self->live_bytes = self->live_bytes > gone ? self->live_bytes - gone : 0;
    }
    if (self->on_record)
        self->on_record(self->on_record_ctx, record);
    return 0;
}

/*  In memory, with no hook, the record is only applied: a call straight on
    (three per item, each saving the journal's bookkeeping around it). */
int broker_apply(broker_t *self, const record_t *record, state_effects_t *effects)
{
    if (!self->journal && !self->on_record)
        return state_apply(&self->state, record, effects);
    return s_apply_written(self, record, effects);
}

int persist_accepting(const broker_t *self)
{
    return !self->journal || journal_error(self->journal) == 0;
}

uint64_t persist_appended(const broker_t *self)
{
    return self->journal ? journal_appended(self->journal) : 0;
}

uint64_t persist_position(const producer_t *producer)
{
    return producer->journal_position;
}

int persist_is_confirmed(const broker_t *self, uint64_t position)
{
    return !self->journal
           || (!journal_broken(self->journal) && journal_confirmed(self->journal) >= position);
}

const char *persist_mode(const broker_t *self)
{
    if (!self->journal)
        return "memory";
    switch (self->config.fsync) {
    case JOURNAL_FSYNC_ALWAYS: return "always";
    case JOURNAL_FSYNC_INTERVAL: return "interval";
    default: return "never";
    }
}

void persist_wait(broker_t *self, producer_t *producer)
{
    if (!list_linked(&producer->durable_link))
        list_push_back(&self->durable_waits, &producer->durable_link);
}

/* ------------------------------------------------------ held answers */

/*  An answer waiting for the records before it: its frames encoded as
    `u32 size | bytes`, one after the other. */
typedef struct {
    list_node_t link;
    uint64_t position;
    uint8_t routing_id[256];
    size_t routing_id_size;
    size_t frames;
    size_t size;
    uint8_t data[];
} held_reply_t;

/*  At most this much waits at once: past it, answers are refused (429)
    rather than kept without bound while a disk is full. */
#define HELD_REPLY_BYTES_MAX (64u << 20)

typedef struct {
    uint8_t *at;   /* NULL: only count */
    size_t size;
    size_t frames;
} frame_writer_t;

static int s_write_frame(void *ctx, const void *data, size_t size, int more, int is_payload)
{
    (void) more, (void) is_payload;
    frame_writer_t *writer = ctx;
    if (writer->at) {
        aq_put_u32(writer->at + writer->size, (uint32_t) size);
        if (size)
            memcpy(writer->at + writer->size + 4, data, size);
    }
    writer->size += 4 + size;
    writer->frames++;
    return 0;
}

/*  Whether the journal holds every record up to `position` as promised;
    -1 if it never will (a sync failed). */
static int s_reached(const broker_t *self, uint64_t position)
{
    if (!self->journal)
        return 1;
    if (journal_broken(self->journal))
        return -1;
    return journal_confirmed(self->journal) >= position;
}

static void s_send_held(broker_t *self, held_reply_t *held, int reached)
{
    aq_bytes_t *frames = malloc(held->frames * sizeof *frames);
    aq_bytes_t routing_id = {held->routing_id, held->routing_id_size};
    aq_msg_t msg;
    if (frames) {
        const uint8_t *at = held->data;
        for (size_t i = 0; i < held->frames; i++) {
            frames[i] = (aq_bytes_t){at + 4, aq_get_u32(at)};
            at += 4 + frames[i].size;
        }
        if (aq_msg_decode(&msg, frames, held->frames) == AQ_OK) {
            if (reached > 0)
                broker_send(self, routing_id, &msg, NULL);
            else
                broker_send_error(self, routing_id, AQ_STORAGE, msg.tag, msg.queue,
                                  "the broker could not sync its journal: this change may not "
                                  "survive a restart");
        }
    }
    free(frames);
    self->held_reply_bytes -= held->size;
    list_remove(&held->link);
    free(held);
}

static void s_answer_held(broker_t *self)
{
    list_node_t *node;
    while ((node = list_first(&self->held_replies))) {
        held_reply_t *held = list_entry(node, held_reply_t, link);
        int reached = s_reached(self, held->position);
        if (!reached)
            break;
        s_send_held(self, held, reached);
    }
}

void persist_reply(broker_t *self, aq_bytes_t routing_id, const aq_msg_t *msg)
{
    uint64_t position = persist_appended(self);
    if (list_empty(&self->held_replies) && s_reached(self, position) > 0) {
        broker_send(self, routing_id, msg, NULL);
        return;
    }
    frame_writer_t writer = {0};
    aq_msg_emit(msg, s_write_frame, &writer);
    held_reply_t *held = NULL;
    if (self->held_reply_bytes + writer.size <= HELD_REPLY_BYTES_MAX)
        held = malloc(sizeof *held + writer.size);
    if (!held) {
        broker_send_error(self, routing_id, AQ_LIMIT, msg->tag, msg->queue,
                          "too many answers are waiting for the journal's disk");
        return;
    }
    held->position = position;
    memcpy(held->routing_id, routing_id.data, routing_id.size);
    held->routing_id_size = routing_id.size;
    held->frames = writer.frames;
    held->size = writer.size;
    writer = (frame_writer_t){.at = held->data};
    aq_msg_emit(msg, s_write_frame, &writer);
    list_push_back(&self->held_replies, &held->link);
    self->held_reply_bytes += held->size;
}

/*  Answers the SYNCs that waited for the disk, as far as it now allows. */
static void s_answer_waits(broker_t *self)
{
    s_answer_held(self);
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

static uint8_t *s_snapshot_add(journal_t *journal, uint8_t type, size_t size)
{
    return journal_snapshot_add(journal, type, size);
}

/*  An item as one ITEM record: where it is now. */
static void s_item_record(const item_t *item, record_t *record)
{
    *record = (record_t){.type = RECORD_ITEM, .id = item->id, .seq = item->seq,
                         .rank = item->rank, .state = item->state,
                         .attempts = item->attempts, .lease_ms = item->lease_ms,
                         .queue = aq_bytes_str(item->queue->name),
                         .payload = {item->data, item->size}};
    if (item->state == ITEM_DELAYED)
        record->until_ms = item->until_ms, record->rank = 0;
}

static void s_snapshot_item(void *journal, item_t *item)
{
    record_t record;
    s_item_record(item, &record);
    s_write(journal, s_snapshot_add, &record);
}

static void s_snapshot_producer(void *journal, void *value)
{
    const producer_t *producer = value;
    record_t record = {.type = RECORD_PRODUCER, .next = producer->next_seq,
                       .producer = aq_bytes_str(producer->id),
                       .key = aq_bytes_str(producer->key)};
    s_write(journal, s_snapshot_add, &record);
}

/*  Every queue, with where its numbering and ranks are: its items come
    after, in slot order, and are put in rank order on reading. */
static void s_snapshot_queue(void *journal, void *value)
{
    const queue_t *queue = value;
    record_t record = {.type = RECORD_QUEUE, .state = (uint8_t) queue->state,
                       .next = queue->ledger.next, .front = queue->front, .back = queue->back,
                       .dead_back = queue->dead_back, .queue = aq_bytes_str(queue->name)};
    s_write(journal, s_snapshot_add, &record);
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
        s_write(journal, s_snapshot_add, &record);
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
    int was = journal_error(self->journal);
    int error = journal_flush(self->journal, broker_now_ms());
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

/*  By rank, oldest first (a delayed item has none: id order). */
static int s_by_rank(const void *a, const void *b)
{
    const item_t *x = *(item_t *const *) a, *y = *(item_t *const *) b;
    int64_t p = x->state == ITEM_DELAYED ? 0 : x->rank, q = y->state == ITEM_DELAYED ? 0 : y->rank;
    if (p != q)
        return (p > q) - (p < q);
    return (x->id > y->id) - (x->id < y->id);
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
    timers, and those that ran out while the broker was down go back to
    the front too. */
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
            broker_move(self, item, ITEM_DEAD);
        }
    }
    for (size_t i = collect.count; i > 0; i--) {
        item_t *item = collect.items[i - 1];
        if (item->state == ITEM_DEAD || s_resumed(item, wall) != ITEM_QUEUED)
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
    *(uint64_t *) ctx += s_live_size(item);
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
    /* Answers still waiting are not sent: the broker is going away, and
       its clients ask again of the next one. */
    list_node_t *node;
    while ((node = list_first(&self->held_replies))) {
        held_reply_t *held = list_entry(node, held_reply_t, link);
        self->held_reply_bytes -= held->size;
        list_remove(node);
        free(held);
    }
    journal_close(&self->journal);
}
