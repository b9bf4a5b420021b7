# sysint tests: units, bus policy, man pages, install layout, the demo.
# Shell tests: each sources tests/sysint-common.sh and learns the configured directories from here.
AM_TESTS_ENVIRONMENT += \
	HYMBA_SBINDIR='$(sbindir)'; export HYMBA_SBINDIR; \
	HYMBA_PROGRAMS='$(bin_PROGRAMS) $(sbin_PROGRAMS)'; export HYMBA_PROGRAMS; \
	HYMBA_BINDIR='$(bindir)'; export HYMBA_BINDIR; \
	HYMBA_DATADIR='$(datadir)'; export HYMBA_DATADIR; \
	HYMBA_DOCDIR='$(docdir)'; export HYMBA_DOCDIR; \
	HYMBA_MANDIR='$(mandir)'; export HYMBA_MANDIR; \
	HYMBA_SYSTEMD_SYSTEMUNITDIR='$(SYSTEMD_SYSTEMUNITDIR)'; export HYMBA_SYSTEMD_SYSTEMUNITDIR; \
	HYMBA_SYSTEMD_USERUNITDIR='$(SYSTEMD_USERUNITDIR)'; export HYMBA_SYSTEMD_USERUNITDIR; \
	HYMBA_SYSUSERSDIR='$(SYSUSERSDIR)'; export HYMBA_SYSUSERSDIR; \
	HYMBA_TMPFILESDIR='$(TMPFILESDIR)'; export HYMBA_TMPFILESDIR; \
	HYMBA_DBUS_SYSTEM_BUS_SERVICES_DIR='$(DBUS_SYSTEM_BUS_SERVICES_DIR)'; export HYMBA_DBUS_SYSTEM_BUS_SERVICES_DIR; \
	HYMBA_DBUS_SESSION_BUS_SERVICES_DIR='$(DBUS_SESSION_BUS_SERVICES_DIR)'; export HYMBA_DBUS_SESSION_BUS_SERVICES_DIR; \
	HYMBA_BASH_COMPLETION_DIR='$(BASH_COMPLETION_DIR)'; export HYMBA_BASH_COMPLETION_DIR;

SYSINT_TESTS = \
	tests/test-units.sh \
	tests/test-policy.sh \
	tests/test-manpages.sh \
	tests/test-install.sh \
	tests/test-completion.sh \
	tests/test-demo.sh
TESTS += $(SYSINT_TESTS)
EXTRA_DIST += $(SYSINT_TESTS)
EXTRA_DIST += tests/sysint-common.sh tools/demo.sh

# Takes a bus name and answers every call: the service side for test-policy.sh.
check_PROGRAMS += tests/sysint-bus-peer
tests_sysint_bus_peer_SOURCES = tests/sysint-bus-peer.c
tests_sysint_bus_peer_CFLAGS = $(AM_CFLAGS) $(SYSTEMD_CFLAGS)
tests_sysint_bus_peer_LDADD = $(SYSTEMD_LIBS)
