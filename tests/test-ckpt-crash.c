/* test-ckpt-crash.c: kill the writer at 200 points of a save; the store always loads the old or the new session. */
#include "daemon/store.h"
#include "tests/ckpt_synth.h"
#include "tests/testutil.h"
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define RUNS 200
#define VERSIONS 3

static hy_arch A;
static uint8_t FP[HY_FINGERPRINT_LEN];

static bool same(const hy_ckpt *x, const hy_ckpt *y)
{
    return x->n_tokens == y->n_tokens && x->n_msgs == y->n_msgs && x->n_snaps == y->n_snaps &&
           x->updated_ns == y->updated_ns && x->image_len == y->image_len &&
           !memcmp(x->image, y->image, x->image_len) && !memcmp(x->tokens, y->tokens, (size_t)x->n_tokens * 4);
}

int main(void)
{
    char *tmp = hy_test_tmpdir();
    hy_ckpt ver[VERSIONS];
    uint64_t size[VERSIONS];
    hy_store *st;
    hy_err err = {0};
    int cur = 0, saw_old = 0, saw_new = 0, by_stage[5] = {0};
    uint64_t seed = 0x5eed;

    synth_arch(&A);
    synth_fingerprint(FP, 0);
    /* Three versions of one session as it grows: different sizes, snapshots. */
    for (int v = 0; v < VERSIONS; v++) {
        synth_ckpt(&A, &ver[v], 40 + 37 * v, 4 + 2 * v, (uint32_t)v + 1, HY_DT_F32);
        snprintf(ver[v].id, sizeof(ver[v].id), "crash-session");
        ver[v].updated_ns = 1000 + v;
        size[v] = hy_ckpt_encoded_size(&ver[v], &A);
    }
    CHECK(hy_store_open(tmp, true, &st, &err) == 0, "open: %s", err.msg);
    CHECK(hy_store_save(st, 7, &ver[0], &A, &err) == 0, "first save: %s", err.msg);

    for (int run = 0; run < RUNS; run++) {
        int next = (cur + 1) % VERSIONS, status;
        hy_store_fault f = {0};
        seed = seed * 6364136223846793005ULL + 1442695040888963407ULL;
        uint32_t r = (uint32_t)(seed >> 33);
        /* Mostly mid-write at a random byte; the rest at each later step. */
        f.stage = r % 10 < 7 ? HY_STORE_STAGE_AFTER_BYTES : (hy_store_stage)(2 + r % 3);
        f.kill_after_bytes = (r >> 4) % (size[next] + 1);
        pid_t pid = fork();
        if (pid == 0) {
            hy_store_set_fault(st, &f);
            _exit(hy_store_save(st, 7, &ver[next], &A, NULL) == 0 ? 0 : 3);
        }
        waitpid(pid, &status, 0);
        bool killed = WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL;
        bool finished = WIFEXITED(status) && WEXITSTATUS(status) == 0;
        CHECK(killed || (finished && f.kill_after_bytes == size[next]), "run %d: child status %d", run, status);
        by_stage[f.stage]++;

        /* A new daemon: fresh store object, list + lazy load. */
        hy_store *st2;
        hy_store_entry *ents;
        size_t n;
        hy_ckpt got;
        hy_ckpt_reason why;
        CHECK(hy_store_open(tmp, true, &st2, &err) == 0, "reopen");
        CHECK(hy_store_list(st2, 7, &ents, &n, &err) == 0 && n == 1 && ents[0].why == HY_CKPT_OK,
              "run %d: list %zu", run, n);
        free(ents);
        int rc = hy_store_load(st2, 7, "crash-session", &A, FP, &got, &why, NULL, 0, &err);
        CHECK(rc == 0, "run %d (stage %d, %llu of %llu bytes): load refused: %s", run, f.stage,
              (unsigned long long)f.kill_after_bytes, (unsigned long long)size[next], err.msg);
        if (rc == 0) {
            bool is_old = same(&got, &ver[cur]), is_new = same(&got, &ver[next]);
            CHECK(is_old || is_new, "run %d: loaded state is neither old nor new", run);
            /* Killed before the rename: old; after it: new. */
            if (f.stage == HY_STORE_STAGE_BEFORE_DIR_FSYNC || finished)
                CHECK(is_new, "run %d: the rename happened, the new state must load", run);
            else
                CHECK(is_old, "run %d: killed before the rename, the old state must load", run);
            saw_old += is_old;
            saw_new += is_new;
            if (is_new)
                cur = next;
            hy_ckpt_clear(&got);
        }
        hy_store_free(st2);
    }
    char cmd[4200];
    snprintf(cmd, sizeof(cmd), "test $(ls -a '%s/7' | grep -c tmp) -eq 0", tmp);
    CHECK(system(cmd) == 0, "temp files of killed writers were swept");
    printf("%d runs: old state loaded %d times, new %d; stages: mid-write %d, before fsync %d, "
           "before rename %d, before dir fsync %d\n", RUNS, saw_old, saw_new, by_stage[1], by_stage[2],
           by_stage[3], by_stage[4]);
    for (int v = 0; v < VERSIONS; v++)
        hy_ckpt_clear(&ver[v]);
    hy_store_free(st);
    hy_test_rmtree(tmp);
    free(tmp);
    return hy_test_done("test-ckpt-crash");
}
