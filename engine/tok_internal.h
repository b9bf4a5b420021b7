/* tok_internal.h: the loaded tokenizer's tables, shared by the loader, encoder and decoder files. */
#ifndef HYMBA_ENGINE_TOK_INTERNAL_H
#define HYMBA_ENGINE_TOK_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "engine/tok.h"

/* Limits that keep a hostile tokenizer.json from exhausting memory. */
#define TOK_MAX_VOCAB        (1 << 22)   /* ids must be below this */
#define TOK_MAX_NORM_OPS     16
#define TOK_MAX_DEC_REPLACE  8
#define TOK_MAX_PIECE_BYTES  1024

/* One added token (tokenizer.json added_tokens[]). */
typedef struct tok_added {
    char *content;          /* UTF-8, NUL-terminated */
    size_t len;             /* bytes in content */
    int32_t id;
    bool special;           /* skipped by decode(skip_special) */
    bool lstrip, rstrip;    /* the match swallows whitespace on that side */
    bool single_word;       /* only matches between non-word characters */
    bool normalized;        /* matched in normalized text rather than raw text */
} tok_added;

/* A byte trie over added-token contents, for leftmost-longest matching.
 * Children are a sibling list: added tokens are few and short. */
typedef struct tok_trie_node {
    int32_t first_child;    /* node index, -1 = none (node 0 is the root) */
    int32_t next_sibling;   /* node index, -1 = none */
    int32_t added;          /* index into hy_tok.added, -1 if no token ends here */
    uint8_t byte;           /* the byte that leads here from the parent */
} tok_trie_node;

typedef struct tok_trie {
    tok_trie_node *nodes;   /* [n_nodes] */
    int32_t n_nodes, cap;
    bool first[256];        /* bytes that start some token: fast skip */
} tok_trie;

/* Normalizer steps, applied in order to each non-added-token segment. */
typedef enum { TOK_NORM_PREPEND, TOK_NORM_REPLACE } tok_norm_kind;
typedef struct tok_norm_op {
    tok_norm_kind kind;
    char *a;                /* PREPEND: the prefix; REPLACE: the pattern */
    char *b;                /* REPLACE: the replacement */
    size_t a_len, b_len;
} tok_norm_op;

/* String -> id hash (open addressing, power-of-two size). */
typedef struct tok_strmap {
    int32_t *slots;         /* [cap] id or -1 */
    uint32_t cap;
} tok_strmap;

/* (left id, right id) -> (rank, merged id) hash. */
typedef struct tok_pair_slot {
    uint64_t key;           /* (left << 32) | right, UINT64_MAX = empty */
    int32_t rank;
    int32_t new_id;
} tok_pair_slot;

typedef struct tok_pairmap {
    tok_pair_slot *slots;   /* [cap] */
    uint32_t cap;
} tok_pairmap;

struct hy_tok {
    int32_t n_vocab;        /* max id + 1 over vocab and added tokens */
    char **piece;           /* [n_vocab] model vocab piece, NULL where the model has none */
    uint32_t *piece_len;    /* [n_vocab] bytes */
    tok_strmap vocab;       /* model vocab piece -> id (added tokens excluded) */
    tok_pairmap merges;     /* pair -> rank, merged id */
    int32_t n_merges;

    tok_added *added;       /* [n_added] */
    int32_t *added_of;      /* [n_vocab] index into added, -1 if the id is not an added token */
    int32_t n_added;
    tok_trie trie_raw;      /* added tokens with normalized = false */
    tok_trie trie_norm;     /* added tokens with normalized = true */
    bool has_raw, has_norm;

    tok_norm_op norm[TOK_MAX_NORM_OPS];
    int n_norm;

    /* BPE model options */
    bool byte_fallback, fuse_unk, ignore_merges;
    int32_t unk_id;         /* -1 if the model has no unk_token */
    int32_t byte_id[256];   /* id of "<0xNN>" or -1 */
    int32_t ascii_id[128];  /* id of the one-character piece, or -1 */
    /* Words can be cut before a "▁" that follows another character: no merge
     * result contains "X▁" (X not ▁), so no merge can cross such a cut. */
    bool cut_before_space;
    bool memo;              /* memoize chunk ids in long texts (HYMBA_TOK_NOMEMO=1 turns it off, for tests) */
    char space_mark[8];     /* the ▁ the normalizer writes for " " (UTF-8) */
    size_t space_mark_len;

    /* decoder: Replace steps on each token, then ByteFallback, Fuse, Strip */
    char *dec_text_store;   /* backing store of dec_text */
    char **dec_text;        /* [n_vocab] piece after the Replace steps (valid UTF-8) */
    uint32_t *dec_len;      /* [n_vocab] */
    int16_t *dec_byte;      /* [n_vocab] byte value for "<0xNN>"-shaped pieces, else -1 */
    uint8_t *is_special;    /* [n_vocab] 1 for special added tokens */
    bool dec_byte_fallback;
    uint32_t strip_char;    /* Strip content code point */
    int strip_start;        /* leading strip_char removed from the whole text */

    int32_t bos_id, eos_id;
    bool add_bos;
    char *chat_template;    /* tokenizer_config.json chat_template, or NULL */
};

/* Hashes, maps, UTF-8 and buffers (tok_util.c). */
uint64_t tok_hash_bytes(const char *s, size_t n);
int tok_strmap_init(tok_strmap *m, uint32_t n_keys);
void tok_strmap_free(tok_strmap *m);
/* Inserts id under its piece (t->piece[id]); returns false if the piece is present. */
bool tok_strmap_put(tok_strmap *m, const hy_tok *t, int32_t id);
int32_t tok_strmap_get(const tok_strmap *m, const hy_tok *t, const char *s, size_t n);
int tok_pairmap_init(tok_pairmap *m, uint32_t n_keys);
void tok_pairmap_free(tok_pairmap *m);
void tok_pairmap_put(tok_pairmap *m, int32_t a, int32_t b, int32_t rank, int32_t new_id);
const tok_pair_slot *tok_pairmap_get(const tok_pairmap *m, int32_t a, int32_t b);

/* Added-token trie (tok_util.c). */
int tok_trie_add(tok_trie *tr, const char *s, size_t n, int32_t added_index);
void tok_trie_free(tok_trie *tr);
/* Leftmost-longest match in s[0..n) honouring lstrip/rstrip/single_word:
 * returns the added index or -1; *m_start and *m_end bound the match (strip included). */
int32_t tok_trie_find(const hy_tok *t, const tok_trie *tr, const char *s, size_t n,
                      size_t *m_start, size_t *m_end);

/* UTF-8 helpers. */
/* Length of the valid UTF-8 character at s (n bytes available): 1..4, 0 if
 * s holds a valid but incomplete prefix, -1 if s[0] starts no valid character. */
int tok_utf8_char(const uint8_t *s, size_t n);
/* Replaces invalid sequences by U+FFFD; returns a malloc'ed string. */
char *tok_utf8_sanitize(const char *s, size_t n, size_t *out_len);

/* Growable byte buffer. */
typedef struct tok_buf {
    char *p;
    size_t len, cap;
} tok_buf;
int tok_buf_put(tok_buf *b, const void *s, size_t n);
/* Appends code point cp as UTF-8. */
int tok_buf_put_cp(tok_buf *b, uint32_t cp);
/* Unicode White_Space as Rust char::is_whitespace; python adds U+001C..U+001F. */
bool tok_is_space(uint32_t cp, bool python);
/* Decodes the character at s (valid UTF-8 of len bytes). */
uint32_t tok_utf8_decode(const uint8_t *s, int len);

/* Decoder setup (tok_decode.c), called by the loader once pieces are known. */
int tok_decoder_prepare(hy_tok *t, hy_err *err);

#endif
