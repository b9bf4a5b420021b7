/* store.h: the session store on disk (one checkpoint file per session, per-UID directories). */
#ifndef HYMBA_DAEMON_STORE_H
#define HYMBA_DAEMON_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "engine/ckpt.h"

/*
 * Layout:  <root>/<uid>/<id>.hyck          system daemon (root /var/lib/hymba)
 *          <root>/<id>.hyck                --user (root $XDG_STATE_HOME/hymba)
 * Directories are mode 0700, files 0600.  A save writes <dir>/.<id>.hyck.tmp-XXXXXX,
 * fsyncs it, renames it over <id>.hyck and fsyncs the directory, so a crash at
 * any point leaves either the old or the new checkpoint.  A file the reader
 * refuses is renamed to <id>.hyck.damaged-<UTC time> (never deleted).
 */

#define HY_STORE_EXT ".hyck"
#define HY_STORE_SYSTEM_ROOT "/var/lib/hymba"

typedef struct hy_store hy_store;

/* Where a crash-injection test stops a save (the writer SIGKILLs itself). */
typedef enum hy_store_stage {
    HY_STORE_STAGE_NONE = 0,
    HY_STORE_STAGE_AFTER_BYTES,      /* after kill_after_bytes bytes of the temp file */
    HY_STORE_STAGE_BEFORE_FSYNC,
    HY_STORE_STAGE_BEFORE_RENAME,
    HY_STORE_STAGE_BEFORE_DIR_FSYNC,
} hy_store_stage;

typedef struct hy_store_fault {
    hy_store_stage stage;
    uint64_t kill_after_bytes;
} hy_store_fault;

/* root NULL: the default for the mode (see hy_store_default_root). */
int hy_store_open(const char *root, bool per_uid, hy_store **out, hy_err *err);
void hy_store_free(hy_store *st);
const char *hy_store_root(const hy_store *st);
/* /var/lib/hymba, or $XDG_STATE_HOME/hymba (~/.local/state/hymba) for user mode. */
int hy_store_default_root(bool user, char *buf, size_t len, hy_err *err);
/* Test hook: make the next saves die at the given point. */
void hy_store_set_fault(hy_store *st, const hy_store_fault *f);

/* Atomically replace uid's checkpoint of session c->id. */
int hy_store_save(hy_store *st, uint32_t uid, const hy_ckpt *c, const hy_arch *a, hy_err *err);

/* Load and validate.  -ENOENT: no such session.  Any refusal of the contents
 * (why != HY_CKPT_IO) moves the file aside; *aside (if given) gets its new name. */
int hy_store_load(hy_store *st, uint32_t uid, const char *id, const hy_arch *a, const uint8_t *fp,
                  hy_ckpt *out, hy_ckpt_reason *why, char *aside, size_t aside_len, hy_err *err);
/* The same for the metadata only (hy_ckpt_load_meta_file): listing at start. */
int hy_store_load_meta(hy_store *st, uint32_t uid, const char *id, const hy_arch *a, const uint8_t *fp,
                       hy_ckpt *out, hy_ckpt_reason *why, char *aside, size_t aside_len, hy_err *err);
bool hy_store_exists(hy_store *st, uint32_t uid, const char *id);
/* The checkpoint's path (whether or not it exists). */
int hy_store_path(const hy_store *st, uint32_t uid, const char *id, char *buf, size_t len, hy_err *err);
/* The UIDs that have a directory (per-UID stores), for a scan at start. */
int hy_store_uids(hy_store *st, uint32_t **out, size_t *n, hy_err *err);
bool hy_store_per_uid(const hy_store *st);
/* Delete a session the user deleted. */
int hy_store_remove(hy_store *st, uint32_t uid, const char *id, hy_err *err);

/* Sessions of uid on disk (header + SESSION section only; no full validation). */
typedef struct hy_store_entry {
    hy_ckpt_info info;               /* info.id is always set (from the file name) */
    hy_ckpt_reason why;              /* HY_CKPT_OK, or why the summary could not be read */
} hy_store_entry;
int hy_store_list(hy_store *st, uint32_t uid, hy_store_entry **out, size_t *n, hy_err *err);

/* Export/import: a whole checkpoint to/from an open descriptor (pipe or file). */
int hy_store_export_fd(int fd, const hy_ckpt *c, const hy_arch *a, hy_err *err);
int hy_store_import_fd(int fd, const hy_arch *a, const uint8_t *fp, uint64_t max_bytes,
                       hy_ckpt *out, hy_ckpt_reason *why, hy_err *err);

#endif
