/*  What every asyncq program does the same way: exit codes, command-line
    values, interruptible sleeps, randomness. */
#ifndef ASYNCQ_PROGRAM_H
#define ASYNCQ_PROGRAM_H

#include <stdint.h>

#include "asyncq/producer.h"

/*  Exit codes shared by every program (documented in the README). */
#define AQ_EXIT_OK 0
#define AQ_EXIT_FAILURE 1    /* runtime failure: refused, lost, transport */
#define AQ_EXIT_USAGE 2      /* bad flag or value */
#define AQ_EXIT_UNREACHABLE 3 /* broker address bad, or broker not answering */
#define AQ_EXIT_TIMEOUT 4    /* join (or another wait) timed out */
#define AQ_EXIT_LOCKED 5     /* asyncq-broker: the data directory is in use by another broker */
#define AQ_EXIT_CORRUPT 6    /* asyncq-broker: the journal is damaged: run --repair */
#define AQ_EXIT_INTERRUPTED 130

/*  The exit code for how a client's work ended (AQ_OK: 0; the broker out of
    reach, or its keys not matching: 3; a time-out: 4...). */
int aq_exit_code(int status);

/*  A whole non-negative decimal number. Returns 1 on success. */
int aq_arg_u64(const char *text, uint64_t *value);

/*  Seconds as a non-negative decimal ("0.25"), converted to milliseconds. */
int aq_arg_seconds_ms(const char *text, uint64_t *milliseconds);

/*  A put's options from a program's flags (NULL: not given): --priority N,
    --delay SECONDS, --at TIME (seconds since 1970, or YYYY-MM-DDTHH:MM:SSZ
    in UTC), --front. Returns 1, or 0 with a sentence in why. */
int aq_arg_put_options(const char *priority, const char *delay, const char *at, int front,
                       aq_put_options_t *options, const char **why);

/*  The help lines of those flags. */
#define AQ_PUT_OPTIONS_USAGE                                                                 \
    "      --priority N      among ready items the lowest priority goes first\n"             \
    "                        (-2147483648 to 2147483647; 0 by default)\n"                    \
    "      --delay SECONDS   not delivered before SECONDS after the broker has it\n"         \
    "      --at TIME         not delivered before TIME: seconds since 1970, or\n"            \
    "                        YYYY-MM-DDTHH:MM:SSZ (UTC), on the broker's clock\n"           \
    "      --front           to the front of its priority (last in, first out)\n"

/*  The flag's value if given, else the environment variable's, else NULL. */
const char *aq_arg_env(const char *flag_value, const char *env);

/*  Fills in what a client program was not told by its flags, from
    ASYNCQ_BROKER, ASYNCQ_QUEUE and ASYNCQ_NAME, then the defaults (localhost,
    "default", default_name). Returns 0 and prints why if the queue name is not
    valid. */
int aq_client_defaults(const char *program, const char **broker, const char **queue,
                       const char **name, const char *default_name);

/*  --curve-secret FILE and --server-key FILE, which every client program
    takes (docs/PROTOCOL.md section 7): option codes for getopt_long, their
    help lines, and the call that applies them (flags win over
    ASYNCQ_CURVE_SECRET and ASYNCQ_SERVER_KEY). aq_security_args prints why
    and returns 0 if a file cannot be read. */
#define AQ_OPT_CURVE_SECRET 2001
#define AQ_OPT_SERVER_KEY 2002
#define AQ_SECURITY_OPTIONS                                                  \
    {"curve-secret", required_argument, 0, AQ_OPT_CURVE_SECRET},             \
    {"server-key", required_argument, 0, AQ_OPT_SERVER_KEY}
#define AQ_SECURITY_USAGE                                                              \
    "      --curve-secret FILE   this client's secret certificate, for CURVE\n"          \
    "                            (env ASYNCQ_CURVE_SECRET; asyncq keygen writes one)\n" \
    "      --server-key FILE     the broker's public certificate, or its key\n"          \
    "                            (env ASYNCQ_SERVER_KEY)\n"
int aq_security_args(const char *program, const char *secret, const char *server_key);

/*  Prints ASYNCQ_CURVE_SECRET= and ASYNCQ_SERVER_KEY= as in effect. */
void aq_security_print_config(const char *secret, const char *server_key);

/*  Sleeps; returns 0, or -1 if a signal (SIGINT, SIGTERM) cut it short. */
int aq_sleep_ms(uint64_t milliseconds);

/*  True once SIGINT or SIGTERM has been received. */
int aq_interrupted(void);

/*  Seeds the process's random numbers (from the clock and pid if seed is 0)
    and returns a uniform number in [0, 1). */
void aq_random_seed(uint64_t seed);
double aq_random(void);

/*  Makes stdout line-buffered, so lines from several processes sharing a
    pipe stay whole and none is lost when the process is stopped. */
void aq_stdout_lines(void);

#endif
