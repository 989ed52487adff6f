"""The codec end to end: round trips, progressive truncation, threads, errors, samplers, golden stream.

All tests use a random tiny codec (tests/helpers.py) on 32x48-ish clips, so they say nothing about
quality; they pin down the *coding*: what is encoded is exactly what is decoded.
"""
from __future__ import annotations

import hashlib
import math
import os
from fractions import Fraction
from pathlib import Path

import pytest
import torch

from progvc_lab import bitstream
from progvc_lab.bitstream import BitstreamError
from progvc_lab.codec import PRETRAINED, Codec, CodecError
from progvc_lab.stages import DetailSampler

from helpers import decode_tokens_quietly, make_tiny_codec, one_thread, pattern_clip  # noqa: F401

pytestmark = pytest.mark.usefixtures("one_thread")

GOLDEN = Path(__file__).parent / "golden" / "tiny_random.md5"


@pytest.fixture(scope="module")
def codec():
    return make_tiny_codec(seed=0)


@pytest.fixture(scope="module")
def clip():
    return pattern_clip(7)


@pytest.fixture(scope="module")
def encoded(codec, clip):
    data, stats = codec.encode_with_stats(clip, fps=Fraction(30000, 1001))
    return data, stats


def same_tokens(a, b) -> bool:
    return len(a) == len(b) and all(torch.equal(x, y) for x, y in zip(a, b))


# ---- round trips ------------------------------------------------------------------------------------
@pytest.mark.parametrize("seed,T,H,W,gop,window", [
    (0, 4, 32, 48, 3, 1),
    (1, 7, 32, 48, 5, 1),     # 7 frames, GOP 5: the last GOP has 2 frames
    (2, 7, 37, 53, 2, 2),     # not a multiple of the stride, window 2
    (3, 7, 24, 16, 1, 1),     # GOP 1: every frame intra; portrait
    (4, 3, 9, 70, 5, 2),      # GOP longer than the clip; very wide
    (5, 5, 41, 27, 2, 1),
    (6, 2, 8, 8, 2, 2),       # one latent position: the whole pyramid is 1x1
])
def test_token_round_trip(seed, T, H, W, gop, window):
    codec = make_tiny_codec(seed=seed, gop=gop, window=window)
    video = pattern_clip(T, H, W)
    if seed % 2:  # mix in some texture so that tokens vary
        video = (video + 0.3 * torch.rand(video.shape, generator=torch.Generator().manual_seed(seed))).clamp(0, 1)
    data, stats = codec.encode_with_stats(video)
    decoded, header = codec.decode_tokens(data)
    assert same_tokens(decoded, stats["tokens"])
    # lambda = 0 is nearest-code encoding exactly
    data0, stats0 = codec.encode_with_stats(video, rdo_lambda=0)
    assert same_tokens(stats0["tokens"], codec.tokenize(video)[0])
    assert same_tokens(codec.decode_tokens(data0)[0], stats0["tokens"])
    assert [tuple(t.shape) for t in decoded] == [(T, *hw) for hw in codec.quantizer.schedule(stats["latent_hw"])]
    assert (header.num_frames, header.gop, header.num_gops) == (T, gop, -(-T // gop))
    assert header.gop_frames(header.num_gops - 1) == T - (header.num_gops - 1) * gop
    out = codec.decode(data)
    assert out.shape == video.shape and out.dtype == torch.float32
    assert float(out.min()) >= 0 and float(out.max()) <= 1


def test_verify_and_batch_input(codec, clip, encoded):
    data, _ = encoded
    assert codec.encode(clip, fps=Fraction(30000, 1001), verify=True) == data
    assert codec.encode(clip[None], fps=Fraction(30000, 1001)) == data  # (1, T, 3, H, W) is accepted
    h = bitstream.read_stream(data).header
    assert (h.fps_num, h.fps_den, h.width, h.height) == (30000, 1001, 48, 32)


def test_decode_matches_reconstruct(codec, clip, encoded):
    data, stats = encoded
    expect = codec.reconstruct(stats["tokens"], stats["latent_hw"], clip.shape[-2:])
    assert torch.equal(codec.decode(data), expect)


# ---- progressive ------------------------------------------------------------------------------------
def test_every_truncation_level_decodes(codec, clip, encoded):
    data, stats = encoded
    K = codec.quantizer.num_scales
    sizes = []
    for k in range(K + 1):
        cut = bitstream.truncate(data, k)
        sizes.append(len(cut))
        tokens, header = codec.decode_tokens(cut)
        assert header.scales_sent == k
        assert same_tokens(tokens, stats["tokens"][:k])
        video = codec.decode(cut)
        assert video.shape == clip.shape
        # decoding k scales of the full stream gives the same video as decoding the cut stream
        assert torch.equal(video, codec.decode(data, scales=k))
        if k:
            assert torch.equal(video, codec.reconstruct(stats["tokens"], stats["latent_hw"], clip.shape[-2:], upto=k))
    assert sizes[-1] == len(data)
    assert all(a < b for a, b in zip(sizes, sizes[1:])), sizes


def test_cut_at_scale_boundary_decodes_fewer_scales(codec, encoded):
    data, stats = encoded
    info = bitstream.describe(data)
    end = info["header_bytes"] + info["table_bytes"]
    for k, n in enumerate(info["bytes_per_scale"][:-1], start=1):
        end += n
        with pytest.warns(UserWarning, match=f"cut after scale {k} of"):
            tokens, header = codec.decode_tokens(data[:end])
        assert header.scales_sent == k and same_tokens(tokens, stats["tokens"][:k])


def test_cut_inside_a_scale_is_salvaged_or_refused_when_strict(codec, encoded):
    """A cut inside a scale decodes every complete scale of every GOP (tests/test_fuzz.py checks the
    tokens at every offset); ``strict=True`` keeps the refusal; a cut with no complete scale is refused."""
    data, stats = encoded
    info = bitstream.describe(data)
    start = info["header_bytes"] + info["table_bytes"]
    for end in (start + info["bytes_per_scale"][0] + 1, len(data) - 1, len(data) // 2 + 1):
        with pytest.raises(BitstreamError, match="truncated.*strict"):
            codec.decode(data[:end], strict=True)
        with pytest.warns(UserWarning, match="stream was cut"):
            video, report = codec.decode_with_report(data[:end])
        assert video.shape[0] == 7 and not report.complete and report.dropped()
        assert report.scales_decoded == report.scales_per_gop and max(report.scales_decoded) >= 1
    for end in (start, start + 1, 10, 60):
        with pytest.raises(BitstreamError, match="truncated|no scale of any GOP is complete"):
            codec.decode(data[:end])


def test_scales_beyond_the_stream_are_refused(codec, encoded):
    data, _ = encoded
    with pytest.raises(ValueError, match="cannot decode 3 scales"):
        codec.decode(bitstream.truncate(data, 2), scales=3)


# ---- threads and determinism ------------------------------------------------------------------------------
@pytest.mark.parametrize("enc_threads,dec_threads", [(1, 2), (1, 4), (2, 1), (3, 2)])
def test_decode_uses_the_streams_coding_threads(clip, enc_threads, dec_threads):
    """The coding path's float results depend on its thread count, so the stream records it and the decoder
    uses it, whatever its own ``coding_threads`` (and the caller's thread setting) say."""
    enc = make_tiny_codec(seed=0, coding_threads=enc_threads)
    data, stats = enc.encode_with_stats(clip)
    assert bitstream.read_stream(data).header.coding_threads == enc_threads
    dec = make_tiny_codec(seed=0, coding_threads=dec_threads)
    tokens, _ = dec.decode_tokens(data)
    assert same_tokens(tokens, stats["tokens"])
    with pytest.raises(CodecError, match="coding_threads"):
        enc.encode(clip, coding_threads=0)


def test_global_thread_setting_does_not_matter(codec, encoded):
    data, stats = encoded
    old = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        tokens, _ = codec.decode_tokens(data)
        assert torch.get_num_threads() == 2  # the codec restores the caller's setting
        assert not torch.are_deterministic_algorithms_enabled()
    finally:
        torch.set_num_threads(old)
    assert same_tokens(tokens, stats["tokens"])


def test_encoding_is_deterministic(codec, clip, encoded):
    assert codec.encode(clip, fps=Fraction(30000, 1001)) == encoded[0]
    assert make_tiny_codec(seed=0).encode(clip, fps=Fraction(30000, 1001)) == encoded[0]


# ---- coding options: copy gate, RDO, GOP -------------------------------------------------------------------
@pytest.fixture(scope="module")
def textured():
    video = pattern_clip(6, 32, 48)
    noise = torch.rand(video.shape, generator=torch.Generator().manual_seed(7))
    return (video + 0.15 * noise).clamp(0, 1)


@pytest.mark.parametrize("coder", ["constriction", "torchac"])
@pytest.mark.parametrize("copy_gate", ["none", "count", "context", "learned"])
@pytest.mark.parametrize("rdo_lambda", [0.0, 0.002, 0.5])
@pytest.mark.parametrize("gop", [32, 2])
def test_every_option_round_trips_and_truncates(textured, copy_gate, rdo_lambda, gop, coder):
    gate_head = copy_gate == "learned"
    codec = make_tiny_codec(seed=11, gate_head=gate_head)
    opts = dict(copy_gate=copy_gate, rdo_lambda=rdo_lambda, gop=gop, coder=coder)
    data, stats = codec.encode_with_stats(textured, verify=True, **opts)
    h = bitstream.read_stream(data).header
    assert (h.copy_gate, h.gop, h.coder) == (copy_gate, gop, coder)
    for k in range(codec.quantizer.num_scales + 1):
        tokens, _ = codec.decode_tokens(bitstream.truncate(data, k))
        assert same_tokens(tokens, stats["tokens"][:k]), k
    # the decoder takes the gate from the stream, not from its own config
    other = make_tiny_codec(seed=11, gate_head=gate_head, copy_gate="none" if copy_gate != "none" else "context")
    assert same_tokens(other.decode_tokens(data)[0], stats["tokens"])


def test_coders_code_the_same_tokens_and_the_range_coder_is_smaller(textured):
    codec = make_tiny_codec(seed=11)
    a, st_a = codec.encode_with_stats(textured, coder="torchac")
    b, st_b = codec.encode_with_stats(textured, coder="constriction")
    assert same_tokens(st_a["tokens"], st_b["tokens"]) and (st_a["model_bits"] == st_b["model_bits"]).all()
    K = codec.quantizer.num_scales
    for k in range(1, K + 1):  # one termination per chunk instead of one per block, no length fields
        assert len(bitstream.truncate(b, k)) < len(bitstream.truncate(a, k)), k
    with pytest.raises(CodecError, match="unknown entropy coder"):
        codec.encode(textured, coder="nope")


def test_copy_gate_changes_only_p_frames(textured):
    codec = make_tiny_codec(seed=11, rdo_lambda=0)
    on, st_on = codec.encode_with_stats(textured, copy_gate="count")
    off, st_off = codec.encode_with_stats(textured, copy_gate="none")
    assert same_tokens(st_on["tokens"], st_off["tokens"])  # the gate changes probabilities, not tokens
    assert (st_on["model_bits"][0] == st_off["model_bits"][0]).all()  # frame 0 is intra
    assert on != off


@pytest.mark.parametrize("gop", [32, 3])
def test_p_lambda_factor_changes_only_p_frames_tokens_and_round_trips(textured, gop):
    """``rdo_p_factor`` scales lambda in P frames only: every intra frame's tokens are those of factor 1,
    and the stream decodes and truncates as any other (an encoder-only choice: nothing in the header)."""
    codec = make_tiny_codec(seed=11)
    base, st1 = codec.encode_with_stats(textured, gop=gop, rdo_lambda=0.01)
    assert codec.encode(textured, gop=gop, rdo_lambda=0.01, rdo_p_factor=1.0) == base
    data, st = codec.encode_with_stats(textured, gop=gop, rdo_lambda=0.01, rdo_p_factor=50.0, verify=True)
    assert st["options"]["rdo_p_factor"] == 50.0
    intra = list(range(0, textured.shape[0], gop))
    p_frames = [t for t in range(textured.shape[0]) if t not in intra]
    for a, b in zip(st["tokens"], st1["tokens"]):
        assert torch.equal(a[intra], b[intra])
    assert (st["rdo_distortion"][intra] == st1["rdo_distortion"][intra]).all()
    assert st["model_bits"][p_frames].sum() <= st1["model_bits"][p_frames].sum() + 1e-9
    # (this random model's P frames copy at any lambda; tests/test_pretrained.py sees the factor save bits)
    for k in range(codec.quantizer.num_scales + 1):
        tokens, _ = codec.decode_tokens(bitstream.truncate(data, k))
        assert same_tokens(tokens, st["tokens"][:k]), k
    for bad in (-1.0, float("nan"), "2"):
        with pytest.raises(CodecError, match="rdo_p_factor"):
            codec.encode(textured, rdo_p_factor=bad)


def test_rdo_trades_rate_for_distortion(textured):
    codec = make_tiny_codec(seed=11)
    rows = []
    for lam in (0.0, 0.01, 0.1, 10.0):
        data, st = codec.encode_with_stats(textured, rdo_lambda=lam)
        rows.append((lam, st["model_bits"].sum(), st["rdo_distortion"].sum()))
    bits = [r[1] for r in rows]
    dist = [r[2] for r in rows]
    assert all(a >= b - 1e-6 for a, b in zip(bits, bits[1:])), rows
    assert all(a <= b + 1e-6 for a, b in zip(dist, dist[1:])), rows
    assert bits[-1] < bits[0]


def test_encode_options_are_checked(textured):
    codec = make_tiny_codec(seed=11)
    for kw, match in (({"copy_gate": "learned"}, "copy gate"), ({"rdo_lambda": -1}, "rdo_lambda"),
                      ({"gop": 0}, "GOP"), ({"rdo_candidates": -2}, "rdo_candidates")):
        with pytest.raises(CodecError, match=match):
            codec.encode(textured, **kw)
    with pytest.raises(TypeError, match="unknown encoder option"):
        codec.encode(textured, lamda=1)


def test_encode_to_target(textured):
    codec = make_tiny_codec(seed=11)
    full = len(codec.encode(textured, rdo_lambda=0))
    budget = int(full * 0.6)
    data, stats = codec.encode_to_target(textured, target_bytes=budget, verify=True)
    chosen = stats["chosen"]
    assert len(data) == chosen["bytes"] <= budget
    assert bitstream.read_stream(data).header.scales_sent == chosen["k"] >= 1
    assert same_tokens(codec.decode_tokens(data)[0], stats["tokens"][:chosen["k"]])
    T, _, H, W = textured.shape
    data2, stats2 = codec.encode_to_target(textured, target_bpp=budget * 8 / (T * H * W))
    assert stats2["chosen"]["budget_bytes"] == budget
    with pytest.raises(CodecError, match="no stream fits"):
        codec.encode_to_target(textured, target_bytes=10)


def test_default_gop_is_all_p_up_to_the_limit(tmp_path):
    from progvc_lab.codec import MAX_GOP, CodecConfig

    assert CodecConfig().gop == MAX_GOP == 32
    assert (CodecConfig().copy_gate, CodecConfig().rdo_lambda > 0) == ("auto", True)
    make_tiny_codec(seed=0, gop=3, rdo_lambda=0).save(tmp_path / "m.pt")
    loaded = Codec.load(tmp_path / "m.pt")  # encoder choices are not part of a model: defaults apply
    assert (loaded.config.gop, loaded.config.rdo_lambda) == (MAX_GOP, CodecConfig().rdo_lambda)
    h = bitstream.read_stream(loaded.encode(pattern_clip(3))).header
    assert (h.gop, h.num_gops, h.copy_gate) == (32, 1, "context")


# ---- errors ------------------------------------------------------------------------------------------------
def test_wrong_model_is_a_model_mismatch(encoded):
    data, _ = encoded
    with pytest.raises(BitstreamError, match="model mismatch"):
        make_tiny_codec(seed=1).decode(data)


def test_flipped_data_bytes_never_give_wrong_tokens(codec, encoded):
    """A flipped byte in the chunk data either raises (CRC or corrupted chunk) or, when the
    arithmetic decoder never reads that bit, leaves every token unchanged: never silently wrong."""
    data, stats = encoded
    info = bitstream.describe(data)
    start = info["header_bytes"] + info["table_bytes"]
    positions = sorted(set(range(start, len(data), 7)) | {start, len(data) - 1})
    raised = 0
    for pos in positions:
        bad = bytearray(data)
        bad[pos] ^= 0x10
        try:
            tokens, _ = decode_tokens_quietly(codec, bytes(bad))
        except BitstreamError as e:
            assert "CRC" in str(e) or "corrupted" in str(e) or "truncated" in str(e), str(e)
            raised += 1
        else:
            assert same_tokens(tokens, stats["tokens"]), f"flip at byte {pos} decoded to different tokens"
    assert raised >= 0.75 * len(positions)


def test_flipped_table_bytes(codec, encoded):
    data, _ = encoded
    info = bitstream.describe(data)
    for pos in range(info["header_bytes"], info["header_bytes"] + info["table_bytes"]):
        bad = bytearray(data)
        bad[pos] ^= 0x01
        with pytest.raises(BitstreamError):
            decode_tokens_quietly(codec, bytes(bad))


def test_flipped_header_bytes(codec, encoded):
    data, _ = encoded
    for pos in range(bitstream.describe(data)["header_bytes"]):
        bad = bytearray(data)
        bad[pos] ^= 0x04
        with pytest.raises(BitstreamError):
            codec.decode(bytes(bad))


def test_not_a_stream(codec, encoded):
    data, _ = encoded
    with pytest.raises(BitstreamError, match="not a .pgvc stream"):
        codec.decode(b"XXXX" + data[4:])
    with pytest.raises(BitstreamError, match="newer"):
        codec.decode(data[:4] + bytes([bitstream.VERSION + 1]) + data[5:])
    for junk in (b"", b"\x00" * 500, bytes(range(256)), b"YUV4MPEG2 W48 H32 F25:1 Ip\n"):
        with pytest.raises(BitstreamError):
            codec.decode(junk)


@pytest.mark.parametrize("path", ["clip.pgvc", Path("clip.pgvc")])
def test_path_instead_of_bytes(codec, path):
    with pytest.raises(CodecError, match="read the file first"):
        codec.decode(path)


@pytest.mark.parametrize("video,match", [
    (torch.rand(3, 32, 48), r"\(T, 3, H, W\)"),
    (torch.rand(2, 1, 32, 48), r"\(T, 3, H, W\)"),
    (torch.rand(2, 2, 3, 32, 48), "one video at a time"),
    (torch.zeros(0, 3, 32, 48), "no frames"),
    ((torch.rand(2, 3, 32, 48) * 255).to(torch.uint8), "float"),
    (torch.rand(2, 3, 32, 48) * 1.5 + 0.01, r"\[0, 1\]"),
    (torch.rand(2, 3, 32, 48) - 0.5, r"\[0, 1\]"),
    (torch.full((2, 3, 32, 48), float("nan")), r"\[0, 1\]"),
    (torch.rand(1, 3, 1, 48), "outside"),
    (torch.rand(1, 3, bitstream.MAX_SIDE + 1, 2), "outside"),
    ([[0.5]], "torch.Tensor"),
])
def test_bad_video_is_a_codec_error(codec, video, match):
    with pytest.raises(CodecError, match=match):
        codec.encode(video)


def test_codec_error_is_a_value_error():
    assert issubclass(CodecError, ValueError) and issubclass(BitstreamError, ValueError)


def test_mask_that_is_not_truncation_safe_is_a_fixed_k_variant():
    codec = make_tiny_codec(mask="var")     # allowed: coded frame-major for a fixed k (test_mask_variants)
    assert not codec.truncation_safe and make_tiny_codec().truncation_safe


# ---- samplers ------------------------------------------------------------------------------------------------
def test_samplers_fill_missing_scales(codec, clip, encoded):
    data, stats = encoded
    K, k = codec.quantizer.num_scales, 3
    cut = bitstream.truncate(data, k)
    zero, _ = codec.decode_tokens(cut, sampler="zero")
    assert len(zero) == k
    outs = {}
    for mode, kw in (("argmax", {}), ("sample", {"seed": 1}), ("sample", {"seed": 1, "temperature": 0.7, "top_k": 8}),
                     ("sample", {"seed": 2})):
        tokens, _ = codec.decode_tokens(cut, sampler=mode, **kw)
        assert len(tokens) == K and same_tokens(tokens[:k], stats["tokens"][:k])
        assert [t.shape for t in tokens] == [t.shape for t in stats["tokens"]]
        video = codec.decode(cut, sampler=mode, **kw)
        assert video.shape == clip.shape
        outs[(mode, tuple(kw.items()))] = (tokens, video)
    s1, s2 = outs[("sample", (("seed", 1),))], outs[("sample", (("seed", 2),))]
    again = codec.decode_tokens(cut, sampler=DetailSampler("sample", seed=1))[0]
    assert same_tokens(again, s1[0])                       # same seed, same tokens
    assert not same_tokens(s1[0][k:], s2[0][k:])          # another seed, other tokens
    assert torch.equal(codec.decode(cut, sampler="sample", seed=1), s1[1])
    argmax_again = codec.decode_tokens(cut, sampler="argmax")[0]
    assert same_tokens(argmax_again, outs[("argmax", ())][0])


def test_mean_fill_keeps_sent_scales_and_is_deterministic(codec, clip, encoded):
    data, stats = encoded
    K = codec.quantizer.num_scales
    for k in (0, 2, K - 1):
        cut = bitstream.truncate(data, k)
        tokens, codes, h = codec.decode_fill(cut, sampler="mean")
        assert len(tokens) == K and same_tokens(tokens[:k], stats["tokens"][:k])   # sent scales token-exact
        assert len(codes) == K - k
        for s, z in zip(range(k, K), codes):
            assert z.shape == (clip.shape[0], codec.quantizer.latent_dim, *h.schedule[s])
        again_tokens, again_codes, _ = codec.decode_fill(cut, sampler="mean")
        assert same_tokens(tokens, again_tokens) and all(torch.equal(a, b) for a, b in zip(codes, again_codes))
        video = codec.decode(cut, sampler="mean")
        assert video.shape == clip.shape and torch.equal(video, codec.decode(cut, sampler="mean"))
        # the picture is the sent tokens plus the expected codes, through the latent path
        f_hat = codec.quantizer.tokens_to_latent(tokens[:k], h.latent_hw, codes=codes)
        assert torch.allclose(video, codec.tokenizer.decode(f_hat, (h.height, h.width)).clamp(0, 1), atol=1e-6)
    # nothing to fill: the full stream decodes the same with every sampler
    assert torch.equal(codec.decode(data, sampler="mean"), codec.decode(data))


def test_mean_fill_equals_the_hand_computed_expectation(codec, clip, encoded):
    """Cut after K-1 scales: the fill of the last scale is softmax(logits) @ codebook, the logits of
    the context model given the sent tokens and frame t-1's argmax fill."""
    data, stats = encoded
    K, q = codec.quantizer.num_scales, codec.quantizer
    cut = bitstream.truncate(data, K - 1)
    tokens, codes, h = codec.decode_fill(cut, sampler="mean")
    expected = []
    with torch.no_grad():
        for g in range(h.num_gops):
            n, g0 = h.gop_frames(g), g * h.gop
            walk = codec.walk(h.latent_hw, h.schedule, n, h.copy_gate)
            for block in walk.blocks(range(K - 1)):
                block.symbols = stats["tokens"][block.s][g0 + block.t].flatten()
            maps = []
            for block in walk.blocks(range(K - 1, K)):
                p = torch.softmax(block.logits.double(), -1)
                maps.append((p.float() @ q.codebook.weight).T.reshape(q.latent_dim, *h.schedule[block.s]))
                block.symbols = block.logits.argmax(-1)
            expected += maps
    E = torch.stack(expected)
    assert torch.allclose(codes[0], E, atol=1e-6)
    assert same_tokens(tokens[K - 1:], [codec.decode_tokens(cut, sampler="argmax")[0][K - 1]])
    f_hat = q.tokens_to_latent(stats["tokens"][:K - 1], h.latent_hw) + q.code_contribution(E, K - 1, h.latent_hw)
    video = codec.decode(cut, sampler="mean")
    assert torch.allclose(video, codec.tokenizer.decode(f_hat, (h.height, h.width)).clamp(0, 1), atol=1e-5)
    # the MMSE fill lies between zero-fill and a hard code: its size is at most the largest code's
    assert float(E.norm(dim=1).max()) <= float(q.codebook.weight.norm(dim=1).max()) + 1e-6


def test_mean_context_choices(codec, encoded):
    data, _ = encoded
    K = codec.quantizer.num_scales
    cut = bitstream.truncate(data, K - 2)
    _, lat, _ = codec.decode_fill(cut, sampler="mean")
    _, arg, _ = codec.decode_fill(cut, sampler=DetailSampler("mean", mean_context="argmax"))
    assert torch.equal(lat[0], arg[0])             # the first filled scale sees only sent tokens
    assert not torch.equal(lat[1], arg[1])         # the next one sees the expected latent or argmax tokens


def test_copy_fill_is_temporally_consistent(codec, clip, encoded):
    data, stats = encoded
    K, k = codec.quantizer.num_scales, 2
    cut = bitstream.truncate(data, k)
    tokens, _ = codec.decode_tokens(cut, sampler="copy", seed=3)
    assert same_tokens(tokens[:k], stats["tokens"][:k])
    assert same_tokens(tokens, codec.decode_tokens(cut, sampler="copy", seed=3)[0])
    sampled, _ = codec.decode_tokens(cut, sampler="sample", seed=3)
    h = bitstream.read_stream(cut).header

    def p_frame_repeats(tok):  # fraction of filled P-frame tokens equal to frame t-1's
        same = total = 0
        for s in range(k, K):
            for t in range(1, tok[s].shape[0]):
                if t % h.gop:
                    same += int((tok[s][t] == tok[s][t - 1]).sum())
                    total += tok[s][t].numel()
        return same / total

    assert p_frame_repeats(tokens) > p_frame_repeats(sampled)
    for g in range(h.num_gops):  # the first frame of each GOP is a plain draw (same generator as sample)
        assert all(torch.equal(tokens[s][g * h.gop], sampled[s][g * h.gop]) for s in range(k, K))


def test_cli_decode_accepts_mean_and_copy(tmp_path, capsys):
    from progvc_lab.cli import main
    from progvc_lab.data import write_video

    make_tiny_codec(seed=0).save(tmp_path / "m.pt")
    write_video(tmp_path / "in.y4m", pattern_clip(3), fps=Fraction(25))
    assert main(["encode", str(tmp_path / "in.y4m"), "-o", str(tmp_path / "a.pgvc"), "--model", str(tmp_path / "m.pt")]) == 0
    for mode in ("mean", "copy"):
        out = tmp_path / f"{mode}.y4m"
        assert main(["decode", str(tmp_path / "a.pgvc"), "-o", str(out), "--model", str(tmp_path / "m.pt"),
                     "--scales", "2", "--sampler", mode]) == 0
        assert out.stat().st_size > 0
    assert f"sampler {mode}" in capsys.readouterr().out


def test_sampler_errors(codec, encoded):
    with pytest.raises(ValueError, match="unknown sampler"):
        codec.decode(encoded[0], sampler="blur")


# ---- analysis ------------------------------------------------------------------------------------------------
def test_analyze(codec, clip, encoded):
    a = codec.analyze(clip, fps=Fraction(30000, 1001))
    K, T = codec.quantizer.num_scales, clip.shape[0]
    assert a["bytes"] == len(encoded[0])
    for key in ("model_bits_per_scale", "bits_per_token_per_scale", "unigram_bits_per_scale",
                "ratio_to_unigram_per_scale"):
        assert len(a[key]) == K, key
    assert len(a["model_bits_per_frame"]) == T
    assert sum(a["model_bits_per_frame"]) == pytest.approx(sum(a["model_bits_per_scale"]))
    assert a["model_bits_map"].shape == (T, K)
    # the entropy coder spends about the model bits (plus a few bytes per block), never much less
    model_bytes = sum(a["model_bits_per_scale"]) / 8
    data_bytes = sum(bitstream.describe(encoded[0])["bytes_per_scale"])
    assert model_bytes - 1 <= data_bytes <= model_bytes + 4 * T * K
    assert all(b > 0 for b in a["bits_per_token_per_scale"])
    assert a["ratio_to_unigram"] > 0


# ---- checkpoints ---------------------------------------------------------------------------------------------
def test_save_load_keeps_the_fingerprint(tmp_path, codec, encoded):
    path = tmp_path / "m.pt"
    codec.save(path, meta={"note": "test"})
    loaded = Codec.load(path)
    assert loaded.fingerprint() == codec.fingerprint()
    assert loaded.meta == {"note": "test"}
    assert same_tokens(loaded.decode_tokens(encoded[0])[0], encoded[1]["tokens"])
    assert Codec.from_pretrained(str(path), gop=2).config.gop == 2
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="not a progvc_lab codec checkpoint"):
        Codec.load(tmp_path / "junk.pt")
    with pytest.raises(FileNotFoundError):
        Codec.load(tmp_path / "missing.pt")
    with pytest.raises(FileNotFoundError, match="unknown model"):
        Codec.from_pretrained("no-such-model")


# ---- golden stream ----------------------------------------------------------------------------------------------
def golden_stream() -> bytes:
    codec = make_tiny_codec(seed=1234, gop=3)
    return codec.encode(pattern_clip(5, 32, 48), fps=Fraction(25))


def test_golden_bitstream():
    """The bytes of a fixed codec on a fixed clip. A change means the format or the coding changed:
    regenerate on purpose with PROGVC_REGEN_GOLDEN=1 and say why in the commit."""
    data = golden_stream()
    digest = hashlib.md5(data).hexdigest()
    if os.environ.get("PROGVC_REGEN_GOLDEN") == "1":
        GOLDEN.parent.mkdir(exist_ok=True)
        GOLDEN.write_text(f"{digest}  tiny_random.pgvc ({len(data)} bytes; format version {bitstream.VERSION}; "
                          "make_tiny_codec(seed=1234, gop=3) with the default copy gate and lambda, "
                          "pattern_clip(5, 32, 48), fps 25; regenerate: PROGVC_REGEN_GOLDEN=1 pytest "
                          "tests/test_codec.py -k golden)\n")
        pytest.skip(f"PROGVC_REGEN_GOLDEN=1: wrote {GOLDEN} ({digest}); rerun without it")
    assert GOLDEN.is_file(), f"{GOLDEN} is missing; create it with PROGVC_REGEN_GOLDEN=1"
    expected = GOLDEN.read_text().split()[0]
    assert digest == expected, (f"golden stream changed: md5 {digest} ({len(data)} bytes), expected {expected}. "
                                "If the change is intended, regenerate with PROGVC_REGEN_GOLDEN=1")


# ---- real clips --------------------------------------------------------------------------------------------------
def shared_clips():
    from conftest import require_shared

    return sorted(require_shared("data", "clips").glob("*.y4m"))


def test_shared_clips_round_trip():
    from progvc_lab.data import read_video

    clips = shared_clips()
    assert clips, "../shared/data/clips holds no .y4m clips"
    codec = Codec.from_pretrained("tiny") if PRETRAINED["tiny"].is_file() else make_tiny_codec(seed=0, gop=2)
    for path in clips:
        video, fps = read_video(path, max_frames=3)
        data, stats = codec.encode_with_stats(video, fps)
        tokens, header = codec.decode_tokens(data)
        assert same_tokens(tokens, stats["tokens"]), path.name
        assert (header.width, header.height, header.num_frames) == (video.shape[-1], video.shape[-2], 3)
        cut = bitstream.truncate(data, 2)
        assert codec.decode(cut).shape == video.shape


def test_unigram_baseline_is_the_training_histogram():
    """The baseline is a static per-scale histogram counted in training: uniform before any counting,
    and close to the clip's own entropy when counted on the clip itself."""
    codec = make_tiny_codec(seed=3, rdo_lambda=0)  # the clip's tokens are then codec.tokenize's
    video = pattern_clip(4, 32, 48)
    before = codec.analyze(video)
    V = codec.quantizer.codebook_size
    for n, u in zip(before["tokens_per_scale"], before["unigram_bits_per_scale"]):
        assert u == pytest.approx(n * math.log2(V))
    tokens, _ = codec.tokenize(video)
    for _ in range(2000):
        codec.context_model.count_unigram(tokens)
    after = codec.analyze(video)
    for u, o in zip(after["unigram_bits_per_scale"], after["oracle_unigram_bits_per_scale"]):
        assert o <= u + 1e-6 < o + 0.1 * max(o, 1.0) + 1.0
