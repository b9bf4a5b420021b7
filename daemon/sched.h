/* sched.h: the scheduler thread: it alone runs the engine; requests in through a queue, events out through an eventfd. */
#ifndef HYMBA_DAEMON_SCHED_H
#define HYMBA_DAEMON_SCHED_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>
#include "daemon/session.h"
#include "engine/hymba.h"
#include "engine/tok.h"
#include "proto/hymba.pb-c.h"

typedef struct hyd_gen hyd_gen;

/* One Send: built by the event-loop thread, owned by the scheduler from
 * hyd_sched_submit until it posts the request's FINISHED event, then freed by
 * the loop thread (which keeps it in its live list all along, for Cancel). */
struct hyd_request {
    uint64_t id;
    hyd_session *session;
    uid_t uid;
    char *sender;                    /* caller's unique bus name: signals go there only */
    char *text;                      /* the user's message */
    uint32_t max_new_tokens;
    bool ignore_eos;
    int64_t t_accept;                /* CLOCK_MONOTONIC usec */
    atomic_int cancel;               /* 0 or a HYMBA__V1__CANCEL_REASON__*, set by the loop thread */
    hyd_gen *gen;                    /* scheduler-private generation state */
    struct hyd_request *next_live;   /* loop thread's list */
};

typedef enum hyd_event_kind {
    HYD_EV_CHUNK,
    HYD_EV_FINISHED,
} hyd_event_kind;

typedef struct hyd_event {
    hyd_event_kind kind;
    hyd_request *req;
    char *text;                      /* CHUNK: the new text; FINISHED/error: the message */
    uint32_t n_tokens;               /* tokens generated so far */
    Hymba__V1__Finished__ResultCase result;
    Hymba__V1__Done done;            /* result == DONE (plain fields only) */
    Hymba__V1__CancelReason cancel_reason;
    Hymba__V1__ErrorCode error_code;
    struct hyd_event *next;
} hyd_event;

typedef struct hyd_sched_opts {
    uint32_t prefill_chunk;          /* prompt tokens per step */
    uint32_t max_batch;              /* sequences per decode call */
    const char *state_dir;           /* handed to the per-turn hook */
} hyd_sched_opts;

typedef struct hyd_sched_stats {
    unsigned queued;                 /* submitted, not yet picked up */
    unsigned active;                 /* prefilling or decoding */
    uint64_t tokens_generated;
    hy_backend_stats backend;
} hyd_sched_stats;

typedef struct hyd_sched hyd_sched;

/* Takes the model and tokenizer over (they are used only by the scheduler
 * thread from now until hyd_sched_stop returns) and starts the thread. */
int hyd_sched_new(hy_model *m, const hy_tok *tok, const hyd_sched_opts *opts, hyd_sched **out);
int hyd_sched_event_fd(hyd_sched *s);          /* readable when events wait */
void hyd_sched_submit(hyd_sched *s, hyd_request *req);
void hyd_sched_free_seq(hyd_sched *s, hy_seq *seq);
void hyd_sched_wake(hyd_sched *s);             /* after setting req->cancel */
/* Clears the eventfd and takes every posted event, oldest first. */
hyd_event *hyd_sched_take_events(hyd_sched *s);
void hyd_event_free(hyd_event *ev);
void hyd_sched_stats_get(hyd_sched *s, hyd_sched_stats *out);
/* Finish every request (cancelled, reason shutdown), join the thread; the
 * model is the caller's again.  Events posted meanwhile stay to be taken. */
void hyd_sched_stop(hyd_sched *s);
void hyd_sched_free(hyd_sched *s);

#endif
