"""progvc_lab: a notebook-first toolkit for progressive generative video compression.

    frames -> Tokenizer -> MultiScaleResidualQuantizer -> ContextModel + EntropyCoder -> .pgvc bytes
    bytes  -> (first k scales) -> DetailSampler fills the rest -> frames

Start with ``Codec.from_pretrained("tiny")``; see README.md and notebooks/.
"""
__version__ = "0.1.0"


def __getattr__(name):  # lazy, so `import progvc_lab.data` stays light
    if name in ("Codec", "CodecError"):
        from . import codec
        return getattr(codec, name)
    if name in ("BitstreamError",):
        from .bitstream import BitstreamError
        return BitstreamError
    raise AttributeError(name)
