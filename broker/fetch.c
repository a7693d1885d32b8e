#include "fetch.h"

#include <errno.h>
#include <poll.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

/*  A chunk's size line (extensions included), at most. */
#define CHUNK_LINE_MAX 256

static int64_t s_now_ms(void)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (int64_t) now.tv_sec * 1000 + now.tv_nsec / 1000000;
}

__attribute__((format(printf, 2, 3))) static void s_fail(fetch_t *self, const char *format, ...)
{
    va_list args;
    va_start(args, format);
    vsnprintf(self->error, sizeof self->error, format, args);
    va_end(args);
    self->status = 0;
    self->done = 1;
    if (self->fd >= 0)
        close(self->fd);
    self->fd = -1;
}

static void s_start(fetch_t *self)
{
    self->fd = socket(self->address.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (self->fd < 0) {
        s_fail(self, "cannot make a socket: %s", strerror(errno));
        return;
    }
    if (connect(self->fd, (const struct sockaddr *) &self->address, self->address_size)
        && errno != EINPROGRESS)
        s_fail(self, "cannot connect: %s", strerror(errno));
}

static void s_send(fetch_t *self)
{
    ssize_t sent = send(self->fd, self->request + self->sent, self->request_size - self->sent,
                        MSG_NOSIGNAL);
    if (sent < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
        s_fail(self, "cannot connect: %s", strerror(errno));
    else if (sent > 0)
        self->sent += (size_t) sent;
}

/*  The status line and headers (buf[0 .. head - 2], each line ending
    CRLF): the status, and how the body is framed. 0, or -1 failed. */
static int s_parse_head(fetch_t *self, size_t body_max)
{
    const char *line = self->buf, *end = self->buf + self->head - 2;
    if (self->head < 16 || memcmp(line, "HTTP/1.", 7) != 0 || (line[7] != '0' && line[7] != '1')
        || line[8] != ' ' || line[9] < '1' || line[9] > '5' || line[10] < '0' || line[10] > '9'
        || line[11] < '0' || line[11] > '9' || (line[12] != ' ' && line[12] != '\r')) {
        s_fail(self, "not an HTTP answer");
        return -1;
    }
    self->status = (line[9] - '0') * 100 + (line[10] - '0') * 10 + (line[11] - '0');
    int lengths = 0, chunked = 0;
    line = memchr(line, '\n', (size_t) (end - line)) + 1;
    while (line < end) {
        const char *eol = memchr(line, '\n', (size_t) (end - line));
        const char *colon = eol ? memchr(line, ':', (size_t) (eol - line)) : NULL;
        if (!eol || eol == line || eol[-1] != '\r' || !colon || colon == line) {
            s_fail(self, "a header out of form");
            return -1;
        }
        const char *value = colon + 1;
        while (*value == ' ' || *value == '\t')
            value++;
        size_t size = (size_t) (eol - 1 - value);
        while (size && (value[size - 1] == ' ' || value[size - 1] == '\t'))
            size--;
        size_t name = (size_t) (colon - line);
        if (name == 14 && strncasecmp(line, "Content-Length", 14) == 0) {
            unsigned long long length = 0;
            size_t i = 0;
            for (; i < size && i < 19 && value[i] >= '0' && value[i] <= '9'; i++)
                length = length * 10 + (unsigned long long) (value[i] - '0');
            if (i == 0 || i != size || lengths++) {
                s_fail(self, "a Content-Length out of form");
                return -1;
            }
            self->length = (long long) length;
        }
        else if (name == 17 && strncasecmp(line, "Transfer-Encoding", 17) == 0) {
            if (size != 7 || strncasecmp(value, "chunked", 7) != 0 || chunked++) {
                s_fail(self, "a transfer coding other than chunked");
                return -1;
            }
            self->length = -1;
        }
        line = eol + 1;
    }
    if (lengths + chunked != 1) {
        s_fail(self, lengths ? "both Content-Length and chunked" : "an answer without a length");
        return -1;
    }
    if (self->length > (long long) body_max) {
        s_fail(self, "an answer over %zu bytes", body_max);
        return -1;
    }
    self->at = self->head;
    return 0;
}

/*  Decodes the chunks read whole, in place: the body so far lies at
    buf[head .. head + out), what is not decoded yet follows it. 1 at the
    last chunk, 0 for more to read, -1 failed. */
static int s_chunks(fetch_t *self, size_t body_max)
{
    for (;;) {
        char *line = self->buf + self->at;
        size_t left = self->used - self->at;
        char *eol = memchr(line, '\n', left < CHUNK_LINE_MAX ? left : CHUNK_LINE_MAX);
        if (!eol) {
            if (left < CHUNK_LINE_MAX)
                break;
            s_fail(self, "a chunk's size line out of form");
            return -1;
        }
        size_t digits = 0;
        unsigned long long size = 0;
        while (digits < 15 && strchr("0123456789abcdefABCDEF", line[digits]) && line[digits]) {
            char c = line[digits++];
            size = size * 16 + (unsigned long long) (c <= '9'   ? c - '0'
                                                    : c <= 'F' ? c - 'A' + 10
                                                               : c - 'a' + 10);
        }
        if (!digits || eol[-1] != '\r' || (line + digits != eol - 1 && line[digits] != ';')) {
            s_fail(self, "a chunk's size line out of form");
            return -1;
        }
        if (size > body_max - self->out) {
            s_fail(self, "an answer over %zu bytes", body_max);
            return -1;
        }
        size_t data = (size_t) (eol + 1 - self->buf);
        if (self->used - data < size + 2)
            break;
        if (memcmp(self->buf + data + size, "\r\n", 2) != 0) {
            s_fail(self, "a chunk not ended by CRLF");
            return -1;
        }
        if (size == 0) { /* no trailers are taken: "0\r\n\r\n" ends it */
            if (data + 2 != self->used) {
                s_fail(self, "bytes after the last chunk");
                return -1;
            }
            return 1;
        }
        memmove(self->buf + self->head + self->out, self->buf + data, (size_t) size);
        self->out += (size_t) size;
        self->at = data + (size_t) size + 2;
    }
    /* What is not decoded moves down to the body's end: the buffer holds
       the body and one chunk's line at most beyond it. */
    size_t rest = self->used - self->at;
    memmove(self->buf + self->head + self->out, self->buf + self->at, rest);
    self->at = self->head + self->out;
    self->used = self->at + rest;
    return 0;
}

/*  What was read so far: 1 the answer is whole, 0 more to read, -1 failed. */
static int s_progress(fetch_t *self, size_t body_max, size_t scanned)
{
    if (!self->head) {
        size_t from = scanned > 3 ? scanned - 3 : 0;
        for (size_t i = from; i + 4 <= self->used; i++)
            if (memcmp(self->buf + i, "\r\n\r\n", 4) == 0) {
                self->head = i + 4;
                break;
            }
        if (!self->head) {
            if (self->used < FETCH_HEAD_MAX)
                return 0;
            s_fail(self, "headers over %d bytes", FETCH_HEAD_MAX);
            return -1;
        }
        if (s_parse_head(self, body_max))
            return -1;
    }
    if (self->length >= 0) {
        size_t body = self->used - self->head;
        if (body > (size_t) self->length) {
            s_fail(self, "more bytes than its Content-Length");
            return -1;
        }
        self->out = body;
        return body == (size_t) self->length;
    }
    return s_chunks(self, body_max);
}

static void s_read(fetch_t *self, size_t body_max)
{
    size_t limit = FETCH_HEAD_MAX + body_max + CHUNK_LINE_MAX + 8;
    if (self->used + 1 >= self->capacity) {
        if (self->capacity >= limit) {
            s_fail(self, "an answer over %zu bytes", body_max);
            return;
        }
        size_t capacity = self->capacity ? self->capacity * 2 : 16384;
        if (capacity > limit)
            capacity = limit;
        char *buf = realloc(self->buf, capacity);
        if (!buf) {
            s_fail(self, "out of memory");
            return;
        }
        self->buf = buf;
        self->capacity = capacity;
    }
    ssize_t got = recv(self->fd, self->buf + self->used, self->capacity - self->used - 1, 0);
    if (got < 0) {
        if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
            s_fail(self, "%s", strerror(errno));
        return;
    }
    if (got == 0) {
        s_fail(self, self->used ? "it closed before the whole answer" : "it closed with no answer");
        return;
    }
    size_t scanned = self->used;
    self->used += (size_t) got;
    int rc = s_progress(self, body_max, scanned);
    if (rc != 1)
        return;
    /* The body to the front of the buffer, NUL-terminated (the buffer
       always has a byte to spare: see above). */
    int status = self->status;
    memmove(self->buf, self->buf + self->head, self->out);
    self->buf[self->out] = '\0';
    self->body = self->buf;
    self->size = self->out;
    self->buf = NULL;
    close(self->fd);
    self->fd = -1;
    self->done = 1;
    self->status = status;
}

void fetch_all(fetch_t *fetches, size_t count, int timeout_ms, size_t body_max)
{
    int64_t deadline = s_now_ms() + timeout_ms;
    struct pollfd *items = calloc(count ? count : 1, sizeof *items);
    size_t *which = calloc(count ? count : 1, sizeof *which);
    for (size_t i = 0; i < count; i++) {
        fetch_t *fetch = &fetches[i];
        fetch->fd = -1;
        fetch->status = 0;
        fetch->body = fetch->buf = NULL;
        fetch->size = fetch->sent = fetch->used = fetch->capacity = fetch->head = 0;
        fetch->at = fetch->out = 0;
        fetch->length = 0;
        fetch->done = 0;
        fetch->error[0] = '\0';
        if (!items || !which)
            s_fail(fetch, "out of memory");
        else if (fetch->unreachable)
            s_fail(fetch, "%s", fetch->unreachable);
        else
            s_start(fetch);
    }
    for (;;) {
        size_t polled = 0;
        for (size_t i = 0; i < count; i++)
            if (!fetches[i].done) {
                short events = fetches[i].sent < fetches[i].request_size ? POLLOUT : POLLIN;
                items[polled] = (struct pollfd){fetches[i].fd, events, 0};
                which[polled++] = i;
            }
        int64_t left = deadline - s_now_ms();
        if (!polled)
            break;
        if (left <= 0) {
            for (size_t i = 0; i < count; i++)
                if (!fetches[i].done)
                    s_fail(&fetches[i], "no answer within %d ms", timeout_ms);
            break;
        }
        int ready = poll(items, (nfds_t) polled, (int) left);
        if (ready < 0 && errno != EINTR) {
            for (size_t i = 0; i < count; i++)
                if (!fetches[i].done)
                    s_fail(&fetches[i], "poll: %s", strerror(errno));
            break;
        }
        for (size_t p = 0; ready > 0 && p < polled; p++) {
            fetch_t *fetch = &fetches[which[p]];
            if (!items[p].revents)
                continue;
            if (fetch->sent < fetch->request_size)
                s_send(fetch); /* a failed connect shows here */
            else
                s_read(fetch, body_max);
        }
    }
    free(items);
    free(which);
    for (size_t i = 0; i < count; i++) {
        free(fetches[i].buf);
        fetches[i].buf = NULL;
    }
}

void fetch_clear(fetch_t *fetch)
{
    free(fetch->body);
    fetch->body = NULL;
    fetch->size = 0;
}
