#!/usr/bin/env bash
# Build out of tree and run every test (make check); prints one "N passed, N failed" line.
#   tools/run-tests.sh                 normal build (CUDA compiled when found; GPU tests skip without a GPU)
#   tools/run-tests.sh --sanitizers    ASan + UBSan build, CPU backend only
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
build="$top/build"
conf=()
if [ "${1:-}" = "--sanitizers" ]; then
    build="$top/build-asan"
    conf=(--enable-sanitizers --without-cuda)
fi
[ -x "$top/configure" ] || "$top/autogen.sh" >/dev/null 2>&1
mkdir -p "$build"
cd "$build"
[ -f Makefile ] || "$top/configure" -q "${conf[@]}"
jobs=$(nproc 2>/dev/null || echo 2)
rc=0
make -j"$jobs" check || rc=$?
pass=0 fail=0 skip=0
for t in $(find . -name '*.trs'); do
    case "$(sed -n 's/^:test-result: //p' "$t" | head -1)" in
        PASS|XFAIL) pass=$((pass + 1)) ;;
        SKIP) skip=$((skip + 1)) ;;
        *) fail=$((fail + 1)) ;;
    esac
done
if [ "$rc" -ne 0 ] && [ "$fail" -eq 0 ]; then fail=1; fi
echo "${pass} passed, ${fail} failed, ${skip} skipped"
exit "$rc"
