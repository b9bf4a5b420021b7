# sysint tests: units, bus policy, man pages, install layout, the demo.
# Shell tests: each sources tests/sysint-common.sh and learns the configured directories from here.
AM_TESTS_ENVIRONMENT += \
	HYMBA_SBINDIR='$(sbindir)'; export HYMBA_SBINDIR; \
	HYMBA_PROGRAMS='$(bin_PROGRAMS) $(sbin_PROGRAMS)'; export HYMBA_PROGRAMS;

SYSINT_TESTS = \
	tests/test-units.sh \
	tests/test-policy.sh \
	tests/test-manpages.sh
TESTS += $(SYSINT_TESTS)
dist_check_SCRIPTS = $(SYSINT_TESTS)
EXTRA_DIST += tests/sysint-common.sh

# Takes a bus name and answers every call: the service side for test-policy.sh.
check_PROGRAMS += tests/sysint-bus-peer
tests_sysint_bus_peer_SOURCES = tests/sysint-bus-peer.c
tests_sysint_bus_peer_CFLAGS = $(AM_CFLAGS) $(SYSTEMD_CFLAGS)
tests_sysint_bus_peer_LDADD = $(SYSTEMD_LIBS)
