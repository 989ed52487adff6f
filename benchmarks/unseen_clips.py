"""The shipped model on clips it never saw in training: the numbers in the README.

For each held-out clip (Foreman and Akiyo from data/, Big Buck Bunny from ../shared when present):
one encode, then every truncation level k decoded from its real truncated bytes (bpp with the header,
PSNR-RGB, PSNR-YUV (6Y+U+V)/8, MS-SSIM), and the context model's bits per token against the static
per-scale unigram of the training data, per scale. Prints markdown tables and writes
``outputs/unseen/results.json`` (CompressAI format, one entry per clip) and ``rd_curves.png``.

    python benchmarks/unseen_clips.py [--model tiny] [--frames 30]
"""
import argparse
import json
from pathlib import Path

from progvc_lab import evaluate
from progvc_lab.data import load_clip, sample_clip_path
from progvc_lab.resources import REPO_ROOT, shared_path
from progvc_lab.viz.figures import plot_rd_curve

ROOT = REPO_ROOT
CLIPS = [sample_clip_path("foreman"), sample_clip_path("akiyo"),
         shared_path("data", "clips", "bigbuckbunny_416x240_60f.y4m")]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="tiny")
    ap.add_argument("--frames", type=int, default=30)
    ap.add_argument("--out", default=str(ROOT / "outputs" / "unseen"))
    args = ap.parse_args()
    codec = evaluate.load_codec(args.model)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results, jsons = [], []
    for clip in CLIPS:
        if not clip.is_file():
            print(f"(skipping {clip.name}: not present)")
            continue
        video, fps = load_clip(clip, args.frames)
        res = evaluate.rate_points(codec, video, fps, name=clip.stem)
        stats = codec.analyze(video, fps=fps)
        results.append(res)
        js = evaluate.to_compressai(res, description="held-out clip, never trained on")
        js["context_model"] = {k: stats[k] for k in ("ratio_to_unigram", "ratio_to_unigram_per_scale",
                                                    "bits_per_token_per_scale", "unigram_bits_per_token_per_scale")}
        jsons.append(js)
        print(f"\n#### {clip.stem}: {res['frames']} frames {res['width']}x{res['height']}, "
              f"encode {res['encode_fps']:.1f} frames/s\n")
        print("| k | bytes | bpp | PSNR-RGB | PSNR-YUV | MS-SSIM | decode f/s |")
        print("|---|---|---|---|---|---|---|")
        for p in res["points"]:
            ms = f"{p['ms_ssim']:.3f}" if p["ms_ssim"] == p["ms_ssim"] and p["ms_ssim"] is not None else "n/a"
            print(f"| {p['k']} | {p['bytes']} | {p['bpp']:.4f} | {p['psnr_rgb']:.2f} | {p['psnr_yuv']:.2f} | "
                  f"{ms} | {p['decode_fps']:.1f} |")
        print("\n| scale | context model bits/token | unigram bits/token | ratio |\n|---|---|---|---|")
        for s, (b, u, r) in enumerate(zip(stats["bits_per_token_per_scale"], stats["unigram_bits_per_token_per_scale"],
                                          stats["ratio_to_unigram_per_scale"])):
            print(f"| {s} | {b:.3f} | {u:.3f} | {r:.3f} |")
        print(f"| all | | | **{stats['ratio_to_unigram']:.3f}** |")
    (out / "results.json").write_text(json.dumps(jsons, indent=2) + "\n")
    plot_rd_curve({r["name"]: r["points"] for r in results}, title="tiny model on held-out clips",
                  path=out / "rd_curves.png")
    print(f"\nwrote {out / 'results.json'} and {out / 'rd_curves.png'}")


if __name__ == "__main__":
    main()
