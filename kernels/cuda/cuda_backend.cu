/* cuda_backend.cu: the CUDA backend table: device setup, weight upload, conversation states and their images. */
#include "kernels/cuda/cuda_internal.cuh"
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------ errors */

static bool cu_error_is_sticky(cudaError_t e)
{
    switch (e) {
    case cudaErrorIllegalAddress:
    case cudaErrorLaunchFailure:
    case cudaErrorHardwareStackError:
    case cudaErrorIllegalInstruction:
    case cudaErrorMisalignedAddress:
    case cudaErrorInvalidAddressSpace:
    case cudaErrorInvalidPc:
    case cudaErrorECCUncorrectable:
    case cudaErrorAssert:
    case cudaErrorLaunchTimeout:
    case cudaErrorUnknown:
    case cudaErrorDevicesUnavailable:
        return true;
    default:
        return false;
    }
}

int cu_fail(cu_ctx *c, hy_err *err, cudaError_t e, const char *what, const char *file, int line)
{
    const char *base = strrchr(file, '/') ? strrchr(file, '/') + 1 : file;
    if (e == cudaErrorMemoryAllocation) {
        size_t fr = 0, tot = 0;
        cudaGetLastError();
        cudaMemGetInfo(&fr, &tot);
        return hy_err_set(err, -ENOMEM, "cuda: out of GPU memory in %s (%s:%d); %zu of %zu MiB free",
                          what, base, line, fr >> 20, tot >> 20);
    }
    if (c && cu_error_is_sticky(e)) {
        c->failed = true;
        snprintf(c->fail_msg, sizeof(c->fail_msg), "%s: %s in %s (%s:%d)", cudaGetErrorName(e),
                 cudaGetErrorString(e), what, base, line);
        return hy_err_set(err, -EIO, "cuda: the GPU context failed: %s", c->fail_msg);
    }
    cudaGetLastError();   /* clear a non-sticky error */
    return hy_err_set(err, -EIO, "cuda: %s failed: %s (%s) at %s:%d", what, cudaGetErrorString(e),
                      cudaGetErrorName(e), base, line);
}

int cu_fail_blas(cu_ctx *c, hy_err *err, cublasStatus_t e, const char *what, const char *file, int line)
{
    const char *base = strrchr(file, '/') ? strrchr(file, '/') + 1 : file;
    (void)c;
    return hy_err_set(err, e == CUBLAS_STATUS_ALLOC_FAILED ? -ENOMEM : -EIO, "cublas: %s failed: %s at %s:%d",
                      what, cublasGetStatusString(e), base, line);
}

int cu_check_ctx(cu_ctx *c, hy_err *err)
{
    if (c->failed)
        return hy_err_set(err, -EIO, "cuda: the GPU context failed earlier (%s); reload the model",
                          c->fail_msg);
    cudaError_t e = cudaSetDevice(c->dev);
    if (e != cudaSuccess)
        return cu_fail(c, err, e, "cudaSetDevice", __FILE__, __LINE__);
    return 0;
}

int cu_malloc(cu_ctx *c, void **p, size_t bytes, const char *what, hy_err *err)
{
    *p = NULL;
    if (bytes == 0)
        return 0;
    cudaError_t e = cudaMalloc(p, bytes);
    if (e == cudaErrorMemoryAllocation) {
        size_t fr = 0, tot = 0;
        cudaGetLastError();
        cudaMemGetInfo(&fr, &tot);
        *p = NULL;
        return hy_err_set(err, -ENOMEM, "cuda: out of GPU memory allocating %.1f MiB for %s "
                          "(%zu of %zu MiB free on the device)", bytes / 1048576.0, what, fr >> 20, tot >> 20);
    }
    if (e != cudaSuccess) {
        *p = NULL;
        return cu_fail(c, err, e, what, __FILE__, __LINE__);
    }
    c->bytes += bytes;
    return 0;
}

void cu_free(cu_ctx *c, void *p, size_t bytes)
{
    if (!p)
        return;
    cudaFree(p);
    c->bytes -= bytes;
}

/* ------------------------------------------------------------ context */

/* A measurement knob: environment variable name set to "0". */
static bool env_off(const char *name)
{
    const char *v = getenv(name);
    return v && strcmp(v, "0") == 0;
}

static int cuda_init(const hy_backend_opts *opts, void **out, hy_err *err)
{
    int n = 0;
    *out = NULL;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess) {
        cudaGetLastError();
        return hy_err_set(err, -ENODEV, "no CUDA device: cudaGetDeviceCount: %s (%s)", cudaGetErrorString(e),
                          cudaGetErrorName(e));
    }
    if (n <= 0)
        return hy_err_set(err, -ENODEV, "no CUDA device: the driver reports 0 devices");
    int dev = opts ? opts->device : 0;
    if (dev < 0 || dev >= n)
        return hy_err_set(err, -ENODEV, "CUDA device %d does not exist (%d device(s))", dev, n);
    cudaDeviceProp prop;
    if ((e = cudaGetDeviceProperties(&prop, dev)) != cudaSuccess)
        return hy_err_set(err, -ENODEV, "cudaGetDeviceProperties(%d): %s", dev, cudaGetErrorString(e));
    if (prop.major < 9)
        return hy_err_set(err, -ENODEV, "CUDA device %d (%s) is sm_%d%d; this build has code for sm_90 "
                          "(Hopper) and later only", dev, prop.name, prop.major, prop.minor);
    cu_ctx *ctx = (cu_ctx *)calloc(1, sizeof(*ctx));
    if (!ctx)
        return hy_err_set(err, -ENOMEM, "out of memory");
    ctx->dev = dev;
    ctx->n_sm = prop.multiProcessorCount;
    ctx->verbose = opts && opts->verbose;
    /* HYMBA_CUDA_PDL=0 turns programmatic dependent launch off (for measurements) */
    ctx->pdl = !env_off("HYMBA_CUDA_PDL");
    cu_pdl = ctx->pdl;
    /* HYMBA_CUDA_MEGA=0: the batch-1 decode step as separate kernels, not one persistent kernel */
    cu_mega_wanted = !env_off("HYMBA_CUDA_MEGA");
    /* HYMBA_CUDA_MEGA_SPLIT=0: the persistent kernel runs the attention and the SSM branch on every block */
    cu_mega_split = !env_off("HYMBA_CUDA_MEGA_SPLIT");
    /* HYMBA_CUDA_MEGA_PF=0: the persistent kernel's prefetch warp asks L2 for nothing */
    cu_mega_pf = !env_off("HYMBA_CUDA_MEGA_PF");
    /* HYMBA_CUDA_PF_OVERLAP=0: prefill attention and SSM branches one after the other (for measurements) */
    ctx->pf_overlap = !env_off("HYMBA_CUDA_PF_OVERLAP");
    /* HYMBA_CUDA_GEMV_VECS: least 16-byte vectors per lane in a split-K slice (tuning knob) */
    if (getenv("HYMBA_CUDA_GEMV_VECS") && atoi(getenv("HYMBA_CUDA_GEMV_VECS")) > 0)
        cu_gemv_lane_vecs = atoi(getenv("HYMBA_CUDA_GEMV_VECS"));
    snprintf(ctx->dev_name, sizeof(ctx->dev_name), "%s", prop.name);
    int r;
#define INIT_CK(call) do { cudaError_t e_ = (call); if (e_ != cudaSuccess) { \
        r = cu_fail(ctx, err, e_, #call, __FILE__, __LINE__); goto fail; } } while (0)
    INIT_CK(cudaSetDevice(dev));
    INIT_CK(cudaStreamCreateWithFlags(&ctx->s0, cudaStreamNonBlocking));
    INIT_CK(cudaStreamCreateWithFlags(&ctx->s1, cudaStreamNonBlocking));
    INIT_CK(cudaEventCreateWithFlags(&ctx->ev_fork, cudaEventDisableTiming));
    INIT_CK(cudaEventCreateWithFlags(&ctx->ev_join, cudaEventDisableTiming));
    {
        cublasStatus_t b = cublasCreate(&ctx->blas);
        if (b != CUBLAS_STATUS_SUCCESS) {
            ctx->blas = NULL;
            r = cu_fail_blas(ctx, err, b, "cublasCreate", __FILE__, __LINE__);
            goto fail;
        }
    }
    ctx->blas_ws_bytes = 32u << 20;
    if ((r = cu_malloc(ctx, &ctx->blas_ws, ctx->blas_ws_bytes, "the cuBLAS workspace", err)) < 0)
        goto fail;
    {
        cublasStatus_t b = cublasSetWorkspace(ctx->blas, ctx->blas_ws, ctx->blas_ws_bytes);
        if (b == CUBLAS_STATUS_SUCCESS)
            b = cublasSetStream(ctx->blas, ctx->s0);
        if (b != CUBLAS_STATUS_SUCCESS) {
            r = cu_fail_blas(ctx, err, b, "cublasSetWorkspace", __FILE__, __LINE__);
            goto fail;
        }
    }
#undef INIT_CK
    if (ctx->verbose)
        fprintf(stderr, "hymba: cuda: device %d %s, %d SMs, %.1f GiB\n", dev, prop.name, ctx->n_sm,
                prop.totalGlobalMem / 1073741824.0);
    *out = ctx;
    return 0;
fail:
    if (ctx->blas)
        cublasDestroy(ctx->blas);
    cu_free(ctx, ctx->blas_ws, ctx->blas_ws_bytes);
    if (ctx->ev_fork)
        cudaEventDestroy(ctx->ev_fork);
    if (ctx->ev_join)
        cudaEventDestroy(ctx->ev_join);
    if (ctx->s0)
        cudaStreamDestroy(ctx->s0);
    if (ctx->s1)
        cudaStreamDestroy(ctx->s1);
    free(ctx);
    return r;
}

static void cuda_fini(void *vctx)
{
    cu_ctx *ctx = (cu_ctx *)vctx;
    if (!ctx)
        return;
    cudaSetDevice(ctx->dev);
    cublasDestroy(ctx->blas);
    cu_free(ctx, ctx->blas_ws, ctx->blas_ws_bytes);
    cudaEventDestroy(ctx->ev_fork);
    cudaEventDestroy(ctx->ev_join);
    cudaStreamDestroy(ctx->s0);
    cudaStreamDestroy(ctx->s1);
    free(ctx);
}

/* ------------------------------------------------------------ host conversions */

static uint16_t f32_to_bf16_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u)
        return (uint16_t)((u >> 16) | 0x40);           /* quiet NaN */
    u += 0x7fffu + ((u >> 16) & 1u);                 /* round to nearest even */
    return (uint16_t)(u >> 16);
}

static float bf16_bits_to_f32(uint16_t b)
{
    uint32_t u = (uint32_t)b << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static float f16_bits_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h >> 15) << 31, ex = (h >> 10) & 0x1f, man = h & 0x3ff, u;
    if (ex == 0) {
        if (man == 0) {
            u = sign;
        } else {
            ex = 127 - 15 + 1;
            while (!(man & 0x400)) {
                man <<= 1;
                ex--;
            }
            man &= 0x3ff;
            u = sign | (ex << 23) | (man << 13);
        }
    } else if (ex == 31) {
        u = sign | 0x7f800000u | (man << 13);
    } else {
        u = sign | ((ex - 15 + 127) << 23) | (man << 13);
    }
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static float tensor_get(const hy_tensor *t, size_t i)
{
    switch (t->dt) {
    case HY_DT_F32: return ((const float *)t->data)[i];
    case HY_DT_BF16: return bf16_bits_to_f32(((const uint16_t *)t->data)[i]);
    case HY_DT_F16: return f16_bits_to_f32(((const uint16_t *)t->data)[i]);
    }
    return 0.0f;
}

static size_t tensor_numel(const hy_tensor *t)
{
    size_t n = 1;
    for (int i = 0; i < t->ndim; i++)
        n *= (size_t)t->shape[i];
    return n;
}

static int tensor_check(const hy_tensor *t, size_t want, const char *role, hy_err *err)
{
    if (!t->data)
        return hy_err_set(err, -EINVAL, "cuda: weight %s (%s) is missing", role, t->name ? t->name : "?");
    if (tensor_numel(t) != want)
        return hy_err_set(err, -EINVAL, "cuda: weight %s has %zu elements, expected %zu",
                          t->name ? t->name : role, tensor_numel(t), want);
    return 0;
}

/* Upload n values as bf16 (rows of src_rows interleaved into dst when stride > 1). */
static int upload_bf16(cu_ctx *ctx, cu_model *m, const hy_tensor *t, size_t n, bf16 **out, hy_err *err)
{
    int r;
    *out = NULL;
    if ((r = tensor_check(t, n, t->name ? t->name : "tensor", err)) < 0)
        return r;
    if ((r = cu_malloc(ctx, (void **)out, n * 2, t->name ? t->name : "a weight", err)) < 0)
        return r;
    m->weight_bytes += n * 2;
    if (t->dt == HY_DT_BF16) {
        CK(cudaMemcpy(*out, t->data, n * 2, cudaMemcpyHostToDevice));
        return 0;
    }
    const size_t chunk = 8u << 20;
    uint16_t *tmp = (uint16_t *)malloc((n < chunk ? n : chunk) * 2);
    if (!tmp)
        return hy_err_set(err, -ENOMEM, "out of host memory converting %s", t->name);
    for (size_t o = 0; o < n; o += chunk) {
        size_t k = n - o < chunk ? n - o : chunk;
        for (size_t i = 0; i < k; i++)
            tmp[i] = f32_to_bf16_bits(tensor_get(t, o + i));
        cudaError_t e = cudaMemcpy(*out + o, tmp, k * 2, cudaMemcpyHostToDevice);
        if (e != cudaSuccess) {
            free(tmp);
            return cu_fail(ctx, err, e, "cudaMemcpy (weights)", __FILE__, __LINE__);
        }
    }
    free(tmp);
    return 0;
}

/* Upload n values as fp32, each passed through fn (NULL: identity). */
static int upload_f32(cu_ctx *ctx, cu_model *m, const hy_tensor *t, size_t n, float (*fn)(float),
                      float **out, hy_err *err)
{
    int r;
    *out = NULL;
    if ((r = tensor_check(t, n, t->name ? t->name : "tensor", err)) < 0)
        return r;
    float *tmp = (float *)malloc(n * 4);
    if (!tmp)
        return hy_err_set(err, -ENOMEM, "out of host memory converting %s", t->name);
    for (size_t i = 0; i < n; i++)
        tmp[i] = fn ? fn(tensor_get(t, i)) : tensor_get(t, i);
    if ((r = cu_malloc(ctx, (void **)out, n * 4, t->name, err)) < 0) {
        free(tmp);
        return r;
    }
    m->weight_bytes += n * 4;
    cudaError_t e = cudaMemcpy(*out, tmp, n * 4, cudaMemcpyHostToDevice);
    free(tmp);
    if (e != cudaSuccess)
        return cu_fail(ctx, err, e, "cudaMemcpy (weights)", __FILE__, __LINE__);
    return 0;
}

static float neg_exp(float x) { return -expf(x); }

/* gate and up interleaved by rows: the GEMV applies the activation in its epilogue. */
static int upload_gate_up(cu_ctx *ctx, cu_model *m, const hy_layer_weights *lw, bf16 **out, hy_err *err)
{
    const hy_arch *a = &m->a;
    size_t H = (size_t)a->hidden, I = (size_t)a->intermediate;
    int r;
    if ((r = tensor_check(&lw->gate, I * H, "gate_proj", err)) < 0 ||
        (r = tensor_check(&lw->up, I * H, "up_proj", err)) < 0)
        return r;
    uint16_t *tmp = (uint16_t *)malloc(2 * I * H * 2);
    if (!tmp)
        return hy_err_set(err, -ENOMEM, "out of host memory interleaving gate/up");
    for (size_t i = 0; i < I; i++)
        for (size_t k = 0; k < H; k++) {
            tmp[(2 * i) * H + k] = f32_to_bf16_bits(tensor_get(&lw->gate, i * H + k));
            tmp[(2 * i + 1) * H + k] = f32_to_bf16_bits(tensor_get(&lw->up, i * H + k));
        }
    r = cu_malloc(ctx, (void **)out, 2 * I * H * 2, "gate/up weights", err);
    if (r == 0) {
        m->weight_bytes += 2 * I * H * 2;
        cudaError_t e = cudaMemcpy(*out, tmp, 2 * I * H * 2, cudaMemcpyHostToDevice);
        if (e != cudaSuccess)
            r = cu_fail(ctx, err, e, "cudaMemcpy (gate/up)", __FILE__, __LINE__);
    }
    free(tmp);
    return r;
}

/* ------------------------------------------------------------ states */

static size_t align256(size_t n) { return (n + 255) & ~(size_t)255; }

static size_t kv_slots(const cu_model *m, int L, int64_t cap)
{
    return m->a.is_global[L] ? (size_t)cap : (size_t)m->a.n_meta + (size_t)m->ring;
}

static void state_free_mem(cu_ctx *ctx, cu_state *st)
{
    if (!st)
        return;
    cu_free(ctx, st->mem, st->bytes);
    free(st->kv_host);
    free(st);
}

static int state_alloc(cu_ctx *ctx, cu_model *m, int64_t cap, cu_state **out, hy_err *err)
{
    const hy_arch *a = &m->a;
    *out = NULL;
    if (cap < a->n_meta || cap > (int64_t)1 << 30)
        return hy_err_set(err, -EINVAL, "cuda: state max_pos %lld out of range [%d, 2^30]", (long long)cap,
                          a->n_meta);
    cu_state *st = (cu_state *)calloc(1, sizeof(*st));
    if (!st)
        return hy_err_set(err, -ENOMEM, "out of memory");
    st->bm = m;
    st->cap = cap;
    st->kv_host = (bf16 **)calloc(2 * (size_t)a->n_layers, sizeof(bf16 *));
    if (!st->kv_host) {
        free(st);
        return hy_err_set(err, -ENOMEM, "out of memory");
    }
    size_t conv_b = align256((size_t)a->n_layers * a->d_conv * a->d_inner * 4);
    size_t ssm_b = align256((size_t)a->n_layers * a->d_inner * a->d_state * 4);
    size_t tab_b = align256(2 * (size_t)a->n_layers * sizeof(bf16 *));
    size_t off_kv = conv_b + ssm_b + tab_b, total = off_kv;
    size_t koff[HY_MAX_LAYERS], voff[HY_MAX_LAYERS];
    for (int L = 0; L < a->n_layers; L++) {
        if (a->kv_src[L] != L)
            continue;
        size_t slots = kv_slots(m, L, cap);
        koff[L] = total;
        total += align256(slots * a->n_kv_heads * a->head_dim * 2);
        voff[L] = total;
        total += align256(slots * a->n_kv_heads * a->v_head_dim * 2);
    }
    char what[96];
    snprintf(what, sizeof(what), "a conversation state (max_pos %lld)", (long long)cap);
    int r = cu_malloc(ctx, &st->mem, total, what, err);
    if (r < 0) {
        free(st->kv_host);
        free(st);
        return r;
    }
    st->bytes = total;
    char *base = (char *)st->mem;
    st->conv = (float *)base;
    st->ssm = (float *)(base + conv_b);
    st->kv_dev = (bf16 **)(base + conv_b + ssm_b);
    for (int L = 0; L < a->n_layers; L++) {
        int src = a->kv_src[L];
        st->kv_host[2 * L] = (bf16 *)(base + koff[src]);
        st->kv_host[2 * L + 1] = (bf16 *)(base + voff[src]);
    }
    cudaError_t e = cudaMemset(st->mem, 0, off_kv);
    if (e == cudaSuccess)
        e = cudaMemcpy(st->kv_dev, st->kv_host, 2 * (size_t)a->n_layers * sizeof(bf16 *), cudaMemcpyHostToDevice);
    if (e != cudaSuccess) {
        r = cu_fail(ctx, err, e, "state init", __FILE__, __LINE__);
        state_free_mem(ctx, st);
        return r;
    }
    st->pos = 0;
    *out = st;
    return 0;
}

/* Copy the recurrent state and the first nkv positions' K/V of every owner layer. */
static int state_copy_n(cu_ctx *ctx, cu_model *m, cu_state *dst, const cu_state *src, int64_t n, hy_err *err)
{
    const hy_arch *a = &m->a;
    size_t conv_n = (size_t)a->n_layers * a->d_conv * a->d_inner * 4;
    size_t ssm_n = (size_t)a->n_layers * a->d_inner * a->d_state * 4;
    CK(cudaMemcpyAsync(dst->conv, src->conv, conv_n, cudaMemcpyDeviceToDevice, ctx->s0));
    CK(cudaMemcpyAsync(dst->ssm, src->ssm, ssm_n, cudaMemcpyDeviceToDevice, ctx->s0));
    for (int L = 0; L < a->n_layers; L++) {
        if (a->kv_src[L] != L)
            continue;
        size_t slots = (size_t)n;
        if (!a->is_global[L] && slots > kv_slots(m, L, 0))
            slots = kv_slots(m, L, 0);
        CK(cudaMemcpyAsync(dst->kv_host[2 * L], src->kv_host[2 * L], slots * a->n_kv_heads * a->head_dim * 2,
                           cudaMemcpyDeviceToDevice, ctx->s0));
        CK(cudaMemcpyAsync(dst->kv_host[2 * L + 1], src->kv_host[2 * L + 1],
                           slots * a->n_kv_heads * a->v_head_dim * 2, cudaMemcpyDeviceToDevice, ctx->s0));
    }
    CK(cudaStreamSynchronize(ctx->s0));
    return 0;
}

static int cuda_state_new(void *vctx, void *vbm, int64_t max_pos, void **out, hy_err *err)
{
    cu_ctx *ctx = (cu_ctx *)vctx;
    cu_model *m = (cu_model *)vbm;
    int r;
    *out = NULL;
    if ((r = cu_check_ctx(ctx, err)) < 0)
        return r;
    cu_state *st;
    if ((r = state_alloc(ctx, m, max_pos, &st, err)) < 0)
        return r;
    if ((r = state_copy_n(ctx, m, st, m->snap, m->a.n_meta, err)) < 0) {
        state_free_mem(ctx, st);
        return r;
    }
    st->pos = m->a.n_meta;
    *out = st;
    return 0;
}

static void cuda_state_free(void *vctx, void *vst)
{
    cu_ctx *ctx = (cu_ctx *)vctx;
    if (!vst)
        return;
    cudaSetDevice(ctx->dev);
    state_free_mem(ctx, (cu_state *)vst);
}

static void cuda_state_reset(void *vctx, void *vbm, void *vst)
{
    cu_ctx *ctx = (cu_ctx *)vctx;
    cu_model *m = (cu_model *)vbm;
    cu_state *st = (cu_state *)vst;
    hy_err e;
    memset(&e, 0, sizeof(e));
    if (cu_check_ctx(ctx, &e) < 0 || state_copy_n(ctx, m, st, m->snap, m->a.n_meta, &e) < 0) {
        if (ctx->verbose)
            fprintf(stderr, "hymba: cuda: state reset failed: %s\n", e.msg);
        return;
    }
    st->pos = m->a.n_meta;
}

static int cuda_state_copy(void *vctx, void *vbm, void *vdst, const void *vsrc, hy_err *err)
{
    cu_ctx *ctx = (cu_ctx *)vctx;
    cu_model *m = (cu_model *)vbm;
    cu_state *dst = (cu_state *)vdst;
    const cu_state *src = (const cu_state *)vsrc;
    int r;
    if ((r = cu_check_ctx(ctx, err)) < 0)
        return r;
    if (src->pos > dst->cap)
        return hy_err_set(err, -ENOSPC, "cuda: state copy: source holds %lld positions, destination only %lld",
                          (long long)src->pos, (long long)dst->cap);
    if ((r = state_copy_n(ctx, m, dst, src, src->pos, err)) < 0)
        return r;
    dst->pos = src->pos;
    return 0;
}

static int64_t cuda_state_pos(void *vctx, const void *vst)
{
    (void)vctx;
    return ((const cu_state *)vst)->pos;
}

/* ------------------------------------------------------------ model */

static int arch_supported(const hy_arch *a, hy_err *err)
{
    int G = a->n_kv_heads > 0 ? a->n_heads / a->n_kv_heads : 0;
    if (a->d_state != CU_D_STATE)
        return hy_err_set(err, -ENOTSUP, "cuda: d_state %d unsupported (kernels are built for %d)", a->d_state,
                          CU_D_STATE);
    if (a->n_kv_heads <= 0 || a->n_heads % a->n_kv_heads || G > CU_MAX_GQA)
        return hy_err_set(err, -ENOTSUP, "cuda: %d query heads over %d KV heads unsupported (at most %d per KV head)",
                          a->n_heads, a->n_kv_heads, CU_MAX_GQA);
    if (a->head_dim % 8 || a->head_dim > CU_MAX_HEAD_DIM || a->head_dim < 2)
        return hy_err_set(err, -ENOTSUP, "cuda: head_dim %d unsupported (multiple of 8, at most %d)", a->head_dim,
                          CU_MAX_HEAD_DIM);
    if (a->v_head_dim % 32 || a->v_head_dim / 32 > CU_MAX_VPL || a->v_head_dim / 32 == 3)
        return hy_err_set(err, -ENOTSUP, "cuda: v_head_dim %d unsupported (32, 64 or 128)", a->v_head_dim);
    if (a->d_conv < 1 || a->d_conv > 8)
        return hy_err_set(err, -ENOTSUP, "cuda: d_conv %d unsupported (1..8)", a->d_conv);
    if (a->n_meta > CU_PCHUNK)
        return hy_err_set(err, -ENOTSUP, "cuda: %d meta tokens unsupported (at most %d)", a->n_meta, CU_PCHUNK);
    if (a->n_layers > HY_MAX_LAYERS || a->n_layers < 1)
        return hy_err_set(err, -EINVAL, "cuda: n_layers %d out of range", a->n_layers);
    return 0;
}

static void layer_free(cu_ctx *ctx, cu_model *m, cu_layer *l)
{
    const hy_arch *a = &m->a;
    size_t H = a->hidden, Di = a->d_inner, R = a->dt_rank, N = a->d_state, I = a->intermediate;
    size_t P = R + 2 * N;
    cu_free(ctx, l->in_norm, H * 2);
    cu_free(ctx, l->in_proj, (size_t)l->rows * H * 2);
    cu_free(ctx, l->conv_w, Di * a->d_conv * 2);
    cu_free(ctx, l->conv_b, Di * 4);
    cu_free(ctx, l->x_proj, P * Di * 2);
    cu_free(ctx, l->dt_norm, R * 2);
    cu_free(ctx, l->B_norm, N * 2);
    cu_free(ctx, l->C_norm, N * 2);
    cu_free(ctx, l->dt_w, Di * R * 2);
    cu_free(ctx, l->dt_b, Di * 4);
    cu_free(ctx, l->A, Di * N * 4);
    cu_free(ctx, l->D, Di * 4);
    cu_free(ctx, l->avg1, Di * 2);
    cu_free(ctx, l->avg2, Di * 2);
    cu_free(ctx, l->out_proj, H * Di * 2);
    cu_free(ctx, l->mlp_norm, H * 2);
    cu_free(ctx, l->gu, 2 * I * H * 2);
    cu_free(ctx, l->down, H * I * 2);
}

static void cuda_model_free(void *vctx, void *vbm)
{
    cu_ctx *ctx = (cu_ctx *)vctx;
    cu_model *m = (cu_model *)vbm;
    if (!m)
        return;
    cudaSetDevice(ctx->dev);
    cudaDeviceSynchronize();
    const hy_arch *a = &m->a;
    size_t H = a->hidden;
    cu_graphs_drop(m);
    free(m->graphs);
    cu_scratch_free(ctx, m, &m->pf);
    cu_scratch_free(ctx, m, &m->dc);
    cu_mega_free(ctx, m);
    state_free_mem(ctx, m->snap);
    if (m->L)
        for (int L = 0; L < a->n_layers; L++)
            layer_free(ctx, m, &m->L[L]);
    free(m->L);
    if (m->lm_head != m->embed)
        cu_free(ctx, m->lm_head, (size_t)a->vocab * H * 2);
    cu_free(ctx, m->embed, (size_t)a->vocab * H * 2);
    cu_free(ctx, m->meta, (size_t)a->n_meta * H * 2);
    cu_free(ctx, m->final_norm, H * 2);
    cu_free(ctx, m->inv_freq, (size_t)(a->head_dim / 2) * 4);
    free(m);
}

static int layer_upload(cu_ctx *ctx, cu_model *m, int L, const hy_layer_weights *lw, hy_err *err)
{
    const hy_arch *a = &m->a;
    cu_layer *l = &m->L[L];
    size_t H = a->hidden, Di = a->d_inner, R = a->dt_rank, N = a->d_state, I = a->intermediate;
    size_t P = R + 2 * N;
    int r;
    l->rows = a->in_proj_rows[L];
    l->kv_src = a->kv_src[L];
    l->owner = a->kv_src[L] == L;
    int q = a->n_heads * a->head_dim;
    l->k_off = q;
    l->v_off = q + a->n_kv_heads * a->head_dim;
    l->xs_off = l->owner ? q + a->n_kv_heads * (a->head_dim + a->v_head_dim) : q;
    l->z_off = l->xs_off + a->d_inner;
    if (l->z_off + a->d_inner != l->rows)
        return hy_err_set(err, -EINVAL, "cuda: layer %d in_proj has %d rows, expected %d", L, l->rows,
                          l->z_off + a->d_inner);
    l->g.is_global = a->is_global[L];
    l->g.n_meta = a->n_meta;
    l->g.ring = m->ring;
    l->g.window = a->window;
    l->gd = l->g;
    if (m->num.ref_decode_window && !a->is_global[L])
        l->gd.window = a->window - 1;
    if ((r = upload_bf16(ctx, m, &lw->input_norm, H, &l->in_norm, err)) < 0 ||
        (r = upload_bf16(ctx, m, &lw->in_proj, (size_t)l->rows * H, &l->in_proj, err)) < 0 ||
        (r = upload_bf16(ctx, m, &lw->conv_w, Di * a->d_conv, &l->conv_w, err)) < 0 ||
        (a->conv_bias && (r = upload_f32(ctx, m, &lw->conv_b, Di, NULL, &l->conv_b, err)) < 0) ||
        (r = upload_bf16(ctx, m, &lw->x_proj, P * Di, &l->x_proj, err)) < 0 ||
        (a->inner_norms && ((r = upload_bf16(ctx, m, &lw->dt_norm, R, &l->dt_norm, err)) < 0 ||
                            (r = upload_bf16(ctx, m, &lw->B_norm, N, &l->B_norm, err)) < 0 ||
                            (r = upload_bf16(ctx, m, &lw->C_norm, N, &l->C_norm, err)) < 0)) ||
        (r = upload_bf16(ctx, m, &lw->dt_proj_w, Di * R, &l->dt_w, err)) < 0 ||
        (r = upload_f32(ctx, m, &lw->dt_proj_b, Di, NULL, &l->dt_b, err)) < 0 ||
        (r = upload_f32(ctx, m, &lw->A_log, Di * N, neg_exp, &l->A, err)) < 0 ||
        (r = upload_f32(ctx, m, &lw->D, Di, NULL, &l->D, err)) < 0 ||
        (r = upload_bf16(ctx, m, &lw->pre_avg1, Di, &l->avg1, err)) < 0 ||
        (r = upload_bf16(ctx, m, &lw->pre_avg2, Di, &l->avg2, err)) < 0 ||
        (r = upload_bf16(ctx, m, &lw->out_proj, H * Di, &l->out_proj, err)) < 0 ||
        (r = upload_bf16(ctx, m, &lw->pre_mlp_norm, H, &l->mlp_norm, err)) < 0 ||
        (r = upload_gate_up(ctx, m, lw, &l->gu, err)) < 0 ||
        (r = upload_bf16(ctx, m, &lw->down, H * I, &l->down, err)) < 0)
        return r;
    return 0;
}

static int model_inv_freq(cu_ctx *ctx, cu_model *m, hy_err *err)
{
    int half = m->a.head_dim / 2;
    float f[CU_MAX_HEAD_DIM / 2];
    for (int d = 0; d < half; d++) {
        float v = (float)(1.0 / pow(m->a.rope_base, (2.0 * d) / m->a.head_dim));
        if (m->num.rope_bf16_freq)
            v = bf16_bits_to_f32(f32_to_bf16_bits(v));
        f[d] = v;
    }
    int r = cu_malloc(ctx, (void **)&m->inv_freq, half * 4, "RoPE frequencies", err);
    if (r < 0)
        return r;
    CK(cudaMemcpy(m->inv_freq, f, half * 4, cudaMemcpyHostToDevice));
    return 0;
}

static int cuda_model_new(void *vctx, const hy_arch *arch, const hy_numerics *num, const hy_weights *w,
                          void **out, hy_err *err)
{
    cu_ctx *ctx = (cu_ctx *)vctx;
    int r;
    *out = NULL;
    if ((r = cu_check_ctx(ctx, err)) < 0 || (r = arch_supported(arch, err)) < 0)
        return r;
    cu_model *m = (cu_model *)calloc(1, sizeof(*m));
    if (!m)
        return hy_err_set(err, -ENOMEM, "out of memory");
    m->a = *arch;
    if (num)
        m->num = *num;
    const hy_arch *a = &m->a;
    size_t H = a->hidden;
    m->ring = a->window + CU_PCHUNK;
    m->P = a->dt_rank + 2 * a->d_state;
    m->flash = cu_attn_flash_supported(a->head_dim, a->v_head_dim);
    m->use_gemv = (a->hidden % 8 == 0) && (a->d_inner % 8 == 0) && (a->intermediate % 8 == 0);
    for (int L = 0; L < a->n_layers; L++)
        if (a->in_proj_rows[L] > m->max_rows)
            m->max_rows = a->in_proj_rows[L];
    m->L = (cu_layer *)calloc((size_t)a->n_layers, sizeof(cu_layer));
    if (!m->L) {
        free(m);
        return hy_err_set(err, -ENOMEM, "out of memory");
    }
    if ((r = upload_bf16(ctx, m, &w->embed, (size_t)a->vocab * H, &m->embed, err)) < 0)
        goto fail;
    if (w->lm_head.data && w->lm_head.data != w->embed.data) {
        if ((r = upload_bf16(ctx, m, &w->lm_head, (size_t)a->vocab * H, &m->lm_head, err)) < 0)
            goto fail;
    } else {
        m->lm_head = m->embed;
    }
    if (a->n_meta > 0 && (r = upload_bf16(ctx, m, &w->memory_tokens, (size_t)a->n_meta * H, &m->meta, err)) < 0)
        goto fail;
    if ((r = upload_bf16(ctx, m, &w->final_norm, H, &m->final_norm, err)) < 0)
        goto fail;
    for (int L = 0; L < a->n_layers; L++)
        if ((r = layer_upload(ctx, m, L, &w->layers[L], err)) < 0)
            goto fail;
    if ((r = model_inv_freq(ctx, m, err)) < 0)
        goto fail;
    if ((r = cu_scratch_alloc(ctx, m, &m->pf, CU_PCHUNK, 0, err)) < 0)
        goto fail;
    if ((r = state_alloc(ctx, m, a->n_meta > 0 ? a->n_meta : 1, &m->snap, err)) < 0)
        goto fail;
    if (a->n_meta > 0 && (r = cu_forward_prefill(ctx, m, m->snap, NULL, a->n_meta, HY_LOGITS_NONE, NULL, err)) < 0)
        goto fail;
    m->snap->pos = a->n_meta;
    if (ctx->verbose)
        fprintf(stderr, "hymba: cuda: %.1f MiB of weights on %s, meta snapshot of %d positions\n",
                m->weight_bytes / 1048576.0, ctx->dev_name, a->n_meta);
    *out = m;
    return 0;
fail:
    cuda_model_free(ctx, m);
    return r;
}

/* ------------------------------------------------------------ passes */

static int cuda_prefill(void *vctx, void *vbm, void *vst, const int32_t *tokens, int n, hy_logits_mode mode,
                        float *logits, hy_err *err)
{
    cu_ctx *ctx = (cu_ctx *)vctx;
    cu_model *m = (cu_model *)vbm;
    cu_state *st = (cu_state *)vst;
    int r;
    if ((r = cu_check_ctx(ctx, err)) < 0)
        return r;
    if (n < 1 || !tokens)
        return hy_err_set(err, -EINVAL, "cuda: prefill of %d tokens", n);
    if (mode != HY_LOGITS_NONE && !logits)
        return hy_err_set(err, -EINVAL, "cuda: prefill: logits buffer missing");
    if (st->pos + n > st->cap)
        return hy_err_set(err, -ENOSPC, "cuda: prefill of %d tokens at position %lld exceeds the state's "
                          "%lld positions", n, (long long)st->pos, (long long)st->cap);
    for (int i = 0; i < n; i++)
        if (tokens[i] < 0 || tokens[i] >= m->a.vocab)
            return hy_err_set(err, -EINVAL, "cuda: token %d at index %d outside the vocabulary [0, %d)",
                              tokens[i], i, m->a.vocab);
    for (int done = 0; done < n;) {
        int k = n - done < CU_PCHUNK ? n - done : CU_PCHUNK;
        hy_logits_mode md = mode;
        float *lg = logits;
        if (mode == HY_LOGITS_ALL)
            lg = logits + (size_t)done * m->a.vocab;
        else if (mode == HY_LOGITS_LAST && done + k < n)
            md = HY_LOGITS_NONE;
        if ((r = cu_forward_prefill(ctx, m, st, tokens + done, k, md, lg, err)) < 0)
            return r;
        st->pos += k;
        done += k;
    }
    ctx->st.prefill_calls++;
    ctx->st.positions += (uint64_t)n;
    return 0;
}

static int decode_check(cu_ctx *ctx, cu_model *m, void **vst, const int32_t *tokens, int B, hy_err *err)
{
    int r;
    if ((r = cu_check_ctx(ctx, err)) < 0)
        return r;
    if (B < 1 || !vst || !tokens)
        return hy_err_set(err, -EINVAL, "cuda: decode of batch %d", B);
    for (int b = 0; b < B; b++) {
        cu_state *st = (cu_state *)vst[b];
        if (!st || st->bm != m)
            return hy_err_set(err, -EINVAL, "cuda: decode: state %d is not of this model", b);
        if (st->pos + 1 > st->cap)
            return hy_err_set(err, -ENOSPC, "cuda: decode: state %d is full (%lld positions)", b,
                              (long long)st->cap);
        if (tokens[b] < 0 || tokens[b] >= m->a.vocab)
            return hy_err_set(err, -EINVAL, "cuda: decode: token %d of row %d outside the vocabulary [0, %d)",
                              tokens[b], b, m->a.vocab);
        for (int c = 0; c < b; c++)
            if (vst[c] == vst[b])
                return hy_err_set(err, -EINVAL, "cuda: decode: rows %d and %d are the same state", c, b);
    }
    return 0;
}

static int cuda_decode_sample(void *vctx, void *vbm, void **vst, const int32_t *tokens, int B,
                              const hy_sample_params *sp, const float *u, int32_t *ids, float *logits,
                              hy_err *err)
{
    cu_ctx *ctx = (cu_ctx *)vctx;
    cu_model *m = (cu_model *)vbm;
    int r;
    if ((r = decode_check(ctx, m, vst, tokens, B, err)) < 0)
        return r;
    if (sp && !ids)
        return hy_err_set(err, -EINVAL, "cuda: decode_sample: ids buffer missing");
    if ((r = cu_forward_decode(ctx, m, (cu_state **)vst, tokens, B, sp, u, ids, logits, err)) < 0)
        return r;
    for (int b = 0; b < B; b++)
        ((cu_state *)vst[b])->pos++;
    ctx->st.decode_calls++;
    ctx->st.positions += (uint64_t)B;
    return 0;
}

static int cuda_decode(void *vctx, void *vbm, void **vst, const int32_t *tokens, int B, float *logits,
                       hy_err *err)
{
    if (!logits)
        return hy_err_set(err, -EINVAL, "cuda: decode: logits buffer missing");
    return cuda_decode_sample(vctx, vbm, vst, tokens, B, NULL, NULL, NULL, logits, err);
}

/* ------------------------------------------------------------ images */

static size_t cuda_image_size(void *vctx, void *vbm, const void *vst)
{
    (void)vctx;
    return hy_state_image_bytes(&((cu_model *)vbm)->a, ((const cu_state *)vst)->pos, HY_DT_BF16);
}

/* Slot of a real position p in owner layer L. */
static size_t slot_of(const cu_model *m, int L, int64_t p)
{
    if (m->a.is_global[L] || p < m->a.n_meta)
        return (size_t)p;
    return (size_t)m->a.n_meta + (size_t)((p - m->a.n_meta) % m->ring);
}

static int cuda_export(void *vctx, void *vbm, const void *vst, void *buf, size_t len, hy_err *err)
{
    cu_ctx *ctx = (cu_ctx *)vctx;
    cu_model *m = (cu_model *)vbm;
    const cu_state *st = (const cu_state *)vst;
    const hy_arch *a = &m->a;
    int r;
    if ((r = cu_check_ctx(ctx, err)) < 0)
        return r;
    size_t need = hy_state_image_bytes(a, st->pos, HY_DT_BF16);
    if (len < need)
        return hy_err_set(err, -ENOSPC, "cuda: state image needs %zu bytes, buffer has %zu", need, len);
    CK(cudaStreamSynchronize(ctx->s0));
    unsigned char *p = (unsigned char *)buf;
    hy_state_image_hdr h;
    memset(&h, 0, sizeof(h));
    h.magic = HY_STATE_IMAGE_MAGIC;
    h.version = HY_STATE_IMAGE_VERSION;
    h.n_layers = a->n_layers;
    h.d_inner = a->d_inner;
    h.d_state = a->d_state;
    h.d_conv = a->d_conv;
    h.n_kv_layers = a->n_kv_layers;
    h.n_kv_heads = a->n_kv_heads;
    h.head_dim = a->head_dim;
    h.v_head_dim = a->v_head_dim;
    h.kv_dtype = HY_DT_BF16;
    h.n_meta = a->n_meta;
    h.window = a->window;
    h.n_pos = st->pos;
    memcpy(p, &h, sizeof(h));
    p += sizeof(h);
    size_t Di = a->d_inner, dc = a->d_conv, N = a->d_state;
    float *tmp = (float *)malloc(Di * (dc > N ? dc : N) * 4);
    if (!tmp)
        return hy_err_set(err, -ENOMEM, "out of memory");
    for (int L = 0; L < a->n_layers; L++) {
        cudaError_t e = cudaMemcpy(tmp, st->conv + (size_t)L * dc * Di, dc * Di * 4, cudaMemcpyDeviceToHost);
        if (e != cudaSuccess) {
            free(tmp);
            return cu_fail(ctx, err, e, "cudaMemcpy (conv state)", __FILE__, __LINE__);
        }
        float *dst = (float *)p;   /* [Di][dc] */
        for (size_t c = 0; c < Di; c++)
            for (size_t k = 0; k < dc; k++)
                memcpy(dst + c * dc + k, tmp + k * Di + c, 4);
        p += Di * dc * 4;
        e = cudaMemcpy(p, st->ssm + (size_t)L * Di * N, Di * N * 4, cudaMemcpyDeviceToHost);
        if (e != cudaSuccess) {
            free(tmp);
            return cu_fail(ctx, err, e, "cudaMemcpy (SSM state)", __FILE__, __LINE__);
        }
        p += Di * N * 4;
    }
    free(tmp);
    size_t krow = (size_t)a->n_kv_heads * a->head_dim * 2, vrow = (size_t)a->n_kv_heads * a->v_head_dim * 2;
    for (int L = 0; L < a->n_layers; L++) {
        if (a->kv_src[L] != L)
            continue;
        uint32_t kept = (uint32_t)hy_state_image_kept(a, L, st->pos);
        memcpy(p, &kept, 4);
        p += 4;
        int64_t first = st->pos - kept;
        unsigned char *kp = p, *vp = p + kept * krow;
        for (uint32_t e = 0; e < kept;) {
            size_t s = slot_of(m, L, first + e);
            uint32_t run = 1;   /* consecutive slots: one copy (a ring wraps at most once) */
            while (e + run < kept && slot_of(m, L, first + e + run) == s + run)
                run++;
            CK(cudaMemcpyAsync(kp + e * krow, (char *)st->kv_host[2 * L] + s * krow, run * krow,
                               cudaMemcpyDeviceToHost, ctx->s0));
            CK(cudaMemcpyAsync(vp + e * vrow, (char *)st->kv_host[2 * L + 1] + s * vrow, run * vrow,
                               cudaMemcpyDeviceToHost, ctx->s0));
            e += run;
        }
        p += kept * (krow + vrow);
    }
    CK(cudaStreamSynchronize(ctx->s0));
    return 0;
}

static int image_check(const hy_arch *a, const hy_state_image_hdr *h, int64_t cap, size_t len, hy_err *err)
{
    if (h->magic != HY_STATE_IMAGE_MAGIC || h->version != HY_STATE_IMAGE_VERSION)
        return hy_err_set(err, -EINVAL, "state image: bad magic/version (%08x v%u)", h->magic, h->version);
#define IMG_FIELD(f, v) if ((int64_t)h->f != (int64_t)(v)) \
        return hy_err_set(err, -EINVAL, "state image: " #f " is %lld, the model has %lld", \
                          (long long)h->f, (long long)(v))
    IMG_FIELD(n_layers, a->n_layers);
    IMG_FIELD(d_inner, a->d_inner);
    IMG_FIELD(d_state, a->d_state);
    IMG_FIELD(d_conv, a->d_conv);
    IMG_FIELD(n_kv_layers, a->n_kv_layers);
    IMG_FIELD(n_kv_heads, a->n_kv_heads);
    IMG_FIELD(head_dim, a->head_dim);
    IMG_FIELD(v_head_dim, a->v_head_dim);
    IMG_FIELD(n_meta, a->n_meta);
    IMG_FIELD(window, a->window);
#undef IMG_FIELD
    if (h->kv_dtype != HY_DT_BF16 && h->kv_dtype != HY_DT_F32)
        return hy_err_set(err, -EINVAL, "state image: kv_dtype %u unsupported", h->kv_dtype);
    if (h->n_pos < a->n_meta || h->n_pos > cap)
        return hy_err_set(err, -EINVAL, "state image: n_pos %lld outside [%d, %lld] of this state",
                          (long long)h->n_pos, a->n_meta, (long long)cap);
    size_t need = hy_state_image_bytes(a, h->n_pos, (hy_dtype)h->kv_dtype);
    if (len != need)
        return hy_err_set(err, -EINVAL, "state image: %zu bytes, expected %zu for %lld positions", len, need,
                          (long long)h->n_pos);
    return 0;
}

static int cuda_import(void *vctx, void *vbm, void *vst, const void *buf, size_t len, hy_err *err)
{
    cu_ctx *ctx = (cu_ctx *)vctx;
    cu_model *m = (cu_model *)vbm;
    cu_state *st = (cu_state *)vst;
    const hy_arch *a = &m->a;
    int r;
    if ((r = cu_check_ctx(ctx, err)) < 0)
        return r;
    if (len < sizeof(hy_state_image_hdr))
        return hy_err_set(err, -EINVAL, "state image: %zu bytes is shorter than its header", len);
    hy_state_image_hdr h;
    memcpy(&h, buf, sizeof(h));
    if ((r = image_check(a, &h, st->cap, len, err)) < 0)
        return r;
    /* meta K/V and a clean slate first */
    if ((r = state_copy_n(ctx, m, st, m->snap, a->n_meta, err)) < 0)
        return r;
    const unsigned char *p = (const unsigned char *)buf + sizeof(h);
    size_t Di = a->d_inner, dc = a->d_conv, N = a->d_state;
    float *tmp = (float *)malloc(Di * (dc > N ? dc : N) * 4);
    if (!tmp)
        return hy_err_set(err, -ENOMEM, "out of memory");
    for (int L = 0; L < a->n_layers; L++) {
        const float *src = (const float *)p;
        for (size_t c = 0; c < Di; c++)
            for (size_t k = 0; k < dc; k++)
                memcpy(tmp + k * Di + c, src + c * dc + k, 4);
        cudaError_t e = cudaMemcpy(st->conv + (size_t)L * dc * Di, tmp, dc * Di * 4, cudaMemcpyHostToDevice);
        p += Di * dc * 4;
        if (e == cudaSuccess)
            e = cudaMemcpy(st->ssm + (size_t)L * Di * N, p, Di * N * 4, cudaMemcpyHostToDevice);
        p += Di * N * 4;
        if (e != cudaSuccess) {
            free(tmp);
            return cu_fail(ctx, err, e, "cudaMemcpy (state import)", __FILE__, __LINE__);
        }
    }
    free(tmp);
    size_t ks = h.kv_dtype == HY_DT_F32 ? 4 : 2;
    size_t kn = (size_t)a->n_kv_heads * a->head_dim, vn = (size_t)a->n_kv_heads * a->v_head_dim;
    size_t max_kept = 0;
    for (int L = 0; L < a->n_layers; L++)
        if (a->kv_src[L] == L && (size_t)hy_state_image_kept(a, L, h.n_pos) > max_kept)
            max_kept = (size_t)hy_state_image_kept(a, L, h.n_pos);
    uint16_t *row = (uint16_t *)malloc((max_kept ? max_kept : 1) * (kn > vn ? kn : vn) * 2);
    if (!row)
        return hy_err_set(err, -ENOMEM, "out of memory");
    for (int L = 0; L < a->n_layers; L++) {
        if (a->kv_src[L] != L)
            continue;
        uint32_t kept;
        memcpy(&kept, p, 4);
        p += 4;
        if ((int64_t)kept != hy_state_image_kept(a, L, h.n_pos)) {
            free(row);
            return hy_err_set(err, -EINVAL, "state image: layer %d keeps %u positions, expected %lld", L, kept,
                              (long long)hy_state_image_kept(a, L, h.n_pos));
        }
        int64_t first = h.n_pos - kept;
        for (int part = 0; part < 2; part++) {
            size_t n = part ? vn : kn;
            /* all entries to bf16 first, then one copy per run of consecutive slots */
            for (size_t i = 0; i < (size_t)kept * n; i++) {
                if (ks == 2) {
                    memcpy(row + i, p + i * 2, 2);
                } else {
                    float f;
                    memcpy(&f, p + i * 4, 4);
                    row[i] = f32_to_bf16_bits(f);
                }
            }
            for (uint32_t e = 0; e < kept;) {
                size_t s = slot_of(m, L, first + e);
                uint32_t run = 1;
                while (e + run < kept && slot_of(m, L, first + e + run) == s + run)
                    run++;
                cudaError_t ce = cudaMemcpy((char *)st->kv_host[2 * L + part] + s * n * 2, row + (size_t)e * n,
                                            run * n * 2, cudaMemcpyHostToDevice);
                if (ce != cudaSuccess) {
                    free(row);
                    return cu_fail(ctx, err, ce, "cudaMemcpy (K/V import)", __FILE__, __LINE__);
                }
                e += run;
            }
            p += (size_t)kept * n * ks;
        }
    }
    free(row);
    st->pos = h.n_pos;
    return 0;
}

static void cuda_stats(void *vctx, hy_backend_stats *out)
{
    cu_ctx *ctx = (cu_ctx *)vctx;
    *out = ctx->st;
    out->bytes_device = ctx->bytes;
}

static int cuda_ceilings(void *vctx, double *copy_gbps, double *mm_tflops, hy_err *err)
{
    cu_ctx *ctx = (cu_ctx *)vctx;
    int r;
    if ((r = cu_check_ctx(ctx, err)) < 0)
        return r;
    return cu_measure_ceilings(ctx, copy_gbps, mm_tflops, err);
}

extern "C" const hy_backend_ops hy_backend_cuda = {
    /* .name = */ "cuda",
    /* .init = */ cuda_init,
    /* .fini = */ cuda_fini,
    /* .model_new = */ cuda_model_new,
    /* .model_free = */ cuda_model_free,
    /* .state_new = */ cuda_state_new,
    /* .state_free = */ cuda_state_free,
    /* .state_reset = */ cuda_state_reset,
    /* .state_copy = */ cuda_state_copy,
    /* .state_pos = */ cuda_state_pos,
    /* .prefill = */ cuda_prefill,
    /* .decode = */ cuda_decode,
    /* .state_image_size = */ cuda_image_size,
    /* .state_export = */ cuda_export,
    /* .state_import = */ cuda_import,
    /* .stats = */ cuda_stats,
    /* .decode_sample = */ cuda_decode_sample,
    /* .ceilings = */ cuda_ceilings,
    /* .prefill_chunk = */ CU_PCHUNK,
};
