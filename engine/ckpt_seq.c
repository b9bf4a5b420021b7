/* ckpt_seq.c: between a live conversation (hy_seq) and its checkpoint image; snapshot bookkeeping. */
#include "engine/ckpt.h"
#include "engine/model_internal.h"
#include "engine/sha256.h"
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#define ID_SAMPLE 64          /* bytes hashed at the start, middle and end of each tensor */

static void id_sample(hy_sha256 *c, const hy_tensor *t)
{
    uint64_t n = 1;
    const uint8_t *p = t->data;

    if (!p)
        return;
    for (int d = 0; d < t->ndim; d++)
        n *= (uint64_t)t->shape[d];
    n *= hy_dtype_size(t->dt);
    if (n <= 3 * ID_SAMPLE) {
        hy_sha256_update(c, p, (size_t)n);
        return;
    }
    hy_sha256_update(c, p, ID_SAMPLE);
    hy_sha256_update(c, p + n / 2, ID_SAMPLE);
    hy_sha256_update(c, p + n - ID_SAMPLE, ID_SAMPLE);
}

void hy_ckpt_model_id(const hy_model *m, uint8_t out[HY_FINGERPRINT_LEN])
{
    const size_t per_layer = sizeof(hy_layer_weights) / sizeof(hy_tensor);
    hy_sha256 c;

    hy_sha256_init(&c);
    hy_sha256_update(&c, hy_model_fingerprint(m), HY_FINGERPRINT_LEN);
    id_sample(&c, &m->w.embed);
    id_sample(&c, &m->w.memory_tokens);
    id_sample(&c, &m->w.final_norm);
    for (int L = 0; L < m->arch.n_layers; L++) {
        /* hy_layer_weights is a run of hy_tensor fields. */
        const hy_tensor *t = (const hy_tensor *)&m->w.layers[L];
        for (size_t i = 0; i < per_layer; i++)
            id_sample(&c, &t[i]);
    }
    hy_sha256_final(&c, out);
}

int hy_ckpt_capture(hy_model *m, const hy_seq *s, hy_ckpt *c, hy_err *err)
{
    const hy_arch *a = hy_model_arch(m);
    size_t n = hy_seq_state_size(m, s);
    int64_t nt = hy_seq_len(s);
    const float *lg = hy_seq_logits(s);
    uint8_t *img = malloc(n ? n : 1);
    int32_t *tok = malloc(nt > 0 ? (size_t)nt * 4 : 4);
    float *logits = (nt > 0 && lg) ? malloc((size_t)a->vocab * 4) : NULL;
    int rc;

    if (!img || !tok || (nt > 0 && lg && !logits)) {
        rc = hy_err_set(err, -ENOMEM, "checkpoint: out of memory for a %zu-byte state", n);
        goto fail;
    }
    if ((rc = hy_seq_state_export(m, s, img, n, err)) < 0)
        goto fail;
    if (nt > 0)                      /* an empty state has no token array (NULL) */
        memcpy(tok, hy_seq_tokens(s), (size_t)nt * 4);
    if (logits)
        memcpy(logits, lg, (size_t)a->vocab * 4);
    free(c->image);
    free(c->tokens);
    free(c->logits);
    c->image = img;
    c->image_len = n;
    c->tokens = tok;
    c->n_tokens = nt;
    c->logits = logits;
    hy_ckpt_model_id(m, c->fingerprint);
    return 0;
fail:
    free(img);
    free(tok);
    free(logits);
    return rc;
}

int hy_ckpt_restore(hy_model *m, hy_seq *s, const hy_ckpt *c, hy_err *err)
{
    int rc = hy_ckpt_image_check(hy_model_arch(m), c->image, c->image_len, c->n_tokens, err);
    if (rc < 0)
        return rc;
    return hy_seq_import(m, s, c->image, c->image_len, c->tokens, c->n_tokens, c->logits, err);
}

int hy_ckpt_snap_take(hy_model *m, const hy_seq *s, uint32_t turn, uint32_t n_msgs,
                      hy_ckpt_snap *out, hy_err *err)
{
    const hy_arch *a = hy_model_arch(m);
    const float *lg = hy_seq_logits(s);
    hy_ckpt_snap sn = { .turn = turn, .n_msgs = n_msgs, .n_tokens = hy_seq_len(s) };
    int rc;

    if (!lg || sn.n_tokens <= 0)
        return hy_err_set(err, -EINVAL, "snapshot: the conversation has no tokens yet (turn %" PRIu32 ")", turn);
    sn.image_len = hy_seq_state_size(m, s);
    sn.image = malloc(sn.image_len);
    sn.logits = malloc((size_t)a->vocab * 4);
    sn.tokens = malloc((size_t)sn.n_tokens * 4);
    if (!sn.image || !sn.logits || !sn.tokens) {
        hy_ckpt_snap_clear(&sn);
        return hy_err_set(err, -ENOMEM, "snapshot: out of memory for a %zu-byte state", sn.image_len);
    }
    if ((rc = hy_seq_state_export(m, s, sn.image, sn.image_len, err)) < 0) {
        hy_ckpt_snap_clear(&sn);
        return rc;
    }
    memcpy(sn.logits, lg, (size_t)a->vocab * 4);
    memcpy(sn.tokens, hy_seq_tokens(s), (size_t)sn.n_tokens * 4);
    *out = sn;
    return 0;
}

int hy_ckpt_snap_restore(hy_model *m, hy_seq *s, const hy_ckpt_snap *snap, const int32_t *tokens,
                         hy_err *err)
{
    int rc = hy_ckpt_image_check(hy_model_arch(m), snap->image, snap->image_len, snap->n_tokens, err);
    if (rc < 0)
        return rc;
    if (!tokens)
        tokens = snap->tokens;
    if (!tokens && snap->n_tokens > 0)
        return hy_err_set(err, -EINVAL, "snapshot of turn %" PRIu32 ": its tokens are unknown", snap->turn);
    return hy_seq_import(m, s, snap->image, snap->image_len, tokens, snap->n_tokens, snap->logits, err);
}

int hy_ckpt_snap_push(hy_ckpt *c, hy_ckpt_snap *snap, hy_err *err)
{
    uint32_t keep = c->snap_keep > HY_CKPT_SNAPS_MAX ? HY_CKPT_SNAPS_MAX : c->snap_keep;

    if (keep == 0) {
        hy_ckpt_snap_clear(snap);
        return 0;
    }
    /* Snapshots of this or later turns belong to a rewound branch, and any
     * whose tokens are not a prefix of this one's to a rebuilt state. */
    hy_ckpt_snaps_prune(c, snap->tokens, snap->tokens ? snap->n_tokens : INT64_MAX,
                        snap->turn ? snap->turn - 1 : 0);
    if (snap->turn == 0)
        while (c->n_snaps > 0)
            hy_ckpt_snap_clear(&c->snaps[--c->n_snaps]);
    if (c->n_snaps == keep) {
        hy_ckpt_snap_clear(&c->snaps[0]);
        memmove(c->snaps, c->snaps + 1, (size_t)(keep - 1) * sizeof(*c->snaps));
        c->n_snaps--;
    }
    hy_ckpt_snap *ns = realloc(c->snaps, (size_t)(c->n_snaps + 1) * sizeof(*ns));
    if (!ns)
        return hy_err_set(err, -ENOMEM, "snapshot: out of memory");
    c->snaps = ns;
    c->snaps[c->n_snaps++] = *snap;
    memset(snap, 0, sizeof(*snap));
    return 0;
}

void hy_ckpt_snaps_prune(hy_ckpt *c, const int32_t *tokens, int64_t n, uint32_t max_turn)
{
    uint32_t kept = 0;

    for (uint32_t i = 0; i < c->n_snaps; i++) {
        hy_ckpt_snap *sn = &c->snaps[i];
        bool ok = sn->turn <= max_turn && sn->n_tokens <= n;
        if (ok && tokens && sn->tokens && sn->n_tokens > 0)
            ok = memcmp(sn->tokens, tokens, (size_t)sn->n_tokens * 4) == 0;
        if (ok)
            c->snaps[kept++] = *sn;
        else
            hy_ckpt_snap_clear(sn);
    }
    c->n_snaps = kept;
}
