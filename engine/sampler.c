/* sampler.c: next-token choice (greedy, temperature, top-k, top-p, min-p, repetition penalty), seeded. */
#include "engine/hymba.h"

#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

/*
 * Order of operations (HF's warper order): repetition penalty, temperature,
 * top-k, softmax, top-p, min-p, then one draw.  Every step is O(V) expected
 * (top-k and top-p use quickselect partitions, never a full sort), and the
 * result depends only on the logits, the history and the RNG state.
 */

/* Defaults in the spirit of llama.cpp's; the penalty is off. */
#define DEF_TEMPERATURE 0.8f
#define DEF_TOP_K 40
#define DEF_TOP_P 0.95f
#define DEF_MIN_P 0.05f
#define DEF_REPEAT_LAST_N 64

void hy_sampling_default(hy_sampling *p)
{
    p->temperature = DEF_TEMPERATURE;
    p->top_k = DEF_TOP_K;
    p->top_p = DEF_TOP_P;
    p->min_p = DEF_MIN_P;
    p->repeat_penalty = 1.0f;
    p->repeat_last_n = DEF_REPEAT_LAST_N;
}

/* ---- RNG: xoshiro256** seeded through splitmix64 --------------------------- */

static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

void hy_rng_seed(hy_rng *r, uint64_t seed)
{
    for (int i = 0; i < 4; i++)
        r->s[i] = splitmix64(&seed);
}

static uint64_t rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

static uint64_t rng_next(hy_rng *r)
{
    uint64_t *s = r->s, out = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return out;
}

/* Uniform in [0, 1) with 53 random bits. */
static double rng_uniform(hy_rng *r)
{
    return (double)(rng_next(r) >> 11) * 0x1p-53;
}

/* ---- candidates --------------------------------------------------------------- */

typedef struct cand {
    float v;                 /* logit, then unnormalized probability */
    float l;                 /* max logit - logit (>= 0), once probabilities are formed */
    int32_t id;
} cand;

static void swap(cand *a, cand *b)
{
    cand t = *a;
    *a = *b;
    *b = t;
}

/* Deterministic pivot: the median of the first, middle and last values. */
static float pivot_of(const cand *c, int lo, int hi)
{
    float a = c[lo].v, b = c[lo + (hi - lo) / 2].v, d = c[hi - 1].v;
    if ((a <= b && b <= d) || (d <= b && b <= a))
        return b;
    if ((b <= a && a <= d) || (d <= a && a <= b))
        return a;
    return d;
}

/* Three-way partition of [lo, hi): > piv in [lo, *a), == piv in [*a, *b), < piv after. */
static void partition3(cand *c, int lo, int hi, float piv, int *a, int *b)
{
    int lt = lo, i = lo, gt = hi;
    while (i < gt) {
        if (c[i].v > piv)
            swap(&c[lt++], &c[i++]);
        else if (c[i].v < piv)
            swap(&c[i], &c[--gt]);
        else
            i++;
    }
    *a = lt;
    *b = gt;
}

/* Move the k largest to the front (any order among them); expected O(n). */
static void select_top(cand *c, int n, int k)
{
    int lo = 0, hi = n;
    while (hi - lo > 1) {
        int a, b;
        partition3(c, lo, hi, pivot_of(c, lo, hi), &a, &b);
        if (k < a)
            hi = a;
        else if (k <= b)
            return;
        else
            lo = b;
    }
}

static void sift_down(cand *c, int n, int i)
{
    for (;;) {
        int l = 2 * i + 1, r = l + 1, m = i;
        if (l < n && c[l].v < c[m].v)
            m = l;
        if (r < n && c[r].v < c[m].v)
            m = r;
        if (m == i)
            return;
        swap(&c[i], &c[m]);
        i = m;
    }
}

/* The k largest into c[0, k) through a min-heap of k: one well-predicted compare
 * per element, so much cheaper than partitioning when k is small. */
static void heap_top(cand *c, int n, int k)
{
    for (int i = k / 2 - 1; i >= 0; i--)
        sift_down(c, k, i);
    for (int i = k; i < n; i++)
        if (c[i].v > c[0].v) {
            c[0] = c[i];
            sift_down(c, k, 0);
        }
}

static double mass(const cand *c, int lo, int hi)
{
    double s = 0;
    for (int i = lo; i < hi; i++)
        s += c[i].v;
    return s;
}

/* Smallest set of the most probable candidates whose mass reaches need: moved to
 * the front, count returned.  Quickselect on probability, expected O(n). */
static int select_nucleus_qs(cand *c, int n, double need)
{
    int lo = 0, hi = n;
    while (lo < hi) {
        int a, b;
        partition3(c, lo, hi, pivot_of(c, lo, hi), &a, &b);
        double gt = mass(c, lo, a);
        if (gt >= need) {
            hi = a;
            continue;
        }
        need -= gt;
        for (int j = a; j < b; j++) {
            need -= c[j].v;
            if (need <= 0)
                return j + 1;
        }
        lo = b;
    }
    return lo > 0 ? lo : n;
}

/* NaN compares false, so it never wins; all-NaN gives 0. */
/* Buckets of log-probability for top-p: NB_PER_UNIT per unit of logit below the max. */
#define NB 512
#define NB_PER_UNIT 16

static int bucket_of(float below_max)
{
    float x = below_max * NB_PER_UNIT;
    return x < NB - 1 ? (int)x : NB - 1;
}

/* select_nucleus_qs's result in O(n) well-predicted steps: histogram the mass by
 * log-probability bucket (monotonic in probability), take whole buckets while
 * they do not reach need, and quickselect only inside the bucket that does.
 * c[i].v are exp(logit - max) in (0, 1]. */
static int select_nucleus(cand *c, int n, double need)
{
    double bmass[NB] = { 0 }, acc = 0;
    int B = NB - 1, m1 = 0, m2;

    for (int i = 0; i < n; i++)
        bmass[bucket_of(c[i].l)] += c[i].v;
    for (int b = 0; b < NB; b++) {
        if (acc + bmass[b] >= need) {
            B = b;
            break;
        }
        acc += bmass[b];
    }
    /* Whole buckets above B to the front, then bucket B's members after them. */
    for (int i = 0; i < n; i++)
        if (bucket_of(c[i].l) < B)
            swap(&c[m1++], &c[i]);
    m2 = m1;
    for (int i = m1; i < n; i++)
        if (bucket_of(c[i].l) == B)
            swap(&c[m2++], &c[i]);
    return m1 + select_nucleus_qs(c + m1, m2 - m1, need - acc);
}

int32_t hy_argmax(const float *v, int n)
{
    int32_t best = 0;
    float bv = -INFINITY;
    for (int i = 0; i < n; i++)
        if (v[i] > bv) {
            bv = v[i];
            best = i;
        }
    return best;
}

/* Per-thread scratch kept between calls: a fresh 256 KB malloc per token goes
 * to mmap and page faults cost more than the sampling itself. */
static _Thread_local struct { void *p; size_t cap; } scratch[2];

/* A thread that exits (hymbad's scheduler at shutdown) frees its scratch:
 * a key destructor runs in the exiting thread while its TLS is still there. */
static pthread_key_t scratch_key;
static pthread_once_t scratch_once = PTHREAD_ONCE_INIT;

static void scratch_release(void *unused)
{
    (void)unused;
    for (int i = 0; i < 2; i++) {
        free(scratch[i].p);
        scratch[i].p = NULL;
        scratch[i].cap = 0;
    }
}

static void scratch_key_create(void)
{
    pthread_key_create(&scratch_key, scratch_release);
}

static void *scratch_get(int slot, size_t bytes)
{
    if (scratch[slot].cap < bytes) {
        pthread_once(&scratch_once, scratch_key_create);
        pthread_setspecific(scratch_key, &scratch);   /* non-NULL: the destructor runs */
        void *p = realloc(scratch[slot].p, bytes);
        if (!p)
            return NULL;
        scratch[slot].p = p;
        scratch[slot].cap = bytes;
    }
    return scratch[slot].p;
}

/* llama.cpp's rule: each distinct recent token once; positive logits are divided
 * by the penalty, the others multiplied. */
static void apply_penalty(const hy_sampling *p, float *v, int vocab, const int32_t *hist,
                          int64_t n_hist, uint8_t *seen)
{
    int64_t start = p->repeat_last_n < 0 ? 0 : n_hist - p->repeat_last_n;
    for (int64_t i = start < 0 ? 0 : start; i < n_hist; i++) {
        int32_t t = hist[i];
        if (t < 0 || t >= vocab || (seen[t >> 3] & (1u << (t & 7))))
            continue;
        seen[t >> 3] |= (uint8_t)(1u << (t & 7));
        v[t] = v[t] > 0 ? v[t] / p->repeat_penalty : v[t] * p->repeat_penalty;
    }
}

/* Draw from candidates [0, n) with weights v. */
static int32_t draw(const cand *c, int n, hy_rng *rng)
{
    double total = mass(c, 0, n), u = rng_uniform(rng) * total, acc = 0;
    for (int i = 0; i < n; i++) {
        acc += c[i].v;
        if (u < acc)
            return c[i].id;
    }
    return c[n - 1].id;      /* u == total after rounding */
}

static int32_t sample_from(const hy_sampling *p, hy_rng *rng, const float *v, int vocab,
                           cand *c)
{
    int n = 0;
    float maxv = -INFINITY, inv_t = 1.0f / p->temperature;

    for (int i = 0; i < vocab; i++)
        if (!isnan(v[i]) && v[i] > -INFINITY)
            c[n++] = (cand){ v[i] * inv_t, 0, i };
    if (n == 0)
        return hy_argmax(v, vocab);
    if (p->top_k > 0 && p->top_k < n) {
        if (p->top_k <= n / 8)
            heap_top(c, n, p->top_k);
        else
            select_top(c, n, p->top_k);
        n = p->top_k;
    }
    for (int i = 0; i < n; i++)
        maxv = c[i].v > maxv ? c[i].v : maxv;
    if (isinf(maxv)) {                       /* +inf logit: it wins outright */
        for (int i = 0; i < n; i++)
            if (c[i].v == maxv)
                return c[i].id;
    }
    for (int i = 0; i < n; i++) {
        c[i].l = maxv - c[i].v;
        c[i].v = expf(-c[i].l);              /* the max becomes exactly 1 */
    }
    if (p->top_p < 1.0f && p->top_p > 0.0f)
        n = select_nucleus(c, n, (double)p->top_p * mass(c, 0, n));
    if (p->min_p > 0.0f) {
        int m = 0;
        float pmax = 0;
        for (int i = 0; i < n; i++)
            pmax = c[i].v > pmax ? c[i].v : pmax;
        for (int i = 0; i < n; i++)
            if (c[i].v >= p->min_p * pmax)
                c[m++] = c[i];
        n = m;
    }
    return draw(c, n, rng);
}

int32_t hy_sample(const hy_sampling *p, hy_rng *rng, const float *logits, int vocab,
                  const int32_t *history, int64_t n_history)
{
    bool penalize = p->repeat_penalty > 0 && p->repeat_penalty != 1.0f && history &&
                    n_history > 0 && p->repeat_last_n != 0;
    bool greedy = !(p->temperature > 0);
    float *work = NULL;
    const float *v = logits;
    cand *c = NULL;
    int32_t tok;

    if (vocab <= 0)
        return 0;
    if (penalize) {
        uint8_t *seen = calloc(((size_t)vocab + 7) / 8, 1);
        work = scratch_get(0, (size_t)vocab * sizeof(*work));
        if (work && seen) {
            memcpy(work, logits, (size_t)vocab * sizeof(*work));
            apply_penalty(p, work, vocab, history, n_history, seen);
            v = work;
        }
        free(seen);
    }
    if (!greedy)
        c = scratch_get(1, (size_t)vocab * sizeof(*c));
    /* Without memory for the candidates, fall back to the most likely token. */
    tok = greedy || !c ? hy_argmax(v, vocab) : sample_from(p, rng, v, vocab, c);
    return tok;
}
