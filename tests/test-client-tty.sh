#!/bin/sh
# test-client-tty.sh: hymbactl colors its output and shows a progress line only when stdout is a
# terminal (run under script(1) for a pseudo-terminal); pipes, --json and NO_COLOR get plain text.
# --version names the protocol version.
. "$top_srcdir/tests/sysint-common.sh"
hymbactl="$top_builddir/client/hymbactl"
[ -x "$hymbactl" ] || { fail "$hymbactl not built"; finish test-client-tty; }

"$hymbactl" --version | grep -qE 'protocol version [0-9]+' || fail "--version names no protocol version: $("$hymbactl" --version)"
daemon_usable || skip "dbus-daemon or the daemon build missing"
command -v script >/dev/null || skip "script (util-linux) not installed: no pseudo-terminal"
daemon_start || finish test-client-tty

esc=$(printf '\033')
# at_tty COMMAND...: run under a pseudo-terminal, output (with the terminal's \r\n) on stdout.
at_tty() {
    cmd=""
    for a in "$@"; do cmd="$cmd '$a'"; done
    TERM=xterm script -qec "$cmd" /dev/null </dev/null
}

"$hymbactl" --bus-address "$bus" ask --max-tokens 4 "hello" >"$sysint_tmp/pipe.out" 2>"$sysint_tmp/pipe.err" ||
    fail "ask into a pipe failed: $(cat "$sysint_tmp/pipe.err")"
id=$(sed -n 's/^session \([0-9a-f]*\).*/\1/p' "$sysint_tmp/pipe.err")
[ -n "$id" ] || fail "no session id from ask"
grep -q "$esc" "$sysint_tmp/pipe.out" && fail "escape sequences in ask's output into a pipe"
"$hymbactl" --bus-address "$bus" show "$id" | grep -q "$esc" && fail "escape sequences in show's output into a pipe"

at_tty "$hymbactl" --bus-address "$bus" ask --session "$id" --max-tokens 4 "again" >"$sysint_tmp/tty.out" 2>&1
grep -q "$esc" "$sysint_tmp/tty.out" || fail "no colors at a terminal: $(cat -v "$sysint_tmp/tty.out")"
grep -q "$esc\[2K" "$sysint_tmp/tty.out" || fail "no progress line at a terminal: $(cat -v "$sysint_tmp/tty.out")"
grep -q 'new tokens' "$sysint_tmp/tty.out" || fail "no summary line at a terminal: $(cat -v "$sysint_tmp/tty.out")"
at_tty "$hymbactl" --bus-address "$bus" show "$id" >"$sysint_tmp/tty-show.out" 2>&1
grep -q "$esc\[1;32m\[user\]" "$sysint_tmp/tty-show.out" || fail "show does not color roles at a terminal: $(cat -v "$sysint_tmp/tty-show.out")"

at_tty "$hymbactl" --bus-address "$bus" --json ask --session "$id" --max-tokens 2 "json" >"$sysint_tmp/tty-json.out" 2>&1
grep -q "$esc" "$sysint_tmp/tty-json.out" && fail "escape sequences in --json output at a terminal: $(cat -v "$sysint_tmp/tty-json.out")"
NO_COLOR=1 at_tty "$hymbactl" --bus-address "$bus" show "$id" >"$sysint_tmp/tty-nocolor.out" 2>&1
grep -q "$esc" "$sysint_tmp/tty-nocolor.out" && fail "escape sequences with NO_COLOR set: $(cat -v "$sysint_tmp/tty-nocolor.out")"

# Model text with control characters (a random model writes them) reaches a pipe as it is, but a
# terminal sees U+FFFD instead: an ESC from the model must not drive the terminal.
ctrl=$(printf '[\001-\010\013\014\016-\032\034-\037\177]')
for seed in 1 2 3 4 5 6 7 8; do
    "$hymbactl" --bus-address "$bus" ask --seed $seed --max-tokens 48 "Which service manager does Debian use?" \
        >"$sysint_tmp/raw.out" 2>/dev/null
    LC_ALL=C grep -q "$ctrl" "$sysint_tmp/raw.out" && break
done
if LC_ALL=C grep -q "$ctrl" "$sysint_tmp/raw.out"; then
    at_tty "$hymbactl" --bus-address "$bus" ask --seed $seed --max-tokens 48 "Which service manager does Debian use?" \
        >"$sysint_tmp/tty-raw.out" 2>&1
    LC_ALL=C grep -q "$ctrl" "$sysint_tmp/tty-raw.out" &&
        fail "control characters of the model reach the terminal: $(cat -v "$sysint_tmp/tty-raw.out")"
    grep -q "$(printf '\357\277\275')" "$sysint_tmp/tty-raw.out" || fail "no U+FFFD for the model's control characters"
else
    echo "note: the test model wrote no control character: terminal filtering not exercised"
fi

finish test-client-tty
