#include "asyncq/status.h"

#include <stddef.h>

typedef struct {
    int code;
    const char *name;
    const char *text;
} status_entry_t;

static const status_entry_t s_table[] = {
    {AQ_OK, "OK", "success"},
    {AQ_MALFORMED, "MALFORMED", "message is not as the protocol says"},
    {AQ_FORBIDDEN, "FORBIDDEN", "this client may not do that (its roles or queues do not allow it)"},
    {AQ_UNKNOWN_ITEM, "UNKNOWN_ITEM", "no item with that id is held by this consumer"},
    {AQ_UNKNOWN_COMMAND, "UNKNOWN_COMMAND", "command is not part of this protocol version"},
    {AQ_BAD_VERSION, "BAD_VERSION", "protocol signature or version not supported (this broker speaks asyncq/2)"},
    {AQ_LEASE_EXPIRED, "LEASE_EXPIRED", "the item was taken back from this consumer (lease expired or returned); it is delivered again"},
    {AQ_CONFLICT, "CONFLICT", "request conflicts with the session's state"},
    {AQ_LOST, "LOST", "some puts of this producer never reached the broker"},
    {AQ_NO_SESSION, "NO_SESSION", "no session for this peer: say HELLO again"},
    {AQ_TOO_BIG, "TOO_BIG", "item is larger than the broker accepts"},
    {AQ_NOT_LEADER, "NOT_LEADER", "this replica does not lead its group: ask the leader"},
    {AQ_LIMIT, "LIMIT", "a broker limit was reached"},
    {AQ_INTERNAL, "INTERNAL", "broker could not complete the request"},
    {AQ_SHUT_DOWN, "SHUT_DOWN", "the queue was shut down"},
    {AQ_STORAGE, "STORAGE", "the broker cannot write to disk: puts are refused until it can"},
    {AQ_TIMEOUT, "TIMEOUT", "timed out"},
    {AQ_INTERRUPTED, "INTERRUPTED", "interrupted"},
    {AQ_UNREACHABLE, "UNREACHABLE", "broker did not answer"},
    {AQ_BAD_ENDPOINT, "BAD_ENDPOINT", "broker address is not valid"},
    {AQ_TRANSPORT, "TRANSPORT", "ZeroMQ call failed"},
    {AQ_NOMEM, "NOMEM", "out of memory"},
    {AQ_REFUSED, "REFUSED", "broker refused the request"},
    {AQ_KEY_MISMATCH, "KEY_MISMATCH", "the broker's key does not match (CURVE handshake failed)"},
    {AQ_KEY_REFUSED, "KEY_REFUSED", "the broker refused this client's key"},
    {AQ_BAD_KEY, "BAD_KEY", "a certificate file could not be read"},
    {AQ_KEY_REQUIRED, "KEY_REQUIRED", "the broker requires CURVE keys (--curve-secret, --server-key)"},
};

static const status_entry_t *s_find(int status)
{
    for (size_t i = 0; i < sizeof s_table / sizeof s_table[0]; i++)
        if (s_table[i].code == status)
            return &s_table[i];
    return NULL;
}

const char *aq_status_name(int status)
{
    const status_entry_t *entry = s_find(status);
    return entry ? entry->name : "UNKNOWN";
}

const char *aq_strerror(int status)
{
    const status_entry_t *entry = s_find(status);
    return entry ? entry->text : "unknown status";
}
