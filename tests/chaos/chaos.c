/*  asyncq-chaos: a run of N items through real producers and consumers while
    random workers are killed (SIGKILL) and restarted. At the end it checks:
    every item delivered at least once, nothing outstanding, every put acked,
    and the join answered only then; it reports the duplicate deliveries.

    Consumers print each item as they get it; a consumer killed before its
    ack reaches the broker has its items delivered again: those are the
    duplicates. A killed producer is restarted from its first item no
    consumer has seen yet, so items it had put but not yet seen delivered
    are put twice: duplicates too, counted the same way.

    Usage: asyncq-chaos [--seed N] [--items N] [--kills N]
    Exit 0 if every check holds. */
#include <czmq.h>
#include <fcntl.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "asyncq/control.h"
#include "asyncq/process.h"
#include "asyncq/program.h"

#define PRODUCERS 4
#define CONSUMERS 6
#define KILL_EVERY_MS 250
#define DEADLINE_MS (5 * 60 * 1000)

typedef struct {
    aq_process_t process;
    int first, last;    /* a producer's range of items */
    int incarnation;
} worker_t;

typedef struct {
    char broker_address[256];
    aq_process_t broker;
    worker_t producers[PRODUCERS];
    worker_t consumers[CONSUMERS];
    int items;
    uint32_t *seen;     /* deliveries of each item */
    uint64_t deliveries;
    int kills;
    unsigned seed;
} chaos_t;

static void s_path(const char *name, char *buf, size_t size)
{
    if (aq_program_path(name, buf, size)) {
        fprintf(stderr, "asyncq-chaos: cannot find %s (set ASYNCQ_BIN_DIR)\n", name);
        exit(1);
    }
}

/*  "Consumer c-... got element <item-00042> in ..." */
static void s_count_line(chaos_t *self, const char *line)
{
    const char *at = strstr(line, "<item-");
    int index;
    if (!at || sscanf(at, "<item-%d>", &index) != 1 || index < 0 || index >= self->items) {
        fprintf(stderr, "asyncq-chaos: unexpected line: %s\n", line);
        return;
    }
    self->seen[index]++;
    self->deliveries++;
}

/*  Waits up to timeout_ms for a line of the first consumer, then takes
    every line already there from all of them. */
static void s_read_consumers(chaos_t *self, int timeout_ms)
{
    char line[512];
    if (aq_process_read_line(&self->consumers[0].process, line, sizeof line, timeout_ms) == 1)
        s_count_line(self, line);
    for (int i = 0; i < CONSUMERS; i++)
        while (aq_process_read_line(&self->consumers[i].process, line, sizeof line, 0) == 1)
            s_count_line(self, line);
}

static void s_start_consumer(chaos_t *self, worker_t *worker)
{
    char path[4096], name[32];
    s_path("asyncq-consumer", path, sizeof path);
    snprintf(name, sizeof name, "c%d", worker->incarnation++);
    char *argv[] = {path, "--broker", self->broker_address, "--queue", "chaos", "--name", name,
                    "--max-sleep", "0", "--credit", "8", NULL};
    if (aq_process_spawn(&worker->process, argv, 1, AQ_STDIN_NULL)) {
        perror("asyncq-chaos: consumer");
        exit(1);
    }
}

/*  Starts a producer for the items of its range no consumer has seen yet. */
static void s_start_producer(chaos_t *self, worker_t *worker)
{
    char path[4096];
    s_path("asyncq-producer", path, sizeof path);
    char *argv[] = {path, "--broker", self->broker_address, "--queue", "chaos", "--stdin",
                    "--quiet", "--max-sleep", "0.004", NULL};
    if (aq_process_spawn(&worker->process, argv, 1, AQ_STDIN_PIPE)) {
        perror("asyncq-chaos: producer");
        exit(1);
    }
    worker->incarnation++;
    int from = worker->first;
    while (from <= worker->last && self->seen[from])
        from++;
    /* The range fits in the pipe's buffer: written at once, then closed. */
    int fd = worker->process.in_fd;
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
    for (int i = from; i <= worker->last; i++) {
        char line[32];
        int length = snprintf(line, sizeof line, "item-%05d\n", i);
        if (write(fd, line, (size_t) length) != length) {
            perror("asyncq-chaos: producer stdin");
            exit(1);
        }
    }
    close(fd);
    worker->process.in_fd = -1;
}

static void s_kill_one(chaos_t *self)
{
    int producers_running = 0;
    for (int i = 0; i < PRODUCERS; i++)
        producers_running += self->producers[i].process.pid > 0;
    int pick = rand_r(&self->seed) % (CONSUMERS + (producers_running ? PRODUCERS : 0));
    worker_t *worker = pick < CONSUMERS ? &self->consumers[pick]
                                        : &self->producers[pick - CONSUMERS];
    if (worker->process.pid <= 0)
        return; /* a producer that has finished */
    kill(worker->process.pid, SIGKILL);
    self->kills++;
    if (pick < CONSUMERS) {
        char line[512]; /* what it printed before dying still counts */
        while (aq_process_read_line(&worker->process, line, sizeof line, 1000) == 1)
            s_count_line(self, line);
        aq_process_wait(&worker->process, -1);
        s_start_consumer(self, worker);
    }
    else {
        aq_process_wait(&worker->process, -1);
        s_start_producer(self, worker);
    }
}

static int s_producers_done(chaos_t *self, int *failed)
{
    int done = 1;
    for (int i = 0; i < PRODUCERS; i++) {
        aq_process_t *process = &self->producers[i].process;
        if (process->pid > 0 && !aq_process_wait(process, 0))
            done = 0;
        else if (process->pid == 0 && process->exit_code != 0)
            *failed = 1;
    }
    return done;
}

typedef struct {
    uint64_t puts, acked, outstanding, redelivered;
} stats_t;

static void s_parse_stats(void *ctx, const char *line)
{
    stats_t *stats = ctx;
    const char *at;
    if ((at = strstr(line, " puts=")))
        stats->puts = strtoull(at + 6, NULL, 10);
    if ((at = strstr(line, " acked=")))
        stats->acked = strtoull(at + 7, NULL, 10);
    if ((at = strstr(line, " outstanding=")))
        stats->outstanding = strtoull(at + 13, NULL, 10);
    if ((at = strstr(line, " redelivered=")))
        stats->redelivered = strtoull(at + 13, NULL, 10);
}

int main(int argc, char **argv)
{
    chaos_t self = {.items = 20000, .seed = 42};
    int max_kills = 20;
    static const struct option options[] = {{"seed", required_argument, 0, 's'},
                                            {"items", required_argument, 0, 'i'},
                                            {"kills", required_argument, 0, 'k'},
                                            {0, 0, 0, 0}};
    int opt;
    while ((opt = getopt_long(argc, argv, "", options, NULL)) != -1) {
        if (opt == 's')
            self.seed = (unsigned) atoi(optarg);
        else if (opt == 'i')
            self.items = atoi(optarg);
        else if (opt == 'k')
            max_kills = atoi(optarg);
        else
            return AQ_EXIT_USAGE;
    }
    if (self.items < PRODUCERS || self.items > 99999)
        return AQ_EXIT_USAGE;
    unsigned seed = self.seed; /* rand_r moves self.seed on */
    self.seen = calloc((size_t) self.items, sizeof *self.seen);
    signal(SIGPIPE, SIG_IGN);

    char path[4096];
    s_path("asyncq-broker", path, sizeof path);
    char *broker_argv[] = {path, "--bind", "tcp://127.0.0.1:0", "--heartbeat-ms", "200", NULL};
    if (aq_process_spawn(&self.broker, broker_argv, 1, AQ_STDIN_NULL)
        || !aq_process_expect(&self.broker, "READY ", self.broker_address,
                              sizeof self.broker_address, 10000)) {
        fprintf(stderr, "asyncq-chaos: the broker did not start\n");
        return 1;
    }
    for (int i = 0; i < CONSUMERS; i++)
        s_start_consumer(&self, &self.consumers[i]);
    int each = self.items / PRODUCERS;
    for (int i = 0; i < PRODUCERS; i++) {
        self.producers[i].first = i * each;
        self.producers[i].last = i == PRODUCERS - 1 ? self.items - 1 : (i + 1) * each - 1;
        s_start_producer(&self, &self.producers[i]);
    }

    int64_t start = zclock_mono(), next_kill = start + KILL_EVERY_MS;
    int failed = 0;
    while (!s_producers_done(&self, &failed) && zclock_mono() - start < DEADLINE_MS) {
        s_read_consumers(&self, 5);
        if (self.kills < max_kills && zclock_mono() >= next_kill) {
            s_kill_one(&self);
            next_kill = zclock_mono() + KILL_EVERY_MS / 2 + rand_r(&self.seed) % KILL_EVERY_MS;
        }
    }

    /* Every put is confirmed: join waits for all of them to be acked. */
    aq_status_t rc;
    aq_session_t *session = aq_session_new(self.broker_address, "chaos-join", 5000, &rc);
    aq_join_result_t joined = {0};
    if (session)
        rc = aq_join(session, "chaos", 60000, AQ_JOIN_BEFORE, &joined);
    stats_t stats = {0};
    if (session && rc == AQ_OK)
        rc = aq_stats(session, "chaos", s_parse_stats, &stats);
    aq_session_destroy(&session);

    for (int i = 0; i < CONSUMERS; i++) /* their last lines */
        kill(self.consumers[i].process.pid, SIGTERM);
    s_read_consumers(&self, 1000);
    for (int i = 0; i < CONSUMERS; i++)
        aq_process_stop(&self.consumers[i].process, SIGTERM, 5000);
    aq_process_stop(&self.broker, SIGINT, 100);
    aq_process_stop(&self.broker, SIGINT, 5000);

    int missing = 0;
    for (int i = 0; i < self.items; i++)
        missing += self.seen[i] == 0;
    uint64_t duplicates = self.deliveries - (uint64_t) (self.items - missing);
    printf("asyncq-chaos: seed %u, %d items, %d workers killed and restarted\n", seed,
           self.items, self.kills);
    printf("  puts accepted by the broker: %llu (%llu put twice by restarted producers)\n",
           (unsigned long long) stats.puts,
           (unsigned long long) (stats.puts - (uint64_t) self.items));
    printf("  deliveries seen: %llu, of which duplicates: %llu (broker redelivered %llu)\n",
           (unsigned long long) self.deliveries, (unsigned long long) duplicates,
           (unsigned long long) stats.redelivered);
    printf("  join: %s, waited for %llu; then acked %llu of %llu puts, outstanding %llu\n",
           aq_strerror(rc), (unsigned long long) joined.waited, (unsigned long long) stats.acked,
           (unsigned long long) stats.puts, (unsigned long long) stats.outstanding);
    printf("  items never delivered: %d; producers failed: %s\n", missing, failed ? "yes" : "no");
    int ok = rc == AQ_OK && missing == 0 && !failed && stats.outstanding == 0
             && stats.acked == stats.puts && stats.puts >= (uint64_t) self.items;
    printf("asyncq-chaos: %s\n", ok ? "PASS" : "FAIL");
    free(self.seen);
    return ok ? 0 : 1;
}
