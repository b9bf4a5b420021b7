/* cuda_forward.cu: the forward passes on the GPU: prefill (cuBLAS GEMMs + our kernels) and the graph-captured batched decode step. */
#include "kernels/cuda/cuda_internal.cuh"
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------ scratch */

/* Batches up to this size use the hand-written GEMV (and the same attention
 * splits as batch 1, so such a row decodes bit for bit as it would alone);
 * larger ones cuBLAS, which streams the weights faster once several rows
 * share them (ncu, H100: 8 rows in ~15 us per in_proj vs 43 us for our GEMV). */
#define CU_GEMV_MAX_B 2

/* Attention key splits of a decode step: enough blocks to fill the chip. */
static int attn_splits(const cu_ctx *ctx, const cu_model *m, int B)
{
    int nkv = m->a.n_kv_heads;
    int ns = (ctx->n_sm + nkv - 1) / nkv;
    if (B > CU_GEMV_MAX_B)   /* batches fill the chip by themselves: fewer, longer slices */
        ns = (2 * ctx->n_sm + nkv * B - 1) / (nkv * B);
    return ns < 1 ? 1 : ns > 16 ? 16 : ns;
}

/* Largest split count the decode GEMVs of out_proj / down use for B <= rows. */
static int part_splits_max(const cu_ctx *ctx, const cu_model *m, int rows)
{
    int mx = 1;
    for (int b = 1; b <= rows && b <= CU_GEMV_MAX_B; b++) {
        int s1 = cu_gemv_splits(m->a.hidden, m->a.d_inner, b, ctx->n_sm);
        int s2 = cu_gemv_splits(m->a.hidden, m->a.intermediate, b, ctx->n_sm);
        if (s1 > mx)
            mx = s1;
        if (s2 > mx)
            mx = s2;
    }
    return mx;
}

void cu_scratch_free(cu_ctx *ctx, cu_model *m, cu_scratch *sc)
{
    (void)m;
    if (!sc->rows)
        return;
    cudaFree(sc->x);   /* one allocation holds every device buffer */
    ctx->bytes -= sc->bytes;
    cudaFreeHost(sc->hdesc);
    memset(sc, 0, sizeof(*sc));
}

int cu_scratch_alloc(cu_ctx *ctx, cu_model *m, cu_scratch *sc, int rows, int decode, hy_err *err)
{
    const hy_arch *a = &m->a;
    size_t R = rows, H = a->hidden, Di = a->d_inner, I = a->intermediate, V = a->vocab, P = m->P;
    size_t nh = a->n_heads, dv = a->v_head_dim;
    size_t attn_rows = 0;   /* (token, split) pairs of attention partials */
    if (decode) {
        for (int b = 1; b <= rows; b++)
            if ((size_t)b * attn_splits(ctx, m, b) > attn_rows)
                attn_rows = (size_t)b * attn_splits(ctx, m, b);
    } else {
        attn_rows = R;
    }
    /* prefill logits leave in blocks of CU_LOGIT_ROWS rows (HY_LOGITS_ALL) */
    const size_t LR = decode || R < CU_LOGIT_ROWS ? R : CU_LOGIT_ROWS;
    size_t part_n = decode ? (size_t)part_splits_max(ctx, m, rows) * R * H : 0;
    size_t xpart_n = decode ? (size_t)cu_conv_xproj_slices(a->d_inner) * R * P : 0;
    size_t ws_n = decode ? 0 : cu_ssm_ws_floats(rows, a->d_inner);
    struct { void **p; size_t bytes; } parts[] = {
        { (void **)&sc->x, R * H * 2 },
        { (void **)&sc->hn, R * H * 2 },
        { (void **)&sc->u, R * m->max_rows * 2 },
        { (void **)&sc->att, R * Di * 2 },
        { (void **)&sc->uc, R * Di * 2 },
        { (void **)&sc->sout, R * Di * 2 },
        { (void **)&sc->m, R * Di * 2 },
        { (void **)&sc->delta, decode ? 0 : R * Di * 2 },
        { (void **)&sc->dt, R * a->dt_rank * 2 },
        { (void **)&sc->xp, R * P * 2 },
        { (void **)&sc->gu, R * 2 * I * 2 },
        { (void **)&sc->act, R * I * 2 },
        { (void **)&sc->y, R * H * 2 },
        { (void **)&sc->lbf, LR * V * 2 },
        { (void **)&sc->dbc, R * P * 4 },
        { (void **)&sc->part, part_n * 4 },
        { (void **)&sc->xpart, xpart_n * 4 },
        { (void **)&sc->ml, attn_rows * nh * 2 * 4 },
        { (void **)&sc->o, attn_rows * nh * dv * 4 },
        { (void **)&sc->ws, ws_n * 4 },
        { (void **)&sc->logits, LR * V * 4 },
        { (void **)&sc->plog, decode ? R * V * 4 : 0 },
        { (void **)&sc->rep, decode ? R * HY_SAMPLE_MAX_REPEAT * 4 : 0 },
        { (void **)&sc->ids, R * 4 },
        { (void **)&sc->desc, R * sizeof(cu_desc) },
    };
    size_t total = 0;
    for (size_t i = 0; i < sizeof(parts) / sizeof(parts[0]); i++)
        total += (parts[i].bytes + 255) & ~(size_t)255;
    void *base;
    char what[96];
    snprintf(what, sizeof(what), "%s scratch for %d rows", decode ? "decode" : "prefill", rows);
    int r = cu_malloc(ctx, &base, total, what, err);
    if (r < 0)
        return r;
    size_t off = 0;
    for (size_t i = 0; i < sizeof(parts) / sizeof(parts[0]); i++) {
        *parts[i].p = parts[i].bytes ? (char *)base + off : NULL;
        off += (parts[i].bytes + 255) & ~(size_t)255;
    }
    sc->x = (bf16 *)base;   /* first part: cu_scratch_free frees through it */
    sc->bytes = total;
    sc->rows = rows;
    sc->nsplit_attn_max = decode ? attn_splits(ctx, m, 1) : 1;
    size_t hbytes = R * sizeof(cu_desc) + R * 4 + R * 4 + (decode ? R * HY_SAMPLE_MAX_REPEAT * 4 : 0);
    cudaError_t e = cudaMallocHost((void **)&sc->hdesc, hbytes);
    if (e != cudaSuccess) {
        cudaFree(base);
        ctx->bytes -= total;
        memset(sc, 0, sizeof(*sc));
        return cu_fail(ctx, err, e, "cudaMallocHost (pinned staging)", __FILE__, __LINE__);
    }
    sc->hids = (int32_t *)(sc->hdesc + R);
    sc->hurand = (float *)(sc->hids + R);
    sc->hrep = decode ? (int32_t *)(sc->hurand + R) : NULL;
    return 0;
}

void cu_graphs_drop(cu_model *m)
{
    for (int i = 0; i < m->n_graphs; i++)
        if (m->graphs[i])
            cudaGraphExecDestroy(m->graphs[i]);
    if (m->graphs)
        memset(m->graphs, 0, sizeof(*m->graphs) * (size_t)m->n_graphs);
    m->graph1_mega = 0;
}

/* ------------------------------------------------------------ linear layers */

/* Y[n, N] = X[n, K] W^T on cuBLAS, bf16 in and out, fp32 accumulation. */
static int gemm(cu_ctx *ctx, const bf16 *W, int N, int K, const bf16 *X, int ldx, int n, bf16 *Y, int ldy,
                hy_err *err)
{
    const float one = 1.0f, zero = 0.0f;
    CKB(cublasGemmEx(ctx->blas, CUBLAS_OP_T, CUBLAS_OP_N, N, n, K, &one, W, CUDA_R_16BF, K, X, CUDA_R_16BF,
                     ldx, &zero, Y, CUDA_R_16BF, ldy, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
    return 0;
}

static bool use_gemv(const cu_model *m, int B) { return m->use_gemv && B <= CU_GEMV_MAX_B; }

static int gemv(cu_ctx *ctx, const bf16 *W, int N, int K, const bf16 *X, int ldx, int B, int ns, int mode,
                bf16 *out, float *part, int ldo, hy_err *err)
{
    cu_gemv g = { W, N, K, X, ldx, B, ns, mode, out, part, ldo, ctx->pdl };
    CK(cu_gemv_launch(&g, ctx->s0));
    return 0;
}

/* Decode-time linear layer whose consumer reads a cu_lin (split partials or bf16 rows). */
static int lin_part(cu_ctx *ctx, cu_model *m, const bf16 *W, int N, int K, const bf16 *X, int B, cu_lin *res,
                    hy_err *err)
{
    cu_scratch *sc = &m->dc;
    memset(res, 0, sizeof(*res));
    if (use_gemv(m, B)) {
        int ns = cu_gemv_splits(N, K, B, ctx->n_sm);
        res->part = sc->part;
        res->nsplit = ns;
        res->N = N;
        res->B = B;
        return gemv(ctx, W, N, K, X, K, B, ns, CU_GV_PART, NULL, sc->part, 0, err);
    }
    res->h = sc->y;
    res->ldh = N;
    return gemm(ctx, W, N, K, X, K, B, sc->y, N, err);
}

/* ------------------------------------------------------------ prefill */

int cu_forward_prefill(cu_ctx *ctx, cu_model *m, cu_state *st, const int32_t *ids, int n,
                       hy_logits_mode mode, float *logits, hy_err *err)
{
    const hy_arch *a = &m->a;
    cu_scratch *sc = &m->pf;
    cudaStream_t s = ctx->s0;
    /* the attention branch (RoPE/K-V store + attention: no cuBLAS call, so the
     * handle stays on s0) runs on s_att while the SSM branch runs on s0; the
     * merge waits for both */
    cudaStream_t s_att = ctx->pf_overlap ? ctx->s1 : s;
    const int H = a->hidden, Di = a->d_inner, I = a->intermediate, R = a->dt_rank, P = m->P;
    const int nh = a->n_heads, nkv = a->n_kv_heads, dq = a->head_dim, dv = a->v_head_dim;
    const float eps = a->eps, scale = 1.0f / sqrtf((float)dq);
    int r;
    if (n < 1 || n > sc->rows)
        return hy_err_set(err, -EINVAL, "cuda: prefill pass of %d rows (1..%d)", n, sc->rows);
    CK(cudaStreamSynchronize(s));   /* pinned staging may still feed an earlier copy */
    sc->hdesc[0].pos = (int)st->pos;
    sc->hdesc[0].token = 0;
    sc->hdesc[0].conv = st->conv;
    sc->hdesc[0].ssm = st->ssm;
    sc->hdesc[0].kv = st->kv_dev;
    CK(cudaMemcpyAsync(sc->desc, sc->hdesc, sizeof(cu_desc), cudaMemcpyHostToDevice, s));
    if (ids) {
        memcpy(sc->hids, ids, (size_t)n * 4);
        CK(cudaMemcpyAsync(sc->ids, sc->hids, (size_t)n * 4, cudaMemcpyHostToDevice, s));
    }
    CK(cu_embed(sc->x, ids ? m->embed : m->meta, ids ? sc->ids : NULL, NULL, n, H, s));
    CK(cu_resnorm_pf(sc->x, NULL, 0, m->L[0].in_norm, sc->hn, n, H, eps, s));
    for (int L = 0; L < a->n_layers; L++) {
        cu_layer *l = &m->L[L];
        if ((r = gemm(ctx, l->in_proj, l->rows, H, sc->hn, H, n, sc->u, l->rows, err)) < 0)
            return r;
        if (s_att != s) {
            CK(cudaEventRecord(ctx->ev_fork, s));
            CK(cudaStreamWaitEvent(s_att, ctx->ev_fork, 0));
        }
        /* attention branch: reads/writes the q, k, v columns of u, the K/V cache, att (or ml, o) */
        cu_rope_args ra = { sc->u, l->rows, n, sc->desc, 0, L, l->owner, a->rope, nh, nkv, dq, dv,
                            l->k_off, l->v_off, m->inv_freq, l->g };
        CK(cu_rope_kv_pf(&ra, s_att));
        if (m->flash) {
            CK(cu_attn_flash(sc->u, l->rows, n, sc->desc, sc->hdesc[0].pos, l->kv_src, nh, nkv, dq, dv, scale,
                             l->g, sc->att, s_att));
        } else {
            cu_attn_args aa = { sc->u, l->rows, n, sc->desc, 0, l->kv_src, nh, nkv, dq, dv, 1, scale, l->g,
                                sc->ml, sc->o };
            CK(cu_attn_split(&aa, s_att));
        }
        if (s_att != s)
            CK(cudaEventRecord(ctx->ev_join, s_att));
        /* SSM branch: reads the xs and z columns of u; conv/SSM state, uc, xp, dbc, dt, delta, ws, sout */
        CK(cu_conv_prefill(sc->u, l->rows, l->xs_off, n, sc->desc, L, l->conv_w, l->conv_b, Di, a->d_conv,
                           sc->uc, s));
        if ((r = gemm(ctx, l->x_proj, P, Di, sc->uc, Di, n, sc->xp, P, err)) < 0)
            return r;
        cu_lin xl = { NULL, 0, 0, 0, sc->xp, P };
        CK(cu_dbc_norm(&xl, R, a->d_state, l->dt_norm, l->B_norm, l->C_norm, a->inner_norms, eps, sc->dbc, sc->dt,
                       n, s));
        if ((r = gemm(ctx, l->dt_w, Di, R, sc->dt, R, n, sc->delta, Di, err)) < 0)
            return r;
        cu_ssm_args sa = { sc->dbc, R, l->dt_w, l->dt_b, l->A, l->D, sc->uc, sc->u, l->rows, l->z_off, sc->delta,
                           sc->desc, L, Di, n, sc->sout, sc->ws };
        CK(cu_ssm_prefill(&sa, s));
        if (s_att != s)
            CK(cudaStreamWaitEvent(s, ctx->ev_join, 0));
        if (m->flash)
            CK(cu_preavg_pf(sc->att, sc->sout, l->avg1, l->avg2, eps, sc->m, n, nh, dv, s));
        else
            CK(cu_preavg(NULL, sc->ml, sc->o, 1, nh, dv, sc->sout, l->avg1, l->avg2, eps, sc->m, n, s));
        if ((r = gemm(ctx, l->out_proj, H, Di, sc->m, Di, n, sc->y, H, err)) < 0)
            return r;
        CK(cu_resnorm_pf(sc->x, sc->y, H, l->mlp_norm, sc->hn, n, H, eps, s));
        if ((r = gemm(ctx, l->gu, 2 * I, H, sc->hn, H, n, sc->gu, 2 * I, err)) < 0)
            return r;
        CK(cu_gated_act_pf(sc->gu, sc->act, n, I, s));
        if ((r = gemm(ctx, l->down, H, I, sc->act, I, n, sc->y, H, err)) < 0)
            return r;
        const bf16 *next = L + 1 < a->n_layers ? m->L[L + 1].in_norm : m->final_norm;
        CK(cu_resnorm_pf(sc->x, sc->y, H, next, sc->hn, n, H, eps, s));
    }
    if (mode != HY_LOGITS_NONE) {
        /* stream order keeps a block's copy ahead of the next block's overwrite */
        int r0 = mode == HY_LOGITS_ALL ? 0 : n - 1;
        for (int done = r0; done < n; done += CU_LOGIT_ROWS) {
            int nr = n - done < CU_LOGIT_ROWS ? n - done : CU_LOGIT_ROWS;
            if ((r = gemm(ctx, m->lm_head, a->vocab, H, sc->hn + (size_t)done * H, H, nr, sc->lbf, a->vocab,
                          err)) < 0)
                return r;
            CK(cu_bf16_to_f32(sc->lbf, sc->logits, (size_t)nr * a->vocab, s));
            CK(cudaMemcpyAsync(logits + (size_t)(done - r0) * a->vocab, sc->logits, (size_t)nr * a->vocab * 4,
                               cudaMemcpyDeviceToHost, s));
        }
    }
    CK(cudaStreamSynchronize(s));
    return 0;
}

/* ------------------------------------------------------------ decode */

/* One decode step for B sequences, as launched into the capture of s0:
 * everything reads positions, tokens and state pointers from sc->desc. */
static int decode_body(cu_ctx *ctx, cu_model *m, int B, hy_err *err)
{
    const hy_arch *a = &m->a;
    cu_scratch *sc = &m->dc;
    cudaStream_t s0 = ctx->s0, s1 = ctx->s1;
    const int H = a->hidden, Di = a->d_inner, I = a->intermediate, R = a->dt_rank, P = m->P;
    const int nh = a->n_heads, nkv = a->n_kv_heads, dq = a->head_dim, dv = a->v_head_dim;
    const float eps = a->eps, scale = 1.0f / sqrtf((float)dq);
    const int nsa = attn_splits(ctx, m, B), nslice = cu_conv_xproj_slices(Di);
    const bool small = use_gemv(m, B);
    int r;

    CK(cu_embed(sc->x, m->embed, NULL, sc->desc, B, H, s0));
    CK(cu_resnorm(sc->x, NULL, m->L[0].in_norm, sc->hn, B, H, eps, s0));
    for (int L = 0; L < a->n_layers; L++) {
        cu_layer *l = &m->L[L];
        if (small)
            r = gemv(ctx, l->in_proj, l->rows, H, sc->hn, H, B, 1, CU_GV_BF16, sc->u, NULL, l->rows, err);
        else
            r = gemm(ctx, l->in_proj, l->rows, H, sc->hn, H, B, sc->u, l->rows, err);
        if (r < 0)
            return r;
        /* attention on s0, the SSM branch on s1, joined before the merge */
        CK(cudaEventRecord(ctx->ev_fork, s0));
        CK(cudaStreamWaitEvent(s1, ctx->ev_fork, 0));
        cu_rope_args ra = { sc->u, l->rows, B, sc->desc, 1, L, l->owner, a->rope, nh, nkv, dq, dv,
                            l->k_off, l->v_off, m->inv_freq, l->gd };
        CK(cu_rope_kv(&ra, s0));
        cu_attn_args aa = { sc->u, l->rows, B, sc->desc, 1, l->kv_src, nh, nkv, dq, dv, nsa, scale, l->gd,
                            sc->ml, sc->o };
        CK(cu_attn_split(&aa, s0));
        CK(cu_conv_xproj_decode(sc->u, l->rows, l->xs_off, B, sc->desc, L, l->conv_w, l->conv_b, Di, a->d_conv,
                                l->x_proj, P, sc->uc, sc->xpart, nslice, s1));
        cu_lin xl = { sc->xpart, nslice, P, B, NULL, 0 };
        CK(cu_dbc_norm(&xl, R, a->d_state, l->dt_norm, l->B_norm, l->C_norm, a->inner_norms, eps, sc->dbc, NULL,
                       B, s1));
        cu_ssm_args sa = { sc->dbc, R, l->dt_w, l->dt_b, l->A, l->D, sc->uc, sc->u, l->rows, l->z_off, NULL,
                           sc->desc, L, Di, B, sc->sout, NULL };
        CK(cu_ssm_decode(&sa, s1));
        CK(cudaEventRecord(ctx->ev_join, s1));
        CK(cudaStreamWaitEvent(s0, ctx->ev_join, 0));
        CK(cu_preavg(NULL, sc->ml, sc->o, nsa, nh, dv, sc->sout, l->avg1, l->avg2, eps, sc->m, B, s0));
        cu_lin yl;
        if ((r = lin_part(ctx, m, l->out_proj, H, Di, sc->m, B, &yl, err)) < 0)
            return r;
        CK(cu_resnorm(sc->x, &yl, l->mlp_norm, sc->hn, B, H, eps, s0));
        if (small) {
            r = gemv(ctx, l->gu, 2 * I, H, sc->hn, H, B, 1, CU_GV_GATED, sc->act, NULL, I, err);
        } else {
            r = gemm(ctx, l->gu, 2 * I, H, sc->hn, H, B, sc->gu, 2 * I, err);
            if (r == 0)
                CK(cu_gated_act(sc->gu, sc->act, B, I, s0));
        }
        if (r < 0)
            return r;
        if ((r = lin_part(ctx, m, l->down, H, I, sc->act, B, &yl, err)) < 0)
            return r;
        const bf16 *next = L + 1 < a->n_layers ? m->L[L + 1].in_norm : m->final_norm;
        CK(cu_resnorm(sc->x, &yl, next, sc->hn, B, H, eps, s0));
    }
    if (small)
        return gemv(ctx, m->lm_head, a->vocab, H, sc->hn, H, B, 1, CU_GV_F32, NULL, sc->logits, a->vocab, err);
    if ((r = gemm(ctx, m->lm_head, a->vocab, H, sc->hn, H, B, sc->lbf, a->vocab, err)) < 0)
        return r;
    CK(cu_bf16_to_f32(sc->lbf, sc->logits, (size_t)B * a->vocab, s0));
    return 0;
}

static int decode_capture(cu_ctx *ctx, cu_model *m, int B, hy_err *err)
{
    cudaGraph_t g;
    int mega = B == 1 ? cu_mega_usable(ctx, m, err) : 0;
    if (mega < 0)
        return mega;
    CK(cudaStreamBeginCapture(ctx->s0, cudaStreamCaptureModeThreadLocal));
    /* the persistent kernel reads its descriptor once per block, from the pinned staging itself (mapped: one
     * PCIe round trip at its start instead of a copy before it); the separate kernels read it many times */
    int r = mega ? cu_mega_launch(ctx, m, m->dc.hdesc, m->dc.logits, err) : decode_body(ctx, m, B, err);
    cudaError_t e = cudaStreamEndCapture(ctx->s0, &g);
    if (r < 0) {
        if (e == cudaSuccess)
            cudaGraphDestroy(g);
        cudaGetLastError();
        return r;
    }
    CK(e);
    e = cudaGraphInstantiate(&m->graphs[B], g, 0);
    cudaGraphDestroy(g);
    if (e != cudaSuccess) {
        m->graphs[B] = NULL;
        return cu_fail(ctx, err, e, "cudaGraphInstantiate (decode step)", __FILE__, __LINE__);
    }
    if (B == 1)
        m->graph1_mega = mega;
    if (ctx->verbose)
        fprintf(stderr, "hymba: cuda: captured the decode step for batch %d\n", B);
    return 0;
}

/* Room for B rows: the scratch grows to the next power of two; graphs are
 * captured against the buffers, so growing drops them. */
static int decode_reserve(cu_ctx *ctx, cu_model *m, int B, hy_err *err)
{
    if (B <= m->dc.rows)
        return 0;
    int rows = 8;
    while (rows < B)
        rows *= 2;
    CK(cudaStreamSynchronize(ctx->s0));
    cu_graphs_drop(m);
    free(m->graphs);
    m->graphs = NULL;
    m->n_graphs = 0;
    cu_scratch_free(ctx, m, &m->dc);
    int r = cu_scratch_alloc(ctx, m, &m->dc, rows, 1, err);
    if (r < 0)
        return r;
    m->graphs = (cudaGraphExec_t *)calloc((size_t)rows + 1, sizeof(cudaGraphExec_t));
    if (!m->graphs)
        return hy_err_set(err, -ENOMEM, "out of memory");
    m->n_graphs = rows + 1;
    return 0;
}

int cu_forward_decode(cu_ctx *ctx, cu_model *m, cu_state **sts, const int32_t *tokens, int B,
                      const hy_sample_params *sp, const float *u, int32_t *ids, float *logits, hy_err *err)
{
    int r;
    if ((r = decode_reserve(ctx, m, B, err)) < 0)
        return r;
    cu_scratch *sc = &m->dc;
    cudaStream_t s = ctx->s0;
    CK(cudaStreamSynchronize(s));
    for (int b = 0; b < B; b++) {
        sc->hdesc[b].pos = (int)sts[b]->pos;
        sc->hdesc[b].token = tokens[b];
        sc->hdesc[b].conv = sts[b]->conv;
        sc->hdesc[b].ssm = sts[b]->ssm;
        sc->hdesc[b].kv = sts[b]->kv_dev;
    }
    if (!m->graphs[B] && (r = decode_capture(ctx, m, B, err)) < 0)
        return r;
    if (!(B == 1 && m->graph1_mega))   /* the persistent kernel reads hdesc itself */
        CK(cudaMemcpyAsync(sc->desc, sc->hdesc, (size_t)B * sizeof(cu_desc), cudaMemcpyHostToDevice, s));
    CK(cudaGraphLaunch(m->graphs[B], s));
    if (sp) {
        for (int b = 0; b < B; b++)
            sc->hurand[b] = u ? u[b] : 0.0f;
        const float *lg = sc->logits;
        if (sp->repeat_penalty > 0.0f && sp->repeat_penalty != 1.0f && sp->repeat_n > 0) {
            if (sp->repeat_n > HY_SAMPLE_MAX_REPEAT || !sp->repeat_ids)
                return hy_err_set(err, -EINVAL, "cuda: repetition penalty over %d ids (at most %d)", sp->repeat_n,
                                  HY_SAMPLE_MAX_REPEAT);
            memcpy(sc->hrep, sp->repeat_ids, (size_t)B * sp->repeat_n * 4);
            CK(cudaMemcpyAsync(sc->rep, sc->hrep, (size_t)B * sp->repeat_n * 4, cudaMemcpyHostToDevice, s));
            CK(cu_repeat_penalty(sc->logits, m->a.vocab, B, sc->rep, sp->repeat_n, sp->repeat_penalty, sc->plog,
                                 s));
            lg = sc->plog;
        }
        /* the sampler reads its uniforms from and writes the chosen ids to the pinned staging (mapped): two
         * copies fewer per step (RESULTS step 99) */
        cu_sample_args sa = { lg, m->a.vocab, m->a.vocab, B, sp->temperature, sp->top_p, sp->min_p,
                              sp->top_k, sc->hurand, sc->hids };
        CK(cu_sample(&sa, s));
    }
    if (logits)
        CK(cudaMemcpyAsync(logits, sc->logits, (size_t)B * m->a.vocab * 4, cudaMemcpyDeviceToHost, s));
    CK(cudaStreamSynchronize(s));
    if (B == 1)
        cu_mega_trace_report(ctx, m);
    if (sp)
        memcpy(ids, sc->hids, (size_t)B * 4);
    return 0;
}

/* ------------------------------------------------------------ ceilings */

__global__ void k_fill(bf16 *x, size_t n, uint32_t seed)
{
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n)
        return;
    uint32_t h = (uint32_t)i * 2654435761u ^ seed;
    h ^= h >> 15;
    h *= 2246822519u;
    h ^= h >> 13;
    x[i] = __float2bfloat16(((float)(h & 0xffff) / 65536.0f - 0.5f));
}

int cu_measure_ceilings(cu_ctx *ctx, double *copy_gbps, double *mm_tflops, hy_err *err)
{
    const size_t copy_bytes = (size_t)1 << 30;
    const int MM = 8192;
    const size_t mm_n = (size_t)MM * MM;
    void *a = NULL, *b = NULL;
    bf16 *A = NULL, *Bm = NULL, *C = NULL;
    cudaEvent_t e0, e1;
    int r = 0;
    float ms = 0.0f;
    cudaStream_t s = ctx->s0;
    CK(cudaEventCreate(&e0));
    CK(cudaEventCreate(&e1));
    if ((r = cu_malloc(ctx, &a, copy_bytes, "the copy benchmark", err)) < 0 ||
        (r = cu_malloc(ctx, &b, copy_bytes, "the copy benchmark", err)) < 0)
        goto out;
#define CE(call) do { cudaError_t x_ = (call); if (x_ != cudaSuccess) { \
        r = cu_fail(ctx, err, x_, #call, __FILE__, __LINE__); goto out; } } while (0)
    CE(cudaMemsetAsync(a, 1, copy_bytes, s));
    for (int i = 0; i < 3; i++)
        CE(cudaMemcpyAsync(b, a, copy_bytes, cudaMemcpyDeviceToDevice, s));
    CE(cudaEventRecord(e0, s));
    for (int i = 0; i < 10; i++)
        CE(cudaMemcpyAsync(i & 1 ? a : b, i & 1 ? b : a, copy_bytes, cudaMemcpyDeviceToDevice, s));
    CE(cudaEventRecord(e1, s));
    CE(cudaEventSynchronize(e1));
    CE(cudaEventElapsedTime(&ms, e0, e1));
    *copy_gbps = 2.0 * copy_bytes * 10 / (ms * 1e-3) / 1e9;
    cu_free(ctx, a, copy_bytes);
    cu_free(ctx, b, copy_bytes);
    a = b = NULL;
    if ((r = cu_malloc(ctx, (void **)&A, mm_n * 2, "the GEMM benchmark", err)) < 0 ||
        (r = cu_malloc(ctx, (void **)&Bm, mm_n * 2, "the GEMM benchmark", err)) < 0 ||
        (r = cu_malloc(ctx, (void **)&C, mm_n * 2, "the GEMM benchmark", err)) < 0)
        goto out;
    k_fill<<<(unsigned)((mm_n + 255) / 256), 256, 0, s>>>(A, mm_n, 1u);
    k_fill<<<(unsigned)((mm_n + 255) / 256), 256, 0, s>>>(Bm, mm_n, 2u);
    CE(cudaGetLastError());
    for (int i = 0; i < 13; i++) {
        if (i == 3)
            CE(cudaEventRecord(e0, s));
        if ((r = gemm(ctx, A, MM, MM, Bm, MM, MM, C, MM, err)) < 0)
            goto out;
    }
    CE(cudaEventRecord(e1, s));
    CE(cudaEventSynchronize(e1));
    CE(cudaEventElapsedTime(&ms, e0, e1));
    *mm_tflops = 2.0 * MM * (double)MM * MM * 10 / (ms * 1e-3) / 1e12;
#undef CE
out:
    cu_free(ctx, a, copy_bytes);
    cu_free(ctx, b, copy_bytes);
    cu_free(ctx, A, mm_n * 2);
    cu_free(ctx, Bm, mm_n * 2);
    cu_free(ctx, C, mm_n * 2);
    cudaEventDestroy(e0);
    cudaEventDestroy(e1);
    return r;
}
