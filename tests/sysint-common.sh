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

# A scratch directory under the build tree's tmp (never the source tree), removed on exit.
sysint_tmp=$(mktemp -d "${TMPDIR:-/tmp}/hymba-sysint.XXXXXX") || exit 1
trap 'rm -rf "$sysint_tmp"' EXIT

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
