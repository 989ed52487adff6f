"""Training runs for real, through the same LightningCLI entry point users call.

Tiny models on synthetic clips (no ../shared needed); the DDP test runs 2 CPU processes over gloo.
"""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

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
                "--model.context_model.init_args.codebook_size", "32",
                "--model.context_model.init_args.width", "16", "--model.context_model.init_args.depth", "1",
                "--model.context_model.init_args.heads", "2",
                *TINY_DATA, "--data.crop_size", "[32,48]", "--data.clip_len", "2"])
    metrics = next((tmp_path / "s2").rglob("metrics.csv")).read_text()
    assert "train/bits_per_token_s0" in metrics and "val/est_bpp_k6" in metrics

    codec = Codec.from_pretrained(str(codec_path))
    video = torch.rand(3, 3, 24, 40)
    tokens, _ = codec.tokenize(video)
    decoded, _ = codec.decode_tokens(codec.encode(video))
    assert all(torch.equal(a, b) for a, b in zip(tokens, decoded))


def test_stage2_refuses_a_context_model_that_does_not_fit_stage1(tmp_path):
    stage1 = tmp_path / "stage1.pt"
    train_main(["stage1", "--config", str(ROOT / "configs/tiny_stage1.yaml"), *_trainer(tmp_path / "s1", 1),
                *TINY_MODEL, *TINY_DATA, "--data.crop_size", "[32,32]", "--data.batch_size", "2",
                "--model.export_path", str(stage1)])
    with pytest.raises(ValueError, match="does not fit the stage-1 quantizer"):
        train_main(["stage2", "--config", str(ROOT / "configs/tiny_stage2.yaml"), *_trainer(tmp_path / "s2", 1),
                    "--model.stage1_path", str(stage1), *TINY_DATA])


def test_ddp_two_cpu_processes(tmp_path):
    """Scaling out is Lightning's DDP: 2 processes, gloo backend, a few steps."""
    cmd = [sys.executable, "-m", "progvc_lab.training.cli", "stage1", "--config",
           str(ROOT / "configs/tiny_stage1.yaml"), *_trainer(tmp_path, 2), *TINY_MODEL, *TINY_DATA,
           "--data.crop_size", "[32,32]", "--data.batch_size", "2", "--model.export_path", str(tmp_path / "s1.pt"),
           "--trainer.strategy", "ddp", "--trainer.devices", "2", "--trainer.limit_val_batches", "0"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "distributed_backend=gloo" in out.stderr + out.stdout
    assert (tmp_path / "s1.pt").is_file()


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
