"""LightningModules for the two training stages.

::

    stage 1  clip (B, T, 3, H, W) ─► frames (B*T) ─► Tokenizer.encode ─► Quantizer(upto=k) ─► decode
             loss = l1_weight L1 + mse_weight MSE + msssim_weight (1 - MS-SSIM) + quantizer loss;
             k < K at random ("scale dropout"), so truncated pyramids decode to sensible frames too.
             ``ema_decay > 0`` keeps an exponential moving average of the tokenizer and quantizer
             weights; validation and the exported ``stage1.pt`` then use the averaged weights.
             ``finetune_from`` + ``train_only="decoder"``: start from a trained codec, freeze its
             encoder and quantizer (so every token, and hence the context model, stays valid) and
             train only the decoder; ``export_codec_path`` writes that codec with the new decoder.

    stage 2  clip ─► frozen tokenizer + quantizer ─► tokens[s] (B, T, h_s, w_s), context inputs
             ─► ContextModel teacher-forced pass (mask) ─► cross-entropy
             logged as bits per token per scale and as estimated bpp for every truncation level.
             ``token_choice="rdo"``: the tokens are the ones the encoder sends, RD-optimised by a frozen
             codec (``rdo_source``, count gate, ``rdo_lambda``) instead of the nearest codes: copies
             of the previous frame are far more frequent in real streams than among nearest codes,
             and a learned copy gate (``gate_head``) trained on nearest codes learns the wrong rate.

Stage 1 saves ``stage1.pt`` (tokenizer + quantizer) for stage 2; stage 2 exports the full codec
(``Codec.save``) that ``Codec.from_pretrained`` loads. Any stage is swapped by ``class_path`` in the
YAML config: a class with the members of ``stages.protocols`` (a subclass of the built-in or not);
both files record each stage's ``{class_path, init_args}`` and are rebuilt as that class.
"""
from __future__ import annotations

import copy
import math
from pathlib import Path

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from einops import rearrange

from ..stages import protocols, registry
from ..stages.context_model import copy_mixture_nll
from ..walk import copy_training_targets, has_gate_head


def _warmup_cosine(step: int, total: int, warmup: int = 100, floor: float = 0.1) -> float:
    if step < warmup:
        return (step + 1) / warmup
    if total <= warmup:
        return 1.0
    progress = min(1.0, (step - warmup) / (total - warmup))
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))


def _psnr(a, b):
    return -10 * torch.log10(F.mse_loss(a, b).clamp_min(1e-10))


MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)


def ms_ssim_loss_value(x_hat, x, win_size: int = 7, eps: float = 1e-3) -> torch.Tensor:
    """Differentiable MS-SSIM (RGB, data range 1) of a batch, mean over images.

    The standard 5-level product (the weights of Wang et al. 2003, the per-level SSIM/CS from
    ``pytorch_msssim``), but each level's value is clamped at ``eps`` instead of pytorch_msssim's
    ReLU: ``v ** w`` with ``w < 1`` has an unbounded gradient as ``v -> 0`` (and NaN at 0), which
    blows up the latents early in training when a coarse level's contrast-structure term is near
    zero. Above ``eps`` the value equals ``pytorch_msssim.ms_ssim``.

    pytorch_msssim's layout needs the smaller side over ``(win_size - 1) * 16`` (4 down-samplings):
    the window shrinks (odd sizes down to 3) for small crops, and crops under 33 px fall back to
    single-scale SSIM, so tests on tiny crops still run. 128-px crops use ``win_size=7``.
    """
    from pytorch_msssim.ssim import _fspecial_gauss_1d, _ssim

    side = min(x.shape[-2:])
    win = win_size
    while win > 3 and side <= (win - 1) * 16:
        win -= 2
    levels = len(MS_SSIM_WEIGHTS) if side > (win - 1) * 16 else 1
    if levels == 1:
        win = max(1, min(win, side - (1 - side % 2)))
    kernel = _fspecial_gauss_1d(win, 1.5).repeat([x.shape[1], 1, 1, 1])
    a, b = x_hat, x
    values = []
    for i in range(levels):
        ssim_BC, cs_BC = _ssim(a, b, data_range=1.0, win=kernel, size_average=False)
        if i < levels - 1:
            values.append(cs_BC)
            pad = [n % 2 for n in a.shape[2:]]
            a, b = F.avg_pool2d(a, 2, padding=pad), F.avg_pool2d(b, 2, padding=pad)
    values.append(ssim_BC)
    weights = MS_SSIM_WEIGHTS if levels > 1 else (1.0,)
    w = x.new_tensor(weights).view(-1, 1, 1)
    return torch.prod(torch.stack(values).clamp_min(eps) ** w, dim=0).mean()


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
        """A batch of clips (B, T, 3, H, W) as frames (B*T, 3, H, W); frames pass as they are."""
        x = batch[0] if isinstance(batch, (list, tuple)) else batch
        return rearrange(x, "b t c h w -> (b t) c h w") if x.ndim == 5 else x


class TokenizerModule(_Base):
    """Stage 1: tokenizer + quantizer. Swap either by ``class_path`` in the YAML config."""

    def __init__(self, tokenizer: protocols.Tokenizer, quantizer: protocols.Quantizer, lr: float = 2e-3,
                 scale_dropout: float = 0.3, l1_weight: float = 1.0, mse_weight: float = 1.0,
                 quant_weight: float = 1.0, restart_every: int = 25, export_path: str | None = None,
                 msssim_weight: float = 0.0, msssim_win: int = 7, msssim_start: int = 0,
                 ema_decay: float = 0.0, ema_warmup: int = 100, finetune_from: str | None = None,
                 train_only: str = "all", export_codec_path: str | None = None,
                 export_meta: dict | None = None):
        """``msssim_weight``: weight of ``1 - MS-SSIM`` (e.g. 0.84 with ``l1_weight`` 0.16 and
        ``mse_weight`` 0, Zhao et al. 2017); ``msssim_win``: its Gaussian window (7 for 128-px crops);
        ``msssim_start``: training steps of plain L1 + MSE first (MS-SSIM is unstable on the noise
        an untrained decoder makes, so it takes over from a rough reconstruction).
        ``ema_decay``: weight EMA (e.g. 0.999; 0 = off), ramped in as ``min(decay, (1+t)/(warmup+t))``;
        when on, validation and the exported weights are the EMA ones.

        ``finetune_from``: a codec checkpoint (a shipped name such as ``"tiny"``, a ``.pt`` written by
        stage 2) or a ``stage1.pt``; its tokenizer and quantizer weights are the starting point (their
        configs must equal this run's). ``train_only``: ``"all"`` or ``"decoder"`` (encoder and
        quantizer frozen: the tokens of every frame stay exactly those of ``finetune_from``, so its
        context model still fits them, and the decoder learns e.g. an MS-SSIM loss on them).
        ``export_codec_path``: with ``train_only="decoder"`` and a codec as ``finetune_from``, also
        write that codec with the fine-tuned (EMA) decoder, loadable by ``Codec.from_pretrained``;
        ``export_meta`` goes into it."""
        super().__init__()
        self.save_hyperparameters(ignore=["tokenizer", "quantizer"])
        protocols.check("tokenizer", tokenizer)
        protocols.check("quantizer", quantizer)
        if tokenizer.latent_dim != quantizer.latent_dim:
            raise ValueError(f"tokenizer.latent_dim ({tokenizer.latent_dim}) must equal "
                             f"quantizer.latent_dim ({quantizer.latent_dim})")
        if not 0.0 <= ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1), got {ema_decay}")
        if train_only not in TRAIN_ONLY:
            raise ValueError(f"train_only must be one of {TRAIN_ONLY}, got {train_only!r}")
        if train_only == "decoder" and not finetune_from:
            raise ValueError("train_only='decoder' fine-tunes a trained decoder: give finetune_from "
                             "(a codec checkpoint such as 'tiny', or a stage1.pt)")
        if export_codec_path and train_only != "decoder":
            raise ValueError("export_codec_path keeps the context model of finetune_from, which only fits "
                             "the new tokenizer when its encoder and quantizer stay frozen: "
                             "set train_only='decoder' (or train stage 2 on the new stage 1)")
        if finetune_from:
            load_weights_into(finetune_from, tokenizer, quantizer, new_decoder=train_only == "decoder")
        if train_only == "decoder":
            for p in list(tokenizer.encoder.parameters()) + list(quantizer.parameters()):
                p.requires_grad_(False)
        self.tokenizer, self.quantizer = tokenizer, quantizer
        self.lr = lr
        self.ema_tokenizer = self.ema_quantizer = None
        if ema_decay > 0:
            self.ema_tokenizer, self.ema_quantizer = copy.deepcopy(tokenizer), copy.deepcopy(quantizer)
            for p in list(self.ema_tokenizer.parameters()) + list(self.ema_quantizer.parameters()):
                p.requires_grad_(False)

    # ---- weight EMA --------------------------------------------------------------------------
    def _ema_pairs(self):
        return ((self.ema_tokenizer, self.tokenizer), (self.ema_quantizer, self.quantizer))

    @torch.no_grad()
    def update_ema(self, step: int):
        if self.ema_tokenizer is None:
            return
        decay = min(self.hparams.ema_decay, (1 + step) / (self.hparams.ema_warmup + step))
        for ema, live in self._ema_pairs():
            for pe, p in zip(ema.parameters(), live.parameters()):
                pe.lerp_(p.detach(), 1.0 - decay)
            for be, b in zip(ema.buffers(), live.buffers()):
                be.copy_(b)

    def on_train_batch_end(self, outputs, batch, batch_idx):
        self.update_ema(self.global_step)

    def train(self, mode: bool = True):
        super().train(mode)
        if self.ema_tokenizer is not None:  # the averaged copies never train (no dropout/norm updates)
            self.ema_tokenizer.eval()
            self.ema_quantizer.eval()
        if self.hparams.train_only == "decoder":  # frozen: no code-usage counts, no restarts
            self.tokenizer.encoder.eval()
            self.quantizer.eval()
        return self

    # the quantizer's code-usage statistics are a non-persistent buffer (not in the state dict), so a
    # resumed run would start from zero usage and restart every code not hit in its first
    # ``restart_every`` steps: keep them in the Lightning checkpoint instead
    def on_save_checkpoint(self, checkpoint):
        checkpoint["quantizer_code_usage"] = self.quantizer.code_usage.detach().cpu().clone()

    def on_load_checkpoint(self, checkpoint):
        usage = checkpoint.get("quantizer_code_usage")
        if usage is not None and usage.shape == self.quantizer.code_usage.shape:
            self.quantizer.code_usage.copy_(usage)
        else:  # an older checkpoint: count every code as alive (restarted after ~230 steps unused)
            self.quantizer.code_usage.fill_(1e-2)

    def export_modules(self) -> tuple[protocols.Tokenizer, protocols.Quantizer]:
        """The (tokenizer, quantizer) that validation uses and ``stage1.pt`` gets: the EMA ones if on."""
        if self.ema_tokenizer is not None:
            return self.ema_tokenizer, self.ema_quantizer
        return self.tokenizer, self.quantizer

    # ---- steps -------------------------------------------------------------------------------
    def reconstruction_loss(self, x_hat, x) -> tuple[torch.Tensor, dict]:
        h = self.hparams
        loss, parts = 0.0, {}
        if h.msssim_weight and self.training and self.global_step < h.msssim_start:
            parts["l1"], parts["mse"] = F.l1_loss(x_hat, x), F.mse_loss(x_hat, x)
            return parts["l1"] + parts["mse"], parts
        if h.l1_weight:
            parts["l1"] = F.l1_loss(x_hat, x)
            loss = loss + h.l1_weight * parts["l1"]
        if h.mse_weight:
            parts["mse"] = F.mse_loss(x_hat, x)
            loss = loss + h.mse_weight * parts["mse"]
        if h.msssim_weight:
            parts["msssim"] = ms_ssim_loss_value(x_hat, x, h.msssim_win)
            loss = loss + h.msssim_weight * (1 - parts["msssim"])
        return loss, parts

    def _shared_step(self, batch, stage: str):
        x = self.frames(batch)
        tokenizer, quantizer = (self.tokenizer, self.quantizer) if stage == "train" else self.export_modules()
        K = quantizer.num_scales
        k = K
        if stage == "train" and torch.rand(()) < self.hparams.scale_dropout:
            k = int(torch.randint(1, K, ()))
        if self.hparams.train_only == "decoder":  # the tokens the frozen encoder sends, as the codec does
            with torch.no_grad():
                f = tokenizer.encode(x)
                f_hat = quantizer.tokens_to_latent(quantizer.tokenize(f), f.shape[-2:], upto=k)
            q_loss = f.new_zeros(())
        else:
            f = tokenizer.encode(x)
            f_hat, _, q_loss = quantizer(f, upto=k)
        x_hat = tokenizer.decode(f_hat, x.shape[-2:])
        rec, parts = self.reconstruction_loss(x_hat, x)
        loss = rec + self.hparams.quant_weight * q_loss
        sync = stage != "train"  # validation metrics: averaged over the DDP ranks
        self.log_dict({f"{stage}/loss": loss, f"{stage}/quant_loss": q_loss}, prog_bar=stage == "train",
                      sync_dist=sync)
        if "msssim" in parts and k == K:
            self.log(f"{stage}/msssim", parts["msssim"], sync_dist=sync)
        if k == K:
            self.log(f"{stage}/psnr", _psnr(x_hat.clamp(0, 1), x), prog_bar=True, sync_dist=sync)
        if stage == "train" and self.hparams.train_only == "all":
            usage = self.quantizer.code_usage
            p = usage / usage.sum()
            self.log("train/codebook_perplexity", torch.exp(-(p * p.clamp_min(1e-12).log()).sum()))
            if self.hparams.restart_every and self.global_step % self.hparams.restart_every == 0 and self.global_step > 0:
                self.log("train/codes_restarted", float(self.restart_dead_codes(f.detach())))
        return loss

    @torch.no_grad()
    def restart_dead_codes(self, f_NChw: torch.Tensor) -> int:
        """``quantizer.restart_dead_codes``, agreed by every DDP rank.

        Each rank counts code usage on its own batches, and a restart picks random latents of its own
        batch, so ranks doing it on their own would end with different codebooks (DDP only averages
        gradients; it never re-synchronises weights). So: the usage is averaged over the ranks (one
        dead set for all), rank 0 restarts, and its codebook and usage are broadcast to the others.
        """
        q = self.quantizer
        dist = torch.distributed
        if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
            return q.restart_dead_codes(f_NChw)
        dist.all_reduce(q.code_usage, op=dist.ReduceOp.SUM)
        q.code_usage.div_(dist.get_world_size())
        moved = torch.zeros((), dtype=torch.long, device=q.code_usage.device)
        if dist.get_rank() == 0:
            moved.fill_(q.restart_dead_codes(f_NChw))
        for tensor in (q.codebook.weight.data, q.code_usage, moved):
            dist.broadcast(tensor, src=0)
        return int(moved)

    def training_step(self, batch, batch_idx):
        return self._shared_step(batch, "train")

    def validation_step(self, batch, batch_idx):
        self._shared_step(batch, "val")
        x = self.frames(batch)
        tokenizer, quantizer = self.export_modules()
        f = tokenizer.encode(x)
        tokens = quantizer.tokenize(f)
        with_msssim = min(x.shape[-2:]) > 96
        for k in range(1, quantizer.num_scales + 1):
            x_hat = tokenizer.decode(quantizer.tokens_to_latent(tokens, f.shape[-2:], upto=k), x.shape[-2:]).clamp(0, 1)
            self.log(f"val/psnr_k{k}", _psnr(x_hat, x), sync_dist=True)
            if with_msssim:
                self.log(f"val/msssim_k{k}", ms_ssim_loss_value(x_hat, x, self.hparams.msssim_win), sync_dist=True)

    def on_train_end(self):
        if not self.trainer.is_global_zero:
            return
        if self.hparams.export_path:
            save_stage1(self.hparams.export_path, *self.export_modules())
        if self.hparams.export_codec_path:
            export_finetuned_codec(self.hparams.export_codec_path, self.hparams.finetune_from,
                                   self.export_modules()[0], meta=self.hparams.export_meta)


TRAIN_ONLY = ("all", "decoder")


def _load_source(source: str, trust_class_paths: bool = False):
    """(tokenizer, quantizer, codec or None) of a codec checkpoint / shipped name, or of a stage1.pt
    (``trust_class_paths``: see ``Codec.load``)."""
    from ..checkpoint import load_tensors
    from ..codec import Codec

    path = Path(source)
    if not path.exists() and path.suffix in (".pt", ".pth", ".ckpt"):
        load_stage1(path)  # raises: not found, with the hint to train stage 1 first
    if path.is_file():
        ckpt = load_tensors(path, "checkpoint")
        if "tokenizer_state" in ckpt:  # a stage1.pt
            return (*load_stage1(path, trust_class_paths), None)
    codec = Codec.from_pretrained(str(source), trust_class_paths=trust_class_paths)
    return codec.tokenizer, codec.quantizer, codec


DECODER_FIELDS = ("decoder_width",)   # tokenizer settings that shape only the decoder


def load_weights_into(source: str, tokenizer, quantizer, new_decoder: bool = False) -> None:
    """Copy the tokenizer and quantizer weights of ``source`` (see ``_load_source``) into these modules;
    their configs must be equal, so that the weights mean the same thing.

    ``new_decoder`` (decoder-only training): the tokenizer's config may differ from the source's in the
    decoder's shape (``DECODER_FIELDS``, e.g. a narrower ``decoder_width``); then only the encoder's
    weights are copied and the decoder starts from its own initialisation, learning to decode the
    source's unchanged tokens."""
    src_tok, src_quant, _ = _load_source(source)
    for name, mine, theirs in (("tokenizer", tokenizer, src_tok), ("quantizer", quantizer, src_quant)):
        a, b = registry.init_args(mine), registry.init_args(theirs)
        fresh_decoder = False
        if name == "tokenizer" and new_decoder and type(mine) is type(theirs) and a != b:
            strip = lambda d: {k: v for k, v in d.items() if k not in DECODER_FIELDS}  # noqa: E731
            fresh_decoder = strip(a) == strip(b)
        if type(mine) is not type(theirs) or (a != b and not fresh_decoder):
            raise ValueError(f"finetune_from={source}: its {name} ({type(theirs).__name__} "
                             f"{b}) differs from this run's ({type(mine).__name__} {a}); set the same "
                             "init_args in the config" + (f" (with train_only='decoder' only "
                                                          f"{', '.join(DECODER_FIELDS)} may differ)"
                                                          if name == "tokenizer" else ""))
        state = {k: v.contiguous() for k, v in theirs.state_dict().items()}
        if fresh_decoder:
            state = {k: v for k, v in state.items() if k.startswith("encoder.")}
            missing, unexpected = mine.load_state_dict(state, strict=False)
            assert not unexpected and all(k.startswith("decoder.") for k in missing), (missing, unexpected)
        else:
            mine.load_state_dict(state)


def export_finetuned_codec(path, source: str, tokenizer, meta: dict | None = None):
    """The codec of ``source`` with ``tokenizer``'s weights (its encoder must be unchanged: checked on
    the weights, so that the stream's tokens, the quantizer and the context model still belong together)."""
    import copy as _copy

    _, _, codec = _load_source(source)
    if codec is None:
        raise ValueError(f"export_codec_path needs a codec checkpoint as finetune_from, got the stage-1 file {source}")
    src_state = codec.tokenizer.state_dict()
    new_state = tokenizer.state_dict()
    moved = [k for k in src_state if k.startswith("encoder.") and not torch.equal(src_state[k], new_state[k])]
    if moved:
        raise ValueError(f"the encoder changed during fine-tuning ({moved[0]}, ...): the source codec's "
                         "context model no longer fits its tokens")
    out = _copy.deepcopy(codec)
    if registry.init_args(out.tokenizer) == registry.init_args(tokenizer):
        out.tokenizer.load_state_dict(new_state)
    else:   # a decoder of another shape (``load_weights_into(new_decoder=True)``): the trained tokenizer itself
        out.tokenizer = _copy.deepcopy(tokenizer).to(memory_format=torch.channels_last)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    out.save(path, meta=dict(meta or {}))
    return out


def save_stage1(path, tokenizer: protocols.Tokenizer, quantizer: protocols.Quantizer):
    """Tokenizer and quantizer as ``{class_path, init_args}`` and their weights (tensors only)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    torch.save({"tokenizer": registry.spec(tokenizer), "quantizer": registry.spec(quantizer),
                "tokenizer_state": tokenizer.state_dict(), "quantizer_state": quantizer.state_dict()}, path)


def load_stage1(path, trust_class_paths: bool = False) -> tuple[protocols.Tokenizer, protocols.Quantizer]:
    """``save_stage1``'s (tokenizer, quantizer), rebuilt as the recorded classes (the built-ins for
    files without class paths); which classes load: ``stages.registry.resolve``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"stage-1 weights {path} not found; train stage 1 first "
                                "(progvc-lab train stage1 --config configs/tiny_stage1.yaml)")
    from ..checkpoint import CheckpointError, check_stage, check_state_dict, load_tensors

    ckpt = load_tensors(path, "stage-1 checkpoint")  # tensors only: weights_only=True
    for key in ("tokenizer", "quantizer", "tokenizer_state", "quantizer_state"):
        if key not in ckpt:
            raise CheckpointError(f"{path} is not a stage-1 checkpoint (no '{key}' entry; written by save_stage1)")
    specs = [check_stage(kind, ckpt[kind], path, trust=trust_class_paths) for kind in ("tokenizer", "quantizer")]
    try:
        tok, quant = (registry.build(kind, spec, trust_class_paths) for kind, spec in zip(("tokenizer", "quantizer"), specs))
        protocols.check("tokenizer", tok)
        protocols.check("quantizer", quant)
        tok.load_state_dict(check_state_dict(ckpt["tokenizer_state"], path, "tokenizer_state"))
        quant.load_state_dict(check_state_dict(ckpt["quantizer_state"], path, "quantizer_state"))
    except (RuntimeError, TypeError, ValueError) as e:
        raise CheckpointError(f"{path}: its weights do not fit its config ({str(e).splitlines()[0][:300]})") from None
    return tok.eval(), quant.eval()


class ContextModule(_Base):
    """Stage 2: the context model on frozen stage-1 tokens. Swap it (or its mask) in the YAML config."""

    def __init__(self, context_model: protocols.ContextModel, stage1_path: str, lr: float = 1e-3,
                 label_smoothing: float = 0.0, export_path: str | None = None, export_gop: int = 8,
                 export_meta: dict | None = None, finetune_from: str | None = None,
                 trust_class_paths: bool = False, token_choice: str = "nearest", rdo_source: str | None = None,
                 rdo_lambda: float = 0.005):
        """``stage1_path``: a ``stage1.pt``, or a codec checkpoint / shipped name (its tokenizer and
        quantizer). ``finetune_from``: a codec checkpoint whose context model weights (and unigram
        counts) are the starting point; its context-model config must equal this run's.
        ``trust_class_paths``: let those files name a stage class that is not registered in this
        process (its module is imported: only for files you made).
        ``token_choice``: ``"nearest"`` (the quantizer's nearest codes) or ``"rdo"`` (what the encoder of
        the frozen codec ``rdo_source`` sends at ``rdo_lambda`` with the count gate, one GOP per clip;
        default source: ``finetune_from``, else ``stage1_path`` when it is a codec)."""
        super().__init__()
        self.save_hyperparameters(ignore=["context_model"])
        if token_choice not in ("nearest", "rdo"):
            raise ValueError(f"token_choice must be 'nearest' or 'rdo', got {token_choice!r}")
        protocols.check("context_model", context_model)
        self.context_model = context_model
        self.tokenizer, self.quantizer, stage1_codec = _load_source(stage1_path, trust_class_paths)
        self.tokenizer.eval(), self.quantizer.eval()
        # the RDO codec is kept out of the module tree (object.__setattr__): frozen, not in the Lightning
        # checkpoint, not moved to an accelerator (its encoder runs on the CPU, as ``progvc-lab encode`` does)
        object.__setattr__(self, "_rdo_codec", None)
        if token_choice == "rdo":
            src = rdo_source or finetune_from
            codec = _load_source(src, trust_class_paths)[2] if src else stage1_codec
            if codec is None:
                raise ValueError("token_choice='rdo' needs a codec to choose the tokens: give rdo_source "
                                 "(or finetune_from, or a codec as stage1_path)")
            theirs = {**codec.tokenizer.state_dict(), **codec.quantizer.state_dict()}
            mine = {**self.tokenizer.state_dict(), **self.quantizer.state_dict()}
            if theirs.keys() != mine.keys() or any(not torch.equal(theirs[k], mine[k]) for k in mine):
                raise ValueError(f"rdo_source {src}: its tokenizer and quantizer are not this run's stage 1")
            object.__setattr__(self, "_rdo_codec", codec.eval())
            for p in codec.parameters():
                p.requires_grad_(False)
        if finetune_from:
            _, _, source = _load_source(finetune_from, trust_class_paths)
            if source is None:
                raise ValueError(f"finetune_from={finetune_from}: a codec checkpoint is needed (it has the context model)")
            # the mask may differ (same weights, another attention pattern: a mask variant starts here)
            # a gate head may be added (it starts at zero: the count gate) and trained with the rest
            free = ("mask", "gate_head")
            theirs, mine = ({k: v for k, v in registry.init_args(m).items() if k not in free}
                            for m in (source.context_model, context_model))
            if type(source.context_model) is not type(context_model) or theirs != mine:
                raise ValueError(f"finetune_from={finetune_from}: its context model {registry.init_args(source.context_model)} "
                                 f"differs from this run's {registry.init_args(context_model)} (only the mask and "
                                 "the gate head may differ)")
            missing, unexpected = context_model.load_state_dict(source.context_model.state_dict(), strict=False)
            if unexpected or any(not k.startswith("gate.") for k in missing):
                raise ValueError(f"finetune_from={finetune_from}: weights do not fit (missing {missing}, "
                                 f"unexpected {unexpected})")
        for p in list(self.tokenizer.parameters()) + list(self.quantizer.parameters()):
            p.requires_grad_(False)
        cfg, q = context_model.config, self.quantizer
        if (cfg.codebook_size, cfg.latent_dim, cfg.num_scales) != (q.codebook_size, q.latent_dim, q.num_scales):
            raise ValueError(f"context model (V={cfg.codebook_size}, C={cfg.latent_dim}, K={cfg.num_scales}) does "
                             f"not fit the stage-1 quantizer (V={q.codebook_size}, C={q.latent_dim}, K={q.num_scales})")
        if label_smoothing and has_gate_head(context_model):
            raise ValueError("label_smoothing is not defined for a context model with a gate head (its loss is "
                             "the copy mixture's likelihood)")
        self.lr = lr

    def train(self, mode: bool = True):
        super().train(mode)
        self.tokenizer.eval()   # frozen stages stay in eval mode
        self.quantizer.eval()
        return self

    @torch.no_grad()
    def tokens_and_context(self, clips_BT3HW: torch.Tensor):
        B, T = clips_BT3HW.shape[:2]
        if self._rdo_codec is not None:
            return self.rdo_tokens_and_context(clips_BT3HW)
        f = self.tokenizer.encode(clips_BT3HW.flatten(0, 1))
        latent_hw = tuple(f.shape[-2:])
        tokens = self.quantizer.tokenize(f)
        ctx = self.quantizer.context_inputs(tokens, latent_hw)
        unflat = lambda x: rearrange(x, "(b t) ... -> b t ...", b=B, t=T)  # noqa: E731
        return [unflat(t) for t in tokens], [unflat(c) for c in ctx], latent_hw

    @torch.no_grad()
    def rdo_tokens_and_context(self, clips_BT3HW: torch.Tensor):
        """The tokens ``rdo_source``'s encoder sends for each clip (one all-P GOP, count gate, RDO at
        ``rdo_lambda``) and their context inputs: what a deployed context model is asked to predict."""
        B, T = clips_BT3HW.shape[:2]
        codec, per_clip = self._rdo_codec, []
        for b in range(B):
            _, res = codec.encode_with_stats(clips_BT3HW[b].detach().float().cpu(), gop=T, copy_gate="count",
                                             rdo_lambda=self.hparams.rdo_lambda)
            per_clip.append(res.tokens)
        device = clips_BT3HW.device
        tokens = [torch.stack([c[s] for c in per_clip]).to(device) for s in range(len(per_clip[0]))]
        latent_hw = tuple(tokens[-1].shape[-2:])
        flat = [rearrange(t, "b t h w -> (b t) h w") for t in tokens]
        ctx = self.quantizer.context_inputs(flat, latent_hw)
        unflat = lambda x: rearrange(x, "(b t) ... -> b t ...", b=B, t=T)  # noqa: E731
        return tokens, [unflat(c) for c in ctx], latent_hw

    def _shared_step(self, batch, stage: str):
        clips = batch[0] if isinstance(batch, (list, tuple)) else batch
        if clips.ndim == 4:
            clips = clips[:, None]
        B, T, _, H, W = clips.shape
        tokens, ctx, _ = self.tokens_and_context(clips)
        if stage == "train":
            self.count_unigram(tokens)
        target_BL, scale_L = self.context_model.flatten_tokens(tokens)
        if has_gate_head(self.context_model):
            # a learned copy gate: the loss is the copy mixture the codec codes P frames with
            logits_BLV, gate_BL = self.context_model.forward_with_gate(ctx, tokens)
            prev_BL, offset_BL = copy_training_targets(tokens)
            lengths = [tok[0, 0].numel() for _ in range(T) for tok in tokens]   # forward's block order
            nll_BL = copy_mixture_nll(logits_BLV, gate_BL, target_BL, prev_BL, offset_BL, lengths)
        else:
            logits_BLV = self.context_model(ctx, tokens)
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
        sync = stage != "train"  # validation metrics: averaged over the DDP ranks
        self.log_dict(logs, prog_bar=False, sync_dist=sync)
        self.log(f"{stage}/bits", bits_L.mean(), prog_bar=True, sync_dist=sync)
        return loss

    @torch.no_grad()
    def count_unigram(self, tokens):
        """``context_model.count_unigram`` over every DDP rank's batch: the batch's counts are summed
        over the ranks (the exported histogram is the whole training data's, on every rank)."""
        cm = self.context_model
        dist = torch.distributed
        if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
            return cm.count_unigram(tokens)
        before = cm.unigram_counts.clone()
        cm.count_unigram(tokens)
        delta = cm.unigram_counts - before
        dist.all_reduce(delta, op=dist.ReduceOp.SUM)
        cm.unigram_counts.copy_(before + delta)

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
