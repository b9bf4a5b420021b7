/* cpu_internal.h: data structures and internal entry points shared by the CPU backend's files. */
#ifndef HYMBA_KERNELS_CPU_INTERNAL_H
#define HYMBA_KERNELS_CPU_INTERNAL_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "kernels/backend.h"

/* ---- thread pool (pool.c) ---- */

/* Work on items [begin, end) as thread tid (0 = the caller). */
typedef void (*cpu_task_fn)(void *arg, int64_t begin, int64_t end, int tid);
typedef struct cpu_pool cpu_pool;

int cpu_pool_new(int threads, cpu_pool **out, hy_err *err);
void cpu_pool_free(cpu_pool *p);
int cpu_pool_threads(const cpu_pool *p);
/* Runs fn over [0, n) in chunks of grain items that threads claim one after
 * another (dynamic schedule); returns when every item is done. */
void cpu_pool_run(cpu_pool *p, int64_t n, int64_t grain, cpu_task_fn fn, void *arg);
/* guided: chunks shrink from a share of the remaining items down to grain. */
void cpu_pool_run_sched(cpu_pool *p, int64_t n, int64_t grain, bool guided, cpu_task_fn fn, void *arg);

/* ---- matrices in their stored dtype and the matmul kernels (matmul.c) ---- */

/* A weight matrix [rows][cols], row-major, in the checkpoint's dtype (mmap). */
typedef struct cpu_mat {
    const void *data;
    hy_dtype dt;
    int rows, cols;
} cpu_mat;

float cpu_bf16_to_f32(uint16_t h);
float cpu_f16_to_f32(uint16_t h);
uint16_t cpu_f32_to_bf16(float f);        /* round to nearest even */
/* Row r of W converted to fp32: out[cols]. */
void cpu_mat_row_f32(const cpu_mat *W, int64_t r, float *out);

/* y[i][o] (+)= sum_c x[i][c] * W[o][c] for i < n, o < W->rows.
 * x: [n][ldx] fp32, y: [n][ldy] fp32.  accumulate: add into y instead of storing.
 * Threaded over the output rows; each weight row is read once per tile of positions. */
void cpu_matmul(cpu_pool *pool, const cpu_mat *W, const float *x, int n, int ldx,
                float *y, int ldy, bool accumulate);
/* Which kernel family cpu_matmul uses ("avx2" or "portable"). */
const char *cpu_matmul_isa(void);
/* Force the portable kernels (tests compare both paths). */
void cpu_matmul_force_portable(bool on);
/* AVX2/FMA/F16C present and not forced off. */
bool cpu_use_avx2(void);

/* ---- small inner loops (vecmath.c) ---- */

float cpu_dot(const float *a, const float *b, int n);
/* One SSM step of one channel over its n states: h = exp(delta A) h + du B; returns C . h. */
float cpu_ssm_step(float *h, const float *A, const float *B, const float *C, float delta, float du, int n);

/* ---- model and state ---- */

typedef struct cpu_layer {
    cpu_mat in_proj;      /* [in_proj_rows][H]: q | (k | v) | xs | z */
    cpu_mat x_proj;       /* [R + 2N][Di] */
    cpu_mat dt_proj;      /* [Di][R] */
    cpu_mat out_proj;     /* [H][Di] */
    cpu_mat gate, up;     /* [I][H] */
    cpu_mat down;         /* [H][I] */
    float *input_norm;    /* [H] */
    float *conv_w;        /* [Di][d_conv] */
    float *conv_b;        /* [Di] (zeros without conv bias) */
    float *dt_norm;       /* [R] (NULL without inner norms) */
    float *B_norm;        /* [N] */
    float *C_norm;        /* [N] */
    float *dt_bias;       /* [Di] */
    float *A;             /* [Di][N] = -exp(A_log) */
    float *D;             /* [Di] */
    float *pre_avg1;      /* [Di] */
    float *pre_avg2;      /* [Di] */
    float *pre_mlp_norm;  /* [H] */
    int kv_slot;          /* ordinal of kv_src[L] among the KV-owning layers */
    bool owner;           /* kv_src[L] == L */
} cpu_layer;

typedef struct cpu_state cpu_state;

typedef struct cpu_model {
    hy_arch a;
    hy_numerics num;
    cpu_mat embed;        /* [vocab][H] */
    cpu_mat lm_head;      /* [vocab][H] */
    float *memory;        /* [M][H] meta tokens */
    float *final_norm;    /* [H] */
    cpu_layer *L;         /* [n_layers] */
    int kv_layer[HY_MAX_LAYERS]; /* layer of KV slot s, s < a.n_kv_layers */
    double *inv_freq;     /* [head_dim/2] RoPE frequencies */
    float **meta_k;       /* [n_kv_layers] -> [M][kvh*hd] post-RoPE K of the meta rows */
    float **meta_v;       /* [n_kv_layers] -> [M][kvh*vd] */
    cpu_state *snap;      /* the state after the M meta rows */
    size_t bytes;         /* host memory the model holds beyond the mmap */
} cpu_model;

struct cpu_state {
    int64_t n_pos;        /* combined positions processed (meta included) */
    int64_t max_pos;      /* bound given to state_new */
    float *conv;          /* [n_layers][Di][d_conv]: column k = position n_pos-d_conv+k */
    float *ssm;           /* [n_layers][Di][N] */
    float **k;            /* [n_kv_layers] -> [cap][kvh*hd] real positions (global: linear, SWA: ring) */
    float **v;            /* [n_kv_layers] -> [cap][kvh*vd] */
    int64_t *cap;         /* [n_kv_layers] entries reserved: max_pos-M (global) or W+1 (SWA) */
    size_t bytes;
};

typedef struct cpu_ctx {
    cpu_pool *pool;
    bool verbose;
    atomic_uint_fast64_t positions, prefill_calls, decode_calls;
    atomic_size_t bytes;
} cpu_ctx;

/* state.c */
cpu_state *cpu_state_alloc(const cpu_model *m, int64_t max_pos, hy_err *err);
void cpu_state_release(cpu_state *st);
/* Entry of real position j (>= M) in KV slot s; NULL if not held. */
int64_t cpu_state_kv_index(const cpu_model *m, const cpu_state *st, int s, int64_t j);
void cpu_state_assign(const cpu_model *m, cpu_state *dst, const cpu_state *src);

/* forward.c: one step over a list of segments (one conversation each). */
typedef struct cpu_seg {
    cpu_state *st;
    int n;                /* rows (positions st->n_pos .. +n-1) */
} cpu_seg;

/* tokens: [rows] ids, or NULL to feed the meta tokens (model_new).
 * decode: single-token decode steps (selects the reference decode window).
 * logit_rows: rows whose logits go to logits[k][vocab], k < n_logit_rows. */
int cpu_forward(cpu_ctx *ctx, cpu_model *m, cpu_seg *segs, int n_segs, const int32_t *tokens,
                bool decode, const int *logit_rows, int n_logit_rows, float *logits, hy_err *err);

#endif
