/* ckpt_synth.c: a made-up model shape and deterministic states for checkpoint tests without weights. */
#include "tests/ckpt_synth.h"
#include "engine/crc32c.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void synth_arch(hy_arch *a)
{
    memset(a, 0, sizeof(*a));
    a->vocab = 37;
    a->hidden = 8;
    a->n_layers = 4;
    a->n_heads = 2;
    a->n_kv_heads = 2;
    a->head_dim = 4;
    a->v_head_dim = 6;
    a->d_inner = 12;
    a->d_state = 3;
    a->d_conv = 4;
    a->n_meta = 3;
    a->window = 5;
    a->is_global[0] = a->is_global[3] = true;
    a->kv_src[0] = 0;
    a->kv_src[1] = 1;
    a->kv_src[2] = 1;
    a->kv_src[3] = 3;
    a->n_kv_layers = 3;
}

void synth_fingerprint(uint8_t fp[HY_FINGERPRINT_LEN], uint8_t salt)
{
    for (int i = 0; i < HY_FINGERPRINT_LEN; i++)
        fp[i] = (uint8_t)(i * 7 + salt * 31 + 1);
}

static uint32_t mix(uint32_t x)
{
    x ^= x >> 16; x *= 0x7feb352dU; x ^= x >> 15; x *= 0x846ca68bU; x ^= x >> 16;
    return x;
}

static float val(uint32_t a, uint32_t b, uint32_t c)
{
    return (float)(mix(a * 0x9e3779b9U ^ mix(b + 0x632be5abU) ^ mix(c * 0x85ebca6bU)) % 20001) / 10000.0f - 1.0f;
}

uint8_t *synth_image(const hy_arch *a, int64_t n_tokens, hy_dtype kv_dt, uint32_t branch, size_t *len)
{
    int64_t n_pos = a->n_meta + n_tokens;
    size_t kvs = hy_dtype_size(kv_dt), n = hy_state_image_bytes(a, n_pos, kv_dt);
    uint8_t *img = calloc(1, n), *p;
    hy_state_image_hdr h = {
        .magic = HY_STATE_IMAGE_MAGIC, .version = HY_STATE_IMAGE_VERSION,
        .n_layers = (uint32_t)a->n_layers, .d_inner = (uint32_t)a->d_inner,
        .d_state = (uint32_t)a->d_state, .d_conv = (uint32_t)a->d_conv,
        .n_kv_layers = (uint32_t)a->n_kv_layers, .n_kv_heads = (uint32_t)a->n_kv_heads,
        .head_dim = (uint32_t)a->head_dim, .v_head_dim = (uint32_t)a->v_head_dim,
        .kv_dtype = kv_dt, .n_meta = (uint32_t)a->n_meta, .window = (uint32_t)a->window,
        .n_pos = n_pos,
    };

    memcpy(img, &h, sizeof(h));
    p = img + sizeof(h);
    for (int L = 0; L < a->n_layers; L++)
        for (int i = 0; i < a->d_inner * (a->d_conv + a->d_state); i++, p += 4) {
            float v = val((uint32_t)L, (uint32_t)n_tokens * 1000u + branch, (uint32_t)i);
            memcpy(p, &v, 4);
        }
    for (int L = 0; L < a->n_layers; L++) {
        if (a->kv_src[L] != L)
            continue;
        uint32_t kept = (uint32_t)hy_state_image_kept(a, L, n_pos);
        size_t ek = (size_t)a->n_kv_heads * a->head_dim, ev = (size_t)a->n_kv_heads * a->v_head_dim;
        memcpy(p, &kept, 4);
        p += 4;
        for (int part = 0; part < 2; part++)
            for (uint32_t e = 0; e < kept; e++) {
                int64_t pos = n_tokens - kept + e;
                size_t w = part ? ev : ek;
                for (size_t j = 0; j < w; j++, p += kvs) {
                    float v = val((uint32_t)(L * 2 + part) + branch * 64u, (uint32_t)pos, (uint32_t)j);
                    if (kvs == 4) {
                        memcpy(p, &v, 4);
                    } else {
                        uint32_t u;
                        memcpy(&u, &v, 4);
                        uint16_t b = (uint16_t)(u >> 16);
                        memcpy(p, &b, 2);
                    }
                }
            }
    }
    if ((size_t)(p - img) != n) {
        fprintf(stderr, "synth_image: wrote %td bytes, expected %zu\n", p - img, n);
        abort();
    }
    *len = n;
    return img;
}

static float *synth_logits(const hy_arch *a, uint32_t salt)
{
    float *l = malloc((size_t)a->vocab * 4);
    for (int i = 0; i < a->vocab; i++)
        l[i] = val(salt, 77u, (uint32_t)i) * 10.0f;
    return l;
}

void synth_ckpt(const hy_arch *a, hy_ckpt *c, int64_t n_tokens, uint32_t n_msgs, uint32_t n_snaps,
                hy_dtype kv_dt)
{
    memset(c, 0, sizeof(*c));
    synth_fingerprint(c->fingerprint, 0);
    snprintf(c->id, sizeof(c->id), "s%04d-test_ID", (int)n_tokens);
    c->owner_uid = 1000;
    c->created_ns = 1700000000000000000LL;
    c->updated_ns = c->created_ns + n_tokens;
    c->snap_keep = n_snaps > 4 ? n_snaps : 4;
    c->sampling = (hy_sampling){ .temperature = 0.7f, .top_k = 40, .top_p = 0.9f, .min_p = 0.05f,
                                 .repeat_penalty = 1.1f, .repeat_last_n = 64 };
    c->rng.s[0] = 1; c->rng.s[1] = 2; c->rng.s[2] = 3; c->rng.s[3] = 0xfeedfacecafebeefULL;
    c->n_msgs = n_msgs;
    c->msgs = calloc(n_msgs ? n_msgs : 1, sizeof(*c->msgs));
    for (uint32_t i = 0; i < n_msgs; i++) {
        char t[64];
        int len = snprintf(t, sizeof(t), "message %u: %s", i, i % 2 ? "an answer" : "a question \xc3\xa9");
        c->msgs[i].role = i == 0 ? 0 : (i % 2 ? 1 : 2);
        c->msgs[i].text = strdup(t);
        c->msgs[i].len = (uint32_t)len;
    }
    c->n_tokens = n_tokens;
    c->tokens = malloc(n_tokens ? (size_t)n_tokens * 4 : 4);
    for (int64_t i = 0; i < n_tokens; i++)
        c->tokens[i] = (int32_t)(mix((uint32_t)i) % (uint32_t)a->vocab);
    c->image = synth_image(a, n_tokens, kv_dt, 0, &c->image_len);
    if (n_tokens) {
        char t[64];
        c->text_len = (size_t)snprintf(t, sizeof(t), "<rendered text of %d tokens>", (int)n_tokens);
        c->text = strdup(t);
    }
    c->logits = n_tokens ? synth_logits(a, (uint32_t)n_tokens) : NULL;
    c->n_snaps = n_snaps;
    c->snaps = calloc(n_snaps ? n_snaps : 1, sizeof(*c->snaps));
    for (uint32_t i = 0; i < n_snaps; i++) {
        hy_ckpt_snap *s = &c->snaps[i];
        s->turn = i;
        s->n_msgs = n_msgs * (i + 1) / (n_snaps + 1);
        s->n_tokens = n_tokens * (int64_t)(i + 1) / (n_snaps + 1);
        s->image = synth_image(a, s->n_tokens, kv_dt, 0, &s->image_len);
        s->logits = synth_logits(a, (uint32_t)s->n_tokens + 5000u);
        s->tokens = malloc(s->n_tokens ? (size_t)s->n_tokens * 4 : 4);
        memcpy(s->tokens, c->tokens, (size_t)s->n_tokens * 4);
        if (i % 2 == 0) {
            char t[64];
            s->text_len = (size_t)snprintf(t, sizeof(t), "<snapshot %u text>", i);
            s->text = strdup(t);
        }
    }
}

static int buf_write(void *ctx, const void *buf, size_t len, hy_err *err)
{
    (void)err;
    uint8_t **pp = ctx;
    memcpy(*pp, buf, len);
    *pp += len;
    return 0;
}

uint8_t *synth_encode(const hy_ckpt *c, const hy_arch *a, size_t *len)
{
    hy_err err = {0};
    uint64_t n = hy_ckpt_encoded_size(c, a);
    uint8_t *buf = malloc(n ? n : 1), *p = buf;
    hy_ckpt_sink sink = { buf_write, &p };

    if (!n || hy_ckpt_encode(c, a, &sink, &err) < 0 || (uint64_t)(p - buf) != n) {
        fprintf(stderr, "synth_encode: %s\n", err.msg);
        abort();
    }
    *len = n;
    return buf;
}

void synth_recrc(uint8_t *buf, size_t len)
{
    size_t off = HY_CKPT_HDR_SIZE;
    uint32_t crc = hy_crc32c(0, buf, offsetof(hy_ckpt_hdr, hdr_crc));

    memcpy(buf + offsetof(hy_ckpt_hdr, hdr_crc), &crc, 4);
    while (off + HY_CKPT_SEC_HDR_SIZE + 4 <= len) {
        uint64_t n;
        memcpy(&n, buf + off + 8, 8);
        if (n > len - off - HY_CKPT_SEC_HDR_SIZE - 4)
            return;
        crc = hy_crc32c(0, buf + off, HY_CKPT_SEC_HDR_SIZE + n);
        memcpy(buf + off + HY_CKPT_SEC_HDR_SIZE + n, &crc, 4);
        off += HY_CKPT_SEC_HDR_SIZE + n + 4;
    }
}

size_t synth_find(const uint8_t *buf, size_t len, uint32_t type, uint64_t *plen)
{
    size_t off = HY_CKPT_HDR_SIZE;
    while (off + HY_CKPT_SEC_HDR_SIZE + 4 <= len) {
        uint32_t t;
        uint64_t n;
        memcpy(&t, buf + off, 4);
        memcpy(&n, buf + off + 8, 8);
        if (t == type) {
            *plen = n;
            return off + HY_CKPT_SEC_HDR_SIZE;
        }
        off += HY_CKPT_SEC_HDR_SIZE + n + 4;
    }
    return 0;
}
