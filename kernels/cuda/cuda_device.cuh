/* cuda_device.cuh: small device helpers shared by the CUDA backend's kernels (rounding, warp/block sums, loads). */
#ifndef HYMBA_KERNELS_CUDA_DEVICE_CUH
#define HYMBA_KERNELS_CUDA_DEVICE_CUH

#include "kernels/cuda/cuda_kernels.cuh"
#include <math.h>

namespace cudev {

/* Round to bf16 and back: the reference's bf16 storage points (spec §5). */
__device__ __forceinline__ float bfr(float x) { return __bfloat162float(__float2bfloat16(x)); }
__device__ __forceinline__ float b2f(bf16 x) { return __bfloat162float(x); }
__device__ __forceinline__ bf16 f2b(float x) { return __float2bfloat16(x); }
__device__ __forceinline__ float silu_f(float x) { return x / (1.0f + expf(-x)); }
__device__ __forceinline__ float softplus_f(float v) { return v > 20.0f ? v : log1pf(expf(v)); }

__device__ __forceinline__ float warp_sum(float v)
{
    for (int o = 16; o > 0; o >>= 1)
        v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

__device__ __forceinline__ float warp_max(float v)
{
    for (int o = 16; o > 0; o >>= 1)
        v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

/* Sum over the 16 lanes of one SSM channel (lanes 16k..16k+15 of a warp). */
__device__ __forceinline__ float sum16(float v)
{
    for (int o = 8; o > 0; o >>= 1)
        v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

/* Sum over the first nw warps of the block, which meet at bsync(); each of
 * their threads gets the result.  red: 32 floats of shared memory. */
template <class Barrier>
__device__ __forceinline__ float block_sum_of(float v, float *red, int nw, Barrier bsync)
{
    int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
    v = warp_sum(v);
    bsync();
    if (lane == 0)
        red[w] = v;
    bsync();
    v = lane < nw ? red[lane] : 0.0f;
    return warp_sum(v);
}

/* Sum over the block; every thread gets the result. */
__device__ __forceinline__ float block_sum(float v, float *red)
{
    return block_sum_of(v, red, (blockDim.x + 31) >> 5, [] { __syncthreads(); });
}

__device__ __forceinline__ uint32_t smem_addr(const void *p)
{
    return (uint32_t)__cvta_generic_to_shared(p);
}

/* Asynchronous 16-byte copy global -> shared (both 16-byte aligned), past L1;
 * a thread's copies are complete after its cp_async_wait_all. */
__device__ __forceinline__ void cp_async16(void *dst, const void *src)
{
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(smem_addr(dst)), "l"(src) : "memory");
}

/* Asynchronous 4-byte copy global -> shared (both 4-byte aligned). */
__device__ __forceinline__ void cp_async4(void *dst, const void *src)
{
    asm volatile("cp.async.ca.shared.global [%0], [%1], 4;\n" ::"r"(smem_addr(dst)), "l"(src) : "memory");
}

__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
__device__ __forceinline__ void cp_async_wait_all() { asm volatile("cp.async.wait_group 0;\n" ::: "memory"); }

/* Streaming 16-byte load of weights: read once per step, kept out of L1. */
__device__ __forceinline__ uint4 ldg_stream(const uint4 *p)
{
    uint4 r;
    asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0,%1,%2,%3}, [%4];"
                 : "=r"(r.x), "=r"(r.y), "=r"(r.z), "=r"(r.w) : "l"(p));
    return r;
}

__device__ __forceinline__ void unpack8(uint4 v, float *f)
{
    const __nv_bfloat162 *p = reinterpret_cast<const __nv_bfloat162 *>(&v);
#pragma unroll
    for (int i = 0; i < 4; i++) {
        float2 t = __bfloat1622float2(p[i]);
        f[2 * i] = t.x;
        f[2 * i + 1] = t.y;
    }
}

__device__ __forceinline__ float dot8(uint4 w, const float *x)
{
    float f[8];
    unpack8(w, f);
    float s = 0.0f;
#pragma unroll
    for (int i = 0; i < 8; i++)
        s = fmaf(f[i], x[i], s);
    return s;
}

/* RoPE (spec §5.3): the angle of frequency j at position pos is one fp32
 * product; cos and sin are rounded to bf16. */
__device__ __forceinline__ void rope_cs(const float *inv_freq, int j, int pos, float *c, float *sn)
{
    float ang = inv_freq[j] * (float)pos;
    *c = bfr(cosf(ang));
    *sn = bfr(sinf(ang));
}

/* Rotate-half pair (x0, x1) -> (y0, y1), each product rounded to bf16 as
 * the reference does; the caller rounds the results when it stores them. */
__device__ __forceinline__ void rope_rot(float x0, float x1, float c, float sn, float *y0, float *y1)
{
    *y0 = bfr(x0 * c) - bfr(x1 * sn);
    *y1 = bfr(x1 * c) + bfr(x0 * sn);
}

/* KV cache slot of combined position p. */
__device__ __forceinline__ int kv_slot(const cu_kvgeom &g, int p)
{
    if (g.is_global || p < g.n_meta)
        return p;
    return g.n_meta + (p - g.n_meta) % g.ring;
}

/*
 * The keys a query at positions [p_first, p_last] sees, as a list of
 * "logical" keys: first the visible meta positions [0, nmeta), then
 * positions [lo, p_last].  Global layers: one range [0, p_last].
 */
struct keyset {
    int nmeta, lo, n;
};

__device__ __forceinline__ keyset keys_of(const cu_kvgeom &g, int p_first, int p_last)
{
    keyset k;
    if (g.is_global) {
        k.nmeta = 0;
        k.lo = 0;
    } else {
        k.nmeta = min(g.n_meta, p_last + 1);
        k.lo = max(g.n_meta, p_first - g.window);
    }
    k.n = k.nmeta + max(0, p_last - k.lo + 1);
    return k;
}

__device__ __forceinline__ int key_pos(const keyset &k, int i)
{
    return i < k.nmeta ? i : k.lo + (i - k.nmeta);
}

/* ldmatrix: four 8x8 bf16 tiles from shared memory (lanes 8i..8i+7 address tile i's rows). */
__device__ __forceinline__ void ldsm_x4(uint32_t r[4], const bf16 *p)
{
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(smem_addr(p)));
}

/* The same, each tile transposed. */
__device__ __forceinline__ void ldsm_x4_t(uint32_t r[4], const bf16 *p)
{
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(smem_addr(p)));
}

/* c += a b: a 16x16 (row), b 16x8 (col), bf16; c fp32 */
__device__ __forceinline__ void mma16816(float c[4], const uint32_t a[4], uint32_t b0, uint32_t b1)
{
    asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
                 "{%0,%1,%2,%3};\n"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

/* Two floats as the bf16 pair of an mma operand register (lo in the low half). */
__device__ __forceinline__ uint32_t pack_bf16(float lo, float hi)
{
    __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
    return *reinterpret_cast<uint32_t *>(&v);
}

}  // namespace cudev

#endif
