"""Colour conversion between 8-bit YUV 4:2:0 planes and RGB tensors.

Files store video as Y'CbCr ("YUV"): a luma plane Y at full size and two chroma planes at half
width and half height (4:2:0). The models work on RGB tensors ``(T, 3, H, W)`` in [0, 1].

The matrix (which weights make luma out of R, G, B)::

    Y' = Kr*R + (1-Kr-Kb)*G + Kb*B          BT.601: Kr = 0.299,  Kb = 0.114   (default)
    Pb = (B - Y') / (2*(1-Kb))               BT.709: Kr = 0.2126, Kb = 0.0722
    Pr = (R - Y') / (2*(1-Kr))

and the range (how those values become 8-bit codes)::

    limited ("studio swing", default): Y = 16 + 219*Y',  Cb = 128 + 224*Pb,  Cr = 128 + 224*Pr
    full    ("JPEG"):                  Y = 255*Y',        Cb = 128 + 255*Pb,  Cr = 128 + 255*Pr

The default, **BT.601 limited range**, is what ffmpeg (and PyAV) assume for an untagged SD y4m such
as the derf QCIF/CIF clips, so RGB frames here match what ``ffmpeg -i clip.y4m frame%d.png`` gives.
Learned-codec papers often use BT.709 instead (DCVC, CompressAI): pass ``matrix="bt709"``; PSNR-RGB
values differ by up to ~1 dB between the two, so say which one you used.

Chroma up-sampling (4:2:0 -> RGB) is **nearest neighbour** by default (each chroma sample covers
its 2x2 luma block, as DCVC does) or bilinear (``chroma_upsample="bilinear"``, smoother edges).
Chroma down-sampling (RGB -> 4:2:0) is the **mean of each 2x2 block**. Nearest up + mean down is
an exact round trip for chroma, so YUV -> RGB -> YUV returns the codes within 1-2 values (only
rounding and out-of-gamut clipping remain).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

MATRICES = {"bt601": (0.299, 0.114), "bt709": (0.2126, 0.0722)}


def _coefficients(matrix: str) -> tuple[float, float]:
    try:
        return MATRICES[matrix.lower().replace(".", "").replace("-", "")]
    except KeyError:
        raise ValueError(f"unknown colour matrix {matrix!r}; use one of {sorted(MATRICES)}") from None


def _scales(full_range: bool) -> tuple[float, float, float]:
    """(luma offset, luma scale, chroma scale) in 8-bit code values."""
    return (0.0, 255.0, 255.0) if full_range else (16.0, 219.0, 224.0)


def _as_float_tensor(plane) -> torch.Tensor:
    if isinstance(plane, np.ndarray):
        plane = torch.from_numpy(np.ascontiguousarray(plane))
    return plane.to(torch.float32)


def yuv420_to_rgb(
    y, u, v, matrix: str = "bt601", full_range: bool = False, chroma_upsample: str = "nearest"
) -> torch.Tensor:
    """8-bit planes y (T, H, W), u/v (T, H/2, W/2) -> float32 RGB (T, 3, H, W) clipped to [0, 1].

    Accepts numpy arrays or tensors (uint8 codes 0..255). Default: BT.601 limited range, nearest
    chroma up-sampling (see the module docstring).
    """
    kr, kb = _coefficients(matrix)
    y_off, y_scale, c_scale = _scales(full_range)
    y_THW = _as_float_tensor(y)
    cbcr_T2hw = torch.stack([_as_float_tensor(u), _as_float_tensor(v)], dim=1)
    if y_THW.ndim == 2:
        y_THW, cbcr_T2hw = y_THW[None], cbcr_T2hw[None]
    H, W = y_THW.shape[-2:]
    if chroma_upsample == "nearest":
        cbcr_T2HW = cbcr_T2hw.repeat_interleave(2, dim=-2).repeat_interleave(2, dim=-1)[..., :H, :W]
    elif chroma_upsample == "bilinear":
        cbcr_T2HW = F.interpolate(cbcr_T2hw, size=(H, W), mode="bilinear", align_corners=False)
    else:
        raise ValueError(f"chroma_upsample must be 'nearest' or 'bilinear', got {chroma_upsample!r}")
    luma = (y_THW - y_off) / y_scale
    pb = (cbcr_T2HW[:, 0] - 128.0) / c_scale
    pr = (cbcr_T2HW[:, 1] - 128.0) / c_scale
    r = luma + 2 * (1 - kr) * pr
    b = luma + 2 * (1 - kb) * pb
    g = (luma - kr * r - kb * b) / (1 - kr - kb)
    return torch.stack([r, g, b], dim=1).clamp_(0.0, 1.0)


def rgb_to_yuv444_float(frames_T3HW: torch.Tensor, matrix: str = "bt601", full_range: bool = False) -> torch.Tensor:
    """RGB (..., 3, H, W) in [0, 1] -> Y'CbCr (..., 3, H, W) as float 8-bit code values / 255.

    No chroma sub-sampling and no rounding: for metrics and losses in YUV space. Limited range
    puts Y in [16, 235]/255 and Cb, Cr in [16, 240]/255.
    """
    kr, kb = _coefficients(matrix)
    y_off, y_scale, c_scale = _scales(full_range)
    frames = frames_T3HW.to(torch.float32)
    r, g, b = frames.unbind(dim=-3)
    luma = kr * r + (1 - kr - kb) * g + kb * b
    pb = (b - luma) / (2 * (1 - kb))
    pr = (r - luma) / (2 * (1 - kr))
    return torch.stack([y_off + y_scale * luma, 128.0 + c_scale * pb, 128.0 + c_scale * pr], dim=-3) / 255.0


def rgb_to_yuv420(
    frames_T3HW: torch.Tensor, matrix: str = "bt601", full_range: bool = False
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """RGB (T, 3, H, W) in [0, 1] -> uint8 numpy planes y (T, H, W), u and v (T, H/2, W/2).

    Chroma is the mean of each 2x2 block (H and W must be even). Values are rounded to the
    nearest code and clipped to 0..255.
    """
    frames = torch.as_tensor(frames_T3HW)
    if frames.ndim == 3:
        frames = frames[None]
    H, W = frames.shape[-2:]
    if H % 2 or W % 2:
        raise ValueError(f"rgb_to_yuv420: frame size {W}x{H} has an odd side; 4:2:0 needs even sizes (crop first).")
    yuv_T3HW = rgb_to_yuv444_float(frames.detach().cpu(), matrix, full_range) * 255.0
    cbcr_T2hw = F.avg_pool2d(yuv_T3HW[:, 1:], kernel_size=2)

    def to_u8(x: torch.Tensor) -> np.ndarray:
        return x.round().clamp(0, 255).to(torch.uint8).numpy()

    return to_u8(yuv_T3HW[:, 0]), to_u8(cbcr_T2hw[:, 0]), to_u8(cbcr_T2hw[:, 1])
