"""Write the measured numbers of ``tutorials/figures/numbers.json`` into the tutorial chapters.

A number the text quotes is never typed: it sits between two invisible markers that name where it
comes from, and this script rewrites what is between them from the JSON::

    the 1x1 block's overhead is <!-- n:scale0_overhead.ratio:.0f -->6<!-- /n -->x its model bits

``n:KEY[:FORMAT]``: KEY is a dotted path into numbers.json (list positions are numbers, e.g.
``rd.4.psnr``), FORMAT a Python format spec (default ``.3g``). Markdown renderers hide the comments.

    .venv/bin/python scripts/tutorial_numbers.py           # rewrite tutorials/*.md from numbers.json
    .venv/bin/python scripts/tutorial_numbers.py --check   # exit 1 if a chapter is out of date

``scripts/make_tutorial_figures.py`` runs this after it measured; ``scripts/time_notebooks.py`` adds
notebook run times. ``tests/test_notebooks.py`` checks that every marker resolves and is up to date.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TUTORIALS = ROOT / "tutorials"
NUMBERS = TUTORIALS / "figures" / "numbers.json"
MARKER = re.compile(r"<!-- n:(?P<key>[^:]+?)(?::(?P<fmt>[^\s]*))? -->(?P<value>.*?)<!-- /n -->", re.S)


def lookup(numbers, key: str):
    """``numbers['a']['b'][3]`` for key ``a.b.3``; KeyError naming the missing part."""
    value = numbers
    for part in key.split("."):
        if isinstance(value, list):
            if not part.lstrip("-").isdigit() or not -len(value) <= int(part) < len(value):
                raise KeyError(f"{key}: no position {part!r} in a list of {len(value)}")
            value = value[int(part)]
        elif isinstance(value, dict) and part in value:
            value = value[part]
        else:
            raise KeyError(f"{key}: no entry {part!r} (have {list(value)[:8] if isinstance(value, dict) else value})")
    return value


def render(value, fmt: str | None) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, str):
        return value
    return format(value, fmt or ".3g")


def fill(text: str, numbers: dict, where: str = "text") -> str:
    """``text`` with every marked number rewritten from ``numbers``."""
    def one(m):
        try:
            value = render(lookup(numbers, m["key"]), m["fmt"])
        except KeyError as e:
            raise KeyError(f"{where}: {e.args[0]} (rerun scripts/make_tutorial_figures.py?)") from None
        fmt = f":{m['fmt']}" if m["fmt"] else ""
        return f"<!-- n:{m['key']}{fmt} -->{value}<!-- /n -->"
    return MARKER.sub(one, text)


def stale_chapters(numbers: dict | None = None) -> list[str]:
    """Names of the chapters whose marked numbers differ from numbers.json."""
    numbers = numbers if numbers is not None else json.loads(NUMBERS.read_text())
    out = []
    for path in sorted(TUTORIALS.glob("*.md")):
        text = path.read_text()
        if fill(text, numbers, path.name) != text:
            out.append(path.name)
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only report chapters that are out of date")
    args = parser.parse_args(argv)
    numbers = json.loads(NUMBERS.read_text())
    stale = stale_chapters(numbers)
    if args.check:
        for name in stale:
            print(f"tutorials/{name}: numbers differ from numbers.json (run scripts/tutorial_numbers.py)",
                  file=sys.stderr)
        return 1 if stale else 0
    for name in stale:
        path = TUTORIALS / name
        path.write_text(fill(path.read_text(), numbers, name))
        print(f"updated tutorials/{name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
