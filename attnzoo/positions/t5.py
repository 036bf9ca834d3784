"""T5 relative position bias (Raffel et al. 2020).

Slot: a ``score_mod`` bias (additive, so every backend runs it):

    score(i, j) = q_i . k_j + b_h[bucket(j - i)]

a learned scalar per head and bucket. Buckets are exact for small distances
and logarithmically wider up to ``max_distance``, beyond which all distances
share the last bucket; bidirectional attention uses half the buckets for each
direction. (T5 itself does not scale q.k by 1/sqrt(d); use score="dot" to
match it exactly.)
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from ..core import validate as V


@V.checked()
def t5_bucket(relative: Tensor, num_buckets: int = 32, max_distance: int = 128, bidirectional: bool = True) -> Tensor:
    """relative = kv_idx - q_idx (any shape, integer) -> bucket ids in [0, num_buckets)."""
    return _bucket(relative, num_buckets, max_distance, bidirectional)


def _bucket(relative: Tensor, num_buckets: int, max_distance: int, bidirectional: bool) -> Tensor:
    """t5_bucket's body: T5RelativeBias (its sizes checked at construction) calls it every forward."""
    bucket = torch.zeros_like(relative)
    if bidirectional:
        num_buckets //= 2
        bucket = bucket + (relative > 0).long() * num_buckets  # keys after the query: the upper half
        distance = relative.abs()
    else:
        distance = (-relative).clamp_min(0)  # only keys at or before the query are told apart
    exact = num_buckets // 2
    # beyond `exact`: log-spaced buckets up to max_distance
    log_ratio = torch.log(distance.float().clamp_min(1) / exact) / math.log(max_distance / exact)
    far = (exact + (log_ratio * (num_buckets - exact)).long()).clamp_max(num_buckets - 1)
    return bucket + torch.where(distance < exact, distance, far)


class T5RelativeBias(nn.Module):
    """score_mod: score + b[h, bucket(kv_idx - q_idx)], b learned   (Raffel 2020)."""

    additive = True

    @V.checked()
    def __init__(self, num_heads: int, num_buckets: int = 32, max_distance: int = 128, bidirectional: bool = True):
        super().__init__()
        self.num_heads, self.num_buckets = num_heads, num_buckets
        self.max_distance, self.bidirectional = max_distance, bidirectional
        self.bias = nn.Embedding(num_buckets, num_heads)  # (buckets, H)
        nn.init.zeros_(self.bias.weight)

    def forward(self, score: Tensor, b: Tensor, h: Tensor, q_idx: Tensor, kv_idx: Tensor) -> Tensor:
        buckets = _bucket(kv_idx - q_idx, self.num_buckets, self.max_distance, self.bidirectional)  # (1,1,L,S)
        values = self.bias(buckets).squeeze(0).squeeze(0)  # (L, S, H)
        values = values.permute(2, 0, 1)[h.flatten()]  # (H', L, S) for the heads asked about
        return score + values.unsqueeze(0).to(score.dtype if torch.is_tensor(score) and score.is_floating_point()
                                              else values.dtype)  # (1, H', L, S)
