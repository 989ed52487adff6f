"""y4m and video-file IO: round trips, every real clip's header, and clear errors for bad files."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import require_shared

from progvc_lab.data import (
    DATA_DIR, VideoFormatError, read_video, read_y4m, read_y4m_header, rgb_to_yuv420, sample_clip_path,
    write_video, write_y4m, yuv420_to_rgb,
)
from progvc_lab.metrics import psnr

HEADER = b"YUV4MPEG2 W8 H4 F25:1 Ip A1:1 C420jpeg\n"


def _planes(T=3, H=4, W=8, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.integers(0, 256, (T, H, W), dtype=np.uint8), rng.integers(0, 256, (T, H // 2, W // 2), dtype=np.uint8),
            rng.integers(0, 256, (T, H // 2, W // 2), dtype=np.uint8))


def _raw_file(tmp_path: Path, header: bytes, payload_per_frame: int, frames: int, extra: bytes = b"") -> Path:
    body = b"".join(b"FRAME\n" + bytes(range(256)) * (payload_per_frame // 256) + bytes(payload_per_frame % 256)
                    for _ in range(frames))
    path = tmp_path / "clip.y4m"
    path.write_bytes(header + body + extra)
    return path


def test_y4m_round_trip_is_byte_exact(tmp_path):
    y, u, v = _planes()
    path = write_y4m(tmp_path / "a.y4m", y, u, v, Fraction(30000, 1001))
    video = read_y4m(path)
    assert (video.y == y).all() and (video.u == u).all() and (video.v == v).all()
    assert video.fps == Fraction(30000, 1001) and (video.width, video.height) == (8, 4)
    again = write_y4m(tmp_path / "b.y4m", video.y, video.u, video.v, video.fps)
    assert again.read_bytes() == path.read_bytes()


def test_shipped_clips_parse_and_foreman_matches_the_shared_original():
    for path in sorted(DATA_DIR.glob("*.y4m")):
        video = read_y4m(path)
        assert (video.width, video.height, video.num_frames) == (176, 144, 30), path
        assert video.fps == Fraction(30000, 1001)
    foreman = sample_clip_path("foreman").read_bytes()
    assert foreman.startswith(b"YUV4MPEG2 W176 H144 F30000:1001 Ip A1:1 C420jpeg\n")
    original = require_shared("data", "clips", "foreman_qcif_60f.y4m").read_bytes()
    assert original[: len(foreman)] == foreman  # the first 30 frames, byte for byte


def test_every_shared_clip_header_parses():
    clips = sorted(require_shared("data").rglob("*.y4m"))
    assert clips
    for path in clips:
        header = read_y4m_header(path)
        video = read_y4m(path, max_frames=2)
        assert video.y.shape == (2, header.height, header.width), path
        assert header.chroma == "420jpeg" and header.interlace == "p"


def test_sample_clip_path_unknown_name_says_what_exists():
    with pytest.raises(FileNotFoundError, match="available"):
        sample_clip_path("no-such-clip")


def test_clip_path_resolves_names_files_and_the_default(tmp_path, monkeypatch):
    """The one resolver of what a user calls a clip (CLI, evaluate, bench, the explorers)."""
    from progvc_lab.data import clip_path
    from progvc_lab.viz.widgets import load_clip as explorer_clip

    assert clip_path() == sample_clip_path("foreman")
    assert clip_path("akiyo") == sample_clip_path("akiyo")
    mine = tmp_path / "akiyo"            # a file of that name here wins over the shipped clip
    mine.write_bytes(b"x")
    monkeypatch.chdir(tmp_path)
    assert clip_path("akiyo") == Path("akiyo")
    assert clip_path(tmp_path / "any.y4m") == tmp_path / "any.y4m"   # a path is taken as given
    with pytest.raises(FileNotFoundError, match="available"):
        clip_path("no-such-clip")
    frames, fps, label = explorer_clip(str(sample_clip_path("akiyo")), max_frames=2)
    assert frames.shape[0] == 2 and label == sample_clip_path("akiyo").name


def test_bad_magic(tmp_path):
    path = tmp_path / "x.y4m"
    path.write_bytes(b"RIFF....not a video\n")
    with pytest.raises(VideoFormatError, match=r"x\.y4m.*not a YUV4MPEG2 file"):
        read_y4m(path)


@pytest.mark.parametrize("tag", ["C411", "C420p11", "Cmono10", "Cyuva444"])
def test_unsupported_colour_space_names_tag_and_ffmpeg_fix(tmp_path, tag):
    path = _raw_file(tmp_path, f"YUV4MPEG2 W8 H4 F25:1 Ip {tag}\n".encode(), 96, 1)
    with pytest.raises(VideoFormatError, match=rf"{tag}.*ffmpeg -i clip\.y4m -pix_fmt yuv420p out\.y4m"):
        read_y4m(path)


def test_interlaced_is_refused(tmp_path):
    path = _raw_file(tmp_path, b"YUV4MPEG2 W8 H4 F25:1 It C420jpeg\n", 48, 1)
    with pytest.raises(VideoFormatError, match="interlaced.*It"):
        read_y4m(path)


def test_odd_size_is_refused(tmp_path):
    path = _raw_file(tmp_path, b"YUV4MPEG2 W7 H4 F25:1 Ip C420jpeg\n", 42, 1)
    with pytest.raises(VideoFormatError, match="7x4 has an odd side"):
        read_y4m(path)


def test_truncated_file_says_how_many_frames_are_complete(tmp_path):
    path = _raw_file(tmp_path, HEADER, 48, 2, extra=b"FRAME\n" + bytes(10))
    with pytest.raises(VideoFormatError, match="2 complete frames"):
        read_y4m(path)
    assert read_y4m(path, max_frames=2).num_frames == 2


def test_missing_c_tag_means_420_and_frame_parameters_are_skipped(tmp_path):
    y, u, v = _planes(T=2)
    body = b"".join(b"FRAME Ixyz\n" + y[t].tobytes() + u[t].tobytes() + v[t].tobytes() for t in range(2))
    path = tmp_path / "p.y4m"
    path.write_bytes(b"YUV4MPEG2 W8 H4 F25:1\n" + body)
    video = read_y4m(path)
    assert (video.y == y).all() and (video.v == v).all()
    assert read_y4m(path, max_frames=1).num_frames == 1


def test_444_and_mono_are_converted_to_420(tmp_path):
    y = np.full((1, 4, 8), 50, np.uint8)
    cb = np.tile(np.array([10, 20], np.uint8), (1, 4, 4))  # columns alternate 10, 20 -> mean 15
    cr = np.full((1, 4, 8), 200, np.uint8)
    path = tmp_path / "c444.y4m"
    path.write_bytes(b"YUV4MPEG2 W8 H4 F25:1 Ip C444\nFRAME\n" + y.tobytes() + cb.tobytes() + cr.tobytes())
    video = read_y4m(path)
    assert video.u.shape == (1, 2, 4) and (video.u == 15).all() and (video.v == 200).all()
    path = tmp_path / "mono.y4m"
    path.write_bytes(b"YUV4MPEG2 W8 H4 F25:1 Ip Cmono\nFRAME\n" + y.tobytes())
    video = read_y4m(path)
    assert (video.y == 50).all() and (video.u == 128).all() and video.u.shape == (1, 2, 4)


def test_write_refuses_to_overwrite(tmp_path):
    y, u, v = _planes()
    path = write_y4m(tmp_path / "a.y4m", y, u, v, 25)
    with pytest.raises(FileExistsError, match="overwrite=True"):
        write_y4m(path, y, u, v, 25)
    with pytest.raises(FileExistsError, match="overwrite=True"):
        write_video(path, torch.rand(2, 3, 4, 8), 25)
    write_y4m(path, y, u, v, 25, overwrite=True)


def test_read_video_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.mp4"):
        read_video(tmp_path / "missing.mp4")
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"this is not a video at all" * 10)
    with pytest.raises(VideoFormatError, match="junk.mp4"):
        read_video(junk)


def test_y4m_rgb_round_trip_through_write_video(tmp_path):
    frames, fps = read_video(sample_clip_path("akiyo"), max_frames=3)
    assert frames.shape == (3, 3, 144, 176) and frames.dtype == torch.float32 and fps == Fraction(30000, 1001)
    write_video(tmp_path / "a.y4m", frames, fps)
    again, _ = read_video(tmp_path / "a.y4m")
    assert psnr(frames, again) > 40


def test_mp4_write_and_read_through_pyav(tmp_path):
    frames, fps = read_video(sample_clip_path("foreman"), max_frames=6)
    path = write_video(tmp_path / "f.mp4", frames, fps)
    decoded, fps2 = read_video(path)
    assert decoded.shape == frames.shape
    assert abs(float(fps2) - float(fps)) < 0.01
    assert psnr(frames, decoded) > 30


def test_colour_round_trip_yuv_rgb_yuv():
    # YUV of a smooth, mid-range RGB image (in gamut) survives YUV -> RGB -> YUV within one code
    # value (per-pixel random RGB would not: averaged chroma + per-pixel luma leaves the gamut)
    coarse = 0.2 + 0.6 * torch.rand(2, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    smooth = torch.nn.functional.interpolate(coarse, size=(16, 16), mode="bilinear", align_corners=False)
    y, u, v = rgb_to_yuv420(smooth)
    y2, u2, v2 = rgb_to_yuv420(yuv420_to_rgb(y, u, v))
    for a, b in ((y, y2), (u, u2), (v, v2)):
        assert np.abs(a.astype(int) - b).max() <= 1
    # a real clip: out-of-gamut pixels are clipped in RGB, all else within 2 code values
    video = read_y4m(sample_clip_path("foreman"), max_frames=4)
    planes = rgb_to_yuv420(yuv420_to_rgb(video.y, video.u, video.v))
    for a, b in zip((video.y, video.u, video.v), planes):
        assert (np.abs(a.astype(int) - b) > 2).mean() < 0.002


def test_colour_matrices_differ_and_bt709_round_trips():
    rgb = torch.rand(1, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    y601, _, _ = rgb_to_yuv420(rgb)
    y709, u709, v709 = rgb_to_yuv420(rgb, matrix="bt709")
    assert not np.array_equal(y601, y709)
    back = yuv420_to_rgb(y709, u709, v709, matrix="bt709", chroma_upsample="bilinear")
    assert back.shape == rgb.shape and 0 <= back.min() and back.max() <= 1
    with pytest.raises(ValueError, match="unknown colour matrix"):
        rgb_to_yuv420(rgb, matrix="bt2020")


# ---- other chroma layouts and bit depths: converted with a note; sizes bounded ----------------------------
def _planes(T=2, H=4, W=8, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.integers(0, 256, (T, H, W), dtype=np.uint8), rng.integers(0, 256, (T, H // 2, W // 2), dtype=np.uint8),
            rng.integers(0, 256, (T, H // 2, W // 2), dtype=np.uint8))


def test_422_is_converted_to_420_with_a_note(tmp_path):
    y, u, v = _planes()
    u422, v422 = np.repeat(u, 2, axis=1), np.repeat(v, 2, axis=1)  # each 4:2:0 row twice: pooling gives u back
    body = b"".join(b"FRAME\n" + y[t].tobytes() + u422[t].tobytes() + v422[t].tobytes() for t in range(2))
    path = tmp_path / "c422.y4m"
    path.write_bytes(b"YUV4MPEG2 W8 H4 F25:1 Ip C422\n" + body)
    with pytest.warns(UserWarning, match="c422.y4m: 4:2:2 chroma .* converted to 4:2:0"):
        video = read_y4m(path)
    assert np.array_equal(video.y, y) and np.array_equal(video.u, u) and np.array_equal(video.v, v)


@pytest.mark.parametrize("tag,bits", [("C420p10", 10), ("C444p12", 12), ("Cmono16", 16), ("C422p9", 9)])
def test_high_bit_depth_is_rounded_to_8_bits_with_a_note(tmp_path, tag, bits):
    y, u, v = _planes()
    layout = tag[1:4] if not tag.startswith("Cmono") else "mono"
    cu = {"420": u, "444": np.repeat(np.repeat(u, 2, 1), 2, 2), "422": np.repeat(u, 2, 1)}.get(layout)
    cv = {"420": v, "444": np.repeat(np.repeat(v, 2, 1), 2, 2), "422": np.repeat(v, 2, 1)}.get(layout)
    wide = lambda a: (a.astype("<u2") << (bits - 8)).tobytes()  # noqa: E731
    body = b"".join(b"FRAME\n" + wide(y[t]) + (wide(cu[t]) + wide(cv[t]) if cu is not None else b"")
                    for t in range(2))
    path = tmp_path / "deep.y4m"
    path.write_bytes(f"YUV4MPEG2 W8 H4 F25:1 Ip {tag}\n".encode() + body)
    with pytest.warns(UserWarning, match=f"{bits}-bit samples rounded to 8 bits"):
        video = read_y4m(path)
    assert np.array_equal(video.y, y)
    if cu is not None:
        assert np.array_equal(video.u, u) and np.array_equal(video.v, v)


@pytest.mark.parametrize("w,h", [(1, 1), (1, 8), (8, 1)])
def test_sizes_below_2x2_are_refused(tmp_path, w, h):
    path = tmp_path / "tiny.y4m"
    path.write_bytes(f"YUV4MPEG2 W{w} H{h} F25:1 Cmono\nFRAME\n".encode() + bytes(w * h))
    with pytest.raises(VideoFormatError, match=f"frame size {w}x{h} is too small.*at least 2x2"):
        read_y4m(path)


def test_2x2_reads_and_huge_sizes_are_refused_before_reading(tmp_path):
    path = tmp_path / "small.y4m"
    path.write_bytes(b"YUV4MPEG2 W2 H2 F25:1 C420jpeg\nFRAME\n" + bytes(6))
    assert read_y4m(path).y.shape == (1, 2, 2)
    path.write_bytes(b"YUV4MPEG2 W100000 H16 F25:1 C420jpeg\nFRAME\n" + bytes(100))
    with pytest.raises(VideoFormatError, match="100000x16 exceeds the limit of 16384 pixels per side"):
        read_y4m(path)


def test_y4m_side_limit_is_the_stream_limit():
    from progvc_lab import bitstream
    from progvc_lab.data import y4m

    assert y4m.MAX_SIDE == bitstream.MAX_SIDE


def test_read_planes_are_writable(tmp_path):
    y, u, v = _planes()
    path = write_y4m(tmp_path / "w.y4m", y, u, v, 25)
    assert read_y4m(path).y.flags.writeable
