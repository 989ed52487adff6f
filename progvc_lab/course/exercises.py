"""Check functions for the notebook exercises.

Every exercise cell in ``notebooks/0N_*.ipynb`` asks for one small function; the next cell calls
``check_<name>(your_function)``. A check runs the function on several cases and prints ONE clear
line: ``correct!``, ``not implemented yet``, or what is wrong (wrong shape, off by one, a CDF that does
not sum to 2^16, ...). It never raises, so a notebook with unsolved exercises still runs top to
bottom, and it returns a :class:`CheckResult` (truthy when passed) for tests and scripts.

Solutions: ``progvc_lab.course.solutions`` (``show_solution("name")`` prints one).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from ..stages.entropy import logits_to_cdf as _reference_cdf
from ..stages.masks import build_mask, is_truncation_safe
from . import solutions


@dataclass
class CheckResult:
    name: str
    passed: bool
    message: str

    def __bool__(self) -> bool:
        return self.passed

    def _ipython_display_(self):
        """The check already printed its message; show nothing more in a notebook."""


class Wrong(Exception):
    """Raised inside a check with the message the student sees."""


def _no_none(name: str, fn: Callable) -> Callable:
    """``fn``, but a ``None`` result (the body ran and fell off the end) becomes a clear message."""
    def wrapped(*args, **kwargs):
        out = fn(*args, **kwargs)
        if out is None:
            raise Wrong(f"your function returned None: did you forget the `return` at the end of {name}?")
        return out
    return wrapped


def _run(name: str, fn: Callable, body: Callable[[Callable], None]) -> CheckResult:
    if not callable(fn):
        result = CheckResult(name, False, f"{name}: expected a function, got {type(fn).__name__}")
    else:
        try:
            body(_no_none(name, fn))
            result = CheckResult(name, True, f"{name}: correct!")
        except NotImplementedError:
            result = CheckResult(name, False, f"{name}: not implemented yet (replace "
                                              "`raise NotImplementedError` with your code and run the cell again)")
        except Wrong as e:
            result = CheckResult(name, False, f"{name}: not quite. {e}")
        except Exception as e:  # the student's code crashed: say where, do not crash the notebook
            result = CheckResult(name, False, f"{name}: your function raised {type(e).__name__}: {e}")
    print(result.message)
    return result


def _tensor(x, what: str) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise Wrong(f"{what} should be a torch.Tensor, got {type(x).__name__}")
    return x


def _shape(x: torch.Tensor, shape, what: str):
    if tuple(x.shape) != tuple(shape):
        raise Wrong(f"wrong shape: {what} should be {tuple(shape)}, got {tuple(x.shape)}")


# ---- 01 ---------------------------------------------------------------------------------------------------
def check_pad_to_stride(fn) -> CheckResult:
    """``pad_to_stride(x_NCHW, stride)`` pads bottom/right by replication to multiples of ``stride``."""
    def body(fn):
        gen = torch.Generator().manual_seed(1)
        for (H, W), stride in [((144, 176), 8), ((17, 30), 8), ((33, 64), 16), ((5, 7), 4), ((16, 16), 16)]:
            x = torch.rand(2, 3, H, W, generator=gen)
            y = _tensor(fn(x.clone(), stride), "the padded frames")
            want = solutions.pad_to_stride(x, stride)
            if y.shape[-2:] != want.shape[-2:]:
                over = [a - b for a, b in zip(y.shape[-2:], want.shape[-2:])]
                hint = (" (a full extra stride where none was needed? -H % stride is 0 for a multiple)"
                        if any(o == stride for o in over) else "")
                raise Wrong(f"wrong shape for a {W}x{H} frame and stride {stride}: expected "
                            f"{tuple(want.shape)}, got {tuple(y.shape)}{hint}")
            _shape(y, want.shape, f"the padded {W}x{H} frames")
            if not torch.equal(y[..., :H, :W], x):
                raise Wrong(f"the original {W}x{H} pixels moved or changed: pad only at the bottom and right")
            if not torch.equal(y, want):
                raise Wrong(f"the padded area of a {W}x{H} frame is not a copy of the edge pixels: use "
                            "mode='replicate' (zeros make a dark border the tokenizer has to code)")
    return _run("pad_to_stride", fn, body)


# ---- 02 ---------------------------------------------------------------------------------------------------
def check_area_down_by(fn) -> CheckResult:
    """``area_down_by(x_NChw, factor)`` averages factor x factor cells."""
    def body(fn):
        gen = torch.Generator().manual_seed(2)
        for shape, f in [((1, 1, 4, 4), 2), ((2, 3, 6, 9), 3), ((1, 16, 18, 22), 2), ((1, 2, 8, 8), 8), ((1, 2, 5, 5), 1)]:
            x = torch.randn(*shape, generator=gen)
            y = _tensor(fn(x.clone(), f), "the down-sampled map")
            want = F.avg_pool2d(x, f)
            _shape(y, want.shape, f"area_down_by of {tuple(shape)} by {f}")
            if torch.allclose(y, want, atol=1e-5):
                continue
            if torch.allclose(y, x[..., ::f, ::f]):
                raise Wrong("you picked one pixel per cell (strided sampling); area down-sampling AVERAGES "
                            "the cell, so no detail is thrown away unevenly")
            if torch.allclose(y, want * f * f, atol=1e-4):
                raise Wrong("you summed the cells: divide by factor**2 (take the mean)")
            raise Wrong(f"values differ from the cell means (max error {float((y - want).abs().max()):.3g}); "
                        "reshape to (N, C, h/f, f, w/f, f) and average over the two f axes")
    return _run("area_down_by", fn, body)


def check_nearest_code(fn) -> CheckResult:
    """``nearest_code(r_NChw, codebook_VC)`` -> (N, h, w) int64 ids of the closest codes (L2)."""
    def body(fn):
        gen = torch.Generator().manual_seed(3)
        for N, C, h, w, V in [(1, 4, 1, 1, 8), (2, 4, 3, 5, 16), (1, 16, 6, 6, 512)]:
            r = torch.randn(N, C, h, w, generator=gen)
            book = torch.randn(V, C, generator=gen)
            idx = _tensor(fn(r.clone(), book.clone()), "the token ids")
            if idx.numel() == N * h * w and tuple(idx.shape) != (N, h, w):
                raise Wrong(f"wrong shape: expected (N, h, w) = {(N, h, w)}, got {tuple(idx.shape)} "
                            "(view the ids back to the map's shape)")
            _shape(idx, (N, h, w), "the token ids")
            if idx.dtype != torch.int64:
                raise Wrong(f"token ids should be int64 (torch.long), got {idx.dtype}")
            if int(idx.min()) < 0 or int(idx.max()) >= V:
                raise Wrong(f"ids must lie in [0, {V}), got {int(idx.min())}..{int(idx.max())}")
            r_LC = r.permute(0, 2, 3, 1).reshape(-1, C)
            d_LV = torch.cdist(r_LC, book)
            chosen = d_LV.gather(1, idx.reshape(-1, 1)).squeeze(1)
            best = d_LV.min(1).values
            if torch.all(chosen <= best + 1e-4):
                continue
            if torch.equal(idx.reshape(-1), d_LV.argmax(1)):
                raise Wrong("you picked the FARTHEST code: use argmin of the distance (or argmax of -distance)")
            dots = (r_LC @ book.T).argmax(1)
            if torch.equal(idx.reshape(-1), dots):
                raise Wrong("you maximised the dot product r.e: without normalised codes that is not the "
                            "nearest code; use ||e||^2 - 2 r.e (or the full L2 distance)")
            bad = int((chosen > best + 1e-4).sum())
            raise Wrong(f"{bad} of {len(best)} positions do not get the nearest code (L2) for N={N}, C={C}, "
                        f"{h}x{w}, V={V}; flatten positions in (N, h, w) order with the channels last")
        # ties: a duplicated codebook row must give the lowest index
        book = torch.eye(4).repeat(2, 1)  # rows 0..3 and 4..7 identical
        r = torch.eye(4).T.reshape(1, 4, 2, 2)  # position p holds the unit vector e_p
        idx = fn(r, book)
        if int(idx.max()) >= 4:
            raise Wrong("on a tie (two identical codes) pick the lowest index, as argmin does")
    return _run("nearest_code", fn, body)


# ---- 03 ---------------------------------------------------------------------------------------------------
def check_progvc_sparse_mask(fn) -> CheckResult:
    """``progvc_sparse_mask(num_frames, num_scales, window)`` -> allowed (T*K, T*K) bool."""
    def body(fn):
        for T, K, W in [(1, 3, 1), (3, 3, 1), (4, 2, 2), (5, 6, 1), (3, 4, 0)]:
            got = _tensor(fn(T, K, W), "the mask")
            want = build_mask("progvc_sparse", T, K, W)
            _shape(got, want.shape, f"the mask for T={T}, K={K}")
            if got.dtype != torch.bool:
                raise Wrong(f"the mask should be a bool tensor, got {got.dtype}")
            if torch.equal(got, want):
                continue
            if torch.equal(got, want.T):
                raise Wrong("rows and columns are swapped: allowed[q, k] has the QUERY block as the row")
            q, k = [int(v) for v in torch.nonzero(got != want)[0]]
            (tq, sq), (tk, sk) = divmod(q, K), divmod(k, K)
            should = bool(want[q, k])
            why = ""
            if not should and sk > sq:
                why = " (a finer scale: that would break cutting the stream after scale s)"
            elif not should and tk < tq - W:
                why = f" (frame {tk} is outside the window of {W} previous frame(s))"
            elif not should and tk > tq:
                why = " (a future frame)"
            elif should and tk == tq and sk == sq:
                why = " (every block sees itself)"
            elif should and tk < tq:
                why = " (same scale, inside the window)"
            elif not should and tk < tq and sk != sq:
                why = " (earlier frames are read at the same scale only)"
            raise Wrong(f"T={T}, K={K}, window={W}: block (t={tq}, s={sq}) should {'' if should else 'NOT '}"
                        f"attend to block (t={tk}, s={sk}){why}; block ids are t * K + s")
        if not is_truncation_safe(fn(3, 3, 1), 3):
            raise Wrong("the mask is not truncation safe")
    return _run("progvc_sparse_mask", fn, body)


# ---- 04 ---------------------------------------------------------------------------------------------------
def _floor_cdf(p_LV: torch.Tensor) -> torch.Tensor:
    """The codec's integer step on given probabilities (float32 or float64): floor, +1, deficit on argmax."""
    L, V = p_LV.shape
    freq_LV = torch.floor(p_LV * ((1 << 16) - V)).long() + 1
    freq_LV[torch.arange(L), p_LV.argmax(-1)] += (1 << 16) - freq_LV.sum(-1)
    return torch.cat([torch.zeros(L, 1, dtype=torch.long), freq_LV.cumsum(-1)], dim=-1)


def check_logits_to_cdf(fn) -> CheckResult:
    """``logits_to_cdf(logits_LV)`` -> (L, V+1) int64, bit-identical to the codec's."""
    def body(fn):
        gen = torch.Generator().manual_seed(4)
        cases = [torch.randn(3, 8, generator=gen), torch.randn(5, 512, generator=gen) * 4,
                 torch.tensor([[0.0, 0.0, 0.0, 0.0]]),                 # uniform
                 torch.tensor([[1.0, 1.0, 0.0], [0.0, 2.0, 2.0]]),     # a tie for the most likely symbol
                 torch.tensor([[30.0, 0.0, 0.0, -30.0, 5.0]]),          # very peaked: tiny symbols need >= 1
                 torch.randn(2, 16, generator=gen) * 0.01,
                 # float32 rounding: a float32 softmax changes a few of these 1024 rows at V = 512
                 torch.randn(1024, 512, generator=torch.Generator().manual_seed(44))]
        for logits in cases:
            L, V = logits.shape
            cdf = _tensor(fn(logits.clone()), "the CDF")
            if tuple(cdf.shape) == (L, V):
                raise Wrong(f"wrong shape {tuple(cdf.shape)}: a CDF has V+1 = {V + 1} entries per row "
                            "(a leading 0, then the running sum)")
            _shape(cdf, (L, V + 1), "the CDF")
            if cdf.dtype != torch.int64:
                raise Wrong(f"the CDF should be int64 integers, got {cdf.dtype}")
            if bool((cdf[:, 0] != 0).any()):
                raise Wrong("every row must start with 0 (prepend a zero column before the cumulative sum)")
            last = cdf[:, -1]
            if bool((last != 1 << 16).any()):
                raise Wrong(f"sum not 2^16: rows end at {sorted(set(last.tolist()))[:3]}, expected 65536; "
                            "give the leftover counts to the most likely symbol")
            freq = cdf[:, 1:] - cdf[:, :-1]
            if bool((freq < 1).any()):
                raise Wrong("some symbol has a count of 0 (or the CDF decreases): every symbol needs >= 1 "
                            "count, or the coder cannot code it; use floor(p * (2^16 - V)) + 1")
        for logits in cases:  # all CDFs are valid; now they must be exactly the codec's
            cdf = fn(logits.clone())
            freq = cdf[:, 1:] - cdf[:, :-1]
            want = _reference_cdf(logits)
            if not torch.equal(cdf, want):
                diff = (freq - (want[:, 1:] - want[:, :-1]))
                row = int(torch.nonzero(diff)[0, 0])
                off = diff[row]
                if int((off != 0).sum()) == 2 and logits[row].eq(logits[row].max()).sum() > 1:
                    raise Wrong("ties: give the leftover to the FIRST most likely symbol (argmax of p)")
                if torch.equal(cdf, _floor_cdf(torch.softmax(logits.float(), -1))):
                    rows = int((cdf != want).any(1).sum())
                    raise Wrong(f"softmax in float32: {rows} of {L} rows (V = {V}) get other counts than the "
                                "codec's float64 softmax; use logits.double() before the softmax")
                raise Wrong(f"valid CDF, but not the codec's: row {row} differs in {int((off != 0).sum())} "
                            "symbols. Use softmax in float64, floor (not round), +1 per symbol, and the "
                            "deficit on argmax; encoder and decoder must agree to the last integer")
    return _run("logits_to_cdf", fn, body)


# ---- 05 ---------------------------------------------------------------------------------------------------
def check_bpp_ladder(fn) -> CheckResult:
    """``bpp_ladder(bytes_per_scale, header_bytes, num_frames, height, width)`` -> bpp for k = 1..K."""
    def body(fn):
        for per_scale, header, T, H, W in [([23, 47, 95, 342, 1106, 3637], 89, 8, 144, 176),
                                           ([10, 20, 30], 0, 1, 10, 10), ([100], 50, 2, 16, 16)]:
            got = fn(list(per_scale), header, T, H, W)
            got = [float(v) for v in got]
            want = solutions.bpp_ladder(per_scale, header, T, H, W)
            if len(got) != len(want):
                raise Wrong(f"expected one bpp per truncation level k = 1..{len(want)} ({len(want)} values), "
                            f"got {len(got)}" + (" (off by one: k = 0 is not a level here)" if
                                                  abs(len(got) - len(want)) == 1 else ""))
            if np.allclose(got, want, rtol=1e-9):
                continue
            pixels = T * H * W
            if header and np.allclose(got, [v - header * 8 / pixels for v in want]):
                raise Wrong("the header bytes are part of every truncated file: add them to each level")
            shifted = [(header + sum(per_scale[:k])) * 8 / pixels for k in range(len(per_scale))]
            if np.allclose(got, shifted):
                raise Wrong("off by one: level k keeps scales 0..k-1, so k = 1 already includes scale 0")
            if np.allclose(got, [v / 8 for v in want]):
                raise Wrong("bits per pixel: multiply the bytes by 8")
            if np.allclose(got, [v * pixels / (H * W) for v in want]):
                raise Wrong("divide by ALL pixels of the clip: frames * height * width")
            raise Wrong(f"expected {[round(v, 5) for v in want]}, got {[round(v, 5) for v in got]}")
    return _run("bpp_ladder", fn, body)


# ---- 06 ---------------------------------------------------------------------------------------------------
def check_top_k_filter(fn) -> CheckResult:
    """``top_k_filter(logits_LV, k)`` keeps the k largest logits per row, -inf elsewhere."""
    def body(fn):
        gen = torch.Generator().manual_seed(6)
        ties = torch.tensor([[2.0, 1.0, 1.0, 0.0, 1.0, -1.0], [0.5, 0.5, 0.5, 0.5, 3.0, 0.0]])
        for L, V, k in [(1, 10, 3), (4, 512, 20), (3, 8, 1), (2, 6, 6), (2, 6, 0), (2, 6, 2)]:
            # the last case has ties with the k-th largest logit (quantised logits do that)
            logits = ties.clone() if (L, V, k) == (2, 6, 2) else torch.randn(L, V, generator=gen)
            got = _tensor(fn(logits.clone(), k), "the filtered logits")
            _shape(got, (L, V), "the filtered logits")
            want = solutions.top_k_filter(logits, k)
            kept = torch.isfinite(got).sum(1)
            want_kept = torch.isfinite(want).sum(1)
            if torch.equal(got, want):
                continue
            if k == 0 or k >= V:
                raise Wrong(f"k = {k} with V = {V} should keep every logit unchanged (0 means 'no filter')")
            keep = torch.isfinite(want)
            has_ties = bool((logits == logits.topk(k, dim=-1).values[:, -1:]).sum(1).gt(1).any())
            if has_ties and bool((kept == k).all()) and bool((want_kept > k).any()):
                raise Wrong(f"ties: logits EQUAL to the k-th largest are kept too (row 0 of this case has "
                            f"{int(want_kept[0])} logits >= the k-th for k = {k}); set -inf where logits < the "
                            "k-th largest value, as the detail sampler does, instead of keeping k indices")
            if torch.equal(got[keep], want[keep]) and not bool(torch.isneginf(got[~keep]).any()):
                raise Wrong("removed entries must be -inf (so that softmax gives them probability 0)")
            if torch.equal(kept, want_kept + 1) or torch.equal(kept, want_kept - 1):
                raise Wrong(f"off by one: keep exactly k = {k} logits per row, got {kept.tolist()}")
            bottom_k = logits <= -((-logits).topk(k, dim=-1).values[:, -1:])
            if torch.equal(torch.isfinite(got), bottom_k):
                raise Wrong("you kept the SMALLEST logits: keep the k largest")
            if not torch.equal(torch.isfinite(got), torch.isfinite(want)):
                if torch.equal(kept, want_kept):
                    raise Wrong("the right number of logits kept, but not the largest of EACH ROW "
                                "(take the k-th largest per row: topk(..., dim=-1))")
                raise Wrong(f"keep k = {k} logits per row; got {kept.tolist()} finite values per row")
            if bool((got[torch.isfinite(got)] == 0).any()) or not torch.allclose(got[torch.isfinite(got)],
                                                                                 want[torch.isfinite(want)]):
                raise Wrong("the kept logits must stay unchanged (no renormalising here: softmax does that)")
            raise Wrong("removed entries must be -inf (so that softmax gives them probability 0)")
    return _run("top_k_filter", fn, body)


# ---- 07 ---------------------------------------------------------------------------------------------------
def check_unigram_bits(fn) -> CheckResult:
    """``unigram_bits(tokens, codebook_size)`` -> total bits with the tokens' own histogram."""
    def body(fn):
        gen = torch.Generator().manual_seed(7)
        cases = [(torch.tensor([0, 0, 1, 1]), 4), (torch.tensor([3, 3, 3, 3]), 8),
                 (torch.randint(0, 16, (5, 6, 7), generator=gen), 16),
                 (torch.randint(0, 40, (1000,), generator=gen) % 7, 512)]
        for tokens, V in cases:
            got = fn(tokens.clone(), V)
            if isinstance(got, torch.Tensor):
                got = got.item() if got.numel() == 1 else got
            if not isinstance(got, (int, float, np.floating)):
                raise Wrong(f"return one number (total bits), got {type(got).__name__}")
            got = float(got)
            want = solutions.unigram_bits(tokens, V)
            if math.isnan(got):
                raise Wrong("got NaN: skip ids that never occur (0 * log 0 is taken as 0)")
            if math.isclose(got, want, rel_tol=1e-6, abs_tol=1e-9):
                continue
            n = tokens.numel()
            if want and math.isclose(got, want * math.log(2), rel_tol=1e-6):
                raise Wrong("that is in nats: use log2 for bits")
            if want and math.isclose(got, want / n, rel_tol=1e-6):
                raise Wrong(f"that is bits per TOKEN; return the total over all {n} tokens")
            if math.isclose(got, -want, rel_tol=1e-6):
                raise Wrong("sign: the cost is -log2 p (positive)")
            raise Wrong(f"for {n} tokens with V = {V} expected {want:.3f} bits, got {got:.3f}")
    return _run("unigram_bits", fn, body)


# ---- 08 ---------------------------------------------------------------------------------------------------
def check_mean_psnr(fn) -> CheckResult:
    """``mean_psnr(a_T3HW, b_T3HW)`` -> mean over frames of the per-frame PSNR (dB, peak 1.0)."""
    def body(fn):
        gen = torch.Generator().manual_seed(8)
        a = torch.rand(4, 3, 16, 20, generator=gen)
        noise = torch.randn(4, 3, 16, 20, generator=gen) * torch.tensor([0.01, 0.05, 0.1, 0.02]).view(4, 1, 1, 1)
        b = (a + noise).clamp(0, 1)
        for x, y in [(a, b), (a[:1], b[:1]), (a, (a + 0.1).clamp(0, 1))]:
            got = fn(x.clone(), y.clone())
            got = float(got.item() if isinstance(got, torch.Tensor) else got)
            want = solutions.mean_psnr(x, y)
            if math.isclose(got, want, abs_tol=1e-4):
                continue
            mse = ((x.double() - y.double()) ** 2).mean()
            if math.isclose(got, float(10 * torch.log10(1 / mse)), abs_tol=1e-4):
                raise Wrong("you computed the PSNR of the mean MSE over the whole clip; papers average the "
                            "per-frame PSNRs (one bad frame then costs more)")
            if math.isclose(got, want + 20 * math.log10(255), abs_tol=1e-3):
                raise Wrong("the frames are in [0, 1]: the peak value is 1.0, not 255")
            if math.isclose(got, want / 2, abs_tol=1e-3) or math.isclose(got, want * 2, abs_tol=1e-3):
                raise Wrong("PSNR = 10 log10(peak^2 / MSE) = 20 log10(peak / RMSE); check the factor 10 vs 20")
            raise Wrong(f"expected {want:.3f} dB, got {got:.3f} dB")
    return _run("mean_psnr", fn, body)


def check_rate_saving_at_quality(fn) -> CheckResult:
    """``rate_saving_at_quality(anchor_bpp, anchor_psnr, test_bpp, test_psnr, target_psnr)`` -> percent."""
    def body(fn):
        anchor = ([0.02, 0.04, 0.08], [28.0, 31.0, 34.0])
        cases = [(anchor, ([0.01, 0.02, 0.04], [28.0, 31.0, 34.0]), 31.0),   # half the rate everywhere
                 (anchor, anchor, 30.0),                                      # same codec: 0 %
                 (anchor, ([0.03, 0.06, 0.12], [28.0, 31.0, 34.0]), 29.5),   # 50 % more
                 (anchor, ([0.05, 0.025, 0.0125], [33.0, 30.0, 27.0]), 32.0)]  # unsorted points
        for (ab, ap), (tb, tp), target in cases:
            got = float(fn(list(ab), list(ap), list(tb), list(tp), target))
            want = solutions.rate_saving_at_quality(ab, ap, tb, tp, target)
            if math.isclose(got, want, abs_tol=1e-6):
                continue
            if math.isclose(got, -want, abs_tol=1e-6):
                raise Wrong("sign: negative means the test codec SAVES rate (test / anchor - 1)")
            if math.isclose(got, want / 100, abs_tol=1e-6):
                raise Wrong("return percent (multiply the ratio - 1 by 100)")
            lin = lambda b, p: np.interp(target, sorted(p), [x for _, x in sorted(zip(p, b))])
            if math.isclose(got, (lin(tb, tp) / lin(ab, ap) - 1) * 100, abs_tol=1e-6) and not math.isclose(got, want):
                raise Wrong("interpolate log(bpp), not bpp: rate-distortion curves are close to straight in "
                            "log rate")
            raise Wrong(f"target {target} dB: expected {want:.2f} %, got {got:.2f} % (sort each curve's points "
                        "by PSNR before interpolating)")
    return _run("rate_saving_at_quality", fn, body)


# ---- 09 ---------------------------------------------------------------------------------------------------
def check_copy_mixture(fn) -> CheckResult:
    """``copy_mixture(logits_LV, prev_L, gate_L)`` -> (L, V) float64 probabilities of the copy mixture."""
    def body(fn):
        gen = torch.Generator().manual_seed(9)
        cases = []
        for L, V in [(3, 8), (6, 512), (4, 16)]:
            cases.append((torch.randn(L, V, generator=gen) * 3, torch.randint(0, V, (L,), generator=gen),
                          torch.rand(L, generator=gen, dtype=torch.float64) * 0.95))
        cases.append((torch.randn(2, 5, generator=gen), torch.tensor([4, 0]),
                      torch.tensor([0.0, 0.5], dtype=torch.float64)))     # g = 0: the plain softmax
        for logits, prev, gate in cases:
            L, V = logits.shape
            p = _tensor(fn(logits.clone(), prev.clone(), gate.clone()), "the probabilities")
            _shape(p, (L, V), "the probabilities")
            want = solutions.copy_mixture(logits, prev, gate)
            soft = torch.softmax(logits.double(), -1)
            onehot = F.one_hot(prev, V).double()
            g = gate.reshape(-1, 1)
            if torch.allclose(p.double(), want, atol=1e-12, rtol=0):
                if p.dtype != torch.float64:
                    raise Wrong(f"right values, but {p.dtype}: mix in float64 (the integer CDF is taken from "
                                "these numbers; float32 can flip a count between two machines)")
                continue
            if p.dtype != torch.float64 and torch.allclose(p.double(), want, atol=1e-6):
                raise Wrong(f"close, but {p.dtype}: compute the softmax and the mixture in float64 "
                            "(logits.double()), as the codec does")
            sums = p.double().sum(1)
            if torch.allclose(p.double(), g * onehot + soft, atol=1e-6):
                raise Wrong("rows sum to 1 + g: scale the model's softmax by (1 - g), so the mixture stays a "
                            "distribution")
            if torch.allclose(p.double(), g * onehot + (1 - g) * logits.double(), atol=1e-6):
                raise Wrong("you mixed the LOGITS: take softmax(logits) first, then mix the probabilities")
            if torch.allclose(p.double(), (1 - g) * onehot + g * soft, atol=1e-6):
                raise Wrong("g and 1 - g are swapped: the gate g is the weight of the copy, g * onehot(prev)")
            if not torch.allclose(sums, torch.ones_like(sums), atol=1e-6):
                raise Wrong(f"every row must sum to 1, yours sum to {[round(float(x), 4) for x in sums[:3]]}...")
            wrong_rows = (p.double() - want).abs().max(1).values > 1e-6
            if torch.allclose(p.double().argmax(1)[wrong_rows].double(), prev[wrong_rows].double()) and \
                    not torch.allclose(p.double()[torch.arange(L), prev], want[torch.arange(L), prev], atol=1e-6):
                raise Wrong("the copied symbol gets the wrong mass: p[prev] = g + (1 - g) * softmax[prev]")
            raise Wrong(f"{int(wrong_rows.sum())} of {L} rows differ from g * onehot(prev) + (1 - g) * "
                        "softmax(logits) (onehot(prev): 1 at column prev[i] of row i, 0 elsewhere)")
    return _run("copy_mixture", fn, body)


def _rdo_cases():
    """Blocks for check_rdo_choice: distances, bits (from real integer CDFs, some with a copy gate that
    makes frame t-1's token cheap although it is far from the residual), lambdas, areas, candidates."""
    gen = torch.Generator().manual_seed(10)
    cases = []
    for L, V, lam, area, n, with_prev in [(6, 16, 0.5, 4.0, 4, True), (8, 64, 0.05, 16.0, 8, True),
                                         (5, 32, 0.0, 4.0, 8, True), (4, 16, 0.3, 1.0, 3, False),
                                         (12, 512, 0.02, 99.0, 8, True), (6, 16, 2.0, 4.0, 2, True)]:
        dist = torch.rand(L, V, generator=gen, dtype=torch.float64) * 2
        prev = torch.randint(0, V, (L,), generator=gen) if with_prev else None
        logits = torch.randn(L, V, generator=gen) * 2.5
        if with_prev:
            far = dist.argsort(1)[:, -1]          # make frame t-1's token the FARTHEST code of half the rows
            prev[: L // 2] = far[: L // 2]
            cdf = _reference_cdf(logits, copy_symbols=prev, gate=torch.full((L,), 0.9, dtype=torch.float64))
        else:
            cdf = _reference_cdf(logits)
        freq = (cdf[:, 1:] - cdf[:, :-1]).double()
        bits = 16 - freq.log2()
        cases.append((dist, bits, prev, lam, area, n))
    return cases


def check_rdo_choice(fn) -> CheckResult:
    """``rdo_choice(dist_LV, bits_LV, prev_L, lam, area, candidates)`` -> (L,) int64 RD-optimised tokens."""
    def body(fn):
        for dist, bits, prev, lam, area, n in _rdo_cases():
            L, V = dist.shape
            got = _tensor(fn(dist.clone(), bits.clone(), None if prev is None else prev.clone(), lam, area, n),
                          "the chosen tokens")
            if got.numel() == L and tuple(got.shape) != (L,):
                raise Wrong(f"wrong shape: one token per position, (L,) = ({L},), got {tuple(got.shape)}")
            _shape(got, (L,), "the chosen tokens")
            if got.dtype != torch.int64:
                raise Wrong(f"token ids should be int64 (torch.long), got {got.dtype}")
            want = solutions.rdo_choice(dist, bits, prev, lam, area, n)
            if torch.equal(got, want):
                continue
            what = f"(L={L}, V={V}, lambda={lam}, area={area}, {n} candidates" + \
                   (", intra frame: prev is None)" if prev is None else ")")
            cost = area * dist + lam * bits
            variants = [
                (dist.argmin(1), "you picked the nearest code: the cost is area * dist + lam * bits (bits = what "
                                 "the coder pays for that token)"),
                (cost.argmin(1), "only the `candidates` nearest codes and frame t-1's token may be chosen (the "
                                 "encoder never tries the others)"),
                (solutions.rdo_choice(dist, bits, None, lam, area, n),
                 "frame t-1's token is always a candidate, even when it is not among the nearest codes: the "
                 "copy gate makes it cheap"),
                (solutions.rdo_choice(lam * area * dist, bits, prev, 1.0, 1.0, n) if lam > 0 else want,
                 "lambda multiplies the BITS: cost = area * dist + lam * bits"),
                (solutions.rdo_choice(dist, bits, prev, lam, 1.0, n),
                 "multiply the distance by `area` (each scale-s token covers A_s latent positions)"),
                (solutions.rdo_choice(-dist, -bits, prev, lam, area, n), "minimise the cost (argmin), not maximise"),
            ]
            for variant, message in variants:
                if torch.equal(got, variant) and not torch.equal(variant, want):
                    raise Wrong(f"{message} {what}")
            if lam == 0 and not torch.equal(got, dist.argmin(1)):
                raise Wrong(f"with lambda = 0 the choice is the nearest code (argmin of dist) {what}")
            bad = int((got != want).sum())
            raise Wrong(f"{bad} of {L} positions differ from the cheapest allowed token {what}")
    return _run("rdo_choice", fn, body)


# ---- 10 arithmetic coding ----------------------------------------------------------------------------------
def _ac_cases():
    """Blocks (cdf, symbols) for the coder checks: peaked and flat, tiny and large vocabularies, one symbol
    and hundreds; symbols drawn from the model (so the coder meets frequent and rare ones)."""
    from ..stages.entropy import logits_to_cdf

    gen = torch.Generator().manual_seed(11)
    cases = []
    for L, V, scale in [(1, 512, 3.0), (7, 2, 1.0), (60, 16, 0.3), (300, 512, 3.0), (200, 64, 8.0)]:
        logits = torch.randn(L, V, generator=gen) * scale
        sym = torch.multinomial(torch.softmax(logits.double(), -1), 1, generator=gen).squeeze(1)
        cases.append((logits_to_cdf(logits), sym))
    return cases


def check_interval_update(fn) -> CheckResult:
    """``interval_update(low, high, cdf_lo, cdf_hi, total)`` -> (new_low, new_high), integers."""
    from .arithmetic import FULL, ArithmeticCoder, interval_update

    def body(fn):
        for low, high, lo, hi, total in [(0, FULL - 1, 0, 1, 1 << 16), (0, FULL - 1, 65535, 65536, 1 << 16),
                                         (123456, 987654321, 100, 40000, 1 << 16), (2 ** 30, 3 * 2 ** 30 - 1, 7, 8, 16),
                                         (5, 2 ** 31 + 17, 1, 3, 4)]:
            got = fn(low, high, lo, hi, total)
            if not isinstance(got, tuple) or len(got) != 2:
                raise Wrong(f"return the pair (new_low, new_high), got {got!r}")
            if not all(isinstance(v, int) for v in got):
                raise Wrong(f"return Python ints (use // for the division), got {[type(v).__name__ for v in got]}")
            want = interval_update(low, high, lo, hi, total)
            if got == want:
                continue
            span = high - low + 1
            what = f"(low={low}, high={high}, counts [{lo}, {hi}) of {total})"
            if got == (want[0], want[1] + 1):
                raise Wrong(f"high is one too large {what}: both ends are INCLUSIVE, so the new high is "
                            "low + span * cdf_hi // total - 1")
            if got == (low + (span - 1) * lo // total, low + (span - 1) * hi // total - 1):
                raise Wrong(f"span = high - low + 1 (both ends belong to the interval) {what}")
            if got == (want[1], want[0]):
                raise Wrong(f"new_low and new_high are swapped {what}")
            if got == (low + round(span * lo / total), low + round(span * hi / total) - 1):
                raise Wrong(f"round() is not the codec's rule: floor with // (any rule works only if the "
                            f"decoder uses the same, and the package's decoder floors) {what}")
            raise Wrong(f"expected {want}, got {got} {what}")
        coder, ref = ArithmeticCoder(update=fn), ArithmeticCoder()
        for cdf, sym in _ac_cases():
            if coder.encode(cdf, sym) != ref.encode(cdf, sym):
                raise Wrong("the single steps are right, but a whole block codes to other bytes")
    return _run("interval_update", fn, body)


def check_decode_symbol(fn) -> CheckResult:
    """``decode_symbol(value, low, high, cdf_row, total)`` -> the symbol whose share holds ``value``."""
    from .arithmetic import ArithmeticCoder
    from ..stages.entropy import get_coder

    def body(fn):
        ref = ArithmeticCoder()
        row = [0, 10, 10, 30, 64]                        # symbol 1 has no counts (never coded)
        low, high = 1000, 2 ** 32 - 7                      # span not a multiple of 64: the floors matter
        span = high - low + 1
        starts = [low + span * c // 64 for c in row[:-1]]   # where each symbol's share begins
        for value, want in [(low, 0), (high, 3), (starts[3], 3), (starts[3] - 1, 2), (starts[2], 2)]:
            got = fn(value, low, high, row, 64)
            if not isinstance(got, (int, np.integer)) or isinstance(got, bool):
                raise Wrong(f"return one int (the symbol), got {type(got).__name__}")
            if int(got) != want:
                hint = ""
                if value == starts[want] and int(got) == want - 1:
                    hint = (" (the value sits exactly where the share begins: target must be the LARGEST "
                            "count c with low + span * c // total <= value, ((value - low + 1) * total - 1) // span, and the "
                            "symbol the largest v with cdf[v] <= target)")
                raise Wrong(f"value {value} in [{low}, {high}] with counts {row} of 64: expected symbol {want}, "
                            f"got {got}{hint}")
        student = ArithmeticCoder(find=fn)
        try:
            torchac = get_coder("torchac")
        except Exception:    # noqa: BLE001 - no compiler for the extension: check against our own bytes only
            torchac = None
        for cdf, sym in _ac_cases():
            data = torchac.encode(cdf, sym) if torchac is not None else ref.encode(cdf, sym)
            got = student.decode(cdf, data)
            if torch.equal(got, sym):
                continue
            first = int(torch.nonzero(got != sym)[0, 0])
            L, V = cdf.shape[0], cdf.shape[1] - 1
            raise Wrong(f"block of {L} symbols (V = {V}): symbol {first} decodes as {int(got[first])}, the encoder "
                        f"coded {int(sym[first])}. target = ((value - low + 1) * total - 1) // (high - low + 1) "
                        "is the largest count c with low + span * c // total <= value; the symbol is the "
                        "largest v with cdf[v] <= target")
    return _run("decode_symbol", fn, body)


# ---- 11 unsafe masks ------------------------------------------------------------------------------------------
def _mask_cases():
    """(allowed_BB, K, safe?) for the truncation-safety check: the shipped masks, hand-made edge cases
    (a key one scale finer in the previous frame only; a mask without its diagonal) and random ones."""
    from ..stages.masks import MASKS

    cases = []
    for name in ("var", "infinitystar", "progvc_sparse"):
        for T, K, W in [(1, 3, 1), (3, 3, 1), (4, 2, 2), (2, 6, 1)]:
            m = MASKS[name](T, K, W)
            cases.append((m, K, is_truncation_safe(m, K)))
    T, K = 3, 3
    prev_finer = build_mask("progvc_sparse", T, K, 1).clone()
    prev_finer[1 * K + 0, 0 * K + 1] = True           # (t=1, s=0) reads (t=0, s=1): unsafe, across frames
    same_frame_finer = build_mask("progvc_sparse", T, K, 1).clone()
    same_frame_finer[2 * K + 1, 2 * K + 2] = True     # (t=2, s=1) reads (t=2, s=2)
    prev_coarser = build_mask("progvc_sparse", T, K, 1).clone()
    prev_coarser[1 * K + 2, 0 * K + 0] = True         # reads a COARSER scale of frame t-1: still safe
    no_diag = build_mask("progvc_sparse", T, K, 1) & ~torch.eye(T * K, dtype=torch.bool)
    cases += [(prev_finer, K, False), (same_frame_finer, K, False), (prev_coarser, K, True), (no_diag, K, True),
              (torch.zeros(T * K, T * K, dtype=torch.bool), K, True)]
    gen = torch.Generator().manual_seed(12)
    for T, K in [(2, 4), (3, 2), (4, 3)]:
        for density in (0.05, 0.3):
            m = torch.rand(T * K, T * K, generator=gen) < density
            cases.append((m, K, is_truncation_safe(m, K)))
    return cases


def check_is_truncation_safe(fn) -> CheckResult:
    """``is_truncation_safe(allowed_BB, num_scales)`` -> bool: no allowed key at a finer scale than its query."""
    def body(fn):
        for allowed, K, want in _mask_cases():
            got = fn(allowed.clone(), K)
            if isinstance(got, torch.Tensor):
                if got.numel() != 1:
                    raise Wrong(f"return ONE bool for the whole mask, got a tensor of shape {tuple(got.shape)} "
                                "(.any() over the offending pairs, then bool(...))")
                got = bool(got)
            if not isinstance(got, (bool, np.bool_)):
                raise Wrong(f"return a bool, got {type(got).__name__}")
            if bool(got) == want:
                continue
            B = allowed.shape[0]
            T = B // K
            t_B = torch.arange(T).repeat_interleave(K)
            s_B = torch.arange(K).repeat(T)
            what = f"(a {T}-frame, {K}-scale mask)"
            if want:
                raise Wrong(f"this mask is safe but you said unsafe {what}: reading the SAME or a COARSER "
                                "scale is fine (a cut after k keeps every scale <= the query's); only a key at a "
                                "FINER scale (s_key > s_query) breaks truncation")
            bad = allowed & (s_B[None, :] > s_B[:, None])
            q, k = [int(v) for v in torch.nonzero(bad)[0]]
            cross = " in another frame" if t_B[q] != t_B[k] else ""
            raise Wrong(f"block (t={q // K}, s={q % K}) reads block (t={k // K}, s={k % K}), a finer scale"
                        f"{cross}: a stream cut after scale {q % K + 1} would not have it {what}; blocks are "
                        "frame-major, id = t * K + s")
    return _run("is_truncation_safe", fn, body)


def check_safe_mask_design(fn) -> CheckResult:
    """``my_mask(num_frames, num_scales, window)`` -> a mask the codec can use, with temporal context."""
    from ..stages.masks import decode_order

    def body(fn):
        for T, K, W in [(1, 3, 1), (3, 3, 1), (4, 6, 1), (5, 4, 2), (8, 6, 1)]:
            got = _tensor(fn(T, K, W), "the mask")
            _shape(got, (T * K, T * K), f"the mask for T={T}, K={K} (one row and column per block)")
            if got.dtype != torch.bool:
                raise Wrong(f"the mask should be a bool tensor, got {got.dtype}")
            bad = [e for e in _violations(got, K)]
            if bad:
                (tq, sq), (tk, sk) = bad[0]
                raise Wrong(f"not truncation safe (T={T}, K={K}): block (t={tq}, s={sq}) reads (t={tk}, s={sk}), a "
                            f"finer scale ({len(bad)} such edges)")
            try:
                decode_order(got, K)
            except ValueError:
                q, k = next((q, k) for q, k in torch.nonzero(got).tolist() if k // K > q // K)
                raise Wrong(f"block (t={q // K}, s={q % K}) reads block (t={k // K}, s={k % K}) of a LATER frame: "
                            "the decoder has not decoded it yet") from None
            if not bool(got.diagonal().all()):
                b = int((~got.diagonal()).nonzero()[0])
                raise Wrong(f"block (t={b // K}, s={b % K}) does not attend to itself: the tokens of a block are "
                            "predicted from its own positions too (the diagonal must be True)")
            if T > 1:
                t_B = torch.arange(T).repeat_interleave(K)
                earlier = got & (t_B[None, :] < t_B[:, None])
                lonely = [b for b in range(K, T * K) if not bool(earlier[b].any())]
                if len(lonely) == (T - 1) * K:
                    raise Wrong("no block reads an earlier frame: that is intra coding, the temporal context "
                                "(the point of a video model) is missing")
                if lonely and T >= 2:
                    b = lonely[0]
                    raise Wrong(f"block (t={b // K}, s={b % K}) reads no earlier frame; give every block of "
                                "frames t >= 1 some temporal context")
    return _run("safe_mask_design", fn, body)


def _violations(allowed, K):
    from .unsafe import violating_edges

    return violating_edges(allowed, K)


# ---- 12 build a stage -------------------------------------------------------------------------------------------
def _demo_quantizers():
    """A random small quantizer and, when available, the shipped tiny one (the codec's real weights)."""
    from ..stages.quantizer import MultiScaleResidualQuantizer

    torch.manual_seed(13)
    small = MultiScaleResidualQuantizer(codebook_size=32, latent_dim=4, num_scales=4)
    with torch.no_grad():
        small.codebook.weight.normal_()
    out = [small.eval()]
    try:
        from ..viz import load_demo_codec
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out.append(load_demo_codec().quantizer.eval())
    except Exception:  # noqa: BLE001 - no shipped weights: the random one still checks the logic
        pass
    return out


def check_expected_code(fn) -> CheckResult:
    """``expected_code(probs_LV, codebook_VC, size)`` -> (C, h_s, w_s): sum_v p(v) e_v per position."""
    @torch.no_grad()
    def body(fn):
        gen = torch.Generator().manual_seed(14)
        for (h, w), V, C in [((1, 1), 8, 4), ((2, 3), 32, 16), ((6, 6), 512, 16), ((3, 5), 16, 2)]:
            logits = torch.randn(h * w, V, generator=gen) * 2
            probs = torch.softmax(logits.double(), -1)
            book = torch.randn(V, C, generator=gen)
            got = _tensor(fn(probs.clone(), book.clone(), (h, w)), "the expected codes")
            want = solutions.expected_code(probs, book, (h, w))
            if got.numel() == C * h * w and tuple(got.shape) != (C, h, w):
                raise Wrong(f"wrong shape: (C, h_s, w_s) = {(C, h, w)}, got {tuple(got.shape)} (channels first)")
            _shape(got, (C, h, w), "the expected codes")
            if torch.allclose(got.double(), want.double(), atol=1e-5):
                continue
            z = probs.float() @ book
            if h * w > 1 and C > 1 and torch.allclose(got, z.reshape(C, h, w), atol=1e-5):
                raise Wrong("positions and channels mixed up: (L, C) -> transpose to (C, L) before the reshape "
                            "to (C, h_s, w_s)")
            if torch.allclose(got, book[probs.argmax(1)].T.reshape(C, h, w), atol=1e-5):
                raise Wrong("that is the most likely code (argmax); the EXPECTED code weighs every code by its "
                            "probability: probs @ codebook")
            if torch.allclose(got, (logits @ book).T.reshape(C, h, w), atol=1e-4):
                raise Wrong("you weighted the codes by the logits; use the probabilities you were given")
            if torch.allclose(got, (torch.ones_like(probs) / V).float().matmul(book).T.reshape(C, h, w), atol=1e-5):
                raise Wrong("that is the plain mean of the codebook; weigh each code by p(v)")
            raise Wrong(f"values differ from sum_v p(v) e_v (max error {float((got.double() - want.double()).abs().max()):.3g})")
    return _run("expected_code", fn, body)


def check_residual_tokenize(fn) -> CheckResult:
    """``residual_tokenize(q, f_NChw)`` -> [tokens (N, h_s, w_s)], identical to the package's loop."""
    from ..stages.quantizer import area_down

    @torch.no_grad()
    def body(fn):
        gen = torch.Generator().manual_seed(15)
        for q in _demo_quantizers():
            for N, hw in [(1, (3, 4)), (2, (18, 22))]:
                f = torch.randn(N, q.latent_dim, *hw, generator=gen)
                got = fn(q, f.clone())
                want = q.tokenize(f)
                if not isinstance(got, (list, tuple)) or len(got) != len(want):
                    raise Wrong(f"return a list of {len(want)} token maps, one per scale (coarse to fine), got "
                                f"{type(got).__name__}" + (f" of {len(got)}" if isinstance(got, (list, tuple)) else ""))
                for s, (a, b) in enumerate(zip(got, want)):
                    _tensor(a, f"scale {s}'s tokens")
                    if tuple(a.shape) != tuple(b.shape):
                        raise Wrong(f"scale {s}: tokens should be {tuple(b.shape)} (N, h_s, w_s), got {tuple(a.shape)}; "
                                    "area-down the residual to the scale's size before the nearest code")
                    if a.dtype != torch.int64:
                        raise Wrong(f"scale {s}: token ids should be int64, got {a.dtype}")
                    if torch.equal(a, b):
                        continue
                    if s > 0 and torch.equal(a, q.nearest_code(area_down(f, q.schedule(hw)[s]))):
                        raise Wrong(f"scale {s} codes the latent f itself: subtract what each scale adds "
                                    "(f_rest = f_rest - scale_contribution(idx, s, latent_hw)) before the next")
                    no_phi = f.clone()
                    for j in range(s):
                        z = q.codebook(got[j]).permute(0, 3, 1, 2)
                        no_phi = no_phi - torch.nn.functional.interpolate(z, size=hw, mode="bilinear",
                                                                         align_corners=False)
                    if torch.equal(a, q.nearest_code(area_down(no_phi, q.schedule(hw)[s]))):
                        raise Wrong(f"scale {s}: subtract scale_contribution (phi_s of the up-sampled codes), not "
                                    "the raw up-sampled codes: the decoder adds phi_s(up(e))")
                    raise Wrong(f"scale {s} differs from the package in {int((a != b).sum())} of {a.numel()} tokens "
                                f"(N={N}, latent {hw[0]}x{hw[1]})")
    return _run("residual_tokenize", fn, body)


def check_residual_tokens_to_latent(fn) -> CheckResult:
    """``residual_tokens_to_latent(q, tokens, latent_hw, upto)`` -> f_hat, bit-identical to the package's."""
    @torch.no_grad()
    def body(fn):
        gen = torch.Generator().manual_seed(16)
        for q in _demo_quantizers():
            hw = (18, 22)
            tokens = q.tokenize(torch.randn(2, q.latent_dim, *hw, generator=gen))
            for upto in [1, 2, q.num_scales - 1, q.num_scales]:
                got = _tensor(fn(q, [t.clone() for t in tokens], hw, upto), "f_hat")
                want = q.tokens_to_latent(tokens, hw, upto=upto)
                _shape(got, want.shape, f"f_hat from {upto} scales")
                if torch.equal(got, want):
                    continue
                if upto < q.num_scales and torch.allclose(got, q.tokens_to_latent(tokens, hw), atol=1e-5):
                    raise Wrong(f"upto={upto}: you summed ALL scales; use only the first `upto` (a cut stream has no more)")
                if upto < q.num_scales and torch.allclose(got, q.tokens_to_latent(tokens, hw, upto=upto + 1), atol=1e-5):
                    raise Wrong(f"upto={upto}: off by one, scales 0..upto-1 make f_hat_upto")
                if torch.allclose(got, want, atol=1e-5):
                    raise Wrong(f"upto={upto}: close ({float((got - want).abs().max()):.1e}) but not bit-identical. The "
                                "decoder builds every context input with this function: start from zeros and add "
                                "the scales in order 0, 1, ..., in float32, exactly like the package")
                raise Wrong(f"upto={upto}: f_hat differs (max error {float((got - want).abs().max()):.3g}); each scale "
                            "adds scale_contribution(tokens[s], s, latent_hw)")
    return _run("residual_tokens_to_latent", fn, body)


def check_stage_in_codec(codec, video, fps, tokenize_fn, tokens_to_latent_fn) -> CheckResult:
    """The student's quantizer loops inside a Codec: the encoder's tokens (lambda = 0), the bytes and
    the decoded frames are identical to the package's."""
    from .build_stage import StudentQuantizer
    from ..codec import Codec

    @torch.no_grad()
    def body(_):
        q = StudentQuantizer(codec.quantizer, tokenize=_no_none("residual_tokenize", tokenize_fn),
                             tokens_to_latent=_no_none("residual_tokens_to_latent", tokens_to_latent_fn))
        mine = Codec(codec.tokenizer, q, codec.context_model, gop=codec.config.gop, copy_gate=codec.config.copy_gate,
                     rdo_lambda=0.0)
        ref = Codec(codec.tokenizer, codec.quantizer, codec.context_model, gop=codec.config.gop,
                    copy_gate=codec.config.copy_gate, rdo_lambda=0.0)
        if mine.fingerprint() != ref.fingerprint():
            raise Wrong("the student quantizer does not carry the package's weights")
        tok_mine, _ = mine.tokenize(video)
        tok_ref, _ = ref.tokenize(video)
        if not all(torch.equal(a, b) for a, b in zip(tok_mine, tok_ref)):
            raise Wrong("your tokenize gives other tokens than the encoder sends on this video")
        data_mine, data_ref = mine.encode(video, fps), ref.encode(video, fps)
        if data_mine != data_ref:
            raise Wrong(f"the streams differ ({len(data_mine)} vs {len(data_ref)} bytes): the context inputs built "
                        "by your tokens_to_latent are not bit-identical to the package's")
        decoded, _ = mine.decode_tokens(data_ref)
        if not all(torch.equal(a, b) for a, b in zip(decoded, tok_ref)):
            raise Wrong("your quantizer decodes the package's stream to other tokens")
        if not torch.equal(mine.decode(data_ref), ref.decode(data_ref)):
            raise Wrong("the decoded frames differ from the package's")
    return _run("stage_in_codec", tokenize_fn if callable(tokens_to_latent_fn) else tokens_to_latent_fn, body)


# ---- 13 train from scratch -------------------------------------------------------------------------------------
def _number(got, what: str) -> float:
    if isinstance(got, torch.Tensor):
        if got.numel() != 1:
            raise Wrong(f"return one number ({what}), got a tensor of shape {tuple(got.shape)}")
        got = got.item()
    if not isinstance(got, (int, float, np.floating, np.integer)) or isinstance(got, bool):
        raise Wrong(f"return one number ({what}), got {type(got).__name__}")
    return float(got)


def check_codebook_perplexity(fn) -> CheckResult:
    """``codebook_perplexity(counts_V)`` -> exp(entropy) of the usage distribution."""
    def body(fn):
        gen = torch.Generator().manual_seed(17)
        cases = [torch.tensor([5.0, 5.0, 5.0, 5.0]), torch.tensor([10.0, 0.0, 0.0, 0.0]),
                 torch.tensor([3.0, 1.0, 0.0, 0.0, 4.0]), torch.rand(512, generator=gen) * (torch.rand(512, generator=gen) > 0.7)]
        for counts in cases:
            got = _number(fn(counts.clone()), "the perplexity")
            want = solutions.codebook_perplexity(counts)
            if math.isnan(got):
                raise Wrong("got NaN: skip codes that were never used (0 log 0 counts as 0)")
            if math.isclose(got, want, rel_tol=1e-6):
                continue
            p = counts.double() / counts.sum()
            p = p[p > 0]
            H = float(-(p * p.log()).sum())
            if math.isclose(got, H, rel_tol=1e-6, abs_tol=1e-9) or math.isclose(got, H / math.log(2), rel_tol=1e-6, abs_tol=1e-9):
                raise Wrong("that is the entropy; the perplexity is exp(entropy in nats) = 2^(entropy in bits)")
            if math.isclose(got, math.exp(H / math.log(2)), rel_tol=1e-6):
                raise Wrong("exp of the entropy in BITS mixes bases: use exp(nats) or 2 ** bits")
            if math.isclose(got, float((counts > 0).sum()), rel_tol=1e-9):
                raise Wrong("that counts the codes used at all; the perplexity weighs them by how often")
            raise Wrong(f"counts {counts.tolist()[:6]}...: expected {want:.4g}, got {got:.4g}")
    return _run("codebook_perplexity", fn, body)


def check_bits_per_token(fn) -> CheckResult:
    """``bits_per_token(logits_BLV, targets_BL)`` -> mean cross-entropy in bits."""
    def body(fn):
        gen = torch.Generator().manual_seed(18)
        for B, L, V, scale in [(1, 1, 2, 0.0), (2, 5, 8, 1.0), (3, 40, 512, 3.0), (2, 7, 16, 10.0)]:
            logits = torch.randn(B, L, V, generator=gen) * scale
            targets = torch.randint(V, (B, L), generator=gen)
            got = _number(fn(logits.clone(), targets.clone()), "bits per token")
            want = solutions.bits_per_token(logits, targets)
            if math.isclose(got, want, rel_tol=1e-5, abs_tol=1e-7):
                continue
            if math.isclose(got, want * math.log(2), rel_tol=1e-5):
                raise Wrong("that is in nats (what F.cross_entropy returns): divide by ln 2 for bits")
            if math.isclose(got, want * B * L, rel_tol=1e-5):
                raise Wrong(f"that is the total over all {B * L} tokens; return the mean per token")
            if math.isclose(got, want * math.log(2) / math.log(10), rel_tol=1e-5):
                raise Wrong("log10 gives digits, not bits: use log2 (or nats / ln 2)")
            if math.isclose(got, -want, rel_tol=1e-5):
                raise Wrong("the sign: bits are -log2 p(target), positive")
            raise Wrong(f"B={B}, L={L}, V={V}: expected {want:.5g} bits per token, got {got:.5g} "
                        "(log_softmax over the LAST axis, the target's entry, minus, mean, / ln 2)")
    return _run("bits_per_token", fn, body)


# ---- 14 against classical codecs -----------------------------------------------------------------------------------
def check_bd_rate_cubic(fn) -> CheckResult:
    """``bd_rate_cubic(anchor_rates, anchor_psnr, test_rates, test_psnr)`` -> percent, as metrics.bd_rate(piecewise=False)."""
    from ..metrics import bd_rate

    def body(fn):
        cases = [([0.1, 0.2, 0.4, 0.8], [30.0, 33.0, 35.5, 37.5], [0.08, 0.16, 0.32, 0.64], [30.2, 33.1, 35.6, 37.7]),
                 ([0.02, 0.05, 0.1, 0.2], [25.0, 28.0, 31.0, 33.0], [0.05, 0.1, 0.3, 0.6], [26.0, 29.5, 31.5, 34.0]),
                 ([1000, 2000, 4000], [20.0, 23.0, 25.0], [900, 1500, 3000, 6000], [19.0, 21.0, 24.0, 26.0]),
                 ([0.1, 0.2, 0.3, 0.5, 0.9], [30.0, 32.0, 33.0, 34.5, 36.0], [0.12, 0.25, 0.5, 1.0], [31.0, 33.0, 35.0, 37.0])]
        for ar, aq, tr, tq in cases:
            got = _number(fn(list(ar), list(aq), list(tr), list(tq)), "the BD-rate in percent")
            want = bd_rate(ar, aq, tr, tq, piecewise=False)
            if math.isclose(got, want, rel_tol=1e-6, abs_tol=1e-6):
                continue
            what = f"(anchor {len(ar)} points, test {len(tr)})"
            if math.isclose(got, want / 100, rel_tol=1e-6, abs_tol=1e-9):
                raise Wrong(f"that is a fraction; return percent (x 100) {what}")
            if math.isclose(got, -want, rel_tol=1e-3) or math.isclose(got, bd_rate(tr, tq, ar, aq, piecewise=False), rel_tol=1e-6):
                raise Wrong(f"anchor and test swapped: the result is the TEST codec's rate change against the anchor {what}")
            if math.isclose(got, _bd_linear_rate(ar, aq, tr, tq), rel_tol=1e-6):
                raise Wrong(f"fit log(rate), not the rate itself: BD-rate averages the log-rate difference {what}")
            if math.isclose(got, _bd_full_range(ar, aq, tr, tq), rel_tol=1e-6):
                raise Wrong(f"integrate only over the PSNR range BOTH curves cover (max of the minima to min of "
                            f"the maxima), never extrapolate {what}")
            raise Wrong(f"expected {want:.4f}%, got {got:.4f}% {what}: np.polyfit(psnr, np.log(rate), 3), "
                        "np.polyint, the integral over the overlap divided by its width, exp(...) - 1, x 100")
    return _run("bd_rate_cubic", fn, body)


def _bd_linear_rate(ar, aq, tr, tq):
    """A wrong answer: the cubic fit on the rates themselves (no log), as 'percent'."""
    fa = np.polyint(np.polyfit(aq, ar, min(3, len(aq) - 1)))
    ft = np.polyint(np.polyfit(tq, tr, min(3, len(tq) - 1)))
    lo, hi = max(min(aq), min(tq)), min(max(aq), max(tq))
    return float(((np.polyval(ft, hi) - np.polyval(ft, lo)) / (np.polyval(fa, hi) - np.polyval(fa, lo)) - 1) * 100)


def _bd_full_range(ar, aq, tr, tq):
    """A wrong answer: each curve integrated over the union of the ranges (extrapolating)."""
    fa = np.polyint(np.polyfit(aq, np.log(ar), min(3, len(aq) - 1)))
    ft = np.polyint(np.polyfit(tq, np.log(tr), min(3, len(tq) - 1)))
    lo, hi = min(min(aq), min(tq)), max(max(aq), max(tq))
    d = ((np.polyval(ft, hi) - np.polyval(ft, lo)) - (np.polyval(fa, hi) - np.polyval(fa, lo))) / (hi - lo)
    return float((np.exp(d) - 1) * 100)


CHECKS = {
    "pad_to_stride": check_pad_to_stride, "area_down_by": check_area_down_by, "nearest_code": check_nearest_code,
    "progvc_sparse_mask": check_progvc_sparse_mask, "logits_to_cdf": check_logits_to_cdf,
    "bpp_ladder": check_bpp_ladder, "top_k_filter": check_top_k_filter, "unigram_bits": check_unigram_bits,
    "mean_psnr": check_mean_psnr, "rate_saving_at_quality": check_rate_saving_at_quality,
    "copy_mixture": check_copy_mixture, "rdo_choice": check_rdo_choice,
    "interval_update": check_interval_update, "decode_symbol": check_decode_symbol,
    "is_truncation_safe": check_is_truncation_safe, "safe_mask_design": check_safe_mask_design,
    "expected_code": check_expected_code, "residual_tokenize": check_residual_tokenize,
    "residual_tokens_to_latent": check_residual_tokens_to_latent,
    "codebook_perplexity": check_codebook_perplexity, "bits_per_token": check_bits_per_token,
    "bd_rate_cubic": check_bd_rate_cubic,
}
