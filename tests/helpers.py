"""Small, fast fixtures shared by the codec, bitstream and CLI tests.

``make_tiny_codec`` builds a randomly initialised codec that is small enough to code a 32x48 clip in
well under a second on one core. Its weights depend only on ``seed``, so two calls with the same seed
give the same model fingerprint (and streams that decode with each other), two seeds give a model
mismatch. ``pattern_clip`` is a deterministic, non-random test clip (golden streams must not depend
on a random generator's implementation).
"""
from __future__ import annotations

import math
import os
import warnings
from pathlib import Path

import pytest
import torch

os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(Path(__file__).resolve().parents[1] / ".cache" / "torch_extensions"))

from progvc_lab.codec import Codec  # noqa: E402
from progvc_lab.stages import ContextModel, ConvTokenizer, MultiScaleResidualQuantizer  # noqa: E402

TINY_V = 64   # codebook size of the tiny codec


def make_tiny_codec(seed: int = 0, gop: int = 3, window: int = 1, mask: str = "progvc_sparse",
                    num_scales: int = 6, gate_head: bool = False, **codec_kw) -> Codec:
    """A random, tiny codec: ConvTokenizer(width 8), V = 64, a 1-layer width-32 context model.

    It codes with 1 thread unless ``coding_threads`` is given (the package default is 2): the tests
    run two at a time on two cores. ``gate_head``: the context model predicts a learned copy gate; its
    weights are drawn too (a trained head starts at zero, which would make it the count gate)."""
    torch.manual_seed(seed)
    codec_kw.setdefault("coding_threads", 1)
    extra = {"gate_head": True} if gate_head else {}
    tok = ConvTokenizer(width=8, max_width=16, groups=4)   # drawn in this order: the goldens depend on it
    quant = MultiScaleResidualQuantizer(codebook_size=TINY_V, num_scales=num_scales)
    cm = ContextModel(codebook_size=TINY_V, width=32, depth=1, heads=2, num_scales=num_scales,
                      mask=mask, window=window, **extra)
    if gate_head:
        torch.nn.init.normal_(cm.gate.weight, std=0.5)
        torch.nn.init.normal_(cm.gate.bias, std=0.5)
    return Codec(tok, quant, cm, gop=gop, **codec_kw)


def pattern_clip(num_frames: int = 4, height: int = 32, width: int = 48) -> torch.Tensor:
    """A deterministic moving pattern (T, 3, H, W) in [0, 1]: gradients plus drifting sine waves.

    Built from linspace/sin only (no random generator), so it is the same on every platform.
    """
    y = torch.linspace(0, 1, height, dtype=torch.float64)[:, None]
    x = torch.linspace(0, 1, width, dtype=torch.float64)[None, :]
    frames = []
    for t in range(num_frames):
        r = 0.5 + 0.4 * torch.sin(2 * math.pi * (3 * x + 0.1 * t)) * torch.cos(2 * math.pi * 2 * y)
        g = (0.3 + 0.6 * x * y + 0.05 * t / max(1, num_frames)).expand(height, width)
        b = 0.5 + 0.45 * torch.sin(2 * math.pi * (5 * y - 0.15 * t) + 4 * x)
        frames.append(torch.stack([r, g, b]).clamp(0, 1))
    return torch.stack(frames).float()


def decode_tokens_quietly(codec: Codec, data: bytes, **kw):
    """``codec.decode_tokens`` with the 'cut at a scale boundary' warning silenced."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return codec.decode_tokens(data, **kw)


@pytest.fixture(autouse=False)
def one_thread():
    """Run a test with one intra-op thread (the test machines have 2 busy cores: OpenMP spinning on a
    loaded core makes tiny convolutions 100x slower). Restores the caller's setting."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


# a 1-layer, width-16 context model over a 32-code quantizer: the smallest stage 2 the training tests run
TINY_CONTEXT = ["--model.context_model.init_args.codebook_size", "32", "--model.context_model.init_args.width", "16",
                "--model.context_model.init_args.depth", "1", "--model.context_model.init_args.heads", "2"]
