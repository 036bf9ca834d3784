"""ALiBi: attention with linear biases (Press, Smith & Lewis 2022).

Slot: a ``score_mod`` bias, so every backend runs it (it is additive).

    score(i, j) = q_i . k_j / sqrt(d) - m_h * (i - j)          (causal: j <= i)
    score(i, j) = q_i . k_j / sqrt(d) - m_h * |i - j|          (bidirectional variant)

with head slopes m_h the geometric sequence that starts at 2^(-8/n) and has
that ratio, for n heads a power of two: n = 8 gives 1/2, 1/4, ..., 1/256.
For other n, the paper takes the 2^floor(log2 n) slopes and fills in with
every other slope of the 2 * 2^floor(log2 n) sequence.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..core import validate as V


@V.checked()
def alibi_slopes(num_heads: int) -> Tensor:
    """(H,) the paper's head-specific slopes m_h."""

    def power_of_two(n: int) -> list[float]:
        start = 2 ** (-8 / n)
        return [start ** (i + 1) for i in range(n)]

    if math.log2(num_heads).is_integer():
        slopes = power_of_two(num_heads)
    else:
        closest = 2 ** math.floor(math.log2(num_heads))
        slopes = power_of_two(closest) + power_of_two(2 * closest)[0::2][: num_heads - closest]
    return torch.tensor(slopes, dtype=torch.float64)  # used in float32, or float64 for float64 scores


class ALiBi:
    """score_mod: score - m_h * (q_idx - kv_idx)  (or |q_idx - kv_idx| if not causal)."""

    additive = True  # it only adds a bias: the fused backend may materialise it

    @V.checked()
    def __init__(self, num_heads: int, causal: bool = True):
        self.num_heads = num_heads
        self.causal = causal
        self.slopes = alibi_slopes(num_heads)

    def __call__(self, score: Tensor, b: Tensor, h: Tensor, q_idx: Tensor, kv_idx: Tensor) -> Tensor:
        dist = q_idx - kv_idx
        if not self.causal:
            dist = dist.abs()
        dtype = torch.float64 if score.is_floating_point() and score.dtype == torch.float64 else torch.float32
        slopes = self.slopes.to(device=h.device, dtype=dtype)[h]  # (1, H, 1, 1)
        return score - (slopes * dist).to(score.dtype if score.is_floating_point() else torch.float32)

    def __repr__(self) -> str:
        return f"ALiBi(num_heads={self.num_heads}, causal={self.causal})"


@V.checked()
def alibi(num_heads: int, causal: bool = True) -> ALiBi:
    return ALiBi(num_heads, causal)
