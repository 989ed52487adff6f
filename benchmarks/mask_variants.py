"""Which mask codes cheapest: the shipped mask variants of tiny on the shipped clips, bytes and quality
at k = 2, 4, 6 sent scales, encode and decode time.

    python benchmarks/mask_variants.py [--frames 10] [--json benchmarks/results/mask_variants.json]

A truncation-safe model (tiny: progvc_sparse) encodes once and is cut after k; a model whose mask is
not truncation safe (tiny-var, tiny-infinitystar) is encoded once per k (its unsent scales are
synthesized as context). Quality: PSNR-Y and MS-SSIM of the zero-fill decode (metrics.py, the eval's).
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from progvc_lab import bitstream, metrics
from progvc_lab.codec import Codec
from progvc_lab.data import read_video, sample_clip_path

MODELS = ("tiny", "tiny-var", "tiny-infinitystar")
CLIPS = ("akiyo", "foreman")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=10)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    rows = []
    for clip in CLIPS:
        video, fps = read_video(sample_clip_path(clip), max_frames=args.frames)
        T, _, H, W = video.shape
        for name in MODELS:
            codec = Codec.from_pretrained(name)
            full = None
            for k in (2, 4, 6):
                t0 = time.perf_counter()
                if codec.truncation_safe:
                    full = full or codec.encode(video, fps)
                    data = bitstream.truncate(full, k)
                else:
                    data = codec.encode(video, fps, scales=k)
                enc = time.perf_counter() - t0
                t0 = time.perf_counter()
                out = codec.decode(data)
                dec = time.perf_counter() - t0
                rows.append({"clip": clip, "model": name, "mask": codec.context_model.config.mask, "k": k,
                             "bytes": len(data), "bpp": len(data) * 8 / (T * H * W),
                             "psnr_y": float(metrics.psnr_yuv(video, out)["y"]), "ms_ssim": float(metrics.ms_ssim(video, out)),
                             "encode_s": enc, "decode_s": dec})
                r = rows[-1]
                print(f"{clip:8s} {name:18s} k={k} {r['bytes']:6d} B {r['bpp']:.4f} bpp  PSNR-Y {r['psnr_y']:.2f}  "
                      f"MS-SSIM {r['ms_ssim']:.3f}  enc {enc:.1f} s dec {dec:.1f} s", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"frames": args.frames, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
