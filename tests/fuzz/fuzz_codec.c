/*  libFuzzer target for the codec: any bytes, cut into frames, must decode
    to a status without crashing; whatever decodes must encode back to frames
    that decode to the same command. Also fuzzes endpoint parsing.

    Input format: a sequence of records [length byte][length bytes]; each
    record is one frame. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "asyncq/codec.h"
#include "asyncq/endpoint.h"

#define MAX_FRAMES (AQ_REPORT_FRAMES_MAX + 4)

typedef struct {
    uint8_t storage[64 * 1024];
    size_t used;
    aq_bytes_t frames[MAX_FRAMES];
    size_t count;
} frames_t;

static int s_collect(void *ctx, const void *data, size_t size, int more, int is_payload)
{
    frames_t *out = ctx;
    (void) more, (void) is_payload;
    if (out->count == MAX_FRAMES || out->used + size > sizeof out->storage)
        abort(); /* a message that decoded cannot re-encode larger than it came */
    if (size)
        memcpy(out->storage + out->used, data, size);
    out->frames[out->count++] = (aq_bytes_t){out->storage + out->used, size};
    out->used += size;
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static aq_bytes_t frames[MAX_FRAMES];
    size_t count = 0;
    for (size_t at = 0; at < size && count < MAX_FRAMES;) {
        size_t length = data[at++];
        if (length > size - at)
            length = size - at;
        frames[count++] = (aq_bytes_t){data + at, length};
        at += length;
    }
    aq_msg_t msg;
    aq_status_t rc = aq_msg_decode(&msg, frames, count);
    if (rc == AQ_OK) {
        static frames_t again;
        again.used = again.count = 0;
        if (aq_msg_encode(&msg, s_collect, &again) != AQ_OK)
            abort();
        aq_msg_t back;
        if (aq_msg_decode(&back, again.frames, again.count) != AQ_OK || back.cmd != msg.cmd)
            abort();
    }
    else if (rc != AQ_MALFORMED && rc != AQ_BAD_VERSION && rc != AQ_UNKNOWN_COMMAND)
        abort();

    char address[300];
    size_t length = size < sizeof address - 1 ? size : sizeof address - 1;
    memcpy(address, data, length);
    address[length] = '\0';
    aq_endpoint_t endpoint;
    aq_endpoint_parse(address, (int) (size & 1), &endpoint);
    return 0;
}
