/* ckpt.c: session checkpoint writer and strict reader (layout in engine/ckpt.h). */
#include "engine/ckpt.h"
#include "engine/crc32c.h"
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "the checkpoint and state image are little-endian; add byte swapping for this host"
#endif

_Static_assert(sizeof(hy_ckpt_hdr) == HY_CKPT_HDR_SIZE, "hy_ckpt_hdr must be 128 packed bytes");
_Static_assert(sizeof(hy_state_image_hdr) == 64, "state image header is 64 bytes");

#define SESSION_FIXED 48u      /* SESSION payload bytes before the id */
#define SAMPLING_BYTES 56u     /* 6 x 4-byte fields + 4 x u64 rng words */
#define SNAP_FIXED 20u         /* u32 turn, u32 n_msgs, i64 n_tokens, u32 text_len */
#define MSG_FIXED 8u           /* u32 role, u32 len */
#define KV_OWN_FIXED 8u        /* u32 n_kept, u32 n_own */
#define N_ROLES 4u
#define WRITE_BUF (1u << 20)

const char *hy_ckpt_reason_name(hy_ckpt_reason r)
{
    switch (r) {
    case HY_CKPT_OK: return "ok";
    case HY_CKPT_IO: return "I/O error";
    case HY_CKPT_TRUNCATED: return "truncated";
    case HY_CKPT_BAD_MAGIC: return "not a hymba checkpoint";
    case HY_CKPT_BAD_VERSION: return "unsupported version";
    case HY_CKPT_HEADER_CRC: return "header CRC mismatch";
    case HY_CKPT_WRONG_MODEL: return "made for another model";
    case HY_CKPT_SECTION_CRC: return "section CRC mismatch";
    case HY_CKPT_MALFORMED: return "malformed";
    }
    return "unknown";
}

static const char *sec_name(uint32_t type)
{
    switch (type) {
    case HY_CKPT_SEC_SESSION: return "SESSION";
    case HY_CKPT_SEC_SAMPLING: return "SAMPLING";
    case HY_CKPT_SEC_MESSAGES: return "MESSAGES";
    case HY_CKPT_SEC_TOKENS: return "TOKENS";
    case HY_CKPT_SEC_STATE_HDR: return "STATE_HDR";
    case HY_CKPT_SEC_RECURRENT: return "RECURRENT";
    case HY_CKPT_SEC_KV: return "KV";
    case HY_CKPT_SEC_LOGITS: return "LOGITS";
    case HY_CKPT_SEC_SNAPSHOT: return "SNAPSHOT";
    case HY_CKPT_SEC_TEXT: return "TEXT";
    case HY_CKPT_SEC_END: return "END";
    }
    return "unknown";
}

bool hy_ckpt_id_valid(const char *id)
{
    size_t n = id ? strlen(id) : 0;

    if (n < 1 || n > HY_CKPT_ID_MAX)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = id[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '-' || c == '_'))
            return false;
    }
    return true;
}

void hy_ckpt_snap_clear(hy_ckpt_snap *s)
{
    if (!s)
        return;
    free(s->logits);
    free(s->image);
    free(s->tokens);
    free(s->text);
    memset(s, 0, sizeof(*s));
}

void hy_ckpt_clear(hy_ckpt *c)
{
    if (!c)
        return;
    for (uint32_t i = 0; c->msgs && i < c->n_msgs; i++)
        free(c->msgs[i].text);
    free(c->msgs);
    free(c->tokens);
    free(c->text);
    free(c->image);
    free(c->logits);
    for (uint32_t i = 0; c->snaps && i < c->n_snaps; i++)
        hy_ckpt_snap_clear(&c->snaps[i]);
    free(c->snaps);
    memset(c, 0, sizeof(*c));
}

/* ---- little-endian field access ---- */

static void put_u32(uint8_t *p, uint32_t v) { memcpy(p, &v, 4); }
static void put_u64(uint8_t *p, uint64_t v) { memcpy(p, &v, 8); }
static uint32_t get_u32(const uint8_t *p) { uint32_t v; memcpy(&v, p, 4); return v; }
static uint64_t get_u64(const uint8_t *p) { uint64_t v; memcpy(&v, p, 8); return v; }
static float get_f32(const uint8_t *p) { float v; memcpy(&v, p, 4); return v; }

/* ---- state images ---- */

/* Where the parts of one state image are. */
typedef struct img_view {
    hy_state_image_hdr h;
    const uint8_t *recur;              /* [n_layers][recur_bytes] */
    size_t recur_bytes;                /* conv + ssm of one layer */
    size_t ek, ev;                     /* bytes of one K / V entry */
    const uint8_t *kv[HY_MAX_LAYERS];  /* owner L: its "u32 n_kept" field; NULL otherwise */
    uint32_t kept[HY_MAX_LAYERS];
} img_view;

static size_t recur_bytes(const hy_arch *a)
{
    return (size_t)a->d_inner * (size_t)(a->d_conv + a->d_state) * sizeof(float);
}

/* The image header must describe model a after n_meta + n_tokens positions. */
static int image_hdr_check(const hy_arch *a, const hy_state_image_hdr *h, int64_t n_tokens,
                           const char *what, hy_err *err)
{
    struct { const char *name; uint32_t got, want; } f[] = {
        { "n_layers", h->n_layers, (uint32_t)a->n_layers },
        { "d_inner", h->d_inner, (uint32_t)a->d_inner },
        { "d_state", h->d_state, (uint32_t)a->d_state },
        { "d_conv", h->d_conv, (uint32_t)a->d_conv },
        { "n_kv_layers", h->n_kv_layers, (uint32_t)a->n_kv_layers },
        { "n_kv_heads", h->n_kv_heads, (uint32_t)a->n_kv_heads },
        { "head_dim", h->head_dim, (uint32_t)a->head_dim },
        { "v_head_dim", h->v_head_dim, (uint32_t)a->v_head_dim },
        { "n_meta", h->n_meta, (uint32_t)a->n_meta },
        { "window", h->window, (uint32_t)a->window },
    };

    if (h->magic != HY_STATE_IMAGE_MAGIC)
        return hy_err_set(err, -EBADMSG, "%s: state image magic 0x%08" PRIx32 ", expected 0x%08x",
                          what, h->magic, HY_STATE_IMAGE_MAGIC);
    if (h->version != HY_STATE_IMAGE_VERSION)
        return hy_err_set(err, -EBADMSG, "%s: state image version %" PRIu32 ", expected %u",
                          what, h->version, HY_STATE_IMAGE_VERSION);
    for (size_t i = 0; i < sizeof(f) / sizeof(f[0]); i++)
        if (f[i].got != f[i].want)
            return hy_err_set(err, -EBADMSG, "%s: state image %s = %" PRIu32 ", the model has %" PRIu32,
                              what, f[i].name, f[i].got, f[i].want);
    if (h->kv_dtype != HY_DT_F32 && h->kv_dtype != HY_DT_BF16)
        return hy_err_set(err, -EBADMSG, "%s: state image kv_dtype %" PRIu32 " is not f32 or bf16",
                          what, h->kv_dtype);
    if (n_tokens >= 0 && h->n_pos != (int64_t)a->n_meta + n_tokens)
        return hy_err_set(err, -EBADMSG, "%s: state image n_pos %" PRId64 ", expected %" PRId64
                          " (%d meta + %" PRId64 " tokens)", what, h->n_pos,
                          (int64_t)a->n_meta + n_tokens, a->n_meta, n_tokens);
    return 0;
}

static void view_sizes(const hy_arch *a, const hy_state_image_hdr *h, img_view *v)
{
    size_t kvs = hy_dtype_size((hy_dtype)h->kv_dtype);
    v->recur_bytes = recur_bytes(a);
    v->ek = (size_t)a->n_kv_heads * (size_t)a->head_dim * kvs;
    v->ev = (size_t)a->n_kv_heads * (size_t)a->v_head_dim * kvs;
}

/* Validate a whole image (n_tokens < 0: take n_pos from its header) and index it. */
static int image_index(const hy_arch *a, const uint8_t *img, size_t len, int64_t n_tokens,
                       img_view *v, const char *what, hy_err *err)
{
    const uint8_t *p, *end = img + len;
    int rc;

    memset(v, 0, sizeof(*v));
    if (len < sizeof(hy_state_image_hdr))
        return hy_err_set(err, -EBADMSG, "%s: state image of %zu bytes is shorter than its header",
                          what, len);
    memcpy(&v->h, img, sizeof(v->h));
    if ((rc = image_hdr_check(a, &v->h, n_tokens, what, err)) < 0)
        return rc;
    if (v->h.n_pos < a->n_meta || v->h.n_pos - a->n_meta > (int64_t)(HY_CKPT_FILE_MAX / 4))
        return hy_err_set(err, -EBADMSG, "%s: state image n_pos %" PRId64 " out of range", what, v->h.n_pos);
    if (len != hy_state_image_bytes(a, v->h.n_pos, (hy_dtype)v->h.kv_dtype))
        return hy_err_set(err, -EBADMSG, "%s: state image is %zu bytes, %zu expected for %" PRId64
                          " positions", what, len,
                          hy_state_image_bytes(a, v->h.n_pos, (hy_dtype)v->h.kv_dtype), v->h.n_pos);
    view_sizes(a, &v->h, v);
    v->recur = img + sizeof(hy_state_image_hdr);
    p = v->recur + (size_t)a->n_layers * v->recur_bytes;
    for (int L = 0; L < a->n_layers; L++) {
        if (a->kv_src[L] != L)
            continue;
        int64_t want = hy_state_image_kept(a, L, v->h.n_pos);
        if (p + 4 > end || get_u32(p) != (uint64_t)want)
            return hy_err_set(err, -EBADMSG, "%s: layer %d keeps %" PRIu32 " K/V entries, %" PRId64
                              " expected", what, L, p + 4 > end ? 0 : get_u32(p), want);
        v->kv[L] = p;
        v->kept[L] = (uint32_t)want;
        p += 4 + (size_t)want * (v->ek + v->ev);
    }
    if (p != end)
        return hy_err_set(err, -EBADMSG, "%s: state image has %td stray bytes", what, end - p);
    return 0;
}

int hy_ckpt_image_check(const hy_arch *a, const void *img, size_t len, int64_t n_tokens, hy_err *err)
{
    img_view v;
    if (n_tokens < 0 || n_tokens > (int64_t)(HY_CKPT_FILE_MAX / 4))
        return hy_err_set(err, -EINVAL, "state image: %" PRId64 " tokens out of range", n_tokens);
    return image_index(a, img, len, n_tokens, &v, "state", err);
}

/* K/V entries [0, n_own) a snapshot of layer L stores itself; the rest equal the
 * current state's entries at the same real positions (checked byte for byte). */
static uint32_t snap_own(const hy_arch *a, int L, const img_view *cur, const img_view *sn)
{
    int64_t s1 = sn->h.n_pos - a->n_meta, s0 = s1 - sn->kept[L];   /* real positions held */
    int64_t m1 = cur->h.n_pos - a->n_meta, m0 = m1 - cur->kept[L];
    int64_t own = m0 - s0;
    const uint8_t *sk, *ck;

    if (own < 0)
        own = 0;
    if (sn->h.kv_dtype != cur->h.kv_dtype || s1 > m1 || own >= sn->kept[L])
        return sn->kept[L];
    int64_t shared = sn->kept[L] - own;
    int64_t cur_e = s0 + own - m0;                                   /* first shared entry in cur */
    sk = sn->kv[L] + 4;
    ck = cur->kv[L] + 4;
    if (memcmp(sk + own * sn->ek, ck + cur_e * cur->ek, shared * sn->ek) != 0)
        return sn->kept[L];
    sk += sn->kept[L] * sn->ek;                                      /* V blocks */
    ck += cur->kept[L] * cur->ek;
    if (memcmp(sk + own * sn->ev, ck + cur_e * cur->ev, shared * sn->ev) != 0)
        return sn->kept[L];
    return (uint32_t)own;
}

/* ---- writer ---- */

/* What the encoder decided: indexed images and each snapshot layer's n_own. */
typedef struct enc_plan {
    img_view cur;
    img_view *snap;          /* [n_snaps] */
    uint32_t *own;           /* [n_snaps][n_layers] */
} enc_plan;

static void plan_free(enc_plan *p)
{
    free(p->snap);
    free(p->own);
}

static int plan_make(const hy_ckpt *c, const hy_arch *a, enc_plan *p, hy_err *err)
{
    int rc;

    memset(p, 0, sizeof(*p));
    if (!hy_ckpt_id_valid(c->id))
        return hy_err_set(err, -EINVAL, "checkpoint: session id \"%s\" is not 1..%d of [A-Za-z0-9_-]",
                          c->id, HY_CKPT_ID_MAX);
    if (c->n_snaps > HY_CKPT_SNAPS_MAX)
        return hy_err_set(err, -EINVAL, "checkpoint: %" PRIu32 " snapshots, at most %d",
                          c->n_snaps, HY_CKPT_SNAPS_MAX);
    if ((c->n_tokens > 0) != (c->logits != NULL))
        return hy_err_set(err, -EINVAL, "checkpoint: logits must be present iff tokens are");
    if (c->text && (c->text_len > HY_CKPT_MSG_MAX || memchr(c->text, 0, c->text_len)))
        return hy_err_set(err, -EINVAL, "checkpoint: the state's text is longer than %u bytes or has a NUL",
                          HY_CKPT_MSG_MAX);
    if ((rc = image_index(a, c->image, c->image_len, c->n_tokens, &p->cur, "session state", err)) < 0)
        return rc;
    p->snap = calloc(c->n_snaps ? c->n_snaps : 1, sizeof(*p->snap));
    p->own = calloc((size_t)(c->n_snaps ? c->n_snaps : 1) * a->n_layers, sizeof(*p->own));
    if (!p->snap || !p->own) {
        plan_free(p);
        return hy_err_set(err, -ENOMEM, "checkpoint: out of memory planning %" PRIu32 " snapshots", c->n_snaps);
    }
    for (uint32_t i = 0; i < c->n_snaps; i++) {
        const hy_ckpt_snap *s = &c->snaps[i];
        char what[64];
        snprintf(what, sizeof(what), "snapshot %" PRIu32, i);
        if (s->n_tokens > c->n_tokens || s->n_msgs > c->n_msgs || !s->logits ||
            (s->tokens && s->n_tokens && memcmp(s->tokens, c->tokens, (size_t)s->n_tokens * 4) != 0)) {
            plan_free(p);
            return hy_err_set(err, -EINVAL, "checkpoint: %s (turn %" PRIu32 ") is not a prefix of the session",
                              what, s->turn);
        }
        if ((rc = image_index(a, s->image, s->image_len, s->n_tokens, &p->snap[i], what, err)) < 0) {
            plan_free(p);
            return rc;
        }
        for (int L = 0; L < a->n_layers; L++)
            if (a->kv_src[L] == L)
                p->own[(size_t)i * a->n_layers + L] = snap_own(a, L, &p->cur, &p->snap[i]);
    }
    return 0;
}

typedef struct sec_sizes {
    uint64_t session, messages, tokens, text, snap[HY_CKPT_SNAPS_MAX];
} sec_sizes;

static void plan_sizes(const hy_ckpt *c, const hy_arch *a, const enc_plan *p, sec_sizes *z,
                       uint64_t *total, uint32_t *n_sections)
{
    const uint64_t frame = HY_CKPT_SEC_HDR_SIZE + HY_CKPT_SEC_CRC_SIZE;
    uint64_t t = HY_CKPT_HDR_SIZE;
    uint32_t n = 0;

    z->session = SESSION_FIXED + strlen(c->id);
    z->messages = 0;
    for (uint32_t i = 0; i < c->n_msgs; i++)
        z->messages += MSG_FIXED + c->msgs[i].len;
    z->tokens = (uint64_t)c->n_tokens * 4;
    z->text = c->text ? c->text_len : 0;
    t += frame * 7 + z->session + SAMPLING_BYTES + z->messages + z->tokens + z->text + sizeof(hy_state_image_hdr);
    n += 7;                                                    /* SESSION..STATE_HDR + END */
    t += (uint64_t)a->n_layers * (frame + p->cur.recur_bytes);
    n += a->n_layers;
    for (int L = 0; L < a->n_layers; L++)
        if (a->kv_src[L] == L) {
            t += frame + 4 + (uint64_t)p->cur.kept[L] * (p->cur.ek + p->cur.ev);
            n++;
        }
    if (c->logits) {
        t += frame + (uint64_t)a->vocab * 4;
        n++;
    }
    for (uint32_t i = 0; i < c->n_snaps; i++) {
        const img_view *s = &p->snap[i];
        uint64_t b = SNAP_FIXED + (c->snaps[i].text ? c->snaps[i].text_len : 0) +
                     (uint64_t)a->vocab * 4 + sizeof(hy_state_image_hdr) +
                     (uint64_t)a->n_layers * s->recur_bytes;
        for (int L = 0; L < a->n_layers; L++)
            if (a->kv_src[L] == L)
                b += KV_OWN_FIXED + (uint64_t)p->own[(size_t)i * a->n_layers + L] * (s->ek + s->ev);
        z->snap[i] = b;
        t += frame + b;
        n++;
    }
    *total = t;
    *n_sections = n;
}

uint64_t hy_ckpt_encoded_size(const hy_ckpt *c, const hy_arch *a)
{
    enc_plan p;
    sec_sizes z;
    uint64_t total;
    uint32_t n;

    if (plan_make(c, a, &p, NULL) < 0)
        return 0;
    plan_sizes(c, a, &p, &z, &total, &n);
    plan_free(&p);
    return total;
}

/* One section at a time: header, payload pieces, CRC. */
typedef struct enc {
    hy_ckpt_sink *sink;
    hy_err *err;
    uint32_t crc;
    uint64_t left;           /* payload bytes the open section still expects */
    uint64_t written;
    int rc;
} enc;

static void enc_raw(enc *e, const void *buf, size_t len)
{
    if (e->rc < 0 || len == 0)
        return;
    e->rc = e->sink->write(e->sink->ctx, buf, len, e->err);
    e->written += len;
}

static void sec_begin(enc *e, uint32_t type, uint32_t index, uint64_t len)
{
    uint8_t h[HY_CKPT_SEC_HDR_SIZE];
    put_u32(h, type);
    put_u32(h + 4, index);
    put_u64(h + 8, len);
    e->crc = hy_crc32c(0, h, sizeof(h));
    e->left = len;
    enc_raw(e, h, sizeof(h));
}

static void sec_put(enc *e, const void *buf, size_t len)
{
    if (e->rc < 0)
        return;
    if (len > e->left) {
        e->rc = hy_err_set(e->err, -EINVAL, "checkpoint writer: section overrun (internal error)");
        return;
    }
    e->crc = hy_crc32c(e->crc, buf, len);
    e->left -= len;
    enc_raw(e, buf, len);
}

static void sec_put_u32(enc *e, uint32_t v) { uint8_t b[4]; put_u32(b, v); sec_put(e, b, 4); }
static void sec_put_u64(enc *e, uint64_t v) { uint8_t b[8]; put_u64(b, v); sec_put(e, b, 8); }
static void sec_put_f32(enc *e, float v) { uint32_t u; memcpy(&u, &v, 4); sec_put_u32(e, u); }

static void sec_end(enc *e)
{
    uint8_t b[4];
    if (e->rc < 0)
        return;
    if (e->left != 0) {
        e->rc = hy_err_set(e->err, -EINVAL, "checkpoint writer: section short by %" PRIu64
                           " bytes (internal error)", e->left);
        return;
    }
    put_u32(b, e->crc);
    enc_raw(e, b, 4);
}

static void enc_header(enc *e, const hy_ckpt *c, const hy_arch *a, uint64_t total, uint32_t n_sec)
{
    hy_ckpt_hdr h;
    memset(&h, 0, sizeof(h));
    memcpy(h.magic, HY_CKPT_MAGIC, HY_CKPT_MAGIC_LEN);
    h.version = HY_CKPT_VERSION;
    h.hdr_size = HY_CKPT_HDR_SIZE;
    h.file_size = total;
    memcpy(h.fingerprint, c->fingerprint, HY_FINGERPRINT_LEN);
    h.n_sections = n_sec;
    h.vocab = a->vocab; h.n_layers = a->n_layers; h.d_inner = a->d_inner;
    h.d_state = a->d_state; h.d_conv = a->d_conv; h.n_kv_layers = a->n_kv_layers;
    h.n_kv_heads = a->n_kv_heads; h.head_dim = a->head_dim; h.v_head_dim = a->v_head_dim;
    h.n_meta = a->n_meta; h.window = a->window;
    h.hdr_crc = hy_crc32c(0, &h, offsetof(hy_ckpt_hdr, hdr_crc));
    enc_raw(e, &h, sizeof(h));
}

static void enc_session(enc *e, const hy_ckpt *c, uint64_t len)
{
    size_t id_len = strlen(c->id);
    sec_begin(e, HY_CKPT_SEC_SESSION, 0, len);
    sec_put_u32(e, c->owner_uid);
    sec_put_u32(e, (uint32_t)id_len);
    sec_put_u64(e, (uint64_t)c->created_ns);
    sec_put_u64(e, (uint64_t)c->updated_ns);
    sec_put_u32(e, c->n_msgs);
    sec_put_u32(e, c->n_snaps);
    sec_put_u64(e, (uint64_t)c->n_tokens);
    sec_put_u32(e, c->snap_keep);
    sec_put_u32(e, 0);
    sec_put(e, c->id, id_len);
    sec_end(e);
}

static void enc_sampling(enc *e, const hy_ckpt *c)
{
    sec_begin(e, HY_CKPT_SEC_SAMPLING, 0, SAMPLING_BYTES);
    sec_put_f32(e, c->sampling.temperature);
    sec_put_u32(e, (uint32_t)c->sampling.top_k);
    sec_put_f32(e, c->sampling.top_p);
    sec_put_f32(e, c->sampling.min_p);
    sec_put_f32(e, c->sampling.repeat_penalty);
    sec_put_u32(e, (uint32_t)c->sampling.repeat_last_n);
    for (int i = 0; i < 4; i++)
        sec_put_u64(e, c->rng.s[i]);
    sec_end(e);
}

static void enc_messages(enc *e, const hy_ckpt *c, uint64_t len)
{
    sec_begin(e, HY_CKPT_SEC_MESSAGES, 0, len);
    for (uint32_t i = 0; i < c->n_msgs; i++) {
        sec_put_u32(e, c->msgs[i].role);
        sec_put_u32(e, c->msgs[i].len);
        sec_put(e, c->msgs[i].text, c->msgs[i].len);
    }
    sec_end(e);
}

static void enc_state(enc *e, const hy_arch *a, const img_view *v)
{
    sec_begin(e, HY_CKPT_SEC_STATE_HDR, 0, sizeof(v->h));
    sec_put(e, &v->h, sizeof(v->h));
    sec_end(e);
    for (int L = 0; L < a->n_layers; L++) {
        sec_begin(e, HY_CKPT_SEC_RECURRENT, (uint32_t)L, v->recur_bytes);
        sec_put(e, v->recur + (size_t)L * v->recur_bytes, v->recur_bytes);
        sec_end(e);
    }
    for (int L = 0; L < a->n_layers; L++) {
        if (a->kv_src[L] != L)
            continue;
        size_t n = 4 + (size_t)v->kept[L] * (v->ek + v->ev);
        sec_begin(e, HY_CKPT_SEC_KV, (uint32_t)L, n);
        sec_put(e, v->kv[L], n);
        sec_end(e);
    }
}

static void enc_snapshot(enc *e, const hy_arch *a, uint32_t i, const hy_ckpt_snap *s,
                         const img_view *v, const uint32_t *own, uint64_t len)
{
    sec_begin(e, HY_CKPT_SEC_SNAPSHOT, i, len);
    sec_put_u32(e, s->turn);
    sec_put_u32(e, s->n_msgs);
    sec_put_u64(e, (uint64_t)s->n_tokens);
    sec_put_u32(e, s->text ? (uint32_t)s->text_len : 0);
    sec_put(e, s->text, s->text ? s->text_len : 0);
    sec_put(e, s->logits, (size_t)a->vocab * 4);
    sec_put(e, &v->h, sizeof(v->h));
    sec_put(e, v->recur, (size_t)a->n_layers * v->recur_bytes);
    for (int L = 0; L < a->n_layers; L++) {
        if (a->kv_src[L] != L)
            continue;
        const uint8_t *k = v->kv[L] + 4, *val = k + (size_t)v->kept[L] * v->ek;
        sec_put_u32(e, v->kept[L]);
        sec_put_u32(e, own[L]);
        sec_put(e, k, (size_t)own[L] * v->ek);
        sec_put(e, val, (size_t)own[L] * v->ev);
    }
    sec_end(e);
}

int hy_ckpt_encode(const hy_ckpt *c, const hy_arch *a, hy_ckpt_sink *sink, hy_err *err)
{
    enc_plan p;
    sec_sizes z;
    uint64_t total;
    uint32_t n_sec;
    enc e = { .sink = sink, .err = err };
    int rc;

    if ((rc = plan_make(c, a, &p, err)) < 0)
        return rc;
    plan_sizes(c, a, &p, &z, &total, &n_sec);
    enc_header(&e, c, a, total, n_sec);
    enc_session(&e, c, z.session);
    enc_sampling(&e, c);
    enc_messages(&e, c, z.messages);
    sec_begin(&e, HY_CKPT_SEC_TOKENS, 0, z.tokens);
    sec_put(&e, c->tokens, (size_t)z.tokens);
    sec_end(&e);
    sec_begin(&e, HY_CKPT_SEC_TEXT, 0, z.text);
    sec_put(&e, c->text, (size_t)z.text);
    sec_end(&e);
    enc_state(&e, a, &p.cur);
    if (c->logits) {
        sec_begin(&e, HY_CKPT_SEC_LOGITS, 0, (uint64_t)a->vocab * 4);
        sec_put(&e, c->logits, (size_t)a->vocab * 4);
        sec_end(&e);
    }
    for (uint32_t i = 0; i < c->n_snaps; i++)
        enc_snapshot(&e, a, i, &c->snaps[i], &p.snap[i], p.own + (size_t)i * a->n_layers, z.snap[i]);
    sec_begin(&e, HY_CKPT_SEC_END, 0, 0);
    sec_end(&e);
    plan_free(&p);
    if (e.rc == 0 && e.written != total)
        e.rc = hy_err_set(err, -EINVAL, "checkpoint writer: wrote %" PRIu64 " bytes, planned %" PRIu64
                          " (internal error)", e.written, total);
    return e.rc;
}

/* Buffered fd sink. */
typedef struct fd_sink {
    int fd;
    uint8_t *buf;
    size_t used, cap;
} fd_sink;

static int fd_write_all(int fd, const void *buf, size_t len, hy_err *err)
{
    const uint8_t *p = buf;
    while (len > 0) {
        ssize_t n = write(fd, p, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return hy_err_set(err, -errno, "checkpoint: write failed: %s", strerror(errno));
        if (n == 0)
            return hy_err_set(err, -EIO, "checkpoint: write returned 0");
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

static int fd_sink_flush(fd_sink *s, hy_err *err)
{
    int rc = fd_write_all(s->fd, s->buf, s->used, err);
    s->used = 0;
    return rc;
}

static int fd_sink_write(void *ctx, const void *buf, size_t len, hy_err *err)
{
    fd_sink *s = ctx;
    int rc;

    if (s->used + len > s->cap && (rc = fd_sink_flush(s, err)) < 0)
        return rc;
    if (len >= s->cap)
        return fd_write_all(s->fd, buf, len, err);
    memcpy(s->buf + s->used, buf, len);
    s->used += len;
    return 0;
}

int hy_ckpt_write_fd(int fd, const hy_ckpt *c, const hy_arch *a, hy_err *err)
{
    fd_sink s = { .fd = fd, .cap = WRITE_BUF };
    hy_ckpt_sink sink = { fd_sink_write, &s };
    int rc;

    if (!(s.buf = malloc(s.cap)))
        return hy_err_set(err, -ENOMEM, "checkpoint: out of memory for the write buffer");
    rc = hy_ckpt_encode(c, a, &sink, err);
    if (rc == 0)
        rc = fd_sink_flush(&s, err);
    free(s.buf);
    return rc;
}

/* ---- reader ---- */

typedef struct dec {
    const uint8_t *buf;
    uint64_t len, off;
    uint64_t flen;           /* the whole file's size (a peek holds only a prefix) */
    uint32_t n_read;         /* sections read */
    hy_ckpt_reason why;
    hy_err *err;
} dec;

static int refuse(dec *d, hy_ckpt_reason why, int code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static int refuse(dec *d, hy_ckpt_reason why, int code, const char *fmt, ...)
{
    char msg[HY_ERR_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    d->why = why;
    return hy_err_set(d->err, code, "%s: %s", hy_ckpt_reason_name(why), msg);
}

/* The next section must be (type, index); returns its payload. */
static int sec_next(dec *d, uint32_t type, uint32_t index, const uint8_t **pay, uint64_t *plen)
{
    const uint8_t *h = d->buf + d->off;
    uint64_t room = d->len - d->off, len;
    uint32_t crc;

    if (room < HY_CKPT_SEC_HDR_SIZE + HY_CKPT_SEC_CRC_SIZE)
        return refuse(d, HY_CKPT_MALFORMED, -EBADMSG, "file ends at offset %" PRIu64
                      " where section %s %" PRIu32 " should start", d->off, sec_name(type), index);
    len = get_u64(h + 8);
    if (len > room - HY_CKPT_SEC_HDR_SIZE - HY_CKPT_SEC_CRC_SIZE)
        /* The file has its declared size, so this length field is damaged. */
        return refuse(d, HY_CKPT_SECTION_CRC, -EBADMSG, "section %s %" PRIu32 " at offset %" PRIu64
                      ": damaged header (length %" PRIu64 " runs past the end)",
                      sec_name(type), index, d->off, len);
    crc = hy_crc32c(0, h, HY_CKPT_SEC_HDR_SIZE + len);
    if (crc != get_u32(h + HY_CKPT_SEC_HDR_SIZE + len))
        return refuse(d, HY_CKPT_SECTION_CRC, -EBADMSG, "CRC mismatch in section %s %" PRIu32
                      " at offset %" PRIu64 " (stored 0x%08" PRIx32 ", computed 0x%08" PRIx32 ")",
                      sec_name(get_u32(h) == type ? type : get_u32(h)), get_u32(h + 4), d->off,
                      get_u32(h + HY_CKPT_SEC_HDR_SIZE + len), crc);
    if (get_u32(h) != type || get_u32(h + 4) != index)
        return refuse(d, HY_CKPT_MALFORMED, -EBADMSG, "offset %" PRIu64 ": expected section %s %" PRIu32
                      ", found type 0x%08" PRIx32 " (%s) index %" PRIu32, d->off, sec_name(type), index,
                      get_u32(h), sec_name(get_u32(h)), get_u32(h + 4));
    *pay = h + HY_CKPT_SEC_HDR_SIZE;
    *plen = len;
    d->off += HY_CKPT_SEC_HDR_SIZE + len + HY_CKPT_SEC_CRC_SIZE;
    d->n_read++;
    return 0;
}

static int dec_header(dec *d, const hy_arch *a, const uint8_t *fp, hy_ckpt_hdr *h)
{
    const uint8_t *b = d->buf;

    if (d->len == 0)
        return refuse(d, HY_CKPT_TRUNCATED, -EBADMSG, "empty file");
    if (memcmp(b, HY_CKPT_MAGIC, d->len < HY_CKPT_MAGIC_LEN ? d->len : HY_CKPT_MAGIC_LEN) != 0)
        return refuse(d, HY_CKPT_BAD_MAGIC, -EBADMSG, "the first bytes are not the checkpoint magic");
    if (d->len < HY_CKPT_MAGIC_LEN + 4)
        return refuse(d, HY_CKPT_TRUNCATED, -EBADMSG, "%" PRIu64 " bytes, the header alone is %u",
                      d->len, HY_CKPT_HDR_SIZE);
    if (get_u32(b + HY_CKPT_MAGIC_LEN) != HY_CKPT_VERSION)
        return refuse(d, HY_CKPT_BAD_VERSION, -ENOTSUP, "format version %" PRIu32
                      " unsupported (this reader knows version %u)", get_u32(b + HY_CKPT_MAGIC_LEN),
                      HY_CKPT_VERSION);
    if (d->len < HY_CKPT_HDR_SIZE)
        return refuse(d, HY_CKPT_TRUNCATED, -EBADMSG, "%" PRIu64 " bytes, the header alone is %u",
                      d->len, HY_CKPT_HDR_SIZE);
    memcpy(h, b, sizeof(*h));
    if (hy_crc32c(0, b, offsetof(hy_ckpt_hdr, hdr_crc)) != h->hdr_crc)
        return refuse(d, HY_CKPT_HEADER_CRC, -EBADMSG, "CRC mismatch in the file header");
    if (h->hdr_size != HY_CKPT_HDR_SIZE || h->flags != 0 ||
        (h->reserved[0] | h->reserved[1] | h->reserved[2] | h->reserved[3]) != 0)
        return refuse(d, HY_CKPT_MALFORMED, -EBADMSG, "header size %" PRIu32 " / flags 0x%" PRIx32
                      " or reserved fields (expected %u / 0 / 0)", h->hdr_size, h->flags, HY_CKPT_HDR_SIZE);
    if (h->file_size > d->flen)
        return refuse(d, HY_CKPT_TRUNCATED, -EBADMSG, "the header says %" PRIu64
                      " bytes, the file has %" PRIu64, h->file_size, d->flen);
    if (h->file_size < d->flen)
        return refuse(d, HY_CKPT_MALFORMED, -EBADMSG, "%" PRIu64 " bytes after the declared end (%" PRIu64 ")",
                      d->flen - h->file_size, h->file_size);
    if (fp && memcmp(h->fingerprint, fp, HY_FINGERPRINT_LEN) != 0)
        return refuse(d, HY_CKPT_WRONG_MODEL, -ESTALE, "model fingerprint %02x%02x%02x%02x... differs from the"
                      " loaded model's %02x%02x%02x%02x... (vocab %" PRIu32 "/%d, layers %" PRIu32 "/%d, hidden"
                      " state %" PRIu32 "/%d)", h->fingerprint[0], h->fingerprint[1], h->fingerprint[2],
                      h->fingerprint[3], fp[0], fp[1], fp[2], fp[3], h->vocab, a ? a->vocab : 0,
                      h->n_layers, a ? a->n_layers : 0, h->d_inner, a ? a->d_inner : 0);
    if (a && (h->vocab != (uint32_t)a->vocab || h->n_layers != (uint32_t)a->n_layers ||
              h->d_inner != (uint32_t)a->d_inner || h->d_state != (uint32_t)a->d_state ||
              h->d_conv != (uint32_t)a->d_conv || h->n_kv_layers != (uint32_t)a->n_kv_layers ||
              h->n_kv_heads != (uint32_t)a->n_kv_heads || h->head_dim != (uint32_t)a->head_dim ||
              h->v_head_dim != (uint32_t)a->v_head_dim || h->n_meta != (uint32_t)a->n_meta ||
              h->window != (uint32_t)a->window))
        return refuse(d, HY_CKPT_WRONG_MODEL, -ESTALE, "the file's model shape (vocab %" PRIu32 ", %" PRIu32
                      " layers, d_inner %" PRIu32 ", window %" PRIu32 ") differs from the loaded model's",
                      h->vocab, h->n_layers, h->d_inner, h->window);
    d->off = HY_CKPT_HDR_SIZE;
    return 0;
}

static int dec_session(dec *d, hy_ckpt_info *in, uint32_t *snap_keep)
{
    const uint8_t *p;
    uint64_t n;
    uint32_t id_len;
    int rc;

    if ((rc = sec_next(d, HY_CKPT_SEC_SESSION, 0, &p, &n)) < 0)
        return rc;
    if (n < SESSION_FIXED || n != SESSION_FIXED + (id_len = get_u32(p + 4)))
        return refuse(d, HY_CKPT_MALFORMED, -EBADMSG, "SESSION is %" PRIu64 " bytes, inconsistent with"
                      " its id length", n);
    if (id_len < 1 || id_len > HY_CKPT_ID_MAX)
        return refuse(d, HY_CKPT_MALFORMED, -EBADMSG, "session id of %" PRIu32 " bytes", id_len);
    memset(in, 0, sizeof(*in));
    memcpy(in->id, p + SESSION_FIXED, id_len);
    if (strlen(in->id) != id_len || !hy_ckpt_id_valid(in->id))
        return refuse(d, HY_CKPT_MALFORMED, -EBADMSG, "session id is not [A-Za-z0-9_-]");
    in->owner_uid = get_u32(p);
    in->created_ns = (int64_t)get_u64(p + 8);
    in->updated_ns = (int64_t)get_u64(p + 16);
    in->n_msgs = get_u32(p + 24);
    in->n_snaps = get_u32(p + 28);
    in->n_tokens = (int64_t)get_u64(p + 32);
    *snap_keep = get_u32(p + 40);
    if (get_u32(p + 44) != 0)
        return refuse(d, HY_CKPT_MALFORMED, -EBADMSG, "SESSION reserved field is not 0");
    if (in->n_snaps > HY_CKPT_SNAPS_MAX || *snap_keep > HY_CKPT_SNAPS_MAX)
        return refuse(d, HY_CKPT_MALFORMED, -EBADMSG, "%" PRIu32 " snapshots / keep %" PRIu32
                      ", at most %d", in->n_snaps, *snap_keep, HY_CKPT_SNAPS_MAX);
    if (in->n_tokens < 0 || (uint64_t)in->n_tokens > d->flen / 4 || in->n_msgs > d->flen / MSG_FIXED)
        return refuse(d, HY_CKPT_MALFORMED, -EBADMSG, "%" PRId64 " tokens / %" PRIu32
                      " messages cannot fit in %" PRIu64 " bytes", in->n_tokens, in->n_msgs, d->flen);
    return 0;
}

static int dec_sampling(dec *d, hy_ckpt *c)
{
    const uint8_t *p;
    uint64_t n;
    int rc;

    if ((rc = sec_next(d, HY_CKPT_SEC_SAMPLING, 0, &p, &n)) < 0)
        return rc;
    if (n != SAMPLING_BYTES)
        return refuse(d, HY_CKPT_MALFORMED, -EBADMSG, "SAMPLING is %" PRIu64 " bytes, expected %u",
                      n, SAMPLING_BYTES);
    c->sampling.temperature = get_f32(p);
    c->sampling.top_k = (int32_t)get_u32(p + 4);
    c->sampling.top_p = get_f32(p + 8);
    c->sampling.min_p = get_f32(p + 12);
    c->sampling.repeat_penalty = get_f32(p + 16);
    c->sampling.repeat_last_n = (int32_t)get_u32(p + 20);
    for (int i = 0; i < 4; i++)
        c->rng.s[i] = get_u64(p + 24 + 8 * i);
    if (!isfinite(c->sampling.temperature) || !isfinite(c->sampling.top_p) ||
        !isfinite(c->sampling.min_p) || !isfinite(c->sampling.repeat_penalty) ||
        c->sampling.repeat_last_n < 0)
        return refuse(d, HY_CKPT_MALFORMED, -EBADMSG, "sampling settings out of range");
    if ((c->rng.s[0] | c->rng.s[1] | c->rng.s[2] | c->rng.s[3]) == 0)
        return refuse(d, HY_CKPT_MALFORMED, -EBADMSG, "RNG state is all zero (xoshiro256** cannot leave it)");
    return 0;
}

static int dec_messages(dec *d, hy_ckpt *c)
{
    const uint8_t *p, *end;
    uint64_t n;
    int rc;

    if ((rc = sec_next(d, HY_CKPT_SEC_MESSAGES, 0, &p, &n)) < 0)
        return rc;
    end = p + n;
    if (c->n_msgs && !(c->msgs = calloc(c->n_msgs, sizeof(*c->msgs))))
        return refuse(d, HY_CKPT_MALFORMED, -ENOMEM, "out of memory for %" PRIu32 " messages", c->n_msgs);
    for (uint32_t i = 0; i < c->n_msgs; i++) {
        uint32_t role, len;
        if ((uint64_t)(end - p) < MSG_FIXED)
            return refuse(d, HY_CKPT_MALFORMED, -EBADMSG, "MESSAGES ends inside message %" PRIu32, i);
        role = get_u32(p);
        len = get_u32(p + 4);
        p += MSG_FIXED;
        if (role >= N_ROLES || len > HY_CKPT_MSG_MAX || len > (uint64_t)(end - p))
            return refuse(d, HY_CKPT_MALFORMED, -EBADMSG, "message %" PRIu32 ": role %" PRIu32
                          ", length %" PRIu32 " out of bounds", i, role, len);
        if (memchr(p, 0, len))
            return refuse(d, HY_CKPT_MALFORMED, -EBADMSG, "message %" PRIu32 " contains a NUL byte", i);
        if (!(c->msgs[i].text = malloc((size_t)len + 1)))
            return refuse(d, HY_CKPT_MALFORMED, -ENOMEM, "out of memory for message %" PRIu32, i);
        memcpy(c->msgs[i].text, p, len);
        c->msgs[i].text[len] = 0;
        c->msgs[i].role = role;
        c->msgs[i].len = len;
        p += len;
    }
    if (p != end)
        return refuse(d, HY_CKPT_MALFORMED, -EBADMSG, "MESSAGES has %td bytes after message %" PRIu32,
                      end - p, c->n_msgs);
    return 0;
}

static int dec_tokens(dec *d, const hy_arch *a, hy_ckpt *c)
{
    const uint8_t *p;
    uint64_t n;
    int rc;

    if ((rc = sec_next(d, HY_CKPT_SEC_TOKENS, 0, &p, &n)) < 0)
        return rc;
    if (n != (uint64_t)c->n_tokens * 4)
        return refuse(d, HY_CKPT_MALFORMED, -EBADMSG, "TOKENS is %" PRIu64 " bytes for %" PRId64 " tokens",
                      n, c->n_tokens);
    if (!(c->tokens = malloc(n ? n : 1)))
        return refuse(d, HY_CKPT_MALFORMED, -ENOMEM, "out of memory for %" PRId64 " tokens", c->n_tokens);
    memcpy(c->tokens, p, n);
    for (int64_t i = 0; i < c->n_tokens; i++)
        if (c->tokens[i] < 0 || c->tokens[i] >= a->vocab)
            return refuse(d, HY_CKPT_MALFORMED, -EBADMSG, "token %" PRId64 " = %" PRId32
                          " is outside the vocabulary [0, %d)", i, c->tokens[i], a->vocab);
    return 0;
}

/* A text field: at most HY_CKPT_MSG_MAX bytes, no NUL; NULL when empty ("unknown"). */
static int dec_text(dec *d, const uint8_t *p, uint64_t n, char **out, size_t *out_len, const char *what)
{
    *out = NULL;
    *out_len = 0;
    if (n == 0)
        return 0;
    if (n > HY_CKPT_MSG_MAX || memchr(p, 0, n))
        return refuse(d, HY_CKPT_MALFORMED, -EBADMSG, "%s: text of %" PRIu64 " bytes is too long or has a NUL",
                      what, n);
    if (!(*out = malloc(n + 1)))
        return refuse(d, HY_CKPT_MALFORMED, -ENOMEM, "out of memory for %s", what);
    memcpy(*out, p, n);
    (*out)[n] = 0;
    *out_len = n;
    return 0;
}

static int dec_state_text(dec *d, hy_ckpt *c)
{
    const uint8_t *p;
    uint64_t n;
    int rc;

    if ((rc = sec_next(d, HY_CKPT_SEC_TEXT, 0, &p, &n)) < 0)
        return rc;
    return dec_text(d, p, n, &c->text, &c->text_len, "TEXT");
}

/* STATE_HDR, RECURRENT x n_layers, KV x n_kv_layers -> c->image. */
static int dec_state(dec *d, const hy_arch *a, hy_ckpt *c)
{
    hy_state_image_hdr h;
    const uint8_t *p;
    uint64_t n;
    uint8_t *w;
    int rc;

    if ((rc = sec_next(d, HY_CKPT_SEC_STATE_HDR, 0, &p, &n)) < 0)
        return rc;
    if (n != sizeof(h))
        return refuse(d, HY_CKPT_MALFORMED, -EBADMSG, "STATE_HDR is %" PRIu64 " bytes, expected %zu", n, sizeof(h));
    memcpy(&h, p, sizeof(h));
    if ((rc = image_hdr_check(a, &h, c->n_tokens, "STATE_HDR", d->err)) < 0)
        return refuse(d, HY_CKPT_MALFORMED, rc, "%s", d->err ? d->err->msg : "state header");
    c->image_len = hy_state_image_bytes(a, h.n_pos, (hy_dtype)h.kv_dtype);
    if (c->image_len > d->len + sizeof(h))
        return refuse(d, HY_CKPT_MALFORMED, -EBADMSG, "state of %zu bytes cannot fit in the file", c->image_len);
    if (!(c->image = malloc(c->image_len)))
        return refuse(d, HY_CKPT_MALFORMED, -ENOMEM, "out of memory for a %zu-byte state", c->image_len);
    memcpy(c->image, &h, sizeof(h));
    w = c->image + sizeof(h);
    for (int L = 0; L < a->n_layers; L++) {
        if ((rc = sec_next(d, HY_CKPT_SEC_RECURRENT, (uint32_t)L, &p, &n)) < 0)
            return rc;
        if (n != recur_bytes(a))
            return refuse(d, HY_CKPT_MALFORMED, -EBADMSG, "RECURRENT %d is %" PRIu64 " bytes, expected %zu",
                          L, n, recur_bytes(a));
        memcpy(w, p, n);
        w += n;
    }
    for (int L = 0; L < a->n_layers; L++) {
        if (a->kv_src[L] != L)
            continue;
        if ((rc = sec_next(d, HY_CKPT_SEC_KV, (uint32_t)L, &p, &n)) < 0)
            return rc;
        if ((uint64_t)(c->image + c->image_len - w) < n)
            return refuse(d, HY_CKPT_MALFORMED, -EBADMSG, "KV %d is %" PRIu64 " bytes, larger than the state"
                          " its header describes", L, n);
        memcpy(w, p, n);
        w += n;
    }
    if (w != c->image + c->image_len)
        return refuse(d, HY_CKPT_MALFORMED, -EBADMSG, "K/V sections hold %td bytes less than the state needs",
                      c->image + c->image_len - w);
    img_view v;
    if ((rc = image_index(a, c->image, c->image_len, c->n_tokens, &v, "session state", d->err)) < 0)
        return refuse(d, HY_CKPT_MALFORMED, rc, "%s", d->err ? d->err->msg : "session state");
    return 0;
}

static int dec_logits(dec *d, const hy_arch *a, hy_ckpt *c)
{
    const uint8_t *p;
    uint64_t n;
    int rc;

    if (c->n_tokens == 0)
        return 0;
    if ((rc = sec_next(d, HY_CKPT_SEC_LOGITS, 0, &p, &n)) < 0)
        return rc;
    if (n != (uint64_t)a->vocab * 4)
        return refuse(d, HY_CKPT_MALFORMED, -EBADMSG, "LOGITS is %" PRIu64 " bytes for vocab %d", n, a->vocab);
    if (!(c->logits = malloc(n)))
        return refuse(d, HY_CKPT_MALFORMED, -ENOMEM, "out of memory for logits");
    memcpy(c->logits, p, n);
    return 0;
}

/* Rebuild snapshot i's full image from its own entries and the session's K/V. */
static int dec_snapshot(dec *d, const hy_arch *a, hy_ckpt *c, const img_view *cur, uint32_t i)
{
    hy_ckpt_snap *s = &c->snaps[i];
    hy_state_image_hdr h;
    const uint8_t *p, *end;
    uint64_t n;
    uint8_t *w;
    img_view sv;
    char what[48];
    int rc;

    if ((rc = sec_next(d, HY_CKPT_SEC_SNAPSHOT, i, &p, &n)) < 0)
        return rc;
    end = p + n;
    snprintf(what, sizeof(what), "SNAPSHOT %" PRIu32, i);
    if (n < SNAP_FIXED + (uint64_t)a->vocab * 4 + sizeof(h) + (uint64_t)a->n_layers * recur_bytes(a))
        return refuse(d, HY_CKPT_MALFORMED, -EBADMSG, "%s is too short (%" PRIu64 " bytes)", what, n);
    s->turn = get_u32(p);
    s->n_msgs = get_u32(p + 4);
    s->n_tokens = (int64_t)get_u64(p + 8);
    if (s->n_tokens < 0 || s->n_tokens > c->n_tokens || s->n_msgs > c->n_msgs)
        return refuse(d, HY_CKPT_MALFORMED, -EBADMSG, "%s: %" PRId64 " tokens / %" PRIu32 " messages is not"
                      " a prefix of the session", what, s->n_tokens, s->n_msgs);
    if (i > 0 && (s->turn <= s[-1].turn || s->n_tokens < s[-1].n_tokens || s->n_msgs < s[-1].n_msgs))
        return refuse(d, HY_CKPT_MALFORMED, -EBADMSG, "%s (turn %" PRIu32 ") is not newer than the one before",
                      what, s->turn);
    uint32_t text_len = get_u32(p + 16);
    p += SNAP_FIXED;
    if ((uint64_t)(end - p) < (uint64_t)text_len + (uint64_t)a->vocab * 4 + sizeof(h) +
                              (uint64_t)a->n_layers * recur_bytes(a))
        return refuse(d, HY_CKPT_MALFORMED, -EBADMSG, "%s: text of %" PRIu32 " bytes runs past the section",
                      what, text_len);
    if ((rc = dec_text(d, p, text_len, &s->text, &s->text_len, what)) < 0)
        return rc;
    p += text_len;
    if (!(s->tokens = malloc(s->n_tokens ? (size_t)s->n_tokens * 4 : 4)))
        return refuse(d, HY_CKPT_MALFORMED, -ENOMEM, "out of memory for %s", what);
    memcpy(s->tokens, c->tokens, (size_t)s->n_tokens * 4);
    if (!(s->logits = malloc((size_t)a->vocab * 4)))
        return refuse(d, HY_CKPT_MALFORMED, -ENOMEM, "out of memory for %s", what);
    memcpy(s->logits, p, (size_t)a->vocab * 4);
    p += (size_t)a->vocab * 4;
    memcpy(&h, p, sizeof(h));
    p += sizeof(h);
    if ((rc = image_hdr_check(a, &h, s->n_tokens, what, d->err)) < 0)
        return refuse(d, HY_CKPT_MALFORMED, rc, "%s", d->err ? d->err->msg : what);
    s->image_len = hy_state_image_bytes(a, h.n_pos, (hy_dtype)h.kv_dtype);
    if (!(s->image = malloc(s->image_len)))
        return refuse(d, HY_CKPT_MALFORMED, -ENOMEM, "out of memory for %s", what);
    memcpy(s->image, &h, sizeof(h));
    w = s->image + sizeof(h);
    memcpy(w, p, (size_t)a->n_layers * recur_bytes(a));
    w += (size_t)a->n_layers * recur_bytes(a);
    p += (size_t)a->n_layers * recur_bytes(a);
    view_sizes(a, &h, &sv);
    for (int L = 0; L < a->n_layers; L++) {
        if (a->kv_src[L] != L)
            continue;
        if ((uint64_t)(end - p) < KV_OWN_FIXED)
            return refuse(d, HY_CKPT_MALFORMED, -EBADMSG, "%s ends inside layer %d", what, L);
        uint32_t kept = get_u32(p), own = get_u32(p + 4);
        int64_t s1 = h.n_pos - a->n_meta, s0 = s1 - kept;
        int64_t m1 = cur->h.n_pos - a->n_meta, m0 = m1 - cur->kept[L];
        p += KV_OWN_FIXED;
        if (kept != hy_state_image_kept(a, L, h.n_pos) || own > kept)
            return refuse(d, HY_CKPT_MALFORMED, -EBADMSG, "%s layer %d: n_kept %" PRIu32 " / n_own %" PRIu32
                          " (expected n_kept %" PRId64 ")", what, L, kept, own, hy_state_image_kept(a, L, h.n_pos));
        if (own < kept && (h.kv_dtype != cur->h.kv_dtype || s0 + own < m0 || s1 > m1))
            return refuse(d, HY_CKPT_MALFORMED, -EBADMSG, "%s layer %d shares K/V entries the session does"
                          " not hold", what, L);
        if ((uint64_t)(end - p) / (sv.ek + sv.ev) < own)
            return refuse(d, HY_CKPT_MALFORMED, -EBADMSG, "%s layer %d: %" PRIu32 " own entries run past"
                          " the section", what, L, own);
        const uint8_t *ck = cur->kv[L] + 4, *cv = ck + (size_t)cur->kept[L] * cur->ek;
        size_t shared = kept - own, ce = (size_t)(s0 + own - m0);
        put_u32(w, kept);
        w += 4;
        memcpy(w, p, (size_t)own * sv.ek);                                   /* K own */
        memcpy(w + (size_t)own * sv.ek, ck + ce * sv.ek, shared * sv.ek);    /* K shared */
        w += (size_t)kept * sv.ek;
        memcpy(w, p + (size_t)own * sv.ek, (size_t)own * sv.ev);             /* V own */
        memcpy(w + (size_t)own * sv.ev, cv + ce * sv.ev, shared * sv.ev);    /* V shared */
        w += (size_t)kept * sv.ev;
        p += (size_t)own * (sv.ek + sv.ev);
    }
    if (p != end || w != s->image + s->image_len)
        return refuse(d, HY_CKPT_MALFORMED, -EBADMSG, "%s has %td stray bytes", what, end - p);
    if ((rc = image_index(a, s->image, s->image_len, s->n_tokens, &sv, what, d->err)) < 0)
        return refuse(d, HY_CKPT_MALFORMED, rc, "%s", d->err ? d->err->msg : what);
    return 0;
}

static int dec_body(dec *d, const hy_arch *a, const hy_ckpt_hdr *h, hy_ckpt *c)
{
    hy_ckpt_info in;
    img_view cur;
    const uint8_t *p;
    uint64_t n;
    int rc;

    memcpy(c->fingerprint, h->fingerprint, HY_FINGERPRINT_LEN);
    if ((rc = dec_session(d, &in, &c->snap_keep)) < 0)
        return rc;
    memcpy(c->id, in.id, sizeof(c->id));
    c->owner_uid = in.owner_uid;
    c->created_ns = in.created_ns;
    c->updated_ns = in.updated_ns;
    c->n_msgs = in.n_msgs;
    c->n_tokens = in.n_tokens;
    if ((rc = dec_sampling(d, c)) < 0 || (rc = dec_messages(d, c)) < 0 ||
        (rc = dec_tokens(d, a, c)) < 0 || (rc = dec_state_text(d, c)) < 0 || (rc = dec_state(d, a, c)) < 0 ||
        (rc = dec_logits(d, a, c)) < 0)
        return rc;
    if (image_index(a, c->image, c->image_len, c->n_tokens, &cur, "session state", NULL) < 0)
        return refuse(d, HY_CKPT_MALFORMED, -EBADMSG, "session state");
    if (in.n_snaps && !(c->snaps = calloc(in.n_snaps, sizeof(*c->snaps))))
        return refuse(d, HY_CKPT_MALFORMED, -ENOMEM, "out of memory for snapshots");
    for (uint32_t i = 0; i < in.n_snaps; i++) {
        c->n_snaps = i + 1;          /* so hy_ckpt_clear frees what was filled */
        if ((rc = dec_snapshot(d, a, c, &cur, i)) < 0)
            return rc;
    }
    if ((rc = sec_next(d, HY_CKPT_SEC_END, 0, &p, &n)) < 0)
        return rc;
    if (n != 0 || d->off != d->len || d->n_read != h->n_sections)
        return refuse(d, HY_CKPT_MALFORMED, -EBADMSG, "END after %" PRIu32 " sections (header says %" PRIu32
                      "), %" PRIu64 " bytes left", d->n_read, h->n_sections, d->len - d->off);
    return 0;
}

int hy_ckpt_decode(const void *buf, size_t len, const hy_arch *a, const uint8_t *fp,
                   hy_ckpt *out, hy_ckpt_reason *why, hy_err *err)
{
    dec d = { .buf = buf, .len = len, .flen = len, .err = err };
    hy_ckpt_hdr h;
    hy_ckpt c;
    int rc;

    memset(&c, 0, sizeof(c));
    if ((rc = dec_header(&d, a, fp, &h)) == 0)
        rc = dec_body(&d, a, &h, &c);
    if (why)
        *why = rc == 0 ? HY_CKPT_OK : d.why;
    if (rc < 0) {
        hy_ckpt_clear(&c);
        return rc;
    }
    *out = c;
    return 0;
}

int hy_ckpt_peek(const void *buf, size_t len, uint64_t file_len, hy_ckpt_info *info, hy_ckpt_reason *why,
                 hy_err *err)
{
    dec d = { .buf = buf, .len = len, .flen = file_len, .err = err };
    hy_ckpt_hdr h;
    uint32_t keep;
    int rc;

    if (len > file_len)
        d.len = file_len;
    if ((rc = dec_header(&d, NULL, NULL, &h)) == 0)
        rc = dec_session(&d, info, &keep);
    if (rc == 0) {
        info->file_size = h.file_size;
        memcpy(info->fingerprint, h.fingerprint, HY_FINGERPRINT_LEN);
    }
    if (why)
        *why = rc == 0 ? HY_CKPT_OK : d.why;
    return rc;
}

/* Everything but the model state: header, SESSION, SAMPLING, MESSAGES. */
static int dec_meta(dec *d, const hy_arch *a, const uint8_t *fp, hy_ckpt *c)
{
    hy_ckpt_hdr h;
    hy_ckpt_info in;
    int rc;

    if ((rc = dec_header(d, a, fp, &h)) < 0 || (rc = dec_session(d, &in, &c->snap_keep)) < 0)
        return rc;
    memcpy(c->fingerprint, h.fingerprint, HY_FINGERPRINT_LEN);
    memcpy(c->id, in.id, sizeof(c->id));
    c->owner_uid = in.owner_uid;
    c->created_ns = in.created_ns;
    c->updated_ns = in.updated_ns;
    c->n_msgs = in.n_msgs;
    c->n_tokens = in.n_tokens;
    if ((rc = dec_sampling(d, c)) < 0 || (rc = dec_messages(d, c)) < 0)
        return rc;
    return 0;
}

/* Read up to max bytes (0: all) of path into a malloc'ed buffer. */
static int file_read(const char *path, size_t max, uint8_t **out, size_t *out_len, uint64_t *file_len,
                     hy_err *err)
{
    struct stat st;
    uint8_t *buf;
    size_t want, got = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);

    if (fd < 0)
        return hy_err_set(err, -errno, "%s: %s", path, strerror(errno));
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
        int e = errno ? errno : EINVAL;
        close(fd);
        return hy_err_set(err, -e, "%s: not a regular file", path);
    }
    *file_len = (uint64_t)st.st_size;
    want = (max && (uint64_t)st.st_size > max) ? max : (size_t)st.st_size;
    if (!(buf = malloc(want ? want : 1))) {
        close(fd);
        return hy_err_set(err, -ENOMEM, "%s: out of memory for %zu bytes", path, want);
    }
    while (got < want) {
        ssize_t n = read(fd, buf + got, want - got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            int e = n < 0 ? errno : EIO;
            free(buf);
            close(fd);
            return hy_err_set(err, -e, "%s: read failed at byte %zu: %s", path, got,
                              n < 0 ? strerror(e) : "file shrank");
        }
        got += (size_t)n;
    }
    close(fd);
    *out = buf;
    *out_len = got;
    return 0;
}

int hy_ckpt_load_file(const char *path, const hy_arch *a, const uint8_t *fp,
                      hy_ckpt *out, hy_ckpt_reason *why, hy_err *err)
{
    uint8_t *buf;
    size_t len;
    uint64_t flen;
    int rc = file_read(path, 0, &buf, &len, &flen, err);

    if (rc < 0) {
        if (why)
            *why = HY_CKPT_IO;
        return rc;
    }
    rc = hy_ckpt_decode(buf, len, a, fp, out, why, err);
    free(buf);
    if (rc < 0 && err) {
        char msg[HY_ERR_MSG_MAX];
        memcpy(msg, err->msg, sizeof(msg));
        hy_err_set(err, rc, "%s: %.400s", path, msg);
    }
    return rc;
}

int hy_ckpt_peek_file(const char *path, hy_ckpt_info *info, hy_ckpt_reason *why, hy_err *err)
{
    const size_t prefix = HY_CKPT_HDR_SIZE + HY_CKPT_SEC_HDR_SIZE + SESSION_FIXED + HY_CKPT_ID_MAX +
                          HY_CKPT_SEC_CRC_SIZE;
    uint8_t *buf;
    size_t len;
    uint64_t flen;
    int rc = file_read(path, prefix, &buf, &len, &flen, err);

    if (rc < 0) {
        if (why)
            *why = HY_CKPT_IO;
        return rc;
    }
    rc = hy_ckpt_peek(buf, len, flen, info, why, err);
    free(buf);
    return rc;
}

/* pread exactly n bytes at off. */
static int pread_full(int fd, void *buf, size_t n, uint64_t off)
{
    size_t got = 0;
    while (got < n) {
        ssize_t r = pread(fd, (uint8_t *)buf + got, n - got, (off_t)(off + got));
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return r < 0 ? -errno : -EIO;
        got += (size_t)r;
    }
    return 0;
}

int hy_ckpt_load_meta_file(const char *path, const hy_arch *a, const uint8_t *fp, hy_ckpt *out,
                           hy_ckpt_reason *why, hy_err *err)
{
    enum { META_SECTIONS = 3 };      /* SESSION, SAMPLING, MESSAGES */
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat sb;
    uint8_t *buf = NULL;
    uint64_t have = 0;
    hy_ckpt c;
    int rc = 0;

    memset(&c, 0, sizeof(c));
    if (why)
        *why = HY_CKPT_IO;
    if (fd < 0)
        return hy_err_set(err, -errno, "%s: %s", path, strerror(errno));
    if (fstat(fd, &sb) < 0 || !S_ISREG(sb.st_mode)) {
        close(fd);
        return hy_err_set(err, -EINVAL, "%s: not a regular file", path);
    }
    /* Read the header and the three sections' frames one after another; every
     * length is bounded by the file size before it is trusted for a read. */
    uint64_t want = (uint64_t)sb.st_size < HY_CKPT_HDR_SIZE ? (uint64_t)sb.st_size : HY_CKPT_HDR_SIZE;
    for (int i = 0; i <= META_SECTIONS && rc == 0; i++) {
        uint8_t *nb = realloc(buf, want ? want : 1);
        if (!nb) {
            rc = hy_err_set(err, -ENOMEM, "%s: out of memory", path);
            break;
        }
        buf = nb;
        if ((rc = pread_full(fd, buf + have, want - have, have)) < 0) {
            hy_err_set(err, rc, "%s: read failed", path);
            break;
        }
        have = want;
        if (i == META_SECTIONS)
            break;
        uint64_t next = have + HY_CKPT_SEC_HDR_SIZE;
        if (next > (uint64_t)sb.st_size)
            break;                   /* the decoder reports it */
        nb = realloc(buf, next);
        if (!nb || pread_full(fd, nb + have, HY_CKPT_SEC_HDR_SIZE, have) < 0) {
            buf = nb ? nb : buf;
            rc = hy_err_set(err, -EIO, "%s: read failed", path);
            break;
        }
        buf = nb;
        uint64_t plen = get_u64(buf + have + 8), room = (uint64_t)sb.st_size - next;
        want = next + (plen + HY_CKPT_SEC_CRC_SIZE <= room ? plen + HY_CKPT_SEC_CRC_SIZE : room);
        have = next;
    }
    close(fd);
    if (rc == 0) {
        dec d = { .buf = buf, .len = have, .flen = (uint64_t)sb.st_size, .err = err };
        rc = dec_meta(&d, a, fp, &c);
        if (why)
            *why = rc == 0 ? HY_CKPT_OK : d.why;
        if (rc < 0 && err) {
            char msg[HY_ERR_MSG_MAX];
            memcpy(msg, err->msg, sizeof(msg));
            hy_err_set(err, rc, "%s: %.400s", path, msg);
        }
    }
    free(buf);
    if (rc < 0) {
        hy_ckpt_clear(&c);
        return rc;
    }
    *out = c;
    return 0;
}
