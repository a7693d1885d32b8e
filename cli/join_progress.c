/*  The line `asyncq join` shows on a terminal while it waits: how many of
    the items it waits for are done, the rate, the time left.

    The join itself is one JOIN request per broker, answered when the items
    are done; nothing about it changes. A thread with sessions of its own
    asks every broker of the service for the queue's STATS every half second
    meanwhile and draws the line from the counters' progress, added up,
    since the join began. */
#include <pthread.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "asyncq/control.h"
#include "asyncq/program.h"
#include "asyncq/progress.h"
#include "asyncq/service.h"
#include "cli.h"

#define JOIN_PROGRESS_EVERY_MS 500

/*  The counters the line is drawn from. An item stops holding a join back
    when it is acked, dead-lettered or discarded. */
typedef struct {
    uint64_t acked;
    uint64_t dead;
    uint64_t discarded;
    uint64_t outstanding;
    int found;
} join_counts_t;

struct join_progress {
    const char *broker;
    const char *queue;
    int all;
    pthread_t thread;
    pthread_mutex_t lock;
    pthread_cond_t wake;
    int stop;
    aq_progress_t line;
    aq_rate_t rate;
};

static void s_field(const char *line, const char *key, uint64_t *value)
{
    const char *at = strstr(line, key);
    if (at)
        *value = strtoull(at + strlen(key), NULL, 10);
}

static void s_counts_line(void *ctx, const char *line)
{
    join_counts_t *counts = ctx;
    s_field(line, " acked=", &counts->acked);
    s_field(line, " dead=", &counts->dead);
    s_field(line, " discarded=", &counts->discarded);
    s_field(line, " outstanding=", &counts->outstanding);
    counts->found = 1;
}

/*  The counts of every broker of the service, added up; 0 unless every
    broker answered (a line from some of them would jump). */
static int s_counts(aq_session_t **sessions, size_t count, const char *queue,
                    join_counts_t *counts)
{
    memset(counts, 0, sizeof *counts);
    for (size_t k = 0; k < count; k++) {
        join_counts_t one = {0};
        if (!aq_session_answers(sessions[k])
            || aq_stats(sessions[k], queue, s_counts_line, &one) != AQ_OK || !one.found)
            return 0;
        counts->acked += one.acked;
        counts->dead += one.dead;
        counts->discarded += one.discarded;
        counts->outstanding += one.outstanding;
    }
    return counts->found = 1;
}

/*  Items done since the join began, a counter that went down (a requeue of
    dead items) counting as nothing rather than as a huge number. */
static uint64_t s_done(const join_counts_t *first, const join_counts_t *now)
{
    uint64_t done = 0;
    done += now->acked > first->acked ? now->acked - first->acked : 0;
    done += now->dead > first->dead ? now->dead - first->dead : 0;
    done += now->discarded > first->discarded ? now->discarded - first->discarded : 0;
    return done;
}

/*  "jobs: 1,234,567 of 10,000,000 acked (12.3 %), 45,678/s, about 3 min 12 s
    left". Without --all the join waits for what was outstanding when it
    began, so that is the total (items put later and done first are not
    counted beyond it); with --all, whatever is outstanding now is added. */
static void s_draw(join_progress_t *self, const join_counts_t *first, const join_counts_t *now)
{
    uint64_t done = s_done(first, now);
    uint64_t total = self->all ? done + now->outstanding : first->outstanding;
    if (done > total)
        done = total;
    aq_rate_update(&self->rate, done);
    char done_text[32], total_text[32], rate_text[32], left_text[48], tail[128] = "";
    aq_format_count(done, done_text, sizeof done_text);
    aq_format_count(total, total_text, sizeof total_text);
    if (self->rate.per_s >= 0) {
        aq_format_count((uint64_t) (self->rate.per_s + 0.5), rate_text, sizeof rate_text);
        if (self->rate.per_s >= 0.5 && total > done) {
            aq_format_duration((double) (total - done) / self->rate.per_s, left_text,
                               sizeof left_text);
            snprintf(tail, sizeof tail, ", %s/s, about %s left", rate_text, left_text);
        }
        else
            snprintf(tail, sizeof tail, ", %s/s", rate_text);
    }
    double percent = total ? 100.0 * (double) done / (double) total : 100.0;
    aq_progress_show(&self->line, "%s: %s of %s acked (%.1f %%)%s", self->queue, done_text,
                     total_text, percent, tail);
}

/*  Waits until the next round is due or stop() asks it to end. Returns 1 to
    go on. */
static int s_pause(join_progress_t *self)
{
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_nsec += (long) JOIN_PROGRESS_EVERY_MS * 1000000L;
    until.tv_sec += until.tv_nsec / 1000000000L;
    until.tv_nsec %= 1000000000L;
    pthread_mutex_lock(&self->lock);
    while (!self->stop && pthread_cond_timedwait(&self->wake, &self->lock, &until) == 0)
        ;
    int go_on = !self->stop;
    pthread_mutex_unlock(&self->lock);
    return go_on;
}

static void *s_run(void *arg)
{
    join_progress_t *self = arg;
    aq_status_t rc;
    char client_id[AQ_NAME_MAX + 1];
    size_t count = 0;
    aq_client_id_make("join-progress", client_id, sizeof client_id);
    aq_session_t **sessions = aq_service_open(self->broker, client_id, 0, AQ_CONNECT_TIMEOUT_MS,
                                              NULL, 0, &count, &rc);
    join_counts_t first = {0}, now;
    /* No line rather than a wrong one: the join goes on regardless. */
    int counted = sessions && s_counts(sessions, count, self->queue, &first);
    now = first;
    for (int started = counted; started;) {
        if (counted)
            s_draw(self, &first, &now);
        if (!s_pause(self))
            break;
        counted = s_counts(sessions, count, self->queue, &now);
    }
    for (size_t k = 0; k < count; k++)
        aq_session_destroy(&sessions[k]);
    free(sessions);
    return NULL;
}

join_progress_t *join_progress_start(const char *broker, const char *queue, int all)
{
    join_progress_t *self = calloc(1, sizeof *self);
    if (!self)
        return NULL;
    aq_progress_init(&self->line);
    if (!self->line.active) {
        free(self);
        return NULL;
    }
    self->broker = broker;
    self->queue = queue;
    self->all = all;
    aq_rate_init(&self->rate);
    pthread_mutex_init(&self->lock, NULL);
    pthread_cond_init(&self->wake, NULL);
    /* SIGINT and SIGTERM must reach the thread that waits for the join, so
       that it stops at once; this one is told by join_progress_stop. */
    sigset_t block, old;
    sigemptyset(&block);
    sigaddset(&block, SIGINT);
    sigaddset(&block, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &block, &old);
    int failed = pthread_create(&self->thread, NULL, s_run, self);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (failed) {
        pthread_cond_destroy(&self->wake);
        pthread_mutex_destroy(&self->lock);
        free(self);
        return NULL;
    }
    return self;
}

void join_progress_stop(join_progress_t **self_p)
{
    join_progress_t *self = *self_p;
    if (!self)
        return;
    pthread_mutex_lock(&self->lock);
    self->stop = 1;
    pthread_cond_signal(&self->wake);
    pthread_mutex_unlock(&self->lock);
    pthread_join(self->thread, NULL);
    aq_progress_hide(&self->line);
    pthread_cond_destroy(&self->wake);
    pthread_mutex_destroy(&self->lock);
    free(self);
    *self_p = NULL;
}
