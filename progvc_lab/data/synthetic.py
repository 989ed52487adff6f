"""Synthetic clips: deterministic test videos, and camera motion over still photos.

Two tools:

``synthetic_clip``  a fixed clip from a seed, no files needed (tests, notebook warm-ups)::

    kind="shapes": textured background + coloured discs and boxes moving in straight lines
    kind="pan":    the same kind of textured scene seen through a camera that pans sub-pixel

``camera_motion_clip``  turns a still photo into a clip by moving a crop window over it::

    +--------------------------------------+   photo (H_img, W_img)
    |   +------+                           |
    |   | t=0  |--->+------+               |   the window moves (pan), shrinks/grows (zoom)
    |   +------+    | t=3  |--->...        |   or both with hand-held jitter (random);
    |               +------+               |   each window is resampled to (height, width)
    +--------------------------------------+   with bilinear grid_sample (sub-pixel motion)

This is how still training images (Kodak, scikit-image photos) become video clips, so the models
see real textures moving, which the few real clips lack. Everything is deterministic in ``seed``.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F


def _texture(gen: torch.Generator, height: int, width: int) -> torch.Tensor:
    """A smooth random colour field plus fine noise: (3, H, W) in [0, 1]."""
    coarse = torch.rand(3, max(2, height // 16), max(2, width // 16), generator=gen)
    field = F.interpolate(coarse[None], size=(height, width), mode="bicubic", align_corners=False)[0]
    stripes_y = torch.linspace(0, 2 * math.pi * float(torch.randint(2, 9, (1,), generator=gen)), height)
    stripes = 0.1 * torch.sin(stripes_y)[:, None] * torch.cos(torch.linspace(0, 6.0, width))[None, :]
    noise = 0.05 * torch.randn(3, height, width, generator=gen)
    return (0.25 + 0.5 * field + stripes + noise).clamp(0, 1)


def synthetic_clip(
    num_frames: int = 8, height: int = 64, width: int = 64, seed: int = 0, kind: str = "shapes"
) -> torch.Tensor:
    """A deterministic clip (T, 3, H, W) float32 in [0, 1]; same seed -> same pixels."""
    gen = torch.Generator().manual_seed(seed)
    if kind == "pan":
        scene = _texture(gen, height * 2, width * 2)
        scene_np = scene.permute(1, 2, 0).numpy()
        return camera_motion_clip(scene_np, num_frames, height, width, seed=seed, motion="pan")
    if kind != "shapes":
        raise ValueError(f"synthetic_clip: kind must be 'shapes' or 'pan', got {kind!r}")
    background = _texture(gen, height, width)
    yy, xx = torch.meshgrid(torch.arange(height, dtype=torch.float32), torch.arange(width, dtype=torch.float32), indexing="ij")
    num_shapes = 3
    colors = torch.rand(num_shapes, 3, generator=gen)
    start = torch.rand(num_shapes, 2, generator=gen) * torch.tensor([height, width])
    velocity = (torch.rand(num_shapes, 2, generator=gen) - 0.5) * 4.0  # pixels per frame
    radius = (0.1 + 0.15 * torch.rand(num_shapes, generator=gen)) * min(height, width)
    is_box = torch.rand(num_shapes, generator=gen) < 0.5
    frames = []
    for t in range(num_frames):
        frame = background.clone()
        for k in range(num_shapes):
            cy, cx = (start[k] + velocity[k] * t).tolist()
            if is_box[k]:
                inside = ((yy - cy).abs() < radius[k]) & ((xx - cx).abs() < radius[k] * 0.7)
            else:
                inside = (yy - cy) ** 2 + (xx - cx) ** 2 < radius[k] ** 2
            frame = torch.where(inside, colors[k][:, None, None], frame)
        frames.append(frame)
    return torch.stack(frames)


MOTIONS = ("pan", "zoom", "random", "static")


def _image_to_3HW(image) -> torch.Tensor:
    """numpy/tensor image in HW3 or 3HW layout, uint8 or float -> float32 (3, H, W) in [0, 1]."""
    img = torch.as_tensor(np.asarray(image) if not isinstance(image, torch.Tensor) else image)
    if img.ndim == 2:  # grey
        img = img[None].expand(3, -1, -1)
    if img.ndim != 3:
        raise ValueError(f"camera_motion_clip: expected an image (H, W, 3) or (3, H, W), got {tuple(img.shape)}")
    if img.shape[0] not in (1, 3, 4) and img.shape[-1] in (1, 3, 4):
        img = img.permute(2, 0, 1)
    img = img[:3] if img.shape[0] >= 3 else img[:1].expand(3, -1, -1)
    img = img.float() / 255.0 if not img.is_floating_point() else img.float()
    return img.contiguous()


def camera_motion_clip(
    image,
    num_frames: int = 8,
    height: int = 64,
    width: int = 64,
    seed: int = 0,
    motion: str = "random",
    max_speed: float = 3.0,
    max_zoom: float = 1.3,
) -> torch.Tensor:
    """Animate a still photo: a crop window moving over it -> (T, 3, height, width) in [0, 1].

    ``image``: (H, W, 3) or (3, H, W), uint8 or float in [0, 1] (numpy or torch).
    ``motion``: ``"pan"`` (straight line at up to ``max_speed`` px/frame, sub-pixel),
    ``"zoom"`` (window scale changes linearly between 1 and ``max_zoom``, in or out, with a slow
    drift), ``"random"`` (pan + zoom + hand-held jitter), ``"static"`` (a fixed window: every frame
    the same crop, as a locked-off camera on a still scene). A photo smaller than the window is
    up-scaled first. Frame 0 of a pan starts at an integer position, so with ``num_frames=1`` it
    is an exact crop of the photo.
    """
    if motion not in MOTIONS:
        raise ValueError(f"camera_motion_clip: motion must be one of {MOTIONS}, got {motion!r}")
    img_3HW = _image_to_3HW(image)
    rng = np.random.default_rng(seed)
    zoom_start, zoom_end = 1.0, 1.0
    if motion in ("zoom", "random"):
        zoom_start, zoom_end = 1.0, float(rng.uniform(1.0, max_zoom))
        if rng.random() < 0.5:
            zoom_start, zoom_end = zoom_end, zoom_start
    big = max(zoom_start, zoom_end)
    # make sure the largest window fits (with one pixel to spare for the motion)
    _, H_img, W_img = img_3HW.shape
    need = max((height * big + 2) / H_img, (width * big + 2) / W_img)
    if need > 1:
        img_3HW = F.interpolate(img_3HW[None], scale_factor=need, mode="bilinear", align_corners=False)[0]
        _, H_img, W_img = img_3HW.shape

    t = np.arange(num_frames, dtype=np.float64)
    scale_T = zoom_start + (zoom_end - zoom_start) * t / max(1, num_frames - 1)
    speed = {"zoom": max_speed / 4, "static": 0.0}.get(motion, max_speed)
    angle = rng.uniform(0, 2 * np.pi)
    velocity = rng.uniform(0.3, 1.0) * speed * np.array([np.sin(angle), np.cos(angle)])  # (dy, dx)
    path_T2 = t[:, None] * velocity[None, :]
    if motion == "random":
        path_T2 = path_T2 + np.cumsum(rng.normal(0, 0.5, size=(num_frames, 2)), axis=0)
    # window half sizes per frame, and where the centre may go so that every window fits
    half_T2 = np.stack([scale_T * height / 2, scale_T * width / 2], axis=1)
    lo = (half_T2 - path_T2).max(axis=0)
    hi = (np.array([H_img, W_img]) - half_T2 - path_T2).min(axis=0)
    if np.any(hi < lo):  # the motion is too long for this photo: shrink the path to fit
        extent = path_T2.max(axis=0) - path_T2.min(axis=0)
        room = np.array([H_img, W_img]) - 2 * half_T2.max(axis=0)
        path_T2 = path_T2 * np.clip(room / np.maximum(extent, 1e-9), 0, 1).min()
        lo = (half_T2 - path_T2).max(axis=0)
        hi = (np.array([H_img, W_img]) - half_T2 - path_T2).min(axis=0)
    centre0 = lo + rng.random(2) * np.maximum(hi - lo, 0)
    # integer top-left corner at frame 0 (exact crop when scale is 1)
    centre0 = np.floor(centre0 - half_T2[0]) + half_T2[0]
    centre0 = np.clip(centre0, lo, np.maximum(lo, hi))
    centre_T2 = centre0[None, :] + path_T2

    # affine_grid works in normalised coordinates [-1, 1] over the whole photo (align_corners=False)
    theta = np.zeros((num_frames, 2, 3))
    theta[:, 0, 0] = 2 * half_T2[:, 1] / W_img
    theta[:, 0, 2] = 2 * centre_T2[:, 1] / W_img - 1
    theta[:, 1, 1] = 2 * half_T2[:, 0] / H_img
    theta[:, 1, 2] = 2 * centre_T2[:, 0] / H_img - 1
    theta_T23 = torch.from_numpy(theta).float()
    grid = F.affine_grid(theta_T23, [num_frames, 3, height, width], align_corners=False)
    clip = F.grid_sample(
        img_3HW[None].expand(num_frames, -1, -1, -1), grid, mode="bilinear", padding_mode="border", align_corners=False
    )
    return clip.clamp_(0, 1)
