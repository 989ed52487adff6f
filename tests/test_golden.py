"""Golden streams: the exact bytes of every committed coding configuration, pinned by md5.

A stream written today must decode tomorrow, on another machine. The md5 of each stream below (and of
its decoded tokens) is committed in tests/golden/streams.md5. When one changes, either

* the **format** changed (bitstream.VERSION must then change too: old streams are refused with a clear
  message), or
* the **float path** changed (tokenizer, quantizer, context model, CDF construction, coding order):
  then streams written before the change no longer decode to the same video -- they decode to garbage
  or fail their checks. That breaks every stream users already have; do it only on purpose, with a
  format VERSION bump if the old streams cannot be told apart.

Regenerate on purpose (one command), then say why in the commit message:

    PROGVC_REGEN_GOLDEN=1 python -m pytest tests/test_golden.py tests/test_codec.py -k golden

The configurations: the random tiny codec of tests/helpers.py with each copy gate, lambda 0 and the
default, both entropy coders (constriction, the default, and torchac), GOP 1 / 3 / longer than the clip, window 2, 4 scales, a truncated and a cut stream; and the
shipped ``tiny`` model on the first 3 frames of data/foreman_qcif_30f.y4m.
"""
from __future__ import annotations

import hashlib
import os
import warnings
from fractions import Fraction
from pathlib import Path

import pytest
import torch

from progvc_lab import bitstream
from progvc_lab.codec import PRETRAINED, Codec, tokens_bytes

from helpers import make_tiny_codec, one_thread, pattern_clip  # noqa: F401

pytestmark = pytest.mark.usefixtures("one_thread")

GOLDEN = Path(__file__).parent / "golden" / "streams.md5"
ROOT = Path(__file__).resolve().parents[1]
REGEN = "PROGVC_REGEN_GOLDEN=1 python -m pytest tests/test_golden.py tests/test_codec.py -k golden"

# name -> (codec kwargs, clip (frames, H, W), encode options, post-processing)
CONFIGS = {
    "gate_none_lambda0": (dict(seed=1234, gop=3), (5, 32, 48), dict(copy_gate="none", rdo_lambda=0.0), None),
    "gate_count_default": (dict(seed=1234, gop=3), (5, 32, 48), dict(copy_gate="count"), None),
    "gate_context_default": (dict(seed=1234, gop=3), (5, 32, 48), dict(copy_gate="context"), None),
    "gate_count_lambda0": (dict(seed=1234, gop=3), (5, 32, 48), dict(rdo_lambda=0.0), None),
    "gop1_intra": (dict(seed=1234, gop=1), (3, 32, 48), {}, None),
    "torchac_gate_count_default": (dict(seed=1234, gop=3), (5, 32, 48), dict(coder="torchac"), None),
    "torchac_gop1_lambda0": (dict(seed=1234, gop=1), (3, 32, 48), dict(coder="torchac", rdo_lambda=0.0), None),
    "gop_longer_than_clip_window2": (dict(seed=7, gop=32, window=2), (6, 24, 40), {}, None),
    "four_scales_odd_size": (dict(seed=5, gop=2, num_scales=4), (3, 37, 53), {}, None),
    "truncated_to_3": (dict(seed=1234, gop=3), (5, 32, 48), {}, "truncate3"),
    "cut_inside_scale_4": (dict(seed=1234, gop=3), (5, 32, 48), {}, "cut"),
    "shipped_tiny_foreman_3f": ("tiny", "foreman", {}, None),
}


def golden_stream(name: str) -> tuple[bytes, Codec]:
    codec_kw, clip, options, post = CONFIGS[name]
    if codec_kw == "tiny":
        from progvc_lab.data import read_video

        codec = Codec.from_pretrained("tiny")
        video, fps = read_video(ROOT / "data" / "foreman_qcif_30f.y4m", max_frames=3)
    else:
        codec = make_tiny_codec(**codec_kw)
        video, fps = pattern_clip(*clip), Fraction(25)
    data = codec.encode(video, fps=fps, **options)
    if post == "truncate3":
        data = bitstream.truncate(data, 3)
    elif post == "cut":  # a raw cut in the middle of scale 4's chunks: GOP 0 keeps 5 scales, GOP 1 four
        info = bitstream.describe(data)
        start = info["header_bytes"] + info["table_bytes"] + sum(info["bytes_per_scale"][:4])
        data = data[:start + len(_chunk(data, 0, 4)) + 1]
    return data, codec


def _chunk(data: bytes, g: int, s: int) -> bytes:
    return bitstream.read_stream(data).chunks[(g, s)]


def token_digest(codec: Codec, data: bytes) -> str:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tokens, _ = codec.decode_tokens(data)
    h = hashlib.md5()
    for t in tokens:
        h.update(tokens_bytes(t))
    return h.hexdigest()


# The shipped model's stream goes through big conv and attention shapes whose float results depend on
# the CPU's kernels (oneDNN picks AVX2, AVX-512 or AMX code paths): its stream md5 is recorded per
# float-path signature ("name@signature" lines). On a machine with no entry of its own the decoded
# tokens and the stream length must still match exactly (they did across every machine seen so far),
# and the stream md5 is only reported. The random tiny codec's small shapes are exact everywhere.
MACHINE_DEPENDENT = {"shipped_tiny_foreman_3f"}


def float_signature() -> str:
    """The CPU features that select torch's CPU kernels here, e.g. ``avx2+avx512+amx_tile``."""
    flags = [n[4:-10] for n in sorted(dir(torch.cpu)) if n.startswith("_is_") and n.endswith("_supported")]
    return "+".join(f for f in flags if getattr(torch.cpu, f"_is_{f}_supported")()) or "baseline"


def read_golden() -> dict:
    out = {}
    for line in GOLDEN.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            md5, tok_md5, n, name = line.split()[:4]
            out[name] = (md5, tok_md5, int(n))
    return out


@pytest.fixture(scope="module")
def regen():
    """Collect the digests of all configurations, and write the file once at the end when regenerating."""
    found = {}
    yield found
    if os.environ.get("PROGVC_REGEN_GOLDEN") == "1" and len(found) == len(CONFIGS):
        lines = [f"# md5(stream) md5(decoded tokens) bytes name -- format version {bitstream.VERSION}; "
                 f"configurations in tests/test_golden.py; regenerate: {REGEN}"]
        known = read_golden() if GOLDEN.is_file() else {}
        entries = {name: v for name, v in known.items() if "@" in name}   # other machines' entries stay
        for name, got in found.items():
            if name in MACHINE_DEPENDENT and name in known and known[name][0] != got[0]:
                entries[name] = known[name]
                entries[f"{name}@{float_signature()}"] = got
            else:
                entries[name] = got
        lines += [f"{md5} {tok} {n} {name}" for name, (md5, tok, n) in sorted(entries.items())]
        GOLDEN.write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize("name", list(CONFIGS))
def test_golden_stream(name, regen):
    if CONFIGS[name][0] == "tiny" and not PRETRAINED["tiny"].is_file():
        pytest.skip("the shipped checkpoint is missing")
    data, codec = golden_stream(name)
    got = (hashlib.md5(data).hexdigest(), token_digest(codec, data), len(data))
    regen[name] = got
    if os.environ.get("PROGVC_REGEN_GOLDEN") == "1":
        pytest.skip(f"PROGVC_REGEN_GOLDEN=1: recorded {name} ({got[0]}); rerun without it")
    assert GOLDEN.is_file(), f"{GOLDEN} is missing; create it with {REGEN}"
    golden = read_golden()
    expected = golden.get(name)
    assert expected is not None, f"no golden entry for {name}; regenerate with {REGEN}"
    if name in MACHINE_DEPENDENT:
        mine = golden.get(f"{name}@{float_signature()}")
        if mine is None and got[0] != expected[0]:
            assert got[1:] == expected[1:], (
                f"golden stream {name}: decoded tokens or length changed ({got[1]}, {got[2]} bytes), expected "
                f"{expected[1:]}: the float path changed. Regenerate on purpose: {REGEN}")
            warnings.warn(f"golden stream {name}: this CPU ({float_signature()}) writes md5 {got[0]} (same tokens and "
                          f"length as recorded); record it with {REGEN}")
            return
        expected = mine or expected
    assert got == expected, (
        f"golden stream {name} changed: md5 {got[0]} / tokens {got[1]} ({got[2]} bytes), expected {expected}. "
        "The format or the float path changed: streams written before this change will not decode to "
        f"the same video. If that is intended, bump bitstream.VERSION if needed and regenerate: {REGEN}")
