/* cuda-stream.cu: how fast one persistent grid (one 512-thread block per SM) streams a bf16 matrix
 * through per-row dot products: direct 16-byte loads into registers (the decode kernel's GEMV) against
 * a per-warp ring in shared memory filled by bulk asynchronous copies (TMA) or by 16-byte cp.async.
 *
 * Built with the checks (`make bench/cuda-stream`; not run by `make check`: it needs a GPU).
 * Run: bench/cuda-stream
 * The matrix is 1 GiB (steady state) or 28 MiB (one in_proj of the 1.5B model, launch included), rows
 * of K = 1600 / 3200 / 5504 bf16; each warp owns rows w, w + warps, ...; best of 8 launches. */
#include <stdio.h>
#include <stdint.h>
#include <stdlib.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include "kernels/cuda/cuda_device.cuh"

using cudev::smem_addr;
using cudev::warp_sum;

#define CU(call) do { cudaError_t e_ = (call); if (e_ != cudaSuccess) { \
        printf("FAIL %s:%d: %s: %s\n", __FILE__, __LINE__, #call, cudaGetErrorString(e_)); exit(1); } } while (0)

#define THREADS 512
#define WARPS (THREADS / 32)
#define SLOTS_MAX 4

enum { DIRECT = 0, TMA = 1, CPASYNC = 2 };

__device__ __forceinline__ float dot8(uint4 w, uint4 x)
{
    const __nv_bfloat162 *a = reinterpret_cast<const __nv_bfloat162 *>(&w);
    const __nv_bfloat162 *b = reinterpret_cast<const __nv_bfloat162 *>(&x);
    float s = 0.0f;
    for (int i = 0; i < 4; i++) {
        float2 p = __bfloat1622float2(a[i]), q = __bfloat1622float2(b[i]);
        s += p.x * q.x + p.y * q.y;
    }
    return s;
}

/* x = all ones (bf16 1.0 pairs) in shared memory: kv 16-byte vectors. */
__device__ void fill_x(uint4 *xs, int kv)
{
    for (int i = threadIdx.x; i < kv; i += THREADS)
        xs[i] = make_uint4(0x3f803f80u, 0x3f803f80u, 0x3f803f80u, 0x3f803f80u);
    __syncthreads();
}

/* The decode kernel's way: 8 loads per lane in flight, straight into registers. */
__global__ void __launch_bounds__(THREADS, 1) k_direct(const uint4 *W, int N, int kv, float *out)
{
    extern __shared__ uint4 xs[];   /* [kv] */
    fill_x(xs, kv);
    const int lane = threadIdx.x & 31, nw = gridDim.x * WARPS;
    for (int n = blockIdx.x * WARPS + (threadIdx.x >> 5); n < N; n += nw) {
        const uint4 *wr = W + (size_t)n * kv;
        float acc = 0.0f;
        for (int v = lane; v < kv; v += 256) {
            uint4 w[8];
#pragma unroll
            for (int q = 0; q < 8; q++)
                if (v + 32 * q < kv)
                    asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0,%1,%2,%3}, [%4];"
                                 : "=r"(w[q].x), "=r"(w[q].y), "=r"(w[q].z), "=r"(w[q].w) : "l"(wr + v + 32 * q));
#pragma unroll
            for (int q = 0; q < 8; q++)
                if (v + 32 * q < kv)
                    acc += dot8(w[q], xs[v + 32 * q]);
        }
        acc = warp_sum(acc);
        if (lane == 0)
            out[n] = acc;
    }
}

/* Row k of this warp into ring slot k % slots: TMA (lane 0, one bulk copy) or cp.async (every lane). */
__device__ void ring_issue(const uint4 *W, int kv, int row, uint4 *slot, uint64_t *bar, int mode, uint64_t pol)
{
    const int lane = threadIdx.x & 31;
    const unsigned bytes = (unsigned)kv * 16u;
    const char *src = reinterpret_cast<const char *>(W + (size_t)row * kv);
    if (mode == CPASYNC) {
        for (unsigned o = 16u * lane; o < bytes; o += 512u)
            asm volatile("cp.async.cg.shared.global.L2::cache_hint [%0], [%1], 16, %2;"
                         ::"r"(smem_addr(slot) + o), "l"(src + o), "l"(pol) : "memory");
        asm volatile("cp.async.mbarrier.arrive.noinc.shared::cta.b64 [%0];" ::"r"(smem_addr(bar)) : "memory");
    } else if (lane == 0) {
        asm volatile("fence.proxy.async.shared::cta;" ::: "memory");
        asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" ::"r"(smem_addr(bar)), "r"(bytes) : "memory");
        asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes.L2::cache_hint"
                     " [%0], [%1], %2, [%3], %4;" ::"r"(smem_addr(slot)), "l"(src), "r"(bytes), "r"(smem_addr(bar)), "l"(pol)
                     : "memory");
    }
}

/* Each warp keeps `slots` of its rows in flight in its own ring; evict_first: the L2 policy of the copies. */
__global__ void __launch_bounds__(THREADS, 1) k_ring(const uint4 *W, int N, int kv, float *out, int slots, int mode,
                                                      int evict_first)
{
    extern __shared__ uint4 sm[];
    uint4 *xs = sm;                                                   /* [kv] */
    uint64_t *bars = reinterpret_cast<uint64_t *>(sm + kv);            /* [WARPS][SLOTS_MAX] */
    uint4 *ring = reinterpret_cast<uint4 *>(bars + WARPS * SLOTS_MAX); /* [WARPS][slots][kv] */
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int g = blockIdx.x * WARPS + warp, nw = gridDim.x * WARPS;
    uint64_t *mb = bars + warp * SLOTS_MAX;
    uint4 *rg = ring + (size_t)warp * slots * kv;
    if (lane == 0) {
        for (int k = 0; k < slots; k++)
            asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;" ::"r"(smem_addr(mb + k)), "r"(mode == CPASYNC ? 32 : 1));
        asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
    }
    fill_x(xs, kv);
    uint64_t pol;
    if (evict_first)
        asm volatile("createpolicy.fractional.L2::evict_first.b64 %0, 1.0;" : "=l"(pol));
    else
        asm volatile("createpolicy.fractional.L2::evict_normal.b64 %0, 1.0;" : "=l"(pol));
    const int mine = g < N ? (N - g + nw - 1) / nw : 0;
    int issued = 0;
    for (; issued < mine && issued < slots; issued++)
        ring_issue(W, kv, g + issued * nw, rg + (size_t)(issued % slots) * kv, mb + issued % slots, mode, pol);
    for (int k = 0; k < mine; k++) {
        const uint32_t bar = smem_addr(mb + k % slots), parity = (uint32_t)(k / slots) & 1u;
        uint32_t done = 0;
        do {
            asm volatile("{ .reg .pred p; mbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2; selp.u32 %0, 1, 0, p; }"
                         : "=r"(done) : "r"(bar), "r"(parity) : "memory");
        } while (!done);
        const uint4 *w = rg + (size_t)(k % slots) * kv;
        float acc = 0.0f;
#pragma unroll 4
        for (int v = lane; v < kv; v += 32)
            acc += dot8(w[v], xs[v]);
        __syncwarp();
        if (issued < mine) {
            ring_issue(W, kv, g + issued * nw, rg + (size_t)(issued % slots) * kv, mb + issued % slots, mode, pol);
            issued++;
        }
        acc = warp_sum(acc);
        if (lane == 0)
            out[g + k * nw] = acc;
    }
}

int main(void)
{
    int dev = 0, nsm = 0;
    CU(cudaGetDevice(&dev));
    CU(cudaDeviceGetAttribute(&nsm, cudaDevAttrMultiProcessorCount, dev));
    const size_t big = (size_t)1 << 30;
    uint4 *W;
    float *out;
    CU(cudaMalloc(&W, big));
    CU(cudaMalloc(&out, (size_t)1 << 26));
    CU(cudaMemset(W, 0, big));
    cudaEvent_t e0, e1;
    CU(cudaEventCreate(&e0));
    CU(cudaEventCreate(&e1));
    CU(cudaFuncSetAttribute(k_direct, cudaFuncAttributeMaxDynamicSharedMemorySize, 200000));
    CU(cudaFuncSetAttribute(k_ring, cudaFuncAttributeMaxDynamicSharedMemorySize, 227 * 1024));
    static const int Ks[3] = { 1600, 3200, 5504 };
    static const size_t sizes[2] = { (size_t)1 << 30, (size_t)28 << 20 };
    static const char *mname[3] = { "direct", "tma", "cp.async" };
    printf("%10s %6s %-9s %5s %4s %10s %10s\n", "MB", "K", "mode", "slots", "evf", "us", "GB/s");
    for (int si = 0; si < 2; si++)
        for (int ki = 0; ki < 3; ki++) {
            const int K = Ks[ki], kv = K / 8, N = (int)(sizes[si] / ((size_t)K * 2));
            const double mb = (double)N * K * 2 / 1e6;
            for (int mode = DIRECT; mode <= CPASYNC; mode++)
                for (int slots = mode == DIRECT ? 0 : 2; slots <= (mode == DIRECT ? 0 : SLOTS_MAX); slots++)
                    for (int evf = 0; evf <= (mode == DIRECT ? 0 : 1); evf++) {
                        size_t sh = (size_t)kv * 16 + WARPS * SLOTS_MAX * 8 + (size_t)WARPS * slots * kv * 16;
                        if (mode != DIRECT && sh > 227 * 1024)
                            continue;
                        float best = 1e30f;
                        for (int rep = 0; rep < 8; rep++) {
                            CU(cudaEventRecord(e0));
                            if (mode == DIRECT)
                                k_direct<<<nsm, THREADS, kv * 16>>>(W, N, kv, out);
                            else
                                k_ring<<<nsm, THREADS, sh>>>(W, N, kv, out, slots, mode, evf);
                            CU(cudaGetLastError());
                            CU(cudaEventRecord(e1));
                            CU(cudaEventSynchronize(e1));
                            float ms;
                            CU(cudaEventElapsedTime(&ms, e0, e1));
                            best = ms < best ? ms : best;
                        }
                        printf("%10.1f %6d %-9s %5d %4d %10.2f %10.1f\n", mb, K, mname[mode], slots, evf, best * 1e3,
                               mb / 1e3 / (best * 1e-3));
                    }
        }
    CU(cudaFree(W));
    CU(cudaFree(out));
    return 0;
}
