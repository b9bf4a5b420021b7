/* test-cpu-pool: every schedule of the CPU backend's thread pool visits each item exactly once. */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include "kernels/cpu/cpu_internal.h"
#include "tests/testutil.h"

typedef struct visit {
    atomic_int *count;    /* [n] visits per item */
    int64_t grain;
    atomic_int bad_align;
} visit;

static void visit_task(void *v, int64_t b, int64_t e, int tid)
{
    visit *vi = v;
    (void)tid;
    if (b % vi->grain)
        atomic_fetch_add(&vi->bad_align, 1);
    for (int64_t i = b; i < e; i++)
        atomic_fetch_add(&vi->count[i], 1);
}

int main(void)
{
    static const int threads[] = {1, 2, 3, 5};
    static const int64_t sizes[] = {1, 7, 16, 33, 100, 1000, 4099};
    static const int64_t grains[] = {1, 4, 16, 64};
    int runs = 0;

    for (size_t ti = 0; ti < sizeof(threads) / sizeof(threads[0]); ti++) {
        cpu_pool *p = NULL;
        hy_err err = {0};
        if (cpu_pool_new(threads[ti], &p, &err) < 0) {
            CHECK(0, "pool of %d: %s", threads[ti], err.msg);
            continue;
        }
        for (size_t si = 0; si < sizeof(sizes) / sizeof(sizes[0]); si++)
            for (size_t gi = 0; gi < sizeof(grains) / sizeof(grains[0]); gi++)
                for (int split = 0; split < 2; split++) {
                    int64_t n = sizes[si];
                    visit vi = {.count = calloc((size_t)n, sizeof(atomic_int)), .grain = grains[gi]};
                    cpu_pool_run_sched(p, n, grains[gi], split, visit_task, &vi);
                    int64_t wrong = 0;
                    for (int64_t i = 0; i < n; i++)
                        wrong += atomic_load(&vi.count[i]) != 1;
                    CHECK(wrong == 0, "threads %d n %lld grain %lld split %d: %lld items not visited once",
                          threads[ti], (long long)n, (long long)grains[gi], split, (long long)wrong);
                    CHECK(atomic_load(&vi.bad_align) == 0, "threads %d n %lld grain %lld split %d: unaligned chunk",
                          threads[ti], (long long)n, (long long)grains[gi], split);
                    free(vi.count);
                    runs++;
                }
        cpu_pool_free(p);
    }
    printf("test-cpu-pool: %d schedules checked\n", runs);
    return hy_test_done("test-cpu-pool");
}
