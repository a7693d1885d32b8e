/*  The producer keeps every message the broker has not yet confirmed (a PUT
    or a PUTS) as the zmq_msg_t it sent, sharing its bytes with ZeroMQ, so
    keeping it costs no copy. A SYNC goes out when half the window is in use
    and its SYNCED releases what it covers; a full window makes put wait.

    When the broker answers LOST (puts vanished with a broken connection),
    or forgets this producer (NO_SESSION: it restarted), or falls silent,
    the producer says HELLO again with its oldest unconfirmed seq and sends
    every unconfirmed message again, in order, each with the seqs it had.
    The broker takes puts strictly in sequence per producer, so a put it
    already has is dropped, never queued twice. */
#include "asyncq/producer.h"

#include <czmq.h>
#include <errno.h>
#include <string.h>

#include "asyncq/internal.h"
#include "asyncq/security.h"
#include "asyncq/service.h"

/*  PUSH queues at most this many messages in this process before a send
    blocks. Small, so that a broker that stopped reading is felt soon. */
#define PRODUCER_SNDHWM 1000

typedef struct {
    uint64_t seq;      /* of its first item */
    uint64_t count;    /* items */
    uint64_t lease_ms;
    aq_options_t options;
    int is_batch;      /* PUTS, else PUT */
    char queue[AQ_NAME_MAX + 1];
    zmq_msg_t frame;   /* the payload, or the items frame */
} sent_t;

/*  The producer's part at one broker of the service. */
typedef struct link {
    aq_session_t *session;
    uint64_t window_bytes;  /* unconfirmed bytes allowed */
    zsock_t *push;          /* connected at the first send */
    uint64_t seq;           /* sequence number of the last put */
    uint64_t refused;       /* puts the broker refused */
    uint64_t resends;       /* times the unconfirmed puts were sent again */
    uint64_t window_max;    /* unconfirmed puts allowed */
    sent_t *window;         /* ring of window_max messages, oldest at head */
    size_t head;
    size_t count;           /* messages in the ring */
    uint64_t unconfirmed;   /* puts in them */
    size_t bytes;
    uint8_t *batch;         /* the PUTS being gathered */
    size_t batch_size;
    uint64_t batch_count;
    uint64_t batch_lease;
    aq_options_t batch_options; /* AQ_PUT_EACH: each entry carries its own */
    char batch_queue[AQ_NAME_MAX + 1];
    char sync_tag[AQ_TAG_MAX + 1]; /* the SYNC in flight, "" if none */
    uint64_t sync_seq;
    char held[AQ_NAME_MAX + 1];    /* queue the broker holds our puts for, "" */
    int waiting;                   /* s_send is waiting for room in the PUSH */
} link_t;

/*  A link per broker of the service (PROTOCOL.md 4.15), by shard; each
    batch goes to the next one that is up. */
struct aq_producer {
    link_t *links[AQ_SERVICE_MAX];
    size_t count;
    size_t current;
    char left_out[AQ_LEFT_OUT_MAX]; /* addresses given that answered nothing */
};

static aq_status_t s_connect_push(link_t *self)
{
    if (self->push)
        return AQ_OK;
    self->push = zsock_new(ZMQ_PUSH);
    if (!self->push)
        return AQ_NOMEM;
    zsock_set_sndhwm(self->push, PRODUCER_SNDHWM);
    aq_security_apply(self->push);
    char pull[AQ_ENDPOINT_MAX];
    aq_endpoint_pull(aq_session_endpoint(self->session), pull, sizeof pull);
    return zsock_connect(self->push, "%s", pull) == 0 ? AQ_OK : AQ_BAD_ENDPOINT;
}

/*  A link over an open session (it owns it from now on). */
static link_t *s_link_new(aq_session_t *session, aq_status_t *status)
{
    link_t *self = calloc(1, sizeof *self);
    if (!self) {
        aq_session_destroy(&session);
        *status = AQ_NOMEM;
        return NULL;
    }
    self->session = session;
    const aq_welcome_t *welcome = aq_session_welcome(session);
    self->window_max = welcome->window < AQ_PRODUCER_WINDOW ? welcome->window
                                                            : AQ_PRODUCER_WINDOW;
    self->window_bytes = welcome->window_bytes < AQ_PRODUCER_WINDOW_BYTES
                             ? welcome->window_bytes : AQ_PRODUCER_WINDOW_BYTES;
    self->window = calloc(self->window_max, sizeof *self->window);
    self->batch = malloc(welcome->max_item);
    *status = self->window && self->batch ? AQ_OK : AQ_NOMEM;
    return self;
}

static sent_t *s_at(link_t *self, size_t index)
{
    return &self->window[(self->head + index) % self->window_max];
}

/*  Forgets the messages whose puts are all confirmed: the broker has them. */
static void s_release(link_t *self, uint64_t seq)
{
    while (self->count && s_at(self, 0)->seq + s_at(self, 0)->count - 1 <= seq) {
        sent_t *sent = s_at(self, 0);
        self->bytes -= zmq_msg_size(&sent->frame);
        self->unconfirmed -= sent->count;
        zmq_msg_close(&sent->frame);
        self->head = (self->head + 1) % self->window_max;
        self->count--;
    }
}

static aq_status_t s_flush(link_t *self);
static aq_status_t s_keep_alive(link_t *self);

/*  The PUSH closed at once, what it still holds dropped (only synced puts
    are promised; the window keeps the others); the next put connects a
    new one. */
static void s_drop_push(link_t *self)
{
    if (self->push)
        zsock_set_linger(self->push, 0);
    zsock_destroy(&self->push);
}

static void s_link_destroy(link_t *self)
{
    if (!self)
        return;
    if (self->session && self->window)
        s_flush(self);
    s_drop_push(self);
    aq_session_destroy(&self->session);
    if (self->window)
        s_release(self, UINT64_MAX);
    free(self->window);
    free(self->batch);
    free(self);
}

static aq_status_t s_send(link_t *self, sent_t *sent)
{
    aq_status_t rc = s_connect_push(self);
    if (rc)
        return rc;
    aq_msg_t msg = {.cmd = sent->is_batch ? AQ_CMD_PUTS : AQ_CMD_PUT};
    msg.producer = aq_bytes_str(aq_session_client_id(self->session));
    msg.seq = sent->seq;
    msg.count = sent->count;
    msg.queue = aq_bytes_str(sent->queue);
    msg.lease_ms = sent->lease_ms;
    char options[AQ_OPTIONS_MAX + 1];
    msg.options.data = (const uint8_t *) options;
    msg.options.size = aq_put_options_format(&sent->options, options);
    /* A PUSH full of puts for a broker that died (a group's leader
       SIGKILLed) is never emptied: a blocking send would wait for ever,
       and the session would never notice the silence. While there is no
       room, the session is read in slices, so that a silent broker is
       left for the group's new leader (s_hello_again drops this PUSH; the
       next try connects a new one, which the puts of the window precede
       once the WELCOME comes: s_resend). A send made while waiting (those
       resends) blocks, on its new PUSH, as before. */
    for (;;) {
        int flags = self->waiting ? 0 : ZMQ_DONTWAIT;
        rc = aq_msg_send(zsock_resolve(self->push), NULL, &msg, &sent->frame, flags);
        if (rc != AQ_TRANSPORT || errno != EAGAIN)
            return rc == AQ_TRANSPORT && errno == EINTR ? AQ_INTERRUPTED : rc;
        if (zsys_interrupted) /* a signal between two polls */
            return AQ_INTERRUPTED;
        int slice = (int) aq_session_heartbeat_ms(self->session);
        zmq_pollitem_t item = {zsock_resolve(self->push), 0, ZMQ_POLLOUT, 0};
        int ready = zmq_poll(&item, 1, slice > 0 ? slice : 100);
        if (ready < 0)
            return errno == EINTR ? AQ_INTERRUPTED : AQ_TRANSPORT;
        if (ready == 0) {
            self->waiting = 1;
            rc = s_keep_alive(self);
            self->waiting = 0;
            if (!rc)
                rc = s_connect_push(self);
            if (rc)
                return rc;
        }
    }
}

static aq_status_t s_send_sync(link_t *self)
{
    aq_msg_t msg = {.cmd = AQ_CMD_SYNC};
    msg.producer = aq_bytes_str(aq_session_client_id(self->session));
    msg.seq = self->sync_seq = self->seq;
    aq_status_t rc = aq_session_request(self->session, &msg);
    snprintf(self->sync_tag, sizeof self->sync_tag, "%.*s", (int) msg.tag.size,
             (const char *) msg.tag.data);
    return rc;
}

/*  A new session, when the broker lost ours or went silent: HELLO is said
    in the background, and s_resend follows its WELCOME. The PUSH goes too:
    a connection cut off for a while retransmits only after TCP's growing
    back-off, so the puts sent again go on a new one (what the old one
    still delivers, the broker drops as resends). */
static aq_status_t s_hello_again(link_t *self)
{
    self->sync_tag[0] = '\0';
    s_drop_push(self);
    aq_session_set_producer_seq(self->session, self->count ? s_at(self, 0)->seq : self->seq + 1);
    return aq_session_hello_begin(self->session);
}

/*  Every unconfirmed message sent again, oldest first (after a new
    session, `welcomed`: with nothing to send, the PUSH goes). */
static aq_status_t s_resend(link_t *self, int welcomed)
{
    self->sync_tag[0] = '\0';
    aq_status_t rc = AQ_OK;
    if (welcomed) {
        /* A new session, perhaps with another broker (a group's new
           leader, 4.16): the PUSH connects anew, to the broker that said
           WELCOME (puts made since the HELLO went to the one asked, which
           may have been a replica that drops them). With nothing to send
           again it connects at the next put, or the broker would close its
           silent new connection again and again (PROTOCOL.md 9.2). */
        s_drop_push(self);
    }
    /* After a LOST, the same PUSH socket: messages still in its pipe reach
       the broker before the resent ones, in one ordered stream, and are
       dropped there as resends or out of sequence. */
    self->resends++;
    for (size_t i = 0; !rc && i < self->count; i++)
        rc = s_send(self, s_at(self, i));
    return rc ? rc : s_send_sync(self);
}

/*  "7" or "7-70": how many puts an ERROR about puts names. */
static uint64_t s_range_count(const char *subject)
{
    char *end;
    uint64_t first = strtoull(subject, &end, 10);
    if (*end != '-')
        return 1;
    uint64_t last = strtoull(end + 1, NULL, 10);
    return last >= first ? last - first + 1 : 1;
}

/*  Handles one message from the broker: a SYNCED, a HELD, an ERROR about
    puts or about the SYNC. Returns AQ_OK, or what the caller must act on. */
static aq_status_t s_handle(link_t *self, const aq_msg_t *msg, aq_status_t status)
{
    const aq_error_t *error = aq_session_error(self->session);
    int about_sync = status == AQ_REFUSED && self->sync_tag[0]
                     && strcmp(error->tag, self->sync_tag) == 0;
    if (status == AQ_REFUSED && error->code == AQ_NO_SESSION)
        return s_hello_again(self);
    if (status == AQ_OK && msg->cmd == AQ_CMD_WELCOME)
        return s_resend(self, 1);
    if (about_sync && error->code == AQ_LOST)
        return s_resend(self, 0);
    if (status == AQ_REFUSED && !error->tag[0]) {
        self->refused += s_range_count(error->subject); /* puts received and refused */
        return AQ_OK;
    }
    if (about_sync)
        return AQ_REFUSED; /* the SYNC itself was refused */
    if (status == AQ_OK && msg->cmd == AQ_CMD_HELD) {
        snprintf(self->held, sizeof self->held, "%.*s", (int) msg->queue.size,
                 (const char *) msg->queue.data);
        return AQ_OK;
    }
    if (status == AQ_OK && msg->cmd == AQ_CMD_SYNCED && self->sync_tag[0]
        && msg->tag.size == strlen(self->sync_tag)
        && memcmp(msg->tag.data, self->sync_tag, msg->tag.size) == 0) {
        s_release(self, msg->seq);
        self->sync_tag[0] = '\0';
        self->held[0] = '\0';
    }
    return status == AQ_TIMEOUT || status == AQ_MALFORMED || status == AQ_REFUSED ? AQ_OK
                                                                                    : status;
}

/*  Handles the replies that have already arrived, without waiting. */
static aq_status_t s_read_replies(link_t *self)
{
    for (;;) {
        aq_msg_t msg;
        aq_status_t rc = aq_session_recv(self->session, &msg, 0);
        if (rc == AQ_TIMEOUT)
            return AQ_OK;
        rc = s_handle(self, &msg, rc);
        if (rc)
            return rc;
    }
}

/*  Reads replies until the window holds at most `keep` puts, waiting up to
    timeout_ms (-1: for ever; 0: reads only what has arrived). Resends after
    a broker restart. */
static aq_status_t s_confirm(link_t *self, uint64_t keep, int timeout_ms)
{
    int64_t deadline = aq_deadline_at(timeout_ms);
    while (self->unconfirmed > keep || (keep == 0 && self->sync_tag[0])) {
        if (zsys_interrupted) /* a signal between two polls, too */
            return AQ_INTERRUPTED;
        if (!self->sync_tag[0]) {
            aq_status_t rc = s_send_sync(self);
            if (rc)
                return rc;
        }
        /* At the deadline (at once for a timeout of 0), what has already
           arrived is still read before giving up. */
        int left = aq_deadline_left(deadline);
        int wait = aq_session_slice(self->session, left);
        aq_msg_t msg;
        aq_status_t rc = aq_session_recv_watching(self->session, &msg, wait);
        if (rc == AQ_TIMEOUT && left == 0)
            return AQ_TIMEOUT;
        if (rc == AQ_TIMEOUT)
            rc = aq_session_hello_due(self->session) ? s_hello_again(self) : AQ_OK;
        else
            rc = s_handle(self, &msg, rc);
        if (rc)
            return rc;
    }
    return AQ_OK;
}

/*  Keeps a message in the window and sends it. The window has room. */
static aq_status_t s_add(link_t *self, const char *queue, uint64_t lease_ms,
                         const aq_options_t *options, uint64_t count, int is_batch,
                         zmq_msg_t *frame)
{
    sent_t *sent = s_at(self, self->count);
    sent->seq = self->seq + 1;
    sent->count = count;
    sent->lease_ms = lease_ms;
    sent->options = *options;
    sent->is_batch = is_batch;
    snprintf(sent->queue, sizeof sent->queue, "%s", queue);
    zmq_msg_init(&sent->frame);
    zmq_msg_move(&sent->frame, frame);
    aq_status_t rc = s_send(self, sent);
    if (rc) {
        zmq_msg_close(&sent->frame);
        return rc;
    }
    self->seq += count;
    self->count++;
    self->unconfirmed += count;
    self->bytes += zmq_msg_size(&sent->frame);
    /* Half the window in use: ask for a confirmation now, so that the
       window rarely fills. */
    if (!self->sync_tag[0] && self->unconfirmed >= self->window_max / 2)
        return s_send_sync(self);
    return self->sync_tag[0] ? s_read_replies(self) : AQ_OK;
}

static void s_free_batch(void *data, void *hint)
{
    (void) hint;
    free(data);
}

/*  Waits until `count` more puts and `size` more bytes fit in the window. */
static aq_status_t s_make_room(link_t *self, uint64_t count, size_t size)
{
    if (self->count < self->window_max && self->unconfirmed + count <= self->window_max
        && (self->unconfirmed == 0 || self->bytes + size <= self->window_bytes))
        return AQ_OK;
    return s_confirm(self, self->unconfirmed / 2, -1);
}

static aq_status_t s_flush(link_t *self)
{
    if (!self->batch_count)
        return AQ_OK;
    uint64_t max_item = aq_session_max_item(self->session);
    aq_status_t rc = s_make_room(self, self->batch_count, self->batch_size);
    zmq_msg_t frame;
    uint8_t *fresh = rc ? NULL : malloc(max_item);
    if (!rc && !fresh)
        rc = AQ_NOMEM;
    if (rc)
        return rc;
    /* The batch buffer becomes the frame (ZeroMQ frees it when done). */
    zmq_msg_init_data(&frame, self->batch, self->batch_size, s_free_batch, NULL);
    self->batch = fresh;
    uint64_t count = self->batch_count;
    self->batch_count = 0;
    self->batch_size = 0;
    return s_add(self, self->batch_queue, self->batch_lease, &self->batch_options, count, 1,
                 &frame);
}

static aq_status_t s_put_alone(link_t *self, const char *queue, const void *data,
                               size_t size, uint64_t lease_ms, const aq_options_t *options)
{
    aq_status_t rc = s_make_room(self, 1, size);
    if (rc)
        return rc;
    zmq_msg_t frame;
    if (zmq_msg_init_size(&frame, size))
        return AQ_NOMEM;
    if (size)
        memcpy(zmq_msg_data(&frame), data, size);
    return s_add(self, queue, lease_ms, options, 1, 0, &frame);
}

static int s_options_equal(const aq_options_t *a, const aq_options_t *b)
{
    return a->priority == b->priority && a->flags == b->flags && a->delay_ms == b->delay_ms
           && a->at_ms == b->at_ms;
}

/*  The batch gathered so far becomes an `each` batch: every entry carries
    the options they share, so that puts with others can join it. -1 (and
    nothing changed) if it would not fit in max_item, or out of memory. */
static int s_batch_to_each(link_t *self, size_t max_item)
{
    char text[AQ_OPTIONS_MAX + 1];
    aq_bytes_t options = {(const uint8_t *) text,
                          aq_put_options_format(&self->batch_options, text)};
    if (self->batch_size + self->batch_count * (1 + options.size) > max_item)
        return -1;
    uint8_t *each = malloc(max_item);
    if (!each)
        return -1;
    aq_batch_iter_t iter;
    aq_batch_iter_init(&iter, (aq_bytes_t){self->batch, self->batch_size});
    size_t size = 0;
    aq_bytes_t payload;
    while (aq_puts_next(&iter, &payload))
        size += aq_puts_entry_write_each(each + size, options, payload.data,
                                         (uint32_t) payload.size);
    free(self->batch);
    self->batch = each;
    self->batch_size = size;
    self->batch_options = (aq_options_t){.flags = AQ_PUT_EACH};
    return 0;
}

/*  A put with wire options: batched with the puts before it when they are
    for the same queue and lease; when its options differ from theirs, the
    batch carries each item's (`each`, PROTOCOL.md 4.1). */
static aq_status_t s_put(link_t *self, const char *queue, const void *data, size_t size,
                         uint64_t lease_ms, const aq_options_t *options)
{
    /* The batch's queue name was checked when the batch began: a put to the
       same queue skips the check (it was a quarter of a producer's
       instructions per item). */
    int same_queue = self->batch_count && queue && strcmp(queue, self->batch_queue) == 0;
    size_t length = 0;
    if (!same_queue) {
        length = queue ? strlen(queue) : 0;
        if (!aq_name_is_valid((const uint8_t *) queue, length))
            return AQ_MALFORMED;
    }
    uint64_t max_item = aq_session_max_item(self->session);
    if (size > max_item)
        return AQ_TOO_BIG;
    int same_lease = lease_ms == self->batch_lease;
    int same_options = s_options_equal(options, &self->batch_options);
    if (self->batch_count && same_queue && same_lease && !same_options
        && !(self->batch_options.flags & AQ_PUT_EACH) && size < AQ_PUT_ALONE_BYTES)
        s_batch_to_each(self, max_item); /* or, if it cannot, the batch goes first */
    int each = self->batch_count && (self->batch_options.flags & AQ_PUT_EACH);
    char text[AQ_OPTIONS_MAX + 1];
    aq_bytes_t entry_options = {(const uint8_t *) text,
                                each ? aq_put_options_format(options, text) : 0};
    size_t entry = (each ? 1 + entry_options.size : 0) + AQ_PUTS_ENTRY_HEADER + size;
    int fits = self->batch_size + entry <= max_item;
    if (self->batch_count
        && (!fits || !same_lease || !same_queue || !(each || same_options))) {
        aq_status_t rc = s_flush(self);
        if (rc)
            return rc;
        each = 0;
    }
    if (size >= AQ_PUT_ALONE_BYTES || AQ_PUTS_ENTRY_HEADER + size > max_item)
        return s_put_alone(self, queue, data, size, lease_ms, options);
    if (!self->batch_count) {
        if (!same_queue) /* else it holds this name already */
            memcpy(self->batch_queue, queue, length + 1);
        self->batch_lease = lease_ms;
        self->batch_options = *options;
    }
    if (each)
        self->batch_size += aq_puts_entry_write_each(self->batch + self->batch_size,
                                                     entry_options, data, (uint32_t) size);
    else
        self->batch_size += aq_puts_entry_write(self->batch + self->batch_size, data,
                                                (uint32_t) size);
    self->batch_count++;
    const aq_welcome_t *welcome = aq_session_welcome(self->session);
    if (self->batch_count >= welcome->max_batch
        || self->batch_count + self->unconfirmed >= self->window_max)
        return s_flush(self);
    return AQ_OK;
}

static const aq_options_t s_no_options;

/*  What the broker sent is read; a broker fallen silent is said HELLO
    again (in the background). The first failure of either. */
static aq_status_t s_keep_alive(link_t *self)
{
    aq_status_t rc = s_read_replies(self);
    if (aq_session_hello_due(self->session)) {
        aq_status_t hello = s_hello_again(self);
        if (!rc)
            rc = hello;
    }
    return rc;
}

/*  Up: it has a session that is not silent (what it sent is read first:
    its heartbeats say it is there), and no full queue holds its puts. A
    link that is down says HELLO in the background, now and then. */
static int s_is_up(link_t *link)
{
    s_keep_alive(link);
    return aq_session_is_up(link->session) && !link->held[0];
}

int aq_producer_answered(aq_producer_t *self)
{
    for (size_t i = 0; i < self->count; i++) {
        link_t *link = self->links[i];
        if ((link->unconfirmed || link->batch_count) && !s_is_up(link) && !link->held[0])
            return 0;
    }
    return 1;
}

/*  The link the next batch goes to. */
static link_t *s_current(aq_producer_t *self)
{
    return self->links[self->current];
}

/*  After a batch went out: the next link that is up takes the next one. */
static void s_rotate(aq_producer_t *self)
{
    for (size_t step = 1; step <= self->count; step++) {
        size_t next = (self->current + step) % self->count;
        if (s_is_up(self->links[next])) {
            self->current = next;
            return;
        }
    }
}

static aq_status_t s_put_to(aq_producer_t *self, link_t *link, const char *queue,
                            const void *data, size_t size, uint64_t lease_ms,
                            const aq_options_t *options)
{
    /* A batch begins: on a broker that is up still, or the next one. One
       that fell silent is asked HELLO again in the background meanwhile
       (a group's leader gone: its session finds the new one, 4.16), also
       when it is the only one. */
    if (link == s_current(self) && !link->batch_count && !s_is_up(link) && self->count > 1) {
        s_rotate(self);
        link = s_current(self);
    }
    uint64_t sent = link->seq;
    aq_status_t rc = s_put(link, queue, data, size, lease_ms, options);
    if (self->count > 1 && link == s_current(self) && link->seq != sent && !link->batch_count)
        s_rotate(self);
    return rc;
}

aq_producer_t *aq_producer_new(const char *address, const char *name, aq_status_t *status)
{
    aq_producer_t *self = calloc(1, sizeof *self);
    if (!self) {
        *status = AQ_NOMEM;
        aq_last_error_status(address, AQ_NOMEM, NULL);
        return NULL;
    }
    char client_id[AQ_NAME_MAX + 1];
    aq_client_id_make(name ? name : "producer", client_id, sizeof client_id);
    size_t count = 0;
    aq_session_t **sessions =
        aq_service_open(address, client_id, 1, AQ_CONNECT_TIMEOUT_MS, self->left_out,
                        sizeof self->left_out, &count, status);
    /* By shard: a key's shard is its place. */
    for (size_t i = 0; i < count; i++) {
        aq_session_t *session = sessions[i];
        size_t at = self->count;
        while (at > 0 && aq_session_welcome(self->links[at - 1]->session)->shard
                             > aq_session_welcome(session)->shard) {
            self->links[at] = self->links[at - 1];
            at--;
        }
        aq_status_t rc;
        self->links[at] = s_link_new(session, &rc);
        self->count++;
        if (rc && !*status)
            *status = rc;
        if (!self->links[at]) {
            memmove(self->links + at, self->links + at + 1, (self->count - at - 1) * sizeof *self->links);
            self->count--;
        }
    }
    free(sessions);
    /* A short-lived producer (asyncq put) starts anywhere (its id's random
       suffix picks where, so that many of them spread too), on a broker
       that is up. */
    if (self->count) {
        self->current = aq_service_key_hash(client_id, strlen(client_id)) % self->count;
        if (!s_is_up(s_current(self)))
            s_rotate(self);
    }
    if (*status == AQ_NOMEM)
        aq_last_error_status(address, AQ_NOMEM, NULL);
    if (*status)
        aq_producer_destroy(&self);
    return self;
}

void aq_producer_destroy(aq_producer_t **self_p)
{
    aq_producer_t *self = *self_p;
    if (!self)
        return;
    for (size_t i = 0; i < self->count; i++)
        s_link_destroy(self->links[i]);
    free(self);
    *self_p = NULL;
}

aq_status_t aq_producer_flush(aq_producer_t *self)
{
    aq_status_t first = AQ_OK;
    int sent = 0;
    for (size_t i = 0; i < self->count; i++) {
        sent |= self->links[i]->batch_count != 0;
        aq_status_t rc = s_flush(self->links[i]);
        if (rc && !first)
            first = rc;
    }
    if (sent && self->count > 1)
        s_rotate(self);
    return first;
}

aq_status_t aq_producer_put_lease(aq_producer_t *self, const char *queue, const void *data,
                                  size_t size, uint64_t lease_ms)
{
    return s_put_to(self, s_current(self), queue, data, size, lease_ms, &s_no_options);
}

aq_status_t aq_producer_put(aq_producer_t *self, const char *queue, const void *data,
                            size_t size)
{
    return s_put_to(self, s_current(self), queue, data, size, 0, &s_no_options);
}

/*  The wire options of a put, or AQ_MALFORMED. */
static aq_status_t s_wire_options(const aq_put_options_t *options, aq_options_t *wire)
{
    *wire = (aq_options_t){0};
    if (!options)
        return AQ_OK;
    if ((options->delay_ms && options->at_ms) || (options->front && (options->delay_ms || options->at_ms)))
        return AQ_MALFORMED;
    wire->priority = options->priority;
    if (options->delay_ms) {
        wire->flags |= AQ_PUT_DELAY;
        wire->delay_ms = options->delay_ms;
    }
    if (options->at_ms) {
        wire->flags |= AQ_PUT_AT;
        wire->at_ms = options->at_ms;
    }
    if (options->front)
        wire->flags |= AQ_PUT_FRONT;
    return AQ_OK;
}

aq_status_t aq_producer_put_with(aq_producer_t *self, const char *queue, const void *data,
                                 size_t size, const aq_put_options_t *options)
{
    aq_options_t wire;
    if (s_wire_options(options, &wire))
        return AQ_MALFORMED;
    return s_put_to(self, s_current(self), queue, data, size, options ? options->lease_ms : 0,
                    &wire);
}

aq_status_t aq_producer_put_key(aq_producer_t *self, const char *queue, const void *key,
                                size_t key_size, const void *data, size_t size,
                                const aq_put_options_t *options)
{
    aq_options_t wire;
    if (s_wire_options(options, &wire))
        return AQ_MALFORMED;
    size_t shard = aq_service_key_hash(key, key_size) % self->count;
    link_t *link = self->links[shard];
    if (aq_session_welcome(link->session)->shard != (int) shard) {
        aq_last_error_set("a put with a key needs the service's shards numbered 0 to %zu",
                          self->count - 1);
        return AQ_MALFORMED;
    }
    return s_put_to(self, link, queue, data, size, options ? options->lease_ms : 0, &wire);
}

static aq_status_t s_sync(link_t *self, int timeout_ms)
{
    aq_status_t rc = s_flush(self);
    /* A SYNC for the latest put, even if one is in flight for an older. */
    if (!rc && self->count)
        rc = s_send_sync(self);
    if (!rc)
        rc = s_confirm(self, 0, timeout_ms);
    if (rc)
        return rc;
    return self->refused ? AQ_REFUSED : AQ_OK;
}

aq_status_t aq_producer_sync(aq_producer_t *self, int timeout_ms)
{
    int64_t deadline = aq_deadline_at(timeout_ms);
    aq_status_t first = AQ_OK;
    for (size_t i = 0; i < self->count; i++) {
        aq_status_t rc = s_sync(self->links[i], aq_deadline_left(deadline));
        if (rc && (!first || first == AQ_REFUSED))
            first = rc;
    }
    return first;
}

uint64_t aq_producer_sent(const aq_producer_t *self)
{
    uint64_t sum = 0;
    for (size_t i = 0; i < self->count; i++)
        sum += self->links[i]->seq + self->links[i]->batch_count;
    return sum;
}

uint64_t aq_producer_refused(const aq_producer_t *self)
{
    uint64_t sum = 0;
    for (size_t i = 0; i < self->count; i++)
        sum += self->links[i]->refused;
    return sum;
}

uint64_t aq_producer_unconfirmed(const aq_producer_t *self)
{
    uint64_t sum = 0;
    for (size_t i = 0; i < self->count; i++)
        sum += self->links[i]->unconfirmed + self->links[i]->batch_count;
    return sum;
}

uint64_t aq_producer_resends(const aq_producer_t *self)
{
    uint64_t sum = 0;
    for (size_t i = 0; i < self->count; i++)
        sum += self->links[i]->resends;
    return sum;
}

const char *aq_producer_held(const aq_producer_t *self)
{
    for (size_t i = 0; i < self->count; i++)
        if (self->links[i]->held[0])
            return self->links[i]->held;
    return NULL;
}

aq_session_t *aq_producer_session(aq_producer_t *self)
{
    return self->links[0]->session;
}

size_t aq_producer_brokers(const aq_producer_t *self)
{
    return self->count;
}

const char *aq_producer_unreachable(const aq_producer_t *self)
{
    return self->left_out;
}
