/* session.c: the session registry (event-loop thread) and each session's locked message history. */
#include "daemon/session.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <systemd/sd-id128.h>
#include "daemon/log.h"
#include "daemon/persist.h"

int64_t hyd_now_usec(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

int hyd_session_new(hyd_registry *reg, uid_t uid, const char *system_prompt,
                    const hy_sampling *sampling, uint64_t seed, hyd_session **out)
{
    hyd_session *s;
    sd_id128_t id;
    int r;

    r = sd_id128_randomize(&id);
    if (r < 0)
        return r;
    s = calloc(1, sizeof(*s));
    if (!s)
        return -ENOMEM;
    sd_id128_to_string(id, s->id);
    s->uid = uid;
    s->created_usec = s->updated_usec = hyd_now_usec();
    if (system_prompt && *system_prompt) {
        s->system_prompt = strdup(system_prompt);
        if (!s->system_prompt) {
            free(s);
            return -ENOMEM;
        }
    }
    s->sampling = *sampling;
    s->seed = seed;
    hy_rng_seed(&s->rng, seed);
    pthread_mutex_init(&s->lock, NULL);
    s->next = reg->head;
    reg->head = s;
    reg->n++;
    *out = s;
    return 0;
}

hyd_session *hyd_session_find(hyd_registry *reg, const char *id, uid_t uid)
{
    for (hyd_session *s = reg->head; s; s = s->next)
        if (s->uid == uid && !strcmp(s->id, id))
            return s;
    return NULL;
}

unsigned hyd_session_count_uid(const hyd_registry *reg, uid_t uid)
{
    unsigned n = 0;
    for (const hyd_session *s = reg->head; s; s = s->next)
        n += s->uid == uid;
    return n;
}

void hyd_session_unlink(hyd_registry *reg, hyd_session *s)
{
    for (hyd_session **p = &reg->head; *p; p = &(*p)->next)
        if (*p == s) {
            *p = s->next;
            s->next = NULL;
            reg->n--;
            return;
        }
}

void hyd_msgs_free(hyd_msg *msgs, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(msgs[i].text);
    free(msgs);
}

void hyd_session_free(hyd_session *s)
{
    if (!s)
        return;
    hyd_persist_session_free(s);
    hyd_msgs_free(s->msgs, s->n_msgs);
    free(s->system_prompt);
    free(s->seq_text);
    pthread_mutex_destroy(&s->lock);
    free(s);
}

int hyd_session_append_turn(hyd_session *s, const char *user, const char *assistant, int64_t n_tokens)
{
    char *u = strdup(user), *a = strdup(assistant);
    int r = 0;

    if (!u || !a) {
        free(u);
        free(a);
        return -ENOMEM;
    }
    pthread_mutex_lock(&s->lock);
    if (s->n_msgs + 2 > s->cap_msgs) {
        size_t cap = s->cap_msgs ? 2 * s->cap_msgs : 8;
        hyd_msg *m = realloc(s->msgs, cap * sizeof(*m));
        if (!m) {
            r = -ENOMEM;
            goto out;
        }
        s->msgs = m;
        s->cap_msgs = cap;
    }
    s->msgs[s->n_msgs++] = (hyd_msg){ HY_ROLE_USER, u };
    s->msgs[s->n_msgs++] = (hyd_msg){ HY_ROLE_ASSISTANT, a };
    u = a = NULL;
out:
    s->n_tokens = n_tokens;
    s->updated_usec = hyd_now_usec();
    pthread_mutex_unlock(&s->lock);
    free(u);
    free(a);
    return r;
}

int hyd_session_copy_msgs(hyd_session *s, hyd_msg **out, size_t *n, int64_t *updated_usec, int64_t *n_tokens)
{
    hyd_msg *m = NULL;
    size_t i = 0;
    int r = 0;

    pthread_mutex_lock(&s->lock);
    if (s->n_msgs) {
        m = calloc(s->n_msgs, sizeof(*m));
        if (!m) {
            r = -ENOMEM;
            goto out;
        }
        for (; i < s->n_msgs; i++) {
            m[i].role = s->msgs[i].role;
            m[i].text = strdup(s->msgs[i].text);
            if (!m[i].text) {
                r = -ENOMEM;
                break;
            }
        }
    }
    if (updated_usec)
        *updated_usec = s->updated_usec;
    if (n_tokens)
        *n_tokens = s->n_tokens;
out:
    pthread_mutex_unlock(&s->lock);
    if (r < 0) {
        hyd_msgs_free(m, i);
        return r;
    }
    *out = m;
    *n = i;
    return 0;
}

void hyd_session_turn_done(const char *state_dir, hyd_session *s, hy_model *m)
{
    (void)state_dir;                 /* the store (daemon/persist.c) was opened on it */
    log_debug("session %s: turn done (%lld tokens)", s->id, (long long)s->n_tokens);
    hyd_persist_save(m, s);
}
