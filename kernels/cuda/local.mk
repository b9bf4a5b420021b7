# The CUDA backend (nvcc + cuBLAS): built when configure found CUDA; the CPU backend is always there.
CUDA_GENCODE = -gencode arch=compute_90,code=sm_90 -gencode arch=compute_90a,code=sm_90a \
	-gencode arch=compute_90,code=compute_90
HY_NVCCFLAGS = -std=c++17 -O3 $(CUDA_GENCODE) -Werror all-warnings -Xcompiler -Wall,-Wextra,-Werror \
	$(NVCCFLAGS)

if HAVE_CUDA
noinst_LIBRARIES += kernels/cuda/libhykcuda.a
kernels_cuda_libhykcuda_a_SOURCES = \
	kernels/cuda/cuda_kernels.cuh kernels/cuda/cuda_internal.cuh kernels/cuda/cuda_device.cuh \
	kernels/cuda/cuda_kernels.cu kernels/cuda/cuda_attn.cu \
	kernels/cuda/cuda_backend.cu kernels/cuda/cuda_forward.cu kernels/cuda/cuda_decode.cu
HYMBA_BACKEND_LIBS += kernels/cuda/libhykcuda.a $(CUDA_LIBS)
endif

# The .cu suffix rule below tracks no header dependencies: every CUDA object
# depends on every header the CUDA sources include (a changed struct must
# rebuild all of them).
HY_CUDA_DEPS = $(srcdir)/kernels/cuda/cuda_kernels.cuh $(srcdir)/kernels/cuda/cuda_internal.cuh \
	$(srcdir)/kernels/cuda/cuda_device.cuh $(srcdir)/kernels/backend.h $(srcdir)/kernels/state_image.h
if HAVE_CUDA
$(kernels_cuda_libhykcuda_a_OBJECTS) $(tests_test_cuda_kernels_OBJECTS) \
	$(bench_cuda_prefill_kernels_OBJECTS): $(HY_CUDA_DEPS)
endif

SUFFIXES += .cu
.cu.o:
	$(AM_V_GEN)$(MKDIR_P) $(@D) && \
	$(NVCC) $(HY_NVCCFLAGS) $(DEFS) $(DEFAULT_INCLUDES) $(AM_CPPFLAGS) $(CUDA_CPPFLAGS) -c -o $@ $<

# The GPU check script (run by hand on a GPU machine; CI has none) and its carry helper.
dist_noinst_SCRIPTS += tools/gpu-check.sh tools/gpu-carry.sh tools/gpu-ab.sh
