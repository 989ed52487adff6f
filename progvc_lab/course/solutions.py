"""Reference solutions of the notebook exercises (one function per exercise).

Look here after you tried: ``progvc_lab.course.show_solution("nearest_code")`` prints one of them.
Each solution is the short, readable version of what the package does somewhere (the docstring says
where), so the exercise and the codec agree by construction.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F


# ---- 01 video and tokenizer ---------------------------------------------------------------------------
def pad_to_stride(x_NCHW: torch.Tensor, stride: int) -> torch.Tensor:
    """Pad frames on the bottom and right (replicating the edge pixels) so H and W become multiples
    of ``stride``. Frames that already fit come back unchanged. (``ConvTokenizer.encode``)"""
    H, W = x_NCHW.shape[-2:]
    pad_h, pad_w = -H % stride, -W % stride
    if pad_h == 0 and pad_w == 0:
        return x_NCHW
    return F.pad(x_NCHW, (0, pad_w, 0, pad_h), mode="replicate")


# ---- 02 multi-scale quantizer ---------------------------------------------------------------------------
def area_down_by(x_NChw: torch.Tensor, factor: int) -> torch.Tensor:
    """Average non-overlapping ``factor x factor`` cells: (N, C, h, w) -> (N, C, h/f, w/f).
    (``quantizer.area_down`` for sizes that divide evenly)"""
    N, C, h, w = x_NChw.shape
    return x_NChw.reshape(N, C, h // factor, factor, w // factor, factor).mean(dim=(3, 5))


def nearest_code(r_NChw: torch.Tensor, codebook_VC: torch.Tensor) -> torch.Tensor:
    """Index (N, h, w) int64 of the codebook row closest (L2) to each latent vector; lowest index on
    ties. (``MultiScaleResidualQuantizer.nearest_code``)"""
    N, C, h, w = r_NChw.shape
    r_LC = r_NChw.permute(0, 2, 3, 1).reshape(-1, C)        # one row per position
    dist_LV = torch.cdist(r_LC, codebook_VC) ** 2
    return dist_LV.argmin(dim=1).view(N, h, w)


# ---- 03 context model and masks ---------------------------------------------------------------------------
def progvc_sparse_mask(num_frames: int, num_scales: int, window: int = 1) -> torch.Tensor:
    """allowed[q, k] over blocks numbered t * K + s: same frame at a coarser-or-equal scale, or the same
    scale in one of the ``window`` previous frames. (``masks.progvc_sparse_mask``)"""
    B = num_frames * num_scales
    allowed = torch.zeros(B, B, dtype=torch.bool)
    for tq in range(num_frames):
        for sq in range(num_scales):
            for tk in range(num_frames):
                for sk in range(num_scales):
                    same_frame_coarser = tk == tq and sk <= sq
                    same_scale_recent = sk == sq and tq - window <= tk < tq
                    allowed[tq * num_scales + sq, tk * num_scales + sk] = same_frame_coarser or same_scale_recent
    return allowed


# ---- 04 entropy coding ---------------------------------------------------------------------------------------
def logits_to_cdf(logits_LV: torch.Tensor) -> torch.Tensor:
    """Integer CDFs (L, V+1) int64 that sum to 2^16, every symbol >= 1 count. (``entropy.logits_to_cdf``)"""
    total = 1 << 16
    L, V = logits_LV.shape
    p_LV = torch.softmax(logits_LV.double(), dim=-1)
    freq_LV = torch.floor(p_LV * (total - V)).long() + 1
    freq_LV[torch.arange(L), p_LV.argmax(-1)] += total - freq_LV.sum(-1)
    return torch.cat([torch.zeros(L, 1, dtype=torch.long), freq_LV.cumsum(-1)], dim=-1)


# ---- 05 progressive truncation ----------------------------------------------------------------------------------
def bpp_ladder(bytes_per_scale: list[int], header_bytes: int, num_frames: int, height: int,
               width: int) -> list[float]:
    """bpp of the stream cut after k = 1..K scales: (header + chunks of scales < k) * 8 / pixels."""
    pixels = num_frames * height * width
    out, total = [], header_bytes
    for b in bytes_per_scale:
        total += b
        out.append(total * 8 / pixels)
    return out


# ---- 06 detail sampler -----------------------------------------------------------------------------------------
def top_k_filter(logits_LV: torch.Tensor, k: int) -> torch.Tensor:
    """Keep the k largest logits of every row, set the rest to -inf (ties with the k-th are kept);
    k = 0 or k >= V keeps everything. (``DetailSampler.choose``)"""
    if k <= 0 or k >= logits_LV.shape[-1]:
        return logits_LV.clone()
    kth_L1 = logits_LV.topk(k, dim=-1).values[:, -1:]
    return logits_LV.masked_fill(logits_LV < kth_L1, float("-inf"))


# ---- 07 swapping a stage ---------------------------------------------------------------------------------------
def unigram_bits(tokens: torch.Tensor, codebook_size: int) -> float:
    """Total bits to code ``tokens`` with their own static histogram: -sum_i n_i log2(n_i / N).
    (the "oracle" baseline of ``Codec.analyze``)"""
    counts = torch.bincount(tokens.flatten(), minlength=codebook_size).double()
    counts = counts[counts > 0]
    return float(-(counts * torch.log2(counts / counts.sum())).sum())


# ---- 08 evaluation ----------------------------------------------------------------------------------------------
def mean_psnr(a_T3HW: torch.Tensor, b_T3HW: torch.Tensor) -> float:
    """PSNR in dB of every frame (values in [0, 1]), then the mean over frames. (``metrics.psnr``)"""
    mse_T = ((a_T3HW.double() - b_T3HW.double()) ** 2).flatten(1).mean(1)
    return float((10 * torch.log10(1.0 / mse_T)).mean())


def rate_saving_at_quality(anchor_bpp, anchor_psnr, test_bpp, test_psnr, target_psnr: float) -> float:
    """Percent rate the test codec needs against the anchor at one PSNR (negative = saves rate).

    Each curve: interpolate log(bpp) linearly in PSNR at ``target_psnr`` (points sorted by PSNR).
    BD-rate (``metrics.bd_rate``) averages this over the PSNR range both curves cover.
    """
    def log_rate_at(bpp, psnr):
        order = np.argsort(psnr)
        return np.interp(target_psnr, np.asarray(psnr, float)[order], np.log(np.asarray(bpp, float)[order]))

    return float((math.exp(log_rate_at(test_bpp, test_psnr) - log_rate_at(anchor_bpp, anchor_psnr)) - 1) * 100)


# ---- 09 temporal copy and RDO -------------------------------------------------------------------------------------
def copy_mixture(logits_LV: torch.Tensor, prev_L: torch.Tensor, gate_L: torch.Tensor) -> torch.Tensor:
    """Copy-aware probabilities (L, V) float64: ``g * onehot(prev) + (1 - g) * softmax(logits)`` per row,
    prev = frame t-1's token at that position, g = the copy gate. (``entropy.logits_to_cdf`` with
    ``copy_symbols`` and ``gate``)"""
    p_LV = torch.softmax(logits_LV.double(), dim=-1)
    g_L1 = gate_L.double().reshape(-1, 1)
    onehot_LV = F.one_hot(prev_L.long(), p_LV.shape[1]).double()
    return g_L1 * onehot_LV + (1 - g_L1) * p_LV


def rdo_choice(dist_LV: torch.Tensor, bits_LV: torch.Tensor, prev_L, lam: float, area: float,
               candidates: int) -> torch.Tensor:
    """The RD-optimised token of every position (L,) int64: among the ``candidates`` nearest codes
    (smallest ``dist``) and frame t-1's token ``prev_L`` (None in an intra frame), the one minimising
    ``area * dist + lam * bits``; lowest index on ties. (``codec._TokenChooser.choose``)"""
    cost_LV = area * dist_LV.double() + lam * bits_LV.double()
    allowed_LV = torch.zeros_like(cost_LV, dtype=torch.bool)
    allowed_LV.scatter_(1, dist_LV.topk(candidates, dim=1, largest=False).indices, True)
    if prev_L is not None:
        allowed_LV[torch.arange(len(prev_L)), prev_L.long()] = True
    return cost_LV.masked_fill(~allowed_LV, float("inf")).argmin(dim=1)


# ---- 10 arithmetic coding from scratch ------------------------------------------------------------------------------
def interval_update(low: int, high: int, cdf_lo: int, cdf_hi: int, total: int) -> tuple[int, int]:
    """Narrow the inclusive interval [low, high] to the share [cdf_lo, cdf_hi) of ``total`` counts.
    (``course.arithmetic.interval_update``; torchac computes the same integers)"""
    span = high - low + 1
    return low + span * cdf_lo // total, low + span * cdf_hi // total - 1


def decode_symbol(value: int, low: int, high: int, cdf_row: list[int], total: int) -> int:
    """The symbol whose share of [low, high] holds ``value``. (``course.arithmetic.decode_symbol``)"""
    span = high - low + 1
    target = ((value - low + 1) * total - 1) // span     # largest count c with low + span*c//total <= value
    v = 0
    while cdf_row[v + 1] <= target:                      # linear search; bisect does it in log V steps
        v += 1
    return v


# ---- 11 unsafe masks ------------------------------------------------------------------------------------------
def is_truncation_safe(allowed_BB: torch.Tensor, num_scales: int) -> bool:
    """No allowed key at a finer scale than its query (blocks frame-major, id = t * K + s).
    (``masks.is_truncation_safe``)"""
    B = allowed_BB.shape[0]
    s_B = torch.arange(B) % num_scales                        # the scale of every block
    reads_finer = allowed_BB & (s_B[None, :] > s_B[:, None])  # [query, key]: key finer than query
    return not bool(reads_finer.any())


def safe_mask_design(num_frames: int, num_scales: int, window: int = 1) -> torch.Tensor:
    """One safe design with temporal context: the own frame at coarser-or-equal scales, and in the
    ``window`` previous frames the same scale AND the next coarser one (more context than progvc_sparse,
    still truncation safe and decodable scale-major)."""
    B = num_frames * num_scales
    t_B = torch.arange(B) // num_scales
    s_B = torch.arange(B) % num_scales
    tq, sq, tk, sk = t_B[:, None], s_B[:, None], t_B[None, :], s_B[None, :]
    own_frame = (tk == tq) & (sk <= sq)
    recent = (tk < tq) & (tk >= tq - window) & (sk <= sq) & (sk >= sq - 1)
    return own_frame | recent


# ---- 12 build a stage -------------------------------------------------------------------------------------------
def expected_code(probs_LV: torch.Tensor, codebook_VC: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """The expected code vector per position, sum_v p(v) e_v: (L, V) probabilities (positions row-major)
    -> (C, h_s, w_s). (``MultiScaleResidualQuantizer.expected_code``, the ``mean`` fill)"""
    z_LC = probs_LV.to(codebook_VC.dtype) @ codebook_VC
    return z_LC.T.reshape(codebook_VC.shape[1], *size)


def residual_tokenize(q, f_NChw: torch.Tensor) -> list[torch.Tensor]:
    """VAR's residual loop: per scale, area-down what is still missing, take the nearest codes, subtract
    what they add back at full size. (``MultiScaleResidualQuantizer._residual_loop``)"""
    from ..stages.quantizer import area_down

    latent_hw = tuple(f_NChw.shape[-2:])
    f_rest = f_NChw
    tokens = []
    for s, size in enumerate(q.schedule(latent_hw)):
        idx = q.nearest_code(area_down(f_rest, size))           # (N, h_s, w_s)
        f_rest = f_rest - q.scale_contribution(idx, s, latent_hw)
        tokens.append(idx)
    return tokens


def residual_tokens_to_latent(q, tokens: list[torch.Tensor], latent_hw: tuple[int, int], upto: int) -> torch.Tensor:
    """f_hat from the first ``upto`` scales: the sum of their contributions, coarse to fine, starting
    from zeros (the order matters for bit-identical floats). (``MultiScaleResidualQuantizer.tokens_to_latent``)"""
    f_hat = torch.zeros(tokens[0].shape[0], q.latent_dim, *latent_hw)
    for s in range(upto):
        f_hat = f_hat + q.scale_contribution(tokens[s], s, latent_hw)
    return f_hat


# ---- 13 train from scratch -------------------------------------------------------------------------------------
def codebook_perplexity(counts_V: torch.Tensor) -> float:
    """exp(entropy) of the code-usage distribution: how many codes are effectively in use (1 = one code,
    V = all equally). Unused codes contribute 0 (0 log 0 = 0). (``train/codebook_perplexity``)"""
    p = counts_V.double() / counts_V.double().sum()
    p = p[p > 0]
    return float(torch.exp(-(p * p.log()).sum()))


def bits_per_token(logits_BLV: torch.Tensor, targets_BL: torch.Tensor) -> float:
    """Mean cross-entropy of the targets under softmax(logits) in BITS per token: the number the context
    model is trained to lower (``train/bits_per_token``)."""
    logp = torch.log_softmax(logits_BLV.double(), dim=-1)
    nll = -logp.gather(-1, targets_BL.unsqueeze(-1)).squeeze(-1)
    return float(nll.mean() / math.log(2))


# ---- 14 against classical codecs -----------------------------------------------------------------------------------
def bd_rate_cubic(anchor_rates, anchor_psnr, test_rates, test_psnr) -> float:
    """Bjøntegaard's BD-rate in percent: fit log(rate) as a cubic in PSNR for each curve, integrate both
    over the PSNR range they share, exp(mean difference) - 1. (``metrics.bd_rate(..., piecewise=False)``;
    the package's default, ``bd_rate_report``, integrates a PCHIP interpolant instead)"""
    fits = []
    for r, q in ((anchor_rates, anchor_psnr), (test_rates, test_psnr)):
        q = np.asarray(q, float)
        fits.append((q, np.polyint(np.polyfit(q, np.log(np.asarray(r, float)), min(3, len(q) - 1)))))
    lo = max(q.min() for q, _ in fits)
    hi = min(q.max() for q, _ in fits)
    (_, pa), (_, pt) = fits
    mean_diff = ((np.polyval(pt, hi) - np.polyval(pt, lo)) - (np.polyval(pa, hi) - np.polyval(pa, lo))) / (hi - lo)
    return float((np.exp(mean_diff) - 1) * 100)


ALL = ["pad_to_stride", "area_down_by", "nearest_code", "progvc_sparse_mask", "logits_to_cdf", "bpp_ladder",
       "top_k_filter", "unigram_bits", "mean_psnr", "rate_saving_at_quality",
       "copy_mixture", "rdo_choice", "interval_update", "decode_symbol",
       "is_truncation_safe", "safe_mask_design", "expected_code", "residual_tokenize",
       "residual_tokens_to_latent", "codebook_perplexity", "bits_per_token",
       "bd_rate_cubic"]


# ---- written questions: model answers (``show_answer("name")``) ------------------------------------------------------
ANSWERS = {
    "q14_same_bytes": """
At the same bytes x264 and x265 give a far higher PSNR, MS-SSIM and a lower ST-LPIPS than the tiny model
at every k where they can match the bytes at all: decades of engineering (motion compensation, transforms
tuned to the signal, rate control) against a model trained for minutes on a CPU. What they cannot do is
one encode cut to any size: each of their points is a separate encode, and below CRF 51's size they
stop, while the truncated stream keeps decoding (to layouts rather than video).""",
    "q13_two_stages": """
Stage 2 changes how many bits the same tokens cost, never which tokens there are: the tokenizer and the
quantizer (stage 1) fix the token pyramid and hence every decoded picture; the context model only puts
probabilities on those tokens for the arithmetic coder. So stage 1 can be trained first for picture
quality and frozen, and stage 2 trained afterwards on its tokens by cross-entropy, which is exactly the
code length. (The shipped model is trained this way: configs/tiny_stage1.yaml, then tiny_stage2.yaml.)""",
    "q13_train_vs_test": """
The training curve is measured on the frames the model is fitted to: a small model can memorise their
tokens (bits per token fall towards zero) without predicting new frames any better. The test frames
(frames 0-7, never seen in training) measure what a stream of new video will cost; when the training
loss keeps falling and the test loss stalls or rises, the model is overfitting.""",
    "q12_bit_identical": """
Your tokens_to_latent runs on both sides: the encoder builds the context-model input of every block
from it, and so does the decoder. If your sum differs from the package's in the last bit (another order
of additions, float64 in one place), the two sides still agree with each other as long as BOTH run your
code, but a stream made by the package would no longer decode with your quantizer, and vice versa:
the logits differ a little, now and then an integer count differs, and the arithmetic decoder
desynchronises. allclose is not enough for anything the entropy coder depends on.""",
    "q12_mean_vs_zero": """
The expected code is the model's minimum-MSE guess of each missing residual in latent space, so it beats
zero where the model knows something (its probabilities are peaked, e.g. on static areas). Where the
model is unsure the expected code is a blur of many codes, close to zero, and where it is miscalibrated
the guess can be worse than zero: the squared error in latent space is not the error in pixels after
the tokenizer's nonlinear decoder, and phi_s is applied to a mean, not to a code it was trained on.""",
    "q11_why_var_breaks": """
Under VAR's block-causal mask, frame-major, block (t, 0) attends to every block of frame t-1, including
its finest scales. A stream cut after k scales does not carry those, so the decoder has to guess them;
its block (t, 0) then sees other keys than the encoder's did, computes other logits and other integer
CDFs, and the arithmetic decoder desynchronises (notebook 10). Frame 0 decodes right (it reads only its
own coarser scales); from frame 1 on the tokens are garbage. The cut point of a VAR stream would have
to be fixed at encode time.""",
    "q11_what_safe_costs": """
Safety forbids exactly one kind of context: a finer scale of an earlier frame. That is the most
informative context for the fine scales (frame t-1's detail predicts frame t's detail), which is why
ProGVC feeds frame t-1's same-scale tokens in as an input and lets a block attend to the same scale of
recent frames. What is lost is the coarse blocks peeking at the previous frame's detail; they are cheap
anyway. The price is small in bits and buys a stream that can be cut anywhere.""",
    "q10_same_bytes": """
Our coder and torchac write the same bytes because they are the same algorithm with the same integer
arithmetic: a 32-bit interval narrowed by floor(span * cdf / 2^16), the same renormalisation (E1/E2 and
the pending-bit E3 rule) and the same two-bit termination. Nothing in arithmetic coding is random or
approximate once the CDF is integer: equal counts in, equal bytes out. That is also why the decoder must
see exactly the encoder's counts.""",
    "q10_no_error": """
A changed count only matters if the decoder uses it: it moves the boundaries of the symbols between
the two whose counts changed, so if the coded symbol's own share did not move, or the block ends a few
symbols later (a 1x1 or 2x2 block has 1-4 symbols), the decode can still come out right. When it does
not, nothing in the arithmetic notices: every interval is a valid interval, every garbage symbol a valid
symbol. Only a check computed by the encoder over what it coded (the chunk CRC of the tokens) can tell.""",
    "q10_streaming": """
torchac (and our coder) terminate every call: ~2 bits plus padding to a whole byte, about 5 bits on
average, per block; a GOP of 8 frames x 6 scales pays it 48 times. A streaming coder keeps one interval
open across all blocks of a chunk and terminates once, so the 1x1 and 2x2 blocks (whose model bits are
below one byte) stop paying several times their own bits. It needs the decoder to produce each block's
CDFs before the next block's bits are read, which the codec's walk already does (block by block).""",
}
