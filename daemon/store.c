/* store.c: session checkpoints on disk: atomic replace, lazy load, quarantine of damaged files. */
#include "daemon/store.h"
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define PATH_MAX_LEN 4096                  /* a directory */
#define FILE_LEN (PATH_MAX_LEN + 256)       /* a file in it */
#define ASIDE_LEN (FILE_LEN + 64)           /* a file moved aside */
#define TMP_TAG ".tmp-"
#define DAMAGED_TAG ".damaged-"

struct hy_store {
    char *root;
    bool per_uid;
    hy_store_fault fault;
};

int hy_store_default_root(bool user, char *buf, size_t len, hy_err *err)
{
    const char *xdg = getenv("XDG_STATE_HOME"), *home = getenv("HOME");
    int n;

    if (!user)
        n = snprintf(buf, len, "%s", HY_STORE_SYSTEM_ROOT);
    else if (xdg && xdg[0] == '/')
        n = snprintf(buf, len, "%s/hymba", xdg);
    else if (home && home[0] == '/')
        n = snprintf(buf, len, "%s/.local/state/hymba", home);
    else
        return hy_err_set(err, -ENOENT, "state directory: neither $XDG_STATE_HOME nor $HOME is an absolute path");
    if (n < 0 || (size_t)n >= len)
        return hy_err_set(err, -ENAMETOOLONG, "state directory path is too long");
    return 0;
}

static int fsync_dir(const char *dir, hy_err *err)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return hy_err_set(err, -errno, "%s: %s", dir, strerror(errno));
    if (fsync(fd) < 0) {
        int e = errno;
        close(fd);
        return hy_err_set(err, -e, "fsync %s: %s", dir, strerror(e));
    }
    close(fd);
    return 0;
}

/* mkdir -p, the last component with mode 0700 (and made 0700 if it exists). */
static int make_dir(const char *path, bool parents, hy_err *err)
{
    struct stat st;
    char tmp[PATH_MAX_LEN];

    if (stat(path, &st) == 0) {
        if (!S_ISDIR(st.st_mode))
            return hy_err_set(err, -ENOTDIR, "%s exists and is not a directory", path);
        if ((st.st_mode & 077) && st.st_uid == geteuid())
            chmod(path, 0700);
        return 0;
    }
    if (parents) {
        snprintf(tmp, sizeof(tmp), "%s", path);
        for (char *p = tmp + 1; *p; p++) {
            if (*p != '/')
                continue;
            *p = 0;
            if (mkdir(tmp, 0755) < 0 && errno != EEXIST)
                return hy_err_set(err, -errno, "mkdir %s: %s", tmp, strerror(errno));
            *p = '/';
        }
    }
    if (mkdir(path, 0700) < 0 && errno != EEXIST)
        return hy_err_set(err, -errno, "mkdir %s: %s", path, strerror(errno));
    /* Make the new directory entry itself durable. */
    snprintf(tmp, sizeof(tmp), "%s", path);
    char *slash = strrchr(tmp, '/');
    if (slash && slash != tmp) {
        *slash = 0;
        fsync_dir(tmp, NULL);
    }
    return 0;
}

int hy_store_open(const char *root, bool per_uid, hy_store **out, hy_err *err)
{
    char def[PATH_MAX_LEN];
    hy_store *st;
    int rc;

    if (!root) {
        if ((rc = hy_store_default_root(!per_uid, def, sizeof(def), err)) < 0)
            return rc;
        root = def;
    }
    if (root[0] != '/' || strlen(root) > PATH_MAX_LEN - 128)
        return hy_err_set(err, -EINVAL, "state directory \"%s\" must be an absolute path shorter than %d",
                          root, PATH_MAX_LEN - 128);
    if ((rc = make_dir(root, true, err)) < 0)
        return rc;
    if (!(st = calloc(1, sizeof(*st))) || !(st->root = strdup(root))) {
        free(st);
        return hy_err_set(err, -ENOMEM, "out of memory");
    }
    st->per_uid = per_uid;
    *out = st;
    return 0;
}

void hy_store_free(hy_store *st)
{
    if (!st)
        return;
    free(st->root);
    free(st);
}

const char *hy_store_root(const hy_store *st)
{
    return st->root;
}

void hy_store_set_fault(hy_store *st, const hy_store_fault *f)
{
    if (f)
        st->fault = *f;
    else
        memset(&st->fault, 0, sizeof(st->fault));
}

static void dir_of(const hy_store *st, uint32_t uid, char *buf, size_t len)
{
    if (st->per_uid)
        snprintf(buf, len, "%s/%" PRIu32, st->root, uid);
    else
        snprintf(buf, len, "%s", st->root);
}

static int path_of(const hy_store *st, uint32_t uid, const char *id, char *buf, size_t len, hy_err *err)
{
    char dir[PATH_MAX_LEN];

    if (!hy_ckpt_id_valid(id))
        return hy_err_set(err, -EINVAL, "session id \"%.80s\" is not 1..%d of [A-Za-z0-9_-]", id, HY_CKPT_ID_MAX);
    dir_of(st, uid, dir, sizeof(dir));
    snprintf(buf, len, "%s/%s%s", dir, id, HY_STORE_EXT);
    return 0;
}

static void fault_at(const hy_store *st, hy_store_stage stage)
{
    if (st->fault.stage == stage)
        raise(SIGKILL);
}

/* Unbuffered sink that dies after kill_after_bytes (crash-injection tests). */
typedef struct fault_sink {
    int fd;
    const hy_store *st;
    uint64_t written;
} fault_sink;

static int fault_write(void *ctx, const void *buf, size_t len, hy_err *err)
{
    fault_sink *s = ctx;
    const uint8_t *p = buf;
    size_t n = len;

    if (s->written + n > s->st->fault.kill_after_bytes)
        n = (size_t)(s->st->fault.kill_after_bytes - s->written);
    while (n > 0) {
        ssize_t w = write(s->fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return hy_err_set(err, -errno, "write: %s", strerror(errno));
        p += w;
        n -= (size_t)w;
        s->written += (uint64_t)w;
    }
    if (s->written == s->st->fault.kill_after_bytes)
        raise(SIGKILL);
    return 0;
}

int hy_store_save(hy_store *st, uint32_t uid, const hy_ckpt *c, const hy_arch *a, hy_err *err)
{
    char dir[PATH_MAX_LEN], path[FILE_LEN], tmp[FILE_LEN];
    int fd, rc;

    if ((rc = path_of(st, uid, c->id, path, sizeof(path), err)) < 0)
        return rc;
    dir_of(st, uid, dir, sizeof(dir));
    if ((rc = make_dir(dir, false, err)) < 0)
        return rc;
    snprintf(tmp, sizeof(tmp), "%s/.%s%s" TMP_TAG "%ld-XXXXXX", dir, c->id, HY_STORE_EXT, (long)getpid());
    if ((fd = mkostemp(tmp, O_CLOEXEC)) < 0)
        return hy_err_set(err, -errno, "%s: %s", tmp, strerror(errno));
    fchmod(fd, 0600);
    if (st->fault.stage == HY_STORE_STAGE_AFTER_BYTES) {
        fault_sink fs = { .fd = fd, .st = st };
        hy_ckpt_sink sink = { fault_write, &fs };
        rc = hy_ckpt_encode(c, a, &sink, err);
    } else {
        rc = hy_ckpt_write_fd(fd, c, a, err);
    }
    if (rc == 0) {
        fault_at(st, HY_STORE_STAGE_BEFORE_FSYNC);
        if (fsync(fd) < 0)
            rc = hy_err_set(err, -errno, "fsync %s: %s", tmp, strerror(errno));
    }
    if (close(fd) < 0 && rc == 0)
        rc = hy_err_set(err, -errno, "close %s: %s", tmp, strerror(errno));
    if (rc == 0) {
        fault_at(st, HY_STORE_STAGE_BEFORE_RENAME);
        if (rename(tmp, path) < 0)
            rc = hy_err_set(err, -errno, "rename %s -> %s: %s", tmp, path, strerror(errno));
    }
    if (rc < 0) {
        unlink(tmp);
        return rc;
    }
    fault_at(st, HY_STORE_STAGE_BEFORE_DIR_FSYNC);
    return fsync_dir(dir, err);
}

/* Rename a refused file to <path>.damaged-<UTC time>[-n]; never overwrite or delete. */
static int quarantine(const char *path, char *aside, size_t aside_len)
{
    char name[ASIDE_LEN], stamp[32], dir[FILE_LEN];
    time_t now = time(NULL);
    struct tm tm;
    struct stat sb;

    gmtime_r(&now, &tm);
    strftime(stamp, sizeof(stamp), "%Y%m%dT%H%M%SZ", &tm);
    for (int n = 0; n < 1000; n++) {
        if (n == 0)
            snprintf(name, sizeof(name), "%s" DAMAGED_TAG "%s", path, stamp);
        else
            snprintf(name, sizeof(name), "%s" DAMAGED_TAG "%s-%d", path, stamp, n);
        if (lstat(name, &sb) == 0)
            continue;
        if (rename(path, name) < 0)
            return -errno;
        snprintf(dir, sizeof(dir), "%s", path);
        char *slash = strrchr(dir, '/');
        if (slash)
            *slash = 0;
        fsync_dir(dir, NULL);
        if (aside)
            snprintf(aside, aside_len, "%s", name);
        return 0;
    }
    return -EEXIST;
}

typedef int (*load_fn)(const char *path, const hy_arch *a, const uint8_t *fp, hy_ckpt *out,
                       hy_ckpt_reason *why, hy_err *err);

static int load_with(load_fn fn, hy_store *st, uint32_t uid, const char *id, const hy_arch *a,
                     const uint8_t *fp, hy_ckpt *out, hy_ckpt_reason *why, char *aside, size_t aside_len,
                     hy_err *err)
{
    char path[FILE_LEN], moved[ASIDE_LEN] = "";
    hy_ckpt_reason r = HY_CKPT_IO;
    struct stat sb;
    int rc;

    if (why)
        *why = HY_CKPT_IO;
    if (aside && aside_len)
        aside[0] = 0;
    if ((rc = path_of(st, uid, id, path, sizeof(path), err)) < 0)
        return rc;
    if (stat(path, &sb) < 0)
        return hy_err_set(err, -errno, "session %s: %s", id, strerror(errno));
    rc = fn(path, a, fp, out, &r, err);
    if (why)
        *why = r;
    if (rc < 0 && r != HY_CKPT_IO) {
        int q = quarantine(path, moved, sizeof(moved));
        if (err) {
            char msg[HY_ERR_MSG_MAX];
            memcpy(msg, err->msg, sizeof(msg));
            if (q == 0)
                hy_err_set(err, rc, "%.300s (kept aside as %.180s)", msg, strrchr(moved, '/') + 1);
            else
                hy_err_set(err, rc, "%.300s (could not move it aside: %s)", msg, strerror(-q));
        }
        if (aside && q == 0)
            snprintf(aside, aside_len, "%s", moved);
    }
    if (rc == 0 && strcmp(out->id, id) != 0) {
        /* A file renamed by hand: trust the name the user sees. */
        snprintf(out->id, sizeof(out->id), "%s", id);
    }
    return rc;
}

int hy_store_load(hy_store *st, uint32_t uid, const char *id, const hy_arch *a, const uint8_t *fp,
                  hy_ckpt *out, hy_ckpt_reason *why, char *aside, size_t aside_len, hy_err *err)
{
    return load_with(hy_ckpt_load_file, st, uid, id, a, fp, out, why, aside, aside_len, err);
}

int hy_store_load_meta(hy_store *st, uint32_t uid, const char *id, const hy_arch *a, const uint8_t *fp,
                       hy_ckpt *out, hy_ckpt_reason *why, char *aside, size_t aside_len, hy_err *err)
{
    return load_with(hy_ckpt_load_meta_file, st, uid, id, a, fp, out, why, aside, aside_len, err);
}

int hy_store_path(const hy_store *st, uint32_t uid, const char *id, char *buf, size_t len, hy_err *err)
{
    return path_of(st, uid, id, buf, len, err);
}

bool hy_store_per_uid(const hy_store *st)
{
    return st->per_uid;
}

int hy_store_uids(hy_store *st, uint32_t **out, size_t *n, hy_err *err)
{
    uint32_t *v = NULL;
    size_t cnt = 0, cap = 0;
    struct dirent *e;
    DIR *d;

    *out = NULL;
    *n = 0;
    if (!st->per_uid)
        return 0;
    if (!(d = opendir(st->root)))
        return hy_err_set(err, -errno, "%s: %s", st->root, strerror(errno));
    while ((e = readdir(d))) {
        char *end;
        unsigned long u = strtoul(e->d_name, &end, 10);
        if (!e->d_name[0] || *end || e->d_name[0] < '0' || e->d_name[0] > '9' || u > UINT32_MAX)
            continue;
        if (cnt == cap) {
            uint32_t *nv = realloc(v, (cap = cap ? 2 * cap : 16) * sizeof(*v));
            if (!nv) {
                free(v);
                closedir(d);
                return hy_err_set(err, -ENOMEM, "out of memory");
            }
            v = nv;
        }
        v[cnt++] = (uint32_t)u;
    }
    closedir(d);
    *out = v;
    *n = cnt;
    return 0;
}

bool hy_store_exists(hy_store *st, uint32_t uid, const char *id)
{
    char path[FILE_LEN];
    struct stat sb;

    return path_of(st, uid, id, path, sizeof(path), NULL) == 0 && stat(path, &sb) == 0 && S_ISREG(sb.st_mode);
}

int hy_store_remove(hy_store *st, uint32_t uid, const char *id, hy_err *err)
{
    char path[FILE_LEN], dir[PATH_MAX_LEN];
    int rc;

    if ((rc = path_of(st, uid, id, path, sizeof(path), err)) < 0)
        return rc;
    if (unlink(path) < 0)
        return errno == ENOENT ? 0 : hy_err_set(err, -errno, "unlink %s: %s", path, strerror(errno));
    dir_of(st, uid, dir, sizeof(dir));
    return fsync_dir(dir, err);
}

/* Temp files of a writer that died (another process: ours may be mid-save). */
static void sweep_tmp(const char *dir, const char *name)
{
    const char *t = strstr(name, HY_STORE_EXT TMP_TAG);
    char path[FILE_LEN];

    if (name[0] != '.' || !t || atol(t + strlen(HY_STORE_EXT TMP_TAG)) == (long)getpid())
        return;
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    unlink(path);
}

int hy_store_list(hy_store *st, uint32_t uid, hy_store_entry **out, size_t *n, hy_err *err)
{
    char dir[PATH_MAX_LEN], path[FILE_LEN];
    hy_store_entry *v = NULL;
    size_t cnt = 0, cap = 0;
    struct dirent *e;
    DIR *d;

    *out = NULL;
    *n = 0;
    dir_of(st, uid, dir, sizeof(dir));
    if (!(d = opendir(dir)))
        return errno == ENOENT ? 0 : hy_err_set(err, -errno, "%s: %s", dir, strerror(errno));
    while ((e = readdir(d))) {
        size_t len = strlen(e->d_name), ext = strlen(HY_STORE_EXT);
        char id[HY_CKPT_ID_MAX + 1];

        sweep_tmp(dir, e->d_name);
        if (len <= ext || len - ext > HY_CKPT_ID_MAX || strcmp(e->d_name + len - ext, HY_STORE_EXT) != 0)
            continue;
        memcpy(id, e->d_name, len - ext);
        id[len - ext] = 0;
        if (!hy_ckpt_id_valid(id))
            continue;
        if (cnt == cap) {
            hy_store_entry *nv = realloc(v, (cap = cap ? cap * 2 : 16) * sizeof(*v));
            if (!nv) {
                free(v);
                closedir(d);
                return hy_err_set(err, -ENOMEM, "out of memory listing %s", dir);
            }
            v = nv;
        }
        memset(&v[cnt], 0, sizeof(v[cnt]));
        snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
        hy_ckpt_peek_file(path, &v[cnt].info, &v[cnt].why, NULL);
        snprintf(v[cnt].info.id, sizeof(v[cnt].info.id), "%s", id);
        cnt++;
    }
    closedir(d);
    *out = v;
    *n = cnt;
    return 0;
}

int hy_store_export_fd(int fd, const hy_ckpt *c, const hy_arch *a, hy_err *err)
{
    return hy_ckpt_write_fd(fd, c, a, err);
}

/* Read until len bytes or end of input; returns bytes read or a negative errno. */
static ssize_t read_full(int fd, uint8_t *buf, size_t len)
{
    size_t got = 0;
    while (got < len) {
        ssize_t n = read(fd, buf + got, len - got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -errno;
        if (n == 0)
            break;
        got += (size_t)n;
    }
    return (ssize_t)got;
}

int hy_store_import_fd(int fd, const hy_arch *a, const uint8_t *fp, uint64_t max_bytes,
                       hy_ckpt *out, hy_ckpt_reason *why, hy_err *err)
{
    uint8_t hdr[HY_CKPT_HDR_SIZE], *buf;
    uint64_t want = HY_CKPT_HDR_SIZE;
    ssize_t n = read_full(fd, hdr, sizeof(hdr)), m;
    int rc;

    if (why)
        *why = HY_CKPT_IO;
    if (n < 0)
        return hy_err_set(err, (int)n, "import: read failed: %s", strerror((int)-n));
    if (n == (ssize_t)sizeof(hdr) && memcmp(hdr, HY_CKPT_MAGIC, HY_CKPT_MAGIC_LEN) == 0)
        memcpy(&want, hdr + offsetof(hy_ckpt_hdr, file_size), 8);
    if (want < HY_CKPT_HDR_SIZE)
        want = HY_CKPT_HDR_SIZE;
    if (want > max_bytes)
        return hy_err_set(err, -EFBIG, "import: the checkpoint says %" PRIu64 " bytes, the limit is %" PRIu64,
                          want, max_bytes);
    /* One byte more than declared, so trailing garbage is noticed. */
    if (!(buf = malloc(want + 1)))
        return hy_err_set(err, -ENOMEM, "import: out of memory for %" PRIu64 " bytes", want);
    memcpy(buf, hdr, (size_t)n);
    m = (size_t)n < want + 1 ? read_full(fd, buf + n, want + 1 - (size_t)n) : 0;
    if (m < 0) {
        free(buf);
        return hy_err_set(err, (int)m, "import: read failed: %s", strerror((int)-m));
    }
    rc = hy_ckpt_decode(buf, (size_t)n + (size_t)m, a, fp, out, why, err);
    free(buf);
    return rc;
}
