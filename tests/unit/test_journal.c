/*  The journal alone, through its I/O seam: records come back whole and in
    order; a power loss (what was written but not synced is lost, or kept
    in part) never loses a record whose flush had synced; a torn tail at
    every byte offset is cut and everything before it kept; a flipped byte
    in the middle is reported with its file and offset, and repair keeps
    the rest; a segment missing (in the middle, the oldest, a snapshot) is
    reported by name, and repair marks it lost and keeps the rest; a full disk holds records back and writes them once there is
    room; snapshots replace the closed segments, also written in steps
    while the head goes on. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "journal.h"

/* ---------------------------------------------------------------- seam */

#define FILES 64

/*  The real calls, with a power loss and a disk budget: after `crash_at`
    more writes or syncs, every call pretends to work and does nothing (the
    machine is off); each file remembers how much of it a sync covered. */
typedef struct {
    int fds[FILES];
    char paths[FILES][256];
    off_t synced[FILES];
    long crash_at;      /* operations until the power goes; < 0: never */
    int crashed;
    long long budget;   /* bytes that may still be written; < 0: unlimited */
} seam_t;

static int s_slot(seam_t *seam, int fd)
{
    for (int i = 0; i < FILES; i++)
        if (seam->fds[i] == fd)
            return i;
    return -1;
}

static int s_tick(seam_t *seam)
{
    if (seam->crashed)
        return 1;
    if (seam->crash_at >= 0 && seam->crash_at-- == 0)
        seam->crashed = 1;
    return seam->crashed;
}

static int s_open(void *ctx, const char *path, int flags, mode_t mode)
{
    seam_t *seam = ctx;
    if (seam->crashed) {
        errno = EIO;
        return -1;
    }
    int fd = journal_posix_io.open(NULL, path, flags, mode);
    int slot = fd >= 0 ? s_slot(seam, -1) : -1;
    if (slot >= 0) {
        seam->fds[slot] = fd;
        snprintf(seam->paths[slot], sizeof seam->paths[slot], "%s", path);
        struct stat st;
        seam->synced[slot] = fstat(fd, &st) == 0 ? st.st_size : 0;
    }
    return fd;
}

static ssize_t s_write(void *ctx, int fd, const void *data, size_t size)
{
    seam_t *seam = ctx;
    if (s_tick(seam))
        return (ssize_t) size;
    if (seam->budget >= 0) {
        if (seam->budget == 0) {
            errno = ENOSPC;
            return -1;
        }
        if ((long long) size > seam->budget)
            size = (size_t) seam->budget;
        seam->budget -= (long long) size;
    }
    return journal_posix_io.write(NULL, fd, data, size);
}

static ssize_t s_read(void *ctx, int fd, void *data, size_t size)
{
    (void) ctx;
    return journal_posix_io.read(NULL, fd, data, size);
}

static off_t s_size(void *ctx, int fd)
{
    (void) ctx;
    return journal_posix_io.size(NULL, fd);
}

static int s_fdatasync(void *ctx, int fd)
{
    seam_t *seam = ctx;
    if (s_tick(seam))
        return 0;
    int slot = s_slot(seam, fd);
    struct stat st;
    if (slot >= 0 && fstat(fd, &st) == 0)
        seam->synced[slot] = st.st_size;
    return 0;
}

static int s_truncate(void *ctx, int fd, off_t size)
{
    if (((seam_t *) ctx)->crashed)
        return 0;
    return journal_posix_io.truncate(NULL, fd, size);
}

static int s_close(void *ctx, int fd)
{
    seam_t *seam = ctx;
    int slot = s_slot(seam, fd);
    if (slot >= 0)
        seam->fds[slot] = -1;
    return journal_posix_io.close(NULL, fd);
}

static int s_rename(void *ctx, const char *from, const char *to)
{
    if (((seam_t *) ctx)->crashed)
        return 0;
    return journal_posix_io.rename(NULL, from, to);
}

static int s_unlink(void *ctx, const char *path)
{
    if (((seam_t *) ctx)->crashed)
        return 0;
    return journal_posix_io.unlink(NULL, path);
}

static int s_sync_dir(void *ctx, const char *dir)
{
    (void) ctx, (void) dir;
    return 0;
}

static int s_list(void *ctx, const char *dir, char ***names, size_t *count)
{
    (void) ctx;
    return journal_posix_io.list(NULL, dir, names, count);
}

static seam_t s_seam;
static const journal_io_t s_io = {s_open,  s_write,  s_read,   s_size,     s_fdatasync, s_truncate,
                                  s_close, s_rename, s_unlink, s_sync_dir, s_list,      &s_seam};

static void s_seam_reset(void)
{
    memset(&s_seam, 0, sizeof s_seam);
    for (int i = 0; i < FILES; i++)
        s_seam.fds[i] = -1;
    s_seam.crash_at = -1;
    s_seam.budget = -1;
}

/* ------------------------------------------------------------- helpers */

typedef struct {
    char dir[64];
    uint32_t values[4096]; /* what was replayed, in order */
    size_t count;
} fixture_t;

static void s_on_record(void *ctx, uint8_t type, const uint8_t *body, size_t size)
{
    fixture_t *f = ctx;
    assert_int_equal(type, 7);
    assert_true(size >= 4);
    uint32_t value;
    memcpy(&value, body, 4);
    /* The rest of the body repeats the value's low byte: intact or not. */
    for (size_t i = 4; i < size; i++)
        assert_int_equal(body[i], (uint8_t) value);
    if (f->count < 4096)
        f->values[f->count++] = value;
}

static journal_t *s_open_journal(fixture_t *f, journal_fsync_t fsync, uint64_t segment_bytes,
                                 journal_status_t *status, char *error, size_t size)
{
    journal_config_t config = {.dir = f->dir, .fsync = fsync, .interval_ms = 1000,
                               .segment_bytes = segment_bytes, .sync_thread = 0, .io = &s_io};
    f->count = 0;
    return journal_open(&config, s_on_record, f, NULL, status, error, size);
}

static journal_t *s_open_ok(fixture_t *f, uint64_t segment_bytes)
{
    journal_status_t status;
    char error[512];
    journal_t *journal = s_open_journal(f, JOURNAL_FSYNC_ALWAYS, segment_bytes, &status, error,
                                        sizeof error);
    if (!journal)
        fail_msg("journal_open: %s", error);
    return journal;
}

/*  A record of 4 + (value % 40) bytes. */
static void s_append(journal_t *journal, uint32_t value)
{
    size_t size = 4 + value % 40;
    uint8_t *body = journal_begin(journal, 7, size);
    assert_non_null(body);
    memcpy(body, &value, 4);
    memset(body + 4, (uint8_t) value, size - 4);
    journal_end(journal);
}

static int s_setup(void **state)
{
    fixture_t *f = calloc(1, sizeof *f);
    assert_non_null(f);
    snprintf(f->dir, sizeof f->dir, "/tmp/asyncq-journal-XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    s_seam_reset();
    *state = f;
    return 0;
}

static int s_teardown(void **state)
{
    fixture_t *f = *state;
    char command[128];
    snprintf(command, sizeof command, "rm -rf %s", f->dir);
    assert_int_equal(system(command), 0);
    free(f);
    return 0;
}

static void s_segment_path(const fixture_t *f, uint32_t number, char *buf, size_t size)
{
    snprintf(buf, size, "%s/%016llx.log", f->dir, (unsigned long long) number);
}

/* --------------------------------------------------------------- tests */

/*  The checksum is CRC-32 as zlib computes it, whatever computes it here:
    journals written by any version read back. The standard check value,
    and a record-sized input against zlib.crc32 of the same bytes. */
static void test_the_checksum_is_zlibs_crc32(void **state)
{
    (void) state;
    assert_int_equal(journal_crc((const uint8_t *) "123456789", 9), 0xCBF43926u);
    uint8_t record[100];
    for (size_t i = 0; i < sizeof record; i++)
        record[i] = (uint8_t) (i * 7);
    assert_int_equal(journal_crc(record, sizeof record), 0x821D3E85u);
    assert_int_equal(journal_crc(record, 0), 0);
}

static void test_records_come_back_in_order_across_segments(void **state)
{
    fixture_t *f = *state;
    journal_t *journal = s_open_ok(f, 512);
    for (uint32_t i = 0; i < 300; i++) {
        s_append(journal, i);
        if (i % 7 == 0)
            assert_int_equal(journal_flush(journal, 0), 0);
    }
    assert_int_equal(journal_flush(journal, 0), 0);
    assert_true(journal_segment_count(journal) > 5);
    journal_close(&journal);
    journal = s_open_ok(f, 512);
    assert_int_equal(f->count, 300);
    for (uint32_t i = 0; i < 300; i++)
        assert_int_equal(f->values[i], i);
    journal_close(&journal);
}

/*  Power goes at a random write or sync; files then keep what a sync
    covered and a random part of the rest. Every record whose flush
    returned before the power went comes back. */
static void test_a_power_loss_never_loses_a_synced_record(void **state)
{
    fixture_t *f = *state;
    unsigned seed = 1;
    uint64_t confirmed_total = 0, recovered_total = 0;
    for (int round = 0; round < 40; round++) {
        char command[128];
        snprintf(command, sizeof command, "rm -rf %s/*", f->dir);
        assert_int_equal(system(command), 0);
        s_seam_reset();
        s_seam.crash_at = rand_r(&seed) % 120;
        journal_t *journal = s_open_ok(f, 700);
        uint32_t confirmed = 0, next = 0;
        while (!s_seam.crashed) {
            int batch = 1 + rand_r(&seed) % 9;
            for (int i = 0; i < batch; i++)
                s_append(journal, next++);
            int rc = journal_flush(journal, 0);
            if (!s_seam.crashed && rc == 0 && journal_confirmed(journal) == journal_written(journal))
                confirmed = next;
        }
        journal_close(&journal); /* the machine is off: nothing it does reaches a file */
        for (int i = 0; i < FILES; i++)
            if (s_seam.paths[i][0]) {
                struct stat st;
                if (stat(s_seam.paths[i], &st) != 0 || st.st_size <= s_seam.synced[i])
                    continue;
                off_t keep = s_seam.synced[i] + rand_r(&seed) % (st.st_size - s_seam.synced[i] + 1);
                assert_int_equal(truncate(s_seam.paths[i], keep), 0);
            }
        s_seam_reset();
        journal = s_open_ok(f, 700);
        assert_true(f->count >= confirmed);
        for (uint32_t i = 0; i < f->count; i++)
            assert_int_equal(f->values[i], i);
        confirmed_total += confirmed;
        recovered_total += f->count;
        journal_close(&journal);
    }
    print_message("40 power losses: %llu records confirmed, %llu recovered\n",
                  (unsigned long long) confirmed_total, (unsigned long long) recovered_total);
    assert_true(confirmed_total > 0);
}

static void test_a_torn_tail_is_cut_at_every_byte(void **state)
{
    fixture_t *f = *state;
    journal_t *journal = s_open_ok(f, 1 << 20);
    size_t ends[20], header = (size_t) journal_written(journal); /* the segment's own record */
    for (uint32_t i = 0; i < 20; i++) {
        s_append(journal, i);
        assert_int_equal(journal_flush(journal, 0), 0);
        ends[i] = (size_t) journal_written(journal);
    }
    journal_close(&journal);
    char path[256], copy[300];
    s_segment_path(f, 1, path, sizeof path);
    snprintf(copy, sizeof copy, "%s.whole", path);
    assert_int_equal(rename(path, copy), 0);
    for (size_t cut = 0; cut <= ends[19]; cut++) {
        char command[700];
        snprintf(command, sizeof command, "rm -f %s/*.log && head -c %zu %s > %s", f->dir, cut,
                 copy, path);
        assert_int_equal(system(command), 0);
        journal = s_open_ok(f, 1 << 20);
        size_t whole = 0;
        while (whole < 20 && ends[whole] <= cut)
            whole++;
        assert_int_equal(f->count, whole);
        journal_close(&journal);
        /* The cut record is gone from the file, not only skipped. */
        struct stat st;
        assert_int_equal(stat(path, &st), 0);
        assert_int_equal((size_t) st.st_size, whole ? ends[whole - 1] : cut >= header ? header : 0);
    }
    unlink(copy);
}

static void test_a_flipped_byte_is_reported_and_repair_keeps_the_rest(void **state)
{
    fixture_t *f = *state;
    journal_t *journal = s_open_ok(f, 1 << 20);
    size_t ends[20];
    for (uint32_t i = 0; i < 20; i++) { /* a write, so a frame, each */
        s_append(journal, i);
        assert_int_equal(journal_flush(journal, 0), 0);
        ends[i] = (size_t) journal_written(journal);
    }
    journal_close(&journal);
    char path[256];
    s_segment_path(f, 1, path, sizeof path);
    int fd = open(path, O_RDWR);
    assert_true(fd >= 0);
    off_t at = (off_t) ends[4] + 10; /* inside record 5 */
    uint8_t byte;
    assert_int_equal(pread(fd, &byte, 1, at), 1);
    byte ^= 0x20;
    assert_int_equal(pwrite(fd, &byte, 1, at), 1);
    close(fd);

    journal_status_t status;
    char error[1024];
    assert_null(s_open_journal(f, JOURNAL_FSYNC_ALWAYS, 1 << 20, &status, error, sizeof error));
    assert_int_equal(status, JOURNAL_CORRUPT);
    char offset[64];
    snprintf(offset, sizeof offset, "offset %zu", ends[4]);
    assert_non_null(strstr(error, path));
    assert_non_null(strstr(error, offset));

    assert_int_equal(journal_repair(f->dir, &s_io, NULL, NULL, error, sizeof error), 0);
    journal = s_open_ok(f, 1 << 20);
    assert_int_equal(f->count, 19);
    for (uint32_t i = 0, v = 0; i < 19; i++, v++) {
        if (v == 5)
            v++;
        assert_int_equal(f->values[i], v);
    }
    journal_close(&journal);
    char damaged[300];
    snprintf(damaged, sizeof damaged, "%s/damaged/0000000000000001.log", f->dir);
    struct stat st;
    assert_int_equal(stat(damaged, &st), 0); /* the original is kept */
}

/*  The records of a write share a frame and its CRC: a torn frame at the
    end goes whole, the frames before stay. A record with a CRC of its own
    (as journals were written before frames) reads as before, among frames. */
static void test_a_frame_is_kept_or_lost_whole_and_single_records_still_read(void **state)
{
    fixture_t *f = *state;
    journal_t *journal = s_open_ok(f, 1 << 20);
    for (uint32_t i = 0; i < 3; i++)
        s_append(journal, i);
    assert_int_equal(journal_flush(journal, 0), 0);
    size_t first = (size_t) journal_written(journal);
    for (uint32_t i = 3; i < 5; i++)
        s_append(journal, i);
    assert_int_equal(journal_flush(journal, 0), 0);
    size_t second = (size_t) journal_written(journal);
    /* One record header per write, not per record: 9 + 5 + (4 + i % 40) each. */
    assert_int_equal(second - first, 9 + (5 + 7) + (5 + 8));
    journal_close(&journal);
    char path[256];
    s_segment_path(f, 1, path, sizeof path);

    /* The second frame torn (cut in its third byte from the end): the first
       stays whole, the second goes with both its records. */
    assert_int_equal(truncate(path, (off_t) second - 3), 0);
    journal = s_open_ok(f, 1 << 20);
    assert_int_equal(f->count, 3);
    for (uint32_t i = 0; i < 3; i++)
        assert_int_equal(f->values[i], i);
    journal_close(&journal);
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal((size_t) st.st_size, first); /* cut away, not only skipped */

    /* A record as written before frames, at the end of the head the open
       above started: read after the frames, in order. */
    s_segment_path(f, 2, path, sizeof path);
    uint8_t single[9 + 6] = {0}; /* crc | length 7 | type 7 | value 42 (as s_append) */
    single[7] = 7;
    single[8] = 7;
    uint32_t value = 42;
    memcpy(single + 9, &value, 4);
    single[9 + 4] = single[9 + 5] = 42;
    uint32_t crc = journal_crc(single + 4, 5 + 6);
    for (int i = 0; i < 4; i++)
        single[i] = (uint8_t) (crc >> (24 - 8 * i));
    int fd = open(path, O_WRONLY | O_APPEND);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, single, sizeof single), (ssize_t) sizeof single);
    close(fd);
    journal = s_open_ok(f, 1 << 20);
    assert_int_equal(f->count, 4);
    for (uint32_t i = 0; i < 3; i++)
        assert_int_equal(f->values[i], i);
    assert_int_equal(f->values[3], 42);
    journal_close(&journal);
}

static void test_a_full_disk_holds_records_back_until_there_is_room(void **state)
{
    fixture_t *f = *state;
    journal_t *journal = s_open_ok(f, 1 << 20);
    s_seam.budget = 100;
    for (uint32_t i = 0; i < 30; i++)
        s_append(journal, i);
    assert_int_equal(journal_flush(journal, 0), ENOSPC);
    assert_int_equal(journal_error(journal), ENOSPC);
    uint64_t confirmed = journal_confirmed(journal);
    assert_true(confirmed < journal_appended(journal));
    /* Within a second nothing is tried again. */
    s_seam.budget = -1;
    assert_int_equal(journal_flush(journal, 500), ENOSPC);
    assert_int_equal(journal_confirmed(journal), confirmed);
    assert_int_equal(journal_flush(journal, 1000), 0);
    assert_int_equal(journal_error(journal), 0);
    assert_int_equal(journal_confirmed(journal), journal_appended(journal));
    journal_close(&journal);
    journal = s_open_ok(f, 1 << 20);
    assert_int_equal(f->count, 30);
    for (uint32_t i = 0; i < 30; i++)
        assert_int_equal(f->values[i], i);
    journal_close(&journal);
}

/*  A snapshot takes the closed segments' place: what replays is the
    snapshot, then the head. */
static void test_a_snapshot_replaces_the_closed_segments(void **state)
{
    fixture_t *f = *state;
    journal_t *journal = s_open_ok(f, 256);
    for (uint32_t i = 0; i < 200; i++)
        s_append(journal, i);
    assert_int_equal(journal_flush(journal, 0), 0);
    assert_true(journal_segment_count(journal) >= 2);
    uint64_t before = journal_disk_bytes(journal);
    assert_int_equal(journal_snapshot_begin(journal), 0);
    for (uint32_t v = 1000; v < 1003; v++) {
        uint8_t *body = journal_snapshot_add(journal, 7, 4);
        assert_non_null(body);
        memcpy(body, &v, 4);
    }
    assert_int_equal(journal_snapshot_end(journal), 0);
    assert_int_equal(journal_segment_count(journal), 2);
    assert_true(journal_disk_bytes(journal) < before / 10);
    s_append(journal, 2000);
    assert_int_equal(journal_flush(journal, 0), 0);
    journal_close(&journal);
    journal = s_open_ok(f, 256);
    assert_int_equal(f->count, 4);
    assert_int_equal(f->values[0], 1000);
    assert_int_equal(f->values[2], 1002);
    assert_int_equal(f->values[3], 2000);
    journal_close(&journal);
}

/*  Five segments or more of records 0..299. */
static void s_fill_segments(fixture_t *f)
{
    journal_t *journal = s_open_ok(f, 512);
    for (uint32_t i = 0; i < 300; i++) {
        s_append(journal, i);
        assert_int_equal(journal_flush(journal, 0), 0);
    }
    journal_close(&journal);
    journal = s_open_ok(f, 1 << 20);
    size_t segments = journal_segment_count(journal) - 1; /* less the new head */
    journal_close(&journal);
    assert_true(segments >= 5);
}

static void s_report(void *ctx, const char *line)
{
    char *out = ctx;
    size_t length = strlen(out);
    snprintf(out + length, 8192 - length, "%s\n", line);
}

/*  Deletes segment `number`; the start is refused naming it; repair says
    it is lost and keeps the rest, which a start then reads (and says so). */
static void s_lose(fixture_t *f, uint32_t number, const char *says)
{
    char path[256], error[3000], report[8192] = "";
    s_segment_path(f, number, path, sizeof path);
    assert_int_equal(unlink(path), 0);
    journal_status_t status;
    assert_null(s_open_journal(f, JOURNAL_FSYNC_ALWAYS, 1 << 20, &status, error, sizeof error));
    assert_int_equal(status, JOURNAL_CORRUPT);
    assert_non_null(strstr(error, path));
    assert_non_null(strstr(error, "missing"));
    assert_non_null(strstr(error, says));
    assert_non_null(strstr(error, "--repair"));
    assert_int_equal(journal_repair(f->dir, &s_io, s_report, report, error, sizeof error), 0);
    assert_non_null(strstr(report, path));
    assert_non_null(strstr(report, "lost"));
    assert_non_null(strstr(report, says));
    journal_t *journal = s_open_ok(f, 1 << 20);
    assert_int_equal(journal_lost_segments(journal), 1);
    journal_close(&journal);
}

static void test_a_missing_middle_segment_is_refused_by_name_and_repair_keeps_the_rest(
    void **state)
{
    fixture_t *f = *state;
    s_fill_segments(f);
    s_lose(f, 3, "records");
    /* Records of segments 1, 2 and 4 on: a run missing, the rest in order. */
    journal_t *journal = s_open_ok(f, 1 << 20);
    assert_true(f->count > 100 && f->count < 300);
    size_t jumps = 0;
    for (size_t i = 1; i < f->count; i++) {
        assert_true(f->values[i] > f->values[i - 1]);
        jumps += f->values[i] != f->values[i - 1] + 1;
    }
    assert_int_equal(jumps, 1);
    assert_int_equal(f->values[0], 0);
    assert_int_equal(f->values[f->count - 1], 299);
    /* It still takes records, and a snapshot forgets the loss. */
    s_append(journal, 300);
    assert_int_equal(journal_flush(journal, 0), 0);
    assert_int_equal(journal_snapshot_begin(journal), 0);
    uint32_t v = 7000;
    memcpy(journal_snapshot_add(journal, 7, 4), &v, 4);
    assert_int_equal(journal_snapshot_end(journal), 0);
    assert_int_equal(journal_lost_segments(journal), 0);
    journal_close(&journal);
    journal = s_open_ok(f, 1 << 20);
    assert_int_equal(journal_lost_segments(journal), 0);
    assert_int_equal(f->count, 1);
    assert_int_equal(f->values[0], 7000);
    journal_close(&journal);
}

static void test_a_missing_oldest_segment_is_refused_by_name_and_repair_keeps_the_rest(
    void **state)
{
    fixture_t *f = *state;
    s_fill_segments(f);
    s_lose(f, 1, "oldest segment the log needs");
    journal_t *journal = s_open_ok(f, 1 << 20);
    assert_true(f->count > 100 && f->count < 300);
    assert_true(f->values[0] > 0);
    assert_int_equal(f->values[f->count - 1], 299);
    journal_close(&journal);
}

/*  After a snapshot the log starts at the snapshot: the segments before it
    are gone on purpose, the snapshot itself is needed; a snapshot that
    failed leaves the log needing what it needed before. */
static void test_a_missing_snapshot_is_refused_and_a_failed_one_changes_nothing(void **state)
{
    fixture_t *f = *state;
    journal_t *journal = s_open_ok(f, 256);
    long long header = (long long) journal_written(journal); /* a new head's own record */
    for (uint32_t i = 0; i < 100; i++)
        s_append(journal, i);
    assert_int_equal(journal_flush(journal, 0), 0);
    /* A snapshot that fails (room for the new head, not for the snapshot):
       nothing changes but a new head, which names the snapshot that never
       came as its base. */
    s_seam.budget = header;
    assert_int_equal(journal_snapshot_begin(journal), 0);
    uint32_t lost = 4000;
    memcpy(journal_snapshot_add(journal, 7, 4), &lost, 4);
    assert_int_equal(journal_snapshot_end(journal), -1);
    s_seam.budget = -1;
    journal_close(&journal);
    journal = s_open_ok(f, 256);
    assert_int_equal(f->count, 100);
    for (uint32_t i = 100; i < 200; i++)
        s_append(journal, i);
    assert_int_equal(journal_flush(journal, 0), 0);
    assert_int_equal(journal_snapshot_begin(journal), 0);
    uint32_t v = 5000;
    memcpy(journal_snapshot_add(journal, 7, 4), &v, 4);
    assert_int_equal(journal_snapshot_end(journal), 0);
    s_append(journal, 6000);
    assert_int_equal(journal_flush(journal, 0), 0);
    journal_close(&journal);
    journal = s_open_ok(f, 256);
    assert_int_equal(f->count, 2);
    journal_close(&journal);
    /* The snapshot is the oldest segment now. */
    char **names;
    size_t count, logs = 0;
    assert_int_equal(journal_posix_io.list(NULL, f->dir, &names, &count), 0);
    uint32_t oldest = UINT32_MAX;
    for (size_t i = 0; i < count; i++) {
        unsigned long long number;
        if (strlen(names[i]) == 20 && sscanf(names[i], "%16llx.log", &number) == 1) {
            logs++;
            if (number < oldest)
                oldest = (uint32_t) number;
        }
        free(names[i]);
    }
    free(names);
    assert_true(logs >= 2);
    s_lose(f, oldest, "oldest segment the log needs");
    journal = s_open_ok(f, 256);
    assert_int_equal(f->count, 1);
    assert_int_equal(f->values[0], 6000);
    journal_close(&journal);
}

/*  A snapshot written in steps, its sync on a thread, while the head takes
    records and closes segments: a restart in the middle replays the old
    log (the heads closed meanwhile name the snapshot that is not there
    yet, and its segment names the real base); once it is in place, the
    snapshot and every head after it. */
static void test_a_snapshot_in_steps_while_heads_close_replays_the_same(void **state)
{
    fixture_t *f = *state;
    journal_config_t config = {.dir = f->dir, .fsync = JOURNAL_FSYNC_ALWAYS,
                               .segment_bytes = 256, .sync_thread = 1};
    journal_status_t status;
    char error[512];
    f->count = 0;
    journal_t *journal = journal_open(&config, s_on_record, f, NULL, &status, error, sizeof error);
    assert_non_null(journal);
    for (uint32_t i = 0; i < 100; i++) {
        s_append(journal, i);
        assert_int_equal(journal_flush(journal, 0), 0);
    }
    assert_int_equal(journal_snapshot_begin(journal), 0);
    assert_int_equal(journal_snapshot_busy(journal), 1);
    uint32_t v = 5000;
    memcpy(journal_snapshot_add(journal, 7, 4), &v, 4);
    for (uint32_t i = 100; i < 150; i++) { /* heads close meanwhile */
        s_append(journal, i);
        assert_int_equal(journal_flush(journal, 0), 0);
    }
    /* A crash now: the snapshot is a .tmp, the old log is whole. */
    char copy[80], command[600];
    snprintf(copy, sizeof copy, "%s-copy", f->dir);
    snprintf(command, sizeof command, "rm -rf %s && cp -r %s %s && rm -f %s/LOCK", copy, f->dir,
             copy, copy);
    assert_int_equal(system(command), 0);
    int rc = journal_snapshot_finish(journal);
    while (rc == 1) {
        struct pollfd wake = {journal_sync_fd(journal), POLLIN, 0};
        assert_true(poll(&wake, 1, 5000) == 1);
        journal_on_synced(journal);
        rc = journal_snapshot_poll(journal);
    }
    assert_int_equal(rc, 0);
    assert_int_equal(journal_snapshot_busy(journal), 0);
    /* A restart at once: the newest closed head was made during the
       snapshot, and names it. */
    journal_close(&journal);
    journal = journal_open(&config, s_on_record, f, NULL, &status, error, sizeof error);
    if (!journal)
        fail_msg("right after the snapshot: %s", error);
    assert_int_equal(f->count, 51);
    assert_int_equal(f->values[0], 5000);
    for (uint32_t i = 150; i < 160; i++) {
        s_append(journal, i);
        assert_int_equal(journal_flush(journal, 0), 0);
    }
    journal_close(&journal);
    f->count = 0;
    journal = journal_open(&config, s_on_record, f, NULL, &status, error, sizeof error);
    if (!journal)
        fail_msg("after the snapshot: %s", error);
    assert_int_equal(f->count, 61); /* the snapshot's record, then 100..159 */
    assert_int_equal(f->values[0], 5000);
    for (uint32_t i = 1; i < 61; i++)
        assert_int_equal(f->values[i], 99 + i);
    journal_close(&journal);

    journal_config_t crashed = config;
    crashed.dir = copy;
    f->count = 0;
    journal = journal_open(&crashed, s_on_record, f, NULL, &status, error, sizeof error);
    if (!journal)
        fail_msg("crashed during the snapshot: %s", error);
    assert_int_equal(f->count, 150);
    for (uint32_t i = 0; i < 150; i++)
        assert_int_equal(f->values[i], i);
    journal_close(&journal);
    snprintf(command, sizeof command, "rm -rf %s", copy);
    assert_int_equal(system(command), 0);
}

static void test_a_second_journal_on_the_directory_is_refused(void **state)
{
    fixture_t *f = *state;
    journal_config_t config = {.dir = f->dir, .fsync = JOURNAL_FSYNC_ALWAYS,
                               .segment_bytes = 4096};
    journal_status_t status;
    char error[512];
    journal_t *first = journal_open(&config, s_on_record, f, NULL, &status, error, sizeof error);
    assert_non_null(first);
    assert_null(journal_open(&config, s_on_record, f, NULL, &status, error, sizeof error));
    assert_int_equal(status, JOURNAL_LOCKED);
    assert_non_null(strstr(error, "another broker"));
    journal_close(&first);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_the_checksum_is_zlibs_crc32),
        cmocka_unit_test_setup_teardown(test_records_come_back_in_order_across_segments, s_setup,
                                        s_teardown),
        cmocka_unit_test_setup_teardown(test_a_power_loss_never_loses_a_synced_record, s_setup,
                                        s_teardown),
        cmocka_unit_test_setup_teardown(test_a_torn_tail_is_cut_at_every_byte, s_setup,
                                        s_teardown),
        cmocka_unit_test_setup_teardown(test_a_flipped_byte_is_reported_and_repair_keeps_the_rest,
                                        s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(
            test_a_frame_is_kept_or_lost_whole_and_single_records_still_read, s_setup,
            s_teardown),
        cmocka_unit_test_setup_teardown(test_a_full_disk_holds_records_back_until_there_is_room,
                                        s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_a_snapshot_replaces_the_closed_segments, s_setup,
                                        s_teardown),
        cmocka_unit_test_setup_teardown(
            test_a_missing_middle_segment_is_refused_by_name_and_repair_keeps_the_rest, s_setup,
            s_teardown),
        cmocka_unit_test_setup_teardown(
            test_a_missing_oldest_segment_is_refused_by_name_and_repair_keeps_the_rest, s_setup,
            s_teardown),
        cmocka_unit_test_setup_teardown(
            test_a_missing_snapshot_is_refused_and_a_failed_one_changes_nothing, s_setup,
            s_teardown),
        cmocka_unit_test_setup_teardown(
            test_a_snapshot_in_steps_while_heads_close_replays_the_same, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_a_second_journal_on_the_directory_is_refused,
                                        s_setup, s_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
