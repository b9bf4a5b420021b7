/* tok.c: loads tokenizer.json (+ tokenizer_config.json) into the BPE tables; refuses what it cannot reproduce. */
#include "engine/tok_internal.h"
#include <errno.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TOK_JSON "tokenizer.json"
#define TOK_CONFIG_JSON "tokenizer_config.json"
#define SPACE_MARK "\xE2\x96\x81"   /* U+2581 LOWER ONE EIGHTH BLOCK, SentencePiece's space */

/* Member of obj, NULL if absent or JSON null. */
static json_object *jget(json_object *obj, const char *key)
{
    json_object *v = NULL;

    if (!obj || !json_object_is_type(obj, json_type_object) ||
        !json_object_object_get_ex(obj, key, &v) || json_object_is_type(v, json_type_null))
        return NULL;
    return v;
}

/* The string member key of obj, or NULL (absent, null or not a string). */
static const char *jstr(json_object *obj, const char *key)
{
    json_object *v = jget(obj, key);

    return v && json_object_is_type(v, json_type_string) ? json_object_get_string(v) : NULL;
}

static bool jbool(json_object *obj, const char *key, bool def)
{
    json_object *v = jget(obj, key);

    return v && json_object_is_type(v, json_type_boolean) ? json_object_get_boolean(v) : def;
}

static char *dup_bytes(const char *s, size_t n)
{
    char *p = malloc(n + 1);

    if (p) {
        memcpy(p, s, n);
        p[n] = '\0';
    }
    return p;
}

static int load_json(const char *dir, const char *name, bool required, json_object **out, hy_err *err)
{
    char path[4096];
    FILE *f;

    *out = NULL;
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    f = fopen(path, "rb");
    if (!f) {
        if (!required && errno == ENOENT)
            return 0;
        return hy_err_set(err, -errno, "%s: %s", path, strerror(errno));
    }
    fclose(f);
    *out = json_object_from_file(path);
    if (!*out)
        return hy_err_set(err, -EINVAL, "%s: not valid JSON: %s", path, json_util_get_last_err());
    return 0;
}

/* ---- model.vocab and model.merges ---- */

static int load_vocab(hy_tok *t, json_object *vocab, json_object *added, hy_err *err)
{
    int32_t max_id = -1;

    if (!vocab || !json_object_is_type(vocab, json_type_object))
        return hy_err_set(err, -EINVAL, TOK_JSON ": model.vocab is missing or not an object");
    json_object_object_foreach(vocab, key, val) {
        int64_t id = json_object_get_int64(val);
        if (!json_object_is_type(val, json_type_int) || id < 0 || id >= TOK_MAX_VOCAB)
            return hy_err_set(err, -EINVAL, TOK_JSON ": model.vocab[\"%s\"] = %s is not an id in [0, %d)",
                              key, json_object_get_string(val), TOK_MAX_VOCAB);
        if (id > max_id)
            max_id = (int32_t)id;
    }
    for (size_t i = 0; added && i < json_object_array_length(added); i++) {
        json_object *id = jget(json_object_array_get_idx(added, i), "id");
        int64_t v = id ? json_object_get_int64(id) : -1;
        if (!id || !json_object_is_type(id, json_type_int) || v < 0 || v >= TOK_MAX_VOCAB)
            return hy_err_set(err, -EINVAL, TOK_JSON ": added_tokens[%zu].id is missing or not in [0, %d)",
                              i, TOK_MAX_VOCAB);
        if (v > max_id)
            max_id = (int32_t)v;
    }
    if (max_id < 0)
        return hy_err_set(err, -EINVAL, TOK_JSON ": model.vocab is empty");
    t->n_vocab = max_id + 1;
    t->piece = calloc((size_t)t->n_vocab, sizeof(*t->piece));
    t->piece_len = calloc((size_t)t->n_vocab, sizeof(*t->piece_len));
    t->added_of = malloc(sizeof(*t->added_of) * (size_t)t->n_vocab);
    if (!t->piece || !t->piece_len || !t->added_of ||
        tok_strmap_init(&t->vocab, (uint32_t)json_object_object_length(vocab)) < 0)
        return hy_err_set(err, -ENOMEM, TOK_JSON ": out of memory for %d pieces", t->n_vocab);
    memset(t->added_of, 0xff, sizeof(*t->added_of) * (size_t)t->n_vocab);
    json_object_object_foreach(vocab, key2, val2) {
        int32_t id = (int32_t)json_object_get_int64(val2);
        if (t->piece[id])
            return hy_err_set(err, -EINVAL, TOK_JSON ": model.vocab: id %d is given to both \"%s\" and \"%s\"",
                              id, t->piece[id], key2);
        t->piece_len[id] = (uint32_t)strlen(key2);
        t->piece[id] = dup_bytes(key2, t->piece_len[id]);
        if (!t->piece[id])
            return hy_err_set(err, -ENOMEM, TOK_JSON ": out of memory");
        if (!tok_strmap_put(&t->vocab, t, id))
            return hy_err_set(err, -EINVAL, TOK_JSON ": model.vocab: piece \"%s\" appears twice", key2);
    }
    return 0;
}

/* One merge as "left right" (older files) or ["left", "right"]. */
static int merge_parts(json_object *m, size_t i, const char **a, size_t *a_len,
                       const char **b, size_t *b_len, hy_err *err)
{
    if (json_object_is_type(m, json_type_string)) {
        const char *s = json_object_get_string(m);
        const char *sp = strchr(s, ' ');
        if (!sp || strchr(sp + 1, ' '))
            return hy_err_set(err, -EINVAL, TOK_JSON ": model.merges[%zu] = \"%s\" is not two pieces "
                              "separated by one space", i, s);
        *a = s;
        *a_len = (size_t)(sp - s);
        *b = sp + 1;
        *b_len = strlen(sp + 1);
        return 0;
    }
    if (json_object_is_type(m, json_type_array) && json_object_array_length(m) == 2 &&
        json_object_is_type(json_object_array_get_idx(m, 0), json_type_string) &&
        json_object_is_type(json_object_array_get_idx(m, 1), json_type_string)) {
        json_object *l = json_object_array_get_idx(m, 0), *r = json_object_array_get_idx(m, 1);
        *a = json_object_get_string(l);
        *a_len = (size_t)json_object_get_string_len(l);
        *b = json_object_get_string(r);
        *b_len = (size_t)json_object_get_string_len(r);
        return 0;
    }
    return hy_err_set(err, -EINVAL, TOK_JSON ": model.merges[%zu] is neither \"a b\" nor [\"a\", \"b\"]", i);
}

/* True if s has a character other than ▁ directly followed by ▁. */
static bool has_inner_space_mark(const char *s, size_t n)
{
    const size_t m = sizeof(SPACE_MARK) - 1;

    for (size_t i = 1; i + m <= n; i++)
        if (memcmp(s + i, SPACE_MARK, m) == 0 && !(i >= m && memcmp(s + i - m, SPACE_MARK, m) == 0))
            return true;
    return false;
}

static int load_merges(hy_tok *t, json_object *merges, hy_err *err)
{
    size_t n = merges ? json_object_array_length(merges) : 0;
    char buf[2 * TOK_MAX_PIECE_BYTES];

    if (merges && !json_object_is_type(merges, json_type_array))
        return hy_err_set(err, -EINVAL, TOK_JSON ": model.merges is not an array");
    if (tok_pairmap_init(&t->merges, (uint32_t)n) < 0)
        return hy_err_set(err, -ENOMEM, TOK_JSON ": out of memory for %zu merges", n);
    t->n_merges = (int32_t)n;
    t->cut_before_space = !t->ignore_merges;
    for (size_t i = 0; i < n; i++) {
        const char *a = NULL, *b = NULL;
        size_t a_len = 0, b_len = 0;
        int rc = merge_parts(json_object_array_get_idx(merges, i), i, &a, &a_len, &b, &b_len, err);
        if (rc < 0)
            return rc;
        int32_t ia = tok_strmap_get(&t->vocab, t, a, a_len);
        int32_t ib = tok_strmap_get(&t->vocab, t, b, b_len);
        if (ia < 0 || ib < 0)
            return hy_err_set(err, -EINVAL, TOK_JSON ": model.merges[%zu]: piece \"%.*s\" is not in model.vocab",
                              i, (int)(ia < 0 ? a_len : b_len), ia < 0 ? a : b);
        if (a_len + b_len > sizeof(buf))
            return hy_err_set(err, -EINVAL, TOK_JSON ": model.merges[%zu]: merged piece longer than %zu bytes",
                              i, sizeof(buf));
        memcpy(buf, a, a_len);
        memcpy(buf + a_len, b, b_len);
        int32_t id = tok_strmap_get(&t->vocab, t, buf, a_len + b_len);
        if (id < 0)
            return hy_err_set(err, -EINVAL, TOK_JSON ": model.merges[%zu]: merged piece \"%.*s\" is not in model.vocab",
                              i, (int)(a_len + b_len), buf);
        tok_pairmap_put(&t->merges, ia, ib, (int32_t)i, id);
        if (has_inner_space_mark(buf, a_len + b_len))
            t->cut_before_space = false;
    }
    return 0;
}

static int load_model(hy_tok *t, json_object *model, json_object *added, hy_err *err)
{
    const char *type = jstr(model, "type");
    json_object *dropout = jget(model, "dropout");
    const char *cont = jstr(model, "continuing_subword_prefix"), *eow = jstr(model, "end_of_word_suffix");
    const char *unk = jstr(model, "unk_token");
    int rc;

    if (!model)
        return hy_err_set(err, -EINVAL, TOK_JSON ": model is missing");
    if (!type || strcmp(type, "BPE") != 0)
        return hy_err_set(err, -ENOTSUP, TOK_JSON ": model.type \"%s\" is not supported (only BPE)",
                          type ? type : "(missing)");
    if (dropout && json_object_get_double(dropout) != 0.0)
        return hy_err_set(err, -ENOTSUP, TOK_JSON ": model.dropout %s is not supported (only null)",
                          json_object_get_string(dropout));
    if ((cont && *cont) || (eow && *eow))
        return hy_err_set(err, -ENOTSUP, TOK_JSON ": model.%s \"%s\" is not supported (only null)",
                          cont && *cont ? "continuing_subword_prefix" : "end_of_word_suffix",
                          cont && *cont ? cont : eow);
    t->byte_fallback = jbool(model, "byte_fallback", false);
    t->fuse_unk = jbool(model, "fuse_unk", false);
    t->ignore_merges = jbool(model, "ignore_merges", false);
    if ((rc = load_vocab(t, jget(model, "vocab"), added, err)) < 0)
        return rc;
    t->unk_id = -1;
    if (unk) {
        t->unk_id = tok_strmap_get(&t->vocab, t, unk, strlen(unk));
        if (t->unk_id < 0)
            return hy_err_set(err, -EINVAL, TOK_JSON ": model.unk_token \"%s\" is not in model.vocab", unk);
    }
    for (int b = 0; b < 256; b++) {
        char name[8];
        snprintf(name, sizeof(name), "<0x%02X>", b);
        t->byte_id[b] = tok_strmap_get(&t->vocab, t, name, 6);
    }
    for (int c = 0; c < 128; c++) {
        char ch = (char)c;
        t->ascii_id[c] = tok_strmap_get(&t->vocab, t, &ch, 1);
    }
    if ((rc = load_merges(t, jget(model, "merges"), err)) < 0)
        return rc;
    if (tok_strmap_get(&t->vocab, t, SPACE_MARK, sizeof(SPACE_MARK) - 1) < 0)
        t->cut_before_space = false;
    return 0;
}

/* ---- added_tokens ---- */

static int load_added(hy_tok *t, json_object *added, hy_err *err)
{
    size_t n = added ? json_object_array_length(added) : 0;

    if (added && !json_object_is_type(added, json_type_array))
        return hy_err_set(err, -EINVAL, TOK_JSON ": added_tokens is not an array");
    t->added = calloc(n ? n : 1, sizeof(*t->added));
    if (!t->added)
        return hy_err_set(err, -ENOMEM, TOK_JSON ": out of memory");
    for (size_t i = 0; i < n; i++) {
        json_object *o = json_object_array_get_idx(added, i);
        json_object *c = jget(o, "content");
        tok_added *a = &t->added[t->n_added];
        if (!c || !json_object_is_type(c, json_type_string) || json_object_get_string_len(c) == 0)
            return hy_err_set(err, -EINVAL, TOK_JSON ": added_tokens[%zu].content is missing or empty", i);
        a->len = (size_t)json_object_get_string_len(c);
        a->content = dup_bytes(json_object_get_string(c), a->len);
        if (!a->content)
            return hy_err_set(err, -ENOMEM, TOK_JSON ": out of memory");
        a->id = (int32_t)json_object_get_int64(jget(o, "id"));     /* range checked by load_vocab */
        a->special = jbool(o, "special", false);
        a->lstrip = jbool(o, "lstrip", false);
        a->rstrip = jbool(o, "rstrip", false);
        a->single_word = jbool(o, "single_word", false);
        a->normalized = jbool(o, "normalized", !a->special);
        int32_t k = t->n_added++;
        if (t->added_of[a->id] < 0)
            t->added_of[a->id] = k;
        tok_trie *tr = a->normalized ? &t->trie_norm : &t->trie_raw;
        if (tok_trie_add(tr, a->content, a->len, k) < 0)
            return hy_err_set(err, -ENOMEM, TOK_JSON ": out of memory");
        if (a->normalized)
            t->has_norm = true;
        else
            t->has_raw = true;
    }
    return 0;
}

/* ---- normalizer, pre_tokenizer ---- */

static int load_norm_one(hy_tok *t, json_object *n, const char *where, hy_err *err)
{
    const char *type = jstr(n, "type");

    if (type && strcmp(type, "Sequence") == 0) {
        json_object *list = jget(n, "normalizers");
        if (!list || !json_object_is_type(list, json_type_array))
            return hy_err_set(err, -EINVAL, TOK_JSON ": %s.normalizers is not an array", where);
        for (size_t i = 0; i < json_object_array_length(list); i++) {
            char sub[128];
            snprintf(sub, sizeof(sub), "%s.normalizers[%zu]", where, i);
            int rc = load_norm_one(t, json_object_array_get_idx(list, i), sub, err);
            if (rc < 0)
                return rc;
        }
        return 0;
    }
    if (t->n_norm == TOK_MAX_NORM_OPS)
        return hy_err_set(err, -E2BIG, TOK_JSON ": %s: more than %d normalizer steps", where, TOK_MAX_NORM_OPS);
    tok_norm_op *op = &t->norm[t->n_norm];
    if (type && strcmp(type, "Prepend") == 0) {
        const char *p = jstr(n, "prepend");
        if (!p)
            return hy_err_set(err, -EINVAL, TOK_JSON ": %s.prepend is missing", where);
        op->kind = TOK_NORM_PREPEND;
        op->a_len = strlen(p);
        op->a = dup_bytes(p, op->a_len);
    } else if (type && strcmp(type, "Replace") == 0) {
        const char *pat = jstr(jget(n, "pattern"), "String"), *content = jstr(n, "content");
        if (!pat || !*pat)
            return hy_err_set(err, -ENOTSUP, TOK_JSON ": %s.pattern is not supported (only a non-empty "
                              "{\"String\": ...}; Regex patterns are not)", where);
        if (!content)
            return hy_err_set(err, -EINVAL, TOK_JSON ": %s.content is missing", where);
        op->kind = TOK_NORM_REPLACE;
        op->a_len = strlen(pat);
        op->a = dup_bytes(pat, op->a_len);
        op->b_len = strlen(content);
        op->b = dup_bytes(content, op->b_len);
        if (!op->b)
            return hy_err_set(err, -ENOMEM, TOK_JSON ": out of memory");
    } else
        return hy_err_set(err, -ENOTSUP, TOK_JSON ": %s.type \"%s\" is not supported (supported: Sequence, "
                          "Prepend, Replace)", where, type ? type : "(missing)");
    if (!op->a)
        return hy_err_set(err, -ENOMEM, TOK_JSON ": out of memory");
    t->n_norm++;
    return 0;
}

static int load_pre_tokenizer(json_object *pre, hy_err *err)
{
    const char *type = jstr(pre, "type");

    if (!pre)
        return 0;
    /* An empty Sequence splits nothing. */
    if (type && strcmp(type, "Sequence") == 0 && jget(pre, "pretokenizers") &&
        json_object_array_length(jget(pre, "pretokenizers")) == 0)
        return 0;
    return hy_err_set(err, -ENOTSUP, TOK_JSON ": pre_tokenizer.type \"%s\" is not supported (only null: "
                      "the normalizer must do the SentencePiece spacing)", type ? type : "(missing)");
}

/* ---- post_processor and tokenizer_config.json ---- */

static int32_t token_id(const hy_tok *t, const char *s)
{
    if (!s)
        return -1;
    for (int32_t i = 0; i < t->n_added; i++)
        if (strcmp(t->added[i].content, s) == 0)
            return t->added[i].id;
    return tok_strmap_get(&t->vocab, t, s, strlen(s));
}

static int load_post(hy_tok *t, json_object *post, hy_err *err)
{
    const char *type = jstr(post, "type");

    if (!post)
        return 0;
    if (!type || strcmp(type, "TemplateProcessing") != 0)
        return hy_err_set(err, -ENOTSUP, TOK_JSON ": post_processor.type \"%s\" is not supported "
                          "(only TemplateProcessing or null)", type ? type : "(missing)");
    /* The single-sequence template decides whether a BOS goes first. */
    json_object *single = jget(post, "single");
    json_object *first = single && json_object_is_type(single, json_type_array) &&
                         json_object_array_length(single) > 0 ? json_object_array_get_idx(single, 0) : NULL;
    const char *sp = jstr(jget(first, "SpecialToken"), "id");
    if (sp) {
        json_object *spec = jget(jget(post, "special_tokens"), sp);
        json_object *ids = jget(spec, "ids");
        t->bos_id = ids && json_object_array_length(ids) == 1
                    ? (int32_t)json_object_get_int64(json_object_array_get_idx(ids, 0)) : token_id(t, sp);
        t->add_bos = t->bos_id >= 0 && t->bos_id < t->n_vocab;
    }
    return 0;
}

/* bos_token / eos_token are a string or {"content": ...}. */
static const char *config_token(json_object *cfg, const char *key)
{
    json_object *v = jget(cfg, key);

    if (v && json_object_is_type(v, json_type_object))
        return jstr(v, "content");
    return jstr(cfg, key);
}

static int load_config(hy_tok *t, const char *dir, hy_err *err)
{
    json_object *cfg;
    int rc = load_json(dir, TOK_CONFIG_JSON, false, &cfg, err);

    t->eos_id = token_id(t, "</s>");
    if (t->bos_id < 0)
        t->bos_id = token_id(t, "<s>");
    if (rc < 0 || !cfg)
        return rc;
    const char *bos = config_token(cfg, "bos_token"), *eos = config_token(cfg, "eos_token");
    if (bos && (t->bos_id = token_id(t, bos)) < 0)
        rc = hy_err_set(err, -EINVAL, "%s/" TOK_CONFIG_JSON ": bos_token \"%s\" is not a token", dir, bos);
    if (eos && (t->eos_id = token_id(t, eos)) < 0)
        rc = hy_err_set(err, -EINVAL, "%s/" TOK_CONFIG_JSON ": eos_token \"%s\" is not a token", dir, eos);
    t->add_bos = jbool(cfg, "add_bos_token", t->add_bos) && t->bos_id >= 0;
    const char *tmpl = jstr(cfg, "chat_template");
    if (rc == 0 && tmpl && !(t->chat_template = strdup(tmpl)))
        rc = hy_err_set(err, -ENOMEM, TOK_CONFIG_JSON ": out of memory");
    json_object_put(cfg);
    return rc;
}

/* ---- decoder: parsed here, used by tok_decode.c ---- */

static int load_decoder_one(hy_tok *t, json_object *d, const char *where, int *stage, hy_err *err)
{
    const char *type = jstr(d, "type");

    /* Stages: 0 Replace steps, 1 after ByteFallback, 2 after Fuse, 3 after Strip. */
    if (type && strcmp(type, "Replace") == 0 && *stage == 0) {
        const char *pat = jstr(jget(d, "pattern"), "String"), *content = jstr(d, "content");
        if (!pat || !*pat || !content)
            return hy_err_set(err, -ENOTSUP, TOK_JSON ": %s: only Replace of a non-empty {\"String\": ...} "
                              "with a content string is supported", where);
        return 1;   /* the caller keeps it for prepare_dec_text */
    }
    if (type && strcmp(type, "ByteFallback") == 0 && *stage == 0) {
        t->dec_byte_fallback = true;
        *stage = 1;
        return 0;
    }
    if (type && strcmp(type, "Fuse") == 0 && *stage <= 1) {
        *stage = 2;
        return 0;
    }
    if (type && strcmp(type, "Strip") == 0 && *stage == 2) {
        const char *content = jstr(d, "content");
        json_object *start = jget(d, "start"), *stop = jget(d, "stop");
        int len = content ? tok_utf8_char((const uint8_t *)content, strlen(content)) : -1;
        if (len <= 0 || (size_t)len != strlen(content) || (stop && json_object_get_int(stop) != 0) ||
            (start && (json_object_get_int(start) < 0 || json_object_get_int(start) > 64)))
            return hy_err_set(err, -ENOTSUP, TOK_JSON ": %s: only Strip of one character with stop 0 "
                              "and start in [0, 64] is supported", where);
        t->strip_char = tok_utf8_decode((const uint8_t *)content, len);
        t->strip_start = start ? json_object_get_int(start) : 0;
        *stage = 3;
        return 0;
    }
    return hy_err_set(err, -ENOTSUP, TOK_JSON ": %s.type \"%s\" is not supported here (supported: a Sequence "
                      "of Replace..., ByteFallback, Fuse, Strip in that order)", where, type ? type : "(missing)");
}

static int load_decoder(hy_tok *t, json_object *dec, json_object *rep_out[TOK_MAX_DEC_REPLACE],
                        int *n_rep, hy_err *err)
{
    const char *type = jstr(dec, "type");
    json_object *list;
    int stage = 0;

    *n_rep = 0;
    if (!dec)
        return hy_err_set(err, -ENOTSUP, TOK_JSON ": decoder null is not supported (need the SentencePiece "
                          "decoder sequence)");
    if (type && strcmp(type, "Sequence") == 0) {
        list = jget(dec, "decoders");
        if (!list || !json_object_is_type(list, json_type_array))
            return hy_err_set(err, -EINVAL, TOK_JSON ": decoder.decoders is not an array");
    } else {
        list = NULL;
    }
    size_t n = list ? json_object_array_length(list) : 1;
    for (size_t i = 0; i < n; i++) {
        char where[64];
        json_object *d = list ? json_object_array_get_idx(list, i) : dec;
        snprintf(where, sizeof(where), list ? "decoder.decoders[%zu]" : "decoder", i);
        int rc = load_decoder_one(t, d, where, &stage, err);
        if (rc < 0)
            return rc;
        if (rc == 1) {
            if (*n_rep == TOK_MAX_DEC_REPLACE)
                return hy_err_set(err, -E2BIG, TOK_JSON ": %s: more than %d Replace steps", where,
                                  TOK_MAX_DEC_REPLACE);
            rep_out[(*n_rep)++] = d;
        }
    }
    /* Without Fuse the pieces are joined anyway; only Strip depends on it (checked above). */
    return 0;
}

/* Each piece's decoded text: the Replace steps applied, then made valid UTF-8. */
static int prepare_dec_text(hy_tok *t, json_object *rep[], int n_rep, hy_err *err)
{
    tok_buf all = {0};
    size_t *off = malloc(sizeof(*off) * (size_t)t->n_vocab);

    t->dec_text = calloc((size_t)t->n_vocab, sizeof(*t->dec_text));
    t->dec_len = calloc((size_t)t->n_vocab, sizeof(*t->dec_len));
    if (!off || !t->dec_text || !t->dec_len) {
        free(off);
        return hy_err_set(err, -ENOMEM, TOK_JSON ": out of memory");
    }
    for (int32_t id = 0; id < t->n_vocab; id++) {
        const char *p = hy_tok_piece(t, id);
        tok_buf cur = {0};
        int rc = tok_buf_put(&cur, p ? p : "", p ? strlen(p) : 0);
        for (int k = 0; rc == 0 && k < n_rep; k++) {
            const char *pat = jstr(jget(rep[k], "pattern"), "String"), *with = jstr(rep[k], "content");
            size_t pl = strlen(pat);
            tok_buf next = {0};
            rc = tok_buf_put(&next, "", 0);
            for (size_t i = 0; rc == 0 && i < cur.len;) {
                if (i + pl <= cur.len && memcmp(cur.p + i, pat, pl) == 0) {
                    rc = tok_buf_put(&next, with, strlen(with));
                    i += pl;
                } else {
                    rc = tok_buf_put(&next, cur.p + i, 1);
                    i++;
                }
            }
            free(cur.p);
            cur = next;
        }
        size_t clean_len = 0;
        char *clean = rc == 0 ? tok_utf8_sanitize(cur.p, cur.len, &clean_len) : NULL;
        free(cur.p);
        off[id] = all.len;
        if (!clean || tok_buf_put(&all, clean, clean_len + 1) < 0) {
            free(clean);
            free(off);
            free(all.p);
            return hy_err_set(err, -ENOMEM, TOK_JSON ": out of memory");
        }
        t->dec_len[id] = (uint32_t)clean_len;
        free(clean);
    }
    t->dec_text_store = all.p;
    for (int32_t id = 0; id < t->n_vocab; id++)
        t->dec_text[id] = t->dec_text_store + off[id];
    free(off);
    return 0;
}

static int tok_load_json(hy_tok *t, const char *dir, json_object *root, hy_err *err)
{
    json_object *added = jget(root, "added_tokens");
    json_object *rep[TOK_MAX_DEC_REPLACE];
    int n_rep, rc;

    if (added && !json_object_is_type(added, json_type_array))
        return hy_err_set(err, -EINVAL, TOK_JSON ": added_tokens is not an array");
    if ((rc = load_model(t, jget(root, "model"), added, err)) < 0 ||
        (rc = load_added(t, added, err)) < 0 ||
        (rc = load_pre_tokenizer(jget(root, "pre_tokenizer"), err)) < 0)
        return rc;
    if (jget(root, "normalizer") && (rc = load_norm_one(t, jget(root, "normalizer"), "normalizer", err)) < 0)
        return rc;
    if ((rc = load_post(t, jget(root, "post_processor"), err)) < 0 ||
        (rc = load_config(t, dir, err)) < 0 ||
        (rc = load_decoder(t, jget(root, "decoder"), rep, &n_rep, err)) < 0 ||
        (rc = prepare_dec_text(t, rep, n_rep, err)) < 0)
        return rc;
    return tok_decoder_prepare(t, err);
}

int hy_tok_load(const char *dir, hy_tok **out, hy_err *err)
{
    json_object *root;
    hy_tok *t;
    int rc;

    *out = NULL;
    if ((rc = load_json(dir, TOK_JSON, true, &root, err)) < 0)
        return rc;
    t = calloc(1, sizeof(*t));
    if (!t) {
        json_object_put(root);
        return hy_err_set(err, -ENOMEM, TOK_JSON ": out of memory");
    }
    t->bos_id = t->eos_id = t->unk_id = -1;
    t->memo = !(getenv("HYMBA_TOK_NOMEMO") && strcmp(getenv("HYMBA_TOK_NOMEMO"), "1") == 0);
    rc = tok_load_json(t, dir, root, err);
    json_object_put(root);
    if (rc < 0) {
        hy_tok_free(t);
        return rc;
    }
    *out = t;
    return 0;
}

void hy_tok_free(hy_tok *t)
{
    if (!t)
        return;
    for (int32_t i = 0; t->piece && i < t->n_vocab; i++)
        free(t->piece[i]);
    free(t->piece);
    free(t->piece_len);
    free(t->added_of);
    tok_strmap_free(&t->vocab);
    tok_pairmap_free(&t->merges);
    for (int32_t i = 0; i < t->n_added; i++)
        free(t->added[i].content);
    free(t->added);
    tok_trie_free(&t->trie_raw);
    tok_trie_free(&t->trie_norm);
    for (int i = 0; i < t->n_norm; i++) {
        free(t->norm[i].a);
        free(t->norm[i].b);
    }
    free(t->dec_text_store);
    free(t->dec_text);
    free(t->dec_len);
    free(t->dec_byte);
    free(t->is_special);
    free(t->chat_template);
    free(t);
}

int hy_tok_vocab_size(const hy_tok *t) { return t->n_vocab; }
int32_t hy_tok_bos(const hy_tok *t) { return t->bos_id; }
int32_t hy_tok_eos(const hy_tok *t) { return t->eos_id; }
bool hy_tok_add_bos(const hy_tok *t) { return t->add_bos; }
const char *hy_tok_chat_template(const hy_tok *t) { return t->chat_template; }

const char *hy_tok_piece(const hy_tok *t, int32_t id)
{
    if (id < 0 || id >= t->n_vocab)
        return NULL;
    if (t->added_of[id] >= 0)
        return t->added[t->added_of[id]].content;
    return t->piece[id];
}

bool hy_tok_is_special(const hy_tok *t, int32_t id)
{
    return id >= 0 && id < t->n_vocab && t->added_of[id] >= 0 && t->added[t->added_of[id]].special;
}
