/*  What every part of the broker shares, below the handlers: the clock,
    sending (counted against what a session has read), queues made with
    their limits and owners, the one way the replicated state changes
    (broker_apply: state_apply, then the journal) and the answers that wait
    for the journal. Nothing here calls a handler, the sessions or the
    server: it is the layer they all stand on (DESIGN.md, "Layers"). */
#include "broker.h"

#include <signal.h>

#include <czmq.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "journal.h"
#include "producers.h"
#include "sessions.h"

/* --------------------------------------------------------------- clock */

/*  Tests move the broker's clock forward instead of waiting (the fuzzer
    lets leases and time-outs run out). */
static int64_t s_clock_offset_ms;

int64_t broker_now_ms(void)
{
    return zclock_mono() + s_clock_offset_ms;
}

int64_t broker_now_us(void)
{
    return zclock_usecs() + s_clock_offset_ms * 1000;
}

uint64_t broker_retry_delay_ms(broker_t *self, const queue_t *queue, uint64_t attempts)
{
    if (!queue->retry_first_ms)
        return 0;
    uint64_t delay = queue->retry_first_ms;
    for (uint64_t n = 1; n < attempts && delay < queue->retry_max_ms; n++)
        delay = delay > UINT64_MAX / queue->retry_factor ? UINT64_MAX : delay * queue->retry_factor;
    if (delay > queue->retry_max_ms)
        delay = queue->retry_max_ms;
    /* Equal jitter: half of it, and up to the other half at random, so that
       items failed together do not all come back together. */
    uint64_t x = self->random ? self->random : 0x9e3779b97f4a7c15ULL;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    self->random = x;
    return delay - delay / 2 + (delay / 2 ? x % (delay / 2 + 1) : 0);
}

int64_t broker_wall_ms(void)
{
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    return (int64_t) now.tv_sec * 1000 + now.tv_nsec / 1000000 + s_clock_offset_ms;
}

uint64_t broker_age_us(const item_t *item, int64_t now_us)
{
    return now_us > item->accepted_us ? (uint64_t) (now_us - item->accepted_us) : 0;
}

void broker_clock_advance(int64_t ms)
{
    s_clock_offset_ms += ms;
}

/* ------------------------------------------------------------- sending */

/*  Sums a message's frame sizes. */
static int s_count_frame(void *ctx, const void *data, size_t size, int more, int bulk)
{
    (void) data, (void) more, (void) bulk;
    *(size_t *) ctx += size;
    return 0;
}

/*  Dropped once the message in hand is handled, not here: the sender may
    be walking a list that dropping changes (a queue's joiners, when a
    shutdown answers them). */
void broker_doom_unread(broker_t *self, peer_t *peer, uint64_t unread)
{
    if (peer->doomed || peer->dropped)
        return;
    char name[AQ_NAME_MAX * 4 + 1];
    ratelog_line(&self->bad_input, broker_now_ms(),
                 "%s: %llu bytes of replies not read (--max-pending %llu): closed",
                 log_escape(name, sizeof name, peer->client_id, strlen(peer->client_id)),
                 (unsigned long long) unread, (unsigned long long) self->config.max_pending);
    peer->doomed = 1;
    peer->doom_reason = "does not read its replies";
    peer->doom_close = 1;
    list_push_back(&self->doomed_peers, &peer->doomed_link);
}

void broker_doom_peer(broker_t *self, peer_t *peer, const char *reason)
{
    if (peer->doomed || peer->dropped)
        return;
    peer->doomed = 1;
    peer->doom_reason = reason;
    peer->doom_close = 0;
    list_push_back(&self->doomed_peers, &peer->doomed_link);
    if (peer->consumer.queue) /* offered nothing more */
        queue_set_credit(peer->consumer.queue, &peer->consumer, 0);
}

/*  Replies unread beyond this many times --max-pending close a session at
    once, whatever its heartbeats say: what one session can make the
    broker hold. */
#define UNREAD_HARD_FACTOR 4

/*  The replies a session has not read are those sent after the last
    HEARTBEAT it answered. Past --max-pending of them it is asked at once,
    by an extra HEARTBEAT (a probe); it is closed only if it has not
    answered the probe one heartbeat interval later (s_probe_sessions), or
    if its unread replies pass UNREAD_HARD_FACTOR × --max-pending. So a
    client that reads its replies as they come is not closed for however
    many it is sent. Deliveries (bounded by credit) and heartbeats do not
    count; a reply ZeroMQ refused (its queue to the peer full) was not
    sent and does not count either. */
static void s_count_reply(broker_t *self, peer_t *peer, const aq_msg_t *msg)
{
    if (msg->cmd == AQ_CMD_ITEM || msg->cmd == AQ_CMD_ITEMS || msg->cmd == AQ_CMD_HEARTBEAT)
        return;
    size_t bytes = 0;
    aq_msg_emit(msg, s_count_frame, &bytes);
    peer->reply_bytes += bytes;
    uint64_t unread = peer->reply_bytes - peer->read_bytes;
    if (unread <= self->config.max_pending)
        return;
    if (peer->probe_beat && peer->read_bytes >= peer->beat_bytes[peer->probe_beat % PEER_BEATS])
        peer->probe_beat = 0; /* answered: read, but more came since */
    if (!peer->probe_beat && unread <= self->config.max_pending * UNREAD_HARD_FACTOR) {
        aq_msg_t heartbeat = {.cmd = AQ_CMD_HEARTBEAT, .beat = peer->beat + 1};
        aq_bytes_t rid = {peer->routing_id, peer->routing_id_size};
        /* A probe ZeroMQ cannot take now (its queue full) is tried again
           with the next reply. */
        if (self->send(self->send_ctx, rid, &heartbeat, NULL) == AQ_OK) {
            peer->beat++;
            peer->beat_bytes[peer->beat % PEER_BEATS] = peer->reply_bytes;
            peer->probe_beat = peer->beat;
            peer->probe_ms = broker_now_ms();
        }
        return;
    }
    if (unread > self->config.max_pending * UNREAD_HARD_FACTOR)
        broker_doom_unread(self, peer, unread);
}

aq_status_t broker_send(broker_t *self, aq_bytes_t routing_id, const aq_msg_t *msg,
                        zmq_msg_t *bulk)
{
    aq_status_t rc = self->send(self->send_ctx, routing_id, msg, bulk);
    if (rc == AQ_OK) {
        peer_t *peer = dict_get(self->peers, routing_id.data, routing_id.size);
        if (peer && !peer->dropped)
            s_count_reply(self, peer, msg);
    }
    return rc;
}

void broker_send_error(broker_t *self, aq_bytes_t routing_id, int code, aq_bytes_t tag,
                       aq_bytes_t subject, const char *text)
{
    aq_msg_t msg = {.cmd = AQ_CMD_ERROR};
    msg.code = (uint64_t) code;
    msg.name = aq_bytes_str(aq_status_name(code));
    msg.tag = tag.size <= AQ_TAG_MAX ? tag : (aq_bytes_t){0};
    msg.subject = subject;
    msg.text = aq_text_cut(text ? text : aq_strerror(code), AQ_TEXT_MAX);
    /* A peer that is gone or too slow to read its errors loses them. */
    broker_send(self, routing_id, &msg, NULL);
}

void broker_touch_queue(broker_t *self, queue_t *queue)
{
    queue->last_active_ms = broker_now_ms();
    if (!list_linked(&queue->dirty_link))
        list_push_back(&self->dirty, &queue->dirty_link);
}

queue_t *broker_queue(broker_t *self, aq_bytes_t name, int create, aq_status_t *status)
{
    *status = AQ_OK;
    queue_t *queue = dict_get(self->queues, name.data, name.size);
    if (queue || !create)
        return queue;
    if (create != BROKER_QUEUE_UNLIMITED && dict_size(self->queues) >= self->config.max_queues) {
        *status = AQ_LIMIT;
        return NULL;
    }
    char text[AQ_NAME_MAX + 1];
    memcpy(text, name.data, name.size);
    text[name.size] = '\0';
    uint64_t lease_ms = self->config.lease_ms;
    for (size_t i = 0; i < self->config.queue_lease_count; i++)
        if (strcmp(self->config.queue_leases[i].queue, text) == 0)
            lease_ms = self->config.queue_leases[i].lease_ms;
    retry_t retry = self->config.retry;
    for (size_t i = 0; i < self->config.queue_retry_count; i++)
        if (strcmp(self->config.queue_retries[i].queue, text) == 0)
            retry = self->config.queue_retries[i].retry;
    queue = queue_new(text, self->config.maxsize, self->config.max_attempts, lease_ms);
    if (queue) {
        queue->retry_first_ms = retry.first_ms;
        queue->retry_max_ms = retry.max_ms;
        queue->retry_factor = retry.factor;
    }
    if (!queue || dict_set(self->queues, name.data, name.size, queue)) {
        queue_destroy(&queue);
        *status = AQ_INTERNAL;
        return NULL;
    }
    queue->last_active_ms = broker_now_ms();
    queue->serial = ++self->next_serial;
    if (self->state.shut_down)
        queue->state = QUEUE_DRAINING; /* exists only to answer: refuses puts */
    return queue;
}

/* ------------------------------------------------------- limits, joins */

/*  What a client without the admin role may use of a broker-wide limit:
    the last tenth is kept for admin clients. */
uint64_t broker_unreserved(uint64_t limit)
{
    return limit - limit / 10;
}

int broker_is_admin(const peer_t *peer)
{
    return peer && (peer->grant.roles & ROLE_ADMIN);
}

/*  The per-key limits apply to this session: it has a share counted, and
    it is not an admin key (without keys every client has every role, and
    the limits count per host). */
int broker_counts_limits(const broker_t *self, const peer_t *peer)
{
    return peer && peer->owner
           && !(broker_is_admin(peer) && self->auth && auth_enabled(self->auth));
}

queue_t *broker_queue_for(broker_t *self, aq_bytes_t name, const peer_t *peer,
                          aq_status_t *status, const char **text)
{
    queue_t *queue = broker_queue(self, name, 0, status);
    if (queue)
        return queue;
    static char why[160];
    *text = why;
    if (peer && !broker_is_admin(peer)
        && dict_size(self->queues) >= broker_unreserved(self->config.max_queues)) {
        *status = AQ_LIMIT;
        snprintf(why, sizeof why,
                 "too many queues (--max-queues %llu; the last tenth is kept for admin clients)",
                 (unsigned long long) self->config.max_queues);
        return NULL;
    }
    if (broker_counts_limits(self, peer) && peer->owner->queues >= self->config.max_queues_per_key) {
        *status = AQ_LIMIT;
        snprintf(why, sizeof why, "too many queues made by this key (--max-queues-per-key %llu)",
                 (unsigned long long) self->config.max_queues_per_key);
        return NULL;
    }
    queue = broker_queue(self, name, 1, status);
    if (!queue) {
        snprintf(why, sizeof why, "%s", *status == AQ_LIMIT ? "too many queues (--max-queues)"
                                                             : "cannot create the queue");
        return NULL;
    }
    if (peer && peer->owner) {
        queue->owner = peer->owner;
        queue->owner->queues++;
    }
    return queue;
}

/*  Appends to `out` (of `size`, `*used` used): 0, or -1 if it is full. */
static int s_append(char *out, size_t size, size_t *used, const char *text, size_t length)
{
    if (length >= size - *used)
        return -1;
    memcpy(out + *used, text, length);
    *used += length;
    out[*used] = '\0';
    return 0;
}

int broker_service_field(broker_t *self, const char *replicas)
{
    char brokers[AQ_TEXT_MAX] = "", groups[AQ_TEXT_MAX] = "";
    size_t b = 0, g = 0;
    int grouped = 0, rc = 0;
    const char *at = self->config.service ? self->config.service : "";
    for (unsigned shard = 0; *at; shard++) {
        size_t length = strcspn(at, ",");
        const char *entry = at;
        at += length + (at[length] == ',');
        grouped |= memchr(entry, '|', length) != NULL;
        rc |= s_append(brokers, sizeof brokers, &b, ",", b ? 1 : 0);
        rc |= s_append(brokers, sizeof brokers, &b, entry, strcspn(entry, "|,"));
        rc |= s_append(groups, sizeof groups, &g, ",", shard ? 1 : 0);
        if (shard != self->config.shard || !replicas) {
            rc |= s_append(groups, sizeof groups, &g, entry, length);
            continue;
        }
        grouped |= strchr(replicas, ',') != NULL;
        for (const char *r = replicas; *r;) { /* its members now, '|' between */
            size_t n = strcspn(r, ",");
            rc |= s_append(groups, sizeof groups, &g, "|", r != replicas ? 1 : 0);
            rc |= s_append(groups, sizeof groups, &g, r, n);
            r += n + (r[n] == ',');
        }
    }
    int length = snprintf(self->service, sizeof self->service, "shard=%u%s%s brokers=%s%s%s",
                          (unsigned) self->config.shard, replicas ? " replicas=" : "",
                          replicas ? replicas : "", brokers, grouped ? " groups=" : "",
                          grouped ? groups : "");
    return rc || length < 0 || (size_t) length >= sizeof self->service ? -1 : 0;
}

void broker_queue_forgotten(broker_t *self, queue_t *queue)
{
    if (!queue->owner)
        return;
    queue->owner->queues--;
    auth_owner_release(self->owners, queue->owner);
    queue->owner = NULL;
}

void broker_peer_forgotten(broker_t *self, peer_t *peer)
{
    self->plain_sessions -= (uint64_t) peer->plain;
    peer->plain = 0;
    if (!peer->owner)
        return;
    peer->owner->sessions--;
    auth_owner_release(self->owners, peer->owner);
    peer->owner = NULL;
}

void broker_free_joiner(broker_t *self, joiner_t *joiner)
{
    deadlines_cancel(&self->deadlines, &joiner->deadline);
    if (joiner->peer) {
        list_remove(&joiner->peer_link);
        joiner->peer->join_count--;
        if (joiner->peer->owner) /* its session holds the owner: not released here */
            joiner->peer->owner->joins--;
    }
    self->joiner_count--;
    free(joiner);
}

uint64_t broker_lease_ms(const item_t *item)
{
    return item->lease_ms ? item->lease_ms : item->queue->lease_ms;
}

/* --------------------------------------------------------- the journal */

/*  What an item's records are counted as while it lives, to tell live
    bytes from garbage: its ITEM record, near enough. */
#define ITEM_OVERHEAD (JOURNAL_HEADER + 48 + 2 + AQ_NAME_MAX)

uint64_t broker_log_size(const item_t *item)
{
    return ITEM_OVERHEAD + item->size;
}

/*  Room for a record of `size` bytes of body in the pass's entry. */
static uint8_t *s_entry_begin(broker_t *self, uint8_t type, size_t size)
{
    size_t need = self->entry.size + ENTRY_RECORD_HEADER + size;
    if (need > self->entry.capacity) {
        size_t capacity = self->entry.capacity ? self->entry.capacity : 4096;
        while (capacity < need)
            capacity *= 2;
        uint8_t *data = realloc(self->entry.data, capacity);
        if (!data)
            return NULL;
        self->entry.data = data;
        self->entry.capacity = capacity;
    }
    uint8_t *at = self->entry.data + self->entry.size;
    at[0] = type;
    aq_put_u32(at + 1, (uint32_t) size);
    return at + ENTRY_RECORD_HEADER;
}

/*  The record is written after it was applied: what it points to must
    outlive the change (a FORGET names its queue from a copy). Not inlined:
    broker_apply would save and restore this path's registers every time. */
__attribute__((noinline)) static int s_apply_written(broker_t *self, const record_t *record,
                                                     state_effects_t *effects)
{
    uint64_t gone = 0;
    uint8_t *at = NULL;
    if (self->replica) {
        if (broker_follows(self)) /* its state is the group's log, applied */
            return -1;
        size_t size = record_size(record);
        uint8_t *body = s_entry_begin(self, record->type, size);
        if (!body)
            return -1;
        int rc = state_apply(&self->state, record, effects);
        if (rc)
            return rc;
        record_encode(record, body);
        self->entry.size += ENTRY_RECORD_HEADER + size;
        self->entry_end += ENTRY_RECORD_HEADER + size;
        if (self->on_record)
            self->on_record(self->on_record_ctx, record);
        return 0;
    }
    if (self->journal) {
        /* Room first: a change the journal could not hold is not made. */
        at = journal_begin(self->journal, record->type, record_size(record));
        if (!at)
            return -1;
        if (record->type == RECORD_GONE) {
            const item_t *item =
                record->item_ref ? record->item_ref : store_find(self->store, record->id);
            gone = item ? broker_log_size(item) : 0;
        }
    }
    int rc = state_apply(&self->state, record, effects);
    if (rc) {
        if (at)
            journal_abandon(self->journal);
        return rc;
    }
    if (at) {
        record_encode(record, at);
        journal_end(self->journal);
        if (record->type == RECORD_ITEM)
            self->live_bytes += broker_log_size(effects->item);
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
    if (!self->journal && !self->on_record && !self->replica)
        return state_apply(&self->state, record, effects);
    return s_apply_written(self, record, effects);
}

void broker_apply_failed(const record_t *record)
{
    /* Only the journal's buffer can fail to grow here (a move of an item
       that exists needs no other memory): going on would leave the item
       half moved. The journal holds everything before: a restart resumes
       from a state that was. */
    log_line("out of memory: the journal cannot take a record (type %u, item %llu); stopping",
             record->type, (unsigned long long) record->id);
    abort();
}

int broker_log_accepting(const broker_t *self)
{
    if (self->replica)
        return !broker_follows(self);
    return !self->journal || journal_error(self->journal) == 0;
}

int broker_log_snapshot_busy(const broker_t *self)
{
    return self->journal && journal_snapshot_busy(self->journal);
}

uint64_t broker_log_end(const broker_t *self)
{
    if (self->replica)
        return self->entry_end;
    return self->journal ? journal_appended(self->journal) : 0;
}

static int s_reached(const broker_t *self, uint64_t position);

int broker_log_reached(const broker_t *self, uint64_t position)
{
    return s_reached(self, position) > 0;
}

static volatile sig_atomic_t s_stop_asked;

void broker_ask_stop(void)
{
    s_stop_asked = 1;
}

int broker_stop_asked(void)
{
    return s_stop_asked;
}

/*  Asked and done, per kind: SIGHUP, SIGUSR1. Both start at none, so one
    asked before the loop runs (while it starts, or carried across an
    execv) is done once it does. */
static volatile sig_atomic_t s_asked[2];
static sig_atomic_t s_done[2];

static int s_asked_kind(int signal)
{
    return signal == SIGUSR1;
}

void broker_ask(int signal)
{
    s_asked[s_asked_kind(signal)]++;
}

int broker_take_asked(int signal)
{
    int kind = s_asked_kind(signal);
    if (s_done[kind] == s_asked[kind])
        return 0;
    s_done[kind] = s_asked[kind];
    return 1;
}

void broker_carry_asked(void)
{
    const int signals[] = {SIGHUP, SIGUSR1};
    for (int i = 0; i < 2; i++)
        if (broker_take_asked(signals[i]))
            raise(signals[i]);
}

void broker_caught_signals(sigset_t *set)
{
    sigemptyset(set);
    sigaddset(set, SIGINT);
    sigaddset(set, SIGTERM);
    sigaddset(set, SIGHUP);
    sigaddset(set, SIGUSR1);
}

const char *broker_persistence(const broker_t *self)
{
    if (self->replica)
        return "replicated";
    if (!self->journal)
        return "memory";
    switch (self->config.fsync) {
    case JOURNAL_FSYNC_ALWAYS: return "always";
    case JOURNAL_FSYNC_INTERVAL: return "interval";
    default: return "never";
    }
}

void broker_log_wait(broker_t *self, producer_t *producer)
{
    if (!list_linked(&producer->durable_link))
        list_push_back(&self->durable_waits, &producer->durable_link);
}

/* -------------------------------------------- answers waiting for the log */

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
} waiting_answer_t;

/*  At most this much waits at once: past it, answers are refused (429)
    rather than kept without bound while a disk is full. */
#define WAITING_ANSWER_BYTES_MAX (64u << 20)

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
    if (self->replica)
        return self->entry_committed >= position;
    if (!self->journal)
        return 1;
    if (journal_broken(self->journal))
        return -1;
    return journal_confirmed(self->journal) >= position;
}

static void s_send_answer(broker_t *self, waiting_answer_t *answer, int reached)
{
    aq_bytes_t *frames = malloc(answer->frames * sizeof *frames);
    aq_bytes_t routing_id = {answer->routing_id, answer->routing_id_size};
    aq_msg_t msg;
    if (frames) {
        const uint8_t *at = answer->data;
        for (size_t i = 0; i < answer->frames; i++) {
            frames[i] = (aq_bytes_t){at + 4, aq_get_u32(at)};
            at += 4 + frames[i].size;
        }
        if (aq_msg_decode(&msg, frames, answer->frames) == AQ_OK) {
            if (reached > 0)
                broker_send(self, routing_id, &msg, NULL);
            else
                broker_send_error(self, routing_id, AQ_STORAGE, msg.tag, msg.queue,
                                  "the broker could not sync its journal: this change may not "
                                  "survive a restart");
        }
    }
    free(frames);
    self->waiting_answer_bytes -= answer->size;
    list_remove(&answer->link);
    free(answer);
}

void broker_release_replies(broker_t *self)
{
    list_node_t *node;
    while ((node = list_first(&self->waiting_answers))) {
        waiting_answer_t *answer = list_entry(node, waiting_answer_t, link);
        int reached = s_reached(self, answer->position);
        if (!reached)
            break;
        s_send_answer(self, answer, reached);
    }
}

/*  Keeps `msg` until the records appended so far are where the mode says.
    -1 if there is no room (a reply past WAITING_ANSWER_BYTES_MAX, unless
    `unbounded`). */
static int s_wait_answer(broker_t *self, aq_bytes_t routing_id, const aq_msg_t *msg,
                         int unbounded)
{
    frame_writer_t writer = {0};
    aq_msg_emit(msg, s_write_frame, &writer);
    waiting_answer_t *answer = NULL;
    if (unbounded || self->waiting_answer_bytes + writer.size <= WAITING_ANSWER_BYTES_MAX)
        answer = malloc(sizeof *answer + writer.size);
    if (!answer)
        return -1;
    answer->position = broker_log_end(self);
    memcpy(answer->routing_id, routing_id.data, routing_id.size);
    answer->routing_id_size = routing_id.size;
    answer->frames = writer.frames;
    answer->size = writer.size;
    writer = (frame_writer_t){.at = answer->data};
    aq_msg_emit(msg, s_write_frame, &writer);
    list_push_back(&self->waiting_answers, &answer->link);
    self->waiting_answer_bytes += answer->size;
    return 0;
}

/*  Nothing waits, and every record appended so far is where the mode
    says: an answer may go at once. */
static int s_answer_now(const broker_t *self)
{
    return list_empty(&self->waiting_answers) && s_reached(self, broker_log_end(self)) > 0;
}

void broker_reply_logged(broker_t *self, aq_bytes_t routing_id, const aq_msg_t *msg)
{
    if (s_answer_now(self)) {
        broker_send(self, routing_id, msg, NULL);
        return;
    }
    if (s_wait_answer(self, routing_id, msg, 0))
        broker_send_error(self, routing_id, AQ_LIMIT, msg->tag, msg->queue,
                          "too many answers are waiting for the journal's disk");
}

aq_status_t broker_send_logged(broker_t *self, aq_bytes_t routing_id, const aq_msg_t *msg,
                               zmq_msg_t *bulk)
{
    if (!self->replica || s_answer_now(self))
        return broker_send(self, routing_id, msg, bulk);
    aq_msg_t whole = *msg;
    if (bulk)
        whole.batch = (aq_bytes_t){zmq_msg_data(bulk), zmq_msg_size(bulk)};
    return s_wait_answer(self, routing_id, &whole, 1) ? AQ_NOMEM : AQ_OK;
}

void broker_forget_replies(broker_t *self)
{
    list_node_t *node;
    while ((node = list_first(&self->waiting_answers))) {
        waiting_answer_t *held = list_entry(node, waiting_answer_t, link);
        self->waiting_answer_bytes -= held->size;
        list_remove(node);
        free(held);
    }
}
