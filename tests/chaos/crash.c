/*  asyncq-crash: a durable broker SIGKILLed and restarted on its data
    directory at random moments (seeded) while producers put, consumers get
    and ack, and joins are asked. At the end it checks:
      - every put confirmed to a producer was delivered;
      - none was enqueued twice (each payload came with one broker id);
      - every join asked during the run answered only once every item
        confirmed before it had been delivered;
      - nothing is outstanding;
    and reports the duplicate deliveries (acks lost with a crash).

    Producers and consumers are forked children using the C library, each
    reporting on a pipe: "C n" (a producer's first n items confirmed), "D
    payload id" (a consumer got it, before acking). The parent kills and
    restarts the broker and asks the joins.

    Usage: asyncq-crash [--seed N] [--items N] [--crashes N]
    Exit 0 if every check holds. */
#include <czmq.h>
#include <fcntl.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "asyncq/consumer.h"
#include "asyncq/control.h"
#include "asyncq/process.h"
#include "asyncq/producer.h"
#include "asyncq/program.h"

#define PRODUCERS 3
#define CONSUMERS 3
#define QUEUE "crash"
#define DEADLINE_MS (4 * 60 * 1000)

typedef struct {
    pid_t pid;
    int fd;              /* its reports */
    char partial[256];   /* a line not yet whole */
    size_t partial_size;
    int first, count;    /* a producer's items */
    int confirmed;       /* of them, how many are confirmed */
    int done;
} child_t;

typedef struct {
    char dir[64];
    char address[256];
    aq_process_t broker;
    child_t producers[PRODUCERS];
    child_t consumers[CONSUMERS];
    int items;
    uint32_t *seen;      /* deliveries of each item */
    uint64_t *id;        /* the broker id it came with first */
    int double_enqueued;
    uint64_t deliveries;
    unsigned seed;
} crash_t;

/* ------------------------------------------------------------ children */

static void s_report(int fd, const char *format, ...)
{
    char line[256];
    va_list args;
    va_start(args, format);
    int length = vsnprintf(line, sizeof line, format, args);
    va_end(args);
    if (write(fd, line, (size_t) length) != length)
        _exit(3);
}

/*  Puts its items in batches of 50, each confirmed before the next (a
    sync waits across broker restarts, sending again what was lost). */
static int s_produce(const char *address, int first, int count, int fd)
{
    aq_status_t rc;
    aq_producer_t *producer = NULL;
    for (int tries = 0; !producer && tries < 600; tries++)
        if (!(producer = aq_producer_new(address, "crash-p", &rc)))
            zclock_sleep(100);
    if (!producer)
        return 1;
    for (int i = 0; i < count; i += 50) {
        int end = i + 50 < count ? i + 50 : count;
        for (int j = i; j < end; j++) {
            char item[32];
            int size = snprintf(item, sizeof item, "item-%06d", first + j);
            if (aq_producer_put(producer, QUEUE, item, (size_t) size) != AQ_OK)
                return 1;
        }
        while ((rc = aq_producer_sync(producer, 1000)) == AQ_TIMEOUT)
            ;
        if (rc != AQ_OK)
            return 1;
        s_report(fd, "C %d\n", end);
        zclock_sleep(150); /* paced, so that the crashes fall while items flow */
    }
    aq_producer_destroy(&producer);
    return 0;
}

static int s_consume(const char *address, int fd)
{
    aq_status_t rc;
    aq_consumer_t *consumer = NULL;
    while (!(consumer = aq_consumer_new(address, "crash-c", QUEUE, 16, &rc)))
        zclock_sleep(100);
    for (;;) {
        aq_item_t item;
        rc = aq_consumer_get(consumer, &item, 1000);
        if (rc == AQ_TIMEOUT || rc == AQ_REFUSED)
            continue; /* a broker restarting; acks of the old one's items refused */
        if (rc != AQ_OK)
            return 1;
        s_report(fd, "D %.*s %llu\n", (int) item.size, (const char *) item.data,
                 (unsigned long long) item.id);
        aq_consumer_ack(consumer, item.id);
    }
}

static void s_fork(crash_t *self, child_t *child, int producer)
{
    int fds[2];
    if (pipe(fds)) {
        perror("pipe");
        exit(1);
    }
    child->pid = fork();
    if (child->pid < 0) {
        perror("fork");
        exit(1);
    }
    if (child->pid == 0) {
        close(fds[0]);
        int rc = producer ? s_produce(self->address, child->first, child->count, fds[1])
                          : s_consume(self->address, fds[1]);
        _exit(rc);
    }
    close(fds[1]);
    child->fd = fds[0];
    fcntl(child->fd, F_SETFL, fcntl(child->fd, F_GETFL) | O_NONBLOCK);
}

/* -------------------------------------------------------------- parent */

static void s_line(crash_t *self, child_t *child, const char *line)
{
    int index;
    unsigned long long id;
    if (line[0] == 'C') {
        child->confirmed = atoi(line + 2);
        return;
    }
    if (sscanf(line, "D item-%d %llu", &index, &id) != 2 || index < 0 || index >= self->items) {
        fprintf(stderr, "asyncq-crash: unexpected report: %s\n", line);
        return;
    }
    if (self->seen[index]++ == 0)
        self->id[index] = id;
    else if (self->id[index] != id) {
        /* A second id for one put: it was enqueued twice. */
        if (self->double_enqueued++ < 5)
            fprintf(stderr, "asyncq-crash: item-%06d came with ids %llu and %llu\n", index,
                    (unsigned long long) self->id[index], id);
    }
    self->deliveries++;
}

static void s_read(crash_t *self, child_t *child)
{
    char buf[4096];
    ssize_t got;
    while ((got = read(child->fd, buf, sizeof buf)) > 0) {
        for (ssize_t i = 0; i < got; i++) {
            if (buf[i] != '\n') {
                if (child->partial_size < sizeof child->partial - 1)
                    child->partial[child->partial_size++] = buf[i];
                continue;
            }
            child->partial[child->partial_size] = '\0';
            s_line(self, child, child->partial);
            child->partial_size = 0;
        }
    }
}

static void s_read_all(crash_t *self)
{
    for (int i = 0; i < PRODUCERS; i++)
        s_read(self, &self->producers[i]);
    for (int i = 0; i < CONSUMERS; i++)
        s_read(self, &self->consumers[i]);
}

static int s_start_broker(crash_t *self, const char *bind)
{
    char path[4096], address[256];
    if (aq_program_path("asyncq-broker", path, sizeof path))
        return -1;
    snprintf(address, sizeof address, "%s", bind);
    char *argv[] = {path, "--bind", address, "--data-dir", self->dir, "--heartbeat-ms", "200",
                    "--max-attempts", "0", NULL};
    if (aq_process_spawn(&self->broker, argv, 1, AQ_STDIN_NULL)
        || !aq_process_expect(&self->broker, "READY ", self->address, sizeof self->address,
                              20000))
        return -1;
    return 0;
}

static int s_producers_done(crash_t *self)
{
    int done = 1;
    for (int i = 0; i < PRODUCERS; i++) {
        child_t *child = &self->producers[i];
        int status;
        if (!child->done && waitpid(child->pid, &status, WNOHANG) == child->pid) {
            child->done = WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 1 : -1;
            s_read(self, child);
        }
        if (!child->done)
            done = 0;
    }
    return done;
}

/*  A join asked now: once it answers, every item confirmed before it must
    have been delivered. Asked again on a new session if the broker dies
    meanwhile (a later join is only stricter). Returns 1 if it held. */
static int s_join(crash_t *self, int *asked)
{
    int confirmed[PRODUCERS];
    for (int i = 0; i < PRODUCERS; i++)
        confirmed[i] = self->producers[i].confirmed;
    aq_status_t rc = AQ_TIMEOUT;
    int64_t until = zclock_mono() + 60000;
    while (rc != AQ_OK && zclock_mono() < until) {
        aq_session_t *session = aq_session_new(self->address, "crash-join", 2000, &rc);
        aq_join_result_t result;
        if (session)
            rc = aq_join(session, QUEUE, 20000, AQ_JOIN_BEFORE, &result);
        else
            zclock_sleep(100); /* refused at once while the broker restarts */
        aq_session_destroy(&session);
    }
    if (rc != AQ_OK) {
        fprintf(stderr, "asyncq-crash: a join got no answer: %s\n", aq_strerror(rc));
        return 0;
    }
    (*asked)++;
    s_read_all(self);
    for (int i = 0; i < PRODUCERS; i++)
        for (int j = 0; j < confirmed[i]; j++)
            if (!self->seen[self->producers[i].first + j]) {
                fprintf(stderr, "asyncq-crash: a join answered before item-%06d, confirmed "
                                "before it, was delivered\n", self->producers[i].first + j);
                return 0;
            }
    return 1;
}

int main(int argc, char **argv)
{
    crash_t self = {.items = 6000, .seed = 7};
    int crashes_wanted = 20;
    static const struct option options[] = {{"seed", required_argument, 0, 's'},
                                            {"items", required_argument, 0, 'i'},
                                            {"crashes", required_argument, 0, 'c'},
                                            {0, 0, 0, 0}};
    int opt;
    while ((opt = getopt_long(argc, argv, "", options, NULL)) != -1) {
        if (opt == 's')
            self.seed = (unsigned) atoi(optarg);
        else if (opt == 'i')
            self.items = atoi(optarg);
        else if (opt == 'c')
            crashes_wanted = atoi(optarg);
        else
            return AQ_EXIT_USAGE;
    }
    if (self.items < PRODUCERS || self.items > 999999)
        return AQ_EXIT_USAGE;
    unsigned seed = self.seed;
    self.seen = calloc((size_t) self.items, sizeof *self.seen);
    self.id = calloc((size_t) self.items, sizeof *self.id);
    signal(SIGPIPE, SIG_IGN);
    snprintf(self.dir, sizeof self.dir, "/tmp/asyncq-crash-XXXXXX");
    if (!mkdtemp(self.dir) || s_start_broker(&self, "tcp://127.0.0.1:0")) {
        fprintf(stderr, "asyncq-crash: the broker did not start\n");
        return 1;
    }
    char fixed[256];
    snprintf(fixed, sizeof fixed, "%s", self.address);

    int each = self.items / PRODUCERS;
    for (int i = 0; i < PRODUCERS; i++) {
        self.producers[i].first = i * each;
        self.producers[i].count = i == PRODUCERS - 1 ? self.items - i * each : each;
        s_fork(&self, &self.producers[i], 1);
    }
    for (int i = 0; i < CONSUMERS; i++)
        s_fork(&self, &self.consumers[i], 0);

    int crashes = 0, joins = 0, joins_ok = 1, broker_ok = 1;
    int64_t start = zclock_mono();
    int64_t next_crash = start + 200 + rand_r(&self.seed) % 400;
    int64_t next_join = start + 300;
    while ((!s_producers_done(&self) || crashes < crashes_wanted)
           && zclock_mono() - start < DEADLINE_MS) {
        s_read_all(&self);
        int64_t now = zclock_mono();
        if (crashes < crashes_wanted && now >= next_crash) {
            aq_process_stop(&self.broker, SIGKILL, 1000);
            if (s_start_broker(&self, fixed)) {
                fprintf(stderr, "asyncq-crash: the broker did not start again\n");
                broker_ok = 0;
                break;
            }
            crashes++;
            next_crash = zclock_mono() + 150 + rand_r(&self.seed) % 500;
        }
        else if (now >= next_join) {
            joins_ok &= s_join(&self, &joins);
            next_join = zclock_mono() + 200 + rand_r(&self.seed) % 300;
        }
        else
            zclock_sleep(10);
    }
    int producers_ok = 1;
    for (int i = 0; i < PRODUCERS; i++)
        producers_ok &= self.producers[i].done == 1;

    /* Every put confirmed: a last join, then what the broker holds. */
    if (broker_ok)
        joins_ok &= s_join(&self, &joins);
    uint64_t outstanding = UINT64_MAX;
    aq_status_t rc;
    aq_session_t *session = broker_ok ? aq_session_new(self.address, "crash-stats", 5000, &rc)
                                      : NULL;
    if (session) {
        aq_join_result_t result;
        if (aq_join(session, QUEUE, 5000, AQ_JOIN_ALL, &result) == AQ_OK)
            outstanding = result.waited;
        aq_session_destroy(&session);
    }
    s_read_all(&self);
    for (int i = 0; i < CONSUMERS; i++) {
        kill(self.consumers[i].pid, SIGKILL);
        waitpid(self.consumers[i].pid, NULL, 0);
        s_read(&self, &self.consumers[i]);
    }
    aq_process_stop(&self.broker, SIGTERM, 5000);

    int missing = 0;
    for (int i = 0; i < self.items; i++)
        missing += self.seen[i] == 0;
    printf("asyncq-crash: seed %u, %d items, broker killed %d times\n", seed, self.items,
           crashes);
    printf("  producers confirmed every put: %s\n", producers_ok ? "yes" : "no");
    printf("  confirmed items never delivered: %d; enqueued twice: %d\n", missing,
           self.double_enqueued);
    printf("  deliveries: %llu, duplicates (acks lost with a crash): %llu\n",
           (unsigned long long) self.deliveries,
           (unsigned long long) (self.deliveries - (uint64_t) (self.items - missing)));
    printf("  joins during the run: %d, all exact: %s; outstanding at the end: %llu\n", joins,
           joins_ok ? "yes" : "no", (unsigned long long) outstanding);
    int ok = broker_ok && producers_ok && missing == 0 && self.double_enqueued == 0 && joins_ok
             && joins > 1 && crashes >= crashes_wanted && outstanding == 0;
    printf("asyncq-crash: %s\n", ok ? "PASS" : "FAIL");
    /* A failed run's journal is kept, to look into. */
    char command[128];
    snprintf(command, sizeof command, "rm -rf %s", self.dir);
    if (!ok)
        printf("  its data directory is kept: %s\n", self.dir);
    else if (system(command) != 0)
        fprintf(stderr, "asyncq-crash: could not remove %s\n", self.dir);
    free(self.seen);
    free(self.id);
    return ok ? 0 : 1;
}
