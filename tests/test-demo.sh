#!/bin/sh
# test-demo.sh: tools/demo.sh (the README's first command) runs against this build: the chat works,
# the resumed turn after a daemon restart recomputes nothing, and no process it started survives it.
. "$top_srcdir/tests/sysint-common.sh"
command -v bash >/dev/null || skip "bash not installed"
command -v dbus-daemon >/dev/null || skip "dbus-daemon not installed"

# The demo's scratch directory lands under ours, so its processes can be told from anyone else's.
TMPDIR=$sysint_tmp HYMBA_BUILD=$top_builddir bash "$top_srcdir/tools/demo.sh" </dev/null >"$sysint_tmp/demo.out" 2>&1
rc=$?
cat "$sysint_tmp/demo.out"
[ $rc -eq 0 ] || fail "tools/demo.sh exited with status $rc"
grep -q '^Nothing was recomputed' "$sysint_tmp/demo.out" || fail "the demo did not show the resumed turn"
grep -q '^demo: done' "$sysint_tmp/demo.out" || fail "the demo did not finish"
sleep 0.2
left=$(ps -eo pid=,args= | grep -F "$sysint_tmp/hymba-demo." | grep -v grep)
[ -z "$left" ] || fail "processes left running after the demo: $left"
[ -z "$(ls -A "$sysint_tmp" | grep '^hymba-demo\.')" ] || fail "the demo left its scratch directory behind"

finish test-demo
