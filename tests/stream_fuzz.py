"""Stream mutators and the fuzz oracle, shared by tests/test_fuzz.py (hypothesis, default suite) and
benchmarks/fuzz_atheris.py (long runs).

Every mutator takes ``pick(n) -> int in [0, n)`` (hypothesis draws, ``random.Random.randrange`` or
atheris' ``FuzzedDataProvider``) so that the same mutations are driven by any engine. The streams
are structure-aware: ``Layout`` splits a valid stream into header, table entries and chunks, so a
mutation can swap, duplicate or splice chunks *with their table entries* and reseal both CRCs (what
a careful attacker, not a random bit error, does).

The oracle (``check``): decoding a mutated stream either raises the project's own errors
(``BitstreamError``, ``CodecError``) or returns tokens equal to the original's -- all of them, or for
a cut stream a per-GOP prefix of the scales (the salvage). Anything else is a finding.
"""
from __future__ import annotations

import binascii
import dataclasses
import struct
import time
import warnings

from progvc_lab import bitstream
from progvc_lab.bitstream import BitstreamError, Reader, pack_header, put_varint, unpack_header

FIELDS_VARINT = ("width", "height", "fps_num", "fps_den", "num_frames", "gop", "window")
EDGE_VALUES = (0, 1, 2, 127, 128, 255, 65535, 65536, 2**35 - 1)


@dataclasses.dataclass
class Layout:
    header: bitstream.Header
    table: list            # [(length, stored check)] in stream order
    chunks: list           # chunk bytes in stream order

    @classmethod
    def parse(cls, data: bytes) -> "Layout":
        r = Reader(data)
        h = unpack_header(r)
        table = [(r.varint(), r.unpack("H")[0]) for _ in range(h.scales_sent * h.num_gops)]
        pos = r.pos + 6
        chunks = []
        for n, _ in table:
            chunks.append(data[pos:pos + n])
            pos += n
        return cls(h, table, chunks)

    def pack(self, reseal: bool = True, original: bytes | None = None) -> bytes:
        head = pack_header(self.header) + b"".join(put_varint(n) + struct.pack("<H", c) for n, c in self.table)
        body = b"".join(self.chunks)
        if reseal or original is None:
            head += struct.pack("<H", binascii.crc_hqx(head, 0xFFFF))
            return head + struct.pack("<I", binascii.crc32(body, binascii.crc32(head))) + body
        old = Layout.parse(original)  # keep the original CRC bytes
        r = Reader(original)
        unpack_header(r)
        for _ in old.table:
            r.varint(), r.take(2)
        return head + original[r.pos:r.pos + 6] + body


# ---- mutators: (data, other, pick) -> bytes --------------------------------------------------------------
def bit_flips(data, other, pick):
    out = bytearray(data)
    for _ in range(1 + pick(3)):
        i = pick(len(out))
        out[i] ^= 1 << pick(8)
    return bytes(out)


def byte_overwrite(data, other, pick):
    out = bytearray(data)
    i = pick(len(out))
    for j in range(i, min(len(out), i + 1 + pick(8))):
        out[j] = (0, 0xFF, 0x80, 0x7F, pick(256))[pick(5)]
    return bytes(out)


def header_field(data, other, pick):
    lay = Layout.parse(data)
    name = (FIELDS_VARINT + ("num_scales", "scales_sent", "latent_h", "latent_w"))[pick(len(FIELDS_VARINT) + 4)]
    value = EDGE_VALUES[pick(len(EDGE_VALUES))]
    if name in ("num_scales", "scales_sent"):
        value = min(value, 255)
    if name.startswith("latent"):
        hw = list(lay.header.latent_hw)
        hw[name == "latent_w"] = min(value, 2**35 - 1)
        lay.header = dataclasses.replace(lay.header, latent_hw=tuple(hw))
    else:
        lay.header = dataclasses.replace(lay.header, **{name: value})
    return lay.pack(reseal=bool(pick(2)), original=data)


def reorder_chunks(data, other, pick):
    lay = Layout.parse(data)
    i, j = pick(len(lay.chunks)), pick(len(lay.chunks))
    lay.table[i], lay.table[j] = lay.table[j], lay.table[i]
    lay.chunks[i], lay.chunks[j] = lay.chunks[j], lay.chunks[i]
    return lay.pack(reseal=bool(pick(2)), original=data)


def duplicate_chunk(data, other, pick):
    lay = Layout.parse(data)
    i, j = pick(len(lay.chunks)), pick(len(lay.chunks))
    lay.table[j], lay.chunks[j] = lay.table[i], lay.chunks[i]
    return lay.pack(reseal=bool(pick(2)), original=data)


def splice_gop(data, other, pick):
    """Replace every chunk of one GOP (or one chunk) by the other stream's, table entries included."""
    lay, oth = Layout.parse(data), Layout.parse(other)
    G = lay.header.num_gops
    g = pick(G)
    whole = pick(2)
    s_one = pick(max(1, lay.header.scales_sent))
    for i in range(min(len(lay.chunks), len(oth.chunks))):
        if i % G == g and (whole or i // G == s_one):
            lay.table[i], lay.chunks[i] = oth.table[i], oth.chunks[i]
    return lay.pack(reseal=bool(pick(2)), original=data)


def append_garbage(data, other, pick):
    return data + bytes(pick(256) for _ in range(1 + pick(16)))


def truncate_anywhere(data, other, pick):
    return data[:pick(len(data))]


def insert_or_delete(data, other, pick):
    i = pick(len(data))
    if pick(2):
        return data[:i] + bytes([pick(256)]) * (1 + pick(4)) + data[i:]
    return data[:i] + data[i + 1 + pick(4):]


def cut_truncated_stream(data, other, pick):
    """A stream properly truncated to k scales, then cut again (salvage of a truncate's output)."""
    k = pick(Layout.parse(data).header.scales_sent + 1)
    cut = bitstream.truncate(data, k)
    return cut[:len(cut) - pick(max(1, len(cut) // 3))]


MUTATORS = (bit_flips, byte_overwrite, header_field, reorder_chunks, duplicate_chunk, splice_gop,
            append_garbage, truncate_anywhere, insert_or_delete, cut_truncated_stream)


def mutate(data: bytes, other: bytes, pick) -> tuple[str, bytes]:
    m = MUTATORS[pick(len(MUTATORS))]
    return m.__name__, m(data, other, pick)


# ---- oracle -------------------------------------------------------------------------------------------
class Finding(AssertionError):
    """A mutated stream broke a promise: a foreign exception, a silent corruption, or too slow."""


def check(codec, original_tokens, mutated: bytes, limits=None, seconds: float = 10.0) -> str:
    """Decode ``mutated``; returns "error" (our errors), "same" (the original's tokens), "salvaged"
    (a per-GOP prefix of them). Raises ``Finding`` otherwise."""
    from progvc_lab.codec import CodecError

    t0 = time.perf_counter()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            tokens, _, h, report = codec.decode_fill_report(mutated, limits=limits)
    except (BitstreamError, CodecError):
        outcome = "error"
    except Exception as e:  # noqa: BLE001 - that is the point
        raise Finding(f"{type(e).__name__} escaped: {e}") from e
    else:
        outcome = _compare(original_tokens, tokens, h, report)
    took = time.perf_counter() - t0
    if took > seconds:
        raise Finding(f"one case took {took:.1f} s (> {seconds} s)")
    return outcome


def _compare(original, tokens, h, report) -> str:
    T = original[0].shape[0]
    if h.num_frames != T:
        raise Finding(f"decoded {h.num_frames} frames, the original has {T}")
    frames = report.frames_per_gop
    for s, tok in enumerate(tokens):
        n = sum(f for f, k in zip(frames, report.scales_decoded) if k > s)
        if s >= len(original) or tok.shape != original[s][:n].shape or not bool((tok == original[s][:n]).all()):
            raise Finding(f"silent corruption: scale {s} decodes to tokens that differ from the original's")
    if len(tokens) == len(original) and report.complete:
        return "same"
    return "salvaged"
