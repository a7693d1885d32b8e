#define _XOPEN_SOURCE 700 /* strptime */
#include "asyncq/program.h"
#include "asyncq/security.h"

#include <czmq.h>
#include <errno.h>
#include <math.h>
#include <time.h>
#include <stdio.h>
#include <unistd.h>
#include <stdlib.h>
#include <string.h>

#include "asyncq/codec.h"
#include "asyncq/endpoint.h"

int aq_arg_u64(const char *text, uint64_t *value)
{
    return text && aq_parse_u64((const uint8_t *) text, strlen(text), value);
}

int aq_arg_seconds_ms(const char *text, uint64_t *milliseconds)
{
    if (!text || !*text)
        return 0;
    char *end;
    double seconds = strtod(text, &end);
    if (*end != '\0' || !isfinite(seconds) || seconds < 0 || seconds > 1e9)
        return 0;
    *milliseconds = (uint64_t) llround(seconds * 1000.0);
    return 1;
}

/*  "2026-12-05T10:00:00Z" (UTC; fractions of a second allowed), or
    seconds since 1970, as milliseconds since 1970. */
static int s_time_ms(const char *text, uint64_t *ms)
{
    char *past;
    double epoch = text && *text ? strtod(text, &past) : -1;
    if (epoch >= 0 && *past == '\0' && isfinite(epoch) && epoch < 1e11) {
        *ms = (uint64_t) llround(epoch * 1000.0);
        return 1;
    }
    struct tm tm = {0};
    const char *rest = strptime(text, "%Y-%m-%dT%H:%M:%S", &tm);
    if (!rest)
        return 0;
    double fraction = 0;
    if (*rest == '.') {
        char *end;
        fraction = strtod(rest, &end);
        rest = end;
    }
    if (strcmp(rest, "Z") != 0)
        return 0;
    time_t seconds = timegm(&tm);
    if (seconds < 0)
        return 0;
    *ms = (uint64_t) seconds * 1000 + (uint64_t) llround(fraction * 1000.0);
    return 1;
}

int aq_arg_put_options(const char *priority, const char *delay, const char *at, int front,
                       aq_put_options_t *options, const char **why)
{
    *options = (aq_put_options_t){.front = front};
    if (priority) {
        char *end;
        errno = 0;
        long long value = strtoll(priority, &end, 10);
        if (!*priority || *end || errno || value < INT32_MIN || value > INT32_MAX) {
            *why = "--priority needs a whole number from -2147483648 to 2147483647";
            return 0;
        }
        options->priority = (int32_t) value;
    }
    if (delay && !aq_arg_seconds_ms(delay, &options->delay_ms)) {
        *why = "--delay needs seconds (0 or more, fractions allowed)";
        return 0;
    }
    if (at && !s_time_ms(at, &options->at_ms)) {
        *why = "--at needs seconds since 1970 or a UTC time as YYYY-MM-DDTHH:MM:SSZ";
        return 0;
    }
    if (delay && at) {
        *why = "--delay and --at cannot both be given";
        return 0;
    }
    if (front && (delay || at)) {
        *why = "--front cannot be given with --delay or --at";
        return 0;
    }
    return 1;
}

const char *aq_arg_env(const char *flag_value, const char *env)
{
    if (flag_value)
        return flag_value;
    const char *value = getenv(env);
    return value && *value ? value : NULL;
}

int aq_client_defaults(const char *program, const char **broker, const char **queue,
                       const char **name, const char *default_name)
{
    *broker = aq_endpoint_choose(*broker, "ASYNCQ_BROKER", "localhost");
    *queue = aq_endpoint_choose(*queue, "ASYNCQ_QUEUE", "default");
    *name = aq_endpoint_choose(*name, "ASYNCQ_NAME", default_name);
    if (aq_name_is_valid((const uint8_t *) *queue, strlen(*queue)))
        return 1;
    fprintf(stderr, "%s: queue name '%s' is not valid: 1 to %d of A-Z a-z 0-9 . _ : -\n",
            program, *queue, AQ_NAME_MAX);
    return 0;
}

int aq_exit_code(int status)
{
    switch (status) {
    case AQ_OK: return AQ_EXIT_OK;
    case AQ_TIMEOUT: return AQ_EXIT_TIMEOUT;
    case AQ_INTERRUPTED: return AQ_EXIT_INTERRUPTED;
    case AQ_BAD_KEY: return AQ_EXIT_USAGE;
    case AQ_UNREACHABLE: case AQ_BAD_ENDPOINT: case AQ_KEY_MISMATCH: case AQ_KEY_REFUSED:
    case AQ_KEY_REQUIRED:
        return AQ_EXIT_UNREACHABLE;
    default: return AQ_EXIT_FAILURE;
    }
}

int aq_security_args(const char *program, const char *secret, const char *server_key)
{
    if (aq_security_set(secret, server_key) == AQ_OK)
        return 1;
    fprintf(stderr, "%s: %s\n", program, aq_security_error());
    return 0;
}

void aq_security_print_config(const char *secret, const char *server_key)
{
    secret = aq_arg_env(secret, "ASYNCQ_CURVE_SECRET");
    server_key = aq_arg_env(server_key, "ASYNCQ_SERVER_KEY");
    printf("ASYNCQ_CURVE_SECRET=%s\nASYNCQ_SERVER_KEY=%s\n", secret ? secret : "",
           server_key ? server_key : "");
}

int aq_sleep_ms(uint64_t milliseconds)
{
    int64_t deadline = zclock_mono() + (int64_t) milliseconds;
    for (;;) {
        if (zsys_interrupted)
            return -1;
        int64_t left = deadline - zclock_mono();
        if (left <= 0)
            return 0;
        /* zmq_poll with no items is an interruptible sleep. */
        if (zmq_poll(NULL, 0, (long) left) < 0 && errno == EINTR && zsys_interrupted)
            return -1;
    }
}

int aq_interrupted(void)
{
    return zsys_interrupted != 0;
}

static uint64_t s_random_state = 0x9e3779b97f4a7c15ULL;

void aq_random_seed(uint64_t seed)
{
    if (seed == 0)
        seed = (uint64_t) zclock_usecs() ^ ((uint64_t) getpid() << 32);
    s_random_state = seed ? seed : 1;
    /* Installs czmq's SIGINT/SIGTERM handler now, not at the first socket. */
    zsys_init();
}

double aq_random(void)
{
    /* xorshift64*: enough for sleeps and demo items. */
    s_random_state ^= s_random_state >> 12;
    s_random_state ^= s_random_state << 25;
    s_random_state ^= s_random_state >> 27;
    uint64_t value = s_random_state * 2685821657736338717ULL;
    return (double) (value >> 11) / 9007199254740992.0;
}

void aq_stdout_lines(void)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
}
