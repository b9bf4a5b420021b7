#!/usr/bin/env bash
# daemon-bench.sh: hymba-load against hymbad on a private bus with a tiny mkmodel model (the figures of the daemon section of bench/RESULTS.md).
#   tools/daemon-bench.sh BUILDDIR [hymba-load options...]   (default: -c 1, 4, 8 clients x 20 requests x 64 tokens, 3 rounds)
set -euo pipefail
. "$(dirname "$0")/../tests/privbus.sh"
build=$(cd "${1:?usage: daemon-bench.sh BUILDDIR [hymba-load options]}" && pwd)
shift
threads=${HYMBA_BENCH_THREADS:-1}
tmp=$(mktemp -d "${TMPDIR:-/tmp}/hymba-bench-XXXXXX")
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
    rm -rf "$tmp"
}
trap cleanup EXIT

"$build/tools/hymba-mkmodel" -q --preset tiny --seed 7 "$tmp/model"
printf 'max_sessions_per_user = 256\nmax_queued_per_user = 256\nmax_new_tokens = 100000\n' >"$tmp/bench.conf"
privbus_start "$tmp" || { echo "daemon-bench: dbus-daemon did not start" >&2; exit 1; }
addr=$ADDR
"$build/daemon/hymbad" --bus-address "$addr" --config "$tmp/bench.conf" --model "$tmp/model" \
    --backend cpu --threads "$threads" --state-dir "$tmp/state" >"$tmp/hymbad.log" 2>&1 &
pids+=($!)
wait_for 10 "$build/client/hymbactl" --bus-address "$addr" status || true

echo "# $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')), load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "# hymbad --backend cpu --threads $threads, tiny mkmodel model (4 layers, hidden 64, vocab 512)"
if [ $# -gt 0 ]; then
    timeout 600 "$build/tools/hymba-load" --bus-address "$addr" "$@"
else
    for c in 1 4 8; do
        timeout 600 "$build/tools/hymba-load" --bus-address "$addr" -c "$c" -n 20 -t 64 -r 3
    done
fi
