/* textio.h: hymba-run's text features: --tokenize, --detokenize, -p TEXT completion and --chat, over the engine. */
#ifndef HYMBA_TOOLS_TEXTIO_H
#define HYMBA_TOOLS_TEXTIO_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include "engine/hymba.h"
#include "engine/tok.h"

typedef struct hy_textio_opts {
    int max_new_tokens;         /* generated tokens per answer (default 256, as the reference chat.py) */
    hy_sampling sampling;       /* default: greedy (temperature 0), as the reference */
    uint64_t seed;
    const char *system;         /* chat: an optional system message */
    bool echo_prompt;           /* -p: print the prompt before its continuation */
} hy_textio_opts;

void hy_textio_opts_default(hy_textio_opts *o);

/* --tokenize: the ids of text, comma-separated on one line; BOS first when bos. */
int hy_textio_tokenize(const hy_tok *t, const char *text, bool bos, FILE *out, hy_err *err);
/* --detokenize: "1,2,3" (spaces allowed) -> the decoded text and a newline
 * (specials kept unless skip_special, as HF decode's default). */
int hy_textio_detokenize(const hy_tok *t, const char *csv, bool skip_special, FILE *out, hy_err *err);
/* Parses "1,2,3" into *ids (malloc'ed). */
int hy_textio_parse_ids(const char *csv, int32_t **ids, size_t *n, hy_err *err);

/* -p TEXT: encode (BOS as add_bos_token says), generate and print the
 * continuation as it is produced; stops on EOS or max_new_tokens. */
int hy_textio_complete(hy_model *m, const hy_tok *t, const char *prompt, const hy_textio_opts *o,
                       FILE *out, hy_err *err);

/* --chat: one turn for message (non-NULL), or a REPL reading one message per
 * line from in until EOF or "/exit" ("/reset" forgets the conversation).
 * Each turn renders the whole conversation with the chat template (no BOS),
 * prefills only what the state lacks, and stops on EOS or "<extra_id_1>". */
int hy_textio_chat(hy_model *m, const hy_tok *t, const char *message, const hy_textio_opts *o,
                   FILE *in, FILE *out, hy_err *err);

#endif
