/*  asyncq wire codec: the messages of docs/PROTOCOL.md as C structs.

    A message is a list of frames: the signature "asyncq/1", a command word,
    then the command's fields, each in its own frame. The codec knows nothing
    about sockets: aq_msg_decode reads a list of frames, aq_msg_encode hands
    frames one by one to a sink. It never allocates. A decoded message points
    into the frames it was decoded from, so they must outlive it. */
#ifndef ASYNCQ_CODEC_H
#define ASYNCQ_CODEC_H

#include <stddef.h>
#include <stdint.h>

#include "asyncq/status.h"

#define AQ_SIGNATURE "asyncq/1"
#define AQ_NAME_MAX 64    /* queue names and client ids */
#define AQ_TAG_MAX 64     /* request tags, echoed in replies */
#define AQ_TEXT_MAX 1024  /* error names and texts, report lines */
#define AQ_LIST_MAX 1024  /* item ids in one ACK, lines in one REPORT */
#define AQ_FRAMES_MAX (AQ_LIST_MAX + 8)
#define AQ_U64_DIGITS 20

typedef enum {
    AQ_CMD_NONE = 0,
    AQ_CMD_PUT,
    AQ_CMD_HELLO,
    AQ_CMD_WELCOME,
    AQ_CMD_CREDIT,
    AQ_CMD_ITEM,
    AQ_CMD_ACK,
    AQ_CMD_JOIN,
    AQ_CMD_JOINED,
    AQ_CMD_TIMEOUT,
    AQ_CMD_SYNC,
    AQ_CMD_SYNCED,
    AQ_CMD_STATS,
    AQ_CMD_REPORT,
    AQ_CMD_ERROR,
    AQ_CMD_BYE,
    AQ_CMD_HEARTBEAT,
    AQ_CMD_TOUCH,
    AQ_CMD_NACK,
    AQ_CMD_DEAD,
    AQ_CMD_SHUTDOWN,
    AQ_CMD_COUNT_
} aq_cmd_t;

/*  The mode frame: JOIN takes "before" or "all", SHUTDOWN "drain" or
    "immediate". */
typedef enum { AQ_JOIN_BEFORE = 0, AQ_JOIN_ALL = 1 } aq_join_mode_t;
typedef enum { AQ_SHUTDOWN_DRAIN = 0, AQ_SHUTDOWN_IMMEDIATE = 1 } aq_shutdown_mode_t;

typedef struct {
    const uint8_t *data;
    size_t size;
} aq_bytes_t;

/*  One struct for every command; each command uses the fields its frame
    table names (see codec.c and docs/PROTOCOL.md). */
typedef struct {
    aq_cmd_t cmd;
    aq_bytes_t queue;    /* PUT CREDIT ITEM JOIN JOINED TIMEOUT STATS DEAD SHUTDOWN */
    aq_bytes_t client;   /* HELLO */
    aq_bytes_t producer; /* PUT SYNC SYNCED */
    aq_bytes_t tag;      /* JOIN JOINED TIMEOUT SYNC SYNCED STATS REPORT DEAD SHUTDOWN */
    aq_bytes_t broker;   /* WELCOME */
    aq_bytes_t name;     /* ERROR */
    aq_bytes_t subject;  /* ERROR: the tag, item id or seq it concerns */
    aq_bytes_t text;     /* ERROR; DEAD: the action; NACK: the reason */
    aq_bytes_t payload;  /* PUT ITEM */
    uint64_t seq;        /* PUT SYNC SYNCED; HELLO: a producer's first unconfirmed put */
    uint64_t id;         /* ITEM */
    uint64_t credit;     /* CREDIT */
    uint64_t timeout_ms; /* JOIN */
    uint64_t attempt;    /* ITEM */
    uint64_t age_us;     /* ITEM */
    uint64_t lease_ms;   /* PUT: asked for (0: the queue's); ITEM: granted */
    uint64_t max_item;   /* WELCOME */
    uint64_t heartbeat_ms; /* HELLO WELCOME */
    uint64_t count;      /* JOINED: items waited for; TIMEOUT: outstanding */
    uint64_t dead;       /* JOINED */
    uint64_t code;       /* ERROR */
    uint64_t mode;       /* JOIN: aq_join_mode_t; SHUTDOWN: aq_shutdown_mode_t */
    uint64_t delay_ms;   /* NACK */
    const aq_bytes_t *list; /* ACK TOUCH NACK: id frames; REPORT: line frames */
    size_t list_size;
} aq_msg_t;

/*  Called once per frame by aq_msg_encode; `more` is non-zero for every frame
    but the last. `is_payload` marks the payload frame of PUT and ITEM, so a
    sink can send it without copying. Returns 0, or non-zero to stop. */
typedef int (aq_frame_sink_fn)(void *ctx, const void *data, size_t size, int more,
                               int is_payload);

/*  Checks `frames` whole against the protocol, then fills `msg`. On error
    returns AQ_BAD_VERSION, AQ_UNKNOWN_COMMAND or AQ_MALFORMED and `msg`
    holds only what could be read (msg->cmd may be set). */
aq_status_t aq_msg_decode(aq_msg_t *msg, const aq_bytes_t *frames, size_t count);

/*  AQ_OK if every field of `msg` is valid for its command, else AQ_MALFORMED. */
aq_status_t aq_msg_check(const aq_msg_t *msg);

/*  Checks `msg` whole, then feeds its frames to `sink`. Returns AQ_MALFORMED
    without calling the sink if a field is invalid, AQ_TRANSPORT if the sink
    stopped. */
aq_status_t aq_msg_encode(const aq_msg_t *msg, aq_frame_sink_fn *sink, void *ctx);

/*  aq_msg_encode without the check, for a caller that has just made it
    (aq_msg_send checks before it sends a routing id). */
aq_status_t aq_msg_emit(const aq_msg_t *msg, aq_frame_sink_fn *sink, void *ctx);

/*  Command word ("PUT") for a command, or "?" for none. */
const char *aq_cmd_name(aq_cmd_t cmd);

/*  Strict decimal parser: 1 to 20 ASCII digits, value within 64 bits. */
int aq_parse_u64(const uint8_t *data, size_t size, uint64_t *value);

/*  Writes `value` in decimal into buf (at least 21 bytes); returns length. */
size_t aq_format_u64(uint64_t value, char *buf);

/*  1 to AQ_NAME_MAX bytes of [A-Za-z0-9._:-]: queue names and client ids. */
int aq_name_is_valid(const uint8_t *data, size_t size);

/*  Helper for building messages: a NUL-terminated string as aq_bytes_t. */
aq_bytes_t aq_bytes_str(const char *string);

#endif
