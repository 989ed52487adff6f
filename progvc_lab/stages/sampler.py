"""Detail sampler: fills the fine scales a truncated stream did not carry.

A stream cut after k scales gives the decoder tokens for scales 0..k-1. For scales k..K-1 it can:

* ``zero``    send nothing: f_hat stops at scale k (no residual detail; smooth, blurry frames);
* ``argmax``  let the context model guess the most likely token everywhere;
* ``mean``    the expected code vector ``E[e] = sum_v p(v) codebook[v]`` under the model's distribution
              (temperature 1, all ids) per position: the model's MMSE estimate of the residual. It is
              not a token, so the decoder adds ``phi_s(up(E[e]))`` in latent space
              (``MultiScaleResidualQuantizer.tokens_to_latent(..., codes=...)``); the sent scales stay
              token-exact. Context for the next unsent scale: the expected latent itself (the context
              model's input is a latent, so it can take it; ``mean_context="latent"``, default) or the
              argmax tokens (``mean_context="argmax"``). The previous-frame input of the context model
              needs token ids: it gets the argmax tokens, which ``decode_tokens`` also returns for the
              filled scales of a ``mean`` decode.
* ``sample``  draw tokens from the model, sharpened by a temperature (one value, or one per scale:
              coarse scales can be drawn cooler than fine ones) and restricted to the top-k most likely
              ids and/or the top-p nucleus (the fewest most likely ids whose probability reaches p), to
              restore plausible texture. Draws come from the *integer* CDF with a generator seeded by
              (seed, gop, t, s), so the same stream and seed give the same video.
* ``copy``    ``sample`` in the first frame of a GOP; in P frames, frame t-1's filled token wherever the
              co-located token one scale coarser did not change between t-1 and t (a still region), a
              fresh draw elsewhere: temporally consistent fills instead of independent draws per frame.

Which to use (measured on the shipped tiny model, Foreman and Akiyo, k = 2..4, equal bytes;
``benchmarks/sampler_study.py``, rerun it for a retrained model): ``zero`` is best for PSNR-Y and
MS-SSIM at every cut (no fill beat it on MS-SSIM); every fill beats zero on ST-LPIPS and the texture
ratio. ``sample`` at temperature 1, no top-k, is best for ST-LPIPS, GMSD and texture but flickers;
``copy`` gets about the same ST-LPIPS without flicker; ``mean`` is the fill with the least MS-SSIM loss
on static content (Akiyo) but flickers there; ``argmax`` is stable but costs MS-SSIM. The defaults
``temperature=0.8, top_k=20`` are the measured compromise for ``sample`` (Foreman k = 2: zero's MS-SSIM,
ST-LPIPS 0.77 instead of 1.01), not a uniform win.

The sampler only chooses tokens (or, for ``mean``, probabilities); the context model's
``block_logits`` produces the logits.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import torch

from .entropy import TOTAL, logits_to_cdf
from .registry import register

MODES = ("zero", "argmax", "mean", "sample", "copy")


@dataclass
class DetailSampler:
    mode: str = "zero"           # "zero" | "argmax" | "mean" | "sample" | "copy"
    # < 1 sharper, > 1 flatter (sample and copy); measured default. One value for every scale, or a
    # sequence with one per scale s = 0, 1, ... (scales past its end use its last value)
    temperature: float | tuple[float, ...] = 0.8
    top_k: int = 20              # keep the k most likely ids (0 = all) (sample and copy); measured default
    seed: int = 0
    mean_context: str = "latent"  # mean only: "latent" (expected latent) | "argmax" (tokens) as context
    top_p: float = 1.0           # nucleus (sample and copy): keep the fewest most likely ids whose
                                 # probability (after temperature and top-k) reaches top_p; 1 = all

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"unknown sampler {self.mode!r}; choose one of {', '.join(MODES)}")
        temps = self.temperature if isinstance(self.temperature, (list, tuple)) else (self.temperature,)
        if not temps:
            raise ValueError("temperature: give one value or one per scale, got an empty sequence")
        for tau in temps:
            if isinstance(tau, bool) or not isinstance(tau, (int, float)) or not tau > 0 or tau == float("inf"):
                raise ValueError(f"temperature must be > 0 and finite, got {self.temperature}")
        if isinstance(self.temperature, list):
            self.temperature = tuple(self.temperature)
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0, got {self.top_k}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.mean_context not in ("latent", "argmax"):
            raise ValueError(f"mean_context must be 'latent' or 'argmax', got {self.mean_context!r}")

    def temperature_at(self, s: int) -> float:
        """The temperature for scale s (a per-scale sequence repeats its last value past its end)."""
        if isinstance(self.temperature, tuple):
            return float(self.temperature[min(s, len(self.temperature) - 1)])
        return float(self.temperature)

    @property
    def name(self) -> str:
        """The registry name (``registry.get("detail_sampler", name)`` makes this sampler)."""
        return self.mode

    @property
    def config(self) -> "DetailSampler":
        """The sampler's settings: the dataclass itself."""
        return self

    @property
    def predicts(self) -> bool:
        """Whether the sampler needs the context model at all (zero-fill does not)."""
        return self.mode != "zero"

    @property
    def latent_fill(self) -> bool:
        """Whether the fill is a latent (expected code vectors) rather than tokens."""
        return self.mode == "mean"

    @staticmethod
    def probabilities(logits_LV: torch.Tensor) -> torch.Tensor:
        """The model's distribution (L, V) float64 that ``mean`` takes the expectation under."""
        return torch.softmax(logits_LV.double(), dim=-1)

    def choose(self, logits_LV: torch.Tensor, gop: int, t: int, s: int, prev_L: torch.Tensor | None = None,
               still_L: torch.Tensor | None = None) -> torch.Tensor:
        """Token ids (L,) for one block from its logits.

        ``prev_L``: frame t-1's filled tokens at this scale (None in the first frame of a GOP);
        ``still_L`` (bool): where the co-located coarser token did not change from t-1 to t. Only
        ``copy`` reads them. For ``mean`` this is the argmax token (the stand-in used as context).
        """
        if self.mode in ("argmax", "mean"):
            return logits_LV.argmax(-1)
        tok = self._draw(logits_LV, gop, t, s)
        if self.mode == "copy" and prev_L is not None:
            keep = torch.ones_like(tok, dtype=torch.bool) if still_L is None else still_L.reshape(-1).bool()
            tok = torch.where(keep, prev_L.reshape(-1).to(tok.dtype), tok)
        return tok

    def filtered_logits(self, logits_LV: torch.Tensor, s: int) -> torch.Tensor:
        """(L, V) float64 logits after the temperature of scale s, top-k and top-p: what ``sample``
        draws from (``-inf`` = never drawn). Ties at the top-k / top-p boundary are all kept, so the
        result does not depend on how a sort orders equal values."""
        logits = logits_LV.double() / self.temperature_at(s)
        if self.top_k and self.top_k < logits.shape[-1]:
            kth = logits.topk(self.top_k, dim=-1).values[:, -1:]
            logits = logits.masked_fill(logits < kth, float("-inf"))
        if self.top_p < 1:
            probs = torch.softmax(logits, dim=-1)
            sorted_p = probs.sort(dim=-1, descending=True).values
            before = sorted_p.cumsum(-1) - sorted_p  # mass strictly more likely than each sorted id
            # the smallest probability still needed to reach top_p: ids at least that likely stay
            need = sorted_p.masked_fill(before >= self.top_p, float("inf")).min(-1, keepdim=True).values
            logits = logits.masked_fill(probs < need, float("-inf"))
        return logits

    def _draw(self, logits_LV, gop, t, s):
        logits = self.filtered_logits(logits_LV, s)
        cdf = logits_to_cdf(logits, min_count=0)
        gen = torch.Generator().manual_seed(hash_seed(self.seed, gop, t, s))
        u = torch.randint(0, TOTAL, (cdf.shape[0], 1), generator=gen)
        # inverse CDF: the symbol whose interval [cdf[i], cdf[i+1]) holds u
        return torch.searchsorted(cdf[:, 1:].contiguous(), u, right=True).squeeze(1)


for _mode in MODES:  # one registry name per mode: get("detail_sampler", "sample")(temperature=1.0)
    register("detail_sampler", _mode)(partial(DetailSampler, _mode))


def hash_seed(*parts: int) -> int:
    """A stable 63-bit seed from integers (Python's hash() is salted per process; this is not)."""
    h = 1469598103934665603
    for p in parts:
        h = ((h ^ (int(p) & 0xFFFFFFFF)) * 1099511628211) & ((1 << 63) - 1)
    return h
