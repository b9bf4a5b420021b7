/* persist.h: hymbad's persistent sessions: checkpoint after every turn, lazy restore, snapshots, export/import. */
#ifndef HYMBA_DAEMON_PERSIST_H
#define HYMBA_DAEMON_PERSIST_H

#include <stdbool.h>
#include "daemon/hymbad.h"
#include "daemon/wire.h"

#define HYD_ERROR_SESSION_DAMAGED HYD_ERR("SessionDamaged")
#define HYD_DEFAULT_TURN_SNAPSHOTS 4

/*
 * Threads: hyd_persist_init/fini and the bus methods run on the event-loop
 * thread; prepare, turn_start and save on the scheduler thread (save also on
 * the main thread at shutdown, after the scheduler stopped).  A session's
 * persistence state (s->persist) is touched by the scheduler only while the
 * session has an active request, and by the loop thread only while it has none.
 */

/* --user without an explicit state_dir: $XDG_STATE_HOME/hymba.  Before the
 * state directory is prepared. */
int hyd_persist_config(hyd_config *cfg);
/* Open the store and register every session found on disk (messages and
 * settings only; the model state loads on first use).  After the model loads. */
int hyd_persist_init(hyd_ctx *c);
void hyd_persist_fini(void);                   /* after the sessions were saved */
/* Regenerate, Rewind, Export (Session) and Import (Manager) on the bus. */
int hyd_persist_bus_setup(hyd_ctx *c);
void hyd_persist_bus_close(void);              /* before the bus connection closes */

/* The reason a session id of uid was found damaged, or NULL. */
const char *hyd_persist_damaged(const char *id, uid_t uid);
/* The user deleted the session: its checkpoint goes too. */
void hyd_persist_removed(hyd_session *s);
void hyd_persist_session_free(hyd_session *s);

/* Scheduler thread, before a turn renders: the sequence exists, a lazily
 * loaded or imported state is restored, a Regenerate/Rewind snapshot applied. */
int hyd_persist_prepare(hy_model *m, hyd_session *s, hy_err *err);
/* Scheduler thread, the prompt is in: snapshot the start of this answer. */
void hyd_persist_turn_start(hy_model *m, hyd_session *s);
/* After a turn (scheduler) or at shutdown (main): write the checkpoint if it changed. */
void hyd_persist_save(hy_model *m, hyd_session *s);

#endif
