#include "exec.h"

#include <czmq.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "asyncq/codec.h"
#include "asyncq/process.h"

#define EXEC_STOP_GRACE_MS 5000

typedef struct {
    aq_process_t process;  /* pid 0: the slot is free */
    aq_item_t item;        /* item.data points to payload */
    void *payload;
    size_t written;        /* bytes of the payload on its stdin so far */
    int64_t next_touch;
} slot_t;

struct exec_pool {
    char *command;
    char *queue;
    size_t count;
    size_t running;
    slot_t slots[];
};

exec_pool_t *exec_pool_new(size_t slots, const char *command, const char *queue)
{
    exec_pool_t *self = calloc(1, sizeof *self + slots * sizeof(slot_t));
    if (!self)
        return NULL;
    self->count = slots;
    self->command = strdup(command);
    self->queue = strdup(queue);
    if (!self->command || !self->queue)
        exec_pool_destroy(&self);
    return self;
}

static void s_free_slot(exec_pool_t *self, slot_t *slot)
{
    free(slot->payload);
    memset(slot, 0, sizeof *slot);
    self->running--;
}

void exec_pool_destroy(exec_pool_t **self_p)
{
    exec_pool_t *self = *self_p;
    if (!self)
        return;
    for (size_t i = 0; i < self->count; i++)
        if (self->slots[i].process.pid > 0) {
            aq_process_stop(&self->slots[i].process, SIGTERM, EXEC_STOP_GRACE_MS);
            s_free_slot(self, &self->slots[i]);
        }
    free(self->command);
    free(self->queue);
    free(self);
    *self_p = NULL;
}

size_t exec_pool_running(const exec_pool_t *self)
{
    return self->running;
}

int exec_pool_has_room(const exec_pool_t *self)
{
    return self->running < self->count;
}

aq_status_t exec_pool_start(exec_pool_t *self, const aq_item_t *item)
{
    slot_t *slot = self->slots;
    while (slot->process.pid > 0)
        slot++; /* there is room: the caller asked */
    slot->payload = malloc(item->size ? item->size : 1);
    if (!slot->payload)
        return AQ_NOMEM;
    memcpy(slot->payload, item->data, item->size);
    slot->item = *item;
    slot->item.data = slot->payload;
    char number[AQ_U64_DIGITS + 1];
    setenv("ASYNCQ_QUEUE", self->queue, 1); /* inherited through posix_spawn */
    aq_format_u64(item->id, number);
    setenv("ASYNCQ_ITEM_ID", number, 1);
    aq_format_u64(item->attempt, number);
    setenv("ASYNCQ_ATTEMPT", number, 1);
    char *argv[] = {"/bin/sh", "-c", self->command, NULL};
    if (aq_process_spawn(&slot->process, argv, 0, AQ_STDIN_PIPE)) {
        int error = errno;
        free(slot->payload);
        memset(slot, 0, sizeof *slot);
        errno = error;
        return AQ_TRANSPORT;
    }
    slot->next_touch = zclock_mono() + (int64_t) (item->lease_ms / 3);
    self->running++;
    return AQ_OK;
}

/*  Writes what it can of the payload without blocking; closes stdin once
    all is written, or if the command closed it (it need not read it all). */
static void s_feed(slot_t *slot)
{
    aq_process_t *process = &slot->process;
    while (process->in_fd >= 0 && slot->written < slot->item.size) {
        ssize_t count = write(process->in_fd, (const char *) slot->payload + slot->written,
                              slot->item.size - slot->written);
        if (count < 0 && (errno == EAGAIN || errno == EINTR))
            return;
        if (count < 0)
            break; /* EPIPE: it stopped reading */
        slot->written += (size_t) count;
    }
    if (process->in_fd >= 0) {
        close(process->in_fd);
        process->in_fd = -1;
    }
}

aq_status_t exec_pool_tend(exec_pool_t *self, aq_consumer_t *consumer, exec_done_fn *done,
                           void *ctx)
{
    int64_t now = zclock_mono();
    for (size_t i = 0; i < self->count; i++) {
        slot_t *slot = &self->slots[i];
        if (slot->process.pid <= 0)
            continue;
        s_feed(slot);
        if (aq_process_wait(&slot->process, 0)) {
            char reason[64];
            int code = slot->process.exit_code;
            if (code > 128)
                snprintf(reason, sizeof reason, "killed by signal %d", code - 128);
            else
                snprintf(reason, sizeof reason, "exit %d", code);
            aq_item_t item = slot->item;
            aq_status_t rc = done(ctx, &item, code, reason);
            s_free_slot(self, slot);
            if (rc)
                return rc;
            continue;
        }
        if (now >= slot->next_touch) {
            aq_status_t rc = aq_consumer_touch(consumer, slot->item.id);
            if (rc)
                return rc;
            slot->next_touch = now + (int64_t) (slot->item.lease_ms / 3);
        }
    }
    return AQ_OK;
}
