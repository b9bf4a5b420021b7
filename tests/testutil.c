/* testutil.c: helpers for the C test programs (shared dir lookup, temp dirs). */
#include "tests/testutil.h"
#include <ftw.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int hy_test_failures;

const char *hy_test_shared_dir(void)
{
    static char path[4096];
    const char *env = getenv("HYMBA_SHARED");
    struct stat st;

    if (!env || !*env)
        env = "../shared";
    snprintf(path, sizeof(path), "%s", env);
    if (stat(path, &st) < 0 || !S_ISDIR(st.st_mode)) {
        printf("SKIP: shared test data not found at %s (set HYMBA_SHARED)\n", path);
        return NULL;
    }
    return path;
}

char *hy_test_tmpdir(void)
{
    const char *base = getenv("TMPDIR");
    char *p;

    if (!base || !*base)
        base = "/tmp";
    if (asprintf(&p, "%s/hymba-test-XXXXXX", base) < 0)
        return NULL;
    if (!mkdtemp(p)) {
        free(p);
        return NULL;
    }
    return p;
}

static int rm_one(const char *p, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb; (void)flag; (void)ftw;
    return remove(p);
}

void hy_test_rmtree(const char *path)
{
    if (path)
        nftw(path, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

bool hy_test_utf8_valid(const char *s, size_t n)
{
    const unsigned char *p = (const unsigned char *)s;

    for (size_t i = 0; i < n;) {
        unsigned c = p[i];
        size_t len = c < 0x80 ? 1 : c < 0xC2 ? 0 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : c < 0xF5 ? 4 : 0;
        if (!len || i + len > n)
            return false;
        for (size_t k = 1; k < len; k++)
            if ((p[i + k] & 0xC0) != 0x80)
                return false;
        if ((c == 0xE0 && p[i + 1] < 0xA0) || (c == 0xED && p[i + 1] > 0x9F) ||
            (c == 0xF0 && p[i + 1] < 0x90) || (c == 0xF4 && p[i + 1] > 0x8F))
            return false;
        i += len;
    }
    return true;
}

int hy_test_done(const char *name)
{
    if (hy_test_failures) {
        printf("%s: %d check(s) failed\n", name, hy_test_failures);
        return 1;
    }
    printf("%s: all checks passed\n", name);
    return 0;
}
