"""tiny against a codec with a narrower decoder (e.g. tiny-fast, configs/tiny_fast_stage3.yaml): the same
stream bytes (the encoder, quantizer and context model are tiny's), so only the reconstruction differs.
Prints, per shipped clip, bytes, PSNR-RGB and MS-SSIM at the full pyramid and the decoder's ms per frame
(runs interleaved in one process, best of 3).

    python benchmarks/fast_decoder.py runs/tiny_fast/tiny_fast.pt [--frames 30] [--threads 2]
"""
from __future__ import annotations

import argparse
import time

import torch

from progvc_lab import metrics
from progvc_lab.codec import Codec
from progvc_lab.data import load_clip, sample_clip_path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("other", help="the codec with another decoder (a name or a .pt)")
    ap.add_argument("--frames", type=int, default=30)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    codecs = {"tiny": Codec.from_pretrained("tiny"), args.other: Codec.from_pretrained(args.other)}
    for name in ("foreman", "akiyo"):
        video, fps = load_clip(sample_clip_path(name), args.frames)
        streams = {n: c.encode(video, fps) for n, c in codecs.items()}
        tokens, _ = codecs["tiny"].decode_tokens(streams["tiny"])
        theirs, _ = codecs[args.other].decode_tokens(streams[args.other])
        # the header's model fingerprint differs (another decoder); the tokens and the byte count do not
        same = (len(set(map(len, streams.values()))) == 1
                and all(torch.equal(a, b) for a, b in zip(tokens, theirs)))
        hw = codecs["tiny"].tokenizer.latent_size(*video.shape[-2:])
        best = {n: float("inf") for n in codecs}
        out = {}
        for _ in range(3):
            for n, c in codecs.items():
                with torch.inference_mode():
                    t0 = time.perf_counter()
                    out[n] = c.reconstruct(tokens, hw, video.shape[-2:])
                    best[n] = min(best[n], 1000 * (time.perf_counter() - t0) / video.shape[0])
        print(f"{name}: {video.shape[0]} frames, {len(streams['tiny'])} bytes, same tokens and bytes: {same}")
        for n in codecs:
            print(f"  {n:32s} PSNR-RGB {metrics.psnr(out[n], video):6.2f} dB  MS-SSIM "
                  f"{metrics.ms_ssim(out[n], video):.3f}  reconstruct {best[n]:6.1f} ms/frame")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
