/* hymba.h: the engine's public API (model loading, conversation states, sampling). */
#ifndef HYMBA_ENGINE_HYMBA_H
#define HYMBA_ENGINE_HYMBA_H

/*
 * Users: daemon/ and tools/.  Not the client (it speaks D-Bus only).
 * Every call that can fail returns 0 or a negative errno and fills *err.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "kernels/backend.h"
#include "engine/config.h"

#define HY_FINGERPRINT_LEN 32

typedef struct hy_load_opts {
    const char *backend;     /* "cpu", "cuda" or "auto" (NULL = "auto": cuda if usable, else cpu) */
    int threads;             /* CPU threads, <= 0: all cores */
    int device;              /* GPU ordinal */
    int64_t max_ctx;         /* real tokens a conversation may hold; <= 0: max_position_embeddings */
    int prefill_chunk;       /* positions per prefill call; <= 0: the backend's (CPU 512, CUDA 2048) */
    hy_numerics num;
    bool verbose;            /* progress and the backend choice on stderr */
} hy_load_opts;

typedef struct hy_model hy_model;
typedef struct hy_seq hy_seq;

/* Load a Hugging Face checkpoint directory: config.json and model.safetensors
 * or the shards model.safetensors.index.json names (mmap, no conversion). */
int hy_model_load(const char *dir, const hy_load_opts *opts, hy_model **out, hy_err *err);
void hy_model_free(hy_model *m);

const hy_config *hy_model_config(const hy_model *m);
const hy_arch *hy_model_arch(const hy_model *m);
const char *hy_model_backend(const hy_model *m);        /* "cpu" / "cuda" */
const char *hy_model_dir(const hy_model *m);
/* SHA-256 over config.json and every safetensors header: a checkpoint of a
 * conversation never loads into another model. */
const uint8_t *hy_model_fingerprint(const hy_model *m);
int64_t hy_model_max_ctx(const hy_model *m);
void hy_model_stats(const hy_model *m, hy_backend_stats *out);
/* Bytes of weights one decode step reads (for roofline figures). */
uint64_t hy_model_weight_bytes(const hy_model *m);

/* A conversation: backend state + the real token ids it has consumed + the
 * logits after its last token. */
int hy_seq_new(hy_model *m, hy_seq **out, hy_err *err);
void hy_seq_free(hy_seq *s);
void hy_seq_reset(hy_model *m, hy_seq *s);              /* empty conversation */
int hy_seq_copy(hy_model *m, hy_seq *dst, const hy_seq *src, hy_err *err);
int64_t hy_seq_len(const hy_seq *s);                    /* real tokens consumed */
const int32_t *hy_seq_tokens(const hy_seq *s);          /* [hy_seq_len] */
const float *hy_seq_logits(const hy_seq *s);            /* [vocab] after the last token, or NULL */

/* Append n tokens (chunked internally).  logits_all: NULL or host [n, vocab]. */
int hy_seq_prefill(hy_model *m, hy_seq *s, const int32_t *tokens, int n,
                   float *logits_all, hy_err *err);
/* Append one token to each of B conversations in one backend call. */
int hy_seq_decode_batch(hy_model *m, hy_seq **seqs, const int32_t *tokens, int B, hy_err *err);

/* The backend state in its canonical image (kernels/state_image.h), plus the
 * token history and last logits restored by hy_seq_import: no forward pass. */
size_t hy_seq_state_size(hy_model *m, const hy_seq *s);
int hy_seq_state_export(hy_model *m, const hy_seq *s, void *buf, size_t len, hy_err *err);
int hy_seq_import(hy_model *m, hy_seq *s, const void *state, size_t state_len,
                  const int32_t *tokens, int64_t n_tokens, const float *logits, hy_err *err);

/* Sampling. */
typedef struct hy_sampling {
    float temperature;       /* <= 0: greedy */
    int top_k;               /* <= 0: off */
    float top_p;             /* >= 1: off */
    float min_p;             /* <= 0: off */
    float repeat_penalty;    /* 1: off */
    int repeat_last_n;       /* tokens of history the penalty looks at */
} hy_sampling;

typedef struct hy_rng {
    uint64_t s[4];           /* xoshiro256** */
} hy_rng;

void hy_sampling_default(hy_sampling *p);

/* Append tokens[b] to each of B conversations and choose each one's next
 * token next[b].  With a backend that samples on the device (CUDA), and a
 * repetition penalty off or over at most HY_SAMPLE_MAX_REPEAT (1024) recent
 * tokens, only the ids leave the device; keep_logits also copies the logits
 * (hy_seq_logits is NULL after a call without them).  Otherwise the logits
 * come back and hy_sample picks on the host. */
int hy_seq_decode_next(hy_model *m, hy_seq **seqs, const int32_t *tokens, int B, const hy_sampling *p,
                       hy_rng *rng, bool keep_logits, int32_t *next, hy_err *err);

/* The backend's device ceilings measured now (copy GB/s counting bytes read
 * and written, bf16 matrix TFLOP/s); -ENOTSUP for backends without them. */
int hy_model_device_ceilings(hy_model *m, double *copy_gbps, double *mm_tflops, hy_err *err);
void hy_rng_seed(hy_rng *r, uint64_t seed);
/* Pick the next token from logits[vocab].  history: recent tokens for the
 * repetition penalty.  Does not modify logits. */
int32_t hy_sample(const hy_sampling *p, hy_rng *rng, const float *logits, int vocab,
                  const int32_t *history, int64_t n_history);
/* The most likely id of logits[n] (the lowest on ties; NaNs never win). */
int32_t hy_argmax(const float *logits, int n);

#endif
