#!/usr/bin/env bash
# gpu-carry.sh: gather built programs, the libraries they need beyond a CUDA image, golden data and
# gpu-check.sh into one folder, for running the GPU checks on a machine without the build dependencies.
#   tools/gpu-carry.sh BUILD_DIR DEST      (then: cd DEST && ./gpu-check.sh [--bench], or ./gpu-ab.sh)
set -euo pipefail
build=$(cd "$1" && pwd)
dest=$2
top=$(cd "$(dirname "$0")/.." && pwd)
shared=${HYMBA_SHARED:-$top/../shared}
rm -rf "$dest"
mkdir -p "$dest/bin" "$dest/lib" "$dest/shared/golden"
for p in tests/test-cuda-kernels tests/test-cuda-backend tools/hymba-mkmodel tools/hymba-run tools/hymba-bench; do
    if [ -x "$build/$p" ]; then cp "$build/$p" "$dest/bin/"; fi
done
# json-c is not in the CUDA images; copy it (and its version links) next to the programs
for f in /usr/lib/x86_64-linux-gnu/libjson-c.so.5*; do cp -a "$f" "$dest/lib/"; done
for c in tiny-fp32 tiny-bf16; do
    [ -d "$shared/golden/$c" ] && cp -r "$shared/golden/$c" "$dest/shared/golden/"
done
chmod -R u+w "$dest/shared"
cp "$top/tools/gpu-check.sh" "$top/tools/gpu-ab.sh" "$dest/"
du -sh "$dest"
