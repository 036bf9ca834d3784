"""Sparse attention: a sliding window with global tokens (Longformer, Beltagy et al. 2020; Mistral's
causal sliding window).

    allowed(i, j) = |i - j| < w  or  i < g  or  j < g        (and j <= i when causal)
    head_h        = softmax(Q_h K_h^T / sqrt(D) | allowed) V_h

Each query sees the ``window`` keys around it (behind it, when causal) and the ``global_tokens`` first
positions, which in turn see everything. The pattern is a ``mask_mod`` with key spans
(:func:`attnzoo.core.masks.sliding_window`, :func:`~attnzoo.core.masks.global_tokens`), so the chunked
backend skips every block outside the band: time and memory grow with L x (window + global), not L x L.
``backend="auto"`` takes that path once the band leaves out most of the matrix; short inputs run the fused
kernel with the pattern as a mask. Decoding uses a :class:`~attnzoo.core.kv_cache.RollingKVCache`
(``layer.new_cache()``): the global positions plus the last window, memory flat in the sequence length.
Everything else (projections, positions, sinks, gates) is :class:`MultiHeadAttention`'s.

Shape legend: B batch, L sequence length, H heads, D head dim, w window, g global tokens.
"""

from __future__ import annotations

from ..core import validate as V
from ..core.kv_cache import RollingKVCache
from ..core.masks import global_tokens as global_mask
from ..core.masks import or_masks, sliding_window
from .multihead import MultiHeadAttention
from .registry import register


@register("sliding", family="sparse", paper="Beltagy et al. 2020, Longformer: The Long-Document Transformer "
                                             "(sliding window + global attention)")
class SlidingWindowAttention(MultiHeadAttention):
    """softmax(Q_h K_h^T / sqrt(D) over |i - j| < w, i < g or j < g) V_h: a window of w keys and g global tokens."""

    @V.checked(global_tokens=V.COUNT)
    def __init__(self, dim: int, num_heads: int, num_kv_heads: int | None = None, head_dim: int | None = None, *,
                 window: int = 256, global_tokens: int = 0, **kw):
        super().__init__(dim, num_heads, num_kv_heads, head_dim, **kw)
        self.window, self.global_tokens = window, global_tokens
        band = sliding_window(window, causal=False)  # causality comes from the call's is_causal
        self._pattern = or_masks(band, global_mask(global_tokens)) if global_tokens else band

    def mask_mod(self, cross: bool):
        """The band and the global tokens for self-attention; nothing for cross-attention (another sequence)."""
        return None if cross else self._pattern

    def new_cache(self) -> RollingKVCache:
        """A decoding cache holding the global positions and the last ``window`` keys (memory flat in length)."""
        return RollingKVCache(self.window, keep_first=self.global_tokens)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, window={self.window}, global_tokens={self.global_tokens}"

