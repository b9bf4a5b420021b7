/* mkmodel-tokenizer.c: a small deterministic byte-fallback BPE tokenizer in the HF/Llama layout. */
#include "tools/mkmodel.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <json-c/json.h>

#define SPACE_MARK "\xe2\x96\x81"          /* U+2581, SentencePiece's word boundary */
#define N_SPECIAL 3                        /* <unk> <s> </s> */
#define N_BYTES 256                        /* <0x00> .. <0xFF> */
#define PIECE_MAX 64
#define MAX_WORD_STAGE 3                   /* longest merged word: 4 letters (+ the mark) */
/* English letters, most frequent first: merges of frequent letters get low ranks. */
static const char letters[] = "etaoinshrdlcumwfgypbvkjxqz";
#define N_LETTERS 26
/* Printable ASCII other than letters and space, as single-character pieces. */
static const char others[] = "0123456789.,'-!?:;\"()/&%$#@*+=<>[]_`{}|~^\\";

/* The model's own chat format (from Hymba's tokenizer_config.json). */
static const char chat_template[] =
    "{{'<extra_id_0>System'}}{% for message in messages %}{% if message['role'] == 'system' %}"
    "{{'\n' + message['content'].strip()}}{% if tools or contexts %}{{'\n'}}{% endif %}{% endif %}"
    "{% endfor %}{% if tools %}{% for tool in tools %}{{ '\n<tool> ' + tool|tojson + ' </tool>' }}"
    "{% endfor %}{% endif %}{% if contexts %}{% if tools %}{{'\n'}}{% endif %}"
    "{% for context in contexts %}{{ '\n<context> ' + context.strip() + ' </context>' }}{% endfor %}"
    "{% endif %}{{'\n\n'}}{% for message in messages %}{% if message['role'] == 'user' %}"
    "{{ '<extra_id_1>User\n' + message['content'].strip() + '\n' }}"
    "{% elif message['role'] == 'assistant' %}"
    "{{ '<extra_id_1>Assistant\n' + message['content'].strip() + '\n' }}"
    "{% elif message['role'] == 'tool' %}{{ '<extra_id_1>Tool\n' + message['content'].strip() + '\n' }}"
    "{% endif %}{% endfor %}{%- if add_generation_prompt %}{{'<extra_id_1>Assistant\n'}}{%- endif %}";

static const char *const specials[N_SPECIAL] = { "<unk>", "<s>", "</s>" };

/* The vocabulary under construction: pieces in id order; merged ones remember their parts. */
typedef struct vocab {
    json_object *vocab;      /* piece -> id */
    json_object *merges;     /* "left right" strings, rank order */
    int n, cap;              /* pieces so far, vocab_size */
} vocab;

static void vocab_add(vocab *v, const char *piece, const char *left, const char *right)
{
    char m[2 * PIECE_MAX + 2];

    if (v->n >= v->cap)
        return;
    json_object_object_add(v->vocab, piece, json_object_new_int(v->n++));
    if (left) {
        snprintf(m, sizeof(m), "%s %s", left, right);
        json_object_array_add(v->merges, json_object_new_string(m));
    }
}

/* A candidate merged piece: prefix + one letter, scored by letter frequency ranks. */
typedef struct cand {
    char left[PIECE_MAX];
    char right[2];
    int score, order;
} cand;

static int cand_cmp(const void *a, const void *b)
{
    const cand *x = a, *y = b;
    if (x->score != y->score)
        return x->score - y->score;
    return x->order - y->order;
}

/* Rank sum of a plain lowercase string (lower = more frequent). */
static int letters_score(const char *s)
{
    int sc = 0;
    for (; *s; s++) {
        const char *p = strchr(letters, *s);
        sc += p ? (int)(p - letters) : N_LETTERS;
    }
    return sc;
}

/* Stage: for every string of `len` lowercase letters (the prefix, optionally after
 * the space mark), the merge prefix + letter; added in frequency order. */
static int stage_words(vocab *v, int len, bool space)
{
    long n = 1;
    cand *c;

    for (int i = 0; i <= len; i++)
        n *= N_LETTERS;
    c = malloc((size_t)n * sizeof(*c));
    if (!c)
        return -ENOMEM;
    for (long k = 0; k < n; k++) {
        char word[PIECE_MAX];
        long q = k;
        for (int i = len; i >= 0; i--, q /= N_LETTERS)
            word[i] = letters[q % N_LETTERS];
        word[len + 1] = '\0';
        snprintf(c[k].left, sizeof(c[k].left), "%s%.*s", space ? SPACE_MARK : "", len, word);
        c[k].right[0] = word[len];
        c[k].right[1] = '\0';
        c[k].score = letters_score(word);
        c[k].order = (int)k;
    }
    qsort(c, (size_t)n, sizeof(*c), cand_cmp);
    for (long k = 0; k < n && v->n < v->cap; k++) {
        char piece[PIECE_MAX + 2];
        snprintf(piece, sizeof(piece), "%s%s", c[k].left, c[k].right);
        vocab_add(v, piece, c[k].left, c[k].right);
    }
    free(c);
    return 0;
}

/* "▁" + each uppercase letter. */
static void stage_capitals(vocab *v)
{
    for (int i = 0; i < N_LETTERS; i++) {
        char up[2] = { (char)(letters[i] - 'a' + 'A'), 0 }, piece[8];
        snprintf(piece, sizeof(piece), SPACE_MARK "%s", up);
        vocab_add(v, piece, SPACE_MARK, up);
    }
}

static int vocab_build(vocab *v)
{
    char piece[16];
    int r;

    for (int i = 0; i < N_SPECIAL; i++)
        vocab_add(v, specials[i], NULL, NULL);
    for (int b = 0; b < N_BYTES; b++) {
        snprintf(piece, sizeof(piece), "<0x%02X>", b);
        vocab_add(v, piece, NULL, NULL);
    }
    vocab_add(v, SPACE_MARK, NULL, NULL);
    for (int i = 0; i < N_LETTERS; i++) {
        char lo[2] = { letters[i], 0 };
        vocab_add(v, lo, NULL, NULL);
    }
    for (int i = 0; i < N_LETTERS; i++) {
        char up[2] = { (char)(letters[i] - 'a' + 'A'), 0 };
        vocab_add(v, up, NULL, NULL);
    }
    for (const char *o = others; *o; o++) {
        char s[2] = { *o, 0 };
        vocab_add(v, s, NULL, NULL);
    }
    /* "▁x", then "xy", "▁X", "▁xy", "xyz", "▁xyz", ... until the vocabulary is full. */
    if ((r = stage_words(v, 0, true)) < 0)
        return r;
    for (int len = 1; v->n < v->cap; len++) {
        if (len > MAX_WORD_STAGE)       /* 26^5 candidates would not fit in memory */
            return -E2BIG;
        if ((r = stage_words(v, len, false)) < 0)
            return r;
        if (len == 1)
            stage_capitals(v);
        if ((r = stage_words(v, len, true)) < 0)
            return r;
    }
    return 0;
}

static json_object *jstr(const char *s)
{
    return json_object_new_string(s);
}

static json_object *added_token(int id, const char *content)
{
    json_object *t = json_object_new_object();
    json_object_object_add(t, "id", json_object_new_int(id));
    json_object_object_add(t, "content", jstr(content));
    json_object_object_add(t, "single_word", json_object_new_boolean(0));
    json_object_object_add(t, "lstrip", json_object_new_boolean(0));
    json_object_object_add(t, "rstrip", json_object_new_boolean(0));
    json_object_object_add(t, "normalized", json_object_new_boolean(0));
    json_object_object_add(t, "special", json_object_new_boolean(1));
    return t;
}

static json_object *replace_op(const char *type_key, const char *from, const char *to)
{
    json_object *o = json_object_new_object(), *pat = json_object_new_object();
    json_object_object_add(o, "type", jstr(type_key));
    json_object_object_add(pat, "String", jstr(from));
    json_object_object_add(o, "pattern", pat);
    json_object_object_add(o, "content", jstr(to));
    return o;
}

static json_object *normalizer(void)
{
    json_object *n = json_object_new_object(), *seq = json_object_new_array(),
                *pre = json_object_new_object();
    json_object_object_add(pre, "type", jstr("Prepend"));
    json_object_object_add(pre, "prepend", jstr(SPACE_MARK));
    json_object_array_add(seq, pre);
    json_object_array_add(seq, replace_op("Replace", " ", SPACE_MARK));
    json_object_object_add(n, "type", jstr("Sequence"));
    json_object_object_add(n, "normalizers", seq);
    return n;
}

static json_object *decoder(void)
{
    json_object *d = json_object_new_object(), *seq = json_object_new_array(),
                *bf = json_object_new_object(), *fuse = json_object_new_object(),
                *strip = json_object_new_object();
    json_object_array_add(seq, replace_op("Replace", SPACE_MARK, " "));
    json_object_object_add(bf, "type", jstr("ByteFallback"));
    json_object_array_add(seq, bf);
    json_object_object_add(fuse, "type", jstr("Fuse"));
    json_object_array_add(seq, fuse);
    json_object_object_add(strip, "type", jstr("Strip"));
    json_object_object_add(strip, "content", jstr(" "));
    json_object_object_add(strip, "start", json_object_new_int(1));
    json_object_object_add(strip, "stop", json_object_new_int(0));
    json_object_array_add(seq, strip);
    json_object_object_add(d, "type", jstr("Sequence"));
    json_object_object_add(d, "decoders", seq);
    return d;
}

/* Adds BOS in front of a single sequence, as the Llama tokenizer does. */
static json_object *post_processor(int bos_id)
{
    json_object *p = json_object_new_object(), *single = json_object_new_array(),
                *pair = json_object_new_array(), *sp = json_object_new_object(),
                *bos = json_object_new_object(), *ids = json_object_new_array(),
                *toks = json_object_new_array();
    for (int k = 0; k < 2; k++) {
        json_object *arr = k == 0 ? single : pair;
        for (int part = 0; part < (k == 0 ? 1 : 2); part++) {
            json_object *st = json_object_new_object(), *sti = json_object_new_object(),
                        *sq = json_object_new_object(), *sqi = json_object_new_object();
            json_object_object_add(sti, "id", jstr("<s>"));
            json_object_object_add(sti, "type_id", json_object_new_int(part));
            json_object_object_add(st, "SpecialToken", sti);
            json_object_object_add(sqi, "id", jstr(part ? "B" : "A"));
            json_object_object_add(sqi, "type_id", json_object_new_int(part));
            json_object_object_add(sq, "Sequence", sqi);
            json_object_array_add(arr, st);
            json_object_array_add(arr, sq);
        }
    }
    json_object_array_add(ids, json_object_new_int(bos_id));
    json_object_array_add(toks, jstr("<s>"));
    json_object_object_add(bos, "id", jstr("<s>"));
    json_object_object_add(bos, "ids", ids);
    json_object_object_add(bos, "tokens", toks);
    json_object_object_add(sp, "<s>", bos);
    json_object_object_add(p, "type", jstr("TemplateProcessing"));
    json_object_object_add(p, "single", single);
    json_object_object_add(p, "pair", pair);
    json_object_object_add(p, "special_tokens", sp);
    return p;
}

static json_object *bpe_model(vocab *v)
{
    json_object *m = json_object_new_object();
    json_object_object_add(m, "type", jstr("BPE"));
    json_object_object_add(m, "dropout", NULL);
    json_object_object_add(m, "unk_token", jstr("<unk>"));
    json_object_object_add(m, "continuing_subword_prefix", NULL);
    json_object_object_add(m, "end_of_word_suffix", NULL);
    json_object_object_add(m, "fuse_unk", json_object_new_boolean(1));
    json_object_object_add(m, "byte_fallback", json_object_new_boolean(1));
    json_object_object_add(m, "ignore_merges", json_object_new_boolean(0));
    json_object_object_add(m, "vocab", v->vocab);
    json_object_object_add(m, "merges", v->merges);
    return m;
}

static json_object *tokenizer_json(vocab *v)
{
    json_object *t = json_object_new_object(), *added = json_object_new_array();
    for (int i = 0; i < N_SPECIAL; i++)
        json_object_array_add(added, added_token(i, specials[i]));
    json_object_object_add(t, "version", jstr("1.0"));
    json_object_object_add(t, "truncation", NULL);
    json_object_object_add(t, "padding", NULL);
    json_object_object_add(t, "added_tokens", added);
    json_object_object_add(t, "normalizer", normalizer());
    json_object_object_add(t, "pre_tokenizer", NULL);
    json_object_object_add(t, "post_processor", post_processor(1));
    json_object_object_add(t, "decoder", decoder());
    json_object_object_add(t, "model", bpe_model(v));
    return t;
}

static json_object *special_entry(const char *content)
{
    json_object *o = json_object_new_object();
    json_object_object_add(o, "content", jstr(content));
    json_object_object_add(o, "lstrip", json_object_new_boolean(0));
    json_object_object_add(o, "normalized", json_object_new_boolean(0));
    json_object_object_add(o, "rstrip", json_object_new_boolean(0));
    json_object_object_add(o, "single_word", json_object_new_boolean(0));
    return o;
}

static json_object *tokenizer_config(void)
{
    json_object *t = json_object_new_object(), *dec = json_object_new_object();
    for (int i = 0; i < N_SPECIAL; i++) {
        char id[8];
        json_object *e = special_entry(specials[i]);
        json_object_object_add(e, "special", json_object_new_boolean(1));
        snprintf(id, sizeof(id), "%d", i);
        json_object_object_add(dec, id, e);
    }
    json_object_object_add(t, "add_bos_token", json_object_new_boolean(1));
    json_object_object_add(t, "add_eos_token", json_object_new_boolean(0));
    json_object_object_add(t, "add_prefix_space", json_object_new_boolean(1));
    json_object_object_add(t, "added_tokens_decoder", dec);
    json_object_object_add(t, "bos_token", jstr("<s>"));
    json_object_object_add(t, "chat_template", jstr(chat_template));
    json_object_object_add(t, "clean_up_tokenization_spaces", json_object_new_boolean(0));
    json_object_object_add(t, "eos_token", jstr("</s>"));
    json_object_object_add(t, "legacy", json_object_new_boolean(1));
    json_object_object_add(t, "model_max_length",
                           json_object_new_double_s(1e30, "1000000000000000019884624838656"));
    json_object_object_add(t, "pad_token", jstr("<unk>"));
    json_object_object_add(t, "padding_side", jstr("left"));
    json_object_object_add(t, "sp_model_kwargs", json_object_new_object());
    json_object_object_add(t, "spaces_between_special_tokens", json_object_new_boolean(0));
    json_object_object_add(t, "tokenizer_class", jstr("LlamaTokenizer"));
    json_object_object_add(t, "unk_token", jstr("<unk>"));
    json_object_object_add(t, "use_default_system_prompt", json_object_new_boolean(0));
    return t;
}

static json_object *special_tokens_map(void)
{
    json_object *m = json_object_new_object();
    json_object_object_add(m, "bos_token", special_entry("<s>"));
    json_object_object_add(m, "eos_token", special_entry("</s>"));
    json_object_object_add(m, "pad_token", special_entry("<unk>"));
    json_object_object_add(m, "unk_token", special_entry("<unk>"));
    return m;
}

int mk_tokenizer_write(const char *outdir, const hy_config *c, hy_err *err)
{
    vocab v = { .vocab = json_object_new_object(), .merges = json_object_new_array(),
                .cap = c->vocab_size };
    json_object *tok, *cfg, *map;
    int r;

    if (c->vocab_size < N_SPECIAL + N_BYTES) {
        json_object_put(v.vocab);
        json_object_put(v.merges);
        return hy_err_set(err, -EINVAL, "vocab_size %d is too small for a byte-fallback "
                          "tokenizer (needs at least %d)", c->vocab_size, N_SPECIAL + N_BYTES);
    }
    if ((r = vocab_build(&v)) < 0) {
        json_object_put(v.vocab);
        json_object_put(v.merges);
        return hy_err_set(err, r, "cannot build a vocabulary of %d pieces", c->vocab_size);
    }
    tok = tokenizer_json(&v);
    cfg = tokenizer_config();
    map = special_tokens_map();
    if ((r = mk_json_write(outdir, "tokenizer.json", tok, err)) == 0 &&
        (r = mk_json_write(outdir, "tokenizer_config.json", cfg, err)) == 0)
        r = mk_json_write(outdir, "special_tokens_map.json", map, err);
    json_object_put(tok);
    json_object_put(cfg);
    json_object_put(map);
    return r;
}

static int copy_file(const char *from, const char *to, bool optional, hy_err *err)
{
    FILE *in = fopen(from, "rb"), *out;
    char buf[1 << 16];
    size_t n;
    int r = 0;

    if (!in)
        return optional && errno == ENOENT ? 0 :
               hy_err_set(err, -errno, "%s: cannot open: %s", from, strerror(errno));
    out = fopen(to, "wb");
    if (!out) {
        fclose(in);
        return hy_err_set(err, -errno, "%s: cannot create: %s", to, strerror(errno));
    }
    while ((n = fread(buf, 1, sizeof(buf), in)) > 0)
        if (fwrite(buf, 1, n, out) != n) {
            r = hy_err_set(err, -EIO, "%s: write failed", to);
            break;
        }
    if (ferror(in))
        r = hy_err_set(err, -EIO, "%s: read failed", from);
    fclose(in);
    if (fclose(out) != 0 && r == 0)
        r = hy_err_set(err, -EIO, "%s: write failed", to);
    return r;
}

int mk_tokenizer_copy(const char *outdir, const char *from, hy_err *err)
{
    static const struct { const char *name; bool optional; } files[] = {
        { "tokenizer.json", false }, { "tokenizer_config.json", false },
        { "special_tokens_map.json", true }, { "added_tokens.json", true },
    };
    for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
        char src[4096], dst[4096];
        int r;
        snprintf(src, sizeof(src), "%s/%s", from, files[i].name);
        snprintf(dst, sizeof(dst), "%s/%s", outdir, files[i].name);
        if ((r = copy_file(src, dst, files[i].optional, err)) < 0)
            return r;
    }
    return 0;
}

int mk_json_write(const char *dir, const char *name, json_object *o, hy_err *err)
{
    char path[4096];
    const char *s = json_object_to_json_string_ext(o, JSON_C_TO_STRING_PRETTY |
                                                      JSON_C_TO_STRING_SPACED |
                                                      JSON_C_TO_STRING_NOSLASHESCAPE);
    FILE *fp;
    int r = 0;

    snprintf(path, sizeof(path), "%s/%s", dir, name);
    fp = fopen(path, "wb");
    if (!fp)
        return hy_err_set(err, -errno, "%s: cannot create: %s", path, strerror(errno));
    if (fputs(s, fp) < 0 || fputc('\n', fp) == EOF)
        r = hy_err_set(err, -EIO, "%s: write failed", path);
    if (fclose(fp) != 0 && r == 0)
        r = hy_err_set(err, -EIO, "%s: write failed", path);
    return r;
}
