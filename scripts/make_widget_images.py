"""Render the explorers' pictures as PNG files for the README (docs/images/).

One image per explorer, drawn with the same figure functions the widgets use (progvc_lab.viz.figures),
from the shipped tiny model on the first frames of the shipped Foreman clip:

    .venv/bin/python scripts/make_widget_images.py                  # -> docs/images/*.png
    .venv/bin/python scripts/make_widget_images.py --out /tmp/img --frames 4

Without the shipped checkpoint it stops (README pictures of a random model would mislead);
``--allow-random`` draws them with the random stand-in anyway (for trying the script out).
Each file is kept under 200 KB (a 256-colour palette, then a lower dpi, until it fits).
"""
from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
MAX_BYTES = 200_000


def palette_png(png: bytes) -> bytes:
    """The same picture with a 256-colour adaptive palette: photo-like figures shrink about 3x."""
    import io

    from PIL import Image

    out = io.BytesIO()
    Image.open(io.BytesIO(png)).convert("RGB").quantize(256).save(out, format="PNG", optimize=True)
    return out.getvalue()


def save(fig, path: Path, dpi: int = 100) -> int:
    from progvc_lab.viz import figure_to_png

    while True:
        png = figure_to_png(fig, dpi=dpi)
        if len(png) >= MAX_BYTES:
            png = palette_png(png)
        if len(png) < MAX_BYTES or dpi <= 40:
            break
        dpi = int(dpi * 0.8)
    if len(png) >= MAX_BYTES:
        raise SystemExit(f"{path.name} is {len(png)} bytes even at dpi {dpi}; simplify the figure")
    path.write_bytes(png)
    print(f"  {path.relative_to(REPO_ROOT) if path.is_relative_to(REPO_ROOT) else path}: "
          f"{len(png) / 1000:.0f} KB (dpi {dpi})")
    return len(png)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "docs" / "images")
    parser.add_argument("--clip", default="foreman", help="shipped clip name or a video file")
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--frame", type=int, default=4, help="the frame the per-frame figures show")
    parser.add_argument("--k", type=int, default=3, help="the truncation point the figures highlight")
    parser.add_argument("--allow-random", action="store_true",
                        help="use the random stand-in codec when the shipped checkpoint is missing")
    args = parser.parse_args(argv)

    import torch

    from progvc_lab.codec import PRETRAINED
    from progvc_lab.viz import ClipSession, figures, load_clip, load_demo_codec

    if not PRETRAINED["tiny"].is_file() and not args.allow_random:
        print(f"error: the shipped model {PRETRAINED['tiny']} is missing; README images need it "
              "(pass --allow-random to draw them with a random codec anyway)", file=sys.stderr)
        return 2
    torch.set_num_threads(1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        codec = load_demo_codec()
    video, fps, label = load_clip(args.clip, args.frames)
    S = ClipSession(codec, video, fps, label)
    K, t = S.num_scales, min(args.frame, S.num_frames - 1)
    k = min(max(args.k, 1), K)
    args.out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    print(f"{label}: {S.num_frames} frames {S.width}x{S.height}, model "
          f"{'random (untrained)' if 'demo_warning' in codec.meta else 'tiny'}, K = {K}")

    # token pyramid explorer
    save(figures.plot_token_pyramid(S.tokens, t, codec.quantizer.codebook_size,
                                       codebook=codec.quantizer.codebook.weight), args.out / "token_pyramid.png")
    save(figures.plot_partial_reconstructions(codec, S.tokens, S.latent_hw, S.size, t, original=video[t]),
         args.out / "partial_reconstructions.png")
    save(figures.plot_scale_step(video[t], S.tokens[k - 1][t], S.recon_frame(k, t), k - 1,
                                 codec.quantizer.codebook_size, codebook=codec.quantizer.codebook.weight),
         args.out / "scale_step.png")
    # mask explorer
    for name in ("var", "infinitystar", "progvc_sparse"):
        save(figures.plot_mask(name, 3, 4, 1), args.out / f"mask_{name}.png")
    # truncation explorer
    save(figures.plot_bits_per_scale(S.bytes_per_scale, k, file_bytes=(len(S.truncated(k)), len(S.data))), args.out / "bits_per_scale.png")
    save(figures.plot_rd_curve(S.rd_points(), highlight=k), args.out / "rd_curve.png")
    # bits heatmap explorer
    save(figures.plot_bits_heatmap(S.bits_maps, t), args.out / "bits_heatmap.png")
    # sampler explorer
    frames = {f"zero-fill, k={k}": S.decoded_frame(k, t),
              f"argmax, k={k}": S.decoded_frame(k, t, "argmax"),
              f"sample, k={k}, T=1": S.decoded_frame(k, t, "sample", temperature=1.0, top_k=0, seed=0),
              f"all {K} scales": S.decoded_frame(K, t)}
    save(figures.plot_sampler_comparison(frames, original=video[t]), args.out / "sampler_comparison.png")
    print(f"done in {time.perf_counter() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
