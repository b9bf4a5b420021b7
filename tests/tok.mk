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
