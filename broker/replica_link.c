/*  The connections between replicas: replica_link.h. */
#define _GNU_SOURCE
#include "replica_link.h"

#include <raft.h>
#include <raft/uv.h>
#include <sodium.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <netdb.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>
#include <uv.h>

#include "ratelog.h"

#define MAGIC "AQRP\x01"
#define MAGIC_SIZE 5
#define NONCE 32
#define PROOF crypto_auth_hmacsha256_BYTES
#define HEADER crypto_secretstream_xchacha20poly1305_HEADERBYTES
#define ABYTES crypto_secretstream_xchacha20poly1305_ABYTES
#define CHUNK 65536                 /* what is read from libraft at once: one frame */
#define FRAME_MAX (CHUNK + ABYTES)  /* a frame's length, at most */
#define IN_SIZE (4 + FRAME_MAX)
#define HELLO_SIZE (MAGIC_SIZE + NONCE)
#define ANSWER_SIZE (NONCE + PROOF + HEADER)
#define CLOSING_SIZE (PROOF + HEADER)
#define HANDSHAKE_MS 5000
#define HIGH_WATER (8u << 20)
#define LOW_WATER (2u << 20)
#define HANDSHAKES_MAX 64
#define PREAMBLE 24        /* libraft's: its version, the replica's id, its address's length */
#define ADDRESS_MAX 256    /* a replica's address in a preamble, NUL and padding included */
#define BACKLOG 64
#define IDS_TRIED 16       /* a configuration's ids tried for a proof that failed */

typedef enum { AWAIT_PREAMBLE, AWAIT_HELLO, AWAIT_ANSWER, AWAIT_PROOF, PUMPING } phase_t;

typedef struct link link_t;

struct replica_link {
    uv_loop_t *loop;
    struct raft_uv_transport outer; /* what raft_uv talks to */
    struct raft_uv_transport inner; /* libraft's TCP transport */
    int inner_ready;
    int keyed;
    int loopback_only; /* without a key, unless --insecure */
    raft_id id;        /* this replica's, and its address, as its preamble says them */
    char *address;
    uint8_t key[REPLICA_LINK_KEY_SIZE];
    replica_link_peers_t peers;
    raft_uv_accept_cb accepted;
    raft_uv_transport_close_cb closed;
    int closing, inner_closed;
    uv_tcp_t listener; /* its own: libraft's reads a preamble with no limit and no deadline */
    int listener_open;
    link_t *links;
    unsigned handshakes;
    /*  Refusals logged, those of connections made here (a replica with
        another key, asked again every 250 ms) apart
        from those of connections taken, so that the first cannot hide
        the second. */
    ratelog_t log_in, log_out;
    uint64_t refused[2][LINK_REFUSED_CAUSES]; /* [taken, made][cause] */
};

/*  One connection with a key: its handshake, then its pump. */
struct link {
    replica_link_t *owner;
    link_t *prev, *next;
    phase_t phase;
    int accepting;
    uv_stream_t *net; /* TCP, from libraft's transport (raft_malloc'ed) */
    uv_pipe_t local;  /* this side of the pair; libraft has the other */
    uv_timer_t timer;
    int handles;      /* open, of the three */
    int local_open, closing;
    int net_paused, local_paused;
    uint8_t nonce_c[NONCE], nonce_a[NONCE];
    crypto_secretstream_xchacha20poly1305_state push, pull;
    struct raft_uv_connect *request; /* connecting: libraft's request */
    raft_uv_connect_cb cb;
    raft_id id;      /* accepting: who libraft's preamble named; connecting: the one asked */
    char *address;   /* accepting: the preamble's address */
    char peer[80];
    size_t in_size;
    uint8_t in[IN_SIZE];
};

/*  A write on its way, its bytes after it. */
typedef struct {
    uv_write_t request;
    link_t *link;
    size_t size;
    uint8_t data[];
} out_t;

/*  A connection being made by the inner transport. */
typedef struct {
    struct raft_uv_connect request;
    struct raft_uv_connect *outer;
    raft_uv_connect_cb cb;
    replica_link_t *owner;
    raft_id id; /* the replica asked */
} connecting_t;

static replica_link_t *s_of_inner(struct raft_uv_transport *inner)
{
    return (replica_link_t *) ((char *) inner - offsetof(replica_link_t, inner));
}

static void s_nodelay(uv_stream_t *stream)
{
    if (stream && stream->type == UV_TCP)
        uv_tcp_nodelay((uv_tcp_t *) stream, 1);
}

/*  The peer's address into `name`; 1 if it is on loopback. */
static int s_peer_name(uv_stream_t *stream, char *name, size_t size)
{
    struct sockaddr_storage addr;
    int length = sizeof addr;
    int loopback = 0;
    snprintf(name, size, "?");
    if (stream->type == UV_TCP
        && uv_tcp_getpeername((uv_tcp_t *) stream, (struct sockaddr *) &addr, &length) == 0) {
        char host[64] = "";
        int port = 0;
        if (addr.ss_family == AF_INET) {
            const struct sockaddr_in *in = (const struct sockaddr_in *) &addr;
            uv_ip4_name(in, host, sizeof host);
            port = ntohs(in->sin_port);
            loopback = (ntohl(in->sin_addr.s_addr) >> 24) == 127;
        }
        else if (addr.ss_family == AF_INET6) {
            const struct sockaddr_in6 *in = (const struct sockaddr_in6 *) &addr;
            uv_ip6_name(in, host, sizeof host);
            port = ntohs(in->sin6_port);
            loopback = IN6_IS_ADDR_LOOPBACK(&in->sin6_addr)
                       || (IN6_IS_ADDR_V4MAPPED(&in->sin6_addr) && in->sin6_addr.s6_addr[12] == 127);
        }
        snprintf(name, size, "%s:%d", host, port);
    }
    return loopback;
}

/* ------------------------------------------------------------- closing */

/*  A handle the inner transport allocated (raft_malloc), once closed. */
static void s_raft_free(uv_handle_t *handle)
{
    raft_free(handle);
}

static void s_maybe_closed(replica_link_t *self)
{
    if (self->closing && self->inner_closed && !self->listener_open && !self->links
        && self->closed) {
        raft_uv_transport_close_cb cb = self->closed;
        self->closed = NULL;
        cb(&self->outer);
    }
}

static void s_handle_closed(uv_handle_t *handle)
{
    link_t *link = handle->data;
    if (link->net && handle == (uv_handle_t *) link->net)
        raft_free(handle);
    if (--link->handles)
        return;
    replica_link_t *owner = link->owner;
    if (link->prev)
        link->prev->next = link->next;
    else
        owner->links = link->next;
    if (link->next)
        link->next->prev = link->prev;
    free(link->address);
    free(link);
    s_maybe_closed(owner);
}

/*  Closes a link; a connection libraft still waits for is answered with
    `status` (a handshake that failed) first. */
static void s_close(link_t *link, int status)
{
    if (link->closing)
        return;
    link->closing = 1;
    if (link->phase != PUMPING) {
        if (link->accepting)
            link->owner->handshakes--;
        if (link->cb) {
            raft_uv_connect_cb cb = link->cb;
            link->cb = NULL;
            cb(link->request, NULL, status);
        }
    }
    if (link->net)
        uv_close((uv_handle_t *) link->net, s_handle_closed);
    uv_close((uv_handle_t *) &link->timer, s_handle_closed);
    if (link->local_open)
        uv_close((uv_handle_t *) &link->local, s_handle_closed);
}

static void s_refuse(link_t *link, replica_refusal_t cause, const char *why)
{
    replica_link_t *owner = link->owner;
    owner->refused[link->accepting ? 0 : 1][cause]++;
    ratelog_line(link->accepting ? &owner->log_in : &owner->log_out,
                 (int64_t) uv_now(owner->loop),
                 "a replication connection %s %s closed: %s", link->accepting ? "from" : "to",
                 link->peer, why);
    s_close(link, RAFT_NOCONNECTION);
}

/* -------------------------------------------------------------- writes */

static void s_read_start(link_t *link, uv_stream_t *stream);

static void s_written(uv_write_t *request, int status)
{
    out_t *out = (out_t *) request;
    link_t *link = out->link;
    uv_stream_t *to = request->handle;
    free(out);
    if (link->closing)
        return;
    if (status < 0) {
        s_close(link, RAFT_NOCONNECTION);
        return;
    }
    /* The other way's reads go on once this way's writes have drained. */
    if (uv_stream_get_write_queue_size(to) < LOW_WATER) {
        if (to == link->net && link->local_paused) {
            link->local_paused = 0;
            s_read_start(link, (uv_stream_t *) &link->local);
        }
        else if (to == (uv_stream_t *) &link->local && link->net_paused) {
            link->net_paused = 0;
            s_read_start(link, link->net);
        }
    }
}

/*  Writes `out` (its size set) to `to`; reading `from` stops while `to`
    holds too much. */
static void s_write(link_t *link, uv_stream_t *to, out_t *out, uv_stream_t *from)
{
    out->link = link;
    uv_buf_t buf = uv_buf_init((char *) out->data, (unsigned) out->size);
    if (uv_write(&out->request, to, &buf, 1, s_written) != 0) {
        free(out);
        s_close(link, RAFT_NOCONNECTION);
        return;
    }
    if (from && uv_stream_get_write_queue_size(to) > HIGH_WATER) {
        uv_read_stop(from);
        if (from == link->net)
            link->net_paused = 1;
        else
            link->local_paused = 1;
    }
}

static out_t *s_out(size_t size)
{
    out_t *out = malloc(sizeof *out + size);
    if (out)
        out->size = size;
    return out;
}

/* ---------------------------------------------------------- handshake */

static void s_hmac_u64(crypto_auth_hmacsha256_state *state, uint64_t value)
{
    uint8_t bytes[8];
    for (int i = 0; i < 8; i++)
        bytes[i] = (uint8_t) (value >> (8 * i));
    crypto_auth_hmacsha256_update(state, bytes, sizeof bytes);
}

/*  A proof covers both nonces and what libraft's preamble said in clear
    (the connecting replica's id and address) with the id of the replica
    it meant to reach (`to`): one relabelled on the way does not pass. */
static void s_hmac(const replica_link_t *owner, const link_t *link, char who, raft_id to,
                   uint8_t *proof)
{
    raft_id from = link->accepting ? link->id : owner->id;
    const char *address = link->accepting ? link->address : owner->address;
    crypto_auth_hmacsha256_state state;
    crypto_auth_hmacsha256_init(&state, owner->key, sizeof owner->key);
    crypto_auth_hmacsha256_update(&state, (const uint8_t *) &who, 1);
    crypto_auth_hmacsha256_update(&state, link->nonce_c, NONCE);
    crypto_auth_hmacsha256_update(&state, link->nonce_a, NONCE);
    s_hmac_u64(&state, from);
    s_hmac_u64(&state, strlen(address));
    crypto_auth_hmacsha256_update(&state, (const uint8_t *) address, strlen(address));
    s_hmac_u64(&state, to);
    crypto_auth_hmacsha256_final(&state, proof);
}

/*  The key of one direction ('A': accepting to connecting side). */
static void s_stream_key(const replica_link_t *owner, const link_t *link, char way, uint8_t *key)
{
    crypto_generichash_state state;
    crypto_generichash_init(&state, owner->key, sizeof owner->key,
                            crypto_secretstream_xchacha20poly1305_KEYBYTES);
    crypto_generichash_update(&state, (const uint8_t *) &way, 1);
    crypto_generichash_update(&state, link->nonce_c, NONCE);
    crypto_generichash_update(&state, link->nonce_a, NONCE);
    crypto_generichash_final(&state, key, crypto_secretstream_xchacha20poly1305_KEYBYTES);
}

/*  Whether the replica that connects is the one the configuration has at
    its id (replica_link_peers_t): 1, or 0 after closing the link, saying
    why. With a key, once it has shown it holds the group's key. */
static int s_is_who_it_says(link_t *link)
{
    replica_link_t *owner = link->owner;
    char why[256];
    if (!owner->peers.check
        || !owner->peers.check(owner->peers.ctx, link->id, link->address, why, sizeof why))
        return 1;
    s_refuse(link, LINK_REFUSED_ID, why);
    return 0;
}

/*  Whether `got` is the other end's proof `who`, made for the replica the
    connecting one meant to reach: 1, or 0 after closing the link, saying
    why. A proof made with the group's key for another id of this
    replica's configuration says that the two replicas' --peers differ:
    the other end is, or takes this one for, another replica. */
static int s_proof_holds(link_t *link, char who, const uint8_t *got)
{
    replica_link_t *owner = link->owner;
    raft_id meant = link->accepting ? owner->id : link->id;
    uint8_t proof[PROOF];
    s_hmac(owner, link, who, meant, proof);
    if (crypto_verify_32(proof, got) == 0)
        return 1;
    uint64_t ids[IDS_TRIED];
    unsigned count = owner->peers.ids ? owner->peers.ids(owner->peers.ctx, ids, IDS_TRIED) : 0;
    for (unsigned i = 0; i < count; i++) {
        if (ids[i] == meant)
            continue;
        s_hmac(owner, link, who, ids[i], proof);
        if (crypto_verify_32(proof, got) != 0)
            continue;
        char why[256];
        if (link->accepting)
            snprintf(why, sizeof why, "replica %llu (%s) takes this replica for replica %llu, "
                     "this one is replica %llu: every replica needs the same --peers, in the "
                     "same order", (unsigned long long) link->id, link->address,
                     (unsigned long long) ids[i], (unsigned long long) owner->id);
        else
            snprintf(why, sizeof why, "the replica there is replica %llu by its --peers, not "
                     "replica %llu as this one's says: every replica needs the same --peers, in "
                     "the same order", (unsigned long long) ids[i],
                     (unsigned long long) link->id);
        s_refuse(link, LINK_REFUSED_ID, why);
        return 0;
    }
    s_refuse(link, LINK_REFUSED_KEY,
             "its proof of the group's key is wrong (do the replicas share the broker's key, "
             "--curve-secret?)");
    return 0;
}

static void s_pump_alloc(uv_handle_t *handle, size_t suggested, uv_buf_t *buf);
static void s_local_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf);

/*  Through: libraft gets one end of a socket pair, the other is pumped. */
static int s_through(link_t *link)
{
    replica_link_t *owner = link->owner;
    int fds[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) != 0)
        return -1;
    uv_pipe_t *theirs = raft_malloc(sizeof *theirs);
    if (!theirs || uv_pipe_init(owner->loop, theirs, 0) != 0) {
        raft_free(theirs);
        close(fds[0]);
        close(fds[1]);
        return -1;
    }
    if (uv_pipe_init(owner->loop, &link->local, 0) != 0) {
        close(fds[0]);
        close(fds[1]);
        uv_close((uv_handle_t *) theirs, s_raft_free);
        return -1;
    }
    link->local.data = link;
    link->local_open = 1;
    link->handles++;
    if (uv_pipe_open(theirs, fds[0]) != 0) {
        close(fds[0]);
        close(fds[1]);
        uv_close((uv_handle_t *) theirs, s_raft_free);
        return -1;
    }
    if (uv_pipe_open(&link->local, fds[1]) != 0) {
        close(fds[1]);
        uv_close((uv_handle_t *) theirs, s_raft_free);
        return -1;
    }
    uv_timer_stop(&link->timer);
    if (link->accepting)
        owner->handshakes--;
    link->phase = PUMPING;
    uv_read_start((uv_stream_t *) &link->local, s_pump_alloc, s_local_read);
    if (link->accepting)
        owner->accepted(&owner->outer, link->id, link->address, (uv_stream_t *) theirs);
    else {
        if (owner->peers.reached)
            owner->peers.reached(owner->peers.ctx, link->id);
        raft_uv_connect_cb cb = link->cb;
        link->cb = NULL;
        cb(link->request, (uv_stream_t *) theirs, 0);
    }
    return 0;
}

/*  Takes `size` bytes from the front of the input. */
static void s_consume(link_t *link, size_t size)
{
    memmove(link->in, link->in + size, link->in_size - size);
    link->in_size -= size;
}

/*  One step of the handshake, with what it waits for in link->in: 0 on,
    -1 closed. */
static int s_handshake(link_t *link)
{
    replica_link_t *owner = link->owner;
    uint8_t key[crypto_secretstream_xchacha20poly1305_KEYBYTES];
    if (link->phase == AWAIT_HELLO) { /* accepting */
        if (link->in_size < HELLO_SIZE)
            return 0;
        if (memcmp(link->in, MAGIC, MAGIC_SIZE) != 0) {
            s_refuse(link, LINK_REFUSED_PROTOCOL,
                     "not an asyncq replica's handshake (or one without keys)");
            return -1;
        }
        memcpy(link->nonce_c, link->in + MAGIC_SIZE, NONCE);
        s_consume(link, HELLO_SIZE);
        randombytes_buf(link->nonce_a, NONCE);
        out_t *out = s_out(ANSWER_SIZE);
        if (!out) {
            s_close(link, RAFT_NOMEM);
            return -1;
        }
        memcpy(out->data, link->nonce_a, NONCE);
        s_hmac(owner, link, 'A', owner->id, out->data + NONCE);
        s_stream_key(owner, link, 'A', key);
        crypto_secretstream_xchacha20poly1305_init_push(&link->push, out->data + NONCE + PROOF,
                                                        key);
        link->phase = AWAIT_PROOF;
        s_write(link, link->net, out, NULL);
        return link->closing ? -1 : 0;
    }
    if (link->phase == AWAIT_ANSWER) { /* connecting */
        if (link->in_size < ANSWER_SIZE)
            return 0;
        memcpy(link->nonce_a, link->in, NONCE);
        if (!s_proof_holds(link, 'A', link->in + NONCE))
            return -1;
        s_stream_key(owner, link, 'A', key);
        if (crypto_secretstream_xchacha20poly1305_init_pull(&link->pull,
                                                            link->in + NONCE + PROOF, key)) {
            s_refuse(link, LINK_REFUSED_PROTOCOL, "a bad stream header");
            return -1;
        }
        s_consume(link, ANSWER_SIZE);
        out_t *out = s_out(CLOSING_SIZE);
        if (!out) {
            s_close(link, RAFT_NOMEM);
            return -1;
        }
        s_hmac(owner, link, 'C', link->id, out->data);
        s_stream_key(owner, link, 'C', key);
        crypto_secretstream_xchacha20poly1305_init_push(&link->push, out->data + PROOF, key);
        s_write(link, link->net, out, NULL);
        if (link->closing || s_through(link) != 0) {
            s_close(link, RAFT_NOCONNECTION);
            return -1;
        }
        return 0;
    }
    /* AWAIT_PROOF: accepting */
    if (link->in_size < CLOSING_SIZE)
        return 0;
    if (!s_proof_holds(link, 'C', link->in) || !s_is_who_it_says(link))
        return -1;
    s_stream_key(owner, link, 'C', key);
    if (crypto_secretstream_xchacha20poly1305_init_pull(&link->pull, link->in + PROOF, key)) {
        s_refuse(link, LINK_REFUSED_PROTOCOL, "a bad stream header");
        return -1;
    }
    s_consume(link, CLOSING_SIZE);
    if (s_through(link) != 0) {
        s_close(link, RAFT_NOCONNECTION);
        return -1;
    }
    return 0;
}

/* ----------------------------------------------------------- preamble */

static uint64_t s_le64(const uint8_t *at)
{
    uint64_t value = 0;
    for (int i = 7; i >= 0; i--)
        value = value << 8 | at[i];
    return value;
}

/*  The address's size the preamble says (0 until it is read). */
static size_t s_address_size(const link_t *link)
{
    return link->in_size >= PREAMBLE ? (size_t) s_le64(link->in + 16) : 0;
}

/*  libraft's preamble, read here with limits: 0 on (read on), -1 closed,
    1 handed to libraft as it is (no key). */
static int s_preamble(link_t *link)
{
    replica_link_t *owner = link->owner;
    if (link->in_size < PREAMBLE)
        return 0;
    size_t size = s_address_size(link);
    if (s_le64(link->in) != 1 || size == 0 || size > ADDRESS_MAX || size % 8) {
        s_refuse(link, LINK_REFUSED_PROTOCOL, "not a replica's preamble");
        return -1;
    }
    if (link->in_size < PREAMBLE + size)
        return 0;
    const char *address = (const char *) link->in + PREAMBLE;
    if (!memchr(address, '\0', size)) {
        s_refuse(link, LINK_REFUSED_PROTOCOL, "not a replica's preamble (an address with no end)");
        return -1;
    }
    link->id = (raft_id) s_le64(link->in + 8);
    link->address = strdup(address);
    if (!link->address) {
        s_close(link, RAFT_NOMEM);
        return -1;
    }
    s_consume(link, PREAMBLE + size);
    if (owner->keyed) {
        link->phase = AWAIT_HELLO;
        return 0;
    }
    /* No key: the stream is libraft's from here, with nothing read past
       the preamble, once it names the replica it is. */
    if (!s_is_who_it_says(link))
        return -1;
    uv_read_stop(link->net);
    uv_stream_t *net = link->net;
    net->data = NULL;
    link->net = NULL;
    link->handles--;
    link->phase = PUMPING;
    owner->handshakes--;
    uv_timer_stop(&link->timer);
    owner->accepted(&owner->outer, link->id, link->address, net);
    link->closing = 1;
    uv_close((uv_handle_t *) &link->timer, s_handle_closed);
    return 1;
}

/* --------------------------------------------------------------- pump */

static void s_pump_alloc(uv_handle_t *handle, size_t suggested, uv_buf_t *buf)
{
    (void) suggested;
    link_t *link = handle->data;
    if (handle == (uv_handle_t *) link->net) {
        /* The preamble exactly: without a key, what follows is libraft's. */
        size_t want = sizeof link->in - link->in_size;
        if (link->phase == AWAIT_PREAMBLE) {
            size_t end = link->in_size < PREAMBLE ? PREAMBLE : PREAMBLE + s_address_size(link);
            if (end <= sizeof link->in && end > link->in_size)
                want = end - link->in_size;
        }
        *buf = uv_buf_init((char *) link->in + link->in_size, (unsigned) want);
        return;
    }
    char *plain = malloc(CHUNK); /* from libraft */
    *buf = uv_buf_init(plain, plain ? CHUNK : 0);
}

/*  What libraft wrote: sealed, framed, sent. */
static void s_local_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf)
{
    link_t *link = stream->data;
    if (nread <= 0 || link->closing) {
        free(buf->base);
        if (nread < 0 && !link->closing)
            s_close(link, RAFT_NOCONNECTION); /* libraft closed its end, or out of memory */
        return;
    }
    out_t *out = s_out(4 + (size_t) nread + ABYTES);
    if (!out) {
        free(buf->base);
        s_close(link, RAFT_NOMEM);
        return;
    }
    unsigned long long sealed = 0;
    crypto_secretstream_xchacha20poly1305_push(&link->push, out->data + 4, &sealed,
                                               (const uint8_t *) buf->base,
                                               (unsigned long long) nread, NULL, 0,
                                               crypto_secretstream_xchacha20poly1305_TAG_MESSAGE);
    free(buf->base);
    out->data[0] = (uint8_t) (sealed >> 24);
    out->data[1] = (uint8_t) (sealed >> 16);
    out->data[2] = (uint8_t) (sealed >> 8);
    out->data[3] = (uint8_t) sealed;
    out->size = 4 + (size_t) sealed;
    s_write(link, link->net, out, stream);
}

/*  The frames that have arrived whole: opened, handed to libraft. */
static int s_frames(link_t *link)
{
    size_t at = 0;
    while (link->in_size - at >= 4) {
        const uint8_t *p = link->in + at;
        size_t length = (size_t) p[0] << 24 | (size_t) p[1] << 16 | (size_t) p[2] << 8 | p[3];
        if (length < ABYTES || length > FRAME_MAX) {
            s_refuse(link, LINK_REFUSED_PROTOCOL, "a frame of a size no replica sends");
            return -1;
        }
        if (link->in_size - at < 4 + length)
            break;
        out_t *out = s_out(length - ABYTES);
        unsigned long long opened = 0;
        unsigned char tag = 0;
        if (!out) {
            s_close(link, RAFT_NOMEM);
            return -1;
        }
        if (crypto_secretstream_xchacha20poly1305_pull(&link->pull, out->data, &opened, &tag,
                                                       p + 4, length, NULL, 0)
            != 0) {
            free(out);
            s_refuse(link, LINK_REFUSED_PROTOCOL, "a frame that does not decrypt");
            return -1;
        }
        out->size = (size_t) opened;
        at += 4 + length;
        s_write(link, (uv_stream_t *) &link->local, out, link->net);
        if (link->closing)
            return -1;
    }
    s_consume(link, at);
    return 0;
}

static void s_net_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf)
{
    (void) buf;
    link_t *link = stream->data;
    if (link->closing || nread == 0)
        return;
    if (nread < 0) {
        s_close(link, RAFT_NOCONNECTION);
        return;
    }
    link->in_size += (size_t) nread;
    if (link->phase == AWAIT_PREAMBLE && s_preamble(link) != 0)
        return;
    if (link->phase == AWAIT_PREAMBLE)
        return;
    while (link->phase != PUMPING) {
        phase_t before = link->phase;
        if (s_handshake(link) != 0 || link->phase == before)
            return;
    }
    s_frames(link);
}

static void s_read_start(link_t *link, uv_stream_t *stream)
{
    if (uv_read_start(stream, s_pump_alloc, stream == link->net ? s_net_read : s_local_read))
        s_close(link, RAFT_NOCONNECTION);
}

static void s_handshake_late(uv_timer_t *timer)
{
    link_t *link = timer->data;
    s_refuse(link, LINK_REFUSED_TIMEOUT, "no handshake within 5 s");
}

/*  A link for a stream the inner transport made or accepted; it starts
    its handshake. NULL if out of memory (the stream closed). Accepted
    connections still in their handshake are at most HANDSHAKES_MAX: the
    oldest goes for a new one, so that connections made and left silent
    cannot keep a replica out (the ones this replica makes are not
    counted: there is one per member). */
static link_t *s_link_new(replica_link_t *self, uv_stream_t *net, int accepting)
{
    link_t *link = calloc(1, sizeof *link);
    if (!link) {
        uv_close((uv_handle_t *) net, s_raft_free);
        return NULL;
    }
    if (accepting && self->handshakes >= HANDSHAKES_MAX) {
        link_t *oldest = NULL; /* the list is newest first */
        for (link_t *at = self->links; at; at = at->next)
            if (at->accepting && at->phase != PUMPING && !at->closing)
                oldest = at;
        if (oldest)
            s_refuse(oldest, LINK_REFUSED_LIMIT, "the oldest of too many handshakes at once");
    }
    link->owner = self;
    link->net = net;
    link->accepting = accepting;
    net->data = link;
    s_peer_name(net, link->peer, sizeof link->peer);
    uv_timer_init(self->loop, &link->timer);
    link->timer.data = link;
    link->handles = 2;
    link->next = self->links;
    if (self->links)
        self->links->prev = link;
    self->links = link;
    if (accepting)
        self->handshakes++;
    link->phase = accepting ? AWAIT_PREAMBLE : AWAIT_ANSWER;
    uv_timer_start(&link->timer, s_handshake_late, HANDSHAKE_MS, 0);
    return link;
}

/* ---------------------------------------------------------- transport */

static int s_init(struct raft_uv_transport *outer, raft_id id, const char *address)
{
    replica_link_t *self = outer->impl;
    free(self->address);
    self->id = id;
    self->address = strdup(address);
    if (!self->address)
        return RAFT_NOMEM;
    int rv = self->inner.init(&self->inner, id, address);
    if (rv)
        memcpy(outer->errmsg, self->inner.errmsg, sizeof outer->errmsg);
    return rv;
}

/*  A connection to the replicas' port: its preamble read here, with a
    deadline and limits (and, with a key, the handshake after it). */
static void s_accept(uv_stream_t *server, int status)
{
    replica_link_t *self = server->data;
    if (status < 0 || self->closing)
        return;
    uv_tcp_t *tcp = raft_malloc(sizeof *tcp);
    if (!tcp)
        return;
    if (uv_tcp_init(self->loop, tcp) != 0) {
        raft_free(tcp);
        return;
    }
    if (uv_accept(server, (uv_stream_t *) tcp) != 0) {
        uv_close((uv_handle_t *) tcp, s_raft_free);
        return;
    }
    uv_stream_t *stream = (uv_stream_t *) tcp;
    s_nodelay(stream);
    char peer[80];
    if (self->loopback_only && !s_peer_name(stream, peer, sizeof peer)) { /* no key */
        self->refused[0][LINK_REFUSED_ADDRESS]++;
        ratelog_line(&self->log_in, (int64_t) uv_now(self->loop),
                     "a replication connection from %s closed: not from loopback (a "
                     "group without keys takes its replicas' connections from loopback "
                     "only: give the replicas --curve-secret, or --insecure)",
                     peer);
        uv_close((uv_handle_t *) stream, s_raft_free);
        return;
    }
    link_t *link = s_link_new(self, stream, 1);
    if (link)
        s_read_start(link, stream);
}

static void s_listener_closed(uv_handle_t *handle)
{
    replica_link_t *self = handle->data;
    self->listener_open = 0;
    s_maybe_closed(self);
}

/*  Listens on this replica's address (HOST:PORT, IPv4, as libraft does). */
static int s_listen_on(replica_link_t *self, char *error, size_t size)
{
    char host[256];
    const char *colon = self->address ? strrchr(self->address, ':') : NULL;
    if (!colon || (size_t) (colon - self->address) >= sizeof host) {
        snprintf(error, size, "not HOST:PORT: %s", self->address ? self->address : "");
        return RAFT_INVALID;
    }
    snprintf(host, sizeof host, "%.*s", (int) (colon - self->address), self->address);
    struct addrinfo hints = {.ai_flags = AI_PASSIVE | AI_NUMERICSERV, .ai_family = AF_INET,
                             .ai_socktype = SOCK_STREAM};
    struct addrinfo *found = NULL;
    int rv = getaddrinfo(host[0] ? host : NULL, colon + 1, &hints, &found);
    if (rv != 0 || !found) {
        snprintf(error, size, "%s: %s", self->address, gai_strerror(rv));
        return RAFT_IOERR;
    }
    rv = uv_tcp_init(self->loop, &self->listener);
    if (rv == 0) {
        self->listener.data = self;
        self->listener_open = 1;
        rv = uv_tcp_bind(&self->listener, found->ai_addr, 0);
        if (rv == 0)
            rv = uv_listen((uv_stream_t *) &self->listener, BACKLOG, s_accept);
    }
    freeaddrinfo(found);
    if (rv != 0) {
        snprintf(error, size, "cannot listen on %s: %s", self->address, uv_strerror(rv));
        if (self->listener_open)
            uv_close((uv_handle_t *) &self->listener, s_listener_closed);
        return RAFT_IOERR;
    }
    return 0;
}

static int s_listen(struct raft_uv_transport *outer, raft_uv_accept_cb cb)
{
    replica_link_t *self = outer->impl;
    self->accepted = cb;
    return s_listen_on(self, outer->errmsg, sizeof outer->errmsg);
}

static void s_inner_connected(struct raft_uv_connect *request, uv_stream_t *stream, int status)
{
    connecting_t *connecting = (connecting_t *) request;
    replica_link_t *self = connecting->owner;
    struct raft_uv_connect *outer = connecting->outer;
    raft_uv_connect_cb cb = connecting->cb;
    raft_id id = connecting->id;
    free(connecting);
    if (status == 0)
        s_nodelay(stream);
    if (status == 0 && !self->keyed && self->peers.reached)
        self->peers.reached(self->peers.ctx, id);
    if (status != 0 || !self->keyed) {
        cb(outer, stream, status);
        return;
    }
    if (self->closing) {
        uv_close((uv_handle_t *) stream, s_raft_free);
        cb(outer, NULL, RAFT_CANCELED);
        return;
    }
    link_t *link = s_link_new(self, stream, 0);
    if (!link) {
        cb(outer, NULL, RAFT_NOCONNECTION);
        return;
    }
    link->request = outer;
    link->cb = cb;
    link->id = id;
    randombytes_buf(link->nonce_c, NONCE);
    out_t *out = s_out(HELLO_SIZE);
    if (!out) {
        s_close(link, RAFT_NOMEM);
        return;
    }
    memcpy(out->data, MAGIC, MAGIC_SIZE);
    memcpy(out->data + MAGIC_SIZE, link->nonce_c, NONCE);
    s_write(link, stream, out, NULL);
    if (!link->closing)
        s_read_start(link, stream);
}

static int s_connect(struct raft_uv_transport *outer, struct raft_uv_connect *request,
                     raft_id id, const char *address, raft_uv_connect_cb cb)
{
    replica_link_t *self = outer->impl;
    connecting_t *connecting = calloc(1, sizeof *connecting);
    if (!connecting)
        return RAFT_NOMEM;
    connecting->outer = request;
    connecting->cb = cb;
    connecting->owner = self;
    connecting->id = id;
    int rv = self->inner.connect(&self->inner, &connecting->request, id, address,
                                 s_inner_connected);
    if (rv) {
        memcpy(outer->errmsg, self->inner.errmsg, sizeof outer->errmsg);
        free(connecting);
    }
    return rv;
}

static void s_inner_closed(struct raft_uv_transport *inner)
{
    replica_link_t *self = s_of_inner(inner);
    self->inner_closed = 1;
    s_maybe_closed(self);
}

static void s_transport_close(struct raft_uv_transport *outer, raft_uv_transport_close_cb cb)
{
    replica_link_t *self = outer->impl;
    self->closed = cb;
    self->closing = 1;
    for (link_t *link = self->links; link; link = link->next)
        s_close(link, RAFT_CANCELED);
    if (self->listener_open && !uv_is_closing((uv_handle_t *) &self->listener))
        uv_close((uv_handle_t *) &self->listener, s_listener_closed);
    self->inner.close(&self->inner, s_inner_closed);
}

/* ------------------------------------------------------------- public */

replica_link_t *replica_link_new(uv_loop_t *loop, const uint8_t *secret, int loopback_only,
                                 char *error, size_t error_size)
{
    if (secret && sodium_init() < 0) {
        snprintf(error, error_size, "libsodium: cannot initialise");
        return NULL;
    }
    replica_link_t *self = calloc(1, sizeof *self);
    if (!self) {
        snprintf(error, error_size, "out of memory");
        return NULL;
    }
    self->loop = loop;
    self->loopback_only = !secret && loopback_only;
    ratelog_init(&self->log_in, "replicas", 5);
    ratelog_init(&self->log_out, "replicas", 5);
    if (secret) {
        static const char context[] = "asyncq replication 1";
        self->keyed = 1;
        crypto_generichash(self->key, sizeof self->key, secret, REPLICA_LINK_KEY_SIZE,
                           (const uint8_t *) context, sizeof context - 1);
    }
    self->inner.version = 1;
    int rv = raft_uv_tcp_init(&self->inner, loop);
    if (rv) {
        snprintf(error, error_size, "raft transport: %s", raft_strerror(rv));
        free(self);
        return NULL;
    }
    self->inner_ready = 1;
    self->outer.version = 1;
    self->outer.impl = self;
    self->outer.init = s_init;
    self->outer.listen = s_listen;
    self->outer.connect = s_connect;
    self->outer.close = s_transport_close;
    return self;
}

void replica_link_set_peers(replica_link_t *self, const replica_link_peers_t *peers)
{
    self->peers = *peers;
}

struct raft_uv_transport *replica_link_transport(replica_link_t *self)
{
    return &self->outer;
}

void replica_link_destroy(replica_link_t **self_p)
{
    replica_link_t *self = *self_p;
    if (!self)
        return;
    if (self->inner_ready)
        raft_uv_tcp_close(&self->inner);
    sodium_memzero(self->key, sizeof self->key);
    free(self->address);
    free(self);
    *self_p = NULL;
}

uint64_t replica_link_refused(const replica_link_t *self, int made, replica_refusal_t cause)
{
    return self && cause < LINK_REFUSED_CAUSES ? self->refused[made ? 1 : 0][cause] : 0;
}

const char *replica_link_refusal_name(replica_refusal_t cause)
{
    static const char *const names[LINK_REFUSED_CAUSES] = {"key",   "protocol", "timeout",
                                                           "limit", "address",  "id"};
    return cause < LINK_REFUSED_CAUSES ? names[cause] : "unknown";
}
