/* safetensors.h: read-only, bounds-checked access to mmap'ed .safetensors files. */
#ifndef HYMBA_ENGINE_SAFETENSORS_H
#define HYMBA_ENGINE_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>
#include "kernels/backend.h"

/* Dtypes on disk beyond the three weights may use (golden files hold I32). */
typedef enum hy_st_dtype {
    HY_ST_F32, HY_ST_F16, HY_ST_BF16, HY_ST_I32, HY_ST_I64, HY_ST_F64, HY_ST_U8,
} hy_st_dtype;

typedef struct hy_st_tensor {
    char *name;
    hy_st_dtype dtype;
    int ndim;
    int64_t shape[8];
    const void *data;        /* inside the mapping, validated in bounds */
    size_t nbytes;
} hy_st_tensor;

typedef struct hy_st_file {
    char *path;
    void *map;
    size_t map_len;
    const char *header;      /* JSON header bytes (not NUL-terminated) */
    size_t header_len;
    hy_st_tensor *tensors;
    size_t n_tensors;
    void *data_copy;         /* NULL, or an aligned copy of the data section (see below) */
} hy_st_file;

/* Map and validate: header length within the file, JSON well formed, every
 * dtype known, offsets in range, non-overlapping, sizes matching shapes.
 * Writers pad the header so the data section starts 8-aligned; for a file
 * that is not padded, the data section is copied into aligned memory (so
 * every tensor is aligned to its element size) instead of being used in place.
 * A tensor whose offset is not a multiple of its element size is refused. */
int hy_st_open(const char *path, hy_st_file **out, hy_err *err);
void hy_st_close(hy_st_file *f);
const hy_st_tensor *hy_st_find(const hy_st_file *f, const char *name);

/* Write a safetensors file (used by hymba-mkmodel, hymba-run --dump-logits, tests). */
typedef struct hy_st_out {
    const char *name;
    hy_st_dtype dtype;
    int ndim;
    int64_t shape[8];
    const void *data;
} hy_st_out;
int hy_st_write(const char *path, const hy_st_out *t, size_t n, hy_err *err);

/* Streaming variant for files larger than memory (hymba-mkmodel): the header
 * is written from t[] (data ignored), then fill() is called once per tensor,
 * in order, to produce its nbytes into buf. */
typedef int (*hy_st_fill_fn)(void *user, size_t index, void *buf, size_t nbytes, hy_err *err);
int hy_st_write_stream(const char *path, const hy_st_out *t, size_t n,
                       hy_st_fill_fn fill, void *user, hy_err *err);

size_t hy_st_dtype_size(hy_st_dtype dt);
const char *hy_st_dtype_name(hy_st_dtype dt);
/* Bytes of a tensor of this dtype and shape; -1 on overflow or a negative dim. */
int64_t hy_st_nbytes(hy_st_dtype dt, int ndim, const int64_t *shape);

/* Scalar conversions (round to nearest even for the narrowing ones). */
static inline float hy_bf16_to_f32(uint16_t h)
{
    union { uint32_t u; float f; } v = { .u = (uint32_t)h << 16 };
    return v.f;
}

static inline uint16_t hy_f32_to_bf16(float f)
{
    union { float f; uint32_t u; } v = { .f = f };
    if ((v.u & 0x7fffffffu) > 0x7f800000u)      /* NaN: keep it quiet */
        return (uint16_t)((v.u >> 16) | 0x40);
    return (uint16_t)((v.u + 0x7fffu + ((v.u >> 16) & 1)) >> 16);
}

float hy_f16_to_f32(uint16_t h);

#endif
