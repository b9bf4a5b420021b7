/* cuda-prefill-gemm.cu: times the prefill GEMM shapes of the 1.5B model on cuBLAS: cublasGemmEx (the
 * backend's default call) against every algorithm cublasLt's heuristic offers for the shape, so the gain
 * of choosing an algorithm per shape can be predicted before the backend is changed.
 *
 * Built with the checks (`make bench/cuda-prefill-gemm`; not run by `make check`: it needs a GPU).
 * Run: bench/cuda-prefill-gemm [rows,...]   (default 512,1024,2048)
 * Y[n, N] = X[n, K] W^T, bf16 in and out, fp32 accumulation; weights rotate over 4 copies (one per
 * "layer") so they come from HBM as in a real pass; median of 30 timed calls after 5 warm-ups. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <algorithm>
#include <vector>
#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_bf16.h>

#define CU(call) do { cudaError_t e_ = (call); if (e_ != cudaSuccess) { \
        printf("FAIL %s:%d: %s: %s\n", __FILE__, __LINE__, #call, cudaGetErrorString(e_)); exit(1); } } while (0)
#define CB(call) do { int e_ = (int)(call); if (e_ != 0) { \
        printf("FAIL %s:%d: %s: status %d\n", __FILE__, __LINE__, #call, e_); exit(1); } } while (0)

typedef __nv_bfloat16 bf16;

__global__ void k_fill(bf16 *x, size_t n, uint32_t seed)
{
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n)
        return;
    uint32_t h = (uint32_t)i * 2654435761u ^ seed;
    h ^= h >> 15;
    h *= 2246822519u;
    h ^= h >> 13;
    x[i] = __float2bfloat16(((float)(h & 0xffff) / 65536.0f - 0.5f));
}

static bf16 *dev_rand(size_t n, uint32_t seed)
{
    bf16 *d;
    CU(cudaMalloc(&d, n * 2 + 256));
    k_fill<<<(unsigned)((n + 255) / 256), 256>>>(d, n, seed);
    CU(cudaGetLastError());
    return d;
}

#define NW 4
#define REPS 30

struct shape { const char *name; int N, K; };

static cudaStream_t s;
static cudaEvent_t e0, e1;

template <typename F> static float median_us(F f)
{
    std::vector<float> t;
    for (int i = 0; i < 5; i++)
        f(i);
    CU(cudaStreamSynchronize(s));
    for (int i = 0; i < REPS; i++) {
        float ms;
        CU(cudaEventRecord(e0, s));
        f(i);
        CU(cudaEventRecord(e1, s));
        CU(cudaEventSynchronize(e1));
        CU(cudaEventElapsedTime(&ms, e0, e1));
        t.push_back(ms * 1000.0f);
    }
    std::sort(t.begin(), t.end());
    return t[REPS / 2];
}

int main(int argc, char **argv)
{
    std::vector<int> rows;
    const char *arg = argc > 1 ? argv[1] : "512,1024,2048";
    for (const char *p = arg; *p;) {
        rows.push_back(atoi(p));
        const char *c = strchr(p, ',');
        if (!c)
            break;
        p = c + 1;
    }
    int ndev = 0;
    if (cudaGetDeviceCount(&ndev) != cudaSuccess || ndev == 0) {
        printf("SKIP: no CUDA device\n");
        return 77;
    }
    const shape shapes[] = {
        { "in_proj", 8960, 1600 }, { "in_proj_c", 8000, 1600 }, { "x_proj", 132, 3200 },
        { "dt_proj", 3200, 100 }, { "dt_proj104", 3200, 104 }, { "out_proj", 1600, 3200 },
        { "gate_up", 11008, 1600 }, { "down", 1600, 5504 },
    };
    const int nshape = sizeof(shapes) / sizeof(shapes[0]);
    int maxn = *std::max_element(rows.begin(), rows.end());
    CU(cudaStreamCreate(&s));
    CU(cudaEventCreate(&e0));
    CU(cudaEventCreate(&e1));
    cublasHandle_t blas;
    cublasLtHandle_t lt;
    CB(cublasCreate(&blas));
    CB(cublasLtCreate(&lt));
    size_t wsb = 32u << 20;
    void *ws;
    CU(cudaMalloc(&ws, wsb));
    CB(cublasSetWorkspace(blas, ws, wsb));
    CB(cublasSetStream(blas, s));
    bf16 *X = dev_rand((size_t)maxn * 11008, 7u);
    bf16 *Y = dev_rand((size_t)maxn * 11008, 9u);
    printf("%-11s %5s %6s %5s | %9s %7s | %9s %7s %4s %5s | algos\n", "shape", "N", "K", "rows", "GemmEx us",
           "TFLOP/s", "best Lt us", "TFLOP/s", "idx", "h0 us");
    double tot_def[8] = { 0 }, tot_best[8] = { 0 }, tot_h0[8] = { 0 };
    for (int si = 0; si < nshape; si++) {
        const shape &sh = shapes[si];
        bf16 *W[NW];
        for (int w = 0; w < NW; w++)
            W[w] = dev_rand((size_t)sh.N * sh.K, 100u + (uint32_t)w);
        for (size_t ri = 0; ri < rows.size(); ri++) {
            int n = rows[ri];
            double fl = 2.0 * sh.N * (double)sh.K * n;
            const float one = 1.0f, zero = 0.0f;
            float t_def = median_us([&](int i) {
                CB(cublasGemmEx(blas, CUBLAS_OP_T, CUBLAS_OP_N, sh.N, n, sh.K, &one, W[i % NW], CUDA_R_16BF, sh.K, X,
                                CUDA_R_16BF, sh.K, &zero, Y, CUDA_R_16BF, sh.N, CUBLAS_COMPUTE_32F,
                                CUBLAS_GEMM_DEFAULT));
            });
            cublasLtMatmulDesc_t op;
            cublasLtMatrixLayout_t la, lb, lc;
            CB(cublasLtMatmulDescCreate(&op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
            cublasOperation_t ta = CUBLAS_OP_T, tb = CUBLAS_OP_N;
            CB(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof(ta)));
            CB(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof(tb)));
            CB(cublasLtMatrixLayoutCreate(&la, CUDA_R_16BF, sh.K, sh.N, sh.K));
            CB(cublasLtMatrixLayoutCreate(&lb, CUDA_R_16BF, sh.K, n, sh.K));
            CB(cublasLtMatrixLayoutCreate(&lc, CUDA_R_16BF, sh.N, n, sh.N));
            cublasLtMatmulPreference_t pref;
            CB(cublasLtMatmulPreferenceCreate(&pref));
            CB(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &wsb,
                                                    sizeof(wsb)));
            cublasLtMatmulHeuristicResult_t res[32];
            int nres = 0;
            CB(cublasLtMatmulAlgoGetHeuristic(lt, op, la, lb, lc, lc, pref, 32, res, &nres));
            float best = 1e30f, h0 = 0;
            int bi = -1;
            char algs[512] = "";
            size_t al = 0;
            for (int a = 0; a < nres; a++) {
                if (res[a].state != CUBLAS_STATUS_SUCCESS)
                    continue;
                float t = median_us([&](int i) {
                    CB(cublasLtMatmul(lt, op, &one, W[i % NW], la, X, lb, &zero, Y, lc, Y, lc, &res[a].algo, ws, wsb,
                                      s));
                });
                if (a == 0)
                    h0 = t;
                if (t < best) {
                    best = t;
                    bi = a;
                }
                if (al < sizeof(algs) - 16)
                    al += snprintf(algs + al, sizeof(algs) - al, " %.1f", t);
            }
            printf("%-11s %5d %6d %5d | %9.1f %7.1f | %9.1f %7.1f %4d %5.1f |%s\n", sh.name, sh.N, sh.K, n, t_def,
                   fl / t_def / 1e6, best, fl / best / 1e6, bi, h0, algs);
            if (strcmp(sh.name, "in_proj_c") && strcmp(sh.name, "dt_proj104")) {
                tot_def[ri] += t_def;
                tot_best[ri] += best;
                tot_h0[ri] += h0;
            }
            cublasLtMatmulPreferenceDestroy(pref);
            cublasLtMatrixLayoutDestroy(la);
            cublasLtMatrixLayoutDestroy(lb);
            cublasLtMatrixLayoutDestroy(lc);
            cublasLtMatmulDescDestroy(op);
        }
        for (int w = 0; w < NW; w++)
            CU(cudaFree(W[w]));
    }
    for (size_t ri = 0; ri < rows.size(); ri++)
        printf("owner layer, %d rows: GemmEx %.1f us, Lt heuristic 0 %.1f us, best Lt %.1f us\n", rows[ri],
               tot_def[ri], tot_h0[ri], tot_best[ri]);
    return 0;
}
