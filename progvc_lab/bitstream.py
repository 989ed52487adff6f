"""The ``.pgvc`` container: header, chunk table, checks, and chunks stored scale-major.

Format version 4 (compact; every integer a LEB128 varint unless said otherwise; the layout of version 3,
whose copy gates counted without backing off to the coarser scales, so its streams decode to other
tokens and are refused)::

    "PGVC" | version u8 | fingerprint (4 bytes) | width | height | fps_num | fps_den | num_frames | gop
           | latent_h | latent_w | window | coding_threads | num_scales u8 | scales_sent u8 | names u8
           [| escaped names]
    table:  for s < scales_sent: for g < num_gops: varint chunk length, u16 chunk check
    index CRC-16 (u16): over every byte before it (header and table)
    payload CRC-32 (u32): over every byte before it and all the chunk data after it
    data:   scale 0 of GOP 0, GOP 1, ... | scale 1 of GOP 0, GOP 1, ... | ... | scale k-1 of ...

The scale schedule is not stored: it is ``scale_schedule(latent_hw, num_scales)`` (the model's rule,
a pure function kept here so that ``info`` needs no torch). ``names`` packs four 2-bit ids: quantizer,
mask, coder and copy gate (bits 0-1, 2-3, 4-5, 6-7) from the tables ``QUANTIZERS``, ``MASKS``,
``CODERS``, ``COPY_GATES``; id 3 means "not in the table": the name follows as a length-prefixed
ASCII string (in that order). A QCIF stream's header is 23 bytes; header + table + checks of a
one-GOP, 6-scale stream are 47 bytes (version 2: 43, with no payload check and unbound chunk checks).

Progressive cuts
----------------
Because all scale-0 chunks come first, then all scale-1 chunks and so on, the bytes of a stream up
to the end of scale k are themselves a stream of k scales: ``truncate`` rewrites the header, the
table and the two CRCs and drops the rest without re-encoding. A raw cut anywhere (a download that
stopped) is *salvaged*: chunk (g, s) is complete when all its bytes are present, and GOP g keeps
scales 0..k_g-1, the complete chunks of that GOP (scale-major order makes them a prefix: if chunk
(g, s) is present so is every chunk before it). A cut inside scale s therefore leaves s + 1 scales to
the GOPs before the cut and s to the others; ``Stream.report`` (a ``ReadReport``) says which. A cut
that leaves no complete chunk at all (e.g. right after the table) is an error, not a grey video.
``strict=True`` refuses every incomplete stream (the payload CRC cannot be verified on one).

What the checks detect
----------------------
* **Chunk check** (16 bits, one per chunk): the CRC-16 of the chunk's *decoded tokens* XOR a mask,
  ``mask(g, s) = CRC-16(header without scales_sent | g | s | previous chunk's stored check)``.
  The decoder recomputes the tokens' CRC and compares, so the check covers the tokens, the chunk's
  position (GOP and scale), every header field that the truncation does not change, and (through the
  chain) the chunk's neighbour in the stream: a chunk moved to another GOP or scale, a duplicated
  GOP, a GOP spliced in from another stream, or a header edited behind a recomputed CRC all fail it.
  A wrong chunk passes with probability about 2^-16 (1 in 65,536) -- only when its tokens' CRC
  happens to collide. The one splice it cannot see: chunks taken from a stream whose earlier chunks
  (in stream order) carry the same checks, i.e. a stream that is the same video up to that point.
* **Index CRC-16** over header and table: catches damage to the fields and lengths before anything
  is allocated or decoded (so a damaged length is not mistaken for a cut). Misses 2^-16.
* **Payload CRC-32** over all the bytes, verified when the stream is complete: it sees any change to
  any byte, including bytes that the entropy decoder would have tolerated. CRC-32 detects every error
  burst up to 32 bits and misses a random corruption with probability 2^-32 (1 in 4.3 billion).

Is 16 bits per chunk enough? On a complete stream a damaged chunk must fool both its chunk check
and the payload CRC-32: about 2^-48. Only a *cut and damaged* stream (two faults) relies on the chunk
checks alone (2^-16 per damaged chunk, after the index CRC); decoders that must never show a wrong
picture use ``strict`` and refuse cut streams. 32-bit chunk checks would cost 2 bytes more per
chunk (12 bytes on a one-GOP 6-scale stream, ~5 % of a 250-byte low-rate stream) for that case
only, so the chunk checks stay 16 bits and the whole stream gets 32. None of these checks is a
signature: whoever edits a stream on purpose can recompute them all.

Limits
------
A stream is refused before anything is allocated when a field, or a product of fields, exceeds a
``Limits`` budget (``max_pixels`` per frame, ``max_frames``, ``max_gop``, ``max_memory_bytes`` of
the decoder's estimated peak, see ``decode_memory``); every refusal names the limit and how to raise
it. Structural bounds come first: the table must fit the file (>= 3 bytes per entry); with the
``torchac`` coder each chunk of an n-frame GOP holds n - 1 length varints, so such a stream of N bytes
cannot promise more frames than about N per sent scale. (A ``constriction`` chunk is one range-coded
message with no length fields: a few bytes can legitimately code many frames, so only the limits
bound its work.)

A chunk (GOP g, scale s) is the coder's: for ``torchac`` one entropy-coded string per frame of the
GOP (varint lengths of all but the last string, then the strings); for ``constriction`` one
range-coder message for all frames of the GOP at that scale.

This module knows bytes and header fields only: no torch, no numpy, no model.
"""
from __future__ import annotations

import binascii
import dataclasses
import struct
import warnings
from dataclasses import dataclass, field

MAGIC = b"PGVC"
VERSION = 4
MAX_FRAMES = 1 << 20             # format bounds (what a header can say at all); Limits bound what is decoded
MAX_SIDE = 1 << 14
MAX_FPS_TERM = 65535             # fps_num and fps_den are each 1..65535 (what the encoder writes)
MAX_WINDOW = 255
MAX_SCALES = 64
FINGERPRINT_BYTES = 4
# The 2-bit name tables are wire format (an id's meaning never changes): the built-in stages' registry
# names (``stages.registry``; a test keeps them equal), spelt out here so that this module needs no torch.
# Any other name (a user's registered quantizer or coder) is written out in the header instead.
QUANTIZERS = ("vq", "bsq")
MASKS = ("progvc_sparse", "var", "infinitystar")
# Built-in masks by truncation safety (``stages.masks.is_truncation_safe``; a test keeps these lists
# equal to it). A stream of a mask that is not safe was coded for its scales_sent (its unsent scales
# were synthesized as context, see ``codec``) and is never truncated. A user's own mask is unknown
# here (this module has no torch): ``truncate`` takes the caller's word (``mask_safe``), else cuts it,
# and a codec whose mask is not safe refuses a stream cut so (its checks fail, never a wrong video).
TRUNCATION_SAFE_MASKS = ("progvc_sparse", "progvc_sparse_parent")
NOT_TRUNCATION_SAFE_MASKS = ("var", "infinitystar")


def mask_truncation_safe(name: str) -> bool | None:
    """True / False for a built-in mask, None for a mask this module does not know."""
    return True if name in TRUNCATION_SAFE_MASKS else False if name in NOT_TRUNCATION_SAFE_MASKS else None
CODERS = ("torchac", "constriction")
COPY_GATES = ("none", "count", "context")   # "learned" (a model with a gate head) is escaped: 2-bit ids, 3 = escape
_ESCAPE = 3
MAX_CODING_THREADS = 64
_TABLE_ENTRY_MIN = 3             # varint length (>= 1 byte) + u16 check
_CHECK_BYTES = 2 + 4             # index CRC-16 + payload CRC-32


class BitstreamError(ValueError):
    """A .pgvc stream is malformed, truncated, corrupted, does not fit the model, or exceeds a limit."""


class LimitError(BitstreamError):
    """A well-formed stream asks for more than the decoder's ``Limits`` allow."""


@dataclass(frozen=True)
class Limits:
    """The decoder's budget (like libavcodec's ``max_pixels``). Defaults fit a laptop with 16 GB.

    Estimated peaks with the shipped model (``decode_memory``): QCIF 0.3 GiB, 1080p with 32-frame GOPs
    7.3 GiB (4.5 of it the attention cache: use shorter GOPs for big frames), 4K 29 GiB (refused by
    ``max_pixels`` first). Raise them for big videos: ``codec.decode(data, limits=Limits(max_pixels=1 << 25))`` or
    ``progvc-lab decode ... --limit max_pixels=33554432``.
    """
    max_pixels: int = 1 << 22            # per frame: 4.2 M pixels (2560x1600; 4K UHD needs a raise)
    max_frames: int = 1 << 16            # frames per stream (36 minutes at 30 fps)
    max_gop: int = 1024                  # frames per GOP (the block mask is (GOP x scales)^2)
    max_memory_bytes: int = 8 << 30      # the decoder's estimated peak (``decode_memory``)

    def replace(self, **changes) -> "Limits":
        bad = [k for k in changes if k not in {f.name for f in dataclasses.fields(self)}]
        if bad:
            raise ValueError(f"unknown limit {bad[0]!r}; limits: {', '.join(f.name for f in dataclasses.fields(self))}")
        return dataclasses.replace(self, **changes)

    def refuse(self, name: str, what: str):
        raise LimitError(f"stream asks for {what}, over the decoder's limit {name}="
                         f"{getattr(self, name):,}; if you trust it, raise the limit "
                         f"(Python: limits=Limits({name}=...); CLI: --limit {name}=N)")

    def check_header(self, h: "Header"):
        """The model-independent limits: frame size, frame count, GOP length."""
        if h.width * h.height > self.max_pixels:
            self.refuse("max_pixels", f"{h.width}x{h.height} = {h.width * h.height:,} pixels per frame")
        if h.num_frames > self.max_frames:
            self.refuse("max_frames", f"{h.num_frames:,} frames")
        if min(h.gop, h.num_frames) > self.max_gop:
            self.refuse("max_gop", f"GOPs of {min(h.gop, h.num_frames):,} frames")

    def check_memory(self, parts: dict):
        total = sum(parts.values())
        if total > self.max_memory_bytes:
            big = max(parts, key=parts.get)
            self.refuse("max_memory_bytes", f"about {_fmt_bytes(total)} ({total:,} bytes) of memory to decode, "
                        f"most of it for the {big} ({_fmt_bytes(parts[big])})")


DEFAULT_LIMITS = Limits()


def _fmt_bytes(n: int) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024


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


@dataclass(kw_only=True)
class Header:
    """The stream's fixed fields. Keyword-only: a dozen positional values are too easy to swap."""
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
    coding_threads: int = 1       # threads of the coding path: float results depend on it, so the decoder uses it

    @property
    def schedule(self) -> list[tuple[int, int]]:
        return scale_schedule(tuple(self.latent_hw), self.num_scales)

    @property
    def num_gops(self) -> int:
        return -(-self.num_frames // self.gop)

    def gop_frames(self, g: int) -> int:
        return min(self.gop, self.num_frames - g * self.gop)


@dataclass
class ReadReport:
    """What ``read_stream`` found: complete, or cut, and then which scales each GOP keeps.

    ``scales_per_gop[g]`` = complete scales of GOP g (a prefix 0..k_g-1). ``scales_decoded`` is
    filled in by the codec (what it decoded per GOP, after a ``scales=`` request)."""
    scales_sent: int                       # what the header promises
    scales_per_gop: list[int]              # complete scales in the bytes, per GOP
    frames_per_gop: list[int]
    data_bytes: int                        # chunk bytes present
    data_expected: int                     # chunk bytes the table promises
    scales_decoded: list[int] | None = None

    @property
    def complete(self) -> bool:
        return self.data_bytes == self.data_expected

    @property
    def salvaged(self) -> bool:
        """True when scales the header promises were dropped because the stream was cut."""
        return any(k < self.scales_sent for k in self.scales_per_gop)

    def dropped(self) -> list[tuple[int, int]]:
        """(GOP, scale) chunks the header promises but the bytes do not hold."""
        return [(g, s) for g, k in enumerate(self.scales_per_gop) for s in range(k, self.scales_sent)]

    def summary(self) -> str:
        """One line: what was decoded (or is decodable), and what was dropped."""
        ks = self.scales_decoded if self.scales_decoded is not None else self.scales_per_gop
        verb = "decoded" if self.scales_decoded is not None else "complete"
        parts = _runs(ks)
        scales = "; ".join(f"{k} of {self.scales_sent} scales {verb} in {_gops(a, b)}" for a, b, k in parts)
        if self.complete:
            return f"complete stream (payload CRC-32 verified): {scales}"
        dropped = self.dropped()
        have = set(self.scales_per_gop)
        where = f"after scale {have.pop()} of {self.scales_sent}" if len(have) == 1 else \
            f"inside scale {min(have)} of {self.scales_sent}"
        return (f"stream was cut {where} ({self.data_bytes} of {self.data_expected} data bytes): {scales}; "
                f"dropped {len(dropped)} chunk(s) " + _describe_chunks(dropped))


def _runs(values: list[int]) -> list[tuple[int, int, int]]:
    out = []
    for i, v in enumerate(values):
        if out and out[-1][2] == v:
            out[-1] = (out[-1][0], i, v)
        else:
            out.append((i, i, v))
    return out


def _gops(a: int, b: int) -> str:
    return f"GOP {a}" if a == b else f"GOPs {a}-{b}"


def _describe_chunks(chunks: list[tuple[int, int]]) -> str:
    by_scale: dict[int, list[int]] = {}
    for g, s in chunks:
        by_scale.setdefault(s, []).append(g)
    return "(" + ", ".join(f"scale {s} of {_gops(min(gs), max(gs))}" for s, gs in sorted(by_scale.items())) + ")"


@dataclass
class Stream:
    header: Header
    chunks: dict = field(default_factory=dict)   # (g, s) -> bytes
    crcs: dict = field(default_factory=dict)     # (g, s) -> int: CRC-16 of the decoded tokens (unmasked)
    report: ReadReport | None = None             # set by read_stream


# ---- small helpers ---------------------------------------------------------------------------------
def put_varint(n: int) -> bytes:
    if n < 0:
        raise ValueError(f"varints are non-negative, got {n}")
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
    """CRC-16 (CCITT) of a chunk's decoded tokens: what the encoder computes and the decoder compares."""
    return binascii.crc_hqx(token_bytes, 0xFFFF)


def _pack_str(s: str) -> bytes:
    b = s.encode("ascii")
    if len(b) > 255:
        raise ValueError(f"name {s!r} is too long for a stream header")
    return bytes([len(b)]) + b


_NAME_TABLES = (("quantizer", QUANTIZERS), ("mask", MASKS), ("coder", CODERS), ("copy_gate", COPY_GATES))


# ---- header ------------------------------------------------------------------------------------------
def pack_header(h: Header) -> bytes:
    """The header's bytes (version 3 has no separate header CRC: the index CRC after the table covers it)."""
    if len(h.fingerprint) != FINGERPRINT_BYTES:
        raise ValueError(f"the header stores a {FINGERPRINT_BYTES}-byte model fingerprint, got {len(h.fingerprint)}")
    if not (0 <= h.num_scales <= 255 and 0 <= h.scales_sent <= 255):
        raise ValueError(f"{h.scales_sent} of {h.num_scales} scales do not fit the header")
    out = bytearray(MAGIC) + bytes([h.version]) + h.fingerprint
    for n in (h.width, h.height, h.fps_num, h.fps_den, h.num_frames, h.gop, h.latent_hw[0], h.latent_hw[1],
              h.window, h.coding_threads):
        out += put_varint(n)
    out += bytes([h.num_scales, h.scales_sent])
    ids, escaped = 0, b""
    for i, (name, table) in enumerate(_NAME_TABLES):
        value = getattr(h, name)
        idx = table.index(value) if value in table else _ESCAPE
        ids |= idx << (2 * i)
        if idx == _ESCAPE:
            escaped += _pack_str(value)
    return bytes(out + bytes([ids]) + escaped)


def unpack_header(r: Reader) -> Header:
    """Parse the header fields (no CRC here: ``read_stream`` verifies the index CRC after the table,
    then ``check_header``). Only the structure is checked: magic, version, names."""
    magic = r.take(4)
    if magic != MAGIC:
        raise BitstreamError(f"not a .pgvc stream (starts with {magic!r}, expected {MAGIC!r})")
    (version,) = r.take(1)
    if version != VERSION:
        if version > VERSION:
            hint = "upgrade progvc_lab" if version < 16 else "the file is probably damaged"
            raise BitstreamError(f"stream format version {version} is newer than the one this progvc_lab "
                                 f"reads (version {VERSION}); {hint}")
        raise BitstreamError(f"stream format version {version} is older than the one this progvc_lab reads "
                             f"(version {VERSION}); re-encode it with this version"
                             + ("" if version else " (version 0 does not exist: the file is damaged)"))
    try:
        fingerprint = r.take(FINGERPRINT_BYTES)
        w, h, fn, fd, nf, gop, lh, lw, window, threads = (r.varint() for _ in range(10))
        K, k, ids = r.take(3)
        names = {}
        for i, (name, table) in enumerate(_NAME_TABLES):
            idx = (ids >> (2 * i)) & 3
            names[name] = r.string() if idx == _ESCAPE else (table[idx] if idx < len(table) else None)
    except BitstreamError as e:
        raise BitstreamError(f"stream header is truncated or corrupted ({e})") from None
    if None in names.values():
        raise BitstreamError("stream header names an unknown quantizer, mask, coder or copy gate id")
    return Header(fingerprint=fingerprint, width=w, height=h, fps_num=fn, fps_den=fd, num_frames=nf, gop=gop,
                  latent_hw=(lh, lw), num_scales=K, scales_sent=k, quantizer=names["quantizer"], mask=names["mask"],
                  window=window, coder=names["coder"], copy_gate=names["copy_gate"], version=version,
                  coding_threads=threads)


def check_header(h: Header):
    """Every field within the format's bounds (``BitstreamError`` naming all that are not)."""
    problems = []
    if not (0 < h.width <= MAX_SIDE and 0 < h.height <= MAX_SIDE):
        problems.append(f"frame size {h.width}x{h.height}")
    lh, lw = h.latent_hw
    if not (0 < lh <= MAX_SIDE and 0 < lw <= MAX_SIDE) or lh > h.height or lw > h.width:
        problems.append(f"latent size {h.latent_hw} for frames {h.width}x{h.height}")
    if not 0 < h.num_frames <= MAX_FRAMES:
        problems.append(f"frame count {h.num_frames}")
    if not 1 <= h.gop <= 65535:
        problems.append(f"GOP length {h.gop}")
    if not (1 <= h.fps_num <= MAX_FPS_TERM and 1 <= h.fps_den <= MAX_FPS_TERM):
        problems.append(f"frame rate {h.fps_num}/{h.fps_den}")
    if not 1 <= h.num_scales <= MAX_SCALES or not 0 <= h.scales_sent <= h.num_scales:
        problems.append(f"{h.scales_sent} of {h.num_scales} scales")
    if not 0 <= h.window <= MAX_WINDOW:
        problems.append(f"attention window {h.window}")
    if not 1 <= h.coding_threads <= MAX_CODING_THREADS:
        problems.append(f"coding threads {h.coding_threads}")
    if problems:
        raise BitstreamError("stream header has impossible values: " + ", ".join(problems))


_check_header = check_header   # the old private name


DECODE_BATCH_PIXELS = 1 << 21   # the decoder's tokenizer works on at most this many pixels at once


def decode_batch(h: Header, most: int = 16) -> int:
    """Frames the tokenizer decodes at once: ``most``, fewer for big frames (at least 1)."""
    return max(1, min(most, DECODE_BATCH_PIXELS // (h.width * h.height)))


def decode_memory(h: Header, kv_bytes_per_token: int = 4096, pixel_bytes: int = 672,
                  frames_held: int | None = None) -> dict:
    """Estimated peak bytes of the big allocations a decode of ``h`` makes (a coarse upper bound).

    * video: the float32 frames held (``frames_held``, default all T; a streaming decode holds one
      GOP and a batch) x 3 x H x W x 4, and the copy made to write them;
    * tokens: int64 token maps of all K scales of the frames held (a sampler fills the unsent ones);
    * block mask: (n K)^2 booleans for a GOP of n frames (quadratic in GOP x scales);
    * attention cache: every coded block's keys and values of one GOP, ``kv_bytes_per_token`` per
      token (layers x 2 x width x 4 bytes: 4 KB for the shipped model);
    * tokenizer: ``decode_batch(h)`` frames decoded at once, ``pixel_bytes`` of activations per pixel
      (measured peak for the shipped tokenizer, width 32: 650 bytes per pixel).
    The codec passes its own per-token and per-pixel costs (``Codec.decode_costs``).
    """
    n = min(h.gop, h.num_frames)
    T, K = h.num_frames, h.num_scales
    held = T if frames_held is None else min(T, frames_held)
    tokens_per_frame = sum(a * b for a, b in h.schedule)
    return {"video": 2 * held * 3 * h.width * h.height * 4,
            "tokens": held * tokens_per_frame * 8,
            "block mask": (n * K) ** 2,
            "attention cache": n * tokens_per_frame * kv_bytes_per_token,
            "tokenizer": min(decode_batch(h), T) * h.width * h.height * pixel_bytes}


# ---- chunk checks ---------------------------------------------------------------------------------------
def _masks(h: Header, order: list[tuple[int, int]], stored: list[int]) -> list[int]:
    """mask(g, s) = CRC-16(header without scales_sent | varint g | varint s | previous stored check)."""
    base = binascii.crc_hqx(pack_header(dataclasses.replace(h, scales_sent=0)), 0xFFFF)
    out, prev = [], 0
    for (g, s), st in zip(order, stored):
        out.append(binascii.crc_hqx(put_varint(g) + put_varint(s) + struct.pack("<H", prev), base))
        prev = st
    return out


def _order(h: Header, scales: int | None = None) -> list[tuple[int, int]]:
    k = h.scales_sent if scales is None else scales
    return [(g, s) for s in range(k) for g in range(h.num_gops)]


# ---- whole stream -------------------------------------------------------------------------------------
def pack_chunk(strings: list[bytes]) -> bytes:
    return b"".join(put_varint(len(s)) for s in strings[:-1]) + b"".join(strings)


def unpack_chunk(chunk: bytes, num_strings: int, where: str) -> list[bytes]:
    r = Reader(chunk, where)
    lengths = [r.varint() for _ in range(num_strings - 1)]
    strings = [r.take(n) for n in lengths]
    return strings + [chunk[r.pos:]]


def write_stream(stream: Stream) -> bytes:
    """Header | table (lengths, masked chunk checks) | index CRC-16 | payload CRC-32 | data.

    ``stream.crcs`` are the plain CRC-16s of the tokens (``tokens_crc``); the masks are added here."""
    h = stream.header
    order = _order(h)
    out = bytearray(pack_header(h))
    stored, prev = [], 0
    base = binascii.crc_hqx(pack_header(dataclasses.replace(h, scales_sent=0)), 0xFFFF)
    for g, s in order:
        mask = binascii.crc_hqx(put_varint(g) + put_varint(s) + struct.pack("<H", prev), base)
        prev = stream.crcs[(g, s)] ^ mask
        stored.append(prev)
        out += put_varint(len(stream.chunks[(g, s)])) + struct.pack("<H", prev)
    out += struct.pack("<H", binascii.crc_hqx(bytes(out), 0xFFFF))
    payload = binascii.crc32(bytes(out))
    for key in order:
        payload = binascii.crc32(stream.chunks[key], payload)
    out += struct.pack("<I", payload)
    for key in order:
        out += stream.chunks[key]
    return bytes(out)


def read_stream(data: bytes, limits: Limits | None = None, strict: bool = False) -> Stream:
    """Parse and check a stream; ``stream.report`` says whether it is complete or which scales survive.

    Order: header structure, table size against the file, table, index CRC, header values, limits,
    chunk sizes, then the payload CRC-32 (complete streams) or the salvage of a cut (``strict``:
    refused). A cut leaves ``header.scales_sent`` = the most complete scales of any GOP (with a
    warning); nothing is allocated for what the header promises beyond what the bytes can hold."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise BitstreamError(f"expected the bytes of a .pgvc stream, got {type(data).__name__}")
    limits = DEFAULT_LIMITS if limits is None else limits
    data = bytes(data)
    r = Reader(data)
    h = unpack_header(r)
    # the table's size must be computable and fit the file before it is read
    if h.gop < 1 or h.num_frames < 1 or h.scales_sent > h.num_scales:
        check_header(h)
    entries = h.scales_sent * h.num_gops
    need = _TABLE_ENTRY_MIN * entries + _CHECK_BYTES
    if len(data) - r.pos < need:
        raise BitstreamError(f"stream is truncated (or its header corrupted): its chunk table and checks need "
                             f"at least {need} bytes after the {r.pos}-byte header, only {len(data) - r.pos} left")
    order = _order(h)
    lengths, stored = [], []
    for _ in order:
        lengths.append(r.varint())
        stored.append(r.unpack("H")[0])
    if len(data) - r.pos < _CHECK_BYTES:
        raise BitstreamError(f"stream is truncated inside its chunk table (at byte {len(data)})")
    index_end = r.pos
    (index_crc,) = r.unpack("H")
    if binascii.crc_hqx(data[:index_end], 0xFFFF) != index_crc:
        raise BitstreamError("stream header or chunk table is corrupted (index CRC-16 mismatch)")
    check_header(h)
    limits.check_header(h)
    (payload_crc,) = r.unpack("I")
    for (g, s), n in zip(order, lengths):
        if h.coder == "torchac" and n < h.gop_frames(g) - 1:   # n - 1 string lengths (see "Limits")
            raise BitstreamError(f"chunk (GOP {g}, scale {s}) is {n} bytes, too short to hold "
                                 f"{h.gop_frames(g)} frames; the stream is corrupted")
    total, left = sum(lengths), len(data) - r.pos
    if left > total:
        raise BitstreamError(f"stream has {left - total} unexpected bytes after its last chunk")
    masks = _masks(h, order, stored)
    stream = Stream(h)
    present = len(order)
    if left == total:
        if binascii.crc32(data[r.pos:], binascii.crc32(data[:index_end + 2])) != payload_crc:
            raise BitstreamError("stream is corrupted (payload CRC-32 mismatch)")
    else:
        if strict:
            raise BitstreamError(f"stream is truncated: {left} of {total} data bytes present (strict: cut "
                                 "streams are refused; without strict the complete scales are decoded)")
        acc, present = 0, 0
        for n in lengths:
            if acc + n > left:
                break
            acc, present = acc + n, present + 1
        if present == 0:
            where = "right after its chunk table" if left == 0 else f"inside its first chunk ({left} of {lengths[0]} bytes)"
            raise BitstreamError(f"stream was cut {where}: no scale of any GOP is complete, nothing to decode "
                                 f"({left} of {total} data bytes present)")
    per_gop = [0] * h.num_gops
    for i, ((g, s), n, st, m) in enumerate(zip(order, lengths, stored, masks)):
        if i >= present:
            break
        stream.chunks[(g, s)] = r.take(n)
        stream.crcs[(g, s)] = st ^ m
        per_gop[g] = s + 1
    stream.report = ReadReport(h.scales_sent, per_gop, [h.gop_frames(g) for g in range(h.num_gops)],
                               min(left, total), total)
    if stream.report.salvaged:
        warnings.warn(stream.report.summary())
        h.scales_sent = max(per_gop)
    return stream


def _boundaries(h: Header, table) -> list[int]:
    """Data offsets at which scales end (``table``: (g, s) -> (length, ...))."""
    out, acc = [], 0
    for s in range(h.scales_sent):
        acc += sum(table[(g, s)][0] for g in range(h.num_gops))
        out.append(acc)
    return out


def truncate(data: bytes, scales: int, mask_safe: bool | None = None) -> bytes:
    """Keep the first ``scales`` scales of a stream, without re-encoding. A cut stream can be truncated
    to scales that every GOP holds (the result is complete, with new checks).

    A stream of a mask that is not truncation safe (``NOT_TRUNCATION_SAFE_MASKS``, or ``mask_safe=False``
    for a user's own mask) is refused with a clear message, unless ``scales`` keeps all it has."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        stream = read_stream(data, limits=Limits(max_pixels=MAX_SIDE ** 2, max_frames=MAX_FRAMES, max_gop=65535))
    safe = mask_truncation_safe(stream.header.mask) if mask_safe is None else mask_safe
    if safe is False and (scales != stream.header.scales_sent or stream.report.salvaged):
        raise BitstreamError(f"this stream's mask {stream.header.mask!r} is not truncation safe: its blocks read "
                             f"finer scales of earlier frames, so it decodes only at the {stream.header.scales_sent} "
                             "scales it was encoded for; re-encode it with fewer scales (encode --scales K)")
    have = min(stream.report.scales_per_gop)
    if not 0 <= scales <= have:
        held = f"the stream has {stream.header.scales_sent}" if stream.report.complete else \
            f"the cut stream holds {have} in every GOP"
        raise BitstreamError(f"cannot keep {scales} scales: {held}")
    stream.header.scales_sent = scales
    stream.chunks = {key: v for key, v in stream.chunks.items() if key[1] < scales}
    return write_stream(stream)


def describe(data: bytes) -> dict:
    """Header fields, bytes per scale and per GOP, and the integrity report, for ``progvc-lab info``."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        stream = read_stream(data, limits=Limits(max_pixels=MAX_SIDE ** 2, max_frames=MAX_FRAMES, max_gop=65535))
    h, rep = stream.header, stream.report
    header_bytes = len(pack_header(dataclasses.replace(h, scales_sent=rep.scales_sent)))
    per_scale = [sum(len(stream.chunks.get((g, s), b"")) for g in range(h.num_gops)) for s in range(h.scales_sent)]
    per_gop = [sum(len(stream.chunks.get((g, s), b"")) for s in range(h.scales_sent)) for g in range(h.num_gops)]
    table_bytes = len(data) - rep.data_bytes - header_bytes           # table and the two CRCs
    incomplete = rep.data_bytes - sum(per_scale)                       # bytes of chunks cut short
    return {
        "version": h.version, "fingerprint": h.fingerprint.hex(), "width": h.width, "height": h.height,
        "fps": f"{h.fps_num}/{h.fps_den}", "num_frames": h.num_frames, "gop": h.gop,
        "num_gops": h.num_gops, "latent_hw": list(h.latent_hw), "schedule": [list(x) for x in h.schedule],
        "num_scales": h.num_scales, "scales_sent": rep.scales_sent, "quantizer": h.quantizer, "mask": h.mask,
        "window": h.window, "truncation_safe": mask_truncation_safe(h.mask), "coding_threads": h.coding_threads, "coder": h.coder, "copy_gate": h.copy_gate, "total_bytes": len(data),
        "header_bytes": header_bytes, "table_bytes": table_bytes, "bytes_per_scale": per_scale,
        "bytes_per_gop": per_gop, "bpp": len(data) * 8 / (h.num_frames * h.width * h.height),
        "incomplete_bytes": incomplete, "complete": rep.complete, "scales_per_gop": rep.scales_per_gop,
        "integrity": rep.summary(),
    }
