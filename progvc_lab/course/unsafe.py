"""Unsafe masks, made visible: code a GOP frame by frame under any mask, cut it, and decode what is left.

The codec codes a mask that is not truncation safe for a fixed number of scales and synthesizes the
unsent ones identically on both sides (``walk.synthesize``), so its streams never desynchronise; to
show what goes wrong without that, this module codes with the context model directly, in **frame-major** order (frame 0 scales 0..K-1, then frame 1,
...), the order VAR's block-causal mask was made for::

    from progvc_lab.course import unsafe
    run = unsafe.frame_major_cut(codec, video[:3], mask="var", k=3)
    run["agree_T"]          # per frame: share of the sent tokens the decoder got right

The encoder sees every block. A decoder of the stream cut after k scales has the strings of scales
< k only; for a block it was not sent it runs the model and takes the argmax token (the best guess it
has), so that later blocks have *something* to attend to. Under ``progvc_sparse`` no sent block ever
attends to an unsent one, so the decode is exact. Under ``var`` block (t, 0) attends to the finest
scales of frame t-1, which the decoder only guessed: its logits, hence its integer CDFs, differ from
the encoder's, and the arithmetic decoder goes off the rails from frame 1 on (notebook 10).

``violating_edges(allowed_BB, K)`` lists the (query, key) block pairs that make a mask unsafe: a key at
a finer scale than its query. The mask explorer draws them in red.
"""
from __future__ import annotations

import copy

import torch

from ..stages.entropy import get_coder, logits_to_cdf
from ..stages.masks import block_index, build_mask


def violating_edges(allowed_BB: torch.Tensor, num_scales: int) -> list[tuple[tuple[int, int], tuple[int, int]]]:
    """Every allowed (query block, key block) pair whose key has a finer scale than its query:
    [((t_q, s_q), (t_k, s_k)), ...]. Empty iff the mask is truncation safe."""
    num_frames = allowed_BB.shape[0] // num_scales
    _, s_B = block_index(num_frames, num_scales)
    bad = allowed_BB.bool() & (s_B[None, :] > s_B[:, None])
    return [((q // num_scales, q % num_scales), (k // num_scales, k % num_scales))
            for q, k in torch.nonzero(bad).tolist()]


def with_mask(context_model, mask: str, window: int | None = None):
    """A copy of ``context_model`` (same weights) that attends under ``mask``. The weights were trained
    for another mask, which costs bits, not correctness: coding only needs both sides to agree."""
    cm = copy.deepcopy(context_model)
    cm.config.mask = mask
    if window is not None:
        cm.config.window = window
    build_mask(mask, 1, cm.config.num_scales, cm.config.window)    # an unknown name fails here
    return cm


@torch.no_grad()
def frame_major_cut(codec, video: torch.Tensor, mask: str = "var", k: int = 3, window: int | None = None,
                    coder=None) -> dict:
    """Encode one GOP of ``video`` frame-major under ``mask``, cut after ``k`` scales, decode.

    Returns tokens_enc / tokens_dec (per scale (T, h_s, w_s), scales < k), agree_T (share of the sent
    tokens decoded right, per frame), first_wrong (the first (t, s) block that decoded wrong, or
    None), bytes_sent and the mask's violating edges."""
    from ..codec import deterministic

    cm = with_mask(codec.context_model, mask, window)
    coder = coder or get_coder("torchac")
    q = codec.quantizer
    T = video.shape[0]
    with deterministic(codec.config.coding_threads):
        tokens, latent_hw = codec.tokenize(video)
        schedule = q.schedule(latent_hw)
        K = len(schedule)

        def ctx(tok_by_scale, t, s):           # frame t's f_hat of scales < s, at scale s's size
            return q.context_input([tok_by_scale[j][t:t + 1] for j in range(s)], s, latent_hw, num_frames=1)[0]

        # encoder: every block, frame-major
        enc = cm.new_state(latent_hw, schedule, T)
        strings = {}
        for t in range(T):
            for s in range(K):
                logits = cm.block_logits(enc, t, s, ctx(tokens, t, s))
                tok = tokens[s][t]
                enc.tokens[(t, s)] = tok
                if s < k:                          # only what the cut keeps is ever sent
                    strings[(t, s)] = coder.encode(logits_to_cdf(logits), tok.flatten())
        # decoder of the cut stream: sent blocks decoded, unsent ones guessed (argmax)
        dec = cm.new_state(latent_hw, schedule, T)
        known = [torch.zeros_like(tok) for tok in tokens]
        for t in range(T):
            for s in range(K):
                logits = cm.block_logits(dec, t, s, ctx(known, t, s))
                if s < k:
                    tok = coder.decode(logits_to_cdf(logits), strings[(t, s)]).view(schedule[s])
                else:
                    tok = logits.argmax(-1).view(schedule[s])
                known[s][t] = tok
                dec.tokens[(t, s)] = tok
    agree_T = torch.stack([torch.cat([(known[s][t] == tokens[s][t]).flatten() for s in range(k)]).double().mean()
                           for t in range(T)])
    first_wrong = next(((t, s) for t in range(T) for s in range(k) if not torch.equal(known[s][t], tokens[s][t])),
                       None)
    allowed = build_mask(mask, T, K, cm.config.window)
    return {"mask": mask, "k": k, "tokens_enc": tokens[:k], "tokens_dec": known[:k], "latent_hw": latent_hw,
            "agree_T": agree_T, "first_wrong": first_wrong, "bytes_sent": sum(len(b) for b in strings.values()),
            "violations": violating_edges(allowed, K)}


@torch.no_grad()
def decoded_frames(codec, run: dict, size) -> tuple[torch.Tensor, torch.Tensor]:
    """The frames the encoder meant (its k scales) and the ones the cut decoder got, (T, 3, H, W)."""
    k, hw = run["k"], run["latent_hw"]
    meant = codec.reconstruct(run["tokens_enc"], hw, size, upto=k).clamp(0, 1)
    got = codec.reconstruct(run["tokens_dec"], hw, size, upto=k).clamp(0, 1)
    return meant, got
