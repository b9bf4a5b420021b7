/* tok.h: the Llama/SentencePiece BPE tokenizer of tokenizer.json, and streaming detokenization. */
#ifndef HYMBA_ENGINE_TOK_H
#define HYMBA_ENGINE_TOK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "kernels/backend.h"

/*
 * Exactly what Hugging Face tokenizers computes for this schema: added tokens
 * split out first (leftmost-longest; lstrip/rstrip/normalized honoured), the
 * normalizer (Prepend/Replace) on each remaining segment, then BPE merges by
 * rank (ties leftmost) with byte fallback and unk fusing; the decoder sequence
 * Replace, ByteFallback, Fuse, Strip.  Anything else in tokenizer.json is
 * refused at load with a message naming the field and value.
 * A loaded hy_tok is immutable: encode/decode may run on several threads.
 */
typedef struct hy_tok hy_tok;

/* Load dir/tokenizer.json and dir/tokenizer_config.json (add_bos_token, chat template). */
int hy_tok_load(const char *dir, hy_tok **out, hy_err *err);
void hy_tok_free(hy_tok *t);

int hy_tok_vocab_size(const hy_tok *t);
int32_t hy_tok_bos(const hy_tok *t);
int32_t hy_tok_eos(const hy_tok *t);
bool hy_tok_add_bos(const hy_tok *t);      /* tokenizer_config.json add_bos_token */

/* Encode len bytes of text.  add_bos: put BOS first.  *ids is malloc'ed.
 * Bytes that are not valid UTF-8 are encoded one by one through byte fallback. */
int hy_tok_encode(const hy_tok *t, const char *text, size_t len, bool add_bos,
                  int32_t **ids, size_t *n_ids, hy_err *err);

/* The piece string of one id (NULL if out of range or a hole in the vocab).
 * Added tokens give their content. */
const char *hy_tok_piece(const hy_tok *t, int32_t id);
/* True for added tokens marked special (skipped by skip_special decoding). */
bool hy_tok_is_special(const hy_tok *t, int32_t id);
/* tokenizer_config.json chat_template (the Jinja source), or NULL. */
const char *hy_tok_chat_template(const hy_tok *t);

/* Streaming decoder: push ids one at a time, get back only complete, valid
 * UTF-8 (byte-fallback pieces are held until their character is complete). */
typedef struct hy_detok hy_detok;
hy_detok *hy_detok_new(const hy_tok *t, bool skip_special);
void hy_detok_free(hy_detok *d);
/* Appends the text that became complete to *out (malloc'ed/realloc'ed, NUL-terminated;
 * start with *out = NULL, *out_len = 0).  Skipped, unknown and out-of-range ids add nothing.
 * The first character of the whole stream is stripped as the Strip decoder does.
 * Concatenated pushes + flush equal hy_tok_decode whenever every run of byte
 * pieces is valid UTF-8 (always so for encoder output); for an invalid run the
 * whole decode gives one U+FFFD per byte of the run (as the reference), the
 * stream one U+FFFD per byte that is not part of a valid character (the valid
 * characters before it were already emitted). */
int hy_detok_push(hy_detok *d, int32_t id, char **out, size_t *out_len);
/* Emits what is still held (invalid bytes as U+FFFD). */
int hy_detok_flush(hy_detok *d, char **out, size_t *out_len);

/* Whole-sequence decode (skip_special like HF skip_special_tokens). */
int hy_tok_decode(const hy_tok *t, const int32_t *ids, size_t n, bool skip_special,
                  char **out, size_t *out_len, hy_err *err);

#endif
