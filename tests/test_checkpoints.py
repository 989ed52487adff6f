"""Checkpoints from strangers: tensors only, bounded configs, checked fingerprints, no accidental hub calls."""
from __future__ import annotations

import copy
import os
import sys

import pytest
import torch

from progvc_lab.checkpoint import CheckpointError
from progvc_lab.cli import main
from progvc_lab.codec import Codec
from progvc_lab.training.modules import load_stage1, save_stage1

from helpers import make_tiny_codec


class _CreatesAFile:
    """Unpickling this runs ``open(path, 'w')``: what a malicious checkpoint would do."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    d = tmp_path_factory.mktemp("ckpt")
    make_tiny_codec(seed=0).save(d / "m.pt")
    return d


def _edited(saved, tmp_path, edit) -> str:
    ckpt = torch.load(saved / "m.pt", weights_only=True)
    edit(ckpt)
    path = tmp_path / "edited.pt"
    torch.save(ckpt, path)
    return str(path)


def _args(ckpt, section) -> dict:
    """The constructor arguments of a config section (a stage's ``init_args``; the codec's section itself)."""
    value = ckpt["config"][section]
    return value["init_args"] if "init_args" in value else value


def _one_line_refusal(err: str):
    assert "\n" not in err.strip()
    assert "weights_only=False" not in err and "weights_only" not in err.replace("weights_only=True", "")


@pytest.mark.parametrize("where", ["config", "state_dict", "meta"])
def test_a_pickled_object_is_refused_and_never_runs(saved, tmp_path, where):
    marker = tmp_path / "pwned"

    def plant(ckpt):
        target = ckpt[where] if where != "config" else ckpt["config"]["codec"]
        target["evil"] = _CreatesAFile(marker)

    path = _edited_with_object(saved, tmp_path, plant)
    assert not marker.exists()  # torch.save itself does not run __reduce__'s result
    with pytest.raises(CheckpointError, match="refused: the file carries pickled Python objects") as e:
        Codec.load(path)
    assert not marker.exists()
    _one_line_refusal(str(e.value))


def _edited_with_object(saved, tmp_path, plant) -> str:
    ckpt = torch.load(saved / "m.pt", weights_only=True)
    plant(ckpt)
    path = tmp_path / "evil.pt"
    torch.save(ckpt, path)
    return str(path)


def test_the_cli_refuses_a_malicious_model_in_one_line(saved, tmp_path, capsys):
    marker = tmp_path / "pwned"
    path = _edited_with_object(saved, tmp_path, lambda c: c.__setitem__("x", _CreatesAFile(marker)))
    (tmp_path / "s.pgvc").write_bytes(b"not used")
    rc = main(["encode", str(saved / "m.pt"), "-o", str(tmp_path / "o.pgvc"), "--model", path])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("progvc-lab: error: ") and path in err, err
    assert "pickled Python objects" in err and "Traceback" not in err
    _one_line_refusal(err)
    assert not marker.exists()


def test_stage1_loader_refuses_pickled_objects_too(tmp_path):
    codec = make_tiny_codec(seed=0)
    save_stage1(tmp_path / "s1.pt", codec.tokenizer, codec.quantizer)
    tok, quant = load_stage1(tmp_path / "s1.pt")
    assert torch.equal(quant.codebook.weight, codec.quantizer.codebook.weight)
    ckpt = torch.load(tmp_path / "s1.pt", weights_only=True)
    marker = tmp_path / "pwned"
    ckpt["tokenizer"]["x"] = _CreatesAFile(marker)
    torch.save(ckpt, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match="pickled Python objects"):
        load_stage1(tmp_path / "evil.pt")
    assert not marker.exists()


@pytest.mark.parametrize("section,field,value,match", [
    ("context_model", "width", 40000, "config.context_model.width = 40000 is out of range"),
    ("tokenizer", "width", 40000, "config.tokenizer.width = 40000 is out of range"),
    ("codec", "coding_threads", 0, "config.codec.coding_threads = 0 is out of range"),
    ("quantizer", "codebook_size", -5, "config.quantizer.codebook_size = -5 is out of range"),
    ("quantizer", "num_scales", 1.5, "config.quantizer.num_scales = 1.5 is out of range"),
    ("quantizer", "beta", float("nan"), "config.quantizer.beta = nan is out of range"),
    ("context_model", "depth", True, "config.context_model.depth = True is out of range"),
    ("context_model", "mask", "everything", "config.context_model.mask = 'everything' is not one of"),
    ("codec", "coder", "zip", "config.codec.coder = 'zip' is not one of"),
    ("tokenizer", "surprise", 1, "unknown field config.tokenizer.surprise"),
])
def test_config_values_are_bounded_naming_the_field(saved, tmp_path, section, field, value, match):
    path = _edited(saved, tmp_path, lambda c: _args(c, section).__setitem__(field, value))
    with pytest.raises(CheckpointError, match=match.replace("(", r"\(").replace(".", r"\.")):
        Codec.load(path)


def test_a_config_larger_than_its_weights_is_not_built(saved, tmp_path):
    # within every field's bound, but 64 layers of width 4096 (tens of GB) for a file of a few KB of weights
    def edit(c):
        _args(c, "context_model").update(width=4096, depth=64)
    with pytest.raises(CheckpointError, match="describes about .* weights but the file holds"):
        Codec.load(_edited(saved, tmp_path, edit))


def test_edited_weights_fail_the_recorded_fingerprint(saved, tmp_path):
    def edit(c):
        name = next(k for k in c["state_dict"] if k.endswith("weight"))
        c["state_dict"][name] = c["state_dict"][name] + 1e-3
    with pytest.raises(CheckpointError, match="do not match the fingerprint recorded"):
        Codec.load(_edited(saved, tmp_path, edit))
    assert Codec.load(saved / "m.pt").fingerprint() == make_tiny_codec(seed=0).fingerprint()


def test_wrong_shapes_entries_and_files(saved, tmp_path):
    def shape(c):
        name = next(k for k in c["state_dict"] if k.endswith("weight"))
        c["state_dict"][name] = torch.zeros(3)
    with pytest.raises(CheckpointError, match="weights do not fit its config"):
        Codec.load(_edited(saved, tmp_path, shape))
    with pytest.raises(CheckpointError, match="is a int, not a tensor"):
        Codec.load(_edited(saved, tmp_path, lambda c: c["state_dict"].__setitem__("x", 3)))
    with pytest.raises(CheckpointError, match="no 'state_dict' entry"):
        Codec.load(_edited(saved, tmp_path, lambda c: c.pop("state_dict")))
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"PK\x03\x04 definitely not a zip")
    with pytest.raises(CheckpointError, match="is not a progvc_lab codec checkpoint"):
        Codec.load(junk)
    cut = tmp_path / "cut.pt"
    cut.write_bytes((saved / "m.pt").read_bytes()[:2000])
    with pytest.raises(CheckpointError, match="is not a progvc_lab codec checkpoint"):
        Codec.load(cut)
    with pytest.raises(CheckpointError, match="is a folder"):
        Codec.load(tmp_path)


@pytest.fixture
def hub_calls(monkeypatch):
    calls = []
    fake = type(sys)("huggingface_hub")

    def hf_hub_download(repo_id, filename, **kw):
        calls.append(repo_id)
        raise OSError("offline")
    fake.hf_hub_download = hf_hub_download
    monkeypatch.setitem(sys.modules, "huggingface_hub", fake)
    return calls


@pytest.mark.parametrize("name", ["./org/name", "org/name.pt", "/abs/org", "../x/y", "a/b/c", "model.pt",
                                  "existing/name", "org\\name"])
def test_missing_local_paths_are_never_sent_to_the_hub(hub_calls, tmp_path, monkeypatch, name):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "existing").mkdir()
    with pytest.raises(FileNotFoundError, match="no model hub was asked"):
        Codec.from_pretrained(name)
    assert hub_calls == []


def test_a_hub_name_is_sent_to_the_hub(hub_calls, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match="could not fetch model 'org/name' from the hub"):
        Codec.from_pretrained("org/name")
    assert hub_calls == ["org/name"]


def test_the_shipped_model_loads_through_the_checks():
    codec = Codec.from_pretrained("tiny")
    assert codec.config.coding_threads >= 1 and os.fspath(codec.fingerprint().hex())


def test_a_variant_stores_only_what_differs_from_a_shipped_model(tmp_path):
    """``save(base="tiny")``: only the changed stage is stored; loading rebuilds the same codec (same
    fingerprint, same streams); a variant of something that is not shipped is refused."""
    from progvc_lab.codec import PRETRAINED
    from progvc_lab.course.unsafe import with_mask

    if not PRETRAINED["tiny"].is_file():
        pytest.skip("the shipped checkpoint is missing")
    tiny = Codec.from_pretrained("tiny")
    cm = with_mask(tiny.context_model, "var")
    with torch.no_grad():
        cm.head.bias.add_(0.01)                      # a trained variant's weights differ too
    variant = Codec(tiny.tokenizer, tiny.quantizer, cm)
    path = tmp_path / "tiny_var.pt"
    variant.save(path, base="tiny")
    ckpt = torch.load(path, weights_only=True)
    assert ckpt["base"] == "tiny" and set(ckpt["config"]) == {"context_model", "codec"}
    assert all(k.startswith("context_model.") for k in ckpt["state_dict"])
    assert path.stat().st_size < PRETRAINED["tiny"].stat().st_size / 2
    again = Codec.load(path)
    assert again.fingerprint() == variant.fingerprint() != tiny.fingerprint()
    assert again.context_model.config.mask == "var" and not again.truncation_safe
    video = torch.rand(2, 3, 32, 48, generator=torch.Generator().manual_seed(0))
    assert again.encode(video, scales=3) == variant.encode(video, scales=3)
    with pytest.raises(ValueError, match="nothing to save"):
        tiny.save(tmp_path / "same.pt", base="tiny")
    with pytest.raises(ValueError, match="shipped model name"):
        variant.save(tmp_path / "x.pt", base="nonesuch")
    ckpt["base"] = "nonesuch"
    torch.save(ckpt, tmp_path / "bad.pt")
    with pytest.raises(CheckpointError, match="not a shipped model"):
        Codec.load(tmp_path / "bad.pt")


def test_a_variant_of_a_variant_loads_through_both(tmp_path, monkeypatch):
    """``save(base="tiny-fast")``, itself a variant of tiny: the file holds only the context model; loading
    takes the decoder from tiny-fast and the rest from tiny. A chain that comes back to a file it already
    read is refused, not followed forever."""
    from progvc_lab import codec as codec_module
    from progvc_lab.codec import PRETRAINED

    if not (PRETRAINED["tiny"].is_file() and PRETRAINED["tiny-fast"].is_file()):
        pytest.skip("the shipped checkpoints are missing")
    fast = Codec.from_pretrained("tiny-fast")
    cm = copy.deepcopy(fast.context_model)
    with torch.no_grad():
        cm.head.bias.add_(0.01)
    variant = Codec(fast.tokenizer, fast.quantizer, cm)
    path = tmp_path / "fast_cm.pt"
    variant.save(path, base="tiny-fast")
    ckpt = torch.load(path, weights_only=True)
    assert ckpt["base"] == "tiny-fast" and set(ckpt["config"]) == {"context_model", "codec"}
    again = Codec.load(path)
    assert again.fingerprint() == variant.fingerprint()
    assert again.tokenizer.config.decoder_width == fast.tokenizer.config.decoder_width == 16
    # a cycle: tiny-fast's file made to name this variant as its base
    monkeypatch.setitem(PRETRAINED, "loop", path)
    ckpt["base"] = "loop"
    torch.save(ckpt, tmp_path / "loop_self.pt")
    monkeypatch.setitem(codec_module.PRETRAINED, "loop", tmp_path / "loop_self.pt")
    with pytest.raises(CheckpointError, match="the file itself"):
        Codec.load(tmp_path / "loop_self.pt")
