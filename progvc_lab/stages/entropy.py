"""Entropy coding: model probabilities -> integer CDFs -> bytes (and back).

Arithmetic decoding works only if the decoder rebuilds *exactly* the encoder's CDFs. So the step from
logits to integers is one pure, documented function (``logits_to_cdf``) that both sides call::

    p    = softmax(logits in float64)
    freq = floor(p * (2^16 - V)) + 1        # every symbol keeps at least one count
    freq[argmax p] += 2^16 - sum(freq)      # leftover mass to the most likely symbol (lowest index on ties)
    cdf  = [0, cumsum(freq)]                # (L, V+1), last entry exactly 2^16

P frames may mix in a point mass on the previous frame's token first (``copy_symbols``, ``gate``):
``p = g * onehot(prev) + (1 - g) * p``, still in float64, still inside this one function.

The codec writes one **chunk** per (GOP, scale): the blocks (t, s) of all frames t of that GOP at that
scale, in frame order. Each backend turns a chunk into bytes through the same two small objects::

    w = coder.chunk_encoder();  w.add(cdf_LV1, symbols_L) for t = 0..n-1;  chunk = w.finish()
    r = coder.chunk_decoder(chunk, n, where);  symbols_L = r.next(cdf_LV1) for t = 0..n-1

The decoder learns block t's CDFs only after decoding block t-1 (the context model reads frame t-1's
tokens), so a backend must decode incrementally, block by block, in the encoder's order.

* ``TorchacCoder`` ("torchac"): one torchac call per block (a C++ arithmetic coder, 16-bit CDFs); the
  chunk is ``bitstream.pack_chunk`` of the n strings (varint lengths, then the strings). Every call
  ends with a termination of a few bits and every string but the last costs a length field, which
  is what the small blocks (1x1, 2x2) mostly pay at low rates.
* ``ConstrictionCoder`` ("constriction"): one range coder (the ``constriction`` package's
  ``RangeEncoder``, 32-bit words, FIFO) for the whole chunk: blocks are appended to one stream and
  decoded incrementally, so a chunk pays one termination and no length fields. The integer
  frequencies are handed over as probabilities ``freq / 2^16`` (exact in float64), which constriction
  maps to its own 24-bit fixed-point model deterministically on both sides. Trailing zero bytes of
  the last word are dropped (the decoder reads missing bytes as zeros).

The cost of a symbol is -log2(freq / 2^16); ``model_bits`` reports that ideal next to the bytes
actually written (``progvc-lab bench`` prints both, per coder).
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import torch

from .registry import register, table

PRECISION = 16
TOTAL = 1 << PRECISION


def logits_to_cdf(logits_LV: torch.Tensor, min_count: int = 1, copy_symbols: torch.Tensor | None = None,
                  gate=None) -> torch.Tensor:
    """Integer CDFs (L, V+1) int64 from logits (L, V). Deterministic; see module docstring.

    ``min_count=1`` for coding (every symbol must stay codable); the detail sampler passes 0 so that
    ids it excluded (top-k) really have probability zero.

    ``copy_symbols`` (L,) and ``gate`` (a float or (L,) float64 in [0, 1)): the copy mixture
    ``p = gate * onehot(copy_symbols) + (1 - gate) * softmax(logits)``, mixed in float64 before the
    integer step (the copy-aware probabilities of P frames, see ``codec.copy_gate``). ``gate=None``
    or ``copy_symbols=None``: the plain softmax.
    """
    L, V = logits_LV.shape
    if V > TOTAL // 2:
        raise ValueError(f"vocabulary of {V} symbols does not fit a {PRECISION}-bit CDF")
    p_LV = torch.softmax(logits_LV.to(torch.float64), dim=-1)
    if copy_symbols is not None and gate is not None:
        g_L = torch.as_tensor(gate, dtype=torch.float64).expand(L).reshape(L, 1)
        p_LV = (1 - g_L) * p_LV
        p_LV.scatter_add_(1, copy_symbols.reshape(L, 1).long(), g_L)
    # floor(p * (TOTAL - V min_count)) + min_count, then the deficit to the (first) most probable symbol;
    # in-place steps on fresh tensors and a cumsum written into the output (fewer passes over the (L, V)
    # arrays than the out-of-place form; integer for integer the same CDF, tests/test_stages.py)
    freq_LV = (p_LV * (TOTAL - V * min_count)).floor_().to(torch.int64).add_(min_count)
    top_L1 = p_LV.argmax(-1, keepdim=True)  # first maximal index on ties
    freq_LV.scatter_add_(1, top_L1, TOTAL - freq_LV.sum(-1, keepdim=True))
    # every other symbol has >= min_count by construction; the sums are TOTAL by construction
    assert bool((freq_LV.gather(1, top_L1) >= min_count).all())
    cdf_LV1 = freq_LV.new_zeros(L, V + 1)
    torch.cumsum(freq_LV, -1, out=cdf_LV1[:, 1:])
    return cdf_LV1


def cdf_to_freq(cdf_LV1: torch.Tensor) -> torch.Tensor:
    return cdf_LV1[:, 1:] - cdf_LV1[:, :-1]


def code_lengths(cdf_LV1: torch.Tensor) -> torch.Tensor:
    """Ideal code length of every symbol under the integer CDFs: -log2(freq / 2^16), (L, V) float64."""
    return PRECISION - cdf_to_freq(cdf_LV1).double().log2()


def symbol_bits(cdf_LV1: torch.Tensor, symbols_L: torch.Tensor) -> torch.Tensor:
    """Ideal code length of each symbol under the integer CDFs: -log2(freq / 2^16), (L,) float64."""
    freq = cdf_to_freq(cdf_LV1).gather(1, symbols_L.reshape(-1, 1).long()).double()
    return -(freq / TOTAL).log2().squeeze(1)


def model_bits(cdf_LV1: torch.Tensor, symbols_L: torch.Tensor) -> float:
    """Ideal code length of ``symbols`` under the integer CDFs (sum of ``symbol_bits``)."""
    return float(symbol_bits(cdf_LV1, symbols_L).sum())


def _ensure_extension_dir():
    # torchac compiles C++ at first import; keep the build in the project's cache so it happens once.
    if "TORCH_EXTENSIONS_DIR" not in os.environ:
        from ..resources import cache_dir  # the one place that knows the folders (no torch, no codec)

        os.environ["TORCH_EXTENSIONS_DIR"] = str(cache_dir("torch_extensions"))
    # build with the environment's own ninja: two ninja versions on PATH rebuild each other's output
    bindir = str(Path(sys.executable).parent)
    if (Path(bindir) / "ninja").exists() and bindir not in os.environ.get("PATH", "").split(os.pathsep):
        os.environ["PATH"] = bindir + os.pathsep + os.environ.get("PATH", "")


def _check_symbols(cdf_LV1: torch.Tensor, symbols_L: torch.Tensor) -> torch.Tensor:
    V = cdf_LV1.shape[1] - 1
    sym = symbols_L.reshape(-1)
    if len(sym) != cdf_LV1.shape[0]:
        raise ValueError(f"{len(sym)} symbols but {cdf_LV1.shape[0]} CDFs")
    if len(sym) and (int(sym.min()) < 0 or int(sym.max()) >= V):
        raise ValueError(f"symbols must lie in [0, {V})")
    return sym


class _StringsWriter:
    """A chunk as one coded string per block (torchac)."""

    def __init__(self, coder):
        self.coder, self.strings = coder, []

    def add(self, cdf_LV1, symbols_L):
        self.strings.append(self.coder.encode(cdf_LV1, symbols_L))

    def finish(self) -> bytes:
        from ..bitstream import pack_chunk

        return pack_chunk(self.strings)


class _StringsReader:
    def __init__(self, coder, chunk: bytes, num_blocks: int, where: str):
        from ..bitstream import unpack_chunk

        self.coder, self.strings, self.t = coder, unpack_chunk(chunk, num_blocks, where), 0

    def next(self, cdf_LV1) -> torch.Tensor:
        sym = self.coder.decode(cdf_LV1, self.strings[self.t])
        self.t += 1
        return sym


@register("entropy_coder", "torchac")
class TorchacCoder:
    """One torchac call per block. ~4.5 bits of termination overhead per call (see benchmarks)."""

    name = "torchac"
    per_block_strings = True   # a chunk holds one string per block (``course.block_bytes`` reads them)

    def chunk_encoder(self) -> _StringsWriter:
        return _StringsWriter(self)

    def chunk_decoder(self, chunk: bytes, num_blocks: int, where: str = "chunk") -> _StringsReader:
        return _StringsReader(self, chunk, num_blocks, where)

    def __init__(self):
        _ensure_extension_dir()
        # silence the build log (ninja runs as a subprocess, so redirect the file descriptor itself)
        sys.stdout.flush()
        saved, devnull = os.dup(1), os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, 1)
            import torchac
        finally:
            os.dup2(saved, 1)
            os.close(saved)
            os.close(devnull)
        self._torchac = torchac

    @staticmethod
    def _as_torchac_cdf(cdf_LV1: torch.Tensor) -> torch.Tensor:
        # torchac reads uint16 and treats the top (2^16) implicitly: store it modulo 2^16, as int16.
        return torch.from_numpy((cdf_LV1.numpy() & 0xFFFF).astype(np.uint16).view(np.int16))

    def encode(self, cdf_LV1: torch.Tensor, symbols_L: torch.Tensor) -> bytes:
        sym = _check_symbols(cdf_LV1, symbols_L)
        return self._torchac.encode_int16_normalized_cdf(self._as_torchac_cdf(cdf_LV1), sym.to(torch.int16))

    def decode(self, cdf_LV1: torch.Tensor, data: bytes) -> torch.Tensor:
        return self._torchac.decode_int16_normalized_cdf(self._as_torchac_cdf(cdf_LV1), data).to(torch.int64)


def _probabilities(cdf_LV1: torch.Tensor) -> np.ndarray:
    """Integer frequencies as float64 probabilities freq / 2^16 (exact), the form constriction takes."""
    return np.ascontiguousarray(cdf_to_freq(cdf_LV1).numpy().astype(np.float64) / TOTAL)


class _RangeWriter:
    def __init__(self, cc):
        self.cc, self.encoder = cc, cc.queue.RangeEncoder()

    def add(self, cdf_LV1, symbols_L):
        sym = _check_symbols(cdf_LV1, symbols_L)
        self.encoder.encode(sym.numpy().astype(np.int32), self.cc.family, _probabilities(cdf_LV1))

    def finish(self) -> bytes:
        return self.encoder.get_compressed().astype(">u4").tobytes().rstrip(b"\0")


class _RangeReader:
    def __init__(self, cc, chunk: bytes, where: str):
        words = np.frombuffer(bytes(chunk) + b"\0" * (-len(chunk) % 4), dtype=">u4").astype(np.uint32)
        self.cc, self.where = cc, where
        self.decoder = cc.queue.RangeDecoder(words)

    def next(self, cdf_LV1) -> torch.Tensor:
        sym = self.decoder.decode(self.cc.family, _probabilities(cdf_LV1))
        return torch.from_numpy(np.asarray(sym, dtype=np.int64))


@register("entropy_coder", "constriction")
class ConstrictionCoder:
    """One range coder per chunk (all frames of one scale of one GOP); see the module docstring."""

    name = "constriction"
    per_block_strings = False

    def __init__(self):
        try:
            import constriction
        except ImportError as e:
            raise RuntimeError("the 'constriction' entropy coder needs the constriction package: "
                               "pip install constriction (or the progvc_lab[coder] extra)") from e
        self.queue = constriction.stream.queue
        self.family = constriction.stream.model.Categorical(perfect=False)

    def chunk_encoder(self) -> _RangeWriter:
        return _RangeWriter(self)

    def chunk_decoder(self, chunk: bytes, num_blocks: int, where: str = "chunk") -> _RangeReader:
        return _RangeReader(self, chunk, where)

    def encode(self, cdf_LV1: torch.Tensor, symbols_L: torch.Tensor) -> bytes:
        """One block alone as a chunk (for comparisons with torchac's per-call cost)."""
        w = self.chunk_encoder()
        w.add(cdf_LV1, symbols_L)
        return w.finish()

    def decode(self, cdf_LV1: torch.Tensor, data: bytes) -> torch.Tensor:
        return self.chunk_decoder(data, 1).next(cdf_LV1)


CODERS = table("entropy_coder")  # name -> coder class: the registry's own table (register adds to it)
_instances: dict[str, object] = {}


def get_coder(name: str = "torchac"):
    if name not in CODERS:
        raise ValueError(f"unknown entropy coder {name!r}; available: {sorted(CODERS)}")
    if name not in _instances:
        _instances[name] = CODERS[name]()
    return _instances[name]
