"""Training with PyTorch Lightning.

Stage 1 (``TokenizerModule``): tokenizer + multi-scale residual quantizer, reconstruction losses.
Stage 2 (``ContextModule``): the context model on the frozen stage-1 tokens, cross-entropy (bits).
Both are driven by ``LightningCLI`` with the YAML files in ``configs/`` (``progvc-lab train``).
"""
from .modules import ContextModule, TokenizerModule, export_codec, load_stage1

__all__ = ["TokenizerModule", "ContextModule", "export_codec", "load_stage1"]
