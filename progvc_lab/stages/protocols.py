"""The interfaces of the five stages: what the codec, the training modules and the tools call.

A stage is any object with these members; it need not subclass the built-in class. Swap one with a
``class_path`` in a training config, or pass it to ``Codec(...)``::

    Tokenizer      frames (N, 3, H, W) ─► latent f (N, C, h, w) ─► frames
    Quantizer      f ─► tokens [(N, h_s, w_s)] per scale s ─► f_hat ; the context input of scale s
    ContextModel   (coding state, block (t, s), context input) ─► logits (h_s*w_s, V)
    EntropyCoder   integer CDFs + symbols ─► chunk bytes ─► symbols, block by block
    DetailSampler  logits ─► tokens for the scales a cut stream did not carry

The methods take no type annotations and name their tensors' shapes instead (``x_NCHW``,
``f_NChw``, ``logits_LV``): jsonargparse (LightningCLI) compares a class's method signatures with a
protocol's, and an annotation in the protocol would have to be copied exactly by every
implementation. Arguments that callers pass by position only are marked ``/``; the others are
passed by keyword somewhere and must keep their names.

``name`` is the stage's registry name (``registry.register`` sets it on every registered class; the
protocols ask for it where something reads it: the quantizer's and coder's go into the stream
header, the sampler's says what it does); ``config`` holds the
constructor's keyword arguments (a dataclass or a dict): ``type(stage)(**config)`` builds the same
stage again, which is what checkpoints store as ``init_args``.

``check(kind, stage)`` says which members a stage lacks, in one line.
"""
from __future__ import annotations

from typing import Any, Protocol, runtime_checkable


@runtime_checkable
class Tokenizer(Protocol):
    """Frames <-> latent maps. ``latent_dim`` = C; ``config`` is read by ``Codec.decode_costs``
    (``width``, if it has one, for the memory estimate)."""
    config: Any
    latent_dim: int

    def latent_size(self, height, width, /):
        """(h, w) of the latent of a height x width frame (after the tokenizer's own padding)."""

    def encode(self, x_NCHW, /):
        """Frames (N, 3, H, W) in [0, 1] -> latent (N, C, h, w) with (h, w) = latent_size(H, W)."""

    def decode(self, f_NChw, size, /):
        """Latent (N, C, h, w) -> frames (N, 3, H, W), unclamped, cropped to ``size`` = (H, W)."""


@runtime_checkable
class Quantizer(Protocol):
    """A multi-scale residual quantizer: K token maps per latent, coarse to fine.

    ``codebook`` maps token ids (...) to code vectors (..., C) (an ``nn.Embedding``; the ``mean``
    fill and multi-GPU training read it); ``code_usage`` (V,) counts recent hits (training's
    dead-code restarts). The codec's RD-optimised token choice calls ``code_distances`` and
    ``scale_contribution``; training calls ``forward``, ``context_inputs`` and ``restart_dead_codes``.
    """
    name: str
    config: Any
    codebook_size: int
    latent_dim: int
    num_scales: int
    codebook: Any
    code_usage: Any

    def schedule(self, latent_hw, /):
        """[(h_s, w_s)] for s = 0..K-1, the last one the latent size."""

    def tokenize(self, f_NChw, /):
        """Latent (N, C, h, w) -> K token maps [(N, h_s, w_s) int64]."""

    def forward(self, f_NChw, /, upto=None):
        """Training: (f_hat (N, C, h, w) from ``upto`` scales, tokens, quantizer loss ())."""

    def tokens_to_latent(self, tokens, latent_hw, /, upto=None, codes=None):
        """f_hat (N, C, h, w) from the first ``upto`` token maps, plus code-vector maps ``codes``
        [(N, C, h_s, w_s)] for the scales after them (a latent fill)."""

    def context_input(self, tokens, s, latent_hw, /, num_frames=None):
        """What the context model sees at scale s: (N, C, h_s, w_s) from tokens of scales < s only."""

    def context_inputs(self, tokens, latent_hw, /):
        """``context_input`` of every scale (teacher forcing)."""

    def scale_contribution(self, idx_Nhw, s, latent_hw, /):
        """What scale s's tokens (N, h_s, w_s) add to f_hat: (N, C, h, w)."""

    def code_distances(self, r_NChw, /):
        """(N*h*w, V) distances of residual vectors to every code (up to a per-position constant)."""

    def expected_code(self, probs_LV, size, /):
        """sum_v p(v) code_v per position: probabilities (L, V) -> (C, h_s, w_s)."""

    def restart_dead_codes(self, f_NChw, /):
        """Move unused codes onto latent vectors of the batch; returns how many moved."""


@runtime_checkable
class ContextModel(Protocol):
    """Predicts every token of a GOP, block (t, s) by block, from what the decoder knows.

    ``config`` must have ``codebook_size``, ``latent_dim``, ``num_scales``, ``mask`` and ``window``
    (checked against the quantizer, written in the stream header); ``depth`` and ``width``, if any,
    size the decoder's memory estimate. ``unigram_counts`` (K, V) is the per-scale token histogram
    of the training data (the baseline of ``analyze``).
    """
    config: Any
    unigram_counts: Any

    def new_state(self, latent_hw, schedule, num_frames, /):
        """A fresh coding state for one GOP (``context_model.CodingState``: ``allowed_BB``, ``kv``,
        ``tokens``, ...)."""

    def block_logits(self, state, t, s, ctx_Chw, /):
        """Logits (h_s*w_s, V) of block (t, s); the ONLY function whose output is entropy coded."""

    def forward(self, ctx_inputs, tokens, /):
        """Training: logits (B, L, V) of every token of a batch of GOPs, in ``flatten_tokens`` order."""

    def flatten_tokens(self, tokens, /):
        """Targets (B, L) in ``forward``'s order and the scale of each token (L,)."""

    def count_unigram(self, tokens, /):
        """Add the tokens [(..., h_s, w_s)] to ``unigram_counts``."""

    def unigram_bits(self, tokens, /):
        """Bits per scale of the tokens under the static histogram: [float] * K."""


@runtime_checkable
class EntropyCoder(Protocol):
    """Integer CDFs (L, V+1) and symbols (L,) to bytes, one chunk per (GOP, scale)::

        w = coder.chunk_encoder(); w.add(cdf_LV1, symbols_L) per block; chunk = w.finish()
        r = coder.chunk_decoder(chunk, n, where); symbols_L = r.next(cdf_LV1) per block
    """
    name: str

    def chunk_encoder(self):
        """A writer with ``add(cdf_LV1, symbols_L)`` and ``finish() -> bytes``."""

    def chunk_decoder(self, chunk, num_blocks, where, /):
        """A reader with ``next(cdf_LV1) -> symbols (L,) int64``, block by block in the encoder's order."""


@runtime_checkable
class DetailSampler(Protocol):
    """Fills the scales a cut stream does not carry. ``predicts``: whether it needs the context model
    at all; ``latent_fill``: whether it fills code vectors (``probabilities`` and ``mean_context``
    are then read) rather than tokens."""
    name: str
    config: Any
    predicts: bool
    latent_fill: bool
    mean_context: str

    def probabilities(self, logits_LV, /):
        """(L, V) float64 probabilities whose expected code fills the latent."""

    def choose(self, logits_LV, gop, t, s, prev_L=None, still_L=None, /):
        """Token ids (L,) for block (t, s) of GOP ``gop``: ``prev_L`` = frame t-1's tokens here,
        ``still_L`` = where the co-located coarser token did not change."""


PROTOCOLS = {"tokenizer": Tokenizer, "quantizer": Quantizer, "context_model": ContextModel,
             "entropy_coder": EntropyCoder, "detail_sampler": DetailSampler}


def members(protocol) -> list[str]:
    """The attribute and method names a stage of this protocol must have, in declaration order."""
    names = list(getattr(protocol, "__annotations__", {}))
    names += [k for k, v in vars(protocol).items() if callable(v) and not k.startswith("_")]
    return names


def missing(kind: str, stage) -> list[str]:
    """The members of ``PROTOCOLS[kind]`` that ``stage`` lacks (of a class: its methods only, since
    attributes such as ``latent_dim`` are set by its constructor)."""
    protocol = PROTOCOLS[kind]
    wanted = members(protocol)
    if isinstance(stage, type):
        wanted = [m for m in wanted if callable(vars(protocol).get(m))]
    return [m for m in wanted if not hasattr(stage, m)]


def check(kind: str, stage) -> None:
    """Raise ``TypeError`` naming what ``stage`` lacks to be a ``kind`` (e.g. 'tokenizer')."""
    lacks = missing(kind, stage)
    if lacks:
        what = stage.__name__ if isinstance(stage, type) else type(stage).__name__
        raise TypeError(f"{what} is not a {kind.replace('_', ' ')}: it lacks {', '.join(lacks)} "
                        f"(see progvc_lab.stages.protocols.{PROTOCOLS[kind].__name__})")
