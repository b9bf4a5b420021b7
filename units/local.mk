# units: systemd units, D-Bus activation files and bus policy, sysusers.d/tmpfiles.d entries, the
# example hymbad.conf and the bash completion of hymbactl, each installed where the distribution
# expects it (directories from pkg-config of systemd, dbus-1 and bash-completion; see configure.ac).

systemdsystemunitdir = $(SYSTEMD_SYSTEMUNITDIR)
systemduserunitdir = $(SYSTEMD_USERUNITDIR)
sysusersdir = $(SYSUSERSDIR)
tmpfilesdir = $(TMPFILESDIR)
dbussystemservicedir = $(DBUS_SYSTEM_BUS_SERVICES_DIR)
dbussessionservicedir = $(DBUS_SESSION_BUS_SERVICES_DIR)
dbuspolicydir = $(datadir)/dbus-1/system.d
hymbaexampledir = $(docdir)
bashcompletiondir = $(BASH_COMPLETION_DIR)

# Files whose program path is filled in at build time; the user unit and the two activation files
# live in subfolders so that each installs under its conventional name.
UNITS_GENERATED = \
	units/hymbad.service \
	units/user/hymbad.service \
	units/system-services/org.hymba.Assistant1.service \
	units/session-services/org.hymba.Assistant1.service
nodist_systemdsystemunit_DATA = units/hymbad.service
nodist_systemduserunit_DATA = units/user/hymbad.service
nodist_dbussystemservice_DATA = units/system-services/org.hymba.Assistant1.service
nodist_dbussessionservice_DATA = units/session-services/org.hymba.Assistant1.service
dist_dbuspolicy_DATA = units/org.hymba.Assistant1.conf
dist_sysusers_DATA = units/sysusers.d/hymba.conf
dist_tmpfiles_DATA = units/tmpfiles.d/hymba.conf
dist_hymbaexample_DATA = units/hymbad.conf.example
dist_bashcompletion_DATA = completion/hymbactl.bash

CLEANFILES += $(UNITS_GENERATED)
EXTRA_DIST += $(UNITS_GENERATED:=.in)

units_edit = $(SED) -e 's|@sbindir[@]|$(sbindir)|g'
units_generate = $(AM_V_GEN)$(MKDIR_P) $(@D) && rm -f $@ $@.tmp && \
	$(units_edit) $(srcdir)/$@.in >$@.tmp && chmod a-w $@.tmp && mv $@.tmp $@

units/hymbad.service: $(srcdir)/units/hymbad.service.in Makefile
	$(units_generate)
units/user/hymbad.service: $(srcdir)/units/user/hymbad.service.in Makefile
	$(units_generate)
units/system-services/org.hymba.Assistant1.service: $(srcdir)/units/system-services/org.hymba.Assistant1.service.in Makefile
	$(units_generate)
units/session-services/org.hymba.Assistant1.service: $(srcdir)/units/session-services/org.hymba.Assistant1.service.in Makefile
	$(units_generate)

# distcheck installs under a scratch prefix: send the directories that pkg-config answers with
# absolute paths (/lib/systemd/system, /usr/share/dbus-1/...) below that prefix as well.
AM_DISTCHECK_CONFIGURE_FLAGS = \
	SYSTEMD_SYSTEMUNITDIR='$${prefix}/lib/systemd/system' \
	SYSTEMD_USERUNITDIR='$${prefix}/lib/systemd/user' \
	SYSUSERSDIR='$${prefix}/lib/sysusers.d' \
	TMPFILESDIR='$${prefix}/lib/tmpfiles.d' \
	DBUS_SYSTEM_BUS_SERVICES_DIR='$${datadir}/dbus-1/system-services' \
	DBUS_SESSION_BUS_SERVICES_DIR='$${datadir}/dbus-1/services' \
	BASH_COMPLETION_DIR='$${datadir}/bash-completion/completions'
