"""Shared test setup: environment, markers and the "skip here, fail in CI" helpers.

Suites (markers, registered below and in pyproject.toml):
    default   fast, self-contained: runs on a fresh clone without ../shared      (make test)
    slow      notebooks and training end-to-end                                (make test-slow)
    browser   JupyterLab / Voila driven in headless chromium                   (make test-browser)

Some tests need things a user's clone does not have: `../shared` (the real clips, only on CI and
developer machines) or a system tool (ffmpeg, chromium). Ask for them with

    from conftest import require_tool, require_shared
    ffmpeg = require_tool("ffmpeg")        # -> absolute path
    shared = require_shared()              # -> Path to ../shared

or with the fixtures `shared_dir`, `ffmpeg_path`, `chromium_path`. Outside CI a missing piece
skips the test with the reason; with CI=true it FAILS, so CI never goes green by skipping.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

# The folders come from the one module that knows them (progvc_lab.resources imports neither torch nor
# anything heavy, so the environment below is still set before torchac / matplotlib are imported).
from progvc_lab.resources import REPO_ROOT, shared_path  # noqa: E402

SHARED_DIR = shared_path()
assert REPO_ROOT == Path(__file__).resolve().parent.parent, "the tests run against another checkout's package"

# --- environment, set before any test imports torchac / matplotlib / datasets -------------------
# torchac compiles its C++ extension at first import: once, into the project cache.
os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(REPO_ROOT / ".cache" / "torch_extensions"))
# Tests never reach the network.
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# No windows: figures render off-screen.
os.environ.setdefault("MPLBACKEND", "Agg")
# The venv's bin (ninja for torchac, jupyter, voila) on PATH even when the venv is not activated.
_venv_bin = str(Path(sys.executable).parent)
if _venv_bin not in os.environ.get("PATH", "").split(os.pathsep):
    os.environ["PATH"] = _venv_bin + os.pathsep + os.environ.get("PATH", "")

try:
    import matplotlib

    matplotlib.use("Agg")
except ImportError:  # the packaging tests still run without matplotlib
    pass


# --- markers -------------------------------------------------------------------------------------
def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "slow: notebooks and training end-to-end (make test-slow)")
    config.addinivalue_line(
        "markers", "browser: drives JupyterLab/Voila in headless chromium (make test-browser)"
    )


# --- skip outside CI, fail in CI -----------------------------------------------------------------
def in_ci() -> bool:
    """True when the environment variable CI says so (CI=true, as CI runners set it)."""
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes", "on"}


def skip_or_fail(reason: str):
    """Skip the test with `reason`; under CI=true fail it instead (a CI run must not skip)."""
    if in_ci():
        pytest.fail(f"{reason} [CI=true: a missing requirement is an error in CI]", pytrace=False)
    pytest.skip(reason)


def require_tool(name: str) -> str:
    """Absolute path of the executable `name`; skip (or, in CI, fail) with a clear reason if absent."""
    path = shutil.which(name)
    if path is None:
        hint = {
            "ffmpeg": "apt-get install ffmpeg",
            "chromium": "apt-get install chromium chromium-driver",
            "chromedriver": "apt-get install chromium-driver",
            "g++": "apt-get install g++",
        }.get(name, f"install {name}")
        skip_or_fail(f"`{name}` not found on PATH ({hint})")
    return path


def require_shared(*parts: str) -> Path:
    """`<repo>/../shared` (or a path inside it); skip (or, in CI, fail) when it is not there."""
    if not SHARED_DIR.is_dir():
        skip_or_fail(f"../shared not present (only CI and developer machines have it): {SHARED_DIR}")
    path = SHARED_DIR.joinpath(*parts)
    if not path.exists():
        skip_or_fail(f"{path} not present in ../shared")
    return path


# --- fixtures ------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def repo_root() -> Path:
    """The project root (the folder holding pyproject.toml)."""
    return REPO_ROOT


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """`<repo>/../shared`: real clips and training material; skipped outside CI when absent."""
    return require_shared()


@pytest.fixture(scope="session")
def ffmpeg_path() -> str:
    return require_tool("ffmpeg")


@pytest.fixture(scope="session")
def chromium_path() -> str:
    return require_tool("chromium")
