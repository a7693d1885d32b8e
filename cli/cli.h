/*  The asyncq control command: one function per subcommand. */
#ifndef CLI_CLI_H
#define CLI_CLI_H

#include <stdint.h>

#include "asyncq/internal.h"
#include "asyncq/session.h"

int cli_put(int argc, char **argv);
int cli_join(int argc, char **argv);
int cli_stats(int argc, char **argv);
int cli_dead(int argc, char **argv);
int cli_shutdown(int argc, char **argv);
/*  asyncq reopen, purge and delete. */
int cli_queue_action(int argc, char **argv);
int cli_peek(int argc, char **argv);
int cli_demo(int argc, char **argv);
int cli_keygen(int argc, char **argv);
int cli_replica(int argc, char **argv);

/*  A session for `asyncq command`, or NULL after saying why on stderr (the
    address as given, and the cause: aq_last_error()). */
aq_session_t *cli_connect(const char *command, const char *broker, aq_status_t *rc);

/*  A session with every broker of the service at `broker` (PROTOCOL.md
    4.15), waiting up to AQ_CONNECT_TIMEOUT_MS (_within: timeout_ms) for
    them to answer: an address no broker lists that does not answer is left
    out, said on stderr; a broker of the service that does not answer keeps
    a session that is not up. NULL, having said why, if none answers. */
aq_session_t **cli_connect_all_within(const char *command, const char *broker, int timeout_ms,
                                      size_t *count, aq_status_t *rc);
aq_session_t **cli_connect_all(const char *command, const char *broker, size_t *count,
                               aq_status_t *rc);
void cli_disconnect_all(aq_session_t **sessions, size_t count);

/*  Says on stderr why `asyncq command` failed with `rc`: for a request the
    broker refused (AQ_REFUSED, or the code of its ERROR), the broker's
    code, its name and its reason, from `session`'s last ERROR; else the
    status in words. */
void cli_report(const char *command, const aq_session_t *session, aq_status_t rc);

/*  How asyncq stats prints: an aligned table (the default on a terminal),
    the broker's key=value lines (the default otherwise) or JSON. */
typedef enum { STATS_TABLE, STATS_KV, STATS_JSON } stats_format_t;

/*  "table", "kv" or "json"; NULL picks by whether stdout is a terminal.
    Returns 0 for anything else. */
int stats_format_parse(const char *text, stats_format_t *format);

/*  Prints the stats of `queue` ("" for every queue) once, or every
    `watch_ms` until interrupted (watch_ms 0: once). Returns the exit code. */
int stats_show(const char *broker, const char *queue, stats_format_t format, uint64_t watch_ms,
               int per_broker);

/*  The progress line of asyncq join, drawn while the join waits. Start
    returns NULL (and draws nothing) unless stderr is a terminal; stop ends
    it and erases the line. */
typedef struct join_progress join_progress_t;
join_progress_t *join_progress_start(const char *broker, const char *queue, int all);
void join_progress_stop(join_progress_t **self_p);

#endif
