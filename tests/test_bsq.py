"""The bitwise BSQ quantizer, the bitwise context-model head and the VQ options beside them.

Tiny random stages pin down the definitions (bit packing, distances, tokens <-> latent, the
CE == sum-of-BCE identity, round trips with both coders at every cut); one test codes a real clip
with the shipped ``tiny-bsq`` model.
"""
from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from progvc_lab import bitstream
from progvc_lab.bitstream import BitstreamError
from progvc_lab.codec import PRETRAINED, Codec
from progvc_lab.data import read_video, sample_clip_path
from progvc_lab.stages import ContextModel, ConvTokenizer, MultiScaleResidualQuantizer, protocols, registry
from progvc_lab.stages.bsq import BinarySphericalQuantizer, bit_matrix, bits_to_ids, ids_to_bits

from helpers import make_tiny_codec, one_thread, pattern_clip  # noqa: F401

pytestmark = pytest.mark.usefixtures("one_thread")


def make_bsq_codec(seed: int = 0, bits: int = 6, gop: int = 3, **codec_kw) -> Codec:
    """A random, tiny BSQ codec: V = 2^bits, a 1-layer width-32 context model with the bitwise head."""
    torch.manual_seed(seed)
    codec_kw.setdefault("coding_threads", 1)
    return Codec(ConvTokenizer(width=8, max_width=16, groups=4), BinarySphericalQuantizer(bits=bits),
                 ContextModel(codebook_size=1 << bits, width=32, depth=1, heads=2, head="bitwise"),
                 gop=gop, **codec_kw)


def textured(T=5, H=32, W=48, seed=0):
    video = pattern_clip(T, H, W)
    noise = torch.rand(video.shape, generator=torch.Generator().manual_seed(seed))
    return (video + 0.3 * noise).clamp(0, 1)


def same_tokens(a, b) -> bool:
    return len(a) == len(b) and all(torch.equal(x, y) for x, y in zip(a, b))


# ---- bits and codes ---------------------------------------------------------------------------------
def test_bit_packing_is_msb_first_and_round_trips():
    assert bit_matrix(3).tolist() == [list(map(int, f"{v:03b}")) for v in range(8)]
    ids = torch.randint(0, 1 << 10, (4, 5, 6))
    bits = ids_to_bits(ids, 10)
    assert bits.shape == (4, 5, 6, 10) and torch.equal(bits_to_ids(bits), ids)
    assert bits_to_ids(torch.tensor([1, 0, 0, 0, 0, 0, 0, 0, 0])).item() == 256   # first bit is the MSB
    with pytest.raises(ValueError, match=r"\[0, 1024\)"):
        ids_to_bits(torch.tensor([1024]), 10)


def test_tokens_are_the_signs_of_the_projection():
    q = BinarySphericalQuantizer(bits=5, latent_dim=8, num_scales=3)
    r = torch.randn(2, 8, 3, 4)
    u = q.codebook.down(r.permute(0, 2, 3, 1))
    assert torch.equal(ids_to_bits(q.nearest_code(r), 5), (u > 0).long())
    assert torch.allclose(q.project(r).norm(dim=-1), torch.ones(2, 3, 4))


@torch.no_grad()
def test_code_distances_equal_brute_force_and_pick_the_sign_pattern():
    torch.manual_seed(1)
    q = BinarySphericalQuantizer(bits=4, latent_dim=6, num_scales=3)
    r = torch.randn(3, 6, 2, 3)
    dist = q.code_distances(r)
    assert dist.shape == (3 * 2 * 3, 16)
    r_LC = r.permute(0, 2, 3, 1).reshape(-1, 6)
    for L, v in itertools.product(range(len(r_LC)), range(16)):
        u = q.codebook.down(r_LC[L])
        u_hat = u / u.norm()
        code = torch.tensor([1.0 if (v >> (3 - i)) & 1 else -1.0 for i in range(4)]) / 2  # / sqrt(4)
        r2 = float(r_LC[L] @ r_LC[L])
        assert dist[L, v].item() == pytest.approx(r2 * float(((u_hat - code) ** 2).sum()) - r2, rel=1e-4, abs=1e-5)
    assert torch.equal(dist.argmin(1).view(3, 2, 3), q.nearest_code(r))
    # the implied codebook: every sign pattern through the up-projection, deterministic
    assert torch.equal(q.codebook(torch.tensor([5, 0])), q.codebook.weight[[5, 0]])
    assert torch.allclose(q.codebook.weight[5], torch.tensor([-1.0, 1, -1, 1]) / 2 @ q.codebook.down.weight, atol=1e-6)  # 0101
    W = q.codebook.down.weight    # orthonormal rows: every code has length 1, the sign code is also the L2-nearest
    assert torch.allclose(W @ W.T, torch.eye(4), atol=1e-5)
    assert torch.allclose(q.codebook.weight.norm(dim=1), torch.ones(16), atol=1e-5)
    e_VC = q.codebook.weight
    assert torch.equal(((r_LC[:, None, :] - e_VC[None]) ** 2).sum(-1).argmin(1).view(3, 2, 3), q.nearest_code(r))


def test_tokens_to_latent_of_tokenize_equals_forward():
    torch.manual_seed(2)
    q = BinarySphericalQuantizer(bits=6, latent_dim=8, num_scales=4).train()
    f = torch.randn(2, 8, 6, 7, requires_grad=True)
    f_st, tok_fwd, loss = q(f)
    tok = q.tokenize(f.detach())
    assert same_tokens(tok, tok_fwd)
    assert torch.allclose(q.tokens_to_latent(tok, (6, 7)), f_st, atol=1e-5)
    for k in range(1, 4):   # scale dropout: the partial sum of k scales
        f_k, _, _ = q(f, upto=k)
        assert torch.allclose(q.tokens_to_latent(tok, (6, 7), upto=k), f_k, atol=1e-5)
    loss.backward()  # the straight-through codes carry gradient into the down-projection
    original = q.codebook.down.parametrizations.weight.original
    assert original.grad is not None and original.grad.abs().sum() > 0
    assert q.code_usage.sum() > 0
    stats = q.usage_stats()
    assert 1 <= stats["perplexity"] <= 64 and stats["dead"] + stats["used"] <= 64 + stats["used"]
    assert q.restart_dead_codes(f.detach()) == 0


def test_protocol_registry_and_bad_arguments():
    q = BinarySphericalQuantizer(bits=3, latent_dim=4, num_scales=2)
    protocols.check("quantizer", q)
    assert registry.get("quantizer", "bsq") is BinarySphericalQuantizer and q.name == "bsq"
    assert q.codebook_size == 8 and q.codebook.weight.shape == (8, 4)
    assert type(q)(**registry.init_args(q)).config == q.config
    with pytest.raises(ValueError, match="bits must be an integer in 1..12"):
        BinarySphericalQuantizer(bits=13)
    with pytest.raises(ValueError, match="bitwise head needs codebook_size = 2"):
        ContextModel(codebook_size=100, head="bitwise")
    with pytest.raises(ValueError, match="head must be one of"):
        ContextModel(head="softmax")


# ---- the bitwise head ---------------------------------------------------------------------------------
def test_bitwise_log_probs_sum_to_one_and_ce_is_the_sum_of_bit_bces():
    torch.manual_seed(3)
    bits = 5
    cm = ContextModel(codebook_size=1 << bits, latent_dim=4, num_scales=2, width=16, depth=1, heads=2, head="bitwise")
    tokens = [torch.randint(0, 32, (2, 3, 1, 1)), torch.randint(0, 32, (2, 3, 2, 3))]
    ctx = [torch.randn(2, 3, 4, 1, 1), torch.randn(2, 3, 4, 2, 3)]
    logp_BLV = cm(ctx, tokens)
    l_BLd = cm.bit_logits(ctx, tokens)
    assert l_BLV_shape_ok(logp_BLV, l_BLd, bits)
    assert torch.allclose(logp_BLV.exp().sum(-1), torch.ones(logp_BLV.shape[:2], dtype=torch.float32), atol=1e-5)
    target_BL, _ = cm.flatten_tokens(tokens)
    ce = F.cross_entropy(logp_BLV.transpose(1, 2), target_BL, reduction="none")
    bce = F.binary_cross_entropy_with_logits(l_BLd, ids_to_bits(target_BL, bits).float(), reduction="none").sum(-1)
    assert torch.allclose(ce, bce, atol=1e-5)
    # a categorical model has no bit logits
    with pytest.raises(ValueError, match="head='bitwise'"):
        ContextModel(codebook_size=32, latent_dim=4, num_scales=2, width=16, depth=1, heads=2).bit_logits(ctx, tokens)


def l_BLV_shape_ok(logp, l, bits):
    return logp.shape[-1] == 1 << bits and l.shape[-1] == bits and logp.shape[:2] == l.shape[:2]


# ---- the codec ----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def bsq_codec():
    return make_bsq_codec(seed=0)


@pytest.mark.parametrize("coder", ["torchac", "constriction"])
def test_bsq_codec_round_trips_at_every_cut(bsq_codec, coder):
    video = textured()
    data, stats = bsq_codec.encode_with_stats(video, coder=coder, verify=True)
    h = bitstream.read_stream(data).header
    assert (h.quantizer, h.coder) == ("bsq", coder)
    K = bsq_codec.quantizer.num_scales
    for k in range(K + 1):
        cut = bitstream.truncate(data, k)
        tokens, header = bsq_codec.decode_tokens(cut)
        assert header.scales_sent == k and same_tokens(tokens, stats["tokens"][:k]), k
        if k:
            assert torch.equal(bsq_codec.decode(cut), bsq_codec.reconstruct(stats["tokens"], stats["latent_hw"],
                                                                            video.shape[-2:], upto=k))
    # lambda = 0: the codec's choice is exactly the quantizer's sign bits
    data0, stats0 = bsq_codec.encode_with_stats(video, coder=coder, rdo_lambda=0)
    assert same_tokens(stats0["tokens"], bsq_codec.tokenize(video)[0])
    assert same_tokens(bsq_codec.decode_tokens(data0)[0], stats0["tokens"])


def test_bsq_mean_fill_decodes(bsq_codec):
    data = bsq_codec.encode(textured(3))
    cut = bitstream.truncate(data, 3)
    a = bsq_codec.decode(cut, sampler="mean")
    assert torch.equal(a, bsq_codec.decode(cut, sampler="mean")) and not torch.equal(a, bsq_codec.decode(cut))


def test_save_load_rebuilds_bsq_and_the_bitwise_head(tmp_path, bsq_codec):
    path = tmp_path / "bsq.pt"
    bsq_codec.save(path)
    loaded = Codec.load(path)
    assert type(loaded.quantizer) is BinarySphericalQuantizer and loaded.quantizer.bits == 6
    assert loaded.context_model.config.head == "bitwise" and loaded.context_model.head.out_features == 6
    assert loaded.fingerprint() == bsq_codec.fingerprint()
    vq = make_tiny_codec(seed=0)
    assert vq.fingerprint() != bsq_codec.fingerprint()
    data, stats = bsq_codec.encode_with_stats(textured(3))
    assert same_tokens(loaded.decode_tokens(data)[0], stats["tokens"])
    # the VQ model refuses the BSQ stream, naming why
    with pytest.raises(BitstreamError, match="model mismatch|quantizer 'bsq'"):
        vq.decode(data)


def test_vq_codec_refuses_a_bsq_stream_with_the_same_fingerprint_prefix(bsq_codec, monkeypatch):
    """Past the fingerprint, the header's quantizer name is checked too."""
    data = bsq_codec.encode(textured(2))
    vq = make_tiny_codec(seed=0)
    fp = bsq_codec.fingerprint()
    monkeypatch.setattr(vq, "fingerprint", lambda: fp)
    with pytest.raises(BitstreamError, match="quantizer 'bsq'.*'vq'"):
        vq.decode(data)


# ---- VQ options ---------------------------------------------------------------------------------------
def test_default_options_leave_the_shipped_config_and_fingerprint_alone():
    q = MultiScaleResidualQuantizer()
    assert "lookup" not in registry.init_args(q) and "head" not in registry.init_args(ContextModel())
    assert registry.init_args(MultiScaleResidualQuantizer(lookup="cosine"))["lookup"] == "cosine"
    assert registry.init_args(ContextModel(head="bitwise"))["head"] == "bitwise"


def test_cosine_lookup_picks_the_smallest_angle():
    torch.manual_seed(4)
    q = MultiScaleResidualQuantizer(codebook_size=16, latent_dim=4, num_scales=2, lookup="cosine")
    q.codebook.weight.data.normal_()
    q.codebook.weight.data[3] *= 50   # a long code: L2 avoids it, the angle does not care
    r = torch.randn(2, 4, 3, 3)
    r_LC = r.permute(0, 2, 3, 1).reshape(-1, 4)
    cos = F.normalize(r_LC, dim=1) @ F.normalize(q.codebook.weight, dim=1).T
    assert torch.equal(q.nearest_code(r).flatten(), cos.argmax(1))
    l2 = MultiScaleResidualQuantizer(codebook_size=16, latent_dim=4, num_scales=2)
    l2.load_state_dict(q.state_dict())
    assert not torch.equal(l2.nearest_code(r), q.nearest_code(r))
    dist = q.code_distances(r)
    r2 = (r_LC * r_LC).sum(1, keepdim=True)
    assert torch.allclose(dist + r2, r2 * (2 - 2 * cos), atol=1e-4)
    with pytest.raises(ValueError, match="lookup must be one of l2, cosine"):
        MultiScaleResidualQuantizer(lookup="dot")


def test_cosine_codec_round_trips_and_saves(tmp_path):
    torch.manual_seed(5)
    codec = Codec(ConvTokenizer(width=8, max_width=16, groups=4),
                  MultiScaleResidualQuantizer(codebook_size=64, lookup="cosine"),
                  ContextModel(codebook_size=64, width=32, depth=1, heads=2), gop=3, coding_threads=1)
    video = textured(3)
    data, stats = codec.encode_with_stats(video)
    for k in range(codec.quantizer.num_scales + 1):
        assert same_tokens(codec.decode_tokens(bitstream.truncate(data, k))[0], stats["tokens"][:k])
    codec.save(tmp_path / "c.pt")
    loaded = Codec.load(tmp_path / "c.pt")
    assert loaded.quantizer.lookup == "cosine" and loaded.fingerprint() == codec.fingerprint()
    plain = Codec(ConvTokenizer(width=8, max_width=16, groups=4), MultiScaleResidualQuantizer(codebook_size=64),
                  ContextModel(codebook_size=64, width=32, depth=1, heads=2))
    plain.load_state_dict(codec.state_dict())
    assert plain.fingerprint() != codec.fingerprint()   # the lookup is part of the model


def test_vq_usage_stats():
    q = MultiScaleResidualQuantizer(codebook_size=8, latent_dim=4, num_scales=2)
    stats = q.usage_stats([torch.tensor([[0, 0, 1, 1]]), torch.tensor([[2, 2, 3, 3]])])
    assert stats["perplexity"] == pytest.approx(4.0) and stats["dead"] == 4 and stats["used"] == 4
    assert [i for i, _ in stats["top"]] == [0, 1, 2, 3] and stats["top"][0][1] == pytest.approx(0.25)
    assert q.usage_stats()["perplexity"] == 0.0   # no training hits yet
    one = q.usage_stats([torch.zeros(5, dtype=torch.long)])
    assert one["perplexity"] == pytest.approx(1.0) and one["dead"] == 7


# ---- the shipped model on a real clip -----------------------------------------------------------------
def test_shipped_bsq_model_codes_a_real_clip():
    if not PRETRAINED.get("tiny-bsq") or not PRETRAINED["tiny-bsq"].is_file():
        pytest.fail("progvc_lab/checkpoints/tiny_bsq.pt is missing")
    codec = Codec.from_pretrained("tiny-bsq", coding_threads=1)
    assert type(codec.quantizer) is BinarySphericalQuantizer and codec.context_model.config.head == "bitwise"
    assert codec.fingerprint() != Codec.from_pretrained("tiny").fingerprint()
    video, _ = read_video(sample_clip_path("foreman"), max_frames=3)
    for coder in ("torchac", "constriction"):
        data, stats = codec.encode_with_stats(video, coder=coder)
        for k in range(codec.quantizer.num_scales + 1):
            assert same_tokens(codec.decode_tokens(bitstream.truncate(data, k))[0], stats["tokens"][:k]), (coder, k)
    # the trained context model beats a uniform code of 9 bits per token
    assert 8 * len(data) < 9 * sum(t.numel() for t in stats["tokens"])
    assert math.isfinite(codec.quantizer.usage_stats(stats["tokens"])["perplexity"])
