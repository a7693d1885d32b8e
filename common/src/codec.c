/*  Table-driven codec: each command is a list of typed fields, each field one
    frame. Decoding validates every frame before it reports success, so the
    broker never acts on half a message; it records how many fields it read,
    so an error can still name the request. */
#include "asyncq/codec.h"

#include <stdbool.h>
#include <string.h>

typedef enum {
    F_NAME,        /* 1..AQ_NAME_MAX bytes of the name alphabet */
    F_NAME_OPT,    /* a name, or empty */
    F_TAG,         /* 0..AQ_TAG_MAX bytes, any value */
    F_TEXT,        /* 0..AQ_TEXT_MAX bytes of UTF-8 */
    F_SUBJECT,     /* 0..AQ_SUBJECT_MAX bytes of UTF-8 */
    F_U64,         /* decimal number */
    F_JOIN_MODE,   /* "before" or "all" */
    F_SHUT_MODE,   /* "drain" or "immediate" */
    F_PAYLOAD,     /* any bytes, any size */
    F_IDS,         /* 1..AQ_LIST_MAX ids, 8 bytes each, one frame */
    F_PUTS_BATCH,  /* msg->count PUTS entries, exactly */
    F_ITEMS_BATCH, /* msg->count ITEMS entries, exactly */
    F_TEXT_LIST,   /* 0..AQ_LIST_MAX texts, one per frame, to the end */
    /* Optional, and only as a command's last field: absent, or not sent
       when empty (an older peer takes no such frame). */
    F_OPTIONS,     /* a put's options */
    F_WITH,        /* HELLO CREDIT: what the client asks for: words of s_with_words */
    F_SERVICE,     /* WELCOME: the service (4.15), as text */
    F_PRIORITY,    /* ITEM: a signed decimal within int32 (sent if has_priority) */
    F_PRIORITIES   /* ITEMS: msg->count big-endian int32, one frame */
} field_type_t;

#define F_IS_OPTIONAL(type) ((type) >= F_OPTIONS)

typedef struct {
    field_type_t type;
    size_t offset; /* of the aq_bytes_t or uint64_t member in aq_msg_t */
} field_t;

#define MAX_FIELDS 10
typedef struct {
    const char *word;
    size_t field_count;
    field_t fields[MAX_FIELDS];
} command_t;

#define B(member) offsetof(aq_msg_t, member)

/*  The words of a mode field, by value. */
static const char *const s_join_modes[] = {"before", "all", NULL};
static const char *const s_shutdown_modes[] = {"drain", "immediate", NULL};

static const char *const *s_mode_words(field_type_t type)
{
    return type == F_JOIN_MODE ? s_join_modes : s_shutdown_modes;
}

static const command_t s_commands[AQ_CMD_COUNT_] = {
    [AQ_CMD_PUT] = {"PUT", 6, {{F_NAME, B(producer)}, {F_U64, B(seq)}, {F_NAME, B(queue)},
                               {F_U64, B(lease_ms)}, {F_PAYLOAD, B(payload)},
                               {F_OPTIONS, B(options)}}},
    [AQ_CMD_PUTS] = {"PUTS", 7, {{F_NAME, B(producer)}, {F_U64, B(seq)}, {F_U64, B(count)},
                                 {F_NAME, B(queue)}, {F_U64, B(lease_ms)},
                                 {F_PUTS_BATCH, B(batch)}, {F_OPTIONS, B(options)}}},
    [AQ_CMD_HELLO] = {"HELLO", 4, {{F_TAG, B(tag)}, {F_NAME, B(client)}, {F_U64, B(seq)},
                                   {F_WITH, B(with)}}},
    [AQ_CMD_WELCOME] = {"WELCOME", 10, {{F_TAG, B(tag)}, {F_NAME, B(broker)},
                                        {F_U64, B(max_item)}, {F_U64, B(heartbeat_ms)},
                                        {F_U64, B(batch_max)}, {F_U64, B(window)},
                                        {F_U64, B(window_bytes)}, {F_TEXT, B(text)},
                                        {F_TEXT, B(persistence)}, {F_SERVICE, B(service)}}},
    [AQ_CMD_CREDIT] = {"CREDIT", 5, {{F_TAG, B(tag)}, {F_NAME, B(queue)}, {F_U64, B(credit)},
                                     {F_U64, B(batch_max)}, {F_WITH, B(with)}}},
    [AQ_CMD_CREDITED] = {"CREDITED", 3, {{F_TAG, B(tag)}, {F_NAME, B(queue)},
                                         {F_U64, B(credit)}}},
    [AQ_CMD_ITEM] = {"ITEM", 7, {{F_NAME, B(queue)}, {F_U64, B(id)}, {F_U64, B(attempt)},
                                 {F_U64, B(age_us)}, {F_U64, B(lease_ms)},
                                 {F_PAYLOAD, B(payload)}, {F_PRIORITY, B(priority)}}},
    [AQ_CMD_ITEMS] = {"ITEMS", 4, {{F_NAME, B(queue)}, {F_U64, B(count)},
                                   {F_ITEMS_BATCH, B(batch)}, {F_PRIORITIES, B(priorities)}}},
    [AQ_CMD_ACK] = {"ACK", 2, {{F_TAG, B(tag)}, {F_IDS, B(ids)}}},
    [AQ_CMD_TOUCH] = {"TOUCH", 2, {{F_TAG, B(tag)}, {F_IDS, B(ids)}}},
    [AQ_CMD_NACK] = {"NACK", 4, {{F_TAG, B(tag)}, {F_U64, B(delay_ms)}, {F_TEXT, B(text)},
                                 {F_IDS, B(ids)}}},
    [AQ_CMD_JOIN] = {"JOIN", 4, {{F_TAG, B(tag)}, {F_NAME, B(queue)},
                                 {F_U64, B(timeout_ms)}, {F_JOIN_MODE, B(mode)}}},
    [AQ_CMD_JOINED] = {"JOINED", 4, {{F_TAG, B(tag)}, {F_NAME, B(queue)},
                                     {F_U64, B(count)}, {F_U64, B(dead)}}},
    [AQ_CMD_TIMEOUT] = {"TIMEOUT", 3, {{F_TAG, B(tag)}, {F_NAME, B(queue)}, {F_U64, B(count)}}},
    [AQ_CMD_SYNC] = {"SYNC", 3, {{F_TAG, B(tag)}, {F_NAME, B(producer)}, {F_U64, B(seq)}}},
    [AQ_CMD_SYNCED] = {"SYNCED", 3, {{F_TAG, B(tag)}, {F_NAME, B(producer)}, {F_U64, B(seq)}}},
    [AQ_CMD_HELD] = {"HELD", 4, {{F_TAG, B(tag)}, {F_NAME, B(producer)}, {F_U64, B(seq)},
                                 {F_NAME, B(queue)}}},
    [AQ_CMD_STATS] = {"STATS", 2, {{F_TAG, B(tag)}, {F_NAME_OPT, B(queue)}}},
    [AQ_CMD_INFO] = {"INFO", 1, {{F_TAG, B(tag)}}},
    [AQ_CMD_REPORT] = {"REPORT", 2, {{F_TAG, B(tag)}, {F_TEXT_LIST, 0}}},
    [AQ_CMD_DEAD] = {"DEAD", 3, {{F_TAG, B(tag)}, {F_NAME, B(queue)}, {F_TEXT, B(text)}}},
    [AQ_CMD_SHUTDOWN] = {"SHUTDOWN", 3, {{F_TAG, B(tag)}, {F_NAME_OPT, B(queue)},
                                         {F_SHUT_MODE, B(mode)}}},
    [AQ_CMD_ERROR] = {"ERROR", 5, {{F_U64, B(code)}, {F_TEXT, B(name)}, {F_TAG, B(tag)},
                                   {F_SUBJECT, B(subject)}, {F_TEXT, B(text)}}},
    [AQ_CMD_BYE] = {"BYE", 1, {{F_TAG, B(tag)}}},
    [AQ_CMD_HEARTBEAT] = {"HEARTBEAT", 1, {{F_U64, B(beat)}}},
    [AQ_CMD_REOPEN] = {"REOPEN", 2, {{F_TAG, B(tag)}, {F_NAME_OPT, B(queue)}}},
    [AQ_CMD_PURGE] = {"PURGE", 2, {{F_TAG, B(tag)}, {F_NAME, B(queue)}}},
    [AQ_CMD_DELETE] = {"DELETE", 2, {{F_TAG, B(tag)}, {F_NAME, B(queue)}}},
    [AQ_CMD_PEEK] = {"PEEK", 3, {{F_TAG, B(tag)}, {F_NAME, B(queue)}, {F_U64, B(count)}}},
    [AQ_CMD_PAUSE] = {"PAUSE", 2, {{F_TAG, B(tag)}, {F_NAME, B(queue)}}},
    [AQ_CMD_RESUME] = {"RESUME", 2, {{F_TAG, B(tag)}, {F_NAME, B(queue)}}},
    [AQ_CMD_READY] = {"READY", 1, {{F_NAME, B(queue)}}},
    [AQ_CMD_REPLICAS] = {"REPLICAS", 2, {{F_TAG, B(tag)}, {F_TEXT, B(text)}}},
};

const char *aq_cmd_name(aq_cmd_t cmd)
{
    if (cmd <= AQ_CMD_NONE || cmd >= AQ_CMD_COUNT_)
        return "?";
    return s_commands[cmd].word;
}

aq_bytes_t aq_bytes_str(const char *string)
{
    aq_bytes_t bytes = {(const uint8_t *) string, string ? strlen(string) : 0};
    return bytes;
}

int aq_parse_u64(const uint8_t *data, size_t size, uint64_t *value)
{
    if (size == 0 || size > AQ_U64_DIGITS)
        return 0;
    uint64_t result = 0;
    for (size_t i = 0; i < size; i++) {
        if (data[i] < '0' || data[i] > '9')
            return 0;
        uint64_t digit = (uint64_t) (data[i] - '0');
        if (result > (UINT64_MAX - digit) / 10)
            return 0;
        result = result * 10 + digit;
    }
    *value = result;
    return 1;
}

/*  A signed decimal within int32: an optional '-', then aq_parse_u64's
    digits. */
static int s_parse_i32(const uint8_t *data, size_t size, int32_t *value)
{
    bool negative = size && data[0] == '-';
    uint64_t magnitude;
    if (!aq_parse_u64(data + negative, size - negative, &magnitude)
        || magnitude > (negative ? (uint64_t) INT32_MAX + 1 : (uint64_t) INT32_MAX))
        return 0;
    *value = negative ? (int32_t) (-(int64_t) magnitude) : (int32_t) magnitude;
    return 1;
}

size_t aq_format_i32(int32_t value, char *buf)
{
    size_t sign = value < 0;
    if (sign)
        buf[0] = '-';
    return sign + aq_format_u64(value < 0 ? (uint64_t) (-(int64_t) value) : (uint64_t) value,
                                buf + sign);
}

size_t aq_format_u64(uint64_t value, char *buf)
{
    char tmp[AQ_U64_DIGITS];
    size_t length = 0;
    do {
        tmp[length++] = (char) ('0' + value % 10);
        value /= 10;
    } while (value);
    for (size_t i = 0; i < length; i++)
        buf[i] = tmp[length - 1 - i];
    buf[length] = '\0';
    return length;
}

int aq_name_is_valid(const uint8_t *data, size_t size)
{
    if (size == 0 || size > AQ_NAME_MAX)
        return 0;
    for (size_t i = 0; i < size; i++) {
        uint8_t c = data[i];
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')
                  || c == '.' || c == '_' || c == ':' || c == '-';
        if (!ok)
            return 0;
    }
    return 1;
}

/*  Unicode's table 3-7 of well-formed byte sequences: the second byte's range
    depends on the first, which rules out overlong forms and surrogates. */
size_t aq_utf8_sequence(const uint8_t *data, size_t size)
{
    uint8_t c = data[0];
    size_t length = c < 0x80                 ? 1
                    : c >= 0xC2 && c <= 0xDF ? 2
                    : c >= 0xE0 && c <= 0xEF ? 3
                    : c >= 0xF0 && c <= 0xF4 ? 4
                                             : 0;
    if (!length || length > size)
        return 0;
    uint8_t low = c == 0xE0 ? 0xA0 : c == 0xF0 ? 0x90 : 0x80;
    uint8_t high = c == 0xED ? 0x9F : c == 0xF4 ? 0x8F : 0xBF;
    for (size_t i = 1; i < length; i++, low = 0x80, high = 0xBF)
        if (data[i] < low || data[i] > high)
            return 0;
    return length;
}

int aq_utf8_is_valid(const uint8_t *data, size_t size)
{
    for (size_t i = 0, length; i < size; i += length)
        if (!(length = aq_utf8_sequence(data + i, size - i)))
            return 0;
    return 1;
}

static bool s_starts(const uint8_t **at, const uint8_t *end, const char *word)
{
    size_t length = strlen(word);
    if ((size_t) (end - *at) < length || memcmp(*at, word, length) != 0)
        return false;
    *at += length;
    return true;
}

int aq_put_options_parse(aq_bytes_t frame, aq_options_t *options, const char **why)
{
    const char *ignored;
    if (!why)
        why = &ignored;
    *options = (aq_options_t){0};
    if (frame.size > AQ_OPTIONS_MAX) {
        *why = "options longer than 128 bytes";
        return 0;
    }
    const uint8_t *at = frame.data, *end = frame.data + frame.size;
    bool has_priority = false;
    while (at < end) {
        const uint8_t *space = memchr(at, ' ', (size_t) (end - at));
        const uint8_t *stop = space ? space : end;
        if (space && space + 1 == end) {
            *why = "options end with a space";
            return 0;
        }
        uint64_t value = 0;
        int flag;
        if (s_starts(&at, stop, "priority=")) {
            if (has_priority) {
                *why = "priority given twice";
                return 0;
            }
            if (!s_parse_i32(at, (size_t) (stop - at), &options->priority)) {
                *why = "priority is a whole number from -2147483648 to 2147483647";
                return 0;
            }
            has_priority = true;
        }
        else if ((flag = s_starts(&at, stop, "delay-ms=") ? AQ_PUT_DELAY
                         : s_starts(&at, stop, "at-ms=")  ? AQ_PUT_AT
                                                          : 0)) {
            if (options->flags & flag) {
                *why = flag == AQ_PUT_DELAY ? "delay-ms given twice" : "at-ms given twice";
                return 0;
            }
            if (!aq_parse_u64(at, (size_t) (stop - at), &value)) {
                *why = flag == AQ_PUT_DELAY ? "delay-ms is a number of milliseconds"
                                            : "at-ms is a number of milliseconds since 1970";
                return 0;
            }
            options->flags |= (uint8_t) flag;
            if (flag == AQ_PUT_DELAY)
                options->delay_ms = value;
            else
                options->at_ms = value;
        }
        else if (stop - at == 4 && memcmp(at, "each", 4) == 0) {
            if (options->flags & AQ_PUT_EACH) {
                *why = "each given twice";
                return 0;
            }
            options->flags |= AQ_PUT_EACH;
        }
        else if (stop - at == 5 && memcmp(at, "front", 5) == 0) {
            if (options->flags & AQ_PUT_FRONT) {
                *why = "front given twice";
                return 0;
            }
            options->flags |= AQ_PUT_FRONT;
        }
        else {
            *why = "unknown option (the options are priority=, delay-ms=, at-ms=, front and "
                   "each)";
            return 0;
        }
        at = space ? space + 1 : end;
    }
    if ((options->flags & AQ_PUT_DELAY) && (options->flags & AQ_PUT_AT)) {
        *why = "delay-ms and at-ms cannot both be given";
        return 0;
    }
    if ((options->flags & AQ_PUT_FRONT) && (options->flags & (AQ_PUT_DELAY | AQ_PUT_AT))) {
        *why = "front cannot be given with a delay";
        return 0;
    }
    if ((options->flags & AQ_PUT_EACH) && (options->flags != AQ_PUT_EACH || options->priority)) {
        *why = "each is given alone (each item's options are in its entry)";
        return 0;
    }
    return 1;
}

size_t aq_put_options_format(const aq_options_t *options, char *buf)
{
    size_t length = 0;
    char number[AQ_U64_DIGITS + 1];
    if (options->priority) {
        memcpy(buf, "priority=", 9);
        length = 9 + aq_format_i32(options->priority, buf + 9);
    }
    if (options->flags & (AQ_PUT_DELAY | AQ_PUT_AT)) {
        const char *key = options->flags & AQ_PUT_DELAY ? "delay-ms=" : "at-ms=";
        if (length)
            buf[length++] = ' ';
        memcpy(buf + length, key, strlen(key));
        length += strlen(key);
        size_t digits = aq_format_u64(
            options->flags & AQ_PUT_DELAY ? options->delay_ms : options->at_ms, number);
        memcpy(buf + length, number, digits);
        length += digits;
    }
    if (options->flags & AQ_PUT_FRONT) {
        if (length)
            buf[length++] = ' ';
        memcpy(buf + length, "front", 5);
        length += 5;
    }
    if (options->flags & AQ_PUT_EACH) {
        memcpy(buf, "each", 4);
        length = 4;
    }
    buf[length] = '\0';
    return length;
}

/*  The out-of-line copies of the header's inline functions. */
extern inline void aq_put_u32(uint8_t *dest, uint32_t value);
extern inline void aq_put_u64(uint8_t *dest, uint64_t value);
extern inline uint32_t aq_get_u32(const uint8_t *src);
extern inline uint64_t aq_get_u64(const uint8_t *src);

size_t aq_ids_count(aq_bytes_t ids)
{
    return ids.size / 8;
}

uint64_t aq_ids_get(aq_bytes_t ids, size_t index)
{
    return aq_get_u64(ids.data + index * 8);
}

void aq_batch_iter_init(aq_batch_iter_t *iter, aq_bytes_t batch)
{
    iter->at = batch.data;
    iter->end = batch.data + batch.size;
    iter->each = 0;
}

void aq_puts_iter_init(aq_batch_iter_t *iter, aq_bytes_t batch, int each)
{
    aq_batch_iter_init(iter, batch);
    iter->each = each;
}

extern inline int aq_puts_next(aq_batch_iter_t *iter, aq_bytes_t *payload);
extern inline int aq_puts_next_plain(aq_batch_iter_t *iter, aq_bytes_t *payload);

int aq_puts_next_each(aq_batch_iter_t *iter, aq_bytes_t *payload)
{
    if (iter->at == iter->end || (size_t) (iter->end - iter->at) < 1u + iter->at[0])
        return 0;
    aq_bytes_t options = {iter->at + 1, iter->at[0]};
    if (!aq_put_options_parse(options, &iter->options, NULL)
        || (iter->options.flags & AQ_PUT_EACH))
        return 0;
    const uint8_t *entry = iter->at;
    iter->at += 1 + options.size;
    int ok = aq_puts_next_plain(iter, payload);
    if (!ok)
        iter->at = entry;
    return ok;
}

size_t aq_puts_entry_write_each(uint8_t *dest, aq_bytes_t options, const void *data,
                                uint32_t size)
{
    dest[0] = (uint8_t) options.size;
    if (options.size)
        memcpy(dest + 1, options.data, options.size);
    return 1 + options.size + aq_puts_entry_write(dest + 1 + options.size, data, size);
}

size_t aq_puts_entry_write(uint8_t *dest, const void *data, uint32_t size)
{
    aq_put_u32(dest, size);
    if (size)
        memcpy(dest + AQ_PUTS_ENTRY_HEADER, data, size);
    return AQ_PUTS_ENTRY_HEADER + (size_t) size;
}

int aq_items_next(aq_batch_iter_t *iter, aq_delivery_t *delivery)
{
    if ((size_t) (iter->end - iter->at) < AQ_ITEMS_ENTRY_HEADER)
        return 0;
    const uint8_t *at = iter->at;
    uint32_t size = aq_get_u32(at + 24);
    if ((size_t) (iter->end - at) - AQ_ITEMS_ENTRY_HEADER < size)
        return 0;
    delivery->id = aq_get_u64(at);
    delivery->attempt = aq_get_u32(at + 8);
    delivery->age_us = aq_get_u64(at + 12);
    delivery->lease_ms = aq_get_u32(at + 20);
    delivery->payload.data = at + AQ_ITEMS_ENTRY_HEADER;
    delivery->payload.size = size;
    iter->at += AQ_ITEMS_ENTRY_HEADER + size;
    return 1;
}

size_t aq_items_entry_write(uint8_t *dest, const aq_delivery_t *delivery)
{
    aq_put_u64(dest, delivery->id);
    aq_put_u32(dest + 8, delivery->attempt);
    aq_put_u64(dest + 12, delivery->age_us);
    aq_put_u32(dest + 20, delivery->lease_ms);
    aq_put_u32(dest + 24, (uint32_t) delivery->payload.size);
    if (delivery->payload.size)
        memcpy(dest + AQ_ITEMS_ENTRY_HEADER, delivery->payload.data, delivery->payload.size);
    return AQ_ITEMS_ENTRY_HEADER + delivery->payload.size;
}

/*  True if `batch` holds exactly `count` entries (count >= 1). */
/*  `each` (a PUTS whose entries carry options): the entries' longest delay
    and latest time go in `put` (with AQ_PUT_DELAY, AQ_PUT_AT), so that a
    broker checks them against its limit without reading the batch again. */
static bool s_batch_is_valid(aq_bytes_t batch, uint64_t count, field_type_t type, int each,
                             aq_options_t *put)
{
    if (count == 0 || (batch.size && !batch.data))
        return false;
    aq_batch_iter_t iter;
    aq_batch_iter_init(&iter, batch);
    aq_bytes_t payload;
    if (each) {
        iter.each = 1;
        for (uint64_t i = 0; i < count; i++) {
            if (!aq_puts_next_each(&iter, &payload))
                return false;
            const aq_options_t *options = &iter.options;
            if ((options->flags & AQ_PUT_DELAY) && options->delay_ms >= put->delay_ms) {
                put->flags |= AQ_PUT_DELAY;
                put->delay_ms = options->delay_ms;
            }
            if ((options->flags & AQ_PUT_AT) && options->at_ms >= put->at_ms) {
                put->flags |= AQ_PUT_AT;
                put->at_ms = options->at_ms;
            }
        }
        return iter.at == iter.end;
    }
    for (uint64_t i = 0; i < count; i++) {
        aq_delivery_t delivery;
        int ok = type == F_PUTS_BATCH ? aq_puts_next_plain(&iter, &payload)
                                      : aq_items_next(&iter, &delivery);
        if (!ok)
            return false;
    }
    return iter.at == iter.end;
}

static bool s_bytes_equal(aq_bytes_t bytes, const char *text)
{
    size_t length = strlen(text);
    return bytes.size == length && memcmp(bytes.data, text, length) == 0;
}

static aq_bytes_t *s_bytes_at(aq_msg_t *msg, size_t offset)
{
    return (aq_bytes_t *) ((char *) msg + offset);
}

static uint64_t *s_u64_at(aq_msg_t *msg, size_t offset)
{
    return (uint64_t *) ((char *) msg + offset);
}

static aq_bytes_t s_bytes_get(const aq_msg_t *msg, size_t offset)
{
    return *(const aq_bytes_t *) ((const char *) msg + offset);
}

static uint64_t s_u64_get(const aq_msg_t *msg, size_t offset)
{
    return *(const uint64_t *) ((const char *) msg + offset);
}

static bool s_text_is_valid(aq_bytes_t frame)
{
    return frame.size <= AQ_TEXT_MAX && aq_utf8_is_valid(frame.data, frame.size);
}

/*  `with` (HELLO, CREDIT): known words, each once, one space between. */
static const char *const s_with_words[] = {"priority", "ready", "service", NULL};

static bool s_with_is_valid(aq_bytes_t frame)
{
    if (!frame.size)
        return true;
    unsigned seen = 0;
    const uint8_t *at = frame.data, *end = frame.data + frame.size;
    while (at < end) {
        const uint8_t *space = memchr(at, ' ', (size_t) (end - at)), *stop = space ? space : end;
        if (space && space + 1 == end)
            return false;
        unsigned word = 0;
        while (s_with_words[word]
               && !s_bytes_equal((aq_bytes_t){at, (size_t) (stop - at)}, s_with_words[word]))
            word++;
        if (!s_with_words[word] || (seen & 1u << word))
            return false;
        seen |= 1u << word;
        at = space ? space + 1 : end;
    }
    return true;
}

int aq_with_has(aq_bytes_t with, const char *word)
{
    if (!with.size)
        return 0;
    size_t length = strlen(word);
    const uint8_t *at = with.data, *end = with.data + with.size;
    while (at < end) {
        const uint8_t *space = memchr(at, ' ', (size_t) (end - at)), *stop = space ? space : end;
        if ((size_t) (stop - at) == length && memcmp(at, word, length) == 0)
            return 1;
        at = space ? space + 1 : end;
    }
    return 0;
}

/*  Checks one frame against its field type and stores it in msg. A batch
    is checked against msg->count, decoded before it. */
static bool s_decode_field(aq_msg_t *msg, const field_t *field, aq_bytes_t frame)
{
    switch (field->type) {
    case F_NAME:
        if (!aq_name_is_valid(frame.data, frame.size))
            return false;
        break;
    case F_NAME_OPT:
        if (frame.size && !aq_name_is_valid(frame.data, frame.size))
            return false;
        break;
    case F_TAG:
        if (frame.size > AQ_TAG_MAX)
            return false;
        break;
    case F_TEXT:
        if (!s_text_is_valid(frame))
            return false;
        break;
    case F_SUBJECT:
        if (frame.size > AQ_SUBJECT_MAX || !aq_utf8_is_valid(frame.data, frame.size))
            return false;
        break;
    case F_PAYLOAD:
        break;
    case F_IDS:
        if (frame.size == 0 || frame.size % 8 || frame.size / 8 > AQ_LIST_MAX)
            return false;
        break;
    case F_PUTS_BATCH:
    case F_ITEMS_BATCH:
        if (!s_batch_is_valid(frame, msg->count, field->type,
                              field->type == F_PUTS_BATCH && (msg->put.flags & AQ_PUT_EACH),
                              &msg->put))
            return false;
        break;
    case F_U64:
        return aq_parse_u64(frame.data, frame.size, s_u64_at(msg, field->offset));
    case F_JOIN_MODE:
    case F_SHUT_MODE: {
        const char *const *words = s_mode_words(field->type);
        for (uint64_t value = 0; words[value]; value++)
            if (s_bytes_equal(frame, words[value])) {
                *s_u64_at(msg, field->offset) = value;
                return true;
            }
        return false;
    }
    case F_TEXT_LIST:
        return false; /* handled by s_decode_lines */
    case F_WITH:
        if (!s_with_is_valid(frame))
            return false;
        break;
    case F_SERVICE:
        if (!s_text_is_valid(frame))
            return false;
        break;
    case F_PRIORITY:
        if (!s_parse_i32(frame.data, frame.size, &msg->priority))
            return false;
        msg->has_priority = 1;
        return true;
    case F_PRIORITIES:
        if (frame.size / 4 != msg->count || frame.size % 4 || (frame.size && !frame.data))
            return false;
        break;
    case F_OPTIONS: {
        aq_options_t options;
        if (!aq_put_options_parse(frame, &options, NULL)
            || (msg->cmd != AQ_CMD_PUTS && (options.flags & AQ_PUT_EACH)))
            return false;
        if (!(options.flags & AQ_PUT_EACH)) /* else read before the batch, maxima added */
            msg->put = options;
        break;
    }
    }
    *s_bytes_at(msg, field->offset) = frame;
    return true;
}

/*  REPORT's lines take every remaining frame. */
static bool s_decode_lines(aq_msg_t *msg, const aq_bytes_t *frames, size_t count)
{
    if (count > AQ_LIST_MAX)
        return false;
    for (size_t i = 0; i < count; i++)
        if (!s_text_is_valid(frames[i]))
            return false;
    msg->list = frames;
    msg->list_size = count;
    return true;
}

static aq_cmd_t s_lookup_command(aq_bytes_t word)
{
    for (int cmd = AQ_CMD_NONE + 1; cmd < AQ_CMD_COUNT_; cmd++)
        if (s_bytes_equal(word, s_commands[cmd].word))
            return (aq_cmd_t) cmd;
    return AQ_CMD_NONE;
}

aq_status_t aq_msg_decode(aq_msg_t *msg, const aq_bytes_t *frames, size_t count)
{
    memset(msg, 0, sizeof *msg);
    if (count == 0 || !s_bytes_equal(frames[0], AQ_SIGNATURE))
        return AQ_BAD_VERSION;
    if (count < 2)
        return AQ_MALFORMED;
    msg->cmd = s_lookup_command(frames[1]);
    if (msg->cmd == AQ_CMD_NONE)
        return AQ_UNKNOWN_COMMAND;

    const command_t *command = &s_commands[msg->cmd];
    const aq_bytes_t *fields = frames + 2;
    size_t field_frames = count - 2;
    /* A PUTS's options say how to read its batch, which comes before them. */
    if (msg->cmd == AQ_CMD_PUTS && field_frames == command->field_count
        && !aq_put_options_parse(fields[field_frames - 1], &msg->put, NULL))
        msg->put = (aq_options_t){0}; /* refused when the field is reached */
    for (size_t i = 0; i < command->field_count; i++) {
        const field_t *field = &command->fields[i];
        if (field->type == F_TEXT_LIST) {
            if (!s_decode_lines(msg, fields + i, field_frames - i))
                return AQ_MALFORMED;
            msg->fields_read++;
            return AQ_OK;
        }
        if (i >= field_frames && F_IS_OPTIONAL(field->type))
            return AQ_OK; /* optional, and absent */
        if (i >= field_frames || !s_decode_field(msg, field, fields[i]))
            return AQ_MALFORMED;
        msg->fields_read++;
    }
    return field_frames == command->field_count ? AQ_OK : AQ_MALFORMED;
}

/*  Checks a message before anything is sent: the decoder's rules, applied to
    the struct. Any number is valid; a mode must be one of the two. */
static bool s_field_is_valid(const aq_msg_t *msg, const field_t *field)
{
    switch (field->type) {
    case F_U64:
    case F_PRIORITY:
        return true;
    case F_JOIN_MODE:
    case F_SHUT_MODE:
        return s_u64_get(msg, field->offset) <= 1; /* both have two words */
    case F_TEXT_LIST:
        if (msg->list_size > AQ_LIST_MAX)
            return false;
        for (size_t i = 0; i < msg->list_size; i++)
            if ((msg->list[i].size && !msg->list[i].data) || !s_text_is_valid(msg->list[i]))
                return false;
        return true;
    default: {
        aq_msg_t scratch = {.cmd = msg->cmd, .count = msg->count};
        if (field->type == F_PUTS_BATCH && msg->options.size
            && !aq_put_options_parse(msg->options, &scratch.put, NULL))
            return false;
        aq_bytes_t value = s_bytes_get(msg, field->offset);
        if (value.size && !value.data)
            return false;
        return s_decode_field(&scratch, field, value);
    }
    }
}

static int s_emit_field(const aq_msg_t *msg, const field_t *field, bool last,
                        aq_frame_sink_fn *sink, void *ctx)
{
    char number[AQ_U64_DIGITS + 1];
    switch (field->type) {
    case F_U64: {
        size_t length = aq_format_u64(s_u64_get(msg, field->offset), number);
        return sink(ctx, number, length, !last, 0);
    }
    case F_PRIORITY: {
        size_t length = aq_format_i32(msg->priority, number);
        return sink(ctx, number, length, !last, 0);
    }
    case F_JOIN_MODE:
    case F_SHUT_MODE: {
        const char *word = s_mode_words(field->type)[s_u64_get(msg, field->offset)];
        return sink(ctx, word, strlen(word), !last, 0);
    }
    case F_TEXT_LIST:
        for (size_t i = 0; i < msg->list_size; i++) {
            int rc = sink(ctx, msg->list[i].data, msg->list[i].size,
                          !(last && i + 1 == msg->list_size), 0);
            if (rc)
                return rc;
        }
        return 0;
    default: {
        aq_bytes_t value = s_bytes_get(msg, field->offset);
        int bulk = field->type == F_PAYLOAD || field->type == F_PUTS_BATCH
                   || field->type == F_ITEMS_BATCH;
        return sink(ctx, value.data, value.size, !last, bulk);
    }
    }
}

static bool s_field_is_empty(const aq_msg_t *msg, const field_t *field)
{
    if (field->type == F_PRIORITY)
        return !msg->has_priority;
    return s_bytes_get(msg, field->offset).size == 0;
}

aq_status_t aq_msg_check(const aq_msg_t *msg)
{
    if (msg->cmd <= AQ_CMD_NONE || msg->cmd >= AQ_CMD_COUNT_)
        return AQ_MALFORMED;
    const command_t *command = &s_commands[msg->cmd];
    for (size_t i = 0; i < command->field_count; i++) {
        bool absent = F_IS_OPTIONAL(command->fields[i].type)
                      && s_field_is_empty(msg, &command->fields[i]);
        if (!absent && !s_field_is_valid(msg, &command->fields[i]))
            return AQ_MALFORMED;
    }
    return AQ_OK;
}

aq_status_t aq_msg_encode(const aq_msg_t *msg, aq_frame_sink_fn *sink, void *ctx)
{
    if (aq_msg_check(msg) != AQ_OK)
        return AQ_MALFORMED;
    return aq_msg_emit(msg, sink, ctx);
}

aq_status_t aq_msg_emit(const aq_msg_t *msg, aq_frame_sink_fn *sink, void *ctx)
{
    const command_t *command = &s_commands[msg->cmd];
    if (sink(ctx, AQ_SIGNATURE, strlen(AQ_SIGNATURE), 1, 0)
        || sink(ctx, command->word, strlen(command->word), 1, 0))
        return AQ_TRANSPORT;
    /* An optional last field with nothing in it is not sent (an older
       peer takes no such frame). */
    size_t count = command->field_count;
    if (F_IS_OPTIONAL(command->fields[count - 1].type)
        && s_field_is_empty(msg, &command->fields[count - 1]))
        count--;
    for (size_t i = 0; i < count; i++) {
        const field_t *field = &command->fields[i];
        bool last = i + 1 == count;
        /* A REPORT with no lines ends at its tag. */
        bool next_is_empty_list = i + 2 == command->field_count
                                  && command->fields[i + 1].type == F_TEXT_LIST
                                  && msg->list_size == 0;
        if (s_emit_field(msg, field, last || next_is_empty_list, sink, ctx))
            return AQ_TRANSPORT;
    }
    return AQ_OK;
}
