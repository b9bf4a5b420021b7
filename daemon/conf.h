/* conf.h: hymbad's settings: /etc/hymba/hymbad.conf (key = value) plus command-line overrides. */
#ifndef HYMBA_DAEMON_CONF_H
#define HYMBA_DAEMON_CONF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define HYD_CONFIG_DEFAULT_PATH "/etc/hymba/hymbad.conf"

typedef enum hyd_bus_kind {
    HYD_BUS_SYSTEM,          /* the default */
    HYD_BUS_USER,            /* --user: the session bus */
    HYD_BUS_ADDRESS,         /* --bus-address ADDRESS (tests) */
} hyd_bus_kind;

typedef struct hyd_config {
    char *model_dir;                 /* model = DIR (required) */
    char *backend;                   /* backend = cpu|cuda|auto */
    char *state_dir;                 /* state_dir = DIR: checkpoints live here */
    int threads;                     /* threads = N: CPU threads, 0 = all cores */
    int64_t context_length;          /* context_length = N: 0 = the model's maximum */
    uint32_t max_sessions_per_user;  /* sessions one UID may hold */
    uint32_t max_queued_per_user;    /* requests of one UID queued or generating */
    uint32_t max_message_bytes;      /* bytes of one user message or system prompt */
    uint32_t max_payload_bytes;      /* bytes of one protobuf payload on the bus */
    uint32_t max_new_tokens;         /* cap on one answer's tokens */
    uint32_t default_max_new_tokens; /* when the request leaves it 0 */
    uint32_t prefill_chunk;          /* prompt tokens per scheduler step */
    uint32_t max_batch;              /* sessions decoded together in one step */
    uint32_t turn_snapshots;         /* K: answers a session can regenerate/rewind (issue 5) */
    bool debug;                      /* log_level = debug */
    /* Command line only. */
    hyd_bus_kind bus_kind;
    char *bus_address;
} hyd_config;

void hyd_config_init(hyd_config *c);     /* built-in defaults */
void hyd_config_done(hyd_config *c);

/* Read a key = value file over *c.  must_exist: a missing file is an error
 * (given with --config) rather than "use the defaults".  Errors name the file,
 * line and key; msg (size msg_len) receives the text. */
int hyd_config_load(hyd_config *c, const char *path, bool must_exist, char *msg, size_t msg_len);
/* Set one key from text (the config file and the command line share it). */
int hyd_config_set(hyd_config *c, const char *key, const char *value, char *msg, size_t msg_len);
/* Cross-field checks after all sources are read. */
int hyd_config_check(const hyd_config *c, char *msg, size_t msg_len);

#endif
