/* pool.c: a small pthread pool with a dynamic schedule, spin-then-sleep waits. */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include "kernels/cpu/cpu_internal.h"

/* Pause iterations a waiting thread spins before sleeping (tens of
 * microseconds): decode steps issue hundreds of short parallel regions per
 * token, and a futex wake per region would cost more than the region itself.
 * Longer spins only burn CPU that a preempted sibling thread needs. */
#define POOL_SPIN 2000

struct cpu_pool {
    int n;                       /* threads including the caller */
    pthread_t *th;               /* [n-1] workers */
    pthread_mutex_t mu;
    pthread_cond_t cv_start, cv_done;
    atomic_uint gen;             /* bumped once per region */
    atomic_int pending;          /* workers still inside the region */
    atomic_bool quit;
    atomic_int_fast64_t next;    /* next unclaimed item */
    cpu_task_fn fn;
    void *arg;
    int64_t n_items, grain;
    bool guided;
};

typedef struct pool_worker_arg {
    cpu_pool *p;
    int tid;
} pool_worker_arg;

static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

/* Claims chunks until none is left.  Guided: a chunk is a share of what is
 * left (long contiguous runs first, small ones to balance the end), in whole
 * grains; otherwise every chunk is one grain. */
static void pool_work(cpu_pool *p, int tid)
{
    for (;;) {
        int64_t b = atomic_load(&p->next), size = p->grain;
        if (b >= p->n_items)
            break;
        if (p->guided) {
            size = (p->n_items - b) / (2 * p->n) / p->grain * p->grain;
            if (size < p->grain)
                size = p->grain;
        }
        if (!atomic_compare_exchange_weak(&p->next, &b, b + size))
            continue;
        int64_t e = b + size < p->n_items ? b + size : p->n_items;
        p->fn(p->arg, b, e, tid);
    }
}

static void *pool_worker(void *v)
{
    pool_worker_arg *wa = v;
    cpu_pool *p = wa->p;
    int tid = wa->tid;
    unsigned seen = 0;

    free(wa);
    for (;;) {
        unsigned g = atomic_load(&p->gen);
        for (int i = 0; i < POOL_SPIN && g == seen && !atomic_load(&p->quit); i++) {
            cpu_relax();
            g = atomic_load(&p->gen);
        }
        if (g == seen) {
            pthread_mutex_lock(&p->mu);
            while ((g = atomic_load(&p->gen)) == seen && !atomic_load(&p->quit))
                pthread_cond_wait(&p->cv_start, &p->mu);
            pthread_mutex_unlock(&p->mu);
        }
        if (atomic_load(&p->quit))
            break;
        seen = g;
        pool_work(p, tid);
        if (atomic_fetch_sub(&p->pending, 1) == 1) {
            pthread_mutex_lock(&p->mu);
            pthread_cond_signal(&p->cv_done);
            pthread_mutex_unlock(&p->mu);
        }
    }
    return NULL;
}

int cpu_pool_new(int threads, cpu_pool **out, hy_err *err)
{
    cpu_pool *p = calloc(1, sizeof(*p));
    if (!p)
        return hy_err_set(err, -ENOMEM, "cpu backend: out of memory for the thread pool");
    p->n = threads < 1 ? 1 : threads;
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv_start, NULL);
    pthread_cond_init(&p->cv_done, NULL);
    p->th = calloc((size_t)p->n, sizeof(pthread_t));
    if (!p->th) {
        cpu_pool_free(p);
        return hy_err_set(err, -ENOMEM, "cpu backend: out of memory for the thread pool");
    }
    for (int i = 1; i < p->n; i++) {
        pool_worker_arg *wa = malloc(sizeof(*wa));
        int rc = wa ? 0 : ENOMEM;
        if (wa) {
            wa->p = p;
            wa->tid = i;
            rc = pthread_create(&p->th[i - 1], NULL, pool_worker, wa);
            if (rc)
                free(wa);
        }
        if (rc) {
            p->n = i;   /* only threads 1..i-1 exist */
            cpu_pool_free(p);
            return hy_err_set(err, -rc, "cpu backend: cannot start worker thread %d: %s", i, strerror(rc));
        }
    }
    *out = p;
    return 0;
}

void cpu_pool_free(cpu_pool *p)
{
    if (!p)
        return;
    pthread_mutex_lock(&p->mu);
    atomic_store(&p->quit, true);
    pthread_cond_broadcast(&p->cv_start);
    pthread_mutex_unlock(&p->mu);
    for (int i = 1; i < p->n && p->th; i++)
        pthread_join(p->th[i - 1], NULL);
    pthread_cond_destroy(&p->cv_start);
    pthread_cond_destroy(&p->cv_done);
    pthread_mutex_destroy(&p->mu);
    free(p->th);
    free(p);
}

int cpu_pool_threads(const cpu_pool *p)
{
    return p ? p->n : 1;
}

void cpu_pool_run(cpu_pool *p, int64_t n, int64_t grain, cpu_task_fn fn, void *arg)
{
    cpu_pool_run_sched(p, n, grain, false, fn, arg);
}

void cpu_pool_run_sched(cpu_pool *p, int64_t n, int64_t grain, bool guided, cpu_task_fn fn, void *arg)
{
    if (n <= 0)
        return;
    if (grain < 1)
        grain = 1;
    if (!p || p->n == 1 || n <= grain) {
        fn(arg, 0, n, 0);
        return;
    }
    p->fn = fn;
    p->arg = arg;
    p->n_items = n;
    p->grain = grain;
    p->guided = guided;
    atomic_store(&p->next, 0);
    atomic_store(&p->pending, p->n - 1);
    pthread_mutex_lock(&p->mu);
    atomic_fetch_add(&p->gen, 1);
    pthread_cond_broadcast(&p->cv_start);
    pthread_mutex_unlock(&p->mu);

    pool_work(p, 0);

    for (int i = 0; i < POOL_SPIN && atomic_load(&p->pending) > 0; i++)
        cpu_relax();
    if (atomic_load(&p->pending) > 0) {
        pthread_mutex_lock(&p->mu);
        while (atomic_load(&p->pending) > 0)
            pthread_cond_wait(&p->cv_done, &p->mu);
        pthread_mutex_unlock(&p->mu);
    }
}
