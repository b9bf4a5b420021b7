/* matmul.c: fp32 activations x {f32, bf16, f16} weight rows, fp32 accumulation; AVX2/FMA and portable kernels. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "kernels/cpu/cpu_internal.h"
#if defined(__x86_64__)
#include <immintrin.h>
#endif

/*
 * y[i][o] = x[i] . W[o] is computed in tiles of ROWS_PER_TILE weight rows by up
 * to POS_PER_TILE positions: the tile's weight rows are loaded (and converted)
 * once and multiplied into every position of the tile, so a decode step streams
 * each weight row exactly once and a prefill reads the weights once per tile.
 * Threads claim blocks of ROWS_PER_TASK output rows.
 */
#define ROWS_PER_TILE 4
#define POS_PER_TILE 3
#define ROWS_PER_TASK 16
/* Positions per outer block of a prefill: the block's activations stay in L2
 * while every weight row of the thread's task passes over them. */
#define POS_PER_BLOCK 48
/* Calls with at most this many positions are weight streams (decode batches). */
#define GUIDED_MAX_POS 8

/* ---- scalar conversions ---- */

float cpu_bf16_to_f32(uint16_t h)
{
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

uint16_t cpu_f32_to_bf16(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u)          /* NaN: keep it quiet */
        return (uint16_t)((u >> 16) | 0x40);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

float cpu_f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu;
    uint32_t man = h & 0x3ffu;
    uint32_t u;
    if (exp == 0) {
        if (man == 0) {
            u = sign;
        } else {                                   /* subnormal: renormalize */
            int e = -1;
            do {
                man <<= 1;
                e++;
            } while (!(man & 0x400u));
            u = sign | ((uint32_t)(127 - 15 - e) << 23) | ((man & 0x3ffu) << 13);
        }
    } else if (exp == 31) {
        u = sign | 0x7f800000u | (man << 13);
    } else {
        u = sign | ((exp + 127 - 15) << 23) | (man << 13);
    }
    float f;
    memcpy(&f, &u, 4);
    return f;
}

void cpu_mat_row_f32(const cpu_mat *W, int64_t r, float *out)
{
    size_t off = (size_t)r * (size_t)W->cols;
    if (W->dt == HY_DT_F32) {
        memcpy(out, (const float *)W->data + off, (size_t)W->cols * sizeof(float));
    } else if (W->dt == HY_DT_BF16) {
        const uint16_t *p = (const uint16_t *)W->data + off;
        for (int c = 0; c < W->cols; c++)
            out[c] = cpu_bf16_to_f32(p[c]);
    } else {
        const uint16_t *p = (const uint16_t *)W->data + off;
        for (int c = 0; c < W->cols; c++)
            out[c] = cpu_f16_to_f32(p[c]);
    }
}

static inline float wval(const void *w, hy_dtype dt, size_t i)
{
    if (dt == HY_DT_F32)
        return ((const float *)w)[i];
    if (dt == HY_DT_BF16)
        return cpu_bf16_to_f32(((const uint16_t *)w)[i]);
    return cpu_f16_to_f32(((const uint16_t *)w)[i]);
}

/* ---- tile kernels ----
 * wr: ROWS_PER_TILE weight row starts (elements of dt), xr: np position rows.
 * out[r * POS_PER_TILE + p] = wr[r] . xr[p] over cols. */
typedef void (*tile_fn)(const void *const *wr, const float *const *xr, int cols, float *out);

static void tile_portable(hy_dtype dt, int np, const void *const *wr, const float *const *xr,
                          int cols, float *out)
{
    float acc[ROWS_PER_TILE][POS_PER_TILE] = {{0}};
    for (int c = 0; c < cols; c++) {
        for (int r = 0; r < ROWS_PER_TILE; r++) {
            float w = wval(wr[r], dt, (size_t)c);
            for (int p = 0; p < np; p++)
                acc[r][p] += w * xr[p][c];
        }
    }
    for (int r = 0; r < ROWS_PER_TILE; r++)
        for (int p = 0; p < np; p++)
            out[r * POS_PER_TILE + p] = acc[r][p];
}

#define PORTABLE_TILE(DT, NAME, NP) \
    static void NAME(const void *const *wr, const float *const *xr, int cols, float *out) \
    { tile_portable(DT, NP, wr, xr, cols, out); }
PORTABLE_TILE(HY_DT_F32, tile_f32_c1, 1)
PORTABLE_TILE(HY_DT_F32, tile_f32_c2, 2)
PORTABLE_TILE(HY_DT_F32, tile_f32_c3, 3)
PORTABLE_TILE(HY_DT_BF16, tile_bf16_c1, 1)
PORTABLE_TILE(HY_DT_BF16, tile_bf16_c2, 2)
PORTABLE_TILE(HY_DT_BF16, tile_bf16_c3, 3)
PORTABLE_TILE(HY_DT_F16, tile_f16_c1, 1)
PORTABLE_TILE(HY_DT_F16, tile_f16_c2, 2)
PORTABLE_TILE(HY_DT_F16, tile_f16_c3, 3)

#if defined(__x86_64__)
#define AVX_TARGET __attribute__((target("avx2,fma,f16c")))

static inline AVX_TARGET __m256 ld8_f32(const void *p, int c)
{
    return _mm256_loadu_ps((const float *)p + c);
}

static inline AVX_TARGET __m256 ld8_bf16(const void *p, int c)
{
    __m128i h = _mm_loadu_si128((const __m128i *)((const uint16_t *)p + c));
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}

static inline AVX_TARGET __m256 ld8_f16(const void *p, int c)
{
    return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)((const uint16_t *)p + c)));
}

static inline AVX_TARGET float hsum8(__m256 v)
{
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* One kernel per (dtype, positions): the accumulators stay in registers
 * (4 rows x 3 positions = 12 ymm plus 4 for the weights). */
#define AVX_TILE(NAME, LOAD, DT, NP) \
    static AVX_TARGET void NAME(const void *const *wr, const float *const *xr, int cols, float *out) \
    { \
        __m256 acc[ROWS_PER_TILE][NP]; \
        _Pragma("GCC unroll 4") \
        for (int r = 0; r < ROWS_PER_TILE; r++) \
            _Pragma("GCC unroll 3") \
            for (int p = 0; p < NP; p++) \
                acc[r][p] = _mm256_setzero_ps(); \
        int c = 0; \
        for (; c + 8 <= cols; c += 8) { \
            __m256 w[ROWS_PER_TILE]; \
            _Pragma("GCC unroll 4") \
            for (int r = 0; r < ROWS_PER_TILE; r++) \
                w[r] = LOAD(wr[r], c); \
            _Pragma("GCC unroll 3") \
            for (int p = 0; p < NP; p++) { \
                __m256 xv = _mm256_loadu_ps(xr[p] + c); \
                _Pragma("GCC unroll 4") \
                for (int r = 0; r < ROWS_PER_TILE; r++) \
                    acc[r][p] = _mm256_fmadd_ps(w[r], xv, acc[r][p]); \
            } \
        } \
        for (int r = 0; r < ROWS_PER_TILE; r++) \
            for (int p = 0; p < NP; p++) { \
                float s = hsum8(acc[r][p]); \
                for (int cc = c; cc < cols; cc++) \
                    s += wval(wr[r], DT, (size_t)cc) * xr[p][cc]; \
                out[r * POS_PER_TILE + p] = s; \
            } \
    }

/* One position (batch-1 decode): the loop is a weight stream, and with one
 * accumulator per row it would wait on the FMA latency (4 chains, one FMA
 * each per iteration) at about the bandwidth it must reach; two accumulators
 * per row (16 columns per iteration) keep 8 chains in flight. */
#define AVX_TILE1(NAME, LOAD, DT) \
    static AVX_TARGET void NAME(const void *const *wr, const float *const *xr, int cols, float *out) \
    { \
        __m256 acc[ROWS_PER_TILE][2]; \
        const float *x = xr[0]; \
        _Pragma("GCC unroll 4") \
        for (int r = 0; r < ROWS_PER_TILE; r++) \
            acc[r][0] = acc[r][1] = _mm256_setzero_ps(); \
        int c = 0; \
        for (; c + 16 <= cols; c += 16) { \
            __m256 x0 = _mm256_loadu_ps(x + c), x1 = _mm256_loadu_ps(x + c + 8); \
            _Pragma("GCC unroll 4") \
            for (int r = 0; r < ROWS_PER_TILE; r++) { \
                acc[r][0] = _mm256_fmadd_ps(LOAD(wr[r], c), x0, acc[r][0]); \
                acc[r][1] = _mm256_fmadd_ps(LOAD(wr[r], c + 8), x1, acc[r][1]); \
            } \
        } \
        for (; c + 8 <= cols; c += 8) { \
            __m256 x0 = _mm256_loadu_ps(x + c); \
            _Pragma("GCC unroll 4") \
            for (int r = 0; r < ROWS_PER_TILE; r++) \
                acc[r][0] = _mm256_fmadd_ps(LOAD(wr[r], c), x0, acc[r][0]); \
        } \
        for (int r = 0; r < ROWS_PER_TILE; r++) { \
            float s = hsum8(_mm256_add_ps(acc[r][0], acc[r][1])); \
            for (int cc = c; cc < cols; cc++) \
                s += wval(wr[r], DT, (size_t)cc) * x[cc]; \
            out[r * POS_PER_TILE] = s; \
        } \
    }

AVX_TILE1(tile_f32_a1, ld8_f32, HY_DT_F32)
AVX_TILE(tile_f32_a2, ld8_f32, HY_DT_F32, 2)
AVX_TILE(tile_f32_a3, ld8_f32, HY_DT_F32, 3)
AVX_TILE1(tile_bf16_a1, ld8_bf16, HY_DT_BF16)
AVX_TILE(tile_bf16_a2, ld8_bf16, HY_DT_BF16, 2)
AVX_TILE(tile_bf16_a3, ld8_bf16, HY_DT_BF16, 3)
AVX_TILE1(tile_f16_a1, ld8_f16, HY_DT_F16)
AVX_TILE(tile_f16_a2, ld8_f16, HY_DT_F16, 2)
AVX_TILE(tile_f16_a3, ld8_f16, HY_DT_F16, 3)

/*
 * Prefill (many positions): a task's PANEL_ROWS weight rows are converted once
 * into an fp32 panel stored column-major (panel[c][r]), then a PANEL_POS x
 * PANEL_ROWS block of outputs is accumulated in registers by broadcasting one
 * activation per position against two vectors of the panel: 12 FMAs per 2
 * panel loads + 6 broadcasts, instead of re-converting bf16 for every tile.
 */
#define PANEL_ROWS 16
#define PANEL_POS 6
#define PANEL_COLS 256

static AVX_TARGET void panel_pack(const cpu_mat *W, int64_t r0, int nr, float *panel)
{
    size_t es = hy_dtype_size(W->dt);
    for (int r = 0; r < PANEL_ROWS; r++) {
        if (r >= nr) {
            for (int c = 0; c < W->cols; c++)
                panel[(size_t)c * PANEL_ROWS + r] = 0.0f;
            continue;
        }
        const void *row = (const char *)W->data + (size_t)(r0 + r) * W->cols * es;
        int c = 0;
        if (W->dt == HY_DT_BF16) {
            for (; c + 8 <= W->cols; c += 8) {
                float t[8];
                _mm256_storeu_ps(t, ld8_bf16(row, c));
                for (int k = 0; k < 8; k++)
                    panel[(size_t)(c + k) * PANEL_ROWS + r] = t[k];
            }
        }
        for (; c < W->cols; c++)
            panel[(size_t)c * PANEL_ROWS + r] = wval(row, W->dt, (size_t)c);
    }
}

/* out[p][0..15] = sum_c xr[p][c] * panel[c][0..15] for PANEL_POS positions. */
static AVX_TARGET void panel_kernel(const float *panel, const float *const *xr, int cols, float *out)
{
    __m256 acc[PANEL_POS][2];
    _Pragma("GCC unroll 6")
    for (int p = 0; p < PANEL_POS; p++)
        acc[p][0] = acc[p][1] = _mm256_setzero_ps();
    for (int c = 0; c < cols; c++) {
        __m256 w0 = _mm256_loadu_ps(panel + (size_t)c * PANEL_ROWS);
        __m256 w1 = _mm256_loadu_ps(panel + (size_t)c * PANEL_ROWS + 8);
        _Pragma("GCC unroll 6")
        for (int p = 0; p < PANEL_POS; p++) {
            __m256 xb = _mm256_broadcast_ss(xr[p] + c);
            acc[p][0] = _mm256_fmadd_ps(w0, xb, acc[p][0]);
            acc[p][1] = _mm256_fmadd_ps(w1, xb, acc[p][1]);
        }
    }
    _Pragma("GCC unroll 6")
    for (int p = 0; p < PANEL_POS; p++) {
        _mm256_storeu_ps(out + p * PANEL_ROWS, acc[p][0]);
        _mm256_storeu_ps(out + p * PANEL_ROWS + 8, acc[p][1]);
    }
}

static bool have_avx2(void)
{
    static int cached = -1;
    if (cached < 0) {
        __builtin_cpu_init();
        cached = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
                 __builtin_cpu_supports("f16c");
    }
    return cached;
}
#else
static bool have_avx2(void)
{
    return false;
}
#endif

static bool force_portable;

void cpu_matmul_force_portable(bool on)
{
    force_portable = on;
}

bool cpu_use_avx2(void)
{
    return !force_portable && have_avx2();
}

const char *cpu_matmul_isa(void)
{
    return (!force_portable && have_avx2()) ? "avx2" : "portable";
}

/* kernels[dtype][np-1] */
static tile_fn tile_select(hy_dtype dt, int np)
{
    static const tile_fn portable[3][POS_PER_TILE] = {
        [HY_DT_F32] = {tile_f32_c1, tile_f32_c2, tile_f32_c3},
        [HY_DT_F16] = {tile_f16_c1, tile_f16_c2, tile_f16_c3},
        [HY_DT_BF16] = {tile_bf16_c1, tile_bf16_c2, tile_bf16_c3},
    };
#if defined(__x86_64__)
    static const tile_fn avx[3][POS_PER_TILE] = {
        [HY_DT_F32] = {tile_f32_a1, tile_f32_a2, tile_f32_a3},
        [HY_DT_F16] = {tile_f16_a1, tile_f16_a2, tile_f16_a3},
        [HY_DT_BF16] = {tile_bf16_a1, tile_bf16_a2, tile_bf16_a3},
    };
    if (!force_portable && have_avx2())
        return avx[dt][np - 1];
#endif
    return portable[dt][np - 1];
}

typedef struct mm_args {
    const cpu_mat *W;
    const float *x;
    int n, ldx;
    float *y;
    int ldy;
    bool accumulate;
    tile_fn tiles[POS_PER_TILE];
    float *panels;        /* [threads][cols][PANEL_ROWS] or NULL: tile kernels */
} mm_args;

static void mm_store(const mm_args *a, int p, int64_t r0, const float *vals, int nr, int stride)
{
    float *yr = a->y + (size_t)p * a->ldy + r0;
    for (int r = 0; r < nr; r++) {
        if (a->accumulate)
            yr[r] += vals[r * stride];
        else
            yr[r] = vals[r * stride];
    }
}

#if defined(__x86_64__)
static void mm_task_panel(const mm_args *a, int64_t begin, int64_t end, int tid)
{
    float *panel = a->panels + (size_t)tid * a->W->cols * PANEL_ROWS;
    float out[PANEL_POS * PANEL_ROWS];
    int cols = a->W->cols;
    mm_args acc = *a;
    acc.accumulate = true;
    for (int64_t r0 = begin; r0 < end; r0 += PANEL_ROWS) {
        int nr = end - r0 < PANEL_ROWS ? (int)(end - r0) : PANEL_ROWS;
        panel_pack(a->W, r0, nr, panel);
        /* column blocks: the block's panel slice and activations stay in L1 */
        for (int k0 = 0; k0 < cols; k0 += PANEL_COLS) {
            int kc = cols - k0 < PANEL_COLS ? cols - k0 : PANEL_COLS;
            const mm_args *st = k0 == 0 ? a : &acc;
            for (int p = 0; p < a->n; p += PANEL_POS) {
                int np = a->n - p < PANEL_POS ? a->n - p : PANEL_POS;
                const float *xr[PANEL_POS];
                /* positions past the end repeat the last one; their results are dropped */
                for (int q = 0; q < PANEL_POS; q++)
                    xr[q] = a->x + (size_t)(p + (q < np ? q : np - 1)) * a->ldx + k0;
                panel_kernel(panel + (size_t)k0 * PANEL_ROWS, xr, kc, out);
                for (int q = 0; q < np; q++)
                    mm_store(st, p + q, r0, out + q * PANEL_ROWS, nr, 1);
            }
        }
    }
}
#endif

static void mm_task(void *v, int64_t begin, int64_t end, int tid)
{
    const mm_args *a = v;
    const cpu_mat *W = a->W;
    size_t es = hy_dtype_size(W->dt);
    float out[ROWS_PER_TILE * POS_PER_TILE];
#if defined(__x86_64__)
    if (a->panels) {
        mm_task_panel(a, begin, end, tid);
        return;
    }
#endif
    (void)tid;

    for (int p0 = 0; p0 < a->n; p0 += POS_PER_BLOCK) {
        int p1 = p0 + POS_PER_BLOCK < a->n ? p0 + POS_PER_BLOCK : a->n;
        for (int64_t r0 = begin; r0 < end; r0 += ROWS_PER_TILE) {
            int nr = end - r0 < ROWS_PER_TILE ? (int)(end - r0) : ROWS_PER_TILE;
            const void *wr[ROWS_PER_TILE];
            /* rows past the end repeat the last row; their results are dropped */
            for (int r = 0; r < ROWS_PER_TILE; r++)
                wr[r] = (const char *)W->data + (size_t)(r0 + (r < nr ? r : nr - 1)) * W->cols * es;
            for (int p = p0; p < p1; p += POS_PER_TILE) {
                int np = p1 - p < POS_PER_TILE ? p1 - p : POS_PER_TILE;
                const float *xr[POS_PER_TILE];
                for (int q = 0; q < np; q++)
                    xr[q] = a->x + (size_t)(p + q) * a->ldx;
                a->tiles[np - 1](wr, xr, W->cols, out);
                for (int q = 0; q < np; q++)
                    mm_store(a, p + q, r0, out + q, nr, POS_PER_TILE);
            }
        }
    }
}

void cpu_matmul(cpu_pool *pool, const cpu_mat *W, const float *x, int n, int ldx,
                float *y, int ldy, bool accumulate)
{
    mm_args a = {.W = W, .x = x, .n = n, .ldx = ldx, .y = y, .ldy = ldy, .accumulate = accumulate};
    if (n <= 0 || W->rows <= 0)
        return;
    for (int k = 0; k < POS_PER_TILE; k++)
        a.tiles[k] = tile_select(W->dt, k + 1);
    /* Decode (few positions) is a stream of weights: guided chunks give each
     * thread long contiguous runs for the prefetchers and still balance the
     * end.  Prefill keeps small fixed tasks so a task's weight rows stay in L2
     * while every block of positions passes over them. */
    int64_t grain = W->rows < 2 * ROWS_PER_TASK ? W->rows : ROWS_PER_TASK;
    bool stream = n <= GUIDED_MAX_POS;
    if (!stream && cpu_use_avx2()) {
        a.panels = malloc((size_t)cpu_pool_threads(pool) * W->cols * PANEL_ROWS * sizeof(float));
        grain = PANEL_ROWS;   /* == ROWS_PER_TASK: one panel per task */
    }
    cpu_pool_run_sched(pool, W->rows, grain, stream, mm_task, &a);
    free(a.panels);
}
