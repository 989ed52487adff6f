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
    patterns = pyproject["tool"]["setuptools"]["package-data"]["progvc_lab.checkpoints"]
    ckpt_dir = REPO_ROOT / "progvc_lab" / "checkpoints"
    shipped = [p.name for p in ckpt_dir.glob("*") if p.is_file() and p.name != "__init__.py"]
    assert shipped
    missed = [f for f in shipped if not any(fnmatch.fnmatch(f, pat) for pat in patterns)]
    assert not missed, f"not covered by [tool.setuptools.package-data]: {missed}"


def test_every_package_and_the_shipped_clips_and_configs_reach_the_wheel(pyproject):
    tool = pyproject["tool"]["setuptools"]
    packages = set(tool["packages"])
    found = {".".join(p.parent.relative_to(REPO_ROOT).parts) for p in (REPO_ROOT / "progvc_lab").rglob("__init__.py")}
    assert found <= packages, f"add to [tool.setuptools] packages: {sorted(found - packages)}"
    assert tool["package-dir"] == {"progvc_lab.assets.data": "data", "progvc_lab.assets.configs": "configs"}
    data = tool["package-data"]
    clips = [p.name for p in (REPO_ROOT / "data").iterdir() if p.is_file()]
    configs = [p.name for p in (REPO_ROOT / "configs").glob("*.yaml")]
    assert clips and configs
    for names, patterns in ((clips, data["progvc_lab.assets.data"]), (configs, data["progvc_lab.assets.configs"])):
        missed = [f for f in names if not any(fnmatch.fnmatch(f, pat) for pat in patterns)]
        assert not missed, f"not covered by [tool.setuptools.package-data]: {missed}"


def test_license_fits_the_gpl_dependency(pyproject):
    """torchac is GPL-3.0 and a required dependency: the package is GPL-3.0-or-later, with the text."""
    project = pyproject["project"]
    assert project["license"] == "GPL-3.0-or-later"
    assert project["license-files"] == ["LICENSE"]
    text = (REPO_ROOT / "LICENSE").read_text()
    assert "GNU GENERAL PUBLIC LICENSE" in text and "Version 3, 29 June 2007" in text


def test_version_is_one_number(pyproject):
    assert "version" not in pyproject["project"] and "version" in pyproject["project"]["dynamic"]
    assert pyproject["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "progvc_lab.__version__"}
    import progvc_lab

    assert re.fullmatch(r"\d+\.\d+\.\d+", progvc_lab.__version__)


def test_makefile_and_environment_yml_install_the_same_extras(environment_pip_lines, pyproject):
    makefile = (REPO_ROOT / "Makefile").read_text()
    (make_extras,) = re.findall(r"^EXTRAS\s*:?=\s*(\S+)\s*$", makefile, re.M)
    (line,) = [l for l in environment_pip_lines if l.startswith("-e ")]
    env_extras = re.search(r"\[([\w,\s-]+)\]", line).group(1)
    assert sorted(make_extras.split(",")) == sorted(x.strip() for x in env_extras.split(","))
    assert set(make_extras.split(",")) <= set(pyproject["project"]["optional-dependencies"])


# import name of each dependency, or None for a tool that is run or loaded by another package
USED_AS = {"torch": "torch", "lightning": "lightning", "jsonargparse": None, "einops": "einops",
           "torchac": "torchac", "constriction": "constriction", "ninja": None, "numpy": "numpy", "datasets": "datasets",
           "huggingface-hub": "huggingface_hub", "av": "av", "pytorch-msssim": "pytorch_msssim",
           "matplotlib": "matplotlib", "ipywidgets": "ipywidgets", "jupyterlab": None, "tqdm": "tqdm",
           "bjontegaard": "bjontegaard", "stlpips-pytorch": "stlpips-pytorch"}  # weights read by distribution name


def test_dependencies_are_exactly_the_ones_used(pyproject):
    names = {requirement_name(r) for r in pyproject["project"]["dependencies"]}
    assert names == set(USED_AS), f"update USED_AS (and the code): {sorted(names ^ set(USED_AS))}"
    source = "\n".join(p.read_text() for p in (REPO_ROOT / "progvc_lab").rglob("*.py"))
    for name, module in USED_AS.items():
        if module is not None:
            assert re.search(rf"(^|\s)(import|from) {module}\b|[\"']{module}[\"']", source, re.M), (
                f"{name} is declared but progvc_lab never imports {module}: remove it or use it")


def test_the_wheel_carries_model_clips_configs_and_license(tmp_path):
    """A real (non-editable) wheel, built here without its dependencies (seconds)."""
    import subprocess
    import zipfile

    try:
        import setuptools  # noqa: F401
        isolation = ["--no-build-isolation"]
    except ImportError:
        isolation = []
    out = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", *isolation, "-w", str(tmp_path),
                          str(REPO_ROOT)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    (wheel,) = tmp_path.glob("progvc_lab-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for needed in ("progvc_lab/checkpoints/tiny.pt", "progvc_lab/assets/data/foreman_qcif_30f.y4m",
                   "progvc_lab/assets/data/akiyo_qcif_30f.y4m", "progvc_lab/assets/configs/tiny_stage1.yaml",
                   "progvc_lab/assets/configs/tiny_stage2.yaml", "progvc_lab/resources.py", "progvc_lab/cli.py"):
        assert needed in names, needed
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    assert not any(n.startswith(("tests/", "notebooks/", "benchmarks/")) for n in names)
    meta = next(zipfile.ZipFile(wheel).read(n).decode() for n in names if n.endswith(".dist-info/METADATA"))
    assert "License-Expression: GPL-3.0-or-later" in meta and "Requires-Dist: huggingface_hub" in meta


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


def test_shipped_files_are_found_by_name_from_any_folder(tmp_path, monkeypatch):
    from progvc_lab import resources
    from progvc_lab.data import DATA_DIR, sample_clip_path
    from progvc_lab.training.cli import _shipped_configs

    monkeypatch.chdir(tmp_path)  # "another folder": no configs/ or data/ here
    assert sample_clip_path("foreman").is_file() and Path(DATA_DIR) == resources.shipped_dir("data")
    shipped = resources.shipped_config("tiny_stage1")
    assert shipped is not None and shipped.name == "tiny_stage1.yaml"
    for spelling in ("tiny_stage1", "tiny_stage1.yaml", "configs/tiny_stage1.yaml"):
        assert _shipped_configs(["--config", spelling, "--x", "1"]) == ["--config", str(shipped), "--x", "1"]
        assert _shipped_configs([f"--config={spelling}"]) == [f"--config={shipped}"]
    (tmp_path / "mine.yaml").write_text("trainer: {}\n")
    assert _shipped_configs(["--config", "mine.yaml"]) == ["--config", "mine.yaml"]  # a local file wins
    with pytest.raises(FileNotFoundError, match="no such config file, and no shipped config of that name"):
        _shipped_configs(["--config", "nope.yaml"])


def test_config_paths_resolve_to_the_shipped_data(monkeypatch, tmp_path):
    from progvc_lab.data import DATA_DIR
    from progvc_lab.data.datamodule import DEFAULT_VAL_SOURCES, resolve_path

    monkeypatch.chdir(tmp_path)
    assert all(resolve_path(s).is_file() for s in DEFAULT_VAL_SOURCES)
    assert resolve_path("data") == Path(DATA_DIR).resolve()
    assert resolve_path(tmp_path / "x") == tmp_path / "x"
