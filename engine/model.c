/* model.c: hy_model_load (checkpoint + backend choice) and the hy_model_* accessors. */
#include <config.h>   /* autoconf's: HAVE_CUDA (angle brackets skip engine/config.h) */
#include "engine/model_internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PREFILL_CHUNK_DEFAULT 512

static int backend_start(hy_model *m, const hy_backend_ops *be, const hy_load_opts *o,
                         hy_err *err)
{
    hy_backend_opts bo = { .threads = o->threads, .device = o->device, .verbose = o->verbose };
    int r = be->init(&bo, &m->be_ctx, err);

    if (r < 0)
        return r;
    r = be->model_new(m->be_ctx, &m->arch, &m->num, &m->w, &m->bm, err);
    if (r < 0) {
        be->fini(m->be_ctx);
        m->be_ctx = NULL;
        return r;
    }
    m->be = be;
    return 0;
}

/* "cpu", "cuda" or "auto": CUDA when built and it starts, else the CPU with a log line. */
static int backend_choose(hy_model *m, const hy_load_opts *o, hy_err *err)
{
    const char *want = o->backend && *o->backend ? o->backend : "auto";

    if (strcmp(want, "cpu") == 0)
        return backend_start(m, &hy_backend_cpu, o, err);
    if (strcmp(want, "cuda") == 0) {
#ifdef HAVE_CUDA
        return backend_start(m, &hy_backend_cuda, o, err);
#else
        return hy_err_set(err, -ENOTSUP, "backend 'cuda': this build has no CUDA backend "
                          "(configure did not find CUDA)");
#endif
    }
    if (strcmp(want, "auto") != 0)
        return hy_err_set(err, -EINVAL, "backend '%s' is unknown (cpu, cuda or auto)", want);
#ifdef HAVE_CUDA
    hy_err cerr = { 0 };
    if (backend_start(m, &hy_backend_cuda, o, &cerr) == 0)
        return 0;
    fprintf(stderr, "hymba: CUDA backend unavailable (%s); using the CPU backend\n", cerr.msg);
#else
    if (o->verbose)
        fprintf(stderr, "hymba: built without CUDA; using the CPU backend\n");
#endif
    return backend_start(m, &hy_backend_cpu, o, err);
}

int hy_model_load(const char *dir, const hy_load_opts *opts, hy_model **out, hy_err *err)
{
    static const hy_load_opts defaults = { .backend = "auto" };
    const hy_load_opts *o = opts ? opts : &defaults;
    hy_model *m = calloc(1, sizeof(*m));
    int r;

    *out = NULL;
    if (!m)
        return hy_err_set(err, -ENOMEM, "out of memory");
    if ((r = hy_weights_open(m, dir, err)) < 0)
        goto fail;
    m->num = o->num;
    m->max_ctx = o->max_ctx > 0 ? o->max_ctx : m->cfg.max_position_embeddings;
    m->prefill_chunk = o->prefill_chunk > 0 ? o->prefill_chunk : PREFILL_CHUNK_DEFAULT;
    if ((r = backend_choose(m, o, err)) < 0)
        goto fail;
    if (o->prefill_chunk <= 0 && m->be->prefill_chunk > 0)
        m->prefill_chunk = m->be->prefill_chunk;
    if (o->verbose)
        fprintf(stderr, "hymba: loaded %s: %d layers, hidden %d, vocab %d, %d file(s), "
                "backend %s\n", dir, m->arch.n_layers, m->arch.hidden, m->arch.vocab,
                m->n_files, m->be->name);
    *out = m;
    return 0;
fail:
    hy_model_free(m);
    return r;
}

void hy_model_free(hy_model *m)
{
    if (!m)
        return;
    if (m->be) {
        if (m->bm)
            m->be->model_free(m->be_ctx, m->bm);
        m->be->fini(m->be_ctx);
    }
    hy_weights_close(m);
    free(m);
}

const hy_config *hy_model_config(const hy_model *m)
{
    return &m->cfg;
}

const hy_arch *hy_model_arch(const hy_model *m)
{
    return &m->arch;
}

const char *hy_model_backend(const hy_model *m)
{
    return m->be ? m->be->name : "none";
}

const char *hy_model_dir(const hy_model *m)
{
    return m->dir;
}

const uint8_t *hy_model_fingerprint(const hy_model *m)
{
    return m->fingerprint;
}

int64_t hy_model_max_ctx(const hy_model *m)
{
    return m->max_ctx;
}

void hy_model_stats(const hy_model *m, hy_backend_stats *out)
{
    memset(out, 0, sizeof(*out));
    if (m->be && m->be->stats)
        m->be->stats(m->be_ctx, out);
}

uint64_t hy_model_weight_bytes(const hy_model *m)
{
    return m->weight_bytes;
}
