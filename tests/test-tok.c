/* test-tok.c: the real Hymba tokenizer against ids and text from an independent implementation (vectors.jsonl). */
#include "engine/tok.h"
#include "tests/testutil.h"
#include <json-c/json.h>
#include <stdint.h>
#include <string.h>

static bool ids_equal(const int32_t *a, size_t na, json_object *want)
{
    if (na != json_object_array_length(want))
        return false;
    for (size_t i = 0; i < na; i++)
        if (a[i] != json_object_get_int(json_object_array_get_idx(want, i)))
            return false;
    return true;
}

static void print_ids(const char *what, const int32_t *ids, size_t n)
{
    fprintf(stderr, "  %s:", what);
    for (size_t i = 0; i < n && i < 40; i++)
        fprintf(stderr, " %d", ids[i]);
    fprintf(stderr, n > 40 ? " ...\n" : "\n");
}

/* Streams ids one by one: every chunk must be valid UTF-8; returns the concatenation. */
static char *stream_decode(const hy_tok *t, const int32_t *ids, size_t n, bool skip)
{
    hy_detok *d = hy_detok_new(t, skip);
    char *all = NULL;
    size_t all_len = 0;

    for (size_t i = 0; i < n; i++) {
        size_t before = all_len;
        CHECK(hy_detok_push(d, ids[i], &all, &all_len) == 0, "push %d", ids[i]);
        CHECK(hy_test_utf8_valid(all + before, all_len - before), "chunk after id %d is not valid UTF-8", ids[i]);
    }
    CHECK(hy_detok_flush(d, &all, &all_len) == 0, "flush");
    CHECK(all != NULL, "streamed text is missing");
    hy_detok_free(d);
    return all;
}

static void check_vector(const hy_tok *t, json_object *v, int line)
{
    json_object *jt, *jids, *jns, *jdec;
    int32_t *ids = NULL, *ns = NULL;
    size_t n_ids = 0, n_ns = 0;
    hy_err err = {0};

    if (!json_object_object_get_ex(v, "text", &jt) || !json_object_object_get_ex(v, "ids", &jids) ||
        !json_object_object_get_ex(v, "ids_no_special", &jns) || !json_object_object_get_ex(v, "decoded", &jdec)) {
        CHECK(0, "vectors.jsonl line %d lacks a field", line);
        return;
    }
    const char *text = json_object_get_string(jt);
    size_t len = (size_t)json_object_get_string_len(jt);

    CHECK(hy_tok_encode(t, text, len, true, &ids, &n_ids, &err) == 0, "encode: %s", err.msg);
    if (!ids_equal(ids, n_ids, jids)) {
        CHECK(0, "line %d: ids differ for %s", line, json_object_to_json_string(jt));
        print_ids("got ", ids, n_ids);
        fprintf(stderr, "  want: %s\n", json_object_to_json_string(jids));
    }
    CHECK(hy_tok_encode(t, text, len, false, &ns, &n_ns, &err) == 0, "encode: %s", err.msg);
    if (!ids_equal(ns, n_ns, jns)) {
        CHECK(0, "line %d: ids_no_special differ for %s", line, json_object_to_json_string(jt));
        print_ids("got ", ns, n_ns);
    }

    /* decode of the reference ids, skipping specials, whole and streamed */
    size_t n_ref = json_object_array_length(jids);
    int32_t *ref = malloc(sizeof(*ref) * (n_ref ? n_ref : 1));
    for (size_t i = 0; i < n_ref; i++)
        ref[i] = json_object_get_int(json_object_array_get_idx(jids, i));
    char *dec = NULL;
    size_t dec_len = 0;
    CHECK(hy_tok_decode(t, ref, n_ref, true, &dec, &dec_len, &err) == 0, "decode: %s", err.msg);
    if (dec && (dec_len != (size_t)json_object_get_string_len(jdec) ||
                memcmp(dec, json_object_get_string(jdec), dec_len) != 0))
        CHECK(0, "line %d: decoded \"%s\", want %s", line, dec, json_object_to_json_string(jdec));
    char *streamed = stream_decode(t, ref, n_ref, true);
    CHECK(dec && streamed && strcmp(dec, streamed) == 0, "line %d: streamed decode \"%s\" != \"%s\"",
          line, streamed, dec);
    free(streamed);
    free(dec);
    free(ref);
    free(ids);
    free(ns);
}

static void check_facts(const hy_tok *t)
{
    CHECK(hy_tok_vocab_size(t) == 32001, "vocab size %d", hy_tok_vocab_size(t));
    CHECK(hy_tok_bos(t) == 1 && hy_tok_eos(t) == 2, "bos %d eos %d", hy_tok_bos(t), hy_tok_eos(t));
    CHECK(hy_tok_add_bos(t), "add_bos_token is true in tokenizer_config.json");
    CHECK(strcmp(hy_tok_piece(t, 13), "<0x0A>") == 0, "piece 13 = %s", hy_tok_piece(t, 13));
    CHECK(strcmp(hy_tok_piece(t, 32000), "[PAD]") == 0, "piece 32000");
    CHECK(hy_tok_piece(t, 32001) == NULL && hy_tok_piece(t, -1) == NULL, "out of range piece");
    CHECK(hy_tok_is_special(t, 1) && hy_tok_is_special(t, 32000) && !hy_tok_is_special(t, 13), "special flags");
    CHECK(hy_tok_chat_template(t) && strstr(hy_tok_chat_template(t), "<extra_id_1>Assistant"), "chat template");

    /* decode keeps specials when asked, and strips only the very first space */
    int32_t ids[] = { 1, 15043, 2 };    /* <s> ▁Hello </s> */
    char *s = NULL;
    size_t n = 0;
    hy_err err = {0};
    CHECK(hy_tok_decode(t, ids, 3, false, &s, &n, &err) == 0 && strcmp(s, "<s> Hello</s>") == 0,
          "decode with specials: \"%s\"", s);
    free(s);
    CHECK(hy_tok_decode(t, ids, 3, true, &s, &n, &err) == 0 && strcmp(s, "Hello") == 0, "skip: \"%s\"", s);
    free(s);
    /* a lone half of a character, then text: one U+FFFD per byte, as ByteFallback does */
    int32_t half[] = { 231 /* <0xE4> */, 232 /* <0xE5> */, 15043 };
    CHECK(hy_tok_decode(t, half, 3, true, &s, &n, &err) == 0 &&
          strcmp(s, "\xEF\xBF\xBD\xEF\xBF\xBD Hello") == 0, "invalid byte run: \"%s\"", s);
    free(s);
    char *st = stream_decode(t, half, 3, true);
    CHECK(st && strcmp(st, "\xEF\xBF\xBD\xEF\xBF\xBD Hello") == 0, "streamed invalid byte run: \"%s\"", st);
    free(st);
    /* 中 = E4 B8 AD through byte pieces: nothing comes out until the third byte */
    hy_detok *d = hy_detok_new(t, true);
    char *out = NULL;
    size_t out_len = 0;
    CHECK(hy_detok_push(d, 231, &out, &out_len) == 0 && out_len == 0, "held E4");
    CHECK(hy_detok_push(d, 187, &out, &out_len) == 0 && out_len == 0, "held B8");
    CHECK(hy_detok_push(d, 176, &out, &out_len) == 0 && out_len == 3 && strcmp(out, "\xE4\xB8\xAD") == 0,
          "complete char: %zu", out_len);
    hy_detok_free(d);
    free(out);
}

/* Garbage id sequences: whole and streamed decodes stay valid UTF-8. */
static void check_garbage(const hy_tok *t)
{
    uint64_t x = 0x9E3779B97F4A7C15ull;
    int32_t ids[64];

    for (int round = 0; round < 300; round++) {
        for (int i = 0; i < 64; i++) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            /* mostly byte pieces (3..258), some words, specials and out-of-range ids */
            int r = (int)(x % 100);
            ids[i] = r < 70 ? 3 + (int32_t)((x >> 8) % 256) : r < 90 ? (int32_t)((x >> 8) % 32001)
                   : r < 95 ? (int32_t)((x >> 8) % 3) : (int32_t)((x >> 8) % 100000) - 50000;
        }
        for (int skip = 0; skip < 2; skip++) {
            char *s = NULL;
            size_t n = 0;
            hy_err err = {0};
            CHECK(hy_tok_decode(t, ids, 64, skip, &s, &n, &err) == 0 && hy_test_utf8_valid(s, n), "garbage decode");
            free(s);
            char *st = stream_decode(t, ids, 64, skip);
            CHECK(st != NULL, "garbage stream");
            free(st);
        }
    }
}

/* A long text (the memo of chunk ids is on above 4 KB) gives the same ids as
 * the plain merge of every chunk (HYMBA_TOK_NOMEMO=1). */
static void check_memo(const hy_tok *t, const char *dir, const char *long_text, size_t len)
{
    hy_tok *plain = NULL;
    hy_err err = {0};
    int32_t *a = NULL, *b = NULL;
    size_t na = 0, nb = 0;

    setenv("HYMBA_TOK_NOMEMO", "1", 1);
    CHECK(hy_tok_load(dir, &plain, &err) == 0, "load: %s", err.msg);
    unsetenv("HYMBA_TOK_NOMEMO");
    if (!plain)
        return;
    CHECK(len > 4096, "long text is only %zu bytes", len);
    CHECK(hy_tok_encode(t, long_text, len, true, &a, &na, &err) == 0, "encode");
    CHECK(hy_tok_encode(plain, long_text, len, true, &b, &nb, &err) == 0, "encode");
    CHECK(na == nb && memcmp(a, b, na * sizeof(*a)) == 0, "memo changes the ids (%zu vs %zu)", na, nb);
    char *back = NULL;
    size_t bl = 0;
    CHECK(hy_tok_decode(t, a, na, false, &back, &bl, &err) == 0, "decode");
    free(back);
    free(a);
    free(b);
    hy_tok_free(plain);
}

int main(void)
{
    const char *shared = hy_test_shared_dir();
    char dir[4200], path[4200], line[1 << 16];
    hy_tok *t = NULL;
    hy_err err = {0};
    int n = 0;
    static char long_text[1 << 18];
    size_t long_len = 0;

    if (!shared)
        return HY_TEST_SKIP;
    snprintf(dir, sizeof(dir), "%s/testdata/hymba-1.5b-config", shared);
    snprintf(path, sizeof(path), "%s/testdata/tokenizer/vectors.jsonl", shared);
    FILE *f = fopen(path, "r");
    if (!f) {
        printf("SKIP: %s not found\n", path);
        return HY_TEST_SKIP;
    }
    if (hy_tok_load(dir, &t, &err) < 0) {
        fprintf(stderr, "FAIL: load %s: %s\n", dir, err.msg);
        fclose(f);
        return 1;
    }
    check_facts(t);
    while (fgets(line, sizeof(line), f)) {
        json_object *v = json_tokener_parse(line);
        n++;
        CHECK(v, "vectors.jsonl line %d is not JSON", n);
        if (v) {
            check_vector(t, v, n);
            json_object *jt;
            /* the texts twice over, joined by spaces: a long text for check_memo */
            if (json_object_object_get_ex(v, "text", &jt) && long_len + 2 * (size_t)json_object_get_string_len(jt) + 2 < sizeof(long_text))
                for (int k = 0; k < 2; k++) {
                    memcpy(long_text + long_len, json_object_get_string(jt), (size_t)json_object_get_string_len(jt));
                    long_len += (size_t)json_object_get_string_len(jt);
                    long_text[long_len++] = ' ';
                }
        }
        json_object_put(v);
    }
    fclose(f);
    CHECK(n >= 200, "only %d vectors", n);
    printf("checked %d vectors\n", n);
    check_garbage(t);
    check_memo(t, dir, long_text, long_len);
    hy_tok_free(t);
    return hy_test_done("test-tok");
}
