/* session.h: one conversation (owner, history, sampling, engine state) and the registry of them. */
#ifndef HYMBA_DAEMON_SESSION_H
#define HYMBA_DAEMON_SESSION_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>
#include "engine/chat.h"
#include "engine/hymba.h"

#define HYD_SESSION_ID_LEN 32        /* 128 random bits as lowercase hex */

typedef struct hyd_request hyd_request;
typedef struct hyd_psession hyd_psession;   /* daemon/persist.c */

typedef struct hyd_msg {
    hy_role role;                    /* HY_ROLE_USER or HY_ROLE_ASSISTANT */
    char *text;
} hyd_msg;

/*
 * Who touches what:
 *  - id, uid, created_usec, system_prompt, sampling, seed: set at creation, then read-only.
 *  - msgs, n_msgs, updated_usec, n_tokens: under lock (the scheduler appends a
 *    finished turn while the loop thread may be answering GetSession).
 *  - seq, seq_text, rng: the scheduler thread only (seq created lazily on the first turn).
 *  - active, deleted, next: the event-loop thread only.
 */
typedef struct hyd_session {
    char id[HYD_SESSION_ID_LEN + 1];
    uid_t uid;
    int64_t created_usec;
    char *system_prompt;             /* NULL: none */
    hy_sampling sampling;
    uint64_t seed;

    pthread_mutex_t lock;
    hyd_msg *msgs;                   /* [n_msgs] user/assistant turns, oldest first */
    size_t n_msgs, cap_msgs;
    int64_t updated_usec;
    int64_t n_tokens;                /* tokens the engine state holds */

    hy_seq *seq;
    char *seq_text;                  /* [seq_text_len] the text whose tokens seq holds; NULL: unknown */
    size_t seq_text_len, seq_text_cap;
    hy_rng rng;

    hyd_psession *persist;           /* checkpoint state (daemon/persist.h), NULL until needed */

    hyd_request *active;             /* queued or generating; one at a time */
    bool deleted;                    /* freed when the active request finishes */
    struct hyd_session *next;
} hyd_session;

typedef struct hyd_registry {
    hyd_session *head;
    unsigned n;
    char *state_dir;                 /* where checkpoints will live (issue 5) */
} hyd_registry;

int64_t hyd_now_usec(void);          /* CLOCK_REALTIME */

int hyd_session_new(hyd_registry *reg, uid_t uid, const char *system_prompt,
                    const hy_sampling *sampling, uint64_t seed, hyd_session **out);
/* The one place a session is looked up by id for a caller: another UID's
 * session is "not found".  (Lazy load of a checkpoint from state_dir goes here.) */
hyd_session *hyd_session_find(hyd_registry *reg, const char *id, uid_t uid);
unsigned hyd_session_count_uid(const hyd_registry *reg, uid_t uid);
/* Unlink from the registry (it can no longer be found); the caller frees it
 * once the scheduler no longer uses it. */
void hyd_session_unlink(hyd_registry *reg, hyd_session *s);
/* Frees everything but s->seq, which the engine's owner frees. */
void hyd_session_free(hyd_session *s);

/* Scheduler thread: append a finished turn (user text + assistant answer). */
int hyd_session_append_turn(hyd_session *s, const char *user, const char *assistant, int64_t n_tokens);
/* A copy of the history for a reader on another thread (*out: [*n], free with hyd_msgs_free). */
int hyd_session_copy_msgs(hyd_session *s, hyd_msg **out, size_t *n, int64_t *updated_usec, int64_t *n_tokens);
void hyd_msgs_free(hyd_msg *msgs, size_t n);

/* Called after every completed (or cancelled) turn on the scheduler thread
 * and for every session at shutdown (engine owner's thread, scheduler
 * stopped): where the checkpoint save of issue 5 goes. */
void hyd_session_turn_done(const char *state_dir, hyd_session *s, hy_model *m);

#endif
