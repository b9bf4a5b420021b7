# daemon: hymbad, the D-Bus service (sd-bus + sd-event front, scheduler thread over the engine).
sbin_PROGRAMS += daemon/hymbad
daemon_hymbad_SOURCES = \
	daemon/hymbad.h daemon/hymbad.c \
	daemon/bus.c \
	daemon/conf.h daemon/conf.c \
	daemon/log.h daemon/log.c \
	daemon/persist.h daemon/persist.c \
	daemon/store.h daemon/store.c \
	daemon/sched.h daemon/sched.c \
	daemon/session.h daemon/session.c \
	daemon/wire.h daemon/wire.c
daemon_hymbad_CPPFLAGS = $(AM_CPPFLAGS) $(SYSTEMD_CFLAGS) $(PROTOBUFC_CFLAGS)
daemon_hymbad_LDADD = $(HYMBA_PROTO_LIBS) $(HYMBA_ENGINE_LIBS) $(SYSTEMD_LIBS)
# The generated header must exist before any daemon file is compiled.
$(daemon_hymbad_OBJECTS): proto/hymba.pb-c.h

# The D-Bus interface descriptions (introspection XML) for tools and bindings.
dbusinterfacesdir = $(datadir)/dbus-1/interfaces
dist_dbusinterfaces_DATA = \
	daemon/org.hymba.Assistant1.Manager.xml \
	daemon/org.hymba.Assistant1.Session.xml

# The documented example of /etc/hymba/hymbad.conf.
EXTRA_DIST += units/hymbad.conf.example
