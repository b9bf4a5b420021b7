#!/bin/sh
# test-activation.sh: the session bus activation file starts hymbad on the first call.  A private
# session bus reads the generated org.hymba.Assistant1.service (its Exec= pointed at this build,
# with a test model; SystemdService= dropped, as there is no systemd user manager here), and
# hymbactl status, sent to a name nobody owns yet, must be answered by the started daemon.
. "$top_srcdir/tests/sysint-common.sh"
daemon_usable || skip "dbus-daemon or the daemon build missing"
act="$top_builddir/units/session-services/org.hymba.Assistant1.service"
[ -f "$act" ] || { fail "$act was not generated"; finish test-activation; }

"$top_builddir/tools/hymba-mkmodel" --quiet "$sysint_tmp/model" || fail "hymba-mkmodel failed"
mkdir -p "$sysint_tmp/services"
sed -e "s|^Exec=$HYMBA_SBINDIR/hymbad |Exec=$top_builddir/daemon/hymbad --model $sysint_tmp/model --backend cpu --threads 1 --state-dir $sysint_tmp/state |" \
    -e '/^SystemdService=/d' "$act" >"$sysint_tmp/services/org.hymba.Assistant1.service"
grep -q "^Exec=$top_builddir/daemon/hymbad .*--user$" "$sysint_tmp/services/org.hymba.Assistant1.service" ||
    fail "the activation file's Exec= is not '$HYMBA_SBINDIR/hymbad --user': $(grep ^Exec= "$act")"
cat >"$sysint_tmp/bus.conf" <<CONF
<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-BUS Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>unix:path=$sysint_tmp/bus</listen>
  <auth>EXTERNAL</auth>
  <servicedir>$sysint_tmp/services</servicedir>
  <policy context="default">
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
  </policy>
</busconfig>
CONF
bus="unix:path=$sysint_tmp/bus"
dbus-daemon --config-file="$sysint_tmp/bus.conf" --nofork --nopidfile >"$sysint_tmp/bus.log" 2>&1 &
sysint_pids="$sysint_pids $!"
wait_for_socket "$sysint_tmp/bus" || { fail "dbus-daemon did not start: $(cat "$sysint_tmp/bus.log")"; finish test-activation; }

"$top_builddir/client/hymbactl" --bus-address "$bus" status >"$sysint_tmp/status.out" 2>&1 ||
    fail "hymbactl status did not start hymbad through activation: $(cat "$sysint_tmp/status.out" "$sysint_tmp/bus.log")"
grep -q '^Backend: *cpu' "$sysint_tmp/status.out" || fail "unexpected status: $(cat "$sysint_tmp/status.out")"
# The activated daemon is dbus-daemon's child: stop it by the pid the bus reports.
pid=$(busctl --address="$bus" call org.freedesktop.DBus /org/freedesktop/DBus org.freedesktop.DBus \
      GetConnectionUnixProcessID s org.hymba.Assistant1 2>/dev/null | sed -n 's/^u //p')
if [ -n "$pid" ]; then
    kill "$pid"
    i=0
    while kill -0 "$pid" 2>/dev/null && [ $i -lt 200 ]; do sleep 0.05; i=$((i + 1)); done
    kill -0 "$pid" 2>/dev/null && { fail "the activated hymbad did not stop on SIGTERM"; kill -9 "$pid"; }
else
    fail "the bus names no process for org.hymba.Assistant1"
fi

finish test-activation
