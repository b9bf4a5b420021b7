#!/usr/bin/env bash
# daemon-bench.sh: hymba-load against hymbad on a private bus with a tiny mkmodel model (the figures of bench/RESULTS-daemon.md).
#   tools/daemon-bench.sh BUILDDIR [hymba-load options...]   (default: -c 1, 4, 8 clients x 20 requests x 64 tokens, 3 rounds)
set -euo pipefail
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
cat >"$tmp/bus.conf" <<CONF
<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path=$tmp/bus</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/><allow own="*"/>
    <allow send_type="method_call"/><allow send_type="signal"/><allow send_requested_reply="true"/><allow send_type="error"/>
    <allow receive_type="method_call"/><allow receive_type="signal"/><allow receive_requested_reply="true"/><allow receive_type="error"/>
  </policy>
</busconfig>
CONF
printf 'max_sessions_per_user = 256\nmax_queued_per_user = 256\nmax_new_tokens = 100000\n' >"$tmp/bench.conf"
dbus-daemon --config-file="$tmp/bus.conf" --nofork --nopidfile 2>/dev/null &
pids+=($!)
for i in $(seq 50); do [ -S "$tmp/bus" ] && break; sleep 0.1; done
addr="unix:path=$tmp/bus"
"$build/daemon/hymbad" --bus-address "$addr" --config "$tmp/bench.conf" --model "$tmp/model" \
    --backend cpu --threads "$threads" --state-dir "$tmp/state" >"$tmp/hymbad.log" 2>&1 &
pids+=($!)
for i in $(seq 100); do "$build/client/hymbactl" --bus-address "$addr" status >/dev/null 2>&1 && break; sleep 0.1; done

echo "# $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')), load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "# hymbad --backend cpu --threads $threads, tiny mkmodel model (4 layers, hidden 64, vocab 512)"
if [ $# -gt 0 ]; then
    timeout 600 "$build/tools/hymba-load" --bus-address "$addr" "$@"
else
    for c in 1 4 8; do
        timeout 600 "$build/tools/hymba-load" --bus-address "$addr" -c "$c" -n 20 -t 64 -r 3
    done
fi
