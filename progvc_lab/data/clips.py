"""The one loader of clips: which clips exist and how a clip is read.

* ``shipped_clips()``: the shipped ``data/*.y4m`` (the checkout's, else the installed package's);
* ``shared_clips()``: ``../shared/data/clips/*.y4m`` where that folder exists (CI and developer
  machines), else ``[]``;
* ``default_clips()``: both, the clips ``progvc-lab eval`` uses by default;
* ``load_clip(path, frames=None)``: frames (T, 3, H, W) in [0, 1] and fps.

Folders come from ``progvc_lab.resources``; nothing here imports torch until a clip is read.
"""
from __future__ import annotations

from pathlib import Path

from ..resources import shared_dir, shared_path, shipped_dir

SHARED_CLIPS_PARTS = ("data", "clips")


def shipped_clips() -> list[Path]:
    """The shipped clips (``data/*.y4m``), sorted."""
    return sorted(shipped_dir("data").glob("*.y4m"))


def shared_clips_dir() -> Path:
    """Where ``../shared/data/clips`` is (it may not exist)."""
    return shared_path(*SHARED_CLIPS_PARTS)


def shared_clips() -> list[Path]:
    """``../shared/data/clips/*.y4m``, sorted; ``[]`` without ``../shared``."""
    folder = shared_dir(*SHARED_CLIPS_PARTS)
    return sorted(folder.glob("*.y4m")) if folder is not None and folder.is_dir() else []


def default_clips() -> list[Path]:
    """The shipped clips and, where present, ``../shared/data/clips/*.y4m``."""
    return shipped_clips() + shared_clips()


def load_clip(path: str | Path, frames: int | None = None):
    """Frames (T, 3, H, W) in [0, 1] and fps of a video file (.y4m natively, mp4/mkv via PyAV)."""
    from .video import read_video

    if frames is not None and frames < 1:
        raise ValueError(f"--frames must be at least 1, got {frames}")
    return read_video(path, max_frames=frames)
