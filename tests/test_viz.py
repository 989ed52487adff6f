"""Figures and explorers (progvc_lab.viz) on a tiny random codec and a tiny clip.

Every figure function returns a Figure; every explorer builds, and moving its controls from Python
changes what it shows (the PNG bytes, the text). The numbers behind the pictures are checked where
they are a specification: per-token bits add up to the encoder's model bits, the truncation
explorer's bytes are the truncated stream's length and its frames are what the decoder returns.
"""
from __future__ import annotations

import warnings

import ipywidgets as widgets
import numpy as np
import pytest
import torch
from matplotlib.figure import Figure

from progvc_lab import bitstream, viz
from progvc_lab.codec import PRETRAINED
from progvc_lab.viz import figures
from progvc_lab.viz.widgets import ClipSession

from helpers import make_tiny_codec, one_thread, pattern_clip  # noqa: F401

pytestmark = pytest.mark.usefixtures("one_thread")

K = 6


@pytest.fixture(scope="module")
def codec():
    return make_tiny_codec(seed=0, gop=3)


@pytest.fixture(scope="module")
def video():
    return pattern_clip(num_frames=4, height=32, width=48)


@pytest.fixture(scope="module")
def session(codec, video):
    return ClipSession(codec, video)


# ---- figures ---------------------------------------------------------------------------------------
def test_token_bits_maps_add_up_to_the_encoders_model_bits(codec, video, session):
    maps = figures.token_bits_maps(codec, video)
    model_bits = session.encoded[1]["model_bits"]  # (T, K) from encode_with_stats
    assert [m.shape for m in maps] == [tuple(t.shape) for t in session.tokens]
    per_block = np.stack([m.reshape(m.shape[0], -1).sum(1) for m in maps], axis=1)
    np.testing.assert_allclose(per_block, model_bits, rtol=1e-9, atol=1e-9)
    assert all((m > 0).all() for m in maps)  # every token costs something (min count 1)


def test_every_figure_function_returns_a_figure(codec, video, session):
    t = 1
    figs = [
        figures.plot_token_pyramid(session.tokens, t),
        figures.plot_partial_reconstructions(codec, session.tokens, session.latent_hw, session.size, t,
                                             original=video[t]),
        figures.plot_scale_step(video[t], session.tokens[2][t], session.recon_frame(3, t), 2),
        figures.plot_mask("progvc_sparse", 3, 4, 1),
        figures.plot_mask("var", 2, 3, 1, scale_lengths=[1, 4, 16]),
        figures.plot_bits_per_scale(session.bytes_per_scale),
        figures.plot_bits_per_scale(session.bytes_per_scale, k=2),
        figures.plot_rd_curve(session.rd_points(), highlight=3),
        figures.plot_rd_curve([(0.01, 20.0), (0.02, 22.0)], highlight=1),
        figures.plot_bits_heatmap(session.bits_maps, t),
        figures.plot_bits_heatmap(session.bits_maps, t, scale=K - 1, frame=video[t]),
        figures.plot_sampler_comparison({"zero": session.decoded_frame(2, t),
                                         "argmax": session.decoded_frame(2, t, "argmax")}, original=video[t]),
    ]
    for fig in figs:
        assert isinstance(fig, Figure)
        png = figures.figure_to_png(fig)
        assert png[:8] == b"\x89PNG\r\n\x1a\n"


def test_mask_summary_says_which_masks_can_be_cut(codec):
    lengths = [1, 4, 16]
    sparse = figures.mask_summary("progvc_sparse", 3, 3, 1, lengths)
    var = figures.mask_summary("var", 3, 3, 1, lengths)
    star = figures.mask_summary("infinitystar", 3, 3, 1, lengths)
    assert sparse["truncation_safe"] and not var["truncation_safe"] and not star["truncation_safe"]
    assert var["ratio_to_var"] == 1.0 and 0 < sparse["ratio_to_var"] < 1
    with pytest.raises(ValueError, match="3 scales"):
        figures.mask_summary("var", 2, 3, 1, [1, 4])


def test_spread_keeps_the_bits():
    m = np.arange(6, dtype=float).reshape(2, 3) + 1
    fine = figures._spread(m, (5, 7))
    assert fine.shape == (5, 7)
    assert fine.sum() == pytest.approx(m.sum())


# ---- temporal copy, RDO, GOP (notebook 09) ---------------------------------------------------------------
def test_copy_gate_trace_is_the_count_the_coder_keeps(codec, video):
    _, stats = codec.encode_with_stats(video, copy_gate="count", rdo_lambda=0.0)
    tokens = stats["tokens"]
    gate = figures.copy_gate_trace(codec, stats)
    assert gate.shape == (4, K)
    assert np.isnan(gate[0]).all() and np.isnan(gate[3]).all()  # intra frames (GOP 3): no gate
    copies = [[int((tok[t] == tok[t - 1]).sum()) if t else 0 for t in range(3)] for tok in tokens]
    for t in (1, 2):   # the scale's own count over frames 1..t-1, backed off (weight 2) to the coarser
        for s, tok in enumerate(tokens):   # scales' pooled rate over frames 1..t (prior 2 / 3)
            n = tok[0].numel()
            coarse_h = sum(copies[j][u] for j in range(s) for u in range(1, t + 1))
            coarse_n = sum(tokens[j][0].numel() * t for j in range(s))
            pooled = (coarse_h + 2) / (coarse_n + 3)
            own_h, own_n = sum(copies[s][1:t]), n * (t - 1)
            assert gate[t, s] == pytest.approx((own_h + 2 * pooled) / (own_n + 2))
    assert gate[1, 0] == pytest.approx(2 / 3)                     # nothing counted yet: the prior
    _, off = codec.encode_with_stats(video, copy_gate="none", rdo_lambda=0.0)
    assert np.isnan(figures.copy_gate_trace(codec, off)).all()
    rate = figures.copy_rate_per_scale(tokens)
    assert rate.shape == (K,) and rate[0] == pytest.approx(float((tokens[0][1:] == tokens[0][:-1]).double().mean()))
    bpt = figures.bits_per_token_per_scale(stats)
    np.testing.assert_allclose(bpt * [t.numel() for t in tokens], stats["model_bits"].sum(0))
    figs = [figures.plot_copy_statistics(rate, {"none": figures.bits_per_token_per_scale(off), "count": bpt}),
            figures.plot_gate_over_frames(gate, gop_starts=(0, 3)),
            figures.plot_bits_per_token({"a": bpt}),
            figures.plot_bytes_per_frame({"GOP 3": [10, 4, 3, 9]}, {"GOP 3": [0, 3]})]
    assert all(figures.figure_to_png(f)[:4] == b"\x89PNG" for f in figs)


def test_lambda_sweep_decodes_what_the_decoder_returns(codec, video):
    sweep = viz.widgets.LambdaSweep(codec, video, copy_gate="count")
    data, stats = sweep.encoded(0.5)
    assert stats["options"]["rdo_lambda"] == 0.5 and stats["options"]["copy_gate"] == "count"
    assert torch.equal(sweep.decoded_video(0.5), codec.decode(data))
    p0, p1 = sweep.point(0.0), sweep.point(0.5)
    assert sweep.quality_name == "SSIM"   # 32x48 frames: too small for MS-SSIM
    assert p1["bytes"] <= p0["bytes"] and p1["latent_distortion"] >= p0["latent_distortion"] - 1e-9
    assert sweep.point(0.5) is p1         # cached
    with pytest.raises(TypeError, match="rdo_lambda"):
        viz.widgets.LambdaSweep(codec, video, rdo_lambda=1.0)


def test_lambda_explorer_slider_moves_the_rd_point(codec, video):
    sweep = viz.widgets.LambdaSweep(codec, video)
    box = viz.widgets.lambda_explorer(None, sweep, lambdas=(0.0, 0.005, 2.0))
    assert box.status.value == "" and box.controls["lambda"].value == 0.005  # the codec's default
    label = box.views["label"].value
    p = sweep.point(0.005)
    assert f"<span class='pgvc-bytes'>{p['bytes']} bytes</span>" in label and "SSIM" in label
    changed = _moved(box, "lambda", 2.0)
    assert {"rd", "bars"} <= changed
    new_label = box.views["label"].value
    assert new_label != label and f"{sweep.point(2.0)['bytes']} bytes</span>" in new_label
    assert {"frame", "original"} <= _moved(box, "frame", 3)
    assert box.views["frame"].value == viz.widgets.frame_to_png(codec.decode(sweep.encoded(2.0)[0])[3])
    # from a plain video and fps, as the notebook calls it
    small = viz.widgets.lambda_explorer(codec, video[:2], 25, lambdas=(0.0, 1.0))
    assert small.status.value == "" and len(small.controls["lambda"].options) == 2


# ---- the session: what the pictures are made of -----------------------------------------------------
def test_session_truncation_matches_the_decoder(codec, video, session):
    data = session.data
    for k in (1, 3, K):
        cut = bitstream.truncate(data, k)
        point = session.rd_point(k)
        assert point["bytes"] == len(cut)
        assert torch.equal(session.decoded_video(k), codec.decode(cut))
        assert torch.equal(session.decoded_frame(k, 2), codec.decode(cut)[2])
    points = session.rd_points()
    assert [p["k"] for p in points] == list(range(1, K + 1))
    assert all(a["bpp"] < b["bpp"] for a, b in zip(points, points[1:]))  # rate grows with k
    # a stream cut after k decodes to the encoder's first k token maps (truncation safety), so the
    # pyramid explorer's reconstructions are what a receiver of k scales sees (up to float batching)
    for a, b in zip(session.decoded_tokens(2), session.tokens[:2]):
        assert torch.equal(a, b)
    torch.testing.assert_close(session.recon_frame(2, 1), session.decoded_frame(2, 1), rtol=0, atol=1e-5)


def test_session_sampler_is_seeded(session):
    a = session.decoded_frame(2, 0, "sample", temperature=1.0, top_k=0, seed=1)
    b = session.decoded_frame(2, 0, "sample", temperature=1.0, top_k=0, seed=1)
    c = session.decoded_frame(2, 0, "sample", temperature=1.0, top_k=0, seed=2)
    assert torch.equal(a, b) and not torch.equal(a, c)


# ---- explorers ---------------------------------------------------------------------------------------
def _pngs(box) -> dict:
    return {name: v.value for name, v in box.views.items() if isinstance(v, widgets.Image)}


def _moved(box, name, value) -> dict:
    before = _pngs(box)
    box.controls[name].value = value
    assert box.status.value == "", box.status.value
    after = _pngs(box)
    return {view for view in before if before[view] != after[view]}


def test_truncation_explorer_k_changes_bytes_and_picture(session):
    box = viz.truncation_explorer(None, session)
    assert isinstance(box, widgets.VBox) and box.status.value == ""
    assert box.controls["k"].value == K
    label_full = box.views["label"].value
    assert f"{len(session.data)} bytes</span>" in label_full
    changed = _moved(box, "k", 1)
    assert {"frame", "bars", "rd"} <= changed
    label_1 = box.views["label"].value
    assert label_1 != label_full
    assert f"<span class='pgvc-bytes'>{len(bitstream.truncate(session.data, 1))} bytes</span>" in label_1
    box.controls["k"].value = K  # (at k = 1 a random codec may decode every frame alike)
    assert {"frame", "original"} <= _moved(box, "frame", 3)


def test_token_pyramid_explorer_moves(session):
    box = viz.token_pyramid_explorer(None, session)
    assert box.views["figure"].value[:4] == b"\x89PNG"
    assert _moved(box, "scale", K - 1) == {"figure"}
    assert _moved(box, "frame", 2) == {"figure"}


def test_mask_explorer_moves():
    box = viz.mask_explorer()
    summary = box.views["summary"].value
    assert "truncation safe: <span class='pgvc-safe'>yes</span>" in summary
    assert _moved(box, "mask", "var") == {"figure"}
    assert "<span class='pgvc-safe'>no</span>" in box.views["summary"].value
    assert box.controls["window"].disabled
    for name, value in (("frames", 5), ("scales", 6)):
        assert _moved(box, name, value) == {"figure"}
    box.controls["mask"].value = "progvc_sparse"
    assert _moved(box, "window", 3) == {"figure"}


def test_bits_heatmap_explorer_moves(session):
    box = viz.bits_heatmap_explorer(None, session)
    assert _moved(box, "scale", 0) == {"figure"}
    assert _moved(box, "scale", -1) == {"figure"}
    summary = box.views["summary"].value
    assert _moved(box, "frame", 1) == {"figure"}
    assert box.views["summary"].value != summary


def test_sampler_explorer_moves(session):
    box = viz.sampler_explorer(None, session)
    assert box.controls["sampler"].value == "sample"
    assert _moved(box, "seed", 5) == {"figure"}
    assert _moved(box, "temperature", 0.5) == {"figure"}
    assert _moved(box, "k", 1) == {"figure"}
    assert _moved(box, "sampler", "zero") == {"figure"}
    assert box.controls["seed"].disabled


def test_explorer_shows_errors_instead_of_losing_them(session):
    box = viz.token_pyramid_explorer(None, session)
    box.controls["frame"].max = 99
    box.controls["frame"].value = 50  # beyond the clip: the render fails, the box says why
    assert "IndexError" in box.status.value


def test_explorer_app_builds_tabs_lazily_and_loads_clips(codec, video):
    app = viz.explorer_app(codec, clip=video)
    assert isinstance(app, widgets.VBox)
    assert set(app.explorers) == {0}  # only the shown tab is computed
    assert len(app.tabs.children) == 5
    for i in range(1, 5):
        app.tabs.selected_index = i
        assert isinstance(app.slots[i].children[0], viz.Explorer), app.slots[i].children[0].value
    app.load("/no/such/clip.y4m")
    assert "cannot load" in app.message.value
    assert set(app.explorers) == set(range(5))  # a failed load keeps the old clip
    app.load(video[:2])
    assert "2 frames" in app.message.value and set(app.explorers) == {4}


def test_shipped_clips_load(codec):
    clips = viz.shipped_clips()
    assert clips, "data/*.y4m should ship with the repository"
    frames, fps, label = viz.load_clip(next(iter(clips)), max_frames=2)
    assert frames.shape[:2] == (2, 3) and label.endswith(".y4m")


def test_load_demo_codec_falls_back_with_a_warning_or_loads_the_shipped_model():
    if PRETRAINED["tiny"].is_file():
        codec = viz.load_demo_codec()
        assert "demo_warning" not in getattr(codec, "meta", {})
        return
    state = torch.random.get_rng_state()
    with pytest.warns(UserWarning, match="RANDOM, untrained codec"):
        codec = viz.load_demo_codec()
    assert "tiny.pt" in codec.meta["demo_warning"]
    assert torch.equal(state, torch.random.get_rng_state())  # the caller's random state is untouched
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert viz.load_demo_codec().fingerprint() == codec.fingerprint()  # same random weights


def test_plot_rd_curve_draws_one_line_per_labelled_curve_and_writes_a_file(tmp_path):
    """The package's one RD figure: several curves as {label: points} (evaluate.rate_points' psnr_rgb
    points too), a legend naming them, and the PNG written when a path is given."""
    ours = [{"k": 1, "bpp": 0.01, "psnr_rgb": 20.0}, {"k": 2, "bpp": 0.03, "psnr_rgb": 23.5}]
    other = [(0.02, 21.0), (0.05, 25.0), (0.09, 27.0)]
    fig = figures.plot_rd_curve({"ours": ours, "x265": other}, title="t", path=tmp_path / "rd.png")
    ax = fig.axes[0]
    lines = [ln for ln in ax.get_lines() if ln.get_label() in ("ours", "x265")]
    assert [ln.get_label() for ln in lines] == ["ours", "x265"]
    assert list(lines[0].get_ydata()) == [20.0, 23.5] and len(lines[1].get_xdata()) == 3
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["ours", "x265"]
    assert (tmp_path / "rd.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # one unlabelled curve: no legend
    assert figures.plot_rd_curve(ours).axes[0].get_legend() is None
