#include "asyncq/endpoint.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int s_parse_port(const char *text, int for_bind, int *port)
{
    if (for_bind && strcmp(text, "*") == 0) {
        *port = 0;
        return 1;
    }
    char *end;
    long value = strtol(text, &end, 10);
    if (*text == '\0' || *end != '\0' || value < 0 || value > 65534)
        return 0;
    if (value == 0 && !for_bind)
        return 0;
    *port = (int) value;
    return 1;
}

/*  HOST, HOST:PORT, [V6], [V6]:PORT, :PORT (bind only). */
static aq_status_t s_parse_host_port(const char *text, int for_bind, aq_endpoint_t *endpoint)
{
    const char *colon = NULL;
    const char *host = text;
    size_t host_len;
    if (*text == '[') {
        const char *close = strchr(text, ']');
        if (!close || (close[1] != '\0' && close[1] != ':'))
            return AQ_BAD_ENDPOINT;
        host_len = (size_t) (close - text + 1);
        colon = close[1] == ':' ? close + 1 : NULL;
    }
    else {
        colon = strrchr(text, ':');
        if (colon && strchr(text, ':') != colon)
            return AQ_BAD_ENDPOINT; /* bare IPv6 needs brackets */
        host_len = colon ? (size_t) (colon - text) : strlen(text);
    }
    if (host_len >= sizeof endpoint->host)
        return AQ_BAD_ENDPOINT;
    if (host_len == 0) {
        if (!for_bind)
            return AQ_BAD_ENDPOINT;
        strcpy(endpoint->host, "*");
    }
    else {
        memcpy(endpoint->host, host, host_len);
        endpoint->host[host_len] = '\0';
    }
    if (!for_bind && strcmp(endpoint->host, "*") == 0)
        return AQ_BAD_ENDPOINT;
    endpoint->port = AQ_DEFAULT_PORT;
    if (colon && !s_parse_port(colon + 1, for_bind, &endpoint->port))
        return AQ_BAD_ENDPOINT;
    return AQ_OK;
}

aq_status_t aq_endpoint_parse(const char *address, int for_bind, aq_endpoint_t *endpoint)
{
    memset(endpoint, 0, sizeof *endpoint);
    if (!address)
        return AQ_BAD_ENDPOINT;
    if (strncmp(address, "ipc://", 6) == 0) {
        const char *path = address + 6;
        if (*path == '\0' || strlen(path) >= sizeof endpoint->path)
            return AQ_BAD_ENDPOINT;
        endpoint->is_ipc = 1;
        strcpy(endpoint->path, path);
        return AQ_OK;
    }
    if (strncmp(address, "tcp://", 6) == 0) {
        address += 6;
        if (!strchr(address, ':') || address[strlen(address) - 1] == ':')
            return AQ_BAD_ENDPOINT; /* a full tcp endpoint names its port */
    }
    else if (strstr(address, "://"))
        return AQ_BAD_ENDPOINT;
    if (*address == '\0' && !for_bind)
        return AQ_BAD_ENDPOINT;
    return s_parse_host_port(address, for_bind, endpoint);
}

static void s_format(const aq_endpoint_t *endpoint, int offset, const char *suffix, char *buf,
                     size_t size)
{
    if (endpoint->is_ipc)
        snprintf(buf, size, "ipc://%s%s", endpoint->path, suffix);
    else
        snprintf(buf, size, "tcp://%s:%d", endpoint->host, endpoint->port + offset);
}

void aq_endpoint_pull(const aq_endpoint_t *endpoint, char *buf, size_t size)
{
    s_format(endpoint, 0, ".pull", buf, size);
}

void aq_endpoint_router(const aq_endpoint_t *endpoint, char *buf, size_t size)
{
    s_format(endpoint, 1, ".router", buf, size);
}

void aq_endpoint_format(const aq_endpoint_t *endpoint, char *buf, size_t size)
{
    s_format(endpoint, 0, "", buf, size);
}

void aq_endpoint_local(const aq_endpoint_t *bound, char *buf, size_t size)
{
    aq_endpoint_t local = *bound;
    if (!local.is_ipc && strcmp(local.host, "*") == 0)
        strcpy(local.host, "127.0.0.1"); /* bound everywhere; this works locally */
    aq_endpoint_format(&local, buf, size);
}

const char *aq_endpoint_choose(const char *flag, const char *env, const char *fallback)
{
    if (flag && *flag)
        return flag;
    const char *value = env ? getenv(env) : NULL;
    return value && *value ? value : fallback;
}
