"""Binary spherical quantizer (BSQ, as in Infinity): a token is d bits, no codebook table.

Same multi-scale residual pyramid as the VQ quantizer (``quantizer.py``: same schedule, area-down of
the residual, up-sampling + phi refinement, accumulation). Only the per-position lookup differs::

    r (C,)  ──W (d x C)──► u ──/||u||──► u_hat on the unit sphere ──sign──► b in {-1,+1}^d
                                                                            │  q = b / sqrt(d)
    code vector e = W^T q (d->C), what the scale adds: phi_s(upsample(gain_s * e))

W has orthonormal rows (``torch.nn.utils.parametrizations.orthogonal``; d <= C: d orthonormal
directions of the latent, one bit each) and the up-projection is its transpose. Why not two free
linear maps, as a first version had: a sign on the sphere is cheapest for a projection of rank one
(every r then lands exactly on one of two corners, so the commitment and the per-token entropy are
zero, and the batch-mean bits are still balanced), and training found it: the code perplexity fell
from ~200 to ~24 of 512 in 400 steps. An orthonormal W cannot lose rank. (With d > C the columns
are orthonormal instead and only a C-dimensional slice of the 2^d patterns is reachable.)

The implied codebook is the 2^d sign patterns through W^T: ``codebook.weight`` (V, C) with
V = 2^d is computed from the fixed (V, d) bit matrix every time it is read, so encoder and decoder
get the same numbers from the token ids alone. Nothing is looked up by distance: the bits are the
signs of ``W r``, so the cost of the lookup is linear in d, not in 2^d. With d <= C all codes have
the same length and ``||r - g e_v||^2 = ||r||^2 - 2 g <W r, q_v> + g^2``: the sign pattern is also
the Euclidean nearest code.

Token ids pack the bits **MSB first**: bit i (i = 0..d-1, the i-th channel of u) is
``(id >> (d-1-i)) & 1``, bit = 1 where u_i > 0 (0 where u_i <= 0). ``bits_to_ids`` / ``ids_to_bits``.

Training (straight-through): ``q_st = u_hat + (q - u_hat).detach()`` carries the reconstruction
gradient into W. The quantizer loss per scale is the VQ one on the partial sums
(``||f_hat_s - sg f||^2 + beta_latent ||f - sg f_hat_s||^2``), a commitment of u_hat to its corner
(``beta ||u_hat - sg q||^2``) and BSQ's entropy term on soft bits p_i = sigmoid(sqrt(d) u_hat_i / tau):
mean per-token bit entropy (make each bit decisive) minus the entropy of the batch-mean bit
(use both values of every bit), a factorised stand-in for the codebook entropy (Zhao et al., BSQ).

``code_distances`` (the codec's RD-optimised choice) measures the lookup's own geometry, scaled to
latent units: ``||r||^2 * ||u_hat - q_v||^2`` for all 2^d codes (minus ||r||^2, the convention of
the protocol), so its argmin is exactly the sign pattern that ``tokenize`` picks, and
``dist + ||r||^2`` is the residual's energy times its squared angular error on the sphere. (Plain L2
to ``codebook.weight`` has the same argmin but the wrong size: the codes have length 1 whatever the
scale, while ``gain_s`` and phi_s rescale what a scale adds, so the codec's rate-distortion trade-off
would weigh a small fine-scale residual's error by the code length instead of by the residual.)
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .quantizer import ResidualPyramid, area_down, scale_schedule, upsample, usage_stats
from .registry import expect_config, register

MAX_BITS = 12  # V = 4096: the 16-bit integer CDFs give every symbol >= 1 of 65536 counts


def bit_matrix(bits: int) -> torch.Tensor:
    """(2^d, d) int64: row v = the bits of id v, MSB first. Deterministic, no parameters."""
    ids = torch.arange(1 << bits, dtype=torch.int64)
    shifts = torch.arange(bits - 1, -1, -1, dtype=torch.int64)
    return (ids[:, None] >> shifts) & 1


def bits_to_ids(bits_Nd: torch.Tensor) -> torch.Tensor:
    """Bits (..., d) in {0, 1} -> ids (...) int64, the first bit most significant."""
    d = bits_Nd.shape[-1]
    weights = 1 << torch.arange(d - 1, -1, -1, dtype=torch.int64, device=bits_Nd.device)
    return (bits_Nd.long() * weights).sum(-1)


def ids_to_bits(ids: torch.Tensor, bits: int) -> torch.Tensor:
    """Ids (...) -> bits (..., d) int64 in {0, 1}, MSB first; ids outside [0, 2^d) are an error."""
    ids = ids.long()
    if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= (1 << bits)):
        raise ValueError(f"token ids must lie in [0, {1 << bits}) for {bits} bits, "
                         f"got {int(ids.min())}..{int(ids.max())}")
    shifts = torch.arange(bits - 1, -1, -1, dtype=torch.int64, device=ids.device)
    return (ids[..., None] >> shifts) & 1


class ImpliedCodebook(nn.Module):
    """Token ids (...) -> code vectors (..., C): the sign pattern of each id, / sqrt(d), through W^T.

    ``weight`` (V, C) is recomputed from the fixed bit matrix on every read (one (V, d) x (d, C)
    product, always the same shape), so ``codebook(idx)`` gives bit-identical vectors for any ids."""

    def __init__(self, bits: int, latent_dim: int):
        super().__init__()
        self.bits = bits
        # W (d, C): r -> u = W r. Orthonormal rows (columns if d > C), see the module docstring.
        self.down = torch.nn.utils.parametrizations.orthogonal(nn.Linear(latent_dim, bits, bias=False))
        signs = bit_matrix(bits).float() * 2 - 1
        self.register_buffer("signs_Vd", signs / math.sqrt(bits), persistent=False)  # the codes q_v

    def up(self, q_Nd: torch.Tensor) -> torch.Tensor:
        """q (..., d) -> W^T q (..., C)."""
        return q_Nd @ self.down.weight

    @property
    def weight(self) -> torch.Tensor:
        return self.up(self.signs_Vd)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return F.embedding(idx, self.weight)


@dataclass
class BSQConfig:
    bits: int = 9               # d: a token is d bits, V = 2^d (d <= 12)
    latent_dim: int = 16        # C: must match the tokenizer
    num_scales: int = 6         # K
    beta: float = 0.25          # commitment of u_hat to its corner (on the sphere)
    beta_latent: float = 0.25   # commitment of f to the partial sums (as the VQ quantizer's beta)
    entropy_weight: float = 0.1  # weight of (per-token bit entropy - batch bit entropy) / d
    tau: float = 0.5            # temperature of the soft bits of the entropy term
    phi_mix: float = 0.5        # a in phi(x) = (1-a) x + a conv(x)

    def __post_init__(self):
        if not isinstance(self.bits, int) or not 1 <= self.bits <= MAX_BITS:
            raise ValueError(f"bits must be an integer in 1..{MAX_BITS} (V = 2^bits codes), got {self.bits!r}")
        if self.tau <= 0:
            raise ValueError(f"tau must be > 0, got {self.tau}")


@register("quantizer", "bsq")
class BinarySphericalQuantizer(ResidualPyramid, nn.Module):
    """Multi-scale residual BSQ: per scale, a token = the d sign bits of the projected residual."""

    def __init__(self, config: BSQConfig | None = None, **overrides):
        super().__init__()
        expect_config(config, BSQConfig, type(self))
        cfg = BSQConfig(**overrides) if config is None else dataclasses.replace(config, **overrides)
        self.config = cfg
        bits, latent_dim, num_scales = cfg.bits, cfg.latent_dim, cfg.num_scales
        self.bits, self.codebook_size = bits, 1 << bits
        self.latent_dim, self.num_scales, self.phi_mix = latent_dim, num_scales, cfg.phi_mix
        # W has no bias: sign(W r) depends on the direction of r only (BSQ is scale invariant) and
        # e(-b) = -e(b); with a bias, small fine-scale residuals would all take the bias's pattern
        self.codebook = ImpliedCodebook(bits, latent_dim)
        self.gain = nn.Parameter(torch.ones(num_scales))  # per-scale size of the (unit-norm) codes
        self.phi = nn.ModuleList(nn.Conv2d(latent_dim, latent_dim, 3, padding=1) for _ in range(num_scales))
        self.register_buffer("code_usage", torch.zeros(self.codebook_size), persistent=False)

    # ---- shared pieces -------------------------------------------------------------------------
    def schedule(self, latent_hw: tuple[int, int]) -> list[tuple[int, int]]:
        return scale_schedule(tuple(latent_hw), self.num_scales)

    def project(self, r_NChw: torch.Tensor) -> torch.Tensor:
        """u_hat = W r / ||W r||: (N, h, w, d) on the unit sphere (0 where W r = 0)."""
        u = self.codebook.down(r_NChw.permute(0, 2, 3, 1))
        return F.normalize(u, dim=-1, eps=1e-12)

    def nearest_code(self, r_NChw: torch.Tensor) -> torch.Tensor:
        """Token ids (N, h, w): the sign bits of W r, packed MSB first (bit 1 where u_i > 0)."""
        return bits_to_ids(self.project(r_NChw) > 0)

    def code_distances(self, r_NChw: torch.Tensor) -> torch.Tensor:
        """(N*h*w, V): ``||r||^2 * ||u_hat - q_v||^2 - ||r||^2`` for every code v, positions row-major.

        Exact over all 2^d codes; argmin = the sign pattern (``nearest_code``), lowest id on ties, as
        the sign rule gives bit 0 at u_i = 0. Module docstring: why not plain L2 to the codes."""
        u_LD = self.project(r_NChw).reshape(-1, self.bits)
        r2_L1 = (r_NChw * r_NChw).sum(1).reshape(-1, 1)
        cos_LV = u_LD @ self.codebook.signs_Vd.T           # <u_hat, q_v>, both of norm 1
        return r2_L1 * (1 - 2 * cos_LV)                     # r2 * (2 - 2 cos) - r2

    def scale_contribution(self, idx_Nhw: torch.Tensor, s: int, latent_hw: tuple[int, int]) -> torch.Tensor:
        """phi_s(upsample(gain_s * codebook[idx])): what scale s adds to f_hat, (N, C, h, w)."""
        return self.code_contribution(self.codebook(idx_Nhw).permute(0, 3, 1, 2), s, latent_hw)

    def code_contribution(self, z_NChw: torch.Tensor, s: int, latent_hw: tuple[int, int]) -> torch.Tensor:
        """phi_s(upsample(gain_s * z)) for code vectors z (N, C, h_s, w_s), e.g. an expected code."""
        x = upsample(self.gain[s] * z_NChw, latent_hw)
        return (1 - self.phi_mix) * x + self.phi_mix * self.phi[s](x)

    def expected_code(self, probs_LV: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """sum_v p(v) codebook[v] per position: (L, V) -> (C, h_s, w_s)."""
        weight = self.codebook.weight
        return (probs_LV.to(weight.dtype) @ weight).T.reshape(self.latent_dim, *size)

    def usage_stats(self, tokens: list[torch.Tensor] | None = None, top: int = 5, threshold: float = 1e-3) -> dict:
        """Perplexity, dead codes and top codes of ``tokens`` (or of the training EMA ``code_usage``)."""
        return usage_stats(self.code_usage, self.codebook_size, tokens, top, threshold)

    # ---- encoder side --------------------------------------------------------------------------
    @torch.no_grad()
    def tokenize(self, f_NChw: torch.Tensor) -> list[torch.Tensor]:
        """Latent -> K token maps [(N, h_s, w_s) int64], coarse to fine (exact codes, no STE)."""
        latent_hw = tuple(f_NChw.shape[-2:])
        f_rest, tokens = f_NChw, []
        for s, size in enumerate(self.schedule(latent_hw)):
            idx = self.nearest_code(area_down(f_rest, size))
            f_rest = f_rest - self.scale_contribution(idx, s, latent_hw)
            tokens.append(idx)
        return tokens

    def forward(self, f_NChw: torch.Tensor, upto: int | None = None):
        """Training pass: (f_hat from ``upto`` scales (straight-through to f at all scales), tokens, loss).

        The forward values equal ``tokens_to_latent(tokens)`` up to float rounding (the STE adds and
        subtracts u_hat); the gradient reaches W through the straight-through codes."""
        latent_hw = tuple(f_NChw.shape[-2:])
        f_rest, f_hat = f_NChw, torch.zeros_like(f_NChw)
        tokens, partials = [], []
        sphere_loss = f_NChw.new_zeros(())
        for s, size in enumerate(self.schedule(latent_hw)):
            u_hat = self.project(area_down(f_rest, size).detach())           # (N, h_s, w_s, d)
            on = u_hat > 0
            q = (on.to(u_hat.dtype) * 2 - 1) / math.sqrt(self.bits)
            q_st = u_hat + (q - u_hat).detach()
            z = self.code_contribution(self.codebook.up(q_st).permute(0, 3, 1, 2), s, latent_hw)
            f_hat, f_rest = f_hat + z, f_rest - z
            tokens.append(bits_to_ids(on))
            partials.append(f_hat)
            sphere_loss = sphere_loss + self.config.beta * F.mse_loss(u_hat, q, reduction="none").sum(-1).mean()
            sphere_loss = sphere_loss + self.config.entropy_weight * self._entropy_term(u_hat)
        loss = sphere_loss
        for p in partials:
            loss = loss + F.mse_loss(p, f_NChw.detach()) + self.config.beta_latent * F.mse_loss(f_NChw, p.detach())
        loss = loss / len(partials)
        return self.training_output(f_NChw, partials, tokens, upto), tokens, loss

    def _entropy_term(self, u_hat: torch.Tensor) -> torch.Tensor:
        """(mean per-token bit entropy - entropy of the batch-mean bits) / d, in nats."""
        p = torch.sigmoid(u_hat.reshape(-1, self.bits) * math.sqrt(self.bits) / self.config.tau)

        def h(x):
            x = x.clamp(1e-6, 1 - 1e-6)
            return -(x * x.log() + (1 - x) * (1 - x).log())

        return (h(p).sum(-1).mean() - h(p.mean(0)).sum()) / self.bits

    @torch.no_grad()
    def restart_dead_codes(self, f_NChw: torch.Tensor, threshold: float = 1e-3) -> int:
        """No-op, returns 0. BSQ has no code vectors of its own to move: a code is a sign pattern, and
        an unused pattern cannot be placed on a latent without moving every code that shares its bits.
        The entropy term (batch-mean bits near 1/2) is what keeps the patterns in use."""
        return 0

    # ---- decoder side (from tokens only) -------------------------------------------------------
    def pyramid_device(self) -> torch.device:
        return self.gain.device
