/* model_internal.h: the layout of hy_model and hy_seq, shared by the engine/ sources only. */
#ifndef HYMBA_ENGINE_MODEL_INTERNAL_H
#define HYMBA_ENGINE_MODEL_INTERNAL_H

#include "engine/hymba.h"
#include "engine/safetensors.h"

#define HY_MAX_SHARDS 64

struct hy_model {
    char *dir;
    hy_config cfg;
    hy_arch arch;
    hy_numerics num;
    hy_weights w;                     /* views into the mmaps below */
    hy_layer_weights *layers;         /* [n_layers], owned; w.layers points here */
    hy_st_file *files[HY_MAX_SHARDS]; /* mmap'ed safetensors files */
    int n_files;
    uint8_t fingerprint[HY_FINGERPRINT_LEN];
    uint64_t weight_bytes;
    int64_t max_ctx;                  /* real tokens */
    int prefill_chunk;
    const hy_backend_ops *be;
    void *be_ctx;
    void *bm;                         /* backend model */
};

/* Backend-independent half of hy_model_load (engine/weights.c): read dir's
 * config.json, derive the arch, map model.safetensors (or the shards its
 * index names), bind and check every tensor, compute the fingerprint and the
 * decode weight bytes.  m must be zeroed; hy_weights_close undoes it (also
 * after a failed open). */
int hy_weights_open(hy_model *m, const char *dir, hy_err *err);
void hy_weights_close(hy_model *m);

struct hy_seq {
    hy_model *model;                  /* the model it was made for (hy_seq_free needs the backend) */
    void *st;                         /* backend state */
    int32_t *tokens;                  /* [cap] real token ids consumed */
    int64_t n_tokens, cap;
    float *logits;                    /* [vocab] after the last token */
    bool has_logits;
};

#endif
