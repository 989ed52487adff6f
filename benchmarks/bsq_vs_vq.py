"""Tiny (VQ codebook) against tiny-bsq (bitwise BSQ tokens, bitwise context-model head), per clip and k.

    bash benchmarks/eval_bsq.sh            # runs `progvc-lab eval --model tiny-bsq`, then this script
    python benchmarks/bsq_vs_vq.py benchmarks/results/eval_tiny.json benchmarks/results/eval_tiny_bsq.json

Reads two ``progvc-lab eval`` JSON files and prints a markdown table of the truncation ladder (one
encode per clip, cut after k scales, decoded from the real bytes, zero fill): bytes, bpp, PSNR-Y,
MS-SSIM (RGB) and ST-LPIPS of each model at every k, for the clips both files hold.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path


def ladder(path: Path) -> tuple[str, dict]:
    """(model name, {clip name: results of the zero-fill truncation entry})."""
    doc = json.loads(Path(path).read_text())
    out = {}
    for clip in doc["clips"]:
        entry = next((c for c in clip["codecs"] if c.get("codec") == "ours" and c.get("sampler") == "zero"), None)
        if entry is None:
            raise SystemExit(f"{path}: clip {clip['name']} has no zero-fill truncation entry of our codec")
        out[clip["name"]] = (clip, entry["results"])
    return doc["model"], out


def table(a_path, b_path) -> str:
    name_a, a = ladder(a_path)
    name_b, b = ladder(b_path)
    common = [c for c in a if c in b]
    if not common:
        raise SystemExit(f"{a_path} and {b_path} share no clip")
    lines = []
    for clip in common:
        info, ra = a[clip]
        _, rb = b[clip]
        lines += [f"**{clip}** ({info['frames']} frames {info['width']}x{info['height']}; zero fill)", "",
                  f"| k | bytes {name_a} / {name_b} | bpp {name_a} / {name_b} | PSNR-Y {name_a} / {name_b} "
                  f"| MS-SSIM {name_a} / {name_b} | ST-LPIPS {name_a} / {name_b} |",
                  "|---|---|---|---|---|---|"]
        for i, k in enumerate(ra["k"]):
            j = rb["k"].index(k) if k in rb["k"] else None
            if j is None:
                continue

            def pair(key, fmt):
                va, vb = ra.get(key), rb.get(key)
                if va is None or vb is None:
                    return "n/a"
                return f"{format(va[i], fmt)} / {format(vb[j], fmt)}"

            lines.append(f"| {k} | {pair('bytes', 'd')} | {pair('bpp', '.4f')} | {pair('psnr-y', '.2f')} "
                         f"| {pair('ms-ssim-rgb', '.3f')} | {pair('st-lpips', '.3f')} |")
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit(__doc__)
    print(table(sys.argv[1], sys.argv[2]))
