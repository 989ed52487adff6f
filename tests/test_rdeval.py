"""``progvc-lab eval`` (progvc_lab.rdeval): one scoring function, CompressAI-style records, BD-rate
summary, and the whole run on a tiny clip (with a stand-in baseline here, with real x264/x265 when
ffmpeg is installed)."""
from __future__ import annotations

import json
import math
import sys
import types
from fractions import Fraction

import numpy as np
import pytest
import torch

import progvc_lab
from progvc_lab import metrics, rdeval
from progvc_lab.cli import main
from progvc_lab.data import write_video
from progvc_lab.data.color import rgb_to_yuv420

from conftest import require_tool, skip_or_fail
from helpers import make_tiny_codec, one_thread, pattern_clip  # noqa: F401

pytestmark = pytest.mark.usefixtures("one_thread")


def _noisy(video, sigma=0.05, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (video + sigma * torch.randn(video.shape, generator=g)).clamp(0, 1)


def _plane_psnr(a, b):
    mse = ((a.astype(np.float64) - b.astype(np.float64)) ** 2).reshape(len(a), -1).mean(1)
    return float(np.mean(10 * np.log10(255.0**2 / mse)))


# ---- scoring -------------------------------------------------------------------------------------------
def test_score_matches_the_formulas():
    video = pattern_clip(3, 112, 128)
    decoded = _noisy(video)
    q = rdeval.score(video, decoded, perceptual=False)
    ref, dist = rgb_to_yuv420(video), rgb_to_yuv420(decoded)
    y, u, v = (_plane_psnr(r, d) for r, d in zip(ref, dist))
    assert q["psnr-y"] == pytest.approx(y, abs=1e-9)
    assert q["psnr-yuv611"] == pytest.approx((6 * y + u + v) / 8, abs=1e-9)
    mse = ((video.double() - decoded.double()) ** 2).mean(dim=(1, 2, 3))
    assert q["psnr-rgb"] == pytest.approx(float((10 * torch.log10(1 / mse)).mean()), abs=1e-6)
    from pytorch_msssim import ms_ssim

    assert q["ms-ssim-rgb"] == pytest.approx(float(ms_ssim(video, decoded, data_range=1.0, win_size=7)), abs=1e-6)
    y_ref = torch.from_numpy(ref[0]).float()[:, None] / 255
    y_dist = torch.from_numpy(dist[0]).float()[:, None] / 255
    assert q["ms-ssim-y"] == pytest.approx(float(ms_ssim(y_ref, y_dist, data_range=1.0, win_size=7)), abs=1e-6)
    assert q["texture-ratio"] > 1  # noise adds high-frequency energy
    assert q["st-lpips"] is None and q["gmsd"] is None  # perceptual=False


def test_score_says_none_where_a_metric_does_not_apply():
    small = pattern_clip(2, 32, 48)
    q = rdeval.score(small, _noisy(small), perceptual=False)
    assert q["ms-ssim-rgb"] is None and q["psnr-y"] is not None  # MS-SSIM needs > 96 px
    odd = pattern_clip(2, 33, 48)
    q = rdeval.score(odd, _noisy(odd), perceptual=False)
    assert q["psnr-y"] is None and q["psnr-rgb"] is not None  # 4:2:0 needs even sides
    with pytest.raises(rdeval.EvalError, match="does not match"):
        rdeval.score(small, small[:1], perceptual=False)


# ---- records and summary ---------------------------------------------------------------------------------
def _points(bpps, quality, key="psnr-y", tag="k"):
    return [{tag: i + 1, "bytes": int(b * 1000), "bpp": b, "decode_seconds": 0.1, key: q}
            for i, (b, q) in enumerate(zip(bpps, quality))]


def test_codec_record_is_compressai_style_with_ints():
    rec = rdeval.codec_record("ours", "d", _points([0.01, 0.02, 0.04], [25.0, 27.0, 29.0]), frames=30,
                              fps=Fraction(30), extra_lists=("k",), codec="ours")
    rdeval.check_record(rec)
    res = rec["results"]
    assert res["k"] == [1, 2, 3] and all(isinstance(v, int) for v in res["bytes"] + res["k"])
    assert res["bitrate"][0] == pytest.approx(10 * 8 / 1.0 / 1000)  # 10 bytes over 1 s = 0.08 kbps
    assert res["psnr-y"] == [25.0, 27.0, 29.0] and "ms-ssim-rgb" not in res
    bad = json.loads(json.dumps(rec))
    bad["results"]["k"] = [1.0, 2.0, 3.0]
    with pytest.raises(ValueError, match="integers"):
        rdeval.check_record(bad)
    bad["results"]["k"] = [1, 2]
    with pytest.raises(ValueError, match="has 2 values"):
        rdeval.check_record(bad)


def _pair_records(scale=0.5, key="psnr-y"):
    anchor_bpp = [0.01, 0.02, 0.04, 0.08]
    quality = [24.0, 27.0, 30.0, 33.0]
    anchor = rdeval.codec_record("x265", "d", _points(anchor_bpp, quality, key, "crf"), 30, 30, ("crf",),
                                 codec="x265", commands=[["ffmpeg"]])
    ours = rdeval.codec_record("ours", "d", _points([b * scale for b in anchor_bpp], quality, key), 30, 30,
                               codec="ours", sampler="zero", encode_fps=10.0)
    return anchor, ours


def test_summary_on_curves_with_a_known_answer():
    anchor, ours = _pair_records(scale=0.5)
    summary = rdeval.summarize([ours, anchor])
    rep = summary["bd_rate"]["ours vs x265"]["psnr-y"]
    assert rep["bd_rate"] == pytest.approx(-50.0, abs=1e-6)
    assert rep["overlap"] == pytest.approx([24.0, 33.0])
    # at each of our rates the anchor is interpolated in log-rate; where it has no point: None
    gaps = rep["gap_at_equal_rate"]
    assert gaps[0]["gap"] is None  # 0.005 bpp is below the anchor's lowest rate: no extrapolation
    assert gaps[1]["gap"] == pytest.approx(3.0, abs=0.5)  # at 0.01 bpp we have 27 dB, the anchor 24
    assert summary["bd_rate"]["ours vs x265"]["ms-ssim-rgb"]["bd_rate"] is None
    low = summary["low_rate"]["ours vs x265"]["psnr-y"]
    assert low["bpp"] == 0.04 and low["ours"] == 33.0 and low["baseline"] == pytest.approx(30.0)
    assert summary["speed"]["ours"]["encode_fps"] == 10.0


def test_summary_of_a_lower_is_better_metric():
    # ST-LPIPS falls as rate rises: the same known answer (-50%) and the gap read at our rate
    anchor, ours = _pair_records(scale=0.5, key="st-lpips")
    for rec in (anchor, ours):
        rec["results"]["st-lpips"] = [0.5, 0.4, 0.3, 0.2]
    summary = rdeval.summarize([ours, anchor])
    rep = summary["bd_rate"]["ours vs x265"]["st-lpips"]
    assert rep["bd_rate"] == pytest.approx(-50.0, abs=1e-6)
    low = summary["low_rate"]["ours vs x265"]["st-lpips"]
    assert low["ours"] == 0.2 and low["baseline"] == pytest.approx(0.3)


def test_summary_says_no_overlap_instead_of_extrapolating():
    anchor, ours = _pair_records()
    ours["results"]["psnr-y"] = [40.0, 41.0, 42.0, 43.0]
    rep = rdeval.summarize([ours, anchor])["bd_rate"]["ours vs x265"]["psnr-y"]
    assert rep["bd_rate"] is None and "no overlap" in rep["note"]


# ---- the whole run with a stand-in baseline (no ffmpeg needed) ------------------------------------------------
def _fake_baselines(monkeypatch):
    """A 'baseline' that blurs more as CRF rises; bytes fall with CRF. Same API as progvc_lab.baselines."""
    calls = []

    def encode_decode(source, codec, crf, fps=None, max_frames=None, **kw):
        video = source if isinstance(source, torch.Tensor) else progvc_lab.data.read_video(source, max_frames)[0]
        k = 1 + 2 * ((crf - 10) // 8)
        decoded = torch.nn.functional.avg_pool2d(video, k, stride=1, padding=k // 2, count_include_pad=False)
        T, _, H, W = video.shape
        nbytes = int(40000 * 2 ** (-(crf - 10) / 6))
        calls.append(crf)
        return types.SimpleNamespace(codec=codec, crf=crf, bytes=nbytes, frames=T, width=W, height=H,
                                     bpp=metrics.bpp(nbytes, T, H, W), decoded=decoded, encode_seconds=0.01,
                                     decode_seconds=0.01, commands=[f"fake-{codec} -crf {crf}"],
                                     settings={"preset": "veryslow"})

    def crf_ladder(source, codec, bpp_range=(0.0, 1.0), fps=None, max_frames=None, **kw):
        return [encode_decode(source, codec, crf, fps, max_frames) for crf in (51, 43, 35, 27, 19)]

    fake = types.SimpleNamespace(available=lambda name: (name in ("x264", "x265"), f"no {name}"),
                                 encode_decode=encode_decode, crf_ladder=crf_ladder)
    monkeypatch.setitem(sys.modules, "progvc_lab.baselines", fake)
    monkeypatch.setattr(progvc_lab, "baselines", fake, raising=False)
    return calls


def test_evaluate_clips_end_to_end_with_a_stand_in_baseline(monkeypatch, tmp_path):
    _fake_baselines(monkeypatch)
    clip = write_video(tmp_path / "pattern.y4m", pattern_clip(3, 112, 128), fps=Fraction(25))
    make_tiny_codec(seed=0).save(tmp_path / "m.pt")
    doc = rdeval.evaluate_clips([clip], tmp_path / "m.pt", samplers=("zero", "argmax"), baselines=("x265",),
                                perceptual=False, lambdas=(0.0, 0.05, 1.0))
    rdeval.check_document(doc)
    res = doc["clips"][0]
    names = [r["name"] for r in res["codecs"]]
    assert names == ["progvc_lab m (zero fill)", "progvc_lab m (argmax fill)",
                     "progvc_lab m (full pyramid, lambda ladder)", "x265"]
    ours_zero, ours_argmax, lam, x265 = res["codecs"]
    # the lambda ladder: every scale sent, one encode per lambda, rate falling as lambda rises, and the
    # lambda = 0 point is nearest-code coding (as many bytes as Codec.encode(rdo_lambda=0) writes)
    assert lam["results"]["lambda"] == [0.0, 0.05, 1.0] and lam["results"]["k"] == [6, 6, 6]
    assert lam["ladder"] == "lambda" and doc["lambdas"] == [0.0, 0.05, 1.0]
    b = lam["results"]["bytes"]
    assert b[0] >= b[1] >= b[2] and b[0] > b[2]
    video, fps = progvc_lab.data.read_video(clip)
    codec = progvc_lab.codec.Codec.load(tmp_path / "m.pt")
    assert b[0] == len(codec.encode(video, fps, rdo_lambda=0.0))
    assert "progvc_lab m (full pyramid, lambda ladder) vs x265" in res["summary"]["bd_rate"]
    assert ours_zero["results"]["k"] == [1, 2, 3, 4, 5, 6]
    assert ours_zero["results"]["bytes"] == ours_argmax["results"]["bytes"]  # the same truncated files
    assert ours_zero["results"]["bytes"] == sorted(ours_zero["results"]["bytes"])
    # at k = K there is nothing to fill: both samplers share that decode
    assert ours_zero["results"]["psnr-y"][-1] == ours_argmax["results"]["psnr-y"][-1]
    assert x265["results"]["crf"] == [51, 43, 35, 27, 19] and x265["commands"]
    assert set(res["summary"]["bd_rate"]) == {"progvc_lab m (zero fill) vs x265", "progvc_lab m (argmax fill) vs x265",
                                              "progvc_lab m (full pyramid, lambda ladder) vs x265"}
    fig = rdeval.plot_rd(doc, tmp_path / "rd.png")
    assert (tmp_path / "rd.png").stat().st_size > 0
    assert len(fig.axes) == 3
    with pytest.raises(FileExistsError, match="--force"):
        rdeval.plot_rd(doc, tmp_path / "rd.png")
    table = rdeval.summary_table(doc)
    assert ", truncation |" in table and ", λ ladder |" in table and table.count("| pattern") == 2
    assert "lam" in rdeval.format_clip(res)
    report = rdeval.markdown_report(doc)
    assert report.count("\n| 6 |") == 1 and "ST-LPIPS" in report  # one clip's ladder, k = 1..6


def test_eval_refuses_what_it_cannot_do(monkeypatch, tmp_path):
    _fake_baselines(monkeypatch)
    clip = write_video(tmp_path / "p.y4m", pattern_clip(2, 32, 48), fps=Fraction(25))
    with pytest.raises(rdeval.EvalError, match="baseline x266 is not available"):
        rdeval.evaluate_clips([clip], "tiny", baselines=("x266",), perceptual=False)
    with pytest.raises(rdeval.EvalError, match="unknown sampler"):
        rdeval.evaluate_clips([clip], "tiny", samplers=("blur",), perceptual=False)
    with pytest.raises(FileNotFoundError, match="no such clip"):
        rdeval.evaluate_clips([tmp_path / "nope.y4m"], "tiny", perceptual=False)
    with pytest.raises(rdeval.EvalError, match="lambdas must be finite and >= 0"):
        rdeval.evaluate_clips([clip], "tiny", perceptual=False, lambdas=(0.01, -1))


# ---- the real thing: x264 and x265 through ffmpeg, ST-LPIPS, the CLI ---------------------------------------------
def test_cli_eval_with_real_baselines_and_st_lpips(tmp_path, capsys):
    require_tool("ffmpeg")
    from progvc_lab import perceptual

    ok, why = perceptual.st_lpips_available()
    if not ok:
        skip_or_fail(why)
    clip = write_video(tmp_path / "pat.y4m", pattern_clip(4, 112, 128), fps=Fraction(25))
    make_tiny_codec(seed=0).save(tmp_path / "m.pt")
    argv = ["eval", str(clip), "--model", str(tmp_path / "m.pt"), "--json", str(tmp_path / "e.json"),
            "--plot", str(tmp_path / "e.png"), "--out", str(tmp_path / "out"), "--lambdas", "0.01,0.1"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "BD-rate" in out and "x265" in out and "x264" in out
    doc = json.loads((tmp_path / "e.json").read_text())
    rdeval.check_document(doc)
    res = doc["clips"][0]
    assert [r["codec"] for r in res["codecs"]] == ["ours", "ours", "x264", "x265"]
    assert res["codecs"][1]["results"]["lambda"] == [0.01, 0.1]
    for rec in res["codecs"]:
        assert "st-lpips" in rec["results"] and "ms-ssim-rgb" in rec["results"] and "psnr-y" in rec["results"]
    for rec in res["codecs"][2:]:
        assert 51 in rec["results"]["crf"]
        assert any("veryslow" in " ".join(map(str, c)) for c in rec["commands"])
    for per_metric in res["summary"]["bd_rate"].values():
        for rep in per_metric.values():
            assert rep["bd_rate"] is not None or rep["note"]
    assert (tmp_path / "e.png").stat().st_size > 0 and (tmp_path / "out" / "eval.json").is_file()
    # nothing the user named is replaced without --force
    capsys.readouterr()
    assert main(argv) == 2
    assert "exists" in capsys.readouterr().err


def test_a_clip_the_shipped_model_trained_on_is_marked_seen(tmp_path):
    codec = make_tiny_codec(seed=0)
    codec.meta = {}
    assert rdeval.seen_in_training(codec, tmp_path / "carphone_qcif_60f.y4m", "tiny")
    assert not rdeval.seen_in_training(codec, tmp_path / "akiyo_qcif_30f.y4m", "tiny")
    codec.meta = {"trained_on": ["akiyo"]}
    assert rdeval.seen_in_training(codec, tmp_path / "akiyo_qcif_30f.y4m", "mine")


# ---- the truncation ladder ------------------------------------------------------------------------------
def test_ladder_cuts_one_encode_and_reencodes_an_unsafe_mask_per_k():
    """rdeval.ladder: the one walk over k of eval, bench, bench_variants and the explorers."""
    from progvc_lab import bitstream

    video = pattern_clip(3, 32, 48)
    safe = make_tiny_codec()
    data = safe.encode(video)
    K = safe.quantizer.num_scales
    rungs = list(rdeval.ladder(safe, data))
    assert [r.k for r in rungs] == list(range(1, K + 1))
    for r in rungs:
        assert r.data == (bitstream.truncate(data, r.k) if r.k < K else data) and r.result is None
        assert r.decoded.shape == video.shape and r.decode_seconds > 0
        assert torch.equal(r.decoded, safe.decode(r.data))
        p = r.point(3, 32, 48)
        assert p["bytes"] == len(r.data) and p["bpp"] == pytest.approx(len(r.data) * 8 / (3 * 32 * 48))
    # known decodes are reused, decode=False gives the streams only, ks narrows
    marker = torch.zeros(1)
    last = list(rdeval.ladder(safe, data, [2, K], known={K: (marker, 1.5)}))
    assert [r.k for r in last] == [2, K] and last[1].decoded is marker and last[1].decode_seconds == 1.5
    assert all(r.decoded is None for r in rdeval.ladder(safe, data, decode=False))

    unsafe = make_tiny_codec(mask="var")
    data = unsafe.encode(video, scales=K)
    with pytest.raises(ValueError, match="not truncation safe.*pass the video"):
        rdeval.stream_at(unsafe, data, 2)
    for r in rdeval.ladder(unsafe, data, [2, 4], video=video):
        assert bitstream.describe(r.data)["scales_sent"] == r.k
        tokens, _ = unsafe.decode_tokens(r.data)
        assert all(torch.equal(a, b) for a, b in zip(tokens[:r.k], r.result.tokens[:r.k]))


def test_variants_on_tinys_tokenizer_inherit_what_it_saw():
    """Every shipped variant that keeps tiny's tokenizer is marked as having seen Carphone and Container."""
    from progvc_lab.codec import Codec, PRETRAINED
    from progvc_lab.rdeval import SEEN_BY_SHIPPED, seen_in_training

    tiny = Codec.from_pretrained("tiny")
    enc = tiny.tokenizer.encoder.state_dict()
    for name in PRETRAINED:
        other = Codec.from_pretrained(name).tokenizer.encoder.state_dict()
        same = other.keys() == enc.keys() and all(torch.equal(other[k], enc[k]) for k in enc)
        assert (name in SEEN_BY_SHIPPED) == same, name
    assert seen_in_training(Codec.from_pretrained("tiny-lite"), "carphone_qcif.y4m", "tiny-lite")
