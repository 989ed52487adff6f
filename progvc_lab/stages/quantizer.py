"""Multi-scale residual quantizer (VAR-style next-scale pyramid).

The latent ``f`` (N, C, h, w) is coded as K token maps, from about 1x1 up to h x w. Each scale codes
what the coarser scales left over (the residual)::

    f_rest = f, f_hat = 0
    for s = 0 .. K-1:                       (h_s, w_s) = schedule[s]
        r      = area_down(f_rest, h_s x w_s)          # what is still missing, at this scale
        idx_s  = nearest_code(r)                       # tokens (N, h_s, w_s), ids in [0, V)
        z      = phi_s(up(codebook[idx_s], h x w))     # back to full size, small conv refinement
        f_hat += z ; f_rest -= z

    f_hat after k scales = tokens_to_latent(tokens, upto=k): a coarse-to-fine reconstruction.

``phi_s(x) = (1 - a) * x + a * conv3x3_s(x)`` with a = 0.5, as in VAR. The decoder path
(``tokens_to_latent``, ``context_input``) is always built from tokens, never from the encoder's
float accumulator, so encoder and decoder compute the same numbers.

The scale schedule is derived from the latent size (``scale_schedule``): side_s = round(side^(s/(K-1)))
per dimension, so non-square frames get non-square scales and the last scale is the full latent.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from ..bitstream import scale_schedule  # noqa: F401  (pure function: the stream derives it, no torch)
from .registry import expect_config, register


def area_down(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    return x if tuple(x.shape[-2:]) == tuple(size) else F.interpolate(x, size=size, mode="area")


def upsample(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    return x if tuple(x.shape[-2:]) == tuple(size) else F.interpolate(
        x, size=size, mode="bilinear", align_corners=False)


@dataclass
class QuantizerConfig:
    codebook_size: int = 512    # V: token ids are 0 .. V-1
    latent_dim: int = 16        # C: must match the tokenizer
    num_scales: int = 6         # K
    beta: float = 0.25          # commitment weight
    phi_mix: float = 0.5        # a in phi(x) = (1-a) x + a conv(x)
    # "l2" | "cosine": nearest code by distance, or by angle (residual and codes normalised first).
    # Recorded only when not "l2" (``registry.init_args``), so older models keep their fingerprints.
    lookup: str = field(default="l2", metadata={"omit_default": True})

    def __post_init__(self):
        if self.lookup not in LOOKUPS:
            raise ValueError(f"lookup must be one of {', '.join(LOOKUPS)}, got {self.lookup!r}")


LOOKUPS = ("l2", "cosine")


def usage_stats(code_usage: torch.Tensor, codebook_size: int, tokens=None, top: int = 5,
                threshold: float = 1e-3) -> dict:
    """How a codebook is used: ``perplexity`` (exp of the entropy of the code histogram: V when all
    codes are equally used, 1 when one code takes everything), ``dead`` (codes with a share below
    ``threshold`` / V), ``used``, ``top`` [(id, share)] of the ``top`` most frequent codes (lowest id
    first on ties), ``total`` (the count).

    ``tokens`` ([(..., h_s, w_s)] per scale): count those; None: the training EMA ``code_usage``."""
    if tokens is not None:
        counts = torch.zeros(codebook_size, dtype=torch.float64)
        for tok in tokens:
            counts += torch.bincount(tok.flatten().cpu().long(), minlength=codebook_size).double()
    else:
        counts = code_usage.detach().double().cpu()
    total = float(counts.sum())
    if total <= 0:
        return {"perplexity": 0.0, "dead": codebook_size, "used": 0, "top": [], "total": 0.0}
    p = counts / total
    entropy = float(-(p[p > 0] * p[p > 0].log()).sum())
    share, ids = torch.sort(p, descending=True, stable=True)  # ties: lowest id first
    share, ids = share[:top], ids[:top]
    return {"perplexity": math.exp(entropy), "dead": int((p < threshold / codebook_size).sum()),
            "used": int((counts > 0).sum()), "total": total,
            "top": [(int(i), float(v)) for i, v in zip(ids, share) if v > 0]}


class ResidualPyramid:
    """What every multi-scale residual quantizer shares: the decoder side (from tokens only),
    ``f_hat = sum_s scale_contribution(tokens_s, s)`` and the context inputs built from it, and the end
    of a training pass. A class mixing it in provides ``scale_contribution``, ``code_contribution``,
    ``schedule``, ``latent_dim``, ``num_scales``, ``codebook_size``, ``code_usage`` and ``pyramid_device()``."""

    def training_output(self, f_NChw, partials, tokens, upto):
        """The f_hat the decoder trains on: all scales straight-through to f; fewer (scale dropout):
        the partial sum itself. Also counts code hits (``code_usage``, for dead-code restarts)."""
        k = self.num_scales if upto is None else upto
        f_hat_k = partials[k - 1]
        f_st = f_NChw + (f_hat_k - f_NChw).detach() if k == self.num_scales else f_hat_k
        if self.training:
            with torch.no_grad():
                hits = torch.cat([t.flatten() for t in tokens]).bincount(minlength=self.codebook_size)
                self.code_usage.mul_(0.99).add_(hits.float(), alpha=0.01)
        return f_st

    def tokens_to_latent(self, tokens: list[torch.Tensor], latent_hw: tuple[int, int],
                         upto: int | None = None, codes: list[torch.Tensor] | None = None) -> torch.Tensor:
        """f_hat from the first ``upto`` scales of ``tokens`` (all given ones by default).

        ``codes``: code-vector maps (N, C, h_s, w_s) for the scales after those, k, k+1, ... (a latent-space
        fill such as the expected code): each adds ``code_contribution``; the token scales are exact.
        """
        k = len(tokens) if upto is None else upto
        if k > len(tokens):
            raise ValueError(f"asked for {k} scales but only {len(tokens)} token maps are given")
        codes = list(codes or [])
        if k + len(codes) > self.num_scales:
            raise ValueError(f"{k} token scales and {len(codes)} code scales exceed {self.num_scales} scales")
        N = tokens[0].shape[0] if tokens else codes[0].shape[0]
        f_hat = torch.zeros(N, self.latent_dim, *latent_hw, device=self.pyramid_device())
        for s in range(k):
            f_hat = f_hat + self.scale_contribution(tokens[s], s, latent_hw)
        for j, z in enumerate(codes):
            f_hat = f_hat + self.code_contribution(z, k + j, latent_hw)
        return f_hat

    def context_input(self, tokens: list[torch.Tensor], s: int, latent_hw: tuple[int, int],
                      num_frames: int | None = None) -> torch.Tensor:
        """What the context model sees for scale s: f_hat of scales < s, area-down to scale s size.

        (N, C, h_s, w_s); zeros for s = 0 (the context model puts its start token there).
        The ONE function that builds context inputs, used by training, encoder and decoder.
        """
        size = self.schedule(latent_hw)[s]
        if s == 0:
            N = tokens[0].shape[0] if tokens else num_frames
            return torch.zeros(N, self.latent_dim, *size, device=self.pyramid_device())
        return area_down(self.tokens_to_latent(tokens, latent_hw, upto=s), size)

    def context_inputs(self, tokens: list[torch.Tensor], latent_hw: tuple[int, int]) -> list[torch.Tensor]:
        """``context_input`` for every scale (teacher forcing)."""
        return [self.context_input(tokens, s, latent_hw) for s in range(len(tokens))]


@register("quantizer", "vq")
class MultiScaleResidualQuantizer(ResidualPyramid, nn.Module):
    """VQ codebook shared by all scales, one phi conv per scale.

    ``lookup="l2"`` (default): nearest code by Euclidean distance. ``"cosine"``: by angle, residual
    and codes normalised before the argmin (codes of very different lengths then compete on
    direction only; the code vector added to f_hat is still the stored one, unnormalised).

    ``MultiScaleResidualQuantizer(codebook_size=64)`` or ``(QuantizerConfig(...), lookup="cosine")``.
    """

    def __init__(self, config: QuantizerConfig | None = None, **overrides):
        super().__init__()
        expect_config(config, QuantizerConfig, type(self))
        cfg = QuantizerConfig(**overrides) if config is None else dataclasses.replace(config, **overrides)
        self.config = cfg
        self.lookup = cfg.lookup
        codebook_size, latent_dim, num_scales = cfg.codebook_size, cfg.latent_dim, cfg.num_scales
        self.codebook_size, self.latent_dim, self.num_scales = codebook_size, latent_dim, num_scales
        self.beta, self.phi_mix = cfg.beta, cfg.phi_mix
        self.codebook = nn.Embedding(codebook_size, latent_dim)
        nn.init.uniform_(self.codebook.weight, -1.0 / codebook_size, 1.0 / codebook_size)
        self.phi = nn.ModuleList(nn.Conv2d(latent_dim, latent_dim, 3, padding=1) for _ in range(num_scales))
        # how often each code was picked lately (EMA of hits; for dead-code restart); not saved
        self.register_buffer("code_usage", torch.zeros(codebook_size), persistent=False)

    # ---- shared pieces -------------------------------------------------------------------------
    def schedule(self, latent_hw: tuple[int, int]) -> list[tuple[int, int]]:
        return scale_schedule(tuple(latent_hw), self.num_scales)

    def code_distances(self, r_NChw: torch.Tensor) -> torch.Tensor:
        """||e_v||^2 - 2 <r, e_v> for every position and code: (N*h*w, V), positions row-major.

        Add ||r||^2 for the squared distance (the same for every code, so argmin does not need it).
        ``lookup="cosine"``: ``||r||^2 * ||r/|r| - e_v/|e_v| ||^2 - ||r||^2`` (the angular error in
        units of the residual's energy, so the codec's rate-distortion trade-off keeps its scale).
        """
        r_LC = rearrange(r_NChw, "n c h w -> (n h w) c")
        e_VC = self.codebook.weight
        if self.lookup == "cosine":
            cos_LV = F.normalize(r_LC, dim=1, eps=1e-12) @ F.normalize(e_VC, dim=1, eps=1e-12).T
            return (r_LC * r_LC).sum(1, keepdim=True) * (1 - 2 * cos_LV)
        return (e_VC * e_VC).sum(1)[None, :] - 2 * r_LC @ e_VC.T

    def nearest_code(self, r_NChw: torch.Tensor) -> torch.Tensor:
        """Index of the nearest codebook vector (L2, or angle with ``lookup="cosine"``) for every
        position: (N, h, w) int64."""
        N, _, h, w = r_NChw.shape
        return self.code_distances(r_NChw).argmin(1).view(N, h, w)

    def scale_contribution(self, idx_Nhw: torch.Tensor, s: int, latent_hw: tuple[int, int]) -> torch.Tensor:
        """phi_s(up(codebook[idx])): what scale s adds to f_hat, (N, C, h, w)."""
        z = self.codebook(idx_Nhw).permute(0, 3, 1, 2)
        return self.code_contribution(z, s, latent_hw)

    def code_contribution(self, z_NChw: torch.Tensor, s: int, latent_hw: tuple[int, int]) -> torch.Tensor:
        """phi_s(up(z)) for code vectors z (N, C, h_s, w_s) that need not be codebook entries (e.g. the
        expected code of the ``mean`` detail sampler): what they add to f_hat, (N, C, h, w)."""
        return self._phi(upsample(z_NChw, latent_hw), s)

    def expected_code(self, probs_LV: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """sum_v p(v) codebook[v] per position: (L, V) probabilities, positions row-major -> (C, h_s, w_s)."""
        z_LC = probs_LV.to(self.codebook.weight.dtype) @ self.codebook.weight
        return rearrange(z_LC, "(h w) c -> c h w", h=size[0], w=size[1])

    def usage_stats(self, tokens: list[torch.Tensor] | None = None, top: int = 5, threshold: float = 1e-3) -> dict:
        """Perplexity, dead codes and top codes of ``tokens`` (or of the training EMA ``code_usage``)."""
        return usage_stats(self.code_usage, self.codebook_size, tokens, top, threshold)

    def pyramid_device(self) -> torch.device:
        return self.codebook.weight.device

    def _phi(self, x: torch.Tensor, s: int) -> torch.Tensor:
        return (1 - self.phi_mix) * x + self.phi_mix * self.phi[s](x)

    # ---- encoder side --------------------------------------------------------------------------
    @torch.no_grad()
    def tokenize(self, f_NChw: torch.Tensor) -> list[torch.Tensor]:
        """Latent -> K token maps [(N, h_s, w_s) int64], coarse to fine."""
        return self._residual_loop(f_NChw)[0]

    def forward(self, f_NChw: torch.Tensor, upto: int | None = None):
        """Training pass. Returns (f_hat for the decoder, tokens, quantizer loss).

        ``upto`` = number of scales to keep (scale dropout: the tokenizer's decoder learns to make
        sense of truncated pyramids). The quantizer loss is VAR's: for every scale the partial sum is
        pulled towards f (codebook) and f towards it (commitment, weight beta), averaged over scales.
        """
        tokens, f_hats, _ = self._residual_loop(f_NChw, keep_partials=True)
        loss = f_NChw.new_zeros(())
        for f_hat in f_hats:
            loss = loss + F.mse_loss(f_hat, f_NChw.detach()) + self.beta * F.mse_loss(f_NChw, f_hat.detach())
        loss = loss / len(f_hats)
        return self.training_output(f_NChw, f_hats, tokens, upto), tokens, loss

    def _residual_loop(self, f_NChw, keep_partials=False):
        """The encoder loop of the module docstring. Returns (tokens, partial f_hats, residuals r_s)."""
        latent_hw = tuple(f_NChw.shape[-2:])
        f_rest, f_hat = f_NChw, torch.zeros_like(f_NChw)
        tokens, partials, residuals = [], [], []
        for s, size in enumerate(self.schedule(latent_hw)):
            r = area_down(f_rest, size).detach()
            idx = self.nearest_code(r)
            z = self.scale_contribution(idx, s, latent_hw)
            f_hat = f_hat + z
            f_rest = f_rest - z
            tokens.append(idx)
            residuals.append(r)
            if keep_partials:
                partials.append(f_hat)
        return tokens, partials, residuals

    @torch.no_grad()
    def restart_dead_codes(self, f_NChw: torch.Tensor, threshold: float = 1e-3) -> int:
        """Move codes nobody uses onto random latent vectors of the batch; returns how many moved."""
        dead = (self.code_usage < threshold).nonzero().flatten()
        if len(dead) == 0:
            return 0
        # candidates: the residuals the codebook actually has to match, at every scale
        residuals = self._residual_loop(f_NChw)[2]
        pool = torch.cat([rearrange(r, "n c h w -> (n h w) c") for r in residuals])
        pick = torch.randint(len(pool), (len(dead),), device=pool.device)
        self.codebook.weight.data[dead] = pool[pick]
        self.code_usage[dead] = threshold * 10  # give them time to be picked
        return len(dead)

    # ---- decoder side (from tokens only) -------------------------------------------------------
