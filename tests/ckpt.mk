# ckpt tests: CRC32C, checkpoint format and refusals, parser fuzzing, session store, crash injection, exact resume.
noinst_LIBRARIES += tests/libckptsynth.a
tests_libckptsynth_a_SOURCES = tests/ckpt_synth.h tests/ckpt_synth.c
CKPT_TEST_LIBS = tests/libckptsynth.a $(HYMBA_TEST_LIBS)

check_PROGRAMS += tests/test-ckpt-crc32c tests/test-ckpt-format
TESTS += tests/test-ckpt-crc32c tests/test-ckpt-format
tests_test_ckpt_crc32c_LDADD = $(HYMBA_TEST_LIBS)
tests_test_ckpt_format_LDADD = $(CKPT_TEST_LIBS)

# The checkpoint parser's fuzz target, run here over built-in seeds + deterministic mutations.
check_PROGRAMS += tests/fuzz-ckpt
TESTS += tests/fuzz-ckpt
tests_fuzz_ckpt_LDADD = $(CKPT_TEST_LIBS)
EXTRA_DIST += tests/fuzz-ckpt-corpus

# `make fuzz-ckpt`: the libFuzzer build (clang), run for FUZZ_SECONDS over the seed corpus.
FUZZ_SECONDS ?= 60
fuzz-ckpt:
	clang -g -O1 -fsanitize=fuzzer,address,undefined -DHY_FUZZ_LIBFUZZER -D_GNU_SOURCE \
	  -I$(top_srcdir) -I$(top_builddir) $(top_srcdir)/tests/fuzz-ckpt.c $(top_srcdir)/tests/ckpt_synth.c \
	  $(top_srcdir)/engine/ckpt.c $(top_srcdir)/engine/crc32c.c $(top_srcdir)/kernels/err.c \
	  -o fuzz-ckpt-libfuzzer -lpthread -lm
	mkdir -p fuzz-ckpt-work && cp $(top_srcdir)/tests/fuzz-ckpt-corpus/* fuzz-ckpt-work/
	./fuzz-ckpt-libfuzzer -max_total_time=$(FUZZ_SECONDS) fuzz-ckpt-work
.PHONY: fuzz-ckpt

# Session store (daemon/store.c) and the crash-injection test of its atomic save.
check_PROGRAMS += tests/test-ckpt-store tests/test-ckpt-crash
TESTS += tests/test-ckpt-store tests/test-ckpt-crash
tests_test_ckpt_store_SOURCES = tests/test-ckpt-store.c daemon/store.h daemon/store.c
tests_test_ckpt_store_LDADD = $(CKPT_TEST_LIBS)
tests_test_ckpt_crash_SOURCES = tests/test-ckpt-crash.c daemon/store.h daemon/store.c
tests_test_ckpt_crash_LDADD = $(CKPT_TEST_LIBS)

# Exact resume on the CPU backend (golden tiny-fp32 model; skips without ../shared).
check_PROGRAMS += tests/test-ckpt-resume
TESTS += tests/test-ckpt-resume
tests_test_ckpt_resume_SOURCES = tests/test-ckpt-resume.c daemon/store.h daemon/store.c
tests_test_ckpt_resume_LDADD = $(HYMBA_TEST_LIBS)

# End to end through hymbad: SIGKILL/SIGTERM and restart, exact resume, regenerate, rewind,
# export/import (and a second UID when run as root), damaged and other-model files.
TESTS += tests/ckpt-daemon.sh
EXTRA_DIST += tests/ckpt-daemon.sh
