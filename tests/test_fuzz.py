"""Fuzzing the decoder with mutated, truncated, spliced and resealed streams (bounded: default suite).

The promise (issue 10): whatever the bytes, ``decode`` raises ``BitstreamError`` / ``CodecError`` or
returns the original's tokens -- all of them, or for a cut stream every complete scale of every GOP
(a per-GOP prefix); never other tokens (silent corruption), never another exception, never slowly,
never with unbounded memory. Mutators and oracle: tests/stream_fuzz.py (also driven by the long
atheris runs of benchmarks/fuzz_atheris.py).

A tiny random codec (each entropy coder) on a 5-frame 16x24 clip in GOPs of 2 (3 GOPs x 6 scales = 18 chunks) keeps a case
at ~10-30 ms, so a few hundred hypothesis cases plus every truncation offset take well under a minute.
"""
from __future__ import annotations

import resource
import time
import warnings
from fractions import Fraction

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from progvc_lab import bitstream
from progvc_lab.bitstream import BitstreamError, Limits

from helpers import make_tiny_codec, one_thread, pattern_clip  # noqa: F401
from stream_fuzz import MUTATORS, Finding, Layout, check, mutate

pytestmark = pytest.mark.usefixtures("one_thread")

LIMITS = Limits(max_memory_bytes=512 << 20)    # what the fuzzed decoder may estimate to allocate
CASE_SECONDS = 5.0                             # per-case bound (a case takes ~0.02 s)


@pytest.fixture(scope="module", params=["constriction", "torchac"])
def setup(request):
    codec = make_tiny_codec(seed=0, gop=2, coder=request.param)
    clip = pattern_clip(5, 16, 24)
    a, stats = codec.encode_with_stats(clip, fps=Fraction(25))
    b = codec.encode(1 - clip, fps=Fraction(25))   # same header, other tokens (15 of 18 chunks differ)
    assert Layout.parse(a).header == Layout.parse(b).header
    return codec, a, b, stats["tokens"]


@settings(max_examples=500, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.data())
def test_mutated_streams_never_decode_to_other_tokens(setup, data):
    codec, a, b, tokens = setup
    pick = lambda n: data.draw(st.integers(0, max(0, n - 1)))   # noqa: E731
    name, mutated = mutate(a, b, pick)
    outcome = check(codec, tokens, mutated, limits=LIMITS, seconds=CASE_SECONDS)
    if mutated != a and name not in ("truncate_anywhere", "cut_truncated_stream", "insert_or_delete"):
        # a changed, complete stream must never pass as the original: the CRCs see every byte
        assert outcome == "error" or (outcome == "salvaged" and name == "header_field"), (name, outcome)


@pytest.mark.parametrize("mutator", MUTATORS, ids=lambda m: m.__name__)
def test_every_mutator_is_exercised(setup, mutator):
    """Each mutator, 15 seeded cases: errors or the original's tokens (or prefix), nothing else."""
    import random

    codec, a, b, tokens = setup
    rng = random.Random(mutator.__name__)
    outcomes = {check(codec, tokens, mutator(a, b, rng.randrange), limits=LIMITS, seconds=CASE_SECONDS)
                for _ in range(15)}
    assert outcomes <= {"error", "same", "salvaged"}


def test_truncation_at_every_offset_salvages_a_prefix(setup):
    """Cut at every byte: an error before the first complete chunk, then exactly the complete chunks."""
    codec, a, _, tokens = setup
    lay = Layout.parse(a)
    start = len(a) - sum(len(c) for c in lay.chunks)
    first_chunk_end = start + len(lay.chunks[0])
    salvaged = 0
    for end in range(len(a) + 1):
        outcome = check(codec, tokens, a[:end], limits=LIMITS, seconds=CASE_SECONDS)
        assert (outcome == "error") == (end < first_chunk_end), (end, outcome)
        salvaged += outcome == "salvaged"
    assert outcome == "same" and salvaged == len(a) - first_chunk_end


def test_salvage_decodes_more_scales_for_the_gops_before_the_cut(setup):
    codec, a, _, tokens = setup
    lay = Layout.parse(a)
    start = len(a) - sum(len(c) for c in lay.chunks)
    end = start + sum(len(c) for c in lay.chunks[:3 * 2 + 1])      # scales 0-1 of all GOPs + (GOP 0, scale 2)
    with pytest.warns(UserWarning, match="inside scale 2 of 6"):
        video, report = codec.decode_with_report(a[:end])
    assert report.scales_decoded == [3, 2, 2] and report.dropped()[0] == (0, 3)
    assert video.shape == (5, 3, 16, 24)
    for sampler in ("mean", "argmax"):   # the fills start at each GOP's own k
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            v, rep = codec.decode_with_report(a[:end], sampler=sampler)
        assert v.shape == (5, 3, 16, 24) and rep.scales_decoded == [3, 2, 2]
    with pytest.raises(BitstreamError, match="strict"):
        codec.decode(a[:end], strict=True)


def test_crafted_huge_streams_are_refused_fast_and_small(setup):
    """The issue's crafted cases, with the model's fingerprint copied: GOP 8000, one 16384^2 frame,
    2^20 frames. Each is refused in well under a second without allocating (limits checked first)."""
    codec, a, _, _ = setup
    h = Layout.parse(a).header
    import dataclasses

    cases = {"max_gop": dict(num_frames=8000, gop=8000), "max_pixels": dict(width=16384, height=16384,
                                                                            latent_hw=(4096, 4096)),
             "max_frames": dict(num_frames=1 << 20, gop=32)}
    for limit, change in cases.items():
        crafted = Layout(dataclasses.replace(h, scales_sent=0, **change), [], []).pack()
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        t0 = time.perf_counter()
        with pytest.raises(BitstreamError, match=f"limit {limit}="):
            codec.decode(crafted)
        assert time.perf_counter() - t0 < 1.0
        assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss < 100 << 10   # KiB: < 100 MiB
    # within the per-field limits but not the memory budget: 1000 frames of 2048x2048 (the video alone
    # is 94 GiB) -- refused before the model runs
    big = dataclasses.replace(h, scales_sent=0, num_frames=1000, gop=1000, width=2048, height=2048,
                              latent_hw=codec.tokenizer.latent_size(2048, 2048))
    with pytest.raises(BitstreamError, match="video.*limit max_memory_bytes="):
        codec.decode(Layout(big, [], []).pack())
    # a torchac chunk holds n - 1 string lengths per GOP: 1000 frames cannot hide in a 5-byte chunk
    one = dataclasses.replace(big, coder="torchac", scales_sent=1, width=176, height=144, latent_hw=codec.tokenizer.latent_size(144, 176))
    with pytest.raises(BitstreamError, match="too short to hold 1000 frames"):
        codec.decode(Layout(one, [(5, 0)], [b"\x00" * 5]).pack())


def test_out_of_memory_is_one_line(setup, monkeypatch):
    from progvc_lab.codec import CodecError

    codec, a, _, _ = setup

    def boom(*args, **kw):
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:118] DefaultCPUAllocator: not enough memory: "
                           "you tried to allocate 2300000000 bytes.")

    monkeypatch.setattr(codec.context_model, "new_state", boom)
    with pytest.raises(CodecError, match="not enough memory to decode this stream"):
        codec.decode(a)
    monkeypatch.setattr(codec, "reconstruct", lambda *a, **k: (_ for _ in ()).throw(MemoryError()))
    monkeypatch.undo()
    monkeypatch.setattr(codec, "reconstruct", lambda *a, **k: (_ for _ in ()).throw(MemoryError()))
    with pytest.raises(CodecError, match="not enough memory"):
        codec.decode(a)
    monkeypatch.undo()
    monkeypatch.setattr(codec.context_model, "new_state", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("bug")))
    with pytest.raises(RuntimeError, match="bug"):   # other failures are not disguised
        codec.decode(a)


def test_finding_is_raised_for_silent_corruption(setup):
    """The oracle itself can fail: other tokens are a finding."""
    codec, a, b, tokens = setup
    with pytest.raises(Finding, match="silent corruption"):
        check(codec, tokens, b)
