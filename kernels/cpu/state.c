/* state.c: per-conversation state memory (conv/SSM state, K/V caches) of the CPU backend. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include "kernels/cpu/cpu_internal.h"

static int64_t kv_width_k(const hy_arch *a)
{
    return (int64_t)a->n_kv_heads * a->head_dim;
}

static int64_t kv_width_v(const hy_arch *a)
{
    return (int64_t)a->n_kv_heads * a->v_head_dim;
}

cpu_state *cpu_state_alloc(const cpu_model *m, int64_t max_pos, hy_err *err)
{
    const hy_arch *a = &m->a;
    int nkv = a->n_kv_layers;
    cpu_state *st = calloc(1, sizeof(*st));
    size_t ssm_n = (size_t)a->n_layers * a->d_inner * a->d_state;
    size_t conv_n = (size_t)a->n_layers * a->d_inner * a->d_conv;

    if (!st)
        goto oom;
    st->max_pos = max_pos;
    st->conv = calloc(conv_n, sizeof(float));
    st->ssm = calloc(ssm_n, sizeof(float));
    st->k = calloc((size_t)nkv + 1, sizeof(float *));
    st->v = calloc((size_t)nkv + 1, sizeof(float *));
    st->cap = calloc((size_t)nkv + 1, sizeof(int64_t));
    if (!st->conv || !st->ssm || !st->k || !st->v || !st->cap)
        goto oom;
    st->bytes = (conv_n + ssm_n) * sizeof(float);
    for (int s = 0; s < nkv; s++) {
        int L = m->kv_layer[s];
        int64_t real = max_pos - a->n_meta;
        int64_t cap = a->is_global[L] ? real : (int64_t)a->window + 1;
        if (cap > real)
            cap = real;
        if (cap < 1)
            cap = 1;
        st->cap[s] = cap;
        /* malloc, not calloc: pages of a large global cache are only touched as positions arrive */
        st->k[s] = malloc((size_t)cap * kv_width_k(a) * sizeof(float));
        st->v[s] = malloc((size_t)cap * kv_width_v(a) * sizeof(float));
        if (!st->k[s] || !st->v[s])
            goto oom;
        st->bytes += (size_t)cap * (kv_width_k(a) + kv_width_v(a)) * sizeof(float);
    }
    return st;
oom:
    cpu_state_release(st);
    hy_err_set(err, -ENOMEM, "cpu backend: out of memory for a state of %lld positions",
               (long long)max_pos);
    return NULL;
}

void cpu_state_release(cpu_state *st)
{
    if (!st)
        return;
    if (st->k)
        for (int s = 0; st->k[s] || (st->v && st->v[s]); s++) {
            free(st->k[s]);
            free(st->v[s]);
        }
    free(st->k);
    free(st->v);
    free(st->cap);
    free(st->conv);
    free(st->ssm);
    free(st);
}

int64_t cpu_state_kv_index(const cpu_model *m, const cpu_state *st, int s, int64_t j)
{
    const hy_arch *a = &m->a;
    int64_t e = j - a->n_meta;
    if (e < 0 || j >= st->n_pos)
        return -1;
    if (a->is_global[m->kv_layer[s]])
        return e < st->cap[s] ? e : -1;
    if (j < st->n_pos - (a->window + 1))
        return -1;
    return e % st->cap[s];
}

/* dst must hold src->n_pos positions (checked by the caller). */
void cpu_state_assign(const cpu_model *m, cpu_state *dst, const cpu_state *src)
{
    const hy_arch *a = &m->a;
    size_t ssm_n = (size_t)a->n_layers * a->d_inner * a->d_state;
    size_t conv_n = (size_t)a->n_layers * a->d_inner * a->d_conv;
    size_t kw = (size_t)kv_width_k(a), vw = (size_t)kv_width_v(a);

    memcpy(dst->conv, src->conv, conv_n * sizeof(float));
    memcpy(dst->ssm, src->ssm, ssm_n * sizeof(float));
    dst->n_pos = src->n_pos;
    for (int s = 0; s < a->n_kv_layers; s++) {
        for (int64_t j = a->n_meta; j < src->n_pos; j++) {
            int64_t is = cpu_state_kv_index(m, src, s, j);
            int64_t id = cpu_state_kv_index(m, dst, s, j);
            if (is < 0 || id < 0)
                continue;
            memcpy(dst->k[s] + id * kw, src->k[s] + is * kw, kw * sizeof(float));
            memcpy(dst->v[s] + id * vw, src->v[s] + is * vw, vw * sizeof(float));
        }
    }
}
