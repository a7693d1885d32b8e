#include "asyncq/progress.h"

#include <czmq.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

/*  The time over which aq_rate_t averages: long enough to smooth the bursts
    of batches and credit windows, short enough to follow a real change. */
#define RATE_SMOOTHING_MS 3000.0
#define RATE_MIN_SAMPLE_MS 200

void aq_progress_init(aq_progress_t *self)
{
    const char *term = getenv("TERM");
    memset(self, 0, sizeof *self);
    self->active = isatty(STDERR_FILENO) && !(term && strcmp(term, "dumb") == 0);
}

int aq_progress_due(const aq_progress_t *self, int interval_ms)
{
    return self->active && (!self->drawn_ms || zclock_mono() - self->drawn_ms >= interval_ms);
}

/*  Columns of the terminal on stderr, less one: writing in the last column
    makes some terminals wrap at once. */
static size_t s_line_width(void)
{
    struct winsize size;
    if (ioctl(STDERR_FILENO, TIOCGWINSZ, &size) == 0 && size.ws_col > 1)
        return (size_t) size.ws_col - 1;
    return 79;
}

void aq_progress_show(aq_progress_t *self, const char *format, ...)
{
    if (!self->active)
        return;
    char text[512];
    va_list args;
    va_start(args, format);
    vsnprintf(text, sizeof text, format, args);
    va_end(args);
    size_t width = s_line_width();
    if (strlen(text) > width && width < sizeof text)
        text[width] = '\0';
    /* One write: carriage return, the text, erase what an older, longer
       line left to its right. */
    fprintf(stderr, "\r%s\033[K", text);
    fflush(stderr);
    self->shown = 1;
    self->drawn_ms = zclock_mono();
}

void aq_progress_hide(aq_progress_t *self)
{
    if (!self->active || !self->shown)
        return;
    fputs("\r\033[K", stderr);
    fflush(stderr);
    self->shown = 0;
}

void aq_progress_keep(aq_progress_t *self)
{
    if (!self->active || !self->shown)
        return;
    fputc('\n', stderr);
    fflush(stderr);
    self->shown = 0;
}

void aq_rate_init(aq_rate_t *self)
{
    self->at_ms = 0;
    self->count = 0;
    self->per_s = -1;
}

void aq_rate_update(aq_rate_t *self, uint64_t count)
{
    int64_t now = zclock_mono();
    if (self->at_ms && count < self->count)
        aq_rate_init(self);
    if (!self->at_ms) {
        self->at_ms = now;
        self->count = count;
        return;
    }
    int64_t elapsed = now - self->at_ms;
    if (elapsed < RATE_MIN_SAMPLE_MS)
        return;
    if (self->per_s < 0 && count == self->count) {
        /* Nothing has moved yet (consumers starting): the rate is not known,
           and a run of zeros would hold the average down long after. */
        self->at_ms = now;
        return;
    }
    double rate = (double) (count - self->count) * 1000.0 / (double) elapsed;
    /* An exponential average whose weight follows the time between samples,
       so irregular sampling does not bias it. */
    double weight = 1.0 - exp(-(double) elapsed / RATE_SMOOTHING_MS);
    self->per_s = self->per_s < 0 ? rate : self->per_s + weight * (rate - self->per_s);
    self->at_ms = now;
    self->count = count;
}

char *aq_format_count(uint64_t value, char *buf, size_t size)
{
    char digits[24];
    int length = snprintf(digits, sizeof digits, "%llu", (unsigned long long) value);
    char grouped[32];
    size_t used = 0;
    for (int i = 0; i < length; i++) {
        if (i && (length - i) % 3 == 0)
            grouped[used++] = ',';
        grouped[used++] = digits[i];
    }
    grouped[used] = '\0';
    snprintf(buf, size, "%s", grouped);
    return buf;
}

char *aq_format_duration(double seconds, char *buf, size_t size)
{
    if (!(seconds > 0))
        seconds = 0;
    uint64_t s = (uint64_t) llround(seconds < 1e12 ? seconds : 1e12);
    if (s == 0 && seconds > 0)
        s = 1; /* "about 0 s left" would say it is over */
    if (s < 60)
        snprintf(buf, size, "%llu s", (unsigned long long) s);
    else if (s < 3600)
        snprintf(buf, size, "%llu min %llu s", (unsigned long long) (s / 60),
                 (unsigned long long) (s % 60));
    else if (s < 86400)
        snprintf(buf, size, "%llu h %llu min", (unsigned long long) (s / 3600),
                 (unsigned long long) (s % 3600 / 60));
    else
        snprintf(buf, size, "%llu d %llu h", (unsigned long long) (s / 86400),
                 (unsigned long long) (s % 86400 / 3600));
    return buf;
}
