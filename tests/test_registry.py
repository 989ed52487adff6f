"""Swap a stage for real: protocols, the registry, class paths in checkpoints and the trust rule.

The tokenizer below is defined here, is not a ``ConvTokenizer`` subclass (it only has the members of
``stages.protocols.Tokenizer``), and goes the whole way: LightningCLI stage 1 and stage 2 by
``class_path``, export, save, load as the same class, encode and decode with tokens equal at every k.
"""
from __future__ import annotations

import dataclasses
import math
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from progvc_lab import bitstream
from progvc_lab.checkpoint import CheckpointError
from progvc_lab.codec import PRETRAINED, Codec
from progvc_lab.stages import ContextModel, ConvTokenizer, DetailSampler, MultiScaleResidualQuantizer
from progvc_lab.stages import get_coder, protocols, registry
from progvc_lab.training.cli import main as train_main
from progvc_lab.training.modules import TokenizerModule, load_stage1, save_stage1

from helpers import TINY_CONTEXT, TINY_V, make_tiny_codec, pattern_clip

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class PatchTokenizerConfig:
    stride: int = 8
    latent_dim: int = 16
    width: int = 8


@registry.register("tokenizer", "test_patch")
class PatchTokenizer(nn.Module):
    """A duck-typed tokenizer: one strided conv in, one transposed conv out (no ResBlocks)."""

    def __init__(self, config: PatchTokenizerConfig | None = None, **overrides):
        super().__init__()
        cfg = PatchTokenizerConfig(**overrides) if config is None else dataclasses.replace(config, **overrides)
        self.config = cfg
        stride, latent_dim, width = cfg.stride, cfg.latent_dim, cfg.width
        self.stride, self.latent_dim = stride, latent_dim
        self.encoder = nn.Sequential(nn.Conv2d(3, width, stride, stride=stride), nn.SiLU(),
                                     nn.Conv2d(width, latent_dim, 1))
        self.decoder = nn.Sequential(nn.Conv2d(latent_dim, width, 1), nn.SiLU(),
                                     nn.ConvTranspose2d(width, 3, stride, stride=stride))

    def latent_size(self, height: int, width: int) -> tuple[int, int]:
        return math.ceil(height / self.stride), math.ceil(width / self.stride)

    def encode(self, x_NCHW: torch.Tensor) -> torch.Tensor:
        h, w = self.latent_size(*x_NCHW.shape[-2:])
        pad = (0, w * self.stride - x_NCHW.shape[-1], 0, h * self.stride - x_NCHW.shape[-2])
        return self.encoder(F.pad(x_NCHW, pad, mode="replicate") * 2 - 1)

    def decode(self, f_NChw: torch.Tensor, size=None) -> torch.Tensor:
        x = (self.decoder(f_NChw) + 1) / 2
        return x if size is None else x[..., : size[0], : size[1]]


@registry.register("quantizer", "test_vq_copy")
class RenamedQuantizer(MultiScaleResidualQuantizer):
    """The built-in quantizer under another registry name (what the stream header then says)."""


class NoDecode(nn.Module):
    """Looks like a tokenizer but cannot decode."""
    config = {}
    latent_dim = 16

    def latent_size(self, height, width):
        return height // 8, width // 8

    def encode(self, x_NCHW):
        return x_NCHW


def _trainer(tmp: Path, steps: int) -> list[str]:
    return ["--trainer.max_steps", str(steps), "--trainer.default_root_dir", str(tmp),
            "--trainer.logger.init_args.save_dir", str(tmp), "--trainer.val_check_interval", str(steps),
            "--trainer.limit_val_batches", "1", "--trainer.enable_progress_bar", "false",
            "--trainer.log_every_n_steps", "1"]


TINY_DATA = ["--data.sources", "[]", "--data.val_sources", "[]", "--data.synthetic_fallback", "true",
             "--data.samples_per_epoch", "16", "--data.val_samples", "2"]


def _tokens_equal_at_every_k(codec: Codec, video: torch.Tensor):
    tokens, _ = codec.tokenize(video)
    data = codec.encode(video, rdo_lambda=0)   # nearest-code tokens: what tokenize gives
    K = codec.quantizer.num_scales
    for k in range(K + 1):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            decoded, _ = codec.decode_tokens(bitstream.truncate(data, k))
        assert len(decoded) == k
        assert all(torch.equal(a, b) for a, b in zip(tokens[:k], decoded)), f"tokens differ at k = {k}"
    assert codec.decode(data).shape == video.shape
    return data


# ---- protocols ---------------------------------------------------------------------------------
def test_the_protocols_accept_the_builtin_stages():
    codec = make_tiny_codec()
    assert isinstance(codec.tokenizer, protocols.Tokenizer)
    assert isinstance(codec.quantizer, protocols.Quantizer)
    assert isinstance(codec.context_model, protocols.ContextModel)
    assert isinstance(get_coder("constriction"), protocols.EntropyCoder)
    assert isinstance(get_coder("torchac"), protocols.EntropyCoder)
    for mode in registry.names("detail_sampler"):
        assert isinstance(registry.get("detail_sampler", mode)(), protocols.DetailSampler)
    assert isinstance(PatchTokenizer(), protocols.Tokenizer) and not isinstance(NoDecode(), protocols.Tokenizer)


def test_a_stage_without_the_right_methods_is_refused_naming_what_it_lacks():
    q = MultiScaleResidualQuantizer(codebook_size=TINY_V)
    cm = ContextModel(codebook_size=TINY_V, width=32, depth=1, heads=2)
    with pytest.raises(TypeError, match=r"NoDecode is not a tokenizer: it lacks decode \(see progvc_lab"):
        Codec(NoDecode(), q, cm)
    with pytest.raises(TypeError, match="lacks decode"):
        TokenizerModule(NoDecode(), q)
    with pytest.raises(TypeError, match="Linear is not a context model: it lacks config, unigram_counts, new_state, block_logits"):
        Codec(ConvTokenizer(), q, nn.Linear(1, 1))


# ---- registry ----------------------------------------------------------------------------------
def test_the_builtins_are_registered_with_their_names_and_configs():
    assert registry.get("tokenizer", "conv") is ConvTokenizer
    assert registry.get("quantizer", "vq") is MultiScaleResidualQuantizer
    assert registry.get("context_model", "transformer") is ContextModel
    assert {"torchac", "constriction"} <= set(registry.names("entropy_coder"))
    assert set(registry.names("detail_sampler")) >= {"zero", "argmax", "mean", "sample", "copy"}
    codec = make_tiny_codec()
    assert (codec.tokenizer.name, codec.quantizer.name, codec.context_model.name) == ("conv", "vq", "transformer")
    assert registry.init_args(codec.tokenizer)["width"] == 8
    sampler = registry.get("detail_sampler", "sample")(temperature=1.5)
    assert isinstance(sampler, DetailSampler) and sampler.name == "sample" and sampler.config.temperature == 1.5
    assert registry.get("quantizer", "bsq").__name__ == "BinarySphericalQuantizer"
    with pytest.raises(ValueError, match="unknown quantizer 'lfq'; choose one of vq, bsq"):
        registry.get("quantizer", "lfq")
    with pytest.raises(ValueError, match="'conv' is already registered"):
        registry.register("tokenizer", "conv")(PatchTokenizer)


def test_the_bitstream_name_tables_are_the_registry_builtins():
    """bitstream stays torch-free, so it spells the names out; they must be the built-in stages'."""
    def builtins(kind):
        return tuple(n for n in registry.names(kind)
                     if registry.get(kind, n).__module__.startswith("progvc_lab.stages."))
    assert bitstream.QUANTIZERS == builtins("quantizer")
    assert bitstream.CODERS == builtins("entropy_coder")


def test_the_stream_header_takes_the_quantizer_name_from_the_quantizer():
    base = make_tiny_codec(seed=3)
    torch.manual_seed(0)
    q = RenamedQuantizer(codebook_size=TINY_V)
    q.load_state_dict(base.quantizer.state_dict())
    renamed = Codec(base.tokenizer, q, base.context_model, gop=3, coding_threads=1)
    video = pattern_clip(3)
    data = renamed.encode(video)
    assert bitstream.read_stream(data).header.quantizer == "test_vq_copy"
    assert bitstream.read_stream(base.encode(video)).header.quantizer == "vq"
    # the stage's name is part of the model's identity: same weights, another name, another fingerprint
    assert renamed.fingerprint() != base.fingerprint()
    with pytest.raises(bitstream.BitstreamError, match="model mismatch"):
        base.decode(data)
    assert torch.equal(renamed.decode(data), base.decode(base.encode(video)))


# ---- checkpoints ---------------------------------------------------------------------------------
def test_checkpoints_record_class_path_and_init_args(tmp_path):
    codec = make_tiny_codec(seed=1)
    codec.save(tmp_path / "m.pt")
    config = torch.load(tmp_path / "m.pt", weights_only=True)["config"]
    assert config["tokenizer"] == {"class_path": "progvc_lab.stages.tokenizer.ConvTokenizer",
                                   "init_args": registry.init_args(codec.tokenizer)}
    assert config["quantizer"]["class_path"] == "progvc_lab.stages.quantizer.MultiScaleResidualQuantizer"
    assert config["context_model"]["class_path"] == "progvc_lab.stages.context_model.ContextModel"


def test_checkpoints_without_class_paths_load_as_before(tmp_path):
    """Files written before class paths (the shipped model among them): the built-in classes, the
    recorded fingerprint still valid."""
    codec = make_tiny_codec(seed=1)
    codec.save(tmp_path / "m.pt")
    ckpt = torch.load(tmp_path / "m.pt", weights_only=True)
    for kind in ("tokenizer", "quantizer", "context_model"):
        ckpt["config"][kind] = ckpt["config"][kind]["init_args"]
    torch.save(ckpt, tmp_path / "old.pt")
    old = Codec.load(tmp_path / "old.pt")
    assert type(old.tokenizer) is ConvTokenizer and old.fingerprint() == codec.fingerprint()
    shipped = Codec.load(PRETRAINED["tiny"])
    assert type(shipped.tokenizer) is ConvTokenizer and type(shipped.context_model) is ContextModel
    # stage-1 files too
    save_stage1(tmp_path / "s1.pt", codec.tokenizer, codec.quantizer)
    s1 = torch.load(tmp_path / "s1.pt", weights_only=True)
    s1["tokenizer"], s1["quantizer"] = s1["tokenizer"]["init_args"], s1["quantizer"]["init_args"]
    torch.save(s1, tmp_path / "old_s1.pt")
    tok, quant = load_stage1(tmp_path / "old_s1.pt")
    assert type(tok) is ConvTokenizer and torch.equal(quant.codebook.weight, codec.quantizer.codebook.weight)


EVIL_MODULE = """
from pathlib import Path
Path({marker!r}).write_text("imported")      # a checkpoint must not make this run
from progvc_lab.stages.tokenizer import ConvTokenizer


class Evil(ConvTokenizer):
    pass
"""


def test_an_unregistered_class_path_is_refused_and_nothing_is_imported(tmp_path, monkeypatch):
    marker = tmp_path / "ran"
    (tmp_path / "evil_stage_module.py").write_text(EVIL_MODULE.format(marker=str(marker)))
    monkeypatch.syspath_prepend(str(tmp_path))
    make_tiny_codec(seed=1).save(tmp_path / "m.pt")
    ckpt = torch.load(tmp_path / "m.pt", weights_only=True)
    ckpt["config"]["tokenizer"]["class_path"] = "evil_stage_module.Evil"
    torch.save(ckpt, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError) as err:
        Codec.load(tmp_path / "evil.pt")
    message = str(err.value)
    assert "\n" not in message and "refused tokenizer class_path 'evil_stage_module.Evil'" in message
    assert "register(" in message and "trust_class_paths=True" in message
    assert not marker.exists() and "evil_stage_module" not in sys.modules
    # the same for stage-1 files
    s1 = {"tokenizer": ckpt["config"]["tokenizer"], "quantizer": ckpt["config"]["quantizer"],
          "tokenizer_state": {}, "quantizer_state": {}}
    torch.save(s1, tmp_path / "evil_s1.pt")
    with pytest.raises(CheckpointError, match="refused tokenizer class_path 'evil_stage_module.Evil'"):
        load_stage1(tmp_path / "evil_s1.pt")
    assert not marker.exists()
    # the user's explicit opt-in imports it (an unregistered subclass keeps its parent's name "conv", so
    # it claims to be the same model: the recorded fingerprint still holds)
    torch.save(ckpt, tmp_path / "trusted.pt")
    trusted = Codec.load(tmp_path / "trusted.pt", trust_class_paths=True)
    assert marker.exists() and type(trusted.tokenizer).__name__ == "Evil"
    assert trusted.stage_names()["tokenizer"] == "conv"
    monkeypatch.delitem(sys.modules, "evil_stage_module")
    marker.unlink()

    # the command line: refused in one line that names the flag; the flag opts in for that call only
    from progvc_lab import evaluate
    from progvc_lab.cli import main as cli_main
    from progvc_lab.data.video import write_video

    write_video(tmp_path / "in.y4m", pattern_clip(2, 32, 48))
    argv = ["encode", str(tmp_path / "in.y4m"), "-o", str(tmp_path / "x.pgvc"), "--model", str(tmp_path / "evil.pt")]
    assert cli_main(argv) == 2
    assert not marker.exists() and not (tmp_path / "x.pgvc").exists()
    assert cli_main(["--trust-class-paths", *argv]) == 0
    assert marker.exists() and (tmp_path / "x.pgvc").stat().st_size > 0
    assert evaluate.TRUST_CLASS_PATHS is False          # restored after the call
    monkeypatch.delitem(sys.modules, "evil_stage_module")


@pytest.mark.parametrize("class_path,match", [
    ("os.system", "refused tokenizer class_path 'os.system': it is not a registered stage"),
    ("builtins.eval", "refused tokenizer class_path 'builtins.eval'"),
    ("progvc_lab.cli.main", "'progvc_lab.cli.main': it is a function, not a class"),
    ("progvc_lab.codec.CodecConfig", "inside progvc_lab only subclasses of progvc_lab.stages.tokenizer.ConvTokenizer"),
    ("progvc_lab.stages.quantizer.MultiScaleResidualQuantizer", "inside progvc_lab only subclasses"),
    ("progvc_lab.no_such_module.Tok", "cannot be loaded .ModuleNotFoundError"),
    ("not a path", "class_path must be a dotted name"),
])
def test_bad_class_paths_are_refused_in_one_line(tmp_path, class_path, match):
    make_tiny_codec(seed=1).save(tmp_path / "m.pt")
    ckpt = torch.load(tmp_path / "m.pt", weights_only=True)
    ckpt["config"]["tokenizer"]["class_path"] = class_path
    torch.save(ckpt, tmp_path / "bad.pt")
    with pytest.raises(CheckpointError, match=match) as err:
        Codec.load(tmp_path / "bad.pt")
    assert "\n" not in str(err.value)


def test_a_user_class_gets_plain_init_args_only(tmp_path):
    codec = Codec(PatchTokenizer(), MultiScaleResidualQuantizer(codebook_size=TINY_V),
                  ContextModel(codebook_size=TINY_V, width=32, depth=1, heads=2), gop=3, coding_threads=1)
    codec.save(tmp_path / "m.pt")
    assert type(Codec.load(tmp_path / "m.pt").tokenizer) is PatchTokenizer
    ckpt = torch.load(tmp_path / "m.pt", weights_only=True)
    ckpt["config"]["tokenizer"]["init_args"]["width"] = torch.tensor(8)
    torch.save(ckpt, tmp_path / "bad.pt")
    with pytest.raises(CheckpointError, match="config.tokenizer.init_args.width is a Tensor"):
        Codec.load(tmp_path / "bad.pt")
    # a subclass of a built-in keeps the built-in's bounds on the built-in's fields
    renamed = Codec(ConvTokenizer(), RenamedQuantizer(codebook_size=TINY_V),
                    ContextModel(codebook_size=TINY_V, width=32, depth=1, heads=2))
    renamed.save(tmp_path / "r.pt")
    edited = torch.load(tmp_path / "r.pt", weights_only=True)
    edited["config"]["quantizer"]["init_args"]["codebook_size"] = 1 << 30
    torch.save(edited, tmp_path / "big.pt")
    with pytest.raises(CheckpointError, match="config.quantizer.codebook_size = 1073741824 is out of range"):
        Codec.load(tmp_path / "big.pt")
    ckpt["config"]["tokenizer"]["init_args"] = {"width": 8, "surprise": 1}
    torch.save(ckpt, tmp_path / "bad.pt")
    with pytest.raises(CheckpointError, match="its config does not make a codec .*surprise"):
        Codec.load(tmp_path / "bad.pt")


# ---- the whole way ---------------------------------------------------------------------------------
def test_a_stage_defined_here_trains_saves_loads_and_codes(tmp_path):
    tok_path = registry.class_path(PatchTokenizer)
    stage1 = tmp_path / "stage1.pt"
    train_main(["stage1", "--config", str(ROOT / "configs/tiny_stage1.yaml"), *_trainer(tmp_path / "s1", 2),
                "--model.tokenizer", f'{{"class_path": "{tok_path}", "init_args": {{"width": 8}}}}',
                "--model.quantizer.init_args.codebook_size", "32", *TINY_DATA,
                "--data.crop_size", "[32,32]", "--data.batch_size", "2", "--model.export_path", str(stage1)])
    tok, quant = load_stage1(stage1)
    assert type(tok) is PatchTokenizer and tok.config.width == 8

    codec_path = tmp_path / "codec.pt"
    train_main(["stage2", "--config", str(ROOT / "configs/tiny_stage2.yaml"), *_trainer(tmp_path / "s2", 2),
                "--model.stage1_path", str(stage1), "--model.export_path", str(codec_path),
                *TINY_CONTEXT,
                *TINY_DATA, "--data.crop_size", "[32,48]", "--data.clip_len", "2"])
    codec = Codec.load(codec_path)
    assert type(codec.tokenizer) is PatchTokenizer, "the swapped stage came back as another class"
    assert codec.stage_names() == {"tokenizer": "test_patch", "quantizer": "vq", "context_model": "transformer"}
    assert torch.equal(codec.tokenizer.encoder[0].weight, tok.encoder[0].weight)
    data = _tokens_equal_at_every_k(codec, torch.rand(3, 3, 24, 40))
    # save and load again: the same class, the same model (the stream still decodes)
    codec.save(tmp_path / "again.pt")
    again = Codec.load(tmp_path / "again.pt")
    assert type(again.tokenizer) is PatchTokenizer and again.fingerprint() == codec.fingerprint()
    assert torch.equal(again.decode(data), codec.decode(data))
