# Engine core tests: config, safetensors, bad checkpoints, golden agreement, invariants, sampler.

# engine-load: config, safetensors, checkpoint loading, mkmodel, sampler.
check_PROGRAMS += tests/test-config
TESTS += tests/test-config
tests_test_config_CPPFLAGS = $(AM_CPPFLAGS) $(JSONC_CFLAGS)
tests_test_config_LDADD = $(HYMBA_TEST_LIBS)
check_PROGRAMS += tests/test-safetensors
TESTS += tests/test-safetensors
tests_test_safetensors_LDADD = $(HYMBA_TEST_LIBS)
check_PROGRAMS += tests/test-model-load
TESTS += tests/test-model-load
tests_test_model_load_CPPFLAGS = $(AM_CPPFLAGS) $(JSONC_CFLAGS)
tests_test_model_load_LDADD = $(HYMBA_TEST_LIBS)
check_PROGRAMS += tests/test-sampler
TESTS += tests/test-sampler
tests_test_sampler_LDADD = $(HYMBA_TEST_LIBS)
check_PROGRAMS += tests/test-mkmodel
TESTS += tests/test-mkmodel
tests_test_mkmodel_CPPFLAGS = $(AM_CPPFLAGS) $(JSONC_CFLAGS)
tests_test_mkmodel_LDADD = $(HYMBA_TEST_LIBS)
check_PROGRAMS += tests/test-run
TESTS += tests/test-run
tests_test_run_LDADD = $(HYMBA_TEST_LIBS)


# engine-cpu: golden agreement, decode/prefill invariants, state API.
check_PROGRAMS += tests/test-golden
TESTS += tests/test-golden
tests_test_golden_LDADD = $(HYMBA_TEST_LIBS)
check_PROGRAMS += tests/test-invariants
TESTS += tests/test-invariants
tests_test_invariants_SOURCES = tests/test-invariants.c tests/randmodel.c tests/randmodel.h
tests_test_invariants_LDADD = $(HYMBA_TEST_LIBS)
check_PROGRAMS += tests/test-state
TESTS += tests/test-state
tests_test_state_SOURCES = tests/test-state.c tests/randmodel.c tests/randmodel.h
tests_test_state_LDADD = $(HYMBA_TEST_LIBS)
