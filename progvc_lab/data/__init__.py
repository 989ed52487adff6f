"""Video data: y4m and video-file IO, colour conversion, synthetic clips, datasets.

Light modules (y4m, colour, video, synthetic) load at once; the ``datasets``/Lightning parts
(``ClipDataset``, ``build_clip_cache``, ``VideoDataModule``, ...) load on first use, so reading a
clip does not import them. This package imports nothing from the codec, training or viz code.

>>> from progvc_lab.data import read_video, sample_clip_path
>>> frames_T3HW, fps = read_video(sample_clip_path("foreman"))   # (30, 3, 144, 176), 30000/1001
"""

from __future__ import annotations


from .color import rgb_to_yuv420, rgb_to_yuv444_float, yuv420_to_rgb
from .synthetic import camera_motion_clip, synthetic_clip
from .video import read_video, write_video
from .y4m import VideoFormatError, Y4MVideo, read_y4m, read_y4m_header, write_y4m

from ..resources import shipped_dir  # noqa: E402
from .clips import clip_path, default_clips, load_clip, sample_clip_path, shared_clips, shipped_clips  # noqa: E402

DATA_DIR = shipped_dir("data")  # the repository's data/ folder, or the installed package's copy of it

_LAZY = {
    "ClipDataset": "dataset", "build_clip_cache": "dataset", "load_hub_dataset": "dataset",
    "split_by_source": "dataset", "list_media_files": "dataset", "synthetic_frames_dataset": "dataset",
    "frames_dataset_from_clips": "dataset",
    "VideoDataModule": "datamodule", "is_held_out": "datamodule",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "VideoFormatError", "Y4MVideo", "read_y4m", "read_y4m_header", "write_y4m",
    "read_video", "write_video", "yuv420_to_rgb", "rgb_to_yuv420", "rgb_to_yuv444_float",
    "synthetic_clip", "camera_motion_clip", "sample_clip_path", "DATA_DIR",
    "clip_path", "default_clips", "load_clip", "shared_clips", "shipped_clips", *_LAZY,
]
