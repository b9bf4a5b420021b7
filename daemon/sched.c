/* sched.c: the scheduler thread: chunked prefill, batched decode steps of every active request, cancellation per step. */
#include "daemon/sched.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>
#include "daemon/log.h"
#include "engine/chat.h"
#include "daemon/persist.h"

typedef enum gen_phase {
    PH_NEW,                          /* not yet rendered and tokenized */
    PH_PREFILL,                      /* prompt tokens still to feed */
    PH_DECODE,                       /* sampling one token per step */
} gen_phase;

/* Per-request state the scheduler keeps while it runs a request. */
struct hyd_gen {
    gen_phase phase;
    char *render;                    /* [render_len] the rendered conversation, until prefilled */
    size_t render_len;
    int32_t *ids;                    /* [n_ids] its tokens the state does not hold yet */
    size_t n_ids;
    size_t pos;                      /* ids[0..pos) are in the sequence */
    uint32_t prompt_tokens;          /* tokens prefilled this turn */
    hy_detok *detok;
    hy_chat_stop stop;               /* holds back what may start a stop marker */
    char *answer;                    /* [len] text sent as chunks so far (NUL-terminated) */
    size_t len;
    uint32_t n_gen;                  /* tokens sampled and kept */
    Hymba__V1__StopReason stop_after_step; /* set: the request ends after this step's decode */
    int64_t t_start, prefill_usec, decode_usec;
};

typedef struct sched_job {
    hyd_request *req;                /* a Send, or NULL */
    hy_seq *free_seq;                /* a sequence to free, or NULL */
    struct sched_job *next;
} sched_job;

struct hyd_sched {
    hy_model *model;
    const hy_tok *tok;
    hyd_sched_opts opts;
    int64_t max_ctx;                 /* tokens a conversation may hold */
    int vocab;

    pthread_t thread;
    bool started;
    pthread_mutex_t lock;            /* guards everything below */
    pthread_cond_t cond;
    sched_job *jobs, **jobs_tail;
    unsigned n_queued;
    bool stop;
    hyd_event *events, **events_tail;
    hyd_sched_stats stats;
    int efd;

    /* scheduler thread only */
    hyd_request **act;               /* [n_act] requests being run, oldest first */
    size_t n_act, cap_act;
    hy_seq **batch_seqs;             /* [max_batch] */
    int32_t *batch_toks;             /* [max_batch] */
    hyd_request **batch_reqs;        /* [max_batch] */
    uint64_t tokens_generated;
};

static int64_t mono_usec(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* ---- events out ---------------------------------------------------------- */

static void post(hyd_sched *s, hyd_event *ev)
{
    uint64_t one = 1;

    pthread_mutex_lock(&s->lock);
    *s->events_tail = ev;
    s->events_tail = &ev->next;
    pthread_mutex_unlock(&s->lock);
    if (write(s->efd, &one, sizeof(one)) < 0 && errno != EAGAIN)
        log_warning_errno(-errno, "Failed to signal the event loop");
}

static hyd_event *event_new(hyd_event_kind kind, hyd_request *req)
{
    hyd_event *ev = calloc(1, sizeof(*ev));
    if (!ev)
        return NULL;
    ev->kind = kind;
    ev->req = req;
    ev->n_tokens = req->gen ? req->gen->n_gen : 0;
    return ev;
}

/* Stream text (n bytes) to the client and add it to the answer. */
static void emit_text(hyd_sched *s, hyd_request *req, const char *text, size_t n)
{
    hyd_gen *g = req->gen;
    hyd_event *ev;
    char *a;

    if (n == 0)
        return;
    a = realloc(g->answer, g->len + n + 1);
    ev = event_new(HYD_EV_CHUNK, req);
    if (ev)
        ev->text = strndup(text, n);
    if (!a || !ev || !ev->text) {
        if (ev)
            free(ev->text);
        free(ev);
        if (a)
            g->answer = a;
        log_error("request %llu: out of memory streaming text", (unsigned long long)req->id);
        return;
    }
    g->answer = a;
    memcpy(g->answer + g->len, text, n);
    g->len += n;
    g->answer[g->len] = 0;
    post(s, ev);
}

static void gen_free(hyd_gen *g)
{
    if (!g)
        return;
    free(g->ids);
    free(g->render);
    hy_detok_free(g->detok);
    free(g->answer);
    free(g);
}

/* Drop req from the active list and post its one FINISHED event; the
 * scheduler never touches req after this. */
static void finish(hyd_sched *s, hyd_request *req, hyd_event *ev)
{
    for (size_t i = 0; i < s->n_act; i++)
        if (s->act[i] == req) {
            memmove(s->act + i, s->act + i + 1, (s->n_act - i - 1) * sizeof(*s->act));
            s->n_act--;
            break;
        }
    gen_free(req->gen);
    req->gen = NULL;
    post(s, ev);
}

static void finish_error(hyd_sched *s, hyd_request *req, Hymba__V1__ErrorCode code, const char *msg)
{
    hyd_event *ev = event_new(HYD_EV_FINISHED, req);

    log_info("request %llu (session %s): error: %s", (unsigned long long)req->id, req->session->id, msg);
    if (!ev)
        abort();                     /* the one final event cannot be lost */
    ev->result = HYMBA__V1__FINISHED__RESULT_ERROR;
    ev->error_code = code;
    ev->text = strdup(msg);
    finish(s, req, ev);
}

/* The turn ends (done or cancelled): record it in the history, run the
 * per-turn hook, post the final event. */
static void finish_turn(hyd_sched *s, hyd_request *req, Hymba__V1__StopReason stop, int cancel_reason)
{
    hyd_gen *g = req->gen;
    hyd_session *ss = req->session;
    hyd_event *ev = event_new(HYD_EV_FINISHED, req);
    int64_t now = mono_usec();

    if (!ev)
        abort();
    if (g && g->phase == PH_DECODE) {
        /* Cancelled or not, the user's message and what the client saw of the
         * answer are the conversation now (the state holds them). */
        char *answer = strdup(g->answer ? g->answer : "");
        int r = answer ? hyd_session_append_turn(ss, req->text, answer, hy_seq_len(ss->seq)) : -ENOMEM;
        if (r < 0)
            log_error_errno(r, "session %s: failed to record the turn", ss->id);
        free(answer);
        hyd_session_turn_done(s->opts.state_dir, ss, s->model);
    }
    if (cancel_reason) {
        ev->result = HYMBA__V1__FINISHED__RESULT_CANCELLED;
        ev->cancel_reason = cancel_reason;
    } else {
        hymba__v1__done__init(&ev->done);
        ev->result = HYMBA__V1__FINISHED__RESULT_DONE;
        ev->done.prompt_tokens = g->prompt_tokens;
        ev->done.completion_tokens = g->n_gen;
        ev->done.stop_reason = stop;
        ev->done.queue_usec = (uint64_t)(g->t_start - req->t_accept);
        ev->done.prefill_usec = (uint64_t)g->prefill_usec;
        ev->done.decode_usec = (uint64_t)g->decode_usec;
        ev->done.total_usec = (uint64_t)(now - req->t_accept);
        ev->done.context_tokens = hy_seq_len(ss->seq);
    }
    finish(s, req, ev);
}

/* ---- one request's steps ------------------------------------------------- */

/* Render the whole conversation plus the new user message, keep the part of
 * the sequence that is a token prefix of it, and queue the rest for prefill. */
/* The state no longer corresponds to a known text (until a prefill completes). */
static void seq_text_drop(hyd_session *ss)
{
    free(ss->seq_text);
    ss->seq_text = NULL;
    ss->seq_text_len = ss->seq_text_cap = 0;
}

static void seq_text_append(hyd_session *ss, const char *text, size_t n)
{
    if (!ss->seq_text || n == 0)
        return;
    if (ss->seq_text_len + n + 1 > ss->seq_text_cap) {
        size_t cap = 2 * (ss->seq_text_len + n + 1);
        char *t = realloc(ss->seq_text, cap);
        if (!t) {
            seq_text_drop(ss);       /* next turn prefills everything: slower, still right */
            return;
        }
        ss->seq_text = t;
        ss->seq_text_cap = cap;
    }
    memcpy(ss->seq_text + ss->seq_text_len, text, n);
    ss->seq_text_len += n;
    ss->seq_text[ss->seq_text_len] = 0;
}

/* Render the whole conversation plus the new user message.  When the text
 * the state already holds (the previous rendering plus the answer as it was
 * generated) is a prefix of it, only the rest is tokenized and prefilled;
 * otherwise (e.g. after a cancel mid-prompt, or an answer the template
 * strips) the state starts over from the meta-token snapshot. */
static int gen_start(hyd_sched *s, hyd_request *req, hy_err *err)
{
    hyd_session *ss = req->session;
    hyd_gen *g = req->gen;
    hy_chat_msg *msgs;
    char *text = NULL;
    size_t n = 0, text_len = 0, from;
    int64_t have;
    bool reuse;
    int r;

    g->t_start = mono_usec();
    /* A new sequence (its text unknown), or the session's checkpoint or a turn
     * snapshot restored with the text its state holds. */
    r = hyd_persist_prepare(s->model, ss, err);
    if (r < 0)
        return r;
    /* Only this thread writes the history, so reading it unlocked is safe. */
    msgs = calloc(ss->n_msgs + 2, sizeof(*msgs));
    if (!msgs)
        return hy_err_set(err, -ENOMEM, "out of memory rendering the conversation");
    if (ss->system_prompt)
        msgs[n++] = (hy_chat_msg){ HY_ROLE_SYSTEM, ss->system_prompt };
    for (size_t i = 0; i < ss->n_msgs; i++)
        msgs[n++] = (hy_chat_msg){ ss->msgs[i].role, ss->msgs[i].text };
    msgs[n++] = (hy_chat_msg){ HY_ROLE_USER, req->text };
    r = hy_chat_render(msgs, n, true, &text, &text_len, err);
    free(msgs);
    if (r < 0)
        return r;

    have = hy_seq_len(ss->seq);
    /* Equal: a restored turn snapshot holds the whole prompt (Regenerate, Rewind). */
    reuse = have > 0 && ss->seq_text && ss->seq_text_len <= text_len &&
            !memcmp(text, ss->seq_text, ss->seq_text_len) && hy_seq_logits(ss->seq);
    from = reuse ? ss->seq_text_len : 0;
    /* Without BOS, as the template's tokenization (add_special_tokens=False). */
    r = from == text_len ? 0 : hy_tok_encode(s->tok, text + from, text_len - from, false, &g->ids, &g->n_ids, err);
    if (r < 0) {
        free(text);
        return r;
    }
    if (!reuse)
        have = 0;
    if (have + (int64_t)g->n_ids + 1 > s->max_ctx) {
        free(text);
        return hy_err_set(err, -E2BIG, "the conversation would hold %lld tokens with this message; "
                          "the context length is %lld", (long long)(have + (int64_t)g->n_ids), (long long)s->max_ctx);
    }
    if (!reuse && hy_seq_len(ss->seq) > 0) {
        log_debug("session %s: the state is not a prefix of the conversation, prefilling it all", ss->id);
        hy_seq_reset(s->model, ss->seq);
    }
    seq_text_drop(ss);
    g->render = text;
    g->render_len = text_len;
    g->pos = 0;
    g->detok = hy_detok_new(s->tok, false);
    hy_chat_stop_init(&g->stop);
    if (!g->detok)
        return hy_err_set(err, -ENOMEM, "out of memory creating a detokenizer");
    g->phase = g->n_ids ? PH_PREFILL : PH_DECODE;
    if (g->phase == PH_DECODE) {
        /* Nothing to prefill: the state holds this text already. */
        ss->seq_text = g->render;
        ss->seq_text_len = ss->seq_text_cap = g->render_len;
        g->render = NULL;
        hyd_persist_turn_start(s->model, ss);
    }
    return 0;
}

static int gen_prefill_chunk(hyd_sched *s, hyd_request *req, hy_err *err)
{
    hyd_gen *g = req->gen;
    size_t n = g->n_ids - g->pos;
    int64_t t0 = mono_usec();
    int r;

    if (n > s->opts.prefill_chunk)
        n = s->opts.prefill_chunk;
    r = hy_seq_prefill(s->model, req->session->seq, g->ids + g->pos, (int)n, NULL, err);
    g->prefill_usec += mono_usec() - t0;
    if (r < 0)
        return r;
    g->pos += n;
    g->prompt_tokens += (uint32_t)n;
    if (g->pos == g->n_ids) {
        hyd_session *ss = req->session;
        /* The state now holds exactly this text; the answer is appended as it comes. */
        ss->seq_text = g->render;
        ss->seq_text_len = ss->seq_text_cap = g->render_len;
        g->render = NULL;
        g->phase = PH_DECODE;
        hyd_persist_turn_start(s->model, ss);
    }
    return 0;
}

/* End of the answer without a marker: emit what the detokenizer and the
 * stop scanner still hold. */
static void gen_flush(hyd_sched *s, hyd_request *req)
{
    hyd_gen *g = req->gen;
    char *held = NULL, *out = NULL;
    size_t held_len = 0, out_len = 0;

    if (hy_detok_flush(g->detok, &held, &held_len) >= 0 && held_len) {
        seq_text_append(req->session, held, held_len);
        if (req->ignore_eos)
            emit_text(s, req, held, held_len);
        else if (hy_chat_stop_feed(&g->stop, held, held_len, &out, &out_len) >= 0)
            emit_text(s, req, out, out_len);
    }
    free(held);
    if (!g->stop.stopped) {
        char *rest = NULL;
        size_t rest_len = 0;
        if (hy_chat_stop_flush(&g->stop, &rest, &rest_len) >= 0)
            emit_text(s, req, rest, rest_len);
        free(rest);
    }
    free(out);
}

/* Sample the request's next token.  Returns 1 when the token goes into this
 * step's batch, 0 when the request finished instead. */
static int gen_sample(hyd_sched *s, hyd_request *req, int32_t *tok_out)
{
    hyd_gen *g = req->gen;
    hyd_session *ss = req->session;
    const float *logits = hy_seq_logits(ss->seq);
    int64_t n_hist = hy_seq_len(ss->seq);
    char *piece = NULL, *out = NULL;
    size_t piece_len = 0, out_len = 0;
    int32_t tok;

    if (!logits) {
        finish_error(s, req, HYMBA__V1__ERROR_CODE__ERROR_CODE_INTERNAL, "the engine returned no logits after the prompt");
        return 0;
    }
    if (ss->sampling.repeat_last_n > 0 && n_hist > ss->sampling.repeat_last_n)
        n_hist = ss->sampling.repeat_last_n;
    tok = hy_sample(&ss->sampling, &ss->rng, logits, s->vocab,
                    hy_seq_tokens(ss->seq) + hy_seq_len(ss->seq) - n_hist, n_hist);
    if (!req->ignore_eos && hy_chat_stop_id(s->tok, tok)) {
        gen_flush(s, req);
        finish_turn(s, req, HYMBA__V1__STOP_REASON__STOP_REASON_EOS, 0);
        return 0;
    }
    if (hy_seq_len(ss->seq) + 1 > s->max_ctx) {
        gen_flush(s, req);
        finish_turn(s, req, HYMBA__V1__STOP_REASON__STOP_REASON_CONTEXT_FULL, 0);
        return 0;
    }
    g->n_gen++;
    s->tokens_generated++;
    if (hy_detok_push(g->detok, tok, &piece, &piece_len) >= 0 && piece_len) {
        seq_text_append(ss, piece, piece_len);
        if (req->ignore_eos)
            emit_text(s, req, piece, piece_len);
        else if (hy_chat_stop_feed(&g->stop, piece, piece_len, &out, &out_len) >= 0)
            emit_text(s, req, out, out_len);
    }
    free(piece);
    free(out);
    if (g->stop.stopped)
        g->stop_after_step = HYMBA__V1__STOP_REASON__STOP_REASON_TURN_MARKER; /* not history, but in the state */
    else if (g->n_gen >= req->max_new_tokens)
        g->stop_after_step = HYMBA__V1__STOP_REASON__STOP_REASON_MAX_TOKENS;
    *tok_out = tok;
    return 1;
}

/* ---- the loop ------------------------------------------------------------ */

static int cancel_reason(hyd_request *req)
{
    return atomic_load_explicit(&req->cancel, memory_order_acquire);
}

/* Moves queued jobs in; returns whether stop was asked before they were
 * taken (so every request submitted before the stop is in the active list). */
static bool take_jobs(hyd_sched *s)
{
    sched_job *jobs;
    bool stopping;

    pthread_mutex_lock(&s->lock);
    while (!s->stop && !s->jobs && s->n_act == 0)
        pthread_cond_wait(&s->cond, &s->lock);
    stopping = s->stop;
    jobs = s->jobs;
    s->jobs = NULL;
    s->jobs_tail = &s->jobs;
    s->n_queued = 0;
    pthread_mutex_unlock(&s->lock);

    while (jobs) {
        sched_job *j = jobs;
        jobs = j->next;
        if (j->free_seq)
            hy_seq_free(j->free_seq);
        if (j->req) {
            if (s->n_act == s->cap_act) {
                size_t cap = s->cap_act ? 2 * s->cap_act : 16;
                hyd_request **a = realloc(s->act, cap * sizeof(*a));
                if (!a)
                    abort();
                s->act = a;
                s->cap_act = cap;
            }
            s->act[s->n_act++] = j->req;
        }
        free(j);
    }
    return stopping;
}

static void publish_stats(hyd_sched *s)
{
    hy_backend_stats b;

    hy_model_stats(s->model, &b);
    pthread_mutex_lock(&s->lock);
    s->stats.queued = s->n_queued;
    s->stats.active = (unsigned)s->n_act;
    s->stats.tokens_generated = s->tokens_generated;
    s->stats.backend = b;
    pthread_mutex_unlock(&s->lock);
}

/* Cancellations and new requests: runs once per step. */
static void step_admin(hyd_sched *s, bool stopping)
{
    for (size_t i = 0; i < s->n_act;) {
        hyd_request *req = s->act[i];
        int why = stopping ? HYMBA__V1__CANCEL_REASON__CANCEL_REASON_SHUTDOWN : cancel_reason(req);
        hy_err err = { 0 };

        if (why) {
            if (why == HYMBA__V1__CANCEL_REASON__CANCEL_REASON_SESSION_DELETED || !req->gen || req->gen->phase != PH_DECODE) {
                /* Nothing of this turn is kept: the next turn's prefix check
                 * discards whatever part of the prompt the state took in. */
                gen_free(req->gen);
                req->gen = NULL;
            }
            finish_turn(s, req, HYMBA__V1__STOP_REASON__STOP_REASON_UNSPECIFIED, why);
            continue;
        }
        if (!req->gen) {
            req->gen = calloc(1, sizeof(*req->gen));
            if (!req->gen || gen_start(s, req, &err) < 0) {
                if (!err.msg[0])
                    snprintf(err.msg, sizeof(err.msg), "%s", strerror(err.code ? -err.code : ENOMEM));
                finish_error(s, req, err.code == -E2BIG ? HYMBA__V1__ERROR_CODE__ERROR_CODE_CONTEXT_LENGTH
                                                        : HYMBA__V1__ERROR_CODE__ERROR_CODE_ENGINE, err.msg);
                continue;
            }
        }
        i++;
    }
}

/* One prefill chunk of the oldest request still prefilling, so a long prompt
 * takes turns with everyone else's decode steps. */
static void step_prefill(hyd_sched *s)
{
    for (size_t i = 0; i < s->n_act; i++) {
        hyd_request *req = s->act[i];
        hy_err err = { 0 };

        if (req->gen->phase != PH_PREFILL)
            continue;
        if (gen_prefill_chunk(s, req, &err) < 0) {
            hy_seq_reset(s->model, req->session->seq);
            seq_text_drop(req->session);
            finish_error(s, req, HYMBA__V1__ERROR_CODE__ERROR_CODE_ENGINE, err.msg);
        }
        return;
    }
}

/* One token for every request that is decoding, max_batch per engine call. */
static void step_decode(hyd_sched *s)
{
    size_t i = 0;

    while (i < s->n_act) {
        int B = 0;
        /* Requests that finish leave the active list: collect by walking it. */
        while (i < s->n_act && B < (int)s->opts.max_batch) {
            hyd_request *req = s->act[i];
            int32_t tok;
            if (req->gen->phase != PH_DECODE) {
                i++;
                continue;
            }
            if (gen_sample(s, req, &tok) == 0)
                continue;                       /* finished: act[i] is the next one now */
            s->batch_reqs[B] = req;
            s->batch_seqs[B] = req->session->seq;
            s->batch_toks[B] = tok;
            B++;
            i++;
        }
        if (B == 0)
            break;

        hy_err err = { 0 };
        int64_t t0 = mono_usec();
        int r = hy_seq_decode_batch(s->model, s->batch_seqs, s->batch_toks, B, &err);
        int64_t dt = mono_usec() - t0;
        for (int b = 0; b < B; b++) {
            hyd_request *req = s->batch_reqs[b];
            req->gen->decode_usec += dt;
            if (r < 0) {
                hy_seq_reset(s->model, req->session->seq);
                seq_text_drop(req->session);
                finish_error(s, req, HYMBA__V1__ERROR_CODE__ERROR_CODE_ENGINE, err.msg);
                i--;
            } else if (req->gen->stop_after_step) {
                if (req->gen->stop_after_step != HYMBA__V1__STOP_REASON__STOP_REASON_TURN_MARKER)
                    gen_flush(s, req);
                finish_turn(s, req, req->gen->stop_after_step, 0);
                i--;
            }
        }
    }
}

static void *sched_main(void *arg)
{
    hyd_sched *s = arg;

    for (;;) {
        bool stopping = take_jobs(s);

        step_admin(s, stopping);
        if (stopping && s->n_act == 0)
            break;
        step_prefill(s);
        step_decode(s);
        publish_stats(s);
    }
    publish_stats(s);
    return NULL;
}

/* ---- the loop thread's side ---------------------------------------------- */

int hyd_sched_new(hy_model *m, const hy_tok *tok, const hyd_sched_opts *opts, hyd_sched **out)
{
    hyd_sched *s = calloc(1, sizeof(*s));
    int r;

    if (!s)
        return -ENOMEM;
    s->model = m;
    s->tok = tok;
    s->opts = *opts;
    s->max_ctx = hy_model_max_ctx(m);
    s->vocab = hy_model_arch(m)->vocab;
    pthread_mutex_init(&s->lock, NULL);
    pthread_cond_init(&s->cond, NULL);
    s->jobs_tail = &s->jobs;
    s->events_tail = &s->events;
    s->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    s->batch_seqs = calloc(opts->max_batch, sizeof(*s->batch_seqs));
    s->batch_toks = calloc(opts->max_batch, sizeof(*s->batch_toks));
    s->batch_reqs = calloc(opts->max_batch, sizeof(*s->batch_reqs));
    if (s->efd < 0 || !s->batch_seqs || !s->batch_toks || !s->batch_reqs) {
        r = s->efd < 0 ? -errno : -ENOMEM;
        hyd_sched_free(s);
        return r;
    }
    publish_stats(s);
    r = -pthread_create(&s->thread, NULL, sched_main, s);
    if (r < 0) {
        hyd_sched_free(s);
        return r;
    }
    s->started = true;
    *out = s;
    return 0;
}

int hyd_sched_event_fd(hyd_sched *s)
{
    return s->efd;
}

static void push_job(hyd_sched *s, hyd_request *req, hy_seq *seq)
{
    sched_job *j = calloc(1, sizeof(*j));
    if (!j)
        abort();                     /* a lost job would leave a request without its final event */
    j->req = req;
    j->free_seq = seq;
    pthread_mutex_lock(&s->lock);
    *s->jobs_tail = j;
    s->jobs_tail = &j->next;
    if (req) {
        s->n_queued++;
        s->stats.queued = s->n_queued;
    }
    pthread_cond_signal(&s->cond);
    pthread_mutex_unlock(&s->lock);
}

void hyd_sched_submit(hyd_sched *s, hyd_request *req)
{
    push_job(s, req, NULL);
}

void hyd_sched_free_seq(hyd_sched *s, hy_seq *seq)
{
    if (seq)
        push_job(s, NULL, seq);
}

void hyd_sched_wake(hyd_sched *s)
{
    pthread_mutex_lock(&s->lock);
    pthread_cond_signal(&s->cond);
    pthread_mutex_unlock(&s->lock);
}

hyd_event *hyd_sched_take_events(hyd_sched *s)
{
    uint64_t v;
    hyd_event *ev;

    if (read(s->efd, &v, sizeof(v)) < 0 && errno != EAGAIN)
        log_warning_errno(-errno, "Failed to read the scheduler's eventfd");
    pthread_mutex_lock(&s->lock);
    ev = s->events;
    s->events = NULL;
    s->events_tail = &s->events;
    pthread_mutex_unlock(&s->lock);
    return ev;
}

void hyd_event_free(hyd_event *ev)
{
    if (!ev)
        return;
    free(ev->text);
    free(ev);
}

void hyd_sched_stats_get(hyd_sched *s, hyd_sched_stats *out)
{
    pthread_mutex_lock(&s->lock);
    *out = s->stats;
    pthread_mutex_unlock(&s->lock);
}

void hyd_sched_stop(hyd_sched *s)
{
    if (!s || !s->started)
        return;
    pthread_mutex_lock(&s->lock);
    s->stop = true;
    pthread_cond_signal(&s->cond);
    pthread_mutex_unlock(&s->lock);
    pthread_join(s->thread, NULL);
    s->started = false;
    /* Jobs that came in after the last pass: free sequences, finish requests. */
    take_jobs(s);
    step_admin(s, true);
}

void hyd_sched_free(hyd_sched *s)
{
    if (!s)
        return;
    hyd_sched_stop(s);
    /* Sequences handed over after the thread stopped (the caller owns the engine now). */
    while (s->jobs) {
        sched_job *j = s->jobs;
        s->jobs = j->next;
        hy_seq_free(j->free_seq);
        free(j);
    }
    for (hyd_event *ev = s->events, *next; ev; ev = next) {
        next = ev->next;
        hyd_event_free(ev);
    }
    if (s->efd >= 0)
        close(s->efd);
    free(s->act);
    free(s->batch_seqs);
    free(s->batch_toks);
    free(s->batch_reqs);
    pthread_mutex_destroy(&s->lock);
    pthread_cond_destroy(&s->cond);
    free(s);
}
