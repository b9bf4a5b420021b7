/* test-ckpt-format.c: checkpoint round trip, snapshot sharing, and every refusal with its reason. */
#include "tests/ckpt_synth.h"
#include "tests/testutil.h"
#include <stdlib.h>
#include <string.h>

static hy_arch A;
static uint8_t FP[HY_FINGERPRINT_LEN];

static void same_ckpt(const hy_ckpt *x, const hy_ckpt *y)
{
    CHECK(strcmp(x->id, y->id) == 0, "id %s vs %s", x->id, y->id);
    CHECK(x->owner_uid == y->owner_uid && x->created_ns == y->created_ns &&
          x->updated_ns == y->updated_ns && x->snap_keep == y->snap_keep, "session fields");
    CHECK(memcmp(&x->sampling, &y->sampling, sizeof(x->sampling)) == 0, "sampling");
    CHECK(memcmp(&x->rng, &y->rng, sizeof(x->rng)) == 0, "rng");
    CHECK(x->n_msgs == y->n_msgs, "n_msgs");
    for (uint32_t i = 0; i < x->n_msgs && i < y->n_msgs; i++)
        CHECK(x->msgs[i].role == y->msgs[i].role && x->msgs[i].len == y->msgs[i].len &&
              strcmp(x->msgs[i].text, y->msgs[i].text) == 0, "message %u", i);
    CHECK(x->n_tokens == y->n_tokens && !memcmp(x->tokens, y->tokens, (size_t)x->n_tokens * 4), "tokens");
    CHECK(x->image_len == y->image_len && !memcmp(x->image, y->image, x->image_len), "state image");
    CHECK(x->text_len == y->text_len && (!x->text) == (!y->text) && (!x->text || !strcmp(x->text, y->text)),
          "state text");
    CHECK((x->logits == NULL) == (y->logits == NULL), "logits presence");
    if (x->logits && y->logits)
        CHECK(!memcmp(x->logits, y->logits, (size_t)A.vocab * 4), "logits");
    CHECK(x->n_snaps == y->n_snaps, "n_snaps %u vs %u", x->n_snaps, y->n_snaps);
    for (uint32_t i = 0; i < x->n_snaps && i < y->n_snaps; i++) {
        const hy_ckpt_snap *a = &x->snaps[i], *b = &y->snaps[i];
        CHECK(a->turn == b->turn && a->n_msgs == b->n_msgs && a->n_tokens == b->n_tokens, "snap %u fields", i);
        CHECK(a->image_len == b->image_len && !memcmp(a->image, b->image, a->image_len), "snap %u image", i);
        CHECK(!memcmp(a->logits, b->logits, (size_t)A.vocab * 4), "snap %u logits", i);
        CHECK(a->text_len == b->text_len && (!a->text) == (!b->text) && (!a->text || !strcmp(a->text, b->text)),
              "snap %u text", i);
    }
}

static void roundtrip(int64_t n_tokens, uint32_t n_msgs, uint32_t n_snaps, hy_dtype dt)
{
    hy_ckpt c, d;
    hy_err err = {0};
    hy_ckpt_reason why;
    size_t len;
    uint8_t *buf;

    synth_ckpt(&A, &c, n_tokens, n_msgs, n_snaps, dt);
    buf = synth_encode(&c, &A, &len);
    int rc = hy_ckpt_decode(buf, len, &A, FP, &d, &why, &err);
    CHECK(rc == 0 && why == HY_CKPT_OK, "decode %lld tokens %u snaps: %s", (long long)n_tokens, n_snaps, err.msg);
    if (rc == 0) {
        same_ckpt(&c, &d);
        hy_ckpt_clear(&d);
    }
    hy_ckpt_info info;
    rc = hy_ckpt_peek(buf, len < 300 ? len : 300, len, &info, &why, &err);
    CHECK(rc == 0 && strcmp(info.id, c.id) == 0 && info.n_tokens == n_tokens && info.n_msgs == n_msgs &&
          info.file_size == len, "peek: %s", err.msg);
    free(buf);
    hy_ckpt_clear(&c);
}

/* Snapshots of one branch share the K/V the session still holds. */
static void sharing(void)
{
    hy_ckpt c;
    size_t full = 0, len, len2;
    uint8_t *buf, *buf2;

    synth_ckpt(&A, &c, 40, 6, 3, HY_DT_F32);
    buf = synth_encode(&c, &A, &len);
    for (uint32_t i = 0; i < c.n_snaps; i++)
        full += c.snaps[i].image_len;
    /* Global layers share everything: the file is far smaller than full snapshots. */
    CHECK(len < c.image_len + full * 3 / 4, "file %zu bytes, session %zu + snapshots %zu", len, c.image_len, full);
    /* A snapshot from another branch shares nothing, and still round-trips. */
    free(c.snaps[1].image);
    c.snaps[1].image = synth_image(&A, c.snaps[1].n_tokens, HY_DT_F32, 9, &c.snaps[1].image_len);
    buf2 = synth_encode(&c, &A, &len2);
    CHECK(len2 > len, "a foreign snapshot must be stored whole (%zu vs %zu)", len2, len);
    hy_ckpt d;
    hy_err err = {0};
    CHECK(hy_ckpt_decode(buf2, len2, &A, FP, &d, NULL, &err) == 0, "decode: %s", err.msg);
    same_ckpt(&c, &d);
    hy_ckpt_clear(&d);
    free(buf);
    free(buf2);
    hy_ckpt_clear(&c);
}

static int expect(const uint8_t *buf, size_t len, const hy_arch *a, const uint8_t *fp, hy_ckpt_reason want,
                  const char *needle, const char *what)
{
    hy_ckpt d;
    hy_err err = {0};
    hy_ckpt_reason why = HY_CKPT_OK;
    int rc = hy_ckpt_decode(buf, len, a, fp, &d, &why, &err);

    if (rc == 0)
        hy_ckpt_clear(&d);
    CHECK(rc < 0 && why == want, "%s: rc %d, reason %s (wanted %s): %s", what, rc, hy_ckpt_reason_name(why),
          hy_ckpt_reason_name(want), err.msg);
    if (needle)
        CHECK(strstr(err.msg, needle) != NULL, "%s: message \"%s\" lacks \"%s\"", what, err.msg, needle);
    return rc < 0 && why == want;
}

static void refusals(void)
{
    hy_ckpt c;
    size_t len;
    uint8_t *buf, *b;
    int bad = 0;

    synth_ckpt(&A, &c, 23, 4, 2, HY_DT_BF16);
    buf = synth_encode(&c, &A, &len);
    b = malloc(len);

    /* Every truncation. */
    for (size_t n = 0; n < len; n++)
        bad += !expect(buf, n, &A, FP, HY_CKPT_TRUNCATED, "truncated", "truncated file");
    /* Every byte, one bit flipped each: the reason depends on where. */
    for (size_t i = 0; i < len; i++) {
        memcpy(b, buf, len);
        b[i] ^= (uint8_t)(1u << (i % 8));
        hy_ckpt_reason want = i < HY_CKPT_MAGIC_LEN ? HY_CKPT_BAD_MAGIC
                            : i < HY_CKPT_MAGIC_LEN + 4 ? HY_CKPT_BAD_VERSION
                            : i < HY_CKPT_HDR_SIZE ? HY_CKPT_HEADER_CRC : HY_CKPT_SECTION_CRC;
        bad += !expect(b, len, &A, FP, want, NULL, "bit flip");
    }
    CHECK(bad == 0, "%d of %zu damaged variants refused for the wrong reason", bad, 2 * len);

    /* Named reasons. */
    memcpy(b, buf, len);
    b[HY_CKPT_MAGIC_LEN] = 2;
    synth_recrc(b, len);
    expect(b, len, &A, FP, HY_CKPT_BAD_VERSION, "version 2 unsupported", "version 2");
    uint8_t other[HY_FINGERPRINT_LEN];
    synth_fingerprint(other, 1);
    expect(buf, len, &A, other, HY_CKPT_WRONG_MODEL, "another model", "other fingerprint");
    hy_arch a2 = A;
    a2.window = 6;
    expect(buf, len, &a2, FP, HY_CKPT_WRONG_MODEL, "window 5", "other window");
    memcpy(b, buf, len);
    b[len / 2] ^= 0x10;
    expect(b, len, &A, FP, HY_CKPT_SECTION_CRC, "CRC mismatch in section", "flip in the middle");
    expect(buf, len - 1, &A, FP, HY_CKPT_TRUNCATED, "the file has", "one byte short");
    memcpy(b, buf, 8);
    expect((const uint8_t *)"GGUF\3\0\0\0 and more bytes", 20, &A, FP, HY_CKPT_BAD_MAGIC, NULL, "gguf");

    /* Valid CRCs, bad contents. */
    uint64_t pl;
    size_t off = synth_find(buf, len, HY_CKPT_SEC_TOKENS, &pl);
    memcpy(b, buf, len);
    int32_t tok = A.vocab;
    memcpy(b + off + 8, &tok, 4);
    synth_recrc(b, len);
    expect(b, len, &A, FP, HY_CKPT_MALFORMED, "outside the vocabulary", "token id = vocab");
    off = synth_find(buf, len, HY_CKPT_SEC_MESSAGES, &pl);
    memcpy(b, buf, len);
    b[off] = 9;                                        /* role of message 0 */
    synth_recrc(b, len);
    expect(b, len, &A, FP, HY_CKPT_MALFORMED, "role 9", "role 9");
    off = synth_find(buf, len, HY_CKPT_SEC_STATE_HDR, &pl);
    memcpy(b, buf, len);
    b[off + offsetof(hy_state_image_hdr, n_pos)] ^= 1; /* n_pos disagrees with the tokens */
    synth_recrc(b, len);
    expect(b, len, &A, FP, HY_CKPT_MALFORMED, "n_pos", "n_pos");
    off = synth_find(buf, len, HY_CKPT_SEC_SESSION, &pl);
    memcpy(b, buf, len);
    b[off + 48] = '/';                                 /* id with a slash */
    synth_recrc(b, len);
    expect(b, len, &A, FP, HY_CKPT_MALFORMED, "session id", "id with a slash");
    off = synth_find(buf, len, HY_CKPT_SEC_SAMPLING, &pl);
    memcpy(b, buf, len);
    memset(b + off + 24, 0, 32);                       /* rng all zero */
    synth_recrc(b, len);
    expect(b, len, &A, FP, HY_CKPT_MALFORMED, "RNG", "zero rng");
    off = synth_find(buf, len, HY_CKPT_SEC_SNAPSHOT, &pl);
    memcpy(b, buf, len);
    int64_t big = 24;                                  /* snapshot longer than the session */
    memcpy(b + off + 8, &big, 8);
    synth_recrc(b, len);
    expect(b, len, &A, FP, HY_CKPT_MALFORMED, "prefix", "snapshot beyond the session");

    free(b);
    free(buf);
    hy_ckpt_clear(&c);
}

int main(void)
{
    synth_arch(&A);
    synth_fingerprint(FP, 0);
    roundtrip(0, 0, 0, HY_DT_F32);
    roundtrip(1, 1, 0, HY_DT_F32);
    roundtrip(4, 2, 1, HY_DT_F32);
    roundtrip(5, 2, 2, HY_DT_BF16);     /* window boundary: W = 5 */
    roundtrip(6, 3, 2, HY_DT_F32);
    roundtrip(7, 3, 3, HY_DT_BF16);
    roundtrip(100, 30, 8, HY_DT_F32);   /* far past the window */
    sharing();
    refusals();
    return hy_test_done("test-ckpt-format");
}
