/* weights.c: open a HF checkpoint directory and bind every spec §2 tensor by name, with shape checks. */
#include "engine/model_internal.h"
#include "engine/sha256.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <json-c/json.h>

#define ST_SINGLE "model.safetensors"
#define ST_INDEX "model.safetensors.index.json"
#define INDEX_MAX_BYTES (64 << 20)
#define NAME_MAX_LEN 160

/* Where binding looks tensors up: one file, or the index's weight_map. */
typedef struct bind_ctx {
    hy_model *m;
    const char *where;          /* file named in "missing tensor" messages */
    json_object *weight_map;    /* NULL for a single file */
    hy_err *err;
} bind_ctx;

static char *path_join(const char *dir, const char *name)
{
    char *p;
    return asprintf(&p, "%s/%s", dir, name) < 0 ? NULL : p;
}

static bool file_exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0;
}

/* Read a whole (small) file; *len gets its size. */
static int slurp(const char *path, size_t max, char **out, size_t *len, hy_err *err)
{
    FILE *fp = fopen(path, "rb");
    long n;

    *out = NULL;
    if (!fp)
        return hy_err_set(err, -errno, "%s: cannot open: %s", path, strerror(errno));
    if (fseek(fp, 0, SEEK_END) != 0 || (n = ftell(fp)) < 0 || fseek(fp, 0, SEEK_SET) != 0 ||
        (size_t)n > max) {
        fclose(fp);
        return hy_err_set(err, -EINVAL, "%s: cannot read (or larger than %zu bytes)", path, max);
    }
    *out = malloc((size_t)n + 1);
    if (!*out || fread(*out, 1, (size_t)n, fp) != (size_t)n) {
        fclose(fp);
        free(*out);
        *out = NULL;
        return hy_err_set(err, -EIO, "%s: short read", path);
    }
    (*out)[n] = '\0';
    *len = (size_t)n;
    fclose(fp);
    return 0;
}

static int open_shard(hy_model *m, const char *dir, const char *name, hy_err *err)
{
    char *p = path_join(dir, name);
    int r;

    if (!p)
        return hy_err_set(err, -ENOMEM, "out of memory");
    if (m->n_files >= HY_MAX_SHARDS) {
        r = hy_err_set(err, -E2BIG, "%s: more than %d shards", p, HY_MAX_SHARDS);
    } else {
        r = hy_st_open(p, &m->files[m->n_files], err);
        if (r == 0)
            m->n_files++;
    }
    free(p);
    return r;
}

/* A shard name from the index must be a plain file in the model directory. */
static bool shard_name_ok(const char *s)
{
    return *s && !strchr(s, '/') && strcmp(s, ".") != 0 && strcmp(s, "..") != 0;
}

static int shard_cmp(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Parse the index, then open every distinct shard it names (sorted, so the
 * fingerprint does not depend on JSON key order). */
static int open_index(hy_model *m, const char *dir, const char *ipath, json_object **wmap,
                      hy_err *err)
{
    char *txt = NULL;
    size_t len = 0;
    const char *names[HY_MAX_SHARDS];
    int n = 0, r;
    json_object *root, *map;

    if ((r = slurp(ipath, INDEX_MAX_BYTES, &txt, &len, err)) < 0)
        return r;
    root = json_tokener_parse(txt);
    free(txt);
    if (!root || !json_object_is_type(root, json_type_object) ||
        !json_object_object_get_ex(root, "weight_map", &map) ||
        !json_object_is_type(map, json_type_object)) {
        json_object_put(root);
        return hy_err_set(err, -EINVAL, "%s: not JSON with a \"weight_map\" object", ipath);
    }
    json_object_object_foreach(map, tname, fname) {
        const char *f = json_object_is_type(fname, json_type_string) ?
                        json_object_get_string(fname) : "";
        bool seen = false;
        if (!shard_name_ok(f)) {
            r = hy_err_set(err, -EINVAL, "%s: tensor '%s' maps to \"%s\", not a file name in "
                           "the model directory", ipath, tname, f);
            json_object_put(root);
            return r;
        }
        for (int i = 0; i < n && !seen; i++)
            seen = strcmp(names[i], f) == 0;
        if (seen)
            continue;
        if (n >= HY_MAX_SHARDS) {
            json_object_put(root);
            return hy_err_set(err, -E2BIG, "%s: more than %d shards", ipath, HY_MAX_SHARDS);
        }
        names[n++] = f;
    }
    qsort(names, (size_t)n, sizeof(names[0]), shard_cmp);
    for (int i = 0; i < n; i++)
        if ((r = open_shard(m, dir, names[i], err)) < 0) {
            json_object_put(root);
            return r;
        }
    *wmap = json_object_get(map);
    json_object_put(root);
    return 0;
}

static const hy_st_tensor *lookup(const bind_ctx *b, const char *name, const hy_st_file **file)
{
    json_object *fv;

    *file = NULL;
    if (!b->weight_map) {
        *file = b->m->files[0];
        return hy_st_find(*file, name);
    }
    if (!json_object_object_get_ex(b->weight_map, name, &fv))
        return NULL;
    for (int i = 0; i < b->m->n_files; i++) {
        const char *base = strrchr(b->m->files[i]->path, '/');
        if (strcmp(base ? base + 1 : b->m->files[i]->path, json_object_get_string(fv)) == 0) {
            *file = b->m->files[i];
            return hy_st_find(*file, name);
        }
    }
    return NULL;
}

static void shape_str(char *buf, size_t cap, int ndim, const int64_t *shape)
{
    size_t o = (size_t)snprintf(buf, cap, "[");
    for (int i = 0; i < ndim && o < cap; i++)
        o += (size_t)snprintf(buf + o, cap - o, "%s%lld", i ? ", " : "", (long long)shape[i]);
    if (o < cap)
        snprintf(buf + o, cap - o, "]");
}

/* Bind one tensor: present (unless optional), a weight dtype, the expected shape. */
static int bind(const bind_ctx *b, hy_tensor *t, const char *name, bool required, int ndim,
                int64_t d0, int64_t d1, int64_t d2)
{
    const int64_t want[3] = { d0, d1, d2 };
    const hy_st_file *f;
    const hy_st_tensor *st = lookup(b, name, &f);
    char have_s[96], want_s[96];
    bool ok;

    memset(t, 0, sizeof(*t));
    if (!st) {
        if (!required)
            return 0;
        return hy_err_set(b->err, -ENOENT, "%s: tensor '%s' is missing",
                          f ? f->path : b->where, name);
    }
    switch (st->dtype) {
    case HY_ST_F32: t->dt = HY_DT_F32; break;
    case HY_ST_BF16: t->dt = HY_DT_BF16; break;
    case HY_ST_F16: t->dt = HY_DT_F16; break;
    default:
        return hy_err_set(b->err, -EINVAL, "%s: tensor '%s' has dtype %s; weights must be F32, "
                          "BF16 or F16", f->path, name, hy_st_dtype_name(st->dtype));
    }
    ok = st->ndim == ndim;
    for (int i = 0; ok && i < ndim; i++)
        ok = st->shape[i] == want[i];
    if (!ok) {
        shape_str(have_s, sizeof(have_s), st->ndim, st->shape);
        shape_str(want_s, sizeof(want_s), ndim, want);
        return hy_err_set(b->err, -EINVAL, "%s: tensor '%s' has shape %s, expected %s", f->path,
                          name, have_s, want_s);
    }
    t->data = st->data;
    t->ndim = ndim;
    memcpy(t->shape, want, sizeof(int64_t) * (size_t)ndim);
    t->name = st->name;
    return 0;
}

/* One decoder layer's 19 tensors (spec §2, prefix model.layers.L.). */
static int bind_layer(const bind_ctx *b, int L, hy_layer_weights *lw)
{
    const hy_arch *a = &b->m->arch;
    const int64_t H = a->hidden, Di = a->d_inner, N = a->d_state, R = a->dt_rank;
    const struct {
        hy_tensor *t;
        const char *suffix;
        bool required;
        int ndim;
        int64_t d0, d1, d2;
    } spec[] = {
        { &lw->input_norm, "input_layernorm.weight", true, 1, H, 0, 0 },
        { &lw->in_proj, "mamba.in_proj.weight", true, 2, a->in_proj_rows[L], H, 0 },
        { &lw->conv_w, "mamba.conv1d.weight", true, 3, Di, 1, a->d_conv },
        { &lw->conv_b, "mamba.conv1d.bias", a->conv_bias, 1, Di, 0, 0 },
        { &lw->x_proj, "mamba.x_proj.0.weight", true, 2, R + 2 * N, Di, 0 },
        { &lw->dt_norm, "mamba.dt_layernorm.weight", a->inner_norms, 1, R, 0, 0 },
        { &lw->B_norm, "mamba.B_layernorm.weight", a->inner_norms, 1, N, 0, 0 },
        { &lw->C_norm, "mamba.C_layernorm.weight", a->inner_norms, 1, N, 0, 0 },
        { &lw->dt_proj_w, "mamba.dt_proj.0.weight", true, 2, Di, R, 0 },
        { &lw->dt_proj_b, "mamba.dt_proj.0.bias", true, 1, Di, 0, 0 },
        { &lw->A_log, "mamba.A_log.0", true, 2, Di, N, 0 },
        { &lw->D, "mamba.D.0", true, 1, Di, 0, 0 },
        { &lw->pre_avg1, "mamba.pre_avg_layernorm1.weight", true, 1, Di, 0, 0 },
        { &lw->pre_avg2, "mamba.pre_avg_layernorm2.weight", true, 1, Di, 0, 0 },
        { &lw->out_proj, "mamba.out_proj.weight", true, 2, H, Di, 0 },
        { &lw->pre_mlp_norm, "pre_moe_layernorm.weight", true, 1, H, 0, 0 },
        { &lw->gate, "moe.experts.0.gate_proj.weight", true, 2, a->intermediate, H, 0 },
        { &lw->up, "moe.experts.0.up_proj.weight", true, 2, a->intermediate, H, 0 },
        { &lw->down, "moe.experts.0.down_proj.weight", true, 2, H, a->intermediate, 0 },
    };
    char name[NAME_MAX_LEN];

    for (size_t i = 0; i < sizeof(spec) / sizeof(spec[0]); i++) {
        int r;
        snprintf(name, sizeof(name), "model.layers.%d.%s", L, spec[i].suffix);
        r = bind(b, spec[i].t, name, spec[i].required, spec[i].ndim, spec[i].d0, spec[i].d1,
                 spec[i].d2);
        if (r < 0)
            return r;
    }
    return 0;
}

static int bind_all(const bind_ctx *b)
{
    hy_model *m = b->m;
    const hy_arch *a = &m->arch;
    hy_weights *w = &m->w;
    int r;

    if ((r = bind(b, &w->embed, "model.embed_tokens.weight", true, 2, a->vocab, a->hidden, 0)) < 0 ||
        (r = bind(b, &w->memory_tokens, "model.memory_tokens", a->n_meta > 0, 2, a->n_meta,
                  a->hidden, 0)) < 0 ||
        (r = bind(b, &w->final_norm, "model.final_layernorm.weight", true, 1, a->hidden, 0, 0)) < 0)
        return r;
    if (m->cfg.tie_word_embeddings)
        w->lm_head = w->embed;
    else if ((r = bind(b, &w->lm_head, "lm_head.weight", true, 2, a->vocab, a->hidden, 0)) < 0)
        return r;
    for (int L = 0; L < a->n_layers; L++)
        if ((r = bind_layer(b, L, &m->layers[L])) < 0)
            return r;
    return 0;
}

static uint64_t tensor_bytes(const hy_tensor *t)
{
    uint64_t n = t->data ? hy_dtype_size(t->dt) : 0;
    for (int i = 0; i < t->ndim; i++)
        n *= (uint64_t)t->shape[i];
    return n;
}

/* Every layer weight + final norm + lm_head, read once per decode step. */
static uint64_t decode_weight_bytes(const hy_model *m)
{
    uint64_t n = tensor_bytes(&m->w.final_norm) + tensor_bytes(&m->w.lm_head);

    for (int L = 0; L < m->arch.n_layers; L++) {
        const hy_tensor *t = &m->layers[L].input_norm;
        const hy_tensor *end = &m->layers[L].down;
        for (; t <= end; t++)
            n += tensor_bytes(t);
    }
    return n;
}

/* SHA-256 over config.json bytes, then each shard's length prefix and header. */
static void fingerprint(hy_model *m, const char *cfg_txt, size_t cfg_len)
{
    hy_sha256 c;

    hy_sha256_init(&c);
    hy_sha256_update(&c, cfg_txt, cfg_len);
    for (int i = 0; i < m->n_files; i++)
        hy_sha256_update(&c, m->files[i]->map, 8 + m->files[i]->header_len);
    hy_sha256_final(&c, m->fingerprint);
}

static int open_config(hy_model *m, const char *dir, char **txt, size_t *len, hy_err *err)
{
    char *cpath = path_join(dir, "config.json");
    int r;

    if (!cpath)
        return hy_err_set(err, -ENOMEM, "out of memory");
    r = hy_config_load(cpath, &m->cfg, err);
    if (r == 0 && (r = hy_config_arch(&m->cfg, &m->arch, err)) < 0) {
        char msg[HY_ERR_MSG_MAX];
        const char *m0 = err ? err->msg : "";
        /* hy_config_arch says "config: ..."; name the actual file instead. */
        snprintf(msg, sizeof(msg), "%s", strncmp(m0, "config: ", 8) == 0 ? m0 + 8 : m0);
        hy_err_set(err, r, "%s: %s", cpath, msg);
    }
    if (r == 0)
        r = slurp(cpath, 16 << 20, txt, len, err);
    free(cpath);
    return r;
}

int hy_weights_open(hy_model *m, const char *dir, hy_err *err)
{
    char *cfg_txt = NULL, *single = NULL, *index = NULL;
    size_t cfg_len = 0;
    json_object *wmap = NULL;
    bind_ctx b = { .m = m, .err = err };
    int r;

    if (!(m->dir = strdup(dir)))
        return hy_err_set(err, -ENOMEM, "out of memory");
    if ((r = open_config(m, dir, &cfg_txt, &cfg_len, err)) < 0)
        goto out;
    single = path_join(dir, ST_SINGLE);
    index = path_join(dir, ST_INDEX);
    if (!single || !index) {
        r = hy_err_set(err, -ENOMEM, "out of memory");
        goto out;
    }
    /* Like HF from_pretrained: the single file wins over an index. */
    if (file_exists(single)) {
        r = open_shard(m, dir, ST_SINGLE, err);
        b.where = single;
    } else if (file_exists(index)) {
        r = open_index(m, dir, index, &wmap, err);
        b.where = index;
        b.weight_map = wmap;
    } else {
        r = hy_err_set(err, -ENOENT, "%s: neither %s nor %s is there", dir, ST_SINGLE, ST_INDEX);
    }
    if (r < 0)
        goto out;
    m->layers = calloc((size_t)m->arch.n_layers, sizeof(*m->layers));
    if (!m->layers) {
        r = hy_err_set(err, -ENOMEM, "out of memory");
        goto out;
    }
    m->w.layers = m->layers;
    if ((r = bind_all(&b)) < 0)
        goto out;
    fingerprint(m, cfg_txt, cfg_len);
    m->weight_bytes = decode_weight_bytes(m);
out:
    json_object_put(wmap);
    free(cfg_txt);
    free(single);
    free(index);
    return r;
}

void hy_weights_close(hy_model *m)
{
    for (int i = 0; i < m->n_files; i++)
        hy_st_close(m->files[i]);
    m->n_files = 0;
    free(m->layers);
    m->layers = NULL;
    m->w.layers = NULL;
    free(m->dir);
    m->dir = NULL;
}
