"""Where the shipped files are: the demo clips (``data/``) and the training configs (``configs/``).

In a checkout they are the repository's top-level ``data/`` and ``configs/`` folders. An installed
wheel carries the same files as package data under ``progvc_lab/assets/data`` and
``progvc_lab/assets/configs`` (``pyproject.toml`` maps those two package folders onto the top-level
folders at build time, so nothing is stored twice in the repository), found here with
``importlib.resources``. The checkout's folders win when both exist, so an edited clip or config in a
clone is the one used.

This is the one module that knows the repository's folders (``tests/test_imports.py`` checks that no
other package module climbs from ``__file__``): ``REPO_ROOT``, ``project_root()`` (the checkout, else
the current folder), the shipped ``data``/``configs`` (``shipped_dir``), the optional sibling
``../shared`` folder (``shared_path`` / ``shared_dir``, None when absent), ``results_dir()``
(``benchmarks/results``) and ``cache_dir()``.
"""
from __future__ import annotations

from importlib import resources
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
KINDS = ("data", "configs")


def in_checkout() -> bool:
    """True when this package runs from a source tree (the repository's pyproject.toml is beside it)."""
    return (REPO_ROOT / "pyproject.toml").is_file() and (REPO_ROOT / "progvc_lab").is_dir()


def project_root() -> Path:
    """The folder relative paths of configs are taken from: the checkout's root, else the current folder."""
    return REPO_ROOT if in_checkout() else Path.cwd()


def shared_path(*parts: str) -> Path:
    """Where ``../shared`` (or a path inside it) would be: beside the project root; it may not exist."""
    return (project_root().parent / "shared").joinpath(*parts)


def shared_dir(*parts: str) -> Path | None:
    """``../shared`` (or a path inside it) when it exists (CI and developer machines), else None."""
    path = shared_path(*parts)
    return path if path.exists() else None


def results_dir() -> Path:
    """``benchmarks/results``: the committed benchmark results."""
    return project_root() / "benchmarks" / "results"


def cache_dir(name: str) -> Path:
    """``.cache/<name>`` in a checkout, ``~/.cache/progvc_lab/<name>`` in an installed package."""
    return REPO_ROOT / ".cache" / name if in_checkout() else Path.home() / ".cache" / "progvc_lab" / name


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
