"""``progvc-lab``: the command line.

::

    progvc-lab demo     [--model tiny] [--clip PATH] [--out outputs/demo] [--frames N]
    progvc-lab encode   IN.y4m|IN.mp4 -o OUT.pgvc [--model] [--gop N] [--frames N] [--verify] [--force]
                        [--lambda L | --target-bpp B | --target-bytes N] [--p-lambda-factor F]
                        [--copy-gate auto|none|count|context|learned]
    progvc-lab decode   IN.pgvc -o OUT.y4m|OUT.mp4 [--model] [--scales k] [--sampler zero|argmax|mean|sample|copy]
                        [--temperature T[,T1,...]] [--top-k K] [--top-p P] [--seed S] [--strict] [--limit NAME=N ...] [--force]
    progvc-lab truncate IN.pgvc -o OUT.pgvc --scales k [--force]
    progvc-lab info     IN.pgvc [--json]
    progvc-lab train    stage1|stage2 ...          (progvc_lab.training.cli)
    progvc-lab eval     [CLIP ...] [--model] [--samplers zero,argmax,sample] [--baselines x264,x265|none]
                        [--json OUT.json] [--plot OUT.png] [--out outputs/eval] [--frames N]
                        [--no-perceptual] [--force]
    progvc-lab bench    [CLIP] [--model] [--threads 1 2] [--frames N] [--variants all|none|masks,quantizers,coders,samplers]
                        [--models A,B] [--coders A,B] [--samplers A,B] [--no-speed] [--scaling] [--json OUT] [--plot OUT.png]

Files named with ``-o`` are never replaced unless ``--force`` is given; they must be in a folder that
exists. Outputs are written to a unique temporary file next to the target and then renamed: a failed
run leaves nothing behind, and without ``--force`` the name is claimed exclusively (a hard link), so of
two runs writing the same new file one succeeds and the other says it exists. ``demo`` and ``eval``
write fixed file names into their own output folder (``--out``) and replace them on every run.

Errors caused by the input (a missing, unreadable or foreign file, a folder, a stream given to
``encode`` or a video to ``decode``, a stream from another model, a corrupted or truncated stream, an
unsupported or oversized video, a bad option value) print ONE line ``progvc-lab: error: FILE: ...``
and exit with status 2; ``--debug`` shows the traceback instead. Anything else is a bug: it is
reported as an internal error with its traceback (status 1). A closed output pipe
(``progvc-lab info --json a.pgvc | head``) ends quietly with status 141. ``info`` and ``truncate``
read bytes only and do not load torch or a model.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import sys
import time
import warnings
from pathlib import Path

from . import bitstream
from .bitstream import BitstreamError

PROG = "progvc-lab"


class UsageError(ValueError):
    """A problem with the command line's values that argparse cannot see."""


class OneLineParser(argparse.ArgumentParser):
    """argparse with one-line errors (``progvc-lab decode: error: ...``), like every other error here."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


# ---- small helpers -----------------------------------------------------------------------------------
VIDEO_MAGIC = {b"YUV4MPEG2": "a y4m video", b"\x1aE\xdf\xa3": "a Matroska/WebM video", b"RIFF": "an AVI video"}


def _check_input(path: str, what: str = "file") -> Path:
    """An input that exists, is a file and can be opened (one-line errors naming it)."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{p}: no such file")
    if p.is_dir():
        raise UsageError(f"{p} is a folder, expected a {what}")
    try:
        with open(p, "rb") as f:
            f.read(1)
    except PermissionError:
        raise PermissionError(f"{p}: permission denied (cannot read it)") from None
    return p


def _read_input(path: str) -> bytes:
    """The bytes of a stream given to decode/info/truncate; a video file is named as such."""
    p = _check_input(path, ".pgvc stream")
    data = p.read_bytes()
    if not data.startswith(bitstream.MAGIC):
        kind = next((k for m, k in VIDEO_MAGIC.items() if data.startswith(m)), None)
        if kind is None and data[4:8] == b"ftyp":
            kind = "an MP4/MOV video"
        if kind is not None:
            raise UsageError(f"{p} is {kind}, not a .pgvc stream (did you mean 'progvc-lab encode'?)")
    return data


def _check_output(path: str, force: bool) -> Path:
    """An output name that can be written: not a folder, in a folder that exists, new unless --force."""
    p = Path(path)
    if p.is_dir():
        raise UsageError(f"{p} is a folder; give a file name after -o")
    if p.exists() and not force:
        raise FileExistsError(f"{p} already exists; pass --force to replace it")
    parent = p.parent
    if not parent.is_dir():
        what = "is not a folder" if parent.exists() else "does not exist"
        raise FileNotFoundError(f"{p}: the output folder {parent} {what}; create it first")
    return p


def _temporary_name(path: Path) -> Path:
    """A unique name next to ``path`` (same folder, so the final rename is atomic; same suffix, so
    writers that pick the format from the suffix still work)."""
    import uuid

    return path.with_name(f".{path.stem}.{os.getpid()}.{uuid.uuid4().hex[:8]}.part{path.suffix}")


def _publish(tmp: Path, path: Path, force: bool):
    """Move a finished temporary file to ``path``. Without ``force`` this creates ``path``
    exclusively (a hard link fails if the name exists), so of two runs writing the same new file
    only one succeeds and the other says the file exists; nothing is ever half-written."""
    try:
        if force:
            os.replace(tmp, path)
            return
        try:
            os.link(tmp, path)
        except FileExistsError:
            raise FileExistsError(f"{path} already exists (another process wrote it meanwhile); "
                                  "pass --force to replace it") from None
        except OSError:  # a file system without hard links: claim the name exclusively, then replace
            try:
                os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            except FileExistsError:
                raise FileExistsError(f"{path} already exists (another process wrote it meanwhile); "
                                      "pass --force to replace it") from None
            os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _write_bytes(path: Path, data: bytes, force: bool = False):
    """Write via a unique temporary file + rename, so a failed run never leaves half a file behind."""
    tmp = _temporary_name(path)
    with open(tmp, "xb") as f:
        f.write(data)
    _publish(tmp, path, force)


def _finite(name, positive: bool = False):
    def parse(text):
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be a number, got {text!r}") from None
        if not math.isfinite(value) or (positive and value <= 0) or value < 0:
            raise argparse.ArgumentTypeError(f"{name} must be a finite number {'> 0' if positive else '>= 0'}, "
                                             f"got {text!r}")
        return value
    return parse


def _temperatures(text):
    """``--temperature``: one positive number, or a comma list of them (one per scale)."""
    parse = _finite("--temperature", positive=True)
    values = tuple(parse(part.strip()) for part in text.split(","))
    return values[0] if len(values) == 1 else values


def _probability(name):
    def parse(text):
        value = _finite(name)(text)
        if not 0 < value <= 1:
            raise argparse.ArgumentTypeError(f"{name} must be in (0, 1], got {text!r}")
        return value
    return parse


def _int_at_least(name, low):
    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be an integer, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"{name} must be at least {low}, got {value}")
        return value
    return parse


def _positive(name):
    return _int_at_least(name, 1)


def _non_negative(name):
    return _int_at_least(name, 0)


def _load_model(name: str):
    from .evaluate import load_codec

    return load_codec(name)


def _fmt_size(n: int) -> str:
    return f"{n} bytes" if n < 10_000 else f"{n} bytes ({n / 1024:.1f} KiB)"


# ---- commands ---------------------------------------------------------------------------------------------
def cmd_encode(args) -> int:
    from fractions import Fraction

    from .data.streaming import open_frames
    from .metrics import bpp

    out = _check_output(args.output, args.force)
    src = _check_input(args.input, "video file")
    with open(src, "rb") as f:
        if f.read(len(bitstream.MAGIC)) == bitstream.MAGIC:
            raise UsageError(f"{src} is a .pgvc stream, not a video (did you mean 'progvc-lab decode'?)")
    if args.gop is not None and args.gop > 65535:
        raise UsageError(f"--gop must be at most 65535, got {args.gop}")
    targets = [x is not None for x in (args.rdo_lambda, args.target_bpp, args.target_bytes)]
    if sum(targets) > 1:
        raise UsageError("give at most one of --lambda, --target-bpp and --target-bytes")
    if args.scales is not None and any(targets[1:]):
        raise UsageError("--scales and --target-bpp/--target-bytes both choose the scales: give one")
    for name, value in (("--lambda", args.rdo_lambda), ("--p-lambda-factor", args.p_lambda_factor),
                        ("--target-bpp", args.target_bpp)):
        if value is not None and not (math.isfinite(value) and value >= (1e-9 if name == "--target-bpp" else 0)):
            raise UsageError(f"{name} must be a finite number {'> 0' if name == '--target-bpp' else '>= 0'}, got {value}")
    codec = _load_model(args.model)
    options = {"gop": args.gop, "copy_gate": args.copy_gate, "rdo_lambda": args.rdo_lambda,
               "rdo_p_factor": args.p_lambda_factor, "coder": args.coder, "coding_threads": args.coding_threads}
    frames = open_frames(args.input, max_frames=args.frames)  # a y4m is read GOP by GOP
    fps = Fraction(frames.fps).limit_denominator(65535)
    if fps.numerator > 65535:  # keep fps a fraction of two numbers below 2^16
        fps = fps.limit_denominator(max(1, 65535 // math.ceil(fps)))
    T, H, W = frames.num_frames, frames.height, frames.width
    t0 = time.perf_counter()
    if args.target_bpp is not None or args.target_bytes is not None:
        data, stats = codec.encode_to_target(frames, fps, target_bytes=args.target_bytes,
                                             target_bpp=args.target_bpp, verify=args.verify, **options)
        c = stats["chosen"]
        chose = (f"; chose k = {c['k']} of {codec.quantizer.num_scales} scales, lambda {c['rdo_lambda']:.4g} "
                 f"({c['encodes']} encodes, budget {c['budget_bytes']} bytes)")
    else:
        with _frame_bar(T, "encode", args.progress) as bar:
            data, stats = codec.encode_with_stats(frames, fps, verify=args.verify, progress=bar,
                                                  scales=args.scales, **options)
        chose = ""
    seconds = time.perf_counter() - t0
    _write_bytes(out, data, args.force)
    o = stats["options"]
    print(f"{args.input} -> {out}: {T} frames {W}x{H}, {_fmt_size(len(data))}, "
          f"{bpp(len(data), T, H, W):.4f} bpp, {seconds:.2f} s ({T / seconds:.1f} frames/s)"
          + (", verified (decoded and compared)" if args.verify else "")
          + (chose or f"; GOP {o['gop']}, copy gate {o['copy_gate']}, lambda {o['rdo_lambda']:g}"
                       + (f" (P frames x {o['rdo_p_factor']:g})" if o["rdo_p_factor"] != 1 else "")))
    return 0


def cmd_decode(args) -> int:
    from fractions import Fraction

    import torch.nn.functional as F

    from .data.streaming import VideoWriter

    out = _check_output(args.output, args.force)
    if out.suffix.lower() not in (".y4m", ".mp4"):
        raise UsageError(f"{out}: decode writes .y4m or .mp4 files, not {out.suffix or 'no extension'}")
    data = _read_input(args.input)
    limits = _limits(args.limit)
    with warnings.catch_warnings():  # a cut is reported once, from the decode's report below
        warnings.simplefilter("ignore")
        # fail on a foreign, damaged or too big file before loading the model
        header = bitstream.read_stream(data, limits=limits, strict=args.strict).header
    codec = _load_model(args.model)
    t0 = time.perf_counter()
    tuning = {k: v for k, v in (("temperature", args.temperature), ("top_k", args.top_k), ("top_p", args.top_p))
              if v is not None}
    H, W = header.height, header.width
    if H % 2 or W % 2:  # 4:2:0 files need even sizes: repeat the last row/column
        print(f"{PROG}: note: frame size {W}x{H} is odd; padded to {W + W % 2}x{H + H % 2} "
              "for 4:2:0 output", file=sys.stderr)
    fps = Fraction(header.fps_num, header.fps_den)
    # GOP by GOP into a temporary file, renamed when complete: memory holds one GOP, never half a file
    reports = []   # the stream's ReadReport: complete, or what a cut left per GOP
    with VideoWriter(out, fps=fps, overwrite=args.force) as writer, \
            _frame_bar(header.num_frames, "decode", args.progress) as bar, warnings.catch_warnings():
        warnings.simplefilter("ignore")   # a cut is reported once, below
        for frames in codec.decode_iter(data, scales=args.scales, sampler=args.sampler, seed=args.seed,
                                        progress=bar, limits=limits, strict=args.strict, report=reports, **tuning):
            if H % 2 or W % 2:
                frames = F.pad(frames, (0, W % 2, 0, H % 2), mode="replicate")
            writer.write(frames)
    seconds = time.perf_counter() - t0
    report = reports[0]
    if not report.complete:
        print(f"{PROG}: warning: {report.summary()}", file=sys.stderr)
    ks = sorted(set(report.scales_decoded), reverse=True)
    k = "/".join(map(str, ks)) + (" (per GOP)" if len(ks) > 1 else "")
    n = writer.frames_written
    print(f"{args.input} -> {out}: {n} frames {W}x{H}, {k} of {header.num_scales} scales "
          f"decoded, sampler {args.sampler}, {seconds:.2f} s ({n / seconds:.1f} frames/s)")
    return 0


@contextlib.contextmanager
def _frame_bar(total: int, what: str, mode: str = "auto"):
    """A tqdm bar over frames on stderr (``mode``: auto = only on a terminal, on, off); yields the
    codec's ``progress(frames_done)`` callback."""
    from tqdm.auto import tqdm

    show = {"on": True, "off": False}.get(mode, sys.stderr.isatty())
    bar = tqdm(total=total, desc=what, unit="frame", disable=not show, leave=True, file=sys.stderr)

    def update(done):
        bar.update(done - bar.n)

    try:
        yield update
    finally:
        bar.close()


def _limits(items: list[str] | None) -> bitstream.Limits:
    """``--limit max_pixels=N`` (repeatable) -> ``bitstream.Limits``."""
    changes = {}
    for item in items or []:
        name, sep, value = item.partition("=")
        try:
            changes[name.strip()] = int(float(value)) if sep else None
        except ValueError:
            changes[name.strip()] = None
        if changes[name.strip()] is None or changes[name.strip()] < 1:
            raise UsageError(f"--limit takes NAME=N with N a positive number, got {item!r}")
    return bitstream.Limits().replace(**changes)


def cmd_truncate(args) -> int:
    out = _check_output(args.output, args.force)
    data = _read_input(args.input)
    cut = bitstream.truncate(data, args.scales)
    _write_bytes(out, cut, args.force)
    print(f"{args.input} -> {out}: kept {args.scales} scales, {len(data)} -> {len(cut)} bytes")
    return 0


def cmd_info(args) -> int:
    info = bitstream.describe(_read_input(args.input))
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    print(format_info(info, args.input))
    return 0


def format_info(info: dict, name: str = "") -> str:
    rows = [
        ("file", name), ("format version", info["version"]), ("model fingerprint", info["fingerprint"]),
        ("frame size", f"{info['width']}x{info['height']}"), ("fps", info["fps"]),
        ("frames", info["num_frames"]), ("GOP", f"{info['gop']} frames, {info['num_gops']} GOP(s)"),
        ("latent", "x".join(map(str, info["latent_hw"]))),
        ("scales", f"{info['scales_sent']} of {info['num_scales']} sent"
                   + ("" if info.get("complete", True) else
                      f", complete per GOP: {' '.join(map(str, info['scales_per_gop']))}")),
        ("schedule", " ".join(f"{h}x{w}" for h, w in info["schedule"])),
        ("quantizer / mask", f"{info['quantizer']} / {info['mask']} (window {info['window']})"
                             + ("" if info.get("truncation_safe", True) is not False else
                                f"; not truncation safe: decodes at exactly {info['scales_sent']} scales")),
        ("entropy coder", info["coder"]), ("copy gate", info["copy_gate"]),
        ("size", f"{info['total_bytes']} bytes = header {info['header_bytes']} + table {info['table_bytes']} "
                 f"+ data {sum(info['bytes_per_scale'])}"
                 + (f" + {info['incomplete_bytes']} of chunks cut short" if info.get("incomplete_bytes") else "")),
        ("bpp", f"{info['bpp']:.4f}"),
        ("integrity", info["integrity"]),
    ]
    width = max(len(k) for k, _ in rows)
    lines = [f"{k:<{width}}  {v}" for k, v in rows]
    lines.append("")
    lines.append(f"{'scale':>5} {'size':>9} {'bytes':>8} {'cum. bytes':>10} {'cum. bpp':>9}")
    pixels = info["num_frames"] * info["width"] * info["height"]
    fixed = info["header_bytes"] + info["table_bytes"]
    # header and table of a stream truncated to k scales: header is fixed, table shrinks with k
    cum = 0
    for s, n in enumerate(info["bytes_per_scale"]):
        cum += n
        h, w = info["schedule"][s]
        lines.append(f"{s:>5} {f'{h}x{w}':>9} {n:>8} {cum:>10} {(cum + fixed) * 8 / pixels:>9.4f}")
    lines.append("(cum. bpp counts this stream's header and table; a truncated stream's table is smaller)")
    lines.append("")
    lines.append(f"{'GOP':>5} {'bytes':>8}")
    for g, n in enumerate(info["bytes_per_gop"]):
        lines.append(f"{g:>5} {n:>8}")
    return "\n".join(lines)


def cmd_train(args) -> int:
    try:
        from .training.cli import main as train_main
    except ImportError as e:
        raise UsageError(f"training is not available in this install ({e}); install progvc_lab with its "
                         "training dependencies (see README)") from e
    result = train_main(list(args.rest))
    return result if isinstance(result, int) else 0


def cmd_demo(args) -> int:
    from .evaluate import run_demo

    run_demo(args.model, args.clip, args.out, args.frames, progress=True)
    return 0


def _csv_list(text: str) -> list[str]:
    return [x.strip() for x in text.split(",") if x.strip()]


def cmd_eval(args) -> int:
    from .evaluate import run_eval

    clips = list(args.clip or []) + list(args.clips or [])
    for path in (args.json, args.plot):
        if path and Path(path).exists() and not args.force:
            raise FileExistsError(f"{path} exists; pass --force to replace it")
    run_eval(args.model, clips or None, args.out, args.frames, progress=True,
             samplers=_csv_list(args.samplers), baselines=_csv_list(args.baselines),
             json_path=args.json, plot_path=args.plot, perceptual=args.perceptual, force=args.force,
             lambdas=args.lambdas)
    return 0


def _lambda_list(text: str) -> tuple[float, ...]:
    """``eval --lambdas``: a comma list of RD lambdas >= 0, or 'none'."""
    if text.strip().lower() == "none":
        return ()
    parse = _finite("--lambdas")
    return tuple(parse(x.strip()) for x in text.split(","))


def cmd_bench(args) -> int:
    from . import bench

    clip = args.clip_path or args.clip
    for path in (args.json, args.plot):
        if path and Path(path).exists() and not args.force:
            raise FileExistsError(f"{path} exists; pass --force to replace it")
    if args.plot and (args.scaling or args.variants == "none"):
        raise UsageError("--plot draws the variant comparison: it needs --variants (not none) and no --scaling")
    if args.scaling:
        doc = bench.run_scaling(args.model, clip, frames=tuple(args.scaling_frames), threads=args.threads[-1])
    else:
        from . import bench_variants as bv

        kinds = bv.parse_kinds(args.variants)   # refuse a bad --variants before anything runs
        doc = {}
        if not args.no_speed:
            print("== speed")
            doc = bench.run_bench(args.model, clip, args.threads, args.frames, per_k=not args.no_per_k)
        if kinds:
            print(f"\n== variants: {', '.join(kinds)}")
            variants = bv.run_variants(clip, kinds, base=args.model, models=args.models and _csv_list(args.models),
                                       coders=args.coders and _csv_list(args.coders),
                                       samplers=args.samplers and _csv_list(args.samplers),
                                       frames=args.frames)
            print(bv.format_variants(variants))
            doc = {**doc, "variants": variants} if doc else variants
            if args.plot:
                print(f"wrote {bv.plot_variants(variants, args.plot)}")
    if args.json:
        print(f"wrote {bench.write_json(doc, args.json, force=args.force)}")
    return 0


# ---- parser ------------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog=PROG, description="Progressive generative video compression: encode, truncate, decode, evaluate.",
        epilog="Files given with -o are never replaced without --force. Run 'progvc-lab demo' to start.")
    parser.add_argument("--debug", action="store_true", help="show Python tracebacks on errors")
    parser.add_argument("--trust-class-paths", action="store_true",
                        help="let a model file name stage classes outside progvc_lab that are not registered "
                             "(importing them runs their code: only for model files you made or trust)")
    parser.add_argument("--version", action="version", version=f"{PROG} {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True, parser_class=OneLineParser)
    model_help = ("shipped model name (tiny; variants tiny-lite, tiny-fast, tiny-gate, tiny-var, tiny-infinitystar, "
                  "tiny-sparse-parent, tiny-bsq: see the README) or a .pt file saved with Codec.save (default: tiny)")

    p = sub.add_parser("demo", help="encode a sample clip once, decode every truncation level, plot",
                       description="Encode a clip once and decode every truncation level k = 1..K. Writes "
                                   "rd_curve.png, frames_by_k.png and results.json into --out (the demo's own "
                                   "folder: files of those names there are replaced).")
    p.add_argument("--model", default="tiny", help=model_help)
    p.add_argument("--clip", help="video to use (default: the shipped foreman clip)")
    p.add_argument("--out", default="outputs/demo", help="output folder (default: outputs/demo)")
    p.add_argument("--frames", type=_positive("--frames"), help="use only the first N frames")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("encode", help="video file -> .pgvc stream")
    p.add_argument("input", metavar="IN", help=".y4m (read natively) or .mp4/.mkv/... (read with PyAV)")
    p.add_argument("-o", "--output", required=True, metavar="OUT.pgvc")
    p.add_argument("--model", default="tiny", help=model_help)
    p.add_argument("--gop", type=_positive("--gop"),
                   help="frames per GOP: a key frame every N frames (default: 32 = one intra frame, then P "
                        "frames, a new GOP every 32 frames to bound memory)")
    p.add_argument("--frames", type=_positive("--frames"), help="encode only the first N frames")
    p.add_argument("--lambda", dest="rdo_lambda", type=_finite("--lambda"), metavar="L",
                   help="rate knob: RD-optimised token choice, latent squared error per bit (default 0.005; "
                        "0 = nearest code, the highest quality and rate)")
    p.add_argument("--p-lambda-factor", type=_finite("--p-lambda-factor"), metavar="F",
                   help="P frames choose their tokens with lambda x F, intra frames with lambda (default 1; "
                        "F > 1 spends the bits on the key frame every P frame copies: on a static clip such as "
                        "Akiyo, F = 10 gives -18%% bytes for -0.004 MS-SSIM; on moving clips it costs quality)")
    p.add_argument("--target-bpp", type=_finite("--target-bpp", positive=True), metavar="B",
                   help="search lambda and the number of scales for the best quality within B bits per pixel")
    p.add_argument("--target-bytes", type=_positive("--target-bytes"), metavar="N",
                   help="as --target-bpp, for a file of at most N bytes")
    p.add_argument("--scales", type=_positive("--scales"), metavar="K",
                   help="send only the first K scales (a truncation-safe model: the full stream cut after K; a "
                        "model whose mask is not truncation safe, e.g. var: coded for exactly K scales)")
    p.add_argument("--copy-gate", choices=("auto", "none", "count", "context", "learned"),
                   help="copy-aware probabilities for P frames (default auto = context: 9 counts per scale by "
                        "the neighbours' copies, the smallest measured; count = one per scale; learned = the "
                        "model's per-token correction of the count, for a model with a gate head such as "
                        "tiny-gate; none = off)")
    p.add_argument("--coder", choices=("constriction", "torchac"),
                   help="entropy coder (default: constriction = one range coder per chunk; torchac = one call per block)")
    p.add_argument("--coding-threads", type=_positive("--coding-threads"), metavar="N",
                   help="threads of the coding path, stored in the stream (default 2; 1 is faster on a busy machine)")
    p.add_argument("--verify", action="store_true",
                   help="self-check: decode what was written and compare tokens (about doubles the time)")
    p.add_argument("--no-verify", dest="verify", action="store_false", help=argparse.SUPPRESS)  # the old default
    p.add_argument("--progress", choices=("auto", "on", "off"), default="auto",
                   help="progress bar over frames on stderr (default: auto = when stderr is a terminal)")
    p.add_argument("--force", action="store_true", help="replace OUT if it exists")
    p.set_defaults(func=cmd_encode)

    p = sub.add_parser("decode", help=".pgvc stream -> .y4m or .mp4")
    p.add_argument("input", metavar="IN.pgvc")
    p.add_argument("-o", "--output", required=True, metavar="OUT.y4m|OUT.mp4")
    p.add_argument("--model", default="tiny", help=model_help)
    p.add_argument("--scales", type=_positive("--scales"),
                   help="decode only the first k scales, k >= 1 (default: all the stream carries)")
    p.add_argument("--sampler", choices=("zero", "argmax", "mean", "sample", "copy"), default="zero",
                   help="how to fill scales the stream does not carry (default: zero = no detail; mean = "
                        "expected code; copy = sample, then keep frame t-1's fill in still regions)")
    p.add_argument("--temperature", type=_temperatures, metavar="T[,T1,...]",
                   help="sampler temperature (sample, copy; default: the sampler's measured default, 0.8); "
                        "a comma list gives one per scale, coarse to fine (the last repeats)")
    p.add_argument("--top-k", type=_non_negative("--top-k"),
                   help="keep the k most likely ids (0 = all; default: the sampler's, 20)")
    p.add_argument("--top-p", type=_probability("--top-p"),
                   help="nucleus sampling: keep the fewest most likely ids whose probability reaches P "
                        "(0 < P <= 1; default 1 = off)")
    p.add_argument("--seed", type=int, default=0, help="sampler seed (sample): same seed, same video")
    p.add_argument("--progress", choices=("auto", "on", "off"), default="auto",
                   help="progress bar over frames on stderr (default: auto = when stderr is a terminal)")
    p.add_argument("--strict", action="store_true",
                   help="refuse a cut stream (default: decode every complete scale of every GOP and say what "
                        "was dropped)")
    p.add_argument("--limit", action="append", metavar="NAME=N",
                   help="raise (or lower) a decoder limit: max_pixels (per frame, default 4194304), max_frames "
                        "(65536), max_gop (1024), max_memory_bytes (8 GiB); repeatable")
    p.add_argument("--force", action="store_true", help="replace OUT if it exists")
    p.set_defaults(func=cmd_decode)

    p = sub.add_parser("truncate", help="keep the first k scales of a stream (no re-encoding)")
    p.add_argument("input", metavar="IN.pgvc")
    p.add_argument("-o", "--output", required=True, metavar="OUT.pgvc")
    p.add_argument("--scales", type=_positive("--scales"), required=True, help="scales to keep (at least 1)")
    p.add_argument("--force", action="store_true", help="replace OUT if it exists")
    p.set_defaults(func=cmd_truncate)

    p = sub.add_parser("info", help="header fields and bytes per scale and per GOP")
    p.add_argument("input", metavar="IN.pgvc")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("train", help="train a model (progvc_lab.training.cli); arguments pass through",
                       add_help=False)
    p.add_argument("rest", nargs=argparse.REMAINDER)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("eval", help="ours vs x264/x265: RD points, BD-rates, perceptual metrics, JSON + plots",
                       description="Encode each clip once, decode every truncation level k from its real bytes "
                                   "(per sampler), run x264/x265 over a CRF ladder spanning our rates, score every "
                                   "decode with the same metrics (PSNR-Y/RGB/YUV, MS-SSIM, ST-LPIPS, GMSD, texture), "
                                   "and report BD-rates, quality gaps at equal rate and speeds.")
    p.add_argument("clip", nargs="*", metavar="CLIP",
                   help="clips (.y4m; default: the shipped data/*.y4m and ../shared/data/clips/*.y4m if present)")
    p.add_argument("--clips", nargs="+", metavar="PATH", help=argparse.SUPPRESS)  # the older spelling
    p.add_argument("--model", default="tiny", help=model_help)
    p.add_argument("--samplers", default="zero",
                   help="comma-separated detail samplers for the unsent scales: zero,argmax,sample,mean,copy "
                        "(default: zero)")
    p.add_argument("--baselines", default="x264,x265",
                   help="comma-separated baselines: x264,x265 (default), or 'none'")
    p.add_argument("--lambdas", type=_lambda_list, default=None, metavar="L1,L2,...|none",
                   help="also encode the full pyramid at each of these RD lambdas (encode --lambda; the rate "
                        "knob between truncation levels) and report that curve too (default: 0,0.002,0.01,0.02,"
                        "0.05,0.1; 'none' = the truncation ladder only)")
    p.add_argument("--json", metavar="OUT.json", help="write the whole evaluation (CompressAI-style entries + summary)")
    p.add_argument("--plot", metavar="OUT.png", help="write the RD plots (log bpp; PSNR-Y, MS-SSIM, ST-LPIPS)")
    p.add_argument("--out", default="outputs/eval",
                   help="folder for eval.json, rd.png and one CompressAI JSON per clip and codec "
                        "(default: outputs/eval; the tool's own folder, replaced on every run)")
    p.add_argument("--frames", type=_positive("--frames"), help="use only the first N frames of each clip")
    p.add_argument("--no-perceptual", dest="perceptual", action="store_false",
                   help="skip ST-LPIPS and GMSD (e.g. without the stlpips-pytorch weights)")
    p.add_argument("--force", action="store_true", help="replace --json / --plot files that exist")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("bench", help="encode/decode frames/s, where the time goes, scaling with frames and size",
                       description="Times encode (with and without --verify) and decode at every k, splits the "
                                   "time by stage, and prints the real-time factor; then compares every shipped "
                                   "variant (masks, quantizers, coders, samplers: bits per token per scale against "
                                   "the unigram, estimated and actual bpp at every k, attention pairs, frames/s, "
                                   "coder overhead, sampler quality at equal bytes). --scaling instead measures time "
                                   "per frame and peak memory for 30/100/300 frames and QCIF..CIF, each in a fresh "
                                   "process (streamed encode and decode, as the CLI does).")
    p.add_argument("clip_path", nargs="?", metavar="CLIP", help="video to time (default: the shipped foreman clip)")
    p.add_argument("--clip", help=argparse.SUPPRESS)  # the older spelling
    p.add_argument("--model", default="tiny", help=model_help)
    p.add_argument("--threads", type=_positive("--threads"), nargs="+", default=[1, 2],
                   help="thread counts to time (default: 1 2; --scaling uses the last)")
    p.add_argument("--frames", type=_positive("--frames"), help="use only the first N frames")
    p.add_argument("--no-per-k", action="store_true", help="skip the decode at every k < K")
    p.add_argument("--scaling", action="store_true", help="time and peak memory against frames and frame size")
    p.add_argument("--scaling-frames", type=_positive("--scaling-frames"), nargs="+", default=[30, 100, 300],
                   help="frame counts for --scaling (default: 30 100 300)")
    p.add_argument("--variants", default="all", metavar="KINDS",
                   help="compare the shipped variants: all (default), none, or a comma list of masks, "
                        "quantizers, coders, samplers")
    p.add_argument("--models", metavar="A,B", help="only these models among the mask and quantizer variants "
                                                    "(shipped names or .pt files)")
    p.add_argument("--coders", metavar="A,B", help="only these entropy coders (default: every registered one)")
    p.add_argument("--samplers", metavar="A,B", help="only these detail samplers (default: all)")
    p.add_argument("--no-speed", action="store_true", help="skip the speed part (thread counts, split by stage)")
    p.add_argument("--json", metavar="OUT.json", help="also write the numbers as JSON")
    p.add_argument("--plot", metavar="OUT.png", help="also draw the variant comparison")
    p.add_argument("--force", action="store_true", help="replace --json / --plot if they exist")
    p.set_defaults(func=cmd_bench)
    return parser


def _version() -> str:
    from . import __version__  # the one version number (pyproject.toml reads it from there)

    return __version__


def _user_errors() -> tuple[type, ...]:
    """Errors this project raises on purpose about the user's input (never a bug's symptom)."""
    errors = [UsageError, BitstreamError, OSError]  # OSError: missing, unreadable, disk full, ...
    for module, name in (("progvc_lab.codec", "CodecError"), ("progvc_lab.data", "VideoFormatError"),
                         ("progvc_lab.checkpoint", "CheckpointError"),
                         ("progvc_lab.bench_variants", "VariantError")):
        mod = sys.modules.get(module)  # only if loaded: `info` must not import torch
        if mod is not None:
            errors.append(getattr(mod, name))
    return tuple(errors)


_PACKAGE_DIR = str(Path(__file__).resolve().parent)


def _is_user_error(e: BaseException) -> bool:
    """A project error type, or a plain ValueError raised by this package's own code (a check with a
    message); a ValueError from inside torch or numpy is a bug and keeps its traceback."""
    if isinstance(e, _user_errors()):
        return True
    if type(e) is ValueError and e.__traceback__ is not None:
        tb = e.__traceback__
        while tb.tb_next is not None:
            tb = tb.tb_next
        return str(Path(tb.tb_frame.f_code.co_filename).resolve()).startswith(_PACKAGE_DIR)
    return False


def _message(e: BaseException, args) -> str:
    msg = str(e) or type(e).__name__
    if isinstance(e, OSError) and e.filename and str(e.filename) not in msg:
        msg = f"{e.filename}: {msg}"
    name = getattr(args, "input", None)
    if isinstance(name, str) and name not in msg and (isinstance(e, BitstreamError) or type(e) is ValueError):
        msg = f"{name}: {msg}"  # every error names the file it is about
    return " ".join(msg.split("\n")[0].split()) if "\n" in msg else msg


@contextlib.contextmanager
def _trusting(trust: bool):
    """``--trust-class-paths`` for this call only (``evaluate.TRUST_CLASS_PATHS``, restored after)."""
    if not trust:
        yield
        return
    from . import evaluate   # imports torch: only when asked (info and truncate must not)

    old, evaluate.TRUST_CLASS_PATHS = evaluate.TRUST_CLASS_PATHS, True
    try:
        yield
    finally:
        evaluate.TRUST_CLASS_PATHS = old


def _show_warning(message, category, filename, lineno, file=None, line=None):
    print(f"{PROG}: warning: {message}", file=sys.stderr)


def _stdout_closed() -> int:
    """stdout's reader went away (``progvc-lab info --json | head``): stop quietly, no traceback.
    Exit status 141 = 128 + SIGPIPE, what a shell reports for a tool stopped by a closed pipe."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # Python's final flush must not fail again
    except (OSError, ValueError):
        pass
    return 141


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``progvc-lab``. Returns the exit status (0; 2 for a user error; 141 when the
    output pipe was closed early)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    i = argv.index("train") if "train" in argv else -1
    if i >= 0 and all(a == "--debug" for a in argv[:i]):
        # everything after `train` belongs to the training CLI, including --help
        args = argparse.Namespace(debug=bool(argv[:i]), func=cmd_train, rest=argv[i + 1:])
    else:
        args = parser.parse_args(argv)
    with warnings.catch_warnings(), _trusting(getattr(args, "trust_class_paths", False)):
        warnings.showwarning = _show_warning
        try:
            rc = args.func(args)
            sys.stdout.flush()
            return rc
        except KeyboardInterrupt:
            print(f"{PROG}: interrupted", file=sys.stderr)
            return 130
        except BrokenPipeError:
            return _stdout_closed()
        except MemoryError as e:
            if args.debug:
                raise
            print(f"{PROG}: error: out of memory{f' ({e})' if str(e) else ''}; try fewer frames (--frames) "
                  "or a smaller video", file=sys.stderr)
            return 2
        except Exception as e:
            if args.debug:
                raise
            if not _is_user_error(e):
                print(f"{PROG}: internal error (a bug, not a problem with your input; please report it with "
                      "the traceback below)", file=sys.stderr)
                raise
            print(f"{PROG}: error: {_message(e, args)}", file=sys.stderr)
            return 2


if __name__ == "__main__":
    sys.exit(main())
