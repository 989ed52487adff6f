"""``progvc-lab eval``: our codec and x264/x265 on the same clips, scored by the same code.

::

    clip ──► ours:  encode ONCE ──truncate(k)──► bytes_k ──decode(sampler)──► video_k ─┐
         └─► x264 / x265 (ffmpeg, veryslow, -tune psnr, CRF ladder) ──► decoded ───────┤
                                                                                       ▼
                        score(): bpp, PSNR-Y/U/V/RGB, PSNR-YUV (6Y+U+V)/8, MS-SSIM (Y, RGB),
                                 ST-LPIPS, GMSD, texture-energy ratio      (one function for all)
                                                                                       ▼
                        summary: BD-rate (ours vs each baseline, per metric, over the shared
                                 quality range, or "no overlap"), quality gap at equal rate,
                                 best quality at <= 0.05 bpp, encode/decode frames/s

Every rate point of ours is a real file: a stream cut after k scales, header included, decoded by
the real decoder. Every baseline point is a raw elementary stream with the encoder-information SEI
removed (``progvc_lab.baselines``). bpp = file bytes * 8 / (frames * W * H).

The JSON document (``evaluate_clips(...)`` returns it, ``--json`` writes it) holds, per clip, one
CompressAI-style entry per codec (``name``, ``description``, ``results`` with ``bpp``, ``bitrate``
in kbps and one list per metric; integers stay integers) and a ``summary`` with the BD-rates and gaps.
"""
from __future__ import annotations

import json
import math
import platform
import time
import warnings
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch

from . import bitstream, metrics

# metric key -> (plot label, higher is better, definition)
METRICS = {
    "psnr-y": ("PSNR-Y (dB)", True, "PSNR of the 8-bit BT.601 limited-range Y plane, mean over frames"),
    "psnr-u": ("PSNR-U (dB)", True, "PSNR of the 8-bit U plane (4:2:0), mean over frames"),
    "psnr-v": ("PSNR-V (dB)", True, "PSNR of the 8-bit V plane (4:2:0), mean over frames"),
    "psnr-rgb": ("PSNR-RGB (dB)", True, "PSNR on RGB in [0, 1], mean over frames"),
    "psnr-yuv611": ("PSNR-YUV 6:1:1 (dB)", True,
                    "(6 PSNR-Y + PSNR-U + PSNR-V) / 8 (DCVC's weighting; NOT CompressAI's psnr-yuv, which is (4Y+U+V)/6)"),
    "ms-ssim-rgb": ("MS-SSIM (RGB)", True, "MS-SSIM on RGB, pytorch_msssim, mean over frames"),
    "ms-ssim-y": ("MS-SSIM (Y)", True, "MS-SSIM on the 8-bit Y plane scaled to [0, 1]"),
    "st-lpips": ("ST-LPIPS (alex, lower is better)", False,
                 "shift-tolerant LPIPS, AlexNet, weights of the stlpips-pytorch wheel, mean over up to 10 evenly spaced frames"),
    "gmsd": ("GMSD (lower is better)", False, "gradient magnitude similarity deviation on luma (Xue et al. 2014)"),
    "texture-ratio": ("texture energy ratio", True,
                      "mean squared Laplacian of luma, decoded / original: < 1 blurred, ~1 as detailed"),
}
BD_METRICS = ("psnr-y", "ms-ssim-rgb", "st-lpips")
PERCEPTUAL_FRAMES = 10   # ST-LPIPS on this many evenly spaced frames per clip (see score)
PLOT_METRICS = ("psnr-y", "ms-ssim-rgb", "st-lpips")
LOW_RATE_BPP = 0.05
SAMPLERS = ("zero", "argmax", "sample", "mean", "copy")


class EvalError(ValueError):
    """The evaluation cannot run as asked (a missing encoder or metric, an unknown sampler, ...)."""


# ---- scoring: ONE function for every decode of every codec ------------------------------------------
def perceptual_frame_indices(num_frames: int, max_frames: int = PERCEPTUAL_FRAMES) -> torch.Tensor:
    """The frames ST-LPIPS is computed on: ``max_frames`` evenly spaced ones, first and last included
    (all of them for short clips). The same frames for every codec."""
    n = min(num_frames, max_frames)
    return torch.linspace(0, num_frames - 1, n).round().long().unique()


def score(original: torch.Tensor, decoded: torch.Tensor, perceptual: bool = True,
          perceptual_frames: int = PERCEPTUAL_FRAMES) -> dict:
    """Every quality metric of ``decoded`` against ``original`` (both (T, 3, H, W) RGB in [0, 1]).

    Keys are those of ``METRICS``; a metric that does not apply to this frame size is None (YUV 4:2:0
    needs even sides, MS-SSIM a smaller side over 96 px). ``perceptual=False`` skips ST-LPIPS and
    GMSD (None). ST-LPIPS (about 0.15 s per QCIF frame on one core) is the mean over
    ``perceptual_frames`` evenly spaced frames (``perceptual_frame_indices``); every other metric
    uses every frame.
    """
    from .data.color import rgb_to_yuv420

    original, decoded = original.float().clamp(0, 1), decoded.float().clamp(0, 1)
    if original.shape != decoded.shape:
        raise EvalError(f"decoded video {tuple(decoded.shape)} does not match the original {tuple(original.shape)}")
    T, _, H, W = original.shape
    out = {key: None for key in METRICS}
    out["psnr-rgb"] = _finite(metrics.psnr(original, decoded))
    even = H % 2 == 0 and W % 2 == 0
    if even:
        ref, dist = rgb_to_yuv420(original), rgb_to_yuv420(decoded)
        p = metrics.psnr_yuv420_planes(ref, dist)
        out.update({"psnr-y": _finite(p["y"]), "psnr-u": _finite(p["u"]), "psnr-v": _finite(p["v"]),
                    "psnr-yuv611": _finite(p["yuv"])})
        y_ref = torch.from_numpy(ref[0]).float()[:, None] / 255.0
        y_dist = torch.from_numpy(dist[0]).float()[:, None] / 255.0
    if min(H, W) > 96:
        out["ms-ssim-rgb"] = metrics.ms_ssim(original, decoded)
        if even:
            out["ms-ssim-y"] = metrics.ms_ssim(y_ref, y_dist)
    out["texture-ratio"] = _finite(metrics.texture_energy_ratio(decoded, original))
    if perceptual:
        from . import perceptual as pm

        idx = perceptual_frame_indices(T, perceptual_frames)
        out["st-lpips"] = pm.st_lpips(original[idx], decoded[idx])
        out["gmsd"] = pm.gmsd(original, decoded)
    return out


# Clips a shipped model was trained on although today's data module holds them out (the shipped
# "tiny" was trained before Carphone and Container joined the held-out list).
# Every variant that keeps tiny's tokenizer (its tokens were learned on those clips) inherits that.
SEEN_BY_SHIPPED = {name: ("carphone", "container") for name in
                   ("tiny", "tiny-fast", "tiny-lite", "tiny-gate", "tiny-var", "tiny-infinitystar", "tiny-sparse-parent")}


def seen_in_training(codec, clip, model_name: str = "") -> bool:
    """Whether ``codec`` saw ``clip`` in training by its own record (``meta["trained_on"]``, names) or,
    for a shipped model, by ``SEEN_BY_SHIPPED``. The data module's held-out list covers the rest."""
    names = list(getattr(codec, "meta", {}).get("trained_on", [])) + list(SEEN_BY_SHIPPED.get(model_name, ()))
    stem = Path(clip).name.lower()
    return any(n.lower() in stem for n in names)


def _finite(x):
    return None if x is None or not math.isfinite(x) else float(x)


def check_perceptual() -> None:
    """Raise EvalError (saying how to install) when the ST-LPIPS weights are not installed."""
    from . import perceptual as pm

    ok, message = pm.st_lpips_available()
    if not ok:
        raise EvalError(f"ST-LPIPS is not available: {message} (or pass --no-perceptual)")


# ---- ours --------------------------------------------------------------------------------------------
# ---- the truncation ladder: the one walk over k that every tool takes -----------------------------------
@dataclass
class Rung:
    """One rung of the truncation ladder: the stream that decodes to ``k`` scales and its decode.

    ``data``: the full stream cut after k scales (``bitstream.truncate``) or, for a mask that is not
    truncation safe, that clip's own encode with ``scales=k``; ``result``: the ``EncodeResult`` of that
    own encode (None when ``data`` is a cut of the full encode); ``decoded`` (T, 3, H, W) (None when not
    decoded) and ``decode_seconds``, the wall time of that decode."""
    k: int
    data: bytes
    decoded: torch.Tensor | None = None
    decode_seconds: float = 0.0
    result: object | None = None

    def point(self, num_frames: int, height: int, width: int) -> dict:
        """``{"k", "bytes", "bpp", "decode_seconds"}``: bpp of the real file, header included."""
        return {"k": self.k, "bytes": len(self.data), "bpp": metrics.bpp(len(self.data), num_frames, height, width),
                "decode_seconds": self.decode_seconds}


def stream_at(codec, data: bytes, k: int, video: torch.Tensor | None = None, fps=None):
    """(bytes, EncodeResult or None): the stream a receiver of k scales gets. A truncation-safe codec: the
    full stream ``data`` cut after k (no re-encode). Otherwise (VAR-like masks, whose coarse scales depend on
    the fine ones of earlier frames) a cut would not decode, so the clip is encoded again with
    ``scales=k``: pass ``video`` (and ``fps``)."""
    K = bitstream.describe(data)["scales_sent"]
    if k == K:
        return data, None
    if codec.truncation_safe:
        return bitstream.truncate(data, k), None
    if video is None:
        raise ValueError(f"the codec's mask ({codec.context_model.config.mask}) is not truncation safe: a stream "
                         f"cut after k = {k} does not decode; pass the video to encode it again at that k")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return codec.encode_with_stats(video, fps if fps is not None else Fraction(25), scales=k)


def ladder(codec, data: bytes, ks=None, *, video: torch.Tensor | None = None, fps=None, sampler="zero",
           decode: bool = True, known: dict | None = None, **sampler_args):
    """Yield a ``Rung`` for every k in ``ks`` (default 1..K): the stream of k scales (``stream_at``) decoded
    from its real bytes with ``sampler`` (a name or a sampler object; ``sampler_args`` such as ``seed``,
    ``temperature``). ``known``: {k: (decoded, seconds)} decodes the caller already has (e.g. the full
    stream's), reused instead of decoded again. ``decode=False``: the streams only. Warnings of cut
    streams ("stream truncated": cut on purpose here) are silenced.

    ``rdeval.our_points`` (``progvc-lab eval``), ``bench`` (frames/s at every k), ``bench_variants`` (every
    model and sampler at every k) and the explorers' ``ClipSession`` all walk k through this."""
    K = bitstream.describe(data)["scales_sent"]
    known = dict(known or {})
    for k in (range(1, K + 1) if ks is None else ks):
        data_k, res_k = stream_at(codec, data, k, video, fps)
        rung = Rung(k, data_k, result=res_k)
        if k in known:
            rung.decoded, rung.decode_seconds = known[k]
        elif decode:
            t0 = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                rung.decoded = codec.decode(data_k, sampler=sampler, **sampler_args)
            rung.decode_seconds = time.perf_counter() - t0
        yield rung


def our_points(codec, video: torch.Tensor, fps, samplers=("zero",), perceptual: bool = True,
               seed: int = 0, progress=None, keep_frame: int | None = None) -> dict:
    """One encode, then every truncation level k decoded from its real bytes, for each sampler.

    Returns ``{"data": full stream bytes, "encode_seconds", "scales": K, "curves": {sampler: [point]},
    "frames_by_k": {k: frame}}`` with ``point = {"k", "bytes", "bpp", "decode_seconds", **score}``;
    ``frames_by_k`` holds frame ``keep_frame`` of the first sampler's decodes (empty when None). At
    k = K there is nothing to fill, so every sampler shares that decode.
    """
    T, _, H, W = video.shape
    codec.encode(video[:1], fps)  # warm-up (coder import, first allocations): not timed
    t0 = time.perf_counter()
    data = codec.encode(video, fps)
    encode_s = time.perf_counter() - t0
    K = bitstream.describe(data)["scales_sent"]
    curves, full, frames_by_k = {}, None, {}
    for sampler in samplers:
        points = []
        args = {"seed": seed} if sampler in ("sample", "copy") else {}
        # at k = K there is nothing to fill: every sampler shares the first one's decode of the full stream
        for rung in ladder(codec, data, video=video, fps=fps, sampler=sampler,
                           known=None if full is None else {K: (None, 0.0)}, **args):
            if rung.k == K and full is not None:
                points.append(dict(full))
            else:
                point = {**rung.point(T, H, W), **score(video, rung.decoded, perceptual)}
                points.append(point)
                if rung.k == K:
                    full = point
                if keep_frame is not None and sampler == samplers[0]:
                    frames_by_k[rung.k] = rung.decoded[keep_frame]
            if progress is not None:
                progress.update(1)
        curves[sampler] = points
    return {"data": data, "encode_seconds": encode_s, "scales": K, "curves": curves, "frames_by_k": frames_by_k}



# the full pyramid at several RD trade-offs: lambda (latent squared error per bit, see ``Codec.encode``)
# is the rate knob *between* truncation levels; 0 is nearest-code encoding, the default 0.005 is the top
# of the truncation ladder
LAMBDA_LADDER = (0.0, 0.002, 0.01, 0.02, 0.05, 0.1)


def lambda_points(codec, video: torch.Tensor, fps, lambdas=LAMBDA_LADDER, perceptual: bool = True,
                  progress=None) -> list[dict]:
    """One full-pyramid encode per lambda, each decoded and scored by ``score``: the RD curve the
    encoder's rate knob (``encode --lambda``) gives, next to the truncation ladder of ``our_points``.

    Returns ``[{"k": K, "lambda", "bytes", "bpp", "encode_seconds", "decode_seconds", **score}]`` in the
    order of ``lambdas``."""
    T, _, H, W = video.shape
    points = []
    for lam in lambdas:
        t0 = time.perf_counter()
        data = codec.encode(video, fps, rdo_lambda=float(lam))
        enc_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        decoded = codec.decode(data)
        dec_s = time.perf_counter() - t0
        points.append({"k": int(bitstream.describe(data)["scales_sent"]), "lambda": float(lam), "bytes": len(data),
                       "bpp": metrics.bpp(len(data), T, H, W), "encode_seconds": enc_s, "decode_seconds": dec_s,
                       **score(video, decoded, perceptual)})
        if progress is not None:
            progress.update(1)
    return points

# ---- baselines ---------------------------------------------------------------------------------------
def baseline_points(source, video: torch.Tensor, codec: str, bpp_range, perceptual: bool = True,
                    max_frames: int | None = None) -> dict:
    """x264 / x265 over a CRF ladder spanning ``bpp_range``, every decode scored by ``score``.

    ``source`` is the clip's path (given to ffmpeg as it is) and ``video`` the frames we coded (the
    first ``max_frames`` of it), against which every decode is scored."""
    from . import baselines

    ladder = baselines.crf_ladder(source, codec, bpp_range=bpp_range, max_frames=max_frames)
    points = []
    for bp in ladder:
        points.append({"crf": int(bp.crf), "bytes": int(bp.bytes), "bpp": float(bp.bpp),
                       "encode_seconds": float(bp.encode_seconds), "decode_seconds": float(bp.decode_seconds),
                       **score(video, bp.decoded, perceptual)})
    return {"points": points, "commands": [list(bp.commands) for bp in ladder],
            "settings": ladder[0].settings if ladder else {}}


def check_baselines(names) -> None:
    """Raise EvalError naming the missing encoder (never leave a baseline out silently)."""
    from . import baselines

    for name in names:
        ok, message = baselines.available(name)
        if not ok:
            raise EvalError(f"baseline {name} is not available: {message} (or pass --baselines none)")


# ---- CompressAI-style records -------------------------------------------------------------------------
def codec_record(name: str, description: str, points: list[dict], frames: int, fps, extra_lists=("k",),
                 float_lists=(), **more) -> dict:
    """``{"name", "description", "results": {"bpp", "bitrate" (kbps), <metric>: [...], ...}, **more}``.

    Integers (k, crf, bytes) stay integers; a metric that is None at every point is left out, one
    that is None at some points keeps its None there.
    """
    seconds = frames / float(fps)
    results = {"bpp": [float(p["bpp"]) for p in points],
               "bitrate": [p["bytes"] * 8 / seconds / 1000 for p in points],
               "bytes": [int(p["bytes"]) for p in points]}
    for key in extra_lists:
        if all(key in p for p in points):
            results[key] = [int(p[key]) for p in points]
    for key in float_lists:  # e.g. the lambda of each point of a lambda ladder
        if all(key in p for p in points):
            results[key] = [float(p[key]) for p in points]
    for key in METRICS:
        values = [p.get(key) for p in points]
        if any(v is not None for v in values):
            results[key] = [None if v is None else float(v) for v in values]
    results["decode-fps"] = [frames / p["decode_seconds"] for p in points]
    if all("encode_seconds" in p for p in points):
        results["encode-fps"] = [frames / p["encode_seconds"] for p in points]
    return {"name": name, "description": description, "results": results, **more}


# ---- summary: BD-rate and gaps --------------------------------------------------------------------------
def compare(anchor: dict, test: dict, metric_keys=BD_METRICS) -> dict:
    """BD-rate and quality gap of ``test`` (ours) against ``anchor`` (a baseline), per metric."""
    out = {}
    for key in metric_keys:
        ra, qa = _pairs(anchor, key)
        rt, qt = _pairs(test, key)
        higher = METRICS[key][1]
        if len(ra) < 2 or len(rt) < 2:
            out[key] = {"bd_rate": None, "overlap": None, "note": "metric not available on both curves",
                        "gap_at_equal_rate": []}
            continue
        report = metrics.bd_rate_report(ra, qa, rt, qt, higher_is_better=higher)
        gaps = metrics.quality_gap_at_rate(ra, qa, rt, qt, higher_is_better=higher)
        report["gap_at_equal_rate"] = [
            {"bpp": r, "ours": q, "baseline": None if g is None else q - g, "gap": g}
            for r, q, g in zip(rt, qt, gaps)]
        out[key] = report
    return out


def _pairs(record: dict, key: str):
    res = record["results"]
    if key not in res:
        return [], []
    pairs = [(r, q) for r, q in zip(res["bpp"], res[key]) if q is not None]
    return [p[0] for p in pairs], [p[1] for p in pairs]


def best_at_rate(record: dict, key: str, max_bpp: float = LOW_RATE_BPP):
    """The best value of ``key`` among the points at or below ``max_bpp``: (bpp, value) or None."""
    higher = METRICS[key][1]
    pts = [(r, q) for r, q in zip(*_pairs(record, key)) if r <= max_bpp]
    if not pts:
        return None
    return max(pts, key=lambda p: p[1] if higher else -p[1])


def low_rate_row(ours: dict, anchor: dict, key: str, max_bpp: float = LOW_RATE_BPP) -> dict:
    """Our best ``key`` at <= max_bpp and the anchor's quality interpolated at that same rate."""
    best = best_at_rate(ours, key, max_bpp)
    if best is None:
        return {"bpp": None, "ours": None, "baseline": None, "note": f"no point of ours at <= {max_bpp} bpp"}
    ra, qa = _pairs(anchor, key)
    higher = METRICS[key][1]
    gap = (metrics.quality_gap_at_rate(ra, qa, [best[0]], [best[1]], higher_is_better=higher)[0]
           if len(ra) >= 2 else None)
    row = {"bpp": best[0], "ours": best[1], "baseline": None if gap is None else best[1] - gap}
    if gap is None:
        row["note"] = "outside the baseline's rate range (no extrapolation)"
    return row


# ---- one clip and many ---------------------------------------------------------------------------------
def evaluate_clip(codec, clip, samplers=("zero",), baselines=("x264", "x265"), frames: int | None = None,
                  perceptual: bool = True, model_name: str = "tiny", progress: bool = False,
                  lambdas=LAMBDA_LADDER) -> dict:
    """Ours (every k, every sampler; the full pyramid at every lambda of ``lambdas``, none when empty)
    and the baselines on one clip; see the module docstring."""
    from tqdm.auto import tqdm

    from .data import is_held_out, read_video

    clip = Path(clip)
    video, fps = read_video(clip, max_frames=frames)
    video = codec.check_video(video)
    T, _, H, W = video.shape
    seen = not is_held_out(clip) or seen_in_training(codec, clip, model_name)
    K = codec.quantizer.num_scales
    bar = tqdm(total=len(samplers) * K + len(lambdas), desc=f"{clip.stem}: ours", disable=not progress or None,
               leave=False)
    ours = our_points(codec, video, fps, samplers, perceptual, progress=bar)
    lam_points = lambda_points(codec, video, fps, lambdas, perceptual, progress=bar) if lambdas else []
    bar.close()
    records = []
    for sampler, points in ours["curves"].items():
        records.append(codec_record(
            f"progvc_lab {model_name} ({sampler} fill)",
            f"one encode truncated to k = 1..{ours['scales']} scales, each decoded from its real bytes; "
            f"unsent scales filled by the {sampler!r} detail sampler",
            points, T, fps, extra_lists=("k",), codec="ours", sampler=sampler,
            encode_fps=T / ours["encode_seconds"], settings=dict(vars(codec.config))))
    if lam_points:
        lam_list = ", ".join(format(p["lambda"], "g") for p in lam_points)
        records.append(codec_record(
            f"progvc_lab {model_name} (full pyramid, lambda ladder)",
            f"one encode per RD lambda ({lam_list}), all "
            f"{K} scales sent, each decoded from its bytes: the rate knob between truncation levels",
            lam_points, T, fps, extra_lists=("k",), float_lists=("lambda",), codec="ours", sampler="zero",
            ladder="lambda", settings=dict(vars(codec.config))))
    bpps = [p["bpp"] for p in ours["curves"][samplers[0]] + lam_points]
    bpp_range = (min(bpps), max(bpps))
    # the baselines read the same file (its first T frames): no re-conversion of the source
    for name in tqdm(list(baselines), desc=f"{clip.stem}: baselines", disable=not progress or None, leave=False):
        b = baseline_points(clip, video, name, bpp_range, perceptual, max_frames=T)
        records.append(codec_record(
            name, f"{name} via ffmpeg, veryslow, -tune psnr, one intra frame then P/B, CRF ladder spanning "
                  f"our bpp range; bytes of the raw elementary stream without SEI",
            b["points"], T, fps, extra_lists=("crf",), codec=name, commands=b["commands"], settings=b["settings"]))
    summary = summarize(records)
    return {"clip": str(clip), "name": clip.stem, "frames": T, "width": W, "height": H,
            "fps": [fps.numerator, fps.denominator], "seen_in_training": seen, "codecs": records,
            "summary": summary}


def summarize(records: list[dict]) -> dict:
    """BD-rates, gaps and the low-rate table of every curve of ours against every baseline."""
    ours = [r for r in records if r.get("codec") == "ours"]
    anchors = [r for r in records if r.get("codec") != "ours"]
    out = {"bd_rate": {}, "low_rate": {}, "speed": {}}
    for r in records:
        res = r["results"]
        out["speed"][r["name"]] = {
            "encode_fps": r.get("encode_fps", float(np.median(res["encode-fps"])) if "encode-fps" in res else None),
            "decode_fps": float(np.median(res["decode-fps"]))}
    for o in ours:
        for a in anchors:
            key = f"{o['name']} vs {a['name']}"
            out["bd_rate"][key] = compare(a, o)
            out["low_rate"][key] = {m: low_rate_row(o, a, m) for m in BD_METRICS}
    return out


def evaluate_clips(clips=None, model="tiny", samplers=("zero",), baselines=("x264", "x265"),
                   frames: int | None = None, perceptual: bool = True, progress: bool = False,
                   log=None, lambdas=LAMBDA_LADDER) -> dict:
    """The whole evaluation: a JSON-ready document with every clip (see ``evaluate_clip``)."""
    from tqdm.auto import tqdm

    from .data.clips import default_clips
    from .evaluate import load_codec

    samplers = tuple(samplers)
    bad = [s for s in samplers if s not in SAMPLERS]
    if bad or not samplers:
        raise EvalError(f"unknown sampler(s) {bad or samplers}; choose from {', '.join(SAMPLERS)}")
    baselines = tuple(b for b in baselines if b and b != "none")
    clips = [Path(c) for c in clips] if clips else default_clips()
    if not clips:
        raise FileNotFoundError("no clips to evaluate: name some, or restore the shipped data/ folder")
    missing = [str(c) for c in clips if not c.is_file()]
    if missing:
        raise FileNotFoundError(f"no such clip: {', '.join(missing)}")
    check_baselines(baselines)
    if perceptual:
        check_perceptual()
    codec = load_codec(model)
    model_name = model if isinstance(model, str) and not str(model).endswith((".pt", ".pth")) else Path(str(model)).stem
    if not isinstance(model, (str, Path)):
        model_name = "given"
    lambdas = tuple(float(x) for x in lambdas)
    if any(not math.isfinite(x) or x < 0 for x in lambdas):
        raise EvalError(f"lambdas must be finite and >= 0, got {list(lambdas)}")
    doc = {"tool": "progvc-lab eval", "model": model_name, "samplers": list(samplers), "baselines": list(baselines),
           "lambdas": list(lambdas),
           "metrics": {k: {"label": v[0], "higher_is_better": v[1], "definition": v[2]} for k, v in METRICS.items()},
           "bpp_definition": "file bytes * 8 / (frames * width * height)",
           "environment": {"python": platform.python_version(), "torch": torch.__version__,
                           "machine": platform.machine(), "threads": torch.get_num_threads()},
           "clips": []}
    for clip in tqdm(clips, desc="eval clips", disable=not progress or None):
        res = evaluate_clip(codec, clip, samplers, baselines, frames, perceptual, model_name, progress, lambdas)
        doc["clips"].append(res)
        if log:
            log(format_clip(res))
    return doc


# ---- output -------------------------------------------------------------------------------------------------
def write_json(doc: dict, path, force: bool = False) -> Path:
    path = Path(path)
    if path.exists() and not force:
        raise FileExistsError(f"{path} exists; pass --force to replace it")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=1, allow_nan=False) + "\n")
    return path


def _num(x, fmt):
    return "n/a" if x is None else format(x, fmt)


def format_clip(res: dict) -> str:
    """Per codec and rate point: bytes, bpp, PSNR-Y, MS-SSIM, ST-LPIPS; then BD-rates and low-rate rows."""
    seen = "SEEN IN TRAINING" if res["seen_in_training"] else "held out from training"
    lines = [f"\n== {res['name']}: {res['frames']} frames {res['width']}x{res['height']} ({seen})"]
    for r in res["codecs"]:
        rr = r["results"]
        enc = r.get("encode_fps") or float(np.median(rr.get("encode-fps", [math.nan])))
        lines.append(f"-- {r['name']}  (encode {enc:.1f} frames/s)")
        tag = "lambda" if "lambda" in rr else "k" if "k" in rr else "crf"
        lines.append(f"  {tag[:3]:>3} {'bytes':>7} {'bpp':>7} {'PSNR-Y':>7} {'MS-SSIM':>7} {'ST-LPIPS':>8} "
                     f"{'texture':>7} {'dec f/s':>7}")
        for i in range(len(rr["bpp"])):
            get = lambda key: rr[key][i] if key in rr else None
            lines.append(f"  {format(rr[tag][i], 'g'):>3} {rr['bytes'][i]:>7} {rr['bpp'][i]:>7.4f} {_num(get('psnr-y'), '7.2f'):>7} "
                         f"{_num(get('ms-ssim-rgb'), '7.4f'):>7} {_num(get('st-lpips'), '8.4f'):>8} "
                         f"{_num(get('texture-ratio'), '7.2f'):>7} {rr['decode-fps'][i]:>7.1f}")
    lines.append("-- BD-rate of ours against each baseline (negative = we need less rate), over the shared range")
    for pair, per_metric in res["summary"]["bd_rate"].items():
        cells = []
        for key, rep in per_metric.items():
            cells.append(f"{key} {rep['bd_rate']:+.1f}%" if rep["bd_rate"] is not None else f"{key} {rep['note']}")
        lines.append(f"  {pair}: " + "; ".join(cells))
    lines.append(f"-- best of ours at <= {LOW_RATE_BPP} bpp and the baseline at the same rate")
    for pair, rows in res["summary"]["low_rate"].items():
        cells = [f"{key} {_num(row['ours'], '.4g')} vs {_num(row['baseline'], '.4g')} @ {_num(row['bpp'], '.4f')} bpp"
                 for key, row in rows.items()]
        lines.append(f"  {pair}: " + "; ".join(cells))
    return "\n".join(lines)


def plot_rd(doc: dict, path=None, metric_keys=PLOT_METRICS, force: bool = False):
    """RD curves with a log bpp axis: one row per clip, one panel per metric, ours and the baselines.

    Returns the figure (and writes it to ``path`` when given; an existing file needs ``force``).
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    if path is not None and Path(path).exists() and not force:
        raise FileExistsError(f"{path} exists; pass --force to replace it")
    clips = doc["clips"]
    fig, axes = plt.subplots(len(clips), len(metric_keys), figsize=(4.3 * len(metric_keys), 3.4 * len(clips)),
                             squeeze=False)
    styles = {"x264": ("tab:green", "s--"), "x265": ("tab:red", "D--")}
    sampler_colors = {"zero": "tab:blue", "argmax": "tab:purple", "sample": "tab:orange", "mean": "tab:cyan",
                      "copy": "tab:brown"}
    for row, res in zip(axes, clips):
        for ax, key in zip(row, metric_keys):
            for r in res["codecs"]:
                rr = r["results"]
                if key not in rr:
                    continue
                pts = [(b, q, i) for i, (b, q) in enumerate(zip(rr["bpp"], rr[key])) if q is not None]
                if not pts:
                    continue
                if r.get("ladder") == "lambda":
                    color, fmt = "black", "s:"
                elif r.get("codec") == "ours":
                    color, fmt = sampler_colors.get(r.get("sampler"), "tab:blue"), "o-"
                else:
                    color, fmt = styles.get(r.get("codec"), ("tab:gray", "^--"))
                ax.plot([p[0] for p in pts], [p[1] for p in pts], fmt, color=color, ms=4, lw=1.3,
                        label=r["name"])
                if r.get("codec") == "ours" and r.get("sampler") == res["codecs"][0].get("sampler") \
                        and not r.get("ladder"):
                    for n, (b, q, i) in enumerate(pts):  # alternate above / below so labels do not collide
                        ax.annotate(f"k={rr['k'][i]}", (b, q), textcoords="offset points",
                                    xytext=(3, 6 if n % 2 else -11), fontsize=6.5, color=color)
            ax.set_xscale("log")
            ax.set_xlabel("bpp (log scale)")
            ax.set_ylabel(METRICS[key][0])
            ax.grid(alpha=0.3, which="both")
            seen = " (seen in training)" if res["seen_in_training"] else ""
            ax.set_title(f"{res['name']}{seen}: {key}", fontsize=9)
        row[0].legend(fontsize=6.5, loc="best")
    fig.tight_layout()
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=110)
    return fig


def _summary_curves(doc: dict, sampler: str = "zero"):
    """(clip result, curve of ours, label) for the summary: the truncation ladder with ``sampler``'s
    fill, then the full-pyramid lambda ladder when it was evaluated."""
    for res in doc["clips"]:
        for r in res["codecs"]:
            if r.get("codec") == "ours" and r.get("sampler") == sampler and not r.get("ladder"):
                yield res, r, "truncation"
        for r in res["codecs"]:
            if r.get("ladder") == "lambda":
                yield res, r, "λ ladder"


def summary_table(doc: dict, baseline: str = "x265", sampler: str = "zero") -> str:
    """Markdown: per clip, our best quality at <= 0.05 bpp next to ``baseline`` at that rate, and BD-rates."""
    head = ("| clip | ours: best MS-SSIM at <= 0.05 bpp (bpp) | " + baseline + " at that rate | "
            "ours: best PSNR-Y at <= 0.05 bpp | " + baseline + " at that rate | BD-rate PSNR-Y | BD-rate MS-SSIM | "
            "BD-rate ST-LPIPS |")
    lines = [head, "|" + "---|" * 8]
    for res, ours, label in _summary_curves(doc, sampler):
        anchor = next((r for r in res["codecs"] if r.get("codec") == baseline), None)
        if anchor is None:
            continue
        pair = f"{ours['name']} vs {anchor['name']}"
        low, bd = res["summary"]["low_rate"][pair], res["summary"]["bd_rate"][pair]
        m, p = low["ms-ssim-rgb"], low["psnr-y"]

        def bdcell(key):
            rep = bd[key]
            if rep["bd_rate"] is None:
                return rep["note"]
            lo, hi = rep["overlap"]
            return f"{rep['bd_rate']:+.0f}% ({lo:.3g}..{hi:.3g})"

        seen = " (seen)" if res["seen_in_training"] else ""
        lines.append(f"| {res['name']}{seen}, {label} | {_num(m['ours'], '.3f')} ({_num(m['bpp'], '.3f')}) | "
                     f"{_num(m['baseline'], '.3f')} | {_num(p['ours'], '.2f')} dB | {_num(p['baseline'], '.2f')} dB | "
                     f"{bdcell('psnr-y')} | {bdcell('ms-ssim-rgb')} | {bdcell('st-lpips')} |")
    return "\n".join(lines)


# ---- the same bytes, picture beside picture --------------------------------------------------------------
def matched_baseline(source, target_bytes: int, codec: str = "x265", max_frames: int | None = None,
                     crfs=range(51, 9, -1)):
    """The baseline point whose file is closest to ``target_bytes`` (bisection on CRF; ``source`` a
    .y4m path or a (T, 3, H, W) tensor, of which the first ``max_frames`` are coded)."""
    from . import baselines

    crfs = sorted(crfs)
    cache = {}

    def at(crf):
        if crf not in cache:
            cache[crf] = baselines.encode_decode(source, codec, crf, max_frames=max_frames)
        return cache[crf]

    lo, hi = 0, len(crfs) - 1  # bytes fall as CRF rises
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if at(crfs[mid]).bytes > target_bytes:
            lo = mid
        else:
            hi = mid
    return min((at(crfs[lo]), at(crfs[hi])), key=lambda p: abs(p.bytes - target_bytes))


def plot_same_bytes(original_frame, ours_frame, ours_label: str, base_frame, base_label: str, path=None,
                    title: str = ""):
    """Original | ours | baseline, one frame each, with bytes and quality in the titles."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    panels = [("original", original_frame), (ours_label, ours_frame), (base_label, base_frame)]
    fig, axes = plt.subplots(1, 3, figsize=(9.6, 3.3))
    for ax, (label, frame) in zip(axes, panels):
        ax.imshow(frame.permute(1, 2, 0).clamp(0, 1).numpy(), interpolation="nearest")
        ax.set_title(label, fontsize=8)
        ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=120)
    return fig


# ---- schema ----------------------------------------------------------------------------------------------
def check_record(rec: dict) -> None:
    """Raise ValueError unless ``rec`` is a CompressAI-style codec entry as ``codec_record`` writes it."""
    for key, kind in (("name", str), ("description", str), ("results", dict)):
        if not isinstance(rec.get(key), kind):
            raise ValueError(f"codec entry {rec.get('name')!r}: {key!r} must be a {kind.__name__}")
    res = rec["results"]
    n = len(res.get("bpp", []))
    if n == 0:
        raise ValueError(f"codec entry {rec['name']!r}: no rate points")
    for key in ("bpp", "bitrate", "bytes", "decode-fps"):
        if key not in res:
            raise ValueError(f"codec entry {rec['name']!r}: results lack {key!r}")
    for key, values in res.items():
        if len(values) != n:
            raise ValueError(f"codec entry {rec['name']!r}: results[{key!r}] has {len(values)} values, bpp has {n}")
        if key in ("bytes", "k", "crf"):
            if not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
                raise ValueError(f"codec entry {rec['name']!r}: results[{key!r}] must be integers")
        elif not all(v is None or (isinstance(v, float) and math.isfinite(v)) for v in values):
            raise ValueError(f"codec entry {rec['name']!r}: results[{key!r}] must be finite floats or null")
        elif key not in METRICS and key not in ("bpp", "bitrate", "decode-fps", "encode-fps", "lambda"):
            raise ValueError(f"codec entry {rec['name']!r}: unknown results key {key!r}")


def check_document(doc: dict) -> None:
    """Raise ValueError unless ``doc`` has the layout ``evaluate_clips`` returns (see module docstring)."""
    for key in ("tool", "model", "metrics", "clips"):
        if key not in doc:
            raise ValueError(f"evaluation document lacks {key!r}")
    for res in doc["clips"]:
        for key in ("clip", "name", "frames", "width", "height", "fps", "seen_in_training", "codecs", "summary"):
            if key not in res:
                raise ValueError(f"clip entry {res.get('name')!r} lacks {key!r}")
        for rec in res["codecs"]:
            check_record(rec)
            if rec.get("codec") != "ours" and not rec.get("commands"):
                raise ValueError(f"baseline entry {rec['name']!r} does not record its command lines")
        for pair, per_metric in res["summary"]["bd_rate"].items():
            for key, rep in per_metric.items():
                if rep["bd_rate"] is None and not rep.get("note"):
                    raise ValueError(f"{pair} {key}: a BD-rate of None must say why (note)")
    json.dumps(doc, allow_nan=False)  # no NaN or inf anywhere


def ladder_table(res: dict, sampler: str = "zero", also: str | None = "copy") -> str:
    """Markdown: one clip's truncation ladder (k, bytes, bpp, PSNR-Y, MS-SSIM, ST-LPIPS, decode f/s) with
    ``sampler``'s fill, and the ST-LPIPS of the ``also`` fill beside it when it was evaluated."""
    ours = {r.get("sampler"): r for r in res["codecs"] if r.get("codec") == "ours" and not r.get("ladder")}
    z = ours[sampler]["results"]
    other = ours[also]["results"] if also in ours else None
    lp = f"ST-LPIPS {sampler} / {also} fill" if other else "ST-LPIPS"
    lines = [f"**{res['name']}** ({res['frames']} frames {res['width']}x{res['height']}; encode "
             f"{ours[sampler]['encode_fps']:.1f} frames/s)", "",
             f"| k | bytes | bpp | PSNR-Y | MS-SSIM | {lp} | decode f/s |", "|---|---|---|---|---|---|---|"]
    for i, k in enumerate(z["k"]):
        lpips = _num(z.get("st-lpips", [None] * len(z["k"]))[i], ".3f")
        if other:
            lpips += " / " + _num(other.get("st-lpips", [None] * len(z["k"]))[i], ".3f")
        lines.append(f"| {k} | {z['bytes'][i]} | {z['bpp'][i]:.4f} | {_num(z.get('psnr-y', [None] * len(z['k']))[i], '.2f')} | "
                     f"{_num(z.get('ms-ssim-rgb', [None] * len(z['k']))[i], '.3f')} | {lpips} | {z['decode-fps'][i]:.1f} |")
    return "\n".join(lines)


def markdown_report(doc: dict, baseline: str = "x265") -> str:
    """The README's tables: ``summary_table`` and every clip's ``ladder_table``."""
    return "\n\n".join([summary_table(doc, baseline)] + [ladder_table(res) for res in doc["clips"]]) + "\n"


if __name__ == "__main__":  # python -m progvc_lab.rdeval EVAL.json  -> the markdown tables
    import sys

    print(markdown_report(json.loads(Path(sys.argv[1]).read_text())), end="")
