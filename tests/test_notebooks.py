"""The notebooks: committed without outputs, each 01..15 with a checked exercise (fast), and every one
executing top to bottom without an error (slow; run in a temporary copy, never writing into the repo)."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK_DIR = ROOT / "notebooks"
COURSE = ["00_quick_start", "01_video_and_tokenizer", "02_multiscale_quantizer", "03_context_model_and_masks",
          "04_entropy_coding", "05_progressive_truncation", "06_detail_sampler", "07_swapping_a_stage",
          "08_evaluation", "09_temporal_copy_and_rdo", "10_arithmetic_coding",
          "11_unsafe_masks", "12_build_a_stage",
          "13_train_from_scratch", "14_against_classical_codecs",
          "15_capstone"]
ALL_NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
TIMEOUT_S = 300


def _read(path: Path):
    return nbformat.read(path, as_version=4)


def test_the_course_notebooks_exist():
    missing = [n for n in COURSE if not (NOTEBOOK_DIR / f"{n}.ipynb").is_file()]
    assert not missing, f"missing notebooks: {missing} (run scripts/build_notebooks.py)"


@pytest.mark.parametrize("path", ALL_NOTEBOOKS, ids=lambda p: p.stem)
def test_committed_notebook_has_no_outputs(path):
    nb = _read(path)
    nbformat.validate(nb)
    dirty = [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and (c.outputs or c.execution_count)]
    assert not dirty, (f"{path.name}: cells {dirty} have outputs or execution counts; strip them "
                       "(jupyter nbconvert --clear-output --inplace, or rerun scripts/build_notebooks.py)")


@pytest.mark.parametrize("name", COURSE[1:])
def test_each_chapter_has_a_checked_exercise(name):
    nb = _read(NOTEBOOK_DIR / f"{name}.ipynb")
    exercises = [c.source for c in nb.cells if c.cell_type == "code" and "raise NotImplementedError" in c.source]
    assert exercises, f"{name}: no exercise cell (a function with `raise NotImplementedError`)"
    for src in exercises:
        assert "check_" in src and "progvc_lab.course" in "".join(c.source for c in nb.cells), \
            f"{name}: an exercise cell does not call a check_ function from progvc_lab.course"


def test_generated_notebooks_match_the_generator():
    """The .ipynb files are what scripts/build_notebooks.py writes (edit the script, not the JSON)."""
    script = ROOT / "scripts" / "build_notebooks.py"
    if not script.is_file():
        pytest.skip("scripts/build_notebooks.py not present")
    out = subprocess.run([sys.executable, str(script), "--check"], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr


@pytest.mark.slow
@pytest.mark.parametrize("path", ALL_NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_executes(path, tmp_path):
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    copy = tmp_path / path.name                      # outputs go into the copy, never into the repo
    shutil.copy(path, copy)
    nb = _read(copy)
    env_backup = dict(os.environ)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.pop("MPLBACKEND", None)               # the kernel uses the inline backend, as in Jupyter
    try:
        client = NotebookClient(nb, timeout=TIMEOUT_S, kernel_name="python3",
                                resources={"metadata": {"path": str(tmp_path)}})
        t0 = time.perf_counter()
        try:
            client.execute()
        except CellExecutionError as e:
            pytest.fail(f"{path.name} failed:\n{str(e)[-3000:]}")
        seconds = time.perf_counter() - t0
    finally:
        os.environ.clear()
        os.environ.update(env_backup)
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
              if o.get("output_type") == "error"]
    assert not errors, f"{path.name}: error outputs {errors}"
    print(f"{path.name}: executed in {seconds:.1f} s")
    assert seconds < TIMEOUT_S


# ---- the tutorials: one chapter per notebook, figures present and small ------------------------------------
TUTORIALS = ROOT / "tutorials"


def test_one_tutorial_chapter_per_course_notebook():
    if not TUTORIALS.is_dir():
        pytest.skip("tutorials/ not present")
    missing = [n for n in COURSE if not (TUTORIALS / f"{n}.md").is_file()]
    assert not missing, f"tutorial chapters missing: {missing}"
    toc = (TUTORIALS / "README.md").read_text()
    assert all(f"{n}.md" in toc for n in COURSE), "tutorials/README.md must link every chapter"


def test_tutorial_figures_exist_and_are_small():
    import re

    if not TUTORIALS.is_dir():
        pytest.skip("tutorials/ not present")
    for chapter in sorted(TUTORIALS.glob("*.md")):
        for ref in re.findall(r"\]\((figures/[^)]+)\)", chapter.read_text()):
            path = TUTORIALS / ref
            assert path.is_file(), f"{chapter.name} shows {ref}, which does not exist (scripts/make_tutorial_figures.py)"
    for png in (TUTORIALS / "figures").glob("*.png"):
        assert png.stat().st_size < 200_000, f"{png.name} is {png.stat().st_size} bytes; keep figures under 200 KB"


def test_tutorial_numbers_come_from_numbers_json():
    """Every number a chapter quotes between <!-- n:KEY --> markers is what numbers.json holds
    (scripts/tutorial_numbers.py writes them; a typed or stale number fails here)."""
    sys.path.insert(0, str(ROOT / "scripts"))
    import tutorial_numbers

    if not tutorial_numbers.NUMBERS.is_file():
        pytest.skip("tutorials/figures/numbers.json not present")
    stale = tutorial_numbers.stale_chapters()
    assert not stale, f"chapters with stale numbers: {stale} (run scripts/tutorial_numbers.py)"
    marked = sum(len(tutorial_numbers.MARKER.findall(p.read_text())) for p in TUTORIALS.glob("*.md"))
    assert marked >= 30, f"only {marked} generated numbers in the tutorials"
    assert "at the time of writing" not in "".join(p.read_text() for p in TUTORIALS.glob("*.md"))


def test_tutorial_numbers_fill_and_detect_a_stale_value():
    sys.path.insert(0, str(ROOT / "scripts"))
    import tutorial_numbers as tn

    numbers = {"rd": [{"psnr": 17.678}], "m": {"a b": 0.27}}
    text = "at <!-- n:rd.0.psnr:.1f -->99.0<!-- /n --> dB, <!-- n:m.a b:.0% -->1%<!-- /n -->"
    assert tn.fill(text, numbers) == "at <!-- n:rd.0.psnr:.1f -->17.7<!-- /n --> dB, <!-- n:m.a b:.0% -->27%<!-- /n -->"
    with pytest.raises(KeyError, match="no entry 'nope'"):
        tn.fill("<!-- n:nope -->1<!-- /n -->", numbers, "x.md")
