"""The attention families, one module each (see DESIGN.md)."""

from .base import AttentionState, ImageAttention, StepAttention, VisualOutput
from .content import (
                      AdditiveAttention,
                      ContentAttention,
                      CosineAttention,
                      DotAttention,
                      GeneralAttention,
                      ScaledDotAttention,
)
from .convolutional import AugmentedConv2d, ConvCache, DynamicConv, LightweightConv, MultiStepAttention
from .differential import DifferentialAttention
from .linear import LinearAttention, LinearState, Performer
from .multihead import (
                      GatedAttention,
                      GroupedQueryAttention,
                      MultiHeadAttention,
                      MultiHeadLatentAttention,
                      MultiQueryAttention,
                      SigmoidAttention,
                      SinkAttention,
                      SoftCapAttention,
)
from .self_attention import SelfAttention
from .sparse import SlidingWindowAttention
from .transformer import BlockConfig, DecoderBlock, EncoderBlock, FeedForward
from .visual import (
                      ConvBlockAttention,
                      NonLocalAttention,
                      SoftSpatialAttention,
                      SqueezeExcitationAttention,
                      doubly_stochastic_penalty,
                      flatten_grid,
)

__all__ = ["AttentionState", "StepAttention", "ContentAttention", "DotAttention", "ScaledDotAttention",
           "GeneralAttention", "AdditiveAttention", "CosineAttention", "MultiHeadAttention",
           "GroupedQueryAttention", "MultiQueryAttention", "GatedAttention", "SinkAttention", "SoftCapAttention",
           "SigmoidAttention", "SlidingWindowAttention", "LinearAttention", "Performer", "LinearState",
           "MultiHeadLatentAttention", "DifferentialAttention",
           "SelfAttention", "BlockConfig", "EncoderBlock",
           "DecoderBlock", "FeedForward", "ImageAttention", "VisualOutput", "SoftSpatialAttention",
           "SqueezeExcitationAttention", "ConvBlockAttention", "NonLocalAttention", "doubly_stochastic_penalty",
           "flatten_grid", "LightweightConv", "DynamicConv", "ConvCache", "AugmentedConv2d", "MultiStepAttention"]
