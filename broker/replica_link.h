/*  The connections between the replicas of a group (replica.h): the
    transport raft_uv talks to. libraft's own TCP transport makes them; this
    one accepts them and reads libraft's preamble (which names the replica)
    itself, with a deadline and limits that libraft's listener lacks (it
    allocates whatever address length a peer claims, and waits for it for
    ever). On each stream this sets TCP_NODELAY and, given the group's key,
    authenticates both ends and encrypts what follows (docs/PROTOCOL.md
    4.16):

      connecting side   "AQRP" 1, nonce C (32 bytes)
      accepting side    nonce A (32), proof A (32), stream header A (24)
      connecting side   proof C (32), stream header C (24)
      then, each way    frames: length (4 bytes, big-endian), then one
                        crypto_secretstream (XChaCha20-Poly1305) message

    K is a hash of the broker's CURVE secret key, which every replica of a
    group shares (its clients know one server key); proof A is
    HMAC-SHA-256(K, "A" C A P T), proof C the same with "C", where P is
    what libraft's preamble said in clear (the connecting replica's id and
    address) and T the id of the replica it asked: a preamble relabelled
    on the way fails; each direction's stream key is a hash of K, the
    direction and both nonces.
    A connection that fails the handshake, says nothing for 5 s, or sends a
    frame that does not decrypt is closed before libraft reads a byte of
    it. Once through, libraft gets one end of a socket pair; the other is
    pumped to and from the TCP stream here, each direction stopped while
    the other's writes hold more than 8 MiB.

    Without a key, the streams are libraft's own (plain TCP), and, unless
    the broker was told --insecure, only from loopback, as its own ports. */
#ifndef BROKER_REPLICA_LINK_H
#define BROKER_REPLICA_LINK_H

#include <stddef.h>
#include <stdint.h>

struct raft_uv_transport;
struct uv_loop_s;

#define REPLICA_LINK_KEY_SIZE 32

typedef struct replica_link replica_link_t;

/*  A transport on `loop`; `secret` (32 bytes, the broker's CURVE secret
    key) or NULL for plain TCP, which then takes connections from loopback
    only if `loopback_only` (no --insecure: as the broker's own ports). On
    failure NULL, with a sentence in `error`. */
replica_link_t *replica_link_new(struct uv_loop_s *loop, const uint8_t *secret,
                                 int loopback_only, char *error, size_t error_size);

/*  Why a connection between replicas was closed before libraft read it. */
typedef enum {
    LINK_REFUSED_KEY,      /* its proof of the group's key is wrong */
    LINK_REFUSED_PROTOCOL, /* not a replica's preamble, handshake or frame */
    LINK_REFUSED_TIMEOUT,  /* no handshake within 5 s */
    LINK_REFUSED_LIMIT,    /* the oldest of too many handshakes at once */
    LINK_REFUSED_ADDRESS,  /* not from loopback, in a group without keys */
    LINK_REFUSED_ID,       /* it is, or takes this replica for, another replica than the
                              configuration says: the replicas' --peers differ */
    LINK_REFUSED_CAUSES
} replica_refusal_t;

/*  Connections refused for `cause` since the start: those this replica
    took (made 0) or made (made 1). */
uint64_t replica_link_refused(const replica_link_t *self, int made, replica_refusal_t cause);
/*  The cause in one word: "key", "protocol", "timeout", "limit", "address", "id". */
const char *replica_link_refusal_name(replica_refusal_t cause);

/*  Who the replicas are, by this replica's configuration (the group's
    log): a connection whose preamble names a replica that `check` refuses
    (0: it fits; -1, with why in `why`) is closed before libraft reads it;
    `ids` lists the configuration's (at most `max`), to say which replica
    the other end of a handshake that failed took this one for; `reached`
    is told of each connection this replica made that is through (with a
    key, its handshake done). */
typedef struct {
    int (*check)(void *ctx, uint64_t id, const char *address, char *why, size_t size);
    unsigned (*ids)(void *ctx, uint64_t *ids, unsigned max);
    void (*reached)(void *ctx, uint64_t id);
    void *ctx;
} replica_link_peers_t;

void replica_link_set_peers(replica_link_t *self, const replica_link_peers_t *peers);

/*  What raft_uv_init takes. */
struct raft_uv_transport *replica_link_transport(replica_link_t *self);

/*  Frees it, once its close (raft_uv's) is done and the loop has run the
    close callbacks (or it was never listened on). */
void replica_link_destroy(replica_link_t **self_p);

#endif
