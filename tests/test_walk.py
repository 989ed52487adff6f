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
from progvc_lab.walk import WalkError

from helpers import make_tiny_codec, pattern_clip


@pytest.fixture(scope="module")
def codec():
    return make_tiny_codec(seed=3, gop=3)


@pytest.fixture(scope="module")
def clip():
    video = pattern_clip(5, 37, 53)
    noise = torch.rand(video.shape, generator=torch.Generator().manual_seed(3))
    return (video + 0.2 * noise).clamp(0, 1)


@pytest.fixture(scope="module", params=["count", "context", "none"])
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
