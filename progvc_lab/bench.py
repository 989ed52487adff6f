"""Speed and memory of the codec: ``progvc-lab bench`` and ``progvc-lab bench --scaling``.

``run_bench`` times one clip per thread count::

    encode (no self-check) ─ encode --verify ─ decode at k = K (split by stage) ─ decode at k = 1 .. K-1

and reports frames/s, the real-time factor (decode frames/s over the clip's frame rate), where the
time goes (``timed_stages`` wraps the methods of one codec instance and the entropy coder with
``time.perf_counter``; times are *exclusive*: a stage called inside another is not counted twice),
Transformer calls per GOP and the entropy coder's bytes per call over the model's ideal bits. Both
coders on the same tokens, and every other variant, are ``bench_variants``' part of ``progvc-lab bench``.

``run_scaling`` measures how time and memory grow with frames (30, 100, 300) and with frame size
(QCIF, 320x240, 416x240, CIF). Each point runs in a fresh child process that encodes a y4m file
GOP by GOP (``open_frames``) and decodes it GOP by GOP into a y4m file (``decode_iter`` +
``VideoWriter``), exactly what ``progvc-lab encode`` / ``decode`` do, and reports its peak resident
memory (``VmHWM``) and the resident memory after loading the model, so the growth is what coding
costs. Longer clips are the source clip played forwards and backwards; other sizes are the source
resized (bilinear). Nothing here is a pass/fail test: the numbers are printed and saved as JSON.
"""
from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
import warnings
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

from .codec import Codec

SCALING_FRAMES = (30, 100, 300)
SCALING_SIZES = ((176, 144), (320, 240), (416, 240), (352, 288))   # (W, H): QCIF, QVGA, WQVGA, CIF


class StageTimer:
    """Exclusive wall time per label for wrapped callables (nested calls are not double counted)."""

    def __init__(self):
        self.seconds = defaultdict(float)
        self.calls = defaultdict(int)
        self._stack: list[list] = []   # [label, seconds spent in wrapped children]
        self._undo: list = []

    def wrap(self, owner, attr: str, label: str):
        original = getattr(owner, attr)
        had_own = attr in vars(owner)

        def timed(*args, **kwargs):
            self._stack.append([label, 0.0])
            t0 = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                elapsed = time.perf_counter() - t0
                _, children = self._stack.pop()
                self.seconds[label] += elapsed - children
                self.calls[label] += 1
                if self._stack:
                    self._stack[-1][1] += elapsed

        setattr(owner, attr, timed)
        self._undo.append((owner, attr, original, had_own))

    def reset(self):
        self.seconds.clear()
        self.calls.clear()
        if hasattr(self, "per_scale"):
            self.per_scale.clear()

    def restore(self):
        for owner, attr, original, had_own in reversed(self._undo):
            if had_own:
                setattr(owner, attr, original)
            else:
                delattr(owner, attr)
        self._undo.clear()


TRANSFORMER = "transformer (block_logits)"
CONV_DECODER = "conv decoder (tokenizer.decode)"
CODER = "arithmetic coding"


@contextlib.contextmanager
def timed_stages(codec: Codec):
    """Wrap the stages of ``codec`` (this instance only) and the entropy coder with a StageTimer."""
    from . import walk as walk_module
    from .stages import entropy

    timer = StageTimer()
    timer.wrap(codec.tokenizer, "encode", "conv encoder (tokenizer.encode)")
    timer.wrap(codec.quantizer, "tokenize", "quantizer (tokenize)")
    timer.wrap(walk_module.GopWalk, "context", "context inputs (f_hat, accumulated)")
    timer.wrap(codec.quantizer, "tokens_to_latent", "tokens -> latent (quantizer)")
    timer.wrap(codec.context_model, "block_logits", TRANSFORMER)
    timer.per_scale = defaultdict(lambda: [0.0, 0])   # Transformer seconds and calls per scale s
    timed = codec.context_model.block_logits

    def per_scale(state, t, s, ctx):
        t0 = time.perf_counter()
        try:
            return timed(state, t, s, ctx)
        finally:
            timer.per_scale[s][0] += time.perf_counter() - t0
            timer.per_scale[s][1] += 1

    codec.context_model.block_logits = per_scale  # an instance attribute: restore() removes it
    timer.wrap(walk_module, "logits_to_cdf", "logits -> integer CDF")
    for cls in (entropy._StringsWriter, entropy._RangeWriter):
        timer.wrap(cls, "add", CODER)
    for cls in (entropy._StringsReader, entropy._RangeReader):
        timer.wrap(cls, "next", CODER)
    timer.wrap(codec.tokenizer, "decode", CONV_DECODER)
    try:
        yield timer
    finally:
        timer.restore()


def chunk_overhead(result) -> dict:
    """Actual bytes against the model's ideal bits, from the encoder's ``EncodeResult`` (its chunk sizes
    and per-block model bits; the stream is not parsed again): per chunk (GOP, scale), and per coder
    call (one per block with torchac, one per chunk with constriction)."""
    from .stages.entropy import get_coder

    h = result.header
    per_block = getattr(get_coder(h.coder), "per_block_strings", False)
    actual, ideal, calls = [], [], 0
    for g in range(h.num_gops):
        n = h.gop_frames(g)
        for s in range(h.num_scales):
            actual.append(int(result.chunk_bytes[g, s]))
            ideal.append(float(result.model_bits[g * h.gop:g * h.gop + n, s].sum()) / 8)
            calls += n if per_block else 1
    actual, ideal = np.array(actual, float), np.array(ideal, float)
    over = float((actual - ideal).sum())
    return {"coder": h.coder, "calls": calls, "chunks": len(actual), "bytes": float(actual.sum()),
            "model_bytes": float(ideal.sum()),
            "overhead_bytes_per_call": over / calls if calls else 0.0,
            "overhead_bytes_per_chunk": over / len(actual) if len(actual) else 0.0,
            "overhead_fraction_of_file": over / len(result.data)}


def quiet(fn, *args, **kwargs):
    """``fn(*args, **kwargs)`` with warnings silenced (a benchmark's decodes of cut streams warn)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*args, **kwargs)


def run_bench(model="tiny", clip: str | Path | None = None, threads=(1, 2), frames: int | None = None,
              per_k: bool = True, log=print) -> dict:
    """Encode and decode frames/s per thread count, at every k, where the time goes, and the coder's cost.

    For each n in ``threads`` both the process's torch threads and the codec's ``coding_threads`` are
    set to n (and restored afterwards). Returns a JSON-ready dict (``runs``: one per thread count)."""
    from .data import clip_path, load_clip
    from .evaluate import load_codec

    codec = load_codec(model)
    clip = clip_path(clip)
    if not clip.exists():
        raise FileNotFoundError(f"{clip}: no such clip")
    video, fps = load_clip(clip, frames)
    T, _, H, W = video.shape
    K = codec.quantizer.num_scales
    log(f"clip {clip}: {T} frames {W}x{H} at {float(fps):.2f} fps; model "
        f"{model if not isinstance(model, Codec) else 'given'}")
    codec.encode(video[:1], fps)  # warm-up: torchac import, first-call allocations
    old_threads, old_coding = torch.get_num_threads(), codec.config.coding_threads
    report = {"clip": str(clip), "frames": T, "width": W, "height": H, "fps": float(fps),
              "torch": torch.__version__, "cpu_count": os.cpu_count(), "load_average": os.getloadavg()[0],
              "runs": []}
    if report["load_average"] > 0.5 * (os.cpu_count() or 1):
        log(f"note: the machine is busy (load average {report['load_average']:.1f} on {os.cpu_count()} cores): "
            "times are longer than on an idle machine")
    try:
        for n in threads:
            if n < 1:
                raise ValueError(f"--threads must be at least 1, got {n}")
            torch.set_num_threads(n)
            codec.config.coding_threads = n
            with timed_stages(codec) as timer:
                t0 = time.perf_counter()
                data, stats = codec.encode_with_stats(video, fps)
                enc_s = time.perf_counter() - t0
                enc_stages, enc_calls = dict(timer.seconds), dict(timer.calls)
                t0 = time.perf_counter()
                codec.encode(video, fps, verify=True)
                enc_verify_s = time.perf_counter() - t0
                timer.reset()
                t0 = time.perf_counter()
                quiet(codec.decode, data)
                dec_s = time.perf_counter() - t0
                dec_stages, dec_calls = dict(timer.seconds), dict(timer.calls)
                dec_per_scale = {int(k): {"ms_per_call": 1000 * v[0] / v[1], "calls": v[1]}
                                 for k, v in sorted(timer.per_scale.items())}
            gops = stats.header.num_gops
            per_scale = []
            if per_k:
                from .rdeval import ladder

                for rung in ladder(codec, data, video=video, fps=fps, known={K: (None, dec_s)}):
                    sec = rung.decode_seconds
                    per_scale.append({"k": rung.k, "bytes": len(rung.data), "decode_seconds": sec,
                                      "decode_fps": T / sec})
            run = {"threads": n, "bytes": len(data), "gops": gops,
                   "encode_seconds": enc_s, "encode_fps": T / enc_s,
                   "encode_verify_seconds": enc_verify_s, "encode_verify_fps": T / enc_verify_s,
                   "decode_seconds": dec_s, "decode_fps": T / dec_s, "realtime_factor": T / dec_s / float(fps),
                   "encode_stages": enc_stages, "decode_stages": dec_stages,
                   "encode_calls": enc_calls, "decode_calls": dec_calls,
                   "transformer_calls_per_gop": dec_calls.get(TRANSFORMER, 0) / gops,
                   "transformer_per_scale": dec_per_scale,
                   "per_k": per_scale, "coder_overhead": chunk_overhead(stats)}
            report["runs"].append(run)
            log(format_bench_run(run, float(fps)))
    finally:
        torch.set_num_threads(old_threads)
        codec.config.coding_threads = old_coding
    return report


def format_bench_run(run: dict, fps: float | None = None) -> str:
    rt = f", {run['realtime_factor']:.2f}x real time" if "realtime_factor" in run else ""
    lines = [f"\n== {run['threads']} thread(s): encode {run['encode_fps']:.1f} frames/s "
             f"({run['encode_seconds']:.3f} s"
             + (f"; with --verify {run['encode_verify_fps']:.1f} frames/s" if "encode_verify_fps" in run else "")
             + f"), decode {run['decode_fps']:.1f} frames/s ({run['decode_seconds']:.3f} s{rt}), "
             f"{run['bytes']} bytes"]
    for what, total, stages in (("encode", run["encode_seconds"], run["encode_stages"]),
                                ("decode", run["decode_seconds"], run["decode_stages"])):
        lines.append(f"  {what}: where the time goes")
        rest = total - sum(stages.values())
        for label, sec in sorted(stages.items(), key=lambda kv: -kv[1]) + [("other (bitstream, CRC, python)", rest)]:
            lines.append(f"    {label:<34} {sec * 1000:9.1f} ms  {100 * sec / total:5.1f} %")
    blocks = run["decode_calls"].get(TRANSFORMER, 0)
    if blocks:
        lines.append(f"  decode: {blocks} Transformer calls ({run.get('transformer_calls_per_gop', blocks):.0f} per GOP), "
                     f"{1000 * run['decode_stages'].get(TRANSFORMER, 0) / blocks:.2f} ms per call")
    if run.get("transformer_per_scale"):
        ps = run["transformer_per_scale"]
        total = sum(v["ms_per_call"] * v["calls"] for v in ps.values()) or 1.0
        lines.append("  decode: Transformer ms per call by scale:  " + "  ".join(
            f"s={s}: {v['ms_per_call']:.2f} ({100 * v['ms_per_call'] * v['calls'] / total:.0f} %)"
            for s, v in ps.items()))
    if run.get("per_k"):
        lines.append("  decode at every k:  " + "  ".join(
            f"k={p['k']}: {p['decode_fps']:.1f} f/s ({p['bytes']} B)" for p in run["per_k"]))
    o = run["coder_overhead"]
    lines.append(f"  entropy coder {o.get('coder', '')}: {o['calls']} calls, {o['bytes']:.0f} bytes in chunks vs "
                 f"{o['model_bytes']:.1f} model bytes: {o['overhead_bytes_per_call']:.2f} bytes overhead per call "
                 f"({100 * o['overhead_fraction_of_file']:.1f} % of the file)")
    return "\n".join(lines)


# ---- scaling with frames and frame size ---------------------------------------------------------------------
def make_scaling_clip(source: torch.Tensor, frames: int, size: tuple[int, int], start: int = 0,
                      count: int | None = None) -> torch.Tensor:
    """Frames ``start .. start+count`` of ``source`` (T, 3, H, W) played forwards and backwards to
    ``frames`` frames, resized to ``size`` = (W, H)."""
    T = source.shape[0]
    cycle = list(range(T)) + list(range(T - 2, 0, -1)) or [0]
    stop = frames if count is None else min(frames, start + count)
    idx = [cycle[i % len(cycle)] for i in range(start, stop)]
    clip = source[idx]
    W, H = size
    if tuple(clip.shape[-2:]) != (H, W):
        clip = torch.nn.functional.interpolate(clip, size=(H, W), mode="bilinear", align_corners=False)
    return clip.clamp(0, 1)


def _rss_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return -1


def scaling_child(model: str, clip: str, threads: int) -> dict:
    """One scaling point, in this (fresh) process: streamed encode, then streamed decode."""
    from .data.streaming import VideoWriter, open_frames
    from .evaluate import load_codec

    torch.set_num_threads(threads)
    codec = load_codec(model)
    codec.config.coding_threads = threads
    reader = open_frames(clip)
    codec.encode(torch.rand(1, 3, 16, 16))  # warm-up (torchac import, first allocations)
    rss_loaded = _rss_kib("VmRSS")
    t0 = time.perf_counter()
    data = codec.encode(reader)
    enc_s = time.perf_counter() - t0
    out = Path(tempfile.mkdtemp()) / "out.y4m"
    t0 = time.perf_counter()
    with VideoWriter(out, fps=reader.fps) as writer:
        for frames in codec.decode_iter(data):
            writer.write(frames)
    dec_s = time.perf_counter() - t0
    out.unlink()
    out.parent.rmdir()
    T = reader.num_frames
    return {"frames": T, "width": reader.width, "height": reader.height, "bytes": len(data),
            "encode_seconds": enc_s, "decode_seconds": dec_s,
            "encode_ms_per_frame": 1000 * enc_s / T, "decode_ms_per_frame": 1000 * dec_s / T,
            "peak_rss_mib": _rss_kib("VmHWM") / 1024, "rss_after_load_mib": rss_loaded / 1024}


def run_scaling(model="tiny", clip: str | Path | None = None, frames=SCALING_FRAMES, sizes=SCALING_SIZES,
                threads: int = 2, log=print) -> dict:
    """Time per frame and peak memory against frames (at the first size) and against frame size (at the
    first frame count), each point in its own process. Returns a JSON-ready dict."""
    from .data import clip_path, load_clip
    from .data.streaming import VideoWriter

    clip = clip_path(clip)
    source, fps = load_clip(clip)
    model_arg = str(model)
    points = [(n, sizes[0]) for n in frames] + [(frames[0], s) for s in sizes[1:]]
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for n, (W, H) in points:
            path = Path(tmp) / f"clip_{n}_{W}x{H}.y4m"
            with VideoWriter(path, fps=fps) as w:
                for i in range(0, n, 32):
                    w.write(make_scaling_clip(source, n, (W, H), start=i, count=32))
            env = dict(os.environ, PYTHONWARNINGS="ignore")
            cmd = [sys.executable, "-m", "progvc_lab.bench", "--child", model_arg, str(path), str(threads)]
            proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
            if proc.returncode != 0:
                raise RuntimeError(f"scaling point {n} frames {W}x{H} failed:\n{proc.stderr[-2000:]}")
            res = json.loads(proc.stdout.strip().splitlines()[-1])
            results.append(res)
            log(f"  {n:4d} frames {W}x{H}: encode {res['encode_ms_per_frame']:7.1f} ms/frame, decode "
                f"{res['decode_ms_per_frame']:7.1f} ms/frame, peak {res['peak_rss_mib']:6.0f} MiB "
                f"({res['peak_rss_mib'] - res['rss_after_load_mib']:5.0f} MiB above the loaded model)")
    doc = {"clip": str(clip), "threads": threads, "points": results, "load_average": os.getloadavg()[0]}
    doc["summary"] = scaling_summary(results, frames, sizes)
    log(format_scaling_summary(doc["summary"]))
    return doc


def scaling_summary(results: list[dict], frames=SCALING_FRAMES, sizes=SCALING_SIZES) -> dict:
    """Ratios the issue's targets are stated in: peak memory at the most frames over the fewest, and the
    spread of time per frame over the frame counts (max / min - 1); ms per frame per megapixel per size."""
    by_frames = [r for r in results if (r["width"], r["height"]) == tuple(sizes[0])]
    by_frames.sort(key=lambda r: r["frames"])
    out = {}
    if len(by_frames) >= 2:
        lo, hi = by_frames[0], by_frames[-1]
        out["frames"] = [r["frames"] for r in by_frames]
        out["peak_memory_ratio"] = hi["peak_rss_mib"] / lo["peak_rss_mib"]
        out["coding_memory_ratio"] = ((hi["peak_rss_mib"] - hi["rss_after_load_mib"])
                                      / max(1e-9, lo["peak_rss_mib"] - lo["rss_after_load_mib"]))
        for what in ("encode", "decode"):
            per = [r[f"{what}_ms_per_frame"] for r in by_frames]
            out[f"{what}_time_per_frame_spread"] = max(per) / min(per) - 1
    out["ms_per_frame_per_megapixel"] = {
        f"{r['width']}x{r['height']}": {w: r[f"{w}_ms_per_frame"] / (r["width"] * r["height"] / 1e6)
                                         for w in ("encode", "decode")}
        for r in results if r["frames"] == frames[0]}
    return out


def format_scaling_summary(s: dict) -> str:
    lines = []
    if "peak_memory_ratio" in s:
        lines.append(f"  frames {s['frames'][0]} -> {s['frames'][-1]}: peak memory x{s['peak_memory_ratio']:.2f} "
                     f"(coding memory above the model x{s['coding_memory_ratio']:.2f}); time per frame varies by "
                     f"{100 * s['encode_time_per_frame_spread']:.0f} % (encode), "
                     f"{100 * s['decode_time_per_frame_spread']:.0f} % (decode)")
    for size, v in s.get("ms_per_frame_per_megapixel", {}).items():
        lines.append(f"  {size}: {v['encode']:.0f} ms (encode), {v['decode']:.0f} ms (decode) per frame per megapixel")
    return "\n".join(lines)


def write_json(doc: dict, path: str | Path, force: bool = False) -> Path:
    path = Path(path)
    if path.exists() and not force:
        raise FileExistsError(f"{path} exists; pass --force to replace it")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=1) + "\n")
    return path


if __name__ == "__main__":  # the child process of run_scaling
    if len(sys.argv) == 5 and sys.argv[1] == "--child":
        print(json.dumps(scaling_child(sys.argv[2], sys.argv[3], int(sys.argv[4]))))
    else:
        sys.exit("usage: python -m progvc_lab.bench --child MODEL CLIP THREADS (used by progvc-lab bench --scaling)")
