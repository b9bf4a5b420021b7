/* randmodel.c: random small Hymba checkpoints (HF names/layout) and an independent float64 forward for tests. */
#include "tests/randmodel.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- deterministic random numbers (splitmix64 + Box-Muller) ---- */

static uint64_t rm_next(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static double rm_unif(uint64_t *s)
{
    return ((rm_next(s) >> 11) + 0.5) / 9007199254740992.0;
}

static double rm_normal(uint64_t *s)
{
    return sqrt(-2.0 * log(rm_unif(s))) * cos(6.283185307179586 * rm_unif(s));
}

void rm_tokens(uint64_t seed, int vocab, int32_t *ids, int n)
{
    uint64_t s = seed;
    for (int i = 0; i < n; i++)
        ids[i] = 3 + (int32_t)(rm_next(&s) % (uint64_t)(vocab - 3));
}

/* ---- storage dtypes ---- */

static uint16_t to_bf16(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

static float from_bf16(uint16_t h)
{
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* Normal floats well inside the f16 range only (the weights are small). */
static uint16_t to_f16(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    uint32_t sign = (u >> 16) & 0x8000u;
    int e = (int)((u >> 23) & 0xff) - 127 + 15;
    uint32_t man = u & 0x7fffffu;
    if (e <= 0)
        return (uint16_t)sign;                      /* flush tiny values to zero */
    uint32_t h = sign | ((uint32_t)e << 10) | (man >> 13);
    uint32_t rest = man & 0x1fffu;
    if (rest > 0x1000u || (rest == 0x1000u && (h & 1u)))
        h++;
    return (uint16_t)h;
}

static float from_f16(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t e = (h >> 10) & 0x1fu, man = h & 0x3ffu;
    uint32_t u = e ? sign | ((e + 112) << 23) | (man << 13) : sign;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* One tensor to write: values generated, rounded to the storage dtype, kept in double. */
typedef struct rm_tensor {
    char name[96];
    int ndim;
    int64_t shape[3];
    size_t n;
    double *vals;          /* kept by the rm_model */
    void *raw;             /* storage bytes */
} rm_tensor;

typedef struct rm_writer {
    rm_tensor t[RM_MAX_LAYERS * 20 + 8];
    int n;
    hy_st_dtype dt;
    uint64_t rng;
} rm_writer;

enum rm_init { RM_NORMAL, RM_NORM_W, RM_ALOG, RM_DT_BIAS, RM_D };

static double *rm_add(rm_writer *w, const char *name, int ndim, int64_t d0, int64_t d1, int64_t d2,
                      enum rm_init how, double scale)
{
    rm_tensor *t = &w->t[w->n++];
    snprintf(t->name, sizeof(t->name), "%s", name);
    t->ndim = ndim;
    t->shape[0] = d0;
    t->shape[1] = d1;
    t->shape[2] = d2;
    t->n = (size_t)d0 * (ndim > 1 ? d1 : 1) * (ndim > 2 ? d2 : 1);
    t->vals = malloc(t->n * sizeof(double));
    t->raw = malloc(t->n * 4);
    for (size_t i = 0; i < t->n; i++) {
        double v;
        switch (how) {
        case RM_NORM_W: v = 1.0 + 0.1 * rm_normal(&w->rng); break;
        case RM_D: v = 1.0 + 0.1 * rm_normal(&w->rng); break;
        case RM_ALOG: v = log((double)(i % (size_t)d1) + 1.0) + 0.1 * rm_normal(&w->rng); break;
        case RM_DT_BIAS: {
            /* inverse softplus of dt ~ logUniform[1e-3, 1e-1]: long-memory channels */
            double dt = exp(log(1e-3) + rm_unif(&w->rng) * (log(1e-1) - log(1e-3)));
            v = dt + log(-expm1(-dt));
            break;
        }
        default: v = scale * rm_normal(&w->rng); break;
        }
        float f = (float)v;
        if (w->dt == HY_ST_BF16) {
            uint16_t h = to_bf16(f);
            memcpy((uint16_t *)t->raw + i, &h, 2);
            f = from_bf16(h);
        } else if (w->dt == HY_ST_F16) {
            uint16_t h = to_f16(f);
            memcpy((uint16_t *)t->raw + i, &h, 2);
            f = from_f16(h);
        } else {
            memcpy((float *)t->raw + i, &f, 4);
        }
        t->vals[i] = f;
    }
    return t->vals;
}

static int rm_config_write(const char *dir, const rm_cfg *c)
{
    char path[4200];
    snprintf(path, sizeof(path), "%s/config.json", dir);
    FILE *f = fopen(path, "w");
    if (!f)
        return -1;
    fprintf(f, "{\n  \"model_type\": \"hymba\",\n  \"vocab_size\": %d,\n  \"hidden_size\": %d,\n"
            "  \"num_hidden_layers\": %d,\n  \"num_attention_heads\": %d,\n  \"num_key_value_heads\": %d,\n"
            "  \"attn_hidden_size\": -1,\n  \"kq_head_dim\": -1,\n  \"v_head_dim\": %d,\n"
            "  \"intermediate_size\": %d,\n  \"sliding_window\": %d,\n  \"num_memory_tokens\": %d,\n"
            "  \"memory_tokens_interspersed_every\": 0,\n  \"mamba_expand\": %d,\n  \"mamba_d_state\": %d,\n"
            "  \"mamba_d_conv\": %d,\n  \"mamba_dt_rank\": %d,\n  \"mamba_conv_bias\": true,\n"
            "  \"mamba_proj_bias\": false,\n  \"mamba_inner_layernorms\": %s,\n  \"num_mamba\": 1,\n"
            "  \"num_experts\": 1,\n  \"num_experts_per_tok\": 1,\n  \"hidden_act\": \"silu\",\n"
            "  \"mlp_hidden_act\": \"silu\",\n  \"kq_norm\": \"none\",\n  \"rope\": true,\n"
            "  \"rope_type\": \"ntk\",\n  \"rope_theta\": 10000.0,\n  \"max_position_embeddings\": 8192,\n"
            "  \"orig_max_position_embeddings\": 2048,\n  \"rms_norm_eps\": 1e-06,\n"
            "  \"tie_word_embeddings\": true,\n  \"torch_dtype\": \"%s\",\n  \"kv_reuse_every_i_layer\": -1,\n",
            c->vocab, c->hidden, c->layers, c->heads, c->kv_heads, c->expand * c->hidden / c->heads,
            c->inter, c->window, c->n_meta, c->expand, c->d_state, c->d_conv, c->dt_rank,
            c->no_inner_norms ? "false" : "true",
            c->dtype == HY_ST_BF16 ? "bfloat16" : c->dtype == HY_ST_F16 ? "float16" : "float32");
    fprintf(f, "  \"global_attn_idx\": [");
    for (int L = 0, k = 0; L < c->layers; L++)
        if (c->is_global[L])
            fprintf(f, "%s%d", k++ ? ", " : "", L);
    fprintf(f, "],\n  \"kv_reuse_group\": [");
    for (int P = 0, k = 0; P < c->layers; P++) {
        int members = 0;
        for (int L = P + 1; L < c->layers; L++)
            members += c->kv_src[L] == P;
        if (c->kv_src[P] != P || !members)
            continue;
        fprintf(f, "%s[%d", k++ ? ", " : "", P);
        for (int L = P + 1; L < c->layers; L++)
            if (c->kv_src[L] == P)
                fprintf(f, ", %d", L);
        fprintf(f, "]");
    }
    fprintf(f, "],\n  \"layer_type\": [");
    for (int L = 0; L < c->layers; L++)
        fprintf(f, "%s\"h\"", L ? ", " : "");
    fprintf(f, "]\n}\n");
    return fclose(f);
}

int rm_write(const char *dir, const rm_cfg *c, rm_model *out)
{
    rm_writer *w = calloc(1, sizeof(*w));
    int H = c->hidden, Di = c->expand * c->hidden, N = c->d_state, R = c->dt_rank;
    int hd = H / c->heads, vd = Di / c->heads;
    char name[96];
    int rc = 0;

    memset(out, 0, sizeof(*out));
    out->c = *c;
    w->dt = c->dtype;
    w->rng = c->seed;
    out->embed = rm_add(w, "model.embed_tokens.weight", 2, c->vocab, H, 0, RM_NORMAL, 1.0);
    if (c->n_meta)
        out->memory = rm_add(w, "model.memory_tokens", 2, c->n_meta, H, 0, RM_NORMAL, 1.0);
    out->final_norm = rm_add(w, "model.final_layernorm.weight", 1, H, 0, 0, RM_NORM_W, 0);
    for (int L = 0; L < c->layers; L++) {
        rm_layer *l = &out->L[L];
        bool owner = c->kv_src[L] == L;
        l->in_rows = H + 2 * Di + (owner ? c->kv_heads * (hd + vd) : 0);
#define T(s) (snprintf(name, sizeof(name), "model.layers.%d.%s", L, s), name)
        l->in_norm = rm_add(w, T("input_layernorm.weight"), 1, H, 0, 0, RM_NORM_W, 0);
        l->in_proj = rm_add(w, T("mamba.in_proj.weight"), 2, l->in_rows, H, 0, RM_NORMAL, 1.0 / sqrt(H));
        l->conv_w = rm_add(w, T("mamba.conv1d.weight"), 3, Di, 1, c->d_conv, RM_NORMAL, 0.5);
        l->conv_b = rm_add(w, T("mamba.conv1d.bias"), 1, Di, 0, 0, RM_NORMAL, 0.1);
        l->x_proj = rm_add(w, T("mamba.x_proj.0.weight"), 2, R + 2 * N, Di, 0, RM_NORMAL, 1.0 / sqrt(Di));
        if (!c->no_inner_norms) {
            l->dt_norm = rm_add(w, T("mamba.dt_layernorm.weight"), 1, R, 0, 0, RM_NORM_W, 0);
            l->B_norm = rm_add(w, T("mamba.B_layernorm.weight"), 1, N, 0, 0, RM_NORM_W, 0);
            l->C_norm = rm_add(w, T("mamba.C_layernorm.weight"), 1, N, 0, 0, RM_NORM_W, 0);
        }
        l->dt_w = rm_add(w, T("mamba.dt_proj.0.weight"), 2, Di, R, 0, RM_NORMAL, 0.5 / sqrt(R));
        l->dt_b = rm_add(w, T("mamba.dt_proj.0.bias"), 1, Di, 0, 0, RM_DT_BIAS, 0);
        l->A_log = rm_add(w, T("mamba.A_log.0"), 2, Di, N, 0, RM_ALOG, 0);
        l->D = rm_add(w, T("mamba.D.0"), 1, Di, 0, 0, RM_D, 0);
        l->avg1 = rm_add(w, T("mamba.pre_avg_layernorm1.weight"), 1, Di, 0, 0, RM_NORM_W, 0);
        l->avg2 = rm_add(w, T("mamba.pre_avg_layernorm2.weight"), 1, Di, 0, 0, RM_NORM_W, 0);
        l->out_proj = rm_add(w, T("mamba.out_proj.weight"), 2, H, Di, 0, RM_NORMAL, 1.0 / sqrt(Di));
        l->mlp_norm = rm_add(w, T("pre_moe_layernorm.weight"), 1, H, 0, 0, RM_NORM_W, 0);
        l->gate = rm_add(w, T("moe.experts.0.gate_proj.weight"), 2, c->inter, H, 0, RM_NORMAL, 1.0 / sqrt(H));
        l->up = rm_add(w, T("moe.experts.0.up_proj.weight"), 2, c->inter, H, 0, RM_NORMAL, 1.0 / sqrt(H));
        l->down = rm_add(w, T("moe.experts.0.down_proj.weight"), 2, H, c->inter, 0, RM_NORMAL, 1.0 / sqrt(c->inter));
#undef T
    }
    hy_st_out *outs = calloc((size_t)w->n, sizeof(hy_st_out));
    for (int i = 0; i < w->n; i++) {
        outs[i].name = w->t[i].name;
        outs[i].dtype = w->dt;
        outs[i].ndim = w->t[i].ndim;
        for (int d = 0; d < w->t[i].ndim; d++)
            outs[i].shape[d] = w->t[i].shape[d];
        outs[i].data = w->t[i].raw;
    }
    char path[4200];
    hy_err err = {0};
    snprintf(path, sizeof(path), "%s/model.safetensors", dir);
    if (hy_st_write(path, outs, (size_t)w->n, &err) < 0) {
        fprintf(stderr, "rm_write: %s\n", err.msg);
        rc = -1;
    }
    if (rc == 0 && rm_config_write(dir, c) < 0)
        rc = -1;
    for (int i = 0; i < w->n; i++)
        free(w->t[i].raw);
    free(outs);
    free(w);
    return rc;
}

void rm_free(rm_model *m)
{
    free(m->embed);
    free(m->memory);
    free(m->final_norm);
    for (int L = 0; L < m->c.layers; L++) {
        rm_layer *l = &m->L[L];
        double *v[] = {l->in_norm, l->in_proj, l->conv_w, l->conv_b, l->x_proj, l->dt_norm, l->B_norm, l->C_norm,
                       l->dt_w, l->dt_b, l->A_log, l->D, l->avg1, l->avg2, l->out_proj, l->mlp_norm, l->gate,
                       l->up, l->down};
        for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++)
            free(v[i]);
    }
}

/* ---- float64 reference forward, written from the spec independently of the backend ---- */

static void rmsn(double *y, const double *x, const double *w, int n)
{
    double ss = 0;
    for (int i = 0; i < n; i++)
        ss += x[i] * x[i];
    double r = 1.0 / sqrt(ss / n + 1e-6);
    for (int i = 0; i < n; i++)
        y[i] = x[i] * r * w[i];
}

/* y[o] = sum_c W[o][c] x[c] */
static void lin(double *y, const double *W, const double *x, int rows, int cols)
{
    for (int o = 0; o < rows; o++) {
        double s = 0;
        for (int c = 0; c < cols; c++)
            s += W[(size_t)o * cols + c] * x[c];
        y[o] = s;
    }
}

static double dsilu(double v)
{
    return v / (1.0 + exp(-v));
}

void rm_forward(const rm_model *m, const int32_t *ids, int T, int ref_decode_from, double *logits)
{
    const rm_cfg *c = &m->c;
    int H = c->hidden, Di = c->expand * H, N = c->d_state, R = c->dt_rank, M = c->n_meta;
    int hd = H / c->heads, vd = Di / c->heads, S = M + T, group = c->heads / c->kv_heads;
    int kw = c->kv_heads * hd, vw = c->kv_heads * vd;
    double *X = malloc((size_t)S * H * sizeof(double));
    double *hn = malloc((size_t)H * sizeof(double));
    double *U = malloc((size_t)S * (H + 2 * Di + kw + vw) * sizeof(double));
    double *K[RM_MAX_LAYERS] = {0}, *V[RM_MAX_LAYERS] = {0};
    double *att = malloc((size_t)S * Di * sizeof(double)), *ys = malloc((size_t)S * Di * sizeof(double));
    double *uc = malloc((size_t)S * Di * sizeof(double));
    double *xp = malloc((size_t)(R + 2 * N) * sizeof(double)), *dl = malloc((size_t)Di * sizeof(double));
    double *h = malloc((size_t)Di * N * sizeof(double)), *sc = malloc((size_t)S * sizeof(double));
    double *mx = malloc((size_t)Di * sizeof(double)), *t1 = malloc((size_t)Di * sizeof(double));
    double *g = malloc((size_t)c->inter * sizeof(double)), *u2 = malloc((size_t)c->inter * sizeof(double));
    double *o = malloc((size_t)H * sizeof(double));
    double base = 10000.0 * pow(2.0 * 8192 / 2048 - 1.0, (double)hd / (hd - 2));

    for (int i = 0; i < S; i++)
        memcpy(X + (size_t)i * H, i < M ? m->memory + (size_t)i * H : m->embed + (size_t)ids[i - M] * H,
               (size_t)H * sizeof(double));
    for (int L = 0; L < c->layers; L++) {
        const rm_layer *l = &m->L[L];
        bool owner = c->kv_src[L] == L;
        int rows = l->in_rows, q_w = c->heads * hd, xs_off = rows - 2 * Di, z_off = rows - Di;
        for (int i = 0; i < S; i++) {
            rmsn(hn, X + (size_t)i * H, l->in_norm, H);
            lin(U + (size_t)i * rows, l->in_proj, hn, rows, H);
            /* RoPE on q (and k) at position i, rotate-half */
            double *u = U + (size_t)i * rows;
            int nh = owner ? c->heads + c->kv_heads : c->heads;
            for (int hh = 0; hh < nh; hh++) {
                double *p = u + (size_t)hh * hd;
                for (int d = 0; d < hd / 2; d++) {
                    double f = 1.0 / pow(base, 2.0 * d / hd), an = i * f;
                    double a = p[d], b = p[d + hd / 2];
                    p[d] = a * cos(an) - b * sin(an);
                    p[d + hd / 2] = b * cos(an) + a * sin(an);
                }
            }
        }
        if (owner) {
            K[L] = malloc((size_t)S * kw * sizeof(double));
            V[L] = malloc((size_t)S * vw * sizeof(double));
            for (int i = 0; i < S; i++) {
                memcpy(K[L] + (size_t)i * kw, U + (size_t)i * rows + q_w, (size_t)kw * sizeof(double));
                memcpy(V[L] + (size_t)i * vw, U + (size_t)i * rows + q_w + kw, (size_t)vw * sizeof(double));
            }
        }
        const double *Ks = K[c->kv_src[L]], *Vs = V[c->kv_src[L]];
        for (int i = 0; i < S; i++) {
            int w = (ref_decode_from >= 0 && i - M >= ref_decode_from) ? c->window - 1 : c->window;
            for (int hh = 0; hh < c->heads; hh++) {
                int gg = hh / group;
                const double *q = U + (size_t)i * rows + (size_t)hh * hd;
                double mxs = -INFINITY, sum = 0;
                for (int j = 0; j <= i; j++) {
                    bool vis = c->is_global[L] || j < M || i - j <= w;
                    sc[j] = -INFINITY;
                    if (!vis)
                        continue;
                    double d = 0;
                    for (int e = 0; e < hd; e++)
                        d += q[e] * Ks[(size_t)j * kw + (size_t)gg * hd + e];
                    sc[j] = d / sqrt((double)hd);
                    if (sc[j] > mxs)
                        mxs = sc[j];
                }
                double *out = att + (size_t)i * Di + (size_t)hh * vd;
                for (int e = 0; e < vd; e++)
                    out[e] = 0;
                for (int j = 0; j <= i; j++)
                    sum += sc[j] == -INFINITY ? 0 : exp(sc[j] - mxs);
                for (int j = 0; j <= i; j++) {
                    if (sc[j] == -INFINITY)
                        continue;
                    double p = exp(sc[j] - mxs) / sum;
                    for (int e = 0; e < vd; e++)
                        out[e] += p * Vs[(size_t)j * vw + (size_t)gg * vd + e];
                }
            }
        }
        /* Mamba */
        for (int i = 0; i < S; i++)
            for (int ch = 0; ch < Di; ch++) {
                double a = l->conv_b[ch];
                for (int k = 0; k < c->d_conv; k++) {
                    int src = i - (c->d_conv - 1) + k;
                    if (src >= 0)
                        a += l->conv_w[(size_t)ch * c->d_conv + k] * U[(size_t)src * rows + xs_off + ch];
                }
                uc[(size_t)i * Di + ch] = dsilu(a);
            }
        memset(h, 0, (size_t)Di * N * sizeof(double));
        for (int i = 0; i < S; i++) {
            lin(xp, l->x_proj, uc + (size_t)i * Di, R + 2 * N, Di);
            if (!c->no_inner_norms) {
                rmsn(xp, xp, l->dt_norm, R);
                rmsn(xp + R, xp + R, l->B_norm, N);
                rmsn(xp + R + N, xp + R + N, l->C_norm, N);
            }
            lin(dl, l->dt_w, xp, Di, R);
            for (int ch = 0; ch < Di; ch++) {
                double v = dl[ch] + l->dt_b[ch];
                double delta = v > 20 ? v : log1p(exp(v));
                double u = uc[(size_t)i * Di + ch], y = 0;
                for (int s = 0; s < N; s++) {
                    double A = -exp(l->A_log[(size_t)ch * N + s]);
                    h[(size_t)ch * N + s] = exp(delta * A) * h[(size_t)ch * N + s] + delta * xp[R + s] * u;
                    y += xp[R + N + s] * h[(size_t)ch * N + s];
                }
                y += l->D[ch] * u;
                ys[(size_t)i * Di + ch] = y * dsilu(U[(size_t)i * rows + z_off + ch]);
            }
        }
        for (int i = 0; i < S; i++) {
            double *x = X + (size_t)i * H;
            rmsn(mx, att + (size_t)i * Di, l->avg1, Di);
            rmsn(t1, ys + (size_t)i * Di, l->avg2, Di);
            for (int ch = 0; ch < Di; ch++)
                mx[ch] = (mx[ch] + t1[ch]) / 2;
            lin(o, l->out_proj, mx, H, Di);
            for (int e = 0; e < H; e++)
                x[e] += o[e];
            rmsn(hn, x, l->mlp_norm, H);
            lin(g, l->gate, hn, c->inter, H);
            lin(u2, l->up, hn, c->inter, H);
            for (int e = 0; e < c->inter; e++)
                g[e] = dsilu(g[e]) * u2[e];
            lin(o, l->down, g, H, c->inter);
            for (int e = 0; e < H; e++)
                x[e] += o[e];
        }
    }
    for (int t = 0; t < T; t++) {
        rmsn(hn, X + (size_t)(M + t) * H, m->final_norm, H);
        lin(logits + (size_t)t * c->vocab, m->embed, hn, c->vocab, H);
    }
    for (int L = 0; L < c->layers; L++) {
        free(K[L]);
        free(V[L]);
    }
    free(X); free(hn); free(U); free(att); free(ys); free(uc); free(xp); free(dl); free(h); free(sc);
    free(mx); free(t1); free(g); free(u2); free(o);
}
