"""Metrics on known values: bpp, PSNR (RGB/YUV), MS-SSIM sizes, BD-rate, texture, CompressAI JSON."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from progvc_lab.data import read_video, sample_clip_path, synthetic_clip
from progvc_lab.metrics import (
    bd_rate, bd_rate_report, bpp, compressai_json, ms_ssim, pchip_integral, pchip_interpolate, psnr, psnr_per_frame,
    psnr_yuv, quality_gap_at_rate, rd_frontier, ssim, texture_energy, texture_energy_ratio,
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


# --- BD-rate report, quality gap, agreement with the bjontegaard package ------------------------------
ANCHOR_R = np.array([0.0105, 0.0193, 0.0445, 0.0979, 0.1865])  # x264 on Foreman (bpp, PSNR-Y)
ANCHOR_Q = np.array([22.18, 26.44, 31.70, 36.01, 38.94])
CURVE_PAIRS = [
    (ANCHOR_R, ANCHOR_Q, [0.0127, 0.0197, 0.0408, 0.0796, 0.1155, 0.1892], [22.89, 27.24, 32.23, 35.93, 37.73, 39.93]),
    ([0.02, 0.04, 0.08, 0.16], [28, 31, 33.5, 35], [0.015, 0.035, 0.07, 0.15], [28.5, 31.2, 34, 35.8]),
    ([100, 200, 400, 800], [30, 33, 36, 38], [90, 180, 360, 720, 1500], [29, 32.5, 35, 37.5, 40]),
    ([0.01, 0.03, 0.05], [0.2, 0.5, 0.7], [0.02, 0.05, 0.1, 0.2], [0.4, 0.6, 0.8, 0.9]),  # MS-SSIM-like
]


@pytest.mark.parametrize("pair", range(len(CURVE_PAIRS)))
def test_bd_rate_agrees_with_the_bjontegaard_package(pair):
    bjontegaard = pytest.importorskip("bjontegaard")
    r1, d1, r2, d2 = (np.asarray(v, float) for v in CURVE_PAIRS[pair])
    # its API: (rate_anchor, dist_anchor, rate_test, dist_test, method); points must be in increasing
    # order (it does not sort), exact PCHIP integral over the overlap, log10 rates (same percentage)
    ref = bjontegaard.bd_rate(r1, d1, r2, d2, method="pchip", require_matching_points=False, min_overlap=0)
    assert bd_rate(r1, d1, r2, d2, integration="exact") == pytest.approx(ref, abs=1e-8)
    assert bd_rate(r1, d1, r2, d2) == pytest.approx(ref, abs=0.05)  # 100-sample trapezoid (DCVC's way)
    rep = bd_rate_report(r1, d1, r2, d2)
    assert rep["bd_rate"] == pytest.approx(ref, abs=1e-8) and rep["reference"] == pytest.approx(ref, abs=1e-8)


def test_pchip_integral_is_exact():
    x, y = np.array([0.0, 1.0, 2.5, 4.0]), np.array([0.0, 2.0, 2.5, 4.0])
    dense = np.linspace(0.3, 3.7, 200001)
    v = pchip_interpolate(x, y, dense)
    numeric = float(((v[1:] + v[:-1]) / 2 * np.diff(dense)).sum())
    assert pchip_integral(x, y, 0.3, 3.7) == pytest.approx(numeric, abs=1e-8)
    assert pchip_integral([0, 1], [1, 3], 0, 1) == pytest.approx(2.0)  # a line


@pytest.mark.parametrize("integration", ["trapezoid", "exact"])
def test_bd_rate_known_answers(integration):
    # half the rate at every quality: exactly -50 %
    assert bd_rate(ANCHOR_R, ANCHOR_Q, ANCHOR_R * 0.5, ANCHOR_Q, integration=integration) == pytest.approx(-50.0, abs=1e-9)
    # PSNR = a + b ln(rate); the test curve is c dB better at every rate: at equal PSNR it needs
    # ln r_t = ln r_a - c / b, so BD-rate = exp(-c / b) - 1 (PCHIP reproduces the straight line)
    b, c = 4.0, 1.5
    rates = np.array([0.01, 0.02, 0.05, 0.1, 0.2])
    quality = 40 + b * np.log(rates)
    expected = (math.exp(-c / b) - 1) * 100
    assert bd_rate(rates, quality, rates, quality + c, integration=integration) == pytest.approx(expected, abs=1e-9)
    rep = bd_rate_report(rates, quality, rates, quality + c, integration=integration)
    assert rep["bd_rate"] == pytest.approx(expected, abs=1e-9)
    assert rep["overlap"] == pytest.approx([quality[0] + c, quality[-1]])


def test_bd_rate_report_lower_is_better_metric():
    lpips = np.array([0.55, 0.42, 0.30, 0.21])  # falls as the rate rises
    rates = np.array([0.01, 0.02, 0.04, 0.08])
    rep = bd_rate_report(rates, lpips, rates * 0.5, lpips, higher_is_better=False)
    assert rep["bd_rate"] == pytest.approx(-50.0, abs=1e-9) and rep["overlap"] == pytest.approx([0.21, 0.55])
    # read as higher-is-better, the same LPIPS curve would have rate falling with "quality": the
    # monotone reduction keeps a single point and the report says so instead of inventing a number
    wrong = bd_rate_report(rates, lpips, rates * 0.5, lpips, higher_is_better=True)
    assert wrong["bd_rate"] is None and wrong["note"].startswith("too few points")
    assert bd_rate(rates, lpips, rates * 2, lpips, higher_is_better=False) == pytest.approx(100.0)


def test_bd_rate_report_no_overlap_and_few_points():
    rep = bd_rate_report([1, 2, 3], [20, 21, 22], [1, 2, 3], [30, 31, 32])
    assert rep["bd_rate"] is None and rep["overlap"] is None and rep["note"] == "no overlap"
    # two points per curve: PCHIP is the line in log-rate; computed, but flagged as rough
    rep = bd_rate_report([0.01, 0.04], [30, 34], [0.005, 0.02], [30, 34])
    assert rep["bd_rate"] == pytest.approx(-50.0) and rep["note"].startswith("few points in overlap")
    # the overlap holds one anchor point: still computed over the shared range only
    rep = bd_rate_report(ANCHOR_R, ANCHOR_Q, [0.15, 0.3, 0.5], [38.0, 40.0, 42.0])
    assert rep["overlap"] == pytest.approx([38.0, 38.94]) and rep["points_in_overlap"] == {"anchor": 1, "test": 1}
    assert rep["bd_rate"] is not None and "few points" in rep["note"]
    assert bd_rate_report([0.01], [30.0], ANCHOR_R, ANCHOR_Q)["note"].startswith("too few points")


def test_bd_rate_report_drops_non_monotone_points():
    # a point that costs more rate than its neighbour and gives less quality is dominated
    rates = np.array([0.01, 0.02, 0.025, 0.04, 0.08])
    quality = np.array([28.0, 31.0, 30.5, 33.5, 35.0])
    assert rd_frontier(rates, quality).tolist() == [0, 1, 3, 4]
    rep = bd_rate_report(rates, quality, rates / 2, quality)
    assert rep["dropped"] == {"anchor": [2], "test": [2]} and "dropped non-monotone" in rep["note"]
    clean = bd_rate_report(rates[[0, 1, 3, 4]], quality[[0, 1, 3, 4]], rates[[0, 1, 3, 4]] / 2, quality[[0, 1, 3, 4]])
    assert rep["bd_rate"] == pytest.approx(clean["bd_rate"]) == pytest.approx(-50.0)
    # the convex hull also drops points under the chord of their neighbours
    concave_break = np.array([28.0, 29.0, 33.0, 35.0])
    assert rd_frontier([0.01, 0.02, 0.04, 0.08], concave_break, rule="hull").tolist() == [0, 2, 3]
    assert rd_frontier([0.01, 0.02], [30.0, math.inf]).tolist() == [0]  # lossless inf PSNR is dropped


def test_quality_gap_at_rate():
    rates = np.array([0.01, 0.02, 0.04, 0.08])
    quality = 40 + 4.0 * np.log(rates)
    gaps = quality_gap_at_rate(rates, quality, [0.005, 0.01, 0.03, 0.08, 0.2], [20.0, 25.0, 30.0, 31.0, 35.0])
    assert gaps[0] is None and gaps[-1] is None  # outside the anchor's rates: no extrapolation
    assert gaps[1] == pytest.approx(25.0 - quality[0])
    assert gaps[2] == pytest.approx(30.0 - (40 + 4.0 * math.log(0.03)), abs=1e-9)  # PCHIP on a line in log-rate
    assert gaps[3] == pytest.approx(31.0 - quality[-1])
    lpips = np.array([0.5, 0.4, 0.3, 0.2])
    assert quality_gap_at_rate(rates, lpips, [0.02], [0.3], higher_is_better=False) == [pytest.approx(-0.1)]
