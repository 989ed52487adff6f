"""LightningModules for the two training stages.

::

    stage 1  clip (B, T, 3, H, W) ─► frames (B*T) ─► Tokenizer.encode ─► Quantizer(upto=k) ─► decode
             loss = L1 + MSE (reconstruction) + quantizer loss; k < K at random ("scale dropout"),
             so truncated pyramids decode to sensible frames too.

    stage 2  clip ─► frozen tokenizer + quantizer ─► tokens[s] (B, T, h_s, w_s), context inputs
             ─► ContextModel teacher-forced pass (mask) ─► cross-entropy
             logged as bits per token per scale and as estimated bpp for every truncation level.

Stage 1 saves ``stage1.pt`` (tokenizer + quantizer) for stage 2; stage 2 exports the full codec
(``Codec.save``) that ``Codec.from_pretrained`` loads.
"""
from __future__ import annotations

import math
from pathlib import Path

import lightning.pytorch as pl
import torch
import torch.nn.functional as F

from ..stages.context_model import ContextModel
from ..stages.quantizer import MultiScaleResidualQuantizer
from ..stages.tokenizer import ConvTokenizer


def _warmup_cosine(step: int, total: int, warmup: int = 100, floor: float = 0.1) -> float:
    if step < warmup:
        return (step + 1) / warmup
    if total <= warmup:
        return 1.0
    progress = min(1.0, (step - warmup) / (total - warmup))
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))


def _psnr(a, b):
    return -10 * torch.log10(F.mse_loss(a, b).clamp_min(1e-10))


class _Base(pl.LightningModule):
    lr: float

    def configure_optimizers(self):
        params = [p for p in self.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=self.lr, weight_decay=0.0, betas=(0.9, 0.99))
        total = self.trainer.max_steps if self.trainer and self.trainer.max_steps > 0 else 0
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: _warmup_cosine(s, total) if total else min(1.0, (s + 1) / 100))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    @staticmethod
    def frames(batch) -> torch.Tensor:
        x = batch[0] if isinstance(batch, (list, tuple)) else batch
        return x.flatten(0, 1) if x.ndim == 5 else x


class TokenizerModule(_Base):
    """Stage 1: tokenizer + quantizer. Swap either by ``class_path`` in the YAML config."""

    def __init__(self, tokenizer: ConvTokenizer, quantizer: MultiScaleResidualQuantizer, lr: float = 2e-3,
                 scale_dropout: float = 0.3, l1_weight: float = 1.0, mse_weight: float = 1.0,
                 quant_weight: float = 1.0, restart_every: int = 25, export_path: str | None = None):
        super().__init__()
        self.save_hyperparameters(ignore=["tokenizer", "quantizer"])
        if tokenizer.latent_dim != quantizer.latent_dim:
            raise ValueError(f"tokenizer.latent_dim ({tokenizer.latent_dim}) must equal "
                             f"quantizer.latent_dim ({quantizer.latent_dim})")
        self.tokenizer, self.quantizer = tokenizer, quantizer
        self.lr = lr

    def _shared_step(self, batch, stage: str):
        x = self.frames(batch)
        f = self.tokenizer.encode(x)
        K = self.quantizer.num_scales
        k = K
        if stage == "train" and torch.rand(()) < self.hparams.scale_dropout:
            k = int(torch.randint(1, K, ()))
        f_hat, tokens, q_loss = self.quantizer(f, upto=k)
        x_hat = self.tokenizer.decode(f_hat, x.shape[-2:])
        loss = (self.hparams.l1_weight * F.l1_loss(x_hat, x) + self.hparams.mse_weight * F.mse_loss(x_hat, x)
                + self.hparams.quant_weight * q_loss)
        self.log_dict({f"{stage}/loss": loss, f"{stage}/quant_loss": q_loss}, prog_bar=stage == "train")
        if k == K:
            self.log(f"{stage}/psnr", _psnr(x_hat.clamp(0, 1), x), prog_bar=True)
        if stage == "train":
            usage = self.quantizer.code_usage
            p = usage / usage.sum()
            self.log("train/codebook_perplexity", torch.exp(-(p * p.clamp_min(1e-12).log()).sum()))
            if self.hparams.restart_every and self.global_step % self.hparams.restart_every == 0 and self.global_step > 0:
                self.log("train/codes_restarted", float(self.quantizer.restart_dead_codes(f.detach())))
        return loss

    def training_step(self, batch, batch_idx):
        return self._shared_step(batch, "train")

    def validation_step(self, batch, batch_idx):
        self._shared_step(batch, "val")
        x = self.frames(batch)
        f = self.tokenizer.encode(x)
        tokens = self.quantizer.tokenize(f)
        for k in range(1, self.quantizer.num_scales + 1):
            x_hat = self.tokenizer.decode(self.quantizer.tokens_to_latent(tokens, f.shape[-2:], upto=k), x.shape[-2:])
            self.log(f"val/psnr_k{k}", _psnr(x_hat.clamp(0, 1), x))

    def on_train_end(self):
        if self.hparams.export_path and self.trainer.is_global_zero:
            save_stage1(self.hparams.export_path, self.tokenizer, self.quantizer)


def save_stage1(path, tokenizer: ConvTokenizer, quantizer: MultiScaleResidualQuantizer):
    from dataclasses import asdict
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    torch.save({"tokenizer": asdict(tokenizer.config), "quantizer": asdict(quantizer.config),
                "tokenizer_state": tokenizer.state_dict(), "quantizer_state": quantizer.state_dict()}, path)


def load_stage1(path) -> tuple[ConvTokenizer, MultiScaleResidualQuantizer]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"stage-1 weights {path} not found; train stage 1 first "
                                "(progvc-lab train stage1 --config configs/tiny_stage1.yaml)")
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    tok, quant = ConvTokenizer(**ckpt["tokenizer"]), MultiScaleResidualQuantizer(**ckpt["quantizer"])
    tok.load_state_dict(ckpt["tokenizer_state"])
    quant.load_state_dict(ckpt["quantizer_state"])
    return tok.eval(), quant.eval()


class ContextModule(_Base):
    """Stage 2: the context model on frozen stage-1 tokens. Swap it (or its mask) in the YAML config."""

    def __init__(self, context_model: ContextModel, stage1_path: str, lr: float = 1e-3,
                 label_smoothing: float = 0.0, export_path: str | None = None, export_gop: int = 8,
                 export_meta: dict | None = None):
        super().__init__()
        self.save_hyperparameters(ignore=["context_model"])
        self.context_model = context_model
        self.tokenizer, self.quantizer = load_stage1(stage1_path)
        for p in list(self.tokenizer.parameters()) + list(self.quantizer.parameters()):
            p.requires_grad_(False)
        cfg, q = context_model.config, self.quantizer
        if (cfg.codebook_size, cfg.latent_dim, cfg.num_scales) != (q.codebook_size, q.latent_dim, q.num_scales):
            raise ValueError(f"context model (V={cfg.codebook_size}, C={cfg.latent_dim}, K={cfg.num_scales}) does "
                             f"not fit the stage-1 quantizer (V={q.codebook_size}, C={q.latent_dim}, K={q.num_scales})")
        self.lr = lr

    def train(self, mode: bool = True):
        super().train(mode)
        self.tokenizer.eval()   # frozen stages stay in eval mode
        self.quantizer.eval()
        return self

    @torch.no_grad()
    def tokens_and_context(self, clips_BT3HW: torch.Tensor):
        B, T = clips_BT3HW.shape[:2]
        f = self.tokenizer.encode(clips_BT3HW.flatten(0, 1))
        latent_hw = tuple(f.shape[-2:])
        tokens = self.quantizer.tokenize(f)
        ctx = self.quantizer.context_inputs(tokens, latent_hw)
        unflat = lambda x: x.view(B, T, *x.shape[1:])
        return [unflat(t) for t in tokens], [unflat(c) for c in ctx], latent_hw

    def _shared_step(self, batch, stage: str):
        clips = batch[0] if isinstance(batch, (list, tuple)) else batch
        if clips.ndim == 4:
            clips = clips[:, None]
        B, T, _, H, W = clips.shape
        tokens, ctx, _ = self.tokens_and_context(clips)
        if stage == "train":
            self.context_model.count_unigram(tokens)
        logits_BLV = self.context_model(ctx, tokens)
        target_BL, scale_L = self.context_model.flatten_tokens(tokens)
        nll_BL = F.cross_entropy(logits_BLV.transpose(1, 2), target_BL, reduction="none",
                                 label_smoothing=self.hparams.label_smoothing)
        loss = nll_BL.mean()
        bits_L = nll_BL.detach().mean(0) / math.log(2)
        logs = {f"{stage}/loss": loss, f"{stage}/bits_per_token": bits_L.mean()}
        scale_L = scale_L.to(bits_L.device)
        cum_bits = 0.0
        for s in range(len(tokens)):
            sel = scale_L == s
            logs[f"{stage}/bits_per_token_s{s}"] = bits_L[sel].mean()
            cum_bits = cum_bits + bits_L[sel].sum()
            logs[f"{stage}/est_bpp_k{s + 1}"] = cum_bits / (T * H * W)
        self.log_dict(logs, prog_bar=False)
        self.log(f"{stage}/bits", bits_L.mean(), prog_bar=True)
        return loss

    def training_step(self, batch, batch_idx):
        return self._shared_step(batch, "train")

    def validation_step(self, batch, batch_idx):
        self._shared_step(batch, "val")

    def on_train_end(self):
        if self.hparams.export_path and self.trainer.is_global_zero:
            export_codec(self.hparams.export_path, self.tokenizer, self.quantizer, self.context_model,
                         gop=self.hparams.export_gop, meta=self.hparams.export_meta)


def export_codec(path, tokenizer, quantizer, context_model, gop: int = 8, meta: dict | None = None):
    """Write a codec checkpoint that ``Codec.from_pretrained(path)`` loads."""
    from ..codec import Codec
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    codec = Codec(tokenizer, quantizer, context_model.cpu().eval(), gop=gop)
    codec.save(path, meta=meta)
    return codec
