"""Normalizers: scores -> attention weights, computed in float32.

Every normalizer takes scores (..., S) and an optional boolean mask that
broadcasts to them (True = may attend), and guarantees:

* masked keys get exactly zero weight;
* a row whose keys are all masked gets all-zero weights (so its output is the
  zero vector), never NaN, and no gradient flows into it.

``softmax``   w_i = exp(z_i) / sum_j exp(z_j)
``sparsemax`` w = argmin_{p in simplex} ||p - z||^2 = max(z - tau, 0)
              (Martins & Astudillo 2016, "From Softmax to Sparsemax"), whose
              weights are exactly zero outside a data-dependent support.
``sigmoid``   w_i = sigmoid(z_i - log n) (Ramapuram et al. 2024, "Theory,
              Analysis, and Best Practices for Sigmoid Self-Attention"): each
              weight on its own, no sum to one; the bias b = -log n keeps the
              row's total near one at the start of training. Here n is the
              number of keys the row may attend (a causal row i: i + 1), so
              decoding with a cache gives the same weights as the full pass.

A *sink* (StreamingLLM, Xiao et al. 2023; a learned logit per head as in
gpt-oss) is one more key with logit ``sink`` and a zero value:
``w_i = exp(z_i) / (exp(sink) + sum_j exp(z_j))``, so a row's weights sum to
less than one and a query may attend to nothing. ``sink = -inf`` is softmax.

Float64 scores stay float64 (reference tests); anything narrower is computed
in float32.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

Normalizer = Callable[[Tensor, "Tensor | None"], Tensor]


def _upcast(scores: Tensor) -> Tensor:
    return scores if scores.dtype == torch.float64 else scores.float()


def softmax(scores: Tensor, mask: Tensor | None = None, sink: Tensor | None = None) -> Tensor:
    """Masked softmax over the last dim, in float32; ``sink`` (broadcastable to scores[..., :1]): the logit of
    an extra key with a zero value, whose weight is dropped (rows then sum to less than one)."""
    scores = _upcast(scores)
    if sink is not None:
        return _softmax_with_sink(scores, mask, sink)
    if mask is None:
        return torch.softmax(scores, dim=-1)
    # A large finite negative (not -inf) keeps fully masked rows finite; their
    # uniform weights are then zeroed by the multiplication with the mask.
    filled = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
    return torch.softmax(filled, dim=-1) * mask


def _softmax_with_sink(scores: Tensor, mask: Tensor | None, sink: Tensor) -> Tensor:
    """softmax over [scores, sink] without the sink's column: a fully masked row gives all its weight to the sink."""
    filled = scores if mask is None else scores.masked_fill(~mask, float("-inf"))
    column = sink.to(scores.dtype).expand(*scores.shape[:-1], 1)  # (..., 1)
    weights = torch.softmax(torch.cat([filled, column], dim=-1), dim=-1)[..., :-1]
    return weights if mask is None else weights * mask  # a -inf sink over a fully masked row: NaN -> 0


class _Sparsemax(torch.autograd.Function):
    """Euclidean projection onto the probability simplex along the last dim.

    forward:  w = max(z - tau(z), 0), with tau chosen so that sum(w) = 1.
    backward: on the support s = {w > 0}, dL/dz = g - mean_s(g); zero elsewhere.
    Entries equal to -inf (masked keys) end outside the support.
    """

    @staticmethod
    def forward(ctx, z: Tensor) -> Tensor:
        if z.shape[-1] == 0:  # no keys: nothing to project (and no support to index)
            ctx.save_for_backward(z)
            return z.clone()
        z_sorted, _ = torch.sort(z, dim=-1, descending=True)
        cumsum = z_sorted.cumsum(dim=-1)
        k = torch.arange(1, z.shape[-1] + 1, device=z.device, dtype=z.dtype)
        in_support = 1 + k * z_sorted > cumsum                  # a prefix of the sorted row
        support_size = in_support.sum(dim=-1, keepdim=True)       # >= 1 for any finite row
        tau = (cumsum.gather(-1, support_size - 1) - 1) / support_size.to(z.dtype)
        w = torch.clamp(z - tau, min=0)
        # a support of one key: weight exactly 1 on it (z - (z - 1) rounds away from 1 for large |z|)
        w = torch.where(support_size == 1, (z >= z_sorted[..., :1]).to(z.dtype), w)
        ctx.save_for_backward(w)
        return w

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        (w,) = ctx.saved_tensors
        support = (w > 0).to(grad.dtype)
        mean = (grad * support).sum(-1, keepdim=True) / support.sum(-1, keepdim=True).clamp_min(1)
        return support * (grad - mean)


def sparsemax(scores: Tensor, mask: Tensor | None = None) -> Tensor:
    """Masked sparsemax over the last dim, in float32 (float64 stays float64)."""
    scores = _upcast(scores)
    if mask is None:
        return _Sparsemax.apply(scores)
    mask = mask.expand_as(scores)
    row_any = mask.any(dim=-1, keepdim=True)
    filled = scores.masked_fill(~mask, float("-inf"))
    filled = filled.masked_fill(~row_any, 0.0)  # a fully masked row: finite placeholder
    return _Sparsemax.apply(filled) * row_any


def sigmoid(scores: Tensor, mask: Tensor | None = None) -> Tensor:
    """Sigmoid attention: sigmoid(z - log n) on the keys a row may attend (n of them), zero elsewhere."""
    scores = _upcast(scores)
    if mask is None:
        return torch.sigmoid(scores - math.log(max(scores.shape[-1], 1)))
    mask = mask.expand_as(scores)
    n = mask.sum(-1, keepdim=True).clamp_min(1).to(scores.dtype)  # (..., 1) keys each row may attend
    filled = scores.masked_fill(~mask, 0.0)  # keeps masked scores (and their gradient) out
    return torch.sigmoid(filled - torch.log(n)) * mask


NORMALIZERS: dict[str, Normalizer] = {"softmax": softmax, "sparsemax": sparsemax, "sigmoid": sigmoid}
#: the normalizers whose rows sum to one (a sink breaks that on purpose)
SUM_TO_ONE = ("softmax", "sparsemax")
