"""The exercise checks: every solution passes, typical mistakes fail with the message that names them,
and an unsolved exercise (``raise NotImplementedError``) is reported, never raised."""
import math

import pytest
import torch
import torch.nn.functional as F

from progvc_lab import course
from progvc_lab.course import exercises, solutions
from progvc_lab.stages.entropy import logits_to_cdf as package_cdf
from progvc_lab.stages.masks import build_mask


def test_every_exercise_has_a_check_and_a_solution():
    assert set(exercises.CHECKS) == set(solutions.ALL)


@pytest.mark.parametrize("name", solutions.ALL)
def test_solution_passes(name, capsys):
    result = exercises.CHECKS[name](getattr(solutions, name))
    out = capsys.readouterr().out
    assert result and result.passed, out
    assert "correct!" in out


@pytest.mark.parametrize("name", solutions.ALL)
def test_placeholder_says_not_implemented(name, capsys):
    def placeholder(*args, **kwargs):
        raise NotImplementedError

    result = exercises.CHECKS[name](placeholder)
    assert not result
    assert "not implemented yet" in capsys.readouterr().out


def test_a_crashing_answer_is_reported_not_raised(capsys):
    assert not course.check_nearest_code(lambda r, book: 1 / 0)
    assert "raised ZeroDivisionError" in capsys.readouterr().out


def test_check_result_is_silent_in_ipython():
    result = exercises.CheckResult("x", True, "x: correct!")
    assert result._ipython_display_() is None and bool(result)


def _fails_with(check, fn, fragment, capsys):
    result = check(fn)
    out = capsys.readouterr().out
    assert not result, out
    assert fragment in out, out


# ---- one wrong answer (or more) per exercise: the message names the mistake ---------------------------------
def test_pad_to_stride_mistakes(capsys):
    zero_pad = lambda x, s: F.pad(x, (0, -x.shape[-1] % s, 0, -x.shape[-2] % s))
    _fails_with(course.check_pad_to_stride, zero_pad, "replicate", capsys)
    always_pad = lambda x, s: F.pad(x, (0, s - x.shape[-1] % s, 0, s - x.shape[-2] % s), mode="replicate")
    _fails_with(course.check_pad_to_stride, always_pad, "wrong shape", capsys)
    centred = lambda x, s: F.pad(x, (1, -x.shape[-1] % s - 1, 0, -x.shape[-2] % s), mode="replicate") \
        if x.shape[-1] % s else solutions.pad_to_stride(x, s)
    _fails_with(course.check_pad_to_stride, centred, "bottom and right", capsys)


def test_area_down_by_mistakes(capsys):
    _fails_with(course.check_area_down_by, lambda x, f: x[..., ::f, ::f], "strided sampling", capsys)
    _fails_with(course.check_area_down_by, lambda x, f: F.avg_pool2d(x, f) * f * f, "summed", capsys)
    _fails_with(course.check_area_down_by, lambda x, f: x, "wrong shape", capsys)


def test_nearest_code_mistakes(capsys):
    def farthest(r, book):
        N, C, h, w = r.shape
        return torch.cdist(r.permute(0, 2, 3, 1).reshape(-1, C), book).argmax(1).view(N, h, w)

    _fails_with(course.check_nearest_code, farthest, "FARTHEST", capsys)
    flat = lambda r, book: solutions.nearest_code(r, book).flatten()
    _fails_with(course.check_nearest_code, flat, "wrong shape", capsys)

    def no_permute(r, book):  # positions and channels mixed up
        N, C, h, w = r.shape
        return torch.cdist(r.reshape(-1, C), book).argmin(1).view(N, h, w)

    _fails_with(course.check_nearest_code, no_permute, "not get the nearest code", capsys)
    as_int32 = lambda r, book: solutions.nearest_code(r, book).int()
    _fails_with(course.check_nearest_code, as_int32, "int64", capsys)


def test_progvc_sparse_mask_mistakes(capsys):
    _fails_with(course.check_progvc_sparse_mask, lambda T, K, W: build_mask("var", T, K, W), "should NOT", capsys)
    _fails_with(course.check_progvc_sparse_mask, lambda T, K, W: solutions.progvc_sparse_mask(T, K, W).T,
                "swapped", capsys)

    def window_off_by_one(T, K, W):
        return solutions.progvc_sparse_mask(T, K, W + 1)

    _fails_with(course.check_progvc_sparse_mask, window_off_by_one, "outside the window", capsys)
    _fails_with(course.check_progvc_sparse_mask, lambda T, K, W: solutions.progvc_sparse_mask(T, K, W).int(),
                "bool", capsys)


def test_logits_to_cdf_mistakes(capsys):
    def no_deficit(logits):
        L, V = logits.shape
        freq = torch.floor(torch.softmax(logits.double(), -1) * ((1 << 16) - V)).long() + 1
        return torch.cat([torch.zeros(L, 1, dtype=torch.long), freq.cumsum(-1)], -1)

    _fails_with(course.check_logits_to_cdf, no_deficit, "sum not 2^16", capsys)
    _fails_with(course.check_logits_to_cdf, lambda lg: package_cdf(lg)[:, 1:], "V+1", capsys)

    def zero_counts(logits):
        L, V = logits.shape
        freq = torch.floor(torch.softmax(logits.double(), -1) * (1 << 16)).long()
        freq[torch.arange(L), freq.argmax(-1)] += (1 << 16) - freq.sum(-1)
        return torch.cat([torch.zeros(L, 1, dtype=torch.long), freq.cumsum(-1)], -1)

    _fails_with(course.check_logits_to_cdf, zero_counts, ">= 1", capsys)

    def rounding(logits):
        L, V = logits.shape
        p = torch.softmax(logits.double(), -1)
        freq = torch.round(p * ((1 << 16) - V)).long() + 1
        freq[torch.arange(L), p.argmax(-1)] += (1 << 16) - freq.sum(-1)
        return torch.cat([torch.zeros(L, 1, dtype=torch.long), freq.cumsum(-1)], -1)

    _fails_with(course.check_logits_to_cdf, rounding, "floor (not round)", capsys)

    def last_tie(logits):
        L, V = logits.shape
        p = torch.softmax(logits.double(), -1)
        freq = torch.floor(p * ((1 << 16) - V)).long() + 1
        top = V - 1 - p.flip(-1).argmax(-1)   # the LAST maximal index
        freq[torch.arange(L), top] += (1 << 16) - freq.sum(-1)
        return torch.cat([torch.zeros(L, 1, dtype=torch.long), freq.cumsum(-1)], -1)

    _fails_with(course.check_logits_to_cdf, last_tie, "FIRST most likely", capsys)

    def float32_softmax(logits):  # the finding: this used to pass
        L, V = logits.shape
        p = torch.softmax(logits.float(), -1)
        freq = torch.floor(p * ((1 << 16) - V)).long() + 1
        freq[torch.arange(L), p.argmax(-1)] += (1 << 16) - freq.sum(-1)
        return torch.cat([torch.zeros(L, 1, dtype=torch.long), freq.cumsum(-1)], -1)

    _fails_with(course.check_logits_to_cdf, float32_softmax, "float32", capsys)


def test_float32_softmax_really_changes_counts():
    """The check's float32 case is not vacuous: at V = 512 some rows differ from the codec's CDF."""
    logits = torch.randn(1024, 512, generator=torch.Generator().manual_seed(44))
    f32 = exercises._floor_cdf(torch.softmax(logits.float(), -1))
    assert torch.equal(exercises._floor_cdf(torch.softmax(logits.double(), -1)), package_cdf(logits))
    assert 0 < int((f32 != package_cdf(logits)).any(1).sum()) < 1024


def test_bpp_ladder_mistakes(capsys):
    def no_header(per_scale, header, T, H, W):
        return solutions.bpp_ladder(per_scale, 0, T, H, W)

    _fails_with(course.check_bpp_ladder, no_header, "header", capsys)

    def shifted(per_scale, header, T, H, W):
        return [(header + sum(per_scale[:k])) * 8 / (T * H * W) for k in range(len(per_scale))]

    _fails_with(course.check_bpp_ladder, shifted, "off by one", capsys)

    def with_k0(per_scale, header, T, H, W):
        return [header * 8 / (T * H * W)] + solutions.bpp_ladder(per_scale, header, T, H, W)

    _fails_with(course.check_bpp_ladder, with_k0, "off by one", capsys)
    _fails_with(course.check_bpp_ladder, lambda p, h, T, H, W: [v / 8 for v in solutions.bpp_ladder(p, h, T, H, W)],
                "multiply the bytes by 8", capsys)


def test_top_k_filter_mistakes(capsys):
    def keeps_one_more(logits, k):
        return solutions.top_k_filter(logits, k + 1) if 0 < k < logits.shape[-1] - 1 else solutions.top_k_filter(logits, k)

    _fails_with(course.check_top_k_filter, keeps_one_more, "off by one", capsys)

    def smallest(logits, k):
        if k <= 0 or k >= logits.shape[-1]:
            return logits.clone()
        kth = (-logits).topk(k, -1).values[:, -1:]      # keeps the k SMALLEST logits
        return logits.masked_fill(-logits < kth, float("-inf"))

    _fails_with(course.check_top_k_filter, smallest, "SMALLEST", capsys)

    def zeros_not_inf(logits, k):
        out = solutions.top_k_filter(logits, k)
        return out.masked_fill(torch.isinf(out), 0.0)

    _fails_with(course.check_top_k_filter, zeros_not_inf, "-inf", capsys)

    def zero_means_nothing(logits, k):
        return torch.full_like(logits, float("-inf")) if k == 0 else solutions.top_k_filter(logits, k)

    _fails_with(course.check_top_k_filter, zero_means_nothing, "no filter", capsys)

    def exactly_k_indices(logits, k):  # drops logits tied with the k-th: the sampler keeps them
        if k <= 0 or k >= logits.shape[-1]:
            return logits.clone()
        keep = torch.zeros_like(logits, dtype=torch.bool).scatter_(1, logits.topk(k, -1).indices, True)
        return logits.masked_fill(~keep, float("-inf"))

    _fails_with(course.check_top_k_filter, exactly_k_indices, "ties", capsys)


def test_top_k_solution_matches_the_sampler_on_ties():
    from progvc_lab.stages.sampler import DetailSampler

    logits = torch.tensor([[2.0, 1.0, 1.0, 0.0, 1.0, -1.0]])
    kth = logits.topk(2, dim=-1).values[:, -1:]
    sampler_keeps = ~(logits < kth)          # DetailSampler.choose masks logits < the k-th value
    assert torch.equal(torch.isfinite(solutions.top_k_filter(logits, 2)), sampler_keeps)
    assert int(sampler_keeps.sum()) == 4 and DetailSampler is not None


def test_unigram_bits_mistakes(capsys):
    nats = lambda tok, V: solutions.unigram_bits(tok, V) * math.log(2)
    _fails_with(course.check_unigram_bits, nats, "nats", capsys)
    per_token = lambda tok, V: solutions.unigram_bits(tok, V) / tok.numel()
    _fails_with(course.check_unigram_bits, per_token, "per TOKEN", capsys)

    def with_zero_counts(tok, V):
        c = torch.bincount(tok.flatten(), minlength=V).double()
        return float(-(c * torch.log2(c / c.sum())).sum())

    _fails_with(course.check_unigram_bits, with_zero_counts, "NaN", capsys)


def test_mean_psnr_mistakes(capsys):
    def global_mse(a, b):
        return float(10 * torch.log10(1 / ((a - b) ** 2).mean()))

    _fails_with(course.check_mean_psnr, global_mse, "mean MSE", capsys)
    _fails_with(course.check_mean_psnr, lambda a, b: solutions.mean_psnr(a, b) + 20 * math.log10(255), "255", capsys)
    _fails_with(course.check_mean_psnr, lambda a, b: solutions.mean_psnr(a, b) * 2, "factor 10 vs 20", capsys)


def test_rate_saving_mistakes(capsys):
    f = solutions.rate_saving_at_quality
    _fails_with(course.check_rate_saving_at_quality, lambda *a: -f(*a), "sign", capsys)
    _fails_with(course.check_rate_saving_at_quality, lambda *a: f(*a) / 100, "percent", capsys)

    def linear(ab, ap, tb, tp, target):
        import numpy as np

        at = lambda b, p: np.interp(target, sorted(p), [x for _, x in sorted(zip(p, b))])
        return (at(tb, tp) / at(ab, ap) - 1) * 100

    _fails_with(course.check_rate_saving_at_quality, linear, "log(bpp)", capsys)


def test_copy_mixture_mistakes(capsys):
    def no_shrink(logits, prev, gate):
        p = torch.softmax(logits.double(), -1)
        return gate.double()[:, None] * F.one_hot(prev, p.shape[1]).double() + p

    def swapped(logits, prev, gate):
        return solutions.copy_mixture(logits, prev, 1 - gate.double())

    def on_logits(logits, prev, gate):
        g = gate.double()[:, None]
        return g * F.one_hot(prev, logits.shape[1]).double() + (1 - g) * logits.double()

    _fails_with(course.check_copy_mixture, no_shrink, "(1 - g)", capsys)
    _fails_with(course.check_copy_mixture, swapped, "swapped", capsys)
    _fails_with(course.check_copy_mixture, on_logits, "LOGITS", capsys)
    _fails_with(course.check_copy_mixture, lambda l, p, g: solutions.copy_mixture(l, p, g).float(), "float64", capsys)
    # the codec's integer step on the solution's probabilities is the codec's copy-aware CDF
    logits, prev, gate = torch.randn(4, 32), torch.tensor([1, 5, 9, 31]), torch.full((4,), 0.7, dtype=torch.float64)
    p = solutions.copy_mixture(logits, prev, gate)
    freq = torch.floor(p * (2 ** 16 - 32)).long() + 1
    freq[torch.arange(4), p.argmax(1)] += 2 ** 16 - freq.sum(1)
    want = package_cdf(logits, copy_symbols=prev, gate=gate)
    assert torch.equal(torch.cat([torch.zeros(4, 1, dtype=torch.long), freq.cumsum(1)], 1), want)


def test_rdo_choice_mistakes(capsys):
    f = solutions.rdo_choice
    _fails_with(course.check_rdo_choice, lambda d, b, p, lam, a, n: d.argmin(1), "nearest code", capsys)
    _fails_with(course.check_rdo_choice, lambda d, b, p, lam, a, n: (a * d + lam * b).argmin(1), "candidates",
                capsys)
    _fails_with(course.check_rdo_choice, lambda d, b, p, lam, a, n: f(d, b, None, lam, a, n), "t-1's token",
                capsys)
    _fails_with(course.check_rdo_choice, lambda d, b, p, lam, a, n: f(d, b, p, lam, 1.0, n), "area", capsys)
    _fails_with(course.check_rdo_choice, lambda d, b, p, lam, a, n: f(lam * a * d, b, p, 1.0, 1.0, n), "BITS",
                capsys)
    _fails_with(course.check_rdo_choice, lambda d, b, p, lam, a, n: f(d, b, p, lam, a, n).int(), "int64", capsys)


@torch.no_grad()  # as the encoder runs it
def test_rdo_choice_solution_is_the_codecs_choice():
    """The exercise's reference is what the encoder does: _TokenChooser.choose on the same block."""
    from progvc_lab.codec import CodecConfig, _TokenChooser
    from progvc_lab.stages import MultiScaleResidualQuantizer
    from progvc_lab.stages.entropy import logits_to_cdf

    torch.manual_seed(0)
    q = MultiScaleResidualQuantizer(codebook_size=32)
    f = torch.randn(2, q.latent_dim, 6, 8)
    cfg = CodecConfig(rdo_lambda=0.3, rdo_candidates=4)
    known = [[None, None] for _ in q.schedule((6, 8))]
    chooser = _TokenChooser(q, f, cfg, known)
    s = 0
    chooser._start_scale(s)
    L = chooser.dist_NLV.shape[1]
    logits = torch.randn(L, 32)
    prev = torch.randint(0, 32, (L,))
    cdf = logits_to_cdf(logits, copy_symbols=prev, gate=0.8)
    sym, _ = chooser.choose(1, s, cdf, prev)
    bits = 16 - (cdf[:, 1:] - cdf[:, :-1]).double().log2()
    assert torch.equal(sym, solutions.rdo_choice(chooser.dist_NLV[1], bits, prev, 0.3, chooser.area, 4))


# ---- the helpers the notebooks use --------------------------------------------------------------------------
def test_sample_video_is_small_qcif():
    video, fps = course.sample_video(frames=3)
    assert video.shape == (3, 3, 144, 176) and video.dtype == torch.float32
    assert float(fps) > 0


def test_show_solution_prints_source(capsys):
    course.show_solution("top_k_filter")
    assert "def top_k_filter" in capsys.readouterr().out
    with pytest.raises(KeyError, match="no exercise"):
        course.show_solution("nope")


def test_block_bytes_add_up_to_the_chunks():
    from progvc_lab import bitstream
    from progvc_lab.codec import Codec
    from progvc_lab.stages import ContextModel, ConvTokenizer, MultiScaleResidualQuantizer

    torch.manual_seed(0)
    codec = Codec(ConvTokenizer(width=8, max_width=16, groups=4), MultiScaleResidualQuantizer(codebook_size=32),
                  ContextModel(codebook_size=32, width=16, depth=1, heads=2), gop=2)
    with pytest.raises(ValueError, match="coder='torchac'"):  # constriction: one string per chunk
        course.block_bytes(codec.encode(torch.rand(3, 3, 24, 40)))
    data = codec.encode(torch.rand(3, 3, 24, 40), coder="torchac")
    per_block = course.block_bytes(data)
    assert per_block.shape == (3, 6)
    info = bitstream.describe(data)
    # a chunk is the strings plus varint lengths of all but the last string (one byte each here)
    gop_frames = [2, 1]
    assert per_block.sum() == sum(info["bytes_per_scale"]) - 6 * sum(n - 1 for n in gop_frames)


def test_coder_call_overhead_is_a_few_bits():
    rows = course.coder_call_overhead(lengths=(1, 64), repeats=5)
    assert [r["symbols"] for r in rows] == [1, 64]
    assert all(0 <= r["overhead_bits"] < 40 for r in rows)


# ---- the figures the course fixed: meaningful token colours, file-based savings, log rate axis ---------------
def test_code_colours_follow_the_code_vectors_not_the_ids():
    from progvc_lab.viz.figures import code_colours

    gen = torch.Generator().manual_seed(0)
    book = torch.randn(64, 16, generator=gen)
    book[1] = book[0] + 1e-3                       # two nearly equal codes
    rgb = code_colours(book)
    assert rgb.shape == (64, 3) and rgb.min() >= 0 and rgb.max() <= 1
    d_same = abs(rgb[0] - rgb[1]).max()
    d_typical = float(torch.as_tensor(abs(rgb[None] - rgb[:, None])).amax(-1).median())
    assert d_same < 0.05 * d_typical
    perm = torch.randperm(64, generator=gen)         # relabelling the ids permutes the colours with them
    assert abs(code_colours(book[perm]) - rgb[perm.numpy()]).max() < 1e-9


def test_bits_per_scale_title_counts_the_file():
    from progvc_lab.viz.figures import plot_bits_per_scale

    fig = plot_bits_per_scale([10, 20, 300], k=1, file_bytes=(60, 400))
    assert "85.0% smaller" in fig.axes[0].get_title()
    assert "of the chunk bits" in plot_bits_per_scale([10, 20, 300], k=1).axes[0].get_title()


def test_rd_curve_has_a_log_rate_axis():
    from progvc_lab.viz.figures import plot_rd_curve

    assert plot_rd_curve([(0.002, 11.0), (0.01, 16.0), (0.1, 21.0)]).axes[0].get_xscale() == "log"


# ---- 10 arithmetic coding -------------------------------------------------------------------------------------
def test_a_forgotten_return_is_named(capsys):
    def forgot(low, high, lo, hi, total):
        span = high - low + 1
        low, high = low + span * lo // total, low + span * hi // total - 1   # ... and no return

    _fails_with(course.check_interval_update, forgot, "forget the `return`", capsys)
    _fails_with(course.check_top_k_filter, lambda logits, k: None, "forget the `return`", capsys)


def test_interval_update_mistakes(capsys):
    def no_minus_one(low, high, lo, hi, total):
        span = high - low + 1
        return low + span * lo // total, low + span * hi // total

    def span_without_plus_one(low, high, lo, hi, total):
        span = high - low
        return low + span * lo // total, low + span * hi // total - 1

    def rounding(low, high, lo, hi, total):
        span = high - low + 1
        return low + round(span * lo / total), low + round(span * hi / total) - 1

    def swapped(low, high, lo, hi, total):
        return solutions.interval_update(low, high, lo, hi, total)[::-1]

    _fails_with(course.check_interval_update, no_minus_one, "INCLUSIVE", capsys)
    _fails_with(course.check_interval_update, span_without_plus_one, "high - low + 1", capsys)
    _fails_with(course.check_interval_update, rounding, "round()", capsys)
    _fails_with(course.check_interval_update, swapped, "swapped", capsys)
    _fails_with(course.check_interval_update, lambda *a: list(solutions.interval_update(*a)), "pair", capsys)


def test_decode_symbol_mistakes(capsys):
    def target_off_by_one(value, low, high, row, total):
        target = (value - low) * total // (high - low + 1)
        return max(v for v in range(len(row) - 1) if row[v] <= target)

    def first_above(value, low, high, row, total):   # the symbol AFTER the right one
        target = ((value - low + 1) * total - 1) // (high - low + 1)
        return min(v for v in range(len(row)) if row[v] > target)

    def forgets_low(value, low, high, row, total):
        target = ((value + 1) * total - 1) // (high - low + 1)
        return max(v for v in range(len(row) - 1) if row[v] <= min(target, total - 1))

    def first_equal_count(value, low, high, row, total):   # ignores empty symbols: picks a 0-count id
        target = ((value - low + 1) * total - 1) // (high - low + 1)
        return min(v for v in range(len(row) - 1) if row[v] <= target and row[v + 1] >= target)

    _fails_with(course.check_decode_symbol, target_off_by_one, "LARGEST", capsys)
    for wrong in (first_above, forgets_low, first_equal_count):
        _fails_with(course.check_decode_symbol, wrong, "decode_symbol: ", capsys)
    _fails_with(course.check_decode_symbol, lambda *a: float(solutions.decode_symbol(*a)), "one int", capsys)


def test_our_coder_writes_torchacs_bytes_and_keeps_its_bound():
    from progvc_lab.course import arithmetic as A
    from progvc_lab.stages.entropy import get_coder, logits_to_cdf, model_bits

    gen = torch.Generator().manual_seed(5)
    ours, torchac = A.ArithmeticCoder(), get_coder("torchac")
    for L, V, scale in [(1, 512, 3.0), (3, 4, 0.1), (250, 512, 3.0), (500, 32, 6.0)]:
        logits = torch.randn(L, V, generator=gen) * scale
        cdf = logits_to_cdf(logits)
        sym = torch.multinomial(torch.softmax(logits.double(), -1), 1, generator=gen).squeeze(1)
        data = ours.encode(cdf, sym)
        assert data == torchac.encode(cdf, sym)
        assert torch.equal(ours.decode(cdf, data), sym) and torch.equal(torchac.decode(cdf, data), sym)
        assert 8 * len(data) <= A.bound_bits(model_bits(cdf, sym), L) + 7
        one = A.StreamingCoder(ours).encode_blocks([(cdf[i:i + 1], sym[i:i + 1]) for i in range(L)])
        assert one == data          # the blocks of a chunk as one string = one call


def test_one_moved_count_desynchronises_and_the_crc_catches_it():
    from progvc_lab import bitstream
    from progvc_lab.codec import Codec
    from progvc_lab.course import arithmetic as A
    from progvc_lab.stages import ContextModel, ConvTokenizer, MultiScaleResidualQuantizer
    from progvc_lab.stages.entropy import logits_to_cdf

    gen = torch.Generator().manual_seed(3)
    logits = torch.randn(200, 512, generator=gen) * 3
    cdf = logits_to_cdf(logits)
    sym = torch.multinomial(torch.softmax(logits.double(), -1), 1, generator=gen).squeeze(1)
    coder = A.ArithmeticCoder()
    data = coder.encode(cdf, sym)
    bad = coder.decode(A.move_one_count(cdf, 50, int(sym[50])), data) != sym
    assert not bad[:50].any() and int(bad.sum()) > 20           # right up to the change, garbage after
    moved = A.move_one_count(cdf, 0)
    assert int(moved[0, -1]) == 1 << 16 and int((moved[:, 1:] - moved[:, :-1]).min()) >= 1

    torch.manual_seed(0)
    codec = Codec(ConvTokenizer(width=8, max_width=16, groups=4), MultiScaleResidualQuantizer(codebook_size=32),
                  ContextModel(codebook_size=32, width=16, depth=1, heads=2), gop=2)
    video = torch.rand(2, 3, 48, 64)
    stream = codec.encode(video, coder="torchac")      # one string per block
    tokens, _ = codec.decode_tokens(stream)
    A.register()
    ours_stream = codec.encode(video, coder="course_ac")  # the codec codes with our coder, and decodes it
    assert bitstream.read_stream(ours_stream).chunks == bitstream.read_stream(stream).chunks
    assert torch.equal(codec.decode(ours_stream), codec.decode(stream))
    with pytest.raises(ValueError, match="one string per block"):
        A.decode_tokens(codec, codec.encode(video), coder)
    mine = A.decode_tokens(codec, stream, coder)
    assert all(torch.equal(a, b) for a, b in zip(mine, tokens))
    blocks = 2 * len(tokens)
    caught = 0
    for call in range(blocks - 4, blocks):        # the finest scale's blocks: long enough to desynchronise
        with coder.tampered(call=call, row=0):
            try:
                A.decode_tokens(codec, stream, coder)
            except bitstream.BitstreamError as e:
                assert "CRC" in str(e)
                caught += 1
    assert caught >= 1


def test_written_questions_have_answers(capsys):
    for name in solutions.ANSWERS:
        course.show_answer(name)
        assert len(capsys.readouterr().out) > 100
    with pytest.raises(KeyError, match="no written question"):
        course.show_answer("nope")


# ---- 11 unsafe masks -----------------------------------------------------------------------------------------
def test_is_truncation_safe_mistakes(capsys):
    def s_of(B, K):
        return torch.arange(B) % K

    def transposed(m, K):              # flags reading a COARSER scale instead
        s = s_of(m.shape[0], K)
        return not bool((m & (s[None, :] < s[:, None])).any())

    def same_frame_only(m, K):         # forgets the previous frames
        s, t = s_of(m.shape[0], K), torch.arange(m.shape[0]) // K
        return not bool((m & (s[None, :] > s[:, None]) & (t[None, :] == t[:, None])).any())

    def strict(m, K):                  # counts reading the same scale as unsafe
        s = s_of(m.shape[0], K)
        return not bool((m & (s[None, :] >= s[:, None])).any())

    def scale_major_ids(m, K):         # numbers blocks s * T + t
        T = m.shape[0] // K
        s = torch.arange(m.shape[0]) // T
        return not bool((m & (s[None, :] > s[:, None])).any())

    def as_tensor(m, K):
        s = s_of(m.shape[0], K)
        return m & (s[None, :] > s[:, None])

    _fails_with(course.check_is_truncation_safe, transposed, "COARSER scale is fine", capsys)
    _fails_with(course.check_is_truncation_safe, same_frame_only, "in another frame", capsys)
    _fails_with(course.check_is_truncation_safe, strict, "SAME or a COARSER", capsys)
    _fails_with(course.check_is_truncation_safe, scale_major_ids, "frame-major", capsys)
    _fails_with(course.check_is_truncation_safe, as_tensor, "ONE bool", capsys)


def test_safe_mask_design_mistakes(capsys):
    _fails_with(course.check_safe_mask_design, lambda T, K, W: build_mask("var", T, K, W), "not truncation safe", capsys)
    _fails_with(course.check_safe_mask_design, lambda T, K, W: build_mask("infinitystar", T, K, W), "not truncation safe",
                capsys)
    intra = lambda T, K, W: solutions.safe_mask_design(T, K, W) & (
        torch.arange(T * K)[:, None] // K == torch.arange(T * K)[None, :] // K)
    _fails_with(course.check_safe_mask_design, intra, "temporal context", capsys)
    no_diag = lambda T, K, W: solutions.safe_mask_design(T, K, W) & ~torch.eye(T * K, dtype=torch.bool)
    _fails_with(course.check_safe_mask_design, no_diag, "itself", capsys)

    def future(T, K, W):
        m = solutions.safe_mask_design(T, K, W).clone()
        if T > 1:
            m[0, K] = True            # frame 0 reads frame 1 (same scale 0: safe, but not decodable)
        return m

    _fails_with(course.check_safe_mask_design, future, "LATER frame", capsys)
    _fails_with(course.check_safe_mask_design, lambda T, K, W: solutions.safe_mask_design(T, K, W).int(), "bool", capsys)
    # progvc_sparse itself is a valid design too
    assert course.check_safe_mask_design(lambda T, K, W: build_mask("progvc_sparse", T, K, W))


def test_solution_agrees_with_the_package_on_random_masks():
    from progvc_lab.stages.masks import is_truncation_safe

    gen = torch.Generator().manual_seed(0)
    for _ in range(50):
        K = int(torch.randint(1, 5, (1,), generator=gen))
        m = torch.rand(3 * K, 3 * K, generator=gen) < 0.2
        assert solutions.is_truncation_safe(m, K) == is_truncation_safe(m, K)


def test_var_frame_major_cut_diverges_and_progvc_sparse_does_not():
    from progvc_lab.codec import Codec
    from progvc_lab.course import unsafe
    from progvc_lab.stages import ContextModel, ConvTokenizer, MultiScaleResidualQuantizer

    torch.manual_seed(0)
    codec = Codec(ConvTokenizer(width=8, max_width=16, groups=4), MultiScaleResidualQuantizer(codebook_size=32),
                  ContextModel(codebook_size=32, width=16, depth=1, heads=2), gop=3)
    video = torch.rand(3, 3, 48, 64)
    safe = unsafe.frame_major_cut(codec, video, "progvc_sparse", k=2)
    assert safe["first_wrong"] is None and bool((safe["agree_T"] == 1).all()) and not safe["violations"]
    var = unsafe.frame_major_cut(codec, video, "var", k=2)
    assert var["violations"] and var["first_wrong"] is not None and var["first_wrong"][0] >= 1
    assert float(var["agree_T"][0]) == 1.0                       # frame 0 reads only its own coarser scales
    assert ((1, 0), (0, 2)) in var["violations"]


def test_a_course_trained_context_model_makes_a_working_codec():
    from progvc_lab import bitstream
    from progvc_lab.codec import Codec
    from progvc_lab.course.training import train_context_model
    from progvc_lab.stages import ContextModel, ConvTokenizer, MultiScaleResidualQuantizer

    torch.manual_seed(0)
    codec = Codec(ConvTokenizer(width=8, max_width=16, groups=4), MultiScaleResidualQuantizer(codebook_size=32),
                  ContextModel(codebook_size=32, width=16, depth=1, heads=2), gop=3)
    video = torch.rand(4, 3, 32, 48)
    seen = []
    cm, log = train_context_model(codec, [video], steps=6, width=16, depth=1, heads=2, log_every=3,
                                  val_videos=[video[:3]], on_log=seen.append)
    assert [e["step"] for e in log] == [3, 6] and seen == log
    assert log[-1]["train_bits"] < 5.0 + 1e-9 + math.log2(32) and len(log[-1]["val_bits_per_scale"]) == 6
    codec2 = Codec(codec.tokenizer, codec.quantizer, cm, gop=3)
    data = codec2.encode(video[:3])
    assert codec2.decode(bitstream.truncate(data, 2)).shape == (3, 3, 32, 48)


# ---- 12 build a stage ------------------------------------------------------------------------------------------
def test_expected_code_mistakes(capsys):
    no_transpose = lambda p, book, size: (p.to(book.dtype) @ book).reshape(book.shape[1], *size)
    argmax = lambda p, book, size: book[p.argmax(1)].T.reshape(book.shape[1], *size)
    codebook_mean = lambda p, book, size: book.mean(0)[:, None, None].expand(book.shape[1], *size).clone()
    channels_last = lambda p, book, size: (p.to(book.dtype) @ book).reshape(*size, book.shape[1])
    _fails_with(course.check_expected_code, no_transpose, "positions and channels", capsys)
    _fails_with(course.check_expected_code, argmax, "argmax", capsys)
    _fails_with(course.check_expected_code, codebook_mean, "plain mean", capsys)
    _fails_with(course.check_expected_code, channels_last, "wrong shape", capsys)


def test_residual_tokenize_mistakes(capsys):
    from progvc_lab.stages.quantizer import area_down, upsample

    def no_subtraction(q, f):
        return [q.nearest_code(area_down(f, size)) for size in q.schedule(tuple(f.shape[-2:]))]

    def without_phi(q, f):
        hw, rest, out = tuple(f.shape[-2:]), f, []
        for s, size in enumerate(q.schedule(hw)):
            idx = q.nearest_code(area_down(rest, size))
            rest = rest - upsample(q.codebook(idx).permute(0, 3, 1, 2), hw)
            out.append(idx)
        return out

    def full_size(q, f):
        return [q.nearest_code(f) for _ in range(q.num_scales)]

    _fails_with(course.check_residual_tokenize, no_subtraction, "subtract what each scale adds", capsys)
    _fails_with(course.check_residual_tokenize, without_phi, "phi_s", capsys)
    _fails_with(course.check_residual_tokenize, full_size, "area-down", capsys)
    _fails_with(course.check_residual_tokenize, lambda q, f: solutions.residual_tokenize(q, f)[:-1], "list of", capsys)


def test_residual_tokens_to_latent_mistakes(capsys):
    f = solutions.residual_tokens_to_latent
    all_scales = lambda q, tok, hw, upto: f(q, tok, hw, len(tok))
    one_more = lambda q, tok, hw, upto: f(q, tok, hw, min(upto + 1, len(tok)))

    def reversed_order(q, tok, hw, upto):       # the same sum, fine to coarse: not bit-identical
        out = torch.zeros(tok[0].shape[0], q.latent_dim, *hw)
        for s in reversed(range(upto)):
            out = out + q.scale_contribution(tok[s], s, hw)
        return out

    def in_float64(q, tok, hw, upto):
        out = torch.zeros(tok[0].shape[0], q.latent_dim, *hw, dtype=torch.float64)
        for s in range(upto):
            out = out + q.scale_contribution(tok[s], s, hw).double()
        return out.float()

    _fails_with(course.check_residual_tokens_to_latent, all_scales, "ALL scales", capsys)
    _fails_with(course.check_residual_tokens_to_latent, one_more, "off by one", capsys)
    _fails_with(course.check_residual_tokens_to_latent, reversed_order, "bit-identical", capsys)
    _fails_with(course.check_residual_tokens_to_latent, in_float64, "bit-identical", capsys)


def test_the_built_stage_codes_like_the_package(capsys):
    from progvc_lab.codec import Codec
    from progvc_lab.course.build_stage import StudentQuantizer, fill_quality
    from progvc_lab.stages import ContextModel, ConvTokenizer, MultiScaleResidualQuantizer

    torch.manual_seed(0)
    codec = Codec(ConvTokenizer(width=8, max_width=16, groups=4), MultiScaleResidualQuantizer(codebook_size=32),
                  ContextModel(codebook_size=32, width=16, depth=1, heads=2), gop=2)
    video = torch.rand(2, 3, 32, 48)
    assert course.check_stage_in_codec(codec, video, 25, solutions.residual_tokenize,
                                       solutions.residual_tokens_to_latent)

    def sloppy(q, tok, hw, upto):
        out = torch.zeros(tok[0].shape[0], q.latent_dim, *hw)
        for s in reversed(range(upto)):
            out = out + q.scale_contribution(tok[s], s, hw)
        return out

    capsys.readouterr()
    result = course.check_stage_in_codec(codec, video, 25, solutions.residual_tokenize, sloppy)
    out = capsys.readouterr().out
    assert not result and ("bit-identical" in out or "decodes" in out or "differ" in out), out

    def forgot(q, f):
        solutions.residual_tokenize(q, f)

    _fails_with(lambda fn: course.check_stage_in_codec(codec, video, 25, fn, solutions.residual_tokens_to_latent),
                forgot, "forget the `return`", capsys)
    # the student's expected code, plugged in, is the package's mean fill
    q = StudentQuantizer(codec.quantizer, expected_code=solutions.expected_code)
    mine = Codec(codec.tokenizer, q, codec.context_model, gop=2)
    rows_mine = fill_quality(mine, video, 25, ks=(2,))
    rows_ref = fill_quality(codec, video, 25, ks=(2,))
    assert [r["sampler"] for r in rows_mine] == ["zero", "mean"]
    assert all(math.isclose(a["psnr"], b["psnr"], rel_tol=1e-6) for a, b in zip(rows_mine, rows_ref))


# ---- 13 train from scratch ------------------------------------------------------------------------------------
def test_codebook_perplexity_mistakes(capsys):
    def entropy(c):
        p = c.double() / c.sum()
        p = p[p > 0]
        return float(-(p * p.log()).sum())

    def with_zeros(c):
        p = c.double() / c.sum()
        return float(torch.exp(-(p * p.log()).sum()))

    _fails_with(course.check_codebook_perplexity, entropy, "that is the entropy", capsys)
    _fails_with(course.check_codebook_perplexity, with_zeros, "NaN", capsys)
    _fails_with(course.check_codebook_perplexity, lambda c: float((c > 0).sum()), "used at all", capsys)
    _fails_with(course.check_codebook_perplexity, lambda c: math.exp(entropy(c) / math.log(2)), "mixes bases", capsys)


def test_bits_per_token_mistakes(capsys):
    f = solutions.bits_per_token
    nats = lambda lg, t: float(F.cross_entropy(lg.transpose(1, 2), t))
    total = lambda lg, t: f(lg, t) * t.numel()
    wrong_axis = lambda lg, t: float(-torch.log_softmax(lg, 1).gather(-1, t.unsqueeze(-1)).mean() / math.log(2))
    _fails_with(course.check_bits_per_token, nats, "nats", capsys)
    _fails_with(course.check_bits_per_token, total, "total", capsys)
    _fails_with(course.check_bits_per_token, lambda lg, t: -f(lg, t), "sign", capsys)
    _fails_with(course.check_bits_per_token, wrong_axis, "LAST axis", capsys)
    _fails_with(course.check_bits_per_token, lambda lg, t: torch.tensor([f(lg, t)] * 2), "one number", capsys)


def test_stage1_loop_trains_and_makes_a_codec():
    from progvc_lab.codec import Codec
    from progvc_lab.course.training import LivePlot, train_context_model, train_stage1

    torch.manual_seed(0)
    video = torch.rand(4, 3, 48, 64)
    plot = LivePlot({"psnr": ["train_psnr"]})
    tok, q, log = train_stage1([video], steps=4, crop=32, batch_size=2, width=8, max_width=16, codebook_size=16,
                               num_scales=3, log_every=2, val_video=video[:2], on_log=plot)
    assert [e["step"] for e in log] == [2, 4] and len(log[-1]["val_psnr"]) == 3 and plot.figure is not None
    codec = Codec(tok, q, train_context_model(Codec(tok, q, __import__("progvc_lab").stages.ContextModel(
        codebook_size=16, latent_dim=q.latent_dim, num_scales=3, width=16, depth=1, heads=2)), [video], steps=2,
        width=16, depth=1, heads=2)[0], gop=2)
    assert codec.decode(codec.encode(video[:2])).shape == (2, 3, 48, 64)


# ---- 14 against classical codecs ---------------------------------------------------------------------------------
def test_bd_rate_cubic_mistakes(capsys):
    import numpy as np

    f = solutions.bd_rate_cubic
    _fails_with(course.check_bd_rate_cubic, lambda *a: f(*a) / 100, "fraction", capsys)
    _fails_with(course.check_bd_rate_cubic, lambda ar, aq, tr, tq: f(tr, tq, ar, aq), "swapped", capsys)
    _fails_with(course.check_bd_rate_cubic, exercises._bd_linear_rate, "log(rate)", capsys)
    _fails_with(course.check_bd_rate_cubic, exercises._bd_full_range, "BOTH curves", capsys)
    _fails_with(course.check_bd_rate_cubic, lambda *a: np.array([f(*a)] * 2), "one number", capsys)


def test_bd_rate_cubic_is_close_to_the_packages_pchip_report():
    from progvc_lab.metrics import bd_rate_report

    ar, aq = [0.1, 0.2, 0.4, 0.8], [30.0, 33.0, 35.5, 37.5]
    tr, tq = [0.08, 0.16, 0.32, 0.64], [30.2, 33.1, 35.6, 37.7]
    report = bd_rate_report(ar, aq, tr, tq)
    assert abs(solutions.bd_rate_cubic(ar, aq, tr, tq) - report["bd_rate"]) < 1.5


def test_format_rows_marks_unmatched_baselines():
    from progvc_lab.course import classical

    rows = [{"k": 3, "codec": "ours", "bytes": 115, "crf": None, "matched": True, "psnr-y": 16.2,
             "ms-ssim-rgb": 0.3, "st-lpips": None},
            {"k": 3, "codec": "x264", "bytes": 454, "crf": 51, "matched": False, "psnr-y": 22.0,
             "ms-ssim-rgb": None, "st-lpips": 0.46}]
    text = classical.format_rows(rows)
    assert "cannot get this small" in text and "n/a" in text and text.count("\n") == 2


# ---- capstone checker ------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_capstone_checker_reproduces_a_submission_and_catches_a_wrong_number(tmp_path, capsys):
    import json

    from progvc_lab.codec import Codec
    from progvc_lab.course import capstone
    from progvc_lab.stages import ContextModel, ConvTokenizer, MultiScaleResidualQuantizer
    from progvc_lab.stages import masks

    masks.register_mask("capstone_test_mask")(solutions.safe_mask_design)
    torch.manual_seed(0)
    codec = Codec(ConvTokenizer(width=8, max_width=16, groups=4), MultiScaleResidualQuantizer(codebook_size=32),
                  ContextModel(codebook_size=32, width=16, depth=1, heads=2, mask="capstone_test_mask"))
    code = ("from progvc_lab.stages import masks\nfrom progvc_lab.course import solutions\n"
            "masks.register_mask('capstone_test_mask')(solutions.safe_mask_design)\n")
    folder = capstone.make_submission(codec, tmp_path / "sub", "test", "a safe mask", frames=2, variant_code=code)
    report = capstone.check_submission(folder)
    assert report, "\n".join(report.lines)
    doc = json.loads((folder / "submission.json").read_text())
    doc["rd"][2]["psnr"] += 0.5                      # a number that the files do not reproduce
    (folder / "submission.json").write_text(json.dumps(doc))
    report = capstone.check_submission(folder, quiet=True)
    assert not report and any(line.startswith("FAIL  k=3") for line in report.lines)
    (folder / "stream.pgvc").write_bytes(b"PGVC")    # a stream the model did not make
    assert not capstone.check_submission(folder, quiet=True)
    assert capstone.main([]) == 2
