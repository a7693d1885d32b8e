/*  asyncq-rabbitmq-bench: RabbitMQ used as a work queue, the baseline for
    asyncq's durable mode. A benchmark, not a test: it prints figures and
    asserts nothing. rabbitmq-c only, nothing of asyncq.

    Starts its own RabbitMQ node on free loopback ports, everything in a
    temp dir (or, with --server URL, uses a running broker and a queue of
    its own), then consumer and producer processes, and removes the node
    and its directory afterwards. --serve starts only the node, for runs
    with --server: bench/compare.sh boots one for all its RabbitMQ runs.

    --nodes N (1 to 5) starts a cluster of N nodes on this host instead,
    each with its own temp dir, node name (asyncq-bench-PID-K@localhost),
    AMQP and distribution ports, all of them registered with one epmd of
    ours and sharing one Erlang cookie. Node 1 boots first; the others
    then boot at once and join it through classic-config peer discovery
    (node 1 the only peer in their config), and rabbitmqctl
    await_online_nodes checks that the cluster has N nodes running: about
    12 s for 3 nodes on an idle 2-core VM (node 1 in 4.5 s, the other two
    together in 7.5 s more, the check under 1 s). A quorum queue is
    declared with x-quorum-initial-group-size N, and rabbitmqctl
    list_queues checks that it has N members, and names its leader,
    before the run; a classic queue lives on node 1. Every client
    connects to node 1, where the quorum queue's leader is (the queue is
    declared there, and RabbitMQ places the leader on the declaring node):
    producers and consumers spread over the nodes were no faster (3
    nodes, 2 x 2, 100k items, credit 256, on a 2-core VM where the nodes
    share the cores anyway: 17.5k items/s spread, 18.9k all on node 1,
    medians of 5 runs). With --serve the cluster waits for --server runs;
    with --server, --nodes N only asks a quorum queue for N members. Every
    node and epmd are killed and every directory removed afterwards, also
    on a signal.

    Three queues, --mode:
    - transient: a classic queue, not durable, messages not persistent;
    - durable: a durable classic queue, persistent messages (delivery-mode
      2), confirmed once written and fsynced (or consumed and acked first);
    - quorum: a quorum queue (x-queue-type quorum, one member on one node,
      N with --nodes N), persistent messages, confirmed once the Raft log
      holds them fsynced (on a majority of the members).

    Used the way an expert would, pipelined as far as AMQP allows:
    - producers publish with publisher confirms (confirm.select), up to
      --credit publishes unconfirmed per producer: fill the window, block
      for one frame, take every frame already readable (basic.ack, often
      with `multiple`), fill the window again. An item counts as put only
      once confirmed; a basic.nack or a basic.return (publishes are
      mandatory) fails the run;
    - consumers: basic.qos prefetch-count = credit, basic.consume with
      manual acks, one basic.ack with `multiple` per batch. A batch ends
      when it holds a quarter of the credit, or when no further frame is
      readable at once, whichever comes first. The quarter keeps the
      broker's window open (it may send 3/4 of the credit more while the
      ack travels) with one ack per 64 deliveries at credit 256; the
      "nothing readable" rule acks at once whatever has arrived, so a slow
      trickle or the run's tail never waits for a batch to fill.
    Every item carries its put time and number, as in asyncq-bench.
    basic.ack has no reply: an item counts as done when the ack covering
    it is written to the socket. Throughput runs from the first publish to
    the ack that completes the count, or to the last confirm if that comes
    later (a message can be delivered and acked before its confirm);
    asyncq-bench's runs to the JOINED, which comes after every put is
    confirmed and the broker has taken every ack. */
#include <amqp.h>
#include <amqp_tcp_socket.h>
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "benchlib.h"

#define ITEM_HEADER 16
#define CHANNEL 1
#define FRAME_MAX 131072
#define RUN_TIMEOUT_MS 900000
/*  A node boots in about 5 s on an idle 2-core VM; much longer on a busy
    one. */
#define BOOT_TIMEOUT_MS 120000
#define RPC_TIMEOUT_S 30
/*  rabbitmqctl boots an Erlang VM of its own: seconds on a busy VM. */
#define CTL_TIMEOUT_MS 60000
#define NODES_MAX 5
/*  How long a blocked read waits before the process looks at the stop and
    failed flags again. */
#define POLL_US 100000
/*  Debian's /usr/sbin/rabbitmq-server switches to the rabbitmq user with
    su (its environment and a directory of root's would not follow): the
    script it runs is used instead. */
#define DEFAULT_SERVER "/usr/lib/rabbitmq/bin/rabbitmq-server"

enum { MODE_TRANSIENT, MODE_DURABLE, MODE_QUORUM };
static const char *const MODE_NAMES[] = {"transient", "durable", "quorum"};

typedef struct {
    uint64_t producers, consumers, items, size, credit, nodes;
    int mode, serve;
    const char *server_url;    /* an existing broker, or NULL */
    const char *server_program;
} rabbit_options_t;

typedef struct {
    atomic_uint_fast64_t consumers_ready, producers_ready, failed, go, stop;
    atomic_uint_fast64_t confirmed, deliveries, redelivered, unique, acked, bad_items;
    atomic_int_fast64_t first_put_us, last_ack_us, last_confirm_us;
} shared_t;

/*  Where to connect: the parsed --server URL or our own node. */
typedef struct {
    char host[256], user[128], password[128], vhost[128];
    int port;
} endpoint_t;

static rabbit_options_t g_opts;
static shared_t *g_shared;
static uint32_t *g_confirm_us, *g_delivery_us, *g_ack_us;
static uint8_t *g_seen;
static endpoint_t g_endpoint;
static char g_queue[64];

static uint32_t s_clamp_us(int64_t us)
{
    return us < 0 ? 0 : us >= UINT32_MAX ? UINT32_MAX - 1 : (uint32_t) us;
}

static void s_fail(const char *who, const char *what)
{
    fprintf(stderr, "asyncq-rabbitmq-bench: %s: %s\n", who, what);
    atomic_fetch_add(&g_shared->failed, 1);
}

static int s_stopping(void)
{
    return atomic_load(&g_shared->stop) || atomic_load(&g_shared->failed) || bench_signalled;
}

/*  The server's words from a connection.close or channel.close. */
static void s_close_text(const amqp_method_t *method, char *buf, size_t size)
{
    const amqp_bytes_t *text = NULL;
    uint16_t code = 0;
    if (method->id == AMQP_CONNECTION_CLOSE_METHOD && method->decoded) {
        const amqp_connection_close_t *close = method->decoded;
        text = &close->reply_text, code = close->reply_code;
    } else if (method->id == AMQP_CHANNEL_CLOSE_METHOD && method->decoded) {
        const amqp_channel_close_t *close = method->decoded;
        text = &close->reply_text, code = close->reply_code;
    }
    if (text)
        snprintf(buf, size, "closed by the server: %u %.*s", code, (int) text->len,
                 (const char *) text->bytes);
    else
        snprintf(buf, size, "unexpected method 0x%08x", (unsigned) method->id);
}

/*  An RPC's outcome in words; 1 if it succeeded. */
static int s_reply_ok(amqp_rpc_reply_t reply, char *buf, size_t size)
{
    switch (reply.reply_type) {
    case AMQP_RESPONSE_NORMAL:
        return 1;
    case AMQP_RESPONSE_LIBRARY_EXCEPTION:
        snprintf(buf, size, "%s", amqp_error_string2(reply.library_error));
        return 0;
    case AMQP_RESPONSE_SERVER_EXCEPTION:
        s_close_text(&reply.reply, buf, size);
        return 0;
    default:
        snprintf(buf, size, "no reply");
        return 0;
    }
}

/*  A connection with channel CHANNEL open, or NULL with the reason in
    `why`. Heartbeats off: no process sits idle long enough to need them. */
static amqp_connection_state_t rabbit_connect_to(int port, char *why, size_t size)
{
    amqp_connection_state_t conn = amqp_new_connection();
    amqp_socket_t *tcp = conn ? amqp_tcp_socket_new(conn) : NULL;
    struct timeval connect_timeout = {2, 0}, rpc_timeout = {RPC_TIMEOUT_S, 0};
    int rc = tcp ? amqp_socket_open_noblock(tcp, g_endpoint.host, port, &connect_timeout)
                 : AMQP_STATUS_NO_MEMORY;
    if (rc != AMQP_STATUS_OK) {
        snprintf(why, size, "connect: %s", amqp_error_string2(rc));
        if (conn)
            amqp_destroy_connection(conn);
        return NULL;
    }
    amqp_set_rpc_timeout(conn, &rpc_timeout);
    int ok = s_reply_ok(amqp_login(conn, g_endpoint.vhost, 0, FRAME_MAX, 0,
                                   AMQP_SASL_METHOD_PLAIN, g_endpoint.user, g_endpoint.password),
                        why, size);
    if (ok) {
        amqp_channel_open(conn, CHANNEL);
        ok = s_reply_ok(amqp_get_rpc_reply(conn), why, size);
    }
    if (!ok) {
        amqp_destroy_connection(conn);
        return NULL;
    }
    return conn;
}

/*  To the endpoint: node 1 of ours, or the --server broker. */
static amqp_connection_state_t rabbit_connect(char *why, size_t size)
{
    return rabbit_connect_to(g_endpoint.port, why, size);
}

static void rabbit_close(amqp_connection_state_t conn)
{
    amqp_connection_close(conn, AMQP_REPLY_SUCCESS);
    amqp_destroy_connection(conn);
}

/*  The bench's queue, as --mode says; `passive` only checks it exists.
    A quorum queue on --nodes N > 1 asks for N members (RabbitMQ's default
    is 3 at most). Returns 1, and the count of messages ready (not
    delivered) in *ready. */
static int rabbit_declare(amqp_connection_state_t conn, int passive, uint64_t *ready, char *why,
                          size_t size)
{
    amqp_table_entry_t quorum[2]
        = {{.key = amqp_cstring_bytes("x-queue-type"),
            .value = {.kind = AMQP_FIELD_KIND_UTF8, .value.bytes = amqp_cstring_bytes("quorum")}},
           {.key = amqp_cstring_bytes("x-quorum-initial-group-size"),
            .value = {.kind = AMQP_FIELD_KIND_I32, .value.i32 = (int32_t) g_opts.nodes}}};
    amqp_table_t arguments = {g_opts.mode != MODE_QUORUM ? 0 : g_opts.nodes > 1 ? 2 : 1, quorum};
    amqp_queue_declare_ok_t *ok
        = amqp_queue_declare(conn, CHANNEL, amqp_cstring_bytes(g_queue), passive,
                             g_opts.mode != MODE_TRANSIENT, 0, 0, arguments);
    if (!ok)
        return s_reply_ok(amqp_get_rpc_reply(conn), why, size);
    if (ready)
        *ready = ok->message_count;
    return 1;
}

/*  ---- Producers ---------------------------------------------------------- */

/*  One producer's window. Publishes carry delivery tags 1, 2, ... on the
    channel; tag t is item first + t - 1. Every tag up to `watermark` is
    confirmed; a tag above it may be too (marks[t]) if acks came out of
    order. Publishing stops while `credit` tags wait above the watermark,
    so a tag's put time (sent_us[t % credit]) is never overwritten before
    its confirm. */
typedef struct {
    amqp_connection_state_t conn;
    uint64_t first, count, published, watermark;
    uint8_t *marks;
    int64_t *sent_us;
    uint8_t *item;
    amqp_basic_properties_t properties;
} producer_t;

static int producer_publish(producer_t *p)
{
    uint64_t tag = ++p->published, number = p->first + tag - 1;
    int64_t now = bench_now_us();
    memcpy(p->item, &now, sizeof now);
    memcpy(p->item + 8, &number, sizeof number);
    p->sent_us[tag % g_opts.credit] = now;
    amqp_bytes_t body = {g_opts.size, p->item};
    int rc = amqp_basic_publish(p->conn, CHANNEL, amqp_empty_bytes, amqp_cstring_bytes(g_queue),
                                1, 0, &p->properties, body);
    if (rc != AMQP_STATUS_OK)
        s_fail("producer", amqp_error_string2(rc));
    return rc == AMQP_STATUS_OK;
}

static uint64_t producer_confirm_one(producer_t *p, uint64_t tag, int64_t now)
{
    if (p->marks[tag])
        return 0;
    p->marks[tag] = 1;
    g_confirm_us[p->first + tag - 1] = s_clamp_us(now - p->sent_us[tag % g_opts.credit]);
    return 1;
}

/*  A basic.ack of tag (and every tag below it if `multiple`). */
static int producer_ack(producer_t *p, const amqp_basic_ack_t *ack)
{
    uint64_t tag = ack->multiple && ack->delivery_tag == 0 ? p->published : ack->delivery_tag;
    if (tag == 0 || tag > p->published) {
        s_fail("producer", "basic.ack of a tag never published");
        return 0;
    }
    int64_t now = bench_now_us();
    uint64_t confirmed = 0;
    for (uint64_t t = ack->multiple ? p->watermark + 1 : tag; t <= tag; t++)
        confirmed += producer_confirm_one(p, t, now);
    while (p->watermark < p->published && p->marks[p->watermark + 1])
        p->watermark++;
    if (confirmed && atomic_fetch_add(&g_shared->confirmed, confirmed) + confirmed >= g_opts.items)
        bench_atomic_max(&g_shared->last_confirm_us, now);
    return 1;
}

static int producer_frame(producer_t *p, const amqp_frame_t *frame)
{
    if (frame->frame_type != AMQP_FRAME_METHOD)
        return 1; /* a basic.return's header and body: the return failed the run */
    const amqp_method_t *method = &frame->payload.method;
    char why[256];
    switch (method->id) {
    case AMQP_BASIC_ACK_METHOD:
        return method->decoded && producer_ack(p, method->decoded);
    case AMQP_BASIC_NACK_METHOD:
        s_fail("producer", "basic.nack: the broker refused an item");
        return 0;
    case AMQP_BASIC_RETURN_METHOD:
        s_fail("producer", "basic.return: an item could not be routed to the queue");
        return 0;
    case AMQP_CHANNEL_CLOSE_METHOD:
    case AMQP_CONNECTION_CLOSE_METHOD:
        s_close_text(method, why, sizeof why);
        s_fail("producer", why);
        return 0;
    default:
        return 1;
    }
}

/*  Blocks for one frame (looking at the flags every POLL_US), then takes
    every frame readable without blocking. */
static int producer_read(producer_t *p)
{
    struct timeval wait_tv = {0, POLL_US}, zero_tv = {0, 0};
    int block = 1;
    for (;;) {
        amqp_frame_t frame;
        int rc = amqp_simple_wait_frame_noblock(p->conn, &frame, block ? &wait_tv : &zero_tv);
        if (rc == AMQP_STATUS_TIMEOUT && !block)
            return 1;
        if (rc == AMQP_STATUS_TIMEOUT && s_stopping())
            return 0;
        if (rc == AMQP_STATUS_TIMEOUT)
            continue;
        if (rc != AMQP_STATUS_OK) {
            s_fail("producer", amqp_error_string2(rc));
            return 0;
        }
        if (!producer_frame(p, &frame))
            return 0;
        amqp_maybe_release_buffers(p->conn);
        block = 0;
    }
}

static int producer_loop(producer_t *p)
{
    bench_atomic_min(&g_shared->first_put_us, bench_now_us());
    int ok = 1;
    while (ok && p->watermark < p->count) {
        while (ok && p->published < p->count && p->published - p->watermark < g_opts.credit)
            ok = producer_publish(p);
        ok = ok && producer_read(p);
    }
    return ok;
}

/*  Producer i's items, a contiguous slice. */
static int producer_run(void *arg)
{
    uint64_t i = (uint64_t) (uintptr_t) arg;
    producer_t p = {.first = g_opts.items * i / g_opts.producers};
    p.count = g_opts.items * (i + 1) / g_opts.producers - p.first;
    p.properties._flags = AMQP_BASIC_DELIVERY_MODE_FLAG;
    p.properties.delivery_mode = g_opts.mode == MODE_TRANSIENT ? 1 : 2;
    char why[256];
    p.conn = rabbit_connect(why, sizeof why);
    if (!p.conn) {
        s_fail("producer", why);
        return 1;
    }
    int ok = amqp_confirm_select(p.conn, CHANNEL) != NULL
             || s_reply_ok(amqp_get_rpc_reply(p.conn), why, sizeof why);
    p.marks = calloc(p.count + 1, 1);
    p.sent_us = calloc(g_opts.credit, sizeof *p.sent_us);
    p.item = calloc(1, g_opts.size);
    if (!ok || !p.marks || !p.sent_us || !p.item)
        s_fail("producer", ok ? "no memory" : why);
    else {
        atomic_fetch_add(&g_shared->producers_ready, 1);
        bench_wait_count(&g_shared->go, 1, &g_shared->failed, -1);
        ok = !s_stopping() && producer_loop(&p);
    }
    free(p.marks);
    free(p.sent_us);
    free(p.item);
    rabbit_close(p.conn);
    return ok ? 0 : 1;
}

/*  ---- Consumers ---------------------------------------------------------- */

/*  A delivery comes as three frames or more: basic.deliver, a header with
    the body's size, body fragments. The batch holds the items delivered
    and not yet acked; `last_tag` is the highest delivery tag among them,
    which one ack with `multiple` covers. */
typedef struct {
    amqp_connection_state_t conn;
    enum { WANT_DELIVER, WANT_HEADER, WANT_BODY } state;
    uint64_t tag, body_size, body_got, number;
    int64_t sent_us;
    int valid;
    uint64_t last_tag, batch_count, ack_every;
    uint64_t *batch_number;
    int64_t *batch_sent_us;
} consumer_t;

/*  One ack with `multiple` for the whole batch. */
static int consumer_ack(consumer_t *c)
{
    int rc = amqp_basic_ack(c->conn, CHANNEL, c->last_tag, 1);
    if (rc != AMQP_STATUS_OK) {
        s_fail("consumer", amqp_error_string2(rc));
        return 0;
    }
    int64_t now = bench_now_us();
    for (uint64_t i = 0; i < c->batch_count; i++)
        if (c->batch_number[i] < g_opts.items)
            g_ack_us[c->batch_number[i]] = s_clamp_us(now - c->batch_sent_us[i]);
    uint64_t acked = c->batch_count;
    c->batch_count = 0;
    if (atomic_fetch_add(&g_shared->acked, acked) + acked >= g_opts.items)
        bench_atomic_max(&g_shared->last_ack_us, now);
    return 1;
}

/*  A whole delivery arrived: record it, add it to the batch. */
static int consumer_complete(consumer_t *c)
{
    int64_t now = bench_now_us();
    c->state = WANT_DELIVER;
    if (!c->valid || c->number >= g_opts.items) {
        atomic_fetch_add(&g_shared->bad_items, 1);
        c->number = UINT64_MAX;
    } else if (!__atomic_exchange_n(&g_seen[c->number], 1, __ATOMIC_SEQ_CST)) {
        g_delivery_us[c->number] = s_clamp_us(now - c->sent_us);
        atomic_fetch_add(&g_shared->unique, 1);
    }
    c->batch_number[c->batch_count] = c->number;
    c->batch_sent_us[c->batch_count++] = c->sent_us;
    c->last_tag = c->tag;
    return c->batch_count < c->ack_every || consumer_ack(c);
}

static int consumer_method(consumer_t *c, const amqp_method_t *method)
{
    char why[256];
    if (method->id == AMQP_BASIC_DELIVER_METHOD && method->decoded && c->state == WANT_DELIVER) {
        const amqp_basic_deliver_t *deliver = method->decoded;
        c->tag = deliver->delivery_tag;
        c->state = WANT_HEADER;
        atomic_fetch_add(&g_shared->deliveries, 1);
        if (deliver->redelivered)
            atomic_fetch_add(&g_shared->redelivered, 1);
        return 1;
    }
    if (method->id == AMQP_BASIC_CANCEL_METHOD)
        snprintf(why, sizeof why, "basic.cancel: the broker ended the subscription");
    else if (method->id == AMQP_BASIC_DELIVER_METHOD)
        snprintf(why, sizeof why, "basic.deliver in the middle of a delivery");
    else
        s_close_text(method, why, sizeof why);
    s_fail("consumer", why);
    return 0;
}

/*  The first fragment holds the item's header (frame-max is far above
    16 bytes). */
static int consumer_frame(consumer_t *c, const amqp_frame_t *frame)
{
    if (frame->frame_type == AMQP_FRAME_METHOD)
        return consumer_method(c, &frame->payload.method);
    if (frame->frame_type == AMQP_FRAME_HEADER && c->state == WANT_HEADER) {
        c->body_size = frame->payload.properties.body_size;
        c->body_got = 0;
        c->valid = 0;
        c->state = WANT_BODY;
        return c->body_size > 0 || consumer_complete(c);
    }
    if (frame->frame_type == AMQP_FRAME_BODY && c->state == WANT_BODY) {
        const amqp_bytes_t *fragment = &frame->payload.body_fragment;
        if (c->body_got == 0 && fragment->len >= ITEM_HEADER) {
            memcpy(&c->sent_us, fragment->bytes, sizeof c->sent_us);
            memcpy(&c->number, (const char *) fragment->bytes + 8, sizeof c->number);
            c->valid = 1;
        }
        c->body_got += fragment->len;
        return c->body_got < c->body_size || consumer_complete(c);
    }
    if (frame->frame_type == AMQP_FRAME_HEARTBEAT)
        return 1;
    s_fail("consumer", "a header or body frame out of place");
    return 0;
}

/*  Waits up to POLL_US for a frame while the batch is empty; with a batch
    held, looks only at what is readable now, and acks when nothing is. */
static int consumer_loop(consumer_t *c)
{
    struct timeval wait_tv = {0, POLL_US}, zero_tv = {0, 0};
    int ok = 1;
    while (ok && !atomic_load(&g_shared->stop)) {
        amqp_frame_t frame;
        int rc = amqp_simple_wait_frame_noblock(c->conn, &frame,
                                                c->batch_count ? &zero_tv : &wait_tv);
        if (rc == AMQP_STATUS_TIMEOUT) {
            ok = c->batch_count == 0 || consumer_ack(c);
            continue;
        }
        if (rc != AMQP_STATUS_OK) {
            s_fail("consumer", amqp_error_string2(rc));
            return 0;
        }
        ok = consumer_frame(c, &frame);
        amqp_maybe_release_buffers(c->conn);
    }
    return ok;
}

static int consumer_subscribe(consumer_t *c, char *why, size_t size)
{
    if (!amqp_basic_qos(c->conn, CHANNEL, 0, (uint16_t) g_opts.credit, 0))
        return s_reply_ok(amqp_get_rpc_reply(c->conn), why, size);
    if (!amqp_basic_consume(c->conn, CHANNEL, amqp_cstring_bytes(g_queue), amqp_empty_bytes, 0,
                            0, 0, amqp_empty_table))
        return s_reply_ok(amqp_get_rpc_reply(c->conn), why, size);
    return 1;
}

/*  The connection is closed cleanly at the end: after the close-ok, the
    broker has taken every ack sent before it, and anything unacked is back
    in the queue, where the main process counts it. */
static int consumer_run(void *arg)
{
    (void) arg;
    consumer_t c = {.state = WANT_DELIVER, .ack_every = g_opts.credit / 4 ? g_opts.credit / 4 : 1};
    char why[256];
    c.conn = rabbit_connect(why, sizeof why);
    if (!c.conn) {
        s_fail("consumer", why);
        return 1;
    }
    c.batch_number = calloc(g_opts.credit, sizeof *c.batch_number);
    c.batch_sent_us = calloc(g_opts.credit, sizeof *c.batch_sent_us);
    int ok = c.batch_number && c.batch_sent_us && consumer_subscribe(&c, why, sizeof why);
    if (!ok)
        s_fail("consumer", c.batch_number && c.batch_sent_us ? why : "no memory");
    else {
        atomic_fetch_add(&g_shared->consumers_ready, 1);
        ok = consumer_loop(&c);
    }
    free(c.batch_number);
    free(c.batch_sent_us);
    rabbit_close(c.conn);
    return ok ? 0 : 1;
}

/*  ---- The nodes ---------------------------------------------------------- */

/*  One node of our own: its VM, the write end of its stdin, its ports,
    its Erlang node name and its directory. */
typedef struct {
    pid_t pid;
    int stdin_fd, amqp_port, dist_port;
    char name[96], dir[1024];
} node_t;

/*  --nodes of them and the epmd they share. Node 1 (nodes[0]) boots
    first; the others join it, and every client connects to it. `members`
    and `leader` (a node's number, 0 if none of ours) are the quorum
    queue's, as rabbitmqctl tells them. */
typedef struct {
    pid_t epmd;
    int epmd_port, count, members, leader;
    int64_t boot_us;
    node_t nodes[NODES_MAX];
} cluster_t;

static int s_port_open(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        return 0;
    struct sockaddr_in address = {.sin_family = AF_INET, .sin_port = htons((uint16_t) port)};
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int listening = connect(fd, (struct sockaddr *) &address, sizeof address) == 0;
    close(fd);
    return listening;
}

/*  A free port none of `taken` (count of them) has. */
static int s_free_port_besides(const int *taken, int count)
{
    for (int attempt = 0; attempt < 100; attempt++) {
        int port = bench_free_port(), clash = 0;
        for (int i = 0; i < count; i++)
            clash |= port == taken[i];
        if (port && !clash)
            return port;
    }
    return 0;
}

/*  epmd of our own on a free port, so the nodes never register with (or
    start) the system's; every node of the cluster registers with this
    one, and finds the others through it. Polls until it listens. */
static int node_start_epmd(cluster_t *cluster)
{
    char port[16];
    snprintf(port, sizeof port, "%d", cluster->epmd_port);
    cluster->epmd = fork();
    if (cluster->epmd == 0) {
        bench_child_output(cluster->nodes[0].dir, "epmd.log");
        execlp("epmd", "epmd", "-port", port, "-address", "127.0.0.1", (char *) NULL);
        _exit(127);
    }
    if (cluster->epmd < 0)
        return 0;
    bench_track(cluster->epmd);
    int64_t deadline = bench_now_us() + 10000000;
    while (!s_port_open(cluster->epmd_port)) {
        if (bench_signalled || bench_now_us() >= deadline || waitpid(cluster->epmd, NULL, WNOHANG))
            return 0;
        bench_sleep_us(10000);
    }
    return 1;
}

/*  A node's environment, in the child before exec. Everything lives in
    `dir`: HOME (the Erlang cookie, the same in every node's), the Mnesia
    and quorum data, the logs, an empty plugin list (no management
    plugin), an empty rabbitmq-env.conf in place of /etc's. The script
    runs the node as root as well. RABBITMQ_ALLOW_INPUT makes the script
    exec the VM (so our pid is the VM's, and bench_track can kill it)
    instead of staying as a shell that forwards signals; the VM then reads
    an Erlang shell's input from stdin, a pipe we never write to, and
    stops when it reads EOF, that is when every process of this bench has
    gone. rabbitmqctl, run in the same environment, finds the node
    through our epmd with the same cookie. */
static void node_environment(const cluster_t *cluster, const node_t *node)
{
    char value[1200];
    setenv("HOME", node->dir, 1);
    setenv("RABBITMQ_NODENAME", node->name, 1);
    setenv("RABBITMQ_NODE_IP_ADDRESS", "127.0.0.1", 1);
    snprintf(value, sizeof value, "%d", node->amqp_port);
    setenv("RABBITMQ_NODE_PORT", value, 1);
    snprintf(value, sizeof value, "%d", node->dist_port);
    setenv("RABBITMQ_DIST_PORT", value, 1);
    snprintf(value, sizeof value, "%d", cluster->epmd_port);
    setenv("ERL_EPMD_PORT", value, 1);
    setenv("RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS",
           "-start_epmd false -kernel inet_dist_use_interface {127,0,0,1}", 1);
    const char *paths[][2] = {{"RABBITMQ_MNESIA_BASE", "mnesia"},
                              {"RABBITMQ_LOG_BASE", "log"},
                              {"RABBITMQ_CONFIG_FILE", "rabbitmq.conf"},
                              {"RABBITMQ_ADVANCED_CONFIG_FILE", "advanced.config"},
                              {"RABBITMQ_ENABLED_PLUGINS_FILE", "enabled_plugins"},
                              {"RABBITMQ_CONF_ENV_FILE", "rabbitmq-env.conf"}};
    for (size_t i = 0; i < sizeof paths / sizeof paths[0]; i++) {
        snprintf(value, sizeof value, "%s/%s", node->dir, paths[i][1]);
        setenv(paths[i][0], value, 1);
    }
    setenv("RABBITMQ_ALLOW_INPUT", "true", 1);
}

/*  A cookie of 20 capitals, for every node of the cluster. */
static int s_cookie(char *buf, size_t size)
{
    unsigned char bytes[20];
    int fd = open("/dev/urandom", O_RDONLY);
    int ok = fd >= 0 && read(fd, bytes, sizeof bytes) == (ssize_t) sizeof bytes
             && size > sizeof bytes;
    if (fd >= 0)
        close(fd);
    for (size_t i = 0; ok && i < sizeof bytes; i++)
        buf[i] = (char) ('A' + bytes[i] % 26);
    if (ok)
        buf[sizeof bytes] = '\0';
    return ok;
}

/*  Erlang refuses a cookie file that others may read. */
static int s_write_cookie(const char *dir, const char *cookie)
{
    char path[1200];
    snprintf(path, sizeof path, "%s/.erlang.cookie", dir);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0400);
    size_t length = strlen(cookie);
    int ok = fd >= 0 && write(fd, cookie, length) == (ssize_t) length;
    if (fd >= 0)
        ok = close(fd) == 0 && ok;
    return ok;
}

/*  Nodes 2 and on find node 1 in their config (classic peer discovery),
    and join it as they boot, node 1 being up by then. */
static int node_write_files(const cluster_t *cluster, const node_t *node, const char *cookie)
{
    char config[512];
    int length = snprintf(config, sizeof config,
                          "# asyncq-rabbitmq-bench: defaults, loopback only\n"
                          "loopback_users.guest = true\n");
    if (node != &cluster->nodes[0])
        snprintf(config + length, sizeof config - (size_t) length,
                 "cluster_formation.peer_discovery_backend = classic_config\n"
                 "cluster_formation.classic_config.nodes.1 = %s\n",
                 cluster->nodes[0].name);
    return bench_write_file(node->dir, "enabled_plugins", "[].\n")
           && bench_write_file(node->dir, "rabbitmq.conf", config)
           && bench_write_file(node->dir, "rabbitmq-env.conf", "")
           && s_write_cookie(node->dir, cookie);
}

static int node_start_server(const cluster_t *cluster, node_t *node)
{
    int fds[2];
    if (pipe(fds) != 0)
        return 0;
    fcntl(fds[1], F_SETFD, FD_CLOEXEC);
    node->pid = fork();
    if (node->pid == 0) {
        bench_child_output(node->dir, "rabbitmq.log");
        dup2(fds[0], 0);
        close(fds[0]);
        node_environment(cluster, node);
        execlp(g_opts.server_program, g_opts.server_program, (char *) NULL);
        fprintf(stderr, "cannot run %s: %s\n", g_opts.server_program, strerror(errno));
        _exit(127);
    }
    close(fds[0]);
    node->stdin_fd = fds[1];
    if (node->pid < 0)
        return 0;
    bench_track(node->pid);
    return 1;
}

/*  Polls an AMQP login until it works (a node opens its listener once
    booted, after joining the cluster), the node exits, or BOOT_TIMEOUT_MS
    passes since `start_us`, when it was started. */
static int node_wait_ready(const node_t *node, int number, int64_t start_us)
{
    int64_t deadline = start_us + (int64_t) BOOT_TIMEOUT_MS * 1000;
    char why[256] = "";
    for (;;) {
        amqp_connection_state_t conn = rabbit_connect_to(node->amqp_port, why, sizeof why);
        if (conn) {
            rabbit_close(conn);
            return 1;
        }
        if (waitpid(node->pid, NULL, WNOHANG) != 0) {
            fprintf(stderr, "asyncq-rabbitmq-bench: node %d exited while starting\n", number);
            return 0;
        }
        if (bench_signalled || bench_now_us() >= deadline) {
            fprintf(stderr, "asyncq-rabbitmq-bench: node %d did not start (%s)\n", number, why);
            return 0;
        }
        bench_sleep_us(20000);
    }
}

/*  The last lines of a node's output, to say why it failed before its
    directory goes. */
static void node_print_log(const node_t *node, int number)
{
    char path[1200], line[512], tail[20][512];
    snprintf(path, sizeof path, "%s/rabbitmq.log", node->dir);
    FILE *file = fopen(path, "r");
    size_t count = 0;
    while (file && fgets(line, sizeof line, file))
        snprintf(tail[count++ % 20], sizeof tail[0], "%s", line);
    if (file)
        fclose(file);
    fprintf(stderr, "asyncq-rabbitmq-bench: node %d's output ends:\n", number);
    for (size_t i = count > 20 ? count - 20 : 0; i < count; i++)
        fprintf(stderr, "  %s", tail[i % 20]);
}

/*  rabbitmqctl (beside the server script, else from PATH) against node 1,
    with `args` after `-q -n NODE`; its stdout in `out`, its stderr in node
    1's rabbitmqctl.log. 1 if it exited with status 0 within CTL_TIMEOUT_MS.
    The tool is an Erlang node too: it listens on a free port of ours
    (the script's range, from 35672, may be another's). */
static int cluster_ctl(const cluster_t *cluster, const char *const *args, char *out, size_t size)
{
    const node_t *node = &cluster->nodes[0];
    char program[1200], port[16];
    const char *slash = strrchr(g_opts.server_program, '/');
    if (slash)
        snprintf(program, sizeof program, "%.*s/rabbitmqctl",
                 (int) (slash - g_opts.server_program), g_opts.server_program);
    else
        snprintf(program, sizeof program, "rabbitmqctl");
    snprintf(port, sizeof port, "%d", s_free_port_besides(NULL, 0));
    const char *argv[16] = {program, "-q", "-n", node->name};
    size_t argc = 4;
    while (*args && argc < sizeof argv / sizeof argv[0] - 1)
        argv[argc++] = *args++;
    argv[argc] = NULL;
    int fds[2];
    if (pipe(fds) != 0)
        return 0;
    pid_t pid = fork();
    if (pid == 0) {
        bench_child_output(node->dir, "rabbitmqctl.log");
        dup2(fds[1], 1);
        close(fds[0]);
        close(fds[1]);
        node_environment(cluster, node);
        setenv("RABBITMQ_CTL_DIST_PORT_MIN", port, 1);
        setenv("RABBITMQ_CTL_DIST_PORT_MAX", port, 1);
        execvp(program, (char *const *) argv);
        fprintf(stderr, "cannot run %s: %s\n", program, strerror(errno));
        _exit(127);
    }
    close(fds[1]);
    if (pid < 0) {
        close(fds[0]);
        return 0;
    }
    bench_track(pid);
    fcntl(fds[0], F_SETFL, O_NONBLOCK);
    size_t got = 0;
    int64_t deadline = bench_now_us() + (int64_t) CTL_TIMEOUT_MS * 1000;
    for (;;) {
        char discard[256];
        ssize_t n = got + 1 < size ? read(fds[0], out + got, size - 1 - got)
                                   : read(fds[0], discard, sizeof discard);
        if (n > 0 && got + 1 < size)
            got += (size_t) n;
        if (n == 0 || bench_signalled || bench_now_us() >= deadline)
            break;
        if (n < 0)
            bench_sleep_us(10000);
    }
    close(fds[0]);
    if (size)
        out[got] = '\0';
    int64_t left_ms = (deadline - bench_now_us()) / 1000;
    int done = bench_wait(pid, bench_signalled || left_ms < 0 ? 0 : (int) left_ms);
    if (done < 0) {
        bench_untrack(pid);
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
    }
    return done == 1;
}

/*  Every node in the cluster, as node 1 sees it. */
static int cluster_check_joined(const cluster_t *cluster)
{
    char count[16], out[1024];
    snprintf(count, sizeof count, "%d", cluster->count);
    const char *args[] = {"await_online_nodes", count, "--timeout", "10", NULL};
    int ok = cluster_ctl(cluster, args, out, sizeof out);
    if (!ok && !bench_signalled)
        fprintf(stderr, "asyncq-rabbitmq-bench: the nodes did not form one cluster of %d"
                        " (rabbitmqctl await_online_nodes)\n",
                cluster->count);
    return ok;
}

/*  Ports for epmd and each node (AMQP, distribution), node 1's as the
    endpoint; the files, epmd, node 1, then the others at once. */
static int cluster_start(cluster_t *cluster)
{
    int64_t start = bench_now_us();
    int taken[1 + 2 * NODES_MAX] = {0}, ports = 1 + 2 * cluster->count, ok = 1;
    for (int i = 0; i < ports; i++) {
        taken[i] = s_free_port_besides(taken, i);
        ok = ok && taken[i];
    }
    cluster->epmd_port = taken[0];
    for (int i = 0; i < cluster->count; i++) {
        node_t *node = &cluster->nodes[i];
        node->amqp_port = taken[1 + 2 * i];
        node->dist_port = taken[2 + 2 * i];
        snprintf(node->name, sizeof node->name, "asyncq-bench-%d-%d@localhost", (int) getpid(),
                 i + 1);
    }
    g_endpoint.port = cluster->nodes[0].amqp_port;
    snprintf(g_endpoint.host, sizeof g_endpoint.host, "127.0.0.1");
    snprintf(g_endpoint.user, sizeof g_endpoint.user, "guest");
    snprintf(g_endpoint.password, sizeof g_endpoint.password, "guest");
    snprintf(g_endpoint.vhost, sizeof g_endpoint.vhost, "/");
    char cookie[32];
    ok = ok && s_cookie(cookie, sizeof cookie);
    for (int i = 0; ok && i < cluster->count; i++)
        ok = node_write_files(cluster, &cluster->nodes[i], cookie);
    ok = ok && node_start_epmd(cluster) && node_start_server(cluster, &cluster->nodes[0]);
    int failed = 1, joined = 1; /* the node whose log tells why */
    ok = ok && node_wait_ready(&cluster->nodes[0], 1, start);
    int64_t others = bench_now_us();
    for (int i = 1; ok && i < cluster->count; i++)
        ok = node_start_server(cluster, &cluster->nodes[i]);
    for (int i = 1; ok && i < cluster->count; i++)
        if (!(ok = node_wait_ready(&cluster->nodes[i], i + 1, others)))
            failed = i + 1;
    if (ok && cluster->count > 1)
        ok = joined = cluster_check_joined(cluster);
    cluster->boot_us = bench_now_us() - start;
    if (!ok && !bench_signalled && joined)
        node_print_log(&cluster->nodes[failed - 1], failed);
    /* A node that found no peer booted alone, and its log says so. */
    for (int i = 1; !ok && !bench_signalled && !joined && i < cluster->count; i++)
        node_print_log(&cluster->nodes[i], i + 1);
    return ok;
}

/*  The quorum queue's members and leader, from rabbitmqctl list_queues:
    one line, the queue's name, its members ([a@localhost, b@localhost])
    and its leader, tab apart. */
static int cluster_check_members(cluster_t *cluster)
{
    char out[4096];
    const char *args[] = {"list_queues", "--no-table-headers", "name", "members", "leader", NULL};
    int ok = cluster_ctl(cluster, args, out, sizeof out);
    size_t length = strlen(g_queue);
    char *line = ok ? out : NULL;
    while (line && !(strncmp(line, g_queue, length) == 0 && line[length] == '\t')) {
        line = strchr(line, '\n');
        line = line ? line + 1 : NULL;
    }
    char *members = line ? line + length : NULL;
    char *leader = members ? strchr(members + 1, '\t') : NULL;
    if (!leader && !bench_signalled)
        fprintf(stderr, "asyncq-rabbitmq-bench: rabbitmqctl list_queues: no members for %s\n",
                g_queue);
    if (!leader)
        return 0;
    *leader++ = '\0';
    leader[strcspn(leader, "\r\n")] = '\0';
    cluster->members = cluster->leader = 0;
    for (int i = 0; i < cluster->count; i++) {
        cluster->members += strstr(members, cluster->nodes[i].name) != NULL;
        if (strcmp(leader, cluster->nodes[i].name) == 0)
            cluster->leader = i + 1;
    }
    if (cluster->members == cluster->count)
        return 1;
    fprintf(stderr, "asyncq-rabbitmq-bench: quorum queue %s has %d members, not %d:%s\n",
            g_queue, cluster->members, cluster->count, members);
    return 0;
}

/*  Nothing of the nodes is kept: SIGKILL, then their directories go. */
static void cluster_stop(cluster_t *cluster)
{
    for (int i = 0; i <= cluster->count; i++) {
        pid_t pid = i < cluster->count ? cluster->nodes[i].pid : cluster->epmd;
        if (pid > 0) {
            bench_untrack(pid);
            kill(pid, SIGKILL);
            waitpid(pid, NULL, 0);
        }
        if (i < cluster->count) {
            if (cluster->nodes[i].stdin_fd >= 0)
                close(cluster->nodes[i].stdin_fd);
            cluster->nodes[i].pid = -1;
            cluster->nodes[i].stdin_fd = -1;
        }
    }
    cluster->epmd = -1;
}

/*  ---- Options, the run, the figures -------------------------------------- */

static int s_parse_url(const char *url)
{
    struct amqp_connection_info info;
    char *copy = strdup(url);
    int ok = copy && amqp_parse_url(copy, &info) == AMQP_STATUS_OK;
    if (ok) {
        snprintf(g_endpoint.host, sizeof g_endpoint.host, "%s", info.host);
        snprintf(g_endpoint.user, sizeof g_endpoint.user, "%s", info.user);
        snprintf(g_endpoint.password, sizeof g_endpoint.password, "%s", info.password);
        snprintf(g_endpoint.vhost, sizeof g_endpoint.vhost, "%s", info.vhost);
        g_endpoint.port = info.port;
        ok = !info.ssl;
    }
    free(copy);
    return ok;
}

static void s_usage(void)
{
    printf("Usage: asyncq-rabbitmq-bench [OPTIONS]\n"
           "  -p, --producers N     producer processes (1)\n"
           "  -c, --consumers N     consumer processes (1)\n"
           "  -n, --items N         items in all (100000; k and M suffixes)\n"
           "  -s, --size BYTES      item size (64; at least 16: put time and item number)\n"
           "      --credit N        unconfirmed publishes per producer, and each\n"
           "                        consumer's prefetch-count (256; at most 65535)\n"
           "      --mode MODE       transient (classic queue, nothing persisted), durable\n"
           "                        (durable classic queue, persistent messages), quorum\n"
           "                        (quorum queue); the default is durable\n"
           "      --server URL      use a running broker and a queue of its own, deleted\n"
           "                        afterwards (amqp://user:pass@host:port[/vhost]; no path:\n"
           "                        vhost /, a trailing / alone: the empty vhost)\n"
           "      --serve           start the node(s), print READY and node 1's URL, keep\n"
           "                        them until stdin ends or a signal comes (for runs with\n"
           "                        --server)\n"
           "      --nodes N         a cluster of N nodes on this host (1 to 5; 1): node 1\n"
           "                        boots first, the others join it; every client connects\n"
           "                        to node 1. A quorum queue gets N members (checked with\n"
           "                        rabbitmqctl), a classic queue lives on node 1. With\n"
           "                        --server: only asks a quorum queue for N members\n"
           "      --rabbitmq-server P  the nodes' start script (default\n"
           "                        " DEFAULT_SERVER ",\n"
           "                        else rabbitmq-server from PATH; rabbitmqctl beside it)\n"
           "Items/s from the first publish to the basic.ack that completes the count (as\n"
           "written to the socket: basic.ack has no reply), or to the last confirm if\n"
           "later. Publisher confirms; an item counts as put once confirmed.\n");
}

static int s_parse_mode(const char *text, int *mode)
{
    for (int i = 0; i < (int) (sizeof MODE_NAMES / sizeof MODE_NAMES[0]); i++)
        if (strcmp(text, MODE_NAMES[i]) == 0) {
            *mode = i;
            return 1;
        }
    return 0;
}

static int s_parse(int argc, char **argv, rabbit_options_t *opts)
{
    static const struct option options[] = {
        {"producers", required_argument, 0, 'p'}, {"consumers", required_argument, 0, 'c'},
        {"items", required_argument, 0, 'n'},     {"size", required_argument, 0, 's'},
        {"credit", required_argument, 0, 'C'},    {"mode", required_argument, 0, 'M'},
        {"server", required_argument, 0, 'S'},    {"rabbitmq-server", required_argument, 0, 'R'},
        {"serve", no_argument, 0, 'V'},           {"nodes", required_argument, 0, 'N'},
        {"help", no_argument, 0, 'h'},            {0, 0, 0, 0}};
    const char *program = access(DEFAULT_SERVER, X_OK) == 0 ? DEFAULT_SERVER : "rabbitmq-server";
    *opts = (rabbit_options_t){1, 1, 100000, 64, 256, 1, MODE_DURABLE, 0, NULL, program};
    int opt;
    while ((opt = getopt_long(argc, argv, "p:c:n:s:h", options, NULL)) != -1) {
        uint64_t *target = opt == 'p' ? &opts->producers : opt == 'c' ? &opts->consumers
                         : opt == 'n' ? &opts->items : opt == 's' ? &opts->size
                         : opt == 'C' ? &opts->credit : opt == 'N' ? &opts->nodes : NULL;
        if (opt == 'h') {
            s_usage();
            exit(0);
        } else if (opt == 'M' && s_parse_mode(optarg, &opts->mode)) {
            continue;
        } else if (opt == 'S' && s_parse_url(optarg)) {
            opts->server_url = optarg;
        } else if (opt == 'R') {
            opts->server_program = optarg;
        } else if (opt == 'V') {
            opts->serve = 1;
        } else if (!target || !bench_parse_u64(optarg, target) || *target == 0) {
            fprintf(stderr, "asyncq-rabbitmq-bench: bad option or value (see --help)\n");
            return 0;
        }
    }
    if (optind < argc || opts->credit > 65535 || opts->producers + opts->consumers > 200
        || opts->nodes > NODES_MAX || (opts->serve && opts->server_url)) {
        fprintf(stderr, "asyncq-rabbitmq-bench: bad arguments (see --help)\n");
        return 0;
    }
    if (opts->size < ITEM_HEADER)
        opts->size = ITEM_HEADER;
    return 1;
}

/*  The queue and where it lives, for the first line. */
static void s_mode_text(const cluster_t *cluster, char *buf, size_t size)
{
    const char *queue = g_opts.mode == MODE_TRANSIENT ? "transient classic queue"
                      : g_opts.mode == MODE_DURABLE   ? "durable classic queue"
                                                      : "quorum queue";
    const char *messages = g_opts.mode == MODE_TRANSIENT ? "messages not persistent"
                                                         : "persistent messages";
    char leader[64] = "leader not among them";
    if (cluster->leader)
        snprintf(leader, sizeof leader, "leader node %d", cluster->leader);
    if (g_opts.server_url && g_opts.mode == MODE_QUORUM && g_opts.nodes > 1)
        snprintf(buf, size, "%s of %d members asked (--server: not checked), %s", queue,
                 (int) g_opts.nodes, messages);
    else if (g_opts.server_url || cluster->count == 1)
        snprintf(buf, size, "%s%s, %s", queue,
                 g_opts.mode == MODE_QUORUM && !g_opts.server_url ? " of 1 member" : "",
                 messages);
    else if (g_opts.mode == MODE_QUORUM)
        snprintf(buf, size, "quorum queue of %d members on %d nodes (%s; every client connects"
                 " to node 1), %s",
                 cluster->members, cluster->count, leader, messages);
    else
        snprintf(buf, size, "%s on node 1 of %d (every client connects to node 1), %s", queue,
                 cluster->count, messages);
}

/*  What the broker still holds once the consumers have closed: messages
    ready (unacked ones went back to the queue on close). */
static long long rabbit_leftovers(int delete)
{
    char why[256];
    amqp_connection_state_t conn = rabbit_connect(why, sizeof why);
    if (!conn)
        return -1;
    uint64_t ready = 0;
    long long left = rabbit_declare(conn, 1, &ready, why, sizeof why) ? (long long) ready : -1;
    if (delete && left >= 0)
        amqp_queue_delete(conn, CHANNEL, amqp_cstring_bytes(g_queue), 0, 0);
    rabbit_close(conn);
    return left;
}

/*  Each node's peak RSS, and how long the nodes took to boot (and to
    form one cluster). */
static void s_print_nodes(const cluster_t *cluster, const uint64_t *peak_kib)
{
    if (g_opts.server_url)
        return;
    printf("  rabbitmq-server peak RSS");
    if (cluster->count > 1)
        printf(", nodes 1 to %d:", cluster->count);
    for (int i = 0; i < cluster->count; i++)
        printf("%s %.1f", i ? "," : "", peak_kib[i] / 1024.0);
    printf(" MiB; booted%s in %.1f s\n", cluster->count > 1 ? " and clustered" : "",
           (double) cluster->boot_us / 1e6);
}

static void s_print(const cluster_t *cluster, const uint64_t *peak_kib, long long left)
{
    char mode[512];
    s_mode_text(cluster, mode, sizeof mode);
    printf("asyncq-rabbitmq-bench: throughput, %llu producers, %llu consumers, %llu items of %llu"
           " bytes, credit %llu, %s; publisher confirms, %llu unconfirmed per producer;"
           " prefetch %llu, one ack (multiple) per %llu deliveries or when none is readable\n",
           (unsigned long long) g_opts.producers, (unsigned long long) g_opts.consumers,
           (unsigned long long) g_opts.items, (unsigned long long) g_opts.size,
           (unsigned long long) g_opts.credit, mode, (unsigned long long) g_opts.credit,
           (unsigned long long) g_opts.credit,
           (unsigned long long) (g_opts.credit / 4 ? g_opts.credit / 4 : 1));
    bench_print_window(g_opts.items, atomic_load(&g_shared->first_put_us),
                       atomic_load(&g_shared->last_ack_us),
                       atomic_load(&g_shared->last_confirm_us), "basic.ack", "confirm",
                       "basic.ack has no reply");
    bench_print_percentiles("put->confirm", g_confirm_us, g_opts.items);
    bench_print_percentiles("put->deliver", g_delivery_us, g_opts.items);
    bench_print_percentiles("put->ack", g_ack_us, g_opts.items);
    printf("  every item acked: %llu items confirmed, %llu delivered, %llu acks sent (items);"
           " deliveries %llu (%llu redelivered); left: %lld messages ready after the consumers"
           " closed\n",
           (unsigned long long) atomic_load(&g_shared->confirmed),
           (unsigned long long) atomic_load(&g_shared->unique),
           (unsigned long long) atomic_load(&g_shared->acked),
           (unsigned long long) atomic_load(&g_shared->deliveries),
           (unsigned long long) atomic_load(&g_shared->redelivered), left);
    s_print_nodes(cluster, peak_kib);
}

/*  The queue (on nodes of ours, a quorum queue's members checked), the
    consumers, then the producers, each waiting for the one before. */
static int s_start_clients(cluster_t *cluster)
{
    char why[256];
    amqp_connection_state_t conn = rabbit_connect(why, sizeof why);
    int ok = conn && rabbit_declare(conn, 0, NULL, why, sizeof why);
    if (conn)
        rabbit_close(conn);
    if (!ok) {
        fprintf(stderr, "asyncq-rabbitmq-bench: queue %s: %s\n", g_queue, why);
        return 0;
    }
    cluster->members = 1;
    if (!g_opts.server_url && g_opts.mode == MODE_QUORUM && cluster->count > 1
        && !cluster_check_members(cluster))
        return 0;
    for (uint64_t i = 0; i < g_opts.consumers; i++)
        if (bench_fork(consumer_run, (void *) (uintptr_t) i) < 0)
            return 0;
    if (!bench_wait_count(&g_shared->consumers_ready, g_opts.consumers, &g_shared->failed, 30000))
        return 0;
    for (uint64_t i = 0; i < g_opts.producers; i++)
        if (bench_fork(producer_run, (void *) (uintptr_t) i) < 0)
            return 0;
    return bench_wait_count(&g_shared->producers_ready, g_opts.producers, &g_shared->failed,
                            30000);
}

static int s_run(cluster_t *cluster, uint64_t *peak_kib, long long *left)
{
    int ok = (g_opts.server_url || cluster_start(cluster)) && s_start_clients(cluster);
    if (ok) {
        atomic_store(&g_shared->go, 1);
        ok = bench_wait_count(&g_shared->acked, g_opts.items, &g_shared->failed, RUN_TIMEOUT_MS)
             && bench_wait_count(&g_shared->confirmed, g_opts.items, &g_shared->failed, 60000);
    }
    atomic_store(&g_shared->stop, 1);
    for (int i = 0; i < cluster->count; i++) {
        pid_t pid = cluster->nodes[i].pid;
        peak_kib[i] = pid > 0 ? bench_proc_kib(pid, "VmHWM:") : 0;
        if (pid > 0)
            bench_untrack(pid);
    }
    if (cluster->epmd > 0)
        bench_untrack(cluster->epmd);
    bench_stop_all(0, 5000); /* signal 0: clients close and exit on `stop`; SIGKILL after 5 s */
    /* With --server the queue goes whatever happened. */
    int reachable = g_opts.server_url || (ok && !bench_signalled);
    *left = reachable ? rabbit_leftovers(g_opts.server_url != NULL) : -1;
    cluster_stop(cluster);
    return ok;
}

/*  --serve: the nodes alone, for runs with --server (bench/compare.sh
    boots one node for all its RabbitMQ runs: a boot takes seconds). Its
    stdin is a pipe from whoever started it; EOF there stops the nodes. */
static int s_serve(cluster_t *cluster)
{
    int ok = cluster_start(cluster);
    if (ok) {
        if (cluster->count > 1)
            fprintf(stderr, "asyncq-rabbitmq-bench: %d nodes booted and clustered in %.1f s\n",
                    cluster->count, (double) cluster->boot_us / 1e6);
        printf("READY amqp://guest:guest@127.0.0.1:%d\n", g_endpoint.port);
        fflush(stdout);
        char buf[256];
        for (;;) {
            ssize_t got = read(0, buf, sizeof buf);
            if (bench_signalled || got == 0 || (got < 0 && errno != EINTR))
                break;
        }
    }
    cluster_stop(cluster);
    return ok;
}

/*  The figures, or what failed; 1 if the run succeeded. */
static int s_report(int ok, const cluster_t *cluster, const uint64_t *peak_kib, long long left)
{
    if (ok && atomic_load(&g_shared->unique) == g_opts.items
        && atomic_load(&g_shared->bad_items) == 0) {
        s_print(cluster, peak_kib, left);
        return 1;
    }
    printf("asyncq-rabbitmq-bench: FAILED: %llu of %llu items confirmed, %llu delivered,"
           " %llu acked\n",
           (unsigned long long) atomic_load(&g_shared->confirmed),
           (unsigned long long) g_opts.items, (unsigned long long) atomic_load(&g_shared->unique),
           (unsigned long long) atomic_load(&g_shared->acked));
    return 0;
}

/*  A temp dir per node of ours; 0 (none left behind) if one fails. */
static int s_node_dirs(cluster_t *cluster)
{
    for (int i = 0; i < cluster->count; i++)
        if (bench_temp_dir("asyncq-rabbitmq-bench", cluster->nodes[i].dir,
                           sizeof cluster->nodes[i].dir)) {
            while (i-- > 0)
                bench_remove_tree(cluster->nodes[i].dir);
            return 0;
        }
    return 1;
}

int main(int argc, char **argv)
{
    if (!s_parse(argc, argv, &g_opts))
        return 2;
    bench_catch_signals();
    snprintf(g_queue, sizeof g_queue, "asyncq-bench-%d", (int) getpid());
    size_t shared_size = sizeof(shared_t) + g_opts.items * (3 * sizeof(uint32_t) + 1);
    char *memory = bench_shared_new(shared_size);
    int own_nodes = g_opts.server_url == NULL;
    cluster_t cluster = {.epmd = -1, .count = own_nodes ? (int) g_opts.nodes : 0};
    for (int i = 0; i < NODES_MAX; i++)
        cluster.nodes[i].pid = cluster.nodes[i].stdin_fd = -1;
    if (!memory || !s_node_dirs(&cluster)) {
        fprintf(stderr, "asyncq-rabbitmq-bench: no memory or no temp dir\n");
        return 1;
    }
    g_shared = (shared_t *) memory;
    g_confirm_us = (uint32_t *) (memory + sizeof(shared_t));
    g_delivery_us = g_confirm_us + g_opts.items;
    g_ack_us = g_delivery_us + g_opts.items;
    g_seen = (uint8_t *) (g_ack_us + g_opts.items);
    atomic_store(&g_shared->first_put_us, INT64_MAX);
    int ok;
    if (g_opts.serve) {
        ok = s_serve(&cluster);
    } else {
        uint64_t peak_kib[NODES_MAX] = {0};
        long long left = -1;
        ok = s_run(&cluster, peak_kib, &left);
        ok = s_report(ok, &cluster, peak_kib, left);
    }
    for (int i = 0; i < cluster.count; i++)
        bench_remove_tree(cluster.nodes[i].dir);
    bench_shared_free(memory, shared_size);
    return bench_signalled ? 130 : ok ? 0 : 1;
}
