# proto: hymba.proto compiled by protoc-c at build time into the build tree (proto/hymba.pb-c.[ch]).
noinst_LIBRARIES += proto/libhyproto.a
nodist_proto_libhyproto_a_SOURCES = proto/hymba.pb-c.c proto/hymba.pb-c.h
proto_libhyproto_a_CPPFLAGS = $(AM_CPPFLAGS) $(PROTOBUFC_CFLAGS)
BUILT_SOURCES += proto/hymba.pb-c.c proto/hymba.pb-c.h
CLEANFILES += proto/hymba.pb-c.c proto/hymba.pb-c.h
EXTRA_DIST += proto/hymba.proto

# One protoc-c run writes both files; the header rides on the .c rule.
proto/hymba.pb-c.h: proto/hymba.pb-c.c
	@test -f $@ || { rm -f $<; $(MAKE) $(AM_MAKEFLAGS) $<; }
proto/hymba.pb-c.c: $(srcdir)/proto/hymba.proto
	$(AM_V_GEN)$(MKDIR_P) proto && $(PROTOC_C) --c_out=proto -I$(srcdir)/proto $(srcdir)/proto/hymba.proto

# What a program speaking the wire format links.
HYMBA_PROTO_LIBS = proto/libhyproto.a $(PROTOBUFC_LIBS)
