/* cuda_attn.cu: attention over the K/V cache: split-over-keys kernel (decode, fallback prefill) and tensor-core flash prefills (mma.sync, wmma). */
#include "kernels/cuda/cuda_kernels.cuh"
#include "kernels/cuda/cuda_device.cuh"
#include <mma.h>
#include <math.h>

using namespace nvcuda;

using namespace cudev;

/* ------------------------------------------------------ split over keys */

/*
 * Block (kv head, split, token): the G query heads of one KV head over one
 * slice of the token's keys.  Each lane of a warp scores one key for all G
 * heads; then the warp accumulates P.V with each lane owning VPL of the dv
 * output columns.  Warps merge through shared memory at the end.
 */
template <int VPL, int DQT>
__global__ void __launch_bounds__(128) k_attn_split(cu_attn_args a)
{
    pdl_wait();
    pdl_trigger();
    extern __shared__ float sm[];
    const int G = a.nh / a.nkv;
    float *qs = sm;                                   /* [G][dq] */
    float *wo = qs + G * a.dq;                        /* [4][G][dv] */
    float *wm = wo + 4 * G * a.dv;                    /* [4][G] */
    float *wl = wm + 4 * G;                           /* [4][G] */
    const int t = blockIdx.z, kvh = blockIdx.x, split = blockIdx.y;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const cu_desc *d = a.per_token ? &a.desc[t] : a.desc;
    const int p = a.per_token ? d->pos : d->pos + t;
    const bf16 *K = d->kv[2 * a.kv_layer];
    const bf16 *V = d->kv[2 * a.kv_layer + 1];
    const keyset ks = keys_of(a.g, p, p);
    const int per = (ks.n + a.nsplit - 1) / a.nsplit;
    const int k0 = split * per, k1 = min(ks.n, k0 + per);

    for (int i = threadIdx.x; i < G * a.dq; i += blockDim.x) {
        int h = kvh * G + i / a.dq;
        qs[i] = b2f(a.u[(size_t)t * a.ldu + h * a.dq + i % a.dq]);
    }
    __syncthreads();

    float m[CU_MAX_GQA], l[CU_MAX_GQA], o[CU_MAX_GQA][VPL];
#pragma unroll
    for (int j = 0; j < CU_MAX_GQA; j++) {
        m[j] = -INFINITY;
        l[j] = 0.0f;
#pragma unroll
        for (int e = 0; e < VPL; e++)
            o[j][e] = 0.0f;
    }
    for (int base = k0 + warp * 32; base < k1; base += 128) {
        const int k = base + lane;
        const bool valid = k < k1;
        int slot = 0;
        float sc[CU_MAX_GQA];
#pragma unroll
        for (int j = 0; j < CU_MAX_GQA; j++)
            sc[j] = 0.0f;
        if (valid) {
            slot = kv_slot(a.g, key_pos(ks, k));
            const uint4 *kr = reinterpret_cast<const uint4 *>(K + ((size_t)slot * a.nkv + kvh) * a.dq);
            /* the whole key row in flight at once when its size is known */
            uint4 rows[DQT ? DQT / 8 : 1];
            if (DQT) {
#pragma unroll
                for (int c = 0; c < (DQT ? DQT / 8 : 1); c++)
                    rows[c] = kr[c];
            }
#pragma unroll
            for (int c = 0; c < (DQT ? DQT / 8 : a.dq / 8); c++) {
                uint4 raw = DQT ? rows[c] : kr[c];
                const __nv_bfloat162 *kp = reinterpret_cast<const __nv_bfloat162 *>(&raw);
                float kf[8];
#pragma unroll
                for (int i = 0; i < 4; i++) {
                    float2 f = __bfloat1622float2(kp[i]);
                    kf[2 * i] = f.x;
                    kf[2 * i + 1] = f.y;
                }
#pragma unroll
                for (int j = 0; j < CU_MAX_GQA; j++) {
                    if (j < G) {
                        const float *q = qs + j * a.dq + c * 8;
#pragma unroll
                        for (int i = 0; i < 8; i++)
                            sc[j] = fmaf(q[i], kf[i], sc[j]);
                    }
                }
            }
        }
        float pj[CU_MAX_GQA];
#pragma unroll
        for (int j = 0; j < CU_MAX_GQA; j++) {
            pj[j] = 0.0f;
            if (j >= G)
                continue;
            float s = valid ? sc[j] * a.scale : -INFINITY;
            float mnew = fmaxf(m[j], warp_max(s));
            if (mnew == -INFINITY)
                continue;
            float alpha = expf(m[j] - mnew);
            pj[j] = valid ? expf(s - mnew) : 0.0f;
            l[j] = l[j] * alpha + warp_sum(pj[j]);
#pragma unroll
            for (int e = 0; e < VPL; e++)
                o[j][e] *= alpha;
            m[j] = mnew;
        }
        const int nk = min(32, k1 - base);
        /* P.V eight keys at a time: their V rows are loaded before any use */
        for (int tk0 = 0; tk0 < nk; tk0 += 8) {
            float vv[8][VPL];
#pragma unroll
            for (int q = 0; q < 8; q++) {
                int st = __shfl_sync(0xffffffffu, slot, (tk0 + q) & 31);
                const bf16 *vr = V + ((size_t)st * a.nkv + kvh) * a.dv + lane * VPL;
#pragma unroll
                for (int e = 0; e < VPL; e++)
                    vv[q][e] = tk0 + q < nk ? b2f(vr[e]) : 0.0f;
            }
#pragma unroll
            for (int q = 0; q < 8; q++) {
#pragma unroll
                for (int j = 0; j < CU_MAX_GQA; j++) {
                    if (j >= G)
                        continue;
                    float pb = bfr(__shfl_sync(0xffffffffu, pj[j], (tk0 + q) & 31));
                    if (tk0 + q >= nk)
                        pb = 0.0f;
#pragma unroll
                    for (int e = 0; e < VPL; e++)
                        o[j][e] = fmaf(pb, vv[q][e], o[j][e]);
                }
            }
        }
    }
#pragma unroll
    for (int j = 0; j < CU_MAX_GQA; j++) {
        if (j >= G)
            continue;
#pragma unroll
        for (int e = 0; e < VPL; e++)
            wo[(warp * G + j) * a.dv + lane * VPL + e] = o[j][e];
        if (lane == 0) {
            wm[warp * G + j] = m[j];
            wl[warp * G + j] = l[j];
        }
    }
    __syncthreads();
    for (int i = threadIdx.x; i < G * a.dv; i += blockDim.x) {
        int j = i / a.dv, e = i % a.dv;
        float M = -INFINITY;
        for (int w = 0; w < 4; w++)
            M = fmaxf(M, wm[w * G + j]);
        float L = 0.0f, O = 0.0f;
        if (M > -INFINITY) {
            for (int w = 0; w < 4; w++) {
                if (wm[w * G + j] == -INFINITY)
                    continue;
                float f = expf(wm[w * G + j] - M);
                L += wl[w * G + j] * f;
                O += wo[(w * G + j) * a.dv + e] * f;
            }
        }
        size_t slot = ((size_t)t * a.nh + kvh * G + j) * a.nsplit + split;
        a.o[slot * a.dv + e] = O;
        if (e == 0) {
            a.ml[slot * 2] = M;
            a.ml[slot * 2 + 1] = L;
        }
    }
}

cudaError_t cu_attn_split(const cu_attn_args *a, cudaStream_t s)
{
    int G = a->nh / a->nkv;
    if (G > CU_MAX_GQA || a->nh % a->nkv || a->dq % 8 || a->dq > CU_MAX_HEAD_DIM || a->dv % 32 ||
        a->dv / 32 > CU_MAX_VPL || a->dv / 32 == 3)
        return cudaErrorInvalidValue;
    dim3 grid(a->nkv, a->nsplit, a->n);
    size_t smem = (size_t)(G * a->dq + 4 * G * a->dv + 8 * G) * sizeof(float);
    if (a->dv == 128 && a->dq == 64)
        return cu_launch(k_attn_split<4, 64>, grid, dim3(128), smem, s, *a);
    else if (a->dv == 64 && a->dq == 32)
        return cu_launch(k_attn_split<2, 32>, grid, dim3(128), smem, s, *a);
    else if (a->dv == 32 && a->dq == 16)
        return cu_launch(k_attn_split<1, 16>, grid, dim3(128), smem, s, *a);
    else if (a->dv / 32 == 1)
        return cu_launch(k_attn_split<1, 0>, grid, dim3(128), smem, s, *a);
    else if (a->dv / 32 == 2)
        return cu_launch(k_attn_split<2, 0>, grid, dim3(128), smem, s, *a);
    else
        return cu_launch(k_attn_split<4, 0>, grid, dim3(128), smem, s, *a);
}

/* ------------------------------------------------------ flash prefill */

#define FQ 64            /* queries per block */
#define FK 64            /* keys per tile */
#define FPAD 8           /* bf16 row padding (keeps wmma rows 32-byte aligned) */
#define FPADF 4          /* fp32 row padding */

template <int DQ, int DV>
struct flash_smem {
    static constexpr int LQ = DQ + FPAD, LV = DV + FPAD, LS = FK + FPADF, LP = FK + FPAD, LO = DV + FPADF;
    static constexpr size_t q = 0;
    static constexpr size_t k = q + (size_t)FQ * LQ * 2;
    static constexpr size_t v = k + (size_t)FK * LQ * 2;
    static constexpr size_t s = v + (size_t)FK * LV * 2;
    static constexpr size_t pm = s + (size_t)FQ * LS * 4;
    static constexpr size_t o = pm + (size_t)FQ * LP * 2;
    static constexpr size_t kpos = o + (size_t)FQ * LO * 4;
    static constexpr size_t mrow = kpos + FK * 4;
    static constexpr size_t bytes = mrow + 3 * FQ * 4;
};

/*
 * Block (query tile, head): 4 warps, each owning 16 query rows.  Per key
 * tile: S = Q K^T on tensor cores into shared memory, online softmax by the
 * owning warp (P rounded to bf16 as the reference does), O += P V on tensor
 * cores with O kept in shared memory.
 */
template <int DQ, int DV>
__global__ void __launch_bounds__(128) k_attn_flash(const bf16 *u, int ldu, int n, const cu_desc *desc,
                                                    int kv_layer, int nh, int nkv, float scale,
                                                    cu_kvgeom g, bf16 *att)
{
    typedef flash_smem<DQ, DV> L;
    extern __shared__ __align__(128) unsigned char smraw[];
    bf16 *Qs = reinterpret_cast<bf16 *>(smraw + L::q);
    bf16 *Ks = reinterpret_cast<bf16 *>(smraw + L::k);
    bf16 *Vs = reinterpret_cast<bf16 *>(smraw + L::v);
    float *S = reinterpret_cast<float *>(smraw + L::s);
    bf16 *Pm = reinterpret_cast<bf16 *>(smraw + L::pm);
    float *O = reinterpret_cast<float *>(smraw + L::o);
    int *kpos = reinterpret_cast<int *>(smraw + L::kpos);
    float *mrow = reinterpret_cast<float *>(smraw + L::mrow);
    float *lrow = mrow + FQ, *arow = lrow + FQ;

    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int t0 = blockIdx.x * FQ, h = blockIdx.y;
    const int kvh = h / (nh / nkv);
    const int p0 = desc->pos;
    const int tlast = min(n, t0 + FQ) - 1;
    const bf16 *K = desc->kv[2 * kv_layer];
    const bf16 *V = desc->kv[2 * kv_layer + 1];
    const keyset ks = keys_of(g, p0 + t0, p0 + tlast);

    for (int i = threadIdx.x; i < FQ * (DQ / 8); i += blockDim.x) {
        int r = i / (DQ / 8), c = i % (DQ / 8);
        uint4 v = make_uint4(0, 0, 0, 0);
        if (t0 + r < n)
            v = *reinterpret_cast<const uint4 *>(u + (size_t)(t0 + r) * ldu + h * DQ + c * 8);
        *reinterpret_cast<uint4 *>(Qs + r * L::LQ + c * 8) = v;
    }
    for (int i = threadIdx.x; i < FQ * L::LO; i += blockDim.x)
        O[i] = 0.0f;
    for (int i = threadIdx.x; i < FQ; i += blockDim.x) {
        mrow[i] = -INFINITY;
        lrow[i] = 0.0f;
    }
    __syncthreads();

    /* K/V tiles are double-buffered in registers: the loads of tile kt+1 are
     * in flight while tile kt is computed. */
    constexpr int KL = FK * (DQ / 8) / 128, VL = FK * (DV / 8) / 128;
    uint4 kreg[KL], vreg[VL];
    auto load_tile = [&](int kt) {
#pragma unroll
        for (int q = 0; q < KL; q++) {
            int i = threadIdx.x + q * 128, r = i / (DQ / 8), c = i % (DQ / 8);
            kreg[q] = make_uint4(0, 0, 0, 0);
            if (kt + r < ks.n)
                kreg[q] = *reinterpret_cast<const uint4 *>(
                    K + ((size_t)kv_slot(g, key_pos(ks, kt + r)) * nkv + kvh) * DQ + c * 8);
        }
#pragma unroll
        for (int q = 0; q < VL; q++) {
            int i = threadIdx.x + q * 128, r = i / (DV / 8), c = i % (DV / 8);
            vreg[q] = make_uint4(0, 0, 0, 0);
            if (kt + r < ks.n)
                vreg[q] = *reinterpret_cast<const uint4 *>(
                    V + ((size_t)kv_slot(g, key_pos(ks, kt + r)) * nkv + kvh) * DV + c * 8);
        }
    };
    load_tile(0);
    for (int kt = 0; kt < ks.n; kt += FK) {
        __syncthreads();   /* every warp is done with the previous tile */
        for (int i = threadIdx.x; i < FK; i += blockDim.x)
            kpos[i] = kt + i < ks.n ? key_pos(ks, kt + i) : -1;
#pragma unroll
        for (int q = 0; q < KL; q++) {
            int i = threadIdx.x + q * 128, r = i / (DQ / 8), c = i % (DQ / 8);
            *reinterpret_cast<uint4 *>(Ks + r * L::LQ + c * 8) = kreg[q];
        }
#pragma unroll
        for (int q = 0; q < VL; q++) {
            int i = threadIdx.x + q * 128, r = i / (DV / 8), c = i % (DV / 8);
            *reinterpret_cast<uint4 *>(Vs + r * L::LV + c * 8) = vreg[q];
        }
        __syncthreads();
        if (kt + FK < ks.n)
            load_tile(kt + FK);

        /* S = Q K^T for this warp's 16 rows */
        for (int ct = 0; ct < FK / 16; ct++) {
            wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
            wmma::fill_fragment(acc, 0.0f);
            for (int kk = 0; kk < DQ / 16; kk++) {
                wmma::fragment<wmma::matrix_a, 16, 16, 16, bf16, wmma::row_major> fa;
                wmma::fragment<wmma::matrix_b, 16, 16, 16, bf16, wmma::col_major> fb;
                wmma::load_matrix_sync(fa, Qs + warp * 16 * L::LQ + kk * 16, L::LQ);
                wmma::load_matrix_sync(fb, Ks + ct * 16 * L::LQ + kk * 16, L::LQ);
                wmma::mma_sync(acc, fa, fb, acc);
            }
            wmma::store_matrix_sync(S + warp * 16 * L::LS + ct * 16, acc, L::LS, wmma::mem_row_major);
        }
        __syncwarp();

        /* online softmax: two lanes per row, 32 columns each */
        {
            const int r = warp * 16 + (lane >> 1), c0 = (lane & 1) * 32;
            const int qpos = p0 + t0 + r;
            const bool qvalid = t0 + r < n;
            float sv[32];
            float mx = -INFINITY;
#pragma unroll
            for (int c = 0; c < 32; c++) {
                int kp = kpos[c0 + c];
                bool vis = qvalid && kp >= 0 && kp <= qpos &&
                           (g.is_global || kp < g.n_meta || qpos - kp <= g.window);
                sv[c] = vis ? S[r * L::LS + c0 + c] * scale : -INFINITY;
                mx = fmaxf(mx, sv[c]);
            }
            mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
            const float mold = mrow[r];
            const float mnew = fmaxf(mold, mx);
            float alpha = 1.0f, sum = 0.0f;
            if (mnew > -INFINITY) {
                alpha = expf(mold - mnew);
#pragma unroll
                for (int c = 0; c < 32; c++) {
                    float pv = expf(sv[c] - mnew);
                    sum += pv;
                    Pm[r * L::LP + c0 + c] = __float2bfloat16(pv);
                }
            } else {
#pragma unroll
                for (int c = 0; c < 32; c++)
                    Pm[r * L::LP + c0 + c] = __float2bfloat16(0.0f);
            }
            sum += __shfl_xor_sync(0xffffffffu, sum, 1);
            __syncwarp();
            if ((lane & 1) == 0) {
                lrow[r] = lrow[r] * alpha + sum;
                mrow[r] = mnew;
                arow[r] = alpha;
            }
        }
        __syncwarp();
        for (int i = lane; i < 16 * DV; i += 32) {
            int r = warp * 16 + i / DV, c = i % DV;
            O[r * L::LO + c] *= arow[r];
        }
        __syncwarp();

        /* O += P V */
        for (int ct = 0; ct < DV / 16; ct++) {
            wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
            wmma::load_matrix_sync(acc, O + warp * 16 * L::LO + ct * 16, L::LO, wmma::mem_row_major);
            for (int kk = 0; kk < FK / 16; kk++) {
                wmma::fragment<wmma::matrix_a, 16, 16, 16, bf16, wmma::row_major> fa;
                wmma::fragment<wmma::matrix_b, 16, 16, 16, bf16, wmma::row_major> fb;
                wmma::load_matrix_sync(fa, Pm + warp * 16 * L::LP + kk * 16, L::LP);
                wmma::load_matrix_sync(fb, Vs + kk * 16 * L::LV + ct * 16, L::LV);
                wmma::mma_sync(acc, fa, fb, acc);
            }
            wmma::store_matrix_sync(O + warp * 16 * L::LO + ct * 16, acc, L::LO, wmma::mem_row_major);
        }
    }
    __syncwarp();

    const int di = nh * DV;
    for (int i = lane; i < 16 * DV; i += 32) {
        int r = warp * 16 + i / DV, c = i % DV;
        if (t0 + r >= n)
            continue;
        float lv = lrow[r];
        float v = lv > 0.0f ? O[r * L::LO + c] / lv : 0.0f;
        att[(size_t)(t0 + r) * di + h * DV + c] = __float2bfloat16(v);
    }
}

static int wmma_supported(int dq, int dv)
{
    return (dq == 16 && dv == 32) || (dq == 32 && dv == 64) || (dq == 64 && dv == 128);
}

template <int DQ, int DV>
static cudaError_t wmma_launch(const bf16 *u, int ldu, int n, const cu_desc *desc, int kv_layer, int nh,
                               int nkv, float scale, cu_kvgeom g, bf16 *att, cudaStream_t s)
{
    size_t smem = flash_smem<DQ, DV>::bytes;
    cudaError_t e = cudaFuncSetAttribute(k_attn_flash<DQ, DV>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                         (int)smem);
    if (e != cudaSuccess)
        return e;
    dim3 grid((n + FQ - 1) / FQ, nh);
    k_attn_flash<DQ, DV><<<grid, 128, smem, s>>>(u, ldu, n, desc, kv_layer, nh, nkv, scale, g, att);
    return cudaGetLastError();
}

cudaError_t cu_attn_flash_wmma(const bf16 *u, int ldu, int n, const cu_desc *desc, int kv_layer,
                               int nh, int nkv, int dq, int dv, float scale, cu_kvgeom g,
                               bf16 *att, cudaStream_t s)
{
    if (nh % nkv || (ldu & 7))
        return cudaErrorInvalidValue;
    if (dq == 16 && dv == 32)
        return wmma_launch<16, 32>(u, ldu, n, desc, kv_layer, nh, nkv, scale, g, att, s);
    if (dq == 32 && dv == 64)
        return wmma_launch<32, 64>(u, ldu, n, desc, kv_layer, nh, nkv, scale, g, att, s);
    if (dq == 64 && dv == 128)
        return wmma_launch<64, 128>(u, ldu, n, desc, kv_layer, nh, nkv, scale, g, att, s);
    return cudaErrorNotSupported;
}

/* ------------------------------------------------------ mma.sync flash prefill */

/*
 * FA2-style prefill: mma.sync m16n8k16 (bf16 in, fp32 accumulate) with Q
 * fragments, S/P and the O accumulator in registers.  GQA is packed into
 * the row dimension: block (row tile, kv head) owns BM = 16*NW "packed rows"
 * r = t*G + j (token t, query head kvh*G + j), so each K/V tile staged in
 * shared memory serves all G query heads of its KV head (G times less K/V
 * traffic than a block per query head) and a block spans only ~BM/G
 * positions (little causal waste).  Each warp owns 16 packed rows.  K/V
 * tiles of MMA_K keys are double-buffered with cp.async: tile i+1 loads
 * while tile i is computed.
 *
 * Numerics as the wmma kernel: s = q.k in fp32, scaled; online softmax in
 * fp32 (base 2, scale folded with log2 e); P rounded to bf16 for P.V, the row
 * sum over the unrounded P; rows without a visible key give 0.
 */
#define MMA_K 64         /* keys per shared-memory tile */

int cu_flash_warps = 0;

/* Shared memory of a block of nw warps: Q [16 nw][LQ], K [2][MMA_K][LQ], V [2][MMA_K][LV]; the output
 * is staged in the K/V buffers at the end ([16 nw][LO] fits there for nw <= 8). */
template <int DQ, int DV>
struct mma_smem {
    static constexpr int LQ = DQ + 8, LV = DV + 8;      /* padded rows: ldmatrix phases hit 8 distinct 16-byte bank groups */
    static constexpr int LO = DV + 8;                   /* output staging row */
    static constexpr size_t kv = (size_t)2 * MMA_K * (LQ + LV) * 2;
    static_assert((size_t)16 * 8 * LO * 2 <= kv, "output staging reuses the K/V buffers");
    static __host__ __device__ size_t k(int nw) { return (size_t)16 * nw * LQ * 2; }
    static __host__ __device__ size_t v(int nw) { return k(nw) + (size_t)2 * MMA_K * LQ * 2; }
    static __host__ __device__ size_t bytes(int nw) { return k(nw) + kv; }   /* then int rowtab[2][MMA_K] */
    static __host__ __device__ size_t total(int nw) { return bytes(nw) + 2 * MMA_K * 4; }
};

__device__ __forceinline__ float ex2(float x)
{
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
    return y;
}

/* u [n][ldu]: q of token t, head h at u[t*ldu + h*DQ]; att [n][nh*DV] bf16.  Block: blockDim.x / 32 <=
 * MAXW warps; MINB blocks per SM bound the registers; QREG: Q fragments stay in registers (else they
 * are reloaded from shared memory per tile, for register budgets that would spill). */
template <int DQ, int DV, int MAXW, int MINB, bool QREG>
__global__ void __launch_bounds__(MAXW * 32, MINB) k_attn_mma(const bf16 *u, int ldu, int n, const cu_desc *desc,
                                                           int kv_layer, int nh, int nkv, float scale_log2,
                                                           cu_kvgeom g, bf16 *att)
{
    typedef mma_smem<DQ, DV> L;
    const int NT = blockDim.x, NW = NT >> 5, BM = 16 * NW;   /* packed rows per block */
    extern __shared__ __align__(128) unsigned char smraw[];
    bf16 *Qs = reinterpret_cast<bf16 *>(smraw);
    bf16 *Ks = reinterpret_cast<bf16 *>(smraw + L::k(NW));
    bf16 *Vs = reinterpret_cast<bf16 *>(smraw + L::v(NW));

    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
    const int G = nh / nkv, kvh = blockIdx.y, rows = n * G;
    const int R0 = (gridDim.x - 1 - blockIdx.x) * BM;   /* late (long) row tiles start first */
    const int t0 = R0 / G, tlast = min(n - 1, (R0 + BM - 1) / G);
    const int p0 = desc->pos;
    const bf16 *K = desc->kv[2 * kv_layer];   /* [slots][nkv][DQ] */
    const bf16 *V = desc->kv[2 * kv_layer + 1];   /* [slots][nkv][DV] */
    const keyset ks = keys_of(g, p0 + t0, p0 + tlast);
    const uint4 zero = make_uint4(0, 0, 0, 0);

    for (int i = tid; i < BM * (DQ / 8); i += NT) {
        const int r = i / (DQ / 8), c = i % (DQ / 8), R = R0 + r;
        bf16 *dst = Qs + r * L::LQ + c * 8;
        if (R < rows)
            cp_async16(dst, u + (size_t)(R / G) * ldu + (kvh * G + R % G) * DQ + c * 8);
        else
            *reinterpret_cast<uint4 *>(dst) = zero;
    }
    /* Cache row of each key of a tile (slot * nkv + kvh; -1 past the last key), double-buffered and
     * filled one tile ahead by the first MMA_K threads, so that the loads below are plain gathers. */
    int *rowtab = reinterpret_cast<int *>(smraw + L::bytes(NW));   /* [2][MMA_K] */
    auto fill_rows = [&](int tile) {
        const int k = tile * MMA_K + tid;
        if (tid < MMA_K)
            rowtab[(tile & 1) * MMA_K + tid] = k < ks.n ? kv_slot(g, key_pos(ks, k)) * nkv + kvh : -1;
    };
    /* keys past the end are zero-filled: P is 0 there, and 0 * garbage could be NaN */
    auto load_kv = [&](int tile) {
        const int buf = tile & 1;
        const int *rt = rowtab + buf * MMA_K;
        bf16 *kb = Ks + buf * MMA_K * L::LQ, *vb = Vs + buf * MMA_K * L::LV;
        for (int i = tid; i < MMA_K * (DQ / 8); i += NT) {
            const int r = i / (DQ / 8), c = i % (DQ / 8), row = rt[r];
            bf16 *dst = kb + r * L::LQ + c * 8;
            if (row >= 0)
                cp_async16(dst, K + (size_t)row * DQ + c * 8);
            else
                *reinterpret_cast<uint4 *>(dst) = zero;
        }
        for (int i = tid; i < MMA_K * (DV / 8); i += NT) {
            const int r = i / (DV / 8), c = i % (DV / 8), row = rt[r];
            bf16 *dst = vb + r * L::LV + c * 8;
            if (row >= 0)
                cp_async16(dst, V + (size_t)row * DV + c * 8);
            else
                *reinterpret_cast<uint4 *>(dst) = zero;
        }
    };
    fill_rows(0);
    fill_rows(1);
    __syncthreads();
    load_kv(0);
    cp_async_commit();

    /* this thread's accumulator rows: qr and qr + 8 of the warp's 16; columns qc, qc + 1 of each 8 */
    const int qr = lane >> 2, qc = (lane & 3) * 2;
    int qpos[2];
#pragma unroll
    for (int i = 0; i < 2; i++)
        qpos[i] = p0 + min(R0 + warp * 16 + qr + 8 * i, rows - 1) / G;   /* padding rows: any valid position */

    uint32_t qf[QREG ? DQ / 16 : 1][4];
    float o[DV / 8][4];
#pragma unroll
    for (int d = 0; d < DV / 8; d++)
        o[d][0] = o[d][1] = o[d][2] = o[d][3] = 0.0f;
    float mrow[2] = { -INFINITY, -INFINITY }, lrow[2] = { 0.0f, 0.0f };

    const int ntiles = (ks.n + MMA_K - 1) / MMA_K;
    for (int it = 0; it < ntiles; it++) {
        const int kt = it * MMA_K;
        cp_async_wait_all();
        __syncthreads();   /* tile it landed for all threads; every warp is done with tile it-1's buffer */
        if (it + 1 < ntiles)
            load_kv(it + 1);
        cp_async_commit();
        /* rows of tile it+2 into the table half that tile it's loads read (all issued before the barrier) */
        if (it + 2 < ntiles)
            fill_rows(it + 2);
        if (QREG && it == 0) {
#pragma unroll
            for (int kk = 0; kk < DQ / 16; kk++)
                ldsm_x4(qf[kk], Qs + (warp * 16 + (lane & 15)) * L::LQ + kk * 16 + (lane >> 4) * 8);
        }
        const bf16 *kb = Ks + (it & 1) * MMA_K * L::LQ, *vb = Vs + (it & 1) * MMA_K * L::LV;

        /* S = Q K^T: 16 rows x MMA_K keys per warp */
        float s[MMA_K / 8][4];
#pragma unroll
        for (int j = 0; j < MMA_K / 8; j++)
            s[j][0] = s[j][1] = s[j][2] = s[j][3] = 0.0f;
#pragma unroll
        for (int kk = 0; kk < DQ / 16; kk++) {
            uint32_t *qa = qf[QREG ? kk : 0];
            if (!QREG)
                ldsm_x4(qa, Qs + (warp * 16 + (lane & 15)) * L::LQ + kk * 16 + (lane >> 4) * 8);
#pragma unroll
            for (int np = 0; np < MMA_K / 16; np++) {
                uint32_t b[4];
                ldsm_x4(b, kb + (np * 16 + (lane & 7) + ((lane >> 4) << 3)) * L::LQ + kk * 16 + ((lane >> 3) & 1) * 8);
                mma16816(s[2 * np], qa, b[0], b[1]);
                mma16816(s[2 * np + 1], qa, b[2], b[3]);
            }
        }

        /* mask only tiles that are not visible to every row of the block */
        bool full = kt + MMA_K <= ks.n && key_pos(ks, kt + MMA_K - 1) <= p0 + t0;
        if (full && !g.is_global) {
            const int first = max(kt, ks.nmeta);   /* first non-meta key of the tile */
            if (first < kt + MMA_K)
                full = p0 + tlast - key_pos(ks, first) <= g.window;
        }
        if (!full) {
            /* visible keys of each row, as logical key indices: [0, vmeta) and [vlo, vhi] (see keys_of) */
            int vmeta[2], vlo[2], vhi[2];
#pragma unroll
            for (int i = 0; i < 2; i++) {
                vmeta[i] = min(ks.nmeta, qpos[i] + 1);
                vlo[i] = ks.nmeta + (g.is_global ? 0 : max(qpos[i] - g.window - ks.lo, 0));
                vhi[i] = ks.nmeta + qpos[i] - ks.lo;
            }
#pragma unroll
            for (int j = 0; j < MMA_K / 8; j++) {
#pragma unroll
                for (int e = 0; e < 4; e++) {
                    const int key = kt + j * 8 + qc + (e & 1), i = e >> 1;
                    if (!(key < vmeta[i] || (key >= vlo[i] && key <= vhi[i])))
                        s[j][e] = -INFINITY;
                }
            }
        }

        /* online softmax on raw scores (scale > 0 commutes with max); p = 2^(s*scale*log2e - m*scale*log2e);
         * a row's 4 quad lanes hold its columns */
        float mx[2] = { -INFINITY, -INFINITY };
#pragma unroll
        for (int j = 0; j < MMA_K / 8; j++) {
            mx[0] = fmaxf(mx[0], fmaxf(s[j][0], s[j][1]));
            mx[1] = fmaxf(mx[1], fmaxf(s[j][2], s[j][3]));
        }
        float msc[2], alpha[2];
#pragma unroll
        for (int i = 0; i < 2; i++) {
            mx[i] = fmaxf(mx[i], __shfl_xor_sync(0xffffffffu, mx[i], 1));
            mx[i] = fmaxf(mx[i], __shfl_xor_sync(0xffffffffu, mx[i], 2));
            const float mnew = fmaxf(mrow[i], mx[i]);
            msc[i] = mnew == -INFINITY ? 0.0f : mnew * scale_log2;   /* no visible key yet: P = 0, no NaN */
            alpha[i] = mnew == mrow[i] ? 1.0f : ex2(mrow[i] * scale_log2 - msc[i]);
            mrow[i] = mnew;
            lrow[i] *= alpha[i];
        }
        if (__any_sync(0xffffffffu, alpha[0] != 1.0f || alpha[1] != 1.0f)) {   /* the max moved: rescale O */
#pragma unroll
            for (int d = 0; d < DV / 8; d++) {
                o[d][0] *= alpha[0];
                o[d][1] *= alpha[0];
                o[d][2] *= alpha[1];
                o[d][3] *= alpha[1];
            }
        }
        float ls[2][2] = { { 0.0f, 0.0f }, { 0.0f, 0.0f } };   /* two partial sums per row: shorter add chains */
#pragma unroll
        for (int j = 0; j < MMA_K / 8; j++) {
#pragma unroll
            for (int e = 0; e < 4; e++)
                s[j][e] = ex2(fmaf(s[j][e], scale_log2, -msc[e >> 1]));
            ls[0][j & 1] += s[j][0] + s[j][1];
            ls[1][j & 1] += s[j][2] + s[j][3];
        }
        lrow[0] += ls[0][0] + ls[0][1];
        lrow[1] += ls[1][0] + ls[1][1];

        /* O += P V, P rounded to bf16; the S accumulators of two key octets form one A fragment */
#pragma unroll
        for (int kk = 0; kk < MMA_K / 16; kk++) {
            uint32_t a[4];
            a[0] = pack_bf16(s[2 * kk][0], s[2 * kk][1]);
            a[1] = pack_bf16(s[2 * kk][2], s[2 * kk][3]);
            a[2] = pack_bf16(s[2 * kk + 1][0], s[2 * kk + 1][1]);
            a[3] = pack_bf16(s[2 * kk + 1][2], s[2 * kk + 1][3]);
#pragma unroll
            for (int dp = 0; dp < DV / 16; dp++) {
                uint32_t b[4];
                ldsm_x4_t(b, vb + (kk * 16 + (lane & 7) + (((lane >> 3) & 1) << 3)) * L::LV + dp * 16 + (lane >> 4) * 8);
                mma16816(o[2 * dp], a, b[0], b[1]);
                mma16816(o[2 * dp + 1], a, b[2], b[3]);
            }
        }
    }

    /* O / l through shared memory (the K/V buffers, now free) for 16-byte row stores */
#pragma unroll
    for (int i = 0; i < 2; i++) {
        lrow[i] += __shfl_xor_sync(0xffffffffu, lrow[i], 1);
        lrow[i] += __shfl_xor_sync(0xffffffffu, lrow[i], 2);
    }
    cp_async_wait_all();
    __syncthreads();
    bf16 *Os = Ks + warp * 16 * L::LO;   /* [16][LO] */
#pragma unroll
    for (int d = 0; d < DV / 8; d++) {
#pragma unroll
        for (int i = 0; i < 2; i++) {
            const float lv = lrow[i];
            const float v0 = lv > 0.0f ? o[d][2 * i] / lv : 0.0f, v1 = lv > 0.0f ? o[d][2 * i + 1] / lv : 0.0f;
            *reinterpret_cast<__nv_bfloat162 *>(Os + (qr + 8 * i) * L::LO + d * 8 + qc) = __floats2bfloat162_rn(v0, v1);
        }
    }
    __syncwarp();
    const size_t di = (size_t)nh * DV;
    for (int i = lane; i < 16 * (DV / 8); i += 32) {
        const int r = i / (DV / 8), c = i % (DV / 8), R = R0 + warp * 16 + r;
        if (R < rows)
            *reinterpret_cast<uint4 *>(att + (size_t)(R / G) * di + (kvh * G + R % G) * DV + c * 8) =
                *reinterpret_cast<const uint4 *>(Os + r * L::LO + c * 8);
    }
}

template <int DQ, int DV, int MAXW, int MINB, bool QREG>
static cudaError_t mma_launch(int nw, const bf16 *u, int ldu, int n, const cu_desc *desc, int kv_layer, int nh,
                              int nkv, float scale, cu_kvgeom g, bf16 *att, cudaStream_t s)
{
    auto kern = k_attn_mma<DQ, DV, MAXW, MINB, QREG>;
    size_t smem = mma_smem<DQ, DV>::total(nw);
    cudaError_t e = cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                         (int)mma_smem<DQ, DV>::total(MAXW));
    if (e != cudaSuccess)
        return e;
    const int G = nh / nkv, BM = 16 * nw;
    dim3 grid((unsigned)(((size_t)n * G + BM - 1) / BM), nkv);
    kern<<<grid, nw * 32, smem, s>>>(u, ldu, n, desc, kv_layer, nh, nkv, scale * 1.4426950408889634f, g, att);
    return cudaGetLastError();
}

struct sm_info {
    int n_sm, smem_sm;
};

static sm_info mma_sm_info()
{
    static sm_info si;
    if (!si.n_sm) {
        int dev = 0, v = 0;
        cudaGetDevice(&dev);
        si.smem_sm = cudaDeviceGetAttribute(&v, cudaDevAttrMaxSharedMemoryPerMultiprocessor, dev) == cudaSuccess ? v : 0;
        si.n_sm = cudaDeviceGetAttribute(&v, cudaDevAttrMultiProcessorCount, dev) == cudaSuccess && v > 0 ? v : 1;
    }
    return si;
}

/* Blocks of nw warps resident per SM: the register bound of the launch (regs per thread) and shared memory. */
template <int DQ, int DV>
static int mma_per_sm(const sm_info &si, int nw, int regs)
{
    const int by_regs = 65536 / (nw * 32 * regs);
    const int by_smem = (int)((size_t)si.smem_sm / (mma_smem<DQ, DV>::total(nw) + 1024));
    return by_regs < by_smem ? by_regs : by_smem;
}

/*
 * Warps per block for the 128-register kernel.  A pass is one wave (blocks are resident at once up to
 * the SM's limits) and SMs take blocks round-robin, so the busiest SM holds ceil(blocks / SMs) blocks:
 * choose the block height that minimises the rows on it (ties: more warps; 4..8 warps, and the count
 * must fit the SM's register and shared-memory limits, else the pass needs a second wave).
 */
template <int DQ, int DV>
static int mma_warps(const sm_info &si, int rows_total, int nkv)
{
    int best = 8;
    long best_cost = -1;
    for (int nw = 8; nw >= 4; nw--) {
        const long blocks = (long)((rows_total + 16 * nw - 1) / (16 * nw)) * nkv;
        const long slots = (long)mma_per_sm<DQ, DV>(si, nw, 128) * si.n_sm;
        long cost = (blocks + si.n_sm - 1) / si.n_sm * 16 * nw;
        if (blocks > slots)
            cost += cost;   /* a second wave */
        if (best_cost < 0 || cost < best_cost) {
            best_cost = cost;
            best = nw;
        }
    }
    return best;
}

/* Keys visible to the query at combined position p (meta keys, window, causal). */
static int mma_vis_keys(const cu_kvgeom &g, int p)
{
    if (g.is_global)
        return p + 1;
    const int lo = g.n_meta > p - g.window ? g.n_meta : p - g.window;
    return (p + 1 < g.n_meta ? p + 1 : g.n_meta) + (p + 1 - lo > 0 ? p + 1 - lo : 0);
}

/*
 * Two builds of the kernel: 4 warps with up to 168 registers (3 blocks per SM, Q fragments in
 * registers, no spills: the faster one per SM), and 4..8 warps at 128 registers (2..3 blocks per SM)
 * whose block height is chosen against wave quantisation.  The 168-register build is taken when its
 * blocks fit in one wave, or when the pass is skewed (the first row sees at most 3/5 of the keys of the
 * last: row tiles start heaviest first, so the blocks of a second wave are light ones).  Passes where
 * every row sees about the same number of keys (a full window) take the 128-register build, in one wave.
 * (H100, 1.5B shapes, 1024-row passes: SWA at 0 0.050 vs 0.057 ms, SWA at 1024 0.091 vs 0.068 ms,
 * global at 1024 0.092 vs 0.102 ms for the 168- vs the 128-register build.)
 */
template <int DQ, int DV>
static cudaError_t mma_pick(const bf16 *u, int ldu, int n, const cu_desc *desc, int pos, int kv_layer, int nh,
                            int nkv, float scale, cu_kvgeom g, bf16 *att, cudaStream_t s)
{
    /* registers per thread: O DV/2, S 32, Q fragments DQ/4, plus addressing; at 128 the Q fragments
     * are reloaded per tile once they would not fit */
    constexpr bool QFIT = DV / 2 + DQ / 4 <= 64;
    const sm_info si = mma_sm_info();
    const int rows_total = n * (nh / nkv);
    bool narrow = cu_flash_warps < 0;
    if (cu_flash_warps == 0) {
        const long blocks = (long)((rows_total + 63) / 64) * nkv;
        const long slots = (long)mma_per_sm<DQ, DV>(si, 4, 168) * si.n_sm;
        narrow = blocks <= slots || (pos >= 0 && 5L * mma_vis_keys(g, pos) <= 3L * mma_vis_keys(g, pos + n - 1));
    }
    if (narrow)
        return mma_launch<DQ, DV, 4, 3, true>(4, u, ldu, n, desc, kv_layer, nh, nkv, scale, g, att, s);
    const int nw = cu_flash_warps >= 4 && cu_flash_warps <= 8 ? cu_flash_warps : mma_warps<DQ, DV>(si, rows_total, nkv);
    return mma_launch<DQ, DV, 8, 2, QFIT>(nw, u, ldu, n, desc, kv_layer, nh, nkv, scale, g, att, s);
}

static int mma_supported(int dq, int dv)
{
    return (dq == 16 && dv == 32) || (dq == 32 && dv == 64) || (dq == 64 && dv == 64) ||
           (dq == 64 && dv == 128) || (dq == 128 && dv == 128);
}

int cu_attn_flash_supported(int dq, int dv)
{
    return mma_supported(dq, dv) || wmma_supported(dq, dv);
}

cudaError_t cu_attn_flash(const bf16 *u, int ldu, int n, const cu_desc *desc, int pos, int kv_layer,
                          int nh, int nkv, int dq, int dv, float scale, cu_kvgeom g,
                          bf16 *att, cudaStream_t s)
{
    if (nh % nkv || (ldu & 7))
        return cudaErrorInvalidValue;
    if (dq == 16 && dv == 32)
        return mma_pick<16, 32>(u, ldu, n, desc, pos, kv_layer, nh, nkv, scale, g, att, s);
    if (dq == 32 && dv == 64)
        return mma_pick<32, 64>(u, ldu, n, desc, pos, kv_layer, nh, nkv, scale, g, att, s);
    if (dq == 64 && dv == 64)
        return mma_pick<64, 64>(u, ldu, n, desc, pos, kv_layer, nh, nkv, scale, g, att, s);
    if (dq == 64 && dv == 128)
        return mma_pick<64, 128>(u, ldu, n, desc, pos, kv_layer, nh, nkv, scale, g, att, s);
    if (dq == 128 && dv == 128)
        return mma_pick<128, 128>(u, ldu, n, desc, pos, kv_layer, nh, nkv, scale, g, att, s);
    return cu_attn_flash_wmma(u, ldu, n, desc, kv_layer, nh, nkv, dq, dv, scale, g, att, s);
}
