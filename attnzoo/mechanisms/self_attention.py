"""Self-attention (intra-attention): a sequence attends over itself.

    SelfAttention(X) = softmax((X W_q)(X W_k)^T / sqrt(d) + position terms) X W_v

Cheng, Dong & Lapata 2016 introduced intra-attention for reading; Vaswani et
al. 2017 made it the Transformer's core. Without position information it is
permutation-equivariant (permuting the inputs permutes the outputs the same
way), which is why positions exist: see :mod:`attnzoo.positions` for the
slots they plug into. This is the one-head case of
:class:`~attnzoo.mechanisms.multihead.MultiHeadAttention`, which adds heads,
key/value-head sharing and cross-attention.

Shape legend: B batch, L length, ``dim`` model width.
"""

from __future__ import annotations

from torch import Tensor

from ..core import validate as V
from ..core.attend import AttentionOutput
from ..core.kv_cache import KVCache
from .multihead import POSITIONS, MultiHeadAttention
from .registry import register


@register("self", family="self-attention", paper="Cheng, Dong & Lapata 2016, Long Short-Term Memory-Networks "
                                                 "for Machine Reading; Vaswani et al. 2017")
class SelfAttention(MultiHeadAttention):
    """Y = softmax((X W_q)(X W_k)^T / sqrt(d)) X W_v, optionally with positions (rope, alibi, t5, relative)."""

    @V.checked(positions=V.one_of(POSITIONS))
    def __init__(self, dim: int, num_heads: int = 1, positions: str | None = None, **kw):
        super().__init__(dim, num_heads, positions=positions, **kw)

    def forward(self, x: Tensor, *, key_mask: Tensor | None = None, mask: Tensor | None = None,
                is_causal: bool = False, need_weights: bool = False,
                cache: KVCache | None = None) -> AttentionOutput:
        """x (B, L, dim) -> AttentionOutput((B, L, dim), (B, H, L, L) or None)."""
        return super().forward(x, key_mask=key_mask, mask=mask, is_causal=is_causal, need_weights=need_weights,
                               cache=cache)
