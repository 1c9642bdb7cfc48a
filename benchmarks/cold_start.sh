#!/bin/bash
# The first `refocus predict` of a model (an empty cache each run) on one shipped z = 00
# field, another checkout's code and this one interleaved, 3 runs each; prints seconds.
#   git worktree add /tmp/before <commit>; bash benchmarks/cold_start.sh /tmp/before/src
set -euo pipefail
before_src=${1:?usage: cold_start.sh BEFORE_SRC}
here=$(cd "$(dirname "$0")/.." && pwd)
field=$(ls "$here"/src/refocus/sample/z00/*.tif | head -1)
for rep in 1 2 3; do
  for path in before after; do
    src=$here/src; [ "$path" = before ] && src=$before_src
    cache=$(mktemp -d); out=$(mktemp -d)
    start=$(date +%s.%N)
    REFOCUS_CACHE_DIR=$cache PYTHONPATH=$src "$here"/v/bin/refocus predict "$field" \
      --out "$out/o" > "$out/log" 2>&1 || { echo "$path failed:"; cat "$out/log"; exit 1; }
    end=$(date +%s.%N)
    echo "$rep $path $(echo "$end - $start" | bc) s, cached: $(ls "$cache"/onnx/*/ | tr '\n' ' ')"
    rm -rf "$cache" "$out"
  done
done
