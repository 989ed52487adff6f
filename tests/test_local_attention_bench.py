"""The index tables of ``benchmarks/local_attention.py`` (the tile-major layout whose speed it measures)."""
from __future__ import annotations

import importlib.util

import pytest
import torch

from progvc_lab.resources import REPO_ROOT

PATH = REPO_ROOT / "benchmarks" / "local_attention.py"


@pytest.fixture(scope="module")
def la():
    if not PATH.is_file():
        pytest.skip("needs the repository's benchmarks/ (not in an installed wheel)")
    spec = importlib.util.spec_from_file_location("local_attention", PATH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("h,w,t,halo", [(5, 7, 3, 1), (4, 4, 2, 0), (18, 22, 8, 3), (3, 9, 4, 2)])
def test_every_tile_sees_its_box_and_zero_keys_outside(la, h, w, t, halo):
    order, back, halo_idx = la.tile_layout(h, w, t, halo)
    P, tiles_w = order.numel(), (w + -w % t) // t
    assert P == (h + -h % t) * (w + -w % t)
    assert sorted(order[order < h * w].tolist()) == list(range(h * w))      # every token once, pads = L
    assert torch.equal(order[back], torch.arange(h * w))
    for y in range(h):
        for x in range(w):
            tile = int(back[y * w + x]) // (t * t)
            ty, tx = divmod(tile, tiles_w)
            box = sorted(yy * w + xx for yy in range(ty * t - halo, ty * t + t + halo)
                         for xx in range(tx * t - halo, tx * t + t + halo) if 0 <= yy < h and 0 <= xx < w)
            got = sorted(int(order[i]) for i in halo_idx[tile] if i < P)
            assert got == box, (y, x)
            assert int((halo_idx[tile] == P).sum()) == (t + 2 * halo) ** 2 - len(box)


def test_the_tiled_call_is_order_free_and_returns_original_order(la):
    """With a halo that covers the frame every tile sees every token: the tiled call then equals a dense
    call over the same keys plus the zero keys it pads with, token for token."""
    import torch.nn.functional as F

    from progvc_lab.stages.context_model import ContextModel

    torch.manual_seed(0)
    model = ContextModel(width=32, depth=2, heads=2, codebook_size=16).eval()
    h, w, t = 3, 5, 2
    halo = 5                                  # covers the whole frame from any tile
    layout = la.tile_layout(h, w, t, halo)
    order, _, halo_idx = layout
    P = order.numel()
    x = torch.randn(1, h * w, 32)
    prev = [(torch.randn(1, 2, P, 16), torch.randn(1, 2, P, 16)) for _ in model.layers]
    with torch.no_grad():
        got = la.tiled_call(model, x, prev, layout, t)
        # dense reference: each query of the frame sees the prev keys and own keys of every in-frame token
        # (in tile-major positions) and the same number of zero keys as its tile's halo has outside the frame
        n_zero = int((halo_idx[0] == P).sum())
        valid = order < h * w
        xt = torch.cat([x, x.new_zeros(1, 1, 32)], 1)[:, order]
        for layer, (kp, vp) in zip(model.layers, prev):
            q, k, v = layer.qkv_heads(xt)
            z = q.new_zeros(1, 2, n_zero, 16)
            keys = torch.cat([kp[:, :, valid], z, k[:, :, valid], z], 2)
            vals = torch.cat([vp[:, :, valid], z, v[:, :, valid], z], 2)
            xt = layer.finish(xt, F.scaled_dot_product_attention(q, keys, vals))
        want = model.head(model.ln_out(xt))[:, layout[1]]
    assert torch.allclose(got, want, atol=1e-5)
