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
