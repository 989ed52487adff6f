"""Store a trained codec as a variant of a shipped model: only the stages that differ (e.g. a context
model trained under another mask on the shipped tokenizer), a few MB instead of the whole codec.

    python scripts/export_variant.py runs/tiny_var/tiny_var.pt progvc_lab/checkpoints/tiny_var.pt --base tiny

``--decoder-from NAME`` swaps in the tokenizer of another shipped model whose *encoder* is the same (so the
tokens, which the context model was trained on, do not change), e.g. a context model trained on tiny's
tokens, shipped over tiny-fast's narrower decoder:

    python scripts/export_variant.py runs/tiny_lite/tiny_lite.pt progvc_lab/checkpoints/tiny_lite.pt \
        --base tiny-fast --decoder-from tiny-fast

The variant loads like any codec (``Codec.load``, ``Codec.from_pretrained("tiny-var")`` once listed in
``codec.PRETRAINED``) and has the same fingerprint as the full file (checked here).
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch

from progvc_lab.codec import Codec


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("source", help="a full codec checkpoint (e.g. a stage-2 export)")
    ap.add_argument("output", help="the variant file to write")
    ap.add_argument("--base", default="tiny", help="the shipped model it varies (default: tiny)")
    ap.add_argument("--force", action="store_true", help="replace OUTPUT if it exists")
    ap.add_argument("--decoder-from", metavar="NAME",
                    help="take the tokenizer (decoder) of this shipped model; its encoder must equal the source's")
    args = ap.parse_args(argv)
    out = Path(args.output)
    if out.exists() and not args.force:
        raise SystemExit(f"{out} exists; pass --force to replace it")
    codec = Codec.load(args.source)
    if args.decoder_from:
        other = Codec.from_pretrained(args.decoder_from)
        mine, theirs = codec.tokenizer.encoder.state_dict(), other.tokenizer.encoder.state_dict()
        if mine.keys() != theirs.keys() or any(not torch.equal(mine[k], theirs[k]) for k in mine):
            raise SystemExit(f"{args.decoder_from}'s encoder differs from {args.source}'s: its tokens would too")
        meta = {**getattr(codec, "meta", {}), "decoder_from": args.decoder_from}
        codec = Codec(other.tokenizer, codec.quantizer, codec.context_model)
        codec.meta = meta
    codec.save(out, meta=getattr(codec, "meta", {}), base=args.base)
    again = Codec.load(out)
    assert again.fingerprint() == codec.fingerprint(), "the variant does not rebuild the same codec"
    print(f"{args.source} -> {out}: {out.stat().st_size / 1e6:.1f} MB, variant of {args.base!r}, "
          f"fingerprint {codec.fingerprint().hex()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
