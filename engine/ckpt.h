/* ckpt.h: the session checkpoint file (format layout, writer, validating reader). */
#ifndef HYMBA_ENGINE_CKPT_H
#define HYMBA_ENGINE_CKPT_H

/*
 * docs/checkpoint.md is the prose specification; this comment is the layout.
 * Every integer is little-endian, every float IEEE-754 binary32 little-endian.
 * There is no padding anywhere: fields and sections follow each other byte by byte.
 *
 *   file    := header section* END
 *   header  := 128 bytes (hy_ckpt_hdr below); hdr_crc covers bytes [0, 124)
 *   section := u32 type | u32 index | u64 length | payload[length] | u32 crc
 *              crc = CRC32C over the 16 section-header bytes and the payload
 *
 * Sections appear exactly in this order (the reader refuses any other):
 *
 *   type          count          index     payload
 *   SESSION       1              0         u32 owner_uid, u32 id_len, i64 created_ns,
 *                                          i64 updated_ns, u32 n_msgs, u32 n_snaps,
 *                                          i64 n_tokens, u32 snap_keep, u32 reserved,
 *                                          u8 id[id_len]    (id: [A-Za-z0-9_-], 1..64)
 *   SAMPLING      1              0         f32 temperature, i32 top_k, f32 top_p,
 *                                          f32 min_p, f32 repeat_penalty,
 *                                          i32 repeat_last_n, u64 rng[4]
 *   MESSAGES      1              0         n_msgs x { u32 role, u32 len, u8 text[len] }
 *   TOKENS        1              0         i32 ids[n_tokens], each in [0, vocab)
 *   TEXT          1              0         u8 text[length]: the text whose tokens the state
 *                                          holds (UTF-8, no NUL; empty: unknown)
 *   STATE_HDR     1              0         hy_state_image_hdr (kernels/state_image.h), 64 B
 *   RECURRENT     n_layers       L         f32 conv[d_inner][d_conv], f32 ssm[d_inner][d_state]
 *   KV            n_kv_layers    owner L   u32 n_kept, K[n_kept][kv_heads][head_dim],
 *                                          V[n_kept][kv_heads][v_head_dim] (kv_dtype)
 *   LOGITS        0 or 1         0         f32 logits[vocab] after the last token
 *                                          (present iff n_tokens > 0)
 *   SNAPSHOT      n_snaps        0..       u32 turn, u32 n_msgs, i64 n_tokens,
 *                                          u32 text_len, u8 text[text_len],
 *                                          f32 logits[vocab], hy_state_image_hdr,
 *                                          n_layers x RECURRENT payload,
 *                                          n_kv_layers x { u32 n_kept, u32 n_own,
 *                                            K[n_own][..], V[n_own][..] }
 *   END           1              0         (empty)
 *
 * STATE_HDR + RECURRENT* + KV* concatenated are exactly the state image that
 * hy_seq_state_export wrote.  A snapshot stores only its n_own oldest K/V
 * entries of a layer; the other n_kept - n_own entries are the same positions
 * of the current state's KV section (a snapshot is an ancestor of the current
 * state, and K/V entries never change once written), so a snapshot of a global
 * layer normally costs nothing and one of an SWA layer only what scrolled out.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "engine/hymba.h"
#include "kernels/state_image.h"

#define HY_CKPT_MAGIC "\x89HYCK\r\n\x1a"   /* 8 bytes; the \r\n and ^Z catch text-mode copies */
#define HY_CKPT_MAGIC_LEN 8
#define HY_CKPT_VERSION 1u
#define HY_CKPT_HDR_SIZE 128u
#define HY_CKPT_SEC_HDR_SIZE 16u
#define HY_CKPT_SEC_CRC_SIZE 4u
#define HY_CKPT_ID_MAX 64
#define HY_CKPT_MSG_MAX (64u << 20)          /* one message's text */
#define HY_CKPT_SNAPS_MAX 16                 /* snapshot sections a file may hold */
#define HY_CKPT_FILE_MAX ((uint64_t)1 << 40) /* sanity bound on file_size */

/* The fixed-size file header (layout of the first 128 bytes, packed). */
typedef struct hy_ckpt_hdr {
    uint8_t magic[HY_CKPT_MAGIC_LEN];        /* HY_CKPT_MAGIC: same in every version */
    uint32_t version;                        /* HY_CKPT_VERSION: same offset in every version */
    uint32_t hdr_size;                       /* 128 */
    uint64_t file_size;                      /* bytes of the whole file */
    uint8_t fingerprint[HY_FINGERPRINT_LEN]; /* hy_ckpt_model_id of the writer's model */
    uint32_t n_sections;                     /* sections after the header, END included */
    uint32_t flags;                          /* 0 */
    /* The model shape, so a refusal can say what differs. */
    uint32_t vocab, n_layers, d_inner, d_state, d_conv;
    uint32_t n_kv_layers, n_kv_heads, head_dim, v_head_dim, n_meta, window;
    uint32_t reserved[4];                    /* 0 */
    uint32_t hdr_crc;                        /* CRC32C of bytes [0, 124) */
} hy_ckpt_hdr;

typedef enum hy_ckpt_sec_type {
    HY_CKPT_SEC_SESSION = 1,
    HY_CKPT_SEC_SAMPLING = 2,
    HY_CKPT_SEC_MESSAGES = 3,
    HY_CKPT_SEC_TOKENS = 4,
    HY_CKPT_SEC_STATE_HDR = 5,
    HY_CKPT_SEC_RECURRENT = 6,
    HY_CKPT_SEC_KV = 7,
    HY_CKPT_SEC_LOGITS = 8,
    HY_CKPT_SEC_SNAPSHOT = 9,
    HY_CKPT_SEC_TEXT = 10,
    HY_CKPT_SEC_END = 0x454e4421u,           /* "!DNE" read as bytes: "END!" */
} hy_ckpt_sec_type;

/* Why a reader refused a file (tests and the daemon's "damaged" report use it). */
typedef enum hy_ckpt_reason {
    HY_CKPT_OK = 0,
    HY_CKPT_IO,              /* open/read failed (errno in the code) */
    HY_CKPT_TRUNCATED,       /* shorter than its header says / section runs past the end */
    HY_CKPT_BAD_MAGIC,       /* not a hymba checkpoint */
    HY_CKPT_BAD_VERSION,     /* a format version this reader does not know */
    HY_CKPT_HEADER_CRC,      /* header bytes damaged */
    HY_CKPT_WRONG_MODEL,     /* fingerprint or shape of another model */
    HY_CKPT_SECTION_CRC,     /* a section's bytes damaged */
    HY_CKPT_MALFORMED,       /* CRCs fine but a field is out of bounds or inconsistent */
} hy_ckpt_reason;

const char *hy_ckpt_reason_name(hy_ckpt_reason r);

typedef struct hy_ckpt_msg {
    uint32_t role;           /* hy_role */
    char *text;              /* [len] + NUL, owned */
    uint32_t len;
} hy_ckpt_msg;

/* The state at the start of one assistant turn (after its prompt was consumed). */
typedef struct hy_ckpt_snap {
    uint32_t turn;           /* assistant turn number, 0 = the first answer */
    uint32_t n_msgs;         /* messages before that answer */
    int64_t n_tokens;        /* tokens consumed then: a prefix of the session's tokens */
    int32_t *tokens;         /* [n_tokens] those tokens, owned (not stored in the file: they
                              * are the session's first n_tokens); NULL: unknown */
    char *text;              /* [text_len] + NUL: the text the state holds, owned; NULL: unknown */
    size_t text_len;
    float *logits;           /* [vocab], owned */
    uint8_t *image;          /* [image_len] full state image, owned */
    size_t image_len;
} hy_ckpt_snap;

/* One session, everything a checkpoint holds; every pointer owned (hy_ckpt_clear). */
typedef struct hy_ckpt {
    uint8_t fingerprint[HY_FINGERPRINT_LEN];
    char id[HY_CKPT_ID_MAX + 1];
    uint32_t owner_uid;
    int64_t created_ns, updated_ns;          /* CLOCK_REALTIME */
    uint32_t snap_keep;                      /* K: snapshots the session keeps */
    hy_sampling sampling;
    hy_rng rng;
    hy_ckpt_msg *msgs;                       /* [n_msgs] */
    uint32_t n_msgs;
    int32_t *tokens;                         /* [n_tokens] */
    int64_t n_tokens;
    char *text;                              /* [text_len] + NUL the text the state holds; NULL: unknown */
    size_t text_len;
    uint8_t *image;                          /* [image_len] state image of the session */
    size_t image_len;
    float *logits;                           /* [vocab] or NULL when n_tokens == 0 */
    hy_ckpt_snap *snaps;                     /* [n_snaps], oldest first */
    uint32_t n_snaps;
} hy_ckpt;

/* Where the writer's bytes go (a file descriptor, or a test's fault injector). */
typedef struct hy_ckpt_sink {
    int (*write)(void *ctx, const void *buf, size_t len, hy_err *err);
    void *ctx;
} hy_ckpt_sink;

void hy_ckpt_clear(hy_ckpt *c);
bool hy_ckpt_id_valid(const char *id);

/* Bytes hy_ckpt_encode will produce for c (snapshot K/V sharing included). */
uint64_t hy_ckpt_encoded_size(const hy_ckpt *c, const hy_arch *a);
/* Serialize c (its images made for model a) into sink. */
int hy_ckpt_encode(const hy_ckpt *c, const hy_arch *a, hy_ckpt_sink *sink, hy_err *err);
/* The same, to an fd (buffered; short writes and EINTR handled). */
int hy_ckpt_write_fd(int fd, const hy_ckpt *c, const hy_arch *a, hy_err *err);

/* Validate buf completely against model a + fingerprint fp, then fill *out.
 * Nothing in *out is valid unless it returns 0; *why says why it refused. */
int hy_ckpt_decode(const void *buf, size_t len, const hy_arch *a, const uint8_t *fp,
                   hy_ckpt *out, hy_ckpt_reason *why, hy_err *err);
/* Read a whole file and decode it. */
int hy_ckpt_load_file(const char *path, const hy_arch *a, const uint8_t *fp,
                      hy_ckpt *out, hy_ckpt_reason *why, hy_err *err);

/* Summary read from the header and SESSION section only (listing sessions). */
typedef struct hy_ckpt_info {
    char id[HY_CKPT_ID_MAX + 1];
    uint32_t owner_uid;
    int64_t created_ns, updated_ns;
    uint32_t n_msgs, n_snaps;
    int64_t n_tokens;
    uint64_t file_size;
    uint8_t fingerprint[HY_FINGERPRINT_LEN];
} hy_ckpt_info;
/* buf: the first len bytes of a file of file_len bytes. */
int hy_ckpt_peek(const void *buf, size_t len, uint64_t file_len, hy_ckpt_info *info, hy_ckpt_reason *why,
                 hy_err *err);
int hy_ckpt_peek_file(const char *path, hy_ckpt_info *info, hy_ckpt_reason *why, hy_err *err);

/* Header, SESSION, SAMPLING and MESSAGES of a file, validated (model included),
 * without reading the state: what a daemon needs to list sessions at start. */
int hy_ckpt_load_meta_file(const char *path, const hy_arch *a, const uint8_t *fp, hy_ckpt *out,
                           hy_ckpt_reason *why, hy_err *err);

/* Check one state image against the model (sizes, header, n_pos == n_meta + n_tokens). */
int hy_ckpt_image_check(const hy_arch *a, const void *img, size_t len, int64_t n_tokens,
                        hy_err *err);

/* The model identity a checkpoint records: SHA-256 of hy_model_fingerprint()
 * (config.json + safetensors headers) and 64-byte samples at the start, middle
 * and end of every weight tensor, so that two checkpoints with the same shapes
 * (Hymba-1.5B Base and Instruct) are told apart.  Pass it as `fp` to the readers. */
void hy_ckpt_model_id(const hy_model *m, uint8_t out[HY_FINGERPRINT_LEN]);

/* Engine glue.  Copy seq's state, tokens and logits into c (image, tokens, logits). */
int hy_ckpt_capture(hy_model *m, const hy_seq *s, hy_ckpt *c, hy_err *err);
/* Restore seq from c: no forward pass (hy_seq_import). */
int hy_ckpt_restore(hy_model *m, hy_seq *s, const hy_ckpt *c, hy_err *err);
/* A snapshot of seq now (start of assistant turn `turn`, n_msgs messages so far). */
int hy_ckpt_snap_take(hy_model *m, const hy_seq *s, uint32_t turn, uint32_t n_msgs,
                      hy_ckpt_snap *out, hy_err *err);
/* seq := the snapshot's state; its tokens are snap->tokens, or the first
 * snap->n_tokens of `tokens` when given. */
int hy_ckpt_snap_restore(hy_model *m, hy_seq *s, const hy_ckpt_snap *snap,
                         const int32_t *tokens, hy_err *err);
void hy_ckpt_snap_clear(hy_ckpt_snap *s);
/* Append snap to c (taking ownership), dropping the oldest beyond c->snap_keep
 * and those of another branch (a later turn, or tokens that are not a prefix). */
int hy_ckpt_snap_push(hy_ckpt *c, hy_ckpt_snap *snap, hy_err *err);
/* Drop snapshots that are not a prefix of tokens[0..n) (after the session's
 * state was rebuilt differently) or that are newer than max_turn. */
void hy_ckpt_snaps_prune(hy_ckpt *c, const int32_t *tokens, int64_t n, uint32_t max_turn);

#endif
