/* conf.c: parse hymbad.conf: "key = value" lines, '#' comments, unknown keys refused. */
#include "daemon/conf.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void hyd_config_init(hyd_config *c)
{
    memset(c, 0, sizeof(*c));
    c->backend = strdup("auto");
    c->state_dir = strdup("/var/lib/hymba");
    c->max_sessions_per_user = 16;
    c->max_queued_per_user = 4;
    c->max_message_bytes = 64 * 1024;
    c->max_payload_bytes = 256 * 1024;
    c->max_new_tokens = 4096;
    c->default_max_new_tokens = 512;
    c->prefill_chunk = 256;
    c->max_batch = 16;
    c->turn_snapshots = 4;            /* HYD_DEFAULT_TURN_SNAPSHOTS (daemon/persist.h) */
    c->bus_kind = HYD_BUS_SYSTEM;
}

void hyd_config_done(hyd_config *c)
{
    free(c->model_dir);
    free(c->backend);
    free(c->state_dir);
    free(c->bus_address);
    memset(c, 0, sizeof(*c));
}

static int set_string(char **dst, const char *value)
{
    char *s = strdup(value);
    if (!s)
        return -ENOMEM;
    free(*dst);
    *dst = s;
    return 0;
}

static int parse_u64(const char *value, uint64_t max, uint64_t *out)
{
    char *end;
    unsigned long long v;

    if (!isdigit((unsigned char)value[0]))
        return -EINVAL;
    errno = 0;
    v = strtoull(value, &end, 10);
    if (errno || *end || v > max)
        return -ERANGE;
    *out = v;
    return 0;
}

/* Unsigned limits: key, field offset, lowest and highest allowed value. */
typedef struct limit_key {
    const char *key;
    size_t offset;
    uint64_t min, max;
} limit_key;

#define U32_FIELD(f) offsetof(hyd_config, f)
static const limit_key limit_keys[] = {
    { "max_sessions_per_user", U32_FIELD(max_sessions_per_user), 1, 1u << 20 },
    { "max_queued_per_user", U32_FIELD(max_queued_per_user), 1, 1u << 20 },
    { "max_message_bytes", U32_FIELD(max_message_bytes), 1, 64u << 20 },
    { "max_payload_bytes", U32_FIELD(max_payload_bytes), 64, 96u << 20 },
    { "max_new_tokens", U32_FIELD(max_new_tokens), 1, 1u << 24 },
    { "default_max_new_tokens", U32_FIELD(default_max_new_tokens), 1, 1u << 24 },
    { "prefill_chunk", U32_FIELD(prefill_chunk), 1, 1u << 16 },
    { "max_batch", U32_FIELD(max_batch), 1, 1024 },
    { "turn_snapshots", U32_FIELD(turn_snapshots), 0, 16 },
};

int hyd_config_set(hyd_config *c, const char *key, const char *value, char *msg, size_t msg_len)
{
    uint64_t v;
    int r;

    if (!strcmp(key, "model"))
        return set_string(&c->model_dir, value);
    if (!strcmp(key, "state_dir"))
        return set_string(&c->state_dir, value);
    if (!strcmp(key, "backend")) {
        if (strcmp(value, "cpu") && strcmp(value, "cuda") && strcmp(value, "auto")) {
            snprintf(msg, msg_len, "backend must be cpu, cuda or auto, not \"%s\"", value);
            return -EINVAL;
        }
        return set_string(&c->backend, value);
    }
    if (!strcmp(key, "log_level")) {
        if (strcmp(value, "info") && strcmp(value, "debug")) {
            snprintf(msg, msg_len, "log_level must be info or debug, not \"%s\"", value);
            return -EINVAL;
        }
        c->debug = !strcmp(value, "debug");
        return 0;
    }
    if (!strcmp(key, "threads") || !strcmp(key, "context_length")) {
        r = parse_u64(value, !strcmp(key, "threads") ? 4096 : INT32_MAX, &v);
        if (r < 0) {
            snprintf(msg, msg_len, "%s must be a non-negative integer, not \"%s\"", key, value);
            return r;
        }
        if (!strcmp(key, "threads"))
            c->threads = (int)v;
        else
            c->context_length = (int64_t)v;
        return 0;
    }
    for (size_t i = 0; i < sizeof(limit_keys) / sizeof(limit_keys[0]); i++) {
        const limit_key *k = &limit_keys[i];
        if (strcmp(key, k->key))
            continue;
        r = parse_u64(value, k->max, &v);
        if (r < 0 || v < k->min) {
            snprintf(msg, msg_len, "%s must be an integer from %llu to %llu, not \"%s\"",
                     key, (unsigned long long)k->min, (unsigned long long)k->max, value);
            return -ERANGE;
        }
        *(uint32_t *)((char *)c + k->offset) = (uint32_t)v;
        return 0;
    }
    snprintf(msg, msg_len, "unknown key \"%s\"", key);
    return -EINVAL;
}

static char *strip(char *s)
{
    char *e;

    while (isspace((unsigned char)*s))
        s++;
    e = s + strlen(s);
    while (e > s && isspace((unsigned char)e[-1]))
        *--e = 0;
    return s;
}

int hyd_config_load(hyd_config *c, const char *path, bool must_exist, char *msg, size_t msg_len)
{
    char *line = NULL, sub[512];
    size_t cap = 0;
    unsigned lineno = 0;
    int r = 0;
    FILE *f = fopen(path, "re");

    if (!f) {
        r = -errno;
        if (r == -ENOENT && !must_exist)
            return 0;
        snprintf(msg, msg_len, "%s: %s", path, strerror(-r));
        return r;
    }
    while (getline(&line, &cap, f) >= 0) {
        char *s = strip(line), *eq;
        lineno++;
        if (!*s || *s == '#' || *s == ';')
            continue;
        eq = strchr(s, '=');
        if (!eq) {
            snprintf(msg, msg_len, "%s:%u: expected \"key = value\"", path, lineno);
            r = -EINVAL;
            break;
        }
        *eq = 0;
        char *key = strip(s), *value = strip(eq + 1);
        sub[0] = 0;
        r = hyd_config_set(c, key, value, sub, sizeof(sub));
        if (r < 0) {
            snprintf(msg, msg_len, "%s:%u: %s", path, lineno, sub[0] ? sub : strerror(-r));
            break;
        }
    }
    free(line);
    fclose(f);
    return r;
}

int hyd_config_check(const hyd_config *c, char *msg, size_t msg_len)
{
    if (!c->model_dir || !*c->model_dir) {
        snprintf(msg, msg_len, "no model directory: set \"model = DIR\" in the config file or pass --model DIR");
        return -EINVAL;
    }
    if (c->default_max_new_tokens > c->max_new_tokens) {
        snprintf(msg, msg_len, "default_max_new_tokens (%u) exceeds max_new_tokens (%u)",
                 c->default_max_new_tokens, c->max_new_tokens);
        return -EINVAL;
    }
    if (c->max_message_bytes > c->max_payload_bytes) {
        snprintf(msg, msg_len, "max_message_bytes (%u) exceeds max_payload_bytes (%u): no message could reach the limit",
                 c->max_message_bytes, c->max_payload_bytes);
        return -EINVAL;
    }
    if (c->bus_kind == HYD_BUS_ADDRESS && (!c->bus_address || !*c->bus_address)) {
        snprintf(msg, msg_len, "--bus-address needs an address");
        return -EINVAL;
    }
    return 0;
}
