"""The ``tiled`` backend: exact softmax attention that returns the weights, by blocks of query rows.

Asking for the weights usually means the slow path: scores, softmax and the
weighted sum each stream the whole (B, H, L, S) matrix through memory, and
autograd keeps several such matrices for the backward. Here the query rows
are taken ``r`` at a time, so each block's scores stay in cache from the
score to the softmax to the weighted sum; the only L x S tensor ever made
is the weights the caller asked for:

    forward, for each block i of r query rows:
        s_i = score(q_i, k) + bias_i, then score_mod, then the mask     # (B, H, r, S) float32
        W_i = softmax(s_i)            -> written into W                  # (B, H, L, S) float32, returned
        o_i = W_i v                                                     # (B, H, r, E)

    backward, for each block i (from the stored W: nothing recomputed for a dot product):
        dW_i = do_i v^T (+ the caller's gradient on W_i, if the weights were used in a loss)
        ds_i = W_i * (dW_i - rowsum(W_i * dW_i))                        # softmax backward
        dv  += W_i^T do_i;   dq_i = ds_i k * scale;   dk += ds_i^T q_i * scale

For dot-product scores (``dot``, ``scaled_dot``, ``general`` and ``cosine``
after their projections) and additive, parameter-free ``score_mod`` biases
(ALiBi) the backward is the matrix products above. Any other score (additive,
a ``score_mod`` with learned tensors, such as T5's bias table) recomputes its
block's scores in backward and differentiates them with autograd, as the
``chunked`` backend does.

Softmax only, no dropout (each an error that says so). A fully masked row gets
zero weights and zero output.

Shape legend: B batch, H heads, L queries, S keys, D key size, E value size,
r rows per block.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .chunked import _manual_backward, _params, _Spec, _sum_to, block_scores
from .scores import Score

#: target size in bytes of one block's float32 scores (rows per block = this / (B * H * S * 4)); measured on
#: a 2-core EPYC with a 32 MiB L3 at N = 2048: 8 MiB blocks (128 rows) ran 1.8x faster than 2 MiB or 32 MiB
BLOCK_BYTES = 8 * 2 ** 20
#: run a plain dot product's forward as one matmul into the weights and an in-place softmax
#: (faster with 2 threads than row blocks; the backward stays blockwise)
WHOLE_FORWARD = True


def _rows(x: Tensor | None, i0: int, i1: int) -> Tensor | None:
    """Query rows i0:i1 of a tensor broadcastable to (..., L, S) (a size-1 row dim broadcasts as is)."""
    if x is None or x.dim() < 2 or x.shape[-2] == 1:
        return x
    return x[..., i0:i1, :]


def _softmax_rows(s: Tensor) -> Tensor:
    """Softmax over the last dim where rows of all -inf (fully masked) give zeros, not NaN."""
    w = torch.softmax(s, dim=-1)
    if s.shape[-1] and bool(torch.isneginf(s[..., :1]).any()):  # only then can a row be empty
        empty = torch.isneginf(s).all(dim=-1, keepdim=True)
        w = w.masked_fill(empty, 0.0)
    return w


def _whole_forward(spec: _Spec, q: Tensor, k: Tensor, v: Tensor, bias: Tensor | None):
    """The forward for a plain dot product without score_mod, in the weights buffer itself: one matmul
    writes the scores there, masks and biases apply in place, the softmax runs in place; nothing else of
    size L x S is made. None when the call needs the blockwise path."""
    if spec.score_mod is not None or not _manual_backward(spec.score, None) or q.dtype not in (torch.float32,
                                                                                            torch.float64):
        return None
    if torch.is_autocast_enabled(q.device.type):
        return None
    qf, kf, scale = spec.score.dot_form(q, k)
    B, H, L, _ = q.shape
    S = k.shape[-2]
    weights = torch.matmul(qf * scale, kf.transpose(-1, -2))  # (B, H, L, S), the only L x S tensor
    if bias is not None:
        weights += bias
    allowed = spec.mask
    if spec.causal:
        c = torch.ones(L, S, dtype=torch.bool, device=q.device).tril_(spec.query_offset)
        allowed = c if allowed is None else allowed & c
    if allowed is not None:
        weights.masked_fill_(~allowed, float("-inf"))
    torch.ops.aten._softmax.out(weights, -1, False, out=weights)  # in place (contiguous)
    if allowed is not None:
        empty = ~allowed.any(dim=-1, keepdim=True)  # fully masked rows: NaN from the softmax -> 0
        if bool(empty.any()):
            weights.masked_fill_(empty, 0.0)
    return weights.to(v.dtype) @ v, weights


class _TiledAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, bias, spec: _Spec, *params):
        B, H, L, _ = q.shape
        S, E = k.shape[-2], v.shape[-1]
        stat = torch.float64 if q.dtype == torch.float64 else torch.float32
        with torch.no_grad():
            whole = _whole_forward(spec, q, k, v, bias) if WHOLE_FORWARD else None
        if whole is not None:
            out, weights = whole
        else:
            weights = torch.empty(B, H, L, S, dtype=stat, device=q.device)
            out = torch.empty(B, H, L, E, dtype=v.dtype, device=q.device)
        with torch.no_grad():
            for i0 in range(0, L if whole is None else 0, spec.block):
                i1 = min(i0 + spec.block, L)
                s = block_scores(spec, q[:, :, i0:i1], k, _rows(bias, i0, i1), i0, 0, S)  # (B, H, r, S)
                w = _softmax_rows(s)
                weights[:, :, i0:i1] = w
                out[:, :, i0:i1] = w.to(v.dtype) @ v  # (B, H, r, E)
        ctx.spec = spec
        ctx.set_materialize_grads(False)
        device = q.device.type
        ctx.autocast = (device, torch.is_autocast_enabled(device),
                        torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else None)
        ctx.save_for_backward(q, k, v, bias, weights, out, *params)
        return out, weights

    @staticmethod
    def backward(ctx, dout, dweights):
        spec = ctx.spec
        q, k, v, bias, weights, out, *params = ctx.saved_tensors
        L = q.shape[-2]
        stat = weights.dtype
        need_bias = bias is not None and ctx.needs_input_grad[3]
        manual = spec.n_params == 0 and _manual_backward(spec.score, spec.score_mod)
        dq = torch.zeros_like(q, dtype=stat)
        dk = torch.zeros_like(k, dtype=stat)
        dv = torch.zeros_like(v, dtype=stat)
        dbias = torch.zeros_like(bias, dtype=stat) if need_bias else None
        dparams = [torch.zeros_like(p) for p in params]
        if dout is None and dweights is None:
            return (None,) * (5 + len(params))
        v32 = v.to(stat)
        # rowsum(W * dW) = rowsum(dout * out) when only the output carried a gradient (FlashAttention's D)
        delta = None if dout is None or dweights is not None else (dout.to(stat) * out.to(stat)).sum(-1, keepdim=True)
        if manual:
            qf, kf, scale = spec.score.dot_form(q, k)
            qf, kf = qf.to(stat), kf.to(stat)
        for i0 in range(0, L, spec.block):
            i1 = min(i0 + spec.block, L)
            w = weights[:, :, i0:i1]  # (B, H, r, S)
            dw = torch.zeros_like(w) if dout is None else dout[:, :, i0:i1].to(stat) @ v32.transpose(-1, -2)
            if dout is not None:
                dv += w.transpose(-1, -2) @ dout[:, :, i0:i1].to(stat)  # (B, H, S, E)
            if dweights is not None:
                dw = dw + dweights[:, :, i0:i1]
            rowsum = delta[:, :, i0:i1] if delta is not None else (w * dw).sum(-1, keepdim=True)
            ds = dw.sub_(rowsum).mul_(w)  # W * (dW - rowsum(W dW)), (B, H, r, S); zero where w is zero
            if need_bias:
                rows = _rows(dbias, i0, i1)
                rows += _sum_to(ds, rows.shape)
            if manual:
                dq[:, :, i0:i1] += (ds @ kf) * scale  # (B, H, r, D)
                dk += (ds.transpose(-1, -2) @ qf[:, :, i0:i1]) * scale  # (B, H, S, D)
                continue
            device, enabled, dtype = ctx.autocast
            with torch.enable_grad(), torch.autocast(device, dtype=dtype, enabled=enabled):  # as in forward
                qd = q[:, :, i0:i1].detach().requires_grad_()
                kd = k.detach().requires_grad_()
                bd = _rows(bias, i0, i1)
                bd = None if bd is None else bd.detach()
                s = block_scores(spec, qd, kd, bd, i0, 0, kd.shape[-2])  # recomputed (B, H, r, S)
            grads = torch.autograd.grad(s, [qd, kd] + list(params), grad_outputs=ds.to(s.dtype), allow_unused=True)
            if grads[0] is not None:
                dq[:, :, i0:i1] += grads[0]
            if grads[1] is not None:
                dk += grads[1]
            for acc, g in zip(dparams, grads[2:]):
                if g is not None:
                    acc += g
        dbias = None if dbias is None else dbias.to(bias.dtype)
        return (dq.to(q.dtype), dk.to(k.dtype), dv.to(v.dtype), dbias, None, *dparams)


def tiled_attention(score: Score, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, bias: Tensor | None,
                    score_mod, causal: bool, query_offset: int,
                    block_rows: int | None = None) -> tuple[Tensor, Tensor]:
    """Softmax attention by blocks of query rows: q (B,H,L,D'), k (B,H,S,D'), v (B,H,S,E)
    -> (output (B,H,L,E), weights (B,H,L,S) float32). ``q`` and ``k`` are already projected."""
    B, H, L, S = q.shape[0], q.shape[1], q.shape[2], k.shape[2]
    if block_rows is None:
        per_row = max(1, B * H * S * 4 * _score_width(score))
        block_rows = max(1, min(L, BLOCK_BYTES // per_row))
    elif int(block_rows) < 1:
        raise ValueError(f"block_size must be >= 1, got {block_rows}")
    # a plain dot product differentiates by matrix products and needs no parameter; otherwise the
    # learned tensors of the score and score_mod are handed to autograd (see the module docstring)
    params = [] if _manual_backward(score, score_mod) else _params(score, score_mod)
    spec = _Spec(score, score_mod, mask, causal, query_offset, int(block_rows), len(params))
    return _TiledAttention.apply(q, k, v, bias, spec, *params)


def _score_width(score: Score) -> int:
    """Floats per (query, key) pair that the score's comparison holds at once (additive: its hidden size)."""
    return int(getattr(score, "hidden_dim", 1) or 1) if type(score).dot_form is Score.dot_form else 1
