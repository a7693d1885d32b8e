#define _GNU_SOURCE
#include "asyncq/process.h"

#include <czmq.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

int aq_process_spawn(aq_process_t *self, char *const argv[], int capture, int stdin_mode)
{
    return aq_process_spawn_logged(self, argv, capture, stdin_mode, NULL);
}

int aq_process_spawn_logged(aq_process_t *self, char *const argv[], int capture, int stdin_mode,
                            const char *stderr_path)
{
    memset(self, 0, sizeof *self);
    self->out_fd = -1;
    self->in_fd = -1;
    int pipe_fds[2] = {-1, -1}, in_fds[2] = {-1, -1};
    if (capture && pipe2(pipe_fds, O_CLOEXEC) != 0)
        return -1;
    if (stdin_mode == AQ_STDIN_PIPE && pipe2(in_fds, O_CLOEXEC) != 0) {
        if (capture) {
            close(pipe_fds[0]);
            close(pipe_fds[1]);
        }
        return -1;
    }
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    if (capture)
        posix_spawn_file_actions_adddup2(&actions, pipe_fds[1], STDOUT_FILENO);
    if (stdin_mode == AQ_STDIN_NULL)
        posix_spawn_file_actions_addopen(&actions, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
    if (stdin_mode == AQ_STDIN_PIPE)
        posix_spawn_file_actions_adddup2(&actions, in_fds[0], STDIN_FILENO);
    if (stderr_path)
        posix_spawn_file_actions_addopen(&actions, STDERR_FILENO, stderr_path,
                                         O_WRONLY | O_CREAT | O_APPEND, 0600);
    /* The child starts with default signal handling, whatever ours is. */
    posix_spawnattr_t attr;
    posix_spawnattr_init(&attr);
    sigset_t defaults, none;
    sigemptyset(&defaults);
    sigaddset(&defaults, SIGINT);
    sigaddset(&defaults, SIGTERM);
    sigaddset(&defaults, SIGPIPE);
    sigemptyset(&none);
    posix_spawnattr_setsigdefault(&attr, &defaults);
    posix_spawnattr_setsigmask(&attr, &none);
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK);
    int rc = posix_spawn(&self->pid, argv[0], &actions, &attr, argv, environ);
    posix_spawn_file_actions_destroy(&actions);
    posix_spawnattr_destroy(&attr);
    if (capture)
        close(pipe_fds[1]);
    if (stdin_mode == AQ_STDIN_PIPE)
        close(in_fds[0]);
    if (rc != 0) {
        if (capture)
            close(pipe_fds[0]);
        if (stdin_mode == AQ_STDIN_PIPE)
            close(in_fds[1]);
        self->pid = 0;
        errno = rc;
        return -1;
    }
    self->out_fd = capture ? pipe_fds[0] : -1;
    if (stdin_mode == AQ_STDIN_PIPE) {
        self->in_fd = in_fds[1];
        fcntl(self->in_fd, F_SETFL, fcntl(self->in_fd, F_GETFL) | O_NONBLOCK);
    }
    return 0;
}

static int s_take_line(aq_process_t *self, char *buf, size_t size)
{
    char *newline = memchr(self->buf, '\n', self->buffered);
    if (!newline) {
        if (self->buffered < sizeof self->buf)
            return 0;
        newline = self->buf + self->buffered - 1; /* an overlong line: cut it */
    }
    size_t length = (size_t) (newline - self->buf);
    size_t copy = length < size - 1 ? length : size - 1;
    memcpy(buf, self->buf, copy);
    buf[copy] = '\0';
    self->buffered -= length + 1;
    memmove(self->buf, newline + 1, self->buffered);
    return 1;
}

int aq_process_read_line(aq_process_t *self, char *buf, size_t size, int timeout_ms)
{
    int64_t deadline = zclock_mono() + timeout_ms;
    for (;;) {
        if (s_take_line(self, buf, size))
            return 1;
        if (self->out_fd < 0)
            return -1;
        int64_t left = deadline - zclock_mono();
        if (left < 0)
            return 0;
        struct pollfd pfd = {self->out_fd, POLLIN, 0};
        int ready = poll(&pfd, 1, (int) left);
        if (ready < 0 && errno != EINTR)
            return -1;
        if (ready <= 0)
            continue;
        ssize_t got = read(self->out_fd, self->buf + self->buffered,
                           sizeof self->buf - self->buffered);
        if (got <= 0) {
            if (got < 0 && errno == EINTR)
                continue;
            close(self->out_fd);
            self->out_fd = -1;
            if (self->buffered && self->buffered < sizeof self->buf)
                self->buf[self->buffered++] = '\n'; /* a last line without newline */
            continue;
        }
        self->buffered += (size_t) got;
    }
}

int aq_process_expect(aq_process_t *self, const char *prefix, char *buf, size_t size,
                      int timeout_ms)
{
    int64_t deadline = zclock_mono() + timeout_ms;
    char line[1024];
    for (;;) {
        int64_t left = deadline - zclock_mono();
        if (left < 0 || aq_process_read_line(self, line, sizeof line, (int) left) != 1)
            return 0;
        if (strncmp(line, prefix, strlen(prefix)) == 0) {
            snprintf(buf, size, "%s", line + strlen(prefix));
            return 1;
        }
    }
}

int aq_process_wait(aq_process_t *self, int timeout_ms)
{
    if (self->pid <= 0)
        return 1;
    int64_t deadline = zclock_mono() + timeout_ms;
    for (;;) {
        int status;
        pid_t done = waitpid(self->pid, &status, timeout_ms < 0 ? 0 : WNOHANG);
        if (done == self->pid) {
            self->exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
            self->pid = 0;
            if (self->out_fd >= 0) {
                close(self->out_fd);
                self->out_fd = -1;
            }
            if (self->in_fd >= 0) {
                close(self->in_fd);
                self->in_fd = -1;
            }
            return 1;
        }
        if (done < 0 && errno != EINTR) {
            self->pid = 0;
            self->exit_code = -1;
            return 1;
        }
        if (timeout_ms >= 0 && zclock_mono() >= deadline)
            return 0;
        if (timeout_ms >= 0)
            zclock_sleep(5); /* waitpid has no time-out; poll its status */
    }
}

void aq_process_stop(aq_process_t *self, int sig, int timeout_ms)
{
    if (self->pid <= 0)
        return;
    kill(self->pid, sig);
    if (!aq_process_wait(self, timeout_ms)) {
        kill(self->pid, SIGKILL);
        aq_process_wait(self, -1);
    }
}

int aq_program_path(const char *name, char *buf, size_t size)
{
    const char *dir = getenv("ASYNCQ_BIN_DIR");
    char self_path[4096];
    if (!dir || !*dir) {
        ssize_t length = readlink("/proc/self/exe", self_path, sizeof self_path - 1);
        if (length <= 0)
            return -1;
        self_path[length] = '\0';
        dir = dirname(self_path);
    }
    snprintf(buf, size, "%s/%s", dir, name);
    return access(buf, X_OK) == 0 ? 0 : -1;
}
