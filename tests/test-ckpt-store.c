/* test-ckpt-store.c: session store: layout and modes, round trip, listing, quarantine, export/import. */
#include "daemon/store.h"
#include "tests/ckpt_synth.h"
#include "tests/testutil.h"
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static hy_arch A;
static uint8_t FP[HY_FINGERPRINT_LEN];

static int count_files(const char *dir, const char *needle)
{
    char cmd[4300];
    snprintf(cmd, sizeof(cmd), "ls -a '%s' | grep -c -- '%s'", dir, needle);
    FILE *p = popen(cmd, "r");
    int n = -1;
    if (p) {
        if (fscanf(p, "%d", &n) != 1)
            n = -1;
        pclose(p);
    }
    return n;
}

static void corrupt(const char *path, long off, int mode)
{
    int fd = open(path, O_RDWR);
    struct stat sb;
    fstat(fd, &sb);
    if (mode == 0) {
        if (ftruncate(fd, sb.st_size / 2) < 0)
            perror("ftruncate");
    } else {
        uint8_t b;
        if (pread(fd, &b, 1, off) == 1) {
            b ^= 0x04;
            if (pwrite(fd, &b, 1, off) != 1)
                perror("pwrite");
        }
    }
    close(fd);
}

typedef struct pipe_job { int fd; const hy_ckpt *c; int rc; } pipe_job;

static void *export_thread(void *p)
{
    pipe_job *j = p;
    hy_err err;
    j->rc = hy_store_export_fd(j->fd, j->c, &A, &err);
    close(j->fd);
    return NULL;
}

int main(void)
{
    char *tmp = hy_test_tmpdir(), root[4096], path[4200], aside[4200];
    hy_store *st;
    hy_err err = {0};
    hy_ckpt c, d;
    hy_ckpt_reason why;
    struct stat sb;

    synth_arch(&A);
    synth_fingerprint(FP, 0);
    snprintf(root, sizeof(root), "%s/state/hymba", tmp);
    CHECK(hy_store_open(root, true, &st, &err) == 0, "open: %s", err.msg);
    CHECK(stat(root, &sb) == 0 && (sb.st_mode & 0777) == 0700, "root mode %o", sb.st_mode & 0777);

    /* Round trip in the per-UID directory. */
    synth_ckpt(&A, &c, 30, 6, 2, HY_DT_F32);
    CHECK(hy_store_save(st, 1000, &c, &A, &err) == 0, "save: %s", err.msg);
    snprintf(path, sizeof(path), "%s/1000", root);
    CHECK(stat(path, &sb) == 0 && (sb.st_mode & 0777) == 0700, "uid dir mode %o", sb.st_mode & 0777);
    snprintf(path, sizeof(path), "%s/1000/%s.hyck", root, c.id);
    CHECK(stat(path, &sb) == 0 && (sb.st_mode & 0777) == 0600, "file mode %o", sb.st_mode & 0777);
    CHECK(hy_store_exists(st, 1000, c.id) && !hy_store_exists(st, 1001, c.id), "exists per uid");
    CHECK(hy_store_load(st, 1000, c.id, &A, FP, &d, &why, NULL, 0, &err) == 0, "load: %s", err.msg);
    CHECK(d.n_tokens == 30 && d.n_snaps == 2 && d.image_len == c.image_len &&
          memcmp(d.image, c.image, c.image_len) == 0, "loaded state");
    hy_ckpt_clear(&d);
    CHECK(hy_store_load(st, 1001, c.id, &A, FP, &d, &why, NULL, 0, &err) == -ENOENT, "other uid: not found");
    CHECK(hy_store_load(st, 1000, "../1001/x", &A, FP, &d, &why, NULL, 0, &err) == -EINVAL, "path in id refused");
    /* Metadata only (what the daemon reads at start): no state, messages intact. */
    CHECK(hy_ckpt_load_meta_file(path, &A, FP, &d, &why, &err) == 0 && d.n_msgs == c.n_msgs && !d.image &&
          strcmp(d.msgs[5].text, c.msgs[5].text) == 0 && d.rng.s[3] == c.rng.s[3], "meta: %s", err.msg);
    hy_ckpt_clear(&d);
    uint8_t other_fp[HY_FINGERPRINT_LEN];
    synth_fingerprint(other_fp, 2);
    CHECK(hy_ckpt_load_meta_file(path, &A, other_fp, &d, &why, &err) < 0 && why == HY_CKPT_WRONG_MODEL,
          "meta, other model: %s", err.msg);
    /* Save again (replace) and list. */
    c.updated_ns += 5;
    CHECK(hy_store_save(st, 1000, &c, &A, &err) == 0, "save 2: %s", err.msg);
    hy_store_entry *ents;
    size_t n;
    CHECK(hy_store_list(st, 1000, &ents, &n, &err) == 0 && n == 1, "list: %zu", n);
    if (n == 1)
        CHECK(strcmp(ents[0].info.id, c.id) == 0 && ents[0].why == HY_CKPT_OK && ents[0].info.n_msgs == 6 &&
              ents[0].info.updated_ns == c.updated_ns, "list entry");
    free(ents);
    snprintf(path, sizeof(path), "%s/1000", root);
    CHECK(count_files(path, "tmp") == 0, "no temp files left");

    /* Damaged files: refused with the reason, kept aside, the next save starts fresh. */
    struct { int mode; long off; hy_ckpt_reason want; const char *name; } cases[] = {
        { 0, 0, HY_CKPT_TRUNCATED, "truncated" },
        { 1, 300, HY_CKPT_SECTION_CRC, "bit flip" },
        { 1, 9, HY_CKPT_BAD_VERSION, "version byte" },
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        CHECK(hy_store_save(st, 1000, &c, &A, &err) == 0, "save: %s", err.msg);
        snprintf(path, sizeof(path), "%s/1000/%s.hyck", root, c.id);
        corrupt(path, cases[i].off, cases[i].mode);
        int rc = hy_store_load(st, 1000, c.id, &A, FP, &d, &why, aside, sizeof(aside), &err);
        CHECK(rc < 0 && why == cases[i].want, "%s: rc %d why %s: %s", cases[i].name, rc,
              hy_ckpt_reason_name(why), err.msg);
        CHECK(strstr(err.msg, hy_ckpt_reason_name(cases[i].want)) && strstr(err.msg, "kept aside"),
              "%s: message: %s", cases[i].name, err.msg);
        CHECK(!hy_store_exists(st, 1000, c.id) && stat(aside, &sb) == 0, "%s: moved aside to %s", cases[i].name, aside);
        printf("  %s -> %s\n", cases[i].name, err.msg);
    }
    snprintf(path, sizeof(path), "%s/1000", root);
    CHECK(count_files(path, "damaged") == 3, "three damaged files kept: %d", count_files(path, "damaged"));
    /* Another model's fingerprint. */
    CHECK(hy_store_save(st, 1000, &c, &A, &err) == 0, "save: %s", err.msg);
    uint8_t other[HY_FINGERPRINT_LEN];
    synth_fingerprint(other, 3);
    CHECK(hy_store_load(st, 1000, c.id, &A, other, &d, &why, aside, sizeof(aside), &err) == -ESTALE &&
          why == HY_CKPT_WRONG_MODEL && strstr(err.msg, "another model"), "wrong model: %s", err.msg);
    CHECK(count_files(path, "damaged") == 4, "wrong-model file kept aside");
    /* A stale temp file of a dead writer is swept by listing; damaged files are not sessions. */
    snprintf(path, sizeof(path), "%s/1000/.%s.hyck.tmp-1-abcdef", root, c.id);
    FILE *f = fopen(path, "w");
    fputs("partial", f);
    fclose(f);
    CHECK(hy_store_list(st, 1000, &ents, &n, &err) == 0 && n == 0, "damaged files are not listed: %zu", n);
    free(ents);
    CHECK(stat(path, &sb) < 0, "stale temp file swept");
    /* Remove. */
    CHECK(hy_store_save(st, 1000, &c, &A, &err) == 0 && hy_store_remove(st, 1000, c.id, &err) == 0 &&
          !hy_store_exists(st, 1000, c.id), "remove");

    /* Export through a pipe, import back. */
    int pfd[2];
    pthread_t th;
    CHECK(pipe(pfd) == 0, "pipe");
    pipe_job job = { pfd[1], &c, -1 };
    pthread_create(&th, NULL, export_thread, &job);
    int rc = hy_store_import_fd(pfd[0], &A, FP, 1u << 30, &d, &why, &err);
    pthread_join(th, NULL);
    close(pfd[0]);
    CHECK(job.rc == 0 && rc == 0 && d.n_tokens == c.n_tokens && d.n_snaps == c.n_snaps &&
          memcmp(d.image, c.image, c.image_len) == 0, "import: %s", err.msg);
    if (rc == 0)
        hy_ckpt_clear(&d);
    CHECK(pipe(pfd) == 0, "pipe");
    job = (pipe_job){ pfd[1], &c, -1 };
    pthread_create(&th, NULL, export_thread, &job);
    rc = hy_store_import_fd(pfd[0], &A, FP, 1000, &d, &why, &err);
    close(pfd[0]);                               /* the writer then fails with EPIPE */
    pthread_join(th, NULL);
    CHECK(rc == -EFBIG && strstr(err.msg, "limit"), "import size limit: %s", err.msg);
    CHECK(pipe(pfd) == 0, "pipe");
    CHECK(write(pfd[1], "hello, not a checkpoint", 23) == 23, "write");
    close(pfd[1]);
    rc = hy_store_import_fd(pfd[0], &A, FP, 1u << 30, &d, &why, &err);
    close(pfd[0]);
    CHECK(rc < 0 && why == HY_CKPT_BAD_MAGIC, "import garbage: %s", err.msg);

    /* --user layout: files directly under $XDG_STATE_HOME/hymba. */
    char xdg[4200], def[4096];
    snprintf(xdg, sizeof(xdg), "%s/xdg", tmp);
    setenv("XDG_STATE_HOME", xdg, 1);
    CHECK(hy_store_default_root(true, def, sizeof(def), &err) == 0 && strcmp(def + strlen(xdg), "/hymba") == 0,
          "user root %s", def);
    hy_store *us;
    CHECK(hy_store_open(NULL, false, &us, &err) == 0, "open user store: %s", err.msg);
    CHECK(hy_store_save(us, 4242, &c, &A, &err) == 0, "user save: %s", err.msg);
    snprintf(path, sizeof(path), "%s/hymba/%s.hyck", xdg, c.id);
    CHECK(stat(path, &sb) == 0, "user file at %s", path);
    hy_store_free(us);
    CHECK(hy_store_default_root(false, def, sizeof(def), &err) == 0 && strcmp(def, "/var/lib/hymba") == 0, "system root");

    hy_ckpt_clear(&c);
    hy_store_free(st);
    hy_test_rmtree(tmp);
    free(tmp);
    return hy_test_done("test-ckpt-store");
}
