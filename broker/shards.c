/*  asyncq-broker --shards N: one service of N shard processes on one host
    (PROTOCOL.md 4.15). This process only starts them, passes signals on,
    restarts one that dies and says so, and, with --metrics, serves the
    whole service's HTTP port (service_http.c); each shard is a whole
    broker. */
#include "shards.h"

#include <czmq.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "asyncq/endpoint.h"
#include "asyncq/program.h"
#include "broker.h"
#include "http.h"
#include "persist.h"
#include "ratelog.h"
#include "service_http.h"

#define RESTART_FIRST_MS 500
#define RESTART_MAX_MS 30000
#define RESTART_STEADY_MS 60000 /* up this long: the next death starts the backoff anew */
/*  Where a shard reads the dashboard's token drawn by this process (a
    pipe: the token is never in a file or a command line). */
#define TOKEN_FD 3
#define TOKEN_PATH "/proc/self/fd/3"

typedef struct {
    pid_t pid;             /* 0: not running */
    int64_t started_ms;
    int64_t restart_at_ms; /* when to start it again; 0: not to be */
    int64_t backoff_ms;
    char **argv;
    char *owned[8];        /* the strings of argv made for it */
    int owned_count;
} shard_t;

static volatile sig_atomic_t s_signal;

static void s_on_signal(int signal)
{
    s_signal = signal;
}

static int64_t s_now_ms(void)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (int64_t) now.tv_sec * 1000 + now.tv_nsec / 1000000;
}

/*  The flags a shard must not inherit: they are set for it. */
static int s_is_ours(const char *arg, int *takes_value)
{
    static const char *const names[] = {"shards", "bind", "service", "shard", "data-dir",
                                        "metrics", "state-dump", "peers", NULL};
    *takes_value = 0;
    if (strcmp(arg, "-b") == 0) {
        *takes_value = 1;
        return 1;
    }
    if (strncmp(arg, "-b", 2) == 0) /* -bADDR */
        return 1;
    if (strncmp(arg, "--", 2) != 0)
        return 0;
    for (int i = 0; names[i]; i++) {
        size_t length = strlen(names[i]);
        if (strncmp(arg + 2, names[i], length) == 0) {
            if (arg[2 + length] == '\0') {
                *takes_value = 1;
                return 1;
            }
            if (arg[2 + length] == '=')
                return 1;
        }
    }
    return 0;
}

static char *s_format(const char *format, ...) __attribute__((format(printf, 1, 2)));

static char *s_format(const char *format, ...)
{
    va_list args;
    va_start(args, format);
    char *text = zsys_vprintf(format, args);
    va_end(args);
    return text;
}

/*  HOST:PORT or PORT (the --metrics forms) moved up by `offset` ports:
    shard K's is PORT+1+K, PORT being the service's. */
static char *s_metrics_for(const char *metrics, int offset)
{
    const char *colon = strrchr(metrics, ':');
    const char *port = colon ? colon + 1 : metrics;
    int number = atoi(port);
    if (number <= 0 || number + offset > 65535)
        return NULL;
    return s_format("%.*s%d", (int) (port - metrics), metrics, number + offset);
}

/*  Ports a shard uses in a row: PULL and ROUTER, and a replica's own. */
static int s_stride(const broker_config_t *config)
{
    return config->peers ? 3 : 2;
}

int shards_group(const char *peers, int shard, char separator, char *out, size_t size)
{
    size_t used = 0;
    const char between[2] = {separator, '\0'};
    out[0] = '\0';
    for (const char *at = peers; *at;) {
        size_t length = strcspn(at, ",");
        char entry[AQ_ENDPOINT_MAX];
        aq_endpoint_t endpoint;
        snprintf(entry, sizeof entry, "%.*s", (int) (length < sizeof entry ? length : 0), at);
        if (length == 0 || length >= sizeof entry || aq_endpoint_parse(entry, 0, &endpoint)
            || endpoint.is_ipc || !endpoint.host[0] || endpoint.port == 0
            || endpoint.port + 3 * shard + 2 > 65535)
            return -1;
        int wrote = snprintf(out + used, size - used, "%s%s:%d", used ? between : "",
                             endpoint.host, endpoint.port + 3 * shard);
        if (wrote < 0 || (size_t) wrote >= size - used)
            return -1;
        used += (size_t) wrote;
        at += length + (at[length] == ',');
    }
    return used ? 0 : -1;
}

/*  shard K's argv: the broker's own flags, less those above, plus its own. */
static char *s_own(shard_t *shard, char *text)
{
    shard->owned[shard->owned_count++] = text;
    return text;
}

static char **s_shard_argv(int argc, char **argv, const aq_endpoint_t *bind, const char *service,
                           const broker_config_t *config, int shard, int piped_token,
                           shard_t *owner)
{
    char **out = calloc((size_t) argc + 16, sizeof *out);
    if (!out)
        return NULL;
    int n = 0;
    out[n++] = argv[0];
    for (int i = 1; i < argc; i++) {
        int takes_value;
        if (s_is_ours(argv[i], &takes_value))
            i += takes_value;
        else
            out[n++] = argv[i];
    }
    out[n++] = "--bind";
    out[n++] = s_own(owner, bind->is_ipc ? (shard ? s_format("ipc://%s-%d", bind->path, shard)
                                                  : s_format("ipc://%s", bind->path))
                                         : s_format("tcp://%s:%d", bind->host,
                                                    bind->port + s_stride(config) * shard));
    out[n++] = "--shard";
    out[n++] = s_own(owner, s_format("%d", shard));
    out[n++] = "--service";
    out[n++] = (char *) service;
    if (config->data_dir) {
        out[n++] = "--data-dir";
        out[n++] = s_own(owner, s_format("%s/shard-%d", config->data_dir, shard));
    }
    if (config->metrics) {
        out[n++] = "--metrics";
        out[n++] = s_own(owner, s_metrics_for(config->metrics, 1 + shard));
        if (piped_token) {
            out[n++] = "--metrics-token-file";
            out[n++] = TOKEN_PATH;
        }
    }
    if (config->state_dump) {
        out[n++] = "--state-dump";
        out[n++] = s_own(owner, s_format("%s-%d", config->state_dump, shard));
    }
    for (int i = 0; i < n; i++)
        if (!out[i]) {
            free(out);
            return NULL;
        }
    return out;
}

/*  Starts shard `number`; `token` (NULL: none) is written to a pipe that
    it reads as TOKEN_PATH. Whatever the child does before exec must be
    safe after a fork in a process with threads (the HTTP port's). */
static int s_start(shard_t *shard, int number, const char *token)
{
    int pipe_fds[2] = {-1, -1};
    if (token) {
        size_t size = strlen(token);
        /* Only this thread forks: no other child can inherit it between
           pipe and fcntl. */
        if (pipe(pipe_fds) || fcntl(pipe_fds[0], F_SETFD, FD_CLOEXEC)
            || fcntl(pipe_fds[1], F_SETFD, FD_CLOEXEC)) {
            log_line("shard %d: cannot start: %s", number, strerror(errno));
            if (pipe_fds[0] >= 0) {
                close(pipe_fds[0]);
                close(pipe_fds[1]);
            }
            return -1;
        }
        /* A token of 127 bytes at most: within the pipe's buffer. */
        if (write(pipe_fds[1], token, size) != (ssize_t) size || write(pipe_fds[1], "\n", 1) != 1) {
            log_line("shard %d: cannot start: %s", number, strerror(errno));
            close(pipe_fds[0]);
            close(pipe_fds[1]);
            return -1;
        }
        close(pipe_fds[1]);
    }
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid < 0) {
        log_line("shard %d: cannot start: %s", number, strerror(errno));
        if (token)
            close(pipe_fds[0]);
        return -1;
    }
    if (pid == 0) {
        signal(SIGTERM, SIG_DFL);
        signal(SIGINT, SIG_DFL);
        signal(SIGHUP, SIG_DFL);
        /* A supervisor that is killed (SIGKILL: it cannot pass it on)
           takes its shards with it, so that they free their ports for the
           next one; if it died before this, the shard goes at once. */
        if (prctl(PR_SET_PDEATHSIG, SIGTERM) != 0 || getppid() != parent)
            _exit(127);
        /* A process group of its own: a terminal's Ctrl-C (sent to the
           whole foreground group) reaches the supervisor alone, which
           passes it on once; twice would be the second signal, which
           stops a shard at once (no drain, no hand-over of its lead). */
        setpgid(0, 0);
        if (token && (pipe_fds[0] == TOKEN_FD ? fcntl(TOKEN_FD, F_SETFD, 0)
                                              : dup2(pipe_fds[0], TOKEN_FD)) < 0)
            _exit(127);
        execv("/proc/self/exe", shard->argv);
        execvp(shard->argv[0], shard->argv);
        static const char failed[] = "asyncq-broker: a shard cannot run ";
        if (write(STDERR_FILENO, failed, sizeof failed - 1) > 0
            && write(STDERR_FILENO, shard->argv[0], strlen(shard->argv[0])) > 0
            && write(STDERR_FILENO, "\n", 1) > 0)
            _exit(127);
        _exit(127);
    }
    if (token)
        close(pipe_fds[0]);
    shard->pid = pid;
    shard->started_ms = s_now_ms();
    shard->restart_at_ms = 0;
    return 0;
}

/*  Exit codes that a restart would only repeat. */
static int s_is_final(int code)
{
    return code == AQ_EXIT_USAGE || code == AQ_EXIT_LOCKED || code == AQ_EXIT_CORRUPT
           || code == AQ_EXIT_UNREACHABLE || code == 127;
}

int shards_count(const char *text, int *count)
{
    if (strcmp(text, "auto") == 0) {
        long cores = sysconf(_SC_NPROCESSORS_ONLN);
        *count = cores < 1 ? 1 : cores > SHARDS_MAX ? SHARDS_MAX : (int) cores;
        return 1;
    }
    uint64_t value;
    if (!aq_arg_u64(text, &value) || value < 1 || value > SHARDS_MAX)
        return 0;
    *count = (int) value;
    return 1;
}

int shards_fit_data(const broker_config_t *config, int is_auto, int *count)
{
    if (!config->data_dir)
        return 0;
    persist_dir_t holds;
    persist_dir_holds(config->data_dir, &holds);
    char mixed[512];
    if (persist_dir_mixed(config->data_dir, &holds, mixed, sizeof mixed)) {
        fprintf(stderr, "asyncq-broker: %s\n", mixed);
        return AQ_EXIT_USAGE;
    }
    if (holds.journal || holds.replica) {
        fprintf(stderr, "asyncq-broker: %s holds %s, not a service's shards: start it without "
                        "--shards, as before, or give the service a directory of its own\n",
                config->data_dir, holds.replica ? "the log of a replica of a group (DIR/replica)"
                                                : "the journal of a broker");
        return AQ_EXIT_USAGE;
    }
    if (holds.shards <= *count)
        return 0;
    if (is_auto && holds.shards <= SHARDS_MAX) {
        log_line("--shards auto: %d shards, as many as %s holds (this host has %d cores)",
                 holds.shards, config->data_dir, *count);
        *count = holds.shards;
        return 0;
    }
    char unserved[48];
    snprintf(unserved, sizeof unserved, holds.shards - *count > 1 ? "shards %d to %d" : "shard %d",
             *count, holds.shards - 1);
    fprintf(stderr, "asyncq-broker: %s holds %d shards (shard-0 to shard-%d): --shards %d would "
                    "leave what %s hold%s unserved. Start it with --shards %d; to serve fewer, "
                    "first empty it (no puts, then asyncq join), stop it, and move those "
                    "shards' directories away\n", config->data_dir, holds.shards,
            holds.shards - 1, *count, unserved, holds.shards - *count > 1 ? "" : "s",
            holds.shards);
    return AQ_EXIT_USAGE;
}

/*  The whole service's HTTP port (--metrics), with the token that the
    shards' ports take too. 0, or the exit code, with the reason said. */
static int s_serve(const broker_config_t *config, int count, const char *of, char *token,
                   size_t size, service_http_t **http)
{
    if (http_token_load(config->metrics_token_file, token, size))
        return AQ_EXIT_USAGE;
    char error[1024];
    *http = service_http_new(config->metrics, count, of, token, error, sizeof error);
    if (!*http) {
        fprintf(stderr, "asyncq-broker: %s\n", error);
        return AQ_EXIT_UNREACHABLE;
    }
    const char *url = service_http_url(*http);
    printf("METRICS %s\n", url);
    fflush(stdout);
    log_line("the service's metrics on %s/metrics, its dashboard on %s/ (%s); their actions "
             "need the token %s", url, url, of ? of : "shard K's own on PORT+1+K",
             config->metrics_token_file ? "in --metrics-token-file" : token);
    return 0;
}

int shards_dashboard(const broker_config_t *config, const char *of)
{
    char error[512];
    if (!config->metrics) {
        fprintf(stderr, "asyncq-broker: --dashboard-of needs --metrics [HOST:]PORT: where to "
                        "serve the service's dashboard\n");
        return AQ_EXIT_USAGE;
    }
    if (service_http_check_of(of, error, sizeof error)) {
        fprintf(stderr, "asyncq-broker: %s\n", error);
        return AQ_EXIT_USAGE;
    }
    /* Blocked here and in the HTTP threads (they inherit it): sigwait
       takes them. */
    sigset_t signals;
    sigemptyset(&signals);
    sigaddset(&signals, SIGTERM);
    sigaddset(&signals, SIGINT);
    pthread_sigmask(SIG_BLOCK, &signals, NULL);
    char token[128];
    service_http_t *http = NULL;
    int code = s_serve(config, 0, of, token, sizeof token, &http);
    if (code)
        return code;
    int signal = 0;
    sigwait(&signals, &signal);
    log_line("stopping (signal %d)", signal);
    service_http_destroy(&http);
    return AQ_EXIT_OK;
}

int shards_run(int argc, char **argv, const broker_config_t *config, int count)
{
    aq_endpoint_t bind;
    int stride = s_stride(config);
    if (aq_endpoint_parse(config->bind, 1, &bind) != AQ_OK || (config->peers && bind.is_ipc)
        || (!bind.is_ipc && (bind.port == 0 || bind.port + stride * count - 1 > 65535))) {
        fprintf(stderr, "asyncq-broker: --shards %d needs a fixed --bind port%s with %d ports "
                        "free from it, below 65536 (shard K listens on PORT+%dK), not '%s'\n",
                count, config->peers ? " (tcp://, with --peers)" : "", stride * count, stride,
                config->bind);
        return AQ_EXIT_USAGE;
    }
    if (config->service || config->shard) {
        fprintf(stderr, "asyncq-broker: --shards sets each shard's --shard and --service: give "
                        "neither\n");
        return AQ_EXIT_USAGE;
    }
    char *last_metrics = config->metrics ? s_metrics_for(config->metrics, count) : NULL;
    int metrics_fit = !config->metrics || last_metrics;
    free(last_metrics);
    if (!metrics_fit) {
        fprintf(stderr, "asyncq-broker: --shards %d needs --metrics [HOST:]PORT with %d ports "
                        "free from it (the service on PORT, shard K on PORT+1+K)\n", count,
                count + 1);
        return AQ_EXIT_USAGE;
    }
    if (config->data_dir && mkdir(config->data_dir, 0700) && errno != EEXIST) {
        fprintf(stderr, "asyncq-broker: --data-dir %s: %s\n", config->data_dir, strerror(errno));
        return AQ_EXIT_FAILURE;
    }
    /* The service every shard names: ports on the host a client reached. */
    size_t size = config->peers ? 2 * AQ_TEXT_MAX : (size_t) count * (sizeof bind.path + 16) + 1;
    char *service = calloc(1, size);
    if (!service)
        return AQ_EXIT_FAILURE;
    size_t used = 0;
    /* With --peers, shard K is a group: each replica's port moved up by
       3K on every host (PROTOCOL.md 4.16). */
    for (int k = 0; k < count && used < size; k++) {
        if (config->peers) {
            char group[AQ_TEXT_MAX];
            if (shards_group(config->peers, k, '|', group, sizeof group)) {
                fprintf(stderr, "asyncq-broker: --shards %d with --peers: each of --peers' "
                                "HOST:PORT needs %d ports free from it, below 65536 (shard "
                                "K's replica on PORT+3K), not '%s'\n", count, 3 * count,
                        config->peers);
                free(service);
                return AQ_EXIT_USAGE;
            }
            used += (size_t) snprintf(service + used, size - used, "%s%s", k ? "," : "", group);
        }
        else if (bind.is_ipc)
            used += (size_t) snprintf(service + used, size - used, k ? ",ipc://%s-%d" : "ipc://%s",
                                      bind.path, k);
        else
            used += (size_t) snprintf(service + used, size - used, "%s:%d", k ? "," : "",
                                      bind.port + 2 * k);
    }
    /* WELCOME says a service of groups twice (4.16). */
    if ((config->peers ? 2 * used : used) + 32 > AQ_TEXT_MAX) {
        fprintf(stderr, "asyncq-broker: --shards %d%s: too many to list in one answer (%d "
                        "characters at most, these %d make %zu)\n", count,
                config->peers ? " with --peers" : "",
                (config->peers ? AQ_TEXT_MAX / 2 : AQ_TEXT_MAX) - 32, count, used);
        free(service);
        return AQ_EXIT_USAGE;
    }
    /* The service's HTTP port first: it answers from the start, saying
       which shards do not yet. Its token, if drawn here, goes to the
       shards by a pipe. */
    char token[128] = "";
    service_http_t *http = NULL;
    if (config->metrics) {
        int rc = s_serve(config, count, NULL, token, sizeof token, &http);
        if (rc) {
            free(service);
            return rc;
        }
    }
    const char *piped = config->metrics && !config->metrics_token_file ? token : NULL;
    /* A shard reads the environment too: these are set for it by flag. */
    unsetenv("ASYNCQ_SHARDS");
    unsetenv("ASYNCQ_PEERS"); /* a group's shards take theirs from --service */
    shard_t *shards = calloc((size_t) count, sizeof *shards);
    if (!shards) {
        service_http_destroy(&http);
        free(service);
        return AQ_EXIT_FAILURE;
    }
    struct sigaction action = {.sa_handler = s_on_signal};
    sigemptyset(&action.sa_mask);
    sigaction(SIGTERM, &action, NULL);
    sigaction(SIGINT, &action, NULL);
    sigaction(SIGHUP, &action, NULL);
    log_line("running %d shards of one service: %s", count, service);
    int stopping = 0, exit_code = AQ_EXIT_OK, running = 0;
    for (int k = 0; k < count; k++) {
        shards[k].argv =
            s_shard_argv(argc, argv, &bind, service, config, k, piped != NULL, &shards[k]);
        shards[k].backoff_ms = RESTART_FIRST_MS;
        if (!shards[k].argv || s_start(&shards[k], k, piped)) {
            exit_code = AQ_EXIT_FAILURE;
            stopping = 1;
            break;
        }
        running++;
    }
    if (stopping)
        for (int k = 0; k < count; k++)
            if (shards[k].pid)
                kill(shards[k].pid, SIGTERM);
    while (running) {
        if (s_signal) {
            int signal = s_signal;
            s_signal = 0;
            if (signal != SIGHUP)
                stopping = 1;
            for (int k = 0; k < count; k++)
                if (shards[k].pid)
                    kill(shards[k].pid, signal);
        }
        int status;
        pid_t pid = waitpid(-1, &status, WNOHANG);
        if (pid > 0) {
            int k = 0;
            while (k < count && shards[k].pid != pid)
                k++;
            if (k == count)
                continue;
            shards[k].pid = 0;
            running--;
            int code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
            if (stopping) {
                if (code && !exit_code)
                    exit_code = code == 128 + SIGTERM || code == 128 + SIGINT ? 0 : code;
                continue;
            }
            int64_t now = s_now_ms();
            if (now - shards[k].started_ms >= RESTART_STEADY_MS)
                shards[k].backoff_ms = RESTART_FIRST_MS;
            if (WIFEXITED(status) && s_is_final(code)) {
                log_line("shard %d (pid %d) exited with code %d: not restarted (the others "
                         "serve on)", k, (int) pid, code);
                exit_code = code;
                continue;
            }
            if (WIFEXITED(status))
                log_line("shard %d (pid %d) exited with code %d: restarting it in %lld ms", k,
                         (int) pid, code, (long long) shards[k].backoff_ms);
            else
                log_line("shard %d (pid %d) was killed by signal %d: restarting it in %lld ms",
                         k, (int) pid, WTERMSIG(status), (long long) shards[k].backoff_ms);
            shards[k].restart_at_ms = now + shards[k].backoff_ms;
            shards[k].backoff_ms = shards[k].backoff_ms * 2 > RESTART_MAX_MS
                                       ? RESTART_MAX_MS
                                       : shards[k].backoff_ms * 2;
            running++; /* counted as running until it is started again */
            continue;
        }
        int64_t now = s_now_ms();
        for (int k = 0; k < count; k++)
            if (!shards[k].pid && shards[k].restart_at_ms) {
                if (stopping) {
                    shards[k].restart_at_ms = 0;
                    running--;
                }
                else if (now >= shards[k].restart_at_ms && s_start(&shards[k], k, piped))
                    shards[k].restart_at_ms = now + shards[k].backoff_ms;
            }
        struct timespec nap = {0, 50 * 1000000};
        nanosleep(&nap, NULL); /* a signal ends it early */
    }
    log_line("every shard stopped");
    service_http_destroy(&http);
    for (int k = 0; k < count; k++) {
        for (int i = 0; i < shards[k].owned_count; i++)
            free(shards[k].owned[i]);
        free(shards[k].argv);
    }
    free(shards);
    free(service);
    return exit_code;
}
