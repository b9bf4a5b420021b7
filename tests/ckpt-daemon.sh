#!/usr/bin/env bash
# ckpt-daemon.sh: persistent sessions end to end: SIGKILL between turns, restart, exact resume, regenerate, rewind, export/import, damaged files.
#
# A private system-type dbus-daemon + hymbad on a tiny random model (window 16).
# Every process started here is stopped on exit.  Exit 0 pass, 77 skip, 1 fail.
set -u

builddir=${top_builddir:-$(pwd)}
top_srcdir=${top_srcdir:-$(cd "$(dirname "$0")/.." && pwd)}
. "$top_srcdir/tests/privbus.sh"
HYMBAD=$builddir/daemon/hymbad
CTL=$builddir/client/hymbactl
MKMODEL=$builddir/tools/hymba-mkmodel

for tool in dbus-daemon timeout python3; do
    if ! command -v "$tool" >/dev/null; then
        echo "SKIP: $tool is not installed"
        exit 77
    fi
done

tmp=$(mktemp -d "${TMPDIR:-/tmp}/hymba-ckpt-test-XXXXXX")
chmod 755 "$tmp"
pids=()
failures=0
hymbad_pid=""

cleanup() {
    local p
    for p in "${pids[@]}"; do
        kill -KILL "$p" 2>/dev/null
        wait "$p" 2>/dev/null
    done
    if [ "$failures" -ne 0 ]; then
        for f in "$tmp"/hymbad-*.log; do
            [ -f "$f" ] && { echo "---- $f (last 30 lines)"; tail -30 "$f"; }
        done
    fi
    rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 1' INT TERM

fail() { echo "FAIL: $*"; failures=$((failures + 1)); }
pass() { echo "ok: $*"; }


ctl() { timeout 120 "$CTL" --bus-address "$ADDR" "$@"; }

# json FILE KEY: a top-level value of a JSON document.
json() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$1" "$2"; }

timeout 120 "$MKMODEL" -q --preset tiny --seed 11 "$tmp/model" || { fail "hymba-mkmodel"; exit 1; }

privbus_start "$tmp" || { fail "dbus-daemon did not start"; exit 1; }
chmod 0777 "$tmp/bus"
STATE=$tmp/state
echo "context_length = 4096" >"$tmp/hymbad.conf"
echo "turn_snapshots = 3" >>"$tmp/hymbad.conf"
run=0

start_hymbad() {
    run=$((run + 1))
    "$HYMBAD" --bus-address "$ADDR" --model "$tmp/model" --backend cpu --threads 1 --debug \
        --state-dir "$STATE" --config "$tmp/hymbad.conf" >"$tmp/hymbad-$run.log" 2>&1 &
    hymbad_pid=$!
    pids+=("$hymbad_pid")
    wait_for 60 "$CTL" --bus-address "$ADDR" status || { fail "hymbad (run $run) did not come up"; exit 1; }
}

kill_hymbad() {                   # kill_hymbad SIGNAL
    kill -"$1" "$hymbad_pid"
    wait_for 20 sh -c "! kill -0 $hymbad_pid" || { kill -KILL "$hymbad_pid"; fail "hymbad ignored SIG$1"; }
    wait "$hymbad_pid" 2>/dev/null
}

# ask SESSION PROMPT OUT: one greedy-free (sampled, seeded) turn of 10 tokens, --json.
ask() { ctl --json ask --session "$1" --max-tokens 10 --ignore-eos "$2" >"$3" 2>"$3.err"; }

new_session() {                   # a sampled session with a fixed seed: the RNG state must survive too
    ctl ask --temperature 0.9 --seed 4242 --max-tokens 10 --ignore-eos "$1" >"$2" 2>"$2.err" &&
        sed -n 's/^session \([0-9a-f]*\)$/\1/p' "$2.err"
}

P1="Tell me about the sea and its many moods"
P2="And what about mountains in the early winter"
P3="Compare both, please, in one short paragraph"
P4="One more thing: which one would you visit first"

start_hymbad
grep -q "session store" "$tmp/hymbad-$run.log" && pass "hymbad opened the session store" || fail "no store line"

# ---- the uninterrupted reference: session R, four turns ----------------------------
R=$(new_session "$P1" "$tmp/r1")
[ -n "$R" ] && pass "reference session $R" || { fail "no reference session"; exit 1; }
ask "$R" "$P2" "$tmp/r2" && ask "$R" "$P3" "$tmp/r3" && ask "$R" "$P4" "$tmp/r4" || fail "reference turns"

# ---- session K: two turns, SIGKILL, restart, two more turns ----------------------------
K=$(new_session "$P1" "$tmp/k1")
ask "$K" "$P2" "$tmp/k2" || fail "K turn 2"
test -f "$STATE/$(id -u)/$K.hyck" && pass "checkpoint written after the turn" || fail "no $K.hyck"
test "$(stat -c %a "$STATE/$(id -u)")" = 700 && pass "state directory is 0700" || fail "state dir mode"
kill_hymbad KILL
pass "hymbad killed with SIGKILL between turns"
start_hymbad
ctl sessions >"$tmp/sessions" && grep -q "$K" "$tmp/sessions" && pass "the session is listed after the restart" ||
    fail "session not listed after restart"
ctl --json show "$K" >"$tmp/show" && grep -q "early winter" "$tmp/show" && pass "history restored from disk" ||
    fail "history lost"
ask "$K" "$P3" "$tmp/k3" && ask "$K" "$P4" "$tmp/k4" || fail "K turns 3-4"
for t in 3 4; do
    if [ "$(json "$tmp/k$t" text)" = "$(json "$tmp/r$t" text)" ]; then
        pass "turn $t after the restart is identical to the uninterrupted run (sampled, RNG restored)"
    else
        fail "turn $t differs after the restart"
        echo "    resumed:       $(json "$tmp/k$t" text | head -c 200)"
        echo "    uninterrupted: $(json "$tmp/r$t" text | head -c 200)"
    fi
    pk=$(json "$tmp/k$t" prompt_tokens); pr=$(json "$tmp/r$t" prompt_tokens)
    [ "$pk" = "$pr" ] && pass "turn $t prefilled only its new $pk tokens (no recomputation of the history)" ||
        fail "turn $t prefilled $pk tokens, the uninterrupted run $pr"
done
ctx=$(json "$tmp/k4" context_tokens)
[ "$ctx" -gt 48 ] && pass "conversation of $ctx tokens, 3x the 16-token window" || fail "conversation too short ($ctx)"
grep -q "restored .* tokens and .* snapshot" "$tmp/hymbad-$run.log" && pass "the state was restored lazily on first use" ||
    fail "no lazy restore in the log"

# ---- regenerate and rewind: no prefill at all ------------------------------------------
ctl --json regenerate --max-tokens 10 --ignore-eos "$K" >"$tmp/regen" 2>"$tmp/regen.err" || fail "regenerate"
[ "$(json "$tmp/regen" prompt_tokens)" = 0 ] && pass "regenerate prefilled nothing" ||
    fail "regenerate prefilled $(json "$tmp/regen" prompt_tokens) tokens"
ctl --json show "$K" >"$tmp/show" && n=$(json "$tmp/show" messages)
[ "$n" = 8 ] && pass "regenerate replaced the last answer (8 messages)" || fail "after regenerate: $n messages"
ctl --json rewind --max-tokens 10 --ignore-eos "$K" 2 >"$tmp/rew" 2>"$tmp/rew.err" || fail "rewind 2"
[ "$(json "$tmp/rew" prompt_tokens)" = 0 ] && pass "rewind 2 prefilled nothing" || fail "rewind prefilled tokens"
ctl --json show "$K" >"$tmp/show" && n=$(json "$tmp/show" messages)
[ "$n" = 6 ] && pass "rewind 2 dropped the later turns (6 messages)" || fail "after rewind: $n messages"
ctl rewind "$K" 0 >"$tmp/rew0" 2>"$tmp/rew0.err"
[ $? -eq 4 ] && grep -q "no snapshot" "$tmp/rew0.err" && pass "rewind beyond the kept snapshots is refused, named" ||
    fail "rewind 0 should be refused (K = 3): $(cat "$tmp/rew0.err")"
ctl rewind "$K" 9 >/dev/null 2>"$tmp/rew9.err"
[ $? -eq 4 ] && pass "rewind to a turn that does not exist is refused" || fail "rewind 9 accepted"

# ---- SIGTERM: saved, resumed, and regenerate works from the saved snapshots -------------
kill_hymbad TERM
start_hymbad
ctl --json regenerate --max-tokens 10 --ignore-eos "$K" >"$tmp/regen2" 2>"$tmp/regen2.err" || fail "regenerate after restart"
[ "$(json "$tmp/regen2" prompt_tokens 2>/dev/null)" = 0 ] && pass "snapshots survive a restart (regenerate prefilled nothing)" ||
    fail "regenerate after restart: $(cat "$tmp/regen2.err")"

# ---- export / import --------------------------------------------------------------------
ctl export "$K" >"$tmp/chat.hyck" 2>"$tmp/export.err" && pass "export: $(cat "$tmp/export.err")" || fail "export"
head -c 5 "$tmp/chat.hyck" | od -c | grep -q "H   Y   C   K" && pass "the export is a checkpoint" || fail "export magic"
I=$(ctl import "$tmp/chat.hyck" 2>"$tmp/import.err")
[ -n "$I" ] && [ "$I" != "$K" ] && pass "import made a new session $I" || fail "import: $(cat "$tmp/import.err")"
ask "$K" "$P4" "$tmp/ek" && ask "$I" "$P4" "$tmp/ei" || fail "turns after export/import"
[ "$(json "$tmp/ek" text)" = "$(json "$tmp/ei" text)" ] && pass "the imported session continues exactly as the original" ||
    fail "imported session diverged"
[ "$(json "$tmp/ei" prompt_tokens)" = "$(json "$tmp/ek" prompt_tokens)" ] && pass "the import was restored, not re-prefilled" ||
    fail "import prefilled $(json "$tmp/ei" prompt_tokens) tokens"
printf 'not a checkpoint at all' >"$tmp/junk.hyck"
ctl import "$tmp/junk.hyck" >/dev/null 2>"$tmp/junk.err"
[ $? -eq 4 ] && grep -q "not a hymba checkpoint" "$tmp/junk.err" && pass "import of junk refused with the reason" ||
    fail "junk import: $(cat "$tmp/junk.err")"
head -c 3000 "$tmp/chat.hyck" >"$tmp/short.hyck"
ctl import "$tmp/short.hyck" >/dev/null 2>"$tmp/short.err"
[ $? -eq 4 ] && grep -q "truncated" "$tmp/short.err" && pass "import of a truncated file refused: truncated" ||
    fail "truncated import: $(cat "$tmp/short.err")"
if [ "$(id -u)" -eq 0 ] && command -v setpriv >/dev/null && setpriv --reuid=65534 --regid=65534 --clear-groups test -x "$CTL"; then
    chmod 644 "$tmp/chat.hyck"
    as_nobody() { timeout 60 setpriv --reuid=65534 --regid=65534 --clear-groups "$CTL" --bus-address "$ADDR" "$@"; }
    as_nobody show "$K" >/dev/null 2>"$tmp/nb.err"
    [ $? -eq 4 ] && grep -q NoSuchSession "$tmp/nb.err" && pass "another UID cannot see the session" || fail "uid 65534 saw $K"
    N=$(as_nobody import "$tmp/chat.hyck" 2>"$tmp/nbi.err")
    [ -n "$N" ] && as_nobody show "$N" >/dev/null && pass "another UID's import is its own session" ||
        fail "uid 65534 import: $(cat "$tmp/nbi.err")"
    ctl show "$N" >/dev/null 2>&1 && fail "uid $(id -u) sees uid 65534's import" || pass "and the exporter cannot see it"
    test -f "$STATE/65534/$N.hyck" && pass "stored under /65534/" || fail "import not stored per UID"
else
    echo "skip: second-UID checks need root and setpriv"
fi

# ---- damaged files: refused with the reason, kept aside, the daemon stays up --------------
D1=$(new_session "$P1" "$tmp/d1")
D2=$(new_session "$P2" "$tmp/d2")
kill_hymbad TERM
f1="$STATE/$(id -u)/$D1.hyck"
f2="$STATE/$(id -u)/$D2.hyck"
size=$(stat -c %s "$f1")
python3 - "$f1" "$((size - 200))" <<'EOF'
import sys
p, off = sys.argv[1], int(sys.argv[2])
b = bytearray(open(p, 'rb').read())
b[off] ^= 0x20
open(p, 'wb').write(b)
EOF
truncate -s 100 "$f2"
start_hymbad
grep -q "session $D2 .*damaged checkpoint: .*truncated" "$tmp/hymbad-$run.log" && pass "a truncated file is reported at start" ||
    fail "no damaged report for $D2"
ctl show "$D2" >/dev/null 2>"$tmp/d2show.err"
[ $? -eq 4 ] && grep -q "SessionDamaged" "$tmp/d2show.err" && grep -q truncated "$tmp/d2show.err" &&
    pass "the truncated session is reported as damaged: $(head -c 160 "$tmp/d2show.err")" || fail "show $D2: $(cat "$tmp/d2show.err")"
ls "$STATE/$(id -u)/" | grep -q "$D2.hyck.damaged-" && pass "the truncated file is kept aside" || fail "truncated file not kept"
ask "$D1" "$P3" "$tmp/d1b"
[ $? -eq 4 ] && grep -q "CRC mismatch in section" "$tmp/d1b" && pass "a bit flip in the state is refused on use: CRC named" ||
    fail "bit-flipped state: $(cat "$tmp/d1b" "$tmp/d1b.err")"
ls "$STATE/$(id -u)/" | grep -q "$D1.hyck.damaged-" && pass "the bit-flipped file is kept aside" || fail "flipped file not kept"
ask "$D1" "$P3" "$tmp/d1c" && pass "the next message rebuilds the state from the history" || fail "no recovery: $(cat "$tmp/d1c.err")"
kill -0 "$hymbad_pid" && pass "hymbad stayed up" || fail "hymbad died"
ctl status >/dev/null || fail "status after damaged files"

# A checkpoint of another model (same shapes, other weights): refused at start by name.
kill_hymbad TERM
rm -rf "$tmp/model"
timeout 120 "$MKMODEL" -q --preset tiny --seed 12 "$tmp/model" || fail "second model"
start_hymbad
grep -q "made for another model" "$tmp/hymbad-$run.log" && pass "checkpoints of another model are refused by name" ||
    fail "no wrong-model refusal"
kill_hymbad TERM

if grep -l "Sanitizer\|runtime error" "$tmp"/hymbad-*.log >/dev/null 2>&1; then
    fail "sanitizer reports in: $(grep -l "Sanitizer\|runtime error" "$tmp"/hymbad-*.log | xargs -n1 basename)"
    grep -h -A12 "Sanitizer\|runtime error" "$tmp"/hymbad-*.log | head -40
else
    pass "no sanitizer report in any hymbad log"
fi

if [ "$failures" -ne 0 ]; then
    echo "$failures check(s) failed"
    exit 1
fi
echo "all persistent-session checks passed"
exit 0
