"""``VideoDataModule``: the Lightning data module that feeds both training stages.

::

    sources (files / folders, relative to the repo root)      val_sources
        │ drop missing paths (warning), drop held-out clips        │
        ▼                                                          ▼
    build_clip_cache -> Arrow frames dataset             build_clip_cache
        ▼                                                          ▼
    ClipDataset (random windows, crops, flips,           ClipDataset (deterministic per
                 animated stills)                                    (seed, index))
        ▼                                                          ▼
    train_dataloader: (B, clip_len, 3, crop_h, crop_w)   val_dataloader

**Held-out rule.** Akiyo, Foreman, Carphone, Container and Big Buck Bunny (every clip of
``../shared/data/clips``) are the evaluation clips: a training source whose file name contains
``akiyo``, ``foreman``, ``carphone``, ``container`` or ``bigbuckbunny`` is always dropped (with a
warning). They may be validation sources (the default), since validation never trains. (The
first shipped ``tiny.pt`` was trained with Carphone and Container; models trained since are not.)

Defaults: training on the clips and photos under ``../shared/data/train`` (real clips, and Kodak
and scikit-image photos animated with synthetic pans, zooms and hand-held motion),
validation on the shipped ``data/`` clips. In a clone without ``../shared`` the
training set falls back to synthetic clips (with a warning), so everything still runs. All
arguments are plain typed values, so a LightningCLI YAML can set them::

    data:
      class_path: progvc_lab.data.VideoDataModule
      init_args: {clip_len: 8, crop_size: [64, 64], batch_size: 8, samples_per_epoch: 2000}
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from lightning.pytorch import LightningDataModule
from torch.utils.data import DataLoader

from ..resources import REPO_ROOT, project_root
from .dataset import ClipDataset, build_clip_cache, list_media_files, split_by_source, synthetic_frames_dataset

HELD_OUT_NAMES = ("akiyo", "foreman", "carphone", "container", "bigbuckbunny", "big_buck_bunny")
DEFAULT_TRAIN_SOURCES = [
    "data",  # shipped clips: all held out at present, listed so new shipped clips are used
    "../shared/data/train/clips",
    "../shared/data/train/kodak",
    "../shared/data/train/skimage",
]
DEFAULT_VAL_SOURCES = ["data/akiyo_qcif_30f.y4m", "data/foreman_qcif_30f.y4m"]


def is_held_out(path: str | Path) -> bool:
    """True for the evaluation clips (Akiyo, Foreman, Carphone, Container, Big Buck Bunny), by file name."""
    name = Path(path).name.lower().replace("-", "").replace(" ", "")
    return any(key in name for key in HELD_OUT_NAMES)


def resolve_path(path: str | Path) -> Path:
    """A config path: absolute paths are kept; ``data/...`` is the shipped data folder (the checkout's
    or the installed package's); other relative paths are relative to the repository root in a
    checkout, to the current folder in an installed package."""
    path = Path(path).expanduser()
    if path.is_absolute():
        return path
    if path.parts and path.parts[0] == "data":
        from . import DATA_DIR

        return (DATA_DIR / Path(*path.parts[1:])).resolve()
    return (project_root() / path).resolve()


class VideoDataModule(LightningDataModule):
    """Random clip crops for training and fixed ones for validation (see the module docstring)."""

    def __init__(
        self,
        sources: list[str] | None = None,  # files or folders; None = DEFAULT_TRAIN_SOURCES
        val_sources: list[str] | None = None,  # None = DEFAULT_VAL_SOURCES; [] = split sources by file
        clip_len: int = 8,  # frames per sample; 1 for stage-1 (tokenizer) training
        crop_size: tuple[int, int] = (64, 64),  # (height, width) of each crop
        batch_size: int = 8,
        num_workers: int = 0,
        samples_per_epoch: int = 2000,  # training samples drawn per epoch
        val_samples: int = 32,  # fixed validation samples
        cache_dir: str = ".cache/datasets",  # Arrow caches, relative to the repo root
        seed: int = 0,
        max_side: int | None = 512,  # down-scale larger frames/photos when caching
        val_fraction: float = 0.15,  # used when val_sources == []
        synthetic_fallback: bool = True,  # train on synthetic clips when no source file exists
        still_motions: list[str] | None = None,  # camera motions for stills; None = pan, zoom, random
    ):
        super().__init__()
        self.save_hyperparameters()
        self.sources = list(DEFAULT_TRAIN_SOURCES if sources is None else sources)
        self.val_sources = list(DEFAULT_VAL_SOURCES if val_sources is None else val_sources)
        self.clip_len, self.crop_size = clip_len, tuple(crop_size)
        self.batch_size, self.num_workers = batch_size, num_workers
        self.samples_per_epoch, self.val_samples = samples_per_epoch, val_samples
        self.cache_dir, self.seed, self.max_side = resolve_path(cache_dir), seed, max_side
        self.val_fraction, self.synthetic_fallback = val_fraction, synthetic_fallback
        self.still_motions = tuple(still_motions) if still_motions else ("pan", "zoom", "random")
        self.train_dataset: ClipDataset | None = None
        self.val_dataset: ClipDataset | None = None

    def _files(self, sources: list[str], drop_held_out: bool) -> list[Path]:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            files = list_media_files([resolve_path(s) for s in sources])
        for w in caught:
            warnings.warn(str(w.message), stacklevel=3)
        if drop_held_out:
            # the shipped data/ folder holds held-out clips on purpose: only warn about others
            from . import DATA_DIR

            held = [f for f in files if is_held_out(f) and f.parent != Path(DATA_DIR).resolve()]
            if held:
                warnings.warn(
                    "held-out evaluation clips are never used for training; dropped: "
                    + ", ".join(f.name for f in held), stacklevel=3,
                )
            files = [f for f in files if not is_held_out(f)]
        return files

    def setup(self, stage: str | None = None) -> None:
        if self.train_dataset is not None:
            return
        train_files = self._files(self.sources, drop_held_out=True)
        val_files = self._files(self.val_sources, drop_held_out=False)
        overlap = set(train_files) & set(val_files)
        if overlap:
            warnings.warn(f"removing validation files from training: {sorted(p.name for p in overlap)}", stacklevel=2)
            train_files = [f for f in train_files if f not in overlap]
        cache = dict(cache_dir=self.cache_dir, max_side=self.max_side)
        if train_files:
            train_frames = build_clip_cache(train_files, **cache)
        elif self.synthetic_fallback:
            warnings.warn(
                "no training files found (is ../shared/data present?); training on synthetic clips", stacklevel=2
            )
            train_frames = synthetic_frames_dataset(num_clips=8, num_frames=max(16, self.clip_len), seed=self.seed,
                                                    height=max(96, self.crop_size[0]), width=max(96, self.crop_size[1]))
        else:
            raise FileNotFoundError(f"no training files found in {self.sources} (paths relative to {REPO_ROOT})")
        if val_files:
            val_frames = build_clip_cache(val_files, **cache)
        elif len(set(train_frames["source"])) >= 2:
            train_frames, val_frames = split_by_source(train_frames, self.val_fraction, seed=self.seed)
        else:
            val_frames = synthetic_frames_dataset(num_clips=2, num_frames=max(16, self.clip_len), seed=self.seed + 1000,
                                                  height=max(96, self.crop_size[0]), width=max(96, self.crop_size[1]))
        # the rank keeps DDP processes apart (each rank crops its own samples; see ClipDataset)
        rank = self.trainer.global_rank if self.trainer is not None else None
        self.train_dataset = ClipDataset(train_frames, self.clip_len, self.crop_size,
                                         samples_per_epoch=self.samples_per_epoch, seed=self.seed,
                                         still_motions=self.still_motions, rank=rank)
        self.val_dataset = ClipDataset(val_frames, self.clip_len, self.crop_size, samples_per_epoch=self.val_samples,
                                       deterministic=True, seed=self.seed, flip=False)

    def _loader(self, dataset: ClipDataset) -> DataLoader:
        return DataLoader(
            dataset, batch_size=self.batch_size, shuffle=False, num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0, drop_last=False,
        )

    def train_dataloader(self) -> DataLoader:
        self.setup("fit")
        return self._loader(self.train_dataset)

    def val_dataloader(self) -> DataLoader:
        self.setup("validate")
        return self._loader(self.val_dataset)

    def example_batch(self) -> torch.Tensor:
        """One training batch (B, clip_len, 3, crop_h, crop_w), for notebooks and smoke tests."""
        return next(iter(self.train_dataloader()))
