#include "auth.h"

#include <czmq.h>
#include <string.h>
#include <sys/stat.h>

#include "asyncq/codec.h"
#include "dict.h"

#define ZAUTH_LOG_ENDPOINT "inproc://asyncq-zauth-log"
/*  zauth copies a certificate's metadata into a 512-byte buffer without
    checking its size; certificates with more are refused here. */
#define METADATA_MAX 400

struct auth {
    zcert_t *cert;       /* the broker's */
    int64_t reloaded_ms; /* when an unknown key last made it re-read the directory */
    struct timespec dir_mtime; /* the directory's, when last read */
    char *clients_dir;
    zactor_t *zauth;
    zsock_t *log;        /* SUB to zauth's log lines */
    dict_t *grants;      /* key -> auth_grant_t */
    char last_address[64];
    auth_grant_t everything;
};

static const char *const s_role_words[] = {"produce", "consume", "admin"};

int auth_parse_roles(const char *text, unsigned *roles)
{
    *roles = 0;
    char buf[256];
    snprintf(buf, sizeof buf, "%s", text ? text : "");
    for (char *save = NULL, *word = strtok_r(buf, ", ", &save); word;
         word = strtok_r(NULL, ", ", &save)) {
        unsigned role = 0;
        for (unsigned i = 0; i < 3; i++)
            if (strcmp(word, s_role_words[i]) == 0)
                role = 1u << i;
        if (!role)
            return -1;
        *roles |= role;
    }
    return 0;
}

const char *auth_roles_text(unsigned roles, char *buf, size_t size)
{
    size_t at = 0;
    buf[0] = '\0';
    for (unsigned i = 0; i < 3; i++)
        if (roles & (1u << i))
            at += (size_t) snprintf(buf + at, size - at, "%s%s", at ? "," : "", s_role_words[i]);
    return buf;
}

static void s_free_grant(void *ctx, void *value)
{
    (void) ctx;
    free(value);
}

static void s_grants_destroy(dict_t **grants)
{
    if (*grants)
        dict_each(*grants, s_free_grant, NULL);
    dict_destroy(grants);
}

/*  One certificate: its key and grant, checked. */
static int s_load_cert(dict_t *grants, const char *path, char *error, size_t size)
{
    zcert_t *cert = zcert_load(path);
    if (!cert) {
        snprintf(error, size, "%s is not a certificate", path);
        return -1;
    }
    const char *role = zcert_meta(cert, "role");
    const char *queues = zcert_meta(cert, "queues");
    auth_grant_t *grant = calloc(1, sizeof *grant);
    size_t metadata = 0;
    zlist_t *keys = zcert_meta_keys(cert);
    for (const char *key = zlist_first(keys); key; key = zlist_next(keys))
        metadata += 5 + strlen(key) + strlen(zcert_meta(cert, key));
    zlist_destroy(&keys);
    int rc = -1;
    if (!grant)
        snprintf(error, size, "out of memory");
    else if (metadata > METADATA_MAX)
        snprintf(error, size, "%s: metadata of more than %d bytes", path, METADATA_MAX);
    else if (auth_parse_roles(role, &grant->roles) || grant->roles == 0)
        snprintf(error, size, "%s: role must name produce, consume or admin, not '%s'", path,
                 role ? role : "");
    else if (queues && strlen(queues) > AUTH_QUEUES_MAX)
        snprintf(error, size, "%s: queues list too long", path);
    else {
        snprintf(grant->queues, sizeof grant->queues, "%s", queues ? queues : "");
        const char *key = zcert_public_txt(cert);
        auth_grant_t *old = dict_get(grants, key, strlen(key));
        rc = dict_set(grants, key, strlen(key), grant);
        if (rc)
            snprintf(error, size, "out of memory");
        else {
            free(old);
            grant = NULL;
        }
    }
    free(grant);
    zcert_destroy(&cert);
    return rc;
}

/*  Every public certificate of the directory (as zcertstore reads it:
    files not ending in _secret, subdirectories included). */
static dict_t *s_load_dir(const char *dir, char *error, size_t size)
{
    dict_t *grants = dict_new();
    zdir_t *zdir = zdir_new(dir, NULL);
    if (!grants || !zdir) {
        snprintf(error, size, "cannot read the clients directory %s", dir);
        zdir_destroy(&zdir);
        s_grants_destroy(&grants);
        return NULL;
    }
    zfile_t **files = zdir_flatten(zdir);
    for (size_t i = 0; files && files[i]; i++) {
        const char *name = zfile_filename(files[i], NULL);
        size_t length = strlen(name);
        if (!zfile_is_regular(files[i]) || (length >= 7 && strcmp(name + length - 7, "_secret") == 0))
            continue;
        if (s_load_cert(grants, name, error, size)) {
            s_grants_destroy(&grants);
            break;
        }
    }
    zdir_flatten_free(&files);
    zdir_destroy(&zdir);
    return grants;
}

/*  True if the directory's modification time is not the one last seen (an
    entry added, removed or renamed), which it then remembers. */
static int s_dir_changed(auth_t *self)
{
    struct stat st;
    if (stat(self->clients_dir, &st) != 0)
        return 0;
    int changed = st.st_mtim.tv_sec != self->dir_mtime.tv_sec
                  || st.st_mtim.tv_nsec != self->dir_mtime.tv_nsec;
    self->dir_mtime = st.st_mtim;
    return changed;
}

auth_t *auth_new(const char *secret_path, const char *clients_dir, char *error, size_t size)
{
    auth_t *self = calloc(1, sizeof *self);
    if (!self) {
        snprintf(error, size, "out of memory");
        return NULL;
    }
    self->everything.roles = ROLE_ALL;
    if (!secret_path && !clients_dir)
        return self;
    if (!secret_path || !clients_dir) {
        snprintf(error, size, "--curve-secret and --clients go together");
        auth_destroy(&self);
        return NULL;
    }
    self->cert = zcert_load(secret_path);
    if (!self->cert || !*zcert_secret_txt(self->cert)
        || strcmp(zcert_secret_txt(self->cert), "0000000000000000000000000000000000000000") == 0) {
        snprintf(error, size, "%s is not a secret certificate (make one with asyncq keygen)",
                 secret_path);
        auth_destroy(&self);
        return NULL;
    }
    self->clients_dir = strdup(clients_dir);
    s_dir_changed(self);
    self->grants = s_load_dir(clients_dir, error, size);
    if (!self->grants) {
        auth_destroy(&self);
        return NULL;
    }
    /* zauth tells of each key it refuses in its verbose log; the log goes
       to a socket the loop reads, not to stdout. */
    zsys_set_logstream(NULL);
    zsys_set_logsender(ZAUTH_LOG_ENDPOINT);
    self->log = zsock_new_sub(ZAUTH_LOG_ENDPOINT, "");
    self->zauth = zactor_new(zauth, NULL);
    if (!self->log || !self->zauth) {
        snprintf(error, size, "cannot start the authenticator");
        auth_destroy(&self);
        return NULL;
    }
    zstr_sendx(self->zauth, "VERBOSE", NULL);
    zsock_wait(self->zauth);
    zstr_sendx(self->zauth, "CURVE", clients_dir, NULL);
    zsock_wait(self->zauth);
    return self;
}

void auth_destroy(auth_t **self_p)
{
    auth_t *self = *self_p;
    if (!self)
        return;
    zactor_destroy(&self->zauth);
    zsock_destroy(&self->log);
    if (self->cert)
        zsys_set_logsender(NULL);
    zcert_destroy(&self->cert);
    s_grants_destroy(&self->grants);
    free(self->clients_dir);
    free(self);
    *self_p = NULL;
}

int auth_enabled(const auth_t *self)
{
    return self->cert != NULL;
}

const uint8_t *auth_secret_key(const auth_t *self)
{
    return self->cert ? zcert_secret_key(self->cert) : NULL;
}

void auth_apply(auth_t *self, void *zsock)
{
    if (!self->cert)
        return;
    zcert_apply(self->cert, zsock);
    zsock_set_curve_server(zsock, 1);
    zsock_set_zap_domain(zsock, "asyncq");
}

const auth_grant_t *auth_lookup(auth_t *self, const char *key)
{
    if (!self->cert)
        return &self->everything;
    return key && *key ? dict_get(self->grants, key, strlen(key)) : NULL;
}

const auth_grant_t *auth_admit(auth_t *self, const char *key)
{
    const auth_grant_t *grant = auth_lookup(self, key);
    if (grant || !self->cert)
        return grant;
    /* zauth let this key through its handshake: it found it in the
       directory, which changed since the broker last read it. Read at once
       if the directory changed (a key added right after another must not
       wait), else at most once a second: a key that is really gone must
       not make the broker read the directory at every HELLO. */
    int64_t now = zclock_mono();
    if (!s_dir_changed(self) && now - self->reloaded_ms < 1000)
        return NULL;
    self->reloaded_ms = now;
    char error[256];
    auth_reload(self, error, sizeof error);
    return auth_lookup(self, key);
}

int auth_reload(auth_t *self, char *error, size_t size)
{
    if (!self->cert)
        return 0;
    s_dir_changed(self); /* before reading: a change during the read is seen next time */
    dict_t *grants = s_load_dir(self->clients_dir, error, size);
    if (!grants)
        return -1;
    s_grants_destroy(&self->grants);
    self->grants = grants;
    return (int) dict_size(grants);
}

int auth_allows_queue(const auth_grant_t *grant, const uint8_t *queue, size_t size)
{
    if (!grant->queues[0])
        return 1;
    const char *at = grant->queues;
    while (*at) {
        const char *end = strchr(at, ',');
        size_t length = end ? (size_t) (end - at) : strlen(at);
        while (length && *at == ' ')
            at++, length--;
        if (length == size && memcmp(at, queue, size) == 0)
            return 1;
        if (!end)
            break;
        at = end + 1;
    }
    return 0;
}

void *auth_log_socket(auth_t *self)
{
    return self->log ? zsock_resolve(self->log) : NULL;
}

int auth_read_refusal(auth_t *self, char *key, size_t key_size, char *from, size_t from_size)
{
    char *line = zstr_recv_nowait(self->log);
    if (!line)
        return 0;
    int refused = 0;
    const char *address = strstr(line, "ipaddress=");
    const char *denied = strstr(line, "denied (CURVE) client_key=");
    if (address)
        snprintf(self->last_address, sizeof self->last_address, "%s", address + 10);
    else if (denied) {
        snprintf(key, key_size, "%.40s", denied + strlen("denied (CURVE) client_key="));
        snprintf(from, from_size, "%s", self->last_address[0] ? self->last_address : "?");
        refused = 1;
    }
    zstr_free(&line);
    return refused;
}

struct auth_owners {
    dict_t *table; /* name -> auth_owner_t */
};

auth_owners_t *auth_owners_new(void)
{
    auth_owners_t *self = calloc(1, sizeof *self);
    if (self && !(self->table = dict_new())) {
        free(self);
        return NULL;
    }
    return self;
}

void auth_owners_destroy(auth_owners_t **self_p)
{
    auth_owners_t *self = *self_p;
    if (!self)
        return;
    dict_each(self->table, s_free_grant, NULL); /* plain blocks, as grants */
    dict_destroy(&self->table);
    free(self);
    *self_p = NULL;
}

auth_owner_t *auth_owner_get(auth_owners_t *self, const char *name)
{
    auth_owner_t *owner = dict_get(self->table, name, strlen(name));
    if (owner)
        return owner;
    owner = calloc(1, sizeof *owner);
    if (!owner)
        return NULL;
    snprintf(owner->name, sizeof owner->name, "%s", name);
    if (dict_set(self->table, owner->name, strlen(owner->name), owner)) {
        free(owner);
        return NULL;
    }
    return owner;
}

void auth_owner_release(auth_owners_t *self, auth_owner_t *owner)
{
    if (!self || !owner || owner->sessions || owner->joins || owner->queues || owner->held_puts
        || owner->held_bytes)
        return;
    dict_delete(self->table, owner->name, strlen(owner->name));
    free(owner);
}
