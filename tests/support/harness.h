/*  End-to-end test support: start the real programs, wait for their lines
    with deadlines, talk raw protocol to a broker. */
#ifndef TESTS_HARNESS_H
#define TESTS_HARNESS_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <czmq.h>

#include "asyncq/consumer.h"
#include "asyncq/control.h"
#include "asyncq/internal.h" /* the codec, the wire and the session's insides */
#include "asyncq/process.h"
#include "asyncq/producer.h"
#include "asyncq/wire.h"

#define HARNESS_DEADLINE_MS 20000

/*  Runs a group of tests; ASYNCQ_TEST_FILTER=pattern runs only the matching
    ones (while working on one). */
void harness_filter(void);
#define harness_run_group(tests) (harness_filter(), cmocka_run_group_tests(tests, NULL, NULL))

typedef struct {
    aq_process_t broker;
    char address[256];
    pid_t child; /* a forked helper, killed by harness_stop if still there */
    char log_path[64]; /* the broker's stderr, when started with harness_start_broker_logged */
} harness_t;

/*  Starts asyncq-broker on a free loopback port with extra flags (a
    NULL-ended array, or NULL for none). */
void harness_start_broker(harness_t *self, char *const *flags);

/*  The same, with the broker's log (stderr) in a temporary file at
    self->log_path, removed by harness_stop. */
void harness_start_broker_logged(harness_t *self, char *const *flags);

/*  The whole log so far (malloc'd, NUL-terminated). */
char *harness_log(const harness_t *self);
/*  A whole file (malloc'd, NUL-terminated); fails the test if unreadable. */
char *harness_read_file(const char *path);
/*  Removes a directory and everything in it (a test's temporary files). */
void harness_remove_tree(const char *dir);
void harness_stop(harness_t *self);

/*  Kills the broker (SIGKILL) and starts a new one on the same address. */
void harness_restart_broker(harness_t *self, char *const *flags);

/*  cmocka fixtures: a broker with default flags, or with `flags` (NULL-ended),
    stopped (with any forked helper) by harness_teardown. */
int harness_setup(void **state);
int harness_setup_flags(void **state, char *const *flags);
int harness_teardown(void **state);

/*  A test with a directory of its own (root, and root/data for a broker's
    --data-dir), whose broker it starts itself in h; after it, the broker
    is stopped and the directory removed. */
typedef struct {
    harness_t h;
    char root[64];
    char data[96];
} harness_dir_t;
int harness_dir_setup(void **state);
int harness_dir_teardown(void **state);
#define harness_dir_test(test) \
    cmocka_unit_test_setup_teardown(test, harness_dir_setup, harness_dir_teardown)

/*  Runs a program to completion, its stdout into out (may be NULL). Returns
    its exit code. argv[0] is a program name from build/bin. */
int harness_run(char **argv, char *out, size_t size);

/*  harness_run with its stderr captured too, into err (NUL-terminated, cut
    to err_size). */
int harness_run_err(char **argv, char *out, size_t size, char *err, size_t err_size);

/*  Starts a program in the background with stdout captured. */
void harness_spawn(aq_process_t *process, char **argv);

/*  A session for control requests (asserts it connects). */
aq_session_t *harness_session(const harness_t *self);

/*  A number from the queue's stats line ("queued", "acked"...); 0 if the
    queue does not exist. */
uint64_t harness_stat(const harness_t *self, const char *queue, const char *key);

/*  A number from the broker's INFO line ("connections", "sessions"...). */
uint64_t harness_info(const harness_t *self, const char *key);

/*  Waits until harness_info(key) == value. */
void harness_wait_info(const harness_t *self, const char *key, uint64_t value);

/*  Waits until harness_stat(queue, key) == value; fails the test after the deadline. */
void harness_wait_stat(const harness_t *self, const char *queue, const char *key,
                       uint64_t value);

void harness_wait_stat_at_least(const harness_t *self, const char *queue, const char *key,
                                uint64_t value);

/*  Waits for a process to exit (fails the test after the deadline); returns
    its exit code. */
int harness_wait_exit(aq_process_t *process);

/*  A raw DEALER (or PUSH for puts) connected to the broker. */
zsock_t *harness_raw(const harness_t *self, int type);

/*  Sends frames (NULL-ended strings) on a raw socket. */
void harness_send_frames(zsock_t *socket, ...);

/*  Receives one message from a raw DEALER (HEARTBEATs skipped); returns its
    command and fills msg (from `inbox`). Fails the test if nothing comes
    within the deadline, or if it does not decode. */
aq_cmd_t harness_recv(zsock_t *socket, aq_inbox_t *inbox, aq_msg_t *msg);

/*  Encodes and sends a valid message on a raw socket. */
void harness_send_msg(zsock_t *socket, const aq_msg_t *msg);

/*  HELLO on a raw DEALER (seq: a producer's first unconfirmed put, or 0);
    waits for WELCOME. */
void harness_hello(zsock_t *dealer, aq_inbox_t *inbox, const char *client_id, uint64_t seq);

/*  Puts `count` items "item" on `queue` as producer "p", and waits for the
    broker's confirm. */
void harness_put_items(const harness_t *h, const char *queue, int count);

/*  Puts one item on `queue`, gets it back, acks it, joins: the broker still
    serves. Every bad-input test ends with it. */
void harness_assert_serving(const harness_t *h, const char *queue);

/*  The first of `count` TCP ports in a row that 127.0.0.1 has free now,
    drawn at random outside the range the kernel gives out for port 0 and
    outgoing connections: only a program that picks its ports the same
    way can take them before the caller binds them. For programs that
    need fixed ports (asyncq-broker --shards --metrics). */
int harness_free_ports(int count);

/*  One HTTP request (as bytes) on a new connection to 127.0.0.1:port,
    closed after: the status code (0 if closed without an answer), the
    body (NUL-terminated, cut to body_size) in `body`. */
int harness_http(int port, const char *request, size_t size, char *body, size_t body_size);

/*  Resident memory of a process, in KiB. */
uint64_t harness_rss_kib(pid_t pid);

/*  The process of shard K (`shard`) of a service started by a test: its
    command line names --shard K and `root`, the test's directory. Its
    pid, or 0 if none runs. */
pid_t harness_shard_pid(const char *root, int shard);

/*  SIGKILLs every such process of any shard (those a supervisor that was
    killed left). */
void harness_kill_shards(const char *root);

#endif
