"""Would it pay to keep every scale of the key frame when a stream is cut? (issue 7, item 3)

    python benchmarks/keyframe_scales_study.py --json benchmarks/results/keyframe_scales_study.json \
        --markdown benchmarks/results/keyframe_scales_study.md

Today a cut after scale k drops scales >= k of *every* frame, the intra frame included. The option the
issue asks about would store the intra frame's fine scales apart, so that a cut applies to P frames
only; the decoder would then fill a P frame's unsent scales by copying frame t-1's tokens (the ``copy``
fill), so the intra frame's detail carries through a static scene. Before changing the format, this
measures the option on the held-out clips from one real encode per clip (encoder defaults, 30 frames):

* **cut** (today): the real stream cut after k (``bitstream.truncate``), decoded with the ``zero`` and
  the ``copy`` fills;
* **cut + full key frame** (simulated): the same P-frame scales; the intra frame's tokens of every
  scale; P frames' scales >= k copied from frame t-1 (so from the intra frame), reconstructed by
  ``Codec.reconstruct``. Its bytes are the cut stream's plus the intra frame's model bits of scales
  >= k plus 3 bytes per extra chunk (a varint length and a 16-bit check): what a separate intra chunk
  per scale would cost.

The same end can be reached without a new format, by the encoder alone: ``rdo_p_factor`` F (``encode
--p-lambda-factor F``) lets P frames choose their tokens with lambda x F, so they copy more and the
bits stay in the key frame. The second table puts F = 3 and 10 at the default lambda beside the uniform
lambda ladder (F = 1) at lambda 0.005, 0.02 and 0.05, all full-pyramid streams.

Quality is PSNR-Y and MS-SSIM (RGB) of all 30 frames, the metric code of ``progvc-lab eval``.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import torch

from progvc_lab import bitstream
from progvc_lab.codec import Codec
from progvc_lab.data.clips import load_clip, sample_clip_path, shared_clips
from progvc_lab.rdeval import score

CHUNK_OVERHEAD = 3   # bytes per extra chunk: varint length (1-2) + 16-bit chunk check
P_RUNS = ((0.005, 1.0), (0.02, 1.0), (0.05, 1.0), (0.005, 3.0), (0.005, 10.0))   # (lambda, P-frame factor)


def clips() -> list[Path]:
    out = [sample_clip_path("akiyo"), sample_clip_path("foreman")]
    out += [p for p in shared_clips() if "bigbuckbunny" in p.name]
    return out


def keyframe_tokens(tokens: list[torch.Tensor], k: int) -> list[torch.Tensor]:
    """Scales < k as coded; scales >= k: the intra frame's tokens, every P frame copying frame t-1's."""
    out = []
    for s, tok in enumerate(tokens):
        out.append(tok.clone() if s < k else tok[:1].expand_as(tok).clone())
    return out


def run_clip(codec: Codec, path: Path, frames: int) -> dict:
    video, fps = load_clip(path, frames)
    size = tuple(video.shape[-2:])
    data, res = codec.encode_with_stats(video, fps)
    if res.header.num_gops != 1:
        raise SystemExit(f"{path.name}: {res.header.num_gops} GOPs; this study assumes one (<= {codec.config.gop} frames)")
    K = len(res.tokens)
    rows = []
    for k in range(1, K + 1):
        cut = bitstream.truncate(data, k)
        row = {"k": k, "cut_bytes": len(cut)}
        for fill in ("zero", "copy"):
            q = score(video, codec.decode(cut, sampler=fill), perceptual=False)
            row[f"cut_{fill}"] = {"psnr_y": q["psnr-y"], "ms_ssim": q["ms-ssim-rgb"]}
        intra_bits = float(res.model_bits[0, k:].sum())
        row["key_bytes"] = len(cut) + math.ceil(intra_bits / 8) + CHUNK_OVERHEAD * (K - k)
        rec = codec.reconstruct(keyframe_tokens(res.tokens, k), res.latent_hw, size)
        q = score(video, rec, perceptual=False)
        row["key_full"] = {"psnr_y": q["psnr-y"], "ms_ssim": q["ms-ssim-rgb"]}
        rows.append(row)
        print(f"  k={k} cut {row['cut_bytes']:>6} B  zero {row['cut_zero']['ms_ssim']:.4f}  copy "
              f"{row['cut_copy']['ms_ssim']:.4f}   + full key frame {row['key_bytes']:>6} B  "
              f"{row['key_full']['ms_ssim']:.4f} ({row['key_full']['psnr_y']:.2f} dB)", flush=True)
    p_rows = []
    for lam, factor in P_RUNS:
        d = codec.encode(video, fps, rdo_lambda=lam, rdo_p_factor=factor)
        q = score(video, codec.decode(d), perceptual=False)
        p_rows.append({"rdo_lambda": lam, "rdo_p_factor": factor, "bytes": len(d),
                       "psnr_y": q["psnr-y"], "ms_ssim": q["ms-ssim-rgb"]})
        print(f"  lambda {lam:g} x {factor:g} in P frames: {len(d):>6} B  MS-SSIM {q['ms-ssim-rgb']:.4f}  "
              f"PSNR-Y {q['psnr-y']:.2f}", flush=True)
    return {"clip": path.name, "frames": int(video.shape[0]), "size": list(size), "rows": rows, "p_factor": p_rows}


def markdown(doc: dict) -> str:
    lines = ["| clip | k | cut: bytes | cut, zero fill: MS-SSIM / PSNR-Y | cut, copy fill | cut + full key frame: bytes | MS-SSIM / PSNR-Y |",
             "|---|---|---|---|---|---|---|"]
    f = lambda q: f"{q['ms_ssim']:.3f} / {q['psnr_y']:.2f}"   # noqa: E731
    for c in doc["clips"]:
        for r in c["rows"]:
            lines.append(f"| {c['clip'].split('_')[0]} | {r['k']} | {r['cut_bytes']} | {f(r['cut_zero'])} | "
                         f"{f(r['cut_copy'])} | {r['key_bytes']} | {f(r['key_full'])} |")
    lines += ["", "| clip | lambda | P-frame factor | bytes | MS-SSIM / PSNR-Y |", "|---|---|---|---|---|"]
    for c in doc["clips"]:
        for r in c["p_factor"]:
            lines.append(f"| {c['clip'].split('_')[0]} | {r['rdo_lambda']:g} | {r['rdo_p_factor']:g} | {r['bytes']} | {f(r)} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="tiny")
    ap.add_argument("--frames", type=int, default=30)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--markdown", type=Path)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    codec = Codec.from_pretrained(args.model)
    doc = {"model": args.model, "clips": []}
    for path in clips():
        print(path.name, flush=True)
        doc["clips"].append(run_clip(codec, path, args.frames))
    table = markdown(doc)
    print(table)
    if args.json:
        args.json.write_text(json.dumps(doc, indent=1) + "\n")
    if args.markdown:
        args.markdown.write_text(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
