#!/usr/bin/env bash
# gpu-ab.sh: same-call A/B of batch-1 decode speed between builds of hymba-bench, for the device
# machine, where run-to-run spread (±1-2 %) is larger than most single changes.
#   In a folder made by tools/gpu-carry.sh, put each other build as bin/hymba-bench-NAME, then:
#       V="base new" [ROUNDS=3] [TRACE_V="new"] ./gpu-ab.sh
#   NAME "new" is bin/hymba-bench itself. Each round runs every NAME once (in order, so drift
#   hits all alike): hymba-bench --backend cuda --prompt 512 --decode 128 --repeat 3 on a random
#   1.5B checkpoint, printing tok/s, the copy bandwidth and the fraction of the roofline. TRACE_V (default: all of V) then
#   runs each named build once with HYMBA_CUDA_MEGA_TRACE=1 (the time per phase, the grid barriers).
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
case "${1:-}" in -h|--help) sed -n '2,9p' "$0"; exit 0 ;; esac
export LD_LIBRARY_PATH="$here/lib:/usr/local/cuda/lib64${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
V=${V:-base new}
model=$(mktemp -d /tmp/hymba-ab.XXXXXX)
trap 'rm -rf "$model"' EXIT
"$here/bin/hymba-mkmodel" --preset 1.5b --seed 1 "$model" >/dev/null 2>&1 || { echo "gpu-ab.sh: hymba-mkmodel failed"; exit 1; }
bench() { if [ "$1" = new ]; then echo "$here/bin/hymba-bench"; else echo "$here/bin/hymba-bench-$1"; fi; }
for v in $V; do
    [ -x "$(bench "$v")" ] || { echo "gpu-ab.sh: no $(bench "$v")"; exit 1; }
done
for i in $(seq "${ROUNDS:-3}"); do
    for v in $V; do
        # tok/s and the copy bandwidth too: a change can move the fraction through the ceiling alone
        # (an L2 set-aside for persisting lines lowered the measured copy rate by 16 %, RESULTS step 55)
        echo "== $v $i: $("$(bench "$v")" -m "$model" --backend cuda --prompt 512 --decode 128 --repeat 3 2>&1 |
                         grep -E '^(decode B=1|copy bandwidth|fraction)' | sed -E 's/ \(.*//; s/ +/ /g' |
                         paste -sd ';')"
    done
done
for v in ${TRACE_V-$V}; do
    echo "== trace $v"
    HYMBA_CUDA_MEGA_TRACE=1 "$(bench "$v")" -m "$model" --backend cuda --prompt 512 --decode 128 --repeat 1 2>&1 |
        sed -n '/^hymba: cuda: decode step/,/smallest step between two arrivals/p'
done
