"""The five stages of the codec, each a small module with one entry class.

``protocols``: the interface of each kind of stage; ``registry``: stages by name, and which class
paths a checkpoint may name."""
from . import protocols, registry
from .bsq import BinarySphericalQuantizer
from .context_model import ContextModel, ContextModelConfig
from .entropy import TorchacCoder, get_coder, logits_to_cdf, model_bits
from .masks import MASKS, attention_cost, build_mask, is_truncation_safe
from .quantizer import MultiScaleResidualQuantizer, QuantizerConfig, scale_schedule
from .sampler import DetailSampler
from .tokenizer import ConvTokenizer, TokenizerConfig

__all__ = ["protocols", "registry", "BinarySphericalQuantizer", "ContextModel", "ContextModelConfig", "TorchacCoder", "get_coder", "logits_to_cdf",
           "model_bits", "MASKS", "attention_cost", "build_mask", "is_truncation_safe",
           "MultiScaleResidualQuantizer", "QuantizerConfig", "scale_schedule", "DetailSampler",
           "ConvTokenizer", "TokenizerConfig"]
