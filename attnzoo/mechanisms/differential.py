"""Differential attention (Ye et al., ICLR 2025, "Differential Transformer").

Two softmax maps over the same keys; their difference cancels the attention both give to irrelevant
context (the "noise" a single softmax cannot put to exactly zero):

    [Q1; Q2] = x W_Q,  [K1; K2] = x W_K,  V = x W_V                        (Q_i, K_i: D per head; V: 2D)
    A_h      = softmax(Q1 K1^T / sqrt(D)) - lambda softmax(Q2 K2^T / sqrt(D))
    lambda   = exp(l_q1 . l_k1) - exp(l_q2 . l_k2) + lambda_init           (re-parameterised, learned vectors)
    lambda_init = 0.8 - 0.6 exp(-0.3 (layer - 1))                            (layer: 1-based depth)
    head_h   = (1 - lambda_init) RMSNorm(A_h V)                              (per-head normalisation)
    out      = W_O [head_1; ...; head_H]

With lambda = 0 (``lambda_init=0`` and the re-parameterisation's vectors at zero) it is softmax attention
followed by the head norm. Each softmax is :func:`attnzoo.attend`, so each runs on the fused kernel;
both maps share V, so A V = A1 V - lambda A2 V. The returned weights are A (rows sum to 1 - lambda).
As the paper, the default head count gives each map D = dim / (2 H) features.

Shape legend: B batch, L queries, S keys, H heads, D head dim of each map (V and the output: 2D).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from ..core import validate as V
from ..core.attend import AttentionOutput, attend
from ..core.kv_cache import KVCache
from ..positions import RotaryPositions
from .base import _check_sequence_call
from .registry import register


def lambda_init_for(layer: int) -> float:
    """The paper's schedule of lambda_init over depth: 0.8 - 0.6 exp(-0.3 (layer - 1)), layer counted from 1."""
    return 0.8 - 0.6 * math.exp(-0.3 * (layer - 1))


@register("differential", family="multi-head", paper="Ye et al. 2025, Differential Transformer (ICLR)")
class DifferentialAttention(nn.Module):
    """head_h = (1 - lambda_init) RMSNorm((softmax(Q1 K1^T / sqrt(D)) - lambda softmax(Q2 K2^T / sqrt(D))) V)."""

    @V.checked(lambda_init=V.REAL, positions=V.one_of((None, "rope")))
    def __init__(self, dim: int, num_heads: int, head_dim: int | None = None, *, layer: int = 1,
                 lambda_init: float | None = None, bias: bool = False, dropout_p: float = 0.0,
                 positions: str | None = None, fused_attn: bool = True, eps: float = 1e-5):
        super().__init__()
        if head_dim is None:
            if dim % (2 * num_heads):
                raise ValueError(f"dim ({dim}) is not divisible by 2 * num_heads ({2 * num_heads}): each head has "
                                 f"two maps of dim / (2 num_heads) features; pass head_dim")
            head_dim = dim // (2 * num_heads)
        self.dim, self.num_heads, self.head_dim, self.positions = dim, num_heads, head_dim, positions
        self.dropout_p, self.fused_attn = dropout_p, fused_attn
        self.lambda_init = lambda_init_for(layer) if lambda_init is None else float(lambda_init)
        H, D = num_heads, head_dim
        self.q_proj = nn.Linear(dim, 2 * H * D, bias=bias)  # [Q1; Q2] per head
        self.k_proj = nn.Linear(dim, 2 * H * D, bias=bias)
        self.v_proj = nn.Linear(dim, 2 * H * D, bias=bias)  # V: 2D per head
        self.o_proj = nn.Linear(2 * H * D, dim, bias=True)
        # lambda = exp(l_q1 . l_k1) - exp(l_q2 . l_k2) + lambda_init, the vectors drawn as the paper's N(0, 0.1)
        self.lambda_q1, self.lambda_k1, self.lambda_q2, self.lambda_k2 = (
            nn.Parameter(torch.randn(D) * 0.1) for _ in range(4))
        self.head_norm = nn.RMSNorm(2 * D, eps=eps)  # per head, over its 2D channels
        self.rope = RotaryPositions(D) if positions == "rope" else None

    def lambda_(self) -> Tensor:
        """The current lambda (a 0-d tensor)."""
        return (torch.exp(torch.dot(self.lambda_q1, self.lambda_k1)) - torch.exp(torch.dot(self.lambda_q2,
                self.lambda_k2)) + self.lambda_init)

    def new_cache(self) -> KVCache:
        """Keys of both maps (B, 2H, S, D) and the values, cached as (B, 2H, S, D) halves."""
        return KVCache()

    def forward(self, x: Tensor, key: Tensor | None = None, value: Tensor | None = None, *,
                key_mask: Tensor | None = None, mask: Tensor | None = None, is_causal: bool = False,
                need_weights: bool = False, cache: KVCache | None = None) -> AttentionOutput:
        """Self-attention ``attn(x)`` or cross-attention ``attn(x, key=memory, value=memory)`` (B, S, dim)."""
        self._check(x, key, value, key_mask, cache)
        B, L, _ = x.shape
        H, D = self.num_heads, self.head_dim
        memory = x if key is None else key
        S_new = memory.shape[1]
        q = self.q_proj(x).view(B, L, 2 * H, D).transpose(1, 2)  # (B, 2H, L, D): [Q1_h, Q2_h] interleaved
        k = self.k_proj(memory).view(B, S_new, 2 * H, D).transpose(1, 2)  # (B, 2H, S, D)
        v = self.v_proj(memory if value is None else value).view(B, S_new, H, 2 * D).transpose(1, 2)  # (B,H,S,2D)
        offset = 0 if cache is None or key is not None else cache.position
        if self.rope is not None and key is None:
            q, k = self.rope(q, k, q_offset=offset, k_offset=offset)
        if cache is not None:
            k, v = _append(cache, k, v)
        if key_mask is not None:
            km = key_mask[:, None, None, :]  # (B, 1, 1, S)
            mask = km if mask is None else mask & km
        kw = dict(mask=mask, is_causal=is_causal, need_weights=need_weights, query_offset=offset,
                  dropout_p=self.dropout_p if self.training else 0.0, backend="auto" if self.fused_attn else "eager")
        # both maps in one call: 2H query heads over 2H key heads, each pair sharing its head's V
        v2 = v.repeat_interleave(2, dim=1)  # (B, 2H, S, 2D)
        both = attend(q, k, v2, **kw)
        lam = self.lambda_()
        o = both.output.view(B, H, 2, L, 2 * D)  # (B, H, map, L, 2D)
        diff = o[:, :, 0] - lam.to(o.dtype) * o[:, :, 1]  # (A1 - lambda A2) V, (B, H, L, 2D)
        heads = self.head_norm(diff) * (1 - self.lambda_init)
        merged = heads.transpose(1, 2).reshape(B, L, H * 2 * D)  # (B, L, 2HD)
        weights = None
        if both.weights is not None:
            w = both.weights.view(B, H, 2, L, both.weights.shape[-1])
            weights = w[:, :, 0] - lam.to(w.dtype) * w[:, :, 1]  # (B, H, L, S), rows sum to 1 - lambda
        return AttentionOutput(self.o_proj(merged), weights)

    def _check(self, x, key, value, key_mask, cache) -> None:
        _check_sequence_call(x, self.dim, key, value, self.dim, self.dim)
        if cache is not None and not isinstance(cache, KVCache):
            raise TypeError(f"cache must be a KVCache (layer.new_cache()), got {type(cache).__name__}")
        if cache is not None and key is not None:
            raise ValueError("DifferentialAttention decodes self-attention with a cache; for cross-attention pass "
                             "the memory on every call (no cache)")
        if key_mask is not None:
            V.check_tensor("key_mask", key_mask)
            S = (x.shape[1] if key is None else key.shape[1]) + (0 if cache is None or key is not None
                                                                  else cache.position)
            if key_mask.dtype != torch.bool or tuple(key_mask.shape) != (x.shape[0], S):
                raise ValueError(f"key_mask must be a boolean (B, S) = ({x.shape[0]}, {S}) tensor (True = a real "
                                 f"key), got {key_mask.dtype} {V.fmt_shape(key_mask.shape)}")

    def extra_repr(self) -> str:
        return (f"dim={self.dim}, num_heads={self.num_heads}, head_dim={self.head_dim}, "
                f"lambda_init={self.lambda_init:g}, positions={self.positions!r}")


def _append(cache: KVCache, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
    """K has 2H heads of D and V has H of 2D: V is cached as 2H heads of D (its two halves), one KVCache for both."""
    B, H, L, D2 = v.shape
    halves = v.reshape(B, H, L, 2, D2 // 2).permute(0, 1, 3, 2, 4).reshape(B, 2 * H, L, D2 // 2)  # (B,2H,L,D)
    keys, vals = cache.append(k, halves)
    S = keys.shape[2]
    return keys, vals.reshape(B, H, 2, S, D2 // 2).permute(0, 1, 3, 2, 4).reshape(B, H, S, D2)  # (B, H, S, 2D)
