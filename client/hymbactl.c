/* hymbactl.c: the command-line client of hymbad: chat, ask, sessions, show, rm, status. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <json-c/json.h>
#include "client/ctl.h"
#include "client/term.h"
#include "config.h"

#define PROTOCOL_VERSION 1

static void help_main(void)
{
    printf("Usage: hymbactl [--system|--user|--bus-address ADDR] [--json] COMMAND [ARGS]\n"
           "\n"
           "Talk to hymbad, the hymba assistant daemon (D-Bus: " CTL_BUS_NAME ").\n"
           "\n"
           "Commands:\n"
           "  chat [SESSION]              interactive chat; tokens print as they stream.\n"
           "                              Ctrl-C cancels the answer, Ctrl-D leaves\n"
           "  ask [--session ID] PROMPT   one question, the answer on stdout (PROMPT '-':\n"
           "                              read stdin); without --session a new session\n"
           "                              is created and its id printed on stderr\n"
           "  sessions [--all]            list your sessions (--all: every user's, root only)\n"
           "  show ID                     a session's settings and messages\n"
           "  rm ID...                    delete sessions\n"
           "  status                      model, backend, memory, sessions, queue\n"
           "  regenerate ID               a new answer to the last message (from its snapshot)\n"
           "  rewind ID TURN              back to answer TURN (0 = first) and answer it again\n"
           "  export ID > FILE            the session's checkpoint to stdout\n"
           "  import FILE                 a new session from an exported checkpoint\n"
           "\n"
           "Options:\n"
           "  --system             use the system bus (the default)\n"
           "  --user               use the session bus (hymbad --user)\n"
           "  --bus-address ADDR   use the bus at ADDR\n"
           "  --json               machine-readable output: one JSON document on stdout\n"
           "                       (errors stay on stderr; see the exit status)\n"
           "  -h --help            this help; COMMAND --help for a command's options\n"
           "  --version            the version and the protocol version\n"
           "\n"
           "Exit status: 0 success, 2 usage error, 3 daemon unreachable (not running,\n"
           "or no bus), 4 the request failed (refused, cancelled, or an error).\n");
}

static int usage_error(const char *fmt, const char *arg)
{
    fprintf(stderr, "hymbactl: ");
    fprintf(stderr, fmt, arg);
    fprintf(stderr, "\nTry 'hymbactl --help'.\n");
    return CTL_EXIT_USAGE;
}

static void json_print(json_object *o)
{
    puts(json_object_to_json_string_ext(o, JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_NOSLASHESCAPE));
    json_object_put(o);
}

static const char *role_name(Hymba__V1__Role r)
{
    switch (r) {
    case HYMBA__V1__ROLE__ROLE_SYSTEM: return "system";
    case HYMBA__V1__ROLE__ROLE_USER: return "user";
    case HYMBA__V1__ROLE__ROLE_ASSISTANT: return "assistant";
    default: return "unknown";
    }
}

static const char *enum_name(const ProtobufCEnumDescriptor *d, int v)
{
    const ProtobufCEnumValue *e = protobuf_c_enum_descriptor_get_value(d, v);
    return e ? e->name : "unknown";
}

static void fmt_time(int64_t usec, char *buf, size_t n)
{
    time_t t = (time_t)(usec / 1000000);
    struct tm tm;
    localtime_r(&t, &tm);
    strftime(buf, n, "%Y-%m-%d %H:%M:%S", &tm);
}

static json_object *session_json(const Hymba__V1__SessionInfo *s)
{
    json_object *o = json_object_new_object(), *sp = json_object_new_object();

    json_object_object_add(o, "id", json_object_new_string(s->id));
    json_object_object_add(o, "owner_uid", json_object_new_int64(s->owner_uid));
    json_object_object_add(o, "created_usec", json_object_new_int64(s->created_usec));
    json_object_object_add(o, "updated_usec", json_object_new_int64(s->updated_usec));
    json_object_object_add(o, "messages", json_object_new_int64(s->n_messages));
    json_object_object_add(o, "tokens", json_object_new_int64(s->n_tokens));
    json_object_object_add(o, "busy", json_object_new_boolean(s->busy));
    json_object_object_add(o, "title", json_object_new_string(s->title));
    json_object_object_add(o, "system_prompt", json_object_new_string(s->system_prompt));
    if (s->sampling) {
        json_object_object_add(sp, "temperature", json_object_new_double(s->sampling->temperature));
        json_object_object_add(sp, "top_k", json_object_new_int(s->sampling->top_k));
        json_object_object_add(sp, "top_p", json_object_new_double(s->sampling->top_p));
        json_object_object_add(sp, "min_p", json_object_new_double(s->sampling->min_p));
        json_object_object_add(sp, "repeat_penalty", json_object_new_double(s->sampling->repeat_penalty));
        json_object_object_add(sp, "repeat_last_n", json_object_new_int(s->sampling->repeat_last_n));
        json_object_object_add(sp, "seed", json_object_new_uint64(s->sampling->seed));
    }
    json_object_object_add(o, "sampling", sp);
    return o;
}

static json_object *finished_json(const ctl_answer *a)
{
    json_object *o = json_object_new_object();
    const Hymba__V1__Finished *f = a->finished;

    json_object_object_add(o, "request_id", json_object_new_uint64(a->request_id));
    json_object_object_add(o, "text", json_object_new_string_len(a->text ? a->text : "", (int)a->len));
    if (!f) {
        json_object_object_add(o, "result", json_object_new_string("daemon-gone"));
        return o;
    }
    json_object_object_add(o, "session_id", json_object_new_string(f->session_id));
    if (f->result_case == HYMBA__V1__FINISHED__RESULT_DONE) {
        const Hymba__V1__Done *d = f->done;
        json_object_object_add(o, "result", json_object_new_string("done"));
        json_object_object_add(o, "stop_reason", json_object_new_string(enum_name(&hymba__v1__stop_reason__descriptor, d->stop_reason)));
        json_object_object_add(o, "prompt_tokens", json_object_new_int64(d->prompt_tokens));
        json_object_object_add(o, "completion_tokens", json_object_new_int64(d->completion_tokens));
        json_object_object_add(o, "queue_usec", json_object_new_uint64(d->queue_usec));
        json_object_object_add(o, "prefill_usec", json_object_new_uint64(d->prefill_usec));
        json_object_object_add(o, "decode_usec", json_object_new_uint64(d->decode_usec));
        json_object_object_add(o, "total_usec", json_object_new_uint64(d->total_usec));
        json_object_object_add(o, "context_tokens", json_object_new_int64(d->context_tokens));
    } else if (f->result_case == HYMBA__V1__FINISHED__RESULT_CANCELLED) {
        json_object_object_add(o, "result", json_object_new_string("cancelled"));
        json_object_object_add(o, "reason", json_object_new_string(enum_name(&hymba__v1__cancel_reason__descriptor, f->cancelled->reason)));
        json_object_object_add(o, "completion_tokens", json_object_new_int64(f->cancelled->completion_tokens));
    } else if (f->result_case == HYMBA__V1__FINISHED__RESULT_ERROR) {
        json_object_object_add(o, "result", json_object_new_string("error"));
        json_object_object_add(o, "error_code", json_object_new_string(enum_name(&hymba__v1__error_code__descriptor, f->error->code)));
        json_object_object_add(o, "message", json_object_new_string(f->error->message));
    }
    return o;
}

/* After a streamed answer: the final line, or the reason it did not finish. */
static void answer_report(const ctl_answer *a)
{
    const Hymba__V1__Finished *f = a->finished;

    if (!f)
        return;
    if (f->result_case == HYMBA__V1__FINISHED__RESULT_CANCELLED)
        fprintf(stderr, "\n[cancelled: %s]\n", enum_name(&hymba__v1__cancel_reason__descriptor, f->cancelled->reason));
    else if (f->result_case == HYMBA__V1__FINISHED__RESULT_ERROR)
        fprintf(stderr, "hymbactl: %s (%s)\n", f->error->message,
                enum_name(&hymba__v1__error_code__descriptor, f->error->code));
    else if (f->result_case == HYMBA__V1__FINISHED__RESULT_DONE && term_active()) {
        /* At a terminal only: what the turn cost (a pipe gets the answer alone). */
        const Hymba__V1__Done *d = f->done;
        double decode_s = (double)d->decode_usec / 1e6;
        printf("%s[%u prompt + %u new tokens, %.1f tokens/s, %lld in context]%s\n", term_on(TERM_DIM),
               d->prompt_tokens, d->completion_tokens, decode_s > 0 ? d->completion_tokens / decode_s : 0.0,
               (long long)d->context_tokens, term_off());
    }
}

/* ---- commands ---------------------------------------------------------------- */

typedef struct new_session_opts {
    const char *system_prompt;
    double temperature;              /* < 0: daemon default */
    int64_t seed;                    /* < 0: random */
} new_session_opts;

static int session_create(ctl *c, const new_session_opts *o, char **id_out)
{
    Hymba__V1__CreateSessionRequest req = HYMBA__V1__CREATE_SESSION_REQUEST__INIT;
    Hymba__V1__Sampling sp = HYMBA__V1__SAMPLING__INIT;
    Hymba__V1__CreateSessionReply *rep = NULL;
    int r;

    req.system_prompt = (char *)(o->system_prompt ? o->system_prompt : "");
    if (o->temperature >= 0) {
        sp.temperature_opt_case = HYMBA__V1__SAMPLING__TEMPERATURE_OPT_TEMPERATURE;
        sp.temperature = (float)o->temperature;
    }
    if (o->seed >= 0) {
        sp.seed_opt_case = HYMBA__V1__SAMPLING__SEED_OPT_SEED;
        sp.seed = (uint64_t)o->seed;
    }
    req.sampling = &sp;
    r = ctl_call(c, CTL_IFACE_MANAGER, "CreateSession", &req.base, &hymba__v1__create_session_reply__descriptor,
                 (ProtobufCMessage **)&rep);
    if (r)
        return r;
    *id_out = strdup(rep->session && rep->session->id ? rep->session->id : "");
    protobuf_c_message_free_unpacked(&rep->base, NULL);
    return *id_out ? CTL_EXIT_OK : CTL_EXIT_FAILED;
}

static char *read_all(FILE *f)
{
    size_t len = 0, cap = 4096;
    char *buf = malloc(cap);
    size_t n;

    if (!buf)
        return NULL;
    while ((n = fread(buf + len, 1, cap - len - 1, f)) > 0) {
        len += n;
        if (cap - len < 2) {
            char *b = realloc(buf, cap *= 2);
            if (!b) {
                free(buf);
                return NULL;
            }
            buf = b;
        }
    }
    buf[len] = 0;
    return buf;
}

static int parse_new_session_opt(int opt, new_session_opts *o)
{
    char *end;
    switch (opt) {
    case 'S':
        o->system_prompt = optarg;
        return 1;
    case 'T':
        o->temperature = strtod(optarg, &end);
        if (*end || o->temperature < 0)
            return -1;
        return 1;
    case 'E':
        o->seed = strtoll(optarg, &end, 10);
        if (*end || o->seed < 0)
            return -1;
        return 1;
    }
    return 0;
}

/* A command's own --help (or -h) argument. */
static bool is_help(const char *arg)
{
    return !strcmp(arg, "--help") || !strcmp(arg, "-h");
}

static int cmd_ask(ctl *c, int argc, char **argv)
{
    static const struct option options[] = {
        { "session", required_argument, NULL, 's' },
        { "max-tokens", required_argument, NULL, 'n' },
        { "help", no_argument, NULL, 'h' },
        { "system-prompt", required_argument, NULL, 'S' },
        { "temperature", required_argument, NULL, 'T' },
        { "seed", required_argument, NULL, 'E' },
        { "ignore-eos", no_argument, NULL, 'I' },
        {}
    };
    new_session_opts nso = { NULL, -1, -1 };
    const char *session = NULL;
    char *prompt = NULL, *created = NULL, *end;
    unsigned long max_tokens = 0;
    bool ignore_eos = false;
    ctl_answer ans;
    int opt, r;

    while ((opt = getopt_long(argc, argv, "+s:n:h", options, NULL)) >= 0) {
        if (parse_new_session_opt(opt, &nso) < 0)
            return usage_error("invalid value \"%s\"", optarg);
        switch (opt) {
        case 's': session = optarg; break;
        case 'n':
            max_tokens = strtoul(optarg, &end, 10);
            if (*end || max_tokens > UINT32_MAX)
                return usage_error("--max-tokens: not a number: \"%s\"", optarg);
            break;
        case 'h':
            printf("Usage: hymbactl ask [--session ID] [--max-tokens N] PROMPT|-\n"
                   "\n"
                   "Ask one question and print the answer as it streams.  PROMPT '-' reads\n"
                   "the prompt from stdin.  Without --session a new session is created and\n"
                   "its id printed on stderr (ask again with --session ID to continue).\n"
                   "\n"
                   "  -s --session ID        continue this session\n"
                   "  -n --max-tokens N      at most N tokens (0: the daemon's default)\n"
                   "     --system-prompt TXT a new session's system prompt\n"
                   "     --temperature T     a new session's temperature (0: greedy)\n"
                   "     --seed N            a new session's sampling seed\n"
                   "     --ignore-eos        generate all N tokens whatever the model says\n"
                   "                         (benchmarks, tests)\n"
                   "\n"
                   "Ctrl-C cancels the answer (a second Ctrl-C stops waiting for the daemon).\n"
                   "Exit 4 when the answer was cancelled or failed.\n");
            return CTL_EXIT_OK;
        case 'I': ignore_eos = true; break;
        case 'S': case 'T': case 'E': break;
        default: return CTL_EXIT_USAGE;
        }
    }
    if (optind != argc - 1)
        return usage_error("%s", "ask needs exactly one PROMPT argument ('-' for stdin)");
    prompt = strcmp(argv[optind], "-") ? strdup(argv[optind]) : read_all(stdin);
    if (!prompt)
        return CTL_EXIT_FAILED;
    ctl_catch_interrupt(c);
    r = ctl_connect(c);
    if (r)
        goto out;
    if (!session) {
        r = session_create(c, &nso, &created);
        if (r)
            goto out;
        session = created;
        fprintf(stderr, "session %s\n", session);
    }
    r = ctl_send(c, session, prompt, (uint32_t)max_tokens, ignore_eos, c->json, &ans);
    if (ans.request_id && c->json)   /* (a refused Send already printed its error) */
        json_print(finished_json(&ans));
    else if (ans.request_id) {
        if (ans.len && ans.text[ans.len - 1] != '\n')
            putchar('\n');
        answer_report(&ans);
    }
    ctl_answer_done(&ans);
out:
    free(prompt);
    free(created);
    return r;
}

/* Read one line from stdin while watching for Ctrl-C.  Returns 1 line, 0 EOF, -1 interrupted. */
static int read_line(ctl *c, char **line, size_t *cap)
{
    struct pollfd p[2] = { { .fd = STDIN_FILENO, .events = POLLIN }, { .fd = c->sigfd, .events = POLLIN } };

    if (poll(p, 2, -1) < 0)
        return -1;
    if (ctl_take_interrupt(c))
        return -1;
    return getline(line, cap, stdin) >= 0 ? 1 : 0;
}

static int cmd_chat(ctl *c, int argc, char **argv)
{
    static const struct option options[] = {
        { "max-tokens", required_argument, NULL, 'n' },
        { "help", no_argument, NULL, 'h' },
        { "system-prompt", required_argument, NULL, 'S' },
        { "temperature", required_argument, NULL, 'T' },
        { "seed", required_argument, NULL, 'E' },
        { "ignore-eos", no_argument, NULL, 'I' },
        {}
    };
    new_session_opts nso = { NULL, -1, -1 };
    unsigned long max_tokens = 0;
    bool ignore_eos = false;
    char *created = NULL, *line = NULL, *end;
    const char *session = NULL;
    size_t cap = 0;
    bool tty = isatty(STDIN_FILENO);
    int opt, r;

    while ((opt = getopt_long(argc, argv, "+n:h", options, NULL)) >= 0) {
        if (parse_new_session_opt(opt, &nso) < 0)
            return usage_error("invalid value \"%s\"", optarg);
        switch (opt) {
        case 'n':
            max_tokens = strtoul(optarg, &end, 10);
            if (*end || max_tokens > UINT32_MAX)
                return usage_error("--max-tokens: not a number: \"%s\"", optarg);
            break;
        case 'h':
            printf("Usage: hymbactl chat [--max-tokens N] [SESSION]\n"
                   "\n"
                   "Chat interactively in SESSION (or a new session).  Each line you type\n"
                   "is one message; the answer prints as it streams.  Ctrl-C cancels the\n"
                   "answer (not the program); Ctrl-D leaves.\n"
                   "\n"
                   "  -n --max-tokens N      at most N tokens per answer\n"
                   "     --system-prompt TXT a new session's system prompt\n"
                   "     --temperature T     a new session's temperature (0: greedy)\n"
                   "     --seed N            a new session's sampling seed\n"
                   "     --ignore-eos        generate all N tokens whatever the model says\n");
            return CTL_EXIT_OK;
        case 'I': ignore_eos = true; break;
        case 'S': case 'T': case 'E': break;
        default: return CTL_EXIT_USAGE;
        }
    }
    if (argc - optind > 1)
        return usage_error("chat takes at most one SESSION, not \"%s\"", argv[optind + 1]);
    if (optind < argc)
        session = argv[optind];
    ctl_catch_interrupt(c);
    r = ctl_connect(c);
    if (r)
        return r;
    if (!session) {
        r = session_create(c, &nso, &created);
        if (r)
            return r;
        session = created;
    } else {
        /* Resuming: make sure it is there (and ours) before the first line is typed. */
        Hymba__V1__GetSessionRequest req = HYMBA__V1__GET_SESSION_REQUEST__INIT;
        Hymba__V1__GetSessionReply *rep = NULL;
        req.session_id = (char *)session;
        r = ctl_call(c, CTL_IFACE_SESSION, "GetSession", &req.base, &hymba__v1__get_session_reply__descriptor,
                     (ProtobufCMessage **)&rep);
        if (r)
            return r;
        if (rep->session)
            fprintf(stderr, "resuming: %u messages, %" PRId64 " tokens\n", rep->session->n_messages,
                    rep->session->n_tokens);
        protobuf_c_message_free_unpacked(&rep->base, NULL);
    }
    fprintf(stderr, "session %s%s\n", session, tty ? " (Ctrl-C cancels an answer, Ctrl-D leaves)" : "");
    for (;;) {
        ctl_answer ans;
        if (tty) {
            printf("%s>%s ", term_on(TERM_BOLD), term_off());
            fflush(stdout);
        }
        int got = read_line(c, &line, &cap);
        if (got < 0) {
            fputs("^C (Ctrl-D leaves)\n", stdout);
            continue;
        }
        if (got == 0)
            break;
        line[strcspn(line, "\n")] = 0;
        if (!*line)
            continue;
        r = ctl_send(c, session, line, (uint32_t)max_tokens, ignore_eos, false, &ans);
        if (ans.len && ans.text[ans.len - 1] != '\n')
            putchar('\n');
        answer_report(&ans);
        bool interrupted = ans.interrupted;
        ctl_answer_done(&ans);
        /* A failed answer ends a scripted chat; at a terminal the user goes on. */
        if (r == CTL_EXIT_UNREACHABLE || (r && !interrupted && !tty))
            break;
        r = CTL_EXIT_OK;
    }
    if (tty)
        putchar('\n');
    free(line);
    free(created);
    return r;
}

static int cmd_sessions(ctl *c, int argc, char **argv)
{
    static const struct option options[] = {
        { "all", no_argument, NULL, 'a' }, { "help", no_argument, NULL, 'h' }, {}
    };
    Hymba__V1__ListSessionsRequest req = HYMBA__V1__LIST_SESSIONS_REQUEST__INIT;
    Hymba__V1__ListSessionsReply *rep = NULL;
    int opt, r;

    while ((opt = getopt_long(argc, argv, "+ah", options, NULL)) >= 0) {
        if (opt == 'a')
            req.all_users = true;
        else if (opt == 'h') {
            printf("Usage: hymbactl sessions [--all]\n\nList your sessions; --all lists every user's (root only).\n");
            return CTL_EXIT_OK;
        } else
            return CTL_EXIT_USAGE;
    }
    if (optind < argc)
        return usage_error("sessions takes no argument: \"%s\"", argv[optind]);
    r = ctl_connect(c);
    if (r)
        return r;
    r = ctl_call(c, CTL_IFACE_MANAGER, "ListSessions", &req.base, &hymba__v1__list_sessions_reply__descriptor,
                 (ProtobufCMessage **)&rep);
    if (r)
        return r;
    if (c->json) {
        json_object *a = json_object_new_array();
        for (size_t i = 0; i < rep->n_sessions; i++)
            json_object_array_add(a, session_json(rep->sessions[i]));
        json_print(a);
    } else {
        if (rep->n_sessions)
            printf("%-32s %6s %5s %6s %-19s %s\n", "ID", "UID", "MSGS", "TOKENS", "UPDATED", "TITLE");
        for (size_t i = 0; i < rep->n_sessions; i++) {
            const Hymba__V1__SessionInfo *s = rep->sessions[i];
            char when[32];
            fmt_time(s->updated_usec, when, sizeof(when));
            printf("%-32s %6u %5u %6" PRId64 " %-19s %s%s\n", s->id, s->owner_uid, s->n_messages, s->n_tokens,
                   when, s->busy ? "[busy] " : "", s->title);
        }
        if (!rep->n_sessions)
            fprintf(stderr, "no sessions\n");
    }
    protobuf_c_message_free_unpacked(&rep->base, NULL);
    return CTL_EXIT_OK;
}

static int cmd_show(ctl *c, int argc, char **argv)
{
    Hymba__V1__GetSessionRequest req = HYMBA__V1__GET_SESSION_REQUEST__INIT;
    Hymba__V1__GetSessionReply *rep = NULL;
    int r;

    if (argc == 2 && is_help(argv[1])) {
        printf("Usage: hymbactl show ID\n\nA session's settings and its messages.\n");
        return CTL_EXIT_OK;
    }
    if (argc != 2)
        return usage_error("%s", "show needs exactly one session ID");
    r = ctl_connect(c);
    if (r)
        return r;
    req.session_id = argv[1];
    r = ctl_call(c, CTL_IFACE_SESSION, "GetSession", &req.base, &hymba__v1__get_session_reply__descriptor,
                 (ProtobufCMessage **)&rep);
    if (r)
        return r;
    if (c->json) {
        json_object *o = rep->session ? session_json(rep->session) : json_object_new_object();
        json_object *msgs = json_object_new_array();
        for (size_t i = 0; i < rep->n_messages; i++) {
            json_object *m = json_object_new_object();
            json_object_object_add(m, "role", json_object_new_string(role_name(rep->messages[i]->role)));
            json_object_object_add(m, "text", json_object_new_string(rep->messages[i]->text));
            json_object_array_add(msgs, m);
        }
        json_object_object_add(o, "history", msgs);
        json_print(o);
    } else if (rep->session) {
        const Hymba__V1__SessionInfo *s = rep->session;
        char created[32], updated[32];
        fmt_time(s->created_usec, created, sizeof(created));
        fmt_time(s->updated_usec, updated, sizeof(updated));
        printf("Session:  %s\nOwner:    uid %u\nCreated:  %s\nUpdated:  %s\nMessages: %u\nTokens:   %" PRId64 "%s\n",
               s->id, s->owner_uid, created, updated, s->n_messages, s->n_tokens, s->busy ? " (answering)" : "");
        if (s->sampling)
            printf("Sampling: temperature %g, top_k %d, top_p %g, min_p %g, repeat_penalty %g, seed %" PRIu64 "\n",
                   s->sampling->temperature, s->sampling->top_k, s->sampling->top_p, s->sampling->min_p,
                   s->sampling->repeat_penalty, s->sampling->seed);
        for (size_t i = 0; i < rep->n_messages; i++) {
            Hymba__V1__Role role = rep->messages[i]->role;
            term_style style = role == HYMBA__V1__ROLE__ROLE_USER ? TERM_USER :
                               role == HYMBA__V1__ROLE__ROLE_ASSISTANT ? TERM_ASSISTANT : TERM_BOLD;
            printf("\n%s[%s]%s\n", term_on(style), role_name(role), term_off());
            term_write_text(rep->messages[i]->text, strlen(rep->messages[i]->text));
            putchar('\n');
        }
    }
    protobuf_c_message_free_unpacked(&rep->base, NULL);
    return CTL_EXIT_OK;
}

static int cmd_rm(ctl *c, int argc, char **argv)
{
    int r, ret = CTL_EXIT_OK;

    if (argc >= 2 && is_help(argv[1])) {
        printf("Usage: hymbactl rm ID...\n\nDelete sessions (a running answer is cancelled first).\n");
        return CTL_EXIT_OK;
    }
    if (argc < 2)
        return usage_error("%s", "rm needs at least one session ID");
    r = ctl_connect(c);
    if (r)
        return r;
    for (int i = 1; i < argc; i++) {
        Hymba__V1__DeleteSessionRequest req = HYMBA__V1__DELETE_SESSION_REQUEST__INIT;
        req.session_id = argv[i];
        r = ctl_call(c, CTL_IFACE_SESSION, "DeleteSession", &req.base, &hymba__v1__delete_session_reply__descriptor, NULL);
        if (r == CTL_EXIT_UNREACHABLE)
            return r;
        if (r)
            ret = r;
    }
    if (c->json && ret == CTL_EXIT_OK) {
        json_object *o = json_object_new_object();
        json_object_object_add(o, "deleted", json_object_new_int(argc - 1));
        json_print(o);
    }
    return ret;
}

static int cmd_status(ctl *c, int argc, char **argv)
{
    Hymba__V1__StatusRequest req = HYMBA__V1__STATUS_REQUEST__INIT;
    Hymba__V1__StatusReply *rep = NULL;
    int r;

    if (argc == 2 && is_help(argv[1])) {
        printf("Usage: hymbactl status\n\nThe daemon's model, backend, memory, sessions, queue and limits.\n");
        return CTL_EXIT_OK;
    }
    if (argc != 1)
        return usage_error("status takes no argument: \"%s\"", argv[1]);
    r = ctl_connect(c);
    if (r)
        return r;
    r = ctl_call(c, CTL_IFACE_MANAGER, "Status", &req.base, &hymba__v1__status_reply__descriptor,
                 (ProtobufCMessage **)&rep);
    if (r)
        return r;
    const Hymba__V1__Limits *l = rep->limits;
    if (c->json) {
        json_object *o = json_object_new_object(), *lo = json_object_new_object();
        json_object_object_add(o, "version", json_object_new_string(rep->version));
        json_object_object_add(o, "protocol_version", json_object_new_int64(rep->protocol_version));
        json_object_object_add(o, "model", json_object_new_string(rep->model));
        json_object_object_add(o, "backend", json_object_new_string(rep->backend));
        json_object_object_add(o, "rss_bytes", json_object_new_uint64(rep->rss_bytes));
        json_object_object_add(o, "backend_bytes", json_object_new_uint64(rep->backend_bytes));
        json_object_object_add(o, "sessions", json_object_new_int64(rep->sessions));
        json_object_object_add(o, "sessions_total", json_object_new_int64(rep->sessions_total));
        json_object_object_add(o, "active_requests", json_object_new_int64(rep->active_requests));
        json_object_object_add(o, "queued_requests", json_object_new_int64(rep->queued_requests));
        json_object_object_add(o, "uptime_usec", json_object_new_uint64(rep->uptime_usec));
        json_object_object_add(o, "tokens_generated", json_object_new_uint64(rep->tokens_generated));
        if (l) {
            json_object_object_add(lo, "max_sessions_per_user", json_object_new_int64(l->max_sessions_per_user));
            json_object_object_add(lo, "max_queued_per_user", json_object_new_int64(l->max_queued_per_user));
            json_object_object_add(lo, "max_message_bytes", json_object_new_int64(l->max_message_bytes));
            json_object_object_add(lo, "max_payload_bytes", json_object_new_int64(l->max_payload_bytes));
            json_object_object_add(lo, "context_length", json_object_new_int64(l->context_length));
            json_object_object_add(lo, "max_new_tokens", json_object_new_int64(l->max_new_tokens));
            json_object_object_add(lo, "default_max_new_tokens", json_object_new_int64(l->default_max_new_tokens));
        }
        json_object_object_add(o, "limits", lo);
        json_print(o);
    } else {
        printf("hymbad %s (protocol %u)\nModel:    %s\nBackend:  %s\nMemory:   %.1f MiB resident, %.1f MiB in the backend\n"
               "Sessions: %u yours/visible, %u in all\nRequests: %u generating, %u queued\nTokens:   %" PRIu64 " generated, up %.0f s\n",
               rep->version, rep->protocol_version, rep->model, rep->backend, rep->rss_bytes / 1048576.0,
               rep->backend_bytes / 1048576.0, rep->sessions, rep->sessions_total, rep->active_requests,
               rep->queued_requests, rep->tokens_generated, rep->uptime_usec / 1e6);
        if (l)
            printf("Limits:   %u sessions/user, %u requests/user, %u-byte messages, context %" PRId64 " tokens, "
                   "answers up to %u tokens (default %u)\n", l->max_sessions_per_user, l->max_queued_per_user,
                   l->max_message_bytes, l->context_length, l->max_new_tokens, l->default_max_new_tokens);
    }
    protobuf_c_message_free_unpacked(&rep->base, NULL);
    return CTL_EXIT_OK;
}

/* ---- persistent sessions: regenerate, rewind, export, import (issue 5) ---------- */

/* Common options of regenerate and rewind: --max-tokens, --ignore-eos. */
static int answer_again_opts(int argc, char **argv, const char *usage, uint32_t *max_tokens, bool *ignore_eos)
{
    static const struct option options[] = {
        { "max-tokens", required_argument, NULL, 'n' },
        { "ignore-eos", no_argument, NULL, 'I' },
        { "help", no_argument, NULL, 'h' },
        {}
    };
    unsigned long v;
    char *end;
    int opt;

    while ((opt = getopt_long(argc, argv, "+n:h", options, NULL)) >= 0) {
        switch (opt) {
        case 'n':
            v = strtoul(optarg, &end, 10);
            if (*end || v > UINT32_MAX)
                return usage_error("--max-tokens: not a number: \"%s\"", optarg);
            *max_tokens = (uint32_t)v;
            break;
        case 'I': *ignore_eos = true; break;
        case 'h': printf("%s", usage); return -1;
        default: return CTL_EXIT_USAGE;
        }
    }
    return 0;
}

static int answer_again(ctl *c, const char *method, const ProtobufCMessage *req)
{
    ctl_answer ans;
    int r = ctl_connect(c);

    if (r)
        return r;
    r = ctl_stream(c, method, req, c->json, &ans);
    if (c->json)
        json_print(finished_json(&ans));
    else {
        if (ans.len && ans.text[ans.len - 1] != '\n')
            putchar('\n');
        answer_report(&ans);
    }
    ctl_answer_done(&ans);
    return r;
}

static int cmd_regenerate(ctl *c, int argc, char **argv)
{
    Hymba__V1__RegenerateRequest req = HYMBA__V1__REGENERATE_REQUEST__INIT;
    bool ignore_eos = false;
    int r = answer_again_opts(argc, argv,
        "Usage: hymbactl regenerate [--max-tokens N] ID\n"
        "\n"
        "A new answer to the last user message of session ID.  The state at the start of\n"
        "that answer comes from its turn snapshot: nothing before it is recomputed.  The\n"
        "old answer is dropped.\n"
        "\n"
        "  -n --max-tokens N   at most N tokens (0: the daemon's default)\n"
        "     --ignore-eos     generate N tokens whatever the model says\n",
        &req.max_new_tokens, &ignore_eos);

    if (r)
        return r < 0 ? CTL_EXIT_OK : r;
    if (optind != argc - 1)
        return usage_error("%s", "regenerate needs exactly one session ID");
    req.session_id = argv[optind];
    req.ignore_eos = ignore_eos;
    return answer_again(c, "Regenerate", &req.base);
}

static int cmd_rewind(ctl *c, int argc, char **argv)
{
    Hymba__V1__RewindRequest req = HYMBA__V1__REWIND_REQUEST__INIT;
    bool ignore_eos = false;
    unsigned long turn;
    char *end;
    int r = answer_again_opts(argc, argv,
        "Usage: hymbactl rewind [--max-tokens N] ID TURN\n"
        "\n"
        "Back to the start of answer TURN (0 = the first answer) of session ID: that\n"
        "answer and every later message are dropped, and a new answer to the user\n"
        "message of turn TURN is generated from its snapshot (no recomputation).\n"
        "Only the last turn_snapshots answers (hymbad.conf, default 4) can be rewound to.\n"
        "\n"
        "  -n --max-tokens N   at most N tokens (0: the daemon's default)\n"
        "     --ignore-eos     generate N tokens whatever the model says\n",
        &req.max_new_tokens, &ignore_eos);

    if (r)
        return r < 0 ? CTL_EXIT_OK : r;
    if (optind != argc - 2)
        return usage_error("%s", "rewind needs a session ID and a TURN number");
    turn = strtoul(argv[optind + 1], &end, 10);
    if (*end || !*argv[optind + 1] || turn > UINT32_MAX)
        return usage_error("TURN is not a number: \"%s\"", argv[optind + 1]);
    req.session_id = argv[optind];
    req.turn = (uint32_t)turn;
    req.ignore_eos = ignore_eos;
    return answer_again(c, "Rewind", &req.base);
}

static int cmd_export(ctl *c, int argc, char **argv)
{
    Hymba__V1__ExportRequest req = HYMBA__V1__EXPORT_REQUEST__INIT;
    ProtobufCMessage *reply = NULL;
    int r;

    if (argc == 2 && is_help(argv[1])) {
        printf("Usage: hymbactl export ID > FILE\n"
               "\n"
               "Write session ID's checkpoint (docs/checkpoint.md: messages, model state,\n"
               "turn snapshots) to standard output, which hymbad writes to directly (the\n"
               "descriptor is passed over D-Bus).  'hymbactl import FILE' reads it back.\n");
        return CTL_EXIT_OK;
    }
    if (argc != 2)
        return usage_error("%s", "export needs exactly one session ID (and stdout redirected to a file)");
    if (isatty(STDOUT_FILENO))
        return usage_error("%s", "export writes a binary checkpoint: redirect stdout (hymbactl export ID > chat.hyck)");
    req.session_id = argv[1];
    r = ctl_connect(c);
    if (r)
        return r;
    fflush(stdout);
    r = ctl_call_fd(c, CTL_IFACE_SESSION, "Export", &req.base, STDOUT_FILENO,
                    &hymba__v1__export_reply__descriptor, &reply);
    if (r == CTL_EXIT_OK)
        fprintf(stderr, "exported session %s: %llu bytes\n", argv[1],
                (unsigned long long)((Hymba__V1__ExportReply *)reply)->bytes);
    if (reply)
        protobuf_c_message_free_unpacked(reply, NULL);
    return r;
}

static int cmd_import(ctl *c, int argc, char **argv)
{
    Hymba__V1__ImportRequest req = HYMBA__V1__IMPORT_REQUEST__INIT;
    ProtobufCMessage *reply = NULL;
    int fd, r;

    if (argc == 2 && is_help(argv[1])) {
        printf("Usage: hymbactl import FILE\n"
               "\n"
               "Make a new session of yours from a checkpoint written by 'hymbactl export'\n"
               "('-': standard input redirected from a file; hymbad reads regular files\n"
               "only).  It must come from the model hymbad runs (the same model identity);\n"
               "the new session id is printed.\n");
        return CTL_EXIT_OK;
    }
    if (argc != 2)
        return usage_error("%s", "import needs exactly one FILE ('-' for stdin)");
    fd = strcmp(argv[1], "-") ? open(argv[1], O_RDONLY | O_CLOEXEC) : STDIN_FILENO;
    if (fd < 0) {
        fprintf(stderr, "hymbactl: %s: %s\n", argv[1], strerror(errno));
        return CTL_EXIT_FAILED;
    }
    r = ctl_connect(c);
    if (r == CTL_EXIT_OK)
        r = ctl_call_fd(c, CTL_IFACE_MANAGER, "Import", &req.base, fd, &hymba__v1__import_reply__descriptor, &reply);
    if (fd != STDIN_FILENO)
        close(fd);
    if (r == CTL_EXIT_OK) {
        const Hymba__V1__SessionInfo *si = ((Hymba__V1__ImportReply *)reply)->session;
        if (c->json)
            json_print(session_json(si));
        else
            printf("%s\n", si->id);
    }
    if (reply)
        protobuf_c_message_free_unpacked(reply, NULL);
    return r;
}

int main(int argc, char **argv)
{
    static const struct option options[] = {
        { "system", no_argument, NULL, 's' },
        { "user", no_argument, NULL, 'u' },
        { "bus-address", required_argument, NULL, 'A' },
        { "json", no_argument, NULL, 'j' },
        { "help", no_argument, NULL, 'h' },
        { "version", no_argument, NULL, 'V' },
        {}
    };
    static const struct { const char *name; int (*fn)(ctl *, int, char **); } commands[] = {
        { "chat", cmd_chat }, { "ask", cmd_ask }, { "sessions", cmd_sessions },
        { "show", cmd_show }, { "rm", cmd_rm }, { "status", cmd_status },
        { "regenerate", cmd_regenerate }, { "rewind", cmd_rewind }, { "export", cmd_export },
        { "import", cmd_import },
    };
    ctl c = { .kind = CTL_BUS_SYSTEM, .sigfd = -1 };
    int opt, r;

    while ((opt = getopt_long(argc, argv, "+h", options, NULL)) >= 0) {
        switch (opt) {
        case 's': c.kind = CTL_BUS_SYSTEM; break;
        case 'u': c.kind = CTL_BUS_USER; break;
        case 'A': c.kind = CTL_BUS_ADDRESS; c.address = optarg; break;
        case 'j': c.json = true; break;
        case 'h': help_main(); return CTL_EXIT_OK;
        case 'V':
            printf("hymbactl %s (protocol version %d, D-Bus %s)\n", PACKAGE_VERSION, PROTOCOL_VERSION, CTL_BUS_NAME);
            return CTL_EXIT_OK;
        default:
            fprintf(stderr, "Try 'hymbactl --help'.\n");
            return CTL_EXIT_USAGE;
        }
    }
    term_init(c.json);
    if (optind >= argc)
        return usage_error("%s", "no command given");
    for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
        if (!strcmp(argv[optind], commands[i].name)) {
            int sub_argc = argc - optind;
            char **sub_argv = argv + optind;
            optind = 1;                  /* the command parses its own options */
            r = commands[i].fn(&c, sub_argc, sub_argv);
            ctl_disconnect(&c);
            return r;
        }
    return usage_error("unknown command \"%s\"", argv[optind]);
}
