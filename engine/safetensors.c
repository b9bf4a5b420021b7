/* safetensors.c: mmap a .safetensors file and validate every byte the header claims; write files. */
#include "engine/safetensors.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <json-c/json.h>

#define ST_LEN_BYTES 8                 /* little-endian u64 header length */
#define ST_HEADER_MAX (100u << 20)     /* the format's own limit on header size */
#define ST_MAX_NDIM 8
#define ST_HEADER_ALIGN 8              /* writers pad the header so data is 8-aligned */

static const struct { const char *name; hy_st_dtype dt; size_t size; } st_dtypes[] = {
    { "F32", HY_ST_F32, 4 }, { "F16", HY_ST_F16, 2 }, { "BF16", HY_ST_BF16, 2 },
    { "I32", HY_ST_I32, 4 }, { "I64", HY_ST_I64, 8 }, { "F64", HY_ST_F64, 8 },
    { "U8", HY_ST_U8, 1 },
};
#define ST_N_DTYPES (sizeof(st_dtypes) / sizeof(st_dtypes[0]))

size_t hy_st_dtype_size(hy_st_dtype dt)
{
    for (size_t i = 0; i < ST_N_DTYPES; i++)
        if (st_dtypes[i].dt == dt)
            return st_dtypes[i].size;
    return 0;
}

const char *hy_st_dtype_name(hy_st_dtype dt)
{
    for (size_t i = 0; i < ST_N_DTYPES; i++)
        if (st_dtypes[i].dt == dt)
            return st_dtypes[i].name;
    return "?";
}

static int st_dtype_parse(const char *s, hy_st_dtype *out)
{
    for (size_t i = 0; i < ST_N_DTYPES; i++)
        if (strcmp(st_dtypes[i].name, s) == 0) {
            *out = st_dtypes[i].dt;
            return 0;
        }
    return -1;
}

int64_t hy_st_nbytes(hy_st_dtype dt, int ndim, const int64_t *shape)
{
    int64_t n = (int64_t)hy_st_dtype_size(dt);

    if (n == 0 || ndim < 0 || ndim > ST_MAX_NDIM)
        return -1;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 0)
            return -1;
        if (shape[i] != 0 && n > INT64_MAX / shape[i])
            return -1;
        n *= shape[i];
    }
    return n;
}

float hy_f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000) << 16, exp = (h >> 10) & 0x1f, man = h & 0x3ff;
    union { uint32_t u; float f; } v;

    if (exp == 0x1f) {
        v.u = sign | 0x7f800000u | (man << 13);          /* inf / NaN */
    } else if (exp != 0) {
        v.u = sign | ((exp + 112) << 23) | (man << 13);  /* normal: rebias 15 -> 127 */
    } else if (man == 0) {
        v.u = sign;                                      /* signed zero */
    } else {
        v.f = (float)man * (1.0f / 16777216.0f);         /* subnormal: man * 2^-24 */
        v.u |= sign;
    }
    return v.f;
}

/* ---- reading ---------------------------------------------------------------- */

static int st_name_cmp(const void *a, const void *b)
{
    return strcmp(((const hy_st_tensor *)a)->name, ((const hy_st_tensor *)b)->name);
}

/* Tensors sorted by data offset, for the overlap check. */
typedef struct st_span {
    uint64_t begin, end;
    const char *name;
} st_span;

static int st_span_cmp(const void *a, const void *b)
{
    const st_span *x = a, *y = b;
    if (x->begin != y->begin)
        return x->begin < y->begin ? -1 : 1;
    return x->end < y->end ? -1 : x->end > y->end;
}

/* A non-negative JSON integer (data offsets, dims). */
static int st_json_u64(json_object *v, uint64_t *out)
{
    if (!v || !json_object_is_type(v, json_type_int))
        return -1;
    errno = 0;
    int64_t s = json_object_get_int64(v);
    if (s < 0)
        return -1;
    if (s == INT64_MAX)                 /* json-c clamps larger values: treat as overflow */
        return -1;
    *out = (uint64_t)s;
    return 0;
}

/* Validate one header entry and fill *t (name already set). */
static int st_parse_entry(const hy_st_file *f, json_object *v, size_t data_len,
                          const uint8_t *data, hy_st_tensor *t, st_span *span, hy_err *err)
{
    json_object *dt, *shape, *offs;
    uint64_t begin, end;
    int64_t nbytes;
    size_t esize;

    if (!json_object_is_type(v, json_type_object) ||
        !json_object_object_get_ex(v, "dtype", &dt) || !json_object_is_type(dt, json_type_string) ||
        !json_object_object_get_ex(v, "shape", &shape) ||
        !json_object_is_type(shape, json_type_array) ||
        !json_object_object_get_ex(v, "data_offsets", &offs) ||
        !json_object_is_type(offs, json_type_array))
        return hy_err_set(err, -EINVAL, "%s: tensor '%s': header entry needs dtype, shape and "
                          "data_offsets", f->path, t->name);
    if (st_dtype_parse(json_object_get_string(dt), &t->dtype) < 0)
        return hy_err_set(err, -EINVAL, "%s: tensor '%s': unknown dtype \"%.32s\"", f->path,
                          t->name, json_object_get_string(dt));
    if (json_object_array_length(shape) > ST_MAX_NDIM)
        return hy_err_set(err, -EINVAL, "%s: tensor '%s': %zu dimensions, limit %d", f->path,
                          t->name, json_object_array_length(shape), ST_MAX_NDIM);
    t->ndim = (int)json_object_array_length(shape);
    for (int i = 0; i < t->ndim; i++) {
        uint64_t d;
        if (st_json_u64(json_object_array_get_idx(shape, i), &d) < 0)
            return hy_err_set(err, -EINVAL, "%s: tensor '%s': shape[%d] is not a non-negative "
                              "integer", f->path, t->name, i);
        t->shape[i] = (int64_t)d;
    }
    if (json_object_array_length(offs) != 2 ||
        st_json_u64(json_object_array_get_idx(offs, 0), &begin) < 0 ||
        st_json_u64(json_object_array_get_idx(offs, 1), &end) < 0 || begin > end)
        return hy_err_set(err, -EINVAL, "%s: tensor '%s': data_offsets must be [begin, end] with "
                          "0 <= begin <= end", f->path, t->name);
    if (end > data_len)
        return hy_err_set(err, -EINVAL, "%s: tensor '%s': data_offsets [%llu, %llu) run past the "
                          "end of the data section (%zu bytes; file truncated?)", f->path, t->name,
                          (unsigned long long)begin, (unsigned long long)end, data_len);
    nbytes = hy_st_nbytes(t->dtype, t->ndim, t->shape);
    if (nbytes < 0)
        return hy_err_set(err, -EINVAL, "%s: tensor '%s': shape is too large", f->path, t->name);
    if ((uint64_t)nbytes != end - begin)
        return hy_err_set(err, -EINVAL, "%s: tensor '%s': shape and dtype %s need %lld bytes, "
                          "data_offsets span %llu", f->path, t->name, hy_st_dtype_name(t->dtype),
                          (long long)nbytes, (unsigned long long)(end - begin));
    esize = hy_st_dtype_size(t->dtype);
    t->data = data + begin;
    t->nbytes = (size_t)nbytes;
    if (begin % esize != 0 || (uintptr_t)t->data % esize != 0)
        return hy_err_set(err, -EINVAL, "%s: tensor '%s': data at offset %llu is not aligned to "
                          "its %zu-byte elements", f->path, t->name, (unsigned long long)begin,
                          esize);
    span->begin = begin;
    span->end = end;
    span->name = t->name;
    return 0;
}

static int st_check_overlap(const hy_st_file *f, st_span *spans, size_t n, hy_err *err)
{
    qsort(spans, n, sizeof(*spans), st_span_cmp);
    for (size_t i = 1; i < n; i++) {
        /* Empty tensors occupy no bytes and overlap nothing. */
        if (spans[i].begin == spans[i].end)
            continue;
        for (size_t j = i; j-- > 0;) {
            if (spans[j].begin == spans[j].end)
                continue;
            if (spans[i].begin < spans[j].end)
                return hy_err_set(err, -EINVAL, "%s: tensor '%s' [%llu, %llu) overlaps tensor "
                                  "'%s' [%llu, %llu)", f->path, spans[i].name,
                                  (unsigned long long)spans[i].begin,
                                  (unsigned long long)spans[i].end, spans[j].name,
                                  (unsigned long long)spans[j].begin,
                                  (unsigned long long)spans[j].end);
            break;
        }
    }
    return 0;
}

/* Parse the JSON header of an already mapped file. */
/* The data section, in place when it starts aligned, else copied to aligned memory. */
static const uint8_t *st_data_base(hy_st_file *f, size_t data_len, hy_err *err)
{
    const uint8_t *data = (const uint8_t *)f->map + ST_LEN_BYTES + f->header_len;

    if ((uintptr_t)data % ST_HEADER_ALIGN == 0 || data_len == 0)
        return data;
    if (posix_memalign(&f->data_copy, ST_HEADER_ALIGN * 8, data_len) != 0) {
        f->data_copy = NULL;
        hy_err_set(err, -ENOMEM, "%s: out of memory for an aligned copy of %zu data bytes "
                   "(the header is not padded to 8 bytes)", f->path, data_len);
        return NULL;
    }
    memcpy(f->data_copy, data, data_len);
    return f->data_copy;
}

static int st_parse_header(hy_st_file *f, hy_err *err)
{
    json_tokener *tok;
    json_object *root;
    enum json_tokener_error jerr;
    size_t data_len = f->map_len - ST_LEN_BYTES - f->header_len, n = 0, end;
    const uint8_t *data = st_data_base(f, data_len, err);
    st_span *spans = NULL;
    int r = 0;

    if (!data)
        return err ? err->code : -ENOMEM;
    if (!(tok = json_tokener_new()))
        return hy_err_set(err, -ENOMEM, "%s: out of memory", f->path);
    root = json_tokener_parse_ex(tok, f->header, (int)f->header_len);
    jerr = json_tokener_get_error(tok);
    end = json_tokener_get_parse_end(tok);
    json_tokener_free(tok);
    if (!root || jerr != json_tokener_success) {
        json_object_put(root);
        return hy_err_set(err, -EINVAL, "%s: header is not valid JSON: %s", f->path,
                          jerr == json_tokener_continue ? "it ends early"
                                                        : json_tokener_error_desc(jerr));
    }
    /* Writers pad the header with spaces; anything else after the object is garbage. */
    for (size_t i = end; i < f->header_len; i++)
        if (f->header[i] != ' ' && f->header[i] != '\n' && f->header[i] != '\t' &&
            f->header[i] != '\r') {
            json_object_put(root);
            return hy_err_set(err, -EINVAL, "%s: header has bytes after its JSON object "
                              "(offset %zu)", f->path, ST_LEN_BYTES + i);
        }
    if (!json_object_is_type(root, json_type_object)) {
        json_object_put(root);
        return hy_err_set(err, -EINVAL, "%s: header is not a JSON object", f->path);
    }
    size_t cap = (size_t)json_object_object_length(root);
    f->tensors = calloc(cap ? cap : 1, sizeof(*f->tensors));
    spans = calloc(cap ? cap : 1, sizeof(*spans));
    if (!f->tensors || !spans) {
        r = hy_err_set(err, -ENOMEM, "%s: out of memory", f->path);
        goto out;
    }
    json_object_object_foreach(root, key, val) {
        if (strcmp(key, "__metadata__") == 0)
            continue;
        hy_st_tensor *t = &f->tensors[n];
        t->name = strdup(key);
        if (!t->name) {
            r = hy_err_set(err, -ENOMEM, "%s: out of memory", f->path);
            goto out;
        }
        f->n_tensors = ++n;
        if ((r = st_parse_entry(f, val, data_len, data, t, &spans[n - 1], err)) < 0)
            goto out;
    }
    if ((r = st_check_overlap(f, spans, n, err)) < 0)
        goto out;
    qsort(f->tensors, n, sizeof(*f->tensors), st_name_cmp);
out:
    free(spans);
    json_object_put(root);
    return r;
}

static int st_map(hy_st_file *f, hy_err *err)
{
    struct stat st;
    uint64_t hlen = 0;
    int fd = open(f->path, O_RDONLY | O_CLOEXEC);

    if (fd < 0)
        return hy_err_set(err, -errno, "%s: cannot open: %s", f->path, strerror(errno));
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return hy_err_set(err, -EINVAL, "%s: not a regular file", f->path);
    }
    if ((uint64_t)st.st_size < ST_LEN_BYTES) {
        close(fd);
        return hy_err_set(err, -EINVAL, "%s: truncated: %lld bytes, too short for the 8-byte "
                          "header length", f->path, (long long)st.st_size);
    }
    f->map_len = (size_t)st.st_size;
    f->map = mmap(NULL, f->map_len, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (f->map == MAP_FAILED) {
        f->map = NULL;
        return hy_err_set(err, -errno, "%s: mmap: %s", f->path, strerror(errno));
    }
    for (int i = 0; i < ST_LEN_BYTES; i++)
        hlen |= (uint64_t)((const uint8_t *)f->map)[i] << (8 * i);
    if (hlen > f->map_len - ST_LEN_BYTES)
        return hy_err_set(err, -EINVAL, "%s: header length %llu runs past the end of the file "
                          "(%zu bytes; truncated or not a safetensors file)", f->path,
                          (unsigned long long)hlen, f->map_len);
    if (hlen == 0 || hlen > ST_HEADER_MAX)
        return hy_err_set(err, -EINVAL, "%s: header length %llu is not valid", f->path,
                          (unsigned long long)hlen);
    f->header = (const char *)f->map + ST_LEN_BYTES;
    f->header_len = (size_t)hlen;
    return 0;
}

int hy_st_open(const char *path, hy_st_file **out, hy_err *err)
{
    hy_st_file *f = calloc(1, sizeof(*f));
    int r;

    *out = NULL;
    if (!f || !(f->path = strdup(path))) {
        free(f);
        return hy_err_set(err, -ENOMEM, "%s: out of memory", path);
    }
    if ((r = st_map(f, err)) < 0 || (r = st_parse_header(f, err)) < 0) {
        hy_st_close(f);
        return r;
    }
    *out = f;
    return 0;
}

void hy_st_close(hy_st_file *f)
{
    if (!f)
        return;
    for (size_t i = 0; i < f->n_tensors; i++)
        free(f->tensors[i].name);
    free(f->tensors);
    free(f->data_copy);
    if (f->map)
        munmap(f->map, f->map_len);
    free(f->path);
    free(f);
}

const hy_st_tensor *hy_st_find(const hy_st_file *f, const char *name)
{
    hy_st_tensor key = { .name = (char *)name };

    if (!f || !f->n_tensors)
        return NULL;
    return bsearch(&key, f->tensors, f->n_tensors, sizeof(key), st_name_cmp);
}

/* ---- writing ---------------------------------------------------------------- */

/* The header JSON, padded with spaces to a multiple of 8 bytes. */
static char *st_header_build(const char *path, const hy_st_out *t, size_t n, size_t *len,
                             hy_err *err)
{
    json_object *root = json_object_new_object(), *meta = json_object_new_object();
    uint64_t off = 0;
    char *out = NULL;

    json_object_object_add(meta, "format", json_object_new_string("pt"));
    json_object_object_add(root, "__metadata__", meta);
    for (size_t i = 0; i < n; i++) {
        json_object *e = json_object_new_object(), *shape = json_object_new_array(),
                    *offs = json_object_new_array();
        int64_t nb = hy_st_nbytes(t[i].dtype, t[i].ndim, t[i].shape);
        if (nb < 0 || !t[i].name) {
            json_object_put(e); json_object_put(shape); json_object_put(offs);
            json_object_put(root);
            hy_err_set(err, -EINVAL, "%s: tensor '%s': bad dtype or shape", path,
                       t[i].name ? t[i].name : "?");
            return NULL;
        }
        for (int d = 0; d < t[i].ndim; d++)
            json_object_array_add(shape, json_object_new_int64(t[i].shape[d]));
        json_object_array_add(offs, json_object_new_int64((int64_t)off));
        json_object_array_add(offs, json_object_new_int64((int64_t)(off + (uint64_t)nb)));
        json_object_object_add(e, "dtype", json_object_new_string(hy_st_dtype_name(t[i].dtype)));
        json_object_object_add(e, "shape", shape);
        json_object_object_add(e, "data_offsets", offs);
        json_object_object_add(root, t[i].name, e);
        off += (uint64_t)nb;
    }
    const char *js = json_object_to_json_string_ext(root, JSON_C_TO_STRING_PLAIN |
                                                          JSON_C_TO_STRING_NOSLASHESCAPE);
    size_t jl = strlen(js), padded = (jl + ST_HEADER_ALIGN - 1) / ST_HEADER_ALIGN * ST_HEADER_ALIGN;
    out = malloc(padded + 1);
    if (out) {
        memcpy(out, js, jl);
        memset(out + jl, ' ', padded - jl);
        out[padded] = '\0';
        *len = padded;
    } else {
        hy_err_set(err, -ENOMEM, "%s: out of memory", path);
    }
    json_object_put(root);
    return out;
}

static int st_write_all(FILE *fp, const void *p, size_t n)
{
    return n == 0 || fwrite(p, 1, n, fp) == n ? 0 : -1;
}

int hy_st_write_stream(const char *path, const hy_st_out *t, size_t n,
                       hy_st_fill_fn fill, void *user, hy_err *err)
{
    size_t hlen = 0, maxb = 0;
    uint8_t lenbuf[ST_LEN_BYTES];
    void *buf = NULL;
    char *header = st_header_build(path, t, n, &hlen, err);
    FILE *fp;
    int r = 0;

    if (!header)
        return err ? err->code : -EINVAL;
    for (size_t i = 0; i < n; i++) {
        size_t nb = (size_t)hy_st_nbytes(t[i].dtype, t[i].ndim, t[i].shape);
        maxb = nb > maxb ? nb : maxb;
    }
    if (fill && !(buf = malloc(maxb ? maxb : 1))) {
        free(header);
        return hy_err_set(err, -ENOMEM, "%s: out of memory (%zu bytes)", path, maxb);
    }
    fp = fopen(path, "wb");
    if (!fp) {
        r = hy_err_set(err, -errno, "%s: cannot create: %s", path, strerror(errno));
        goto out;
    }
    for (int i = 0; i < ST_LEN_BYTES; i++)
        lenbuf[i] = (uint8_t)((uint64_t)hlen >> (8 * i));
    if (st_write_all(fp, lenbuf, sizeof(lenbuf)) < 0 || st_write_all(fp, header, hlen) < 0)
        r = hy_err_set(err, -EIO, "%s: write failed: %s", path, strerror(errno));
    for (size_t i = 0; i < n && r == 0; i++) {
        size_t nb = (size_t)hy_st_nbytes(t[i].dtype, t[i].ndim, t[i].shape);
        const void *src = t[i].data;
        if (fill) {
            if ((r = fill(user, i, buf, nb, err)) < 0)
                break;
            src = buf;
        }
        if (nb && !src)
            r = hy_err_set(err, -EINVAL, "%s: tensor '%s' has no data", path, t[i].name);
        else if (st_write_all(fp, src, nb) < 0)
            r = hy_err_set(err, -EIO, "%s: write failed at tensor '%s': %s", path, t[i].name,
                           strerror(errno));
    }
    if (fclose(fp) != 0 && r == 0)
        r = hy_err_set(err, -EIO, "%s: write failed: %s", path, strerror(errno));
    if (r < 0)
        unlink(path);
out:
    free(buf);
    free(header);
    return r;
}

int hy_st_write(const char *path, const hy_st_out *t, size_t n, hy_err *err)
{
    return hy_st_write_stream(path, t, n, NULL, NULL, err);
}
