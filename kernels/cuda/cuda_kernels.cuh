/* cuda_kernels.cuh: the CUDA backend's device kernels, as host launchers (shared by the backend and its tests). */
#ifndef HYMBA_KERNELS_CUDA_KERNELS_CUH
#define HYMBA_KERNELS_CUDA_KERNELS_CUH

#include <cuda_runtime.h>
#include <cuda_bf16.h>
#include <stdint.h>

typedef __nv_bfloat16 bf16;

/* Limits the hand-written kernels are built for; model_new refuses other shapes. */
#define CU_MAX_GQA 8          /* query heads per KV head */
#define CU_MAX_VPL 4          /* v_head_dim / 32 */
#define CU_MAX_HEAD_DIM 128   /* q/k head size */
#define CU_D_STATE 16         /* SSM state size per channel */
#define CU_SCAN_CHUNK 16      /* fewest positions per chunk of the prefill scan (it picks 16..64) */

/*
 * Where the tokens of one launch live.  Decode: token b belongs to sequence
 * b (desc[b]).  Prefill: every token belongs to desc[0] and token t sits at
 * position desc[0].pos + t.
 */
typedef struct cu_desc {
    int pos;                 /* combined position of token 0 (prefill) / of this token (decode) */
    int token;               /* decode: input token id */
    float *conv;             /* [n_layers][d_conv][d_inner] last pre-conv inputs, oldest first */
    float *ssm;              /* [n_layers][d_inner][d_state] */
    bf16 *const *kv;         /* [2*n_layers]: K then V cache of the layer's KV source */
} cu_desc;

/* KV cache addressing of one layer: slot of combined position p. */
typedef struct cu_kvgeom {
    int is_global;           /* slot = p */
    int n_meta;              /* SWA: slots [0, n_meta) hold the meta positions */
    int ring;                /* SWA: ring slots after the meta ones */
    int window;              /* SWA: keys with i - j <= window are visible (plus meta) */
} cu_kvgeom;

/* Output of a linear layer as its consumer reads it: either bf16 rows or
 * fp32 split-K partials [nsplit][B][N] whose sum is rounded to bf16. */
typedef struct cu_lin {
    const float *part;
    int nsplit, N, B;
    const bf16 *h;
    int ldh;
} cu_lin;

enum { CU_GV_BF16 = 0, CU_GV_PART = 1, CU_GV_GATED = 2, CU_GV_F32 = 3 };

/* Skinny matrix-vector product y[b] = W x[b] for b < B <= 8, 16-byte loads,
 * split over K when nsplit > 1 (then mode must be CU_GV_PART).
 * W [N, K] bf16 row-major, K % 8 == 0; X [B, ldx].
 * BF16: out[b*ldo + n] = bf16(y).  PART: part[(s*B + b)*N + n].
 * GATED: rows interleave gate/up (2i, 2i+1): out[b*ldo + i] = bf16(bf16(silu(g)) * u).
 * F32: part[b*ldo + n] = float(bf16(y)). */
typedef struct cu_gemv {
    const bf16 *W; int N, K;
    const bf16 *X; int ldx, B;
    int nsplit, mode;
    bf16 *out; float *part; int ldo;
    int pdl;    /* launch early behind the previous kernel (programmatic dependent launch) */
} cu_gemv;
cudaError_t cu_gemv_launch(const cu_gemv *a, cudaStream_t s);
/* Splits that fill the chip for this shape (1 when the mode needs whole rows),
 * keeping at least cu_gemv_lane_vecs 16-byte vectors per lane in each split. */
int cu_gemv_splits(int N, int K, int B, int n_sm);
extern int cu_gemv_lane_vecs;

/* x[t] = rows[ids[t]] (ids NULL: rows[t]), t < n; width H. */
cudaError_t cu_embed(bf16 *x, const bf16 *rows, const int32_t *ids, const cu_desc *desc,
                     int n, int H, cudaStream_t s);

/* Per row t < n: if y given, x = bf16(x + y); then hn = RMSNorm(x; w).  x [n, H]. */
cudaError_t cu_resnorm(bf16 *x, const cu_lin *y, const bf16 *w, bf16 *hn, int n, int H,
                       float eps, cudaStream_t s);

/* RoPE on q (in place, u[t*ldu + 0..nh*dq)) and, for owner layers, rotate k and
 * store k, v into the cache slots of the tokens' positions.  inv_freq [dq/2]. */
typedef struct cu_rope_args {
    bf16 *u; int ldu, n;
    const cu_desc *desc; int per_token;
    int layer, owner, rope;
    int nh, nkv, dq, dv;
    int k_off, v_off;        /* column of k and v in u */
    const float *inv_freq;
    cu_kvgeom g;
} cu_rope_args;
cudaError_t cu_rope_kv(const cu_rope_args *a, cudaStream_t s);
/* The same for a prefill (per_token 0) with 16-byte vectors; other shapes go to cu_rope_kv.
 * The K/V cache rows must be 16-byte aligned (the backend's are 256-aligned). */
cudaError_t cu_rope_kv_pf(const cu_rope_args *a, cudaStream_t s);

/* Attention of n queries (q rotated, in u) over the layer's cache: split over
 * keys.  Writes partials (m, l, o) to ml [n][nh][nsplit][2], o [n][nh][nsplit][dv].
 * Prefill (per_token 0) uses the same kernel as the fallback path. */
typedef struct cu_attn_args {
    const bf16 *u; int ldu, n;
    const cu_desc *desc; int per_token;
    int kv_layer;
    int nh, nkv, dq, dv, nsplit;
    float scale;
    cu_kvgeom g;
    float *ml, *o;
} cu_attn_args;
cudaError_t cu_attn_split(const cu_attn_args *a, cudaStream_t s);

/* Flash-style prefill attention with tensor cores: writes att [n][nh*dv]
 * bf16.  The mma.sync kernel (GQA heads packed into rows, O in registers)
 * for the head sizes it is built for, else the older wmma kernel; returns
 * cudaErrorNotSupported for head sizes neither has a variant of.  pos: host
 * copy of desc->pos (-1 if unknown), only for choosing the launch shape. */
cudaError_t cu_attn_flash(const bf16 *u, int ldu, int n, const cu_desc *desc, int pos, int kv_layer,
                          int nh, int nkv, int dq, int dv, float scale, cu_kvgeom g,
                          bf16 *att, cudaStream_t s);
int cu_attn_flash_supported(int dq, int dv);
/* The wmma kernel alone (S and O in shared memory; one query head per block). */
cudaError_t cu_attn_flash_wmma(const bf16 *u, int ldu, int n, const cu_desc *desc, int kv_layer,
                               int nh, int nkv, int dq, int dv, float scale, cu_kvgeom g,
                               bf16 *att, cudaStream_t s);
/* mma kernel variant (tests, timing): 0 = chosen per pass; 4..8 = that many warps per block (128
 * registers); -1 = 4 warps with up to 168 registers */
extern int cu_flash_warps;

/* Mixer merge per row t: att from bf16 rows (att) or split partials (ml, o);
 * m = bf16(bf16(RMS(att; w1) + RMS(ssm; w2)) / 2).  width di = nh*dv. */
cudaError_t cu_preavg(const bf16 *att, const float *ml, const float *o, int nsplit, int nh, int dv,
                      const bf16 *ssm_out, const bf16 *w1, const bf16 *w2, float eps,
                      bf16 *m, int n, cudaStream_t s);

/* Causal depthwise conv + SiLU over n prefill tokens (xs at u[t*ldu + xs_off]),
 * then the conv state update (one kernel for d_conv 4 and 16-byte aligned
 * rows, else two).  uc [n][di]. */
cudaError_t cu_conv_prefill(const bf16 *u, int ldu, int xs_off, int n, const cu_desc *desc, int layer,
                            const bf16 *w, const float *bias, int di, int dc, bf16 *uc,
                            cudaStream_t s);

/* Decode: conv step of every sequence b < B, fused with the split x_proj
 * product: part [nslice][B][P] (P = dt_rank + 2*d_state). */
cudaError_t cu_conv_xproj_decode(const bf16 *u, int ldu, int xs_off, int B, const cu_desc *desc,
                                 int layer, const bf16 *w, const float *bias, int di, int dc,
                                 const bf16 *xproj, int P, bf16 *uc, float *part, int nslice,
                                 cudaStream_t s);
int cu_conv_xproj_slices(int di);

/* dt, B, C: RMSNorm of the three parts of the x_proj output (or copy when
 * !norms).  dbc [n][R + 2N] fp32 holding bf16 values; dt_out (optional)
 * [n][R] bf16 copy of dt for the dt_proj GEMM. */
cudaError_t cu_dbc_norm(const cu_lin *xp, int R, int N, const bf16 *wdt, const bf16 *wB,
                        const bf16 *wC, int norms, float eps, float *dbc, bf16 *dt_out, int n,
                        cudaStream_t s);

/* Decode SSM step, fused: delta = bf16(dt . dt_proj), softplus, state update,
 * y = C.h + D u, out = bf16(y * silu(z)).  z at u[b*ldu + z_off]. */
typedef struct cu_ssm_args {
    const float *dbc; int R;
    const bf16 *dtw; const float *dtb;       /* dt_proj [di][R], bias [di] */
    const float *A; const float *D;          /* A = -exp(A_log) [di][16], D [di] */
    const bf16 *uc; const bf16 *u; int ldu, z_off;
    const bf16 *delta;                       /* prefill: delta [n][di] from the GEMM */
    const cu_desc *desc; int layer, di, n;
    bf16 *out;
    float *ws;                               /* prefill scan workspace */
} cu_ssm_args;
cudaError_t cu_ssm_decode(const cu_ssm_args *a, cudaStream_t s);
/* Prefill: chunked scan over the n positions of desc[0] (softplus of
 * delta + dt_bias fused in); ws holds cu_ssm_ws_floats(n, di) floats (chunk
 * states and decays, fp32 Delta). */
cudaError_t cu_ssm_prefill(const cu_ssm_args *a, cudaStream_t s);
size_t cu_ssm_ws_floats(int n, int di);

/* Gated MLP activation on interleaved gate/up rows: a[t][i] = bf16(bf16(silu(g)) * u). */
cudaError_t cu_gated_act(const bf16 *gu, bf16 *a, int n, int I, cudaStream_t s);

/* Prefill variants of three element-wise passes for many rows (one warp per
 * row, 16-byte loads); shapes they do not cover go to the general kernels.
 * cu_resnorm_pf: y (optional) bf16 rows of stride ldy; as cu_resnorm.
 * cu_preavg_pf: as cu_preavg with attention rows given (width nh*dv).
 * cu_gated_act_pf: as cu_gated_act. */
cudaError_t cu_resnorm_pf(bf16 *x, const bf16 *y, int ldy, const bf16 *w, bf16 *hn, int n, int H, float eps,
                          cudaStream_t s);
cudaError_t cu_preavg_pf(const bf16 *att, const bf16 *ssm_out, const bf16 *w1, const bf16 *w2, float eps, bf16 *m,
                         int n, int nh, int dv, cudaStream_t s);
cudaError_t cu_gated_act_pf(const bf16 *gu, bf16 *a, int n, int I, cudaStream_t s);

/* bf16 -> fp32 copy of n values. */
cudaError_t cu_bf16_to_f32(const bf16 *x, float *y, size_t n, cudaStream_t s);

/* Sampler over logits [B][ld] (vocab valid): one id per row.  temperature <= 0:
 * argmax (lowest id on ties).  Otherwise keep top_k (<= 0 off), then the
 * smallest top-probability set of mass >= top_p (>= 1 off), then min_p (<= 0 off),
 * and draw with the uniform number u[b] in [0, 1). */
typedef struct cu_sample_args {
    const float *logits; int ld, vocab, B;
    float temperature, top_p, min_p; int top_k;
    const float *u;
    int32_t *ids;
} cu_sample_args;
cudaError_t cu_sample(const cu_sample_args *a, cudaStream_t s);

/* Repetition penalty of B rows (llama.cpp's rule, as the host sampler):
 * out = logits, then for each distinct id of rep[b][0..n) (ids outside
 * [0, V) ignored) out[b][id] = logit / pen when > 0, else logit * pen.
 * logits, out [B][V]. */
cudaError_t cu_repeat_penalty(const float *logits, int V, int B, const int32_t *rep, int n, float pen, float *out,
                              cudaStream_t s);

/* Programmatic dependent launch (sm_90): a kernel lets the next one be
 * launched early (trigger); the next one blocks at wait until this one has
 * finished and its writes are visible.  Kernels of the decode step wait
 * before touching any data and trigger right after, so launch latency
 * overlaps the previous kernel.  Without the launch attribute both are no-ops. */
__device__ __forceinline__ void pdl_trigger() { asm volatile("griddepcontrol.launch_dependents;" ::: "memory"); }
__device__ __forceinline__ void pdl_wait() { asm volatile("griddepcontrol.wait;" ::: "memory"); }

extern int cu_pdl;   /* launch decode kernels with the programmatic-serialization attribute */

template <typename... KArgs, typename... Args>
static inline cudaError_t cu_launch(void (*k)(KArgs...), dim3 grid, dim3 block, size_t smem, cudaStream_t s,
                                    Args... args)
{
    cudaLaunchConfig_t cfg = {};
    cudaLaunchAttribute attr[1];
    cfg.gridDim = grid;
    cfg.blockDim = block;
    cfg.dynamicSmemBytes = smem;
    cfg.stream = s;
    attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attr[0].val.programmaticStreamSerializationAllowed = cu_pdl;
    cfg.attrs = attr;
    cfg.numAttrs = 1;
    return cudaLaunchKernelEx(&cfg, k, ((KArgs)args)...);
}

#endif
