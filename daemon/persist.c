/* persist.c: hymbad's persistent sessions: checkpoint after every turn, lazy restore, snapshots, export/import. */
#include "daemon/persist.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include "daemon/log.h"
#include "daemon/store.h"

#define NS_PER_USEC 1000
#define DAMAGED_MAX 64               /* damaged sessions remembered for lookups */
#define COPY_BUF (1u << 20)
#define EXPORT_STALL_MS 30000        /* a reader that takes nothing for this long is dropped */
#define IMPORT_SLACK (256u << 20)    /* messages and framing beyond the largest states */

/* Per-session persistence state (s->persist). */
struct hyd_psession {
    hy_ckpt ck;                      /* its snapshots; plus a state to import while `pending` */
    bool pending;                    /* ck.image/tokens/logits wait to be imported (Import) */
    bool state_on_disk;              /* registered from disk at start: the state loads on first use */
    bool on_disk;                    /* a checkpoint of this session is in the store */
    bool removed;                    /* the user deleted it: no file may remain */
    int rewind_turn;                 /* -1, or the answer the next request restarts (Regenerate/Rewind) */
    int64_t saved_usec;              /* s->updated_usec when it was last written */
};

typedef struct damaged {
    uid_t uid;
    char id[HY_CKPT_ID_MAX + 1];
    char why[HY_ERR_MSG_MAX];
} damaged;

/* One daemon, one store. */
static struct {
    hyd_ctx *ctx;
    hy_store *store;
    const hy_arch *arch;
    uint8_t fp[HY_FINGERPRINT_LEN];
    uint32_t snap_keep;
    uint64_t import_max;
    sd_bus_slot *slot_session, *slot_manager;
    pthread_mutex_t lock;            /* guards damaged[] (loop and scheduler threads) */
    damaged damaged[DAMAGED_MAX];
    unsigned n_damaged;
} P = { .lock = PTHREAD_MUTEX_INITIALIZER };

static hyd_psession *ps_get(hyd_session *s)
{
    if (!s->persist) {
        s->persist = calloc(1, sizeof(*s->persist));
        if (!s->persist)
            return NULL;
        s->persist->rewind_turn = -1;
        s->persist->ck.snap_keep = P.snap_keep;
    }
    return s->persist;
}

void hyd_persist_session_free(hyd_session *s)
{
    if (!s || !s->persist)
        return;
    /* A turn that finished while the delete was on its way saved it again. */
    if (s->persist->removed && P.store)
        hy_store_remove(P.store, (uint32_t)s->uid, s->id, NULL);
    hy_ckpt_clear(&s->persist->ck);
    free(s->persist);
    s->persist = NULL;
}

static void damaged_note(uid_t uid, const char *id, const char *why)
{
    pthread_mutex_lock(&P.lock);
    damaged *d = &P.damaged[P.n_damaged++ % DAMAGED_MAX];
    d->uid = uid;
    snprintf(d->id, sizeof(d->id), "%s", id);
    snprintf(d->why, sizeof(d->why), "%s", why);
    pthread_mutex_unlock(&P.lock);
    log_warning("session %s of uid %u: damaged checkpoint: %s", id, (unsigned)uid, why);
}

const char *hyd_persist_damaged(const char *id, uid_t uid)
{
    const char *why = NULL;
    pthread_mutex_lock(&P.lock);
    for (unsigned i = 0; i < P.n_damaged && i < DAMAGED_MAX; i++)
        if (P.damaged[i].uid == uid && !strcmp(P.damaged[i].id, id))
            why = P.damaged[i].why;  /* entries are never freed while the daemon runs */
    pthread_mutex_unlock(&P.lock);
    return why;
}

/* ---- session <-> checkpoint ------------------------------------------------ */

/* The history as the checkpoint stores it: the system prompt first, then user/assistant pairs. */
static int msgs_to_ckpt(hyd_session *s, hy_ckpt *c)
{
    size_t n0 = s->system_prompt ? 1 : 0;

    pthread_mutex_lock(&s->lock);
    c->msgs = calloc(s->n_msgs + n0 + 1, sizeof(*c->msgs));
    if (!c->msgs) {
        pthread_mutex_unlock(&s->lock);
        return -ENOMEM;
    }
    if (n0) {
        c->msgs[0] = (hy_ckpt_msg){ HY_ROLE_SYSTEM, strdup(s->system_prompt), (uint32_t)strlen(s->system_prompt) };
        c->n_msgs = 1;
    }
    for (size_t i = 0; i < s->n_msgs; i++) {
        hy_ckpt_msg *m = &c->msgs[c->n_msgs++];
        m->role = s->msgs[i].role;
        m->text = strdup(s->msgs[i].text);
        m->len = m->text ? (uint32_t)strlen(m->text) : 0;
    }
    c->updated_ns = s->updated_usec * NS_PER_USEC;
    pthread_mutex_unlock(&s->lock);
    for (uint32_t i = 0; i < c->n_msgs; i++)
        if (!c->msgs[i].text)
            return -ENOMEM;
    return 0;
}

/* The daemon's history invariant: an optional system prompt, then user/assistant pairs. */
static int msgs_check(const hy_ckpt *c, hy_err *err)
{
    uint32_t i = c->n_msgs && c->msgs[0].role == HY_ROLE_SYSTEM ? 1 : 0;
    if ((c->n_msgs - i) % 2)
        return hy_err_set(err, -EINVAL, "the checkpoint's history ends with an unanswered message");
    for (uint32_t k = 0; i < c->n_msgs; i++, k++)
        if (c->msgs[i].role != (k % 2 ? HY_ROLE_ASSISTANT : HY_ROLE_USER))
            return hy_err_set(err, -EINVAL, "message %u of the checkpoint is not the %s turn the history expects",
                              i, k % 2 ? "assistant" : "user");
    return 0;
}

/* Fill a registered session's history and settings from a checkpoint (its id is set already). */
static int session_adopt(hyd_session *s, hy_ckpt *c)
{
    uint32_t first = c->n_msgs && c->msgs[0].role == HY_ROLE_SYSTEM ? 1 : 0;
    size_t n = c->n_msgs - first;

    s->msgs = calloc(n + 1, sizeof(*s->msgs));
    if (!s->msgs)
        return -ENOMEM;
    s->cap_msgs = n + 1;
    for (uint32_t i = first; i < c->n_msgs; i++) {
        s->msgs[s->n_msgs++] = (hyd_msg){ (hy_role)c->msgs[i].role, c->msgs[i].text };
        c->msgs[i].text = NULL;  /* moved */
    }
    s->created_usec = c->created_ns / NS_PER_USEC;
    s->updated_usec = c->updated_ns / NS_PER_USEC;
    s->n_tokens = c->n_tokens;
    s->sampling = c->sampling;
    s->rng = c->rng;
    return 0;
}

/* A registry entry for a checkpoint's session (system prompt from its first message). */
static int session_register(hyd_ctx *c, uid_t uid, const char *id, hy_ckpt *ck, hyd_session **out)
{
    const char *sys = ck->n_msgs && ck->msgs[0].role == HY_ROLE_SYSTEM ? ck->msgs[0].text : NULL;
    hyd_session *s;
    int r = hyd_session_new(&c->reg, uid, sys, &ck->sampling, 0, &s);

    if (r < 0)
        return r;
    if (id)
        snprintf(s->id, sizeof(s->id), "%s", id);
    if ((r = session_adopt(s, ck)) < 0 || !ps_get(s)) {
        hyd_session_unlink(&c->reg, s);
        hyd_session_free(s);
        return r < 0 ? r : -ENOMEM;
    }
    *out = s;
    return 0;
}

/* ---- start and stop -------------------------------------------------------- */

int hyd_persist_config(hyd_config *cfg)
{
    char root[4096];
    hy_err err = { 0 };

    if (cfg->bus_kind != HYD_BUS_USER || strcmp(cfg->state_dir, HY_STORE_SYSTEM_ROOT))
        return 0;
    if (hy_store_default_root(true, root, sizeof(root), &err) < 0)
        return log_error_errno(err.code, "state directory: %s", err.msg);
    char *p = strdup(root);
    if (!p)
        return -ENOMEM;
    free(cfg->state_dir);
    cfg->state_dir = p;
    /* The parent (~/.local/state) may not exist yet. */
    hy_store *st;
    if (hy_store_open(root, false, &st, &err) < 0)
        return log_error_errno(err.code, "state directory: %s", err.msg);
    hy_store_free(st);
    return 0;
}

/* Register uid's sessions on disk; damaged files are moved aside and remembered. */
static void scan_uid(hyd_ctx *c, uid_t uid)
{
    hy_store_entry *ents = NULL;
    size_t n = 0;
    hy_err err = { 0 };

    if (hy_store_list(P.store, uid, &ents, &n, &err) < 0) {
        log_warning("state directory of uid %u: %s", (unsigned)uid, err.msg);
        return;
    }
    for (size_t i = 0; i < n; i++) {
        const char *id = ents[i].info.id;
        hy_ckpt ck;
        hy_ckpt_reason why;
        hyd_session *s;

        if (strlen(id) != HYD_SESSION_ID_LEN || hyd_session_find(&c->reg, id, uid)) {
            log_warning("state directory of uid %u: skipping %s.hyck (not a session id of this daemon)",
                        (unsigned)uid, id);
            continue;
        }
        if (hy_store_load_meta(P.store, uid, id, P.arch, P.fp, &ck, &why, NULL, 0, &err) < 0) {
            if (why != HY_CKPT_IO)
                damaged_note(uid, id, err.msg);
            else
                log_warning("session %s of uid %u: %s", id, (unsigned)uid, err.msg);
            continue;
        }
        if (msgs_check(&ck, &err) < 0 || session_register(c, uid, id, &ck, &s) < 0) {
            log_warning("session %s of uid %u: not registered: %s", id, (unsigned)uid,
                        err.msg[0] ? err.msg : "out of memory");
            hy_ckpt_clear(&ck);
            continue;
        }
        s->persist->state_on_disk = true;
        s->persist->on_disk = true;
        s->persist->saved_usec = s->updated_usec;
        hy_ckpt_clear(&ck);
    }
    free(ents);
}

int hyd_persist_init(hyd_ctx *c)
{
    bool per_uid = c->cfg.bus_kind != HYD_BUS_USER;
    hy_err err = { 0 };
    unsigned before = c->reg.n;

    P.ctx = c;
    P.arch = hy_model_arch(c->model);
    hy_ckpt_model_id(c->model, P.fp);
    P.snap_keep = c->cfg.turn_snapshots;
    /* The largest checkpoint a session of this model can have, with its snapshots. */
    P.import_max = (uint64_t)hy_state_image_bytes(P.arch, P.arch->n_meta + c->max_ctx, HY_DT_F32) *
                   (1 + P.snap_keep) + (uint64_t)c->max_ctx * 4 + IMPORT_SLACK;
    if (hy_store_open(c->cfg.state_dir, per_uid, &P.store, &err) < 0)
        return log_error_errno(err.code, "Failed to open the session store: %s", err.msg);
    if (per_uid) {
        uint32_t *uids;
        size_t n;
        if (hy_store_uids(P.store, &uids, &n, &err) < 0)
            return log_error_errno(err.code, "Failed to scan the session store: %s", err.msg);
        for (size_t i = 0; i < n; i++)
            scan_uid(c, uids[i]);
        free(uids);
    } else {
        scan_uid(c, getuid());
    }
    log_info("session store %s: %u session(s) registered, %u damaged", c->cfg.state_dir, c->reg.n - before,
             P.n_damaged);
    return 0;
}

void hyd_persist_bus_close(void)
{
    sd_bus_slot_unref(P.slot_session);
    sd_bus_slot_unref(P.slot_manager);
    P.slot_session = P.slot_manager = NULL;
}

void hyd_persist_fini(void)
{
    hy_store_free(P.store);
    P.store = NULL;
}

void hyd_persist_removed(hyd_session *s)
{
    hy_err err = { 0 };
    hyd_psession *p = ps_get(s);

    if (p)
        p->removed = true;
    if (P.store && hy_store_remove(P.store, (uint32_t)s->uid, s->id, &err) < 0)
        log_warning("session %s: its checkpoint was not removed: %s", s->id, err.msg);
}

/* ---- scheduler thread ---------------------------------------------------------- */

/* s->seq_text := a copy of text (NULL: unknown, the next turn prefills everything). */
static void seq_text_set(hyd_session *s, const char *text, size_t len)
{
    free(s->seq_text);
    s->seq_text = text ? strndup(text, len) : NULL;
    s->seq_text_len = s->seq_text_cap = s->seq_text ? len : 0;
}

/* The state this session's checkpoint holds, into s->seq (no forward pass). */
static int restore_from(hy_model *m, hyd_session *s, hyd_psession *p, hy_ckpt *ck, hy_err *err)
{
    int r = hy_ckpt_restore(m, s->seq, ck, err);
    if (r < 0)
        return r;
    seq_text_set(s, ck->text, ck->text_len);
    /* Keep the snapshots, drop the state copy. */
    hy_ckpt_clear(&p->ck);
    p->ck = *ck;
    memset(ck, 0, sizeof(*ck));
    free(p->ck.image);
    free(p->ck.tokens);
    free(p->ck.logits);
    free(p->ck.text);
    p->ck.image = NULL;
    p->ck.tokens = NULL;
    p->ck.logits = NULL;
    p->ck.text = NULL;
    p->ck.text_len = 0;
    p->ck.image_len = 0;
    p->ck.n_tokens = 0;
    p->ck.snap_keep = P.snap_keep;
    pthread_mutex_lock(&s->lock);
    s->n_tokens = hy_seq_len(s->seq);
    pthread_mutex_unlock(&s->lock);
    return 0;
}

/* Load the state registered at start (lazily, now that a turn needs it). */
static int load_lazy(hy_model *m, hyd_session *s, hyd_psession *p, hy_err *err)
{
    hy_ckpt ck;
    hy_ckpt_reason why;
    char aside[4500];
    int r;

    p->state_on_disk = false;
    r = hy_store_load(P.store, (uint32_t)s->uid, s->id, P.arch, P.fp, &ck, &why, aside, sizeof(aside), err);
    if (r < 0) {
        if (why != HY_CKPT_IO)
            damaged_note(s->uid, s->id, err->msg);
        p->on_disk = false;
        char msg[HY_ERR_MSG_MAX];
        memcpy(msg, err->msg, sizeof(msg));
        return hy_err_set(err, r, "the saved state of session %s is damaged: %.380s; the next message rebuilds it "
                          "from the history", s->id, msg);
    }
    r = restore_from(m, s, p, &ck, err);
    hy_ckpt_clear(&ck);
    if (r == 0)
        log_debug("session %s: restored %lld tokens and %u snapshot(s) from disk", s->id,
                  (long long)hy_seq_len(s->seq), p->ck.n_snaps);
    return r;
}

/* Back to the start of answer `turn`: state from its snapshot, history cut before its user message. */
static int rewind_to(hy_model *m, hyd_session *s, hyd_psession *p, uint32_t turn, hy_err *err)
{
    hy_ckpt_snap *sn = NULL;
    int r;

    for (uint32_t i = 0; i < p->ck.n_snaps; i++)
        if (p->ck.snaps[i].turn == turn)
            sn = &p->ck.snaps[i];
    if (!sn) {
        if (p->ck.n_snaps == 0)
            return hy_err_set(err, -ENOENT, "session %s has no turn snapshots (turn_snapshots = %u)", s->id,
                              P.snap_keep);
        return hy_err_set(err, -ENOENT, "answer %u has no snapshot; answers %u..%u can be regenerated", turn,
                          p->ck.snaps[0].turn, p->ck.snaps[p->ck.n_snaps - 1].turn);
    }
    if ((r = hy_ckpt_snap_restore(m, s->seq, sn, NULL, err)) < 0)
        return r;
    seq_text_set(s, sn->text, sn->text_len);
    hy_ckpt_snaps_prune(&p->ck, sn->tokens, sn->n_tokens, turn);
    pthread_mutex_lock(&s->lock);
    /* The user message of this turn is the request's text again. */
    for (size_t i = 2 * (size_t)turn; i < s->n_msgs; i++)
        free(s->msgs[i].text);
    if (s->n_msgs > 2 * (size_t)turn)
        s->n_msgs = 2 * (size_t)turn;
    s->n_tokens = hy_seq_len(s->seq);
    s->updated_usec = hyd_now_usec();
    pthread_mutex_unlock(&s->lock);
    return 0;
}

int hyd_persist_prepare(hy_model *m, hyd_session *s, hy_err *err)
{
    hyd_psession *p = ps_get(s);
    int r;

    if (!p)
        return hy_err_set(err, -ENOMEM, "out of memory");
    if (!s->seq) {
        if ((r = hy_seq_new(m, &s->seq, err)) < 0)
            return r;
        seq_text_set(s, NULL, 0);
    }
    if (p->state_on_disk && (r = load_lazy(m, s, p, err)) < 0) {
        p->rewind_turn = -1;
        return r;
    }
    if (p->pending) {
        p->pending = false;
        hy_ckpt ck = p->ck;
        memset(&p->ck, 0, sizeof(p->ck));
        r = restore_from(m, s, p, &ck, err);
        hy_ckpt_clear(&ck);
        if (r < 0) {
            p->rewind_turn = -1;
            return r;
        }
    }
    if (p->rewind_turn >= 0) {
        uint32_t turn = (uint32_t)p->rewind_turn;
        p->rewind_turn = -1;
        return rewind_to(m, s, p, turn, err);
    }
    return 0;
}

void hyd_persist_turn_start(hy_model *m, hyd_session *s)
{
    hyd_psession *p = ps_get(s);
    hy_ckpt_snap sn;
    hy_err err = { 0 };
    uint32_t turn, n_msgs;

    if (!p || P.snap_keep == 0)
        return;
    pthread_mutex_lock(&s->lock);
    turn = (uint32_t)(s->n_msgs / 2);
    n_msgs = (uint32_t)s->n_msgs + 1 + (s->system_prompt ? 1 : 0);
    pthread_mutex_unlock(&s->lock);
    /* Regenerate restored exactly this snapshot: nothing new to keep. */
    if (p->ck.n_snaps && p->ck.snaps[p->ck.n_snaps - 1].turn == turn &&
        p->ck.snaps[p->ck.n_snaps - 1].n_tokens == hy_seq_len(s->seq))
        return;
    if (hy_ckpt_snap_take(m, s->seq, turn, n_msgs, &sn, &err) < 0) {
        log_warning("session %s: no snapshot of answer %u: %s", s->id, turn, err.msg);
        return;
    }
    if (s->seq_text && !(sn.text = strndup(s->seq_text, s->seq_text_len))) {
        hy_ckpt_snap_clear(&sn);
        return;
    }
    sn.text_len = sn.text ? s->seq_text_len : 0;
    if (hy_ckpt_snap_push(&p->ck, &sn, &err) < 0)
        log_warning("session %s: no snapshot of answer %u: %s", s->id, turn, err.msg);
}

void hyd_persist_save(hy_model *m, hyd_session *s)
{
    hyd_psession *p = ps_get(s);
    hy_ckpt c = { 0 };
    hy_seq *tmp = NULL;
    hy_err err = { 0 };
    int64_t updated;
    int r;

    if (!p || !P.store)
        return;
    pthread_mutex_lock(&s->lock);
    updated = s->updated_usec;
    pthread_mutex_unlock(&s->lock);
    /* Unchanged since it was written or read (at shutdown most sessions are). */
    if (p->on_disk && p->saved_usec == updated)
        return;
    if (p->state_on_disk || p->pending)
        return;                      /* its state is the one on disk / being imported */
    snprintf(c.id, sizeof(c.id), "%s", s->id);
    c.owner_uid = (uint32_t)s->uid;
    c.created_ns = s->created_usec * NS_PER_USEC;
    c.snap_keep = P.snap_keep;
    c.sampling = s->sampling;
    c.rng = s->rng;
    if ((r = msgs_to_ckpt(s, &c)) < 0) {
        hy_err_set(&err, r, "out of memory");
        goto out;
    }
    if (!s->seq && (r = hy_seq_new(m, &tmp, &err)) < 0)
        goto out;                    /* no turn yet: the empty state after the meta tokens */
    if ((r = hy_ckpt_capture(m, s->seq ? s->seq : tmp, &c, &err)) < 0)
        goto out;
    if (s->seq && s->seq_text && s->seq_text_len) {
        c.text = strndup(s->seq_text, s->seq_text_len);
        c.text_len = c.text ? s->seq_text_len : 0;
    }
    /* Borrow the snapshots that still fit this state. */
    hy_ckpt_snaps_prune(&p->ck, c.tokens, c.n_tokens, UINT32_MAX);
    c.snaps = p->ck.snaps;
    c.n_snaps = p->ck.n_snaps;
    r = hy_store_save(P.store, (uint32_t)s->uid, &c, P.arch, &err);
    c.snaps = NULL;
    c.n_snaps = 0;
    if (r == 0) {
        p->on_disk = true;
        p->saved_usec = updated;
        log_debug("session %s: checkpoint written (%lld tokens, %u snapshot(s))", s->id,
                  (long long)c.n_tokens, p->ck.n_snaps);
    }
out:
    if (r < 0)
        log_error("session %s: checkpoint not written: %s", s->id, err.msg);
    hy_ckpt_clear(&c);
    hy_seq_free(tmp);
}

/* ---- bus methods ------------------------------------------------------------- */

/* Queue a new answer to the user message of `turn` (as Send does for a new message). */
static int submit_answer(sd_bus_message *m, hyd_session *s, uid_t uid, uint32_t turn, uint32_t max_new,
                         bool ignore_eos, sd_bus_error *error)
{
    hyd_ctx *c = P.ctx;
    char *text = NULL;
    size_t answers;
    int r;

    r = hyd_bus_request_check(c, s, uid, error);
    if (r < 0)
        return r;
    pthread_mutex_lock(&s->lock);
    answers = s->n_msgs / 2;
    if (turn < answers)
        text = strdup(s->msgs[2 * (size_t)turn].text);
    pthread_mutex_unlock(&s->lock);
    if (turn >= answers)
        return sd_bus_error_setf(error, HYD_ERROR_INVALID_ARGUMENT, "session %s has %zu answer(s); there is no "
                                 "answer %u (answers count from 0)", s->id, answers, turn);
    /* The session is idle (checked above), so the scheduler reads this only
     * for the request queued below. */
    ps_get(s)->rewind_turn = (int)turn;
    r = hyd_bus_request_submit(c, m, s, uid, text, max_new, ignore_eos);
    if (r < 0) {
        ps_get(s)->rewind_turn = -1;
        return r;
    }
    log_info("request %llu: session %s, answer %u again", (unsigned long long)s->active->id, s->id, turn);
    return r;
}

static int method_regenerate(sd_bus_message *m, void *userdata, sd_bus_error *error)
{
    _cleanup_wire_ Hymba__V1__RegenerateRequest *in = NULL;
    hyd_session *s;
    uid_t uid;
    int r;
    (void)userdata;

    if ((r = hyd_bus_read_request(P.ctx, m, &hymba__v1__regenerate_request__descriptor,
                                  (ProtobufCMessage **)&in, &uid, error)) < 0 ||
        (r = hyd_bus_session_lookup(P.ctx, in->session_id, uid, &s, error)) < 0)
        return r;
    pthread_mutex_lock(&s->lock);
    size_t answers = s->n_msgs / 2;
    pthread_mutex_unlock(&s->lock);
    if (answers == 0)
        return sd_bus_error_setf(error, HYD_ERROR_INVALID_ARGUMENT, "session %s has no answer to regenerate", s->id);
    return submit_answer(m, s, uid, (uint32_t)(answers - 1), in->max_new_tokens, in->ignore_eos, error);
}

static int method_rewind(sd_bus_message *m, void *userdata, sd_bus_error *error)
{
    _cleanup_wire_ Hymba__V1__RewindRequest *in = NULL;
    hyd_session *s;
    uid_t uid;
    int r;
    (void)userdata;

    if ((r = hyd_bus_read_request(P.ctx, m, &hymba__v1__rewind_request__descriptor,
                                  (ProtobufCMessage **)&in, &uid, error)) < 0 ||
        (r = hyd_bus_session_lookup(P.ctx, in->session_id, uid, &s, error)) < 0)
        return r;
    return submit_answer(m, s, uid, in->turn, in->max_new_tokens, in->ignore_eos, error);
}

/* Copy a file to fd without letting a reader that never reads block the
 * event loop: the descriptor is made non-blocking and a stall ends the copy. */
static int copy_to_fd(const char *path, int fd, uint64_t *bytes)
{
    int in = open(path, O_RDONLY | O_CLOEXEC);
    char *buf = malloc(COPY_BUF);
    int flags = fcntl(fd, F_GETFL);
    int r = 0;

    if (flags >= 0)
        fcntl(fd, F_SETFL, flags | O_NONBLOCK);
    *bytes = 0;
    if (in < 0 || !buf) {
        r = in < 0 ? -errno : -ENOMEM;
        goto out;
    }
    for (;;) {
        ssize_t n = read(in, buf, COPY_BUF);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            r = n < 0 ? -errno : 0;
            break;
        }
        for (ssize_t off = 0; off < n;) {
            ssize_t w = write(fd, buf + off, (size_t)(n - off));
            if (w < 0 && errno == EINTR)
                continue;
            if (w < 0 && errno == EAGAIN) {
                struct pollfd pfd = { .fd = fd, .events = POLLOUT };
                if (poll(&pfd, 1, EXPORT_STALL_MS) <= 0) {
                    r = -ETIMEDOUT;
                    goto out;
                }
                continue;
            }
            if (w <= 0) {
                r = w < 0 ? -errno : -EIO;
                goto out;
            }
            off += w;
            *bytes += (uint64_t)w;
        }
    }
out:
    if (flags >= 0)
        fcntl(fd, F_SETFL, flags);
    if (in >= 0)
        close(in);
    free(buf);
    return r;
}

static int method_export(sd_bus_message *m, void *userdata, sd_bus_error *error)
{
    _cleanup_wire_ Hymba__V1__ExportRequest *in = NULL;
    Hymba__V1__ExportReply reply = HYMBA__V1__EXPORT_REPLY__INIT;
    char path[4500];
    hyd_session *s;
    uid_t uid;
    int fd, r;
    (void)userdata;

    if ((r = hyd_bus_read_request(P.ctx, m, &hymba__v1__export_request__descriptor,
                                  (ProtobufCMessage **)&in, &uid, error)) < 0)
        return r;
    if ((r = sd_bus_message_read(m, "h", &fd)) < 0)
        return sd_bus_error_setf(error, HYD_ERROR_INVALID_ARGUMENT, "Export needs a file descriptor (h) after the request");
    if ((r = hyd_bus_session_lookup(P.ctx, in->session_id, uid, &s, error)) < 0)
        return r;
    if (s->active)
        return sd_bus_error_setf(error, HYD_ERROR_SESSION_BUSY, "session %s is answering; export it afterwards", s->id);
    hyd_psession *p = ps_get(s);
    if (!p || !p->on_disk || hy_store_path(P.store, (uint32_t)uid, s->id, path, sizeof(path), NULL) < 0)
        return sd_bus_error_setf(error, HYD_ERROR_INVALID_ARGUMENT,
                                 "session %s has no saved turn yet: send a message first", s->id);
    r = copy_to_fd(path, fd, &reply.bytes);
    if (r < 0)
        return sd_bus_error_setf(error, HYD_ERROR_INTERNAL, "export of session %s failed after %llu bytes: %s",
                                 s->id, (unsigned long long)reply.bytes, strerror(-r));
    log_info("session %s exported by uid %u (%llu bytes)", s->id, (unsigned)uid, (unsigned long long)reply.bytes);
    return wire_reply(m, &reply.base);
}

static int method_import(sd_bus_message *m, void *userdata, sd_bus_error *error)
{
    _cleanup_wire_ Hymba__V1__ImportRequest *in = NULL;
    Hymba__V1__ImportReply reply = HYMBA__V1__IMPORT_REPLY__INIT;
    Hymba__V1__SessionInfo info = HYMBA__V1__SESSION_INFO__INIT;
    hyd_ctx *c = P.ctx;
    hy_ckpt ck;
    hy_ckpt_reason why;
    hy_err err = { 0 };
    hyd_session *s;
    uid_t uid;
    int fd, r;
    (void)userdata;

    if ((r = hyd_bus_read_request(P.ctx, m, &hymba__v1__import_request__descriptor,
                                  (ProtobufCMessage **)&in, &uid, error)) < 0)
        return r;
    if ((r = sd_bus_message_read(m, "h", &fd)) < 0)
        return sd_bus_error_setf(error, HYD_ERROR_INVALID_ARGUMENT, "Import needs a file descriptor (h) after the request");
    if (hyd_session_count_uid(&c->reg, uid) >= c->cfg.max_sessions_per_user)
        return sd_bus_error_setf(error, HYD_ERROR_TOO_MANY_SESSIONS,
                                 "user %u already has %u sessions, the limit (max_sessions_per_user)",
                                 (unsigned)uid, c->cfg.max_sessions_per_user);
    /* A pipe could keep the event loop waiting forever; a file ends. */
    struct stat sb;
    if (fstat(fd, &sb) < 0 || !S_ISREG(sb.st_mode))
        return sd_bus_error_setf(error, HYD_ERROR_INVALID_ARGUMENT,
                                 "Import reads a regular file (hymbactl import FILE), not a pipe or a terminal");
    if (hy_store_import_fd(fd, P.arch, P.fp, P.import_max, &ck, &why, &err) < 0)
        return sd_bus_error_setf(error, HYD_ERROR_INVALID_ARGUMENT, "import refused: %s", err.msg);
    if (msgs_check(&ck, &err) < 0 || ck.n_tokens + 1 >= c->max_ctx) {
        hy_ckpt_clear(&ck);
        return sd_bus_error_setf(error, HYD_ERROR_INVALID_ARGUMENT, "import refused: %s",
                                 err.msg[0] ? err.msg : "the conversation fills the context length");
    }
    /* A new session of the caller, whoever wrote the file. */
    if ((r = session_register(c, uid, NULL, &ck, &s)) < 0) {
        hy_ckpt_clear(&ck);
        return r;
    }
    hyd_psession *p = s->persist;
    snprintf(ck.id, sizeof(ck.id), "%s", s->id);
    ck.owner_uid = (uint32_t)uid;
    ck.snap_keep = P.snap_keep;
    hy_ckpt_snaps_prune(&ck, ck.tokens, ck.n_tokens, UINT32_MAX);
    while (ck.n_snaps > P.snap_keep) {                 /* keep the newest K */
        hy_ckpt_snap_clear(&ck.snaps[0]);
        memmove(ck.snaps, ck.snaps + 1, --ck.n_snaps * sizeof(*ck.snaps));
    }
    /* session_adopt moved the message texts out; the file keeps them. */
    for (uint32_t i = 0; i < ck.n_msgs; i++)
        free(ck.msgs[i].text);
    free(ck.msgs);
    ck.msgs = NULL;
    ck.n_msgs = 0;
    if ((r = msgs_to_ckpt(s, &ck)) < 0 || (r = hy_store_save(P.store, (uint32_t)uid, &ck, P.arch, &err)) < 0)
        log_warning("imported session %s not written to disk: %s", s->id, err.msg);
    else
        p->on_disk = true;
    p->saved_usec = s->updated_usec;
    p->ck = ck;
    p->pending = true;
    log_info("session %s imported by uid %u (%lld tokens, %u messages)", s->id, (unsigned)uid,
             (long long)ck.n_tokens, (unsigned)s->n_msgs);
    info.id = s->id;
    info.owner_uid = (uint32_t)uid;
    info.created_usec = s->created_usec;
    info.updated_usec = s->updated_usec;
    info.n_messages = (uint32_t)s->n_msgs;
    info.n_tokens = s->n_tokens;
    info.system_prompt = s->system_prompt ? s->system_prompt : "";
    info.title = s->n_msgs ? s->msgs[0].text : "";
    reply.session = &info;
    return wire_reply(m, &reply.base);
}

static const sd_bus_vtable persist_session_vtable[] = {
    SD_BUS_VTABLE_START(0),
    SD_BUS_METHOD_WITH_NAMES("Regenerate", "ay", SD_BUS_PARAM(request), "ay", SD_BUS_PARAM(reply),
                             method_regenerate, SD_BUS_VTABLE_UNPRIVILEGED),
    SD_BUS_METHOD_WITH_NAMES("Rewind", "ay", SD_BUS_PARAM(request), "ay", SD_BUS_PARAM(reply),
                             method_rewind, SD_BUS_VTABLE_UNPRIVILEGED),
    SD_BUS_METHOD_WITH_NAMES("Export", "ayh", SD_BUS_PARAM(request) SD_BUS_PARAM(fd), "ay", SD_BUS_PARAM(reply),
                             method_export, SD_BUS_VTABLE_UNPRIVILEGED),
    SD_BUS_VTABLE_END
};

static const sd_bus_vtable persist_manager_vtable[] = {
    SD_BUS_VTABLE_START(0),
    SD_BUS_METHOD_WITH_NAMES("Import", "ayh", SD_BUS_PARAM(request) SD_BUS_PARAM(fd), "ay", SD_BUS_PARAM(reply),
                             method_import, SD_BUS_VTABLE_UNPRIVILEGED),
    SD_BUS_VTABLE_END
};

int hyd_persist_bus_setup(hyd_ctx *c)
{
    /* Same interfaces as bus.c's, another userdata: sd-bus merges the vtables. */
    int r = sd_bus_add_object_vtable(c->bus, &P.slot_session, HYD_OBJECT_PATH, HYD_IFACE_SESSION,
                                     persist_session_vtable, &P);
    if (r >= 0)
        r = sd_bus_add_object_vtable(c->bus, &P.slot_manager, HYD_OBJECT_PATH, HYD_IFACE_MANAGER,
                                     persist_manager_vtable, &P);
    if (r < 0)
        return log_error_errno(r, "Failed to export the Regenerate/Rewind/Export/Import methods");
    return 0;
}
