/* textio.c: hymba-run's text features: tokenize/detokenize, streaming completion and the chat REPL. */
#include "tools/textio.h"
#include "engine/chat.h"
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#define DEFAULT_MAX_NEW_TOKENS 256      /* the reference chat.py's max_new_tokens */
#define REPL_LINE_MAX (1 << 16)

void hy_textio_opts_default(hy_textio_opts *o)
{
    memset(o, 0, sizeof(*o));
    o->max_new_tokens = DEFAULT_MAX_NEW_TOKENS;
    hy_sampling_default(&o->sampling);
    o->sampling.temperature = 0.0f;     /* greedy, as the reference generate() */
}

int hy_textio_tokenize(const hy_tok *t, const char *text, bool bos, FILE *out, hy_err *err)
{
    int32_t *ids;
    size_t n;
    int rc = hy_tok_encode(t, text, strlen(text), bos, &ids, &n, err);

    if (rc < 0)
        return rc;
    for (size_t i = 0; i < n; i++)
        fprintf(out, i ? ",%d" : "%d", ids[i]);
    fputc('\n', out);
    free(ids);
    return ferror(out) ? hy_err_set(err, -EIO, "tokenize: write failed") : 0;
}

int hy_textio_parse_ids(const char *csv, int32_t **ids, size_t *n, hy_err *err)
{
    size_t cap = 16;
    const char *p = csv;

    *n = 0;
    *ids = malloc(sizeof(**ids) * cap);
    if (!*ids)
        return hy_err_set(err, -ENOMEM, "detokenize: out of memory");
    while (*p) {
        char *end;
        while (*p == ' ' || *p == '\t' || *p == '\n')
            p++;
        if (!*p)
            break;
        errno = 0;
        long v = strtol(p, &end, 10);
        if (end == p || errno || v < INT32_MIN || v > INT32_MAX) {
            free(*ids);
            *ids = NULL;
            return hy_err_set(err, -EINVAL, "detokenize: \"%.20s\" is not an id (want e.g. 1,2,3)", p);
        }
        if (*n == cap) {
            int32_t *q = realloc(*ids, sizeof(**ids) * (cap *= 2));
            if (!q) {
                free(*ids);
                *ids = NULL;
                return hy_err_set(err, -ENOMEM, "detokenize: out of memory");
            }
            *ids = q;
        }
        (*ids)[(*n)++] = (int32_t)v;
        p = end;
        while (*p == ' ' || *p == '\t' || *p == '\n')
            p++;
        if (*p == ',')
            p++;
        else if (*p) {
            free(*ids);
            *ids = NULL;
            return hy_err_set(err, -EINVAL, "detokenize: unexpected \"%.20s\" (want ids separated by commas)", p);
        }
    }
    return 0;
}

int hy_textio_detokenize(const hy_tok *t, const char *csv, bool skip_special, FILE *out, hy_err *err)
{
    int32_t *ids;
    size_t n, len;
    char *text;
    int rc = hy_textio_parse_ids(csv, &ids, &n, err);

    if (rc < 0)
        return rc;
    for (size_t i = 0; i < n; i++)
        if (!hy_tok_piece(t, ids[i])) {
            rc = hy_err_set(err, -EINVAL, "detokenize: id %d is not in the vocabulary (size %d)",
                            ids[i], hy_tok_vocab_size(t));
            free(ids);
            return rc;
        }
    rc = hy_tok_decode(t, ids, n, skip_special, &text, &len, err);
    free(ids);
    if (rc < 0)
        return rc;
    fwrite(text, 1, len, out);
    fputc('\n', out);
    free(text);
    return ferror(out) ? hy_err_set(err, -EIO, "detokenize: write failed") : 0;
}

/* ---- generation ---- */

/* Streams answer text to out; in chat mode trailing newlines (the turn's own
 * "\n" before the next marker) are held back and dropped at the end. */
typedef struct text_sink {
    FILE *out;
    bool chat;
    size_t held_nl;         /* newlines not yet printed */
    char *all;              /* everything shown, for the conversation history */
    size_t all_len;
} text_sink;

static int sink_put(text_sink *k, const char *s, size_t n)
{
    char *p = realloc(k->all, k->all_len + n + 1);

    if (!p)
        return -ENOMEM;
    memcpy(p + k->all_len, s, n);
    k->all_len += n;
    p[k->all_len] = '\0';
    k->all = p;
    size_t end = n;
    while (k->chat && end > 0 && s[end - 1] == '\n')
        end--;
    if (end > 0) {
        for (; k->held_nl; k->held_nl--)
            fputc('\n', k->out);
        fwrite(s, 1, end, k->out);
        fflush(k->out);
    }
    k->held_nl += n - end;
    return 0;
}

static int generate(hy_model *m, hy_seq *s, const hy_tok *t, const hy_textio_opts *o, text_sink *k,
                    hy_err *err)
{
    int vocab = hy_model_config(m)->vocab_size, rc = 0;
    hy_detok *d = hy_detok_new(t, true);
    hy_chat_stop stop;
    hy_rng rng;
    char *piece = NULL, *shown = NULL;
    size_t piece_len = 0, shown_len = 0;

    if (!d)
        return hy_err_set(err, -ENOMEM, "generate: out of memory");
    hy_rng_seed(&rng, o->seed);
    hy_chat_stop_init(&stop);
    for (int i = 0; rc == 0 && i < o->max_new_tokens && !stop.stopped; i++) {
        const float *logits = hy_seq_logits(s);
        if (!logits) {
            rc = hy_err_set(err, -EINVAL, "generate: the conversation has no logits (empty prompt?)");
            break;
        }
        int32_t id = hy_sample(&o->sampling, &rng, logits, vocab, hy_seq_tokens(s), hy_seq_len(s));
        if (hy_chat_stop_id(t, id))
            break;
        piece_len = shown_len = 0;
        rc = hy_detok_push(d, id, &piece, &piece_len);
        if (rc == 0 && k->chat)
            rc = hy_chat_stop_feed(&stop, piece, piece_len, &shown, &shown_len);
        if (rc == 0)
            rc = k->chat ? sink_put(k, shown, shown_len) : sink_put(k, piece, piece_len);
        if (rc == 0 && !stop.stopped)
            rc = hy_seq_decode_batch(m, &s, &id, 1, err);
    }
    piece_len = shown_len = 0;
    if (rc == 0 && !stop.stopped)
        rc = hy_detok_flush(d, &piece, &piece_len);
    if (rc == 0 && k->chat) {
        rc = hy_chat_stop_feed(&stop, piece ? piece : "", piece_len, &shown, &shown_len);
        if (rc == 0)
            rc = hy_chat_stop_flush(&stop, &shown, &shown_len);
    }
    if (rc == 0)
        rc = k->chat ? sink_put(k, shown ? shown : "", shown_len) : sink_put(k, piece ? piece : "", piece_len);
    fputc('\n', k->out);
    fflush(k->out);
    free(piece);
    free(shown);
    hy_detok_free(d);
    if (rc < 0 && err && err->code == 0)
        hy_err_set(err, rc, "generate: %s", strerror(-rc));
    return rc;
}

/* Brings the state to exactly ids: prefills only the new tail when the state
 * already holds a prefix of them, else starts over. */
static int sync_prompt(hy_model *m, hy_seq *s, const int32_t *ids, size_t n, hy_err *err)
{
    size_t have = (size_t)hy_seq_len(s);
    const int32_t *old = hy_seq_tokens(s);

    if (n > INT_MAX)
        return hy_err_set(err, -E2BIG, "prompt of %zu tokens is too long", n);
    if (have >= n || (have && memcmp(old, ids, have * sizeof(*ids)) != 0)) {
        hy_seq_reset(m, s);
        have = 0;
    }
    return hy_seq_prefill(m, s, ids + have, (int)(n - have), NULL, err);
}

int hy_textio_complete(hy_model *m, const hy_tok *t, const char *prompt, const hy_textio_opts *o,
                       FILE *out, hy_err *err)
{
    int32_t *ids;
    size_t n;
    hy_seq *s;
    text_sink k = { .out = out };
    int rc = hy_tok_encode(t, prompt, strlen(prompt), hy_tok_add_bos(t), &ids, &n, err);

    if (rc < 0)
        return rc;
    if (n == 0) {
        free(ids);
        return hy_err_set(err, -EINVAL, "-p: the prompt encodes to no tokens (and add_bos_token is false)");
    }
    if ((rc = hy_seq_new(m, &s, err)) < 0) {
        free(ids);
        return rc;
    }
    if (o->echo_prompt) {
        fputs(prompt, out);
        fflush(out);
    }
    rc = hy_seq_prefill(m, s, ids, (int)n, NULL, err);
    if (rc == 0)
        rc = generate(m, s, t, o, &k, err);
    free(k.all);
    free(ids);
    hy_seq_free(s);
    return rc;
}

/* ---- chat ---- */

typedef struct chat_log {
    hy_chat_msg *msgs;      /* [n]; contents owned */
    size_t n, cap;
} chat_log;

static int log_add(chat_log *c, hy_role role, const char *text)
{
    if (c->n == c->cap) {
        size_t cap = c->cap ? 2 * c->cap : 8;
        hy_chat_msg *p = realloc(c->msgs, sizeof(*p) * cap);
        if (!p)
            return -ENOMEM;
        c->msgs = p;
        c->cap = cap;
    }
    char *copy = strdup(text ? text : "");
    if (!copy)
        return -ENOMEM;
    c->msgs[c->n++] = (hy_chat_msg){ .role = role, .content = copy };
    return 0;
}

static void log_clear(chat_log *c, size_t keep)
{
    while (c->n > keep)
        free((char *)c->msgs[--c->n].content);
}

static int chat_turn(hy_model *m, hy_seq *s, const hy_tok *t, chat_log *c, const char *message,
                     const hy_textio_opts *o, FILE *out, hy_err *err)
{
    int32_t *ids;
    size_t n;
    text_sink k = { .out = out, .chat = true };
    int rc = log_add(c, HY_ROLE_USER, message);

    if (rc < 0)
        return hy_err_set(err, rc, "chat: out of memory");
    if ((rc = hy_chat_encode(t, c->msgs, c->n, NULL, true, &ids, &n, err)) < 0)
        return rc;
    rc = sync_prompt(m, s, ids, n, err);
    free(ids);
    if (rc == 0)
        rc = generate(m, s, t, o, &k, err);
    if (rc == 0 && (rc = log_add(c, HY_ROLE_ASSISTANT, k.all)) < 0)
        hy_err_set(err, rc, "chat: out of memory");
    free(k.all);
    return rc;
}

int hy_textio_chat(hy_model *m, const hy_tok *t, const char *message, const hy_textio_opts *o,
                   FILE *in, FILE *out, hy_err *err)
{
    chat_log c = {0};
    hy_seq *s;
    size_t base;
    int rc = hy_seq_new(m, &s, err);
    char *line = NULL;

    if (rc < 0)
        return rc;
    if (o->system && (rc = log_add(&c, HY_ROLE_SYSTEM, o->system)) < 0)
        hy_err_set(err, rc, "chat: out of memory");
    base = c.n;
    if (rc == 0 && message)
        rc = chat_turn(m, s, t, &c, message, o, out, err);
    else if (rc == 0) {
        line = malloc(REPL_LINE_MAX);
        if (!line)
            rc = hy_err_set(err, -ENOMEM, "chat: out of memory");
        for (;;) {
            if (rc < 0)
                break;
            fputs("> ", out);
            fflush(out);
            if (!fgets(line, REPL_LINE_MAX, in))
                break;
            line[strcspn(line, "\n")] = '\0';
            if (strcmp(line, "/exit") == 0)
                break;
            if (strcmp(line, "/reset") == 0) {
                log_clear(&c, base);
                hy_seq_reset(m, s);
                continue;
            }
            if (line[0])
                rc = chat_turn(m, s, t, &c, line, o, out, err);
        }
        if (rc == 0)
            fputc('\n', out);
    }
    free(line);
    log_clear(&c, 0);
    free(c.msgs);
    hy_seq_free(s);
    return rc;
}
