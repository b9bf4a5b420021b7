/* chat.c: renders the Hymba-1.5B-Instruct chat template in C, and detects the stop markers in streamed text.
 *
 * The template (tokenizer_config.json chat_template), step by step:
 *   "<extra_id_0>System"
 *   for each system message: "\n" + content.strip(), then "\n" if tools or contexts
 *   for each tool: "\n<tool> " + tool|tojson + " </tool>"
 *   if contexts: "\n" if tools, then for each: "\n<context> " + context.strip() + " </context>"
 *   "\n\n"
 *   for each message: "<extra_id_1>User\n" / "<extra_id_1>Assistant\n" / "<extra_id_1>Tool\n"
 *                      + content.strip() + "\n"   (system messages print nothing here)
 *   if add_generation_prompt: "<extra_id_1>Assistant\n"
 * strip() is Python's str.strip(); tojson is transformers' json.dumps(ensure_ascii=False). */
#include "engine/chat.h"
#include "engine/tok_internal.h"
#include <errno.h>
#include <json-c/json.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- Python str.strip() over UTF-8 ---- */

/* Length of the whitespace character at s[0..n), 0 if it is not one. */
static size_t space_len_at(const char *s, size_t n)
{
    int len = tok_utf8_char((const uint8_t *)s, n);

    if (len <= 0 || !tok_is_space(tok_utf8_decode((const uint8_t *)s, len), true))
        return 0;
    return (size_t)len;
}

static int put_stripped(tok_buf *b, const char *s)
{
    size_t n = s ? strlen(s) : 0, start = 0, end = n, k;

    while (start < n && (k = space_len_at(s + start, n - start)) > 0)
        start += k;
    while (end > start) {
        size_t c = end - 1;
        while (c > start && ((uint8_t)s[c] & 0xC0) == 0x80 && end - c < 4)
            c--;
        if (space_len_at(s + c, end - c) != end - c)
            break;
        end = c;
    }
    return tok_buf_put(b, s + start, end - start);
}

/* ---- tojson: Python json.dumps(x, ensure_ascii=False) ---- */

static int json_put_string(tok_buf *b, const char *s, size_t n)
{
    int rc = tok_buf_put(b, "\"", 1);

    for (size_t i = 0; rc == 0 && i < n; i++) {
        uint8_t c = (uint8_t)s[i];
        char esc[8];
        switch (c) {
        case '"': rc = tok_buf_put(b, "\\\"", 2); break;
        case '\\': rc = tok_buf_put(b, "\\\\", 2); break;
        case '\n': rc = tok_buf_put(b, "\\n", 2); break;
        case '\r': rc = tok_buf_put(b, "\\r", 2); break;
        case '\t': rc = tok_buf_put(b, "\\t", 2); break;
        case '\b': rc = tok_buf_put(b, "\\b", 2); break;
        case '\f': rc = tok_buf_put(b, "\\f", 2); break;
        default:
            if (c < 0x20) {
                snprintf(esc, sizeof(esc), "\\u%04x", c);
                rc = tok_buf_put(b, esc, 6);
            } else
                rc = tok_buf_put(b, s + i, 1);
        }
    }
    return rc ? rc : tok_buf_put(b, "\"", 1);
}

/* Python float repr: the shortest digits that round-trip, positional for
 * exponents in [-4, 16), else d.ddde+XX. */
static int json_put_double(tok_buf *b, double v)
{
    char digits[40], out[64];
    int prec, exp10;

    if (isnan(v) || isinf(v))
        return tok_buf_put(b, isnan(v) ? "NaN" : v > 0 ? "Infinity" : "-Infinity",
                           isnan(v) ? 3 : v > 0 ? 8 : 9);
    for (prec = 1; prec < 17; prec++) {
        snprintf(digits, sizeof(digits), "%.*e", prec - 1, v);
        if (strtod(digits, NULL) == v)
            break;
    }
    snprintf(digits, sizeof(digits), "%.*e", prec - 1, v);
    char *e = strchr(digits, 'e');
    exp10 = atoi(e + 1);
    *e = '\0';
    /* mantissa digits without sign and point */
    char mant[32];
    size_t nm = 0;
    bool neg = digits[0] == '-';
    for (char *p = digits + neg; *p; p++)
        if (*p != '.')
            mant[nm++] = *p;
    mant[nm] = '\0';
    if (exp10 >= -4 && exp10 < 16) {
        if (exp10 >= 0) {
            size_t int_len = (size_t)exp10 + 1;
            if (nm <= int_len)
                snprintf(out, sizeof(out), "%s%s%.*s.0", neg ? "-" : "", mant,
                         (int)(int_len - nm), "0000000000000000");
            else
                snprintf(out, sizeof(out), "%s%.*s.%s", neg ? "-" : "", (int)int_len, mant, mant + int_len);
        } else
            snprintf(out, sizeof(out), "%s0.%.*s%s", neg ? "-" : "", -exp10 - 1, "0000", mant);
    } else {
        snprintf(out, sizeof(out), "%s%c%s%s%se%c%02d", neg ? "-" : "", mant[0], nm > 1 ? "." : "",
                 mant + 1, "", exp10 < 0 ? '-' : '+', exp10 < 0 ? -exp10 : exp10);
    }
    return tok_buf_put(b, out, strlen(out));
}

static int json_put(tok_buf *b, json_object *o, int depth)
{
    int rc = 0;
    char num[32];

    if (depth > 64)
        return -ELOOP;
    switch (json_object_get_type(o)) {
    case json_type_null:
        return tok_buf_put(b, "null", 4);
    case json_type_boolean:
        return json_object_get_boolean(o) ? tok_buf_put(b, "true", 4) : tok_buf_put(b, "false", 5);
    case json_type_int:     /* json-c keeps int64 and uint64 exactly; beyond that it saturates */
        if (json_object_get_int64(o) == INT64_MAX)
            snprintf(num, sizeof(num), "%llu", (unsigned long long)json_object_get_uint64(o));
        else
            snprintf(num, sizeof(num), "%lld", (long long)json_object_get_int64(o));
        return tok_buf_put(b, num, strlen(num));
    case json_type_double:
        return json_put_double(b, json_object_get_double(o));
    case json_type_string:
        return json_put_string(b, json_object_get_string(o), (size_t)json_object_get_string_len(o));
    case json_type_array:
        rc = tok_buf_put(b, "[", 1);
        for (size_t i = 0; rc == 0 && i < json_object_array_length(o); i++) {
            if (i)
                rc = tok_buf_put(b, ", ", 2);
            if (rc == 0)
                rc = json_put(b, json_object_array_get_idx(o, i), depth + 1);
        }
        return rc ? rc : tok_buf_put(b, "]", 1);
    case json_type_object: {
        bool first = true;
        rc = tok_buf_put(b, "{", 1);
        json_object_object_foreach(o, key, val) {
            if (rc == 0 && !first)
                rc = tok_buf_put(b, ", ", 2);
            first = false;
            if (rc == 0)
                rc = json_put_string(b, key, strlen(key));
            if (rc == 0)
                rc = tok_buf_put(b, ": ", 2);
            if (rc == 0)
                rc = json_put(b, val, depth + 1);
        }
        return rc ? rc : tok_buf_put(b, "}", 1);
    }
    }
    return -EINVAL;
}

static int put_tool(tok_buf *b, const char *tool, size_t index, hy_err *err)
{
    enum json_tokener_error jerr;
    json_object *o = tool ? json_tokener_parse_verbose(tool, &jerr) : NULL;
    int rc;

    if (!o)
        return hy_err_set(err, -EINVAL, "chat: tools[%zu] is not JSON: %s", index,
                          tool ? json_tokener_error_desc(jerr) : "NULL");
    rc = tok_buf_put(b, "\n<tool> ", 8);
    if (rc == 0)
        rc = json_put(b, o, 0);
    if (rc == 0)
        rc = tok_buf_put(b, " </tool>", 8);
    json_object_put(o);
    if (rc == -ELOOP)
        return hy_err_set(err, -EINVAL, "chat: tools[%zu] is nested deeper than 64 levels", index);
    return rc;
}

/* ---- the template ---- */

static const char *const turn_header[] = {
    [HY_ROLE_USER] = "<extra_id_1>User\n",
    [HY_ROLE_ASSISTANT] = "<extra_id_1>Assistant\n",
    [HY_ROLE_TOOL] = "<extra_id_1>Tool\n",
};

static int render(tok_buf *b, const hy_chat_msg *msgs, size_t n, const hy_chat_extra *x,
                  bool add_generation_prompt, hy_err *err)
{
    size_t n_tools = x ? x->n_tools : 0, n_ctx = x ? x->n_contexts : 0;
    int rc = tok_buf_put(b, "<extra_id_0>System", 18);

    for (size_t i = 0; rc == 0 && i < n; i++) {
        if (msgs[i].role != HY_ROLE_SYSTEM)
            continue;
        rc = tok_buf_put(b, "\n", 1);
        if (rc == 0)
            rc = put_stripped(b, msgs[i].content);
        if (rc == 0 && (n_tools || n_ctx))
            rc = tok_buf_put(b, "\n", 1);
    }
    for (size_t i = 0; rc == 0 && i < n_tools; i++)
        rc = put_tool(b, x->tools[i], i, err);
    if (rc == 0 && n_ctx && n_tools)
        rc = tok_buf_put(b, "\n", 1);
    for (size_t i = 0; rc == 0 && i < n_ctx; i++) {
        rc = tok_buf_put(b, "\n<context> ", 11);
        if (rc == 0)
            rc = put_stripped(b, x->contexts[i]);
        if (rc == 0)
            rc = tok_buf_put(b, " </context>", 11);
    }
    if (rc == 0)
        rc = tok_buf_put(b, "\n\n", 2);
    for (size_t i = 0; rc == 0 && i < n; i++) {
        if (msgs[i].role == HY_ROLE_SYSTEM)
            continue;
        rc = tok_buf_put(b, turn_header[msgs[i].role], strlen(turn_header[msgs[i].role]));
        if (rc == 0)
            rc = put_stripped(b, msgs[i].content);
        if (rc == 0)
            rc = tok_buf_put(b, "\n", 1);
    }
    if (rc == 0 && add_generation_prompt)
        rc = tok_buf_put(b, turn_header[HY_ROLE_ASSISTANT], strlen(turn_header[HY_ROLE_ASSISTANT]));
    return rc;
}

int hy_chat_render_ex(const hy_chat_msg *msgs, size_t n, const hy_chat_extra *extra,
                      bool add_generation_prompt, char **out, size_t *out_len, hy_err *err)
{
    tok_buf b = {0};
    int rc = 0;

    *out = NULL;
    *out_len = 0;
    for (size_t i = 0; i < n; i++)
        if ((unsigned)msgs[i].role > HY_ROLE_TOOL)
            return hy_err_set(err, -EINVAL, "chat: messages[%zu] has role %d (not system/user/assistant/tool)",
                              i, (int)msgs[i].role);
    rc = render(&b, msgs, n, extra, add_generation_prompt, err);
    if (rc < 0) {
        free(b.p);
        if (err && err->code == 0)
            hy_err_set(err, rc, "chat: out of memory rendering %zu messages", n);
        return rc;
    }
    *out = b.p;
    *out_len = b.len;
    return 0;
}

int hy_chat_render(const hy_chat_msg *msgs, size_t n, bool add_generation_prompt,
                   char **out, size_t *out_len, hy_err *err)
{
    return hy_chat_render_ex(msgs, n, NULL, add_generation_prompt, out, out_len, err);
}

int hy_chat_encode(const hy_tok *t, const hy_chat_msg *msgs, size_t n, const hy_chat_extra *extra,
                   bool add_generation_prompt, int32_t **ids, size_t *n_ids, hy_err *err)
{
    char *text;
    size_t len;
    int rc = hy_chat_render_ex(msgs, n, extra, add_generation_prompt, &text, &len, err);

    *ids = NULL;
    *n_ids = 0;
    if (rc < 0)
        return rc;
    /* apply_chat_template tokenizes with add_special_tokens=False: no BOS. */
    rc = hy_tok_encode(t, text, len, false, ids, n_ids, err);
    free(text);
    return rc;
}

int hy_chat_role_parse(const char *name, hy_role *role)
{
    static const char *const names[] = { "system", "user", "assistant", "tool" };

    for (int i = 0; name && i < 4; i++)
        if (strcmp(name, names[i]) == 0) {
            *role = (hy_role)i;
            return 0;
        }
    return -EINVAL;
}

/* ---- stop markers in streamed text ---- */

static const char *const stop_markers[] = { HY_CHAT_TURN_MARKER, HY_CHAT_EOS_TEXT };
#define N_STOP_MARKERS (sizeof(stop_markers) / sizeof(stop_markers[0]))

void hy_chat_stop_init(hy_chat_stop *s)
{
    memset(s, 0, sizeof(*s));
}

static int append_out(char **out, size_t *out_len, const char *s, size_t n)
{
    char *p = realloc(*out, *out_len + n + 1);

    if (!p)
        return -ENOMEM;
    memcpy(p + *out_len, s, n);
    *out_len += n;
    p[*out_len] = '\0';
    *out = p;
    return 0;
}

/* Length of the longest suffix of s[0..n) that is a proper prefix of a marker. */
static size_t marker_prefix_suffix(const char *s, size_t n)
{
    size_t best = 0;

    for (size_t m = 0; m < N_STOP_MARKERS; m++) {
        size_t ml = strlen(stop_markers[m]);
        for (size_t k = ml - 1; k > best; k--)
            if (k <= n && memcmp(s + n - k, stop_markers[m], k) == 0) {
                best = k;
                break;
            }
    }
    return best;
}

int hy_chat_stop_feed(hy_chat_stop *s, const char *text, size_t len, char **out, size_t *out_len)
{
    tok_buf b = {0};
    size_t cut = SIZE_MAX;
    int rc;

    if (s->stopped)
        return append_out(out, out_len, "", 0);
    if ((rc = tok_buf_put(&b, s->held, s->n_held)) < 0 || (rc = tok_buf_put(&b, text, len)) < 0) {
        free(b.p);
        return rc;
    }
    for (size_t m = 0; m < N_STOP_MARKERS; m++) {
        const char *hit = memmem(b.p, b.len, stop_markers[m], strlen(stop_markers[m]));
        if (hit && (size_t)(hit - b.p) < cut)
            cut = (size_t)(hit - b.p);
    }
    if (cut != SIZE_MAX) {
        s->stopped = true;
        s->n_held = 0;
        rc = append_out(out, out_len, b.p, cut);
    } else {
        size_t keep = marker_prefix_suffix(b.p, b.len);
        rc = append_out(out, out_len, b.p, b.len - keep);
        memcpy(s->held, b.p + b.len - keep, keep);
        s->n_held = keep;
    }
    free(b.p);
    return rc;
}

int hy_chat_stop_flush(hy_chat_stop *s, char **out, size_t *out_len)
{
    size_t n = s->stopped ? 0 : s->n_held;

    s->n_held = 0;
    return append_out(out, out_len, s->held, n);
}

bool hy_chat_stop_id(const hy_tok *t, int32_t id)
{
    return id == hy_tok_eos(t);
}
