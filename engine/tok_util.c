/* tok_util.c: the tokenizer's hash maps, added-token trie, UTF-8 helpers and byte buffer. */
#include "engine/tok_internal.h"
#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* Map sizes: a power of two at least twice the key count keeps probes short. */
static uint32_t map_capacity(uint32_t n_keys)
{
    uint32_t cap = 16;

    while (cap < 2u * n_keys + 1u)
        cap <<= 1;
    return cap;
}

uint64_t tok_hash_bytes(const char *s, size_t n)
{
    /* FNV-1a with a final avalanche so low bits are usable as a slot index. */
    uint64_t h = 0xcbf29ce484222325ull;

    for (size_t i = 0; i < n; i++) {
        h ^= (uint8_t)s[i];
        h *= 0x100000001b3ull;
    }
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdull;
    h ^= h >> 33;
    return h;
}

static uint64_t hash_u64(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ull;
    x ^= x >> 33;
    return x;
}

int tok_strmap_init(tok_strmap *m, uint32_t n_keys)
{
    m->cap = map_capacity(n_keys);
    m->slots = malloc(sizeof(*m->slots) * m->cap);
    if (!m->slots)
        return -ENOMEM;
    memset(m->slots, 0xff, sizeof(*m->slots) * m->cap);   /* all -1 */
    return 0;
}

void tok_strmap_free(tok_strmap *m)
{
    free(m->slots);
    m->slots = NULL;
}

bool tok_strmap_put(tok_strmap *m, const hy_tok *t, int32_t id)
{
    const char *s = t->piece[id];
    uint32_t n = t->piece_len[id];
    uint32_t mask = m->cap - 1;

    for (uint32_t i = (uint32_t)tok_hash_bytes(s, n) & mask;; i = (i + 1) & mask) {
        int32_t cur = m->slots[i];
        if (cur < 0) {
            m->slots[i] = id;
            return true;
        }
        if (t->piece_len[cur] == n && memcmp(t->piece[cur], s, n) == 0)
            return false;
    }
}

int32_t tok_strmap_get(const tok_strmap *m, const hy_tok *t, const char *s, size_t n)
{
    uint32_t mask = m->cap - 1;

    for (uint32_t i = (uint32_t)tok_hash_bytes(s, n) & mask;; i = (i + 1) & mask) {
        int32_t cur = m->slots[i];
        if (cur < 0)
            return -1;
        if (t->piece_len[cur] == n && memcmp(t->piece[cur], s, n) == 0)
            return cur;
    }
}

int tok_pairmap_init(tok_pairmap *m, uint32_t n_keys)
{
    m->cap = map_capacity(n_keys);
    m->slots = malloc(sizeof(*m->slots) * m->cap);
    if (!m->slots)
        return -ENOMEM;
    for (uint32_t i = 0; i < m->cap; i++)
        m->slots[i].key = UINT64_MAX;
    return 0;
}

void tok_pairmap_free(tok_pairmap *m)
{
    free(m->slots);
    m->slots = NULL;
}

/* A later merge of the same pair replaces the earlier one, as a map built from the list would. */
void tok_pairmap_put(tok_pairmap *m, int32_t a, int32_t b, int32_t rank, int32_t new_id)
{
    uint64_t key = ((uint64_t)(uint32_t)a << 32) | (uint32_t)b;
    uint32_t mask = m->cap - 1;

    for (uint32_t i = (uint32_t)hash_u64(key) & mask;; i = (i + 1) & mask) {
        tok_pair_slot *sl = &m->slots[i];
        if (sl->key == UINT64_MAX || sl->key == key) {
            sl->key = key;
            sl->rank = rank;
            sl->new_id = new_id;
            return;
        }
    }
}

const tok_pair_slot *tok_pairmap_get(const tok_pairmap *m, int32_t a, int32_t b)
{
    uint64_t key = ((uint64_t)(uint32_t)a << 32) | (uint32_t)b;
    uint32_t mask = m->cap - 1;

    for (uint32_t i = (uint32_t)hash_u64(key) & mask;; i = (i + 1) & mask) {
        const tok_pair_slot *sl = &m->slots[i];
        if (sl->key == key)
            return sl;
        if (sl->key == UINT64_MAX)
            return NULL;
    }
}

/* ---- added-token trie ---- */

static int32_t trie_node_new(tok_trie *tr, uint8_t byte)
{
    if (tr->n_nodes == tr->cap) {
        int32_t cap = tr->cap ? tr->cap * 2 : 64;
        tok_trie_node *p = realloc(tr->nodes, sizeof(*p) * (size_t)cap);
        if (!p)
            return -ENOMEM;
        tr->nodes = p;
        tr->cap = cap;
    }
    tok_trie_node *nd = &tr->nodes[tr->n_nodes];
    nd->first_child = nd->next_sibling = nd->added = -1;
    nd->byte = byte;
    return tr->n_nodes++;
}

static int32_t trie_child(const tok_trie *tr, int32_t node, uint8_t byte)
{
    for (int32_t c = tr->nodes[node].first_child; c >= 0; c = tr->nodes[c].next_sibling)
        if (tr->nodes[c].byte == byte)
            return c;
    return -1;
}

int tok_trie_add(tok_trie *tr, const char *s, size_t n, int32_t added_index)
{
    int32_t node;

    if (tr->n_nodes == 0 && trie_node_new(tr, 0) < 0)
        return -ENOMEM;
    node = 0;
    for (size_t i = 0; i < n; i++) {
        uint8_t b = (uint8_t)s[i];
        int32_t c = trie_child(tr, node, b);
        if (c < 0) {
            c = trie_node_new(tr, b);
            if (c < 0)
                return c;
            tr->nodes[c].next_sibling = tr->nodes[node].first_child;
            tr->nodes[node].first_child = c;
        }
        node = c;
    }
    tr->first[(uint8_t)s[0]] = true;
    /* The first token with this content wins, as the first-inserted pattern does. */
    if (tr->nodes[node].added < 0)
        tr->nodes[node].added = added_index;
    return 0;
}

void tok_trie_free(tok_trie *tr)
{
    free(tr->nodes);
    memset(tr, 0, sizeof(*tr));
}

/* Word characters for single_word: alphanumerics and '_'; non-ASCII counts as a word character. */
static bool is_word_byte(uint8_t c)
{
    return c == '_' || (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') ||
           (c >= 'A' && c <= 'Z') || c >= 0x80;
}

/* Start of the whitespace run that ends at s[end] (whole characters only). */
static size_t space_run_before(const char *s, size_t lo, size_t end)
{
    while (end > lo) {
        size_t k = end - 1;
        while (k > lo && ((uint8_t)s[k] & 0xC0) == 0x80)
            k--;
        int len = tok_utf8_char((const uint8_t *)s + k, end - k);
        if (len <= 0 || (size_t)len != end - k ||
            !tok_is_space(tok_utf8_decode((const uint8_t *)s + k, len), false))
            break;
        end = k;
    }
    return end;
}

static size_t space_run_after(const char *s, size_t n, size_t start)
{
    while (start < n) {
        int len = tok_utf8_char((const uint8_t *)s + start, n - start);
        if (len <= 0 || !tok_is_space(tok_utf8_decode((const uint8_t *)s + start, len), false))
            break;
        start += (size_t)len;
    }
    return start;
}

int32_t tok_trie_find(const hy_tok *t, const tok_trie *tr, const char *s, size_t n,
                      size_t *m_start, size_t *m_end)
{
    if (tr->n_nodes == 0)
        return -1;
    for (size_t i = 0; i < n; i++) {
        if (!tr->first[(uint8_t)s[i]])
            continue;
        int32_t node = 0, best = -1;
        size_t best_end = 0;
        for (size_t j = i; j < n; j++) {
            node = trie_child(tr, node, (uint8_t)s[j]);
            if (node < 0)
                break;
            if (tr->nodes[node].added >= 0) {
                best = tr->nodes[node].added;
                best_end = j + 1;
            }
        }
        if (best < 0)
            continue;
        const tok_added *a = &t->added[best];
        if (a->single_word && ((i > 0 && is_word_byte((uint8_t)s[i - 1])) ||
                               (best_end < n && is_word_byte((uint8_t)s[best_end])))) {
            i = best_end - 1;   /* the rejected match is consumed, as a non-overlapping scan does */
            continue;
        }
        *m_start = a->lstrip ? space_run_before(s, 0, i) : i;
        *m_end = a->rstrip ? space_run_after(s, n, best_end) : best_end;
        return best;
    }
    return -1;
}

/* ---- UTF-8 ---- */

int tok_utf8_char(const uint8_t *s, size_t n)
{
    uint8_t c = s[0];
    int len;
    uint8_t lo = 0x80, hi = 0xBF;   /* allowed range of the second byte */

    if (c < 0x80)
        return 1;
    if (c < 0xC2)
        return -1;
    if (c < 0xE0)
        len = 2;
    else if (c < 0xF0) {
        len = 3;
        if (c == 0xE0)
            lo = 0xA0;          /* no overlong forms */
        else if (c == 0xED)
            hi = 0x9F;          /* no surrogates */
    } else if (c < 0xF5) {
        len = 4;
        if (c == 0xF0)
            lo = 0x90;
        else if (c == 0xF4)
            hi = 0x8F;          /* nothing above U+10FFFF */
    } else
        return -1;
    for (int k = 1; k < len; k++) {
        if ((size_t)k >= n)
            return 0;
        uint8_t b = s[k];
        if (k == 1 ? (b < lo || b > hi) : (b < 0x80 || b > 0xBF))
            return -1;
    }
    return len;
}

uint32_t tok_utf8_decode(const uint8_t *s, int len)
{
    switch (len) {
    case 1: return s[0];
    case 2: return ((uint32_t)(s[0] & 0x1F) << 6) | (s[1] & 0x3F);
    case 3: return ((uint32_t)(s[0] & 0x0F) << 12) | ((uint32_t)(s[1] & 0x3F) << 6) | (s[2] & 0x3F);
    default:
        return ((uint32_t)(s[0] & 0x07) << 18) | ((uint32_t)(s[1] & 0x3F) << 12) |
               ((uint32_t)(s[2] & 0x3F) << 6) | (s[3] & 0x3F);
    }
}

bool tok_is_space(uint32_t cp, bool python)
{
    if ((cp >= 0x09 && cp <= 0x0D) || cp == 0x20 || cp == 0x85 || cp == 0xA0 || cp == 0x1680 ||
        (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 || cp == 0x2029 || cp == 0x202F ||
        cp == 0x205F || cp == 0x3000)
        return true;
    return python && cp >= 0x1C && cp <= 0x1F;
}

int tok_buf_put(tok_buf *b, const void *s, size_t n)
{
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 64;
        while (cap < b->len + n + 1)
            cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p)
            return -ENOMEM;
        b->p = p;
        b->cap = cap;
    }
    if (n)
        memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
    return 0;
}

int tok_buf_put_cp(tok_buf *b, uint32_t cp)
{
    char u[4];
    size_t n;

    if (cp < 0x80) {
        u[0] = (char)cp;
        n = 1;
    } else if (cp < 0x800) {
        u[0] = (char)(0xC0 | (cp >> 6));
        u[1] = (char)(0x80 | (cp & 0x3F));
        n = 2;
    } else if (cp < 0x10000) {
        u[0] = (char)(0xE0 | (cp >> 12));
        u[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        u[2] = (char)(0x80 | (cp & 0x3F));
        n = 3;
    } else {
        u[0] = (char)(0xF0 | (cp >> 18));
        u[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
        u[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
        u[3] = (char)(0x80 | (cp & 0x3F));
        n = 4;
    }
    return tok_buf_put(b, u, n);
}

char *tok_utf8_sanitize(const char *s, size_t n, size_t *out_len)
{
    tok_buf b = {0};
    size_t i = 0;

    if (tok_buf_put(&b, "", 0) < 0)
        return NULL;
    while (i < n) {
        int len = tok_utf8_char((const uint8_t *)s + i, n - i);
        int rc = len > 0 ? tok_buf_put(&b, s + i, (size_t)len) : tok_buf_put_cp(&b, 0xFFFD);
        if (rc < 0) {
            free(b.p);
            return NULL;
        }
        i += len > 0 ? (size_t)len : 1;
    }
    if (out_len)
        *out_len = b.len;
    return b.p;
}
