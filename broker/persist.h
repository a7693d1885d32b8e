/*  The journal of a durable broker: every record broker_apply() applies
    (state.h says what each holds) is appended to it, snapshots of the
    whole state keep it bounded, and a restart reads it back through the
    same state_apply(). It knows the journal and the broker's data, never a
    socket. A broker in memory keeps no journal: these calls then answer
    at once. */
#ifndef BROKER_PERSIST_H
#define BROKER_PERSIST_H

#include <stdint.h>

#include "broker.h"
#include "replica_link.h"

/*  Opens the journal in config.data_dir and rebuilds the queues, items and
    producers it holds; the items that were in flight go back to their
    queues (their sessions are gone), by records. Returns 0, or the
    journal_status_t of the failure with the reason in `error`. */
int persist_open(broker_t *self, char *error, size_t error_size);

/*  What a data directory holds: a replica's log (DIR/replica), a journal's
    segments, and the shards of a service (1 + the highest K of a
    directory DIR/shard-K; 0: none). A directory is one broker's, one
    replica's or one service's, never taken for another (its state would
    be missing). */
typedef struct {
    int replica, journal, shards;
} persist_dir_t;

void persist_dir_holds(const char *dir, persist_dir_t *holds);
/*  1 if it holds a service's shards and a broker's journal or a replica's
    log too (one started on the other's directory), with what to do in
    `error`; else 0. */
int persist_dir_mixed(const char *dir, const persist_dir_t *holds, char *error,
                      size_t error_size);
void persist_close(broker_t *self);

/*  The end of a pass: one write of the pass's records, a sync as the mode
    says, a snapshot when the log is mostly garbage, and the SYNCs whose
    puts are now durable answered. */
void persist_pass(broker_t *self);

/*  Writes what is buffered if puts accepted since the last write are in it
    (one write): an item about to be delivered is in the journal first. A
    pass that let no put in mid-dispatch writes nothing more. */
void persist_write(broker_t *self);

/*  The sync thread finished a sync (its descriptor was readable). */
void persist_on_synced(broker_t *self);

/*  A replica of a group (--peers): the records of each pass are one entry
    of the group's log (replica.h), confirms and answers wait for it to be
    committed, a follower applies the group's entries with state_apply, and
    a replica that comes to lead takes over what the records left waiting
    (as a restart does) before it serves. A leader that stops leading
    starts again from the group's log (it may have applied records the
    group never committed). The loop polls persist_fd() (-1: none) at most
    persist_timeout_ms() and then calls persist_run(). */
int persist_fd(const broker_t *self);
int persist_timeout_ms(const broker_t *self);
void persist_run(broker_t *self);
/*  A leader asked to stop hands its lead to the voter that holds the most
    of its log (among those heard lately), and stops once that one leads
    (it steps down, a stop asked: it exits): its clients go on with the
    next leader at once instead of after an election's time-out.
    persist_can_hand_over(): whether there is such a voter.
    persist_hand_over_to_stop(): 1 if it hands the lead over;
    persist_handing_over() then says whether that is still under way (0:
    the voter did not take it: asked `again`, or stop). */
int persist_can_hand_over(broker_t *self);
int persist_hand_over_to_stop(broker_t *self, int again);
int persist_handing_over(const broker_t *self);
/*  --recover-alone: this replica (config's --peers and --node-id, or
    --join and its id) becomes its group's only member, with what its log
    in config->data_dir holds (replica_recover_alone). 0, with what was
    done in `text`; -2 if another process holds the directory, -1 for any
    other reason; why, in `text`. Makes nothing where there is no log. */
int persist_recover_alone(const broker_config_t *config, char *text, size_t text_size);
/*  The leader's client address (HOST:PORT, written in `out`); "" if
    unknown, or this replica. */
const char *persist_leader(broker_t *self, char *out, size_t size);
/*  A replica's place in its group, for the operators (metrics.c) and
    REPLICAS list. */
#define PERSIST_MEMBERS_MAX 16
typedef struct {
    uint64_t node, leader;        /* this replica's id, the leader's (0: none known) */
    const char *role;             /* "leader", "follower", "candidate" or "stopped" */
    uint64_t term, commit_index, applied_index, last_index;
    /*  Connections between replicas closed before libraft read them, by
        cause (replica_link.h): [0] those taken, [1] those made. */
    uint64_t refused[2][LINK_REFUSED_CAUSES];
    size_t count;                 /* the group's members, as this replica knows them */
    struct {
        uint64_t id;
        char address[AQ_ENDPOINT_MAX + 8]; /* as clients reach it */
        const char *kind;         /* "voter", "standby" (catching up) or "spare" */
        int known;                /* the leader knows its match index */
        uint64_t match_index, lag; /* lag: entries of the leader's log it lacks */
        int64_t silent_ms;         /* since it last answered the leader (-1: never) */
    } replicas[PERSIST_MEMBERS_MAX];
} persist_group_t;
/*  0 and *group filled for a replica; -1 for a broker that is not one. */
int persist_group(broker_t *self, persist_group_t *group);

/*  REPLICAS add, remove and transfer (PROTOCOL.md 4.16), on the leader:
    `argument` is the replica's client address (add), or its id or address.
    0: done, `line` is the answer (transfer: asked of the library; the
    lead moves within an election time-out, or stays); PERSIST_PENDING:
    the answer (`line` then, or an error) goes to `asker` with `tag` once
    the group has committed the change or failed to; else an error, whose
    code and text persist_change_error() gives. */
typedef enum { PERSIST_ADD, PERSIST_REMOVE, PERSIST_TRANSFER } persist_change_t;
enum { PERSIST_PENDING = -1, PERSIST_EADDRESS = -2 };
int persist_change(broker_t *self, aq_bytes_t asker, aq_bytes_t tag, persist_change_t change,
                   const char *argument, char *line, size_t line_size);
/*  The protocol's code (400, 409, 421, 500) of persist_change's error,
    and its text. */
int persist_change_error(int error, const char **text);

#endif
