/* fuzz-ckpt.c: fuzz target for the checkpoint reader; without libFuzzer, a seeded mutation run for CI. */
#include "tests/ckpt_synth.h"
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/*
 * libFuzzer build (clang):
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -DHY_FUZZ_LIBFUZZER -D_GNU_SOURCE -I. \
 *     tests/fuzz-ckpt.c tests/ckpt_synth.c engine/ckpt.c engine/crc32c.c kernels/err.c \
 *     -o fuzz-ckpt -lpthread -lm
 *   ./fuzz-ckpt tests/fuzz-ckpt-corpus          (or: make fuzz-ckpt in the build directory)
 * Without -DHY_FUZZ_LIBFUZZER it is a normal test program: it runs every
 * file of the directories or files given, or with no arguments the built-in
 * seeds and a fixed number of deterministic mutations of them.
 */

static hy_arch A;
static uint8_t FP[HY_FINGERPRINT_LEN];

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    hy_ckpt c;
    hy_ckpt_info info;
    hy_ckpt_reason why;
    hy_err err;

    if (A.n_layers == 0) {
        synth_arch(&A);
        synth_fingerprint(FP, 0);
    }
    if (hy_ckpt_decode(data, size, &A, FP, &c, &why, &err) == 0) {
        /* Whatever it accepted must encode again to the same bytes. */
        size_t n;
        uint8_t *again = synth_encode(&c, &A, &n);
        if (n != size || memcmp(again, data, n) != 0) {
            size_t i = 0;
            while (i < n && i < size && again[i] == data[i])
                i++;
            fprintf(stderr, "fuzz-ckpt: accepted input (%zu bytes) re-encodes differently (%zu bytes)"
                    " from offset %zu\n", size, n, i);
            abort();
        }
        free(again);
        hy_ckpt_clear(&c);
    }
    (void)hy_ckpt_peek(data, size, size, &info, &why, &err);
    return 0;
}

#ifndef HY_FUZZ_LIBFUZZER
#define MUTATIONS_PER_SEED 10000

static uint64_t rng_state = 0x9e3779b97f4a7c15ULL;

static uint32_t rnd(uint32_t n)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (uint32_t)(rng_state % n);
}

static void run_file(const char *path, int *count)
{
    FILE *f = fopen(path, "rb");
    uint8_t *buf;
    long n;

    if (!f)
        return;
    fseek(f, 0, SEEK_END);
    n = ftell(f);
    fseek(f, 0, SEEK_SET);
    buf = malloc(n > 0 ? (size_t)n : 1);
    if (n >= 0 && fread(buf, 1, (size_t)n, f) == (size_t)n) {
        LLVMFuzzerTestOneInput(buf, (size_t)n);
        (*count)++;
    }
    free(buf);
    fclose(f);
}

static void run_path(const char *path, int *count)
{
    struct stat st;
    DIR *d;
    struct dirent *e;

    if (stat(path, &st) < 0)
        return;
    if (!S_ISDIR(st.st_mode)) {
        run_file(path, count);
        return;
    }
    if (!(d = opendir(path)))
        return;
    while ((e = readdir(d))) {
        char p[4096];
        if (e->d_name[0] == '.')
            continue;
        snprintf(p, sizeof(p), "%s/%s", path, e->d_name);
        run_file(p, count);
    }
    closedir(d);
}

/* One random damage: flips, overwrites, cuts, duplicated ranges; half of the
 * time the CRCs are then repaired so the semantic checks get exercised. */
static size_t mutate(uint8_t *b, size_t len, size_t cap)
{
    int k = 1 + (int)rnd(4);
    for (int i = 0; i < k && len > 0; i++) {
        size_t at = rnd((uint32_t)len);
        switch (rnd(6)) {
        case 0: b[at] ^= (uint8_t)(1u << rnd(8)); break;
        case 1: b[at] = (uint8_t)rnd(256); break;
        case 2: {
            uint32_t v = rnd(5) == 0 ? 0xffffffffu : rnd(1u << rnd(31)); /* plausible integers */
            if (at + 4 <= len)
                memcpy(b + at, &v, 4);
            break;
        }
        case 3:
            len = at;
            break;
        case 4: {
            size_t from = rnd((uint32_t)len), n = rnd(64);
            if (at + n <= cap && from + n <= len) {
                memmove(b + at, b + from, n);
                if (at + n > len)
                    len = at + n;
            }
            break;
        }
        case 5: {
            uint64_t v = rnd(1000);
            if (at + 8 <= len)
                memcpy(b + at, &v, 8);
            break;
        }
        }
    }
    if (rnd(2) && len >= HY_CKPT_HDR_SIZE) {
        uint64_t fs = len;
        memcpy(b + offsetof(hy_ckpt_hdr, file_size), &fs, 8);
        synth_recrc(b, len);
    }
    return len;
}

/* The committed seeds must still be valid checkpoints (else the fuzzer starts
 * from files the reader refuses at the header): regenerate with --write-seeds. */
static int corpus_valid(void)
{
    const char *top = getenv("top_srcdir");
    char path[4096];
    int bad = 0;

    if (!top)
        return 0;
    for (int i = 0; i < 4; i++) {
        FILE *f;
        uint8_t *buf;
        long n;
        hy_ckpt c;
        hy_err err = {0};

        snprintf(path, sizeof(path), "%s/tests/fuzz-ckpt-corpus/seed-%d.hyck", top, i);
        if (!(f = fopen(path, "rb")))
            continue;
        fseek(f, 0, SEEK_END);
        n = ftell(f);
        fseek(f, 0, SEEK_SET);
        buf = malloc(n > 0 ? (size_t)n : 1);
        if (n > 0 && fread(buf, 1, (size_t)n, f) == (size_t)n && hy_ckpt_decode(buf, (size_t)n, &A, FP, &c, NULL, &err) == 0)
            hy_ckpt_clear(&c);
        else {
            fprintf(stderr, "fuzz-ckpt: seed %s is not a valid checkpoint (%s): regenerate the corpus with "
                    "'tests/fuzz-ckpt --write-seeds tests/fuzz-ckpt-corpus'\n", path, err.msg);
            bad++;
        }
        free(buf);
        fclose(f);
    }
    return bad ? 1 : 0;
}

int main(int argc, char **argv)
{
    static const struct { int64_t tokens; uint32_t msgs, snaps; hy_dtype dt; } seeds[] = {
        { 0, 0, 0, HY_DT_F32 }, { 3, 2, 1, HY_DT_F32 }, { 9, 4, 2, HY_DT_BF16 }, { 17, 5, 3, HY_DT_F32 },
    };
    int count = 0;

    synth_arch(&A);
    synth_fingerprint(FP, 0);
    if (argc > 2 && strcmp(argv[1], "--write-seeds") == 0) {
        for (size_t s = 0; s < sizeof(seeds) / sizeof(seeds[0]); s++) {
            hy_ckpt c;
            size_t len;
            char p[4096];
            synth_ckpt(&A, &c, seeds[s].tokens, seeds[s].msgs, seeds[s].snaps, seeds[s].dt);
            uint8_t *buf = synth_encode(&c, &A, &len);
            snprintf(p, sizeof(p), "%s/seed-%zu.hyck", argv[2], s);
            FILE *f = fopen(p, "wb");
            if (!f || fwrite(buf, 1, len, f) != len || fclose(f) != 0) {
                perror(p);
                return 1;
            }
            free(buf);
            hy_ckpt_clear(&c);
        }
        return 0;
    }
    if (argc > 1) {
        for (int i = 1; i < argc; i++)
            run_path(argv[i], &count);
        printf("fuzz-ckpt: %d inputs, no crash\n", count);
        return 0;
    }
    for (size_t s = 0; s < sizeof(seeds) / sizeof(seeds[0]); s++) {
        hy_ckpt c;
        size_t len;
        synth_ckpt(&A, &c, seeds[s].tokens, seeds[s].msgs, seeds[s].snaps, seeds[s].dt);
        uint8_t *seed = synth_encode(&c, &A, &len), *b = malloc(len);
        LLVMFuzzerTestOneInput(seed, len);
        for (int m = 0; m < MUTATIONS_PER_SEED; m++) {
            memcpy(b, seed, len);
            size_t n = mutate(b, len, len);
            LLVMFuzzerTestOneInput(b, n);
            count++;
        }
        free(b);
        free(seed);
        hy_ckpt_clear(&c);
    }
    printf("fuzz-ckpt: %d mutated inputs, no crash\n", count);
    return corpus_valid();
}
#endif
