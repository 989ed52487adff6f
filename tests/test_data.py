"""Synthetic clips, the Arrow clip cache, ClipDataset crops, split by file and the data module."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from progvc_lab.data import (
    ClipDataset, VideoDataModule, build_clip_cache, camera_motion_clip, frames_dataset_from_clips, is_held_out,
    load_hub_dataset,
    split_by_source, synthetic_clip, write_video,
)
from progvc_lab.data.datamodule import DEFAULT_TRAIN_SOURCES, REPO_ROOT, resolve_path


def _write_png(path, seed=0, size=(40, 56)):
    from PIL import Image

    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(path)


@pytest.fixture
def media_dir(tmp_path):
    """A folder with two tiny y4m clips and a png photo."""
    folder = tmp_path / "media"
    (folder / "photos").mkdir(parents=True)
    write_video(folder / "one.y4m", synthetic_clip(6, 32, 48, seed=1), 25)
    write_video(folder / "two.y4m", synthetic_clip(5, 24, 24, seed=2, kind="pan"), 25)
    _write_png(folder / "photos" / "still.png")
    (folder / "notes.txt").write_text("not media")
    return folder


def test_synthetic_clip_is_deterministic_and_moves():
    a = synthetic_clip(4, 32, 40, seed=3)
    assert a.shape == (4, 3, 32, 40) and a.dtype == torch.float32 and 0 <= a.min() and a.max() <= 1
    assert torch.equal(a, synthetic_clip(4, 32, 40, seed=3))
    assert not torch.equal(a, synthetic_clip(4, 32, 40, seed=4))
    assert (a[0] - a[-1]).abs().mean() > 0.001  # something moves
    pan = synthetic_clip(4, 32, 40, seed=3, kind="pan")
    assert pan.shape == (4, 3, 32, 40) and torch.equal(pan, synthetic_clip(4, 32, 40, seed=3, kind="pan"))


@pytest.mark.parametrize("motion", ["pan", "zoom", "random"])
def test_camera_motion_clip(motion):
    image_HW3 = np.random.default_rng(0).integers(0, 256, (50, 70, 3), dtype=np.uint8)
    clip = camera_motion_clip(image_HW3, 5, 16, 24, seed=1, motion=motion)
    assert clip.shape == (5, 3, 16, 24) and 0 <= clip.min() and clip.max() <= 1
    assert torch.equal(clip, camera_motion_clip(image_HW3, 5, 16, 24, seed=1, motion=motion))
    assert (clip[0] - clip[-1]).abs().mean() > 0.01


def test_camera_motion_first_pan_frame_is_an_exact_crop_and_small_photos_are_upscaled():
    image_3HW = torch.rand(3, 30, 40, generator=torch.Generator().manual_seed(0))
    frame = camera_motion_clip(image_3HW, 1, 10, 12, seed=5, motion="pan")[0]
    hits = [(t, l) for t in range(21) for l in range(29) if torch.allclose(image_3HW[:, t:t + 10, l:l + 12], frame, atol=1e-5)]
    assert len(hits) == 1
    assert camera_motion_clip(image_3HW, 3, 64, 64, seed=0).shape == (3, 3, 64, 64)


def test_build_clip_cache_stores_frames_and_is_reused(media_dir, tmp_path):
    cache = tmp_path / "cache"
    with pytest.warns(UserWarning, match="missing-folder"):
        ds = build_clip_cache([media_dir, tmp_path / "missing-folder"], cache_dir=cache)
    assert len(ds) == 6 + 5 + 1
    assert sorted(set(ds["kind"])) == ["image", "video"]
    row = ds[0]
    assert len(row["pixels"]) == row["height"] * row["width"] * 3
    folders = list(cache.glob("frames-*"))
    assert len(folders) == 1
    stamp = folders[0].stat().st_mtime_ns
    again = build_clip_cache([media_dir], cache_dir=cache)
    assert len(again) == len(ds) and list(cache.glob("frames-*")) == folders
    assert folders[0].stat().st_mtime_ns == stamp
    other = build_clip_cache([media_dir], cache_dir=cache, max_side=16)  # other options: other key
    assert len(list(cache.glob("frames-*"))) == 2 and max(other["width"]) <= 16


def test_clip_dataset_crops(media_dir, tmp_path):
    ds = build_clip_cache([media_dir], cache_dir=tmp_path / "cache")
    clips = ClipDataset(ds, clip_len=4, crop_size=(16, 20), samples_per_epoch=12)
    assert len(clips) == 12
    for i in range(len(clips)):
        clip = clips[i]
        assert clip.shape == (4, 3, 16, 20) and clip.dtype == torch.float32
        assert 0 <= clip.min() and clip.max() <= 1
    frames = ClipDataset(ds, clip_len=1, crop_size=(32, 32))  # larger than "two.y4m": up-scaled
    assert all(frames[i].shape == (1, 3, 32, 32) for i in range(len(frames)))
    # deterministic mode: sample i depends on (seed, i) only
    val = ClipDataset(ds, clip_len=4, crop_size=(16, 16), samples_per_epoch=6, deterministic=True, seed=7)
    assert all(torch.equal(val[i], val[i]) for i in range(6))
    assert not torch.equal(val[0], ClipDataset(ds, 4, (16, 16), 6, deterministic=True, seed=8)[0])


def test_split_by_source_never_shares_a_file(media_dir, tmp_path):
    ds = build_clip_cache([media_dir], cache_dir=tmp_path / "cache")
    train, val = split_by_source(ds, val_fraction=0.34, seed=0)
    assert len(train) + len(val) == len(ds) and len(val) > 0 and len(train) > 0
    assert not set(train["source"]) & set(val["source"])


def test_load_hub_dataset_from_local_parquet(tmp_path):
    import datasets
    from PIL import Image

    images = [Image.fromarray(np.full((20, 30, 3), 40 * i, np.uint8)) for i in range(3)]
    table = datasets.Dataset.from_dict({"image": images, "label": [0, 1, 2]},
                                       features=datasets.Features({"image": datasets.Image(), "label": datasets.Value("int64")}))
    table.to_parquet(str(tmp_path / "photos.parquet"))
    ds = load_hub_dataset(tmp_path / "photos.parquet", cache_dir=str(tmp_path / "hf"))
    assert len(ds) == 3 and set(ds["kind"]) == {"image"} and ds[2]["height"] == 20
    assert np.frombuffer(ds[2]["pixels"], np.uint8).max() == 80
    clip = ClipDataset(ds, clip_len=3, crop_size=(8, 8))[0]
    assert clip.shape == (3, 3, 8, 8)
    with pytest.raises(ValueError, match="cannot load"):
        load_hub_dataset("someone/not-here")


def test_held_out_clips_never_in_default_training_sources():
    assert is_held_out("data/foreman_qcif_30f.y4m") and is_held_out("x/Akiyo.y4m")
    assert is_held_out("bigbuckbunny_416x240_60f.y4m") and not is_held_out("redtree_street_416x240_48f.y4m")
    # every evaluation clip of ../shared/data/clips is held out, Carphone and Container included
    assert is_held_out("carphone_qcif_60f.y4m") and is_held_out("container_cif_15f.y4m")
    module = VideoDataModule()
    files = module._files(module.sources, drop_held_out=True)
    assert not any(is_held_out(f) for f in files)
    assert resolve_path("data") == REPO_ROOT / "data" and DEFAULT_TRAIN_SOURCES


def test_datamodule_setup_and_one_batch(media_dir, tmp_path):
    (media_dir / "foreman_copy.y4m").write_bytes((media_dir / "one.y4m").read_bytes())  # held out by name
    module = VideoDataModule(
        sources=[str(media_dir), str(tmp_path / "not-there")], val_sources=[], clip_len=3, crop_size=(16, 16),
        batch_size=4, samples_per_epoch=8, val_samples=4, cache_dir=str(tmp_path / "cache"), max_side=None,
        val_fraction=0.34,
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        module.setup("fit")
    messages = " ".join(str(w.message) for w in caught)
    assert "not-there" in messages and "foreman_copy.y4m" in messages
    train_sources = set(module.train_dataset.frames["source"])
    val_sources = set(module.val_dataset.frames["source"])
    assert train_sources and val_sources and not train_sources & val_sources
    assert not any(is_held_out(s) for s in train_sources)
    batch = next(iter(module.train_dataloader()))
    assert batch.shape == (4, 3, 3, 16, 16) and batch.dtype == torch.float32
    val_batch = next(iter(module.val_dataloader()))
    assert torch.equal(val_batch, next(iter(module.val_dataloader())))  # fixed validation samples


@pytest.mark.filterwarnings("ignore:data source .* does not exist")
def test_datamodule_falls_back_to_synthetic_clips(tmp_path):
    module = VideoDataModule(sources=[str(tmp_path / "nothing")], val_sources=[str(tmp_path / "nothing")], clip_len=2,
                             crop_size=(16, 16), batch_size=2, samples_per_epoch=4, val_samples=2,
                             cache_dir=str(tmp_path / "cache"))
    with pytest.warns(UserWarning, match="synthetic"):
        module.setup("fit")
    assert module.example_batch().shape == (2, 2, 3, 16, 16)


def test_static_and_chosen_still_motions(tmp_path):
    photo = (np.random.default_rng(0).random((96, 128, 3)) * 255).astype(np.uint8)
    clip = camera_motion_clip(photo, 4, 32, 32, seed=1, motion="static")
    assert all(torch.equal(clip[0], clip[t]) for t in range(1, 4))  # a locked-off camera
    assert not torch.equal(camera_motion_clip(photo, 4, 32, 32, seed=1, motion="pan")[0],
                           camera_motion_clip(photo, 4, 32, 32, seed=1, motion="pan")[3])
    ds = frames_dataset_from_clips({"photo": torch.from_numpy(photo)[None]})
    still = ClipDataset(ds, clip_len=3, crop_size=(24, 24), still_motions=["static"], samples_per_epoch=2)[0]
    assert torch.equal(still[0], still[2])
    with pytest.raises(ValueError, match="still_motions"):
        ClipDataset(ds, clip_len=3, crop_size=(24, 24), still_motions=["spin"])
    module = VideoDataModule(sources=[str(tmp_path / "none")], val_sources=[], still_motions=["static", "pan"],
                             clip_len=2, crop_size=(16, 16), batch_size=2, samples_per_epoch=2, val_samples=2,
                             cache_dir=str(tmp_path / "cache"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        module.setup("fit")
    assert module.train_dataset.still_motions == ("static", "pan")


def test_training_samples_differ_between_ranks_and_repeat_under_one_seed(media_dir, tmp_path):
    """Under DDP every rank has the same torch RNG (seed_everything); the rank must still change the crops."""
    ds = build_clip_cache([media_dir], cache_dir=tmp_path / "cache")

    def draw(rank, seed=0):
        torch.manual_seed(seed)
        clips = ClipDataset(ds, clip_len=2, crop_size=(16, 16), samples_per_epoch=4, rank=rank)
        return torch.stack([clips[i] for i in range(4)])

    assert torch.equal(draw(0), draw(0))           # repeatable
    assert not torch.equal(draw(0), draw(1))       # two ranks, same seed: different samples
    assert not torch.equal(draw(0), draw(0, seed=1))
    a, b = draw(0), draw(1)
    assert all(not torch.equal(a[i], b[i]) for i in range(4))
