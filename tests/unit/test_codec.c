/*  Codec: every command round-trips; hostile frames are refused whole, and
    what could be read before the first bad field is reported. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "asyncq/codec.h"

#define MAX 64
#define FRAME_BYTES 8192
typedef struct {
    uint8_t storage[MAX][FRAME_BYTES];
    aq_bytes_t frames[MAX];
    size_t count;
    int bulk_at;
} frames_t;

static int s_collect(void *ctx, const void *data, size_t size, int more, int is_bulk)
{
    frames_t *out = ctx;
    (void) more;
    assert_true(out->count < MAX && size <= FRAME_BYTES);
    if (is_bulk)
        out->bulk_at = (int) out->count;
    if (size)
        memcpy(out->storage[out->count], data, size);
    out->frames[out->count] = (aq_bytes_t){out->storage[out->count], size};
    out->count++;
    return 0;
}

/*  Encodes into a caller's frames_t: the frames point into its storage. */
static void s_encode_into(frames_t *out, const aq_msg_t *msg)
{
    memset(out, 0, sizeof *out);
    out->bulk_at = -1;
    assert_int_equal(aq_msg_encode(msg, s_collect, out), AQ_OK);
}

static void s_set(frames_t *f, size_t index, const void *data, size_t size)
{
    memcpy(f->storage[index], data, size);
    f->frames[index] = (aq_bytes_t){f->storage[index], size};
}

static void s_set_text(frames_t *f, size_t index, const char *text)
{
    s_set(f, index, text, strlen(text));
}

static void s_assert_bytes(aq_bytes_t bytes, const void *data, size_t size)
{
    assert_int_equal(bytes.size, size);
    if (size)
        assert_memory_equal(bytes.data, data, size);
}

static void s_assert_text(aq_bytes_t bytes, const char *text)
{
    s_assert_bytes(bytes, text, strlen(text));
}

static void test_put_round_trips_binary_payload_with_producer_first(void **state)
{
    (void) state;
    const uint8_t payload[] = {0, 1, 0, 255, '\n', 0};
    aq_msg_t msg = {.cmd = AQ_CMD_PUT, .queue = aq_bytes_str("jobs"),
                    .producer = aq_bytes_str("p-1"), .seq = 42, .lease_ms = 1500,
                    .payload = {payload, sizeof payload}};
    static frames_t f;
    s_encode_into(&f, &msg);
    assert_int_equal(f.count, 7);
    assert_int_equal(f.bulk_at, 6);
    s_assert_text(f.frames[0], "asyncq/2");
    s_assert_text(f.frames[1], "PUT");
    s_assert_text(f.frames[2], "p-1");
    s_assert_text(f.frames[3], "42");
    aq_msg_t out;
    assert_int_equal(aq_msg_decode(&out, f.frames, f.count), AQ_OK);
    assert_int_equal(out.cmd, AQ_CMD_PUT);
    assert_int_equal(out.fields_read, 5);
    s_assert_text(out.queue, "jobs");
    s_assert_text(out.producer, "p-1");
    assert_int_equal(out.seq, 42);
    assert_int_equal(out.lease_ms, 1500);
    s_assert_bytes(out.payload, payload, sizeof payload);
}

/*  A PUTS batch: three items (one empty, one binary) walk back out in order. */
static void test_puts_batch_round_trips_and_iterates_in_order(void **state)
{
    (void) state;
    uint8_t batch[64];
    size_t size = 0;
    size += aq_puts_entry_write(batch + size, "one", 3);
    size += aq_puts_entry_write(batch + size, "", 0);
    size += aq_puts_entry_write(batch + size, "\0\xff", 2);
    aq_msg_t msg = {.cmd = AQ_CMD_PUTS, .producer = aq_bytes_str("p"), .seq = 7, .count = 3,
                    .queue = aq_bytes_str("q"), .batch = {batch, size}};
    static frames_t f;
    s_encode_into(&f, &msg);
    assert_int_equal(f.count, 8);
    assert_int_equal(f.bulk_at, 7);
    aq_msg_t out;
    assert_int_equal(aq_msg_decode(&out, f.frames, f.count), AQ_OK);
    assert_int_equal(out.count, 3);
    aq_batch_iter_t iter;
    aq_batch_iter_init(&iter, out.batch);
    aq_bytes_t payload;
    assert_true(aq_puts_next(&iter, &payload));
    s_assert_text(payload, "one");
    assert_true(aq_puts_next(&iter, &payload));
    assert_int_equal(payload.size, 0);
    assert_true(aq_puts_next(&iter, &payload));
    s_assert_bytes(payload, "\0\xff", 2);
    assert_false(aq_puts_next(&iter, &payload));
}

/*  Options ride as a last frame, only when there are some: a plain put is
    what a broker before 2.2 reads. */
static void test_put_options_round_trip_and_are_sent_only_when_given(void **state)
{
    (void) state;
    aq_options_t given = {.priority = -7, .flags = AQ_PUT_DELAY, .delay_ms = 1500};
    char text[AQ_OPTIONS_MAX + 1];
    size_t length = aq_put_options_format(&given, text);
    assert_string_equal(text, "priority=-7 delay-ms=1500");
    aq_msg_t msg = {.cmd = AQ_CMD_PUT, .queue = aq_bytes_str("q"), .producer = aq_bytes_str("p"),
                    .seq = 1, .payload = aq_bytes_str("x"),
                    .options = {(const uint8_t *) text, length}};
    static frames_t f;
    s_encode_into(&f, &msg);
    assert_int_equal(f.count, 8);
    assert_int_equal(f.bulk_at, 6);
    s_assert_text(f.frames[7], "priority=-7 delay-ms=1500");
    aq_msg_t out;
    assert_int_equal(aq_msg_decode(&out, f.frames, f.count), AQ_OK);
    assert_int_equal(out.put.priority, -7);
    assert_int_equal(out.put.flags, AQ_PUT_DELAY);
    assert_int_equal(out.put.delay_ms, 1500);
    /* PUTS the same, as its 7th field. */
    uint8_t batch[16];
    size_t size = aq_puts_entry_write(batch, "y", 1);
    aq_options_t lifo = {.flags = AQ_PUT_FRONT, .priority = INT32_MIN};
    length = aq_put_options_format(&lifo, text);
    assert_string_equal(text, "priority=-2147483648 front");
    msg = (aq_msg_t){.cmd = AQ_CMD_PUTS, .queue = aq_bytes_str("q"), .producer = aq_bytes_str("p"),
                     .seq = 2, .count = 1, .batch = {batch, size},
                     .options = {(const uint8_t *) text, length}};
    s_encode_into(&f, &msg);
    assert_int_equal(f.count, 9);
    assert_int_equal(aq_msg_decode(&out, f.frames, f.count), AQ_OK);
    assert_int_equal(out.put.priority, INT32_MIN);
    assert_int_equal(out.put.flags, AQ_PUT_FRONT);
    /* None: no frame at all; an empty frame sent anyway reads as none. */
    aq_options_t none = {0};
    assert_int_equal(aq_put_options_format(&none, text), 0);
    msg.options = (aq_bytes_t){0};
    s_encode_into(&f, &msg);
    assert_int_equal(f.count, 8);
    s_set(&f, 8, "", 0);
    f.count = 9;
    assert_int_equal(aq_msg_decode(&out, f.frames, f.count), AQ_OK);
    assert_int_equal(out.put.flags, 0);
    assert_int_equal(out.put.priority, 0);
    /* A tenth frame is one too many. */
    s_set(&f, 9, "", 0);
    f.count = 10;
    assert_int_equal(aq_msg_decode(&out, f.frames, f.count), AQ_MALFORMED);
}

/*  A PUTS of mixed options: `each`, and every entry carries its own. */
static void test_each_puts_carries_every_items_options(void **state)
{
    (void) state;
    uint8_t batch[256];
    size_t size = 0;
    size += aq_puts_entry_write_each(batch + size, aq_bytes_str("priority=5"), "a", 1);
    size += aq_puts_entry_write_each(batch + size, aq_bytes_str(""), "", 0);
    size += aq_puts_entry_write_each(batch + size, aq_bytes_str("delay-ms=10 priority=-1"), "cc", 2);
    aq_msg_t msg = {.cmd = AQ_CMD_PUTS, .producer = aq_bytes_str("p"), .seq = 1, .count = 3,
                    .queue = aq_bytes_str("q"), .batch = {batch, size},
                    .options = aq_bytes_str("each")};
    static frames_t f;
    s_encode_into(&f, &msg);
    assert_int_equal(f.count, 9);
    aq_msg_t out;
    assert_int_equal(aq_msg_decode(&out, f.frames, f.count), AQ_OK);
    /* Each, and the longest delay of its entries, for the broker's limit. */
    assert_int_equal(out.put.flags, AQ_PUT_EACH | AQ_PUT_DELAY);
    assert_int_equal(out.put.delay_ms, 10);
    aq_batch_iter_t iter;
    aq_puts_iter_init(&iter, out.batch, 1);
    aq_bytes_t payload;
    assert_true(aq_puts_next(&iter, &payload));
    s_assert_text(payload, "a");
    assert_int_equal(iter.options.priority, 5);
    assert_true(aq_puts_next(&iter, &payload));
    assert_int_equal(payload.size, 0);
    assert_int_equal(iter.options.priority, 0);
    assert_int_equal(iter.options.flags, 0);
    assert_true(aq_puts_next(&iter, &payload));
    s_assert_text(payload, "cc");
    assert_int_equal(iter.options.priority, -1);
    assert_int_equal(iter.options.delay_ms, 10);
    assert_false(aq_puts_next(&iter, &payload));
    /* Read without `each`, the same frame does not add up. */
    f.count = 8;
    assert_int_equal(aq_msg_decode(&out, f.frames, f.count), AQ_MALFORMED);
    /* An entry whose options are bad, or say `each`, or run past the end. */
    static const char *const bad[] = {"prio=1", "each", "front delay-ms=1"};
    for (size_t i = 0; i < 3; i++) {
        size = aq_puts_entry_write_each(batch, aq_bytes_str(bad[i]), "x", 1);
        msg.count = 1;
        msg.batch = (aq_bytes_t){batch, size};
        assert_int_equal(aq_msg_encode(&msg, s_collect, &f), AQ_MALFORMED);
        s_set(&f, 7, batch, size);
        s_set_text(&f, 8, "each");
        s_set_text(&f, 4, "1");
        f.count = 9;
        assert_int_equal(aq_msg_decode(&out, f.frames, f.count), AQ_MALFORMED);
    }
    batch[0] = 200; /* options longer than the frame */
    s_set(&f, 7, batch, 10);
    assert_int_equal(aq_msg_decode(&out, f.frames, f.count), AQ_MALFORMED);
    /* `each` on a PUT, or with other options, is not valid. */
    aq_options_t options;
    assert_false(aq_put_options_parse(aq_bytes_str("each priority=1"), &options, NULL));
    assert_false(aq_put_options_parse(aq_bytes_str("front each"), &options, NULL));
    msg = (aq_msg_t){.cmd = AQ_CMD_PUT, .producer = aq_bytes_str("p"), .seq = 1,
                     .queue = aq_bytes_str("q"), .payload = aq_bytes_str("x"),
                     .options = aq_bytes_str("each")};
    assert_int_equal(aq_msg_encode(&msg, s_collect, &f), AQ_MALFORMED);
}

/*  Every way options can be wrong is refused, with a reason. */
static void test_bad_put_options_are_refused_with_a_reason(void **state)
{
    (void) state;
    static const char *const bad[] = {
        "priority=2147483648", "priority=-2147483649", "priority=", "priority=-", "priority=1x",
        "priority=+1", "priority=1 priority=2", "delay-ms=-1", "delay-ms=", "delay-ms=1.5",
        "at-ms=x", "delay-ms=1 at-ms=2", "delay-ms=1 delay-ms=1", "front front",
        "front delay-ms=5", "at-ms=5 front", "prio=1", "front ", " front", "front  priority=1",
        "FRONT", "priority=1\tfront", "delay-ms=99999999999999999999999",
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        aq_options_t options;
        const char *why = NULL;
        if (aq_put_options_parse(aq_bytes_str(bad[i]), &options, &why))
            fail_msg("options '%s' were taken", bad[i]);
        assert_non_null(why);
    }
    char longer[AQ_OPTIONS_MAX + 2];
    memset(longer, ' ', sizeof longer - 1);
    longer[sizeof longer - 1] = '\0';
    memcpy(longer, "front", 5);
    aq_options_t options;
    assert_false(aq_put_options_parse(aq_bytes_str(longer), &options, NULL));
    /* And the good ones, edges included. */
    assert_true(aq_put_options_parse(aq_bytes_str("priority=-2147483648"), &options, NULL));
    assert_int_equal(options.priority, INT32_MIN);
    assert_true(aq_put_options_parse(aq_bytes_str("front priority=2147483647"), &options, NULL));
    assert_int_equal(options.priority, INT32_MAX);
    assert_int_equal(options.flags, AQ_PUT_FRONT);
    assert_true(aq_put_options_parse(aq_bytes_str("at-ms=1765000000000 priority=0"), &options,
                                     NULL));
    assert_int_equal(options.flags, AQ_PUT_AT);
    assert_true(options.at_ms == 1765000000000ULL);
    /* A put whose options are bad is malformed, yet names its producer and seq. */
    aq_msg_t msg = {.cmd = AQ_CMD_PUT, .queue = aq_bytes_str("q"), .producer = aq_bytes_str("p"),
                    .seq = 3, .payload = aq_bytes_str("x")};
    static frames_t f;
    s_encode_into(&f, &msg);
    s_set_text(&f, 7, "priority=9999999999");
    f.count = 8;
    aq_msg_t out;
    assert_int_equal(aq_msg_decode(&out, f.frames, f.count), AQ_MALFORMED);
    assert_int_equal(out.fields_read, 5);
    assert_int_equal(out.seq, 3);
}

static void test_items_batch_carries_every_field_of_each_delivery(void **state)
{
    (void) state;
    uint8_t batch[128];
    size_t size = 0;
    aq_delivery_t first = {.id = UINT64_MAX, .attempt = 3, .age_us = 1ULL << 40,
                           .lease_ms = 60000, .payload = aq_bytes_str("hello")};
    aq_delivery_t second = {.id = 1, .attempt = 1, .payload = {NULL, 0}};
    size += aq_items_entry_write(batch + size, &first);
    size += aq_items_entry_write(batch + size, &second);
    assert_int_equal(size, 2 * AQ_ITEMS_ENTRY_HEADER + 5);
    aq_msg_t msg = {.cmd = AQ_CMD_ITEMS, .queue = aq_bytes_str("q"), .count = 2,
                    .batch = {batch, size}};
    static frames_t f;
    s_encode_into(&f, &msg);
    aq_msg_t out;
    assert_int_equal(aq_msg_decode(&out, f.frames, f.count), AQ_OK);
    aq_batch_iter_t iter;
    aq_batch_iter_init(&iter, out.batch);
    aq_delivery_t got;
    assert_true(aq_items_next(&iter, &got));
    assert_true(got.id == UINT64_MAX);
    assert_int_equal(got.attempt, 3);
    assert_true(got.age_us == 1ULL << 40);
    assert_int_equal(got.lease_ms, 60000);
    s_assert_text(got.payload, "hello");
    assert_true(aq_items_next(&iter, &got));
    assert_int_equal(got.id, 1);
    assert_int_equal(got.payload.size, 0);
    assert_false(aq_items_next(&iter, &got));
}

/*  A consumer that asks (CREDIT `with priority`) gets each delivery's
    priority: ITEM's 7th field, ITEMS' 4th frame of int32s. Without the
    ask neither is sent, so an older client reads what it always did. */
static void test_deliveries_carry_priorities_only_when_asked(void **state)
{
    (void) state;
    static frames_t f;
    aq_msg_t out;
    aq_msg_t credit = {.cmd = AQ_CMD_CREDIT, .tag = aq_bytes_str("t"), .queue = aq_bytes_str("q"),
                       .credit = 4};
    s_encode_into(&f, &credit);
    assert_int_equal(f.count, 6);
    credit.with = aq_bytes_str("priority");
    s_encode_into(&f, &credit);
    assert_int_equal(f.count, 7);
    assert_int_equal(aq_msg_decode(&out, f.frames, f.count), AQ_OK);
    s_assert_text(out.with, "priority");
    s_set_text(&f, 6, "colour");
    assert_int_equal(aq_msg_decode(&out, f.frames, f.count), AQ_MALFORMED);

    aq_msg_t item = {.cmd = AQ_CMD_ITEM, .queue = aq_bytes_str("q"), .id = 7, .attempt = 1,
                     .payload = aq_bytes_str("x")};
    s_encode_into(&f, &item);
    assert_int_equal(f.count, 8);
    assert_int_equal(aq_msg_decode(&out, f.frames, f.count), AQ_OK);
    assert_false(out.has_priority);
    int32_t edges[] = {INT32_MIN, -1, 0, INT32_MAX};
    for (size_t i = 0; i < 4; i++) {
        item.priority = edges[i];
        item.has_priority = 1;
        s_encode_into(&f, &item);
        assert_int_equal(f.count, 9);
        assert_int_equal(aq_msg_decode(&out, f.frames, f.count), AQ_OK);
        assert_true(out.has_priority);
        assert_int_equal(out.priority, edges[i]);
    }
    const char *bad[] = {"2147483648", "-2147483649", "", "-", "+1", "1.0", " 1"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        s_set_text(&f, 8, bad[i]);
        assert_int_equal(aq_msg_decode(&out, f.frames, f.count), AQ_MALFORMED);
    }

    uint8_t batch[64], priorities[8];
    aq_delivery_t delivery = {.id = 1, .attempt = 1, .payload = aq_bytes_str("a")};
    size_t size = aq_items_entry_write(batch, &delivery);
    size += aq_items_entry_write(batch + size, &delivery);
    aq_put_u32(priorities, (uint32_t) -5);
    aq_put_u32(priorities + 4, 9);
    aq_msg_t items = {.cmd = AQ_CMD_ITEMS, .queue = aq_bytes_str("q"), .count = 2,
                      .batch = {batch, size}};
    s_encode_into(&f, &items);
    assert_int_equal(f.count, 5);
    items.priorities = (aq_bytes_t){priorities, 8};
    s_encode_into(&f, &items);
    assert_int_equal(f.count, 6);
    assert_int_equal(aq_msg_decode(&out, f.frames, f.count), AQ_OK);
    assert_int_equal(out.priorities.size, 8);
    assert_int_equal((int32_t) aq_get_u32(out.priorities.data), -5);
    /* One int32 per delivery, exactly, both ways. */
    s_set(&f, 5, priorities, 4);
    assert_int_equal(aq_msg_decode(&out, f.frames, f.count), AQ_MALFORMED);
    items.priorities.size = 4;
    assert_int_equal(aq_msg_encode(&items, s_collect, &f), AQ_MALFORMED);
}

/*  A batch whose entries do not add up to its count, or overrun its frame,
    is refused; the count and the fields before it were still read. */
static void test_batches_that_do_not_add_up_are_refused(void **state)
{
    (void) state;
    uint8_t batch[16];
    size_t size = aq_puts_entry_write(batch, "abc", 3);
    aq_msg_t msg = {.cmd = AQ_CMD_PUTS, .producer = aq_bytes_str("p"), .seq = 1, .count = 1,
                    .queue = aq_bytes_str("q"), .batch = {batch, size}};
    static frames_t f;
    s_encode_into(&f, &msg);
    aq_msg_t out;
    s_set_text(&f, 4, "2"); /* count says 2, the frame holds 1 */
    assert_int_equal(aq_msg_decode(&out, f.frames, f.count), AQ_MALFORMED);
    assert_int_equal(out.fields_read, 5);
    s_assert_text(out.producer, "p");
    assert_int_equal(out.seq, 1);
    assert_int_equal(out.count, 2);
    s_set_text(&f, 4, "1");
    uint8_t overrun[] = {0, 0, 0, 9, 'x'}; /* says 9 bytes, has 1 */
    s_set(&f, 7, overrun, sizeof overrun);
    assert_int_equal(aq_msg_decode(&out, f.frames, f.count), AQ_MALFORMED);
    uint8_t trailing[] = {0, 0, 0, 1, 'x', 'y'}; /* a stray byte after the item */
    s_set(&f, 7, trailing, sizeof trailing);
    assert_int_equal(aq_msg_decode(&out, f.frames, f.count), AQ_MALFORMED);
    s_set_text(&f, 4, "0"); /* an empty batch */
    s_set(&f, 7, "", 0);
    assert_int_equal(aq_msg_decode(&out, f.frames, f.count), AQ_MALFORMED);
    uint8_t short_header[] = {0, 0, 0, 0, 0, 0, 0, 1, 0, 0}; /* ITEMS header cut short */
    aq_msg_t items = {.cmd = AQ_CMD_ITEMS, .queue = aq_bytes_str("q"), .count = 1,
                      .batch = {short_header, sizeof short_header}};
    assert_int_equal(aq_msg_check(&items), AQ_MALFORMED);
}

/*  A put whose queue is not a name still yields its producer and seq: the
    broker refuses it as received instead of dropping it. */
static void test_a_put_with_a_bad_queue_name_still_names_its_producer_and_seq(void **state)
{
    (void) state;
    aq_msg_t msg = {.cmd = AQ_CMD_PUT, .queue = aq_bytes_str("q"),
                    .producer = aq_bytes_str("p-9"), .seq = 5, .payload = aq_bytes_str("x")};
    static frames_t f;
    s_encode_into(&f, &msg);
    s_set_text(&f, 4, "bad name");
    aq_msg_t out;
    assert_int_equal(aq_msg_decode(&out, f.frames, f.count), AQ_MALFORMED);
    assert_int_equal(out.cmd, AQ_CMD_PUT);
    assert_int_equal(out.fields_read, 2);
    s_assert_text(out.producer, "p-9");
    assert_int_equal(out.seq, 5);
}

/*  A request with a good tag and a bad field: the tag is read first, so the
    ERROR can carry it. */
static void test_a_malformed_request_keeps_its_tag(void **state)
{
    (void) state;
    aq_msg_t msg = {.cmd = AQ_CMD_JOIN, .tag = aq_bytes_str("t-7"), .queue = aq_bytes_str("q"),
                    .timeout_ms = 5, .mode = AQ_JOIN_ALL};
    static frames_t f;
    s_encode_into(&f, &msg);
    s_set_text(&f, 5, "sometimes");
    aq_msg_t out;
    assert_int_equal(aq_msg_decode(&out, f.frames, f.count), AQ_MALFORMED);
    assert_int_equal(out.fields_read, 3);
    s_assert_text(out.tag, "t-7");
}

static void test_every_request_and_reply_round_trips(void **state)
{
    (void) state;
    const aq_bytes_t lines[] = {aq_bytes_str("queue=a queued=1"), aq_bytes_str("queue=b")};
    uint8_t ids[16];
    aq_put_u64(ids, 4294967296ULL);
    aq_put_u64(ids + 8, 7);
    aq_msg_t msgs[] = {
        {.cmd = AQ_CMD_HELLO, .tag = aq_bytes_str("h"), .client = aq_bytes_str("c-1"), .seq = 3},
        {.cmd = AQ_CMD_WELCOME, .tag = aq_bytes_str("h"), .broker = aq_bytes_str("b-1"),
         .max_item = 1048576, .heartbeat_ms = 1000, .batch_max = 1024, .window = 4096,
         .text = aq_bytes_str("produce,consume"), .persistence = aq_bytes_str("always")},
        {.cmd = AQ_CMD_CREDIT, .tag = aq_bytes_str("c"), .queue = aq_bytes_str("q"),
         .credit = 10, .batch_max = 8},
        {.cmd = AQ_CMD_CREDITED, .tag = aq_bytes_str("c"), .queue = aq_bytes_str("q"),
         .credit = 10},
        {.cmd = AQ_CMD_ITEM, .queue = aq_bytes_str("q"), .id = UINT64_MAX, .attempt = 2,
         .age_us = 12, .lease_ms = 60000, .payload = aq_bytes_str("x")},
        {.cmd = AQ_CMD_ACK, .tag = aq_bytes_str(""), .ids = {ids, sizeof ids}},
        {.cmd = AQ_CMD_TOUCH, .tag = aq_bytes_str("t"), .ids = {ids, 8}},
        {.cmd = AQ_CMD_NACK, .tag = aq_bytes_str("n"), .delay_ms = 250,
         .text = aq_bytes_str("exit status 3 (\xc3\xa9)"), .ids = {ids, 8}},
        {.cmd = AQ_CMD_JOIN, .tag = aq_bytes_str("j"), .queue = aq_bytes_str("q"),
         .timeout_ms = 500, .mode = AQ_JOIN_ALL},
        {.cmd = AQ_CMD_JOINED, .tag = aq_bytes_str("j"), .queue = aq_bytes_str("q"),
         .count = 3, .dead = 1},
        {.cmd = AQ_CMD_TIMEOUT, .tag = aq_bytes_str("j"), .queue = aq_bytes_str("q"), .count = 2},
        {.cmd = AQ_CMD_SYNC, .tag = aq_bytes_str("s"), .producer = aq_bytes_str("p"), .seq = 9},
        {.cmd = AQ_CMD_SYNCED, .tag = aq_bytes_str("s"), .producer = aq_bytes_str("p"), .seq = 9},
        {.cmd = AQ_CMD_HELD, .tag = aq_bytes_str("s"), .producer = aq_bytes_str("p"), .seq = 4,
         .queue = aq_bytes_str("full")},
        {.cmd = AQ_CMD_STATS, .tag = aq_bytes_str("st"), .queue = aq_bytes_str("")},
        {.cmd = AQ_CMD_REPORT, .tag = aq_bytes_str("st"), .list = lines, .list_size = 2},
        {.cmd = AQ_CMD_REPORT, .tag = aq_bytes_str("st"), .list = NULL, .list_size = 0},
        {.cmd = AQ_CMD_DEAD, .tag = aq_bytes_str("d"), .queue = aq_bytes_str("q"),
         .text = aq_bytes_str("purge")},
        {.cmd = AQ_CMD_SHUTDOWN, .tag = aq_bytes_str("x"), .queue = aq_bytes_str(""),
         .mode = AQ_SHUTDOWN_IMMEDIATE},
        {.cmd = AQ_CMD_ERROR, .code = 404, .name = aq_bytes_str("UNKNOWN_ITEM"),
         .tag = aq_bytes_str("a"), .subject = aq_bytes_str("12 13"), .text = aq_bytes_str("no")},
        {.cmd = AQ_CMD_BYE, .tag = aq_bytes_str("")},
        {.cmd = AQ_CMD_HEARTBEAT, .beat = 17},
    };
    for (size_t i = 0; i < sizeof msgs / sizeof msgs[0]; i++) {
        static frames_t f;
        s_encode_into(&f, &msgs[i]);
        aq_msg_t out;
        assert_int_equal(aq_msg_decode(&out, f.frames, f.count), AQ_OK);
        assert_int_equal(out.cmd, msgs[i].cmd);
        s_assert_bytes(out.tag, msgs[i].tag.data, msgs[i].tag.size);
        assert_int_equal(out.seq, msgs[i].seq);
        assert_int_equal(out.count, msgs[i].count);
        assert_true(out.id == msgs[i].id);
        assert_int_equal(out.beat, msgs[i].beat);
        assert_int_equal(out.list_size, msgs[i].list_size);
        s_assert_bytes(out.text, msgs[i].text.data, msgs[i].text.size);
        s_assert_bytes(out.ids, msgs[i].ids.data, msgs[i].ids.size);
        s_assert_bytes(out.persistence, msgs[i].persistence.data, msgs[i].persistence.size);
    }
}

static void test_ids_frame_holds_one_to_1024_ids_of_8_bytes(void **state)
{
    (void) state;
    static uint8_t ids[AQ_LIST_MAX * 8 + 8];
    for (size_t i = 0; i < AQ_LIST_MAX + 1; i++)
        aq_put_u64(ids + i * 8, i + 1);
    aq_msg_t msg = {.cmd = AQ_CMD_ACK, .tag = aq_bytes_str("a"), .ids = {ids, AQ_LIST_MAX * 8}};
    assert_int_equal(aq_msg_check(&msg), AQ_OK);
    assert_int_equal(aq_ids_count(msg.ids), AQ_LIST_MAX);
    assert_int_equal(aq_ids_get(msg.ids, AQ_LIST_MAX - 1), AQ_LIST_MAX);
    msg.ids.size = (AQ_LIST_MAX + 1) * 8; /* one too many */
    assert_int_equal(aq_msg_check(&msg), AQ_MALFORMED);
    msg.ids.size = 12; /* not a multiple of 8 */
    assert_int_equal(aq_msg_check(&msg), AQ_MALFORMED);
    msg.ids.size = 0;
    assert_int_equal(aq_msg_check(&msg), AQ_MALFORMED);
}

/*  Cut after every frame: never valid, never read beyond what is there. */
static void test_truncated_at_every_frame_is_refused(void **state)
{
    (void) state;
    uint8_t batch[8];
    size_t size = aq_puts_entry_write(batch, "ab", 2);
    aq_msg_t msgs[] = {
        {.cmd = AQ_CMD_PUTS, .producer = aq_bytes_str("p"), .seq = 1, .count = 1,
         .queue = aq_bytes_str("q"), .batch = {batch, size}},
        {.cmd = AQ_CMD_WELCOME, .tag = aq_bytes_str("h"), .broker = aq_bytes_str("b"),
         .text = aq_bytes_str(""), .persistence = aq_bytes_str("memory")},
        {.cmd = AQ_CMD_ERROR, .code = 400, .name = aq_bytes_str("MALFORMED")},
    };
    for (size_t m = 0; m < sizeof msgs / sizeof msgs[0]; m++) {
        static frames_t f;
        s_encode_into(&f, &msgs[m]);
        for (size_t count = 0; count < f.count; count++) {
            aq_msg_t out;
            assert_int_not_equal(aq_msg_decode(&out, f.frames, count), AQ_OK);
        }
    }
}

static void test_extra_and_empty_frames_are_refused(void **state)
{
    (void) state;
    aq_msg_t msg = {.cmd = AQ_CMD_SYNC, .tag = aq_bytes_str("s"), .producer = aq_bytes_str("p"),
                    .seq = 1};
    static frames_t f;
    s_encode_into(&f, &msg);
    s_set_text(&f, f.count++, "extra");
    aq_msg_t out;
    assert_int_equal(aq_msg_decode(&out, f.frames, f.count), AQ_MALFORMED);
    s_encode_into(&f, &msg);
    s_set(&f, 3, "", 0); /* an empty producer */
    assert_int_equal(aq_msg_decode(&out, f.frames, f.count), AQ_MALFORMED);
    s_set_text(&f, 3, "p");
    s_set(&f, 4, "", 0); /* an empty number */
    assert_int_equal(aq_msg_decode(&out, f.frames, f.count), AQ_MALFORMED);
}

/*  Version 1's signature, or anything else, is BAD_VERSION; one frame of the
    right signature alone is MALFORMED. */
static void test_wrong_signature_or_version_is_bad_version(void **state)
{
    (void) state;
    static frames_t f;
    memset(&f, 0, sizeof f);
    s_set_text(&f, 0, "asyncq/1");
    s_set_text(&f, 1, "HELLO");
    aq_msg_t out;
    assert_int_equal(aq_msg_decode(&out, f.frames, 2), AQ_BAD_VERSION);
    s_set_text(&f, 0, "asyncq/22");
    assert_int_equal(aq_msg_decode(&out, f.frames, 2), AQ_BAD_VERSION);
    assert_int_equal(aq_msg_decode(&out, f.frames, 0), AQ_BAD_VERSION);
    s_set_text(&f, 0, "asyncq/2");
    assert_int_equal(aq_msg_decode(&out, f.frames, 1), AQ_MALFORMED);
    s_set_text(&f, 1, "DANCE");
    assert_int_equal(aq_msg_decode(&out, f.frames, 2), AQ_UNKNOWN_COMMAND);
    s_set_text(&f, 1, "put"); /* commands are case-sensitive */
    assert_int_equal(aq_msg_decode(&out, f.frames, 2), AQ_UNKNOWN_COMMAND);
}

static void test_bad_numbers_names_tags_and_modes_are_refused(void **state)
{
    (void) state;
    aq_msg_t msg = {.cmd = AQ_CMD_JOIN, .tag = aq_bytes_str("t"), .queue = aq_bytes_str("q"),
                    .timeout_ms = 5, .mode = AQ_JOIN_BEFORE};
    static frames_t f;
    const char *bad[][2] = {
        {"4", "-1"}, {"4", "1.5"}, {"4", " 5"}, {"4", "18446744073709551616"},
        {"4", "123456789012345678901"}, {"3", "with space"}, {"3", ""},
        {"3", "0123456789012345678901234567890123456789012345678901234567890123456789"},
        {"5", "Before"}, {"5", ""},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        s_encode_into(&f, &msg);
        s_set_text(&f, (size_t) atoi(bad[i][0]), bad[i][1]);
        aq_msg_t out;
        assert_int_equal(aq_msg_decode(&out, f.frames, f.count), AQ_MALFORMED);
    }
    s_encode_into(&f, &msg);
    static char tag[AQ_TAG_MAX + 2];
    memset(tag, 't', AQ_TAG_MAX + 1);
    s_set_text(&f, 2, tag);
    aq_msg_t out;
    assert_int_equal(aq_msg_decode(&out, f.frames, f.count), AQ_MALFORMED);
    assert_int_equal(out.fields_read, 0); /* the tag itself is bad: none to echo */
}

/*  Text fields are UTF-8: overlong forms, surrogates, stray continuation
    bytes and cut sequences are refused; a NACK reason with newlines is valid
    text (the broker escapes it when it logs it). */
static void test_text_must_be_well_formed_utf8(void **state)
{
    (void) state;
    const char *good[] = {"", "plain", "caf\xc3\xa9", "\xe2\x82\xac", "\xf0\x9f\x98\x80",
                          "line\nbreak"};
    const char *bad[] = {"\xc0\xaf", "\xed\xa0\x80", "\x80", "\xe2\x82", "\xf4\x90\x80\x80",
                         "\xff", "ok\xc3"};
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++)
        assert_true(aq_utf8_is_valid((const uint8_t *) good[i], strlen(good[i])));
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        assert_false(aq_utf8_is_valid((const uint8_t *) bad[i], strlen(bad[i])));
    uint8_t ids[8];
    aq_put_u64(ids, 1);
    aq_msg_t nack = {.cmd = AQ_CMD_NACK, .tag = aq_bytes_str("n"), .text = aq_bytes_str("\xc0\xaf"),
                     .ids = {ids, 8}};
    assert_int_equal(aq_msg_check(&nack), AQ_MALFORMED);
    static char long_text[AQ_TEXT_MAX + 2];
    memset(long_text, 'r', AQ_TEXT_MAX + 1);
    nack.text = aq_bytes_str(long_text);
    assert_int_equal(aq_msg_check(&nack), AQ_MALFORMED);
}

static void test_encoder_refuses_invalid_message_without_emitting(void **state)
{
    (void) state;
    aq_msg_t msg = {.cmd = AQ_CMD_CREDIT, .tag = aq_bytes_str("c"),
                    .queue = aq_bytes_str("not a name")};
    static frames_t f;
    memset(&f, 0, sizeof f);
    assert_int_equal(aq_msg_encode(&msg, s_collect, &f), AQ_MALFORMED);
    assert_int_equal(f.count, 0);
    msg.cmd = AQ_CMD_NONE;
    assert_int_equal(aq_msg_encode(&msg, s_collect, &f), AQ_MALFORMED);
}

static void test_u64_format_parse_and_big_endian_agree_at_the_edges(void **state)
{
    (void) state;
    uint64_t values[] = {0, 1, 9, 10, UINT32_MAX, UINT64_MAX - 1, UINT64_MAX};
    for (size_t i = 0; i < sizeof values / sizeof values[0]; i++) {
        char text[AQ_U64_DIGITS + 1];
        size_t length = aq_format_u64(values[i], text);
        uint64_t back = 0;
        assert_true(aq_parse_u64((const uint8_t *) text, length, &back));
        assert_true(back == values[i]);
        uint8_t wire[8];
        aq_put_u64(wire, values[i]);
        assert_true(aq_get_u64(wire) == values[i]);
    }
    uint8_t wire[4];
    aq_put_u32(wire, 0x01020304);
    assert_int_equal(wire[0], 1);
    assert_int_equal(wire[3], 4);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_put_round_trips_binary_payload_with_producer_first),
        cmocka_unit_test(test_puts_batch_round_trips_and_iterates_in_order),
        cmocka_unit_test(test_items_batch_carries_every_field_of_each_delivery),
        cmocka_unit_test(test_batches_that_do_not_add_up_are_refused),
        cmocka_unit_test(test_deliveries_carry_priorities_only_when_asked),
        cmocka_unit_test(test_a_put_with_a_bad_queue_name_still_names_its_producer_and_seq),
        cmocka_unit_test(test_a_malformed_request_keeps_its_tag),
        cmocka_unit_test(test_every_request_and_reply_round_trips),
        cmocka_unit_test(test_ids_frame_holds_one_to_1024_ids_of_8_bytes),
        cmocka_unit_test(test_truncated_at_every_frame_is_refused),
        cmocka_unit_test(test_extra_and_empty_frames_are_refused),
        cmocka_unit_test(test_put_options_round_trip_and_are_sent_only_when_given),
        cmocka_unit_test(test_bad_put_options_are_refused_with_a_reason),
        cmocka_unit_test(test_each_puts_carries_every_items_options),
        cmocka_unit_test(test_wrong_signature_or_version_is_bad_version),
        cmocka_unit_test(test_bad_numbers_names_tags_and_modes_are_refused),
        cmocka_unit_test(test_text_must_be_well_formed_utf8),
        cmocka_unit_test(test_encoder_refuses_invalid_message_without_emitting),
        cmocka_unit_test(test_u64_format_parse_and_big_endian_agree_at_the_edges),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
