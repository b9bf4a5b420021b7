/* forward.c: the Hymba forward pass (spec §3-§4) over rows of one or more conversations, fp32 activations. */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "kernels/cpu/cpu_debug.h"
#include "kernels/cpu/cpu_internal.h"

/*
 * One call runs R rows through every layer.  The rows are grouped in segments,
 * one per conversation state: a prefill is one segment of n rows, a batched
 * decode is B segments of one row.  Every matmul runs over all R rows at once
 * (the batching); attention, conv and scan follow each row's own state.
 *
 * K/V of the step's rows live in per-step buffers (kbuf/vbuf) until every
 * layer is done, so the consumers of a kv_reuse group read the producer's K/V
 * of the same step, and a sliding-window ring is only overwritten after all
 * rows that still needed its old entries have attended.
 */

static hy_cpu_layer_hook layer_hook;
static void *layer_hook_user;

void hy_cpu_set_layer_hook(hy_cpu_layer_hook fn, void *user)
{
    layer_hook = fn;
    layer_hook_user = user;
}

/* Everything one forward step computes with; [R] = rows of the step. */
typedef struct fwd {
    cpu_ctx *ctx;
    cpu_model *m;
    const hy_arch *a;
    cpu_seg *segs;
    int n_segs;
    int R;
    bool decode;
    int *row_seg;         /* [R] segment of each row */
    int *seg_row0;        /* [n_segs] first row of each segment */
    int64_t *seg_pos0;    /* [n_segs] state n_pos at the start of the step */
    int64_t *pos;         /* [R] combined position of each row */
    float *x;             /* [R][H] residual stream */
    float *hn;            /* [R][H] normalized input of a sub-block */
    float *u;             /* [R][Lmax] in_proj output: q | (k | v) | xs | z */
    float *att;           /* [R][Di] attention output (heads concatenated) */
    float *uc;            /* [R][Di] conv + SiLU output */
    float *xp;            /* [R][Rk + 2N] x_proj output: dt | B | C */
    float *dl;            /* [R][Di] dt_proj output (delta before bias) */
    float *ys;            /* [R][Di] gated SSM output */
    float *g;             /* [R][I] MLP gate, then silu(gate)*up */
    float *up;            /* [R][I] MLP up */
    float *cosv, *sinv;   /* [R][hd/2] RoPE tables per row */
    float **kbuf, **vbuf; /* [n_kv_layers] -> [R][kvh*hd] / [R][kvh*vd], post-RoPE */
    float *scores;        /* [threads][max_keys] attention scratch */
    int64_t max_keys;
    int Lmax;
    int layer;            /* layer being computed */
} fwd;

/* ---- small vector helpers ---- */

static void rmsnorm(float *out, const float *x, const float *w, int n, float eps)
{
    double ss = 0.0;
    for (int i = 0; i < n; i++)
        ss += (double)x[i] * x[i];
    float r = (float)(1.0 / sqrt(ss / n + (double)eps));
    for (int i = 0; i < n; i++)
        out[i] = x[i] * r * (w ? w[i] : 1.0f);
}

static inline float silu(float v)
{
    return v / (1.0f + expf(-v));
}

static inline float softplus(float v)
{
    return v > 20.0f ? v : log1pf(expf(v));
}

/* ---- embedding and RoPE ---- */

static int fwd_embed(fwd *f, const int32_t *tokens, hy_err *err)
{
    const hy_arch *a = f->a;
    for (int r = 0; r < f->R; r++) {
        float *xr = f->x + (size_t)r * a->hidden;
        if (!tokens) {
            memcpy(xr, f->m->memory + (size_t)f->pos[r] * a->hidden, (size_t)a->hidden * sizeof(float));
            continue;
        }
        int32_t t = tokens[r];
        if (t < 0 || t >= a->vocab)
            return hy_err_set(err, -EINVAL, "cpu backend: token id %d at row %d is outside the vocabulary [0, %d)",
                              (int)t, r, a->vocab);
        cpu_mat_row_f32(&f->m->embed, t, xr);
    }
    return 0;
}

static void fwd_rope_tables(fwd *f)
{
    int half = f->a->head_dim / 2;
    for (int r = 0; r < f->R; r++)
        for (int d = 0; d < half; d++) {
            /* angle in double, like the float64 reference; the table is fp32 */
            double ang = (double)f->pos[r] * f->m->inv_freq[d];
            f->cosv[(size_t)r * half + d] = (float)cos(ang);
            f->sinv[(size_t)r * half + d] = (float)sin(ang);
        }
}

/* Rotate-half: pairs (d, d + hd/2) of every head of v[n_heads][hd]. */
static void rope_apply(float *v, int n_heads, int hd, const float *c, const float *s)
{
    int half = hd / 2;
    for (int h = 0; h < n_heads; h++) {
        float *p = v + (size_t)h * hd;
        for (int d = 0; d < half; d++) {
            float a = p[d], b = p[d + half];
            p[d] = a * c[d] - b * s[d];
            p[d + half] = b * c[d] + a * s[d];
        }
    }
}

/* ---- attention ---- */

/* A run of consecutive keys stored contiguously. */
typedef struct kv_span {
    const float *k;       /* [n][kvh*hd] */
    const float *v;       /* [n][kvh*vd] */
    int64_t n;
} kv_span;

#define MAX_SPANS 8

/* Adds keys [j0, j1) of KV slot s for a row of segment si to spans. */
static int spans_add(const fwd *f, int si, int s, int64_t j0, int64_t j1, kv_span *sp, int n)
{
    const hy_arch *a = f->a;
    const cpu_model *m = f->m;
    const cpu_state *st = f->segs[si].st;
    int64_t p0 = f->seg_pos0[si];
    int64_t M = a->n_meta;
    size_t kw = (size_t)a->n_kv_heads * a->head_dim, vw = (size_t)a->n_kv_heads * a->v_head_dim;

    /* meta rows held by the model (every state starts after them) */
    int64_t e = j1 < M ? j1 : M;
    if (e > p0)
        e = p0;
    if (j0 < e) {
        sp[n++] = (kv_span){m->meta_k[s] + j0 * kw, m->meta_v[s] + j0 * vw, e - j0};
        j0 = e;
    }
    /* real rows of earlier steps, in the state's cache (a ring for SWA layers) */
    e = j1 < p0 ? j1 : p0;
    while (j0 < e) {
        int64_t idx = (j0 - M) % st->cap[s];
        int64_t run = st->cap[s] - idx;
        if (run > e - j0)
            run = e - j0;
        sp[n++] = (kv_span){st->k[s] + idx * kw, st->v[s] + idx * vw, run};
        j0 += run;
    }
    /* rows of this step */
    if (j0 < j1) {
        int64_t r = f->seg_row0[si] + (j0 - p0);
        sp[n++] = (kv_span){f->kbuf[s] + r * kw, f->vbuf[s] + r * vw, j1 - j0};
    }
    return n;
}

/* Keys visible from position p (spec §3.5): all j <= p for global layers;
 * for SWA layers the meta rows plus p - j <= window. */
static int spans_for_row(const fwd *f, int r, kv_span *sp)
{
    const hy_arch *a = f->a;
    int L = f->layer;
    int s = f->m->L[L].kv_slot;
    int si = f->row_seg[r];
    int64_t p = f->pos[r];
    int n = 0;

    if (a->is_global[L])
        return spans_add(f, si, s, 0, p + 1, sp, n);
    int64_t w = a->window;
    if (f->decode && f->m->num.ref_decode_window)
        w = a->window - 1;
    int64_t lo = p - w > 0 ? p - w : 0;
    int64_t meta_end = lo < a->n_meta ? lo : a->n_meta;
    if (meta_end > 0)
        n = spans_add(f, si, s, 0, meta_end, sp, n);
    return spans_add(f, si, s, lo, p + 1, sp, n);
}

static void attn_task(void *v, int64_t begin, int64_t end, int tid)
{
    fwd *f = v;
    const hy_arch *a = f->a;
    const cpu_layer *ly = &f->m->L[f->layer];
    int hd = a->head_dim, vd = a->v_head_dim;
    int group = a->n_heads / a->n_kv_heads;
    float scale = (float)(1.0 / sqrt((double)hd));
    float *sc = f->scores + (size_t)tid * f->max_keys;
    kv_span sp[MAX_SPANS];
    (void)ly;

    for (int64_t t = begin; t < end; t++) {
        int r = (int)(t / a->n_heads), h = (int)(t % a->n_heads);
        int g = h / group;
        const float *q = f->u + (size_t)r * f->Lmax + (size_t)h * hd;
        float *o = f->att + (size_t)r * a->d_inner + (size_t)h * vd;
        int ns = spans_for_row(f, r, sp);
        size_t kw = (size_t)a->n_kv_heads * hd, vw = (size_t)a->n_kv_heads * vd;

        float mx = -INFINITY;
        int64_t nk = 0;
        for (int i = 0; i < ns; i++)
            for (int64_t j = 0; j < sp[i].n; j++) {
                float d = cpu_dot(q, sp[i].k + j * kw + (size_t)g * hd, hd) * scale;
                sc[nk++] = d;
                if (d > mx)
                    mx = d;
            }
        double sum = 0.0;
        for (int64_t j = 0; j < nk; j++) {
            sc[j] = expf(sc[j] - mx);
            sum += sc[j];
        }
        float inv = (float)(1.0 / sum);
        memset(o, 0, (size_t)vd * sizeof(float));
        nk = 0;
        for (int i = 0; i < ns; i++)
            for (int64_t j = 0; j < sp[i].n; j++) {
                float pj = sc[nk++] * inv;
                const float *vr = sp[i].v + j * vw + (size_t)g * vd;
                for (int d = 0; d < vd; d++)
                    o[d] += pj * vr[d];
            }
    }
}

/* q (and k for owners) rotated in place inside u; k/v copied to the step buffers. */
static void fwd_attention(fwd *f)
{
    const hy_arch *a = f->a;
    const cpu_layer *ly = &f->m->L[f->layer];
    int half = a->head_dim / 2;
    size_t kw = (size_t)a->n_kv_heads * a->head_dim, vw = (size_t)a->n_kv_heads * a->v_head_dim;
    int qw = a->n_heads * a->head_dim;

    for (int r = 0; r < f->R; r++) {
        float *ur = f->u + (size_t)r * f->Lmax;
        const float *c = f->cosv + (size_t)r * half, *s = f->sinv + (size_t)r * half;
        if (a->rope)
            rope_apply(ur, a->n_heads, a->head_dim, c, s);
        if (ly->owner) {
            float *k = f->kbuf[ly->kv_slot] + r * kw;
            memcpy(k, ur + qw, kw * sizeof(float));
            memcpy(f->vbuf[ly->kv_slot] + r * vw, ur + qw + kw, vw * sizeof(float));
            if (a->rope)
                rope_apply(k, a->n_kv_heads, a->head_dim, c, s);
        }
    }
    cpu_pool_run(f->ctx->pool, (int64_t)f->R * a->n_heads, 1, attn_task, f);
}

/* ---- Mamba branch ---- */

/* Causal depthwise conv + SiLU per channel; shifts the step's inputs into the conv state. */
static void conv_task(void *v, int64_t begin, int64_t end, int tid)
{
    fwd *f = v;
    const hy_arch *a = f->a;
    const cpu_layer *ly = &f->m->L[f->layer];
    int dc = a->d_conv, Di = a->d_inner;
    int xs_off = f->a->in_proj_rows[f->layer] - 2 * Di;
    float win[64];        /* d_conv taps, validated <= 64 at model_new */
    (void)tid;

    for (int si = 0; si < f->n_segs; si++) {
        cpu_state *st = f->segs[si].st;
        int n = f->segs[si].n, r0 = f->seg_row0[si];
        for (int64_t c = begin; c < end; c++) {
            float *cs = st->conv + ((size_t)f->layer * Di + c) * dc;   /* [dc] oldest first */
            const float *w = ly->conv_w + c * dc;
            /* win holds the last dc inputs; after the shift, win[dc-1] is the current row */
            memcpy(win, cs, (size_t)dc * sizeof(float));
            for (int t = 0; t < n; t++) {
                memmove(win, win + 1, (size_t)(dc - 1) * sizeof(float));
                win[dc - 1] = f->u[(size_t)(r0 + t) * f->Lmax + xs_off + c];
                float acc = ly->conv_b[c];
                for (int k = 0; k < dc; k++)
                    acc += w[k] * win[k];
                f->uc[(size_t)(r0 + t) * Di + c] = silu(acc);
            }
            memcpy(cs, win, (size_t)dc * sizeof(float));
        }
    }
}

/* Selective scan with fp32 state; y = C.h + D u, gated by silu(z). */
static void scan_task(void *v, int64_t begin, int64_t end, int tid)
{
    fwd *f = v;
    const hy_arch *a = f->a;
    const cpu_layer *ly = &f->m->L[f->layer];
    int Di = a->d_inner, N = a->d_state, Rk = a->dt_rank;
    int xpw = Rk + 2 * N;
    int z_off = a->in_proj_rows[f->layer] - Di;
    (void)tid;

    for (int si = 0; si < f->n_segs; si++) {
        cpu_state *st = f->segs[si].st;
        int n = f->segs[si].n, r0 = f->seg_row0[si];
        for (int64_t c = begin; c < end; c++) {
            float *h = st->ssm + ((size_t)f->layer * Di + c) * N;      /* [N] */
            const float *A = ly->A + c * N;
            for (int t = 0; t < n; t++) {
                size_t r = (size_t)(r0 + t);
                const float *B = f->xp + r * xpw + Rk, *C = B + N;
                float u = f->uc[r * Di + c];
                float delta = softplus(f->dl[r * Di + c] + ly->dt_bias[c]);
                float du = delta * u;
                float y = cpu_ssm_step(h, A, B, C, delta, du, N) + ly->D[c] * u;
                float z = f->u[r * f->Lmax + z_off + c];
                f->ys[r * Di + c] = y * silu(z);
            }
        }
    }
}

static void fwd_mamba(fwd *f)
{
    const hy_arch *a = f->a;
    const cpu_layer *ly = &f->m->L[f->layer];
    int Di = a->d_inner, N = a->d_state, Rk = a->dt_rank;
    int xpw = Rk + 2 * N;
    int64_t grain = Di / (4 * cpu_pool_threads(f->ctx->pool)) + 1;

    cpu_pool_run(f->ctx->pool, Di, grain, conv_task, f);
    cpu_matmul(f->ctx->pool, &ly->x_proj, f->uc, f->R, Di, f->xp, xpw, false);
    if (a->inner_norms)
        for (int r = 0; r < f->R; r++) {
            float *p = f->xp + (size_t)r * xpw;
            rmsnorm(p, p, ly->dt_norm, Rk, a->eps);
            rmsnorm(p + Rk, p + Rk, ly->B_norm, N, a->eps);
            rmsnorm(p + Rk + N, p + Rk + N, ly->C_norm, N, a->eps);
        }
    /* delta = dt . dt_proj^T, reading dt straight out of xp (row stride xpw) */
    cpu_matmul(f->ctx->pool, &ly->dt_proj, f->xp, f->R, xpw, f->dl, Di, false);
    cpu_pool_run(f->ctx->pool, Di, grain, scan_task, f);
}

/* ---- one decoder layer ---- */

static void fwd_layer(fwd *f)
{
    const hy_arch *a = f->a;
    const cpu_layer *ly = &f->m->L[f->layer];
    int H = a->hidden, Di = a->d_inner;
    cpu_pool *pool = f->ctx->pool;

    for (int r = 0; r < f->R; r++)
        rmsnorm(f->hn + (size_t)r * H, f->x + (size_t)r * H, ly->input_norm, H, a->eps);
    cpu_matmul(pool, &ly->in_proj, f->hn, f->R, H, f->u, f->Lmax, false);
    fwd_attention(f);
    fwd_mamba(f);
    /* merge: (RMSNorm(att; pre_avg1) + RMSNorm(ssm; pre_avg2)) / 2, into att */
    for (int r = 0; r < f->R; r++) {
        float *at = f->att + (size_t)r * Di, *ys = f->ys + (size_t)r * Di;
        rmsnorm(at, at, ly->pre_avg1, Di, a->eps);
        rmsnorm(ys, ys, ly->pre_avg2, Di, a->eps);
        for (int c = 0; c < Di; c++)
            at[c] = (at[c] + ys[c]) * 0.5f;
    }
    cpu_matmul(pool, &ly->out_proj, f->att, f->R, Di, f->x, H, true);
    /* gated-SiLU MLP */
    for (int r = 0; r < f->R; r++)
        rmsnorm(f->hn + (size_t)r * H, f->x + (size_t)r * H, ly->pre_mlp_norm, H, a->eps);
    cpu_matmul(pool, &ly->gate, f->hn, f->R, H, f->g, a->intermediate, false);
    cpu_matmul(pool, &ly->up, f->hn, f->R, H, f->up, a->intermediate, false);
    for (size_t i = 0; i < (size_t)f->R * a->intermediate; i++)
        f->g[i] = silu(f->g[i]) * f->up[i];
    cpu_matmul(pool, &ly->down, f->g, f->R, a->intermediate, f->x, H, true);
}

/* Moves the step's K/V into the meta store (model_new) or the states' caches. */
static void fwd_commit_kv(fwd *f)
{
    const hy_arch *a = f->a;
    cpu_model *m = f->m;
    size_t kw = (size_t)a->n_kv_heads * a->head_dim, vw = (size_t)a->n_kv_heads * a->v_head_dim;

    for (int si = 0; si < f->n_segs; si++) {
        cpu_state *st = f->segs[si].st;
        int64_t p0 = f->seg_pos0[si], p1 = p0 + f->segs[si].n;
        for (int s = 0; s < a->n_kv_layers; s++) {
            bool global = a->is_global[m->kv_layer[s]];
            for (int64_t j = p0; j < p1; j++) {
                const float *k = f->kbuf[s] + (size_t)(f->seg_row0[si] + (j - p0)) * kw;
                const float *v = f->vbuf[s] + (size_t)(f->seg_row0[si] + (j - p0)) * vw;
                float *dk, *dv;
                if (j < a->n_meta) {
                    dk = m->meta_k[s] + j * kw;
                    dv = m->meta_v[s] + j * vw;
                } else {
                    if (!global && j < p1 - st->cap[s])
                        continue;             /* already out of the window */
                    int64_t idx = (j - a->n_meta) % st->cap[s];
                    dk = st->k[s] + idx * kw;
                    dv = st->v[s] + idx * vw;
                }
                memcpy(dk, k, kw * sizeof(float));
                memcpy(dv, v, vw * sizeof(float));
            }
        }
        st->n_pos = p1;
    }
}

/* ---- the step ---- */

static void fwd_free(fwd *f)
{
    if (f->kbuf)
        for (int s = 0; s < f->a->n_kv_layers; s++) {
            free(f->kbuf[s]);
            free(f->vbuf[s]);
        }
    free(f->kbuf);
    free(f->vbuf);
    free(f->row_seg);
    free(f->seg_row0);
    free(f->seg_pos0);
    free(f->pos);
    free(f->x);
    free(f->hn);
    free(f->u);
    free(f->att);
    free(f->uc);
    free(f->xp);
    free(f->dl);
    free(f->ys);
    free(f->g);
    free(f->up);
    free(f->cosv);
    free(f->sinv);
    free(f->scores);
}

static int fwd_alloc(fwd *f, hy_err *err)
{
    const hy_arch *a = f->a;
    size_t R = (size_t)f->R;
    int nkv = a->n_kv_layers, nt = cpu_pool_threads(f->ctx->pool);
    size_t kw = (size_t)a->n_kv_heads * a->head_dim, vw = (size_t)a->n_kv_heads * a->v_head_dim;
    size_t half = (size_t)(a->head_dim / 2 > 0 ? a->head_dim / 2 : 1);

    f->Lmax = 0;
    for (int L = 0; L < a->n_layers; L++)
        if (a->in_proj_rows[L] > f->Lmax)
            f->Lmax = a->in_proj_rows[L];
    f->row_seg = malloc(R * sizeof(int));
    f->seg_row0 = malloc((size_t)f->n_segs * sizeof(int));
    f->seg_pos0 = malloc((size_t)f->n_segs * sizeof(int64_t));
    f->pos = malloc(R * sizeof(int64_t));
    f->x = malloc(R * a->hidden * sizeof(float));
    f->hn = malloc(R * a->hidden * sizeof(float));
    f->u = malloc(R * f->Lmax * sizeof(float));
    f->att = malloc(R * a->d_inner * sizeof(float));
    f->uc = malloc(R * a->d_inner * sizeof(float));
    f->xp = malloc(R * (a->dt_rank + 2 * a->d_state) * sizeof(float));
    f->dl = malloc(R * a->d_inner * sizeof(float));
    f->ys = malloc(R * a->d_inner * sizeof(float));
    f->g = malloc(R * a->intermediate * sizeof(float));
    f->up = malloc(R * a->intermediate * sizeof(float));
    f->cosv = malloc(R * half * sizeof(float));
    f->sinv = malloc(R * half * sizeof(float));
    f->kbuf = calloc((size_t)nkv + 1, sizeof(float *));
    f->vbuf = calloc((size_t)nkv + 1, sizeof(float *));
    f->scores = malloc((size_t)nt * f->max_keys * sizeof(float));
    bool ok = f->row_seg && f->seg_row0 && f->seg_pos0 && f->pos && f->x && f->hn && f->u &&
              f->att && f->uc && f->xp && f->dl && f->ys && f->g && f->up && f->cosv && f->sinv &&
              f->kbuf && f->vbuf && f->scores;
    for (int s = 0; ok && s < nkv; s++) {
        f->kbuf[s] = malloc(R * kw * sizeof(float));
        f->vbuf[s] = malloc(R * vw * sizeof(float));
        ok = f->kbuf[s] && f->vbuf[s];
    }
    if (!ok)
        return hy_err_set(err, -ENOMEM, "cpu backend: out of memory for the activations of %d rows", f->R);
    return 0;
}

int cpu_forward(cpu_ctx *ctx, cpu_model *m, cpu_seg *segs, int n_segs, const int32_t *tokens,
                bool decode, const int *logit_rows, int n_logit_rows, float *logits, hy_err *err)
{
    const hy_arch *a = &m->a;
    fwd f = {.ctx = ctx, .m = m, .a = a, .segs = segs, .n_segs = n_segs, .decode = decode};
    int rc;

    for (int si = 0; si < n_segs; si++) {
        f.R += segs[si].n;
        int64_t end = segs[si].st->n_pos + segs[si].n;
        if (end > segs[si].st->max_pos)
            return hy_err_set(err, -ENOSPC, "cpu backend: state holds at most %lld positions, step would reach %lld",
                              (long long)segs[si].st->max_pos, (long long)end);
        if (end > f.max_keys)
            f.max_keys = end;
    }
    rc = fwd_alloc(&f, err);
    if (rc < 0)
        goto out;
    for (int si = 0, r = 0; si < n_segs; si++) {
        f.seg_row0[si] = r;
        f.seg_pos0[si] = segs[si].st->n_pos;
        for (int t = 0; t < segs[si].n; t++, r++) {
            f.row_seg[r] = si;
            f.pos[r] = segs[si].st->n_pos + t;
        }
    }
    rc = fwd_embed(&f, tokens, err);
    if (rc < 0)
        goto out;
    fwd_rope_tables(&f);
    if (layer_hook)
        layer_hook(layer_hook_user, -1, f.pos, f.R, a->hidden, f.x);
    for (int L = 0; L < a->n_layers; L++) {
        f.layer = L;
        fwd_layer(&f);
        if (layer_hook)
            layer_hook(layer_hook_user, L, f.pos, f.R, a->hidden, f.x);
    }
    fwd_commit_kv(&f);
    atomic_fetch_add(&ctx->positions, (uint64_t)f.R);

    if (n_logit_rows > 0) {
        /* final norm of the requested rows only, then the (tied) lm_head */
        for (int k = 0; k < n_logit_rows; k++)
            rmsnorm(f.hn + (size_t)k * a->hidden, f.x + (size_t)logit_rows[k] * a->hidden,
                    m->final_norm, a->hidden, a->eps);
        cpu_matmul(ctx->pool, &m->lm_head, f.hn, n_logit_rows, a->hidden, logits, a->vocab, false);
    }
out:
    fwd_free(&f);
    return rc;
}
