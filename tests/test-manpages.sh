#!/bin/sh
# test-manpages.sh: every installed program has a manual page; every option its --help prints (and,
# for hymbactl, every option of each COMMAND --help) appears in the page, and every option the page's
# OPTIONS/COMMANDS sections document is one --help knows.  hymbad.conf(5) documents exactly the keys
# of the example units/hymbad.conf, and hymbad accepts them all.  The pages format without warnings.
. "$top_srcdir/tests/sysint-common.sh"

# options: the option names (-x, --long-name) in text on stdin, one per line, sorted.
options() {
    grep -oE "(^|[][[:space:]|,('\"])--?[[:alpha:]][[:alnum:]-]*" | sed 's/^[^-]*//' | sort -u
}

# man_text PAGE: the page's text with roff escapes for dashes and fonts removed.
man_text() {
    sed -e 's/\\-/-/g' -e 's/\\f[BIRP]//g' -e 's/\\&//g' "$1"
}

# man_sections PAGE: the OPTIONS and COMMANDS sections of the page, as text.
man_sections() {
    man_text "$1" | awk '/^\.SH/ { on = ($2 == "OPTIONS" || $2 == "COMMANDS") ; next } on'
}

# help_text PROGRAM: --help, plus COMMAND --help for each command listed under "Commands:".
help_text() {
    "$1" --help || return 1
    help_commands "$1" | while read -r cmd; do
        "$1" "$cmd" --help || echo "FAIL: $1 $cmd --help failed" >&2
    done
}

[ -n "${HYMBA_PROGRAMS:-}" ] || skip "HYMBA_PROGRAMS unset (run from make check)"
if command -v groff >/dev/null; then
    for page in "$top_srcdir"/man/*.[1-8]; do
        warn=$(groff -man -ww -z "$page" 2>&1) || fail "$page: groff failed"
        [ -z "$warn" ] || fail "$page: $warn"
    done
else
    echo "note: groff not installed: pages not formatted"
fi

checked=0
pages_checked=""
for prog in $HYMBA_PROGRAMS; do
    name=$(basename "$prog")
    page=""
    for sec in 1 8; do
        [ -f "$top_srcdir/man/$name.$sec" ] && page="$top_srcdir/man/$name.$sec"
    done
    [ -n "$page" ] || { fail "$name is installed but has no manual page man/$name.1 or .8"; continue; }
    [ -x "$top_builddir/$prog" ] || { fail "$prog was not built"; continue; }
    help_text "$top_builddir/$prog" >"$sysint_tmp/help" 2>"$sysint_tmp/help.err" ||
        { fail "$name --help failed: $(cat "$sysint_tmp/help.err")"; continue; }
    [ -s "$sysint_tmp/help.err" ] && fail "$(cat "$sysint_tmp/help.err")"
    options <"$sysint_tmp/help" >"$sysint_tmp/help.opts"
    man_text "$page" | options >"$sysint_tmp/page.opts"
    man_sections "$page" | options >"$sysint_tmp/doc.opts"
    [ -s "$sysint_tmp/help.opts" ] || fail "$name --help lists no option"
    for opt in $(comm -23 "$sysint_tmp/help.opts" "$sysint_tmp/page.opts"); do
        fail "$name: $opt is in --help but not in $(basename "$page")"
    done
    for opt in $(comm -13 "$sysint_tmp/help.opts" "$sysint_tmp/doc.opts"); do
        fail "$name: $(basename "$page") documents $opt, which --help does not know"
    done
    # Each command of the "Commands:" list heads an item of the page's COMMANDS section.
    help_commands "$top_builddir/$prog" | while read -r cmd; do
        man_text "$page" | awk '/^\.SH/ { on = ($2 == "COMMANDS"); next } on' |
            grep -qE "^\.B[IR]* \"?$cmd( |\"|$)" || echo "FAIL: $name: command $cmd is not in the COMMANDS section of $(basename "$page")"
    done >"$sysint_tmp/cmds"
    if [ -s "$sysint_tmp/cmds" ]; then fail "$(cat "$sysint_tmp/cmds")"; fi
    pages_checked="$pages_checked $(basename "$page")"
    checked=$((checked + 1))
done
echo "checked $checked program(s) against their pages"
# No page for a program that is not installed.
for page in "$top_srcdir"/man/*.[18]; do
    case " $pages_checked " in
        *" $(basename "$page") "*) ;;
        *) fail "$(basename "$page") documents no installed program" ;;
    esac
done

# hymbad.conf(5) and the example file name the same keys.
man_text "$top_srcdir/man/hymbad.conf.5" | awk '/^\.SH/ { on = ($2 == "KEYS"); next } on && /^\.BI / { print $2 }' |
    sort -u >"$sysint_tmp/keys.page"
sed -n 's/^#\{0,1\}\([a-z_]*\) = .*/\1/p' "$top_srcdir/units/hymbad.conf.example" | sort -u >"$sysint_tmp/keys.example"
[ -s "$sysint_tmp/keys.page" ] || fail "hymbad.conf.5 documents no key"
for k in $(comm -3 "$sysint_tmp/keys.page" "$sysint_tmp/keys.example"); do
    fail "config key $k is in only one of man/hymbad.conf.5 and units/hymbad.conf.example"
done
# hymbad reads the example with every key set: config errors exit 2, the missing model then exits 1.
# (The example's model line is commented out like the rest; --model names a missing directory.)
hymbad="$top_builddir/daemon/hymbad"
if [ -x "$hymbad" ]; then
    sed 's/^#\([a-z_]* = \)/\1/' "$top_srcdir/units/hymbad.conf.example" >"$sysint_tmp/all-keys.conf"
    "$hymbad" --config "$sysint_tmp/all-keys.conf" --model "$sysint_tmp/no-model" \
        --state-dir "$sysint_tmp/state" --bus-address "unix:path=$sysint_tmp/no-bus" >"$sysint_tmp/hymbad.out" 2>&1
    rc=$?
    [ $rc -eq 1 ] || fail "hymbad with every key of units/hymbad.conf.example: exit $rc, expected 1 (no model): $(cat "$sysint_tmp/hymbad.out")"
fi

finish test-manpages
