/* hymba-mkmodel: write a random-weight Hymba checkpoint directory in the Hugging Face layout. */
#include <config.h>   /* PACKAGE_VERSION */
#include "tools/mkmodel.h"
#include "engine/safetensors.h"

#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <json-c/json.h>

#define INIT_STD 0.02            /* initializer_range: Linear, Conv1d, Embedding */
#define DT_MIN 1e-3              /* Mamba dt init: log-uniform in [DT_MIN, DT_MAX] */
#define DT_MAX 1e-1
#define DT_FLOOR 1e-4
#define PAR_MIN_ELEMS (1 << 16)  /* smaller tensors are filled by one thread */
#define MAX_THREADS 64
#define PROGRESS_MIN_BYTES (64u << 20)
#define NAME_LEN 160

/* ---- presets ---------------------------------------------------------------- */

/* Shared shape of both presets (everything the real 1.5B config sets alike). */
#define PRESET_COMMON \
    .attn_hidden_size = -1, .kq_head_dim = -1, .kq_norm = "none", .rope = true, \
    .rope_type = "ntk", .rope_theta = 10000.0, .max_position_embeddings = 8192, \
    .orig_max_position_embeddings = 2048, .memory_tokens_interspersed_every = 0, \
    .mamba_expand = 2, .mamba_d_state = 16, .mamba_d_conv = 4, .mamba_conv_bias = true, \
    .mamba_proj_bias = false, .mamba_inner_layernorms = true, .num_mamba = 1, \
    .hidden_act = "silu", .mlp_hidden_act = "silu", .num_experts = 1, .rms_norm_eps = 1e-6, \
    .tie_word_embeddings = true, .bos_token_id = 1, .eos_token_id = 2, .pad_token_id = 0, \
    .torch_dtype = "bfloat16"

/* nvidia/Hymba-1.5B (spec §1.1). */
static const hy_config preset_15b = {
    PRESET_COMMON,
    .vocab_size = 32001, .hidden_size = 1600, .num_hidden_layers = 32,
    .num_attention_heads = 25, .num_key_value_heads = 5, .v_head_dim = 128,
    .sliding_window = 1024, .n_global = 3, .global_attn_idx = { 0, 15, 31 },
    .num_memory_tokens = 128, .mamba_dt_rank = 100, .intermediate_size = 5504,
    .n_kv_groups = 14,
    .kv_group_len = { 2, 2, 2, 2, 2, 2, 2, 3, 2, 2, 2, 2, 2, 2 },
    .kv_group = { { 1, 2 }, { 3, 4 }, { 5, 6 }, { 7, 8 }, { 9, 10 }, { 11, 12 }, { 13, 14 },
                  { 16, 17, 18 }, { 19, 20 }, { 21, 22 }, { 23, 24 }, { 25, 26 }, { 27, 28 },
                  { 29, 30 } },
};

/* The tiny golden model's shape: fast enough for every test. */
static const hy_config preset_tiny = {
    PRESET_COMMON,
    .vocab_size = 512, .hidden_size = 64, .num_hidden_layers = 4,
    .num_attention_heads = 4, .num_key_value_heads = 2, .v_head_dim = 32,
    .sliding_window = 16, .n_global = 2, .global_attn_idx = { 0, 3 },
    .num_memory_tokens = 8, .mamba_dt_rank = 8, .intermediate_size = 160,
    .n_kv_groups = 1, .kv_group_len = { 2 }, .kv_group = { { 1, 2 } },
};

/* ---- config.json -------------------------------------------------------------- */

/* A double as Python's repr writes it (shortest round trip, "10000.0", "1e-06"). */
static json_object *py_double(double d)
{
    char s[40], t[40];
    int p;

    for (p = 1; p < 17; p++) {
        snprintf(s, sizeof(s), "%.*g", p, d);
        if (strtod(s, NULL) == d)
            break;
    }
    int e = d == 0 ? 0 : (int)floor(log10(fabs(d)));
    if (e >= -4 && e < 16) {
        int frac = p - 1 - e > 1 ? p - 1 - e : 1;
        snprintf(t, sizeof(t), "%.*f", frac, d);
    } else {
        snprintf(t, sizeof(t), "%.*e", p - 1, d);
    }
    return json_object_new_double_s(d, t);
}

static json_object *int_array(const int *v, int n)
{
    json_object *a = json_object_new_array();
    for (int i = 0; i < n; i++)
        json_object_array_add(a, json_object_new_int(v[i]));
    return a;
}

#define ADD(k, v) json_object_object_add(o, k, v)
#define J_INT(x) json_object_new_int(x)
#define J_BOOL(x) json_object_new_boolean(x)
#define J_STR(x) json_object_new_string(x)

/* Every field of the HF HymbaConfig schema, keys sorted as HF writes them. */
static json_object *config_json(const hy_config *c)
{
    json_object *o = json_object_new_object(), *arch = json_object_new_array(),
                *amap = json_object_new_object(), *conv = json_object_new_object(),
                *groups = json_object_new_array(), *types = json_object_new_array();
    char key[16];

    json_object_array_add(arch, J_STR("HymbaForCausalLM"));
    json_object_object_add(amap, "AutoConfig", J_STR("configuration_hymba.HymbaConfig"));
    json_object_object_add(amap, "AutoModelForCausalLM", J_STR("modeling_hymba.HymbaForCausalLM"));
    for (int L = 0; L < c->num_hidden_layers; L++) {
        snprintf(key, sizeof(key), "%d", L);
        json_object_object_add(conv, key, J_INT(c->mamba_expand * c->hidden_size));
        json_object_array_add(types, J_STR("h"));
    }
    for (int g = 0; g < c->n_kv_groups; g++)
        json_object_array_add(groups, int_array(c->kv_group[g], c->kv_group_len[g]));
    ADD("architectures", arch);
    ADD("attention_dropout", py_double(0.0));
    ADD("attn_hidden_size", J_INT(c->attn_hidden_size));
    ADD("attn_implementation", J_STR("flex"));
    ADD("attn_implementation_new", J_STR("flex"));
    ADD("auto_map", amap);
    ADD("bos_token_id", J_INT(c->bos_token_id));
    ADD("calc_logits_for_entire_prompt", J_BOOL(0));
    ADD("conv_dim", conv);
    ADD("eos_token_id", J_INT(c->eos_token_id));
    ADD("global_attn_idx", int_array(c->global_attn_idx, c->n_global));
    ADD("hidden_act", J_STR(c->hidden_act));
    ADD("hidden_size", J_INT(c->hidden_size));
    ADD("initializer_range", py_double(INIT_STD));
    ADD("intermediate_size", J_INT(c->intermediate_size));
    ADD("kq_head_dim", J_INT(c->kq_head_dim));
    ADD("kq_norm", J_STR(c->kq_norm));
    ADD("kv_reuse_every_i_layer", J_INT(-1));
    ADD("kv_reuse_group", groups);
    ADD("kv_weight_reuse", J_BOOL(0));
    ADD("layer_type", types);
    ADD("mamba_conv_bias", J_BOOL(c->mamba_conv_bias));
    ADD("mamba_d_conv", J_INT(c->mamba_d_conv));
    ADD("mamba_d_state", J_INT(c->mamba_d_state));
    ADD("mamba_dt_rank", J_INT(c->mamba_dt_rank));
    ADD("mamba_expand", J_INT(c->mamba_expand));
    ADD("mamba_inner_layernorms", J_BOOL(c->mamba_inner_layernorms));
    ADD("mamba_proj_bias", J_BOOL(c->mamba_proj_bias));
    ADD("max_position_embeddings", J_INT(c->max_position_embeddings));
    ADD("memory_tokens_interspersed_every", J_INT(c->memory_tokens_interspersed_every));
    ADD("mlp_hidden_act", J_STR(c->mlp_hidden_act));
    ADD("model_type", J_STR("hymba"));
    ADD("num_attention_heads", J_INT(c->num_attention_heads));
    ADD("num_experts", J_INT(c->num_experts));
    ADD("num_experts_per_tok", J_INT(1));
    ADD("num_hidden_layers", J_INT(c->num_hidden_layers));
    ADD("num_key_value_heads", J_INT(c->num_key_value_heads));
    ADD("num_mamba", J_INT(c->num_mamba));
    ADD("num_memory_tokens", J_INT(c->num_memory_tokens));
    ADD("orig_max_position_embeddings", J_INT(c->orig_max_position_embeddings));
    ADD("output_router_logits", J_BOOL(0));
    ADD("pad_token_id", J_INT(c->pad_token_id));
    ADD("rms_norm_eps", py_double(c->rms_norm_eps));
    ADD("rope", J_BOOL(c->rope));
    ADD("rope_theta", py_double(c->rope_theta));
    ADD("rope_type", J_STR(c->rope_type));
    ADD("router_aux_loss_coef", py_double(0.001));
    ADD("seq_length", J_INT(c->max_position_embeddings));
    ADD("sliding_window", J_INT(c->sliding_window));
    ADD("tie_word_embeddings", J_BOOL(c->tie_word_embeddings));
    ADD("torch_dtype", J_STR(c->torch_dtype));
    ADD("transformers_version", J_STR("4.44.0"));
    ADD("use_cache", J_BOOL(0));
    ADD("use_mamba_kernels", J_BOOL(1));
    ADD("v_head_dim", J_INT(c->mamba_expand * c->hidden_size / c->num_attention_heads));
    ADD("vocab_size", J_INT(c->vocab_size));
    return o;
}

static json_object *generation_config_json(const hy_config *c)
{
    json_object *o = json_object_new_object();
    ADD("_from_model_config", J_BOOL(1));
    ADD("bos_token_id", J_INT(c->bos_token_id));
    ADD("eos_token_id", J_INT(c->eos_token_id));
    ADD("pad_token_id", J_INT(c->pad_token_id));
    ADD("transformers_version", J_STR("4.44.0"));
    ADD("use_cache", J_BOOL(0));
    return o;
}

/* ---- weights ------------------------------------------------------------------ */

/* How a tensor is initialized (the reference's _init_weights + Mamba's own init). */
typedef enum init_kind {
    INIT_NORMAL,     /* N(0, INIT_STD): Linear, Conv1d weights */
    INIT_EMBED,      /* N(0, INIT_STD), row pad_token_id zero */
    INIT_META,       /* N(0, 1): memory tokens */
    INIT_ONES,       /* RMSNorm weights, D */
    INIT_ZEROS,      /* conv bias */
    INIT_A_LOG,      /* log(1..N) per row */
    INIT_DT_BIAS,    /* inverse softplus of a log-uniform dt */
} init_kind;

typedef struct mk_tensor {
    char name[NAME_LEN];
    init_kind kind;
} mk_tensor;

typedef struct mk_model {
    const hy_config *cfg;
    hy_arch arch;
    uint64_t seed;
    hy_st_dtype dt;
    int threads;
    mk_tensor *t;            /* [n] */
    hy_st_out *out;          /* [n]: names, shapes (data unused: streamed) */
    size_t n, cap;
    uint64_t total_bytes, done_bytes;
    int last_pct;
    bool progress, tty;
    struct timespec t0;
} mk_model;

static int mk_add(mk_model *m, const char *name, init_kind kind, int ndim, int64_t d0,
                  int64_t d1, int64_t d2)
{
    if (m->n == m->cap) {
        size_t cap = m->cap ? 2 * m->cap : 64;
        mk_tensor *t = realloc(m->t, cap * sizeof(*t));
        hy_st_out *o = t ? realloc(m->out, cap * sizeof(*o)) : NULL;
        if (t)
            m->t = t;
        if (!o)
            return -ENOMEM;
        m->out = o;
        m->cap = cap;
    }
    mk_tensor *t = &m->t[m->n];
    hy_st_out *o = &m->out[m->n];
    snprintf(t->name, sizeof(t->name), "%s", name);
    t->kind = kind;
    memset(o, 0, sizeof(*o));
    o->dtype = m->dt;
    o->ndim = ndim;
    o->shape[0] = d0;
    o->shape[1] = d1;
    o->shape[2] = d2;
    m->total_bytes += (uint64_t)hy_st_nbytes(o->dtype, ndim, o->shape);
    m->n++;
    return 0;
}

/* Spec §2's tensor list for this arch, in checkpoint order. */
static int mk_plan(mk_model *m)
{
    const hy_arch *a = &m->arch;
    const int64_t H = a->hidden, Di = a->d_inner, N = a->d_state, R = a->dt_rank;
    char nm[NAME_LEN];
    int r = 0;

#define LAYER(suffix, kind, nd, x, y, z) \
    (snprintf(nm, sizeof(nm), "model.layers.%d." suffix, L), mk_add(m, nm, kind, nd, x, y, z))
    r |= mk_add(m, "model.embed_tokens.weight", INIT_EMBED, 2, a->vocab, H, 0);
    if (a->n_meta > 0)
        r |= mk_add(m, "model.memory_tokens", INIT_META, 2, a->n_meta, H, 0);
    for (int L = 0; L < a->n_layers && r == 0; L++) {
        r |= LAYER("input_layernorm.weight", INIT_ONES, 1, H, 0, 0);
        r |= LAYER("mamba.in_proj.weight", INIT_NORMAL, 2, a->in_proj_rows[L], H, 0);
        r |= LAYER("mamba.conv1d.weight", INIT_NORMAL, 3, Di, 1, a->d_conv);
        if (a->conv_bias)
            r |= LAYER("mamba.conv1d.bias", INIT_ZEROS, 1, Di, 0, 0);
        r |= LAYER("mamba.x_proj.0.weight", INIT_NORMAL, 2, R + 2 * N, Di, 0);
        if (a->inner_norms) {
            r |= LAYER("mamba.dt_layernorm.weight", INIT_ONES, 1, R, 0, 0);
            r |= LAYER("mamba.B_layernorm.weight", INIT_ONES, 1, N, 0, 0);
            r |= LAYER("mamba.C_layernorm.weight", INIT_ONES, 1, N, 0, 0);
        }
        r |= LAYER("mamba.dt_proj.0.weight", INIT_NORMAL, 2, Di, R, 0);
        r |= LAYER("mamba.dt_proj.0.bias", INIT_DT_BIAS, 1, Di, 0, 0);
        r |= LAYER("mamba.A_log.0", INIT_A_LOG, 2, Di, N, 0);
        r |= LAYER("mamba.D.0", INIT_ONES, 1, Di, 0, 0);
        r |= LAYER("mamba.pre_avg_layernorm1.weight", INIT_ONES, 1, Di, 0, 0);
        r |= LAYER("mamba.pre_avg_layernorm2.weight", INIT_ONES, 1, Di, 0, 0);
        r |= LAYER("mamba.out_proj.weight", INIT_NORMAL, 2, H, Di, 0);
        r |= LAYER("pre_moe_layernorm.weight", INIT_ONES, 1, H, 0, 0);
        r |= LAYER("moe.experts.0.gate_proj.weight", INIT_NORMAL, 2, a->intermediate, H, 0);
        r |= LAYER("moe.experts.0.up_proj.weight", INIT_NORMAL, 2, a->intermediate, H, 0);
        r |= LAYER("moe.experts.0.down_proj.weight", INIT_NORMAL, 2, H, a->intermediate, 0);
    }
#undef LAYER
    r |= mk_add(m, "model.final_layernorm.weight", INIT_ONES, 1, H, 0, 0);
    if (!m->cfg->tie_word_embeddings)
        r |= mk_add(m, "lm_head.weight", INIT_NORMAL, 2, a->vocab, H, 0);
    for (size_t i = 0; i < m->n; i++)
        m->out[i].name = m->t[i].name;
    return r ? -ENOMEM : 0;
}

/* Counter-based randomness: value k of a tensor depends only on (seed, name, k),
 * so threads can fill any range and the result never depends on the split. */
static uint64_t mix64(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static uint64_t name_key(uint64_t seed, const char *name)
{
    uint64_t h = 0xcbf29ce484222325ull;                /* FNV-1a */
    for (; *name; name++)
        h = (h ^ (uint8_t)*name) * 0x100000001b3ull;
    return mix64(seed ^ mix64(h));
}

/* Uniform in (0, 1): never 0, so log() is safe. */
static double uniform(uint64_t key, uint64_t k)
{
    return ((double)(mix64(key + 0x9e3779b97f4a7c15ull * (k + 1)) >> 11) + 0.5) * 0x1p-53;
}

/* Standard normals 2p and 2p+1: Box-Muller over the uniforms 2p, 2p+1, in float
 * (the weights are stored as bf16 or f32 anyway; float libm halves the time). */
static void normal_pair(uint64_t key, uint64_t p, double *z0, double *z1)
{
    float u1 = (float)uniform(key, 2 * p), u2 = (float)uniform(key, 2 * p + 1);
    float rad = sqrtf(-2.0f * logf(u1)), s, c;
    sincosf(2.0f * (float)M_PI * u2, &s, &c);
    *z0 = rad * c;
    *z1 = rad * s;
}

static double normal(uint64_t key, uint64_t k)
{
    double z[2];
    normal_pair(key, k / 2, &z[0], &z[1]);
    return z[k & 1];
}

static double init_value(const mk_model *m, const mk_tensor *t, const hy_st_out *o,
                         uint64_t key, uint64_t k)
{
    switch (t->kind) {
    case INIT_NORMAL:
        return INIT_STD * normal(key, k);
    case INIT_EMBED:
        if ((int64_t)(k / (uint64_t)o->shape[1]) == m->cfg->pad_token_id)
            return 0;
        return INIT_STD * normal(key, k);
    case INIT_META:
        return normal(key, k);
    case INIT_ONES:
        return 1;
    case INIT_ZEROS:
        return 0;
    case INIT_A_LOG:
        return log((double)(k % (uint64_t)o->shape[1]) + 1);
    case INIT_DT_BIAS: {
        double dt = exp(uniform(key, k) * (log(DT_MAX) - log(DT_MIN)) + log(DT_MIN));
        dt = dt < DT_FLOOR ? DT_FLOOR : dt;
        return dt + log(-expm1(-dt));                 /* softplus^-1(dt) */
    }
    }
    return 0;
}

typedef struct fill_job {
    const mk_model *m;
    size_t index;
    void *buf;
    uint64_t begin, end;     /* element range */
} fill_job;

static void *fill_range(void *arg)
{
    fill_job *j = arg;
    const mk_tensor *t = &j->m->t[j->index];
    const hy_st_out *o = &j->m->out[j->index];
    uint64_t key = name_key(j->m->seed, t->name);

    for (uint64_t k = j->begin; k < j->end; k++) {
        double v[2];
        int nv = 1;
        /* Plain normals come in Box-Muller pairs: one log/sqrt/sincos for two values. */
        if (t->kind == INIT_NORMAL && !(k & 1) && k + 1 < j->end) {
            normal_pair(key, k / 2, &v[0], &v[1]);
            v[0] *= INIT_STD;
            v[1] *= INIT_STD;
            nv = 2;
        } else {
            v[0] = init_value(j->m, t, o, key, k);
        }
        for (int i = 0; i < nv; i++) {
            if (o->dtype == HY_ST_F32)
                ((float *)j->buf)[k + i] = (float)v[i];
            else
                ((uint16_t *)j->buf)[k + i] = hy_f32_to_bf16((float)v[i]);
        }
        k += nv - 1;
    }
    return NULL;
}

static void progress(mk_model *m, size_t nbytes)
{
    struct timespec now;
    int pct;

    m->done_bytes += nbytes;
    if (!m->progress)
        return;
    pct = (int)(100 * m->done_bytes / (m->total_bytes ? m->total_bytes : 1));
    if (pct == m->last_pct || (!m->tty && pct / 10 == m->last_pct / 10 && pct != 100))
        return;
    m->last_pct = pct;
    clock_gettime(CLOCK_MONOTONIC, &now);
    fprintf(stderr, "%swriting model.safetensors: %3d%% (%.2f / %.2f GB, %.1f s)%s",
            m->tty ? "\r" : "", pct, m->done_bytes / 1e9, m->total_bytes / 1e9,
            (double)(now.tv_sec - m->t0.tv_sec) + (now.tv_nsec - m->t0.tv_nsec) / 1e9,
            m->tty && pct < 100 ? "" : "\n");
}

/* hy_st_write_stream callback: generate tensor index into buf, in parallel when large. */
static int fill_tensor(void *user, size_t index, void *buf, size_t nbytes, hy_err *err)
{
    mk_model *m = user;
    uint64_t n = nbytes / hy_st_dtype_size(m->out[index].dtype);
    int nt = n >= PAR_MIN_ELEMS ? m->threads : 1;
    pthread_t tid[MAX_THREADS];
    bool started[MAX_THREADS] = { false };
    fill_job jobs[MAX_THREADS];

    for (int i = 0; i < nt; i++) {
        jobs[i] = (fill_job){ m, index, buf, n * (uint64_t)i / (uint64_t)nt,
                              n * (uint64_t)(i + 1) / (uint64_t)nt };
        /* The last range, or one whose thread failed to start, runs here. */
        started[i] = i < nt - 1 && pthread_create(&tid[i], NULL, fill_range, &jobs[i]) == 0;
        if (!started[i])
            fill_range(&jobs[i]);
    }
    for (int i = 0; i < nt; i++)
        if (started[i])
            pthread_join(tid[i], NULL);
    (void)err;
    progress(m, nbytes);
    return 0;
}

/* ---- command line --------------------------------------------------------------- */

static void usage(FILE *fp)
{
    fprintf(fp,
        "Usage: hymba-mkmodel [OPTION]... OUTDIR\n"
        "Write a random-weight Hymba checkpoint (config.json, model.safetensors, a small BPE\n"
        "tokenizer and tokenizer_config.json with the Hymba chat template) into OUTDIR.\n\n"
        "  --preset tiny|1.5b     model shape (default tiny; 1.5b = nvidia/Hymba-1.5B)\n"
        "  --config FILE          take the shape from a Hymba config.json instead\n"
        "  --seed N               random seed (default 0); the same seed gives the same bytes\n"
        "  --dtype bf16|f32       weight dtype (default bf16, or the config's torch_dtype)\n"
        "  --tokenizer-from DIR   copy the tokenizer files from DIR instead of generating them\n"
        "  --threads N            threads generating weights (default: online CPUs)\n"
        "  --no-weights           write config.json and the tokenizer files only\n"
        "  -q, --quiet            no progress output\n"
        "  -h, --help             this help\n"
        "  -V, --version          version\n\n"
        "Init as the reference: N(0, 0.02) for Linear/Conv1d/Embedding (pad row zero),\n"
        "memory tokens N(0, 1), A_log = log(1..N), dt bias = softplus^-1(dt), dt log-uniform\n"
        "in [1e-3, 1e-1], D = 1, norm weights 1, conv bias 0.\n");
}

typedef struct mk_opts {
    const char *preset, *config, *tok_from, *outdir, *dtype;
    uint64_t seed;
    int threads;
    bool quiet, no_weights;
} mk_opts;

/* 0 ok, 1 exit now with success (help/version), 2 usage error. */
static int parse_args(int argc, char **argv, mk_opts *o)
{
    enum { OPT_PRESET = 256, OPT_CONFIG, OPT_SEED, OPT_DTYPE, OPT_TOK, OPT_THREADS, OPT_NOW };
    static const struct option lo[] = {
        { "preset", required_argument, NULL, OPT_PRESET },
        { "config", required_argument, NULL, OPT_CONFIG },
        { "seed", required_argument, NULL, OPT_SEED },
        { "dtype", required_argument, NULL, OPT_DTYPE },
        { "tokenizer-from", required_argument, NULL, OPT_TOK },
        { "threads", required_argument, NULL, OPT_THREADS },
        { "no-weights", no_argument, NULL, OPT_NOW },
        { "quiet", no_argument, NULL, 'q' },
        { "help", no_argument, NULL, 'h' },
        { "version", no_argument, NULL, 'V' },
        { 0 },
    };
    int c;
    char *end;

    while ((c = getopt_long(argc, argv, "qhV", lo, NULL)) != -1) {
        switch (c) {
        case OPT_PRESET: o->preset = optarg; break;
        case OPT_CONFIG: o->config = optarg; break;
        case OPT_DTYPE: o->dtype = optarg; break;
        case OPT_TOK: o->tok_from = optarg; break;
        case OPT_SEED:
            errno = 0;
            o->seed = strtoull(optarg, &end, 0);
            if (errno || *end || !*optarg || optarg[0] == '-') {
                fprintf(stderr, "hymba-mkmodel: --seed: '%s' is not a non-negative integer\n",
                        optarg);
                return 2;
            }
            break;
        case OPT_THREADS:
            o->threads = (int)strtol(optarg, &end, 10);
            if (*end || o->threads < 1 || o->threads > MAX_THREADS) {
                fprintf(stderr, "hymba-mkmodel: --threads: '%s' is not in 1..%d\n", optarg,
                        MAX_THREADS);
                return 2;
            }
            break;
        case OPT_NOW: o->no_weights = true; break;
        case 'q': o->quiet = true; break;
        case 'h': usage(stdout); return 1;
        case 'V': printf("hymba-mkmodel " PACKAGE_VERSION "\n"); return 1;
        default: usage(stderr); return 2;
        }
    }
    if (optind != argc - 1) {
        fprintf(stderr, "hymba-mkmodel: exactly one OUTDIR is required\n");
        usage(stderr);
        return 2;
    }
    o->outdir = argv[optind];
    if (o->preset && o->config) {
        fprintf(stderr, "hymba-mkmodel: --preset and --config exclude each other\n");
        return 2;
    }
    if (o->preset && strcmp(o->preset, "tiny") != 0 && strcmp(o->preset, "1.5b") != 0) {
        fprintf(stderr, "hymba-mkmodel: --preset: '%s' is not tiny or 1.5b\n", o->preset);
        return 2;
    }
    if (o->dtype && strcmp(o->dtype, "bf16") != 0 && strcmp(o->dtype, "f32") != 0) {
        fprintf(stderr, "hymba-mkmodel: --dtype: '%s' is not bf16 or f32\n", o->dtype);
        return 2;
    }
    return 0;
}

static int write_model(mk_model *m, const char *outdir, hy_err *err)
{
    char path[4096], tmp[4200];
    int r;

    snprintf(path, sizeof(path), "%s/model.safetensors", outdir);
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    clock_gettime(CLOCK_MONOTONIC, &m->t0);
    r = hy_st_write_stream(tmp, m->out, m->n, fill_tensor, m, err);
    if (r == 0 && rename(tmp, path) != 0)
        r = hy_err_set(err, -errno, "%s: rename: %s", path, strerror(errno));
    return r;
}

static int run(const mk_opts *o, hy_err *err)
{
    static hy_config cfg;    /* large (per-layer arrays): not on the stack */
    mk_model m = { .seed = o->seed, .last_pct = -1 };
    json_object *js;
    int r;

    if (o->config) {
        if ((r = hy_config_load(o->config, &cfg, err)) < 0)
            return r;
    } else {
        cfg = o->preset && strcmp(o->preset, "1.5b") == 0 ? preset_15b : preset_tiny;
    }
    if (o->dtype)
        m.dt = strcmp(o->dtype, "f32") == 0 ? HY_ST_F32 : HY_ST_BF16;
    else
        m.dt = o->config && strcmp(cfg.torch_dtype, "float32") == 0 ? HY_ST_F32 : HY_ST_BF16;
    snprintf(cfg.torch_dtype, sizeof(cfg.torch_dtype), "%s",
             m.dt == HY_ST_F32 ? "float32" : "bfloat16");
    m.cfg = &cfg;
    if ((r = hy_config_arch(&cfg, &m.arch, err)) < 0)
        return r;
    if (mkdir(o->outdir, 0755) < 0 && errno != EEXIST)
        return hy_err_set(err, -errno, "%s: cannot create: %s", o->outdir, strerror(errno));
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    m.threads = o->threads > 0 ? o->threads : ncpu > MAX_THREADS ? MAX_THREADS : ncpu > 0 ? (int)ncpu : 1;
    if ((r = mk_plan(&m)) < 0) {
        r = hy_err_set(err, r, "out of memory");
        goto out;
    }
    m.progress = !o->quiet && m.total_bytes >= PROGRESS_MIN_BYTES;
    m.tty = isatty(STDERR_FILENO);
    js = config_json(&cfg);
    r = mk_json_write(o->outdir, "config.json", js, err);
    json_object_put(js);
    if (r < 0)
        goto out;
    js = generation_config_json(&cfg);
    r = mk_json_write(o->outdir, "generation_config.json", js, err);
    json_object_put(js);
    if (r < 0)
        goto out;
    if (o->tok_from)
        r = mk_tokenizer_copy(o->outdir, o->tok_from, err);
    else
        r = mk_tokenizer_write(o->outdir, &cfg, err);
    if (r == 0 && !o->no_weights)
        r = write_model(&m, o->outdir, err);
out:
    free(m.t);
    free(m.out);
    return r;
}

int main(int argc, char **argv)
{
    mk_opts o = { 0 };
    hy_err err = { 0 };
    int r = parse_args(argc, argv, &o);

    if (r == 1)
        return 0;
    if (r == 2)
        return 2;
    if (run(&o, &err) < 0) {
        fprintf(stderr, "hymba-mkmodel: %s\n", err.msg);
        return 1;
    }
    return 0;
}
