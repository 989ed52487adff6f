"""Codec: composes the five stages into ``encode(video) -> bytes`` and ``decode(bytes) -> video``.

::

    encode:  frames ─► Tokenizer.encode ─► Quantizer.tokenize ─► tokens[s] (T, h_s, w_s)
             per GOP, scale-major, block by block:
                 context_input ─► ContextModel.block_logits ─► logits_to_cdf ─► coder.encode ─► chunk
             ─► bitstream.write_stream (header | table | scale 0 | scale 1 | ...)

    decode:  bitstream.read_stream ─► checks (model fingerprint, sizes, CRCs)
             per GOP: the SAME walk, with coder.decode instead of coder.encode, for the k sent scales;
             DetailSampler fills scales k..K-1 (or zero-fill stops there)
             ─► Quantizer.tokens_to_latent ─► Tokenizer.decode ─► crop ─► frames

Encoder and decoder share one function (``walk_blocks``) that visits blocks and asks the context model for
logits, so they compute bit-identical CDFs by construction. The coding path runs with a fixed number
of threads and deterministic algorithms (``coding_threads``).
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import math
import time
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch
from torch import nn

from . import bitstream
from .bitstream import BitstreamError, Header, Stream
from .stages.context_model import ContextModel
from .stages.entropy import get_coder, logits_to_cdf, model_bits
from .stages.masks import build_mask, decode_order, is_truncation_safe
from .stages.quantizer import MultiScaleResidualQuantizer
from .stages.sampler import DetailSampler
from .stages.tokenizer import ConvTokenizer

CHECKPOINT_DIR = Path(__file__).resolve().parent / "checkpoints"
PRETRAINED = {"tiny": CHECKPOINT_DIR / "tiny.pt"}


class CodecError(ValueError):
    """The input given to the codec cannot be coded (wrong shape, range, ...)."""


@dataclass
class CodecConfig:
    gop: int = 8                 # frames per GOP; GOPs are coded independently
    coder: str = "torchac"       # entropy coder backend
    coding_threads: int = 1      # intra-op threads on the coding path (fixed for determinism)


@contextlib.contextmanager
def deterministic(threads: int):
    """Fixed threads + deterministic kernels for the coding path; restores the caller's settings."""
    old_threads, old_det = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)
    try:
        with torch.no_grad():
            yield
    finally:
        torch.set_num_threads(old_threads)
        torch.use_deterministic_algorithms(old_det)


def tokens_bytes(tok: torch.Tensor) -> bytes:
    return tok.to(torch.int16).numpy().astype("<i2").tobytes()


class Codec(nn.Module):
    def __init__(self, tokenizer: ConvTokenizer, quantizer: MultiScaleResidualQuantizer,
                 context_model: ContextModel, gop: int = 8, coder: str = "torchac", coding_threads: int = 1):
        super().__init__()
        self.tokenizer, self.quantizer, self.context_model = tokenizer, quantizer, context_model
        self.config = CodecConfig(gop, coder, coding_threads)
        if tokenizer.latent_dim != quantizer.latent_dim or quantizer.latent_dim != context_model.config.latent_dim:
            raise ValueError("tokenizer, quantizer and context model disagree on the latent dimension")
        if quantizer.num_scales != context_model.config.num_scales:
            raise ValueError("quantizer and context model disagree on the number of scales")
        allowed = build_mask(context_model.config.mask, 2, quantizer.num_scales, context_model.config.window)
        if not is_truncation_safe(allowed, quantizer.num_scales):
            raise ValueError(f"mask {context_model.config.mask!r} is not truncation safe; the codec "
                             "stores scales coarse-to-fine and needs a mask like 'progvc_sparse'")
        self.eval()

    # ---- construction and identity ----------------------------------------------------------------
    def describe_config(self) -> dict:
        return {"tokenizer": asdict(self.tokenizer.config), "quantizer": asdict(self.quantizer.config),
                "context_model": asdict(self.context_model.config), "codec": asdict(self.config)}

    @classmethod
    def from_config(cls, config: dict) -> "Codec":
        return cls(ConvTokenizer(**config["tokenizer"]), MultiScaleResidualQuantizer(**config["quantizer"]),
                   ContextModel(**config["context_model"]), **config.get("codec", {}))

    def save(self, path, meta: dict | None = None):
        torch.save({"config": self.describe_config(), "state_dict": self.state_dict(), "meta": meta or {}}, path)

    @classmethod
    def load(cls, path) -> "Codec":
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no checkpoint at {path}")
        try:
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
            codec = cls.from_config(ckpt["config"])
            state = dict(ckpt["state_dict"])
            # checkpoints from before the unigram baseline existed: no histogram counted (uniform)
            state.setdefault("context_model.unigram_counts", codec.context_model.unigram_counts)
            codec.load_state_dict(state)
        except Exception as e:  # any unreadable or mismatched file: say which one
            raise ValueError(f"{path} is not a progvc_lab codec checkpoint ({type(e).__name__}: {e})") from e
        codec.meta = ckpt.get("meta", {})
        return codec.eval()

    @classmethod
    def from_pretrained(cls, name_or_path: str = "tiny", **overrides) -> "Codec":
        """A shipped model by name ("tiny"), a local .pt file or folder, or a hub repo "org/name".

        Hub repos are fetched with huggingface_hub (``model.pt`` in the repo); offline, only what is
        already in the local hub cache loads.
        """
        if name_or_path in PRETRAINED:
            path = PRETRAINED[name_or_path]
            if not path.is_file():
                raise FileNotFoundError(f"the shipped checkpoint {path} is missing; reinstall progvc_lab "
                                        "or train one with 'progvc-lab train' (see README)")
        elif Path(name_or_path).exists():
            path = Path(name_or_path)
            if path.is_dir():
                path = path / "model.pt"
        elif name_or_path.count("/") == 1:
            from huggingface_hub import hf_hub_download
            try:
                path = Path(hf_hub_download(repo_id=name_or_path, filename="model.pt"))
            except Exception as e:
                raise FileNotFoundError(f"could not fetch model {name_or_path!r} from the hub and it is not "
                                        f"in the local cache ({type(e).__name__}); names shipped with "
                                        f"progvc_lab: {sorted(PRETRAINED)}") from e
        else:
            raise FileNotFoundError(f"unknown model {name_or_path!r}: not a shipped name "
                                    f"({sorted(PRETRAINED)}), a local file, or a hub repo 'org/name'")
        codec = cls.load(path)
        for k, v in overrides.items():
            if not hasattr(codec.config, k):
                raise TypeError(f"unknown codec option {k!r}")
            setattr(codec.config, k, v)
        return codec

    def fingerprint(self) -> bytes:
        """8 bytes identifying the weights and config (a stream only decodes with the same model)."""
        h = hashlib.sha256()
        cfg = self.describe_config()
        cfg.pop("codec")  # GOP and threads live in the stream header, not in the model
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
    def tokenize(self, video: torch.Tensor, batch: int = 16) -> tuple[list[torch.Tensor], tuple[int, int]]:
        """Video (T, 3, H, W) -> tokens per scale [(T, h_s, w_s)] and the latent size."""
        video = self.check_video(video)
        per_scale = [[] for _ in range(self.quantizer.num_scales)]
        for i in range(0, len(video), batch):
            f = self.tokenizer.encode(video[i:i + batch])
            for s, tok in enumerate(self.quantizer.tokenize(f)):
                per_scale[s].append(tok)
        return [torch.cat(x) for x in per_scale], tuple(f.shape[-2:])

    @torch.no_grad()
    def reconstruct(self, tokens: list[torch.Tensor], latent_hw, size, upto: int | None = None,
                    batch: int = 16) -> torch.Tensor:
        """Tokens -> frames (T, 3, H, W) in [0, 1], using the first ``upto`` scales."""
        frames = []
        for i in range(0, tokens[0].shape[0], batch):
            f = self.quantizer.tokens_to_latent([t[i:i + batch] for t in tokens], latent_hw, upto)
            frames.append(self.tokenizer.decode(f, size).clamp(0, 1))
        return torch.cat(frames)

    def walk_blocks(self, state, tokens, s_range, on_block, n_frames):
        """Visit blocks scale-major; ``on_block(t, s, logits) -> tokens (h_s, w_s)``.

        THE coding order. Encoder, decoder and the detail sampler all go through here; so do analysis
        tools (``viz.token_bits_maps``, the course) that need per-block probabilities exactly as coded.
        Start each GOP with ``new_gop``.
        """
        latent_hw = state.latent_hw
        for s in s_range:
            known = [torch.stack(tokens[j]) for j in range(s)]
            ctx_NChw = self.quantizer.context_input(known, s, latent_hw, num_frames=n_frames)
            for t in range(n_frames):
                logits = self.context_model.block_logits(state, t, s, ctx_NChw[t])
                tok = on_block(t, s, logits).view(state.schedule[s])
                state.tokens[(t, s)] = tok
                tokens[s][t] = tok

    def new_gop(self, latent_hw, schedule, n_frames):
        state = self.context_model.new_state(latent_hw, schedule, n_frames)
        decode_order(state.allowed_BB, len(schedule))  # raises if scale-major order is invalid
        return state, [[None] * n_frames for _ in schedule]

    # ---- encode ----------------------------------------------------------------------------------
    def encode(self, video, fps=Fraction(25), verify: bool = False) -> bytes:
        """Video (T, 3, H, W) float RGB in [0, 1] -> .pgvc bytes. ``verify`` decodes and compares tokens."""
        data, _ = self.encode_with_stats(video, fps, verify)
        return data

    def encode_with_stats(self, video, fps=Fraction(25), verify: bool = False) -> tuple[bytes, dict]:
        video = self.check_video(video)
        fps = Fraction(fps).limit_denominator(65535)
        if fps <= 0:
            raise CodecError(f"fps must be positive, got {fps}")
        if fps.numerator > 65535:  # the header stores fps as two u16
            fps = fps.limit_denominator(max(1, 65535 // math.ceil(fps)))
        if not 1 <= self.config.gop <= 65535:
            raise CodecError(f"GOP length must be 1..65535, got {self.config.gop}")
        if video.shape[0] > bitstream.MAX_FRAMES:
            raise CodecError(f"at most {bitstream.MAX_FRAMES} frames per stream, got {video.shape[0]}")
        T, _, H, W = video.shape
        t0 = time.perf_counter()
        with deterministic(self.config.coding_threads):
            tokens, latent_hw = self.tokenize(video)
            t_tok = time.perf_counter()
            schedule = self.quantizer.schedule(latent_hw)
            header = Header(self.fingerprint(), W, H, fps.numerator, fps.denominator, T, self.config.gop,
                            latent_hw, schedule, len(schedule), "vq", self.context_model.config.mask,
                            self.context_model.config.window, self.config.coder)
            coder = get_coder(self.config.coder)
            stream = Stream(header)
            bits = np.zeros((T, len(schedule)))
            for g in range(header.num_gops):
                n = header.gop_frames(g)
                gop_tokens = [tok[g * header.gop: g * header.gop + n] for tok in tokens]
                strings = {}

                def on_block(t, s, logits):
                    cdf = logits_to_cdf(logits)
                    sym = gop_tokens[s][t].flatten()
                    strings[(t, s)] = coder.encode(cdf, sym)
                    bits[g * header.gop + t, s] = model_bits(cdf, sym)
                    return gop_tokens[s][t]

                state, known = self.new_gop(latent_hw, schedule, n)
                self.walk_blocks(state, known, range(len(schedule)), on_block, n)
                for s in range(len(schedule)):
                    stream.chunks[(g, s)] = bitstream.pack_chunk([strings[(t, s)] for t in range(n)])
                    stream.crcs[(g, s)] = bitstream.tokens_crc(tokens_bytes(gop_tokens[s]))
        data = bitstream.write_stream(stream)
        t_end = time.perf_counter()
        stats = {"tokens": tokens, "latent_hw": latent_hw, "model_bits": bits, "bytes": len(data),
                 "seconds_tokenize": t_tok - t0, "seconds_total": t_end - t0}
        if verify:
            decoded, _ = self.decode_tokens(data)
            for s, (a, b) in enumerate(zip(tokens, decoded)):
                if not torch.equal(a, b):
                    raise RuntimeError(f"encoder self-check failed: scale {s} decodes to different tokens; "
                                       "this is a bug (or a non-deterministic platform), please report it")
        return data, stats

    # ---- decode ----------------------------------------------------------------------------------
    def read(self, data: bytes) -> Stream:
        """Parse a stream and check that it was made by this model."""
        if isinstance(data, (str, Path)):
            raise CodecError("decode takes the stream's bytes; read the file first (Path(p).read_bytes())")
        stream = bitstream.read_stream(data)
        h = stream.header
        if h.fingerprint != self.fingerprint():
            raise BitstreamError(f"model mismatch: the stream was made by model {h.fingerprint.hex()}, this "
                                 f"codec is {self.fingerprint().hex()}; decode with the model that encoded it")
        cm = self.context_model.config
        if (h.mask, h.window, h.quantizer) != (cm.mask, cm.window, "vq"):
            raise BitstreamError(f"stream uses mask {h.mask!r} (window {h.window}) and quantizer "
                                 f"{h.quantizer!r}; this codec has {cm.mask!r} (window {cm.window}) and 'vq'")
        expect_hw = self.tokenizer.latent_size(h.height, h.width)
        if tuple(h.latent_hw) != expect_hw or [tuple(x) for x in h.schedule] != self.quantizer.schedule(expect_hw):
            raise BitstreamError("stream's latent size or scale schedule does not fit its frame size; "
                                 "the header is corrupted or from another model")
        if h.coder not in ("torchac",):
            raise BitstreamError(f"stream uses entropy coder {h.coder!r}, which this build cannot decode")
        return stream

    def decode_tokens(self, data: bytes, scales: int | None = None, sampler: DetailSampler | str = "zero",
                      **sampler_args) -> tuple[list[torch.Tensor], Header]:
        """Bytes -> tokens per scale (T, h_s, w_s). Scales >= k are filled by the sampler (or absent
        when it is ``zero``: then only k token maps are returned)."""
        stream = self.read(data)
        h = stream.header
        k = h.scales_sent if scales is None else scales
        if not 0 <= k <= h.scales_sent:
            raise ValueError(f"cannot decode {k} scales: the stream carries {h.scales_sent} of {h.num_scales}")
        if isinstance(sampler, str):
            sampler = DetailSampler(sampler, **sampler_args)
        coder = get_coder(h.coder)
        last = h.num_scales if sampler.predicts else k
        out = [[] for _ in range(last)]
        with deterministic(self.config.coding_threads):
            for g in range(h.num_gops):
                n = h.gop_frames(g)
                strings = {s: bitstream.unpack_chunk(stream.chunks[(g, s)], n, f"chunk (GOP {g}, scale {s})")
                           for s in range(k)}

                def on_decode(t, s, logits):
                    try:
                        sym = coder.decode(logits_to_cdf(logits), strings[s][t])
                    except Exception as e:
                        raise BitstreamError(f"chunk (GOP {g}, scale {s}) is corrupted: {e}") from e
                    return sym

                state, known = self.new_gop(h.latent_hw, h.schedule, n)
                self.walk_blocks(state, known, range(k), on_decode, n)
                for s in range(k):
                    if bitstream.tokens_crc(tokens_bytes(torch.stack(known[s]))) != stream.crcs[(g, s)]:
                        raise BitstreamError(f"chunk (GOP {g}, scale {s}) is corrupted: its tokens fail the CRC")
                if sampler.predicts:
                    self.walk_blocks(state, known, range(k, h.num_scales),
                               lambda t, s, logits: sampler.choose(logits, g, t, s), n)
                for s in range(last):
                    out[s].append(torch.stack(known[s]))
        return [torch.cat(x) if x else torch.zeros(0, dtype=torch.long) for x in out], h

    def decode(self, data: bytes, scales: int | None = None, sampler: DetailSampler | str = "zero",
               **sampler_args) -> torch.Tensor:
        """.pgvc bytes -> video (T, 3, H, W) in [0, 1].

        ``scales=k`` decodes only the first k scales (as if the stream had been truncated);
        ``sampler`` fills the rest: "zero" (none), "argmax" or "sample" (``temperature``, ``top_k``, ``seed``).
        """
        tokens, h = self.decode_tokens(data, scales, sampler, **sampler_args)
        if len(tokens) == 0:  # zero scales: a flat grey-ish decode of the empty latent
            tokens = [torch.zeros(h.num_frames, *h.schedule[0], dtype=torch.long)]
            return self.reconstruct(tokens, h.latent_hw, (h.height, h.width), upto=0)
        return self.reconstruct(tokens, h.latent_hw, (h.height, h.width))

    # ---- analysis --------------------------------------------------------------------------------
    def analyze(self, video, fps=Fraction(25)) -> dict:
        """Where the bits go: model bits per frame and scale, bits per token, and two baselines.

        * ``unigram``: a static per-scale token histogram counted on the training data (shipped with
          the model) -- the baseline the context model must beat;
        * ``oracle_unigram``: the clip's own per-scale histogram (its empirical entropy), which no
          real coder can reach without sending the histogram; shown for scale.
        """
        data, stats = self.encode_with_stats(video, fps)
        bits = stats["model_bits"]
        tokens = stats["tokens"]
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
