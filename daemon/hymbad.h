/* hymbad.h: the daemon's one context struct and the pieces main() wires together. */
#ifndef HYMBA_DAEMON_HYMBAD_H
#define HYMBA_DAEMON_HYMBAD_H

#include <stdbool.h>
#include <stdint.h>
#include <systemd/sd-bus.h>
#include <systemd/sd-event.h>
#include "daemon/conf.h"
#include "daemon/sched.h"
#include "daemon/session.h"
#include "engine/hymba.h"
#include "engine/tok.h"

#define HYD_BUS_NAME "org.hymba.Assistant1"
#define HYD_OBJECT_PATH "/org/hymba/Assistant1"
#define HYD_IFACE_MANAGER "org.hymba.Assistant1.Manager"
#define HYD_IFACE_SESSION "org.hymba.Assistant1.Session"
#define HYD_PROTOCOL_VERSION 1

/* A bus peer's UID, remembered until its unique name leaves the bus. */
typedef struct hyd_peer {
    char *name;
    uid_t uid;
    struct hyd_peer *next;
} hyd_peer;

typedef struct hyd_ctx {
    hyd_config cfg;
    sd_event *event;
    sd_bus *bus;
    sd_bus_slot *slot_manager, *slot_session, *slot_owner_changed;
    sd_event_source *sched_source;

    hy_model *model;                 /* the scheduler's while it runs */
    hy_tok *tok;
    hyd_sched *sched;
    char *model_dir, *backend;       /* copies for properties (the loop never touches the model) */
    int64_t max_ctx;

    hyd_registry reg;
    hyd_request *live;               /* every request not yet finished, newest first */
    uint64_t next_request_id;
    hyd_peer *peers;
    int64_t start_mono_usec;
    bool stopping;
} hyd_ctx;

/* bus.c */
int hyd_bus_setup(hyd_ctx *c);                    /* connect, export objects, take the name */
int hyd_bus_on_events(sd_event_source *s, int fd, uint32_t revents, void *userdata);
void hyd_bus_cancel_all(hyd_ctx *c, int reason);
void hyd_bus_drain_events(hyd_ctx *c);            /* after the scheduler stopped */
void hyd_peers_free(hyd_ctx *c);
void hyd_bus_notify_status(hyd_ctx *c);
/* Shared by every method handler (bus.c and persist.c). */
int hyd_bus_caller_uid(hyd_ctx *c, sd_bus_message *m, uid_t *uid, sd_bus_error *error);
/* The prologue of every typed method: the caller's UID, then its request
 * decoded (descriptor d, at most max_payload_bytes). */
struct ProtobufCMessageDescriptor;
struct ProtobufCMessage;
int hyd_bus_read_request(hyd_ctx *c, sd_bus_message *m, const struct ProtobufCMessageDescriptor *d,
                         struct ProtobufCMessage **req, uid_t *uid, sd_bus_error *error);
int hyd_bus_session_lookup(hyd_ctx *c, const char *id, uid_t uid, hyd_session **out, sd_bus_error *error);
int hyd_bus_request_check(hyd_ctx *c, hyd_session *s, uid_t uid, sd_bus_error *error);
int hyd_bus_request_submit(hyd_ctx *c, sd_bus_message *m, hyd_session *s, uid_t uid, char *text,
                           uint32_t max_new, bool ignore_eos);

#endif
