/* fuzz-tok.c: libFuzzer target for encode/decode (round trip on valid UTF-8, valid output on anything);
 * without -DHY_LIBFUZZER it is a regression test over tests/fuzz-tok-seeds plus deterministic mutations. */
#include "engine/chat.h"
#include "engine/tok.h"
#include "tests/testutil.h"
#include <dirent.h>
#include <json-c/json.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static hy_tok *fuzz_tok;
static hy_tok *fuzz_plain;      /* the same tokenizer without the chunk memo of long texts */

/* A fuzz failure: report and abort so both libFuzzer and the test harness see it. */
#define FUZZ_ASSERT(cond, what) do { \
        if (!(cond)) { \
            fprintf(stderr, "fuzz-tok: %s failed: %s\n", what, #cond); \
            abort(); \
        } \
    } while (0)

/* Writes a small Llama-shaped tokenizer.json (all 256 byte pieces, a few merges) into dir. */
static int write_synthetic(const char *dir)
{
    static const char *chars[] = { "\xE2\x96\x81", "a", "b", "c", "d", "e", "<", ">", "s", "/" };
    static const char *merges[][2] = { { "\xE2\x96\x81", "a" }, { "b", "c" }, { "\xE2\x96\x81" "a", "bc" },
                                       { "\xE2\x96\x81", "\xE2\x96\x81" }, { "<", "s" } };
    json_object *vocab = json_object_new_object(), *m = json_object_new_array();
    int id = 0;
    char name[16], path[4400], json[8192];

    json_object_object_add(vocab, "<unk>", json_object_new_int(id++));
    json_object_object_add(vocab, "<s>", json_object_new_int(id++));
    json_object_object_add(vocab, "</s>", json_object_new_int(id++));
    for (int b = 0; b < 256; b++) {
        snprintf(name, sizeof(name), "<0x%02X>", b);
        json_object_object_add(vocab, name, json_object_new_int(id++));
    }
    for (size_t i = 0; i < sizeof(chars) / sizeof(chars[0]); i++)
        json_object_object_add(vocab, chars[i], json_object_new_int(id++));
    for (size_t i = 0; i < sizeof(merges) / sizeof(merges[0]); i++) {
        snprintf(json, sizeof(json), "%s%s", merges[i][0], merges[i][1]);
        json_object_object_add(vocab, json, json_object_new_int(id++));
        json_object *pair = json_object_new_array();
        json_object_array_add(pair, json_object_new_string(merges[i][0]));
        json_object_array_add(pair, json_object_new_string(merges[i][1]));
        json_object_array_add(m, pair);
    }
    json_object *root = json_tokener_parse(
        "{\"version\": \"1.0\", \"added_tokens\": ["
        "{\"id\": 0, \"content\": \"<unk>\", \"special\": true, \"normalized\": false},"
        "{\"id\": 1, \"content\": \"<s>\", \"special\": true, \"normalized\": false},"
        "{\"id\": 2, \"content\": \"</s>\", \"special\": true, \"normalized\": false}],"
        "\"normalizer\": {\"type\": \"Sequence\", \"normalizers\": [{\"type\": \"Prepend\", \"prepend\": \"\xE2\x96\x81\"},"
        " {\"type\": \"Replace\", \"pattern\": {\"String\": \" \"}, \"content\": \"\xE2\x96\x81\"}]},"
        "\"pre_tokenizer\": null, \"post_processor\": null,"
        "\"decoder\": {\"type\": \"Sequence\", \"decoders\": [{\"type\": \"Replace\", \"pattern\": {\"String\": \"\xE2\x96\x81\"},"
        " \"content\": \" \"}, {\"type\": \"ByteFallback\"}, {\"type\": \"Fuse\"},"
        " {\"type\": \"Strip\", \"content\": \" \", \"start\": 1, \"stop\": 0}]},"
        "\"model\": {\"type\": \"BPE\", \"unk_token\": \"<unk>\", \"fuse_unk\": true, \"byte_fallback\": true}}");
    json_object *model = NULL;
    json_object_object_get_ex(root, "model", &model);
    json_object_object_add(model, "vocab", vocab);
    json_object_object_add(model, "merges", m);
    snprintf(path, sizeof(path), "%s/tokenizer.json", dir);
    int rc = json_object_to_file(path, root);
    json_object_put(root);
    return rc;
}

/* The real tokenizer from HYMBA_FUZZ_TOK_DIR or $HYMBA_SHARED, else a synthetic one. */
static void fuzz_init(void)
{
    const char *dir = getenv("HYMBA_FUZZ_TOK_DIR"), *shared = getenv("HYMBA_SHARED");
    char buf[4200];
    hy_err err = {0};

    if (!dir && shared) {
        snprintf(buf, sizeof(buf), "%s/testdata/hymba-1.5b-config/tokenizer.json", shared);
        if (access(buf, R_OK) == 0) {
            snprintf(buf, sizeof(buf), "%s/testdata/hymba-1.5b-config", shared);
            dir = buf;
        }
    }
    if (!dir) {
        snprintf(buf, sizeof(buf), "%s/hymba-fuzz-tok-XXXXXX", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
        FUZZ_ASSERT(mkdtemp(buf) && write_synthetic(buf) == 0, "synthetic tokenizer");
        dir = buf;
    }
    if (hy_tok_load(dir, &fuzz_tok, &err) < 0) {
        fprintf(stderr, "fuzz-tok: load %s: %s\n", dir, err.msg);
        abort();
    }
    setenv("HYMBA_TOK_NOMEMO", "1", 1);
    FUZZ_ASSERT(hy_tok_load(dir, &fuzz_plain, &err) == 0, "load without memo");
    unsetenv("HYMBA_TOK_NOMEMO");
    if (strstr(dir, "hymba-fuzz-tok-")) {
        char path[4300];
        snprintf(path, sizeof(path), "%s/tokenizer.json", dir);
        unlink(path);
        rmdir(dir);
    }
    fprintf(stderr, "fuzz-tok: tokenizer from %s\n", dir);
}

/* The round trip holds for valid UTF-8 without ▁ and without added-token text
 * (those decode to a space, or get a ▁ prepended to the text after them). */
static bool round_trips(const char *s, size_t n)
{
    static const char *const avoid[] = { "\xE2\x96\x81", "<unk>", "<s>", "</s>", "[PAD]" };

    if (!hy_test_utf8_valid(s, n))
        return false;
    for (size_t i = 0; i < sizeof(avoid) / sizeof(avoid[0]); i++)
        if (memmem(s, n, avoid[i], strlen(avoid[i])))
            return false;
    return true;
}

static char *stream(const int32_t *ids, size_t n, bool skip, size_t *len)
{
    hy_detok *d = hy_detok_new(fuzz_tok, skip);
    char *out = NULL;

    *len = 0;
    FUZZ_ASSERT(d, "hy_detok_new");
    for (size_t i = 0; i < n; i++) {
        size_t before = *len;
        FUZZ_ASSERT(hy_detok_push(d, ids[i], &out, len) == 0, "push");
        FUZZ_ASSERT(hy_test_utf8_valid(out + before, *len - before), "streamed chunk is valid UTF-8");
    }
    FUZZ_ASSERT(hy_detok_flush(d, &out, len) == 0, "flush");
    hy_detok_free(d);
    return out;
}

static void check_stop_scanner(const char *s, size_t n)
{
    hy_chat_stop st;
    char *out = NULL;
    size_t out_len = 0, half = n / 2;

    hy_chat_stop_init(&st);
    FUZZ_ASSERT(hy_chat_stop_feed(&st, s, half, &out, &out_len) == 0, "stop feed");
    FUZZ_ASSERT(hy_chat_stop_feed(&st, s + half, n - half, &out, &out_len) == 0, "stop feed");
    FUZZ_ASSERT(hy_chat_stop_flush(&st, &out, &out_len) == 0, "stop flush");
    FUZZ_ASSERT(out_len <= n && memcmp(out, s, out_len) == 0, "stop output is a prefix of the input");
    FUZZ_ASSERT(st.stopped || out_len == n, "nothing lost without a marker");
    free(out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *s = (const char *)data;
    int32_t *ids = NULL;
    size_t n = 0, dl = 0, sl = 0;
    char *dec = NULL, *st;
    hy_err err = {0};

    if (!fuzz_tok)
        fuzz_init();
    FUZZ_ASSERT(hy_tok_encode(fuzz_tok, s, size, true, &ids, &n, &err) == 0, "encode");
    for (size_t i = 0; i < n; i++)
        FUZZ_ASSERT(ids[i] >= 0 && ids[i] < hy_tok_vocab_size(fuzz_tok), "ids in range");
    if (size >= 4096) {     /* long enough for the memo: it must not change the ids */
        int32_t *pl = NULL;
        size_t np = 0;
        FUZZ_ASSERT(hy_tok_encode(fuzz_plain, s, size, true, &pl, &np, &err) == 0, "encode plain");
        FUZZ_ASSERT(np == n && memcmp(pl, ids, n * sizeof(*ids)) == 0, "memo ids == plain ids");
        free(pl);
    }
    FUZZ_ASSERT(hy_tok_decode(fuzz_tok, ids, n, false, &dec, &dl, &err) == 0, "decode");
    FUZZ_ASSERT(hy_test_utf8_valid(dec, dl), "decode output is valid UTF-8");
    if (round_trips(s, size)) {
        /* skip the BOS: decode(encode(s)) == s */
        char *rt = NULL;
        size_t rl = 0;
        FUZZ_ASSERT(hy_tok_decode(fuzz_tok, ids + 1, n - 1, false, &rt, &rl, &err) == 0, "decode");
        FUZZ_ASSERT(rl == size && memcmp(rt, s, size) == 0, "decode(encode(s)) == s");
        free(rt);
        /* streaming gives the same text as the whole decode */
        st = stream(ids, n, false, &sl);
        FUZZ_ASSERT(sl == dl && memcmp(st, dec, dl) == 0, "streamed == whole decode");
        free(st);
    }
    free(dec);
    free(ids);

    /* the same bytes as an arbitrary id sequence */
    size_t n_raw = size / sizeof(int32_t);
    int32_t *raw = malloc(sizeof(*raw) * (n_raw ? n_raw : 1));
    memcpy(raw, data, n_raw * sizeof(*raw));
    for (int skip = 0; skip < 2; skip++) {
        FUZZ_ASSERT(hy_tok_decode(fuzz_tok, raw, n_raw, skip, &dec, &dl, &err) == 0, "decode garbage");
        FUZZ_ASSERT(hy_test_utf8_valid(dec, dl), "garbage decode is valid UTF-8");
        free(dec);
        free(stream(raw, n_raw, skip, &sl));
    }
    /* and as small ids, mostly byte pieces */
    for (size_t i = 0; i < n_raw; i++)
        raw[i] = (int32_t)((uint32_t)raw[i] % 300u);
    free(stream(raw, n_raw, false, &sl));
    free(raw);
    check_stop_scanner(s, size);
    return 0;
}

#ifndef HY_LIBFUZZER
/* Regression mode: every seed file, then deterministic mutations of them. */
static int run_one(const uint8_t *d, size_t n)
{
    return LLVMFuzzerTestOneInput(d, n);
}

int main(int argc, char **argv)
{
    const char *top = getenv("top_srcdir");
    char dir[4200];
    uint8_t *seeds[256];
    size_t seed_len[256], n_seeds = 0;
    uint64_t x = 0x2545F4914F6CDD1Dull;

    snprintf(dir, sizeof(dir), "%s", argc > 1 ? argv[1] : "");
    if (argc <= 1)
        snprintf(dir, sizeof(dir), "%s/tests/fuzz-tok-seeds", top ? top : ".");
    DIR *dp = opendir(dir);
    if (!dp) {
        printf("SKIP: seed corpus %s not found (set top_srcdir)\n", dir);
        return 77;
    }
    struct dirent *e;
    while ((e = readdir(dp)) && n_seeds < 256) {
        char path[8400];
        if (e->d_name[0] == '.')
            continue;
        snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
        FILE *f = fopen(path, "rb");
        if (!f)
            continue;
        uint8_t *buf = malloc(1 << 16);
        size_t n = fread(buf, 1, 1 << 16, f);
        fclose(f);
        seeds[n_seeds] = buf;
        seed_len[n_seeds++] = n;
        run_one(buf, n);
    }
    closedir(dp);
    /* mutations: byte flips, inserted specials and multi-byte characters, splices */
    static const char *inserts[] = { "<s>", "</s>", " ", "\xE2\x96\x81", "\xF0\x9F\x98\x80", "\xE4\xB8",
                                     "\n", "<extra_id_1>", "\xFF", "\xC3\xA9" };
    uint8_t buf[4096];
    for (int round = 0; n_seeds && round < 3000; round++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        size_t k = x % n_seeds, n = seed_len[k] < 2048 ? seed_len[k] : 2048;
        memcpy(buf, seeds[k], n);
        for (int m = 0; m < 4; m++) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            size_t pos = n ? (x >> 16) % n : 0;
            if (m % 2 == 0 && n)
                buf[pos] = (uint8_t)(x >> 40);
            else {
                const char *ins = inserts[(x >> 8) % 10];
                size_t il = strlen(ins);
                if (n + il <= sizeof(buf)) {
                    memmove(buf + pos + il, buf + pos, n - pos);
                    memcpy(buf + pos, ins, il);
                    n += il;
                }
            }
        }
        run_one(buf, n);
    }
    /* all seeds end to end, repeated past the memo threshold */
    static uint8_t big[1 << 16];
    size_t big_len = 0;
    while (n_seeds && big_len < 20000)
        for (size_t i = 0; i < n_seeds && big_len + seed_len[i] + 1 < sizeof(big); i++) {
            memcpy(big + big_len, seeds[i], seed_len[i]);
            big_len += seed_len[i];
            big[big_len++] = ' ';
        }
    run_one(big, big_len);
    for (size_t i = 0; i < n_seeds; i++)
        free(seeds[i]);
    hy_tok_free(fuzz_tok);
    hy_tok_free(fuzz_plain);
    printf("fuzz-tok: %zu seeds, 3000 mutations and one %zu-byte text ran clean\n", n_seeds, big_len);
    return 0;
}
#endif
