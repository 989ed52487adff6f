"""Where the shipped files are: the demo clips (``data/``) and the training configs (``configs/``).

In a checkout they are the repository's top-level ``data/`` and ``configs/`` folders. An installed
wheel carries the same files as package data under ``progvc_lab/assets/data`` and
``progvc_lab/assets/configs`` (``pyproject.toml`` maps those two package folders onto the top-level
folders at build time, so nothing is stored twice in the repository), found here with
``importlib.resources``. The checkout's folders win when both exist, so an edited clip or config in a
clone is the one used.
"""
from __future__ import annotations

from importlib import resources
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
KINDS = ("data", "configs")


def in_checkout() -> bool:
    """True when this package runs from a source tree (the repository's pyproject.toml is beside it)."""
    return (REPO_ROOT / "pyproject.toml").is_file() and (REPO_ROOT / "progvc_lab").is_dir()


def shipped_dir(kind: str) -> Path:
    """The folder of the shipped ``data`` or ``configs`` files (the checkout's, else the package's)."""
    if kind not in KINDS:
        raise ValueError(f"shipped_dir: kind must be one of {KINDS}, got {kind!r}")
    if in_checkout() and (REPO_ROOT / kind).is_dir():
        return REPO_ROOT / kind
    return Path(str(resources.files("progvc_lab"))) / "assets" / kind


def shipped_config(name: str) -> Path | None:
    """A shipped training config by name (``tiny_stage1``, ``tiny_stage1.yaml`` or
    ``configs/tiny_stage1.yaml``), or None."""
    stem = Path(name).name
    folder = shipped_dir("configs")
    for candidate in (folder / stem, folder / f"{stem}.yaml"):
        if candidate.is_file():
            return candidate
    return None


def shipped_configs() -> list[str]:
    return sorted(p.name for p in shipped_dir("configs").glob("*.yaml"))
