"""Does the detail sampler earn its place? Every fill of the unsent scales, at equal bytes.

For each clip: ONE encode; for each cut k (default 2..5) the truncated stream is decoded with every
sampler (zero, argmax, mean, sample over a temperature x top-k grid, copy), so the bytes are equal by
construction. Scores from ``progvc_lab.rdeval.score`` (PSNR-Y, MS-SSIM RGB, ST-LPIPS, GMSD,
texture-ratio) plus three diagnostics:

* ``temporal-ratio``: mean squared frame-to-frame difference of the decode / of the original (flicker:
  > 1 means the decode changes more between frames than the source does);
* ``latent-mse``: mean squared error of the decoder's latent f_hat against the encoder's latent f
  (the fill helps the latent iff this falls below zero-fill's);
* ``fill-energy``: mean squared size of what the fill adds to f_hat (0 for zero-fill);
* ``argmax-acc``: fraction of filled positions whose token equals the encoder's token (token fills).

Prints a markdown table, writes ``benchmarks/results/sampler_study.json`` and
``benchmarks/results/sampler_study.png`` (per clip and k: MS-SSIM and ST-LPIPS per sampler; a strip of
frame 15 at k = 4 per sampler). Per-clip parts are kept in ``benchmarks/results/sampler_study_parts/``
(``--reuse`` re-plots from them). Rerun for a retrained model with ``--model PATH``.

    nice -n 5 python benchmarks/sampler_study.py [--model tiny] [--frames 30] [--clips a.y4m ...]
        [--grid full|short] [--ks 2,3,4,5] [--reuse]
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from progvc_lab import bitstream, evaluate, rdeval
from progvc_lab.codec import Codec
from progvc_lab.data import load_clip
from progvc_lab.resources import REPO_ROOT, results_dir, shared_path
from progvc_lab.stages import DetailSampler

ROOT = REPO_ROOT
RESULTS = results_dir()
CLIPS = [ROOT / "data" / "foreman_qcif_30f.y4m", ROOT / "data" / "akiyo_qcif_30f.y4m",
         shared_path("data", "clips", "bigbuckbunny_416x240_60f.y4m")]
KEYS = ("psnr-y", "ms-ssim-rgb", "st-lpips", "gmsd", "texture-ratio", "temporal-ratio", "latent-mse",
        "fill-energy", "argmax-acc")
STRIP_FRAME, STRIP_K = 15, 4


def grid(name: str) -> dict[str, dict]:
    """label -> DetailSampler arguments."""
    g = {"zero": {"mode": "zero"}, "argmax": {"mode": "argmax"}, "mean": {"mode": "mean"}}
    if name == "full":
        g["mean/argmax-ctx"] = {"mode": "mean", "mean_context": "argmax"}
        for t in (0.5, 0.8, 1.0):
            for k in (0, 5, 20):
                g[f"sample t{t} k{k}"] = {"mode": "sample", "temperature": t, "top_k": k}
        g["copy t1.0 k0"] = {"mode": "copy", "temperature": 1.0, "top_k": 0}
    else:  # large frames on 2 cores: one sample setting and copy
        g["sample t0.8 k20"] = {"mode": "sample", "temperature": 0.8, "top_k": 20}
        g["copy t1.0 k0"] = {"mode": "copy", "temperature": 1.0, "top_k": 0}
    return g


def temporal_energy(v: torch.Tensor) -> float:
    return float(((v[1:] - v[:-1]) ** 2).mean()) if len(v) > 1 else float("nan")


@torch.no_grad()
def study_clip(codec: Codec, path: Path, frames: int, ks, samplers: dict, strip_dir: Path,
               on_k=None) -> dict:
    video, fps = load_clip(path, frames)
    t0 = time.perf_counter()
    data, stats = codec.encode_with_stats(video, fps)
    print(f"{path.stem}: {len(video)} frames {video.shape[-1]}x{video.shape[-2]}, encode "
          f"{time.perf_counter() - t0:.1f} s", flush=True)
    f_true = codec.latents(video)
    q, true_tokens = codec.quantizer, stats["tokens"]
    te_orig = temporal_energy(video)
    rows, strip = [], {}
    for k in ks:
        cut = bitstream.truncate(data, k)
        f_zero = q.tokens_to_latent(true_tokens[:k], f_true.shape[-2:]) if k else torch.zeros_like(f_true)
        for label, kw in samplers.items():
            sampler = DetailSampler(**kw)
            t1 = time.perf_counter()
            tokens, codes, h = codec.decode_fill(cut, sampler=sampler)
            if codes:
                f_hat = q.tokens_to_latent(tokens[:k], h.latent_hw, codes=codes)
            else:
                f_hat = q.tokens_to_latent(tokens, h.latent_hw) if tokens else torch.zeros_like(f_true)
            # the decoder's own reconstruction of this latent (Codec.reconstruct batches 16 frames)
            dec = torch.cat([codec.tokenizer.decode(f_hat[i:i + 16], (h.height, h.width)).clamp(0, 1)
                             for i in range(0, len(f_hat), 16)])
            seconds = time.perf_counter() - t1
            sc = rdeval.score(video, dec)
            acc = None
            if sampler.predicts and k < len(true_tokens):
                hit = sum(int((tokens[s] == true_tokens[s]).sum()) for s in range(k, len(true_tokens)))
                acc = hit / sum(true_tokens[s].numel() for s in range(k, len(true_tokens)))
            row = {"clip": path.stem, "k": k, "bytes": len(cut), "bpp": len(cut) * 8 / video[:, 0].numel(),
                   "sampler": label, "args": kw, "seconds": seconds,
                   **{key: sc.get(key) for key in KEYS if key in sc},
                   "temporal-ratio": temporal_energy(dec) / te_orig,
                   "latent-mse": float(((f_hat - f_true) ** 2).mean()),
                   "fill-energy": float(((f_hat - f_zero) ** 2).mean()),
                   "argmax-acc": acc}
            rows.append(row)
            if k == STRIP_K and STRIP_FRAME < len(dec):
                strip[label] = dec[STRIP_FRAME]
            print(f"  k={k} {label:18s} ms-ssim {_f(row['ms-ssim-rgb'])} st-lpips {_f(row['st-lpips'])} "
                  f"tex {_f(row['texture-ratio'], 4)} temp {_f(row['temporal-ratio'])} "
                  f"lat-mse {_f(row['latent-mse'], 4)} ({seconds:.1f} s)", flush=True)
        if strip and k == STRIP_K:
            strip_dir.mkdir(parents=True, exist_ok=True)
            torch.save({"original": video[STRIP_FRAME], **strip}, strip_dir / f"{path.stem}_strip.pt")
        if on_k is not None:  # keep what is done so far (a long run can be cut short)
            on_k({"clip": path.stem, "frames": len(video), "rows": rows, "partial": True})
    return {"clip": path.stem, "frames": len(video), "width": video.shape[-1], "height": video.shape[-2],
            "full_bytes": len(data), "rows": rows}


def _f(x, nd=3):
    return "  n/a" if x is None else f"{x:.{nd}f}"


def table(doc: dict) -> str:
    lines = ["| clip | k | bytes | sampler | PSNR-Y | MS-SSIM | ST-LPIPS | GMSD | texture | temporal | latent MSE |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for clip in doc["clips"]:
        for r in clip["rows"]:
            lines.append(f"| {r['clip']} | {r['k']} | {r['bytes']} | {r['sampler']} | {_f(r['psnr-y'], 2)} | "
                         f"{_f(r['ms-ssim-rgb'])} | {_f(r['st-lpips'])} | {_f(r['gmsd'])} | "
                         f"{_f(r['texture-ratio'], 4)} | {_f(r['temporal-ratio'], 2)} | {_f(r['latent-mse'], 4)} |")
    return "\n".join(lines)


def summary(doc: dict) -> dict:
    """Per clip and k: which fills beat zero on MS-SSIM and on ST-LPIPS, and the best per metric."""
    out = {}
    for clip in doc["clips"]:
        for k in sorted({r["k"] for r in clip["rows"]}):
            rows = [r for r in clip["rows"] if r["k"] == k]
            zero = next(r for r in rows if r["sampler"] == "zero")
            best = {}
            for key, higher in (("psnr-y", True), ("ms-ssim-rgb", True), ("st-lpips", False), ("gmsd", False),
                                ("texture-ratio", True)):
                ok = [r for r in rows if r.get(key) is not None]
                if ok:
                    pick = (max if higher else min)(ok, key=lambda r: r[key])
                    best[key] = pick["sampler"]
            both = [r["sampler"] for r in rows if r["sampler"] != "zero" and r.get("ms-ssim-rgb") is not None
                    and r["ms-ssim-rgb"] > zero["ms-ssim-rgb"] and r["st-lpips"] < zero["st-lpips"]]
            out[f"{clip['clip']} k={k}"] = {"best": best, "beats_zero_on_ms_ssim_and_st_lpips": both}
    return out


def plot(doc: dict, strips: dict, path: Path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    clips = doc["clips"]
    labels = list(dict.fromkeys(r["sampler"] for c in clips for r in c["rows"]))
    n_strip = max((len(s) for s in strips.values()), default=0)
    fig = plt.figure(figsize=(max(12, 1.6 * n_strip), 3.2 * len(clips) + 2.2 * len(strips)))
    gs = fig.add_gridspec(len(clips) + len(strips), 1, height_ratios=[3.2] * len(clips) + [2.2] * len(strips))
    cmap = plt.get_cmap("tab20")
    for i, clip in enumerate(clips):
        sub = gs[i].subgridspec(1, 2)
        for j, (key, name) in enumerate((("ms-ssim-rgb", "MS-SSIM (higher better)"),
                                         ("st-lpips", "ST-LPIPS (lower better)"))):
            ax = fig.add_subplot(sub[j])
            ks = sorted({r["k"] for r in clip["rows"]})
            width = 0.8 / len(labels)
            for li, lab in enumerate(labels):
                vals = [next((r[key] for r in clip["rows"] if r["k"] == k and r["sampler"] == lab), None) for k in ks]
                xs = [x + (li - len(labels) / 2) * width for x in range(len(ks))]
                ax.bar([x for x, v in zip(xs, vals) if v is not None], [v for v in vals if v is not None],
                       width=width, color=cmap(li % 20), label=lab)
            ax.set_xticks(range(len(ks)), [f"k={k}" for k in ks])
            ax.set_title(f"{clip['clip']}: {name}", fontsize=9)
            if key == "ms-ssim-rgb":
                lo = min(r[key] for r in clip["rows"] if r[key] is not None)
                ax.set_ylim(max(0, lo - 0.05), None)
            if i == 0 and j == 1:
                ax.legend(fontsize=6, ncol=2, loc="upper right")
    for i, (name, strip) in enumerate(strips.items()):
        sub = gs[len(clips) + i].subgridspec(1, len(strip))
        for j, (lab, img) in enumerate(strip.items()):
            ax = fig.add_subplot(sub[j])
            ax.imshow(img.permute(1, 2, 0).clamp(0, 1).numpy())
            ax.set_title(lab if j else f"{name}\noriginal", fontsize=7)
            ax.axis("off")
    fig.suptitle(f"detail samplers at equal bytes (model {doc['model']}); strips: frame {STRIP_FRAME}, k = {STRIP_K}")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="tiny")
    ap.add_argument("--frames", type=int, default=30)
    ap.add_argument("--clips", nargs="*", default=None)
    ap.add_argument("--grid", default="full", choices=("full", "short"),
                    help="sampler grid (full: T in 0.5/0.8/1.0 x top-k 0/5/20, copy, mean variants)")
    ap.add_argument("--short-for-large", type=int, default=100_000,
                    help="use the short grid for clips with more pixels per frame than this")
    ap.add_argument("--ks", default="2,3,4,5")
    ap.add_argument("--out", default=str(RESULTS))
    ap.add_argument("--reuse", action="store_true", help="only merge existing per-clip parts and plot")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    parts = out / "sampler_study_parts"
    parts.mkdir(parents=True, exist_ok=True)
    clips = [Path(c) for c in args.clips] if args.clips else CLIPS
    ks = [int(x) for x in args.ks.split(",")]
    codec = None if args.reuse else evaluate.load_codec(args.model)
    docs = []
    for clip in clips:
        part = parts / f"{clip.stem}.json"
        if args.reuse:
            if part.is_file():
                docs.append(json.loads(part.read_text()))
            continue
        if not clip.is_file():
            print(f"(skipping {clip.name}: not present)")
            continue
        video, _ = load_clip(clip, 1)
        g = "short" if video.shape[-1] * video.shape[-2] > args.short_for_large else args.grid
        res = study_clip(codec, clip, args.frames, ks, grid(g), parts,
                         on_k=lambda d: part.write_text(json.dumps({**d, "model": args.model, "grid": g}, indent=1)))
        res["model"], res["grid"] = args.model, g
        part.write_text(json.dumps(res, indent=1) + "\n")
        docs.append(res)
    doc = {"model": args.model, "frames": args.frames, "ks": ks, "metrics": {k: rdeval.METRICS.get(k) for k in KEYS},
           "clips": docs}
    doc["summary"] = summary(doc)
    print("\n" + table(doc))
    print("\n" + json.dumps(doc["summary"], indent=1))
    (out / "sampler_study.json").write_text(json.dumps(doc, indent=1) + "\n")
    strips = {}
    for c in docs:
        f = parts / f"{c['clip']}_strip.pt"
        if f.is_file():
            strips[c["clip"]] = torch.load(f, weights_only=True)
    plot(doc, strips, out / "sampler_study.png")
    print(f"\nwrote {out / 'sampler_study.json'} and {out / 'sampler_study.png'}")


if __name__ == "__main__":
    main()
