/* test-mkmodel.c: hymba-mkmodel is deterministic, initializes like the reference, and writes valid tokenizer files. */
#include "engine/model_internal.h"
#include "tests/testutil.h"

#include <math.h>
#include <string.h>
#include <sys/wait.h>
#include <json-c/json.h>

static char *tmp_dir;
static const char *mkmodel_bin;

/* Run hymba-mkmodel with args; returns its exit status. */
static int mkmodel(const char *args)
{
    char cmd[16384];
    int st;

    snprintf(cmd, sizeof(cmd), "%s -q %s >/dev/null 2>&1", mkmodel_bin, args);
    st = system(cmd);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static char *slurp(const char *path, size_t *len)
{
    FILE *fp = fopen(path, "rb");
    char *buf;
    long n;

    if (!fp)
        return NULL;
    fseek(fp, 0, SEEK_END);
    n = ftell(fp);
    fseek(fp, 0, SEEK_SET);
    buf = malloc((size_t)n + 1);
    if (fread(buf, 1, (size_t)n, fp) != (size_t)n)
        n = 0;
    buf[n] = 0;
    fclose(fp);
    *len = (size_t)n;
    return buf;
}

static bool same_file(const char *a, const char *b)
{
    size_t la, lb;
    char *x = slurp(a, &la), *y = slurp(b, &lb);
    bool same = x && y && la == lb && memcmp(x, y, la) == 0;
    free(x);
    free(y);
    return same;
}

/* Same content up to trailing whitespace (HF files may lack the final newline). */
static bool same_text(const char *a, const char *b)
{
    size_t la, lb;
    char *x = slurp(a, &la), *y = slurp(b, &lb);
    bool same;
    while (x && la && (x[la - 1] == '\n' || x[la - 1] == ' '))
        la--;
    while (y && lb && (y[lb - 1] == '\n' || y[lb - 1] == ' '))
        lb--;
    same = x && y && la == lb && memcmp(x, y, la) == 0;
    free(x);
    free(y);
    return same;
}

static void path_of(char *buf, size_t cap, const char *dir, const char *file)
{
    snprintf(buf, cap, "%s/%s/%s", tmp_dir, dir, file);
}

static void test_determinism(void)
{
    char a[4200], b[4200];

    CHECK(mkmodel("--seed 5 --threads 1 \"$T/s5a\"") == 0, "mkmodel s5a");
    CHECK(mkmodel("--seed 5 --threads 2 \"$T/s5b\"") == 0, "mkmodel s5b");
    CHECK(mkmodel("--seed 6 \"$T/s6\"") == 0, "mkmodel s6");
    path_of(a, sizeof(a), "s5a", "model.safetensors");
    path_of(b, sizeof(b), "s5b", "model.safetensors");
    CHECK(same_file(a, b), "same seed, different bytes (threads 1 vs 2)");
    path_of(b, sizeof(b), "s6", "model.safetensors");
    CHECK(!same_file(a, b), "seeds 5 and 6 wrote the same weights");
    path_of(a, sizeof(a), "s5a", "tokenizer.json");
    path_of(b, sizeof(b), "s6", "tokenizer.json");
    CHECK(same_file(a, b), "tokenizer depends on the seed");
}

/* Mean and standard deviation of a bound tensor (rows [r0, r1) of a 2-D one, or all). */
static void stats(const hy_tensor *t, int64_t r0, int64_t r1, double *mean, double *sd)
{
    int64_t cols = t->ndim == 2 ? t->shape[1] : 1, n = 0;
    double s = 0, s2 = 0;

    for (int64_t i = r0 * cols; i < r1 * cols; i++) {
        double v = t->dt == HY_DT_F32 ? ((const float *)t->data)[i]
                                      : hy_bf16_to_f32(((const uint16_t *)t->data)[i]);
        s += v;
        s2 += v * v;
        n++;
    }
    *mean = s / (double)n;
    *sd = sqrt(s2 / (double)n - *mean * *mean);
}

static double elem(const hy_tensor *t, int64_t i)
{
    return t->dt == HY_DT_F32 ? ((const float *)t->data)[i]
                              : hy_bf16_to_f32(((const uint16_t *)t->data)[i]);
}

static void check_init(const char *dir, hy_dtype dt)
{
    hy_model m;
    hy_err err = { 0 };
    double mean, sd;

    memset(&m, 0, sizeof(m));
    if (hy_weights_open(&m, dir, &err) < 0) {
        CHECK(0, "%s: %s", dir, err.msg);
        return;
    }
    const hy_arch *a = &m.arch;
    const hy_layer_weights *L1 = &m.layers[1];
    CHECK(m.w.embed.dt == dt && L1->A_log.dt == dt, "dtype");
    stats(&L1->in_proj, 0, L1->in_proj.shape[0], &mean, &sd);
    CHECK(fabs(mean) < 0.002 && fabs(sd - 0.02) < 0.001, "in_proj N(0,0.02): %g %g", mean, sd);
    stats(&m.layers[3].down, 0, m.layers[3].down.shape[0], &mean, &sd);
    CHECK(fabs(mean) < 0.002 && fabs(sd - 0.02) < 0.001, "down N(0,0.02): %g %g", mean, sd);
    stats(&m.w.embed, 1, a->vocab, &mean, &sd);
    CHECK(fabs(mean) < 0.002 && fabs(sd - 0.02) < 0.001, "embed N(0,0.02): %g %g", mean, sd);
    stats(&m.w.embed, 0, 1, &mean, &sd);
    CHECK(mean == 0 && sd == 0, "pad row (0) not zero");
    stats(&m.w.memory_tokens, 0, a->n_meta, &mean, &sd);
    CHECK(fabs(mean) < 0.1 && fabs(sd - 1) < 0.06, "memory tokens N(0,1): %g %g", mean, sd);
    stats(&L1->conv_w, 0, a->d_inner * a->d_conv, &mean, &sd);   /* 3-D: all elements */
    CHECK(fabs(mean) < 0.003 && fabs(sd - 0.02) < 0.003, "conv N(0,0.02): %g %g", mean, sd);
    double lsum = 0;
    bool ok_alog = true, ok_ones = true, ok_zero = true, ok_dt = true;
    for (int64_t c = 0; c < a->d_inner; c++) {
        for (int s = 0; s < a->d_state; s++)
            ok_alog &= fabs(elem(&L1->A_log, c * a->d_state + s) - log(s + 1.0)) < 0.01;
        ok_ones &= elem(&L1->D, c) == 1 && elem(&L1->pre_avg1, c) == 1 &&
                   elem(&L1->pre_avg2, c) == 1;
        ok_zero &= elem(&L1->conv_b, c) == 0;
        double b = elem(&L1->dt_proj_b, c), dtv = log1p(exp(b));
        ok_dt &= dtv > 0.9e-3 && dtv < 1.1e-1;
        lsum += log(dtv);
    }
    for (int64_t i = 0; i < a->hidden; i++)
        ok_ones &= elem(&L1->input_norm, i) == 1 && elem(&m.w.final_norm, i) == 1;
    CHECK(ok_alog, "A_log != log(1..N)");
    CHECK(ok_ones, "D / norm weights != 1");
    CHECK(ok_zero, "conv bias != 0");
    CHECK(ok_dt, "softplus(dt bias) outside [1e-3, 1e-1]");
    /* log dt uniform on [ln 1e-3, ln 1e-1]: mean ln 1e-2, sd 1.33/sqrt(d_inner). */
    CHECK(fabs(lsum / a->d_inner - log(1e-2)) < 0.5, "mean log dt %g", lsum / a->d_inner);
    hy_weights_close(&m);
}

static void test_init(void)
{
    char dir[4200];

    CHECK(mkmodel("--seed 11 \"$T/bf16\"") == 0, "mkmodel bf16");
    snprintf(dir, sizeof(dir), "%s/bf16", tmp_dir);
    check_init(dir, HY_DT_BF16);
    CHECK(mkmodel("--seed 11 --dtype f32 \"$T/f32\"") == 0, "mkmodel f32");
    snprintf(dir, sizeof(dir), "%s/f32", tmp_dir);
    check_init(dir, HY_DT_F32);
}

/* --config with tie_word_embeddings false writes a separate lm_head. */
static void test_untied(void)
{
    char cfg[4200], dir[4200];
    hy_model m;
    hy_err err = { 0 };
    double mean, sd;

    CHECK(mkmodel("--no-weights \"$T/cfgsrc\"") == 0, "mkmodel --no-weights");
    path_of(cfg, sizeof(cfg), "cfgsrc", "config.json");
    json_object *o = json_object_from_file(cfg);
    json_object_object_add(o, "tie_word_embeddings", json_object_new_boolean(0));
    json_object_to_file(cfg, o);
    json_object_put(o);
    CHECK(mkmodel("--config \"$T/cfgsrc/config.json\" \"$T/untied\"") == 0, "mkmodel untied");
    snprintf(dir, sizeof(dir), "%s/untied", tmp_dir);
    memset(&m, 0, sizeof(m));
    CHECK(hy_weights_open(&m, dir, &err) == 0, "untied: %s", err.msg);
    if (m.layers) {
        CHECK(m.w.lm_head.data && m.w.lm_head.data != m.w.embed.data, "lm_head not separate");
        stats(&m.w.lm_head, 0, m.arch.vocab, &mean, &sd);
        CHECK(fabs(mean) < 0.002 && fabs(sd - 0.02) < 0.001, "lm_head N(0,0.02): %g %g", mean, sd);
        CHECK(!m.cfg.tie_word_embeddings, "config says tied");
    }
    hy_weights_close(&m);
}

static json_object *get(json_object *o, const char *k)
{
    json_object *v = NULL;
    json_object_object_get_ex(o, k, &v);
    return v;
}

static void check_tokenizer(const char *dir, int vocab_size)
{
    char p[4200];
    json_object *tok, *model, *vocab, *merges, *cfg;

    snprintf(p, sizeof(p), "%s/tokenizer.json", dir);
    tok = json_object_from_file(p);
    CHECK(tok != NULL, "tokenizer.json does not parse");
    if (!tok)
        return;
    model = get(tok, "model");
    vocab = get(model, "vocab");
    merges = get(model, "merges");
    CHECK(strcmp(json_object_get_string(get(model, "type")), "BPE") == 0, "type");
    CHECK(json_object_get_boolean(get(model, "byte_fallback")) &&
          json_object_get_boolean(get(model, "fuse_unk")), "byte_fallback/fuse_unk");
    CHECK(strcmp(json_object_get_string(get(model, "unk_token")), "<unk>") == 0, "unk");
    CHECK(json_object_object_length(vocab) == vocab_size, "vocab %d != %d",
          json_object_object_length(vocab), vocab_size);
    /* Ids are exactly 0..V-1. */
    char *seen = calloc((size_t)vocab_size, 1);
    bool ids_ok = true;
    json_object_object_foreach(vocab, piece, idv) {
        int id = json_object_get_int(idv);
        (void)piece;
        ids_ok &= id >= 0 && id < vocab_size && !seen[id];
        if (id >= 0 && id < vocab_size)
            seen[id] = 1;
    }
    free(seen);
    CHECK(ids_ok, "vocab ids are not a permutation of 0..V-1");
    CHECK(json_object_get_int(get(vocab, "<unk>")) == 0 && json_object_get_int(get(vocab, "<s>")) == 1 &&
          json_object_get_int(get(vocab, "</s>")) == 2, "special ids");
    CHECK(json_object_get_int(get(vocab, "<0x00>")) == 3 && json_object_get_int(get(vocab, "<0x0A>")) == 13 &&
          json_object_get_int(get(vocab, "<0xFF>")) == 258, "byte piece ids");
    /* Every merge joins two pieces of the vocab into a third. */
    bool merges_ok = json_object_array_length(merges) > 0;
    for (size_t i = 0; i < json_object_array_length(merges); i++) {
        const char *mg = json_object_get_string(json_object_array_get_idx(merges, i));
        const char *sp = strchr(mg, ' ');
        char l[128], r[128], joined[256];
        if (!sp || strchr(sp + 1, ' ')) {
            merges_ok = false;
            continue;
        }
        snprintf(l, sizeof(l), "%.*s", (int)(sp - mg), mg);
        snprintf(r, sizeof(r), "%s", sp + 1);
        snprintf(joined, sizeof(joined), "%s%s", l, r);
        merges_ok &= get(vocab, l) && get(vocab, r) && get(vocab, joined);
    }
    CHECK(merges_ok, "a merge refers to pieces not in the vocab");
    CHECK(get(vocab, "\xe2\x96\x81t") != NULL, "no \"_t\" piece");
    json_object *norm = get(tok, "normalizer"), *dec = get(tok, "decoder");
    CHECK(norm && json_object_array_length(get(norm, "normalizers")) == 2, "normalizer");
    CHECK(dec && json_object_array_length(get(dec, "decoders")) == 4, "decoder");
    CHECK(get(tok, "pre_tokenizer") == NULL && json_object_array_length(get(tok, "added_tokens")) == 3,
          "pre_tokenizer / added_tokens");
    json_object_put(tok);

    snprintf(p, sizeof(p), "%s/tokenizer_config.json", dir);
    cfg = json_object_from_file(p);
    CHECK(cfg && json_object_get_boolean(get(cfg, "add_bos_token")), "tokenizer_config add_bos");
    CHECK(cfg && strstr(json_object_get_string(get(cfg, "chat_template")), "<extra_id_1>Assistant\n"),
          "chat template");
    const char *shared = getenv("HYMBA_SHARED");
    if (cfg && shared) {
        snprintf(p, sizeof(p), "%s/testdata/hymba-1.5b-config/tokenizer_config.json", shared);
        json_object *real = json_object_from_file(p);
        if (real)
            CHECK(strcmp(json_object_get_string(get(real, "chat_template")),
                         json_object_get_string(get(cfg, "chat_template"))) == 0,
                  "chat template differs from the real one");
        json_object_put(real);
    }
    json_object_put(cfg);
}

static void test_tokenizer(void)
{
    char dir[4200];
    snprintf(dir, sizeof(dir), "%s/s5a", tmp_dir);
    check_tokenizer(dir, 512);
}

/* Configs: the 1.5B preset reproduces the real config.json byte for byte, --config
 * round-trips the golden configs, --tokenizer-from copies the real tokenizer. */
static void test_configs(const char *shared)
{
    char a[4200], b[4200], args[8192];

    CHECK(mkmodel("--preset 1.5b --no-weights \"$T/p15\"") == 0, "1.5b --no-weights");
    path_of(a, sizeof(a), "p15", "config.json");
    snprintf(b, sizeof(b), "%s/testdata/hymba-1.5b-config/config.json", shared);
    CHECK(same_file(a, b), "1.5b preset config.json differs from the real one");
    path_of(a, sizeof(a), "p15", "generation_config.json");
    snprintf(b, sizeof(b), "%s/testdata/hymba-1.5b-config/generation_config.json", shared);
    CHECK(same_text(a, b), "generation_config.json differs from the real one");
    path_of(a, sizeof(a), "p15", "model.safetensors");
    CHECK(access(a, F_OK) != 0, "--no-weights wrote weights");
    snprintf(a, sizeof(a), "%s/p15", tmp_dir);
    check_tokenizer(a, 32001);

    static const char *golden[] = { "tiny-fp32", "tiny-bf16" };
    for (int i = 0; i < 2; i++) {
        snprintf(args, sizeof(args), "--no-weights --config %s/golden/%s/config.json \"$T/%s\"",
                 shared, golden[i], golden[i]);
        CHECK(mkmodel(args) == 0, "--config %s", golden[i]);
        path_of(a, sizeof(a), golden[i], "config.json");
        snprintf(b, sizeof(b), "%s/golden/%s/config.json", shared, golden[i]);
        CHECK(same_text(a, b), "--config %s does not round-trip", golden[i]);
    }
    snprintf(args, sizeof(args), "--no-weights --preset 1.5b --tokenizer-from "
             "%s/testdata/hymba-1.5b-config \"$T/real\"", shared);
    CHECK(mkmodel(args) == 0, "--tokenizer-from");
    static const char *files[] = { "tokenizer.json", "tokenizer_config.json",
                                   "special_tokens_map.json", "added_tokens.json" };
    for (int i = 0; i < 4; i++) {
        path_of(a, sizeof(a), "real", files[i]);
        snprintf(b, sizeof(b), "%s/testdata/hymba-1.5b-config/%s", shared, files[i]);
        CHECK(same_file(a, b), "%s not copied", files[i]);
    }
}

static void test_usage(void)
{
    CHECK(mkmodel("") == 2, "no OUTDIR");
    CHECK(mkmodel("--preset huge \"$T/x\"") == 2, "bad preset");
    CHECK(mkmodel("--seed abc \"$T/x\"") == 2, "bad seed");
    CHECK(mkmodel("--dtype f16 \"$T/x\"") == 2, "bad dtype");
    CHECK(mkmodel("--preset tiny --config x.json \"$T/x\"") == 2, "preset + config");
    CHECK(mkmodel("--config /nonexistent/config.json \"$T/x\"") == 1, "missing config");
    CHECK(mkmodel("--help") == 0, "--help");
}

int main(void)
{
    const char *top = getenv("top_builddir");
    static char bin[4096];
    const char *shared;

    tmp_dir = hy_test_tmpdir();
    if (!tmp_dir)
        return 1;
    setenv("T", tmp_dir, 1);
    snprintf(bin, sizeof(bin), "%s/tools/hymba-mkmodel", top ? top : ".");
    mkmodel_bin = bin;
    test_determinism();
    test_init();
    test_tokenizer();
    test_untied();
    test_usage();
    if ((shared = hy_test_shared_dir()))
        test_configs(shared);
    hy_test_rmtree(tmp_dir);
    free(tmp_dir);
    return hy_test_done("test-mkmodel");
}
