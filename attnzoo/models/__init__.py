"""The models: encoder-decoders, the decoder-only LM, ViT, CNN, MemN2N, the captioner; decoding."""

from .lm import DecoderLM, LMConfig

__all__ = ["DecoderLM", "LMConfig"]
