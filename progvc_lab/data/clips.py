"""The one loader of clips: which clips exist and how a clip is read.

* ``shipped_clips()``: the shipped ``data/*.y4m`` (the checkout's, else the installed package's);
* ``shared_clips()``: ``../shared/data/clips/*.y4m`` where that folder exists (CI and developer
  machines), else ``[]``;
* ``default_clips()``: both, the clips ``progvc-lab eval`` uses by default;
* ``sample_clip_path(name)``: a shipped clip by name ("foreman", "akiyo");
* ``clip_path(clip)``: what a user names a clip by (None: Foreman; a shipped clip's name; a file) -> Path;
* ``load_clip(path, frames=None)``: frames (T, 3, H, W) in [0, 1] and fps.

The CLI, ``evaluate``, ``bench``, the explorers (``viz.widgets.load_clip``) and the course all find and
read clips through these.

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


def sample_clip_path(name: str = "foreman") -> Path:
    """Path of a clip shipped in the repository's ``data/`` folder ("foreman" or "akiyo"); an installed
    package carries the same clips as package data (``progvc_lab.resources``)."""
    folder = shipped_dir("data")
    matches = sorted(folder.glob(f"{name.lower()}*.y4m"))
    if not matches:
        available = sorted(p.stem for p in folder.glob("*.y4m"))
        raise FileNotFoundError(
            f"no shipped clip named {name!r} in {folder} (available: {available or 'none'}). "
            f"The data/ folder comes with the repository (restore it with `git checkout -- data`) and with "
            f"the installed package (reinstall progvc_lab)."
        )
    return matches[0]


DEFAULT_CLIP = "foreman"


def clip_path(clip: str | Path | None = None) -> Path:
    """The file a clip names: None -> the shipped Foreman; a bare name without a suffix or folder that is
    not a file here ("akiyo") -> that shipped clip; anything else -> the path as given."""
    if clip is None:
        return sample_clip_path(DEFAULT_CLIP)
    path = Path(clip)
    if not path.exists() and "/" not in str(clip) and not path.suffix:
        return sample_clip_path(str(clip))
    return path


def load_clip(path: str | Path, frames: int | None = None):
    """Frames (T, 3, H, W) in [0, 1] and fps of a video file (.y4m natively, mp4/mkv via PyAV)."""
    from .video import read_video

    if frames is not None and frames < 1:
        raise ValueError(f"--frames must be at least 1, got {frames}")
    return read_video(path, max_frames=frames)
