/* chat.h: the Hymba-1.5B-Instruct chat format, rendered as its Jinja template does. */
#ifndef HYMBA_ENGINE_CHAT_H
#define HYMBA_ENGINE_CHAT_H

#include <stdbool.h>
#include <stddef.h>
#include "kernels/backend.h"

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

/* The text that starts the next turn: generation stops when it appears. */
#define HY_CHAT_TURN_MARKER "<extra_id_1>"

#endif
