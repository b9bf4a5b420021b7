/* cuda_decode.cu: the batch-1 decode step as one persistent cooperative kernel: every phase of every layer, separated by grid barriers instead of kernel boundaries. */
#include "kernels/cuda/cuda_internal.cuh"
#include "kernels/cuda/cuda_device.cuh"
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

using namespace cudev;

/*
 * Why one kernel: a decode step of the 1.5B model is ~300 dependent steps
 * (32 layers x ~9), most of them a few microseconds of work.  As separate
 * kernels each pays a launch and a drain/fill of the whole chip; here each
 * pays one grid barrier (1-3 us with the imbalance of its phase).
 *
 * Phases of layer L ("|" is a grid barrier):
 *   A  hn = RMSNorm(x (+ y); in_norm) in every block; u = in_proj . hn    |
 *   B  attention of one (KV head, key split) unit per block on half the
 *      blocks: partials (m, l, o), this position's K/V taken from u;
 *      meanwhile on the others conv + SiLU and x_proj partials per
 *      128-channel slice; the K/V store                                  |
 *   C  merge of the key splits -> att; meanwhile dt/B/C and the SSM
 *      update on the blocks that ran the conv                            |
 *   D  m = pre-average norms of att and the SSM output (every block);
 *      y = out_proj . m                                                    |
 *   E  x += y; hn = RMSNorm(x; mlp_norm); act = silu(gate) * up            |
 *   F  y = down . act                                                      |
 * then the final norm and the lm_head into fp32 logits.  Each block runs
 * the phases on 15 warps; a 16th (mk_prefetch) asks L2 for the next
 * products' rows while the block is in a phase that leaves HBM idle.
 *
 * Code size matters as much as arithmetic: each phase's code runs once per
 * layer per SM, so the phases are small, non-unrolled functions (a first
 * version with fully unrolled attention variants had 1 MB of code and ran
 * its small phases 3-4x slower).  They are inlined into the kernel: as
 * separate (noinline) functions they shared one register budget through the
 * call ABI, the kernel body spilled around every call, and one hungry
 * function made every other one spill; inlined, the code is 12 % larger and
 * the step 3 % faster (RESULTS step 109).  The loops that spread a phase's
 * items over the block's threads run once or twice per thread, so they are
 * not unrolled (`#pragma unroll 1`): unrolled copies only added code (11 KB
 * of 161) and spills (RESULTS step 114).
 */

#define MK_THREADS 480      /* the threads that run the phases: 15 warps */
#define MK_WARPS (MK_THREADS / 32)
#define MK_BLOCK_THREADS (MK_THREADS + 32)   /* and one warp that prefetches weights (mk_prefetch) */
#define MK_SLICE 128         /* channels per conv + x_proj unit */
#define MK_XWL (MK_SLICE + 8)   /* row stride of its staged x_proj columns (the pad: ldmatrix on distinct banks) */
#define MK_SPLITS_MAX 16     /* key splits per KV head */
#define MK_PF_CHUNK 4096     /* bytes per round of L2 prefetches: a 128-byte line per lane of the warp */
static_assert(MK_PF_CHUNK == 32 * 128, "mk_prefetch: one line per lane");
#define MK_PF_PIECES 2       /* pieces the prefetch warp asks for per look at the block's phase (RESULTS step 75) */

struct mk_layer {
    const bf16 *in_norm;      /* [H] */
    const bf16 *in_proj;      /* [rows][H] */
    const bf16 *conv_w;       /* [Di][dc] */
    const float *conv_b;      /* [Di] or NULL */
    const bf16 *x_proj;       /* [P][Di] */
    const bf16 *dt_norm, *B_norm, *C_norm;   /* [R], [N], [N] or NULL */
    const bf16 *dt_w;         /* [Di][R] */
    const float *dt_b;        /* [Di] */
    const float *A;           /* [Di][N] = -exp(A_log) */
    const float *D;           /* [Di] */
    const bf16 *avg1, *avg2;  /* [Di] */
    const bf16 *out_proj;     /* [H][Di] */
    const bf16 *mlp_norm;     /* [H] */
    const bf16 *gu;           /* [2I][H], gate row i at 2i, up row i at 2i+1 */
    const bf16 *down;         /* [H][I] */
    int rows, owner, kv_src, k_off, v_off, xs_off, z_off;
    cu_kvgeom gd;
};

struct mk_args {
    const mk_layer *L;
    int n_layers;
    const bf16 *embed;        /* [V][H] */
    const bf16 *lm_head;      /* [V][H] */
    const bf16 *final_norm;   /* [H] */
    const float *inv_freq;    /* [dq/2] */
    int H, Di, I, R, P, V, dc, nh, nkv, dq, dv, rope, norms, nsa;
    int nu;                   /* attention units: nkv * nsa, on blocks [0, nu) */
    int split;                /* 1: blocks [nu, grid) run the SSM branch meanwhile; 0: every block runs both */
    int cpb;                  /* SSM channels per SSM block (even) */
    int xh;                   /* floats in each half of the GEMV input (mk_xput) */
    int pf;                   /* 0: the prefetch warp idles (HYMBA_CUDA_MEGA_PF=0) */
    float eps, scale;
    const cu_desc *desc;      /* [1]: position, token, state pointers (pinned host memory: read once per block) */
    /* scratch, all written and read inside one launch (loaded with ld.cg:
     * another block wrote them behind a barrier) */
    bf16 *x[2];               /* [H] residual stream, ping-pong */
    bf16 *u;                  /* [rows] in_proj output */
    bf16 *y;                  /* [H] out_proj / down output */
    bf16 *act;                /* [I] gated MLP activation */
    float *uc;                /* [Di] conv output (bf16 values) */
    float *xpart;             /* [nslice][P] x_proj partials */
    float *sout;              /* [Di] gated SSM output (bf16 values) */
    float *att;               /* [Di] merged attention (bf16 values) */
    float *ml;                /* [nh][nsa][2] split (max, sum) */
    float *o;                 /* [nh][nsa][dv] split outputs */
    float *logits;            /* [V] */
    unsigned *bar;            /* grid barrier counter, zero at launch */
    long long *trace;         /* NULL, or [n_layers][MK_TRACE] clock64 at phase edges (MK_MARK), then 2 globaltimer reads */
    unsigned long long *btrace;   /* NULL, or [n_layers * MK_NBAR][grid][2]: globaltimer as each block arrives at
                                   * a grid barrier and as it leaves it */
};

#define MK_PHASES 15       /* traced intervals per layer: marks 0..MK_PHASES */
#define MK_NBAR 6          /* grid barriers per layer */
#ifndef MK_SUBTRACE
#define MK_SUBTRACE 0      /* 1 (a diagnosis build): marks inside the phases too (MK_SUB), reported after the phases */
#endif
#define MK_TRACE (32 + 32 * MK_SUBTRACE)   /* per layer: block 0's marks, at 16 those of block nu (the first SSM
                                            * block); then, MK_SUBTRACE, their sub-marks the same way */
static_assert(2 * (MK_PHASES + 1) <= MK_TRACE, "two blocks' marks per layer");
#define MK_LPIECES ((int)sizeof(mk_layer) / 16)   /* 16-byte pieces of a layer table entry */
static_assert(sizeof(mk_layer) % 16 == 0, "the layer table entry is fetched in 16-byte pieces");
/* Mark k of the layer: traced, and published to the prefetch warp, whose
 * MK_QUIET and mk_pf_start name marks by number: keep them in step. */
#define MK_MARK(k) do { if (TRACE && threadIdx.x == 0 && (blockIdx.x == 0 || (int)blockIdx.x == a.nu)) { \
            a.trace[layer * MK_TRACE + (blockIdx.x ? 16 : 0) + (k)] = clock64(); \
            if (MK_SUBTRACE && (k) == 0) \
                mk_sub = a.trace + layer * MK_TRACE + 32 + (blockIdx.x ? 16 : 0); } \
        if (threadIdx.x == 0) *(volatile unsigned *)&mk_phase = layer * 16 + (k); } while (0)

/* Shared memory of one block (dynamic), in floats: the GEMV input, then one
 * region the norms (fs) and phases B and C (ucs, dbc, attention, the SSM
 * blocks' staged inputs sst) take in turn: the less shared memory, the more L1. */
struct mk_smem {
    int xs, fs, dbc, ucs, att, sst, total;
};

/* The SSM step's inputs of one block's cpb channels, staged in phase B
 * (mk_ssm_stage) for phase C; offsets in floats from the region's start. */
struct mk_sst {
    int h, A, D, dtb, nw, dtw, total;
};

__host__ __device__ static inline mk_sst mk_sst_layout(int cpb, int R)
{
    mk_sst t;
    t.h = 0;                          /* float [cpb][16] state */
    t.A = t.h + cpb * CU_D_STATE;     /* float [cpb][16] */
    t.D = t.A + cpb * CU_D_STATE;     /* float [cpb] */
    t.dtb = t.D + cpb;                /* float [cpb] */
    t.nw = t.dtb + cpb;               /* float [R + 2 * 16]: the dt, B, C norm weights */
    t.dtw = t.nw + R + 2 * CU_D_STATE;   /* bf16 [cpb][R] */
    t.total = t.dtw + (cpb * R + 1) / 2;
    return t;
}

/* Floats from one x_proj slice's partials to the next: rounded up to 4, so
 * phase C sums them in 16-byte loads. */
__host__ __device__ static inline int mk_xpart_ld(int P) { return (P + 3) & ~3; }

/* Floats of mk_dbc's partial sums [nq][ld] (nq * ld <= this), before its sums of squares. */
__host__ __device__ static inline int mk_part_floats(int ld) { return 4 * MK_THREADS > ld ? 4 * MK_THREADS : ld; }

#define MK_AK 128            /* keys of one attention chunk (staged in shared memory) */

static_assert(MK_AK / 16 <= MK_WARPS && 128 / 16 <= MK_WARPS, "mk_attn: a warp per 16 keys, per 16 value columns");
static_assert(CU_MAX_GQA <= 8, "mk_attn: a KV head's query heads are the rows g < 8 of the 16-row mma tiles");

/* mk_attn's shared memory, in floats from the region's start. */
struct mk_att_smem {
    int s, o, ml, b, total;
};

__host__ __device__ static inline mk_att_smem mk_att_layout(int G, int dq, int dv)
{
    mk_att_smem t;
    t.s = 0;                          /* float [G][MK_AK] scores */
    t.o = t.s + G * MK_AK;            /* float [G][dv] running output */
    t.ml = t.o + G * dv;              /* float [3][CU_MAX_GQA] running max, sum, rescale */
    t.b = t.ml + 3 * CU_MAX_GQA;      /* then bf16, 16-byte aligned (4 floats of slack): q [16][dq + 8], */
    t.total = t.b + 4 + (16 * (dq + 8) + 16 * (MK_AK + 8) + MK_AK * (dq + 8) + MK_AK * (dv + 8)) / 2;
    return t;                         /* P [16][MK_AK + 8], the chunk's K [MK_AK][dq + 8] and V [MK_AK][dv + 8] */
}

__host__ __device__ static inline mk_smem mk_smem_layout(int H, int Di, int I, int P, int nh, int nkv, int dq, int dv,
                                                        int cpb, int R)
{
    mk_smem s;
    int kmax = H > Di ? H : Di;
    kmax = kmax > I ? kmax : I;
    int fsn = 4 * (H > Di ? H : Di);
    s.xs = 0;                                   /* float [2][kmax/8][4]: the GEMV input (mk_xput) */
    s.fs = s.xs + (kmax + 7) / 8 * 8;           /* float [fsn] */
    s.dbc = s.fs;                               /* float [P] */
    s.ucs = s.dbc + P;                          /* float [MK_SLICE] */
    s.att = (s.ucs + MK_SLICE + 3) & ~3;        /* mk_attn (mk_att_layout); phase C: mk_dbc's partial sums */
    s.total = s.att + mk_att_layout(nh / nkv, dq, dv).total;
    /* phase B: the x_proj columns (bf16 [P rounded up to 16][MK_XWL], aligned) at s.att */
    const int xw_end = s.att + 4 + ((P + 15) & ~15) * MK_XWL / 2;
    s.total = s.total > xw_end ? s.total : xw_end;
    const int ld = mk_xpart_ld(P), part_end = s.att + mk_part_floats(ld) + 3 * MK_WARPS;   /* [nq][ld], [MK_WARPS][3] */
    s.sst = xw_end > part_end ? xw_end : part_end;   /* phases B and C of the SSM blocks: mk_sst, after both */
    const int sst_end = s.sst + mk_sst_layout(cpb, R).total;
    s.total = s.total > sst_end ? s.total : sst_end;
    s.total = s.total > s.fs + fsn ? s.total : s.fs + fsn;
    return s;
}

__device__ __forceinline__ float ldf(const float *p) { return __ldcg(p); }
__device__ __forceinline__ float ldb(const bf16 *p)
{
    return __bfloat162float(__ushort_as_bfloat16(__ldcg(reinterpret_cast<const unsigned short *>(p))));
}

__device__ __forceinline__ unsigned ld_acquire(const unsigned *p)
{
    unsigned v;
    asm volatile("ld.acquire.gpu.global.u32 %0, [%1];" : "=r"(v) : "l"(p) : "memory");
    return v;
}

/* Barrier of the block's phase threads (the prefetch warp runs on its own). */
__device__ __forceinline__ void mk_bsync() { asm volatile("bar.sync 1, %0;" ::"n"(MK_THREADS) : "memory"); }

__device__ __forceinline__ float mk_block_sum(float v, float *red)
{
    return block_sum_of(v, red, MK_WARPS, [] { mk_bsync(); });
}

__device__ __forceinline__ unsigned long long globaltimer()
{
    unsigned long long t;
    asm volatile("mov.u64 %0, %globaltimer;" : "=l"(t));
    return t;
}

__shared__ long long *mk_sub;   /* MK_SUBTRACE: where this layer's sub-marks (MK_SUB) go, or NULL: not traced */
#define MK_SUB(k) do { if (MK_SUBTRACE && threadIdx.x == 0 && mk_sub) mk_sub[k] = clock64(); } while (0)
__shared__ unsigned mk_phase;   /* layer * 16 + the last mark (MK_MARK) thread 0 passed, for the prefetch warp */

/* Grid barrier: every block arrives once per call; the counter only grows
 * within a launch, so the target of the k-th barrier is k * gridDim.x.
 * stage() runs once the block is done with the phase (its shared memory is
 * free): copies the next phase needs that do not depend on the other blocks
 * land during the wait.  Thread 0 issues its part after it arrives, or its
 * release would wait for them. */
template <bool TRACE, class Stage>
__device__ __forceinline__ void mk_sync(const mk_args &a, unsigned *bar, unsigned &target, int id, Stage stage)
{
    target += gridDim.x;
    mk_bsync();
    if (threadIdx.x == 0) {
        if (TRACE)
            a.btrace[((size_t)id * gridDim.x + blockIdx.x) * 2] = globaltimer();
        asm volatile("red.release.gpu.global.add.u32 [%0], %1;" ::"l"(bar), "r"(1u) : "memory");
    }
    stage();
    if (threadIdx.x == 0) {
        while (ld_acquire(bar) < target)
            ;
        if (TRACE)
            a.btrace[((size_t)id * gridDim.x + blockIdx.x) * 2 + 1] = globaltimer();
    }
    mk_bsync();
}

template <bool TRACE>
__device__ __forceinline__ void mk_sync(const mk_args &a, unsigned *bar, unsigned &target, int id)
{
    mk_sync<TRACE>(a, bar, target, id, [] {});
}

/* n bf16 (n % 8 == 0, src 16-byte aligned) from global into shared memory
 * by cp.async; the reader waits (cp_async_wait_all) before a block barrier. */
__device__ __forceinline__ void mk_stage(const bf16 *src, int n, bf16 *dst)
{
#pragma unroll 1
    for (int i = threadIdx.x; i < n / 8; i += MK_THREADS)
        cp_async16(dst + 8 * i, src + 8 * i);
    cp_async_commit();
}

/* Warps numbered across the blocks first: a product's last, partial round of
 * rows (and the whole of a 1600-row one) spreads over every SM instead of
 * filling the first blocks (measured: +0.25 points, 9 of 10 paired rounds). */
__device__ __forceinline__ int mk_gwarp() { return (threadIdx.x >> 5) * gridDim.x + blockIdx.x; }
__device__ __forceinline__ int mk_nwarps() { return gridDim.x * MK_WARPS; }

enum { MK_OUT_BF16 = 0, MK_OUT_F32 = 1, MK_OUT_GATED = 2 };

/* The GEMV input in shared memory as floats (the values are bf16): element
 * i of 16-byte vector v = i / 8 at xs[v*4 + i%8] for i%8 < 4, else at
 * xs[xh + v*4 + i%8 - 4], so a lane reads its vector's 8 inputs as two
 * conflict-free float4 loads and converts nothing. */
__device__ __forceinline__ void mk_xput(float *xs, int xh, int i, float v)
{
    const int e = i & 7;
    xs[(e < 4 ? 0 : xh - 4) + (i >> 3) * 4 + e] = v;
}

__device__ __forceinline__ float dot8x(uint4 w, float4 lo, float4 hi)
{
    const float x[8] = { lo.x, lo.y, lo.z, lo.w, hi.x, hi.y, hi.z, hi.w };
    return dot8(w, x);
}

/*
 * out = W x for every row, each row (GATED: each gate/up pair) owned by one
 * warp, round robin over all warps of the grid; x (K % 8 == 0) in shared
 * memory as mk_xput lays it out.  U 16-byte weight loads per lane and row are in flight
 * before the first is used.
 */
template <int R, int U>
__device__ __forceinline__ void mk_gemv(const bf16 *W, int N, int K, const float *xs, int xh, int mode, bf16 *out,
                                       float *outf)
{
    const int lane = threadIdx.x & 31;
    const int kv = K >> 3;
    const float4 *xlo = reinterpret_cast<const float4 *>(xs), *xhi = reinterpret_cast<const float4 *>(xs + xh);
    for (int n0 = mk_gwarp() * R; n0 < N; n0 += mk_nwarps() * R) {
        float acc[R];
        const uint4 *wr[R];
#pragma unroll
        for (int r = 0; r < R; r++) {
            acc[r] = 0.0f;
            wr[r] = reinterpret_cast<const uint4 *>(W + (size_t)min(n0 + r, N - 1) * K);
        }
        for (int v = lane; v < kv; v += 32 * U) {
            uint4 w[R][U];
#pragma unroll
            for (int q = 0; q < U; q++)
#pragma unroll
                for (int r = 0; r < R; r++)
                    if (v + 32 * q < kv)
                        w[r][q] = ldg_stream(wr[r] + v + 32 * q);
#pragma unroll
            for (int q = 0; q < U; q++) {
                if (v + 32 * q < kv) {
                    const float4 lo = xlo[v + 32 * q], hi = xhi[v + 32 * q];
#pragma unroll
                    for (int r = 0; r < R; r++)
                        acc[r] += dot8x(w[r][q], lo, hi);
                }
            }
        }
#pragma unroll
        for (int r = 0; r < R; r++)
            acc[r] = warp_sum(acc[r]);
        if (lane != 0)
            continue;
        if (mode == MK_OUT_GATED) {
            float g = bfr(silu_f(bfr(acc[0])));
            out[n0 / 2] = f2b(g * bfr(acc[R - 1]));
            continue;
        }
#pragma unroll
        for (int r = 0; r < R; r++) {
            if (n0 + r >= N)
                break;
            if (mode == MK_OUT_BF16)
                out[n0 + r] = f2b(acc[r]);
            else
                outf[n0 + r] = bfr(acc[r]);
        }
    }
}

/* Where a norm finds its weights, staged by mk_stage during the barrier
 * before it (so the norm waits on no HBM round trip): resnorm's w [H] after
 * its H floats of x; the pre-average's avg1 [Di] then avg2 [Di] after its
 * 2 Di floats of att and SSM output. */
__device__ __forceinline__ bf16 *mk_norm_w(const mk_args &a, float *fs) { return reinterpret_cast<bf16 *>(fs + a.H); }
__device__ __forceinline__ bf16 *mk_avg_w(const mk_args &a, float *fs) { return reinterpret_cast<bf16 *>(fs + 2 * a.Di); }

/*
 * xs = RMSNorm(x; w) as bf16, x = xin (+ y rounded to bf16) — every block
 * computes it for itself; block 0 stores the new residual to xout (unless
 * NULL).  fs: H floats of x, then w as staged (mk_norm_w).  Loads of 16
 * bytes: all blocks read the same few KB at once, and a round of that in
 * 2-byte loads took ~1.7 us, in 16-byte ones 0.85 (RESULTS step 70).
 */
__device__ __forceinline__ void mk_resnorm(const mk_args &a, const bf16 *xin, bool add, bf16 *xout, float *xs,
                                          float *fs, float *red)
{
    const bf16 *ws = mk_norm_w(a, fs);   /* staged by the barrier before (mk_stage) */
    const uint4 *xv = reinterpret_cast<const uint4 *>(xin), *yv = reinterpret_cast<const uint4 *>(a.y);
    float ss = 0.0f;
#pragma unroll 1
    for (int i = threadIdx.x; i < a.H / 8; i += MK_THREADS) {
        const uint4 xr = __ldcg(xv + i), yr = add ? __ldcg(yv + i) : make_uint4(0, 0, 0, 0);
        float x[8], y[8];
        unpack8(xr, x);
        unpack8(yr, y);
#pragma unroll
        for (int e = 0; e < 8; e++) {
            x[e] = bfr(x[e] + y[e]);   /* exact when y is 0: x is bf16 */
            ss += x[e] * x[e];
        }
        reinterpret_cast<float4 *>(fs)[2 * i] = make_float4(x[0], x[1], x[2], x[3]);
        reinterpret_cast<float4 *>(fs)[2 * i + 1] = make_float4(x[4], x[5], x[6], x[7]);
        if (xout && blockIdx.x == 0)
            reinterpret_cast<uint4 *>(xout)[i] = make_uint4(pack_bf16(x[0], x[1]), pack_bf16(x[2], x[3]),
                                                            pack_bf16(x[4], x[5]), pack_bf16(x[6], x[7]));
    }
    MK_SUB(12);
    cp_async_wait_all();   /* w, staged during the barrier, is first read after the block sum's barrier */
    ss = mk_block_sum(ss, red);
    MK_SUB(13);
    float r = rsqrtf(ss / (float)a.H + a.eps);
#pragma unroll 1
    for (int i = threadIdx.x; i < a.H; i += MK_THREADS)
        mk_xput(xs, a.xh, i, bfr(b2f(ws[i]) * bfr(fs[i] * r)));
    mk_bsync();
    MK_SUB(14);
}

/* Phase B: conv step + SiLU of the 128-channel slices of block b of nb,
 * then each slice's x_proj partials (tensor-core products, measured 2 %
 * faster than a warp sum per row); the slice's x_proj columns (xw: bf16
 * [P][MK_XWL]) are staged in shared memory by cp.async while the conv runs. */
__device__ __forceinline__ void mk_conv_xproj(const mk_args &a, const mk_layer &l, const cu_desc &d, int layer,
                                              float *ucs, bf16 *xw, int b, int nb)
{
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int nslice = (a.Di + MK_SLICE - 1) / MK_SLICE, dc = a.dc, Di = a.Di, P = a.P;
    float *st = d.conv + (size_t)layer * dc * Di;   /* [dc][Di], oldest first */
    const bf16 *xsrc = a.u + l.xs_off;
    const bf16 *cw = l.conv_w, *xp = l.x_proj;
    const float *cb = l.conv_b;
    for (int sl = b; sl < nslice; sl += nb) {
        const int c0 = sl * MK_SLICE, cn = min(MK_SLICE, Di - c0), pc = cn / 8;
#pragma unroll 1
        for (int i = threadIdx.x; i < P * pc; i += MK_THREADS)
            cp_async16(xw + (i / pc) * MK_XWL + 8 * (i % pc), xp + (size_t)(i / pc) * Di + c0 + 8 * (i % pc));
        cp_async_commit();
        if (threadIdx.x < MK_SLICE) {
            const int cl = threadIdx.x, c = c0 + cl;
            float v = 0.0f;
            if (cl < cn) {
                /* the window: the state's dc-1 newest inputs, then this one (selected per k, not
                 * stored at win[dc - 1]: that index made win a local-memory array) */
                const float xn = ldb(xsrc + c);
                float win[8], w[8];
#pragma unroll
                for (int k = 0; k < 8; k++) {
                    win[k] = k + 1 < dc ? st[(size_t)(k + 1) * Di + c] : k + 1 == dc ? xn : 0.0f;
                    w[k] = k < dc ? b2f(cw[c * dc + k]) : 0.0f;
                }
                float acc = cb ? cb[c] : 0.0f;
#pragma unroll
                for (int k = 0; k < 8; k++) {
                    if (k < dc) {
                        acc += w[k] * win[k];
                        st[(size_t)k * Di + c] = win[k];
                    }
                }
                v = bfr(silu_f(acc));
                a.uc[c] = v;
            }
            ucs[cl] = v;
        }
        const int P16 = (P + 15) & ~15, cn16 = (cn + 15) & ~15;
        if (cn16 != cn)   /* the columns the products read past the slice: zeros (u is 0 there, but 0 * NaN is not) */
            for (int r = threadIdx.x; r < P16; r += MK_THREADS)
                *reinterpret_cast<uint4 *>(xw + r * MK_XWL + cn) = make_uint4(0, 0, 0, 0);
        cp_async_wait_all();
        mk_bsync();
        /* x_proj partials on the tensor cores: warp w, rows 16w..16w+15 (rows past P are not read back),
         * u as the column 0 of the 16x8 operand (every column gets it; only column 0 is read back) */
        for (int mt = warp; mt < P16 / 16; mt += MK_WARPS) {
            float c[4] = {};
            for (int kk = 0; kk < cn16; kk += 16) {
                uint32_t wa[4];
                ldsm_x4(wa, xw + (mt * 16 + (lane & 15)) * MK_XWL + kk + (lane >> 4) * 8);
                const int k = kk + 2 * (lane & 3);
                mma16816(c, wa, pack_bf16(ucs[k], ucs[k + 1]), pack_bf16(ucs[k + 8], ucs[k + 9]));
            }
            const int r = mt * 16 + (lane >> 2);
            if ((lane & 3) == 0) {
                if (r < P)
                    a.xpart[(size_t)sl * mk_xpart_ld(P) + r] = c[0];
                if (r + 8 < P)
                    a.xpart[(size_t)sl * mk_xpart_ld(P) + r + 8] = c[2];
            }
        }
        mk_bsync();
    }
}

/* Element pair (j, j + dq/2) of the q or k head row hd (in u) at position
 * pos, rotated when the model uses RoPE. */
__device__ __forceinline__ void mk_rope_load(const mk_args &a, const bf16 *hd, int j, int pos, float *x0, float *x1)
{
    *x0 = ldb(hd + j);
    *x1 = ldb(hd + j + a.dq / 2);
    if (a.rope) {
        float c, sn;
        rope_cs(a.inv_freq, j, pos, &c, &sn);
        rope_rot(*x0, *x1, c, sn, x0, x1);
    }
}

/* Phase B, owner layers: rotate k and store k, v into the cache slot of this position. */
__device__ __forceinline__ void mk_kv_store(const mk_args &a, const mk_layer &l, const cu_desc &d, int layer)
{
    const int pos = d.pos, half = a.dq / 2;
    const int slot = kv_slot(l.gd, pos);
    bf16 *K = d.kv[2 * layer] + (size_t)slot * a.nkv * a.dq;
    bf16 *V = d.kv[2 * layer + 1] + (size_t)slot * a.nkv * a.dv;
#pragma unroll 1
    for (int i = threadIdx.x; i < a.nkv * half; i += MK_THREADS) {
        int h = i / half, j = i % half;
        float x0, x1;
        mk_rope_load(a, a.u + l.k_off + h * a.dq, j, pos, &x0, &x1);
        K[h * a.dq + j] = f2b(x0);
        K[h * a.dq + j + half] = f2b(x1);
    }
#pragma unroll 1
    for (int i = threadIdx.x; i < a.nkv * a.dv; i += MK_THREADS)
        V[i] = f2b(ldb(a.u + l.v_off + i));
}

/* Phase B, SSM blocks: block b's inputs of the phase C step that no other
 * block writes in this step (state, A, D, dt bias, dt_proj rows, the dt/B/C
 * norm weights) into shared memory, so phase C waits only for what phase B
 * computes (x_proj partials, conv output): two HBM round trips fewer on the
 * critical path; this phase is the attention's length anyway. */
__device__ __forceinline__ void mk_ssm_stage(const mk_args &a, const mk_layer &l, const cu_desc &d, int layer, int b,
                                             float *sst)
{
    const mk_sst t = mk_sst_layout(a.cpb, a.R);
    const int cbeg = b * a.cpb, cnt = min(a.cpb, a.Di - cbeg), R = a.R;
    if (cnt > 0) {
        const float *h = d.ssm + ((size_t)layer * a.Di + cbeg) * CU_D_STATE;
#pragma unroll 1
        for (int i = threadIdx.x; i < cnt * CU_D_STATE; i += MK_THREADS) {
            cp_async4(sst + t.h + i, h + i);
            cp_async4(sst + t.A + i, l.A + (size_t)cbeg * CU_D_STATE + i);
        }
        const unsigned *dw = reinterpret_cast<const unsigned *>(l.dt_w + (size_t)cbeg * R);   /* cbeg, cnt even */
#pragma unroll 1
        for (int i = threadIdx.x; i < cnt * R / 2; i += MK_THREADS)
            cp_async4(sst + t.dtw + i, dw + i);
#pragma unroll 1
        for (int i = threadIdx.x; i < cnt; i += MK_THREADS) {
            cp_async4(sst + t.D + i, l.D + cbeg + i);
            cp_async4(sst + t.dtb + i, l.dt_b + cbeg + i);
        }
        cp_async_commit();
    }
    if (a.norms) {
#pragma unroll 1
        for (int i = threadIdx.x; i < R + 2 * CU_D_STATE; i += MK_THREADS) {
            const int j = i - R - CU_D_STATE;
            sst[t.nw + i] = b2f(i < R ? l.dt_norm[i] : j < 0 ? l.B_norm[i - R] : l.C_norm[j]);
        }
    }
    cp_async_wait_all();
    mk_bsync();
}

/* Phase C: dt, B, C of this position (x_proj partials summed, then their
 * RMSNorms) into dbc; part: shared memory for the partial sums (mk_smem's
 * att, free in phase C).  nq threads per 4 values, each over every nq-th
 * slice, in 16-byte loads (1 % faster than 4-byte ones, RESULTS step 72). */
__device__ __forceinline__ void mk_dbc(const mk_args &a, const float *sst, float *dbc, float *part)
{
    const int nslice = (a.Di + MK_SLICE - 1) / MK_SLICE, P = a.P, ld = mk_xpart_ld(P), nv = ld / 4;
    const mk_sst t = mk_sst_layout(a.cpb, a.R);
    const int nq = max(1, MK_THREADS / nv);
    const float4 *xp = reinterpret_cast<const float4 *>(a.xpart);   /* [nslice][nv] */
#pragma unroll 1
    for (int i = threadIdx.x; i < nv * nq; i += MK_THREADS) {
        const int v4 = i % nv, q = i / nv;
        float4 s = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
#pragma unroll 1
        for (int k0 = q; k0 < nslice; k0 += 4 * nq) {
            float4 v[4];
#pragma unroll
            for (int j = 0; j < 4; j++) {
                const int k = k0 + j * nq;
                v[j] = k < nslice ? __ldcg(xp + (size_t)k * nv + v4) : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
            }
#pragma unroll
            for (int j = 0; j < 4; j++) {
                s.x += v[j].x;
                s.y += v[j].y;
                s.z += v[j].z;
                s.w += v[j].w;
            }
        }
        reinterpret_cast<float4 *>(part + q * ld)[v4] = s;   /* part: float [nq][ld] */
    }
    mk_bsync();
    MK_SUB(7);
    /* thread i < P: value i (P <= MK_THREADS: mega_unsupported) */
    const int i = threadIdx.x, lane = i & 31, warp = i >> 5, R = a.R;
    float x = 0.0f;
    if (i < P) {
        for (int q = 0; q < nq; q++)
            x += part[q * ld + i];
        x = bfr(x);
    }
    if (!a.norms) {
        if (i < P)
            dbc[i] = x;
        mk_bsync();
        MK_SUB(8);
        return;
    }
    /* the RMSNorms of dt, B and C: each warp's sums of squares of its values
     * of each, then every value normalized, one block barrier in between
     * (three warps that each summed and normalized one vector took two
     * barriers and a chain of dependent loads: 0.5-1 % slower, RESULTS step 124) */
    const int seg = i < R ? 0 : i < R + CU_D_STATE ? 1 : 2;
    const float x2 = i < P ? x * x : 0.0f;
    const float q0 = warp_sum(seg == 0 ? x2 : 0.0f), q1 = warp_sum(seg == 1 ? x2 : 0.0f),
                q2 = warp_sum(seg == 2 ? x2 : 0.0f);
    float *sq = part + mk_part_floats(ld);   /* [MK_WARPS][3], past the partial sums */
    if (lane == 0) {
        sq[3 * warp] = q0;
        sq[3 * warp + 1] = q1;
        sq[3 * warp + 2] = q2;
    }
    mk_bsync();
    MK_SUB(8);
    if (i < P) {
        float ss = 0.0f;
        for (int w = 0; w < (P + 31) / 32; w++)
            ss += sq[3 * w + seg];
        const float r = rsqrtf(ss / (float)(seg == 0 ? R : CU_D_STATE) + a.eps);
        dbc[i] = bfr(sst[t.nw + i] * bfr(x * r));   /* the weights staged by mk_ssm_stage */
    }
    mk_bsync();
    MK_SUB(9);
}

/* Phase C: the SSM step of the channels of block b (cpb of them): a quad
 * of threads per channel, each with a quarter of the dt_proj dot and four
 * of the states (one pass for 48 channels where a thread per (channel,
 * state) took two: +1.0 %, RESULTS step 87); the inputs staged by
 * mk_ssm_stage; only the conv output and the gate come from global memory. */
static_assert(CU_D_STATE == 16, "mk_ssm: four states on each thread of a quad");
__device__ __forceinline__ void mk_ssm(const mk_args &a, const mk_layer &l, const cu_desc &d, int layer,
                                       const float *dbc, const float *sst, int b)
{
    const mk_sst t = mk_sst_layout(a.cpb, a.R);
    const int cbeg = b * a.cpb, cnt = min(a.cpb, a.Di - cbeg);
    if (cnt <= 0)
        return;
    const int R = a.R;
    const bf16 *dtw = reinterpret_cast<const bf16 *>(sst + t.dtw);   /* [cnt][R] */
    const int work = cnt * 4, lim = (work + 31) & ~31;   /* a quad of threads per channel; whole warps: shuffles */
    MK_SUB(10);
#pragma unroll 1
    for (int idx = threadIdx.x; idx < lim; idx += MK_THREADS) {
        const bool valid = idx < work;
        const int q = idx & 3, cl = valid ? idx >> 2 : cnt - 1, c = cbeg + cl;
        const float uv = ldf(a.uc + c), z = ldb(a.u + l.z_off + c);
        const bf16 *dr = dtw + cl * R;
        float acc0 = 0.0f, acc1 = 0.0f;   /* two chains of the dt_proj dot */
        for (int k = q; k < R; k += 8) {
            acc0 += dbc[k] * b2f(dr[k]);
            if (k + 4 < R)
                acc1 += dbc[k + 4] * b2f(dr[k + 4]);
        }
        float acc = acc0 + acc1;
        acc += __shfl_xor_sync(0xffffffffu, acc, 1);
        acc += __shfl_xor_sync(0xffffffffu, acc, 2);
        const float delta = softplus_f(bfr(acc) + sst[t.dtb + cl]);
        const float4 A4 = reinterpret_cast<const float4 *>(sst + t.A)[cl * 4 + q];   /* states 4q .. 4q+3 */
        const float4 h4 = reinterpret_cast<const float4 *>(sst + t.h)[cl * 4 + q];
        const float Av[4] = { A4.x, A4.y, A4.z, A4.w }, hv[4] = { h4.x, h4.y, h4.z, h4.w };
        float h[4], yp = 0.0f;
#pragma unroll
        for (int e = 0; e < 4; e++) {
            const int s = 4 * q + e;
            h[e] = expf(Av[e] * delta) * hv[e] + (delta * dbc[R + s]) * uv;
            yp += dbc[R + CU_D_STATE + s] * h[e];
        }
        if (valid)
            reinterpret_cast<float4 *>(d.ssm + ((size_t)layer * a.Di + c) * CU_D_STATE)[q] =
                make_float4(h[0], h[1], h[2], h[3]);
        yp += __shfl_xor_sync(0xffffffffu, yp, 1);
        yp += __shfl_xor_sync(0xffffffffu, yp, 2);
        const float y = yp + sst[t.D + cl] * uv;
        if (valid && q == 0)
            a.sout[c] = bfr(y * silu_f(z));
    }
    MK_SUB(11);
}

/*
 * Phase B: attention of the G query heads of one KV head over one slice of
 * the keys (unit = blockIdx.x), in chunks of MK_AK keys with an online
 * softmax across chunks.  Written for small code, not unrolled over heads:
 * the persistent kernel runs every phase's code once per layer, so its
 * size, not its arithmetic, decides what the instruction caches hold.
 *   K and V rows of the chunk: staged in shared memory by cp.async, all at once;
 *   scores and P.V: tensor-core products (mma m16n8k16, bf16 in, fp32 sums),
 *   the G heads as the rows of a 16-row tile (rows G..15 are not read back),
 *   one warp per 16 keys (scores) or 16 output columns (P.V): a few dependent
 *   instructions per warp where one thread per output ran a chain of 64;
 *   softmax: one warp per head.
 */
__device__ __forceinline__ void mk_attn(const mk_args &a, const mk_layer &l, const cu_desc &d, float *sm)
{
    const int unit = blockIdx.x;
    if (unit >= a.nu)
        return;
    const int G = a.nh / a.nkv, kvh = unit / a.nsa, split = unit % a.nsa, dq = a.dq, dv = a.dv;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, half = dq / 2, tid = threadIdx.x;
    const int p = d.pos, LQ = dq + 8, LV = dv + 8, LP = MK_AK + 8;
    const bf16 *K = d.kv[2 * l.kv_src];
    const bf16 *V = d.kv[2 * l.kv_src + 1];
    const keyset ks = keys_of(l.gd, p, p);
    const int per = (ks.n + a.nsa - 1) / a.nsa;
    const int k0 = split * per, k1 = min(ks.n, k0 + per);
    const mk_att_smem t = mk_att_layout(G, dq, dv);
    float *s = sm + t.s;                  /* [G][MK_AK] scores */
    float *o = sm + t.o;                  /* [G][dv] running output */
    float *mrun = sm + t.ml;              /* [G] running max, [G] sum, [G] rescale */
    float *lrun = mrun + CU_MAX_GQA, *alpha = lrun + CU_MAX_GQA;
    /* bf16, rows padded by 16 bytes (ldmatrix phases on distinct banks): q [16][LQ], P [16][LP],
     * K [MK_AK][LQ], V [MK_AK][LV] */
    bf16 *Qb = reinterpret_cast<bf16 *>(((uintptr_t)(sm + t.b) + 15) & ~(uintptr_t)15);
    bf16 *Pb = Qb + 16 * LQ, *Ks = Pb + 16 * LP, *Vs = Ks + MK_AK * LQ;
    const int kc = dq / 8, vc = dv / 8;   /* 16-byte pieces of a K row, of a V row */

    for (int i = tid; i < G * dv; i += MK_THREADS)
        o[i] = 0.0f;
    if (tid < G) {
        mrun[tid] = -INFINITY;
        lrun[tid] = 0.0f;
    }
    for (int c0 = k0; c0 < k1; c0 += MK_AK) {
        const int nk = min(MK_AK, k1 - c0), nk16 = (nk + 15) & ~15;
        /* the chunk's K and V rows into shared memory at once: one round of
         * loads for the whole chunk instead of dependent rounds per key */
        for (int i = tid; i < nk * (kc + vc); i += MK_THREADS) {
            const int k = i / (kc + vc), e = i % (kc + vc);
            const size_t row = (size_t)kv_slot(l.gd, key_pos(ks, c0 + k)) * a.nkv + kvh;
            if (l.owner && c0 + k == ks.n - 1)   /* this position's own key: below */
                continue;
            if (e < kc)
                cp_async16(Ks + k * LQ + 8 * e, K + row * dq + 8 * e);
            else
                cp_async16(Vs + k * LV + 8 * (e - kc), V + row * dv + 8 * (e - kc));
        }
        cp_async_commit();
        /* zeros in the V rows nk..nk16 that P.V reads (P is 0 there, but 0 * NaN is not) */
        for (int i = tid; i < (nk16 - nk) * vc; i += MK_THREADS)
            reinterpret_cast<uint4 *>(Vs + (nk + i / vc) * LV)[i % vc] = make_uint4(0, 0, 0, 0);
        {   /* meanwhile q (first chunk) and, owner layers, this position's K row (rotated as mk_kv_store stores
             * it) and V row from u (last chunk): one round of loads, and no wait for the cache store */
            const int nq = c0 == k0 ? G * half : 0, nn = l.owner && c0 + nk == ks.n ? half + dv : 0;
            bf16 *Kr = Ks + (nk - 1) * LQ, *Vr = Vs + (nk - 1) * LV;
            for (int i = tid; i < nq + nn; i += MK_THREADS) {
                if (i >= nq + half) {
                    Vr[i - nq - half] = f2b(ldb(a.u + l.v_off + kvh * dv + i - nq - half));
                    continue;
                }
                const bool q = i < nq;
                const int j = q ? i / half : 0, e = q ? i % half : i - nq;
                float x0, x1;
                mk_rope_load(a, a.u + (q ? (size_t)(kvh * G + j) * dq : l.k_off + kvh * dq), e, p, &x0, &x1);
                bf16 *dst = q ? Qb + j * LQ : Kr;   /* q rounded to bf16, as the reference stores it */
                dst[e] = f2b(x0);
                dst[e + half] = f2b(x1);
            }
        }
        MK_SUB(0);
        cp_async_wait_all();
        mk_bsync();
        MK_SUB(1);
        /* scores: warp w, keys 16w..16w+15 (two 8-key tiles) */
        if (warp < nk16 / 16) {
            float c[2][4] = {};
            for (int kk = 0; kk < dq; kk += 16) {
                uint32_t qa[4], kb[4];
                ldsm_x4(qa, Qb + (lane & 15) * LQ + kk + (lane >> 4) * 8);
                ldsm_x4(kb, Ks + (warp * 16 + (lane & 7) + ((lane >> 4) << 3)) * LQ + kk + ((lane >> 3) & 1) * 8);
                mma16816(c[0], qa, kb[0], kb[1]);
                mma16816(c[1], qa, kb[2], kb[3]);
            }
            const int g = lane >> 2, key = warp * 16 + 2 * (lane & 3);   /* row g: head g; rows g + 8 >= G */
            if (g < G)
                for (int h = 0; h < 2; h++)
                    for (int e = 0; e < 2; e++)
                        if (key + 8 * h + e < nk)
                            s[g * MK_AK + key + 8 * h + e] = c[h][e] * a.scale;
        }
        mk_bsync();
        MK_SUB(2);
        if (warp < G) {
            float *sj = s + warp * MK_AK;
            bf16 *pj = Pb + warp * LP;
            float mx = -INFINITY;
            for (int k = lane; k < nk; k += 32)
                mx = fmaxf(mx, sj[k]);
            mx = warp_max(mx);
            float mnew = fmaxf(mrun[warp], mx), sum = 0.0f;
            for (int k = lane; k < nk16; k += 32) {
                float pk = k < nk ? expf(sj[k] - mnew) : 0.0f;
                sum += pk;
                pj[k] = f2b(pk);   /* P.V uses P rounded to bf16, as the reference does */
            }
            sum = warp_sum(sum);
            if (lane == 0) {
                float al = mrun[warp] == -INFINITY ? 0.0f : expf(mrun[warp] - mnew);
                alpha[warp] = al;
                lrun[warp] = lrun[warp] * al + sum;
                mrun[warp] = mnew;
            }
        }
        mk_bsync();
        MK_SUB(3);
        /* P.V: warp w, output columns 16w..16w+15 (two 8-column tiles), all keys of the chunk */
        if (warp < dv / 16) {
            float c[2][4] = {};
            for (int kk = 0; kk < nk16; kk += 16) {
                uint32_t pa[4], vb[4];
                ldsm_x4(pa, Pb + (lane & 15) * LP + kk + (lane >> 4) * 8);
                ldsm_x4_t(vb, Vs + (kk + (lane & 7) + (((lane >> 3) & 1) << 3)) * LV + warp * 16 + (lane >> 4) * 8);
                mma16816(c[0], pa, vb[0], vb[1]);
                mma16816(c[1], pa, vb[2], vb[3]);
            }
            const int g = lane >> 2, col = warp * 16 + 2 * (lane & 3);
            if (g < G)
                for (int h = 0; h < 2; h++)
                    for (int e = 0; e < 2; e++) {
                        float *op = o + g * dv + col + 8 * h + e;
                        *op = *op * alpha[g] + c[h][e];
                    }
        }
        mk_bsync();
        MK_SUB(4);
    }
    mk_bsync();   /* a unit without keys: the softmax state its thread wrote */
    MK_SUB(5);
    for (int i = tid; i < G * dv; i += MK_THREADS) {
        const int j = i / dv, e = i % dv;
        size_t sl = (size_t)(kvh * G + j) * a.nsa + split;
        a.o[sl * dv + e] = o[i];
        if (e == 0) {
            a.ml[sl * 2] = mrun[j];
            a.ml[sl * 2 + 1] = lrun[j];
        }
    }
    MK_SUB(6);
}

/* Phase C: merge the key splits of each (head, column) into att (bf16
 * values), block b of nb; all of a column's partials are loaded at once. */
__device__ __forceinline__ void mk_attn_merge(const mk_args &a, int b, int nb)
{
    const int n = a.nh * a.dv, nsa = a.nsa;
    const int per = (n + nb - 1) / nb;
#pragma unroll 1
    for (int i = b * per + threadIdx.x; i < min(n, (b + 1) * per); i += MK_THREADS) {
        const int h = i / a.dv, e = i % a.dv;
        const float *ml = a.ml + (size_t)h * nsa * 2;
        const float *o = a.o + (size_t)h * nsa * a.dv + e;
        float mv[MK_SPLITS_MAX], lv[MK_SPLITS_MAX], ov[MK_SPLITS_MAX];
#pragma unroll
        for (int k = 0; k < MK_SPLITS_MAX; k++) {
            bool in = k < nsa;
            mv[k] = in ? ldf(ml + 2 * k) : -INFINITY;
            lv[k] = in ? ldf(ml + 2 * k + 1) : 0.0f;
            ov[k] = in ? ldf(o + (size_t)k * a.dv) : 0.0f;
        }
        float M = -INFINITY;
#pragma unroll
        for (int k = 0; k < MK_SPLITS_MAX; k++)
            M = fmaxf(M, mv[k]);
        float L = 0.0f, acc = 0.0f;   /* one exp per split and one division: the unrolled loop stays small */
#pragma unroll
        for (int k = 0; k < MK_SPLITS_MAX; k++) {
            const float w = mv[k] == -INFINITY ? 0.0f : expf(mv[k] - M);
            L += lv[k] * w;
            acc += ov[k] * w;
        }
        acc = L > 0.0f ? acc / L : 0.0f;
        a.att[i] = bfr(acc);
    }
}

/* Phase D prologue: xs = bf16(bf16(RMS(att; avg1) + RMS(ssm; avg2)) / 2), every block. */
__device__ __forceinline__ void mk_preavg(const mk_args &a, float *xs, float *fs, float *red)
{
    float *as = fs, *ss = fs + a.Di;
    const bf16 *w1 = mk_avg_w(a, fs), *w2 = w1 + a.Di;   /* staged by the barrier before */
    float s1 = 0.0f, s2 = 0.0f;
    const float4 *av = reinterpret_cast<const float4 *>(a.att), *sv = reinterpret_cast<const float4 *>(a.sout);
#pragma unroll 1
    for (int i0 = threadIdx.x; i0 < a.Di / 4; i0 += 2 * MK_THREADS) {   /* two of each in flight, 16 bytes each */
        float4 at[2], st[2];
#pragma unroll
        for (int q = 0; q < 2; q++) {
            const int i = i0 + q * MK_THREADS;
            at[q] = i < a.Di / 4 ? __ldcg(av + i) : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
            st[q] = i < a.Di / 4 ? __ldcg(sv + i) : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
        }
#pragma unroll
        for (int q = 0; q < 2; q++) {
            const int i = i0 + q * MK_THREADS;
            if (i >= a.Di / 4)
                break;
            reinterpret_cast<float4 *>(as)[i] = at[q];
            reinterpret_cast<float4 *>(ss)[i] = st[q];
            s1 += at[q].x * at[q].x + at[q].y * at[q].y + at[q].z * at[q].z + at[q].w * at[q].w;
            s2 += st[q].x * st[q].x + st[q].y * st[q].y + st[q].z * st[q].z + st[q].w * st[q].w;
        }
    }
    cp_async_wait_all();   /* avg1, avg2, staged during the barrier, are first read after the block sums' barriers */
    s1 = mk_block_sum(s1, red);
    s2 = mk_block_sum(s2, red);
    MK_SUB(15);
    float r1 = rsqrtf(s1 / (float)a.Di + a.eps), r2 = rsqrtf(s2 / (float)a.Di + a.eps);
#pragma unroll 1
    for (int i = threadIdx.x; i < a.Di; i += MK_THREADS) {
        float n1 = bfr(b2f(w1[i]) * bfr(as[i] * r1));
        float n2 = bfr(b2f(w2[i]) * bfr(ss[i] * r2));
        mk_xput(xs, a.xh, i, bfr(bfr(n1 + n2) * 0.5f));
    }
    mk_bsync();
}

/* xs = act (bf16 [I], I % 8 == 0) from global memory. */
__device__ void mk_load_vec(const bf16 *src, int n, float *xs, int xh)
{
    const uint4 *s = reinterpret_cast<const uint4 *>(src);
#pragma unroll 1
    for (int i = threadIdx.x; i < n / 8; i += MK_THREADS) {
        float f[8];
        unpack8(__ldcg(s + i), f);
        reinterpret_cast<float4 *>(xs)[i] = make_float4(f[0], f[1], f[2], f[3]);
        reinterpret_cast<float4 *>(xs + xh)[i] = make_float4(f[4], f[5], f[6], f[7]);
    }
    mk_bsync();
}

/*
 * The prefetch warp.  The products stream their rows at close to the copy
 * rate, but between them HBM idles through ~20-25 us of norms, phase C and
 * barriers per layer.  An extra warp asks L2 for the rows this
 * block's warps will read in the next two products, in the order mk_gemv
 * reads them, whenever thread 0's last mark says the block is in one of
 * those quiet stretches; the product then reads them from L2.  Not during
 * phase B: its K/V reads are HBM round trips on the critical path
 * (measured: prefetching there too lost 0.6 points).  The rate is set by
 * how many pieces the warp asks for per look at the phase: at one it asked
 * for ~40 of a layer's ~92 MB, at four or more nearly all of it, but the
 * small phases' own L2 round trips queued behind (phase C 4.7 -> 7-10 us);
 * two measured best (RESULTS step 75).
 */
#define MK_QUIET ((1u << 0) | (1u << 2) | (1u << 4) | (1u << 5) | (1u << 6) | (1u << 7) | (1u << 9) | \
                  (1u << 10) | (1u << 12) | (1u << 14) | (1u << 15))   /* marks k: [k, k + 1) is quiet */

/* Product s of the step: 4 L + (0 out_proj, 1 gate/up, 2 down, 3 in_proj of layer L + 1, or after
 * the last layer the LM head: its first rows land in L2 while the last layer ends, RESULTS step 100). */
struct mk_pfprod {
    const char *W;   /* [N][rowb] bytes */
    int N, rowb, R;  /* rows, bytes per row, rows per warp item (mk_gemv's R) */
};

__device__ mk_pfprod mk_pf_prod(const mk_args &a, int s)
{
    const mk_layer *l = a.L + (s >> 2);
    if ((s & 3) == 3 && (s >> 2) + 1 == a.n_layers)   /* after the last layer's down: the LM head */
        return { reinterpret_cast<const char *>(a.lm_head), a.V, a.H * 2, 1 };
    switch (s & 3) {
    case 0: return { reinterpret_cast<const char *>(l->out_proj), a.H, a.Di * 2, 1 };
    case 1: return { reinterpret_cast<const char *>(l->gu), 2 * a.I, a.H * 2, 2 };
    case 2: return { reinterpret_cast<const char *>(l->down), a.H, a.I * 2, 1 };
    default: return { reinterpret_cast<const char *>(l[1].in_proj), l[1].rows, a.H * 2, 1 };
    }
}

/* The mark after which product s is being read (the marks of k_decode_mega). */
__device__ __forceinline__ unsigned mk_pf_start(int s)
{
    const unsigned L = s >> 2;
    switch (s & 3) {
    case 0: return L * 16 + 8;
    case 1: return L * 16 + 11;
    case 2: return L * 16 + 13;
    default: return (L + 1) * 16 + 1;
    }
}

__device__ __forceinline__ void mk_prefetch(const mk_args &a)
{
    if (!a.pf)
        return;
    const int lane = threadIdx.x & 31;
    const int g = gridDim.x, b = blockIdx.x, last = 4 * a.n_layers - 1;   /* the LM head */
    const unsigned quiet = MK_QUIET;   /* a local: its code's layout measured 1 % faster (RESULTS step 57) */
    int first = 0;                          /* the first product not being read yet */
    int s = 0, r = 0, w = 0, off = 0, ps = -1;   /* cursor: product, round, warp of the block, byte */
    mk_pfprod p = {};
    for (;;) {
        const unsigned ph = __shfl_sync(0xffffffffu, *(volatile unsigned *)&mk_phase, 0);   /* one view per warp */
        while (first <= last && mk_pf_start(first) <= ph)
            first++;
        if (first > last)
            return;
        if (s < first) {
            s = first;
            r = w = off = 0;
        }
        if (!((quiet >> (ph & 15)) & 1) || s > first + 1 || s > last) {
            __nanosleep(256);   /* measured: 1000 the same, 3000 or spinning -0.5 points */
            continue;
        }
        for (int k = 0; k < MK_PF_PIECES; k++) {
            if (s > first + 1 || s > last)
                break;
            if (ps != s) {
                p = mk_pf_prod(a, s);
                ps = s;
            }
            const int n0 = (w * g + b + r * MK_WARPS * g) * p.R;   /* mk_gwarp's item of warp w, round r */
            if (n0 >= p.N) {   /* round r ends at warp w: the next round, or the next product */
                s += w == 0;
                r = w == 0 ? 0 : r + 1;
                w = 0;
                continue;
            }
            const int item = min(p.R, p.N - n0) * p.rowb, n = min(MK_PF_CHUNK, item - off);
            if (128 * lane < n)   /* a line per lane: 1 % faster than one bulk prefetch of the piece (RESULTS step 73) */
                asm volatile("prefetch.global.L2 [%0];" ::"l"(p.W + (size_t)n0 * p.rowb + off + 128 * lane) : "memory");
            off += n;
            if (off == item) {
                off = 0;
                if (++w == MK_WARPS) {
                    w = 0;
                    r++;
                }
            }
        }
    }
}

/* TRACE: the instance HYMBA_CUDA_MEGA_TRACE runs; the other has no trace code
 * at all (measured: with the two blocks' marks compiled in but off, the step
 * was 5 % slower). */
template <bool TRACE>
__global__ void __launch_bounds__(MK_BLOCK_THREADS, 1) k_decode_mega(mk_args arg)
{
    extern __shared__ __align__(16) float smf[];
    /* The arguments in shared memory: when the phases were separate functions,
     * a reference to the parameter block made every thread copy it to its
     * stack and read it back through L1 (measured: 7 % of the step). */
    __shared__ mk_args a;
    __shared__ float red[32];
    __shared__ __align__(16) mk_layer l;    /* this layer's pointers: no reload from global after each store */
    __shared__ __align__(16) mk_layer ln;   /* the next layer's, fetched during this one */
    __shared__ cu_desc d;
    const mk_smem S = mk_smem_layout(arg.H, arg.Di, arg.I, arg.P, arg.nh, arg.nkv, arg.dq, arg.dv, arg.cpb, arg.R);
    float *xs = smf + S.xs;
    float *fs = smf + S.fs;
    unsigned target = 0;   /* the grid barrier's count */
    int xi = 0, layer = 0;

    if (threadIdx.x == 0) {
        a = arg;
        d = arg.desc[0];
        l = arg.L[0];
        mk_phase = 0;
        if (MK_SUBTRACE)
            mk_sub = NULL;
    }
    __syncthreads();   /* all warps, the prefetcher too */
    if (threadIdx.x >= MK_THREADS) {
        mk_prefetch(a);
        return;
    }
    if (TRACE && blockIdx.x == 0 && threadIdx.x == 0)
        a.trace[a.n_layers * MK_TRACE] = (long long)globaltimer();
    /* layer 0's input: the token's embedding row is the residual */
    mk_stage(l.in_norm, a.H, mk_norm_w(a, fs));
    mk_resnorm(a, a.embed + (size_t)d.token * a.H, false, a.x[0], xs, fs, red);
    for (layer = 0; layer < a.n_layers; layer++) {
        MK_MARK(0);
        if (layer > 0) {   /* l is this layer's already: taken over in the barrier before */
            mk_resnorm(a, a.x[xi], true, a.x[xi ^ 1], xs, fs, red);
            xi ^= 1;
        }
        MK_MARK(1);
        if (layer + 1 < a.n_layers && threadIdx.x < MK_LPIECES) {   /* the next layer's pointers, off the critical path */
            cp_async16(reinterpret_cast<char *>(&ln) + 16 * threadIdx.x,
                       reinterpret_cast<const char *>(a.L + layer + 1) + 16 * threadIdx.x);
            cp_async_commit();
        }
        /* A */
        mk_gemv<1, 8>(l.in_proj, l.rows, a.H, xs, a.xh, MK_OUT_BF16, a.u, NULL);
        MK_MARK(2);
        mk_sync<TRACE>(a, a.bar, target, layer * MK_NBAR);
        MK_MARK(3);
        /* B: attention units on the first nu blocks, conv + x_proj slices on
         * the others (both on every block, one after the other, when too few
         * are left); nothing in one depends on the other */
        mk_attn(a, l, d, smf + S.att);
        if (!a.split)
            mk_bsync();   /* the conv reuses the attention's shared memory */
        if (!a.split || (int)blockIdx.x >= a.nu) {
            const int b = blockIdx.x - a.split * a.nu, nb = gridDim.x - a.split * a.nu;
            mk_conv_xproj(a, l, d, layer, smf + S.ucs,
                          reinterpret_cast<bf16 *>(((uintptr_t)(smf + S.att) + 15) & ~(uintptr_t)15), b, nb);
            mk_ssm_stage(a, l, d, layer, b, smf + S.sst);
        }
        if (l.owner && blockIdx.x == gridDim.x - 1)
            mk_kv_store(a, l, d, layer);
        MK_MARK(4);
        mk_sync<TRACE>(a, a.bar, target, layer * MK_NBAR + 1);
        MK_MARK(5);
        /* C: the SSM step beside the merge of the attention's key splits */
        if (!a.split || (int)blockIdx.x >= a.nu) {
            mk_dbc(a, smf + S.sst, smf + S.dbc, smf + S.att);
            mk_ssm(a, l, d, layer, smf + S.dbc, smf + S.sst, blockIdx.x - a.split * a.nu);
        }
        if (!a.split || (int)blockIdx.x < a.nu)
            mk_attn_merge(a, blockIdx.x, a.split ? a.nu : gridDim.x);
        MK_MARK(6);
        mk_sync<TRACE>(a, a.bar, target, layer * MK_NBAR + 2, [&] {
            mk_stage(l.avg1, a.Di, mk_avg_w(a, fs));
            mk_stage(l.avg2, a.Di, mk_avg_w(a, fs) + a.Di);
        });
        MK_MARK(7);
        /* D */
        mk_preavg(a, xs, fs, red);
        MK_MARK(8);
        mk_gemv<1, 8>(l.out_proj, a.H, a.Di, xs, a.xh, MK_OUT_BF16, a.y, NULL);
        MK_MARK(9);
        mk_sync<TRACE>(a, a.bar, target, layer * MK_NBAR + 3, [&] { mk_stage(l.mlp_norm, a.H, mk_norm_w(a, fs)); });
        MK_MARK(10);
        /* E */
        mk_resnorm(a, a.x[xi], true, a.x[xi ^ 1], xs, fs, red);
        xi ^= 1;
        MK_MARK(11);
        mk_gemv<2, 4>(l.gu, 2 * a.I, a.H, xs, a.xh, MK_OUT_GATED, a.act, NULL);
        MK_MARK(12);
        mk_sync<TRACE>(a, a.bar, target, layer * MK_NBAR + 4);
        MK_MARK(13);
        /* F */
        mk_load_vec(a.act, a.I, xs, a.xh);
        mk_gemv<1, 8>(l.down, a.H, a.I, xs, a.xh, MK_OUT_BF16, a.y, NULL);
        MK_MARK(14);
        if (threadIdx.x < MK_LPIECES)   /* the next layer's pointers (long landed) */
            cp_async_wait_all();
        mk_sync<TRACE>(a, a.bar, target, layer * MK_NBAR + 5, [&] {   /* done with l: the next layer's replaces it */
            if (layer + 1 == a.n_layers) {
                mk_stage(a.final_norm, a.H, mk_norm_w(a, fs));
                return;
            }
            if (threadIdx.x < (int)(sizeof(mk_layer) / 4))
                reinterpret_cast<int *>(&l)[threadIdx.x] = reinterpret_cast<const int *>(&ln)[threadIdx.x];
            mk_stage(ln.in_norm, a.H, mk_norm_w(a, fs));
        });
        MK_MARK(15);
    }
    if (MK_SUBTRACE && threadIdx.x == 0)
        mk_sub = NULL;   /* the last layer's sub-marks are its own */
    mk_resnorm(a, a.x[xi], true, NULL, xs, fs, red);   /* the last residual is not needed */
    if (threadIdx.x == 0)   /* the LM head is being read: the prefetch warp is done (mk_pf_start) */
        *(volatile unsigned *)&mk_phase = a.n_layers * 16 + 1;
    mk_gemv<1, 8>(a.lm_head, a.V, a.H, xs, a.xh, MK_OUT_F32, NULL, a.logits);
    if (TRACE && blockIdx.x == 0 && threadIdx.x == 0) {
        a.trace[a.n_layers * MK_TRACE + 1] = (long long)globaltimer();
        a.trace[a.n_layers * MK_TRACE + 2] = clock64();
        a.trace[a.n_layers * MK_TRACE + 3] = a.trace[0];
    }
}

/* ------------------------------------------------------------------ host */

struct cu_mega {
    mk_args a;
    int nblk;
    size_t smem;
    void *mem;
    size_t bytes;
    void (*kernel)(mk_args);
    int traced;
};

int cu_mega_wanted = 1;   /* HYMBA_CUDA_MEGA=0 turns the persistent decode kernel off */
int cu_mega_split = 1;    /* HYMBA_CUDA_MEGA_SPLIT=0: both branches on every block, as on a GPU with too few SMs */
int cu_mega_pf = 1;       /* HYMBA_CUDA_MEGA_PF=0: no weight prefetch by the persistent kernel's extra warp */

void cu_mega_free(cu_ctx *ctx, cu_model *m)
{
    if (!m->mk)
        return;
    cu_free(ctx, m->mk->mem, m->mk->bytes);
    free(m->mk);
    m->mk = NULL;
}

/* Why the persistent kernel cannot run this model (NULL: it can). */
static const char *mega_unsupported(const cu_model *m)
{
    const hy_arch *a = &m->a;
    if (!m->use_gemv)
        return "a width not a multiple of 8";
    if (a->head_dim % 16 || a->head_dim > CU_MAX_HEAD_DIM)   /* mk_attn's products run 16 deep */
        return "its head size";
    if (a->v_head_dim != 32 && a->v_head_dim != 64 && a->v_head_dim != 128)
        return "its value head size";
    if (a->n_heads * a->v_head_dim != a->d_inner)
        return "attention width != d_inner";
    if (a->d_conv > 8)
        return "d_conv > 8";
    if (a->dt_rank + 2 * a->d_state > MK_THREADS)   /* mk_dbc: a thread per dt, B, C value */
        return "dt_rank + 2 d_state above the block's threads";
    for (int L = 0; L < a->n_layers; L++) {
        if ((uintptr_t)m->L[L].x_proj % 16)
            return "an x_proj matrix not 16-byte aligned";
        if ((uintptr_t)m->L[L].dt_w % 4)
            return "a dt_proj matrix not 4-byte aligned";
    }
    return NULL;
}

static int mega_init(cu_ctx *ctx, cu_model *m, hy_err *err)
{
    const hy_arch *A = &m->a;
    const char *why = mega_unsupported(m);
    if (why) {
        if (ctx->verbose)
            fprintf(stderr, "hymba: cuda: persistent decode kernel off for this model (%s)\n", why);
        return 0;
    }
    int coop = 0;
    CK(cudaDeviceGetAttribute(&coop, cudaDevAttrCooperativeLaunch, ctx->dev));
    if (!coop)
        return 0;
    cu_mega *mk = (cu_mega *)calloc(1, sizeof(*mk));
    if (!mk)
        return hy_err_set(err, -ENOMEM, "out of memory");
    mk_args &a = mk->a;
    a.H = A->hidden;
    a.Di = A->d_inner;
    a.I = A->intermediate;
    a.R = A->dt_rank;
    a.P = m->P;
    a.V = A->vocab;
    a.dc = A->d_conv;
    a.nh = A->n_heads;
    a.nkv = A->n_kv_heads;
    a.dq = A->head_dim;
    a.dv = A->v_head_dim;
    a.rope = A->rope;
    a.norms = A->inner_norms;
    a.eps = A->eps;
    a.scale = 1.0f / sqrtf((float)A->head_dim);
    a.n_layers = A->n_layers;
    a.embed = m->embed;
    a.lm_head = m->lm_head;
    a.final_norm = m->final_norm;
    a.inv_freq = m->inv_freq;
    mk->kernel = getenv("HYMBA_CUDA_MEGA_TRACE") ? k_decode_mega<true> : k_decode_mega<false>;
    {
        int kmax = a.H > a.Di ? a.H : a.Di;
        kmax = kmax > a.I ? kmax : a.I;
        a.xh = (kmax + 7) / 8 * 4;
    }

    mk->nblk = ctx->n_sm;
    if (a.nkv > mk->nblk) {   /* one block per attention unit at least */
        free(mk);
        return 0;
    }
    int nsa = mk->nblk / (2 * a.nkv);   /* half the blocks: the other half runs the SSM step meanwhile */
    a.nsa = nsa < 1 ? 1 : nsa > MK_SPLITS_MAX ? MK_SPLITS_MAX : nsa;
    a.nu = a.nkv * a.nsa;
    a.split = cu_mega_split && mk->nblk - a.nu >= mk->nblk / 4;
    a.pf = cu_mega_pf;
    {
        const int nb = a.split ? mk->nblk - a.nu : mk->nblk;
        a.cpb = ((a.Di + nb - 1) / nb + 1) & ~1;   /* even: the staged dt_proj rows start 4-byte aligned */
    }

    mk_smem S = mk_smem_layout(a.H, a.Di, a.I, a.P, a.nh, a.nkv, a.dq, a.dv, a.cpb, a.R);
    mk->smem = (size_t)S.total * sizeof(float);
    cudaError_t e = cudaFuncSetAttribute(mk->kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)mk->smem);
    int per_sm = 0;
    if (e == cudaSuccess)
        e = cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, mk->kernel, MK_BLOCK_THREADS, mk->smem);
    if (e != cudaSuccess || per_sm < 1) {
        cudaGetLastError();
        if (ctx->verbose)
            fprintf(stderr, "hymba: cuda: persistent decode kernel does not fit (%zu B of shared memory)\n",
                    mk->smem);
        free(mk);
        return 0;
    }

    /* one allocation: layer table, then the scratch */
    size_t nslice = (size_t)(a.Di + MK_SLICE - 1) / MK_SLICE;
    struct { void **p; size_t bytes; } parts[] = {
        { (void **)&a.L, sizeof(mk_layer) * (size_t)A->n_layers },
        { (void **)&a.x[0], (size_t)a.H * 2 },
        { (void **)&a.x[1], (size_t)a.H * 2 },
        { (void **)&a.u, (size_t)m->max_rows * 2 },
        { (void **)&a.y, (size_t)a.H * 2 },
        { (void **)&a.act, (size_t)a.I * 2 },
        { (void **)&a.uc, (size_t)a.Di * 4 },
        { (void **)&a.xpart, nslice * mk_xpart_ld(a.P) * 4 },
        { (void **)&a.sout, (size_t)a.Di * 4 },
        { (void **)&a.att, (size_t)a.Di * 4 },
        { (void **)&a.ml, (size_t)a.nh * a.nsa * 2 * 4 },
        { (void **)&a.o, (size_t)a.nh * a.nsa * a.dv * 4 },
        { (void **)&a.bar, 256 },
        { (void **)&a.trace, getenv("HYMBA_CUDA_MEGA_TRACE") ? (size_t)(A->n_layers + 1) * MK_TRACE * 8 : 0 },
        { (void **)&a.btrace, getenv("HYMBA_CUDA_MEGA_TRACE") ? (size_t)A->n_layers * MK_NBAR * mk->nblk * 2 * 8 : 0 },
    };
    size_t total = 0;
    for (size_t i = 0; i < sizeof(parts) / sizeof(parts[0]); i++)
        total += (parts[i].bytes + 255) & ~(size_t)255;
    int r = cu_malloc(ctx, &mk->mem, total, "the persistent decode kernel's scratch", err);
    if (r < 0) {
        free(mk);
        return r;
    }
    mk->bytes = total;
    size_t off = 0;
    for (size_t i = 0; i < sizeof(parts) / sizeof(parts[0]); i++) {
        *parts[i].p = parts[i].bytes ? (char *)mk->mem + off : NULL;
        off += (parts[i].bytes + 255) & ~(size_t)255;
    }
    mk_layer *hl = (mk_layer *)calloc((size_t)A->n_layers, sizeof(mk_layer));
    if (!hl) {
        cu_free(ctx, mk->mem, mk->bytes);
        free(mk);
        return hy_err_set(err, -ENOMEM, "out of memory");
    }
    for (int L = 0; L < A->n_layers; L++) {
        const cu_layer *s = &m->L[L];
        mk_layer *t = &hl[L];
        t->in_norm = s->in_norm;
        t->in_proj = s->in_proj;
        t->conv_w = s->conv_w;
        t->conv_b = s->conv_b;
        t->x_proj = s->x_proj;
        t->dt_norm = s->dt_norm;
        t->B_norm = s->B_norm;
        t->C_norm = s->C_norm;
        t->dt_w = s->dt_w;
        t->dt_b = s->dt_b;
        t->A = s->A;
        t->D = s->D;
        t->avg1 = s->avg1;
        t->avg2 = s->avg2;
        t->out_proj = s->out_proj;
        t->mlp_norm = s->mlp_norm;
        t->gu = s->gu;
        t->down = s->down;
        t->rows = s->rows;
        t->owner = s->owner;
        t->kv_src = s->kv_src;
        t->k_off = s->k_off;
        t->v_off = s->v_off;
        t->xs_off = s->xs_off;
        t->z_off = s->z_off;
        t->gd = s->gd;
    }
    e = cudaMemcpy((void *)a.L, hl, sizeof(mk_layer) * (size_t)A->n_layers, cudaMemcpyHostToDevice);
    free(hl);
    if (e != cudaSuccess) {
        cu_free(ctx, mk->mem, mk->bytes);
        free(mk);
        return cu_fail(ctx, err, e, "cudaMemcpy (decode layer table)", __FILE__, __LINE__);
    }
    m->mk = mk;
    if (ctx->verbose)
        fprintf(stderr, "hymba: cuda: persistent decode kernel: %d blocks x (%d + 32 prefetch%s) threads, %zu B "
                "shared, %d key splits, %s\n", mk->nblk, MK_THREADS, a.pf ? "" : " (off)", mk->smem, a.nsa,
                a.split ? "attention and SSM blocks side by side" : "both branches on every block");
    return 0;
}

int cu_mega_usable(cu_ctx *ctx, cu_model *m, hy_err *err)
{
    if (!cu_mega_wanted)
        return 0;
    if (!m->mk && !m->mk_tried) {
        m->mk_tried = 1;
        int r = mega_init(ctx, m, err);
        if (r < 0)
            return r;
    }
    return m->mk != NULL;
}

int cu_mega_launch(cu_ctx *ctx, cu_model *m, const cu_desc *desc, float *logits, hy_err *err)
{
    cu_mega *mk = m->mk;
    mk_args a = mk->a;
    a.desc = desc;
    a.logits = logits;
    CK(cudaMemsetAsync(a.bar, 0, sizeof(unsigned), ctx->s0));
    cudaLaunchConfig_t cfg = {};
    cudaLaunchAttribute attr[1];
    cfg.gridDim = dim3(mk->nblk);
    cfg.blockDim = dim3(MK_BLOCK_THREADS);
    cfg.dynamicSmemBytes = mk->smem;
    cfg.stream = ctx->s0;
    attr[0].id = cudaLaunchAttributeCooperative;
    attr[0].val.cooperative = 1;
    cfg.attrs = attr;
    cfg.numAttrs = 1;
    CK(cudaLaunchKernelEx(&cfg, mk->kernel, a));
    return 0;
}

static int cmp_u64(const void *x, const void *y)
{
    unsigned long long a = *(const unsigned long long *)x, b = *(const unsigned long long *)y;
    return a < b ? -1 : a > b;
}

/* The grid barriers of the traced step, from every block's arrival and
 * leaving (globaltimer), mean over layers 1..n-1 in us: how long the
 * arrivals spread (first to median, median to last), how long after the
 * last arrival the blocks leave, and which block arrives last most often. */
static void mega_trace_barriers(const cu_mega *mk)
{
    const int n = mk->a.n_layers, g = mk->nblk, nl = n > 1 ? n - 1 : 1;   /* layers 1..n-1 averaged */
    size_t cnt = (size_t)n * MK_NBAR * g * 2;
    unsigned long long *t = (unsigned long long *)malloc(cnt * 8), *arr = (unsigned long long *)malloc((size_t)g * 8);
    int *lastb = (int *)calloc((size_t)g, sizeof(int));
    if (!t || !arr || !lastb || cudaMemcpy(t, mk->a.btrace, cnt * 8, cudaMemcpyDeviceToHost) != cudaSuccess) {
        free(t);
        free(arr);
        free(lastb);
        return;
    }
    unsigned long long step = ~0ull;
    fprintf(stderr, "hymba: cuda: grid barriers (us, mean over layers): first->median->last arrival, last arrival->"
            "leave (mean, max), last attention / SSM block's arrival after the first, most often last block\n");
    for (int j = 0; j < MK_NBAR; j++) {
        double fm = 0, ml = 0, lv = 0, lvmax = 0, la = 0, ls = 0;
        memset(lastb, 0, (size_t)g * sizeof(int));
        for (int L = 1; L < n; L++) {
            const unsigned long long *e = t + ((size_t)(L * MK_NBAR + j) * g) * 2;
            unsigned long long last = 0, first = ~0ull, lat = 0, lss = 0;
            int lb = 0;
            for (int b = 0; b < g; b++) {
                arr[b] = e[2 * b];
                if (arr[b] > last) {
                    last = arr[b];
                    lb = b;
                }
                first = arr[b] < first ? arr[b] : first;
                if (b < mk->a.nu && arr[b] > lat)
                    lat = arr[b];
                if (b >= mk->a.nu && arr[b] > lss)
                    lss = arr[b];
            }
            lastb[lb]++;
            double sum = 0, mx = 0;   /* leaving comes after the last arrival */
            for (int b = 0; b < g; b++) {
                const double d = (double)(e[2 * b + 1] - last);
                sum += d;
                mx = fmax(mx, d);
            }
            qsort(arr, (size_t)g, 8, cmp_u64);
            for (int b = 1; b < g; b++)
                if (arr[b] > arr[b - 1] && arr[b] - arr[b - 1] < step)
                    step = arr[b] - arr[b - 1];
            fm += (double)(arr[g / 2] - first);
            ml += (double)(last - arr[g / 2]);
            lv += sum / g;
            lvmax += mx;
            la += lat ? (double)(lat - first) : 0;
            ls += lss ? (double)(lss - first) : 0;
        }
        int best = 0;
        for (int b = 1; b < g; b++)
            best = lastb[b] > lastb[best] ? b : best;
        const double k = 1000.0 * nl;
        fprintf(stderr, "  sync%d %6.2f %6.2f   leave %6.2f %6.2f   attn %6.2f ssm %6.2f   block %d (%d of %d)\n",
                j + 1, fm / k, ml / k, lv / k, lvmax / k, la / k, ls / k, best, lastb[best], nl);
    }
    fprintf(stderr, "  (smallest step between two arrivals: %llu ns)\n", step);
    free(t);
    free(arr);
    free(lastb);
}

/* HYMBA_CUDA_MEGA_TRACE: after the 64th step, the time per phase of block 0
 * (an attention unit) and of block nu (the first SSM block), us, mean over
 * layers 1..n-1, on stderr: where a step's time goes; then the sub-marks
 * (MK_SUBTRACE builds) and the grid barriers (mega_trace_barriers).  The
 * traced kernel is its own instance and runs slower than the untraced one. */
void cu_mega_trace_report(cu_ctx *ctx, cu_model *m)
{
    cu_mega *mk = m->mk;
    if (!mk || !mk->a.trace || ++mk->traced != 64)
        return;
    (void)ctx;
    const int n = mk->a.n_layers, nl = n > 1 ? n - 1 : 1;   /* layers 1..n-1 averaged */
    size_t bytes = (size_t)(n + 1) * MK_TRACE * 8;
    long long *t = (long long *)malloc(bytes);
    if (!t || cudaMemcpy(t, mk->a.trace, bytes, cudaMemcpyDeviceToHost) != cudaSuccess) {
        free(t);
        return;
    }
    const long long *tail = t + (size_t)n * MK_TRACE;
    double ns = (double)(tail[1] - tail[0]), cyc = (double)(tail[2] - tail[3]);
    double us_per_cyc = ns > 0 && cyc > 0 ? ns / cyc / 1000.0 : 0.0;
    static const char *name[MK_PHASES] = { "resnorm A", "in_proj", "sync1", "attn|conv", "sync2", "merge|ssm",
                                           "sync3", "preavg", "out_proj", "sync4", "resnorm F", "gate-up",
                                           "sync5", "down", "sync6" };
    fprintf(stderr, "hymba: cuda: decode step %.1f us (globaltimer), SM clock %.0f MHz; per layer (us), block 0 and "
            "block %d:\n", ns / 1000.0, us_per_cyc > 0 ? 1.0 / us_per_cyc : 0.0, mk->a.nu);
    double tot = 0.0;
    for (int k = 0; k < MK_PHASES; k++) {
        double acc[2] = { 0.0, 0.0 };
        for (int L = 1; L < n; L++)
            for (int h = 0; h < 2; h++) {
                const long long *e = t + (size_t)L * MK_TRACE + h * 16 + k;
                acc[h] += (double)(e[1] - e[0]);
            }
        for (int h = 0; h < 2; h++)
            acc[h] = acc[h] / nl * us_per_cyc;
        tot += acc[0];
        fprintf(stderr, "  %-14s %7.2f %7.2f\n", name[k], acc[0], acc[1]);
    }
    fprintf(stderr, "  %-14s %7.2f\n", "layer", tot);
    if (MK_SUBTRACE) {   /* sub-mark k after its phase's start: mark 3 attention, 5 SSM, 10 resnorm F, 7 pre-average */
        static const int from[16] = { 3, 3, 3, 3, 3, 3, 3, 5, 5, 5, 5, 5, 10, 10, 10, 7 };
        for (int k = 0; k < 16; k++) {
            double acc[2] = { 0.0, 0.0 };
            for (int L = 1; L < n; L++)
                for (int h = 0; h < 2; h++) {
                    const long long *e = t + (size_t)L * MK_TRACE;
                    acc[h] += e[32 + 16 * h + k] ? (double)(e[32 + 16 * h + k] - e[16 * h + from[k]]) : 0.0;
                }
            fprintf(stderr, "  sub%-2d (from %2d) %7.2f %7.2f\n", k, from[k], acc[0] / nl * us_per_cyc,
                    acc[1] / nl * us_per_cyc);
        }
    }
    free(t);
    mega_trace_barriers(mk);
}
