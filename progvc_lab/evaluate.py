"""Rate-distortion evaluation and the demo, callable from Python.

The CLI (``progvc-lab demo | eval``) and the notebooks call these functions; none of them
prints unless asked (``progress=True`` shows tqdm bars on a terminal).

One encode yields every rate point: ``bitstream.truncate`` cuts the stream to k = 1..K scales
without re-encoding, and each truncated stream is decoded from its real bytes::

    video ──encode──► stream (K scales) ──truncate(k)──► bytes_k ──decode──► video_k ──► metrics
                                                         (bpp from len(bytes_k), header included)

Metrics (``progvc_lab.metrics``): bpp = file bytes * 8 / (frames * H * W); PSNR-RGB (mean over
frames); PSNR-YUV weighted (6Y + U + V) / 8 on 8-bit BT.601 4:2:0 (even frame sizes only);
MS-SSIM on RGB (frames over 96 px; a 7-tap window for 97..160 px, see ``metrics.ms_ssim``).

The speed benchmark (``progvc-lab bench``) lives in ``progvc_lab.bench``.
"""
from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch

from . import metrics
from .codec import Codec
from .data.clips import default_clips, load_clip, shared_clips_dir  # noqa: F401  (kept importable from here)
from .resources import REPO_ROOT  # noqa: F401  (kept importable from here)

SHARED_CLIPS = shared_clips_dir()


# ---- loading ---------------------------------------------------------------------------------------
# ``progvc-lab --trust-class-paths``: model files may name stage classes outside progvc_lab that are not
# registered in this process (importing them runs their module). Off by default; the CLI sets it.
TRUST_CLASS_PATHS = False


def load_codec(model: str | Path | Codec = "tiny", *, trust_class_paths: bool | None = None) -> Codec:
    """A codec from a shipped name ("tiny"), a .pt saved with ``Codec.save``, or a Codec (as is).
    ``trust_class_paths``: see ``Codec.load`` (None: ``TRUST_CLASS_PATHS``, what the CLI's flag sets)."""
    if isinstance(model, Codec):
        return model
    if Path(model).suffix in (".pt", ".pth", ".ckpt") and not Path(model).exists():
        raise FileNotFoundError(f"no model file at {model} (give a .pt saved with Codec.save, or 'tiny')")
    trust = TRUST_CLASS_PATHS if trust_class_paths is None else trust_class_paths
    return Codec.from_pretrained(str(model), trust_class_paths=trust)


# ---- one clip: every truncation level ------------------------------------------------------------------
def rate_points(codec: Codec, video: torch.Tensor, fps=Fraction(25), name: str = "clip",
                frame_index: int | None = None, progress: bool = False) -> dict:
    """Encode once, then truncate to k = 1..K scales and decode each level from its real bytes.

    Returns ``{"name", "frames", "height", "width", "encode_fps", "points": [{k, bytes, bpp,
    psnr_rgb, psnr_yuv, ms_ssim, decode_fps}], "frame_index", "original_frame", "frames_by_k"}``
    (the last two: one frame at every k, for pictures). The walk and the scores are
    ``rdeval.our_points`` / ``rdeval.score`` (zero-fill, no perceptual metrics); ``psnr_yuv`` is the
    (6Y+U+V)/8 weighting, None where a metric does not apply.
    """
    from tqdm.auto import tqdm

    from . import rdeval

    video = Codec.check_video(video)
    T, _, H, W = video.shape
    frame_index = T // 2 if frame_index is None else frame_index
    bar = tqdm(total=codec.quantizer.num_scales, desc=f"{name}: decode k", disable=not progress or None,
               leave=False)
    ours = rdeval.our_points(codec, video, fps, ("zero",), perceptual=False, progress=bar, keep_frame=frame_index)
    bar.close()
    points = [{"k": p["k"], "bytes": p["bytes"], "bpp": p["bpp"], "psnr_rgb": p["psnr-rgb"],
               "psnr_yuv": p["psnr-yuv611"], "ms_ssim": p["ms-ssim-rgb"], "decode_fps": T / p["decode_seconds"]}
              for p in ours["curves"]["zero"]]
    return {"name": name, "frames": T, "height": H, "width": W, "encode_fps": T / ours["encode_seconds"],
            "encode_seconds": ours["encode_seconds"], "points": points, "frame_index": frame_index,
            "original_frame": video[frame_index], "frames_by_k": ours["frames_by_k"]}


def to_compressai(result: dict, description: str = "") -> dict:
    """One clip's ``rate_points`` result in CompressAI's JSON layout (one entry per k)."""
    pts = result["points"]
    more = {"scales": [p["k"] for p in pts], "bytes": [p["bytes"] for p in pts],
            "decode_fps": [p["decode_fps"] for p in pts]}
    if all(p["ms_ssim"] is not None for p in pts):
        more["ms_ssim"] = [p["ms_ssim"] for p in pts]
    if all(p["psnr_yuv"] is not None for p in pts):
        more["psnr_yuv"] = [p["psnr_yuv"] for p in pts]
        more["psnr_yuv_weighting"] = "(6Y+U+V)/8 on 8-bit BT.601 limited-range YUV 4:2:0"
    if any(p["psnr_rgb"] is None for p in pts):  # lossless frames: JSON has no inf
        raise ValueError("a decoded level is identical to the original (infinite PSNR); nothing to plot")
    description = description or (f"progvc_lab, one encode truncated to k = 1..{len(pts)} scales; "
                                   f"{result['frames']} frames {result['width']}x{result['height']}")
    out = metrics.compressai_json(result["name"], description, [p["bpp"] for p in pts],
                                  [p["psnr_rgb"] for p in pts], **more)
    out["encode_fps"] = result["encode_fps"]
    return out


# ---- figures --------------------------------------------------------------------------------------------
def plot_frames_by_k(result: dict, path: str | Path):
    """The original frame and the same frame decoded at every k, side by side."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    levels = sorted(result["frames_by_k"])
    by_k = {p["k"]: p for p in result["points"]}
    panels = [("original", result["original_frame"])] + [
        (f"k={k}  {by_k[k]['bpp']:.3f} bpp\n{by_k[k]['psnr_rgb']:.1f} dB", result["frames_by_k"][k])
        for k in levels]
    fig, axes = plt.subplots(1, len(panels), figsize=(2.2 * len(panels), 2.4))
    for ax, (label, frame) in zip(np.atleast_1d(axes), panels):
        ax.imshow(frame.permute(1, 2, 0).clamp(0, 1).numpy(), interpolation="nearest")
        ax.set_title(label, fontsize=8)
        ax.axis("off")
    fig.suptitle(f"{result['name']}: frame {result['frame_index']} at every truncation level", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)


# ---- tables -----------------------------------------------------------------------------------------------
def format_table(result: dict) -> str:
    """The per-k table of ``rate_points`` as text."""
    def num(x, fmt):
        return "n/a" if x is None else format(x, fmt)

    lines = [f"{'k':>2} {'bytes':>8} {'bpp':>8} {'PSNR-RGB':>9} {'PSNR-YUV':>9} {'MS-SSIM':>8} "
             f"{'enc f/s':>8} {'dec f/s':>8}"]
    for p in result["points"]:
        lines.append(f"{p['k']:>2} {p['bytes']:>8} {p['bpp']:>8.4f} {num(p['psnr_rgb'], '9.2f'):>9} "
                     f"{num(p['psnr_yuv'], '9.2f'):>9} {num(p['ms_ssim'], '8.4f'):>8} "
                     f"{result['encode_fps']:>8.1f} {p['decode_fps']:>8.1f}")
    return "\n".join(lines)


def format_analysis(analysis: dict) -> str:
    """Context-model bits per token against the static per-scale unigram of the training data."""
    lines = [f"{'scale':>5} {'tokens':>7} {'model bits/token':>16} {'unigram bits/token':>18} {'ratio':>6}"]
    rows = zip(analysis["tokens_per_scale"], analysis["bits_per_token_per_scale"],
               analysis["unigram_bits_per_token_per_scale"], analysis["ratio_to_unigram_per_scale"])
    for s, (n, b, u, r) in enumerate(rows):
        lines.append(f"{s:>5} {n:>7} {b:>16.3f} {u:>18.3f} {r:>6.3f}")
    lines.append(f"all scales: context model / unigram = {analysis['ratio_to_unigram']:.3f} "
                 "(unigram = static per-scale token histogram counted on the training data)")
    return "\n".join(lines)


# ---- demo and eval ---------------------------------------------------------------------------------------------
def run_demo(model="tiny", clip: str | Path | None = None, out: str | Path = "outputs/demo",
             frames: int | None = None, progress: bool = False, log=print) -> dict:
    """Encode a clip once, decode every truncation level, write rd_curve.png, frames_by_k.png and
    results.json into ``out`` (files of those names there are replaced: ``out`` is the demo's own
    folder). Returns the ``rate_points`` result plus ``analysis`` and ``files``."""
    from .data import clip_path

    codec = load_codec(model)
    clip = clip_path(clip)
    video, fps = load_clip(clip, frames)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    log(f"clip {clip} : {video.shape[0]} frames {video.shape[-1]}x{video.shape[-2]} @ {float(fps):.2f} fps")
    result = rate_points(codec, video, fps, name=clip.stem, progress=progress)
    log(format_table(result))
    log("encode f/s: one encode for all k; dec f/s: decoding the truncated stream of each k")
    analysis = codec.analyze(video, fps)
    log(format_analysis(analysis))
    from .viz.figures import plot_rd_curve

    plot_rd_curve({result["name"]: result["points"]}, title="progvc_lab: one encode, K rate points",
                  path=out / "rd_curve.png")
    files = {"rd_curve": out / "rd_curve.png",
             "frames_by_k": plot_frames_by_k(result, out / "frames_by_k.png"),
             "results": out / "results.json"}
    files["results"].write_text(json.dumps(to_compressai(result), indent=2) + "\n")
    same = same_bytes_comparison(result, clip, video, fps, out / "same_bytes.png", log=log)
    if same is not None:
        files["same_bytes"] = same["file"]
        _close(same.pop("figure"))
    for f in files.values():
        log(f"wrote {f}")
    result.update(analysis=analysis, files=files, same_bytes=same)
    return result


def same_bytes_comparison(result: dict, clip, video, fps, path=None, k: int | None = None, codec: str = "x265",
                          log=print) -> dict | None:
    """x265 at (about) the bytes of our stream cut at k scales (default: all), frame beside frame.

    ``result`` is ``rate_points`` of the first frames of ``clip`` (``video``). Scores both with
    ``rdeval.score``; the figure (original | ours | x265) is ``["figure"]`` and is written to ``path``
    when given. Without ffmpeg or its encoder it says so and returns None (the demo must run on a
    machine without ffmpeg).
    """
    from . import baselines, rdeval

    ok, why = baselines.available(codec)
    if not ok:
        log(f"{codec} comparison skipped: {why}")
        return None
    by_k = {p["k"]: p for p in result["points"]}
    k = max(by_k) if k is None else k
    ours = by_k[k]
    base = rdeval.matched_baseline(clip, ours["bytes"], codec, max_frames=video.shape[0])
    q_base = rdeval.score(video, base.decoded, perceptual=False)
    i = result["frame_index"]
    ms = lambda x: "n/a" if x is None else f"{x:.3f}"
    ours_label = f"progvc_lab k={k}: {ours['bytes']} B, {ours['bpp']:.4f} bpp\nMS-SSIM {ms(ours['ms_ssim'])}"
    base_label = (f"{codec} veryslow crf {base.crf}: {base.bytes} B, {base.bpp:.4f} bpp\n"
                  f"MS-SSIM {ms(q_base['ms-ssim-rgb'])}")
    fig = rdeval.plot_same_bytes(result["original_frame"], result["frames_by_k"][k], ours_label,
                                 base.decoded[i], base_label, path,
                                 title=f"{result['name']}, frame {i}: the same budget, two codecs")
    log(f"same bytes: ours k={k} {ours['bytes']} B (MS-SSIM {ms(ours['ms_ssim'])}) vs {codec} crf {base.crf} "
        f"{base.bytes} B (MS-SSIM {ms(q_base['ms-ssim-rgb'])}); {codec} command: {base.commands[0]}")
    return {"k": k, "ours_bytes": ours["bytes"], "baseline": codec, "crf": base.crf, "baseline_bytes": base.bytes,
            "baseline_ms_ssim": q_base["ms-ssim-rgb"], "baseline_psnr_y": q_base["psnr-y"],
            "ours_ms_ssim": ours["ms_ssim"], "commands": base.commands, "file": None if path is None else Path(path),
            "baseline_frame": base.decoded[i], "figure": fig}


def _close(fig):
    import matplotlib.pyplot as plt

    plt.close(fig)


def run_eval(model="tiny", clips=None, out: str | Path | None = "outputs/eval", frames: int | None = None,
             progress: bool = False, log=print, samplers=("zero",), baselines=("x264", "x265"),
             json_path=None, plot_path=None, perceptual: bool = True, force: bool = False,
             lambdas=None) -> dict:
    """``progvc-lab eval``: ours (one encode, every k, every sampler; the full pyramid at every RD
    lambda of ``lambdas``, default ``rdeval.LAMBDA_LADDER``, none when empty) against x264/x265 on each clip.

    See ``progvc_lab.rdeval``. Writes into ``out`` (the tool's own folder, replaced on every run):
    ``eval.json`` (the whole document), ``rd.png`` and one CompressAI JSON per clip and codec
    (``<clip>.json`` is ours with the first sampler, ``<clip>.<codec>.json`` the others); ``json_path``
    and ``plot_path`` are extra copies that are never replaced without ``force``. Returns the document.
    """
    from . import rdeval

    lambdas = rdeval.LAMBDA_LADDER if lambdas is None else lambdas
    doc = rdeval.evaluate_clips(clips, model, samplers, baselines, frames, perceptual, progress, log=log,
                                lambdas=lambdas)
    written = []
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        written.append(rdeval.write_json(doc, out / "eval.json", force=True))
        _close(rdeval.plot_rd(doc, out / "rd.png", force=True))
        written.append(out / "rd.png")
        for res in doc["clips"]:
            stem = res["name"] + (".shared" if Path(res["clip"]).parent == SHARED_CLIPS else "")
            for i, rec in enumerate(res["codecs"]):
                tag = rec.get("codec") + ("-" + rec["sampler"] if rec.get("sampler") else "") + \
                    ("-" + rec["ladder"] if rec.get("ladder") else "")
                name = f"{stem}.json" if i == 0 else f"{stem}.{tag}.json"
                (out / name).write_text(json.dumps(rec, indent=1) + "\n")
    if json_path:
        written.append(rdeval.write_json(doc, json_path, force=force))
    if plot_path:
        _close(rdeval.plot_rd(doc, plot_path, force=force))
        written.append(Path(plot_path))
    if log:
        log("\n" + rdeval.summary_table(doc))
        for f in written:
            log(f"wrote {f}")
    return doc


# ---- bench: moved to progvc_lab.bench (kept importable from here) ------------------------------------------
def __getattr__(name):
    if name in ("StageTimer", "timed_stages", "chunk_overhead", "run_bench", "format_bench_run"):
        from . import bench

        return getattr(bench, name)
    raise AttributeError(name)
