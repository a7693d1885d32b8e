#include "asyncq/control.h"

#include <string.h>

aq_status_t aq_join(aq_session_t *session, const char *queue, uint64_t timeout_ms,
                    aq_join_mode_t mode, aq_join_result_t *result)
{
    aq_msg_t msg = {.cmd = AQ_CMD_JOIN};
    const char *tag = aq_session_next_tag(session);
    msg.tag = aq_bytes_str(tag);
    msg.queue = aq_bytes_str(queue);
    msg.timeout_ms = timeout_ms;
    msg.mode = mode;
    memset(result, 0, sizeof *result);
    aq_status_t rc = aq_session_send(session, &msg);
    if (rc)
        return rc;
    aq_msg_t reply;
    /* The broker owns the time-out; the local wait is only a safety net in
       case the broker vanishes. */
    int local_ms = timeout_ms ? (int) (timeout_ms + AQ_CONNECT_TIMEOUT_MS) : -1;
    rc = aq_session_await(session, tag, &reply, local_ms, NULL, NULL);
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

/*  Sends a request answered by REPORT and hands each line to `line`. */
static aq_status_t s_report(aq_session_t *session, aq_msg_t *msg, aq_stats_line_fn *line,
                            void *ctx)
{
    const char *tag = aq_session_next_tag(session);
    msg->tag = aq_bytes_str(tag);
    aq_status_t rc = aq_session_send(session, msg);
    if (rc)
        return rc;
    aq_msg_t reply;
    rc = aq_session_await(session, tag, &reply, AQ_CONNECT_TIMEOUT_MS, NULL, NULL);
    if (rc)
        return rc;
    for (size_t i = 0; i < reply.list_size; i++) {
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

aq_status_t aq_dead(aq_session_t *session, const char *queue, const char *action,
                    aq_stats_line_fn *line, void *ctx)
{
    aq_msg_t msg = {.cmd = AQ_CMD_DEAD};
    msg.queue = aq_bytes_str(queue);
    msg.text = aq_bytes_str(action);
    return s_report(session, &msg, line, ctx);
}
