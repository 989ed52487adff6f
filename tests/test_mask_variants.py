"""Attention masks as variants of the codec (issue 8 item 3).

* safety: ``is_truncation_safe`` holds exactly for the scale-monotone masks, checked against a
  dependency simulation of a cut decode on random masks and on every built-in mask;
* a safe stream decodes at every k (truncated or decoded with fewer scales); a stream of a mask that is
  not safe (``var``, ``infinitystar``) is coded frame-major for its k, decodes at that k with the
  encoder's tokens, shows the synthesized scales both sides drew, and refuses truncation, fewer
  scales and cuts with a clear message;
* the synthesis is a pure integer function of the CDF and the block.
"""
from __future__ import annotations

import warnings

import pytest
import torch

from progvc_lab import bitstream
from progvc_lab.codec import Codec, CodecError
from progvc_lab.course.unsafe import with_mask
from progvc_lab.stages.entropy import TOTAL, cdf_to_freq, logits_to_cdf
from progvc_lab.stages.masks import MASKS, block_index, build_mask, coding_order, is_truncation_safe, register_mask
from progvc_lab.walk import synthesize

from helpers import make_tiny_codec, pattern_clip


def needs_of_cut(allowed_BB: torch.Tensor, K: int, k: int) -> set:
    """Blocks a decoder of a stream cut after k scales would need that it does not have: the keys (by
    transitive closure) of the sent blocks s < k that lie at scales >= k."""
    T = allowed_BB.shape[0] // K
    sent = {(t, s) for t in range(T) for s in range(k)}
    missing, todo, seen = set(), list(sent), set()
    while todo:
        t, s = todo.pop()
        for key in torch.nonzero(allowed_BB[t * K + s]).flatten().tolist():
            blk = (key // K, key % K)
            if blk not in sent:
                missing.add(blk)
            elif blk not in seen:
                seen.add(blk)
                todo.append(blk)
    return missing


@pytest.mark.parametrize("seed", range(40))
def test_safety_is_exactly_scale_monotonicity(seed):
    gen = torch.Generator().manual_seed(seed)
    T, K = 1 + seed % 4, 1 + (seed // 4) % 4
    _, s_B = block_index(T, K)
    allowed = torch.rand(T * K, T * K, generator=gen) < 0.35
    if seed % 3 == 0:   # a monotone mask: no key finer than its query
        allowed &= s_B[None, :] <= s_B[:, None]
    safe = is_truncation_safe(allowed, K)
    cuts_ok = all(not needs_of_cut(allowed, K, k) for k in range(K + 1))
    assert safe == cuts_ok
    assert safe == bool((~allowed | (s_B[None, :] <= s_B[:, None])).all())


@pytest.mark.parametrize("name", sorted(MASKS))
def test_builtin_masks_safety_and_order(name):
    for T, K, W in [(1, 3, 1), (4, 3, 1), (5, 6, 2)]:
        allowed = build_mask(name, T, K, W)
        safe = is_truncation_safe(allowed, K)
        assert safe == all(not needs_of_cut(allowed, K, k) for k in range(K + 1))
        order = coding_order(allowed, K)
        assert sorted(order) == sorted((t, s) for t in range(T) for s in range(K))
        if safe:
            assert order == [(t, s) for s in range(K) for t in range(T)]       # scale-major
    assert bitstream.mask_truncation_safe(name) == is_truncation_safe(build_mask(name, 4, 4, 1), 4)


def test_a_mask_that_fits_no_order_is_refused():
    @register_mask("reads_the_future")
    def future(T, K, window=1):
        t_B, _ = block_index(T, K)
        return t_B[None, :] <= t_B[:, None] + 1
    try:
        with pytest.raises(ValueError, match="no coding order fits"):
            make_tiny_codec(mask="reads_the_future")
    finally:
        del MASKS["reads_the_future"]


def test_synthesis_is_a_pure_function_of_the_cdf_and_the_block():
    logits = torch.randn(500, 16, generator=torch.Generator().manual_seed(0)) * 2
    cdf = logits_to_cdf(logits)
    a = synthesize(cdf, 0, 1, 2)
    assert torch.equal(a, synthesize(cdf.clone(), 0, 1, 2)) and a.dtype == torch.int64
    assert not torch.equal(a, synthesize(cdf, 0, 2, 2)) and not torch.equal(a, synthesize(cdf, 1, 1, 2))
    assert int(a.min()) >= 0 and int(a.max()) < 16
    # one distribution for all rows: the draw follows it (within 5 sigma per symbol)
    one = logits_to_cdf(torch.tensor([[2.0, 1.0, 0.0, -1.0]]).expand(20000, 4).contiguous())
    draws = synthesize(one, 3, 4, 5)
    p = cdf_to_freq(one[:1]).double()[0] / TOTAL
    freq = torch.bincount(draws, minlength=4).double() / len(draws)
    assert ((freq - p).abs() <= 5 * (p * (1 - p) / len(draws)).sqrt() + 1e-9).all(), (freq, p)


@pytest.fixture(scope="module")
def clip():
    video = pattern_clip(5, 32, 48)
    return (video + 0.25 * torch.rand(video.shape, generator=torch.Generator().manual_seed(1))).clamp(0, 1)


def _same(a, b):
    return len(a) == len(b) and all(torch.equal(x, y) for x, y in zip(a, b))


@pytest.mark.parametrize("mask", ["var", "infinitystar"])
def test_unsafe_stream_decodes_at_its_k_only(mask, clip):
    codec = make_tiny_codec(seed=2, gop=3, mask=mask)
    K = codec.quantizer.num_scales
    assert not codec.truncation_safe
    for k in (1, 3, K):
        data, res = codec.encode_with_stats(clip, scales=k)
        h = bitstream.read_stream(data).header
        assert h.scales_sent == k and h.mask == mask
        tokens, _ = codec.decode_tokens(data)
        assert _same(tokens, res.tokens) and len(tokens) == k
        full, _ = codec.decode_tokens(data, sampler="sample")   # the synthesized scales, as the encoder drew them
        assert _same(full[:k], res.tokens) and _same(full[k:], res.synthesized) and len(full) == K
        assert codec.decode(data).shape == clip.shape
        assert bitstream.truncate(data, k) == data or len(bitstream.truncate(data, k)) == len(data)
        if k > 1:
            with pytest.raises(bitstream.BitstreamError, match="not truncation safe"):
                bitstream.truncate(data, k - 1)
            with pytest.raises(CodecError, match="decodes only at the"):
                codec.decode(data, scales=k - 1)
            info = bitstream.describe(data)
            cut = data[:info["header_bytes"] + info["table_bytes"] + sum(info["bytes_per_scale"][:k - 1]) + 1]
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                with pytest.raises(bitstream.BitstreamError, match="cut, and its mask"):
                    codec.decode(cut)
    # the encoder synthesizes what the decoder will: with k < K the coded scales differ from a full
    # encode from frame 1 on (frame 1 reads frame 0's synthesized finest scale), never in frame 0
    _, full = codec.encode_with_stats(clip)
    _, part = codec.encode_with_stats(clip, scales=3)
    assert torch.equal(part.tokens[0][0], full.tokens[0][0])


def test_safe_variant_decodes_at_every_k(clip):
    codec = make_tiny_codec(seed=4, gop=3, mask="progvc_sparse_parent", window=2)
    assert codec.truncation_safe
    K = codec.quantizer.num_scales
    data, res = codec.encode_with_stats(clip)
    for k in range(K + 1):
        tokens, _ = codec.decode_tokens(bitstream.truncate(data, k))
        assert _same(tokens, res.tokens[:k])
        assert _same(codec.decode_tokens(data, scales=k)[0], res.tokens[:k])
    small, res3 = codec.encode_with_stats(clip, scales=3)       # = the full stream cut after 3
    assert small == bitstream.truncate(data, 3) and _same(res3.tokens, res.tokens[:3])


@pytest.mark.parametrize("mask", ["var", "infinitystar", "progvc_sparse", "progvc_sparse_parent"])
def test_every_mask_round_trips_on_a_real_clip(mask, shipped_codec, foreman4):
    """The shipped model's stages under each mask, on a real clip (same weights: a mask it was not trained
    for costs bits, never correctness)."""
    codec = Codec(shipped_codec.tokenizer, shipped_codec.quantizer, with_mask(shipped_codec.context_model, mask))
    K = codec.quantizer.num_scales
    ks = (2, K)     # every k of every mask: the tiny codec's tests above
    data, res = codec.encode_with_stats(foreman4)
    for k in ks:
        if codec.truncation_safe:
            stream, want = bitstream.truncate(data, k), res.tokens[:k]
        elif k == K:
            stream, want = data, res.tokens
        else:
            stream, part = codec.encode_with_stats(foreman4, scales=k)
            want = part.tokens
        assert _same(codec.decode_tokens(stream)[0], want), (mask, k)


@pytest.fixture(scope="module")
def shipped_codec():
    from progvc_lab.codec import PRETRAINED

    if not PRETRAINED["tiny"].is_file():
        pytest.skip("the shipped checkpoint is missing")
    return Codec.from_pretrained("tiny")


@pytest.fixture(scope="module")
def foreman4():
    from progvc_lab.data import read_video, sample_clip_path

    video, _ = read_video(sample_clip_path("foreman"), max_frames=3)
    return video[:, :, :64, :96].contiguous()


def test_a_cut_stream_of_a_users_unsafe_mask_fails_its_checks(clip):
    """bitstream (no torch) cannot know a user's mask: it cuts the stream; the codec then refuses it
    (chunk checks), never a wrong video."""
    register_mask("my_var")(MASKS["var"])
    try:
        codec = make_tiny_codec(seed=2, gop=3, mask="my_var")
        assert not codec.truncation_safe and bitstream.mask_truncation_safe("my_var") is None
        data = codec.encode(clip, scales=4)
        with pytest.raises(bitstream.BitstreamError, match="not truncation safe"):
            bitstream.truncate(data, 2, mask_safe=False)
        with pytest.raises(bitstream.BitstreamError, match="corrupted"):
            codec.decode_tokens(bitstream.truncate(data, 2))
    finally:
        del MASKS["my_var"]
