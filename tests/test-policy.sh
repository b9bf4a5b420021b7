#!/bin/sh
# test-policy.sh: units/org.hymba.Assistant1.conf on a private bus with the system bus's default
# rules: only the owner user may own org.hymba.Assistant1; everyone else may call the service's
# interfaces and the read side of Properties, and nothing else.  "hymba" is played by "nobody",
# so the test needs root to run one client as each user.
. "$top_srcdir/tests/sysint-common.sh"

peer="$top_builddir/tests/sysint-bus-peer"
command -v dbus-daemon >/dev/null || skip "dbus-daemon not installed"
command -v busctl >/dev/null || skip "busctl not installed"
command -v setpriv >/dev/null || skip "setpriv (util-linux) not installed"
[ "$(id -u)" -eq 0 ] || skip "needs root to run bus clients as two different users"
nobody_uid=$(id -u nobody 2>/dev/null) || skip "no user nobody to stand in for hymba"
nobody_gid=$(id -g nobody)
as_owner() { setpriv --reuid="$nobody_uid" --regid="$nobody_gid" --clear-groups "$@"; }

chmod 755 "$sysint_tmp"
sed 's/user="hymba"/user="nobody"/' "$top_srcdir/units/org.hymba.Assistant1.conf" >"$sysint_tmp/policy.conf"
grep -q 'user="nobody"' "$sysint_tmp/policy.conf" || fail "policy names no user hymba"
# The defaults of Debian's /usr/share/dbus-1/system.conf, which the policy file is written against.
cat >"$sysint_tmp/bus.conf" <<CONF
<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-BUS Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path=$sysint_tmp/bus</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <deny own="*"/>
    <deny send_type="method_call"/>
    <allow send_type="signal"/>
    <allow send_requested_reply="true" send_type="method_return"/>
    <allow send_requested_reply="true" send_type="error"/>
    <allow receive_type="method_call"/>
    <allow receive_type="method_return"/>
    <allow receive_type="error"/>
    <allow receive_type="signal"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Introspectable"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Properties"/>
  </policy>
  <include>$sysint_tmp/policy.conf</include>
</busconfig>
CONF

dbus-daemon --config-file="$sysint_tmp/bus.conf" --nofork --nopidfile >"$sysint_tmp/bus.log" 2>&1 &
sysint_pids="$sysint_pids $!"
addr="unix:path=$sysint_tmp/bus"
wait_for_socket "$sysint_tmp/bus" || { cat "$sysint_tmp/bus.log" >&2; fail "dbus-daemon did not start with the policy"; finish test-policy; }
if grep -v 'fd limit' "$sysint_tmp/bus.log" | grep -qi 'unknown\|error\|invalid'; then fail "dbus-daemon complains: $(cat "$sysint_tmp/bus.log")"; fi

# Anyone but the owner user is refused the name.
# (A peer that wrongly gets the name would serve forever: the timeout ends it.)
timeout 10 "$peer" "$addr" org.hymba.Assistant1 >"$sysint_tmp/root-own.out" 2>&1
rc=$?
[ $rc -eq 3 ] || fail "root could take org.hymba.Assistant1 (exit $rc: $(cat "$sysint_tmp/root-own.out"))"

# The owner user takes it and answers calls.
as_owner "$peer" "$addr" org.hymba.Assistant1 >"$sysint_tmp/owner.out" 2>&1 &
sysint_pids="$sysint_pids $!"
i=0
while ! grep -qs . "$sysint_tmp/owner.out" && [ $i -lt 100 ]; do sleep 0.05; i=$((i + 1)); done
grep -qx owner "$sysint_tmp/owner.out" || { fail "the owner user could not take the name: $(cat "$sysint_tmp/owner.out")"; finish test-policy; }

# call EXPECT INTERFACE MEMBER [SIGNATURE ARGS...]: a call from root (an ordinary caller here).
call() {
    expect=$1 iface=$2 member=$3
    shift 3
    out=$(busctl --address="$addr" call org.hymba.Assistant1 /org/hymba/Assistant1 "$iface" "$member" "$@" 2>&1)
    case "$expect:$out" in
        allow:*pong*) ;;
        deny:*ccess*denied*|deny:*rejected*|deny:*ermission*) ;;
        *) fail "$iface.$member: expected $expect, got: $out" ;;
    esac
}
call allow org.hymba.Assistant1.Manager CreateSession
call allow org.hymba.Assistant1.Session Send
call allow org.freedesktop.DBus.Introspectable Introspect
call allow org.freedesktop.DBus.Peer Ping
call allow org.freedesktop.DBus.Properties Get ss org.hymba.Assistant1.Manager Version
call allow org.freedesktop.DBus.Properties GetAll s org.hymba.Assistant1.Manager
call deny org.freedesktop.DBus.Properties Set ssv org.hymba.Assistant1.Manager Version s x
call deny org.hymba.Assistant1.Debug Anything
call deny org.hymba.Assistant2.Manager CreateSession

finish test-policy
