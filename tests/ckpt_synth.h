/* ckpt_synth.h: a made-up model shape and deterministic states for checkpoint tests without weights. */
#ifndef HYMBA_TESTS_CKPT_SYNTH_H
#define HYMBA_TESTS_CKPT_SYNTH_H

#include "engine/ckpt.h"

/* 4 layers: 0 and 3 global, 1 owns K/V shared by 2; window 5, 3 meta tokens. */
void synth_arch(hy_arch *a);
/* A fingerprint derived from `salt`. */
void synth_fingerprint(uint8_t fp[HY_FINGERPRINT_LEN], uint8_t salt);
/* The state after n_tokens tokens of one conversation: K/V at a real position
 * depend only on (layer, position, branch), recurrent parts on (n_tokens, branch),
 * so states of one branch are ancestors of each other as real ones are. */
uint8_t *synth_image(const hy_arch *a, int64_t n_tokens, hy_dtype kv_dt, uint32_t branch, size_t *len);
/* A session with n_tokens tokens, n_msgs messages and n_snaps snapshots of one branch. */
void synth_ckpt(const hy_arch *a, hy_ckpt *c, int64_t n_tokens, uint32_t n_msgs, uint32_t n_snaps,
                hy_dtype kv_dt);
/* Encode into a malloc'ed buffer. */
uint8_t *synth_encode(const hy_ckpt *c, const hy_arch *a, size_t *len);
/* Recompute every section CRC and the header CRC (to forge semantically bad files). */
void synth_recrc(uint8_t *buf, size_t len);
/* Offset of the payload of the first section of `type` (0 if none). */
size_t synth_find(const uint8_t *buf, size_t len, uint32_t type, uint64_t *plen);

#endif
