/* hymba-tokbench.c: tokenizer benchmark: writes a deterministic mixed text file, or times encoding one (MB/s). */
#include "engine/tok.h"
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define DEFAULT_RUNS 5
#define MAX_RUNS 50

static void usage(FILE *f)
{
    fprintf(f,
            "usage: hymba-tokbench --generate MB FILE\n"
            "           write a deterministic MB-megabyte mix of English prose, C/Python code and\n"
            "           Unicode text (accents, CJK, emoji) to FILE\n"
            "       hymba-tokbench -m DIR [--runs N] [--lines] [--ids OUT] FILE\n"
            "           encode FILE with DIR/tokenizer.json N times (default %d) and print the\n"
            "           median MB/s; --lines encodes each line separately instead of the whole file;\n"
            "           --ids writes the ids of one more pass to OUT, comma-separated (exactness checks)\n",
            DEFAULT_RUNS);
}

/* ---- text generator: xorshift-driven choices among fixed fragments ---- */

static uint64_t gen_state = 0x9E3779B97F4A7C15ull;
static uint32_t gen_rand(uint32_t n)
{
    gen_state ^= gen_state << 13;
    gen_state ^= gen_state >> 7;
    gen_state ^= gen_state << 17;
    return (uint32_t)((gen_state >> 11) % n);
}

static const char *const words[] = {
    "the", "of", "and", "to", "in", "is", "that", "for", "it", "as", "was", "with", "be", "by", "on",
    "not", "he", "this", "are", "or", "his", "from", "at", "which", "but", "have", "an", "had", "they",
    "you", "were", "their", "one", "all", "we", "can", "her", "has", "there", "been", "if", "more",
    "when", "will", "would", "who", "so", "no", "system", "daemon", "kernel", "memory", "process",
    "network", "configuration", "assistant", "language", "model", "attention", "state", "sequence",
    "tokenizer", "encoding", "performance", "throughput", "latency", "Linux", "service", "journal",
    "unexpectedly", "straightforward", "nevertheless", "implementation", "documentation", "Hymba",
};
static const char *const code_lines[] = {
    "int main(int argc, char **argv) {",
    "    for (size_t i = 0; i < n; i++) sum += x[i] * w[i];",
    "    if (rc < 0) return hy_err_set(err, -EINVAL, \"bad value %d\", v);",
    "}",
    "def forward(self, x: torch.Tensor) -> torch.Tensor:",
    "        return self.norm(x + self.attn(x, mask=None))",
    "    printf(\"%s: %zu bytes\\n\", path, len);",
    "#include <stdio.h>",
    "$ systemctl status hymbad.service --no-pager",
    "    {\"role\": \"user\", \"content\": \"What is the load average?\"},",
};
static const char *const unicode_bits[] = {
    "café", "naïve", "Straße", "Ærøskøbing", "Zürich", "日本語のテキスト", "中文分词测试", "한국어 문장",
    "Ελληνικά", "русский текст", "עברית", "العربية", "😀", "🚀✨", "👍🏽", "🇯🇵", "∑ᵢ xᵢ² ≤ ε", "→ ← ↔",
};

static int generate(const char *path, long mb)
{
    size_t target = (size_t)mb * 1000 * 1000, done = 0;
    FILE *f = fopen(path, "wb");

    if (!f) {
        fprintf(stderr, "hymba-tokbench: %s: %s\n", path, strerror(errno));
        return 1;
    }
    while (done < target) {
        char line[1024];
        size_t n = 0;
        uint32_t kind = gen_rand(10);
        if (kind < 6) {         /* prose */
            uint32_t nw = 6 + gen_rand(20);
            for (uint32_t i = 0; i < nw && n < 900; i++) {
                const char *w = gen_rand(12) == 0 ? unicode_bits[gen_rand(sizeof(unicode_bits) / sizeof(*unicode_bits))]
                                                  : words[gen_rand(sizeof(words) / sizeof(*words))];
                n += (size_t)snprintf(line + n, sizeof(line) - n, "%s%s%s", i ? " " : "", w,
                                      gen_rand(15) == 0 ? "," : "");
            }
            n += (size_t)snprintf(line + n, sizeof(line) - n, ".\n");
        } else if (kind < 9) {  /* code */
            n = (size_t)snprintf(line, sizeof(line), "%s\n", code_lines[gen_rand(sizeof(code_lines) / sizeof(*code_lines))]);
        } else {                /* unicode-heavy line */
            for (uint32_t i = 0, nb = 3 + gen_rand(8); i < nb && n < 900; i++)
                n += (size_t)snprintf(line + n, sizeof(line) - n, "%s ",
                                      unicode_bits[gen_rand(sizeof(unicode_bits) / sizeof(*unicode_bits))]);
            line[n - 1] = '\n';
        }
        if (fwrite(line, 1, n, f) != n) {
            fprintf(stderr, "hymba-tokbench: %s: write failed\n", path);
            fclose(f);
            return 1;
        }
        done += n;
    }
    if (fclose(f) != 0) {
        fprintf(stderr, "hymba-tokbench: %s: %s\n", path, strerror(errno));
        return 1;
    }
    printf("wrote %zu bytes to %s\n", done, path);
    return 0;
}

/* ---- timing ---- */

/* Wall clock, or this process's CPU time (steadier on a shared machine). */
static double now_s(clockid_t clock)
{
    struct timespec ts;

    clock_gettime(clock, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;

    return (x > y) - (x < y);
}

static char *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    char *p = NULL;
    long n;

    if (!f)
        return NULL;
    if (fseek(f, 0, SEEK_END) == 0 && (n = ftell(f)) >= 0 && fseek(f, 0, SEEK_SET) == 0 &&
        (p = malloc((size_t)n + 1)) && fread(p, 1, (size_t)n, f) == (size_t)n) {
        p[n] = '\0';
        *len = (size_t)n;
    } else {
        free(p);
        p = NULL;
    }
    fclose(f);
    return p;
}

/* One pass over the text: whole, or line by line; returns the id count.
 * ids_out (may be NULL) receives every id, comma-separated. */
static long encode_pass(const hy_tok *t, const char *text, size_t len, bool lines, FILE *ids_out)
{
    long total = 0;
    size_t pos = 0;
    hy_err err = {0};

    while (pos < len || (!lines && pos == 0)) {
        const char *nl = lines ? memchr(text + pos, '\n', len - pos) : NULL;
        size_t end = nl ? (size_t)(nl - text) + 1 : len;
        int32_t *ids;
        size_t n;
        if (hy_tok_encode(t, text + pos, end - pos, false, &ids, &n, &err) < 0) {
            fprintf(stderr, "hymba-tokbench: encode: %s\n", err.msg);
            return -1;
        }
        for (size_t i = 0; ids_out && i < n; i++)
            fprintf(ids_out, total + (long)i ? ",%d" : "%d", ids[i]);
        free(ids);
        total += (long)n;
        pos = end;
        if (!lines)
            break;
    }
    return total;
}

static int bench(const char *dir, const char *path, int runs, bool lines, const char *ids_path)
{
    hy_tok *t = NULL;
    hy_err err = {0};
    size_t len = 0;
    char *text = read_file(path, &len);
    double mbps[MAX_RUNS], cpu_mbps[MAX_RUNS];
    long n_ids = 0;

    if (!text) {
        fprintf(stderr, "hymba-tokbench: %s: cannot read\n", path);
        return 1;
    }
    if (hy_tok_load(dir, &t, &err) < 0) {
        fprintf(stderr, "hymba-tokbench: %s\n", err.msg);
        free(text);
        return 1;
    }
    for (int r = 0; r < runs; r++) {
        double t0 = now_s(CLOCK_MONOTONIC), c0 = now_s(CLOCK_PROCESS_CPUTIME_ID);
        n_ids = encode_pass(t, text, len, lines, NULL);
        double dt = now_s(CLOCK_MONOTONIC) - t0, dc = now_s(CLOCK_PROCESS_CPUTIME_ID) - c0;
        if (n_ids < 0)
            break;
        mbps[r] = (double)len / 1e6 / dt;
        cpu_mbps[r] = (double)len / 1e6 / dc;
        printf("run %d: %.3f s, %.2f MB/s (CPU time %.3f s, %.2f MB/s), %ld ids\n", r + 1, dt, mbps[r], dc,
               cpu_mbps[r], n_ids);
    }
    if (n_ids >= 0) {
        qsort(mbps, (size_t)runs, sizeof(double), cmp_double);
        qsort(cpu_mbps, (size_t)runs, sizeof(double), cmp_double);
        printf("hymba-tokbench: %s (%zu bytes, %s): median %.2f MB/s wall, %.2f MB/s CPU time over %d runs, "
               "%ld ids\n", path, len, lines ? "per line" : "whole file", mbps[runs / 2], cpu_mbps[runs / 2],
               runs, n_ids);
    }
    if (n_ids >= 0 && ids_path) {
        FILE *f = fopen(ids_path, "w");
        if (!f || encode_pass(t, text, len, lines, f) < 0 || fputc('\n', f) == EOF || fclose(f) != 0) {
            fprintf(stderr, "hymba-tokbench: %s: cannot write ids\n", ids_path);
            n_ids = -1;
        }
    }
    hy_tok_free(t);
    free(text);
    return n_ids < 0;
}

int main(int argc, char **argv)
{
    const char *dir = NULL, *file = NULL, *ids_path = NULL;
    int runs = DEFAULT_RUNS;
    bool lines = false;

    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--generate") == 0 && i + 2 < argc) {
            long mb = strtol(argv[i + 1], NULL, 10);
            if (mb <= 0 || mb > 4096) {
                fprintf(stderr, "hymba-tokbench: --generate MB must be in [1, 4096]\n");
                return 2;
            }
            return generate(argv[i + 2], mb);
        } else if (strcmp(argv[i], "-m") == 0 && i + 1 < argc)
            dir = argv[++i];
        else if (strcmp(argv[i], "--runs") == 0 && i + 1 < argc) {
            runs = atoi(argv[++i]);
            if (runs < 1 || runs > MAX_RUNS) {
                fprintf(stderr, "hymba-tokbench: --runs must be in [1, %d]\n", MAX_RUNS);
                return 2;
            }
        } else if (strcmp(argv[i], "--ids") == 0 && i + 1 < argc)
            ids_path = argv[++i];
        else if (strcmp(argv[i], "--lines") == 0)
            lines = true;
        else if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
            usage(stdout);
            return 0;
        } else if (argv[i][0] != '-' && !file)
            file = argv[i];
        else {
            usage(stderr);
            return 2;
        }
    }
    if (!dir || !file) {
        usage(stderr);
        return 2;
    }
    return bench(dir, file, runs, lines, ids_path);
}
