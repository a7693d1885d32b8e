/*  One replica of a replicated log over libraft: replica.h. */
#define _GNU_SOURCE
#include "replica.h"

#include <errno.h>
#include <fcntl.h>
#include <raft.h>
#include <raft/uv.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#include "replica_link.h"

#define REPLICA_DEFAULT_ELECTION_MS 500
#define REPLICA_DEFAULT_HEARTBEAT_MS 100
#define REPLICA_SNAPSHOT_BYTES (64u << 20)
#define REPLICA_SNAPSHOT_MIN 1024
#define REPLICA_SNAPSHOT_MAX 262144
#define REPLICA_SIZES_EVERY 256 /* entries applied between two looks at their size */
#define REPLICA_INSTALL_TIMEOUT_MS 10000
#define REPLICA_CONNECT_RETRY_MS 250 /* libraft's 1 s left a replica started again unheard */
#define REPLICA_HEARD 16          /* candidates remembered (s_heard) */
#define REPLICA_HEARD_ELECTIONS 4 /* election time-outs what one says holds for */
#define ENTRY_HEADER 8 /* an entry's length, big-endian, before its bytes */

/*  A replica heard from lately: when, and (a candidate) where its log
    ended. */
typedef struct {
    raft_id id;
    raft_index last;
    int64_t at_ms;
} heard_t;

struct replica {
    uv_loop_t loop;
    /*  The connections to the other replicas (replica_link.h). */
    replica_link_t *link;
    /*  raft talks to `io_outer`, which hands every call to raft_uv
        (`io`), except that an InstallSnapshot arriving while a snapshot of
        this replica's own is being written is held back until that write
        is done: 0.22.1 crashes on it otherwise (legacy.c takeSnapshotCb
        clears snapshot_pending before reading it). */
    struct raft_io io_outer;
    struct raft_io io;
    raft_io_recv_cb received;
    raft_io_close_cb io_closed;
    int own_snapshot_writing;
    struct held_message *held, **held_tail;
    /*  A TimeoutNow (the leader hands this replica its lead) that came
        while entries it was sent were still being written: 0.22.1 drops it
        then (recv_timeout_now.c), and the leader, which counted them as
        held, never sends it again. Given to raft once they are written,
        unless an election time-out has passed (the leader gave up). */
    struct raft_message timeout_now;
    char *timeout_now_address;
    int64_t timeout_now_ms; /* when it came; 0: none held */
    /*  When replica_run last ended; when it ran again after more than an
        election time-out without running (stopped by SIGSTOP, or frozen),
        and how long that was. A TimeoutNow read within an election
        time-out of that (what came meanwhile, which a keyed link passes
        on a turn later) may be one its leader gave up long ago: a
        transfer to this replica that failed, and was said to. Taking it
        would take the lead from a healthy leader, unasked. */
    int64_t run_ended_ms, resumed_ms, not_run_ms;
    struct raft_fsm fsm;
    struct raft raft;
    replica_owner_t owner;
    int loop_ready, io_ready, raft_ready, raft_closed;
    uint64_t next_token;
    /*  A new leader's barrier: once applied, every entry committed before
        it led is applied too. */
    struct raft_barrier barrier;
    int barrier_busy;
    raft_term barrier_term;
    int ready;
    /*  What the owner was last told (changed). */
    replica_role_t told_role;
    uint64_t told_leader;
    uint64_t told_term;
    int told_ready;
    uint64_t restores;
    /*  Snapshots by bytes (config snapshot_threshold 0): the mean size of
        the entries applied, over the last REPLICA_SIZES_EVERY. */
    int by_bytes;
    uint64_t sized_bytes, sized_entries;
    /*  The one change of the group under way (replica_add: two steps,
        added as a spare, then made a standby), and the leader's own
        promotion of a standby that caught up. */
    struct raft_change change;
    enum { CHANGE_NONE, CHANGE_ADD, CHANGE_STANDBY, CHANGE_REMOVE, CHANGE_PROMOTE } changing;
    uint64_t change_id;
    int64_t promote_after_ms; /* a promotion that failed is tried again after this */
    struct raft_transfer transfer;
    int transferring;
    /*  A log that started empty here (a new replica, or one whose
        directory was wiped and that was started again under its old id)
        takes no part in elections while the group may have committed
        entries it lacks: a wiped voter's vote could elect a leader without
        what it had acknowledged. Until a leader has told it what the group
        committed (beyond the first entry), it votes only for a candidate
        whose log ends no further than its own (s_abstains); once told, for
        none until it holds that much. */
    enum { VOTES, ABSTAINS_LISTENING, ABSTAINS_CATCHING_UP } voting;
    uint64_t catch_up_to;
    /*  On the leader: a replica that answers that its log ends below what
        it had acknowledged (its directory wiped, started again under its
        old id). The library would never send it that log again (it takes
        the answer for a stale one): the lead is handed to another voter,
        whose view of every replica starts afresh. Once a term. */
    uint64_t lost_log_id, lost_log_end, lost_log_match;
    uint64_t lost_log_term;
    /*  The candidates heard lately, and where their logs ended: a new
        group's first election takes every voter heard holding nothing
        (s_first_election_refused). Said in the log naming the voter not
        heard, again when that changes or a minute later. */
    heard_t heard[REPLICA_HEARD];
    raft_id refused_for; /* the voter not heard, last said; 0: none */
    int64_t refused_said_ms;
    /*  The only voter of its group (after --recover-alone): messages from
        replicas outside it are dropped (s_outside_alone); the last one
        said in the log, and when. */
    raft_id outsider_said;
    int64_t outsider_said_ms;
    /*  A replica that called itself by another address than this one's
        configuration has for it (s_link_check); said in the log a minute
        apart. If no connection this one made to where its configuration
        has it ever got through (`reached`), it takes no vote to lead
        (s_cannot_lead). */
    raft_id misnamed;
    int64_t misnamed_said_ms, lead_said_ms;
    raft_id misnamed_said, lead_said;
    heard_t reached[REPLICAS_MAX + 1];
    /*  When each replica last answered an AppendEntries (a leader's view:
        one that answers runs and is reached). */
    heard_t answered[REPLICAS_MAX + 1];
};

/*  One entry on its way: the leader's token for it. */
typedef struct {
    struct raft_apply request;
    replica_t *self;
    uint64_t token;
} appending_t;

/* ----------------------------------------------------------- the disk */

/*  An InstallSnapshot held back, with its sender's address copied (the
    connection that had it may close meanwhile). */
typedef struct held_message {
    struct held_message *next;
    struct raft_message message;
    char *address;
} held_message_t;

/*  A snapshot of a replica's own being written: the request, its replica
    and the library's callback (the request's `data` is the library's). */
typedef struct own_put {
    struct own_put *next;
    struct raft_io_snapshot_put *request;
    replica_t *self;
    raft_io_snapshot_put_cb cb;
} own_put_t;

static own_put_t *s_own_puts; /* every replica of this process, on its loop's thread */

static replica_t *s_of_io(struct raft_io *io)
{
    return (replica_t *) ((char *) io - offsetof(replica_t, io));
}

static int s_io_init(struct raft_io *outer, raft_id id, const char *address);

/*  The replica of either back end: the library calls the outer one's
    functions with the inner one at times (tickCb: r->io->time(io)). */
static replica_t *s_self(struct raft_io *io)
{
    return io->init == s_io_init ? io->impl : s_of_io(io);
}

static void s_forget_message(struct raft_message *message)
{
    raft_configuration_close(&message->install_snapshot.conf);
    raft_free(message->install_snapshot.data.base);
}

static void s_note(replica_t *self, const char *format, ...)
    __attribute__((format(printf, 2, 3)));
static void s_note(replica_t *self, const char *format, ...)
{
    char line[300];
    va_list args;
    va_start(args, format);
    vsnprintf(line, sizeof line, format, args);
    va_end(args);
    if (self->owner.note)
        self->owner.note(self->owner.ctx, line);
}

/*  While a log that started empty abstains: 1 if the message is a vote to
    drop. A leader's word says what the group has committed. Until one
    says more than its first entry, it votes only for a candidate whose log
    ends no further than its own: as new (a new group's), or holding what
    a leader sent it (a new group's first leader, gone before its followers
    heard its barrier committed: without that, neither of them could ever
    be elected). */
static int s_abstains(replica_t *self, const struct raft_message *message)
{
    uint64_t committed = 0;
    if (message->type == RAFT_REQUEST_VOTE) { /* pre-votes too */
        uint64_t own = raft_last_index(&self->raft);
        return self->voting == ABSTAINS_CATCHING_UP
               || message->request_vote.last_log_index > (own > 1 ? own : 1);
    }
    if (message->type == RAFT_APPEND_ENTRIES)
        committed = message->append_entries.leader_commit;
    else if (message->type == RAFT_INSTALL_SNAPSHOT)
        committed = message->install_snapshot.last_index;
    if (committed <= 1)
        return 0; /* a new group's leader, or one whose first barrier is not committed yet */
    if (committed > self->catch_up_to)
        self->catch_up_to = committed;
    if (self->voting == ABSTAINS_LISTENING) {
        self->voting = ABSTAINS_CATCHING_UP;
        /* A new group's first entries (its list, its first leader's
           barrier) are no news: said only past them. */
        if (self->catch_up_to > 2)
            s_note(self, "its log started empty while its group runs (a new replica, or its "
                         "directory wiped): it takes no part in elections until it holds the "
                         "%llu entries the group had committed",
                   (unsigned long long) self->catch_up_to);
    }
    return 0;
}

static int64_t s_now_ms(void);

/*  Whether a note about replica `id` is to be said: 1 when it is about
    another replica than the last one said (`*said`), or a minute has gone
    by since (`*said_ms`), which it then records. */
static int s_say_again(raft_id *said, int64_t *said_ms, raft_id id, int64_t now)
{
    if (id == *said && now - *said_ms < 60000)
        return 0;
    *said = id;
    *said_ms = now;
    return 1;
}

/*  Voters in `configuration`; whether `id` is one in `*votes`. */
static unsigned s_voters(const struct raft_configuration *configuration, raft_id id, int *votes)
{
    unsigned voters = 0;
    *votes = 0;
    for (unsigned i = 0; i < configuration->n; i++) {
        voters += configuration->servers[i].role == RAFT_VOTER;
        *votes |= configuration->servers[i].id == id
                  && configuration->servers[i].role == RAFT_VOTER;
    }
    return voters;
}

/*  Notes that candidate `id` asked for votes with a log ending at `last`. */
/*  Replica `id`'s slot of `slots`: its own, or the oldest, made its. */
static heard_t *s_heard_slot(heard_t *slots, size_t count, raft_id id)
{
    size_t slot = 0;
    for (size_t i = 1; i < count; i++)
        if (slots[slot].id != id && (slots[i].id == id || slots[i].at_ms < slots[slot].at_ms))
            slot = i;
    slots[slot].id = id;
    return &slots[slot];
}

/*  Replica `id`'s slot of `slots`, or NULL if it has none (never heard,
    or its slot since given to another). */
static const heard_t *s_heard_find(const heard_t *slots, size_t count, raft_id id)
{
    for (size_t i = 0; i < count; i++)
        if (slots[i].id == id)
            return &slots[i];
    return NULL;
}

static void s_heard(replica_t *self, raft_id id, raft_index last, int64_t now)
{
    heard_t *heard = s_heard_slot(self->heard, REPLICA_HEARD, id);
    heard->last = last;
    heard->at_ms = now;
}

/*  1 if a vote asked by a candidate that holds nothing (its log ends at
    the group's first entry) is to be dropped. Such a candidate asks for a
    new group's first election, which loses nothing only if no voter holds
    anything either. Those that answer "nothing" are not enough: a voter
    whose directory was wiped holds nothing yet may have acknowledged what
    the group committed, and one lagging since the group's first start
    holds nothing too; between them they are a majority of three. So the
    vote is given only while every other voter has been heard, within
    REPLICA_HEARD_ELECTIONS election time-outs, asking for votes with
    nothing in its log: a new group elects its first leader once all its
    replicas run (each asks in turn, as no leader speaks). */
static int s_first_election_refused(replica_t *self, const struct raft_message *message)
{
    const struct raft_request_vote *ask = &message->request_vote;
    int64_t now = s_now_ms();
    s_heard(self, ask->candidate_id, ask->last_log_index, now);
    if (ask->last_log_index > 1)
        return 0;
    int64_t since = now - (int64_t) REPLICA_HEARD_ELECTIONS * self->raft.election_timeout;
    const struct raft_configuration *configuration = &self->raft.configuration;
    for (unsigned i = 0; i < configuration->n; i++) {
        raft_id id = configuration->servers[i].id;
        if (configuration->servers[i].role != RAFT_VOTER || id == self->raft.id)
            continue;
        int holds_nothing = 0;
        for (int k = 0; k < REPLICA_HEARD; k++)
            if (self->heard[k].id == id)
                holds_nothing = self->heard[k].at_ms >= since && self->heard[k].last <= 1;
        if (holds_nothing)
            continue;
        if (s_say_again(&self->refused_for, &self->refused_said_ms, id, now))
            s_note(self,
                   "replica %llu, whose log holds nothing, asks for a new group's first "
                   "election: no vote until every replica is heard holding nothing too "
                   "(replica %llu is not: down, or holding what the group committed)",
                   (unsigned long long) ask->candidate_id, (unsigned long long) id);
        return 1;
    }
    self->refused_for = 0;
    return 0;
}

/*  On the leader: notes a replica whose answer says it lost entries it
    had acknowledged. */
static void s_lost_log(replica_t *self, const struct raft_message *message)
{
    const struct raft_append_entries_result *result = &message->append_entries_result;
    raft_index match = 0;
    if (!result->rejected || result->term != raft_current_term(&self->raft)
        || raft_state(&self->raft) != RAFT_LEADER
        || raft_match_index(&self->raft, message->server_id, &match) != 0
        || result->last_log_index >= match
        || self->lost_log_term == raft_current_term(&self->raft))
        return;
    self->lost_log_id = message->server_id;
    self->lost_log_end = result->last_log_index;
    self->lost_log_match = match;
}

/*  1 if `message` comes from a replica outside the group while this one
    is its only voter (a group that went on alone, --recover-alone, whose
    left-out replicas were started again on their old directories): they
    may elect one of them in a later term, whose entries conflict with
    what this one committed, and libraft 0.22.1 then frees the entries
    twice and asserts (legacy.c recvCb after recv_append_entries.c's err
    path). Nothing from outside a group of one is ever needed: a replica
    added is in its configuration first. */
static int s_outside_alone(replica_t *self, const struct raft_message *message)
{
    const struct raft_configuration *configuration = &self->raft.configuration;
    int alone;
    if (s_voters(configuration, self->raft.id, &alone) != 1 || !alone)
        return 0;
    for (unsigned i = 0; i < configuration->n; i++)
        if (configuration->servers[i].id == message->server_id)
            return 0;
    if (s_say_again(&self->outsider_said, &self->outsider_said_ms, message->server_id,
                    s_now_ms()))
        s_note(self, "replica %llu (%s) is not in this group, whose only voter this replica is "
                     "(it went on alone?): what it sends is ignored. Wipe its directory and add "
                     "it back (asyncq replica add, then --join)",
               (unsigned long long) message->server_id,
               message->server_address ? message->server_address : "?");
    return 1;
}

/*  Whether a replica that connects is the one this replica's configuration
    knows by its id (replica_link_peers_t): refused if it names itself by
    this replica's id, or at the address of another replica. Replicas
    started with --peers in different orders would otherwise each take
    another for itself (votes and answers counted for the wrong replica, a
    majority that is not one). One at another address than the
    configuration has for its id (a --peers spelled otherwise, or
    mistyped) is taken, and said; s_cannot_lead keeps this one from
    leading a group it cannot reach. */
static int s_link_check(void *ctx, uint64_t id, const char *address, char *why, size_t size)
{
    replica_t *self = ctx;
    const struct raft_configuration *configuration = &self->raft.configuration;
    const char *known = NULL; /* where the configuration has it */
    if (id == self->raft.id) {
        snprintf(why, size, "replica %llu (%s) says it is replica %llu, as this one is: every "
                 "replica needs the same --peers, in the same order, and its own --node-id",
                 (unsigned long long) id, address, (unsigned long long) id);
        return -1;
    }
    for (unsigned i = 0; i < configuration->n; i++) {
        const struct raft_server *server = &configuration->servers[i];
        if (server->id == id)
            known = server->address;
        else if (strcmp(server->address, address) == 0) {
            snprintf(why, size, "the replica at %s says it is replica %llu, where this one's "
                     "group has replica %llu: every replica needs the same --peers, in the same "
                     "order", address, (unsigned long long) id,
                     (unsigned long long) server->id);
            return -1;
        }
    }
    if (known && strcmp(known, address) != 0) {
        self->misnamed = id;
        if (s_say_again(&self->misnamed_said, &self->misnamed_said_ms, id, s_now_ms()))
            s_note(self, "replica %llu calls itself %s, where this one's group has it at %s: "
                         "every replica needs the same --peers, spelled the same",
                   (unsigned long long) id, address, known);
    }
    return 0;
}

/*  A connection this replica made to replica `id` got through: when, as
    a slot of `reached` (the oldest given up for a new id). */
static void s_link_reached(void *ctx, uint64_t id)
{
    replica_t *self = ctx;
    s_heard_slot(self->reached, REPLICAS_MAX + 1, id)->at_ms = s_now_ms();
}

/*  The ids of this replica's configuration, at most `max`. */
static unsigned s_link_ids(void *ctx, uint64_t *ids, unsigned max)
{
    replica_t *self = ctx;
    const struct raft_configuration *configuration = &self->raft.configuration;
    unsigned count = 0;
    for (unsigned i = 0; i < configuration->n && count < max; i++)
        ids[count++] = configuration->servers[i].id;
    return count;
}

/*  A vote for this replica while a replica has called itself by another
    address than this one's configuration has for it, and no connection
    this one made there ever got through (its --peers misspelled it at the
    group's first start): dropped, as it would lead a group without that
    replica (the others, which reach it, elect one of themselves). One
    that reaches it there (the same host spelled otherwise) leads as
    ever. */
static int s_cannot_lead(replica_t *self, const struct raft_message *message)
{
    if (message->type != RAFT_REQUEST_VOTE_RESULT || !self->misnamed
        || s_heard_find(self->reached, REPLICAS_MAX + 1, self->misnamed))
        return 0;
    if (s_say_again(&self->lead_said, &self->lead_said_ms, self->misnamed, s_now_ms()))
        s_note(self, "it takes no vote to lead: replica %llu answers from another address than "
                     "its --peers has, where it cannot reach it. Start it again with the "
                     "others' --peers on an empty directory (its log keeps the list it first "
                     "started with); it catches up from the group",
               (unsigned long long) self->misnamed);
    return 1;
}

/*  Frees what a message dropped before libraft read it holds. */
static void s_drop_message(struct raft_message *message)
{
    if (message->type == RAFT_INSTALL_SNAPSHOT)
        s_forget_message(message);
    else if (message->type == RAFT_APPEND_ENTRIES && message->append_entries.n_entries) {
        raft_free(message->append_entries.entries[0].batch); /* one batch, as recvCb frees */
        raft_free(message->append_entries.entries);
    }
}

static void s_io_received(struct raft_io *io, struct raft_message *message)
{
    replica_t *self = s_of_io(io);
    if (s_outside_alone(self, message)) {
        s_drop_message(message);
        return;
    }
    if (self->voting != VOTES && s_abstains(self, message))
        return; /* a RequestVote holds nothing to free */
    if (s_cannot_lead(self, message))
        return; /* nor does its result */
    if (message->type == RAFT_REQUEST_VOTE && s_first_election_refused(self, message))
        return;
    if (message->type == RAFT_TIMEOUT_NOW && self->resumed_ms
        && s_now_ms() - self->resumed_ms < (int64_t) self->raft.election_timeout) {
        s_note(self, "replica %llu: a request to take the lead from replica %llu came while "
                     "this one did not run (%lld ms): not taken, as its leader has given it up "
                     "(asyncq replica transfer asks again)",
               (unsigned long long) self->raft.id, (unsigned long long) message->server_id,
               (long long) self->not_run_ms);
        return; /* it holds nothing to free */
    }
    if (message->type == RAFT_TIMEOUT_NOW && self->raft.last_stored < raft_last_index(&self->raft)) {
        char *address = message->server_address ? strdup(message->server_address) : NULL;
        if (message->server_address && !address)
            return; /* as if lost: the leader gives up, and asks again */
        free(self->timeout_now_address);
        self->timeout_now = *message;
        self->timeout_now.server_address = self->timeout_now_address = address;
        self->timeout_now_ms = s_now_ms();
        return;
    }
    if (message->type == RAFT_APPEND_ENTRIES_RESULT) {
        s_lost_log(self, message);
        s_heard_slot(self->answered, REPLICAS_MAX + 1, message->server_id)->at_ms = s_now_ms();
    }
    if (message->type != RAFT_INSTALL_SNAPSHOT || !self->own_snapshot_writing) {
        self->received(&self->io_outer, message);
        return;
    }
    held_message_t *held = calloc(1, sizeof *held);
    char *address = message->server_address ? strdup(message->server_address) : NULL;
    if (!held || (message->server_address && !address)) {
        free(held);
        free(address);
        s_forget_message(message); /* as if lost: the leader sends it again */
        return;
    }
    held->message = *message;
    held->address = address;
    held->message.server_address = address;
    *self->held_tail = held;
    self->held_tail = &held->next;
}

/*  Hands over what was held back, now that no snapshot of its own is being
    written. */
static void s_io_release(replica_t *self)
{
    while (self->held && !self->own_snapshot_writing) {
        held_message_t *held = self->held;
        self->held = held->next;
        if (!self->held)
            self->held_tail = &self->held;
        self->received(&self->io_outer, &held->message);
        free(held->address);
        free(held);
    }
}

static void s_io_forget_held(replica_t *self)
{
    while (self->held) {
        held_message_t *held = self->held;
        self->held = held->next;
        s_forget_message(&held->message);
        free(held->address);
        free(held);
    }
    self->held_tail = &self->held;
}

static void s_io_own_put_done(struct raft_io_snapshot_put *request, int status)
{
    own_put_t **at = &s_own_puts;
    while (*at && (*at)->request != request)
        at = &(*at)->next;
    own_put_t *own = *at;
    if (!own)
        return; /* cannot be: every own put is in the list */
    *at = own->next;
    replica_t *self = own->self;
    raft_io_snapshot_put_cb cb = own->cb;
    free(own);
    cb(request, status);
    self->own_snapshot_writing--;
    s_io_release(self);
}

static int s_io_snapshot_put(struct raft_io *outer, unsigned trailing,
                             struct raft_io_snapshot_put *request,
                             const struct raft_snapshot *snapshot, raft_io_snapshot_put_cb cb)
{
    replica_t *self = s_self(outer);
    if (trailing == 0) /* an installed snapshot: not one of its own */
        return self->io.snapshot_put(&self->io, trailing, request, snapshot, cb);
    own_put_t *own = calloc(1, sizeof *own);
    if (!own)
        return RAFT_NOMEM;
    /* Counted before the call: its callback may come from inside it. */
    *own = (own_put_t){s_own_puts, request, self, cb};
    s_own_puts = own;
    self->own_snapshot_writing++;
    int rv = self->io.snapshot_put(&self->io, trailing, request, snapshot, s_io_own_put_done);
    if (rv) {
        s_own_puts = own->next;
        free(own);
        self->own_snapshot_writing--;
        s_io_release(self);
    }
    return rv;
}

static int s_io_start(struct raft_io *outer, unsigned msecs, raft_io_tick_cb tick,
                      raft_io_recv_cb recv)
{
    replica_t *self = s_self(outer);
    self->received = recv;
    self->io.data = outer->data; /* the library finds itself there */
    return self->io.start(&self->io, msecs, tick, s_io_received);
}

static void s_io_inner_closed(struct raft_io *io)
{
    replica_t *self = s_of_io(io);
    s_io_forget_held(self);
    self->io_closed(&self->io_outer);
}

static void s_io_close(struct raft_io *outer, raft_io_close_cb cb)
{
    replica_t *self = s_self(outer);
    self->io_closed = cb;
    self->io.close(&self->io, s_io_inner_closed);
}

#define S_IO_FORWARD(name, params, args) \
    static int s_io_##name params { replica_t *self = s_self(outer); \
        int rv = self->io.name args; \
        if (rv && outer != &self->io) \
            memcpy(outer->errmsg, self->io.errmsg, sizeof outer->errmsg); \
        return rv; }

S_IO_FORWARD(init, (struct raft_io *outer, raft_id id, const char *address),
             (&self->io, id, address))
S_IO_FORWARD(load, (struct raft_io *outer, raft_term *term, raft_id *voted_for,
                    struct raft_snapshot **snapshot, raft_index *start_index,
                    struct raft_entry *entries[], size_t *n_entries),
             (&self->io, term, voted_for, snapshot, start_index, entries, n_entries))
S_IO_FORWARD(bootstrap, (struct raft_io *outer, const struct raft_configuration *conf),
             (&self->io, conf))
S_IO_FORWARD(recover, (struct raft_io *outer, const struct raft_configuration *conf),
             (&self->io, conf))
S_IO_FORWARD(set_term, (struct raft_io *outer, raft_term term), (&self->io, term))
S_IO_FORWARD(set_vote, (struct raft_io *outer, raft_id server_id), (&self->io, server_id))
S_IO_FORWARD(send, (struct raft_io *outer, struct raft_io_send *request,
                    const struct raft_message *message, raft_io_send_cb cb),
             (&self->io, request, message, cb))
S_IO_FORWARD(append, (struct raft_io *outer, struct raft_io_append *request,
                      const struct raft_entry entries[], unsigned n, raft_io_append_cb cb),
             (&self->io, request, entries, n, cb))
S_IO_FORWARD(truncate, (struct raft_io *outer, raft_index index), (&self->io, index))
S_IO_FORWARD(snapshot_get, (struct raft_io *outer, struct raft_io_snapshot_get *request,
                            raft_io_snapshot_get_cb cb),
             (&self->io, request, cb))

/*  The library reads the disk's free capacity from the back end it was
    given right after asking the time (every event): raft_uv keeps it in
    its own struct. */
static raft_time s_io_time(struct raft_io *outer)
{
    replica_t *self = s_self(outer);
    self->io_outer.capacity = self->io.capacity;
    return self->io.time(&self->io);
}

static int s_io_random(struct raft_io *outer, int min, int max)
{
    replica_t *self = s_self(outer);
    return self->io.random(&self->io, min, max);
}

/*  The library's disk and network back end, with the InstallSnapshot that
    comes during a snapshot of this replica's own held back. */
static void s_io_wrap(replica_t *self)
{
    struct raft_io *outer = &self->io_outer;
    outer->version = self->io.version;
    outer->capacity = self->io.capacity;
    outer->impl = self;
    outer->init = s_io_init;
    outer->close = s_io_close;
    outer->load = s_io_load;
    outer->start = s_io_start;
    outer->bootstrap = s_io_bootstrap;
    outer->recover = s_io_recover;
    outer->set_term = s_io_set_term;
    outer->set_vote = s_io_set_vote;
    outer->send = s_io_send;
    outer->append = s_io_append;
    outer->truncate = s_io_truncate;
    outer->snapshot_put = s_io_snapshot_put;
    outer->snapshot_get = s_io_snapshot_get;
    outer->time = s_io_time;
    outer->random = s_io_random;
    self->held_tail = &self->held;
}

/* ---------------------------------------------------- the state machine */

/*  About REPLICA_SNAPSHOT_BYTES of log between two snapshots, a quarter of
    it kept after one, for entries of `mean` bytes. */
static void s_space_snapshots(replica_t *self, uint64_t mean)
{
    uint64_t entries = REPLICA_SNAPSHOT_BYTES / (mean ? mean : 1);
    unsigned threshold = entries < REPLICA_SNAPSHOT_MIN   ? REPLICA_SNAPSHOT_MIN
                         : entries > REPLICA_SNAPSHOT_MAX ? REPLICA_SNAPSHOT_MAX
                                                          : (unsigned) entries;
    raft_set_snapshot_threshold(&self->raft, threshold);
    raft_set_snapshot_trailing(&self->raft, threshold / 4);
}

static int s_fsm_apply(struct raft_fsm *fsm, const struct raft_buffer *buffer, void **result)
{
    replica_t *self = fsm->data;
    *result = NULL;
    const uint8_t *bytes = buffer->base;
    uint64_t size = 0;
    if (buffer->len < ENTRY_HEADER)
        return RAFT_MALFORMED;
    for (int i = 0; i < ENTRY_HEADER; i++)
        size = size << 8 | bytes[i];
    if (size > buffer->len - ENTRY_HEADER)
        return RAFT_MALFORMED;
    self->owner.apply(self->owner.ctx, bytes + ENTRY_HEADER, (size_t) size);
    if (self->by_bytes) {
        self->sized_bytes += buffer->len;
        if (++self->sized_entries == REPLICA_SIZES_EVERY) {
            s_space_snapshots(self, self->sized_bytes / self->sized_entries);
            self->sized_bytes = self->sized_entries = 0;
        }
    }
    return 0;
}

static int s_fsm_snapshot(struct raft_fsm *fsm, struct raft_buffer *buffers[], unsigned *count)
{
    replica_t *self = fsm->data;
    uint8_t *data = NULL;
    size_t size = 0;
    if (self->owner.snapshot(self->owner.ctx, &data, &size))
        return RAFT_NOMEM;
    *buffers = malloc(sizeof **buffers);
    if (!*buffers) {
        free(data);
        return RAFT_NOMEM;
    }
    (*buffers)[0].base = data;
    (*buffers)[0].len = size;
    *count = 1;
    return 0;
}

/*  With snapshot_finalize set, the buffers stay the owner's: freed here. */
static int s_fsm_snapshot_finalize(struct raft_fsm *fsm, struct raft_buffer *buffers[],
                                   unsigned *count)
{
    (void) fsm;
    if (*buffers) {
        for (unsigned i = 0; i < *count; i++)
            free((*buffers)[i].base);
        free(*buffers);
    }
    *buffers = NULL;
    *count = 0;
    return 0;
}

static int s_fsm_restore(struct raft_fsm *fsm, struct raft_buffer *buffer)
{
    replica_t *self = fsm->data;
    if (self->owner.restore(self->owner.ctx, buffer->base, buffer->len))
        return RAFT_MALFORMED;
    raft_free(buffer->base);
    self->restores++;
    return 0;
}

/* ------------------------------------------------------------ the role */

static void s_check(replica_t *self);
static void s_promote(replica_t *self);
static void s_hand_over_lost_log(replica_t *self);

static void s_barrier_applied(struct raft_barrier *request, int status)
{
    replica_t *self = request->data;
    self->barrier_busy = 0;
    if (status == 0 && raft_state(&self->raft) == RAFT_LEADER
        && raft_current_term(&self->raft) == self->barrier_term)
        self->ready = 1;
    s_check(self);
}

/*  Tells the owner what changed, and starts a new leader's barrier. */
static void s_check(replica_t *self)
{
    replica_role_t role = replica_role(self);
    uint64_t term = raft_current_term(&self->raft);
    if (role != REPLICA_LEADER || (self->ready && term != self->barrier_term))
        self->ready = 0;
    if (role == REPLICA_LEADER && !self->ready && !self->barrier_busy) {
        self->barrier.data = self;
        self->barrier_term = term;
        if (raft_barrier(&self->raft, &self->barrier, s_barrier_applied) == 0)
            self->barrier_busy = 1;
    }
    if (self->voting == ABSTAINS_LISTENING && role == REPLICA_LEADER)
        self->voting = VOTES; /* a new group's first leader: its log is the group's */
    if (self->voting == ABSTAINS_CATCHING_UP && replica_last_stored(self) >= self->catch_up_to) {
        self->voting = VOTES;
        if (self->catch_up_to > 2)
            s_note(self, "it holds the %llu entries its group had committed: it votes again",
                   (unsigned long long) self->catch_up_to);
        else
            s_note(self, "it holds its new group's first entries: it votes");
    }
    uint64_t leader = replica_leader(self, NULL);
    if (role == REPLICA_LEADER && self->ready && self->lost_log_id)
        s_hand_over_lost_log(self);
    if (role == REPLICA_LEADER && self->ready)
        s_promote(self);
    if (role != self->told_role || leader != self->told_leader || term != self->told_term
        || self->ready != self->told_ready) {
        self->told_role = role;
        self->told_leader = leader;
        self->told_term = term;
        self->told_ready = self->ready;
        if (self->owner.changed)
            self->owner.changed(self->owner.ctx);
    }
}

/* --------------------------------------------------------------- open */

static int s_mkdirs(const char *dir)
{
    char path[4096];
    if (snprintf(path, sizeof path, "%s", dir) >= (int) sizeof path)
        return -1;
    for (char *p = path + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        if (mkdir(path, 0700) && errno != EEXIST)
            return -1;
        *p = '/';
    }
    return mkdir(path, 0700) && errno != EEXIST ? -1 : 0;
}

static unsigned s_seed(uint64_t id)
{
    unsigned seed = 0;
    int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
        if (read(fd, &seed, sizeof seed) != (ssize_t) sizeof seed)
            seed = 0;
        close(fd);
    }
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return seed ^ (unsigned) now.tv_nsec ^ ((unsigned) getpid() << 8) ^ (unsigned) id;
}

static void s_raft_closed(struct raft *raft)
{
    replica_t *self = raft->data;
    self->raft_closed = 1;
}

/*  Frees what open made, in the reverse order. */
static void s_teardown(replica_t *self)
{
    if (self->raft_ready) {
        raft_close(&self->raft, s_raft_closed);
        while (!self->raft_closed)
            uv_run(&self->loop, UV_RUN_ONCE);
    }
    if (self->io_ready)
        raft_uv_close(&self->io);
    if (self->loop_ready) {
        uv_run(&self->loop, UV_RUN_DEFAULT); /* the handles' close callbacks */
        replica_link_destroy(&self->link);
        uv_loop_close(&self->loop);
    }
    free(self->timeout_now_address);
    free(self);
}

replica_t *replica_open(const replica_config_t *config, const replica_owner_t *owner,
                        char *error, size_t error_size)
{
    const char *address = config->address;
    if (!address && config->id >= 1 && config->id <= config->count)
        address = config->addresses[config->id - 1];
    if (config->count > REPLICAS_MAX || !config->id || !address) {
        snprintf(error, error_size, "replica %llu of %u: not a place in the group",
                 (unsigned long long) config->id, config->count);
        return NULL;
    }
    if (s_mkdirs(config->dir)) {
        snprintf(error, error_size, "cannot make %s: %s", config->dir, strerror(errno));
        return NULL;
    }
    /* libuv writes to sockets with write(2): a replica that went away
       would kill this process with SIGPIPE. */
    struct sigaction pipe_action;
    if (sigaction(SIGPIPE, NULL, &pipe_action) == 0 && pipe_action.sa_handler == SIG_DFL)
        signal(SIGPIPE, SIG_IGN);
    replica_t *self = calloc(1, sizeof *self);
    if (!self) {
        snprintf(error, error_size, "out of memory");
        return NULL;
    }
    self->owner = *owner;
    self->told_role = REPLICA_STOPPED;
    int rv = uv_loop_init(&self->loop);
    if (rv) {
        snprintf(error, error_size, "libuv: %s", uv_strerror(rv));
        goto failed;
    }
    self->loop_ready = 1;
    self->link = replica_link_new(&self->loop, config->key, !config->insecure, error,
                                  error_size);
    if (!self->link)
        goto failed;
    rv = raft_uv_init(&self->io, &self->loop, config->dir, replica_link_transport(self->link));
    if (rv) {
        snprintf(error, error_size, "raft log in %s: %s", config->dir, self->io.errmsg);
        goto failed;
    }
    self->io_ready = 1;
    raft_uv_set_connect_retry_delay(&self->io, REPLICA_CONNECT_RETRY_MS);
    s_io_wrap(self);
    self->fsm.version = 2;
    self->fsm.data = self;
    self->fsm.apply = s_fsm_apply;
    self->fsm.snapshot = s_fsm_snapshot;
    self->fsm.snapshot_finalize = s_fsm_snapshot_finalize;
    self->fsm.restore = s_fsm_restore;
    rv = raft_init(&self->raft, &self->io_outer, &self->fsm, config->id, address);
    if (rv) {
        snprintf(error, error_size, "raft: %s", raft_errmsg(&self->raft));
        goto failed;
    }
    self->raft.data = self;
    self->io.data = self->io_outer.data; /* raft_uv's callbacks find the library there */
    self->raft_ready = 1;
    replica_link_peers_t peers = {
        .check = s_link_check, .ids = s_link_ids, .reached = s_link_reached, .ctx = self};
    replica_link_set_peers(self->link, &peers);

    struct raft_configuration configuration;
    raft_configuration_init(&configuration);
    for (unsigned i = 0; i < config->count && rv == 0; i++)
        rv = raft_configuration_add(&configuration, i + 1, config->addresses[i], RAFT_VOTER);
    if (rv == 0 && config->count) {
        rv = raft_bootstrap(&self->raft, &configuration);
        if (rv == 0) /* an empty log: it listens before it votes */
            self->voting = ABSTAINS_LISTENING;
        else if (rv == RAFT_CANTBOOTSTRAP) /* not the first start */
            rv = 0;
    }
    raft_configuration_close(&configuration);
    if (rv) {
        snprintf(error, error_size, "raft bootstrap in %s: %s (%s)", config->dir,
                 raft_strerror(rv), raft_errmsg(&self->raft));
        goto failed;
    }
    raft_set_election_timeout(&self->raft, config->election_ms ? config->election_ms
                                                               : REPLICA_DEFAULT_ELECTION_MS);
    raft_set_heartbeat_timeout(&self->raft, config->heartbeat_ms ? config->heartbeat_ms
                                                                 : REPLICA_DEFAULT_HEARTBEAT_MS);
    self->by_bytes = config->snapshot_threshold == 0;
    if (self->by_bytes)
        s_space_snapshots(self, REPLICA_SNAPSHOT_BYTES / 8192); /* till entries are seen */
    else {
        raft_set_snapshot_threshold(&self->raft, config->snapshot_threshold);
        raft_set_snapshot_trailing(&self->raft, config->snapshot_trailing);
    }
    /* A snapshot sent and not answered (lost with a connection that broke)
       is sent again after this; the library's 30 s held a replica back. */
    raft_set_install_snapshot_timeout(&self->raft, REPLICA_INSTALL_TIMEOUT_MS);
    raft_set_pre_vote(&self->raft, true);
    raft_seed(&self->raft, s_seed(config->id));
    rv = raft_start(&self->raft);
    if (rv) {
        /* Its replication port is the usual cause: the transport says why. */
        const char *why = replica_link_transport(self->link)->errmsg;
        if (!*why)
            why = raft_errmsg(&self->raft);
        /* Where another replica listens (one host) or on another host:
           most often a --peers in another order than the group's. */
        int listen = strstr(why, "cannot listen") != NULL;
        snprintf(error, error_size, "raft start in %s: %s%s%s%s", config->dir, raft_strerror(rv),
                 *why ? ": " : "", why,
                 listen ? " (--node-id picks this replica's own address from --peers: every "
                          "replica needs the same --peers, in the same order)" : "");
        goto failed;
    }
    return self;

failed:
    s_teardown(self);
    return NULL;
}

void replica_close(replica_t **self_p)
{
    if (!*self_p)
        return;
    s_teardown(*self_p);
    *self_p = NULL;
}

/* ----------------------------------------------------------- recovery */

static void s_io_closed_flag(struct raft_io *io)
{
    *(int *) io->data = 1;
}

/*  The last configuration of what raft_io's load gave (a RAFT_CHANGE
    entry's, or else the snapshot's): its members but `id`, into
    `recovered`, and `id`'s own address into `own` ("" if it is not a
    member); frees it all. */
static void s_describe_loaded(struct raft_snapshot *snapshot, raft_index start,
                              struct raft_entry *entries, size_t count, uint64_t id,
                              replica_recovered_t *recovered, char *own, size_t own_size)
{
    *own = '\0';
    struct raft_configuration configuration;
    raft_configuration_init(&configuration);
    int found = 0;
    for (size_t i = count; i-- > 0 && !found;)
        if (entries[i].type == RAFT_CHANGE)
            found = raft_configuration_decode(&entries[i].buf, &configuration) == 0;
    const struct raft_configuration *last =
        found ? &configuration : snapshot ? &snapshot->configuration : NULL;
    recovered->last_index = count ? start + count - 1 : snapshot ? snapshot->index : 0;
    recovered->count = 0;
    for (unsigned i = 0; last && i < last->n && recovered->count <= REPLICAS_MAX; i++) {
        if (last->servers[i].id == id) {
            snprintf(own, own_size, "%s", last->servers[i].address);
            recovered->was_voter = last->servers[i].role == RAFT_VOTER;
            continue;
        }
        recovered->left_out[recovered->count].id = last->servers[i].id;
        snprintf(recovered->left_out[recovered->count].address,
                 sizeof recovered->left_out[0].address, "%s", last->servers[i].address);
        recovered->left_out[recovered->count++].voter = last->servers[i].role == RAFT_VOTER;
    }
    raft_configuration_close(&configuration);
    void *batch = NULL;
    for (size_t i = 0; i < count; i++)
        if (entries[i].batch != batch)
            raft_free(batch = entries[i].batch);
    raft_free(entries);
    if (snapshot) {
        raft_configuration_close(&snapshot->configuration);
        for (unsigned i = 0; i < snapshot->n_bufs; i++)
            raft_free(snapshot->bufs[i].base);
        raft_free(snapshot->bufs);
        raft_free(snapshot);
    }
}

int replica_recover_alone(const char *dir, uint64_t id, const char *address,
                          replica_recovered_t *recovered, char *error, size_t error_size)
{
    uv_loop_t loop;
    struct raft_uv_transport transport = {.version = 1};
    struct raft_io io = {0};
    int closed = 0, rv = uv_loop_init(&loop);
    if (rv) {
        snprintf(error, error_size, "libuv: %s", uv_strerror(rv));
        return -1;
    }
    rv = raft_uv_tcp_init(&transport, &loop);
    if (rv) {
        snprintf(error, error_size, "raft: %s", transport.errmsg);
        uv_loop_close(&loop);
        return -1;
    }
    if ((rv = raft_uv_init(&io, &loop, dir, &transport)) != 0)
        snprintf(error, error_size, "the group's log in %s: %s", dir, io.errmsg);
    int io_ready = rv == 0;
    if (rv == 0 && (rv = io.init(&io, id, address)) != 0)
        snprintf(error, error_size, "the group's log in %s: %s", dir, io.errmsg);
    int inited = io_ready && rv == 0;
    raft_term term = 0;
    raft_id voted = 0;
    struct raft_snapshot *snapshot = NULL;
    raft_index start = 0;
    struct raft_entry *entries = NULL;
    size_t count = 0;
    if (rv == 0 && (rv = io.load(&io, &term, &voted, &snapshot, &start, &entries, &count)) != 0)
        snprintf(error, error_size, "the group's log in %s cannot be read: %s", dir, io.errmsg);
    int empty = rv == 0 && !snapshot && !count;
    char own[300] = "";
    if (rv == 0)
        s_describe_loaded(snapshot, start, entries, count, id, recovered, own, sizeof own);
    if (empty) {
        snprintf(error, error_size, "%s holds no log of a group: nothing to recover", dir);
        rv = -1;
    }
    else if (rv == 0 && !*own) {
        size_t at = (size_t) snprintf(error, error_size,
                                      "the group in %s has no replica %llu (is --node-id "
                                      "this replica's?): its members are",
                                      dir, (unsigned long long) id);
        for (size_t i = 0; i < recovered->count && at < error_size; i++)
            at += (size_t) snprintf(error + at, error_size - at, " %llu",
                                    (unsigned long long) recovered->left_out[i].id);
        rv = -1;
    }
    if (rv == 0) {
        struct raft_configuration alone;
        raft_configuration_init(&alone);
        rv = raft_configuration_add(&alone, id, own, RAFT_VOTER);
        if (rv == 0)
            rv = io.set_term(&io, term + 1);
        if (rv == 0)
            rv = io.recover(&io, &alone);
        raft_configuration_close(&alone);
        if (rv)
            snprintf(error, error_size, "the group's log in %s: %s", dir, io.errmsg);
    }
    if (inited) { /* its handles, closed */
        io.data = &closed;
        io.close(&io, s_io_closed_flag);
        while (!closed && uv_run(&loop, UV_RUN_ONCE))
            ;
    }
    if (io_ready)
        raft_uv_close(&io);
    uv_run(&loop, UV_RUN_DEFAULT);
    raft_uv_tcp_close(&transport);
    uv_loop_close(&loop);
    return rv ? -1 : 0;
}

/* ---------------------------------------------------------------- run */

int replica_fd(const replica_t *self)
{
    return uv_backend_fd(&self->loop);
}

int replica_timeout_ms(const replica_t *self)
{
    return uv_backend_timeout(&self->loop);
}

/*  The TimeoutNow held back, once what it was sent is written: 1 if given
    to raft (libraft checks its term, leader and log again). */
static int s_release_timeout_now(replica_t *self)
{
    if (!self->timeout_now_ms || self->raft.last_stored < raft_last_index(&self->raft))
        return 0;
    int given = s_now_ms() - self->timeout_now_ms < (int64_t) self->raft.election_timeout;
    if (given)
        self->received(&self->io_outer, &self->timeout_now);
    self->timeout_now_ms = 0;
    free(self->timeout_now_address);
    self->timeout_now_address = NULL;
    return given;
}

void replica_run(replica_t *self)
{
    int64_t now = s_now_ms(), gap = self->run_ended_ms ? now - self->run_ended_ms : 0;
    if (gap > (int64_t) self->raft.election_timeout) {
        self->resumed_ms = now;
        self->not_run_ms = gap;
    }
    uv_run(&self->loop, UV_RUN_NOWAIT);
    if (s_release_timeout_now(self))
        uv_run(&self->loop, UV_RUN_NOWAIT); /* the election's first messages */
    s_check(self);
    self->run_ended_ms = s_now_ms();
}

static void s_appended(struct raft_apply *request, int status, void *result)
{
    (void) result;
    appending_t *appending = request->data;
    replica_t *self = appending->self;
    uint64_t token = appending->token;
    free(appending);
    if (self->owner.done)
        self->owner.done(self->owner.ctx, token, status);
}

uint64_t replica_append(replica_t *self, const void *data, size_t size)
{
    if (raft_state(&self->raft) != RAFT_LEADER)
        return 0;
    /* An entry is its length, then its bytes, padded to a multiple of 8:
       the disk back end refuses any other length (RAFT_INVALID), and only
       after the library took the buffer and freed it. One buffer, always:
       0.22.1 replicates only the first of several. */
    size_t framed = ENTRY_HEADER + ((size + 7) & ~(size_t) 7);
    appending_t *appending = calloc(1, sizeof *appending);
    struct raft_buffer buffer = {.base = raft_malloc(framed), .len = framed};
    if (!appending || !buffer.base) {
        free(appending);
        raft_free(buffer.base);
        return 0;
    }
    uint8_t *bytes = buffer.base;
    for (int i = 0; i < ENTRY_HEADER; i++)
        bytes[i] = (uint8_t) ((uint64_t) size >> (56 - 8 * i));
    if (size)
        memcpy(bytes + ENTRY_HEADER, data, size);
    memset(bytes + ENTRY_HEADER + size, 0, framed - ENTRY_HEADER - size);
    appending->self = self;
    appending->token = self->next_token + 1;
    appending->request.data = appending;
    if (raft_apply(&self->raft, &appending->request, &buffer, 1, s_appended)) {
        /* Who owns the buffer now is not said: a leak, not a double free. */
        free(appending);
        return 0;
    }
    return ++self->next_token;
}

/* ------------------------------------------------------------ queries */

replica_role_t replica_role(replica_t *self)
{
    switch (raft_state(&self->raft)) {
    case RAFT_FOLLOWER: return REPLICA_FOLLOWER;
    case RAFT_CANDIDATE: return REPLICA_CANDIDATE;
    case RAFT_LEADER: return REPLICA_LEADER;
    default: return REPLICA_STOPPED;
    }
}

int replica_ready(const replica_t *self)
{
    return self->ready;
}

uint64_t replica_leader(replica_t *self, const char **address)
{
    raft_id id = 0;
    const char *at = NULL;
    raft_leader(&self->raft, &id, &at);
    if (address)
        *address = at ? at : "";
    return id;
}

uint64_t replica_term(replica_t *self)
{
    return raft_current_term(&self->raft);
}

uint64_t replica_commit_index(replica_t *self)
{
    return raft_commit_index(&self->raft);
}

uint64_t replica_applied_index(replica_t *self)
{
    return raft_last_applied(&self->raft);
}

uint64_t replica_last_index(replica_t *self)
{
    return raft_last_index(&self->raft);
}

uint64_t replica_last_stored(replica_t *self)
{
    return self->raft.last_stored;
}

int replica_match_index(replica_t *self, uint64_t id, uint64_t *index)
{
    raft_index match = 0;
    if (raft_state(&self->raft) != RAFT_LEADER || raft_match_index(&self->raft, id, &match))
        return -1;
    *index = match;
    return 0;
}

int64_t replica_silent_ms(const replica_t *self, uint64_t id)
{
    const heard_t *answered = s_heard_find(self->answered, REPLICAS_MAX + 1, id);
    return answered ? s_now_ms() - answered->at_ms : -1;
}

uint64_t replica_restores(const replica_t *self)
{
    return self->restores;
}

uint64_t replica_refused(const replica_t *self, int made, replica_refusal_t cause)
{
    return replica_link_refused(self->link, made, cause);
}

/* ---------------------------------------------------------- membership */

size_t replica_members(replica_t *self, replica_member_t *members, size_t max)
{
    const struct raft_configuration *configuration = &self->raft.configuration;
    size_t count = 0;
    for (unsigned i = 0; i < configuration->n && count < max; i++) {
        const struct raft_server *server = &configuration->servers[i];
        members[count++] = (replica_member_t){
            .id = server->id,
            .address = server->address,
            .kind = server->role == RAFT_VOTER     ? REPLICA_VOTER
                    : server->role == RAFT_STANDBY ? REPLICA_STANDBY
                                                   : REPLICA_SPARE};
    }
    return count;
}

unsigned replica_voters(replica_t *self, int *votes)
{
    return s_voters(&self->raft.configuration, self->raft.id, votes);
}

int replica_is_member(replica_t *self)
{
    const struct raft_configuration *configuration = &self->raft.configuration;
    for (unsigned i = 0; i < configuration->n; i++)
        if (configuration->servers[i].id == self->raft.id)
            return 1;
    return 0;
}

uint64_t replica_configuration_version(replica_t *self)
{
    raft_index committed = self->raft.configuration_committed_index;
    raft_index uncommitted = self->raft.configuration_uncommitted_index;
    return committed > uncommitted ? committed : uncommitted;
}

const char *replica_strerror(int code)
{
    switch (code) {
    case 0: return "done";
    case REPLICA_ENOTLEADER: return "this replica does not lead the group";
    case REPLICA_EBUSY: return "another change of the group is under way";
    case REPLICA_ENOID: return "no such replica in the group";
    case REPLICA_EDUPLICATE: return "a replica at that address is in the group already";
    case REPLICA_ELEADER: return "that replica leads the group: hand the lead over first";
    case REPLICA_ELEADS: return "that replica leads the group already";
    case REPLICA_ELOST: return "the leader changed before the change was committed";
    case REPLICA_ENOMEM: return "out of memory";
    default: return "the Raft library refused the change";
    }
}

static int s_code(int rv)
{
    switch (rv) {
    case 0: return 0;
    case RAFT_NOTLEADER: return REPLICA_ENOTLEADER;
    case RAFT_CANTCHANGE: return REPLICA_EBUSY;
    case RAFT_BADID: case RAFT_NOTFOUND: return REPLICA_ENOID;
    case RAFT_DUPLICATEID: case RAFT_DUPLICATEADDRESS: return REPLICA_EDUPLICATE;
    case RAFT_LEADERSHIPLOST: case RAFT_SHUTDOWN: return REPLICA_ELOST;
    case RAFT_NOMEM: return REPLICA_ENOMEM;
    default: return REPLICA_EFAILED;
    }
}

static int64_t s_now_ms(void)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (int64_t) now.tv_sec * 1000 + now.tv_nsec / 1000000;
}

/*  A leader may change the group once it is ready (it knows every change
    its predecessors committed), and one change at a time. */
static int s_may_change(replica_t *self)
{
    if (raft_state(&self->raft) != RAFT_LEADER || !self->ready)
        return REPLICA_ENOTLEADER;
    if (self->changing != CHANGE_NONE || self->raft.configuration_uncommitted_index)
        return REPLICA_EBUSY;
    return 0;
}

static void s_changed(struct raft_change *request, int status);

static int s_start_change(replica_t *self, int kind, uint64_t id, int rv)
{
    if (rv)
        return s_code(rv);
    self->changing = kind;
    self->change_id = id;
    return 0;
}

/*  A step of a change committed or failed: the next step, or the owner
    told. */
static void s_changed(struct raft_change *request, int status)
{
    replica_t *self = request->data;
    int kind = self->changing;
    self->changing = CHANGE_NONE;
    if (kind == CHANGE_PROMOTE) {
        if (status) /* it did not catch up in time: tried again later */
            self->promote_after_ms = s_now_ms() + 1000;
        return;
    }
    if (kind == CHANGE_ADD && status == 0) {
        /* A spare gets no log: a standby does, and is promoted once it
           has caught up (s_promote). */
        self->change.data = self;
        int rv = raft_assign(&self->raft, &self->change, self->change_id, RAFT_STANDBY,
                             s_changed);
        if (s_start_change(self, CHANGE_STANDBY, self->change_id, rv) == 0)
            return;
        status = rv;
    }
    if (self->owner.membership)
        self->owner.membership(self->owner.ctx, s_code(status));
}

int replica_add(replica_t *self, const char *address, uint64_t *id)
{
    int rv = s_may_change(self);
    if (rv)
        return rv;
    const struct raft_configuration *configuration = &self->raft.configuration;
    for (unsigned i = 0; i < configuration->n; i++)
        if (strcmp(configuration->servers[i].address, address) == 0)
            return REPLICA_EDUPLICATE;
    /* An id never given before: past the first group's (1 to REPLICAS_MAX)
       and past every id given by an earlier add, which was an entry of the
       log before this one. */
    *id = raft_last_index(&self->raft) + REPLICAS_MAX + 1;
    self->change.data = self;
    return s_start_change(self, CHANGE_ADD, *id,
                          raft_add(&self->raft, &self->change, *id, address, s_changed));
}

int replica_remove(replica_t *self, uint64_t id)
{
    int rv = s_may_change(self);
    if (rv)
        return rv;
    if (id == self->raft.id)
        return REPLICA_ELEADER;
    self->change.data = self;
    return s_start_change(self, CHANGE_REMOVE, id,
                          raft_remove(&self->raft, &self->change, id, s_changed));
}

static void s_transferred(struct raft_transfer *request)
{
    replica_t *self = request->data;
    self->transferring = 0;
}

int replica_transferring(const replica_t *self)
{
    return self->transferring;
}

int replica_transfer(replica_t *self, uint64_t *id)
{
    if (raft_state(&self->raft) != RAFT_LEADER || !self->ready)
        return REPLICA_ENOTLEADER;
    if (self->transferring || self->changing != CHANGE_NONE)
        return REPLICA_EBUSY;
    if (*id == self->raft.id)
        return REPLICA_ELEADS;
    self->transfer.data = self;
    int rv = raft_transfer(&self->raft, &self->transfer, *id, s_transferred);
    if (rv == 0) {
        self->transferring = 1;
        if (raft_transferee(&self->raft))
            *id = raft_transferee(&self->raft); /* the one the library chose */
    }
    return s_code(rv);
}

/*  The lead handed to the voter furthest on, neither this one nor the
    one that lost its log. */
static void s_hand_over_lost_log(replica_t *self)
{
    uint64_t lost = self->lost_log_id;
    self->lost_log_id = 0;
    if (self->transferring || self->changing != CHANGE_NONE)
        return;
    self->lost_log_term = raft_current_term(&self->raft);
    const struct raft_configuration *configuration = &self->raft.configuration;
    raft_id target = 0;
    raft_index best = 0;
    for (unsigned i = 0; i < configuration->n; i++) {
        raft_id id = configuration->servers[i].id;
        raft_index match = 0;
        if (configuration->servers[i].role != RAFT_VOTER || id == self->raft.id || id == lost
            || raft_match_index(&self->raft, id, &match) != 0 || match < best)
            continue;
        target = id;
        best = match;
    }
    char why[200];
    snprintf(why, sizeof why,
             "replica %llu answers that its log ends at %llu, below the %llu entries it had "
             "acknowledged (its directory wiped, and started again under its old id?)",
             (unsigned long long) lost, (unsigned long long) self->lost_log_end,
             (unsigned long long) self->lost_log_match);
    self->transfer.data = self;
    if (target && raft_transfer(&self->raft, &self->transfer, target, s_transferred) == 0) {
        self->transferring = 1;
        s_note(self, "%s: the lead goes to replica %llu, which sends it the log again", why,
               (unsigned long long) target);
    }
    else
        s_note(self, "%s: no other voter to hand the lead to; it gets the log again from the "
                     "group's next leader",
               why);
}

/*  On a ready leader with no change under way: a standby whose log has
    caught up with what is committed becomes a voter (the library checks
    again in rounds that it keeps up). */
static void s_promote(replica_t *self)
{
    if (s_may_change(self) || self->transferring || s_now_ms() < self->promote_after_ms)
        return;
    const struct raft_configuration *configuration = &self->raft.configuration;
    raft_index commit = raft_commit_index(&self->raft);
    for (unsigned i = 0; i < configuration->n; i++) {
        /* The configuration is replaced by the change: its id, copied. */
        raft_id id = configuration->servers[i].id;
        raft_index match = 0;
        if (configuration->servers[i].role != RAFT_STANDBY
            || raft_match_index(&self->raft, id, &match) || match < commit)
            continue;
        self->change.data = self;
        int rv = raft_assign(&self->raft, &self->change, id, RAFT_VOTER, s_changed);
        if (s_start_change(self, CHANGE_PROMOTE, id, rv))
            self->promote_after_ms = s_now_ms() + 1000;
        return;
    }
}
