/* cuda-prefill-kernels.cu: times the CUDA backend's prefill element-wise and scan kernels at the 1.5B shapes
 * (cudaEvent medians) and prints a hash of each output, so two builds can be compared bit for bit.
 *
 * Built with the checks (`make bench/cuda-prefill-kernels`; not run by `make check`: it needs a GPU).
 * Run: bench/cuda-prefill-kernels [rows]   (default 1024, the backend's prefill chunk) */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>
#include <algorithm>
#include <vector>
#include "kernels/cuda/cuda_kernels.cuh"

#define CU(call) do { cudaError_t e_ = (call); if (e_ != cudaSuccess) { \
        printf("FAIL %s:%d: %s: %s\n", __FILE__, __LINE__, #call, cudaGetErrorString(e_)); exit(1); } } while (0)

static uint64_t rs = 0x243f6a8885a308d3ull;
static double ur(void)
{
    rs ^= rs << 13;
    rs ^= rs >> 7;
    rs ^= rs << 17;
    return (double)(rs >> 11) / 9007199254740992.0;
}

static bf16 *dev_bf(size_t n, float lo, float hi)
{
    std::vector<bf16> h(n);
    for (auto &v : h)
        v = __float2bfloat16((float)(lo + (hi - lo) * ur()));
    bf16 *d;
    CU(cudaMalloc(&d, n * 2 + 256));
    CU(cudaMemcpy(d, h.data(), n * 2, cudaMemcpyHostToDevice));
    return d;
}

static float *dev_f(const std::vector<float> &h)
{
    float *d;
    CU(cudaMalloc(&d, h.size() * 4 + 256));
    CU(cudaMemcpy(d, h.data(), h.size() * 4, cudaMemcpyHostToDevice));
    return d;
}

/* FNV-1a over the bytes of a device buffer */
static uint64_t hash(const void *d, size_t bytes)
{
    std::vector<unsigned char> h(bytes);
    CU(cudaMemcpy(h.data(), d, bytes, cudaMemcpyDeviceToHost));
    uint64_t x = 1469598103934665603ull;
    for (unsigned char c : h)
        x = (x ^ c) * 1099511628211ull;
    return x;
}

/* elements of two bf16 device buffers that differ, and the largest difference in units of the last place */
static void cmp_bf(const char *what, const bf16 *a, const bf16 *b, size_t n)
{
    std::vector<uint16_t> x(n), y(n);
    CU(cudaMemcpy(x.data(), a, n * 2, cudaMemcpyDeviceToHost));
    CU(cudaMemcpy(y.data(), b, n * 2, cudaMemcpyDeviceToHost));
    size_t diff = 0;
    int mx = 0;
    for (size_t i = 0; i < n; i++)
        if (x[i] != y[i]) {
            diff++;
            mx = std::max(mx, abs((int)x[i] - (int)y[i]));
        }
    printf("  %-34s %zu of %zu values differ (max %d ulp)\n", what, diff, n, mx);
}

static cudaEvent_t e0, e1;

template <typename F>
static float time_us(F f, int reps = 20)
{
    for (int i = 0; i < 3; i++)
        f();
    CU(cudaDeviceSynchronize());
    std::vector<float> t;
    for (int i = 0; i < reps; i++) {
        CU(cudaEventRecord(e0));
        f();
        CU(cudaEventRecord(e1));
        CU(cudaEventSynchronize(e1));
        float ms;
        CU(cudaEventElapsedTime(&ms, e0, e1));
        t.push_back(ms * 1000.0f);
    }
    std::sort(t.begin(), t.end());
    return t[t.size() / 2];
}

int main(int argc, char **argv)
{
    const int n = argc > 1 ? atoi(argv[1]) : 1024;
    const int H = 1600, Di = 3200, I = 5504, R = 100, N = CU_D_STATE, P = R + 2 * N, dc = 4, L = 32;
    const int nh = 25, nkv = 5, dq = 64, dv = 128, rows = 8960;
    const int q_cols = nh * dq, k_off = q_cols, v_off = k_off + nkv * dq, xs_off = v_off + nkv * dv, z_off = xs_off + Di;
    CU(cudaEventCreate(&e0));
    CU(cudaEventCreate(&e1));
    cudaDeviceProp prop;
    CU(cudaGetDeviceProperties(&prop, 0));
    printf("prefill kernels on %s, %d rows (1.5B shapes)\n", prop.name, n);

    /* inputs */
    bf16 *u = dev_bf((size_t)n * rows, -2.0f, 2.0f), *delta = dev_bf((size_t)n * Di, -3.0f, 1.0f);
    bf16 *conv_w = dev_bf((size_t)Di * dc, -0.5f, 0.5f), *x = dev_bf((size_t)n * H, -2.0f, 2.0f);
    bf16 *y = dev_bf((size_t)n * H, -1.0f, 1.0f), *wn = dev_bf(H, 0.5f, 1.5f), *att = dev_bf((size_t)n * Di, -1.f, 1.f);
    bf16 *w1 = dev_bf(Di, 0.5f, 1.5f), *w2 = dev_bf(Di, 0.5f, 1.5f), *gu = dev_bf((size_t)n * 2 * I, -3.f, 3.f);
    bf16 *xp = dev_bf((size_t)n * P, -1.0f, 1.0f), *wdt = dev_bf(R, 0.5f, 1.5f), *wB = dev_bf(N, 0.5f, 1.5f);
    bf16 *wC = dev_bf(N, 0.5f, 1.5f);
    std::vector<float> hb(Di), hdtb(Di), hA((size_t)Di * N), hD(Di), hst((size_t)L * Di * N, 0.0f),
        hconv((size_t)L * dc * Di, 0.0f), inv(dq / 2);
    for (int c = 0; c < Di; c++) {
        hb[c] = (float)(ur() - 0.5);
        hdtb[c] = (float)log(expm1(0.001 + 0.1 * ur()));
        hD[c] = 1.0f;
        for (int s = 0; s < N; s++)
            hA[(size_t)c * N + s] = -(float)(s + 1) * (float)exp(0.1 * (ur() - 0.5));
    }
    for (auto &v : hst)
        v = (float)(ur() - 0.5);
    for (auto &v : hconv)
        v = (float)(ur() * 2 - 1);
    for (int j = 0; j < dq / 2; j++)
        inv[j] = (float)pow(10000.0, -2.0 * j / dq);
    float *cb = dev_f(hb), *dtb = dev_f(hdtb), *A = dev_f(hA), *D = dev_f(hD), *ssm = dev_f(hst), *conv = dev_f(hconv);
    float *dinv = dev_f(inv), *dbc, *ws;
    CU(cudaMalloc(&dbc, (size_t)n * P * 4));
    CU(cudaMalloc(&ws, cu_ssm_ws_floats(n, Di) * 4));
    bf16 *uc, *sout, *hn, *hn2, *m, *m2, *act, *act2, *dt, *K, *V;
    CU(cudaMalloc(&uc, (size_t)n * Di * 2));
    CU(cudaMalloc(&sout, (size_t)n * Di * 2));
    CU(cudaMalloc(&hn, (size_t)n * H * 2));
    CU(cudaMalloc(&hn2, (size_t)n * H * 2));
    CU(cudaMalloc(&m, (size_t)n * Di * 2));
    CU(cudaMalloc(&m2, (size_t)n * Di * 2));
    CU(cudaMalloc(&act, (size_t)n * I * 2));
    CU(cudaMalloc(&act2, (size_t)n * I * 2));
    CU(cudaMalloc(&dt, (size_t)n * R * 2));
    CU(cudaMalloc(&K, (size_t)(n + 2048) * nkv * dq * 2));
    CU(cudaMalloc(&V, (size_t)(n + 2048) * nkv * dv * 2));
    std::vector<bf16 *> kvt(2 * L, NULL);
    kvt[0] = K;
    kvt[1] = V;
    bf16 **dkv;
    CU(cudaMalloc(&dkv, kvt.size() * sizeof(bf16 *)));
    CU(cudaMemcpy(dkv, kvt.data(), kvt.size() * sizeof(bf16 *), cudaMemcpyHostToDevice));
    cu_desc hd = { 128, 0, conv, ssm, dkv };
    cu_desc *desc;
    CU(cudaMalloc(&desc, sizeof(cu_desc)));
    CU(cudaMemcpy(desc, &hd, sizeof(cu_desc), cudaMemcpyHostToDevice));
    cu_kvgeom g = { 0, 128, 1024 + 1024, 1024 };

    /* first run of each on fresh inputs: hashes */
    cu_lin xl = { NULL, 0, 0, 0, xp, P };
    CU(cu_dbc_norm(&xl, R, N, wdt, wB, wC, 1, 1e-6f, dbc, dt, n, 0));
    CU(cu_conv_prefill(u, rows, xs_off, n, desc, 0, conv_w, cb, Di, dc, uc, 0));
    cu_ssm_args sa = { dbc, R, NULL, dtb, A, D, uc, u, rows, z_off, delta, desc, 0, Di, n, sout, ws };
    CU(cu_ssm_prefill(&sa, 0));
    CU(cudaDeviceSynchronize());
    printf("hash conv out %016llx state %016llx\n", (unsigned long long)hash(uc, (size_t)n * Di * 2),
           (unsigned long long)hash(conv, (size_t)dc * Di * 4));
    printf("hash scan out %016llx state %016llx\n", (unsigned long long)hash(sout, (size_t)n * Di * 2),
           (unsigned long long)hash(ssm, (size_t)Di * N * 4));
    /* a single-chunk scan (n <= chunk) of layer 1's state */
    cu_ssm_args s1 = sa;
    s1.n = n < 20 ? n : 20;
    s1.layer = 1;
    CU(cu_ssm_prefill(&s1, 0));
    CU(cudaDeviceSynchronize());
    printf("hash scan20 out %016llx state %016llx\n", (unsigned long long)hash(sout, (size_t)s1.n * Di * 2),
           (unsigned long long)hash(ssm + (size_t)Di * N, (size_t)Di * N * 4));
    cu_rope_args ra = { u, rows, n, desc, 0, 0, 1, 1, nh, nkv, dq, dv, k_off, v_off, dinv, g };
    /* RoPE rotates q in place: hash after one call on a copy-free run */
    CU(cu_rope_kv(&ra, 0));
    CU(cudaDeviceSynchronize());
    printf("hash rope q %016llx K %016llx\n", (unsigned long long)hash(u, (size_t)n * rows * 2),
           (unsigned long long)hash(K, (size_t)(n + 128) * nkv * dq * 2));

    cu_lin yl = { NULL, 0, 0, 0, y, H };
    CU(cu_preavg(att, NULL, NULL, 1, nh, dv, sout, w1, w2, 1e-6f, m, n, 0));
    CU(cu_gated_act(gu, act, n, I, 0));
    CU(cudaDeviceSynchronize());
    printf("hash preavg %016llx gated %016llx\n", (unsigned long long)hash(m, (size_t)n * Di * 2),
           (unsigned long long)hash(act, (size_t)n * I * 2));
    CU(cu_preavg_pf(att, sout, w1, w2, 1e-6f, m2, n, nh, dv, 0));
    CU(cu_gated_act_pf(gu, act2, n, I, 0));
    bf16 *x2;
    CU(cudaMalloc(&x2, (size_t)n * H * 2));
    CU(cudaMemcpy(x2, x, (size_t)n * H * 2, cudaMemcpyDeviceToDevice));
    CU(cu_resnorm(x, &yl, wn, hn, n, H, 1e-6f, 0));
    CU(cu_resnorm_pf(x2, y, H, wn, hn2, n, H, 1e-6f, 0));
    CU(cudaDeviceSynchronize());
    cmp_bf("preavg_pf vs preavg", m2, m, (size_t)n * Di);
    cmp_bf("gated_act_pf vs gated_act", act2, act, (size_t)n * I);
    cmp_bf("resnorm_pf vs resnorm: x", x2, x, (size_t)n * H);
    cmp_bf("resnorm_pf vs resnorm: hn", hn2, hn, (size_t)n * H);

    /* timings (us, median of 20 after 3 warm-ups); the scan and conv update their states each call */
    printf("%-28s %9s  %s\n", "kernel", "us", "ideal us at 3.0 TB/s (bytes read once + written once)");
    auto row = [&](const char *k, float us, double bytes) {
        printf("%-28s %9.1f  %6.1f\n", k, us, bytes / 3.0e12 * 1e6);
    };
    const double nd = n;
    row("conv_prefill", time_us([&] { CU(cu_conv_prefill(u, rows, xs_off, n, desc, 0, conv_w, cb, Di, dc, uc, 0)); }),
        nd * Di * 4);
    row("dbc_norm", time_us([&] { CU(cu_dbc_norm(&xl, R, N, wdt, wB, wC, 1, 1e-6f, dbc, dt, n, 0)); }),
        nd * P * 2 + nd * P * 4 + nd * R * 2);
    row("ssm_prefill (all phases)", time_us([&] { CU(cu_ssm_prefill(&sa, 0)); }), nd * Di * 2 * 4);
    row("rope_kv", time_us([&] { CU(cu_rope_kv(&ra, 0)); }), nd * (q_cols * 4 + nkv * dq * 4 + nkv * dv * 4));
    row("preavg (att)", time_us([&] { CU(cu_preavg(att, NULL, NULL, 1, nh, dv, sout, w1, w2, 1e-6f, m, n, 0)); }),
        nd * Di * 6);
    row("resnorm (+y)", time_us([&] { CU(cu_resnorm(x, &yl, wn, hn, n, H, 1e-6f, 0)); }), nd * H * 8);
    row("gated_act", time_us([&] { CU(cu_gated_act(gu, act, n, I, 0)); }), nd * I * 6);
    row("rope_kv_pf", time_us([&] { CU(cu_rope_kv_pf(&ra, 0)); }), nd * (q_cols * 4 + nkv * dq * 4 + nkv * dv * 4));
    row("preavg_pf", time_us([&] { CU(cu_preavg_pf(att, sout, w1, w2, 1e-6f, m2, n, nh, dv, 0)); }), nd * Di * 6);
    row("resnorm_pf (+y)", time_us([&] { CU(cu_resnorm_pf(x2, y, H, wn, hn2, n, H, 1e-6f, 0)); }), nd * H * 8);
    row("gated_act_pf", time_us([&] { CU(cu_gated_act_pf(gu, act2, n, I, 0)); }), nd * I * 6);
    printf("done\n");
    return 0;
}
