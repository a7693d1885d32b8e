/*  The journal: what a durable broker writes so that a restart loses
    nothing it confirmed. An append-only log of records in numbered segment
    files of a data directory. It knows nothing of sockets, and nothing of
    what its records mean (persist.c does): it keeps records whole, in
    order, checked, on disk when asked, and bounded.

    A record is `u32 crc32 | u32 length | u8 type | body`, the CRC over the
    length, type and body (big-endian, like the wire). What the broker
    appends goes in frames: a record of type JOURNAL_FRAME whose body holds
    its records end to end, each `u8 type | u32 length | body`, with one
    CRC for them all (as Kafka checks a batch: a CRC per record cost a
    durable broker an eighth of its instructions). Records are appended
    to a buffer while the broker handles a pass of messages, and written
    with one write() at the end of the pass (journal_flush), the frame
    sealed just before (and once it holds 1 MiB). Sync:
    JOURNAL_FSYNC_ALWAYS asks a thread of its own to fdatasync what was
    written, so that one sync covers every record of a pass and the loop
    never waits for the disk (group commit); the broker confirms puts once
    journal_confirmed() covers them. INTERVAL syncs at most every N ms, NEVER
    leaves it to the system: then confirms wait only for the write.

    Segments: the head is closed when it reaches segment_bytes and a new
    one starts. When the owner finds the closed segments mostly garbage, it
    writes a snapshot: the head is closed, the owner's whole state is
    written to a new file that takes the place of the newest closed segment
    (a rename), and the older segments are deleted. So disk use follows what
    is live, not what was ever put, and a crash at any step leaves a log
    that replays to the same state (DESIGN.md, "The journal").

    Recovery reads every segment in order. A record cut off at the end of
    the newest segment (a torn write) is cut away; a bad record anywhere
    else is corruption: the journal refuses to open and names the file and
    offset, and journal_repair() keeps every intact record. A frame is
    whole or lost as one: a torn or damaged one loses the records of its
    write. Journals written before frames (a record each) are read too. 

    Every segment begins with a header record of its own (JOURNAL_SEGMENT,
    never replayed): its number, the oldest segment the log needs (its
    last snapshot, or its first segment) and what the segment before it
    held. A segment missing from that sequence (deleted, lost with a disk)
    is corruption too: the journal refuses to open and names it, and
    journal_repair() puts a LOST segment in its place, which every later
    start reports, until a snapshot replaces the log. */
#ifndef BROKER_JOURNAL_H
#define BROKER_JOURNAL_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "histogram.h"

#define JOURNAL_HEADER 9 /* crc, length, type */
#define JOURNAL_SEGMENT 0xff /* a segment's header record: the journal's own type */
#define JOURNAL_FRAME 0xfe   /* records end to end, each `u8 type | u32 length | body` */

typedef enum { JOURNAL_FSYNC_ALWAYS, JOURNAL_FSYNC_INTERVAL, JOURNAL_FSYNC_NEVER } journal_fsync_t;

/*  Every system call the journal makes on files, so that tests can make
    them fail (a full disk, an I/O error) or lose what was not synced (a
    power loss). `journal_posix_io` is the real one. */
typedef struct {
    int (*open)(void *ctx, const char *path, int flags, mode_t mode);
    ssize_t (*write)(void *ctx, int fd, const void *data, size_t size);
    ssize_t (*read)(void *ctx, int fd, void *data, size_t size);
    off_t (*size)(void *ctx, int fd);
    int (*fdatasync)(void *ctx, int fd);
    int (*truncate)(void *ctx, int fd, off_t size);
    int (*close)(void *ctx, int fd);
    int (*rename)(void *ctx, const char *from, const char *to);
    int (*unlink)(void *ctx, const char *path);
    int (*sync_dir)(void *ctx, const char *dir);
    /*  The names in dir, malloc'd (each and the array). */
    int (*list)(void *ctx, const char *dir, char ***names, size_t *count);
    void *ctx;
} journal_io_t;

extern const journal_io_t journal_posix_io;

typedef struct journal journal_t;

/*  Called for each record while the journal is read, in order: its type
    and body. */
typedef void(journal_replay_fn)(void *ctx, uint8_t type, const uint8_t *body, size_t size);

/*  Progress of a long recovery: bytes read of all there is. */
typedef void(journal_progress_fn)(void *ctx, uint64_t done, uint64_t total);

typedef struct {
    const char *dir;
    journal_fsync_t fsync;
    int64_t interval_ms;       /* INTERVAL: sync at most this often */
    uint64_t segment_bytes;    /* close the head at this size */
    int sync_thread;           /* ALWAYS and INTERVAL: sync on a thread (0: inline, for tests) */
    const journal_io_t *io;    /* NULL: journal_posix_io */
} journal_config_t;

typedef enum {
    JOURNAL_OK = 0,
    JOURNAL_LOCKED,    /* another broker uses the directory */
    JOURNAL_CORRUPT,   /* a bad record before the end: run --repair */
    JOURNAL_IO         /* the directory or a file cannot be used */
} journal_status_t;

/*  Takes the directory (created if missing; locked: one broker at a time),
    reads every record into `replay`, cuts a torn tail, and starts a new
    head segment. NULL on failure with the reason in `error` and *status. */
journal_t *journal_open(const journal_config_t *config, journal_replay_fn *replay, void *ctx,
                        journal_progress_fn *progress, journal_status_t *status, char *error,
                        size_t error_size);

/*  Writes what is buffered, waits for the sync thread, frees. */
void journal_close(journal_t **self_p);

/*  Starts a record of `size` bytes of body: returns where to write the
    body, which journal_end() then seals. At most one record is open. */
uint8_t *journal_begin(journal_t *self, uint8_t type, size_t size);
void journal_end(journal_t *self);
/*  Takes the open record back, as if it had never begun. */
void journal_abandon(journal_t *self);

/*  Positions in the log (bytes since it opened): appended to the buffer,
    written to the system. */
uint64_t journal_appended(const journal_t *self);
uint64_t journal_written(const journal_t *self);

/*  What a confirm covering `position` waits for: the synced position (ALWAYS)
    or journal_written (INTERVAL, NEVER). */
uint64_t journal_confirmed(const journal_t *self);

/*  Writes the buffer (one write), closes a full head, and asks for a sync
    as the mode says. On a write error (disk full) keeps what is not
    written and tries again at most once a second. Returns 0, or the errno
    of the failure that holds writes back. */
int journal_flush(journal_t *self, int64_t now_ms);

/*  The errno that keeps records from reaching the disk (ENOSPC, EIO...),
    or 0. A failed fdatasync is final for this run: what it covered may not
    be on disk, so nothing after is ever confirmed. */
int journal_error(const journal_t *self);
int journal_broken(const journal_t *self);

/*  How long each fdatasync took (the sync thread's, or inline), copied
    under the thread's lock: for the metrics, never on the per-item path. */
void journal_sync_latency(journal_t *self, histogram_t *latency);

/*  The sync thread's descriptor, readable when a sync finished (poll it);
    journal_on_synced() then takes the news. -1 without a thread. */
int journal_sync_fd(const journal_t *self);
void journal_on_synced(journal_t *self);

/*  A snapshot. journal_snapshot_begin closes the head (nothing may be
    buffered: call it right after journal_flush) and opens the snapshot
    file; -1 if it cannot (a write error holds the journal back, say). The
    owner then appends its whole state with journal_snapshot_add (its first
    record must tell replay to forget what came before), and
    journal_snapshot_end syncs the file and puts it in place: 0, or -1 if
    it failed (nothing changed but a new head). journal_snapshot_end blocks
    the caller for the sync, rename and unlinks (tests, and journals
    without a sync thread); a broker uses finish and poll below. The owner
    asks only when the garbage is larger than what is live, so the cost per
    byte ever written stays O(1). */
int journal_snapshot_begin(journal_t *self);
uint8_t *journal_snapshot_add(journal_t *self, uint8_t type, size_t size);
int journal_snapshot_end(journal_t *self);

/*  The same in steps that never block for long: the owner adds its state
    a slice per pass (records keep going to the head meanwhile, and heads
    closed meanwhile name the snapshot as their base), then
    journal_snapshot_finish() writes the rest and hands the file's sync to
    a thread of its own, which wakes the loop through journal_sync_fd();
    journal_snapshot_poll() then puts it in place. finish and poll return
    0 (in place), -1 (failed: nothing changed but new heads) or 1 (the
    sync is still running). Without a sync thread, finish is
    journal_snapshot_end. busy: 0 none, 1 being written, 2 being synced.
    journal_wake() makes journal_sync_fd() readable, so that the loop
    comes back at once for the next slice. */
int journal_snapshot_finish(journal_t *self);
int journal_snapshot_poll(journal_t *self);
int journal_snapshot_busy(const journal_t *self);
void journal_wake(journal_t *self);

/*  Disk use: bytes in every segment, and how many segments. */
uint64_t journal_disk_bytes(const journal_t *self);
size_t journal_segment_count(const journal_t *self);

/*  Segments found missing by a repair and marked lost, still in the log
    (0 once a snapshot replaced them). */
uint64_t journal_lost_segments(const journal_t *self);

/*  Salvages every intact record of a damaged directory: each damaged
    segment is rewritten without its bad parts (the original is kept under
    DIR/damaged/), and each run of missing segments is marked by a LOST
    segment. Writes what it did, one line per segment, and what was lost,
    one line per run of missing segments, to `report`.
    Returns 0, -2 if another broker holds the directory, or -1; the reason
    is in `error`. */
typedef void(journal_report_fn)(void *ctx, const char *line);
int journal_repair(const char *dir, const journal_io_t *io, journal_report_fn *report, void *ctx,
                   char *error, size_t error_size);

/*  One broker per data directory: an exclusive lock on DIR/LOCK (which
    holds the pid, for the message), kept while `*fd` is open (and not
    across exec). 0; -2 if another process holds it, -1 if the file cannot
    be opened; the reason is in `error`. Close *fd (if >= 0) either way. */
int journal_lock_dir(const char *dir, int *fd, char *error, size_t error_size);

/*  The CRC of a record as the journal computes it (tests build records). */
uint32_t journal_crc(const uint8_t *data, size_t size);

#endif
