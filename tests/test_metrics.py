"""Metrics on known values: bpp, PSNR (RGB/YUV), MS-SSIM sizes, BD-rate, texture, CompressAI JSON."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from progvc_lab.data import read_video, sample_clip_path, synthetic_clip
from progvc_lab.metrics import (
    bd_rate, bpp, compressai_json, ms_ssim, pchip_interpolate, psnr, psnr_per_frame, psnr_yuv, ssim, texture_energy,
    texture_energy_ratio,
)


def test_bpp():
    assert bpp(1000, 10, 100, 80) == pytest.approx(1000 * 8 / (10 * 100 * 80))
    with pytest.raises(ValueError):
        bpp(10, 0, 144, 176)


def test_psnr_known_values_and_identical_frames():
    a = torch.zeros(2, 3, 8, 8)
    b = a.clone()
    b[1] += 0.1  # MSE 0.01 -> 20 dB
    per_frame = psnr_per_frame(a, b)
    assert per_frame[0] == math.inf and per_frame[1].item() == pytest.approx(20.0)
    assert psnr(a, a) == math.inf
    assert psnr(a[1:], b[1:]) == pytest.approx(20.0)
    assert psnr(a[None], b[None]) == psnr(a, b)  # (B, T, 3, H, W) works too
    with pytest.raises(ValueError, match="shapes differ"):
        psnr(a, b[:, :, :4])


def test_psnr_yuv_weights_and_identity():
    clip = synthetic_clip(2, 16, 16, seed=0)
    noisy = (clip + 0.02 * torch.randn(clip.shape, generator=torch.Generator().manual_seed(0))).clamp(0, 1)
    result = psnr_yuv(clip, noisy)
    assert result["yuv"] == pytest.approx((6 * result["y"] + result["u"] + result["v"]) / 8)
    assert 25 < result["y"] < 45
    assert psnr_yuv(clip, clip)["yuv"] == math.inf


def test_ms_ssim_on_qcif_and_small_frames():
    frames, _ = read_video(sample_clip_path("foreman"), max_frames=2)  # 176x144 -> 7-tap window
    assert ms_ssim(frames, frames) == pytest.approx(1.0, abs=1e-5)
    noisy = (frames + 0.05 * torch.randn(frames.shape, generator=torch.Generator().manual_seed(0))).clamp(0, 1)
    assert 0.5 < ms_ssim(frames, noisy) < 0.999
    small = synthetic_clip(2, 64, 64)
    with pytest.raises(ValueError, match="64x64.*ssim"):
        ms_ssim(small, small)
    assert ssim(small, small) == pytest.approx(1.0, abs=1e-5)


def test_pchip_matches_data_and_stays_monotone():
    x, y = np.array([0.0, 1.0, 2.0, 4.0]), np.array([0.0, 1.0, 1.5, 1.6])
    assert np.allclose(pchip_interpolate(x, y, x), y)
    dense = pchip_interpolate(x, y, np.linspace(0, 4, 200))
    assert np.all(np.diff(dense) >= -1e-12)  # monotone data -> monotone curve (no overshoot)


@pytest.mark.parametrize("piecewise", [True, False])
def test_bd_rate_identical_and_half_rate(piecewise):
    rate = np.array([0.02, 0.04, 0.08, 0.16])
    quality = np.array([28.0, 31.0, 33.5, 35.0])
    assert bd_rate(rate, quality, rate, quality, piecewise=piecewise) == pytest.approx(0.0, abs=1e-9)
    assert bd_rate(rate, quality, rate / 2, quality, piecewise=piecewise) == pytest.approx(-50.0, abs=1e-6)
    assert bd_rate(rate, quality, rate * 1.1, quality, piecewise=piecewise) == pytest.approx(10.0, abs=1e-6)
    # point order does not matter: pairs are sorted together
    order = [2, 0, 3, 1]
    assert bd_rate(rate[order], quality[order], rate / 2, quality, piecewise=piecewise) == pytest.approx(-50.0)


def test_bd_rate_needs_three_points_and_overlap():
    with pytest.raises(ValueError, match=">= 3"):
        bd_rate([1, 2], [30, 31], [1, 2, 3], [30, 31, 32])
    with pytest.raises(ValueError, match="do not overlap"):
        bd_rate([1, 2, 3], [20, 21, 22], [1, 2, 3], [30, 31, 32])
    assert bd_rate([1, 2, 3], [30, 31, 32], [1, 2, 3], [30, 31, 32], piecewise=False) == pytest.approx(0.0, abs=1e-9)


def test_texture_energy():
    clip = synthetic_clip(2, 32, 32, seed=1)
    flat = torch.full_like(clip, 0.5)
    assert texture_energy(flat) == 0.0 and texture_energy(clip) > 0
    blurred = torch.nn.functional.avg_pool2d(clip, 3, stride=1, padding=1, count_include_pad=False)
    assert texture_energy_ratio(blurred, clip) < 0.7
    assert texture_energy_ratio(clip, clip) == pytest.approx(1.0)


def test_compressai_json_layout():
    out = compressai_json("progvc tiny", "one encode", [0.01, 0.02], [25.0, 27.5], ms_ssim=[0.9, 0.95],
                          command="progvc-lab eval")
    assert out["name"] == "progvc tiny" and out["command"] == "progvc-lab eval"
    assert out["results"] == {"bpp": [0.01, 0.02], "psnr-rgb": [25.0, 27.5], "ms-ssim": [0.9, 0.95]}
    json.dumps(out)
    with pytest.raises(ValueError):
        compressai_json("x", "y", [0.1], [30.0, 31.0])
