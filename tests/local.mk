# Shared test helpers; each area's tests are in tests/<area>.mk.
noinst_LIBRARIES += tests/libhytest.a
tests_libhytest_a_SOURCES = tests/testutil.h tests/testutil.c
HYMBA_TEST_LIBS = tests/libhytest.a $(HYMBA_ENGINE_LIBS)
