"""Context model: a small Transformer that predicts every token of a GOP from what the decoder knows.

A GOP of T frames x K scales is a sequence of blocks (t, s). The input of block (t, s) is, per token::

    in_proj(context_input[t, s])        # f_hat of frame t from scales < s, area-down to (h_s, w_s);
                                        #   a learned start vector at s = 0 (nothing coarser exists)
  + prev_embed(tokens[t-1, s])          # the previous frame's tokens at the same scale and position
                                        #   ("none" id V in the first frame of a GOP)
  + level_embed[s] + frame_embed[min(t, W)] + pos2d(y, x)   # where the token is; pos2d uses
                                        #   normalised coordinates, so it works for any frame size

Why the previous-frame tokens are an *input*: the hidden state of block (t-1, s) is built from frame
t-1's coarser scales only, so attending to it never shows the model frame t-1's scale-s tokens. Feeding
them in directly is what makes temporal prediction work (DESIGN.md §3).

Blocks attend to each other under a block mask (``masks.py``, default ``progvc_sparse``). Two paths
compute the same function:

* ``forward`` (training): one teacher-forced pass over the whole GOP with the token-level mask.
* ``block_logits(state, t, s, ctx)`` (coding): one block at a time, batch size 1, reading the cached
  keys/values of the blocks it may attend to. Encoder and decoder call exactly this function in
  exactly the same order, so their logits (and hence integer CDFs) are bit-identical. Never code with
  ``forward``: a different matrix shape reduces in a different order.

Two output heads (``head=``):

* ``"categorical"`` (default, the shipped model): ``nn.Linear(D, V)``, one logit per token id.
* ``"bitwise"`` (for BSQ tokens, ``bsq.py``; Infinity's head): ``nn.Linear(D, d)`` with V = 2^d, one
  logit l_i per bit of the token id (MSB first), the bits independent given the context. The model
  still returns V-ary values, the log-probabilities of the factorised distribution::

      log p(v) = sum_i [ b_i(v) logsigmoid(l_i) + (1 - b_i(v)) logsigmoid(-l_i) ]      (fixed (V, d) bits b)

  They sum to one in probability, so ``logits_to_cdf`` (a softmax), the codec, both coders and the
  training cross-entropy take them unchanged; the cross-entropy of id v is exactly the sum of the d
  per-bit binary cross-entropies (``bit_logits`` gives the l_i). Coding v with the V-ary CDF of this
  product distribution costs -log2 p(v) = the sum of the d bits' -log2 p(b_i) model bits, what d
  binary CDFs would cost (Infinity codes bits; up to the integer CDFs' rounding, which is slightly
  coarser for one V-ary CDF than for d binary ones at V = 2^12). We keep the V-ary path because it
  is the one every variant shares: one CDF function, one coder interface, one sampler, one stream
  format.
"""
from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from .masks import build_mask, token_mask
from .registry import expect_config, register


@dataclass
class ContextModelConfig:
    codebook_size: int = 512     # V
    latent_dim: int = 16         # C of the quantizer's latent
    num_scales: int = 6          # K
    width: int = 128             # transformer width D
    depth: int = 4               # number of layers
    heads: int = 4
    mlp_ratio: int = 4
    mask: str = "progvc_sparse"  # see masks.py
    window: int = 1              # W: previous frames a block may attend to (progvc_sparse)
    # output head: "categorical" (V logits) or "bitwise" (d = log2 V bit logits, see module docstring);
    # recorded only when not "categorical" (``registry.init_args``): older models keep their fingerprints
    head: str = field(default="categorical", metadata={"omit_default": True})
    # a learned copy gate (codec copy_gate "learned", see ``walk``): one more logit per token, centred
    # per block, the correction the model makes to the count gate's logit; recorded only when True
    gate_head: bool = field(default=False, metadata={"omit_default": True})

    def __post_init__(self):
        if self.head not in HEADS:
            raise ValueError(f"head must be one of {', '.join(HEADS)}, got {self.head!r}")
        if self.head == "bitwise" and (1 << (self.codebook_size.bit_length() - 1)) != self.codebook_size:
            raise ValueError(f"a bitwise head needs codebook_size = 2^d (token = d bits), got {self.codebook_size}")


HEADS = ("categorical", "bitwise")


def bits_of_ids(bits: int) -> torch.Tensor:
    """(2^d, d) float: row v = the bits of id v, MSB first (as ``bsq.bit_matrix``)."""
    ids = torch.arange(1 << bits, dtype=torch.int64)
    return ((ids[:, None] >> torch.arange(bits - 1, -1, -1)) & 1).float()


def pos2d(h: int, w: int, dim: int) -> torch.Tensor:
    """Sinusoidal code of normalised (y, x) token centres: (h*w, dim). Same values for any caller.

    A pure function of (h, w, dim), computed once per size (``_pos2d``, cached): coding asks for it in
    every block. The tensor is shared: never modify it in place."""
    return _pos2d(int(h), int(w), int(dim))


@functools.lru_cache(maxsize=64)
def _pos2d(h: int, w: int, dim: int) -> torch.Tensor:
    n = dim // 4
    freqs = (2.0 ** torch.arange(n, dtype=torch.float64)) * math.pi
    ys = (torch.arange(h, dtype=torch.float64) + 0.5) / h
    xs = (torch.arange(w, dtype=torch.float64) + 0.5) / w
    y_L = ys[:, None].expand(h, w).reshape(-1, 1) * freqs
    x_L = xs[None, :].expand(h, w).reshape(-1, 1) * freqs
    return torch.cat([y_L.sin(), y_L.cos(), x_L.sin(), x_L.cos()], dim=1).float()


class Layer(nn.Module):
    """Pre-norm Transformer layer; attention over given keys/values (+ optional boolean mask)."""

    def __init__(self, width: int, heads: int, mlp_ratio: int):
        super().__init__()
        self.heads = heads
        self.ln1, self.ln2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)
        self.mlp = nn.Sequential(nn.Linear(width, mlp_ratio * width), nn.GELU(), nn.Linear(mlp_ratio * width, width))

    def qkv_heads(self, x_BLD):
        q, k, v = rearrange(self.qkv(self.ln1(x_BLD)), "b l (qkv h d) -> qkv b h l d", qkv=3, h=self.heads)
        return q, k, v  # each (B, heads, L, D/heads): views, as view + permute gave

    def finish(self, x_BLD, att_BHLd):
        x_BLD = x_BLD + self.proj(rearrange(att_BHLd, "b h l d -> b l (h d)"))
        return x_BLD + self.mlp(self.ln2(x_BLD))

    def forward(self, x_BLD, mask_LL=None):
        q, k, v = self.qkv_heads(x_BLD)
        return self.finish(x_BLD, F.scaled_dot_product_attention(q, k, v, attn_mask=mask_LL))


@dataclass
class CodingState:
    """What encoder and decoder remember while coding one GOP, block by block."""
    latent_hw: tuple[int, int]
    schedule: list[tuple[int, int]]
    num_frames: int
    allowed_BB: torch.Tensor
    kv: dict = field(default_factory=dict)       # (t, s) -> [(k, v) per layer]
    tokens: dict = field(default_factory=dict)   # (t, s) -> (h_s, w_s) int64, once known
    copy_gate: str = "none"                      # the codec's copy gate for this GOP (codec.COPY_GATES)
    copy: dict = field(default_factory=dict)     # (t, s) -> (prev tokens, gate, context) of the block being coded
    copy_counts: dict = field(default_factory=dict)  # s -> (hits, seen) int64 per gate context
    copy_cum: dict = field(default_factory=dict)     # s -> [(copies, tokens) over P frames 1..t for t = 0, 1, ..]
    pos: dict = field(default_factory=dict)      # (h_s, w_s) -> pos_proj(pos2d): the same for every frame
    gate_logits: dict = field(default_factory=dict)  # (t, s) -> (L,) float32 learned gate correction (gate head)


@register("context_model", "transformer")
class ContextModel(nn.Module):
    """``ContextModel(mask="var", window=2)`` or ``ContextModel(ContextModelConfig(...), head="bitwise")``:
    a config, and/or its fields as keywords (they replace the config's)."""

    def __init__(self, config: ContextModelConfig | None = None, **overrides):
        super().__init__()
        expect_config(config, ContextModelConfig, type(self))
        cfg = ContextModelConfig(**overrides) if config is None else dataclasses.replace(config, **overrides)
        self.config = cfg
        build_mask(cfg.mask, 1, cfg.num_scales, cfg.window)  # fail early on an unknown mask name
        V, D, K, head = cfg.codebook_size, cfg.width, cfg.num_scales, cfg.head
        bits = V.bit_length() - 1
        self.none_id = V
        self.in_proj = nn.Linear(cfg.latent_dim, D)
        self.start = nn.Parameter(torch.randn(D) * 0.02)
        self.prev_embed = nn.Embedding(V + 1, D)
        self.level_embed = nn.Embedding(K, D)
        self.frame_embed = nn.Embedding(cfg.window + 1, D)
        self.pos_proj = nn.Linear(D, D, bias=False)
        self.layers = nn.ModuleList(Layer(D, cfg.heads, cfg.mlp_ratio) for _ in range(cfg.depth))
        self.ln_out = nn.LayerNorm(D)
        self.bits = bits if head == "bitwise" else None
        self.head = nn.Linear(D, bits if head == "bitwise" else V)
        # learned copy gate: starts at zero, i.e. exactly the count gate (``gate_logits``)
        self.gate = nn.Linear(D, 1) if cfg.gate_head else None
        if self.gate is not None:
            nn.init.zeros_(self.gate.weight), nn.init.zeros_(self.gate.bias)
        if head == "bitwise":  # the fixed bits of every id; not saved (a function of V)
            self.register_buffer("bits_Vd", bits_of_ids(bits), persistent=False)
        for emb in (self.prev_embed, self.level_embed, self.frame_embed):
            nn.init.normal_(emb.weight, std=0.02)
        # The baseline we must beat: a static per-scale token histogram, counted on the training
        # data during stage 2 (``count_unigram``). Not used for coding; saved with the model.
        self.register_buffer("unigram_counts", torch.zeros(K, V, dtype=torch.float64))

    @torch.no_grad()
    def count_unigram(self, tokens: list[torch.Tensor]):
        for s, tok in enumerate(tokens):
            self.unigram_counts[s] += torch.bincount(tok.flatten().cpu(), minlength=self.config.codebook_size).to(
                self.unigram_counts)

    def unigram_bits(self, tokens: list[torch.Tensor]) -> list[float]:
        """Bits per scale for ``tokens`` under the static per-scale histogram (add-one smoothed)."""
        out = []
        for s, tok in enumerate(tokens):
            p = (self.unigram_counts[s] + 1) / (self.unigram_counts[s].sum() + self.config.codebook_size)
            out.append(float(-p.log2()[tok.flatten()].sum()))
        return out

    # ---- the input of one block (shared by both paths) ------------------------------------------
    def pos_embed(self, h: int, w: int, device=None) -> torch.Tensor:
        """Where each token of an h x w block is: ``pos_proj(pos2d(h, w, D))``, (h*w, D)."""
        return self.pos_proj(pos2d(h, w, self.config.width).to(device))

    def block_input(self, ctx_NChw: torch.Tensor, prev_Nhw: torch.Tensor | None, t: int, s: int,
                    pos_LD: torch.Tensor | None = None) -> torch.Tensor:
        """Input embeddings of block (t, s) for N clips: (N, h_s*w_s, D). ``pos_LD``: the block's
        ``pos_embed`` when the caller keeps it (coding, weights fixed), else computed here."""
        N, _, h, w = ctx_NChw.shape
        if s == 0:
            x = self.start.expand(N, h * w, -1)
        else:
            x = self.in_proj(rearrange(ctx_NChw, "n c h w -> n (h w) c"))
        if prev_Nhw is None:
            prev_Nhw = torch.full((N, h, w), self.none_id, dtype=torch.long, device=ctx_NChw.device)
        x = x + self.prev_embed(prev_Nhw.reshape(N, h * w))
        x = x + self.level_embed.weight[s] + self.frame_embed.weight[min(t, self.config.window)]
        return x + (self.pos_embed(h, w, x.device) if pos_LD is None else pos_LD)

    # ---- training: one teacher-forced pass -------------------------------------------------------
    def _head_out(self, ctx_inputs: list[torch.Tensor], tokens: list[torch.Tensor]) -> torch.Tensor:
        """The teacher-forced pass up to the head: (B, L, V) or, bitwise, (B, L, d)."""
        return self.head(self._hidden(ctx_inputs, tokens))

    def _hidden(self, ctx_inputs: list[torch.Tensor], tokens: list[torch.Tensor]) -> torch.Tensor:
        """The teacher-forced pass up to the heads' input (after ``ln_out``): (B, L, D)."""
        B, T = tokens[0].shape[:2]
        K = len(tokens)
        blocks, lengths = [], []
        for t in range(T):
            for s in range(K):
                prev = tokens[s][:, t - 1] if t > 0 else None
                blocks.append(self.block_input(ctx_inputs[s][:, t], prev, t, s))
                lengths.append(blocks[-1].shape[1])
        x = torch.cat(blocks, dim=1)
        mask_LL = token_mask(build_mask(self.config.mask, T, K, self.config.window), lengths).to(x.device)
        for layer in self.layers:
            x = layer(x, mask_LL)
        return self.ln_out(x)

    def head_to_logits(self, out: torch.Tensor) -> torch.Tensor:
        """The head's output (..., V) or, bitwise, (..., d) bit logits -> V-ary logits (..., V).

        Bitwise: log p(v) = sum_i b_i(v) logsigmoid(l_i) + (1 - b_i(v)) logsigmoid(-l_i)."""
        if self.config.head == "categorical":
            return out
        return F.logsigmoid(out) @ self.bits_Vd.T + F.logsigmoid(-out) @ (1 - self.bits_Vd).T

    def forward(self, ctx_inputs: list[torch.Tensor], tokens: list[torch.Tensor]) -> torch.Tensor:
        """Logits for every token of a batch of GOPs.

        ctx_inputs[s]: (B, T, C, h_s, w_s); tokens[s]: (B, T, h_s, w_s).
        Returns logits (B, L, V) (bitwise head: log-probabilities), in frame-major block order
        (see ``flatten_tokens``).
        """
        return self.head_to_logits(self._head_out(ctx_inputs, tokens))

    def forward_with_gate(self, ctx_inputs: list[torch.Tensor], tokens: list[torch.Tensor]
                          ) -> tuple[torch.Tensor, torch.Tensor]:
        """``forward``'s logits (B, L, V) and the gate head's logit corrections (B, L) in the same
        order (a model with ``gate_head``; the training loss is ``copy_mixture_nll``)."""
        if self.gate is None:
            raise ValueError("forward_with_gate needs a context model with gate_head=True")
        h = self._hidden(ctx_inputs, tokens)
        return self.head_to_logits(self.head(h)), self.gate(h)[..., 0]

    def bit_logits(self, ctx_inputs: list[torch.Tensor], tokens: list[torch.Tensor]) -> torch.Tensor:
        """Per-bit logits (B, L, d) of the bitwise head (teacher forced, like ``forward``); bit i of
        id v is ``(v >> (d-1-i)) & 1``, its probability ``sigmoid(l_i)``. For analysis."""
        if self.config.head != "bitwise":
            raise ValueError("bit_logits needs a context model with head='bitwise'")
        return self._head_out(ctx_inputs, tokens)

    @staticmethod
    def flatten_tokens(tokens: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Targets (B, L) in the order of ``forward``'s logits, and the scale of each token (L,)."""
        B, T = tokens[0].shape[:2]
        parts, scales = [], []
        for t in range(T):
            for s, tok in enumerate(tokens):
                parts.append(tok[:, t].reshape(B, -1))
                scales.append(torch.full((parts[-1].shape[1],), s, dtype=torch.long))
        return torch.cat(parts, 1), torch.cat(scales)

    # ---- coding: one block at a time ------------------------------------------------------------
    def new_state(self, latent_hw: tuple[int, int], schedule: list[tuple[int, int]], num_frames: int) -> CodingState:
        allowed = build_mask(self.config.mask, num_frames, len(schedule), self.config.window)
        return CodingState(tuple(latent_hw), list(schedule), num_frames, allowed)

    @torch.no_grad()
    def block_logits(self, state: CodingState, t: int, s: int, ctx_Chw: torch.Tensor) -> torch.Tensor:
        """Logits (h_s*w_s, V) of block (t, s). The ONLY function whose output is entropy coded.

        Reads the cached keys/values of every block the mask allows (in block-id order, then itself),
        stores its own, and leaves ``state.tokens[(t, s)]`` for the caller to fill once known.
        """
        K = len(state.schedule)
        q_id = t * K + s
        keys = [(k // K, k % K) for k in torch.nonzero(state.allowed_BB[q_id]).flatten().tolist() if k != q_id]
        missing = [blk for blk in keys if blk not in state.kv]
        if missing:
            raise RuntimeError(f"block ({t}, {s}) needs blocks {missing} that were not coded yet")
        if t > 0 and (t - 1, s) not in state.tokens:
            raise RuntimeError(f"block ({t}, {s}) needs the tokens of block ({t - 1}, {s}) first")
        prev = state.tokens[(t - 1, s)][None] if t > 0 else None
        hw = tuple(ctx_Chw.shape[-2:])
        if hw not in state.pos:
            state.pos[hw] = self.pos_embed(*hw, ctx_Chw.device)
        x = self.block_input(ctx_Chw[None], prev, t, s, state.pos[hw])
        cache = []
        for i, layer in enumerate(self.layers):
            q, k, v = layer.qkv_heads(x)
            cache.append((k, v))
            k_all = torch.cat([state.kv[blk][i][0] for blk in keys] + [k], dim=2)
            v_all = torch.cat([state.kv[blk][i][1] for blk in keys] + [v], dim=2)
            x = layer.finish(x, F.scaled_dot_product_attention(q, k_all, v_all))
        state.kv[(t, s)] = cache
        h = self.ln_out(x)
        if self.gate is not None:   # the learned gate's correction, read by the walk (copy_gate "learned")
            state.gate_logits[(t, s)] = self.gate(h)[0, :, 0]
        return self.head_to_logits(self.head(h)[0])

    def config_dict(self) -> dict:
        return asdict(self.config)


def centre_per_block(gate_BL: torch.Tensor, lengths: list[int]) -> torch.Tensor:
    """The gate head's output minus its mean over each block (``lengths``: the blocks' token counts in
    ``forward``'s order): the head moves tokens of a block apart, never the block's rate (the count's job).
    The coding walk does the same per block (``walk.centred``)."""
    parts = torch.split(gate_BL, lengths, dim=1)
    return torch.cat([p - p.mean(1, keepdim=True) for p in parts], 1)


def copy_mixture_nll(logits_BLV: torch.Tensor, gate_BL: torch.Tensor, target_BL: torch.Tensor,
                     prev_BL: torch.Tensor, offset_BL: torch.Tensor,
                     lengths: list[int] | None = None) -> torch.Tensor:
    """Negative log-likelihood (nats, (B, L)) of ``target`` under the copy mixture the codec codes with
    (copy gate ``"learned"``)::

        p(y) = g * [y == prev] + (1 - g) * softmax(logits)[y],    g = sigmoid(gate + offset)

    ``gate``: the gate head's correction, centred per block first when the blocks' ``lengths`` are given
    (as the codec codes it, ``centre_per_block``); ``offset``: the count gate's logit
    (``walk.copy_training_targets``); ``prev`` < 0 marks tokens with no previous frame (the GOP's intra
    frame), coded by the softmax alone. Computed in log space (``logaddexp``), so a confident gate does
    not underflow."""
    logp_y = torch.log_softmax(logits_BLV, -1).gather(-1, target_BL.unsqueeze(-1))[..., 0]
    if lengths is not None:
        gate_BL = centre_per_block(gate_BL, lengths)
    z = gate_BL + offset_BL.to(gate_BL.dtype)
    no_copy = F.logsigmoid(-z) + logp_y
    with_copy = torch.logaddexp(F.logsigmoid(z), no_copy)
    logp = torch.where(prev_BL < 0, logp_y, torch.where(target_BL == prev_BL, with_copy, no_copy))
    return -logp
