"""Frames in and out a few at a time, so a long video never has to sit in memory whole.

::

    reader = open_frames("clip.y4m")            # nothing decoded yet: header + frame count
    reader.num_frames, reader.height, reader.width, reader.fps
    reader.read(start, count) -> (count, 3, H, W) float32 RGB in [0, 1]

    with VideoWriter("out.y4m", fps) as out:     # writes "out.y4m.<random>.part", renamed on success
        out.write(frames_T3HW)                   # as many times as needed

The codec takes a reader wherever it takes a video tensor (``Codec.encode(reader)`` reads one GOP at
a time) and ``Codec.decode_iter`` yields one GOP of frames at a time for a writer, so encode and decode
of a y4m file use memory for one GOP, not for the clip (``progvc-lab bench --scaling`` measures it).

y4m files are read by seeking: frames sit at a fixed stride when every frame header is ``FRAME\\n``
(what every tool writes). Other y4m files (frame parameters) and other containers (mp4, ...) are read
whole by :func:`~progvc_lab.data.video.read_video` and served from memory.

A writer never replaces a file that exists unless ``overwrite=True``, and a failed or interrupted
write leaves no half file behind: it writes a uniquely named temporary file next to the target and
renames it at the end (without ``overwrite``, the rename refuses a target that appeared meanwhile).
"""
from __future__ import annotations

import os
import tempfile
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch

from .color import rgb_to_yuv420, yuv420_to_rgb
from .y4m import FRAME_MAGIC, MAX_HEADER_BYTES, NATIVE_420, VideoFormatError, _as_fraction, _parse_header, _plane_bytes


class FrameReader:
    """Random access to the frames of a video: ``read(start, count)``; see the module docstring."""

    def __init__(self, num_frames: int, height: int, width: int, fps: Fraction, path: Path | None = None):
        self.num_frames, self.height, self.width, self.fps, self.path = num_frames, height, width, fps, path

    def __len__(self) -> int:
        return self.num_frames

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return (self.num_frames, 3, self.height, self.width)

    def read(self, start: int, count: int) -> torch.Tensor:
        raise NotImplementedError

    def read_all(self) -> torch.Tensor:
        return self.read(0, self.num_frames)


class TensorFrames(FrameReader):
    """Frames already in memory (a tensor (T, 3, H, W)), behind the reader interface."""

    def __init__(self, frames_T3HW: torch.Tensor, fps=Fraction(25)):
        super().__init__(frames_T3HW.shape[0], frames_T3HW.shape[-2], frames_T3HW.shape[-1], _as_fraction(fps))
        self.frames = frames_T3HW

    def read(self, start: int, count: int) -> torch.Tensor:
        return self.frames[start:start + count]


class Y4MFrames(FrameReader):
    """A y4m file with plain ``FRAME`` headers, read frame range by frame range."""

    def __init__(self, path: Path, max_frames: int | None = None, matrix: str = "bt601"):
        with open(path, "rb") as f:
            header = _parse_header(f.readline(MAX_HEADER_BYTES), path)
        if header.chroma not in NATIVE_420:  # 4:4:4 and mono are converted by read_y4m
            raise _NeedsWholeRead
        luma, chroma = _plane_bytes(header)
        self._luma, self._chroma = luma, chroma
        self._stride = len(FRAME_MAGIC) + 1 + luma + 2 * chroma
        self._offset = header.header_bytes
        size = path.stat().st_size - self._offset
        total, leftover = divmod(size, self._stride)
        if total == 0:
            raise VideoFormatError(f"{path}: the y4m file holds no complete frame.")
        with open(path, "rb") as f:  # the fixed stride holds only if every frame header is "FRAME\n"
            for t in {0, total - 1}:
                f.seek(self._offset + t * self._stride)
                if f.read(6) != b"FRAME\n":
                    raise _NeedsWholeRead
        if leftover and (max_frames is None or max_frames > total):
            raise VideoFormatError(
                f"{path}: the file ends inside frame {total} (truncated?): it holds {total} complete "
                f"frames and {leftover} extra bytes. Encode the complete frames with --frames {total}.")
        n = total if max_frames is None else min(total, max_frames)
        super().__init__(n, header.height, header.width, header.fps, path)
        self.matrix = matrix

    def read(self, start: int, count: int) -> torch.Tensor:
        count = max(0, min(count, self.num_frames - start))
        H, W = self.height, self.width
        with open(self.path, "rb") as f:
            f.seek(self._offset + start * self._stride)
            buf = np.frombuffer(bytearray(f.read(count * self._stride)), np.uint8)  # writable for torch
        if len(buf) != count * self._stride:
            raise VideoFormatError(f"{self.path}: the file changed while it was read (frame {start})")
        frames = buf.reshape(count, self._stride)
        if not np.all(frames[:, :6] == np.frombuffer(b"FRAME\n", np.uint8)):
            raise VideoFormatError(f"{self.path}: a frame in {start}..{start + count - 1} does not start "
                                   "with 'FRAME' (corrupt file?)")
        p = frames[:, 6:]
        y = p[:, :self._luma].reshape(count, H, W)
        u = p[:, self._luma:self._luma + self._chroma].reshape(count, H // 2, W // 2)
        v = p[:, self._luma + self._chroma:].reshape(count, H // 2, W // 2)
        return yuv420_to_rgb(np.ascontiguousarray(y), np.ascontiguousarray(u), np.ascontiguousarray(v),
                             matrix=self.matrix)


class _NeedsWholeRead(Exception):
    pass


def open_frames(path: str | os.PathLike, max_frames: int | None = None, matrix: str = "bt601") -> FrameReader:
    """A reader for a video file: y4m by seeking (one GOP in memory at a time), other files whole."""
    from .video import read_video

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    if path.suffix.lower() == ".y4m" and path.is_file():
        try:
            return Y4MFrames(path, max_frames, matrix)
        except _NeedsWholeRead:
            pass
    frames, fps = read_video(path, max_frames=max_frames, matrix=matrix)
    reader = TensorFrames(frames, fps)
    reader.path = path
    return reader


class VideoWriter:
    """Append RGB frames to a new ``.y4m`` or ``.mp4`` file; see the module docstring."""

    def __init__(self, path: str | os.PathLike, fps=Fraction(25), overwrite: bool = False, crf: int = 12):
        self.path, self.fps, self.overwrite, self.crf = Path(path), _as_fraction(fps), overwrite, crf
        self.suffix = self.path.suffix.lower()
        if self.suffix not in (".y4m", ".mp4"):
            raise ValueError(f"{self.path}: VideoWriter writes .y4m and .mp4 files, not {self.suffix or 'no extension'}")
        if self.path.exists() and not overwrite:
            raise FileExistsError(f"{self.path} already exists; pass overwrite=True (--force) to replace it")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=self.path.name + ".", suffix=".part", dir=self.path.parent)
        os.close(fd)
        self.tmp = Path(tmp)
        self.frames_written = 0
        self.size = None
        self._file = self._container = self._stream = None

    def __enter__(self) -> "VideoWriter":
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def write(self, frames_T3HW: torch.Tensor):
        frames = torch.as_tensor(frames_T3HW).detach().cpu().float().clamp(0, 1)
        if frames.ndim == 3:
            frames = frames[None]
        H, W = frames.shape[-2:]
        if self.size is None:
            if H % 2 or W % 2:
                raise ValueError(f"frame size {W}x{H} has an odd side; 4:2:0 video needs even sizes")
            self.size = (H, W)
            self._open(H, W)
        elif (H, W) != self.size:
            raise ValueError(f"frame size changed from {self.size[1]}x{self.size[0]} to {W}x{H}")
        y, u, v = rgb_to_yuv420(frames)
        if self.suffix == ".y4m":
            T = y.shape[0]
            magic = np.broadcast_to(np.frombuffer(b"FRAME\n", np.uint8), (T, 6))
            body = np.concatenate([magic, y.reshape(T, -1), u.reshape(T, -1), v.reshape(T, -1)], axis=1)
            self._file.write(np.ascontiguousarray(body).tobytes())
        else:
            import av

            for t in range(y.shape[0]):
                packed = np.concatenate([y[t].ravel(), u[t].ravel(), v[t].ravel()]).reshape(-1, W)
                for packet in self._stream.encode(av.VideoFrame.from_ndarray(packed, format="yuv420p")):
                    self._container.mux(packet)
        self.frames_written += frames.shape[0]

    def _open(self, H, W):
        if self.suffix == ".y4m":
            self._file = open(self.tmp, "wb")
            f = self.fps
            self._file.write(f"YUV4MPEG2 W{W} H{H} F{f.numerator}:{f.denominator} Ip A1:1 C420jpeg\n".encode())
            return
        import av

        self._container = av.open(str(self.tmp), mode="w", format="mp4")
        codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
        self._stream = self._container.add_stream(codec, rate=self.fps)
        self._stream.width, self._stream.height, self._stream.pix_fmt = W, H, "yuv420p"
        self._stream.options = {"crf": str(self.crf), "preset": "medium"} if codec == "libx264" else {"qscale": "2"}

    def close(self) -> Path:
        """Finish the file and move it into place."""
        if self.frames_written == 0:
            self.abort()
            raise ValueError(f"{self.path}: no frames were written")
        if self._file is not None:
            self._file.close()
        if self._container is not None:
            for packet in self._stream.encode():
                self._container.mux(packet)
            self._container.close()
        if self.overwrite:
            os.replace(self.tmp, self.path)
        else:  # a hard link fails if the target appeared meanwhile: two writers cannot both succeed
            try:
                os.link(self.tmp, self.path)
            except FileExistsError:
                self.tmp.unlink(missing_ok=True)
                raise FileExistsError(f"{self.path} appeared while it was being written; nothing replaced") from None
            except OSError:  # file systems without hard links
                os.replace(self.tmp, self.path)
            self.tmp.unlink(missing_ok=True)
        return self.path

    def abort(self):
        for h in (self._file, self._container):
            try:
                if h is not None:
                    h.close()
            except Exception:
                pass
        self.tmp.unlink(missing_ok=True)
