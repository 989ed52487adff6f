"""Tokenizer: a small 2D convolutional autoencoder that turns each frame into a latent map.

::

    x (N, 3, H, W) in [0, 1]                                         x_hat (N, 3, H, W)
      │ pad to a multiple of the stride (replicate)                     ▲ crop back to H x W
      ▼                                                                 │
    conv3x3 ─► [ResBlock ─► conv stride 2] x log2(stride) ─► ResBlock ─► conv1x1 ─► f (N, C, H/s, W/s)
                                                                       ▼
    f ─► conv3x3 ─► ResBlock ─► [nearest x2 ─► conv3x3 ─► ResBlock] x log2(stride) ─► conv3x3 ─► x_hat

The latent ``f`` is continuous; the quantizer (``quantizer.py``) turns it into tokens. Frames whose
size is not a multiple of the stride are padded (replicate) before encoding and cropped back after
decoding: never an error, never a silent resize.

Normalisation: ResBlocks can use GroupNorm (``norm="group"``) or none (``norm="none"``, the default).
Measured here (300 steps, 64x64 crops, MSE, Adam 1e-3, 2 CPU cores): without norm the autoencoder
reached 21.6 dB on training crops and 21.4 dB on the unseen Akiyo clip, with GroupNorm 18.6 and
16.0 dB, and its reconstructions had lost most colour: GroupNorm removes each image's per-group mean
and scale, which is exactly the brightness and colour information a short training run needs most.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from .registry import expect_config, register


@dataclass
class TokenizerConfig:
    stride: int = 8            # spatial down-sampling factor (a power of two)
    latent_dim: int = 16       # channels C of the latent map
    width: int = 32            # channels of the first conv; doubles at each down-sampling, capped
    max_width: int = 128       # cap on channels
    groups: int = 8            # GroupNorm groups (when norm == "group")
    norm: str = "none"         # "none" or "group"; see the note in the module docstring
    # channels of the decoder's full-resolution stage (doubling per up-sampling, capped at max_width);
    # 0: ``width``, the encoder's. A narrower decoder is the cheap half of a reconstruction (issue 9):
    # most of its cost is at full resolution. Recorded only when set (older models keep their fingerprints).
    decoder_width: int = field(default=0, metadata={"omit_default": True})

    def __post_init__(self):
        if self.stride < 1 or self.stride & (self.stride - 1):
            raise ValueError(f"tokenizer stride must be a power of two, got {self.stride}")
        if self.norm not in NORMS:
            raise ValueError(f"unknown norm {self.norm!r}; choose 'none' or 'group'")
        if self.decoder_width < 0:
            raise ValueError(f"decoder_width must be >= 0 (0: the encoder's width), got {self.decoder_width}")


NORMS = ("none", "group")


def make_norm(kind: str, groups: int, ch: int) -> nn.Module:
    if kind == "group":
        return nn.GroupNorm(groups, ch)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"unknown norm {kind!r}; choose 'none' or 'group'")


class ResBlock(nn.Module):
    def __init__(self, ch: int, groups: int, norm: str = "none"):
        super().__init__()
        self.block = nn.Sequential(
            make_norm(norm, groups, ch), nn.SiLU(), nn.Conv2d(ch, ch, 3, padding=1),
            make_norm(norm, groups, ch), nn.SiLU(), nn.Conv2d(ch, ch, 3, padding=1),
        )

    def forward(self, x):
        return x + self.block(x)


@register("tokenizer", "conv")
class ConvTokenizer(nn.Module):
    """Conv encoder/decoder. ``encode(x_NCHW) -> f_NChw``, ``decode(f_NChw, size) -> x_NCHW``.

    ``ConvTokenizer(stride=8, width=16)`` or ``ConvTokenizer(TokenizerConfig(...), width=16)``: a
    config, and/or its fields as keywords (they replace the config's)."""

    def __init__(self, config: TokenizerConfig | None = None, **overrides):
        super().__init__()
        expect_config(config, TokenizerConfig, type(self))
        cfg = TokenizerConfig(**overrides) if config is None else dataclasses.replace(config, **overrides)
        self.config = cfg
        stride, latent_dim, width, max_width, groups, norm, decoder_width = (
            cfg.stride, cfg.latent_dim, cfg.width, cfg.max_width, cfg.groups, cfg.norm, cfg.decoder_width)
        self.stride, self.latent_dim = stride, latent_dim
        n_down = int(math.log2(stride))
        widths = [min(width * 2 ** i, max_width) for i in range(n_down + 1)]

        enc: list[nn.Module] = [nn.Conv2d(3, widths[0], 3, padding=1)]
        for i in range(n_down):
            enc += [ResBlock(widths[i], groups, norm), nn.Conv2d(widths[i], widths[i + 1], 3, stride=2, padding=1)]
        enc += [ResBlock(widths[-1], groups, norm), make_norm(norm, groups, widths[-1]), nn.SiLU(),
                nn.Conv2d(widths[-1], latent_dim, 1)]
        self.encoder = nn.Sequential(*enc)

        dw = [min((decoder_width or width) * 2 ** i, max_width) for i in range(n_down + 1)]
        dec: list[nn.Module] = [nn.Conv2d(latent_dim, dw[-1], 3, padding=1), ResBlock(dw[-1], groups, norm)]
        for i in reversed(range(n_down)):
            dec += [nn.Upsample(scale_factor=2, mode="nearest"),
                    nn.Conv2d(dw[i + 1], dw[i], 3, padding=1), ResBlock(dw[i], groups, norm)]
        dec += [make_norm(norm, groups, dw[0]), nn.SiLU(), nn.Conv2d(dw[0], 3, 3, padding=1)]
        self.decoder = nn.Sequential(*dec)

    def latent_size(self, height: int, width: int) -> tuple[int, int]:
        """(h, w) of the latent for a frame of height x width (after padding to the stride)."""
        return math.ceil(height / self.stride), math.ceil(width / self.stride)

    def encode(self, x_NCHW: torch.Tensor) -> torch.Tensor:
        """Frames in [0, 1] -> latent (N, C, ceil(H/stride), ceil(W/stride))."""
        if x_NCHW.ndim != 4 or x_NCHW.shape[1] != 3:
            raise ValueError(f"tokenizer expects frames shaped (N, 3, H, W), got {tuple(x_NCHW.shape)}")
        H, W = x_NCHW.shape[-2:]
        h, w = self.latent_size(H, W)
        pad_h, pad_w = h * self.stride - H, w * self.stride - W
        if pad_h or pad_w:
            x_NCHW = F.pad(x_NCHW, (0, pad_w, 0, pad_h), mode="replicate")
        return self.encoder(x_NCHW * 2 - 1)

    def decode(self, f_NChw: torch.Tensor, size: tuple[int, int] | None = None) -> torch.Tensor:
        """Latent -> frames (unclamped); cropped to ``size=(H, W)`` when given."""
        x = (self.decoder(f_NChw) + 1) / 2
        if size is not None:
            x = x[..., : size[0], : size[1]]
        return x

    def forward(self, x_NCHW: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x_NCHW), x_NCHW.shape[-2:])
