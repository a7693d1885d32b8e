/*  A program built against the installed libasyncq, as a user builds one:
    cc hello.c $(pkg-config --cflags --libs asyncq). A round trip through
    the broker at argv[1]: put and sync, get and ack, join. The API's
    conventions: constructors take (address, name, queue..., options,
    &status); every timeout is -1 for ever, 0 do not wait.

    Prints "hello from libasyncq VERSION: joined" and exits 0, or says which
    call failed and exits 1. */
#include <asyncq/asyncq.h>
#include <stdio.h>
#include <string.h>

static int s_failed(const char *call, aq_status_t status)
{
    fprintf(stderr, "hello: %s: %s (%s)\n", call, aq_strerror(status), aq_status_name(status));
    return 1;
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: hello BROKER\n");
        return 2;
    }
    /*  The headers and the library linked in come from one installation. */
    if (strcmp(aq_version(), ASYNCQ_VERSION) != 0) {
        fprintf(stderr, "hello: library %s, headers %s\n", aq_version(), ASYNCQ_VERSION);
        return 1;
    }
    const char *queue = "hello";
    const char *text = "hello from libasyncq";
    aq_status_t status;

    aq_producer_t *producer = aq_producer_new(argv[1], "hello", &status);
    if (!producer) {
        fprintf(stderr, "hello: %s\n", aq_last_error());
        return s_failed("aq_producer_new", status);
    }
    if ((status = aq_producer_put(producer, queue, text, strlen(text))) != AQ_OK)
        return s_failed("aq_producer_put", status);
    if ((status = aq_producer_sync(producer, 10000)) != AQ_OK)
        return s_failed("aq_producer_sync", status);

    aq_consumer_t *consumer = aq_consumer_new(argv[1], "hello", queue, 1, &status);
    if (!consumer) {
        fprintf(stderr, "hello: %s\n", aq_last_error());
        return s_failed("aq_consumer_new", status);
    }
    aq_item_t item;
    if ((status = aq_consumer_get(consumer, &item, 10000)) != AQ_OK)
        return s_failed("aq_consumer_get", status);
    if (item.size != strlen(text) || memcmp(item.data, text, item.size) != 0) {
        fprintf(stderr, "hello: got %.*s\n", (int) item.size, (const char *) item.data);
        return 1;
    }
    if ((status = aq_consumer_ack(consumer, item.id)) != AQ_OK)
        return s_failed("aq_consumer_ack", status);
    if ((status = aq_consumer_flush(consumer)) != AQ_OK)
        return s_failed("aq_consumer_flush", status);

    aq_join_result_t joined;
    status = aq_join(aq_producer_session(producer), queue, -1, AQ_JOIN_ALL, &joined);
    if (status != AQ_OK)
        return s_failed("aq_join", status);
    /* 0: do not wait. Nothing is left to get; the queue is joined now. */
    if ((status = aq_consumer_get(consumer, &item, 0)) != AQ_TIMEOUT)
        return s_failed("aq_consumer_get (0)", status);
    if ((status = aq_join(aq_producer_session(producer), queue, 0, AQ_JOIN_ALL, &joined)) != AQ_OK)
        return s_failed("aq_join (0)", status);

    aq_consumer_destroy(&consumer);
    aq_producer_destroy(&producer);
    printf("%s %s: joined\n", text, aq_version());
    return 0;
}
