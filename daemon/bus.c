/* bus.c: the D-Bus face of hymbad: method handlers, properties, streamed signals, peers leaving the bus. */
#include "daemon/hymbad.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>
#include "config.h"
#include <systemd/sd-daemon.h>
#include "daemon/log.h"
#include "daemon/persist.h"
#include "daemon/wire.h"

#define TITLE_MAX 60                 /* bytes of the first user message shown as a title */

static int64_t mono_usec(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* ---- who is calling ------------------------------------------------------ */

/* The caller's UID as the bus driver vouches for it (never the payload).
 * Unique names are never reused, so the answer is cached per name. */
int hyd_bus_caller_uid(hyd_ctx *c, sd_bus_message *m, uid_t *uid, sd_bus_error *error)
{
    const char *sender = sd_bus_message_get_sender(m);
    sd_bus_creds *creds = NULL;
    hyd_peer *p;
    int r;

    if (!sender)
        return sd_bus_error_setf(error, SD_BUS_ERROR_ACCESS_DENIED, "the call has no sender name");
    for (p = c->peers; p; p = p->next)
        if (!strcmp(p->name, sender)) {
            *uid = p->uid;
            return 0;
        }
    r = sd_bus_query_sender_creds(m, SD_BUS_CREDS_EUID, &creds);
    if (r >= 0)
        r = sd_bus_creds_get_euid(creds, uid);
    sd_bus_creds_unref(creds);
    if (r < 0) {
        log_warning_errno(r, "Failed to get the UID of %s", sender);
        return sd_bus_error_setf(error, SD_BUS_ERROR_ACCESS_DENIED, "cannot determine the caller's user id");
    }
    p = calloc(1, sizeof(*p));
    if (p && (p->name = strdup(sender))) {
        p->uid = *uid;
        p->next = c->peers;
        c->peers = p;
    } else {
        free(p);
    }
    return 0;
}

int hyd_bus_read_request(hyd_ctx *c, sd_bus_message *m, const ProtobufCMessageDescriptor *d,
                         ProtobufCMessage **req, uid_t *uid, sd_bus_error *error)
{
    int r = hyd_bus_caller_uid(c, m, uid, error);
    if (r < 0)
        return r;
    return wire_read(m, d, c->cfg.max_payload_bytes, req, error);
}

void hyd_peers_free(hyd_ctx *c)
{
    while (c->peers) {
        hyd_peer *p = c->peers;
        c->peers = p->next;
        free(p->name);
        free(p);
    }
}

/* ---- sessions as the wire shows them --------------------------------------- */

/* A SessionInfo and the storage its pointers use. */
typedef struct info_buf {
    Hymba__V1__SessionInfo info;
    Hymba__V1__Sampling sampling;
    char title[TITLE_MAX + 4];
} info_buf;

static void title_from(char *dst, const char *text)
{
    size_t n = strlen(text);

    if (n <= TITLE_MAX) {
        memcpy(dst, text, n + 1);
        return;
    }
    n = TITLE_MAX;
    while (n > 0 && ((unsigned char)text[n] & 0xc0) == 0x80)
        n--;                         /* do not cut a UTF-8 character */
    memcpy(dst, text, n);
    memcpy(dst + n, "...", 4);
}

static void info_fill(info_buf *b, hyd_session *s)
{
    hymba__v1__session_info__init(&b->info);
    hymba__v1__sampling__init(&b->sampling);
    b->title[0] = 0;
    b->info.id = s->id;
    b->info.owner_uid = (uint32_t)s->uid;
    b->info.created_usec = s->created_usec;
    b->info.system_prompt = s->system_prompt ? s->system_prompt : "";
    b->info.busy = s->active != NULL;
    pthread_mutex_lock(&s->lock);
    b->info.updated_usec = s->updated_usec;
    b->info.n_messages = (uint32_t)s->n_msgs;
    b->info.n_tokens = s->n_tokens;
    if (s->n_msgs)
        title_from(b->title, s->msgs[0].text);
    pthread_mutex_unlock(&s->lock);
    b->info.title = b->title;

    b->sampling.temperature_opt_case = HYMBA__V1__SAMPLING__TEMPERATURE_OPT_TEMPERATURE;
    b->sampling.temperature = s->sampling.temperature;
    b->sampling.top_k_opt_case = HYMBA__V1__SAMPLING__TOP_K_OPT_TOP_K;
    b->sampling.top_k = s->sampling.top_k;
    b->sampling.top_p_opt_case = HYMBA__V1__SAMPLING__TOP_P_OPT_TOP_P;
    b->sampling.top_p = s->sampling.top_p;
    b->sampling.min_p_opt_case = HYMBA__V1__SAMPLING__MIN_P_OPT_MIN_P;
    b->sampling.min_p = s->sampling.min_p;
    b->sampling.repeat_penalty_opt_case = HYMBA__V1__SAMPLING__REPEAT_PENALTY_OPT_REPEAT_PENALTY;
    b->sampling.repeat_penalty = s->sampling.repeat_penalty;
    b->sampling.repeat_last_n_opt_case = HYMBA__V1__SAMPLING__REPEAT_LAST_N_OPT_REPEAT_LAST_N;
    b->sampling.repeat_last_n = s->sampling.repeat_last_n;
    b->sampling.seed_opt_case = HYMBA__V1__SAMPLING__SEED_OPT_SEED;
    b->sampling.seed = s->seed;
    b->info.sampling = &b->sampling;
}

/* Requested settings over the defaults; refuses values the sampler cannot use. */
static int sampling_resolve(const Hymba__V1__Sampling *in, hy_sampling *out, uint64_t *seed, sd_bus_error *error)
{
    hy_sampling_default(out);
    if (getrandom(seed, sizeof(*seed), 0) != sizeof(*seed))
        *seed = (uint64_t)mono_usec() ^ ((uint64_t)getpid() << 32);
    if (!in)
        return 0;
    if (in->temperature_opt_case) {
        if (!isfinite(in->temperature) || in->temperature < 0 || in->temperature > 100)
            return sd_bus_error_setf(error, HYD_ERROR_INVALID_ARGUMENT, "sampling.temperature must be in [0, 100]");
        out->temperature = in->temperature;
    }
    if (in->top_k_opt_case)
        out->top_k = in->top_k;
    if (in->top_p_opt_case) {
        if (!isfinite(in->top_p) || in->top_p < 0 || in->top_p > 1)
            return sd_bus_error_setf(error, HYD_ERROR_INVALID_ARGUMENT, "sampling.top_p must be in [0, 1]");
        out->top_p = in->top_p;
    }
    if (in->min_p_opt_case) {
        if (!isfinite(in->min_p) || in->min_p < 0 || in->min_p > 1)
            return sd_bus_error_setf(error, HYD_ERROR_INVALID_ARGUMENT, "sampling.min_p must be in [0, 1]");
        out->min_p = in->min_p;
    }
    if (in->repeat_penalty_opt_case) {
        if (!isfinite(in->repeat_penalty) || in->repeat_penalty <= 0 || in->repeat_penalty > 10)
            return sd_bus_error_setf(error, HYD_ERROR_INVALID_ARGUMENT, "sampling.repeat_penalty must be in (0, 10]");
        out->repeat_penalty = in->repeat_penalty;
    }
    if (in->repeat_last_n_opt_case) {
        if (in->repeat_last_n < 0 || in->repeat_last_n > (1 << 20))
            return sd_bus_error_setf(error, HYD_ERROR_INVALID_ARGUMENT, "sampling.repeat_last_n must be in [0, 1048576]");
        out->repeat_last_n = in->repeat_last_n;
    }
    if (in->seed_opt_case)
        *seed = in->seed;
    return 0;
}

/* A session id field: the right shape, and a session of this caller. */
int hyd_bus_session_lookup(hyd_ctx *c, const char *id, uid_t uid, hyd_session **out, sd_bus_error *error)
{
    hyd_session *s = NULL;

    if (id && strlen(id) == HYD_SESSION_ID_LEN)
        s = hyd_session_find(&c->reg, id, uid);
    if (!s && id && hyd_persist_damaged(id, uid))
        return sd_bus_error_setf(error, HYD_ERROR_SESSION_DAMAGED, "session %.64s is damaged: %s", id,
                                 hyd_persist_damaged(id, uid));
    if (!s)
        return sd_bus_error_setf(error, HYD_ERROR_NO_SUCH_SESSION, "no such session: \"%.64s\"", id ? id : "");
    *out = s;
    return 0;
}

static int check_text(const char *what, const char *text, uint32_t max, sd_bus_error *error)
{
    size_t n = strlen(text);

    if (n > max)
        return sd_bus_error_setf(error, HYD_ERROR_MESSAGE_TOO_LARGE,
                                 "%s is %zu bytes; the limit is %u (max_message_bytes)", what, n, max);
    if (!wire_utf8_valid(text, n))
        return sd_bus_error_setf(error, HYD_ERROR_INVALID_ARGUMENT, "%s is not valid UTF-8", what);
    return 0;
}

/* ---- Manager ------------------------------------------------------------- */

static int method_create_session(sd_bus_message *m, void *userdata, sd_bus_error *error)
{
    hyd_ctx *c = userdata;
    _cleanup_wire_ Hymba__V1__CreateSessionRequest *req = NULL;
    Hymba__V1__CreateSessionReply reply = HYMBA__V1__CREATE_SESSION_REPLY__INIT;
    hyd_session *s;
    hy_sampling sampling;
    uint64_t seed;
    info_buf info;
    uid_t uid;
    int r;

    r = hyd_bus_read_request(c, m, &hymba__v1__create_session_request__descriptor,
                             (ProtobufCMessage **)&req, &uid, error);
    if (r < 0)
        return r;
    r = check_text("the system prompt", req->system_prompt, c->cfg.max_message_bytes, error);
    if (r < 0)
        return r;
    r = sampling_resolve(req->sampling, &sampling, &seed, error);
    if (r < 0)
        return r;
    if (hyd_session_count_uid(&c->reg, uid) >= c->cfg.max_sessions_per_user)
        return sd_bus_error_setf(error, HYD_ERROR_TOO_MANY_SESSIONS,
                                 "user %u already has %u sessions, the limit (max_sessions_per_user); delete one first",
                                 (unsigned)uid, c->cfg.max_sessions_per_user);
    r = hyd_session_new(&c->reg, uid, req->system_prompt, &sampling, seed, &s);
    if (r < 0)
        return log_error_errno(r, "Failed to create a session");
    log_info("session %s created for uid %u", s->id, (unsigned)uid);
    info_fill(&info, s);
    reply.session = &info.info;
    return wire_reply(m, &reply.base);
}

static int method_list_sessions(sd_bus_message *m, void *userdata, sd_bus_error *error)
{
    hyd_ctx *c = userdata;
    _cleanup_wire_ Hymba__V1__ListSessionsRequest *req = NULL;
    Hymba__V1__ListSessionsReply reply = HYMBA__V1__LIST_SESSIONS_REPLY__INIT;
    info_buf *bufs;
    Hymba__V1__SessionInfo **items;
    size_t n = 0;
    uid_t uid;
    int r;

    r = hyd_bus_read_request(c, m, &hymba__v1__list_sessions_request__descriptor,
                             (ProtobufCMessage **)&req, &uid, error);
    if (r < 0)
        return r;
    if (req->all_users && uid != 0)
        return sd_bus_error_setf(error, HYD_ERROR_ACCESS_DENIED, "only root may list every user's sessions");
    bufs = calloc(c->reg.n + 1, sizeof(*bufs));
    items = calloc(c->reg.n + 1, sizeof(*items));
    if (!bufs || !items) {
        free(bufs);
        free(items);
        return -ENOMEM;
    }
    for (hyd_session *s = c->reg.head; s; s = s->next)
        if (s->uid == uid || req->all_users) {
            info_fill(&bufs[n], s);
            items[n] = &bufs[n].info;
            n++;
        }
    reply.n_sessions = n;
    reply.sessions = items;
    r = wire_reply(m, &reply.base);
    free(bufs);
    free(items);
    return r;
}

static uint64_t rss_bytes(void)
{
    FILE *f = fopen("/proc/self/status", "re");
    char line[256];
    unsigned long long kb = 0;

    if (!f)
        return 0;
    while (fgets(line, sizeof(line), f))
        if (sscanf(line, "VmRSS: %llu kB", &kb) == 1)
            break;
    fclose(f);
    return (uint64_t)kb * 1024;
}

static int method_status(sd_bus_message *m, void *userdata, sd_bus_error *error)
{
    hyd_ctx *c = userdata;
    _cleanup_wire_ Hymba__V1__StatusRequest *req = NULL;
    Hymba__V1__StatusReply reply = HYMBA__V1__STATUS_REPLY__INIT;
    Hymba__V1__Limits limits = HYMBA__V1__LIMITS__INIT;
    hyd_sched_stats st;
    uid_t uid;
    int r;

    r = hyd_bus_read_request(c, m, &hymba__v1__status_request__descriptor,
                             (ProtobufCMessage **)&req, &uid, error);
    if (r < 0)
        return r;
    hyd_sched_stats_get(c->sched, &st);
    reply.version = PACKAGE_VERSION;
    reply.protocol_version = HYD_PROTOCOL_VERSION;
    reply.model = c->model_dir;
    reply.backend = c->backend;
    reply.rss_bytes = rss_bytes();
    reply.backend_bytes = st.backend.bytes_device;
    reply.sessions = uid == 0 ? c->reg.n : hyd_session_count_uid(&c->reg, uid);
    reply.sessions_total = c->reg.n;
    reply.active_requests = st.active;
    reply.queued_requests = st.queued;
    reply.uptime_usec = (uint64_t)(mono_usec() - c->start_mono_usec);
    reply.tokens_generated = st.tokens_generated;
    limits.max_sessions_per_user = c->cfg.max_sessions_per_user;
    limits.max_queued_per_user = c->cfg.max_queued_per_user;
    limits.max_message_bytes = c->cfg.max_message_bytes;
    limits.max_payload_bytes = c->cfg.max_payload_bytes;
    limits.context_length = c->max_ctx;
    limits.max_new_tokens = c->cfg.max_new_tokens;
    limits.default_max_new_tokens = c->cfg.default_max_new_tokens;
    reply.limits = &limits;
    return wire_reply(m, &reply.base);
}

/* ---- Session ------------------------------------------------------------- */

static int method_get_session(sd_bus_message *m, void *userdata, sd_bus_error *error)
{
    hyd_ctx *c = userdata;
    _cleanup_wire_ Hymba__V1__GetSessionRequest *req = NULL;
    Hymba__V1__GetSessionReply reply = HYMBA__V1__GET_SESSION_REPLY__INIT;
    Hymba__V1__ChatMessage *cm = NULL, **items = NULL;
    hyd_msg *msgs = NULL;
    size_t n_msgs = 0, n = 0;
    hyd_session *s;
    info_buf info;
    uid_t uid;
    int r;

    r = hyd_bus_read_request(c, m, &hymba__v1__get_session_request__descriptor,
                             (ProtobufCMessage **)&req, &uid, error);
    if (r < 0)
        return r;
    r = hyd_bus_session_lookup(c, req->session_id, uid, &s, error);
    if (r < 0)
        return r;
    r = hyd_session_copy_msgs(s, &msgs, &n_msgs, NULL, NULL);
    if (r < 0)
        return r;
    cm = calloc(n_msgs + 1, sizeof(*cm));
    items = calloc(n_msgs + 1, sizeof(*items));
    if (!cm || !items) {
        r = -ENOMEM;
        goto out;
    }
    if (s->system_prompt) {
        hymba__v1__chat_message__init(&cm[n]);
        cm[n].role = HYMBA__V1__ROLE__ROLE_SYSTEM;
        cm[n].text = s->system_prompt;
        items[n] = &cm[n];
        n++;
    }
    for (size_t i = 0; i < n_msgs; i++, n++) {
        hymba__v1__chat_message__init(&cm[n]);
        cm[n].role = msgs[i].role == HY_ROLE_USER ? HYMBA__V1__ROLE__ROLE_USER : HYMBA__V1__ROLE__ROLE_ASSISTANT;
        cm[n].text = msgs[i].text;
        items[n] = &cm[n];
    }
    info_fill(&info, s);
    reply.session = &info.info;
    reply.n_messages = n;
    reply.messages = items;
    r = wire_reply(m, &reply.base);
out:
    free(cm);
    free(items);
    hyd_msgs_free(msgs, n_msgs);
    return r;
}

static void request_cancel(hyd_ctx *c, hyd_request *req, int reason)
{
    int expected = 0;
    /* The first reason wins: a later disconnect does not relabel a Cancel. */
    atomic_compare_exchange_strong(&req->cancel, &expected, reason);
    hyd_sched_wake(c->sched);
}

/* Free a session the scheduler no longer uses (its engine state goes back to
 * the scheduler thread, which owns every hy_seq). */
static void session_destroy(hyd_ctx *c, hyd_session *s)
{
    hyd_sched_free_seq(c->sched, s->seq);
    s->seq = NULL;
    hyd_session_free(s);
}

static int method_delete_session(sd_bus_message *m, void *userdata, sd_bus_error *error)
{
    hyd_ctx *c = userdata;
    _cleanup_wire_ Hymba__V1__DeleteSessionRequest *req = NULL;
    Hymba__V1__DeleteSessionReply reply = HYMBA__V1__DELETE_SESSION_REPLY__INIT;
    hyd_session *s;
    uid_t uid;
    int r;

    r = hyd_bus_read_request(c, m, &hymba__v1__delete_session_request__descriptor,
                             (ProtobufCMessage **)&req, &uid, error);
    if (r < 0)
        return r;
    r = hyd_bus_session_lookup(c, req->session_id, uid, &s, error);
    if (r < 0)
        return r;
    hyd_session_unlink(&c->reg, s);
    log_info("session %s deleted by uid %u", s->id, (unsigned)uid);
    hyd_persist_removed(s);
    if (s->active) {
        /* Freed when its request's final event comes back. */
        s->deleted = true;
        request_cancel(c, s->active, HYMBA__V1__CANCEL_REASON__CANCEL_REASON_SESSION_DELETED);
        reply.cancelled_requests = 1;
    } else {
        session_destroy(c, s);
    }
    return wire_reply(m, &reply.base);
}

static unsigned live_count_uid(hyd_ctx *c, uid_t uid)
{
    unsigned n = 0;
    for (hyd_request *r = c->live; r; r = r->next_live)
        n += r->uid == uid;
    return n;
}

static void request_free(hyd_request *req)
{
    if (!req)
        return;
    free(req->sender);
    free(req->text);
    free(req);
}

/* The checks every new request passes (Send, Regenerate, Rewind): the daemon
 * is not stopping, the session is idle, the caller's queue has room. */
int hyd_bus_request_check(hyd_ctx *c, hyd_session *s, uid_t uid, sd_bus_error *error)
{
    if (c->stopping)
        return sd_bus_error_setf(error, HYD_ERROR_SHUTTING_DOWN, "hymbad is shutting down");
    if (s->active)
        return sd_bus_error_setf(error, HYD_ERROR_SESSION_BUSY,
                                 "session %s is still answering request %llu; wait for it or cancel it",
                                 s->id, (unsigned long long)s->active->id);
    if (live_count_uid(c, uid) >= c->cfg.max_queued_per_user)
        return sd_bus_error_setf(error, HYD_ERROR_TOO_MANY_REQUESTS,
                                 "user %u has %u requests queued or running, the limit (max_queued_per_user)",
                                 (unsigned)uid, c->cfg.max_queued_per_user);
    return 0;
}

/* Queue a request that passed hyd_bus_request_check: reply with its id and
 * queue position, then hand it to the scheduler.  text is taken over. */
int hyd_bus_request_submit(hyd_ctx *c, sd_bus_message *m, hyd_session *s, uid_t uid, char *text,
                           uint32_t max_new, bool ignore_eos)
{
    Hymba__V1__SendReply reply = HYMBA__V1__SEND_REPLY__INIT;
    hyd_request *req;
    int r;

    req = calloc(1, sizeof(*req));
    if (!req || !text || !(req->sender = strdup(sd_bus_message_get_sender(m)))) {
        free(text);
        free(req);
        return -ENOMEM;
    }
    req->text = text;
    req->id = ++c->next_request_id;
    req->session = s;
    req->uid = uid;
    req->max_new_tokens = max_new ? max_new : c->cfg.default_max_new_tokens;
    if (req->max_new_tokens > c->cfg.max_new_tokens)
        req->max_new_tokens = c->cfg.max_new_tokens;
    req->ignore_eos = ignore_eos;
    req->t_accept = mono_usec();
    atomic_init(&req->cancel, 0);

    reply.request_id = req->id;
    for (hyd_request *o = c->live; o; o = o->next_live)
        reply.queue_position++;
    r = wire_reply(m, &reply.base);
    if (r < 0) {
        request_free(req);
        return r;
    }
    req->next_live = c->live;
    c->live = req;
    s->active = req;
    log_debug("request %llu: session %s, uid %u, %zu bytes, max %u tokens", (unsigned long long)req->id,
              s->id, (unsigned)uid, strlen(req->text), req->max_new_tokens);
    hyd_sched_submit(c->sched, req);
    hyd_bus_notify_status(c);
    return 1;
}

static int method_send(sd_bus_message *m, void *userdata, sd_bus_error *error)
{
    hyd_ctx *c = userdata;
    _cleanup_wire_ Hymba__V1__SendRequest *in = NULL;
    hyd_session *s;
    int64_t n_tokens;
    uid_t uid;
    int r;

    r = hyd_bus_read_request(c, m, &hymba__v1__send_request__descriptor,
                             (ProtobufCMessage **)&in, &uid, error);
    if (r < 0)
        return r;
    r = hyd_bus_session_lookup(c, in->session_id, uid, &s, error);
    if (r < 0)
        return r;
    if (!*in->text)
        return sd_bus_error_setf(error, HYD_ERROR_INVALID_ARGUMENT, "the message is empty");
    r = check_text("the message", in->text, c->cfg.max_message_bytes, error);
    if (r < 0)
        return r;
    r = hyd_bus_request_check(c, s, uid, error);
    if (r < 0)
        return r;
    pthread_mutex_lock(&s->lock);
    n_tokens = s->n_tokens;
    pthread_mutex_unlock(&s->lock);
    if (n_tokens + 1 >= c->max_ctx)
        return sd_bus_error_setf(error, HYD_ERROR_CONTEXT_FULL,
                                 "session %s holds %lld tokens, the context length is %lld: start a new session",
                                 s->id, (long long)n_tokens, (long long)c->max_ctx);
    return hyd_bus_request_submit(c, m, s, uid, strdup(in->text), in->max_new_tokens, in->ignore_eos);
}

static int method_cancel(sd_bus_message *m, void *userdata, sd_bus_error *error)
{
    hyd_ctx *c = userdata;
    uint64_t id;
    uid_t uid;
    int r;

    r = hyd_bus_caller_uid(c, m, &uid, error);
    if (r < 0)
        return r;
    r = sd_bus_message_read(m, "t", &id);
    if (r < 0)
        return r;
    for (hyd_request *req = c->live; req; req = req->next_live)
        if (req->id == id && req->uid == uid) {
            request_cancel(c, req, HYMBA__V1__CANCEL_REASON__CANCEL_REASON_REQUESTED);
            return sd_bus_reply_method_return(m, NULL);
        }
    return sd_bus_error_setf(error, HYD_ERROR_NO_SUCH_REQUEST, "no such request: %llu", (unsigned long long)id);
}

/* ---- properties ------------------------------------------------------------ */

static int property_get(sd_bus *bus, const char *path, const char *interface, const char *property,
                        sd_bus_message *reply, void *userdata, sd_bus_error *error)
{
    hyd_ctx *c = userdata;
    (void)bus; (void)path; (void)interface; (void)error;

    if (!strcmp(property, "Version"))
        return sd_bus_message_append(reply, "s", PACKAGE_VERSION);
    if (!strcmp(property, "ProtocolVersion"))
        return sd_bus_message_append(reply, "u", (uint32_t)HYD_PROTOCOL_VERSION);
    if (!strcmp(property, "Backend"))
        return sd_bus_message_append(reply, "s", c->backend);
    if (!strcmp(property, "Model"))
        return sd_bus_message_append(reply, "s", c->model_dir);
    if (!strcmp(property, "ContextLength"))
        return sd_bus_message_append(reply, "x", c->max_ctx);
    return -ENOENT;
}

static const sd_bus_vtable manager_vtable[] = {
    SD_BUS_VTABLE_START(0),
    SD_BUS_PROPERTY("Version", "s", property_get, 0, SD_BUS_VTABLE_PROPERTY_CONST),
    SD_BUS_PROPERTY("ProtocolVersion", "u", property_get, 0, SD_BUS_VTABLE_PROPERTY_CONST),
    SD_BUS_PROPERTY("Backend", "s", property_get, 0, SD_BUS_VTABLE_PROPERTY_CONST),
    SD_BUS_PROPERTY("Model", "s", property_get, 0, SD_BUS_VTABLE_PROPERTY_CONST),
    SD_BUS_PROPERTY("ContextLength", "x", property_get, 0, SD_BUS_VTABLE_PROPERTY_CONST),
    SD_BUS_METHOD_WITH_NAMES("CreateSession", "ay", SD_BUS_PARAM(request), "ay", SD_BUS_PARAM(reply),
                             method_create_session, SD_BUS_VTABLE_UNPRIVILEGED),
    SD_BUS_METHOD_WITH_NAMES("ListSessions", "ay", SD_BUS_PARAM(request), "ay", SD_BUS_PARAM(reply),
                             method_list_sessions, SD_BUS_VTABLE_UNPRIVILEGED),
    SD_BUS_METHOD_WITH_NAMES("Status", "ay", SD_BUS_PARAM(request), "ay", SD_BUS_PARAM(reply),
                             method_status, SD_BUS_VTABLE_UNPRIVILEGED),
    SD_BUS_VTABLE_END
};

static const sd_bus_vtable session_vtable[] = {
    SD_BUS_VTABLE_START(0),
    SD_BUS_METHOD_WITH_NAMES("GetSession", "ay", SD_BUS_PARAM(request), "ay", SD_BUS_PARAM(reply),
                             method_get_session, SD_BUS_VTABLE_UNPRIVILEGED),
    SD_BUS_METHOD_WITH_NAMES("DeleteSession", "ay", SD_BUS_PARAM(request), "ay", SD_BUS_PARAM(reply),
                             method_delete_session, SD_BUS_VTABLE_UNPRIVILEGED),
    SD_BUS_METHOD_WITH_NAMES("Send", "ay", SD_BUS_PARAM(request), "ay", SD_BUS_PARAM(reply),
                             method_send, SD_BUS_VTABLE_UNPRIVILEGED),
    SD_BUS_METHOD_WITH_NAMES("Cancel", "t", SD_BUS_PARAM(request_id), "", ,
                             method_cancel, SD_BUS_VTABLE_UNPRIVILEGED),
    SD_BUS_SIGNAL_WITH_NAMES("Chunk", "ay", SD_BUS_PARAM(chunk), 0),
    SD_BUS_SIGNAL_WITH_NAMES("Finished", "ay", SD_BUS_PARAM(finished), 0),
    SD_BUS_VTABLE_END
};

/* ---- events from the scheduler --------------------------------------------- */

static int send_signal(hyd_ctx *c, const char *dest, const char *member, const ProtobufCMessage *msg)
{
    sd_bus_message *sig = NULL;
    int r;

    r = sd_bus_message_new_signal(c->bus, &sig, HYD_OBJECT_PATH, HYD_IFACE_SESSION, member);
    if (r >= 0)
        r = sd_bus_message_set_destination(sig, dest);
    if (r >= 0)
        r = wire_append(sig, msg);
    if (r >= 0)
        r = sd_bus_send(c->bus, sig, NULL);
    sd_bus_message_unref(sig);
    return r;
}

static void emit_chunk(hyd_ctx *c, hyd_request *req, const char *text, uint32_t n_tokens)
{
    Hymba__V1__Chunk chunk = HYMBA__V1__CHUNK__INIT;
    int r;

    chunk.request_id = req->id;
    chunk.session_id = req->session->id;
    chunk.text = (char *)text;
    chunk.n_tokens = n_tokens;
    r = send_signal(c, req->sender, "Chunk", &chunk.base);
    if (r < 0)
        log_debug("request %llu: Chunk to %s not sent: %s", (unsigned long long)req->id, req->sender, strerror(-r));
}

static void emit_finished(hyd_ctx *c, hyd_event *ev)
{
    hyd_request *req = ev->req;
    Hymba__V1__Finished fin = HYMBA__V1__FINISHED__INIT;
    Hymba__V1__Cancelled cancelled = HYMBA__V1__CANCELLED__INIT;
    Hymba__V1__Error err = HYMBA__V1__ERROR__INIT;
    int r;

    fin.request_id = req->id;
    fin.session_id = req->session->id;
    fin.result_case = ev->result;
    switch (ev->result) {
    case HYMBA__V1__FINISHED__RESULT_DONE:
        fin.done = &ev->done;
        log_debug("request %llu done: %u+%u tokens", (unsigned long long)req->id,
                  ev->done.prompt_tokens, ev->done.completion_tokens);
        break;
    case HYMBA__V1__FINISHED__RESULT_CANCELLED:
        cancelled.reason = ev->cancel_reason;
        cancelled.completion_tokens = ev->n_tokens;
        fin.cancelled = &cancelled;
        log_info("request %llu cancelled (%s) after %u tokens", (unsigned long long)req->id,
                 protobuf_c_enum_descriptor_get_value(&hymba__v1__cancel_reason__descriptor, ev->cancel_reason)->name,
                 ev->n_tokens);
        break;
    default:
        err.code = ev->error_code;
        err.message = ev->text ? ev->text : (char *)"";
        fin.error = &err;
        fin.result_case = HYMBA__V1__FINISHED__RESULT_ERROR;
        break;
    }
    r = send_signal(c, req->sender, "Finished", &fin.base);
    if (r < 0)
        log_debug("request %llu: Finished to %s not sent: %s", (unsigned long long)req->id, req->sender, strerror(-r));
}

static void request_retire(hyd_ctx *c, hyd_request *req)
{
    hyd_session *s = req->session;

    for (hyd_request **p = &c->live; *p; p = &(*p)->next_live)
        if (*p == req) {
            *p = req->next_live;
            break;
        }
    s->active = NULL;
    if (s->deleted)
        session_destroy(c, s);
    request_free(req);
    hyd_bus_notify_status(c);
}

/* systemd's status line (systemctl status hymbad); a no-op outside systemd. */
void hyd_bus_notify_status(hyd_ctx *c)
{
    unsigned n = 0;
    for (hyd_request *r = c->live; r; r = r->next_live)
        n++;
    sd_notifyf(0, "STATUS=Serving %s: %u session(s), %u request(s) running or queued", c->backend, c->reg.n, n);
}

void hyd_bus_drain_events(hyd_ctx *c)
{
    hyd_event *ev = hyd_sched_take_events(c->sched);

    while (ev) {
        hyd_event *next = ev->next;
        if (ev->kind == HYD_EV_CHUNK) {
            /* Pieces that queued up while the loop was busy go out as one signal. */
            while (next && next->kind == HYD_EV_CHUNK && next->req == ev->req) {
                size_t a = strlen(ev->text), b = strlen(next->text);
                char *t = realloc(ev->text, a + b + 1);
                if (!t)
                    break;
                memcpy(t + a, next->text, b + 1);
                ev->text = t;
                ev->n_tokens = next->n_tokens;
                hyd_event *gone = next;
                next = next->next;
                hyd_event_free(gone);
            }
            emit_chunk(c, ev->req, ev->text, ev->n_tokens);
        } else {
            emit_finished(c, ev);
            request_retire(c, ev->req);
        }
        hyd_event_free(ev);
        ev = next;
    }
}

int hyd_bus_on_events(sd_event_source *s, int fd, uint32_t revents, void *userdata)
{
    (void)s; (void)fd; (void)revents;
    hyd_bus_drain_events(userdata);
    return 0;
}

void hyd_bus_cancel_all(hyd_ctx *c, int reason)
{
    for (hyd_request *req = c->live; req; req = req->next_live)
        request_cancel(c, req, reason);
}

/* A unique name left the bus: cancel its requests, forget its UID. */
static int on_name_owner_changed(sd_bus_message *m, void *userdata, sd_bus_error *error)
{
    hyd_ctx *c = userdata;
    const char *name, *old_owner, *new_owner;
    (void)error;

    if (sd_bus_message_read(m, "sss", &name, &old_owner, &new_owner) < 0)
        return 0;
    if (name[0] != ':' || *new_owner)
        return 0;
    for (hyd_request *req = c->live; req; req = req->next_live)
        if (!strcmp(req->sender, name)) {
            log_info("request %llu: %s left the bus, cancelling", (unsigned long long)req->id, name);
            request_cancel(c, req, HYMBA__V1__CANCEL_REASON__CANCEL_REASON_DISCONNECTED);
        }
    for (hyd_peer **p = &c->peers; *p; p = &(*p)->next)
        if (!strcmp((*p)->name, name)) {
            hyd_peer *gone = *p;
            *p = gone->next;
            free(gone->name);
            free(gone);
            break;
        }
    return 0;
}

static int bus_connect(hyd_ctx *c)
{
    int r;

    switch (c->cfg.bus_kind) {
    case HYD_BUS_USER:
        return sd_bus_open_user_with_description(&c->bus, "hymbad");
    case HYD_BUS_ADDRESS:
        r = sd_bus_new(&c->bus);
        if (r < 0)
            return r;
        r = sd_bus_set_address(c->bus, c->cfg.bus_address);
        if (r >= 0)
            r = sd_bus_set_bus_client(c->bus, 1);
        if (r >= 0)
            r = sd_bus_set_description(c->bus, "hymbad");
        if (r >= 0)
            r = sd_bus_start(c->bus);
        return r;
    default:
        return sd_bus_open_system_with_description(&c->bus, "hymbad");
    }
}

int hyd_bus_setup(hyd_ctx *c)
{
    const char *where = c->cfg.bus_kind == HYD_BUS_USER ? "the session bus"
                      : c->cfg.bus_kind == HYD_BUS_ADDRESS ? c->cfg.bus_address : "the system bus";
    int r;

    r = bus_connect(c);
    if (r < 0)
        return log_error_errno(r, "Failed to connect to %s", where);
    r = sd_bus_add_object_vtable(c->bus, &c->slot_manager, HYD_OBJECT_PATH, HYD_IFACE_MANAGER, manager_vtable, c);
    if (r < 0)
        return log_error_errno(r, "Failed to export %s", HYD_IFACE_MANAGER);
    r = sd_bus_add_object_vtable(c->bus, &c->slot_session, HYD_OBJECT_PATH, HYD_IFACE_SESSION, session_vtable, c);
    if (r < 0)
        return log_error_errno(r, "Failed to export %s", HYD_IFACE_SESSION);
    r = sd_bus_match_signal(c->bus, &c->slot_owner_changed, "org.freedesktop.DBus", "/org/freedesktop/DBus",
                            "org.freedesktop.DBus", "NameOwnerChanged", on_name_owner_changed, c);
    if (r < 0)
        return log_error_errno(r, "Failed to watch clients leaving the bus");
    r = sd_bus_attach_event(c->bus, c->event, SD_EVENT_PRIORITY_NORMAL);
    if (r < 0)
        return log_error_errno(r, "Failed to attach the bus to the event loop");
    /* Without the bus there is nothing to serve. */
    r = sd_bus_set_exit_on_disconnect(c->bus, 1);
    if (r < 0)
        return log_error_errno(r, "Failed to set exit-on-disconnect");
    r = hyd_persist_bus_setup(c);
    if (r < 0)
        return r;
    r = sd_bus_request_name(c->bus, HYD_BUS_NAME, 0);
    if (r < 0)
        return log_error_errno(r, "Failed to take the name %s on %s (another hymbad running, or the bus policy "
                               "does not allow this user to own it)", HYD_BUS_NAME, where);
    return 0;
}
