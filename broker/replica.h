/*  One replica of a replicated log, over libraft (the maintained fork of
    canonical's C Raft, 0.22.1; README "Dependencies" says why) and its
    libuv disk and TCP back end. It knows nothing of the broker: it agrees
    with the other replicas on one ordered list of entries (opaque bytes),
    applies each committed entry once, in order, on every replica, through
    the owner's `apply`, and keeps the log bounded by snapshots of the
    owner's state.

    The traps of the library are closed here, each with a test
    (tests/unit/test_replica.c):
    - it never sets TCP_NODELAY, so pipelined entries wait for delayed
      ACKs (4 applies in flight: about 200 entries/s), and its connections
      are neither authenticated nor encrypted: every connection it makes
      or accepts gets TCP_NODELAY, and with a key a handshake and
      encryption, from the transport wrapped around its own
      (replica_link.h);
    - a raft_apply of several buffers replicates only the first one, with
      no error: an entry here is always one buffer;
    - an entry whose length is not a multiple of 8 is refused by the disk
      back end after the library took its buffer (and frees it): every
      entry is framed here as its length, then its bytes, padded to 8;
    - libuv writes to a replica that went away with write(2): SIGPIPE is
      ignored from the first replica_open() (if it was not handled);
    - an InstallSnapshot that arrives while the replica writes a snapshot
      of its own crashes it (legacy.c's takeSnapshotCb clears the pending
      install before reading it): the disk back end is wrapped too, and
      such a message is held back until that write is done;
    - it snapshots every 1 024 entries by default, synchronously: the
      threshold is the owner's (an entry is a batch of records, so the
      default here is far higher), with trailing entries kept so that a
      replica a little behind catches up from the log, not a snapshot.

    The replica runs on a libuv loop of its own, driven from the owner's
    poll loop: poll replica_fd() for reading, at most replica_timeout_ms(),
    then call replica_run(). Nothing here blocks. */
#ifndef BROKER_REPLICA_H
#define BROKER_REPLICA_H

#include <stddef.h>
#include <stdint.h>

#include "replica_link.h"

#define REPLICAS_MAX 7

typedef struct replica replica_t;

/*  What the owner does with the log. Every callback runs inside
    replica_run() (or replica_close()). */
typedef struct {
    /*  A committed entry, on every replica, once, in log order (the
        leader's own entries too). */
    void (*apply)(void *ctx, const uint8_t *data, size_t size);
    /*  The owner's whole state, to put in place of the entries applied so
        far: a buffer from malloc(), which the replica frees. 0, or -1 if
        it cannot (no snapshot this time). */
    int (*snapshot)(void *ctx, uint8_t **data, size_t *size);
    /*  Replaces the owner's state with a snapshot's (a replica that fell
        behind further than the log reaches, or a restart). 0, or -1 if
        the snapshot is not one the owner can read. */
    int (*restore)(void *ctx, const uint8_t *data, size_t size);
    /*  The role, the term or the leader changed, or the leader became
        ready (replica_ready). */
    void (*changed)(void *ctx);
    /*  One of the leader's entries was applied (status 0: `token` is the
        one replica_append() returned) or will never be known to be (not
        0: leadership was lost before it was committed). */
    void (*done)(void *ctx, uint64_t token, int status);
    /*  The change asked with replica_add() or replica_remove() is
        committed (status 0), or failed (a REPLICA_E* code). */
    void (*membership)(void *ctx, int status);
    /*  A line for the log (no time, no newline), or NULL. */
    void (*note)(void *ctx, const char *line);
    void *ctx;
} replica_owner_t;

typedef struct {
    /*  The group at its first start: every replica's replication address,
        HOST:PORT (IPv4 or a name), in the same order on every replica;
        replica i has the id i + 1. None (count 0): this replica joins a
        group that runs (replica_add gave it its id), and waits for the
        leader to send it the log. */
    const char *addresses[REPLICAS_MAX];
    unsigned count;
    uint64_t id;                /* this replica's */
    const char *address;        /* this replica's replication address (NULL: addresses[id - 1]) */
    const char *dir;            /* the log and snapshots; made if missing */
    unsigned election_ms;       /* 0: 500 (a leader lost is replaced in 0.5-1 s) */
    unsigned heartbeat_ms;      /* 0: 100 */
    /*  Entries between snapshots, and kept after one; 0: by bytes, about
        REPLICA_SNAPSHOT_BYTES of log between two snapshots and a quarter of
        that kept, from the entries' mean size (the leader makes one entry
        per pass of its loop: a few hundred bytes at a low rate, hundreds of
        KiB under load; a fixed count would snapshot every second at a low
        rate, a stall each time, or keep gigabytes under load). */
    unsigned snapshot_threshold;
    unsigned snapshot_trailing;
    /*  The broker's CURVE secret key (32 bytes), which every replica of the
        group shares: the connections between replicas are authenticated
        with it and encrypted (replica_link.h). NULL: plain TCP. */
    const uint8_t *key;
    int insecure; /* without a key: connections from anywhere, not only loopback */
} replica_config_t;

/*  Opens the log in config->dir (bootstrapping the group on its first
    start, the same configuration on every replica; a replica that joins
    does not) and starts. NULL, with the
    reason in `error`, if it cannot. */
replica_t *replica_open(const replica_config_t *config, const replica_owner_t *owner,
                        char *error, size_t error_size);

/*  Stops, closes the connections and the log (what was appended stays),
    and frees. */
void replica_close(replica_t **self_p);

/*  The loop's descriptor (readable when the replica has work), how long
    it may wait at most (-1: for ever), and one turn of its work. */
int replica_fd(const replica_t *self);
int replica_timeout_ms(const replica_t *self);
void replica_run(replica_t *self);

/*  Appends one entry (copied) if this replica leads: `done` says when it
    is applied. Returns its token (1, 2, 3... in order), or 0 if this
    replica does not lead (or is out of memory). */
uint64_t replica_append(replica_t *self, const void *data, size_t size);

typedef enum { REPLICA_FOLLOWER, REPLICA_CANDIDATE, REPLICA_LEADER, REPLICA_STOPPED } replica_role_t;

replica_role_t replica_role(replica_t *self);
/*  The leader has applied every entry committed before it led (a barrier
    of its own term is applied): only then may it answer clients. */
int replica_ready(const replica_t *self);
/*  The leader as this replica knows it: its id (0: none known), and its
    replication address if `address` is not NULL ("" if none). */
uint64_t replica_leader(replica_t *self, const char **address);
uint64_t replica_term(replica_t *self);
uint64_t replica_commit_index(replica_t *self);
uint64_t replica_applied_index(replica_t *self);
uint64_t replica_last_index(replica_t *self);
/*  The last entry of this replica's log on its disk (behind
    replica_last_index while writes are under way, or cannot be done). */
uint64_t replica_last_stored(replica_t *self);
/*  How far replica `id`'s log is known to match the leader's: 0, or -1 if
    this replica does not lead (or there is no such replica). */
int replica_match_index(replica_t *self, uint64_t id, uint64_t *index);
/*  How long ago replica `id` last answered this replica's AppendEntries,
    in ms (-1: never): a leader's view of which replicas run and are
    reached. */
int64_t replica_silent_ms(const replica_t *self, uint64_t id);
/*  Snapshots restored (a replica that caught up from one). */
uint64_t replica_restores(const replica_t *self);
/*  Connections between replicas refused for `cause` (replica_link.h):
    those this replica took (made 0) or made (made 1). */
uint64_t replica_refused(const replica_t *self, int made, replica_refusal_t cause);

/* ---------------------------------------------------------- membership */

typedef enum { REPLICA_VOTER, REPLICA_STANDBY, REPLICA_SPARE } replica_kind_t;

typedef struct {
    uint64_t id;
    const char *address;  /* its replication address; valid until the next replica_run() */
    replica_kind_t kind;  /* a voter counts in elections and commits; a standby gets the
                             log (one that was added, until it has caught up) */
} replica_member_t;

/*  Disaster recovery, for a group whose majority is lost for good: the log
    in `dir` (this replica's, which must not be running) gets a
    configuration of this replica alone, a voter, after its last entry
    (libraft's raft_recover). Started again, it leads a group of one with
    what its log holds, committed or not; other replicas are added again
    (replica_add, on empty directories), never started on their old ones.
    0, with what its log held and who was left out in `recovered`; -1, with
    why not in `error` (no log there, one libraft cannot read, or one whose
    group has no replica `id`). Its term goes up by one, so that it leads in
    a term no leader of the group had as far as its log knows. */
typedef struct {
    uint64_t last_index; /* its log's last entry, before the new configuration */
    int was_voter;       /* its role in its last configuration: a voter, or a standby */
    size_t count;        /* the other members of its last configuration, left out */
    struct {
        uint64_t id;
        char address[280]; /* its replication address */
        int voter;
    } left_out[REPLICAS_MAX + 1];
} replica_recovered_t;
int replica_recover_alone(const char *dir, uint64_t id, const char *address,
                          replica_recovered_t *recovered, char *error, size_t error_size);

/*  The group as this replica knows it (its latest configuration, committed
    or not), at most `max` members, in the order the group lists them; the
    number of members. 0 for a replica that joins and has not heard from
    the leader yet. */
size_t replica_members(replica_t *self, replica_member_t *members, size_t max);
/*  Whether this replica is a member of the group it knows (0: it joins and
    has not heard from the leader yet, or it was removed). */
/*  The voters of the group as this replica knows it; whether this replica
    is one, in `*votes`. */
unsigned replica_voters(replica_t *self, int *votes);
int replica_is_member(replica_t *self);
/*  Grows with every change of the group this replica learns of (0: it
    knows of none yet). */
uint64_t replica_configuration_version(replica_t *self);
/*  Changes the group, on the leader; one change at a time. Each returns 0
    or a REPLICA_E* code at once; add and remove then call
    owner.membership once the change is committed or failed.
    - add: a replica at `address` (its replication address) joins with the
      new id put in *id, as a standby: the leader sends it the log, and
      makes it a voter once it has caught up;
    - remove: the replica `id` leaves the group (not the leader: hand over
      first);
    - transfer: the replica *id (0: the one most up to date, whose id is
      put in *id) is asked to lead; this one stops leading once it does
      (or, if it does not take over within an election time-out, goes
      on). */
int replica_add(replica_t *self, const char *address, uint64_t *id);
int replica_remove(replica_t *self, uint64_t id);
int replica_transfer(replica_t *self, uint64_t *id);
/*  Whether a transfer asked for is under way (the library takes no entry
    meanwhile). */
int replica_transferring(const replica_t *self);

enum {
    REPLICA_ENOTLEADER = 1, /* this replica does not lead (or is not ready yet) */
    REPLICA_EBUSY,          /* another change of the group is under way */
    REPLICA_ENOID,          /* no such replica (or not a voter, for transfer) */
    REPLICA_EDUPLICATE,     /* a replica at that address is in the group already */
    REPLICA_ELEADER,        /* the replica to remove leads */
    REPLICA_ELEADS,         /* the replica to hand the lead to leads already */
    REPLICA_ELOST,          /* leadership was lost before the change was committed */
    REPLICA_ENOMEM,
    REPLICA_EFAILED,        /* the library refused it */
};
/*  What a REPLICA_E* code means, in a few words. */
const char *replica_strerror(int code);

#endif
