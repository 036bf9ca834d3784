"""The ``chunked`` backend: exact attention over key blocks, never storing the L x S weights.

FlashAttention's algorithm (Dao et al. 2022; Rabe & Staats 2021, "Self-attention
does not need O(n^2) memory") written with PyTorch ops, for any score:

    forward, for each key block j (size b):
        s_j  = score(q, k_j) + bias_j, then score_mod, then the mask        # (B, H, L, b) float32
        m'   = max(m, rowmax(s_j));  l = l e^(m - m') + rowsum(e^(s_j - m'))
        acc  = acc e^(m - m') + e^(s_j - m') v_j;  m = m'
    out = acc / l,  lse = m + log l                                        # (B, H, L, E), (B, H, L)

    backward, for each key block j again (recomputed, not stored):
        p_j  = e^(s_j - lse);  dv_j = p_j^T dout;  dp_j = dout v_j^T
        ds_j = p_j (dp_j - rowsum(dout * out))
        then ds_j flows back through the score (autograd on the block's scores:
        q, k_j, bias_j and the score's own parameters, e.g. additive's v).

Memory grows with L x b (plus, for the additive score, L x b x A), not L x S.
It runs dot-product scores with any ``score_mod`` (ALiBi, T5, relative), the
additive (Bahdanau), general and cosine scores, masks and biases of any
broadcastable shape, and causal masking computed per block (no L x S mask).
PyTorch's FlexAttention has no backward on CPU; this one does.

A sink logit (``sink``: one more key with a zero value) starts each row's
running max and sum; its gradient is -p_sink rowsum(dout * out).

With a ``mask_mod`` or the sigmoid normalizer, attend runs the block-sparse
path of :mod:`attnzoo.core.blockwise` instead (query blocks over the keys
the mask_mod leaves open).

Restrictions (each an error that says so): softmax or sigmoid, no dropout, no
weights returned (use ``eager`` for those). A ``score_mod`` with learned
tensors must be an ``nn.Module`` (its parameters are then differentiated).

Shape legend: B batch, H heads, L queries, S keys, D key size, E value size,
b block size.
"""

from __future__ import annotations

import inspect

import torch
from torch import Tensor, nn

from .scores import Score

#: default key-block size
BLOCK_SIZE = 128
#: bytes of one (B, H, L, b) float32 block (b shrinks below BLOCK_SIZE for long queries, down to 16 keys);
#: for the additive score, of one (B, H, L, b, A) block (down to 1 key)
BLOCK_BYTES = 8 * 2 ** 20


def _params(score, score_mod) -> list[Tensor]:
    params = [p for p in score.parameters() if p.requires_grad]
    if score_mod is not None:
        if isinstance(score_mod, nn.Module):
            params += [p for p in score_mod.parameters() if p.requires_grad]
        else:
            _refuse_hidden_parameters(score_mod)
    return params


def _refuse_hidden_parameters(fn) -> None:
    """A plain-function score_mod must not close over trainable tensors (their gradient would be lost)."""
    try:
        captured = inspect.getclosurevars(fn)
    except TypeError:
        return
    for name, val in {**captured.nonlocals, **captured.globals}.items():
        trainable = (isinstance(val, Tensor) and val.requires_grad) or \
            (isinstance(val, nn.Module) and any(p.requires_grad for p in val.parameters()))
        if trainable:
            raise ValueError(f"score_mod captures the trainable {name!r}; backend='chunked' differentiates only "
                             "parameters it can see: make the score_mod an nn.Module holding them, or use "
                             "backend='eager'")


def _slice(x: Tensor | None, j0: int, j1: int, S: int) -> Tensor | None:
    """Keys j0:j1 of a tensor broadcastable to (..., S) (a size-1 key dim broadcasts as is)."""
    if x is None or x.shape[-1] == 1 and S != 1:
        return x
    return x[..., j0:j1]


class _Spec:
    """The non-tensor arguments of one call."""

    def __init__(self, score, score_mod, mask, causal, query_offset, block, n_params):
        self.score, self.score_mod, self.mask = score, score_mod, mask
        self.causal, self.query_offset, self.block, self.n_params = causal, query_offset, block, n_params


def _first_row(spec: _Spec, j0: int) -> int:
    """With causal masking, queries before this row see no key of the block starting at j0: skip them."""
    return max(0, j0 - spec.query_offset) if spec.causal else 0


def _sum_to(x: Tensor, shape: torch.Size) -> Tensor:
    """Sum ``x`` down to a shape it was broadcast from."""
    lead = x.dim() - len(shape)
    if lead:
        x = x.sum(dim=tuple(range(lead)))
    dims = tuple(i for i, n in enumerate(shape) if n == 1 and x.shape[i] != 1)
    return x.sum(dim=dims, keepdim=True) if dims else x

def _manual_backward(score: Score, score_mod) -> bool:
    """True when ds flows to q and k by matrix products: a plain dot product (no learned tensor in
    ``compare``) with at most a parameter-free additive ``score_mod``."""
    if type(score).dot_form is Score.dot_form or score.compare_uses_parameters:
        return False
    if score_mod is None:
        return True
    if not getattr(score_mod, "additive", False):
        return False
    if isinstance(score_mod, torch.nn.Module):
        return not any(p.requires_grad for p in score_mod.parameters())
    return True


def block_scores(spec: _Spec, q_rows: Tensor, k_keys: Tensor, bias_blk: Tensor | None, r0: int, j0: int,
                 S: int) -> Tensor:
    """Float32 scores of the queries r0:r0+l (``q_rows``) against the keys j0:j0+b (``k_keys``), with bias,
    score_mod, mask and causal masking applied -> (B, H, l, b); blocked keys -inf. Shared by the chunked
    (key blocks) and tiled (row blocks) backends."""
    s = spec.score.compare(q_rows, k_keys)  # (B, H, l, b)
    s = s if s.dtype == torch.float64 else s.float()
    if bias_blk is not None:
        s = s + bias_blk
    B, H, l, b = s.shape
    q_idx = torch.arange(r0, r0 + l, device=s.device).view(1, 1, l, 1) + spec.query_offset
    kv_idx = torch.arange(j0, j0 + b, device=s.device).view(1, 1, 1, b)
    if spec.score_mod is not None:
        s = spec.score_mod(s, torch.arange(B, device=s.device).view(B, 1, 1, 1),
                           torch.arange(H, device=s.device).view(1, H, 1, 1), q_idx, kv_idx)
    allowed = _window(spec.mask, r0, r0 + l, j0, j0 + b, S)
    if spec.causal:
        c = kv_idx <= q_idx  # (1, 1, l, b)
        allowed = c if allowed is None else allowed & c
    if allowed is not None:
        s = s.masked_fill(~allowed, float("-inf"))
    return s


def _window(x: Tensor | None, r0: int, r1: int, j0: int, j1: int, S: int) -> Tensor | None:
    """Rows r0:r1 and keys j0:j1 of a tensor broadcastable to (..., L, S) (size-1 dims broadcast as they are)."""
    x = _slice(x, j0, j1, S)
    if x is None or x.dim() < 2 or x.shape[-2] == 1:
        return x
    return x[..., r0:r1, :]


class _ChunkedAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, bias, sink, spec: _Spec, *params):
        B, H, L, _ = q.shape
        S, E = k.shape[-2], v.shape[-1]
        stat = torch.float64 if q.dtype == torch.float64 else torch.float32
        m = torch.full((B, H, L), float("-inf"), dtype=stat, device=q.device)  # running row max
        l = torch.zeros(B, H, L, dtype=stat, device=q.device)  # running sum of e^(s - m)
        if sink is not None:  # the sink is one more key with a zero value: it starts the running max and sum
            m = sink.detach().to(stat).expand(B, H, L, 1)[..., 0].clone()
            l = torch.isfinite(m).to(stat)
        acc = torch.zeros(B, H, L, E, dtype=stat, device=q.device)
        with torch.no_grad():
            for j0 in range(0, S, spec.block):
                j1 = min(j0 + spec.block, S)
                r0 = _first_row(spec, j0)  # causal: rows before r0 see none of these keys
                if r0 >= L:
                    break
                s = block_scores(spec, q[:, :, r0:], k[:, :, j0:j1], _window(bias, r0, L, j0, j1, S),
                                 r0, j0, S)  # (B, H, L - r0, b)
                m_old = m[:, :, r0:]
                m_new = torch.maximum(m_old, s.amax(-1))
                m_safe = torch.where(torch.isinf(m_new), torch.zeros_like(m_new), m_new)  # rows with no key yet
                p = torch.exp(s - m_safe[..., None])  # blocked keys: e^-inf = 0
                correction = torch.exp(m_old - m_safe)
                l[:, :, r0:] = l[:, :, r0:] * correction + p.sum(-1)
                acc[:, :, r0:] = acc[:, :, r0:] * correction[..., None] + p.to(v.dtype) @ v[:, :, j0:j1]
                m[:, :, r0:] = m_new
        has_key = l > 0  # a fully masked row gets zero output
        out = torch.where(has_key[..., None], acc / l.clamp_min(torch.finfo(stat).tiny)[..., None],
                          torch.zeros_like(acc)).to(v.dtype)
        m_safe = torch.where(torch.isinf(m), torch.zeros_like(m), m)
        lse = torch.where(has_key, m_safe + torch.log(l.clamp_min(torch.finfo(stat).tiny)),
                          torch.full_like(m, float("inf")))  # +inf: e^(s - lse) = 0 on empty rows
        ctx.spec = spec
        device = q.device.type
        ctx.autocast = (device, torch.is_autocast_enabled(device),
                        torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else None)
        ctx.save_for_backward(q, k, v, bias, sink, out, lse, *params)
        return out

    @staticmethod
    def backward(ctx, dout):
        spec = ctx.spec
        q, k, v, bias, sink, out, lse, *params = ctx.saved_tensors
        S = k.shape[-2]
        stat = lse.dtype
        delta = (dout.to(stat) * out.to(stat)).sum(-1)  # (B, H, L) rowsum(dout * out)
        dq = torch.zeros_like(q, dtype=stat)
        dk = torch.zeros_like(k, dtype=stat)
        dv = torch.zeros_like(v, dtype=stat)
        dbias = None
        if bias is not None and ctx.needs_input_grad[3]:
            dbias = torch.zeros_like(bias, dtype=stat)  # bias's own (broadcastable) shape
        dparams = [torch.zeros_like(p) for p in params]
        L = q.shape[-2]
        dout_stat = dout.to(stat)
        dsink = None
        if sink is not None and ctx.needs_input_grad[4]:  # d/dsink = -p_sink rowsum(dout * out), per row
            p_sink = torch.exp(sink.to(stat).expand(*lse.shape, 1)[..., 0] - lse)  # (B, H, L)
            dsink = _sum_to((-p_sink * delta)[..., None], sink.shape).to(sink.dtype)
        manual = not params and _manual_backward(spec.score, spec.score_mod)
        if manual:  # a plain dot product with at most a parameter-free bias: ds flows by matrix products
            qf, kf, scale = spec.score.dot_form(q, k)
            qf, kf = qf.to(stat), kf.to(stat)
        for j0 in range(0, S, spec.block):
            j1 = min(j0 + spec.block, S)
            r0 = _first_row(spec, j0)  # causal: rows before r0 got nothing from these keys
            if r0 >= L:
                break
            if manual:
                with torch.no_grad():
                    s = block_scores(spec, q[:, :, r0:], k[:, :, j0:j1], _window(bias, r0, L, j0, j1, S),
                                     r0, j0, S)  # (B, H, L - r0, b), recomputed
                    p = torch.exp(s.sub_(lse[:, :, r0:, None]))  # (B, H, L - r0, b)
                    do = dout_stat[:, :, r0:]
                    dv[:, :, j0:j1] += p.transpose(-1, -2) @ do  # (B, H, b, E)
                    ds = (do @ v[:, :, j0:j1].to(stat).transpose(-1, -2)).sub_(delta[:, :, r0:, None]).mul_(p)
                    if dbias is not None:
                        target = _window(dbias, r0, L, j0, j1, S)
                        target += _sum_to(ds, target.shape)
                    dq[:, :, r0:] += (ds @ kf[:, :, j0:j1]) * scale  # (B, H, L - r0, D)
                    dk[:, :, j0:j1] += (ds.transpose(-1, -2) @ qf[:, :, r0:]) * scale  # (B, H, b, D)
                continue
            device, enabled, dtype = ctx.autocast
            with torch.enable_grad(), torch.autocast(device, dtype=dtype, enabled=enabled):  # as in forward
                qd = q[:, :, r0:].detach().requires_grad_()
                kd = k[:, :, j0:j1].detach().requires_grad_()
                bd = _window(bias, r0, L, j0, j1, S)
                bd = None if bd is None else bd.detach().requires_grad_(dbias is not None)
                s = block_scores(spec, qd, kd, bd, r0, j0, S)  # (B, H, L - r0, b), recomputed
            p = torch.exp(s.detach() - lse[:, :, r0:, None])  # (B, H, L - r0, b)
            v_blk = v[:, :, j0:j1]
            do = dout_stat[:, :, r0:]
            dv[:, :, j0:j1] += p.transpose(-1, -2) @ do  # (B, H, b, E)
            dp = do @ v_blk.to(stat).transpose(-1, -2)  # (B, H, L - r0, b)
            ds = p * (dp - delta[:, :, r0:, None])
            wrt = [qd, kd] + ([bd] if dbias is not None else []) + list(params)
            grads = torch.autograd.grad(s, wrt, grad_outputs=ds.to(s.dtype), allow_unused=True)
            if grads[0] is not None:
                dq[:, :, r0:] += grads[0]
            if grads[1] is not None:
                dk[:, :, j0:j1] += grads[1]
            rest = grads[2:]
            if dbias is not None:
                if rest[0] is not None:  # autograd already summed it to the block's own shape
                    _window(dbias, r0, L, j0, j1, S).add_(rest[0])
                rest = rest[1:]
            for acc, g in zip(dparams, rest):
                if g is not None:
                    acc += g
        dbias = None if dbias is None else dbias.to(bias.dtype)
        return (dq.to(q.dtype), dk.to(k.dtype), dv.to(v.dtype), dbias, dsink, None, *dparams)


def chunked_attention(score, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, bias: Tensor | None,
                      score_mod, causal: bool, query_offset: int, block_size: int | None = None,
                      sink: Tensor | None = None) -> Tensor:
    """Exact softmax attention by key blocks: q (B,H,L,D'), k (B,H,S,D'), v (B,H,S,E) -> (B,H,L,E).

    ``q`` and ``k`` are already projected (``score.project_query``/``project_keys``)."""
    if block_size is None:
        width = getattr(score, "hidden_dim", None) if score.compare_uses_parameters else None
        per_key = q.shape[0] * q.shape[1] * q.shape[2] * 4 * (width or 1)  # bytes of one key's column
        # about BLOCK_BYTES per (B, H, L, b) block tensor (several live at once), 16 to 128 keys
        block = max(1 if width else 16, min(BLOCK_SIZE, BLOCK_BYTES // per_key))
    else:
        block = int(block_size)
    if block < 1:
        raise ValueError(f"block_size must be >= 1, got {block_size}")
    params = _params(score, score_mod)
    spec = _Spec(score, score_mod, mask, causal, query_offset, block, len(params))
    return _ChunkedAttention.apply(q, k, v, bias, sink, spec, *params)
