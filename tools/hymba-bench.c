/* hymba-bench: prefill/decode throughput of a checkpoint and its memory-bandwidth roofline fraction. */
#include <config.h>   /* PACKAGE_VERSION */
#include <errno.h>
#include <getopt.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include "engine/hymba.h"

/*
 * Roofline: a decode step reads every weight once (hy_model_weight_bytes), so
 * no decoder can beat  copy bandwidth / weight bytes  tokens per second.  The
 * copy bandwidth is measured here, in the same run: all threads memcpy their
 * slice of a buffer much larger than the caches; bytes read + bytes written
 * over the time, best of several passes.  On a shared machine the bandwidth
 * drifts, so it is measured right after each batch-1 decode measurement and
 * each repeat gets its own fraction; the medians are reported.
 */
#define BW_BYTES (256ull << 20)  /* source buffer; the destination is as large */
#define BW_PASSES 3
#define MAX_BATCHES 16
#define TOKEN_SEED 12345u

typedef struct bench_opts {
    const char *dir;
    const char *backend;
    int threads;
    int prompt;
    int decode;
    int repeat;
    int batches[MAX_BATCHES];
    int n_batches;
    int prefills[MAX_BATCHES];   /* extra prompt lengths: prefill tok/s and time to first token */
    int n_prefills;
    int chunk;                   /* positions per prefill call (0: engine default) */
    bool json;
} bench_opts;

/* Device ceilings when the backend measures them (CUDA): copy GB/s, bf16 TFLOP/s. */
static double dev_bw_gbs, dev_tflops;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof(double), cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

/* ---- copy bandwidth ---- */

typedef struct bw_slice {
    char *dst;
    const char *src;
    size_t n;
    pthread_barrier_t *start;
} bw_slice;

static void *bw_worker(void *v)
{
    bw_slice *s = v;
    pthread_barrier_wait(s->start);
    memcpy(s->dst, s->src, s->n);
    return NULL;
}

/* Best bytes/s (read + written) over BW_PASSES copies split across threads. */
static double copy_bandwidth(int threads)
{
    char *src = malloc(BW_BYTES), *dst = malloc(BW_BYTES);
    double best = 0;
    if (!src || !dst) {
        free(src);
        free(dst);
        return 0;
    }
    memset(src, 1, BW_BYTES);
    memset(dst, 2, BW_BYTES);   /* fault the pages in before timing */
    pthread_t *th = calloc((size_t)threads, sizeof(pthread_t));
    bw_slice *sl = calloc((size_t)threads, sizeof(bw_slice));
    pthread_barrier_t start;
    size_t per = BW_BYTES / (size_t)threads / 64 * 64;
    for (int pass = 0; pass < BW_PASSES; pass++) {
        pthread_barrier_init(&start, NULL, (unsigned)threads + 1);
        for (int t = 0; t < threads; t++) {
            sl[t] = (bw_slice){dst + per * t, src + per * t, per, &start};
            pthread_create(&th[t], NULL, bw_worker, &sl[t]);
        }
        double t0 = now_s();
        pthread_barrier_wait(&start);
        for (int t = 0; t < threads; t++)
            pthread_join(th[t], NULL);
        double dt = now_s() - t0;
        pthread_barrier_destroy(&start);
        double bw = 2.0 * per * threads / dt;
        if (bw > best)
            best = bw;
    }
    free(th);
    free(sl);
    free(src);
    free(dst);
    return best;
}

/* ---- model runs ---- */

static void random_tokens(int32_t *ids, int n, int vocab)
{
    unsigned s = TOKEN_SEED;
    for (int i = 0; i < n; i++) {
        s = s * 1103515245u + 12345u;
        ids[i] = 3 + (int32_t)((s >> 8) % (unsigned)(vocab - 3));
    }
}

/* Decode tok/s of B conversations after a prompt each: median over repeats. */
static double copy_bandwidth(int threads);

/* frac: NULL, or the median over repeats of decode tok/s / (copy bandwidth measured
 * right after that repeat / weight bytes); bw_med: the median bandwidth. */
static int bench_decode(hy_model *m, const bench_opts *o, int B, const int32_t *prompt, double *tok_s,
                        int threads, double *frac, double *bw_med, hy_err *err)
{
    double *fr = calloc((size_t)o->repeat, sizeof(double)), *bws = calloc((size_t)o->repeat, sizeof(double));
    uint64_t wb = hy_model_weight_bytes(m);
    int vocab = hy_model_arch(m)->vocab;
    hy_seq **seqs = calloc((size_t)B, sizeof(hy_seq *));
    int32_t *tok = calloc((size_t)B, sizeof(int32_t));
    double *runs = calloc((size_t)o->repeat, sizeof(double));
    int rc = 0;

    for (int b = 0; b < B && rc == 0; b++) {
        rc = hy_seq_new(m, &seqs[b], err);
        /* different prompt lengths: the states sit at different positions */
        if (rc == 0)
            rc = hy_seq_prefill(m, seqs[b], prompt, o->prompt - b % 4 > 0 ? o->prompt - b % 4 : 1, NULL, err);
    }
    hy_sampling gp;
    hy_rng rng;
    int32_t *next = calloc((size_t)B, sizeof(int32_t));
    double *steps = calloc((size_t)o->decode, sizeof(double));
    hy_sampling_default(&gp);
    gp.temperature = 0.0f;   /* greedy */
    gp.repeat_penalty = 1.0f;
    hy_rng_seed(&rng, TOKEN_SEED);
    for (int b = 0; b < B; b++)
        tok[b] = hy_argmax(hy_seq_logits(seqs[b]), vocab);
    for (int r = 0; r < o->repeat && rc == 0; r++) {
        /* the next token is chosen inside the step (on the device when the backend can) */
        for (int step = 0; step < o->decode && rc == 0; step++) {
            double t0 = now_s();
            rc = hy_seq_decode_next(m, seqs, tok, B, &gp, &rng, false, next, err);
            steps[step] = now_s() - t0;
            memcpy(tok, next, (size_t)B * sizeof(int32_t));
        }
        /* the median step: a step that lost its CPU to another process does not count */
        runs[r] = (double)B / median(steps, o->decode);
        if (frac) {
            double dbw = 0, dtf = 0;
            hy_err e2;
            if (dev_bw_gbs > 0 && hy_model_device_ceilings(m, &dbw, &dtf, &e2) == 0)
                bws[r] = dbw * 1e9;
            else
                bws[r] = copy_bandwidth(threads);
            fr[r] = wb && bws[r] > 0 ? runs[r] / (bws[r] / (double)wb) : 0;
        }
    }
    if (rc == 0) {
        *tok_s = median(runs, o->repeat);
        if (frac) {
            *frac = median(fr, o->repeat);
            *bw_med = median(bws, o->repeat);
        }
    }
    free(fr);
    free(bws);
    free(next);
    free(steps);
    for (int b = 0; b < B; b++)
        hy_seq_free(seqs[b]);
    free(seqs);
    free(tok);
    free(runs);
    return rc;
}

/* Matrix FLOPs of a prefill of T tokens after the meta rows: every Linear on
 * every row (lm_head on the last only), attention scores and P.V over the
 * keys each row sees (global: all before it; SWA: meta + window + itself). */
static double prefill_flops(const hy_arch *a, int T)
{
    double lin = 0, f;
    int P = a->dt_rank + 2 * a->d_state;
    for (int L = 0; L < a->n_layers; L++)
        lin += (double)a->in_proj_rows[L] * a->hidden + (double)P * a->d_inner + (double)a->d_inner * a->dt_rank +
               (double)a->hidden * a->d_inner + 3.0 * a->intermediate * a->hidden;
    f = 2.0 * lin * T + 2.0 * a->vocab * a->hidden;
    for (int L = 0; L < a->n_layers; L++)
        for (int t = 0; t < T; t++) {
            int64_t i = (int64_t)a->n_meta + t, cap = (int64_t)a->n_meta + a->window + 1;
            int64_t keys = a->is_global[L] || i + 1 <= cap ? i + 1 : cap;
            f += 2.0 * a->n_heads * (double)keys * (a->head_dim + a->v_head_dim);
        }
    return f;
}

/* One fresh conversation: prefill of n prompt tokens, then the first token
 * chosen (time to first token).  frac: achieved FLOP rate over the device's
 * measured bf16 matrix rate (0 when unknown). */
static int bench_prefill(hy_model *m, const int32_t *prompt, int n, double *tok_s, double *ttft, double *frac,
                         hy_err *err)
{
    hy_seq *s = NULL;
    int rc = hy_seq_new(m, &s, err);
    if (rc < 0)
        return rc;
    /* warm-up with the same prompt: first-use costs (cuBLAS heuristics for these shapes,
     * kernel attributes) stay out of the measurement */
    if ((rc = hy_seq_prefill(m, s, prompt, n, NULL, err)) < 0) {
        hy_seq_free(s);
        return rc;
    }
    hy_seq_reset(m, s);
    double t0 = now_s();
    rc = hy_seq_prefill(m, s, prompt, n, NULL, err);
    double t1 = now_s();
    if (rc == 0) {
        volatile int32_t first = hy_argmax(hy_seq_logits(s), hy_model_arch(m)->vocab);
        (void)first;
        *ttft = now_s() - t0;
        *tok_s = n / (t1 - t0);
        *frac = dev_tflops > 0 ? prefill_flops(hy_model_arch(m), n) / (t1 - t0) / (dev_tflops * 1e12) : 0;
    }
    hy_seq_free(s);
    return rc;
}

static void usage(FILE *f)
{
    fprintf(f,
            "usage: hymba-bench -m DIR [--backend cpu|cuda|auto] [--threads N] [--prompt N]\n"
            "                   [--decode N] [--batch B,...] [--repeat R] [--json]\n"
            "Measures load time, prefill tokens/s (one prompt of N tokens), decode tokens/s\n"
            "(batch 1 and each given batch; from the median step time of each repeat, the median\n"
            "over repeats) and the fraction of the memory-bandwidth roofline:\n"
            "roofline tok/s = copy bandwidth measured in this run / weight bytes per decode step.\n"
            "  -m, --model DIR     Hugging Face checkpoint directory\n"
            "  --backend NAME      cpu, cuda or auto (default auto)\n"
            "  --threads N         CPU threads (default: all online cores)\n"
            "  --prompt N          prompt tokens (default 128)\n"
            "  --decode N          decode steps per measurement (default 16)\n"
            "  --batch B,...       extra decode batch sizes (default none)\n"
            "  --repeat R          decode measurements, the median is reported (default 3)\n"
            "  --prefill N,...     extra prompt lengths: prefill tok/s, time to first token and\n"
            "                      the fraction of the device's bf16 matrix rate (when measured)\n"
            "  --chunk N           positions per prefill call (default: the backend's pass size)\n"
            "  --json              one JSON object on stdout\n");
}

static int parse_args(int argc, char **argv, bench_opts *o)
{
    static const struct option lo[] = {
        {"model", required_argument, NULL, 'm'}, {"backend", required_argument, NULL, 'b'},
        {"threads", required_argument, NULL, 't'}, {"prompt", required_argument, NULL, 'p'},
        {"decode", required_argument, NULL, 'd'}, {"batch", required_argument, NULL, 'B'},
        {"repeat", required_argument, NULL, 'r'}, {"json", no_argument, NULL, 'j'},
        {"prefill", required_argument, NULL, 'P'}, {"chunk", required_argument, NULL, 'c'},
        {"help", no_argument, NULL, 'h'}, {"version", no_argument, NULL, 'V'}, {NULL, 0, NULL, 0}};
    int c;
    *o = (bench_opts){.backend = "auto", .prompt = 128, .decode = 16, .repeat = 3};
    while ((c = getopt_long(argc, argv, "m:h", lo, NULL)) != -1) {
        char *end = NULL;
        switch (c) {
        case 'm': o->dir = optarg; break;
        case 'b': o->backend = optarg; break;
        case 't': o->threads = (int)strtol(optarg, &end, 10); break;
        case 'p': o->prompt = (int)strtol(optarg, &end, 10); break;
        case 'd': o->decode = (int)strtol(optarg, &end, 10); break;
        case 'r': o->repeat = (int)strtol(optarg, &end, 10); break;
        case 'c': o->chunk = (int)strtol(optarg, &end, 10); break;
        case 'P':
            for (char *p = optarg; *p;) {
                long v = strtol(p, &end, 10);
                if (end == p || v < 1 || v > 1000000 || o->n_prefills == MAX_BATCHES || (*end && *end != ',')) {
                    fprintf(stderr, "hymba-bench: --prefill '%s': expected up to %d lengths in 1..1000000\n",
                            optarg, MAX_BATCHES);
                    return -1;
                }
                o->prefills[o->n_prefills++] = (int)v;
                p = *end == ',' ? end + 1 : end;
            }
            end = NULL;
            break;
        case 'j': o->json = true; break;
        case 'B':
            for (char *p = optarg; *p;) {
                long v = strtol(p, &end, 10);
                if (end == p || v < 1 || v > 4096 || o->n_batches == MAX_BATCHES) {
                    fprintf(stderr, "hymba-bench: --batch '%s': expected up to %d sizes in 1..4096\n", optarg,
                            MAX_BATCHES);
                    return -1;
                }
                o->batches[o->n_batches++] = (int)v;
                p = *end == ',' ? end + 1 : end;
                if (*end && *end != ',') {
                    fprintf(stderr, "hymba-bench: --batch '%s': unexpected '%c'\n", optarg, *end);
                    return -1;
                }
            }
            end = NULL;
            break;
        case 'h': usage(stdout); exit(0);
        case 'V': printf("hymba-bench %s\n", PACKAGE_VERSION); exit(0);
        default: usage(stderr); return -1;
        }
        if (end && *end) {
            fprintf(stderr, "hymba-bench: bad number '%s'\n", optarg);
            return -1;
        }
    }
    if (!o->dir || optind != argc) {
        usage(stderr);
        return -1;
    }
    if (o->prompt < 1 || o->decode < 1 || o->repeat < 1) {
        fprintf(stderr, "hymba-bench: --prompt, --decode and --repeat must be >= 1\n");
        return -1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    bench_opts o;
    hy_err err = {0};
    hy_model *m = NULL;
    double dec[MAX_BATCHES] = {0};

    if (parse_args(argc, argv, &o) < 0)
        return 2;
    int threads = o.threads > 0 ? o.threads : (int)sysconf(_SC_NPROCESSORS_ONLN);
    if (threads < 1)
        threads = 1;
    hy_load_opts lo = {.backend = o.backend, .threads = o.threads, .prefill_chunk = o.chunk,
                       .max_ctx = o.prompt + (int64_t)o.decode * o.repeat + 8};
    for (int i = 0; i < o.n_prefills; i++)
        if (o.prefills[i] + 8 > lo.max_ctx)
            lo.max_ctx = o.prefills[i] + 8;
    double t0 = now_s();
    if (hy_model_load(o.dir, &lo, &m, &err) < 0) {
        fprintf(stderr, "hymba-bench: %s\n", err.msg);
        return 1;
    }
    double load_s = now_s() - t0;
    const hy_arch *a = hy_model_arch(m);
    {
        hy_err e2;
        if (hy_model_device_ceilings(m, &dev_bw_gbs, &dev_tflops, &e2) < 0)
            dev_bw_gbs = dev_tflops = 0;
    }
    int maxp = o.prompt;
    for (int i = 0; i < o.n_prefills; i++)
        maxp = o.prefills[i] > maxp ? o.prefills[i] : maxp;
    int32_t *prompt = malloc((size_t)maxp * sizeof(int32_t));
    random_tokens(prompt, maxp, a->vocab);
    double pf_tok_s[MAX_BATCHES] = {0}, pf_ttft[MAX_BATCHES] = {0}, pf_frac[MAX_BATCHES] = {0};
    for (int i = 0; i < o.n_prefills; i++)
        if (bench_prefill(m, prompt, o.prefills[i], &pf_tok_s[i], &pf_ttft[i], &pf_frac[i], &err) < 0) {
            fprintf(stderr, "hymba-bench: prefill of %d: %s\n", o.prefills[i], err.msg);
            return 1;
        }

    /* prefill: one conversation, the whole prompt */
    hy_seq *s = NULL;
    double prefill_tok_s = 0, dec1 = 0;
    if (hy_seq_new(m, &s, &err) == 0) {
        t0 = now_s();
        if (hy_seq_prefill(m, s, prompt, o.prompt, NULL, &err) == 0)
            prefill_tok_s = o.prompt / (now_s() - t0);
        hy_seq_free(s);
    }
    double frac = 0, bw = 0;
    if (prefill_tok_s == 0 || bench_decode(m, &o, 1, prompt, &dec1, threads, &frac, &bw, &err) < 0) {
        fprintf(stderr, "hymba-bench: %s\n", err.msg);
        return 1;
    }
    for (int i = 0; i < o.n_batches; i++)
        if (bench_decode(m, &o, o.batches[i], prompt, &dec[i], threads, NULL, NULL, &err) < 0) {
            fprintf(stderr, "hymba-bench: batch %d: %s\n", o.batches[i], err.msg);
            return 1;
        }
    uint64_t wb = hy_model_weight_bytes(m);
    double roof = wb ? bw / (double)wb : 0;

    if (o.json) {
        printf("{\"model\": \"%s\", \"backend\": \"%s\", \"threads\": %d, \"weight_bytes\": %llu, "
               "\"load_s\": %.3f, \"prompt\": %d, \"prefill_tok_s\": %.3f, \"decode_steps\": %d, "
               "\"repeat\": %d, \"decode_tok_s\": %.3f, \"copy_bw_gbs\": %.3f, \"roofline_tok_s\": %.3f, "
               "\"roofline_fraction\": %.4f, \"batches\": [",
               o.dir, hy_model_backend(m), threads, (unsigned long long)wb, load_s, o.prompt, prefill_tok_s,
               o.decode, o.repeat, dec1, bw / 1e9, roof, frac);
        for (int i = 0; i < o.n_batches; i++)
            printf("%s{\"batch\": %d, \"decode_tok_s\": %.3f}", i ? ", " : "", o.batches[i], dec[i]);
        printf("], \"device_copy_gbs\": %.3f, \"device_bf16_tflops\": %.3f, \"prefills\": [", dev_bw_gbs,
               dev_tflops);
        for (int i = 0; i < o.n_prefills; i++)
            printf("%s{\"tokens\": %d, \"tok_s\": %.3f, \"ttft_s\": %.6f, \"matrix_fraction\": %.4f}",
                   i ? ", " : "", o.prefills[i], pf_tok_s[i], pf_ttft[i], pf_frac[i]);
        printf("]}\n");
    } else {
        printf("model          %s (%s backend, %d threads)\n", o.dir, hy_model_backend(m), threads);
        printf("weights        %.3f GB read per decode step\n", wb / 1e9);
        printf("load           %.3f s\n", load_s);
        printf("prefill        %.2f tok/s (%d tokens)\n", prefill_tok_s, o.prompt);
        printf("decode B=1     %.3f tok/s (median step time of %d steps, median of %d repeats)\n", dec1, o.decode,
               o.repeat);
        for (int i = 0; i < o.n_batches; i++)
            printf("decode B=%-5d %.3f tok/s total (%.3f per conversation)\n", o.batches[i], dec[i],
                   dec[i] / o.batches[i]);
        printf("copy bandwidth %.2f GB/s (read + written, best of %d passes after each repeat, median; %d threads)\n",
               bw / 1e9, BW_PASSES, threads);
        printf("roofline       %.3f tok/s (median bandwidth / weight bytes)\n", roof);
        printf("fraction       decode B=1 at %.1f%% of the roofline (median of the per-repeat fractions)\n",
               100 * frac);
        if (dev_bw_gbs > 0)
            printf("device         copy %.1f GB/s (read + written), bf16 matrix product %.1f TFLOP/s "
                   "(measured by the backend; the roofline above uses its copy bandwidth)\n", dev_bw_gbs, dev_tflops);
        for (int i = 0; i < o.n_prefills; i++) {
            printf("prefill N=%-5d %.1f tok/s, time to first token %.2f ms", o.prefills[i], pf_tok_s[i],
                   1e3 * pf_ttft[i]);
            if (pf_frac[i] > 0)
                printf(", %.1f%% of the bf16 matrix rate", 100 * pf_frac[i]);
            printf("\n");
        }
    }
    free(prompt);
    hy_model_free(m);
    return 0;
}
