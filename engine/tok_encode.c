/* tok_encode.c: text -> ids: added-token split, normalizer, then BPE merges by rank with a binary heap. */
#include "engine/tok_internal.h"
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define SPACE_MARK "\xE2\x96\x81"   /* U+2581, the SentencePiece space */
#define SPACE_MARK_LEN 3

/* One symbol of the word being merged; symbols form a doubly linked list. */
typedef struct tok_sym {
    int32_t id;             /* piece id, -1 once merged into its left neighbour */
    int32_t prev, next;     /* symbol index, -1 at the ends */
} tok_sym;

/* A candidate merge of symbol pos with its right neighbour. */
typedef struct tok_merge {
    int32_t rank;           /* merge rank: lower merges first */
    int32_t pos;            /* left symbol index: ties go leftmost */
    int32_t new_id;         /* the merged piece, to detect stale entries */
} tok_merge;

/* Chunk -> ids memo for long texts: a chunk's ids depend on its bytes only,
 * and natural text repeats its words. */
#define CACHE_MIN_TEXT   4096        /* shorter texts do not pay for the table */
#define CACHE_MAX_CHUNK  64          /* bytes; longer chunks are always merged */
#define CACHE_SLOTS      (1u << 16)  /* power of two; filled to half at most */

typedef struct cache_slot {
    uint64_t hash;          /* 0 = empty */
    uint32_t key_off, key_len;      /* chunk bytes in keys */
    uint32_t ids_off, n_ids;        /* its ids in ids */
} cache_slot;

typedef struct enc_cache {
    cache_slot *slots;      /* [CACHE_SLOTS], NULL when off */
    uint32_t used;
    tok_buf keys;
    int32_t *ids;           /* [ids_cap] */
    size_t n_ids, ids_cap;
} enc_cache;

/* Scratch space reused across the words of one encode call. */
typedef struct enc_ws {
    const hy_tok *t;
    tok_sym *sym;           /* [sym_cap] */
    size_t sym_cap;
    tok_merge *heap;        /* [heap_cap] binary min-heap on (rank, pos) */
    size_t heap_n, heap_cap;
    int32_t *ids;           /* [ids_cap] output */
    size_t n_ids, ids_cap;
    tok_buf norm[2];        /* normalizer ping-pong buffers */
    enc_cache cache;
} enc_ws;

static int ids_push(enc_ws *w, int32_t id)
{
    if (w->n_ids == w->ids_cap) {
        size_t cap = w->ids_cap ? w->ids_cap * 2 : 256;
        int32_t *p = realloc(w->ids, sizeof(*p) * cap);
        if (!p)
            return -ENOMEM;
        w->ids = p;
        w->ids_cap = cap;
    }
    w->ids[w->n_ids++] = id;
    return 0;
}

static bool merge_less(const tok_merge *a, const tok_merge *b)
{
    return a->rank < b->rank || (a->rank == b->rank && a->pos < b->pos);
}

static void heap_push(enc_ws *w, tok_merge m)
{
    size_t i = w->heap_n++;

    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (!merge_less(&m, &w->heap[parent]))
            break;
        w->heap[i] = w->heap[parent];
        i = parent;
    }
    w->heap[i] = m;
}

static tok_merge heap_pop(enc_ws *w)
{
    tok_merge top = w->heap[0], last = w->heap[--w->heap_n];
    size_t i = 0, n = w->heap_n;

    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= n)
            break;
        if (c + 1 < n && merge_less(&w->heap[c + 1], &w->heap[c]))
            c++;
        if (!merge_less(&w->heap[c], &last))
            break;
        w->heap[i] = w->heap[c];
        i = c;
    }
    w->heap[i] = last;
    return top;
}

/* Queues the merge of symbol pos with its right neighbour, if the pair has a rank. */
static void queue_pair(enc_ws *w, int32_t pos)
{
    int32_t next = w->sym[pos].next;

    if (next < 0)
        return;
    const tok_pair_slot *m = tok_pairmap_get(&w->t->merges, w->sym[pos].id, w->sym[next].id);
    if (m)
        heap_push(w, (tok_merge){ .rank = m->rank, .pos = pos, .new_id = m->new_id });
}

static int reserve(enc_ws *w, size_t n)
{
    if (n > w->sym_cap) {
        tok_sym *s = realloc(w->sym, sizeof(*s) * n);
        if (!s)
            return -ENOMEM;
        w->sym = s;
        w->sym_cap = n;
    }
    /* Each merge queues at most two pairs and removes one symbol: 3n bounds the heap. */
    if (3 * n > w->heap_cap) {
        tok_merge *h = realloc(w->heap, sizeof(*h) * 3 * n);
        if (!h)
            return -ENOMEM;
        w->heap = h;
        w->heap_cap = 3 * n;
    }
    return 0;
}

static void sym_add(enc_ws *w, int32_t *n_sym, int32_t id)
{
    int32_t k = (*n_sym)++;

    w->sym[k] = (tok_sym){ .id = id, .prev = k - 1, .next = -1 };
    if (k > 0)
        w->sym[k - 1].next = k;
}

/* Initial symbols of a word: one per character; unknown characters become
 * <0xNN> byte pieces (byte_fallback) or unk (fused if fuse_unk).  Invalid
 * UTF-8 bytes count as one unknown character each. */
static int32_t word_symbols(enc_ws *w, const char *s, size_t n)
{
    const hy_tok *t = w->t;
    int32_t n_sym = 0, unk = -1;    /* unk: a pending (possibly fused) unk symbol */

    for (size_t i = 0; i < n;) {
        uint8_t c = (uint8_t)s[i];
        int len = c < 0x80 ? 1 : tok_utf8_char((const uint8_t *)s + i, n - i);
        int32_t id;
        if (len <= 0)
            len = 1;
        id = c < 0x80 ? t->ascii_id[c] : (len > 1 ? tok_strmap_get(&t->vocab, t, s + i, (size_t)len) : -1);
        if (id >= 0) {
            if (unk >= 0) {
                sym_add(w, &n_sym, unk);
                unk = -1;
            }
            sym_add(w, &n_sym, id);
        } else {
            bool bytes_ok = t->byte_fallback;
            for (int k = 0; bytes_ok && k < len; k++)
                bytes_ok = t->byte_id[(uint8_t)s[i + (size_t)k]] >= 0;
            if (bytes_ok) {
                for (int k = 0; k < len; k++)
                    sym_add(w, &n_sym, t->byte_id[(uint8_t)s[i + (size_t)k]]);
            } else if (t->unk_id >= 0) {
                if (unk >= 0 && !t->fuse_unk)
                    sym_add(w, &n_sym, unk);
                unk = t->unk_id;
            }
        }
        i += (size_t)len;
    }
    if (unk >= 0)
        sym_add(w, &n_sym, unk);
    return n_sym;
}

/* BPE over one word: repeatedly merge the lowest-rank adjacent pair (leftmost on ties). */
static int bpe_chunk(enc_ws *w, const char *s, size_t n)
{
    int rc = reserve(w, n);
    int32_t n_sym;

    if (rc < 0)
        return rc;
    n_sym = word_symbols(w, s, n);
    w->heap_n = 0;
    for (int32_t i = 0; i + 1 < n_sym; i++)
        queue_pair(w, i);
    while (w->heap_n > 0) {
        tok_merge top = heap_pop(w);
        tok_sym *l = &w->sym[top.pos];
        if (l->id < 0 || l->next < 0)
            continue;
        /* A stale entry: the pair at pos changed since it was queued. */
        const tok_pair_slot *m = tok_pairmap_get(&w->t->merges, l->id, w->sym[l->next].id);
        if (!m || m->new_id != top.new_id)
            continue;
        int32_t dead = l->next;
        l->id = top.new_id;
        l->next = w->sym[dead].next;
        if (l->next >= 0)
            w->sym[l->next].prev = top.pos;
        w->sym[dead].id = -1;
        if (l->prev >= 0)
            queue_pair(w, l->prev);
        queue_pair(w, top.pos);
    }
    for (int32_t i = n_sym > 0 ? 0 : -1; i >= 0; i = w->sym[i].next)
        if ((rc = ids_push(w, w->sym[i].id)) < 0)
            return rc;
    return 0;
}

static cache_slot *cache_find(enc_cache *c, const char *s, size_t n, uint64_t h)
{
    uint32_t mask = CACHE_SLOTS - 1;

    for (uint32_t i = (uint32_t)h & mask;; i = (i + 1) & mask) {
        cache_slot *sl = &c->slots[i];
        if (sl->hash == 0 || (sl->hash == h && sl->key_len == n && memcmp(c->keys.p + sl->key_off, s, n) == 0))
            return sl;
    }
}

/* Remembers ids[from..] as the ids of chunk s (best effort: a full memo or no memory just skips it). */
static void cache_store(enc_ws *w, cache_slot *sl, const char *s, size_t n, uint64_t h, size_t from)
{
    enc_cache *c = &w->cache;
    size_t k = w->n_ids - from;

    if (c->used >= CACHE_SLOTS / 2)
        return;
    if (c->n_ids + k > c->ids_cap) {
        size_t cap = c->ids_cap ? c->ids_cap * 2 : 4096;
        while (cap < c->n_ids + k)
            cap *= 2;
        int32_t *p = realloc(c->ids, sizeof(*p) * cap);
        if (!p)
            return;
        c->ids = p;
        c->ids_cap = cap;
    }
    uint32_t key_off = (uint32_t)c->keys.len;
    if (tok_buf_put(&c->keys, s, n) < 0)
        return;
    memcpy(c->ids + c->n_ids, w->ids + from, sizeof(*c->ids) * k);
    *sl = (cache_slot){ .hash = h, .key_off = key_off, .key_len = (uint32_t)n,
                        .ids_off = (uint32_t)c->n_ids, .n_ids = (uint32_t)k };
    c->n_ids += k;
    c->used++;
}

/* bpe_chunk through the memo when it is on. */
static int bpe_chunk_cached(enc_ws *w, const char *s, size_t n)
{
    enc_cache *c = &w->cache;
    int rc;

    if (!c->slots || n > CACHE_MAX_CHUNK)
        return bpe_chunk(w, s, n);
    uint64_t h = tok_hash_bytes(s, n) | 1;  /* never 0, the empty mark */
    cache_slot *sl = cache_find(c, s, n, h);
    if (sl->hash) {
        for (uint32_t i = 0; i < sl->n_ids; i++)
            if ((rc = ids_push(w, c->ids[sl->ids_off + i])) < 0)
                return rc;
        return 0;
    }
    size_t from = w->n_ids;
    if ((rc = bpe_chunk(w, s, n)) < 0)
        return rc;
    cache_store(w, sl, s, n, h, from);
    return 0;
}

/* The whole normalized segment is one word (no pre-tokenizer).  Where no merge
 * result contains "X▁" (X not ▁), cutting before such a ▁ cannot change the
 * result, so words are merged piecewise: shorter heaps, same ids. */
static int bpe_word(enc_ws *w, const char *s, size_t n)
{
    const hy_tok *t = w->t;
    size_t start = 0;
    int rc;

    if (t->ignore_merges) {
        int32_t id = tok_strmap_get(&t->vocab, t, s, n);
        if (id >= 0)
            return ids_push(w, id);
    }
    if (!t->cut_before_space)
        return bpe_chunk(w, s, n);
    for (size_t i = 1; i + SPACE_MARK_LEN <= n; i++) {
        const char *p = memchr(s + i, SPACE_MARK[0], n - i);
        if (!p)
            break;
        i = (size_t)(p - s);
        if (i + SPACE_MARK_LEN > n)
            break;
        if (memcmp(p, SPACE_MARK, SPACE_MARK_LEN) != 0)
            continue;
        bool after_mark = i >= SPACE_MARK_LEN && memcmp(p - SPACE_MARK_LEN, SPACE_MARK, SPACE_MARK_LEN) == 0;
        if (!after_mark && i > start) {
            if ((rc = bpe_chunk_cached(w, s + start, i - start)) < 0)
                return rc;
            start = i;
        }
        i += SPACE_MARK_LEN - 1;
    }
    return bpe_chunk_cached(w, s + start, n - start);
}

/* Applies the normalizer steps; returns the buffer holding the result. */
static tok_buf *normalize(enc_ws *w, const char *s, size_t n)
{
    const hy_tok *t = w->t;
    tok_buf *cur = &w->norm[0], *nxt = &w->norm[1];

    cur->len = 0;
    if (tok_buf_put(cur, s, n) < 0)
        return NULL;
    for (int k = 0; k < t->n_norm; k++) {
        const tok_norm_op *op = &t->norm[k];
        nxt->len = 0;
        if (op->kind == TOK_NORM_PREPEND) {
            if (cur->len == 0)
                continue;           /* nothing is prepended to an empty segment */
            if (tok_buf_put(nxt, op->a, op->a_len) < 0 || tok_buf_put(nxt, cur->p, cur->len) < 0)
                return NULL;
        } else {
            size_t i = 0;
            while (i < cur->len) {
                const char *hit = memchr(cur->p + i, op->a[0], cur->len - i);
                size_t j = hit ? (size_t)(hit - cur->p) : cur->len;
                if (tok_buf_put(nxt, cur->p + i, j - i) < 0)
                    return NULL;
                i = j;
                if (i == cur->len)
                    break;
                if (i + op->a_len <= cur->len && memcmp(cur->p + i, op->a, op->a_len) == 0) {
                    if (tok_buf_put(nxt, op->b, op->b_len) < 0)
                        return NULL;
                    i += op->a_len;
                } else {
                    if (tok_buf_put(nxt, cur->p + i, 1) < 0)
                        return NULL;
                    i++;
                }
            }
            if (tok_buf_put(nxt, "", 0) < 0)
                return NULL;
        }
        tok_buf *tmp = cur;
        cur = nxt;
        nxt = tmp;
    }
    return cur;
}

/* A segment of raw text between non-normalized added tokens. */
static int encode_segment(enc_ws *w, const char *s, size_t n)
{
    const hy_tok *t = w->t;
    tok_buf *nb;
    size_t pos = 0, a, b;
    int rc;

    if (n == 0)
        return 0;
    if (!(nb = normalize(w, s, n)))
        return -ENOMEM;
    /* Tokens matched on normalized text; the BPE words are copied out of nb
     * because bpe_word does not touch the normalizer buffers. */
    while (t->has_norm) {
        int32_t k = tok_trie_find(t, &t->trie_norm, nb->p + pos, nb->len - pos, &a, &b);
        if (k < 0)
            break;
        if (a > 0 && (rc = bpe_word(w, nb->p + pos, a)) < 0)
            return rc;
        if ((rc = ids_push(w, t->added[k].id)) < 0)
            return rc;
        pos += b;
    }
    return pos < nb->len ? bpe_word(w, nb->p + pos, nb->len - pos) : 0;
}

int hy_tok_encode(const hy_tok *t, const char *text, size_t len, bool add_bos,
                  int32_t **ids, size_t *n_ids, hy_err *err)
{
    enc_ws w = { .t = t };
    size_t pos = 0, a, b;
    int rc = 0;

    *ids = NULL;
    *n_ids = 0;
    if (!text && len)
        return hy_err_set(err, -EINVAL, "hy_tok_encode: NULL text of %zu bytes", len);
    if (len >= CACHE_MIN_TEXT && t->cut_before_space && t->memo)
        w.cache.slots = calloc(CACHE_SLOTS, sizeof(*w.cache.slots));   /* NULL: merge everything */
    if (add_bos && t->bos_id >= 0)
        rc = ids_push(&w, t->bos_id);
    while (rc == 0 && t->has_raw && pos < len) {
        int32_t k = tok_trie_find(t, &t->trie_raw, text + pos, len - pos, &a, &b);
        if (k < 0)
            break;
        if ((rc = encode_segment(&w, text + pos, a)) == 0)
            rc = ids_push(&w, t->added[k].id);
        pos += b;
    }
    if (rc == 0 && pos < len)
        rc = encode_segment(&w, text + pos, len - pos);
    free(w.sym);
    free(w.heap);
    free(w.norm[0].p);
    free(w.norm[1].p);
    free(w.cache.slots);
    free(w.cache.keys.p);
    free(w.cache.ids);
    if (rc < 0) {
        free(w.ids);
        return hy_err_set(err, rc, "hy_tok_encode: out of memory encoding %zu bytes", len);
    }
    if (!w.ids && !(w.ids = malloc(sizeof(*w.ids))))
        return hy_err_set(err, -ENOMEM, "hy_tok_encode: out of memory");
    *ids = w.ids;
    *n_ids = w.n_ids;
    return 0;
}
