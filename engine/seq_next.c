/* seq_next.c: decode + next-token choice in one call (on the device when the backend samples there), and device ceilings. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include "engine/model_internal.h"

/* The next 64 random bits of r (xoshiro256**, the generator of sampler.c). */
static uint64_t next_bits(hy_rng *r)
{
    uint64_t *s = r->s, x = s[1] * 5, out = ((x << 7) | (x >> 57)) * 9, t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = (s[3] << 45) | (s[3] >> 19);
    return out;
}

static int append_token(hy_model *m, hy_seq *s, int32_t tok, hy_err *err)
{
    if (s->n_tokens + 1 > m->max_ctx)
        return hy_err_set(err, -ENOSPC, "conversation would hold %lld tokens, more than max_ctx %lld",
                          (long long)(s->n_tokens + 1), (long long)m->max_ctx);
    if (s->n_tokens + 1 > s->cap) {
        int64_t cap = s->cap ? s->cap * 2 : 256;
        int32_t *t = realloc(s->tokens, (size_t)cap * sizeof(int32_t));
        if (!t)
            return hy_err_set(err, -ENOMEM, "seq: out of memory for %lld token ids", (long long)cap);
        s->tokens = t;
        s->cap = cap;
    }
    s->tokens[s->n_tokens++] = tok;
    return 0;
}

static bool penalty_on(const hy_sampling *p)
{
    return p->repeat_penalty > 0.0f && p->repeat_penalty != 1.0f && p->repeat_last_n != 0;
}

/* The device sampler covers temperature, top-k, top-p, min-p and a repetition
 * penalty over at most HY_SAMPLE_MAX_REPEAT recent tokens. */
static bool device_can_sample(const hy_model *m, const hy_sampling *p)
{
    return m->be->decode_sample &&
           (!penalty_on(p) || (p->repeat_last_n > 0 && p->repeat_last_n <= HY_SAMPLE_MAX_REPEAT));
}

/* Row b of the penalty window: the last n ids of seqs[b]'s history followed by
 * tokens[b] (the history the host sampler sees after the decode), -1 before. */
static void penalty_window(hy_seq *const *seqs, const int32_t *tokens, int b, int n, int32_t *out)
{
    const hy_seq *s = seqs[b];
    for (int i = 0; i < n; i++) {
        int64_t h = s->n_tokens + 1 - n + i;   /* index into the history + tokens[b] */
        out[i] = h < 0 ? -1 : h == s->n_tokens ? tokens[b] : s->tokens[h];
    }
}

int hy_seq_decode_next(hy_model *m, hy_seq **seqs, const int32_t *tokens, int B, const hy_sampling *p,
                       hy_rng *rng, bool keep_logits, int32_t *next, hy_err *err)
{
    int rc;
    if (B < 1 || !seqs || !tokens || !p || !next)
        return hy_err_set(err, -EINVAL, "seq: decode_next of batch %d", B);
    if (!device_can_sample(m, p)) {
        if ((rc = hy_seq_decode_batch(m, seqs, tokens, B, err)) < 0)
            return rc;
        for (int b = 0; b < B; b++)
            next[b] = hy_sample(p, rng, hy_seq_logits(seqs[b]), m->arch.vocab, seqs[b]->tokens,
                                seqs[b]->n_tokens);
        return 0;
    }
    const int rn = penalty_on(p) ? p->repeat_last_n : 0;
    void **st = malloc((size_t)B * sizeof(void *));
    float *u = malloc((size_t)B * sizeof(float));
    float *logits = keep_logits ? malloc((size_t)B * m->arch.vocab * sizeof(float)) : NULL;
    int32_t *rep = rn ? malloc((size_t)B * rn * sizeof(int32_t)) : NULL;
    if (!st || !u || (keep_logits && !logits) || (rn && !rep)) {
        rc = hy_err_set(err, -ENOMEM, "seq: out of memory for a decode batch of %d", B);
        goto out;
    }
    for (int b = 0; b < B; b++) {
        if (seqs[b]->n_tokens + 1 > m->max_ctx) {
            rc = hy_err_set(err, -ENOSPC, "conversation %d is full (max_ctx %lld)", b, (long long)m->max_ctx);
            goto out;
        }
        st[b] = seqs[b]->st;
        u[b] = (float)((next_bits(rng) >> 40) * 0x1p-24);
        if (rn)
            penalty_window(seqs, tokens, b, rn, rep + (size_t)b * rn);
    }
    hy_sample_params sp = { p->temperature, p->top_k, p->top_p, p->min_p, p->repeat_penalty, rn, rep };
    rc = m->be->decode_sample(m->be_ctx, m->bm, st, tokens, B, &sp, u, next, logits, err);
    for (int b = 0; b < B && rc == 0; b++) {
        hy_seq *s = seqs[b];
        /* the backend state advanced: the history must follow even if growing it fails */
        rc = append_token(m, s, tokens[b], err);
        s->has_logits = keep_logits;
        if (keep_logits)
            memcpy(s->logits, logits + (size_t)b * m->arch.vocab, (size_t)m->arch.vocab * sizeof(float));
    }
out:
    free(st);
    free(u);
    free(logits);
    free(rep);
    return rc;
}

int hy_model_device_ceilings(hy_model *m, double *copy_gbps, double *mm_tflops, hy_err *err)
{
    if (!m->be->ceilings)
        return hy_err_set(err, -ENOTSUP, "backend %s measures no device ceilings", m->be->name);
    return m->be->ceilings(m->be_ctx, copy_gbps, mm_tflops, err);
}
