/* backend.h: the table of operations every compute backend implements (cpu, cuda). */
#ifndef HYMBA_KERNELS_BACKEND_H
#define HYMBA_KERNELS_BACKEND_H

/*
 * The engine (engine/) loads and validates a checkpoint, then hands a backend
 * three things: the model's dimensions (hy_arch), host views of every weight
 * (hy_weights, pointing into mmap'ed safetensors files) and requests to run the
 * forward pass.  The backend owns every buffer it computes with: weights it
 * uploads or converts, activations, and the per-conversation state (conv + SSM
 * state of every layer, K/V of KV-owning layers).  The engine never touches
 * backend memory except through this table.
 *
 * Semantics are those of ../shared/spec/hymba-model.md (§3 full sequence, §4
 * incremental).  The contract: prefill of T tokens == prefill of T-k then k
 * decode steps == any chunking of the prefill == one full-sequence pass.
 *
 * Every function that can fail returns 0 or a negative errno and, on failure,
 * fills *err with a message naming what was at fault.
 *
 * This header may include nothing from engine/ (layering: engine -> kernels).
 */

#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>

#define HY_ERR_MSG_MAX 512

/* A human-readable error: the failing call's return value is the negative errno. */
typedef struct hy_err {
    int code;                     /* negative errno, 0 when unset */
    char msg[HY_ERR_MSG_MAX];
} hy_err;

/* Sets err (if non-NULL) and returns code (a negative errno). */
int hy_err_set(hy_err *err, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

typedef enum hy_dtype {
    HY_DT_F32 = 0,
    HY_DT_F16 = 1,
    HY_DT_BF16 = 2,
} hy_dtype;

size_t hy_dtype_size(hy_dtype dt);
const char *hy_dtype_name(hy_dtype dt);

/* A read-only host view of one weight tensor, row-major, as stored on disk. */
typedef struct hy_tensor {
    const void *data;             /* NULL when the tensor is absent */
    hy_dtype dt;
    int ndim;
    int64_t shape[4];
    const char *name;             /* checkpoint name, for messages */
} hy_tensor;

/* Weights of decoder layer L; shapes use the hy_arch names. */
typedef struct hy_layer_weights {
    hy_tensor input_norm;   /* [hidden] */
    hy_tensor in_proj;      /* [in_proj_rows[L], hidden]: q | (k | v if owner) | xs | z */
    hy_tensor conv_w;       /* [d_inner, 1, d_conv]: tap d_conv-1 multiplies the current step */
    hy_tensor conv_b;       /* [d_inner] (absent if !conv_bias) */
    hy_tensor x_proj;       /* [dt_rank + 2*d_state, d_inner]: dt | B | C */
    hy_tensor dt_norm;      /* [dt_rank] (absent if !inner_norms) */
    hy_tensor B_norm;       /* [d_state] (absent if !inner_norms) */
    hy_tensor C_norm;       /* [d_state] (absent if !inner_norms) */
    hy_tensor dt_proj_w;    /* [d_inner, dt_rank] */
    hy_tensor dt_proj_b;    /* [d_inner], added inside the softplus */
    hy_tensor A_log;        /* [d_inner, d_state]; A = -exp(A_log) */
    hy_tensor D;            /* [d_inner] */
    hy_tensor pre_avg1;     /* [d_inner]: RMSNorm weight of the attention branch */
    hy_tensor pre_avg2;     /* [d_inner]: RMSNorm weight of the SSM branch */
    hy_tensor out_proj;     /* [hidden, d_inner] */
    hy_tensor pre_mlp_norm; /* [hidden] */
    hy_tensor gate;         /* [intermediate, hidden] */
    hy_tensor up;           /* [intermediate, hidden] */
    hy_tensor down;         /* [hidden, intermediate] */
} hy_layer_weights;

typedef struct hy_weights {
    hy_tensor embed;         /* [vocab, hidden] */
    hy_tensor memory_tokens; /* [n_meta, hidden] (absent when n_meta == 0) */
    hy_tensor final_norm;    /* [hidden] */
    hy_tensor lm_head;       /* [vocab, hidden]; same data as embed when tied */
    hy_layer_weights *layers;/* [n_layers] */
} hy_weights;

#define HY_MAX_LAYERS 256

/* Everything a backend needs to know about the model's shape; filled by the engine. */
typedef struct hy_arch {
    int vocab;
    int hidden;              /* H */
    int n_layers;
    int n_heads;             /* query heads */
    int n_kv_heads;
    int head_dim;            /* Dq: q/k head size */
    int v_head_dim;          /* Dv: v head size = d_inner / n_heads */
    int d_inner;             /* Di = expand * H */
    int d_state;             /* N */
    int d_conv;
    int dt_rank;             /* R */
    int intermediate;        /* MLP width */
    int n_meta;              /* M: meta tokens prepended to every sequence */
    int window;              /* W: SWA layers see keys with i - j <= W (W+1 keys) plus meta */
    float eps;               /* RMSNorm epsilon */
    bool rope;               /* rotate q/k */
    double rope_base;        /* effective base after NTK scaling */
    bool conv_bias;
    bool inner_norms;        /* RMSNorm on dt, B, C */
    /* per layer */
    bool is_global[HY_MAX_LAYERS];   /* full causal attention */
    int kv_src[HY_MAX_LAYERS];       /* layer whose K/V this layer reads; == L for owners */
    int in_proj_rows[HY_MAX_LAYERS]; /* q + (k + v if owner) + 2*d_inner */
    int n_kv_layers;                 /* layers with kv_src[L] == L */
} hy_arch;

/* Run-time switches that change the math (not the weights). */
typedef struct hy_numerics {
    /* Reference cached-decode window (spec §4.4-1): single-token decode steps
     * of SWA layers see W keys (i - j <= W-1) instead of W+1.  Prefill unchanged. */
    bool ref_decode_window;
    /* RoPE inv_freq rounded to bf16 (spec §5.3, the model-card loading recipe). */
    bool rope_bf16_freq;
} hy_numerics;

typedef struct hy_backend_opts {
    int threads;             /* CPU worker threads; <= 0: all online cores */
    int device;              /* GPU ordinal */
    bool verbose;
} hy_backend_opts;

/* Counters a backend keeps, for tests and status (e.g. "restore did no forward pass"). */
typedef struct hy_backend_stats {
    uint64_t positions;      /* sequence positions run through the layers (meta prefix included) */
    uint64_t prefill_calls;
    uint64_t decode_calls;
    uint64_t bytes_device;   /* memory the backend holds now (weights + states + scratch) */
} hy_backend_stats;

/* How much of the prefill's logits to return. */
typedef enum hy_logits_mode {
    HY_LOGITS_NONE = 0,      /* none */
    HY_LOGITS_LAST = 1,      /* the last position's row only: [1, vocab] */
    HY_LOGITS_ALL = 2,       /* every position of the chunk: [n, vocab] */
} hy_logits_mode;

/* Most recent ids per row the on-device repetition penalty looks at. */
#define HY_SAMPLE_MAX_REPEAT 1024

/* Parameters of the optional on-device sampler (decode_sample). */
typedef struct hy_sample_params {
    float temperature;       /* <= 0: greedy (argmax, lowest id on ties) */
    int top_k;               /* <= 0: off */
    float top_p;             /* >= 1: off */
    float min_p;             /* <= 0: off (relative to the most likely token) */
    float repeat_penalty;    /* > 0 and != 1: each distinct id of repeat_ids has its logit divided
                                (when > 0) or multiplied by it once, before everything else */
    int repeat_n;            /* ids per row in repeat_ids, 0..HY_SAMPLE_MAX_REPEAT */
    const int32_t *repeat_ids;   /* [B][repeat_n] each row's recent ids (the token just fed last), -1: none */
} hy_sample_params;

typedef struct hy_backend_ops {
    const char *name;

    /* ctx: the backend instance (thread pool, device handle, cuBLAS handle). */
    int (*init)(const hy_backend_opts *opts, void **ctx, hy_err *err);
    void (*fini)(void *ctx);

    /* Bind/upload weights and compute the meta-token prefix snapshot (the state
     * after the n_meta meta rows), once per model.  *bm: backend model. */
    int (*model_new)(void *ctx, const hy_arch *arch, const hy_numerics *num,
                     const hy_weights *w, void **bm, hy_err *err);
    void (*model_free)(void *ctx, void *bm);

    /* A conversation state starting from the meta snapshot (n_pos == n_meta).
     * max_pos bounds the combined positions (meta included) it will hold, so
     * memory can be reserved up front. */
    int (*state_new)(void *ctx, void *bm, int64_t max_pos, void **st, hy_err *err);
    void (*state_free)(void *ctx, void *st);
    /* Back to the meta snapshot. */
    void (*state_reset)(void *ctx, void *bm, void *st);
    /* dst := src (same model; dst made with state_new). */
    int (*state_copy)(void *ctx, void *bm, void *dst, const void *src, hy_err *err);
    /* Combined positions processed so far (meta included). */
    int64_t (*state_pos)(void *ctx, const void *st);

    /* Run n >= 1 tokens of one conversation at positions state_pos..+n-1,
     * matrix-matrix.  logits: host buffer per mode ([n,vocab] or [1,vocab]). */
    int (*prefill)(void *ctx, void *bm, void *st, const int32_t *tokens, int n,
                   hy_logits_mode mode, float *logits, hy_err *err);

    /* One token for each of B independent conversations (different positions).
     * logits: host [B, vocab]. */
    int (*decode)(void *ctx, void *bm, void **st, const int32_t *tokens, int B,
                  float *logits, hy_err *err);

    /* The state's canonical host image (kernels/state_image.h); the same bytes
     * whatever backend wrote them, so CPU and CUDA checkpoints interchange. */
    size_t (*state_image_size)(void *ctx, void *bm, const void *st);
    int (*state_export)(void *ctx, void *bm, const void *st, void *buf, size_t len, hy_err *err);
    int (*state_import)(void *ctx, void *bm, void *st, const void *buf, size_t len, hy_err *err);

    void (*stats)(void *ctx, hy_backend_stats *out);

    /* ---- Optional operations: NULL when a backend lacks them (the CPU's). ---- */

    /* decode, then pick the next token of each conversation on the device:
     * only ids[B] come back (and the logits when logits != NULL).  u[b] is a
     * uniform draw in [0, 1) for row b (unused when greedy).  Order: keep the
     * top_k logits, then the smallest most-likely set of mass >= top_p, then
     * those with p >= min_p * p_max; sample with temperature. */
    int (*decode_sample)(void *ctx, void *bm, void **st, const int32_t *tokens, int B,
                         const hy_sample_params *sp, const float *u, int32_t *ids,
                         float *logits, hy_err *err);

    /* Device ceilings measured now, for roofline figures: device-to-device
     * copy bandwidth (bytes read + written, GB/s) and a large bf16 matrix
     * product (TFLOP/s).  Takes about a second. */
    int (*ceilings)(void *ctx, double *copy_gbps, double *mm_tflops, hy_err *err);

    /* Positions per prefill call when the caller names none (0: the
     * engine's default): the backend's own pass size. */
    int prefill_chunk;
} hy_backend_ops;

extern const hy_backend_ops hy_backend_cpu;
#ifdef HAVE_CUDA
extern const hy_backend_ops hy_backend_cuda;
#endif

#endif
