/* test-model-load.c: checkpoint directories (mkmodel, sharded, golden) bind; bad ones are refused by name. */
#include <config.h>   /* HAVE_CUDA */
#include "engine/model_internal.h"
#include "tests/testutil.h"

#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <json-c/json.h>

static char *tmp_dir;
static char base_dir[4096];

/* A modification applied while copying a checkpoint tensor by tensor. */
typedef enum edit_kind { EDIT_NONE, EDIT_DROP, EDIT_SHAPE, EDIT_DTYPE } edit_kind;

typedef struct edit {
    edit_kind kind;
    const char *tensor;
    hy_st_dtype dtype;       /* EDIT_DTYPE */
} edit;

static void copy_file(const char *from, const char *to)
{
    FILE *in = fopen(from, "rb"), *out = fopen(to, "wb");
    char buf[8192];
    size_t n;

    while (in && out && (n = fread(buf, 1, sizeof(buf), in)) > 0)
        fwrite(buf, 1, n, out);
    if (in)
        fclose(in);
    if (out)
        fclose(out);
}

static void make_dir(char *out, size_t cap, const char *name)
{
    char from[4200], to[4200];

    snprintf(out, cap, "%s/%s", tmp_dir, name);
    mkdir(out, 0755);
    snprintf(from, sizeof(from), "%s/config.json", base_dir);
    snprintf(to, sizeof(to), "%s/config.json", out);
    copy_file(from, to);
}

/* Copy base_dir's model.safetensors tensors [first, last) to dir/file, applying e. */
static int write_edited(const char *dir, const char *file, const edit *e, size_t first,
                        size_t last)
{
    char src[4200], dst[4200];
    hy_st_file *f;
    hy_err err = { 0 };
    hy_st_out *outs;
    void *zeros = NULL;
    size_t n = 0;
    int r;

    snprintf(src, sizeof(src), "%s/model.safetensors", base_dir);
    snprintf(dst, sizeof(dst), "%s/%s", dir, file);
    if (hy_st_open(src, &f, &err) < 0) {
        CHECK(0, "open base: %s", err.msg);
        return -1;
    }
    if (last > f->n_tensors)
        last = f->n_tensors;
    outs = calloc(f->n_tensors, sizeof(*outs));
    for (size_t i = first; i < last; i++) {
        const hy_st_tensor *t = &f->tensors[i];
        hy_st_out *o = &outs[n];
        bool hit = e && e->tensor && strcmp(e->tensor, t->name) == 0;
        if (hit && e->kind == EDIT_DROP)
            continue;
        o->name = t->name;
        o->dtype = t->dtype;
        o->ndim = t->ndim;
        memcpy(o->shape, t->shape, sizeof(o->shape));
        o->data = t->data;
        if (hit && e->kind == EDIT_SHAPE)
            o->shape[0] += 1;
        if (hit && e->kind == EDIT_DTYPE)
            o->dtype = e->dtype;
        if (hit && e->kind != EDIT_NONE) {
            zeros = calloc(1, (size_t)hy_st_nbytes(o->dtype, o->ndim, o->shape) + 1);
            o->data = zeros;
        }
        n++;
    }
    r = hy_st_write(dst, outs, n, &err);
    CHECK(r == 0, "write %s: %s", dst, err.msg);
    free(zeros);
    free(outs);
    hy_st_close(f);
    return r;
}

/* Open dir; on failure the message must contain every needle. */
static int open_expect(const char *what, const char *dir, bool ok, const char *needle1,
                       const char *needle2)
{
    hy_model m;
    hy_err err = { 0 };
    int r;

    memset(&m, 0, sizeof(m));
    r = hy_weights_open(&m, dir, &err);
    hy_weights_close(&m);
    if (ok) {
        CHECK(r == 0, "%s: refused: %s", what, err.msg);
        return r;
    }
    CHECK(r < 0, "%s: accepted", what);
    CHECK(r >= 0 || !needle1 || strstr(err.msg, needle1), "%s: \"%s\" lacks \"%s\"", what,
          err.msg, needle1);
    CHECK(r >= 0 || !needle2 || strstr(err.msg, needle2), "%s: \"%s\" lacks \"%s\"", what,
          err.msg, needle2);
    if (r < 0 && getenv("VERBOSE"))
        printf("  %s: %s\n", what, err.msg);
    return r;
}

static uint64_t bytes_of(const hy_tensor *t)
{
    uint64_t n = hy_dtype_size(t->dt);
    for (int i = 0; i < t->ndim; i++)
        n *= (uint64_t)t->shape[i];
    return t->data ? n : 0;
}

static void test_good(void)
{
    hy_model m, m2;
    hy_err err = { 0 };
    const hy_arch *a = &m.arch;

    memset(&m, 0, sizeof(m));
    memset(&m2, 0, sizeof(m2));
    CHECK(hy_weights_open(&m, base_dir, &err) == 0, "mkmodel tiny: %s", err.msg);
    if (!m.layers)
        return;
    CHECK(a->n_layers == 4 && a->hidden == 64 && a->vocab == 512, "arch");
    CHECK(m.n_files == 1, "files %d", m.n_files);
    CHECK(m.w.embed.data && m.w.embed.dt == HY_DT_BF16, "embed");
    CHECK(m.w.lm_head.data == m.w.embed.data, "lm_head not tied to embed");
    CHECK(m.w.memory_tokens.data && m.w.memory_tokens.shape[0] == 8, "memory tokens");
    CHECK(strcmp(m.w.layers[2].in_proj.name, "model.layers.2.mamba.in_proj.weight") == 0,
          "name %s", m.w.layers[2].in_proj.name);
    CHECK(m.w.layers[2].in_proj.shape[0] == a->in_proj_rows[2] && a->in_proj_rows[2] == 320,
          "consumer in_proj rows");
    CHECK(m.w.layers[1].in_proj.shape[0] == 416, "owner in_proj rows");
    for (int L = 0; L < a->n_layers; L++) {
        const hy_tensor *t = &m.layers[L].input_norm;
        for (int i = 0; i < 19; i++)
            CHECK(t[i].data && t[i].dt == HY_DT_BF16, "layer %d tensor %d unbound", L, i);
    }
    /* A decode step reads every tensor of the file except the embedding rows it does
     * not use and the meta tokens, plus lm_head (= the embedding) once. */
    uint64_t file_bytes = 0;
    for (size_t i = 0; i < m.files[0]->n_tensors; i++)
        file_bytes += m.files[0]->tensors[i].nbytes;
    CHECK(m.weight_bytes == file_bytes - bytes_of(&m.w.memory_tokens), "weight_bytes %llu vs %llu",
          (unsigned long long)m.weight_bytes,
          (unsigned long long)(file_bytes - bytes_of(&m.w.memory_tokens)));
    CHECK(hy_weights_open(&m2, base_dir, &err) == 0, "reopen: %s", err.msg);
    CHECK(memcmp(m.fingerprint, m2.fingerprint, HY_FINGERPRINT_LEN) == 0, "fingerprint unstable");
    hy_weights_close(&m2);

    /* The fingerprint covers config.json. */
    char dir[4096], path[4200];
    make_dir(dir, sizeof(dir), "fp");
    char from[4200];
    snprintf(from, sizeof(from), "%s/model.safetensors", base_dir);
    snprintf(path, sizeof(path), "%s/model.safetensors", dir);
    copy_file(from, path);
    memset(&m2, 0, sizeof(m2));
    CHECK(hy_weights_open(&m2, dir, &err) == 0, "copy: %s", err.msg);
    CHECK(memcmp(m.fingerprint, m2.fingerprint, HY_FINGERPRINT_LEN) == 0, "copy fingerprint");
    hy_weights_close(&m2);
    snprintf(path, sizeof(path), "%s/config.json", dir);
    FILE *fp = fopen(path, "a");
    fputs(" ", fp);
    fclose(fp);
    memset(&m2, 0, sizeof(m2));
    CHECK(hy_weights_open(&m2, dir, &err) == 0, "copy: %s", err.msg);
    CHECK(memcmp(m.fingerprint, m2.fingerprint, HY_FINGERPRINT_LEN) != 0,
          "fingerprint ignores config.json");
    hy_weights_close(&m2);
    hy_weights_close(&m);
}

static void test_bad(void)
{
    char dir[4096], path[4200];
    edit e;
    const char *D = "model.layers.2.mamba.D.0";

    make_dir(dir, sizeof(dir), "missing");
    e = (edit){ EDIT_DROP, D, 0 };
    write_edited(dir, "model.safetensors", &e, 0, SIZE_MAX);
    open_expect("missing tensor", dir, false, D, "missing/model.safetensors");

    make_dir(dir, sizeof(dir), "shape");
    e = (edit){ EDIT_SHAPE, "model.layers.1.mamba.in_proj.weight", 0 };
    write_edited(dir, "model.safetensors", &e, 0, SIZE_MAX);
    open_expect("wrong shape", dir, false, "model.layers.1.mamba.in_proj.weight", "[417, 64]");

    make_dir(dir, sizeof(dir), "dtype");
    e = (edit){ EDIT_DTYPE, "model.final_layernorm.weight", HY_ST_I32 };
    write_edited(dir, "model.safetensors", &e, 0, SIZE_MAX);
    open_expect("non-weight dtype", dir, false, "model.final_layernorm.weight",
                "dtype/model.safetensors");

    /* Mixed dtypes bind as stored: an F16 and an F32 tensor in a BF16 checkpoint. */
    make_dir(dir, sizeof(dir), "mixed");
    e = (edit){ EDIT_DTYPE, "model.layers.0.mamba.D.0", HY_ST_F16 };
    write_edited(dir, "model.safetensors", &e, 0, SIZE_MAX);
    {
        hy_model m;
        hy_err err = { 0 };
        memset(&m, 0, sizeof(m));
        CHECK(hy_weights_open(&m, dir, &err) == 0, "F16 tensor refused: %s", err.msg);
        CHECK(m.layers && m.layers[0].D.dt == HY_DT_F16 && m.layers[0].A_log.dt == HY_DT_BF16,
              "mixed dtypes not bound as stored");
        hy_weights_close(&m);
    }
    e = (edit){ EDIT_DTYPE, "model.layers.3.mamba.A_log.0", HY_ST_F32 };
    write_edited(dir, "model.safetensors", &e, 0, SIZE_MAX);
    {
        hy_model m;
        hy_err err = { 0 };
        memset(&m, 0, sizeof(m));
        CHECK(hy_weights_open(&m, dir, &err) == 0, "F32 tensor refused: %s", err.msg);
        CHECK(m.layers && m.layers[3].A_log.dt == HY_DT_F32, "F32 A_log not bound as F32");
        hy_weights_close(&m);
    }

    /* Unknown dtype: patch "BF16" of one entry to "QQ16" (same length, header stays valid). */
    make_dir(dir, sizeof(dir), "unknown");
    write_edited(dir, "model.safetensors", NULL, 0, SIZE_MAX);
    snprintf(path, sizeof(path), "%s/model.safetensors", dir);
    {
        FILE *fp = fopen(path, "r+b");
        char head[4096];
        size_t n = fread(head, 1, sizeof(head) - 1, fp);
        head[n] = 0;
        char *p = strstr(head + 8, "\"model.embed_tokens.weight\"");   /* past the length */
        char *q = p ? strstr(p, "BF16") : NULL;
        CHECK(q != NULL, "no BF16 entry to patch");
        if (q) {
            fseek(fp, q - head, SEEK_SET);
            fwrite("QQ16", 1, 4, fp);
        }
        fclose(fp);
    }
    open_expect("unknown dtype", dir, false, "model.embed_tokens.weight", "QQ16");

    /* Truncated: cut the last 100 bytes. */
    make_dir(dir, sizeof(dir), "trunc");
    write_edited(dir, "model.safetensors", NULL, 0, SIZE_MAX);
    snprintf(path, sizeof(path), "%s/model.safetensors", dir);
    struct stat st;
    stat(path, &st);
    CHECK(truncate(path, st.st_size - 100) == 0, "truncate");
    open_expect("truncated", dir, false, "trunc/model.safetensors", "tensor '");

    make_dir(dir, sizeof(dir), "empty");
    open_expect("no weights", dir, false, "model.safetensors", NULL);

    snprintf(dir, sizeof(dir), "%s/none", tmp_dir);
    open_expect("no directory", dir, false, "config.json", NULL);

    /* Untied lm_head: required, then bound separately. */
    make_dir(dir, sizeof(dir), "untied");
    snprintf(path, sizeof(path), "%s/config.json", dir);
    json_object *cfg = json_object_from_file(path);
    json_object_object_add(cfg, "tie_word_embeddings", json_object_new_boolean(0));
    json_object_to_file(path, cfg);
    json_object_put(cfg);
    write_edited(dir, "model.safetensors", NULL, 0, SIZE_MAX);
    open_expect("untied without lm_head", dir, false, "lm_head.weight", NULL);

    /* A refused config names its file. */
    make_dir(dir, sizeof(dir), "badcfg");
    snprintf(path, sizeof(path), "%s/config.json", dir);
    cfg = json_object_from_file(path);
    json_object_object_add(cfg, "num_experts", json_object_new_int(8));
    json_object_to_file(path, cfg);
    json_object_put(cfg);
    write_edited(dir, "model.safetensors", NULL, 0, SIZE_MAX);
    open_expect("unsupported config", dir, false, "badcfg/config.json", "num_experts");

    /* So does a config refused while deriving the arch (a global producer, SWA consumer). */
    make_dir(dir, sizeof(dir), "badgroup");
    snprintf(path, sizeof(path), "%s/config.json", dir);
    cfg = json_object_from_file(path);
    json_object_object_add(cfg, "kv_reuse_group", json_tokener_parse("[[0, 1]]"));
    json_object_to_file(path, cfg);
    json_object_put(cfg);
    write_edited(dir, "model.safetensors", NULL, 0, SIZE_MAX);
    open_expect("bad kv group", dir, false, "badgroup/config.json: field 'kv_reuse_group'", NULL);
}

/* Split the base checkpoint in two shards with an index; bindings must equal the single file's. */
static void write_index(const char *dir, const char *override_file, const char *drop_name)
{
    char src[4200], path[4200];
    hy_st_file *f;
    hy_err err = { 0 };
    json_object *root = json_object_new_object(), *map = json_object_new_object(),
                *meta = json_object_new_object();

    snprintf(src, sizeof(src), "%s/model.safetensors", base_dir);
    if (hy_st_open(src, &f, &err) < 0)
        return;
    for (size_t i = 0; i < f->n_tensors; i++) {
        const char *file = i < f->n_tensors / 2 ? "model-00001-of-00002.safetensors"
                                                : "model-00002-of-00002.safetensors";
        if (drop_name && strcmp(drop_name, f->tensors[i].name) == 0)
            continue;
        if (override_file && i == 0)
            file = override_file;
        json_object_object_add(map, f->tensors[i].name, json_object_new_string(file));
    }
    json_object_object_add(meta, "total_size", json_object_new_int64(1));
    json_object_object_add(root, "metadata", meta);
    json_object_object_add(root, "weight_map", map);
    snprintf(path, sizeof(path), "%s/model.safetensors.index.json", dir);
    json_object_to_file(path, root);
    json_object_put(root);
    hy_st_close(f);
}

static void test_sharded(void)
{
    char dir[4096];
    hy_model one, two;
    hy_err err = { 0 };
    size_t half;
    hy_st_file *f;
    char src[4200];

    snprintf(src, sizeof(src), "%s/model.safetensors", base_dir);
    if (hy_st_open(src, &f, &err) < 0)
        return;
    half = f->n_tensors / 2;
    hy_st_close(f);

    make_dir(dir, sizeof(dir), "sharded");
    write_edited(dir, "model-00001-of-00002.safetensors", NULL, 0, half);
    write_edited(dir, "model-00002-of-00002.safetensors", NULL, half, SIZE_MAX);
    write_index(dir, NULL, NULL);
    memset(&one, 0, sizeof(one));
    memset(&two, 0, sizeof(two));
    CHECK(hy_weights_open(&one, base_dir, &err) == 0, "single: %s", err.msg);
    CHECK(hy_weights_open(&two, dir, &err) == 0, "sharded: %s", err.msg);
    if (one.layers && two.layers) {
        CHECK(two.n_files == 2, "shards opened: %d", two.n_files);
        CHECK(one.weight_bytes == two.weight_bytes, "weight bytes differ");
        const hy_tensor *a = &one.w.embed, *b = &two.w.embed;
        CHECK(memcmp(a->data, b->data, bytes_of(a)) == 0, "embed differs");
        for (int L = 0; L < one.arch.n_layers; L++) {
            a = &one.layers[L].input_norm;
            b = &two.layers[L].input_norm;
            for (int i = 0; i < 19; i++)
                CHECK(bytes_of(&a[i]) == bytes_of(&b[i]) &&
                      memcmp(a[i].data, b[i].data, bytes_of(&a[i])) == 0 &&
                      strcmp(a[i].name, b[i].name) == 0, "layer %d tensor %d differs", L, i);
        }
        CHECK(memcmp(one.w.final_norm.data, two.w.final_norm.data, bytes_of(&one.w.final_norm)) == 0,
              "final norm differs");
    }
    hy_weights_close(&one);
    hy_weights_close(&two);

    /* An index naming a file that is not there, a path outside the directory, a shard
     * lacking a tensor it is said to hold, an index missing a tensor. */
    write_index(dir, "model-00003-of-00002.safetensors", NULL);
    open_expect("index names an absent shard", dir, false, "model-00003-of-00002.safetensors", NULL);
    write_index(dir, "../model.safetensors", NULL);
    open_expect("index escapes the directory", dir, false, "../model.safetensors", NULL);
    write_index(dir, "model-00002-of-00002.safetensors", NULL);
    open_expect("shard lacks tensor", dir, false, "model-00002-of-00002.safetensors",
                "is missing");
    write_index(dir, NULL, "model.layers.0.mamba.D.0");
    open_expect("index lacks tensor", dir, false, "model.layers.0.mamba.D.0", "index.json");
    write_index(dir, NULL, NULL);
    open_expect("sharded again", dir, true, NULL, NULL);
}

/* Prefill ids and copy the last logits out; NULL on failure. */
static float *logits_of(const char *dir, const int32_t *ids, int n)
{
    hy_load_opts o = { .backend = "cpu", .threads = 1 };
    hy_model *m = NULL;
    hy_seq *s = NULL;
    hy_err err = { 0 };
    float *out = NULL;

    if (hy_model_load(dir, &o, &m, &err) == 0 && hy_seq_new(m, &s, &err) == 0 &&
        hy_seq_prefill(m, s, ids, n, NULL, &err) == 0) {
        int V = hy_model_arch(m)->vocab;
        out = malloc((size_t)V * sizeof(float));
        memcpy(out, hy_seq_logits(s), (size_t)V * sizeof(float));
    }
    CHECK(out, "%s: %s", dir, err.msg);
    hy_seq_free(s);
    hy_model_free(m);
    return out;
}

/* The full load: backend choice, accessors, and single == sharded logits. */
static void test_full_load(void)
{
    hy_load_opts o = { .backend = "cpu", .threads = 1 };
    hy_model *m = NULL;
    hy_model raw;
    hy_err err = { 0 };
    char dir[4096];
    static const int32_t ids[] = { 1, 17, 300, 42, 5 };

    CHECK(hy_model_load(base_dir, &o, &m, &err) == 0, "load cpu: %s", err.msg);
    if (!m)
        return;
    memset(&raw, 0, sizeof(raw));
    hy_weights_open(&raw, base_dir, &err);
    CHECK(strcmp(hy_model_backend(m), "cpu") == 0, "backend %s", hy_model_backend(m));
    CHECK(strcmp(hy_model_dir(m), base_dir) == 0, "dir");
    CHECK(hy_model_config(m)->hidden_size == 64 && hy_model_arch(m)->n_layers == 4, "accessors");
    CHECK(memcmp(hy_model_fingerprint(m), raw.fingerprint, HY_FINGERPRINT_LEN) == 0, "fingerprint");
    CHECK(hy_model_weight_bytes(m) == raw.weight_bytes && raw.weight_bytes > 0, "weight bytes");
    CHECK(hy_model_max_ctx(m) == 8192, "default max_ctx %lld", (long long)hy_model_max_ctx(m));
    hy_backend_stats st;
    hy_model_stats(m, &st);
    CHECK(st.bytes_device > 0, "stats");
    hy_weights_close(&raw);
    hy_model_free(m);

    o.max_ctx = 100;
    CHECK(hy_model_load(base_dir, &o, &m, &err) == 0 && hy_model_max_ctx(m) == 100, "max_ctx");
    hy_model_free(m);
    m = NULL;
    o.backend = "tpu";
    CHECK(hy_model_load(base_dir, &o, &m, &err) < 0 && !m && strstr(err.msg, "tpu"),
          "unknown backend: %s", err.msg);
    o.backend = "auto";
    CHECK(hy_model_load(base_dir, &o, &m, &err) == 0 && m, "auto: %s", err.msg);
#ifndef HAVE_CUDA
    CHECK(m && strcmp(hy_model_backend(m), "cpu") == 0, "auto without CUDA is not cpu");
    hy_model_free(m);
    m = NULL;
    o.backend = "cuda";
    CHECK(hy_model_load(base_dir, &o, &m, &err) < 0 && !m && strstr(err.msg, "CUDA"),
          "cuda without CUDA: %s", err.msg);
#endif
    hy_model_free(m);
    m = NULL;
    snprintf(dir, sizeof(dir), "%s/missing", tmp_dir);
    o.backend = "cpu";
    CHECK(hy_model_load(dir, &o, &m, &err) < 0 && !m, "bad checkpoint through hy_model_load");
    CHECK(hy_model_load(base_dir, NULL, &m, &err) == 0, "NULL opts: %s", err.msg);
    hy_model_free(m);

    /* The sharded copy computes bit-identical logits. */
    snprintf(dir, sizeof(dir), "%s/sharded", tmp_dir);
    float *a = logits_of(base_dir, ids, 5), *b = logits_of(dir, ids, 5);
    CHECK(a && b && memcmp(a, b, 512 * sizeof(float)) == 0, "sharded logits differ");
    free(a);
    free(b);
}

/* The golden folders hold golden.safetensors next to model.safetensors: ignored. */
static void test_golden(const char *shared)
{
    static const struct { const char *name; hy_dtype dt; int layers; } g[] = {
        { "tiny-fp32", HY_DT_F32, 4 }, { "tiny-bf16", HY_DT_BF16, 8 },
    };
    for (size_t i = 0; i < 2; i++) {
        char dir[4096];
        hy_model m;
        hy_err err = { 0 };
        memset(&m, 0, sizeof(m));
        snprintf(dir, sizeof(dir), "%s/golden/%s", shared, g[i].name);
        CHECK(hy_weights_open(&m, dir, &err) == 0, "%s: %s", g[i].name, err.msg);
        if (m.layers) {
            CHECK(m.n_files == 1 && strstr(m.files[0]->path, "/model.safetensors"), "files");
            CHECK(m.arch.n_layers == g[i].layers, "layers");
            CHECK(m.w.embed.dt == g[i].dt && m.layers[0].A_log.dt == g[i].dt, "dtype");
            CHECK(m.w.lm_head.data == m.w.embed.data, "tied");
        }
        hy_weights_close(&m);
    }
}

int main(void)
{
    const char *top = getenv("top_builddir");
    const char *shared;
    char cmd[8192];

    tmp_dir = hy_test_tmpdir();
    if (!tmp_dir)
        return 1;
    snprintf(base_dir, sizeof(base_dir), "%s/tiny", tmp_dir);
    snprintf(cmd, sizeof(cmd), "%s/tools/hymba-mkmodel -q --preset tiny --seed 3 '%s'",
             top ? top : ".", base_dir);
    if (system(cmd) != 0) {
        printf("FAIL: %s\n", cmd);
        return 1;
    }
    test_good();
    test_bad();
    test_sharded();
    test_full_load();
    if ((shared = hy_test_shared_dir()))
        test_golden(shared);
    hy_test_rmtree(tmp_dir);
    free(tmp_dir);
    return hy_test_done("test-model-load");
}
