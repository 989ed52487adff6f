"""The capstone: a variant of your own, an RD curve, a BD-rate, and a checker that reproduces them.

A submission is a folder::

    submission.json      {"name", "clip": "foreman", "frames": 8, "variant": "what you changed",
                          "rd": [{"k", "bytes", "psnr"}, ...], "bd_rate_vs_shipped": float | null}
    model.pt             your codec (``Codec.save``): any mask, window, widths, codebook
    stream.pgvc          your encode of the clip (all scales)
    variant.py           optional: code that registers what model.pt needs (e.g. a mask:
                         ``masks.register_mask("my_mask")(fn)``), run before the model is loaded

``check_submission(folder)`` (or ``python -m progvc_lab.course.capstone DIR``) verifies, from your files
only, that (1) the model loads and re-encoding the clip gives exactly ``stream.pgvc`` (the run is
deterministic, so the stream is the model's), (2) the stream round-trips: every cut k decodes, and the
tokens decode identically to what the encoder coded (``encode(..., verify=True)``), (3) every reported
RD point is what the truncated stream gives (bytes exactly, PSNR-RGB to 0.01 dB), and (4) the BD-rate
against the shipped tiny model is what ``metrics.bd_rate_report`` computes from these points and the
shipped model's on the same frames (to 0.01 percentage points; null when the report says no overlap).
It returns a :class:`CapstoneReport` and prints one line per check.

``make_submission(codec, folder, ...)`` writes a correct submission from a codec (the notebook's
starting point).
"""
from __future__ import annotations

import functools
import json
import runpy
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch


@dataclass
class CapstoneReport:
    passed: bool
    lines: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return self.passed


def rd_points(codec, data: bytes, video: torch.Tensor) -> list[dict]:
    """{k, bytes, psnr} of the stream cut after every k, each decoded from its real bytes."""
    from .. import bitstream
    from ..metrics import psnr

    K = bitstream.read_stream(data).header.scales_sent
    out = []
    for k in range(1, K + 1):
        cut = bitstream.truncate(data, k)
        out.append({"k": k, "bytes": len(cut), "psnr": psnr(codec.decode(cut), video)})
    return out


def _clip(name: str, frames: int):
    from . import sample_video

    return sample_video(frames=frames, name=name)


@functools.lru_cache(maxsize=4)
def shipped_points(clip: str, frames: int) -> tuple:
    """The shipped tiny model's RD points on the first ``frames`` frames of ``clip`` (computed once)."""
    from ..viz import load_demo_codec

    video, fps = _clip(clip, frames)
    shipped = load_demo_codec()
    return tuple(rd_points(shipped, shipped.encode(video, fps), video))


def bd_rate_vs_shipped(points: list[dict], clip: str, frames: int) -> float | None:
    """BD-rate (percent, bytes vs PSNR-RGB) of ``points`` against the shipped tiny model on the same frames."""
    from ..metrics import bd_rate_report

    ref = shipped_points(clip, frames)
    report = bd_rate_report([p["bytes"] for p in ref], [p["psnr"] for p in ref],
                            [p["bytes"] for p in points], [p["psnr"] for p in points])
    return report["bd_rate"]


def make_submission(codec, folder, name: str, variant: str, clip: str = "foreman", frames: int = 8,
                    variant_code: str | None = None) -> Path:
    """Write a complete, correct submission for ``codec`` into ``folder``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    video, fps = _clip(clip, frames)
    data = codec.encode(video, fps)
    (folder / "stream.pgvc").write_bytes(data)
    codec.save(folder / "model.pt")
    if variant_code:
        (folder / "variant.py").write_text(variant_code)
    points = rd_points(codec, data, video)
    doc = {"name": name, "clip": clip, "frames": frames, "variant": variant, "rd": points,
           "bd_rate_vs_shipped": bd_rate_vs_shipped(points, clip, frames)}
    (folder / "submission.json").write_text(json.dumps(doc, indent=1) + "\n")
    return folder


def check_submission(folder, quiet: bool = False) -> CapstoneReport:
    """Verify a submission folder (see the module docstring); never raises for a bad submission."""
    from ..codec import Codec

    folder = Path(folder)
    report = CapstoneReport(True)

    def say(ok: bool, text: str):
        report.lines.append(("ok    " if ok else "FAIL  ") + text)
        report.passed &= ok
        if not quiet:
            print(report.lines[-1])
        return ok

    try:
        doc = json.loads((folder / "submission.json").read_text())
        for key in ("clip", "frames", "rd", "bd_rate_vs_shipped"):
            if key not in doc:
                raise KeyError(key)
    except (OSError, ValueError, KeyError) as e:
        say(False, f"submission.json: cannot read it or a field is missing ({e})")
        return report
    if (folder / "variant.py").is_file():
        try:
            runpy.run_path(str(folder / "variant.py"), run_name="capstone_variant")
        except Exception as e:  # noqa: BLE001 - the student's code: report, do not crash
            say(False, f"variant.py raised {type(e).__name__}: {e}")
            return report
    try:
        codec = Codec.load(folder / "model.pt")
        data = (folder / "stream.pgvc").read_bytes()
        video, fps = _clip(doc["clip"], int(doc["frames"]))
    except Exception as e:  # noqa: BLE001
        say(False, f"cannot load model.pt, stream.pgvc or the clip: {type(e).__name__}: {e}")
        return report
    if not say(codec.encode(video, fps) == data, f"re-encoding {doc['clip']} ({doc['frames']} frames) with model.pt "
               f"gives stream.pgvc ({len(data)} bytes)"):
        return report
    try:
        codec.encode(video, fps, verify=True)
        points = rd_points(codec, data, video)
        say(True, f"the stream round-trips: tokens verified, all {len(points)} cuts decode")
    except Exception as e:  # noqa: BLE001
        say(False, f"the stream does not round-trip: {type(e).__name__}: {e}")
        return report
    reported = {int(p["k"]): p for p in doc["rd"]}
    for p in points:
        r = reported.get(p["k"])
        ok = r is not None and int(r["bytes"]) == p["bytes"] and abs(float(r["psnr"]) - p["psnr"]) <= 0.01
        say(ok, f"k={p['k']}: reported {None if r is None else (r['bytes'], round(float(r['psnr']), 3))}, "
                f"reproduced ({p['bytes']}, {p['psnr']:.3f})")
    bd = bd_rate_vs_shipped(points, doc["clip"], int(doc["frames"]))
    claimed = doc["bd_rate_vs_shipped"]
    ok = (bd is None and claimed is None) or (bd is not None and claimed is not None and abs(float(claimed) - bd) <= 0.01)
    say(ok, f"BD-rate vs the shipped tiny model: reported {claimed}, reproduced {bd if bd is None else round(bd, 3)}")
    return report


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m progvc_lab.course.capstone SUBMISSION_DIR", file=sys.stderr)
        return 2
    return 0 if check_submission(argv[0]) else 1


if __name__ == "__main__":
    sys.exit(main())
