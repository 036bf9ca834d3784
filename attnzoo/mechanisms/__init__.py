"""The attention families, one module each (see DESIGN.md)."""

from .base import AttentionState, StepAttention
from .content import (AdditiveAttention, ContentAttention, CosineAttention, DotAttention, GeneralAttention,
                      ScaledDotAttention)

__all__ = ["AttentionState", "StepAttention", "ContentAttention", "DotAttention", "ScaledDotAttention",
           "GeneralAttention", "AdditiveAttention", "CosineAttention"]
