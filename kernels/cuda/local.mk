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

SUFFIXES += .cu
.cu.o:
	$(AM_V_GEN)$(MKDIR_P) $(@D) && \
	$(NVCC) $(HY_NVCCFLAGS) $(DEFS) $(DEFAULT_INCLUDES) $(AM_CPPFLAGS) $(CUDA_CPPFLAGS) -c -o $@ $<

# The GPU check script (run by hand on a GPU machine; CI has none) and its carry helper.
dist_noinst_SCRIPTS += tools/gpu-check.sh tools/gpu-carry.sh
