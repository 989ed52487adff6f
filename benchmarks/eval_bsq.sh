#!/usr/bin/env bash
# tiny-bsq (BSQ tokens, bitwise head) on the clips of benchmarks/eval_shipped.sh, truncation ladder with
# zero fill, no baselines; then the side-by-side table with the shipped VQ model's committed evaluation
# (benchmarks/results/eval_tiny.json, the same clips, frames and scoring code).
#
#   bash benchmarks/eval_bsq.sh
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=benchmarks/results
CLIPS=(data/akiyo_qcif_30f.y4m data/foreman_qcif_30f.y4m)
[ -f ../shared/data/clips/bigbuckbunny_416x240_60f.y4m ] && CLIPS+=(../shared/data/clips/bigbuckbunny_416x240_60f.y4m)
PY=${PY:-.venv/bin/python}
$PY -m progvc_lab.cli eval "${CLIPS[@]}" --model tiny-bsq --frames 30 --samplers zero --baselines none \
    --lambdas none --json "$OUT/eval_tiny_bsq.json" --out outputs/eval_tiny_bsq --force | tee "$OUT/eval_tiny_bsq.txt"
$PY benchmarks/bsq_vs_vq.py "$OUT/eval_tiny.json" "$OUT/eval_tiny_bsq.json" > "$OUT/bsq_vs_vq.md"
cat "$OUT/bsq_vs_vq.md"
