"""Compare trained models on the held-out clips: stage-1 quality per k, and real rate points.

::

    python -m progvc_lab.training.compare old=progvc_lab/checkpoints/tiny.pt new=runs/tiny2/tiny.pt \
        --json configs/tiny2_logs/compare.json

For every model and clip (Akiyo, Foreman from ``data/``; the first 30 frames of Big Buck Bunny from
``../shared/data/clips`` when present):

* **stage 1** (no entropy coding): tokens -> the first k scales -> decoded frames; PSNR-RGB and
  MS-SSIM per k (what the stage-1 recipe alone buys);
* **rate points** (``progvc_lab.evaluate.rate_points``): encode once, truncate to k scales, decode
  the real bytes; bytes, bpp, PSNR-RGB, MS-SSIM per k (what the coding path makes of it);
* **best MS-SSIM at <= 0.05 bpp** over the rate points.

Prints Markdown tables; ``--json`` writes every number.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from ..data import DATA_DIR
from ..resources import shared_path

CLIPS = {
    "Akiyo": (DATA_DIR / "akiyo_qcif_30f.y4m", 30),
    "Foreman": (DATA_DIR / "foreman_qcif_30f.y4m", 30),
    "Big Buck Bunny": (shared_path("data", "clips", "bigbuckbunny_416x240_60f.y4m"), 30),
}


@torch.no_grad()
def stage1_points(model, video: torch.Tensor, batch: int = 10) -> list[dict]:
    """PSNR-RGB and MS-SSIM per k of the stage-1 reconstruction (nearest-code tokens, no coding).

    ``model``: a ``Codec`` or a ``(tokenizer, quantizer)`` pair (``load_stage1``)."""
    from .. import metrics

    tokenizer, quantizer = (model.tokenizer, model.quantizer) if hasattr(model, "tokenizer") else model
    recs = {k: [] for k in range(1, quantizer.num_scales + 1)}
    for i in range(0, len(video), batch):
        x = video[i:i + batch]
        f = tokenizer.encode(x)
        tokens = quantizer.tokenize(f)
        for k in recs:
            recs[k].append(tokenizer.decode(quantizer.tokens_to_latent(tokens, f.shape[-2:], upto=k),
                                            x.shape[-2:]).clamp(0, 1))
    return [{"k": k, "psnr_rgb": metrics.psnr(video, torch.cat(r)), "ms_ssim": metrics.ms_ssim(video, torch.cat(r))}
            for k, r in recs.items()]


def stage1_table(models: dict[str, str], clips: dict | None = None) -> dict:
    """``stage1_points`` for codec checkpoints or ``stage1.pt`` files, on every clip."""
    from ..codec import Codec
    from ..data import load_clip
    from .modules import load_stage1

    out = {}
    for name, path in models.items():
        try:
            model = load_stage1(path)
        except KeyError:
            model = Codec.load(path)
        out[name] = {}
        for clip, (clip_path, frames) in (clips or CLIPS).items():
            if Path(clip_path).is_file():
                out[name][clip] = stage1_points(model, load_clip(clip_path, frames)[0])
    return out


def best_msssim_at(points: list[dict], max_bpp: float = 0.05):
    ok = [p for p in points if p["bpp"] <= max_bpp and p.get("ms_ssim") is not None]
    return max(ok, key=lambda p: p["ms_ssim"]) if ok else None


def evaluate_models(models: dict[str, str], clips: dict | None = None, json_path: str | None = None) -> dict:
    from ..codec import Codec
    from ..data import load_clip
    from ..evaluate import rate_points

    results = {}
    for name, path in models.items():
        codec = Codec.load(path)
        results[name] = {"path": str(path), "clips": {}}
        for clip, (clip_path, frames) in (clips or CLIPS).items():
            if not Path(clip_path).is_file():
                print(f"skipping {clip}: {clip_path} not found")
                continue
            video, fps = load_clip(clip_path, frames)
            t0 = time.perf_counter()
            rp = rate_points(codec, video, fps, name=clip)
            points = [{k: p[k] for k in ("k", "bytes", "bpp", "psnr_rgb", "psnr_yuv", "ms_ssim", "decode_fps")}
                      for p in rp["points"]]
            results[name]["clips"][clip] = {
                "stage1": stage1_points(codec, video), "points": points, "encode_fps": rp["encode_fps"],
                "best_at_0.05bpp": best_msssim_at(points), "seconds": time.perf_counter() - t0,
            }
            print(f"{name} / {clip}: done in {time.perf_counter() - t0:.0f} s", flush=True)
            if json_path:  # after every clip, so an interrupted run keeps what it measured
                Path(json_path).parent.mkdir(parents=True, exist_ok=True)
                Path(json_path).write_text(json.dumps(results, indent=1))
    return results


def markdown(results: dict) -> str:
    lines = []
    names = list(results)
    clips = [c for c in CLIPS if all(c in results[n]["clips"] for n in names)]
    for clip in clips:
        lines += [f"**{clip}**", "", "| k | " + " | ".join(
            f"{n} bytes | {n} bpp | {n} PSNR-RGB | {n} MS-SSIM" for n in names) + " |",
            "|---|" + "---|" * (4 * len(names))]
        K = len(results[names[0]]["clips"][clip]["points"])
        for i in range(K):
            row = [str(i + 1)]
            for n in names:
                p = results[n]["clips"][clip]["points"][i]
                row += [str(p["bytes"]), f"{p['bpp']:.4f}", f"{p['psnr_rgb']:.2f}", f"{p['ms_ssim']:.3f}"]
            lines.append("| " + " | ".join(row) + " |")
        lines.append("")
        best = []
        for n in names:
            b = results[n]["clips"][clip]["best_at_0.05bpp"]
            best.append(f"{n}: {b['ms_ssim']:.3f} (k={b['k']}, {b['bpp']:.4f} bpp)" if b else f"{n}: none")
        lines += ["best MS-SSIM at <= 0.05 bpp: " + "; ".join(best), ""]
    lines += ["**Stage 1 alone** (nearest-code tokens, first k scales, no entropy coding): PSNR-RGB / MS-SSIM", "",
              "| clip | model | " + " | ".join(f"k={k}" for k in range(1, 7)) + " |", "|---|---|" + "---|" * 6]
    for clip in clips:
        for n in names:
            s1 = results[n]["clips"][clip]["stage1"]
            lines.append(f"| {clip} | {n} | " + " | ".join(f"{p['psnr_rgb']:.2f} / {p['ms_ssim']:.3f}" for p in s1) + " |")
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("models", nargs="+", help="NAME=PATH of a codec checkpoint")
    ap.add_argument("--json", help="write all numbers here")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = leave as is)")
    ap.add_argument("--clips", nargs="*", help=f"a subset of {list(CLIPS)}")
    ap.add_argument("--stage1-only", action="store_true", help="stage-1 PSNR/MS-SSIM per k only (stage1.pt works)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    models = dict(m.split("=", 1) for m in args.models)
    clips = {c: CLIPS[c] for c in args.clips} if args.clips else None
    if args.stage1_only:
        table = stage1_table(models, clips)
        if args.json:
            Path(args.json).write_text(json.dumps(table, indent=1))
        print("| clip | model | " + " | ".join(f"k={k}" for k in range(1, 7)) + " |\n|---|---|" + "---|" * 6)
        for clip in CLIPS:
            for name in table:
                if clip in table[name]:
                    print(f"| {clip} | {name} | " + " | ".join(f"{p['psnr_rgb']:.2f} / {p['ms_ssim']:.3f}"
                                                           for p in table[name][clip]) + " |")
        return
    results = evaluate_models(models, clips, json_path=args.json)
    print(markdown(results))


if __name__ == "__main__":
    main()
