"""Relative position representations (Shaw, Uszkoreit & Vaswani 2018), keys.

Slot: a bias computed from the queries, so every backend runs it:

    e_ij = q_i . (k_j + a_ij) / sqrt(d),   a_ij = w[clip(j - i, -K, K)]

with w a learned (2K + 1, d) table shared by the heads. The extra term
q_i . a_ij / sqrt(d) is gathered from the (B, H, L, 2K + 1) products q_i . w
instead of building a (L, S, d) tensor of a_ij.

Shape legend: B batch, H heads, L query length, S key length, D head dim.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from ..core import validate as V


class RelativePositions(nn.Module):
    """bias_ij = q_i . w[clip(j - i, -K, K)] / sqrt(D)   (Shaw 2018, relative keys)."""

    @V.checked(scale=V.POSITIVE)
    def __init__(self, head_dim: int, max_distance: int = 16, scale: float | None = None):
        super().__init__()
        self.head_dim, self.max_distance = head_dim, max_distance
        self.scale = 1.0 / math.sqrt(head_dim) if scale is None else scale
        self.table = nn.Parameter(torch.randn(2 * max_distance + 1, head_dim) * head_dim ** -0.5)

    @V.checked(L=V.COUNT, S=V.COUNT, query_offset=V.INT)
    def relative_index(self, L: int, S: int, query_offset: int, device=None) -> Tensor:
        """(L, S) indices into the table: clip(j - i, -K, K) + K."""
        return self._index(L, S, query_offset, device)

    def _index(self, L: int, S: int, query_offset: int, device=None) -> Tensor:
        q_idx = torch.arange(L, device=device)[:, None] + query_offset
        kv_idx = torch.arange(S, device=device)[None, :]
        return (kv_idx - q_idx).clamp(-self.max_distance, self.max_distance) + self.max_distance  # (L, S)

    @V.checked(key_len=V.COUNT, query_offset=V.INT)
    def bias(self, q: Tensor, key_len: int, query_offset: int | None = None) -> Tensor:
        """q (B, H, L, D) -> the additive (B, H, L, S) term."""
        L = q.shape[-2]
        offset = key_len - L if query_offset is None else query_offset
        qa = q @ self.table.to(q.dtype).t()  # (B, H, L, 2K+1)
        idx = self._index(L, key_len, offset, q.device)  # (L, S): bias checked its arguments
        idx = idx.expand(*q.shape[:-2], L, key_len)  # (B, H, L, S)
        return qa.gather(-1, idx) * self.scale  # (B, H, L, S)
