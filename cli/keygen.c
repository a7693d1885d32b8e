/*  asyncq keygen: a certificate pair for the broker or for a client. */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "asyncq/codec.h"
#include "asyncq/program.h"
#include "asyncq/security.h"
#include "cli.h"

static const char *s_usage =
    "Usage: asyncq keygen NAME [--role produce,consume,admin] [--queues Q1,Q2] [--dir DIR]\n"
    "Writes DIR/NAME.key (the public certificate: give it to the broker's --clients\n"
    "directory, or, for the broker's own pair, to clients as --server-key) and\n"
    "DIR/NAME.key_secret (mode 0600: this program's --curve-secret; keep it private).\n"
    "--role: what the client may do (default: produce,consume); --queues: only these\n"
    "queues (default: every queue). DIR defaults to the current directory.\n";

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

int cli_keygen(int argc, char **argv)
{
    static const struct option options[] = {
        {"role", required_argument, 0, 'r'}, {"queues", required_argument, 0, 'q'},
        {"dir", required_argument, 0, 'd'},  {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0}};
    const char *roles = "produce,consume", *queues = NULL, *dir = ".";
    int opt;
    optind = 1;
    while ((opt = getopt_long(argc, argv, "r:q:d:h", options, NULL)) != -1) {
        switch (opt) {
        case 'r': roles = optarg; break;
        case 'q': queues = optarg; break;
        case 'd': dir = optarg; break;
        case 'h': printf("%s", s_usage); return AQ_EXIT_OK;
        default: fprintf(stderr, "%s", s_usage); return AQ_EXIT_USAGE;
        }
    }
    if (optind + 1 != argc) {
        fprintf(stderr, "%s", s_usage);
        return AQ_EXIT_USAGE;
    }
    const char *name = argv[optind];
    if (!aq_name_is_valid((const uint8_t *) name, strlen(name))) {
        fprintf(stderr, "asyncq keygen: NAME '%s' must be 1 to %d of A-Z a-z 0-9 . _ : -\n", name,
                AQ_NAME_MAX);
        return AQ_EXIT_USAGE;
    }
    if (!s_words_are_valid(roles, 1)) {
        fprintf(stderr, "asyncq keygen: --role takes produce, consume and admin, "
                        "comma-separated, not '%s'\n", roles);
        return AQ_EXIT_USAGE;
    }
    if (queues && !s_words_are_valid(queues, 0)) {
        fprintf(stderr, "asyncq keygen: --queues takes queue names, comma-separated, not '%s'\n",
                queues);
        return AQ_EXIT_USAGE;
    }
    if (aq_keygen(dir, name, roles, queues) != 0) {
        fprintf(stderr, "asyncq keygen: cannot write %s/%s.key: %s\n", dir, name, strerror(errno));
        return AQ_EXIT_FAILURE;
    }
    printf("wrote %s/%s.key (public) and %s/%s.key_secret (secret, mode 0600); role %s%s%s\n",
           dir, name, dir, name, roles, queues ? ", queues " : "", queues ? queues : "");
    return AQ_EXIT_OK;
}
