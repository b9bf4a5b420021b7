/* cuda_internal.cuh: the CUDA backend's context, model and state structures (shared by its .cu files). */
#ifndef HYMBA_KERNELS_CUDA_INTERNAL_CUH
#define HYMBA_KERNELS_CUDA_INTERNAL_CUH

#include <cublas_v2.h>
#include "kernels/cuda/cuda_kernels.cuh"

extern "C" {
#include "kernels/backend.h"
#include "kernels/state_image.h"
}

/* Positions one internal prefill pass handles; SWA rings hold window + this
 * many real slots so a whole pass attends in place.  2048: the pass's matrix
 * products run 15 % faster than at 1024 rows (H100, 1.5B shapes). */
#define CU_PCHUNK 2048
/* Rows of prefill logits computed and copied back at a time (all-rows mode). */
#define CU_LOGIT_ROWS 256

typedef struct cu_ctx {
    int dev;
    int n_sm;
    char dev_name[256];
    cudaStream_t s0, s1;          /* s1: the SSM branch of a decode step */
    cudaEvent_t ev_fork, ev_join;
    cublasHandle_t blas;
    void *blas_ws;
    size_t blas_ws_bytes;
    bool failed;                  /* a sticky CUDA error: the context is lost */
    char fail_msg[256];
    bool verbose;
    bool pdl;                     /* decode GEMVs start early behind the kernel before them */
    bool pf_overlap;              /* prefill: attention on s1 while the SSM branch runs on s0 */
    size_t bytes;                 /* device memory held */
    hy_backend_stats st;
} cu_ctx;

typedef struct cu_layer {
    bf16 *in_norm;      /* [H] */
    bf16 *in_proj;      /* [rows, H] */
    bf16 *conv_w;       /* [Di, dc] */
    float *conv_b;      /* [Di] or NULL */
    bf16 *x_proj;       /* [P, Di], P = R + 2N */
    bf16 *dt_norm, *B_norm, *C_norm;   /* [R], [N], [N] or NULL */
    bf16 *dt_w;         /* [Di, R] */
    float *dt_b;        /* [Di] */
    float *A;           /* [Di, N] = -exp(A_log) */
    float *D;           /* [Di] */
    bf16 *avg1, *avg2;  /* [Di] */
    bf16 *out_proj;     /* [H, Di] */
    bf16 *mlp_norm;     /* [H] */
    bf16 *gu;           /* [2I, H]: gate row i at 2i, up row i at 2i+1 */
    bf16 *down;         /* [H, I] */
    int rows, owner, kv_src;
    int k_off, v_off, xs_off, z_off;   /* columns of the in_proj output */
    cu_kvgeom g;        /* prefill / full-sequence window */
    cu_kvgeom gd;       /* decode window (reference rule when asked) */
} cu_layer;

typedef struct cu_state cu_state;
typedef struct cu_mega cu_mega;

/* Buffers of one kind of pass (prefill: rows = CU_PCHUNK; decode: rows = batch capacity). */
typedef struct cu_scratch {
    int rows;
    bf16 *x, *hn, *u, *att, *uc, *sout, *m, *delta, *dt, *xp, *gu, *act, *y, *lbf;
    float *dbc, *part, *xpart, *ml, *o, *ws, *logits;
    float *plog;        /* decode: [rows][vocab] logits after the repetition penalty */
    int32_t *ids;
    int32_t *rep;       /* decode: [rows][HY_SAMPLE_MAX_REPEAT] penalty windows */
    int32_t *hrep;      /* pinned copy of rep */
    cu_desc *desc;
    cu_desc *hdesc;     /* pinned host copy (the persistent decode kernel reads it in place) */
    int32_t *hids;      /* pinned: the sampler's chosen ids, written in place */
    float *hurand;      /* pinned: the sampler's uniforms, read in place */
    int nsplit_attn_max;
    size_t bytes;
} cu_scratch;

typedef struct cu_model {
    hy_arch a;
    hy_numerics num;
    cu_layer *L;
    bf16 *embed, *lm_head, *meta, *final_norm;
    float *inv_freq;
    int ring;
    int P;              /* x_proj rows */
    int max_rows;       /* widest in_proj */
    int use_gemv;       /* K % 8 == 0 everywhere: hand-written GEMV for small batches */
    int flash;          /* tensor-core prefill attention for these head sizes */
    size_t weight_bytes;
    cu_scratch pf, dc;
    cudaGraphExec_t *graphs;   /* [dc.rows + 1] decode step per batch size */
    int n_graphs;
    int graph1_mega;    /* graphs[1] is the persistent kernel, which reads dc.hdesc in place (no copy to dc.desc) */
    cu_state *snap;     /* the state after the meta tokens */
    cu_mega *mk;        /* batch-1 decode as one persistent kernel (NULL: off or unsupported) */
    int mk_tried;
} cu_model;

struct cu_state {
    cu_model *bm;
    int64_t pos, cap;
    void *mem;
    size_t bytes;
    float *conv, *ssm;
    bf16 **kv_host;     /* [2*n_layers] device pointers, host copy */
    bf16 **kv_dev;      /* the same table in device memory */
};

/* Error plumbing (cuda_backend.cu): a failed CUDA/cuBLAS call becomes a
 * negative errno and a message naming the call; sticky errors mark the
 * context failed so later calls refuse at once. */
int cu_fail(cu_ctx *c, hy_err *err, cudaError_t e, const char *what, const char *file, int line);
int cu_fail_blas(cu_ctx *c, hy_err *err, cublasStatus_t e, const char *what, const char *file, int line);
int cu_check_ctx(cu_ctx *c, hy_err *err);
int cu_malloc(cu_ctx *c, void **p, size_t bytes, const char *what, hy_err *err);
void cu_free(cu_ctx *c, void *p, size_t bytes);

#define CK(call) do { cudaError_t e_ = (call); \
        if (e_ != cudaSuccess) return cu_fail(ctx, err, e_, #call, __FILE__, __LINE__); } while (0)
#define CKB(call) do { cublasStatus_t e_ = (call); \
        if (e_ != CUBLAS_STATUS_SUCCESS) return cu_fail_blas(ctx, err, e_, #call, __FILE__, __LINE__); } while (0)

/* Forward passes (cuda_forward.cu). */
int cu_scratch_alloc(cu_ctx *ctx, cu_model *m, cu_scratch *sc, int rows, int decode, hy_err *err);
void cu_scratch_free(cu_ctx *ctx, cu_model *m, cu_scratch *sc);
void cu_graphs_drop(cu_model *m);
/* n rows at state position st->pos: token ids (host) or, when ids == NULL, the meta rows. */
int cu_forward_prefill(cu_ctx *ctx, cu_model *m, cu_state *st, const int32_t *ids, int n,
                       hy_logits_mode mode, float *logits, hy_err *err);
int cu_forward_decode(cu_ctx *ctx, cu_model *m, cu_state **sts, const int32_t *tokens, int B,
                      const hy_sample_params *sp, const float *u, int32_t *ids, float *logits,
                      hy_err *err);
/* The persistent batch-1 decode kernel (cuda_decode.cu).  usable: 1 when it
 * runs this model (set up on first use, outside any stream capture), 0 when
 * not, < 0 on error; launch: one step into ctx->s0 (capturable). */
extern int cu_mega_wanted;
extern int cu_mega_split;
extern int cu_mega_pf;
int cu_mega_usable(cu_ctx *ctx, cu_model *m, hy_err *err);
int cu_mega_launch(cu_ctx *ctx, cu_model *m, const cu_desc *desc, float *logits, hy_err *err);
void cu_mega_free(cu_ctx *ctx, cu_model *m);
void cu_mega_trace_report(cu_ctx *ctx, cu_model *m);
int cu_measure_ceilings(cu_ctx *ctx, double *copy_gbps, double *mm_tflops, hy_err *err);

#endif
