# tok tests: tokenizer against reference vectors, synthetic tokenizer.json files, chat format, fuzz seeds.
check_PROGRAMS += tests/test-tok
TESTS += tests/test-tok
tests_test_tok_SOURCES = tests/test-tok.c
tests_test_tok_CPPFLAGS = $(AM_CPPFLAGS) $(JSONC_CFLAGS)
tests_test_tok_LDADD = $(HYMBA_TEST_LIBS)

check_PROGRAMS += tests/test-chat
TESTS += tests/test-chat
tests_test_chat_SOURCES = tests/test-chat.c
tests_test_chat_CPPFLAGS = $(AM_CPPFLAGS) $(JSONC_CFLAGS)
tests_test_chat_LDADD = $(HYMBA_TEST_LIBS)

check_PROGRAMS += tests/test-tok-synth
TESTS += tests/test-tok-synth
tests_test_tok_synth_SOURCES = tests/test-tok-synth.c
tests_test_tok_synth_CPPFLAGS = $(AM_CPPFLAGS) $(JSONC_CFLAGS)
tests_test_tok_synth_LDADD = $(HYMBA_TEST_LIBS)

# hymba-mkmodel's synthetic tokenizer (built as a bin program before the tests run).
check_PROGRAMS += tests/test-tok-mkmodel
TESTS += tests/test-tok-mkmodel
tests_test_tok_mkmodel_SOURCES = tests/test-tok-mkmodel.c
tests_test_tok_mkmodel_LDADD = $(HYMBA_TEST_LIBS)

# The fuzz target as a regression test over the seed corpus (no libFuzzer needed).
check_PROGRAMS += tests/fuzz-tok
TESTS += tests/fuzz-tok
tests_fuzz_tok_SOURCES = tests/fuzz-tok.c
tests_fuzz_tok_CPPFLAGS = $(AM_CPPFLAGS) $(JSONC_CFLAGS)
tests_fuzz_tok_LDADD = $(HYMBA_TEST_LIBS)
EXTRA_DIST += tests/fuzz-tok-seeds

# libFuzzer build with clang (instruments the tokenizer sources themselves):
#   make fuzz-tok && ./tests/fuzz-tok-libfuzzer -max_total_time=60 CORPUS_DIR $(top_srcdir)/tests/fuzz-tok-seeds
FUZZ_CC = clang
FUZZ_FLAGS = -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined
FUZZ_TOK_SRCS = $(top_srcdir)/tests/fuzz-tok.c $(top_srcdir)/tests/testutil.c $(top_srcdir)/engine/tok.c $(top_srcdir)/engine/tok_util.c \
	$(top_srcdir)/engine/tok_encode.c $(top_srcdir)/engine/tok_decode.c $(top_srcdir)/engine/chat.c \
	$(top_srcdir)/kernels/err.c
fuzz-tok: $(FUZZ_TOK_SRCS)
	$(FUZZ_CC) $(FUZZ_FLAGS) -DHY_LIBFUZZER -std=c11 -D_GNU_SOURCE -I$(top_srcdir) -I$(top_builddir) \
	  $(JSONC_CFLAGS) $(FUZZ_TOK_SRCS) $(JSONC_LIBS) -o tests/fuzz-tok-libfuzzer
CLEANFILES += tests/fuzz-tok-libfuzzer
.PHONY: fuzz-tok

# hymba-run's text features (tools/textio.c) on the real tokenizer and a tiny random model.
check_PROGRAMS += tests/test-textio
TESTS += tests/test-textio
tests_test_textio_SOURCES = tests/test-textio.c tools/textio.c tools/textio.h
tests_test_textio_CPPFLAGS = $(AM_CPPFLAGS) $(JSONC_CFLAGS)
tests_test_textio_LDADD = $(HYMBA_TEST_LIBS)
EXTRA_DIST += bench/tok-bench-js.mjs
