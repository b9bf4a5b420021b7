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

int hy_test_done(const char *name)
{
    if (hy_test_failures) {
        printf("%s: %d check(s) failed\n", name, hy_test_failures);
        return 1;
    }
    printf("%s: all checks passed\n", name);
    return 0;
}
