"""Attention masks over *blocks* of a GOP's token sequence.

A GOP of T frames, each tokenized into K scales, is a sequence of T*K blocks. Block (t, s) holds the
h_s*w_s tokens of frame t at scale s. A mask says which blocks a block may attend to:
``allowed[q, k] = True`` means block q may read block k. Blocks are numbered frame-major,
``block_id = t * K + s``.

Three masks (T = 3 frames, K = 3 scales; rows = query, cols = key, # = allowed)::

        var (block-causal)          infinitystar                progvc_sparse (W = 1)
        t0    t1    t2              t0    t1    t2              t0    t1    t2
       s0s1s2 s0s1s2 s0s1s2        s0s1s2 s0s1s2 s0s1s2        s0s1s2 s0s1s2 s0s1s2
  t0s0 #                      t0s0 #                      t0s0 #
  t0s1 ##                     t0s1  #                     t0s1 ##
  t0s2 ###                    t0s2   #                    t0s2 ###
  t1s0 ####                   t1s0   ##                   t1s0 #  #
  t1s1 #####                  t1s1   # #                  t1s1  # ##
  t1s2 ######                 t1s2   #  #                 t1s2   ####
  ...

* ``var``: VAR's block-causal rule in frame-major order: a block sees every block that comes before it
  and itself (``ord_k <= ord_q`` with ``ord = t*K + s``).
* ``infinitystar``: InfinityStar's default ("context_from_largest_no = 1"): a block sees itself and the
  finest scale of the previous frame; coarser scales of its own frame reach it only through its input.
* ``progvc_sparse``: a block sees its own frame at coarser-or-equal scales and the *same* scale in the
  W previous frames. ``progvc_sparse_parent`` also sees the next-coarser scale of those frames.

**Truncation safety.** A stream cut after scale k is decodable iff no block at scale s < k needs a
block at a scale >= k, i.e. iff every allowed key has ``s_key <= s_query``. ``progvc_sparse`` has this
property (so does every scale-monotone mask: ``is_truncation_safe`` is exactly that test); ``var``
and ``infinitystar`` do not (their blocks read the finest scale of the previous frame), so with them
the cut point is fixed at encode time: the codec codes such a mask frame-major (``coding_order``), sends
k scales and synthesizes the others identically on both sides.

Everything here is a pure function of integers: no model, no torch state, easy to test and to plot.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch

MASKS: dict[str, Callable[..., torch.Tensor]] = {}


def register_mask(name: str):
    def deco(fn):
        MASKS[name] = fn
        return fn
    return deco


def block_index(num_frames: int, num_scales: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Frame and scale of every block, frame-major: returns (t_B, s_B) with B = T*K."""
    t_B = torch.arange(num_frames).repeat_interleave(num_scales)
    s_B = torch.arange(num_scales).repeat(num_frames)
    return t_B, s_B


@register_mask("var")
def var_mask(num_frames: int, num_scales: int, window: int = 1) -> torch.Tensor:
    """VAR block-causal: allowed iff t_k*K + s_k <= t_q*K + s_q. (``window`` is ignored.)"""
    order_B = torch.arange(num_frames * num_scales)
    return order_B[None, :] <= order_B[:, None]


@register_mask("infinitystar")
def infinitystar_mask(num_frames: int, num_scales: int, window: int = 1) -> torch.Tensor:
    """Itself, plus the finest scale of the previous frame. (``window`` is ignored.)"""
    t_B, s_B = block_index(num_frames, num_scales)
    tq, sq = t_B[:, None], s_B[:, None]
    tk, sk = t_B[None, :], s_B[None, :]
    same_block = (tq == tk) & (sq == sk)
    prev_finest = (tk == tq - 1) & (sk == num_scales - 1)
    return same_block | prev_finest


@register_mask("progvc_sparse")
def progvc_sparse_mask(num_frames: int, num_scales: int, window: int = 1) -> torch.Tensor:
    """Same frame at coarser-or-equal scales, or the same scale in the ``window`` previous frames."""
    t_B, s_B = block_index(num_frames, num_scales)
    tq, sq = t_B[:, None], s_B[:, None]
    tk, sk = t_B[None, :], s_B[None, :]
    same_frame_coarser = (tk == tq) & (sk <= sq)
    same_scale_recent = (sk == sq) & (tk < tq) & (tk >= tq - window)
    return same_frame_coarser | same_scale_recent


@register_mask("progvc_sparse_parent")
def progvc_sparse_parent_mask(num_frames: int, num_scales: int, window: int = 1) -> torch.Tensor:
    """``progvc_sparse`` plus the next-coarser scale of the ``window`` previous frames: block (t, s) also
    reads (t', s - 1) for t - W <= t' < t (still scale-monotone, so still truncation safe)."""
    t_B, s_B = block_index(num_frames, num_scales)
    tq, sq = t_B[:, None], s_B[:, None]
    tk, sk = t_B[None, :], s_B[None, :]
    parent_recent = (sk == sq - 1) & (tk < tq) & (tk >= tq - window)
    return progvc_sparse_mask(num_frames, num_scales, window) | parent_recent


def build_mask(name: str, num_frames: int, num_scales: int, window: int = 1) -> torch.Tensor:
    """Boolean ``allowed[q, k]`` of shape (T*K, T*K) for the mask called ``name``."""
    if name not in MASKS:
        raise ValueError(f"unknown attention mask {name!r}; choose one of {sorted(MASKS)}")
    if num_frames < 1 or num_scales < 1 or window < 0:
        raise ValueError(f"need num_frames >= 1, num_scales >= 1, window >= 0; got "
                         f"{num_frames}, {num_scales}, {window}")
    return MASKS[name](num_frames, num_scales, window)


def is_truncation_safe(allowed_BB: torch.Tensor, num_scales: int) -> bool:
    """True iff every allowed key has a scale <= its query's scale (a stream can be cut anywhere)."""
    num_frames = allowed_BB.shape[0] // num_scales
    _, s_B = block_index(num_frames, num_scales)
    reads_finer = allowed_BB & (s_B[None, :] > s_B[:, None])
    return not bool(reads_finer.any())


def coding_order(allowed_BB: torch.Tensor, num_scales: int) -> list[tuple[int, int]]:
    """The order the codec visits the blocks of a GOP in.

    **Scale-major** (all frames of scale 0, then scale 1, ...) whenever the mask allows it: that is what
    lets the bitstream store scales coarse-to-fine and a stream be cut after any scale. It is valid
    iff every key of a block comes earlier (or is the block itself), which holds for every truncation
    safe mask. Otherwise **frame-major** (frame 0 scales 0..K-1, then frame 1, ...), the order VAR's
    block-causal mask was made for: a stream coded so is decodable only at the scale count it was
    encoded for (the codec synthesizes the unsent scales on both sides, see ``codec``). A mask valid in
    neither order is refused with the first block that breaks it.
    """
    num_frames = allowed_BB.shape[0] // num_scales
    scale_major = [(t, s) for s in range(num_scales) for t in range(num_frames)]
    frame_major = [(t, s) for t in range(num_frames) for s in range(num_scales)]
    problem = None
    for order in (scale_major, frame_major):
        problem = _first_violation(allowed_BB, num_scales, order)
        if problem is None:
            return order
    (t, s), (tk, sk) = problem
    raise ValueError(f"this mask lets block (t={t}, s={s}) read block (t={tk}, s={sk}), which neither "
                     "scale-major nor frame-major coding has decoded by then; no coding order fits it")


def _first_violation(allowed_BB, num_scales, order):
    position = {blk: i for i, blk in enumerate(order)}
    for (t, s) in order:
        for k in torch.nonzero(allowed_BB[t * num_scales + s]).flatten().tolist():
            if position[(k // num_scales, k % num_scales)] > position[(t, s)]:
                return (t, s), (k // num_scales, k % num_scales)
    return None


def decode_order(allowed_BB: torch.Tensor, num_scales: int) -> list[tuple[int, int]]:
    """Scale-major order, checked: raises if the mask is not valid in it (see ``coding_order``)."""
    num_frames = allowed_BB.shape[0] // num_scales
    order = [(t, s) for s in range(num_scales) for t in range(num_frames)]
    problem = _first_violation(allowed_BB, num_scales, order)
    if problem is not None:
        (t, s), (tk, sk) = problem
        raise ValueError(
            f"this mask lets block (t={t}, s={s}) read block (t={tk}, s={sk}), which scale-major coding "
            "has not decoded yet; the codec needs a truncation-safe mask such as 'progvc_sparse'")
    return order


def token_mask(allowed_BB: torch.Tensor, block_lengths: Sequence[int]) -> torch.Tensor:
    """Expand a block mask to tokens: (L, L) with L = sum of block lengths (frame-major blocks)."""
    sizes = torch.as_tensor(list(block_lengths))
    block_of_token_L = torch.repeat_interleave(torch.arange(len(sizes)), sizes)
    return allowed_BB[block_of_token_L][:, block_of_token_L]


def attention_cost(allowed_BB: torch.Tensor, scale_lengths: Sequence[int]) -> int:
    """Number of (query token, key token) pairs the mask lets attention compute.

    ``scale_lengths[s] = h_s * w_s``. Compare masks by this count: it is what attention costs.
    """
    num_scales = len(scale_lengths)
    num_frames = allowed_BB.shape[0] // num_scales
    len_B = torch.as_tensor(list(scale_lengths), dtype=torch.int64).repeat(num_frames)
    return int((allowed_BB.to(torch.int64) * len_B[:, None] * len_B[None, :]).sum())
