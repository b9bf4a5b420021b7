/* cuda_kernels.cu: element-wise, normalization, GEMV, conv, scan and sampling kernels of the CUDA backend. */
#include "kernels/cuda/cuda_kernels.cuh"
#include <math.h>
#include <float.h>
#include <stdlib.h>

#include "kernels/cuda/cuda_device.cuh"

using namespace cudev;

__device__ float block_max(float v, float *red)
{
    int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = (blockDim.x + 31) >> 5;
    v = warp_max(v);
    __syncthreads();
    if (lane == 0)
        red[w] = v;
    __syncthreads();
    v = lane < nw ? red[lane] : -INFINITY;
    return warp_max(v);
}

/* Value of a linear layer's output element (b, n), rounded to bf16 as the reference stores it. */
__device__ __forceinline__ float lin_get(const cu_lin &in, int b, int n)
{
    if (in.h)
        return b2f(in.h[(size_t)b * in.ldh + n]);
    const float *p = in.part + (size_t)b * in.N + n;
    const size_t st = (size_t)in.B * in.N;
    float s0 = 0.0f, s1 = 0.0f, s2 = 0.0f, s3 = 0.0f;
    int k = 0;
    for (; k + 4 <= in.nsplit; k += 4) {   /* four independent loads in flight */
        s0 += p[k * st];
        s1 += p[(k + 1) * st];
        s2 += p[(k + 2) * st];
        s3 += p[(k + 3) * st];
    }
    for (; k < in.nsplit; k++)
        s0 += p[k * st];
    return bfr((s0 + s1) + (s2 + s3));
}

/* ---------------------------------------------------------------- GEMV */

int cu_pdl = 1;
int cu_gemv_lane_vecs = 1;

/* 8 floats -> 8 bf16 (round to nearest even), in unpack8's order */
__device__ __forceinline__ uint4 pack8(const float *f)
{
    uint4 v;
    __nv_bfloat162 *p = reinterpret_cast<__nv_bfloat162 *>(&v);
#pragma unroll
    for (int i = 0; i < 4; i++)
        p[i] = __floats2bfloat162_rn(f[2 * i], f[2 * i + 1]);
    return v;
}

/* One warp owns R consecutive rows; lanes stride over the K slice of this
 * block (blockIdx.y) two 16-byte vectors at a time, so 2*R weight loads per
 * lane are in flight before the first use. */
template <int NB, int R>
__global__ void __launch_bounds__(256) k_gemv(cu_gemv a)
{
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int row0 = (blockIdx.x * 8 + warp) * R;
    if (row0 >= a.N)
        return;
    const int kv = a.K >> 3;
    const int per = (kv + a.nsplit - 1) / a.nsplit;
    const int v0 = blockIdx.y * per, v1 = min(kv, v0 + per);
    float acc[R][NB];
#pragma unroll
    for (int r = 0; r < R; r++)
#pragma unroll
        for (int b = 0; b < NB; b++)
            acc[r][b] = 0.0f;
    const uint4 *wr[R];
#pragma unroll
    for (int r = 0; r < R; r++)
        wr[r] = reinterpret_cast<const uint4 *>(a.W + (size_t)min(row0 + r, a.N - 1) * a.K);
    if (a.pdl) {
        /* Launched while the previous kernel still runs: pull this warp's
         * weights into L2 (they depend on nothing), then wait for X. */
        for (int v = v0 + lane * 4; v < v1; v += 128)
#pragma unroll
            for (int r = 0; r < R; r++)
                asm volatile("prefetch.global.L2 [%0];" ::"l"(wr[r] + v));
        pdl_wait();
        pdl_trigger();
    }

    for (int v = v0 + lane; v < v1; v += 64) {
        const bool two = v + 32 < v1;
        uint4 w0[R], w1[R];
#pragma unroll
        for (int r = 0; r < R; r++)
            w0[r] = ldg_stream(wr[r] + v);
        if (two) {
#pragma unroll
            for (int r = 0; r < R; r++)
                w1[r] = ldg_stream(wr[r] + v + 32);
        }
#pragma unroll
        for (int b = 0; b < NB; b++) {
            if (b >= a.B)
                break;
            const uint4 *xr = reinterpret_cast<const uint4 *>(a.X + (size_t)b * a.ldx);
            float xf[8];
            unpack8(xr[v], xf);
#pragma unroll
            for (int r = 0; r < R; r++)
                acc[r][b] += dot8(w0[r], xf);
            if (two) {
                unpack8(xr[v + 32], xf);
#pragma unroll
                for (int r = 0; r < R; r++)
                    acc[r][b] += dot8(w1[r], xf);
            }
        }
    }
#pragma unroll
    for (int r = 0; r < R; r++)
#pragma unroll
        for (int b = 0; b < NB; b++)
            acc[r][b] = warp_sum(acc[r][b]);
    if (lane != 0)
        return;
#pragma unroll
    for (int b = 0; b < NB; b++) {
        if (b >= a.B)
            break;
        if (a.mode == CU_GV_GATED) {
#pragma unroll
            for (int j = 0; j < R / 2; j++) {
                int n = row0 + 2 * j;
                if (n + 1 < a.N) {
                    float g = bfr(silu_f(bfr(acc[2 * j][b])));
                    a.out[(size_t)b * a.ldo + n / 2] = f2b(g * bfr(acc[2 * j + 1][b]));
                }
            }
            continue;
        }
#pragma unroll
        for (int r = 0; r < R; r++) {
            int n = row0 + r;
            if (n >= a.N)
                break;
            float y = acc[r][b];
            if (a.mode == CU_GV_BF16)
                a.out[(size_t)b * a.ldo + n] = f2b(y);
            else if (a.mode == CU_GV_F32)
                a.part[(size_t)b * a.ldo + n] = bfr(y);
            else
                a.part[((size_t)blockIdx.y * a.B + b) * a.N + n] = y;
        }
    }
}

static int gemv_rows_per_warp(int B) { return B <= 2 ? 4 : 2; }

int cu_gemv_splits(int N, int K, int B, int n_sm)
{
    /* independent of B, so a row decoded in a batch sums its partials exactly
     * as it would alone */
    (void)B;
    int R = gemv_rows_per_warp(1);
    int rowblocks = (N + 8 * R - 1) / (8 * R);
    int target = n_sm * 4;
    int ns = (target + rowblocks - 1) / rowblocks;
    int maxs = (K / 8) / (32 * cu_gemv_lane_vecs);   /* enough 16-byte vectors per lane per split */
    if (ns > maxs)
        ns = maxs;
    if (ns < 1)
        ns = 1;
    return ns;
}

cudaError_t cu_gemv_launch(const cu_gemv *a, cudaStream_t s)
{
    if (a->B < 1 || a->B > 8 || (a->K & 7) || a->nsplit < 1 ||
        (a->nsplit > 1 && a->mode != CU_GV_PART) || (a->mode == CU_GV_GATED && (a->N & 1)))
        return cudaErrorInvalidValue;
    int R = gemv_rows_per_warp(a->B);
    cudaLaunchConfig_t cfg = {};
    cudaLaunchAttribute attr[1];
    cfg.gridDim = dim3((a->N + 8 * R - 1) / (8 * R), a->nsplit);
    cfg.blockDim = dim3(256);
    cfg.stream = s;
    attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attr[0].val.programmaticStreamSerializationAllowed = a->pdl ? 1 : 0;
    cfg.attrs = attr;
    cfg.numAttrs = 1;
    if (a->B == 1)
        return cudaLaunchKernelEx(&cfg, k_gemv<1, 4>, *a);
    if (a->B == 2)
        return cudaLaunchKernelEx(&cfg, k_gemv<2, 4>, *a);
    if (a->B <= 4)
        return cudaLaunchKernelEx(&cfg, k_gemv<4, 2>, *a);
    return cudaLaunchKernelEx(&cfg, k_gemv<8, 2>, *a);
}

/* ------------------------------------------------------ embed / norms */

__global__ void k_embed(bf16 *x, const bf16 *rows, const int32_t *ids, const cu_desc *desc, int H)
{
    pdl_wait();
    pdl_trigger();
    int t = blockIdx.x;
    size_t id = ids ? (size_t)ids[t] : desc ? (size_t)desc[t].token : (size_t)t;
    const bf16 *src = rows + id * H;
    for (int i = threadIdx.x; i < H; i += blockDim.x)
        x[(size_t)t * H + i] = src[i];
}

cudaError_t cu_embed(bf16 *x, const bf16 *rows, const int32_t *ids, const cu_desc *desc,
                     int n, int H, cudaStream_t s)
{
    return cu_launch(k_embed, dim3(n), dim3(256), 0, s, x, rows, ids, desc, H);
}

/* RMSNorm as the reference rounds it (spec §5.1): y = bf16(w * bf16(x * r)). */
__global__ void k_resnorm(bf16 *x, cu_lin y, int has_y, const bf16 *w, bf16 *hn, int H, float eps)
{
    extern __shared__ float xs[];        /* [H] */
    __shared__ float red[32];
    int t = blockIdx.x;
    pdl_wait();
    pdl_trigger();
    bf16 *xr = x + (size_t)t * H;
    float ss = 0.0f;
    for (int i = threadIdx.x; i < H; i += blockDim.x) {
        float v = b2f(xr[i]);
        if (has_y) {
            v = bfr(v + lin_get(y, t, i));
            xr[i] = f2b(v);
        }
        xs[i] = v;
        ss += v * v;
    }
    ss = block_sum(ss, red);
    float r = rsqrtf(ss / (float)H + eps);
    for (int i = threadIdx.x; i < H; i += blockDim.x)
        hn[(size_t)t * H + i] = f2b(b2f(w[i]) * bfr(xs[i] * r));
}

cudaError_t cu_resnorm(bf16 *x, const cu_lin *y, const bf16 *w, bf16 *hn, int n, int H,
                       float eps, cudaStream_t s)
{
    cu_lin none = {};
    return cu_launch(k_resnorm, dim3(n), dim3(1024), H * sizeof(float), s, x, y ? *y : none, (int)(y != NULL), w, hn, H,
                     eps);
}

/* ----------------------------------------------------------- RoPE / KV */

/* Rotate-half RoPE of one head in place (src may equal dst). */
__device__ __forceinline__ void rope_pair(const bf16 *src, bf16 *dst, int j, int half, float c, float sn)
{
    float y0, y1;
    rope_rot(b2f(src[j]), b2f(src[j + half]), c, sn, &y0, &y1);
    dst[j] = f2b(y0);
    dst[j + half] = f2b(y1);
}

__global__ void k_rope_kv(cu_rope_args a)
{
    pdl_wait();
    pdl_trigger();
    int t = blockIdx.x;
    const cu_desc *d = a.per_token ? &a.desc[t] : a.desc;
    int pos = a.per_token ? d->pos : d->pos + t;
    int half = a.dq / 2;
    bf16 *row = a.u + (size_t)t * a.ldu;
    __shared__ float cs[CU_MAX_HEAD_DIM / 2], sns[CU_MAX_HEAD_DIM / 2];
    if (a.rope) {
        for (int j = threadIdx.x; j < half; j += blockDim.x)
            rope_cs(a.inv_freq, j, pos, &cs[j], &sns[j]);
        __syncthreads();
        for (int i = threadIdx.x; i < a.nh * half; i += blockDim.x) {
            int h = i / half, j = i % half;
            rope_pair(row + h * a.dq, row + h * a.dq, j, half, cs[j], sns[j]);
        }
    }
    if (!a.owner)
        return;
    int slot = kv_slot(a.g, pos);
    bf16 *K = d->kv[2 * a.layer] + (size_t)slot * a.nkv * a.dq;
    bf16 *V = d->kv[2 * a.layer + 1] + (size_t)slot * a.nkv * a.dv;
    for (int i = threadIdx.x; i < a.nkv * half; i += blockDim.x) {
        int h = i / half, j = i % half;
        const bf16 *src = row + a.k_off + h * a.dq;
        if (a.rope) {
            rope_pair(src, K + h * a.dq, j, half, cs[j], sns[j]);
        } else {
            K[h * a.dq + j] = src[j];
            K[h * a.dq + j + half] = src[j + half];
        }
    }
    for (int i = threadIdx.x; i < a.nkv * a.dv; i += blockDim.x)
        V[i] = row[a.v_off + i];
}

cudaError_t cu_rope_kv(const cu_rope_args *a, cudaStream_t s)
{
    return cu_launch(k_rope_kv, dim3(a->n), dim3(128), 0, s, *a);
}

/* Prefill RoPE + K/V store with 16-byte vectors: one block per row; after
 * the row's cos/sin table, one task per 8 frequency pairs of a q or k head
 * (both halves loaded, rotated, stored) and per 8 values of v.  Same
 * roundings as rope_pair. */
__global__ void __launch_bounds__(256) k_rope_kv_pf(cu_rope_args a)
{
    __shared__ float cs[CU_MAX_HEAD_DIM / 2], sns[CU_MAX_HEAD_DIM / 2];
    pdl_wait();
    pdl_trigger();
    const int t = blockIdx.x, pos = a.desc->pos + t, half = a.dq / 2, hv = half / 8;
    for (int j = threadIdx.x; j < half; j += blockDim.x)
        rope_cs(a.inv_freq, j, pos, &cs[j], &sns[j]);
    __syncthreads();
    bf16 *row = a.u + (size_t)t * a.ldu;
    const int nq = a.nh * hv, nk = a.owner ? a.nkv * hv : 0, nv = a.owner ? a.nkv * a.dv / 8 : 0;
    bf16 *K = NULL, *V = NULL;
    if (a.owner) {
        int slot = kv_slot(a.g, pos);
        K = a.desc->kv[2 * a.layer] + (size_t)slot * a.nkv * a.dq;
        V = a.desc->kv[2 * a.layer + 1] + (size_t)slot * a.nkv * a.dv;
    }
    for (int i = threadIdx.x; i < nq + nk + nv; i += blockDim.x) {
        if (i < nq + nk) {
            const bool isq = i < nq;
            const int ii = isq ? i : i - nq, h = ii / hv, j0 = (ii % hv) * 8;
            const bf16 *src = row + (isq ? 0 : a.k_off) + h * a.dq;
            bf16 *dst = (isq ? row : K) + h * a.dq;
            float x[8], y[8], o1[8], o2[8];
            unpack8(*reinterpret_cast<const uint4 *>(src + j0), x);
            unpack8(*reinterpret_cast<const uint4 *>(src + j0 + half), y);
#pragma unroll
            for (int e = 0; e < 8; e++)
                rope_rot(x[e], y[e], cs[j0 + e], sns[j0 + e], &o1[e], &o2[e]);
            *reinterpret_cast<uint4 *>(dst + j0) = pack8(o1);
            *reinterpret_cast<uint4 *>(dst + j0 + half) = pack8(o2);
        } else {
            const int v = i - nq - nk;
            reinterpret_cast<uint4 *>(V)[v] = *reinterpret_cast<const uint4 *>(row + a.v_off + 8 * v);
        }
    }
}

cudaError_t cu_rope_kv_pf(const cu_rope_args *a, cudaStream_t s)
{
    if (a->rope && !a->per_token && a->dq % 16 == 0 && a->dq <= CU_MAX_HEAD_DIM && a->ldu % 8 == 0 &&
        a->k_off % 8 == 0 && a->v_off % 8 == 0 && a->dv % 8 == 0 && ((uintptr_t)a->u & 15) == 0)
        return cu_launch(k_rope_kv_pf, dim3(a->n), dim3(256), 0, s, *a);
    return cu_rope_kv(a, s);
}

/* --------------------------------------------------------------- mixer merge */

__global__ void k_preavg(const bf16 *att, const float *ml, const float *o, int nsplit, int nh, int dv,
                         const bf16 *ssm_out, const bf16 *w1, const bf16 *w2, float eps, bf16 *m)
{
    extern __shared__ float sm[];         /* att [di], ssm [di], weights [nh][nsplit], ml [nh][nsplit][2] */
    __shared__ float red[32];
    int t = blockIdx.x, di = nh * dv;
    pdl_wait();
    pdl_trigger();
    float *as = sm, *ss = sm + di, *wgt = sm + 2 * di, *mls = wgt + nh * nsplit;
    if (!att) {
        /* Merge the key splits: weight of split s = exp(m_s - M) / L.  All
         * (m, l) pairs come in with one parallel load. */
        const float *mlt = ml + (size_t)t * nh * nsplit * 2;
        for (int i = threadIdx.x; i < nh * nsplit * 2; i += blockDim.x)
            mls[i] = mlt[i];
        __syncthreads();
        for (int h = threadIdx.x; h < nh; h += blockDim.x) {
            const float *mlh = mls + h * nsplit * 2;
            float M = -INFINITY;
            for (int k = 0; k < nsplit; k++)
                M = fmaxf(M, mlh[2 * k]);
            float L = 0.0f;
            for (int k = 0; k < nsplit; k++)
                L += mlh[2 * k] == -INFINITY ? 0.0f : mlh[2 * k + 1] * expf(mlh[2 * k] - M);
            for (int k = 0; k < nsplit; k++)
                wgt[h * nsplit + k] = (L > 0.0f && mlh[2 * k] != -INFINITY) ? expf(mlh[2 * k] - M) / L : 0.0f;
        }
        __syncthreads();
    }
    float s1 = 0.0f, s2 = 0.0f;
    for (int i = threadIdx.x; i < di; i += blockDim.x) {
        float a;
        if (att) {
            a = b2f(att[(size_t)t * di + i]);
        } else {
            int h = i / dv, e = i % dv;
            const float *oh = o + ((size_t)t * nh + h) * nsplit * dv + e;
            float a0 = 0.0f, a1 = 0.0f;
            int k = 0;
            for (; k + 2 <= nsplit; k += 2) {
                a0 += oh[(size_t)k * dv] * wgt[h * nsplit + k];
                a1 += oh[(size_t)(k + 1) * dv] * wgt[h * nsplit + k + 1];
            }
            if (k < nsplit)
                a0 += oh[(size_t)k * dv] * wgt[h * nsplit + k];
            a = bfr(a0 + a1);
        }
        float sv = b2f(ssm_out[(size_t)t * di + i]);
        as[i] = a;
        ss[i] = sv;
        s1 += a * a;
        s2 += sv * sv;
    }
    s1 = block_sum(s1, red);
    s2 = block_sum(s2, red);
    float r1 = rsqrtf(s1 / (float)di + eps), r2 = rsqrtf(s2 / (float)di + eps);
    for (int i = threadIdx.x; i < di; i += blockDim.x) {
        float n1 = bfr(b2f(w1[i]) * bfr(as[i] * r1));
        float n2 = bfr(b2f(w2[i]) * bfr(ss[i] * r2));
        m[(size_t)t * di + i] = f2b(bfr(n1 + n2) * 0.5f);
    }
}

cudaError_t cu_preavg(const bf16 *att, const float *ml, const float *o, int nsplit, int nh, int dv,
                      const bf16 *ssm_out, const bf16 *w1, const bf16 *w2, float eps,
                      bf16 *m, int n, cudaStream_t s)
{
    size_t smem = (size_t)(2 * nh * dv + (att ? 0 : 3 * nh * nsplit)) * sizeof(float);
    return cu_launch(k_preavg, dim3(n), dim3(1024), smem, s, att, ml, o, nsplit, nh, dv, ssm_out, w1, w2, eps, m);
}

/* ---------------------------------------------------------------- conv */

#define CU_MAX_DCONV 8

__global__ void k_conv_prefill(const bf16 *u, int ldu, int xs_off, int n, const cu_desc *desc, int layer,
                               const bf16 *w, const float *bias, int di, int dc, bf16 *uc)
{
    size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= (size_t)n * di)
        return;
    int t = (int)(idx / di), c = (int)(idx % di);
    const float *st = desc->conv + (size_t)layer * dc * di;
    float acc = bias ? bias[c] : 0.0f;
    for (int k = 0; k < dc; k++) {
        int j = t - (dc - 1) + k;
        float xv = j >= 0 ? b2f(u[(size_t)j * ldu + xs_off + c]) : st[(size_t)(dc + j) * di + c];
        acc += b2f(w[c * dc + k]) * xv;
    }
    uc[(size_t)t * di + c] = f2b(silu_f(acc));
}

/* After the chunk: the state holds the last dc pre-conv inputs.  One thread
 * per channel reads every old column before writing (in place). */
__global__ void k_conv_state(const bf16 *u, int ldu, int xs_off, int n, const cu_desc *desc, int layer,
                             int di, int dc)
{
    int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= di)
        return;
    float *st = desc->conv + (size_t)layer * dc * di;
    float nv[CU_MAX_DCONV];
    for (int k = 0; k < dc; k++) {
        int j = n - dc + k;
        nv[k] = j >= 0 ? b2f(u[(size_t)j * ldu + xs_off + c]) : st[(size_t)(dc + j) * di + c];
    }
    for (int k = 0; k < dc; k++)
        st[(size_t)k * di + c] = nv[k];
}

#define CONVP_ROWS 4   /* positions per thread of the vector prefill conv (>= d_conv - 1) */

/* Prefill conv for d_conv = 4, 16-byte loads: one thread per (8 channels,
 * CONVP_ROWS positions) loads the CONVP_ROWS + 3 input rows it needs at once
 * (all in flight together), then slides the 4-tap window down them.  The
 * thread of the first row block also replaces the conv state: it is the only
 * one that reads the old state, so the two kernels of the general path
 * become one.  Same sums in the same order as k_conv_prefill. */
__global__ void __launch_bounds__(256) k_conv_prefill4(const bf16 *__restrict__ u, int ldu, int xs_off, int n,
                                                      const cu_desc *desc, int layer, const bf16 *__restrict__ w,
                                                      const float *__restrict__ bias, int di, bf16 *__restrict__ uc)
{
    pdl_wait();
    pdl_trigger();
    const int nv = di / 8, nrb = (n + CONVP_ROWS - 1) / CONVP_ROWS;
    const int idx = blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= nv * nrb)
        return;
    const int cv = idx % nv, rb = idx / nv, c0 = cv * 8;
    const int t0 = rb * CONVP_ROWS;
    float *st = desc->conv + (size_t)layer * 4 * di + c0;   /* [4][di], this thread's 8 channels */
    const bf16 *xs = u + xs_off + c0;                         /* row j: xs + j*ldu */
    uint4 xin[CONVP_ROWS + 3];                                /* rows t0-3 .. t0+CONVP_ROWS-1 (bf16) */
#pragma unroll
    for (int k = 0; k < CONVP_ROWS + 3; k++) {
        int j = t0 - 3 + k;
        if (j >= 0 && j < n)
            xin[k] = *reinterpret_cast<const uint4 *>(xs + (size_t)j * ldu);
    }
    float wraw[32];
    const uint4 *w4 = reinterpret_cast<const uint4 *>(w + (size_t)c0 * 4);   /* w [di][4] */
#pragma unroll
    for (int i = 0; i < 4; i++)
        unpack8(w4[i], wraw + 8 * i);
    float bf[8];
#pragma unroll
    for (int e = 0; e < 8; e++)
        bf[e] = bias ? bias[c0 + e] : 0.0f;
    float win[3][8];   /* inputs of positions t-3, t-2, t-1 */
#pragma unroll
    for (int k = 0; k < 3; k++) {
        int j = t0 - 3 + k;
        if (j >= 0) {
            unpack8(xin[k], win[k]);
        } else {
#pragma unroll
            for (int e = 0; e < 8; e++)
                win[k][e] = st[(size_t)(4 + j) * di + e];
        }
    }
#pragma unroll
    for (int r = 0; r < CONVP_ROWS; r++) {
        const int t = t0 + r;
        if (t >= n)
            break;
        float x[8], o[8];
        unpack8(xin[r + 3], x);
#pragma unroll
        for (int e = 0; e < 8; e++) {
            float acc = bf[e];
            acc += wraw[e * 4 + 0] * win[0][e];
            acc += wraw[e * 4 + 1] * win[1][e];
            acc += wraw[e * 4 + 2] * win[2][e];
            acc += wraw[e * 4 + 3] * x[e];
            o[e] = silu_f(acc);
            win[0][e] = win[1][e];
            win[1][e] = win[2][e];
            win[2][e] = x[e];
        }
        *reinterpret_cast<uint4 *>(uc + (size_t)t * di + c0) = pack8(o);
    }
    if (rb != 0)
        return;
    /* new state: the last 4 pre-conv inputs, oldest first (old entries where n < 4) */
    float nvv[4][8];
#pragma unroll
    for (int k = 0; k < 4; k++) {
        int j = n - 4 + k;
        if (j >= 0) {
            unpack8(*reinterpret_cast<const uint4 *>(xs + (size_t)j * ldu), nvv[k]);
        } else {
#pragma unroll
            for (int e = 0; e < 8; e++)
                nvv[k][e] = st[(size_t)(4 + j) * di + e];
        }
    }
#pragma unroll
    for (int k = 0; k < 4; k++)
#pragma unroll
        for (int e = 0; e < 8; e++)
            st[(size_t)k * di + e] = nvv[k][e];
}

static bool al16(const void *p) { return ((uintptr_t)p & 15) == 0; }

cudaError_t cu_conv_prefill(const bf16 *u, int ldu, int xs_off, int n, const cu_desc *desc, int layer,
                            const bf16 *w, const float *bias, int di, int dc, bf16 *uc,
                            cudaStream_t s)
{
    if (dc > CU_MAX_DCONV)
        return cudaErrorInvalidValue;
    if (dc == 4 && di % 8 == 0 && ldu % 8 == 0 && xs_off % 8 == 0 && al16(u) && al16(w) && al16(uc)) {
        size_t threads = (size_t)(di / 8) * ((n + CONVP_ROWS - 1) / CONVP_ROWS);
        return cu_launch(k_conv_prefill4, dim3((unsigned)((threads + 255) / 256)), dim3(256), 0, s, u, ldu, xs_off,
                         n, desc, layer, w, bias, di, uc);
    }
    size_t total = (size_t)n * di;
    k_conv_prefill<<<(unsigned)((total + 255) / 256), 256, 0, s>>>(u, ldu, xs_off, n, desc, layer, w, bias,
                                                                  di, dc, uc);
    k_conv_state<<<(di + 255) / 256, 256, 0, s>>>(u, ldu, xs_off, n, desc, layer, di, dc);
    return cudaGetLastError();
}

#define CONV_SLICE 128
#define CONV_ROWS 4     /* sequences per block of the decode conv + x_proj kernel */

int cu_conv_xproj_slices(int di) { return (di + CONV_SLICE - 1) / CONV_SLICE; }

/* Decode conv step for CONV_SLICE channels of every sequence, then this
 * slice's share of x_proj (P rows): the slice's weights stay in L1 across b. */
__global__ void __launch_bounds__(256) k_conv_xproj(const bf16 *u, int ldu, int xs_off, int B,
                                                    const cu_desc *desc, int layer, const bf16 *w,
                                                    const float *bias, int di, int dc, const bf16 *xproj,
                                                    int P, bf16 *uc, float *part)
{
    pdl_wait();
    pdl_trigger();
    __shared__ float ucs[CONV_SLICE];
    int c0 = blockIdx.x * CONV_SLICE;
    int cn = min(CONV_SLICE, di - c0);
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    /* blockIdx.y: a group of CONV_ROWS sequences (the slice's weights stay in L1 across them) */
    int b1 = min(B, (int)(blockIdx.y + 1) * CONV_ROWS);
    for (int b = blockIdx.y * CONV_ROWS; b < b1; b++) {
        float *st = desc[b].conv + (size_t)layer * dc * di;
        for (int cl = threadIdx.x; cl < CONV_SLICE; cl += blockDim.x) {
            int c = c0 + cl;
            if (cl >= cn) {
                ucs[cl] = 0.0f;
                continue;
            }
            float win[CU_MAX_DCONV];
            for (int k = 0; k < dc - 1; k++)
                win[k] = st[(size_t)(k + 1) * di + c];
            win[dc - 1] = b2f(u[(size_t)b * ldu + xs_off + c]);
            float acc = bias ? bias[c] : 0.0f;
            for (int k = 0; k < dc; k++) {
                acc += b2f(w[c * dc + k]) * win[k];
                st[(size_t)k * di + c] = win[k];
            }
            float v = bfr(silu_f(acc));
            ucs[cl] = v;
            uc[(size_t)b * di + c] = f2b(v);
        }
        __syncthreads();
        const int nw = blockDim.x / 32;
        for (int r0 = warp; r0 < P; r0 += 4 * nw) {
            float acc[4] = { 0.0f, 0.0f, 0.0f, 0.0f };
            for (int cl = lane; cl < cn; cl += 32) {
#pragma unroll
                for (int q = 0; q < 4; q++) {
                    int r = r0 + q * nw;
                    if (r < P)
                        acc[q] += b2f(xproj[(size_t)r * di + c0 + cl]) * ucs[cl];
                }
            }
#pragma unroll
            for (int q = 0; q < 4; q++) {
                int r = r0 + q * nw;
                float v = warp_sum(acc[q]);
                if (lane == 0 && r < P)
                    part[((size_t)blockIdx.x * B + b) * P + r] = v;
            }
        }
        __syncthreads();
    }
}

cudaError_t cu_conv_xproj_decode(const bf16 *u, int ldu, int xs_off, int B, const cu_desc *desc,
                                 int layer, const bf16 *w, const float *bias, int di, int dc,
                                 const bf16 *xproj, int P, bf16 *uc, float *part, int nslice,
                                 cudaStream_t s)
{
    if (dc > CU_MAX_DCONV || nslice != cu_conv_xproj_slices(di))
        return cudaErrorInvalidValue;
    return cu_launch(k_conv_xproj, dim3(nslice, (B + CONV_ROWS - 1) / CONV_ROWS), dim3(256), 0, s, u, ldu, xs_off, B, desc, layer, w, bias, di, dc, xproj,
                     P, uc, part);
}

/* ------------------------------------------------------------- dt/B/C norms */

/* RMSNorm of v[0..len) in place by one warp. */
__device__ void warp_rmsnorm(float *v, int len, const bf16 *w, float eps)
{
    int lane = threadIdx.x & 31;
    float ss = 0.0f;
    for (int i = lane; i < len; i += 32)
        ss += v[i] * v[i];
    ss = warp_sum(ss);
    float r = rsqrtf(ss / (float)len + eps);
    __syncwarp();
    for (int i = lane; i < len; i += 32)
        v[i] = bfr(b2f(w[i]) * bfr(v[i] * r));
    __syncwarp();
}

__global__ void k_dbc_norm(cu_lin xp, int R, int N, const bf16 *wdt, const bf16 *wB, const bf16 *wC,
                           int norms, float eps, float *dbc, bf16 *dt_out)
{
    pdl_wait();
    pdl_trigger();
    extern __shared__ float v[];          /* [R + 2N], then [nq][R + 2N] sub-sums */
    int t = blockIdx.x, P = R + 2 * N;
    if (xp.h) {
        for (int i = threadIdx.x; i < P; i += blockDim.x)
            v[i] = lin_get(xp, t, i);
        __syncthreads();
    } else {
        /* nq threads per value, each over every nq-th split; then fixed-order sums */
        int nq = (int)blockDim.x / P;
        float *sub = v + P;
        if (nq < 1)
            nq = 1;
        for (int i = threadIdx.x; i < P * nq; i += blockDim.x) {
            int val = i % P, q = i / P;
            float acc = 0.0f;
            for (int k = q; k < xp.nsplit; k += nq)
                acc += xp.part[((size_t)k * xp.B + t) * xp.N + val];
            sub[q * P + val] = acc;
        }
        __syncthreads();
        for (int i = threadIdx.x; i < P; i += blockDim.x) {
            float acc = 0.0f;
            for (int q = 0; q < nq; q++)
                acc += sub[q * P + i];
            v[i] = bfr(acc);
        }
        __syncthreads();
    }
    if (norms) {
        int warp = threadIdx.x >> 5;
        if (warp == 0)
            warp_rmsnorm(v, R, wdt, eps);
        else if (warp == 1)
            warp_rmsnorm(v + R, N, wB, eps);
        else if (warp == 2)
            warp_rmsnorm(v + R + N, N, wC, eps);
    }
    __syncthreads();
    for (int i = threadIdx.x; i < P; i += blockDim.x)
        dbc[(size_t)t * P + i] = v[i];
    if (dt_out)
        for (int i = threadIdx.x; i < R; i += blockDim.x)
            dt_out[(size_t)t * R + i] = f2b(v[i]);
}

cudaError_t cu_dbc_norm(const cu_lin *xp, int R, int N, const bf16 *wdt, const bf16 *wB,
                        const bf16 *wC, int norms, float eps, float *dbc, bf16 *dt_out, int n,
                        cudaStream_t s)
{
    int threads = xp->h ? 128 : 1024;
    int nq = threads / (R + 2 * N) > 0 ? threads / (R + 2 * N) : 1;
    return cu_launch(k_dbc_norm, dim3(n), dim3(threads), (size_t)(R + 2 * N) * (1 + nq) * sizeof(float), s, *xp, R, N,
                     wdt, wB, wC, norms, eps, dbc, dt_out);
}

/* ------------------------------------------------------------------- SSM */

/* One thread per (channel, state); 16 channels per block. */
__global__ void __launch_bounds__(256) k_ssm_decode(cu_ssm_args a)
{
    pdl_wait();
    pdl_trigger();
    const int s = threadIdx.x & 15;
    const int c_raw = blockIdx.x * 16 + (threadIdx.x >> 4);
    const bool valid = c_raw < a.di;
    const int c = valid ? c_raw : a.di - 1;
    const int b = blockIdx.y;
    const int P = a.R + 2 * CU_D_STATE;
    const float *dbc = a.dbc + (size_t)b * P;
    float acc = 0.0f;
    for (int k = s; k < a.R; k += 16)
        acc += dbc[k] * b2f(a.dtw[(size_t)c * a.R + k]);
    acc = sum16(acc);
    float delta = softplus_f(bfr(acc) + a.dtb[c]);
    float u = b2f(a.uc[(size_t)b * a.di + c]);
    float *hp = a.desc[b].ssm + ((size_t)a.layer * a.di + c) * CU_D_STATE + s;
    float h = *hp;
    h = expf(a.A[c * CU_D_STATE + s] * delta) * h + (delta * dbc[a.R + s]) * u;
    if (valid)
        *hp = h;
    float y = sum16(dbc[a.R + CU_D_STATE + s] * h) + a.D[c] * u;
    if (valid && s == 0) {
        float z = b2f(a.u[(size_t)b * a.ldu + a.z_off + c]);
        a.out[(size_t)b * a.di + c] = f2b(y * silu_f(z));
    }
}

cudaError_t cu_ssm_decode(const cu_ssm_args *a, cudaStream_t s)
{
    dim3 grid((a->di + 15) / 16, a->n);
    return cu_launch(k_ssm_decode, grid, dim3(256), 0, s, *a);
}

size_t cu_ssm_ws_floats(int n, int di)
{
    size_t nch = (size_t)(n + CU_SCAN_CHUNK - 1) / CU_SCAN_CHUNK;
    return 3 * nch * (size_t)di * CU_D_STATE + (size_t)n * di;
}

/*
 * Prefill scan, chunked over positions: one thread owns one channel's 16
 * states in registers (no shuffles in the position loop); a block covers
 * SCAN_THREADS channels of one chunk of L positions.  L (a multiple of
 * SCAN_AHEAD in [CU_SCAN_CHUNK, SCAN_CHUNK_MAX]) is chosen per launch from the
 * shape and the chip (scan_chunk_len): enough blocks to fill every SM, all
 * resident at once, evenly spread.  Per (position, state) the work is one
 * exp2 (the MUFU pipe, 16 per clock per SM) and three or four fp32
 * instructions.  B and C of the chunk's positions are staged in shared memory
 * and read as broadcasts; the per-channel inputs of the next SCAN_AHEAD
 * positions are loaded while the current ones are computed.
 *
 * Numerics are the reference scan kernel's: decay exp2(delta * (A*log2 e))
 * with A*log2 e formed once per state, B*(delta*u), fp32 state; the exp2 is
 * the hardware's (ex2.approx.ftz: a decay below 2^-126 is 0).  Only fp32
 * summation orders are our own (C.h in four partial sums; a chunk's total
 * decay as exp2(A*log2 e * sum delta)).
 */
#define SCAN_THREADS 128
#define SCAN_MIN_BLOCKS 5    /* resident blocks per SM the register budget must allow */
#define SCAN_AHEAD 4         /* positions per step of the software pipeline */
#define SCAN_CHUNK_MAX 64    /* longest chunk (shared-memory staging of B, C) */
#define LOG2E 1.4426950408889634f

__device__ __forceinline__ float ex2_ftz(float x)
{
    float r;
    asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(r) : "f"(x));
    return r;
}

/* Phase 1: each chunk from a zero state; keeps the chunk's end state and
 * total decay in ws, and Delta = softplus(delta + dt_bias) (fp32) in dl for
 * phase 3. */
__global__ void __launch_bounds__(SCAN_THREADS, SCAN_MIN_BLOCKS) k_scan_local(cu_ssm_args a, float *__restrict__ dl,
                                                                              int nch, int L)
{
    __shared__ __align__(16) float Bs[SCAN_CHUNK_MAX][CU_D_STATE];   /* B of the chunk's positions */
    pdl_wait();
    pdl_trigger();
    const int c_raw = blockIdx.x * SCAN_THREADS + threadIdx.x;
    const bool valid = c_raw < a.di;
    const int c = valid ? c_raw : a.di - 1;
    const int ch = blockIdx.y, P = a.R + 2 * CU_D_STATE;
    const int t0 = ch * L, len = min(a.n - t0, L);
    for (int i = threadIdx.x; i < len * CU_D_STATE; i += blockDim.x)
        Bs[i / CU_D_STATE][i % CU_D_STATE] = a.dbc[(size_t)(t0 + i / CU_D_STATE) * P + a.R + i % CU_D_STATE];
    const bf16 *__restrict__ dp = a.delta + (size_t)t0 * a.di + c;
    const bf16 *__restrict__ up = a.uc + (size_t)t0 * a.di + c;
    float dv[SCAN_AHEAD], uv[SCAN_AHEAD];
#pragma unroll
    for (int q = 0; q < SCAN_AHEAD; q++) {
        size_t o = (size_t)min(q, len - 1) * a.di;
        dv[q] = b2f(dp[o]);
        uv[q] = b2f(up[o]);
    }
    float A2[CU_D_STATE], h[CU_D_STATE];
#pragma unroll
    for (int s = 0; s < CU_D_STATE; s++) {
        A2[s] = a.A[c * CU_D_STATE + s] * LOG2E;
        h[s] = 0.0f;
    }
    const float bias = a.dtb[c];
    float sd = 0.0f;   /* sum of Delta over the chunk */
    __syncthreads();
    for (int t = 0; t < len; t += SCAN_AHEAD) {
        float dn[SCAN_AHEAD], un[SCAN_AHEAD];   /* the next step's inputs, in flight during this one */
#pragma unroll
        for (int q = 0; q < SCAN_AHEAD; q++) {
            size_t o = (size_t)min(t + SCAN_AHEAD + q, len - 1) * a.di;
            dn[q] = b2f(dp[o]);
            un[q] = b2f(up[o]);
        }
#pragma unroll
        for (int q = 0; q < SCAN_AHEAD; q++) {
            if (t + q >= len)
                break;
            const float d = softplus_f(dv[q] + bias), du = d * uv[q];
            sd += d;
            if (valid)
                dl[(size_t)(t0 + t + q) * a.di + c] = d;
            const float4 *b4 = reinterpret_cast<const float4 *>(Bs[t + q]);
#pragma unroll
            for (int s4 = 0; s4 < CU_D_STATE / 4; s4++) {
                const float4 b = b4[s4];
                const float bb[4] = { b.x, b.y, b.z, b.w };
#pragma unroll
                for (int j = 0; j < 4; j++) {
                    const int s = 4 * s4 + j;
                    h[s] = ex2_ftz(d * A2[s]) * h[s] + bb[j] * du;
                }
            }
        }
#pragma unroll
        for (int q = 0; q < SCAN_AHEAD; q++) {
            dv[q] = dn[q];
            uv[q] = un[q];
        }
    }
    if (!valid)
        return;
    const size_t nstate = (size_t)a.di * CU_D_STATE, i = (size_t)ch * nstate + (size_t)c * CU_D_STATE;
    float4 *hw = reinterpret_cast<float4 *>(a.ws + i), *dw = reinterpret_cast<float4 *>(a.ws + nch * nstate + i);
#pragma unroll
    for (int s4 = 0; s4 < CU_D_STATE / 4; s4++) {
        hw[s4] = make_float4(h[4 * s4], h[4 * s4 + 1], h[4 * s4 + 2], h[4 * s4 + 3]);
        dw[s4] = make_float4(ex2_ftz(A2[4 * s4] * sd), ex2_ftz(A2[4 * s4 + 1] * sd), ex2_ftz(A2[4 * s4 + 2] * sd),
                             ex2_ftz(A2[4 * s4 + 3] * sd));
    }
}

#define CARRY_AHEAD 16   /* chunks whose (end state, decay) pairs are loaded before the chain uses them */

/* Phase 2: the state entering each chunk, sequentially over chunks (the
 * loads do not depend on the chain, so they are issued ahead of it). */
__global__ void k_scan_carry(cu_ssm_args a, int nch)
{
    pdl_wait();
    pdl_trigger();
    size_t nstate = (size_t)a.di * CU_D_STATE;
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= nstate)
        return;
    const float *hl = a.ws, *dec = a.ws + nch * nstate;
    float *hin = a.ws + 2 * nch * nstate;
    float H = a.desc->ssm[(size_t)a.layer * nstate + i];
    for (int k0 = 0; k0 < nch; k0 += CARRY_AHEAD) {
        float dk[CARRY_AHEAD], hk[CARRY_AHEAD];
#pragma unroll
        for (int q = 0; q < CARRY_AHEAD; q++) {
            int k = min(k0 + q, nch - 1);
            dk[q] = dec[k * nstate + i];
            hk[q] = hl[k * nstate + i];
        }
#pragma unroll
        for (int q = 0; q < CARRY_AHEAD; q++) {
            if (k0 + q >= nch)
                break;
            hin[(k0 + q) * nstate + i] = H;
            H = dk[q] * H + hk[q];
        }
    }
}

/* Phase 3: rerun each chunk from its true entering state, emit the gated
 * output out = bf16((C.h + D u) * silu(z)); the last chunk stores the final
 * state.  FUSED: a single chunk, no phase 1: Delta computed here. */
template <bool FUSED>
__global__ void __launch_bounds__(SCAN_THREADS, SCAN_MIN_BLOCKS) k_scan_out(cu_ssm_args a, const float *__restrict__ dl,
                                                                            int nch, int L)
{
    __shared__ __align__(16) float BC[SCAN_CHUNK_MAX][2 * CU_D_STATE];   /* B then C of the chunk's positions */
    pdl_wait();
    pdl_trigger();
    const int c_raw = blockIdx.x * SCAN_THREADS + threadIdx.x;
    const bool valid = c_raw < a.di;
    const int c = valid ? c_raw : a.di - 1;
    const int ch = blockIdx.y, P = a.R + 2 * CU_D_STATE;
    const int t0 = ch * L, len = min(a.n - t0, L);
    for (int i = threadIdx.x; i < len * 2 * CU_D_STATE; i += blockDim.x)
        BC[i / (2 * CU_D_STATE)][i % (2 * CU_D_STATE)] =
            a.dbc[(size_t)(t0 + i / (2 * CU_D_STATE)) * P + a.R + i % (2 * CU_D_STATE)];
    const bf16 *__restrict__ dp = a.delta + (size_t)t0 * a.di + c;
    const float *__restrict__ lp = dl + (size_t)t0 * a.di + c;
    const bf16 *__restrict__ up = a.uc + (size_t)t0 * a.di + c;
    const bf16 *__restrict__ zp = a.u + (size_t)t0 * a.ldu + a.z_off + c;
    bf16 *__restrict__ op = a.out + (size_t)t0 * a.di + c;
    float dv[SCAN_AHEAD], uv[SCAN_AHEAD], zv[SCAN_AHEAD];
#pragma unroll
    for (int q = 0; q < SCAN_AHEAD; q++) {
        int tt = min(q, len - 1);
        dv[q] = FUSED ? b2f(dp[(size_t)tt * a.di]) : lp[(size_t)tt * a.di];
        uv[q] = b2f(up[(size_t)tt * a.di]);
        zv[q] = b2f(zp[(size_t)tt * a.ldu]);
    }
    const size_t nstate = (size_t)a.di * CU_D_STATE, si = (size_t)c * CU_D_STATE;
    float *state = a.desc->ssm + (size_t)a.layer * nstate;
    const float *hsrc = nch == 1 ? state + si : a.ws + 2 * nch * nstate + ch * nstate + si;
    float A2[CU_D_STATE], h[CU_D_STATE];
#pragma unroll
    for (int s = 0; s < CU_D_STATE; s++) {
        A2[s] = a.A[si + s] * LOG2E;
        h[s] = hsrc[s];
    }
    const float D = a.D[c], bias = FUSED ? a.dtb[c] : 0.0f;
    __syncthreads();
    for (int t = 0; t < len; t += SCAN_AHEAD) {
        float dn[SCAN_AHEAD], un[SCAN_AHEAD], zn[SCAN_AHEAD];   /* the next step's inputs, in flight during this one */
#pragma unroll
        for (int q = 0; q < SCAN_AHEAD; q++) {
            int tt = min(t + SCAN_AHEAD + q, len - 1);
            dn[q] = FUSED ? b2f(dp[(size_t)tt * a.di]) : lp[(size_t)tt * a.di];
            un[q] = b2f(up[(size_t)tt * a.di]);
            zn[q] = b2f(zp[(size_t)tt * a.ldu]);
        }
#pragma unroll
        for (int q = 0; q < SCAN_AHEAD; q++) {
            if (t + q >= len)
                break;
            const float d = FUSED ? softplus_f(dv[q] + bias) : dv[q], du = d * uv[q];
            const float4 *bc4 = reinterpret_cast<const float4 *>(BC[t + q]);
            float y4[4] = { 0.0f, 0.0f, 0.0f, 0.0f };
#pragma unroll
            for (int s4 = 0; s4 < CU_D_STATE / 4; s4++) {
                const float4 b = bc4[s4], cc = bc4[CU_D_STATE / 4 + s4];
                const float bb[4] = { b.x, b.y, b.z, b.w }, cv[4] = { cc.x, cc.y, cc.z, cc.w };
#pragma unroll
                for (int j = 0; j < 4; j++) {
                    const int s = 4 * s4 + j;
                    h[s] = ex2_ftz(d * A2[s]) * h[s] + bb[j] * du;
                    y4[j] += cv[j] * h[s];
                }
            }
            const float y = ((y4[0] + y4[1]) + (y4[2] + y4[3])) + D * uv[q];
            if (valid)
                op[(size_t)(t + q) * a.di] = f2b(y * silu_f(zv[q]));
        }
#pragma unroll
        for (int q = 0; q < SCAN_AHEAD; q++) {
            dv[q] = dn[q];
            uv[q] = un[q];
            zv[q] = zn[q];
        }
    }
    if (valid && ch == nch - 1) {
#pragma unroll
        for (int s = 0; s < CU_D_STATE; s++)
            state[si + s] = h[s];
    }
}

/*
 * Chunk length of a prefill scan: a multiple of SCAN_AHEAD in
 * [CU_SCAN_CHUNK, SCAN_CHUNK_MAX] minimizing the positions one SM must run,
 * (blocks per SM, at least the SCAN_SAT it takes to keep an SM's pipes busy)
 * x L, among the lengths whose blocks are all resident at once when any are;
 * ties go to the longer chunk (fewer chunk states to carry).
 */
#define SCAN_SAT 4
static int scan_chunk_len(int n, int di)
{
    static int n_sm = 0, occ = 0, forced = -1;
    if (forced < 0) {
        /* HYMBA_CUDA_SCAN_CHUNK=L forces the chunk length (for measurements) */
        const char *e = getenv("HYMBA_CUDA_SCAN_CHUNK");
        int L = e ? atoi(e) : 0;
        forced = L >= CU_SCAN_CHUNK && L <= SCAN_CHUNK_MAX && L % SCAN_AHEAD == 0 ? L : 0;
    }
    if (forced)
        return forced;
    if (!n_sm) {
        int dev = 0, o1 = 0, o2 = 0, sm = 0;
        if (cudaGetDevice(&dev) != cudaSuccess ||
            cudaDeviceGetAttribute(&sm, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess ||
            cudaOccupancyMaxActiveBlocksPerMultiprocessor(&o1, k_scan_local, SCAN_THREADS, 0) != cudaSuccess ||
            cudaOccupancyMaxActiveBlocksPerMultiprocessor(&o2, k_scan_out<false>, SCAN_THREADS, 0) != cudaSuccess)
            return 32;
        occ = o1 < o2 ? o1 : o2;
        n_sm = sm;
    }
    const long cb = (di + SCAN_THREADS - 1) / SCAN_THREADS;
    int best = SCAN_CHUNK_MAX;
    long best_cost = -1;
    bool best_one_wave = false;
    for (int L = SCAN_CHUNK_MAX; L >= CU_SCAN_CHUNK; L -= SCAN_AHEAD) {
        long nb = cb * ((n + L - 1) / L), per = (nb + n_sm - 1) / n_sm;
        long cost = (per > SCAN_SAT ? per : SCAN_SAT) * (long)(L < n ? L : n);
        bool one_wave = nb <= (long)n_sm * occ;
        if (best_cost < 0 || (one_wave && !best_one_wave) || (one_wave == best_one_wave && cost < best_cost)) {
            best = L;
            best_cost = cost;
            best_one_wave = one_wave;
        }
    }
    return best;
}

cudaError_t cu_ssm_prefill(const cu_ssm_args *a, cudaStream_t s)
{
    const int L = scan_chunk_len(a->n, a->di);
    const int nch = (a->n + L - 1) / L;
    size_t nstate = (size_t)a->di * CU_D_STATE;
    float *dl = a->ws + 3 * (size_t)nch * nstate;
    dim3 grid((a->di + SCAN_THREADS - 1) / SCAN_THREADS, nch);
    cudaError_t e;
    if (nch == 1)
        return cu_launch(k_scan_out<true>, grid, dim3(SCAN_THREADS), 0, s, *a, (const float *)dl, nch, L);
    if ((e = cu_launch(k_scan_local, grid, dim3(SCAN_THREADS), 0, s, *a, dl, nch, L)) != cudaSuccess ||
        (e = cu_launch(k_scan_carry, dim3((unsigned)((nstate + 255) / 256)), dim3(256), 0, s, *a, nch)) !=
            cudaSuccess)
        return e;
    return cu_launch(k_scan_out<false>, grid, dim3(SCAN_THREADS), 0, s, *a, (const float *)dl, nch, L);
}

/* ------------------------------------------------------------- MLP / misc */

__global__ void k_gated_act(const bf16 *gu, bf16 *a, size_t total, int I)
{
    pdl_wait();
    pdl_trigger();
    size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= total)
        return;
    size_t t = idx / I, i = idx % I;
    const bf16 *row = gu + t * 2 * I;
    float g = bfr(silu_f(b2f(row[2 * i])));
    a[idx] = f2b(g * b2f(row[2 * i + 1]));
}

cudaError_t cu_gated_act(const bf16 *gu, bf16 *a, int n, int I, cudaStream_t s)
{
    size_t total = (size_t)n * I;
    return cu_launch(k_gated_act, dim3((unsigned)((total + 255) / 256)), dim3(256), 0, s, gu, a, total, I);
}

__global__ void k_bf16_to_f32(const bf16 *x, float *y, size_t n)
{
    pdl_wait();
    pdl_trigger();
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n)
        y[i] = b2f(x[i]);
}

cudaError_t cu_bf16_to_f32(const bf16 *x, float *y, size_t n, cudaStream_t s)
{
    if (n == 0)
        return cudaSuccess;
    return cu_launch(k_bf16_to_f32, dim3((unsigned)((n + 255) / 256)), dim3(256), 0, s, x, y, n);
}

/* ------------------------------------------------- prefill row kernels */

/*
 * Element-wise passes of the prefill, for many rows: one warp per row, the
 * row held in registers as 16-byte bf16 vectors (NV per lane), so each
 * input is read once and no shared memory or block barriers are needed.
 * Same roundings as the general kernels (only the fp32 sums of squares are
 * added in another order).  Shapes they do not cover go to those kernels.
 */
#define ROWK_WARPS 4   /* rows per block */

/* x = bf16(x + y) (y optional, bf16 rows of stride ldy); hn = RMSNorm(x; w).  H <= 256*NV, H % 8 == 0. */
template <int NV>
__global__ void __launch_bounds__(ROWK_WARPS * 32) k_resnorm_rows(bf16 *x, const bf16 *y, int ldy, const bf16 *w,
                                                                   bf16 *hn, int n, int H, float eps)
{
    pdl_wait();
    pdl_trigger();
    const int row = blockIdx.x * ROWK_WARPS + (threadIdx.x >> 5), lane = threadIdx.x & 31;
    if (row >= n)
        return;
    const int nvec = H / 8;
    uint4 *xr = reinterpret_cast<uint4 *>(x + (size_t)row * H);
    const uint4 *yr = y ? reinterpret_cast<const uint4 *>(y + (size_t)row * ldy) : NULL;
    uint4 xv[NV], yv[NV];
#pragma unroll
    for (int j = 0; j < NV; j++) {   /* every load of the row in flight at once */
        const int v = lane + 32 * j;
        if (v < nvec) {
            xv[j] = xr[v];
            if (yr)
                yv[j] = yr[v];
        }
    }
    float ss = 0.0f;
#pragma unroll
    for (int j = 0; j < NV; j++) {
        const int v = lane + 32 * j;
        if (v < nvec) {
            float f[8];
            unpack8(xv[j], f);
            if (yr) {
                float g[8];
                unpack8(yv[j], g);
#pragma unroll
                for (int e = 0; e < 8; e++)
                    f[e] = bfr(f[e] + g[e]);
                xv[j] = pack8(f);
                xr[v] = xv[j];
            }
#pragma unroll
            for (int e = 0; e < 8; e++)
                ss += f[e] * f[e];
        }
    }
    ss = warp_sum(ss);
    const float r = rsqrtf(ss / (float)H + eps);
    const uint4 *w4 = reinterpret_cast<const uint4 *>(w);
    uint4 *hr = reinterpret_cast<uint4 *>(hn + (size_t)row * H);
#pragma unroll
    for (int j = 0; j < NV; j++) {
        const int v = lane + 32 * j;
        if (v < nvec) {
            float f[8], g[8];
            unpack8(xv[j], f);
            unpack8(w4[v], g);
#pragma unroll
            for (int e = 0; e < 8; e++)
                f[e] = g[e] * bfr(f[e] * r);
            hr[v] = pack8(f);
        }
    }
}

cudaError_t cu_resnorm_pf(bf16 *x, const bf16 *y, int ldy, const bf16 *w, bf16 *hn, int n, int H, float eps,
                          cudaStream_t s)
{
    dim3 grid((n + ROWK_WARPS - 1) / ROWK_WARPS), block(ROWK_WARPS * 32);
    bool vec = H % 8 == 0 && al16(x) && al16(w) && al16(hn) && (!y || (ldy % 8 == 0 && al16(y)));
    if (vec && H <= 256 * 8)
        return cu_launch(k_resnorm_rows<8>, grid, block, 0, s, x, y, ldy, w, hn, n, H, eps);
    cu_lin yl = { NULL, 0, 0, 0, y, ldy };
    return cu_resnorm(x, y ? &yl : NULL, w, hn, n, H, eps, s);
}

#define PREAVG_THREADS 128   /* one block per row of the prefill merge */

/* Mixer merge with attention rows given: m = bf16(bf16(RMS(att; w1) + RMS(ssm; w2)) / 2).
 * One block per row (a row of both inputs is 2*di*2 bytes: too many registers
 * for one warp at di = 3200), NV 16-byte vectors per thread: di <= 1024*NV, di % 8 == 0. */
template <int NV>
__global__ void __launch_bounds__(PREAVG_THREADS) k_preavg_rows(const bf16 *att, const bf16 *ssm, const bf16 *w1,
                                                                const bf16 *w2, float eps, bf16 *m, int di)
{
    __shared__ float red[2][PREAVG_THREADS / 32];
    pdl_wait();
    pdl_trigger();
    const int row = blockIdx.x, lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int nvec = di / 8;
    const uint4 *ar = reinterpret_cast<const uint4 *>(att + (size_t)row * di);
    const uint4 *sr = reinterpret_cast<const uint4 *>(ssm + (size_t)row * di);
    uint4 av[NV], sv[NV];
#pragma unroll
    for (int j = 0; j < NV; j++) {
        const int v = threadIdx.x + PREAVG_THREADS * j;
        if (v < nvec) {
            av[j] = ar[v];
            sv[j] = sr[v];
        }
    }
    float s1 = 0.0f, s2 = 0.0f;
#pragma unroll
    for (int j = 0; j < NV; j++) {
        if (threadIdx.x + PREAVG_THREADS * j < nvec) {
            float f[8], g[8];
            unpack8(av[j], f);
            unpack8(sv[j], g);
#pragma unroll
            for (int e = 0; e < 8; e++) {
                s1 += f[e] * f[e];
                s2 += g[e] * g[e];
            }
        }
    }
    s1 = warp_sum(s1);
    s2 = warp_sum(s2);
    if (lane == 0) {
        red[0][warp] = s1;
        red[1][warp] = s2;
    }
    __syncthreads();
    s1 = s2 = 0.0f;
#pragma unroll
    for (int w = 0; w < PREAVG_THREADS / 32; w++) {
        s1 += red[0][w];
        s2 += red[1][w];
    }
    const float r1 = rsqrtf(s1 / (float)di + eps), r2 = rsqrtf(s2 / (float)di + eps);
    const uint4 *w14 = reinterpret_cast<const uint4 *>(w1), *w24 = reinterpret_cast<const uint4 *>(w2);
    uint4 *mr = reinterpret_cast<uint4 *>(m + (size_t)row * di);
#pragma unroll
    for (int j = 0; j < NV; j++) {
        const int v = threadIdx.x + PREAVG_THREADS * j;
        if (v < nvec) {
            float f[8], g[8], wa[8], wb[8];
            unpack8(av[j], f);
            unpack8(sv[j], g);
            unpack8(w14[v], wa);
            unpack8(w24[v], wb);
#pragma unroll
            for (int e = 0; e < 8; e++) {
                float n1 = bfr(wa[e] * bfr(f[e] * r1));
                float n2 = bfr(wb[e] * bfr(g[e] * r2));
                f[e] = bfr(n1 + n2) * 0.5f;
            }
            mr[v] = pack8(f);
        }
    }
}

cudaError_t cu_preavg_pf(const bf16 *att, const bf16 *ssm_out, const bf16 *w1, const bf16 *w2, float eps, bf16 *m,
                         int n, int nh, int dv, cudaStream_t s)
{
    const int di = nh * dv;
    if (di % 8 == 0 && di <= PREAVG_THREADS * 8 * 4 && al16(att) && al16(ssm_out) && al16(w1) && al16(w2) &&
        al16(m))
        return cu_launch(k_preavg_rows<4>, dim3(n), dim3(PREAVG_THREADS), 0, s, att, ssm_out, w1, w2, eps, m, di);
    return cu_preavg(att, NULL, NULL, 1, nh, dv, ssm_out, w1, w2, eps, m, n, s);
}

/* Gated activation, 8 outputs per thread from two 16-byte loads of interleaved gate/up. */
__global__ void k_gated_act8(const uint4 *__restrict__ gu, uint4 *__restrict__ a, size_t total8, int I8)
{
    pdl_wait();
    pdl_trigger();
    size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= total8)
        return;
    size_t t = idx / I8, i = idx % I8;
    const uint4 *row = gu + t * 2 * I8;
    float f[16], o[8];
    unpack8(row[2 * i], f);
    unpack8(row[2 * i + 1], f + 8);
#pragma unroll
    for (int e = 0; e < 8; e++)
        o[e] = bfr(silu_f(f[2 * e])) * f[2 * e + 1];
    a[idx] = pack8(o);
}

cudaError_t cu_gated_act_pf(const bf16 *gu, bf16 *a, int n, int I, cudaStream_t s)
{
    if (I % 8 != 0 || !al16(gu) || !al16(a))
        return cu_gated_act(gu, a, n, I, s);
    size_t total8 = (size_t)n * I / 8;
    return cu_launch(k_gated_act8, dim3((unsigned)((total8 + 255) / 256)), dim3(256), 0, s,
                     reinterpret_cast<const uint4 *>(gu), reinterpret_cast<uint4 *>(a), total8, I / 8);
}

/* ---------------------------------------------------------------- sampler */

#define SAMPLE_THREADS 1024
#define SAMPLE_LOADS 16   /* argmax: logits each thread loads at once */

/* The largest (value, id) pair over the warp, the lowest id on ties; every lane gets it. */
__device__ __forceinline__ void warp_argmax(float &bv, int &bi)
{
    for (int o = 16; o > 0; o >>= 1) {
        float ov = __shfl_xor_sync(0xffffffffu, bv, o);
        int oi = __shfl_xor_sync(0xffffffffu, bi, o);
        if (ov > bv || (ov == bv && oi < bi)) {
            bv = ov;
            bi = oi;
        }
    }
}

__device__ float block_count_ge(const float *row, int V, float thr, float *red)
{
    float c = 0.0f;
    for (int i = threadIdx.x; i < V; i += blockDim.x)
        c += row[i] >= thr ? 1.0f : 0.0f;
    return block_sum(c, red);
}

__device__ float block_mass_ge(const float *row, int V, float thr, float mx, float invT, float *red)
{
    float m = 0.0f;
    for (int i = threadIdx.x; i < V; i += blockDim.x)
        m += row[i] >= thr ? expf((row[i] - mx) * invT) : 0.0f;
    return block_sum(m, red);
}

__global__ void __launch_bounds__(SAMPLE_THREADS) k_sample(cu_sample_args a)
{
    pdl_wait();
    pdl_trigger();
    __shared__ float red[32];
    __shared__ float sval[32];
    __shared__ int sidx[32];
    __shared__ float scan[SAMPLE_THREADS];
    __shared__ int found;
    const int b = blockIdx.x, V = a.vocab;
    const float *row = a.logits + (size_t)b * a.ld;
    int lane = threadIdx.x & 31, w = threadIdx.x >> 5;

    /* argmax, lowest id on ties; SAMPLE_LOADS loads in flight per thread (one at a time, the
     * row's 32 rounds of L2 latency took 16 us of a 1.7 ms decode step: RESULTS step 101) */
    float bv = -INFINITY, mn = INFINITY;
    int bi = V;
    for (int i0 = threadIdx.x; i0 < V; i0 += SAMPLE_LOADS * blockDim.x) {
        float v[SAMPLE_LOADS];
#pragma unroll
        for (int k = 0; k < SAMPLE_LOADS; k++) {
            const int i = i0 + k * blockDim.x;
            v[k] = i < V ? row[i] : -INFINITY;
        }
#pragma unroll
        for (int k = 0; k < SAMPLE_LOADS; k++) {
            const int i = i0 + k * blockDim.x;
            if (i < V) {
                if (v[k] > bv || (v[k] == bv && i < bi)) {
                    bv = v[k];
                    bi = i;
                }
                mn = fminf(mn, v[k]);
            }
        }
    }
    warp_argmax(bv, bi);
    if (lane == 0) {
        sval[w] = bv;
        sidx[w] = bi;
    }
    __syncthreads();
    if (w == 0) {
        int nw = blockDim.x / 32;
        bv = lane < nw ? sval[lane] : -INFINITY;
        bi = lane < nw ? sidx[lane] : V;
        warp_argmax(bv, bi);
        if (lane == 0) {
            sval[0] = bv;
            sidx[0] = bi;
        }
    }
    __syncthreads();
    const float mx = sval[0];
    const int amax = sidx[0];
    if (a.temperature <= 0.0f || !(mx > -INFINITY)) {
        if (threadIdx.x == 0)
            a.ids[b] = amax;
        return;
    }
    mn = -block_max(-mn, red);
    const float invT = 1.0f / a.temperature;
    float thr = mn;
    if (a.top_k > 0 && a.top_k < V) {
        /* largest threshold keeping at least top_k logits */
        float lo = mn, hi = mx;
        for (int it = 0; it < 40 && lo < hi; it++) {
            float mid = lo + 0.5f * (hi - lo);
            if (mid <= lo || mid >= hi)
                break;
            if (block_count_ge(row, V, mid, red) >= (float)a.top_k)
                lo = mid;
            else
                hi = mid;
        }
        if (block_count_ge(row, V, hi, red) >= (float)a.top_k)
            lo = hi;
        thr = lo;
    }
    if (a.top_p < 1.0f) {
        float Z = block_mass_ge(row, V, thr, mx, invT, red);
        float want = a.top_p * Z;
        float lo = thr, hi = mx;
        for (int it = 0; it < 40 && lo < hi; it++) {
            float mid = lo + 0.5f * (hi - lo);
            if (mid <= lo || mid >= hi)
                break;
            if (block_mass_ge(row, V, mid, mx, invT, red) >= want)
                lo = mid;
            else
                hi = mid;
        }
        if (block_mass_ge(row, V, hi, mx, invT, red) >= want)
            lo = hi;
        thr = lo;
    }
    if (a.min_p > 0.0f)
        thr = fmaxf(thr, mx + a.temperature * logf(a.min_p));
    thr = fminf(thr, mx);

    /* inverse CDF over kept ids in id order: contiguous ranges per thread */
    int per = (V + blockDim.x - 1) / blockDim.x;
    int i0 = threadIdx.x * per, i1 = min(V, i0 + per);
    float loc = 0.0f;
    for (int i = i0; i < i1; i++)
        loc += row[i] >= thr ? expf((row[i] - mx) * invT) : 0.0f;
    scan[threadIdx.x] = loc;
    if (threadIdx.x == 0)
        found = -1;
    __syncthreads();
    for (int off = 1; off < (int)blockDim.x; off <<= 1) {
        float v = threadIdx.x >= (unsigned)off ? scan[threadIdx.x - off] : 0.0f;
        __syncthreads();
        scan[threadIdx.x] += v;
        __syncthreads();
    }
    float Z = scan[blockDim.x - 1];
    float r = a.u[b] * Z;
    float before = scan[threadIdx.x] - loc;
    if (loc > 0.0f && r >= before && r < before + loc) {
        float acc = before;
        int pick = -1;
        for (int i = i0; i < i1; i++) {
            if (row[i] < thr)
                continue;
            pick = i;
            acc += expf((row[i] - mx) * invT);
            if (r < acc)
                break;
        }
        atomicMax(&found, pick);
    }
    __syncthreads();
    if (threadIdx.x == 0)
        a.ids[b] = found >= 0 ? found : amax;
}

cudaError_t cu_sample(const cu_sample_args *a, cudaStream_t s)
{
    return cu_launch(k_sample, dim3(a->B), dim3(SAMPLE_THREADS), 0, s, *a);
}

/* One block per row: copy, then one thread per window entry, the last
 * occurrence of each id applying the penalty (each distinct id once). */
__global__ void k_repeat_penalty(const float *logits, int V, const int32_t *rep, int n, float pen, float *out)
{
    const int b = blockIdx.x;
    const float *lr = logits + (size_t)b * V;
    float *orow = out + (size_t)b * V;
    const int32_t *w = rep + (size_t)b * n;
    for (int i = threadIdx.x; i < V; i += blockDim.x)
        orow[i] = lr[i];
    __syncthreads();
    for (int i = threadIdx.x; i < n; i += blockDim.x) {
        const int32_t t = w[i];
        bool last = t >= 0 && t < V;
        for (int j = i + 1; j < n && last; j++)
            last = w[j] != t;
        if (last)
            orow[t] = lr[t] > 0.0f ? lr[t] / pen : lr[t] * pen;
    }
}

cudaError_t cu_repeat_penalty(const float *logits, int V, int B, const int32_t *rep, int n, float pen, float *out,
                              cudaStream_t s)
{
    if (B < 1 || n < 1 || V < 1)
        return cudaErrorInvalidValue;
    k_repeat_penalty<<<B, 256, 0, s>>>(logits, V, rep, n, pen, out);
    return cudaGetLastError();
}
