#include "ratelog.h"

#include <stdarg.h>
#include <stdio.h>
#include <time.h>

/*  "asyncq-broker", or "asyncq-broker[shard K]" for a broker of a service. */
static char s_name[32] = "asyncq-broker";

void log_set_shard(int shard)
{
    snprintf(s_name, sizeof s_name, "asyncq-broker[shard %d]", shard);
}

static void s_write(const char *prefix, const char *format, va_list args)
{
    char line[1024];
    vsnprintf(line, sizeof line, format, args);
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    fprintf(stderr, "%04d-%02d-%02dT%02d:%02d:%02dZ %s: %s%s\n", tm.tm_year + 1900,
            tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, s_name, prefix, line);
}

void log_line(const char *format, ...)
{
    va_list args;
    va_start(args, format);
    s_write("", format, args);
    va_end(args);
}

void ratelog_init(ratelog_t *self, const char *cause, int per_second)
{
    *self = (ratelog_t){.cause = cause, .per_second = per_second};
}

void ratelog_line(ratelog_t *self, int64_t now_ms, const char *format, ...)
{
    self->total++;
    if (now_ms - self->window_ms >= 1000) {
        if (self->lines > self->per_second)
            log_line("%s: %d more lines not written", self->cause,
                     self->lines - self->per_second);
        self->window_ms = now_ms;
        self->lines = 0;
    }
    if (self->lines++ >= self->per_second)
        return;
    char prefix[64];
    snprintf(prefix, sizeof prefix, "%s: ", self->cause);
    va_list args;
    va_start(args, format);
    s_write(prefix, format, args);
    va_end(args);
}

char *log_escape(char *dest, size_t size, const void *data, size_t length)
{
    static const char hex[] = "0123456789abcdef";
    const unsigned char *bytes = data;
    size_t at = 0;
    for (size_t i = 0; i < length; i++) {
        unsigned char c = bytes[i];
        int plain = c >= 0x20 && c < 0x7f && c != '\\';
        if (at + (plain ? 1 : 4) >= size)
            break;
        if (plain)
            dest[at++] = (char) c;
        else {
            dest[at++] = '\\';
            dest[at++] = 'x';
            dest[at++] = hex[c >> 4];
            dest[at++] = hex[c & 15];
        }
    }
    if (size)
        dest[at] = '\0';
    return dest;
}
