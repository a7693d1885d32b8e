/*  asyncq keygen: a certificate pair for the broker or for a client. */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include <czmq.h>

#include "asyncq/codec.h"
#include "asyncq/program.h"
#include "asyncq/security.h"
#include "cli.h"

static const char *s_usage =
    "Usage: asyncq keygen NAME[=ROLES]... [--role ROLES] [--queues Q1,Q2] [--dir DIR]\n"
    "                     [--clients DIR] [--keep]\n"
    "Writes DIR/NAME.key (the public certificate: give it to the broker's --clients\n"
    "directory, or, for the broker's own pair, to clients as --server-key) and\n"
    "DIR/NAME.key_secret (mode 0600: this program's --curve-secret; keep it private).\n"
    "ROLES: what the client may do, from produce, consume and admin, comma-separated\n"
    "(NAME=ROLES for one name, --role for the others; default: produce,consume).\n"
    "--queues: only these queues (default: every queue). DIR defaults to the current\n"
    "directory. --clients DIR: also copy each public certificate there (the broker's\n"
    "clients directory). --keep: a pair that already exists is kept, not replaced\n"
    "(for a deployment's first start: docker-compose.yml's keys service).\n";

/*  Each comma-separated word is a role, or each is a queue name. */
static int s_words_are_valid(const char *text, int roles)
{
    char buf[512];
    if (snprintf(buf, sizeof buf, "%s", text) >= (int) sizeof buf)
        return 0;
    int words = 0;
    for (char *save = NULL, *word = strtok_r(buf, ",", &save); word;
         word = strtok_r(NULL, ",", &save), words++) {
        if (roles ? strcmp(word, "produce") && strcmp(word, "consume") && strcmp(word, "admin")
                  : !aq_name_is_valid((const uint8_t *) word, strlen(word)))
            return 0;
    }
    return words > 0;
}

/*  Copies DIR/NAME.key into the clients directory. */
static int s_publish(const char *dir, const char *name, const char *clients)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s.key", dir, name);
    zcert_t *cert = zcert_load(path);
    if (!cert)
        return -1;
    int rc = zsys_dir_create("%s", clients);
    if (rc == 0) {
        snprintf(path, sizeof path, "%s/%s.key", clients, name);
        rc = zcert_save_public(cert, path);
    }
    zcert_destroy(&cert);
    return rc;
}

/*  One NAME[=ROLES] argument: 0 when its pair exists afterwards. */
static int s_keygen_one(const char *arg, const char *roles, const char *queues, const char *dir,
                        const char *clients, int keep)
{
    char name[AQ_NAME_MAX + 1];
    const char *equals = strchr(arg, '=');
    size_t length = equals ? (size_t) (equals - arg) : strlen(arg);
    if (equals)
        roles = equals + 1;
    if (length > AQ_NAME_MAX || !aq_name_is_valid((const uint8_t *) arg, length)) {
        fprintf(stderr, "asyncq keygen: NAME '%.*s' must be 1 to %d of A-Z a-z 0-9 . _ : -\n",
                (int) length, arg, AQ_NAME_MAX);
        return AQ_EXIT_USAGE;
    }
    memcpy(name, arg, length);
    name[length] = '\0';
    if (!s_words_are_valid(roles, 1)) {
        fprintf(stderr, "asyncq keygen: roles are produce, consume and admin, "
                        "comma-separated, not '%s'\n", roles);
        return AQ_EXIT_USAGE;
    }
    char secret[4096];
    snprintf(secret, sizeof secret, "%s/%s.key_secret", dir, name);
    struct stat st;
    if (keep && stat(secret, &st) == 0) {
        printf("kept %s/%s.key and %s\n", dir, name, secret);
    } else {
        if (aq_keygen(dir, name, roles, queues) != 0) {
            fprintf(stderr, "asyncq keygen: cannot write %s/%s.key: %s\n", dir, name,
                    strerror(errno));
            return AQ_EXIT_FAILURE;
        }
        printf("wrote %s/%s.key (public) and %s (secret, mode 0600); role %s%s%s\n", dir, name,
               secret, roles, queues ? ", queues " : "", queues ? queues : "");
    }
    if (clients && s_publish(dir, name, clients) != 0) {
        fprintf(stderr, "asyncq keygen: cannot copy %s/%s.key into %s: %s\n", dir, name, clients,
                strerror(errno));
        return AQ_EXIT_FAILURE;
    }
    return AQ_EXIT_OK;
}

int cli_keygen(int argc, char **argv)
{
    static const struct option options[] = {
        {"role", required_argument, 0, 'r'},    {"queues", required_argument, 0, 'q'},
        {"dir", required_argument, 0, 'd'},     {"clients", required_argument, 0, 'c'},
        {"keep", no_argument, 0, 'k'},          {"print-config", no_argument, 0, 'P'},
        {"help", no_argument, 0, 'h'},          {0, 0, 0, 0}};
    const char *roles = "produce,consume", *queues = NULL, *dir = ".", *clients = NULL;
    int opt, keep = 0;
    optind = 1;
    while ((opt = getopt_long(argc, argv, "r:q:d:c:kh", options, NULL)) != -1) {
        switch (opt) {
        case 'r': roles = optarg; break;
        case 'q': queues = optarg; break;
        case 'd': dir = optarg; break;
        case 'c': clients = optarg; break;
        case 'k': keep = 1; break;
        case 'P': return AQ_EXIT_OK; /* reads no environment variable */
        case 'h': printf("%s", s_usage); return AQ_EXIT_OK;
        default: fprintf(stderr, "%s", s_usage); return AQ_EXIT_USAGE;
        }
    }
    if (optind == argc) {
        fprintf(stderr, "%s", s_usage);
        return AQ_EXIT_USAGE;
    }
    if (queues && !s_words_are_valid(queues, 0)) {
        fprintf(stderr, "asyncq keygen: --queues takes queue names, comma-separated, not '%s'\n",
                queues);
        return AQ_EXIT_USAGE;
    }
    for (int i = optind; i < argc; i++) {
        int rc = s_keygen_one(argv[i], roles, queues, dir, clients, keep);
        if (rc != AQ_EXIT_OK)
            return rc;
    }
    return AQ_EXIT_OK;
}
