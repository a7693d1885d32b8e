#include "journal.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <isa-l/crc.h>

#include "asyncq/codec.h"

#define SEGMENT_FORMAT "%016llx.log"
#define SEGMENT_NAME_SIZE 20
/*  A record's length field never says more than this (an item of the
    largest max-item, 2 GiB, plus its fields): anything larger is damage. */
#define RECORD_MAX ((uint64_t) UINT32_MAX)
#define RETRY_MS 1000
/*  The records a broker appends go in frames (journal.h): one is sealed
    when the buffer is written, or once it holds this much. */
#define FRAME_SEAL (1024 * 1024)
#define FRAME_RECORD_HEADER 5 /* type, length */
/*  A snapshot is written in pieces of this size: each a millisecond or so
    of checksums and one write(). */
#define COMPACT_CHUNK (256 * 1024)

/* ---------------------------------------------------------------- files */

static int s_open(void *ctx, const char *path, int flags, mode_t mode)
{
    (void) ctx;
    return open(path, flags | O_CLOEXEC, mode);
}

static ssize_t s_write(void *ctx, int fd, const void *data, size_t size)
{
    (void) ctx;
    return write(fd, data, size);
}

static ssize_t s_read(void *ctx, int fd, void *data, size_t size)
{
    (void) ctx;
    return read(fd, data, size);
}

static off_t s_size(void *ctx, int fd)
{
    (void) ctx;
    struct stat st;
    return fstat(fd, &st) == 0 ? st.st_size : -1;
}

static int s_fdatasync(void *ctx, int fd)
{
    (void) ctx;
    return fdatasync(fd);
}

static int s_truncate(void *ctx, int fd, off_t size)
{
    (void) ctx;
    return ftruncate(fd, size);
}

static int s_close(void *ctx, int fd)
{
    (void) ctx;
    return close(fd);
}

static int s_rename(void *ctx, const char *from, const char *to)
{
    (void) ctx;
    return rename(from, to);
}

static int s_unlink(void *ctx, const char *path)
{
    (void) ctx;
    return unlink(path);
}

/*  A rename or an unlink is durable once the directory is synced. */
static int s_sync_dir(void *ctx, const char *dir)
{
    (void) ctx;
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    int rc = fsync(fd);
    close(fd);
    return rc;
}

static int s_list(void *ctx, const char *dir, char ***names, size_t *count)
{
    (void) ctx;
    DIR *handle = opendir(dir);
    if (!handle)
        return -1;
    size_t capacity = 16;
    *count = 0;
    *names = malloc(capacity * sizeof **names);
    struct dirent *entry;
    while (*names && (entry = readdir(handle))) {
        if (entry->d_name[0] == '.')
            continue;
        if (*count == capacity) {
            char **grown = realloc(*names, (capacity *= 2) * sizeof **names);
            if (!grown)
                break;
            *names = grown;
        }
        (*names)[(*count)++] = strdup(entry->d_name);
    }
    closedir(handle);
    return *names ? 0 : -1;
}

const journal_io_t journal_posix_io = {s_open, s_write, s_read, s_size, s_fdatasync, s_truncate,
                                       s_close, s_rename, s_unlink, s_sync_dir, s_list, NULL};

uint32_t journal_crc(const uint8_t *data, size_t size)
{
    /* CRC-32 as zlib and gzip compute it (the journal's format since its
       first version), with ISA-L's carry-less multiply: zlib's crc32 was
       36 % of a durable broker's instructions. */
    return crc32_gzip_refl(0, data, size);
}

/* ------------------------------------------------------ segment headers */

/*  The first record of every segment (type JOURNAL_SEGMENT, never
    replayed): what a start needs to find out that a segment is missing.
      version u8, flags u8, number u32 (this segment's), base u32 (the
      oldest segment the log needs: its last snapshot, or its first
      segment), lost_from u32 (LOST: the first segment this one stands
      for), prev_records u64, prev_bytes u64 (what segment number-1 held
      when this one began; UINT64_MAX: unknown). */
#define HEADER_VERSION 1
#define HEADER_BODY 30
#define HEADER_SIZE (JOURNAL_HEADER + HEADER_BODY)
#define HEADER_SNAPSHOT 1 /* a snapshot: its base is itself */
#define HEADER_LOST 2     /* written by repair where segments were missing */
#define UNKNOWN UINT64_MAX

typedef struct {
    int valid;
    uint8_t flags;
    uint32_t number, base, lost_from;
    uint64_t prev_records, prev_bytes;
} header_t;

/*  Writes the body of a header record (the caller frames and seals it). */
static void s_header_body(uint8_t *body, const header_t *header)
{
    body[0] = HEADER_VERSION;
    body[1] = header->flags;
    aq_put_u32(body + 2, header->number);
    aq_put_u32(body + 6, header->base);
    aq_put_u32(body + 10, header->lost_from);
    aq_put_u64(body + 14, header->prev_records);
    aq_put_u64(body + 22, header->prev_bytes);
}

/*  A whole header record, sealed, in out[HEADER_SIZE]. */
static void s_header_record(uint8_t *out, const header_t *header)
{
    aq_put_u32(out + 4, HEADER_BODY + 1);
    out[8] = JOURNAL_SEGMENT;
    s_header_body(out + JOURNAL_HEADER, header);
    aq_put_u32(out, journal_crc(out + 4, 4 + HEADER_BODY + 1));
}

/* ------------------------------------------------------------ the state */

typedef struct {
    uint32_t number;
    uint64_t size;  /* bytes written */
} segment_t;

static size_t s_record_at(const uint8_t *data, size_t size, size_t at);
static size_t s_frame_records(const uint8_t *body, size_t size);

/*  The sync thread: syncs what it is asked to, oldest heads first (they
    are closed after), and says so through an eventfd. */
typedef struct {
    pthread_t thread;
    pthread_mutex_t lock;
    pthread_cond_t wake;
    int started;
    int stop;
    int fd;              /* the head */
    int *retired;        /* closed heads: sync, then close */
    size_t retired_count;
    size_t retired_capacity;
    uint64_t requested;  /* position to reach */
    uint64_t done;       /* position synced */
    int error;           /* errno of a failed fdatasync: final */
    int event;           /* eventfd */
    histogram_t latency; /* each sync of a round, under the lock */
} syncer_t;

static uint64_t s_mono_us(void)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (uint64_t) now.tv_sec * 1000000 + (uint64_t) now.tv_nsec / 1000;
}

struct journal {
    journal_config_t config;
    const journal_io_t *io;
    char *dir;
    int lock_fd;
    segment_t *segments;       /* oldest first; the last is the head */
    size_t segment_count;
    size_t segment_capacity;
    int head_fd;
    uint8_t *buffer;           /* appended, not written */
    size_t buffered;
    size_t capacity;
    size_t record_at;          /* where the open record starts, or SIZE_MAX */
    size_t frame_at;           /* where the open frame starts, or SIZE_MAX */
    uint64_t written;          /* bytes written since open */
    uint64_t synced;
    int64_t last_sync_ms;
    int64_t last_failure_ms;
    int error;                 /* errno of the write that holds writes back */
    uint32_t base;             /* the oldest segment the log needs */
    uint64_t head_records;     /* records appended to the head */
    uint64_t lost_segments;    /* segments repair found missing, still in the log */
    syncer_t syncer;
    /* A snapshot being written. */
    uint32_t compact_number;   /* the segment it replaces */
    int compact_syncing;       /* its fdatasync runs on compact_thread */
    int compact_synced;        /* under syncer.lock: the thread is done */
    int compact_sync_error;
    pthread_t compact_thread;
    uint32_t *compact_older;   /* segments it replaces, deleted once it is in place */
    size_t compact_older_count;
    int compact_fd;
    int compact_error;
    uint64_t compact_size;
    uint8_t *compact_buffer;
    size_t compact_buffered;
    size_t compact_capacity;
};

static void s_path(const journal_t *self, uint32_t number, const char *suffix, char *buf,
                   size_t size)
{
    snprintf(buf, size, "%s/" SEGMENT_FORMAT "%s", self->dir, (unsigned long long) number, suffix);
}

static segment_t *s_head(const journal_t *self)
{
    return &self->segments[self->segment_count - 1];
}

static int s_add_segment(journal_t *self, uint32_t number, uint64_t size)
{
    if (self->segment_count == self->segment_capacity) {
        size_t capacity = self->segment_capacity ? self->segment_capacity * 2 : 16;
        segment_t *grown = realloc(self->segments, capacity * sizeof *grown);
        if (!grown)
            return -1;
        self->segments = grown;
        self->segment_capacity = capacity;
    }
    self->segments[self->segment_count++] = (segment_t){number, size};
    return 0;
}

static int s_reserve(uint8_t **buffer, size_t *capacity, size_t used, size_t more)
{
    if (used + more <= *capacity)
        return 0;
    size_t grown = *capacity ? *capacity : 64 * 1024;
    while (grown < used + more)
        grown *= 2;
    uint8_t *bigger = realloc(*buffer, grown);
    if (!bigger)
        return -1;
    *buffer = bigger;
    *capacity = grown;
    return 0;
}

static int s_write_all(journal_t *self, int fd, const uint8_t *data, size_t size, size_t *done)
{
    *done = 0;
    while (*done < size) {
        ssize_t wrote = self->io->write(self->io->ctx, fd, data + *done, size - *done);
        if (wrote < 0 && errno == EINTR)
            continue;
        if (wrote <= 0)
            return wrote == 0 ? ENOSPC : errno;
        *done += (size_t) wrote;
    }
    return 0;
}

/* --------------------------------------------------------- sync thread */

static void *s_sync_main(void *arg)
{
    journal_t *self = arg;
    syncer_t *syncer = &self->syncer;
    pthread_mutex_lock(&syncer->lock);
    for (;;) {
        while (!syncer->stop && syncer->requested <= syncer->done && !syncer->retired_count)
            pthread_cond_wait(&syncer->wake, &syncer->lock);
        if (syncer->stop && syncer->requested <= syncer->done && !syncer->retired_count)
            break;
        uint64_t target = syncer->requested;
        int fd = syncer->fd;
        size_t retired_count = syncer->retired_count;
        int retired[64];
        if (retired_count > 64)
            retired_count = 64;
        if (retired_count) {
            memcpy(retired, syncer->retired, retired_count * sizeof *retired);
            memmove(syncer->retired, syncer->retired + retired_count,
                    (syncer->retired_count - retired_count) * sizeof *retired);
            syncer->retired_count -= retired_count;
        }
        pthread_mutex_unlock(&syncer->lock);
        uint64_t started_us = s_mono_us();
        int error = 0;
        for (size_t i = 0; i < retired_count; i++) {
            if (self->io->fdatasync(self->io->ctx, retired[i]) != 0 && !error)
                error = errno;
            self->io->close(self->io->ctx, retired[i]);
        }
        if (!error && self->io->fdatasync(self->io->ctx, fd) != 0)
            error = errno;
        uint64_t took_us = s_mono_us() - started_us;
        pthread_mutex_lock(&syncer->lock);
        histogram_observe(&syncer->latency, took_us);
        if (error && !syncer->error)
            syncer->error = error;
        if (!syncer->error && target > syncer->done)
            syncer->done = target;
        uint64_t one = 1;
        if (write(syncer->event, &one, sizeof one) < 0) {
            /* the main loop also looks at done on every pass */
        }
    }
    pthread_mutex_unlock(&syncer->lock);
    return NULL;
}

static int s_syncer_start(journal_t *self)
{
    syncer_t *syncer = &self->syncer;
    syncer->event = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (syncer->event < 0)
        return -1;
    pthread_mutex_init(&syncer->lock, NULL);
    pthread_cond_init(&syncer->wake, NULL);
    syncer->fd = self->head_fd;
    if (pthread_create(&syncer->thread, NULL, s_sync_main, self) != 0)
        return -1;
    syncer->started = 1;
    return 0;
}

static void s_syncer_stop(journal_t *self)
{
    syncer_t *syncer = &self->syncer;
    if (!syncer->started)
        return;
    pthread_mutex_lock(&syncer->lock);
    syncer->stop = 1;
    pthread_cond_signal(&syncer->wake);
    pthread_mutex_unlock(&syncer->lock);
    pthread_join(syncer->thread, NULL);
    syncer->started = 0;
    pthread_mutex_destroy(&syncer->lock);
    pthread_cond_destroy(&syncer->wake);
}

static int s_threaded(const journal_t *self)
{
    return self->config.sync_thread && self->config.fsync != JOURNAL_FSYNC_NEVER;
}

/*  Asks for everything written so far to be synced. */
static void s_request_sync(journal_t *self, int64_t now_ms)
{
    self->last_sync_ms = now_ms;
    if (!s_threaded(self)) {
        uint64_t started_us = s_mono_us();
        int error = self->io->fdatasync(self->io->ctx, self->head_fd) != 0 ? errno : 0;
        histogram_observe(&self->syncer.latency, s_mono_us() - started_us);
        if (error) {
            if (!self->syncer.error)
                self->syncer.error = error;
            return;
        }
        self->synced = self->written;
        return;
    }
    syncer_t *syncer = &self->syncer;
    pthread_mutex_lock(&syncer->lock);
    if (self->written > syncer->requested) {
        syncer->requested = self->written;
        pthread_cond_signal(&syncer->wake);
    }
    pthread_mutex_unlock(&syncer->lock);
}

/*  Hands a closed head to whoever syncs: synced and closed in order. */
static void s_retire(journal_t *self, int fd)
{
    if (!s_threaded(self)) {
        if (self->config.fsync != JOURNAL_FSYNC_NEVER
            && self->io->fdatasync(self->io->ctx, fd) != 0 && !self->syncer.error)
            self->syncer.error = errno;
        self->io->close(self->io->ctx, fd);
        return;
    }
    syncer_t *syncer = &self->syncer;
    pthread_mutex_lock(&syncer->lock);
    if (syncer->retired_count == syncer->retired_capacity) {
        size_t capacity = syncer->retired_capacity ? syncer->retired_capacity * 2 : 8;
        int *grown = realloc(syncer->retired, capacity * sizeof *grown);
        if (grown) {
            syncer->retired = grown;
            syncer->retired_capacity = capacity;
        }
    }
    if (syncer->retired_count < syncer->retired_capacity)
        syncer->retired[syncer->retired_count++] = fd;
    else
        self->io->close(self->io->ctx, fd); /* out of memory: unsynced, but not lost to a crash */
    /* In the same hold of the lock: the thread must never see the old head
       retired (and closed by it) while still taking it for the head. */
    syncer->fd = self->head_fd;
    pthread_cond_signal(&syncer->wake);
    pthread_mutex_unlock(&syncer->lock);
}

void journal_sync_latency(journal_t *self, histogram_t *latency)
{
    if (s_threaded(self))
        pthread_mutex_lock(&self->syncer.lock);
    *latency = self->syncer.latency;
    if (s_threaded(self))
        pthread_mutex_unlock(&self->syncer.lock);
}

int journal_sync_fd(const journal_t *self)
{
    return s_threaded(self) ? self->syncer.event : -1;
}

void journal_on_synced(journal_t *self)
{
    if (!s_threaded(self))
        return;
    uint64_t count;
    if (read(self->syncer.event, &count, sizeof count) < 0) {
        /* nothing new: done is read below anyway */
    }
    pthread_mutex_lock(&self->syncer.lock);
    self->synced = self->syncer.done;
    pthread_mutex_unlock(&self->syncer.lock);
}

/* ------------------------------------------------------------ records */

/*  The open frame is sealed: its length and CRC written. Before the buffer
    is written, with no record open. */
static void s_seal(journal_t *self)
{
    if (self->frame_at == SIZE_MAX)
        return;
    uint8_t *frame = self->buffer + self->frame_at;
    size_t length = self->buffered - self->frame_at - 8;
    aq_put_u32(frame + 4, (uint32_t) length);
    aq_put_u32(frame, journal_crc(frame + 4, 4 + length));
    self->frame_at = SIZE_MAX;
}

uint8_t *journal_begin(journal_t *self, uint8_t type, size_t size)
{
    if (self->frame_at != SIZE_MAX && self->buffered - self->frame_at >= FRAME_SEAL)
        s_seal(self);
    size_t frame = self->frame_at == SIZE_MAX ? JOURNAL_HEADER : 0;
    if (size > RECORD_MAX - JOURNAL_HEADER - FRAME_RECORD_HEADER
        || s_reserve(&self->buffer, &self->capacity, self->buffered,
                     frame + FRAME_RECORD_HEADER + size))
        return NULL;
    if (frame) {
        self->frame_at = self->buffered;
        self->buffer[self->buffered + 8] = JOURNAL_FRAME;
        self->buffered += JOURNAL_HEADER;
    }
    self->record_at = self->buffered;
    uint8_t *record = self->buffer + self->buffered;
    record[0] = type;
    aq_put_u32(record + 1, (uint32_t) size);
    self->buffered += FRAME_RECORD_HEADER + size;
    return record + FRAME_RECORD_HEADER;
}

void journal_end(journal_t *self)
{
    self->record_at = SIZE_MAX;
    self->head_records++;
}

void journal_abandon(journal_t *self)
{
    self->buffered = self->record_at;
    self->record_at = SIZE_MAX;
    if (self->buffered == self->frame_at + JOURNAL_HEADER) { /* the frame held only it */
        self->buffered = self->frame_at;
        self->frame_at = SIZE_MAX;
    }
}

uint64_t journal_appended(const journal_t *self)
{
    return self->written + self->buffered;
}

uint64_t journal_written(const journal_t *self)
{
    return self->written;
}

uint64_t journal_confirmed(const journal_t *self)
{
    return self->config.fsync == JOURNAL_FSYNC_ALWAYS ? self->synced : self->written;
}

int journal_error(const journal_t *self)
{
    return self->syncer.error ? self->syncer.error : self->error;
}

int journal_broken(const journal_t *self)
{
    return self->syncer.error != 0;
}

uint64_t journal_disk_bytes(const journal_t *self)
{
    uint64_t total = 0;
    for (size_t i = 0; i < self->segment_count; i++)
        total += self->segments[i].size;
    return total;
}

size_t journal_segment_count(const journal_t *self)
{
    return self->segment_count;
}

uint64_t journal_lost_segments(const journal_t *self)
{
    return self->lost_segments;
}

/* ------------------------------------------------------------ segments */

/*  A new head, its header written at once (it counts in the positions):
    the segment says which is the oldest the log needs (`base`) and what
    the one before it held, so that a start finds one that went missing. */
static int s_create_head(journal_t *self, uint32_t number, uint32_t base, uint64_t prev_records,
                         uint64_t prev_bytes)
{
    char path[4096];
    s_path(self, number, "", path, sizeof path);
    int fd = self->io->open(self->io->ctx, path, O_WRONLY | O_CREAT | O_EXCL | O_APPEND, 0600);
    if (fd < 0)
        return -1;
    uint8_t record[HEADER_SIZE];
    s_header_record(record, &(header_t){1, 0, number, base, 0, prev_records, prev_bytes});
    size_t done;
    int error = s_write_all(self, fd, record, sizeof record, &done);
    if (error || s_add_segment(self, number, done)) {
        self->io->close(self->io->ctx, fd);
        self->io->unlink(self->io->ctx, path); /* so that the next try can create it */
        errno = error ? error : ENOMEM;
        return -1;
    }
    self->written += done;
    self->head_records = 0;
    self->head_fd = fd;
    if (self->config.fsync != JOURNAL_FSYNC_NEVER)
        self->io->sync_dir(self->io->ctx, self->dir); /* the new name, before records in it count */
    return 0;
}

/*  Writes the buffer to the head. Returns 0 or the errno that stopped it
    (what was not written stays buffered). */
static int s_write_buffer(journal_t *self)
{
    s_seal(self);
    size_t done = 0;
    int error = s_write_all(self, self->head_fd, self->buffer, self->buffered, &done);
    memmove(self->buffer, self->buffer + done, self->buffered - done);
    self->buffered -= done;
    self->written += done;
    s_head(self)->size += done;
    return error;
}

/*  A full head is closed (its sync and close go to the syncer) and a new,
    empty one takes its place. */
static int s_rotate(journal_t *self, uint32_t base)
{
    int old = self->head_fd;
    /* The old head is on disk before the new one exists: so only the
       newest segment can end in a torn record, and damage anywhere else is
       corruption, never a power loss. One sync per segment. */
    if (self->config.fsync != JOURNAL_FSYNC_NEVER
        && self->io->fdatasync(self->io->ctx, old) != 0) {
        int error = errno;
        if (s_threaded(self))
            pthread_mutex_lock(&self->syncer.lock);
        if (!self->syncer.error)
            self->syncer.error = error;
        if (s_threaded(self))
            pthread_mutex_unlock(&self->syncer.lock);
        return error;
    }
    segment_t closed = *s_head(self);
    if (s_create_head(self, closed.number + 1, base, self->head_records, closed.size))
        return errno;
    s_retire(self, old);
    return 0;
}

int journal_flush(journal_t *self, int64_t now_ms)
{
    if (self->error && now_ms - self->last_failure_ms < RETRY_MS)
        return self->error;
    int error = self->buffered ? s_write_buffer(self) : 0;
    if (!error && s_head(self)->size >= self->config.segment_bytes)
        error = s_rotate(self, self->compact_fd >= 0 ? self->compact_number : self->base);
    self->error = error;
    if (error) {
        self->last_failure_ms = now_ms;
        return error;
    }
    int due = self->config.fsync == JOURNAL_FSYNC_ALWAYS
              || (self->config.fsync == JOURNAL_FSYNC_INTERVAL
                  && now_ms - self->last_sync_ms >= self->config.interval_ms);
    if (due && self->written > self->synced)
        s_request_sync(self, now_ms);
    if (self->config.fsync == JOURNAL_FSYNC_NEVER)
        self->synced = self->written;
    return 0;
}

/* --------------------------------------------------------------- replay */

/*  The records a frame's body holds end to end, or SIZE_MAX if they do not
    fill it exactly. */
static size_t s_frame_records(const uint8_t *body, size_t size)
{
    size_t at = 0, count = 0;
    while (at < size) {
        if (size - at < FRAME_RECORD_HEADER)
            return SIZE_MAX;
        uint64_t length = aq_get_u32(body + at + 1);
        if (length > size - at - FRAME_RECORD_HEADER)
            return SIZE_MAX;
        at += FRAME_RECORD_HEADER + length;
        count++;
    }
    return count;
}

/*  A valid record at `at` of `data`: its total size, or 0. */
static size_t s_record_at(const uint8_t *data, size_t size, size_t at)
{
    if (size - at < JOURNAL_HEADER)
        return 0;
    uint64_t length = aq_get_u32(data + at + 4);
    if (length == 0 || length > RECORD_MAX || length > size - at - 8)
        return 0;
    if (aq_get_u32(data + at) != journal_crc(data + at + 4, 4 + length))
        return 0;
    if (data[at + 8] == JOURNAL_FRAME
        && s_frame_records(data + at + JOURNAL_HEADER, length - 1) == SIZE_MAX)
        return 0; /* checked, yet not records end to end: damage all the same */
    return 8 + length;
}

/*  The first offset at or after `from` where a valid record starts, or
    `size`. O(n) tries, each checking a CRC only where a length fits. */
static size_t s_resync(const uint8_t *data, size_t size, size_t from)
{
    for (size_t at = from; at < size; at++)
        if (s_record_at(data, size, at))
            return at;
    return size;
}

/*  The header a segment starts with, if it has a valid one for its number. */
static int s_header_parse(const uint8_t *data, size_t size, uint32_t number, header_t *header)
{
    memset(header, 0, sizeof *header);
    size_t length = s_record_at(data, size, 0);
    if (length < HEADER_SIZE || data[8] != JOURNAL_SEGMENT || data[JOURNAL_HEADER] != HEADER_VERSION)
        return 0;
    const uint8_t *body = data + JOURNAL_HEADER;
    header->flags = body[1];
    header->number = aq_get_u32(body + 2);
    header->base = aq_get_u32(body + 6);
    header->lost_from = aq_get_u32(body + 10);
    header->prev_records = aq_get_u64(body + 14);
    header->prev_bytes = aq_get_u64(body + 22);
    if (header->number != number || header->base > number
        || ((header->flags & HEADER_LOST) && header->lost_from > number))
        return 0; /* not this segment's: as if it had none */
    header->valid = 1;
    return 1;
}

/*  Each segment's header (valid = 0 where it has none: written before
    headers existed, or cut). */
static void s_read_headers(journal_t *self, const uint32_t *numbers, size_t count,
                           header_t *headers)
{
    for (size_t i = 0; i < count; i++) {
        char path[4096];
        s_path(self, numbers[i], "", path, sizeof path);
        uint8_t data[HEADER_SIZE];
        size_t size = 0;
        int fd = self->io->open(self->io->ctx, path, O_RDONLY, 0);
        while (fd >= 0 && size < sizeof data) {
            ssize_t got = self->io->read(self->io->ctx, fd, data + size, sizeof data - size);
            if (got < 0 && errno == EINTR)
                continue;
            if (got <= 0)
                break;
            size += (size_t) got;
        }
        if (fd >= 0)
            self->io->close(self->io->ctx, fd);
        s_header_parse(data, size, numbers[i], &headers[i]);
    }
}

static ssize_t s_index(const uint32_t *numbers, size_t count, uint32_t number)
{
    for (size_t i = 0; i < count; i++)
        if (numbers[i] == number)
            return (ssize_t) i;
    return -1;
}

/*  The oldest segment the log needs: the newest header's base, followed
    while that segment says it builds on an older one (a snapshot that
    never completed leaves its successor naming it). Without headers: the
    oldest present. */
static uint32_t s_base(const uint32_t *numbers, size_t count, const header_t *headers)
{
    if (!count)
        return 1;
    size_t newest = count;
    while (newest > 0 && !headers[newest - 1].valid)
        newest--;
    if (!newest)
        return numbers[0];
    uint32_t base = headers[newest - 1].base;
    for (;;) {
        ssize_t i = s_index(numbers, count, base);
        if (i < 0 || !headers[i].valid || headers[i].base >= base)
            return base;
        base = headers[i].base;
    }
}

/*  Calls `gap` for each run of segments from `base` on that is missing
    (a repair's LOST segment stands for its run); returns how many. */
typedef void(gap_fn)(journal_t *self, void *ctx, uint32_t from, uint32_t to, uint32_t base,
                     uint32_t next, const header_t *next_header);

static size_t s_gaps(journal_t *self, const uint32_t *numbers, size_t count,
                     const header_t *headers, uint32_t base, gap_fn *gap, void *ctx)
{
    uint64_t expected = base;
    size_t gaps = 0;
    for (size_t i = 0; i < count; i++) {
        if (numbers[i] < base)
            continue; /* left by a snapshot that did not finish: replaced by it */
        uint32_t from = headers[i].valid && (headers[i].flags & HEADER_LOST) ? headers[i].lost_from
                                                                              : numbers[i];
        if (from > expected) {
            gaps++;
            if (gap)
                gap(self, ctx, (uint32_t) expected, from - 1, base, numbers[i], &headers[i]);
        }
        expected = (uint64_t) numbers[i] + 1;
    }
    return gaps;
}

/*  What a run of missing segments took with it, in words. */
static void s_describe_gap(journal_t *self, char *out, size_t size, uint32_t from, uint32_t to,
                           uint32_t base, uint32_t next, const header_t *next_header)
{
    char first[4096], last[4096], after[4096], range[8400];
    s_path(self, from, "", first, sizeof first);
    s_path(self, to, "", last, sizeof last);
    s_path(self, next, "", after, sizeof after);
    if (from == to)
        snprintf(range, sizeof range, "%s is missing", first);
    else
        snprintf(range, sizeof range, "%s to %s (%llu segments) are missing", first, last,
                 (unsigned long long) to - from + 1);
    if (from == base)
        snprintf(out, size,
                 "%s: %s the oldest segment the log needs (its last snapshot, or its first "
                 "segment), as %s says; every item, producer and shutdown state recorded "
                 "before %s is lost, and later records about them name what is not there",
                 range, from == to ? "it was" : "they began with", after, after);
    else if (to + 1 == next && next_header->valid && !(next_header->flags & HEADER_LOST)
             && next_header->prev_records != UNKNOWN)
        snprintf(out, size,
                 "%s: %s %llu records (%llu bytes) when %s began, lost with it: puts, "
                 "deliveries and acks",
                 range, from == to ? "it held" : "the last of them held",
                 (unsigned long long) next_header->prev_records,
                 (unsigned long long) next_header->prev_bytes, after);
    else
        snprintf(out, size, "%s: the records in %s are lost: puts, deliveries and acks", range,
                 from == to ? "it" : "them");
}

typedef struct {
    char *error;
    size_t error_size;
    size_t gaps;
} gap_error_t;

static void s_gap_error(journal_t *self, void *ctx, uint32_t from, uint32_t to, uint32_t base,
                        uint32_t next, const header_t *next_header)
{
    gap_error_t *e = ctx;
    if (e->gaps++)
        return; /* the first is named; the count follows */
    s_describe_gap(self, e->error, e->error_size, from, to, base, next, next_header);
}

static int s_read_file(journal_t *self, const char *path, uint8_t **data, size_t *size, int *fd_out)
{
    int fd = self->io->open(self->io->ctx, path, O_RDWR, 0);
    if (fd < 0)
        return -1;
    off_t length = self->io->size(self->io->ctx, fd);
    *data = length > 0 ? malloc((size_t) length) : NULL;
    *size = 0;
    if (length < 0 || (length > 0 && !*data)) {
        self->io->close(self->io->ctx, fd);
        return -1;
    }
    while (*size < (size_t) length) {
        ssize_t got = self->io->read(self->io->ctx, fd, *data + *size, (size_t) length - *size);
        if (got < 0 && errno == EINTR)
            continue;
        if (got <= 0)
            break;
        *size += (size_t) got;
    }
    *fd_out = fd;
    return 0;
}

static int s_parse_number(const char *name, uint32_t *number)
{
    unsigned long long value;
    char tail[8];
    if (strlen(name) != SEGMENT_NAME_SIZE || sscanf(name, "%16llx%7s", &value, tail) != 2
        || strcmp(tail, ".log") != 0 || value > UINT32_MAX)
        return 0;
    *number = (uint32_t) value;
    return 1;
}

static int s_compare_numbers(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *) a, y = *(const uint32_t *) b;
    return (x > y) - (x < y);
}

/*  The segment numbers in the directory, sorted; leftover temporary files
    of an interrupted compaction are removed. */
static int s_list_segments(journal_t *self, uint32_t **numbers, size_t *count)
{
    char **names;
    size_t total;
    if (self->io->list(self->io->ctx, self->dir, &names, &total))
        return -1;
    *numbers = calloc(total + 1, sizeof **numbers);
    *count = 0;
    for (size_t i = 0; i < total; i++) {
        size_t length = strlen(names[i]);
        if (length > 4 && strcmp(names[i] + length - 4, ".tmp") == 0) {
            char path[4096];
            snprintf(path, sizeof path, "%s/%s", self->dir, names[i]);
            self->io->unlink(self->io->ctx, path);
        }
        else if (*numbers && s_parse_number(names[i], &(*numbers)[*count]))
            (*count)++;
        free(names[i]);
    }
    free(names);
    if (!*numbers)
        return -1;
    qsort(*numbers, *count, sizeof **numbers, s_compare_numbers);
    return 0;
}

typedef struct {
    journal_replay_fn *replay;
    void *ctx;
    journal_progress_fn *progress;
    uint64_t done, total;
    uint64_t segment_records;  /* records of the segment read last */
    char *error;
    size_t error_size;
} reading_t;

/*  Replays one segment. The newest may end in a torn record, cut away;
    any other bad record is corruption. */
static journal_status_t s_replay_segment(journal_t *self, uint32_t number, int newest,
                                         reading_t *reading)
{
    char path[4096];
    s_path(self, number, "", path, sizeof path);
    uint8_t *data;
    size_t size;
    int fd;
    if (s_read_file(self, path, &data, &size, &fd)) {
        snprintf(reading->error, reading->error_size, "cannot read %s: %s", path, strerror(errno));
        return JOURNAL_IO;
    }
    header_t header;
    if (s_header_parse(data, size, number, &header) && (header.flags & HEADER_LOST))
        self->lost_segments += (uint64_t) number - header.lost_from + 1;
    size_t at = 0, length;
    reading->segment_records = 0;
    while (at < size && (length = s_record_at(data, size, at))) {
        const uint8_t *body = data + at + JOURNAL_HEADER;
        size_t body_size = length - JOURNAL_HEADER;
        if (data[at + 8] == JOURNAL_FRAME) /* its records, end to end (s_record_at) */
            for (size_t in = 0; in < body_size;) {
                size_t record = aq_get_u32(body + in + 1);
                reading->replay(reading->ctx, body[in], body + in + FRAME_RECORD_HEADER, record);
                reading->segment_records++;
                in += FRAME_RECORD_HEADER + record;
            }
        else if (data[at + 8] != JOURNAL_SEGMENT) {
            reading->replay(reading->ctx, data[at + 8], body, body_size);
            reading->segment_records++;
        }
        at += length;
        reading->done += length;
        if (reading->progress && (reading->done & ~((1u << 26) - 1)) != ((reading->done - length) & ~((1u << 26) - 1)))
            reading->progress(reading->ctx, reading->done, reading->total);
    }
    journal_status_t status = JOURNAL_OK;
    if (at < size) {
        size_t next = s_resync(data, size, at + 1);
        if (!newest || next < size) {
            snprintf(reading->error, reading->error_size,
                     "%s is corrupt at offset %zu (a record that fails its checksum, with %s "
                     "after it): run asyncq-broker --data-dir %s --repair to keep every intact "
                     "record",
                     path, at, newest ? "intact records" : "more segments", self->dir);
            status = JOURNAL_CORRUPT;
        }
        else if (self->io->truncate(self->io->ctx, fd, (off_t) at) != 0) {
            snprintf(reading->error, reading->error_size, "cannot cut the torn end of %s: %s",
                     path, strerror(errno));
            status = JOURNAL_IO;
        }
        else
            reading->done += size - at;
    }
    if (status == JOURNAL_OK && s_add_segment(self, number, at))
        status = JOURNAL_IO;
    self->io->close(self->io->ctx, fd);
    free(data);
    return status;
}

int journal_lock_dir(const char *dir, int *fd, char *error, size_t error_size)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/LOCK", dir);
    *fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (*fd < 0) {
        snprintf(error, error_size, "cannot open %s: %s", path, strerror(errno));
        return -1;
    }
    if (flock(*fd, LOCK_EX | LOCK_NB) != 0) {
        char pid[32] = "";
        ssize_t got = pread(*fd, pid, sizeof pid - 1, 0);
        pid[got > 0 ? got : 0] = '\0';
        pid[strcspn(pid, "\n")] = '\0';
        snprintf(error, error_size,
                 "another broker%s%s%s is using the data directory %s: one broker per directory",
                 *pid ? " (pid " : "", pid, *pid ? ")" : "", dir);
        return -2; /* the descriptor stays open: the caller closes it */
    }
    char pid[32];
    int length = snprintf(pid, sizeof pid, "%d\n", (int) getpid());
    if (ftruncate(*fd, 0) != 0 || pwrite(*fd, pid, (size_t) length, 0) < 0) {
        /* the pid is only a hint for the message above */
    }
    return 0;
}

static int s_lock(journal_t *self, char *error, size_t error_size)
{
    return journal_lock_dir(self->dir, &self->lock_fd, error, error_size);
}

static uint64_t s_total_bytes(journal_t *self, const uint32_t *numbers, size_t count)
{
    uint64_t total = 0;
    for (size_t i = 0; i < count; i++) {
        char path[4096];
        s_path(self, numbers[i], "", path, sizeof path);
        struct stat st;
        if (self->io == &journal_posix_io && stat(path, &st) == 0)
            total += (uint64_t) st.st_size;
    }
    return total;
}

journal_t *journal_open(const journal_config_t *config, journal_replay_fn *replay, void *ctx,
                        journal_progress_fn *progress, journal_status_t *status, char *error,
                        size_t error_size)
{
    journal_t *self = calloc(1, sizeof *self);
    *status = JOURNAL_IO;
    if (!self) {
        snprintf(error, error_size, "out of memory");
        return NULL;
    }
    self->config = *config;
    self->io = config->io ? config->io : &journal_posix_io;
    self->dir = strdup(config->dir);
    self->lock_fd = self->head_fd = self->compact_fd = -1;
    self->record_at = self->frame_at = SIZE_MAX;
    self->syncer.event = -1;
    if (!self->dir || (mkdir(self->dir, 0700) != 0 && errno != EEXIST)) {
        snprintf(error, error_size, "cannot make the data directory %s: %s", config->dir,
                 strerror(errno));
        journal_close(&self);
        return NULL;
    }
    int locked = self->io == &journal_posix_io ? s_lock(self, error, error_size) : 0;
    if (locked) {
        *status = locked == -2 ? JOURNAL_LOCKED : JOURNAL_IO;
        journal_close(&self);
        return NULL;
    }
    uint32_t *numbers;
    size_t count;
    if (s_list_segments(self, &numbers, &count)) {
        snprintf(error, error_size, "cannot list %s: %s", config->dir, strerror(errno));
        journal_close(&self);
        return NULL;
    }
    /* A segment missing from the sequence (from the oldest the log needs
       to the newest) is damage a replay cannot see: its records are
       simply not read, and the state comes back as it never was. */
    header_t *headers = calloc(count + 1, sizeof *headers);
    if (!headers) {
        snprintf(error, error_size, "out of memory");
        free(numbers);
        journal_close(&self);
        return NULL;
    }
    s_read_headers(self, numbers, count, headers);
    self->base = s_base(numbers, count, headers);
    char gap[3000] = "";
    gap_error_t gaps = {gap, sizeof gap, 0};
    s_gaps(self, numbers, count, headers, self->base, s_gap_error, &gaps);
    free(headers);
    if (gaps.gaps) {
        snprintf(error, error_size,
                 "the journal in %s has %s missing: %s%s. Starting would bring back a state "
                 "that never was; run asyncq-broker --data-dir %s --repair to keep every intact "
                 "segment and hear what is gone",
                 config->dir, gaps.gaps == 1 ? "a segment" : "segments", gap,
                 gaps.gaps > 1 ? " (and more gaps after it)" : "", config->dir);
        free(numbers);
        *status = JOURNAL_CORRUPT;
        journal_close(&self);
        return NULL;
    }
    reading_t reading = {replay, ctx, progress, 0, s_total_bytes(self, numbers, count), 0, error,
                         error_size};
    journal_status_t result = JOURNAL_OK;
    for (size_t i = 0; i < count && result == JOURNAL_OK; i++)
        result = s_replay_segment(self, numbers[i], i + 1 == count, &reading);
    uint32_t next = count ? numbers[count - 1] + 1 : 1;
    free(numbers);
    uint64_t last_bytes = self->segment_count ? s_head(self)->size : 0;
    if (result == JOURNAL_OK
        && s_create_head(self, next, self->base, reading.segment_records, last_bytes)) {
        snprintf(error, error_size, "cannot create a segment in %s: %s", config->dir,
                 strerror(errno));
        result = JOURNAL_IO;
    }
    if (result == JOURNAL_OK && s_threaded(self) && s_syncer_start(self)) {
        snprintf(error, error_size, "cannot start the sync thread");
        result = JOURNAL_IO;
    }
    if (result != JOURNAL_OK) {
        *status = result;
        journal_close(&self);
        return NULL;
    }
    *status = JOURNAL_OK;
    return self;
}

void journal_close(journal_t **self_p)
{
    journal_t *self = *self_p;
    if (!self)
        return;
    if (self->head_fd >= 0 && self->buffered)
        s_write_buffer(self);
    if (self->compact_syncing)
        pthread_join(self->compact_thread, NULL); /* the snapshot's sync */
    if (self->syncer.started) {
        s_request_sync(self, 0);
        s_syncer_stop(self);
    }
    else if (self->head_fd >= 0 && self->config.fsync != JOURNAL_FSYNC_NEVER)
        self->io->fdatasync(self->io->ctx, self->head_fd);
    if (self->head_fd >= 0)
        self->io->close(self->io->ctx, self->head_fd);
    if (self->compact_fd >= 0)
        self->io->close(self->io->ctx, self->compact_fd);
    for (size_t i = 0; i < self->syncer.retired_count; i++)
        self->io->close(self->io->ctx, self->syncer.retired[i]);
    free(self->syncer.retired);
    if (self->syncer.event >= 0)
        close(self->syncer.event);
    if (self->lock_fd >= 0)
        close(self->lock_fd); /* releases the lock */
    free(self->segments);
    free(self->buffer);
    free(self->compact_buffer);
    free(self->compact_older);
    free(self->dir);
    free(self);
    *self_p = NULL;
}

/* ------------------------------------------------------------ snapshots */

int journal_snapshot_begin(journal_t *self)
{
    if (self->compact_fd >= 0 || journal_error(self) || self->buffered)
        return -1;
    /* The new head names the snapshot as its base already: if the snapshot
       does not complete, the segment it was to replace names the real one. */
    uint32_t number = s_head(self)->number;
    int error = s_rotate(self, number);
    if (error)
        return -1;
    self->compact_number = number;
    char path[4096];
    s_path(self, self->segments[self->segment_count - 2].number, ".tmp", path, sizeof path);
    self->compact_fd = self->io->open(self->io->ctx, path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (self->compact_fd < 0)
        return -1;
    self->compact_error = 0;
    self->compact_size = 0;
    self->compact_buffered = 0;
    uint8_t *body = journal_snapshot_add(self, JOURNAL_SEGMENT, HEADER_BODY);
    if (body)
        s_header_body(body, &(header_t){1, HEADER_SNAPSHOT, number, number, 0, UNKNOWN, UNKNOWN});
    return 0;
}

/*  Seals every record buffered (their bodies are written by now), writes
    them to the snapshot file. */
static void s_compact_write(journal_t *self)
{
    size_t at = 0;
    while (at < self->compact_buffered) {
        uint8_t *record = self->compact_buffer + at;
        size_t length = aq_get_u32(record + 4);
        aq_put_u32(record, journal_crc(record + 4, 4 + length));
        at += 8 + length;
    }
    size_t done;
    int error = s_write_all(self, self->compact_fd, self->compact_buffer, self->compact_buffered,
                            &done);
    if (error && !self->compact_error)
        self->compact_error = error;
    self->compact_size += done;
    self->compact_buffered = 0;
}

uint8_t *journal_snapshot_add(journal_t *self, uint8_t type, size_t size)
{
    if (self->compact_buffered >= COMPACT_CHUNK)
        s_compact_write(self);
    if (self->compact_error
        || s_reserve(&self->compact_buffer, &self->compact_capacity, self->compact_buffered,
                     JOURNAL_HEADER + size)) {
        self->compact_error = self->compact_error ? self->compact_error : ENOMEM;
        return NULL;
    }
    uint8_t *record = self->compact_buffer + self->compact_buffered;
    aq_put_u32(record + 4, (uint32_t) (size + 1));
    record[8] = type;
    self->compact_buffered += JOURNAL_HEADER + size;
    return record + JOURNAL_HEADER;
}

/*  The file steps of putting a snapshot in place, once its file is synced
    (ok) or not: on the snapshot's thread, or inline. It takes the place of
    the newest closed segment at once (a rename); the older ones then go. A
    crash in between leaves them to be replayed first, and the snapshot's
    first record (the owner's reset) makes them count for nothing. Heads
    closed while the snapshot was written stay. 0, or -1 (nothing changed). */
static int s_snapshot_files(journal_t *self, int ok)
{
    char tmp[4096], target[4096];
    s_path(self, self->compact_number, ".tmp", tmp, sizeof tmp);
    s_path(self, self->compact_number, "", target, sizeof target);
    if (!ok || self->io->rename(self->io->ctx, tmp, target) != 0
        || self->io->sync_dir(self->io->ctx, self->dir) != 0) {
        self->io->unlink(self->io->ctx, tmp);
        return -1;
    }
    for (size_t i = 0; i < self->compact_older_count; i++) {
        char path[4096];
        s_path(self, self->compact_older[i], "", path, sizeof path);
        self->io->unlink(self->io->ctx, path);
    }
    self->io->sync_dir(self->io->ctx, self->dir);
    return 0;
}

/*  The segments before the snapshot's, which go once it is in place. */
static int s_snapshot_older(journal_t *self)
{
    size_t older = 0;
    while (older < self->segment_count && self->segments[older].number < self->compact_number)
        older++;
    free(self->compact_older);
    self->compact_older = malloc((older ? older : 1) * sizeof *self->compact_older);
    if (!self->compact_older)
        return -1;
    for (size_t i = 0; i < older; i++)
        self->compact_older[i] = self->segments[i].number;
    self->compact_older_count = older;
    return 0;
}

/*  The loop's side of the end of a snapshot: the file closed, and if it is
    in place (rc 0), the segment list as the directory now is. */
static int s_snapshot_adopt(journal_t *self, int rc)
{
    self->io->close(self->io->ctx, self->compact_fd);
    self->compact_fd = -1;
    if (rc == 0) {
        size_t older = self->compact_older_count;
        memmove(self->segments, self->segments + older,
                (self->segment_count - older) * sizeof *self->segments);
        self->segment_count -= older;
        self->segments[0].size = self->compact_size;
        self->base = self->compact_number;
        self->lost_segments = 0; /* what repair marked lost is gone with them */
    }
    free(self->compact_older);
    self->compact_older = NULL;
    self->compact_older_count = 0;
    return rc;
}

int journal_snapshot_end(journal_t *self)
{
    s_compact_write(self);
    int ok = !self->compact_error && s_snapshot_older(self) == 0
             && self->io->fdatasync(self->io->ctx, self->compact_fd) == 0;
    return s_snapshot_adopt(self, s_snapshot_files(self, ok));
}

/*  The snapshot's thread: its sync, rename and unlinks, which take tens of
    milliseconds for a large log, off the loop. */
static void *s_compact_sync_main(void *arg)
{
    journal_t *self = arg;
    int ok = self->io->fdatasync(self->io->ctx, self->compact_fd) == 0;
    int rc = s_snapshot_files(self, ok);
    pthread_mutex_lock(&self->syncer.lock);
    self->compact_synced = 1;
    self->compact_sync_error = rc;
    pthread_mutex_unlock(&self->syncer.lock);
    uint64_t one = 1;
    if (write(self->syncer.event, &one, sizeof one) < 0) {
        /* the loop polls the snapshot on every pass anyway */
    }
    return NULL;
}

int journal_snapshot_finish(journal_t *self)
{
    s_compact_write(self);
    if (self->compact_error || !s_threaded(self) || s_snapshot_older(self))
        return journal_snapshot_end(self);
    self->compact_synced = 0;
    self->compact_sync_error = 0;
    if (pthread_create(&self->compact_thread, NULL, s_compact_sync_main, self) != 0)
        return journal_snapshot_end(self);
    self->compact_syncing = 1;
    return 1;
}

int journal_snapshot_poll(journal_t *self)
{
    if (!self->compact_syncing)
        return 1;
    pthread_mutex_lock(&self->syncer.lock);
    int done = self->compact_synced, rc = self->compact_sync_error;
    pthread_mutex_unlock(&self->syncer.lock);
    if (!done)
        return 1;
    pthread_join(self->compact_thread, NULL);
    self->compact_syncing = 0;
    return s_snapshot_adopt(self, rc);
}

int journal_snapshot_busy(const journal_t *self)
{
    return self->compact_fd < 0 ? 0 : self->compact_syncing ? 2 : 1;
}

void journal_wake(journal_t *self)
{
    uint64_t one = 1;
    if (s_threaded(self) && self->syncer.event >= 0
        && write(self->syncer.event, &one, sizeof one) < 0) {
        /* full: the loop wakes anyway */
    }
}

/* --------------------------------------------------------------- repair */

typedef struct {
    journal_report_fn *report;
    void *ctx;
    int rc;
    char *error;
    size_t error_size;
} filling_t;

/*  A run of missing segments: one LOST segment in place of the last,
    standing for the run, so that the log is whole again and every start
    says what it lacks; and a line saying what went with them. */
static void s_fill_gap(journal_t *self, void *ctx, uint32_t from, uint32_t to, uint32_t base,
                       uint32_t next, const header_t *next_header)
{
    filling_t *filling = ctx;
    char line[12800], path[4096];
    s_describe_gap(self, line, sizeof line, from, to, base, next, next_header);
    s_path(self, to, "", path, sizeof path);
    size_t length = strlen(line);
    snprintf(line + length, sizeof line - length, "; %s now marks the loss (no records)", path);
    if (filling->rc)
        return;
    uint8_t record[HEADER_SIZE];
    s_header_record(record, &(header_t){1, HEADER_LOST, to, base, from, UNKNOWN, UNKNOWN});
    int fd = self->io->open(self->io->ctx, path, O_WRONLY | O_CREAT | O_EXCL, 0600);
    size_t done;
    if (fd < 0 || s_write_all(self, fd, record, sizeof record, &done)
        || self->io->fdatasync(self->io->ctx, fd)) {
        snprintf(filling->error, filling->error_size, "cannot write %s: %s", path,
                 strerror(errno));
        filling->rc = -1;
    }
    else if (filling->report)
        filling->report(filling->ctx, line);
    if (fd >= 0)
        self->io->close(self->io->ctx, fd);
}

int journal_repair(const char *dir, const journal_io_t *io, journal_report_fn *report, void *ctx,
                   char *error, size_t error_size)
{
    journal_config_t config = {.dir = dir, .io = io, .segment_bytes = UINT64_MAX};
    journal_t *self = calloc(1, sizeof *self);
    if (!self) {
        snprintf(error, error_size, "out of memory");
        return -1;
    }
    self->config = config;
    self->io = io ? io : &journal_posix_io;
    self->dir = strdup(dir);
    self->lock_fd = self->head_fd = self->compact_fd = -1;
    self->syncer.event = -1;
    int rc = self->io == &journal_posix_io ? s_lock(self, error, error_size) : 0;
    uint32_t *numbers = NULL;
    size_t count = 0;
    if (!rc && s_list_segments(self, &numbers, &count)) {
        snprintf(error, error_size, "cannot list %s", dir);
        rc = -1;
    }
    char damaged[4096];
    snprintf(damaged, sizeof damaged, "%s/damaged", dir);
    for (size_t i = 0; !rc && i < count; i++) {
        char path[4096], line[12800];
        s_path(self, numbers[i], "", path, sizeof path);
        uint8_t *data;
        size_t size;
        int fd;
        if (s_read_file(self, path, &data, &size, &fd)) {
            snprintf(error, error_size, "cannot read %s", path);
            rc = -1;
            break;
        }
        self->io->close(self->io->ctx, fd);
        size_t at = 0, kept = 0, records = 0, skipped = 0, length;
        uint8_t *salvaged = malloc(size ? size : 1);
        while (salvaged && at < size) {
            if ((length = s_record_at(data, size, at))) {
                memcpy(salvaged + kept, data + at, length);
                kept += length;
                const uint8_t *body = data + at + JOURNAL_HEADER;
                records += data[at + 8] == JOURNAL_FRAME /* the owner's records */
                               ? s_frame_records(body, length - JOURNAL_HEADER)
                               : data[at + 8] != JOURNAL_SEGMENT;
                at += length;
                continue;
            }
            size_t next = s_resync(data, size, at + 1);
            skipped += next - at;
            at = next;
        }
        if (!salvaged || skipped == 0) {
            snprintf(line, sizeof line, "%s: %zu records, intact", path, records);
            if (report)
                report(ctx, line);
        }
        else {
            char tmp[4096], moved[4200];
            s_path(self, numbers[i], ".tmp", tmp, sizeof tmp);
            snprintf(moved, sizeof moved, "%s/" SEGMENT_FORMAT, damaged,
                     (unsigned long long) numbers[i]);
            int out = self->io->open(self->io->ctx, tmp, O_WRONLY | O_CREAT | O_TRUNC, 0600);
            size_t done;
            if (out < 0 || s_write_all(self, out, salvaged, kept, &done)
                || self->io->fdatasync(self->io->ctx, out) || (mkdir(damaged, 0700) && errno != EEXIST)
                || self->io->rename(self->io->ctx, path, moved)
                || self->io->rename(self->io->ctx, tmp, path)) {
                snprintf(error, error_size, "cannot rewrite %s: %s", path, strerror(errno));
                rc = -1;
            }
            if (out >= 0)
                self->io->close(self->io->ctx, out);
            snprintf(line, sizeof line,
                     "%s: kept %zu intact records (%zu bytes), dropped %zu damaged bytes; the "
                     "original is %s",
                     path, records, kept, skipped, moved);
            if (report)
                report(ctx, line);
        }
        free(salvaged);
        free(data);
    }
    /* Then what is missing: the intact segments stay as they are. */
    header_t *headers = rc ? NULL : calloc(count + 1, sizeof *headers);
    if (!rc && !headers) {
        snprintf(error, error_size, "out of memory");
        rc = -1;
    }
    if (!rc) {
        s_read_headers(self, numbers, count, headers);
        filling_t filling = {report, ctx, 0, error, error_size};
        s_gaps(self, numbers, count, headers, s_base(numbers, count, headers), s_fill_gap,
               &filling);
        rc = filling.rc;
    }
    free(headers);
    if (!rc)
        self->io->sync_dir(self->io->ctx, dir);
    free(numbers);
    journal_close(&self);
    return rc;
}
