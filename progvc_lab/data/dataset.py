"""Training data: video files and still photos, cached as an Arrow dataset, served as random crops.

::

    sources (y4m / mp4 / ... files, image folders)
        │  build_clip_cache: decode once, one row per frame, uint8 RGB bytes
        ▼
    Arrow dataset on disk  (.cache/datasets/<hash of sources + file sizes/mtimes + options>/)
        │  ClipDataset: pick a window of clip_len consecutive frames of one video,
        │               or animate a still photo with camera_motion_clip; random crop + flip
        ▼
    (clip_len, 3, crop_h, crop_w) float32 in [0, 1]

**Storage choice.** Sources come in many frame sizes (QCIF, 416x240, 768x512 photos, ...). Arrow's
``Array4D`` needs a fixed size for all but the first axis, so instead each row holds ONE frame as
raw bytes plus its shape: columns ``source`` (file path), ``kind`` ("video" or "image"),
``frame_index``, ``height``, ``width``, ``pixels`` (H*W*3 uint8 bytes, RGB). The frames of a video
are consecutive rows, so a clip is one slice ``ds[start:start + clip_len]``. Because windows are
cut when sampling, one cache serves every ``clip_len``. The dataset is written with
``datasets.Dataset.from_generator`` (so a large folder never sits in memory) and ``save_to_disk``
under a key hashed from the resolved file list, each file's size and mtime and the options; the
same sources load the existing cache (memory-mapped) instead of decoding again.

``datasets`` runs offline here: ``HF_DATASETS_OFFLINE=1`` and ``HF_HUB_OFFLINE=1`` are set when this
module is imported, unless you set them yourself. ``load_hub_dataset`` is the ``load_dataset``
path for image datasets by hub name (which needs a network) or by local path (parquet files, a
data folder, or a ``save_to_disk`` folder); it returns rows in the same layout.

Split by **source file** (:func:`split_by_source`): a file's frames are all in train or all in
validation, never both.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Iterable, Iterator, Sequence

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import datasets  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from einops import rearrange  # noqa: E402

from .synthetic import MOTIONS, camera_motion_clip, synthetic_clip  # noqa: E402
from .video import VIDEO_EXTENSIONS, read_video_uint8  # noqa: E402
from .y4m import VideoFormatError  # noqa: E402

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
CACHE_FORMAT_VERSION = 1
FEATURES = datasets.Features(
    {
        "source": datasets.Value("string"),
        "kind": datasets.Value("string"),  # "video" or "image"
        "frame_index": datasets.Value("int32"),
        "height": datasets.Value("int32"),
        "width": datasets.Value("int32"),
        "pixels": datasets.Value("binary"),  # H*W*3 uint8, RGB, row-major
    }
)


def list_media_files(sources: Iterable[str | os.PathLike], warn_missing: bool = True) -> list[Path]:
    """Expand files and folders (recursively) into a sorted list of video and image files.

    Missing paths are skipped with a warning (e.g. ``../shared`` is absent in a user's clone).
    """
    files: list[Path] = []
    for source in sources:
        path = Path(source).expanduser()
        if not path.exists():
            if warn_missing:
                warnings.warn(f"data source {path} does not exist; skipping it", stacklevel=2)
            continue
        candidates = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        for p in candidates:
            if p.suffix.lower() in VIDEO_EXTENSIONS + IMAGE_EXTENSIONS:
                files.append(p.resolve())
    return sorted(dict.fromkeys(files))  # de-duplicate, keep a stable order


def read_image(path: str | os.PathLike) -> np.ndarray:
    """An image file -> uint8 RGB (H, W, 3) (through PIL, which matplotlib brings along)."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            return np.asarray(img.convert("RGB"), dtype=np.uint8).copy()
    except (OSError, ValueError) as err:
        raise VideoFormatError(f"{path}: cannot read this image ({err}).") from None


def _resize_max_side(frames_THW3: np.ndarray, max_side: int | None) -> np.ndarray:
    if max_side is None or max(frames_THW3.shape[1:3]) <= max_side:
        return frames_THW3
    H, W = frames_THW3.shape[1:3]
    scale = max_side / max(H, W)
    size = (max(1, round(H * scale)), max(1, round(W * scale)))
    x = rearrange(torch.from_numpy(frames_THW3), "t h w c -> t c h w").float()
    x = F.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False)
    return rearrange(x.round().clamp(0, 255).to(torch.uint8), "t c h w -> t h w c").contiguous().numpy()


def _frame_rows(files: Sequence[str], max_frames_per_source: int | None, max_side: int | None) -> Iterator[dict]:
    for name in files:
        path = Path(name)
        if path.suffix.lower() in IMAGE_EXTENSIONS:
            kind, frames = "image", read_image(path)[None]
        else:
            kind, (frames, _) = "video", read_video_uint8(path, max_frames=max_frames_per_source)
        frames = _resize_max_side(frames, max_side)
        for t, frame in enumerate(frames):
            yield {
                "source": str(path), "kind": kind, "frame_index": t,
                "height": frame.shape[0], "width": frame.shape[1], "pixels": frame.tobytes(),
            }


def cache_key(files: Sequence[Path], **options) -> str:
    """Hash of the file list (with sizes and mtimes) and the options: the cache folder name."""
    entries = [(str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in files]
    blob = json.dumps({"files": entries, "options": options, "version": CACHE_FORMAT_VERSION}, sort_keys=True)
    return hashlib.sha1(blob.encode()).hexdigest()[:16]


def build_clip_cache(
    sources: Iterable[str | os.PathLike],
    cache_dir: str | os.PathLike = ".cache/datasets",
    max_frames_per_source: int | None = None,
    max_side: int | None = None,
) -> datasets.Dataset:
    """Decode every video and image under ``sources`` into an Arrow dataset (one row per frame).

    Reuses ``cache_dir/<key>`` when the same files (same sizes and mtimes) and options were
    cached before. ``max_side`` down-scales frames whose longer side is larger (antialiased).
    Raises ValueError if no usable file is found.
    """
    files = list_media_files(sources)
    if not files:
        raise ValueError(f"build_clip_cache: no video or image files found in {list(map(str, sources))}")
    options = {"max_frames_per_source": max_frames_per_source, "max_side": max_side}
    target = Path(cache_dir) / f"frames-{cache_key(files, **options)}"
    if (target / "dataset_info.json").exists():
        return datasets.load_from_disk(str(target))
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".build-") as tmp:
        ds = datasets.Dataset.from_generator(
            _frame_rows,
            features=FEATURES,
            gen_kwargs={"files": [str(p) for p in files], **options},
            cache_dir=str(Path(tmp) / "hf"),
        )
        staging = Path(tmp) / "dataset"
        ds.save_to_disk(str(staging))
        (staging / "sources.json").write_text(json.dumps({"files": [str(p) for p in files], **options}, indent=1))
        del ds
        try:
            os.replace(staging, target)  # atomic: a half-written cache is never picked up
        except OSError:  # another process finished the same cache first
            if not (target / "dataset_info.json").exists():
                raise
    return datasets.load_from_disk(str(target))


def frames_dataset_from_clips(clips: dict[str, torch.Tensor | np.ndarray]) -> datasets.Dataset:
    """An in-memory dataset in the cache layout from ``{name: clip}`` (T, 3, H, W) float or (T, H, W, 3) uint8."""
    rows: dict[str, list] = {k: [] for k in FEATURES}
    for name, clip in clips.items():
        clip = torch.as_tensor(clip)
        if clip.is_floating_point():
            clip = rearrange((clip.clamp(0, 1) * 255).round().to(torch.uint8), "t c h w -> t h w c")
        arr = clip.contiguous().numpy()
        for t, frame in enumerate(arr):
            for key, value in zip(FEATURES, (name, "video" if len(arr) > 1 else "image", t, *frame.shape[:2], frame.tobytes())):
                rows[key].append(value)
    return datasets.Dataset.from_dict(rows, features=FEATURES)


def synthetic_frames_dataset(num_clips: int = 8, num_frames: int = 16, height: int = 96, width: int = 96, seed: int = 0) -> datasets.Dataset:
    """Synthetic clips (shapes and pans) in the cache layout: a fallback when no files are at hand."""
    clips = {
        f"synthetic/{kind}-{seed + i}": synthetic_clip(num_frames, height, width, seed=seed + i, kind=kind)
        for i in range(num_clips)
        for kind in (("shapes", "pan")[i % 2],)
    }
    return frames_dataset_from_clips(clips)


def split_by_source(ds: datasets.Dataset, val_fraction: float = 0.1, seed: int = 0) -> tuple[datasets.Dataset, datasets.Dataset]:
    """Split rows into (train, val) by source file: no file contributes to both.

    At least one source goes to each side when there are two or more sources.
    """
    sources = sorted(set(ds["source"]))
    if len(sources) < 2:
        raise ValueError(f"split_by_source: need at least 2 source files to split, got {sources}")
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(sources))
    num_val = min(len(sources) - 1, max(1, round(val_fraction * len(sources))))
    val_sources = {sources[i] for i in order[:num_val]}
    is_val = np.array([s in val_sources for s in ds["source"]])
    return ds.select(np.flatnonzero(~is_val)), ds.select(np.flatnonzero(is_val))


class ClipDataset(torch.utils.data.Dataset):
    """Random crops ``(clip_len, 3, crop_h, crop_w)`` float32 in [0, 1] from a frames dataset.

    Items: a window of ``clip_len`` frames every ``max(clip_len, 8)`` frames of each video
    (a video shorter than ``clip_len`` is played forwards then backwards to fill it), plus every
    still photo, animated with :func:`camera_motion_clip` (a motion drawn from ``still_motions``:
    pan, zoom, hand-held "random", or "static"; after a random down-scale by
    ``still_scale_range``). ``clip_len=1`` gives single frames for
    stage-1 training. Frames smaller than the crop are up-scaled (bilinear) to cover it.

    ``samples_per_epoch`` sets ``len()``; each index then draws a random item. ``deterministic=True``
    makes sample ``i`` a function of ``(seed, i)`` only (validation); otherwise sample ``i`` is drawn
    from a generator seeded with ``(a draw from torch's RNG, rank, i)``: torch's RNG makes runs
    repeatable under ``lightning.seed_everything`` and different at every epoch, and the **rank**
    (``rank``, else the initialised process group's, else ``$RANK``) keeps the processes of a DDP
    run apart: seed_everything gives every rank the same torch RNG, so without it two ranks
    would crop the same windows at every step.
    """

    def __init__(
        self,
        frames: datasets.Dataset,
        clip_len: int = 8,
        crop_size: tuple[int, int] = (64, 64),
        samples_per_epoch: int | None = None,
        deterministic: bool = False,
        seed: int = 0,
        flip: bool = True,
        still_scale_range: tuple[float, float] = (0.4, 1.0),
        still_motions: Sequence[str] = ("pan", "zoom", "random"),
        rank: int | None = None,
    ):
        self.frames = frames
        self.rank = rank
        self.clip_len, self.crop_size = int(clip_len), tuple(int(c) for c in crop_size)
        self.samples_per_epoch, self.deterministic, self.seed = samples_per_epoch, deterministic, seed
        self.flip, self.still_scale_range = flip, still_scale_range
        self.still_motions = tuple(still_motions)
        bad = [m for m in self.still_motions if m not in MOTIONS]
        if bad or not self.still_motions:
            raise ValueError(f"ClipDataset: still_motions must be a non-empty subset of {MOTIONS}, got {still_motions}")
        # one item per 8 frames of video (or per clip_len if longer), so the mix of videos and
        # stills does not change with clip_len; random windows start anywhere in the video
        self.window_stride = max(self.clip_len, 8)
        meta = frames.select_columns(["source", "kind"])[:]
        # (start row, number of rows, kind) per source; rows of one source are consecutive
        self.sources: list[tuple[int, int, str]] = []
        start = 0
        for i in range(1, len(meta["source"]) + 1):
            if i == len(meta["source"]) or meta["source"][i] != meta["source"][start]:
                self.sources.append((start, i - start, meta["kind"][start]))
                start = i
        self.items: list[tuple[int, int]] = []  # (source number, first frame of the window)
        for k, (_, n, kind) in enumerate(self.sources):
            starts = range(0, max(1, n - self.clip_len + 1), self.window_stride) if kind == "video" else [0]
            self.items.extend((k, s) for s in starts)
        if not self.items:
            raise ValueError("ClipDataset: the frames dataset is empty")

    def __len__(self) -> int:
        return self.samples_per_epoch or len(self.items)

    def _rng(self, index: int) -> np.random.Generator:
        if self.deterministic:
            return np.random.default_rng((self.seed, index))
        draw = int(torch.randint(0, 2**62, (1,)).item())
        return np.random.default_rng((draw, self._rank(), index))

    def _rank(self) -> int:
        if self.rank is not None:
            return int(self.rank)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            return torch.distributed.get_rank()
        return int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", 0)))

    def _load(self, row_start: int, count: int) -> np.ndarray:
        rows = self.frames[row_start: row_start + count]
        return np.stack([
            np.frombuffer(p, np.uint8).reshape(h, w, 3) for p, h, w in zip(rows["pixels"], rows["height"], rows["width"])
        ])

    def __getitem__(self, index: int) -> torch.Tensor:
        rng = self._rng(index)
        if self.samples_per_epoch:
            item = self.items[index % len(self.items)] if self.deterministic else self.items[rng.integers(len(self.items))]
        else:
            item = self.items[index]
        source, window_start = item
        row_start, num_rows, kind = self.sources[source]
        crop_h, crop_w = self.crop_size
        if kind == "image":
            image_HW3 = self._load(row_start, 1)[0]
            image_3HW = self._random_downscale(torch.from_numpy(image_HW3).permute(2, 0, 1), rng)
            clip = camera_motion_clip(
                image_3HW, self.clip_len, crop_h, crop_w, seed=int(rng.integers(2**31)),
                motion=str(rng.choice(list(self.still_motions))),
            )
        else:
            if not self.deterministic and num_rows > self.clip_len:  # jitter the window start
                window_start = int(rng.integers(0, num_rows - self.clip_len + 1))
            frame_ids = _pingpong(window_start, self.clip_len, num_rows)
            lo = min(frame_ids)
            frames_THW3 = self._load(row_start + lo, max(frame_ids) - lo + 1)[np.array(frame_ids) - lo]
            clip = self._random_crop(rearrange(torch.from_numpy(frames_THW3), "t h w c -> t c h w").float().div_(255), rng)
        if self.flip and rng.random() < 0.5:
            clip = clip.flip(-1)
        return clip.contiguous()

    def _random_downscale(self, image_3HW: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        lo, hi = self.still_scale_range
        _, H, W = image_3HW.shape
        # never shrink below what the crop (times the largest zoom) needs
        smallest = max(lo, 1.35 * self.crop_size[0] / H, 1.35 * self.crop_size[1] / W)
        scale = rng.uniform(smallest, hi) if smallest < hi else min(1.0, smallest)
        image = image_3HW.float().div(255)
        if scale < 1.0:
            size = (max(1, round(H * scale)), max(1, round(W * scale)))
            image = F.interpolate(image[None], size=size, mode="bilinear", antialias=True, align_corners=False)[0]
        return image.clamp(0, 1)

    def _random_crop(self, clip_T3HW: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        crop_h, crop_w = self.crop_size
        H, W = clip_T3HW.shape[-2:]
        if H < crop_h or W < crop_w:
            scale = max(crop_h / H, crop_w / W)
            size = (max(crop_h, round(H * scale)), max(crop_w, round(W * scale)))
            clip_T3HW = F.interpolate(clip_T3HW, size=size, mode="bilinear", align_corners=False).clamp(0, 1)
            H, W = size
        top, left = int(rng.integers(0, H - crop_h + 1)), int(rng.integers(0, W - crop_w + 1))
        return clip_T3HW[..., top: top + crop_h, left: left + crop_w]


def _pingpong(start: int, length: int, num_frames: int) -> list[int]:
    """Frame ids start, start+1, ... bouncing back at the ends when the video is too short."""
    if num_frames == 1:
        return [0] * length
    period = 2 * (num_frames - 1)
    ids = []
    for i in range(length):
        p = (start + i) % period
        ids.append(p if p < num_frames else period - p)
    return ids


def load_hub_dataset(
    name: str | os.PathLike,
    split: str = "train",
    image_column: str | None = None,
    max_items: int | None = None,
    max_side: int | None = None,
    **load_kwargs,
) -> datasets.Dataset:
    """Load an image dataset with ``datasets.load_dataset`` and return it in the cache layout.

    ``name``: a hub name ("user/dataset", needs a network and ``HF_HUB_OFFLINE=0``), a local
    ``.parquet``/``.csv``/``.json`` file, a folder that ``load_dataset`` understands (parquet
    files or an image folder), or a ``save_to_disk`` folder. The image column is found by type
    (``datasets.Image``) unless ``image_column`` names it. Every image becomes one "image" row,
    to be animated by :class:`ClipDataset`.
    """
    path = Path(name)
    if path.is_dir() and (path / "dataset_info.json").exists() and (path / "state.json").exists():
        ds = datasets.load_from_disk(str(path))
        if isinstance(ds, datasets.DatasetDict):
            ds = ds[split]
    elif path.is_file():
        builder = {".parquet": "parquet", ".csv": "csv", ".json": "json", ".jsonl": "json"}.get(path.suffix.lower())
        if builder is None:
            raise ValueError(f"load_hub_dataset: cannot load {path}: use a .parquet, .csv or .json file or a folder")
        ds = datasets.load_dataset(builder, data_files=str(path), split=split, **load_kwargs)
    else:
        try:
            ds = datasets.load_dataset(str(name), split=split, **load_kwargs)
        except (ConnectionError, FileNotFoundError, ValueError) as err:
            offline = os.environ.get("HF_HUB_OFFLINE") == "1"
            raise ValueError(
                f"load_hub_dataset: cannot load {name!r} ({type(err).__name__}: {err})."
                + (" The hub is offline here (HF_HUB_OFFLINE=1): pass a local path." if offline else "")
            ) from None
    if image_column is None:
        image_column = next((k for k, f in ds.features.items() if isinstance(f, datasets.Image)), None)
    if image_column is None or image_column not in ds.column_names:
        raise ValueError(f"load_hub_dataset: no image column in {name} (columns {ds.column_names}); pass image_column=")
    if max_items is not None:
        ds = ds.select(range(min(max_items, len(ds))))

    def rows() -> Iterator[dict]:
        for i, image in enumerate(ds.cast_column(image_column, datasets.Image())[image_column]):
            frame = _resize_max_side(np.asarray(image.convert("RGB"), np.uint8)[None], max_side)[0]
            yield {"source": f"{name}#{i}", "kind": "image", "frame_index": 0,
                   "height": frame.shape[0], "width": frame.shape[1], "pixels": frame.tobytes()}

    out: dict[str, list] = {k: [] for k in FEATURES}
    for row in rows():
        for k, v in row.items():
            out[k].append(v)
    return datasets.Dataset.from_dict(out, features=FEATURES)


def clear_cache(cache_dir: str | os.PathLike) -> None:
    """Delete every cached frames dataset under ``cache_dir``."""
    for path in Path(cache_dir).glob("frames-*"):
        shutil.rmtree(path, ignore_errors=True)
