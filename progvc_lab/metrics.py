"""Rate and quality metrics, computed the way video-coding papers report them.

- **bpp** (bits per pixel) = bytes * 8 / (frames * H * W), luma pixels at the original size, and
  the stream's header bytes included.
- **PSNR** per frame, then the mean over frames (not PSNR of the mean MSE), in dB:
  ``psnr`` on RGB in [0, 1]; ``psnr_yuv`` on 8-bit BT.601 limited-range YUV 4:2:0 (both inputs are
  converted and rounded to 8-bit codes first, like a y4m file), returning Y, U, V and the weighted
  ``(6Y + U + V) / 8`` that DCVC reports (CompressAI's ``psnr-yuv`` uses ``(4Y + U + V) / 6``).
  Identical frames give ``inf``.
- **MS-SSIM** through ``pytorch_msssim`` on RGB. It down-samples 4 times, so the frame's smaller
  side must exceed ``(win_size - 1) * 16``: the standard 11-tap window needs > 160 px, so frames
  between 97 and 160 px (QCIF is 176x144) use a 7-tap window (stated in the result name you should
  report: "MS-SSIM, 7-tap window"). Frames of 96 px or less raise ValueError: use :func:`ssim`.
- **BD-rate**: Bjøntegaard delta rate on (log rate, PSNR), the percentage of rate the test codec
  needs compared to the anchor at equal quality (negative = saves rate). ``piecewise=True`` uses
  monotone PCHIP interpolation with 100-sample trapezoid integration (as the widely used
  ``Bjontegaard_metric`` code and DCVC do); ``piecewise=False`` a cubic polynomial fit.
- **texture energy**: a weight-free statistic of fine detail (mean squared Laplacian of luma). Its
  ratio decoded/original shows whether a codec blurs (< 1) or invents texture (~1 or > 1).
- ``compressai_json`` packs results in CompressAI's JSON layout.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .data.color import rgb_to_yuv420


def bpp(num_bytes: int, num_frames: int, height: int, width: int) -> float:
    """Bits per pixel: num_bytes * 8 / (num_frames * height * width)."""
    if num_frames <= 0 or height <= 0 or width <= 0:
        raise ValueError(f"bpp: frames, height and width must be positive, got {num_frames}, {height}, {width}")
    return num_bytes * 8.0 / (num_frames * height * width)


def _as_NCHW(x) -> torch.Tensor:
    x = torch.as_tensor(x).detach().float()
    if x.ndim == 3:
        x = x[None]
    return x.reshape(-1, *x.shape[-3:])  # (B, T, 3, H, W) -> (B*T, 3, H, W)


def _psnr_from_mse(mse: torch.Tensor, max_val: float) -> torch.Tensor:
    mse = mse.double()
    out = torch.full_like(mse, math.inf)
    nonzero = mse > 0
    out[nonzero] = 10.0 * torch.log10(max_val**2 / mse[nonzero])
    return out


def psnr_per_frame(a, b, max_val: float = 1.0) -> torch.Tensor:
    """PSNR in dB of each frame: (T,) for (T, 3, H, W) inputs (inf where frames are identical)."""
    a, b = _as_NCHW(a), _as_NCHW(b)
    if a.shape != b.shape:
        raise ValueError(f"psnr: shapes differ: {tuple(a.shape)} vs {tuple(b.shape)}")
    return _psnr_from_mse(((a - b) ** 2).mean(dim=(1, 2, 3)), max_val)


def psnr(a, b, max_val: float = 1.0) -> float:
    """Mean over frames of the per-frame RGB PSNR in dB (inf if every frame is identical)."""
    return float(psnr_per_frame(a, b, max_val).mean())


def _plane_psnr(ref: np.ndarray, dist: np.ndarray) -> float:
    ref, dist = ref.astype(np.float64), dist.astype(np.float64)
    mse_T = ((ref - dist) ** 2).reshape(len(ref), -1).mean(axis=1)
    return float(_psnr_from_mse(torch.from_numpy(mse_T), 255.0).mean())


def psnr_yuv420_planes(ref: tuple, dist: tuple) -> dict[str, float]:
    """PSNR of 8-bit (y, u, v) planes (T, H, W) / (T, H/2, W/2): keys y, u, v, yuv = (6Y+U+V)/8."""
    y, u, v = (_plane_psnr(r, d) for r, d in zip(ref, dist))
    return {"y": y, "u": u, "v": v, "yuv": (6 * y + u + v) / 8}


def psnr_yuv(a_rgb, b_rgb) -> dict[str, float]:
    """Y, U, V and weighted (6Y+U+V)/8 PSNR of two RGB clips, on 8-bit BT.601 limited YUV 4:2:0."""
    a, b = _as_NCHW(a_rgb), _as_NCHW(b_rgb)
    if a.shape != b.shape:
        raise ValueError(f"psnr_yuv: shapes differ: {tuple(a.shape)} vs {tuple(b.shape)}")
    return psnr_yuv420_planes(rgb_to_yuv420(a), rgb_to_yuv420(b))


def ms_ssim_window(height: int, width: int) -> int:
    """The Gaussian window size ms_ssim uses for this frame size (11, or 7 for small frames)."""
    side = min(height, width)
    if side > 160:
        return 11
    if side > 96:
        return 7
    raise ValueError(
        f"MS-SSIM needs frames whose smaller side is over 96 px (4 down-samplings of a 7-tap "
        f"window); got {width}x{height}. Use progvc_lab.metrics.ssim for small frames."
    )


def ms_ssim(a, b, data_range: float = 1.0, win_size: int | None = None) -> float:
    """Mean MS-SSIM over frames of two RGB clips in [0, data_range] (see the module docstring)."""
    from pytorch_msssim import ms_ssim as _ms_ssim

    a, b = _as_NCHW(a), _as_NCHW(b)
    win = win_size or ms_ssim_window(*a.shape[-2:])
    return float(_ms_ssim(a, b, data_range=data_range, win_size=win, size_average=True))


def ssim(a, b, data_range: float = 1.0, win_size: int = 11) -> float:
    """Mean single-scale SSIM over frames (works for any frame size >= win_size)."""
    from pytorch_msssim import ssim as _ssim

    a, b = _as_NCHW(a), _as_NCHW(b)
    return float(_ssim(a, b, data_range=data_range, win_size=win_size, size_average=True))


def _pchip_slopes(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Derivatives of the monotone cubic (Fritsch-Carlson, as scipy's PchipInterpolator)."""
    h = np.diff(x)
    delta = np.diff(y) / h
    n = len(x)
    d = np.zeros(n)
    if n == 2:
        return np.full(n, delta[0])
    for k in range(1, n - 1):
        if delta[k - 1] * delta[k] > 0:
            w1, w2 = 2 * h[k] + h[k - 1], h[k] + 2 * h[k - 1]
            d[k] = (w1 + w2) / (w1 / delta[k - 1] + w2 / delta[k])

    def edge(h0, h1, m0, m1):
        slope = ((2 * h0 + h1) * m0 - h0 * m1) / (h0 + h1)
        if np.sign(slope) != np.sign(m0):
            return 0.0
        if np.sign(m0) != np.sign(m1) and abs(slope) > 3 * abs(m0):
            return 3 * m0
        return slope

    d[0] = edge(h[0], h[1], delta[0], delta[1])
    d[-1] = edge(h[-1], h[-2], delta[-1], delta[-2])
    return d


def pchip_interpolate(x: Sequence[float], y: Sequence[float], x_new: Sequence[float]) -> np.ndarray:
    """Monotone piecewise-cubic Hermite interpolation (x strictly increasing)."""
    x, y, x_new = np.asarray(x, float), np.asarray(y, float), np.asarray(x_new, float)
    d = _pchip_slopes(x, y)
    k = np.clip(np.searchsorted(x, x_new, side="right") - 1, 0, len(x) - 2)
    h = x[k + 1] - x[k]
    s = (x_new - x[k]) / h
    h00, h10 = 2 * s**3 - 3 * s**2 + 1, s**3 - 2 * s**2 + s
    h01, h11 = -2 * s**3 + 3 * s**2, s**3 - s**2
    return h00 * y[k] + h10 * h * d[k] + h01 * y[k + 1] + h11 * h * d[k + 1]


def bd_rate(r1, d1, r2, d2, piecewise: bool = True) -> float:
    """Bjøntegaard delta rate in percent of curve 2 (test) against curve 1 (anchor).

    ``r`` are rates (bpp or bytes, any positive unit, the same for both), ``d`` the PSNR in dB.
    Each curve needs >= 3 points with distinct PSNR values; they are sorted by PSNR together (the
    points are pairs). The integral runs over the PSNR range the two curves share. -50 means the
    test codec needs half the rate. ``piecewise=False`` fits a cubic (degree n-1 for 3 points).
    """
    curves = []
    for name, r, d in (("anchor", r1, d1), ("test", r2, d2)):
        r, d = np.asarray(r, float), np.asarray(d, float)
        if r.shape != d.shape or r.ndim != 1 or len(r) < 3:
            raise ValueError(f"bd_rate: the {name} curve needs >= 3 (rate, PSNR) pairs, got {len(r)} rates and {len(d)} PSNRs")
        if np.any(r <= 0) or not np.all(np.isfinite(d)):
            raise ValueError(f"bd_rate: the {name} curve needs positive rates and finite PSNRs")
        order = np.argsort(d)
        if np.any(np.diff(d[order]) == 0):
            raise ValueError(f"bd_rate: the {name} curve has repeated PSNR values {d.tolist()}")
        curves.append((d[order], np.log(r[order])))
    (psnr1, log_r1), (psnr2, log_r2) = curves
    lo, hi = max(psnr1[0], psnr2[0]), min(psnr1[-1], psnr2[-1])
    if hi <= lo:
        raise ValueError(
            f"bd_rate: the PSNR ranges do not overlap ([{psnr1[0]:.2f}, {psnr1[-1]:.2f}] vs "
            f"[{psnr2[0]:.2f}, {psnr2[-1]:.2f}] dB); choose rate points with common quality"
        )
    if piecewise:
        samples = np.linspace(lo, hi, num=100)
        step = samples[1] - samples[0]
        v1, v2 = pchip_interpolate(psnr1, log_r1, samples), pchip_interpolate(psnr2, log_r2, samples)
        int1 = step * (v1.sum() - (v1[0] + v1[-1]) / 2)
        int2 = step * (v2.sum() - (v2[0] + v2[-1]) / 2)
    else:
        p1 = np.polyint(np.polyfit(psnr1, log_r1, min(3, len(psnr1) - 1)))
        p2 = np.polyint(np.polyfit(psnr2, log_r2, min(3, len(psnr2) - 1)))
        int1 = np.polyval(p1, hi) - np.polyval(p1, lo)
        int2 = np.polyval(p2, hi) - np.polyval(p2, lo)
    avg_diff = (int2 - int1) / (hi - lo)
    return float((np.exp(avg_diff) - 1) * 100)


_LAPLACIAN = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]])


def texture_energy(frames) -> float:
    """Mean squared Laplacian of BT.601 luma (in [0, 1] units): how much fine detail a clip has."""
    x = _as_NCHW(frames)
    luma = (0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2])[:, None]
    response = F.conv2d(F.pad(luma, (1, 1, 1, 1), mode="replicate"), _LAPLACIAN[None, None])
    return float((response**2).mean())


def texture_energy_ratio(decoded, original) -> float:
    """texture_energy(decoded) / texture_energy(original): < 1 blurred, ~1 as detailed."""
    ref = texture_energy(original)
    return texture_energy(decoded) / ref if ref > 0 else math.nan


def compressai_json(name: str, description: str, bpp_list, psnr_list, **more) -> dict:
    """Results in CompressAI's JSON layout.

    ``{"name", "description", "results": {"bpp": [...], "psnr-rgb": [...], ...}}``; extra keyword
    lists go into ``results`` with ``_`` spelled ``-`` (``ms_ssim=[...]`` -> ``"ms-ssim"``), extra
    scalars or dicts/strings (e.g. ``command="ffmpeg ..."``) go next to ``results``.
    """
    if len(bpp_list) != len(psnr_list):
        raise ValueError(f"compressai_json: {len(bpp_list)} bpp values but {len(psnr_list)} PSNR values")
    results = {"bpp": [float(v) for v in bpp_list], "psnr-rgb": [float(v) for v in psnr_list]}
    out: dict = {"name": name, "description": description}
    for key, value in more.items():
        if isinstance(value, (list, tuple, np.ndarray)):
            results[key.replace("_", "-")] = [float(v) for v in value]
        else:
            out[key] = value
    out["results"] = results
    return out
