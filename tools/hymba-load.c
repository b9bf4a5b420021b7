/* hymba-load.c: load generator for hymbad: N concurrent clients x M requests; requests/s, per-token D-Bus overhead, daemon RSS. */
/*
 * Every client is a thread with its own bus connection and its own session.
 * A request is timed from Send to its Finished signal on the client side;
 * the daemon's Done tells how much of that the engine spent (queue, prefill,
 * decode).  What is left, per generated token, is the cost of the scheduler
 * hand-off and of the Chunk signals through the bus: the per-token overhead.
 * The daemon's RSS (from /proc/PID/status, PID from the bus) is read before
 * the first round and after each round: it must not grow round over round.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <systemd/sd-bus.h>
#include "proto/hymba.pb-c.h"

#define BUS_NAME "org.hymba.Assistant1"
#define PATH "/org/hymba/Assistant1"
#define MGR "org.hymba.Assistant1.Manager"
#define SES "org.hymba.Assistant1.Session"

typedef struct opts {
    int bus_kind;                    /* 0 system, 1 user, 2 address */
    const char *address;
    int clients, requests, tokens, rounds;
    const char *prompt;
} opts;

/* One request's figures. */
typedef struct sample {
    double wall_us;                  /* Send -> Finished at the client */
    double first_us;                 /* Send -> first Chunk */
    uint32_t tokens, chunks;
    uint64_t queue_us, prefill_us, decode_us;
    bool ok;
} sample;

typedef struct client {
    const opts *o;
    int index;
    sample *samples;                 /* [requests] */
    char err[256];
    /* streaming state of the request in flight */
    uint64_t request_id;
    double t_send;
    sample *cur;
    bool finished;
} client;

static double now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}

static int bus_open(const opts *o, sd_bus **out)
{
    sd_bus *b = NULL;
    int r;

    if (o->bus_kind == 0)
        return sd_bus_open_system(out);
    if (o->bus_kind == 1)
        return sd_bus_open_user(out);
    r = sd_bus_new(&b);
    if (r >= 0)
        r = sd_bus_set_address(b, o->address);
    if (r >= 0)
        r = sd_bus_set_bus_client(b, 1);
    if (r >= 0)
        r = sd_bus_start(b);
    if (r < 0) {
        sd_bus_unref(b);
        return r;
    }
    *out = b;
    return 0;
}

/* Pack msg, call method, unpack the reply as d (NULL on error, message in err). */
static ProtobufCMessage *call(sd_bus *bus, const char *iface, const char *method, const ProtobufCMessage *msg,
                              const ProtobufCMessageDescriptor *d, char *err, size_t err_len)
{
    sd_bus_message *m = NULL, *rep = NULL;
    sd_bus_error e = SD_BUS_ERROR_NULL;
    size_t n = protobuf_c_message_get_packed_size(msg);
    uint8_t *buf = malloc(n ? n : 1);
    ProtobufCMessage *out = NULL;
    const void *data;
    size_t size;
    int r;

    protobuf_c_message_pack(msg, buf);
    r = sd_bus_message_new_method_call(bus, &m, BUS_NAME, PATH, iface, method);
    if (r >= 0)
        r = sd_bus_message_append_array(m, 'y', buf, n);
    if (r >= 0)
        r = sd_bus_call(bus, m, 0, &e, &rep);
    if (r >= 0)
        r = sd_bus_message_read_array(rep, 'y', &data, &size);
    if (r >= 0)
        out = protobuf_c_message_unpack(d, NULL, size, data);
    if (!out)
        snprintf(err, err_len, "%s: %s", method, e.message ? e.message : strerror(r < 0 ? -r : EBADMSG));
    sd_bus_error_free(&e);
    sd_bus_message_unref(m);
    sd_bus_message_unref(rep);
    free(buf);
    return out;
}

static int on_signal(sd_bus_message *m, void *userdata, sd_bus_error *e)
{
    client *c = userdata;
    const void *data;
    size_t size;
    (void)e;

    if (!c->cur || sd_bus_message_read_array(m, 'y', &data, &size) < 0)
        return 0;
    if (sd_bus_message_is_signal(m, SES, "Chunk")) {
        Hymba__V1__Chunk *ch = hymba__v1__chunk__unpack(NULL, size, data);
        if (ch && ch->request_id == c->request_id) {
            if (c->cur->chunks++ == 0)
                c->cur->first_us = now_us() - c->t_send;
        }
        if (ch)
            hymba__v1__chunk__free_unpacked(ch, NULL);
    } else if (sd_bus_message_is_signal(m, SES, "Finished")) {
        Hymba__V1__Finished *f = hymba__v1__finished__unpack(NULL, size, data);
        if (f && f->request_id == c->request_id) {
            c->cur->wall_us = now_us() - c->t_send;
            if (f->result_case == HYMBA__V1__FINISHED__RESULT_DONE) {
                c->cur->ok = true;
                c->cur->tokens = f->done->completion_tokens;
                c->cur->queue_us = f->done->queue_usec;
                c->cur->prefill_us = f->done->prefill_usec;
                c->cur->decode_us = f->done->decode_usec;
            } else if (f->result_case == HYMBA__V1__FINISHED__RESULT_ERROR) {
                snprintf(c->err, sizeof(c->err), "request failed: %s", f->error->message);
            }
            c->finished = true;
        }
        if (f)
            hymba__v1__finished__free_unpacked(f, NULL);
    }
    return 0;
}

static void *client_main(void *arg)
{
    client *c = arg;
    const opts *o = c->o;
    sd_bus *bus = NULL;
    sd_bus_slot *slot = NULL;
    Hymba__V1__CreateSessionRequest creq = HYMBA__V1__CREATE_SESSION_REQUEST__INIT;
    Hymba__V1__Sampling sp = HYMBA__V1__SAMPLING__INIT;
    Hymba__V1__CreateSessionReply *crep = NULL;
    char *sid = NULL;
    int r;

    r = bus_open(o, &bus);
    if (r < 0) {
        snprintf(c->err, sizeof(c->err), "cannot connect: %s", strerror(-r));
        return NULL;
    }
    r = sd_bus_match_signal(bus, &slot, NULL, PATH, SES, NULL, on_signal, c);
    sp.temperature_opt_case = HYMBA__V1__SAMPLING__TEMPERATURE_OPT_TEMPERATURE;
    sp.temperature = 0;
    creq.sampling = &sp;
    crep = (Hymba__V1__CreateSessionReply *)call(bus, MGR, "CreateSession", &creq.base,
                                                 &hymba__v1__create_session_reply__descriptor, c->err, sizeof(c->err));
    if (r < 0 || !crep)
        goto out;
    sid = strdup(crep->session->id);

    for (int i = 0; i < o->requests; i++) {
        Hymba__V1__SendRequest sreq = HYMBA__V1__SEND_REQUEST__INIT;
        Hymba__V1__SendReply *srep;

        sreq.session_id = sid;
        sreq.text = (char *)o->prompt;
        sreq.max_new_tokens = (uint32_t)o->tokens;
        sreq.ignore_eos = true;
        c->cur = &c->samples[i];
        c->finished = false;
        c->request_id = 0;
        c->t_send = now_us();
        srep = (Hymba__V1__SendReply *)call(bus, SES, "Send", &sreq.base, &hymba__v1__send_reply__descriptor,
                                            c->err, sizeof(c->err));
        if (!srep)
            break;
        c->request_id = srep->request_id;
        hymba__v1__send_reply__free_unpacked(srep, NULL);
        while (!c->finished) {
            r = sd_bus_process(bus, NULL);
            if (r < 0) {
                snprintf(c->err, sizeof(c->err), "bus: %s", strerror(-r));
                goto out;
            }
            if (r == 0)
                sd_bus_wait(bus, UINT64_MAX);
        }
        if (!c->cur->ok)
            break;
    }
    Hymba__V1__DeleteSessionRequest dreq = HYMBA__V1__DELETE_SESSION_REQUEST__INIT;
    dreq.session_id = sid;
    char derr[256];
    ProtobufCMessage *drep = call(bus, SES, "DeleteSession", &dreq.base, &hymba__v1__delete_session_reply__descriptor,
                                  derr, sizeof(derr));
    if (drep)
        protobuf_c_message_free_unpacked(drep, NULL);
out:
    if (crep)
        hymba__v1__create_session_reply__free_unpacked(crep, NULL);
    free(sid);
    sd_bus_slot_unref(slot);
    sd_bus_flush_close_unref(bus);
    return NULL;
}

/* The daemon's resident memory in kB, from /proc (same machine). */
static long daemon_rss_kb(sd_bus *bus)
{
    uint32_t pid = 0;
    sd_bus_error e = SD_BUS_ERROR_NULL;
    sd_bus_message *rep = NULL;
    char path[64], line[256];
    long kb = -1;
    FILE *f;

    if (sd_bus_call_method(bus, "org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus",
                           "GetConnectionUnixProcessID", &e, &rep, "s", BUS_NAME) < 0 ||
        sd_bus_message_read(rep, "u", &pid) < 0) {
        sd_bus_error_free(&e);
        sd_bus_message_unref(rep);
        return -1;
    }
    sd_bus_message_unref(rep);
    snprintf(path, sizeof(path), "/proc/%u/status", pid);
    f = fopen(path, "re");
    if (!f)
        return -1;
    while (fgets(line, sizeof(line), f))
        if (sscanf(line, "VmRSS: %ld kB", &kb) == 1)
            break;
    fclose(f);
    return kb;
}

/* RSS once the daemon has settled: sessions are freed by its scheduler thread
 * a moment after DeleteSession returns, so read until two readings 100 ms
 * apart agree within 64 kB (at most 3 s). */
static long daemon_rss_settled_kb(sd_bus *bus)
{
    long prev = daemon_rss_kb(bus), cur = prev;

    for (int i = 0; i < 30; i++) {
        usleep(100000);
        cur = daemon_rss_kb(bus);
        if (cur < 0 || labs(cur - prev) <= 64)
            break;
        prev = cur;
    }
    return cur;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static int run_round(const opts *o, int round)
{
    client *cl = calloc((size_t)o->clients, sizeof(*cl));
    pthread_t *th = calloc((size_t)o->clients, sizeof(*th));
    size_t n_all = (size_t)o->clients * (size_t)o->requests, n_ok = 0;
    double *per_tok_wall = calloc(n_all, sizeof(double)), *first = calloc(n_all, sizeof(double));
    double t0, elapsed, sum_wall = 0, sum_engine = 0;
    uint64_t tokens = 0;
    int failed = 0;

    for (int i = 0; i < o->clients; i++) {
        cl[i].o = o;
        cl[i].index = i;
        cl[i].samples = calloc((size_t)o->requests, sizeof(sample));
    }
    t0 = now_us();
    for (int i = 0; i < o->clients; i++)
        pthread_create(&th[i], NULL, client_main, &cl[i]);
    for (int i = 0; i < o->clients; i++)
        pthread_join(th[i], NULL);
    elapsed = now_us() - t0;

    for (int i = 0; i < o->clients; i++) {
        if (cl[i].err[0]) {
            fprintf(stderr, "client %d: %s\n", i, cl[i].err);
            failed = 1;
        }
        for (int j = 0; j < o->requests; j++) {
            const sample *s = &cl[i].samples[j];
            if (!s->ok || !s->tokens)
                continue;
            double gen = s->wall_us - (double)s->queue_us - (double)s->prefill_us;
            per_tok_wall[n_ok] = gen / s->tokens;
            first[n_ok] = s->first_us;
            sum_wall += gen;
            sum_engine += (double)s->decode_us;
            tokens += s->tokens;
            n_ok++;
        }
        free(cl[i].samples);
    }
    if (n_ok) {
        qsort(per_tok_wall, n_ok, sizeof(double), cmp_double);
        qsort(first, n_ok, sizeof(double), cmp_double);
        printf("round %d: %zu/%zu requests ok in %.2f s: %.1f requests/s, %.0f tokens/s\n", round, n_ok, n_all,
               elapsed / 1e6, n_ok / (elapsed / 1e6), tokens / (elapsed / 1e6));
        printf("  per token, after the prompt: client wall %.1f us (p50 %.1f, p90 %.1f), engine decode %.1f us "
               "-> D-Bus + scheduling overhead %.1f us/token\n",
               sum_wall / tokens, per_tok_wall[n_ok / 2], per_tok_wall[n_ok * 9 / 10], sum_engine / tokens,
               (sum_wall - sum_engine) / tokens);
        printf("  first chunk after Send: p50 %.0f us, p90 %.0f us\n", first[n_ok / 2], first[n_ok * 9 / 10]);
    } else {
        printf("round %d: no request finished\n", round);
        failed = 1;
    }
    free(per_tok_wall);
    free(first);
    free(cl);
    free(th);
    return failed;
}

static void help(void)
{
    printf("Usage: hymba-load [--system|--user|--bus-address ADDR] [OPTIONS]\n"
           "\n"
           "Load generator for hymbad: N concurrent clients (threads, one bus connection\n"
           "and one session each) send M requests each, one after the other.\n"
           "\n"
           "  -c --clients N     concurrent clients (default 4)\n"
           "  -n --requests M    requests per client (default 10)\n"
           "  -t --tokens K      tokens per answer (default 64; EOS ignored so every\n"
           "                     answer has K tokens)\n"
           "  -r --rounds R      repeat the run R times, RSS after each (default 2)\n"
           "  -p --prompt TEXT   the user message (default a short question)\n"
           "\n"
           "Reports requests/s, tokens/s, per-token wall time at the client against the\n"
           "engine's decode time from the Done signal (the difference is the D-Bus and\n"
           "scheduling overhead), and the daemon's RSS before and after each round.\n"
           "The daemon's per-user limits must allow N sessions and N queued requests.\n");
}

int main(int argc, char **argv)
{
    static const struct option options[] = {
        { "system", no_argument, NULL, 'S' },
        { "user", no_argument, NULL, 'U' },
        { "bus-address", required_argument, NULL, 'A' },
        { "clients", required_argument, NULL, 'c' },
        { "requests", required_argument, NULL, 'n' },
        { "tokens", required_argument, NULL, 't' },
        { "rounds", required_argument, NULL, 'r' },
        { "prompt", required_argument, NULL, 'p' },
        { "help", no_argument, NULL, 'h' },
        {}
    };
    opts o = { .clients = 4, .requests = 10, .tokens = 64, .rounds = 2,
               .prompt = "What is the capital of France? Answer in one long sentence." };
    sd_bus *bus = NULL;
    int opt, failed = 0;
    long rss0, rss;

    while ((opt = getopt_long(argc, argv, "c:n:t:r:p:h", options, NULL)) >= 0) {
        switch (opt) {
        case 'S': o.bus_kind = 0; break;
        case 'U': o.bus_kind = 1; break;
        case 'A': o.bus_kind = 2; o.address = optarg; break;
        case 'c': o.clients = atoi(optarg); break;
        case 'n': o.requests = atoi(optarg); break;
        case 't': o.tokens = atoi(optarg); break;
        case 'r': o.rounds = atoi(optarg); break;
        case 'p': o.prompt = optarg; break;
        case 'h': help(); return 0;
        default: return 2;
        }
    }
    if (o.clients < 1 || o.requests < 1 || o.tokens < 1 || o.rounds < 1) {
        fprintf(stderr, "hymba-load: --clients, --requests, --tokens and --rounds must be >= 1\n");
        return 2;
    }
    if (bus_open(&o, &bus) < 0) {
        fprintf(stderr, "hymba-load: cannot connect to the bus\n");
        return 3;
    }
    rss0 = daemon_rss_settled_kb(bus);
    printf("hymba-load: %d clients x %d requests x %d tokens, %d round(s); daemon RSS before: %ld kB\n",
           o.clients, o.requests, o.tokens, o.rounds, rss0);
    for (int round = 1; round <= o.rounds; round++) {
        failed |= run_round(&o, round);
        rss = daemon_rss_settled_kb(bus);
        printf("  daemon RSS after round %d: %ld kB (%+ld kB since the start)\n", round, rss, rss - rss0);
    }
    sd_bus_flush_close_unref(bus);
    return failed ? 4 : 0;
}
