"""The ``.pgvc`` container: header, chunk table, and chunks stored scale-major.

Format version 2 (compact; every integer a LEB128 varint unless said otherwise)::

    "PGVC" | version u8 | fingerprint (4 bytes) | width | height | fps_num | fps_den | num_frames | gop
           | latent_h | latent_w | window | num_scales u8 | scales_sent u8 | names u8 [| escaped names]
           | CRC-16 of all the header bytes before it
    table:  for s < scales_sent: for g < num_gops: varint chunk length, CRC-16 of the chunk's tokens
    data:   scale 0 of GOP 0, GOP 1, ... | scale 1 of GOP 0, GOP 1, ... | ... | scale k-1 of ...

The scale schedule is not stored: it is ``scale_schedule(latent_hw, num_scales)`` (the model's rule,
a pure function kept here so that ``info`` needs no torch). ``names`` packs four 2-bit ids: quantizer,
mask, coder and copy gate (bits 0-1, 2-3, 4-5, 6-7) from the tables ``QUANTIZERS``, ``MASKS``,
``CODERS``, ``COPY_GATES``; id 3 means "not in the table": the name follows as a length-prefixed
ASCII string (in that order). A QCIF stream's header is about 25 bytes (version 1: about 75).

Because all scale-0 chunks come first, then all scale-1 chunks and so on, the bytes of a stream up
to the end of scale k are themselves a stream of k scales: ``truncate`` rewrites the header and the
table and drops the rest without re-encoding, and a raw cut exactly at a scale boundary still decodes
(at the lower rate, with a warning). A cut anywhere else, a flipped bit or a stream from another
model gives a ``BitstreamError`` that says what is wrong.

A chunk (GOP g, scale s) holds one entropy-coded string per frame of the GOP:
varint lengths of all but the last string, then the strings.

This module knows bytes and header fields only: no torch, no model.
"""
from __future__ import annotations

import binascii
import struct
import warnings
from dataclasses import dataclass, field

MAGIC = b"PGVC"
VERSION = 2
MAX_FRAMES = 1 << 20
MAX_SIDE = 1 << 14
FINGERPRINT_BYTES = 4
QUANTIZERS = ("vq",)
MASKS = ("progvc_sparse", "var", "infinitystar")
CODERS = ("torchac", "constriction")
COPY_GATES = ("none", "count", "context")   # "learned" (a model head) would be escaped until it exists
_ESCAPE = 3


class BitstreamError(ValueError):
    """A .pgvc stream is malformed, truncated, corrupted, or does not fit the model."""


def scale_schedule(latent_hw: tuple[int, int], num_scales: int) -> list[tuple[int, int]]:
    """Scale sizes from 1x1 to ``latent_hw`` in geometric steps, non-decreasing per dimension.

    side_s = round(side^(s/(K-1))) per dimension (the quantizer's rule; the stream derives it)."""
    h, w = latent_hw
    if h < 1 or w < 1:
        raise ValueError(f"latent size must be positive, got {latent_hw}")
    if num_scales == 1:
        return [(h, w)]
    out = []
    for s in range(num_scales):
        frac = s / (num_scales - 1)
        hs, ws = max(1, round(h ** frac)), max(1, round(w ** frac))
        if out:  # never shrink
            hs, ws = max(hs, out[-1][0]), max(ws, out[-1][1])
        out.append((min(hs, h), min(ws, w)))
    out[-1] = (h, w)
    return out


@dataclass
class Header:
    fingerprint: bytes            # first FINGERPRINT_BYTES bytes of the model's hash (weights and config)
    width: int                    # frame size of the original video (before padding)
    height: int
    fps_num: int
    fps_den: int
    num_frames: int
    gop: int                      # frames per GOP (the last GOP may be shorter)
    latent_hw: tuple[int, int]
    num_scales: int               # K; the schedule is derived (``schedule``)
    scales_sent: int              # k <= K scales are in the stream
    quantizer: str = "vq"
    mask: str = "progvc_sparse"
    window: int = 1
    coder: str = "torchac"
    copy_gate: str = "none"       # copy-aware probabilities of P frames (codec.COPY_GATES)
    version: int = VERSION

    @property
    def schedule(self) -> list[tuple[int, int]]:
        return scale_schedule(tuple(self.latent_hw), self.num_scales)

    @property
    def num_gops(self) -> int:
        return -(-self.num_frames // self.gop)

    def gop_frames(self, g: int) -> int:
        return min(self.gop, self.num_frames - g * self.gop)


@dataclass
class Stream:
    header: Header
    chunks: dict = field(default_factory=dict)   # (g, s) -> bytes
    crcs: dict = field(default_factory=dict)     # (g, s) -> int (CRC-16 of the decoded tokens)


# ---- small helpers ---------------------------------------------------------------------------------
def put_varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


class Reader:
    def __init__(self, data: bytes, what: str = "stream"):
        self.data, self.pos, self.what = data, 0, what

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise BitstreamError(f"{self.what} is truncated: needed {n} more bytes at offset {self.pos}, "
                                 f"only {len(self.data) - self.pos} left")
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    def unpack(self, fmt: str):
        return struct.unpack("<" + fmt, self.take(struct.calcsize("<" + fmt)))

    def varint(self) -> int:
        n = shift = 0
        while True:
            (b,) = self.take(1)
            n |= (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                return n
            if shift > 35:
                raise BitstreamError(f"{self.what}: malformed length field at offset {self.pos}")

    def string(self) -> str:
        (n,) = self.take(1)
        return self.take(n).decode("ascii", errors="replace")


def tokens_crc(token_bytes: bytes) -> int:
    return binascii.crc_hqx(token_bytes, 0xFFFF)


def _pack_str(s: str) -> bytes:
    b = s.encode("ascii")
    if len(b) > 255:
        raise ValueError(f"name {s!r} is too long for a stream header")
    return bytes([len(b)]) + b


_NAME_TABLES = (("quantizer", QUANTIZERS), ("mask", MASKS), ("coder", CODERS), ("copy_gate", COPY_GATES))


# ---- header ------------------------------------------------------------------------------------------
def pack_header(h: Header) -> bytes:
    if len(h.fingerprint) != FINGERPRINT_BYTES:
        raise ValueError(f"the header stores a {FINGERPRINT_BYTES}-byte model fingerprint, got {len(h.fingerprint)}")
    if not (0 <= h.num_scales <= 255 and 0 <= h.scales_sent <= 255):
        raise ValueError(f"{h.scales_sent} of {h.num_scales} scales do not fit the header")
    out = bytearray(MAGIC) + bytes([h.version]) + h.fingerprint
    for n in (h.width, h.height, h.fps_num, h.fps_den, h.num_frames, h.gop, h.latent_hw[0], h.latent_hw[1],
              h.window):
        out += put_varint(n)
    out += bytes([h.num_scales, h.scales_sent])
    ids, escaped = 0, b""
    for i, (name, table) in enumerate(_NAME_TABLES):
        value = getattr(h, name)
        idx = table.index(value) if value in table else _ESCAPE
        ids |= idx << (2 * i)
        if idx == _ESCAPE:
            escaped += _pack_str(value)
    out += bytes([ids]) + escaped
    return bytes(out) + struct.pack("<H", binascii.crc_hqx(bytes(out), 0xFFFF))


def unpack_header(r: Reader) -> Header:
    start = r.pos
    magic = r.take(4)
    if magic != MAGIC:
        raise BitstreamError(f"not a .pgvc stream (starts with {magic!r}, expected {MAGIC!r})")
    (version,) = r.take(1)
    if version != VERSION:
        newer = "newer" if version > VERSION else "older"
        raise BitstreamError(f"stream format version {version} is {newer} than the one this progvc_lab reads "
                             f"(version {VERSION}); " + ("upgrade progvc_lab" if version > VERSION else
                                                         "re-encode it with this version"))
    try:
        fingerprint = r.take(FINGERPRINT_BYTES)
        w, h, fn, fd, nf, gop, lh, lw, window = (r.varint() for _ in range(9))
        K, k, ids = r.take(3)
        names = {}
        for i, (name, table) in enumerate(_NAME_TABLES):
            idx = (ids >> (2 * i)) & 3
            names[name] = r.string() if idx == _ESCAPE else (table[idx] if idx < len(table) else None)
        (crc,) = r.unpack("H")
    except BitstreamError as e:
        raise BitstreamError(f"stream header is truncated or corrupted ({e})") from None
    if binascii.crc_hqx(r.data[start:r.pos - 2], 0xFFFF) != crc:
        raise BitstreamError("stream header is corrupted (CRC mismatch)")
    if None in names.values():
        raise BitstreamError("stream header names an unknown quantizer, mask, coder or copy gate id")
    hdr = Header(fingerprint, w, h, fn, fd, nf, gop, (lh, lw), K, k, names["quantizer"], names["mask"], window,
                 names["coder"], names["copy_gate"], version)
    _check_header(hdr)
    return hdr


def _check_header(h: Header):
    problems = []
    if not (0 < h.width <= MAX_SIDE and 0 < h.height <= MAX_SIDE):
        problems.append(f"frame size {h.width}x{h.height}")
    if not (0 < h.latent_hw[0] <= MAX_SIDE and 0 < h.latent_hw[1] <= MAX_SIDE):
        problems.append(f"latent size {h.latent_hw}")
    if not 0 < h.num_frames <= MAX_FRAMES:
        problems.append(f"frame count {h.num_frames}")
    if h.gop < 1:
        problems.append(f"GOP length {h.gop}")
    if h.fps_num < 1 or h.fps_den < 1:
        problems.append(f"frame rate {h.fps_num}/{h.fps_den}")
    if not 1 <= h.num_scales <= 64 or not 0 <= h.scales_sent <= h.num_scales:
        problems.append(f"{h.scales_sent} of {h.num_scales} scales")
    if problems:
        raise BitstreamError("stream header has impossible values: " + ", ".join(problems))


# ---- whole stream -------------------------------------------------------------------------------------
def pack_chunk(strings: list[bytes]) -> bytes:
    return b"".join(put_varint(len(s)) for s in strings[:-1]) + b"".join(strings)


def unpack_chunk(chunk: bytes, num_strings: int, where: str) -> list[bytes]:
    r = Reader(chunk, where)
    lengths = [r.varint() for _ in range(num_strings - 1)]
    strings = [r.take(n) for n in lengths]
    return strings + [chunk[r.pos:]]


def write_stream(stream: Stream) -> bytes:
    h = stream.header
    out = bytearray(pack_header(h))
    order = [(g, s) for s in range(h.scales_sent) for g in range(h.num_gops)]
    for key in order:
        out += put_varint(len(stream.chunks[key])) + struct.pack("<H", stream.crcs[key])
    for key in order:
        out += stream.chunks[key]
    return bytes(out)


def read_stream(data: bytes) -> Stream:
    """Parse and check a stream. A cut exactly at a scale boundary gives fewer scales (with a warning)."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise BitstreamError(f"expected the bytes of a .pgvc stream, got {type(data).__name__}")
    data = bytes(data)
    r = Reader(data)
    h = unpack_header(r)
    entries = h.scales_sent * h.num_gops  # each table entry takes >= 3 bytes (varint + CRC-16)
    if len(data) - r.pos < 3 * entries:
        raise BitstreamError(f"stream is truncated: its chunk table needs at least {3 * entries} bytes, "
                             f"only {len(data) - r.pos} left")
    order = [(g, s) for s in range(h.scales_sent) for g in range(h.num_gops)]
    table = {}
    for key in order:
        table[key] = (r.varint(), r.unpack("H")[0])
    stream = Stream(h)
    total = sum(n for n, _ in table.values())
    left = len(data) - r.pos
    if left > total:
        raise BitstreamError(f"stream has {left - total} unexpected bytes after its last chunk")
    if left < total:
        # which scale boundaries does the data reach?
        got, scales = 0, 0
        for s in range(h.scales_sent):
            need = sum(table[(g, s)][0] for g in range(h.num_gops))
            if got + need > left:
                break
            got, scales = got + need, s + 1
        if got != left:
            raise BitstreamError(
                f"stream is truncated: {left} of {total} data bytes present, and the cut is not at a "
                f"scale boundary (scales end at bytes {_boundaries(h, table)}); use 'progvc-lab truncate' "
                "to make a shorter stream")
        warnings.warn(f"stream was cut after scale {scales} of {h.scales_sent}; decoding {scales} scales")
        h.scales_sent = scales
    for key in [(g, s) for s in range(h.scales_sent) for g in range(h.num_gops)]:
        n, crc = table[key]
        stream.chunks[key] = r.take(n)
        stream.crcs[key] = crc
    return stream


def _boundaries(h: Header, table) -> list[int]:
    out, acc = [], 0
    for s in range(h.scales_sent):
        acc += sum(table[(g, s)][0] for g in range(h.num_gops))
        out.append(acc)
    return out


def truncate(data: bytes, scales: int) -> bytes:
    """Keep the first ``scales`` scales of a stream, without re-encoding."""
    stream = read_stream(data)
    if not 0 <= scales <= stream.header.scales_sent:
        raise BitstreamError(f"cannot keep {scales} scales: the stream has {stream.header.scales_sent}")
    stream.header.scales_sent = scales
    return write_stream(stream)


def describe(data: bytes) -> dict:
    """Header fields and bytes per scale and per GOP, for ``progvc-lab info``."""
    stream = read_stream(data)
    h = stream.header
    header_bytes = len(pack_header(h))
    per_scale = [sum(len(stream.chunks[(g, s)]) for g in range(h.num_gops)) for s in range(h.scales_sent)]
    per_gop = [sum(len(stream.chunks[(g, s)]) for s in range(h.scales_sent)) for g in range(h.num_gops)]
    table_bytes = len(data) - header_bytes - sum(per_scale)
    return {
        "version": h.version, "fingerprint": h.fingerprint.hex(), "width": h.width, "height": h.height,
        "fps": f"{h.fps_num}/{h.fps_den}", "num_frames": h.num_frames, "gop": h.gop,
        "num_gops": h.num_gops, "latent_hw": list(h.latent_hw), "schedule": [list(x) for x in h.schedule],
        "num_scales": h.num_scales, "scales_sent": h.scales_sent, "quantizer": h.quantizer, "mask": h.mask,
        "window": h.window, "coder": h.coder, "copy_gate": h.copy_gate, "total_bytes": len(data), "header_bytes": header_bytes,
        "table_bytes": table_bytes, "bytes_per_scale": per_scale, "bytes_per_gop": per_gop,
        "bpp": len(data) * 8 / (h.num_frames * h.width * h.height),
    }
