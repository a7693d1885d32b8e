/*  A client's CURVE identity: its own certificate (public and secret key)
    and the broker's public key, applied to every socket the library makes.

    Programs set them from --curve-secret and --server-key; without that,
    the library reads ASYNCQ_CURVE_SECRET and ASYNCQ_SERVER_KEY, so every
    program built on it speaks CURVE when the environment says so. Neither
    set: no CURVE. Certificates are czmq's files (asyncq keygen). */
#ifndef ASYNCQ_SECURITY_H
#define ASYNCQ_SECURITY_H

#include "asyncq/status.h"

/*  Uses these files from now on (NULL or "" for either: read the
    environment). `server_key` is the broker's public certificate file, or
    its public key as 40 characters of Z85. AQ_BAD_KEY if a file cannot be
    read (the reason in aq_security_error()). */
aq_status_t aq_security_set(const char *secret_file, const char *server_key);

/*  True if sockets will use CURVE. Loads the environment's files on first
    use; AQ_BAD_KEY then shows in aq_security_status(). */
int aq_security_enabled(void);
aq_status_t aq_security_status(void);
const char *aq_security_error(void);

/*  Writes NAME.key (public, shareable) and NAME.key_secret (mode 0600) in
    dir, with the roles (and queues, may be NULL) as metadata. Returns 0, or
    -1 with errno. */
int aq_keygen(const char *dir, const char *name, const char *roles, const char *queues);

#endif
