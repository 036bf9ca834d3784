"""Convolutional attention: lightweight and dynamic convolutions, attention-augmented convolution, and
ConvS2S multi-step attention.

* :class:`LightweightConv` and :class:`DynamicConv` (Wu et al. 2019) replace self-attention with a
  depthwise convolution over time whose K-tap kernel is softmax-normalised and shared by the d/H
  channels of a head; the dynamic variant predicts the kernel of every position from that position's
  input. They take the self-attention layer's call (``x, key_mask=, is_causal=, need_weights=,
  cache=``), so a Transformer block takes them in its self-attention slot
  (``BlockConfig(self_attention="dynamic")``); ``is_causal=True`` is the decoder's left-padded
  convolution, and a :class:`ConvCache` of the last K-1 inputs makes incremental decoding equal the
  full pass.
* :class:`AugmentedConv2d` (Bello et al. 2019) concatenates a 2-D convolution with multi-head
  self-attention over the image's positions, with 2-D relative position logits.
* :class:`MultiStepAttention` (Gehring et al. 2017) is the attention of one ConvS2S decoder layer
  (the model is :class:`~attnzoo.models.convs2s.ConvS2S`).

Masks are boolean with True = a real position that may be attended (the opposite of
``nn.MultiheadAttention``'s ``key_padding_mask``).

Shape legend: B batch, L length (new positions when a cache is used), S all positions so far (or the
source length), T target length, C channels (``dim``), H heads (kernels), R = C / H channels per
head, K kernel size, E embedding size; images: Y height, X width, P = Y * X positions, N attention
heads of the augmented convolution (its ``num_heads``), Dk and Dv their key and value depth per head.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..core import validate as V
from ..core.attend import AttentionOutput, attend
from ..core.dropout import dropout
from ..core.kv_cache import KVCache
from .registry import register

WU_2019 = "Wu et al. 2019, Pay Less Attention with Lightweight and Dynamic Convolutions"


def _check_sequence(name: str, x: Tensor, dim: int, weight: Tensor) -> None:
    V.check_tensor(name, x)
    V.check_floating(name, x)
    if x.dim() != 3 or x.shape[-1] != dim:
        raise ValueError(f"{name} must have shape (B, L, {dim}) (B, L, dim), got {V.fmt_shape(x.shape)}")
    if x.dtype != weight.dtype and not torch.is_autocast_enabled(x.device.type):
        raise TypeError(f"{name} has dtype {x.dtype} but the layer's weights are {weight.dtype}; "
                        f"pass {name}.to({weight.dtype}) or convert the layer with .to({x.dtype})")


def _check_key_mask(name: str, key_mask: Tensor, B: int, S: int, what: str = "") -> None:
    V.check_tensor(name, key_mask)
    if key_mask.dtype != torch.bool:
        raise TypeError(f"{name} must be boolean (True = a real position), got dtype {key_mask.dtype}; "
                        f"nn.MultiheadAttention's key_padding_mask converts with ~key_padding_mask")
    if tuple(key_mask.shape) != (B, S):
        raise ValueError(f"{name} must have shape (B, S) = ({B}, {S}){what}, got {V.fmt_shape(key_mask.shape)}")


# ----------------------------------------------------------------------------- the decoder's cache
class ConvCache:
    """The last K-1 inputs of one causal convolution layer, for incremental decoding.

    Caller-owned state, appended to by the layer (like :class:`~attnzoo.core.kv_cache.KVCache`,
    the documented exception to "attnzoo never changes its inputs in place"); it never holds more
    than K-1 positions, whatever the length decoded. ``len(cache)`` counts every position seen.
    """

    def __init__(self) -> None:
        self.window: Tensor | None = None  # (B, <= K-1, C) the newest inputs
        self.length = 0  # positions seen so far
        self.static = False  # never a cross-attention memory (KVCache's flag, for code that checks it)

    def __len__(self) -> int:
        return self.length

    @V.checked(keep=V.COUNT)
    def append(self, x: Tensor, keep: int) -> Tensor:
        """x (B, L, C) new inputs -> (B, keep + L, C): the ``keep`` inputs before x (zeros before the
        first position, as the full pass's left padding) and x; the cache keeps the last ``keep``."""
        V.check_tensor("x", x)
        V.check_rank("x", x, (3,), "(B, L, C)")
        if self.window is None:
            past = x.new_zeros(x.shape[0], 0, x.shape[-1])
        else:
            past = self.window
            if past.shape[0] != x.shape[0] or past.shape[-1] != x.shape[-1]:
                raise ValueError(f"x of shape {V.fmt_shape(x.shape)} does not continue the cached inputs of shape "
                                 f"{V.fmt_shape(past.shape)} (B and C must match; use one ConvCache per layer)")
            if past.dtype != x.dtype or past.device != x.device:
                raise TypeError(f"x has dtype {x.dtype} on {x.device} but the cached inputs have dtype {past.dtype} "
                                f"on {past.device}; keep one dtype and device per cache (or start a new ConvCache)")
        if past.shape[1] < keep:  # fewer than K-1 positions so far: the zeros of the left padding
            past = torch.cat([past.new_zeros(past.shape[0], keep - past.shape[1], past.shape[2]), past], 1)
        window = torch.cat([past[:, past.shape[1] - keep:], x], 1)  # (B, keep + L, C)
        self.window = window[:, window.shape[1] - keep:]  # (B, keep, C)
        self.length += x.shape[1]
        return window

    def index_select_(self, index: Tensor) -> ConvCache:
        """Reorder or repeat the batch rows in place (beam search)."""
        V.check_tensor("index", index)
        if self.window is not None:
            self.window = self.window.index_select(0, index)
        return self

    def reset(self) -> None:
        self.__init__()

    def __repr__(self) -> str:
        shape = None if self.window is None else V.fmt_shape(self.window.shape)
        return f"ConvCache(length={self.length}, window={shape})"


# ----------------------------------------------------------------------------- lightweight / dynamic
@register("lightweight", family="convolutional", paper=WU_2019)
class LightweightConv(nn.Module):
    """out_i = W_o [sum_k softmax(W_h(c))_k u_(i+k-P),c]_c, u = GLU(W_in x): a depthwise kernel per head h.

    The block of Wu et al. (2019), Section 3: an input projection to 2d channels and a GLU, the
    lightweight convolution

        LightConv(u, W, i, c) = sum_{k=1..K} softmax(W_h(c))_k u_(i + k - P), c,   h(c) = floor(c H / d)

    (channel c uses the kernel of its head: d/H neighbouring channels share one K-tap kernel, softmax-
    normalised over its taps), and an output projection W_o. P = K - 1 (``is_causal=True``, the
    decoder: each output sees its own and the K-1 earlier positions) or (K - 1) // 2 (the encoder:
    a centred window); positions outside the sequence are zeros. Masked positions (``key_mask``
    False) are zeroed before the convolution, so they contribute nothing. ``weight_dropout``
    (DropConnect) drops taps of the normalised kernel in training.

    The call is that of the self-attention layer Transformer blocks use; ``need_weights=True``
    returns the convolution as a (B, H, L, S) banded "attention" matrix (row i: the kernel taps on
    positions i-P .. i-P+K-1; rows do not sum to one where the window leaves the sequence or covers
    padding).
    """

    dynamic = False

    @V.checked()
    def __init__(self, dim: int, num_heads: int = 1, kernel_size: int = 7, *, weight_dropout: float = 0.0,
                 bias: bool = True):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim ({dim}) must be divisible by num_heads ({num_heads}): each head's kernel "
                             f"is shared by dim / num_heads channels")
        self.dim, self.num_heads, self.kernel_size, self.weight_dropout = dim, num_heads, kernel_size, weight_dropout
        self.in_proj = nn.Linear(dim, 2 * dim, bias=bias)  # to the GLU's value and gate halves
        if self.dynamic:
            self.kernel_proj = nn.Linear(dim, num_heads * kernel_size, bias=False)  # W^Q of the paper
            nn.init.xavier_uniform_(self.kernel_proj.weight)
        else:
            self.kernel = nn.Parameter(torch.empty(num_heads, kernel_size))
            nn.init.xavier_uniform_(self.kernel)
        self.o_proj = nn.Linear(dim, dim, bias=bias)

    def new_cache(self) -> ConvCache:
        """An empty cache for incremental decoding (what a Transformer decoder creates per layer)."""
        return ConvCache()

    def kernels(self, u: Tensor) -> Tensor:
        """The normalised kernels: (H, K) (lightweight) or (B, L, H, K) from u (B, L, C) (dynamic),
        float32 (float64 for float64 inputs), after weight dropout in training."""
        wdtype = torch.float64 if u.dtype == torch.float64 else torch.float32
        if self.dynamic:
            B, L, _ = u.shape
            raw = self.kernel_proj(u).view(B, L, self.num_heads, self.kernel_size)  # (B, L, H, K)
        else:
            raw = self.kernel
        w = torch.softmax(raw.to(wdtype), dim=-1)
        if self.weight_dropout > 0 and self.training:
            w = dropout(w, self.weight_dropout)
        return w

    def forward(self, x: Tensor, *, key_mask: Tensor | None = None, is_causal: bool = False,
                need_weights: bool = False, cache: ConvCache | None = None) -> AttentionOutput:
        """Convolve x over time.

        Args:
            x: (B, L, dim) inputs (with a cache: the newest L positions).
            key_mask: (B, L) boolean, True = a real position (with a cache: (B, S), all positions
                so far, as for multi-head attention; the cached ones were masked when they came).
            is_causal: the decoder's convolution over the current and K-1 previous positions
                (False: the encoder's centred window).
            need_weights: also return the (B, H, L, S) banded weights.
            cache: a caller-owned :class:`ConvCache` (``self.new_cache()``), appended to; needs
                ``is_causal=True``.
        Returns:
            AttentionOutput(output (B, L, dim), weights (B, H, L, S) float32 or None).
        """
        _check_sequence("x", x, self.dim, self.in_proj.weight)
        B, L, C = x.shape
        past = 0
        if cache is not None:
            if isinstance(cache, KVCache):
                raise TypeError(f"{type(self).__name__} keeps its last K-1 inputs in a ConvCache, got a KVCache; "
                                "pass layer.new_cache()")
            if not isinstance(cache, ConvCache):
                raise TypeError(f"cache must be a ConvCache (layer.new_cache()), got {type(cache).__name__}")
            if not is_causal:
                raise ValueError("a ConvCache serves the decoder's causal convolution: pass is_causal=True "
                                 "(a centred window would need positions that have not come yet)")
            past = cache.length
        if key_mask is not None:
            what = " (all positions so far, cached ones included)" if cache is not None else ""
            _check_key_mask("key_mask", key_mask, B, past + L, what)
        K = self.kernel_size
        left = K - 1 if is_causal else (K - 1) // 2
        u = F.glu(self.in_proj(x), dim=-1)  # (B, L, C)
        if key_mask is not None:
            u = u.masked_fill(~key_mask[:, past:, None], 0.0)  # masked positions contribute zero
        if cache is not None:
            padded = cache.append(u, K - 1)  # (B, K-1 + L, C) the K-1 previous inputs, then u
        else:
            padded = F.pad(u, (0, 0, left, K - 1 - left))  # (B, L + K-1, C) zeros outside the sequence
        w = self.kernels(u)  # (H, K) or (B, L, H, K)
        out = self._convolve(padded, w.to(u.dtype), L)  # (B, L, C)
        weights = None
        if need_weights:
            weights = self._band(w, B, L, left, past, key_mask)
        return AttentionOutput(self.o_proj(out), weights)

    def _convolve(self, padded: Tensor, w: Tensor, L: int) -> Tensor:
        """padded (B, L + K-1, C), kernels (H, K) or (B, L, H, K) -> (B, L, C)."""
        B, _, C = padded.shape
        H, K, R = self.num_heads, self.kernel_size, C // self.num_heads
        if L == 0:  # an empty sequence (the window would be shorter than the kernel)
            return padded.new_zeros(B, 0, C)  # (B, 0, C)
        if not self.dynamic:
            weight = w.repeat_interleave(R, dim=0)[:, None, :]  # (C, 1, K): channel c takes its head's kernel
            out = F.conv1d(padded.transpose(1, 2), weight, groups=C)  # (B, C, L) depthwise
            return out.transpose(1, 2)  # (B, L, C)
        windows = padded.unfold(1, K, 1)  # (B, L, C, K): windows[b, i, c, k] = padded[b, i + k, c]
        windows = windows.reshape(B, L, H, R, K)  # (B, L, H, R, K)
        out = torch.einsum("blhrk,blhk->blhr", windows, w)  # (B, L, H, R)
        return out.reshape(B, L, C)  # (B, L, C)

    def _band(self, w: Tensor, B: int, L: int, left: int, past: int, key_mask: Tensor | None) -> Tensor:
        """The convolution as a (B, H, L, S) matrix: row i holds tap k at position past + i - left + k."""
        H, K = self.num_heads, self.kernel_size
        S = past + L
        taps = w.expand(B, L, H, K) if w.dim() == 4 else w[None, None].expand(B, L, H, K)  # (B, L, H, K)
        taps = taps.permute(0, 2, 1, 3)  # (B, H, L, K)
        cols = torch.arange(L, device=w.device)[:, None] + torch.arange(K, device=w.device)  # (L, K)
        band = w.new_zeros(B, H, L, L + K - 1).scatter(3, cols.expand(B, H, L, K), taps)  # (B, H, L, L+K-1)
        # band column c is the position past - left + c; keep those inside [0, S)
        lo = max(0, left - past)
        hi = min(L + K - 1, S + left - past)
        out = w.new_zeros(B, H, L, S)
        out[..., past - left + lo: past - left + hi] = band[..., lo:hi]
        if key_mask is not None:
            out = out.masked_fill(~key_mask[:, None, None, :], 0.0)
        return out

    def extra_repr(self) -> str:
        return (f"dim={self.dim}, num_heads={self.num_heads}, kernel_size={self.kernel_size}, "
                f"weight_dropout={self.weight_dropout}")


@register("dynamic", family="convolutional", paper=WU_2019)
class DynamicConv(LightweightConv):
    """out_i = W_o [sum_k softmax(W^Q u_i)_h(c),k u_(i+k-P),c]_c: a lightweight convolution whose kernel is predicted per position.

    DynamicConv(u, i, c) = LightConv(u, f(u_i)_h(c), i, c) with f(u_i) = W^Q u_i reshaped to H x K
    (Wu et al. 2019, Section 4): every time step has its own kernels, a linear function of its input
    (u = GLU(W_in x), masked positions zero), softmax-normalised over the K taps. Everything else
    (heads, padding, causal and centred windows, the cache, the banded weights) is as
    :class:`LightweightConv`.
    """

    dynamic = True


# ----------------------------------------------------------------------------- attention-augmented conv
@register("aaconv", family="convolutional", paper="Bello et al. 2019, Attention Augmented Convolutional Networks")
class AugmentedConv2d(nn.Module):
    """AAConv(X) = [Conv(X); W_o MHA(X)]: C_out - Dv conv channels and Dv self-attention channels with 2-D relative logits.

    Bello et al. (2019), Section 3: for every head n the P = Y * X positions attend to each other,

        O_n = softmax((X W_q)(X W_k)^T / sqrt(Dk) + S_H^rel + S_W^rel) X W_v

    with the relative logits of query (y, x) and key (y', x')

        S_H^rel = q_yx . r^H_(y'-y) / sqrt(Dk),   S_W^rel = q_yx . r^W_(x'-x) / sqrt(Dk)

    (learned height and width embeddings of Dk values, shared by the heads), i.e.
    l = q . (k + r^W + r^H) / sqrt(Dk). The heads are concatenated and projected by a 1x1
    convolution W_o, then concatenated, along channels, after the output of an ordinary convolution:
    (B, C_in, Y, X) -> (B, C_out, Y, X). ``dk``/``dv`` are the total key/value depths over all heads
    (the paper's d_k, d_v); the relative embeddings cover images up to ``max_size``. The attention
    runs through :func:`attnzoo.attend` with the relative logits as its ``bias``.
    """

    @V.checked()
    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, *, dk: int | None = None,
                 dv: int | None = None, num_heads: int = 4, relative: bool = True,
                 max_size: int | tuple[int, int] = 32, bias: bool = True):
        super().__init__()
        if dv is None:  # the paper's v = dv / C_out = 0.25, k = 2v
            dv = max(num_heads, (out_channels // 4) // num_heads * num_heads)
        dk = 2 * dv if dk is None else dk
        for size in (max_size,) if not isinstance(max_size, (tuple, list)) else max_size:
            V.SIZE.check("max_size", size, type(self).__name__)
        if kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd (a centred 'same' convolution), got {kernel_size}")
        if dk % num_heads or dv % num_heads:
            raise ValueError(f"dk ({dk}) and dv ({dv}) must be divisible by num_heads ({num_heads})")
        if dv > out_channels:
            raise ValueError(f"dv ({dv}) attention channels cannot exceed out_channels ({out_channels})")
        max_y, max_x = (max_size, max_size) if isinstance(max_size, int) else tuple(max_size)
        self.in_channels, self.out_channels, self.kernel_size = in_channels, out_channels, kernel_size
        self.dk, self.dv, self.num_heads, self.relative = dk, dv, num_heads, relative
        self.max_size = (max_y, max_x)
        self.conv = (nn.Conv2d(in_channels, out_channels - dv, kernel_size, padding=kernel_size // 2, bias=bias)
                     if out_channels > dv else None)
        self.qkv = nn.Conv2d(in_channels, 2 * dk + dv, 1, bias=bias)  # 1x1: queries, keys, values
        self.o_proj = nn.Conv2d(dv, dv, 1, bias=bias)
        head_k = dk // num_heads
        if relative:
            self.rel_h = nn.Parameter(torch.randn(2 * max_y - 1, head_k) * head_k ** -0.5)  # r^H_(y'-y)
            self.rel_w = nn.Parameter(torch.randn(2 * max_x - 1, head_k) * head_k ** -0.5)  # r^W_(x'-x)

    def relative_logits(self, q: Tensor, Y: int, X: int) -> Tensor:
        """q (B, N, P, Dk) -> the (B, N, P, P) bias q . (r^H_(y'-y) + r^W_(x'-x)) / sqrt(Dk)."""
        B, N, P, D = q.shape
        qs = (q * D ** -0.5).view(B, N, Y, X, D)  # (B, N, Y, X, Dk)
        max_y, max_x = self.max_size
        iy = torch.arange(Y, device=q.device)
        ix = torch.arange(X, device=q.device)
        r_h = self.rel_h[iy[None, :] - iy[:, None] + max_y - 1]  # (Y, Y', Dk): r^H_(y'-y)
        r_w = self.rel_w[ix[None, :] - ix[:, None] + max_x - 1]  # (X, X', Dk): r^W_(x'-x)
        lh = torch.einsum("bnyxd,yvd->bnyxv", qs, r_h.to(qs.dtype))  # (B, N, Y, X, Y')
        lw = torch.einsum("bnyxd,xwd->bnyxw", qs, r_w.to(qs.dtype))  # (B, N, Y, X, X')
        return (lh[..., :, None] + lw[..., None, :]).reshape(B, N, P, P)  # (B, N, P, P) over keys (y', x')

    def forward(self, x: Tensor, *, need_weights: bool = False) -> AttentionOutput:
        """x (B, C_in, Y, X) -> AttentionOutput((B, C_out, Y, X), (B, N, P, P) float32 weights or None)."""
        V.check_tensor("x", x)
        V.check_floating("x", x)
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"x must have shape (B, C_in, Y, X) = (B, {self.in_channels}, Y, X), "
                             f"got {V.fmt_shape(x.shape)}")
        weight = self.qkv.weight
        if x.dtype != weight.dtype and not torch.is_autocast_enabled(x.device.type):
            raise TypeError(f"x has dtype {x.dtype} but the layer's weights are {weight.dtype}; "
                            f"pass x.to({weight.dtype}) or convert the layer with .to({x.dtype})")
        B, _, Y, X = x.shape
        if self.relative and (Y > self.max_size[0] or X > self.max_size[1]):
            raise ValueError(f"x of shape {V.fmt_shape(x.shape)} is larger than the {self.max_size[0]} x "
                             f"{self.max_size[1]} images its relative embeddings cover; build the layer with "
                             f"max_size=({Y}, {X}) or more")
        N, P = self.num_heads, Y * X
        q, k, v = self.qkv(x).split([self.dk, self.dk, self.dv], dim=1)  # (B, Dk*N | Dv*N, Y, X)
        q = q.reshape(B, N, self.dk // N, P).transpose(2, 3)  # (B, N, P, Dk)
        k = k.reshape(B, N, self.dk // N, P).transpose(2, 3)  # (B, N, P, Dk)
        v = v.reshape(B, N, self.dv // N, P).transpose(2, 3)  # (B, N, P, Dv)
        bias = self.relative_logits(q, Y, X) if self.relative else None
        out = attend(q, k, v, score="scaled_dot", bias=bias, need_weights=need_weights)
        attn = out.output.transpose(2, 3).reshape(B, self.dv, Y, X)  # (B, N*Dv, Y, X) heads along channels
        attn = self.o_proj(attn)
        y = attn if self.conv is None else torch.cat([self.conv(x), attn], dim=1)  # (B, C_out, Y, X)
        return AttentionOutput(y, out.weights)

    def extra_repr(self) -> str:
        return (f"in_channels={self.in_channels}, out_channels={self.out_channels}, kernel_size={self.kernel_size}, "
                f"dk={self.dk}, dv={self.dv}, num_heads={self.num_heads}, relative={self.relative}, "
                f"max_size={self.max_size}")


# ----------------------------------------------------------------------------- ConvS2S
@register("multistep", family="convolutional", paper="Gehring et al. 2017, Convolutional Sequence to Sequence "
                                                     "Learning")
class MultiStepAttention(nn.Module):
    """c_i = sqrt(m) sum_j softmax_j(d_i . z_j) sqrt(.5)(z_j + e_j), d_i = sqrt(.5)(W_d h_i + b_d + g_i): one ConvS2S decoder layer's attention.

    Gehring et al. (2017), Section 3.3, with the scaling of Section 3.4 (as in the authors' fairseq
    code): for decoder state h_i (the layer's GLU output, ``dim`` channels) and target embedding g_i,

        d_i   = sqrt(0.5) (W_d h_i + b_d + g_i)                  # a sum of two terms, scaled as a residual
        a_ij  = softmax_j(d_i . z_j)                             # z: the encoder output (keys)
        c_i   = m sqrt(1/m) sum_j a_ij sqrt(0.5) (z_j + e_j)     # e: the source embeddings; m unmasked sources
        out_i = sqrt(0.5) (W_o c_i + b_o + h_i)                  # back to ``dim`` channels, plus the residual

    m sqrt(1/m) = sqrt(m) undoes the variance an average of m vectors loses (assuming uniform
    weights); m counts each row's real source positions. Every decoder layer has its own attention,
    which sees the attention of the layers below through h ("multi-step"). ``values`` is z + e,
    computed once per source by the model.
    """

    @V.checked()
    def __init__(self, dim: int, embed_dim: int | None = None, bias: bool = True):
        super().__init__()
        embed_dim = dim if embed_dim is None else embed_dim
        self.dim, self.embed_dim = dim, embed_dim
        self.in_proj = nn.Linear(dim, embed_dim, bias=bias)  # W_d, b_d
        self.o_proj = nn.Linear(embed_dim, dim, bias=bias)  # W_o, b_o

    def forward(self, h: Tensor, target_embed: Tensor, keys: Tensor, values: Tensor,
                key_mask: Tensor | None = None, *, need_weights: bool = False) -> AttentionOutput:
        """h (B, T, dim), target_embed g (B, T, E), keys z (B, S, E), values z + e (B, S, E),
        key_mask (B, S) -> AttentionOutput(out (B, T, dim), weights (B, T, S) float32 or None)."""
        _check_sequence("h", h, self.dim, self.in_proj.weight)
        B, T, _ = h.shape
        E = self.embed_dim
        S = keys.shape[1] if isinstance(keys, Tensor) and keys.dim() == 3 else "S"
        for name, t, want in (("target_embed", target_embed, (B, T, E)), ("keys", keys, (B, S, E)),
                              ("values", values, (B, S, E))):
            V.check_tensor(name, t)
            V.check_floating(name, t)
            if tuple(t.shape) != want:
                raise ValueError(f"{name} must have shape {V.fmt_shape(want)}, got {V.fmt_shape(t.shape)}")
        mask = None
        if key_mask is not None:
            _check_key_mask("key_mask", key_mask, B, S)
            mask = key_mask[:, None, :]  # (B, 1, S)
        half = math.sqrt(0.5)
        d = (self.in_proj(h) + target_embed) * half  # (B, T, E)
        out = attend(d, keys, values, score="dot", mask=mask, need_weights=need_weights)
        m = (key_mask.sum(-1) if key_mask is not None else torch.full((B,), S, device=h.device))  # (B,)
        c = out.output * (m.to(out.output.dtype).sqrt() * half)[:, None, None]  # (B, T, E)
        return AttentionOutput((self.o_proj(c) + h) * half, out.weights)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, embed_dim={self.embed_dim}"
