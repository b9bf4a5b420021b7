/* term.h: hymbactl's terminal niceties (colors, a progress line), only when stdout is a terminal. */
#ifndef HYMBA_CLIENT_TERM_H
#define HYMBA_CLIENT_TERM_H

#include <stdbool.h>
#include <stddef.h>

typedef enum term_style {
    TERM_BOLD,
    TERM_DIM,
    TERM_USER,          /* a user message's header */
    TERM_ASSISTANT,     /* an assistant message's header */
    TERM_STYLE_COUNT
} term_style;

/* Decide once, after the options: stdout is a terminal, the output is not --json, $NO_COLOR is
 * unset and $TERM is not "dumb". */
void term_init(bool json);
bool term_active(void);
/* The escape sequence that starts a style, and the one that ends it: "" when not active. */
const char *term_on(term_style s);
const char *term_off(void);
/* A one-line status on stdout ("queued: 2 ahead"), replaced by the next one or erased by
 * term_progress_clear(); nothing when not active. */
void term_progress(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void term_progress_clear(void);
/* Write model text to stdout.  At a terminal, control characters other than newline and tab
 * (an ESC from a model could drive the terminal) are shown as U+FFFD; elsewhere bytes pass as is. */
void term_write_text(const char *text, size_t n);

#endif
