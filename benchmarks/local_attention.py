"""What would attention restricted to a spatial neighbourhood save at the finest scale (issue 9)?

At the finest scale a block's tokens attend to every token of their own block, of the previous frame's
block at that scale and of the coarser scales of their frame (``progvc_sparse``), so a call's cost grows
with the square of the frame's pixels (``progvc-lab bench`` on 416x240: 116 ms per finest-scale call
against 14.9 ms at QCIF). This measures, with the shipped tiny's own Transformer layers, one
finest-scale call as the codec makes it (``ContextModel.block_logits``, dense attention over all those keys)
against the same call where the queries are cut into t x t tiles and a tile's own and previous-frame
keys are only the tokens of that tile and a halo around it (HaloNet-style blocked local attention,
gathered with ``unfold``: one batched dense attention per tile, so the pairs outside are never
computed; the coarser scales stay dense: "local"), and against "tiled": the same tiles with the block's
tokens kept in tile-major order through the whole call, halos gathered by one ``index_select`` and no
coarser keys (the block's input carries the coarser scales through f_hat). One process, median of the
repeats; the codec's call also builds its block input (embeddings, a few % of it), which the other two
take as given. It is a cost bound, not a codec: no shipped
model is trained for the local window, so the local call's logits are not tiny's.

    python benchmarks/local_attention.py [--tile 8] [--halo 3] [--threads 2] [--repeats 20]

Results for the 2-core reference machine: ``benchmarks/results/local_attention.txt``.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from progvc_lab.codec import Codec

SIZES = {"QCIF": (176, 144), "416x240": (416, 240), "CIF": (352, 288)}


def tile_queries(x_Hdhw: torch.Tensor, t: int) -> torch.Tensor:
    """(H, d, h, w) -> (H, n, t*t, d): the map cut into n tiles of t x t (zero padded to a multiple of t)."""
    H, d, h, w = x_Hdhw.shape
    x = F.pad(x_Hdhw, (0, -w % t, 0, -h % t))
    cols = F.unfold(x, t, stride=t)                               # (H, d*t*t, n)
    return cols.view(H, d, t * t, -1).permute(0, 3, 2, 1)


def tile_halos(x_Hdhw: torch.Tensor, t: int, halo: int) -> torch.Tensor:
    """(H, d, h, w) -> (H, n, (t+2 halo)^2, d): each tile's tokens and a border of ``halo`` around it."""
    H, d, h, w = x_Hdhw.shape
    x = F.pad(x_Hdhw, (halo, -w % t + halo, halo, -h % t + halo))
    e = t + 2 * halo
    cols = F.unfold(x, e, stride=t)                               # (H, d*e*e, n)
    return cols.view(H, d, e * e, -1).permute(0, 3, 2, 1)


def codec_call(model, schedule):
    """The codec's own finest-scale call (``ContextModel.block_logits`` of frame 1, as encoder and decoder
    make it) with random cached keys for the blocks the model's mask lets it read; returns the call and,
    per layer, those keys split into the coarser scales of frame 1 and the previous frame's block."""
    cfg = model.config
    K, H, d = len(schedule), cfg.heads, cfg.width // cfg.heads
    state = model.new_state(schedule[-1], schedule, 2)
    reads = [(b // K, b % K) for b in torch.nonzero(state.allowed_BB[K + K - 1]).flatten().tolist()
             if b != K + K - 1]
    if (0, K - 1) not in reads:
        raise SystemExit(f"mask {cfg.mask} does not read the previous frame's finest block: nothing to restrict")
    for blk in reads:
        hb, wb = schedule[blk[1]]
        state.kv[blk] = [(torch.randn(1, H, hb * wb, d), torch.randn(1, H, hb * wb, d)) for _ in model.layers]
    h, w = schedule[-1]
    state.tokens[(0, K - 1)] = torch.randint(cfg.codebook_size, (h, w))
    ctx = torch.randn(cfg.latent_dim, h, w)
    coarse = [blk for blk in reads if blk[0] == 1]
    keys = []
    for i in range(cfg.depth):
        kc = torch.cat([state.kv[blk][i][0] for blk in coarse], 2)
        vc = torch.cat([state.kv[blk][i][1] for blk in coarse], 2)
        keys.append((kc, vc, *state.kv[(0, K - 1)][i]))
    return (lambda: model.block_logits(state, 1, K - 1, ctx)), keys


def local_call(model, x, keys, hw, t, halo):
    """The same call, own and previous-frame keys restricted to the query's tile and its halo (HaloNet-style
    blocked local attention: one batched dense attention per tile, so no pair outside is computed). Keys
    and values outside the frame are zeros, as a convolution's zero padding, and not masked: a boolean or
    additive mask sends CPU ``scaled_dot_product_attention`` to a slower path (``sdpa_paths`` prints by
    how much), and a model trained with this layout learns with the padding."""
    h, w = hw
    for layer, (kc, vc, kp, vp) in zip(model.layers, keys):
        q, k, v = layer.qkv_heads(x)                               # (1, H, L, d)
        H, L, d = q.shape[1:]
        as_map = lambda z: z[0].transpose(1, 2).reshape(H, d, h, w)  # noqa: E731
        q_t = tile_queries(as_map(q), t).contiguous()              # (H, n, t^2, d); a strided q is slower (sdpa_paths)
        n = q_t.shape[1]
        k_t = torch.cat([kc[0][:, None].expand(H, n, -1, d), tile_halos(as_map(kp), t, halo),
                         tile_halos(as_map(k), t, halo)], 2)
        v_t = torch.cat([vc[0][:, None].expand(H, n, -1, d), tile_halos(as_map(vp), t, halo),
                         tile_halos(as_map(v), t, halo)], 2)
        o = F.scaled_dot_product_attention(q_t, k_t, v_t)          # (H, n, t^2, d)
        hp, wp = h + -h % t, w + -w % t
        o = F.fold(o.permute(0, 3, 2, 1).reshape(H, d * t * t, n), (hp, wp), t, stride=t)[:, :, :h, :w]
        x = layer.finish(x, o.reshape(H, d, L).transpose(1, 2)[None])
    return model.head(model.ln_out(x))


def tile_layout(h: int, w: int, t: int, halo: int):
    """Index tables of the tile-major layout: ``order`` (n*t*t,) the original token of every tile-major
    position (L, a zero pad token, where the map is padded to a multiple of t); ``back`` (L,) the tile-major
    position of every original token; ``halo_idx`` (n, (t+2 halo)^2) for every tile the tile-major positions
    of its tile and halo, or n*t*t (a zero key) outside the frame."""
    hp, wp = h + -h % t, w + -w % t
    ys, xs = torch.meshgrid(torch.arange(hp), torch.arange(wp), indexing="ij")
    tile = (ys // t) * (wp // t) + xs // t
    within = (ys % t) * t + xs % t
    pos = tile * t * t + within                                           # tile-major position of (y, x)
    L, P = h * w, hp * wp
    order = torch.full((P,), L, dtype=torch.long)
    inside = (ys < h) & (xs < w)
    order[pos[inside]] = (ys * w + xs)[inside]
    back = pos[:h, :w].reshape(-1)
    e = t + 2 * halo
    ty, tx = torch.meshgrid(torch.arange(hp // t), torch.arange(wp // t), indexing="ij")
    dy, dx = torch.meshgrid(torch.arange(e) - halo, torch.arange(e) - halo, indexing="ij")
    yy = ty.reshape(-1, 1) * t + dy.reshape(1, -1)
    xx = tx.reshape(-1, 1) * t + dx.reshape(1, -1)
    ok = (yy >= 0) & (yy < h) & (xx >= 0) & (xx < w)
    halo_idx = torch.where(ok, pos[yy.clamp(0, hp - 1), xx.clamp(0, wp - 1)], torch.tensor(P))
    return order, back, halo_idx


def tiled_call(model, x, keys, layout, t):
    """``local_call`` without the reshuffling: the block's tokens are put in tile-major order once (every
    per-token op is order-free), the halos are one ``index_select`` each (a zero key outside the frame),
    and the previous frame's keys are read in the same layout, as a cache written by that frame would
    hold them. Coarser scales are not attended (the block's input already carries them, through f_hat)."""
    order, back, halo_idx = layout
    x = torch.cat([x, x.new_zeros(1, 1, x.shape[-1])], 1)[:, order]            # (1, n t^2, D)
    n, e2 = halo_idx.shape
    for layer, (kp, vp) in zip(model.layers, keys):
        q, k, v = layer.qkv_heads(x)
        H, d = q.shape[1], q.shape[-1]
        zero = q.new_zeros(H, 1, d)
        halo = lambda z: torch.cat([z[0], zero], 1).index_select(1, halo_idx.reshape(-1)).view(H, n, e2, d)  # noqa: E731
        o = F.scaled_dot_product_attention(q[0].reshape(H, n, t * t, d),
                                           torch.cat([halo(kp), halo(k)], 2), torch.cat([halo(vp), halo(v)], 2))
        x = layer.finish(x, o.reshape(1, H, n * t * t, d))
    return model.head(model.ln_out(x))[:, back]


def sdpa_paths(H: int, n: int, q_len: int, k_len: int, d: int, repeats: int) -> dict:
    """ms of one tiled ``scaled_dot_product_attention`` (H, n, q_len, d) x (H, n, k_len, d): contiguous
    queries, the same with a boolean mask (all True: the same result), and strided queries (the
    (H, d, t*t, n) -> (H, n, t*t, d) view ``unfold`` leaves, d not the fastest dimension)."""
    q = torch.randn(H, n, q_len, d)
    k, v = torch.randn(H, n, k_len, d), torch.randn(H, n, k_len, d)
    mask = torch.ones(n, 1, k_len, dtype=torch.bool)
    q_strided = torch.randn(H, d, q_len, n).permute(0, 3, 2, 1)
    runs = {"contiguous": lambda: F.scaled_dot_product_attention(q, k, v),
            "boolean mask": lambda: F.scaled_dot_product_attention(q, k, v, attn_mask=mask),
            "strided queries": lambda: F.scaled_dot_product_attention(q_strided, k, v)}
    with torch.inference_mode():
        return {name: statistics.median(timed(fn, repeats)) * 1e3 for name, fn in runs.items()}


def timed(fn, repeats):
    fn()
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tile", type=int, default=8, help="queries attend in tiles of t x t tokens")
    ap.add_argument("--halo", type=int, default=3, help="and see this many tokens around their tile")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=20)
    args = ap.parse_args(argv)
    if args.tile < 1 or args.halo < 0:
        ap.error("--tile must be positive and --halo not negative")
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    codec = Codec.from_pretrained("tiny")
    model = codec.context_model.eval()
    cfg = model.config
    H, d = cfg.heads, cfg.width // cfg.heads
    t, halo = args.tile, args.halo
    e = t + 2 * halo
    print(f"tiny's Transformer ({cfg.depth} layers, width {cfg.width}, {H} heads), one finest-scale call, "
          f"{args.threads} threads, tiles {t}x{t} with a halo of {halo} ({e}x{e} own and previous keys), "
          f"median of {args.repeats}")
    print(f"{'size':>8} {'tokens':>6} {'keys dense':>10} {'keys local':>10} {'dense ms':>9} {'local ms':>9} "
          f"{'speed-up':>8} | {'tiled: keys':>11} {'ms':>7} {'speed-up':>8}")
    for name, (W_, H_) in SIZES.items():
        st = codec.tokenizer.config.stride
        schedule = codec.quantizer.schedule((-(-H_ // st), -(-W_ // st)))   # the padded frame's latent
        h, w = schedule[-1]
        L = h * w
        x = torch.randn(1, L, cfg.width)
        dense, local_keys = codec_call(model, schedule)
        Lc = local_keys[0][0].shape[2]                                 # keys of the coarser scales
        with torch.inference_mode():
            td = timed(dense, args.repeats)
            tl = timed(lambda: local_call(model, x, local_keys, (h, w), t, halo), args.repeats)
            layout = tile_layout(h, w, t, halo)
            P = layout[0].numel()
            tiled_keys = [(torch.randn(1, H, P, d), torch.randn(1, H, P, d)) for _ in model.layers]
            tn = timed(lambda: tiled_call(model, x, tiled_keys, layout, t), args.repeats)
        md, ml, mn = (statistics.median(z) * 1e3 for z in (td, tl, tn))
        print(f"{name:>8} {L:6d} {Lc + 2 * L:10d} {Lc + 2 * e * e:10d} {md:9.2f} {ml:9.2f} {md / ml:7.2f}x | "
              f"{2 * e * e:11d} {mn:7.2f} {md / mn:7.2f}x", flush=True)
        if name == "416x240":   # why the naive gather is slow: one tile attention on the paths it may take
            n = (-(-h // t)) * (-(-w // t))
            why = (name, n, Lc + 2 * e * e, sdpa_paths(H, n, t * t, Lc + 2 * e * e, d, args.repeats))
    name, n, keys, paths = why
    print(f"one layer's tile attention at {name} ({n} tiles, {keys} keys): " + ", ".join(
        f"{k} {v:.2f} ms ({v / paths['contiguous']:.1f}x)" for k, v in paths.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
