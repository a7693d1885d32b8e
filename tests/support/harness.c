/* nftw (harness_remove_tree) is an X/Open function. */
#define _XOPEN_SOURCE 700
#include "harness.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <ftw.h>
#include <poll.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

void harness_filter(void)
{
    const char *pattern = getenv("ASYNCQ_TEST_FILTER");
    if (pattern && *pattern)
        cmocka_set_test_filter(pattern);
}

static void s_program(const char *name, char *path, size_t size)
{
    if (aq_program_path(name, path, size))
        fail_msg("cannot find %s (is ASYNCQ_BIN_DIR set?)", name);
}

static void s_start_broker_at(harness_t *self, const char *bind, char *const *flags)
{
    char path[4096], address[sizeof self->address];
    s_program("asyncq-broker", path, sizeof path);
    snprintf(address, sizeof address, "%s", bind);
    char *argv[32] = {path, "--bind", address};
    int argc = 3;
    for (int i = 0; flags && flags[i]; i++) {
        assert_true(argc < 31);
        argv[argc++] = flags[i];
    }
    argv[argc] = NULL;
    assert_int_equal(aq_process_spawn_logged(&self->broker, argv, 1, 1,
                                             self->log_path[0] ? self->log_path : NULL), 0);
    if (!aq_process_expect(&self->broker, "READY ", self->address, sizeof self->address,
                           HARNESS_DEADLINE_MS))
        fail_msg("broker did not print READY");
}

void harness_start_broker(harness_t *self, char *const *flags)
{
    s_start_broker_at(self, "tcp://127.0.0.1:0", flags);
}

void harness_start_broker_logged(harness_t *self, char *const *flags)
{
    snprintf(self->log_path, sizeof self->log_path, "/tmp/asyncq-test-log-XXXXXX");
    int fd = mkstemp(self->log_path);
    assert_true(fd >= 0);
    close(fd);
    s_start_broker_at(self, "tcp://127.0.0.1:0", flags);
}

char *harness_read_file(const char *path)
{
    FILE *file = fopen(path, "r");
    if (!file)
        fail_msg("cannot read %s: %s", path, strerror(errno));
    char *text = NULL;
    size_t size = 0;
    FILE *out = open_memstream(&text, &size);
    assert_non_null(out);
    char buf[8192];
    size_t got;
    while ((got = fread(buf, 1, sizeof buf, file)) > 0)
        fwrite(buf, 1, got, out);
    fclose(file);
    fclose(out);
    return text;
}

char *harness_log(const harness_t *self)
{
    return harness_read_file(self->log_path);
}

static int s_remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void) st, (void) flag, (void) ftw;
    return remove(path);
}

void harness_remove_tree(const char *dir)
{
    nftw(dir, s_remove_entry, 16, FTW_DEPTH | FTW_PHYS);
}

void harness_restart_broker(harness_t *self, char *const *flags)
{
    aq_process_stop(&self->broker, SIGKILL, 1000);
    s_start_broker_at(self, self->address, flags);
}

void harness_stop(harness_t *self)
{
    if (self->log_path[0])
        unlink(self->log_path);
    if (self->child > 0) {
        kill(self->child, SIGKILL);
        waitpid(self->child, NULL, 0);
        self->child = 0;
    }
    /* The first SIGTERM starts a drain, which waits for consumers; the
       second ends it at once. */
    if (self->broker.pid > 0) {
        kill(self->broker.pid, SIGTERM);
        if (!aq_process_wait(&self->broker, 100))
            aq_process_stop(&self->broker, SIGTERM, 5000);
    }
}

int harness_setup_flags(void **state, char *const *flags)
{
    harness_t *self = calloc(1, sizeof *self);
    assert_non_null(self);
    harness_start_broker(self, flags);
    *state = self;
    return 0;
}

int harness_setup(void **state)
{
    return harness_setup_flags(state, NULL);
}

int harness_teardown(void **state)
{
    harness_t *self = *state;
    harness_stop(self);
    free(self);
    return 0;
}

int harness_dir_setup(void **state)
{
    harness_dir_t *self = calloc(1, sizeof *self);
    assert_non_null(self);
    snprintf(self->root, sizeof self->root, "/tmp/asyncq-test-XXXXXX");
    assert_non_null(mkdtemp(self->root));
    snprintf(self->data, sizeof self->data, "%s/data", self->root);
    *state = self;
    return 0;
}

int harness_dir_teardown(void **state)
{
    harness_dir_t *self = *state;
    harness_stop(&self->h); /* the broker and its log, even after a failed assertion */
    harness_remove_tree(self->root);
    free(self);
    return 0;
}

static void s_resolve(char **argv, char *path, size_t size)
{
    if (argv[0][0] != '/') {
        s_program(argv[0], path, size);
        argv[0] = path;
    }
}

static int s_run(char **argv, char *out, size_t size, const char *stderr_path)
{
    char path[4096];
    s_resolve(argv, path, sizeof path);
    aq_process_t process;
    assert_int_equal(aq_process_spawn_logged(&process, argv, 1, 1, stderr_path), 0);
    size_t used = 0;
    char line[4096];
    int rc;
    int64_t deadline = zclock_mono() + 60000;
    while ((rc = aq_process_read_line(&process, line, sizeof line, 1000)) >= 0) {
        if (rc == 1 && out && used + strlen(line) + 2 < size)
            used += (size_t) sprintf(out + used, "%s\n", line);
        if (zclock_mono() > deadline) {
            aq_process_stop(&process, SIGKILL, 1000);
            fail_msg("%s did not finish", argv[0]);
        }
    }
    if (out)
        out[used] = '\0';
    aq_process_wait(&process, -1);
    return process.exit_code;
}

int harness_run(char **argv, char *out, size_t size)
{
    return s_run(argv, out, size, NULL);
}

int harness_run_err(char **argv, char *out, size_t size, char *err, size_t err_size)
{
    char path[] = "/tmp/asyncq-test-stderr-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);
    int code = s_run(argv, out, size, path);
    FILE *file = fopen(path, "r");
    assert_non_null(file);
    size_t got = fread(err, 1, err_size - 1, file);
    err[got] = '\0';
    fclose(file);
    unlink(path);
    return code;
}

void harness_spawn(aq_process_t *process, char **argv)
{
    char path[4096];
    s_resolve(argv, path, sizeof path);
    assert_int_equal(aq_process_spawn(process, argv, 1, 1), 0);
}

aq_session_t *harness_session(const harness_t *self)
{
    aq_status_t rc;
    aq_session_t *session = aq_session_new(self->address, "test", HARNESS_DEADLINE_MS, &rc);
    assert_non_null(session);
    return session;
}

typedef struct {
    const char *key;
    uint64_t value;
    int found;
    int lines;
} stat_t;

static void s_find_stat(void *ctx, const char *line)
{
    stat_t *stat = ctx;
    stat->lines++;
    char pattern[64];
    snprintf(pattern, sizeof pattern, " %s=", stat->key);
    const char *at = strstr(line, pattern);
    if (at) {
        stat->value = strtoull(at + strlen(pattern), NULL, 10);
        stat->found = 1;
    }
}

uint64_t harness_stat(const harness_t *self, const char *queue, const char *key)
{
    aq_session_t *session = harness_session(self);
    stat_t stat = {key, 0, 0, 0};
    assert_int_equal(aq_stats(session, queue, s_find_stat, &stat), AQ_OK);
    aq_session_destroy(&session);
    /* No line: the queue does not exist (any more), and all its numbers are 0. */
    assert_true(stat.found || stat.lines == 0);
    return stat.value;
}

uint64_t harness_info(const harness_t *self, const char *key)
{
    aq_session_t *session = harness_session(self);
    stat_t stat = {key, 0, 0, 0};
    assert_int_equal(aq_info(session, s_find_stat, &stat), AQ_OK);
    aq_session_destroy(&session);
    assert_true(stat.found);
    return stat.value;
}

void harness_wait_info(const harness_t *self, const char *key, uint64_t value)
{
    int64_t deadline = zclock_mono() + HARNESS_DEADLINE_MS;
    uint64_t now;
    while ((now = harness_info(self, key)) != value) {
        if (zclock_mono() > deadline)
            fail_msg("%s stayed %llu, expected %llu", key, (unsigned long long) now,
                     (unsigned long long) value);
        zclock_sleep(20); /* polling a remote counter: there is nothing to wait on */
    }
}

static void s_wait_stat(const harness_t *self, const char *queue, const char *key,
                        uint64_t value, int at_least)
{
    int64_t deadline = zclock_mono() + HARNESS_DEADLINE_MS;
    uint64_t now;
    while ((now = harness_stat(self, queue, key)) != value && !(at_least && now > value)) {
        if (zclock_mono() > deadline)
            fail_msg("%s %s stayed %llu, expected %llu", queue, key, (unsigned long long) now,
                     (unsigned long long) value);
        zclock_sleep(20); /* polling a remote counter: there is nothing to wait on */
    }
}

void harness_wait_stat(const harness_t *self, const char *queue, const char *key,
                       uint64_t value)
{
    s_wait_stat(self, queue, key, value, 0);
}

void harness_wait_stat_at_least(const harness_t *self, const char *queue, const char *key,
                                uint64_t value)
{
    s_wait_stat(self, queue, key, value, 1);
}

int harness_wait_exit(aq_process_t *process)
{
    if (!aq_process_wait(process, HARNESS_DEADLINE_MS))
        fail_msg("process %d did not exit in time", (int) process->pid);
    return process->exit_code;
}

zsock_t *harness_raw(const harness_t *self, int type)
{
    aq_endpoint_t endpoint;
    assert_int_equal(aq_endpoint_parse(self->address, 0, &endpoint), AQ_OK);
    char address[AQ_ENDPOINT_MAX];
    if (type == ZMQ_PUSH)
        aq_endpoint_pull(&endpoint, address, sizeof address);
    else
        aq_endpoint_router(&endpoint, address, sizeof address);
    zsock_t *socket = zsock_new(type);
    assert_non_null(socket);
    zsock_set_linger(socket, 1000);
    aq_security_apply(socket); /* the process's keys, if a test set them */
    assert_int_equal(zsock_connect(socket, "%s", address), 0);
    return socket;
}

void harness_send_frames(zsock_t *socket, ...)
{
    va_list args;
    va_start(args, socket);
    const char *frame = va_arg(args, const char *);
    while (frame) {
        const char *next = va_arg(args, const char *);
        assert_true(zmq_send(zsock_resolve(socket), frame, strlen(frame), next ? ZMQ_SNDMORE : 0) >= 0);
        frame = next;
    }
    va_end(args);
}

aq_cmd_t harness_recv(zsock_t *socket, aq_inbox_t *inbox, aq_msg_t *msg)
{
    for (;;) {
        zmq_pollitem_t item = {zsock_resolve(socket), 0, ZMQ_POLLIN, 0};
        if (zmq_poll(&item, 1, HARNESS_DEADLINE_MS) != 1)
            fail_msg("no reply from the broker");
        assert_int_equal(aq_inbox_recv(inbox, zsock_resolve(socket), 0, 0), AQ_OK);
        assert_int_equal(aq_inbox_decode(inbox, msg), AQ_OK);
        if (msg->cmd != AQ_CMD_HEARTBEAT)
            return msg->cmd;
    }
}

void harness_send_msg(zsock_t *socket, const aq_msg_t *msg)
{
    assert_int_equal(aq_msg_send(zsock_resolve(socket), NULL, msg, NULL, 0), AQ_OK);
}

void harness_hello(zsock_t *dealer, aq_inbox_t *inbox, const char *client_id, uint64_t seq)
{
    aq_msg_t hello = {.cmd = AQ_CMD_HELLO, .tag = aq_bytes_str("hello"),
                      .client = aq_bytes_str(client_id), .seq = seq};
    harness_send_msg(dealer, &hello);
    aq_msg_t msg;
    assert_int_equal(harness_recv(dealer, inbox, &msg), AQ_CMD_WELCOME);
}

void harness_put_items(const harness_t *h, const char *queue, int count)
{
    aq_status_t rc;
    aq_producer_t *producer = aq_producer_new(h->address, "p", &rc);
    assert_non_null(producer);
    for (int i = 0; i < count; i++)
        assert_int_equal(aq_producer_put(producer, queue, "item", 4), AQ_OK);
    assert_int_equal(aq_producer_sync(producer, HARNESS_DEADLINE_MS), AQ_OK);
    aq_producer_destroy(&producer);
}

/*  Puts one item, gets it back, acks it: the broker still works. */
void harness_assert_serving(const harness_t *h, const char *queue)
{
    aq_status_t rc;
    aq_producer_t *producer = aq_producer_new(h->address, "check", &rc);
    assert_non_null(producer);
    assert_int_equal(aq_producer_put(producer, queue, "ok", 2), AQ_OK);
    assert_int_equal(aq_producer_sync(producer, HARNESS_DEADLINE_MS), AQ_OK);
    aq_producer_destroy(&producer);
    aq_consumer_t *consumer = aq_consumer_new(h->address, "check", queue, 1, &rc);
    assert_non_null(consumer);
    aq_item_t item;
    assert_int_equal(aq_consumer_get(consumer, &item, HARNESS_DEADLINE_MS), AQ_OK);
    assert_int_equal(item.size, 2);
    assert_memory_equal(item.data, "ok", 2);
    aq_consumer_ack(consumer, item.id);
    aq_consumer_destroy(&consumer);
    aq_session_t *session = harness_session(h);
    aq_join_result_t result;
    assert_int_equal(aq_join(session, queue, HARNESS_DEADLINE_MS, AQ_JOIN_BEFORE, &result), AQ_OK);
    aq_session_destroy(&session);
}

uint64_t harness_rss_kib(pid_t pid)
{
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/status", (int) pid);
    FILE *file = fopen(path, "r");
    assert_non_null(file);
    uint64_t kib = 0;
    while (fgets(line, sizeof line, file))
        if (strncmp(line, "VmRSS:", 6) == 0)
            kib = strtoull(line + 6, NULL, 10);
    fclose(file);
    return kib;
}

/*  The processes whose command line names --shard K and `root`: the pid
    of the first of shard `shard`; with shard < 0, every one SIGKILLed. */
static pid_t s_shards(const char *root, int shard)
{
    DIR *proc = opendir("/proc");
    assert_non_null(proc);
    struct dirent *entry;
    pid_t found = 0;
    while (!found && (entry = readdir(proc))) {
        char path[300], args[4096];
        snprintf(path, sizeof path, "/proc/%s/cmdline", entry->d_name);
        FILE *file = fopen(path, "r");
        if (!file)
            continue;
        size_t size = fread(args, 1, sizeof args - 1, file);
        fclose(file);
        args[size] = '\0';
        int number = -1, ours = 0;
        for (size_t at = 0; at < size; at += strlen(args + at) + 1) {
            if (strcmp(args + at, "--shard") == 0 && at + 8 < size)
                number = atoi(args + at + 8);
            if (strstr(args + at, root))
                ours = 1;
        }
        if (!ours || number < 0)
            continue;
        if (shard < 0)
            kill((pid_t) atoi(entry->d_name), SIGKILL);
        else if (number == shard)
            found = (pid_t) atoi(entry->d_name);
    }
    closedir(proc);
    return found;
}

pid_t harness_shard_pid(const char *root, int shard)
{
    assert_true(shard >= 0);
    return s_shards(root, shard);
}

void harness_kill_shards(const char *root)
{
    s_shards(root, -1);
}

/*  Whether a TCP port of 127.0.0.1 can be bound now. */
static int s_port_free(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(fd >= 0);
    struct sockaddr_in address = {.sin_family = AF_INET, .sin_port = htons((uint16_t) port),
                                  .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    int is_free = bind(fd, (struct sockaddr *) &address, sizeof address) == 0;
    close(fd);
    return is_free;
}

int harness_free_ports(int count)
{
    /* Below the range the kernel draws from for port 0 and outgoing
       connections (above it if there is no room below). */
    int low = 32768, high = 60999;
    FILE *range = fopen("/proc/sys/net/ipv4/ip_local_port_range", "r");
    if (range) {
        if (fscanf(range, "%d %d", &low, &high) != 2)
            low = 32768, high = 60999;
        fclose(range);
    }
    int from = 10000, to = low;
    if (to - from < 1000)
        from = high + 1, to = 65536;
    unsigned seed = (unsigned) getpid() ^ (unsigned) zclock_usecs();
    for (int attempt = 0; attempt < 1000; attempt++) {
        int base = from + (int) ((unsigned) rand_r(&seed) % (unsigned) (to - from - count));
        int i = 0;
        while (i < count && s_port_free(base + i))
            i++;
        if (i == count)
            return base;
    }
    fail_msg("no %d free TCP ports in a row on 127.0.0.1", count);
    return -1;
}

int harness_http(int port, const char *request, size_t size, char *body, size_t body_size)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct sockaddr_in address = {.sin_family = AF_INET, .sin_port = htons((uint16_t) port),
                                  .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(connect(fd, (struct sockaddr *) &address, sizeof address), 0);
    for (size_t sent = 0; sent < size;) {
        ssize_t n = send(fd, request + sent, size - sent, MSG_NOSIGNAL);
        if (n <= 0)
            break; /* closed early: what it answered is read below */
        sent += (size_t) n;
    }
    size_t capacity = body_size + 4096, got = 0;
    char *raw = malloc(capacity);
    assert_non_null(raw);
    int64_t deadline = zclock_mono() + HARNESS_DEADLINE_MS;
    while (got + 1 < capacity) {
        struct pollfd item = {fd, POLLIN, 0};
        int left = (int) (deadline - zclock_mono());
        if (left <= 0 || poll(&item, 1, left) != 1)
            fail_msg("no answer from port %d in time", port);
        ssize_t n = recv(fd, raw + got, capacity - 1 - got, 0);
        if (n <= 0)
            break;
        got += (size_t) n;
    }
    raw[got] = '\0';
    close(fd);
    int status = 0;
    if (sscanf(raw, "HTTP/1.%*d %d", &status) != 1)
        status = 0;
    const char *start = strstr(raw, "\r\n\r\n");
    snprintf(body, body_size, "%s", start ? start + 4 : "");
    free(raw);
    return status;
}
