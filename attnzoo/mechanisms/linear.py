"""Linear attention: softmax's exp(q . k) replaced by a kernel phi(q) . phi(k), so the sum over keys factors.

Katharopoulos et al. 2020, "Transformers are RNNs" (phi(x) = elu(x) + 1):

    out_i = phi(q_i)^T (sum_j phi(k_j) v_j^T) / phi(q_i)^T (sum_j phi(k_j))          (non-causal: j over all keys)
    S_i   = S_{i-1} + phi(k_i) v_i^T,  z_i = z_{i-1} + phi(k_i),  out_i = phi(q_i)^T S_i / phi(q_i)^T z_i   (causal)

Time and memory grow linearly in the sequence length; causal decoding keeps a constant-size state
(S, z) instead of a KV cache (:class:`LinearState`). The causal pass is computed by chunks of C positions
in parallel (no Python loop over positions): within a chunk the masked C x C products, across chunks an
exclusive prefix sum of each chunk's phi(K)^T V:

    out_c = [tril(phi(Q_c) phi(K_c)^T) V_c + phi(Q_c) S_{<c}] / [tril(phi(Q_c) phi(K_c)^T) 1 + phi(Q_c) z_{<c}]

Choromanski et al. 2021, "Rethinking Attention with Performers" (FAVOR+) takes phi to be positive
orthogonal random features, phi(x) = exp(W x - |x|^2 / 2) / sqrt(m) on x = q / D^(1/4), whose dot product
estimates exp(q . k / sqrt(D)) without bias: softmax attention in expectation, closer as m grows
(:meth:`Performer.redraw` draws new features).

The implied weights A_ij = phi(q_i) . phi(k_j) / sum_j' phi(q_i) . phi(k_j') (a distribution over the
allowed keys) are what ``need_weights=True`` returns, materialised from the factors: the eager path,
the reference every fast path is tested against (``fused_attn=False`` takes it too).

Shape legend: B batch, H heads, L queries, S keys, D head dim (features: F = D for elu, m for
Performer), E value head dim, C chunk size, n = L / C chunks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..core import validate as V
from ..core.attend import AttentionOutput
from .base import _check_sequence_call, _resolve_head_dim
from .registry import register


@dataclass
class LinearState:
    """The recurrent state of causal linear attention: S = sum phi(k) v^T, z = sum phi(k), over ``position`` keys.
    Its size does not grow with the sequence (the linear-attention counterpart of a KV cache)."""

    kv: Tensor | None = None  # (B, H, F, E) float32 (float64 stays)
    z: Tensor | None = None  # (B, H, F)
    position: int = 0

    def __len__(self) -> int:
        return self.position

    def index_select_(self, index: Tensor) -> LinearState:
        """Reorder or repeat the batch rows in place (beam search)."""
        V.check_tensor("index", index)
        if self.kv is not None:
            self.kv, self.z = self.kv.index_select(0, index), self.z.index_select(0, index)
        return self

    def reset(self) -> None:
        self.kv, self.z, self.position = None, None, 0


def _stat(x: Tensor) -> torch.dtype:
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def causal_linear(fq: Tensor, fk: Tensor, v: Tensor, chunk: int, state: LinearState | None = None
                  ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Causal linear attention by chunks: fq, fk (B, H, L, F) features, v (B, H, L, E), all float32/64 ->
    (numerator (B, H, L, E), denominator (B, H, L), final kv (B, H, F, E), final z (B, H, F))."""
    B, H, L, Fd = fq.shape
    E = v.shape[-1]
    pad = (-L) % chunk
    if pad:  # zero features add nothing to any sum
        fq, fk, v = (F.pad(t, (0, 0, 0, pad)) for t in (fq, fk, v))
    n = (L + pad) // chunk
    fq_c, fk_c, v_c = (t.reshape(B, H, n, chunk, t.shape[-1]) for t in (fq, fk, v))  # (B, H, n, C, .)
    kv_c = fk_c.transpose(-1, -2) @ v_c  # (B, H, n, F, E) each chunk's phi(K)^T V
    z_c = fk_c.sum(-2)  # (B, H, n, F)
    kv0 = torch.zeros(B, H, 1, Fd, E, dtype=fq.dtype, device=fq.device) if state is None or state.kv is None \
        else state.kv.unsqueeze(2)
    z0 = torch.zeros(B, H, 1, Fd, dtype=fq.dtype, device=fq.device) if state is None or state.z is None \
        else state.z.unsqueeze(2)
    kv_prev = torch.cat([kv0, kv_c], dim=2).cumsum(2)  # (B, H, n + 1, F, E): sums before chunk c, then all
    z_prev = torch.cat([z0, z_c], dim=2).cumsum(2)  # (B, H, n + 1, F)
    scores = (fq_c @ fk_c.transpose(-1, -2)).tril()  # (B, H, n, C, C) within-chunk products, causal
    num = scores @ v_c + fq_c @ kv_prev[:, :, :n]  # (B, H, n, C, E)
    den = scores.sum(-1) + (fq_c @ z_prev[:, :, :n].unsqueeze(-1)).squeeze(-1)  # (B, H, n, C)
    num = num.reshape(B, H, n * chunk, E)[:, :, :L]
    den = den.reshape(B, H, n * chunk)[:, :, :L]
    return num, den, kv_prev[:, :, n], z_prev[:, :, n]


def causal_linear_attention(fq: Tensor, fk: Tensor, v: Tensor, chunk: int = 128) -> Tensor:
    """Causal linear attention from features: fq, fk (B, H, L, F) > 0 and v (B, H, L, E) -> (B, H, L, E), by
    :func:`causal_linear`'s chunks (each query's features scaled to a max of one first: the ratio is unchanged)."""
    fq = fq / fq.amax(-1, keepdim=True).detach().clamp_min(torch.finfo(fq.dtype).tiny)
    num, den, _, _ = causal_linear(fq, fk, v, chunk)
    return _divide(num, den)


@register("linear", family="linear", paper="Katharopoulos et al. 2020, Transformers are RNNs: Fast "
                                            "Autoregressive Transformers with Linear Attention")
class LinearAttention(nn.Module):
    """out_i = phi(q_i)^T sum_j phi(k_j) v_j^T / phi(q_i)^T sum_j phi(k_j), phi(x) = elu(x) + 1."""

    @V.checked()
    def __init__(self, dim: int, num_heads: int, head_dim: int | None = None, *, key_dim: int | None = None,
                 value_dim: int | None = None, bias: bool = True, chunk_size: int = 128, fused_attn: bool = True):
        super().__init__()
        head_dim = _resolve_head_dim(dim, num_heads, head_dim)
        self.dim, self.num_heads, self.head_dim = dim, num_heads, head_dim
        self.chunk_size, self.fused_attn = chunk_size, fused_attn
        self.q_proj = nn.Linear(dim, num_heads * head_dim, bias=bias)
        self.k_proj = nn.Linear(key_dim or dim, num_heads * head_dim, bias=bias)
        self.v_proj = nn.Linear(value_dim or dim, num_heads * head_dim, bias=bias)
        self.o_proj = nn.Linear(num_heads * head_dim, dim, bias=bias)

    def features(self, x: Tensor, is_query: bool) -> Tensor:
        """phi(x) = elu(x) + 1 > 0, in float32 (float64 stays): (B, H, L, D) -> (B, H, L, D)."""
        return F.elu(x.to(_stat(x))) + 1

    def new_cache(self) -> LinearState:
        """The decoding state: constant size, whatever the length."""
        return LinearState()

    def _heads(self, x: Tensor) -> Tensor:
        B, L, _ = x.shape
        return x.view(B, L, self.num_heads, self.head_dim).transpose(1, 2)  # (B, H, L, D)

    def forward(self, x: Tensor, key: Tensor | None = None, value: Tensor | None = None, *,
                key_mask: Tensor | None = None, is_causal: bool = False, need_weights: bool = False,
                cache: LinearState | None = None) -> AttentionOutput:
        """Self-attention ``attn(x)`` or cross-attention ``attn(x, key=memory, value=memory)``.

        Args:
            x: (B, L, dim); key/value: (B, S, key_dim/value_dim) memory for cross-attention.
            key_mask: (B, S) boolean, True = a real key (masked keys add nothing to the sums).
            is_causal: each query sums over itself and earlier keys (self-attention only).
            need_weights: also return the implied (B, H, L, S) weights (materialised from the factors).
            cache: a :class:`LinearState` for causal decoding (self-attention); updated in place.
        """
        self._check(x, key, value, key_mask, is_causal, cache)
        q = self._heads(self.q_proj(x))
        memory = x if key is None else key
        k = self._heads(self.k_proj(memory))
        v = self._heads(self.v_proj(memory if value is None else value))  # (B, H, S, E)
        with torch.autocast(x.device.type, enabled=False):  # the sums run in float32, as softmax does
            out, weights = self._attend(q, k, v, key_mask, is_causal, need_weights, cache)
        out = out.to(x.dtype)  # (B, H, L, E)
        B, H, L, E = out.shape
        merged = out.transpose(1, 2).reshape(B, L, H * E)  # (B, L, H*E)
        return AttentionOutput(self.o_proj(merged), weights if need_weights else None)

    def _attend(self, q: Tensor, k: Tensor, v: Tensor, key_mask: Tensor | None, is_causal: bool, need_weights: bool,
                cache: LinearState | None) -> tuple[Tensor, Tensor | None]:
        """Heads (B, H, L, D), (B, H, S, D), (B, H, S, E) -> (output (B, H, L, E), implied weights or None)."""
        fq, fk = self.features(q, True), self.features(k, False)  # (B, H, L, F), (B, H, S, F)
        # a query's features may be scaled freely (the scale cancels in the ratio): to a max of 1, so that very
        # negative elu inputs do not underflow the sums
        fq = fq / fq.amax(-1, keepdim=True).detach().clamp_min(torch.finfo(fq.dtype).tiny)
        if key_mask is not None:
            fk = fk * key_mask[:, None, :, None].to(fk.dtype)  # a masked key adds nothing
        vs = v.to(fk.dtype)
        weights = None
        if need_weights or not self.fused_attn:
            num, den, weights = self._eager(fq, fk, vs, is_causal, cache)
        elif is_causal:
            num, den, kv, z = causal_linear(fq, fk, vs, self.chunk_size, cache)
            if cache is not None:
                cache.kv, cache.z, cache.position = kv, z, cache.position + q.shape[2]
        else:
            num = fq @ (fk.transpose(-1, -2) @ vs)  # (B, H, L, E): phi(Q) (phi(K)^T V)
            den = fq @ fk.sum(-2).unsqueeze(-1)  # (B, H, L, 1)
            den = den.squeeze(-1)
        return _divide(num, den), weights

    def _eager(self, fq: Tensor, fk: Tensor, v: Tensor, is_causal: bool, cache: LinearState | None):
        """The reference: the implied weights materialised, A = tril(phi(Q) phi(K)^T) / rowsum (plus the state)."""
        scores = fq @ fk.transpose(-1, -2)  # (B, H, L, S), all >= 0
        if is_causal:
            scores = scores.tril()
        num, den = scores @ v, scores.sum(-1)
        if cache is not None and is_causal:
            if cache.kv is not None:  # earlier positions, folded into the state
                num, den = num + fq @ cache.kv, den + (fq @ cache.z.unsqueeze(-1)).squeeze(-1)
            kv = fk.transpose(-1, -2) @ v + (0 if cache.kv is None else cache.kv)
            z = fk.sum(-2) + (0 if cache.z is None else cache.z)
            cache.kv, cache.z, cache.position = kv, z, cache.position + fq.shape[2]
        weights = _divide(scores, den.unsqueeze(-1))  # with a state: this call's keys' share (rows sum <= 1)
        return num, den, weights

    def _check(self, x, key, value, key_mask, is_causal, cache) -> None:
        _check_sequence_call(x, self.dim, key, value, self.k_proj.in_features, self.v_proj.in_features)
        S = x.shape[1] if key is None else key.shape[1]
        if key_mask is not None:
            V.check_tensor("key_mask", key_mask)
            if key_mask.dtype != torch.bool or tuple(key_mask.shape) != (x.shape[0], S):
                raise ValueError(f"key_mask must be a boolean (B, S) = ({x.shape[0]}, {S}) tensor (True = a real "
                                 f"key), got {key_mask.dtype} {V.fmt_shape(key_mask.shape)}")
        if cache is not None:
            if not isinstance(cache, LinearState):
                raise TypeError(f"cache must be a LinearState (layer.new_cache()), got {type(cache).__name__}; "
                                "linear attention keeps a constant-size state, not a KVCache")
            if key is not None or not is_causal:
                raise ValueError("a LinearState decodes causal self-attention: pass is_causal=True and no key=")
            if key_mask is not None:
                raise ValueError("key_mask with a LinearState: padding inside a decoded sequence has no meaning "
                                 "for a running sum; decode each sequence without it")
        if is_causal and key is not None and key.shape[1] != x.shape[1]:
            raise ValueError(f"is_causal=True needs as many keys as queries, got L={x.shape[1]}, S={key.shape[1]}")

    def extra_repr(self) -> str:
        return (f"dim={self.dim}, num_heads={self.num_heads}, head_dim={self.head_dim}, "
                f"chunk_size={self.chunk_size}, fused_attn={self.fused_attn}")


def _divide(num: Tensor, den: Tensor) -> Tensor:
    """num / den with den broadcast over num's last dim; 0 where nothing was attended (den = 0, or so small that
    its square, in the gradient, would underflow: every key's features underflowed)."""
    den = den if den.dim() == num.dim() else den.unsqueeze(-1)
    attended = den > torch.finfo(den.dtype).tiny ** 0.5
    return torch.where(attended, num, torch.zeros_like(num)) / torch.where(attended, den, torch.ones_like(den))


def orthogonal_features(num_features: int, dim: int, generator: torch.Generator | None = None) -> Tensor:
    """(m, D) Gaussian rows made orthogonal in blocks of D, each row rescaled to a chi(D) norm (FAVOR+)."""
    blocks = []
    for _ in range(math.ceil(num_features / dim)):
        g = torch.randn(dim, dim, generator=generator, dtype=torch.float64)
        q, _ = torch.linalg.qr(g)
        blocks.append(q.T)  # orthonormal rows
    w = torch.cat(blocks)[:num_features]
    norms = torch.randn(num_features, dim, generator=generator, dtype=torch.float64).norm(dim=1, keepdim=True)
    return (w * norms).float()


@register("performer", family="linear", paper="Choromanski et al. 2021, Rethinking Attention with Performers "
                                               "(FAVOR+)")
class Performer(LinearAttention):
    """phi(x) = exp(W x' - |x'|^2 / 2) / sqrt(m), x' = x / D^(1/4): E[phi(q) . phi(k)] = exp(q . k / sqrt(D)).

    W: m orthogonal random features (``num_features``, default 2 D), drawn from ``seed``."""

    @V.checked(seed=V.INT)
    def __init__(self, dim: int, num_heads: int, head_dim: int | None = None, *, num_features: int | None = None,
                 seed: int = 0, **kw):
        super().__init__(dim, num_heads, head_dim, **kw)
        self.num_features = num_features or 2 * self.head_dim
        self._generator = torch.Generator().manual_seed(seed)
        self.register_buffer("projection", orthogonal_features(self.num_features, self.head_dim, self._generator))

    @torch.no_grad()
    def redraw(self) -> None:
        """Draw new random features (Performer redraws them during training)."""
        fresh = orthogonal_features(self.num_features, self.head_dim, self._generator)
        self.projection.copy_(fresh.to(self.projection))

    def features(self, x: Tensor, is_query: bool) -> Tensor:
        """Positive random features (B, H, L, D) -> (B, H, L, m): exp(W x' - |x'|^2/2 - c) / sqrt(m), with the
        stabiliser c = a query row's max (cancels in the ratio) or, for keys, max_r |W_r|^2 / 2 (a bound on
        W x' - |x'|^2/2 that does not depend on the data, so decoding step by step sees the same features)."""
        x = x.to(_stat(x)) / self.head_dim ** 0.25
        w = self.projection.to(x.dtype)
        logits = x @ w.T - (x * x).sum(-1, keepdim=True) / 2  # (B, H, L, m)
        if is_query:
            shift = logits.amax(-1, keepdim=True).detach()
            shift = torch.where(torch.isfinite(shift), shift, torch.zeros_like(shift))
        else:
            shift = (w * w).sum(-1).amax() / 2
        return torch.exp(logits - shift) / math.sqrt(self.num_features)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, num_features={self.num_features}"
