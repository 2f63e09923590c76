#!/usr/bin/env bash
# The GPU check, in one go, on a machine with CUDA and PyTorch but without phf installed:
#   1. bench/gpu_mfu.py: gpt2-small training tokens/s and MFU (phf vs plain Trainer,
#      eager and compiled), written to bench/out/results/gpu_mfu.json
#   2. phf's own pipeline on CUDA: a tiny conditional run trained with bf16 autocast and
#      torch.compile, then evaluated (sampling with the control tokens, scoring, held-out loss)
# Prepare on any machine first (the fixtures travel with the tree):
#   .venv/bin/python bench/gpu_mfu.py --prepare
# Pure-Python dependencies missing on the GPU machine (pycodestyle) may be given as wheels in .whl/.
# Everything it writes goes under ${OUT:-bench/out/gpu}.
set -uo pipefail
OUT=${OUT:-bench/out/gpu}
mkdir -p "$OUT"
if ls .whl/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=${PYTHONPATH:+$PYTHONPATH:}$PWD/src HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
PY=${PY:-python3}
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm,driver_version --format=csv | tee "$OUT/gpu.txt"
$PY -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)" \
    | tee -a "$OUT/gpu.txt"

status=0
$PY bench/gpu_mfu.py "$@" 2>&1 | tee "$OUT/gpu_mfu.log" || status=1
cp bench/out/results/gpu_mfu.json "$OUT/" 2>/dev/null

run=/tmp/phf-gpu-e2e
rm -rf "$run"
{
    $PY -m phf train tasks/pep8 objectives/conditional models/tiny \
        data.scored_path=bench/out/fixtures/scored-pep8-4000000.jsonl training.output_dir=$run \
        training.num_tokens=500000 training.compile=auto training.bf16=auto eval.every_steps=0.5 \
        eval.callback_num_samples=32 &&
    $PY -m phf eval $run eval.num_samples=128 &&
    $PY -c "import json; r = json.load(open('$run/results.json')); print({k: r[k] for k in r if not isinstance(r[k], (dict, list))})"
} 2>&1 | tee "$OUT/e2e.log" || status=1
cp $run/metrics.jsonl $run/train_summary.json $run/results.json "$OUT/" 2>/dev/null
exit $status
