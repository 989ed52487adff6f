"""Store a codec checkpoint's float32 weights as float16: half the file, and exactly the model it loads as.

    python scripts/half_checkpoint.py runs/tiny_bsq/tiny_bsq.pt progvc_lab/checkpoints/tiny_bsq.pt

The float32 weights are first rounded to float16 values *in the model*, and the fingerprint is taken
from that rounded model; the file then stores them as float16. ``Codec.load`` casts them back to
float32 exactly, so the loaded model is the rounded one, bit for bit, and its fingerprint matches.
(Rounding changes the weights by ~1e-3 relative: the model is a slightly different one, not the same
one compressed; this script checks that it still codes.) float64 buffers (the unigram counts) stay.
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch

from progvc_lab.codec import Codec


def half_checkpoint(src, dst) -> Codec:
    codec = Codec.load(src)
    with torch.no_grad():
        for tensor in codec.state_dict().values():   # views of the parameters and buffers
            if tensor.dtype == torch.float32:
                tensor.copy_(tensor.half().float())
    meta = {**getattr(codec, "meta", {}), "weights_stored_as": "float16 (rounded before the fingerprint)"}
    Path(dst).parent.mkdir(parents=True, exist_ok=True)
    codec.save(dst, meta=meta)
    ckpt = torch.load(dst, map_location="cpu", weights_only=True)
    ckpt["state_dict"] = {k: v.half() if v.dtype == torch.float32 else v for k, v in ckpt["state_dict"].items()}
    torch.save(ckpt, dst)
    loaded = Codec.load(dst)
    if loaded.fingerprint() != codec.fingerprint():
        raise SystemExit(f"{dst}: the float16 file does not load as the rounded model")
    return loaded


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit(__doc__)
    out = half_checkpoint(sys.argv[1], sys.argv[2])
    print(f"{sys.argv[2]}: {Path(sys.argv[2]).stat().st_size / 1e6:.1f} MB, fingerprint {out.fingerprint().hex()}")
