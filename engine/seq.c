/* seq.c: conversations (hy_seq_*): backend state + token history + last logits, over the backend table. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include "engine/model_internal.h"
#include "kernels/state_image.h"

/* Default positions per prefill call when the model gives none. */
#define SEQ_DEFAULT_CHUNK 512

static int seq_chunk(const hy_model *m)
{
    return m->prefill_chunk > 0 ? m->prefill_chunk : SEQ_DEFAULT_CHUNK;
}

/* Grows the token history to hold at least need ids. */
static int seq_reserve(hy_seq *s, int64_t need, hy_err *err)
{
    if (need <= s->cap)
        return 0;
    int64_t cap = s->cap ? s->cap : 256;
    while (cap < need)
        cap *= 2;
    int32_t *t = realloc(s->tokens, (size_t)cap * sizeof(int32_t));
    if (!t)
        return hy_err_set(err, -ENOMEM, "seq: out of memory for %lld token ids", (long long)cap);
    s->tokens = t;
    s->cap = cap;
    return 0;
}

static int seq_check_room(const hy_model *m, const hy_seq *s, int64_t n, hy_err *err)
{
    if (s->n_tokens + n > m->max_ctx)
        return hy_err_set(err, -ENOSPC, "conversation would hold %lld tokens, more than max_ctx %lld",
                          (long long)(s->n_tokens + n), (long long)m->max_ctx);
    return 0;
}

int hy_seq_new(hy_model *m, hy_seq **out, hy_err *err)
{
    hy_seq *s;
    int rc;

    if (!m || !out)
        return hy_err_set(err, -EINVAL, "seq: no model");
    s = calloc(1, sizeof(*s));
    if (!s)
        return hy_err_set(err, -ENOMEM, "seq: out of memory");
    s->logits = malloc((size_t)m->arch.vocab * sizeof(float));
    if (!s->logits) {
        free(s);
        return hy_err_set(err, -ENOMEM, "seq: out of memory for %d logits", m->arch.vocab);
    }
    rc = m->be->state_new(m->be_ctx, m->bm, m->max_ctx + m->arch.n_meta, &s->st, err);
    if (rc < 0) {
        free(s->logits);
        free(s);
        return rc;
    }
    s->model = m;
    *out = s;
    return 0;
}

void hy_seq_free(hy_seq *s)
{
    if (!s)
        return;
    if (s->st)
        s->model->be->state_free(s->model->be_ctx, s->st);
    free(s->tokens);
    free(s->logits);
    free(s);
}

void hy_seq_reset(hy_model *m, hy_seq *s)
{
    m->be->state_reset(m->be_ctx, m->bm, s->st);
    s->n_tokens = 0;
    s->has_logits = false;
}

int hy_seq_copy(hy_model *m, hy_seq *dst, const hy_seq *src, hy_err *err)
{
    int rc;
    if (dst == src)
        return 0;
    rc = seq_reserve(dst, src->n_tokens, err);
    if (rc < 0)
        return rc;
    rc = m->be->state_copy(m->be_ctx, m->bm, dst->st, src->st, err);
    if (rc < 0)
        return rc;
    if (src->n_tokens)
        memcpy(dst->tokens, src->tokens, (size_t)src->n_tokens * sizeof(int32_t));
    dst->n_tokens = src->n_tokens;
    dst->has_logits = src->has_logits;
    if (src->has_logits)
        memcpy(dst->logits, src->logits, (size_t)m->arch.vocab * sizeof(float));
    return 0;
}

int64_t hy_seq_len(const hy_seq *s)
{
    return s->n_tokens;
}

const int32_t *hy_seq_tokens(const hy_seq *s)
{
    return s->tokens;
}

const float *hy_seq_logits(const hy_seq *s)
{
    return s->has_logits ? s->logits : NULL;
}

int hy_seq_prefill(hy_model *m, hy_seq *s, const int32_t *tokens, int n, float *logits_all, hy_err *err)
{
    int vocab = m->arch.vocab, chunk = seq_chunk(m);
    int rc;

    if (n < 1 || !tokens)
        return hy_err_set(err, -EINVAL, "seq: prefill of %d tokens", n);
    for (int i = 0; i < n; i++)
        if (tokens[i] < 0 || tokens[i] >= vocab)
            return hy_err_set(err, -EINVAL, "seq: token %d (id %d) is outside the vocabulary [0, %d)",
                              i, (int)tokens[i], vocab);
    if ((rc = seq_check_room(m, s, n, err)) < 0 || (rc = seq_reserve(s, s->n_tokens + n, err)) < 0)
        return rc;
    for (int done = 0; done < n; done += chunk) {
        int k = n - done < chunk ? n - done : chunk;
        bool last = done + k == n;
        hy_logits_mode mode = logits_all ? HY_LOGITS_ALL : (last ? HY_LOGITS_LAST : HY_LOGITS_NONE);
        float *out = logits_all ? logits_all + (size_t)done * vocab : (last ? s->logits : NULL);
        /* the history must stay consistent with the backend state even if a chunk fails */
        s->has_logits = false;
        rc = m->be->prefill(m->be_ctx, m->bm, s->st, tokens + done, k, mode, out, err);
        if (rc < 0)
            return rc;
        memcpy(s->tokens + s->n_tokens, tokens + done, (size_t)k * sizeof(int32_t));
        s->n_tokens += k;
    }
    if (logits_all)
        memcpy(s->logits, logits_all + (size_t)(n - 1) * vocab, (size_t)vocab * sizeof(float));
    s->has_logits = true;
    return 0;
}

int hy_seq_decode_batch(hy_model *m, hy_seq **seqs, const int32_t *tokens, int B, hy_err *err)
{
    int vocab = m->arch.vocab;
    void **st;
    float *logits;
    int rc = 0;

    if (B < 1 || !seqs || !tokens)
        return hy_err_set(err, -EINVAL, "seq: decode batch of %d", B);
    for (int b = 0; b < B; b++) {
        if (tokens[b] < 0 || tokens[b] >= vocab)
            return hy_err_set(err, -EINVAL, "seq: decode batch entry %d: token id %d is outside the vocabulary [0, %d)",
                              b, (int)tokens[b], vocab);
        if ((rc = seq_check_room(m, seqs[b], 1, err)) < 0 ||
            (rc = seq_reserve(seqs[b], seqs[b]->n_tokens + 1, err)) < 0)
            return rc;
    }
    st = malloc((size_t)B * sizeof(void *));
    logits = malloc((size_t)B * vocab * sizeof(float));
    if (!st || !logits) {
        rc = hy_err_set(err, -ENOMEM, "seq: out of memory for a decode batch of %d", B);
        goto out;
    }
    for (int b = 0; b < B; b++)
        st[b] = seqs[b]->st;
    rc = m->be->decode(m->be_ctx, m->bm, st, tokens, B, logits, err);
    if (rc < 0)
        goto out;
    for (int b = 0; b < B; b++) {
        hy_seq *s = seqs[b];
        s->tokens[s->n_tokens++] = tokens[b];
        memcpy(s->logits, logits + (size_t)b * vocab, (size_t)vocab * sizeof(float));
        s->has_logits = true;
    }
out:
    free(st);
    free(logits);
    return rc;
}

size_t hy_seq_state_size(hy_model *m, const hy_seq *s)
{
    return m->be->state_image_size(m->be_ctx, m->bm, s->st);
}

int hy_seq_state_export(hy_model *m, const hy_seq *s, void *buf, size_t len, hy_err *err)
{
    return m->be->state_export(m->be_ctx, m->bm, s->st, buf, len, err);
}

int hy_seq_import(hy_model *m, hy_seq *s, const void *state, size_t state_len,
                  const int32_t *tokens, int64_t n_tokens, const float *logits, hy_err *err)
{
    hy_state_image_hdr h;
    int rc;

    if (!state || state_len < sizeof(h))
        return hy_err_set(err, -EINVAL, "seq: state image of %zu bytes is too short", state_len);
    memcpy(&h, state, sizeof(h));
    if (n_tokens < 0 || n_tokens > m->max_ctx)
        return hy_err_set(err, -EINVAL, "seq: %lld tokens in the history, max_ctx is %lld",
                          (long long)n_tokens, (long long)m->max_ctx);
    if (h.n_pos != n_tokens + m->arch.n_meta)
        return hy_err_set(err, -EINVAL, "seq: state image is at position %lld but the history has %lld tokens (+%d meta)",
                          (long long)h.n_pos, (long long)n_tokens, m->arch.n_meta);
    if (n_tokens > 0 && !tokens)
        return hy_err_set(err, -EINVAL, "seq: import without the token history");
    for (int64_t i = 0; i < n_tokens; i++)
        if (tokens[i] < 0 || tokens[i] >= m->arch.vocab)
            return hy_err_set(err, -EINVAL, "seq: history token %lld (id %d) is outside the vocabulary",
                              (long long)i, (int)tokens[i]);
    if ((rc = seq_reserve(s, n_tokens, err)) < 0)
        return rc;
    rc = m->be->state_import(m->be_ctx, m->bm, s->st, state, state_len, err);
    if (rc < 0)
        return rc;
    if (n_tokens)
        memcpy(s->tokens, tokens, (size_t)n_tokens * sizeof(int32_t));
    s->n_tokens = n_tokens;
    s->has_logits = logits != NULL;
    if (logits)
        memcpy(s->logits, logits, (size_t)m->arch.vocab * sizeof(float));
    return 0;
}
