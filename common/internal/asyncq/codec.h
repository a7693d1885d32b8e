/*  asyncq wire codec: the messages of docs/PROTOCOL.md as C structs.
    Internal: used by the library, the broker and the tests; not installed,
    and not exported by libasyncq.so.

    A message is a list of frames: the signature "asyncq/2", a command word,
    then the command's fields, each in its own frame. The codec knows nothing
    about sockets: aq_msg_decode reads a list of frames, aq_msg_encode hands
    frames one by one to a sink. It never allocates. A decoded message points
    into the frames it was decoded from, so they must outlive it.

    Batches (PUTS, ITEMS) and id lists (ACK, TOUCH, NACK) are binary frames;
    the decoder checks them whole, and the iterators below walk them. */
#ifndef ASYNCQ_CODEC_H
#define ASYNCQ_CODEC_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "asyncq/status.h"
/*  The limits (AQ_NAME_MAX...) and the JOIN and SHUTDOWN modes. */
#include "asyncq/types.h"

#define AQ_SIGNATURE "asyncq/2"
#define AQ_SIGNATURE_V1 "asyncq/1"
/*  Frames of any message but REPORT, signature and command included. */
#define AQ_FIELDS_FRAMES_MAX 12
/*  A REPORT: signature, command, tag and its lines. */
#define AQ_REPORT_FRAMES_MAX (AQ_LIST_MAX + 3)
/*  Bytes before each payload in an ITEMS batch. */
#define AQ_ITEMS_ENTRY_HEADER 28
/*  Bytes before each payload in a PUTS batch. */
#define AQ_PUTS_ENTRY_HEADER 4

typedef enum {
    AQ_CMD_NONE = 0,
    AQ_CMD_PUT,
    AQ_CMD_PUTS,
    AQ_CMD_HELLO,
    AQ_CMD_WELCOME,
    AQ_CMD_CREDIT,
    AQ_CMD_CREDITED,
    AQ_CMD_ITEM,
    AQ_CMD_ITEMS,
    AQ_CMD_ACK,
    AQ_CMD_TOUCH,
    AQ_CMD_NACK,
    AQ_CMD_JOIN,
    AQ_CMD_JOINED,
    AQ_CMD_TIMEOUT,
    AQ_CMD_SYNC,
    AQ_CMD_SYNCED,
    AQ_CMD_HELD,
    AQ_CMD_STATS,
    AQ_CMD_INFO,
    AQ_CMD_REPORT,
    AQ_CMD_DEAD,
    AQ_CMD_SHUTDOWN,
    AQ_CMD_ERROR,
    AQ_CMD_BYE,
    AQ_CMD_HEARTBEAT,
    AQ_CMD_REOPEN,
    AQ_CMD_PURGE,
    AQ_CMD_DELETE,
    AQ_CMD_PEEK,
    AQ_CMD_PAUSE,
    AQ_CMD_RESUME,
    AQ_CMD_READY,
    AQ_CMD_REPLICAS,
    AQ_CMD_COUNT_
} aq_cmd_t;

typedef struct {
    const uint8_t *data;
    size_t size;
} aq_bytes_t;

/*  A put's options frame (PROTOCOL.md 4.1): at most this many bytes. */
#define AQ_OPTIONS_MAX 128
#define AQ_PRIORITY_MIN INT32_MIN
#define AQ_PRIORITY_MAX INT32_MAX

/*  Which options a put gave. AQ_PUT_EACH: a PUTS whose every entry has
    options of its own (the options frame is `each`, alone). */
enum { AQ_PUT_DELAY = 1, AQ_PUT_AT = 2, AQ_PUT_FRONT = 4, AQ_PUT_EACH = 8 };

typedef struct {
    int32_t priority;  /* 0 unless given */
    uint8_t flags;     /* AQ_PUT_* */
    uint64_t delay_ms; /* AQ_PUT_DELAY */
    uint64_t at_ms;    /* AQ_PUT_AT: wall clock, ms since 1970 */
} aq_options_t;

/*  One struct for every command; each command uses the fields its frame
    table names (see codec.c and docs/PROTOCOL.md). */
typedef struct {
    aq_cmd_t cmd;
    size_t fields_read;  /* fields decoded and valid, in order, before any error */
    aq_bytes_t tag;      /* every ROUTER request and its reply; ERROR */
    aq_bytes_t queue;    /* PUT PUTS CREDIT CREDITED ITEM ITEMS JOIN JOINED TIMEOUT HELD STATS DEAD
                            SHUTDOWN REOPEN PURGE DELETE */
    aq_bytes_t client;   /* HELLO */
    aq_bytes_t producer; /* PUT PUTS SYNC SYNCED HELD */
    aq_bytes_t broker;   /* WELCOME */
    aq_bytes_t name;     /* ERROR */
    aq_bytes_t subject;  /* ERROR: the ids, seq range or queue it concerns */
    aq_bytes_t text;     /* ERROR; NACK: the reason; DEAD, REPLICAS: the action; WELCOME:
                            roles */
    aq_bytes_t persistence; /* WELCOME */
    aq_bytes_t payload;  /* PUT ITEM */
    aq_bytes_t batch;    /* PUTS ITEMS: the items frame */
    aq_bytes_t ids;      /* ACK TOUCH NACK: 8 bytes per id */
    aq_bytes_t options;  /* PUT PUTS: the options frame; empty: none (not sent) */
    aq_bytes_t with;     /* HELLO: "service"; CREDIT: "priority", "ready" (4.15); words
                            separated by a space, or empty (not sent) */
    aq_bytes_t service;  /* WELCOME, when HELLO asked: "shard=K brokers=..." (4.15) */
    aq_bytes_t priorities; /* ITEMS: count big-endian int32, or empty (not sent) */
    int32_t priority;    /* ITEM, if has_priority (else not sent) */
    int has_priority;
    aq_options_t put; /* PUT PUTS: the options, as decoded; with `each`, also the
                         entries' longest delay-ms and latest at-ms */
    uint64_t seq;        /* PUT PUTS SYNC SYNCED HELD; HELLO: first unconfirmed put */
    uint64_t count;      /* PUTS ITEMS: items; JOINED: waited for; TIMEOUT: outstanding;
                            PEEK: items to show */
    uint64_t id;         /* ITEM */
    uint64_t credit;     /* CREDIT CREDITED */
    uint64_t batch_max;  /* CREDIT: items per ITEMS (0: ITEM); WELCOME: max-batch */
    uint64_t timeout_ms; /* JOIN */
    uint64_t attempt;    /* ITEM */
    uint64_t age_us;     /* ITEM */
    uint64_t lease_ms;   /* PUT PUTS: asked for (0: the queue's); ITEM: granted */
    uint64_t max_item;   /* WELCOME */
    uint64_t heartbeat_ms; /* WELCOME */
    uint64_t window;     /* WELCOME: puts */
    uint64_t window_bytes; /* WELCOME: bytes */
    uint64_t dead;       /* JOINED */
    uint64_t code;       /* ERROR */
    uint64_t mode;       /* JOIN: aq_join_mode_t; SHUTDOWN: aq_shutdown_mode_t */
    uint64_t delay_ms;   /* NACK */
    uint64_t beat;       /* HEARTBEAT: its number */
    const aq_bytes_t *list; /* REPORT: line frames */
    size_t list_size;
} aq_msg_t;

/*  Called once per frame by aq_msg_encode; `more` is non-zero for every frame
    but the last. `is_payload` marks the payload and batch frames, so a sink
    can send them without copying. Returns 0, or non-zero to stop. */
typedef int (aq_frame_sink_fn)(void *ctx, const void *data, size_t size, int more,
                               int is_payload);

/*  Checks `frames` whole against the protocol, then fills `msg`. On error
    returns AQ_BAD_VERSION, AQ_UNKNOWN_COMMAND or AQ_MALFORMED, and `msg`
    holds only what could be read: msg->cmd if the command word was known,
    and the first msg->fields_read fields (so a refused put can still be
    attributed to its producer and seq, and a request's tag echoed). */
aq_status_t aq_msg_decode(aq_msg_t *msg, const aq_bytes_t *frames, size_t count);

/*  AQ_OK if every field of `msg` is valid for its command, else AQ_MALFORMED. */
aq_status_t aq_msg_check(const aq_msg_t *msg);

/*  Checks `msg` whole, then feeds its frames to `sink`. Returns AQ_MALFORMED
    without calling the sink if a field is invalid, AQ_TRANSPORT if the sink
    stopped. */
aq_status_t aq_msg_encode(const aq_msg_t *msg, aq_frame_sink_fn *sink, void *ctx);

/*  aq_msg_encode without the check, for a caller that has just made it. */
aq_status_t aq_msg_emit(const aq_msg_t *msg, aq_frame_sink_fn *sink, void *ctx);

/*  Command word ("PUT") for a command, or "?" for none. */
const char *aq_cmd_name(aq_cmd_t cmd);

/*  Strict decimal parser: 1 to 20 ASCII digits, value within 64 bits. */
int aq_parse_u64(const uint8_t *data, size_t size, uint64_t *value);

/*  Reads a put's options frame (empty: none). Returns 1, or 0 with `why`
    (if not NULL) set to a sentence naming what is wrong. Ranges that are
    the broker's to set (the longest delay) are not checked here. */
int aq_put_options_parse(aq_bytes_t frame, aq_options_t *options, const char **why);

/*  Writes the options frame for `options` into buf (AQ_OPTIONS_MAX + 1
    bytes); returns its length, 0 if there is nothing to say. */
size_t aq_put_options_format(const aq_options_t *options, char *buf);

/*  Whether a `with` field (HELLO, CREDIT) holds `word`. */
int aq_with_has(aq_bytes_t with, const char *word);

/*  Writes `value` in decimal into buf (at least 21 bytes); returns length. */
size_t aq_format_u64(uint64_t value, char *buf);

/*  The same for a signed 32-bit value (at most 11 bytes). */
size_t aq_format_i32(int32_t value, char *buf);

/*  1 to AQ_NAME_MAX bytes of [A-Za-z0-9._:-]: queue names and client ids. */
int aq_name_is_valid(const uint8_t *data, size_t size);

/*  Well-formed UTF-8 (no overlong forms, no surrogates, at most U+10FFFF). */
int aq_utf8_is_valid(const uint8_t *data, size_t size);

/*  The length of the well-formed UTF-8 sequence at `data` (at most `size`
    bytes): 1 to 4, or 0 if there is none. */
size_t aq_utf8_sequence(const uint8_t *data, size_t size);

/*  Helper for building messages: a NUL-terminated string as aq_bytes_t. */
aq_bytes_t aq_bytes_str(const char *string);

/*  Big-endian integers, as batches and id lists carry them. Inline: every
    item's header goes through them on both sides, and a call cost the
    broker 5 % of its instructions and a consumer 20 %. codec.c holds the
    out-of-line copies (C99 inline), for a caller that takes an address. */
#if defined(__GNUC__) && defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
/*  One swap and one unaligned access: the byte-wise form is not merged
    where the destination may alias the values (an item's fields), and
    cost 6 instructions per integer there. */
inline void aq_put_u32(uint8_t *dest, uint32_t value)
{
    value = __builtin_bswap32(value);
    memcpy(dest, &value, 4);
}

inline void aq_put_u64(uint8_t *dest, uint64_t value)
{
    value = __builtin_bswap64(value);
    memcpy(dest, &value, 8);
}

inline uint32_t aq_get_u32(const uint8_t *src)
{
    uint32_t value;
    memcpy(&value, src, 4);
    return __builtin_bswap32(value);
}

inline uint64_t aq_get_u64(const uint8_t *src)
{
    uint64_t value;
    memcpy(&value, src, 8);
    return __builtin_bswap64(value);
}
#else
inline void aq_put_u32(uint8_t *dest, uint32_t value)
{
    dest[0] = (uint8_t) (value >> 24);
    dest[1] = (uint8_t) (value >> 16);
    dest[2] = (uint8_t) (value >> 8);
    dest[3] = (uint8_t) value;
}

inline void aq_put_u64(uint8_t *dest, uint64_t value)
{
    aq_put_u32(dest, (uint32_t) (value >> 32));
    aq_put_u32(dest + 4, (uint32_t) value);
}

inline uint32_t aq_get_u32(const uint8_t *src)
{
    return (uint32_t) src[0] << 24 | (uint32_t) src[1] << 16 | (uint32_t) src[2] << 8 | src[3];
}

inline uint64_t aq_get_u64(const uint8_t *src)
{
    return (uint64_t) aq_get_u32(src) << 32 | aq_get_u32(src + 4);
}
#endif

/*  Number of ids in an id list frame, and the i-th. */
size_t aq_ids_count(aq_bytes_t ids);
uint64_t aq_ids_get(aq_bytes_t ids, size_t index);

/*  Walks a batch that aq_msg_decode accepted. */
typedef struct {
    const uint8_t *at;
    const uint8_t *end;
    int each;             /* PUTS `each`: entries carry their options */
    aq_options_t options; /* the last entry's, when `each` */
} aq_batch_iter_t;

void aq_batch_iter_init(aq_batch_iter_t *iter, aq_bytes_t batch);

/*  A PUTS batch, whose entries carry their options if `each`. */
void aq_puts_iter_init(aq_batch_iter_t *iter, aq_bytes_t batch, int each);

/*  aq_puts_next's cases: an `each` entry (its options, then as a plain
    one), and a plain one. */
int aq_puts_next_each(aq_batch_iter_t *iter, aq_bytes_t *payload);

/*  PUTS: the next item's payload (and, if `each`, its options in
    iter->options); 0 at the end, or at an entry that is not valid.
    Inline: it runs three times per item put. */
inline int aq_puts_next_plain(aq_batch_iter_t *iter, aq_bytes_t *payload)
{
    if ((size_t) (iter->end - iter->at) < AQ_PUTS_ENTRY_HEADER)
        return 0;
    uint32_t size = aq_get_u32(iter->at);
    if ((size_t) (iter->end - iter->at) - AQ_PUTS_ENTRY_HEADER < size)
        return 0;
    payload->data = iter->at + AQ_PUTS_ENTRY_HEADER;
    payload->size = size;
    iter->at += AQ_PUTS_ENTRY_HEADER + size;
    return 1;
}

inline int aq_puts_next(aq_batch_iter_t *iter, aq_bytes_t *payload)
{
    return iter->each ? aq_puts_next_each(iter, payload) : aq_puts_next_plain(iter, payload);
}

/*  Writes one PUTS entry at dest (AQ_PUTS_ENTRY_HEADER + size bytes). */
size_t aq_puts_entry_write(uint8_t *dest, const void *data, uint32_t size);

/*  Writes one entry of an `each` PUTS: 1 + options.size +
    AQ_PUTS_ENTRY_HEADER + size bytes. */
size_t aq_puts_entry_write_each(uint8_t *dest, aq_bytes_t options, const void *data,
                                uint32_t size);

typedef struct {
    uint64_t id;
    uint32_t attempt;
    uint64_t age_us;
    uint32_t lease_ms;
    aq_bytes_t payload;
} aq_delivery_t;

/*  ITEMS: the next delivery; 0 at the end. */
int aq_items_next(aq_batch_iter_t *iter, aq_delivery_t *delivery);

/*  Writes one ITEMS entry at dest (AQ_ITEMS_ENTRY_HEADER + payload size
    bytes). */
size_t aq_items_entry_write(uint8_t *dest, const aq_delivery_t *delivery);

#endif
