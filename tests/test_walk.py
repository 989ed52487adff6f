"""The one coding walk (``progvc_lab.walk``) and the encoder's result object.

Checked independently of the codec's own use of the walk: a walk driven by hand with the encoder's
tokens reproduces the encoder's per-token bits, gates and the stream's chunk sizes; f_hat accumulated
scale by scale equals the quantizer's from-scratch context input bit for bit; a walk driven wrongly
says so."""
from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
import torch

from progvc_lab import bitstream
from progvc_lab.codec import CodecError, EncodeResult, deterministic
from progvc_lab.stages.entropy import logits_to_cdf, symbol_bits
from progvc_lab.walk import GATE_MAX, WalkError

from helpers import make_tiny_codec, pattern_clip


@pytest.fixture(scope="module")
def codec():
    return make_tiny_codec(seed=3, gop=3, gate_head=True)


@pytest.fixture(scope="module")
def clip():
    video = pattern_clip(5, 37, 53)
    noise = torch.rand(video.shape, generator=torch.Generator().manual_seed(3))
    return (video + 0.2 * noise).clamp(0, 1)


@pytest.fixture(scope="module", params=["count", "context", "none", "learned"])
def encoded(request, codec, clip):
    return codec.encode_with_stats(clip, fps=Fraction(25), copy_gate=request.param)


def test_result_is_what_a_hand_driven_walk_computes(codec, encoded):
    data, res = encoded
    assert isinstance(res, EncodeResult) and res.data == data and res.bytes == len(data)
    h = bitstream.read_stream(data).header
    K = h.num_scales
    with deterministic(h.coding_threads):
        for g in range(h.num_gops):
            n, g0 = h.gop_frames(g), g * h.gop
            walk = codec.walk(h.latent_hw, h.schedule, n, h.copy_gate, gop=g, start=g0)
            for block in walk.blocks(range(K)):
                t, s = block.t, block.s
                assert block.frame == g0 + t and block.shape == tuple(h.schedule[s])
                block.symbols = res.tokens[s][block.frame].flatten()
                gate = block.gate
                if gate is None:
                    assert np.isnan(res.gate[block.frame, s])
                    assert t == 0 or h.copy_gate == "none"
                    cdf = logits_to_cdf(block.logits)
                else:
                    assert res.gate[block.frame, s] == pytest.approx(float(gate.mean()))
                    cdf = logits_to_cdf(block.logits, copy_symbols=block.prev, gate=gate)
                assert torch.equal(block.cdf, cdf)
                bits = symbol_bits(cdf, block.symbols).view(block.shape).numpy()
                np.testing.assert_array_equal(res.token_bits[s][block.frame], bits)
                assert res.model_bits[block.frame, s] == pytest.approx(bits.sum(), rel=1e-12)
    stream = bitstream.read_stream(data)
    assert res.chunk_bytes.shape == (h.num_gops, K)
    assert all(res.chunk_bytes[g, s] == len(c) for (g, s), c in stream.chunks.items())
    assert res.header.fingerprint == h.fingerprint and res.header.num_frames == h.num_frames
    # the mapping view of earlier versions
    assert res["bytes"] == len(data) and res["tokens"] is res.tokens and "seconds_verify" not in res
    assert set(dict(res)) >= {"tokens", "latent_hw", "model_bits", "rdo_distortion", "options", "token_bits"}
    np.testing.assert_allclose(res.bits_per_token, [b.mean() for b in res.token_bits])


def test_verify_records_its_time(codec, clip):
    _, res = codec.encode_with_stats(clip[:2], verify=True)
    assert res.seconds_verify is not None and "seconds_verify" in res


def test_accumulated_f_hat_is_the_quantizers_context_input(codec, encoded):
    _, res = encoded
    q, n = codec.quantizer, 3
    schedule = q.schedule(res.latent_hw)
    with deterministic(2):
        walk = codec.walk(res.latent_hw, schedule, n)
        contexts = {}
        orig = walk.context

        def spy(s):
            contexts[s] = orig(s)
            return contexts[s]

        walk.context = spy
        for block in walk.blocks(range(len(schedule))):
            block.symbols = res.tokens[block.s][block.t].flatten()
        for s, ctx in contexts.items():
            expect = q.context_input([res.tokens[j][:n] for j in range(s)], s, res.latent_hw, num_frames=n)
            assert torch.equal(ctx, expect), s
        assert torch.equal(walk.f_hat(len(schedule)), q.tokens_to_latent([t[:n] for t in res.tokens], res.latent_hw))


def test_a_walk_driven_wrongly_says_so(codec, encoded):
    _, res = encoded
    schedule = codec.quantizer.schedule(res.latent_hw)
    walk = codec.walk(res.latent_hw, schedule, 2)
    blocks = walk.blocks(range(2))
    next(blocks)
    with pytest.raises(WalkError, match="set block.symbols"):
        next(blocks)
    walk = codec.walk(res.latent_hw, schedule, 2)
    with pytest.raises(WalkError, match="scales must follow on"):
        next(walk.blocks([1]))
    walk = codec.walk(res.latent_hw, schedule, 2)
    blocks = walk.blocks(range(1))
    block = next(blocks)
    block.symbols = torch.zeros(5, dtype=torch.long)
    with pytest.raises(WalkError, match="has 1 tokens; got 5"):
        next(blocks)
    with pytest.raises(WalkError, match="not complete"):
        walk.token_map(0)
    with pytest.raises(CodecError, match="unknown copy gate"):
        codec.walk(res.latent_hw, schedule, 2, "sometimes")


def test_viz_reads_the_result_instead_of_walking_again(codec, encoded, monkeypatch):
    from progvc_lab.viz import figures

    _, res = encoded
    monkeypatch.setattr(type(codec.context_model), "block_logits",
                        lambda *a, **k: pytest.fail("the Transformer ran again"))
    maps = figures.token_bits_maps(codec, None, res)
    assert all(np.array_equal(a, b) for a, b in zip(maps, res.token_bits))
    np.testing.assert_array_equal(figures.copy_gate_trace(codec, res), res.gate, strict=False)


# ---- the learned copy gate ------------------------------------------------------------------------------------
def test_training_targets_are_the_walks_count_gate(codec, clip):
    """``copy_training_targets`` (the offsets stage 2 trains the gate head with) equals the logit of the
    count gate the walk codes with, block for block, and names the previous frame's tokens."""
    from progvc_lab.walk import copy_training_targets

    data, res = codec.encode_with_stats(clip, fps=Fraction(25), copy_gate="count", gop=32)
    tokens = [t[None] for t in res.tokens]                 # one GOP: (1, T, h, w) per scale
    prev_BL, offset_BL = copy_training_targets(tokens)
    K, T = len(tokens), tokens[0].shape[1]
    i = 0
    h = bitstream.read_stream(data).header
    with deterministic(h.coding_threads):
        walk = codec.walk(h.latent_hw, h.schedule, T, "count")
        gates = {}
        for block in walk.blocks(range(K)):
            block.symbols = res.tokens[block.s][block.t].flatten()
            gates[(block.t, block.s)] = block.gate
    for t in range(T):
        for s in range(K):
            L = tokens[s][0, t].numel()
            prev, off = prev_BL[0, i:i + L], offset_BL[0, i:i + L]
            if t == 0:
                assert bool((prev == -1).all()) and bool((off == 0).all())
            else:
                assert torch.equal(prev, tokens[s][0, t - 1].flatten())
                g = gates[(t, s)]
                torch.testing.assert_close(torch.sigmoid(off), g.expand(L), rtol=0, atol=1e-12)
            i += L
    assert i == prev_BL.shape[1]


def test_learned_gate_is_the_count_gate_corrected_by_the_model(codec, clip):
    """Block for block, the learned gate is sigmoid(z - mean(z) + logit(count gate)) with z the gate head's
    output for that block; a head at zero codes exactly the count gate's CDFs."""
    import copy as _copy

    K = codec.quantizer.num_scales
    data, _ = codec.encode_with_stats(clip, fps=Fraction(25), copy_gate="learned")
    h = bitstream.read_stream(data).header
    tokens, _ = codec.decode_tokens(data)
    with deterministic(h.coding_threads):
        walk = codec.walk(h.latent_hw, h.schedule, h.gop_frames(0), "learned")
        count = codec.walk(h.latent_hw, h.schedule, h.gop_frames(0), "count")
        for block, other in zip(walk.blocks(range(K)), count.blocks(range(K))):
            block.symbols = other.symbols = tokens[block.s][block.t].flatten()
            if block.t == 0:
                assert block.gate is None
                continue
            z = walk.state.gate_logits[(block.t, block.s)].double()
            c = other.gate.expand_as(z)
            want = torch.sigmoid(z - z.mean() + torch.log(c / (1 - c))).clamp(max=GATE_MAX)   # centred over the block
            torch.testing.assert_close(block.gate, want, rtol=0, atol=1e-12)
            # the head moves the block's tokens apart, not the block's rate: the mean logit is the count's
            logit = torch.log(block.gate / (1 - block.gate))
            assert float((logit.mean() - torch.log(c / (1 - c))[0]).abs()) < 1e-9
            if z.numel() > 1:   # (a one-token block centres to the count gate itself)
                assert not torch.equal(block.cdf, other.cdf)   # the drawn head is not zero
    zero = _copy.deepcopy(codec)
    torch.nn.init.zeros_(zero.context_model.gate.weight), torch.nn.init.zeros_(zero.context_model.gate.bias)
    with deterministic(h.coding_threads):
        a = zero.walk(h.latent_hw, h.schedule, h.gop_frames(0), "learned")
        b = zero.walk(h.latent_hw, h.schedule, h.gop_frames(0), "count")
        for x, y in zip(a.blocks(range(K)), b.blocks(range(K))):
            x.symbols = y.symbols = tokens[x.s][x.t].flatten()
            if x.t > 0:
                torch.testing.assert_close(x.gate, y.gate.expand_as(x.gate), rtol=0, atol=1e-12)
                assert (x.cdf - y.cdf).abs().max() <= 1   # float64 rounding of the same mixture


def test_learned_gate_needs_a_gate_head(clip):
    plain = make_tiny_codec(seed=3, gop=3)
    with pytest.raises(CodecError, match="gate head"):
        plain.encode(clip, copy_gate="learned")
    with pytest.raises(ValueError, match="gate head"):
        plain.walk((4, 6), [(1, 1), (2, 2), (4, 6)], 2, "learned")
    assert plain.resolve_copy_gate("auto") == "context"
    gated = make_tiny_codec(seed=3, gop=3, gate_head=True)
    assert gated.resolve_copy_gate("auto") == "context"     # the learned gate is an option, not the default
    assert bitstream.read_stream(gated.encode(clip)).header.copy_gate == "context"
    assert bitstream.read_stream(gated.encode(clip, copy_gate="learned")).header.copy_gate == "learned"
