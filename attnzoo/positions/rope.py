"""Rotary position embedding, RoPE (Su et al. 2021, RoFormer).

Slot: a transform of q and k before the score. Each pair of features
(x_{2i}, x_{2i+1}) of a vector at position p is rotated by the angle
p * theta_i, theta_i = base^(-2i/d):

    [x'_{2i}  ]   [cos p.theta_i  -sin p.theta_i] [x_{2i}  ]
    [x'_{2i+1}] = [sin p.theta_i   cos p.theta_i] [x_{2i+1}]

so that <R_m q, R_n k> depends on q, k and the offset n - m only. Rotating q
and k before any backend runs leaves the fused kernels usable.

Shape legend: B batch, H heads, L length, D head dim (even).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..core import validate as V


@V.checked(base=V.POSITIVE)
def rope_angles(positions: Tensor, head_dim: int, base: float = 10000.0) -> tuple[Tensor, Tensor]:
    """(L,) positions -> cos, sin of shape (L, D/2)."""
    return _angles(positions, head_dim, base)


def _angles(positions: Tensor, head_dim: int, base: float) -> tuple[Tensor, Tensor]:
    theta = base ** (-torch.arange(0, head_dim, 2, dtype=torch.float64, device=positions.device) / head_dim)
    angle = positions.to(torch.float64)[:, None] * theta[None, :]  # (L, D/2)
    return torch.cos(angle), torch.sin(angle)


@V.checked(base=V.POSITIVE)
def apply_rope(x: Tensor, positions: Tensor, base: float = 10000.0) -> Tensor:
    """Rotate x (..., L, D) at absolute ``positions`` (L,) pairwise (the paper's interleaved pairs)."""
    return _rotate(x, positions, base)


def _rotate(x: Tensor, positions: Tensor, base: float) -> Tensor:
    """apply_rope's body: RotaryPositions (its base checked at construction) calls it every step."""
    D = x.shape[-1]
    if D % 2:
        raise ValueError("RoPE rotates pairs of features: head dim must be even, got x of shape "
                         f"{V.fmt_shape(x.shape)}")
    if positions.shape != (x.shape[-2],):
        raise ValueError(f"positions must have shape (L,) = ({x.shape[-2]},), got {V.fmt_shape(positions.shape)}")
    cos, sin = _angles(positions, D, base)
    cos, sin = cos.to(x.dtype), sin.to(x.dtype)  # (L, D/2)
    even, odd = x[..., 0::2], x[..., 1::2]  # (..., L, D/2)
    out = torch.stack([even * cos - odd * sin, even * sin + odd * cos], dim=-1)  # (..., L, D/2, 2)
    return out.flatten(-2)  # (..., L, D)


class RotaryPositions(nn.Module):
    """q, k -> R_p q, R_p k with R_p the block-diagonal rotation by p * base^(-2i/D)   (Su 2021)."""

    @V.checked(base=V.POSITIVE)
    def __init__(self, head_dim: int, base: float = 10000.0):
        super().__init__()
        if head_dim % 2:
            raise ValueError(f"RoPE needs an even head_dim, got {head_dim}")
        self.head_dim, self.base = head_dim, base

    @V.checked(q_offset=V.INT, k_offset=V.INT)
    def forward(self, q: Tensor, k: Tensor, q_offset: int = 0, k_offset: int = 0) -> tuple[Tensor, Tensor]:
        """q (B, H, L, D) at positions q_offset.., k (B, G, S, D) at k_offset.."""
        q_pos = torch.arange(q.shape[-2], device=q.device) + q_offset
        k_pos = torch.arange(k.shape[-2], device=k.device) + k_offset
        return _rotate(q, q_pos, self.base), _rotate(k, k_pos, self.base)
