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
#define ITEM_OVERHEAD (JOURNAL_HEADER + 40 + 2 + AQ_NAME_MAX)

static int64_t s_wall_ms(void)
{
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    return (int64_t) now.tv_sec * 1000 + now.tv_nsec / 1000000;
}

static uint64_t s_live_size(const item_t *item)
{
    return ITEM_OVERHEAD + item->size;
}

/*  Until when a delayed item waits, on the wall clock (monotonic time
    does not survive a reboot). */
static uint64_t s_until_wall(const item_t *item)
{
    if (item->state != ITEM_DELAYED)
        return 0;
    int64_t left = item->timer.at - broker_now_ms();
    return (uint64_t) (s_wall_ms() + (left > 0 ? left : 0));
}

static uint8_t *s_put_name(uint8_t *at, const char *name, size_t length)
{
    *at++ = (uint8_t) length;
    memcpy(at, name, length);
    return at + length;
}

/*  The fields a STATE record holds, and an ITEM record starts with. */
#define STATE_SIZE (8 + 8 + 1 + 2 + 8)

static uint8_t *s_put_state(uint8_t *at, const item_t *item)
{
    aq_put_u64(at, item->id);
    aq_put_u64(at + 8, item->seq);
    at[16] = item->state;
    at[17] = (uint8_t) (item->attempts >> 8);
    at[18] = (uint8_t) item->attempts;
    aq_put_u64(at + 19, s_until_wall(item));
    return at + STATE_SIZE;
}

/*  Writes an ITEM record through `add` (the journal's head, or a snapshot). */
static void s_item_record(journal_t *journal, uint8_t *(*add)(journal_t *, uint8_t, size_t),
                          const item_t *item, const char *producer, uint64_t pseq)
{
    size_t queue_length = strlen(item->queue->name), producer_length = strlen(producer);
    size_t size = STATE_SIZE + 4 + 8 + 1 + queue_length + 1 + producer_length + item->size;
    uint8_t *at = add(journal, PERSIST_ITEM, size);
    if (!at)
        return;
    at = s_put_state(at, item);
    aq_put_u32(at, item->lease_ms);
    aq_put_u64(at + 4, pseq);
    at = s_put_name(at + 12, item->queue->name, queue_length);
    at = s_put_name(at, producer, producer_length);
    if (item->size)
        memcpy(at, item->data, item->size);
}

static uint8_t *s_head_add(journal_t *journal, uint8_t type, size_t size)
{
    return journal_begin(journal, type, size);
}

void persist_item_added(broker_t *self, const item_t *item, producer_t *producer,
                        uint64_t pseq)
{
    if (!self->journal)
        return;
    s_item_record(self->journal, s_head_add, item, producer->id, pseq);
    journal_end(self->journal);
    self->live_bytes += s_live_size(item);
    producer->journal_position = journal_appended(self->journal);
}

void persist_item_changed(broker_t *self, const item_t *item)
{
    if (!self->journal)
        return;
    uint8_t *at = journal_begin(self->journal, PERSIST_STATE, STATE_SIZE);
    if (!at)
        return;
    s_put_state(at, item);
    journal_end(self->journal);
}

void persist_item_gone(broker_t *self, const item_t *item)
{
    if (!self->journal)
        return;
    uint8_t *at = journal_begin(self->journal, PERSIST_GONE, 8);
    if (!at)
        return;
    aq_put_u64(at, item->id);
    journal_end(self->journal);
    uint64_t size = s_live_size(item);
    self->live_bytes = self->live_bytes > size ? self->live_bytes - size : 0;
}

static void s_producer_record(journal_t *journal, uint8_t *(*add)(journal_t *, uint8_t, size_t),
                              const producer_t *producer)
{
    size_t id = strlen(producer->id), key = strlen(producer->key);
    uint8_t *at = add(journal, PERSIST_PRODUCER, 8 + 1 + id + key);
    if (!at)
        return;
    aq_put_u64(at, producer->next_seq);
    at = s_put_name(at + 8, producer->id, id);
    memcpy(at, producer->key, key);
}

void persist_producer(broker_t *self, const producer_t *producer)
{
    if (!self->journal)
        return;
    s_producer_record(self->journal, s_head_add, producer);
    journal_end(self->journal);
}

static void s_queue_record(journal_t *journal, uint8_t *(*add)(journal_t *, uint8_t, size_t),
                           const char *name, uint8_t state)
{
    size_t length = strlen(name);
    uint8_t *at = add(journal, PERSIST_QUEUE, 1 + length);
    if (!at)
        return;
    at[0] = state;
    memcpy(at + 1, name, length);
}

void persist_queue(broker_t *self, const queue_t *queue)
{
    if (!self->journal)
        return;
    s_queue_record(self->journal, s_head_add, queue ? queue->name : "",
                   queue ? (uint8_t) queue->state : (uint8_t) QUEUE_DRAINING);
    journal_end(self->journal);
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

static void s_snapshot_item(void *journal, item_t *item)
{
    s_item_record(journal, s_snapshot_add, item, "", 0);
}

static void s_snapshot_producer(void *journal, void *value)
{
    s_producer_record(journal, s_snapshot_add, value);
}

static void s_snapshot_queue(void *journal, void *value)
{
    const queue_t *queue = value;
    if (queue->state != QUEUE_OPEN)
        s_queue_record(journal, s_snapshot_add, queue->name, (uint8_t) queue->state);
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
    journal_snapshot_add(journal, PERSIST_RESET, 0);
    if (self->shut_down)
        s_queue_record(journal, s_snapshot_add, "", (uint8_t) QUEUE_DRAINING);
    dict_each(self->queues, s_snapshot_queue, journal);
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
    const uint8_t *at;
    size_t left;
    int ok;
} reader_t;

/*  The next n bytes, or NULL (and the record unreadable) if it is shorter. */
static const uint8_t *s_take(reader_t *r, size_t n)
{
    if (!r->ok || r->left < n) {
        r->ok = 0;
        return NULL;
    }
    const uint8_t *at = r->at;
    r->at += n;
    r->left -= n;
    return at;
}

static uint64_t s_read_u64(reader_t *r)
{
    const uint8_t *at = s_take(r, 8);
    return at ? aq_get_u64(at) : 0;
}

static uint32_t s_read_u32(reader_t *r)
{
    const uint8_t *at = s_take(r, 4);
    return at ? aq_get_u32(at) : 0;
}

static unsigned s_read_byte(reader_t *r)
{
    const uint8_t *at = s_take(r, 1);
    return at ? *at : 0;
}

static aq_bytes_t s_read_name(reader_t *r)
{
    size_t length = s_read_byte(r);
    const uint8_t *at = s_take(r, length);
    return at ? (aq_bytes_t){at, length} : (aq_bytes_t){0};
}

typedef struct {
    uint64_t id, seq, until;
    uint8_t state;
    uint16_t attempts;
} state_t;

/*  The fields s_put_state wrote; 0 if they are not there or not valid. */
static int s_read_state(reader_t *r, state_t *state)
{
    state->id = s_read_u64(r);
    state->seq = s_read_u64(r);
    state->state = (uint8_t) s_read_byte(r);
    state->attempts = (uint16_t) (s_read_byte(r) << 8);
    state->attempts |= (uint16_t) s_read_byte(r);
    state->until = s_read_u64(r);
    return r->ok && state->state >= ITEM_QUEUED && state->state <= ITEM_DEAD;
}

static void s_set_state(item_t *item, const state_t *state)
{
    item->seq = state->seq;
    item->state = state->state;
    item->attempts = state->attempts;
    item->timer.at = (int64_t) state->until; /* wall clock until the queues are built */
}

typedef struct {
    broker_t *broker;
    uint64_t records;
    uint64_t skipped;     /* records that do not parse, or name what no longer exists */
    int64_t started_ms;
} replay_t;

static void s_remove_item(void *ctx, item_t *item)
{
    broker_t *self = ctx;
    store_remove(self->store, item);
}

/*  A RESET: what was read so far is replaced by the snapshot that follows. */
static void s_reset(broker_t *self)
{
    store_each(self->store, s_remove_item, self);
    self->shut_down = 0;
}

static void s_replay_item(replay_t *replay, reader_t *r)
{
    broker_t *self = replay->broker;
    state_t state;
    int valid = s_read_state(r, &state);
    uint32_t lease = s_read_u32(r);
    uint64_t pseq = s_read_u64(r);
    aq_bytes_t queue_name = s_read_name(r), producer_name = s_read_name(r);
    if (!valid || !r->ok || queue_name.size == 0) {
        replay->skipped++;
        return;
    }
    aq_status_t status;
    queue_t *queue = broker_queue(self, queue_name, 1, &status);
    item_t *item = store_find(self->store, state.id);
    if (!item)
        item = store_claim(self->store, state.id);
    if (!queue || !item || store_set_payload(item, r->at, r->left)) {
        replay->skipped++;
        return;
    }
    s_set_state(item, &state);
    item->lease_ms = lease;
    item->queue = queue;
    if (producer_name.size && pseq) {
        producer_t *producer = producers_get(self, producer_name);
        if (!producer)
            producer = producers_open(self, producer_name, "");
        if (producer && producer->next_seq <= pseq)
            producer->next_seq = pseq + 1;
    }
}

static void s_replay_state(replay_t *replay, reader_t *r)
{
    state_t state;
    item_t *item = s_read_state(r, &state) ? store_find(replay->broker->store, state.id) : NULL;
    if (!item) {
        replay->skipped++;
        return;
    }
    s_set_state(item, &state);
}

static void s_replay_producer(replay_t *replay, reader_t *r)
{
    broker_t *self = replay->broker;
    uint64_t next = s_read_u64(r);
    aq_bytes_t id = s_read_name(r);
    char key[AUTH_KEY_SIZE + 1];
    if (!r->ok || id.size == 0 || !aq_name_is_valid(id.data, id.size) || r->left >= sizeof key) {
        replay->skipped++;
        return;
    }
    memcpy(key, r->at, r->left);
    key[r->left] = '\0';
    producer_t *producer = producers_get(self, id);
    if (!producer)
        producer = producers_open(self, id, key);
    if (!producer)
        return;
    snprintf(producer->key, sizeof producer->key, "%s", key);
    if (producer->next_seq < next)
        producer->next_seq = next;
}

static void s_replay_queue(replay_t *replay, reader_t *r)
{
    broker_t *self = replay->broker;
    unsigned state = s_read_byte(r);
    if (!r->ok || state > QUEUE_DISCARDING) {
        replay->skipped++;
        return;
    }
    if (r->left == 0) {
        self->shut_down = 1;
        return;
    }
    aq_status_t status;
    queue_t *queue = broker_queue(self, (aq_bytes_t){r->at, r->left}, 1, &status);
    if (queue && state > queue->state)
        queue->state = (queue_state_t) state;
}

static void s_on_record(void *ctx, uint8_t type, const uint8_t *body, size_t size)
{
    replay_t *replay = ctx;
    reader_t r = {body, size, 1};
    replay->records++;
    switch (type) {
    case PERSIST_ITEM: s_replay_item(replay, &r); break;
    case PERSIST_STATE: s_replay_state(replay, &r); break;
    case PERSIST_GONE: {
        item_t *item = store_find(replay->broker->store, s_read_u64(&r));
        if (item && r.ok)
            store_remove(replay->broker->store, item);
        break;
    }
    case PERSIST_PRODUCER: s_replay_producer(replay, &r); break;
    case PERSIST_QUEUE: s_replay_queue(replay, &r); break;
    case PERSIST_RESET: s_reset(replay->broker); break;
    default: replay->skipped++;
    }
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

static void s_collect(void *ctx, item_t *item)
{
    collect_t *collect = ctx;
    collect->items[collect->count++] = item;
}

/*  Queue order is seq order: an item's seq is where it stands. */
static int s_by_seq(const void *a, const void *b)
{
    const item_t *x = *(item_t *const *) a, *y = *(item_t *const *) b;
    return (x->seq > y->seq) - (x->seq < y->seq);
}

/*  Puts each recovered item where it belongs, in seq order: queued (in
    flight before the restart: its session is gone), delayed with the time
    it had left, or dead. */
static int s_build(broker_t *self)
{
    collect_t collect = {calloc(store_count(self->store) + 1, sizeof(item_t *)), 0};
    if (!collect.items || deadlines_reserve(&self->deadlines, store_count(self->store) + 64)) {
        free(collect.items);
        return -1;
    }
    store_each(self->store, s_collect, &collect);
    qsort(collect.items, collect.count, sizeof *collect.items, s_by_seq);
    int64_t now_ms = broker_now_ms(), wall = s_wall_ms(), now_us = broker_now_us();
    int rc = 0;
    for (size_t i = 0; i < collect.count; i++) {
        item_t *item = collect.items[i];
        queue_t *queue = item->queue;
        int64_t until = item->timer.at;
        deadline_init(&item->timer, 0);
        item->accepted_us = now_us;
        int dead = item->state == ITEM_DEAD
                   || (queue->max_attempts && item->attempts >= queue->max_attempts);
        if (dead) {
            item->state = ITEM_DEAD;
            list_push_back(&queue->dead, &item->link);
            queue->dead_count++;
            continue;
        }
        if (ledger_open_at(&queue->ledger, item->seq)) {
            rc = -1;
            item->state = ITEM_DEAD; /* out of memory: kept, never lost */
            list_push_back(&queue->dead, &item->link);
            queue->dead_count++;
            continue;
        }
        if (item->state == ITEM_DELAYED && until > wall) {
            item->timer.kind = TIMER_DELAY;
            deadlines_set(&self->deadlines, &item->timer, now_ms + (until - wall));
            queue->delayed_count++;
            continue;
        }
        item->state = ITEM_QUEUED;
        list_push_back(&queue->ready, &item->link);
        queue->ready_count++;
        queue->put_total++;
        broker_touch_queue(self, queue);
    }
    free(collect.items);
    return rc;
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
    replay_t replay = {self, 0, 0, broker_now_ms()};
    journal_status_t status;
    self->journal = journal_open(&config, s_on_record, &replay, s_on_progress, &status, error,
                                 error_size);
    if (!self->journal)
        return (int) status;
    if (store_claims_done(self->store) || s_build(self)) {
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
