/* test-config.c: config.json parsing, derived hy_arch values, and refusal of unsupported fields. */
#include "engine/config.h"
#include "tests/testutil.h"

#include <math.h>
#include <string.h>
#include <json-c/json.h>

/* A small valid config (the tiny golden model's shape), mutated field by field below. */
static const char base_json[] =
    "{\"model_type\": \"hymba\", \"vocab_size\": 512, \"hidden_size\": 64,"
    " \"num_hidden_layers\": 4, \"num_attention_heads\": 4, \"num_key_value_heads\": 2,"
    " \"attn_hidden_size\": -1, \"kq_head_dim\": -1, \"v_head_dim\": 32, \"kq_norm\": \"none\","
    " \"rope\": true, \"rope_type\": \"ntk\", \"rope_theta\": 10000.0,"
    " \"max_position_embeddings\": 8192, \"orig_max_position_embeddings\": 2048,"
    " \"sliding_window\": 16, \"global_attn_idx\": [0, 3], \"num_memory_tokens\": 8,"
    " \"memory_tokens_interspersed_every\": 0, \"kv_reuse_group\": [[1, 2]],"
    " \"mamba_expand\": 2, \"mamba_d_state\": 16, \"mamba_d_conv\": 4, \"mamba_dt_rank\": 8,"
    " \"mamba_conv_bias\": true, \"mamba_proj_bias\": false, \"mamba_inner_layernorms\": true,"
    " \"num_mamba\": 1, \"hidden_act\": \"silu\", \"mlp_hidden_act\": \"silu\","
    " \"intermediate_size\": 160, \"num_experts\": 1, \"num_experts_per_tok\": 1,"
    " \"rms_norm_eps\": 1e-06, \"tie_word_embeddings\": true, \"bos_token_id\": 1,"
    " \"eos_token_id\": 2, \"pad_token_id\": 0, \"torch_dtype\": \"float32\","
    " \"layer_type\": [\"h\", \"h\", \"h\", \"h\"]}";

static char *tmp_dir;

/* Write base_json with field set to value (JSON text) or removed (value NULL),
 * then load it and derive the arch.  Returns the first negative result or 0. */
static int load_mutated(const char *field, const char *value, hy_config *c, hy_arch *a, hy_err *err)
{
    json_object *root = json_tokener_parse(base_json);
    char path[4096];
    int r;

    if (field) {
        if (value)
            json_object_object_add(root, field, json_tokener_parse(value));
        else
            json_object_object_del(root, field);
    }
    snprintf(path, sizeof(path), "%s/config.json", tmp_dir);
    json_object_to_file(path, root);
    json_object_put(root);
    memset(err, 0, sizeof(*err));
    r = hy_config_load(path, c, err);
    if (r == 0)
        r = hy_config_arch(c, a, err);
    return r;
}

static void expect_refused(const char *field, const char *value, const char *needle)
{
    hy_config c;
    hy_arch a;
    hy_err err;
    int r = load_mutated(field, value, &c, &a, &err);

    CHECK(r < 0, "%s = %s was accepted", field, value ? value : "(removed)");
    CHECK(r >= 0 || strstr(err.msg, needle), "%s = %s: message \"%s\" does not name '%s'", field,
          value ? value : "(removed)", err.msg, needle);
    if (r < 0 && getenv("VERBOSE"))
        printf("  refused %s=%s: %s\n", field, value ? value : "-", err.msg);
}

static void test_base(void)
{
    hy_config c;
    hy_arch a;
    hy_err err;
    int r = load_mutated(NULL, NULL, &c, &a, &err);

    CHECK(r == 0, "base config refused: %s", err.msg);
    if (r)
        return;
    CHECK(a.head_dim == 16 && a.v_head_dim == 32 && a.d_inner == 128, "dims %d %d %d",
          a.head_dim, a.v_head_dim, a.d_inner);
    CHECK(a.is_global[0] && !a.is_global[1] && !a.is_global[2] && a.is_global[3], "globals");
    CHECK(a.kv_src[0] == 0 && a.kv_src[1] == 1 && a.kv_src[2] == 1 && a.kv_src[3] == 3, "kv_src");
    CHECK(a.n_kv_layers == 3, "n_kv_layers %d", a.n_kv_layers);
    /* q 64 + k 2*16 + v 2*32 + xs 128 + z 128 for owners; q + xs + z for the consumer. */
    CHECK(a.in_proj_rows[0] == 416 && a.in_proj_rows[2] == 320, "in_proj rows %d %d",
          a.in_proj_rows[0], a.in_proj_rows[2]);
    /* head_dim 16: base' = 1e4 * 7^(16/14). */
    CHECK(fabs(a.rope_base - 1e4 * pow(7.0, 16.0 / 14.0)) < 1e-6, "rope base %.9g", a.rope_base);
    CHECK(a.n_meta == 8 && a.window == 16 && a.dt_rank == 8, "meta/window/dt_rank");

    r = load_mutated("mamba_dt_rank", "\"auto\"", &c, &a, &err);
    CHECK(r == 0 && a.dt_rank == 4, "dt_rank auto for H=64: %d (%s)", a.dt_rank, err.msg);
    r = load_mutated("hidden_size", "72", &c, &a, &err);
    CHECK(r == 0, "H=72 refused: %s", err.msg);
    /* ceil(72/16) = 5. */
    {
        json_object *root = json_tokener_parse(base_json);
        char path[4096];
        json_object_object_add(root, "hidden_size", json_object_new_int(72));
        json_object_object_add(root, "mamba_dt_rank", json_object_new_string("auto"));
        snprintf(path, sizeof(path), "%s/config.json", tmp_dir);
        json_object_to_file(path, root);
        json_object_put(root);
        r = hy_config_load(path, &c, &err);
        CHECK(r == 0 && c.mamba_dt_rank == 5, "dt_rank auto for H=72: %d", c.mamba_dt_rank);
    }
}

static void test_refusals(void)
{
    expect_refused("kq_norm", "\"rms\"", "kq_norm");
    expect_refused("num_experts", "4", "num_experts");
    expect_refused("memory_tokens_interspersed_every", "8", "memory_tokens_interspersed_every");
    expect_refused("num_mamba", "2", "num_mamba");
    expect_refused("mamba_proj_bias", "true", "mamba_proj_bias");
    expect_refused("hidden_act", "\"gelu\"", "hidden_act");
    expect_refused("mlp_hidden_act", "\"relu\"", "mlp_hidden_act");
    expect_refused("rope_type", "\"linear\"", "rope_type");
    expect_refused("layer_type", "[\"h\", \"a\", \"h\", \"h\"]", "layer_type");
    expect_refused("layer_type", "[\"h\", \"h\"]", "layer_type");
    expect_refused("model_type", "\"llama\"", "model_type");
    expect_refused("kv_reuse_group", "[[2, 1]]", "kv_reuse_group");
    expect_refused("kv_reuse_group", "[[1, 2], [2, 3]]", "kv_reuse_group");
    expect_refused("kv_reuse_group", "[[0, 1]]", "kv_reuse_group");     /* global -> SWA */
    expect_refused("kv_reuse_group", "[[1, 7]]", "kv_reuse_group");     /* out of range */
    expect_refused("kv_reuse_group", "[[]]", "kv_reuse_group");
    expect_refused("kv_reuse_group", "\"1,2\"", "kv_reuse_group");
    expect_refused("global_attn_idx", "[0, 9]", "global_attn_idx");
    expect_refused("global_attn_idx", "[0, 0]", "global_attn_idx");
    expect_refused("hidden_size", "0", "hidden_size");
    expect_refused("hidden_size", NULL, "hidden_size");
    expect_refused("hidden_size", "\"64\"", "hidden_size");
    expect_refused("vocab_size", "-5", "vocab_size");
    expect_refused("intermediate_size", "0", "intermediate_size");
    expect_refused("sliding_window", "-1", "sliding_window");
    expect_refused("mamba_d_state", "0", "mamba_d_state");
    expect_refused("mamba_dt_rank", "\"big\"", "mamba_dt_rank");
    expect_refused("num_attention_heads", "3", "num_attention_heads");
    expect_refused("num_key_value_heads", "3", "num_key_value_heads");
    expect_refused("num_hidden_layers", "300", "num_hidden_layers");
    expect_refused("num_hidden_layers", "0", "num_hidden_layers");
    expect_refused("rms_norm_eps", "0", "rms_norm_eps");
    expect_refused("kq_head_dim", "0", "kq_head_dim");
    expect_refused("rope", "\"yes\"", "rope");
    expect_refused("eos_token_id", "600", "eos_token_id");
    expect_refused("num_memory_tokens", "-1", "num_memory_tokens");
}

static void test_malformed(void)
{
    char path[4096];
    hy_config c;
    hy_err err = { 0 };
    FILE *fp;
    static const char *bad[] = { "{\"vocab_size\": 5", "[1, 2]", "", "{\"a\": }" };

    snprintf(path, sizeof(path), "%s/config.json", tmp_dir);
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        fp = fopen(path, "w");
        fputs(bad[i], fp);
        fclose(fp);
        CHECK(hy_config_load(path, &c, &err) < 0 && strstr(err.msg, path),
              "malformed config %zu accepted or unnamed: %s", i, err.msg);
    }
    snprintf(path, sizeof(path), "%s/absent.json", tmp_dir);
    CHECK(hy_config_load(path, &c, &err) < 0 && strstr(err.msg, "absent.json"), "missing file");
}

/* The real 1.5B config must give spec §1.2 / §1.4 values. */
static void test_real_15b(const char *shared)
{
    char path[4096];
    hy_config c;
    hy_arch a;
    hy_err err = { 0 };
    static const int globals[] = { 0, 15, 31 };
    static const int consumers[][2] = {
        { 2, 1 }, { 4, 3 }, { 6, 5 }, { 8, 7 }, { 10, 9 }, { 12, 11 }, { 14, 13 }, { 17, 16 },
        { 18, 16 }, { 20, 19 }, { 22, 21 }, { 24, 23 }, { 26, 25 }, { 28, 27 }, { 30, 29 },
    };

    snprintf(path, sizeof(path), "%s/testdata/hymba-1.5b-config/config.json", shared);
    if (hy_config_load(path, &c, &err) < 0) {
        CHECK(0, "1.5B config refused: %s", err.msg);
        return;
    }
    CHECK(hy_config_arch(&c, &a, &err) == 0, "arch: %s", err.msg);
    CHECK(a.vocab == 32001 && a.hidden == 1600 && a.n_layers == 32, "sizes");
    CHECK(a.n_heads == 25 && a.n_kv_heads == 5, "heads");
    CHECK(a.head_dim == 64 && a.v_head_dim == 128 && a.d_inner == 3200, "dims %d %d %d",
          a.head_dim, a.v_head_dim, a.d_inner);
    CHECK(a.d_state == 16 && a.d_conv == 4 && a.dt_rank == 100, "mamba dims");
    CHECK(a.intermediate == 5504 && a.n_meta == 128 && a.window == 1024, "mlp/meta/window");
    CHECK(fabsf(a.eps - 1e-6f) == 0 && a.rope && a.conv_bias && a.inner_norms, "flags");
    CHECK(fabs(a.rope_base - 74534.83031811893) < 1e-7, "rope base %.17g", a.rope_base);
    CHECK((float)a.rope_base == 74534.828125f, "rope base as fp32");
    CHECK(c.tie_word_embeddings && c.bos_token_id == 1 && c.eos_token_id == 2, "tie/bos/eos");
    for (int L = 0; L < 32; L++) {
        bool g = L == globals[0] || L == globals[1] || L == globals[2];
        CHECK(a.is_global[L] == g, "layer %d global %d", L, a.is_global[L]);
    }
    int src[32];
    for (int L = 0; L < 32; L++)
        src[L] = L;
    for (size_t i = 0; i < sizeof(consumers) / sizeof(consumers[0]); i++)
        src[consumers[i][0]] = consumers[i][1];
    for (int L = 0; L < 32; L++) {
        CHECK(a.kv_src[L] == src[L], "layer %d kv_src %d want %d", L, a.kv_src[L], src[L]);
        CHECK(a.in_proj_rows[L] == (src[L] == L ? 8960 : 8000), "layer %d in_proj rows %d", L,
              a.in_proj_rows[L]);
    }
    CHECK(a.n_kv_layers == 17, "n_kv_layers %d", a.n_kv_layers);
}

int main(void)
{
    const char *shared;

    tmp_dir = hy_test_tmpdir();
    if (!tmp_dir) {
        printf("cannot make a temporary directory\n");
        return 1;
    }
    test_base();
    test_refusals();
    test_malformed();
    shared = hy_test_shared_dir();
    if (shared)
        test_real_15b(shared);
    else
        printf("note: the real 1.5B config check is skipped\n");
    hy_test_rmtree(tmp_dir);
    free(tmp_dir);
    return hy_test_done("test-config");
}
