/*  asyncq keygen: a certificate pair for the broker or for a client. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include <czmq.h>

#include "asyncq/codec.h"
#include "asyncq/program.h"
#include "asyncq/security.h"
#include "cli.h"

static const char *s_usage =
    "Usage: asyncq keygen NAME[=ROLES]... [--role ROLES] [--queues Q1,Q2] [--dir DIR]\n"
    "                     [--clients DIR] [--keep] [--token FILE]\n"
    "       asyncq keygen --token FILE [--dir DIR] [--keep]\n"
    "Writes DIR/NAME.key (the public certificate: give it to the broker's --clients\n"
    "directory, or, for the broker's own pair, to clients as --server-key) and\n"
    "DIR/NAME.key_secret (mode 0600: this program's --curve-secret; keep it private).\n"
    "ROLES: what the client may do, from produce, consume and admin, comma-separated\n"
    "(NAME=ROLES for one name, --role for the others; default: produce,consume).\n"
    "--queues: only these queues (default: every queue). DIR defaults to the current\n"
    "directory. --clients DIR: also copy each public certificate there (the broker's\n"
    "clients directory). --keep: a pair that already exists is kept, not replaced\n"
    "(for a deployment's first start: docker-compose.yml's keys service).\n"
    "--token FILE: also writes DIR/FILE (mode 0600), 32 random hex digits: a token\n"
    "for asyncq-broker --metrics-token-file, one for every broker of a service and\n"
    "its --dashboard-of (kept with --keep).\n";

/*  DIR/FILE: 32 random hex digits and a newline, mode 0600 (kept if it
    exists, with `keep`). */
static int s_token(const char *dir, const char *file, int keep)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, file);
    struct stat st;
    if (keep && stat(path, &st) == 0 && st.st_size > 0) {
        printf("kept %s\n", path);
        return AQ_EXIT_OK;
    }
    uint8_t random[16];
    char text[2 * sizeof random + 2];
    if (getrandom(random, sizeof random, 0) != (ssize_t) sizeof random) {
        fprintf(stderr, "asyncq keygen: no random bytes for %s: %s\n", path, strerror(errno));
        return AQ_EXIT_FAILURE;
    }
    for (size_t i = 0; i < sizeof random; i++)
        snprintf(text + 2 * i, 3, "%02x", random[i]);
    strcat(text, "\n");
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    int ok = fd >= 0 && write(fd, text, strlen(text)) == (ssize_t) strlen(text);
    if (fd >= 0 && close(fd) != 0)
        ok = 0;
    if (!ok) {
        fprintf(stderr, "asyncq keygen: cannot write %s: %s\n", path, strerror(errno));
        return AQ_EXIT_FAILURE;
    }
    printf("wrote %s (a token, mode 0600)\n", path);
    return AQ_EXIT_OK;
}

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
        {"token", required_argument, 0, 't'},   {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0}};
    const char *roles = "produce,consume", *queues = NULL, *dir = ".", *clients = NULL,
               *token = NULL;
    int opt, keep = 0;
    optind = 1;
    while ((opt = getopt_long(argc, argv, "r:q:d:c:kh", options, NULL)) != -1) {
        switch (opt) {
        case 'r': roles = optarg; break;
        case 'q': queues = optarg; break;
        case 'd': dir = optarg; break;
        case 'c': clients = optarg; break;
        case 'k': keep = 1; break;
        case 't': token = optarg; break;
        case 'P': return AQ_EXIT_OK; /* reads no environment variable */
        case 'h': printf("%s", s_usage); return AQ_EXIT_OK;
        default: fprintf(stderr, "%s", s_usage); return AQ_EXIT_USAGE;
        }
    }
    if (optind == argc && !token) {
        fprintf(stderr, "%s", s_usage);
        return AQ_EXIT_USAGE;
    }
    if (queues && !s_words_are_valid(queues, 0)) {
        fprintf(stderr, "asyncq keygen: --queues takes queue names, comma-separated, not '%s'\n",
                queues);
        return AQ_EXIT_USAGE;
    }
    if (token && (!*token || strchr(token, '/'))) {
        fprintf(stderr, "asyncq keygen: --token takes a file name in DIR, not '%s'\n", token);
        return AQ_EXIT_USAGE;
    }
    for (int i = optind; i < argc; i++) {
        int rc = s_keygen_one(argv[i], roles, queues, dir, clients, keep);
        if (rc != AQ_EXIT_OK)
            return rc;
    }
    return token ? s_token(dir, token, keep) : AQ_EXIT_OK;
}
