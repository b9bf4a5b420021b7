/* chat.h: the Hymba-1.5B-Instruct chat format, rendered as its Jinja template does. */
#ifndef HYMBA_ENGINE_CHAT_H
#define HYMBA_ENGINE_CHAT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "kernels/backend.h"
#include "engine/tok.h"

typedef enum hy_role {
    HY_ROLE_SYSTEM, HY_ROLE_USER, HY_ROLE_ASSISTANT, HY_ROLE_TOOL,
} hy_role;

typedef struct hy_chat_msg {
    hy_role role;
    const char *content;
} hy_chat_msg;

/* Render messages as the template does (no BOS).  add_generation_prompt ends
 * with the assistant turn header.  *out is malloc'ed. */
int hy_chat_render(const hy_chat_msg *msgs, size_t n, bool add_generation_prompt,
                   char **out, size_t *out_len, hy_err *err);

/* The template's optional tools and contexts (apply_chat_template(tools=, contexts=)). */
typedef struct hy_chat_extra {
    const char *const *tools;       /* [n_tools] JSON texts, re-serialized as Python json.dumps does */
    size_t n_tools;
    const char *const *contexts;    /* [n_contexts] plain texts (stripped) */
    size_t n_contexts;
} hy_chat_extra;

/* hy_chat_render with tools/contexts (extra may be NULL). */
int hy_chat_render_ex(const hy_chat_msg *msgs, size_t n, const hy_chat_extra *extra,
                      bool add_generation_prompt, char **out, size_t *out_len, hy_err *err);

/* Render, then encode without BOS (add_special_tokens=False): the prompt ids. */
int hy_chat_encode(const hy_tok *t, const hy_chat_msg *msgs, size_t n, const hy_chat_extra *extra,
                   bool add_generation_prompt, int32_t **ids, size_t *n_ids, hy_err *err);

/* "system", "user", "assistant", "tool" -> role; -EINVAL for anything else. */
int hy_chat_role_parse(const char *name, hy_role *role);

/* The text that starts the next turn: generation stops when it appears. */
#define HY_CHAT_TURN_MARKER "<extra_id_1>"
/* The reference chat loop's extra stop string. */
#define HY_CHAT_EOS_TEXT "</s>"

/* Stop detection on streamed text: holds back what could be the start of a
 * stop marker (a marker may arrive split over several chunks), and drops the
 * marker and everything after it. */
#define HY_CHAT_STOP_HOLD_MAX 32
typedef struct hy_chat_stop {
    char held[HY_CHAT_STOP_HOLD_MAX];   /* a suffix of the text that is a prefix of a marker */
    size_t n_held;
    bool stopped;                       /* a marker was seen: stop generating */
} hy_chat_stop;

void hy_chat_stop_init(hy_chat_stop *s);
/* Appends to *out (malloc'ed/realloc'ed, NUL-terminated) the part of text that
 * is safe to show; sets s->stopped when a marker appears. */
int hy_chat_stop_feed(hy_chat_stop *s, const char *text, size_t len, char **out, size_t *out_len);
/* End of generation without a marker: appends what was held back. */
int hy_chat_stop_flush(hy_chat_stop *s, char **out, size_t *out_len);
/* True for ids that end generation (EOS, id 2 for Hymba). */
bool hy_chat_stop_id(const hy_tok *t, int32_t id);

#endif
