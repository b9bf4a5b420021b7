#!/usr/bin/env bash
# daemon-integration.sh: a private system-type dbus-daemon + hymbad on a tiny model, driven by hymbactl and test-daemon-client.
#
# Every process started here is stopped on exit (trap), each wait has a
# timeout.  Exit 0 pass, 77 skip, 1 fail.
set -u

builddir=${top_builddir:-$(pwd)}
top_srcdir=${top_srcdir:-$(cd "$(dirname "$0")/.." && pwd)}
. "$top_srcdir/tests/privbus.sh"
HYMBAD=$builddir/daemon/hymbad
CTL=$builddir/client/hymbactl
CLIENT=$builddir/tests/test-daemon-client
MKMODEL=$builddir/tools/hymba-mkmodel

for tool in dbus-daemon timeout; do
    if ! command -v "$tool" >/dev/null; then
        echo "SKIP: $tool is not installed"
        exit 77
    fi
done

tmp=$(mktemp -d "${TMPDIR:-/tmp}/hymba-daemon-test-XXXXXX")
chmod 755 "$tmp"                  # the second UID must reach the bus socket
pids=()
failures=0
hymbad_pid=""

stop_pid() {                      # stop_pid PID: TERM, wait up to 10 s, then KILL
    local p=$1 i
    kill -TERM "$p" 2>/dev/null || return 0
    for i in $(seq 100); do
        kill -0 "$p" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$p" 2>/dev/null
    wait "$p" 2>/dev/null
}

cleanup() {
    local p
    for p in "${pids[@]}"; do
        stop_pid "$p"
    done
    if [ "$failures" -ne 0 ]; then
        for f in "$tmp"/hymbad-*.log; do
            [ -f "$f" ] && { echo "---- $f (last 40 lines)"; tail -40 "$f"; }
        done
    fi
    rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 1' INT TERM

fail() {
    echo "FAIL: $*"
    failures=$((failures + 1))
}

pass() {
    echo "ok: $*"
}

# check DESCRIPTION EXPECTED_RC COMMAND...: run with a timeout, compare the exit status.
check_rc() {
    local what=$1 want=$2 rc
    shift 2
    timeout 120 "$@" >"$tmp/out" 2>"$tmp/err"
    rc=$?
    if [ "$rc" -eq "$want" ]; then
        pass "$what"
    else
        fail "$what: exit $rc, expected $want"
        sed 's/^/    stdout: /' "$tmp/out" | head -20
        sed 's/^/    stderr: /' "$tmp/err" | head -20
    fi
    return 0
}

# expect FILE PATTERN DESCRIPTION: grep -E in FILE.
expect() {
    if grep -Eq -- "$2" "$1"; then
        pass "$3"
    else
        fail "$3: /$2/ not in $(basename "$1")"
        sed 's/^/    /' "$1" | head -20
    fi
}

# ---- the model and the bus --------------------------------------------------

timeout 120 "$MKMODEL" -q --preset tiny --seed 7 "$tmp/model" || { fail "hymba-mkmodel"; exit 1; }

privbus_start "$tmp" || { fail "dbus-daemon did not start"; cat "$tmp/bus.log"; exit 1; }
chmod 0777 "$tmp/bus"

start_hymbad() {                  # start_hymbad NAME [OPTIONS...]
    local name=$1
    shift
    "$HYMBAD" --bus-address "$ADDR" --model "$tmp/model" --backend cpu --threads 1 \
        --state-dir "$tmp/state-$name" --config "$tmp/$name.conf" "$@" >"$tmp/hymbad-$name.log" 2>&1 &
    hymbad_pid=$!
    pids+=("$hymbad_pid")
    if ! wait_for 60 "$CTL" --bus-address "$ADDR" status; then
        fail "hymbad ($name) did not come up"
        exit 1
    fi
}

stop_hymbad() {                   # SIGTERM; a clean exit (status 0) within 20 s
    local rc i
    kill -TERM "$hymbad_pid"
    for i in $(seq 200); do
        kill -0 "$hymbad_pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$hymbad_pid" 2>/dev/null; then
        fail "hymbad did not stop within 20 s of SIGTERM"
        kill -KILL "$hymbad_pid"
    fi
    wait "$hymbad_pid"
    rc=$?
    [ "$rc" -eq 0 ] && pass "hymbad stopped cleanly" || fail "hymbad exit status $rc after SIGTERM"
}

# ---- hymbactl without a daemon ------------------------------------------------

check_rc "hymbactl --version" 0 "$CTL" --version
expect "$tmp/out" "protocol version 1" "--version names the protocol version"
check_rc "hymbactl --help" 0 "$CTL" --help
expect "$tmp/out" "3 daemon unreachable" "--help documents the exit codes"
check_rc "hymbactl ask --help" 0 "$CTL" ask --help
check_rc "unknown command is a usage error" 2 "$CTL" --bus-address "$ADDR" frobnicate
check_rc "ask without a prompt is a usage error" 2 "$CTL" --bus-address "$ADDR" ask
check_rc "no bus: unreachable" 3 "$CTL" --bus-address "unix:path=$tmp/nonexistent" status
expect "$tmp/err" "hymbad" "the unreachable message says how to start hymbad"
check_rc "bus without hymbad: unreachable" 3 "$CTL" --bus-address "$ADDR" status
expect "$tmp/err" "not running" "the message says the daemon is not running"

echo "bogus_key = 1" >"$tmp/bad.conf"
check_rc "hymbad refuses an unknown config key" 2 "$HYMBAD" --config "$tmp/bad.conf" --model "$tmp/model"
expect "$tmp/err" "bad.conf:1: unknown key" "the config error names file, line and key"
check_rc "hymbad --help" 0 "$HYMBAD" --help

# ---- daemon A: default limits -------------------------------------------------

cat >"$tmp/a.conf" <<EOF
# test daemon A
max_new_tokens = 100000
context_length = 8192
EOF
start_hymbad a
pass "hymbad started on a private system-type bus"

# The installed introspection XML describes what the daemon really exports.
if command -v busctl >/dev/null; then
    busctl --address="$ADDR" introspect --xml-interface org.hymba.Assistant1 /org/hymba/Assistant1 >"$tmp/live.xml" 2>&1
    for xml in "$top_srcdir"/daemon/org.hymba.Assistant1.*.xml; do
        for item in $(sed -n 's/.*<\(interface\|method\|signal\|property\) name="\([A-Za-z.0-9]*\)".*/\2/p' "$xml"); do
            grep -q "name=\"$item\"" "$tmp/live.xml" || fail "$(basename "$xml"): $item is not exported by hymbad"
        done
    done
    for item in $(sed -n 's/.*<\(method\|signal\|property\) name="\([A-Za-z]*\)".*/\2/p' "$tmp/live.xml" |
                  grep -v -x -E 'Introspect|Ping|GetMachineId|Get|GetAll|Set|PropertiesChanged'); do
        grep -q "name=\"$item\"" "$top_srcdir"/daemon/org.hymba.Assistant1.*.xml || fail "hymbad exports $item, the XML does not describe it"
    done
    pass "the introspection XML matches the exported interfaces"
    busctl --address="$ADDR" call org.hymba.Assistant1 /org/hymba/Assistant1 org.hymba.Assistant1.Session Cancel t 424242 >"$tmp/out" 2>&1
    expect "$tmp/out" "no such request" "busctl drives the typed Cancel"
    busctl --address="$ADDR" get-property org.hymba.Assistant1 /org/hymba/Assistant1 org.hymba.Assistant1.Manager ProtocolVersion >"$tmp/out" 2>&1
    expect "$tmp/out" "^u 1$" "busctl reads ProtocolVersion"
else
    echo "skip: busctl not installed, introspection not compared"
fi

check_rc "status" 0 "$CTL" --bus-address "$ADDR" status
expect "$tmp/out" "Backend: +cpu" "status names the backend"
check_rc "status --json" 0 "$CTL" --bus-address "$ADDR" --json status
expect "$tmp/out" '"backend": *"cpu"' "status --json"

check_rc "ask creates a session" 0 "$CTL" --bus-address "$ADDR" ask --max-tokens 12 --ignore-eos "Hello there"
expect "$tmp/err" "^session [0-9a-f]{32}$" "ask prints the new session id on stderr"
sid=$(sed -n 's/^session \([0-9a-f]*\)$/\1/p' "$tmp/err")
[ -s "$tmp/out" ] && pass "ask printed an answer" || fail "ask printed nothing"
echo "What next?" >"$tmp/prompt"
check_rc "ask --session reads stdin with -" 0 sh -c "'$CTL' --bus-address '$ADDR' --json ask --session $sid --max-tokens 8 --ignore-eos - <'$tmp/prompt'"
expect "$tmp/out" '"completion_tokens": *8' "the answer has 8 tokens"
expect "$tmp/out" '"result": *"done"' "--json ask reports done"
check_rc "sessions" 0 "$CTL" --bus-address "$ADDR" sessions
expect "$tmp/out" "$sid" "sessions lists the session"
check_rc "show" 0 "$CTL" --bus-address "$ADDR" show "$sid"
expect "$tmp/out" "What next\\?" "show has the second message"
check_rc "show --json" 0 "$CTL" --bus-address "$ADDR" --json show "$sid"
expect "$tmp/out" '"role": *"assistant"' "show --json has the history"
check_rc "show of an unknown session fails" 4 "$CTL" --bus-address "$ADDR" show 0123456789abcdef0123456789abcdef
expect "$tmp/err" "NoSuchSession" "the error is NoSuchSession"
check_rc "rm" 0 "$CTL" --bus-address "$ADDR" rm "$sid"
check_rc "show after rm fails" 4 "$CTL" --bus-address "$ADDR" show "$sid"

# Ctrl-C during ask cancels the answer (exit 4, "cancelled").
"$CTL" --bus-address "$ADDR" ask --ignore-eos --max-tokens 100000 "Go on forever" >"$tmp/int.out" 2>"$tmp/int.err" &
ask_pid=$!
pids+=("$ask_pid")
if wait_for 30 test -s "$tmp/int.out"; then
    kill -INT "$ask_pid"
    wait_for 10 sh -c "! kill -0 $ask_pid"
    wait "$ask_pid"
    rc=$?
    [ "$rc" -eq 4 ] && pass "Ctrl-C ends ask with exit 4" || fail "ask after Ctrl-C: exit $rc"
    expect "$tmp/int.err" "cancelled: CANCEL_REASON_REQUESTED" "ask reports the cancel"
else
    fail "ask streamed nothing within 30 s"
fi

# chat: Ctrl-C cancels the answer, not the program; EOF leaves.
mkfifo "$tmp/chat.in"
"$CTL" --bus-address "$ADDR" chat --ignore-eos --max-tokens 100000 <"$tmp/chat.in" >"$tmp/chat.out" 2>"$tmp/chat.err" &
chat_pid=$!
pids+=("$chat_pid")
exec 3>"$tmp/chat.in"
echo "first question" >&3
if wait_for 30 test -s "$tmp/chat.out"; then
    kill -INT "$chat_pid"
    wait_for 10 grep -q "cancelled" "$tmp/chat.err" && pass "chat: Ctrl-C cancelled the answer" || fail "chat: no cancel"
    kill -0 "$chat_pid" 2>/dev/null && pass "chat survives Ctrl-C" || fail "chat exited on Ctrl-C"
else
    fail "chat streamed nothing within 30 s"
fi
exec 3>&-
wait_for 10 sh -c "! kill -0 $chat_pid"
wait "$chat_pid"
rc=$?
[ "$rc" -eq 0 ] && pass "chat leaves on EOF with exit 0" || fail "chat after EOF: exit $rc"
chat_sid=$(sed -n 's/^session \([0-9a-f]*\).*/\1/p' "$tmp/chat.err")
check_rc "the chat session keeps the cancelled turn" 0 "$CTL" --bus-address "$ADDR" show "$chat_sid"
expect "$tmp/out" "first question" "history has the chat message"
check_rc "chat resumes a session" 0 sh -c "echo 'second question' | '$CTL' --bus-address '$ADDR' chat --max-tokens 4 $chat_sid"
expect "$tmp/err" "resuming: 2 messages" "chat says what it resumes"
check_rc "chat of an unknown session fails at once" 4 sh -c "echo hi | '$CTL' --bus-address '$ADDR' chat 0123456789abcdef0123456789abcdef"

for scenario in concurrent prefill cancel disconnect badpayload; do
    check_rc "C client: $scenario" 0 "$CLIENT" "$ADDR" "$scenario"
    sed 's/^/    /' "$tmp/out" | tail -3
done

if [ "$(id -u)" -ne 0 ]; then
    echo "skip: second-UID isolation needs root (run as uid $(id -u))"
elif ! command -v setpriv >/dev/null; then
    echo "skip: second-UID isolation needs setpriv (util-linux)"
elif ! setpriv --reuid=65534 --regid=65534 --clear-groups test -x "$CLIENT"; then
    echo "skip: uid 65534 cannot run $CLIENT (build tree not readable by others)"
else
    check_rc "C client: isolation (second UID via setpriv)" 0 "$CLIENT" "$ADDR" isolation
    sed 's/^/    /' "$tmp/out" "$tmp/err" | tail -5
fi

kill -0 "$hymbad_pid" 2>/dev/null && pass "hymbad is still up after every scenario" || fail "hymbad died"
expect "$tmp/hymbad-a.log" "left the bus, cancelling" "the daemon logged the disconnect cancel"

# Stopping the daemon mid-answer: the client gets its final signal (cancelled: shutdown).
"$CTL" --bus-address "$ADDR" ask --ignore-eos --max-tokens 100000 "Until the end" >"$tmp/shut.out" 2>"$tmp/shut.err" &
shut_pid=$!
pids+=("$shut_pid")
wait_for 30 test -s "$tmp/shut.out" || fail "no answer streaming before the shutdown"
stop_hymbad
wait_for 10 sh -c "! kill -0 $shut_pid"
wait "$shut_pid"
rc=$?
[ "$rc" -eq 4 ] && pass "a client mid-answer at shutdown exits 4" || fail "client at shutdown: exit $rc"
expect "$tmp/shut.err" "cancelled: CANCEL_REASON_SHUTDOWN" "the answer ends cancelled (shutdown)"

# ---- daemon B: tight limits -----------------------------------------------------

cat >"$tmp/b.conf" <<EOF
max_sessions_per_user = 3
max_queued_per_user = 2
max_message_bytes = 2048
context_length = 256
EOF
start_hymbad b
check_rc "C client: limits" 0 "$CLIENT" "$ADDR" limits
sed 's/^/    /' "$tmp/out" | tail -3
kill -0 "$hymbad_pid" 2>/dev/null && pass "hymbad is still up after the limits" || fail "hymbad died"
stop_hymbad

if [ "$failures" -ne 0 ]; then
    echo "$failures check(s) failed"
    exit 1
fi
echo "all daemon integration checks passed"
exit 0
