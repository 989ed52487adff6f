"""Packaging: one list of dependencies, one torch pin, and nothing that breaks the install.

pyproject.toml holds the only dependency list. The Makefile and environment.yml both install the
exact CPU build of torch first and then the package itself in editable mode, so the three files
cannot drift apart without one of these tests failing.
"""

from __future__ import annotations

import fnmatch
import re
import sys
from pathlib import Path

import pytest

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

REPO_ROOT = Path(__file__).resolve().parent.parent
TORCH_PIN = "torch==2.13.0"

# Their wheels on the CPU-only machines this toolkit targets are CUDA builds; with torchvision
# present `import lightning` fails. Optional perceptual metrics load user-provided weights instead.
FORBIDDEN = {"torchvision", "lpips", "torchcodec"}


def requirement_name(req: str) -> str:
    """'jsonargparse[signatures]>=4.27' -> 'jsonargparse' (lower case, '_' -> '-')."""
    return re.split(r"[\s\[<>=!~;@]", req.strip(), maxsplit=1)[0].lower().replace("_", "-")


@pytest.fixture(scope="module")
def pyproject() -> dict:
    return tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())


@pytest.fixture(scope="module")
def all_requirements(pyproject) -> list[str]:
    project = pyproject["project"]
    reqs = list(project["dependencies"])
    for extra in project.get("optional-dependencies", {}).values():
        reqs += extra
    return reqs


@pytest.fixture(scope="module")
def environment_pip_lines() -> list[str]:
    """The `pip:` section of environment.yml (parsed with PyYAML, or a minimal line reader)."""
    text = (REPO_ROOT / "environment.yml").read_text()
    try:
        import yaml
    except ImportError:
        lines, inside = [], False
        for line in text.splitlines():
            stripped = line.split("#", 1)[0].strip()
            if stripped == "- pip:":
                inside = True
            elif inside and stripped.startswith("- "):
                lines.append(stripped[2:].strip())
        return lines
    env = yaml.safe_load(text)
    assert env.get("name"), "environment.yml needs a `name:`"
    pip_sections = [d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d]
    assert len(pip_sections) == 1, "environment.yml should have exactly one `pip:` section"
    assert "pip" in env["dependencies"], "environment.yml must install pip itself before `pip:`"
    return [str(line).strip() for line in pip_sections[0]]


def test_no_forbidden_dependencies(all_requirements):
    names = {requirement_name(r) for r in all_requirements}
    assert not names & FORBIDDEN, f"pyproject.toml must not depend on {sorted(names & FORBIDDEN)}"
    assert not any(
        requirement_name(r) == "torchmetrics" and "image" in r for r in all_requirements
    ), "torchmetrics[image] pulls torchvision"


def test_torch_is_a_floor_not_a_pin(pyproject):
    """Users elsewhere keep their own build (CUDA, ROCm, MPS); only our installers pin it."""
    (torch_req,) = [r for r in pyproject["project"]["dependencies"] if requirement_name(r) == "torch"]
    assert "==" not in torch_req, f"pin torch in the Makefile/environment.yml, not in pyproject: {torch_req}"


def test_console_script_declared(pyproject):
    assert pyproject["project"]["scripts"]["progvc-lab"] == "progvc_lab.cli:main"


def test_makefile_installs_pinned_torch_before_the_package():
    makefile = (REPO_ROOT / "Makefile").read_text()
    assert re.search(r"^TORCH_PIN\s*:?=\s*torch==2\.13\.0\s*$", makefile, re.M), (
        f"the Makefile must install exactly {TORCH_PIN}"
    )
    recipe = [line.strip() for line in makefile.splitlines() if line.startswith("\t")]
    torch_step = [i for i, line in enumerate(recipe) if "pip install" in line.replace("$(PIP)", "pip")
                  and "$(TORCH_PIN)" in line]
    editable_step = [i for i, line in enumerate(recipe) if "install" in line and " -e " in line]
    assert torch_step and editable_step, "the setup recipe must `pip install` torch and `-e .`"
    assert torch_step[0] < editable_step[0], "install torch==2.13.0 first, then the package"


def test_environment_yml_installs_the_package_and_the_same_torch(environment_pip_lines):
    lines = environment_pip_lines
    editable = [line for line in lines if re.fullmatch(r"-e\s+\.(\[[\w,\s-]+\])?", line)]
    assert editable, f"environment.yml must install the package with `-e .[...]`, has {lines}"
    assert "test" in editable[0], "environment.yml should install the `test` extra"
    assert TORCH_PIN in lines, f"environment.yml must pin {TORCH_PIN} like the Makefile"
    assert lines.index(TORCH_PIN) < lines.index(editable[0])
    assert any("download.pytorch.org/whl/cpu" in line for line in lines), "CPU wheel index missing"
    # nothing else: every other dependency comes from pyproject.toml
    others = [l for l in lines if l != TORCH_PIN and l not in editable and not l.startswith("--")]
    assert not others, f"declare these in pyproject.toml instead: {others}"


def test_shipped_checkpoints_are_package_data(pyproject):
    """Every file under progvc_lab/checkpoints/ must reach a wheel (Codec.from_pretrained needs it)."""
    patterns = pyproject["tool"]["setuptools"]["package-data"]["progvc_lab"]
    assert "checkpoints/*.pt" in patterns and "checkpoints/*.json" in patterns
    ckpt_dir = REPO_ROOT / "progvc_lab" / "checkpoints"
    shipped = [p.relative_to(REPO_ROOT / "progvc_lab").as_posix() for p in ckpt_dir.glob("*")
               if p.is_file() and p.name != "__init__.py"] if ckpt_dir.is_dir() else []
    missed = [f for f in shipped if not any(fnmatch.fnmatch(f, pat) for pat in patterns)]
    assert not missed, f"not covered by [tool.setuptools.package-data]: {missed}"


def test_installed_package_is_this_checkout():
    """An editable install points at this tree, not at a stale copy in site-packages."""
    from importlib import metadata

    try:
        dist = metadata.distribution("progvc_lab")
    except metadata.PackageNotFoundError:
        pytest.skip("progvc_lab is not installed in this environment (run `make setup`)")
    scripts = {ep.name: ep.value for ep in dist.entry_points if ep.group == "console_scripts"}
    assert scripts.get("progvc-lab") == "progvc_lab.cli:main"
    import progvc_lab

    assert Path(progvc_lab.__file__).resolve().is_relative_to(REPO_ROOT), progvc_lab.__file__
