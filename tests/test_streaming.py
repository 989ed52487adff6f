"""GOP-by-GOP coding: frame readers and writers, ``decode_iter`` / ``decode_gops``, and the CLI's use of them."""
from __future__ import annotations

import threading
from fractions import Fraction

import pytest
import torch

from progvc_lab.data import read_video, write_video
from progvc_lab.data.streaming import TensorFrames, VideoWriter, Y4MFrames, open_frames
from progvc_lab.data.y4m import VideoFormatError

from helpers import make_tiny_codec, one_thread, pattern_clip  # noqa: F401

pytestmark = pytest.mark.usefixtures("one_thread")

T, H, W = 7, 32, 48


@pytest.fixture(scope="module")
def clip_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("stream") / "clip.y4m"
    write_video(path, pattern_clip(T, H, W), fps=Fraction(30000, 1001))
    return path


def test_y4m_reader_reads_ranges_like_read_video(clip_file):
    whole, fps = read_video(clip_file)
    reader = open_frames(clip_file)
    assert isinstance(reader, Y4MFrames) and (reader.num_frames, reader.height, reader.width) == (T, H, W)
    assert reader.fps == fps
    assert torch.equal(reader.read(2, 3), whole[2:5])
    assert torch.equal(reader.read(5, 10), whole[5:])  # a range past the end is cut at the end
    assert torch.equal(reader.read_all(), whole)
    assert open_frames(clip_file, max_frames=3).num_frames == 3


def test_reader_refuses_a_truncated_file_but_reads_its_complete_frames(clip_file, tmp_path):
    cut = tmp_path / "cut.y4m"
    cut.write_bytes(clip_file.read_bytes()[:-100])
    with pytest.raises(VideoFormatError, match=f"holds {T - 1} complete frames"):
        open_frames(cut)
    assert open_frames(cut, max_frames=T - 1).num_frames == T - 1


def test_other_containers_are_read_whole(clip_file, tmp_path):
    mp4 = tmp_path / "c.mp4"
    write_video(mp4, read_video(clip_file)[0], fps=25)
    reader = open_frames(mp4)
    assert isinstance(reader, TensorFrames) and reader.num_frames == T and reader.fps == 25


def test_encode_from_a_reader_equals_encode_from_a_tensor(clip_file):
    codec = make_tiny_codec(seed=0)
    video, fps = read_video(clip_file)
    data = codec.encode(video, fps)
    seen = []
    assert codec.encode(open_frames(clip_file), progress=seen.append) == data  # fps taken from the reader
    assert seen == [3, 6, 7]  # after every GOP (gop = 3)


@pytest.mark.parametrize("gop", [1, 3, 16, 17, 32])
def test_decode_iter_concatenates_to_decode(gop):
    codec = make_tiny_codec(seed=0, gop=gop)
    video = pattern_clip(19, H, W)
    data = codec.encode(video)
    whole = codec.decode(data)
    for kw in ({}, {"scales": 2}, {"scales": 0}, {"scales": 3, "sampler": "mean"},
               {"scales": 2, "sampler": "sample", "seed": 3}):
        parts = list(codec.decode_iter(data, **kw))
        assert sum(len(p) for p in parts) == 19
        assert max(len(p) for p in parts) <= max(16, gop + 15)  # about one GOP at a time
        assert torch.equal(torch.cat(parts), codec.decode(data, **kw)), kw
    assert torch.equal(torch.cat(list(codec.decode_iter(data))), whole)
    gops = list(codec.decode_gops(data))
    assert [g.start for g in gops] == list(range(0, 19, gop))
    assert all(g.tokens[0].shape[0] == g.header.gop_frames(g.index) for g in gops)


def test_decode_restores_thread_settings_between_gops():
    codec = make_tiny_codec(seed=0, gop=2, coding_threads=1)
    data = codec.encode(pattern_clip(6, H, W))
    old = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        for _ in codec.decode_gops(data):  # the caller's code between GOPs runs with its own settings
            assert torch.get_num_threads() == 2 and not torch.are_deterministic_algorithms_enabled()
    finally:
        torch.set_num_threads(old)


def test_writer_matches_write_video_and_leaves_no_temporary_file(tmp_path):
    video = pattern_clip(5, H, W)
    write_video(tmp_path / "a.y4m", video, fps=25)
    with VideoWriter(tmp_path / "b.y4m", fps=25) as w:
        w.write(video[:2])
        w.write(video[2:])
    assert (tmp_path / "a.y4m").read_bytes() == (tmp_path / "b.y4m").read_bytes()
    with pytest.raises(RuntimeError):
        with VideoWriter(tmp_path / "c.y4m", fps=25) as w:
            w.write(video[:2])
            raise RuntimeError("interrupted")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.y4m", "b.y4m"]


def test_writer_never_replaces_without_being_asked(tmp_path):
    (tmp_path / "x.y4m").write_bytes(b"mine")
    with pytest.raises(FileExistsError, match="already exists"):
        VideoWriter(tmp_path / "x.y4m", fps=25)
    assert (tmp_path / "x.y4m").read_bytes() == b"mine"
    video = pattern_clip(2, H, W)
    with VideoWriter(tmp_path / "x.y4m", fps=25, overwrite=True) as w:
        w.write(video)
    assert read_video(tmp_path / "x.y4m")[0].shape == (2, 3, H, W)


def test_two_writers_of_one_new_file_cannot_both_succeed(tmp_path):
    video = pattern_clip(2, H, W)
    target = tmp_path / "race.y4m"
    writers = [VideoWriter(target, fps=25), VideoWriter(target, fps=25)]  # both see no file yet
    results = []

    def finish(w, frames):
        try:
            w.write(frames)
            w.close()
            results.append("ok")
        except FileExistsError:
            results.append("refused")

    threads = [threading.Thread(target=finish, args=(w, video * (0.5 + 0.5 * i))) for i, w in enumerate(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == ["ok", "refused"]
    assert [p.name for p in tmp_path.iterdir()] == ["race.y4m"]
