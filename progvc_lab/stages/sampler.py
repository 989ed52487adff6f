"""Detail sampler: fills the fine scales a truncated stream did not carry.

A stream cut after k scales gives the decoder tokens for scales 0..k-1. For scales k..K-1 it can:

* ``zero``    send nothing: f_hat stops at scale k (no residual detail; smooth, blurry frames);
* ``argmax``  let the context model guess the most likely token everywhere (often flat);
* ``sample``  draw tokens from the model, sharpened by a temperature and restricted to the top-k most
              likely ids, to restore plausible texture. Draws come from the *integer* CDF with a
              generator seeded by (seed, gop, t, s), so the same stream and seed give the same video.

The sampler only chooses tokens; the context model's ``block_logits`` produces the probabilities.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .entropy import TOTAL, logits_to_cdf


@dataclass
class DetailSampler:
    mode: str = "zero"           # "zero" | "argmax" | "sample"
    temperature: float = 1.0     # < 1 sharper, > 1 flatter (sample only)
    top_k: int = 0               # keep the k most likely ids (0 = all)
    seed: int = 0

    def __post_init__(self):
        if self.mode not in ("zero", "argmax", "sample"):
            raise ValueError(f"unknown sampler {self.mode!r}; choose zero, argmax or sample")
        if self.temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0, got {self.top_k}")

    @property
    def predicts(self) -> bool:
        """Whether the sampler needs the context model at all (zero-fill does not)."""
        return self.mode != "zero"

    def choose(self, logits_LV: torch.Tensor, gop: int, t: int, s: int) -> torch.Tensor:
        """Token ids (L,) for one block from its logits."""
        if self.mode == "argmax":
            return logits_LV.argmax(-1)
        logits = logits_LV.double() / self.temperature
        if self.top_k and self.top_k < logits.shape[-1]:
            kth = logits.topk(self.top_k, dim=-1).values[:, -1:]
            logits = logits.masked_fill(logits < kth, float("-inf"))
        cdf = logits_to_cdf(logits, min_count=0)
        gen = torch.Generator().manual_seed(hash_seed(self.seed, gop, t, s))
        u = torch.randint(0, TOTAL, (cdf.shape[0], 1), generator=gen)
        # inverse CDF: the symbol whose interval [cdf[i], cdf[i+1]) holds u
        return torch.searchsorted(cdf[:, 1:].contiguous(), u, right=True).squeeze(1)


def hash_seed(*parts: int) -> int:
    """A stable 63-bit seed from integers (Python's hash() is salted per process; this is not)."""
    h = 1469598103934665603
    for p in parts:
        h = ((h ^ (int(p) & 0xFFFFFFFF)) * 1099511628211) & ((1 << 63) - 1)
    return h
