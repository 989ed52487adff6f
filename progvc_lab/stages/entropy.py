"""Entropy coding: model probabilities -> integer CDFs -> bytes (and back).

Arithmetic decoding works only if the decoder rebuilds *exactly* the encoder's CDFs. So the step from
logits to integers is one pure, documented function (``logits_to_cdf``) that both sides call::

    p    = softmax(logits in float64)
    freq = floor(p * (2^16 - V)) + 1        # every symbol keeps at least one count
    freq[argmax p] += 2^16 - sum(freq)      # leftover mass to the most likely symbol (lowest index on ties)
    cdf  = [0, cumsum(freq)]                # (L, V+1), last entry exactly 2^16

P frames may mix in a point mass on the previous frame's token first (``copy_symbols``, ``gate``):
``p = g * onehot(prev) + (1 - g) * p``, still in float64, still inside this one function.

Backends code one block's symbols (all CDFs of the block known up front) into one byte string.
``TorchacCoder`` wraps torchac (C++ arithmetic coder, 16-bit precision). The cost of a symbol is
-log2(freq / 2^16); ``model_bits`` reports that ideal next to the bytes actually written.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import torch

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
    freq_LV = torch.floor(p_LV * (TOTAL - V * min_count)).to(torch.int64) + min_count
    deficit_L = TOTAL - freq_LV.sum(-1)
    top_L = p_LV.argmax(-1)  # first maximal index on ties
    freq_LV[torch.arange(L), top_L] += deficit_L
    assert bool((freq_LV.sum(-1) == TOTAL).all()) and bool((freq_LV >= min_count).all())
    return torch.cat([torch.zeros(L, 1, dtype=torch.int64), freq_LV.cumsum(-1)], dim=-1)


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
        root = Path(__file__).resolve().parents[2]
        cache = root / ".cache" / "torch_extensions" if (root / "pyproject.toml").exists() else \
            Path.home() / ".cache" / "progvc_lab" / "torch_extensions"
        os.environ["TORCH_EXTENSIONS_DIR"] = str(cache)
    # build with the environment's own ninja: two ninja versions on PATH rebuild each other's output
    bindir = str(Path(sys.executable).parent)
    if (Path(bindir) / "ninja").exists() and bindir not in os.environ.get("PATH", "").split(os.pathsep):
        os.environ["PATH"] = bindir + os.pathsep + os.environ.get("PATH", "")


class TorchacCoder:
    """One torchac call per block. ~4.5 bits of termination overhead per call (see benchmarks)."""

    name = "torchac"

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
        V = cdf_LV1.shape[1] - 1
        sym = symbols_L.reshape(-1)
        if len(sym) != cdf_LV1.shape[0]:
            raise ValueError(f"{len(sym)} symbols but {cdf_LV1.shape[0]} CDFs")
        if len(sym) and (int(sym.min()) < 0 or int(sym.max()) >= V):
            raise ValueError(f"symbols must lie in [0, {V})")
        return self._torchac.encode_int16_normalized_cdf(self._as_torchac_cdf(cdf_LV1), sym.to(torch.int16))

    def decode(self, cdf_LV1: torch.Tensor, data: bytes) -> torch.Tensor:
        return self._torchac.decode_int16_normalized_cdf(self._as_torchac_cdf(cdf_LV1), data).to(torch.int64)


CODERS = {"torchac": TorchacCoder}
_instances: dict[str, object] = {}


def get_coder(name: str = "torchac"):
    if name not in CODERS:
        raise ValueError(f"unknown entropy coder {name!r}; available: {sorted(CODERS)}")
    if name not in _instances:
        _instances[name] = CODERS[name]()
    return _instances[name]
