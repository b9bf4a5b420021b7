/* cpu_debug.h: test-only hooks into the CPU backend (per-layer residual capture, kernel choice). */
#ifndef HYMBA_KERNELS_CPU_DEBUG_H
#define HYMBA_KERNELS_CPU_DEBUG_H

#include <stdbool.h>
#include <stdint.h>

/*
 * Called by every forward step of the CPU backend (meta prefix in model_new,
 * prefill, decode) after building the layer input (layer == -1) and after each
 * decoder layer (layer == L, the residual stream after its MLP add).
 *   pos: [n] combined position of each row;  x: [n][hidden] fp32.
 * Process-wide and not thread-safe: tests set it before loading a model.
 */
typedef void (*hy_cpu_layer_hook)(void *user, int layer, const int64_t *pos, int n,
                                  int hidden, const float *x);
void hy_cpu_set_layer_hook(hy_cpu_layer_hook fn, void *user);

/* Use the portable C matmul kernels even where AVX2/FMA is available. */
void hy_cpu_force_portable(bool on);
/* "avx2" or "portable": the matmul kernels in use. */
const char *hy_cpu_kernel_isa(void);

#endif
