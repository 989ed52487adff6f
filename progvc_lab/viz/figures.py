"""Matplotlib figures of the codec's insides: plain functions that return a ``Figure``.

No widgets here: notebooks, tutorials, the explorers (``viz.widgets``) and ``scripts/`` all call
these. Each figure is closed in pyplot before it is returned, so a notebook cell shows it once (as
its value) and nothing piles up in pyplot's figure list. ``figure_to_png`` turns one into PNG bytes.

::

    plot_token_pyramid(tokens, t, codebook=...)   the tokens of frame t coloured by code vector, per scale
    plot_partial_reconstructions(codec, tokens, latent_hw, size, t)   frame t from k = 1..K scales
    plot_scale_step(original, token_map, recon, s)                    one scale: tokens, recon, residual
    plot_mask(name, num_frames, num_scales, window)                   block mask + cost + truncation safety
    plot_bits_per_scale(bytes_per_scale, k)       what each scale costs; what a cut after k saves
    plot_rd_curve(points, highlight, path=)       bpp vs PSNR, one point per k (or {label: points})
    token_bits_maps(codec, video)                 -log2 p of every token, (T, h_s, w_s) per scale
    plot_bits_heatmap(bits_maps, t)               where in frame t the bits go, per scale
    plot_sampler_comparison(frames_by_sampler)    frames side by side
    copy_rate_per_scale(tokens), copy_gate_trace(codec, stats)     how often tokens repeat; the copy gate g
    plot_copy_statistics(copy_rate, bits_per_token)                   copy rate and bits/token per scale
    plot_gate_over_frames(gate_TK)                                    the gate adapting over the frames
    plot_bits_per_token(bits_by_label)            bits per token per scale, side by side (e.g. before / after RDO)
    plot_bytes_per_frame(bytes_by_label)          bytes of each frame (intra frames hatched)
    plot_lambda_curve(points, highlight)          bpp vs MS-SSIM, one point per RDO lambda

Shapes follow the package: video (T, 3, H, W) in [0, 1]; tokens per scale (T, h_s, w_s).
"""
from __future__ import annotations

import io
from typing import Mapping, Sequence

import matplotlib.pyplot as plt  # pyplot also registers the notebook's figure display
import numpy as np
import torch
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from ..stages.masks import attention_cost, block_index, build_mask, is_truncation_safe
from ..stages.quantizer import scale_schedule

# Attention cost needs token counts per scale; without them the masks are compared on the scale
# schedule of a QCIF frame (176x144) at tokenizer stride 8: latent 18 x 22.
DEFAULT_LATENT_HW = (18, 22)


# ---- small helpers ---------------------------------------------------------------------------------
def _new_figure(ncols: int = 1, nrows: int = 1, width: float = 3.2, height: float = 3.0, **kw):
    kw.setdefault("layout", "constrained")
    fig, axes = plt.subplots(nrows, ncols, figsize=(width * ncols, height * nrows), squeeze=False, **kw)
    plt.close(fig)  # returned, not kept by pyplot: a notebook shows it once, as the cell's value
    return fig, axes


def figure_to_png(fig: Figure, dpi: int = 80) -> bytes:
    """PNG bytes of a figure (for ``ipywidgets.Image`` or a file)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    return buf.getvalue()


def as_image(frame_3HW) -> np.ndarray:
    """A frame (3, H, W) in [0, 1] (tensor or array) -> (H, W, 3) float array for ``imshow``."""
    x = torch.as_tensor(frame_3HW).detach().float().cpu()
    if x.ndim != 3 or x.shape[0] != 3:
        raise ValueError(f"expected a frame shaped (3, H, W), got {tuple(x.shape)}")
    return x.clamp(0, 1).permute(1, 2, 0).numpy()


def _frame_psnr(a_3HW, b_3HW) -> float:
    mse = float(((torch.as_tensor(a_3HW).float() - torch.as_tensor(b_3HW).float()) ** 2).mean())
    return float("inf") if mse == 0 else 10 * np.log10(1.0 / mse)


def _off(ax):
    ax.set_xticks([])
    ax.set_yticks([])


# ---- tokens ----------------------------------------------------------------------------------------
def code_colours(codebook_VC) -> np.ndarray:
    """An RGB colour per code (V, 3) in [0, 1]: the code vectors projected on their first three
    principal components. Token ids are arbitrary labels (id 7 is not "between" 6 and 8), so a colour
    map of ids shows nothing; here two tokens look alike exactly when their code vectors are alike."""
    e_VC = torch.as_tensor(codebook_VC).detach().double().cpu()
    e_VC = e_VC - e_VC.mean(0, keepdim=True)
    _, _, v_CC = torch.linalg.svd(e_VC, full_matrices=False)
    v_3C = v_CC[: min(3, v_CC.shape[0])]
    v_3C = v_3C * v_3C.gather(1, v_3C.abs().argmax(1, keepdim=True)).sign()   # a fixed sign per component
    proj_V3 = e_VC @ v_3C.T
    if proj_V3.shape[1] < 3:
        proj_V3 = torch.cat([proj_V3, torch.zeros(len(proj_V3), 3 - proj_V3.shape[1], dtype=proj_V3.dtype)], 1)
    lo, hi = proj_V3.min(0).values, proj_V3.max(0).values
    return ((proj_V3 - lo) / (hi - lo).clamp_min(1e-12)).numpy()


def _token_image(tok_hw, codebook_size, codebook, ax):
    """Draw one token map: by code colour when the codebook is given, else by id (labelled as such)."""
    tok = torch.as_tensor(tok_hw).cpu().numpy()
    if codebook is not None:
        return ax.imshow(code_colours(codebook)[tok], interpolation="nearest")
    vmax = (codebook_size - 1) if codebook_size else max(int(tok.max()), 1)
    return ax.imshow(tok, cmap="viridis", vmin=0, vmax=max(vmax, 1), interpolation="nearest")


def plot_token_pyramid(tokens: Sequence[torch.Tensor], t: int = 0, codebook_size: int | None = None,
                       codebook=None) -> Figure:
    """The token maps of frame ``t``, one panel per scale (coarse to fine).

    With ``codebook`` (V, C), e.g. ``codec.quantizer.codebook.weight``, each token is coloured by its
    code vector (``code_colours``: similar colour = similar code); without it, by id, which only shows
    where ids change."""
    K = len(tokens)
    fig, axes = _new_figure(K, width=2.2, height=2.2)
    for s, (ax, tok) in enumerate(zip(axes[0], tokens)):
        im = _token_image(tok[t], codebook_size or max(int(x.max()) for x in tokens) + 1, codebook, ax)
        h, w = tok.shape[-2:]
        ax.set_title(f"scale {s}: {h}x{w}", fontsize=9)
        _off(ax)
    if codebook is None:
        fig.colorbar(im, ax=list(axes[0]), shrink=0.8, label="token id (arbitrary order)")
        fig.suptitle(f"token pyramid of frame {t} (colour = id)", fontsize=10)
    else:
        fig.suptitle(f"token pyramid of frame {t} (colour = code vector, 3 principal components)", fontsize=10)
    return fig


@torch.no_grad()
def plot_partial_reconstructions(codec, tokens: Sequence[torch.Tensor], latent_hw, size, t: int = 0,
                                 original=None) -> Figure:
    """Frame ``t`` decoded from the first k = 1..K scales (PSNR in the titles when ``original``,
    the frame (3, H, W), is given)."""
    K = len(tokens)
    frame_tokens = [tok[t:t + 1] for tok in tokens]
    ncols = K + (original is not None)
    fig, axes = _new_figure(ncols, width=2.2, height=2.0)
    if original is not None:
        axes[0][-1].imshow(as_image(original))
        axes[0][-1].set_title("original", fontsize=9)
        _off(axes[0][-1])
    for k in range(1, K + 1):
        frame = codec.reconstruct(frame_tokens, latent_hw, size, upto=k)[0]
        ax = axes[0][k - 1]
        ax.imshow(as_image(frame))
        title = f"k = {k}"
        if original is not None:
            title += f"  {_frame_psnr(frame, original):.1f} dB"
        ax.set_title(title, fontsize=9)
        _off(ax)
    fig.suptitle(f"frame {t} decoded from the first k scales", fontsize=10)
    return fig


def plot_scale_step(original, token_map_hw, recon, s: int, codebook_size: int | None = None,
                    codebook=None) -> Figure:
    """One step of the pyramid: the frame, the token map of scale ``s`` (coloured by code vector
    when ``codebook`` is given, see ``plot_token_pyramid``), the reconstruction from scales 0..s, and
    the residual |frame - reconstruction| those scales leave."""
    fig, axes = _new_figure(4, width=2.6, height=2.4)
    ax_o, ax_t, ax_r, ax_e = axes[0]
    ax_o.imshow(as_image(original))
    ax_o.set_title("original", fontsize=9)
    tok = torch.as_tensor(token_map_hw).cpu().numpy()
    _token_image(tok, codebook_size, codebook, ax_t)
    what = "colour = code" if codebook is not None else "colour = id"
    ax_t.set_title(f"tokens of scale {s} ({tok.shape[0]}x{tok.shape[1]}, {what})", fontsize=9)
    ax_r.imshow(as_image(recon))
    ax_r.set_title(f"scales 0..{s}: {_frame_psnr(recon, original):.1f} dB", fontsize=9)
    err_HW = (torch.as_tensor(original).float() - torch.as_tensor(recon).float()).abs().mean(0).numpy()
    im = ax_e.imshow(err_HW, cmap="magma", vmin=0, vmax=0.5)
    ax_e.set_title(f"residual |x - x_hat|, mean {err_HW.mean():.3f}", fontsize=9)
    for ax in axes[0]:
        _off(ax)
    fig.colorbar(im, ax=ax_e, shrink=0.75)
    return fig


# ---- masks -----------------------------------------------------------------------------------------
def mask_summary(name: str, num_frames: int, num_scales: int, window: int = 1,
                 scale_lengths: Sequence[int] | None = None) -> dict:
    """Attention cost of a mask (absolute and relative to ``var``) and its truncation safety."""
    if scale_lengths is None:
        scale_lengths = [h * w for h, w in scale_schedule(DEFAULT_LATENT_HW, num_scales)]
    if len(scale_lengths) != num_scales:
        raise ValueError(f"scale_lengths has {len(scale_lengths)} entries for {num_scales} scales")
    allowed_BB = build_mask(name, num_frames, num_scales, window)
    cost = attention_cost(allowed_BB, scale_lengths)
    var_cost = attention_cost(build_mask("var", num_frames, num_scales), scale_lengths)
    _, s_B = block_index(num_frames, num_scales)
    violations = int((allowed_BB & (s_B[None, :] > s_B[:, None])).sum())
    return {"allowed": allowed_BB, "cost": cost, "var_cost": var_cost, "ratio_to_var": cost / var_cost,
            "truncation_safe": is_truncation_safe(allowed_BB, num_scales), "violations": violations,
            "scale_lengths": list(scale_lengths)}


def plot_mask(name: str, num_frames: int, num_scales: int, window: int = 1,
              scale_lengths: Sequence[int] | None = None) -> Figure:
    """The boolean block mask ``allowed[query, key]`` (frame-major blocks) as an image.

    Thin lines separate blocks, thick lines frames; allowed pairs whose key is at a FINER scale than the
    query (the edges that make a mask unsafe to cut) are red. The title gives the attention cost (query-key
    token pairs for ``scale_lengths[s]`` tokens per scale; default: a QCIF frame at stride 8) and
    whether a finished stream may be cut after any scale.
    """
    info = mask_summary(name, num_frames, num_scales, window, scale_lengths)
    allowed = info["allowed"].numpy()
    B = allowed.shape[0]
    side = min(7.0, max(3.5, 0.28 * B + 1.5))
    fig, axes = _new_figure(1, width=side, height=side)
    ax = axes[0][0]
    ax.imshow(allowed, cmap="Blues", vmin=0, vmax=1.25, interpolation="nearest")
    s_B = np.arange(B) % num_scales
    violating = allowed & (s_B[None, :] > s_B[:, None])      # a key finer than its query: breaks a cut
    if violating.any():
        overlay = np.zeros((B, B, 4))
        overlay[violating] = (0.84, 0.15, 0.16, 1.0)          # tab:red
        ax.imshow(overlay, interpolation="nearest")
        ax.legend(handles=[Patch(color="tab:red", label=f"reads a finer scale ({int(violating.sum())})")],
                  fontsize=7, loc="upper right")
    edges = np.arange(1, B) - 0.5
    frame_edge = np.arange(1, B) % num_scales == 0
    for sel, color, lw in ((~frame_edge, "0.75", 0.4), (frame_edge, "black", 1.6)):  # blocks, frames
        ax.hlines(edges[sel], -0.5, B - 0.5, color=color, lw=lw)
        ax.vlines(edges[sel], -0.5, B - 0.5, color=color, lw=lw)
    labels = [f"t{b // num_scales}s{b % num_scales}" for b in range(B)]
    step = max(1, B // 24)
    ax.set_xticks(range(0, B, step), labels[::step], rotation=90, fontsize=7)
    ax.set_yticks(range(0, B, step), labels[::step], fontsize=7)
    ax.set_xlabel("key block")
    ax.set_ylabel("query block")
    safe = "truncation safe" if info["truncation_safe"] else "NOT truncation safe"
    win = f", W={window}" if name == "progvc_sparse" else ""
    ax.set_title(f"{name}{win}: T={num_frames}, K={num_scales}\n"
                 f"attention cost {info['cost']:,} pairs ({100 * info['ratio_to_var']:.1f}% of var), {safe}",
                 fontsize=9)
    return fig


# ---- rate ------------------------------------------------------------------------------------------
def plot_bits_per_scale(bytes_per_scale: Sequence[int], k: int | None = None,
                        file_bytes: tuple[int, int] | None = None) -> Figure:
    """Bar chart of the bits each scale costs; with ``k``, the scales a cut after k drops are
    highlighted and what the cut saves is written on the chart.

    ``file_bytes`` = (bytes of the cut file, bytes of the whole file): the title then gives how much
    smaller the *file* gets (header and chunk table included, the number a reader checks with ``ls``);
    without it, the share of the chunk bytes alone, labelled so."""
    bits = np.asarray(bytes_per_scale, dtype=float) * 8
    K = len(bits)
    fig, axes = _new_figure(1, width=4.0, height=2.8)
    ax = axes[0][0]
    kept = np.arange(K) < (K if k is None else k)
    colors = np.where(kept, "tab:blue", "tab:orange")
    ax.bar(np.arange(K), bits, color=colors)
    ax.set_xticks(range(K))
    ax.set_xlabel("scale s")
    ax.set_ylabel("bits")
    if k is not None and k < K:
        saved = bits[k:].sum()
        if file_bytes is not None:
            cut, whole = file_bytes
            title = (f"cut after k={k}: file {whole:,} -> {cut:,} bytes "
                     f"({100 * (whole - cut) / max(whole, 1):.1f}% smaller)")
        else:
            title = (f"cut after k={k}: saves {saved:,.0f} bits "
                     f"({100 * saved / max(bits.sum(), 1):.1f}% of the chunk bits)")
        ax.set_title(title, fontsize=9)
        ax.legend(handles=[Patch(color="tab:blue", label="sent"),
                           Patch(color="tab:orange", label="dropped")], fontsize=8)
    else:
        ax.set_title(f"all {K} scales: {bits.sum():,.0f} bits", fontsize=9)
    return fig


def _rd_point(p) -> tuple[float, float, object]:
    if isinstance(p, Mapping):
        y = p["psnr"] if "psnr" in p else p["psnr_rgb"]   # rdeval/widgets points, or evaluate.rate_points'
        return float(p["bpp"]), float(y), p.get("k")
    return float(p[0]), float(p[1]), (p[2] if len(p) > 2 else None)


RD_STYLES = ("o-", "s--", "^-.", "v:", "D-", "x--")


def plot_rd_curve(points, highlight=None, title: str = "rate-distortion: one encode, K rate points",
                  path=None, dpi: int = 120) -> Figure:
    """bpp vs PSNR (RGB), each point labelled with its k: the one RD figure of the package (the explorers,
    ``progvc-lab demo``, the notebooks and the benchmarks all draw with it).

    ``points``: one curve -- dicts with ``bpp`` and ``psnr`` (or ``psnr_rgb``, as ``evaluate.rate_points``
    gives) and ``k``, or tuples (bpp, psnr[, k]) -- or several, as a mapping {label: points} (one line
    each, with a legend). ``highlight``: the k (or, for unlabelled points, the index) to mark on the
    first curve. ``path``: also write the figure there as PNG (``dpi``)."""
    curves = dict(points) if isinstance(points, Mapping) else {None: points}
    several = len(curves) > 1 or None not in curves
    fig, axes = _new_figure(1, width=5.2 if several else 4.0, height=3.6 if several else 2.8)
    ax = axes[0][0]
    xs_all = []
    for i, (label, pts) in enumerate(curves.items()):
        pts = [_rd_point(p) for p in pts]
        x = [p[0] for p in pts]
        y = [p[1] for p in pts]
        xs_all += x
        style = RD_STYLES[i % len(RD_STYLES)]
        ax.plot(x, y, style, ms=4, label=label, **({} if several else {"color": "tab:blue"}))
        for j, (bx, py, k) in enumerate(pts):
            ax.annotate(f"k={k}" if k is not None else str(j), (bx, py), textcoords="offset points",
                        xytext=(4, -10), fontsize=7)
            if i == 0 and highlight is not None and (k == highlight if k is not None else j == highlight):
                ax.plot([bx], [py], "o", color="tab:red", ms=10, zorder=3)
    if xs_all and all(v > 0 for v in xs_all):   # a log rate axis: the low rates (k = 1..3) are not squashed
        ax.set_xscale("log")
    ax.set_xlabel("bits per pixel (log scale)" if ax.get_xscale() == "log" else "bits per pixel")
    ax.set_ylabel("PSNR (RGB, dB)")
    ax.grid(alpha=0.3, which="both")
    ax.set_title(title, fontsize=9)
    if several:
        ax.legend(fontsize=8)
    if path is not None:
        fig.savefig(path, dpi=dpi)
    return fig


def token_bits_maps(codec, video, stats=None) -> list[np.ndarray]:
    """Model bits (-log2 p under the integer CDF) of every token: one (T, h_s, w_s) array per scale.

    The encoder's own per-token bits (``EncodeResult.token_bits``, recorded by the coding walk as it
    coded each block), so the numbers are the code lengths the stream pays; their sum per (frame,
    scale) is ``model_bits``. Pass ``stats``, the ``EncodeResult`` of an earlier
    ``codec.encode_with_stats(video)``, to skip the encode.
    """
    if stats is None:
        _, stats = codec.encode_with_stats(video)
    return [np.asarray(b, dtype=np.float64) for b in stats["token_bits"]]


def plot_bits_heatmap(bits_maps: Sequence[np.ndarray], t: int = 0, scale: int | None = None,
                      frame=None) -> Figure:
    """Where the bits of frame ``t`` go: bits per token of each scale (from ``token_bits_maps``),
    stretched over the frame. ``scale``: one scale only (drawn over ``frame`` when given);
    default: one panel per scale plus their sum per frame area."""
    K = len(bits_maps)
    if scale is not None:
        m = bits_maps[scale][t]
        ncols = 2 if frame is not None else 1
        fig, axes = _new_figure(ncols, width=3.6, height=3.0)
        ax = axes[0][-1]
        if frame is not None:
            img = as_image(frame)
            H, W = img.shape[:2]
            axes[0][0].imshow(img)
            axes[0][0].set_title(f"frame {t}", fontsize=9)
            _off(axes[0][0])
            ax.imshow(img.mean(-1), cmap="gray", extent=(0, W, H, 0))
            im = ax.imshow(m, cmap="inferno", alpha=0.65, extent=(0, W, H, 0), interpolation="nearest")
        else:
            im = ax.imshow(m, cmap="inferno", interpolation="nearest")
        _off(ax)
        fig.colorbar(im, ax=ax, shrink=0.8, label="bits per token")
        ax.set_title(f"scale {scale} ({m.shape[0]}x{m.shape[1]}): {m.sum():,.0f} bits, "
                     f"{m.mean():.2f}/token", fontsize=9)
        return fig
    fig, axes = _new_figure(K + 1, width=2.2, height=2.2)
    vmax = max(float(bm[t].max()) for bm in bits_maps)
    for s in range(K):
        m = bits_maps[s][t]
        im = axes[0][s].imshow(m, cmap="inferno", vmin=0, vmax=vmax, interpolation="nearest")
        axes[0][s].set_title(f"s={s}: {m.sum():,.0f} bits", fontsize=8)
        _off(axes[0][s])
    fig.colorbar(im, ax=list(axes[0][:K]), shrink=0.8, label="bits per token")
    # every token's bits spread evenly over the finest-scale cells it covers (the sum is kept)
    density = sum(_spread(bm[t], bits_maps[-1][t].shape) for bm in bits_maps)
    im = axes[0][K].imshow(density, cmap="inferno", interpolation="nearest")
    axes[0][K].set_title(f"all scales: {density.sum():,.0f} bits", fontsize=8)
    _off(axes[0][K])
    fig.colorbar(im, ax=axes[0][K], shrink=0.8, label="bits per finest-scale cell")
    fig.suptitle(f"model bits of frame {t}", fontsize=10)
    return fig


def _spread(m_hw: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Spread each cell of a coarse (h, w) map evenly over the cells of a finer grid it covers."""
    h, w = m_hw.shape
    rows = np.arange(size[0]) * h // size[0]     # coarse row of each fine row (nearest, floor)
    cols = np.arange(size[1]) * w // size[1]
    cells = np.bincount(rows, minlength=h)[:, None] * np.bincount(cols, minlength=w)[None, :]
    return (m_hw / cells)[rows][:, cols]


# ---- detail sampler --------------------------------------------------------------------------------
def plot_sampler_comparison(frames_by_sampler: Mapping[str, object], original=None) -> Figure:
    """Frames (3, H, W) side by side, titled by their key (plus PSNR against ``original``)."""
    items = list(frames_by_sampler.items())
    if original is not None:
        items.append(("original", original))
    fig, axes = _new_figure(len(items), width=2.8, height=2.5)
    for ax, (name, frame) in zip(axes[0], items):
        ax.imshow(as_image(frame))
        title = str(name)
        if original is not None and name != "original":
            title += f"\n{_frame_psnr(frame, original):.1f} dB"
        ax.set_title(title, fontsize=9)
        _off(ax)
    return fig


# ---- temporal copy, RDO and the GOP (notebook 09) ---------------------------------------------------
def bits_per_token_per_scale(stats: dict) -> np.ndarray:
    """Model bits per token of every scale, (K,), from ``encode_with_stats``'s stats."""
    counts = np.array([tok.numel() for tok in stats["tokens"]], dtype=float)
    return np.asarray(stats["model_bits"]).sum(0) / counts


def copy_rate_per_scale(tokens: Sequence[torch.Tensor]) -> np.ndarray:
    """How often a token equals frame t-1's token at the same scale and position (frames t >= 1):
    one fraction per scale, (K,). The copy gate bets on exactly this event."""
    return np.array([float((tok[1:] == tok[:-1]).double().mean()) if tok.shape[0] > 1 else float("nan")
                     for tok in tokens])


def copy_gate_trace(codec, stats) -> np.ndarray:
    """The copy gate g of every block as the coder used it: (T, K), the mean over the block's tokens
    (one value per block for ``"count"``); NaN for intra frames and for ``copy_gate="none"``.

    Read from the ``EncodeResult`` of ``codec.encode_with_stats`` (``gate``: recorded by the coding walk
    before each block was coded); ``codec`` is not run again.
    """
    return np.asarray(stats["gate"], dtype=np.float64)


def plot_copy_statistics(copy_rate_K, bits_per_token: Mapping[str, Sequence[float]]) -> Figure:
    """Left: the fraction of tokens equal to frame t-1's, per scale. Right: bits per token per scale,
    one bar per entry of ``bits_per_token`` (e.g. ``{"copy_gate='none'": ..., "'count'": ...}``)."""
    rate = np.asarray(copy_rate_K, dtype=float)
    K = len(rate)
    fig, axes = _new_figure(2, width=3.8, height=2.8)
    ax_c, ax_b = axes[0]
    ax_c.bar(np.arange(K), 100 * rate, color="tab:green")
    ax_c.set_ylim(0, 100)
    ax_c.set_xticks(range(K))
    ax_c.set_xlabel("scale s")
    ax_c.set_ylabel("% of tokens = frame t-1's")
    ax_c.set_title("tokens that repeat the previous frame", fontsize=9)
    _bits_bars(ax_b, bits_per_token)
    return fig


def _bits_bars(ax, bits_per_token: Mapping[str, Sequence[float]], title: str = "bits per token"):
    n = max(len(bits_per_token), 1)
    width = 0.8 / n
    K = 0
    for i, (label, bits) in enumerate(bits_per_token.items()):
        bits = np.asarray(bits, dtype=float)
        K = max(K, len(bits))
        ax.bar(np.arange(len(bits)) + (i - (n - 1) / 2) * width, bits, width, label=label, color=f"C{i}")
    ax.set_xticks(range(K))
    ax.set_xlabel("scale s")
    ax.set_ylabel("model bits per token")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)


def plot_bits_per_token(bits_per_token: Mapping[str, Sequence[float]], title: str = "bits per token") -> Figure:
    """Bits per token per scale, one bar per entry (e.g. before / after RDO)."""
    fig, axes = _new_figure(1, width=4.0, height=2.8)
    _bits_bars(axes[0][0], bits_per_token, title)
    return fig


def plot_gate_over_frames(gate_TK, copy_TK=None, gop_starts: Sequence[int] = (0,)) -> Figure:
    """The copy gate g of each scale over the frames (from ``copy_gate_trace``); with ``copy_TK``
    (the fraction of each block's tokens equal to frame t-1's) as dotted lines of the same colour."""
    gate = np.asarray(gate_TK, dtype=float)
    T, K = gate.shape
    fig, axes = _new_figure(1, width=5.0, height=2.9)
    ax = axes[0][0]
    colors = plt.get_cmap("viridis")(np.linspace(0, 0.9, K))
    for s in range(K):
        ax.plot(range(T), gate[:, s], "-o", ms=3, color=colors[s], label=f"s={s}")
        if copy_TK is not None:
            ax.plot(range(T), np.asarray(copy_TK, dtype=float)[:, s], ":", color=colors[s])
    for g0 in gop_starts:
        ax.axvline(g0, color="0.6", lw=0.8, ls="--")
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("frame t (dashed: an intra frame, no gate)")
    ax.set_ylabel("gate g")
    ax.set_title("the copy gate adapts: each scale's copy count, backed off to the coarser scales'" +
                 (" (dotted: copy rate of the frame)" if copy_TK is not None else ""), fontsize=9)
    ax.legend(fontsize=7, ncol=K, loc="lower right")
    ax.grid(alpha=0.3)
    return fig


def plot_bytes_per_frame(bytes_by_label: Mapping[str, Sequence[float]],
                         intra_by_label: Mapping[str, Sequence[int]] | None = None) -> Figure:
    """Bytes of every frame (all scales), one bar group per frame and one colour per entry; intra
    frames (``intra_by_label[label]``: their indices) are hatched."""
    items = list(bytes_by_label.items())
    T = max(len(v) for _, v in items)
    n = len(items)
    width = 0.8 / n
    fig, axes = _new_figure(1, width=max(4.5, 0.45 * T + 1.5), height=2.9)
    ax = axes[0][0]
    for i, (label, values) in enumerate(items):
        values = np.asarray(values, dtype=float)
        intra = set((intra_by_label or {}).get(label, ()))
        total = values.sum()
        bars = ax.bar(np.arange(len(values)) + (i - (n - 1) / 2) * width, values, width,
                      label=f"{label}: {total:,.0f} bytes", color=f"C{i}")
        for t, bar in enumerate(bars):
            if t in intra:
                bar.set_hatch("//")
                bar.set_edgecolor("black")
    ax.set_xticks(range(T))
    ax.set_xlabel("frame t (hatched: intra frame)")
    ax.set_ylabel("bytes")
    ax.set_title("bytes per frame: the intra frame dominates", fontsize=9)
    ax.legend(fontsize=7)
    return fig


def plot_lambda_curve(points: Sequence[Mapping], highlight=None, quality: str = "ms_ssim",
                      quality_label: str = "MS-SSIM") -> Figure:
    """Rate-distortion points of one clip encoded at several RDO lambdas: bpp vs ``quality``, each point
    labelled with its lambda; ``highlight`` (a lambda) is marked."""
    pts = sorted(points, key=lambda p: p["rdo_lambda"])
    fig, axes = _new_figure(1, width=4.2, height=2.9)
    ax = axes[0][0]
    x = [p["bpp"] for p in pts]
    y = [p[quality] for p in pts]
    ax.plot(x, y, "-o", color="tab:blue", ms=4)
    for i, p in enumerate(pts):  # labels alternate above / below: neighbouring lambdas often sit close
        ax.annotate(f"λ={p['rdo_lambda']:g}", (p["bpp"], p[quality]), textcoords="offset points",
                    xytext=(4, 5) if i % 2 else (4, -11), fontsize=7)
        if highlight is not None and np.isclose(p["rdo_lambda"], highlight):
            ax.plot([p["bpp"]], [p[quality]], "o", color="tab:red", ms=10, zorder=3)
    ax.set_xlabel("bits per pixel")
    ax.set_ylabel(quality_label)
    ax.grid(alpha=0.3)
    ax.set_title("RDO: one encode per lambda (all scales)", fontsize=9)
    return fig
