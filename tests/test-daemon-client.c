/* test-daemon-client.c: drives a running hymbad over D-Bus (sd-bus + generated proto): streaming, cancel, isolation, bad payloads, limits. */
/*
 * Run by tests/daemon-integration.sh against a private bus:
 *   test-daemon-client ADDRESS SCENARIO [ARGS]
 * Scenarios: concurrent, prefill, cancel, disconnect, isolation, probe (as another
 * UID), badpayload, limits.  Exit 0 pass, 1 fail, 77 skip.
 */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <systemd/sd-bus.h>
#include "proto/hymba.pb-c.h"
#include "tests/testutil.h"

#define BUS_NAME "org.hymba.Assistant1"
#define PATH "/org/hymba/Assistant1"
#define MGR "org.hymba.Assistant1.Manager"
#define SES "org.hymba.Assistant1.Session"
#define ERR(x) "org.hymba.Assistant1.Error." x

static const char *address;

/* ---- bus helpers ------------------------------------------------------------- */

typedef struct ev {
    bool finished;
    uint64_t request_id;
    uint32_t n_tokens;
    size_t text_len;
    Hymba__V1__Finished *fin;
} ev;

typedef struct conn {
    sd_bus *bus;
    sd_bus_slot *slot;
    ev evs[20000];
    size_t n_evs;
} conn;

static int on_signal(sd_bus_message *m, void *userdata, sd_bus_error *e)
{
    conn *c = userdata;
    const void *data;
    size_t size;
    (void)e;

    if (c->n_evs == sizeof(c->evs) / sizeof(c->evs[0]))
        return 0;
    if (sd_bus_message_read_array(m, 'y', &data, &size) < 0)
        return 0;
    ev *v = &c->evs[c->n_evs];
    memset(v, 0, sizeof(*v));
    if (sd_bus_message_is_signal(m, SES, "Chunk")) {
        Hymba__V1__Chunk *ch = hymba__v1__chunk__unpack(NULL, size, data);
        CHECK(ch != NULL, "Chunk payload does not parse");
        if (!ch)
            return 0;
        v->request_id = ch->request_id;
        v->n_tokens = ch->n_tokens;
        v->text_len = strlen(ch->text);
        hymba__v1__chunk__free_unpacked(ch, NULL);
        c->n_evs++;
    } else if (sd_bus_message_is_signal(m, SES, "Finished")) {
        v->fin = hymba__v1__finished__unpack(NULL, size, data);
        CHECK(v->fin != NULL, "Finished payload does not parse");
        if (!v->fin)
            return 0;
        v->finished = true;
        v->request_id = v->fin->request_id;
        c->n_evs++;
    }
    return 0;
}

static conn *conn_new(void)
{
    conn *c = calloc(1, sizeof(*c));
    int r;

    if (!c)
        exit(1);
    r = sd_bus_new(&c->bus);
    if (r >= 0)
        r = sd_bus_set_address(c->bus, address);
    if (r >= 0)
        r = sd_bus_set_bus_client(c->bus, 1);
    if (r >= 0)
        r = sd_bus_start(c->bus);
    if (r >= 0)
        r = sd_bus_match_signal(c->bus, &c->slot, NULL, PATH, SES, NULL, on_signal, c);
    if (r < 0) {
        fprintf(stderr, "cannot connect to %s: %s\n", address, strerror(-r));
        exit(1);
    }
    return c;
}

static void conn_free(conn *c)
{
    for (size_t i = 0; i < c->n_evs; i++)
        if (c->evs[i].fin)
            hymba__v1__finished__free_unpacked(c->evs[i].fin, NULL);
    sd_bus_slot_unref(c->slot);
    sd_bus_flush_close_unref(c->bus);
    free(c);
}

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Process messages for up to ms milliseconds (or until stop(c, arg) holds). */
static bool pump(conn *c, int ms, bool (*stop)(conn *, void *), void *arg)
{
    int64_t end = now_ms() + ms;

    for (;;) {
        if (stop && stop(c, arg))
            return true;
        int r = sd_bus_process(c->bus, NULL);
        if (r < 0)
            return false;
        if (r > 0)
            continue;
        int64_t left = end - now_ms();
        if (left <= 0)
            return stop ? stop(c, arg) : true;
        sd_bus_wait(c->bus, (uint64_t)left * 1000);
    }
}

static const ev *find_finished(conn *c, uint64_t id)
{
    for (size_t i = 0; i < c->n_evs; i++)
        if (c->evs[i].finished && c->evs[i].request_id == id)
            return &c->evs[i];
    return NULL;
}

static bool is_finished(conn *c, void *arg)
{
    return find_finished(c, *(uint64_t *)arg) != NULL;
}

static bool has_chunk(conn *c, void *arg)
{
    for (size_t i = 0; i < c->n_evs; i++)
        if (!c->evs[i].finished && c->evs[i].request_id == *(uint64_t *)arg)
            return true;
    return false;
}

static size_t count_finished(conn *c, uint64_t id)
{
    size_t n = 0;
    for (size_t i = 0; i < c->n_evs; i++)
        n += c->evs[i].finished && c->evs[i].request_id == id;
    return n;
}

/* Call with raw bytes; returns 0 and the reply bytes (malloc'ed), or the
 * error name (static storage) in *err_name. */
static int call_raw(conn *c, const char *iface, const char *method, const void *buf, size_t len,
                    uint8_t **reply, size_t *reply_len, char *err_name, size_t err_len)
{
    sd_bus_message *m = NULL, *rep = NULL;
    sd_bus_error e = SD_BUS_ERROR_NULL;
    int r;

    err_name[0] = 0;
    r = sd_bus_message_new_method_call(c->bus, &m, BUS_NAME, PATH, iface, method);
    if (r >= 0)
        r = sd_bus_message_append_array(m, 'y', buf, len);
    if (r >= 0)
        r = sd_bus_call(c->bus, m, 10 * 1000000, &e, &rep);
    if (r < 0) {
        snprintf(err_name, err_len, "%s", e.name ? e.name : strerror(-r));
        if (e.message)
            fprintf(stderr, "  (%s: %s)\n", method, e.message);
    } else if (reply) {
        const void *d;
        size_t n;
        r = sd_bus_message_read_array(rep, 'y', &d, &n);
        if (r >= 0) {
            *reply = malloc(n ? n : 1);
            memcpy(*reply, d, n);
            *reply_len = n;
        }
    }
    sd_bus_error_free(&e);
    sd_bus_message_unref(m);
    sd_bus_message_unref(rep);
    return r;
}

/* Call with a message; unpack the reply as d (NULL: error, name in err). */
static ProtobufCMessage *call(conn *c, const char *iface, const char *method, const ProtobufCMessage *msg,
                              const ProtobufCMessageDescriptor *d, char *err, size_t err_len)
{
    size_t n = protobuf_c_message_get_packed_size(msg), rn = 0;
    uint8_t *buf = malloc(n ? n : 1), *rbuf = NULL;
    ProtobufCMessage *out = NULL;

    protobuf_c_message_pack(msg, buf);
    if (call_raw(c, iface, method, buf, n, &rbuf, &rn, err, err_len) >= 0) {
        out = protobuf_c_message_unpack(d, NULL, rn, rbuf);
        CHECK(out != NULL, "%s reply does not parse as %s", method, d->name);
    }
    free(buf);
    free(rbuf);
    return out;
}

static char *create_session(conn *c, char *err, size_t err_len)
{
    Hymba__V1__CreateSessionRequest req = HYMBA__V1__CREATE_SESSION_REQUEST__INIT;
    Hymba__V1__Sampling sp = HYMBA__V1__SAMPLING__INIT;
    char e[256];
    Hymba__V1__CreateSessionReply *rep;
    char *id = NULL;

    sp.seed_opt_case = HYMBA__V1__SAMPLING__SEED_OPT_SEED;
    sp.seed = 42;
    req.sampling = &sp;
    req.system_prompt = "You are a test.";
    rep = (Hymba__V1__CreateSessionReply *)call(c, MGR, "CreateSession", &req.base,
                                                &hymba__v1__create_session_reply__descriptor,
                                                err ? err : e, err ? err_len : sizeof(e));
    if (rep) {
        id = strdup(rep->session->id);
        CHECK(rep->session->owner_uid == getuid(), "owner %u, expected my uid %u", rep->session->owner_uid, getuid());
        hymba__v1__create_session_reply__free_unpacked(rep, NULL);
    }
    return id;
}

/* Send; returns the request id, or 0 with the error name in err. */
static uint64_t send_text(conn *c, const char *session, const char *text, uint32_t max_new, bool ignore_eos,
                          char *err, size_t err_len)
{
    Hymba__V1__SendRequest req = HYMBA__V1__SEND_REQUEST__INIT;
    Hymba__V1__SendReply *rep;
    char e[256];
    uint64_t id = 0;

    req.session_id = (char *)session;
    req.text = (char *)text;
    req.max_new_tokens = max_new;
    req.ignore_eos = ignore_eos;
    rep = (Hymba__V1__SendReply *)call(c, SES, "Send", &req.base, &hymba__v1__send_reply__descriptor,
                                       err ? err : e, err ? err_len : sizeof(e));
    if (rep) {
        id = rep->request_id;
        hymba__v1__send_reply__free_unpacked(rep, NULL);
    }
    return id;
}

static int cancel(conn *c, uint64_t id, char *err, size_t err_len)
{
    sd_bus_error e = SD_BUS_ERROR_NULL;
    int r = sd_bus_call_method(c->bus, BUS_NAME, PATH, SES, "Cancel", &e, NULL, "t", id);
    err[0] = 0;
    if (r < 0)
        snprintf(err, err_len, "%s", e.name ? e.name : strerror(-r));
    sd_bus_error_free(&e);
    return r;
}

static Hymba__V1__StatusReply *status(conn *c)
{
    Hymba__V1__StatusRequest req = HYMBA__V1__STATUS_REQUEST__INIT;
    char err[256];
    return (Hymba__V1__StatusReply *)call(c, MGR, "Status", &req.base, &hymba__v1__status_reply__descriptor,
                                          err, sizeof(err));
}

static Hymba__V1__GetSessionReply *get_session(conn *c, const char *id, char *err, size_t err_len)
{
    Hymba__V1__GetSessionRequest req = HYMBA__V1__GET_SESSION_REQUEST__INIT;
    req.session_id = (char *)id;
    return (Hymba__V1__GetSessionReply *)call(c, SES, "GetSession", &req.base,
                                              &hymba__v1__get_session_reply__descriptor, err, err_len);
}

static const char *result_name(const ev *v)
{
    if (!v)
        return "none";
    switch (v->fin->result_case) {
    case HYMBA__V1__FINISHED__RESULT_DONE: return "done";
    case HYMBA__V1__FINISHED__RESULT_CANCELLED: return "cancelled";
    case HYMBA__V1__FINISHED__RESULT_ERROR: return "error";
    default: return "unset";
    }
}

/* ---- scenarios ------------------------------------------------------------- */

/* Two sessions stream at once: each one's chunks arrive while the other is running. */
static void scenario_concurrent(void)
{
    conn *c = conn_new();
    char *a = create_session(c, NULL, 0), *b = create_session(c, NULL, 0);
    const uint32_t n = 200;

    CHECK(a && b, "sessions not created");
    if (!a || !b)
        goto out;
    uint64_t ra = send_text(c, a, "Tell me a long story.", n, true, NULL, 0);
    uint64_t rb = send_text(c, b, "And another one.", n, true, NULL, 0);
    CHECK(ra && rb && ra != rb, "requests not accepted (%llu, %llu)", (unsigned long long)ra, (unsigned long long)rb);
    pump(c, 60000, is_finished, &ra);
    pump(c, 60000, is_finished, &rb);

    const ev *fa = find_finished(c, ra), *fb = find_finished(c, rb);
    CHECK(fa && fa->fin->result_case == HYMBA__V1__FINISHED__RESULT_DONE, "request A: %s", result_name(fa));
    CHECK(fb && fb->fin->result_case == HYMBA__V1__FINISHED__RESULT_DONE, "request B: %s", result_name(fb));
    if (fa && fa->fin->done)
        CHECK(fa->fin->done->completion_tokens == n, "A generated %u tokens, asked %u", fa->fin->done->completion_tokens, n);
    if (fb && fb->fin->done)
        CHECK(fb->fin->done->completion_tokens == n, "B generated %u tokens, asked %u", fb->fin->done->completion_tokens, n);

    /* Interleaving: B's chunks come between A's first and last chunk and vice versa. */
    size_t first_a = SIZE_MAX, last_a = 0, first_b = SIZE_MAX, last_b = 0, chunks_a = 0, chunks_b = 0;
    uint32_t prev_a = 0, prev_b = 0;
    for (size_t i = 0; i < c->n_evs; i++) {
        const ev *v = &c->evs[i];
        if (v->finished)
            continue;
        if (v->request_id == ra) {
            first_a = first_a == SIZE_MAX ? i : first_a;
            last_a = i;
            chunks_a++;
            CHECK(v->n_tokens >= prev_a, "A's token counts go backwards");
            prev_a = v->n_tokens;
        } else if (v->request_id == rb) {
            first_b = first_b == SIZE_MAX ? i : first_b;
            last_b = i;
            chunks_b++;
            CHECK(v->n_tokens >= prev_b, "B's token counts go backwards");
            prev_b = v->n_tokens;
        }
    }
    CHECK(chunks_a > 1 && chunks_b > 1, "chunks: A %zu, B %zu", chunks_a, chunks_b);
    CHECK(first_b < last_a && first_a < last_b,
          "no interleaving: A chunks at [%zu, %zu], B at [%zu, %zu]", first_a, last_a, first_b, last_b);
    CHECK(count_finished(c, ra) == 1 && count_finished(c, rb) == 1, "Finished signals: A %zu, B %zu",
          count_finished(c, ra), count_finished(c, rb));
    /* Finished is the last signal of each request. */
    for (size_t i = 0; i < c->n_evs; i++)
        if (!c->evs[i].finished && (c->evs[i].request_id == ra || c->evs[i].request_id == rb))
            CHECK(i < (size_t)((c->evs[i].request_id == ra ? fa : fb) - c->evs), "a chunk after Finished");
    printf("concurrent: A %zu chunks, B %zu chunks, interleaved\n", chunks_a, chunks_b);
out:
    free(a);
    free(b);
    conn_free(c);
}

static uint32_t max_tokens_seen(conn *c, uint64_t id, size_t upto)
{
    uint32_t n = 0;
    for (size_t i = 0; i < upto && i < c->n_evs; i++)
        if (!c->evs[i].finished && c->evs[i].request_id == id && c->evs[i].n_tokens > n)
            n = c->evs[i].n_tokens;
    return n;
}

static bool a_has_5(conn *c, void *arg)
{
    return max_tokens_seen(c, *(uint64_t *)arg, SIZE_MAX) >= 5;
}

static size_t first_chunk_index(conn *c, uint64_t id)
{
    for (size_t i = 0; i < c->n_evs; i++)
        if (!c->evs[i].finished && c->evs[i].request_id == id)
            return i;
    return SIZE_MAX;
}

/* A long prompt is prefilled in chunks between the decode steps of an answer
 * already streaming: that answer keeps going while the prompt is read. */
static void scenario_prefill(void)
{
    conn *c = conn_new();
    char *a = create_session(c, NULL, 0), *b = create_session(c, NULL, 0), err[256];
    char *prompt = malloc(2001);

    CHECK(a && b && prompt, "setup");
    if (!a || !b || !prompt)
        goto out;
    for (int i = 0; i < 2000; i++)
        prompt[i] = i % 2 ? ' ' : 'a';
    prompt[2000] = 0;
    uint64_t ra = send_text(c, a, "Stream while the other one reads.", 100000, true, NULL, 0);
    CHECK(ra && pump(c, 30000, a_has_5, &ra), "A does not stream");
    uint64_t rb = send_text(c, b, prompt, 4, true, err, sizeof(err));
    CHECK(rb != 0, "B refused: %s", err);
    pump(c, 0, NULL, NULL);
    uint32_t a_at_send = max_tokens_seen(c, ra, SIZE_MAX);
    CHECK(pump(c, 60000, is_finished, &rb), "B did not finish");
    size_t ib = first_chunk_index(c, rb);
    uint32_t a_at_b = max_tokens_seen(c, ra, ib);
    const ev *fb = find_finished(c, rb);
    CHECK(fb && fb->fin->result_case == HYMBA__V1__FINISHED__RESULT_DONE && fb->fin->done->prompt_tokens > 3 * 256,
          "B: %s, %u prompt tokens", result_name(fb), fb && fb->fin->done ? fb->fin->done->prompt_tokens : 0);
    CHECK(ib != SIZE_MAX && a_at_b >= a_at_send + 3,
          "A generated %u tokens while B's %u-token prompt was prefilled (expected >= 3)", a_at_b - a_at_send,
          fb && fb->fin->done ? fb->fin->done->prompt_tokens : 0);
    printf("prefill: A generated %u tokens while B's %u-token prompt was read (%.0f ms)\n", a_at_b - a_at_send,
           fb && fb->fin->done ? fb->fin->done->prompt_tokens : 0,
           fb && fb->fin->done ? fb->fin->done->prefill_usec / 1e3 : 0.0);
    CHECK(cancel(c, ra, err, sizeof(err)) >= 0, "Cancel A: %s", err);
    pump(c, 10000, is_finished, &ra);
out:
    free(prompt);
    free(a);
    free(b);
    conn_free(c);
}

static void scenario_cancel(void)
{
    conn *c = conn_new();
    char *s = create_session(c, NULL, 0), err[256];
    Hymba__V1__GetSessionReply *gs;

    CHECK(s != NULL, "no session");
    if (!s)
        goto out;
    uint64_t id = send_text(c, s, "Count to a million.", 100000, true, NULL, 0);
    CHECK(id != 0, "Send refused");
    CHECK(pump(c, 30000, has_chunk, &id), "no chunk within 30 s");
    CHECK(cancel(c, id, err, sizeof(err)) >= 0, "Cancel failed: %s", err);
    CHECK(pump(c, 10000, is_finished, &id), "no Finished within 10 s of Cancel");
    const ev *f = find_finished(c, id);
    CHECK(f && f->fin->result_case == HYMBA__V1__FINISHED__RESULT_CANCELLED, "result %s", result_name(f));
    if (f && f->fin->cancelled) {
        CHECK(f->fin->cancelled->reason == HYMBA__V1__CANCEL_REASON__CANCEL_REASON_REQUESTED, "reason %d",
              f->fin->cancelled->reason);
        printf("cancel: cancelled after %u tokens\n", f->fin->cancelled->completion_tokens);
    }
    pump(c, 300, NULL, NULL);
    CHECK(count_finished(c, id) == 1, "%zu Finished signals", count_finished(c, id));
    CHECK(cancel(c, id, err, sizeof(err)) < 0 && !strcmp(err, ERR("NoSuchRequest")),
          "Cancel of a finished request: %s", err[0] ? err : "accepted");

    /* The session goes on after a cancel. */
    uint64_t id2 = send_text(c, s, "Short, please.", 8, true, NULL, 0);
    CHECK(id2 != 0, "Send after cancel refused");
    pump(c, 30000, is_finished, &id2);
    f = find_finished(c, id2);
    CHECK(f && f->fin->result_case == HYMBA__V1__FINISHED__RESULT_DONE, "second request: %s", result_name(f));
    gs = get_session(c, s, err, sizeof(err));
    CHECK(gs != NULL, "GetSession: %s", err);
    if (gs) {
        /* system prompt + two turns */
        CHECK(gs->n_messages == 5, "%zu messages in the history, expected 5", gs->n_messages);
        CHECK(gs->session->n_messages == 4 && !gs->session->busy, "info: %u messages, busy %d",
              gs->session->n_messages, gs->session->busy);
        hymba__v1__get_session_reply__free_unpacked(gs, NULL);
    }

    /* Deleting a session that is answering cancels the answer first. */
    uint64_t id3 = send_text(c, s, "Talk until deleted.", 100000, true, NULL, 0);
    CHECK(id3 && pump(c, 30000, has_chunk, &id3), "no chunk before the delete");
    Hymba__V1__DeleteSessionRequest dreq = HYMBA__V1__DELETE_SESSION_REQUEST__INIT;
    dreq.session_id = s;
    Hymba__V1__DeleteSessionReply *drep = (Hymba__V1__DeleteSessionReply *)call(
        c, SES, "DeleteSession", &dreq.base, &hymba__v1__delete_session_reply__descriptor, err, sizeof(err));
    CHECK(drep && drep->cancelled_requests == 1, "DeleteSession of a busy session: %s", drep ? "no cancel" : err);
    if (drep)
        hymba__v1__delete_session_reply__free_unpacked(drep, NULL);
    CHECK(pump(c, 10000, is_finished, &id3), "no Finished after the delete");
    f = find_finished(c, id3);
    CHECK(f && f->fin->result_case == HYMBA__V1__FINISHED__RESULT_CANCELLED &&
          f->fin->cancelled->reason == HYMBA__V1__CANCEL_REASON__CANCEL_REASON_SESSION_DELETED,
          "answer of a deleted session: %s", result_name(f));
    gs = get_session(c, s, err, sizeof(err));
    CHECK(!gs && !strcmp(err, ERR("NoSuchSession")), "GetSession after delete: %s", gs ? "found" : err);
out:
    free(s);
    conn_free(c);
}

/* A client killed mid-answer: the daemon cancels within a step and stays up. */
static void scenario_disconnect(void)
{
    int pipefd[2];
    pid_t pid;

    if (pipe(pipefd) < 0)
        exit(1);
    pid = fork();
    if (pid == 0) {
        alarm(120);                  /* never outlive the test */
        conn *c = conn_new();
        char *s = create_session(c, NULL, 0);
        uint64_t id = s ? send_text(c, s, "Never stop.", 100000, true, NULL, 0) : 0;
        if (!id || !pump(c, 30000, has_chunk, &id))
            _exit(1);                /* the parent's read sees EOF */
        (void)!write(pipefd[1], "x", 1);
        pause();                     /* killed here */
        _exit(0);
    }
    close(pipefd[1]);
    char x;
    CHECK(read(pipefd[0], &x, 1) == 1, "the child never saw a chunk");
    close(pipefd[0]);
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);

    conn *c = conn_new();
    int64_t t0 = now_ms();
    unsigned active = 1;
    while (now_ms() - t0 < 5000) {
        Hymba__V1__StatusReply *st = status(c);
        CHECK(st != NULL, "Status failed: the daemon is down?");
        if (!st)
            break;
        active = st->active_requests + st->queued_requests;
        hymba__v1__status_reply__free_unpacked(st, NULL);
        if (active == 0)
            break;
        usleep(20000);
    }
    CHECK(active == 0, "the dead client's request still runs %lld ms later", (long long)(now_ms() - t0));
    printf("disconnect: request gone %lld ms after the kill\n", (long long)(now_ms() - t0));
    conn_free(c);
}

/* Another UID: everything of ours is "no such session"; run through setpriv. */
static void scenario_isolation(const char *self)
{
    conn *c = conn_new();
    char *s = create_session(c, NULL, 0), cmd[4096], err[256];
    uint64_t id;
    int rc;

    if (getuid() != 0) {
        printf("SKIP: the isolation test needs root to run a client as another user\n");
        exit(HY_TEST_SKIP);
    }
    CHECK(s != NULL, "no session");
    if (!s)
        goto out;
    id = send_text(c, s, "Keep going.", 100000, true, NULL, 0);
    CHECK(id && pump(c, 30000, has_chunk, &id), "no running request to probe");
    snprintf(cmd, sizeof(cmd), "setpriv --reuid=65534 --regid=65534 --clear-groups %s '%s' probe %s %llu",
             self, address, s, (unsigned long long)id);
    rc = system(cmd);
    CHECK(WIFEXITED(rc) && WEXITSTATUS(rc) == 0, "the probe as uid 65534 failed (status %d)", rc);

    /* Our request was not disturbed; root lists every user's sessions. */
    CHECK(find_finished(c, id) == NULL || count_finished(c, id) == 0, "the other user ended our request");
    CHECK(cancel(c, id, err, sizeof(err)) >= 0, "our own Cancel failed: %s", err);
    pump(c, 10000, is_finished, &id);
    Hymba__V1__ListSessionsRequest lreq = HYMBA__V1__LIST_SESSIONS_REQUEST__INIT;
    lreq.all_users = true;
    Hymba__V1__ListSessionsReply *l = (Hymba__V1__ListSessionsReply *)call(
        c, MGR, "ListSessions", &lreq.base, &hymba__v1__list_sessions_reply__descriptor, err, sizeof(err));
    CHECK(l != NULL, "root ListSessions(all_users): %s", err);
    if (l) {
        bool mine = false, nobody = false;
        for (size_t i = 0; i < l->n_sessions; i++) {
            mine |= !strcmp(l->sessions[i]->id, s);
            nobody |= l->sessions[i]->owner_uid == 65534;
        }
        CHECK(mine && nobody, "root's list: own %d, uid 65534's %d", mine, nobody);
        hymba__v1__list_sessions_reply__free_unpacked(l, NULL);
    }
out:
    free(s);
    conn_free(c);
}

static void scenario_probe(const char *victim, uint64_t req_id)
{
    conn *c = conn_new();
    char err[256];
    Hymba__V1__GetSessionReply *gs;

    CHECK(getuid() == 65534, "probe runs as uid %u", getuid());
    gs = get_session(c, victim, err, sizeof(err));
    CHECK(!gs && !strcmp(err, ERR("NoSuchSession")), "GetSession of root's session: %s", gs ? "allowed" : err);
    CHECK(send_text(c, victim, "hijack", 4, false, err, sizeof(err)) == 0 && !strcmp(err, ERR("NoSuchSession")),
          "Send into root's session: %s", err[0] ? err : "accepted");
    CHECK(cancel(c, req_id, err, sizeof(err)) < 0 && !strcmp(err, ERR("NoSuchRequest")),
          "Cancel of root's request: %s", err[0] ? err : "accepted");
    Hymba__V1__DeleteSessionRequest dreq = HYMBA__V1__DELETE_SESSION_REQUEST__INIT;
    dreq.session_id = (char *)victim;
    CHECK(!call(c, SES, "DeleteSession", &dreq.base, &hymba__v1__delete_session_reply__descriptor, err, sizeof(err)) &&
          !strcmp(err, ERR("NoSuchSession")), "DeleteSession of root's session: %s", err);

    Hymba__V1__ListSessionsRequest lreq = HYMBA__V1__LIST_SESSIONS_REQUEST__INIT;
    lreq.all_users = true;
    CHECK(!call(c, MGR, "ListSessions", &lreq.base, &hymba__v1__list_sessions_reply__descriptor, err, sizeof(err)) &&
          !strcmp(err, ERR("AccessDenied")), "ListSessions(all_users) as a user: %s", err);

    char *mine = create_session(c, err, sizeof(err));
    CHECK(mine != NULL, "CreateSession as uid 65534: %s", err);
    lreq.all_users = false;
    Hymba__V1__ListSessionsReply *l = (Hymba__V1__ListSessionsReply *)call(
        c, MGR, "ListSessions", &lreq.base, &hymba__v1__list_sessions_reply__descriptor, err, sizeof(err));
    CHECK(l != NULL, "ListSessions: %s", err);
    if (l) {
        CHECK(l->n_sessions == 1 && mine && !strcmp(l->sessions[0]->id, mine),
              "uid 65534 sees %zu sessions (expected only its own)", l->n_sessions);
        hymba__v1__list_sessions_reply__free_unpacked(l, NULL);
    }
    free(mine);
    conn_free(c);
}

static void expect_error(conn *c, const char *iface, const char *method, const void *buf, size_t len,
                         const char *want, const char *what)
{
    char err[256];
    int r = call_raw(c, iface, method, buf, len, NULL, NULL, err, sizeof(err));
    CHECK(r < 0 && !strcmp(err, want), "%s: got %s, expected %s", what, r < 0 ? err : "success", want);
}

static void scenario_badpayload(void)
{
    conn *c = conn_new();
    char err[256];
    uint8_t buf[512];
    size_t n;

    /* Not protobuf at all. */
    static const uint8_t garbage[] = { 0xff, 0xff, 0xff, 0xff, 0xff, 0x0f, 0x12, 0x80 };
    expect_error(c, MGR, "CreateSession", garbage, sizeof(garbage), ERR("InvalidPayload"), "garbage bytes");
    /* A truncated length-delimited field. */
    static const uint8_t truncated[] = { 0x0a, 0x40, 'a', 'b' };
    expect_error(c, SES, "Send", truncated, sizeof(truncated), ERR("InvalidPayload"), "truncated field");
    /* Field 1 (string session_id) sent as a varint: the wrong wire type. */
    static const uint8_t wrong_type[] = { 0x08, 0x05 };
    expect_error(c, SES, "GetSession", wrong_type, sizeof(wrong_type), ERR("InvalidPayload"), "wrong wire type");

    /* A valid CreateSessionRequest plus field 99 (varint). */
    Hymba__V1__CreateSessionRequest cs = HYMBA__V1__CREATE_SESSION_REQUEST__INIT;
    cs.system_prompt = "hi";
    n = hymba__v1__create_session_request__pack(&cs, buf);
    buf[n++] = 0x98; buf[n++] = 0x06; buf[n++] = 0x01;           /* tag 99, wire type 0, value 1 */
    expect_error(c, MGR, "CreateSession", buf, n, ERR("UnknownField"), "unknown top-level field");
    /* An unknown field inside the nested Sampling message: field 2 of
     * CreateSessionRequest holding { field 50: varint 7 }. */
    uint8_t nested[] = { 0x12, 0x03, 0x90, 0x03, 0x07 };
    expect_error(c, MGR, "CreateSession", nested, sizeof(nested), ERR("UnknownField"), "unknown nested field");

    /* Oversized: a payload over max_payload_bytes. */
    Hymba__V1__StatusReply *st = status(c);
    CHECK(st && st->limits, "Status failed");
    if (st && st->limits) {
        size_t big = st->limits->max_payload_bytes + 1;
        uint8_t *p = calloc(1, big);
        expect_error(c, MGR, "Status", p, big, ERR("PayloadTooLarge"), "oversized payload");
        free(p);
    }
    if (st)
        hymba__v1__status_reply__free_unpacked(st, NULL);

    /* Wrong D-Bus signature: a string where ay is expected. */
    sd_bus_error e = SD_BUS_ERROR_NULL;
    int r = sd_bus_call_method(c->bus, BUS_NAME, PATH, MGR, "CreateSession", &e, NULL, "s", "hello");
    CHECK(r < 0 && sd_bus_error_has_name(&e, SD_BUS_ERROR_INVALID_ARGS), "string argument: %s", r < 0 ? e.name : "accepted");
    sd_bus_error_free(&e);

    /* Values out of range, invalid UTF-8. */
    Hymba__V1__Sampling sp = HYMBA__V1__SAMPLING__INIT;
    sp.top_p_opt_case = HYMBA__V1__SAMPLING__TOP_P_OPT_TOP_P;
    sp.top_p = 7.5f;
    cs.sampling = &sp;
    CHECK(!call(c, MGR, "CreateSession", &cs.base, &hymba__v1__create_session_reply__descriptor, err, sizeof(err)) &&
          !strcmp(err, ERR("InvalidArgument")), "top_p 7.5: %s", err);
    cs.sampling = NULL;
    cs.system_prompt = "bad \xc3\x28 utf-8";
    CHECK(!call(c, MGR, "CreateSession", &cs.base, &hymba__v1__create_session_reply__descriptor, err, sizeof(err)) &&
          (!strcmp(err, ERR("InvalidArgument")) || !strcmp(err, ERR("InvalidPayload"))), "invalid UTF-8: %s", err);
    /* Session ids that are not ids. */
    char *s = create_session(c, NULL, 0);
    CHECK(send_text(c, "../../etc/passwd", "x", 1, false, err, sizeof(err)) == 0 && !strcmp(err, ERR("NoSuchSession")),
          "odd session id: %s", err);
    CHECK(send_text(c, s, "", 1, false, err, sizeof(err)) == 0 && !strcmp(err, ERR("InvalidArgument")),
          "empty message: %s", err);
    free(s);

    /* Still up. */
    st = status(c);
    CHECK(st != NULL, "the daemon stopped answering after bad payloads");
    if (st)
        hymba__v1__status_reply__free_unpacked(st, NULL);
    conn_free(c);
}

/* Run against a daemon with max_sessions_per_user = 3, max_queued_per_user = 2,
 * max_message_bytes = 2048 and context_length = 256. */
static void scenario_limits(void)
{
    conn *c = conn_new();
    char *s[3] = { 0 }, err[256], *big;
    uint64_t a, b;

    for (int i = 0; i < 3; i++) {
        s[i] = create_session(c, err, sizeof(err));
        CHECK(s[i] != NULL, "session %d: %s", i, err);
    }
    if (!s[0] || !s[1] || !s[2])
        goto out;
    CHECK(!create_session(c, err, sizeof(err)) && !strcmp(err, ERR("TooManySessions")), "4th session: %s", err);

    big = malloc(4096);
    memset(big, 'a', 4095);
    big[4095] = 0;
    CHECK(send_text(c, s[0], big, 1, false, err, sizeof(err)) == 0 && !strcmp(err, ERR("MessageTooLarge")),
          "4095-byte message: %s", err);

    /* A prompt over the context length: error in the Finished signal. */
    big[1500] = 0;
    for (int i = 0; i < 1500; i += 2)
        big[i] = ' ';
    a = send_text(c, s[0], big, 1, false, err, sizeof(err));
    CHECK(a != 0, "1500-byte message refused: %s", err);
    pump(c, 30000, is_finished, &a);
    const ev *f = find_finished(c, a);
    CHECK(f && f->fin->result_case == HYMBA__V1__FINISHED__RESULT_ERROR &&
          f->fin->error->code == HYMBA__V1__ERROR_CODE__ERROR_CODE_CONTEXT_LENGTH,
          "prompt over the context: %s", result_name(f));
    if (f && f->fin->error)
        printf("limits: context error: %s\n", f->fin->error->message);
    free(big);

    /* Queue limit and busy session. */
    a = send_text(c, s[0], "go on", 100000, true, err, sizeof(err));
    b = send_text(c, s[1], "go on", 100000, true, err, sizeof(err));
    CHECK(a && b, "two requests refused: %s", err);
    CHECK(send_text(c, s[0], "more", 1, false, err, sizeof(err)) == 0 && !strcmp(err, ERR("SessionBusy")),
          "second request in a busy session: %s", err);
    CHECK(send_text(c, s[2], "third", 1, false, err, sizeof(err)) == 0 && !strcmp(err, ERR("TooManyRequests")),
          "third request of the user: %s", err);

    /* Generation stops at the context length. */
    pump(c, 60000, is_finished, &a);
    pump(c, 60000, is_finished, &b);
    f = find_finished(c, a);
    CHECK(f && f->fin->result_case == HYMBA__V1__FINISHED__RESULT_DONE &&
          f->fin->done->stop_reason == HYMBA__V1__STOP_REASON__STOP_REASON_CONTEXT_FULL &&
          f->fin->done->context_tokens == 256, "long answer: %s, stop %d, context %lld", result_name(f),
          f && f->fin->done ? (int)f->fin->done->stop_reason : -1,
          f && f->fin->done ? (long long)f->fin->done->context_tokens : -1LL);
    CHECK(send_text(c, s[0], "more", 1, false, err, sizeof(err)) == 0 && !strcmp(err, ERR("ContextFull")),
          "Send into a full session: %s", err);

    /* Deleting frees a slot. */
    Hymba__V1__DeleteSessionRequest d = HYMBA__V1__DELETE_SESSION_REQUEST__INIT;
    d.session_id = s[0];
    ProtobufCMessage *dr = call(c, SES, "DeleteSession", &d.base, &hymba__v1__delete_session_reply__descriptor, err, sizeof(err));
    CHECK(dr != NULL, "DeleteSession: %s", err);
    if (dr)
        protobuf_c_message_free_unpacked(dr, NULL);
    char *again = create_session(c, err, sizeof(err));
    CHECK(again != NULL, "CreateSession after a delete: %s", err);
    free(again);
out:
    for (int i = 0; i < 3; i++)
        free(s[i]);
    conn_free(c);
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: %s ADDRESS SCENARIO [ARGS]\n", argv[0]);
        return 2;
    }
    address = argv[1];
    alarm(300);                      /* a hung daemon fails the test instead of hanging it */
    if (!strcmp(argv[2], "concurrent"))
        scenario_concurrent();
    else if (!strcmp(argv[2], "prefill"))
        scenario_prefill();
    else if (!strcmp(argv[2], "cancel"))
        scenario_cancel();
    else if (!strcmp(argv[2], "disconnect"))
        scenario_disconnect();
    else if (!strcmp(argv[2], "isolation")) {
        char *self = realpath("/proc/self/exe", NULL);
        scenario_isolation(self ? self : argv[0]);
        free(self);
    }
    else if (!strcmp(argv[2], "probe") && argc == 5)
        scenario_probe(argv[3], strtoull(argv[4], NULL, 10));
    else if (!strcmp(argv[2], "badpayload"))
        scenario_badpayload();
    else if (!strcmp(argv[2], "limits"))
        scenario_limits();
    else {
        fprintf(stderr, "unknown scenario %s\n", argv[2]);
        return 2;
    }
    return hy_test_done(argv[2]);
}
