"""Long fuzzing runs of the stream decoder: atheris (coverage-guided) or a plain random loop.

    python benchmarks/fuzz_atheris.py --iterations 100000          # plain seeded random loop
    python benchmarks/fuzz_atheris.py --atheris -atheris_runs=100000 # libFuzzer via atheris (pip install atheris)
    python benchmarks/fuzz_atheris.py --seconds 600 --json out.json  # as long as you can spare

Both drive the structure-aware mutators of tests/stream_fuzz.py (bit flips, byte overwrites, header
fields at 0 / 1 / max with and without resealed CRCs, reordered / duplicated chunks, GOPs spliced from
another stream, appended garbage, cuts, insertions) on streams of a tiny random codec, and check the
oracle: only ``BitstreamError`` / ``CodecError`` escape, and a stream that decodes gives the original's
tokens (or, cut, a per-GOP prefix of them). In atheris mode the fuzzer's bytes choose the mutations
(and are also tried as a raw stream), so coverage guides it into the parser's branches.

A finding is printed with the mutation and the stream's bytes (hex) and, for atheris, makes it stop
with the crashing input saved. Findings of the one known kind are counted, not raised: a *cut and
damaged* stream passes its 16-bit chunk checks with probability 2^-16 (bitstream module docstring).
"""
from __future__ import annotations

import argparse
import json
import random
import sys
import time
from collections import Counter
from fractions import Fraction
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

M = {}   # the project's modules, imported late so that atheris can instrument them


def load():
    import torch

    import helpers
    import progvc_lab.bitstream
    import progvc_lab.codec  # noqa: F401
    import stream_fuzz

    M.setdefault("coder", "constriction")
    M.update(torch=torch, helpers=helpers, stream_fuzz=stream_fuzz,
             limits=progvc_lab.bitstream.Limits(max_memory_bytes=512 << 20))


def setup():
    torch, make_tiny_codec, pattern_clip = M["torch"], M["helpers"].make_tiny_codec, M["helpers"].pattern_clip
    torch.set_num_threads(1)
    codec = make_tiny_codec(seed=0, gop=2, coder=M["coder"])
    clip = pattern_clip(5, 16, 24)
    a, stats = codec.encode_with_stats(clip, fps=Fraction(25))
    b = codec.encode(1 - clip, fps=Fraction(25))
    return codec, a, b, stats["tokens"]


def one_case(state, pick, counts: Counter, raw: bytes | None = None):
    codec, a, b, tokens = state
    Finding, check = M["stream_fuzz"].Finding, M["stream_fuzz"].check
    name, mutated = M["stream_fuzz"].mutate(a, b, pick)
    for label, stream in ((name, mutated),) + ((("raw", raw),) if raw is not None else ()):
        try:
            outcome = check(codec, tokens, stream, limits=M["limits"], seconds=10.0)
        except Finding as e:
            if "silent corruption" in str(e) and len(stream) < len(a):
                counts["cut+damaged chunk-check collisions (expected rate 2^-16)"] += 1
                continue
            print(f"FINDING ({label}): {e}\n  stream: {stream.hex()}", flush=True)
            raise
        counts[f"{label}: {outcome}"] += 1


def plain_loop(iterations: int, seconds: float, seed: int) -> dict:
    load()
    state = setup()
    rng = random.Random(seed)
    counts: Counter = Counter()
    t0, n = time.perf_counter(), 0
    while n < iterations and time.perf_counter() - t0 < seconds:
        one_case(state, rng.randrange, counts)
        n += 1
        if n % 5000 == 0:
            print(f"{n} cases, {time.perf_counter() - t0:.0f} s", flush=True)
    return {"engine": "random", "seed": seed, "cases": n, "seconds": round(time.perf_counter() - t0, 1),
            "findings": 0, "outcomes": dict(sorted(counts.items()))}


def atheris_loop(argv: list[str]):
    import atheris

    with atheris.instrument_imports(include=["progvc_lab", "stream_fuzz"]):
        load()
    state = setup()
    counts: Counter = Counter()

    def test_one_input(data: bytes):
        fdp = atheris.FuzzedDataProvider(data)
        pick = lambda n: fdp.ConsumeIntInRange(0, max(0, n - 1))   # noqa: E731
        one_case(state, pick, counts, raw=data[:512])

    atheris.Setup(argv, test_one_input)
    atheris.Fuzz()


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--iterations", type=int, default=10_000)
    p.add_argument("--seconds", type=float, default=float("inf"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--atheris", action="store_true", help="coverage-guided (libFuzzer flags follow)")
    p.add_argument("--json", help="write the counts here")
    p.add_argument("--coder", default="constriction", choices=("constriction", "torchac"),
                   help="entropy coder of the fuzzed streams (default: constriction, the codec's default)")
    args, rest = p.parse_known_args()
    M["coder"] = args.coder
    if args.atheris:
        atheris_loop([sys.argv[0]] + rest)
        return
    result = plain_loop(args.iterations, args.seconds, args.seed)
    print(json.dumps(result, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
