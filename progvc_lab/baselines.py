"""x264 / x265 baselines through the system's ffmpeg, scored by the same code as our codec.

::

    from progvc_lab import baselines
    ok, why = baselines.available("x265")
    point = baselines.encode_decode("data/foreman_qcif_30f.y4m", "x265", crf=40)
    point.bytes, point.bpp, point.decoded.shape          # raw HEVC stream bytes, (T, 3, H, W) RGB
    ladder = baselines.crf_ladder("data/foreman_qcif_30f.y4m", "x264", bpp_range=(0.002, 0.15))

What is measured (and why):

- **Encoder settings**: ``-preset veryslow -tune psnr`` (the tuning for PSNR scoring), 8-bit
  ``yuv420p``, constant quality (``-crf``), one intra frame then P/B frames as the encoder chooses:
  the keyframe interval is the clip's frame count and **scene-cut detection is off**
  (x264 ``-sc_threshold 0``, x265 ``scenecut=0``), so every stream holds exactly one IDR/IRAP
  picture (checked on the bitstream, ``settings["intra_pictures"]``). One thread
  (x264 ``-threads 1``, x265 ``pools=1:frame-threads=1``): results do not depend on the core count
  and timings are per core.
- **Bytes** are those of the raw elementary stream (``-f h264`` / ``-f hevc``: no container), with
  parameter sets but **without SEI**: x265 ``info=0`` drops its encoder-settings SEI and, for
  both, ffmpeg's ``filter_units`` bitstream filter removes any SEI NAL unit (H.264 type 6, HEVC
  prefix/suffix types 39/40). SEI carries no picture data, so the decoded frames are bit-identical
  with or without it (checked by decoding both). On 30 frames of Foreman QCIF (these settings) the
  SEI is 670 bytes for x264 (its "x264 - core ..." options string) and 2339 bytes for x265 (its
  "x265 (build ..." one): 9% and 28% of the stream at CRF 30, 40% and 66% at CRF 51. Counting it
  would make the baselines look much worse at low rate.
  Every output is checked to hold no SEI NAL unit (``settings["nal_units"]``).
- **Decoding** goes through ffmpeg back to a y4m file, read by :func:`progvc_lab.data.read_y4m`
  and converted by the project's BT.601 :func:`~progvc_lab.data.yuv420_to_rgb`, exactly like
  :func:`progvc_lab.data.read_video`, so baselines and our codec are scored by the same code. The
  decoded 8-bit planes are kept too (``point.yuv``) for PSNR on YUV without an RGB round trip.
- **Input**: a ``.y4m`` path goes to ffmpeg as it is (no re-conversion); a tensor (T, 3, H, W)
  is first written with :func:`progvc_lab.data.write_video` (our RGB -> BT.601 4:2:0) to a
  temporary y4m.

A missing ffmpeg, encoder or bitstream filter raises :class:`BaselineUnavailable` with what to
install; nothing is silently left out. ``point.commands`` holds the exact command lines (run in a
temporary directory, hence the relative file names).
"""

from __future__ import annotations

import functools
import math
import os
import shlex
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from . import metrics

__all__ = ["BaselineUnavailable", "BaselinePoint", "CODECS", "available", "encode_decode", "crf_ladder",
           "nal_unit_types", "ffmpeg_version"]

MAX_CRF = 51  # x264 / x265 8-bit: the lowest rate either can do


class BaselineUnavailable(RuntimeError):
    """ffmpeg, or the encoder / bitstream filter a baseline needs, is not installed."""


@dataclass(frozen=True)
class _Codec:
    name: str
    encoder: str  # ffmpeg encoder name
    muxer: str  # raw elementary stream format
    suffix: str
    sei_types: tuple[int, ...]  # NAL unit types of SEI
    irap_types: tuple[int, ...]  # NAL unit types of intra random access pictures
    package_hint: str


CODECS = {
    "x264": _Codec("x264", "libx264", "h264", ".264", (6,), (5,), "Debian's ffmpeg (apt-get install ffmpeg) is built with libx264"),
    "x265": _Codec("x265", "libx265", "hevc", ".265", (39, 40), tuple(range(16, 22)), "Debian's ffmpeg (apt-get install ffmpeg) is built with libx265"),
}
_ALIASES = {"x264": "x264", "libx264": "x264", "h264": "x264", "avc": "x264",
            "x265": "x265", "libx265": "x265", "hevc": "x265", "h265": "x265"}


def _codec(codec: str) -> _Codec:
    key = _ALIASES.get(str(codec).lower())
    if key is None:
        raise ValueError(f"unknown baseline codec {codec!r}: use 'x264' or 'x265'")
    return CODECS[key]


@dataclass
class BaselinePoint:
    """One encode + decode of a clip. ``bytes`` counts the raw elementary stream without SEI."""

    codec: str
    crf: int
    bytes: int
    frames: int
    width: int
    height: int
    bpp: float
    decoded: torch.Tensor = field(repr=False)  # (T, 3, H, W) float32 RGB in [0, 1]
    encode_seconds: float
    decode_seconds: float
    commands: list[str]
    settings: dict
    yuv: tuple | None = field(default=None, repr=False)  # decoded uint8 planes y (T,H,W), u, v (T,H/2,W/2)
    stream: bytes = field(default=b"", repr=False)  # the elementary stream itself (len == bytes)


# --- tools ---------------------------------------------------------------------------------------
def _ffmpeg() -> str:
    path = shutil.which("ffmpeg")
    if path is None:
        raise BaselineUnavailable("ffmpeg not found on PATH: apt-get install ffmpeg (Debian's build has libx264 and libx265)")
    return path


@functools.lru_cache(maxsize=None)
def _ffmpeg_lists(ffmpeg: str) -> tuple[str, str]:
    def run(*args):
        return subprocess.run([ffmpeg, "-hide_banner", *args], capture_output=True, text=True, check=False).stdout
    return run("-encoders"), run("-bsfs")


@functools.lru_cache(maxsize=None)
def _version(ffmpeg: str) -> str:
    out = subprocess.run([ffmpeg, "-version"], capture_output=True, text=True, check=False).stdout
    return out.splitlines()[0] if out else "unknown"


def ffmpeg_version() -> str:
    """First line of ``ffmpeg -version`` (raises BaselineUnavailable without ffmpeg)."""
    return _version(_ffmpeg())


def _check(codec: str) -> tuple[_Codec, str]:
    spec = _codec(codec)
    ffmpeg = _ffmpeg()
    encoders, bsfs = _ffmpeg_lists(ffmpeg)
    if not any(line.split()[1:2] == [spec.encoder] for line in encoders.splitlines() if line.strip()):
        raise BaselineUnavailable(f"this ffmpeg ({ffmpeg}) has no {spec.encoder} encoder: {spec.package_hint}")
    if "filter_units" not in bsfs.split():
        raise BaselineUnavailable(f"this ffmpeg ({ffmpeg}) has no filter_units bitstream filter (needed to drop SEI); "
                                  f"use ffmpeg >= 4.0, e.g. apt-get install ffmpeg")
    return spec, ffmpeg


def available(codec: str) -> tuple[bool, str]:
    """(True, "ffmpeg ... with libx26x") or (False, why) for "x264" / "x265"."""
    try:
        spec, ffmpeg = _check(codec)
    except BaselineUnavailable as err:
        return False, str(err)
    return True, f"{_version(ffmpeg)} ({ffmpeg}) with {spec.encoder}"


# --- bitstream inspection ------------------------------------------------------------------------
def nal_unit_types(data: bytes, codec: str) -> list[int]:
    """NAL unit types of an Annex B stream (start codes 00 00 01; emulation prevention means no false ones)."""
    spec = _codec(codec)
    types, pos = [], data.find(b"\x00\x00\x01")
    while 0 <= pos < len(data) - 3:
        header = data[pos + 3]
        types.append(header & 0x1F if spec.muxer == "h264" else (header >> 1) & 0x3F)
        pos = data.find(b"\x00\x00\x01", pos + 3)
    return types


# --- one point -----------------------------------------------------------------------------------
def _y4m_frames(path: Path) -> int:
    """Frame count of a y4m file from its header and size (frame headers "FRAME\\n", as ffmpeg writes)."""
    from .data import read_y4m, read_y4m_header

    header = read_y4m_header(path)
    payload = header.width * header.height * 3 // 2
    if header.chroma == "444":
        payload = header.width * header.height * 3
    elif header.chroma == "mono":
        payload = header.width * header.height
    size = path.stat().st_size - header.header_bytes
    if size % (6 + payload) == 0:
        return size // (6 + payload)
    return read_y4m(path).num_frames  # frame headers with parameters: count them


def _run(cmd: list[str], cwd: str) -> float:
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"ffmpeg failed (exit {proc.returncode}):\n  {shlex.join(cmd)}\n{proc.stderr.strip()[-2000:]}")
    return seconds


def _encode_args(spec: _Codec, crf: int, keyint: int, preset: str, tune: str) -> tuple[list[str], dict]:
    args = ["-an", "-c:v", spec.encoder, "-preset", preset, "-tune", tune, "-crf", str(crf)]
    if spec.name == "x264":
        args += ["-g", str(keyint), "-sc_threshold", "0", "-threads", "1"]
    else:
        args += ["-x265-params", f"keyint={keyint}:scenecut=0:info=0:log-level=error:pools=1:frame-threads=1"]
    remove = "|".join(str(t) for t in spec.sei_types)
    args += ["-pix_fmt", "yuv420p", "-bsf:v", f"filter_units=remove_types={remove}", "-f", spec.muxer]
    settings = {"encoder": spec.encoder, "preset": preset, "tune": tune, "crf": crf, "pix_fmt": "yuv420p",
                "keyint": keyint, "scenecut": False, "threads": 1, "bframes": "encoder default",
                "sei_removed": f"filter_units remove_types={remove}" + (" and x265 info=0" if spec.name == "x265" else ""),
                "stream": f"raw {spec.muxer} elementary stream (parameter sets counted, SEI not)"}
    return args, settings


def _source_y4m(source, fps, tmp: str, max_frames: int | None) -> tuple[Path, int, Fraction | None, bool]:
    """(y4m path, frames to encode, fps to force or None, whether the path is ours)."""
    if isinstance(source, (str, os.PathLike)):
        path = Path(source).resolve()
        if not path.exists():
            raise FileNotFoundError(f"{path}: no such file")
        if path.suffix.lower() != ".y4m":
            raise ValueError(f"{path}: baselines read .y4m files (convert: ffmpeg -i {path.name} -pix_fmt yuv420p clip.y4m)")
        frames = _y4m_frames(path)
        if max_frames is not None:
            frames = min(frames, max_frames)
        return path, frames, (Fraction(fps) if fps is not None else None), False
    from .data import write_video

    video = torch.as_tensor(source)
    if video.ndim == 3:
        video = video[None]
    if max_frames is not None:
        video = video[:max_frames]
    path = Path(tmp) / "source.y4m"
    write_video(path, video, fps if fps is not None else Fraction(25))
    return path, int(video.shape[0]), None, True


def encode_decode(source, codec: str, crf: int, fps=None, preset: str = "veryslow", tune: str = "psnr",
                  max_frames: int | None = None) -> BaselinePoint:
    """Encode ``source`` (a .y4m path or a (T, 3, H, W) RGB tensor) with x264/x265 at ``crf``, decode it back.

    ``fps``: for a tensor the frame rate written to the y4m (default 25); for a path None keeps the
    file's rate, a value forces it (ffmpeg ``-r`` on the input: new timestamps, no frame dropped).
    ``max_frames`` encodes only the first frames. Raises BaselineUnavailable without ffmpeg/encoder.
    """
    spec, ffmpeg = _check(codec)
    crf = int(crf)
    if not 0 <= crf <= MAX_CRF:
        raise ValueError(f"crf must be in 0..{MAX_CRF}, got {crf}")
    from .data import read_y4m, yuv420_to_rgb

    with tempfile.TemporaryDirectory(prefix="progvc_baseline_") as tmp:
        src, frames, force_fps, ours = _source_y4m(source, fps, tmp, max_frames)
        stream, dec = f"stream{spec.suffix}", "decoded.y4m"
        pre = ["-r", str(force_fps)] if force_fps is not None else []
        limit = ["-frames:v", str(frames)] if max_frames is not None else []
        args, settings = _encode_args(spec, crf, max(frames, 1), preset, tune)
        enc_cmd = [ffmpeg, "-hide_banner", "-nostdin", "-y", "-loglevel", "error", *pre, "-i", src.name if ours else str(src), *limit,
                   *args, stream]
        dec_cmd = [ffmpeg, "-hide_banner", "-nostdin", "-y", "-loglevel", "error", "-i", stream,
                   "-f", "yuv4mpegpipe", "-pix_fmt", "yuv420p", dec]
        encode_seconds = _run(enc_cmd, tmp)
        data = (Path(tmp) / stream).read_bytes()
        decode_seconds = _run(dec_cmd, tmp)
        video = read_y4m(Path(tmp) / dec)

    types = nal_unit_types(data, spec.name)
    sei = [t for t in types if t in spec.sei_types]
    if sei:
        raise RuntimeError(f"{spec.encoder} stream still holds {len(sei)} SEI NAL units after filter_units")
    if video.num_frames != frames:
        raise RuntimeError(f"{spec.encoder} at CRF {crf}: decoded {video.num_frames} frames, expected {frames}")
    decoded = yuv420_to_rgb(video.y, video.u, video.v)
    settings.update({
        "ffmpeg": _version(ffmpeg), "nal_units": {int(t): types.count(t) for t in sorted(set(types))},
        "intra_pictures": sum(types.count(t) for t in spec.irap_types),
        "fps": str(force_fps) if force_fps is not None else (str(video.fps) + " (from the y4m)"),
        "source": str(source) if isinstance(source, (str, os.PathLike)) else "tensor (written with write_video to y4m)",
        "timing": "wall seconds of the ffmpeg process (start-up and y4m I/O included), one encoder thread",
    })
    return BaselinePoint(
        codec=spec.name, crf=crf, bytes=len(data), frames=frames, width=video.width, height=video.height,
        bpp=metrics.bpp(len(data), frames, video.height, video.width), decoded=decoded,
        encode_seconds=encode_seconds, decode_seconds=decode_seconds,
        commands=[shlex.join(enc_cmd), shlex.join(dec_cmd)], settings=settings, yuv=(video.y, video.u, video.v),
        stream=data,
    )


# --- CRF ladder ----------------------------------------------------------------------------------
_LOG_SLOPE = -math.log(2) / 6  # log(bpp) per CRF step: the rate roughly halves every 6 CRF


def _crf_for(target_bpp: float, done: dict[int, BaselinePoint]) -> float:
    """CRF where log(bpp) reaches the target, from the two encoded CRFs nearest to it in log-rate."""
    crfs = sorted(done, key=lambda c: abs(math.log(done[c].bpp / target_bpp)))
    c0 = crfs[0]
    slope = _LOG_SLOPE
    if len(crfs) > 1:
        c1 = crfs[1]
        measured = (math.log(done[c1].bpp) - math.log(done[c0].bpp)) / (c1 - c0)
        slope = min(max(measured, 3 * _LOG_SLOPE), _LOG_SLOPE / 3)  # keep it negative and plausible
        if target_bpp > max(p.bpp for p in done.values()):
            # beyond the highest rate: the curve steepens as CRF falls (a wide secant from CRF 51
            # is too flat there and overshoots), so take at least the 6-CRF-halving slope
            slope = min(slope, _LOG_SLOPE)
    return c0 + (math.log(target_bpp) - math.log(done[c0].bpp)) / slope


def crf_ladder(source, codec: str, bpp_range: Sequence[float] = (0.002, 0.15), fps=None, max_points: int = 8,
               preset: str = "veryslow", tune: str = "psnr", min_crf: int = 0, max_frames: int | None = None,
               max_probes: int = 4) -> list[BaselinePoint]:
    """Points at CRFs chosen for this clip so they span ``bpp_range``; sorted by rate (bpp).

    1. CRF 51, the lowest rate x264/x265 can reach (always in the ladder). If even it is above
       ``hi`` it is returned alone; if it is below ``lo``, a probe looks for the CRF whose rate is
       about ``lo`` and that becomes the bottom of the ladder.
    2. Top: the CRF whose rate first exceeds ``hi``, found by secant steps on log(bpp) vs CRF
       (starting from "rate halves every 6 CRF"); at most ``max_probes`` encodes, stops at ``min_crf``.
    3. Fill: CRFs evenly spaced between top and bottom (even in CRF is close to even in log-rate),
       reusing any probe that already sits near a target, until ``max_points`` points lie there.

    Every encode done is returned, none is repeated: at most ``max_points + max_probes`` encodes
    (8 to 10 for Foreman QCIF, 30 frames). Source handling is that of :func:`encode_decode`; a tensor
    is written to a y4m once.
    """
    lo, hi = (float(v) for v in bpp_range)
    if not 0 < lo < hi:
        raise ValueError(f"bpp_range must be (lo, hi) with 0 < lo < hi, got {bpp_range}")
    if max_points < 2:
        raise ValueError(f"max_points must be >= 2, got {max_points}")
    _check(codec)
    done: dict[int, BaselinePoint] = {}
    with tempfile.TemporaryDirectory(prefix="progvc_ladder_") as tmp:
        if not isinstance(source, (str, os.PathLike)):
            src, _, _, _ = _source_y4m(source, fps, tmp, max_frames)
            source, fps, max_frames = src, None, None

        def encode(crf: int) -> BaselinePoint:
            crf = int(min(max(crf, min_crf), MAX_CRF))
            if crf not in done:
                done[crf] = encode_decode(source, codec, crf, fps=fps, preset=preset, tune=tune, max_frames=max_frames)
            return done[crf]

        bottom = encode(MAX_CRF)
        if bottom.bpp > hi:
            return [bottom]
        bottom_crf = MAX_CRF
        if bottom.bpp < lo:
            bottom_crf = min(MAX_CRF, max(min_crf, math.ceil(_crf_for(lo, done))))
            encode(bottom_crf)
        for _ in range(max_probes):
            below = min((c for c, p in done.items() if p.bpp <= hi), default=MAX_CRF)
            guess = math.floor(_crf_for(hi * 1.1, done))  # aim a little above hi
            crf = min(max(guess, min_crf), below - 1)
            if crf < min_crf or crf in done:
                break
            if encode(crf).bpp > hi:
                break
            if crf == min_crf:
                break
        # top: the highest CRF whose rate exceeds hi (closest to hi), or (never exceeded: min_crf reached) the lowest CRF encoded
        top_crf = max((c for c, p in done.items() if p.bpp > hi), default=min(done))

        def inside() -> list[int]:
            return sorted(c for c in done if top_crf <= c <= bottom_crf)

        span = bottom_crf - top_crf
        if span > 1:
            spacing = span / (max_points - 1)
            for target in np.linspace(top_crf, bottom_crf, max_points)[1:-1]:
                if len(inside()) >= max_points:
                    break
                if any(abs(c - target) < spacing / 2 for c in inside()):
                    continue
                encode(round(target))
            while len(inside()) < max_points:  # fill the widest CRF gap left
                crfs = inside()
                gap, left = max((b - a, a) for a, b in zip(crfs, crfs[1:]))
                if gap < 2:
                    break
                encode(left + gap // 2)
    return sorted(done.values(), key=lambda p: (p.bpp, -p.crf))
