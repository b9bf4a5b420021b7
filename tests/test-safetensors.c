/* test-safetensors.c: round trip through hy_st_write/hy_st_open, then every kind of corrupt file. */
#include "engine/safetensors.h"
#include "engine/sha256.h"
#include "tests/testutil.h"

#include <stdint.h>
#include <string.h>
#include <unistd.h>

#define MUTATIONS 2000

static char *tmp_dir;

static void tmp_path(char *buf, size_t cap, const char *name)
{
    snprintf(buf, cap, "%s/%s", tmp_dir, name);
}

/* A file made by hand: 8-byte length (hlen_override or the header's), header, data_len zero bytes. */
static void write_raw(const char *path, const char *header, uint64_t hlen_override, size_t data_len)
{
    FILE *fp = fopen(path, "wb");
    size_t pad = (8 - strlen(header) % 8) % 8;   /* keep data 8-aligned, as writers do */
    uint64_t hlen = hlen_override ? hlen_override : strlen(header) + pad;
    uint8_t len8[8];

    for (int i = 0; i < 8; i++)
        len8[i] = (uint8_t)(hlen >> (8 * i));
    fwrite(len8, 1, 8, fp);
    fwrite(header, 1, strlen(header), fp);
    for (size_t i = 0; i < pad; i++)
        fputc(' ', fp);
    for (size_t i = 0; i < data_len; i++)
        fputc(0, fp);
    fclose(fp);
}

/* Open must fail with a message naming the file and (if given) the tensor. */
static void expect_bad(const char *what, const char *path, const char *tensor)
{
    hy_st_file *f = NULL;
    hy_err err = { 0 };
    int r = hy_st_open(path, &f, &err);

    CHECK(r < 0 && !f, "%s: accepted", what);
    CHECK(r >= 0 || strstr(err.msg, path), "%s: message \"%s\" does not name the file", what,
          err.msg);
    CHECK(r >= 0 || !tensor || strstr(err.msg, tensor),
          "%s: message \"%s\" does not name tensor '%s'", what, err.msg, tensor);
    if (r < 0 && getenv("VERBOSE"))
        printf("  %s: %s\n", what, err.msg);
    hy_st_close(f);
}

static void test_roundtrip(void)
{
    char path[4096];
    float a[6] = { 1, -2, 3.5f, 0, 1e-3f, 7 };
    uint16_t b[4] = { hy_f32_to_bf16(1.0f), hy_f32_to_bf16(-0.5f), hy_f32_to_bf16(3.0f), 0 };
    int32_t c[5] = { 1, 2, 3, -4, 5 };
    hy_st_out outs[] = {
        { "alpha", HY_ST_F32, 2, { 2, 3 }, a },
        { "beta.weight", HY_ST_BF16, 1, { 4 }, b },
        { "gamma/ids", HY_ST_I32, 1, { 5 }, c },
        { "empty", HY_ST_F32, 2, { 0, 3 }, NULL },
        { "scalar", HY_ST_F32, 0, { 0 }, a },
    };
    hy_st_file *f;
    hy_err err = { 0 };
    const hy_st_tensor *t;

    tmp_path(path, sizeof(path), "ok.safetensors");
    CHECK(hy_st_write(path, outs, 5, &err) == 0, "write: %s", err.msg);
    CHECK(hy_st_open(path, &f, &err) == 0, "open: %s", err.msg);
    if (!f)
        return;
    CHECK(f->n_tensors == 5, "n_tensors %zu", f->n_tensors);
    CHECK(f->header_len % 8 == 0, "header not padded to 8");
    t = hy_st_find(f, "alpha");
    CHECK(t && t->dtype == HY_ST_F32 && t->ndim == 2 && t->shape[0] == 2 && t->shape[1] == 3 &&
          t->nbytes == sizeof(a) && memcmp(t->data, a, sizeof(a)) == 0, "alpha");
    t = hy_st_find(f, "beta.weight");
    CHECK(t && t->dtype == HY_ST_BF16 && hy_bf16_to_f32(((const uint16_t *)t->data)[1]) == -0.5f,
          "beta");
    t = hy_st_find(f, "gamma/ids");
    CHECK(t && t->dtype == HY_ST_I32 && ((const int32_t *)t->data)[3] == -4, "gamma");
    t = hy_st_find(f, "empty");
    CHECK(t && t->nbytes == 0 && t->shape[0] == 0, "empty");
    t = hy_st_find(f, "scalar");
    CHECK(t && t->ndim == 0 && t->nbytes == 4 && *(const float *)t->data == 1.0f, "scalar");
    CHECK(!hy_st_find(f, "delta"), "found a tensor that is not there");
    hy_st_close(f);

    /* Truncations of a valid file: every cut must be refused cleanly. */
    FILE *fp = fopen(path, "rb");
    fseek(fp, 0, SEEK_END);
    long full = ftell(fp);
    fclose(fp);
    for (long cut = full - 1; cut >= 0; cut -= (cut > 40 ? 7 : 1)) {
        char tp[4096];
        tmp_path(tp, sizeof(tp), "trunc.safetensors");
        fp = fopen(path, "rb");
        FILE *out = fopen(tp, "wb");
        for (long i = 0; i < cut; i++)
            fputc(fgetc(fp), out);
        fclose(fp);
        fclose(out);
        expect_bad("truncated", tp, NULL);
    }
    /* Cutting only data names the tensor whose bytes are gone (the last one, "scalar"). */
    {
        char tp[4096];
        tmp_path(tp, sizeof(tp), "trunc-data.safetensors");
        fp = fopen(path, "rb");
        FILE *out = fopen(tp, "wb");
        for (long i = 0; i < full - 2; i++)
            fputc(fgetc(fp), out);
        fclose(fp);
        fclose(out);
        expect_bad("truncated data", tp, "scalar");
    }
}

static void test_corrupt(void)
{
    char p[4096];

    tmp_path(p, sizeof(p), "bad.safetensors");

    write_raw(p, "{\"t\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 1u << 20, 8);
    expect_bad("header length past end", p, NULL);
    write_raw(p, "{\"t\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", UINT64_MAX, 8);
    expect_bad("header length 2^64-1", p, NULL);
    write_raw(p, "{\"t\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}", 0, 8);
    expect_bad("malformed JSON (unterminated)", p, NULL);
    write_raw(p, "{\"t\":{\"dtype\":\"F32\",\"shape\":[2],,\"data_offsets\":[0,8]}}", 0, 8);
    expect_bad("malformed JSON (syntax)", p, NULL);
    write_raw(p, "[1, 2, 3]", 0, 8);
    expect_bad("header not an object", p, NULL);
    write_raw(p, "{\"t\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}xx", 0, 8);
    expect_bad("garbage after JSON", p, NULL);
    write_raw(p, "{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]},"
                 "\"b\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[8,24]}}", 0, 24);
    expect_bad("overlapping offsets", p, "'b'");
    write_raw(p, "{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]},"
                 "\"b\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}", 0, 16);
    expect_bad("identical offsets", p, "overlaps");
    write_raw(p, "{\"a\":{\"dtype\":\"F32\",\"shape\":[250],\"data_offsets\":[0,1000]}}", 0, 24);
    expect_bad("offset out of range", p, "'a'");
    write_raw(p, "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[9223372036854775804,"
                 "9223372036854775808]}}", 0, 24);
    expect_bad("offset near 2^63", p, "'a'");
    write_raw(p, "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[16,8]}}", 0, 24);
    expect_bad("begin after end", p, "'a'");
    write_raw(p, "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[-8,0]}}", 0, 24);
    expect_bad("negative offset", p, "'a'");
    write_raw(p, "{\"q\":{\"dtype\":\"Q4_K\",\"shape\":[2],\"data_offsets\":[0,8]}}", 0, 8);
    expect_bad("unknown dtype", p, "'q'");
    write_raw(p, "{\"s\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,20]}}", 0, 24);
    expect_bad("shape mismatch", p, "'s'");
    write_raw(p, "{\"s\":{\"dtype\":\"F32\",\"shape\":[-2],\"data_offsets\":[0,8]}}", 0, 8);
    expect_bad("negative dim", p, "'s'");
    write_raw(p, "{\"s\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296,4],"
                 "\"data_offsets\":[0,8]}}", 0, 8);
    expect_bad("shape overflow", p, "'s'");
    write_raw(p, "{\"s\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1,1,1],"
                 "\"data_offsets\":[0,4]}}", 0, 8);
    expect_bad("too many dims", p, "'s'");
    write_raw(p, "{\"s\":{\"dtype\":\"F32\",\"shape\":[2]}}", 0, 8);
    expect_bad("no data_offsets", p, "'s'");
    write_raw(p, "{\"s\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0]}}", 0, 8);
    expect_bad("one data offset", p, "'s'");
    write_raw(p, "{\"s\":[1,2]}", 0, 8);
    expect_bad("entry not an object", p, "'s'");
    /* A header not padded to 8 bytes (7 spaces short of it): the data are copied to
     * aligned memory and read back right. */
    {
        char up[4096];
        float v[2] = { 1.5f, -2.25f };
        const char *h = "{\"s\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}";
        uint64_t hl = strlen(h);
        uint8_t len8[8];
        hy_st_file *uf = NULL;
        hy_err uerr = { 0 };
        tmp_path(up, sizeof(up), "unpadded.safetensors");
        FILE *ufp = fopen(up, "wb");
        for (int i = 0; i < 8; i++)
            len8[i] = (uint8_t)(hl >> (8 * i));
        fwrite(len8, 1, 8, ufp);
        fwrite(h, 1, hl, ufp);
        fwrite(v, 1, sizeof(v), ufp);
        fclose(ufp);
        CHECK(hl % 4 != 0, "test header happens to be aligned");
        CHECK(hy_st_open(up, &uf, &uerr) == 0, "unpadded header refused: %s", uerr.msg);
        if (uf) {
            const hy_st_tensor *t = hy_st_find(uf, "s");
            CHECK(t && (uintptr_t)t->data % 4 == 0 && ((const float *)t->data)[1] == -2.25f,
                  "unpadded data");
            hy_st_close(uf);
        }
    }
    /* The header is padded to 8 bytes: offset 2 puts a float at an address 2 mod 4. */
    write_raw(p, "{\"s\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[2,6]}}", 0, 8);
    expect_bad("misaligned data", p, "'s'");
    write_raw(p, "", 0, 0);
    expect_bad("empty header", p, NULL);
    FILE *fp = fopen(p, "wb");
    fwrite("abc", 1, 3, fp);
    fclose(fp);
    expect_bad("3-byte file", p, NULL);
    tmp_path(p, sizeof(p), "absent.safetensors");
    expect_bad("missing file", p, NULL);

    /* Gaps between tensors and __metadata__ are fine. */
    tmp_path(p, sizeof(p), "gap.safetensors");
    write_raw(p, "{\"__metadata__\":{\"format\":\"pt\"},"
                 "\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[16,24]},"
                 "\"b\":{\"dtype\":\"BF16\",\"shape\":[2],\"data_offsets\":[0,4]}}   ", 0, 32);
    hy_st_file *f = NULL;
    hy_err err = { 0 };
    CHECK(hy_st_open(p, &f, &err) == 0 && f->n_tensors == 2, "gap file refused: %s", err.msg);
    hy_st_close(f);
}

/* Random byte edits in the header and length of a valid file: each result either
 * opens with every tensor inside the mapping or is refused; ASan checks the reads. */
static void test_mutations(void)
{
    char path[4096], mpath[4096];
    float a[6] = { 1, 2, 3, 4, 5, 6 };
    uint16_t b[3] = { 1, 2, 3 };
    hy_st_out outs[] = {
        { "model.layers.0.mamba.in_proj.weight", HY_ST_F32, 2, { 2, 3 }, a },
        { "model.norm", HY_ST_BF16, 1, { 3 }, b },
    };
    hy_err err = { 0 };
    uint8_t *orig;
    long len;
    uint32_t x = 12345;
    int opened = 0, refused = 0;

    tmp_path(path, sizeof(path), "mut-src.safetensors");
    tmp_path(mpath, sizeof(mpath), "mut.safetensors");
    if (hy_st_write(path, outs, 2, &err) < 0)
        return;
    FILE *fp = fopen(path, "rb");
    fseek(fp, 0, SEEK_END);
    len = ftell(fp);
    fseek(fp, 0, SEEK_SET);
    orig = malloc((size_t)len);
    if (fread(orig, 1, (size_t)len, fp) != (size_t)len)
        len = 0;
    fclose(fp);
    long hend = len - (long)(sizeof(a) + sizeof(b));   /* bytes before the data */
    for (int it = 0; it < MUTATIONS && len > 0; it++) {
        uint8_t *m = malloc((size_t)len);
        memcpy(m, orig, (size_t)len);
        int edits = 1 + it % 4;
        for (int e = 0; e < edits; e++) {
            x ^= x << 13; x ^= x >> 17; x ^= x << 5;
            long pos = (long)(x % (uint32_t)hend);
            static const char pool[] = "0123456789[]{}\":,-eE \x00\xff";
            m[pos] = (x >> 20) & 1 ? (uint8_t)pool[(x >> 8) % (sizeof(pool) - 1)] : (uint8_t)(x >> 8);
        }
        x ^= x << 13; x ^= x >> 17; x ^= x << 5;
        long cut = (x & 7) == 0 ? (long)(x % (uint32_t)len) : len;   /* sometimes truncate too */
        fp = fopen(mpath, "wb");
        fwrite(m, 1, (size_t)cut, fp);
        fclose(fp);
        free(m);
        hy_st_file *f = NULL;
        if (hy_st_open(mpath, &f, &err) == 0) {
            opened++;
            for (size_t i = 0; i < f->n_tensors; i++) {
                const hy_st_tensor *t = &f->tensors[i];
                const uint8_t *base = f->data_copy ? (const uint8_t *)f->data_copy
                                                   : (const uint8_t *)f->map + 8 + f->header_len;
                const uint8_t *hi = base + (f->map_len - 8 - f->header_len), *d = t->data;
                CHECK(d >= base && d + t->nbytes <= hi,
                      "mutation %d: tensor '%s' outside the file", it, t->name);
                volatile uint8_t sum = 0;
                for (size_t k = 0; k < t->nbytes; k++)
                    sum ^= d[k];
                (void)sum;
            }
            hy_st_close(f);
        } else {
            refused++;
            CHECK(strstr(err.msg, mpath) != NULL, "mutation %d: message lacks the file: %s", it,
                  err.msg);
        }
    }
    free(orig);
    CHECK(refused > 0 && opened + refused == MUTATIONS, "mutations: %d opened, %d refused", opened,
          refused);
    if (getenv("VERBOSE"))
        printf("  mutations: %d opened, %d refused\n", opened, refused);
}

static void test_f16(void)
{
    CHECK(hy_f16_to_f32(0x3c00) == 1.0f, "f16 1.0");
    CHECK(hy_f16_to_f32(0xc000) == -2.0f, "f16 -2.0");
    CHECK(hy_f16_to_f32(0x0001) == 5.9604644775390625e-08f, "f16 min subnormal");
    CHECK(hy_f16_to_f32(0x7bff) == 65504.0f, "f16 max");
    CHECK(hy_f32_to_bf16(1.0f) == 0x3f80, "bf16 1.0");
    CHECK(hy_f32_to_bf16(1.00390625f) == 0x3f80, "bf16 ties to even (down)");
    CHECK(hy_f32_to_bf16(1.01171875f) == 0x3f82, "bf16 ties to even (up)");
}

static void hex(const uint8_t d[32], char out[65])
{
    for (int i = 0; i < 32; i++)
        sprintf(out + 2 * i, "%02x", d[i]);
}

/* FIPS 180-4 example vectors, one-shot and fed in uneven pieces. */
static void test_sha256(void)
{
    static const struct { const char *msg; long repeat; const char *want; } v[] = {
        { "", 1, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855" },
        { "abc", 1, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad" },
        { "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq", 1,
          "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1" },
        { "a", 1000000, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0" },
    };
    for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
        hy_sha256 c;
        uint8_t d[32];
        char h[65];
        hy_sha256_init(&c);
        for (long r = 0; r < v[i].repeat; r++)
            hy_sha256_update(&c, v[i].msg, strlen(v[i].msg));
        hy_sha256_final(&c, d);
        hex(d, h);
        CHECK(strcmp(h, v[i].want) == 0, "sha256 vector %zu: %s", i, h);
    }
    /* 1000 bytes in pieces of 1..63 bytes == one update. */
    uint8_t buf[1000], d1[32], d2[32];
    hy_sha256 a, b;
    for (int i = 0; i < 1000; i++)
        buf[i] = (uint8_t)(i * 7 + 3);
    hy_sha256_init(&a);
    hy_sha256_update(&a, buf, sizeof(buf));
    hy_sha256_final(&a, d1);
    hy_sha256_init(&b);
    for (size_t o = 0, step = 1; o < sizeof(buf); o += step, step = step % 63 + 1)
        hy_sha256_update(&b, buf + o, o + step > sizeof(buf) ? sizeof(buf) - o : step);
    hy_sha256_final(&b, d2);
    CHECK(memcmp(d1, d2, 32) == 0, "sha256 chunked != one-shot");
}

int main(void)
{
    test_sha256();
    tmp_dir = hy_test_tmpdir();
    if (!tmp_dir)
        return 1;
    test_roundtrip();
    test_corrupt();
    test_mutations();
    test_f16();
    hy_test_rmtree(tmp_dir);
    free(tmp_dir);
    return hy_test_done("test-safetensors");
}
