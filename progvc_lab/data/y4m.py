"""Read and write YUV4MPEG2 (``.y4m``) files: the raw video format of the test-sequence world.

A y4m file is a one-line text header followed by frames::

    YUV4MPEG2 W176 H144 F30000:1001 Ip A1:1 C420jpeg\\n      <- header: tags separated by spaces
    FRAME\\n <Y plane: H*W bytes> <U: H/2*W/2> <V: H/2*W/2>   <- frame 0 (planar 8-bit YUV 4:2:0)
    FRAME\\n ...                                              <- frame 1, ...

Header tags: ``W`` width, ``H`` height, ``F`` frame rate ``num:den``, ``I`` interlacing (``p``
progressive, ``t``/``b`` top/bottom field first, ``m`` mixed), ``A`` pixel aspect ``n:d``, ``C``
colour space / chroma layout, ``X`` free-form extensions (ffmpeg writes e.g. ``XYSCSS=420JPEG``).

What this module accepts (everything else is a :class:`VideoFormatError` that says what to do):

- 8-bit 4:2:0: ``C420jpeg``, ``C420mpeg2``, ``C420paldv``, ``C420`` and a missing ``C`` tag (the
  spec's default, 420jpeg). The three 420 variants differ only in where chroma samples sit
  relative to luma; the bytes are laid out identically, so they are read as they are.
- ``C444`` is **converted on read**: each chroma plane is average-pooled over 2x2 blocks (rounded
  to the nearest integer) to give 4:2:0; ``C422`` likewise over vertical pairs.
- ``Cmono`` is **converted on read**: U and V are filled with 128 (neutral grey chroma); an odd
  width or height is cropped by one pixel to make 4:2:0 possible.
- More than 8 bits (``C420p10``, ``C422p12``, ``C444p16``, ``Cmono16``, ...: little-endian 16-bit
  samples) is **converted on read** to 8 bits (rounded: ``(v + 2^(b-9)) >> (b-8)``).
- Every conversion is announced once per file with a ``UserWarning`` (the CLI prints it as a note).
- Frame sides from 2 (mono: 2 after the odd-side crop) up to ``MAX_SIDE`` (16384, the .pgvc limit);
  anything else is refused before any frame is read.
- Progressive (``Ip``), unknown (``I?``) or missing ``I`` tag. Interlaced material is refused.
- Odd width or height with 4:2:0 or 4:4:4 chroma is refused (4:2:0 halves both sides).

Everything is returned as numpy ``uint8`` planes: ``y`` (T, H, W), ``u``/``v`` (T, H/2, W/2).
Reading is one ``read`` + ``np.frombuffer`` + a strided view, so a QCIF clip loads in milliseconds.
A file whose last frame is incomplete (a truncated copy) is refused, and the message says how
many complete frames it holds (pass ``max_frames`` to read just those).
"""

from __future__ import annotations

import os
import re
import warnings
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import numpy as np

MAGIC = b"YUV4MPEG2"
FRAME_MAGIC = b"FRAME"
FFMPEG_HINT = "convert it with: ffmpeg -i in.y4m -pix_fmt yuv420p out.y4m"
NATIVE_420 = ("420jpeg", "420mpeg2", "420paldv", "420")
MAX_HEADER_BYTES = 4096  # a real header is ~50 bytes; anything longer is not a y4m header
MAX_SIDE = 1 << 14       # pixels per side, the same limit as a .pgvc header (bitstream.MAX_SIDE)
_CHROMA = re.compile(r"^(420jpeg|420mpeg2|420paldv|420|422|444|mono)(?:p?(9|10|12|14|16))?$")


class VideoFormatError(ValueError):
    """A video file that cannot be read as it is. The message names the file and what to do."""


@dataclass
class Y4MVideo:
    """The planes and header fields of a y4m file (always 8-bit 4:2:0 after reading)."""

    y: np.ndarray  # (T, H, W) uint8
    u: np.ndarray  # (T, H/2, W/2) uint8
    v: np.ndarray  # (T, H/2, W/2) uint8
    width: int
    height: int
    fps: Fraction
    chroma: str = "420jpeg"  # the C tag found in the file ("444"/"mono" were converted to 420)
    interlace: str = "p"
    aspect: str = "1:1"
    extensions: list[str] = field(default_factory=list)  # X tags, without the leading "X"

    @property
    def num_frames(self) -> int:
        return int(self.y.shape[0])


@dataclass
class Y4MHeader:
    width: int
    height: int
    fps: Fraction
    chroma: str
    interlace: str
    aspect: str
    extensions: list[str]
    header_bytes: int  # length of the header line including its "\n"
    bits: int = 8      # bits per sample in the file (converted to 8 on read)

    @property
    def layout(self) -> str:
        """'420', '422', '444' or 'mono': how chroma is stored."""
        return "420" if self.chroma.startswith("420") else _CHROMA.match(self.chroma).group(1)


def _parse_header(line: bytes, path: Path) -> Y4MHeader:
    if not line.startswith(MAGIC):
        raise VideoFormatError(
            f"{path}: not a YUV4MPEG2 file (it does not start with 'YUV4MPEG2'). "
            f"If it is another video format, read it with progvc_lab.data.read_video, or "
            f"convert it with: ffmpeg -i {path.name} -pix_fmt yuv420p out.y4m"
        )
    if not line.endswith(b"\n"):
        raise VideoFormatError(f"{path}: the YUV4MPEG2 header line has no end (file truncated?).")
    tags = line[len(MAGIC):].decode("ascii", errors="replace").split()
    width = height = None
    fps, chroma, interlace, aspect, extensions = None, "420jpeg", "p", "1:1", []
    for tag in tags:
        key, value = tag[0], tag[1:]
        try:
            if key == "W":
                width = int(value)
            elif key == "H":
                height = int(value)
            elif key == "F":
                num, den = value.split(":")
                fps = Fraction(int(num), int(den))
            elif key == "I":
                interlace = value
            elif key == "A":
                aspect = value
            elif key == "C":
                chroma = value
            elif key == "X":
                extensions.append(value)
            else:
                raise VideoFormatError(f"{path}: unknown y4m header tag {tag!r}.")
        except (ValueError, ZeroDivisionError) as err:
            if isinstance(err, VideoFormatError):
                raise
            raise VideoFormatError(f"{path}: cannot parse y4m header tag {tag!r} ({err}).") from None
    if width is None or height is None or width <= 0 or height <= 0:
        raise VideoFormatError(f"{path}: the y4m header lacks a valid W (width) or H (height) tag.")
    if fps is None or fps <= 0:
        raise VideoFormatError(f"{path}: the y4m header lacks a valid F (frame rate) tag, e.g. F30000:1001.")
    if interlace not in ("p", "?"):
        raise VideoFormatError(
            f"{path}: interlaced y4m (tag I{interlace}) is not supported; deinterlace it first, "
            f"e.g. ffmpeg -i in.y4m -vf yadif -pix_fmt yuv420p out.y4m"
        )
    match = _CHROMA.match(chroma)
    if match is None or (chroma.startswith("mono") and match.group(2) not in (None, "16")):
        raise VideoFormatError(
            f"{path}: y4m colour space C{chroma} is not supported (4:2:0, 4:2:2, 4:4:4 or mono, 8 to 16 "
            f"bits); convert it with: ffmpeg -i {path.name} -pix_fmt yuv420p out.y4m"
        )
    bits = int(match.group(2) or 8)
    if width > MAX_SIDE or height > MAX_SIDE:
        raise VideoFormatError(f"{path}: frame size {width}x{height} exceeds the limit of {MAX_SIDE} pixels "
                               f"per side; scale it down, e.g. ffmpeg -i {path.name} -vf scale=1920:-2 out.y4m")
    if min(width, height) < 2:
        raise VideoFormatError(f"{path}: frame size {width}x{height} is too small; the codec needs at least "
                               f"2x2 pixels")
    if not chroma.startswith("mono") and (width % 2 or height % 2):
        raise VideoFormatError(
            f"{path}: frame size {width}x{height} has an odd side, which 4:2:0 chroma cannot split in "
            f"half; crop it to even size, e.g. ffmpeg -i in.y4m -vf crop=trunc(iw/2)*2:trunc(ih/2)*2 "
            f"-pix_fmt yuv420p out.y4m"
        )
    return Y4MHeader(width, height, fps, chroma, interlace, aspect, extensions, len(line), bits)


def _plane_bytes(header: Y4MHeader) -> tuple[int, int]:
    """(luma bytes, bytes of ONE chroma plane) per frame as stored in the file."""
    luma = header.width * header.height
    size = 1 if header.bits == 8 else 2
    chroma = {"mono": 0, "444": luma, "422": luma // 2, "420": luma // 4}[header.layout]
    return luma * size, chroma * size


def read_y4m_header(path: str | os.PathLike) -> Y4MHeader:
    """Parse only the header line of a y4m file (cheap: reads at most 4 KiB)."""
    path = Path(path)
    with open(path, "rb") as f:
        line = f.readline(MAX_HEADER_BYTES)
    return _parse_header(line, path)


def read_y4m(path: str | os.PathLike, max_frames: int | None = None) -> Y4MVideo:
    """Read a y4m file into uint8 planes ``y`` (T, H, W), ``u`` and ``v`` (T, H/2, W/2).

    ``max_frames`` reads only the first frames (the rest of the file is not even loaded).
    4:4:4 chroma is average-pooled to 4:2:0 and mono gets chroma = 128 (see the module docstring).
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    with open(path, "rb") as f:
        line = f.readline(MAX_HEADER_BYTES)
        header = _parse_header(line, path)
        luma, chroma = _plane_bytes(header)
        frame_payload = luma + 2 * chroma
        # Fast path: every frame header is exactly "FRAME\n" (no per-frame parameters), so frames
        # sit at a fixed stride and the whole file is one strided array.
        stride = len(FRAME_MAGIC) + 1 + frame_payload
        data = bytearray(f.read() if max_frames is None else f.read(stride * max_frames))
    buf = np.frombuffer(data, dtype=np.uint8)  # a bytearray: the planes are writable arrays
    num_full = len(buf) // stride
    frames = buf[: num_full * stride].reshape(num_full, stride)
    if num_full and np.all(frames[:, :6] == np.frombuffer(b"FRAME\n", np.uint8)):
        payload = frames[:, 6:]
        leftover = len(buf) - num_full * stride
    else:  # slow path: frame headers carry parameters ("FRAME Ixx\n"); walk them one by one
        if max_frames is not None:  # longer frame headers: the bytes read above may cut a frame
            with open(path, "rb") as f:
                data = bytearray(f.read()[header.header_bytes:])
        payload, leftover = _walk_frames(data, frame_payload, path)
        if max_frames is not None and len(payload) >= max_frames:
            payload, leftover = payload[:max_frames], 0
    if leftover:
        raise VideoFormatError(
            f"{path}: the file ends inside frame {len(payload)} (truncated?): it holds "
            f"{len(payload)} complete frames and {leftover} extra bytes. Read the complete frames "
            f"with read_y4m(path, max_frames={len(payload)}) or re-create the file."
        )
    if len(payload) == 0:
        raise VideoFormatError(f"{path}: the y4m file holds no complete frame.")
    T, H, W = len(payload), header.height, header.width
    if header.bits > 8:  # little-endian 16-bit samples -> 8 bits, rounded
        shift = header.bits - 8
        wide = payload.view("<u2").astype(np.uint32)
        payload = np.minimum((wide + (1 << (shift - 1))) >> shift, 255).astype(np.uint8)
        luma, chroma = luma // 2, chroma // 2
    layout = header.layout
    y = payload[:, :luma].reshape(T, H, W)
    if layout == "mono":
        u = np.full((T, H // 2, W // 2), 128, np.uint8)
        v = u.copy()
        y = y[:, : H // 2 * 2, : W // 2 * 2]  # mono may have odd sides; 420 needs even ones
    elif layout == "444":
        u = _pool_chroma(payload[:, luma: luma + chroma].reshape(T, H, W))
        v = _pool_chroma(payload[:, luma + chroma:].reshape(T, H, W))
    elif layout == "422":
        u = _pool_rows(payload[:, luma: luma + chroma].reshape(T, H, W // 2))
        v = _pool_rows(payload[:, luma + chroma:].reshape(T, H, W // 2))
    else:
        u = payload[:, luma: luma + chroma].reshape(T, H // 2, W // 2)
        v = payload[:, luma + chroma:].reshape(T, H // 2, W // 2)
    notes = []
    if layout != "420":
        notes.append({"mono": "mono (grey chroma added", "444": "4:4:4 chroma (averaged over 2x2",
                      "422": "4:2:2 chroma (averaged over row pairs"}[layout]
                     + (", odd side cropped)" if y.shape[1:] != (H, W) else ")") + " converted to 4:2:0")
    if header.bits > 8:
        notes.append(f"{header.bits}-bit samples rounded to 8 bits")
    if notes:
        warnings.warn(f"{path}: " + "; ".join(notes), UserWarning, stacklevel=2)
    return Y4MVideo(
        y=np.ascontiguousarray(y), u=np.ascontiguousarray(u), v=np.ascontiguousarray(v),
        width=y.shape[2], height=y.shape[1], fps=header.fps, chroma=header.chroma,
        interlace=header.interlace, aspect=header.aspect, extensions=header.extensions,
    )


def _pool_chroma(c_THW: np.ndarray) -> np.ndarray:
    """4:4:4 -> 4:2:0 chroma: mean of each 2x2 block, rounded half up."""
    T, H, W = c_THW.shape
    blocks = c_THW.reshape(T, H // 2, 2, W // 2, 2).astype(np.uint16).sum(axis=(2, 4))
    return ((blocks + 2) // 4).astype(np.uint8)


def _pool_rows(c_THW: np.ndarray) -> np.ndarray:
    """4:2:2 -> 4:2:0 chroma: mean of each vertical pair, rounded half up."""
    T, H, W = c_THW.shape
    pairs = c_THW.reshape(T, H // 2, 2, W).astype(np.uint16).sum(axis=2)
    return ((pairs + 1) // 2).astype(np.uint8)


def _walk_frames(data: bytes, frame_payload: int, path: Path) -> tuple[np.ndarray, int]:
    frames, pos = [], 0
    while pos < len(data):
        end = data.find(b"\n", pos, pos + MAX_HEADER_BYTES)
        if not data.startswith(FRAME_MAGIC, pos) or end < 0:
            if end < 0 and data.startswith(FRAME_MAGIC[: len(data) - pos], pos):
                break  # truncated inside a frame header
            raise VideoFormatError(
                f"{path}: frame {len(frames)} does not start with 'FRAME' (corrupt file?)."
            )
        if end + 1 + frame_payload > len(data):
            break
        frames.append(np.frombuffer(data, np.uint8, frame_payload, end + 1))
        pos = end + 1 + frame_payload
    leftover = len(data) - pos
    out = np.stack(frames) if frames else np.zeros((0, frame_payload), np.uint8)
    return out, leftover


def write_y4m(
    path: str | os.PathLike,
    y: np.ndarray,
    u: np.ndarray,
    v: np.ndarray,
    fps: Fraction | float | int | str,
    overwrite: bool = False,
) -> Path:
    """Write 8-bit 4:2:0 planes as ``YUV4MPEG2 W.. H.. F.. Ip A1:1 C420jpeg``.

    ``y`` is (T, H, W) uint8, ``u``/``v`` are (T, H/2, W/2) uint8. Refuses to replace an existing
    file unless ``overwrite=True``. ``fps`` may be a Fraction, a number or a ``"num:den"`` string.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} already exists; pass overwrite=True to replace it.")
    y, u, v = (np.asarray(p) for p in (y, u, v))
    if y.ndim == 2:
        y, u, v = y[None], u[None], v[None]
    if y.ndim != 3 or any(p.dtype != np.uint8 for p in (y, u, v)):
        raise ValueError(f"write_y4m: planes must be uint8 arrays (T, H, W); got y {y.shape} {y.dtype}.")
    T, H, W = y.shape
    if H % 2 or W % 2:
        raise ValueError(f"write_y4m: frame size {W}x{H} has an odd side; 4:2:0 needs even sizes (crop first).")
    if u.shape != (T, H // 2, W // 2) or v.shape != u.shape:
        raise ValueError(f"write_y4m: chroma planes must be {(T, H // 2, W // 2)}, got {u.shape} and {v.shape}.")
    fps = _as_fraction(fps)
    header = f"YUV4MPEG2 W{W} H{H} F{fps.numerator}:{fps.denominator} Ip A1:1 C420jpeg\n".encode()
    frame_magic = np.broadcast_to(np.frombuffer(b"FRAME\n", np.uint8), (T, 6))
    body = np.concatenate([frame_magic, y.reshape(T, -1), u.reshape(T, -1), v.reshape(T, -1)], axis=1)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        f.write(header)
        f.write(np.ascontiguousarray(body).tobytes())
    return path


def _as_fraction(fps) -> Fraction:
    if isinstance(fps, str) and ":" in fps:
        num, den = fps.split(":")
        fps = Fraction(int(num), int(den))
    fps = Fraction(fps).limit_denominator(1_000_000)
    if fps <= 0:
        raise ValueError(f"frame rate must be positive, got {fps}")
    return fps
