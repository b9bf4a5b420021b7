/* term.c: colors and a progress line for hymbactl, written only when stdout is a terminal, so
 * pipes, files and --json output never carry escape sequences. */
#include "client/term.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define ESC "\033["
#define ERASE_LINE "\r" ESC "2K"     /* back to column 0, erase the line */

static bool active;
static bool progress_shown;          /* a progress line is on screen */

static const char *const styles[TERM_STYLE_COUNT] = {
    [TERM_BOLD] = ESC "1m",
    [TERM_DIM] = ESC "2m",
    [TERM_USER] = ESC "1;32m",       /* bold green */
    [TERM_ASSISTANT] = ESC "1;34m",  /* bold blue */
};

void term_init(bool json)
{
    const char *term = getenv("TERM");
    const char *no_color = getenv("NO_COLOR");

    active = !json && isatty(STDOUT_FILENO) && !(no_color && *no_color) && !(term && !strcmp(term, "dumb"));
}

bool term_active(void)
{
    return active;
}

const char *term_on(term_style s)
{
    return active && s < TERM_STYLE_COUNT ? styles[s] : "";
}

const char *term_off(void)
{
    return active ? ESC "0m" : "";
}

void term_progress(const char *fmt, ...)
{
    va_list ap;

    if (!active)
        return;
    fputs(ERASE_LINE, stdout);
    fputs(styles[TERM_DIM], stdout);
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    fputs(ESC "0m", stdout);
    fflush(stdout);
    progress_shown = true;
}

void term_write_text(const char *text, size_t n)
{
    static const char replacement[] = "\xef\xbf\xbd";   /* U+FFFD in UTF-8 */
    size_t start = 0;

    if (!active) {
        fwrite(text, 1, n, stdout);
        return;
    }
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)text[i];
        if ((ch >= 0x20 && ch != 0x7f) || ch == '\n' || ch == '\t')
            continue;
        fwrite(text + start, 1, i - start, stdout);
        fputs(replacement, stdout);
        start = i + 1;
    }
    fwrite(text + start, 1, n - start, stdout);
}

void term_progress_clear(void)
{
    if (!active || !progress_shown)
        return;
    fputs(ERASE_LINE, stdout);
    fflush(stdout);
    progress_shown = false;
}
