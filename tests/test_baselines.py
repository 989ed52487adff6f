"""x264 / x265 baselines through ffmpeg: raw stream bytes without SEI, decode, ladder, clear errors."""

from __future__ import annotations

import os
import shlex
import stat
import subprocess

import numpy as np
import pytest

from conftest import require_tool
from progvc_lab import baselines, metrics
from progvc_lab.baselines import BaselineUnavailable
from progvc_lab.data import read_video, read_y4m, sample_clip_path

FRAMES = 6
SEI_TEXT = {"x264": b"x264 - core", "x265": b"x265 (build"}


@pytest.fixture(scope="module")
def clip():
    require_tool("ffmpeg")
    path = sample_clip_path("foreman")
    frames, fps = read_video(path, max_frames=FRAMES)
    return path, frames, fps


@pytest.fixture(scope="module", params=["x264", "x265"])
def points(request, clip):
    path, _, _ = clip
    ok, why = baselines.available(request.param)
    if not ok:
        pytest.fail(why)  # Debian's ffmpeg has both encoders: a missing one is an error, not a skip
    return request.param, [baselines.encode_decode(path, request.param, crf, max_frames=FRAMES) for crf in (20, 35, 51)]


def test_points_decode_to_the_input_shape_and_psnr_falls_with_crf(points, clip):
    codec, pts = points
    _, frames, _ = clip
    psnrs = []
    for p in pts:
        assert p.codec == codec and p.bytes > 0 and p.bytes == len(p.stream)
        assert (p.frames, p.height, p.width) == (FRAMES, 144, 176)
        assert p.decoded.shape == frames.shape and p.decoded.dtype == frames.dtype
        assert p.bpp == pytest.approx(metrics.bpp(p.bytes, FRAMES, 144, 176))
        assert p.encode_seconds > 0 and p.decode_seconds > 0
        psnrs.append(metrics.psnr(frames, p.decoded))
    assert 33 < psnrs[0] < 50 and 15 < psnrs[-1] < 30, psnrs
    assert psnrs[0] > psnrs[1] > psnrs[2]
    assert pts[0].bytes > pts[1].bytes > pts[2].bytes


def test_sei_removed_one_intra_picture_and_settings(points):
    codec, pts = points
    for p in pts:
        assert SEI_TEXT[codec] not in p.stream
        types = baselines.nal_unit_types(p.stream, codec)
        sei_types = {"x264": {6}, "x265": {39, 40}}[codec]
        assert types and not set(types) & sei_types, types
        assert p.settings["intra_pictures"] == 1  # long GOP, no scene-cut I frames
        assert p.settings["preset"] == "veryslow" and p.settings["tune"] == "psnr" and p.settings["keyint"] >= FRAMES
    cmd = pts[0].commands[0]
    for piece in ("-preset veryslow", "-tune psnr", "-crf 20", "-pix_fmt yuv420p", "filter_units=remove_types=",
                  "-f h264" if codec == "x264" else "-f hevc"):
        assert piece in cmd, (piece, cmd)
    assert "yuv4mpegpipe" in pts[0].commands[1]


def test_filtered_stream_decodes_identically_and_rerun_gives_the_same_bytes(points, tmp_path):
    """Re-run the recorded command (same bytes), and once keeping SEI: larger, same pictures."""
    codec, pts = points
    p = pts[1]
    argv = shlex.split(p.commands[0])
    subprocess.run(argv, cwd=tmp_path, check=True, capture_output=True)
    out = tmp_path / argv[-1]
    assert out.read_bytes() == p.stream  # deterministic: one thread, recorded settings
    keep = [a for a in argv]
    i = keep.index("-bsf:v")
    del keep[i:i + 2]
    if codec == "x265":
        j = keep.index("-x265-params") + 1
        keep[j] = keep[j].replace("info=0:", "")
    keep[-1] = "with_sei" + out.suffix
    subprocess.run(keep, cwd=tmp_path, check=True, capture_output=True)
    with_sei = (tmp_path / keep[-1]).read_bytes()
    assert SEI_TEXT[codec] in with_sei and len(with_sei) > len(p.stream)
    dec = [argv[0], "-loglevel", "error", "-i", keep[-1], "-f", "yuv4mpegpipe", "-pix_fmt", "yuv420p", "dec.y4m"]
    subprocess.run(dec, cwd=tmp_path, check=True, capture_output=True)
    video = read_y4m(tmp_path / "dec.y4m")
    for a, b in zip((video.y, video.u, video.v), p.yuv):
        np.testing.assert_array_equal(a, b)


def test_tensor_input(clip):
    _, frames, fps = clip
    p = baselines.encode_decode(frames[:4], "x264", 30, fps=fps)
    assert p.decoded.shape == frames[:4].shape and p.frames == 4
    assert metrics.psnr(frames[:4], p.decoded) > 25


@pytest.mark.parametrize("codec", ["x264", "x265"])
def test_crf_ladder_spans_the_range(codec, clip):
    path, _, _ = clip
    lo, hi = 0.002, 0.15
    ladder = baselines.crf_ladder(path, codec, bpp_range=(lo, hi), max_points=4, max_frames=FRAMES)
    crfs = [p.crf for p in ladder]
    assert 51 in crfs and len(set(crfs)) == len(crfs) and len(crfs) <= 4 + 4
    rates = [p.bpp for p in ladder]
    assert rates == sorted(rates)
    assert rates[-1] > hi  # goes up until the rate passes hi
    assert sorted(crfs, reverse=True) == crfs  # rate falls as CRF rises on this clip


def _fake_ffmpeg(tmp_path, encoders: str):
    """An `ffmpeg` on PATH that knows only the given encoder lines (and filter_units)."""
    script = tmp_path / "ffmpeg"
    script.write_text("#!/bin/sh\n"
                      'case "$*" in\n'
                      f"  *-encoders*) printf '%s\\n' ' V....D libx264   libx264 H.264' {encoders!r} ;;\n"
                      "  *-bsfs*) printf 'filter_units\\nnull\\n' ;;\n"
                      "  *-version*) echo 'ffmpeg version fake' ;;\n"
                      "  *) exit 1 ;;\n"
                      "esac\n")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return script


def test_missing_ffmpeg_or_encoder_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    ok, why = baselines.available("x265")
    assert not ok and "ffmpeg not found" in why and "apt-get install ffmpeg" in why
    with pytest.raises(BaselineUnavailable, match="ffmpeg not found"):
        baselines.encode_decode(sample_clip_path("foreman"), "x264", 30)
    with pytest.raises(BaselineUnavailable):
        baselines.crf_ladder(sample_clip_path("foreman"), "x265")

    _fake_ffmpeg(tmp_path, " V....D mpeg4   MPEG-4 part 2")  # an ffmpeg built without libx265
    monkeypatch.setenv("PATH", str(tmp_path) + os.pathsep + "/bin")
    assert baselines.available("x264")[0]
    ok, why = baselines.available("x265")
    assert not ok and "has no libx265 encoder" in why
    with pytest.raises(BaselineUnavailable, match="no libx265 encoder"):
        baselines.encode_decode(sample_clip_path("foreman"), "x265", 30)
    with pytest.raises(ValueError, match="unknown baseline codec"):
        baselines.available("vp9")
