#!/bin/sh
# test-install.sh: "make install DESTDIR=..." puts every file where the distribution expects it:
# units, D-Bus files and sysusers/tmpfiles entries in the directories pkg-config of systemd, dbus-1
# and bash-completion names (unless configure was told otherwise, as distcheck does), the bus policy
# in $(datadir)/dbus-1/system.d, programs and manual pages; "make uninstall" removes them all again.
. "$top_srcdir/tests/sysint-common.sh"

dest="$sysint_tmp/dest"
make -s -C "$top_builddir" install DESTDIR="$dest" >"$sysint_tmp/install.log" 2>&1 ||
    { cat "$sysint_tmp/install.log" >&2; fail "make install DESTDIR=$dest failed"; finish test-install; }

# configured VAR MODULE PCVAR: the directory configure chose for VAR agrees with pkg-config, unless
# it was set on the configure command line.
configured() {
    eval "value=\${HYMBA_$1}"
    if pkg-config --exists "$2" 2>/dev/null; then
        want=$(pkg-config --variable="$3" "$2")
        if [ "$value" != "$want" ]; then
            if (cd "$top_builddir" && ./config.status --config) | grep -q "$1="; then
                echo "note: $1=$value set on the configure line (pkg-config $2 says $want)"
            else
                fail "$1 is $value but pkg-config --variable=$3 $2 says $want"
            fi
        fi
    else
        echo "note: no pkg-config file for $2: $1 is the fallback $value"
    fi
}
configured SYSTEMD_SYSTEMUNITDIR systemd systemdsystemunitdir
configured SYSTEMD_USERUNITDIR systemd systemduserunitdir
configured SYSUSERSDIR systemd sysusersdir
configured TMPFILESDIR systemd tmpfilesdir
configured DBUS_SYSTEM_BUS_SERVICES_DIR dbus-1 system_bus_services_dir
configured DBUS_SESSION_BUS_SERVICES_DIR dbus-1 session_bus_services_dir
configured BASH_COMPLETION_DIR bash-completion completionsdir

# installed PATH: PATH exists under DESTDIR.
installed() {
    [ -f "$dest$1" ] || fail "not installed: $1"
}
installed "$HYMBA_SYSTEMD_SYSTEMUNITDIR/hymbad.service"
installed "$HYMBA_SYSTEMD_USERUNITDIR/hymbad.service"
installed "$HYMBA_SYSUSERSDIR/hymba.conf"
installed "$HYMBA_TMPFILESDIR/hymba.conf"
installed "$HYMBA_DBUS_SYSTEM_BUS_SERVICES_DIR/org.hymba.Assistant1.service"
installed "$HYMBA_DBUS_SESSION_BUS_SERVICES_DIR/org.hymba.Assistant1.service"
installed "$HYMBA_DATADIR/dbus-1/system.d/org.hymba.Assistant1.conf"
installed "$HYMBA_BASH_COMPLETION_DIR/hymbactl.bash"
installed "$HYMBA_DOCDIR/hymbad.conf.example"
installed "$HYMBA_SBINDIR/hymbad"
for prog in hymbactl hymba-run hymba-bench hymba-mkmodel; do installed "$HYMBA_BINDIR/$prog"; done
installed "$HYMBA_MANDIR/man8/hymbad.8"
installed "$HYMBA_MANDIR/man5/hymbad.conf.5"
for page in hymbactl hymba-run hymba-bench hymba-mkmodel; do installed "$HYMBA_MANDIR/man1/$page.1"; done

# The system unit and the system activation file differ from their session twins, and every
# installed ExecStart=/Exec= names the installed daemon.
grep -q '^User=hymba' "$dest$HYMBA_SYSTEMD_SYSTEMUNITDIR/hymbad.service" 2>/dev/null ||
    fail "the system unit directory holds the user unit"
grep -q -- '--user' "$dest$HYMBA_SYSTEMD_USERUNITDIR/hymbad.service" 2>/dev/null ||
    fail "the user unit directory holds the system unit"
grep -q '^User=hymba' "$dest$HYMBA_DBUS_SYSTEM_BUS_SERVICES_DIR/org.hymba.Assistant1.service" 2>/dev/null ||
    fail "the system bus services directory holds the session activation file"
for f in "$HYMBA_SYSTEMD_SYSTEMUNITDIR/hymbad.service" "$HYMBA_SYSTEMD_USERUNITDIR/hymbad.service" \
         "$HYMBA_DBUS_SYSTEM_BUS_SERVICES_DIR/org.hymba.Assistant1.service" \
         "$HYMBA_DBUS_SESSION_BUS_SERVICES_DIR/org.hymba.Assistant1.service"; do
    exe=$(sed -n 's/^Exec\(Start\)\{0,1\}=\([^ ]*\).*/\2/p' "$dest$f" 2>/dev/null)
    [ "$exe" = "$HYMBA_SBINDIR/hymbad" ] || fail "$f runs '$exe', not $HYMBA_SBINDIR/hymbad"
done
# The installed completion loads in bash and registers itself for hymbactl.
if command -v bash >/dev/null; then
    bash -c ". '$dest$HYMBA_BASH_COMPLETION_DIR/hymbactl.bash' && complete -p hymbactl" >/dev/null 2>&1 ||
        fail "the installed completion does not register for hymbactl"
fi
echo "installed files:"
(cd "$dest" && find . -type f | sed 's/^\.//' | sort)

make -s -C "$top_builddir" uninstall DESTDIR="$dest" >"$sysint_tmp/uninstall.log" 2>&1 || fail "make uninstall failed"
left=$(cd "$dest" && find . -type f | sed 's/^\.//')
[ -z "$left" ] || fail "make uninstall left files behind: $left"

finish test-install
