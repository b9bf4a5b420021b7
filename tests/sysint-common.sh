# sysint-common.sh: helpers sourced by the system-integration test scripts (tests/test-*.sh).
# Exit codes follow the test harness: 0 pass, 77 skip (after "SKIP: reason"), 1 fail.
set -u
: "${top_srcdir:?run me from make check (top_srcdir unset)}"
: "${top_builddir:?run me from make check (top_builddir unset)}"
sysint_failures=0

# fail MESSAGE: record one failed check and go on, so one run lists every problem.
fail() {
    echo "FAIL: $*" >&2
    sysint_failures=$((sysint_failures + 1))
}

skip() {
    echo "SKIP: $*"
    exit 77
}

# finish NAME: the script's exit status.
finish() {
    if [ "$sysint_failures" -ne 0 ]; then
        echo "$1: $sysint_failures check(s) failed" >&2
        exit 1
    fi
    echo "$1: ok"
    exit 0
}

# A scratch directory (never in the source tree) and the processes a test started: on exit every
# one of them is killed and waited for, and the directory removed.
sysint_tmp=$(mktemp -d "${TMPDIR:-/tmp}/hymba-sysint.XXXXXX") || exit 1
sysint_pids=""
sysint_cleanup() {
    for p in $sysint_pids; do kill "$p" 2>/dev/null; done
    for p in $sysint_pids; do wait "$p" 2>/dev/null; done
    rm -rf "$sysint_tmp"
}
trap sysint_cleanup EXIT

# help_commands PROGRAM: the commands its --help lists under "Commands:", one per line.
help_commands() {
    "$1" --help | awk '/^Commands:/ { on = 1; next } on && /^$/ { exit } on && /^  [a-z]/ { print $1 }'
}

# wait_for_socket PATH: up to 5 s for a listening socket to appear.
wait_for_socket() {
    i=0
    while [ ! -S "$1" ] && [ $i -lt 100 ]; do sleep 0.05; i=$((i + 1)); done
    [ -S "$1" ]
}

# daemon_start [ENV=VALUE...]: a tiny random model, a private bus and hymbad on it (the
# assignments go into hymbad's environment); sets $bus and $daemon_pid.  Fails the test and
# returns 1 when the daemon does not answer within 20 s.
daemon_start() {
    bus="unix:path=$sysint_tmp/bus"
    "$top_builddir/tools/hymba-mkmodel" --quiet "$sysint_tmp/model" || { fail "hymba-mkmodel failed"; return 1; }
    dbus-daemon --session --address="$bus" --nofork --nopidfile >"$sysint_tmp/bus.log" 2>&1 &
    sysint_pids="$sysint_pids $!"
    wait_for_socket "$sysint_tmp/bus" || { fail "dbus-daemon did not start: $(cat "$sysint_tmp/bus.log")"; return 1; }
    env "$@" "$top_builddir/daemon/hymbad" --bus-address "$bus" --model "$sysint_tmp/model" --backend cpu \
        --threads 1 --state-dir "$sysint_tmp/state" >"$sysint_tmp/hymbad.log" 2>&1 &
    daemon_pid=$!
    sysint_pids="$sysint_pids $daemon_pid"
    i=0
    until "$top_builddir/client/hymbactl" --bus-address "$bus" status >/dev/null 2>&1; do
        i=$((i + 1))
        if [ $i -gt 400 ] || ! kill -0 "$daemon_pid" 2>/dev/null; then
            fail "hymbad did not come up: $(cat "$sysint_tmp/hymbad.log")"
            return 1
        fi
        sleep 0.05
    done
}

# daemon_usable: the programs daemon_start needs are here.
daemon_usable() {
    command -v dbus-daemon >/dev/null && [ -x "$top_builddir/daemon/hymbad" ] &&
        [ -x "$top_builddir/tools/hymba-mkmodel" ] && [ -x "$top_builddir/client/hymbactl" ]
}

# key_value FILE KEY: every value of "KEY=value" lines in an ini-style FILE, one per line.
key_value() {
    sed -n "s/^$2=//p" "$1"
}

# require_key FILE KEY VALUE: FILE sets KEY to exactly VALUE (one of its values, for list keys).
require_key() {
    if ! key_value "$1" "$2" | grep -qxF -- "$3"; then
        fail "$(basename "$1"): $2=$3 missing (has: $(key_value "$1" "$2" | tr '\n' ' '))"
    fi
}

# forbid_key FILE KEY WHY: FILE must not set KEY.
forbid_key() {
    if [ -n "$(key_value "$1" "$2")" ]; then
        fail "$(basename "$1"): $2= must not be set: $3"
    fi
}
