"""Which mask codes cheapest: the shipped mask variants of tiny on the shipped clips, bytes and quality
at k = 2, 4, 6 sent scales, encode and decode time.

    python benchmarks/mask_variants.py [--frames 10] [--json benchmarks/results/mask_variants.json]

The models are the shipped ones that differ from tiny by the mask only (``bench_variants.shipped_variants``,
read from the models: tiny, tiny-var, tiny-infinitystar, tiny-sparse-parent). The streams come from the one
RD ladder (``rdeval.ladder``): a truncation-safe model (progvc_sparse, progvc_sparse_parent) encodes once
and is cut after k (``encode_s`` is that one encode); a model whose mask is not truncation safe (var,
infinitystar) is encoded once per k (``encode_s`` is that k's encode). Quality: PSNR-Y and MS-SSIM of the
zero-fill decode (metrics.py, the eval's).
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from progvc_lab import metrics
from progvc_lab.bench_variants import shipped_variants
from progvc_lab.codec import Codec
from progvc_lab.data import read_video, sample_clip_path
from progvc_lab.rdeval import ladder

CLIPS = ("akiyo", "foreman")
KS = (2, 4, 6)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=10)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    models = shipped_variants("tiny")["masks"]
    rows = []
    for clip in CLIPS:
        video, fps = read_video(sample_clip_path(clip), max_frames=args.frames)
        T, _, H, W = video.shape
        for name in models:
            codec = Codec.from_pretrained(name)
            t0 = time.perf_counter()
            full = codec.encode(video, fps)
            full_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            for rung in ladder(codec, full, KS, video=video, fps=fps):
                # the ladder's step: this k's own encode (unsafe masks; none for a cut) and its decode
                step_s = time.perf_counter() - t0
                enc = step_s - rung.decode_seconds if rung.result is not None else full_s
                rows.append({"clip": clip, "model": name, "mask": codec.context_model.config.mask,
                             "truncation_safe": bool(codec.truncation_safe), **rung.point(T, H, W),
                             "psnr_y": float(metrics.psnr_yuv(video, rung.decoded)["y"]),
                             "ms_ssim": float(metrics.ms_ssim(video, rung.decoded)), "encode_s": enc})
                r = rows[-1]
                print(f"{clip:8s} {name:18s} k={r['k']} {r['bytes']:6d} B {r['bpp']:.4f} bpp  PSNR-Y {r['psnr_y']:.2f}  "
                      f"MS-SSIM {r['ms_ssim']:.3f}  enc {enc:.1f} s dec {r['decode_seconds']:.1f} s", flush=True)
                t0 = time.perf_counter()
    if args.json:
        Path(args.json).write_text(json.dumps({"frames": args.frames, "models": models, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
