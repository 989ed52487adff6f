"""Train a small context model in a notebook: a plain PyTorch loop over the frozen demo tokenizer's tokens.

::

    from progvc_lab.course.training import train_context_model
    cm, log = train_context_model(codec, [train_video], mask="progvc_sparse", steps=60)
    Codec(codec.tokenizer, codec.quantizer, cm, gop=3).encode(test_video)   # a working codec

The package trains through Lightning (``progvc-lab train stage2``, notebook 07); this loop is the same
objective, written out so that a notebook can show it and change it: teacher-forced cross-entropy of
``ContextModel.forward`` on clips of ``clip_len`` frames, tokens from ``codec.tokenize`` (stage 1
frozen), the block mask chosen by name (any mask in ``stages.masks.MASKS``, also one registered in the
notebook). The log has the loss in bits per token, overall and per scale, every ``log_every`` steps;
``on_log(entry)`` is called with each entry (a live plot).
"""
from __future__ import annotations

import math
import time
from typing import Callable, Sequence

import torch
import torch.nn.functional as F

from ..stages.context_model import ContextModel


@torch.no_grad()
def clip_tokens(codec, videos: Sequence[torch.Tensor]) -> tuple[list[list[torch.Tensor]], tuple[int, int]]:
    """Tokens per scale of every video [(T, h_s, w_s) per scale] (the encoder's nearest codes)."""
    out, latent_hw = [], None
    for video in videos:
        tokens, latent_hw = codec.tokenize(video)
        out.append(tokens)
    return out, latent_hw


def bits_per_token(cm: ContextModel, quantizer, tokens_per_clip, latent_hw, clip_len: int) -> tuple[float, list[float]]:
    """Teacher-forced bits per token (overall, per scale) on consecutive clips of ``clip_len`` frames."""
    was_training = cm.training
    cm.eval()
    K = len(tokens_per_clip[0])
    total, count = torch.zeros(K, dtype=torch.float64), torch.zeros(K, dtype=torch.float64)
    with torch.no_grad():
        for tokens in tokens_per_clip:
            T = tokens[0].shape[0]
            for t0 in range(0, T - clip_len + 1, clip_len):
                batch = [tok[None, t0:t0 + clip_len] for tok in tokens]
                loss_L, scale_L = _token_losses(cm, quantizer, batch, latent_hw)
                total.index_add_(0, scale_L, loss_L[0].double())
                count.index_add_(0, scale_L, torch.ones_like(scale_L, dtype=torch.float64))
    cm.train(was_training)
    per_scale = (total / count.clamp_min(1) / math.log(2)).tolist()
    return float(total.sum() / count.sum() / math.log(2)), per_scale


def _token_losses(cm, quantizer, batch, latent_hw):
    """Cross-entropy (nats) of every token of a batch of clips: (B, L), and the scale of each token (L,)."""
    B, T = batch[0].shape[:2]
    flat = [tok.reshape(B * T, *tok.shape[2:]) for tok in batch]
    ctx = [c.reshape(B, T, *c.shape[1:]) for c in quantizer.context_inputs(flat, latent_hw)]
    logits_BLV = cm(ctx, batch)
    target_BL, scale_L = cm.flatten_tokens(batch)
    loss_BL = F.cross_entropy(logits_BLV.transpose(1, 2), target_BL, reduction="none")
    return loss_BL, scale_L


def train_context_model(codec, videos: Sequence[torch.Tensor], mask: str = "progvc_sparse", window: int = 1,
                        steps: int = 60, width: int = 64, depth: int = 2, heads: int = 2, lr: float = 3e-3,
                        clip_len: int = 3, batch_size: int = 4, seed: int = 0, log_every: int = 10,
                        val_videos: Sequence[torch.Tensor] | None = None,
                        on_log: Callable[[dict], None] | None = None) -> tuple[ContextModel, list[dict]]:
    """A fresh ContextModel trained for ``steps`` Adam steps on ``videos`` (each (T, 3, H, W), T >= clip_len)
    under ``mask``; returns (model in eval mode, log). Log entries: step, seconds, train bits per token
    (mean over the steps since the last entry), and, with ``val_videos``, validation bits overall and
    per scale."""
    q = codec.quantizer
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    tokens_per_clip, latent_hw = clip_tokens(codec, videos)
    val_tokens = clip_tokens(codec, val_videos)[0] if val_videos else None
    if any(tok[0].shape[0] < clip_len for tok in tokens_per_clip):
        raise ValueError(f"every training video needs at least clip_len = {clip_len} frames")
    cm = ContextModel(codebook_size=q.codebook_size, latent_dim=q.latent_dim, num_scales=q.num_scales,
                      width=width, depth=depth, heads=heads, mask=mask, window=window)
    opt = torch.optim.Adam(cm.parameters(), lr=lr)
    log, running, t0 = [], [], time.perf_counter()
    cm.train()
    for step in range(1, steps + 1):
        batch = []
        for _ in range(batch_size):
            tokens = tokens_per_clip[int(torch.randint(len(tokens_per_clip), (1,), generator=gen))]
            start = int(torch.randint(tokens[0].shape[0] - clip_len + 1, (1,), generator=gen))
            batch.append([tok[start:start + clip_len] for tok in tokens])
        batch = [torch.stack([b[s] for b in batch]) for s in range(q.num_scales)]
        loss_BL, _ = _token_losses(cm, q, batch, latent_hw)
        loss = loss_BL.mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        running.append(float(loss.detach()) / math.log(2))
        if step % log_every == 0 or step == steps:
            entry = {"step": step, "seconds": time.perf_counter() - t0, "train_bits": sum(running) / len(running)}
            running = []
            if val_tokens is not None:
                entry["val_bits"], entry["val_bits_per_scale"] = bits_per_token(cm, q, val_tokens, latent_hw, clip_len)
            log.append(entry)
            if on_log is not None:
                on_log(entry)
    cm.eval()
    for tokens in tokens_per_clip:          # the static baseline the model should beat, as stage 2 counts it
        cm.count_unigram(tokens)
    return cm, log
