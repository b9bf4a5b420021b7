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
	tests/test-activation.sh \
	tests/test-manpages.sh \
	tests/test-install.sh \
	tests/test-completion.sh \
	tests/test-client-tty.sh \
	tests/test-demo.sh
TESTS += $(SYSINT_TESTS)
EXTRA_DIST += $(SYSINT_TESTS)
EXTRA_DIST += tests/sysint-common.sh tools/demo.sh

# Takes a bus name and answers every call: the service side for test-policy.sh.
check_PROGRAMS += tests/sysint-bus-peer
tests_sysint_bus_peer_SOURCES = tests/sysint-bus-peer.c
tests_sysint_bus_peer_CFLAGS = $(AM_CFLAGS) $(SYSTEMD_CFLAGS)
tests_sysint_bus_peer_LDADD = $(SYSTEMD_LIBS)

# Plays systemd's NOTIFY_SOCKET: proves hymbad sends READY=1 (hymbad.service is Type=notify).
check_PROGRAMS += tests/sysint-notify-wait
tests_sysint_notify_wait_SOURCES = tests/sysint-notify-wait.c

# Tracked files no other fragment distributes: the README's commands and the helpers they run.
EXTRA_DIST += autogen.sh .ci/deps tools/run-tests.sh tools/daemon-bench.sh tools/gpu-carry.sh tools/gpu-check.sh

# make dist refuses a tarball that lacks a tracked file (when the source tree is a git checkout),
# so EXTRA_DIST stays complete as the tree grows.  Git's own files and placeholders are exempt.
SYSINT_DIST_EXEMPT = .gitignore .gitattributes m4/.keep
dist-hook:
	@if git -C "$(srcdir)" rev-parse --is-inside-work-tree >/dev/null 2>&1; then \
	  missing=""; \
	  for f in `git -C "$(srcdir)" ls-files`; do \
	    case " $(SYSINT_DIST_EXEMPT) " in *" $$f "*) continue ;; esac; \
	    test -e "$(distdir)/$$f" || missing="$$missing $$f"; \
	  done; \
	  if test -n "$$missing"; then \
	    echo "dist: tracked files missing from the tarball (add them to EXTRA_DIST):$$missing" >&2; \
	    exit 1; \
	  fi; \
	fi
