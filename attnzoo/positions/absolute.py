"""Absolute positions, added to the inputs (Vaswani et al. 2017).

Slot: added to the token embeddings before the first layer.

    sinusoidal:  PE(p, 2i) = sin(p / 10000^(2i/d)),  PE(p, 2i+1) = cos(p / 10000^(2i/d))
    learned:     PE(p) = a trained embedding row p   (also Gehring 2017, Devlin 2019)

Shape legend: B batch, L length, d model dim; ``offset`` is the absolute
position of the first input (the KV cache's length when decoding).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from ..core import validate as V


@V.checked()
def sinusoidal_table(max_len: int, dim: int) -> Tensor:
    """(max_len, dim) table of the paper's sines (even features) and cosines (odd features)."""
    position = torch.arange(max_len, dtype=torch.float64)[:, None]  # (P, 1)
    freq = torch.exp(-math.log(10000.0) * torch.arange(0, dim, 2, dtype=torch.float64) / dim)  # (d/2,)
    table = torch.zeros(max_len, dim, dtype=torch.float64)
    table[:, 0::2] = torch.sin(position * freq)
    table[:, 1::2] = torch.cos(position * freq[: dim // 2])
    return table.float()


class _Absolute(nn.Module):
    @V.checked()
    def __init__(self, dim: int, max_len: int):
        super().__init__()
        self.dim, self.max_len = dim, max_len

    @V.checked(offset=V.COUNT)
    def check(self, x: Tensor, offset: int) -> None:
        if x.dim() != 3 or x.shape[-1] != self.dim:
            raise ValueError(f"x must have shape (B, L, {self.dim}), got {V.fmt_shape(x.shape)}")
        if offset + x.shape[1] > self.max_len:
            raise ValueError(f"positions {offset}..{offset + x.shape[1] - 1} exceed max_len={self.max_len}; "
                             f"build the module with a larger max_len")

    def table(self) -> Tensor:
        raise NotImplementedError

    @V.checked(offset=V.COUNT)
    def forward(self, x: Tensor, offset: int = 0) -> Tensor:
        """x (B, L, d) -> x + PE[offset : offset + L]."""
        self.check(x, offset)
        return x + self.table()[offset: offset + x.shape[1]].to(x.dtype)  # (B, L, d)


class SinusoidalPositions(_Absolute):
    """x + PE, PE(p, 2i) = sin(p / 10000^(2i/d)), PE(p, 2i+1) = cos(p / 10000^(2i/d))   (Vaswani 2017)."""

    @V.checked()
    def __init__(self, dim: int, max_len: int = 4096):
        super().__init__(dim, max_len)
        self.register_buffer("pe", sinusoidal_table(max_len, dim), persistent=False)  # (P, d)

    def table(self) -> Tensor:
        return self.pe


class LearnedPositions(_Absolute):
    """x + P[p], P a learned (max_len, d) table   (Vaswani 2017; Gehring 2017)."""

    @V.checked(init_std=V.POSITIVE)
    def __init__(self, dim: int, max_len: int = 1024, init_std: float = 0.02):
        super().__init__(dim, max_len)
        self.weight = nn.Parameter(torch.randn(max_len, dim) * init_std)

    def table(self) -> Tensor:
        return self.weight
