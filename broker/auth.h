/*  Who may connect and what each client may do (docs/PROTOCOL.md section 7).

    With a secret certificate, both sockets are CURVE servers and czmq's
    zauth actor is their ZAP handler: it lets a connection finish its
    handshake only if the client's public key is among the certificates of
    the clients directory (CURVE without a ZAP handler would let any client
    in). Every message then carries the client's key (ZeroMQ's "User-Id").
    The broker keeps its own table of those certificates, key to grant
    (roles, and queues if the certificate names some), read at start and on
    SIGHUP; zauth re-reads the directory by itself when it changes, so a
    removed key cannot connect again even before the SIGHUP that closes its
    sessions.

    Without a certificate, nothing is authenticated: every client gets every
    role (and the connection table accepts only loopback, unless told
    --insecure). */
#ifndef BROKER_AUTH_H
#define BROKER_AUTH_H

#include <stddef.h>
#include <stdint.h>

#define AUTH_KEY_SIZE 40 /* a CURVE public key in Z85 */
#define AUTH_QUEUES_MAX 400

enum { ROLE_PRODUCE = 1, ROLE_CONSUME = 2, ROLE_ADMIN = 4, ROLE_ALL = 7 };

typedef struct {
    unsigned roles;
    char queues[AUTH_QUEUES_MAX + 1]; /* names separated by commas; "" = every queue */
} auth_grant_t;

typedef struct auth auth_t;

/*  Loads the broker's secret certificate and the clients directory
    (both NULL: no authentication). On failure returns NULL with a
    sentence in `error`. */
auth_t *auth_new(const char *secret_path, const char *clients_dir, char *error, size_t size);
void auth_destroy(auth_t **self_p);

int auth_enabled(const auth_t *self);

/*  The broker's CURVE secret key (32 bytes), or NULL without a certificate. */
const uint8_t *auth_secret_key(const auth_t *self);

/*  Makes a socket (a zsock_t) a CURVE server checked by zauth. Before bind. */
void auth_apply(auth_t *self, void *zsock);

/*  The grant of a client key ("" without CURVE), or NULL if that key is
    not allowed (any more). */
const auth_grant_t *auth_lookup(auth_t *self, const char *key);

/*  auth_lookup for a client saying HELLO: a key not in the table makes the
    broker read the directory again (at most once a second), since zauth,
    which re-reads it whenever it changes, let the key through. */
const auth_grant_t *auth_admit(auth_t *self, const char *key);

/*  Re-reads the clients directory. On failure keeps the table it had and
    returns -1 with a sentence in `error`; else the number of keys. */
int auth_reload(auth_t *self, char *error, size_t size);

/*  True if the grant covers `queue` (name bytes). */
int auth_allows_queue(const auth_grant_t *grant, const uint8_t *queue, size_t size);

/*  zauth's log lines, to poll; auth_read_refusal reads one and returns 1 if
    it told of a refused key (copied to `key`, the peer address to `from`). */
void *auth_log_socket(auth_t *self);
int auth_read_refusal(auth_t *self, char *key, size_t key_size, char *from, size_t from_size);

/*  What one owner (a client key; without keys a source host other than
    loopback) holds of the limits every client shares, so that none can use
    them up (--max-*-per-key). An entry lives while it holds anything. */
typedef struct auth_owner {
    char name[AUTH_KEY_SIZE + 48]; /* the key, or "host 10.0.0.2" */
    uint64_t sessions;
    uint64_t joins;      /* waiting */
    uint64_t queues;     /* made by it and not forgotten */
    uint64_t held_puts;  /* held for full queues */
    uint64_t held_bytes;
} auth_owner_t;

typedef struct auth_owners auth_owners_t;

auth_owners_t *auth_owners_new(void);
void auth_owners_destroy(auth_owners_t **self_p);
/*  The owner called `name`, made if new; NULL if out of memory. */
auth_owner_t *auth_owner_get(auth_owners_t *self, const char *name);
/*  Forgets the owner if it holds nothing any more. */
void auth_owner_release(auth_owners_t *self, auth_owner_t *owner);

/*  "produce,consume" for a set of roles. */
const char *auth_roles_text(unsigned roles, char *buf, size_t size);

/*  The roles a certificate's "role" value names; -1 if a word is not a
    role. */
int auth_parse_roles(const char *text, unsigned *roles);


#endif
