"""The ``.pgvc`` container: header, chunk table, and chunks stored scale-major.

::

    "PGVC" | version u8 | header length u16 | header fields | CRC-32 of the header
    table:  for s < scales_sent: for g < num_gops: varint chunk length, CRC-16 of the chunk's tokens
    data:   scale 0 of GOP 0, GOP 1, ... | scale 1 of GOP 0, GOP 1, ... | ... | scale k-1 of ...

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
import zlib
from dataclasses import dataclass, field

MAGIC = b"PGVC"
VERSION = 1
MAX_FRAMES = 1 << 20
MAX_SIDE = 1 << 14


class BitstreamError(ValueError):
    """A .pgvc stream is malformed, truncated, corrupted, or does not fit the model."""


@dataclass
class Header:
    fingerprint: bytes            # 8 bytes: hash of the model's weights and config
    width: int                    # frame size of the original video (before padding)
    height: int
    fps_num: int
    fps_den: int
    num_frames: int
    gop: int                      # frames per GOP (the last GOP may be shorter)
    latent_hw: tuple[int, int]
    schedule: list[tuple[int, int]]   # (h_s, w_s) for each of the K scales
    scales_sent: int              # k <= K scales are in the stream
    quantizer: str = "vq"
    mask: str = "progvc_sparse"
    window: int = 1
    coder: str = "torchac"
    version: int = VERSION

    @property
    def num_scales(self) -> int:
        return len(self.schedule)

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
    return bytes([len(b)]) + b


# ---- header ------------------------------------------------------------------------------------------
def pack_header(h: Header) -> bytes:
    body = bytearray()
    body += h.fingerprint
    body += struct.pack("<HHHHIHHHBB", h.width, h.height, h.fps_num, h.fps_den, h.num_frames, h.gop,
                        h.latent_hw[0], h.latent_hw[1], h.num_scales, h.scales_sent)
    for hs, ws in h.schedule:
        body += struct.pack("<HH", hs, ws)
    body += struct.pack("<B", h.window)
    body += _pack_str(h.quantizer) + _pack_str(h.mask) + _pack_str(h.coder)
    out = MAGIC + struct.pack("<BH", h.version, len(body)) + bytes(body)
    return out + struct.pack("<I", zlib.crc32(out))


def unpack_header(r: Reader) -> Header:
    magic = r.take(4)
    if magic != MAGIC:
        raise BitstreamError(f"not a .pgvc stream (starts with {magic!r}, expected {MAGIC!r})")
    version, body_len = r.unpack("BH")
    if version > VERSION:
        raise BitstreamError(f"stream format version {version} is newer than this progvc_lab reads "
                             f"(version {VERSION}); upgrade progvc_lab")
    start = r.pos - 7
    body = Reader(r.take(body_len), "stream header")
    (crc,) = r.unpack("I")
    if zlib.crc32(r.data[start:r.pos - 4]) != crc:
        raise BitstreamError("stream header is corrupted (CRC mismatch)")
    fingerprint = body.take(8)
    w, h, fn, fd, nf, gop, lh, lw, K, k = body.unpack("HHHHIHHHBB")
    schedule = [tuple(body.unpack("HH")) for _ in range(K)]
    (window,) = body.unpack("B")
    quantizer, mask, coder = body.string(), body.string(), body.string()
    hdr = Header(fingerprint, w, h, fn, fd, nf, gop, (lh, lw), schedule, k, quantizer, mask, window, coder, version)
    _check_header(hdr)
    return hdr


def _check_header(h: Header):
    problems = []
    if not (0 < h.width <= MAX_SIDE and 0 < h.height <= MAX_SIDE):
        problems.append(f"frame size {h.width}x{h.height}")
    if not 0 < h.num_frames <= MAX_FRAMES:
        problems.append(f"frame count {h.num_frames}")
    if h.gop < 1:
        problems.append(f"GOP length {h.gop}")
    if h.fps_num < 1 or h.fps_den < 1:
        problems.append(f"frame rate {h.fps_num}/{h.fps_den}")
    if not 1 <= h.num_scales <= 64 or not 0 <= h.scales_sent <= h.num_scales:
        problems.append(f"{h.scales_sent} of {h.num_scales} scales")
    if h.schedule and tuple(h.schedule[-1]) != tuple(h.latent_hw):
        problems.append(f"scale schedule ends at {h.schedule[-1]}, latent is {h.latent_hw}")
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
        "window": h.window, "coder": h.coder, "total_bytes": len(data), "header_bytes": header_bytes,
        "table_bytes": table_bytes, "bytes_per_scale": per_scale, "bytes_per_gop": per_gop,
        "bpp": len(data) * 8 / (h.num_frames * h.width * h.height),
    }
