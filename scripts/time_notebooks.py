"""Execute course notebooks (in a temporary copy) and record how long each took in numbers.json.

    .venv/bin/python scripts/time_notebooks.py 07_swapping_a_stage 10_arithmetic_coding

Writes ``notebook_seconds[name]`` (one thread per library, as the slow test runs them) into
``tutorials/figures/numbers.json`` and refreshes the chapters (scripts/tutorial_numbers.py), so the
run time a chapter quotes is a measurement on this machine, not a guess.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
import tutorial_numbers  # noqa: E402


def run_notebook(path: Path, timeout: int = 600) -> float:
    import nbformat
    from nbclient import NotebookClient

    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / path.name
        shutil.copy(path, copy)
        nb = nbformat.read(copy, as_version=4)
        os.environ.setdefault("OMP_NUM_THREADS", "1")
        os.environ.pop("MPLBACKEND", None)
        client = NotebookClient(nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": tmp}})
        t0 = time.perf_counter()
        client.execute()
        return time.perf_counter() - t0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="+", help="notebook names without .ipynb")
    args = parser.parse_args(argv)
    numbers = json.loads(tutorial_numbers.NUMBERS.read_text())
    for name in args.names:
        path = ROOT / "notebooks" / f"{name}.ipynb"
        if not path.is_file():
            print(f"time_notebooks: error: {path} does not exist", file=sys.stderr)
            return 2
        seconds = run_notebook(path)
        print(f"{name}: {seconds:.0f} s")
        numbers.setdefault("notebook_seconds", {})[name] = round(seconds)
        tutorial_numbers.NUMBERS.write_text(json.dumps(numbers, indent=1) + "\n")
    return tutorial_numbers.main([])


if __name__ == "__main__":
    sys.exit(main())
