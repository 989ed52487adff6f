"""Models and copy gates side by side: bytes at every k and the full pyramid's quality, on held-out clips.

    python benchmarks/bytes_by_k.py --json benchmarks/results/copy_gate_study.json \
        --markdown benchmarks/results/copy_gate_study.md                      # the copy gates (default runs)
    python benchmarks/bytes_by_k.py --runs tiny:auto,tiny-fast:auto,tiny-lite:auto \
        --json benchmarks/results/lite_study.json --markdown benchmarks/results/lite_study.md

For each held-out clip (the shipped Akiyo and Foreman; Big Buck Bunny from ../shared/data/clips when
present) and each (model, copy gate) pair, the clip is encoded once with the encoder's defaults (all-P
GOP, RD-optimised tokens at the default lambda) and cut after every k. The default rows:

* ``tiny`` / ``count``: one backed-off count per scale;
* ``tiny`` / ``context``: the shipped model as ``encode`` runs it by default (``copy_gate auto``: the
  9-count gate);
* ``tiny-gate`` / ``learned``: the gate model's learned gate (its head's correction of the count);
* ``tiny-gate`` / ``context``: the gate model's softmax with the default gate (its head unused).

Bytes are the real files (header included); quality is decoded from the real bytes of the full
pyramid (PSNR-Y, MS-SSIM RGB). The RD-optimised tokens depend on the probabilities, so the pictures of
two rows may differ a little as well as their bytes.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import torch

from progvc_lab import bitstream, metrics
from progvc_lab.codec import Codec
from progvc_lab.data.clips import load_clip, sample_clip_path, shared_clips
from progvc_lab.rdeval import score

RUNS = (("tiny", "count"), ("tiny", "context"), ("tiny-gate", "learned"), ("tiny-gate", "context"))


def clips() -> list[Path]:
    found = [sample_clip_path("akiyo"), sample_clip_path("foreman")]
    found += [p for p in shared_clips() if "bigbuckbunny" in p.name]
    return found


def run_clip(path: Path, frames: int, models: dict, runs=RUNS) -> dict:
    video, fps = load_clip(path, frames)
    T, _, H, W = video.shape
    rows = []
    for name, gate in runs:
        codec = models[name]
        t0 = time.perf_counter()
        data, res = codec.encode_with_stats(video, fps, copy_gate=gate)
        gate = bitstream.read_stream(data).header.copy_gate     # "auto" as resolved
        seconds = time.perf_counter() - t0
        K = bitstream.describe(data)["scales_sent"]
        cut_bytes = [len(bitstream.truncate(data, k)) for k in range(1, K + 1)]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            decoded = codec.decode(data)
        q = score(video, decoded, perceptual=False)
        p_bits = res.model_bits[1:].sum() if T > 1 else 0.0   # P frames' model bits, every scale
        p_tokens = sum(t[1:].numel() for t in res.tokens)
        rows.append({"model": name, "copy_gate": gate, "bytes": cut_bytes,
                     "bpp": [metrics.bpp(b, T, H, W) for b in cut_bytes],
                     "psnr_y": q["psnr-y"], "ms_ssim": q["ms-ssim-rgb"],
                     "p_bits_per_token": float(p_bits) / max(p_tokens, 1), "encode_seconds": seconds})
        print(f"  {name:10s} {gate:8s} bytes/k {cut_bytes}  PSNR-Y {q['psnr-y']:.2f}  MS-SSIM "
              f"{q['ms-ssim-rgb']:.4f}  P-frame bits/token {rows[-1]['p_bits_per_token']:.3f}", flush=True)
    return {"clip": path.name, "frames": T, "size": [W, H], "rows": rows}


def markdown(doc: dict) -> str:
    out = ["| clip | model | copy gate | bytes at k = 1..6 | full pyramid bpp | PSNR-Y | MS-SSIM | P-frame bits/token |",
           "|---|---|---|---|---|---|---|---|"]
    for clip in doc["clips"]:
        for r in clip["rows"]:
            out.append(f"| {clip['clip'].split('_')[0]} | {r['model']} | {r['copy_gate']} | "
                       f"{' / '.join(str(b) for b in r['bytes'])} | {r['bpp'][-1]:.4f} | {r['psnr_y']:.2f} | "
                       f"{r['ms_ssim']:.3f} | {r['p_bits_per_token']:.3f} |")
    return "\n".join(out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=30)
    ap.add_argument("--json", type=Path, help="write the results here")
    ap.add_argument("--markdown", type=Path, help="write the table here")
    ap.add_argument("--runs", help="comma list of MODEL:GATE (gate auto = the model's default), "
                                   "default: " + ",".join(f"{m}:{g}" for m, g in RUNS))
    args = ap.parse_args(argv)
    runs = RUNS if not args.runs else [tuple(r.split(":", 1)) for r in args.runs.split(",")]
    torch.manual_seed(0)
    models = {name: Codec.from_pretrained(name) for name in sorted({m for m, _ in runs})}
    doc = {"frames": args.frames, "runs": [list(r) for r in runs], "clips": []}
    for path in clips():
        print(path.name, flush=True)
        doc["clips"].append(run_clip(path, args.frames, models, runs))
    table = markdown(doc)
    print(table)
    if args.json:
        args.json.write_text(json.dumps(doc, indent=1) + "\n")
    if args.markdown:
        args.markdown.write_text(table + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
