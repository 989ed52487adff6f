"""Build a stage yourself and plug it into the codec (notebook 12).

::

    from progvc_lab.course.build_stage import StudentQuantizer
    q = StudentQuantizer(codec.quantizer, tokenize=my_tokenize, tokens_to_latent=my_tokens_to_latent,
                         expected_code=my_expected_code)
    mine = Codec(codec.tokenizer, q, codec.context_model)      # same weights, the student's loops

``StudentQuantizer`` is the shipped quantizer (the same codebook, phi convolutions, schedule, so the
same model fingerprint) with up to three of its methods replaced by the student's functions, each
called as ``fn(quantizer, ...)``:

* ``tokenize(q, f_NChw) -> [tokens (N, h_s, w_s)]``: the residual loop (``Codec.tokenize``, analysis);
* ``tokens_to_latent(q, tokens, latent_hw, upto) -> f_hat (N, C, h, w)``: the decoder path. Encoder
  AND decoder build every context-model input with it (``context_input``), and the tokenizer's decoder
  reconstructs frames from it, so it must be bit-identical to the package's, not merely close;
* ``expected_code(probs_LV, codebook_VC, size) -> (C, h_s, w_s)``: the ``mean`` detail sampler's fill.

The encoder's own token choice (``Codec._TokenChooser``, with RDO) runs the same loop inside the codec
and never calls ``tokenize``; with ``rdo_lambda=0`` it picks exactly the nearest-code tokens that a
correct ``tokenize`` returns, so the check compares the student's tokens with the stream's.
"""
from __future__ import annotations

import copy
from typing import Callable

import torch

from ..stages.quantizer import MultiScaleResidualQuantizer


class StudentQuantizer(MultiScaleResidualQuantizer):
    """A copy of ``base`` (weights and config) whose tokenize / tokens_to_latent / expected_code are the
    given functions (``None``: keep the package's)."""

    def __init__(self, base: MultiScaleResidualQuantizer, tokenize: Callable | None = None,
                 tokens_to_latent: Callable | None = None, expected_code: Callable | None = None):
        super().__init__(base.config)   # every field of the base's config (lookup too)
        self.load_state_dict(copy.deepcopy(base.state_dict()))
        self.eval()
        self._tokenize, self._to_latent, self._expected = tokenize, tokens_to_latent, expected_code

    @torch.no_grad()
    def tokenize(self, f_NChw):
        if self._tokenize is None:
            return super().tokenize(f_NChw)
        return self._tokenize(self, f_NChw)

    def tokens_to_latent(self, tokens, latent_hw, upto=None, codes=None):
        if self._to_latent is None:
            return super().tokens_to_latent(tokens, latent_hw, upto, codes)
        k = len(tokens) if upto is None else upto
        f_hat = self._to_latent(self, tokens, tuple(latent_hw), k)
        for j, z in enumerate(codes or []):          # a latent fill after the token scales, as the package does
            f_hat = f_hat + self.code_contribution(z, k + j, latent_hw)
        return f_hat

    def expected_code(self, probs_LV, size):
        if self._expected is None:
            return super().expected_code(probs_LV, size)
        return self._expected(probs_LV, self.codebook.weight, tuple(size))


@torch.no_grad()
def fill_quality(codec, video, fps, ks=(2, 3, 4), samplers=("zero", "mean")) -> list[dict]:
    """PSNR-RGB and MS-SSIM of the stream cut after each k, the unsent scales filled by each sampler:
    [{"k", "sampler", "psnr", "ms_ssim", "bytes"}]. One encode (``rdo_lambda`` as configured)."""
    from .. import bitstream
    from ..metrics import ms_ssim, psnr

    data = codec.encode(video, fps)
    rows = []
    for k in ks:
        cut = bitstream.truncate(data, k)
        for name in samplers:
            dec = codec.decode(cut, sampler=name)
            small = min(video.shape[-2:]) <= 96          # MS-SSIM needs 5 scales of a 7-tap window
            rows.append({"k": k, "sampler": name, "psnr": psnr(dec, video),
                         "ms_ssim": None if small else ms_ssim(dec, video), "bytes": len(cut)})
    return rows
