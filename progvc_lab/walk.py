"""The coding walk: the ONE order in which the blocks of a GOP are visited, and what each block sees.

Encoder, decoder, detail sampler and every analysis tool (``analyze``, the bits heatmap, the copy-gate
trace, ``bench``, the course) consume the same generator, so they compute the same logits and the same
integer CDFs by construction::

    walk = codec.walk(latent_hw, schedule, n_frames)        # a fresh coding state for one GOP
    for block in walk.blocks(range(K)):                     # scale-major: (t=0, s=0), (1, 0), ..., (T-1, K-1)
        block.logits   # (L, V) the context model's output for block (t, s), L = h_s * w_s
        block.cdf      # (L, V + 1) int16 integer CDFs exactly as coded (copy gate included)
        block.symbols = ...    # the consumer decides the tokens: chosen (encoder), decoded, sampled
        block.bits     # (L,) float64 model bits -log2 p(symbol) of each token under block.cdf

The consumer must set ``block.symbols`` before asking for the next block: the tokens of block (t, s)
are context for all later blocks (frame t+1 at scale s reads them as "previous tokens", finer scales
read them through f_hat).

**f_hat, scale by scale.** The context input of scale s is f_hat of the scales < s, area-down to
(h_s, w_s). The walk accumulates f_hat as the scales complete (``f_hat += phi_s(up(codebook[tokens_s]))``)
instead of rebuilding it from all coarser scales at every scale; the additions happen in the same
order as ``Quantizer.tokens_to_latent`` (from zeros, scale 0 first), so the numbers are bit-identical
to ``Quantizer.context_input`` (tested). ``blocks(..., contribution=f)`` lets the decoder's latent fill
add code vectors that are not codebook entries (the ``mean`` sampler's expected codes) instead.

**Copy-aware probabilities** (``copy_gate``, recorded in the stream header). For block (t, s), t > 0,
the coded distribution is ``g * onehot(prev) + (1 - g) * softmax(logits)`` where prev is frame t-1's
token at the same scale and position. The gate is a count kept identically by encoder and decoder, a
hit being a token equal to its predecessor, **backed off** from fine to coarse (``copy_rate``):

    r_s = (hits_s + M p_s) / (seen_s + M),   p_s = (hits_<s + 2) / (seen_<s + 3),   M = COPY_BACKOFF = 2

where hits_s / seen_s count scale s's copies over the GOP's earlier P frames 1..t-1, and p_s pools the
coarser scales j < s over frames 1..t (frame t's are already coded; p_0 = 2/3, COPY_PRIOR). A scale with no
history yet (the first P frame) starts from the copy rate of the coarser scales of the same frame, and
its own count takes over as it grows. ``"count"``: ``g = r_s``, one gate per block; ``"context"``:
9 counts per scale, by "was frame t-1's token here a copy" x "was the co-located token one scale
coarser in frame t a copy" (each 0 / 1 / unknown), each backed off to the block's rate,
``g = (hits_c + M r_s) / (seen_c + M)``; ``"learned"``: per token, ``g = sigmoid(z - mean_block(z) +
logit(r_s))``, ``z`` the correction the gate head of a ``gate_head=True`` context model predicts for the
token (trained in stage 2 with ``copy_mixture_nll`` on the same ``r_s``, ``copy_training_targets``).
Centred over the block, the head only says which of the block's tokens are more or less likely to
repeat; the count, which adapts to the stream, keeps the block's copy rate. ``"none"``: off. The gate of
scale s reads only tokens of scales <= s (and, for ``"learned"``, the block's own logits' input), so
truncation safety is untouched; it reads frame t's coarser scales, which both walk orders have coded.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

import torch

import numpy as np

from .stages.entropy import TOTAL, logits_to_cdf, symbol_bits
from .stages.masks import coding_order
from .stages.quantizer import area_down

COPY_GATES = ("none", "count", "context", "learned")   # "learned": a context model with a gate head
COPY_PRIOR = (2, 3)             # the rate a / b the backed-off counts start from (see copy_rate)
COPY_BACKOFF = 2.0              # M: how many tokens' worth of weight the coarser estimate gets
GATE_MAX = 1.0 - 2.0 ** -20     # a learned gate stays below 1 (the other symbols keep the CDF's minimum count)


def has_gate_head(context_model) -> bool:
    """True when the context model predicts a learned copy gate (``ContextModel(gate_head=True)``)."""
    return getattr(context_model, "gate", None) is not None


def centred(z: torch.Tensor) -> torch.Tensor:
    """A block's learned gate corrections (L,) minus their mean, float64: the head redistributes the copy
    probability between the block's tokens, the count keeps the block's rate (as in training,
    ``context_model.centre_per_block``). Same function of the same floats on both sides of the coder."""
    z = z.double()
    return z - z.mean()


def copy_rate(hits: list, seen: list) -> torch.Tensor:
    """The backed-off copy rate ``r_s`` of the module docstring from scales 0..s's counts (coarse
    first; ints or (B,) tensors), float64. Same function of the same integers on both sides of the coder."""
    a, b = COPY_PRIOR
    coarse_h, coarse_n = sum(hits[:-1]), sum(seen[:-1])
    pooled = (torch.as_tensor(coarse_h, dtype=torch.float64) + a) / (torch.as_tensor(coarse_n, dtype=torch.float64) + b)
    return (torch.as_tensor(hits[-1], dtype=torch.float64) + COPY_BACKOFF * pooled) / (
        torch.as_tensor(seen[-1], dtype=torch.float64) + COPY_BACKOFF)


def rate_logit(r: torch.Tensor) -> torch.Tensor:
    """``log(r) - log(1 - r)``, float64: the learned gate's offset."""
    return r.log() - (1 - r).log()


def copy_training_targets(tokens: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """For training a gate head on teacher-forced GOPs ``tokens[s]`` (B, T, h_s, w_s): the previous
    frame's token of every token, (B, L) int64 (-1 in frame 0), and the logit of the backed-off count
    rate ``r_s`` it would be coded with, (B, L) float64 (0 in frame 0), both in ``ContextModel.forward``'s
    frame-major order. The counts are the walk's (``GopWalk._copy_context``; tested block for block)."""
    B, T = tokens[0].shape[:2]
    cum = []   # per scale: (B, T) copies over frames 1..t, and (T,) tokens seen
    for tok in tokens:
        L = tok[0, 0].numel()
        same = (tok[:, 1:] == tok[:, :-1]).flatten(2).sum(-1) if T > 1 else tok.new_zeros(B, 0)   # (B, T-1)
        cum.append((torch.cat([same.new_zeros(B, 1), same.cumsum(1)], 1), torch.arange(T, device=tok.device) * L))
    prev_parts, logit_parts = [], []
    for t in range(T):
        for s, tok in enumerate(tokens):
            L = tok[0, 0].numel()
            if t == 0:
                prev_parts.append(torch.full((B, L), -1, dtype=torch.long, device=tok.device))
                logit_parts.append(torch.zeros(B, L, dtype=torch.float64, device=tok.device))
                continue
            hits = [cum[j][0][:, t] for j in range(s)] + [cum[s][0][:, t - 1]]
            seen = [cum[j][1][t] for j in range(s)] + [cum[s][1][t - 1]]
            prev_parts.append(tok[:, t - 1].reshape(B, L).long())
            logit_parts.append(rate_logit(copy_rate(hits, seen)).to(tok.device)[:, None].expand(B, L))
    return torch.cat(prev_parts, 1), torch.cat(logit_parts, 1)


class WalkError(RuntimeError):
    """The walk was driven wrongly (a block's symbols not set, scales out of order)."""


_M64 = np.uint64(0xFFFFFFFFFFFFFFFF)


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64 (Steele, Lea, Flood 2014) on uint64 arrays: a fixed, portable integer hash."""
    with np.errstate(over="ignore"):
        x = (x + np.uint64(0x9E3779B97F4A7C15)) & _M64
        x = ((x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)) & _M64
        x = ((x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)) & _M64
        return x ^ (x >> np.uint64(31))


def synthesize(cdf_LV1: torch.Tensor, gop: int, t: int, s: int) -> torch.Tensor:
    """Seeded sampling from integer CDFs: one token per row, (L,) int64, a pure function of the CDF
    and (gop, t, s), identical on every machine (integer hash, integer CDF, no float).

    How a stream made with a mask that is not truncation safe stands in for the scales it does not
    send: encoder and decoder both draw them with this function, so the blocks that read them see
    the same tokens on both sides. Token i of block (gop, t, s) takes u = the top 16 bits of
    SplitMix64(key(gop, t, s) + i) and picks the symbol v with cdf[v] <= u < cdf[v + 1]."""
    L = cdf_LV1.shape[0]
    key = _splitmix64(np.array([(gop << 40) ^ (t << 16) ^ s], dtype=np.uint64))[0]
    with np.errstate(over="ignore"):
        u = _splitmix64(key + np.arange(L, dtype=np.uint64)) >> np.uint64(64 - 16)
    u_L1 = torch.from_numpy(u.astype(np.int64)).reshape(L, 1)
    assert TOTAL == 1 << 16
    return (cdf_LV1[:, 1:] <= u_L1).sum(1)


@dataclass(eq=False)
class Block:
    """One block (GOP ``gop``, frame ``t`` of the GOP, scale ``s``) of the coding walk."""
    gop: int
    t: int
    s: int
    start: int                          # first frame of the GOP in the video
    logits: torch.Tensor                # (L, V) float32
    walk: "GopWalk" = field(repr=False)
    symbols: torch.Tensor | None = None  # (L,) int64, set by the consumer
    _cdf: torch.Tensor | None = field(default=None, repr=False)

    @property
    def frame(self) -> int:
        """The block's frame in the video."""
        return self.start + self.t

    @property
    def shape(self) -> tuple[int, int]:
        """(h_s, w_s) of the block's token map."""
        return tuple(self.walk.schedule[self.s])

    @property
    def prev(self) -> torch.Tensor | None:
        """Frame t-1's tokens at this scale, (L,), or None in the GOP's intra frame."""
        return self.walk.state.tokens[(self.t - 1, self.s)].flatten() if self.t > 0 else None

    @property
    def gate(self) -> torch.Tensor | None:
        """The copy gate g of every token (L,) float64 the CDF was built with, or None (intra frame, off)."""
        copy = self.walk.state.copy.get((self.t, self.s))
        return None if copy is None else copy[1]

    @property
    def cdf(self) -> torch.Tensor:
        """The integer CDFs (L, V + 1) the block is coded with: ``logits_to_cdf`` plus the copy gate."""
        if self._cdf is None:
            copy = self.walk.state.copy.get((self.t, self.s))
            self._cdf = logits_to_cdf(self.logits) if copy is None else \
                logits_to_cdf(self.logits, copy_symbols=copy[0], gate=copy[1])
        return self._cdf

    @property
    def bits(self) -> torch.Tensor:
        """Model bits of each token, -log2 p(symbol) under ``cdf``: (L,) float64 (what the coder pays,
        up to its termination)."""
        if self.symbols is None:
            raise WalkError(f"block ({self.t}, {self.s}): set block.symbols before asking for its bits")
        return symbol_bits(self.cdf, self.symbols)

    @property
    def model_bits(self) -> float:
        return float(self.bits.sum())

    @property
    def sent(self) -> bool:
        """False for a block of a scale the stream does not carry (s >= ``walk.sent``): its tokens are
        ``synthesize``-d on both sides (only streams of masks that are not truncation safe have these)."""
        return self.s < self.walk.sent

    def synthesize(self) -> torch.Tensor:
        """The seeded sample from ``cdf`` that stands in for an unsent block (see ``synthesize``)."""
        return synthesize(self.cdf, self.gop, self.t, self.s)


class GopWalk:
    """The coding state of one GOP and the generator of its blocks (see the module docstring).

    ``tokens[s][t]``: the (h_s, w_s) tokens of block (t, s) once known; ``token_map(s)`` stacks a
    complete scale, (n, h_s, w_s). ``state``: the context model's ``CodingState`` (keys/values of the
    coded blocks, copy-gate counts).
    """

    def __init__(self, context_model, quantizer, latent_hw, schedule, n_frames: int, *, copy_gate: str = "count",
                 gop: int = 0, start: int = 0, sent: int | None = None):
        if copy_gate not in COPY_GATES:
            raise ValueError(f"unknown copy gate {copy_gate!r}; choose one of {COPY_GATES}")
        if copy_gate == "learned" and not has_gate_head(context_model):
            raise ValueError("copy gate 'learned' needs a context model with a gate head (gate_head=True, "
                             "trained in stage 2, e.g. the shipped 'tiny-gate'); this model has none")
        self.context_model, self.quantizer = context_model, quantizer
        self.latent_hw, self.schedule = tuple(latent_hw), [tuple(x) for x in schedule]
        self.n, self.gop, self.start = n_frames, gop, start
        self.state = context_model.new_state(self.latent_hw, self.schedule, n_frames)
        self.state.copy_gate = copy_gate
        K = len(self.schedule)
        self.order = coding_order(self.state.allowed_BB, K)   # raises if no order fits the mask
        self.frame_major = n_frames > 1 and K > 1 and self.order[1] == (0, 1)
        self.sent = K if sent is None else sent              # scales the stream carries
        if not 0 <= self.sent <= K:
            raise ValueError(f"a walk over {K} scales cannot send {self.sent}")
        self.tokens: list[list[torch.Tensor | None]] = [[None] * n_frames for _ in self.schedule]
        self.next_scale = 0              # the walk continues at this scale
        self._f_hat = None               # f_hat of the first _f_hat_scales scales, (n, C, h, w)
        self._f_hat_scales = 0
        self._contributions: dict[int, Callable | None] = {}
        self._frame_f_hat: dict[int, tuple[int, torch.Tensor]] = {}   # frame-major: t -> (scales, f_hat)

    # ---- the walk ---------------------------------------------------------------------------------
    def blocks(self, scales: Iterable[int], contribution: Callable[[int], torch.Tensor | None] | None = None
               ) -> Iterator[Block]:
        """Yield the blocks of ``scales`` (consecutive, continuing where the walk stopped), frame by
        frame within a scale. After each yield the consumer must have set ``block.symbols``.

        ``contribution(s)`` -> (n, C, h, w) or None: what scale s adds to f_hat for the context of the
        finer scales (default, and when it returns None: ``phi_s(up(codebook[tokens_s]))``)."""
        scales = list(scales)
        if self.frame_major:
            yield from self._frame_major_blocks(scales)
            return
        for s in scales:
            if s != self.next_scale:
                raise WalkError(f"the walk is at scale {self.next_scale}; scales must follow on (asked for {s})")
            self._contributions[s] = contribution
            ctx_NChw = self.context(s)
            for t in range(self.n):
                yield from self._visit(t, s, ctx_NChw[t])
            self.next_scale = s + 1

    def _frame_major_blocks(self, scales):
        """Frame-major order (a mask that is not truncation safe): one pass over all scales."""
        K = len(self.schedule)
        if scales != list(range(K)) or self.next_scale != 0:
            raise WalkError(f"a frame-major walk (mask {self.context_model.config.mask!r}) visits all {K} scales "
                            "in one pass: blocks(range(K))")
        for t in range(self.n):
            for s in range(K):
                yield from self._visit(t, s, self._frame_context(t, s))
        self.next_scale = K

    def _visit(self, t: int, s: int, ctx_Chw: torch.Tensor) -> Iterator[Block]:
        """One block, in either order: logits, the copy gate's context, the consumer's symbols."""
        logits = self.context_model.block_logits(self.state, t, s, ctx_Chw)
        self.state.copy[(t, s)] = self._copy_context(t, s)
        block = Block(self.gop, t, s, self.start, logits, self)
        yield block
        self._accept(block)

    def _frame_context(self, t: int, s: int) -> torch.Tensor:
        """Frame t's f_hat of its scales < s at scale s's size (C, h_s, w_s), accumulated per frame."""
        done, f = self._frame_f_hat.get(t, (0, None))
        if f is None:
            f = torch.zeros(1, self.quantizer.latent_dim, *self.latent_hw)
        while done < s:
            f = f + self.quantizer.scale_contribution(self.tokens[done][t][None], done, self.latent_hw)
            done += 1
        self._frame_f_hat[t] = (done, f)
        size = self.schedule[s]
        return f.new_zeros(self.quantizer.latent_dim, *size) if s == 0 else area_down(f, size)[0]

    def _accept(self, block: Block):
        t, s = block.t, block.s
        h, w = self.schedule[s]
        sym = block.symbols
        if sym is None:
            raise WalkError(f"block ({t}, {s}): set block.symbols before asking for the next block")
        if sym.numel() != h * w:
            raise WalkError(f"block ({t}, {s}) has {h * w} tokens; got {sym.numel()} symbols")
        tok = sym.reshape(h, w)
        self.state.tokens[(t, s)] = tok
        self.tokens[s][t] = tok
        self._count_copies(t, s, tok)

    def token_map(self, s: int) -> torch.Tensor:
        """The tokens of scale s for every frame of the GOP, (n, h_s, w_s)."""
        if any(x is None for x in self.tokens[s]):
            raise WalkError(f"scale {s} is not complete")
        return torch.stack(self.tokens[s])

    def token_maps(self, upto: int | None = None) -> list[torch.Tensor]:
        return [self.token_map(s) for s in range(self.next_scale if upto is None else upto)]

    # ---- f_hat, accumulated scale by scale --------------------------------------------------------
    def f_hat(self, upto: int) -> torch.Tensor:
        """f_hat of the first ``upto`` (complete) scales, (n, C, h, w): accumulated, each scale added once."""
        if self._f_hat is None:
            device = self.quantizer.codebook.weight.device if hasattr(self.quantizer.codebook, "weight") else None
            self._f_hat = torch.zeros(self.n, self.quantizer.latent_dim, *self.latent_hw, device=device)
        if upto < self._f_hat_scales:
            raise WalkError(f"f_hat already holds {self._f_hat_scales} scales; cannot go back to {upto}")
        while self._f_hat_scales < upto:
            j = self._f_hat_scales
            hook = self._contributions.get(j)
            z = hook(j) if hook is not None else None
            if z is None:
                z = self.quantizer.scale_contribution(self.token_map(j), j, self.latent_hw)
            self._f_hat = self._f_hat + z
            self._f_hat_scales += 1
        return self._f_hat

    def context(self, s: int) -> torch.Tensor:
        """The context input of scale s for every frame, (n, C, h_s, w_s): f_hat of scales < s area-down
        to scale s (zeros at s = 0), equal to ``Quantizer.context_input`` of the tokens."""
        size = self.schedule[s]
        if s == 0:
            return self.f_hat(0).new_zeros(self.n, self.quantizer.latent_dim, *size)
        return area_down(self.f_hat(s), size)

    # ---- copy-aware probabilities -----------------------------------------------------------------
    def _copy_context(self, t, s):
        """(prev tokens (L,), gate (L,) float64, context ids (L,)) of block (t, s), or None (I frame / off)."""
        state = self.state
        if state.copy_gate == "none" or t == 0:
            return None
        prev = state.tokens[(t - 1, s)].flatten()
        if state.copy_gate == "context":
            # was this position's token in frame t-1 a copy (0 / 1 / 2 = unknown at t = 1), and was the
            # co-located token one scale coarser in frame t a copy (0 / 1 / 2 = none at s = 0)
            before = (prev == state.tokens[(t - 2, s)].flatten()).long() if t >= 2 else torch.full_like(prev, 2)
            up = self.parent_copied(t, s).long() if s > 0 else torch.full_like(prev, 2)
            ctx = before * 3 + up
        else:
            ctx = torch.zeros_like(prev)
        hits, seen = state.copy_counts.setdefault(s, (torch.zeros(9, dtype=torch.int64),
                                                      torch.zeros(9, dtype=torch.int64)))
        r = self.copy_rate(t, s)
        if state.copy_gate == "learned":
            z = state.gate_logits.get((t, s))
            if z is None:
                raise WalkError(f"block ({t}, {s}): the context model left no gate logits (no gate head?)")
            gate = torch.sigmoid(centred(z) + rate_logit(r)).clamp_(max=GATE_MAX)
            return prev, gate, ctx
        if state.copy_gate == "count":
            return prev, r.expand(prev.shape), ctx
        gate = (hits[ctx].double() + COPY_BACKOFF * r) / (seen[ctx].double() + COPY_BACKOFF)
        return prev, gate, ctx

    def copy_rate(self, t: int, s: int) -> torch.Tensor:
        """The backed-off count rate ``r_s`` of block (t, s), t > 0 (module docstring): scales < s counted
        over frames 1..t, scale s over frames 1..t-1. The same in either walk order."""
        cum = self.state.copy_cum
        hits, seen = [], []
        for j in range(s + 1):
            h, n = cum.get(j, [(0, 0)])[t if j < s else t - 1]
            hits.append(h), seen.append(n)
        return copy_rate(hits, seen)

    def _count_copies(self, t, s, tok):
        copy = self.state.copy.get((t, s))
        if copy is None:
            return
        prev, _, ctx = copy
        hits, seen = self.state.copy_counts[s]
        same = (tok.flatten() == prev).long()
        hits.index_add_(0, ctx, same)
        seen.index_add_(0, ctx, torch.ones_like(ctx))
        cum = self.state.copy_cum.setdefault(s, [(0, 0)])    # cum[t]: (copies, tokens) over frames 1..t
        if len(cum) != t:
            raise WalkError(f"block ({t}, {s}) counted out of order (scale {s} has {len(cum) - 1} P frames counted)")
        h, n = cum[-1]
        cum.append((h + int(same.sum()), n + same.numel()))

    def parent_copied(self, t, s) -> torch.Tensor:
        """(L,) bool: the co-located token one scale coarser is the same in frames t-1 and t (t, s > 0)."""
        state = self.state
        h, w = state.schedule[s]
        ph, pw = state.schedule[s - 1]
        same = state.tokens[(t, s - 1)] == state.tokens[(t - 1, s - 1)]
        ys = torch.arange(h) * ph // h
        xs = torch.arange(w) * pw // w
        return same[ys][:, xs].flatten()
