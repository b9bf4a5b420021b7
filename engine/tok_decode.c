/* tok_decode.c: ids -> text as the decoder sequence does (Replace, ByteFallback, Fuse, Strip), whole or streaming. */
#include "engine/tok_internal.h"
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define REPLACEMENT_CHAR 0xFFFDu

static int hex_digit(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* The byte a "<0xNN>"-shaped token stands for, or -1 (a radix-16 parse of the two
 * characters, which also takes a '+' sign, as the reference's integer parse does). */
static int piece_byte(const char *s, size_t n)
{
    if (n != 6 || memcmp(s, "<0x", 3) != 0 || s[5] != '>')
        return -1;
    if (s[3] == '+')
        return hex_digit(s[4]);
    if (hex_digit(s[3]) < 0 || hex_digit(s[4]) < 0)
        return -1;
    return hex_digit(s[3]) * 16 + hex_digit(s[4]);
}

int tok_decoder_prepare(hy_tok *t, hy_err *err)
{
    t->dec_byte = malloc(sizeof(*t->dec_byte) * (size_t)t->n_vocab);
    t->is_special = calloc((size_t)t->n_vocab, 1);
    if (!t->dec_byte || !t->is_special)
        return hy_err_set(err, -ENOMEM, "tokenizer.json: out of memory for the decoder tables");
    for (int32_t id = 0; id < t->n_vocab; id++) {
        t->dec_byte[id] = (int16_t)(t->dec_byte_fallback ? piece_byte(t->dec_text[id], t->dec_len[id]) : -1);
        t->is_special[id] = hy_tok_is_special(t, id);
    }
    return 0;
}

/* Ids the reference drops before decoding: unknown ids, holes, skipped specials. */
static bool dropped(const hy_tok *t, int32_t id, bool skip_special)
{
    if (id < 0 || id >= t->n_vocab || !hy_tok_piece(t, id))
        return true;
    return skip_special && t->is_special[id];
}

/* Removes up to *left leading strip characters from s (shifting it); updates *left. */
static size_t strip_leading(const hy_tok *t, char *s, size_t n, int *left)
{
    size_t cut = 0;

    while (*left > 0 && cut < n) {
        int len = tok_utf8_char((const uint8_t *)s + cut, n - cut);
        if (len <= 0 || tok_utf8_decode((const uint8_t *)s + cut, len) != t->strip_char) {
            *left = 0;
            break;
        }
        cut += (size_t)len;
        (*left)--;
    }
    memmove(s, s + cut, n - cut);
    return n - cut;
}

/* A finished run of byte pieces: its text if it is valid UTF-8, else one U+FFFD per byte. */
static int put_byte_run(tok_buf *out, const uint8_t *run, size_t n)
{
    size_t i = 0;
    int rc = 0;

    while (i < n) {
        int len = tok_utf8_char(run + i, n - i);
        if (len <= 0)
            break;
        i += (size_t)len;
    }
    if (i == n)
        return tok_buf_put(out, run, n);
    for (size_t k = 0; rc == 0 && k < n; k++)
        rc = tok_buf_put_cp(out, REPLACEMENT_CHAR);
    return rc;
}

int hy_tok_decode(const hy_tok *t, const int32_t *ids, size_t n, bool skip_special,
                  char **out, size_t *out_len, hy_err *err)
{
    tok_buf text = {0}, run = {0};
    int rc = tok_buf_put(&text, "", 0), left = t->strip_start;

    for (size_t i = 0; rc == 0 && i < n; i++) {
        int32_t id = ids[i];
        if (dropped(t, id, skip_special))
            continue;
        if (t->dec_byte[id] >= 0) {
            uint8_t b = (uint8_t)t->dec_byte[id];
            rc = tok_buf_put(&run, &b, 1);
            continue;
        }
        if (run.len) {
            rc = put_byte_run(&text, (const uint8_t *)run.p, run.len);
            run.len = 0;
        }
        if (rc == 0)
            rc = tok_buf_put(&text, t->dec_text[id], t->dec_len[id]);
    }
    if (rc == 0 && run.len)
        rc = put_byte_run(&text, (const uint8_t *)run.p, run.len);
    free(run.p);
    if (rc < 0) {
        free(text.p);
        *out = NULL;
        *out_len = 0;
        return hy_err_set(err, rc, "hy_tok_decode: out of memory decoding %zu ids", n);
    }
    text.len = strip_leading(t, text.p, text.len, &left);
    text.p[text.len] = '\0';
    *out = text.p;
    *out_len = text.len;
    return 0;
}

/* ---- streaming ---- */

struct hy_detok {
    const hy_tok *t;
    bool skip_special;
    uint8_t held[4];        /* bytes of an incomplete character from byte pieces */
    int n_held;
    int strip_left;         /* leading strip characters still to remove */
};

hy_detok *hy_detok_new(const hy_tok *t, bool skip_special)
{
    hy_detok *d = calloc(1, sizeof(*d));

    if (d) {
        d->t = t;
        d->skip_special = skip_special;
        d->strip_left = t->strip_start;
    }
    return d;
}

void hy_detok_free(hy_detok *d)
{
    free(d);
}

/* Emits every complete character in held; invalid bytes become U+FFFD. */
static int drain_held(hy_detok *d, tok_buf *b, bool final)
{
    int rc = 0;

    while (rc == 0 && d->n_held > 0) {
        int len = tok_utf8_char(d->held, (size_t)d->n_held);
        if (len == 0 && !final)
            break;      /* a valid prefix: wait for the rest */
        if (len > 0)
            rc = tok_buf_put(b, d->held, (size_t)len);
        else {
            rc = tok_buf_put_cp(b, REPLACEMENT_CHAR);
            len = 1;
        }
        d->n_held -= len;
        memmove(d->held, d->held + len, (size_t)d->n_held);
    }
    return rc;
}

/* Appends b (after the leading strip) to the caller's *out. */
static int hand_out(hy_detok *d, tok_buf *b, char **out, size_t *out_len)
{
    size_t n = b->len ? strip_leading(d->t, b->p, b->len, &d->strip_left) : 0;
    char *p = realloc(*out, *out_len + n + 1);

    if (!p) {
        free(b->p);
        return -ENOMEM;
    }
    if (n)
        memcpy(p + *out_len, b->p, n);
    *out_len += n;
    p[*out_len] = '\0';
    *out = p;
    free(b->p);
    return 0;
}

int hy_detok_push(hy_detok *d, int32_t id, char **out, size_t *out_len)
{
    const hy_tok *t = d->t;
    tok_buf b = {0};
    int rc = 0;

    if (!dropped(t, id, d->skip_special)) {
        if (t->dec_byte[id] >= 0) {
            d->held[d->n_held++] = (uint8_t)t->dec_byte[id];
            rc = drain_held(d, &b, false);
        } else {
            rc = drain_held(d, &b, true);
            if (rc == 0)
                rc = tok_buf_put(&b, t->dec_text[id], t->dec_len[id]);
        }
    }
    if (rc < 0) {
        free(b.p);
        return rc;
    }
    return hand_out(d, &b, out, out_len);
}

int hy_detok_flush(hy_detok *d, char **out, size_t *out_len)
{
    tok_buf b = {0};
    int rc = drain_held(d, &b, true);

    if (rc < 0) {
        free(b.p);
        return rc;
    }
    return hand_out(d, &b, out, out_len);
}
