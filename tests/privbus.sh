# privbus.sh: a private, permissive system-type dbus-daemon for the daemon tests and tools/daemon-bench.sh (sourced).
#
#   privbus_start DIR   writes DIR/bus.conf, starts dbus-daemon on DIR/bus (log: DIR/bus.log),
#                       appends its pid to the caller's pids array and sets ADDR; returns 1 when
#                       the socket does not appear within 10 s.
#   wait_for SECONDS COMMAND...   until the command succeeds (0) or the time is up (1).

wait_for() {
    local secs=$1 i
    shift
    for i in $(seq $((secs * 10))); do
        "$@" >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    return 1
}

privbus_start() {
    local dir=$1
    cat >"$dir/bus.conf" <<EOF
<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path=$dir/bus</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/> <allow own="*"/>
    <allow send_type="method_call"/> <allow send_type="signal"/>
    <allow send_requested_reply="true"/> <allow send_type="error"/>
    <allow receive_type="method_call"/> <allow receive_type="signal"/>
    <allow receive_requested_reply="true"/> <allow receive_type="error"/>
  </policy>
</busconfig>
EOF
    dbus-daemon --config-file="$dir/bus.conf" --nofork --nopidfile >"$dir/bus.log" 2>&1 &
    pids+=("$!")
    ADDR="unix:path=$dir/bus"
    wait_for 10 test -S "$dir/bus"
}
