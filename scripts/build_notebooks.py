"""Write notebooks/00_quick_start.ipynb ... 10_arithmetic_coding.ipynb from the cells below (no outputs).

    .venv/bin/python scripts/build_notebooks.py            # (re)write all of them
    .venv/bin/python scripts/build_notebooks.py --check    # exit 1 if a committed notebook differs

The notebooks are generated so that their source is reviewable as Python and regenerable; edit the
cells HERE, not in Jupyter (or copy your Jupyter edits back here). Every notebook: one idea, prose and
equations in markdown, code that only calls the package (``progvc_lab``), the first 8 frames of the
shipped Foreman QCIF clip (09: Akiyo), and (01..15) at least one exercise checked by ``progvc_lab.course``.
"""
from __future__ import annotations

import argparse
import sys
import textwrap
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "notebooks"


def md(text: str):
    return new_markdown_cell(textwrap.dedent(text).strip("\n"))


def code(text: str, exercise: bool = False):
    cell = new_code_cell(textwrap.dedent(text).strip("\n"))
    if exercise:
        cell.metadata["tags"] = ["exercise"]
    return cell


SETUP = code('''
    import warnings

    import torch

    from progvc_lab.course import sample_video
    from progvc_lab.viz import ClipSession, load_demo_codec

    torch.manual_seed(0)
    codec = load_demo_codec()              # the shipped tiny model (a random one, with a warning, if it is missing)
    video, fps = sample_video(frames=8)    # the first 8 frames of Foreman, QCIF: (8, 3, 144, 176) RGB in [0, 1]
    session = ClipSession(codec, video, fps, "foreman")   # encodes once, caches truncations and decodes
    print(f"video {tuple(video.shape)} at {float(fps):.2f} fps; codec: K = {codec.quantizer.num_scales} scales, "
          f"V = {codec.quantizer.codebook_size} codes, stride {codec.tokenizer.stride}, GOP {codec.config.gop}")
''')


def stuck(name: str):
    return md(f"Stuck? `show_solution(\"{name}\")` prints the reference solution "
              "(`progvc_lab/course/solutions.py`). The rest of the notebook uses the package's version, "
              "so it runs whether or not you solved the exercise.")


# =====================================================================================================
NB = {}

NB["00_quick_start"] = [
    md(r'''
    # 00 · Quick start: encode, cut, decode

    **ProGVC** (progressive generative video compression) codes a video as a *pyramid of tokens*:
    every frame becomes K token maps, from a 1×1 map that holds the gist to a full-resolution map that
    holds the detail. A Transformer predicts each token from what the decoder already has, and an
    arithmetic coder turns those predictions into bytes. The stream stores **scale 0 of every frame
    first, then scale 1, …**, so the first bytes of a stream are themselves a valid, smaller stream:
    cut it after scale k and the receiver still decodes a (blurrier) video. What the cut removed can
    be *synthesised* by the same Transformer (notebook 06).

    ```
    frames ─► tokenizer ─► latent ─► multi-scale quantizer ─► tokens[s], s = 0..K-1
           ─► context model (Transformer) ─► integer CDFs ─► arithmetic coder
           ─► stream:  header | scale 0 | scale 1 | ... | scale K-1      (cut after any scale)
    ```

    Five cells: load, encode, cut, decode, look.
    '''),
    SETUP,
    code('''
    from progvc_lab import bitstream

    data = codec.encode(video, fps)                       # bytes of a .pgvc stream
    info = bitstream.describe(data)
    print(f"{len(data)} bytes = {info['bpp']:.4f} bits per pixel; bytes per scale: {info['bytes_per_scale']}")
    '''),
    code('''
    short = bitstream.truncate(data, 3)                   # keep scales 0, 1, 2: no re-encoding
    print(f"cut after 3 of {info['num_scales']} scales: {len(short)} bytes "
          f"({100 * len(short) / len(data):.1f}% of the stream)")
    '''),
    code('''
    from progvc_lab.metrics import psnr

    decoded_3 = codec.decode(short)                        # the receiver of the short stream
    decoded_all = codec.decode(data)
    print(f"PSNR-RGB with 3 scales: {psnr(decoded_3, video):.2f} dB; with all: {psnr(decoded_all, video):.2f} dB")
    '''),
    code('''
    from progvc_lab.viz import plot_sampler_comparison

    plot_sampler_comparison({"cut after 3 scales": decoded_3[4], "all scales": decoded_all[4]}, original=video[4])
    '''),
    md(r'''
    **What you just saw.** One encode produced a stream; `bitstream.truncate` made a smaller valid
    stream from it without touching the model; both decode. The tiny model that ships with the package
    is small and trained for minutes on a few clips on a CPU, so its pictures are soft: it demonstrates
    the mechanics faithfully, not state-of-the-art quality.

    | notebook | idea |
    |---|---|
    | 01 | video files, colour, and the tokenizer (frames → latent) |
    | 02 | the multi-scale residual quantizer (latent → token pyramid) |
    | 03 | the context model and its attention masks (why a cut stream stays decodable) |
    | 04 | entropy coding: probabilities → integer CDFs → bytes |
    | 05 | progressive truncation: one encode, K rate points |
    | 06 | the detail sampler: filling the scales a cut removed |
    | 07 | swapping a stage and retraining it through the same CLI |
    | 08 | evaluation: RD curves, metrics, CompressAI JSON, baselines |
    | 09 | temporal copy and RD-optimised tokens: the encoder's low-rate tools |
    | 10 | arithmetic coding from scratch: the coder, its bound, and how one count breaks it |
    | 11 | unsafe masks shown (a cut VAR stream diverges) and a safe mask designed and trained |
    | 12 | build a stage: the quantizer's loops and the expected-code fill, inside the codec |
    | 13 | train a tiny codec from scratch, both stages, with live curves |
    | 14 | against x264/x265 at the same bytes as each cut, frame by frame; BD-rate by hand |
    | 15 | capstone: your variant, its RD curve and BD-rate, verified by a checker from your files |

    The same steps on the command line: `progvc-lab encode`, `progvc-lab truncate`, `progvc-lab decode`.
    '''),
]

# -----------------------------------------------------------------------------------------------------
NB["01_video_and_tokenizer"] = [
    md(r'''
    # 01 · Video files, colour, and the tokenizer

    A video here is a tensor **(T, 3, H, W)** of RGB values in [0, 1]. Test sequences come as `.y4m`
    files: a one-line text header (`YUV4MPEG2 W176 H144 F30000:1001 ...`) and then, per frame, the
    word `FRAME` and three planes of 8-bit samples: luma **Y** at full size and the two chroma planes
    **U, V** at half width and half height (*4:2:0*). A QCIF frame (176×144) thus takes
    176·144·1.5 = 38 016 bytes, 12 bits per pixel. Our targets are around **0.05 bits per pixel**:
    a compression factor of about 240.

    RGB ↔ YUV is a fixed linear map (BT.601, "limited range": Y in 16..235):
    $$Y = 16 + 219\,(0.299R + 0.587G + 0.114B),\qquad U = 128 + 224\,\frac{B - Y'}{1.772},\qquad
    V = 128 + 224\,\frac{R - Y'}{1.402}$$
    with $Y' = 0.299R + 0.587G + 0.114B$ and $R, G, B \in [0, 1]$.
    '''),
    code('''
    from progvc_lab.data import read_y4m, read_y4m_header, rgb_to_yuv420, sample_clip_path, yuv420_to_rgb

    path = sample_clip_path("foreman")
    header = read_y4m_header(path)
    print(path.name, "header line:", path.read_bytes()[:header.header_bytes])
    clip = read_y4m(path, max_frames=8)
    print("planes:", clip.y.shape, clip.u.shape, clip.v.shape, clip.y.dtype, "fps", clip.fps)
    '''),
    code('''
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(9, 2.6), gridspec_kw={"width_ratios": [2, 1, 1]})
    for ax, (name, plane) in zip(axes, [("Y (luma)", clip.y[0]), ("U (Cb)", clip.u[0]), ("V (Cr)", clip.v[0])]):
        ax.imshow(plane, cmap="gray", vmin=0, vmax=255)
        ax.set_title(f"{name} {plane.shape[1]}x{plane.shape[0]}", fontsize=9)
        ax.axis("off")
    '''),
    code('''
    # 4:2:0 -> RGB up-samples chroma (nearest) and clips to [0, 1]; RGB -> 4:2:0 averages 2x2 chroma blocks.
    # Saturated colours (outside the RGB cube) are where the round trip changes samples most.
    rgb = yuv420_to_rgb(clip.y, clip.u, clip.v)           # (T, 3, H, W) float32 in [0, 1]
    y, u, v = rgb_to_yuv420(rgb)                          # and back to 8-bit 4:2:0 planes
    print("RGB", tuple(rgb.shape), rgb.dtype, f"range [{float(rgb.min()):.2f}, {float(rgb.max()):.2f}]")
    for name, a, b in (("Y", clip.y, y), ("U", clip.u, u), ("V", clip.v, v)):
        diff = abs(a.astype(int) - b.astype(int))
        print(f"round trip YUV -> RGB -> YUV, plane {name}: mean |change| {diff.mean():.3f}, largest {diff.max()}")
    '''),
    md(r'''
    ## The tokenizer: frames → latent → frames

    The tokenizer is a small convolutional autoencoder (`progvc_lab/stages/tokenizer.py`). Its encoder
    halves the resolution log2(stride) times, so a frame H×W becomes a latent map
    $$f \in \mathbb{R}^{C \times \lceil H/\text{stride}\rceil \times \lceil W/\text{stride}\rceil}.$$
    Its decoder up-samples (nearest neighbour + convolutions) back to pixels. The latent is still made of
    floats; the quantizer (notebook 02) turns it into integers. VAR's tokenizer works the same way with
    stride 16 and C = 32; InfinityStar's video tokenizer also compresses time (4 frames → 1 latent frame),
    ours works frame by frame and leaves time to the context model.
    '''),
    SETUP,
    code('''
    from progvc_lab.metrics import psnr

    with torch.no_grad():
        f = codec.tokenizer.encode(video)                 # (T, C, h, w)
        x_float = codec.tokenizer.decode(f, video.shape[-2:]).clamp(0, 1)
    H, W = video.shape[-2:]
    print(f"frames {tuple(video.shape)} -> latent {tuple(f.shape)}: "
          f"{f.shape[1] * f.shape[2] * f.shape[3] / (H * W):.3f} floats per pixel")
    print(f"tokenizer round trip on floats (no quantization): {psnr(x_float, video):.2f} dB")
    print(f"the whole codec (tokens, all scales):              {psnr(codec.decode(session.data), video):.2f} dB")
    '''),
    md(r'''
    The float round trip is an **upper bound** for everything after it: quantization can only lose
    information. With the tiny model the gap between the two numbers is the price of the token pyramid.

    ## Frame sizes that are not a multiple of the stride

    The encoder needs H and W divisible by the stride. Other sizes are **padded** at the bottom and the
    right and the decoder **crops** back: never an error, never a silent resize. Padding *replicates*
    the edge pixels: zeros would draw a dark border that costs bits and bleeds into the frame.
    For a 141×170 frame at stride 8: $\lceil 141/8\rceil = 18$ latent rows, so 3 padded pixel rows;
    $\lceil 170/8 \rceil = 22$ columns, 6 padded pixel columns.
    '''),
    code('''
    from progvc_lab.course import check_pad_to_stride, show_solution
    import torch.nn.functional as F

    # EXERCISE: pad frames (N, 3, H, W) at the bottom and right, replicating edge pixels, so that
    # H and W become multiples of `stride`. Frames that already fit come back unchanged.
    # Hint: -H % stride is the number of rows to add; F.pad(x, (left, right, top, bottom), mode="replicate").
    def pad_to_stride(x_NCHW, stride):
        # your code here (about 3 lines)
        raise NotImplementedError

    check_pad_to_stride(pad_to_stride)
    ''', exercise=True),
    stuck("pad_to_stride"),
    code('''
    odd = video[:2, :, :141, :170]                        # a crop with awkward sizes
    with torch.no_grad():
        f_odd = codec.tokenizer.encode(odd)
    print("141x170 frames -> latent", tuple(f_odd.shape[-2:]))
    decoded = codec.decode(codec.encode(odd, fps))
    print("the codec gives back", tuple(decoded.shape), "- the original size")
    '''),
    md(r'''
    **Takeaways.** A y4m file is planar 8-bit 4:2:0; the package converts to RGB once, on reading. The
    tokenizer maps each frame to a small grid of C-dimensional vectors (here one vector per 8×8 pixels).
    Odd sizes are padded and cropped. *Honest note:* the tiny tokenizer is trained for minutes on a CPU
    and on little data: expect soft pictures and low PSNR on textured content; training data and compute
    are the dominant knobs (see `configs/tiny_stage1.yaml`).
    '''),
]

# -----------------------------------------------------------------------------------------------------
NB["02_multiscale_quantizer"] = [
    md(r'''
    # 02 · The multi-scale residual quantizer: latent → token pyramid

    VAR ("Visual Autoregressive modeling", Tian et al. 2024) quantizes a latent $f$ not once but at K
    scales, coarse to fine. Each scale codes **what the coarser scales left over**:

    $$
    \begin{aligned}
    &f_\text{rest} \leftarrow f,\quad \hat f \leftarrow 0\\
    &\text{for } s = 0,\dots,K-1:\\
    &\qquad r_s = \operatorname{area\_down}(f_\text{rest},\; h_s\times w_s) &&\text{what is still missing, at scale } s\\
    &\qquad \text{idx}_s[y,x] = \arg\min_v \lVert r_s[:,y,x] - e_v\rVert_2 &&\text{nearest of } V \text{ codebook vectors}\\
    &\qquad z_s = \varphi_s\big(\operatorname{up}(e_{\text{idx}_s})\big) &&\text{back to full size, small conv}\\
    &\qquad \hat f \leftarrow \hat f + z_s,\qquad f_\text{rest} \leftarrow f_\text{rest} - z_s
    \end{aligned}
    $$

    with $\varphi_s(x) = \tfrac12 x + \tfrac12\,\mathrm{conv}_{3\times3}(x)$. The tokens are the K maps
    $\text{idx}_s$; the decoder rebuilds $\hat f$ from tokens alone (`tokens_to_latent`). Stopping the sum
    after k scales gives a coarser $\hat f_k$: this is what makes the code *progressive*.
    '''),
    SETUP,
    code('''
    import math

    tokens, latent_hw = session.tokens, session.latent_hw
    schedule = codec.quantizer.schedule(latent_hw)
    V = codec.quantizer.codebook_size
    T, H, W = video.shape[0], video.shape[-2], video.shape[-1]
    print(f"latent {latent_hw}; scale schedule {schedule}")
    print(f"{'s':>2} {'size':>7} {'tokens/frame':>12} {'raw bits/frame':>15} {'raw bpp up to s':>16}")
    total = 0
    for s, (h, w) in enumerate(schedule):
        total += h * w * math.log2(V)
        print(f"{s:>2} {f'{h}x{w}':>7} {h * w:>12} {h * w * math.log2(V):>15.0f} {total / (H * W):>16.4f}")
    '''),
    md(r'''
    The "raw" column is $\log_2 V$ bits per token, as if every token were equally likely. The context
    model (notebooks 03-04) does much better on coarse scales, but the table already shows the shape of
    the rate ladder: the finest scale holds most of the tokens. The schedule comes from the latent size
    ($\text{side}_s \approx \text{side}^{s/(K-1)}$ per dimension), so non-square frames get non-square scales.

    ## Exercise 1: area down-sampling

    `area_down` averages the cells of the finer grid that fall into each coarse cell. For a size that
    divides evenly by a factor f, every output value is the mean of an f×f block.
    '''),
    code('''
    from progvc_lab.course import check_area_down_by, check_nearest_code, show_solution

    # EXERCISE: average non-overlapping factor x factor cells: (N, C, h, w) -> (N, C, h/factor, w/factor).
    # Hint: reshape to (N, C, h/f, f, w/f, f) and take the mean over two axes.
    def area_down_by(x_NChw, factor):
        # your code here (about 2 lines)
        raise NotImplementedError

    check_area_down_by(area_down_by)
    ''', exercise=True),
    md(r'''
    ## Exercise 2: the nearest code

    For every position, pick the codebook row $e_v$ closest to the residual vector in L2. Expanding the
    square, $\lVert r - e_v\rVert^2 = \lVert r\rVert^2 - 2\,r\cdot e_v + \lVert e_v\rVert^2$, and the
    first term is the same for every v: one matrix product does all positions at once.
    '''),
    code('''
    # EXERCISE: r_NChw (N, C, h, w) residuals, codebook_VC (V, C) -> ids (N, h, w) int64 of the nearest rows.
    # On a tie pick the lowest index (argmin does). Hint: move C last, flatten positions, torch.cdist or the
    # expansion above, argmin, reshape.
    def nearest_code(r_NChw, codebook_VC):
        # your code here (about 4 lines)
        raise NotImplementedError

    check_nearest_code(nearest_code)
    ''', exercise=True),
    stuck("nearest_code"),
    code('''
    with torch.no_grad():
        f = codec.tokenizer.encode(video)
        print(f"{'k':>2} {'relative latent error ||f - f_hat_k||^2 / ||f||^2':>52}")
        for k in range(1, len(schedule) + 1):
            f_hat = codec.quantizer.tokens_to_latent(tokens, latent_hw, upto=k)
            print(f"{k:>2} {float(((f - f_hat) ** 2).sum() / (f ** 2).sum()):>52.4f}")
    '''),
    md(r'''
    The token maps of one frame, and the frame decoded from the first k scales. A token id is only a
    label (id 7 is not "between" 6 and 8), so the maps are coloured by what the id *stands for*: its code
    vector, projected on the codebook's first three principal components (red, green, blue). Similar
    colours = similar codes; the coarse scales show the frame's layout, the fine ones its edges.
    '''),
    code('''
    from progvc_lab.viz import plot_partial_reconstructions, plot_token_pyramid

    plot_token_pyramid(tokens, t=0, codebook=codec.quantizer.codebook.weight)
    '''),
    code('''
    plot_partial_reconstructions(codec, tokens, latent_hw, video.shape[-2:], t=0, original=video[0])
    '''),
    md(r'''
    ### Explore

    Move the sliders: for scale s you see its token map, the frame rebuilt from scales 0..s, and the
    residual those scales leave (what the finer scales still have to code).
    '''),
    code('''
    from progvc_lab.viz import token_pyramid_explorer

    token_pyramid_explorer(codec, session)
    '''),
    md(r'''
    **Takeaways and links.**
    - VAR: 10 scales (1, 2, 3, 4, 5, 6, 8, 10, 13, 16) on a 16×16 latent, V = 4096, bicubic up-sampling,
      4 shared φ convs. We use 6 scales, V = 512, bilinear up-sampling and one φ per scale: a smaller
      pyramid for a CPU.
    - Infinity replaces the codebook by **bitwise** tokens (BSQ): project to d channels, normalise,
      keep the signs. A token is then d independent bits, the "vocabulary" is $2^d$ without a table, and
      the context model predicts bits (a 2-way softmax per bit). Its *bitwise self-correction* trains the
      model on inputs rebuilt from randomly flipped bits, so it learns to repair its own mistakes.
      In progvc_lab, BSQ is a planned quantizer variant with the same interface (see notebook 07).
    - InfinityStar codes a *spacetime* pyramid: each scale block covers several latent frames. Here each
      frame has its own pyramid and time is handled by the context model.
    '''),
]

# -----------------------------------------------------------------------------------------------------
NB["03_context_model_and_masks"] = [
    md(r'''
    # 03 · The context model and its attention masks

    A GOP (group of pictures) of T frames, each with K token maps, is a sequence of **blocks** (t, s).
    The context model, a small Transformer, outputs for every token of block (t, s) a probability over
    the V codes. The input embedding of a token at position (y, x) of block (t, s) is

    $$
    x = \underbrace{W_\text{in}\,\operatorname{area\_down}(\hat f_{t,<s})[y,x]}_{\text{coarser scales of this frame (start vector at } s=0)}
      + \underbrace{E_\text{prev}[\text{tok}_{t-1,s}[y,x]]}_{\text{previous frame, same scale and position}}
      + E_\text{level}[s] + E_\text{frame}[\min(t, W)] + P(y, x).
    $$

    The first term is VAR's next-scale input. The second one is **not optional** for video: the hidden
    state of block (t−1, s) is built from frame t−1's *coarser* scales only, so attending to it never
    shows the model frame t−1's scale-s tokens themselves. Feeding them in directly is what lets the
    model predict "same as before" in static areas.
    '''),
    SETUP,
    code('''
    tokens, latent_hw = session.tokens, session.latent_hw
    s, t = 3, 1
    ctx_NChw = codec.quantizer.context_input(tokens[:s], s, latent_hw)       # f_hat of scales < s, area-down
    x_NLD = codec.context_model.block_input(ctx_NChw[t:t + 1], tokens[s][t - 1:t], t, s)
    print(f"block (t={t}, s={s}): context input {tuple(ctx_NChw[t].shape)}, previous-frame tokens "
          f"{tuple(tokens[s][t - 1].shape)} -> embeddings {tuple(x_NLD.shape)} (1 clip, h_s*w_s tokens, width D)")
    '''),
    md(r'''
    ### What the previous frame buys

    Code the same 8 frames twice: as one GOP (every frame after the first sees frame t−1), and as 8 GOPs
    of one frame (nothing temporal). `Codec.analyze` reports the model's bits per token per scale and two
    baselines without any context: the **unigram** (a static per-scale token histogram counted on the
    training data and shipped with the model: what a coder without a context model would pay) and the
    **oracle** (the clip's own histogram, which no real coder reaches without also sending it).
    '''),
    code('''
    one_gop = codec.analyze(video, fps)
    codec.config.gop = 1
    intra_only = codec.analyze(video, fps)
    codec.config.gop = 8
    print(f"{'scale':>5} {'GOP of 8':>9} {'GOP of 1':>9} {'unigram':>8} {'oracle':>7}   (bits per token)")
    for s in range(codec.quantizer.num_scales):
        n = one_gop["tokens_per_scale"][s]
        print(f"{s:>5} {one_gop['bits_per_token_per_scale'][s]:>9.3f} {intra_only['bits_per_token_per_scale'][s]:>9.3f} "
              f"{one_gop['unigram_bits_per_token_per_scale'][s]:>8.3f} {max(0.0, one_gop['oracle_unigram_bits_per_scale'][s] / n):>7.3f}")
    print(f"whole clip: {one_gop['bytes']} bytes as one GOP, {intra_only['bytes']} bytes as 8 GOPs")
    '''),
    md(r'''
    ## Masks: who may attend to whom

    A mask is a boolean matrix `allowed[q, k]` over block ids `t*K + s` (frame-major). Three are built in
    (`progvc_lab/stages/masks.py`):

    - **var** (VAR's block-causal rule, frame-major): $\;\text{ord}_k \le \text{ord}_q$ with $\text{ord} = tK + s$.
    - **infinitystar** (InfinityStar's default): the block itself, and the finest scale of the previous
      frame: $(t_k, s_k) = (t_q, s_q)$ or $(t_k, s_k) = (t_q - 1, K-1)$.
    - **progvc_sparse** (ours, the default): the same frame at a coarser-or-equal scale, or the same
      scale in the W previous frames: $(t_k = t_q \wedge s_k \le s_q) \vee (s_k = s_q \wedge t_q - W \le t_k < t_q)$.

    **Truncation safety.** A finished stream can be cut after *any* scale k iff no block at a scale
    below k needs a block at scale k or finer, i.e. iff every allowed key satisfies
    $s_k \le s_q$. `progvc_sparse` has this property; `var` and `infinitystar` do not: their blocks read
    the finest scale of the previous frame, which a cut stream no longer carries.
    '''),
    code('''
    from IPython.display import display
    from progvc_lab.viz import plot_mask

    for name in ("var", "infinitystar", "progvc_sparse"):
        display(plot_mask(name, num_frames=3, num_scales=4))
    '''),
    md(r'''
    The attention cost is the number of (query token, key token) pairs a mask lets attention compute;
    it is dominated by the finest scale. For a GOP of 8 QCIF frames at the codec's own schedule:
    '''),
    code('''
    from progvc_lab.viz import mask_summary

    lengths = [h * w for h, w in codec.quantizer.schedule(latent_hw)]
    print(f"{'mask':>17} {'pairs':>12} {'of var':>7}  truncation safe")
    for name, window in (("var", 1), ("infinitystar", 1), ("progvc_sparse", 1), ("progvc_sparse", 2)):
        info = mask_summary(name, 8, codec.quantizer.num_scales, window, lengths)
        label = name + (f" W={window}" if name == "progvc_sparse" else "")
        print(f"{label:>17} {info['cost']:>12,} {100 * info['ratio_to_var']:>6.1f}%  {info['truncation_safe']}")
    '''),
    md("### Explore: pick a mask, the number of frames and scales, the window"),
    code('''
    from progvc_lab.viz import mask_explorer

    mask_explorer(latent_hw)
    '''),
    md(r'''
    ## Exercise: the progvc_sparse rule

    Build `allowed` (T·K × T·K, bool) for `progvc_sparse` from the rule above. Block ids are
    `t * K + s`; the row is the query, the column the key.
    '''),
    code('''
    from progvc_lab.course import check_progvc_sparse_mask, show_solution

    # EXERCISE: allowed[q, k] = True iff key block (tk, sk) is in the query's frame at a coarser-or-equal
    # scale, or at the same scale in one of the `window` previous frames. Return a bool tensor (T*K, T*K).
    def progvc_sparse_mask(num_frames, num_scales, window=1):
        # your code here (loops are fine; or broadcast t and s of every block)
        raise NotImplementedError

    check_progvc_sparse_mask(progvc_sparse_mask)
    ''', exercise=True),
    stuck("progvc_sparse_mask"),
    md("""
    The codec checks the property when it is built. A mask that is not truncation safe still makes a
    codec, of another kind: it codes frame-major for a number of scales fixed at encode time (the scales
    it does not send are synthesized, identically, by encoder and decoder, as the context later frames
    read), and it refuses to cut its streams.
    """),
    code('''
    from progvc_lab import bitstream
    from progvc_lab.codec import Codec
    from progvc_lab.course.unsafe import with_mask

    var_codec = Codec(codec.tokenizer, codec.quantizer, with_mask(codec.context_model, "var"))
    print("progvc_sparse codec truncation safe:", codec.truncation_safe, "| var codec:", var_codec.truncation_safe)
    data_var = var_codec.encode(video[:3], fps, scales=3)      # sends 3 scales; decodes at exactly 3
    try:
        bitstream.truncate(data_var, 2)
    except bitstream.BitstreamError as e:
        print("BitstreamError:", e)
    '''),
    md(r'''
    **Takeaways and links.**
    - VAR's mask is block-causal: a scale sees all coarser scales. It is perfect for generation, but in a
      video stream stored coarse-to-fine it ties frame t to the finest scale of frame t−1.
    - InfinityStar's attention is sparse on purpose (cost), reading only the last, largest scale of the
      previous clip; coarser scales of the own frame reach a block through its *input*. Also not
      truncation safe: its cut point would be fixed at encode time.
    - ProGVC needs both: temporal context *and* a stream that can be cut anywhere. `progvc_sparse`
      keeps temporal context at the same scale, so every scale-k prefix stays self-contained.
    - Encoder and decoder compute the same probabilities because both call `block_logits` for the
      same blocks in the same order (notebook 04 shows why that matters).
    '''),
]

# -----------------------------------------------------------------------------------------------------
NB["04_entropy_coding"] = [
    md(r'''
    # 04 · Entropy coding: probabilities → integer CDFs → bytes

    If the model gives token x the probability p(x), an ideal entropy coder spends
    $-\log_2 p(x)$ bits on it; an arithmetic coder gets within a few bits *per call* of the sum
    $\sum_i -\log_2 p(x_i)$ ("model bits"). The coder works on integers: each distribution becomes a
    table of frequencies that sum to $2^{16}$, and its running sum, the **CDF**. Decoding works only if
    the decoder rebuilds *exactly* the encoder's integers, so the conversion is one pure function:

    $$
    p = \operatorname{softmax}(\text{logits})\ \text{in float64},\quad
    \text{freq}_v = \lfloor p_v\,(2^{16} - V)\rfloor + 1,\quad
    \text{freq}_{\arg\max p} \mathrel{+}= 2^{16} - \textstyle\sum_v \text{freq}_v,\quad
    \text{cdf} = [0, \operatorname{cumsum}(\text{freq})].
    $$

    The +1 keeps every symbol codable (a symbol with 0 counts could not be coded at all); the leftover
    goes to the most likely symbol (lowest index on ties), so the total is exactly $2^{16}$.
    '''),
    SETUP,
    code('''
    from progvc_lab.course import check_logits_to_cdf, show_solution

    # EXERCISE: logits (L, V) -> integer CDFs (L, V+1) int64 following the recipe above, bit-identical to the
    # codec's. Hint: torch.softmax(logits.double(), -1); torch.floor; freq[torch.arange(L), top] += deficit;
    # torch.cat with a zero column, then cumsum.
    def logits_to_cdf(logits_LV):
        # your code here (about 6 lines)
        raise NotImplementedError

    check_logits_to_cdf(logits_to_cdf)
    ''', exercise=True),
    stuck("logits_to_cdf"),
    md(r'''
    ## Model bits vs actual bytes

    A stream's bytes are written per **chunk**: all frames of one scale of one GOP. Two entropy coders
    can fill a chunk. The default, `coder="constriction"`, runs one range coder through the whole chunk
    (block after block, decoded incrementally), so a chunk pays one termination. `coder="torchac"` codes
    one **block** (one frame at one scale) per call, so a GOP of 8 frames x 6 scales makes 48 calls, each
    with its own termination and (all but the last of a chunk) a length field; `block_bytes` reads the
    length of every string. `encode_with_stats` returns the model bits of every block.
    '''),
    code('''
    import numpy as np
    from progvc_lab import bitstream
    from progvc_lab.course import block_bytes

    data, stats = codec.encode_with_stats(video, fps, coder="torchac")   # one string per block
    model_bits_TK = stats["model_bits"]                  # (frames, scales)
    actual_bits_TK = 8 * block_bytes(data)
    print(f"{'scale':>5} {'model bits':>11} {'actual bits':>12} {'overhead/call':>14}")
    for s in range(model_bits_TK.shape[1]):
        m, a = model_bits_TK[:, s].sum(), actual_bits_TK[:, s].sum()
        print(f"{s:>5} {m:>11.0f} {a:>12} {(a - m) / model_bits_TK.shape[0]:>14.1f}")
    info = bitstream.describe(data)
    print(f"torchac file: {info['total_bytes']} bytes = header {info['header_bytes']} + chunk table "
          f"{info['table_bytes']} + chunks {sum(info['bytes_per_scale'])} (strings {actual_bits_TK.sum() // 8} "
          "+ their length fields)")
    default = bitstream.describe(session.data)           # the same tokens, one range coder per chunk
    print(f"constriction file: {default['total_bytes']} bytes; chunks {sum(default['bytes_per_scale'])} "
          f"for {model_bits_TK.sum() / 8:.0f} model bytes")
    '''),
    md(r'''
    Small blocks pay proportionally the most: a 1×1 block codes one token, yet every call ends with a
    termination of a few bits. How much exactly? Encode random distributions of different lengths:
    '''),
    code('''
    from progvc_lab.course import coder_call_overhead

    for row in coder_call_overhead(vocab=codec.quantizer.codebook_size, repeats=10):
        print(f"{row['symbols']:>5} symbols per call: model {row['model_bits']:8.1f} bits, "
              f"torchac {row['bits']:8.1f} bits, overhead {row['overhead_bits']:5.1f} bits")
    '''),
    md("On this stream's own 1×1 blocks (one token each, and the context model predicts it well):"),
    code('''
    model0, actual0 = model_bits_TK[:, 0].mean(), actual_bits_TK[:, 0].mean()
    print(f"1x1 block: {model0:.2f} model bits, {actual0:.1f} bits written: the overhead is "
          f"{(actual0 - model0) / model0:.1f}x the token's own bits")
    '''),
    md(r'''
    ## Why coding never uses the training pass

    Training computes all logits of a GOP in one teacher-forced pass with the mask; coding computes them
    block by block (`block_logits`). Mathematically the same function, but different matrix shapes reduce
    in a different order, so the floats differ in the last digits, and sometimes an integer CDF differs by
    a count. One differing count desynchronises the decoder *silently* (torchac decodes garbage, no error).
    Hence the rule: encoder and decoder both call `block_logits`, same shapes, same order, fixed threads.
    '''),
    code('''
    from progvc_lab.course import coding_vs_training_logits

    cmp = coding_vs_training_logits(codec, video)
    print(f"largest logit difference {cmp['max_abs_diff']:.2e}; tokens whose integer CDF differs: "
          f"{cmp['tokens_with_different_cdf']} of {cmp['tokens']}")
    '''),
    md("### Where the bits go: −log2 p of every token, per scale"),
    code('''
    from progvc_lab.viz import plot_bits_heatmap

    plot_bits_heatmap(session.bits_maps, t=1)
    '''),
    code('''
    from progvc_lab.viz import bits_heatmap_explorer

    bits_heatmap_explorer(codec, session)
    '''),
    md(r'''
    **Takeaways and plug point.**
    - The CDF conversion is deterministic integer arithmetic on float64 probabilities. Floor (rather than
      round) is only the convention both sides share; no rounding rule can make two machines agree whose
      floats differ in the last bit (a probability next to a count boundary tips either way). What makes
      the decoder agree is *bit-identical floats*: the same code path, shapes, order and threads on both
      sides, and the CRC of every chunk catches what slips through.
    - torchac codes one block per call, all CDFs of the block known up front, a few bits of termination
      per call (measured above) plus the chunk's length fields; for a 1×1 block that termination is
      several times the token's own bits.
    - **Plug point: a streaming coder.** `progvc_lab/stages/entropy.py` has a registry `CODERS` and
      `get_coder(name)`; the stream header stores the coder's name. A constriction range coder
      (`constriction.stream.queue.RangeEncoder`) would code a whole scale of a GOP as one chunk and decode
      it incrementally: one termination per chunk (~17 bits with 32-bit words) instead of one per block.
      It slots in as a class with the same `encode(cdf, symbols)` / `decode(cdf, data)` pair.
    '''),
]

# -----------------------------------------------------------------------------------------------------
NB["05_progressive_truncation"] = [
    md(r'''
    # 05 · Progressive truncation: one encode, K rate points

    The stream stores its chunks **scale-major**:

    ```
    header | table | scale 0 of GOP 0, GOP 1, ... | scale 1 of GOP 0, ... | ... | scale K-1 of ...
    ```

    So the bytes up to the end of scale k−1 are a complete stream of k scales. `bitstream.truncate(data, k)`
    rewrites the header (k scales sent) and the chunk table and drops the rest, without the model; a raw
    cut exactly at a scale boundary also decodes (with a warning). This works because the mask is
    truncation safe (notebook 03): no block of a kept scale ever read a dropped one.

    Rate is counted the way papers do: file bytes (header included) × 8 / (frames × H × W).
    '''),
    SETUP,
    code('''
    from progvc_lab import bitstream
    from progvc_lab.metrics import bpp

    data = session.data
    info = bitstream.describe(data)
    T, H, W = video.shape[0], video.shape[-2], video.shape[-1]
    print(f"header {info['header_bytes']} bytes, chunk table {info['table_bytes']} bytes, "
          f"bytes per scale {info['bytes_per_scale']}")
    print(f"{'k':>2} {'file bytes':>10} {'bpp':>8} {'saved vs all':>13}")
    for k in range(info["num_scales"] + 1):
        n = len(bitstream.truncate(data, k))
        print(f"{k:>2} {n:>10} {bpp(n, T, H, W):>8.4f} {len(data) - n:>13}")
    '''),
    md(r'''
    ## Exercise: the rate ladder

    Given the bytes of each scale and the header size, compute the bpp of the stream cut after
    k = 1, …, K scales: level k keeps scales 0..k−1.
    $$\text{bpp}_k = \frac{8\,\big(\text{header} + \sum_{s<k} \text{bytes}_s\big)}{T\,H\,W}$$
    '''),
    code('''
    from progvc_lab.course import check_bpp_ladder, show_solution

    # EXERCISE: return [bpp_1, ..., bpp_K] for the stream cut after k = 1..K scales.
    def bpp_ladder(bytes_per_scale, header_bytes, num_frames, height, width):
        # your code here (a running sum)
        raise NotImplementedError

    check_bpp_ladder(bpp_ladder)
    ''', exercise=True),
    stuck("bpp_ladder"),
    md(r'''
    Your ladder is a few bytes *below* the real file sizes above: every kept chunk also has an entry in
    the chunk table (its length as a varint and a 2-byte CRC of its tokens). The plot shows what each scale
    costs and what a cut after k = 3 saves. The title counts the whole *file* (header and chunk table
    included), the same bytes as the table above; the chunks alone shrink by a larger share, because the
    header is paid at every k:
    '''),
    code('''
    from progvc_lab.viz import plot_bits_per_scale

    plot_bits_per_scale(info["bytes_per_scale"], k=3, file_bytes=(len(bitstream.truncate(data, 3)), len(data)))
    '''),
    md("### Explore: cut the stream after k scales and decode what is left"),
    code('''
    from progvc_lab.viz import truncation_explorer

    truncation_explorer(codec, session)
    '''),
    md("The rate-distortion curve of this single encode (each point decoded from its real, truncated bytes):"),
    code('''
    from progvc_lab.viz import plot_rd_curve

    points = session.rd_points()
    for p in points:
        print(f"k={p['k']}: {p['bytes']:>6} bytes  {p['bpp']:.4f} bpp  {p['psnr']:.2f} dB")
    plot_rd_curve(points, highlight=3)
    '''),
    md("A raw cut at a scale boundary is a valid stream; a cut anywhere else is a clear error:"),
    code('''
    from progvc_lab.bitstream import BitstreamError

    boundary = len(data) - sum(info["bytes_per_scale"][3:])        # the end of scale 2's chunks
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cut = codec.decode(data[:boundary])
    print(f"raw cut at byte {boundary}: decoded {tuple(cut.shape)}; warnings: {[str(w.message) for w in caught]}")
    print("(the warning counts kept scales from 1: 'after scale 3' is our k = 3, scales 0..2 kept)")
    try:
        codec.decode(data[:boundary - 5])
    except BitstreamError as e:
        print("cut 5 bytes earlier -> BitstreamError:", e)
    '''),
    md(r'''
    **Takeaways and links.**
    - One encode yields K rate points; a server (or a network node) adapts the rate by cutting bytes,
      without a model and without re-encoding. Classic scalable coding (SVC/SHVC) offers the same with
      layers designed for it; here it falls out of the token pyramid plus a truncation-safe mask.
    - With this tiny model the ladder is coarse (6 points, the last scale costs most of the bytes).
      ARPC (ICLR 2026) is the image analogue: VAR as both generator and entropy model, send the first k
      scales, generate the rest. ProGVC does the same for video (notebook 06: generating the rest).
    '''),
]

# -----------------------------------------------------------------------------------------------------
NB["06_detail_sampler"] = [
    md(r'''
    # 06 · The detail sampler: filling the scales a cut removed

    A stream cut after k scales gives the decoder the tokens of scales 0..k−1. For scales k..K−1 it can

    - **zero**: add nothing: $\hat f = \hat f_k$ (smooth, blurry frames; usually the best PSNR);
    - **argmax**: ask the context model for the most likely token everywhere (often flat);
    - **sample**: draw tokens from the model, sharpened by a temperature τ and restricted to the top-k ids:
    $$p_\tau(v) \propto \exp(\ell_v / \tau)\ \text{for } v \in \text{top-}k(\ell),\qquad 0 \text{ otherwise}.$$

    Sampling invents *plausible* detail, not the original one: PSNR usually drops while the picture looks
    less blurry (the perception-distortion trade-off). Draws come from the *integer* CDF with a generator
    seeded by (seed, GOP, t, s), so the same stream and seed give the same video on every run.
    This is InfinityStar's `gt_leak` at inference (ground truth for the first scales, generation after)
    and the "detail synthesis" half of ProGVC.
    '''),
    SETUP,
    code('''
    from progvc_lab.course import check_top_k_filter, show_solution

    # EXERCISE: keep the k largest logits of every row (ties with the k-th are kept), set the others to
    # -inf; k = 0 or k >= V keeps everything. Hint: logits.topk(k, dim=-1).values[:, -1:] is the k-th largest.
    def top_k_filter(logits_LV, k):
        # your code here (about 4 lines)
        raise NotImplementedError

    check_top_k_filter(top_k_filter)
    ''', exercise=True),
    stuck("top_k_filter"),
    md("Cut after k = 3 scales, fill the rest four ways; PSNR and texture energy over the 8 frames:"),
    code('''
    from progvc_lab.metrics import psnr, texture_energy_ratio

    k, t = 3, 4
    choices = {"zero": {}, "argmax": {}, "sample τ=1": dict(temperature=1.0),
               "sample τ=0.7, top-20": dict(temperature=0.7, top_k=20)}
    short = session.truncated(k)
    frames = {}
    print(f"{'filler':>22} {'PSNR-RGB':>9} {'texture energy / original':>27}")
    for name, args in choices.items():
        decoded = codec.decode(short, sampler=name.split()[0], **args)
        frames[name] = decoded[t]
        print(f"{name:>22} {psnr(decoded, video):>9.2f} {texture_energy_ratio(decoded, video):>27.4f}")
    full = codec.decode(session.data)
    print(f"{'all scales sent':>22} {psnr(full, video):>9.2f} {texture_energy_ratio(full, video):>27.4f}")
    '''),
    code('''
    from progvc_lab.viz import plot_sampler_comparison

    plot_sampler_comparison(frames, original=video[t])
    '''),
    md("Same stream and seed → same video; another seed → other details:"),
    code('''
    a = codec.decode_tokens(short, sampler="sample", seed=0)[0]
    b = codec.decode_tokens(short, sampler="sample", seed=0)[0]
    c = codec.decode_tokens(short, sampler="sample", seed=1)[0]
    print("seed 0 twice identical:", all(torch.equal(x, y) for x, y in zip(a, b)),
          "| seed 0 vs 1 identical:", all(torch.equal(x, y) for x, y in zip(a, c)))
    print("transmitted scales are never touched:", all(torch.equal(x, y) for x, y in zip(a[:k], c[:k])))
    '''),
    md("### Explore: k, sampler, temperature, top-k, seed"),
    code('''
    from progvc_lab.viz import sampler_explorer

    sampler_explorer(codec, session)
    '''),
    md(r'''
    **Takeaways and honest limits.**
    - The sampler only *chooses* tokens; the probabilities come from the same `block_logits` as coding,
      and the transmitted scales are never changed.
    - VAR samples with top-k/top-p and a classifier-free-guidance ramp; Infinity samples bits per token
      and trains with bitwise self-correction so that its own sampled mistakes do not snowball.
    - The shipped tiny context model is trained for minutes to *code* tokens, not to generate them: its
      samples are noisy texture at best. Expect "sample" to lower PSNR and raise texture energy; whether it
      looks better depends on the content. A larger model trained longer (and a perceptual metric such as
      LPIPS/DISTS, notebook 08) is where detail synthesis starts to pay off.
    '''),
]

# -----------------------------------------------------------------------------------------------------
NB["07_swapping_a_stage"] = [
    md(r'''
    # 07 · Swapping a stage (and retraining it through the same CLI)

    Every stage is a plain `nn.Module` with a small interface, and the training configs pick each stage
    by `class_path`. Swapping one is one line of YAML or one command-line override; the rest keeps working:

    ```yaml
    # configs/tiny_stage2.yaml
    model:
      context_model:
        class_path: progvc_lab.stages.context_model.ContextModel
        init_args: {codebook_size: 512, latent_dim: 16, num_scales: 6, width: 128, depth: 4, heads: 4,
                    mask: progvc_sparse, window: 1}        # <- try mask: var, or window: 2
    ```

    Here we train two context models **for the same few steps on the same data** through the same entry
    point users call (`progvc-lab train stage2 ...` is `progvc_lab.training.cli.main(["stage2", ...])`)
    and compare their bits per token from the CSV logs. The tokenizer and quantizer (stage 1) are frozen:
    we export the demo codec's to a file that stage 2 loads.
    '''),
    SETUP,
    md(r'''
    ## One line per swap, one benchmark to compare

    Before training anything: every kind of stage can be swapped with **one line**, and
    `progvc_lab.bench_variants` (what `progvc-lab bench CLIP` prints) measures what changed on the same
    clip, everything else equal.

    | stage | the one line | shipped variants |
    |---|---|---|
    | context model (mask) | `Codec.from_pretrained("tiny-var")` | `tiny` (progvc_sparse), `tiny-var`, `tiny-infinitystar` |
    | quantizer | `Codec.from_pretrained("tiny-bsq")` | `tiny` (VQ codebook), `tiny-bsq` (bitwise BSQ) |
    | entropy coder | `codec.encode(video, fps, coder="torchac")` | `constriction` (default), `torchac` |
    | detail sampler | `codec.decode(cut, sampler="sample")` | `zero`, `argmax`, `mean`, `sample`, `copy`, or your own object |
    | tokenizer | `Codec(tokenizer=other.tokenizer, quantizer=..., context_model=...)` | (retrain: below) |

    A mask or a quantizer changes what the context model learns, so each shipped variant is its own
    trained model (`configs/tiny_var_stage2.yaml`, `configs/tiny_bsq_stage1.yaml`, ...). A coder or a
    sampler changes nothing that was trained: it is a keyword of `encode` or `decode`.
    '''),
    code('''
    from progvc_lab import bench_variants as bv
    from progvc_lab.codec import Codec

    models = {name: Codec.from_pretrained(name) for name in ("tiny", "tiny-var", "tiny-infinitystar", "tiny-bsq")}
    for name, m in models.items():
        d = bv.describe(m)
        print(f"{name:>18}: mask {d['mask']:<13} quantizer {d['quantizer']:<4} truncation safe: {d['truncation_safe']}")
    clip = video[:4]   # 4 frames keep this quick; progvc-lab bench uses the whole clip
    # each model: encode once (a mask that is not truncation safe: once per k), decode at every k, score
    reports = {name: bv.model_report(m, clip, fps, name) for name, m in models.items()}
    '''),
    code('''
    import matplotlib.pyplot as plt

    K = codec.quantizer.num_scales
    fig, (ax_bits, ax_rd) = plt.subplots(1, 2, figsize=(11, 3.8))
    for name, r in reports.items():
        ax_bits.plot(range(K), r["bits_per_token_per_scale"], "o-", label=name)
        ax_rd.plot([p["bpp"] for p in r["per_k"]], [p["psnr-y"] for p in r["per_k"]], "o-", label=name)
    ax_bits.plot(range(K), reports["tiny"]["unigram_bits_per_token_per_scale"], "k--", label="unigram (tiny)")
    ax_bits.set(xlabel="scale s", ylabel="model bits per token", title="what each variant pays per token")
    ax_rd.set(xscale="log", xlabel="bpp (file bytes, cut after k)", ylabel="PSNR-Y (dB)", title="k = 1..K, zero fill")
    ax_bits.legend(fontsize=8)
    ax_rd.legend(fontsize=8)
    plt.tight_layout()
    plt.show()

    print(f"{'model':>18} {'bytes':>6} {'vs unigram':>10} {'attention pairs':>15} {'of VAR':>6} {'enc f/s':>7} {'dec f/s':>7}")
    for name, r in reports.items():
        a = r["attention"]
        print(f"{name:>18} {r['bytes']:>6} {r['ratio_to_unigram']:>10.2f} {a['pairs']:>15,} {a['fraction_of_var']:>6.2f} "
              f"{r['encode_fps']:>7.1f} {r['decode_fps']:>7.1f}")
    '''),
    md(r'''
    Read the table with the chapter's caveats. Compare the bytes column: the three masks code close to
    each other (each context model was fine-tuned for 400 steps from the same start), while progvc_sparse computes
    a fraction of VAR's attention pairs (it falls with the GOP length: VAR's grow with its square) and is the only one of the three whose stream can be cut after
    any k; VAR's and InfinityStar's streams are encoded once per k. BSQ pays more bits and loses PSNR at
    the full pyramid: its 9 bits per token span a 9-dimensional subspace of the 16-channel latent
    (tutorial 07 has the measured story).

    The coder and the sampler are keywords. The coders code **the same tokens**; only the bytes around
    them differ (torchac: one string per block, each with its termination; constriction: one per scale
    of a GOP). The samplers fill **the same cut stream**, so each k is an equal-bytes comparison.
    '''),
    code('''
    coders = bv.coder_report(codec, clip, fps)          # each coder encodes, then decodes at every k
    for name, o in coders.items():
        print(f"{name:>13}: {o['calls']:>3} calls, {o['chunks']} chunks, {o['model_bytes']:7.1f} model bytes in "
              f"{o['bytes']:5.0f} chunk bytes ({o['overhead_bytes_per_call']:.2f} B per call), file bytes at k = 1..K "
              f"{o['bytes_per_k']}, same tokens back at every k: {o['round_trip_every_k']}")
    '''),
    code('''
    class PreviousFrame:
        """A detail sampler of our own: an unsent token repeats frame t-1's token there (argmax on frame 0).

        It needs only the members of progvc_lab.stages.protocols.DetailSampler: no subclassing, no registry."""
        name, config, predicts, latent_fill, mean_context = "previous", {}, True, False, "latent"

        def probabilities(self, logits_LV):
            return torch.softmax(logits_LV.double(), -1)

        def choose(self, logits_LV, gop, t, s, prev_L=None, still_L=None):
            return logits_LV.argmax(-1) if prev_L is None else prev_L.clone()


    samplers = bv.sampler_report(codec, clip, fps, ["zero", "argmax", "mean", "sample", PreviousFrame()],
                                 perceptual=False)   # perceptual=True adds ST-LPIPS (slower)
    fig, (ax_p, ax_t) = plt.subplots(1, 2, figsize=(11, 3.6))
    for name, rows in samplers["samplers"].items():
        ks = [r["k"] for r in rows]
        ax_p.plot(ks, [r["psnr-y"] for r in rows], "o-", label=name)
        ax_t.plot(ks, [r["texture-ratio"] for r in rows], "o-", label=name)
    ax_p.set(xlabel="k (scales sent; equal bytes at each k)", ylabel="PSNR-Y (dB)")
    ax_t.set(xlabel="k", ylabel="texture energy, decoded / original")
    ax_p.legend(fontsize=8)
    plt.tight_layout()
    plt.show()
    '''),
    md(r'''
    Zero fill has the best PSNR at every k: a guessed detail that is not the real one costs squared
    error twice (the missing detail plus the wrong one). The samplers that draw tokens put texture
    energy back (right panel), which a perceptual metric such as ST-LPIPS rewards and PSNR punishes;
    `progvc-lab eval` and `progvc-lab bench` score both.

    **The tokenizer** is the one stage a keyword cannot swap usefully: the quantizer's codebook and the
    context model were trained on *its* latents. The swap itself is one line; the cell below puts
    tiny-bsq's tokenizer (trained with another quantizer) under tiny's quantizer and context model.
    '''),
    code('''
    mixed = Codec(tokenizer=models["tiny-bsq"].tokenizer, quantizer=codec.quantizer, context_model=codec.context_model)
    r_mixed = bv.model_report(mixed, clip, fps, "tiny + tiny-bsq's tokenizer")
    for name, r in (("tiny", reports["tiny"]), ("tiny with tiny-bsq's tokenizer", r_mixed)):
        full = r["per_k"][-1]
        print(f"{name:>31}: {full['bytes']:>5} bytes, PSNR-Y {full['psnr-y']:.2f} dB, MS-SSIM {full['ms-ssim-rgb']:.3f}")
    print("fingerprints differ:", mixed.fingerprint() != codec.fingerprint(),
          "(a stream of one is refused by the other)")
    '''),
    md(r'''
    A new tokenizer is a new stage 1: train it (`progvc-lab train stage1 --config configs/tiny_stage1.yaml
    --model.tokenizer.class_path your_module.YourTokenizer`), then stage 2 on its tokens. The rest of
    this notebook does that for the context model, the cheaper stage, with two masks.

    The same comparison from a shell, on any clip, with every shipped variant (a few minutes for 30
    QCIF frames):

    ```bash
    progvc-lab bench data/foreman_qcif_30f.y4m --no-speed --json foreman_variants.json
    progvc-lab bench my_clip.y4m --variants samplers --samplers zero,sample   # narrowed
    ```

    ## Retraining a variant through the same CLI
    '''),
    code('''
    import tempfile
    from pathlib import Path

    from progvc_lab.data import DATA_DIR
    from progvc_lab.training.modules import save_stage1

    CONFIGS = DATA_DIR.parent / "configs"
    workdir = Path(tempfile.mkdtemp(prefix="progvc_nb07_"))
    stage1 = workdir / "stage1.pt"
    save_stage1(stage1, codec.tokenizer, codec.quantizer)     # the frozen stage 1 both variants share
    print("stage 1 weights:", stage1, "| config:", CONFIGS / "tiny_stage2.yaml")
    '''),
    code('''
    import logging

    from progvc_lab.course import read_metrics
    from progvc_lab.training.cli import main as train

    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)   # keep the notebook readable
    STEPS = 40

    def train_variant(name, *overrides):
        """Stage-2 training for STEPS steps with a small context model; returns the run's metrics."""
        run = workdir / name
        args = ["stage2", "--config", str(CONFIGS / "tiny_stage2.yaml"),
                "--model.stage1_path", str(stage1), "--model.export_path", "null",
                "--model.context_model.init_args.width", "64", "--model.context_model.init_args.depth", "2",
                "--model.lr", "0.005", *overrides,
                "--data.sources", "[]", "--data.val_sources", "[]",   # synthetic camera motion, train and val
                "--data.crop_size", "[64,64]", "--data.clip_len", "3", "--data.batch_size", "4",
                "--data.val_samples", "8", "--trainer.max_steps", str(STEPS),
                "--trainer.val_check_interval", str(STEPS), "--trainer.limit_val_batches", "2",
                "--trainer.log_every_n_steps", "5", "--trainer.enable_progress_bar", "false",
                "--trainer.enable_model_summary", "false",
                "--trainer.default_root_dir", str(run), "--trainer.logger.init_args.save_dir", str(run)]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            train(args)
        return read_metrics(run)

    VARIANTS = {"progvc_sparse W=1": ["--model.context_model.init_args.mask", "progvc_sparse"],
                "var": ["--model.context_model.init_args.mask", "var"]}
    # add your own: {"progvc_sparse W=2": ["--model.context_model.init_args.window", "2"]}
    results = {name: train_variant(name.replace(" ", "_").replace("=", ""), *ov) for name, ov in VARIANTS.items()}
    '''),
    code('''
    K = codec.quantizer.num_scales
    print(f"bits per token: training (first -> last logged step) and validation after {STEPS} steps")
    print(f"{'variant':>20} {'train':>13} " + " ".join(f"{'s' + str(s):>5}" for s in range(K)) + f" {'val':>5}")
    for name, m in results.items():
        train_bits = m["train/bits_per_token"]
        per_scale = [m[f"val/bits_per_token_s{s}"][-1][1] for s in range(K)]
        print(f"{name:>20} {train_bits[0][1]:>5.2f} -> {train_bits[-1][1]:>4.2f} "
              + " ".join(f"{b:>5.2f}" for b in per_scale) + f" {m['val/bits_per_token'][-1][1]:>5.2f}")
    '''),
    md(r'''
    Both variants start at about $\log_2 512 = 9$ bits (a uniform guess) and after 40 steps have learnt
    mostly the token statistics of the synthetic clips; differences of a few hundredths of a bit between
    them are noise. That is the point of a fair comparison: *same data, same steps, same seed*, then train
    longer (`STEPS`; `configs/tiny_stage2.yaml` uses 1500) before concluding. Validation here uses other
    synthetic clips than training. Try validating on a real clip
    (`"--data.val_sources", '["data/akiyo_qcif_30f.y4m"]'`): after 40 steps on synthetic motion the model
    is *worse than uniform* there (about 10 bits per token): what it learnt does not transfer yet.
    The `var` model can be trained and measured, but it **cannot be exported as a codec**: its mask is not
    truncation safe (notebook 03), so `--model.export_path` is `null` here.

    ## Exercise: the histogram baselines

    A context model is only useful if it beats a *static histogram*. `Codec.analyze` reports two:
    the **unigram** (per-scale token frequencies counted on the training data, shipped with the model)
    and the **oracle**: code every token of a scale with the clip's *own* frequencies,
    $-\sum_v n_v \log_2 (n_v / N)$ bits. The oracle is optimistic: a real decoder would need the
    histogram too. Write the oracle.
    '''),
    code('''
    from progvc_lab.course import check_unigram_bits, show_solution

    # EXERCISE: total bits to code `tokens` (any shape, ids in [0, codebook_size)) with their own histogram.
    # Hint: torch.bincount(tokens.flatten(), minlength=codebook_size); skip ids that never occur.
    def unigram_bits(tokens, codebook_size):
        # your code here (about 3 lines)
        raise NotImplementedError

    check_unigram_bits(unigram_bits)
    ''', exercise=True),
    stuck("unigram_bits"),
    code('''
    analysis = codec.analyze(video, fps)      # the demo codec's own context model on these 8 frames
    print(f"{'scale':>5} {'model bits':>11} {'unigram bits':>13} {'ratio':>6} {'oracle bits':>12}")
    for s in range(K):
        print(f"{s:>5} {analysis['model_bits_per_scale'][s]:>11.0f} {analysis['unigram_bits_per_scale'][s]:>13.0f} "
              f"{analysis['ratio_to_unigram_per_scale'][s]:>6.2f} {max(0.0, analysis['oracle_unigram_bits_per_scale'][s]):>12.0f}")
    print(f"all scales: the context model needs {analysis['ratio_to_unigram']:.2f} of the unigram bits")
    '''),
    md(r'''
    ## Plug points: where the next variants slot in

    | stage | interface the rest of the codec uses | how to swap it | planned variants |
    |---|---|---|---|
    | tokenizer | `encode(x) -> f`, `decode(f, size) -> x`, `stride`, `latent_dim` | `model.tokenizer.class_path` in `configs/tiny_stage1.yaml` | stride 16, a temporal tokenizer |
    | **quantizer** | `schedule(latent_hw)`, `tokenize(f) -> [tokens]`, `tokens_to_latent(tokens, latent_hw, upto)`, `context_input(tokens, s, latent_hw)`, `num_scales`, `codebook_size` | `model.quantizer.class_path` in `configs/tiny_stage1.yaml` | **BSQ** (Infinity's bitwise tokens: d bits per token, no codebook table; the context model then predicts bits) |
    | context model | `forward(ctx_inputs, tokens)` for training, `new_state` + `block_logits(state, t, s, ctx)` for coding | `model.context_model.class_path` / `init_args` in `configs/tiny_stage2.yaml` | masks (`masks.py` registry), windows, widths |
    | **entropy coder** | `encode(cdf, symbols) -> bytes`, `decode(cdf, data) -> symbols` | `CODERS` in `stages/entropy.py` + `Codec(coder=...)`; the name goes into the stream header | **constriction** streaming range coder: one chunk per scale of a GOP, decoded incrementally |
    | detail sampler | `choose(logits, gop, t, s) -> tokens` | `codec.decode(data, sampler=...)` | top-p, per-scale temperatures |

    A new quantizer must keep two promises: the decoder path is built from tokens only
    (`tokens_to_latent`, `context_input`), and `context_input` is the *one* function that builds
    context-model inputs for training, encoder and decoder.
    '''),
    code('''
    import shutil

    shutil.rmtree(workdir, ignore_errors=True)     # the two training runs' logs and checkpoints
    '''),
]

# -----------------------------------------------------------------------------------------------------
NB["08_evaluation"] = [
    md(r'''
    # 08 · Evaluation: rate-distortion curves, metrics, baselines

    The protocol follows video-coding papers (`progvc_lab/metrics.py`, `progvc_lab/evaluate.py`):

    - **rate**: bpp = file bytes × 8 / (frames × H × W), header included, original frame size;
    - **PSNR** per frame, then the **mean over frames** (not the PSNR of the mean MSE):
      $\text{PSNR} = 10 \log_{10}(1 / \text{MSE})$ for RGB in [0, 1]; the YUV variant weights
      $(6Y + U + V)/8$ on 8-bit 4:2:0 (DCVC's convention; say which one you report);
    - **MS-SSIM** on RGB (QCIF is too small for the standard 11-tap window: a 7-tap window, stated);
    - **BD-rate**: the average rate difference at equal PSNR between two RD curves (Bjøntegaard);
    - results in **CompressAI's JSON** layout, so existing plotting tools read them.
    '''),
    SETUP,
    code('''
    from progvc_lab.course import check_mean_psnr, check_rate_saving_at_quality, show_solution

    # EXERCISE 1: a (T, 3, H, W) and b in [0, 1] -> the mean over frames of each frame's PSNR in dB.
    def mean_psnr(a_T3HW, b_T3HW):
        # your code here (about 2 lines)
        raise NotImplementedError

    check_mean_psnr(mean_psnr)
    ''', exercise=True),
    md(r'''
    BD-rate integrates the gap between two curves over their common PSNR range. Its core, at a single
    quality: interpolate each curve's $\log(\text{bpp})$ linearly in PSNR at the target, then
    $\Delta R = \exp(\log R_\text{test} - \log R_\text{anchor}) - 1$ (negative = the test codec saves rate).
    '''),
    code('''
    # EXERCISE 2: percent rate difference of the test codec against the anchor at `target_psnr`.
    # Hint: np.interp(target, psnr_sorted, log_bpp_sorted) for each curve (sort each by PSNR first).
    def rate_saving_at_quality(anchor_bpp, anchor_psnr, test_bpp, test_psnr, target_psnr):
        # your code here (about 5 lines)
        raise NotImplementedError

    check_rate_saving_at_quality(rate_saving_at_quality)
    ''', exercise=True),
    stuck("rate_saving_at_quality"),
    md("## The codec's own RD curve: one encode, truncated to k = 1..K, every level decoded from its bytes"),
    code('''
    from progvc_lab.evaluate import format_table, rate_points

    result = rate_points(codec, video, fps, name="foreman (8 frames)")
    print(format_table(result))
    '''),
    code('''
    import json

    from progvc_lab.evaluate import to_compressai

    report = to_compressai(result)                      # CompressAI's layout: name, description, results
    print(json.dumps({k: v for k, v in report.items() if k != "results"}, indent=1))
    for key, values in report["results"].items():
        print(f"results[{key!r}]: [{', '.join(f'{v:.4g}' for v in values)}]")
    '''),
    md(r'''
    ## Against the codecs people use: x264 and x265, scored by the same code

    `progvc_lab.rdeval` (the engine of `progvc-lab eval`) puts our truncation ladder next to x264 and
    x265 on the **same frames**: `veryslow`, `-tune psnr`, one intra frame then P/B frames, a CRF
    ladder chosen for this clip so that it spans our rates (down to CRF 51, the lowest rate they can
    reach). Their bytes are counted on the raw elementary stream **without the encoder-information
    SEI** (on a short QCIF clip that text alone is bigger than a whole low-rate stream of ours). Every
    decode of every codec goes through the one `rdeval.score` function: PSNR-Y/U/V/RGB, PSNR-YUV
    (6Y+U+V)/8, MS-SSIM, ST-LPIPS (shift-tolerant LPIPS; lower is better), GMSD and the texture ratio.
    Without `ffmpeg` on your PATH the baselines are skipped, and the cell says so.
    '''),
    code('''
    from progvc_lab import baselines, perceptual, rdeval
    from progvc_lab.data import sample_clip_path

    clip = sample_clip_path("foreman")
    wanted = [b for b in ("x264", "x265") if baselines.available(b)[0]]
    for b in {"x264", "x265"} - set(wanted):
        print(f"{b} skipped: {baselines.available(b)[1]}")
    use_perceptual = perceptual.st_lpips_available()[0]
    if not use_perceptual:
        print("ST-LPIPS skipped:", perceptual.st_lpips_available()[1])
    # the truncation ladder of one encode, and the full pyramid at three RD lambdas (encode --lambda)
    res = rdeval.evaluate_clip(codec, clip, samplers=("zero",), baselines=wanted, frames=len(video),
                               perceptual=use_perceptual, model_name="demo", lambdas=(0.0, 0.02, 0.1))
    print(rdeval.format_clip(res))
    '''),
    code('''
    doc = {"clips": [res]}
    fig = rdeval.plot_rd(doc, metric_keys=("psnr-y", "ms-ssim-rgb", "st-lpips") if use_perceptual else ("psnr-y", "ms-ssim-rgb"))
    fig
    '''),
    md("Where x264 and x265 stop (CRF 51, their lowest rate) and where our ladder stands:"),
    code('''
    import numpy as np

    ours = res["codecs"][0]["results"]
    for entry in (e for e in res["codecs"] if e.get("codec") != "ours"):
        r = entry["results"]
        i = int(np.argmin(r["bpp"]))
        above = [j for j, b in enumerate(ours["bpp"]) if b >= r["bpp"][i]]
        line = (f"{entry['name']} CRF {r['crf'][i]}: {r['bpp'][i]:.4f} bpp at {r['psnr-y'][i]:.2f} dB PSNR-Y")
        if above:
            j = above[0]
            line += (f"; our first level at or above that rate, k = {ours['k'][j]}: {ours['bpp'][j]:.4f} bpp, "
                     f"{ours['psnr-y'][j]:.2f} dB ({ours['psnr-y'][j] - r['psnr-y'][i]:+.2f} dB)")
        print(line)
    '''),
    md(r'''
    **Reading the summary.** *BD-rate* is the average rate difference at equal quality, computed
    only over the quality range both curves share (it says "no overlap" rather than extrapolate);
    *gap at equal rate* interpolates the baseline's quality (in log-rate) at each of our rates.

    ## The same budget, picture beside picture

    Our full stream, and x265 at (about) the same number of bytes:
    '''),
    code('''
    from progvc_lab.evaluate import same_bytes_comparison

    same = same_bytes_comparison(result, clip, video, fps)   # our full stream vs x265 at about its bytes
    same["figure"] if same else None                         # (without ffmpeg it says why it skipped)
    '''),
    md(r'''
    **Takeaways and honest limits.**
    - One encode gives K points; every point is a real file (header and chunk table included) decoded by
      the real decoder. That is what the numbers above are.
    - Our lowest levels lie below the lowest rate of x264/x265 at CRF 51, but that is no rate "they cannot
      reach": at CRF 51 x264 already gives a higher PSNR than our next level up, with fewer bits (the cell
      above), and a classical codec goes lower still by coding fewer pixels or frames. Where both have
      points x265 is far ahead: on the
      committed 30-frame evaluation, 3 dB PSNR-Y on Akiyo and 7-8 dB on Foreman and Big Buck Bunny
      at equal rate, and a BD-rate of about +300..400% where the curves meet at all. The tiny model's
      lowest-rate points are layouts rather than watchable video: it is a teaching model trained for
      minutes on a CPU. The *mechanics* (progressive truncation, a context model that beats the
      unigram, copy-aware probabilities, RD-optimised tokens, exact arithmetic coding, detail
      synthesis) are what it demonstrates; the remaining gap is the tokenizer's picture quality.
    - ST-LPIPS loads the weights shipped in the `stlpips-pytorch` wheel into our own network (no
      torchvision, no download); LPIPS and DISTS run only from weights you point at
      (`progvc_lab.perceptual.lpips(a, b, weights=...)`). GMSD and the texture ratio need no weights.
    - `progvc-lab eval CLIP... --json out.json --plot out.png` runs this protocol on any clip; the
      committed results for the shipped model are in `benchmarks/results/`.
    '''),
]

# -----------------------------------------------------------------------------------------------------
SETUP_AKIYO = code('''
    import warnings

    import numpy as np
    import torch

    from progvc_lab.course import sample_video
    from progvc_lab.viz import figures, load_demo_codec

    torch.manual_seed(0)
    codec = load_demo_codec()                           # the shipped tiny model
    video, fps = sample_video(frames=10, name="akiyo")  # Akiyo, QCIF: a news anchor in front of a static set
    T = video.shape[0]
    print(f"video {tuple(video.shape)} at {float(fps):.2f} fps; encoder defaults: copy_gate="
          f"{codec.resolve_copy_gate(codec.config.copy_gate)!r}, rdo_lambda={codec.config.rdo_lambda}, GOP {codec.config.gop}")
''')

NB["09_temporal_copy_and_rdo"] = [
    md(r'''
    # 09 · Temporal copy and RD-optimised tokens: the encoder's low-rate tools

    Notebooks 03–05 coded every token with the context model's softmax and sent the **nearest** code.
    On a static clip that leaves bits on the table: most tokens simply repeat the previous frame's, and
    the nearest code is not always worth its bits. The encoder has three tools for this (all in
    `progvc_lab/codec.py`, options of `encode` / `encode_with_stats`):

    | option | what it changes | who must know |
    |---|---|---|
    | `copy_gate` (`"none"`, `"count"`, `"context"` (default), `"learned"`) | the **probabilities**: a mixture that bets on "same token as frame t−1" | encoder and decoder (in the header) |
    | `rdo_lambda` (default 0.005) | the **token choice**: cheapest in distortion + λ·bits, not nearest | encoder only |
    | `gop` (default 32) | one intra frame, then P frames | the stream layout |

    We use **Akiyo**, where the copy gate has the most to gain.
    '''),
    SETUP_AKIYO,
    md(r'''
    ## 1 · The copy gate

    For block (t, s) of a P frame, prev is frame t−1's token at the same scale and position. The coded
    distribution is the mixture

    $$
    p(v) = g\,[v = \text{prev}] + (1 - g)\,\operatorname{softmax}(\ell)_v ,\qquad
    g = \frac{\text{hits}_s + 2r}{\text{seen}_s + 2},\quad
    r = \frac{\text{hits}_{<s} + 2}{\text{seen}_{<s} + 3},
    $$

    with the gate g counted, identically by encoder and decoder (a hit is a token equal to its
    predecessor): scale s's own hits over the earlier P frames of the GOP, **backed off** to r, the copy
    rate of the coarser scales (which frame t has already coded). `"count"` keeps one such count per
    scale; the default `"context"` keeps nine, split by "was this position a copy in frame t−1" × "was
    the coarser token a copy", each backed off to the scale's rate. A copied token costs at most
    $-\log_2 g$ bits; a token that changes pays $-\log_2(1 - g)$ extra. The gate of scale s reads only
    scales ≤ s, so cutting the stream after any scale still works.

    How often do Akiyo's tokens repeat, and what does the mixture save? (λ = 0 here: the same tokens in
    every encode, only the probabilities differ.)
    '''),
    code('''
    from progvc_lab.viz.widgets import LambdaSweep

    sweep = LambdaSweep(codec, video, fps, "akiyo")      # one encode per lambda (default copy gate), each computed once
    data_ctx, stats_ctx = sweep.encoded(0.0)            # copy_gate="context" (the default), nearest codes
    data_count, stats_count = codec.encode_with_stats(video, fps, copy_gate="count", rdo_lambda=0.0)
    data_none, stats_none = codec.encode_with_stats(video, fps, copy_gate="none", rdo_lambda=0.0)
    assert all(torch.equal(a, b) for a, b in zip(stats_none["tokens"], stats_count["tokens"]))

    copy_rate = figures.copy_rate_per_scale(stats_count["tokens"])
    bits_none = figures.bits_per_token_per_scale(stats_none)
    bits_count = figures.bits_per_token_per_scale(stats_count)
    print(f"{'scale':>5} {'tokens':>7} {'% = prev':>9} {'bits/token none':>16} {'count':>7}")
    for s, tok in enumerate(stats_count["tokens"]):
        print(f"{s:>5} {tok[0].numel():>7} {100 * copy_rate[s]:>8.1f}% {bits_none[s]:>16.2f} {bits_count[s]:>7.2f}")
    print(f"file: {len(data_none)} bytes without the gate, {len(data_count)} with one count per scale "
          f"({100 * (1 - len(data_count) / len(data_none)):.0f}% smaller), {len(data_ctx)} with nine (the default)")
    figures.plot_copy_statistics(copy_rate, {"copy_gate='none'": bits_none, "copy_gate='count'": bits_count})
    '''),
    md(r'''
    The gate is not a constant: on the first P frame, scale 0 starts at the prior 2/3 and every finer
    scale at the copy rate of the coarser ones, then each follows its own hits (the `"count"` gate here:
    one value per block). `copy_gate_trace` reads the gate the coder used for every block from the encoder's result
    (`EncodeResult.gate`, recorded by the coding walk) (dotted: the fraction of that block's tokens that really were copies).
    '''),
    code('''
    gate_TK = figures.copy_gate_trace(codec, stats_count)
    copy_TK = np.stack([np.r_[np.nan, (tok[1:] == tok[:-1]).double().flatten(1).mean(1).numpy()]
                        for tok in stats_count["tokens"]], axis=1)
    print("gate g per frame t and scale s (t = 0 is the intra frame: no gate)")
    for t in range(T):
        print(f"t={t:<2} " + " ".join("  -  " if np.isnan(g) else f"{g:.3f}" for g in gate_TK[t]))
    figures.plot_gate_over_frames(gate_TK, copy_TK)
    '''),
    code('''
    from progvc_lab.course import check_copy_mixture, show_solution

    # EXERCISE 1: the copy mixture. logits (L, V), prev (L,) int64, gate (L,) float64 ->
    # probabilities (L, V) float64: g * onehot(prev) + (1 - g) * softmax(logits), row by row.
    # Hint: torch.softmax(logits.double(), -1); torch.nn.functional.one_hot(prev, V); gate[:, None].
    def copy_mixture(logits_LV, prev_L, gate_L):
        # your code here (about 4 lines)
        raise NotImplementedError

    check_copy_mixture(copy_mixture)
    ''', exercise=True),
    stuck("copy_mixture"),
    md(r'''
    ## 2 · RD-optimised token choice (entropy-constrained VQ)

    The nearest code minimises distortion only. With the copy gate, frame t−1's token is often much
    cheaper than the nearest code and almost as close. Per block the encoder picks

    $$
    v^\star = \arg\min_{v \,\in\, \mathcal{N}_n(r)\,\cup\,\{\text{prev}\}}\;
    A_s\,\lVert r - e_v\rVert^2 + \lambda\,\text{bits}(v),\qquad
    \text{bits}(v) = -\log_2\frac{\text{freq}_v}{2^{16}},
    $$

    where r is the scale-s residual left by the tokens already chosen at coarser scales,
    $\mathcal{N}_n(r)$ its `rdo_candidates` = 8 nearest codes, $A_s = (h\,w)/(h_s w_s)$ the latent
    positions one scale-s token covers, and bits(v) exactly what the coder pays under the block's
    integer CDF (copy gate included). So λ is in *latent squared error per bit*, the same at every scale;
    λ = 0 is nearest-code encoding. Only the encoder changes: the decoder reads whatever tokens it gets.
    '''),
    code('''
    p0, p1 = sweep.point(0.0), sweep.point(codec.config.rdo_lambda)
    for p in (p0, p1):
        print(f"lambda {p['rdo_lambda']:<6g}: {p['bytes']:>5} bytes  {p['bpp']:.4f} bpp  "
              f"MS-SSIM {p['ms_ssim']:.4f}  PSNR {p['psnr']:.2f} dB  latent distortion {p['latent_distortion']:.0f}")
    print(f"RDO: {100 * (1 - p1['bytes'] / p0['bytes']):.0f}% fewer bytes for "
          f"{p0['ms_ssim'] - p1['ms_ssim']:.4f} MS-SSIM")
    figures.plot_bits_per_token({"lambda = 0 (nearest code)": p0["bits_per_token"],
                                 f"lambda = {p1['rdo_lambda']:g}": p1["bits_per_token"]},
                                title="bits per token before / after RDO")
    '''),
    code('''
    from progvc_lab.course import check_rdo_choice

    # EXERCISE 2: the RDO choice for one block. dist (L, V): ||r - e_v||^2 per position and code; bits (L, V);
    # prev (L,) frame t-1's tokens, or None in an intra frame; lam, area (floats); candidates (int).
    # Return (L,) int64: per row the token with the smallest area * dist + lam * bits among the `candidates`
    # nearest codes and prev. Hint: dist.topk(candidates, dim=1, largest=False).indices; a boolean "allowed"
    # mask; masked_fill(~allowed, inf); argmin(dim=1).
    def rdo_choice(dist_LV, bits_LV, prev_L, lam, area, candidates):
        # your code here (about 6 lines)
        raise NotImplementedError

    check_rdo_choice(rdo_choice)
    ''', exercise=True),
    stuck("rdo_choice"),
    md(r'''
    ### Explore: the lambda slider

    Each λ below is one encode of the clip with all scales sent (computed once, then cached: a slider move
    only looks it up). Watch the RD point move along the λ curve: the first step from λ = 0 buys most of
    the saving, large λ start to cost quality (the encoder copies where it should not).
    '''),
    code('''
    from progvc_lab.viz.widgets import lambda_explorer

    lambda_explorer(None, sweep)          # or lambda_explorer(codec, video, fps): a fresh sweep
    '''),
    code('''
    for p in sweep.points():
        print(f"lambda {p['rdo_lambda']:<6g} {p['bytes']:>5} bytes  {p['bpp']:.4f} bpp  "
              f"MS-SSIM {p['ms_ssim']:.4f}  PSNR {p['psnr']:.2f} dB")
    '''),
    md(r'''
    ## 3 · The GOP: one intra frame, then P frames

    Frame 0 of a GOP has no previous frame: no copy gate, no previous-frame attention, every token paid in
    full. The default GOP is 32 frames (the coding state keeps every block's keys and values, so memory
    grows with the GOP; a new GOP also bounds how far a lost chunk propagates). Compare with GOP 8:
    '''),
    code('''
    streams = {"GOP 32": sweep.encoded(codec.config.rdo_lambda),        # default options: one GOP of 10 frames
               "GOP 8": codec.encode_with_stats(video, fps, gop=8)}     # intra frames at t = 0 and 8
    intra = {"GOP 32": [0], "GOP 8": list(range(0, T, 8))}
    # the model's bits of each frame (all its blocks), in bytes: the range coder writes one string per
    # scale, so frames have no byte boundaries in the file; the two differ by ~1 % (notebook 04)
    per_frame = {name: st["model_bits"].sum(1) / 8 for name, (data, st) in streams.items()}
    for name, b in per_frame.items():
        p = np.delete(b, intra[name])
        print(f"{name}: intra frames {b[intra[name]].round().tolist()} bytes, P frames {p.min():.0f}..{p.max():.0f} "
              f"bytes (mean {p.mean():.0f}); file {len(streams[name][0])} bytes")
    figures.plot_bytes_per_frame(per_frame, intra)
    '''),
    md(r'''
    **Takeaways and limits.**
    - On a static clip most tokens repeat; the count gate turns that into bits saved without any training
      (the decoder keeps the same counts). `"context"` (the default) splits the counts by "was this a copy
      last frame" × "was the coarser token a copy": equal to `"count"` on Akiyo, 2-7 % smaller on moving
      clips. The **learned** gate (`tiny-gate`: a per-token head trained in stage 2) is an option.
    - RDO is encoder-only and costs one comparison per candidate; `encode_to_target(video, target_bytes=...)`
      searches λ and the number of scales k for a byte budget (`progvc-lab encode --target-bytes`).
    - The intra frame is the expensive one: at these rates it can cost as much as all P frames together,
      so long GOPs matter more here than in a classic codec. The price is memory (the KV cache of a GOP)
      and error propagation.
    - Quality is still the tiny model's: RDO and the gate move bytes, they cannot add detail the tokenizer
      never learned.
    '''),
]

# -----------------------------------------------------------------------------------------------------
NB["10_arithmetic_coding"] = [
    md(r"""
    # 10 · Arithmetic coding from scratch: the coder, its bound, and how one count breaks it

    Notebook 04 turned probabilities into integer CDFs and handed them to torchac, a black box. Here you
    write the two steps inside it, run the result on the codec's real CDFs, and find that it writes
    **the same bytes** as torchac. Then you break it on purpose.

    The coder keeps an interval of 32-bit integers $[\text{low}, \text{high}]$ (both ends included),
    first the whole $[0, 2^{32})$. Coding symbol $v$, whose counts are $[\text{cdf}_v, \text{cdf}_{v+1})$
    of $T = 2^{16}$, keeps $v$'s share:

    $$
    \text{span} = \text{high} - \text{low} + 1,\qquad
    \text{high} \leftarrow \text{low} + \lfloor \text{span}\cdot\text{cdf}_{v+1} / T\rfloor - 1,\qquad
    \text{low} \leftarrow \text{low} + \lfloor \text{span}\cdot\text{cdf}_{v} / T\rfloor .
    $$

    **Renormalisation.** When the interval lies in the lower (upper) half of $[0, 2^{32})$, every number
    in it starts with bit 0 (1): write that bit and double the interval. When it straddles the middle but
    sits inside the middle half, double it around the middle and remember one **pending** bit: it will be
    the opposite of the next bit written (Witten, Neal & Cleary, 1987). So the interval stays wider than
    $2^{30}$ and a symbol with one count out of $2^{16}$ still gets a share of at least $2^{14}$.
    **Termination**: two more bits (and the pending ones) name a number inside the final interval.

    **The decoder** keeps the same interval and reads 32 bits of the string as a number `value`; the
    symbol is the one whose share holds `value`. Then it updates the interval exactly like the encoder,
    so it must see exactly the encoder's counts.

    The package's version: `progvc_lab/course/arithmetic.py` (about 80 lines of plain Python).
    """),
    SETUP,
    md(r"""
    ## Warm-up exercise: narrow the interval

    Write the update above: integers only (`//`), both ends inclusive. The check runs single steps and
    then whole blocks through the coder with your function, comparing the bytes.
    """),
    code("""
    from progvc_lab.course import check_interval_update, show_answer, show_solution

    # EXERCISE (warm-up): return (new_low, new_high) for counts [cdf_lo, cdf_hi) of `total`.
    def interval_update(low, high, cdf_lo, cdf_hi, total):
        # your code here (3 lines)
        raise NotImplementedError

    check_interval_update(interval_update)
    """, exercise=True),
    stuck("interval_update"),
    md("Three symbols by hand, with four symbols of counts 8, 4, 2, 2 (of 16): watch the interval shrink and the bits fall out"),
    code("""
    from progvc_lab.course import arithmetic as A

    cdf_row = [0, 8, 12, 14, 16]
    low, high = 0, A.FULL - 1
    for v in [0, 2, 1]:
        low, high = A.interval_update(low, high, cdf_row[v], cdf_row[v + 1], 16)
        print(f"symbol {v} (p = {(cdf_row[v + 1] - cdf_row[v]) / 16:.3f}): low {low:032b}\\n"
              f"{'':22}high {high:032b}  share {(high - low + 1) / A.FULL:.5f}")
    print("the leading bits low and high share are already decided: the encoder writes them and doubles the interval")
    """),
    md(r"""
    ## Core exercise: find the symbol

    Given `value` in $[\text{low}, \text{high}]$, return the symbol whose share holds it. The share of
    $v$ starts at $\text{low} + \lfloor \text{span}\cdot\text{cdf}_v/T\rfloor$, so compute the largest
    count $c$ with $\text{low} + \lfloor \text{span}\cdot c/T\rfloor \le \text{value}$,
    $$c = \left\lfloor \frac{(\text{value} - \text{low} + 1)\,T - 1}{\text{span}} \right\rfloor,$$
    then the largest $v$ with $\text{cdf}_v \le c$ (symbols with no counts are never the answer). The
    check decodes torchac's bytes with your function.
    """),
    code("""
    from progvc_lab.course import check_decode_symbol

    # EXERCISE (core): the symbol v with cdf_row[v] <= target < cdf_row[v + 1].
    def decode_symbol(value, low, high, cdf_row, total):
        # your code here (about 5 lines)
        raise NotImplementedError

    check_decode_symbol(decode_symbol)
    """, exercise=True),
    stuck("decode_symbol"),
    md(r"""
    ## Our coder on the codec's real stream

    The encoder can use any coder registered in `stages.entropy.CODERS` (the header stores its name).
    Encode the 8 frames with ours and compare every chunk with the torchac stream; then decode the
    torchac stream with ours, through the decoder loop written out in `arithmetic.decode_tokens`
    (`codec.walk`, its `blocks`, each block's `cdf`, the chunk CRCs, as `Codec.decode` does).
    """),
    code("""
    from progvc_lab import bitstream

    ours = A.register()                             # coder="course_ac" now works in this kernel
    data_torchac = codec.encode(video, fps, coder="torchac")     # one torchac string per block
    data_ours = codec.encode(video, fps, coder="course_ac")      # one string of OUR coder per block
    same = bitstream.read_stream(data_ours).chunks == bitstream.read_stream(data_torchac).chunks
    print(f"torchac stream {len(data_torchac)} bytes, ours {len(data_ours)} bytes "
          f"(the header spells out the coder's name); every chunk identical: {same}")
    print("and the package's decoder decodes ours:", torch.equal(codec.decode(data_ours), codec.decode(data_torchac)))
    tokens_ours = A.decode_tokens(codec, data_torchac, ours)
    tokens_ref, _ = codec.decode_tokens(data_torchac)
    print("torchac's stream decoded by our coder gives the package's tokens:",
          all(torch.equal(a, b) for a, b in zip(tokens_ours, tokens_ref)))
    """),
    md(r"""
    ## The bound, measured

    For $L$ symbols with model bits $B = \sum_i -\log_2(\text{freq}_i / T)$ the coder writes at most
    $B + 2 + L\cdot 2^{-13}$ bits, then pads to whole bytes (+2: the termination; $L\cdot 2^{-13}$: each
    integer division loses at most a factor $1 - 2^{-14}$ of a span larger than $2^{30}$). On random
    peaked distributions at V = 512, the bits beyond the model bits per call:
    """),
    code("""
    from progvc_lab.stages.entropy import get_coder

    rows = A.coder_overhead({"ours": ours, "torchac": get_coder("torchac")}, vocab=codec.quantizer.codebook_size)
    print(f"{'symbols':>7} {'model bits':>10} {'ours':>6} {'torchac':>8} {'bound':>6}   (overhead bits per call)")
    for r in rows:
        print(f"{r['symbols']:>7} {r['model_bits']:>10.1f} {r['ours']:>6.2f} {r['torchac']:>8.2f} {r['bound']:>6.2f}")
    """),
    md(r"""
    The overhead is paid **per call**, and the codec makes one call per block. A streaming coder keeps
    one interval open over all blocks of a chunk (one scale of a GOP) and terminates once: possible
    because the decoder computes each block's CDFs before it needs the next block's bits. The stream's
    own blocks, re-coded both ways (strings only):
    """),
    code("""
    import numpy as np

    cost = A.streaming_bytes_per_scale(codec, data_torchac)
    print(f"{'scale':>5} {'one string per block':>21} {'one per chunk':>14}")
    for s, (b, c) in enumerate(zip(cost["per_block"], cost["per_chunk"])):
        print(f"{s:>5} {b:>21} {c:>14}")
    saved = sum(cost["per_block"]) - sum(cost["per_chunk"])
    coarse = sum(cost["per_block"][:3]) - sum(cost["per_chunk"][:3])
    print(f"saved {saved} bytes of {len(data_torchac)} ({100 * saved / len(data_torchac):.1f}% of the file); on "
          f"scales 0-2 {coarse} of their {sum(cost['per_block'][:3])} bytes")
    print(f"the package's default coder (constriction, one range coder per chunk, no length fields): "
          f"{len(session.data)} bytes for the same frames")
    """),
    md(r"""
    ## Break it: one count changed at the decoder

    Code 200 symbols, then decode them with CDFs in which **one count** of row 50 moved to a
    neighbouring symbol (the CDF is still perfectly valid). Up to row 50 the decoder agrees; after it, the
    intervals part ways and the symbols are garbage, without any error:
    """),
    code("""
    from progvc_lab.stages.entropy import logits_to_cdf

    gen = torch.Generator().manual_seed(3)
    logits = torch.randn(200, codec.quantizer.codebook_size, generator=gen) * 3
    cdf = logits_to_cdf(logits)
    symbols = torch.multinomial(torch.softmax(logits.double(), -1), 1, generator=gen).squeeze(1)
    string = ours.encode(cdf, symbols)
    decoded = ours.decode(A.move_one_count(cdf, 50, symbol=int(symbols[50])), string)
    wrong = (decoded != symbols).numpy()
    print(f"{len(string)} bytes; first wrong symbol at position {int(np.argmax(wrong))}; {int(wrong.sum())} of "
          f"{len(wrong)} wrong; the decoder raised nothing")

    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 1.2))
    ax.imshow(wrong[None], aspect="auto", cmap="Reds", interpolation="nearest")
    ax.set_yticks([]); ax.set_xlabel("symbol position (red: decoded wrong)"); ax.axvline(50, color="k", lw=0.8)
    plt.close(fig)
    fig
    """),
    md(r"""
    In the codec the same mistake would come from a decoder whose floats differ in one place (notebook 04).
    The tokens it decodes become the context of every later block, so the damage spreads, and the only
    thing that notices is the CRC of each chunk's tokens, written by the encoder. Tamper with one block
    of the decoder at a time:
    """),
    code("""
    K, n = codec.quantizer.num_scales, min(codec.config.gop, video.shape[0])
    for t, s in [(1, 1), (0, 3), (0, K - 1), (5, K - 1)]:
        call = s * n + t                                 # the walk is scale-major: all frames of scale 0 first
        with ours.tampered(call=call, row=0):
            try:
                A.decode_tokens(codec, data_torchac, ours)
                print(f"block (t={t}, s={s}): one count moved, decoded correctly anyway")
            except bitstream.BitstreamError as e:
                print(f"block (t={t}, s={s}): BitstreamError: {e}")
    """),
    md(r"""
    ## Stretch: questions to answer in your own words

    Write your answer in a markdown cell, then compare with the model answer:

    1. Why does a coder you wrote from the formula above write *exactly* torchac's bytes? (`show_answer("q10_same_bytes")`)
    2. Some blocks decoded correctly despite the changed count. Why, and why is that no comfort? (`show_answer("q10_no_error")`)
    3. When is one termination per chunk possible, and what would it save here? (`show_answer("q10_streaming")`)
    """),
    code("""
    # show_answer("q10_same_bytes")
    """),
    md(r"""
    **Takeaways.**
    - Arithmetic coding is integer bookkeeping on an interval: equal counts in, equal bytes out. Our
      80 lines and torchac agree to the byte.
    - Its cost above the model bits is at most about 2 bits plus byte padding *per call*: negligible for a
      396-token block, several times the bits of a 1×1 block. One string per chunk removes most of it.
    - A decoder that is off by one count produces garbage silently. Determinism (the same floats on both
      sides) prevents it; the per-chunk CRC detects it.
    """),
]

# -----------------------------------------------------------------------------------------------------
NB["11_unsafe_masks"] = [
    md(r"""
    # 11 · Unsafe masks, shown and designed

    Notebook 03 stated the rule: a stream cut after k scales decodes only if **no block at a scale
    s < k attends to a block at a scale ≥ k** ("truncation safe"). Here you watch what happens when the
    rule is broken, write the test yourself, design a safe mask of your own and train a context model
    with it.

    The codec refuses unsafe masks (`Codec(...)` raises), so the experiment codes with the context
    model directly (`progvc_lab.course.unsafe`): one GOP in **frame-major** order (frame 0 scales
    0..K−1, then frame 1, ...), the order VAR's block-causal mask was made for. The encoder sees
    every block and sends the scales < k. The decoder of the cut stream decodes those; for a block it
    was not sent it runs the model and takes the most likely token, so that later blocks have something
    to attend to.
    """),
    SETUP,
    code("""
    from progvc_lab.course import unsafe
    from progvc_lab.metrics import psnr

    clip = video[:4]                                   # 4 frames: one GOP, frame-major
    k = 3
    runs = {m: unsafe.frame_major_cut(codec, clip, mask=m, k=k) for m in ("progvc_sparse", "var", "infinitystar")}
    print(f"cut after k = {k} scales; share of the sent tokens decoded right, per frame:")
    for m, r in runs.items():
        first = "none" if r["first_wrong"] is None else f"(t={r['first_wrong'][0]}, s={r['first_wrong'][1]})"
        print(f"{m:>14}: {[f'{a:.0%}' for a in r['agree_T'].tolist()]}  first wrong block {first}; "
              f"{len(r['violations'])} unsafe block pairs in the mask")
    """),
    md(r"""
    Under `progvc_sparse` the cut decode is exact. Under `var` frame 0 is still right (its blocks read
    only coarser scales of frame 0), but block (t=1, s=0) attends to the finest scales of frame 0, which
    the cut removed: the decoder's guess of them is not what the encoder saw, its logits and integer
    CDFs differ, and the arithmetic decoder goes off the rails (notebook 10). What the viewer gets:
    """),
    code("""
    from progvc_lab.viz import plot_sampler_comparison

    meant, got = unsafe.decoded_frames(codec, runs["var"], video.shape[-2:])
    safe_meant, safe_got = unsafe.decoded_frames(codec, runs["progvc_sparse"], video.shape[-2:])
    for t in range(clip.shape[0]):
        print(f"frame {t}: var, meant {psnr(meant[t:t + 1], clip[t:t + 1]):5.2f} dB, decoded "
              f"{psnr(got[t:t + 1], clip[t:t + 1]):5.2f} dB | progvc_sparse decoded {psnr(safe_got[t:t + 1], clip[t:t + 1]):5.2f} dB")
    plot_sampler_comparison({"var: what the encoder sent": meant[2], "var: what the cut decoder got": got[2],
                             "progvc_sparse: decoded": safe_got[2]}, original=clip[2])
    """),
    md(r"""
    ## Warm-up exercise: the safety test

    `allowed[q, key]` is True when block q may read block key; blocks are numbered frame-major,
    id = t·K + s. Return True iff no allowed key sits at a finer scale than its query.
    """),
    code("""
    from progvc_lab.course import check_is_truncation_safe, show_answer, show_solution

    # EXERCISE (warm-up): one bool for the whole mask.
    def is_truncation_safe(allowed_BB, num_scales):
        # your code here (3 lines: the scale of every block, the offending pairs, any)
        raise NotImplementedError

    check_is_truncation_safe(is_truncation_safe)
    """, exercise=True),
    stuck("is_truncation_safe"),
    md(r"""
    ### Explore: the mask explorer marks the edges that break a cut

    Red cells are allowed pairs whose key is at a finer scale than the query; the summary counts them.
    Flip between `var`, `infinitystar` and `progvc_sparse` (and, after the next exercise, your own mask).
    """),
    code("""
    from progvc_lab.viz import mask_explorer, plot_mask

    plot_mask("var", 3, 3)
    """),
    md(r"""
    ## Core exercise: design a safe mask with temporal context

    Write `my_mask(num_frames, num_scales, window)`: a bool (T·K, T·K) mask that is truncation safe,
    decodable scale-major (no block reads a later frame), lets every block see itself, and gives every
    block of frames t ≥ 1 some earlier frame to read. `progvc_sparse` is one answer; make another (for
    example: also the next *coarser* scale of the previous frames). The check says which rule a block
    breaks.
    """),
    code("""
    import torch

    from progvc_lab.course import check_safe_mask_design

    # EXERCISE (core): your own truncation-safe mask.
    def my_mask(num_frames, num_scales, window=1):
        # your code here: t and s of every block (t = id // K, s = id % K), then the rule as a bool matrix
        raise NotImplementedError

    check_safe_mask_design(my_mask)
    """, exercise=True),
    stuck("safe_mask_design"),
    code("""
    from progvc_lab.course import check_safe_mask_design, solutions
    from progvc_lab.stages import masks

    design_ok = bool(check_safe_mask_design(my_mask))
    mine = my_mask if design_ok else solutions.safe_mask_design   # the notebook goes on with a working mask
    masks.register_mask("my_mask")(mine)             # now every part of the package knows it by name
    print("using", "your mask" if design_ok else "the reference design (yours is not done yet)")
    plot_mask("my_mask", 3, 3)
    """),
    code("""
    mask_explorer()
    """),
    md(r"""
    ## Stretch: train it briefly and code with it

    `course.training.train_context_model` is a plain PyTorch loop (the objective of `progvc-lab train
    stage2`): a small context model (width 64, 2 layers) trained from scratch for a few dozen steps
    on frames 8–29 of Foreman, validated on frames 0–5, once with `progvc_sparse` and once with your
    mask. Same data, same steps, same seed; the loss is in bits per token.
    """),
    code("""
    from progvc_lab.course.training import train_context_model

    long_video, _ = sample_video(frames=30)
    STEPS = 40
    trained, logs = {}, {}
    for name in ("progvc_sparse", "my_mask"):
        trained[name], logs[name] = train_context_model(codec, [long_video[8:]], mask=name, steps=STEPS,
                                                        val_videos=[long_video[:6]], log_every=20)
        last = logs[name][-1]
        print(f"{name:>14}: train {logs[name][0]['train_bits']:.2f} -> {last['train_bits']:.2f} bits/token, "
              f"validation {last['val_bits']:.2f} ({last['seconds']:.0f} s)")
    """),
    md("A trained model with a safe mask is a codec: encode the 8 test frames, cut after k = 3, decode."),
    code("""
    from progvc_lab import bitstream
    from progvc_lab.codec import Codec

    for name, cm in trained.items():
        c = Codec(codec.tokenizer, codec.quantizer, cm, gop=8)
        data = c.encode(video, fps)
        cut = bitstream.truncate(data, 3)
        print(f"{name:>14}: {len(data)} bytes, cut after 3 scales {len(cut)} bytes, decodes to "
              f"{psnr(c.decode(cut), video):.2f} dB (the shipped model: {len(session.data)} bytes)")
    """),
    md(r"""
    **Questions** (write your answer first):
    1. Why does the `var` decode go wrong from frame 1 on, and never in frame 0? (`show_answer("q11_why_var_breaks")`)
    2. What context does safety forbid, and what does that cost? (`show_answer("q11_what_safe_costs")`)

    **Takeaways.**
    - Truncation safety is a property of the mask alone: no key finer than its query. Break it and the
      cut stream decodes garbage, silently, from the first block that read what was cut.
    - A safe mask can still use temporal context: the same (or a coarser) scale of earlier frames.
    - Forty steps on a CPU say little about which safe mask is *better*; they show the mechanics:
      any safe mask registered by name trains, codes, truncates and decodes with the same code.
    """),
]

# -----------------------------------------------------------------------------------------------------
NB["12_build_a_stage"] = [
    md(r"""
    # 12 · Build a stage: the quantizer's loops and a detail sampler of your own, inside the codec

    So far you wrote helpers and the package ran every stage. Here you write the two loops of the
    multi-scale residual quantizer (notebook 02) and the `mean` detail sampler's fill (notebook 06), plug
    them into a `Codec` through the stage interface, and the check is strict: **the same tokens and the
    same bytes** as the package, and the package's stream decodes with your stage.

    `progvc_lab.course.build_stage.StudentQuantizer(codec.quantizer, tokenize=..., tokens_to_latent=...,
    expected_code=...)` is the shipped quantizer (same codebook, same phi convolutions, same
    fingerprint) with your functions in place of its own. Each gets the quantizer `q` as first argument,
    so you can use its pieces: `q.schedule(latent_hw)`, `q.nearest_code(r)`,
    `q.scale_contribution(idx, s, latent_hw)` (= φ_s(up(codebook[idx]))), and
    `progvc_lab.stages.quantizer.area_down(x, size)`.
    """),
    SETUP,
    md(r"""
    ## Warm-up exercise: the expected code

    The `mean` fill replaces each unsent token by the code vector it is expected to be,
    $E[e] = \sum_v p(v)\, e_v$, per position. Given the probabilities (L, V) of a block (positions
    row-major) and the codebook (V, C), return the expected codes as a map (C, h_s, w_s).
    """),
    code("""
    from progvc_lab.course import check_expected_code, show_answer, show_solution

    # EXERCISE (warm-up): (L, V) probabilities, (V, C) codebook, size (h_s, w_s) -> (C, h_s, w_s).
    def expected_code(probs_LV, codebook_VC, size):
        # your code here (2 lines)
        raise NotImplementedError

    check_expected_code(expected_code)
    """, exercise=True),
    stuck("expected_code"),
    md(r"""
    ## Core exercise 1: the encoder's residual loop

    $$
    f_\text{rest} = f;\quad \text{for } s = 0..K-1:\quad
    \text{idx}_s = \text{nearest\_code}\big(\text{area\_down}(f_\text{rest}, h_s\times w_s)\big),\quad
    f_\text{rest} \leftarrow f_\text{rest} - \varphi_s(\text{up}(e_{\text{idx}_s}))
    $$

    Return the list of K token maps (N, h_s, w_s), coarse to fine.
    """),
    code("""
    from progvc_lab.course import check_residual_tokenize
    from progvc_lab.stages.quantizer import area_down

    # EXERCISE (core): latent f (N, C, h, w) -> [tokens of scale 0, ..., scale K-1].
    def residual_tokenize(q, f_NChw):
        # your code here (about 7 lines)
        raise NotImplementedError

    check_residual_tokenize(residual_tokenize)
    """, exercise=True),
    stuck("residual_tokenize"),
    md(r"""
    ## Core exercise 2: the decoder's reconstruction

    $\hat f_k = \sum_{s<k} \varphi_s(\text{up}(e_{\text{idx}_s}))$, starting from zeros, scales in order.
    The check wants it **bit-identical** (`torch.equal`), not merely close: encoder and decoder both build
    every context-model input from it, so a last-bit difference is a different integer CDF sooner or
    later (notebooks 04 and 10).
    """),
    code("""
    import torch

    from progvc_lab.course import check_residual_tokens_to_latent

    # EXERCISE (core): tokens per scale, latent size (h, w), upto = k -> f_hat (N, C, h, w).
    def residual_tokens_to_latent(q, tokens, latent_hw, upto):
        # your code here (4 lines)
        raise NotImplementedError

    check_residual_tokens_to_latent(residual_tokens_to_latent)
    """, exercise=True),
    stuck("residual_tokens_to_latent"),
    md(r"""
    ## Plug it in

    A codec whose quantizer runs your two loops, against the package's, on the 8 frames (RDO off,
    `rdo_lambda=0`, so the encoder sends the nearest codes your `tokenize` computes): tokens, stream
    bytes, the decode of the package's stream and its frames must all be identical. (Until your
    exercises pass, this cell checks the reference solutions, so the rest of the notebook runs.)
    """),
    code("""
    from progvc_lab.course import check_stage_in_codec, solutions
    from progvc_lab.course.exercises import CHECKS

    import io, contextlib
    with contextlib.redirect_stdout(io.StringIO()):      # quietly: did the exercises pass?
        solved = bool(CHECKS["residual_tokenize"](residual_tokenize)) and \\
            bool(CHECKS["residual_tokens_to_latent"](residual_tokens_to_latent))
    tok_fn = residual_tokenize if solved else solutions.residual_tokenize
    lat_fn = residual_tokens_to_latent if solved else solutions.residual_tokens_to_latent
    print("checking", "your functions" if solved else "the reference solutions")
    check_stage_in_codec(codec, video, fps, tok_fn, lat_fn)
    """),
    md(r"""
    ## Your sampler against zero-fill, measured

    With your `expected_code` plugged in, `decode(..., sampler="mean")` fills the unsent scales with
    $\varphi_s(\text{up}(E[e]))$ in latent space. Is that better than adding nothing?
    """),
    code("""
    from progvc_lab.codec import Codec
    from progvc_lab.course.build_stage import StudentQuantizer, fill_quality

    with contextlib.redirect_stdout(io.StringIO()):
        mine_ok = bool(CHECKS["expected_code"](expected_code))
    q = StudentQuantizer(codec.quantizer, expected_code=expected_code if mine_ok else solutions.expected_code)
    student_codec = Codec(codec.tokenizer, q, codec.context_model)
    rows = fill_quality(student_codec, video, fps, ks=(2, 3, 4))
    print(f"{'k':>2} {'bytes':>6} {'zero PSNR':>10} {'mean PSNR':>10} {'zero MS-SSIM':>13} {'mean MS-SSIM':>13}")
    for k in (2, 3, 4):
        z, m = [next(r for r in rows if r["k"] == k and r["sampler"] == n) for n in ("zero", "mean")]
        print(f"{k:>2} {z['bytes']:>6} {z['psnr']:>10.2f} {m['psnr']:>10.2f} {z['ms_ssim']:>13.4f} {m['ms_ssim']:>13.4f}")
    """),
    md(r"""
    On the shipped tiny model the expected code does **not** beat zero-fill (chapter 06 found the same on
    more clips): a measured negative result, and the question below asks why.

    **Stretch: questions** (write your answer first):
    1. Why must `tokens_to_latent` be bit-identical and not just close? (`show_answer("q12_bit_identical")`)
    2. The expected code is the minimum-MSE guess *in latent space*; why can it lose to zero in pixels?
       (`show_answer("q12_mean_vs_zero")`)

    **Takeaways.**
    - A stage is a small interface (`tokenize`, `tokens_to_latent`, `expected_code`, ...); replace one and
      the codec, the bitstream and the samplers keep working, if the replacement is exact.
    - "Exact" means bit-identical wherever the entropy coder depends on it: the order of a sum matters.
    - The encoder's own token choice (`Codec._TokenChooser`, with RDO) runs the same residual loop; your
      `tokenize` is what it sends with `rdo_lambda = 0`.
    """),
]

# -----------------------------------------------------------------------------------------------------
NB["13_train_from_scratch"] = [
    md(r"""
    # 13 · Train a tiny codec from scratch, in the notebook

    Every earlier notebook used the shipped tiny model. Here you train one yourself, both stages, in
    a couple of minutes on a CPU, with the curves drawn while it learns:

    1. **Stage 1**: tokenizer + multi-scale quantizer, trained to reconstruct random 64×64 crops (MSE +
       the quantizer's commitment loss, scale dropout so that cut pyramids still decode, dead codes
       restarted). Curve: PSNR, and how many codes are in use (perplexity).
    2. **Stage 2**: the context model on the frozen stage-1 tokens (cross-entropy). Curve: bits per token,
       training and validation.

    `progvc_lab.course.training` has both loops in plain PyTorch (the objectives of `progvc-lab train
    stage1/stage2`, without Lightning). The models are far smaller than the shipped one (V = 64 codes,
    K = 4 scales, a 2-layer context model) and train on frames 8–29 of Foreman; frames 0–7 are the test.
    """),
    code("""
    import warnings

    import torch

    from progvc_lab.course import sample_video
    from progvc_lab.course.training import LivePlot, train_context_model, train_stage1

    torch.manual_seed(0)
    warnings.filterwarnings("ignore", category=UserWarning)
    long_video, fps = sample_video(frames=30)
    train_frames, test_video = long_video[8:], long_video[:8]
    print(f"training frames {tuple(train_frames.shape)}, test frames {tuple(test_video.shape)}")
    """),
    md(r"""
    ## Warm-up exercise: how many codes are in use?

    A codebook of V codes can collapse: the encoder keeps choosing a few. The **perplexity** of the
    usage counts, $\exp(-\sum_v p_v \ln p_v)$, is the number of codes "effectively" in use (1 if one
    code takes everything, V if all are used equally).
    """),
    code("""
    from progvc_lab.course import check_codebook_perplexity, show_answer, show_solution

    # EXERCISE (warm-up): usage counts (V,) -> perplexity (a float).
    def codebook_perplexity(counts_V):
        # your code here (3 lines; skip the codes that were never used)
        raise NotImplementedError

    check_codebook_perplexity(codebook_perplexity)
    """, exercise=True),
    stuck("codebook_perplexity"),
    md("## Stage 1, live: PSNR of the reconstructions and codes in use"),
    code("""
    STEPS_1 = 250
    plot1 = LivePlot({"stage 1: PSNR-RGB (dB)": ["train_psnr", "test_psnr_all_scales", "test_psnr_k2"],
                      "codes in use (perplexity of 64)": ["perplexity"]})

    def show1(entry):
        entry["test_psnr_all_scales"], entry["test_psnr_k2"] = entry["val_psnr"][-1], entry["val_psnr"][1]
        plot1(entry)

    tokenizer, quantizer, log1 = train_stage1([train_frames], steps=STEPS_1, val_video=test_video[:4],
                                              log_every=25, on_log=show1)
    print(f"stage 1: {STEPS_1} steps in {log1[-1]['seconds']:.0f} s; test PSNR with k = 1..4 scales: "
          f"{[round(p, 1) for p in log1[-1]['val_psnr']]} dB")
    """),
    md(r"""
    ## Core exercise: bits per token

    The context model's loss is the cross-entropy of the true tokens under its logits. In **bits per
    token** it is directly what the arithmetic coder will spend (notebooks 04 and 10). Logits
    (B, L, V), targets (B, L) → the mean over all tokens of $-\log_2 \operatorname{softmax}(\ell)_{\text{target}}$.
    """),
    code("""
    from progvc_lab.course import check_bits_per_token

    # EXERCISE (core): mean -log2 p(target) over all tokens.
    def bits_per_token(logits_BLV, targets_BL):
        # your code here (3 lines: log_softmax, gather, mean; then nats -> bits)
        raise NotImplementedError

    check_bits_per_token(bits_per_token)
    """, exercise=True),
    stuck("bits_per_token"),
    md("## Stage 2, live: bits per token of the context model (the tokenizer and quantizer frozen)"),
    code("""
    from progvc_lab.codec import Codec
    from progvc_lab.stages import ContextModel

    stage1_only = Codec(tokenizer, quantizer, ContextModel(codebook_size=quantizer.codebook_size,
                                                           latent_dim=quantizer.latent_dim,
                                                           num_scales=quantizer.num_scales))   # to tokenize
    STEPS_2 = 100
    plot2 = LivePlot({"stage 2: bits per token": ["train_bits", "val_bits"]})
    context_model, log2 = train_context_model(stage1_only, [train_frames], steps=STEPS_2, val_videos=[test_video[:3]],
                                              log_every=25, on_log=plot2)
    print(f"stage 2: {STEPS_2} steps in {log2[-1]['seconds']:.0f} s; test bits per token per scale: "
          f"{[round(b, 2) for b in log2[-1]['val_bits_per_scale']]} (uniform: {torch.log2(torch.tensor(64.)):.0f})")
    """),
    md("## Your codec: encode the 8 test frames once, cut after every k, decode"),
    code("""
    from progvc_lab import bitstream
    from progvc_lab.metrics import bpp, psnr
    from progvc_lab.viz import load_demo_codec, plot_rd_curve

    mine = Codec(tokenizer, quantizer, context_model, gop=8)
    shipped = load_demo_codec()
    T, H, W = test_video.shape[0], test_video.shape[-2], test_video.shape[-1]
    curves = {}
    for name, c in (("trained here", mine), ("shipped tiny", shipped)):
        data = c.encode(test_video, fps)
        curves[name] = []
        for k in range(1, c.quantizer.num_scales + 1):
            cut = bitstream.truncate(data, k)
            curves[name].append({"k": k, "bytes": len(cut), "bpp": bpp(len(cut), T, H, W),
                                 "psnr": psnr(c.decode(cut), test_video)})
        print(name + ": " + ", ".join(f"k={p['k']} {p['bytes']} B {p['psnr']:.1f} dB" for p in curves[name]))
    plot_rd_curve(curves, title="the codec trained here vs the shipped tiny model")   # {label: points}: one line each
    """),
    md(r"""
    **Stretch: questions** (write your answer first):
    1. Stage 2 never changes the pictures. What does it change, and why can it be trained separately?
       (`show_answer("q13_two_stages")`)
    2. Your training loss fell steadily; why is the test curve the one to believe?
       (`show_answer("q13_train_vs_test")`)

    **Takeaways.**
    - Stage 1 decides the pictures (PSNR per k); stage 2 decides the bytes (bits per token). A stream is
      only as good as both.
    - A few hundred steps on a CPU make a codec that works end to end (encode, cut, decode). Compare the
      two curves with care: this one was trained on the same scene (frames 8–29 of Foreman) as the test
      frames, the shipped one on other clips, so any advantage here is in-domain, not a better model.
      Test on another clip (`sample_video(name="akiyo")`) to see the difference; the shipped model trained
      for thousands of steps on more data: quality is compute and data, the mechanics are the same.
    """),
]

# -----------------------------------------------------------------------------------------------------
NB["14_against_classical_codecs"] = [
    md(r"""
    # 14 · Against classical codecs, frame by frame

    Notebook 08 compared RD curves. Here the comparison is at **the same bytes**: for every cut k of one
    encode, x264 and x265 (`veryslow`, `-tune psnr`, SEI removed: `progvc_lab.baselines`) at the CRF
    whose file is closest in size (`rdeval.matched_baseline`), every decode scored by the same
    `rdeval.score`: PSNR-Y, MS-SSIM and ST-LPIPS (shift-tolerant LPIPS, lower is better; chapter 08).
    Then the frames side by side, and a BD-rate computed with your own function.
    """),
    SETUP,
    code("""
    from progvc_lab import baselines, perceptual
    from progvc_lab.course import classical

    have = [b for b in ("x264", "x265") if baselines.available(b)[0]]
    use_perceptual = perceptual.st_lpips_available()[0]
    print("baselines:", have or "none (install ffmpeg)", "| ST-LPIPS:", "yes" if use_perceptual else "no")
    rows, frames = classical.same_bytes_ladder(codec, video, fps, ks=(3, 5, 6), baselines=have,
                                               perceptual=use_perceptual)
    print(classical.format_rows(rows))
    """),
    md(r"""
    At k = 3 the baselines cannot get as small as our cut: CRF 51 is their lowest rate, so the row shows
    what they spend there. Where they can match the bytes, compare the columns. The same frames side by
    side, at the full stream's bytes:
    """),
    code("""
    K = codec.quantizer.num_scales
    classical.plot_frames_grid(video, frames[K], picks=(0, 4, 7))
    """),
    code("""
    classical.plot_frames_grid(video, frames[5], picks=(4,))
    """),
    md(r"""
    ## Exercise: Bjøntegaard's BD-rate, yourself

    The average rate difference at equal quality (notebook 08's exercise did it at one PSNR). The classic
    recipe: for each curve fit $\log R$ as a cubic polynomial in PSNR (`np.polyfit`), integrate both
    (`np.polyint`) over the PSNR range **both** curves cover, and turn the mean difference into percent,
    $\big(e^{\overline{\Delta \log R}} - 1\big)\cdot 100$ (negative: the test codec saves rate). The
    check compares with `metrics.bd_rate(..., piecewise=False)`.
    """),
    code("""
    import numpy as np

    from progvc_lab.course import check_bd_rate_cubic, show_answer, show_solution

    # EXERCISE (core): BD-rate in percent of the test curve against the anchor.
    def bd_rate_cubic(anchor_rates, anchor_psnr, test_rates, test_psnr):
        # your code here (about 8 lines)
        raise NotImplementedError

    check_bd_rate_cubic(bd_rate_cubic)
    """, exercise=True),
    stuck("bd_rate_cubic"),
    md(r"""
    Yours against the package's on real curves: x264 against x265 over a CRF ladder on these frames
    (ours and the baselines rarely share a PSNR range at all, which `bd_rate_report` says instead of
    extrapolating). The package's default integrates a monotone PCHIP interpolant rather than a cubic,
    so the two differ a little:
    """),
    code("""
    from progvc_lab.course import solutions
    from progvc_lab.course.exercises import CHECKS
    from progvc_lab.metrics import bd_rate_report, psnr_yuv

    import contextlib, io
    with contextlib.redirect_stdout(io.StringIO()):
        mine_fn = bd_rate_cubic if CHECKS["bd_rate_cubic"](bd_rate_cubic) else solutions.bd_rate_cubic
    if len(have) == 2:
        curves = {}
        for b in have:
            pts = [baselines.encode_decode(video, b, crf) for crf in (45, 40, 35, 30)]
            curves[b] = ([p.bpp for p in pts], [psnr_yuv(video, p.decoded)["y"] for p in pts])
        yours = mine_fn(*curves["x264"], *curves["x265"])
        report = bd_rate_report(*curves["x264"], *curves["x265"])
        print(f"x265 vs x264, PSNR-Y: your cubic BD-rate {yours:+.2f}%, the package's PCHIP {report['bd_rate']:+.2f}% "
              f"({report['note'] or 'full overlap'})")
        ours = [r for r in rows if r["codec"] == "ours"]
        vs = bd_rate_report(*curves["x265"], [r["bpp"] for r in ours], [r["psnr-y"] for r in ours])
        print(f"ours vs x265: {vs['bd_rate']} ({vs['note']})")
    """),
    md(r"""
    **Stretch: question.** What do the baselines do better at the same bytes, and what can they not do
    at all? (`show_answer("q14_same_bytes")`)

    **Takeaways.**
    - At equal bytes, frame by frame, x264 and x265 are far ahead of the tiny model on every metric
      where they can match the bytes; below CRF 51's size they cannot match them.
    - BD-rate is only defined where the curves share a quality range; the package says "no overlap"
      rather than extrapolate, and uses PCHIP (monotone) instead of a cubic that can wiggle.
    """),
]

# -----------------------------------------------------------------------------------------------------
NB["15_capstone"] = [
    md(r"""
    # 15 · Capstone: your variant, its RD curve, its BD-rate, checked from your files

    Add a variant (a mask, a window, a wider or narrower context model, a quantizer of your own from
    notebook 12, ...), train it, and hand in a **submission folder** that anyone can check:

    ```
    submission.json   {"name", "clip", "frames", "variant", "rd": [{"k", "bytes", "psnr"}], "bd_rate_vs_shipped"}
    model.pt          your codec (Codec.save)
    stream.pgvc       your encode of the clip (default encoder options)
    variant.py        optional: code that registers what model.pt needs (e.g. your mask)
    ```

    `progvc_lab.course.capstone.check_submission(folder)` (or `python -m progvc_lab.course.capstone
    DIR`) re-encodes the clip with your model and demands exactly your stream, verifies the round trip,
    recomputes every RD point from the truncated stream and the BD-rate against the shipped tiny model
    (`metrics.bd_rate_report`). Numbers that your files do not reproduce fail. Below, a complete run with
    a mask variant; replace it with yours.
    """),
    SETUP,
    md("## Exercise: your variant (here: a mask; the check is notebook 11's)"),
    code("""
    from progvc_lab.course import check_safe_mask_design, show_solution, solutions

    # EXERCISE (core): the mask of your variant (truncation safe, decodable, with temporal context).
    def capstone_mask(num_frames, num_scales, window=1):
        # your code here
        raise NotImplementedError

    check_safe_mask_design(capstone_mask)
    """, exercise=True),
    stuck("safe_mask_design"),
    md("## Train it (briefly), write the submission, check it"),
    code("""
    import contextlib, io, tempfile
    from pathlib import Path

    from progvc_lab.codec import Codec
    from progvc_lab.course import capstone
    from progvc_lab.course.exercises import CHECKS
    from progvc_lab.course.training import train_context_model
    from progvc_lab.stages import masks

    with contextlib.redirect_stdout(io.StringIO()):
        mine = bool(CHECKS["safe_mask_design"](capstone_mask))
    # a submission ships the code its model needs; until your mask passes, the reference design stands in
    VARIANT = ("from progvc_lab.stages import masks\\n"
               "from progvc_lab.course import solutions\\n"
               "masks.register_mask('capstone_mask')(solutions.safe_mask_design)\\n")
    if mine:
        masks.register_mask("capstone_mask")(capstone_mask)   # then put your function's source in variant.py
    else:
        exec(VARIANT)
    long_video, _ = sample_video(frames=30)
    cm, log = train_context_model(codec, [long_video[8:]], mask="capstone_mask", steps=30)
    variant_codec = Codec(codec.tokenizer, codec.quantizer, cm)
    folder = Path(tempfile.mkdtemp(prefix="capstone_")) / "submission"
    capstone.make_submission(variant_codec, folder, name="my first variant",
                             variant="safe mask: own frame coarser-or-equal + same and next-coarser scale of t-1",
                             variant_code=VARIANT)
    print((folder / "submission.json").read_text())
    """),
    code("""
    report = capstone.check_submission(folder)
    print("PASSED" if report else "FAILED")
    """),
    md("A number the files do not reproduce is caught:"),
    code("""
    import json

    doc = json.loads((folder / "submission.json").read_text())
    doc["rd"][-1]["psnr"] += 1.0                    # "improve" the result by hand
    (folder / "submission.json").write_text(json.dumps(doc))
    print("PASSED" if capstone.check_submission(folder) else "FAILED")
    """),
    md(r"""
    **What to hand in.** Your folder, and a paragraph: what you changed, what you expected, the RD
    curve against the shipped model (`plot_rd_curve`) and the BD-rate, and whether 30 (or 300) steps are
    enough to tell. Ideas: a window W = 2, InfinityStar-style sparse attention made safe, a bitwise (BSQ)
    quantizer written as a stage (notebook 12's interface), a context model of another width, a learned
    copy gate. The checker does not judge the idea; it makes sure the numbers are real.
    """),
]


def build() -> dict[str, nbformat.NotebookNode]:
    out = {}
    for name, cells in NB.items():
        nb = new_notebook(cells=cells)
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}
        nb.metadata["language_info"] = {"name": "python"}
        out[name] = nb
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare with the committed notebooks, write nothing")
    args = parser.parse_args(argv)
    OUT.mkdir(exist_ok=True)
    stale = []
    for name, nb in build().items():
        path = OUT / f"{name}.ipynb"
        for i, cell in enumerate(nb.cells):  # stable ids: regenerating gives the same bytes
            cell["id"] = f"cell-{i}"
        text = nbformat.writes(nb) + "\n"
        if args.check:
            if not path.is_file() or path.read_text() != text:
                stale.append(path.name)
        else:
            nbformat.validate(nb)
            path.write_text(text)
            print("wrote", path.relative_to(ROOT))
    if stale:
        print("out of date (run scripts/build_notebooks.py):", ", ".join(stale), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
