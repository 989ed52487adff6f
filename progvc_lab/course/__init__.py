"""Course helpers for the notebooks and tutorials: exercises, their checks, and small measurement tools.

::

    from progvc_lab.course import sample_video, check_nearest_code, show_solution
    video, fps = sample_video()          # first 8 frames of the shipped Foreman QCIF clip

What lives here is what several notebooks need and no stage should carry: loading the small demo clip,
counting the bytes of every entropy-coder call, timing the coder's per-call overhead, reading Lightning's
CSV logs, and one ffmpeg x265 point for comparison. The codec logic itself stays in the stages.
"""
from __future__ import annotations

import csv
import inspect
import time
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch

from .. import bitstream
from .exercises import CHECKS, CheckResult  # noqa: F401
from .exercises import (check_area_down_by, check_bpp_ladder, check_copy_mixture, check_logits_to_cdf,  # noqa: F401
                        check_mean_psnr, check_nearest_code, check_pad_to_stride, check_progvc_sparse_mask,
                        check_rate_saving_at_quality, check_rdo_choice, check_top_k_filter, check_unigram_bits)
from .exercises import check_decode_symbol, check_interval_update  # noqa: F401
from .exercises import check_is_truncation_safe, check_safe_mask_design  # noqa: F401
from .exercises import (check_expected_code, check_residual_tokenize, check_residual_tokens_to_latent,  # noqa: F401
                        check_stage_in_codec)
from .exercises import check_bits_per_token, check_codebook_perplexity  # noqa: F401
from .exercises import check_bd_rate_cubic  # noqa: F401

__all__ = ["sample_video", "show_solution", "show_answer", "block_bytes", "coder_call_overhead", "coding_vs_training_logits",
           "read_metrics",
           "ffmpeg_point", "Stopwatch", *[f"check_{n}" for n in CHECKS], "CHECKS", "CheckResult"]


def sample_video(frames: int = 8, name: str = "foreman") -> tuple[torch.Tensor, Fraction]:
    """The first ``frames`` frames of a shipped QCIF clip: (T, 3, 144, 176) float RGB in [0, 1], fps."""
    from ..data import load_clip, sample_clip_path

    return load_clip(sample_clip_path(name), frames)


def show_solution(name: str) -> None:
    """Print the reference solution of an exercise (``progvc_lab.course.solutions``)."""
    from . import solutions

    if name not in solutions.ALL:
        raise KeyError(f"no exercise called {name!r}; exercises: {solutions.ALL}")
    print(inspect.getsource(getattr(solutions, name)))


def show_answer(question: str) -> None:
    """Print the model answer of a written question (``progvc_lab.course.solutions.ANSWERS``). Write
    your own first: the notebooks ask each question in a markdown cell with its name."""
    from . import solutions

    if question not in solutions.ANSWERS:
        raise KeyError(f"no written question called {question!r}; questions: {sorted(solutions.ANSWERS)}")
    print(solutions.ANSWERS[question].strip())


def block_bytes(data: bytes) -> np.ndarray:
    """Bytes of every entropy-coded string (one per block = one coder call): array (frames, scales_sent)."""
    stream = bitstream.read_stream(data)
    h = stream.header
    if h.coder != "torchac":
        raise ValueError(f"this stream's coder {h.coder!r} writes one string per chunk (all frames of a scale), "
                         "not one per block; encode with coder='torchac' to see per-block strings")
    out = np.zeros((h.num_frames, h.scales_sent), dtype=np.int64)
    for (g, s), chunk in stream.chunks.items():
        n = h.gop_frames(g)
        for t, string in enumerate(bitstream.unpack_chunk(chunk, n, f"chunk (GOP {g}, scale {s})")):
            out[g * h.gop + t, s] = len(string)
    return out


def coder_call_overhead(coder=None, vocab: int = 512, lengths=(1, 4, 16, 64, 256, 1024), repeats: int = 20,
                        seed: int = 0) -> list[dict]:
    """Bits a coder writes per call beyond the model's ideal bits, for calls of different lengths.

    Random peaked distributions (as a trained model gives) and symbols drawn from them; for each length
    the mean over ``repeats`` calls of (8 * bytes - model bits). Returns [{symbols, model_bits, bits,
    overhead_bits}] per length.
    """
    from ..stages.entropy import get_coder, logits_to_cdf, model_bits

    coder = coder or get_coder("torchac")
    gen = torch.Generator().manual_seed(seed)
    rows = []
    for L in lengths:
        ideal = actual = 0.0
        for _ in range(repeats):
            logits = torch.randn(L, vocab, generator=gen) * 3
            cdf = logits_to_cdf(logits)
            probs = torch.softmax(logits.double(), -1)
            sym = torch.multinomial(probs, 1, generator=gen).squeeze(1)
            ideal += model_bits(cdf, sym)
            actual += 8 * len(coder.encode(cdf, sym))
        rows.append({"symbols": L, "model_bits": ideal / repeats, "bits": actual / repeats,
                     "overhead_bits": (actual - ideal) / repeats})
    return rows


@torch.no_grad()
def coding_vs_training_logits(codec, video: torch.Tensor) -> dict:
    """Compare the logits of the teacher-forced training pass with those of ``block_logits`` (the
    coding path) on the first GOP of ``video``: the largest difference, and how many tokens get a
    different integer CDF from them. Why the codec never codes with the training pass."""
    from ..codec import deterministic
    from ..stages.entropy import logits_to_cdf

    T = min(codec.config.gop, video.shape[0])
    with deterministic(codec.config.coding_threads):
        tokens, latent_hw = codec.tokenize(video[:T])
        ctx = codec.quantizer.context_inputs(tokens, latent_hw)
        training_LV = codec.context_model([c[None] for c in ctx], [t[None] for t in tokens])[0]
        schedule = codec.quantizer.schedule(latent_hw)
        coding = {}
        walk = codec.walk(latent_hw, schedule, T)
        for block in walk.blocks(range(len(schedule))):
            coding[(block.t, block.s)] = block.logits
            block.symbols = tokens[block.s][block.t]
    coding_LV = torch.cat([coding[(t, s)] for t in range(T) for s in range(len(schedule))])  # frame-major
    differ_L = (logits_to_cdf(coding_LV) != logits_to_cdf(training_LV)).any(1)
    return {"tokens": coding_LV.shape[0], "max_abs_diff": float((coding_LV - training_LV).abs().max()),
            "tokens_with_different_cdf": int(differ_L.sum())}


def read_metrics(run_dir: str | Path) -> dict[str, list[tuple[int, float]]]:
    """Every metric of a Lightning CSVLogger run under ``run_dir``: name -> [(step, value), ...]."""
    files = sorted(Path(run_dir).rglob("metrics.csv"))
    if not files:
        raise FileNotFoundError(f"no metrics.csv under {run_dir}: did the training run log anything?")
    out: dict[str, list[tuple[int, float]]] = {}
    with open(files[-1], newline="") as fh:
        for row in csv.DictReader(fh):
            step = int(float(row.get("step") or 0))
            for key, value in row.items():
                if key in ("step", "epoch") or value in ("", None):
                    continue
                out.setdefault(key, []).append((step, float(value)))
    return out


def ffmpeg_point(video: torch.Tensor, fps=Fraction(25), codec: str = "libx265", crf: int = 40,
                 preset: str = "veryslow", workdir: str | Path | None = None) -> dict | None:
    """One rate point of an ffmpeg baseline on ``video`` (T, 3, H, W): bytes of the raw elementary
    stream (SEI removed), bpp and PSNR-RGB, plus the exact command line. ``None`` (with a message)
    when ffmpeg or the encoder is missing.

    A thin wrapper over :func:`progvc_lab.baselines.encode_decode` (x264/x265, ``-tune psnr``, one
    intra frame); use that module, and its ``crf_ladder``, for real comparisons. ``workdir`` is
    kept for old callers and ignored (the baselines use their own temporary folder).
    """
    from .. import baselines, metrics

    try:
        point = baselines.encode_decode(video, codec, crf, fps=fps, preset=preset)
    except baselines.BaselineUnavailable as err:
        print(f"skipping the {codec} point: {err}")
        return None
    return {"codec": codec, "crf": crf, "preset": preset, "bytes": point.bytes, "bpp": point.bpp,
            "psnr_rgb": metrics.psnr(video, point.decoded), "command": point.commands[0]}


class Stopwatch:
    """``with Stopwatch("encode"): ...`` prints how long the block took."""

    def __init__(self, label: str = ""):
        self.label = label
        self.seconds = 0.0

    def __enter__(self):
        self._t0 = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self._t0
        print(f"{self.label}: {self.seconds:.2f} s")
        return False
