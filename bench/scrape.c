/*  asyncq-scrape-bench: what /metrics scrapes cost the broker's clients.
    For each queue count (1 000 and 10 000 by default) it starts
    asyncq-broker with --metrics, puts one item in each queue, then
    measures a probe client's put -> ack (put, SYNCED, got, ack flushed)
    with no scrape, and again while S connections scrape /metrics back to
    back (reading everything) and D more ask for it and never read. It
    prints the percentiles, the scrapes done, the size of one scrape and
    the broker's resident memory (start, peak). A benchmark: it asserts
    nothing. The scrapers and the never-readers come from 127.0.0.2 and
    up, 8 connections per address (the broker's limit per address). */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "asyncq/consumer.h"
#include "asyncq/process.h"
#include "asyncq/producer.h"
#include "asyncq/program.h"
#include "benchlib.h"

#define PER_ADDRESS 8

static int g_port;
static atomic_int g_stop;
static atomic_uint_fast64_t g_scrapes, g_scrape_bytes;

static int s_connect_from(int from)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    if (fd < 0)
        return -1;
    struct sockaddr_in local = {.sin_family = AF_INET};
    char address[32];
    snprintf(address, sizeof address, "127.0.0.%d", from);
    inet_pton(AF_INET, address, &local.sin_addr);
    struct sockaddr_in to = {.sin_family = AF_INET, .sin_port = htons((uint16_t) g_port)};
    inet_pton(AF_INET, "127.0.0.1", &to.sin_addr);
    if (bind(fd, (struct sockaddr *) &local, sizeof local) != 0
        || (connect(fd, (struct sockaddr *) &to, sizeof to) != 0 && errno != EINPROGRESS)) {
        close(fd);
        return -1;
    }
    return fd;
}

static const char s_request[] = "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";

typedef struct {
    int fd, from;
    size_t sent, got;
} scraper_t;

/*  `count` connections scraping back to back, each on a new connection. */
static void *s_scrapers(void *arg)
{
    int count = (int) (intptr_t) arg;
    scraper_t *s = calloc((size_t) count, sizeof *s);
    struct pollfd *items = calloc((size_t) count, sizeof *items);
    static char buf[65536];
    for (int i = 0; i < count; i++) {
        s[i].from = 2 + i / PER_ADDRESS;
        s[i].fd = s_connect_from(s[i].from);
    }
    while (!g_stop) {
        for (int i = 0; i < count; i++) {
            if (s[i].fd < 0) {
                s[i].fd = s_connect_from(s[i].from);
                s[i].sent = s[i].got = 0;
            }
            items[i] = (struct pollfd){s[i].fd, s[i].sent < sizeof s_request - 1 ? POLLOUT : POLLIN, 0};
        }
        if (poll(items, (nfds_t) count, 100) <= 0)
            continue;
        for (int i = 0; i < count; i++) {
            if (!items[i].revents)
                continue;
            if (s[i].sent < sizeof s_request - 1) {
                ssize_t n = send(s[i].fd, s_request + s[i].sent, sizeof s_request - 1 - s[i].sent,
                                 MSG_NOSIGNAL);
                if (n > 0)
                    s[i].sent += (size_t) n;
                else if (n < 0 && errno != EAGAIN) {
                    close(s[i].fd);
                    s[i].fd = -1;
                }
                continue;
            }
            ssize_t n = recv(s[i].fd, buf, sizeof buf, 0);
            if (n > 0)
                s[i].got += (size_t) n;
            else if (n == 0 || errno != EAGAIN) {
                if (n == 0 && s[i].got > 0) {
                    g_scrapes++;
                    g_scrape_bytes = s[i].got;
                }
                close(s[i].fd);
                s[i].fd = -1;
            }
        }
    }
    for (int i = 0; i < count; i++)
        if (s[i].fd >= 0)
            close(s[i].fd);
    free(items);
    free(s);
    return NULL;
}

/*  put -> SYNCED -> got -> ack flushed, for `ms`: the samples in µs. */
static size_t s_probe(aq_producer_t *producer, aq_consumer_t *consumer, int ms, uint32_t *samples,
                      size_t max)
{
    size_t count = 0;
    int64_t end = bench_now_us() + (int64_t) ms * 1000;
    while (bench_now_us() < end && count < max) {
        int64_t started = bench_now_us();
        aq_item_t item;
        if (aq_producer_put(producer, "probe", "x", 1) || aq_producer_sync(producer, 30000)
            || aq_consumer_get(consumer, &item, 30000))
            return count;
        aq_consumer_ack(consumer, item.id);
        if (aq_consumer_flush(consumer))
            return count;
        samples[count++] = (uint32_t) (bench_now_us() - started);
        bench_sleep_us(1000); /* about 1 000 probes a second, not a saturating load */
    }
    return count;
}

static int s_run(uint64_t queues, int scrapers, int deaf, int seconds)
{
    char path[4096], address[256], ports[32], max_queues[32];
    if (aq_program_path("asyncq-broker", path, sizeof path)) {
        fprintf(stderr, "asyncq-scrape-bench: asyncq-broker not found next to this program\n");
        return 1;
    }
    g_port = bench_free_port();
    snprintf(ports, sizeof ports, "127.0.0.1:%d", g_port);
    /* Room for every queue from one client (a limit per client is a
       tenth of --max-queues). */
    snprintf(max_queues, sizeof max_queues, "%llu", (unsigned long long) queues * 20 + 1000);
    char *argv[] = {path, "--bind", "tcp://127.0.0.1:0", "--metrics", ports,
                    "--max-queues", max_queues, NULL};
    aq_process_t broker = {0};
    if (aq_process_spawn(&broker, argv, 1, AQ_STDIN_NULL))
        return 1;
    bench_track(broker.pid);
    if (!aq_process_expect(&broker, "READY ", address, sizeof address, 10000)) {
        fprintf(stderr, "asyncq-scrape-bench: the broker did not start\n");
        return 1;
    }
    aq_status_t rc;
    aq_producer_t *producer = aq_producer_new(address, "bench", &rc);
    aq_consumer_t *consumer = aq_consumer_new(address, "probe", "probe", 1, &rc);
    if (!producer || !consumer)
        return 1;
    for (uint64_t i = 0; i < queues; i++) {
        char name[32];
        snprintf(name, sizeof name, "queue-%06llu", (unsigned long long) i);
        if (aq_producer_put(producer, name, "x", 1))
            return 1;
        if (i % 1000 == 999 && aq_producer_sync(producer, 30000))
            return 1;
    }
    if (aq_producer_sync(producer, 30000))
        return 1;
    uint64_t start_kib = bench_proc_kib(broker.pid, "VmRSS:");
    size_t max = (size_t) seconds * 2000;
    uint32_t *samples = calloc(max, sizeof *samples);
    size_t count = s_probe(producer, consumer, seconds * 1000, samples, max);
    char label[160];
    snprintf(label, sizeof label, "%6llu queues, no scrape:             put->ack",
             (unsigned long long) queues);
    bench_print_percentiles(label, samples, count);

    /* The never-readers: ask, then never read. */
    int *deaf_fds = calloc((size_t) deaf + 1, sizeof *deaf_fds);
    int from = 2 + (scrapers + PER_ADDRESS - 1) / PER_ADDRESS;
    for (int i = 0; i < deaf; i++) {
        deaf_fds[i] = s_connect_from(from + i / PER_ADDRESS);
        if (deaf_fds[i] >= 0) {
            int small = 4096;
            setsockopt(deaf_fds[i], SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
        }
    }
    bench_sleep_us(100000);
    for (int i = 0; i < deaf; i++)
        if (deaf_fds[i] >= 0 && send(deaf_fds[i], s_request, sizeof s_request - 1, MSG_NOSIGNAL) < 0) {
            close(deaf_fds[i]);
            deaf_fds[i] = -1;
        }
    g_stop = 0;
    g_scrapes = 0;
    pthread_t thread;
    pthread_create(&thread, NULL, s_scrapers, (void *) (intptr_t) scrapers);
    bench_sleep_us(500000);
    count = s_probe(producer, consumer, seconds * 1000, samples, max);
    uint64_t scrapes = g_scrapes;
    g_stop = 1;
    pthread_join(thread, NULL);
    snprintf(label, sizeof label, "%6llu queues, %d scraping, %d not reading: put->ack",
             (unsigned long long) queues, scrapers, deaf);
    bench_print_percentiles(label, samples, count);
    uint64_t peak_kib = bench_proc_kib(broker.pid, "VmHWM:");
    printf("        %llu scrapes done in %d s, %llu bytes each (%.0f per queue); broker RSS %llu "
           "MiB at start, peak %llu MiB (+%llu MiB)\n",
           (unsigned long long) scrapes, seconds, (unsigned long long) g_scrape_bytes,
           (double) g_scrape_bytes / (double) (queues ? queues : 1),
           (unsigned long long) start_kib / 1024, (unsigned long long) peak_kib / 1024,
           (unsigned long long) (peak_kib > start_kib ? peak_kib - start_kib : 0) / 1024);
    fflush(stdout);
    for (int i = 0; i < deaf; i++)
        if (deaf_fds[i] >= 0)
            close(deaf_fds[i]);
    free(deaf_fds);
    free(samples);
    aq_consumer_destroy(&consumer);
    aq_producer_destroy(&producer);
    aq_process_stop(&broker, SIGTERM, 10000);
    bench_untrack(broker.pid);
    return 0;
}

int main(int argc, char **argv)
{
    uint64_t counts[8] = {1000, 10000};
    size_t n = 2;
    int scrapers = 128, deaf = 128, seconds = 5;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--queues") == 0 && i + 1 < argc) {
            n = 0;
            for (char *part = strtok(argv[++i], ","); part && n < 8; part = strtok(NULL, ","))
                if (bench_parse_u64(part, &counts[n]))
                    n++;
        } else if (strcmp(argv[i], "--scrapers") == 0 && i + 1 < argc)
            scrapers = atoi(argv[++i]);
        else if (strcmp(argv[i], "--deaf") == 0 && i + 1 < argc)
            deaf = atoi(argv[++i]);
        else if (strcmp(argv[i], "--seconds") == 0 && i + 1 < argc)
            seconds = atoi(argv[++i]);
        else {
            fprintf(stderr, "usage: asyncq-scrape-bench [--queues 1000,10000] [--scrapers 128] "
                            "[--deaf 128] [--seconds 5]\n");
            return 2;
        }
    }
    bench_catch_signals();
    for (size_t i = 0; i < n; i++)
        if (s_run(counts[i], scrapers, deaf, seconds))
            return 1;
    return 0;
}
