"""Training runs for real, through the same LightningCLI entry point users call.

Tiny models on synthetic clips (no ../shared needed); the DDP test runs 2 CPU processes over gloo.
"""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from helpers import TINY_CONTEXT
from progvc_lab.codec import Codec
from progvc_lab.training.cli import main as train_main

ROOT = Path(__file__).resolve().parents[1]

TINY_MODEL = [
    "--model.tokenizer.init_args.width", "8", "--model.tokenizer.init_args.max_width", "16",
    "--model.tokenizer.init_args.groups", "4",
    "--model.quantizer.init_args.codebook_size", "32",
]
TINY_DATA = ["--data.sources", "[]", "--data.val_sources", "[]", "--data.synthetic_fallback", "true",
             "--data.samples_per_epoch", "16", "--data.val_samples", "2"]


def _trainer(tmp: Path, steps: int) -> list[str]:
    return ["--trainer.max_steps", str(steps), "--trainer.default_root_dir", str(tmp),
            "--trainer.logger.init_args.save_dir", str(tmp), "--trainer.val_check_interval", str(steps),
            "--trainer.limit_val_batches", "1", "--trainer.enable_progress_bar", "false",
            "--trainer.log_every_n_steps", "1"]


def test_stage1_then_stage2_export_a_codec_that_round_trips(tmp_path):
    stage1 = tmp_path / "stage1.pt"
    train_main(["stage1", "--config", str(ROOT / "configs/tiny_stage1.yaml"), *_trainer(tmp_path / "s1", 3),
                *TINY_MODEL, *TINY_DATA, "--data.crop_size", "[32,32]", "--data.batch_size", "2",
                "--model.export_path", str(stage1)])
    assert stage1.is_file()
    # the CSV log has the per-scale validation PSNR
    metrics = next((tmp_path / "s1").rglob("metrics.csv")).read_text()
    assert "val/psnr_k1" in metrics and "val/psnr_k6" in metrics

    codec_path = tmp_path / "codec.pt"
    train_main(["stage2", "--config", str(ROOT / "configs/tiny_stage2.yaml"), *_trainer(tmp_path / "s2", 2),
                "--model.stage1_path", str(stage1), "--model.export_path", str(codec_path),
                *TINY_CONTEXT,
                *TINY_DATA, "--data.crop_size", "[32,48]", "--data.clip_len", "2"])
    metrics = next((tmp_path / "s2").rglob("metrics.csv")).read_text()
    assert "train/bits_per_token_s0" in metrics and "val/est_bpp_k6" in metrics

    codec = Codec.from_pretrained(str(codec_path))
    video = torch.rand(3, 3, 24, 40)
    tokens, _ = codec.tokenize(video)
    # nearest-code tokens are what the encoder sends without RD optimisation (rdo_lambda = 0)
    decoded, _ = codec.decode_tokens(codec.encode(video, rdo_lambda=0))
    assert all(torch.equal(a, b) for a, b in zip(tokens, decoded))


def test_stage2_refuses_a_context_model_that_does_not_fit_stage1(tmp_path):
    stage1 = tmp_path / "stage1.pt"
    train_main(["stage1", "--config", str(ROOT / "configs/tiny_stage1.yaml"), *_trainer(tmp_path / "s1", 1),
                *TINY_MODEL, *TINY_DATA, "--data.crop_size", "[32,32]", "--data.batch_size", "2",
                "--model.export_path", str(stage1)])
    with pytest.raises(ValueError, match="does not fit the stage-1 quantizer"):
        train_main(["stage2", "--config", str(ROOT / "configs/tiny_stage2.yaml"), *_trainer(tmp_path / "s2", 1),
                    "--model.stage1_path", str(stage1), *TINY_DATA])


DDP_PROBE = """
import hashlib, json, os
import lightning.pytorch as pl
import torch


def digest(t):
    return hashlib.sha256(t.detach().cpu().contiguous().numpy().tobytes()).hexdigest()[:16]


class Probe(pl.Callback):
    # per rank: a hash of every training batch, the codebook after training, the synced val metrics

    def __init__(self, out_dir: str):
        self.out_dir, self.batches = out_dir, []

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        self.batches.append(digest(batch))

    def on_train_end(self, trainer, module):
        q = module.quantizer
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
        with open(os.path.join(self.out_dir, f"rank{trainer.global_rank}.json"), "w") as f:
            json.dump({"batches": self.batches, "codebook": digest(q.codebook.weight), "usage": digest(q.code_usage),
                       "val": metrics}, f)
"""


def test_ddp_two_cpu_processes(tmp_path):
    """Scaling out is Lightning's DDP: 2 processes, gloo backend, a few steps. The ranks must train on
    different samples (the crops once came from the global torch RNG, identical on every rank), agree
    on the codebook after dead-code restarts, and report the same (synced) validation metrics."""
    (tmp_path / "ddp_probe.py").write_text(DDP_PROBE)
    cmd = [sys.executable, "-m", "progvc_lab.training.cli", "stage1", "--config",
           str(ROOT / "configs/tiny_stage1.yaml"), *_trainer(tmp_path, 3), *TINY_MODEL, *TINY_DATA,
           "--data.crop_size", "[32,32]", "--data.batch_size", "2", "--model.export_path", str(tmp_path / "s1.pt"),
           "--model.restart_every", "1", "--trainer.strategy", "ddp", "--trainer.devices", "2",
           "--trainer.callbacks+=ddp_probe.Probe", f"--trainer.callbacks.out_dir={tmp_path}"]
    env = dict(os.environ, OMP_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join([str(tmp_path), str(ROOT), os.environ.get("PYTHONPATH", "")]))
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "distributed_backend=gloo" in out.stderr + out.stdout
    assert (tmp_path / "s1.pt").is_file()
    import json
    r0, r1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    assert len(r0["batches"]) == len(r1["batches"]) == 3
    assert not set(r0["batches"]) & set(r1["batches"]), "two DDP ranks trained on the same batch"
    assert r0["codebook"] == r1["codebook"] and r0["usage"] == r1["usage"]
    assert r0["val"] and r0["val"] == r1["val"]


def test_resume_from_last_checkpoint(tmp_path):
    """A run stopped at step 2 resumes from last.ckpt and continues to step 4."""
    args = ["stage1", "--config", str(ROOT / "configs/tiny_stage1.yaml"), *TINY_MODEL, *TINY_DATA,
            "--data.crop_size", "[32,32]", "--data.batch_size", "2", "--model.export_path", str(tmp_path / "s1.pt")]
    train_main(args + _trainer(tmp_path / "a", 2))
    last = next((tmp_path / "a").rglob("last.ckpt"))
    assert torch.load(last, map_location="cpu", weights_only=False)["global_step"] == 2
    train_main(args + _trainer(tmp_path / "b", 4) + ["--ckpt_path", str(last)])
    resumed = next((tmp_path / "b").rglob("last.ckpt"))
    assert torch.load(resumed, map_location="cpu", weights_only=False)["global_step"] == 4


def test_msssim_loss_matches_pytorch_msssim_and_has_finite_gradients():
    from pytorch_msssim import ms_ssim

    from progvc_lab.training.modules import ms_ssim_loss_value

    x = torch.rand(2, 3, 128, 128)
    y = (x + 0.1 * torch.randn_like(x)).clamp(0, 1)
    assert abs(float(ms_ssim_loss_value(y, x, 7)) - float(ms_ssim(y, x, data_range=1.0, win_size=7))) < 1e-5
    # a flat (untrained-decoder-like) output: pytorch_msssim's ReLU would give 0 ** w (NaN gradients)
    flat = torch.full_like(x, 0.5, requires_grad=True)
    ms_ssim_loss_value(flat, x, 7).backward()
    assert torch.isfinite(flat.grad).all()
    # small crops shrink the window, tiny ones fall back to single-scale SSIM
    for side in (64, 32, 16):
        v = ms_ssim_loss_value(torch.rand(1, 3, side, side), torch.rand(1, 3, side, side))
        assert 0 <= float(v) <= 1


def test_msssim_loss_and_ema_train_and_the_ema_weights_are_exported(tmp_path):
    """The tiny2 stage-1 options (MS-SSIM + L1 loss, weight EMA) run, and stage1.pt holds the EMA weights."""
    stage1 = tmp_path / "stage1.pt"
    options = ["--model.l1_weight", "0.16", "--model.mse_weight", "0", "--model.msssim_weight", "0.84",
               "--model.msssim_start", "1", "--model.ema_decay", "0.5", "--model.ema_warmup", "1"]
    args = ["stage1", "--config", str(ROOT / "configs/tiny2_stage1.yaml"), *TINY_MODEL, *TINY_DATA, *options,
            "--data.crop_size", "[64,64]", "--data.batch_size", "2", "--model.export_path", str(stage1)]
    train_main(args + _trainer(tmp_path / "s1", 3))
    metrics = next((tmp_path / "s1").rglob("metrics.csv")).read_text()
    assert "train/msssim" in metrics and "val/psnr_k6" in metrics
    ckpt = torch.load(next((tmp_path / "s1").rglob("last.ckpt")), map_location="cpu", weights_only=False)
    state = ckpt["state_dict"]
    exported = torch.load(stage1, map_location="cpu", weights_only=True)
    for part in ("tokenizer", "quantizer"):
        for name, value in exported[f"{part}_state"].items():
            assert torch.equal(value, state[f"ema_{part}.{name}"]), f"{part}.{name} is not the EMA weight"
    changed = [n for n, v in exported["tokenizer_state"].items() if not torch.equal(v, state[f"tokenizer.{n}"])]
    assert changed, "the EMA weights should differ from the live weights after a few steps"
    # resume: the EMA copies are in the checkpoint, so a resumed run goes on averaging them
    train_main(args + _trainer(tmp_path / "s1b", 4) + ["--ckpt_path", str(next((tmp_path / "s1").rglob("last.ckpt")))])
    resumed = torch.load(next((tmp_path / "s1b").rglob("last.ckpt")), map_location="cpu", weights_only=False)
    assert resumed["global_step"] == 4 and any(k.startswith("ema_tokenizer.") for k in resumed["state_dict"])
    # the code-usage statistics (which decide dead-code restarts) survive a resume
    assert ckpt["quantizer_code_usage"].sum() > 0 and resumed["quantizer_code_usage"].shape == (32,)


def test_ema_update_is_a_moving_average():
    from progvc_lab.stages.quantizer import MultiScaleResidualQuantizer
    from progvc_lab.stages.tokenizer import ConvTokenizer
    from progvc_lab.training.modules import TokenizerModule

    module = TokenizerModule(ConvTokenizer(width=8, max_width=16, groups=4),
                             MultiScaleResidualQuantizer(codebook_size=32), ema_decay=0.9, ema_warmup=1)
    p_live = next(module.tokenizer.parameters())
    p_ema = next(module.ema_tokenizer.parameters())
    assert not p_ema.requires_grad and torch.equal(p_live, p_ema)
    before = p_ema.clone()
    with torch.no_grad():
        p_live.add_(1.0)
    module.update_ema(step=1000)
    assert torch.allclose(p_ema, before + 0.1, atol=1e-6)
    assert module.export_modules()[0] is module.ema_tokenizer
    assert TokenizerModule(ConvTokenizer(width=8, max_width=16, groups=4),
                           MultiScaleResidualQuantizer(codebook_size=32)).export_modules()[0] is not None


def test_code_usage_is_kept_in_the_lightning_checkpoint():
    from progvc_lab.stages.quantizer import MultiScaleResidualQuantizer
    from progvc_lab.stages.tokenizer import ConvTokenizer
    from progvc_lab.training.modules import TokenizerModule

    make = lambda: TokenizerModule(ConvTokenizer(width=8, max_width=16, groups=4),  # noqa: E731
                                   MultiScaleResidualQuantizer(codebook_size=32))
    a, b = make(), make()
    a.quantizer.code_usage.copy_(torch.arange(32.0))
    checkpoint = {}
    a.on_save_checkpoint(checkpoint)
    b.on_load_checkpoint(checkpoint)
    assert torch.equal(b.quantizer.code_usage, torch.arange(32.0))



def _tiny_codec(tmp_path) -> Path:
    """A tiny codec trained for a step or two by stage 1 and stage 2 (the start of a fine-tune)."""
    stage1, codec_path = tmp_path / "stage1.pt", tmp_path / "codec.pt"
    train_main(["stage1", "--config", str(ROOT / "configs/tiny_stage1.yaml"), *_trainer(tmp_path / "s1", 2),
                *TINY_MODEL, *TINY_DATA, "--data.crop_size", "[32,32]", "--data.batch_size", "2",
                "--model.export_path", str(stage1)])
    train_main(["stage2", "--config", str(ROOT / "configs/tiny_stage2.yaml"), *_trainer(tmp_path / "s2", 1),
                "--model.stage1_path", str(stage1), "--model.export_path", str(codec_path), *TINY_CONTEXT,
                *TINY_DATA, "--data.crop_size", "[32,32]", "--data.clip_len", "2"])
    return codec_path


def test_stage3_fine_tunes_only_the_decoder_and_keeps_every_token(tmp_path):
    """configs/tiny_stage3.yaml: encoder, quantizer and context model of the source codec stay exactly
    as they were (so every stream's tokens and rate are unchanged); the decoder's weights move."""
    source = _tiny_codec(tmp_path)
    out = tmp_path / "ft.pt"
    train_main(["stage1", "--config", str(ROOT / "configs/tiny_stage3.yaml"), *_trainer(tmp_path / "s3", 3),
                *TINY_MODEL, *TINY_DATA, "--data.crop_size", "[64,64]", "--data.batch_size", "2",
                "--model.finetune_from", str(source), "--model.export_path", str(tmp_path / "s3.pt"),
                "--model.export_codec_path", str(out), "--model.ema_warmup", "1", "--model.lr", "0.01"])
    before, after = Codec.from_pretrained(str(source)), Codec.from_pretrained(str(out))
    assert after.meta["stage3"] == "configs/tiny_stage3.yaml"
    sb, sa = before.state_dict(), after.state_dict()
    moved = {k for k in sb if not torch.equal(sb[k], sa[k])}
    assert moved and all(k.startswith("tokenizer.decoder.") for k in moved), sorted(moved)[:5]
    assert before.fingerprint() != after.fingerprint()
    video = torch.rand(2, 3, 24, 40)
    # the same tokens from the same frames, coded in the same number of bytes (the context model is the
    # same), and they decode exactly with the fine-tuned codec
    tb, _ = before.tokenize(video)
    ta, _ = after.tokenize(video)
    assert all(torch.equal(a, b) for a, b in zip(tb, ta))
    data_b, data_a = before.encode(video, rdo_lambda=0), after.encode(video, rdo_lambda=0)
    assert len(data_a) == len(data_b)
    decoded, _ = after.decode_tokens(data_a)
    assert all(torch.equal(a, b) for a, b in zip(decoded, tb))


def test_a_narrower_decoder_learns_the_frozen_tokens(tmp_path):
    """configs/tiny_fast_stage3.yaml (tiny-fast): a decoder of another width, trained from its own
    initialisation on the source codec's frozen encoder. The export is the source codec with that
    tokenizer: same encoder, quantizer and context model, so the same tokens in the same bytes."""
    source = _tiny_codec(tmp_path)
    out = tmp_path / "fast.pt"
    train_main(["stage1", "--config", str(ROOT / "configs/tiny_fast_stage3.yaml"), *_trainer(tmp_path / "f", 2),
                *TINY_MODEL, "--model.tokenizer.init_args.decoder_width", "4", *TINY_DATA,
                "--data.crop_size", "[64,64]", "--data.batch_size", "2", "--model.finetune_from", str(source),
                "--model.export_path", str(tmp_path / "f.pt"), "--model.export_codec_path", str(out),
                "--model.ema_warmup", "1"])
    before, after = Codec.from_pretrained(str(source)), Codec.from_pretrained(str(out))
    assert after.tokenizer.config.decoder_width == 4 and before.tokenizer.config.decoder_width == 0
    sb, sa = before.state_dict(), after.state_dict()
    assert all(torch.equal(sb[k], sa[k]) for k in sb if not k.startswith("tokenizer.decoder."))
    n_dec = lambda c: sum(p.numel() for p in c.tokenizer.decoder.parameters())  # noqa: E731
    assert n_dec(after) < n_dec(before)
    video = torch.rand(2, 3, 24, 40)
    data_b, data_a = before.encode(video, rdo_lambda=0), after.encode(video, rdo_lambda=0)
    assert len(data_a) == len(data_b)
    tokens_b, _ = before.decode_tokens(data_b)
    tokens_a, _ = after.decode_tokens(data_a)
    assert all(torch.equal(a, b) for a, b in zip(tokens_a, tokens_b))
    assert after.decode(data_a).shape == video.shape
    # only the decoder's shape may differ: another encoder width is still refused
    from progvc_lab.stages.quantizer import MultiScaleResidualQuantizer
    from progvc_lab.stages.tokenizer import ConvTokenizer
    from progvc_lab.training.modules import TokenizerModule

    with pytest.raises(ValueError, match="only decoder_width may differ"):
        TokenizerModule(ConvTokenizer(width=4, max_width=16, groups=4, decoder_width=4),
                        MultiScaleResidualQuantizer(codebook_size=32), finetune_from=str(source),
                        train_only="decoder")


def test_fine_tune_options_are_checked(tmp_path):
    from progvc_lab.stages.quantizer import MultiScaleResidualQuantizer
    from progvc_lab.stages.tokenizer import ConvTokenizer
    from progvc_lab.training.modules import TokenizerModule

    tok, quant = ConvTokenizer(width=8, max_width=16, groups=4), MultiScaleResidualQuantizer(codebook_size=32)
    with pytest.raises(ValueError, match="train_only must be one of"):
        TokenizerModule(tok, quant, train_only="encoder")
    with pytest.raises(ValueError, match="give finetune_from"):
        TokenizerModule(tok, quant, train_only="decoder")
    with pytest.raises(ValueError, match="set train_only='decoder'"):
        TokenizerModule(tok, quant, export_codec_path=str(tmp_path / "x.pt"))
    with pytest.raises(ValueError, match="differs from this run's"):  # the shipped model is wider
        TokenizerModule(tok, quant, finetune_from="tiny", train_only="decoder")
    with pytest.raises(FileNotFoundError, match="train stage 1 first"):
        TokenizerModule(tok, quant, finetune_from=str(tmp_path / "missing.pt"), train_only="decoder")


def test_stage2_fine_tunes_from_a_codec(tmp_path):
    """stage2 --model.finetune_from CODEC starts from its context model (lr 0: the weights come back
    unchanged) and --model.stage1_path may name the codec itself for the frozen tokenizer."""
    source = _tiny_codec(tmp_path)
    out = tmp_path / "ft2.pt"
    train_main(["stage2", "--config", str(ROOT / "configs/tiny_stage2.yaml"), *_trainer(tmp_path / "f2", 1),
                "--model.stage1_path", str(source), "--model.finetune_from", str(source), "--model.lr", "0",
                "--model.export_path", str(out), *TINY_CONTEXT, *TINY_DATA, "--data.crop_size", "[32,32]",
                "--data.clip_len", "2"])
    before, after = Codec.from_pretrained(str(source)), Codec.from_pretrained(str(out))
    sb, sa = before.state_dict(), after.state_dict()
    same = [k for k in sb if k != "context_model.unigram_counts" and torch.equal(sb[k], sa[k])]
    assert len(same) == len(sb) - 1
    # the token histogram goes on counting from the source's
    assert float(sa["context_model.unigram_counts"].sum()) > float(sb["context_model.unigram_counts"].sum())
    with pytest.raises(ValueError, match="differs from this run's"):
        train_main(["stage2", "--config", str(ROOT / "configs/tiny_stage2.yaml"), *_trainer(tmp_path / "f3", 1),
                    "--model.stage1_path", str(source), "--model.finetune_from", str(source), *TINY_DATA,
                    "--model.context_model.init_args.codebook_size", "32"])


def test_stage2_adds_a_learned_copy_gate_to_a_codec_and_trains_it(tmp_path):
    """finetune_from a codec without a gate head, with gate_head: true (configs/tiny_gate_stage2.yaml):
    the head starts at zero (the count gate), trains on the copy mixture's likelihood, and the exported
    codec codes with copy gate 'learned' by default, round trip and every cut included."""
    from progvc_lab import bitstream

    source = _tiny_codec(tmp_path)
    out = tmp_path / "gate.pt"
    train_main(["stage2", "--config", str(ROOT / "configs/tiny_gate_stage2.yaml"), *_trainer(tmp_path / "g", 3),
                "--model.stage1_path", str(source), "--model.finetune_from", str(source), "--model.lr", "0.01",
                "--model.export_path", str(out), *TINY_CONTEXT, *TINY_DATA, "--data.crop_size", "[32,32]",
                "--data.clip_len", "3"])
    metrics = next((tmp_path / "g").rglob("metrics.csv")).read_text()
    assert "train/bits_per_token_s5" in metrics
    codec = Codec.from_pretrained(str(out))
    gate = codec.context_model.gate
    assert gate is not None and float(gate.weight.abs().sum()) > 0   # moved from its zero start
    video = torch.rand(4, 3, 24, 40)
    data, stats = codec.encode_with_stats(video, copy_gate="learned")
    assert bitstream.read_stream(data).header.copy_gate == "learned"
    for k in range(1, codec.quantizer.num_scales + 1):
        tokens, _ = codec.decode_tokens(bitstream.truncate(data, k))
        assert all(torch.equal(a, b) for a, b in zip(tokens, stats["tokens"][:k])), k
    with pytest.raises(ValueError, match="label_smoothing"):
        train_main(["stage2", "--config", str(ROOT / "configs/tiny_gate_stage2.yaml"), *_trainer(tmp_path / "h", 1),
                    "--model.stage1_path", str(source), "--model.finetune_from", str(source),
                    "--model.label_smoothing", "0.1", *TINY_CONTEXT, *TINY_DATA])
    # the RDO source must make this run's tokens: the shipped tiny's tokenizer is not this one
    with pytest.raises(ValueError, match="not this run's stage 1"):
        train_main(["stage2", "--config", str(ROOT / "configs/tiny_gate_stage2.yaml"), *_trainer(tmp_path / "i", 1),
                    "--model.stage1_path", str(source), "--model.finetune_from", str(source),
                    "--model.rdo_source", "tiny", *TINY_CONTEXT, *TINY_DATA])


def test_stage2_rdo_tokens_are_what_the_encoder_sends(tmp_path):
    """token_choice='rdo': stage 2's targets are the tokens the frozen codec's encoder sends (one all-P GOP
    per clip, count gate, RDO at rdo_lambda), with the context inputs of those tokens."""
    from progvc_lab.stages import ContextModel
    from progvc_lab.training.modules import ContextModule

    source = _tiny_codec(tmp_path)
    codec = Codec.from_pretrained(str(source))
    cm = ContextModel(codebook_size=32, width=16, depth=1, heads=2)
    module = ContextModule(cm, str(source), token_choice="rdo", rdo_lambda=0.5)
    clips = torch.rand(2, 3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    tokens, ctx, latent_hw = module.tokens_and_context(clips)
    K = codec.quantizer.num_scales
    for b in range(2):
        _, res = codec.encode_with_stats(clips[b], gop=3, copy_gate="count", rdo_lambda=0.5)
        assert all(torch.equal(tokens[s][b], res.tokens[s]) for s in range(K)), b
        want = codec.quantizer.context_inputs([t[b] for t in tokens], latent_hw)
        assert all(torch.equal(ctx[s][b], want[s]) for s in range(K))
    nearest, _, _ = ContextModule(cm, str(source)).tokens_and_context(clips)
    assert any(not torch.equal(a, b) for a, b in zip(tokens, nearest))   # the RDO moved some tokens
    assert "_rdo_codec" not in dict(module.named_modules()) and not any("_rdo" in k for k in module.state_dict())
    with pytest.raises(ValueError, match="token_choice"):
        ContextModule(cm, str(source), token_choice="best")
    with pytest.raises(ValueError, match="rdo_source"):
        ContextModule(cm, str(tmp_path / "stage1.pt"), token_choice="rdo")
