# The CPU backend: the reference implementation of the forward pass (fp32 activations), threaded.
noinst_LIBRARIES += kernels/cpu/libhykcpu.a
kernels_cpu_libhykcpu_a_SOURCES = \
	kernels/backend.h kernels/state_image.h kernels/err.c \
	kernels/cpu/cpu_internal.h kernels/cpu/cpu_debug.h \
	kernels/cpu/pool.c \
	kernels/cpu/matmul.c \
	kernels/cpu/vecmath.c \
	kernels/cpu/state.c \
	kernels/cpu/forward.c \
	kernels/cpu/cpu_backend.c
HYMBA_BACKEND_LIBS = kernels/cpu/libhykcpu.a
