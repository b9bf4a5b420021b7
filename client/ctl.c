/* ctl.c: hymbactl's bus plumbing: connect, call with protobuf payloads, wait for streamed signals. */
#include "client/ctl.h"
#include "client/term.h"

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <time.h>
#include <unistd.h>

static const char *bus_desc(const ctl *c)
{
    return c->kind == CTL_BUS_USER ? "the session bus" : c->kind == CTL_BUS_ADDRESS ? c->address : "the system bus";
}

static void print_not_running(const ctl *c)
{
    fprintf(stderr, "hymbactl: hymbad is not running on %s.\n", bus_desc(c));
    if (c->kind == CTL_BUS_SYSTEM)
        fprintf(stderr, "Start it with 'systemctl start hymbad' (as root), or run 'hymbad --user --model DIR'\n"
                        "and use 'hymbactl --user'.\n");
    else if (c->kind == CTL_BUS_USER)
        fprintf(stderr, "Start it with 'systemctl --user start hymbad' or 'hymbad --user --model DIR &'.\n");
    else
        fprintf(stderr, "Start it with 'hymbad --bus-address %s --model DIR &'.\n", c->address);
}

int ctl_catch_interrupt(ctl *c)
{
    sigset_t mask;

    sigemptyset(&mask);
    sigaddset(&mask, SIGINT);
    if (sigprocmask(SIG_BLOCK, &mask, NULL) < 0)
        return -errno;
    c->sigfd = signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK);
    return c->sigfd < 0 ? -errno : 0;
}

int ctl_connect(ctl *c)
{
    int r;

    switch (c->kind) {
    case CTL_BUS_USER:
        r = sd_bus_open_user(&c->bus);
        break;
    case CTL_BUS_ADDRESS:
        r = sd_bus_new(&c->bus);
        if (r >= 0)
            r = sd_bus_set_address(c->bus, c->address);
        if (r >= 0)
            r = sd_bus_set_bus_client(c->bus, 1);
        if (r >= 0)
            r = sd_bus_start(c->bus);
        break;
    default:
        r = sd_bus_open_system(&c->bus);
        break;
    }
    if (r < 0) {
        fprintf(stderr, "hymbactl: cannot connect to %s: %s\n", bus_desc(c), strerror(-r));
        if (c->kind != CTL_BUS_SYSTEM || r == -ENOENT || r == -ECONNREFUSED)
            print_not_running(c);
        c->bus = sd_bus_flush_close_unref(c->bus);
        return CTL_EXIT_UNREACHABLE;
    }
    return CTL_EXIT_OK;
}

void ctl_disconnect(ctl *c)
{
    c->bus = sd_bus_flush_close_unref(c->bus);
    if (c->sigfd >= 0)
        close(c->sigfd);
    c->sigfd = -1;
}

int ctl_take_interrupt(ctl *c)
{
    struct signalfd_siginfo si;
    int got = 0;

    while (c->sigfd >= 0 && read(c->sigfd, &si, sizeof(si)) == (ssize_t)sizeof(si))
        got = 1;
    return got;
}

/* An error reply: unreachable daemon (3) or failed request (4). */
static int report_error(const ctl *c, const sd_bus_error *e, int r)
{
    if (sd_bus_error_has_names(e, SD_BUS_ERROR_SERVICE_UNKNOWN, SD_BUS_ERROR_NAME_HAS_NO_OWNER,
                               SD_BUS_ERROR_NO_REPLY, SD_BUS_ERROR_DISCONNECTED) ||
        r == -ECONNRESET || r == -ENOTCONN) {
        print_not_running(c);
        return CTL_EXIT_UNREACHABLE;
    }
    if (e && e->message)
        fprintf(stderr, "hymbactl: %s (%s)\n", e->message, e->name);
    else
        fprintf(stderr, "hymbactl: %s\n", strerror(-r));
    return CTL_EXIT_FAILED;
}

static int append_msg(sd_bus_message *m, const ProtobufCMessage *msg)
{
    size_t n = protobuf_c_message_get_packed_size(msg);
    uint8_t *buf = malloc(n ? n : 1);
    int r;

    if (!buf)
        return -ENOMEM;
    protobuf_c_message_pack(msg, buf);
    r = sd_bus_message_append_array(m, 'y', buf, n);
    free(buf);
    return r;
}

static int read_msg(sd_bus_message *m, const ProtobufCMessageDescriptor *d, ProtobufCMessage **out)
{
    const void *data;
    size_t size;
    int r = sd_bus_message_read_array(m, 'y', &data, &size);

    if (r < 0)
        return r;
    *out = protobuf_c_message_unpack(d, NULL, size, data);
    return *out ? 0 : -EBADMSG;
}

int ctl_call(ctl *c, const char *iface, const char *method, const ProtobufCMessage *req,
             const ProtobufCMessageDescriptor *reply_desc, ProtobufCMessage **reply)
{
    return ctl_call_fd(c, iface, method, req, -1, reply_desc, reply);
}

int ctl_call_fd(ctl *c, const char *iface, const char *method, const ProtobufCMessage *req, int fd,
                const ProtobufCMessageDescriptor *reply_desc, ProtobufCMessage **reply)
{
    sd_bus_message *m = NULL, *rep = NULL;
    sd_bus_error e = SD_BUS_ERROR_NULL;
    int r, ret = CTL_EXIT_OK;

    r = sd_bus_message_new_method_call(c->bus, &m, CTL_BUS_NAME, CTL_OBJECT_PATH, iface, method);
    if (r >= 0)
        r = append_msg(m, req);
    if (r >= 0 && fd >= 0)
        r = sd_bus_message_append(m, "h", fd);
    if (r >= 0)
        r = sd_bus_call(c->bus, m, 0, &e, &rep);
    if (r < 0)
        ret = report_error(c, &e, r);
    else if (reply && read_msg(rep, reply_desc, reply) < 0) {
        fprintf(stderr, "hymbactl: the daemon's %s reply is not a valid %s\n", method, reply_desc->name);
        ret = CTL_EXIT_FAILED;
    }
    sd_bus_error_free(&e);
    sd_bus_message_unref(m);
    sd_bus_message_unref(rep);
    return ret;
}

/* ---- streaming ------------------------------------------------------------- */

typedef struct stream {
    ctl_answer *ans;
    const char *daemon;              /* unique name that answered Send: signals must come from it */
    bool quiet;
    bool done;
} stream;

static int on_session_signal(sd_bus_message *m, void *userdata, sd_bus_error *error)
{
    stream *st = userdata;
    const char *sender = sd_bus_message_get_sender(m);
    ProtobufCMessage *msg = NULL;
    (void)error;

    if (!sender || !st->daemon || strcmp(sender, st->daemon))
        return 0;                    /* not from the daemon that took the request */
    if (sd_bus_message_is_signal(m, CTL_IFACE_SESSION, "Chunk")) {
        if (read_msg(m, &hymba__v1__chunk__descriptor, &msg) < 0)
            return 0;
        Hymba__V1__Chunk *ch = (Hymba__V1__Chunk *)msg;
        if (ch->request_id == st->ans->request_id) {
            size_t n = strlen(ch->text);
            char *t = realloc(st->ans->text, st->ans->len + n + 1);
            if (t) {
                memcpy(t + st->ans->len, ch->text, n + 1);
                st->ans->text = t;
                st->ans->len += n;
            }
            if (!st->quiet) {
                term_progress_clear();
                term_write_text(ch->text, n);
                fflush(stdout);
            }
        }
    } else if (sd_bus_message_is_signal(m, CTL_IFACE_SESSION, "Finished")) {
        if (read_msg(m, &hymba__v1__finished__descriptor, &msg) < 0)
            return 0;
        Hymba__V1__Finished *fin = (Hymba__V1__Finished *)msg;
        if (fin->request_id == st->ans->request_id && !st->ans->finished) {
            st->ans->finished = fin;
            st->done = true;
            return 0;
        }
    }
    protobuf_c_message_free_unpacked(msg, NULL);
    return 0;
}

static int on_owner_changed(sd_bus_message *m, void *userdata, sd_bus_error *error)
{
    stream *st = userdata;
    const char *name, *old_owner, *new_owner;
    (void)error;

    if (sd_bus_message_read(m, "sss", &name, &old_owner, &new_owner) >= 0 &&
        !strcmp(name, CTL_BUS_NAME) && !*new_owner) {
        st->ans->daemon_gone = true;
        st->done = true;
    }
    return 0;
}

static void send_cancel(ctl *c, uint64_t id)
{
    /* Fire and forget: the Finished signal says how it ended. */
    sd_bus_call_method_async(c->bus, NULL, CTL_BUS_NAME, CTL_OBJECT_PATH, CTL_IFACE_SESSION, "Cancel",
                             NULL, NULL, "t", id);
}

int ctl_send(ctl *c, const char *session_id, const char *text, uint32_t max_new_tokens,
             bool ignore_eos, bool quiet, ctl_answer *ans)
{
    Hymba__V1__SendRequest req = HYMBA__V1__SEND_REQUEST__INIT;

    req.session_id = (char *)session_id;
    req.text = (char *)text;
    req.max_new_tokens = max_new_tokens;
    req.ignore_eos = ignore_eos;
    return ctl_stream(c, "Send", &req.base, quiet, ans);
}

int ctl_stream(ctl *c, const char *method, const ProtobufCMessage *req, bool quiet, ctl_answer *ans)
{
    sd_bus_slot *sig_slot = NULL, *owner_slot = NULL;
    sd_bus_message *m = NULL, *rep = NULL;
    sd_bus_error e = SD_BUS_ERROR_NULL;
    ProtobufCMessage *reply = NULL;
    stream st = { .ans = ans, .quiet = quiet };
    int r, ret = CTL_EXIT_OK;

    memset(ans, 0, sizeof(*ans));
    ans->text = calloc(1, 1);
    /* Listen before sending: the first chunk may follow the reply at once. */
    r = sd_bus_match_signal(c->bus, &sig_slot, NULL, CTL_OBJECT_PATH, CTL_IFACE_SESSION, NULL,
                            on_session_signal, &st);
    if (r >= 0)
        r = sd_bus_add_match(c->bus, &owner_slot,
                             "type='signal',sender='org.freedesktop.DBus',interface='org.freedesktop.DBus',"
                             "member='NameOwnerChanged',arg0='" CTL_BUS_NAME "'", on_owner_changed, &st);
    if (r < 0) {
        ret = report_error(c, NULL, r);
        goto out;
    }
    r = sd_bus_message_new_method_call(c->bus, &m, CTL_BUS_NAME, CTL_OBJECT_PATH, CTL_IFACE_SESSION, method);
    if (r >= 0)
        r = append_msg(m, req);
    if (r >= 0)
        r = sd_bus_call(c->bus, m, 0, &e, &rep);
    if (r < 0) {
        ret = report_error(c, &e, r);
        goto out;
    }
    if (read_msg(rep, &hymba__v1__send_reply__descriptor, &reply) < 0) {
        fprintf(stderr, "hymbactl: the daemon's %s reply is not a valid hymba.v1.SendReply\n", method);
        ret = CTL_EXIT_FAILED;
        goto out;
    }
    ans->request_id = ((Hymba__V1__SendReply *)reply)->request_id;
    st.daemon = sd_bus_message_get_sender(rep);
    if (!quiet) {
        uint32_t ahead = ((Hymba__V1__SendReply *)reply)->queue_position;
        if (ahead)
            term_progress("queued: %u request%s ahead...", ahead, ahead == 1 ? "" : "s");
        else
            term_progress("reading the conversation...");
    }

    while (!st.done) {
        struct pollfd p[2];
        uint64_t usec;
        int timeout = -1;

        r = sd_bus_process(c->bus, NULL);
        if (r < 0) {
            ans->daemon_gone = true;
            break;
        }
        if (r > 0)
            continue;
        p[0] = (struct pollfd){ .fd = sd_bus_get_fd(c->bus), .events = (short)sd_bus_get_events(c->bus) };
        p[1] = (struct pollfd){ .fd = c->sigfd, .events = POLLIN };
        if (sd_bus_get_timeout(c->bus, &usec) >= 0 && usec != UINT64_MAX) {
            struct timespec ts;
            clock_gettime(CLOCK_MONOTONIC, &ts);
            uint64_t now = (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000;
            timeout = usec <= now ? 0 : (int)((usec - now + 999) / 1000);
        }
        if (poll(p, 2, timeout) < 0 && errno != EINTR)
            break;
        if (ctl_take_interrupt(c)) {
            if (ans->interrupted) {
                /* A second Ctrl-C: stop waiting for the daemon's answer. */
                fprintf(stderr, "\nhymbactl: not waiting for the cancel to be confirmed\n");
                ret = CTL_EXIT_FAILED;
                goto out;
            }
            ans->interrupted = true;
            send_cancel(c, ans->request_id);
        }
    }
    if (!quiet)
        term_progress_clear();     /* no chunk came: the status line must not stay */
    if (ans->daemon_gone) {
        fprintf(stderr, "\nhymbactl: hymbad left the bus before the answer was finished\n");
        ret = CTL_EXIT_UNREACHABLE;
    } else if (ans->finished && ans->finished->result_case != HYMBA__V1__FINISHED__RESULT_DONE) {
        ret = CTL_EXIT_FAILED;
    }
out:
    if (reply)
        protobuf_c_message_free_unpacked(reply, NULL);
    sd_bus_slot_unref(sig_slot);
    sd_bus_slot_unref(owner_slot);
    sd_bus_error_free(&e);
    sd_bus_message_unref(m);
    sd_bus_message_unref(rep);
    return ret;
}

void ctl_answer_done(ctl_answer *ans)
{
    free(ans->text);
    if (ans->finished)
        protobuf_c_message_free_unpacked(&ans->finished->base, NULL);
    memset(ans, 0, sizeof(*ans));
}
