/*  Puts, from the PULL socket: checked, attributed to their producer's
    session, put in sequence, then accepted, refused or held.

    A put for a full queue is held, with every later put of its producer
    behind it (a producer's puts go in in order); other producers, and other
    queues, go on. A held put keeps its frame (a payload, or a PUTS items
    frame) until the queue has room; a PUTS goes in as far as the room goes
    and the rest stays held, so maxsize is exact. The broker holds at most
    --window puts and --window-bytes bytes of one producer: memory for
    held puts is bounded by producers with a session times window-bytes
    (plus one message). */
#include "puts.h"
#include "producers.h"
#include "sessions.h"

#include <czmq.h>
#include <stdio.h>
#include <string.h>

/*  A put refused after it was received: its producer hears which seqs and
    why (PROTOCOL.md 4.1). */
static refusal_t s_reason(int code)
{
    switch (code) {
    case AQ_SHUT_DOWN: return REFUSED_SHUT_DOWN;
    case AQ_TOO_BIG: return REFUSED_TOO_BIG;
    case AQ_FORBIDDEN: return REFUSED_FORBIDDEN;
    case AQ_LIMIT: return REFUSED_LIMIT;
    case AQ_STORAGE: return REFUSED_STORAGE;
    case AQ_INTERNAL: return REFUSED_INTERNAL;
    default: return REFUSED_MALFORMED;
    }
}

/*  A counter that stops at its maximum instead of wrapping. */
static void s_count(uint64_t *counter, uint64_t n)
{
    *counter = n > UINT64_MAX - *counter ? UINT64_MAX : *counter + n;
}

/*  Puts first..last of the producer, for queue `queue_name`, are refused:
    counted as `counted` puts (for the queue too, if it exists: the items
    the message really carried, never what it claims), logged, and told. */
static void s_refuse(broker_t *self, producer_t *producer, aq_bytes_t queue_name, uint64_t first,
                     uint64_t last, uint64_t counted, int code, const char *text)
{
    refusal_t reason = s_reason(code);
    s_count(&self->refused_total[reason], counted);
    aq_status_t rc;
    queue_t *queue = broker_queue(self, queue_name, 0, &rc);
    if (queue)
        s_count(&queue->refused_total[reason], counted);
    char name[AQ_NAME_MAX * 4 + 1];
    ratelog_line(&self->bad_input, broker_now_ms(), "puts %llu-%llu of %s refused: %s",
                 (unsigned long long) first, (unsigned long long) last,
                 log_escape(name, sizeof name, producer->id, strlen(producer->id)), text);
    if (!producer->peer)
        return;
    char range[2 * AQ_U64_DIGITS + 2];
    size_t length = aq_format_u64(first, range);
    if (last != first) {
        range[length++] = '-';
        length += aq_format_u64(last, range + length);
    }
    broker_send_error(self, (aq_bytes_t){producer->peer->routing_id, producer->peer->routing_id_size},
                      code, (aq_bytes_t){0}, (aq_bytes_t){(const uint8_t *) range, length}, text);
}

/*  Payloads of a put in order: the one payload of a PUT, or each item of a
    PUTS; with `each`, every item's options too (in iter.options). */
typedef struct {
    int is_batch;
    aq_bytes_t single;
    aq_batch_iter_t iter;
    int done;
} payloads_t;

static void s_payloads_init(payloads_t *payloads, int is_batch, aq_bytes_t frame, int each)
{
    payloads->is_batch = is_batch;
    payloads->single = frame;
    payloads->done = 0;
    if (is_batch)
        aq_puts_iter_init(&payloads->iter, frame, each);
}

static int s_payloads_next(payloads_t *payloads, aq_bytes_t *payload)
{
    if (payloads->is_batch)
        return aq_puts_next(&payloads->iter, payload);
    if (payloads->done)
        return 0;
    payloads->done = 1;
    *payload = payloads->single;
    return 1;
}

static void s_payloads_skip(payloads_t *payloads, uint64_t count)
{
    aq_bytes_t ignored;
    for (uint64_t i = 0; i < count; i++)
        s_payloads_next(payloads, &ignored);
}

/*  Until when (wall clock) a put with these options is delayed, from now;
    0 if it is not. */
static uint64_t s_until(const aq_options_t *options, int64_t wall)
{
    uint64_t until = options->flags & AQ_PUT_DELAY ? (uint64_t) wall + options->delay_ms
                     : options->flags & AQ_PUT_AT  ? options->at_ms
                                                   : 0;
    return until > (uint64_t) wall ? until : 0;
}

/*  After `count` puts accepted: where the journal ends for their SYNC, and
    the queue to dispatch. */
static void s_accepted(broker_t *self, producer_t *producer, queue_t *queue, uint64_t count)
{
    if (count) {
        producer->journal_position = self->puts_end = broker_log_end(self);
        broker_touch_queue(self, queue);
    }
}

/*  Accepts `count` items; returns how many it could (fewer only when out of
    memory). Room for each item's lease timer is secured now, so delivering
    it can never fail for lack of memory. */
static uint64_t s_accept(broker_t *self, producer_t *producer, uint64_t pseq, queue_t *queue,
                         payloads_t *payloads, uint64_t count, uint64_t lease_ms,
                         const aq_options_t *options)
{
    int64_t now_us = broker_now_us();
    record_t record = {.lease_ms = (uint32_t) lease_ms,
                       .producer = aq_bytes_str(producer->id),
                       .queue = aq_bytes_str(queue->name)};
    state_effects_t effects;
    if (options->priority == 0 && options->flags == 0) { /* most puts: as before options */
        for (uint64_t i = 0; i < count; i++) {
            if (!s_payloads_next(payloads, &record.payload)
                || deadlines_reserve(&self->deadlines, store_count(self->store) + 64))
                return i;
            state_next_put(&self->state, queue, &record);
            record.pseq = pseq + i;
            if (broker_apply(self, &record, &effects))
                return i;
            effects.item->accepted_us = now_us;
        }
        s_accepted(self, producer, queue, count);
        return count;
    }
    int each = options->flags & AQ_PUT_EACH;
    int64_t wall = broker_wall_ms();
    uint64_t until = each ? 0 : s_until(options, wall);
    for (uint64_t i = 0; i < count; i++) {
        if (!s_payloads_next(payloads, &record.payload)
            || deadlines_reserve(&self->deadlines, store_count(self->store) + 64))
            return i;
        state_next_put(&self->state, queue, &record);
        if (each) {
            options = &payloads->iter.options;
            until = s_until(options, wall);
        }
        state_put_options(queue, options->priority, options->flags & AQ_PUT_FRONT, until,
                          &record);
        record.pseq = pseq + i;
        if (broker_apply(self, &record, &effects))
            return i;
        effects.item->accepted_us = now_us;
        if (until) {
            effects.item->timer.kind = TIMER_DELAY;
            deadlines_set(&self->deadlines, &effects.item->timer,
                          broker_now_ms() + (int64_t) (until - (uint64_t) wall));
        }
    }
    s_accepted(self, producer, queue, count);
    return count;
}

/*  Tries the oldest held put: accepted as far as its queue has room,
    refused if the queue was shut down. Returns 1 if it is gone. */
static int s_try_held(broker_t *self, producer_t *producer, held_put_t *held)
{
    queue_t *queue = held->queue;
    uint64_t first = held->seq + held->skip, last = held->seq + held->count - 1;
    if (queue->state != QUEUE_OPEN) {
        s_refuse(self, producer, aq_bytes_str(queue->name), first, last, last - first + 1,
                 AQ_SHUT_DOWN, "queue shut down: puts are refused");
        producers_free_held_put(self, producer, held);
        return 1;
    }
    uint64_t room = queue_room(queue), left = held->count - held->skip;
    uint64_t take = room < left ? room : left;
    if (take == 0)
        return 0;
    payloads_t payloads;
    s_payloads_init(&payloads, held->is_batch,
                    (aq_bytes_t){zmq_msg_data(&held->frame), zmq_msg_size(&held->frame)},
                    held->options.flags & AQ_PUT_EACH);
    s_payloads_skip(&payloads, held->skip);
    uint64_t taken = s_accept(self, producer, first, queue, &payloads, take, held->lease_ms,
                              &held->options);
    held->skip += taken;
    queue->held_count -= taken;
    producer->held_count -= taken;
    self->held_total -= taken;
    if (held->owner)
        held->owner->held_puts -= taken;
    if (taken < take) {
        s_refuse(self, producer, aq_bytes_str(queue->name), held->seq + held->skip, last,
                 last - held->seq - held->skip + 1, AQ_INTERNAL, "out of memory");
        producers_free_held_put(self, producer, held);
        return 1;
    }
    if (held->skip < held->count)
        return 0;
    producers_free_held_put(self, producer, held);
    return 1;
}

/*  Works through a producer's held puts in order until one must wait. */
static void s_drain_held(broker_t *self, producer_t *producer)
{
    list_node_t *node;
    while ((node = list_first(&producer->held))) {
        held_put_t *held = list_entry(node, held_put_t, link);
        if (!s_try_held(self, producer, held)) {
            producers_block(producer, held->queue);
            producers_tell_held(self, producer);
            producers_answer(self, producer);
            return;
        }
    }
    producers_block(producer, NULL);
    producers_answer(self, producer);
}

void broker_unblock(broker_t *self, queue_t *queue)
{
    list_node_t *node;
    while ((node = list_first(&queue->blocked))
           && (queue_room(queue) || queue->state != QUEUE_OPEN)) {
        producer_t *producer = list_entry(node, producer_t, blocked_link);
        s_drain_held(self, producer);
        if (producer->blocked_on == queue)
            break; /* still waiting for this queue: it is full again */
    }
}

/*  Keeps what the queue has no room for. Returns 0, or -1 if out of memory. */
static int s_hold(broker_t *self, producer_t *producer, queue_t *queue, const aq_msg_t *msg,
                  uint64_t skip, uint64_t count)
{
    held_put_t *held = calloc(1, sizeof *held);
    if (!held)
        return -1;
    held->seq = msg->seq;
    held->count = count;
    held->skip = skip;
    held->lease_ms = msg->lease_ms;
    held->options = msg->put;
    held->queue = queue;
    held->is_batch = msg->cmd == AQ_CMD_PUTS;
    zmq_msg_init(&held->frame);
    aq_inbox_t *inbox = self->pull_inbox;
    /* Signature, command, then PUT's payload is its 5th field, PUTS's batch its 6th. */
    zmq_msg_move(&held->frame, &inbox->parts[held->is_batch ? 7 : 6]);
    list_push_back(&producer->held, &held->link);
    uint64_t left = count - skip;
    queue->held_count += left;
    producer->held_count += left;
    producer->held_bytes += zmq_msg_size(&held->frame);
    self->held_total += left;
    held->owner = producer->peer ? producer->peer->owner : NULL;
    if (held->owner) {
        held->owner->held_puts += left;
        held->owner->held_bytes += zmq_msg_size(&held->frame);
    }
    if (!producer->blocked_on)
        producers_block(producer, queue);
    producers_tell_held(self, producer);
    return 0;
}

/*  A delay within --max-delay, or none. */
static int s_delay_allowed(broker_t *self, const aq_options_t *options, const char **text)
{
    if (!(options->flags & (AQ_PUT_DELAY | AQ_PUT_AT)))
        return 1;
    uint64_t wall = (uint64_t) broker_wall_ms(), max_ms = self->config.max_delay_s * 1000;
    int delay_over = (options->flags & AQ_PUT_DELAY) && options->delay_ms > max_ms;
    int at_over = (options->flags & AQ_PUT_AT) && options->at_ms > wall
                  && options->at_ms - wall > max_ms;
    if (!delay_over && !at_over)
        return 1;
    static char why[128];
    snprintf(why, sizeof why, "%s is more than this broker's --max-delay (%llu s)",
             delay_over ? "delay-ms" : "at-ms", (unsigned long long) self->config.max_delay_s);
    *text = why;
    return 0;
}

/*  The checks that need no state: the producer's rights, sizes, values. */
static int s_check(broker_t *self, producer_t *producer, const aq_msg_t *msg, uint64_t count,
                   const char **text)
{
    const auth_grant_t *grant = &producer->peer->grant;
    if (!(grant->roles & (ROLE_PRODUCE | ROLE_ADMIN))) {
        *text = "this client's roles do not allow puts";
        return AQ_FORBIDDEN;
    }
    if (!auth_allows_queue(grant, msg->queue.data, msg->queue.size)) {
        *text = "this client may not use that queue";
        return AQ_FORBIDDEN;
    }
    if (count > self->config.max_batch) {
        *text = "more items in one PUTS than max-batch";
        return AQ_LIMIT;
    }
    size_t size = msg->cmd == AQ_CMD_PUTS ? msg->batch.size : msg->payload.size;
    if (size > self->config.max_item) {
        *text = msg->cmd == AQ_CMD_PUTS ? "PUTS items frame larger than max-item"
                                         : "item larger than max-item";
        return AQ_TOO_BIG;
    }
    if (msg->lease_ms > INT32_MAX) {
        *text = "lease-ms is at most 2147483647";
        return AQ_MALFORMED;
    }
    if (!s_delay_allowed(self, &msg->put, text)) /* with `each`: the longest */
        return AQ_MALFORMED;
    return AQ_OK;
}

/*  Why a put that did not decode is invalid: its options, when they are
    what failed (every other field read), else the protocol in general. */
static const char *s_malformed_why(broker_t *self, const aq_msg_t *msg)
{
    size_t frames;
    const aq_bytes_t *parts = aq_inbox_frames(self->pull_inbox, &frames);
    size_t fields = msg->cmd == AQ_CMD_PUTS ? 6 : 5;
    aq_options_t options;
    const char *why = NULL;
    if (frames == fields + 3 && msg->fields_read >= fields - 1) {
        if (!aq_put_options_parse(parts[fields + 2], &options, &why))
            return why;
        if ((options.flags & AQ_PUT_EACH) && msg->cmd == AQ_CMD_PUT)
            return "each is for PUTS only";
        if ((options.flags & AQ_PUT_EACH) && msg->fields_read == fields - 1)
            return "with each, every entry is u8 length, options (not each), u32 length, item: "
                   "an entry does not add up, or its options are not valid";
    }
    return "frames or fields not as the protocol says";
}

/*  How many puts a refused message counts for: a PUT one; a PUTS the items
    it really carries past `skip` (read as far as they can be: no more work
    than decoding it took), or 1 if none can be read: never the count it
    claims, which a lying client can set to 10^19. */
static uint64_t s_carried(broker_t *self, const aq_msg_t *msg, uint64_t skip, uint64_t count)
{
    if (msg->cmd != AQ_CMD_PUTS)
        return 1;
    /* A batch that does not add up was not decoded: its frame, if there. */
    size_t frames;
    const aq_bytes_t *parts = aq_inbox_frames(self->pull_inbox, &frames);
    aq_bytes_t batch = msg->batch.data || frames < 8 || frames > 9 ? msg->batch : parts[7];
    uint64_t limit = count;
    aq_batch_iter_t iter;
    aq_puts_iter_init(&iter, batch, msg->put.flags & AQ_PUT_EACH);
    uint64_t carried = 0;
    aq_bytes_t payload;
    while (carried < limit && aq_puts_next(&iter, &payload))
        carried++;
    return carried > skip ? carried - skip : 1;
}

/*  A received put (sequence checked): refused, held or accepted. */
static void s_handle(broker_t *self, producer_t *producer, const aq_msg_t *msg, aq_status_t rc,
                     uint64_t skip, uint64_t count)
{
    uint64_t first = msg->seq + skip, last = msg->seq + count - 1;
    const char *text = rc == AQ_OK ? "" : s_malformed_why(self, msg);
    if (rc == AQ_OK)
        rc = s_check(self, producer, msg, count, &text);
    queue_t *queue = NULL;
    if (rc == AQ_OK)
        queue = broker_queue_for(self, msg->queue, producer->peer, &rc, &text);
    if (rc == AQ_OK && queue->state != QUEUE_OPEN) {
        rc = AQ_SHUT_DOWN;
        text = "queue shut down: puts are refused";
    }
    if (rc == AQ_OK && !broker_log_accepting(self)) {
        rc = AQ_STORAGE;
        text = "the broker cannot write to its journal (disk full?): puts are refused until it "
               "can";
    }
    uint64_t left = count - skip;
    int must_wait = rc == AQ_OK && (!list_empty(&producer->held) || queue_room(queue) < left);
    size_t bytes = msg->cmd == AQ_CMD_PUTS ? msg->batch.size : msg->payload.size;
    if (must_wait && (producer->held_count + left > self->config.window
                      || producer->held_bytes + bytes > self->config.window_bytes)) {
        rc = AQ_LIMIT;
        text = "more puts held back for a full queue than the producer's window";
    }
    auth_owner_t *owner = producer->peer->owner;
    if (rc == AQ_OK && must_wait && owner && broker_counts_limits(self, producer->peer)
        && owner->held_bytes + bytes > self->config.max_held_bytes_per_key) {
        rc = AQ_LIMIT;
        text = "more bytes of puts held back for full queues from this key than "
               "--max-held-bytes-per-key";
    }
    if (rc) {
        s_refuse(self, producer, msg->queue, first, last, s_carried(self, msg, skip, count), rc,
                 text);
        producers_received(self, producer, last);
        return;
    }
    uint64_t accepted = 0;
    if (list_empty(&producer->held)) {
        uint64_t room = queue_room(queue);
        payloads_t payloads;
        s_payloads_init(&payloads, msg->cmd == AQ_CMD_PUTS,
                        msg->cmd == AQ_CMD_PUTS ? msg->batch : msg->payload,
                        msg->put.flags & AQ_PUT_EACH);
        s_payloads_skip(&payloads, skip);
        uint64_t take = room < left ? room : left;
        accepted = s_accept(self, producer, first, queue, &payloads, take, msg->lease_ms,
                            &msg->put);
        if (accepted < take) {
            s_refuse(self, producer, msg->queue, first + accepted, last,
                     last - first - accepted + 1, AQ_INTERNAL, "out of memory");
            producers_received(self, producer, last);
            return;
        }
    }
    if (skip + accepted < count && s_hold(self, producer, queue, msg, skip + accepted, count)) {
        s_refuse(self, producer, msg->queue, first + accepted, last, last - first - accepted + 1,
                 AQ_INTERNAL, "out of memory");
        producers_received(self, producer, last);
        return;
    }
    producers_received(self, producer, last);
}

/*  The producer a put names, if the put may be attributed to it: it has a
    live session and (with CURVE) the put carries its key. */
static producer_t *s_attribute(broker_t *self, const aq_msg_t *msg, const char *key)
{
    char name[AQ_NAME_MAX * 4 + 1];
    int64_t now = broker_now_ms();
    producer_t *producer = producers_get(self, msg->producer);
    if (!producer || !producer->peer) {
        /* Sent before this broker heard the producer's HELLO (left in its
           socket from a broker run that ended, say): it resends. */
        ratelog_line(&self->bad_input, now, "put from producer %s, which has no session: dropped",
                     log_escape(name, sizeof name, msg->producer.data, msg->producer.size));
        return NULL;
    }
    if (strcmp(producer->key, key) != 0) {
        ratelog_line(&self->bad_input, now, "put naming producer %s from another key: dropped",
                     log_escape(name, sizeof name, msg->producer.data, msg->producer.size));
        return NULL;
    }
    return producer;
}

void broker_on_pull(broker_t *self)
{
    aq_inbox_t *inbox = self->pull_inbox;
    int64_t now = broker_now_ms();
    int fd = aq_inbox_fd(inbox);
    if (!conns_admitted(self->conns, 1, fd, now)) {
        ratelog_line(&self->refusals, now, "message on %s connection %d (%s): dropped",
                     "PULL", fd, conns_state_name(self->conns, 1, fd));
        return; /* refused or closing: its messages are not looked at */
    }
    if (broker_follows(self))
        return; /* only the leader of a group takes puts (PROTOCOL.md 4.16) */
    aq_msg_t msg;
    aq_status_t rc = aq_inbox_decode(inbox, &msg);
    int is_put = msg.cmd == AQ_CMD_PUT || msg.cmd == AQ_CMD_PUTS;
    /* Producer, seq and (PUTS) count come first: read those, and the put
       can be answered whatever else is wrong with it. */
    size_t needed = msg.cmd == AQ_CMD_PUTS ? 3 : 2;
    if (!is_put || msg.fields_read < needed || msg.seq == 0
        || (msg.cmd == AQ_CMD_PUTS && (msg.count == 0 || msg.seq > UINT64_MAX - msg.count))) {
        const char *why = rc == AQ_BAD_VERSION ? "not asyncq/2 (an old client?)"
                          : is_put             ? "producer, seq or count unreadable"
                          : rc                 ? aq_strerror(rc)
                                               : "not a put";
        ratelog_line(&self->bad_input, now, "on the PULL socket: %s (%s): dropped", why,
                     aq_cmd_name(msg.cmd));
        return;
    }
    producer_t *producer = s_attribute(self, &msg, aq_inbox_user_id(inbox));
    if (!producer)
        return;
    conns_greet(self->conns, 1, fd);
    uint64_t count = msg.cmd == AQ_CMD_PUTS ? msg.count : 1, skip = 0;
    if (!producers_check(self, producer, msg.seq, count, &skip))
        return;
    s_handle(self, producer, &msg, rc, skip, count);
}
