/* state_image.h: the backend-independent byte layout of one conversation state. */
#ifndef HYMBA_KERNELS_STATE_IMAGE_H
#define HYMBA_KERNELS_STATE_IMAGE_H

/*
 * Every backend exports and imports exactly this layout (little-endian, no
 * padding between parts), so a state saved from the CPU loads on the GPU and
 * back.  The session checkpoint (engine) wraps it in its own sections and CRCs.
 *
 *   hy_state_image_hdr
 *   for L in 0..n_layers-1:
 *       conv  f32 [d_inner][d_conv]   last d_conv pre-conv inputs xs, column
 *                                     k = position n_pos-d_conv+k (oldest first)
 *       ssm   f32 [d_inner][d_state]  h after position n_pos-1
 *   for each KV-owning layer L, ascending:
 *       u32   n_kept                  real (non-meta) positions kept:
 *                                     global: n_pos - n_meta
 *                                     SWA:    min(n_pos - n_meta, window + 1)
 *       K     kv_dtype [n_kept][n_kv_heads][head_dim]   post-RoPE, oldest first,
 *                                     entry e = position n_pos - n_kept + e
 *       V     kv_dtype [n_kept][n_kv_heads][v_head_dim]
 *
 * Meta-token K/V are not stored: they are constants of the model.
 * kv_dtype is HY_DT_F32 (CPU) or HY_DT_BF16 (CUDA); importers convert.
 */

#include <stdint.h>
#include <stddef.h>
#include "kernels/backend.h"

#define HY_STATE_IMAGE_MAGIC 0x49535948u   /* "HYSI" */
#define HY_STATE_IMAGE_VERSION 1u

typedef struct hy_state_image_hdr {
    uint32_t magic;
    uint32_t version;
    uint32_t n_layers;
    uint32_t d_inner;
    uint32_t d_state;
    uint32_t d_conv;
    uint32_t n_kv_layers;
    uint32_t n_kv_heads;
    uint32_t head_dim;
    uint32_t v_head_dim;
    uint32_t kv_dtype;            /* hy_dtype */
    uint32_t n_meta;
    uint32_t window;
    uint32_t reserved;
    int64_t n_pos;                /* combined positions processed, >= n_meta */
} hy_state_image_hdr;

/* Real positions an owner layer keeps after n_pos combined positions. */
static inline int64_t hy_state_image_kept(const hy_arch *a, int layer, int64_t n_pos)
{
    int64_t real = n_pos - a->n_meta;
    if (real < 0)
        real = 0;
    if (!a->is_global[layer] && real > (int64_t)a->window + 1)
        real = (int64_t)a->window + 1;
    return real;
}

/* Total image bytes for a state of n_pos positions with K/V stored as kv_dt. */
static inline size_t hy_state_image_bytes(const hy_arch *a, int64_t n_pos, hy_dtype kv_dt)
{
    size_t kvs = (kv_dt == HY_DT_F32) ? 4 : 2;
    size_t n = sizeof(hy_state_image_hdr);
    n += (size_t)a->n_layers * (size_t)a->d_inner * (size_t)(a->d_conv + a->d_state) * 4;
    for (int L = 0; L < a->n_layers; L++) {
        if (a->kv_src[L] != L)
            continue;
        size_t kept = (size_t)hy_state_image_kept(a, L, n_pos);
        n += 4 + kept * (size_t)a->n_kv_heads * (size_t)(a->head_dim + a->v_head_dim) * kvs;
    }
    return n;
}

#endif
