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

# engine-cpu: golden agreement, decode/prefill invariants, state API.
check_PROGRAMS += tests/test-golden
TESTS += tests/test-golden
tests_test_golden_LDADD = $(HYMBA_TEST_LIBS)
