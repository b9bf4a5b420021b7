/* mkmodel.h: pieces of hymba-mkmodel shared between its source files. */
#ifndef HYMBA_TOOLS_MKMODEL_H
#define HYMBA_TOOLS_MKMODEL_H

#include "engine/config.h"

/* tokenizer.json (a small byte-fallback BPE filling exactly vocab_size),
 * tokenizer_config.json (with the Hymba chat template), special_tokens_map.json. */
int mk_tokenizer_write(const char *outdir, const hy_config *c, hy_err *err);

/* Copy tokenizer.json, tokenizer_config.json and, when present,
 * special_tokens_map.json and added_tokens.json from another model directory. */
int mk_tokenizer_copy(const char *outdir, const char *from, hy_err *err);

/* Write a json-c object to dir/name (2-space indent, like HF's files). */
struct json_object;
int mk_json_write(const char *dir, const char *name, struct json_object *o, hy_err *err);

#endif
