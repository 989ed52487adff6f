"""Unit specifications of the five stages: masks, scale schedule, quantizer, integer CDFs, the
entropy coder, the detail sampler and the tokenizer's padding."""
from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F

from progvc_lab.stages import (ContextModel, ConvTokenizer, DetailSampler, MultiScaleResidualQuantizer,
                               attention_cost, build_mask, get_coder, is_truncation_safe, logits_to_cdf,
                               model_bits, scale_schedule)
from progvc_lab.stages.entropy import TOTAL, cdf_to_freq
from progvc_lab.stages.masks import block_index, decode_order, token_mask
from progvc_lab.stages.quantizer import area_down

from helpers import one_thread  # noqa: F401  (fixture)

pytestmark = pytest.mark.usefixtures("one_thread")


# ---- masks --------------------------------------------------------------------------------------
@pytest.mark.parametrize("T,K", [(1, 1), (1, 4), (3, 3), (4, 6)])
def test_var_mask_is_block_causal(T, K):
    allowed = build_mask("var", T, K)
    t_B, s_B = block_index(T, K)
    order_B = t_B * K + s_B
    expected = order_B[None, :] <= order_B[:, None]
    assert torch.equal(allowed, expected)
    assert torch.equal(allowed, torch.ones(T * K, T * K, dtype=torch.bool).tril())


@pytest.mark.parametrize("T,K,W", [(1, 1, 1), (2, 3, 1), (4, 6, 1), (5, 4, 2), (3, 2, 0), (6, 3, 4)])
def test_progvc_sparse_is_truncation_safe_and_exact(T, K, W):
    allowed = build_mask("progvc_sparse", T, K, W)
    assert is_truncation_safe(allowed, K)
    for (tq, sq), (tk, sk) in itertools.product(itertools.product(range(T), range(K)), repeat=2):
        expect = (tk == tq and sk <= sq) or (sk == sq and tq - W <= tk < tq)
        assert bool(allowed[tq * K + sq, tk * K + sk]) == expect, ((tq, sq), (tk, sk))
    assert len(decode_order(allowed, K)) == T * K  # scale-major order is valid


@pytest.mark.parametrize("name", ["var", "infinitystar"])
@pytest.mark.parametrize("T,K", [(2, 2), (3, 4), (4, 6)])
def test_var_and_infinitystar_are_not_truncation_safe(name, T, K):
    allowed = build_mask(name, T, K)
    assert not is_truncation_safe(allowed, K)
    with pytest.raises(ValueError, match="scale-major"):
        decode_order(allowed, K)


def test_single_frame_masks_are_truncation_safe():
    # with one frame nothing reads the previous frame's finest scale
    for name in ("var", "infinitystar", "progvc_sparse"):
        assert is_truncation_safe(build_mask(name, 1, 5), 5)


def test_infinitystar_reads_itself_and_previous_finest():
    T, K = 3, 4
    allowed = build_mask("infinitystar", T, K)
    for q in range(T * K):
        keys = set(torch.nonzero(allowed[q]).flatten().tolist())
        t, s = divmod(q, K)
        expect = {q} | ({(t - 1) * K + K - 1} if t > 0 else set())
        assert keys == expect


@pytest.mark.parametrize("T", [2, 3, 8])
def test_attention_cost_sparse_below_var(T):
    lengths = [h * w for h, w in scale_schedule((18, 22), 6)]
    cost_sparse = attention_cost(build_mask("progvc_sparse", T, 6), lengths)
    cost_var = attention_cost(build_mask("var", T, 6), lengths)
    assert cost_sparse < cost_var
    # one frame: the two masks coincide
    one_frame = [attention_cost(build_mask(name, 1, 6), lengths) for name in ("progvc_sparse", "var")]
    assert one_frame[0] == one_frame[1]


def test_attention_cost_counts_token_pairs():
    allowed = build_mask("var", 2, 2)
    lengths = [1, 4]
    # token mask has exactly cost True entries
    assert attention_cost(allowed, lengths) == int(token_mask(allowed, lengths * 2).sum())


def test_token_mask_expands_blocks():
    T, K = 2, 3
    lengths = [1, 4, 6] * T
    allowed = build_mask("progvc_sparse", T, K)
    tm = token_mask(allowed, lengths)
    L = sum(lengths)
    assert tm.shape == (L, L)
    block_of = [b for b, n in enumerate(lengths) for _ in range(n)]
    for i in range(L):
        for j in range(L):
            assert bool(tm[i, j]) == bool(allowed[block_of[i], block_of[j]])


def test_build_mask_rejects_bad_arguments():
    with pytest.raises(ValueError, match="unknown attention mask"):
        build_mask("nope", 2, 2)
    with pytest.raises(ValueError):
        build_mask("var", 0, 2)


# ---- scale schedule -----------------------------------------------------------------------------
@pytest.mark.parametrize("latent_hw", [(1, 1), (4, 6), (5, 7), (18, 22), (9, 30), (30, 9), (1, 12), (64, 64)])
@pytest.mark.parametrize("K", [1, 2, 4, 6, 8])
def test_scale_schedule(latent_hw, K):
    sched = scale_schedule(latent_hw, K)
    assert len(sched) == K
    assert tuple(sched[-1]) == tuple(latent_hw)
    if K > 1:
        assert tuple(sched[0]) == (1, 1)
    for (h0, w0), (h1, w1) in zip(sched, sched[1:]):
        assert h0 <= h1 and w0 <= w1
    assert all(1 <= h <= latent_hw[0] and 1 <= w <= latent_hw[1] for h, w in sched)


def test_scale_schedule_non_square_has_non_square_scales():
    sched = scale_schedule((9, 30), 6)
    assert any(h != w for h, w in sched[1:])


def test_scale_schedule_rejects_empty_latent():
    with pytest.raises(ValueError):
        scale_schedule((0, 4), 3)


# ---- quantizer ------------------------------------------------------------------------------------
def _quantizer(seed=0, V=32, C=8, K=5):
    torch.manual_seed(seed)
    q = MultiScaleResidualQuantizer(codebook_size=V, latent_dim=C, num_scales=K).eval()
    torch.nn.init.normal_(q.codebook.weight, std=0.5)  # spread codes so that many are used
    return q


@pytest.mark.parametrize("latent_hw", [(4, 6), (5, 3), (7, 7)])
def test_tokens_to_latent_equals_tokenize_loop(latent_hw):
    q = _quantizer()
    f = torch.randn(2, q.latent_dim, *latent_hw, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        tokens, partials, _ = q._residual_loop(f, keep_partials=True)
        assert [tuple(t.shape) for t in tokens] == [(2, *hw) for hw in q.schedule(latent_hw)]
        # a direct computation of the loop: residual, area-down, brute-force nearest code, phi, sum
        f_rest, f_hat = f.clone(), torch.zeros_like(f)
        for s, (hs, ws) in enumerate(q.schedule(latent_hw)):
            r = F.interpolate(f_rest, size=(hs, ws), mode="area") if (hs, ws) != latent_hw else f_rest
            r_LC = r.permute(0, 2, 3, 1).reshape(-1, q.latent_dim)
            idx = torch.cdist(r_LC.double(), q.codebook.weight.double()).argmin(1).view(2, hs, ws)
            assert torch.equal(idx, tokens[s]), f"scale {s}: tokens are not the nearest codes"
            z = q.codebook.weight[idx].permute(0, 3, 1, 2)
            if (hs, ws) != latent_hw:
                z = F.interpolate(z, size=latent_hw, mode="bilinear", align_corners=False)
            z = 0.5 * z + 0.5 * F.conv2d(z, q.phi[s].weight, q.phi[s].bias, padding=1)
            f_hat, f_rest = f_hat + z, f_rest - z
            torch.testing.assert_close(q.tokens_to_latent(tokens, latent_hw, upto=s + 1), f_hat,
                                       rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(partials[s], f_hat, rtol=1e-5, atol=1e-5)
        full = q.tokens_to_latent(tokens, latent_hw, upto=q.num_scales)
        assert torch.equal(q.tokens_to_latent(tokens, latent_hw), full)
        assert torch.equal(q.tokens_to_latent(tokens, latent_hw, upto=0), torch.zeros_like(f))


def test_context_input_is_area_down_of_partial_latent():
    q = _quantizer()
    latent_hw = (6, 8)
    f = torch.randn(3, q.latent_dim, *latent_hw, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        tokens = q.tokenize(f)
        sched = q.schedule(latent_hw)
        ctx0 = q.context_input([], 0, latent_hw, num_frames=3)
        assert torch.equal(ctx0, torch.zeros(3, q.latent_dim, *sched[0]))
        for s in range(1, q.num_scales):
            expect = area_down(q.tokens_to_latent(tokens, latent_hw, upto=s), sched[s])
            assert torch.equal(q.context_input(tokens[:s], s, latent_hw), expect)
        with pytest.raises(ValueError):
            q.tokens_to_latent(tokens[:2], latent_hw, upto=3)


# ---- integer CDFs ---------------------------------------------------------------------------------
@pytest.mark.parametrize("V", [2, 3, 17, 64, 512, 4096])
@pytest.mark.parametrize("seed", range(4))
def test_logits_to_cdf_properties(V, seed):
    gen = torch.Generator().manual_seed(seed * 1000 + V)
    scale = [0.1, 1.0, 5.0, 40.0][seed]
    logits = torch.randn(37, V, generator=gen) * scale
    cdf = logits_to_cdf(logits)
    assert cdf.shape == (37, V + 1) and cdf.dtype == torch.int64
    assert bool((cdf[:, 0] == 0).all()) and bool((cdf[:, -1] == TOTAL).all())
    freq = cdf_to_freq(cdf)
    assert bool((freq >= 1).all())             # every symbol stays codable
    assert bool((freq.sum(1) == TOTAL).all())
    assert bool((cdf[:, 1:] > cdf[:, :-1]).all())  # strictly increasing
    assert torch.equal(cdf, logits_to_cdf(logits.clone()))  # deterministic
    # each row depends only on its own logits (batch composition does not matter)
    for i in (0, 5, 36):
        assert torch.equal(logits_to_cdf(logits[i:i + 1]), cdf[i:i + 1])
    assert torch.equal(logits_to_cdf(logits.flip(0)), cdf.flip(0))
    # the leftover goes to the most likely symbol: it holds the largest count
    assert torch.equal(freq.argmax(1), torch.softmax(logits.double(), -1).argmax(1))


def test_logits_to_cdf_ties_go_to_lowest_index():
    V = 10
    cdf = logits_to_cdf(torch.zeros(1, V))
    freq = cdf_to_freq(cdf)[0]
    base = (TOTAL - V) // V + 1
    assert bool((freq[1:] == base).all())
    assert int(freq[0]) == TOTAL - (V - 1) * base
    logits = torch.tensor([[0.0, 5.0, 1.0, 5.0, 5.0]])
    freq = cdf_to_freq(logits_to_cdf(logits))[0]
    assert int(freq.argmax()) == 1 and freq[1] > freq[3] and freq[3] == freq[4]


def test_logits_to_cdf_extreme_logits():
    logits = torch.tensor([[1e4, -1e4, 0.0, -1e4], [0.0, 0.0, 0.0, 80.0], [-1e30, -1e30, -1e30, -1e30]])
    cdf = logits_to_cdf(logits)
    freq = cdf_to_freq(cdf)
    assert bool((freq >= 1).all()) and bool((freq.sum(1) == TOTAL).all())
    assert int(freq[0, 0]) == TOTAL - 3 and int(freq[1, 3]) == TOTAL - 3


@pytest.mark.parametrize("gate", [0.0, 0.3, 0.97, "per-token"])
def test_logits_to_cdf_copy_mixture(gate):
    """p = g * onehot(copy) + (1 - g) * softmax, mixed in float64 inside the one integer step."""
    gen = torch.Generator().manual_seed(5)
    L, V = 23, 64
    logits = torch.randn(L, V, generator=gen) * 3
    copy = torch.randint(0, V, (L,), generator=gen)
    g = torch.rand(L, generator=gen, dtype=torch.float64) * 0.99 if gate == "per-token" else gate
    cdf = logits_to_cdf(logits, copy_symbols=copy, gate=g)
    freq = cdf_to_freq(cdf)
    assert bool((freq >= 1).all()) and bool((freq.sum(1) == TOTAL).all())
    assert torch.equal(cdf, logits_to_cdf(logits.clone(), copy_symbols=copy.clone(), gate=g))
    g_L = torch.as_tensor(g, dtype=torch.float64).expand(L)
    p = (1 - g_L[:, None]) * torch.softmax(logits.double(), -1)
    p[torch.arange(L), copy] += g_L
    expect = torch.floor(p * (TOTAL - V)).long() + 1
    top = p.argmax(1)
    expect[torch.arange(L), top] += TOTAL - expect.sum(1)
    assert torch.equal(freq, expect)
    if gate == 0.0:
        assert torch.equal(cdf, logits_to_cdf(logits))
    assert torch.equal(logits_to_cdf(logits, copy_symbols=copy, gate=None), logits_to_cdf(logits))


def test_logits_to_cdf_rejects_huge_vocabulary():
    with pytest.raises(ValueError):
        logits_to_cdf(torch.zeros(1, TOTAL))


# ---- entropy coder --------------------------------------------------------------------------------
@pytest.mark.parametrize("V,L,scale", [(2, 1, 1.0), (3, 50, 3.0), (64, 200, 1.0), (512, 64, 8.0), (4096, 20, 2.0)])
def test_torchac_round_trip(V, L, scale):
    coder = get_coder("torchac")
    gen = torch.Generator().manual_seed(V + L)
    for trial in range(3):
        cdf = logits_to_cdf(torch.randn(L, V, generator=gen) * scale)
        if trial == 0:   # symbols drawn from the model
            u = torch.randint(0, TOTAL, (L, 1), generator=gen)
            sym = torch.searchsorted(cdf[:, 1:].contiguous(), u, right=True).squeeze(1)
        elif trial == 1:  # the least likely symbols (frequency 1 where the model is sharp)
            sym = cdf_to_freq(cdf).argmin(1)
        else:             # uniform random symbols, including the last id V-1
            sym = torch.randint(0, V, (L,), generator=gen)
            sym[-1] = V - 1
        data = coder.encode(cdf, sym)
        assert isinstance(data, bytes)
        assert torch.equal(coder.decode(cdf, data), sym)
        bits = model_bits(cdf, sym)
        assert len(data) * 8 <= bits + 48, (len(data), bits)  # a few bytes of termination per call
        assert len(data) * 8 >= bits - 1


def _chunk_blocks(gen, V, lengths, scale):
    """Random (cdf, symbols) blocks of the given lengths, symbols mostly drawn from the model."""
    blocks = []
    for L in lengths:
        cdf = logits_to_cdf(torch.randn(L, V, generator=gen) * scale)
        u = torch.randint(0, TOTAL, (L, 1), generator=gen)
        sym = torch.searchsorted(cdf[:, 1:].contiguous(), u, right=True).squeeze(1)
        if L > 1:
            sym[0] = cdf_to_freq(cdf[:1]).argmin(1)[0]  # one least likely symbol per block
            sym[-1] = V - 1
        blocks.append((cdf, sym))
    return blocks


@pytest.mark.parametrize("name", ["torchac", "constriction"])
@pytest.mark.parametrize("seed", range(6))
def test_chunk_coders_decode_block_by_block(name, seed):
    """A chunk = the blocks of all frames of one scale; decoding is incremental (block t's CDF is known
    only after block t-1 is decoded), so the reader is fed one CDF at a time."""
    coder = get_coder(name)
    gen = torch.Generator().manual_seed(seed)
    V = [2, 16, 64, 512, 512, 4096][seed]
    lengths = [int(x) for x in torch.randint(1, 60, (1 + seed * 3,), generator=gen)]
    blocks = _chunk_blocks(gen, V, lengths, scale=[1.0, 3.0, 8.0][seed % 3])
    w = coder.chunk_encoder()
    for cdf, sym in blocks:
        w.add(cdf, sym)
    chunk = w.finish()
    r = coder.chunk_decoder(chunk, len(blocks), "chunk")
    for cdf, sym in blocks:
        assert torch.equal(r.next(cdf), sym)
    bits = sum(model_bits(c, s) for c, s in blocks)
    per_call = len(blocks) if name == "torchac" else 1
    assert bits - 1 <= 8 * len(chunk) <= bits + 64 * per_call + 16 * len(blocks) * (name == "torchac")


def test_range_coder_pays_one_termination_per_chunk():
    """The same 30 one-token blocks (a 1x1 scale over a GOP of 30 frames): torchac pays a termination and a
    length field per block, the range coder one termination for the chunk."""
    gen = torch.Generator().manual_seed(0)
    blocks = _chunk_blocks(gen, 512, [1] * 30, scale=6.0)
    sizes = {}
    for name in ("torchac", "constriction"):
        w = get_coder(name).chunk_encoder()
        for cdf, sym in blocks:
            w.add(cdf, sym)
        sizes[name] = len(w.finish())
    bits = sum(model_bits(c, s) for c, s in blocks)
    assert sizes["constriction"] * 8 <= bits + 40
    assert sizes["torchac"] >= 30 + sizes["constriction"]


def test_range_coder_drops_trailing_zero_bytes_and_still_decodes():
    coder = get_coder("constriction")
    gen = torch.Generator().manual_seed(3)
    trimmed = 0
    for trial in range(200):
        blocks = _chunk_blocks(gen, 64, [int(torch.randint(1, 5, (1,), generator=gen))], scale=4.0)
        w = coder.chunk_encoder()
        w.add(*blocks[0])
        chunk = w.finish()
        trimmed += len(chunk) % 4 != 0
        assert torch.equal(coder.chunk_decoder(chunk, 1).next(blocks[0][0]), blocks[0][1])
    assert trimmed > 0  # the case is exercised


def test_torchac_rejects_bad_symbols():
    coder = get_coder("torchac")
    cdf = logits_to_cdf(torch.zeros(4, 8))
    with pytest.raises(ValueError):
        coder.encode(cdf, torch.tensor([0, 1, 2, 8]))
    with pytest.raises(ValueError):
        coder.encode(cdf, torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match="unknown entropy coder"):
        get_coder("nope")
    w = get_coder("constriction").chunk_encoder()
    with pytest.raises(ValueError):
        w.add(cdf, torch.tensor([0, 1, 2, 8]))


def test_model_bits():
    cdf = logits_to_cdf(torch.zeros(4, 4))  # uniform: 2 bits per symbol (up to the leftover)
    assert model_bits(cdf, torch.tensor([1, 2, 3, 1])) == pytest.approx(8.0, abs=1e-3)


# ---- detail sampler --------------------------------------------------------------------------------
def _logits(L=300, V=64, seed=0):
    return torch.randn(L, V, generator=torch.Generator().manual_seed(seed))


def test_sampler_reproducible_and_seeded():
    logits = _logits()
    a = DetailSampler("sample", seed=3).choose(logits, gop=0, t=1, s=2)
    b = DetailSampler("sample", seed=3).choose(logits, gop=0, t=1, s=2)
    c = DetailSampler("sample", seed=4).choose(logits, gop=0, t=1, s=2)
    d = DetailSampler("sample", seed=3).choose(logits, gop=0, t=2, s=2)  # seeded per block
    assert torch.equal(a, b)
    assert not torch.equal(a, c) and not torch.equal(a, d)
    assert a.dtype == torch.int64 and a.shape == (300,) and 0 <= int(a.min()) and int(a.max()) < 64


def test_sampler_top_k_one_is_argmax_and_top_k_restricts():
    logits = _logits(seed=1)
    assert torch.equal(DetailSampler("sample", top_k=1, seed=9).choose(logits, 0, 0, 0), logits.argmax(-1))
    assert torch.equal(DetailSampler("argmax").choose(logits, 0, 0, 0), logits.argmax(-1))
    top5 = logits.topk(5, dim=-1).indices
    picks = DetailSampler("sample", top_k=5, seed=2).choose(logits, 0, 0, 0)
    assert bool((picks[:, None] == top5).any(1).all())


def test_sampler_low_temperature_approaches_argmax():
    logits = _logits(seed=2) * 3
    picks = DetailSampler("sample", temperature=1e-3, seed=0).choose(logits, 0, 0, 0)
    assert torch.equal(picks, logits.argmax(-1))


def test_sampler_top_p_keeps_the_nucleus_and_ties():
    logits = torch.log(torch.tensor([[0.5, 0.2, 0.2, 0.1], [0.05, 0.9, 0.03, 0.02], [0.25, 0.25, 0.25, 0.25]]))
    keep = lambda p: torch.isfinite(DetailSampler("sample", top_k=0, top_p=p).filtered_logits(logits, 0))  # noqa: E731
    # 0.5 alone is short of 0.6; the next id (0.2) reaches it, and its tie (the other 0.2) is kept too
    assert keep(0.6).tolist() == [[True, True, True, False], [False, True, False, False], [True] * 4]
    assert keep(0.5).tolist()[0] == [True, False, False, False]   # reached exactly by the first id
    assert keep(1.0).all() and keep(1e-9).sum(1).tolist() == [1, 1, 4]
    # draws stay inside the nucleus; top_p = 1 changes nothing
    logits = _logits(seed=6) * 2
    nucleus = torch.isfinite(DetailSampler("sample", top_k=0, top_p=0.3).filtered_logits(logits, 0))
    picks = DetailSampler("sample", top_k=0, top_p=0.3, seed=1).choose(logits, 0, 0, 0)
    assert bool(nucleus.gather(1, picks[:, None]).all()) and bool((nucleus.sum(1) < 64).all())
    assert torch.equal(DetailSampler("sample", top_k=0, top_p=1.0, seed=1).choose(logits, 0, 0, 0),
                       DetailSampler("sample", top_k=0, seed=1).choose(logits, 0, 0, 0))


def test_sampler_temperature_per_scale():
    det = DetailSampler("sample", temperature=(1e-3, 1.0, 2.0))
    assert [det.temperature_at(s) for s in range(5)] == [1e-3, 1.0, 2.0, 2.0, 2.0]
    logits = _logits(seed=7) * 3
    # scale 0 is drawn at temperature 1e-3 (argmax); scale 1 at 1.0 is the single-value sampler's draw
    assert torch.equal(det.choose(logits, 0, 0, 0), logits.argmax(-1))
    assert torch.equal(det.choose(logits, 0, 0, 1), DetailSampler("sample", temperature=1.0).choose(logits, 0, 0, 1))
    assert DetailSampler("sample", temperature=[0.5, 0.7]).temperature == (0.5, 0.7)


def test_mean_chooses_argmax_tokens_and_gives_probabilities():
    logits = _logits(seed=3)
    assert torch.equal(DetailSampler("mean").choose(logits, 0, 0, 0), logits.argmax(-1))
    p = DetailSampler("mean", temperature=0.5, top_k=3).probabilities(logits)  # always the model's own p
    assert torch.allclose(p, torch.softmax(logits.double(), -1)) and DetailSampler("mean").latent_fill
    assert not DetailSampler("sample").latent_fill


def test_copy_keeps_previous_tokens_where_still():
    logits = _logits(L=6, seed=4)
    prev = torch.tensor([1, 2, 3, 4, 5, 6])
    still = torch.tensor([True, False, True, False, True, False])
    fresh = DetailSampler("sample", seed=5).choose(logits, 0, 1, 2)
    picks = DetailSampler("copy", seed=5).choose(logits, 0, 1, 2, prev, still)
    assert torch.equal(picks, torch.where(still, prev, fresh))
    assert torch.equal(DetailSampler("copy", seed=5).choose(logits, 0, 1, 2, prev), prev)   # no still map: copy
    assert torch.equal(DetailSampler("copy", seed=5).choose(logits, 0, 0, 2), DetailSampler("sample", seed=5).choose(logits, 0, 0, 2))


def test_expected_code_and_latent_fill():
    torch.manual_seed(0)
    q = MultiScaleResidualQuantizer(codebook_size=32, latent_dim=4, num_scales=3)
    latent_hw = (4, 6)
    sizes = q.schedule(latent_hw)
    p = torch.softmax(torch.randn(sizes[2][0] * sizes[2][1], 32), -1)
    z = q.expected_code(p, sizes[2])
    assert torch.allclose(z, (p @ q.codebook.weight).T.reshape(4, *sizes[2]))
    # a one-hot distribution is the token itself: the latent path equals the token path
    tok = [torch.randint(32, (2, *hw)) for hw in sizes]
    onehot = torch.nn.functional.one_hot(tok[2].reshape(2, -1), 32).float()
    codes = [torch.stack([q.expected_code(onehot[i], sizes[2]) for i in range(2)])]
    with torch.no_grad():
        assert torch.allclose(q.tokens_to_latent(tok[:2], latent_hw, codes=codes), q.tokens_to_latent(tok, latent_hw),
                              atol=1e-6)
        with pytest.raises(ValueError, match="exceed"):
            q.tokens_to_latent(tok, latent_hw, codes=codes)


def test_sampler_rejects_bad_options():
    for kw in ({"mode": "blur"}, {"mode": "sample", "temperature": 0.0}, {"mode": "sample", "top_k": -1},
               {"mode": "mean", "mean_context": "tokens"}, {"mode": "sample", "top_p": 0.0},
               {"mode": "sample", "top_p": 1.5}, {"mode": "sample", "temperature": ()},
               {"mode": "sample", "temperature": (0.8, -1.0)}, {"mode": "sample", "temperature": float("nan")}):
        with pytest.raises(ValueError):
            DetailSampler(**kw)
    assert not DetailSampler("zero").predicts and DetailSampler("argmax").predicts


# ---- tokenizer ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("H,W", [(37, 53), (32, 48), (9, 17), (8, 8)])
def test_tokenizer_pads_and_crops(H, W):
    torch.manual_seed(0)
    tok = ConvTokenizer(width=8, max_width=16, groups=4).eval()
    x = torch.rand(2, 3, H, W, generator=torch.Generator().manual_seed(H * W))
    with torch.no_grad():
        f = tok.encode(x)
        assert f.shape == (2, tok.latent_dim, -(-H // 8), -(-W // 8)) == (2, tok.latent_dim, *tok.latent_size(H, W))
        # padding is replicate-padding to the stride, never a resize
        Hp, Wp = f.shape[-2] * 8, f.shape[-1] * 8
        padded = F.pad(x, (0, Wp - W, 0, Hp - H), mode="replicate")
        torch.testing.assert_close(tok.encode(padded), f)
        assert tok.decode(f, (H, W)).shape == (2, 3, H, W)
        assert tok.decode(f).shape == (2, 3, Hp, Wp)
        assert tok(x).shape == x.shape


def test_tokenizer_rejects_bad_input():
    with pytest.raises(ValueError, match="power of two"):
        ConvTokenizer(stride=6)
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        ConvTokenizer(width=8, max_width=16, groups=4).encode(torch.rand(1, 1, 8, 8))


# ---- context model: the coding path computes what training computes ------------------------------------
def test_block_logits_match_teacher_forced_forward():
    torch.manual_seed(0)
    V, C, K, T = 16, 8, 3, 3
    q = MultiScaleResidualQuantizer(codebook_size=V, latent_dim=C, num_scales=K).eval()
    cm = ContextModel(codebook_size=V, latent_dim=C, num_scales=K, width=32, depth=2, heads=2, window=1).eval()
    latent_hw = (3, 4)
    sched = q.schedule(latent_hw)
    gen = torch.Generator().manual_seed(5)
    tokens = [torch.randint(0, V, (T, h, w), generator=gen) for h, w in sched]
    with torch.no_grad():
        ctx = [q.context_input(tokens, s, latent_hw, num_frames=T) for s in range(K)]
        logits_BLV = cm([c[None] for c in ctx], [t[None] for t in tokens])
        state = cm.new_state(latent_hw, sched, T)
        per_block = {}
        for t, s in decode_order(state.allowed_BB, K):
            per_block[(t, s)] = cm.block_logits(state, t, s, ctx[s][t])
            state.tokens[(t, s)] = tokens[s][t]
        coded = torch.cat([per_block[(t, s)] for t in range(T) for s in range(K)])
    torch.testing.assert_close(coded, logits_BLV[0], rtol=1e-4, atol=1e-4)


def test_block_logits_refuses_blocks_out_of_order():
    torch.manual_seed(0)
    cm = ContextModel(codebook_size=8, latent_dim=4, num_scales=2, width=16, depth=1, heads=2).eval()
    state = cm.new_state((2, 2), [(1, 1), (2, 2)], 2)
    with pytest.raises(RuntimeError, match="not coded yet|first"):
        cm.block_logits(state, 1, 0, torch.zeros(4, 1, 1))


# ---- each config written once: the dataclass is the constructor's argument ------------------------
def _stage_kinds():
    from progvc_lab.codec import Codec, CodecConfig
    from progvc_lab.stages.bsq import BinarySphericalQuantizer, BSQConfig
    from progvc_lab.stages.context_model import ContextModelConfig
    from progvc_lab.stages.quantizer import QuantizerConfig
    from progvc_lab.stages.tokenizer import TokenizerConfig

    tiny_tok = dict(width=8, max_width=16, groups=4)
    return [(ConvTokenizer, TokenizerConfig, tiny_tok, "stride", 4),
            (MultiScaleResidualQuantizer, QuantizerConfig, dict(codebook_size=32), "lookup", "cosine"),
            (BinarySphericalQuantizer, BSQConfig, dict(bits=5), "tau", 0.25),
            (ContextModel, ContextModelConfig, dict(codebook_size=32, width=16, depth=1, heads=2), "window", 2),
            (lambda config=None, **kw: Codec(ConvTokenizer(**tiny_tok), MultiScaleResidualQuantizer(codebook_size=32),
                                           ContextModel(codebook_size=32, width=16, depth=1, heads=2), config, **kw),
             CodecConfig, dict(gop=4), "rdo_lambda", 0.0)]


@pytest.mark.parametrize("i", range(5), ids=["tokenizer", "vq", "bsq", "context_model", "codec"])
def test_a_stage_takes_its_config_or_its_fields_and_refuses_unknown_ones(i):
    from progvc_lab.stages import registry

    make, config_cls, kw, field, value = _stage_kinds()[i]
    by_kw = make(**kw, **{field: value})
    by_cfg = make(config_cls(**kw), **{field: value})
    assert by_kw.config == by_cfg.config == config_cls(**kw, **{field: value})
    base = config_cls(**kw)
    assert make(base).config == base and make(base).config is not base    # a copy: nothing shared
    if i < 4:                                                             # a checkpoint's rebuild
        assert type(by_kw)(**registry.init_args(by_kw)).config == by_kw.config
    with pytest.raises(TypeError, match="unexpected keyword argument 'nonsense'"):
        make(**kw, nonsense=1)
    with pytest.raises(TypeError, match="pass the fields by name"):
        make(8)                                                           # the old positional form


def test_config_validation_stays():
    with pytest.raises(ValueError, match="power of two"):
        ConvTokenizer(stride=6)
    with pytest.raises(ValueError, match="lookup"):
        MultiScaleResidualQuantizer(lookup="l1")
    with pytest.raises(ValueError, match="head"):
        ContextModel(head="nope")
    with pytest.raises(ValueError, match="2\\^d"):
        ContextModel(codebook_size=48, head="bitwise")


def test_student_quantizer_copies_the_whole_config():
    from progvc_lab.course.build_stage import StudentQuantizer

    base = MultiScaleResidualQuantizer(codebook_size=32, num_scales=4, lookup="cosine")
    student = StudentQuantizer(base)
    assert student.config == base.config and student.lookup == "cosine"
    assert torch.equal(student.codebook.weight, base.codebook.weight)


def _cdf_reference(logits_LV, min_count=1, copy_symbols=None, gate=None):
    """``logits_to_cdf`` as first written (out of place, indexed deficit, concatenated cumsum)."""
    from progvc_lab.stages.entropy import TOTAL

    L, V = logits_LV.shape
    p_LV = torch.softmax(logits_LV.to(torch.float64), dim=-1)
    if copy_symbols is not None and gate is not None:
        g_L = torch.as_tensor(gate, dtype=torch.float64).expand(L).reshape(L, 1)
        p_LV = (1 - g_L) * p_LV
        p_LV.scatter_add_(1, copy_symbols.reshape(L, 1).long(), g_L)
    freq_LV = torch.floor(p_LV * (TOTAL - V * min_count)).to(torch.int64) + min_count
    freq_LV[torch.arange(L), p_LV.argmax(-1)] += TOTAL - freq_LV.sum(-1)
    return torch.cat([torch.zeros(L, 1, dtype=torch.int64), freq_LV.cumsum(-1)], dim=-1)


def test_the_faster_cdf_is_the_same_cdf_integer_for_integer():
    """The in-place form of ``logits_to_cdf`` gives the first form's CDFs exactly: ties (rounded logits,
    tied maxima), both min counts, with and without the copy mixture, many shapes."""
    from progvc_lab.stages.entropy import logits_to_cdf

    g = torch.Generator().manual_seed(0)
    for i in range(200):
        L, V = int(torch.randint(1, 400, (1,), generator=g)), int(torch.randint(2, 600, (1,), generator=g))
        x = torch.randn(L, V, generator=g) * float(torch.rand(1, generator=g) * 20)
        if i % 5 == 0:
            x = x.round()
        if i % 7 == 0:
            x[:, :3] = 50.0
        min_count = 0 if i % 4 == 0 else 1
        copy = torch.randint(0, V, (L,), generator=g) if i % 3 == 0 else None
        gate = float(torch.rand(1, generator=g) * 0.99) if copy is not None else None
        assert torch.equal(logits_to_cdf(x, min_count, copy, gate), _cdf_reference(x, min_count, copy, gate)), i


# ---- the learned copy gate: the training loss is the likelihood of what the codec codes ----------------------
def test_copy_mixture_nll_is_the_mixture_the_codec_codes():
    from progvc_lab.stages.context_model import copy_mixture_nll

    g = torch.Generator().manual_seed(0)
    B, L, V = 2, 40, 16
    logits = torch.randn(B, L, V, generator=g, dtype=torch.float64)
    gate = torch.randn(B, L, generator=g, dtype=torch.float64)
    offset = torch.randn(B, L, generator=g, dtype=torch.float64)
    target = torch.randint(0, V, (B, L), generator=g)
    prev = torch.where(torch.rand(B, L, generator=g) < 0.5, target, torch.randint(0, V, (B, L), generator=g))
    prev[:, :8] = -1                                   # an intra frame: no previous token
    nll = copy_mixture_nll(logits, gate, target, prev, offset)
    p_y = torch.softmax(logits, -1).gather(-1, target[..., None])[..., 0]
    w = torch.sigmoid(gate + offset)
    want = -torch.where(prev < 0, p_y.log(), (w * (target == prev) + (1 - w) * p_y).log())
    torch.testing.assert_close(nll, want)
    # a gate pushed shut is the plain cross-entropy; an open gate makes a copied token nearly free
    shut = copy_mixture_nll(logits, torch.full_like(gate, -60.0), target, prev, offset)
    torch.testing.assert_close(shut, F.cross_entropy(logits.transpose(1, 2), target, reduction="none"))
    opened = copy_mixture_nll(logits, torch.full_like(gate, 60.0), target, prev, offset)
    copied = (prev >= 0) & (target == prev)
    assert float(opened[copied].max()) < 1e-12 and bool(torch.isinf(opened[(prev >= 0) & ~copied]).all() |
                                                        (opened[(prev >= 0) & ~copied] > 20).all())


def test_the_gate_is_centred_per_block_as_the_walk_centres_it():
    from progvc_lab.stages.context_model import centre_per_block, copy_mixture_nll
    from progvc_lab.walk import centred

    g = torch.Generator().manual_seed(1)
    lengths = [1, 4, 12, 1, 4, 12]
    z = torch.randn(3, sum(lengths), generator=g, dtype=torch.float64)
    out = centre_per_block(z, lengths)
    start = 0
    for n in lengths:
        torch.testing.assert_close(out[1, start:start + n], centred(z[1, start:start + n]), rtol=0, atol=1e-15)
        assert float(out[:, start:start + n].sum(1).abs().max()) < 1e-12
        start += n
    # the loss with lengths is the loss of the centred gate; a constant shift of the head changes nothing
    logits = torch.randn(3, sum(lengths), 8, generator=g, dtype=torch.float64)
    target = torch.randint(0, 8, (3, sum(lengths)), generator=g)
    prev = torch.randint(0, 8, (3, sum(lengths)), generator=g)
    off = torch.randn(3, sum(lengths), generator=g, dtype=torch.float64)
    a = copy_mixture_nll(logits, z, target, prev, off, lengths)
    torch.testing.assert_close(a, copy_mixture_nll(logits, out, target, prev, off))
    torch.testing.assert_close(a, copy_mixture_nll(logits, z + 3.0, target, prev, off, lengths))


def test_a_gate_head_is_recorded_only_when_on_and_starts_at_zero():
    from progvc_lab.stages import registry

    plain, gated = ContextModel(width=16, heads=2, depth=1), ContextModel(width=16, heads=2, depth=1, gate_head=True)
    assert "gate_head" not in registry.init_args(plain) and registry.init_args(gated)["gate_head"] is True
    assert plain.gate is None and float(gated.gate.weight.detach().abs().sum() + gated.gate.bias.detach().abs().sum()) == 0
    assert not any(k.startswith("gate.") for k in plain.state_dict())
    with pytest.raises(ValueError, match="gate_head"):
        plain.forward_with_gate([], [])
