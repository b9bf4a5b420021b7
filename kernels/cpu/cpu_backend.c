/* cpu_backend.c: the CPU backend's operation table: model binding, meta snapshot, states, prefill/decode, images. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "kernels/cpu/cpu_debug.h"
#include "kernels/cpu/cpu_internal.h"
#include "kernels/state_image.h"

/* Conv taps the per-channel window buffer of forward.c holds. */
#define CPU_MAX_CONV 64

void hy_cpu_force_portable(bool on)
{
    cpu_matmul_force_portable(on);
}

const char *hy_cpu_kernel_isa(void)
{
    return cpu_matmul_isa();
}

/* ---- context ---- */

static int cpu_init(const hy_backend_opts *opts, void **out, hy_err *err)
{
    cpu_ctx *c = calloc(1, sizeof(*c));
    int threads = opts ? opts->threads : 0;
    int rc;

    if (!c)
        return hy_err_set(err, -ENOMEM, "cpu backend: out of memory");
    if (threads <= 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        threads = n > 0 ? (int)n : 1;
    }
    rc = cpu_pool_new(threads, &c->pool, err);
    if (rc < 0) {
        free(c);
        return rc;
    }
    c->verbose = opts && opts->verbose;
    if (c->verbose)
        fprintf(stderr, "cpu backend: %d threads, %s kernels\n", threads, cpu_matmul_isa());
    *out = c;
    return 0;
}

static void cpu_fini(void *ctx)
{
    cpu_ctx *c = ctx;
    if (!c)
        return;
    cpu_pool_free(c->pool);
    free(c);
}

/* ---- weight binding ---- */

static int64_t tensor_elems(const hy_tensor *t)
{
    int64_t n = 1;
    for (int i = 0; i < t->ndim; i++)
        n *= t->shape[i];
    return n;
}

static const char *tname(const hy_tensor *t, const char *what)
{
    return t->name ? t->name : what;
}

static int check_dtype(const hy_tensor *t, const char *what, hy_err *err)
{
    if (t->dt != HY_DT_F32 && t->dt != HY_DT_BF16 && t->dt != HY_DT_F16)
        return hy_err_set(err, -EINVAL, "cpu backend: tensor %s has unsupported dtype %d", tname(t, what), (int)t->dt);
    return 0;
}

static int bind_mat(cpu_mat *out, const hy_tensor *t, int rows, int cols, const char *what, hy_err *err)
{
    if (!t->data)
        return hy_err_set(err, -EINVAL, "cpu backend: weight %s is missing", what);
    if (check_dtype(t, what, err) < 0)
        return err ? err->code : -EINVAL;
    if (t->ndim < 2 || t->shape[0] != rows || tensor_elems(t) != (int64_t)rows * cols)
        return hy_err_set(err, -EINVAL, "cpu backend: weight %s has %lld elements (first dim %lld), expected [%d, %d]",
                          tname(t, what), (long long)tensor_elems(t), (long long)(t->ndim ? t->shape[0] : 0),
                          rows, cols);
    out->data = t->data;
    out->dt = t->dt;
    out->rows = rows;
    out->cols = cols;
    return 0;
}

/* A small tensor converted to a new fp32 array of n values; absent + optional -> fill. */
static int vec_f32(cpu_model *m, float **out, const hy_tensor *t, int64_t n, bool optional, float fill,
                   const char *what, hy_err *err)
{
    float *v = malloc((size_t)(n > 0 ? n : 1) * sizeof(float));
    if (!v)
        return hy_err_set(err, -ENOMEM, "cpu backend: out of memory converting %s", what);
    m->bytes += (size_t)n * sizeof(float);
    *out = v;
    if (!t || !t->data) {
        if (!optional)
            return hy_err_set(err, -EINVAL, "cpu backend: weight %s is missing", what);
        for (int64_t i = 0; i < n; i++)
            v[i] = fill;
        return 0;
    }
    if (check_dtype(t, what, err) < 0)
        return err ? err->code : -EINVAL;
    if (tensor_elems(t) != n)
        return hy_err_set(err, -EINVAL, "cpu backend: weight %s has %lld elements, expected %lld",
                          tname(t, what), (long long)tensor_elems(t), (long long)n);
    cpu_mat row = {.data = t->data, .dt = t->dt, .rows = 1, .cols = (int)n};
    cpu_mat_row_f32(&row, 0, v);
    return 0;
}

static int arch_check(const hy_arch *a, hy_err *err)
{
    if (a->vocab <= 0 || a->hidden <= 0 || a->n_layers <= 0 || a->n_layers > HY_MAX_LAYERS ||
        a->n_heads <= 0 || a->n_kv_heads <= 0 || a->n_heads % a->n_kv_heads || a->head_dim <= 0 ||
        a->head_dim % 2 || a->v_head_dim <= 0 || a->d_inner != a->n_heads * a->v_head_dim ||
        a->d_state <= 0 || a->d_conv <= 0 || a->d_conv > CPU_MAX_CONV || a->dt_rank <= 0 ||
        a->intermediate <= 0 || a->n_meta < 0 || a->window < 1)
        return hy_err_set(err, -EINVAL, "cpu backend: unsupported model shape (vocab %d hidden %d layers %d heads %d/%d "
                          "head_dim %d v_head_dim %d d_inner %d d_state %d d_conv %d dt_rank %d window %d)",
                          a->vocab, a->hidden, a->n_layers, a->n_heads, a->n_kv_heads, a->head_dim, a->v_head_dim,
                          a->d_inner, a->d_state, a->d_conv, a->dt_rank, a->window);
    int nkv = 0;
    for (int L = 0; L < a->n_layers; L++) {
        int src = a->kv_src[L];
        if (src < 0 || src > L || a->kv_src[src] != src)
            return hy_err_set(err, -EINVAL, "cpu backend: layer %d reads K/V of layer %d, which is not an earlier owner",
                              L, src);
        if (a->is_global[src] != a->is_global[L])
            return hy_err_set(err, -EINVAL, "cpu backend: layer %d and its K/V producer %d differ in global/sliding attention",
                              L, src);
        int want = a->n_heads * a->head_dim + 2 * a->d_inner +
                   (src == L ? a->n_kv_heads * (a->head_dim + a->v_head_dim) : 0);
        if (a->in_proj_rows[L] != want)
            return hy_err_set(err, -EINVAL, "cpu backend: layer %d in_proj has %d rows, expected %d",
                              L, a->in_proj_rows[L], want);
        nkv += src == L;
    }
    if (nkv != a->n_kv_layers)
        return hy_err_set(err, -EINVAL, "cpu backend: %d KV-owning layers, arch says %d", nkv, a->n_kv_layers);
    return 0;
}

static void cpu_model_free(void *ctx, void *bmv)
{
    cpu_ctx *c = ctx;
    cpu_model *m = bmv;
    if (!m)
        return;
    if (m->L)
        for (int L = 0; L < m->a.n_layers; L++) {
            cpu_layer *ly = &m->L[L];
            free(ly->input_norm);
            free(ly->conv_w);
            free(ly->conv_b);
            free(ly->dt_norm);
            free(ly->B_norm);
            free(ly->C_norm);
            free(ly->dt_bias);
            free(ly->A);
            free(ly->D);
            free(ly->pre_avg1);
            free(ly->pre_avg2);
            free(ly->pre_mlp_norm);
        }
    if (m->meta_k)
        for (int s = 0; s < m->a.n_kv_layers; s++) {
            free(m->meta_k[s]);
            free(m->meta_v[s]);
        }
    free(m->meta_k);
    free(m->meta_v);
    cpu_state_release(m->snap);
    if (c)
        atomic_fetch_sub(&c->bytes, m->bytes);
    free(m->L);
    free(m->memory);
    free(m->final_norm);
    free(m->inv_freq);
    free(m);
}

static int bind_layer(cpu_model *m, int L, const hy_layer_weights *w, hy_err *err)
{
    const hy_arch *a = &m->a;
    cpu_layer *ly = &m->L[L];
    int H = a->hidden, Di = a->d_inner, N = a->d_state, Rk = a->dt_rank;
    int rc;
    char what[64];

#define NAME(s) (snprintf(what, sizeof(what), "layers.%d.%s", L, s), what)
    if ((rc = bind_mat(&ly->in_proj, &w->in_proj, a->in_proj_rows[L], H, NAME("in_proj"), err)) < 0 ||
        (rc = bind_mat(&ly->x_proj, &w->x_proj, Rk + 2 * N, Di, NAME("x_proj"), err)) < 0 ||
        (rc = bind_mat(&ly->dt_proj, &w->dt_proj_w, Di, Rk, NAME("dt_proj.weight"), err)) < 0 ||
        (rc = bind_mat(&ly->out_proj, &w->out_proj, H, Di, NAME("out_proj"), err)) < 0 ||
        (rc = bind_mat(&ly->gate, &w->gate, a->intermediate, H, NAME("gate_proj"), err)) < 0 ||
        (rc = bind_mat(&ly->up, &w->up, a->intermediate, H, NAME("up_proj"), err)) < 0 ||
        (rc = bind_mat(&ly->down, &w->down, H, a->intermediate, NAME("down_proj"), err)) < 0)
        return rc;
    if ((rc = vec_f32(m, &ly->input_norm, &w->input_norm, H, false, 0, NAME("input_layernorm"), err)) < 0 ||
        (rc = vec_f32(m, &ly->conv_w, &w->conv_w, (int64_t)Di * a->d_conv, false, 0, NAME("conv1d.weight"), err)) < 0 ||
        (rc = vec_f32(m, &ly->conv_b, a->conv_bias ? &w->conv_b : NULL, Di, !a->conv_bias, 0.0f,
                      NAME("conv1d.bias"), err)) < 0 ||
        (rc = vec_f32(m, &ly->dt_bias, &w->dt_proj_b, Di, false, 0, NAME("dt_proj.bias"), err)) < 0 ||
        (rc = vec_f32(m, &ly->A, &w->A_log, (int64_t)Di * N, false, 0, NAME("A_log"), err)) < 0 ||
        (rc = vec_f32(m, &ly->D, &w->D, Di, false, 0, NAME("D"), err)) < 0 ||
        (rc = vec_f32(m, &ly->pre_avg1, &w->pre_avg1, Di, false, 0, NAME("pre_avg_layernorm1"), err)) < 0 ||
        (rc = vec_f32(m, &ly->pre_avg2, &w->pre_avg2, Di, false, 0, NAME("pre_avg_layernorm2"), err)) < 0 ||
        (rc = vec_f32(m, &ly->pre_mlp_norm, &w->pre_mlp_norm, H, false, 0, NAME("pre_moe_layernorm"), err)) < 0)
        return rc;
    if (a->inner_norms &&
        ((rc = vec_f32(m, &ly->dt_norm, &w->dt_norm, Rk, false, 0, NAME("dt_layernorm"), err)) < 0 ||
         (rc = vec_f32(m, &ly->B_norm, &w->B_norm, N, false, 0, NAME("B_layernorm"), err)) < 0 ||
         (rc = vec_f32(m, &ly->C_norm, &w->C_norm, N, false, 0, NAME("C_layernorm"), err)) < 0))
        return rc;
#undef NAME
    for (int64_t i = 0; i < (int64_t)Di * N; i++)
        ly->A[i] = -expf(ly->A[i]);
    ly->owner = a->kv_src[L] == L;
    return 0;
}

/* RoPE inv_freq in double (the float64 reference); optionally bf16-rounded (spec §5.3). */
static int rope_init(cpu_model *m, hy_err *err)
{
    int half = m->a.head_dim / 2;
    m->inv_freq = malloc((size_t)(half > 0 ? half : 1) * sizeof(double));
    if (!m->inv_freq)
        return hy_err_set(err, -ENOMEM, "cpu backend: out of memory");
    for (int d = 0; d < half; d++) {
        double f = 1.0 / pow(m->a.rope_base, (2.0 * d) / m->a.head_dim);
        if (m->num.rope_bf16_freq)
            f = cpu_bf16_to_f32(cpu_f32_to_bf16((float)f));
        m->inv_freq[d] = f;
    }
    return 0;
}

/* Runs the M meta rows once; their K/V go to meta_k/meta_v, the states to snap. */
static int meta_snapshot(cpu_ctx *c, cpu_model *m, hy_err *err)
{
    const hy_arch *a = &m->a;
    size_t kw = (size_t)a->n_kv_heads * a->head_dim, vw = (size_t)a->n_kv_heads * a->v_head_dim;

    m->meta_k = calloc((size_t)a->n_kv_layers + 1, sizeof(float *));
    m->meta_v = calloc((size_t)a->n_kv_layers + 1, sizeof(float *));
    if (!m->meta_k || !m->meta_v)
        return hy_err_set(err, -ENOMEM, "cpu backend: out of memory");
    for (int s = 0; s < a->n_kv_layers; s++) {
        m->meta_k[s] = malloc(((size_t)a->n_meta * kw + 1) * sizeof(float));
        m->meta_v[s] = malloc(((size_t)a->n_meta * vw + 1) * sizeof(float));
        if (!m->meta_k[s] || !m->meta_v[s])
            return hy_err_set(err, -ENOMEM, "cpu backend: out of memory for the meta K/V");
        m->bytes += (size_t)a->n_meta * (kw + vw) * sizeof(float);
    }
    m->snap = cpu_state_alloc(m, a->n_meta + 1, err);
    if (!m->snap)
        return err ? err->code : -ENOMEM;
    m->bytes += m->snap->bytes;
    if (a->n_meta == 0)
        return 0;
    cpu_seg seg = {.st = m->snap, .n = a->n_meta};
    return cpu_forward(c, m, &seg, 1, NULL, false, NULL, 0, NULL, err);
}

static int cpu_model_new(void *ctx, const hy_arch *arch, const hy_numerics *num, const hy_weights *w,
                         void **out, hy_err *err)
{
    cpu_ctx *c = ctx;
    cpu_model *m;
    int rc;

    if ((rc = arch_check(arch, err)) < 0)
        return rc;
    m = calloc(1, sizeof(*m));
    if (!m)
        return hy_err_set(err, -ENOMEM, "cpu backend: out of memory");
    m->a = *arch;
    if (num)
        m->num = *num;
    m->L = calloc((size_t)arch->n_layers, sizeof(cpu_layer));
    if (!m->L) {
        rc = hy_err_set(err, -ENOMEM, "cpu backend: out of memory");
        goto fail;
    }
    int s = 0;
    for (int L = 0; L < arch->n_layers; L++)
        if (arch->kv_src[L] == L)
            m->kv_layer[s++] = L;
    for (int L = 0; L < arch->n_layers; L++)
        for (int k = 0; k < s; k++)
            if (m->kv_layer[k] == arch->kv_src[L])
                m->L[L].kv_slot = k;

    const hy_tensor *lm = w->lm_head.data ? &w->lm_head : &w->embed;
    if ((rc = bind_mat(&m->embed, &w->embed, arch->vocab, arch->hidden, "embed_tokens", err)) < 0 ||
        (rc = bind_mat(&m->lm_head, lm, arch->vocab, arch->hidden, "lm_head", err)) < 0 ||
        (rc = vec_f32(m, &m->final_norm, &w->final_norm, arch->hidden, false, 0, "final_layernorm", err)) < 0 ||
        (rc = vec_f32(m, &m->memory, arch->n_meta ? &w->memory_tokens : NULL, (int64_t)arch->n_meta * arch->hidden,
                      true, 0.0f, "memory_tokens", err)) < 0)
        goto fail;
    if (!w->layers) {
        rc = hy_err_set(err, -EINVAL, "cpu backend: no layer weights");
        goto fail;
    }
    for (int L = 0; L < arch->n_layers; L++)
        if ((rc = bind_layer(m, L, &w->layers[L], err)) < 0)
            goto fail;
    if ((rc = rope_init(m, err)) < 0 || (rc = meta_snapshot(c, m, err)) < 0)
        goto fail;
    atomic_fetch_add(&c->bytes, m->bytes);
    *out = m;
    return 0;
fail:
    cpu_model_free(NULL, m);
    return rc;
}

/* ---- states ---- */

static int cpu_state_new(void *ctx, void *bmv, int64_t max_pos, void **out, hy_err *err)
{
    cpu_ctx *c = ctx;
    cpu_model *m = bmv;
    if (max_pos <= m->a.n_meta)
        return hy_err_set(err, -EINVAL, "cpu backend: state of %lld positions cannot hold a token after %d meta tokens",
                          (long long)max_pos, m->a.n_meta);
    cpu_state *st = cpu_state_alloc(m, max_pos, err);
    if (!st)
        return err ? err->code : -ENOMEM;
    cpu_state_assign(m, st, m->snap);
    atomic_fetch_add(&c->bytes, st->bytes);
    *out = st;
    return 0;
}

static void cpu_state_free(void *ctx, void *stv)
{
    cpu_ctx *c = ctx;
    cpu_state *st = stv;
    if (!st)
        return;
    atomic_fetch_sub(&c->bytes, st->bytes);
    cpu_state_release(st);
}

static void cpu_state_reset(void *ctx, void *bmv, void *stv)
{
    (void)ctx;
    cpu_state_assign(bmv, stv, ((cpu_model *)bmv)->snap);
}

static int cpu_state_copy(void *ctx, void *bmv, void *dstv, const void *srcv, hy_err *err)
{
    cpu_state *dst = dstv;
    const cpu_state *src = srcv;
    (void)ctx;
    if (dst == src)
        return 0;
    if (src->n_pos > dst->max_pos)
        return hy_err_set(err, -ENOSPC, "cpu backend: copy of a state at %lld positions into one of at most %lld",
                          (long long)src->n_pos, (long long)dst->max_pos);
    cpu_state_assign(bmv, dst, src);
    return 0;
}

static int64_t cpu_state_pos(void *ctx, const void *st)
{
    (void)ctx;
    return ((const cpu_state *)st)->n_pos;
}

/* ---- forward entry points ---- */

static int cpu_prefill(void *ctx, void *bmv, void *stv, const int32_t *tokens, int n,
                       hy_logits_mode mode, float *logits, hy_err *err)
{
    cpu_ctx *c = ctx;
    cpu_model *m = bmv;
    cpu_state *st = stv;
    int rc;

    if (n < 1 || !tokens)
        return hy_err_set(err, -EINVAL, "cpu backend: prefill of %d tokens", n);
    if (mode != HY_LOGITS_NONE && !logits)
        return hy_err_set(err, -EINVAL, "cpu backend: prefill asked for logits without a buffer");
    int *rows = NULL, n_rows = 0;
    if (mode == HY_LOGITS_ALL || mode == HY_LOGITS_LAST) {
        n_rows = mode == HY_LOGITS_ALL ? n : 1;
        rows = malloc((size_t)n_rows * sizeof(int));
        if (!rows)
            return hy_err_set(err, -ENOMEM, "cpu backend: out of memory");
        for (int k = 0; k < n_rows; k++)
            rows[k] = mode == HY_LOGITS_ALL ? k : n - 1;
    }
    cpu_seg seg = {.st = st, .n = n};
    rc = cpu_forward(c, m, &seg, 1, tokens, false, rows, n_rows, logits, err);
    free(rows);
    if (rc == 0)
        atomic_fetch_add(&c->prefill_calls, 1);
    return rc;
}

static int cpu_decode(void *ctx, void *bmv, void **stv, const int32_t *tokens, int B,
                      float *logits, hy_err *err)
{
    cpu_ctx *c = ctx;
    int rc;

    if (B < 1 || !stv || !tokens || !logits)
        return hy_err_set(err, -EINVAL, "cpu backend: decode of a batch of %d", B);
    cpu_seg *segs = calloc((size_t)B, sizeof(cpu_seg));
    int *rows = calloc((size_t)B, sizeof(int));
    if (!segs || !rows) {
        free(segs);
        free(rows);
        return hy_err_set(err, -ENOMEM, "cpu backend: out of memory");
    }
    rc = 0;
    for (int b = 0; b < B && rc == 0; b++) {
        segs[b] = (cpu_seg){.st = stv[b], .n = 1};
        rows[b] = b;
        if (!stv[b])
            rc = hy_err_set(err, -EINVAL, "cpu backend: decode batch entry %d has no state", b);
        for (int k = 0; k < b && rc == 0; k++)
            if (stv[k] == stv[b])
                rc = hy_err_set(err, -EINVAL, "cpu backend: decode batch entries %d and %d are the same state", k, b);
    }
    if (rc == 0)
        rc = cpu_forward(c, bmv, segs, B, tokens, true, rows, B, logits, err);
    free(segs);
    free(rows);
    if (rc == 0)
        atomic_fetch_add(&c->decode_calls, 1);
    return rc;
}

/* ---- canonical state image (kernels/state_image.h) ---- */

static size_t cpu_image_size(void *ctx, void *bmv, const void *stv)
{
    (void)ctx;
    return hy_state_image_bytes(&((cpu_model *)bmv)->a, ((const cpu_state *)stv)->n_pos, HY_DT_F32);
}

static void image_hdr_fill(const hy_arch *a, int64_t n_pos, hy_dtype kv_dt, hy_state_image_hdr *h)
{
    memset(h, 0, sizeof(*h));
    h->magic = HY_STATE_IMAGE_MAGIC;
    h->version = HY_STATE_IMAGE_VERSION;
    h->n_layers = (uint32_t)a->n_layers;
    h->d_inner = (uint32_t)a->d_inner;
    h->d_state = (uint32_t)a->d_state;
    h->d_conv = (uint32_t)a->d_conv;
    h->n_kv_layers = (uint32_t)a->n_kv_layers;
    h->n_kv_heads = (uint32_t)a->n_kv_heads;
    h->head_dim = (uint32_t)a->head_dim;
    h->v_head_dim = (uint32_t)a->v_head_dim;
    h->kv_dtype = (uint32_t)kv_dt;
    h->n_meta = (uint32_t)a->n_meta;
    h->window = (uint32_t)a->window;
    h->n_pos = n_pos;
}

static int cpu_export(void *ctx, void *bmv, const void *stv, void *buf, size_t len, hy_err *err)
{
    cpu_model *m = bmv;
    const cpu_state *st = stv;
    const hy_arch *a = &m->a;
    size_t need = cpu_image_size(ctx, bmv, stv);
    size_t kw = (size_t)a->n_kv_heads * a->head_dim, vw = (size_t)a->n_kv_heads * a->v_head_dim;
    uint8_t *p = buf;

    if (!buf || len < need)
        return hy_err_set(err, -ENOBUFS, "cpu backend: state image needs %zu bytes, buffer has %zu", need, len);
    hy_state_image_hdr h;
    image_hdr_fill(a, st->n_pos, HY_DT_F32, &h);
    memcpy(p, &h, sizeof(h));
    p += sizeof(h);
    for (int L = 0; L < a->n_layers; L++) {
        size_t cn = (size_t)a->d_inner * a->d_conv * sizeof(float), sn = (size_t)a->d_inner * a->d_state * sizeof(float);
        memcpy(p, st->conv + (size_t)L * a->d_inner * a->d_conv, cn);
        p += cn;
        memcpy(p, st->ssm + (size_t)L * a->d_inner * a->d_state, sn);
        p += sn;
    }
    for (int s = 0; s < a->n_kv_layers; s++) {
        int L = m->kv_layer[s];
        uint32_t kept = (uint32_t)hy_state_image_kept(a, L, st->n_pos);
        memcpy(p, &kept, 4);
        p += 4;
        for (int pass = 0; pass < 2; pass++) {
            size_t w = pass ? vw : kw;
            for (uint32_t e = 0; e < kept; e++) {
                int64_t j = st->n_pos - kept + e;
                int64_t idx = cpu_state_kv_index(m, st, s, j);
                const float *src = (pass ? st->v[s] : st->k[s]) + (size_t)idx * w;
                memcpy(p, src, w * sizeof(float));
                p += w * sizeof(float);
            }
        }
    }
    return 0;
}

/* Reads n values of dtype dt (F32 or BF16) from p into out. */
static const uint8_t *image_read(const uint8_t *p, hy_dtype dt, float *out, size_t n)
{
    if (dt == HY_DT_F32) {
        memcpy(out, p, n * sizeof(float));
        return p + n * sizeof(float);
    }
    for (size_t i = 0; i < n; i++) {
        uint16_t h;
        memcpy(&h, p + 2 * i, 2);
        out[i] = dt == HY_DT_BF16 ? cpu_bf16_to_f32(h) : cpu_f16_to_f32(h);
    }
    return p + 2 * n;
}

static int cpu_import(void *ctx, void *bmv, void *stv, const void *buf, size_t len, hy_err *err)
{
    cpu_model *m = bmv;
    cpu_state *st = stv;
    const hy_arch *a = &m->a;
    size_t kw = (size_t)a->n_kv_heads * a->head_dim, vw = (size_t)a->n_kv_heads * a->v_head_dim;
    hy_state_image_hdr h, want;
    const uint8_t *p = buf;
    (void)ctx;

    if (!buf || len < sizeof(h))
        return hy_err_set(err, -EINVAL, "cpu backend: state image of %zu bytes is shorter than its header", len);
    memcpy(&h, p, sizeof(h));
    if (h.magic != HY_STATE_IMAGE_MAGIC || h.version != HY_STATE_IMAGE_VERSION)
        return hy_err_set(err, -EINVAL, "cpu backend: not a state image (magic %08x version %u)", h.magic, h.version);
    if (h.kv_dtype != HY_DT_F32 && h.kv_dtype != HY_DT_BF16 && h.kv_dtype != HY_DT_F16)
        return hy_err_set(err, -EINVAL, "cpu backend: state image kv_dtype %u unsupported", h.kv_dtype);
    image_hdr_fill(a, h.n_pos, (hy_dtype)h.kv_dtype, &want);
    if (memcmp(&h, &want, sizeof(h)) != 0)
        return hy_err_set(err, -EINVAL, "cpu backend: state image shape (layers %u d_inner %u d_state %u d_conv %u "
                          "kv layers %u kv heads %u head_dim %u v_head_dim %u meta %u window %u) does not match the model",
                          h.n_layers, h.d_inner, h.d_state, h.d_conv, h.n_kv_layers, h.n_kv_heads, h.head_dim,
                          h.v_head_dim, h.n_meta, h.window);
    if (h.n_pos < a->n_meta || h.n_pos > st->max_pos)
        return hy_err_set(err, -EINVAL, "cpu backend: state image at position %lld, state holds %d..%lld",
                          (long long)h.n_pos, a->n_meta, (long long)st->max_pos);
    size_t need = hy_state_image_bytes(a, h.n_pos, (hy_dtype)h.kv_dtype);
    if (len != need)
        return hy_err_set(err, -EINVAL, "cpu backend: state image is %zu bytes, expected %zu for %lld positions",
                          len, need, (long long)h.n_pos);
    /* check the kept counts before touching the state */
    const uint8_t *q = p + sizeof(h) + (size_t)a->n_layers * a->d_inner * (a->d_conv + a->d_state) * sizeof(float);
    size_t es = hy_dtype_size((hy_dtype)h.kv_dtype);
    for (int s = 0; s < a->n_kv_layers; s++) {
        uint32_t kept;
        memcpy(&kept, q, 4);
        if (kept != (uint32_t)hy_state_image_kept(a, m->kv_layer[s], h.n_pos))
            return hy_err_set(err, -EINVAL, "cpu backend: state image keeps %u positions in layer %d, expected %lld",
                              kept, m->kv_layer[s], (long long)hy_state_image_kept(a, m->kv_layer[s], h.n_pos));
        q += 4 + (size_t)kept * (kw + vw) * es;
    }
    p += sizeof(h);
    for (int L = 0; L < a->n_layers; L++) {
        p = image_read(p, HY_DT_F32, st->conv + (size_t)L * a->d_inner * a->d_conv, (size_t)a->d_inner * a->d_conv);
        p = image_read(p, HY_DT_F32, st->ssm + (size_t)L * a->d_inner * a->d_state, (size_t)a->d_inner * a->d_state);
    }
    st->n_pos = h.n_pos;
    for (int s = 0; s < a->n_kv_layers; s++) {
        uint32_t kept;
        memcpy(&kept, p, 4);
        p += 4;
        for (int pass = 0; pass < 2; pass++) {
            size_t w = pass ? vw : kw;
            for (uint32_t e = 0; e < kept; e++) {
                int64_t idx = cpu_state_kv_index(m, st, s, st->n_pos - kept + e);
                p = image_read(p, (hy_dtype)h.kv_dtype, (pass ? st->v[s] : st->k[s]) + (size_t)idx * w, w);
            }
        }
    }
    return 0;
}

static void cpu_stats(void *ctx, hy_backend_stats *out)
{
    cpu_ctx *c = ctx;
    memset(out, 0, sizeof(*out));
    out->positions = atomic_load(&c->positions);
    out->prefill_calls = atomic_load(&c->prefill_calls);
    out->decode_calls = atomic_load(&c->decode_calls);
    out->bytes_device = atomic_load(&c->bytes);
}

const hy_backend_ops hy_backend_cpu = {
    .name = "cpu",
    .init = cpu_init,
    .fini = cpu_fini,
    .model_new = cpu_model_new,
    .model_free = cpu_model_free,
    .state_new = cpu_state_new,
    .state_free = cpu_state_free,
    .state_reset = cpu_state_reset,
    .state_copy = cpu_state_copy,
    .state_pos = cpu_state_pos,
    .prefill = cpu_prefill,
    .decode = cpu_decode,
    .state_image_size = cpu_image_size,
    .state_export = cpu_export,
    .state_import = cpu_import,
    .stats = cpu_stats,
};
