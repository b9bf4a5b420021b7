/* test-state.c: batched decode, state copy, export/import round trips, stats counters and max_ctx errors. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "engine/hymba.h"
#include "kernels/state_image.h"
#include "tests/randmodel.h"
#include "tests/testutil.h"

#define PATH_TOL 1e-5
#define STEPS 4
#define MAX_CTX 40

static double rel(const float *a, const float *b, int n)
{
    double d = 0, r = 0;
    for (int i = 0; i < n; i++) {
        d += ((double)a[i] - b[i]) * ((double)a[i] - b[i]);
        r += (double)b[i] * b[i];
    }
    return sqrt(d / (r > 0 ? r : 1));
}

static void report(const char *what, double e, double tol)
{
    printf("  %-58s rel err %.3e\n", what, e);
    CHECK(e <= tol, "%s: %.3e > %.0e", what, e, tol);
}

static uint64_t positions(hy_model *m)
{
    hy_backend_stats st;
    hy_model_stats(m, &st);
    return st.positions;
}

static hy_seq *seq_with(hy_model *m, const int32_t *ids, int n)
{
    hy_seq *s = NULL;
    hy_err err = {0};
    if (hy_seq_new(m, &s, &err) < 0 || (n > 0 && hy_seq_prefill(m, s, ids, n, NULL, &err) < 0)) {
        CHECK(0, "seq of %d tokens: %s", n, err.msg);
        hy_seq_free(s);
        return NULL;
    }
    return s;
}

/* B conversations at different lengths (inside, at and past the window) decoded together == alone. */
static void test_batch(hy_model *m, const int32_t *ids)
{
    static const int lens[] = {2, 5, 9, 17, 1};
    enum { B = 5 };
    int V = hy_model_arch(m)->vocab;
    hy_seq *batch[B], *alone[B];
    hy_err err = {0};
    double worst = 0;

    for (int b = 0; b < B; b++) {
        batch[b] = seq_with(m, ids + b, lens[b]);
        alone[b] = seq_with(m, ids + b, lens[b]);
        if (!batch[b] || !alone[b])
            return;
    }
    for (int step = 0; step < STEPS; step++) {
        int32_t tok[B];
        for (int b = 0; b < B; b++)
            tok[b] = ids[20 + b + step];
        uint64_t p0 = positions(m);
        CHECK(hy_seq_decode_batch(m, batch, tok, B, &err) == 0, "batched decode: %s", err.msg);
        CHECK(positions(m) - p0 == B, "batched decode of %d counted %llu positions", B,
              (unsigned long long)(positions(m) - p0));
        for (int b = 0; b < B; b++) {
            CHECK(hy_seq_decode_batch(m, &alone[b], &tok[b], 1, &err) == 0, "decode: %s", err.msg);
            double e = rel(hy_seq_logits(batch[b]), hy_seq_logits(alone[b]), V);
            if (e > worst)
                worst = e;
        }
    }
    report("batched decode (B=5, lengths 2,5,9,17,1) vs one by one", worst, PATH_TOL);
    /* the same state twice in one batch is refused */
    hy_seq *dup[2] = {batch[0], batch[0]};
    int32_t t2[2] = {5, 6};
    CHECK(hy_seq_decode_batch(m, dup, t2, 2, &err) < 0, "a batch with one state twice was accepted");
    printf("  duplicate state in a batch refused: %s\n", err.msg);
    for (int b = 0; b < B; b++) {
        hy_seq_free(batch[b]);
        hy_seq_free(alone[b]);
    }
}

/* export -> import into a fresh conversation -> continue == uninterrupted; no forward pass on import. */
static void test_image(hy_model *m, const int32_t *ids)
{
    int V = hy_model_arch(m)->vocab;
    hy_err err = {0};
    hy_seq *a = seq_with(m, ids, 13), *b = seq_with(m, NULL, 0), *c = seq_with(m, NULL, 0);
    if (!a || !b || !c)
        goto out;
    size_t n = hy_seq_state_size(m, a);
    uint8_t *img = malloc(n);
    CHECK(hy_seq_state_export(m, a, img, n, &err) == 0, "export: %s", err.msg);
    CHECK(hy_seq_state_export(m, a, img, n - 1, &err) < 0, "export into a short buffer accepted");

    uint64_t p0 = positions(m);
    CHECK(hy_seq_import(m, b, img, n, hy_seq_tokens(a), hy_seq_len(a), hy_seq_logits(a), &err) == 0,
          "import: %s", err.msg);
    CHECK(positions(m) == p0, "import ran %llu positions", (unsigned long long)(positions(m) - p0));
    CHECK(hy_seq_len(b) == 13, "imported len %lld", (long long)hy_seq_len(b));
    report("imported last logits vs original", rel(hy_seq_logits(b), hy_seq_logits(a), V), 0);

    /* a second export of the imported state is byte-identical */
    uint8_t *img2 = malloc(n);
    CHECK(hy_seq_state_size(m, b) == n && hy_seq_state_export(m, b, img2, n, &err) == 0 && memcmp(img, img2, n) == 0,
          "re-export of an imported state differs");

    /* continue both with a prefill and decodes */
    double worst = 0;
    hy_seq *pair[2] = {a, b};
    for (int k = 0; k < 2; k++) {
        if (hy_seq_prefill(m, pair[k], ids + 13, 6, NULL, &err) < 0)
            CHECK(0, "prefill after import: %s", err.msg);
    }
    worst = rel(hy_seq_logits(b), hy_seq_logits(a), V);
    for (int step = 0; step < STEPS; step++) {
        int32_t t[2] = {ids[30 + step], ids[30 + step]};
        CHECK(hy_seq_decode_batch(m, pair, t, 2, &err) == 0, "decode: %s", err.msg);
        double e = rel(hy_seq_logits(b), hy_seq_logits(a), V);
        worst = e > worst ? e : worst;
    }
    report("export/import then prefill 6 + 4 decodes vs uninterrupted", worst, PATH_TOL);

    /* a bf16 image (the CUDA backend's kv dtype) imports and continues closely */
    hy_state_image_hdr h;
    memcpy(&h, img, sizeof(h));
    const hy_arch *ar = hy_model_arch(m);
    size_t n16 = hy_state_image_bytes(ar, h.n_pos, HY_DT_BF16);
    uint8_t *i16 = malloc(n16);
    size_t fixed = sizeof(h) + (size_t)ar->n_layers * ar->d_inner * (ar->d_conv + ar->d_state) * 4;
    h.kv_dtype = HY_DT_BF16;
    memcpy(i16, &h, sizeof(h));
    memcpy(i16 + sizeof(h), img + sizeof(h), fixed - sizeof(h));
    size_t src = fixed, dst = fixed;
    for (int L = 0; L < ar->n_layers; L++) {
        if (ar->kv_src[L] != L)
            continue;
        uint32_t kept;
        memcpy(&kept, img + src, 4);
        memcpy(i16 + dst, &kept, 4);
        src += 4;
        dst += 4;
        size_t vals = (size_t)kept * ar->n_kv_heads * (ar->head_dim + ar->v_head_dim);
        for (size_t i = 0; i < vals; i++) {
            float f;
            uint32_t u;
            memcpy(&f, img + src + 4 * i, 4);
            memcpy(&u, &f, 4);
            uint16_t hb = (uint16_t)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
            memcpy(i16 + dst + 2 * i, &hb, 2);
        }
        src += 4 * vals;
        dst += 2 * vals;
    }
    CHECK(dst == n16 && src == n, "bf16 image layout: %zu/%zu, %zu/%zu", dst, n16, src, n);
    hy_seq_reset(m, c);
    CHECK(hy_seq_import(m, c, i16, n16, hy_seq_tokens(a), 13, NULL, &err) == 0, "bf16 import: %s", err.msg);
    CHECK(hy_seq_logits(c) == NULL, "import without logits has logits");
    hy_seq *ref = seq_with(m, ids, 13);
    if (ref) {
        hy_seq_prefill(m, ref, ids + 13, 3, NULL, &err);
        hy_seq_prefill(m, c, ids + 13, 3, NULL, &err);
        double e = rel(hy_seq_logits(c), hy_seq_logits(ref), V);
        report("bf16 K/V image import then prefill 3 (bf16 rounding only)", e, 2e-2);
        CHECK(e > 0, "bf16 image gave bit-identical results: K/V not read from the image?");
        hy_seq_free(ref);
    }

    /* corrupt images are refused without touching the state */
    uint64_t before = positions(m);
    uint8_t *bad = malloc(n);
    memcpy(bad, img, n);
    bad[0] ^= 1;
    CHECK(hy_seq_import(m, c, bad, n, hy_seq_tokens(a), 13, NULL, &err) < 0, "bad magic accepted");
    printf("  bad magic refused: %s\n", err.msg);
    CHECK(hy_seq_import(m, c, img, n - 3, hy_seq_tokens(a), 13, NULL, &err) < 0, "short image accepted");
    printf("  short image refused: %s\n", err.msg);
    CHECK(hy_seq_import(m, c, img, n, hy_seq_tokens(a), 12, NULL, &err) < 0, "history/position mismatch accepted");
    printf("  mismatched history refused: %s\n", err.msg);
    memcpy(bad, img, n);
    memcpy(&h, bad, sizeof(h));
    h.d_state++;
    memcpy(bad, &h, sizeof(h));
    CHECK(hy_seq_import(m, c, bad, n, hy_seq_tokens(a), 13, NULL, &err) < 0, "wrong shape accepted");
    printf("  wrong shape refused: %s\n", err.msg);
    CHECK(positions(m) == before, "a refused import ran a forward pass");
    free(bad);
    free(i16);
    free(img);
    free(img2);
out:
    hy_seq_free(a);
    hy_seq_free(b);
    hy_seq_free(c);
}

/* state copy: the copy and the original continue identically and independently. */
static void test_copy(hy_model *m, const int32_t *ids)
{
    int V = hy_model_arch(m)->vocab;
    hy_err err = {0};
    hy_seq *a = seq_with(m, ids, 11), *b = seq_with(m, ids + 3, 2), *r = seq_with(m, ids, 11);
    if (!a || !b || !r)
        goto out;
    CHECK(hy_seq_copy(m, b, a, &err) == 0, "copy: %s", err.msg);
    CHECK(hy_seq_len(b) == 11 && memcmp(hy_seq_tokens(b), ids, 11 * sizeof(int32_t)) == 0, "copy history wrong");
    /* diverge a, then run b the way r runs: b must not see a's new tokens */
    hy_seq_prefill(m, a, ids + 20, 4, NULL, &err);
    double worst = 0;
    for (int step = 0; step < STEPS + 3; step++) {
        hy_seq *pair[2] = {b, r};
        int32_t t[2] = {ids[11 + step], ids[11 + step]};
        CHECK(hy_seq_decode_batch(m, pair, t, 2, &err) == 0, "decode: %s", err.msg);
        double e = rel(hy_seq_logits(b), hy_seq_logits(r), V);
        worst = e > worst ? e : worst;
    }
    report("state copy then 7 decodes (crossing the window) vs original", worst, PATH_TOL);
    /* reset returns to the meta snapshot */
    hy_seq_reset(m, b);
    CHECK(hy_seq_len(b) == 0 && hy_seq_logits(b) == NULL, "reset kept history");
    hy_seq_prefill(m, b, ids, 11, NULL, &err);
    hy_seq_reset(m, r);
    hy_seq_prefill(m, r, ids, 11, NULL, &err);
    report("reset + prefill vs reset + prefill", rel(hy_seq_logits(b), hy_seq_logits(r), V), 0);
out:
    hy_seq_free(a);
    hy_seq_free(b);
    hy_seq_free(r);
}

/* stats.positions counts every row through the layers; max_ctx bounds a conversation. */
static void test_limits(hy_model *m, const int32_t *ids)
{
    hy_err err = {0};
    const hy_arch *a = hy_model_arch(m);
    hy_seq *s = seq_with(m, NULL, 0);
    if (!s)
        return;
    uint64_t p0 = positions(m);
    CHECK(hy_seq_prefill(m, s, ids, 30, NULL, &err) == 0, "prefill 30: %s", err.msg);
    CHECK(positions(m) - p0 == 30, "prefill of 30 counted %llu positions", (unsigned long long)(positions(m) - p0));
    int rc = hy_seq_prefill(m, s, ids, MAX_CTX - 30 + 1, NULL, &err);
    CHECK(rc == -ENOSPC, "prefill past max_ctx returned %d", rc);
    printf("  prefill past max_ctx: %s\n", err.msg);
    CHECK(hy_seq_len(s) == 30, "failed prefill changed the history");
    CHECK(hy_seq_prefill(m, s, ids, MAX_CTX - 30, NULL, &err) == 0, "prefill up to max_ctx: %s", err.msg);
    int32_t t = ids[0];
    rc = hy_seq_decode_batch(m, &s, &t, 1, &err);
    CHECK(rc == -ENOSPC, "decode past max_ctx returned %d", rc);
    printf("  decode past max_ctx: %s\n", err.msg);
    int32_t bad = a->vocab;
    CHECK(hy_seq_decode_batch(m, &s, &bad, 1, &err) < 0, "token id == vocab accepted");
    hy_seq_reset(m, s);
    CHECK(hy_seq_prefill(m, s, &bad, 1, NULL, &err) < 0, "token id == vocab accepted by prefill");
    printf("  bad token refused: %s\n", err.msg);
    hy_seq_free(s);
}

int main(void)
{
    rm_cfg c = {.vocab = 290, .hidden = 48, .layers = 6, .heads = 6, .kv_heads = 3, .inter = 64,
                .window = 5, .n_meta = 4, .d_state = 8, .d_conv = 4, .dt_rank = 6, .expand = 2,
                .kv_src = {0, 1, 1, 1, 4, 4}, .is_global = {1, 0, 0, 0, 1, 1},
                .dtype = HY_ST_BF16, .seed = 5};
    char *dir = hy_test_tmpdir();
    rm_model rm;
    hy_err err = {0};
    hy_model *m = NULL;
    int32_t ids[64];

    if (!dir || rm_write(dir, &c, &rm) < 0) {
        printf("cannot write a random checkpoint\n");
        return 1;
    }
    rm_tokens(99, c.vocab, ids, 64);
    hy_load_opts o = {.backend = "cpu", .max_ctx = MAX_CTX, .prefill_chunk = 7};
    if (hy_model_load(dir, &o, &m, &err) < 0) {
        printf("load: %s\n", err.msg);
        return 1;
    }
    CHECK(positions(m) == (uint64_t)c.n_meta, "model load ran %llu positions, expected the %d meta rows",
          (unsigned long long)positions(m), c.n_meta);
    printf("state tests: vocab %d layers %d window %d meta %d max_ctx %d\n", c.vocab, c.layers, c.window, c.n_meta,
           MAX_CTX);
    test_batch(m, ids);
    test_image(m, ids);
    test_copy(m, ids);
    test_limits(m, ids);
    hy_model_free(m);
    rm_free(&rm);
    hy_test_rmtree(dir);
    free(dir);
    return hy_test_done("test-state");
}
