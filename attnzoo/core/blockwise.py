"""Block-sparse attention by query blocks: the ``chunked`` backend's path for a ``mask_mod`` and for
normalizers other than softmax (sigmoid).

For each block of r query rows, the ``mask_mod`` names the key ranges those rows may reach
(:func:`~attnzoo.core.masks.key_spans_of`: a sliding window, global tokens, a document); only those keys
are gathered and the eager pipeline runs on them:

    for each block i of r query rows (absolute positions q_lo .. q_hi - 1):
        J    = key_spans(q_lo, q_hi, S)                       # keys outside J are blocked for every row
        s_i  = score(q_i, k_J) + bias, then score_mod           # (B, H, r, |J|) float32
        w_i  = normalize(s_i, mask & mask_mod & causal, sink)   # exact: no open key lies outside J
        o_i  = w_i v_J                                          # (B, H, r, E)

The backward recomputes each block (nothing of size L x |J| is kept) and adds its gradients into the keys
it read: memory and time grow with L x |J| (a window of w keys: L x (w + r)), not L x S. Softmax
(with or without a sink) and sigmoid; no dropout and no weights (those need the whole L x S matrix: use
``eager``).

Shape legend: B batch, H heads, L queries, S keys, D key size, E value size, r rows per block.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .masks import _key_spans_of, has_key_spans
from .normalize import NORMALIZERS, softmax
from .scores import Score

#: at most this many bytes of one block's float32 scores (rows per block <= this / (B * H * |J| * 4))
BLOCK_BYTES = 4 * 2 ** 20


def _keys(x: Tensor | None, spans: list[tuple[int, int]], S: int, dim: int = -1) -> Tensor | None:
    """The keys of ``spans`` along ``dim`` of a tensor broadcastable to S there: one slice, or several joined."""
    if x is None or (x.shape[dim] == 1 and S != 1):
        return x
    if len(spans) == 1:
        return x.narrow(dim, spans[0][0], spans[0][1] - spans[0][0])
    return torch.cat([x.narrow(dim, a, b - a) for a, b in spans], dim=dim)


def _rows(x: Tensor | None, r0: int, r1: int) -> Tensor | None:
    if x is None or x.dim() < 2 or x.shape[-2] == 1:
        return x
    return x[..., r0:r1, :]


def _key_index(spans: list[tuple[int, int]], device) -> Tensor:
    return torch.cat([torch.arange(a, b, device=device) for a, b in spans]) if spans else \
        torch.zeros(0, dtype=torch.long, device=device)


class _Block:
    """One query block's eager pipeline (a function of tensors only, for checkpointing)."""

    def __init__(self, score: Score, score_mod, mask_mod, causal: bool, normalize: str):
        self.score, self.score_mod, self.mask_mod = score, score_mod, mask_mod
        self.causal, self.normalize = causal, normalize

    def __call__(self, q: Tensor, k: Tensor, v: Tensor, bias: Tensor | None, mask: Tensor | None,
                 sink: Tensor | None, q_idx: Tensor, kv_idx: Tensor) -> Tensor:
        s = self.score.compare(q, k)  # (B, H, r, |J|)
        s = s if s.dtype == torch.float64 else s.float()
        if bias is not None:
            s = s + bias
        B, H = s.shape[0], s.shape[1]
        b = torch.arange(B, device=s.device).view(B, 1, 1, 1)
        h = torch.arange(H, device=s.device).view(1, H, 1, 1)
        qi, ki = q_idx.view(1, 1, -1, 1), kv_idx.view(1, 1, 1, -1)
        if self.score_mod is not None:
            s = self.score_mod(s, b, h, qi, ki)
        allowed = mask
        for extra in (None if self.mask_mod is None else self.mask_mod(b, h, qi, ki),
                      (ki <= qi) if self.causal else None):
            if extra is not None:
                extra = torch.as_tensor(extra, device=s.device).to(torch.bool)
                allowed = extra if allowed is None else allowed & extra
        if allowed is not None:
            allowed = allowed.expand_as(s)
        if sink is not None:
            w = softmax(s, allowed, sink)
        else:
            w = NORMALIZERS[self.normalize](s, allowed)
        return w.to(v.dtype) @ v  # (B, H, r, E)


class _Plan:
    """The non-tensor arguments of one call and its blocks: (r0, r1, key spans) per block of query rows."""

    def __init__(self, block: _Block, blocks: list, query_offset: int, n_params: int):
        self.block, self.blocks, self.query_offset, self.n_params = block, blocks, query_offset, n_params

    def args(self, q, k, v, bias, mask, sink, r0, r1, spans, S):
        """The tensors block (r0, r1, spans) reads: its query rows and only its keys."""
        return (q[:, :, r0:r1], _keys(k, spans, S, dim=-2), _keys(v, spans, S, dim=-2),
                _keys(_rows(bias, r0, r1), spans, S), _keys(_rows(mask, r0, r1), spans, S), _rows(sink, r0, r1),
                torch.arange(r0 + self.query_offset, r1 + self.query_offset, device=q.device),
                _key_index(spans, q.device))


def _add_keys(acc: Tensor, grad: Tensor, spans, S: int, dim: int = -1) -> None:
    """acc[keys of spans] += grad along ``dim`` (grad holds the spans' keys one after another)."""
    if acc.shape[dim] == 1 and S != 1:
        acc += grad.sum(dim, keepdim=True)
        return
    at = 0
    for a, b in spans:
        acc.narrow(dim, a, b - a).add_(grad.narrow(dim, at, b - a))
        at += b - a


class _BlockwiseAttention(torch.autograd.Function):
    """Forward without a graph; backward recomputes each block and adds its gradients into the keys it read
    (so no block's gradient is ever an L x S or S x D tensor of zeros)."""

    @staticmethod
    def forward(ctx, q, k, v, bias, sink, mask, plan: _Plan, *params):
        B, H, L, S = q.shape[0], q.shape[1], q.shape[2], k.shape[2]
        out = v.new_zeros(B, H, L, v.shape[-1])
        with torch.no_grad():
            for r0, r1, spans in plan.blocks:
                out[:, :, r0:r1] = plan.block(*plan.args(q, k, v, bias, mask, sink, r0, r1, spans, S))
        ctx.plan = plan
        ctx.save_for_backward(q, k, v, bias, sink, mask, *params)
        return out

    @staticmethod
    def backward(ctx, dout):
        plan = ctx.plan
        q, k, v, bias, sink, mask, *params = ctx.saved_tensors
        S = k.shape[2]
        stat = torch.float64 if q.dtype == torch.float64 else torch.float32  # accumulate in float32
        dq, dk, dv = (torch.zeros_like(t, dtype=stat) for t in (q, k, v))
        need_bias = bias is not None and ctx.needs_input_grad[3]
        need_sink = sink is not None and ctx.needs_input_grad[4]
        dbias = torch.zeros_like(bias) if need_bias else None
        dsink = torch.zeros_like(sink) if need_sink else None
        dparams = [torch.zeros_like(p) for p in params]
        for r0, r1, spans in plan.blocks:
            qb, kb, vb, bb, mb, sb, qi, ki = plan.args(q, k, v, bias, mask, sink, r0, r1, spans, S)
            leaves = [t.detach().requires_grad_() for t in (qb, kb, vb)]
            bb = None if bb is None else bb.detach().requires_grad_(need_bias)
            sb = None if sb is None else sb.detach().requires_grad_(need_sink)
            with torch.enable_grad():
                o = plan.block(*leaves, bb, mb, sb, qi, ki)
            wrt = leaves + ([bb] if need_bias else []) + ([sb] if need_sink else []) + list(params)
            grads = torch.autograd.grad(o, wrt, grad_outputs=dout[:, :, r0:r1], allow_unused=True)
            gq, gk, gv, *rest = grads
            if gq is not None:
                dq[:, :, r0:r1] += gq
            if gk is not None:
                _add_keys(dk, gk, spans, S, dim=-2)
            if gv is not None:
                _add_keys(dv, gv, spans, S, dim=-2)
            if need_bias:
                g = rest.pop(0)
                if g is not None:
                    _add_keys(_rows(dbias, r0, r1), _sum_rows(g, _rows(dbias, r0, r1)), spans, S)
            if need_sink:
                g = rest.pop(0)
                if g is not None:
                    dsink += g  # the block's sink is the whole (broadcast) sink
            for acc, g in zip(dparams, rest):
                if g is not None:
                    acc += g
        return (dq.to(q.dtype), dk.to(k.dtype), dv.to(v.dtype), dbias, dsink, None, None, *dparams)


def _sum_rows(g: Tensor, target: Tensor) -> Tensor:
    """A block's bias gradient summed over the dims its (broadcast) bias does not have, keys kept."""
    lead = g.dim() - target.dim()
    if lead:
        g = g.sum(dim=tuple(range(lead)))
    dims = tuple(i for i in range(target.dim() - 1) if target.shape[i] == 1 and g.shape[i] != 1)
    return g.sum(dim=dims, keepdim=True) if dims else g


def blockwise_attention(score: Score, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, bias: Tensor | None,
                        score_mod, mask_mod, causal: bool, query_offset: int, normalize: str = "softmax",
                        sink: Tensor | None = None, block_rows: int | None = None) -> Tensor:
    """q (B,H,L,D'), k (B,H,S,D'), v (B,H,S,E) -> (B,H,L,E); ``q``/``k`` already projected, ``sink``
    broadcastable to (B, H, L, 1)."""
    from .chunked import _params

    L, S = q.shape[2], k.shape[2]
    rows = block_rows or _block_rows(q, k, mask_mod, causal, query_offset)
    blocks = []
    for r0 in range(0, L, rows):
        r1 = min(r0 + rows, L)
        q_lo, q_hi = r0 + query_offset, r1 + query_offset
        spans = [(0, S)] if mask_mod is None else _key_spans_of(mask_mod, q_lo, q_hi, S)
        if causal:
            spans = [(a, min(b, max(0, q_hi))) for a, b in spans if min(b, max(0, q_hi)) > a]
        if spans:  # rows with no key to reach keep their zero output
            blocks.append((r0, r1, spans))
    params = _params(score, score_mod)
    plan = _Plan(_Block(score, score_mod, mask_mod, causal, normalize), blocks, query_offset, len(params))
    return _BlockwiseAttention.apply(q, k, v, bias, sink, mask, plan, *params)


def _block_rows(q: Tensor, k: Tensor, mask_mod, causal: bool, query_offset: int) -> int:
    """Rows per block: about half the keys a block reaches beyond its own rows (fewer wasted pairs at the
    window's edges; 128 rows and a window of 256 ran 1.3x faster than 256 rows, 2-core Xeon), at most
    BLOCK_BYTES of float32 scores, 32 to 256 rows."""
    B, H, L, S = q.shape[0], q.shape[1], q.shape[2], k.shape[2]
    probe = 128
    mid = query_offset + max(0, L // 2 - probe // 2)
    spans = [(0, S)] if mask_mod is None else _key_spans_of(mask_mod, mid, mid + probe, S)
    width = max(1, sum(b - a for a, b in spans))
    rows = max(32, (width - probe) // 2) if width > probe else 256
    return max(32, min(256, rows, BLOCK_BYTES // (4 * B * H * width)))


#: with a sparse mask_mod, backend="auto" takes the block-skipping chunked path from this many (query, key) pairs
SPARSE_AUTO_PAIRS = 2 ** 22


def skips_most_blocks(mask_mod, grid: tuple[int, int, int, int], query_offset: int) -> bool:
    """True when a mask_mod names the keys each block of 128 queries may reach and they are under half of all."""
    B, H, L, S = grid
    if mask_mod is None or not has_key_spans(mask_mod) or B * H * L * S < SPARSE_AUTO_PAIRS:
        return False
    open_pairs = 0
    for r0 in range(0, L, 128):
        r1 = min(L, r0 + 128)
        spans = _key_spans_of(mask_mod, r0 + query_offset, r1 + query_offset, S)
        open_pairs += (r1 - r0) * sum(b - a for a, b in spans)
    return 2 * open_pairs < L * S
