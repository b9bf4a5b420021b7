/* ctl.h: hymbactl's connection to hymbad: calls with protobuf payloads, streamed answers, exit codes. */
#ifndef HYMBA_CLIENT_CTL_H
#define HYMBA_CLIENT_CTL_H

#include <stdbool.h>
#include <stdint.h>
#include <systemd/sd-bus.h>
#include "proto/hymba.pb-c.h"

#define CTL_BUS_NAME "org.hymba.Assistant1"
#define CTL_OBJECT_PATH "/org/hymba/Assistant1"
#define CTL_IFACE_MANAGER "org.hymba.Assistant1.Manager"
#define CTL_IFACE_SESSION "org.hymba.Assistant1.Session"

/* Exit codes (documented in --help). */
enum {
    CTL_EXIT_OK = 0,
    CTL_EXIT_USAGE = 2,
    CTL_EXIT_UNREACHABLE = 3,
    CTL_EXIT_FAILED = 4,
};

typedef enum ctl_bus_kind { CTL_BUS_SYSTEM, CTL_BUS_USER, CTL_BUS_ADDRESS } ctl_bus_kind;

typedef struct ctl {
    ctl_bus_kind kind;
    const char *address;
    bool json;
    sd_bus *bus;
    int sigfd;                       /* SIGINT/SIGTERM as a file descriptor */
} ctl;

/* Connect; on failure print how to start the daemon.  Returns an exit code. */
int ctl_connect(ctl *c);
void ctl_disconnect(ctl *c);

/* Call iface.method with req packed as "ay", unpack the "ay" reply as
 * reply_desc.  Prints the error and returns an exit code on failure. */
int ctl_call(ctl *c, const char *iface, const char *method, const ProtobufCMessage *req,
             const ProtobufCMessageDescriptor *reply_desc, ProtobufCMessage **reply);
/* The same with a file descriptor passed after the payload ("ayh"), if fd >= 0. */
int ctl_call_fd(ctl *c, const char *iface, const char *method, const ProtobufCMessage *req, int fd,
                const ProtobufCMessageDescriptor *reply_desc, ProtobufCMessage **reply);

/* What one streamed answer produced. */
typedef struct ctl_answer {
    uint64_t request_id;
    char *text;                      /* the whole answer, NUL-terminated */
    size_t len;
    Hymba__V1__Finished *finished;   /* NULL if the daemon went away first */
    bool interrupted;                /* Ctrl-C asked for a cancel */
    bool daemon_gone;
} ctl_answer;

/* Send text to a session and wait for the Finished signal, printing chunks
 * to stdout as they come unless quiet.  Ctrl-C cancels the answer.  Returns
 * an exit code; *ans is filled either way (free with ctl_answer_done). */
int ctl_send(ctl *c, const char *session_id, const char *text, uint32_t max_new_tokens,
             bool ignore_eos, bool quiet, ctl_answer *ans);
/* The same for any Session method that answers like Send (SendReply, then
 * Chunk/Finished signals): Regenerate, Rewind. */
int ctl_stream(ctl *c, const char *method, const ProtobufCMessage *req, bool quiet, ctl_answer *ans);
void ctl_answer_done(ctl_answer *ans);

/* Ctrl-C becomes readable on c->sigfd instead of ending the program (chat, ask). */
int ctl_catch_interrupt(ctl *c);
/* Returns 1 if a SIGINT arrived (and clears it), 0 otherwise. */
int ctl_take_interrupt(ctl *c);

#endif
