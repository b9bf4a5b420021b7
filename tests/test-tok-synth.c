/* test-tok-synth.c: synthetic tokenizer.json files: random merge tables against a naive BPE, unk/byte fallback, added-token flags, refusals. */
#include "engine/tok.h"
#include "tests/testutil.h"
#include <json-c/json.h>
#include <stdint.h>
#include <string.h>

#define SP "\xE2\x96\x81"   /* ▁ */

static uint64_t rng = 0x243F6A8885A308D3ull;
static uint32_t rnd(uint32_t n)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (uint32_t)(rng % n);
}

/* ---- writing tokenizer.json ---- */

typedef struct synth {
    char *piece[512];       /* id -> piece */
    int n;
    int merge_l[512], merge_r[512];
    int n_merges;
} synth;

static int synth_find(const synth *s, const char *p)
{
    for (int i = 0; i < s->n; i++)
        if (strcmp(s->piece[i], p) == 0)
            return i;
    return -1;
}

static int synth_add(synth *s, const char *p)
{
    int i = synth_find(s, p);

    if (i >= 0)
        return i;
    s->piece[s->n] = strdup(p);
    return s->n++;
}

static void synth_free(synth *s)
{
    for (int i = 0; i < s->n; i++)
        free(s->piece[i]);
}

/* The Llama layout: normalizer Prepend ▁ + Replace " " -> ▁, decoder Replace/ByteFallback/Fuse/Strip. */
static json_object *llama_json(const synth *s, bool byte_fallback, bool fuse_unk, bool ignore_merges,
                               json_object *added)
{
    json_object *root = json_object_new_object(), *model = json_object_new_object();
    json_object *vocab = json_object_new_object(), *merges = json_object_new_array();

    for (int i = 0; i < s->n; i++)
        json_object_object_add(vocab, s->piece[i], json_object_new_int(i));
    for (int i = 0; i < s->n_merges; i++) {
        json_object *m = json_object_new_array();
        json_object_array_add(m, json_object_new_string(s->piece[s->merge_l[i]]));
        json_object_array_add(m, json_object_new_string(s->piece[s->merge_r[i]]));
        json_object_array_add(merges, m);
    }
    json_object_object_add(model, "type", json_object_new_string("BPE"));
    json_object_object_add(model, "dropout", NULL);
    json_object_object_add(model, "unk_token", synth_find(s, "<unk>") >= 0 ? json_object_new_string("<unk>") : NULL);
    json_object_object_add(model, "fuse_unk", json_object_new_boolean(fuse_unk));
    json_object_object_add(model, "byte_fallback", json_object_new_boolean(byte_fallback));
    json_object_object_add(model, "ignore_merges", json_object_new_boolean(ignore_merges));
    json_object_object_add(model, "vocab", vocab);
    json_object_object_add(model, "merges", merges);
    json_object_object_add(root, "version", json_object_new_string("1.0"));
    json_object_object_add(root, "added_tokens", added ? added : json_object_new_array());
    json_object_object_add(root, "normalizer", json_tokener_parse(
        "{\"type\": \"Sequence\", \"normalizers\": [{\"type\": \"Prepend\", \"prepend\": \"" SP "\"},"
        " {\"type\": \"Replace\", \"pattern\": {\"String\": \" \"}, \"content\": \"" SP "\"}]}"));
    json_object_object_add(root, "pre_tokenizer", NULL);
    json_object_object_add(root, "post_processor", json_tokener_parse(
        "{\"type\": \"TemplateProcessing\", \"single\": [{\"SpecialToken\": {\"id\": \"<s>\", \"type_id\": 0}},"
        " {\"Sequence\": {\"id\": \"A\", \"type_id\": 0}}], \"special_tokens\": {\"<s>\": {\"id\": \"<s>\","
        " \"ids\": [1], \"tokens\": [\"<s>\"]}}}"));
    json_object_object_add(root, "decoder", json_tokener_parse(
        "{\"type\": \"Sequence\", \"decoders\": [{\"type\": \"Replace\", \"pattern\": {\"String\": \"" SP "\"},"
        " \"content\": \" \"}, {\"type\": \"ByteFallback\"}, {\"type\": \"Fuse\"},"
        " {\"type\": \"Strip\", \"content\": \" \", \"start\": 1, \"stop\": 0}]}"));
    json_object_object_add(root, "model", model);
    return root;
}

static void write_json(const char *dir, const char *name, json_object *o)
{
    char path[4200];

    snprintf(path, sizeof(path), "%s/%s", dir, name);
    CHECK(json_object_to_file_ext(path, o, JSON_C_TO_STRING_PLAIN) == 0, "write %s", path);
}

static json_object *added_token(int id, const char *content, bool special, bool lstrip, bool rstrip,
                                bool normalized)
{
    json_object *o = json_object_new_object();

    json_object_object_add(o, "id", json_object_new_int(id));
    json_object_object_add(o, "content", json_object_new_string(content));
    json_object_object_add(o, "single_word", json_object_new_boolean(false));
    json_object_object_add(o, "lstrip", json_object_new_boolean(lstrip));
    json_object_object_add(o, "rstrip", json_object_new_boolean(rstrip));
    json_object_object_add(o, "normalized", json_object_new_boolean(normalized));
    json_object_object_add(o, "special", json_object_new_boolean(special));
    return o;
}

/* Base vocabulary: <unk> <s> </s>, then the characters a b c ▁. */
static void synth_base(synth *s)
{
    memset(s, 0, sizeof(*s));
    synth_add(s, "<unk>");
    synth_add(s, "<s>");
    synth_add(s, "</s>");
    synth_add(s, "a");
    synth_add(s, "b");
    synth_add(s, "c");
    synth_add(s, SP);
}

/* ---- a naive BPE: rescan for the lowest-rank pair each step (the definition) ---- */

static size_t naive_encode(const synth *s, const char *text, int32_t *out)
{
    char norm[1024];
    int sym[1024];
    size_t n = 0, len = strlen(text), k = 0;

    if (len == 0)
        return 0;
    k = (size_t)sprintf(norm, SP);
    for (size_t i = 0; i < len; i++)
        k += (size_t)sprintf(norm + k, text[i] == ' ' ? SP : "%c", text[i]);
    for (size_t i = 0; i < k;) {
        size_t cl = ((uint8_t)norm[i] & 0x80) ? 3 : 1;
        char ch[4] = {0};
        memcpy(ch, norm + i, cl);
        sym[n++] = synth_find(s, ch);
        i += cl;
    }
    for (;;) {
        int best = -1, best_rank = 1 << 30, new_id = -1;
        for (size_t i = 0; i + 1 < n; i++)
            for (int r = 0; r < s->n_merges && r < best_rank; r++)
                if (s->merge_l[r] == sym[i] && s->merge_r[r] == sym[i + 1]) {
                    char cat[256];
                    snprintf(cat, sizeof(cat), "%s%s", s->piece[sym[i]], s->piece[sym[i + 1]]);
                    best = (int)i;
                    best_rank = r;
                    new_id = synth_find(s, cat);
                }
        if (best < 0)
            break;
        sym[best] = new_id;
        memmove(sym + best + 1, sym + best + 2, sizeof(int) * (n - (size_t)best - 2));
        n--;
    }
    for (size_t i = 0; i < n; i++)
        out[i] = sym[i];
    return n;
}

/* True if a character other than ▁ is followed by ▁ (pieces here are a, b, c, ▁). */
static bool has_inner_mark(const char *p)
{
    for (size_t i = 1; p[i]; i++)
        if (strncmp(p + i, SP, 3) == 0 && (i < 3 || strncmp(p + i - 3, SP, 3) != 0) &&
            ((uint8_t)p[i - 1] & 0x80) == 0)
            return true;
    return false;
}

/* Random merge tables, some with pieces like "a▁" (so words cannot be cut before ▁). */
static void check_random_tables(const char *dir)
{
    for (int table = 0; table < 40; table++) {
        synth s;
        synth_base(&s);
        while (s.n_merges < 60) {
            int l = 3 + (int)rnd((uint32_t)s.n - 3), r = 3 + (int)rnd((uint32_t)s.n - 3);
            char cat[256];
            if (strlen(s.piece[l]) + strlen(s.piece[r]) > 24)
                continue;
            snprintf(cat, sizeof(cat), "%s%s", s.piece[l], s.piece[r]);
            /* half of the tables never merge across a word start */
            if (table % 2 == 0 && has_inner_mark(cat))
                continue;
            if (synth_find(&s, cat) >= 0)
                continue;
            s.merge_l[s.n_merges] = l;
            s.merge_r[s.n_merges] = r;
            s.n_merges++;
            synth_add(&s, cat);
        }
        json_object *root = llama_json(&s, false, true, false, NULL);
        write_json(dir, "tokenizer.json", root);
        json_object_put(root);
        hy_tok *t = NULL;
        hy_err err = {0};
        CHECK(hy_tok_load(dir, &t, &err) == 0, "table %d: %s", table, err.msg);
        for (int trial = 0; t && trial < 200; trial++) {
            char text[128];
            size_t len = rnd(60);
            for (size_t i = 0; i < len; i++)
                text[i] = "abc  "[rnd(5)];
            text[len] = '\0';
            int32_t want[1024], *ids = NULL;
            size_t nw = naive_encode(&s, text, want), n = 0;
            CHECK(hy_tok_encode(t, text, len, false, &ids, &n, &err) == 0, "encode");
            bool same = n == nw && (n == 0 || memcmp(ids, want, n * sizeof(*ids)) == 0);
            CHECK(same, "table %d text [%s]: %zu ids, naive %zu", table, text, n, nw);
            char *back = NULL;
            size_t bl = 0;
            CHECK(hy_tok_decode(t, ids, n, true, &back, &bl, &err) == 0 && strcmp(back, text) == 0,
                  "round trip [%s] -> [%s]", text, back);
            free(back);
            free(ids);
        }
        hy_tok_free(t);
        synth_free(&s);
    }
}

static void encode_expect(const hy_tok *t, const char *text, bool bos, const int32_t *want, size_t nw,
                          const char *what)
{
    int32_t *ids = NULL;
    size_t n = 0;
    hy_err err = {0};

    CHECK(hy_tok_encode(t, text, strlen(text), bos, &ids, &n, &err) == 0, "%s: %s", what, err.msg);
    bool same = n == nw && (n == 0 || memcmp(ids, want, n * sizeof(*ids)) == 0);
    if (!same) {
        fprintf(stderr, "  got:");
        for (size_t i = 0; i < n; i++)
            fprintf(stderr, " %d", ids[i]);
        fprintf(stderr, "\n");
    }
    CHECK(same, "%s", what);
    free(ids);
}

/* unk fusing, byte fallback, added tokens with strip flags, ignore_merges, no tokenizer_config. */
static void check_features(const char *dir)
{
    synth s;
    hy_tok *t = NULL;
    hy_err err = {0};

    synth_base(&s);                         /* 0..6 */
    s.merge_l[0] = 3; s.merge_r[0] = 4;     /* a b -> ab (7) */
    synth_add(&s, "ab");
    s.merge_l[1] = 6; s.merge_r[1] = 7;     /* ▁ ab -> ▁ab (8) */
    synth_add(&s, SP "ab");
    s.n_merges = 2;

    /* fuse_unk: "▁xyab" -> ▁ <unk> ab */
    json_object *root = llama_json(&s, false, true, false, NULL);
    write_json(dir, "tokenizer.json", root);
    json_object_put(root);
    CHECK(hy_tok_load(dir, &t, &err) == 0, "load: %s", err.msg);
    CHECK(hy_tok_add_bos(t) && hy_tok_bos(t) == 1, "BOS from post_processor without tokenizer_config.json");
    encode_expect(t, "xyab", true, (int32_t[]){ 1, 6, 0, 7 }, 4, "fused unk");
    encode_expect(t, "ab", false, (int32_t[]){ 8 }, 1, "merge ranks");
    hy_tok_free(t);
    /* no fusing: one unk per character */
    root = llama_json(&s, false, false, false, NULL);
    write_json(dir, "tokenizer.json", root);
    json_object_put(root);
    CHECK(hy_tok_load(dir, &t, &err) == 0, "load: %s", err.msg);
    encode_expect(t, "xyab", false, (int32_t[]){ 6, 0, 0, 7 }, 4, "unfused unk");
    hy_tok_free(t);

    /* byte fallback: "é" (C3 A9) -> <0xC3> <0xA9> when both exist */
    int c3 = synth_add(&s, "<0xC3>"), a9 = synth_add(&s, "<0xA9>");
    json_object *added = json_object_new_array();
    json_object_array_add(added, added_token(1, "<s>", true, false, false, false));
    json_object_array_add(added, added_token(2, "</s>", true, false, false, false));
    json_object_array_add(added, added_token(11, "<sep>", false, true, true, false));  /* lstrip+rstrip */
    json_object_array_add(added, added_token(12, "c" SP "c", false, false, false, true));  /* normalized */
    root = llama_json(&s, true, true, false, added);
    write_json(dir, "tokenizer.json", root);
    json_object_put(root);
    json_object *cfg = json_tokener_parse("{\"add_bos_token\": false}");
    write_json(dir, "tokenizer_config.json", cfg);
    json_object_put(cfg);
    CHECK(hy_tok_load(dir, &t, &err) == 0, "load: %s", err.msg);
    CHECK(!hy_tok_add_bos(t), "add_bos_token false in tokenizer_config.json");
    encode_expect(t, "\xC3\xA9" "a", false, (int32_t[]){ 6, c3, a9, 3 }, 4, "byte fallback");
    /* "\xF0" alone is not valid UTF-8 and has no byte piece: unk */
    encode_expect(t, "\xF0", false, (int32_t[]){ 6, 0 }, 2, "invalid byte -> unk");
    /* <sep> swallows the spaces around it; segments get their own ▁ */
    encode_expect(t, "ab  <sep>  ab", false, (int32_t[]){ 8, 11, 8 }, 3, "lstrip/rstrip");
    /* a normalized added token is found after the normalizer ran: "c c" -> "▁c▁c" -> ▁ [c▁c] */
    encode_expect(t, "c c", false, (int32_t[]){ 6, 12 }, 2, "normalized added token");
    /* special tokens in text split the text; </s> decodes unless skipped */
    encode_expect(t, "a</s>b", false, (int32_t[]){ 6, 3, 2, 6, 4 }, 5, "special in text");
    char *out = NULL;
    size_t n = 0;
    int32_t d[] = { 6, 3, 2, 6, 4, c3, a9, 11 };
    CHECK(hy_tok_decode(t, d, 8, false, &out, &n, &err) == 0 && strcmp(out, "a</s> b\xC3\xA9<sep>") == 0,
          "decode: [%s]", out);
    free(out);
    CHECK(hy_tok_decode(t, d, 8, true, &out, &n, &err) == 0 && strcmp(out, "a b\xC3\xA9<sep>") == 0,
          "decode skip special: [%s]", out);
    free(out);
    hy_tok_free(t);

    /* ignore_merges: a word that is a piece is taken whole */
    int whole = synth_add(&s, SP "ba");
    root = llama_json(&s, true, true, true, NULL);
    write_json(dir, "tokenizer.json", root);
    json_object_put(root);
    CHECK(hy_tok_load(dir, &t, &err) == 0, "load: %s", err.msg);
    encode_expect(t, "ba", false, (int32_t[]){ whole }, 1, "ignore_merges");
    hy_tok_free(t);
    synth_free(&s);
}

/* Each unsupported setting is refused with a message naming the field and value. */
static void check_refusals(const char *dir)
{
    static const struct { const char *path, *value, *want1, *want2; } cases[] = {
        { "model.type", "\"WordPiece\"", "model.type", "WordPiece" },
        { "normalizer", "{\"type\": \"NFKC\"}", "normalizer", "NFKC" },
        { "normalizer", "{\"type\": \"Replace\", \"pattern\": {\"Regex\": \" +\"}, \"content\": \"x\"}",
          "normalizer.pattern", "Regex" },
        { "pre_tokenizer", "{\"type\": \"Metaspace\", \"replacement\": \"x\"}", "pre_tokenizer", "Metaspace" },
        { "pre_tokenizer", "{\"type\": \"ByteLevel\"}", "pre_tokenizer", "ByteLevel" },
        { "decoder", "null", "decoder", "null" },
        { "decoder", "{\"type\": \"ByteLevel\"}", "decoder", "ByteLevel" },
        { "model.dropout", "0.1", "model.dropout", "0.1" },
        { "model.continuing_subword_prefix", "\"##\"", "continuing_subword_prefix", "##" },
        { "model.merges", "[[\"a\", \"zz\"]]", "model.merges[0]", "zz" },
        { "model.merges", "[\"a b c\"]", "model.merges[0]", "a b c" },
        { "model.vocab", "{\"a\": -4}", "model.vocab", "-4" },
        { "post_processor", "{\"type\": \"ByteLevel\"}", "post_processor", "ByteLevel" },
    };
    synth s;

    synth_base(&s);
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        json_object *root = llama_json(&s, true, true, false, NULL), *parent = root;
        const char *field = cases[i].path, *dot = strchr(field, '.');
        if (dot) {
            char head[64];
            snprintf(head, sizeof(head), "%.*s", (int)(dot - field), field);
            json_object_object_get_ex(root, head, &parent);
            field = dot + 1;
        }
        json_object_object_add(parent, field, json_tokener_parse(cases[i].value));
        write_json(dir, "tokenizer.json", root);
        json_object_put(root);
        hy_tok *t = NULL;
        hy_err err = {0};
        int rc = hy_tok_load(dir, &t, &err);
        CHECK(rc < 0 && t == NULL, "%s = %s accepted", cases[i].path, cases[i].value);
        CHECK(strstr(err.msg, cases[i].want1) && strstr(err.msg, cases[i].want2),
              "%s = %s: message \"%s\" should name %s and %s", cases[i].path, cases[i].value, err.msg,
              cases[i].want1, cases[i].want2);
        hy_tok_free(t);
    }
    /* not JSON; missing directory */
    char path[4200];
    snprintf(path, sizeof(path), "%s/tokenizer.json", dir);
    FILE *f = fopen(path, "w");
    fputs("{\"model\": ", f);
    fclose(f);
    hy_tok *t = NULL;
    hy_err err = {0};
    CHECK(hy_tok_load(dir, &t, &err) < 0 && strstr(err.msg, "tokenizer.json"), "truncated JSON: %s", err.msg);
    CHECK(hy_tok_load("/nonexistent-hymba-dir", &t, &err) < 0 && strstr(err.msg, "/nonexistent-hymba-dir"),
          "missing dir: %s", err.msg);
    synth_free(&s);
}

int main(void)
{
    char *dir = hy_test_tmpdir();

    if (!dir) {
        fprintf(stderr, "FAIL: no temporary directory\n");
        return 1;
    }
    check_random_tables(dir);
    check_features(dir);
    check_refusals(dir);
    hy_test_rmtree(dir);
    free(dir);
    return hy_test_done("test-tok-synth");
}
