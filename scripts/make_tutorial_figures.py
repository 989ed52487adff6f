"""Draw the figures of tutorials/*.md with progvc_lab.viz.figures (PNG, each < 200 KB).

    .venv/bin/python scripts/make_tutorial_figures.py                 # shipped tiny model, Foreman, 8 frames
    .venv/bin/python scripts/make_tutorial_figures.py --allow-random  # draft figures without tiny.pt

Writes tutorials/figures/NN_*.png and tutorials/figures/numbers.json (the numbers the chapters quote,
so a reader can check them and a regenerated model shows what changed). The figures come from the
package's own plotting functions; nothing here draws its own kind of picture.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from pathlib import Path

os.environ.setdefault("MPLBACKEND", "Agg")
ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "tutorials" / "figures"
MAX_BYTES = 200_000


def save(fig, name: str, dpi: int = 80) -> Path:
    path = OUT / name
    for d in (dpi, 72, 60, 48):
        fig.savefig(path, dpi=d, bbox_inches="tight")
        if path.stat().st_size < MAX_BYTES:
            break
    else:
        raise RuntimeError(f"{path} is {path.stat().st_size} bytes even at dpi 48")
    print(f"wrote {path.relative_to(ROOT)} ({path.stat().st_size // 1024} KB)")
    return path


def _same_chunks(codec, video, fps, data_torchac: bytes, A) -> bool:
    """Encode with the course's coder and compare every chunk with the torchac stream."""
    from progvc_lab import bitstream

    A.register()
    data = codec.encode(video, fps, coder=A.NAME)
    return bitstream.read_stream(data).chunks == bitstream.read_stream(data_torchac).chunks


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--allow-random", action="store_true",
                        help="draw with a random codec when the shipped tiny model is missing (drafts only)")
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--x265-crf", type=int, nargs="+", default=[51, 47, 43])
    args = parser.parse_args(argv)

    import torch

    from progvc_lab.codec import PRETRAINED
    from progvc_lab.course import block_bytes, coder_call_overhead, coding_vs_training_logits, exercises, ffmpeg_point, sample_video
    from progvc_lab.stages.entropy import logits_to_cdf
    from progvc_lab.metrics import psnr, texture_energy_ratio
    from progvc_lab.viz import ClipSession, load_demo_codec
    from progvc_lab.viz import figures as F

    if not PRETRAINED["tiny"].is_file() and not args.allow_random:
        print(f"{PRETRAINED['tiny']} is missing: train it (README) or pass --allow-random for drafts", file=sys.stderr)
        return 2
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        codec = load_demo_codec()
    OUT.mkdir(parents=True, exist_ok=True)
    video, fps = sample_video(frames=args.frames)
    S = ClipSession(codec, video, fps, "foreman")
    t, V, K = 4, codec.quantizer.codebook_size, codec.quantizer.num_scales
    numbers: dict = {"model": "tiny" if PRETRAINED["tiny"].is_file() else "RANDOM (draft)",
                     "clip": f"foreman, first {video.shape[0]} frames, 176x144", "frame_shown": t}

    # 00 quick start
    full = S.decoded_video(K)
    save(F.plot_sampler_comparison({"k = 2": S.decoded_frame(2, t), "k = 4": S.decoded_frame(4, t),
                                    "k = 6 (all)": full[t]}, original=video[t]), "00_quick_start.png")
    # 01 tokenizer
    with torch.no_grad():
        f = codec.tokenizer.encode(video)
        x_float = codec.tokenizer.decode(f, video.shape[-2:]).clamp(0, 1)
    numbers["tokenizer_float_psnr"] = psnr(x_float, video)
    numbers["codec_full_psnr"] = psnr(full, video)
    numbers["latent_shape"] = list(f.shape[1:])
    save(F.plot_sampler_comparison({"tokenizer only\n(float latent)": x_float[t], "tokens, all scales": full[t]},
                                   original=video[t]), "01_tokenizer.png")
    # 02 quantizer
    tokens, latent_hw = S.tokens, S.latent_hw
    numbers["schedule"] = [list(x) for x in codec.quantizer.schedule(latent_hw)]
    save(F.plot_token_pyramid(tokens, t, V, codebook=codec.quantizer.codebook.weight), "02_token_pyramid.png")
    save(F.plot_partial_reconstructions(codec, tokens, latent_hw, video.shape[-2:], t, original=video[t]),
         "02_partial_reconstructions.png")
    save(F.plot_scale_step(video[t], tokens[3][t], S.recon_frame(4, t), 3, V, codebook=codec.quantizer.codebook.weight),
         "02_scale_step.png")
    with torch.no_grad():
        numbers["latent_error_by_k"] = [
            float(((f - codec.quantizer.tokens_to_latent(tokens, latent_hw, upto=k)) ** 2).sum() / (f ** 2).sum())
            for k in range(1, K + 1)]
    # 03 masks and the context model
    for name in ("var", "infinitystar", "progvc_sparse"):
        save(F.plot_mask(name, 3, 4), f"03_mask_{name}.png")
    lengths = [h * w for h, w in codec.quantizer.schedule(latent_hw)]
    numbers["mask_cost_gop8"] = {f"{n} W={w}": F.mask_summary(n, 8, K, w, lengths)["ratio_to_var"]
                                 for n, w in (("var", 1), ("infinitystar", 1), ("progvc_sparse", 1),
                                              ("progvc_sparse", 2))}
    one_gop = codec.analyze(video, fps)
    gop = codec.config.gop
    codec.config.gop = 1
    intra = codec.analyze(video, fps)
    codec.config.gop = gop
    numbers["bits_per_token_gop8"] = one_gop["bits_per_token_per_scale"]
    numbers["bits_per_token_gop1"] = intra["bits_per_token_per_scale"]
    numbers["unigram_bits_per_token"] = one_gop["unigram_bits_per_token_per_scale"]
    numbers["oracle_bits_per_token"] = [o / n for o, n in zip(one_gop["oracle_unigram_bits_per_scale"],
                                                             one_gop["tokens_per_scale"])]
    numbers["ratio_to_unigram_per_scale"] = one_gop["ratio_to_unigram_per_scale"]
    numbers["ratio_to_unigram"] = one_gop["ratio_to_unigram"]
    numbers["bytes_gop8_vs_gop1"] = [one_gop["bytes"], intra["bytes"]]
    numbers["ratio_to_unigram_gop1"] = intra["ratio_to_unigram"]
    numbers["coding_vs_training"] = coding_vs_training_logits(codec, video)
    # 04 entropy coding
    save(F.plot_bits_heatmap(S.bits_maps, t=1), "04_bits_heatmap.png")
    save(F.plot_bits_per_scale(S.bytes_per_scale), "04_bits_per_scale.png")
    numbers["torchac_overhead_bits"] = {r["symbols"]: r["overhead_bits"]
                                        for r in coder_call_overhead(vocab=V, lengths=(1, 16, 256), repeats=10)}
    # the 1x1 blocks of this very stream: model bits vs the bits torchac wrote (one call per block)
    data, stats = codec.encode_with_stats(video, fps, coder="torchac")     # one string per block
    model0 = float(stats["model_bits"][:, 0].mean())
    actual0 = float(8 * block_bytes(data)[:, 0].mean())
    numbers["scale0_overhead"] = {"model_bits_per_block": model0, "bits_per_block": actual0,
                                  "overhead_bits_per_block": actual0 - model0,
                                  "ratio": (actual0 - model0) / max(model0, 1e-9)}
    # why the CDF check refuses a float32 softmax: rows of the check's own case that change
    gen = torch.Generator().manual_seed(44)
    logits = torch.randn(1024, 512, generator=gen)
    f32 = exercises._floor_cdf(torch.softmax(logits.float(), -1))
    numbers["float32_cdf_rows"] = {"rows": 1024, "vocab": 512,
                                   "differ": int((f32 != logits_to_cdf(logits)).any(1).sum())}
    # 05 truncation
    save(F.plot_bits_per_scale(S.bytes_per_scale, k=3, file_bytes=(len(S.truncated(3)), len(S.data))),
         "05_cut_after_3.png")
    rd = S.rd_points()
    numbers["rd"] = [{"k": p["k"], "bytes": p["bytes"], "bpp": p["bpp"], "psnr": p["psnr"]} for p in rd]
    save(F.plot_rd_curve(rd, highlight=3), "05_rd_curve.png")
    numbers["finest_scale"] = {"psnr_gain_db": rd[-1]["psnr"] - rd[-2]["psnr"],
                               "bytes_ratio": rd[-1]["bytes"] / rd[-2]["bytes"]}
    # 06 samplers
    k = 3
    samplers = {"zero": {}, "argmax": {}, "sample": dict(temperature=1.0),
                "sample τ=0.7 top-20": dict(temperature=0.7, top_k=20)}
    frames, numbers["samplers_k3"] = {}, {}
    for name, kw in samplers.items():
        dec = codec.decode(S.truncated(k), sampler=name.split()[0], **kw)
        frames[name] = dec[t]
        numbers["samplers_k3"][name] = {"psnr": psnr(dec, video), "texture_ratio": texture_energy_ratio(dec, video)}
    save(F.plot_sampler_comparison(frames, original=video[t]), "06_samplers.png")
    # 07 swapping: the same mask family, another window
    save(F.plot_mask("progvc_sparse", 4, 3, window=2), "07_mask_progvc_sparse_w2.png")
    # 08 evaluation: the ladder and a few x265 points
    fig = F.plot_rd_curve(rd, title="progvc_lab tiny (one encode) vs x265 veryslow")
    pts = [p for p in (ffmpeg_point(video, fps, crf=c) for c in args.x265_crf) if p]
    if pts:
        ax = fig.axes[0]
        ax.plot([p["bpp"] for p in pts], [p["psnr_rgb"] for p in pts], "s--", color="tab:red", label="x265 veryslow")
        for p in pts:
            ax.annotate(f"crf {p['crf']}", (p["bpp"], p["psnr_rgb"]), textcoords="offset points", xytext=(4, 4),
                        fontsize=7)
        ax.legend(fontsize=8)
        numbers["x265"] = [{k2: p[k2] for k2 in ("crf", "bytes", "bpp", "psnr_rgb", "command")} for p in pts]
    save(fig, "08_rd_vs_x265.png")
    # x264's lowest rate (CRF 51) against our ladder: a higher PSNR than k = K-1 at fewer bits?
    low = ffmpeg_point(video, fps, codec="libx264", crf=51)
    if low:
        above = [p for p in rd if p["bpp"] >= low["bpp"]]
        first_above = above[0] if above else rd[-1]
        numbers["x264_crf51"] = {"bpp": low["bpp"], "bytes": low["bytes"], "psnr_rgb": low["psnr_rgb"],
                                 "command": low["command"], "our_k_at_or_above": first_above["k"],
                                 "our_bpp": first_above["bpp"], "our_psnr": first_above["psnr"],
                                 "levels_below": sum(p["bpp"] < low["bpp"] for p in rd),
                                 "psnr_advantage_db": low["psnr_rgb"] - first_above["psnr"]}

    old = OUT / "numbers.json"
    if old.is_file() and "notebook_seconds" in json.loads(old.read_text()):
        numbers["notebook_seconds"] = json.loads(old.read_text())["notebook_seconds"]   # scripts/time_notebooks.py
    # 10 arithmetic coding from scratch: our coder vs torchac, the bound, streaming, one moved count
    from progvc_lab import bitstream
    from progvc_lab.course import arithmetic as A
    from progvc_lab.stages.entropy import get_coder

    ours = A.ArithmeticCoder()
    rows = A.coder_overhead({"ours": ours, "torchac": get_coder("torchac")}, vocab=V)
    data_torchac = codec.encode(video, fps, coder="torchac")
    tokens_ours = A.decode_tokens(codec, data_torchac, ours)
    tokens_ref, _ = codec.decode_tokens(data_torchac)
    cost = A.streaming_bytes_per_scale(codec, data_torchac)
    gen = torch.Generator().manual_seed(3)
    logits = torch.randn(200, V, generator=gen) * 3
    cdf = logits_to_cdf(logits)
    symbols = torch.multinomial(torch.softmax(logits.double(), -1), 1, generator=gen).squeeze(1)
    string = ours.encode(cdf, symbols)
    wrong = (ours.decode(A.move_one_count(cdf, 50, symbol=int(symbols[50])), string) != symbols).numpy()
    n = min(codec.config.gop, video.shape[0])
    tamper = {}
    for t_, s_ in [(1, 1), (0, 3), (0, K - 1), (5, K - 1)]:
        with ours.tampered(call=s_ * n + t_, row=0):
            try:
                A.decode_tokens(codec, data_torchac, ours)
                tamper[f"t{t_}s{s_}"] = "decoded correctly"
            except bitstream.BitstreamError:
                tamper[f"t{t_}s{s_}"] = "CRC caught it"
    numbers["arithmetic"] = {
        "overhead": {str(r["symbols"]): {k2: r[k2] for k2 in ("model_bits", "ours", "torchac", "bound")} for r in rows},
        "same_tokens_as_package": all(torch.equal(a, b) for a, b in zip(tokens_ours, tokens_ref)),
        "chunks_identical_to_torchac": _same_chunks(codec, video, fps, data_torchac, A),
        "streaming": {**cost, "saved_bytes": sum(cost["per_block"]) - sum(cost["per_chunk"]),
                      "file_bytes": len(data_torchac), "constriction_file_bytes": len(S.data),
                      "saved_scale0": cost["per_block"][0] - cost["per_chunk"][0]},
        "desync": {"row": 50, "first_wrong": int(wrong.argmax()), "wrong": int(wrong.sum()), "symbols": 200},
        "tamper": tamper,
        "crc_caught": sum(v == "CRC caught it" for v in tamper.values()), "tampered_blocks": len(tamper)}
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 1.3))
    ax.imshow(wrong[None], aspect="auto", cmap="Reds", interpolation="nearest")
    ax.set_yticks([])
    ax.set_xlabel("symbol position (red: decoded wrong); one count of row 50 moved at the decoder")
    ax.axvline(50, color="k", lw=0.8)
    plt.close(fig)
    save(fig, "10_desync.png")

    # 11 unsafe masks: a frame-major VAR stream cut after k = 3, and a safe design trained briefly
    from progvc_lab.codec import Codec
    from progvc_lab.course import solutions, unsafe
    from progvc_lab.course.training import train_context_model
    from progvc_lab.stages import masks as M

    clip = video[:4]
    runs = {m: unsafe.frame_major_cut(codec, clip, mask=m, k=3) for m in ("progvc_sparse", "var", "infinitystar")}
    meant, got = unsafe.decoded_frames(codec, runs["var"], video.shape[-2:])
    numbers["unsafe"] = {m: {"agree_T": r["agree_T"].tolist(), "first_wrong": r["first_wrong"],
                             "violations": len(r["violations"])} for m, r in runs.items()}
    numbers["unsafe"]["var_psnr_meant"] = [psnr(meant[i:i + 1], clip[i:i + 1]) for i in range(len(clip))]
    numbers["unsafe"]["var_psnr_decoded"] = [psnr(got[i:i + 1], clip[i:i + 1]) for i in range(len(clip))]
    save(F.plot_sampler_comparison({"var: what the encoder sent": meant[2], "var: what the cut decoder got": got[2]},
                                   original=clip[2]), "11_var_cut.png")
    save(F.plot_mask("var", 3, 3), "11_mask_var_violations.png")
    M.register_mask("safe_design")(solutions.safe_mask_design)
    save(F.plot_mask("safe_design", 3, 3), "11_mask_safe_design.png")
    long_video, _ = sample_video(frames=30)
    numbers["safe_design_training"] = {}
    for name in ("progvc_sparse", "safe_design"):
        cm, log = train_context_model(codec, [long_video[8:]], mask=name, steps=40, val_videos=[long_video[:6]],
                                      log_every=20)
        c = Codec(codec.tokenizer, codec.quantizer, cm, gop=8)
        data = c.encode(video, fps)
        numbers["safe_design_training"][name] = {
            "steps": 40, "train_bits_first": log[0]["train_bits"], "train_bits_last": log[-1]["train_bits"],
            "val_bits": log[-1]["val_bits"], "bytes": len(data), "bytes_cut3": len(bitstream.truncate(data, 3)),
            "psnr_cut3": psnr(c.decode(bitstream.truncate(data, 3)), video)}
    numbers["safe_design_training"]["shipped_bytes"] = len(S.data)

    # 12 build a stage: the reference loops inside a codec, and the expected-code fill against zero
    import contextlib
    import io

    from progvc_lab.course import check_stage_in_codec
    from progvc_lab.course.build_stage import StudentQuantizer, fill_quality

    with contextlib.redirect_stdout(io.StringIO()):
        same = bool(check_stage_in_codec(codec, video, fps, solutions.residual_tokenize,
                                         solutions.residual_tokens_to_latent))
    student = Codec(codec.tokenizer, StudentQuantizer(codec.quantizer, expected_code=solutions.expected_code),
                    codec.context_model)
    rows12 = fill_quality(student, video, fps, ks=(2, 3, 4))
    numbers["build_stage"] = {"identical_tokens_bytes_frames": same,
                              "fill": {f"k{r['k']}_{r['sampler']}": {"psnr": r["psnr"], "ms_ssim": r["ms_ssim"],
                                                                      "bytes": r["bytes"]} for r in rows12}}

    # 13 train from scratch: the notebook's two loops with its settings, and the codec they make
    from progvc_lab.course.training import LivePlot, train_stage1
    from progvc_lab.stages import ContextModel

    train_frames, test_video = long_video[8:], long_video[:8]
    plot = LivePlot({"stage 1: test PSNR-RGB (dB), all scales": ["val_full"], "stage 2: bits per token": ["train_bits", "val_bits"]})
    tok13, q13, log1 = train_stage1([train_frames], steps=250, val_video=test_video[:4], log_every=25,
                                    on_log=lambda e: plot({**e, "val_full": e["val_psnr"][-1]}))
    stage1_only = Codec(tok13, q13, ContextModel(codebook_size=q13.codebook_size, latent_dim=q13.latent_dim,
                                                 num_scales=q13.num_scales))
    cm13, log2 = train_context_model(stage1_only, [train_frames], steps=100, val_videos=[test_video[:3]],
                                     log_every=25, on_log=lambda e: plot({**e, "step": 250 + e["step"]}))
    save(plot.figure, "13_training_curves.png")
    mine = Codec(tok13, q13, cm13, gop=8)
    data13 = mine.encode(test_video, fps)
    rd13 = []
    for k_ in range(1, q13.num_scales + 1):
        cut = bitstream.truncate(data13, k_)
        rd13.append({"k": k_, "bytes": len(cut), "psnr": psnr(mine.decode(cut), test_video)})
    numbers["from_scratch"] = {"stage1_steps": 250, "stage1_seconds": log1[-1]["seconds"],
                               "stage1_val_psnr": log1[-1]["val_psnr"], "stage1_perplexity": log1[-1]["perplexity"],
                               "stage2_steps": 100, "stage2_seconds": log2[-1]["seconds"],
                               "stage2_bits_first": log2[0]["train_bits"], "stage2_val_bits": log2[-1]["val_bits"],
                               "stage2_val_bits_per_scale": log2[-1]["val_bits_per_scale"], "rd": rd13,
                               "codebook_size": q13.codebook_size}

    # 14 against classical codecs at the bytes of each cut, frame by frame
    from progvc_lab.course import classical

    rows14, frames14 = classical.same_bytes_ladder(codec, video, fps, ks=(3, 5, 6))
    numbers["same_bytes"] = {f"k{r['k']}_{r['codec']}": {k2: r[k2] for k2 in ("bytes", "crf", "matched", "psnr-y",
                                                                             "ms-ssim-rgb", "st-lpips")} for r in rows14}
    save(classical.plot_frames_grid(video, frames14[K], picks=(0, 7)), "14_same_bytes_frames.png")

    (OUT / "numbers.json").write_text(json.dumps(numbers, indent=1) + "\n")
    print(f"wrote {(OUT / 'numbers.json').relative_to(ROOT)}")
    sys.path.insert(0, str(ROOT / "scripts"))
    import tutorial_numbers

    return tutorial_numbers.main([])


if __name__ == "__main__":
    sys.exit(main())
