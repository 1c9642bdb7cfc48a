#!/usr/bin/env bash
# The GPU figures of the speed and pretrained-model issues, in one short run on a GPU:
#   bash scripts/gpu_check.sh OUT          # on the GPU machine, from the repository root
#   DEVICE=cpu QUICK=1 EPOCHS=1 CROPS=2 bash scripts/gpu_check.sh /tmp/gpu-check  # CPU rehearsal
# 1. benchmarks/bench.py for the paper architecture (random weights) and the shipped model:
#    every variant, prediction Mpix/s at 520x696 and 2048^2, training step, peak memory;
# 2. the paper architecture trained with the shipped model's recipe (same data, split, seed),
#    then scored on the held-out wells beside the shipped model (benchmarks/bench_pretrained.py).
# Each step has its own time limit (seconds; PAPER_S, SHIPPED_S, TRAIN_S, SCORE_S), so one
# slow step cannot eat the others, and together they stay under the device tool's 10 minutes
# a command; everything lands in OUT as text and JSON.
set -uo pipefail
out=${1:?usage: gpu_check.sh OUT}
device=${DEVICE:-cuda}
quick=${QUICK:+--quick}
epochs=${EPOCHS:-60}
mkdir -p "$out"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
py=${PYTHON:-python3}
step() {  # step NAME SECONDS COMMAND...: run it with a limit, log it, say how it ended
    local name=$1 limit=$2; shift 2
    echo "== $name (limit ${limit}s): $*"
    timeout "$limit" "$@" > "$out/$name.log" 2>&1
    echo "== $name: exit $? after ${SECONDS}s in all"
    tail -n 40 "$out/$name.log"
}
{ nvidia-smi || true; $py -c "import torch; print(torch.__version__, torch.cuda.is_available())"; } \
    > "$out/machine.txt" 2>&1
step bench-paper "${PAPER_S:-170}" $py benchmarks/bench.py --device "$device" $quick \
    --arch resnet34 --json "$out/bench-paper.json"
step bench-shipped "${SHIPPED_S:-110}" $py benchmarks/bench.py --device "$device" $quick \
    --model src/refocus/zoo/nuclei-widefield-v1.pt --tasks predict --json "$out/bench-shipped.json"
step train-paper "${TRAIN_S:-150}" $py -m refocus train --recipe nuclei-widefield \
    --arch resnet34 --epochs "$epochs" ${CROPS:+--crops-per-pair "$CROPS"} --device "$device" \
    --overwrite --out "$out/paper-arch.pt"
if [ -f "$out/paper-arch.pt" ]; then
    step score-paper "${SCORE_S:-140}" $py benchmarks/bench_pretrained.py $quick --sites 1 \
        --model "$out/paper-arch.pt" --second-model src/refocus/zoo/nuclei-widefield-v1.pt \
        --out "$out/pretrained-paper-arch.md"
fi
rm -f "$out"/*.pt  # the paper architecture's files are over 100 MB: the tables come back
