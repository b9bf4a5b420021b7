# daemon tests: config and wire units, then the integration test (private bus + hymbad + hymbactl + C client).
check_PROGRAMS += tests/test-daemon-units
TESTS += tests/test-daemon-units
tests_test_daemon_units_SOURCES = tests/test-daemon-units.c daemon/conf.c daemon/wire.c
tests_test_daemon_units_CPPFLAGS = $(AM_CPPFLAGS) $(SYSTEMD_CFLAGS) $(PROTOBUFC_CFLAGS)
tests_test_daemon_units_LDADD = tests/libhytest.a $(HYMBA_PROTO_LIBS) $(SYSTEMD_LIBS)
$(tests_test_daemon_units_OBJECTS): proto/hymba.pb-c.h

# Driven by the integration script, not run on its own.
check_PROGRAMS += tests/test-daemon-client
tests_test_daemon_client_SOURCES = tests/test-daemon-client.c
tests_test_daemon_client_CPPFLAGS = $(AM_CPPFLAGS) $(SYSTEMD_CFLAGS) $(PROTOBUFC_CFLAGS)
tests_test_daemon_client_LDADD = tests/libhytest.a $(HYMBA_PROTO_LIBS) $(SYSTEMD_LIBS)
$(tests_test_daemon_client_OBJECTS): proto/hymba.pb-c.h

TESTS += tests/daemon-integration.sh
EXTRA_DIST += tests/daemon-integration.sh tests/privbus.sh

check_PROGRAMS += tests/fuzz-daemon-wire
TESTS += tests/fuzz-daemon-wire
tests_fuzz_daemon_wire_SOURCES = tests/fuzz-daemon-wire.c daemon/wire.c
tests_fuzz_daemon_wire_CPPFLAGS = $(AM_CPPFLAGS) $(SYSTEMD_CFLAGS) $(PROTOBUFC_CFLAGS)
tests_fuzz_daemon_wire_LDADD = tests/libhytest.a $(HYMBA_PROTO_LIBS) $(SYSTEMD_LIBS)
$(tests_fuzz_daemon_wire_OBJECTS): proto/hymba.pb-c.h
