/* randmodel.h: random Hymba checkpoints of small odd shapes for the engine tests, plus a float64 reference forward. */
#ifndef HYMBA_TESTS_RANDMODEL_H
#define HYMBA_TESTS_RANDMODEL_H

#include <stdint.h>
#include "engine/safetensors.h"

#define RM_MAX_LAYERS 16

typedef struct rm_cfg {
    int vocab, hidden, layers, heads, kv_heads, inter;
    int window, n_meta, d_state, d_conv, dt_rank, expand;
    int kv_src[RM_MAX_LAYERS];     /* producer of each layer's K/V (== L for owners) */
    int is_global[RM_MAX_LAYERS];
    hy_st_dtype dtype;             /* HY_ST_F32, HY_ST_BF16 or HY_ST_F16 */
    int no_inner_norms;            /* 1: mamba_inner_layernorms false (no RMSNorms of dt, B, C) */
    uint64_t seed;
} rm_cfg;

/* The weights as the checkpoint holds them, widened to double (after the dtype's rounding). */
typedef struct rm_layer {
    double *in_norm, *in_proj, *conv_w, *conv_b, *x_proj, *dt_norm, *B_norm, *C_norm;
    double *dt_w, *dt_b, *A_log, *D, *avg1, *avg2, *out_proj, *mlp_norm, *gate, *up, *down;
    int in_rows;
} rm_layer;

typedef struct rm_model {
    rm_cfg c;
    double *embed, *memory, *final_norm;
    rm_layer L[RM_MAX_LAYERS];
} rm_model;

/* Writes dir/config.json and dir/model.safetensors; keeps the weights in *out. */
int rm_write(const char *dir, const rm_cfg *c, rm_model *out);
void rm_free(rm_model *m);

/* Float64 full-sequence forward (spec §3) over the meta rows and ids[T]:
 * logits[T][vocab] of the real rows.  ref_decode_from >= 0: rows at real
 * index >= it use the reference decode window (W keys) in SWA layers. */
void rm_forward(const rm_model *m, const int32_t *ids, int T, int ref_decode_from, double *logits);

/* Deterministic token ids in [3, vocab). */
void rm_tokens(uint64_t seed, int vocab, int32_t *ids, int n);

#endif
