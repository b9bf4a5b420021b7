/* testutil.h: tiny assertion and skip helpers for the C test programs. */
#ifndef HYMBA_TESTS_TESTUTIL_H
#define HYMBA_TESTS_TESTUTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>

#define HY_TEST_SKIP 77

extern int hy_test_failures;

#define CHECK(cond, ...) do { \
        if (!(cond)) { \
            fprintf(stderr, "FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond); \
            fprintf(stderr, __VA_ARGS__); \
            fputc('\n', stderr); \
            hy_test_failures++; \
        } \
    } while (0)

/* The ../shared folder (golden files, tokenizer vectors), or NULL with a
 * printed skip reason when it is absent. */
const char *hy_test_shared_dir(void);
/* A fresh temporary directory (removed by hy_test_rmtree). */
char *hy_test_tmpdir(void);
void hy_test_rmtree(const char *path);
/* Strict UTF-8 (no overlongs, surrogates or code points past U+10FFFF): the
 * tests' own oracle, independent of the tokenizer's and the daemon's checks. */
bool hy_test_utf8_valid(const char *s, size_t n);
/* Exit status for main(): 0 if no CHECK failed, else 1. */
int hy_test_done(const char *name);

#endif
