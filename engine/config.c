/* config.c: parse a Hymba config.json (json-c), refuse what the engine cannot run, derive hy_arch. */
#include "engine/config.h"

#include <stddef.h>
#include <stdlib.h>

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <json-c/json.h>

/* The reference hard-codes the NTK scaling factor (spec §1.3). */
#define NTK_FACTOR 2.0
/* config.json of the 1.5B model is 2.9 kB; anything this large is not a config. */
#define CONFIG_MAX_BYTES (16 << 20)

/* A field lookup context: the file (for messages) and its root object. */
typedef struct cfg_src {
    const char *path;
    json_object *root;
    hy_err *err;
} cfg_src;

static int cfg_missing(const cfg_src *s, const char *field)
{
    return hy_err_set(s->err, -EINVAL, "%s: required field '%s' is missing", s->path, field);
}

static int cfg_badtype(const cfg_src *s, const char *field, const char *want)
{
    return hy_err_set(s->err, -EINVAL, "%s: field '%s' must be %s", s->path, field, want);
}

/* Integer field: absent -> def if !required.  JSON doubles with an integral
 * value are accepted (some writers emit 2.0). */
static int cfg_int(const cfg_src *s, const char *field, bool required, int def, int *out)
{
    json_object *v;

    if (!json_object_object_get_ex(s->root, field, &v) || !v) {
        if (required)
            return cfg_missing(s, field);
        *out = def;
        return 0;
    }
    if (json_object_is_type(v, json_type_int)) {
        int64_t x = json_object_get_int64(v);
        if (x < INT32_MIN || x > INT32_MAX)
            return hy_err_set(s->err, -ERANGE, "%s: field '%s' = %lld is out of range",
                              s->path, field, (long long)x);
        *out = (int)x;
        return 0;
    }
    if (json_object_is_type(v, json_type_double)) {
        double d = json_object_get_double(v);
        if (d == floor(d) && d >= INT32_MIN && d <= INT32_MAX) {
            *out = (int)d;
            return 0;
        }
    }
    return cfg_badtype(s, field, "an integer");
}

static int cfg_double(const cfg_src *s, const char *field, bool required, double def, double *out)
{
    json_object *v;

    if (!json_object_object_get_ex(s->root, field, &v) || !v) {
        if (required)
            return cfg_missing(s, field);
        *out = def;
        return 0;
    }
    if (!json_object_is_type(v, json_type_int) && !json_object_is_type(v, json_type_double))
        return cfg_badtype(s, field, "a number");
    *out = json_object_get_double(v);
    if (!isfinite(*out))
        return cfg_badtype(s, field, "a finite number");
    return 0;
}

static int cfg_bool(const cfg_src *s, const char *field, bool required, bool def, bool *out)
{
    json_object *v;

    if (!json_object_object_get_ex(s->root, field, &v) || !v) {
        if (required)
            return cfg_missing(s, field);
        *out = def;
        return 0;
    }
    if (!json_object_is_type(v, json_type_boolean))
        return cfg_badtype(s, field, "true or false");
    *out = json_object_get_boolean(v);
    return 0;
}

static int cfg_str(const cfg_src *s, const char *field, bool required, const char *def,
                   char *out, size_t cap)
{
    json_object *v;
    const char *str;

    if (!json_object_object_get_ex(s->root, field, &v) || !v) {
        if (required)
            return cfg_missing(s, field);
        str = def;
    } else {
        if (!json_object_is_type(v, json_type_string))
            return cfg_badtype(s, field, "a string");
        str = json_object_get_string(v);
    }
    if (strlen(str) >= cap)
        return hy_err_set(s->err, -EINVAL, "%s: field '%s' = \"%.40s...\" is not supported",
                          s->path, field, str);
    snprintf(out, cap, "%s", str);
    return 0;
}

/* Integer array element i of arr, in [0, limit). */
static int cfg_index(const cfg_src *s, const char *field, json_object *e, int limit, int *out)
{
    int64_t x;

    if (!json_object_is_type(e, json_type_int))
        return cfg_badtype(s, field, "an array of layer indices");
    x = json_object_get_int64(e);
    if (x < 0 || x >= limit)
        return hy_err_set(s->err, -EINVAL, "%s: field '%s' names layer %lld, outside [0, %d)",
                          s->path, field, (long long)x, limit);
    *out = (int)x;
    return 0;
}

static int cfg_global_idx(const cfg_src *s, hy_config *c)
{
    const char *f = "global_attn_idx";
    json_object *v;
    size_t n;

    c->n_global = 0;
    if (!json_object_object_get_ex(s->root, f, &v) || !v)
        return 0;
    if (!json_object_is_type(v, json_type_array))
        return cfg_badtype(s, f, "an array of layer indices");
    n = json_object_array_length(v);
    if (n > (size_t)c->num_hidden_layers)
        return hy_err_set(s->err, -EINVAL, "%s: field '%s' lists %zu layers, the model has %d",
                          s->path, f, n, c->num_hidden_layers);
    for (size_t i = 0; i < n; i++) {
        int L, r = cfg_index(s, f, json_object_array_get_idx(v, i), c->num_hidden_layers, &L);
        if (r < 0)
            return r;
        for (int j = 0; j < c->n_global; j++)
            if (c->global_attn_idx[j] == L)
                return hy_err_set(s->err, -EINVAL, "%s: field '%s' lists layer %d twice",
                                  s->path, f, L);
        c->global_attn_idx[c->n_global++] = L;
    }
    return 0;
}

static int cfg_kv_groups(const cfg_src *s, hy_config *c)
{
    const char *f = "kv_reuse_group";
    json_object *v;
    size_t n;

    c->n_kv_groups = 0;
    if (!json_object_object_get_ex(s->root, f, &v) || !v)
        return 0;
    if (!json_object_is_type(v, json_type_array))
        return cfg_badtype(s, f, "an array of arrays of layer indices");
    n = json_object_array_length(v);
    if (n > HY_MAX_KV_GROUPS)
        return hy_err_set(s->err, -E2BIG, "%s: field '%s' has %zu groups, limit %d",
                          s->path, f, n, HY_MAX_KV_GROUPS);
    for (size_t g = 0; g < n; g++) {
        json_object *grp = json_object_array_get_idx(v, g);
        size_t len;

        if (!json_object_is_type(grp, json_type_array))
            return cfg_badtype(s, f, "an array of arrays of layer indices");
        len = json_object_array_length(grp);
        if (len == 0 || len > (size_t)c->num_hidden_layers)
            return hy_err_set(s->err, -EINVAL, "%s: field '%s' group %zu has %zu layers",
                              s->path, f, g, len);
        for (size_t i = 0; i < len; i++) {
            int r = cfg_index(s, f, json_object_array_get_idx(grp, i), c->num_hidden_layers,
                              &c->kv_group[g][i]);
            if (r < 0)
                return r;
        }
        c->kv_group_len[g] = (int)len;
        c->n_kv_groups = (int)g + 1;
    }
    return 0;
}

static int cfg_layer_types(const cfg_src *s, const hy_config *c)
{
    const char *f = "layer_type";
    json_object *v;
    size_t n;

    if (!json_object_object_get_ex(s->root, f, &v) || !v)
        return 0;
    if (!json_object_is_type(v, json_type_array))
        return cfg_badtype(s, f, "an array of strings");
    n = json_object_array_length(v);
    if (n != (size_t)c->num_hidden_layers)
        return hy_err_set(s->err, -EINVAL, "%s: field '%s' has %zu entries, num_hidden_layers is %d",
                          s->path, f, n, c->num_hidden_layers);
    for (size_t i = 0; i < n; i++) {
        json_object *e = json_object_array_get_idx(v, i);
        const char *t = json_object_is_type(e, json_type_string) ? json_object_get_string(e) : "?";
        if (strcmp(t, "h") != 0)
            return hy_err_set(s->err, -ENOTSUP,
                              "%s: field '%s'[%zu] = \"%s\" is not supported (only \"h\", hybrid)",
                              s->path, f, i, t);
    }
    return 0;
}

/* mamba_dt_rank: an integer or "auto" (= ceil(hidden / 16)). */
static int cfg_dt_rank(const cfg_src *s, hy_config *c)
{
    json_object *v;

    if (json_object_object_get_ex(s->root, "mamba_dt_rank", &v) && v &&
        json_object_is_type(v, json_type_string)) {
        if (strcmp(json_object_get_string(v), "auto") != 0)
            return hy_err_set(s->err, -EINVAL, "%s: field 'mamba_dt_rank' = \"%s\" is not supported "
                              "(an integer or \"auto\")", s->path, json_object_get_string(v));
        c->mamba_dt_rank = (c->hidden_size + 15) / 16;
        return 0;
    }
    return cfg_int(s, "mamba_dt_rank", false, (c->hidden_size + 15) / 16, &c->mamba_dt_rank);
}

static int cfg_read_fields(const cfg_src *s, hy_config *c)
{
    int r = 0;
    char model_type[32];

    /* Sizes: required, every real config has them. */
    if ((r = cfg_int(s, "vocab_size", true, 0, &c->vocab_size)) < 0 ||
        (r = cfg_int(s, "hidden_size", true, 0, &c->hidden_size)) < 0 ||
        (r = cfg_int(s, "num_hidden_layers", true, 0, &c->num_hidden_layers)) < 0 ||
        (r = cfg_int(s, "num_attention_heads", true, 0, &c->num_attention_heads)) < 0 ||
        (r = cfg_int(s, "num_key_value_heads", true, 0, &c->num_key_value_heads)) < 0 ||
        (r = cfg_int(s, "intermediate_size", true, 0, &c->intermediate_size)) < 0 ||
        (r = cfg_int(s, "attn_hidden_size", false, -1, &c->attn_hidden_size)) < 0 ||
        (r = cfg_int(s, "kq_head_dim", false, -1, &c->kq_head_dim)) < 0 ||
        (r = cfg_int(s, "v_head_dim", false, -1, &c->v_head_dim)) < 0 ||
        (r = cfg_int(s, "sliding_window", true, 0, &c->sliding_window)) < 0 ||
        (r = cfg_int(s, "num_memory_tokens", true, 0, &c->num_memory_tokens)) < 0 ||
        (r = cfg_int(s, "memory_tokens_interspersed_every", false, 0,
                     &c->memory_tokens_interspersed_every)) < 0 ||
        (r = cfg_int(s, "mamba_expand", true, 0, &c->mamba_expand)) < 0 ||
        (r = cfg_int(s, "mamba_d_state", true, 0, &c->mamba_d_state)) < 0 ||
        (r = cfg_int(s, "mamba_d_conv", true, 0, &c->mamba_d_conv)) < 0 ||
        (r = cfg_int(s, "num_mamba", false, 1, &c->num_mamba)) < 0 ||
        (r = cfg_int(s, "num_experts", false, 1, &c->num_experts)) < 0 ||
        (r = cfg_int(s, "max_position_embeddings", true, 0, &c->max_position_embeddings)) < 0 ||
        (r = cfg_int(s, "bos_token_id", false, 1, &c->bos_token_id)) < 0 ||
        (r = cfg_int(s, "eos_token_id", false, 2, &c->eos_token_id)) < 0 ||
        (r = cfg_int(s, "pad_token_id", false, 0, &c->pad_token_id)) < 0)
        return r;
    if ((r = cfg_str(s, "kq_norm", false, "none", c->kq_norm, sizeof(c->kq_norm))) < 0 ||
        (r = cfg_bool(s, "rope", true, false, &c->rope)) < 0 ||
        (r = cfg_str(s, "rope_type", c->rope, "", c->rope_type, sizeof(c->rope_type))) < 0 ||
        (r = cfg_double(s, "rope_theta", c->rope, 10000.0, &c->rope_theta)) < 0 ||
        (r = cfg_int(s, "orig_max_position_embeddings", c->rope, c->max_position_embeddings,
                     &c->orig_max_position_embeddings)) < 0 ||
        (r = cfg_bool(s, "mamba_conv_bias", true, true, &c->mamba_conv_bias)) < 0 ||
        (r = cfg_bool(s, "mamba_proj_bias", false, false, &c->mamba_proj_bias)) < 0 ||
        (r = cfg_bool(s, "mamba_inner_layernorms", true, true, &c->mamba_inner_layernorms)) < 0 ||
        (r = cfg_str(s, "hidden_act", true, "", c->hidden_act, sizeof(c->hidden_act))) < 0 ||
        (r = cfg_str(s, "mlp_hidden_act", false, "silu", c->mlp_hidden_act,
                     sizeof(c->mlp_hidden_act))) < 0 ||
        (r = cfg_double(s, "rms_norm_eps", true, 0, &c->rms_norm_eps)) < 0 ||
        (r = cfg_bool(s, "tie_word_embeddings", false, true, &c->tie_word_embeddings)) < 0 ||
        (r = cfg_str(s, "torch_dtype", false, "", c->torch_dtype, sizeof(c->torch_dtype))) < 0 ||
        (r = cfg_str(s, "model_type", false, "hymba", model_type, sizeof(model_type))) < 0)
        return r;
    if (strcmp(model_type, "hymba") != 0)
        return hy_err_set(s->err, -ENOTSUP, "%s: field 'model_type' = \"%s\" is not supported "
                          "(only \"hymba\")", s->path, model_type);
    if ((r = cfg_dt_rank(s, c)) < 0)
        return r;
    if (c->num_hidden_layers <= 0 || c->num_hidden_layers > HY_MAX_LAYERS)
        return hy_err_set(s->err, -ENOTSUP, "%s: field 'num_hidden_layers' = %d is outside [1, %d]",
                          s->path, c->num_hidden_layers, HY_MAX_LAYERS);
    if ((r = cfg_global_idx(s, c)) < 0 || (r = cfg_kv_groups(s, c)) < 0 ||
        (r = cfg_layer_types(s, c)) < 0)
        return r;
    return 0;
}

static int refuse_str(const char *path, hy_err *err, const char *field, const char *val,
                      const char *want)
{
    return hy_err_set(err, -ENOTSUP, "%s: field '%s' = \"%s\" is not supported (only %s)",
                      path, field, val, want);
}

static int refuse_int(const char *path, hy_err *err, const char *field, long long val,
                      const char *want)
{
    return hy_err_set(err, -ENOTSUP, "%s: field '%s' = %lld is not supported (%s)",
                      path, field, val, want);
}

/* Features of HymbaConfig the engine does not implement. */
static int cfg_check_supported(const char *path, const hy_config *c, hy_err *err)
{
    if (strcmp(c->kq_norm, "none") != 0)
        return refuse_str(path, err, "kq_norm", c->kq_norm, "\"none\"");
    if (c->num_experts != 1)
        return refuse_int(path, err, "num_experts", c->num_experts, "only 1: a plain MLP");
    if (c->memory_tokens_interspersed_every != 0)
        return refuse_int(path, err, "memory_tokens_interspersed_every",
                          c->memory_tokens_interspersed_every, "only 0: meta tokens in front");
    if (c->num_mamba != 1)
        return refuse_int(path, err, "num_mamba", c->num_mamba, "only 1");
    if (c->mamba_proj_bias)
        return hy_err_set(err, -ENOTSUP, "%s: field 'mamba_proj_bias' = true is not supported "
                          "(only false: in_proj/out_proj have no bias)", path);
    if (strcmp(c->hidden_act, "silu") != 0)
        return refuse_str(path, err, "hidden_act", c->hidden_act, "\"silu\"");
    if (strcmp(c->mlp_hidden_act, "silu") != 0)
        return refuse_str(path, err, "mlp_hidden_act", c->mlp_hidden_act, "\"silu\"");
    if (c->rope && strcmp(c->rope_type, "ntk") != 0)
        return refuse_str(path, err, "rope_type", c->rope_type, "\"ntk\"");
    return 0;
}

/* Positive sizes and divisibility (messages name the field). */
static int cfg_check_sizes(const char *path, const hy_config *c, hy_err *err)
{
    static const struct { const char *name; size_t off; } pos[] = {
        { "vocab_size", offsetof(hy_config, vocab_size) },
        { "hidden_size", offsetof(hy_config, hidden_size) },
        { "num_attention_heads", offsetof(hy_config, num_attention_heads) },
        { "num_key_value_heads", offsetof(hy_config, num_key_value_heads) },
        { "intermediate_size", offsetof(hy_config, intermediate_size) },
        { "sliding_window", offsetof(hy_config, sliding_window) },
        { "mamba_expand", offsetof(hy_config, mamba_expand) },
        { "mamba_d_state", offsetof(hy_config, mamba_d_state) },
        { "mamba_d_conv", offsetof(hy_config, mamba_d_conv) },
        { "mamba_dt_rank", offsetof(hy_config, mamba_dt_rank) },
        { "max_position_embeddings", offsetof(hy_config, max_position_embeddings) },
    };
    for (size_t i = 0; i < sizeof(pos) / sizeof(pos[0]); i++) {
        int v = *(const int *)((const char *)c + pos[i].off);
        if (v <= 0)
            return hy_err_set(err, -EINVAL, "%s: field '%s' = %d must be positive",
                              path, pos[i].name, v);
    }
    if (c->num_memory_tokens < 0)
        return hy_err_set(err, -EINVAL, "%s: field 'num_memory_tokens' = %d is negative",
                          path, c->num_memory_tokens);
    if (c->attn_hidden_size != -1 && c->attn_hidden_size <= 0)
        return hy_err_set(err, -EINVAL, "%s: field 'attn_hidden_size' = %d must be positive or -1",
                          path, c->attn_hidden_size);
    if (c->kq_head_dim != -1 && c->kq_head_dim <= 0)
        return hy_err_set(err, -EINVAL, "%s: field 'kq_head_dim' = %d must be positive or -1",
                          path, c->kq_head_dim);
    if (!(c->rms_norm_eps > 0))
        return hy_err_set(err, -EINVAL, "%s: field 'rms_norm_eps' = %g must be positive",
                          path, c->rms_norm_eps);
    if (c->num_attention_heads % c->num_key_value_heads != 0)
        return hy_err_set(err, -EINVAL, "%s: num_attention_heads %d is not a multiple of "
                          "num_key_value_heads %d", path, c->num_attention_heads,
                          c->num_key_value_heads);
    if ((int64_t)c->mamba_expand * c->hidden_size > INT32_MAX / 4)
        return hy_err_set(err, -E2BIG, "%s: mamba_expand * hidden_size is too large", path);
    if (c->rope && !(c->rope_theta > 0))
        return hy_err_set(err, -EINVAL, "%s: field 'rope_theta' = %g must be positive",
                          path, c->rope_theta);
    if (c->rope && c->orig_max_position_embeddings <= 0)
        return hy_err_set(err, -EINVAL, "%s: field 'orig_max_position_embeddings' = %d must be "
                          "positive", path, c->orig_max_position_embeddings);
    for (int v = 0; v < 3; v++) {
        static const char *names[] = { "bos_token_id", "eos_token_id", "pad_token_id" };
        int id = v == 0 ? c->bos_token_id : v == 1 ? c->eos_token_id : c->pad_token_id;
        if (id < 0 || id >= c->vocab_size)
            return hy_err_set(err, -EINVAL, "%s: field '%s' = %d is outside the vocabulary [0, %d)",
                              path, names[v], id, c->vocab_size);
    }
    return 0;
}

int hy_config_load(const char *path, hy_config *cfg, hy_err *err)
{
    FILE *fp;
    char *buf = NULL;
    long len;
    json_tokener *tok;
    enum json_tokener_error jerr;
    cfg_src s = { .path = path, .err = err };
    int r;

    memset(cfg, 0, sizeof(*cfg));
    fp = fopen(path, "rb");
    if (!fp)
        return hy_err_set(err, -errno, "%s: cannot open: %s", path, strerror(errno));
    if (fseek(fp, 0, SEEK_END) != 0 || (len = ftell(fp)) < 0 || fseek(fp, 0, SEEK_SET) != 0) {
        r = hy_err_set(err, -EIO, "%s: cannot read", path);
        goto out;
    }
    if (len == 0 || len > CONFIG_MAX_BYTES) {
        r = hy_err_set(err, -EINVAL, "%s: size %ld bytes is not a config.json", path, len);
        goto out;
    }
    buf = malloc((size_t)len);
    if (!buf) {
        r = hy_err_set(err, -ENOMEM, "%s: out of memory", path);
        goto out;
    }
    if (fread(buf, 1, (size_t)len, fp) != (size_t)len) {
        r = hy_err_set(err, -EIO, "%s: short read", path);
        goto out;
    }
    tok = json_tokener_new();
    if (!tok) {
        r = hy_err_set(err, -ENOMEM, "%s: out of memory", path);
        goto out;
    }
    s.root = json_tokener_parse_ex(tok, buf, (int)len);
    jerr = json_tokener_get_error(tok);
    json_tokener_free(tok);
    if (!s.root || jerr != json_tokener_success) {
        r = hy_err_set(err, -EINVAL, "%s: not valid JSON: %s", path,
                       jerr == json_tokener_continue ? "unexpected end of file"
                                                     : json_tokener_error_desc(jerr));
        json_object_put(s.root);
        goto out;
    }
    if (!json_object_is_type(s.root, json_type_object)) {
        r = hy_err_set(err, -EINVAL, "%s: top level is not a JSON object", path);
    } else if ((r = cfg_read_fields(&s, cfg)) >= 0 &&
               (r = cfg_check_supported(path, cfg, err)) >= 0) {
        r = cfg_check_sizes(path, cfg, err);
    }
    json_object_put(s.root);
out:
    free(buf);
    fclose(fp);
    return r < 0 ? r : 0;
}

static bool cfg_is_global(const hy_config *c, int L)
{
    for (int i = 0; i < c->n_global; i++)
        if (c->global_attn_idx[i] == L)
            return true;
    return false;
}

/* kv_src from kv_reuse_group: producer first, consumers after it, each layer
 * at most once, producer and consumers of the same attention type. */
static int arch_kv_sources(const hy_config *c, hy_arch *a, hy_err *err)
{
    bool seen[HY_MAX_LAYERS] = { false };

    for (int L = 0; L < a->n_layers; L++)
        a->kv_src[L] = L;
    for (int g = 0; g < c->n_kv_groups; g++) {
        int prod = c->kv_group[g][0];
        for (int i = 0; i < c->kv_group_len[g]; i++) {
            int L = c->kv_group[g][i];
            if (seen[L])
                return hy_err_set(err, -EINVAL, "config: field 'kv_reuse_group' lists layer %d "
                                  "twice", L);
            seen[L] = true;
            if (i == 0)
                continue;
            if (L <= prod)
                return hy_err_set(err, -EINVAL, "config: field 'kv_reuse_group' group %d: "
                                  "consumer layer %d comes before its producer %d", g, L, prod);
            if (a->is_global[L] != a->is_global[prod])
                return hy_err_set(err, -EINVAL, "config: field 'kv_reuse_group' group %d: "
                                  "layer %d (%s) cannot reuse the K/V of layer %d (%s)", g, L,
                                  a->is_global[L] ? "global" : "SWA", prod,
                                  a->is_global[prod] ? "global" : "SWA");
            a->kv_src[L] = prod;
        }
    }
    a->n_kv_layers = 0;
    for (int L = 0; L < a->n_layers; L++)
        a->n_kv_layers += a->kv_src[L] == L;
    return 0;
}

/* Spec §1.3: static NTK, base' = theta * (f*max/orig - (f-1)) ^ (d / (d-2)). */
static int arch_rope_base(const hy_config *c, hy_arch *a, hy_err *err)
{
    double scale, d = a->head_dim;

    a->rope_base = c->rope_theta;
    if (!c->rope)
        return 0;
    if (a->head_dim % 2 != 0 || a->head_dim <= 2)
        return hy_err_set(err, -EINVAL, "config: RoPE needs an even head_dim > 2, got %d",
                          a->head_dim);
    scale = NTK_FACTOR * c->max_position_embeddings / c->orig_max_position_embeddings -
            (NTK_FACTOR - 1);
    if (!(scale > 0))
        return hy_err_set(err, -EINVAL, "config: NTK scale from max_position_embeddings %d and "
                          "orig_max_position_embeddings %d is not positive",
                          c->max_position_embeddings, c->orig_max_position_embeddings);
    a->rope_base = c->rope_theta * pow(scale, d / (d - 2));
    return 0;
}

int hy_config_arch(const hy_config *c, hy_arch *a, hy_err *err)
{
    int attn_hidden = c->attn_hidden_size == -1 ? c->hidden_size : c->attn_hidden_size;
    int64_t rows;

    memset(a, 0, sizeof(*a));
    a->vocab = c->vocab_size;
    a->hidden = c->hidden_size;
    a->n_layers = c->num_hidden_layers;
    a->n_heads = c->num_attention_heads;
    a->n_kv_heads = c->num_key_value_heads;
    if (c->kq_head_dim == -1 && attn_hidden % c->num_attention_heads != 0)
        return hy_err_set(err, -EINVAL, "config: attention width %d is not a multiple of "
                          "num_attention_heads %d", attn_hidden, c->num_attention_heads);
    a->head_dim = c->kq_head_dim == -1 ? attn_hidden / c->num_attention_heads : c->kq_head_dim;
    a->d_inner = c->mamba_expand * c->hidden_size;
    if (a->d_inner % c->num_attention_heads != 0)
        return hy_err_set(err, -EINVAL, "config: d_inner %d (mamba_expand * hidden_size) is not a "
                          "multiple of num_attention_heads %d", a->d_inner,
                          c->num_attention_heads);
    a->v_head_dim = a->d_inner / c->num_attention_heads;
    a->d_state = c->mamba_d_state;
    a->d_conv = c->mamba_d_conv;
    a->dt_rank = c->mamba_dt_rank;
    a->intermediate = c->intermediate_size;
    a->n_meta = c->num_memory_tokens;
    a->window = c->sliding_window;
    a->eps = (float)c->rms_norm_eps;
    a->rope = c->rope;
    a->conv_bias = c->mamba_conv_bias;
    a->inner_norms = c->mamba_inner_layernorms;
    if (a->n_layers <= 0 || a->n_layers > HY_MAX_LAYERS)
        return hy_err_set(err, -EINVAL, "config: num_hidden_layers %d outside [1, %d]",
                          a->n_layers, HY_MAX_LAYERS);
    for (int L = 0; L < a->n_layers; L++)
        a->is_global[L] = cfg_is_global(c, L);
    int r = arch_kv_sources(c, a, err);
    if (r < 0 || (r = arch_rope_base(c, a, err)) < 0)
        return r;
    for (int L = 0; L < a->n_layers; L++) {
        rows = (int64_t)a->n_heads * a->head_dim + 2 * (int64_t)a->d_inner;
        if (a->kv_src[L] == L)
            rows += (int64_t)a->n_kv_heads * (a->head_dim + a->v_head_dim);
        if (rows > INT32_MAX)
            return hy_err_set(err, -E2BIG, "config: in_proj of layer %d has too many rows", L);
        a->in_proj_rows[L] = (int)rows;
    }
    return 0;
}
