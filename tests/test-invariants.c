/* test-invariants.c: prefill == prefill + decode == chunked prefills == float64 full forward, on random odd checkpoints. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "engine/hymba.h"
#include "kernels/cpu/cpu_debug.h"
#include "tests/randmodel.h"
#include "tests/testutil.h"

/* Engine paths differ only by fp32 reassociation. */
#define PATH_TOL 1e-5
/* fp32 engine vs the float64 reference (the golden criterion). */
#define REF_TOL 1e-4

/* max over rows of ||a_r - b_r|| / ||b_r|| */
static double row_err(const float *a, const float *b, int rows, int vocab)
{
    double worst = 0;
    for (int r = 0; r < rows; r++) {
        double d = 0, n = 0;
        for (int v = 0; v < vocab; v++) {
            double e = (double)a[(size_t)r * vocab + v] - b[(size_t)r * vocab + v];
            d += e * e;
            n += (double)b[(size_t)r * vocab + v] * b[(size_t)r * vocab + v];
        }
        double rel = sqrt(d / (n > 0 ? n : 1));
        if (rel > worst)
            worst = rel;
    }
    return worst;
}

static void report(const char *cfg, const char *what, double e, double tol)
{
    printf("  %-10s %-44s max row rel err %.3e\n", cfg, what, e);
    CHECK(e <= tol, "%s %s: %.3e > %.0e", cfg, what, e, tol);
}

static hy_model *load_threads(const char *dir, int chunk, bool refwin, int threads)
{
    hy_load_opts o = {.backend = "cpu", .prefill_chunk = chunk, .max_ctx = 4096, .threads = threads};
    hy_model *m = NULL;
    hy_err err = {0};
    o.num.ref_decode_window = refwin;
    if (hy_model_load(dir, &o, &m, &err) < 0) {
        CHECK(0, "load %s: %s", dir, err.msg);
        return NULL;
    }
    return m;
}

static hy_model *load(const char *dir, int chunk, bool refwin)
{
    return load_threads(dir, chunk, refwin, 0);
}

static void run_config(const char *label, const rm_cfg *c, int T, int k)
{
    char *dir = hy_test_tmpdir();
    rm_model rm;
    hy_err err = {0};
    int V = c->vocab;

    if (!dir || rm_write(dir, c, &rm) < 0) {
        CHECK(0, "%s: cannot write the random checkpoint", label);
        free(dir);
        return;
    }
    int32_t *ids = malloc((size_t)T * sizeof(int32_t));
    rm_tokens(c->seed + 7, V, ids, T);
    float *full = malloc((size_t)T * V * sizeof(float)), *b = malloc((size_t)T * V * sizeof(float));
    double *ref = malloc((size_t)T * V * sizeof(double));
    float *reff = malloc((size_t)T * V * sizeof(float));
    printf("%s: vocab %d hidden %d layers %d heads %d/%d window %d meta %d, T=%d, %s weights\n", label, V,
           c->hidden, c->layers, c->heads, c->kv_heads, c->window, c->n_meta, T,
           c->dtype == HY_ST_BF16 ? "bf16" : c->dtype == HY_ST_F16 ? "f16" : "f32");

    hy_model *m = load(dir, 4096, false);
    if (!m)
        goto out;
    hy_seq *s = NULL;

    /* 1. one prefill of T tokens (one chunk) */
    if (hy_seq_new(m, &s, &err) < 0 || hy_seq_prefill(m, s, ids, T, full, &err) < 0) {
        CHECK(0, "%s: prefill: %s", label, err.msg);
        goto out_m;
    }
    /* 2. the float64 full-sequence forward */
    rm_forward(&rm, ids, T, -1, ref);
    for (size_t i = 0; i < (size_t)T * V; i++)
        reff[i] = (float)ref[i];
    report(label, "prefill(T) vs float64 full forward", row_err(full, reff, T, V), REF_TOL);

    /* 3. prefill(T-k) + k decode steps */
    hy_seq_reset(m, s);
    if (hy_seq_prefill(m, s, ids, T - k, b, &err) < 0) {
        CHECK(0, "%s: prefill: %s", label, err.msg);
        goto out_s;
    }
    for (int j = 0; j < k; j++) {
        if (hy_seq_decode_batch(m, &s, &ids[T - k + j], 1, &err) < 0) {
            CHECK(0, "%s: decode: %s", label, err.msg);
            goto out_s;
        }
        memcpy(b + (size_t)(T - k + j) * V, hy_seq_logits(s), (size_t)V * sizeof(float));
    }
    report(label, "prefill(T-k) + k decodes vs prefill(T)", row_err(b, full, T, V), PATH_TOL);

    /* 4. several uneven prefill calls */
    static const int sizes[] = {1, 4, 7, 2, 11, 3, 5, 9, 6, 13};
    hy_seq_reset(m, s);
    for (int done = 0, i = 0; done < T; i++) {
        int n = sizes[i % 10] < T - done ? sizes[i % 10] : T - done;
        if (hy_seq_prefill(m, s, ids + done, n, b + (size_t)done * V, &err) < 0) {
            CHECK(0, "%s: chunked prefill: %s", label, err.msg);
            goto out_s;
        }
        done += n;
    }
    report(label, "uneven prefill calls (1,4,7,2,11,...) vs prefill(T)", row_err(b, full, T, V), PATH_TOL);
    CHECK(hy_seq_len(s) == T, "%s: seq len %lld", label, (long long)hy_seq_len(s));

    /* 5. the model's own chunking (prefill_chunk 5) */
    hy_model *m5 = load(dir, 5, false);
    if (m5) {
        hy_seq *s5 = NULL;
        if (hy_seq_new(m5, &s5, &err) < 0 || hy_seq_prefill(m5, s5, ids, T, b, &err) < 0)
            CHECK(0, "%s: prefill_chunk 5: %s", label, err.msg);
        else
            report(label, "prefill_chunk=5 vs prefill(T)", row_err(b, full, T, V), PATH_TOL);
        /* last-row logits without logits_all */
        hy_seq_reset(m5, s5);
        if (hy_seq_prefill(m5, s5, ids, T, NULL, &err) == 0)
            report(label, "last logits (no logits_all) vs prefill(T)",
                   row_err(hy_seq_logits(s5), full + (size_t)(T - 1) * V, 1, V), PATH_TOL);
        hy_seq_free(s5);
        hy_model_free(m5);
    }

    /* 6. thread counts: 1 and 3 threads give the same logits (prefill and decode) */
    for (int th = 1; th <= 3; th += 2) {
        hy_model *mt = load_threads(dir, 4096, false, th);
        hy_seq *st = NULL;
        if (!mt)
            continue;
        if (hy_seq_new(mt, &st, &err) == 0 && hy_seq_prefill(mt, st, ids, T - k, b, &err) == 0) {
            for (int j = 0; j < k && hy_seq_decode_batch(mt, &st, &ids[T - k + j], 1, &err) == 0; j++)
                memcpy(b + (size_t)(T - k + j) * V, hy_seq_logits(st), (size_t)V * sizeof(float));
            char what[64];
            snprintf(what, sizeof(what), "%d thread(s): prefill(T-k) + k decodes", th);
            report(label, what, row_err(b, full, T, V), PATH_TOL);
        } else {
            CHECK(0, "%s: %d threads: %s", label, th, err.msg);
        }
        hy_seq_free(st);
        hy_model_free(mt);
    }

    /* 7. portable C kernels give the same logits */
    hy_cpu_force_portable(true);
    hy_seq_reset(m, s);
    if (hy_seq_prefill(m, s, ids, T, b, &err) == 0)
        report(label, "portable C kernels vs AVX2 kernels", row_err(b, full, T, V), PATH_TOL);
    hy_cpu_force_portable(false);

    /* 8. reference decode window: prefill(T-k) + k decodes vs float64 with the W-key rule */
    hy_model *mr = load(dir, 4096, true);
    if (mr) {
        hy_seq *sr = NULL;
        if (hy_seq_new(mr, &sr, &err) == 0 && hy_seq_prefill(mr, sr, ids, T - k, b, &err) == 0) {
            for (int j = 0; j < k && hy_seq_decode_batch(mr, &sr, &ids[T - k + j], 1, &err) == 0; j++)
                memcpy(b + (size_t)(T - k + j) * V, hy_seq_logits(sr), (size_t)V * sizeof(float));
            rm_forward(&rm, ids, T, T - k, ref);
            for (size_t i = 0; i < (size_t)T * V; i++)
                reff[i] = (float)ref[i];
            report(label, "ref decode window vs float64 (W keys on decode)", row_err(b, reff, T, V), REF_TOL);
            double diff = row_err(b + (size_t)(T - k) * V, full + (size_t)(T - k) * V, k, V);
            printf("  %-10s (ref decode window differs from the default by %.3e)\n", label, diff);
            CHECK(diff > 10 * PATH_TOL, "%s: the reference window changed nothing (%.3e)", label, diff);
        } else {
            CHECK(0, "%s: ref window: %s", label, err.msg);
        }
        hy_seq_free(sr);
        hy_model_free(mr);
    }
out_s:
    hy_seq_free(s);
out_m:
    hy_model_free(m);
out:
    rm_free(&rm);
    free(ids);
    free(full);
    free(b);
    free(ref);
    free(reff);
    hy_test_rmtree(dir);
    free(dir);
}

int main(void)
{
    /* A: f32, GQA 6/2, groups of 3 and 2 between two global layers, window 5, 3 meta rows */
    rm_cfg a = {.vocab = 300, .hidden = 48, .layers = 7, .heads = 6, .kv_heads = 2, .inter = 80,
                .window = 5, .n_meta = 3, .d_state = 8, .d_conv = 4, .dt_rank = 5, .expand = 2,
                .kv_src = {0, 1, 1, 1, 4, 4, 6}, .is_global = {1, 0, 0, 0, 0, 0, 1},
                .dtype = HY_ST_F32, .seed = 11};
    /* B: bf16, one KV head, SWA groups right after the global layer 0, window 3, 5 meta rows */
    rm_cfg b = {.vocab = 301, .hidden = 40, .layers = 6, .heads = 4, .kv_heads = 1, .inter = 72,
                .window = 3, .n_meta = 5, .d_state = 16, .d_conv = 4, .dt_rank = 3, .expand = 2,
                .kv_src = {0, 1, 1, 3, 3, 3}, .is_global = {1, 0, 0, 0, 0, 0},
                .dtype = HY_ST_BF16, .seed = 22};
    /* C: f16, no GQA, every layer owns K/V, only SWA layers, window 6, 1 meta row */
    rm_cfg c = {.vocab = 263, .hidden = 36, .layers = 3, .heads = 3, .kv_heads = 3, .inter = 50,
                .window = 6, .n_meta = 1, .d_state = 4, .d_conv = 4, .dt_rank = 7, .expand = 2,
                .kv_src = {0, 1, 2}, .is_global = {0, 0, 0},
                .dtype = HY_ST_F16, .seed = 33};
    /* D: no meta tokens, d_conv 3, a global group of two, window 4, no RMSNorms of dt, B, C */
    rm_cfg d = {.vocab = 257, .hidden = 32, .layers = 4, .heads = 4, .kv_heads = 2, .inter = 40,
                .window = 4, .n_meta = 0, .d_state = 5, .d_conv = 3, .dt_rank = 4, .expand = 2,
                .kv_src = {0, 0, 2, 2}, .is_global = {1, 1, 0, 0},
                .dtype = HY_ST_F32, .seed = 44, .no_inner_norms = 1};
    run_config("A/f32", &a, 29, 9);
    run_config("B/bf16", &b, 23, 7);
    run_config("C/f16", &c, 31, 12);
    run_config("D/nometa", &d, 17, 6);
    return hy_test_done("test-invariants");
}
