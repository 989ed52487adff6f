"""Perceptual quality metrics for decoded video: ST-LPIPS, GMSD, and LPIPS / DISTS from your weights.

All functions take frames as float RGB in [0, 1], shaped ``(T, 3, H, W)`` or ``(3, H, W)`` (torch
tensors or numpy arrays; uint8 arrays are divided by 255), score each frame and return the mean
over frames. Lower is better for every one of them (a distance; identical frames give 0).

- **ST-LPIPS** (:func:`st_lpips`; Ghildyal & Liu, "Shift-tolerant Perceptual Similarity Metric",
  ECCV 2022): LPIPS with a trunk made tolerant to small pixel shifts (first convolution at stride 1,
  every down-sampling a reflect-padded [1 2 1] blur before the stride, "blur-pool"), trained from
  scratch on BAPPS. A generative decoder that puts texture one pixel off is not punished as much as
  one that blurs it away, which is what we want from a metric for generative codecs. The weights
  come from the PyPI wheel ``stlpips-pytorch==0.0.2`` (BSD-2), installed **without its
  dependencies**: its Python module imports torchvision, so we never import it; we only read its
  ``.pth`` files (found through ``importlib.metadata``) into the small network written here.
  Typical values: 0 identical, ~0.05-0.2 mild coding loss, 0.3-0.7 heavy loss.
- **GMSD** (:func:`gmsd`; Xue, Zhang, Mou & Bovik, "Gradient Magnitude Similarity Deviation",
  IEEE TIP 2014): weight-free. BT.601 luma in 0..255, 2x2 mean filter then down-sampling by 2,
  Prewitt gradients (zero-padded 'same' convolution, as in the authors' MATLAB code), the
  gradient-magnitude similarity map ``(2 m1 m2 + c) / (m1^2 + m2^2 + c)`` with c = 170, and its
  standard deviation. 0 identical; ~0.05-0.15 for visible coding loss; 0.3+ very poor. Not
  shift-tolerant: a 1-pixel shift of Foreman scores ~0.10, like a Gaussian blur of sigma 1.5.
- **LPIPS** (:func:`lpips`; Zhang et al. 2018) and **DISTS** (:func:`dists`; Ding et al. 2020):
  only from a weights file you point at (this module never downloads anything); without one they
  raise :class:`MetricUnavailable`. The state-dict layouts are documented on each function.

:func:`st_lpips_available` says whether the ST-LPIPS weights are installed (and where, or how to get
them). Networks are built once per process (per net, weights file and device) and run under
``torch.no_grad`` in eval mode.
"""

from __future__ import annotations

import functools
import importlib.metadata
import os
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = [
    "MetricUnavailable",
    "ST_LPIPS_INSTALL",
    "st_lpips",
    "st_lpips_per_frame",
    "st_lpips_available",
    "st_lpips_weights_path",
    "gmsd",
    "gmsd_per_frame",
    "gms_map",
    "lpips",
    "dists",
    "LPIPSNet",
    "DISTSNet",
]

ST_LPIPS_DIST = "stlpips-pytorch"
ST_LPIPS_VERSION = "0.0.2"
ST_LPIPS_INSTALL = f"pip install --no-deps {ST_LPIPS_DIST}=={ST_LPIPS_VERSION}"
_ST_LPIPS_FILES = {"alex": "alex_shift_tolerant.pth", "vgg": "vgg_shift_tolerant.pth"}


class MetricUnavailable(RuntimeError):
    """A metric cannot run here: its weights are not installed or not given. The message says how."""


# --- input handling ------------------------------------------------------------------------------
def _frames(x, name: str) -> torch.Tensor:
    """(T, 3, H, W) or (3, H, W), tensor or array, [0, 1] (uint8 -> /255) -> float32 (T, 3, H, W)."""
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(np.ascontiguousarray(x))
    x = torch.as_tensor(x).detach()
    if x.dtype == torch.uint8:
        x = x.float() / 255.0
    x = x.float()
    if x.ndim == 3:
        x = x[None]
    if x.ndim != 4 or x.shape[1] != 3:
        raise ValueError(f"{name}: expected RGB frames (T, 3, H, W) or (3, H, W), got {tuple(x.shape)}")
    return x


def _pair(a, b) -> tuple[torch.Tensor, torch.Tensor]:
    a, b = _frames(a, "a"), _frames(b, "b")
    if a.shape != b.shape:
        raise ValueError(f"the two clips differ in shape: {tuple(a.shape)} vs {tuple(b.shape)}")
    return a, b.to(a.device)


# --- building blocks -----------------------------------------------------------------------------
class BlurPool(nn.Module):
    """Anti-aliased down-sampling (Zhang 2019): reflect pad 2 on every side, [1 2 1]^2 / 16 blur
    applied per channel, stride 2. ``pad 2`` (not 1) is the shift-tolerant variant's choice, so no
    border column is ever dropped by the stride. The filter is a buffer named ``filt`` (C, 1, 3, 3)
    because the ST-LPIPS checkpoints store it."""

    def __init__(self, channels: int):
        super().__init__()
        taps = torch.tensor([1.0, 2.0, 1.0])
        filt = taps[:, None] * taps[None, :]
        self.register_buffer("filt", (filt / filt.sum())[None, None].repeat(channels, 1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(F.pad(x, (2, 2, 2, 2), mode="reflect"), self.filt, stride=2, groups=x.shape[1])


class L2Pool(nn.Module):
    """DISTS' down-sampling: sqrt(hanning-weighted mean of x^2), 3x3 window [.5 1 .5]^2, stride 2."""

    def __init__(self, channels: int):
        super().__init__()
        taps = torch.tensor([0.5, 1.0, 0.5])
        filt = taps[:, None] * taps[None, :]
        # not persistent: a constant, and torchvision VGG16 state dicts have no entry for it
        self.register_buffer("filter", (filt / filt.sum())[None, None].repeat(channels, 1, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.conv2d(x * x, self.filter, stride=2, padding=1, groups=x.shape[1])
        return (out + 1e-12).sqrt()


class _Scaling(nn.Module):
    """LPIPS input layer: (x - shift) / scale per channel, x in [-1, 1] (ImageNet statistics)."""

    def __init__(self):
        super().__init__()
        self.register_buffer("shift", torch.tensor([-0.030, -0.088, -0.188])[None, :, None, None])
        self.register_buffer("scale", torch.tensor([0.458, 0.448, 0.450])[None, :, None, None])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.shift) / self.scale


class _Head(nn.Module):
    """LPIPS linear head: a non-negative 1x1 convolution to one channel. ``model.0`` is the dropout
    LPIPS trains with (identity in eval), ``model.1`` the convolution, as checkpoints name them."""

    def __init__(self, channels: int):
        super().__init__()
        self.model = nn.Sequential(nn.Dropout(), nn.Conv2d(channels, 1, 1, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


def _conv(cin: int, cout: int, k: int, stride: int = 1, pad: int | None = None) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2 if pad is None else pad)


def _stages(layout: list[list[tuple[int, nn.Module]]]) -> nn.ModuleDict:
    """Slices slice1..sliceN of one feature stack; each layer keeps its index in the full stack,
    so the state-dict keys read ``slice<s>.<index>.weight`` like the published checkpoints."""
    return nn.ModuleDict(
        {f"slice{s + 1}": nn.Sequential(OrderedDict((str(i), m) for i, m in layers)) for s, layers in enumerate(layout)}
    )


def _st_alex_trunk() -> list[list[tuple[int, nn.Module]]]:
    """Shift-tolerant AlexNet: conv1 at stride 1 then blur-pool (instead of stride 4), max-pools at
    stride 1 each followed by a blur-pool (instead of stride 2). Five taps after each ReLU."""
    return [
        [(0, _conv(3, 64, 11, stride=1, pad=2)), (1, BlurPool(64)), (2, nn.ReLU())],
        [(3, nn.MaxPool2d(3, stride=1)), (4, BlurPool(64)), (5, _conv(64, 192, 5)), (6, nn.ReLU())],
        [(7, nn.MaxPool2d(3, stride=1)), (8, BlurPool(192)), (9, _conv(192, 384, 3)), (10, nn.ReLU())],
        [(11, _conv(384, 256, 3)), (12, nn.ReLU())],
        [(13, _conv(256, 256, 3)), (14, nn.ReLU())],
    ]


def _alex_trunk() -> list[list[tuple[int, nn.Module]]]:
    """The original AlexNet features (torchvision numbering), tapped after each ReLU, as LPIPS does."""
    return [
        [(0, _conv(3, 64, 11, stride=4, pad=2)), (1, nn.ReLU())],
        [(2, nn.MaxPool2d(3, stride=2)), (3, _conv(64, 192, 5)), (4, nn.ReLU())],
        [(5, nn.MaxPool2d(3, stride=2)), (6, _conv(192, 384, 3)), (7, nn.ReLU())],
        [(8, _conv(384, 256, 3)), (9, nn.ReLU())],
        [(10, _conv(256, 256, 3)), (11, nn.ReLU())],
    ]


_VGG16 = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512]


def _vgg_trunk(shift_tolerant: bool) -> list[list[tuple[int, nn.Module]]]:
    """VGG16 features up to relu5_3, cut after relu1_2, 2_2, 3_3, 4_3, 5_3. Shift-tolerant: every
    2x2/stride-2 max-pool becomes a 2x2/stride-1 max-pool followed by a blur-pool."""
    slices: list[list[tuple[int, nn.Module]]] = [[]]
    idx, cin = 0, 3
    for v in _VGG16:
        if v == "M":
            slices.append([])
            if shift_tolerant:
                slices[-1] += [(idx, nn.MaxPool2d(2, stride=1)), (idx + 1, BlurPool(cin))]
                idx += 2
            else:
                slices[-1].append((idx, nn.MaxPool2d(2, stride=2)))
                idx += 1
        else:
            slices[-1] += [(idx, _conv(cin, v, 3)), (idx + 1, nn.ReLU())]
            idx, cin = idx + 2, v
    return slices


_CHANNELS = {"alex": [64, 192, 384, 256, 256], "vgg": [64, 128, 256, 512, 512]}


def _unit_normalize(x: torch.Tensor, eps: float = 1e-10) -> torch.Tensor:
    return x / (x.pow(2).sum(dim=1, keepdim=True).sqrt() + eps)


class LPIPSNet(nn.Module):
    """LPIPS distance network (ours, plain torch): ``scaling_layer`` -> trunk ``net.slice1..5`` ->
    channel-unit-normalised features -> squared difference -> heads ``lin0..lin4`` -> spatial
    mean -> sum over the five layers.

    ``shift_tolerant=True`` builds the ST-LPIPS trunk (loads ``stlpips-pytorch``'s checkpoints with
    ``strict=True``); ``False`` the original LPIPS trunk (torchvision's AlexNet / VGG16 numbering).
    :meth:`forward` takes two batches in [0, 1] and returns one distance per image, shape (N,).
    """

    def __init__(self, net: str = "alex", shift_tolerant: bool = True):
        super().__init__()
        if net not in _CHANNELS:
            raise ValueError(f"net must be 'alex' or 'vgg', got {net!r}")
        self.net_name, self.shift_tolerant = net, shift_tolerant
        self.scaling_layer = _Scaling()
        if net == "alex":
            layout = _st_alex_trunk() if shift_tolerant else _alex_trunk()
        else:
            layout = _vgg_trunk(shift_tolerant)
        self.net = _stages(layout)
        for k, c in enumerate(_CHANNELS[net]):
            self.add_module(f"lin{k}", _Head(c))
        self.eval()

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        h = self.scaling_layer(2.0 * x - 1.0)  # [0, 1] -> [-1, 1] -> ImageNet-normalised
        out = []
        for stage in self.net.values():
            h = stage(h)
            out.append(h)
        return out

    def forward(self, x0: torch.Tensor, x1: torch.Tensor) -> torch.Tensor:
        n = x0.shape[0]
        feats = self.features(torch.cat([x0, x1]))  # one trunk pass for both images
        total = x0.new_zeros(n)
        for k, f in enumerate(feats):
            f = _unit_normalize(f)
            diff = (f[:n] - f[n:]).pow(2)
            total = total + getattr(self, f"lin{k}")(diff).mean(dim=(1, 2, 3))
        return total


# --- ST-LPIPS ------------------------------------------------------------------------------------
def _unavailable_message(detail: str) -> str:
    return (
        f"ST-LPIPS weights not found ({detail}). Install them with:\n    {ST_LPIPS_INSTALL}\n"
        "(--no-deps on purpose: the wheel's own module imports torchvision, which progvc_lab never "
        "imports; only its .pth weight files are read.)"
    )


def st_lpips_weights_path(net: str = "alex") -> Path:
    """Path of the ST-LPIPS checkpoint for ``net`` inside the installed ``stlpips-pytorch``
    distribution (located through ``importlib.metadata``; the package is never imported).
    Raises :class:`MetricUnavailable` (saying how to install) when it is not there."""
    if net not in _ST_LPIPS_FILES:
        raise ValueError(f"net must be 'alex' or 'vgg', got {net!r}")
    try:
        dist = importlib.metadata.distribution(ST_LPIPS_DIST)
    except importlib.metadata.PackageNotFoundError:
        raise MetricUnavailable(_unavailable_message(f"distribution {ST_LPIPS_DIST!r} is not installed")) from None
    wanted = f"weights/vST0.0/{_ST_LPIPS_FILES[net]}"
    candidates = [f for f in (dist.files or []) if str(f).replace("\\", "/").endswith(wanted)]
    paths = [Path(dist.locate_file(f)) for f in candidates]
    paths.append(Path(dist.locate_file(f"stlpips_pytorch/{wanted}")))  # no RECORD file: usual layout
    for path in paths:
        if path.is_file():
            return path
    raise MetricUnavailable(
        _unavailable_message(f"{ST_LPIPS_DIST} {dist.version} is installed but has no {wanted}")
    )


def st_lpips_available(net: str = "alex") -> tuple[bool, str]:
    """(True, path of the weights) when ST-LPIPS can run, else (False, how to install)."""
    try:
        return True, str(st_lpips_weights_path(net))
    except MetricUnavailable as err:
        return False, str(err)


def _load_state(path: str | os.PathLike) -> dict:
    state = torch.load(os.fspath(path), map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
        raise ValueError(f"{path}: expected a state dict (a mapping of names to tensors)")
    return state


@functools.lru_cache(maxsize=None)
def _st_lpips_model(net: str, device: str) -> LPIPSNet:
    model = LPIPSNet(net, shift_tolerant=True)
    model.load_state_dict(_load_state(st_lpips_weights_path(net)), strict=True)
    return model.to(device).eval().requires_grad_(False)


def _batched(model: nn.Module, a: torch.Tensor, b: torch.Tensor, batch: int) -> torch.Tensor:
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    with torch.no_grad():
        return torch.cat([model(a[i : i + batch], b[i : i + batch]) for i in range(0, a.shape[0], batch)])


def st_lpips_per_frame(a, b, net: str = "alex", batch: int = 8) -> torch.Tensor:
    """ST-LPIPS of each frame pair, shape (T,). See :func:`st_lpips`."""
    a, b = _pair(a, b)
    model = _st_lpips_model(net, str(a.device))
    return _batched(model, a, b, batch).cpu()


def st_lpips(a, b, net: str = "alex", batch: int = 8) -> float:
    """Shift-tolerant LPIPS (Ghildyal & Liu 2022), mean over frames; 0 = identical, lower is better.

    ``a``, ``b``: (T, 3, H, W) or (3, H, W) RGB in [0, 1], same shape (any size from about 32 px;
    QCIF and 416x240 are fine). ``net``: "alex" (default, 2.5 M parameters) or "vgg" (14.7 M, slower).
    ``batch``: frame pairs per forward pass. Raises :class:`MetricUnavailable` when the weights
    are not installed (``pip install --no-deps stlpips-pytorch==0.0.2``).
    """
    return float(st_lpips_per_frame(a, b, net=net, batch=batch).mean())


# --- GMSD ----------------------------------------------------------------------------------------
_PREWITT_X = torch.tensor([[1.0, 0.0, -1.0], [1.0, 0.0, -1.0], [1.0, 0.0, -1.0]]) / 3.0
GMSD_C = 170.0


def _luma255(x: torch.Tensor) -> torch.Tensor:
    """BT.601 luma (MATLAB rgb2gray weights) in 0..255, shape (T, 1, H, W)."""
    return 255.0 * (0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3])


def _gradient_magnitude(y: torch.Tensor) -> torch.Tensor:
    """MATLAB ``conv2(Y, k, 'same')`` with the Prewitt pair: true convolution, zero padding."""
    kx = torch.flip(_PREWITT_X, dims=(0, 1)).to(y)  # conv2 flips the kernel; F.conv2d correlates
    k = torch.stack([kx, kx.t()])[:, None]
    g = F.conv2d(F.pad(y, (1, 1, 1, 1)), k)
    return g.pow(2).sum(dim=1, keepdim=True).sqrt()


def _downsample2(y: torch.Tensor) -> torch.Tensor:
    """``conv2(Y, ones(2)/4, 'same')`` then every 2nd sample from the first: the mean of each 2x2
    block (a zero row/column completes blocks at odd sizes, as in the reference code)."""
    y = F.pad(y, (0, 1, 0, 1))
    return F.avg_pool2d(y, 2, stride=1)[:, :, ::2, ::2]


def gms_map(a, b, c: float = GMSD_C) -> torch.Tensor:
    """Gradient-magnitude similarity map of each frame, (T, 1, ceil(H/2), ceil(W/2)), in (0, 1]."""
    a, b = _pair(a, b)
    a, b = a.double(), b.double()
    m1 = _gradient_magnitude(_downsample2(_luma255(a)))
    m2 = _gradient_magnitude(_downsample2(_luma255(b)))
    return (2.0 * m1 * m2 + c) / (m1.pow(2) + m2.pow(2) + c)


def gmsd_per_frame(a, b, c: float = GMSD_C) -> torch.Tensor:
    """GMSD of each frame pair, shape (T,) float64. See :func:`gmsd`."""
    q = gms_map(a, b, c)
    return q.flatten(1).std(dim=1, unbiased=True)  # MATLAB std2: N - 1 normalisation


def gmsd(a, b, c: float = GMSD_C) -> float:
    """Gradient Magnitude Similarity Deviation (Xue et al. 2014), mean over frames; 0 = identical.

    The paper's setting: luma 0..255, 2x2 mean and down-sampling by 2, Prewitt gradients, c = 170,
    standard deviation of the similarity map. No weights; float64 throughout.
    """
    return float(gmsd_per_frame(a, b, c).mean())


# --- LPIPS and DISTS from the user's weights -----------------------------------------------------
def _need_weights(metric: str, weights, layout: str) -> Path:
    if weights is None:
        raise MetricUnavailable(
            f"{metric} needs a weights file: progvc_lab ships none and never downloads any. "
            f"Pass weights=PATH to a torch state dict with this layout: {layout}"
        )
    path = Path(weights).expanduser()
    if not path.is_file():
        raise MetricUnavailable(f"{metric}: weights file {path} does not exist. Expected layout: {layout}")
    return path


_LPIPS_LAYOUT = (
    "the full state dict of an LPIPS model, i.e. keys 'net.slice1.0.weight' ... (torchvision's AlexNet "
    "or VGG16 feature indices under slice1..slice5, as lpips.LPIPS(net=...).state_dict() names them), "
    "'lin0.model.1.weight' ... 'lin4.model.1.weight' (duplicates named 'lins.<k>.*' are accepted), "
    "and optionally 'scaling_layer.shift/scale'; "
    "torchvision-style 'features.<i>.weight/bias' keys are accepted for the trunk instead of 'net.slice*'. "
    "Make one where lpips is installed: torch.save(lpips.LPIPS(net='alex').state_dict(), 'lpips_alex.pth')"
)


def _remap_lpips(state: dict, model: LPIPSNet) -> dict:
    state = dict(state)
    where = {}  # torchvision feature index -> slice name
    for name in model.net:
        for idx in model.net[name]._modules:
            where[idx] = name
    for key in [k for k in state if k.startswith("features.")]:
        _, idx, leaf = key.split(".", 2)
        if idx in where:
            state[f"net.{where[idx]}.{idx}.{leaf}"] = state.pop(key)
    for key in [k for k in state if k.startswith("lins.")]:  # lpips.LPIPS also lists its heads as lins.<k>
        _, k, leaf = key.split(".", 2)
        value = state.pop(key)
        state.setdefault(f"lin{k}.{leaf}", value)
    for key in ("scaling_layer.shift", "scaling_layer.scale"):
        state.setdefault(key, model.state_dict()[key])
    return state


@functools.lru_cache(maxsize=8)
def _lpips_model(path: str, mtime: float, net: str, device: str) -> LPIPSNet:
    model = LPIPSNet(net, shift_tolerant=False)
    try:
        model.load_state_dict(_remap_lpips(_load_state(path), model), strict=True)
    except RuntimeError as err:
        raise ValueError(f"{path} does not fit LPIPS-{net}: {err}\nExpected layout: {_LPIPS_LAYOUT}") from None
    return model.to(device).eval().requires_grad_(False)


def lpips(a, b, weights=None, net: str = "alex", batch: int = 8) -> float:
    """LPIPS (Zhang et al. 2018, v0.1), mean over frames, from the weights file you give.

    ``weights``: path to a state dict in the layout of :class:`LPIPSNet` with
    ``shift_tolerant=False`` (= the state dict of ``lpips.LPIPS(net=net)``: trunk and linear heads
    together; see the error message for details). Without one: :class:`MetricUnavailable`.
    """
    path = _need_weights("LPIPS", weights, _LPIPS_LAYOUT)
    a, b = _pair(a, b)
    model = _lpips_model(str(path.resolve()), path.stat().st_mtime, net, str(a.device))
    return float(_batched(model, a, b, batch).mean())


_DISTS_CHANNELS = [3, 64, 128, 256, 512, 512]
_DISTS_LAYOUT = (
    "'features.<i>.weight/bias' for torchvision's VGG16 convolutions up to conv5_3 "
    "(i in 0 2 5 7 10 12 14 17 19 21 24 26 28, e.g. the 'features.*' entries of "
    "torchvision.models.vgg16(weights='IMAGENET1K_V1').state_dict()) plus 'alpha' and 'beta', "
    "each (1, 1475, 1, 1), from the DISTS release (its weights.pt)"
)


class DISTSNet(nn.Module):
    """DISTS (Ding et al. 2020) in plain torch: ImageNet-normalised VGG16 with L2-pooling instead
    of max-pooling; the input and relu1_2 ... relu5_3 feed per-channel structure and texture
    similarities, weighted by ``alpha``/``beta`` (normalised to sum 1). State-dict keys:
    ``features.<torchvision index>.weight/bias``, ``alpha``, ``beta``."""

    def __init__(self):
        super().__init__()
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406])[None, :, None, None], persistent=False)
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225])[None, :, None, None], persistent=False)
        layers: list[tuple[str, nn.Module]] = []
        idx, cin = 0, 3
        for v in _VGG16:
            if v == "M":
                layers.append((str(idx), L2Pool(cin)))
                idx += 1
            else:
                layers += [(str(idx), _conv(cin, v, 3)), (str(idx + 1), nn.ReLU())]
                idx, cin = idx + 2, v
        self.features = nn.Sequential(OrderedDict(layers))
        self.taps = {3, 8, 15, 22, 29}  # relu1_2, relu2_2, relu3_3, relu4_3, relu5_3
        n = sum(_DISTS_CHANNELS)
        self.alpha = nn.Parameter(torch.full((1, n, 1, 1), 0.1))
        self.beta = nn.Parameter(torch.full((1, n, 1, 1), 0.1))
        self.eval()

    def _feats(self, x: torch.Tensor) -> list[torch.Tensor]:
        out, h = [x], (x - self.mean) / self.std
        for i, layer in enumerate(self.features):
            h = layer(h)
            if i in self.taps:
                out.append(h)
        return out

    def forward(self, x0: torch.Tensor, x1: torch.Tensor) -> torch.Tensor:
        n, c1, c2 = x0.shape[0], 1e-6, 1e-6
        feats = self._feats(torch.cat([x0, x1]))
        w = self.alpha.sum() + self.beta.sum()
        alphas = torch.split(self.alpha / w, _DISTS_CHANNELS, dim=1)
        betas = torch.split(self.beta / w, _DISTS_CHANNELS, dim=1)
        total = x0.new_zeros(n)
        for f, al, be in zip(feats, alphas, betas):
            x, y = f[:n], f[n:]
            mx, my = x.mean(dim=(2, 3), keepdim=True), y.mean(dim=(2, 3), keepdim=True)
            structure = (2 * mx * my + c1) / (mx.pow(2) + my.pow(2) + c1)
            vx = (x - mx).pow(2).mean(dim=(2, 3), keepdim=True)
            vy = (y - my).pow(2).mean(dim=(2, 3), keepdim=True)
            cov = (x * y).mean(dim=(2, 3), keepdim=True) - mx * my
            texture = (2 * cov + c2) / (vx + vy + c2)
            total = total + (al * structure + be * texture).sum(dim=(1, 2, 3))
        return 1.0 - total


@functools.lru_cache(maxsize=4)
def _dists_model(path: str, mtime: float, device: str) -> DISTSNet:
    model = DISTSNet()
    state = {k[len("vgg."):] if k.startswith("vgg.") else k: v for k, v in _load_state(path).items()}
    state = {k: v.reshape(1, -1, 1, 1) if k in ("alpha", "beta") else v for k, v in state.items()}
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise ValueError(f"{path} does not fit DISTS: {err}\nExpected layout: {_DISTS_LAYOUT}") from None
    return model.to(device).eval().requires_grad_(False)


def dists(a, b, weights=None, batch: int = 4) -> float:
    """DISTS (Ding et al. 2020), mean over frames, from the weights file you give (layout: see
    :class:`DISTSNet` and the error message). Without one: :class:`MetricUnavailable`."""
    path = _need_weights("DISTS", weights, _DISTS_LAYOUT)
    a, b = _pair(a, b)
    model = _dists_model(str(path.resolve()), path.stat().st_mtime, str(a.device))
    return float(_batched(model, a, b, batch).mean())


def _self_check() -> str:  # pragma: no cover - a quick manual smoke test: python -m progvc_lab.perceptual
    ok, where = st_lpips_available()
    x = torch.rand(2, 3, 64, 64)
    lines = [f"ST-LPIPS available: {ok} ({where})", f"GMSD(x, x) = {gmsd(x, x):.3g}"]
    if ok:
        lines.append(f"ST-LPIPS(x, x) = {st_lpips(x, x):.3g}")
    return "\n".join(lines)


if __name__ == "__main__":  # pragma: no cover
    print(_self_check())
