#include "asyncq/control.h"

#include <stdio.h>
#include <string.h>

#include "asyncq/internal.h"

/*  Waits for the reply to the JOIN tagged `tag`, waking once per heartbeat
    to notice a broker that went away. AQ_NO_SESSION: the broker lost the
    session (it restarted): the caller says HELLO and asks again. */
static aq_status_t s_await_join(aq_session_t *session, const char *tag, int64_t deadline,
                                aq_msg_t *reply)
{
    for (;;) {
        int left = aq_deadline_left(deadline);
        int wait = aq_session_slice(session, left);
        aq_status_t rc = aq_session_await_watching(session, tag, reply, wait);
        if (rc == AQ_TIMEOUT && left != 0 && !aq_session_broker_silent(session))
            continue;
        if (rc == AQ_TIMEOUT && left != 0)
            return AQ_NO_SESSION; /* silent broker: assume it restarted */
        if (rc == AQ_REFUSED) {
            int code = aq_session_error(session)->code;
            if (code == AQ_NO_SESSION || code == AQ_SHUT_DOWN)
                return (aq_status_t) code;
        }
        return rc;
    }
}

/*  HELLO until the broker answers or the deadline passes. */
static aq_status_t s_hello_again(aq_session_t *session, int64_t deadline)
{
    for (;;) {
        int left = aq_deadline_left(deadline);
        if (left == 0)
            return AQ_TIMEOUT;
        aq_status_t rc = aq_session_hello(session, left > 0 && left < AQ_CONNECT_TIMEOUT_MS
                                                       ? left : AQ_CONNECT_TIMEOUT_MS);
        if (rc != AQ_UNREACHABLE)
            return rc;
    }
}

aq_status_t aq_join(aq_session_t *session, const char *queue, int timeout_ms,
                    aq_join_mode_t mode, aq_join_result_t *result)
{
    memset(result, 0, sizeof *result);
    if (timeout_ms > AQ_WAIT_MAX_MS)
        return AQ_MALFORMED; /* the broker's limit (PROTOCOL.md 4.6) */
    /* -1 (any negative) waits for ever, which the wire says with 0; the
       wire has no "do not wait", so 0 asks for its shortest, 1 ms. The
       broker owns the time-out; the local one is only a safety net in case
       the broker vanishes for good. */
    int forever = timeout_ms < 0;
    int64_t until = forever ? -1 : aq_deadline_at(timeout_ms);
    /* A broker that does not answer its HELLO (a shard that is down) gets
       no time beyond the join's own. */
    int slack = aq_session_answers(session) ? AQ_CONNECT_TIMEOUT_MS : 0;
    int64_t deadline = forever ? -1 : aq_deadline_at(timeout_ms + slack);
    for (;;) {
        aq_msg_t msg = {.cmd = AQ_CMD_JOIN};
        msg.queue = aq_bytes_str(queue);
        msg.mode = mode;
        if (!forever) {
            int left = aq_deadline_left(until);
            msg.timeout_ms = left > 0 ? (uint64_t) left : 1;
        }
        aq_status_t rc = aq_session_request(session, &msg);
        char tag[AQ_TAG_MAX + 1];
        snprintf(tag, sizeof tag, "%.*s", (int) msg.tag.size, (const char *) msg.tag.data);
        aq_msg_t reply;
        if (!rc)
            rc = s_await_join(session, tag, deadline, &reply);
        if (rc == AQ_NO_SESSION) {
            /* The broker restarted, or went away: a new session, then the
               join again, which covers what the new broker holds. */
            rc = s_hello_again(session, deadline);
            if (rc)
                return rc;
            continue;
        }
        if (rc)
            return rc;
        if (reply.cmd == AQ_CMD_TIMEOUT) {
            result->outstanding = reply.count;
            return AQ_TIMEOUT;
        }
        result->waited = reply.count;
        result->dead = reply.dead;
        return AQ_OK;
    }
}

/*  Sends a request answered by REPORT and hands each line to `line`. */
static aq_status_t s_report(aq_session_t *session, aq_msg_t *msg, aq_stats_line_fn *line,
                            void *ctx)
{
    aq_status_t rc = aq_session_request(session, msg);
    if (rc)
        return rc;
    char tag[AQ_TAG_MAX + 1];
    snprintf(tag, sizeof tag, "%.*s", (int) msg->tag.size, (const char *) msg->tag.data);
    aq_msg_t reply;
    rc = aq_session_await(session, tag, &reply, AQ_CONNECT_TIMEOUT_MS, NULL, NULL);
    if (rc)
        return rc;
    for (size_t i = 0; line && i < reply.list_size; i++) {
        char text[AQ_TEXT_MAX + 1];
        memcpy(text, reply.list[i].data, reply.list[i].size);
        text[reply.list[i].size] = '\0';
        line(ctx, text);
    }
    return AQ_OK;
}

aq_status_t aq_stats(aq_session_t *session, const char *queue, aq_stats_line_fn *line,
                     void *ctx)
{
    aq_msg_t msg = {.cmd = AQ_CMD_STATS};
    msg.queue = aq_bytes_str(queue);
    return s_report(session, &msg, line, ctx);
}

aq_status_t aq_info(aq_session_t *session, aq_stats_line_fn *line, void *ctx)
{
    aq_msg_t msg = {.cmd = AQ_CMD_INFO};
    return s_report(session, &msg, line, ctx);
}

aq_status_t aq_dead(aq_session_t *session, const char *queue, const char *action,
                    aq_stats_line_fn *line, void *ctx)
{
    aq_msg_t msg = {.cmd = AQ_CMD_DEAD};
    msg.queue = aq_bytes_str(queue);
    msg.text = aq_bytes_str(action);
    return s_report(session, &msg, line, ctx);
}

aq_status_t aq_replicas(aq_session_t *session, const char *action, aq_stats_line_fn *line,
                        void *ctx)
{
    aq_msg_t msg = {.cmd = AQ_CMD_REPLICAS};
    msg.text = aq_bytes_str(action);
    return s_report(session, &msg, line, ctx);
}

aq_status_t aq_queue_action(aq_session_t *session, const char *queue, aq_queue_action_t action,
                            aq_stats_line_fn *line, void *ctx)
{
    static const aq_cmd_t commands[] = {AQ_CMD_REOPEN, AQ_CMD_PURGE, AQ_CMD_DELETE, AQ_CMD_PAUSE,
                                        AQ_CMD_RESUME};
    if ((unsigned) action > AQ_QUEUE_RESUME)
        return AQ_MALFORMED;
    aq_msg_t msg = {.cmd = commands[action]};
    msg.queue = aq_bytes_str(queue);
    return s_report(session, &msg, line, ctx);
}

aq_status_t aq_peek(aq_session_t *session, const char *queue, uint64_t count,
                    aq_stats_line_fn *line, void *ctx)
{
    aq_msg_t msg = {.cmd = AQ_CMD_PEEK, .count = count};
    msg.queue = aq_bytes_str(queue);
    return s_report(session, &msg, line, ctx);
}

aq_status_t aq_shutdown(aq_session_t *session, const char *queue, aq_shutdown_mode_t mode,
                        aq_stats_line_fn *line, void *ctx)
{
    aq_msg_t msg = {.cmd = AQ_CMD_SHUTDOWN, .mode = mode};
    msg.queue = aq_bytes_str(queue);
    return s_report(session, &msg, line, ctx);
}
