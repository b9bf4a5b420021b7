/* hymba-ckbench: checkpoint size, save time and restore-to-first-token time versus re-prefilling. */
#include <config.h>   /* PACKAGE_VERSION */
#include "daemon/store.h"
#include "engine/ckpt.h"

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define MAX_POINTS 16
#define MB 1e6
#define BENCH_UID 0
#define LLAMA32_3B_BYTES_PER_TOKEN 114688.0  /* 28 layers x 8 KV heads x 128 x 2 (K,V) x 2 B (spec §7) */
#define PAPER_HYMBA_MB 79.0
#define PAPER_LLAMA_MB 918.0

typedef struct opts {
    const char *backend, *model, *dir;
    int threads;
    int64_t tokens[MAX_POINTS];
    int n_points;
    bool synthetic;          /* fill the state with random bytes instead of a real prefill */
    int snapshots;           /* K turn snapshots to include */
    int64_t turn_len;        /* > 0: snapshots every turn_len tokens before the end; else spread evenly */
    int repeat;              /* save/restore repetitions (the best is reported) */
    uint64_t seed;
} opts;

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static void usage(FILE *f)
{
    fprintf(f,
        "Usage: hymba-ckbench [OPTION]... MODEL_DIR\n"
        "Measure session checkpoints of MODEL_DIR: bytes on disk, save time (encode, write,\n"
        "fsync, rename), restore time to the first new token (read, validate, import, pick\n"
        "a token from the stored logits: no forward pass), and the re-prefill it replaces.\n"
        "\n"
        "  --backend cpu|cuda|auto  compute backend (default auto)\n"
        "  --threads N              CPU threads (default: all cores)\n"
        "  --tokens N[,N...]        conversation lengths (default 1024,4096,8192)\n"
        "  --synthetic              random state contents instead of a real prefill: sizes\n"
        "                           and save/restore times are the same, no prefill time\n"
        "  --snapshots K            also store K turn snapshots (default 0), spread evenly\n"
        "  --turn-len N             ... or taken every N tokens before the end (chat turns)\n"
        "  --repeat R               save/restore repetitions, best reported (default 3)\n"
        "  --dir DIR                where checkpoints are written (default: a new dir in /tmp)\n"
        "  --seed N                 token ids / synthetic state seed (default 1)\n"
        "  -h, --help               this help\n"
        "  -V, --version            version\n"
        "\n"
        "With a real prefill it also checks that the restored conversation decodes the\n"
        "next token to the same logits as the original (bit-identical on the CPU).\n");
}

static int parse_tokens(const char *s, opts *o)
{
    char *end;
    o->n_points = 0;
    while (*s && o->n_points < MAX_POINTS) {
        long long v = strtoll(s, &end, 10);
        if (end == s || v < 1)
            return -1;
        o->tokens[o->n_points++] = v;
        s = *end == ',' ? end + 1 : end;
        if (*end && *end != ',')
            return -1;
    }
    return o->n_points > 0 ? 0 : -1;
}

static int parse_args(int argc, char **argv, opts *o)
{
    enum { O_BACKEND = 256, O_THREADS, O_TOKENS, O_SYNTH, O_SNAPS, O_REPEAT, O_DIR, O_SEED, O_TURN };
    static const struct option lo[] = {
        { "backend", required_argument, NULL, O_BACKEND }, { "threads", required_argument, NULL, O_THREADS },
        { "tokens", required_argument, NULL, O_TOKENS }, { "synthetic", no_argument, NULL, O_SYNTH },
        { "snapshots", required_argument, NULL, O_SNAPS }, { "repeat", required_argument, NULL, O_REPEAT },
        { "dir", required_argument, NULL, O_DIR }, { "seed", required_argument, NULL, O_SEED },
        { "turn-len", required_argument, NULL, O_TURN },
        { "help", no_argument, NULL, 'h' }, { "version", no_argument, NULL, 'V' }, { 0, 0, 0, 0 },
    };
    int c;

    *o = (opts){ .backend = "auto", .repeat = 3, .seed = 1 };
    parse_tokens("1024,4096,8192", o);
    while ((c = getopt_long(argc, argv, "hV", lo, NULL)) != -1) {
        switch (c) {
        case O_BACKEND: o->backend = optarg; break;
        case O_THREADS: o->threads = atoi(optarg); break;
        case O_TOKENS:
            if (parse_tokens(optarg, o) < 0) {
                fprintf(stderr, "hymba-ckbench: --tokens wants N[,N...] with N >= 1, got \"%s\"\n", optarg);
                return 2;
            }
            break;
        case O_SYNTH: o->synthetic = true; break;
        case O_SNAPS: o->snapshots = atoi(optarg); break;
        case O_REPEAT: o->repeat = atoi(optarg) > 0 ? atoi(optarg) : 1; break;
        case O_DIR: o->dir = optarg; break;
        case O_SEED: o->seed = strtoull(optarg, NULL, 10); break;
        case O_TURN: o->turn_len = atoll(optarg); break;
        case 'h': usage(stdout); exit(0);
        case 'V': printf("hymba-ckbench %s\n", PACKAGE_VERSION); exit(0);
        default: usage(stderr); return 2;
        }
    }
    if (optind != argc - 1) {
        usage(stderr);
        return 2;
    }
    for (int i = 0; i < o->n_points; i++)
        if (o->turn_len * o->snapshots >= o->tokens[i]) {
            fprintf(stderr, "hymba-ckbench: --turn-len x --snapshots must be below every --tokens value\n");
            return 2;
        }
    if (o->snapshots < 0 || o->snapshots > HY_CKPT_SNAPS_MAX) {
        fprintf(stderr, "hymba-ckbench: --snapshots must be 0..%d\n", HY_CKPT_SNAPS_MAX);
        return 2;
    }
    o->model = argv[optind];
    return 0;
}

static uint64_t rnd(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

/* A state image of the model's shape after n tokens, random contents (--synthetic). */
static uint8_t *synthetic_image(const hy_arch *a, int64_t n, hy_dtype dt, uint64_t *seed, size_t *len)
{
    int64_t n_pos = a->n_meta + n;
    size_t bytes = hy_state_image_bytes(a, n_pos, dt), kvs = hy_dtype_size(dt);
    uint8_t *img = malloc(bytes), *p;
    hy_state_image_hdr h = {
        .magic = HY_STATE_IMAGE_MAGIC, .version = HY_STATE_IMAGE_VERSION, .n_layers = (uint32_t)a->n_layers,
        .d_inner = (uint32_t)a->d_inner, .d_state = (uint32_t)a->d_state, .d_conv = (uint32_t)a->d_conv,
        .n_kv_layers = (uint32_t)a->n_kv_layers, .n_kv_heads = (uint32_t)a->n_kv_heads,
        .head_dim = (uint32_t)a->head_dim, .v_head_dim = (uint32_t)a->v_head_dim, .kv_dtype = dt,
        .n_meta = (uint32_t)a->n_meta, .window = (uint32_t)a->window, .n_pos = n_pos,
    };
    if (!img)
        return NULL;
    memcpy(img, &h, sizeof(h));
    p = img + sizeof(h);
    /* Small finite floats (or bf16 halves of them) everywhere, then the n_kept fields. */
    for (uint8_t *q = p; q + 4 <= img + bytes; q += 4) {
        float v = (float)((int64_t)(rnd(seed) % 2001) - 1000) / 1000.0f;
        memcpy(q, &v, 4);
    }
    p += (size_t)a->n_layers * a->d_inner * (a->d_conv + a->d_state) * 4;
    for (int L = 0; L < a->n_layers; L++) {
        if (a->kv_src[L] != L)
            continue;
        uint32_t kept = (uint32_t)hy_state_image_kept(a, L, n_pos);
        size_t ek = (size_t)a->n_kv_heads * a->head_dim * kvs, ev = (size_t)a->n_kv_heads * a->v_head_dim * kvs;
        memcpy(p, &kept, 4);
        p += 4;
        /* K/V bytes depend on (layer, position) only, as real ones do: snapshots of
         * a shorter conversation share them with the longer one. */
        for (int part = 0; part < 2; part++)
            for (uint32_t e = 0; e < kept; e++) {
                uint64_t h = ((uint64_t)(L * 2 + part) << 40) ^ (uint64_t)(n - kept + e) ^ 0x9e3779b97f4a7c15ULL;
                size_t w = part ? ev : ek;
                for (size_t j = 0; j + 2 <= w; j += 2) {
                    uint16_t v = (uint16_t)(0x3c00 | (rnd(&h) & 0x3ff)); /* finite as fp16/bf16 halves */
                    memcpy(p + j, &v, 2);
                }
                p += w;
            }
    }
    *len = bytes;
    return img;
}

/* Bytes of the state image by part, for the comparison with the paper. */
static void image_parts(const hy_arch *a, int64_t n, hy_dtype dt, double *recur, double *kv_glob, double *kv_swa)
{
    size_t kvs = hy_dtype_size(dt);
    *recur = (double)a->n_layers * a->d_inner * (a->d_conv + a->d_state) * 4;
    *kv_glob = *kv_swa = 0;
    for (int L = 0; L < a->n_layers; L++) {
        if (a->kv_src[L] != L)
            continue;
        double b = (double)hy_state_image_kept(a, L, a->n_meta + n) * a->n_kv_heads *
                   (a->head_dim + a->v_head_dim) * kvs;
        *(a->is_global[L] ? kv_glob : kv_swa) += b;
    }
}

typedef struct point {
    int64_t tokens;
    uint64_t file_bytes;
    double prefill_ms, capture_ms, save_ms, load_ms, import_ms, restore_ms;
    double recur, kv_glob, kv_swa;
    int kv_bytes;            /* bytes per K/V element in the measured file (4 CPU, 2 CUDA) */
    int check;               /* 1 identical next-token logits, 0 differ, -1 not checked */
    double max_diff;
} point;

/* Build the conversation state of n tokens in s (prefill or synthetic), with K snapshots. */
static int build_state(hy_model *m, hy_seq *s, const opts *o, int64_t n, hy_ckpt *c, point *pt, hy_err *err)
{
    const hy_arch *a = hy_model_arch(m);
    uint64_t seed = o->seed * 0x9e3779b97f4a7c15ULL + (uint64_t)n;
    int32_t *tok = malloc((size_t)n * 4);
    float *logits = NULL;
    int rc = 0;

    for (int64_t i = 0; i < n; i++)
        tok[i] = 3 + (int32_t)(rnd(&seed) % (uint64_t)(a->vocab - 3));
    int64_t done = 0;
    for (int k = 0; k <= o->snapshots && rc == 0; k++) {
        /* Snapshot k after (k+1)/(K+1) of the tokens, or turn_len * (K-k) tokens before the end. */
        int64_t upto = k == o->snapshots ? n
                     : o->turn_len > 0 ? n - o->turn_len * (o->snapshots - k)
                     : n * (k + 1) / (o->snapshots + 1);
        if (upto <= done)
            continue;
        if (o->synthetic) {
            size_t len;
            uint8_t *img = synthetic_image(a, upto, strcmp(hy_model_backend(m), "cpu") ? HY_DT_BF16 : HY_DT_F32,
                                           &seed, &len);
            if (!logits)
                logits = calloc((size_t)a->vocab, 4);
            logits[rnd(&seed) % (uint64_t)a->vocab] = 1.0f;
            rc = img ? hy_seq_import(m, s, img, len, tok, upto, logits, err) : -ENOMEM;
            free(img);
        } else {
            double t0 = now_ms();
            rc = hy_seq_prefill(m, s, tok + done, (int)(upto - done), NULL, err);
            pt->prefill_ms += now_ms() - t0;
        }
        done = upto;
        if (rc == 0 && k < o->snapshots) {
            hy_ckpt_snap sn;
            if ((rc = hy_ckpt_snap_take(m, s, (uint32_t)k, 0, &sn, err)) == 0)
                rc = hy_ckpt_snap_push(c, &sn, err);
        }
    }
    free(tok);
    free(logits);
    return rc;
}

static int run_point(hy_model *m, hy_store *st, const opts *o, int64_t n, point *pt, hy_err *err)
{
    const hy_arch *a = hy_model_arch(m);
    hy_ckpt c = { .owner_uid = BENCH_UID, .snap_keep = (uint32_t)o->snapshots };
    hy_seq *s = NULL, *r = NULL;
    char path[4400];
    struct stat sb;
    int rc;

    memset(pt, 0, sizeof(*pt));
    pt->tokens = n;
    pt->check = -1;
    snprintf(c.id, sizeof(c.id), "bench-%" PRId64, n);
    c.rng.s[0] = 1;
    c.sampling = (hy_sampling){ .temperature = 0.0f, .top_p = 1.0f, .repeat_penalty = 1.0f };
    if ((rc = hy_seq_new(m, &s, err)) < 0 || (rc = build_state(m, s, o, n, &c, pt, err)) < 0)
        goto out;
    pt->capture_ms = pt->save_ms = pt->load_ms = pt->import_ms = INFINITY;
    for (int i = 0; i < o->repeat; i++) {
        double t0 = now_ms();
        if ((rc = hy_ckpt_capture(m, s, &c, err)) < 0)
            goto out;
        double t1 = now_ms();
        if ((rc = hy_store_save(st, BENCH_UID, &c, a, err)) < 0)
            goto out;
        double t2 = now_ms();
        pt->capture_ms = fmin(pt->capture_ms, t1 - t0);
        pt->save_ms = fmin(pt->save_ms, t2 - t1);
    }
    snprintf(path, sizeof(path), "%s/%d/%s.hyck", hy_store_root(st), BENCH_UID, c.id);
    if (stat(path, &sb) == 0)
        pt->file_bytes = (uint64_t)sb.st_size;
    hy_dtype kdt = (hy_dtype)((const hy_state_image_hdr *)c.image)->kv_dtype;
    image_parts(a, n, kdt, &pt->recur, &pt->kv_glob, &pt->kv_swa);
    pt->kv_bytes = (int)hy_dtype_size(kdt);
    for (int i = 0; i < o->repeat; i++) {
        hy_ckpt d;
        hy_ckpt_reason why;
        hy_seq_free(r);
        r = NULL;
        if ((rc = hy_seq_new(m, &r, err)) < 0)
            goto out;
        double t0 = now_ms();
        uint8_t id[HY_FINGERPRINT_LEN];
        hy_ckpt_model_id(m, id);
        if ((rc = hy_store_load(st, BENCH_UID, c.id, a, id, &d, &why, NULL, 0, err)) < 0)
            goto out;
        double t1 = now_ms();
        rc = hy_ckpt_restore(m, r, &d, err);
        volatile int32_t first = hy_argmax(hy_seq_logits(r), a->vocab);  /* the first new token */
        (void)first;
        double t2 = now_ms();
        hy_ckpt_clear(&d);
        if (rc < 0)
            goto out;
        pt->load_ms = fmin(pt->load_ms, t1 - t0);
        pt->import_ms = fmin(pt->import_ms, t2 - t1);
    }
    pt->restore_ms = pt->load_ms + pt->import_ms;
    if (!o->synthetic) {
        /* The next token through both conversations: the same logits. */
        int32_t t = hy_argmax(hy_seq_logits(s), a->vocab);
        if ((rc = hy_seq_decode_batch(m, &s, &t, 1, err)) < 0 || (rc = hy_seq_decode_batch(m, &r, &t, 1, err)) < 0)
            goto out;
        const float *x = hy_seq_logits(s), *y = hy_seq_logits(r);
        pt->check = memcmp(x, y, (size_t)a->vocab * 4) == 0;
        for (int i = 0; i < a->vocab; i++)
            pt->max_diff = fmax(pt->max_diff, fabs((double)x[i] - y[i]));
    }
out:
    hy_ckpt_clear(&c);
    hy_seq_free(s);
    hy_seq_free(r);
    return rc;
}

static void report(const opts *o, hy_model *m, const point *p, int n)
{
    printf("\nmodel %s, backend %s, %s state, %d snapshot(s)\n", o->model, hy_model_backend(m),
           o->synthetic ? "synthetic (random contents)" : "prefilled", o->snapshots);
    printf("%7s %10s %10s %9s %9s %9s %9s %10s %10s %11s %8s  %s\n", "tokens", "file MB", "bf16-KV MB",
           "SSM+conv", "KV glob", "KV SWA", "save ms", "load ms", "import ms", "prefill ms", "speedup",
           "next-token check");
    for (int i = 0; i < n; i++) {
        char sp[32] = "-", chk[64] = "-";
        if (!o->synthetic) {
            snprintf(sp, sizeof(sp), "%.0fx", p[i].prefill_ms / p[i].restore_ms);
            snprintf(chk, sizeof(chk), "%s (max |diff| %.3g)", p[i].check ? "identical" : "DIFFERENT", p[i].max_diff);
        }
        /* The same file with bf16 K/V (the CUDA backend's image), computed from the measured one
         * (the session's own K/V only: snapshot K/V is not in the parts). */
        double bf16 = p[i].file_bytes - (p[i].kv_glob + p[i].kv_swa) * (1.0 - 2.0 / p[i].kv_bytes);
        printf("%7" PRId64 " %10.2f %10.2f %9.2f %9.2f %9.2f %9.1f %10.1f %10.1f %11.0f %8s  %s\n", p[i].tokens,
               p[i].file_bytes / MB, bf16 / MB, p[i].recur / MB, p[i].kv_glob / MB, p[i].kv_swa / MB, p[i].save_ms,
               p[i].load_ms, p[i].import_ms, o->synthetic ? NAN : p[i].prefill_ms, sp, chk);
    }
    printf("(save = encode + write + fsync + rename + dir fsync; restore = load (read + validate) +\n"
           " import + first token from the stored logits; capture (state export) not included:\n");
    for (int i = 0; i < n; i++)
        printf("  %" PRId64 " tokens: capture %.1f ms\n", p[i].tokens, p[i].capture_ms);
    printf(" Llama-3.2-3B bf16 K/V for comparison: %.1f MB per 1k tokens; paper: Hymba %.0f MB vs Llama %.0f MB at 8k)\n",
           LLAMA32_3B_BYTES_PER_TOKEN * 1024 / MB, PAPER_HYMBA_MB, PAPER_LLAMA_MB);
}

int main(int argc, char **argv)
{
    opts o;
    hy_load_opts lo = { 0 };
    hy_model *m = NULL;
    hy_store *st = NULL;
    hy_err err = {0};
    point pts[MAX_POINTS];
    char dirbuf[] = "/tmp/hymba-ckbench-XXXXXX";
    int rc = parse_args(argc, argv, &o);

    if (rc)
        return rc;
    int64_t max_n = 0;
    for (int i = 0; i < o.n_points; i++)
        max_n = o.tokens[i] > max_n ? o.tokens[i] : max_n;
    lo.backend = o.backend;
    lo.threads = o.threads;
    lo.max_ctx = max_n + 1;
    if (hy_model_load(o.model, &lo, &m, &err) < 0) {
        fprintf(stderr, "hymba-ckbench: %s\n", err.msg);
        return 1;
    }
    if (!o.dir && !(o.dir = mkdtemp(dirbuf))) {
        perror("hymba-ckbench: mkdtemp");
        return 1;
    }
    if (hy_store_open(o.dir, true, &st, &err) < 0) {
        fprintf(stderr, "hymba-ckbench: %s\n", err.msg);
        return 1;
    }
    for (int i = 0; i < o.n_points; i++) {
        fprintf(stderr, "hymba-ckbench: %" PRId64 " tokens...\n", o.tokens[i]);
        if (run_point(m, st, &o, o.tokens[i], &pts[i], &err) < 0) {
            fprintf(stderr, "hymba-ckbench: %" PRId64 " tokens: %s\n", o.tokens[i], err.msg);
            rc = 1;
            break;
        }
    }
    report(&o, m, pts, rc ? 0 : o.n_points);
    for (int i = 0; i < o.n_points; i++) {
        char id[64];
        snprintf(id, sizeof(id), "bench-%" PRId64, o.tokens[i]);
        hy_store_remove(st, BENCH_UID, id, NULL);
    }
    hy_store_free(st);
    hy_model_free(m);
    return rc;
}
