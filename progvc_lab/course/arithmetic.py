"""Arithmetic coding from scratch: a short, readable coder on the codec's own integer CDFs.

::

    from progvc_lab.course.arithmetic import ArithmeticCoder
    coder = ArithmeticCoder()
    data = coder.encode(cdf_LV1, symbols_L)          # the same interface as torchac's coder
    assert torch.equal(coder.decode(cdf_LV1, data), symbols_L)

The coder keeps an interval [low, high] of 32-bit integers. Coding symbol v with counts
cdf[v] .. cdf[v+1] (out of T = 2^16) narrows it to the symbol's share::

    range = high - low + 1
    high  = low + range * cdf[v+1] // T - 1
    low   = low + range * cdf[v]   // T

and whenever the interval lies in one half of [0, 2^32) the leading bit of every number in it is
known: it is written and the interval doubled (renormalisation). An interval straddling the middle
but inside the middle half [2^30, 3 * 2^30) is doubled around the middle and the bit it will get is
remembered as "pending" (Witten, Neal & Cleary, 1987). At the end two more bits (plus the pending
ones) pick a number inside the final interval; the string is padded with zeros to whole bytes.

The bound on what that costs, for L symbols whose model bits (sum of -log2 freq/T) are B:

    bits written <= B + 2 + L * 2^-13        (then up to 7 bits of padding to a whole byte)

(+2: the termination; L * 2^-13: the integer division loses at most a factor 1 - 2^-14 of the range
per symbol, since range > 2^30 and T = 2^16.) torchac pays a few more bits per call, and one call per
block: a streaming coder that codes a whole scale of a GOP as one string pays the termination once.

The decoder mirrors the encoder: it keeps the same interval, reads 32 bits of the string as a number
``value`` inside it, and finds the symbol whose share holds ``value``. It must see **exactly** the
encoder's counts: change one count and the intervals part ways, every later symbol is garbage, and
nothing in the arithmetic notices (``TamperedDecoder``); the codec's per-chunk CRC of the tokens does.

The two steps a student writes in notebook 10 are separate functions (``interval_update``,
``decode_symbol``), and ``ArithmeticCoder(update=..., find=...)`` runs the coder with theirs.
"""
from __future__ import annotations

from bisect import bisect_right
from contextlib import contextmanager
from typing import Callable

import numpy as np
import torch

PRECISION = 32
FULL = 1 << PRECISION
HALF = FULL >> 1
QUARTER = FULL >> 2
TOTAL = 1 << 16
NAME = "course_ac"


def interval_update(low: int, high: int, cdf_lo: int, cdf_hi: int, total: int = TOTAL) -> tuple[int, int]:
    """The new [low, high] after coding a symbol with counts [cdf_lo, cdf_hi) of ``total``: integer
    arithmetic only, both ends inclusive."""
    span = high - low + 1
    return low + span * cdf_lo // total, low + span * cdf_hi // total - 1


def decode_symbol(value: int, low: int, high: int, cdf_row: list[int], total: int = TOTAL) -> int:
    """The symbol v whose share of [low, high] holds ``value``: the largest v with
    cdf[v] <= target, target = ((value - low + 1) * total - 1) // (high - low + 1). This target is the
    largest count c with low + span * c // total <= value, i.e. exactly what ``interval_update`` does."""
    span = high - low + 1
    target = ((value - low + 1) * total - 1) // span
    return bisect_right(cdf_row, target) - 1


def bound_bits(model_bits: float, num_symbols: int) -> float:
    """The most bits the coder writes before the padding to whole bytes (see the module docstring)."""
    return model_bits + 2 + num_symbols * 2.0 ** -13


class ArithmeticCoder:
    """An arithmetic coder on integer CDFs (L, V+1) summing to 2^16: ``encode(cdf, symbols) -> bytes``,
    ``decode(cdf, data) -> symbols``, the interface of ``stages.entropy.TorchacCoder``.

    ``update`` and ``find`` replace ``interval_update`` and ``decode_symbol`` (the notebook's
    exercises plug in the student's versions)."""

    name = NAME
    per_block_strings = True   # a chunk holds one string per block, as with torchac

    def __init__(self, update: Callable = interval_update, find: Callable = decode_symbol):
        self.update, self.find = update, find

    # ---- the codec's chunk interface: one string per block, packed as torchac's are ------------------
    def chunk_encoder(self):
        return _BlockStrings(self)

    def chunk_decoder(self, chunk: bytes, num_blocks: int, where: str = "chunk"):
        from .. import bitstream

        return _BlockReader(self, bitstream.unpack_chunk(chunk, num_blocks, where))

    # ---- encoder --------------------------------------------------------------------------------------
    def encode(self, cdf_LV1: torch.Tensor, symbols_L: torch.Tensor) -> bytes:
        cdf = cdf_LV1.tolist()
        sym = symbols_L.reshape(-1).tolist()
        if len(sym) != len(cdf):
            raise ValueError(f"{len(sym)} symbols but {len(cdf)} CDFs")
        bits: list[int] = []
        pending = 0

        def emit(bit: int):
            nonlocal pending
            bits.append(bit)
            bits.extend([1 - bit] * pending)
            pending = 0

        low, high = 0, FULL - 1
        for row, v in zip(cdf, sym):
            if not 0 <= v < len(row) - 1 or row[v + 1] <= row[v]:
                raise ValueError(f"symbol {v} has no counts in its CDF (every coded symbol needs >= 1)")
            low, high = self.update(low, high, row[v], row[v + 1], row[-1])
            while True:
                if high < HALF:                       # both ends in the lower half: the next bit is 0
                    emit(0)
                elif low >= HALF:                     # both in the upper half: 1
                    emit(1)
                    low, high = low - HALF, high - HALF
                elif low >= QUARTER and high < HALF + QUARTER:   # straddles the middle, narrowly
                    pending += 1
                    low, high = low - QUARTER, high - QUARTER
                else:
                    break
                low, high = 2 * low, 2 * high + 1
        pending += 1                                  # termination: a number inside [low, high]
        emit(0 if low < QUARTER else 1)
        return np.packbits(np.array(bits, dtype=np.uint8)).tobytes()

    # ---- decoder --------------------------------------------------------------------------------------
    def decode(self, cdf_LV1: torch.Tensor, data: bytes) -> torch.Tensor:
        cdf = cdf_LV1.tolist()
        bits = np.unpackbits(np.frombuffer(bytes(data), dtype=np.uint8)).tolist()
        pos = 0

        def next_bit() -> int:                        # past the end of the string: zeros
            nonlocal pos
            pos += 1
            return bits[pos - 1] if pos <= len(bits) else 0

        value = 0
        for _ in range(PRECISION):
            value = 2 * value + next_bit()
        low, high = 0, FULL - 1
        out = []
        for row in cdf:
            v = min(max(self.find(value, low, high, row, row[-1]), 0), len(row) - 2)   # garbage stays in range
            out.append(v)
            low, high = self.update(low, high, row[v], row[v + 1], row[-1])
            while True:
                if high < HALF:
                    pass
                elif low >= HALF:
                    low, high, value = low - HALF, high - HALF, value - HALF
                elif low >= QUARTER and high < HALF + QUARTER:
                    low, high, value = low - QUARTER, high - QUARTER, value - QUARTER
                else:
                    break
                low, high, value = 2 * low, 2 * high + 1, 2 * value + next_bit()
        return torch.tensor(out, dtype=torch.int64)

    # ---- the "break it" experiment ----------------------------------------------------------------------
    @contextmanager
    def tampered(self, call: int = 0, row: int = 0):
        """Inside the block, the ``call``-th ``decode`` (counting from 0) sees one count moved in CDF row
        ``row`` (``move_one_count``): what a decoder whose floats differ in one place would compute."""
        original = self.decode
        calls = {"n": 0}

        def decode(cdf_LV1, data):
            if calls["n"] == call:      # one count of the symbol this row really holds goes elsewhere
                r = min(row, cdf_LV1.shape[0] - 1)
                cdf_LV1 = move_one_count(cdf_LV1, r, symbol=int(original(cdf_LV1, data)[r]))
                calls["tampered"] = (call, r)
            calls["n"] += 1
            return original(cdf_LV1, data)

        self.decode = decode
        try:
            yield calls
        finally:
            self.decode = original


class _BlockStrings:
    def __init__(self, coder):
        self.coder, self.strings = coder, []

    def add(self, cdf_LV1, symbols_L):
        self.strings.append(self.coder.encode(cdf_LV1, symbols_L))

    def finish(self) -> bytes:
        from .. import bitstream

        return bitstream.pack_chunk(self.strings)


class _BlockReader:
    def __init__(self, coder, strings):
        self.coder, self.strings, self.t = coder, strings, 0

    def next(self, cdf_LV1):
        sym = self.coder.decode(cdf_LV1, self.strings[self.t])
        self.t += 1
        return sym


def move_one_count(cdf_LV1: torch.Tensor, row: int = 0, symbol: int | None = None) -> torch.Tensor:
    """A copy of the CDFs with ONE count moved in ``row``, so that ``symbol``'s share changes (default:
    the row's most likely symbol): one count from it to its neighbour, or, if it has a single count,
    one count to it from the most likely symbol. Still a valid CDF (sums to 2^16, every count >= 1)."""
    cdf = cdf_LV1.clone()
    freq = cdf[row, 1:] - cdf[row, :-1]
    v = int(freq.argmax()) if symbol is None else symbol
    if int(freq[v]) >= 2:
        w = v + 1 if v + 1 < len(freq) else v - 1
        freq[v] -= 1
        freq[w] += 1
    else:
        freq[int(freq.argmax())] -= 1
        freq[v] += 1
    cdf[row, 1:] = freq.cumsum(0)
    return cdf


def register() -> ArithmeticCoder:
    """Make the course coder available to ``Codec(..., coder="course_ac")`` and to every decoder in this
    process (``stages.entropy.CODERS``; the stream header stores the coder's name). Returns the
    instance the codec uses (``get_coder("course_ac")``)."""
    from ..stages import entropy

    entropy.CODERS.setdefault(NAME, ArithmeticCoder)
    return entropy.get_coder(NAME)


def coder_overhead(coders: dict, vocab: int = 512, lengths=(1, 16, 256), repeats: int = 10,
                   seed: int = 0) -> list[dict]:
    """Bits beyond the model bits per call, for each coder in ``coders`` (name -> object with
    ``encode(cdf, symbols)``), on the same random peaked distributions and symbols: rows
    {symbols, model_bits, <name>: overhead bits per call, ...} plus our coder's bound."""
    from ..stages.entropy import logits_to_cdf, model_bits

    gen = torch.Generator().manual_seed(seed)
    rows = []
    for L in lengths:
        row = {"symbols": L, "model_bits": 0.0, **{name: 0.0 for name in coders}}
        for _ in range(repeats):
            logits = torch.randn(L, vocab, generator=gen) * 3
            cdf = logits_to_cdf(logits)
            sym = torch.multinomial(torch.softmax(logits.double(), -1), 1, generator=gen).squeeze(1)
            ideal = model_bits(cdf, sym)
            row["model_bits"] += ideal / repeats
            for name, coder in coders.items():
                row[name] += (8 * len(coder.encode(cdf, sym)) - ideal) / repeats
        row["bound"] = bound_bits(0.0, L) + 7      # + padding to a whole byte
        rows.append(row)
    return rows


class StreamingCoder:
    """One string for many blocks: ``encode_blocks([(cdf, symbols), ...])`` codes them all with one
    termination (what a streaming range coder buys; here simply our coder on the concatenated rows).
    Possible only when the decoder can compute every block's CDFs in order, as the codec's walk does."""

    def __init__(self, coder: ArithmeticCoder | None = None):
        self.coder = coder or ArithmeticCoder()

    def encode_blocks(self, blocks) -> bytes:
        return self.coder.encode(torch.cat([c for c, _ in blocks]), torch.cat([s.reshape(-1) for _, s in blocks]))


@torch.no_grad()
def decode_tokens(codec, data: bytes, coder=None) -> list[torch.Tensor]:
    """The codec's decoder loop, written out, with any coder (default: ours): bytes -> the sent tokens
    per scale (T, h_s, w_s). Checks every chunk's CRC exactly as ``Codec.decode`` does.

    Per GOP: a fresh coding walk (``codec.walk``) whose ``blocks`` visit the blocks in the one coding
    order; each block carries the context model's logits turned into the integer CDFs (``block.cdf``),
    and the coder gives the block's symbols. The tokens it returns are the context of all later blocks, which
    is why one wrong count spoils everything after it."""
    from .. import bitstream
    from ..codec import deterministic, tokens_bytes

    coder = coder or ArithmeticCoder()
    stream = bitstream.read_stream(data)
    h = stream.header
    if h.coder not in ("torchac", NAME):
        raise ValueError(f"decode_tokens reads one string per block; this stream's coder {h.coder!r} writes one "
                         "per chunk: encode with coder='torchac' (or 'course_ac')")
    k = h.scales_sent
    out = [[] for _ in range(k)]
    with deterministic(codec.config.coding_threads):
        for g in range(h.num_gops):
            n = h.gop_frames(g)
            strings = {s: bitstream.unpack_chunk(stream.chunks[(g, s)], n, f"chunk (GOP {g}, scale {s})")
                       for s in range(k)}
            walk = codec.walk(h.latent_hw, h.schedule, n, h.copy_gate, gop=g, start=g * h.gop)
            for block in walk.blocks(range(k)):
                block.symbols = coder.decode(block.cdf, strings[block.s][block.t])
            for s in range(k):
                if bitstream.tokens_crc(tokens_bytes(walk.token_map(s))) != stream.crcs[(g, s)]:
                    raise bitstream.BitstreamError(f"chunk (GOP {g}, scale {s}) is corrupted: its tokens fail "
                                                   "the CRC")
                out[s].append(walk.token_map(s))
    return [torch.cat(x) for x in out]


class RecordingCoder:
    """Wraps a coder and keeps every block it decodes: ``blocks[i] = (cdf, symbols)`` in decode order
    (``decode_tokens(codec, data, RecordingCoder())``), to re-code them in other ways."""

    def __init__(self, coder=None):
        self.coder = coder or ArithmeticCoder()
        self.blocks: list[tuple[torch.Tensor, torch.Tensor]] = []

    def decode(self, cdf_LV1, data):
        sym = self.coder.decode(cdf_LV1, data)
        self.blocks.append((cdf_LV1.clone(), sym))
        return sym

    def encode(self, cdf_LV1, symbols_L):
        return self.coder.encode(cdf_LV1, symbols_L)


def streaming_bytes_per_scale(codec, data: bytes) -> dict:
    """What one string per chunk (a scale of a GOP) would cost against one string per block, per scale:
    {"per_block": [...], "per_chunk": [...]} bytes (strings only, no length fields), from the stream's own
    CDFs and tokens. The walk is scale-major: the blocks of scale s of a GOP come one after another."""
    from .. import bitstream

    h = bitstream.read_stream(data).header
    rec = RecordingCoder()
    decode_tokens(codec, data, rec)
    per_block = [0] * h.scales_sent
    per_chunk = [0] * h.scales_sent
    i = 0
    stream = StreamingCoder(rec.coder)
    for g in range(h.num_gops):
        n = h.gop_frames(g)
        for s in range(h.scales_sent):
            blocks = rec.blocks[i:i + n]
            i += n
            per_block[s] += sum(len(rec.coder.encode(c, y)) for c, y in blocks)
            per_chunk[s] += len(stream.encode_blocks(blocks))
    return {"per_block": per_block, "per_chunk": per_chunk}
