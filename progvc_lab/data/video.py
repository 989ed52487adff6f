"""Read and write video files as RGB tensors ``frames_T3HW`` (float32 in [0, 1]).

::

    .y4m                      --read_y4m------->  uint8 YUV 4:2:0  --yuv420_to_rgb-->  (T, 3, H, W)
    .mp4 .mkv .avi .mov .webm --PyAV (FFmpeg)-->  uint8 YUV 4:2:0  --yuv420_to_rgb-->  (T, 3, H, W)
                                           (other pixel formats: FFmpeg's rgb24)

``.y4m`` is read natively (:mod:`progvc_lab.data.y4m`); every other container goes through PyAV,
which bundles FFmpeg. Either way, 8-bit 4:2:0 frames are turned into RGB by
:func:`~progvc_lab.data.color.yuv420_to_rgb` with the colour matrix you choose (default BT.601
limited range, nearest chroma up-sampling), so one clip gives the same RGB in any container.
Frames in other pixel formats (4:4:4, 10-bit, RGB codecs) are converted to rgb24 by FFmpeg.

Writing: ``.y4m`` natively (RGB -> BT.601 4:2:0), ``.mp4`` through PyAV with H.264 (libx264,
or MPEG-4 part 2 when libx264 is missing) in yuv420p. Both need even frame sizes. Neither
overwrites an existing file unless ``overwrite=True``.
"""

from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch

from .color import rgb_to_yuv420, yuv420_to_rgb
from .y4m import VideoFormatError, _as_fraction, read_y4m, write_y4m

VIDEO_EXTENSIONS = (".y4m", ".mp4", ".mkv", ".avi", ".mov", ".webm", ".m4v", ".mpg", ".mpeg", ".ts")


def read_video(
    path: str | os.PathLike, max_frames: int | None = None, matrix: str = "bt601"
) -> tuple[torch.Tensor, Fraction]:
    """Read a video file -> (frames_T3HW float32 in [0, 1], fps as a Fraction).

    8-bit 4:2:0 video (y4m, and the usual mp4/mkv/webm) is converted to RGB here with ``matrix``
    and nearest chroma up-sampling, so a clip gives the same RGB whatever the container. Other
    pixel formats are converted by FFmpeg (rgb24). Raises FileNotFoundError for a missing file
    and VideoFormatError for a file that cannot be decoded (with what to do about it).
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    if path.suffix.lower() == ".y4m":
        video = read_y4m(path, max_frames=max_frames)
        return yuv420_to_rgb(video.y, video.u, video.v, matrix=matrix), video.fps
    return _read_with_pyav(path, max_frames, matrix)


def read_video_uint8(path: str | os.PathLike, max_frames: int | None = None) -> tuple[np.ndarray, Fraction]:
    """Like :func:`read_video` but returns uint8 RGB frames (T, H, W, 3): 4x smaller, for caches."""
    frames_T3HW, fps = read_video(path, max_frames)
    return (frames_T3HW * 255.0).round_().to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy(), fps


def _read_with_pyav(path: Path, max_frames: int | None, matrix: str) -> tuple[torch.Tensor, Fraction]:
    import av  # imported here: y4m users never pay for it

    try:
        container = av.open(str(path))
    except av.error.FFmpegError as err:
        raise VideoFormatError(
            f"{path}: FFmpeg (through PyAV) cannot open this file ({err}). Is it a video? "
            f"Try converting it: ffmpeg -i {path.name} -pix_fmt yuv420p out.y4m"
        ) from None
    frames: list[torch.Tensor] = []
    with container:
        if not container.streams.video:
            raise VideoFormatError(f"{path}: the file holds no video stream.")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        fps = stream.average_rate or stream.guessed_rate or Fraction(25)
        try:
            for frame in container.decode(stream):
                frames.append(_frame_to_rgb(frame, matrix))
                if max_frames is not None and len(frames) >= max_frames:
                    break
        except av.error.FFmpegError as err:
            if not frames:
                raise VideoFormatError(f"{path}: FFmpeg cannot decode the video stream ({err}).") from None
    if not frames:
        raise VideoFormatError(f"{path}: the video stream holds no decodable frame.")
    return torch.cat(frames), Fraction(fps)


def _frame_to_rgb(frame, matrix: str) -> torch.Tensor:
    """One PyAV frame -> (1, 3, H, W): our own conversion for 8-bit 4:2:0, FFmpeg's for the rest."""
    H, W = frame.height, frame.width
    if frame.format.name in ("yuv420p", "yuvj420p") and H % 2 == 0 and W % 2 == 0:
        flat = frame.to_ndarray().reshape(-1)
        y = flat[: H * W].reshape(1, H, W)
        u = flat[H * W: H * W * 5 // 4].reshape(1, H // 2, W // 2)
        v = flat[H * W * 5 // 4:].reshape(1, H // 2, W // 2)
        return yuv420_to_rgb(y, u, v, matrix=matrix, full_range=frame.format.name == "yuvj420p")
    rgb_HW3 = frame.to_ndarray(format="rgb24")
    return torch.from_numpy(rgb_HW3).permute(2, 0, 1)[None].float().div_(255.0)


def _check_frames(frames_T3HW: torch.Tensor) -> torch.Tensor:
    frames = torch.as_tensor(frames_T3HW).detach().cpu()
    if frames.ndim == 3:
        frames = frames[None]
    if frames.ndim != 4 or frames.shape[1] != 3:
        raise ValueError(f"expected frames of shape (T, 3, H, W), got {tuple(frames.shape)}")
    H, W = frames.shape[-2:]
    if H % 2 or W % 2:
        raise ValueError(
            f"frame size {W}x{H} has an odd side; 4:2:0 video needs even sizes. "
            f"Crop first, e.g. frames[..., :{H // 2 * 2}, :{W // 2 * 2}]"
        )
    return frames.float().clamp(0.0, 1.0)


def write_video(
    path: str | os.PathLike,
    frames_T3HW: torch.Tensor,
    fps: Fraction | float | int | str = Fraction(30000, 1001),
    overwrite: bool = False,
    crf: int = 12,
) -> Path:
    """Write RGB frames (T, 3, H, W) in [0, 1] to ``.y4m`` (lossless up to 4:2:0) or ``.mp4``.

    ``crf`` is the H.264 quality for mp4 (0 = lossless, 12 = visually lossless, 23 = x264's
    default). Refuses to overwrite an existing file unless ``overwrite=True``.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} already exists; pass overwrite=True to replace it.")
    frames = _check_frames(frames_T3HW)
    fps = _as_fraction(fps)
    y, u, v = rgb_to_yuv420(frames)
    suffix = path.suffix.lower()
    if suffix == ".y4m":
        return write_y4m(path, y, u, v, fps, overwrite=overwrite)
    if suffix != ".mp4":
        raise ValueError(f"{path}: write_video writes .y4m and .mp4 files, not {suffix or 'no extension'}.")
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    T, H, W = y.shape
    codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = W, H, "yuv420p"
        if codec == "libx264":
            stream.options = {"crf": str(crf), "preset": "medium"}
        else:
            stream.options = {"qscale": "2"}
        for t in range(T):
            # yuv420p as one (H*3/2, W) array: the Y, U and V planes back to back (our BT.601
            # conversion, so the file matches what write_video(".y4m") would hold)
            packed = np.concatenate([y[t].ravel(), u[t].ravel(), v[t].ravel()]).reshape(-1, W)
            frame = av.VideoFrame.from_ndarray(packed, format="yuv420p")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path
