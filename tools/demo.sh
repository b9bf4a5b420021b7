#!/usr/bin/env bash
# demo.sh: build hymba, write a small random-weight model, serve it with hymbad on a private D-Bus,
# chat with hymbactl, restart the daemon and resume the same conversation from its checkpoint,
# showing that nothing was recomputed.  Every process it starts is stopped before it exits.
#   tools/demo.sh                 build in build/ (as tools/run-tests.sh does), then run the demo
#   HYMBA_BUILD=DIR tools/demo.sh use the programs already built in DIR
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
build=${HYMBA_BUILD:-$top/build}

bold=""; dim=""; off=""
if [ -t 1 ]; then bold=$'\e[1m'; dim=$'\e[2m'; off=$'\e[0m'; fi
say() { printf '\n%s== %s%s\n' "$bold" "$*" "$off"; }
run() { printf '%s$ %s%s\n' "$dim" "$*" "$off"; "$@"; }
die() { printf 'demo: %s\n' "$*" >&2; exit 1; }

# ---- build (only the four programs the demo runs) ----
if [ -z "${HYMBA_BUILD:-}" ]; then
    say "Building hymba in $build (log: $build/demo-build.log)"
    mkdir -p "$build"
    if ! { { [ -x "$top/configure" ] || "$top/autogen.sh"; } &&
           (cd "$build" && { [ -f Makefile ] || "$top/configure" -q; } &&
            make -j"$(nproc 2>/dev/null || echo 2)" daemon/hymbad client/hymbactl tools/hymba-mkmodel)
         } >"$build/demo-build.log" 2>&1; then
        tail -n 40 "$build/demo-build.log" >&2
        die "the build failed (whole log: $build/demo-build.log)"
    fi
fi
hymbad=$build/daemon/hymbad
hymbactl=$build/client/hymbactl
mkmodel=$build/tools/hymba-mkmodel
for p in "$hymbad" "$hymbactl" "$mkmodel"; do [ -x "$p" ] || die "$p is not built"; done
command -v dbus-daemon >/dev/null || die "dbus-daemon is not installed (apt-get install dbus-daemon)"

# ---- scratch space and cleanup: every process started here is killed and waited for ----
tmp=$(mktemp -d "${TMPDIR:-/tmp}/hymba-demo.XXXXXX")
bus_pid=""; daemon_pid=""
cleanup() {
    local rc=$?
    [ -n "$daemon_pid" ] && kill "$daemon_pid" 2>/dev/null && wait "$daemon_pid" 2>/dev/null
    [ -n "$bus_pid" ] && kill "$bus_pid" 2>/dev/null && wait "$bus_pid" 2>/dev/null
    rm -rf "$tmp"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---- the model ----
say "Writing a small random-weight model (hymba-mkmodel; no download)"
run "$mkmodel" --quiet --preset tiny --seed 7 "$tmp/model"
printf '%sIts weights are random: the model answers in gibberish.  Its shape (attention + Mamba heads,\n' "$dim"
printf 'meta tokens, sliding windows, shared K/V) and the code paths are those of nvidia/Hymba-1.5B.%s\n' "$off"

# ---- a private bus and the daemon ----
say "Starting a private D-Bus and hymbad on it"
bus="unix:path=$tmp/bus"
dbus-daemon --session --address="$bus" --nofork --nopidfile >"$tmp/bus.log" 2>&1 &
bus_pid=$!
for _ in $(seq 100); do [ -S "$tmp/bus" ] && break; sleep 0.05; done
[ -S "$tmp/bus" ] || die "dbus-daemon did not start: $(cat "$tmp/bus.log")"
ctl() { "$hymbactl" --bus-address "$bus" "$@"; }

start_daemon() {
    printf '%s$ hymbad --bus-address %s --model %s --backend cpu --state-dir %s%s\n' \
        "$dim" "$bus" "$tmp/model" "$tmp/state" "$off"
    "$hymbad" --bus-address "$bus" --model "$tmp/model" --backend cpu --threads 2 \
        --state-dir "$tmp/state" >>"$tmp/hymbad.log" 2>&1 &
    daemon_pid=$!
    for _ in $(seq 300); do
        ctl status >/dev/null 2>&1 && return 0
        kill -0 "$daemon_pid" 2>/dev/null || break
        sleep 0.1
    done
    cat "$tmp/hymbad.log" >&2
    die "hymbad did not come up"
}
stop_daemon() {
    printf '%s$ kill -TERM %s   # hymbad%s\n' "$dim" "$daemon_pid" "$off"
    kill -TERM "$daemon_pid"
    local rc=0
    wait "$daemon_pid" || rc=$?
    daemon_pid=""
    [ "$rc" -eq 0 ] || { cat "$tmp/hymbad.log" >&2; die "hymbad exited with status $rc on SIGTERM"; }
}
start_daemon
run "$hymbactl" --bus-address "$bus" status

# json_field NAME FILE: a number field of hymbactl --json output.
json_field() { sed -n "s/^ *\"$1\": *\([0-9]*\).*/\1/p" "$2" | head -n 1; }

# ---- a conversation ----
say "A chat: a question, then a follow-up in the same session"
run "$hymbactl" --bus-address "$bus" ask --max-tokens 24 --seed 1 "Which service manager does Debian use?" \
    2>"$tmp/ask1.err"
echo
cat "$tmp/ask1.err"
session=$(sed -n 's/^session \([0-9a-f]*\).*/\1/p' "$tmp/ask1.err")
[ -n "$session" ] || die "hymbactl printed no session id"
run "$hymbactl" --bus-address "$bus" --json ask --session "$session" --max-tokens 24 "And which init system?" \
    >"$tmp/ask2.json"
cat "$tmp/ask2.json"
run "$hymbactl" --bus-address "$bus" sessions
ctl --json sessions >"$tmp/sessions1.json"
held=$(json_field tokens "$tmp/sessions1.json")
[ -n "$held" ] || die "no token count for the session"

# ---- restart ----
say "Restarting hymbad: the session's state is on disk"
stop_daemon
run find "$tmp/state" -type f -printf "%p  %s bytes\n"
start_daemon
run "$hymbactl" --bus-address "$bus" sessions
ctl --json sessions >"$tmp/sessions2.json"
held2=$(json_field tokens "$tmp/sessions2.json")
[ "$held2" = "$held" ] || die "after the restart the session holds ${held2:-no} tokens, not $held"

say "Resuming the same conversation after the restart"
run "$hymbactl" --bus-address "$bus" --json ask --session "$session" --max-tokens 24 "Thanks. And the logger?" \
    >"$tmp/ask3.json"
cat "$tmp/ask3.json"
prompt3=$(json_field prompt_tokens "$tmp/ask3.json")
ctx3=$(json_field context_tokens "$tmp/ask3.json")
gen3=$(json_field completion_tokens "$tmp/ask3.json")
[ -n "$prompt3" ] && [ -n "$ctx3" ] && [ -n "$gen3" ] || die "the answer carries no token counts"
# The history was restored, not recomputed: this turn prefilled only its own message, and the
# conversation grew from exactly the restored token count.
[ $((held + prompt3 + gen3)) -eq "$ctx3" ] ||
    die "context $ctx3 != restored $held + prefilled $prompt3 + generated $gen3"
[ "$prompt3" -lt "$held" ] || die "the turn after the restart prefilled $prompt3 tokens: the history was recomputed"
printf '\n%sNothing was recomputed:%s the restored session held %s tokens; the turn after the restart\n' \
    "$bold" "$off" "$held"
printf 'prefilled only its own %s prompt tokens and generated %s (%s + %s + %s = %s in context).\n' \
    "$prompt3" "$gen3" "$held" "$prompt3" "$gen3" "$ctx3"
run "$hymbactl" --bus-address "$bus" show "$session"

say "Stopping"
stop_daemon
printf 'hymbad log:\n'
sed 's/^/  /' "$tmp/hymbad.log"
echo "demo: done"
