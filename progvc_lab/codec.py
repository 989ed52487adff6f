"""Codec: composes the five stages into ``encode(video) -> bytes`` and ``decode(bytes) -> video``.

::

    encode:  frames ─► Tokenizer.encode ─► Quantizer.tokenize ─► tokens[s] (T, h_s, w_s)
             per GOP, scale-major, block by block:
                 context_input ─► ContextModel.block_logits ─► logits_to_cdf ─► coder.encode ─► chunk
             ─► bitstream.write_stream (header | table | scale 0 | scale 1 | ...)

    decode:  bitstream.read_stream ─► checks (CRCs, limits incl. estimated memory, model fingerprint, sizes);
             a cut stream keeps every complete scale of every GOP (``decode_with_report`` says which)
             per GOP: the SAME walk, with coder.decode instead of coder.encode, for the k sent scales;
             DetailSampler fills scales k..K-1 (or zero-fill stops there): tokens, or expected codes
             for ``mean`` (a latent-space fill, ``decode_fill``)
             ─► Quantizer.tokens_to_latent ─► Tokenizer.decode ─► crop ─► frames

Encoder and decoder share one generator (``Codec.walk(...).blocks(scales)``, ``progvc_lab.walk``) that
visits blocks and asks the context model for logits, so they compute bit-identical CDFs by
construction; the detail sampler and the analysis tools iterate the same walk. The coding path runs with a fixed number
of threads and deterministic algorithms (``coding_threads``).

Three encoder-side tools for low rates (issue 7):

* **Copy-aware probabilities** (``copy_gate``, recorded in the stream header). For block (t, s), t > 0,
  the coded distribution is ``g * onehot(prev) + (1 - g) * softmax(logits)`` where prev is frame t-1's
  token at the same scale and position (``logits_to_cdf(logits, copy_symbols, gate)``). The gate is a
  count kept identically by encoder and decoder, a hit being a token equal to its predecessor, backed off
  from each scale's own count to the copy rate of the coarser scales (``walk.copy_rate``; so the first P
  frame already trusts copies where its coarse scales copied). ``"context"`` (default, via ``"auto"``):
  9 counts per scale, by "was frame t-1's token here a copy" x "was the co-located token one scale
  coarser in frame t a copy" (each 0 / 1 / unknown), each backed off to the scale's rate; ``"count"``: one
  rate per scale; ``"learned"``: the scale's rate corrected per token by a gate head trained in stage 2
  (the shipped ``tiny-gate``); ``"none"``: off. Measured (30 frames, README "Low-rate coding options"):
  ``"context"`` is the smallest on static and moving clips alike. The gate of scale s reads only tokens
  of scales <= s, so truncation safety is untouched.
* **RD-optimised token choice** (``rdo_lambda``, encoder only). Per block, the token minimising
  ``A_s * ||r - e_v||^2 + lambda * bits(v)`` among the ``rdo_candidates`` nearest codes and frame
  t-1's token, where r is the scale-s residual of the quantizer given the tokens already chosen at the
  coarser scales, ``A_s = (h * w) / (h_s * w_s)`` the number of latent positions one scale-s token
  covers, and bits(v) = -log2 of v's integer-CDF probability (exactly what the coder pays). So the
  distortion is the squared error summed over the full-resolution latent (C channels), and **lambda is in
  latent squared error per bit**, the same at every scale and frame size. ``lambda = 0`` is
  nearest-code encoding exactly. ``rdo_p_factor`` F: P frames choose with ``lambda * F`` (intra frames
  with lambda), so F > 1 keeps the bits in the key frame that the P frames copy from (the P-frame QP
  offset of classical codecs; ``benchmarks/keyframe_scales_study.py`` measures it).
* **GOP**: one intra frame, then P frames, up to ``gop`` frames per GOP (default ``MAX_GOP`` = 32). The
  coding state of a GOP keeps every block's keys/values (the mask lets each block read its own frame's
  coarser scales and the same scale of frame t-1, and scale-major order visits every frame at each
  scale), so it grows linearly with the GOP: 4 layers x (k, v) x 128 floats per token = 4 KB per token,
  2.3 MB per QCIF frame (566 tokens), 8.5 MB per CIF frame (2077 tokens): 74 / 272 MB at 32 frames.
  The block mask is (T K)^2 booleans (37 KB at 32 frames) and the attention work per block does not
  grow with T. A new GOP every 32 frames also bounds how far a lost chunk propagates.
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import threading
import time
import warnings
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch
from torch import nn

from . import bitstream
from .bitstream import BitstreamError, Header, Stream
from .stages import protocols, registry
from .stages.entropy import CODERS, code_lengths, get_coder
from .stages.masks import build_mask, coding_order, is_truncation_safe
from .stages.quantizer import area_down
from .stages.sampler import DetailSampler
from .walk import COPY_GATES, COPY_PRIOR, Block, GopWalk, has_gate_head  # noqa: F401  (the coding walk; re-exported)

CHECKPOINT_DIR = Path(__file__).resolve().parent / "checkpoints"
PRETRAINED = {"tiny": CHECKPOINT_DIR / "tiny.pt", "tiny-bsq": CHECKPOINT_DIR / "tiny_bsq.pt",
              # mask variants of tiny (only their context model is stored: Codec.save(base="tiny"))
              "tiny-var": CHECKPOINT_DIR / "tiny_var.pt", "tiny-infinitystar": CHECKPOINT_DIR / "tiny_infinitystar.pt",
              "tiny-sparse-parent": CHECKPOINT_DIR / "tiny_sparse_parent.pt",
              # tiny with a narrower decoder (configs/tiny_fast_stage3.yaml): tiny's streams, decoded faster
              "tiny-fast": CHECKPOINT_DIR / "tiny_fast.pt",
              # tiny's context model with a learned copy gate (configs/tiny_gate_stage2.yaml; copy gate "learned")
              "tiny-gate": CHECKPOINT_DIR / "tiny_gate.pt",
              # a depth-2 context model on tiny's tokens, over tiny-fast's decoder (configs/tiny_lite_stage2.yaml)
              "tiny-lite": CHECKPOINT_DIR / "tiny_lite.pt"}


class CodecError(ValueError):
    """The input given to the codec cannot be coded (wrong shape, range, ...)."""


MAX_GOP = 32                    # default GOP length: all-P up to this many frames (KV cache memory)
DEFAULT_LAMBDA = 0.005          # latent squared error per bit (measured, see README)
ENCODER_CHOICES = ("gop", "copy_gate", "rdo_lambda", "rdo_p_factor", "rdo_candidates", "coder", "coding_threads")  # not taken from checkpoints


@dataclass
class CodecConfig:
    gop: int = MAX_GOP           # frames per GOP (1 intra + P frames); GOPs are coded independently
    coder: str = "constriction"  # entropy coder: "constriction" (one range coder per chunk) or "torchac" (one call per block)
    coding_threads: int = 2      # intra-op threads of the coding path: fixed per stream (in its header), since
                                 # float results depend on it; 2 measured ~1.5x faster than 1 on 2 cores
    copy_gate: str = "auto"      # copy-aware probabilities: "none" | "count" | "context" | "learned" (in the
                                 # header); "auto": "context", the smallest measured
    rdo_lambda: float = DEFAULT_LAMBDA   # RD-optimised token choice; 0 = nearest code
    rdo_p_factor: float = 1.0    # P frames choose their tokens with lambda * this (intra frames with lambda):
                                 # > 1 spends the bits on the key frame that every P frame copies from
    rdo_candidates: int = 8      # nearest codes the RDO considers (plus the previous frame's token); 0 = all


# One process-wide re-entrant lock for the coding path's global torch state (intra-op threads and
# deterministic kernels are process settings, not per-thread ones): a coding section holds it from
# start to end, so two codecs in threads of one process code one after the other and each restores
# exactly what it found. Nested sections (encode's verify decode) re-enter it in the same thread.
_CODING_LOCK = threading.RLock()


@contextlib.contextmanager
def deterministic(threads: int):
    """Fixed threads + deterministic kernels for the coding path; restores the caller's settings.

    Holds ``_CODING_LOCK`` for the whole section: another thread's coding section waits instead of
    changing the thread count under this one (or restoring its own settings in the middle of it). Code
    that calls torch outside a coding section, in another thread at the same time, still sees these
    settings while the section runs: they are global to the process.
    """
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise CodecError(f"coding_threads must be an integer >= 1, got {threads!r}")
    with _CODING_LOCK:
        old_threads = torch.get_num_threads()
        old_det = torch.are_deterministic_algorithms_enabled()
        old_warn = torch.is_deterministic_algorithms_warn_only_enabled()
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(True)
        try:
            with torch.no_grad():
                yield
        finally:
            torch.set_num_threads(old_threads)
            torch.use_deterministic_algorithms(old_det, warn_only=old_warn)


def _nhwc(x: torch.Tensor) -> torch.Tensor:
    """Channels-last layout for the conv tokenizer: measured ~30 % faster per frame than NCHW for both
    its encoder and decoder on the reference CPU (oneDNN), same numbers up to float rounding."""
    return x.contiguous(memory_format=torch.channels_last)


@contextlib.contextmanager
def _resource_errors(h: Header):
    """Out-of-memory during a decode -> one ``CodecError`` line naming the stream's size and the limit."""
    try:
        yield
    except (MemoryError, RuntimeError) as e:
        text = str(e).lower()
        if isinstance(e, RuntimeError) and not any(m in text for m in ("not enough memory", "out of memory",
                                                                       "can't allocate", "cannot allocate")):
            raise
        raise CodecError(f"not enough memory to decode this stream ({h.width}x{h.height}, {h.num_frames} "
                         f"frames, GOP {h.gop}): {type(e).__name__}; free memory, or lower "
                         "bitstream.Limits(max_memory_bytes=...) so that such streams are refused up front"
                         ) from None


def tokens_bytes(tok: torch.Tensor) -> bytes:
    return tok.to(torch.int16).numpy().astype("<i2").tobytes()


STAGES = ("tokenizer", "quantizer", "context_model")   # the stages a codec checkpoint holds


class Codec(nn.Module):
    """The three model stages (any objects with the members of ``stages.protocols``) and the encoder's
    choices (``CodecConfig``): ``Codec(tok, q, cm, gop=8)`` or ``Codec(tok, q, cm, CodecConfig(...), gop=8)``,
    a config and/or its fields as keywords (they replace the config's)."""

    def __init__(self, tokenizer: protocols.Tokenizer, quantizer: protocols.Quantizer,
                 context_model: protocols.ContextModel, config: CodecConfig | None = None, **overrides):
        super().__init__()
        registry.expect_config(config, CodecConfig, type(self))
        cfg = CodecConfig(**overrides) if config is None else dataclasses.replace(config, **overrides)
        for kind, stage in zip(STAGES, (tokenizer, quantizer, context_model)):
            protocols.check(kind, stage)
        self.tokenizer, self.quantizer, self.context_model = tokenizer, quantizer, context_model
        self.config = cfg
        if tokenizer.latent_dim != quantizer.latent_dim or quantizer.latent_dim != context_model.config.latent_dim:
            raise ValueError("tokenizer, quantizer and context model disagree on the latent dimension")
        if quantizer.num_scales != context_model.config.num_scales:
            raise ValueError("quantizer and context model disagree on the number of scales")
        allowed = build_mask(context_model.config.mask, 4, quantizer.num_scales, context_model.config.window)
        coding_order(allowed, quantizer.num_scales)   # raises for a mask that fits no coding order
        # A mask that is not truncation safe is coded frame-major with a fixed number of sent scales
        # (``encode(scales=k)``): the unsent ones are synthesized on both sides (``walk.synthesize``).
        self.truncation_safe = is_truncation_safe(allowed, quantizer.num_scales)
        tokenizer.to(memory_format=torch.channels_last)  # see _nhwc: the conv layers' weights too
        self.eval()

    # ---- construction and identity ----------------------------------------------------------------
    def describe_config(self) -> dict:
        """Each stage's constructor arguments (its ``config``) and the codec's choices: what the
        fingerprint hashes (``stage_config`` adds the classes)."""
        return {**{kind: registry.init_args(getattr(self, kind)) for kind in STAGES}, "codec": asdict(self.config)}

    def stage_config(self) -> dict:
        """``{kind: {"class_path", "init_args"}}`` per stage: what ``save`` writes, ``from_config`` builds."""
        return {kind: registry.spec(getattr(self, kind)) for kind in STAGES}

    def stage_names(self) -> dict:
        """``{kind: name}``: each stage's registry name (its class path if it has none). An unregistered
        subclass inherits its parent's name: it claims to be the same model (the course's
        ``StudentQuantizer``, a re-implementation with the package's weights, relies on that)."""
        return {kind: getattr(getattr(self, kind), "name", None) or registry.class_path(getattr(self, kind))
                for kind in STAGES}

    @classmethod
    def from_config(cls, config: dict, trust_class_paths: bool = False) -> "Codec":
        """A codec from ``{"tokenizer": ..., "quantizer": ..., "context_model": ..., "codec": {...}}``;
        a stage section is ``{"class_path", "init_args"}`` or the built-in class's arguments alone.
        Which class paths are allowed: ``stages.registry.resolve``."""
        stages = [registry.build(kind, config[kind], trust_class_paths) for kind in STAGES]
        return cls(*stages, **config.get("codec", {}))

    def save(self, path, meta: dict | None = None, base: str | None = None):
        """Tensors and plain values only (``Codec.load`` reads with ``weights_only=True``): each stage as
        ``{class_path, init_args}``, the weights, and the model fingerprint, which ``load`` checks.

        ``base``: a shipped model name; the file then holds only the stages that differ from it (a
        *variant*, e.g. another context model on the shipped tokenizer: a few MB instead of the whole
        codec), and ``load`` takes the others from the shipped file."""
        config = {**self.stage_config(), "codec": asdict(self.config)}
        state = self.state_dict()
        record = {"fingerprint": self.fingerprint().hex(), "meta": meta or {}}
        if base is not None:
            if base not in PRETRAINED:
                raise ValueError(f"base must be a shipped model name {sorted(PRETRAINED)}, got {base!r}")
            other = Codec.load(PRETRAINED[base])
            theirs, their_config = other.state_dict(), other.stage_config()
            keep = [kind for kind in STAGES if config[kind] != their_config[kind] or any(
                not torch.equal(v, theirs[k]) for k, v in state.items() if k.startswith(kind + "."))]
            if not keep:
                raise ValueError(f"this codec is {base!r} itself: nothing to save as a variant")
            config = {**{kind: config[kind] for kind in keep}, "codec": config["codec"]}
            state = {k: v for k, v in state.items() if k.split(".", 1)[0] in keep}
            record["base"] = base
        torch.save({"config": config, "state_dict": state, **record}, path)

    @classmethod
    def load(cls, path, *, trust_class_paths: bool = False) -> "Codec":
        """A codec saved with ``save``. Tensors only (``weights_only=True``), every config field bounded
        before anything is built (``progvc_lab.checkpoint``); a mismatch raises ``CheckpointError``.

        Each stage is rebuilt as the class its ``class_path`` names (none: the built-in class, as in
        checkpoints from before class paths). Only registered classes and subclasses of the built-ins
        inside progvc_lab load; ``trust_class_paths=True`` imports any other module the file names
        (it runs that module's code: only for files you trust)."""
        from .checkpoint import CheckpointError, check_codec_config, check_state_dict, load_tensors
        from .stages.entropy import CODERS
        from .stages.masks import MASKS

        path = Path(path)
        ckpt = load_tensors(path, "codec checkpoint")
        for key in ("config", "state_dict"):
            if key not in ckpt:
                raise CheckpointError(f"{path} is not a progvc_lab codec checkpoint (no '{key}' entry)")
        seen = {path.resolve()}
        while "base" in ckpt:   # a variant: the stages it does not hold come from a shipped model (itself
            base = ckpt["base"]  # possibly a variant of another: tiny-lite holds a context model over tiny-fast)
            if not isinstance(base, str) or base not in PRETRAINED or PRETRAINED[base].resolve() in seen:
                raise CheckpointError(f"{path}: a variant of {base!r}, which is not a shipped model "
                                      f"({sorted(PRETRAINED)}) or is the file itself")
            if not isinstance(ckpt["config"], dict) or not isinstance(ckpt["state_dict"], dict):
                raise CheckpointError(f"{path}: 'config' and 'state_dict' must be mappings")
            seen.add(PRETRAINED[base].resolve())
            parent = load_tensors(PRETRAINED[base], "codec checkpoint")
            for key in ("config", "state_dict"):
                if not isinstance(parent.get(key), dict):
                    raise CheckpointError(f"{PRETRAINED[base]}: '{key}' must be a mapping")
            ckpt = {**{k: v for k, v in ckpt.items() if k != "base"},
                    "config": {**parent["config"], **ckpt["config"]},
                    "state_dict": {**{k: v for k, v in parent["state_dict"].items()
                                      if k.split(".", 1)[0] not in ckpt["config"]}, **ckpt["state_dict"]},
                    **({"base": parent["base"]} if "base" in parent else {})}
        config = check_codec_config(ckpt["config"], path, {"coder": sorted(CODERS), "mask": sorted(MASKS),
                                                           "copy_gate": COPY_GATES + ("auto",)}, trust_class_paths)
        state = dict(check_state_dict(ckpt["state_dict"], path))
        meta = ckpt.get("meta", {})
        if not isinstance(meta, dict):
            raise CheckpointError(f"{path}: 'meta' must be a mapping, got {type(meta).__name__}")
        # build nothing larger than the file: the context model's weights dominate (~ (4 + 2 mlp) D^2 per layer)
        # (the built-in and its subclasses; another class, registered or trusted, sizes itself)
        cm = config["context_model"]["init_args"]
        wanted = cm.get("depth", 4) * (4 + 2 * cm.get("mlp_ratio", 4)) * cm.get("width", 128) ** 2
        held = sum(t.numel() for k, t in state.items() if k.startswith("context_model."))
        cm_class = registry.resolve("context_model", config["context_model"]["class_path"], trust_class_paths)
        if issubclass(cm_class, registry.default("context_model")) and wanted > 2 * held + 1_000_000:
            raise CheckpointError(f"{path}: config.context_model describes about {wanted:,} weights but the file "
                                  f"holds {held:,}; refusing to build it")
        # encoder choices (GOP, copy gate, lambda) are not part of a model: today's defaults apply
        config["codec"] = {k: v for k, v in config.get("codec", {}).items() if k not in ENCODER_CHOICES}
        try:
            codec = cls.from_config(config, trust_class_paths)
        except (ValueError, TypeError, AssertionError) as e:
            raise CheckpointError(f"{path}: its config does not make a codec ({e})") from None
        # checkpoints from before the unigram baseline existed: no histogram counted (uniform)
        state.setdefault("context_model.unigram_counts", codec.context_model.unigram_counts)
        try:
            codec.load_state_dict(state)
        except RuntimeError as e:
            first = str(e).strip().splitlines()
            raise CheckpointError(f"{path}: its weights do not fit its config "
                                  f"({' '.join(x.strip() for x in first[:3])[:300]})") from None
        recorded = ckpt.get("fingerprint")
        if recorded is not None and recorded != codec.fingerprint().hex():
            raise CheckpointError(f"{path}: the weights do not match the fingerprint recorded when it was saved "
                                  f"({recorded}); the file was edited or damaged")
        codec.meta = meta
        return codec.eval()

    @staticmethod
    def _looks_local(name: str) -> bool:
        """True for names that can only mean a local file or folder (never sent to a model hub)."""
        p = Path(name)
        return (name.startswith((".", "/", "~")) or "\\" in name or ".." in p.parts or p.is_absolute()
                or p.suffix.lower() in (".pt", ".pth", ".ckpt", ".bin", ".safetensors")
                or name.count("/") != 1 or (len(p.parts) > 1 and Path(p.parts[0]).is_dir()))

    @classmethod
    def from_pretrained(cls, name_or_path: str = "tiny", *, trust_class_paths: bool = False, **overrides) -> "Codec":
        """A shipped model by name ("tiny"), a local .pt file or folder, or a hub repo "org/name".

        Hub repos are fetched with huggingface_hub (``model.pt`` in the repo); offline, only what is
        already in the local hub cache loads. A name that looks like a local path (``./x/y``, ``x.pt``,
        an absolute path, a first folder that exists here) and does not exist is an error: it is never
        sent to the hub.
        """
        name_or_path = str(name_or_path)
        if name_or_path in PRETRAINED:
            path = PRETRAINED[name_or_path]
            if not path.is_file():
                raise FileNotFoundError(f"the shipped checkpoint {path} is missing; reinstall progvc_lab "
                                        "or train one with 'progvc-lab train' (see README)")
        elif Path(name_or_path).exists():
            path = Path(name_or_path)
            if path.is_dir():
                path = path / "model.pt"
        elif "/" not in name_or_path and "\\" not in name_or_path and not Path(name_or_path).suffix:
            raise FileNotFoundError(f"unknown model {name_or_path!r}: not a shipped name "
                                    f"({sorted(PRETRAINED)}), a local file, or a hub repo 'org/name'")
        elif cls._looks_local(name_or_path):
            raise FileNotFoundError(f"{name_or_path}: no such model file or folder (a local path, so no model "
                                    f"hub was asked); names shipped with progvc_lab: {sorted(PRETRAINED)}")
        else:
            try:
                from huggingface_hub import hf_hub_download
            except ImportError:
                raise FileNotFoundError(f"{name_or_path}: not a local file, and huggingface_hub is not installed "
                                        "to fetch it from the hub (pip install huggingface_hub)") from None
            try:
                path = Path(hf_hub_download(repo_id=name_or_path, filename="model.pt"))
            except Exception as e:
                raise FileNotFoundError(f"could not fetch model {name_or_path!r} from the hub and it is not "
                                        f"in the local cache ({type(e).__name__}); names shipped with "
                                        f"progvc_lab: {sorted(PRETRAINED)}") from e
        codec = cls.load(path, trust_class_paths=trust_class_paths)
        for k, v in overrides.items():
            if not hasattr(codec.config, k):
                raise TypeError(f"unknown codec option {k!r}")
            setattr(codec.config, k, v)
        return codec

    def fingerprint(self) -> bytes:
        """8 bytes identifying the weights and config (a stream only decodes with the same model; the
        stream stores the first ``bitstream.FINGERPRINT_BYTES``)."""
        h = hashlib.sha256()
        cfg = self.describe_config()
        cfg.pop("codec")  # GOP, gate, lambda and threads are coding choices, not the model
        custom = {k: v for k, v in self.stage_names().items() if v != registry.DEFAULTS[k]}
        if custom:  # only a stage that is not a built-in one: built-ins keep the fingerprints of old models
            cfg["stages"] = custom
        h.update(json.dumps(cfg, sort_keys=True).encode())
        for name, tensor in sorted(self.state_dict().items()):
            h.update(name.encode())
            h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
        return h.digest()[:8]

    # ---- input checks ----------------------------------------------------------------------------
    @staticmethod
    def check_video(video) -> torch.Tensor:
        if not isinstance(video, torch.Tensor):
            raise CodecError(f"expected a torch.Tensor video (T, 3, H, W), got {type(video).__name__}; "
                             "read files with progvc_lab.data.read_video")
        if video.ndim == 5:
            if video.shape[0] != 1:
                raise CodecError(f"encode one video at a time: got a batch of {video.shape[0]}")
            video = video[0]
        if video.ndim != 4 or video.shape[1] != 3:
            raise CodecError(f"expected video shaped (T, 3, H, W) RGB, got {tuple(video.shape)}")
        if video.shape[0] == 0:
            raise CodecError("the video has no frames")
        if not video.is_floating_point():
            raise CodecError(f"expected float frames in [0, 1], got {video.dtype}; divide uint8 by 255")
        if not torch.isfinite(video).all() or video.min() < -1e-3 or video.max() > 1 + 1e-3:
            raise CodecError("frame values must be finite and lie in [0, 1]")
        H, W = video.shape[-2:]
        if H > bitstream.MAX_SIDE or W > bitstream.MAX_SIDE or H < 2 or W < 2:
            raise CodecError(f"frame size {W}x{H} is outside 2..{bitstream.MAX_SIDE} pixels")
        return video.float().clamp(0, 1).cpu()

    # ---- tokens ----------------------------------------------------------------------------------
    @torch.no_grad()
    def latents(self, video: torch.Tensor, batch: int = 16) -> torch.Tensor:
        """Video (T, 3, H, W) -> tokenizer latents (T, C, h, w), in batches of ``batch`` frames."""
        video = self.check_video(video)
        return torch.cat([self.tokenizer.encode(_nhwc(video[i:i + batch])).contiguous()
                          for i in range(0, len(video), batch)])

    @torch.no_grad()
    def tokenize(self, video: torch.Tensor, batch: int = 16) -> tuple[list[torch.Tensor], tuple[int, int]]:
        """Video (T, 3, H, W) -> nearest-code tokens per scale [(T, h_s, w_s)] and the latent size.

        (What the encoder sends with ``rdo_lambda = 0``; with lambda > 0 see ``encode_with_stats``.)"""
        f = self.latents(video, batch)
        per_scale = [[] for _ in range(self.quantizer.num_scales)]
        for i in range(0, len(f), batch):
            for s, tok in enumerate(self.quantizer.tokenize(f[i:i + batch])):
                per_scale[s].append(tok)
        return [torch.cat(x) for x in per_scale], tuple(f.shape[-2:])

    @torch.no_grad()
    def reconstruct(self, tokens: list[torch.Tensor], latent_hw, size, upto: int | None = None,
                    batch: int = 16, codes: list[torch.Tensor] | None = None,
                    frames: int | None = None) -> torch.Tensor:
        """Tokens -> frames (T, 3, H, W) in [0, 1], using the first ``upto`` scales; ``codes``: code-vector
        maps of the following scales (a latent fill, see ``decode_fill``)."""
        codes = list(codes or [])
        T = tokens[0].shape[0] if tokens else (codes[0].shape[0] if codes else frames)
        out = []
        for i in range(0, T, batch):
            f = self.quantizer.tokens_to_latent([t[i:i + batch] for t in tokens], latent_hw, upto,
                                                codes=[z[i:i + batch] for z in codes])
            out.append(self.tokenizer.decode(_nhwc(f), size).clamp(0, 1).contiguous())
        return torch.cat(out)

    def walk(self, latent_hw, schedule, n_frames: int, copy_gate: str | None = None, *, gop: int = 0,
             start: int = 0, sent: int | None = None) -> GopWalk:
        """A fresh coding walk over one GOP (``progvc_lab.walk``): THE coding order.

        Encoder, decoder, the detail sampler and the analysis tools (``viz.token_bits_maps``, the course)
        all iterate ``walk.blocks(scales)``; each yielded ``Block`` carries the logits, the coded integer
        CDF (``block.cdf``, copy gate included) and, once the consumer has set ``block.symbols``, their
        model bits. ``copy_gate`` defaults to ``config.copy_gate`` (decoders pass the stream's)."""
        gate = self.resolve_copy_gate(self.config.copy_gate if copy_gate is None else copy_gate)
        try:
            return GopWalk(self.context_model, self.quantizer, latent_hw, schedule, n_frames, copy_gate=gate,
                           gop=gop, start=start, sent=sent)
        except ValueError as e:
            raise CodecError(str(e)) from None

    # ---- encode ----------------------------------------------------------------------------------
    def encode(self, video, fps=None, verify: bool = False, scales: int | None = None, **options) -> bytes:
        """Video (T, 3, H, W) float RGB in [0, 1] (or a ``FrameReader``) -> .pgvc bytes. ``verify``
        decodes what was written and compares tokens (a self-check; it doubles the time).

        ``options`` override ``config`` for this call: ``gop``, ``copy_gate``, ``rdo_lambda``,
        ``rdo_candidates``; ``progress`` (see ``encode_with_stats``)."""
        data, _ = self.encode_with_stats(video, fps, verify, scales=scales, **options)
        return data

    def resolve_copy_gate(self, name: str) -> str:
        """The copy gate a stream is coded with: ``"auto"`` is ``"context"``, the smallest on every clip
        measured, with or without a gate head (README "Low-rate coding options")."""
        if name == "auto":
            return "context"
        return name

    def _options(self, options: dict) -> CodecConfig:
        cfg = dataclasses.replace(self.config)
        for k, v in options.items():
            if k not in ENCODER_CHOICES:
                raise TypeError(f"unknown encoder option {k!r}; options: {ENCODER_CHOICES}")
            if v is not None:
                setattr(cfg, k, v)
        cfg.copy_gate = self.resolve_copy_gate(cfg.copy_gate)
        if cfg.copy_gate not in COPY_GATES:
            raise CodecError(f"unknown copy gate {cfg.copy_gate!r}; choose one of {COPY_GATES} or 'auto'")
        if cfg.copy_gate == "learned" and not has_gate_head(self.context_model):
            raise CodecError("copy gate 'learned' needs a model with a gate head (e.g. --model tiny-gate); "
                             "this model has none: use 'context' (the default) or 'count'")
        if not (isinstance(cfg.coding_threads, int) and 1 <= cfg.coding_threads <= bitstream.MAX_CODING_THREADS):
            raise CodecError(f"coding_threads must be an integer in 1..{bitstream.MAX_CODING_THREADS}, "
                             f"got {cfg.coding_threads!r}")
        if cfg.coder not in CODERS:
            raise CodecError(f"unknown entropy coder {cfg.coder!r}; choose one of {sorted(CODERS)}")
        if not (isinstance(cfg.rdo_lambda, (int, float)) and math.isfinite(cfg.rdo_lambda) and cfg.rdo_lambda >= 0):
            raise CodecError(f"rdo_lambda must be a finite number >= 0, got {cfg.rdo_lambda!r}")
        if not (isinstance(cfg.rdo_p_factor, (int, float)) and math.isfinite(cfg.rdo_p_factor) and cfg.rdo_p_factor >= 0):
            raise CodecError(f"rdo_p_factor must be a finite number >= 0, got {cfg.rdo_p_factor!r}")
        if cfg.rdo_candidates < 0:
            raise CodecError(f"rdo_candidates must be >= 0, got {cfg.rdo_candidates}")
        if not 1 <= cfg.gop <= 65535:
            raise CodecError(f"GOP length must be 1..65535, got {cfg.gop}")
        return cfg

    def _frame_source(self, video, fps):
        """(reader, fps): a tensor video is checked whole; a ``FrameReader`` is read GOP by GOP."""
        from .data.streaming import FrameReader, TensorFrames

        if isinstance(video, FrameReader):
            fps = video.fps if fps is None else fps
            if video.num_frames == 0:
                raise CodecError("the video has no frames")
            return video, fps
        video = self.check_video(video)
        return TensorFrames(video, 25 if fps is None else fps), (Fraction(25) if fps is None else fps)

    def encode_with_stats(self, video, fps=None, verify: bool = False, progress=None, scales: int | None = None,
                          **options) -> tuple[bytes, "EncodeResult"]:
        """Encode and return (bytes, ``EncodeResult``): tokens, per-token model bits, per-block bits, copy
        gates and RDO distortion, per-chunk sizes, the header, times.

        ``video``: a tensor (T, 3, H, W) or a ``data.streaming.FrameReader`` (``open_frames(path)``), which
        is read one GOP at a time, so memory does not grow with the clip. ``fps`` defaults to the
        reader's (25 for a tensor). ``progress(frames_done)`` is called after every GOP.

        ``scales=k`` sends the first k scales. With a truncation-safe mask that is the full stream cut
        after k (``bitstream.truncate``). With a mask that is not (``var``, ``infinitystar``) the stream
        is coded frame-major and scales k..K-1 are never sent: encoder and decoder both synthesize them
        (seeded sampling from their integer CDFs, ``walk.synthesize``) as the context later frames read;
        such a stream decodes at exactly k scales and cannot be truncated.
        """
        cfg = self._options(options)
        K = self.quantizer.num_scales
        if scales is not None and not (isinstance(scales, int) and 1 <= scales <= K):
            raise CodecError(f"scales must be an integer in 1..{K}, got {scales!r}")
        if scales is not None and scales < K and self.truncation_safe:
            data, res = self.encode_with_stats(video, fps, verify, progress, **options)
            res.data = data = bitstream.truncate(data, scales)
            res.header = bitstream.read_stream(data).header
            res.chunk_bytes[:, scales:] = 0
            for arr in (res.model_bits, res.rdo_distortion):
                arr[:, scales:] = 0
            for b in res.token_bits[scales:]:
                b[...] = 0
            res.tokens = res.tokens[:scales]
            return data, res
        sent = K if scales is None else scales
        source, fps = self._frame_source(video, fps)
        fps = Fraction(fps).limit_denominator(65535)
        if fps <= 0:
            raise CodecError(f"fps must be positive, got {fps}")
        if fps.numerator > 65535:  # keep fps a fraction of two numbers below 2^16
            fps = fps.limit_denominator(max(1, 65535 // math.ceil(fps)))
        T, H, W = source.num_frames, source.height, source.width
        if T > bitstream.MAX_FRAMES:
            raise CodecError(f"at most {bitstream.MAX_FRAMES} frames per stream, got {T}")
        if H > bitstream.MAX_SIDE or W > bitstream.MAX_SIDE or H < 2 or W < 2:
            raise CodecError(f"frame size {W}x{H} is outside 2..{bitstream.MAX_SIDE} pixels")
        latent_hw = self.tokenizer.latent_size(H, W)
        header = Header(fingerprint=self.fingerprint()[:bitstream.FINGERPRINT_BYTES], width=W, height=H,
                        fps_num=fps.numerator, fps_den=fps.denominator, num_frames=T, gop=cfg.gop,
                        latent_hw=latent_hw, num_scales=K, scales_sent=sent, quantizer=self.quantizer.name,
                        mask=self.context_model.config.mask, window=self.context_model.config.window,
                        coder=cfg.coder, copy_gate=cfg.copy_gate, coding_threads=cfg.coding_threads)
        coder = get_coder(cfg.coder)
        stream = Stream(header)
        schedule = header.schedule
        result = EncodeResult(data=b"", header=header, latent_hw=latent_hw, options=asdict(cfg),
                              model_bits=np.zeros((T, K)), rdo_distortion=np.zeros((T, K)),
                              gate=np.full((T, K), np.nan),
                              token_bits=[np.zeros((T, h, w)) for h, w in schedule],
                              chunk_bytes=np.zeros((header.num_gops, K), dtype=np.int64))
        tokens = [[] for _ in range(K)]
        t0 = time.perf_counter()
        for g in range(header.num_gops):
            n = header.gop_frames(g)
            g0 = g * header.gop
            frames = self.check_video(source.read(g0, n))
            if tuple(frames.shape) != (n, 3, H, W):
                raise CodecError(f"frames {g0}..{g0 + n - 1} have shape {tuple(frames.shape)}, expected {(n, 3, H, W)}")
            with deterministic(cfg.coding_threads):
                t_lat = time.perf_counter()
                f_gop = self.latents(frames)
                result.seconds_tokenize += time.perf_counter() - t_lat
                del frames
                gop_tokens, chunks = self._encode_gop(f_gop, cfg, header, coder, g, result)
            for s in range(K):
                tokens[s].append(gop_tokens[s])
                if s < sent:
                    stream.chunks[(g, s)] = chunks[s]
                    stream.crcs[(g, s)] = bitstream.tokens_crc(tokens_bytes(gop_tokens[s]))
                    result.chunk_bytes[g, s] = len(chunks[s])
            if progress is not None:
                progress(g0 + n)
        tokens = [torch.cat(x) for x in tokens]
        result.tokens, result.synthesized = tokens[:sent], tokens[sent:]
        result.data = data = bitstream.write_stream(stream)
        result.seconds_total = time.perf_counter() - t0
        if verify:
            t_v = time.perf_counter()
            decoded, _ = self.decode_tokens(data)
            for s, (a, b) in enumerate(zip(result.tokens, decoded)):
                if not torch.equal(a, b):
                    raise RuntimeError(f"encoder self-check failed: scale {s} decodes to different tokens; "
                                       "this is a bug (or a non-deterministic platform), please report it")
            result.seconds_verify = time.perf_counter() - t_v
        return data, result

    def _encode_gop(self, f_NChw, cfg: CodecConfig, header: Header, coder, g: int, result: "EncodeResult"):
        """Code one GOP's latents: (tokens per scale (n, h_s, w_s), chunk bytes per scale); fills the
        GOP's rows of ``result`` (per-token bits, model bits, gate, RDO distortion) in place."""
        n, K, g0 = f_NChw.shape[0], header.num_scales, g * header.gop
        writers = [coder.chunk_encoder() for _ in range(K)]
        walk = self.walk(header.latent_hw, header.schedule, n, cfg.copy_gate, gop=g, start=g0,
                         sent=header.scales_sent)
        chooser = (_FrameTokenChooser if walk.frame_major else _TokenChooser)(self.quantizer, f_NChw, cfg, walk.tokens)
        for block in walk.blocks(range(K)):
            t, s = block.t, block.s
            if not block.sent:          # never sent: the decoder's synthesis, as context for later blocks
                block.symbols = block.synthesize()
                continue
            block.symbols, dist = chooser.choose(t, s, block.cdf, block.prev)
            writers[s].add(block.cdf, block.symbols)
            bits_L = block.bits
            result.token_bits[s][g0 + t] = bits_L.view(block.shape).numpy()
            result.model_bits[g0 + t, s] = float(bits_L.sum())
            result.rdo_distortion[g0 + t, s] = dist
            if block.gate is not None:
                result.gate[g0 + t, s] = float(block.gate.mean())
        return walk.token_maps(), [w.finish() for w in writers]

    def encode_to_target(self, video, fps=None, target_bytes: int | None = None,
                         target_bpp: float | None = None, verify: bool = False, steps: int = 7,
                         quality=None, **options) -> tuple[bytes, dict]:
        """Find lambda and the number of scales k that fit a byte budget, at the best quality.

        One encode gives every k by truncation (a scale's token choice never depends on finer scales).
        Lambda grows (x4) from 0 until all K scales fit or the rate stops falling; then bisection on
        log(lambda) (at most ``steps`` encodes) for the largest k that fits; for each k the smallest
        lambda tried that fits, then the (k, lambda) whose decode scores best under ``quality(original, decoded)``
        (default: MS-SSIM when frames are over 96 px, else PSNR-RGB). Returns the truncated stream and
        stats with ``chosen = {"k", "rdo_lambda", "bytes", "quality"}``.
        """
        from . import metrics

        if not self.truncation_safe:
            raise CodecError(f"a target rate is searched by truncating one encode; this model's mask "
                             f"{self.context_model.config.mask!r} is not truncation safe: choose scales= and rdo_lambda= instead")
        source, fps = self._frame_source(video, fps)
        video = self.check_video(source.read_all())
        T, _, H, W = video.shape
        if (target_bytes is None) == (target_bpp is None):
            raise CodecError("give exactly one of target_bytes and target_bpp")
        budget = int(target_bytes if target_bytes is not None else math.floor(target_bpp * T * H * W / 8 + 1e-6))  # + 1e-6: bpp from a byte count round-trips
        if quality is None:
            quality = metrics.ms_ssim if min(H, W) > 96 else metrics.psnr
        K = self.quantizer.num_scales
        tried = {}  # lambda -> (data, stats, [bytes of k = 0..K])

        def run(lam):
            data, stats = self.encode_with_stats(video, fps, **{**options, "rdo_lambda": lam})
            tried[lam] = (data, stats, [len(bitstream.truncate(data, k)) for k in range(K + 1)])
            return tried[lam][2]

        sizes = run(0.0)
        lo, lam, hi = 0.0, max(DEFAULT_LAMBDA, 1e-3), None
        if sizes[K] > budget:  # grow lambda until all K scales fit, or the rate stops falling
            while True:
                new = run(lam)
                if new[K] <= budget:
                    hi = lam
                    break
                if new[K] > 0.98 * sizes[K] or lam > 1e3:  # saturated: K scales never fit
                    break
                sizes, lo, lam = new, lam, lam * 4
            # the largest k that fits at the largest lambda tried: bisect lambda for it
            top = max(tried)
            k_star = max((k for k in range(1, K + 1) if tried[top][2][k] <= budget), default=0)
            if k_star:
                lo = max((x for x, (_, _, sz) in tried.items() if sz[k_star] > budget), default=0.0)
                hi = min(x for x, (_, _, sz) in tried.items() if sz[k_star] <= budget)
                for _ in range(steps):
                    if lo > 0 and hi / lo < 1.1:
                        break
                    mid = math.sqrt(max(lo, hi / 64) * hi)
                    if run(mid)[k_star] <= budget:
                        hi = mid
                    else:
                        lo = mid
        best = None
        for k in range(K, 0, -1):
            fits = [lam for lam, (_, _, sz) in tried.items() if sz[k] <= budget]
            if not fits:
                continue
            lam = min(fits)
            data = bitstream.truncate(tried[lam][0], k)
            score = float(quality(video, self.decode(data)))
            if best is None or score > best[0]:
                best = (score, k, lam, data)
        if best is None:
            raise CodecError(f"no stream fits {budget} bytes: the smallest (1 scale, lambda "
                             f"{max(tried):g}) takes {min(sz[1] for _, _, sz in tried.values())} bytes")
        score, k, lam, data = best
        stats = dict(tried[lam][1])
        stats["chosen"] = {"k": k, "rdo_lambda": lam, "bytes": len(data), "quality": score,
                           "budget_bytes": budget, "encodes": len(tried)}
        if verify:
            decoded, _ = self.decode_tokens(data)
            if not all(torch.equal(a, b) for a, b in zip(decoded, stats["tokens"][:k])):
                raise RuntimeError("encoder self-check failed: the chosen stream decodes to different tokens")
        return data, stats

    # ---- decode ----------------------------------------------------------------------------------
    def read(self, data: bytes, limits: bitstream.Limits | None = None, strict: bool = False,
             whole_video: bool = True) -> Stream:
        """Parse a stream, check that it was made by this model and fits ``limits`` (memory included:
        the whole video, or with ``whole_video=False`` what ``decode_iter`` holds, one GOP and a batch);
        ``strict`` refuses a cut stream (see ``bitstream.read_stream``)."""
        if isinstance(data, (str, Path)):
            raise CodecError("decode takes the stream's bytes; read the file first (Path(p).read_bytes())")
        limits = bitstream.DEFAULT_LIMITS if limits is None else limits
        stream = bitstream.read_stream(data, limits=limits, strict=strict)
        h = stream.header
        mine = self.fingerprint()[:bitstream.FINGERPRINT_BYTES]
        if h.fingerprint != mine:
            raise BitstreamError(f"model mismatch: the stream was made by model {h.fingerprint.hex()}, this "
                                 f"codec is {mine.hex()}; decode with the model that encoded it")
        cm = self.context_model.config
        if (h.mask, h.window, h.quantizer) != (cm.mask, cm.window, self.quantizer.name):
            raise BitstreamError(f"stream uses mask {h.mask!r} (window {h.window}) and quantizer "
                                 f"{h.quantizer!r}; this codec has {cm.mask!r} (window {cm.window}) and "
                                 f"{self.quantizer.name!r}")
        expect_hw = self.tokenizer.latent_size(h.height, h.width)
        if tuple(h.latent_hw) != expect_hw or h.num_scales != self.quantizer.num_scales:
            raise BitstreamError("stream's latent size or number of scales does not fit its frame size and "
                                 "this model; the header is corrupted or from another model")
        if h.coder not in CODERS:
            raise BitstreamError(f"stream uses entropy coder {h.coder!r}, which this build cannot decode")
        if h.copy_gate not in COPY_GATES:
            raise BitstreamError(f"stream uses copy gate {h.copy_gate!r}, which this build cannot decode")
        if h.copy_gate == "learned" and not has_gate_head(self.context_model):
            raise BitstreamError("stream uses the learned copy gate, and this model has no gate head; decode "
                                 "with the model that encoded it")
        held = h.num_frames if whole_video else min(h.num_frames, h.gop + bitstream.decode_batch(h))
        limits.check_memory(bitstream.decode_memory(h, **self.decode_costs(), frames_held=held))
        return stream

    def decode_costs(self) -> dict:
        """Per-token and per-pixel bytes for ``bitstream.decode_memory``: the attention cache keeps
        layers x (k, v) x width float32 per token; the tokenizer's decoder peaks at about 21 bytes per
        pixel per channel of its first width (measured: 650 bytes/pixel at width 32, 16 frames)."""
        cm = self.context_model.config   # a stage without these fields: the shipped model's sizes
        depth, width = getattr(cm, "depth", 4), getattr(cm, "width", 128)
        return {"kv_bytes_per_token": depth * 2 * width * 4,
                "pixel_bytes": 21 * max(getattr(self.tokenizer.config, "width", 32), 8)}

    def decode_tokens(self, data: bytes, scales: int | None = None, sampler: DetailSampler | str = "zero",
                      **sampler_args) -> tuple[list[torch.Tensor], Header]:
        """Bytes -> tokens per scale (T, h_s, w_s). Scales >= k are filled by the sampler (or absent
        when it is ``zero``: then only k token maps are returned). For ``mean`` the filled scales hold
        the argmax tokens (the fill itself is a latent: see ``decode_fill``)."""
        tokens, _, h = self.decode_fill(data, scales, sampler, **sampler_args)
        return tokens, h

    def decode_fill(self, data: bytes, scales: int | None = None, sampler: DetailSampler | str = "zero",
                    **sampler_args) -> tuple[list[torch.Tensor], list[torch.Tensor], Header]:
        """Bytes -> (tokens per scale, expected-code maps (T, C, h_s, w_s) of the filled scales k..K-1
        for a latent fill (``mean``; empty for the token samplers), header).

        The picture of a ``mean`` decode is ``tokens_to_latent(tokens[:k], codes=codes)``: sent scales
        token-exact, filled scales ``phi_s(up(E[code]))``. (All GOPs at once: ``decode_gops`` yields them
        one by one.) ``limits=``, ``strict=``: see ``read``. For a cut stream with the ``zero`` sampler
        the token map of a scale that only the first GOPs kept covers only their frames
        (``decode_fill_report`` says which)."""
        tokens, codes, h, _ = self.decode_fill_report(data, scales, sampler, **sampler_args)
        return tokens, codes, h

    def decode_fill_report(self, data: bytes, scales: int | None = None, sampler: DetailSampler | str = "zero",
                           **kw):
        """``decode_fill`` plus the stream's ``bitstream.ReadReport`` (``scales_decoded`` per GOP)."""
        report = []
        gops = list(self.decode_gops(data, scales, sampler, report=report, **kw))
        h = gops[0].header
        tokens = [torch.cat([gop.tokens[s] for gop in gops if len(gop.tokens) > s])
                  for s in range(len(gops[0].tokens))]
        codes = [torch.cat([gop.codes[j] for gop in gops]) for j in range(len(gops[0].codes))]
        return tokens, codes, h, report[0]

    def decode_gops(self, data: bytes, scales: int | None = None, sampler: DetailSampler | str = "zero",
                    limits: bitstream.Limits | None = None, strict: bool = False, report: list | None = None,
                    **sampler_args):
        """Yield one ``DecodedGop`` (index, first frame, tokens, codes, header) per GOP, in order.

        Only one GOP's coding state (keys/values of its blocks) is alive at a time, and the fixed-thread
        deterministic section is entered and left per GOP, so the caller's code between two GOPs runs
        with its own thread settings. ``limits`` / ``strict``: see ``read``; ``report``: a list that
        receives the stream's ``bitstream.ReadReport`` before the first GOP.

        A cut stream is salvaged per GOP (``bitstream`` docstring): GOP g decodes its own complete
        scales k_g. With the ``zero`` sampler its ``tokens`` then have k_g maps; a latent fill's ``codes``
        start at the smallest k of any GOP for every GOP (a GOP that kept that scale gets its exact code
        vectors there, ``codebook[token]``: the same picture)."""
        stream = self.read(data, limits, strict, whole_video=False)
        h, rep = stream.header, stream.report
        k_all = h.scales_sent if scales is None else scales
        if not 0 <= k_all <= h.scales_sent:
            raise ValueError(f"cannot decode {k_all} scales: the stream carries {h.scales_sent} of {h.num_scales}")
        if not self.truncation_safe:
            if rep.salvaged:
                raise BitstreamError(f"the stream is cut, and its mask {h.mask!r} is not truncation safe: later "
                                     "blocks read the scales that were lost, so nothing after the cut can be decoded; "
                                     "get the whole stream")
            if k_all != h.scales_sent:
                raise CodecError(f"this stream's mask {h.mask!r} is not truncation safe: it decodes only at the "
                                 f"{h.scales_sent} scales it was encoded for, not {k_all}; encode with scales={k_all}")
        if isinstance(sampler, str):
            sampler = registry.get("detail_sampler", sampler)(**sampler_args)
        protocols.check("detail_sampler", sampler)
        coder = get_coder(h.coder)
        rep.scales_decoded = [min(k_all, kg) for kg in rep.scales_per_gop]
        if report is not None:
            report.append(rep)
        k_min = min(rep.scales_decoded)
        for g in range(h.num_gops):
            n = h.gop_frames(g)
            k = rep.scales_decoded[g]   # this GOP's complete scales
            last = h.num_scales if sampler.predicts or not self.truncation_safe else k
            readers = {s: coder.chunk_decoder(stream.chunks[(g, s)], n, f"chunk (GOP {g}, scale {s})")
                       for s in range(k)}
            with deterministic(h.coding_threads), _resource_errors(h):
                gop_tokens, fills = self._decode_gop(stream, g, k, last, sampler, readers)
            if not self.truncation_safe and not sampler.predicts:
                gop_tokens = gop_tokens[:k]   # the synthesized scales were context only: zero-fill
            if sampler.latent_fill and k > k_min and self.truncation_safe:
                fills = [self.quantizer.codebook(gop_tokens[s]).permute(0, 3, 1, 2) for s in range(k_min, k)] + fills
            yield DecodedGop(g, g * h.gop, gop_tokens, fills, h)

    def _decode_gop(self, stream: Stream, g: int, k: int, last: int, sampler: DetailSampler, readers):
        """Decode scales < k of GOP g, check their CRCs, fill scales k..last-1: (tokens, latent fills)."""
        h = stream.header
        n = h.gop_frames(g)
        walk = self.walk(h.latent_hw, h.schedule, n, h.copy_gate, gop=g, start=g * h.gop, sent=k)
        # a mask that is not truncation safe: one pass over every scale, the unsent ones synthesized
        for block in walk.blocks(range(k if self.truncation_safe else h.num_scales)):
            if not block.sent:
                block.symbols = block.synthesize()
                continue
            try:
                block.symbols = readers[block.s].next(block.cdf)
            except Exception as e:
                raise BitstreamError(f"chunk (GOP {g}, scale {block.s}) is corrupted: {e}") from e
        for s in range(k):
            if bitstream.tokens_crc(tokens_bytes(walk.token_map(s))) != stream.crcs[(g, s)]:
                raise BitstreamError(f"chunk (GOP {g}, scale {s}) is corrupted: its tokens fail their check "
                                     "(the chunk, its place in the stream or the header was changed)")
        if not self.truncation_safe:   # the stream fixes its unsent scales: the synthesis is the fill
            return walk.token_maps(last), []
        fills = self._fill_blocks(walk, k, sampler) if sampler.predicts else []
        return walk.token_maps(last), fills

    def decode_iter(self, data: bytes, scales: int | None = None, sampler: DetailSampler | str = "zero",
                    progress=None, batch: int = 16, **sampler_args):
        """Yield decoded frames (n, 3, H, W) a few at a time (see ``decode``); memory holds about one GOP.

        Frames are made in batches of ``batch`` frames at the same absolute positions as
        ``reconstruct`` (0..15, 16..31, ...), so the concatenation equals ``decode`` exactly whatever the
        GOP length. The conv decoder runs with the caller's thread settings (it does not touch the
        tokens). ``progress(frames_done)`` is called after every yield. ``limits=``, ``strict=`` and
        ``report=`` (a list receiving the ``bitstream.ReadReport``) pass to ``decode_gops``; a cut
        stream's GOPs with fewer scales start a new batch."""
        pending_tok, pending_codes, h, done = None, None, None, 0

        def take(n):
            """The first n pending frames as pictures; the rest stays pending."""
            nonlocal pending_tok, pending_codes, done
            tok = [torch.cat(x) for x in pending_tok]
            codes = [torch.cat(x) for x in pending_codes]
            pending_tok, pending_codes = [[x[n:]] for x in tok], [[x[n:]] for x in codes]
            with _resource_errors(h):
                picture = self._picture([x[:n] for x in tok], [x[:n] for x in codes], h, n, batch)
            done += n
            if progress is not None:
                progress(done)
            return picture

        for gop in self.decode_gops(data, scales, sampler, **sampler_args):
            h = gop.header
            batch = min(batch, bitstream.decode_batch(h, batch))
            if pending_tok is not None and len(pending_tok) != len(gop.tokens):
                # a cut stream: this GOP kept fewer scales; finish the frames of the GOPs before it
                if gop.start > done:
                    yield take(gop.start - done)
                pending_tok = None
            if pending_tok is None:
                pending_tok, pending_codes = [[] for _ in gop.tokens], [[] for _ in gop.codes]
            for lst, x in zip(pending_tok, gop.tokens):
                lst.append(x)
            for lst, x in zip(pending_codes, gop.codes):
                lst.append(x)
            have = gop.start + h.gop_frames(gop.index) - done
            ready = have if gop.index == h.num_gops - 1 else have // batch * batch
            if ready:
                yield take(ready)

    def _picture(self, tokens, codes, h: Header, n: int, batch: int = 16) -> torch.Tensor:
        size = (h.height, h.width)
        if codes:
            k = h.num_scales - len(codes)
            return self.reconstruct(tokens[:k], h.latent_hw, size, codes=codes, frames=n, batch=batch)
        if len(tokens) == 0:  # zero scales: a flat grey-ish decode of the empty latent
            tokens = [torch.zeros(n, *h.schedule[0], dtype=torch.long)]
            return self.reconstruct(tokens, h.latent_hw, size, upto=0, batch=batch)
        return self.reconstruct(tokens, h.latent_hw, size, batch=batch)

    def _fill_blocks(self, walk: GopWalk, k, sampler: DetailSampler) -> list[torch.Tensor]:
        """Decoder only: fill scales k..K-1 of one GOP, continuing its walk (scale-major).

        The context input of scale s is f_hat of the sent scales plus the fills of scales k..s-1: their
        tokens, or for ``mean`` with ``mean_context="latent"`` their expected codes (the same numbers the
        picture is made of). Block (t, s) also sees frame t-1's filled tokens (argmax for ``mean``).
        Returns the expected-code maps (n, C, h_s, w_s) of a latent fill, else [].
        """
        K = len(walk.schedule)
        maps = {s: [] for s in range(k, K)}
        latent_context = sampler.latent_fill and sampler.mean_context == "latent"

        def contribution(s):   # what a filled scale adds to f_hat: its expected codes (a latent fill)
            return self.quantizer.code_contribution(torch.stack(maps[s]), s, walk.latent_hw) \
                if latent_context else None

        for block in walk.blocks(range(k, K), contribution):
            t, s = block.t, block.s
            still = walk.parent_copied(t, s) if sampler.name == "copy" and t > 0 and s > 0 else None
            if sampler.latent_fill:
                maps[s].append(self.quantizer.expected_code(sampler.probabilities(block.logits), block.shape))
            block.symbols = sampler.choose(block.logits, walk.gop, t, s, block.prev, still)
        return [torch.stack(maps[s]) for s in range(k, K)] if sampler.latent_fill else []

    def decode(self, data: bytes, scales: int | None = None, sampler: DetailSampler | str = "zero",
               **sampler_args) -> torch.Tensor:
        """.pgvc bytes -> video (T, 3, H, W) in [0, 1].

        ``scales=k`` decodes only the first k scales (as if the stream had been truncated);
        ``sampler`` fills the rest: "zero" (none), "argmax", "mean" (expected code, a latent fill),
        "sample" or "copy" (``temperature``, ``top_k``, ``seed``); see ``DetailSampler``.
        For long videos, ``decode_iter`` yields the frames GOP by GOP instead. ``limits=`` / ``strict=``:
        see ``read``. A cut stream decodes every complete scale of every GOP (with a warning);
        ``decode_with_report`` also returns what was decoded per GOP.
        """
        return self.decode_with_report(data, scales, sampler, **sampler_args)[0]

    def decode_with_report(self, data: bytes, scales: int | None = None, sampler: DetailSampler | str = "zero",
                           **kw) -> tuple[torch.Tensor, bitstream.ReadReport]:
        """``decode`` plus the ``bitstream.ReadReport``: complete or cut, ``scales_decoded`` per GOP,
        ``dropped()`` chunks, and a one-line ``summary()``."""
        with warnings.catch_warnings():  # the whole video is held: check its memory too (the cut warns below)
            warnings.simplefilter("ignore")
            self.read(data, kw.get("limits"), kw.get("strict", False), whole_video=True)
        report = []
        video = torch.cat(list(self.decode_iter(data, scales, sampler, report=report, **kw)))
        return video, report[0]

    # ---- analysis --------------------------------------------------------------------------------
    def analyze(self, video, fps=Fraction(25), **options) -> dict:
        """Where the bits go: model bits per frame and scale, bits per token, and two baselines.

        * ``unigram``: a static per-scale token histogram counted on the training data (shipped with
          the model) -- the baseline the context model must beat;
        * ``oracle_unigram``: the clip's own per-scale histogram (its empirical entropy), which no
          real coder can reach without sending the histogram; shown for scale.
        """
        _, stats = self.encode_with_stats(video, fps, **options)
        return self.bit_statistics(stats)

    def bit_statistics(self, result: "EncodeResult") -> dict:
        """``analyze``'s figures from an ``EncodeResult`` the caller already has (no second encode); a
        stream that sends k < K scales has figures for its k sent scales."""
        data, tokens = result.data, result.tokens
        bits = result.model_bits[:, :len(tokens)]
        per_scale = bits.sum(0)
        counts = np.array([t.numel() for t in tokens])
        unigram = np.array(self.context_model.unigram_bits(tokens))
        oracle = []
        for tok in tokens:
            freq = torch.bincount(tok.flatten(), minlength=self.quantizer.codebook_size).double()
            p = freq[freq > 0] / freq.sum()
            oracle.append(float(-(freq[freq > 0] * p.log2()).sum()))
        return {"bytes": len(data), "model_bits_per_frame": bits.sum(1).tolist(),
                "model_bits_per_scale": per_scale.tolist(), "tokens_per_scale": counts.tolist(),
                "bits_per_token_per_scale": (per_scale / counts).tolist(),
                "unigram_bits_per_scale": unigram.tolist(),
                "unigram_bits_per_token_per_scale": (unigram / counts).tolist(),
                "ratio_to_unigram_per_scale": (per_scale / np.maximum(unigram, 1e-9)).tolist(),
                "ratio_to_unigram": float(per_scale.sum() / max(unigram.sum(), 1e-9)),
                "oracle_unigram_bits_per_scale": oracle,
                "model_bits_map": bits, "tokens": tokens}


@dataclass(eq=False)
class EncodeResult:
    """What the encoder knew, returned by ``Codec.encode_with_stats`` beside the bytes, so that no tool
    re-runs the Transformer or re-parses the stream to learn it.

    ``tokens[s]``: (T, h_s, w_s) int64, the sent scales; ``synthesized``: the token maps of the scales a
    stream of a mask that is not truncation safe does not send (empty otherwise); ``token_bits[s]``: (T, h_s, w_s) float64, the model bits
    -log2 p of every token under its coded integer CDF (``Block.bits``); ``model_bits``: (T, K) their
    sums per block; ``gate``: (T, K) the mean copy gate of each block (NaN: intra frame or gate off);
    ``rdo_distortion``: (T, K) the RDO's latent squared error per block; ``chunk_bytes``: (G, K) bytes of
    every chunk (GOP, scale) as written; ``header``: the stream's ``bitstream.Header``; ``options``: the
    encoder options used (``CodecConfig`` as a dict); seconds spent tokenizing, in total and (with
    ``verify``) verifying.

    It also reads as a mapping of those names (``result["tokens"]``, ``dict(result)``; ``"bytes"`` is
    ``len(data)``), as the stats dict of earlier versions did.
    """
    data: bytes
    header: Header
    latent_hw: tuple
    options: dict
    model_bits: np.ndarray
    rdo_distortion: np.ndarray
    gate: np.ndarray
    token_bits: list
    chunk_bytes: np.ndarray
    tokens: list = None
    synthesized: list = field(default_factory=list)
    seconds_tokenize: float = 0.0
    seconds_total: float = 0.0
    seconds_verify: float | None = None

    _KEYS = ("tokens", "latent_hw", "model_bits", "bytes", "rdo_distortion", "options", "token_bits", "gate",
             "chunk_bytes", "header", "seconds_tokenize", "seconds_total")

    @property
    def bytes(self) -> int:
        return len(self.data)

    @property
    def bits_per_token(self) -> np.ndarray:
        """Mean model bits per token of every scale, (K,)."""
        return np.array([b.mean() for b in self.token_bits])

    def keys(self):
        return [k for k in self._KEYS] + (["seconds_verify"] if self.seconds_verify is not None else [])

    def __getitem__(self, key):
        if key not in self.keys():
            raise KeyError(key)
        return getattr(self, key)

    def __contains__(self, key) -> bool:
        return key in self.keys()

    def get(self, key, default=None):
        return self[key] if key in self else default


@dataclass
class DecodedGop:
    """What ``Codec.decode_gops`` yields per GOP: tokens per scale (n, h_s, w_s) and, for a latent fill,
    the expected-code maps of the filled scales."""
    index: int
    start: int                  # first frame of the GOP in the video
    tokens: list
    codes: list
    header: Header


class _TokenChooser:
    """The encoder's token choice for one GOP, scale-major (see the module docstring, "RD-optimised").

    At the first block of scale s it builds the quantizer's residual of every frame from the tokens
    already chosen at scales < s (``f_rest -= scale_contribution(tokens[s-1])``, the same steps as
    ``MultiScaleResidualQuantizer._residual_loop``), then per block picks nearest codes (lambda = 0) or
    minimises ``A_s * ||r - e||^2 + lambda * bits`` over the candidates.
    """

    def __init__(self, quantizer, f_NChw, cfg: CodecConfig, known):
        self.q, self.f_rest, self.cfg, self.known = quantizer, f_NChw, cfg, known
        self.latent_hw = tuple(f_NChw.shape[-2:])
        self.scale = -1

    def _start_scale(self, s):
        if s > 0:
            idx = torch.stack(self.known[s - 1])
            self.f_rest = self.f_rest - self.q.scale_contribution(idx, s - 1, self.latent_hw)
        size = self.q.schedule(self.latent_hw)[s]
        r = area_down(self.f_rest, size)
        N = r.shape[0]
        self.dist_NLV = self.q.code_distances(r).view(N, size[0] * size[1], -1)
        self.r2_NL = (r * r).sum(1).reshape(N, -1)
        self.area = (self.latent_hw[0] * self.latent_hw[1]) / (size[0] * size[1])
        self.scale = s

    def choose(self, t, s, cdf_LV1, prev_L):
        """(tokens (L,), distortion of the choice: A_s * sum ||r - e||^2)."""
        if s != self.scale:
            self._start_scale(s)
        return self._choose(self.dist_NLV[t], self.r2_NL[t], cdf_LV1, prev_L, t > 0)

    def _choose(self, dist_LV, r2_L, cdf_LV1, prev_L, p_frame: bool):
        lam = float(self.cfg.rdo_lambda) * (float(self.cfg.rdo_p_factor) if p_frame else 1.0)
        if lam == 0:
            sym = dist_LV.argmin(1)
        else:
            cost_LV = self.area * dist_LV.double()
            bits_LV = code_lengths(cdf_LV1)
            cost_LV = cost_LV + lam * bits_LV
            n = self.cfg.rdo_candidates
            if n and n < cost_LV.shape[1]:
                allowed = torch.zeros_like(cost_LV, dtype=torch.bool)
                allowed.scatter_(1, dist_LV.topk(n, dim=1, largest=False).indices, True)
                if prev_L is not None:
                    allowed.scatter_(1, prev_L.reshape(-1, 1), True)
                cost_LV = cost_LV.masked_fill(~allowed, float("inf"))
            sym = cost_LV.argmin(1)
        d = (dist_LV.gather(1, sym[:, None]).squeeze(1) + r2_L).sum() * self.area
        return sym, float(d)


class _FrameTokenChooser(_TokenChooser):
    """``_TokenChooser`` for a frame-major walk (a mask that is not truncation safe): frame t's residual
    at scale s is built from frame t's own tokens of scales < s, one frame at a time."""

    def __init__(self, quantizer, f_NChw, cfg: CodecConfig, known):
        super().__init__(quantizer, f_NChw, cfg, known)
        self.rest = {}   # t -> (scales removed, f_rest (1, C, h, w))

    def choose(self, t, s, cdf_LV1, prev_L):
        done, f_rest = self.rest.get(t, (0, self.f_rest[t:t + 1]))
        while done < s:
            f_rest = f_rest - self.q.scale_contribution(self.known[done][t][None], done, self.latent_hw)
            done += 1
        self.rest[t] = (done, f_rest)
        size = self.q.schedule(self.latent_hw)[s]
        r = area_down(f_rest, size)
        self.area = (self.latent_hw[0] * self.latent_hw[1]) / (size[0] * size[1])
        return self._choose(self.q.code_distances(r), (r * r).sum(1).reshape(-1), cdf_LV1, prev_L, t > 0)
