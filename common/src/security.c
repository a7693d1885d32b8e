#include "asyncq/security.h"
#include "asyncq/internal.h"

#include <czmq.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

static struct {
    int loaded;
    aq_status_t status;
    zcert_t *cert;
    char server_key[41];
    char error[512];
} s_security;

static void s_clear(void)
{
    zcert_destroy(&s_security.cert);
    s_security.server_key[0] = '\0';
    s_security.error[0] = '\0';
    s_security.status = AQ_OK;
}

static int s_is_z85_key(const char *text)
{
    if (strlen(text) != 40)
        return 0;
    uint8_t key[32];
    return zmq_z85_decode(key, text) != NULL;
}

static aq_status_t s_fail(const char *format, const char *path)
{
    snprintf(s_security.error, sizeof s_security.error, format, path);
    zcert_destroy(&s_security.cert);
    s_security.status = AQ_BAD_KEY;
    return AQ_BAD_KEY;
}

static aq_status_t s_load(const char *secret_file, const char *server_key)
{
    s_clear();
    s_security.loaded = 1;
    int has_secret = secret_file && *secret_file, has_server = server_key && *server_key;
    if (!has_secret && !has_server)
        return AQ_OK;
    if (!has_secret)
        return s_fail("%s: the broker's key is given but not this client's certificate "
                      "(--curve-secret, ASYNCQ_CURVE_SECRET)", server_key);
    if (!has_server)
        return s_fail("%s: this client's certificate is given but not the broker's key "
                      "(--server-key, ASYNCQ_SERVER_KEY)", secret_file);
    s_security.cert = zcert_load(secret_file);
    if (!s_security.cert
        || strcmp(zcert_secret_txt(s_security.cert), "0000000000000000000000000000000000000000") == 0)
        return s_fail("%s is not a secret certificate (asyncq keygen writes NAME.key_secret)",
                      secret_file);
    /* A path can be 40 characters of Z85's alphabet too: a file that exists
       is a certificate; only otherwise is the text taken as the key. */
    struct stat st;
    if (stat(server_key, &st) != 0 && s_is_z85_key(server_key)) {
        snprintf(s_security.server_key, sizeof s_security.server_key, "%s", server_key);
        return AQ_OK;
    }
    zcert_t *server = zcert_load(server_key);
    if (!server)
        return s_fail("%s is neither the broker's public certificate nor a key", server_key);
    snprintf(s_security.server_key, sizeof s_security.server_key, "%s", zcert_public_txt(server));
    zcert_destroy(&server);
    return AQ_OK;
}

aq_status_t aq_security_set(const char *secret_file, const char *server_key)
{
    const char *secret = secret_file && *secret_file ? secret_file : getenv("ASYNCQ_CURVE_SECRET");
    const char *server = server_key && *server_key ? server_key : getenv("ASYNCQ_SERVER_KEY");
    return s_load(secret, server);
}

static void s_load_once(void)
{
    if (!s_security.loaded)
        aq_security_set(NULL, NULL);
}

int aq_security_enabled(void)
{
    s_load_once();
    return s_security.cert != NULL;
}

aq_status_t aq_security_status(void)
{
    s_load_once();
    return s_security.status;
}

const char *aq_security_error(void)
{
    s_load_once();
    return s_security.error;
}

void aq_security_apply(void *zsock)
{
    if (!aq_security_enabled())
        return;
    zcert_apply(s_security.cert, zsock);
    zsock_set_curve_serverkey(zsock, s_security.server_key);
}

int aq_keygen(const char *dir, const char *name, const char *roles, const char *queues)
{
    if (zsys_dir_create("%s", dir) != 0)
        return -1;
    zcert_t *cert = zcert_new();
    if (!cert)
        return -1;
    zcert_set_meta(cert, "name", "%s", name);
    zcert_set_meta(cert, "role", "%s", roles);
    if (queues && *queues)
        zcert_set_meta(cert, "queues", "%s", queues);
    char path[4096];
    snprintf(path, sizeof path, "%s/%s.key", dir, name);
    /* The secret file is never readable by others, not even for a moment. */
    mode_t umask_was = umask(077);
    int rc = zcert_save(cert, path); /* writes path and path_secret */
    umask(umask_was);
    zcert_destroy(&cert);
    if (rc == 0)
        rc = chmod(path, 0644);
    return rc;
}
