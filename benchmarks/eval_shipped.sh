#!/usr/bin/env bash
# The committed evaluation of the shipped model (benchmarks/results/): ours (one encode per clip,
# every truncation level, five fills of the unsent scales) against x264 and x265 (veryslow, -tune psnr, CRF
# ladder, raw streams without SEI), every decode scored by the same code.
#
#   bash benchmarks/eval_shipped.sh [MODEL]        # MODEL: shipped name or .pt (default: tiny)
#
# Clips: the two shipped ones (data/) and Big Buck Bunny from ../shared/data/clips (416x240), all
# held out from training; 30 frames each. Needs ffmpeg (apt-get install ffmpeg) and ../shared.
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL="${1:-tiny}"
NAME="$(basename "${MODEL%.pt}")"
OUT=benchmarks/results
CLIPS=(data/akiyo_qcif_30f.y4m data/foreman_qcif_30f.y4m)
[ -f ../shared/data/clips/bigbuckbunny_416x240_60f.y4m ] && CLIPS+=(../shared/data/clips/bigbuckbunny_416x240_60f.y4m)
PY=${PY:-.venv/bin/python}
$PY -m progvc_lab.cli eval "${CLIPS[@]}" --model "$MODEL" --frames 30 --samplers zero,argmax,sample,mean,copy \
    --json "$OUT/eval_$NAME.json" --plot "$OUT/rd_$NAME.png" --out "outputs/eval_$NAME" --force \
    | tee "$OUT/eval_$NAME.txt"
# the README's tables, from the JSON
$PY -m progvc_lab.rdeval "$OUT/eval_$NAME.json" > "$OUT/eval_$NAME.md"
