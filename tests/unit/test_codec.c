/*  Codec: every command round-trips; hostile frames are refused whole. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "asyncq/codec.h"

#define MAX 64
typedef struct {
    uint8_t storage[MAX][256];
    aq_bytes_t frames[MAX];
    size_t count;
    int payload_at;
} frames_t;

static int s_collect(void *ctx, const void *data, size_t size, int more, int is_payload)
{
    frames_t *out = ctx;
    (void) more;
    assert_true(out->count < MAX && size <= 256);
    if (is_payload)
        out->payload_at = (int) out->count;
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
    out->payload_at = -1;
    assert_int_equal(aq_msg_encode(msg, s_collect, out), AQ_OK);
}

static void s_set(frames_t *f, size_t index, const char *text)
{
    size_t length = strlen(text);
    memcpy(f->storage[index], text, length);
    f->frames[index] = (aq_bytes_t){f->storage[index], length};
}

static void s_assert_bytes(aq_bytes_t bytes, const void *data, size_t size)
{
    assert_int_equal(bytes.size, size);
    if (size)
        assert_memory_equal(bytes.data, data, size);
}

static void test_put_round_trips_binary_payload(void **state)
{
    (void) state;
    const uint8_t payload[] = {0, 1, 0, 255, '\n', 0};
    aq_msg_t msg = {.cmd = AQ_CMD_PUT, .queue = aq_bytes_str("jobs"),
                    .producer = aq_bytes_str("p-1"), .seq = 42, .lease_ms = 1500,
                    .payload = {payload, sizeof payload}};
    static frames_t f;
    s_encode_into(&f, &msg);
    assert_int_equal(f.count, 7);
    assert_int_equal(f.payload_at, 6);
    s_assert_bytes(f.frames[0], "asyncq/1", 8);
    s_assert_bytes(f.frames[1], "PUT", 3);
    aq_msg_t out;
    assert_int_equal(aq_msg_decode(&out, f.frames, f.count), AQ_OK);
    assert_int_equal(out.cmd, AQ_CMD_PUT);
    s_assert_bytes(out.queue, "jobs", 4);
    s_assert_bytes(out.producer, "p-1", 3);
    assert_int_equal(out.seq, 42);
    assert_int_equal(out.lease_ms, 1500);
    s_assert_bytes(out.payload, payload, sizeof payload);
}

static void test_empty_payload_and_anonymous_producer_round_trip(void **state)
{
    (void) state;
    aq_msg_t msg = {.cmd = AQ_CMD_PUT, .queue = aq_bytes_str("q")};
    static frames_t f;
    s_encode_into(&f, &msg);
    aq_msg_t out;
    assert_int_equal(aq_msg_decode(&out, f.frames, f.count), AQ_OK);
    assert_int_equal(out.payload.size, 0);
    assert_int_equal(out.producer.size, 0);
}

static void test_every_reply_round_trips(void **state)
{
    (void) state;
    aq_bytes_t lines[2] = {aq_bytes_str("queue=a queued=1"), aq_bytes_str("queue=b queued=0")};
    aq_msg_t msgs[] = {
        {.cmd = AQ_CMD_HELLO, .client = aq_bytes_str("c-1"), .heartbeat_ms = 1000, .seq = 77},
        {.cmd = AQ_CMD_WELCOME, .broker = aq_bytes_str("b1"), .max_item = 1048576},
        {.cmd = AQ_CMD_CREDIT, .queue = aq_bytes_str("q"), .credit = 10},
        {.cmd = AQ_CMD_ITEM, .queue = aq_bytes_str("q"), .id = UINT64_MAX, .attempt = 1,
         .age_us = 7, .lease_ms = 60000, .payload = aq_bytes_str("x")},
        {.cmd = AQ_CMD_JOIN, .tag = aq_bytes_str("t"), .queue = aq_bytes_str("q"),
         .timeout_ms = 5, .mode = AQ_JOIN_ALL},
        {.cmd = AQ_CMD_JOINED, .tag = aq_bytes_str("t"), .queue = aq_bytes_str("q"), .count = 3},
        {.cmd = AQ_CMD_TIMEOUT, .tag = aq_bytes_str(""), .queue = aq_bytes_str("q"), .count = 1},
        {.cmd = AQ_CMD_SYNC, .tag = aq_bytes_str("1"), .producer = aq_bytes_str("p"), .seq = 9},
        {.cmd = AQ_CMD_SYNCED, .tag = aq_bytes_str("1"), .producer = aq_bytes_str("p"), .seq = 9},
        {.cmd = AQ_CMD_STATS, .tag = aq_bytes_str("1")},
        {.cmd = AQ_CMD_REPORT, .tag = aq_bytes_str("1"), .list = lines, .list_size = 2},
        {.cmd = AQ_CMD_REPORT, .tag = aq_bytes_str("1"), .list = lines, .list_size = 0},
        {.cmd = AQ_CMD_ERROR, .code = 404, .name = aq_bytes_str("UNKNOWN_ITEM"),
         .subject = aq_bytes_str("12"), .text = aq_bytes_str("no")},
        {.cmd = AQ_CMD_BYE},
        {.cmd = AQ_CMD_HEARTBEAT},
        {.cmd = AQ_CMD_SHUTDOWN, .tag = aq_bytes_str("s"), .mode = AQ_SHUTDOWN_IMMEDIATE},
        {.cmd = AQ_CMD_SHUTDOWN, .tag = aq_bytes_str("s"), .queue = aq_bytes_str("q")},
    };
    for (size_t i = 0; i < sizeof msgs / sizeof msgs[0]; i++) {
        static frames_t f;
    s_encode_into(&f, &msgs[i]);
        aq_msg_t out;
        assert_int_equal(aq_msg_decode(&out, f.frames, f.count), AQ_OK);
        assert_int_equal(out.cmd, msgs[i].cmd);
        assert_int_equal(out.seq, msgs[i].seq);
        assert_int_equal(out.id, msgs[i].id);
        assert_int_equal(out.mode, msgs[i].mode);
        assert_int_equal(out.lease_ms, msgs[i].lease_ms);
        assert_int_equal(out.count, msgs[i].count);
        assert_int_equal(out.list_size, msgs[i].list_size);
        s_assert_bytes(out.tag, msgs[i].tag.data, msgs[i].tag.size);
    }
}

static void test_ack_carries_many_ids(void **state)
{
    (void) state;
    aq_bytes_t ids[3] = {aq_bytes_str("1"), aq_bytes_str("18446744073709551615"),
                         aq_bytes_str("7")};
    aq_msg_t msg = {.cmd = AQ_CMD_ACK, .list = ids, .list_size = 3};
    static frames_t f;
    s_encode_into(&f, &msg);
    assert_int_equal(f.count, 5);
    aq_msg_t out;
    assert_int_equal(aq_msg_decode(&out, f.frames, f.count), AQ_OK);
    assert_int_equal(out.list_size, 3);
}

static void test_touch_and_nack_carry_ids_and_a_delay(void **state)
{
    (void) state;
    aq_bytes_t ids[2] = {aq_bytes_str("5"), aq_bytes_str("6")};
    aq_msg_t nack = {.cmd = AQ_CMD_NACK, .delay_ms = 250, .text = aq_bytes_str("exit 3"),
                     .list = ids, .list_size = 2};
    static frames_t f;
    s_encode_into(&f, &nack);
    assert_int_equal(f.count, 6);
    aq_msg_t out;
    assert_int_equal(aq_msg_decode(&out, f.frames, f.count), AQ_OK);
    assert_int_equal(out.delay_ms, 250);
    s_assert_bytes(out.text, "exit 3", 6);
    assert_int_equal(out.list_size, 2);
    assert_int_equal(aq_msg_decode(&out, f.frames, 4), AQ_MALFORMED); /* no id */
    aq_msg_t touch = {.cmd = AQ_CMD_TOUCH, .list = ids, .list_size = 1};
    s_encode_into(&f, &touch);
    assert_int_equal(aq_msg_decode(&out, f.frames, f.count), AQ_OK);
    assert_int_equal(out.cmd, AQ_CMD_TOUCH);
}

static void test_truncated_at_every_frame_is_refused(void **state)
{
    (void) state;
    aq_msg_t msg = {.cmd = AQ_CMD_ITEM, .queue = aq_bytes_str("q"), .id = 1, .attempt = 1,
                    .age_us = 0, .payload = aq_bytes_str("x")};
    static frames_t f;
    s_encode_into(&f, &msg);
    for (size_t count = 0; count < f.count; count++) {
        aq_msg_t out;
        assert_int_not_equal(aq_msg_decode(&out, f.frames, count), AQ_OK);
    }
}

static void test_extra_frame_is_refused(void **state)
{
    (void) state;
    aq_msg_t msg = {.cmd = AQ_CMD_CREDIT, .queue = aq_bytes_str("q"), .credit = 1};
    static frames_t f;
    s_encode_into(&f, &msg);
    s_set(&f, f.count++, "");
    aq_msg_t out;
    assert_int_equal(aq_msg_decode(&out, f.frames, f.count), AQ_MALFORMED);
}

static void test_wrong_signature_or_version_is_bad_version(void **state)
{
    (void) state;
    aq_msg_t msg = {.cmd = AQ_CMD_BYE};
    static frames_t f;
    s_encode_into(&f, &msg);
    aq_msg_t out;
    s_set(&f, 0, "asyncq/2");
    assert_int_equal(aq_msg_decode(&out, f.frames, f.count), AQ_BAD_VERSION);
    s_set(&f, 0, "");
    assert_int_equal(aq_msg_decode(&out, f.frames, f.count), AQ_BAD_VERSION);
}

static void test_unknown_command_is_reported_as_such(void **state)
{
    (void) state;
    static frames_t f;
    s_encode_into(&f, &(aq_msg_t){.cmd = AQ_CMD_BYE});
    s_set(&f, 1, "FLY");
    aq_msg_t out;
    assert_int_equal(aq_msg_decode(&out, f.frames, f.count), AQ_UNKNOWN_COMMAND);
    s_set(&f, 1, "bye"); /* command words are case-sensitive */
    assert_int_equal(aq_msg_decode(&out, f.frames, f.count), AQ_UNKNOWN_COMMAND);
}

static void test_bad_numbers_are_refused(void **state)
{
    (void) state;
    const char *bad[] = {"", "-1", "+1", "1.0", " 1", "18446744073709551616",
                         "123456789012345678901", "0x10"};
    aq_msg_t msg = {.cmd = AQ_CMD_CREDIT, .queue = aq_bytes_str("q"), .credit = 1};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        static frames_t f;
    s_encode_into(&f, &msg);
        s_set(&f, 3, bad[i]);
        aq_msg_t out;
        assert_int_equal(aq_msg_decode(&out, f.frames, f.count), AQ_MALFORMED);
    }
}

static void test_bad_names_tags_and_modes_are_refused(void **state)
{
    (void) state;
    aq_msg_t join = {.cmd = AQ_CMD_JOIN, .tag = aq_bytes_str("t"), .queue = aq_bytes_str("q")};
    static frames_t f;
    s_encode_into(&f, &join);
    aq_msg_t out;
    s_set(&f, 3, "has space");
    assert_int_equal(aq_msg_decode(&out, f.frames, f.count), AQ_MALFORMED);
    s_set(&f, 3, "");
    assert_int_equal(aq_msg_decode(&out, f.frames, f.count), AQ_MALFORMED);
    s_set(&f, 3, "q");
    s_set(&f, 5, "some");
    assert_int_equal(aq_msg_decode(&out, f.frames, f.count), AQ_MALFORMED);
    s_set(&f, 5, "drain"); /* a SHUTDOWN word is not a JOIN mode */
    assert_int_equal(aq_msg_decode(&out, f.frames, f.count), AQ_MALFORMED);
    s_set(&f, 5, "before");
    char long_tag[AQ_TAG_MAX + 2];
    memset(long_tag, 'x', sizeof long_tag - 1);
    long_tag[sizeof long_tag - 1] = '\0';
    s_set(&f, 2, long_tag);
    assert_int_equal(aq_msg_decode(&out, f.frames, f.count), AQ_MALFORMED);
}

static void test_empty_ack_is_refused(void **state)
{
    (void) state;
    static frames_t f;
    s_encode_into(&f, &(aq_msg_t){.cmd = AQ_CMD_BYE});
    s_set(&f, 1, "ACK");
    aq_msg_t out;
    assert_int_equal(aq_msg_decode(&out, f.frames, 2), AQ_MALFORMED);
}

static void test_encoder_refuses_invalid_message_without_emitting(void **state)
{
    (void) state;
    frames_t f;
    memset(&f, 0, sizeof f);
    aq_msg_t msg = {.cmd = AQ_CMD_PUT, .queue = aq_bytes_str("bad name")};
    assert_int_equal(aq_msg_encode(&msg, s_collect, &f), AQ_MALFORMED);
    assert_int_equal(f.count, 0);
    msg = (aq_msg_t){.cmd = AQ_CMD_NONE};
    assert_int_equal(aq_msg_encode(&msg, s_collect, &f), AQ_MALFORMED);
}

static void test_u64_format_and_parse_agree_at_the_edges(void **state)
{
    (void) state;
    uint64_t values[] = {0, 1, 9, 10, UINT64_MAX - 1, UINT64_MAX};
    for (size_t i = 0; i < sizeof values / sizeof values[0]; i++) {
        char buf[21];
        size_t length = aq_format_u64(values[i], buf);
        uint64_t back = 1234;
        assert_true(aq_parse_u64((const uint8_t *) buf, length, &back));
        assert_true(back == values[i]);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_put_round_trips_binary_payload),
        cmocka_unit_test(test_empty_payload_and_anonymous_producer_round_trip),
        cmocka_unit_test(test_every_reply_round_trips),
        cmocka_unit_test(test_ack_carries_many_ids),
        cmocka_unit_test(test_touch_and_nack_carry_ids_and_a_delay),
        cmocka_unit_test(test_truncated_at_every_frame_is_refused),
        cmocka_unit_test(test_extra_frame_is_refused),
        cmocka_unit_test(test_wrong_signature_or_version_is_bad_version),
        cmocka_unit_test(test_unknown_command_is_reported_as_such),
        cmocka_unit_test(test_bad_numbers_are_refused),
        cmocka_unit_test(test_bad_names_tags_and_modes_are_refused),
        cmocka_unit_test(test_empty_ack_is_refused),
        cmocka_unit_test(test_encoder_refuses_invalid_message_without_emitting),
        cmocka_unit_test(test_u64_format_and_parse_agree_at_the_edges),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
