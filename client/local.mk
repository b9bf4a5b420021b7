# client: hymbactl, the command-line client (speaks D-Bus + the generated proto only, never the engine).
bin_PROGRAMS += client/hymbactl
client_hymbactl_SOURCES = client/ctl.h client/ctl.c client/hymbactl.c client/term.h client/term.c
client_hymbactl_CPPFLAGS = $(AM_CPPFLAGS) $(SYSTEMD_CFLAGS) $(PROTOBUFC_CFLAGS) $(JSONC_CFLAGS)
client_hymbactl_LDADD = $(HYMBA_PROTO_LIBS) $(SYSTEMD_LIBS) $(JSONC_LIBS)
$(client_hymbactl_OBJECTS): proto/hymba.pb-c.h
