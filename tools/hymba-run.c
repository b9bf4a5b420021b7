/* hymba-run: load a Hymba checkpoint, run a prompt (token ids or text), dump logits, generate, chat. */
#include <config.h>   /* PACKAGE_VERSION */
#include "engine/hymba.h"
#include "engine/safetensors.h"
#include "engine/tok.h"
#include "tools/textio.h"

#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define EXIT_RUNTIME 1
#define EXIT_USAGE 2
#define TOP_SHOWN 5          /* next-token candidates printed when nothing is generated */

/* Everything the command line sets. */
typedef struct run_opts {
    const char *model;
    const char *tokens;      /* "1,5,9" */
    const char *dump_logits;
    const char *backend;
    const char *prompt;      /* -p TEXT */
    const char *tokenize;    /* --tokenize TEXT */
    const char *detokenize;  /* --detokenize IDS */
    const char *system;      /* --system TEXT (chat) */
    int n_gen;
    int threads;
    long long max_ctx;
    unsigned long long seed;
    float temp, top_p, min_p, repeat_penalty;
    int top_k, repeat_last_n;
    bool ref_window, rope_bf16, ignore_eos, verbose, help, version;
    bool chat, no_bos, skip_special;
} run_opts;

/* ---- table-driven options: add a row (and use the field) to add an option ---- */

typedef enum arg_kind { ARG_FLAG, ARG_STR, ARG_INT, ARG_LL, ARG_ULL, ARG_FLOAT } arg_kind;

typedef struct opt_def {
    const char *lng;
    char shrt;               /* 0: long only */
    arg_kind kind;
    size_t off;              /* field in run_opts */
    const char *metavar;
    double lo, hi;           /* accepted range of numeric arguments */
    const char *help;
} opt_def;

#define F(field) offsetof(run_opts, field)
static const opt_def opt_table[] = {
    { "model", 'm', ARG_STR, F(model), "DIR", 0, 0, "model directory (config.json, model.safetensors)" },
    { "tokens", 0, ARG_STR, F(tokens), "IDS", 0, 0, "prompt as comma-separated token ids, used as given (no BOS added)" },
    { "prompt", 'p', ARG_STR, F(prompt), "TEXT", 0, 0, "prompt as text (BOS as add_bos_token says); prints the continuation as it is generated" },
    { "chat", 0, ARG_FLAG, F(chat), NULL, 0, 0, "chat with the model's chat template: a REPL on stdin, or one turn with -p TEXT" },
    { "system", 0, ARG_STR, F(system), "TEXT", 0, 0, "--chat: a system message" },
    { "tokenize", 0, ARG_STR, F(tokenize), "TEXT", 0, 0, "print the token ids of TEXT comma-separated (tokenizer files only, no weights needed)" },
    { "no-bos", 0, ARG_FLAG, F(no_bos), NULL, 0, 0, "--tokenize: no BOS even if add_bos_token is true" },
    { "detokenize", 0, ARG_STR, F(detokenize), "IDS", 0, 0, "print the text of comma-separated token ids (tokenizer files only)" },
    { "skip-special", 0, ARG_FLAG, F(skip_special), NULL, 0, 0, "--detokenize: leave out special tokens such as <s>" },
    { "dump-logits", 0, ARG_STR, F(dump_logits), "FILE", 0, 0, "write F32 logits of every prompt position: safetensors tensor 'logits' [T, vocab]" },
    { "n-predict", 'n', ARG_INT, F(n_gen), "N", 0, INT_MAX, "tokens to generate (default 0: print the top next tokens; 256 with -p/--chat)" },
    { "backend", 0, ARG_STR, F(backend), "NAME", 0, 0, "cpu, cuda or auto (default auto)" },
    { "threads", 't', ARG_INT, F(threads), "N", 0, 4096, "CPU threads (default: all cores)" },
    { "max-ctx", 0, ARG_LL, F(max_ctx), "N", 0, 1e12, "real tokens a sequence may hold (default: max_position_embeddings)" },
    { "seed", 's', ARG_ULL, F(seed), "N", 0, 0, "sampling seed (default 0)" },
    { "temp", 0, ARG_FLOAT, F(temp), "T", 0, 100, "temperature (default 0: greedy)" },
    { "top-k", 0, ARG_INT, F(top_k), "K", 0, INT_MAX, "keep the K most likely tokens (0: off; default 40)" },
    { "top-p", 0, ARG_FLOAT, F(top_p), "P", 0, 1, "nucleus sampling mass (1: off; default 0.95)" },
    { "min-p", 0, ARG_FLOAT, F(min_p), "P", 0, 1, "drop tokens below P times the best one's probability (0: off; default 0.05)" },
    { "repeat-penalty", 0, ARG_FLOAT, F(repeat_penalty), "X", 0.01, 100, "penalty on recent tokens (1: off, the default)" },
    { "repeat-last-n", 0, ARG_INT, F(repeat_last_n), "N", -1, INT_MAX, "tokens the penalty looks back over (-1: all; default 64)" },
    { "ignore-eos", 0, ARG_FLAG, F(ignore_eos), NULL, 0, 0, "keep generating after the end-of-sequence token" },
    { "ref-decode-window", 0, ARG_FLAG, F(ref_window), NULL, 0, 0, "reference cached-decode SWA window (W keys, spec 4.4-1)" },
    { "rope-bf16", 0, ARG_FLAG, F(rope_bf16), NULL, 0, 0, "bf16-rounded RoPE frequencies (the model-card loading recipe)" },
    { "verbose", 'v', ARG_FLAG, F(verbose), NULL, 0, 0, "load progress, backend choice and timings on stderr" },
    { "help", 'h', ARG_FLAG, F(help), NULL, 0, 0, "this help" },
    { "version", 'V', ARG_FLAG, F(version), NULL, 0, 0, "print the version" },
};
#undef F
#define N_OPTS (sizeof(opt_table) / sizeof(opt_table[0]))

static void usage(FILE *fp)
{
    fprintf(fp, "Usage: hymba-run -m DIR --tokens IDS [OPTION]...\n"
                "       hymba-run -m DIR -p TEXT [OPTION]...\n"
                "       hymba-run -m DIR --chat [-p TEXT] [--system TEXT] [OPTION]...\n"
                "       hymba-run -m DIR --tokenize TEXT [--no-bos] | --detokenize IDS\n"
                "Run a prompt through a Hymba checkpoint; dump logits, generate tokens or text, chat.\n\n");
    for (size_t i = 0; i < N_OPTS; i++) {
        const opt_def *o = &opt_table[i];
        char left[64], sh[8] = "    ";
        if (o->shrt)
            snprintf(sh, sizeof(sh), "-%c, ", o->shrt);
        snprintf(left, sizeof(left), "%s--%s%s%s", sh, o->lng, o->metavar ? " " : "",
                 o->metavar ? o->metavar : "");
        fprintf(fp, "  %-28s %s\n", left, o->help);
    }
    fprintf(fp, "\nGenerated ids go to stdout, comma-separated, as they are produced.\n"
                "Exit status: 0 success, 1 runtime error, 2 usage error.\n");
}

static int opt_store(const opt_def *o, run_opts *r, const char *arg)
{
    void *field = (char *)r + o->off;
    char *end = NULL;
    double v = 0;

    if (o->kind == ARG_FLAG) {
        *(bool *)field = true;
        return 0;
    }
    if (o->kind == ARG_STR) {
        *(const char **)field = arg;
        return 0;
    }
    errno = 0;
    if (o->kind == ARG_ULL) {
        if (arg[0] == '-')
            end = (char *)arg;
        else
            *(unsigned long long *)field = strtoull(arg, &end, 0);
    } else {
        v = strtod(arg, &end);
    }
    if (errno || !end || end == arg || *end || (o->kind != ARG_ULL && (v < o->lo || v > o->hi))) {
        fprintf(stderr, "hymba-run: --%s: '%s' is not valid", o->lng, arg);
        if (o->kind != ARG_ULL)
            fprintf(stderr, " (%g..%g)", o->lo, o->hi);
        fputc('\n', stderr);
        return -1;
    }
    if ((o->kind == ARG_INT || o->kind == ARG_LL) && v != (double)(long long)v) {
        fprintf(stderr, "hymba-run: --%s: '%s' is not an integer\n", o->lng, arg);
        return -1;
    }
    switch (o->kind) {
    case ARG_INT: *(int *)field = (int)v; break;
    case ARG_LL: *(long long *)field = (long long)v; break;
    case ARG_FLOAT: *(float *)field = (float)v; break;
    default: break;
    }
    return 0;
}

static int parse_args(int argc, char **argv, run_opts *r)
{
    struct option lo[N_OPTS + 1];
    char shorts[3 * N_OPTS + 1];
    size_t ns = 0;
    int c, idx;

    memset(lo, 0, sizeof(lo));
    for (size_t i = 0; i < N_OPTS; i++) {
        lo[i].name = opt_table[i].lng;
        lo[i].has_arg = opt_table[i].kind == ARG_FLAG ? no_argument : required_argument;
        lo[i].val = 256 + (int)i;
        if (opt_table[i].shrt) {
            shorts[ns++] = opt_table[i].shrt;
            if (opt_table[i].kind != ARG_FLAG)
                shorts[ns++] = ':';
        }
    }
    shorts[ns] = '\0';
    while ((c = getopt_long(argc, argv, shorts, lo, &idx)) != -1) {
        const opt_def *o = NULL;
        if (c >= 256 && c < 256 + (int)N_OPTS)
            o = &opt_table[c - 256];
        for (size_t i = 0; !o && i < N_OPTS; i++)
            if (opt_table[i].shrt == c)
                o = &opt_table[i];
        if (!o || opt_store(o, r, optarg) < 0) {
            if (!o)
                fprintf(stderr, "Try 'hymba-run --help'.\n");
            return -1;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "hymba-run: unexpected argument '%s'\n", argv[optind]);
        return -1;
    }
    return 0;
}

/* "1,5,9" -> ids; NULL on a syntax error (message printed). */
static int32_t *parse_ids(const char *s, int *n_out)
{
    size_t cap = 16, n = 0;
    int32_t *ids = malloc(cap * sizeof(*ids));

    while (ids) {
        char *end;
        errno = 0;
        long v = strtol(s, &end, 10);
        if (end == s || errno || v < 0 || v > INT32_MAX || (*end && *end != ',')) {
            fprintf(stderr, "hymba-run: --tokens: '%.20s' is not a comma-separated list of "
                    "token ids\n", s);
            free(ids);
            return NULL;
        }
        if (n == cap) {
            int32_t *g = realloc(ids, 2 * cap * sizeof(*ids));
            if (!g)
                break;
            ids = g;
            cap *= 2;
        }
        ids[n++] = (int32_t)v;
        if (!*end)
            break;
        s = end + 1;
    }
    if (ids && n > INT_MAX) {
        free(ids);
        return NULL;
    }
    *n_out = (int)n;
    return ids;
}

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + t.tv_nsec / 1e9;
}

static int dump_logits(const char *path, const float *logits, int T, int vocab, hy_err *err)
{
    hy_st_out t = { .name = "logits", .dtype = HY_ST_F32, .ndim = 2,
                    .shape = { T, vocab }, .data = logits };
    return hy_st_write(path, &t, 1, err);
}

/* With nothing to generate: the most likely next tokens after the prompt. */
static void print_top(const float *logits, int vocab)
{
    int best[TOP_SHOWN], nb = 0;

    for (int k = 0; k < TOP_SHOWN && k < vocab; k++) {
        int b = -1;
        for (int i = 0; i < vocab; i++) {
            bool taken = false;
            for (int j = 0; j < nb; j++)
                taken |= best[j] == i;
            if (!taken && (b < 0 || logits[i] > logits[b]))
                b = i;
        }
        best[nb++] = b;
        printf("next %d: id %d logit %.6g\n", k + 1, b, (double)logits[b]);
    }
}

static int generate(hy_model *m, hy_seq *s, const run_opts *o, hy_err *err)
{
    hy_sampling sp;
    hy_rng rng;
    const hy_arch *a = hy_model_arch(m);
    int eos = hy_model_config(m)->eos_token_id;
    double t0 = now_s();
    int made = 0, r = 0;

    hy_sampling_default(&sp);
    sp.temperature = o->temp;
    sp.top_k = o->top_k;
    sp.top_p = o->top_p;
    sp.min_p = o->min_p;
    sp.repeat_penalty = o->repeat_penalty;
    sp.repeat_last_n = o->repeat_last_n;
    hy_rng_seed(&rng, o->seed);
    for (made = 0; made < o->n_gen; made++) {
        int32_t tok = hy_sample(&sp, &rng, hy_seq_logits(s), a->vocab, hy_seq_tokens(s),
                                hy_seq_len(s));
        printf("%s%d", made ? "," : "", (int)tok);
        fflush(stdout);
        if ((tok == eos && !o->ignore_eos) || made + 1 == o->n_gen) {
            made++;
            break;
        }
        if ((r = hy_seq_decode_batch(m, &s, &tok, 1, err)) < 0)
            break;
    }
    if (made)
        putchar('\n');
    if (o->verbose && made > 1)
        fprintf(stderr, "hymba-run: generated %d tokens in %.3f s (%.2f tok/s decode)\n", made,
                now_s() - t0, (made - 1) / (now_s() - t0));
    return r;
}

/* --tokenize / --detokenize: the tokenizer files only, no weights. */
static int run_tok_only(const run_opts *o)
{
    hy_tok *t = NULL;
    hy_err err = { 0 };
    int r = hy_tok_load(o->model, &t, &err);

    if (r < 0) {
        fprintf(stderr, "hymba-run: %s\n", err.msg);
        return EXIT_RUNTIME;
    }
    r = o->tokenize ? hy_textio_tokenize(t, o->tokenize, hy_tok_add_bos(t) && !o->no_bos, stdout, &err)
                    : hy_textio_detokenize(t, o->detokenize, o->skip_special, stdout, &err);
    hy_tok_free(t);
    if (r < 0) {
        fprintf(stderr, "hymba-run: %s\n", err.msg);
        return r == -EINVAL ? EXIT_USAGE : EXIT_RUNTIME;   /* -EINVAL: a malformed id list */
    }
    return 0;
}

/* -p TEXT and --chat: text in, streamed text out. */
static int run_text(const run_opts *o)
{
    hy_load_opts lo = { .backend = o->backend, .threads = o->threads, .max_ctx = o->max_ctx,
                        .num = { .ref_decode_window = o->ref_window,
                                 .rope_bf16_freq = o->rope_bf16 },
                        .verbose = o->verbose };
    hy_textio_opts to;
    hy_err err = { 0 };
    hy_model *m = NULL;
    hy_tok *t = NULL;
    int r;

    hy_textio_opts_default(&to);
    if (o->n_gen > 0)
        to.max_new_tokens = o->n_gen;
    to.sampling.temperature = o->temp;
    to.sampling.top_k = o->top_k;
    to.sampling.top_p = o->top_p;
    to.sampling.min_p = o->min_p;
    to.sampling.repeat_penalty = o->repeat_penalty;
    to.sampling.repeat_last_n = o->repeat_last_n;
    to.seed = o->seed;
    to.system = o->system;
    if ((r = hy_tok_load(o->model, &t, &err)) == 0 && (r = hy_model_load(o->model, &lo, &m, &err)) == 0)
        r = o->chat ? hy_textio_chat(m, t, o->prompt, &to, stdin, stdout, &err)
                    : hy_textio_complete(m, t, o->prompt, &to, stdout, &err);
    if (r < 0)
        fprintf(stderr, "hymba-run: %s\n", err.msg);
    hy_model_free(m);
    hy_tok_free(t);
    return r < 0 ? EXIT_RUNTIME : 0;
}

static int run(const run_opts *o, const int32_t *ids, int T)
{
    hy_load_opts lo = { .backend = o->backend, .threads = o->threads, .max_ctx = o->max_ctx,
                        .num = { .ref_decode_window = o->ref_window,
                                 .rope_bf16_freq = o->rope_bf16 },
                        .verbose = o->verbose };
    hy_err err = { 0 };
    hy_model *m = NULL;
    hy_seq *s = NULL;
    float *all = NULL;
    double t0 = now_s(), t1;
    int r, vocab;

    if ((r = hy_model_load(o->model, &lo, &m, &err)) < 0)
        goto fail;
    t1 = now_s();
    vocab = hy_model_arch(m)->vocab;
    if (o->verbose)
        fprintf(stderr, "hymba-run: loaded in %.3f s, backend %s\n", t1 - t0, hy_model_backend(m));
    for (int i = 0; i < T; i++)
        if (ids[i] >= vocab) {
            fprintf(stderr, "hymba-run: --tokens: id %d is outside the vocabulary [0, %d)\n",
                    (int)ids[i], vocab);
            hy_model_free(m);
            return EXIT_USAGE;
        }
    if ((r = hy_seq_new(m, &s, &err)) < 0)
        goto fail;
    if (o->dump_logits && !(all = malloc((size_t)T * (size_t)vocab * sizeof(float)))) {
        r = hy_err_set(&err, -ENOMEM, "out of memory for %d x %d logits", T, vocab);
        goto fail;
    }
    t0 = now_s();
    if ((r = hy_seq_prefill(m, s, ids, T, all, &err)) < 0)
        goto fail;
    if (o->verbose)
        fprintf(stderr, "hymba-run: prefill of %d tokens in %.3f s\n", T, now_s() - t0);
    if (o->dump_logits && (r = dump_logits(o->dump_logits, all, T, vocab, &err)) < 0)
        goto fail;
    if (o->n_gen > 0)
        r = generate(m, s, o, &err);
    else if (!o->dump_logits)
        print_top(hy_seq_logits(s), vocab);
    if (r < 0)
        goto fail;
    free(all);
    hy_seq_free(s);
    hy_model_free(m);
    return 0;
fail:
    fprintf(stderr, "hymba-run: %s\n", err.msg);
    free(all);
    hy_seq_free(s);
    hy_model_free(m);
    return EXIT_RUNTIME;
}

int main(int argc, char **argv)
{
    run_opts o = { .backend = "auto", .top_p = 1.0f, .repeat_penalty = 1.0f };
    hy_sampling def;
    int32_t *ids;
    int T = 0, rc;

    hy_sampling_default(&def);
    o.top_k = def.top_k;
    o.top_p = def.top_p;
    o.min_p = def.min_p;
    o.repeat_last_n = def.repeat_last_n;
    if (parse_args(argc, argv, &o) < 0)
        return EXIT_USAGE;
    if (o.help) {
        usage(stdout);
        return 0;
    }
    if (o.version) {
        printf("hymba-run " PACKAGE_VERSION "\n");
        return 0;
    }
    if ((!!o.tokens + !!o.tokenize + !!o.detokenize + !!(o.prompt || o.chat)) > 1) {
        fprintf(stderr, "hymba-run: use one of --tokens, -p/--chat, --tokenize, --detokenize\n"
                "Try 'hymba-run --help'.\n");
        return EXIT_USAGE;
    }
    if (!o.model || !(o.tokens || o.tokenize || o.detokenize || o.prompt || o.chat)) {
        fprintf(stderr, "hymba-run: %s is required\nTry 'hymba-run --help'.\n",
                !o.model ? "-m DIR" : "--tokens IDS, -p TEXT, --chat, --tokenize or --detokenize");
        return EXIT_USAGE;
    }
    if (o.tokenize || o.detokenize)
        return run_tok_only(&o);
    if (o.prompt || o.chat)
        return run_text(&o);
    if (!(ids = parse_ids(o.tokens, &T)))
        return EXIT_USAGE;
    rc = run(&o, ids, T);
    free(ids);
    return rc;
}
