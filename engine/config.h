/* config.h: the Hymba config.json fields the engine reads, and their validation. */
#ifndef HYMBA_ENGINE_CONFIG_H
#define HYMBA_ENGINE_CONFIG_H

#include <stdbool.h>
#include <stdint.h>
#include "kernels/backend.h"

#define HY_MAX_KV_GROUPS 128

/* Values exactly as config.json gives them; derived sizes live in hy_arch. */
typedef struct hy_config {
    int vocab_size;
    int hidden_size;
    int num_hidden_layers;
    int num_attention_heads;
    int num_key_value_heads;
    int attn_hidden_size;        /* -1: hidden_size */
    int kq_head_dim;             /* -1: attn_hidden_size / heads */
    int v_head_dim;              /* informational: the reference recomputes d_inner / heads */
    char kq_norm[32];            /* only "none" is supported */
    bool rope;
    char rope_type[32];          /* only "ntk" is supported when rope is true */
    double rope_theta;
    int max_position_embeddings;
    int orig_max_position_embeddings;
    int sliding_window;
    int n_global;
    int global_attn_idx[HY_MAX_LAYERS];
    int num_memory_tokens;
    int memory_tokens_interspersed_every; /* only 0 is supported */
    int n_kv_groups;
    int kv_group_len[HY_MAX_KV_GROUPS];
    int kv_group[HY_MAX_KV_GROUPS][HY_MAX_LAYERS]; /* first = producer */
    int mamba_expand;
    int mamba_d_state;
    int mamba_d_conv;
    int mamba_dt_rank;           /* "auto" -> ceil(hidden / 16) */
    bool mamba_conv_bias;
    bool mamba_proj_bias;        /* only false is supported */
    bool mamba_inner_layernorms;
    int num_mamba;               /* only 1 is supported */
    char hidden_act[16];         /* only "silu" */
    char mlp_hidden_act[16];     /* only "silu" */
    int intermediate_size;
    int num_experts;             /* only 1 is supported */
    double rms_norm_eps;
    bool tie_word_embeddings;
    int bos_token_id, eos_token_id, pad_token_id;
    char torch_dtype[16];
} hy_config;

/* Parse dir/config.json (path given whole).  Unsupported values are refused
 * with a message naming the field and the value. */
int hy_config_load(const char *path, hy_config *cfg, hy_err *err);

/* Fill the backend's view of the model shape from a validated config. */
int hy_config_arch(const hy_config *cfg, hy_arch *arch, hy_err *err);

#endif
