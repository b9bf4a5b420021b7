/* test-golden.c: the CPU backend reproduces every ../shared/golden case (float64 reference) within 1e-4. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "engine/hymba.h"
#include "engine/safetensors.h"
#include "kernels/cpu/cpu_debug.h"
#include "kernels/state_image.h"
#include "tests/testutil.h"

/* ||ours - ref|| / ||ref|| over every element: the agreement measure. */
#define REL_TOL 1e-4
/* Rows whose reference top-1/top-2 margin is at least this must agree on argmax. */
#define ARGMAX_MARGIN 1e-3
#define GREEDY_STEPS 24
#define DECODE_STEPS 8

/* Residual stream captured by the layer hook: hidden[L + 1][pos][H] for pos < S. */
typedef struct capture {
    int n_layers, S, H;
    float **hidden;
} capture;

static void capture_hook(void *user, int layer, const int64_t *pos, int n, int hidden, const float *x)
{
    capture *c = user;
    if (!c->hidden || hidden != c->H || layer + 1 > c->n_layers)
        return;
    for (int r = 0; r < n; r++)
        if (pos[r] >= 0 && pos[r] < c->S)
            memcpy(c->hidden[layer + 1] + pos[r] * c->H, x + (size_t)r * hidden, (size_t)hidden * sizeof(float));
}

static double rel_err(const float *ours, const float *ref, size_t n)
{
    double d = 0, r = 0;
    for (size_t i = 0; i < n; i++) {
        double e = (double)ours[i] - ref[i];
        d += e * e;
        r += (double)ref[i] * ref[i];
    }
    return r > 0 ? sqrt(d / r) : sqrt(d);
}

static const hy_st_tensor *need(const hy_st_file *g, const char *name, hy_st_dtype dt, size_t elems)
{
    const hy_st_tensor *t = hy_st_find(g, name);
    size_t n = 1;
    if (!t) {
        CHECK(0, "golden tensor %s missing", name);
        return NULL;
    }
    for (int i = 0; i < t->ndim; i++)
        n *= (size_t)t->shape[i];
    CHECK(t->dtype == dt, "golden tensor %s dtype %d", name, (int)t->dtype);
    if (elems && n != elems) {
        CHECK(0, "golden tensor %s has %zu elements, expected %zu", name, n, elems);
        return NULL;
    }
    return t->dtype == dt ? t : NULL;
}

static void check_rel(const char *cs, const char *what, const float *ours, const float *ref, size_t n)
{
    double e = rel_err(ours, ref, n);
    printf("  %-9s %-22s rel err %.3e\n", cs, what, e);
    CHECK(e <= REL_TOL, "%s %s: rel err %.3e > %.0e", cs, what, e, REL_TOL);
}

static hy_model *load(const char *dir, bool ref_window, hy_err *err)
{
    hy_load_opts o = {.backend = "cpu", .threads = 0};
    hy_model *m = NULL;
    o.num.ref_decode_window = ref_window;
    if (hy_model_load(dir, &o, &m, err) < 0)
        return NULL;
    return m;
}

/* Prefill ids[:T-8], decode the last 8 one by one; out: [8][vocab]. */
static int decode_tail(hy_model *m, const int32_t *ids, int T, float *out, hy_err *err)
{
    hy_seq *s;
    int vocab = hy_model_arch(m)->vocab, rc;
    if ((rc = hy_seq_new(m, &s, err)) < 0)
        return rc;
    rc = hy_seq_prefill(m, s, ids, T - DECODE_STEPS, NULL, err);
    for (int j = 0; rc == 0 && j < DECODE_STEPS; j++) {
        rc = hy_seq_decode_batch(m, &s, &ids[T - DECODE_STEPS + j], 1, err);
        if (rc == 0)
            memcpy(out + (size_t)j * vocab, hy_seq_logits(s), (size_t)vocab * sizeof(float));
    }
    hy_seq_free(s);
    return rc;
}

static void run_case(const char *shared, const char *cs)
{
    char dir[4096], path[4200];
    hy_err err = {0};
    hy_st_file *g = NULL;
    capture cap = {0};

    snprintf(dir, sizeof(dir), "%s/golden/%s", shared, cs);
    snprintf(path, sizeof(path), "%s/golden.safetensors", dir);
    if (hy_st_open(path, &g, &err) < 0) {
        CHECK(0, "%s: %s", cs, err.msg);
        return;
    }
    const hy_st_tensor *ids_t = need(g, "input_ids", HY_ST_I32, 0);
    if (!ids_t)
        goto out_g;
    int T = (int)ids_t->shape[0];
    int32_t *ids = malloc((size_t)T * sizeof(int32_t));
    memcpy(ids, ids_t->data, (size_t)T * sizeof(int32_t));

    /* the hook must see the meta rows, which model_new computes */
    hy_model *probe = load(dir, false, &err);
    if (!probe) {
        CHECK(0, "%s: load: %s", cs, err.msg);
        free(ids);
        goto out_g;
    }
    const hy_arch *a0 = hy_model_arch(probe);
    cap.n_layers = a0->n_layers + 1;
    cap.H = a0->hidden;
    cap.S = a0->n_meta + T;
    hy_model_free(probe);
    cap.hidden = calloc((size_t)cap.n_layers, sizeof(float *));
    for (int L = 0; L < cap.n_layers; L++)
        cap.hidden[L] = calloc((size_t)cap.S * cap.H, sizeof(float));
    hy_cpu_set_layer_hook(capture_hook, &cap);

    hy_model *m = load(dir, false, &err);
    CHECK(m != NULL, "%s: load: %s", cs, err.msg);
    if (!m)
        goto out_cap;
    const hy_arch *a = hy_model_arch(m);
    int vocab = a->vocab, S = cap.S;
    printf("%s: T=%d M=%d layers=%d window=%d vocab=%d kernels=%s\n", cs, T, a->n_meta, a->n_layers,
           a->window, vocab, hy_cpu_kernel_isa());

    /* full prefill */
    float *logits = malloc((size_t)T * vocab * sizeof(float));
    hy_seq *s = NULL;
    int rc = hy_seq_new(m, &s, &err);
    if (rc == 0)
        rc = hy_seq_prefill(m, s, ids, T, logits, &err);
    CHECK(rc == 0, "%s: prefill: %s", cs, err.msg);
    hy_cpu_set_layer_hook(NULL, NULL);
    if (rc < 0)
        goto out_m;

    const hy_st_tensor *lt = hy_st_find(g, "logits");
    int tail0 = 0;
    if (lt) {
        lt = need(g, "logits", HY_ST_F32, (size_t)T * vocab);
    } else {
        lt = need(g, "logits_tail", HY_ST_F32, 0);
        if (lt)
            tail0 = T - (int)lt->shape[0];
    }
    if (lt)
        check_rel(cs, lt == hy_st_find(g, "logits") ? "logits" : "logits_tail",
                  logits + (size_t)tail0 * vocab, lt->data, (size_t)(T - tail0) * vocab);

    /* hidden states (meta rows included) */
    const hy_st_tensor *hi = need(g, "hidden_in", HY_ST_F32, (size_t)S * a->hidden);
    if (hi)
        check_rel(cs, "hidden_in", cap.hidden[0], hi->data, (size_t)S * a->hidden);
    for (int L = 0; L < a->n_layers; L++) {
        char name[64];
        snprintf(name, sizeof(name), "hidden_L%d", L);
        const hy_st_tensor *hl = need(g, name, HY_ST_F32, (size_t)S * a->hidden);
        if (hl)
            check_rel(cs, name, cap.hidden[L + 1], hl->data, (size_t)S * a->hidden);
    }

    /* conv / SSM state after the prefill, read from the canonical image */
    size_t isz = hy_seq_state_size(m, s);
    uint8_t *img = malloc(isz);
    rc = hy_seq_state_export(m, s, img, isz, &err);
    CHECK(rc == 0, "%s: export: %s", cs, err.msg);
    if (rc == 0) {
        hy_state_image_hdr h;
        memcpy(&h, img, sizeof(h));
        CHECK(h.n_pos == S, "%s: image n_pos %lld, expected %d", cs, (long long)h.n_pos, S);
        const float *p = (const float *)(img + sizeof(h));
        for (int L = 0; L < a->n_layers; L++) {
            char name[64];
            size_t cn = (size_t)a->d_inner * a->d_conv, sn = (size_t)a->d_inner * a->d_state;
            snprintf(name, sizeof(name), "conv_state_L%d", L);
            const hy_st_tensor *ct = need(g, name, HY_ST_F32, cn);
            if (ct)
                check_rel(cs, name, p, ct->data, cn);
            p += cn;
            snprintf(name, sizeof(name), "ssm_state_L%d", L);
            const hy_st_tensor *st = need(g, name, HY_ST_F32, sn);
            if (st)
                check_rel(cs, name, p, st->data, sn);
            p += sn;
        }
    }
    free(img);

    /* argmax on rows with a clear margin */
    const hy_st_tensor *am = need(g, "argmax_ids", HY_ST_I32, (size_t)T);
    const hy_st_tensor *mg = need(g, "argmax_margin", HY_ST_F32, (size_t)T);
    if (am && mg) {
        int checked = 0, agree = 0;
        for (int t = 0; t < T; t++) {
            int ours = hy_argmax(logits + (size_t)t * vocab, vocab);
            agree += ours == ((const int32_t *)am->data)[t];
            if (((const float *)mg->data)[t] < ARGMAX_MARGIN)
                continue;
            checked++;
            CHECK(ours == ((const int32_t *)am->data)[t], "%s: row %d argmax %d, reference %d (margin %.2e)", cs, t,
                  ours, ((const int32_t *)am->data)[t], ((const float *)mg->data)[t]);
        }
        printf("  %-9s argmax                 %d/%d rows agree (%d rows with margin >= %.0e checked)\n", cs, agree,
               T, checked, ARGMAX_MARGIN);
    }

    /* greedy continuation: prefill + decode steps */
    const hy_st_tensor *gi = need(g, "greedy_ids", HY_ST_I32, 0);
    if (gi) {
        int n = (int)gi->shape[0], match = 0;
        for (int k = 0; k < n; k++) {
            int32_t next = hy_argmax(hy_seq_logits(s), vocab);
            match += next == ((const int32_t *)gi->data)[k];
            CHECK(next == ((const int32_t *)gi->data)[k], "%s: greedy step %d: %d, reference %d", cs, k, next,
                  ((const int32_t *)gi->data)[k]);
            if (k + 1 < n && hy_seq_decode_batch(m, &s, &next, 1, &err) < 0) {
                CHECK(0, "%s: greedy decode: %s", cs, err.msg);
                break;
            }
        }
        printf("  %-9s greedy_ids             %d/%d equal\n", cs, match, n);
    }

    /* prefill T-8, then 8 decode steps: full-sequence rows (default window) */
    float *dec = malloc((size_t)DECODE_STEPS * vocab * sizeof(float));
    if (decode_tail(m, ids, T, dec, &err) < 0)
        CHECK(0, "%s: decode tail: %s", cs, err.msg);
    else
        check_rel(cs, "decode vs logits", dec, logits + (size_t)(T - DECODE_STEPS) * vocab,
                  (size_t)DECODE_STEPS * vocab);

    /* the same kernels in portable C */
    hy_cpu_force_portable(true);
    float *plog = malloc((size_t)T * vocab * sizeof(float));
    hy_seq *ps = NULL;
    if (hy_seq_new(m, &ps, &err) < 0 || hy_seq_prefill(m, ps, ids, T, plog, &err) < 0)
        CHECK(0, "%s: portable prefill: %s", cs, err.msg);
    else if (lt)
        check_rel(cs, "logits (portable C)", plog + (size_t)tail0 * vocab, lt->data, (size_t)(T - tail0) * vocab);
    hy_seq_free(ps);
    free(plog);
    hy_cpu_force_portable(false);

    /* reference cached-decode window: decode_logits */
    const hy_st_tensor *dl = need(g, "decode_logits", HY_ST_F32, (size_t)DECODE_STEPS * vocab);
    hy_model *mr = load(dir, true, &err);
    CHECK(mr != NULL, "%s: load (ref window): %s", cs, err.msg);
    if (mr && dl) {
        if (decode_tail(mr, ids, T, dec, &err) < 0)
            CHECK(0, "%s: decode tail (ref window): %s", cs, err.msg);
        else
            check_rel(cs, "decode_logits (refwin)", dec, dl->data, (size_t)DECODE_STEPS * vocab);
    }
    hy_model_free(mr);
    free(dec);
out_m:
    hy_seq_free(s);
    free(logits);
    hy_model_free(m);
out_cap:
    hy_cpu_set_layer_hook(NULL, NULL);
    for (int L = 0; L < cap.n_layers; L++)
        free(cap.hidden[L]);
    free(cap.hidden);
    free(ids);
out_g:
    hy_st_close(g);
}

int main(void)
{
    const char *shared = hy_test_shared_dir();
    if (!shared)
        return HY_TEST_SKIP;
    run_case(shared, "tiny-fp32");
    run_case(shared, "tiny-bf16");
    return hy_test_done("test-golden");
}
