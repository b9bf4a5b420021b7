# CUDA backend tests: kernels vs host references, the backend vs golden and the CPU backend.
# Without a GPU (CI) they are still built and linked, and print "SKIP: no CUDA device: <reason>".

# The engine entry points added for the CUDA work (decode + next token, device ceilings), on the CPU backend.
check_PROGRAMS += tests/test-seq-next
TESTS += tests/test-seq-next
tests_test_seq_next_SOURCES = tests/test-seq-next.c tests/randmodel.c tests/randmodel.h
tests_test_seq_next_LDADD = $(HYMBA_TEST_LIBS)
if HAVE_CUDA
check_PROGRAMS += tests/test-cuda-kernels
TESTS += tests/test-cuda-kernels
tests_test_cuda_kernels_SOURCES = tests/test-cuda-kernels.cu
tests_test_cuda_kernels_LDADD = kernels/cuda/libhykcuda.a kernels/cpu/libhykcpu.a $(CUDA_LIBS) -lm

check_PROGRAMS += tests/test-cuda-backend
TESTS += tests/test-cuda-backend
tests_test_cuda_backend_SOURCES = tests/test-cuda-backend.c tests/randmodel.c tests/randmodel.h
tests_test_cuda_backend_LDADD = $(HYMBA_TEST_LIBS)
endif

# Timing of the prefill element-wise and scan kernels (needs a GPU; built with the checks, not run).
if HAVE_CUDA
check_PROGRAMS += bench/cuda-prefill-kernels
bench_cuda_prefill_kernels_SOURCES = bench/cuda-prefill-kernels.cu
bench_cuda_prefill_kernels_LDADD = kernels/cuda/libhykcuda.a $(CUDA_LIBS) -lm
endif

# cuBLAS algorithm choice for the prefill GEMM shapes (needs a GPU; built with the checks, not run).
if HAVE_CUDA
check_PROGRAMS += bench/cuda-prefill-gemm
bench_cuda_prefill_gemm_SOURCES = bench/cuda-prefill-gemm.cu
bench_cuda_prefill_gemm_LDADD = $(CUDA_LIBS) -lm
endif

# Weight streaming of the persistent decode grid: direct loads vs shared-memory rings (needs a GPU).
if HAVE_CUDA
check_PROGRAMS += bench/cuda-stream
bench_cuda_stream_SOURCES = bench/cuda-stream.cu
bench_cuda_stream_LDADD = $(CUDA_LIBS)
endif
