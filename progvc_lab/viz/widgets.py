"""Interactive explorers (ipywidgets) over one clip and one codec.

Each explorer is a function that returns an ``Explorer`` (a ``widgets.VBox``): controls on top,
pictures (``widgets.Image`` holding PNG bytes) and a text line (``widgets.HTML``) below. The
expensive work for a clip (encode, truncated streams, decodes, per-token bits) lives in a
``ClipSession`` and is computed once, on first use; a slider move then only looks things up,
reconstructs at most one frame and draws a figure (well under a second on 2 CPU cores).

::

    session = ClipSession(codec, video)          # video (T, 3, H, W) in [0, 1]; a few frames
    truncation_explorer(session)                 # explorers accept a session or a plain video;
    token_pyramid_explorer(session)              # sharing one session shares its caches
    explorer_app()                               # all five in tabs, with a clip chooser (Voila)
    lambda_explorer(codec, video, fps)           # RDO: one encode per lambda, slider over them

The explorers' controls and views are also reachable from Python (``box.controls["k"].value = 1``,
``box.views["frame"].value`` is the PNG shown), which is how the tests drive them. In the browser,
stable CSS classes name the parts: ``pgvc-<explorer>`` on the box, ``pgvc-k-slider``,
``pgvc-decoded-frame``, and ``<span class="pgvc-bytes">`` / ``pgvc-bpp`` / ``pgvc-psnr`` in the
truncation explorer's label.
"""
from __future__ import annotations

import html
import io
import time
import traceback
import warnings
from fractions import Fraction
from pathlib import Path

import ipywidgets as widgets
import numpy as np
import torch

from .. import bitstream
from ..codec import PRETRAINED, Codec
from ..metrics import bpp as bits_per_pixel
from ..metrics import psnr
from ..stages.masks import MASKS
from ..stages.sampler import DetailSampler
from . import figures

DEMO_FRAMES = 8        # frames the explorers use by default: enough for a GOP, fast on 2 cores
DEMO_CLIP = "foreman"


# ---- model and clips ---------------------------------------------------------------------------------
def load_demo_codec(name: str = "tiny") -> Codec:
    """``Codec.from_pretrained(name)``; while that checkpoint does not exist, a random codec (same
    architecture defaults, seed 0) with a warning. Its ``meta["demo_warning"]`` says so, and the
    explorer app shows that line on top."""
    path = PRETRAINED.get(name)
    if path is None or path.is_file():
        codec = Codec.from_pretrained(name)
        codec.meta = {"name": name, **getattr(codec, "meta", {})}
        return codec
    from ..stages import ContextModel, ConvTokenizer, MultiScaleResidualQuantizer

    message = (f"the shipped model {path.name} was not found ({path}); using a RANDOM, untrained codec: "
               "the pictures show how the pipeline works, not what it achieves")
    warnings.warn(message, stacklevel=2)
    with torch.random.fork_rng():  # leave the caller's random state alone
        torch.manual_seed(0)
        codec = Codec(ConvTokenizer(), MultiScaleResidualQuantizer(), ContextModel(), gop=8)
    codec.meta = {"demo_warning": message}
    return codec


def shipped_clips() -> dict[str, Path]:
    """The clips in the repository's ``data/`` folder (``data.clips.shipped_clips``), by file stem."""
    from ..data.clips import shipped_clips as files

    return {p.stem: p for p in files()}


def load_clip(clip=None, max_frames: int = DEMO_FRAMES) -> tuple[torch.Tensor, Fraction, str]:
    """A clip as (frames (T, 3, H, W), fps, label): ``None`` (the shipped Foreman), a shipped clip's
    name, a file path (found and read by ``data.clips``), or a tensor (T, 3, H, W)."""
    from ..data.clips import clip_path
    from ..data.clips import load_clip as read

    if isinstance(clip, torch.Tensor):
        return clip[:max_frames], Fraction(25), "tensor"
    path = clip_path(DEMO_CLIP if clip is None else clip)
    frames, fps = read(path, max_frames)
    return frames, fps, path.name


# ---- the cached state of one clip --------------------------------------------------------------------
class ClipSession:
    """Everything the explorers compute for one (codec, clip), computed once and cached.

    ``encoded`` (bytes and stats of one encode), ``truncated(k)`` (the stream cut after k scales),
    ``decoded_tokens(k, sampler)`` (the truncated stream decoded), ``decoded_frame(k, t)``,
    ``rd_points()`` (bpp and PSNR of every k), ``recon_frame(k, t)`` (the encoder's tokens up to k),
    ``bits_maps`` (per-token model bits).
    """

    def __init__(self, codec: Codec, video: torch.Tensor, fps=Fraction(25), label: str = "clip"):
        self.codec, self.fps, self.label = codec, Fraction(fps), label
        self.video = Codec.check_video(video)
        self.num_frames, _, self.height, self.width = self.video.shape
        self._cache: dict = {}

    def _cached(self, key, compute):
        if key not in self._cache:
            self._cache[key] = compute()
        return self._cache[key]

    # encoder side
    @property
    def encoded(self) -> tuple[bytes, dict]:
        return self._cached("encoded", lambda: self.codec.encode_with_stats(self.video, self.fps))

    @property
    def data(self) -> bytes:
        return self.encoded[0]

    @property
    def tokens(self) -> list[torch.Tensor]:
        return self.encoded[1]["tokens"]

    @property
    def latent_hw(self) -> tuple[int, int]:
        return tuple(self.encoded[1]["latent_hw"])

    @property
    def num_scales(self) -> int:
        return self.codec.quantizer.num_scales

    @property
    def size(self) -> tuple[int, int]:
        return self.height, self.width

    @property
    def bytes_per_scale(self) -> list[int]:
        return self._cached("describe", lambda: bitstream.describe(self.data))["bytes_per_scale"]

    @property
    def bits_maps(self) -> list[np.ndarray]:
        return self._cached("bits_maps", lambda: figures.token_bits_maps(self.codec, self.video, self.encoded[1]))

    def recon_frame(self, k: int, t: int) -> torch.Tensor:
        """Frame t (3, H, W) from the encoder's tokens of scales 0..k-1."""
        return self._cached(("recon", k, t), lambda: self.codec.reconstruct(
            [tok[t:t + 1] for tok in self.tokens], self.latent_hw, self.size, upto=k)[0])

    # decoder side: what a receiver of the first k scales sees
    def truncated(self, k: int) -> bytes:
        """The stream a receiver of k scales gets (``rdeval.stream_at``: the encode cut after k, or for a mask
        that is not truncation safe, the clip encoded again at that k)."""
        from ..rdeval import stream_at

        return self._cached(("truncated", k), lambda: stream_at(self.codec, self.data, k, self.video, self.fps)[0])

    def decoded_tokens(self, k: int, sampler: str = "zero", temperature: float = 1.0, top_k: int = 0,
                       seed: int = 0) -> list[torch.Tensor]:
        det = DetailSampler(sampler, temperature, top_k, seed)
        key = ("tokens", k) if sampler == "zero" else ("tokens", k, sampler, temperature, top_k, seed)
        return self._cached(key, lambda: self.codec.decode_tokens(self.truncated(k), sampler=det)[0])

    def decoded_frame(self, k: int, t: int, sampler: str = "zero", **sampler_args) -> torch.Tensor:
        """Frame t (3, H, W) of the stream cut after k scales, the rest filled by ``sampler``."""
        key = ("frame", k, t, sampler, tuple(sorted(sampler_args.items())) if sampler != "zero" else ())
        if ("video", k) in self._cache and sampler == "zero":
            return self._cache[("video", k)][t]
        tokens = self.decoded_tokens(k, sampler, **sampler_args)
        return self._cached(key, lambda: self.codec.reconstruct(
            [tok[t:t + 1] for tok in tokens], self.latent_hw, self.size)[0])

    def decoded_video(self, k: int) -> torch.Tensor:
        """All frames of the stream cut after k scales (zero-fill)."""
        return self._cached(("video", k), lambda: self.codec.reconstruct(
            self.decoded_tokens(k), self.latent_hw, self.size))

    def rd_point(self, k: int) -> dict:
        def compute():
            n = len(self.truncated(k))
            return {"k": k, "bytes": n, "bpp": bits_per_pixel(n, self.num_frames, self.height, self.width),
                    "psnr": psnr(self.decoded_video(k), self.video)}
        return self._cached(("rd", k), compute)

    def rd_points(self) -> list[dict]:
        return [self.rd_point(k) for k in range(1, self.num_scales + 1)]


def as_session(codec: Codec, video) -> ClipSession:
    if isinstance(video, ClipSession):
        if codec is not None and codec is not video.codec:
            raise ValueError("the session was made with another codec; pass the session's codec or None")
        return video
    if codec is None:
        raise ValueError("pass a codec (e.g. progvc_lab.viz.load_demo_codec()) or a ClipSession")
    if video is None:
        frames, fps, label = load_clip()
        return ClipSession(codec, frames, fps, label)
    return ClipSession(codec, video)


# ---- widget helpers ----------------------------------------------------------------------------------
def frame_to_png(frame_3HW, zoom: int = 2) -> bytes:
    """A frame (3, H, W) in [0, 1] -> PNG bytes, enlarged ``zoom`` times (nearest)."""
    from PIL import Image

    img = (figures.as_image(frame_3HW) * 255 + 0.5).astype(np.uint8)
    if zoom > 1:
        img = img.repeat(zoom, 0).repeat(zoom, 1)
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    return buf.getvalue()


def _png(fig) -> bytes:
    return figures.figure_to_png(fig, dpi=80)


class Explorer(widgets.VBox):
    """A VBox with named ``controls`` and ``views`` and a ``refresh()`` that redraws the views.

    ``last_seconds`` is how long the last refresh took; errors in a refresh are shown in the
    ``status`` line instead of vanishing into the kernel log.
    """

    def __init__(self, name: str, controls: dict, views: dict, layout_children, render):
        self.status = widgets.HTML("", layout=widgets.Layout(min_height="1.2em"))
        super().__init__(list(layout_children) + [self.status])
        self.add_class("pgvc-explorer")
        self.add_class(f"pgvc-{name}")
        self.explorer_name, self.controls, self.views, self._render = name, controls, views, render
        self.last_seconds = 0.0
        for c in controls.values():
            c.observe(lambda _change: self.refresh(), names="value")
        self.refresh()

    def refresh(self):
        t0 = time.perf_counter()
        try:
            self._render({name: c.value for name, c in self.controls.items()})
            self.status.value = ""
        except Exception as e:  # show it: in Voila a callback's traceback is otherwise invisible
            self.status.value = (f"<pre class='pgvc-error' style='color:#b00'>{html.escape(type(e).__name__)}: "
                                 f"{html.escape(str(e))}\n{html.escape(traceback.format_exc(limit=3))}</pre>")
        self.last_seconds = time.perf_counter() - t0


def _slider(description, lo, hi, value, cls=None, **kw):
    s = widgets.IntSlider(value=value, min=lo, max=hi, description=description, continuous_update=False,
                          style={"description_width": "initial"}, **kw)
    if cls:
        s.add_class(cls)
    return s


def _image(cls: str) -> widgets.Image:
    # natural size: a flex column would otherwise stretch (and blur) the picture to its full width
    img = widgets.Image(format="png", layout=widgets.Layout(align_self="flex-start", max_width="100%"))
    img.add_class(cls)
    return img


# ---- the explorers -----------------------------------------------------------------------------------
def token_pyramid_explorer(codec: Codec | None, video=None) -> Explorer:
    """Frame and scale sliders: the token map of scale s, the frame rebuilt from scales 0..s, and
    the residual it leaves."""
    S = as_session(codec, video)
    K = S.num_scales
    controls = {"frame": _slider("frame", 0, S.num_frames - 1, 0, "pgvc-frame-slider"),
                "scale": _slider("scale s", 0, K - 1, 0, "pgvc-scale-slider")}
    views = {"figure": _image("pgvc-pyramid-figure")}

    def render(v):
        t, s = v["frame"], v["scale"]
        fig = figures.plot_scale_step(S.video[t], S.tokens[s][t], S.recon_frame(s + 1, t), s,
                                      S.codec.quantizer.codebook_size, codebook=S.codec.quantizer.codebook.weight)
        views["figure"].value = _png(fig)

    intro = widgets.HTML("<b>Token pyramid</b>: scale s adds detail to what scales 0..s-1 left "
                         f"(K = {K} scales, latent {S.latent_hw[0]}x{S.latent_hw[1]}).")
    return Explorer("pyramid", controls, views,
                    [intro, widgets.HBox(list(controls.values())), views["figure"]], render)


def mask_explorer(latent_hw: tuple[int, int] = figures.DEFAULT_LATENT_HW) -> Explorer:
    """Mask dropdown and frames/scales/window sliders: the block mask, its attention cost (absolute
    and relative to ``var``) and whether a stream may be cut after any scale. Token counts per scale
    come from the scale schedule of ``latent_hw``."""
    from ..stages.quantizer import scale_schedule

    names = [n for n in ("var", "infinitystar", "progvc_sparse") if n in MASKS] + \
        sorted(set(MASKS) - {"var", "infinitystar", "progvc_sparse"})
    controls = {"mask": widgets.Dropdown(options=names, value="progvc_sparse", description="mask"),
                "frames": _slider("frames T", 1, 8, 3),
                "scales": _slider("scales K", 1, 8, 4),
                "window": _slider("window W", 0, 4, 1)}
    views = {"figure": _image("pgvc-mask-figure"), "summary": widgets.HTML()}
    views["summary"].add_class("pgvc-mask-summary")

    def render(v):
        controls["window"].disabled = v["mask"] != "progvc_sparse"
        lengths = [h * w for h, w in scale_schedule(latent_hw, v["scales"])]
        info = figures.mask_summary(v["mask"], v["frames"], v["scales"], v["window"], lengths)
        views["figure"].value = _png(figures.plot_mask(v["mask"], v["frames"], v["scales"], v["window"], lengths))
        safe = "yes" if info["truncation_safe"] else "no"
        views["summary"].value = (
            f"attention cost <span class='pgvc-cost'>{info['cost']:,}</span> query-key pairs "
            f"(<span class='pgvc-cost-ratio'>{100 * info['ratio_to_var']:.1f}%</span> of var's "
            f"{info['var_cost']:,}) &middot; truncation safe: <span class='pgvc-safe'>{safe}</span> "
            f"&middot; <span class='pgvc-violations'>{info['violations']}</span> block pairs read a finer scale"
            + (" (red in the picture: a stream cut below them loses what they read)" if info["violations"] else "")
            + f"<br><small>tokens per scale {lengths} (latent {latent_hw[0]}x{latent_hw[1]})</small>")

    intro = widgets.HTML("<b>Attention masks</b>: which blocks (frame t, scale s) a block may read.")
    return Explorer("masks", controls, views,
                    [intro, widgets.HBox([controls["mask"], controls["frames"]]),
                     widgets.HBox([controls["scales"], controls["window"]]), views["summary"],
                     views["figure"]], render)


def truncation_explorer(codec: Codec | None, video=None) -> Explorer:
    """Slider k: the stream cut after k scales (``bitstream.truncate``), decoded; bytes, bpp and
    PSNR; bits per scale with the dropped ones highlighted; the point on the RD curve."""
    S = as_session(codec, video)
    K = S.num_scales
    points = S.rd_points()   # decodes every k once: the curve needs them all
    total = len(S.data)
    controls = {"k": _slider("scales kept k", 1, K, K, "pgvc-k-slider"),
                "frame": _slider("frame", 0, S.num_frames - 1, 0, "pgvc-frame-slider")}
    views = {"frame": _image("pgvc-decoded-frame"), "original": _image("pgvc-original-frame"),
             "label": widgets.HTML(), "bars": _image("pgvc-bits-bars"), "rd": _image("pgvc-rd-curve")}
    views["label"].add_class("pgvc-truncation-label")
    charts: dict[int, tuple[bytes, bytes]] = {}

    def render(v):
        k, t = v["k"], v["frame"]
        p = points[k - 1]
        views["frame"].value = frame_to_png(S.decoded_frame(k, t))
        views["original"].value = frame_to_png(S.video[t])
        if k not in charts:  # the charts depend on k only: draw each once
            charts[k] = (_png(figures.plot_bits_per_scale(S.bytes_per_scale, k, file_bytes=(p["bytes"], total))),
                         _png(figures.plot_rd_curve(points, highlight=k)))
        views["bars"].value, views["rd"].value = charts[k]
        saved = total - p["bytes"]
        views["label"].value = (  # last: when the label has changed, so has everything else
            f"k = {k} of {K} scales: <span class='pgvc-bytes'>{p['bytes']} bytes</span> sent of {total} "
            f"&middot; <span class='pgvc-bpp'>{p['bpp']:.4f} bpp</span> "
            f"&middot; <span class='pgvc-psnr'>{p['psnr']:.2f} dB</span> (RGB PSNR, all frames) "
            f"&middot; <span class='pgvc-saved'>saves {saved} bytes ({100 * saved / total:.1f}%)</span> "
            "vs all scales")

    intro = widgets.HTML("<b>Progressive truncation</b>: one encode; cutting the stream after k scales "
                         "gives a smaller stream that still decodes (header and table rewritten, no re-encode).")
    left = widgets.VBox([widgets.HTML("decoded (first k scales)"), views["frame"]])
    right = widgets.VBox([widgets.HTML("original"), views["original"]])
    return Explorer("truncation", controls, views,
                    [intro, widgets.HBox(list(controls.values())), views["label"], widgets.HBox([left, right]),
                     widgets.HBox([views["bars"], views["rd"]])], render)


def bits_heatmap_explorer(codec: Codec | None, video=None) -> Explorer:
    """Frame and scale: where in the frame the context model spends bits (-log2 p per token)."""
    S = as_session(codec, video)
    maps = S.bits_maps
    K = S.num_scales
    scale_options = [("all scales", -1)] + [(f"scale {s} ({m.shape[1]}x{m.shape[2]})", s) for s, m in enumerate(maps)]
    controls = {"frame": _slider("frame", 0, S.num_frames - 1, 0, "pgvc-frame-slider"),
                "scale": widgets.Dropdown(options=scale_options, value=K - 1, description="scale")}
    views = {"figure": _image("pgvc-heatmap-figure"), "summary": widgets.HTML()}

    def render(v):
        t, s = v["frame"], v["scale"]
        fig = figures.plot_bits_heatmap(maps, t, scale=None if s < 0 else s, frame=S.video[t])
        views["figure"].value = _png(fig)
        per_scale = [float(m[t].sum()) for m in maps]
        views["summary"].value = (
            f"frame {t}: {sum(per_scale):,.0f} model bits "
            f"({sum(per_scale) / (S.height * S.width):.4f} bpp); per scale: "
            + ", ".join(f"{b:,.0f}" for b in per_scale))

    intro = widgets.HTML("<b>Where the bits go</b>: model bits per token, the code length the stream pays.")
    return Explorer("heatmap", controls, views,
                    [intro, widgets.HBox(list(controls.values())), views["summary"], views["figure"]], render)


def sampler_explorer(codec: Codec | None, video=None) -> Explorer:
    """k, sampler (zero / argmax / sample), temperature, top-k, seed: the frame decoded from the first
    k scales with the rest filled by the sampler, next to zero-fill and the full decode."""
    S = as_session(codec, video)
    K = S.num_scales
    V = S.codec.quantizer.codebook_size
    controls = {"k": _slider("scales kept k", 1, K, min(2, K), "pgvc-k-slider"),
                "sampler": widgets.ToggleButtons(options=["zero", "argmax", "sample"], value="sample",
                                                 description="sampler"),
                "temperature": widgets.FloatSlider(value=1.0, min=0.1, max=2.0, step=0.05, description="temperature",
                                                   continuous_update=False),
                "top_k": _slider("top-k (0 = all)", 0, V, 0),
                "seed": widgets.BoundedIntText(value=0, min=0, max=2**31 - 1, description="seed"),
                "frame": _slider("frame", 0, S.num_frames - 1, 0, "pgvc-frame-slider")}
    views = {"figure": _image("pgvc-sampler-figure")}

    def render(v):
        k, t, mode = v["k"], v["frame"], v["sampler"]
        for name in ("temperature", "top_k", "seed"):
            controls[name].disabled = mode != "sample"
        args = {"temperature": v["temperature"], "top_k": v["top_k"], "seed": v["seed"]} if mode == "sample" else {}
        frames = {f"zero-fill, k={k}": S.decoded_frame(k, t)}
        if mode != "zero":
            frames[f"{mode}, k={k}" + (f", T={args['temperature']:.2f}, top-k={args['top_k']}, seed={args['seed']}"
                                       if args else "")] = S.decoded_frame(k, t, mode, **args)
        frames[f"all {K} scales"] = S.decoded_frame(K, t)
        views["figure"].value = _png(figures.plot_sampler_comparison(frames, original=S.video[t]))

    intro = widgets.HTML("<b>Detail sampler</b>: fill the scales a truncated stream does not carry.")
    return Explorer("sampler", controls, views,
                    [intro, widgets.HBox([controls["k"], controls["frame"]]), controls["sampler"],
                     widgets.HBox([controls["temperature"], controls["top_k"], controls["seed"]]),
                     views["figure"]], render)


# ---- RDO: one encode per lambda ---------------------------------------------------------------------
DEMO_LAMBDAS = (0.0, 0.001, 0.005, 0.02, 0.1)   # rdo_lambda values the lambda explorer precomputes


class LambdaSweep:
    """Encodes of one clip at several RDO lambdas (``rdo_lambda``), each computed once and cached.

    ``encoded(lam)`` (bytes and stats of ``encode_with_stats(video, fps, rdo_lambda=lam, **options)``),
    ``decoded_video(lam)`` (all frames, all scales), ``point(lam)`` (bytes, bpp, PSNR, MS-SSIM, bits per
    token per scale, latent distortion). ``decoded_video`` reconstructs the encoder's tokens: entropy
    coding is lossless, so that is exactly what ``codec.decode(data)`` returns (the tests check it),
    without running the context model a second time. MS-SSIM needs frames over 96 px; smaller clips
    get single-scale SSIM (``quality_name`` says which).
    """

    def __init__(self, codec: Codec, video: torch.Tensor, fps=Fraction(25), label: str = "clip", **options):
        if "rdo_lambda" in options:
            raise TypeError("rdo_lambda is what the sweep varies; pass the other encoder options only")
        self.codec, self.fps, self.label, self.options = codec, Fraction(fps), label, dict(options)
        self.video = Codec.check_video(video)
        self.num_frames, _, self.height, self.width = self.video.shape
        self.quality_name = "MS-SSIM" if min(self.height, self.width) > 96 else "SSIM"
        self._cache: dict = {}

    def _cached(self, key, compute):
        if key not in self._cache:
            self._cache[key] = compute()
        return self._cache[key]

    def encoded(self, lam: float) -> tuple[bytes, dict]:
        return self._cached(("encoded", float(lam)), lambda: self.codec.encode_with_stats(
            self.video, self.fps, rdo_lambda=float(lam), **self.options))

    def decoded_video(self, lam: float) -> torch.Tensor:
        def compute():
            stats = self.encoded(lam)[1]
            return self.codec.reconstruct(stats["tokens"], tuple(stats["latent_hw"]), (self.height, self.width))
        return self._cached(("video", float(lam)), compute)

    def quality(self, decoded: torch.Tensor) -> float:
        from .. import metrics

        if self.quality_name == "MS-SSIM":
            return metrics.ms_ssim(self.video, decoded)
        side = min(self.height, self.width)
        return metrics.ssim(self.video, decoded, win_size=min(7, side if side % 2 else side - 1))

    def point(self, lam: float) -> dict:
        def compute():
            data, stats = self.encoded(lam)
            decoded = self.decoded_video(lam)
            return {"rdo_lambda": float(lam), "bytes": len(data),
                    "bpp": bits_per_pixel(len(data), self.num_frames, self.height, self.width),
                    "psnr": psnr(decoded, self.video), "ms_ssim": self.quality(decoded),
                    "bits_per_token": figures.bits_per_token_per_scale(stats).tolist(),
                    "latent_distortion": float(np.asarray(stats["rdo_distortion"]).sum())}
        return self._cached(("point", float(lam)), compute)

    def points(self, lambdas=DEMO_LAMBDAS) -> list[dict]:
        return [self.point(lam) for lam in lambdas]


def as_sweep(codec: Codec | None, video, fps=Fraction(25), **options) -> LambdaSweep:
    """A ``LambdaSweep`` from a sweep, a ``ClipSession`` (its clip), a video tensor or ``None`` (Foreman)."""
    if isinstance(video, LambdaSweep):
        if codec is not None and codec is not video.codec:
            raise ValueError("the sweep was made with another codec; pass the sweep's codec or None")
        return video
    if isinstance(video, ClipSession):
        return LambdaSweep(codec if codec is not None else video.codec, video.video, video.fps, video.label,
                           **options)
    if codec is None:
        raise ValueError("pass a codec (e.g. progvc_lab.viz.load_demo_codec()) or a LambdaSweep")
    if video is None:
        frames, fps, label = load_clip()
        return LambdaSweep(codec, frames, fps, label, **options)
    return LambdaSweep(codec, video, fps, **options)


def lambda_explorer(codec: Codec | None, video=None, fps=Fraction(25), lambdas=DEMO_LAMBDAS,
                    **options) -> Explorer:
    """Slider lambda (``rdo_lambda``): the clip encoded with RD-optimised token choice at that lambda,
    all scales; bytes, bpp, MS-SSIM and PSNR, the decoded frame, the point on the lambda curve and bits
    per token per scale against lambda = 0 (nearest codes). Every lambda in ``lambdas`` is encoded once,
    up front (the curve needs them all); a slider move only looks them up. ``video``: a tensor, a
    ``ClipSession``, a ``LambdaSweep`` (shares its encodes) or ``None`` (Foreman); ``options``: other
    encoder options (``copy_gate``, ``gop``, ``rdo_candidates``)."""
    S = as_sweep(codec, video, fps, **options)
    lambdas = sorted({float(lam) for lam in lambdas} | {0.0})
    points = {lam: S.point(lam) for lam in lambdas}
    start = min(lambdas, key=lambda lam: abs(lam - S.codec.config.rdo_lambda))
    lam_slider = widgets.SelectionSlider(options=[(f"{lam:g}", lam) for lam in lambdas], value=start,
                                         description="lambda", continuous_update=False,
                                         style={"description_width": "initial"})
    lam_slider.add_class("pgvc-lambda-slider")
    controls = {"lambda": lam_slider, "frame": _slider("frame", 0, S.num_frames - 1, 0, "pgvc-frame-slider")}
    views = {"frame": _image("pgvc-decoded-frame"), "original": _image("pgvc-original-frame"),
             "label": widgets.HTML(), "rd": _image("pgvc-lambda-curve"), "bars": _image("pgvc-bits-bars")}
    views["label"].add_class("pgvc-lambda-label")
    charts: dict[float, tuple[bytes, bytes]] = {}
    base = points[0.0]

    def render(v):
        lam, t = v["lambda"], v["frame"]
        p = points[lam]
        views["frame"].value = frame_to_png(S.decoded_video(lam)[t])
        views["original"].value = frame_to_png(S.video[t])
        if lam not in charts:  # the charts depend on lambda only: draw each once
            charts[lam] = (
                _png(figures.plot_lambda_curve(list(points.values()), highlight=lam, quality_label=S.quality_name)),
                _png(figures.plot_bits_per_token({"lambda = 0 (nearest code)": base["bits_per_token"],
                                                  f"lambda = {lam:g}": p["bits_per_token"]},
                                                 title="bits per token, per scale")))
        views["rd"].value, views["bars"].value = charts[lam]
        saved = base["bytes"] - p["bytes"]
        views["label"].value = (  # last: when the label has changed, so has everything else
            f"lambda = {lam:g}: <span class='pgvc-bytes'>{p['bytes']} bytes</span> "
            f"&middot; <span class='pgvc-bpp'>{p['bpp']:.4f} bpp</span> "
            f"&middot; <span class='pgvc-msssim'>{S.quality_name} {p['ms_ssim']:.4f}</span> "
            f"&middot; <span class='pgvc-psnr'>{p['psnr']:.2f} dB</span> (RGB PSNR, all frames) "
            f"&middot; <span class='pgvc-saved'>{saved:+d} bytes saved ({100 * saved / max(base['bytes'], 1):.1f}%)"
            "</span> vs lambda = 0")

    intro = widgets.HTML("<b>RD-optimised token choice</b>: per block the encoder picks, among the nearest "
                         "codes and frame t-1's token, the one minimising A<sub>s</sub>&middot;||r - e||&sup2; "
                         "+ &lambda;&middot;bits (one encode per &lambda;, all scales sent).")
    left = widgets.VBox([widgets.HTML("decoded (all scales)"), views["frame"]])
    right = widgets.VBox([widgets.HTML("original"), views["original"]])
    return Explorer("lambda", controls, views,
                    [intro, widgets.HBox(list(controls.values())), views["label"], widgets.HBox([left, right]),
                     widgets.HBox([views["rd"], views["bars"]])], render)


# ---- the app -----------------------------------------------------------------------------------------
TABS = [("Truncation", truncation_explorer), ("Token pyramid", token_pyramid_explorer),
        ("Bits heatmap", bits_heatmap_explorer), ("Detail sampler", sampler_explorer),
        ("Masks", lambda codec, video: mask_explorer())]


class ExplorerApp(widgets.VBox):
    """The explorers in tabs over one shared ``ClipSession``; a tab is built when first shown."""

    def __init__(self, codec: Codec | None = None, clip=None, max_frames: int = DEMO_FRAMES):
        self.codec = codec if codec is not None else load_demo_codec()
        warning = getattr(self.codec, "meta", {}).get("demo_warning")
        model = "random, untrained" if warning else getattr(self.codec, "meta", {}).get("name", "custom")
        q = self.codec.quantizer
        header = widgets.HTML(
            f"<b>progvc_lab explorer</b> &middot; model: {html.escape(str(model))} (K = {q.num_scales} scales, "
            f"V = {q.codebook_size} codes, stride {self.codec.tokenizer.stride}, "
            f"fingerprint {self.codec.fingerprint().hex()})" + (
            f"<p class='pgvc-warning' style='color:#a60'>&#9888; {html.escape(warning)}</p>" if warning else ""))
        clips = shipped_clips()
        self.clip_choice = widgets.Dropdown(options=list(clips) + ["(path below)"], description="clip")
        self.clip_path = widgets.Text(placeholder="path to a .y4m / .mp4 file", description="path")
        self.frames = widgets.BoundedIntText(value=max_frames, min=1, max=300, description="frames")
        self.load_button = widgets.Button(description="Load clip", button_style="primary")
        self.load_button.on_click(lambda _b: self.load(self._chosen_clip(), self.frames.value))
        self.message = widgets.HTML()
        self.message.add_class("pgvc-app-message")
        self.slots = [widgets.VBox() for _ in TABS]
        self.tabs = widgets.Tab(children=self.slots, titles=[name for name, _ in TABS])
        self.explorers: dict[int, Explorer] = {}
        self.tabs.observe(lambda change: self._build(change["new"]), names="selected_index")
        super().__init__([header, widgets.HBox([self.clip_choice, self.clip_path, self.frames, self.load_button]),
                          self.message, self.tabs])
        self.add_class("pgvc-app")
        default = next((name for name in clips if name.startswith(DEMO_CLIP)), None)
        if clip is None and default is not None:
            self.clip_choice.value, clip = default, clips[default]
        self.load(clip, max_frames)

    def _chosen_clip(self):
        if self.clip_choice.value == "(path below)" or self.clip_path.value.strip():
            return self.clip_path.value.strip()
        return shipped_clips()[self.clip_choice.value]

    def load(self, clip, max_frames: int = DEMO_FRAMES):
        """Load a clip (path, shipped name or tensor) and rebuild the shown tab."""
        try:
            video, fps, label = load_clip(clip, max_frames)
            self.session = ClipSession(self.codec, video, fps, label)
        except Exception as e:
            self.message.value = f"<span class='pgvc-error' style='color:#b00'>cannot load {html.escape(str(clip))}: " \
                                 f"{html.escape(str(e))}</span>"
            return
        T, _, H, W = self.session.video.shape
        self.message.value = f"clip <b>{html.escape(label)}</b>: {T} frames, {W}x{H}"
        self.explorers.clear()
        for slot in self.slots:
            slot.children = [widgets.HTML("<i>computing when shown&hellip;</i>")]
        self._build(self.tabs.selected_index or 0)

    def _build(self, index):
        if index is None or index in self.explorers:
            return
        self.slots[index].children = [widgets.HTML("<i>computing&hellip;</i>")]
        try:
            self.explorers[index] = TABS[index][1](self.codec, self.session)
            self.slots[index].children = [self.explorers[index]]
        except Exception as e:
            self.slots[index].children = [widgets.HTML(
                f"<pre class='pgvc-error' style='color:#b00'>{html.escape(type(e).__name__)}: {html.escape(str(e))}</pre>")]


def explorer_app(codec: Codec | None = None, clip=None, max_frames: int = DEMO_FRAMES) -> ExplorerApp:
    """All five explorers in tabs, with a clip chooser (shipped clips, or a path). Made for Voila:
    ``voila notebooks/explorer.ipynb``. ``codec`` defaults to ``load_demo_codec()``; ``clip`` to the
    shipped Foreman clip (first ``max_frames`` frames)."""
    return ExplorerApp(codec, clip, max_frames)
