#!/bin/sh
# test-completion.sh: completion/hymbactl.bash offers hymbactl's commands, its global options, each
# command's options, file names for import, and the caller's session ids from a running daemon.
. "$top_srcdir/tests/sysint-common.sh"
command -v bash >/dev/null || skip "bash not installed"
hymbactl="$top_builddir/client/hymbactl"
[ -x "$hymbactl" ] || { fail "$hymbactl not built"; finish test-completion; }

# complete WORDS...: what the completion offers for the last word (space-separated, sorted).
complete_words() {
    bash -c '. "$1/completion/hymbactl.bash"; shift
             COMP_WORDS=("$@"); COMP_CWORD=$(( $# - 1 )); COMPREPLY=()
             _hymbactl; printf "%s\n" "${COMPREPLY[@]}" | sort | tr "\n" " "' \
        complete-test "$top_srcdir" "$@"
}
# expect WANT WORDS...: every word of WANT is offered.
expect() {
    want=$1
    shift
    got=$(complete_words "$@")
    for w in $want; do
        case " $got " in *" $w "*) ;; *) fail "hymbactl ${*#"$hymbactl"}: '$w' not offered (got: $got)" ;; esac
    done
}
# expect_not WORD WORDS...: WORD is not offered.
expect_not() {
    word=$1
    shift
    case " $(complete_words "$@") " in *" $word "*) fail "hymbactl ${*#"$hymbactl"}: '$word' offered" ;; esac
}

expect "chat ask sessions show rm status" "$hymbactl" ""
for cmd in $(help_commands "$hymbactl"); do
    expect "$cmd" "$hymbactl" ""
done
expect "--user --system --bus-address --json --version --help" "$hymbactl" "--"
expect_not "--session" "$hymbactl" "--"
expect "--session --max-tokens --ignore-eos" "$hymbactl" ask "--"
expect "ask" "$hymbactl" --bus-address unix:path=/nonexistent a
[ -z "$(complete_words "$hymbactl" ask --max-tokens "" | tr -d " ")" ] || fail "a value of --max-tokens was completed"
# import FILE: file names.
touch "$sysint_tmp/chat.hyck"
expect "$sysint_tmp/chat.hyck" "$hymbactl" import "$sysint_tmp/ch"
# show ID with no daemon on the bus: nothing, and no error text leaks into the terminal.
out=$(complete_words "$hymbactl" --bus-address "unix:path=$sysint_tmp/no-bus" show "" 2>&1)
[ -z "$(echo "$out" | tr -d ' ')" ] || fail "show with no daemon offered: $out"

# Session ids from a live daemon on a private bus.
if daemon_usable; then
    if daemon_start; then
        "$hymbactl" --bus-address "$bus" ask --max-tokens 2 "hello" >/dev/null 2>"$sysint_tmp/ask.err" ||
            fail "ask failed: $(cat "$sysint_tmp/ask.err" "$sysint_tmp/hymbad.log")"
        id=$(sed -n 's/^session \([0-9a-f]*\).*/\1/p' "$sysint_tmp/ask.err")
        [ -n "$id" ] || fail "no session id from ask"
        expect "$id" "$hymbactl" --bus-address "$bus" show ""
        expect "$id" "$hymbactl" --bus-address "$bus" ask --session ""
        expect "$id" "$hymbactl" --bus-address "$bus" rm ""
        expect_not "$id" "$hymbactl" --bus-address "$bus" import ""
    fi
else
    echo "note: no dbus-daemon or daemon build: session ids not checked"
fi

finish test-completion
