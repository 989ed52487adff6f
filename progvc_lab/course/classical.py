"""Against classical codecs, frame by frame (notebook 14): x264 and x265 at the bytes of each cut.

::

    from progvc_lab.course import classical
    rows, frames = classical.same_bytes_ladder(codec, video, fps, ks=(3, 4, 5, 6))
    classical.plot_frames_grid(video, frames[6], picks=(0, 4, 7))

For every k the stream cut after k scales has some number of bytes; ``rdeval.matched_baseline`` finds
the CRF whose x264 (x265) file is closest to it (``-tune psnr``, SEI removed, as ``progvc_lab.baselines``
counts them). Every decode is scored by the one ``rdeval.score`` (PSNR-Y, MS-SSIM, ST-LPIPS, ...).
Below CRF 51's size the baselines cannot match the bytes: the row says so (``matched`` False).
"""
from __future__ import annotations

import torch

SHOWN_METRICS = ("psnr-y", "ms-ssim-rgb", "st-lpips")


def same_bytes_ladder(codec, video: torch.Tensor, fps, ks=(3, 4, 5, 6), baselines=("x264", "x265"),
                      perceptual: bool = True, tolerance: float = 0.15) -> tuple[list[dict], dict]:
    """Rows {k, codec, bytes, crf, matched, bpp, <metrics>} for ours and each baseline at every k, and the
    decoded videos {k: {label: (T, 3, H, W)}}. ``matched``: the baseline's bytes are within ``tolerance``
    (relative) of ours."""
    from .. import bitstream, rdeval
    from ..metrics import bpp

    T, H, W = video.shape[0], video.shape[-2], video.shape[-1]
    data = codec.encode(video, fps)
    rows, frames = [], {}
    for k in ks:
        cut = bitstream.truncate(data, k)
        ours = codec.decode(cut)
        frames[k] = {f"ours k={k}": ours}
        rows.append({"k": k, "codec": "ours", "bytes": len(cut), "crf": None, "matched": True,
                     "bpp": bpp(len(cut), T, H, W), **_scores(rdeval.score(video, ours, perceptual=perceptual))})
        for name in baselines:
            point = rdeval.matched_baseline(video, len(cut), codec=name)
            frames[k][f"{name} CRF {point.crf}"] = point.decoded
            rows.append({"k": k, "codec": name, "bytes": int(point.bytes), "crf": int(point.crf),
                         "matched": abs(point.bytes - len(cut)) <= tolerance * len(cut),
                         "bpp": bpp(int(point.bytes), T, H, W),
                         **_scores(rdeval.score(video, point.decoded, perceptual=perceptual))})
    return rows, frames


def _scores(s: dict) -> dict:
    return {key: s.get(key) for key in SHOWN_METRICS}


def format_rows(rows: list[dict]) -> str:
    """The ladder as a text table."""
    head = f"{'k':>2} {'codec':>6} {'bytes':>6} {'CRF':>4} {'PSNR-Y':>7} {'MS-SSIM':>8} {'ST-LPIPS':>9}"
    out = [head]
    for r in rows:
        crf = "" if r["crf"] is None else str(r["crf"])
        note = "" if r["matched"] else "  (cannot get this small: its lowest rate)"
        lp = "n/a" if r["st-lpips"] is None else f"{r['st-lpips']:.3f}"
        ms = "n/a" if r["ms-ssim-rgb"] is None else f"{r['ms-ssim-rgb']:.4f}"
        out.append(f"{r['k']:>2} {r['codec']:>6} {r['bytes']:>6} {crf:>4} {r['psnr-y']:>7.2f} {ms:>8} {lp:>9}{note}")
    return "\n".join(out)


def plot_frames_grid(original: torch.Tensor, decoded_by_label: dict, picks=(0, 4, 7)):
    """Rows = frames ``picks``, columns = original and each decode: the same frames side by side."""
    import matplotlib.pyplot as plt

    from ..metrics import psnr

    labels = ["original", *decoded_by_label]
    picks = [t for t in picks if t < original.shape[0]]
    fig, axes = plt.subplots(len(picks), len(labels), figsize=(2.4 * len(labels), 2.0 * len(picks)), squeeze=False)
    for i, t in enumerate(picks):
        for j, label in enumerate(labels):
            frame = original[t] if label == "original" else decoded_by_label[label][t]
            ax = axes[i][j]
            ax.imshow(frame.permute(1, 2, 0).clamp(0, 1).numpy(), interpolation="nearest")
            title = f"{label}, frame {t}"
            if label != "original":
                title += f"\n{psnr(frame[None], original[t][None]):.1f} dB"
            ax.set_title(title, fontsize=7)
            ax.axis("off")
    fig.tight_layout()
    plt.close(fig)
    return fig
