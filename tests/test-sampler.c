/* test-sampler.c: greedy, temperature (chi-square vs softmax), top-k/top-p/min-p sets, penalty, seeds. */
#include "engine/hymba.h"
#include "tests/testutil.h"

#include <math.h>
#include <string.h>

#define V 32001
#define DRAWS 200000

static void sp_greedy(hy_sampling *p)
{
    memset(p, 0, sizeof(*p));
    p->top_p = 1.0f;
    p->repeat_penalty = 1.0f;
}

static void sp_plain(hy_sampling *p, float temp)
{
    sp_greedy(p);
    p->temperature = temp;
}

/* Pseudo-random logits (not from the sampler's RNG). */
static void fill_logits(float *l, int n, uint32_t seed)
{
    uint32_t x = seed * 2654435761u + 1;
    for (int i = 0; i < n; i++) {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        l[i] = (float)(x >> 8) * (20.0f / 16777216.0f) - 10.0f;
    }
}

static void test_greedy(void)
{
    static float l[V];
    hy_sampling p;
    hy_rng r;

    hy_rng_seed(&r, 1);
    for (uint32_t s = 1; s <= 20; s++) {
        fill_logits(l, V, s);
        int best = 0;
        for (int i = 1; i < V; i++)
            if (l[i] > l[best])
                best = i;
        l[best] += 0.5f;     /* a unique maximum: ties may go either way when sampling */
        sp_greedy(&p);
        CHECK(hy_sample(&p, &r, l, V, NULL, 0) == best, "greedy != argmax (seed %u)", s);
        sp_plain(&p, 1.5f);
        p.top_k = 1;
        CHECK(hy_sample(&p, &r, l, V, NULL, 0) == best, "top_k=1 != argmax (seed %u)", s);
        sp_plain(&p, 1.0f);
        p.top_p = 1e-6f;
        CHECK(hy_sample(&p, &r, l, V, NULL, 0) == best, "tiny top_p != argmax (seed %u)", s);
        sp_plain(&p, 1.0f);
        p.min_p = 1.0f;
        CHECK(hy_sample(&p, &r, l, V, NULL, 0) == best, "min_p=1 != argmax (seed %u)", s);
    }
    /* NaN and -inf never win; the logits are not modified. */
    float w[4] = { NAN, -INFINITY, 0.5f, 0.25f };
    sp_greedy(&p);
    CHECK(hy_sample(&p, &r, w, 4, NULL, 0) == 2, "greedy with NaN");
    sp_plain(&p, 1.0f);
    for (int i = 0; i < 100; i++) {
        int t = hy_sample(&p, &r, w, 4, NULL, 0);
        CHECK(t == 2 || t == 3, "drew a NaN/-inf token %d", t);
    }
    CHECK(isnan(w[0]) && w[2] == 0.5f, "logits modified");
}

/* Draw counts vs softmax(l / T): chi-square with 9 degrees of freedom. */
static void test_distribution(void)
{
    float l[10] = { 1.0f, 0.5f, 0.0f, -0.5f, 2.0f, 1.5f, -1.0f, 0.25f, 0.75f, -2.0f };
    const float temps[] = { 1.0f, 0.7f, 2.0f };
    hy_sampling p;
    hy_rng r;

    for (size_t ti = 0; ti < sizeof(temps) / sizeof(temps[0]); ti++) {
        double prob[10], z = 0, chi = 0;
        long count[10] = { 0 };
        for (int i = 0; i < 10; i++)
            z += prob[i] = exp(l[i] / temps[ti]);
        sp_plain(&p, temps[ti]);
        hy_rng_seed(&r, 42 + ti);
        for (int d = 0; d < DRAWS; d++)
            count[hy_sample(&p, &r, l, 10, NULL, 0)]++;
        for (int i = 0; i < 10; i++) {
            double e = DRAWS * prob[i] / z;
            chi += (count[i] - e) * (count[i] - e) / e;
        }
        /* 99.9th percentile of chi-square(9) is 27.9. */
        CHECK(chi < 27.9, "temperature %.1f: chi-square %.1f", temps[ti], chi);
        if (getenv("VERBOSE"))
            printf("  T=%.1f chi2(9) = %.2f\n", temps[ti], chi);
    }
}

static int desc_cmp(const void *a, const void *b)
{
    float x = *(const float *)a, y = *(const float *)b;
    return x < y ? 1 : x > y ? -1 : 0;
}

static void test_filters(void)
{
    /* probs proportional to exp(l): 0.4, 0.3, 0.2, 0.1 after normalisation. */
    float l[6] = { logf(0.4f), logf(0.3f), logf(0.2f), logf(0.1f), -INFINITY, -INFINITY };
    float shuffled[6] = { l[2], l[4], l[0], l[3], l[5], l[1] }; /* ids: 2->0, 0->2, 3->3, 5->1 */
    hy_sampling p;
    hy_rng r;
    bool seen[6];

    hy_rng_seed(&r, 7);
    /* top_k = 2: only the two best. */
    sp_plain(&p, 1.0f);
    p.top_k = 2;
    memset(seen, 0, sizeof(seen));
    for (int i = 0; i < 5000; i++)
        seen[hy_sample(&p, &r, l, 6, NULL, 0)] = true;
    CHECK(seen[0] && seen[1] && !seen[2] && !seen[3], "top_k=2 set");

    /* top_p = 0.65: {0.4, 0.3} reach 0.7 >= 0.65; 0.2 and 0.1 are out. */
    sp_plain(&p, 1.0f);
    p.top_p = 0.65f;
    memset(seen, 0, sizeof(seen));
    for (int i = 0; i < 5000; i++)
        seen[hy_sample(&p, &r, l, 6, NULL, 0)] = true;
    CHECK(seen[0] && seen[1] && !seen[2] && !seen[3], "top_p=0.65 set");
    /* top_p = 0.75 needs the third. */
    p.top_p = 0.75f;
    memset(seen, 0, sizeof(seen));
    for (int i = 0; i < 5000; i++)
        seen[hy_sample(&p, &r, l, 6, NULL, 0)] = true;
    CHECK(seen[0] && seen[1] && seen[2] && !seen[3], "top_p=0.75 set");
    /* Same on shuffled ids. */
    memset(seen, 0, sizeof(seen));
    for (int i = 0; i < 5000; i++)
        seen[hy_sample(&p, &r, shuffled, 6, NULL, 0)] = true;
    CHECK(seen[2] && seen[5] && seen[0] && !seen[3] && !seen[1] && !seen[4],
          "top_p=0.75 on shuffled ids");

    /* min_p = 0.6: keep p >= 0.24 -> {0.4, 0.3}; min_p = 0.3 -> also 0.2 (>= 0.12). */
    sp_plain(&p, 1.0f);
    p.min_p = 0.6f;
    memset(seen, 0, sizeof(seen));
    for (int i = 0; i < 5000; i++)
        seen[hy_sample(&p, &r, l, 6, NULL, 0)] = true;
    CHECK(seen[0] && seen[1] && !seen[2] && !seen[3], "min_p=0.6 set");
    p.min_p = 0.3f;
    memset(seen, 0, sizeof(seen));
    for (int i = 0; i < 5000; i++)
        seen[hy_sample(&p, &r, l, 6, NULL, 0)] = true;
    CHECK(seen[0] && seen[1] && seen[2] && !seen[3], "min_p=0.3 set");

    /* Within top_k the proportions stay softmax: 0.4/(0.4+0.3). */
    sp_plain(&p, 1.0f);
    p.top_k = 2;
    long n0 = 0;
    for (int i = 0; i < DRAWS; i++)
        n0 += hy_sample(&p, &r, l, 6, NULL, 0) == 0;
    double frac = (double)n0 / DRAWS, want = 0.4 / 0.7, sd = sqrt(want * (1 - want) / DRAWS);
    CHECK(fabs(frac - want) < 5 * sd, "top_k renormalisation: %.4f vs %.4f", frac, want);

    /* Large vocab: top_k = 40 draws only among the 40 largest. */
    static float big[V];
    fill_logits(big, V, 99);
    int rank_ok = 1;
    sp_plain(&p, 1.0f);
    p.top_k = 40;
    for (int d = 0; d < 500; d++) {
        int t = hy_sample(&p, &r, big, V, NULL, 0), above = 0;
        for (int i = 0; i < V; i++)
            above += big[i] > big[t];
        rank_ok &= above < 40;
    }
    CHECK(rank_ok, "top_k=40 drew outside the top 40");

    /* Large vocab, top_p = 0.9 alone: every draw lies in the nucleus computed by sorting. */
    static float sorted[V];
    double z = 0, acc = 0, need;
    int K = 0;
    for (int i = 0; i < V; i++)
        big[i] *= 0.5f;                       /* flatter: a nucleus of many tokens */
    memcpy(sorted, big, sizeof(big));
    qsort(sorted, V, sizeof(float), desc_cmp);
    for (int i = 0; i < V; i++)
        z += exp(sorted[i] - sorted[0]);
    need = 0.9 * z;
    while (K < V && acc < need)
        acc += exp(sorted[K++] - sorted[0]);
    sp_plain(&p, 1.0f);
    p.top_p = 0.9f;
    int in_nucleus = 1, distinct_hi = 0;
    for (int d = 0; d < 2000; d++) {
        int t = hy_sample(&p, &r, big, V, NULL, 0);
        in_nucleus &= big[t] >= sorted[K - 1];
        distinct_hi += big[t] < sorted[K / 2];
    }
    CHECK(K > 100, "nucleus too small for the check (%d)", K);
    CHECK(in_nucleus, "top_p=0.9 drew outside the nucleus of %d tokens", K);
    CHECK(distinct_hi > 0, "top_p=0.9 never drew from the nucleus' lower half");
}

static void test_penalty(void)
{
    float l[4] = { 2.0f, 1.9f, -1.0f, -1.05f };
    int32_t hist[3] = { 0, 0, 2 };
    hy_sampling p;
    hy_rng r;

    hy_rng_seed(&r, 3);
    sp_greedy(&p);
    p.repeat_penalty = 1.1f;
    p.repeat_last_n = 64;
    /* 2.0 / 1.1 = 1.82 < 1.9: token 1 wins; the logits buffer stays as it was. */
    CHECK(hy_sample(&p, &r, l, 4, hist, 3) == 1, "penalty on a positive logit");
    CHECK(l[0] == 2.0f, "logits modified by the penalty");
    /* Negative logits are multiplied: -1.0 * 1.1 = -1.1 < -1.05. */
    float m[2] = { -1.0f, -1.05f };
    int32_t h2[1] = { 0 };
    CHECK(hy_sample(&p, &r, m, 2, h2, 1) == 1, "penalty on a negative logit");
    /* Outside the window: no effect. */
    p.repeat_last_n = 1;
    CHECK(hy_sample(&p, &r, l, 4, hist, 3) == 0, "repeat_last_n window");
    /* Token 0 appears twice but is penalised once: 2.0/1.04 = 1.92 > 1.9 (twice would be 1.85). */
    p.repeat_last_n = 64;
    p.repeat_penalty = 1.04f;
    CHECK(hy_sample(&p, &r, l, 4, hist, 3) == 0, "penalty applied more than once per token");
    /* Out-of-range history ids are ignored. */
    int32_t bad[2] = { -5, 99 };
    CHECK(hy_sample(&p, &r, l, 4, bad, 2) == 0, "bad history ids");
}

static void test_seed(void)
{
    static float l[V];
    hy_sampling p;
    hy_rng a, b, c;
    int same = 1, differ = 0;

    fill_logits(l, V, 5);
    hy_sampling_default(&p);
    CHECK(p.temperature > 0 && p.repeat_penalty == 1.0f, "defaults");
    p.top_k = 0;
    p.min_p = 0;
    hy_rng_seed(&a, 1234);
    hy_rng_seed(&b, 1234);
    hy_rng_seed(&c, 1235);
    for (int i = 0; i < 200; i++) {
        int32_t x = hy_sample(&p, &a, l, V, NULL, 0), y = hy_sample(&p, &b, l, V, NULL, 0);
        same &= x == y;
        differ += x != hy_sample(&p, &c, l, V, NULL, 0);
    }
    CHECK(same, "same seed gave different tokens");
    CHECK(differ > 100, "different seeds agree too often (%d/200 differ)", differ);
}

int main(void)
{
    test_greedy();
    test_distribution();
    test_filters();
    test_penalty();
    test_seed();
    return hy_test_done("test-sampler");
}
