"""``progvc-lab bench``'s comparison of the variants: every shipped model of a kind, on one clip.

A variant is one swapped stage, everything else equal::

    masks       the shipped models that differ from the default only by the context model's mask
                (tiny: progvc_sparse, tiny-var: var, tiny-infinitystar: infinitystar)
    quantizers  the shipped models that differ only by the quantizer (tiny: VQ, tiny-bsq: BSQ)
    coders      the entropy coders of the registry on the default model's tokens (torchac, constriction)
    samplers    the detail samplers filling the unsent scales of the default model's stream cut after k

Per model (``model_report``): encode and decode frames/s of the full pyramid; model bits per token of
every scale beside the per-scale unigram (the training data's static histogram, shipped with the model:
the baseline the context model must beat) and the clip's own histogram (its empirical entropy, which no
coder reaches without sending the histogram); estimated bytes (the model's bits) and actual bytes (the
file) at every k, with PSNR-Y and MS-SSIM of the zero-fill decode; attention pairs (query, key) the mask
lets the Transformer compute, beside those of VAR's block-causal mask. A truncation-safe model is
encoded once and cut after k; a model whose mask is not safe is encoded once per k (``encode(scales=k)``).

Per coder (``coder_report``): bytes at every k, calls, chunks, model bytes against the bytes in chunks
(the per-call and per-chunk overhead) and whether the stream decodes to the encoder's tokens at every k.

Per sampler (``sampler_report``): at every k < K the SAME cut stream (equal bytes) decoded by each
sampler, scored by the evaluation's one ``rdeval.score`` (PSNR-Y, MS-SSIM, ST-LPIPS, texture ratio).

Every figure is measured here; nothing is read from earlier results. ``run_variants`` returns a
JSON-ready dict and ``format_variants`` prints it as tables.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch

from . import bitstream
from .bench import chunk_overhead
from .bench import quiet as _quiet
from .codec import PRETRAINED, Codec
from .rdeval import ladder

KINDS = ("masks", "quantizers", "coders", "samplers")
DEFAULT_MODEL = "tiny"


class VariantError(ValueError):
    """The comparison cannot run as asked (an unknown kind, model, coder or sampler)."""


def parse_kinds(text: str | None) -> tuple[str, ...]:
    """``"all"`` (or None) -> every kind; ``"none"`` -> (); else a comma list of KINDS."""
    if text is None or text.strip() == "all":
        return KINDS
    if text.strip() == "none":
        return ()
    kinds = tuple(k.strip() for k in text.split(",") if k.strip())
    bad = [k for k in kinds if k not in KINDS]
    if bad:
        raise VariantError(f"--variants: unknown kind {bad[0]!r}; choose from all, none, {', '.join(KINDS)}")
    return kinds


def describe(codec: Codec) -> dict:
    """The stage names that tell variants apart."""
    names = codec.stage_names()
    return {"mask": codec.context_model.config.mask, "window": codec.context_model.config.window,
            "quantizer": names.get("quantizer"), "tokenizer": names.get("tokenizer"),
            "truncation_safe": bool(codec.truncation_safe)}


def shipped_variants(base: str = DEFAULT_MODEL, load=Codec.from_pretrained) -> dict[str, list[str]]:
    """The shipped models that make each kind of variant of ``base`` (``base`` first in each list).

    A model is a mask variant of ``base`` when only its mask differs, a quantizer variant when only its
    quantizer differs; read from the models themselves, not from their names."""
    if base not in PRETRAINED:
        raise VariantError(f"{base!r} is not a shipped model ({', '.join(PRETRAINED)})")
    from .stages.registry import init_args

    def info_of(codec):   # the tokenizer by its name and its settings: tiny-fast's narrower decoder is another one
        return {**describe(codec), "tokenizer_config": init_args(codec.tokenizer)}

    info = {name: info_of(load(name)) for name in PRETRAINED}
    ref = info[base]
    same = lambda a, b, keys: all(a[k] == b[k] for k in keys)  # noqa: E731
    masks = [base] + [n for n, d in info.items() if n != base and d["mask"] != ref["mask"]
                      and same(d, ref, ("quantizer", "tokenizer", "tokenizer_config"))]
    quantizers = [base] + [n for n, d in info.items() if n != base and d["quantizer"] != ref["quantizer"]
                           and same(d, ref, ("mask", "window", "tokenizer", "tokenizer_config"))]
    return {"masks": masks, "quantizers": quantizers}


def attention_pairs(codec: Codec, header: bitstream.Header) -> dict:
    """(query, key) token pairs the mask lets attention compute over the clip's GOPs, beside VAR's
    block-causal mask on the same GOPs (the densest truncation-unsafe mask) and per token."""
    from .stages.masks import attention_cost, build_mask

    cm = codec.context_model.config
    lengths = [h * w for h, w in header.schedule]
    ours = var = 0
    for g in range(header.num_gops):
        n = header.gop_frames(g)
        ours += attention_cost(build_mask(cm.mask, n, len(lengths), cm.window), lengths)
        var += attention_cost(build_mask("var", n, len(lengths), 1), lengths)
    tokens = header.num_frames * sum(lengths)
    return {"pairs": ours, "pairs_per_token": ours / tokens, "var_pairs": var, "fraction_of_var": ours / var}


def _timed(fn, *a, **kw):
    t0 = time.perf_counter()
    out = _quiet(fn, *a, **kw)
    return out, time.perf_counter() - t0


def _quality(video, decoded, perceptual: bool) -> dict:
    from .rdeval import score

    q = score(video, decoded, perceptual=perceptual)
    return {key: q[key] for key in ("psnr-y", "ms-ssim-rgb", "st-lpips", "texture-ratio")}


def model_report(codec: Codec, video: torch.Tensor, fps, name: str = "") -> dict:
    """Bits, bytes, quality at every k, attention pairs and speed of one model on one clip."""
    T, _, H, W = video.shape
    pixels = T * H * W
    K = codec.quantizer.num_scales
    _quiet(codec.encode, video[:1], fps)   # warm-up (first-call allocations) before anything is timed
    (data, res), enc_s = _timed(codec.encode_with_stats, video, fps)
    decoded, dec_s = _timed(codec.decode, data)
    stats = codec.bit_statistics(res)
    counts = np.array(stats["tokens_per_scale"], float)
    per_k = []
    for rung in ladder(codec, data, video=video, fps=fps, known={K: (decoded, dec_s)}):
        k, res_k = rung.k, rung.result or res   # an unsafe mask's k has its own encode (and bits)
        model_bytes = float(res_k.model_bits[:, :k].sum()) / 8
        per_k.append({"k": k, "bytes": len(rung.data), "model_bytes": model_bytes,
                      "bpp": len(rung.data) * 8 / pixels, "model_bpp": model_bytes * 8 / pixels,
                      "decode_fps": T / rung.decode_seconds, **_quality(video, rung.decoded, perceptual=False)})
    return {"model": name, **describe(codec), "codebook_size": int(codec.quantizer.codebook_size),
            "bytes": len(data), "encode_fps": T / enc_s, "decode_fps": T / dec_s,
            "tokens_per_scale": stats["tokens_per_scale"],
            "bits_per_token_per_scale": stats["bits_per_token_per_scale"],
            "unigram_bits_per_token_per_scale": stats["unigram_bits_per_token_per_scale"],
            "clip_entropy_bits_per_token_per_scale": (np.array(stats["oracle_unigram_bits_per_scale"])
                                                      / counts + 0.0).clip(0).tolist(),
            "ratio_to_unigram": stats["ratio_to_unigram"],
            "attention": attention_pairs(codec, res.header), "per_k": per_k}


def coder_report(codec: Codec, video: torch.Tensor, fps, coders=None) -> dict:
    """Each entropy coder on the same tokens: bytes at every k, model bits vs bytes, chunk count, round trip."""
    from .stages.entropy import CODERS

    coders = list(coders or CODERS)
    unknown = [c for c in coders if c not in CODERS]
    if unknown:
        raise VariantError(f"unknown coder {unknown[0]!r}; choose from {', '.join(CODERS)}")
    T = video.shape[0]
    K = codec.quantizer.num_scales
    out = {}
    for name in coders:
        _quiet(codec.encode, video[:1], fps, coder=name)   # warm-up: a coder's first call loads its extension
        (data, res), enc_s = _timed(codec.encode_with_stats, video, fps, coder=name)
        _, dec_s = _timed(codec.decode, data)
        row = chunk_overhead(res)
        row["bytes_per_k"] = [len(bitstream.truncate(data, k)) for k in range(1, K + 1)]
        row["model_bytes_per_k"] = [float(res.model_bits[:, :k].sum()) / 8 for k in range(1, K + 1)]
        row["round_trip_every_k"] = all(
            all(torch.equal(a, b) for a, b in zip(_quiet(codec.decode_tokens, bitstream.truncate(data, k))[0],
                                                  res.tokens[:k]))
            for k in range(1, K + 1))
        row.update(encode_fps=T / enc_s, decode_fps=T / dec_s)
        out[name] = row
    return out


def sampler_report(codec: Codec, video: torch.Tensor, fps, samplers=None, data: bytes | None = None,
                   perceptual: bool | None = None) -> dict:
    """Each detail sampler on the same stream cut after k (equal bytes), k = 1 .. K-1, scored by the eval.

    ``samplers``: registered names (default: all of them) or sampler objects (``stages.protocols.
    DetailSampler``; a user's own class, labelled by its ``name``)."""
    from .perceptual import st_lpips_available
    from .stages import protocols, registry

    known = registry.names("detail_sampler")
    samplers = list(samplers or known)
    unknown = [s for s in samplers if isinstance(s, str) and s not in known]
    if unknown:
        raise VariantError(f"unknown sampler {unknown[0]!r}; choose from {', '.join(known)}")
    for s in samplers:
        if not isinstance(s, str) and protocols.missing("detail_sampler", s):
            raise VariantError(f"{s!r} is not a detail sampler: it lacks "
                               f"{', '.join(protocols.missing('detail_sampler', s))}")
    labels = [s if isinstance(s, str) else getattr(s, "name", type(s).__name__) for s in samplers]
    if perceptual is None:
        perceptual = st_lpips_available()[0]
    if not codec.truncation_safe:
        raise VariantError("the samplers are compared on one stream cut after k: the model's mask must be "
                           "truncation safe")
    T = video.shape[0]
    K = codec.quantizer.num_scales
    data = data if data is not None else _quiet(codec.encode, video, fps)
    rows = {label: [{"k": r.k, "bytes": len(r.data), "decode_fps": T / r.decode_seconds,
                     **_quality(video, r.decoded, perceptual)}
                    for r in ladder(codec, data, range(1, K), sampler=sampler)]
            for label, sampler in zip(labels, samplers)}
    full, sec = _timed(codec.decode, data)
    return {"perceptual": bool(perceptual), "samplers": rows,
            "full": {"k": K, "bytes": len(data), "decode_fps": T / sec, **_quality(video, full, perceptual)}}


def run_variants(clip: str | Path | None = None, kinds=KINDS, base: str = DEFAULT_MODEL, models=None,
                 coders=None, samplers=None, frames: int | None = None, perceptual: bool | None = None,
                 log=print) -> dict:
    """Compare the variants of ``kinds`` on one clip; ``models`` narrows the mask and quantizer variants
    (default: every shipped one; a model file given there joins the mask variants), ``coders`` and
    ``samplers`` narrow theirs. ``base`` may also be a model file (then the masks and quantizers are that
    one model). ``perceptual``: score the samplers with ST-LPIPS (None: when its weights are installed)."""
    from .data import clip_path, load_clip
    from .evaluate import load_codec

    clip = clip_path(clip)
    if not clip.exists():
        raise FileNotFoundError(f"{clip}: no such clip")
    video, fps = load_clip(clip, frames)
    T, _, H, W = video.shape
    cache: dict = {}

    def get(name):
        if name not in cache:
            cache[name] = load_codec(name)
        return cache[name]

    if base in PRETRAINED:
        groups = shipped_variants(base, get)
    else:
        groups = {"masks": [base], "quantizers": [base]}
    if models:
        unknown = [m for m in models if m not in PRETRAINED and not Path(m).exists()]
        if unknown:
            raise VariantError(f"unknown model {unknown[0]!r}; shipped: {', '.join(PRETRAINED)}, or a .pt file")
        groups = {kind: [m for m in names if m in models] for kind, names in groups.items()}
        extra = [m for m in models if not any(m in names for names in groups.values())]
        groups["masks"] += extra   # a user's model file: compared with the rest
    doc = {"clip": str(clip), "frames": T, "width": W, "height": H, "fps": float(fps), "base": str(base),
           "kinds": list(kinds), "groups": {k: groups[k] for k in ("masks", "quantizers") if k in kinds},
           "models": {}}
    from .rdeval import seen_in_training

    for kind in ("masks", "quantizers"):
        if kind not in kinds:
            continue
        for name in groups[kind]:
            if name in doc["models"]:
                continue
            log(f"  {kind[:-1]} variant {name} ...")
            codec = get(name)
            doc["models"][name] = model_report(codec, video, fps, name)
            doc["models"][name]["seen_in_training"] = bool(seen_in_training(codec, clip, str(name)))
    base_codec = get(base)
    if "coders" in kinds:
        log("  entropy coders ...")
        doc["coders"] = coder_report(base_codec, video, fps, coders)
    if "samplers" in kinds and not base_codec.truncation_safe:
        doc["samplers_skipped"] = (f"{base}'s mask ({base_codec.context_model.config.mask}) is not truncation "
                                   "safe: its streams cannot be cut, so there are no unsent scales to fill")
        log(f"  detail samplers skipped: {doc['samplers_skipped']}")
    elif "samplers" in kinds:
        log("  detail samplers ...")
        doc["samplers"] = sampler_report(base_codec, video, fps, samplers, perceptual=perceptual)
    return doc


def _f(x, fmt="{:.3f}"):
    return "-" if x is None else fmt.format(x)


def format_variants(doc: dict) -> str:
    """The comparison as text tables (what ``progvc-lab bench`` prints)."""
    lines = [f"\n== variants on {doc['clip']} ({doc['frames']} frames {doc['width']}x{doc['height']})"]
    models = doc.get("models", {})
    for kind, names in doc.get("groups", {}).items():
        names = [n for n in names if n in models]
        if not names:
            continue
        lines.append(f"\n-- {kind}: " + ", ".join(
            f"{n} ({models[n]['mask'] if kind == 'masks' else models[n]['quantizer']})" for n in names))
        K = len(models[names[0]]["per_k"])
        lines.append(f"  {'model':<18} {'enc f/s':>7} {'dec f/s':>7} {'bytes':>7} {'vs unigram':>10} "
                     f"{'attn pairs':>11} {'of VAR':>6}  safe  seen")
        for n in names:
            m = models[n]
            a = m["attention"]
            lines.append(f"  {n:<18} {m['encode_fps']:7.1f} {m['decode_fps']:7.1f} {m['bytes']:7d} "
                         f"{m['ratio_to_unigram']:10.2f} {a['pairs']:11d} {a['fraction_of_var']:6.2f}  "
                         f"{'yes ' if m['truncation_safe'] else 'no  '}  {'yes' if m.get('seen_in_training') else 'no'}")
        lines.append("  bits per token by scale (model / unigram / clip entropy):")
        for n in names:
            m = models[n]
            lines.append(f"    {n:<16} " + "  ".join(
                f"s{s}: {b:.2f}/{u:.2f}/{e:.2f}" for s, (b, u, e) in enumerate(zip(
                    m["bits_per_token_per_scale"], m["unigram_bits_per_token_per_scale"],
                    m["clip_entropy_bits_per_token_per_scale"]))))
        lines.append("  at every k: actual bpp (model bpp) PSNR-Y MS-SSIM, zero fill:")
        for n in names:
            lines.append(f"    {n:<16} " + "  ".join(
                f"k{p['k']}: {p['bpp']:.4f} ({p['model_bpp']:.4f}) {_f(p['psnr-y'], '{:.2f}')} {_f(p['ms-ssim-rgb'])}"
                for p in models[n]["per_k"][:K]))
    if "coders" in doc:
        lines.append("\n-- entropy coders on the same tokens (base model)")
        lines.append(f"  {'coder':<13} {'calls':>5} {'chunks':>6} {'model B':>9} {'chunk B':>8} {'B/call':>6} "
                     f"{'B/chunk':>7} {'of file':>7} {'enc f/s':>7} {'dec f/s':>7}  round trip  bytes at k = 1..K")
        for name, o in doc["coders"].items():
            lines.append(f"  {name:<13} {o['calls']:5d} {o['chunks']:6d} {o['model_bytes']:9.1f} {o['bytes']:8.0f} "
                         f"{o['overhead_bytes_per_call']:6.2f} {o['overhead_bytes_per_chunk']:7.2f} "
                         f"{100 * o['overhead_fraction_of_file']:6.1f}% {o['encode_fps']:7.1f} {o['decode_fps']:7.1f}  "
                         f"{'every k' if o['round_trip_every_k'] else 'FAILED':<10}  {o['bytes_per_k']}")
    if "samplers_skipped" in doc:
        lines.append(f"\n-- detail samplers skipped: {doc['samplers_skipped']}")
    if "samplers" in doc:
        sp = doc["samplers"]
        lines.append("\n-- detail samplers on the same cut stream (equal bytes at each k; PSNR-Y / MS-SSIM / "
                     "ST-LPIPS (lower is better) / texture ratio)" + ("" if sp["perceptual"] else
                                                                     "; ST-LPIPS not available: -"))
        first = next(iter(sp["samplers"].values()))
        for i, p in enumerate(first):
            lines.append(f"  k={p['k']} ({p['bytes']} B)")
            for name, rows in sp["samplers"].items():
                r = rows[i]
                lines.append(f"    {name:<8} {_f(r['psnr-y'], '{:6.2f}')}  {_f(r['ms-ssim-rgb'])}  "
                             f"{_f(r['st-lpips'])}  {_f(r['texture-ratio'])}  {r['decode_fps']:5.1f} f/s")
        f = sp["full"]
        lines.append(f"  k={f['k']} ({f['bytes']} B, nothing to fill)  {_f(f['psnr-y'], '{:6.2f}')}  "
                     f"{_f(f['ms-ssim-rgb'])}  {_f(f['st-lpips'])}  {_f(f['texture-ratio'])}")
    return "\n".join(lines)


def plot_variants(doc: dict, path: str | Path) -> Path:
    """The comparison as one figure: bits per token by scale and the RD ladder of each model, the
    coders' bytes at every k, and the samplers' quality at equal bytes (ST-LPIPS when measured, else
    PSNR-Y). Panels whose kind was not run are left out."""
    import matplotlib

    if matplotlib.get_backend().lower() not in ("agg", "module://matplotlib_inline.backend_inline"):
        matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    panels = []
    if doc.get("models"):
        panels += ["bits", "rd"]
    if doc.get("coders"):
        panels.append("coders")
    if doc.get("samplers"):
        panels.append("samplers")
    if not panels:
        raise VariantError("nothing to plot: no variant kind was run")
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.6), squeeze=False)
    axes = dict(zip(panels, axes[0]))
    for name, m in doc.get("models", {}).items():
        label = f"{Path(name).name} ({m['mask']}, {m['quantizer']})"
        K = len(m["bits_per_token_per_scale"])
        line, = axes["bits"].plot(range(K), m["bits_per_token_per_scale"], "o-", label=label)
        axes["bits"].plot(range(K), m["unigram_bits_per_token_per_scale"], ":", color=line.get_color())
        axes["rd"].plot([p["bpp"] for p in m["per_k"]], [p["psnr-y"] for p in m["per_k"]], "o-", label=label)
    if "bits" in axes:
        axes["bits"].set(xlabel="scale s", ylabel="model bits per token (dotted: unigram)",
                         title="what each model pays per token")
        axes["bits"].legend(fontsize=7)
        axes["rd"].set(xscale="log", xlabel="bpp (file, cut after k)", ylabel="PSNR-Y (dB)",
                       title="k = 1..K, zero fill")
    if "coders" in axes:
        ax = axes["coders"]
        for name, o in doc["coders"].items():
            ks = range(1, len(o["bytes_per_k"]) + 1)
            ax.plot(ks, o["bytes_per_k"], "o-", label=f"{name} ({o['calls']} calls)")
        first = next(iter(doc["coders"].values()))
        ax.plot(range(1, len(first["model_bytes_per_k"]) + 1), first["model_bytes_per_k"], "k--", label="model bits / 8")
        ax.set(yscale="log", xlabel="k", ylabel="bytes", title="entropy coders, same tokens")
        ax.legend(fontsize=7)
    if "samplers" in axes:
        ax = axes["samplers"]
        sp = doc["samplers"]
        key = "st-lpips" if sp["perceptual"] else "psnr-y"
        for name, rows in sp["samplers"].items():
            ax.plot([r["k"] for r in rows], [r[key] for r in rows], "o-", label=name)
        ax.set(xlabel="k (equal bytes at each k)", ylabel="ST-LPIPS (lower is better)" if key == "st-lpips"
               else "PSNR-Y (dB)", title="detail samplers on one cut stream")
        ax.legend(fontsize=7)
    fig.suptitle(f"variants on {Path(doc['clip']).name} ({doc['frames']} frames {doc['width']}x{doc['height']})",
                 fontsize=10)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def markdown_table(docs: dict[str, dict], ks=(4, None)) -> str:
    """The README's "every shipped variant side by side" table from the JSON of ``bench --json`` on each
    clip (``{clip label: doc}``): file bytes at each k of ``ks`` (None: the full pyramid) per clip, the model
    bits against the static unigram per clip, the attention pairs as a fraction of VAR's, and whether one
    encode can be cut after any k. One row per model of the mask and quantizer groups."""
    first = next(iter(docs.values()))
    names = list(dict.fromkeys(n for names in first.get("groups", {}).values() for n in names))
    if not names:
        raise VariantError("no mask or quantizer variants in these results")
    base = first["base"]

    def kind(n):
        m = first["models"][n]
        if n == base:
            return f"mask {m['mask']}, {m['quantizer'].upper()}"
        return f"mask {m['mask']}" if n in first["groups"].get("masks", ()) else f"quantizer {m['quantizer'].upper()}"

    def k_of(doc, n, k):
        per_k = doc["models"][n]["per_k"]
        return per_k[-1] if k is None else next(p for p in per_k if p["k"] == k)

    head = ["variant (model)"]
    for clip, doc in docs.items():
        head += [f"{clip} k = {k if k is not None else len(doc['models'][base]['per_k'])}" for k in ks]
    head += [f"bits vs unigram ({' / '.join(docs)})", "attention pairs (of VAR's)", "cut after any k"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for n in names:
        m = first["models"][n]
        row = [f"{kind(n)} (`{n}`)"]
        for doc in docs.values():
            row += [str(k_of(doc, n, k)["bytes"]) for k in ks]
        row.append(" / ".join(f"{doc['models'][n]['ratio_to_unigram']:.2f}" for doc in docs.values()))
        row.append(f"{100 * m['attention']['fraction_of_var']:.0f} %")
        row.append("yes" if m["truncation_safe"] else "no (one encode per k)")
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


if __name__ == "__main__":  # python -m progvc_lab.bench_variants LABEL=RESULT.json ... -> the README table
    import sys

    pairs = [a.split("=", 1) if "=" in a else (Path(a).stem, a) for a in sys.argv[1:]]
    print(markdown_table({label: json.loads(Path(path).read_text()) for label, path in pairs}))
