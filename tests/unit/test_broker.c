/*  The broker's signal requests: a state dump (SIGUSR1) or a re-read of
    the clients directory (SIGHUP) is done once per request, and one not
    yet done when a replica starts again (execv) is carried to the next
    process image. */
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
#include <cmocka.h>

#include "broker.h"

static void test_each_request_is_taken_once(void **state)
{
    (void) state;
    assert_false(broker_take_asked(SIGUSR1));
    broker_ask(SIGUSR1);
    broker_ask(SIGUSR1); /* two before the loop looks: one dump */
    broker_ask(SIGHUP);
    assert_true(broker_take_asked(SIGUSR1));
    assert_false(broker_take_asked(SIGUSR1));
    assert_true(broker_take_asked(SIGHUP));
    assert_false(broker_take_asked(SIGHUP));
}

/*  A child asks a dump, carries it and executes grep, which reads its
    own pending signals: SIGUSR1 (bit 10) is there, SIGHUP is not. */
static void test_a_request_not_done_is_carried_across_execv(void **state)
{
    (void) state;
    int out[2];
    assert_int_equal(pipe(out), 0);
    pid_t child = fork();
    assert_true(child >= 0);
    if (child == 0) {
        sigset_t caught;
        broker_caught_signals(&caught);
        sigprocmask(SIG_BLOCK, &caught, NULL);
        broker_ask(SIGHUP);
        assert_true(broker_take_asked(SIGHUP)); /* done: not carried */
        broker_ask(SIGUSR1);
        broker_carry_asked();
        dup2(out[1], STDOUT_FILENO);
        execlp("grep", "grep", "-E", "^(SigPnd|ShdPnd):", "/proc/self/status", (char *) NULL);
        _exit(127);
    }
    close(out[1]);
    char text[256] = "";
    ssize_t size = read(out[0], text, sizeof text - 1);
    close(out[0]);
    int status = 0;
    assert_int_equal(waitpid(child, &status, 0), child);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    assert_true(size > 0);
    unsigned long long pending = 0, shared = 0;
    assert_int_equal(sscanf(text, "SigPnd: %llx ShdPnd: %llx", &pending, &shared), 2);
    unsigned long long both = pending | shared;
    assert_true(both & (1ULL << (SIGUSR1 - 1)));
    assert_false(both & (1ULL << (SIGHUP - 1)));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_each_request_is_taken_once),
        cmocka_unit_test(test_a_request_not_done_is_carried_across_execv),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
