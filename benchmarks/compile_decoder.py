"""Does ``torch.compile`` pay for the conv decoder (issue 9, item 2)? The reconstruction never touches the
tokens, so it could be compiled without risking the bit-identical coding path; this measures whether it
is worth it on the machine at hand: compile time, the largest difference to eager, and ms per frame of
eager and compiled runs interleaved in one process (so a busy machine slows both alike).

    python benchmarks/compile_decoder.py [--frames 16] [--threads 2] [--repeats 3]

Prints one line per run and a summary; results for the 2-core reference machine are in
``benchmarks/results/compile_decoder.txt``.
"""
from __future__ import annotations

import argparse
import os
import time

import torch

from progvc_lab.codec import Codec
from progvc_lab.data import load_clip, sample_clip_path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="tiny")
    ap.add_argument("--clip", default="foreman")
    ap.add_argument("--frames", type=int, default=16)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    codec = Codec.from_pretrained(args.model)
    video, _ = load_clip(sample_clip_path(args.clip), args.frames)
    n = video.shape[0]
    cl = torch.channels_last
    with torch.inference_mode():
        latent = codec.tokenizer.encode(video.contiguous(memory_format=cl)).contiguous(memory_format=cl)
        decoder = codec.tokenizer.decoder
        ref = decoder(latent)
        t0 = time.perf_counter()
        compiled = torch.compile(decoder)
        out = compiled(latent)
        compile_s = time.perf_counter() - t0
        diff = float((out - ref).abs().max())
        times = {"eager": [], "compiled": []}
        for _ in range(args.repeats):
            for name, fn in (("eager", decoder), ("compiled", compiled)):
                t0 = time.perf_counter()
                fn(latent)
                ms = 1000 * (time.perf_counter() - t0) / n
                times[name].append(ms)
                print(f"{name:9s} {ms:7.1f} ms/frame")
    best = {k: min(v) for k, v in times.items()}
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"{args.model} decoder on {n} frames of {args.clip} ({video.shape[-1]}x{video.shape[-2]}), "
          f"{args.threads} threads, load average {load:.1f}")
    print(f"compile (first call) {compile_s:.1f} s; max |compiled - eager| = {diff:.2e}")
    print(f"best of {args.repeats}: eager {best['eager']:.1f} ms/frame, compiled {best['compiled']:.1f} ms/frame "
          f"(x{best['eager'] / best['compiled']:.2f}); the compile pays for itself after "
          f"{compile_s / max(1e-9, (best['eager'] - best['compiled']) / 1000):.0f} frames")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
