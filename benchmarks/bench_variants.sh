#!/usr/bin/env bash
# The committed comparison of every shipped variant (benchmarks/results/bench_variants_*): masks
# (tiny, tiny-var, tiny-infinitystar), quantizers (tiny, tiny-bsq), both entropy coders and every
# detail sampler, by `progvc-lab bench`, on the two shipped clips (30 frames, variants only: the speed
# part of Foreman is bench_tiny.*) and on Big Buck Bunny from ../shared (10 frames of 416x240, speed
# part included: the clip the project never ships or trains on), about 25 min on 2 idle cores.
#
#   bash benchmarks/bench_variants.sh
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=benchmarks/results
B="${PY:-.venv/bin/python} -m progvc_lab.cli bench"
for clip in foreman akiyo; do
    $B "data/${clip}_qcif_30f.y4m" --no-speed --json "$OUT/bench_variants_$clip.json" \
        --plot "$OUT/bench_variants_$clip.png" --force | tee "$OUT/bench_variants_$clip.txt"
done
BBB=../shared/data/clips/bigbuckbunny_416x240_60f.y4m
if [ -f "$BBB" ]; then
    $B "$BBB" --frames 10 --threads 2 --json "$OUT/bench_bigbuckbunny.json" \
        --plot "$OUT/bench_variants_bigbuckbunny.png" --force | tee "$OUT/bench_bigbuckbunny.txt"
fi
