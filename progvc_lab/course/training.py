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


def train_stage1(videos: Sequence[torch.Tensor], steps: int = 200, crop: int = 64, batch_size: int = 8,
                 width: int = 16, max_width: int = 32, groups: int = 4, codebook_size: int = 64, num_scales: int = 4,
                 lr: float = 2e-3, quant_weight: float = 1.0, scale_dropout: float = 0.25, restart_every: int = 25,
                 seed: int = 0, log_every: int = 20, val_video: torch.Tensor | None = None,
                 on_log: Callable[[dict], None] | None = None):
    """A fresh tokenizer + quantizer trained from scratch (stage 1) on random ``crop`` x ``crop`` patches of
    ``videos``: MSE reconstruction + the quantizer's loss, scale dropout (so cut pyramids still decode),
    dead codes restarted every ``restart_every`` steps: the objective of ``progvc-lab train stage1``,
    written out. Returns (tokenizer, quantizer, log); log entries: step, seconds, train_psnr (full
    pyramid), perplexity (how many codes are in use), and with ``val_video`` val_psnr per k."""
    from ..metrics import psnr
    from ..stages.quantizer import MultiScaleResidualQuantizer
    from ..stages.tokenizer import ConvTokenizer

    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    tok = ConvTokenizer(width=width, max_width=max_width, groups=groups)
    q = MultiScaleResidualQuantizer(codebook_size=codebook_size, latent_dim=tok.latent_dim, num_scales=num_scales)
    opt = torch.optim.Adam(list(tok.parameters()) + list(q.parameters()), lr=lr)
    frames = torch.cat([v for v in videos])
    H, W = frames.shape[-2:]
    log, psnrs, t0 = [], [], time.perf_counter()
    tok.train()
    q.train()
    for step in range(1, steps + 1):
        idx = torch.randint(len(frames), (batch_size,), generator=gen)
        ys = torch.randint(H - crop + 1, (batch_size,), generator=gen)
        xs = torch.randint(W - crop + 1, (batch_size,), generator=gen)
        x = torch.stack([frames[i, :, y:y + crop, x0:x0 + crop] for i, y, x0 in zip(idx.tolist(), ys.tolist(), xs.tolist())])
        f = tok.encode(x)
        k = q.num_scales
        if torch.rand((), generator=gen) < scale_dropout:
            k = int(torch.randint(1, q.num_scales, (1,), generator=gen))
        f_hat, _, q_loss = q(f, upto=k)
        x_hat = tok.decode(f_hat, x.shape[-2:])
        loss = F.mse_loss(x_hat, x) + quant_weight * q_loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        if restart_every and step % restart_every == 0:
            q.restart_dead_codes(f.detach())
        if k == q.num_scales:
            psnrs.append(psnr(x_hat.detach().clamp(0, 1), x))
        if step % log_every == 0 or step == steps:
            usage = q.code_usage / q.code_usage.sum().clamp_min(1e-12)
            entry = {"step": step, "seconds": time.perf_counter() - t0,
                     "train_psnr": sum(psnrs) / max(len(psnrs), 1),
                     "perplexity": float(torch.exp(-(usage * usage.clamp_min(1e-12).log()).sum()))}
            psnrs = []
            if val_video is not None:
                tok.eval()
                q.eval()
                with torch.no_grad():
                    fv = tok.encode(val_video)
                    tokens = q.tokenize(fv)
                    entry["val_psnr"] = [psnr(tok.decode(q.tokens_to_latent(tokens, fv.shape[-2:], upto=kk),
                                                         val_video.shape[-2:]).clamp(0, 1), val_video)
                                         for kk in range(1, q.num_scales + 1)]
                tok.train()
                q.train()
            log.append(entry)
            if on_log is not None:
                on_log(entry)
    tok.eval()
    q.eval()
    return tok, q, log


class LivePlot:
    """Curves that redraw in place while a loop runs (a notebook cell's output; a no-op outside IPython).

    ``plot = LivePlot({"stage 1: PSNR (dB)": ["train_psnr"], ...})``; ``plot(entry)`` adds a log entry
    and redraws; ``plot.figure`` is the last figure."""

    def __init__(self, panels: dict[str, Sequence[str]], x: str = "step"):
        self.panels, self.x, self.rows, self.figure = panels, x, [], None

    def __call__(self, entry: dict):
        import matplotlib.pyplot as plt

        self.rows.append(entry)
        fig, axes = plt.subplots(1, len(self.panels), figsize=(4.2 * len(self.panels), 2.8), squeeze=False)
        for ax, (title, keys) in zip(axes[0], self.panels.items()):
            for key in keys:
                pts = [(r[self.x], r[key]) for r in self.rows if key in r and r[key] is not None]
                if pts:
                    ax.plot(*zip(*pts), "-o", ms=3, label=key)
            ax.set_title(title, fontsize=9)
            ax.set_xlabel(self.x)
            ax.grid(alpha=0.3)
            if ax.get_lines():
                ax.legend(fontsize=7)
        fig.tight_layout()
        plt.close(fig)
        self.figure = fig
        try:
            from IPython import get_ipython
            from IPython.display import clear_output, display

            if get_ipython() is not None:
                clear_output(wait=True)
                display(fig)
        except ImportError:
            pass
