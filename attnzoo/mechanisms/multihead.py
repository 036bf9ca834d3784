"""Multi-head attention: MHA (Vaswani 2017), MQA (Shazeer 2019), GQA (Ainslie 2023).

    head_h = softmax(Q_h K_g(h)^T / sqrt(D) + position terms) V_g(h),   g(h) = h // (H / G)
    out    = W_o [head_1; ...; head_H]

with Q = x W_q split into H heads and K, V projected to G key/value heads:
G = H is MHA, G = 1 is MQA, anything between is GQA (each K/V head shared by
H / G query heads). Everything after the projections is :func:`attnzoo.attend`:
with ``need_weights=False`` and ``fused_attn=True`` PyTorch's fused kernel
runs; with ``need_weights=True`` the eager path returns per-head weights.

Positions (``positions=``), each in its slot of the core:
``"rope"`` rotates q and k; ``"alibi"`` and ``"t5"`` are score_mod biases;
``"relative"`` (Shaw 2018) is a bias from q. Positions apply to
self-attention only (cross-attention compares two sequences). Absolute positions
(sinusoidal, learned) are added to the inputs by the model, not here.

One stage of the pipeline each, options of every layer here (and registered
presets below): ``gate=True`` multiplies each head's output by a sigmoid gate
computed from x (gated attention, Qiu et al. 2025); ``sinks=True`` learns one
sink logit per head (weights then sum to less than one: a head may attend to
nothing); ``softcap=c`` caps the logits at c tanh(s / c) (Gemma 2);
``normalize="sigmoid"`` replaces the softmax by sigmoid(s - log n)
(Ramapuram et al. 2024). Each runs on every backend that can run it.

Masks are boolean with True = may attend (the opposite of
``nn.MultiheadAttention``'s ``key_padding_mask`` and boolean ``attn_mask``).

Shape legend: B batch, L query length, S key length, H heads, G key/value
heads, D head dim, ``dim`` model width.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..core import validate as V
from ..core.attend import AttentionOutput, attend
from ..core.kv_cache import KVCache, RollingKVCache
from ..core.masks import _causal_mask, and_masks
from ..core.scores import SoftCap, compose_score_mods
from ..positions import ALiBi, RelativePositions, RotaryPositions, T5RelativeBias
from .base import _check_sequence_call, _resolve_head_dim
from .registry import register

POSITIONS = (None, "rope", "alibi", "t5", "relative")
#: what may replace the softmax in a multi-head layer
LAYER_NORMALIZERS = ("softmax", "sigmoid")


def _check_cache(cache: object) -> None:
    if cache is not None and not isinstance(cache, KVCache):
        raise TypeError(f"cache must be a KVCache (one per layer and per self-/cross-attention), got "
                        f"{type(cache).__name__}")


@register("mha", family="multi-head", paper="Vaswani et al. 2017, Attention Is All You Need")
class MultiHeadAttention(nn.Module):
    """out = W_o [softmax(Q_h K_g(h)^T / sqrt(D)) V_g(h)]_h; G = H (MHA), 1 (MQA) or between (GQA)."""

    @V.checked(positions=V.one_of(POSITIONS), softcap=V.POSITIVE, normalize=V.one_of(LAYER_NORMALIZERS))
    def __init__(self, dim: int, num_heads: int, num_kv_heads: int | None = None, head_dim: int | None = None, *,
                 key_dim: int | None = None, value_dim: int | None = None, bias: bool = True,
                 dropout_p: float = 0.0, positions: str | None = None, fused_attn: bool = True,
                 relative_distance: int = 16, t5_bidirectional: bool = True, gate: bool = False,
                 sinks: bool = False, softcap: float | None = None, normalize: str = "softmax"):
        super().__init__()
        num_kv_heads = num_heads if num_kv_heads is None else num_kv_heads
        if num_heads % num_kv_heads:
            raise ValueError(f"num_heads ({num_heads}) must be a multiple of num_kv_heads ({num_kv_heads})")
        head_dim = _resolve_head_dim(dim, num_heads, head_dim)
        self.dim, self.num_heads, self.num_kv_heads, self.head_dim = dim, num_heads, num_kv_heads, head_dim
        self.dropout_p, self.fused_attn, self.positions = dropout_p, fused_attn, positions
        self.q_proj = nn.Linear(dim, num_heads * head_dim, bias=bias)
        self.k_proj = nn.Linear(key_dim or dim, num_kv_heads * head_dim, bias=bias)
        self.v_proj = nn.Linear(value_dim or dim, num_kv_heads * head_dim, bias=bias)
        self.o_proj = nn.Linear(num_heads * head_dim, dim, bias=bias)
        self.rope = RotaryPositions(head_dim) if positions == "rope" else None
        self.alibi = ALiBi(num_heads) if positions == "alibi" else None
        self.t5 = T5RelativeBias(num_heads, bidirectional=t5_bidirectional) if positions == "t5" else None
        self.relative = RelativePositions(head_dim, relative_distance) if positions == "relative" else None
        self._stages(gate, sinks, softcap, normalize)

    def _stages(self, gate: bool, sinks: bool, softcap: float | None, normalize: str) -> None:
        """The optional stages: an output gate, sink logits, a logit cap, the normaliser."""
        if sinks and normalize != "softmax":
            raise ValueError(f"{type(self).__name__}: sinks=True needs normalize='softmax' (a sink is one more key "
                             f"of the softmax), got normalize={normalize!r}")
        self.normalize = normalize
        # gated attention: sigmoid(x W_g), one gate per head and channel, on each head's output
        self.gate_proj = nn.Linear(self.dim, self.num_heads * self.head_dim, bias=True) if gate else None
        self.sink = nn.Parameter(torch.zeros(self.num_heads)) if sinks else None  # one logit per head
        self.softcap = softcap
        cap = SoftCap(softcap) if softcap is not None else None
        # composed once (a tuple, so the T5 table is not registered twice): self-attention's and cross's score_mod
        self._score_mods = (compose_score_mods(self.alibi or self.t5, cap), cap)

    def mask_mod(self, cross: bool):
        """The mask_mod this layer adds to every call (None here; a sliding window in its subclass)."""
        return None

    def _heads(self, x: Tensor, n: int) -> Tensor:
        B, L, _ = x.shape
        return x.view(B, L, n, self.head_dim).transpose(1, 2)  # (B, n, L, D)

    def _project_packed(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Self-attention's q, k and v from one matmul with [W_q; W_k; W_v] (x is read once, one GEMM
        instead of three: what nn.MultiheadAttention's packed in_proj does; the three layers stay separate
        parameters). The heads are views into the one (B, L, (H + 2G) D) result.

        Projections that are not plain ``nn.Linear`` layers, or carry hooks (a LoRA wrapper, a
        quantised layer, a user's hook), are called one by one, as they expect."""
        projs = (self.q_proj, self.k_proj, self.v_proj)
        if any(type(p) is not nn.Linear or p._forward_hooks or p._forward_pre_hooks for p in projs) or \
                len({p.bias is None for p in projs}) > 1:
            return (self._heads(self.q_proj(x), self.num_heads), self._heads(self.k_proj(x), self.num_kv_heads),
                    self._heads(self.v_proj(x), self.num_kv_heads))
        weight = torch.cat([self.q_proj.weight, self.k_proj.weight, self.v_proj.weight])  # ((H+2G)D, dim)
        bias = None if self.q_proj.bias is None else \
            torch.cat([self.q_proj.bias, self.k_proj.bias, self.v_proj.bias])
        qkv = F.linear(x, weight, bias)  # (B, L, (H+2G)D)
        q, k, v = qkv.split([self.q_proj.out_features, self.k_proj.out_features, self.v_proj.out_features], dim=-1)
        return self._heads(q, self.num_heads), self._heads(k, self.num_kv_heads), self._heads(v, self.num_kv_heads)

    def forward(self, x: Tensor, key: Tensor | None = None, value: Tensor | None = None, *,
                key_mask: Tensor | None = None, mask: Tensor | None = None, is_causal: bool = False,
                need_weights: bool = False, cache: KVCache | None = None, mask_mod=None) -> AttentionOutput:
        """Self-attention ``mha(x)`` or cross-attention ``mha(x, key=memory, value=memory)``.

        Args:
            x: (B, L, dim) queries (and keys/values for self-attention).
            key, value: (B, S, key_dim / value_dim) memory for cross-attention (value defaults to key).
            key_mask: (B, S) boolean, True = a real key (with a cache: over all cached + new keys).
            mask: boolean broadcastable to (B, H, L, S), e.g. an (L, S) attention pattern.
            is_causal: block future keys (queries are the newest positions when a cache is used).
            need_weights: return (B, H, L, S) per-head weights (runs the eager path).
            mask_mod: ``mask_mod(b, h, q_idx, kv_idx)`` over absolute positions, with the layer's own pattern
                (e.g. :func:`attnzoo.core.masks.document` for a packed batch).
            cache: a caller-owned :class:`KVCache`; self-attention appends to it, cross-attention
                stores the projected memory on the first call and reuses it after (later calls
                may then pass key=None).
        Returns:
            AttentionOutput(output (B, L, dim), weights (B, H, L, S) or None).
        """
        self._check_call(x, key, value, cache)
        cross = key is not None or (cache is not None and cache.static)  # a static cache holds a memory
        offset = 0 if cache is None or cross else cache.position  # absolute position of x[:, 0]
        if cross and cache is not None and cache.static:
            q = self._heads(self.q_proj(x), self.num_heads)  # (B, H, L, D)
            k, v = cache.keys, cache.values  # (B, G, S, D) projected memory, reused
            if k.shape[0] != x.shape[0]:
                raise ValueError(f"cache holds a memory of batch {k.shape[0]} but x has batch {x.shape[0]} "
                                 f"({V.fmt_shape(x.shape)}); reorder it with cache.index_select_ or start a new one")
        else:
            if cross:
                q = self._heads(self.q_proj(x), self.num_heads)  # (B, H, L, D)
                k = self._heads(self.k_proj(key), self.num_kv_heads)  # (B, G, S_new, D)
                v = self._heads(self.v_proj(value if value is not None else key), self.num_kv_heads)
            else:
                q, k, v = self._project_packed(x)  # (B, H, L, D), (B, G, L, D), (B, G, L, D)
            if self.rope is not None and not cross:
                q, k = self.rope(q, k, q_offset=offset, k_offset=offset)
            if cache is not None:
                if cross:
                    cache.store(k, v)
                else:
                    k, v = cache.append(k, v)  # (B, G, S, D) all keys so far
        S = k.shape[-2]
        if key_mask is not None:
            V.check_tensor("key_mask", key_mask)
            if key_mask.dtype != torch.bool:
                raise TypeError(f"key_mask must be boolean (True = a real key), got dtype {key_mask.dtype}; "
                                "nn.MultiheadAttention's key_padding_mask converts with ~key_padding_mask")
            if tuple(key_mask.shape) != (x.shape[0], S):
                raise ValueError(f"key_mask must have shape (B, S) = ({x.shape[0]}, {S}) (all keys, cached ones "
                                 f"included), got {V.fmt_shape(key_mask.shape)}")
            km = key_mask[:, None, None, :]  # (B, 1, 1, S)
            mask = km if mask is None else mask & km
        bias = self.relative.bias(q, S, offset) if self.relative is not None and not cross else None
        own = self.mask_mod(cross)
        mask_mod = own if mask_mod is None else (mask_mod if own is None else and_masks(own, mask_mod))
        if isinstance(cache, RollingKVCache):  # kept keys are not at positions 0..S-1: mask by their positions
            mask, mask_mod, is_causal = self._rolling_mask(cache, q.shape[2], offset, mask, is_causal), None, False
        out = attend(q, k, v, score="scaled_dot", mask=mask, bias=bias, score_mod=self._score_mods[int(cross)],
                     mask_mod=mask_mod, sink=self.sink, normalize=self.normalize, is_causal=is_causal,
                     dropout_p=self.dropout_p if self.training else 0.0, need_weights=need_weights,
                     backend="auto" if self.fused_attn else "eager", query_offset=offset)
        B, H, L, D = out.output.shape
        heads = out.output
        if self.gate_proj is not None:  # gated attention: each head's output times sigmoid(x W_g)
            heads = heads * torch.sigmoid(self._heads(self.gate_proj(x), H)).to(heads.dtype)  # (B, H, L, D)
        merged = heads.transpose(1, 2).reshape(B, L, H * D)  # (B, L, H*D)
        return AttentionOutput(self.o_proj(merged), out.weights)

    def _check_call(self, x: Tensor, key: Tensor | None, value: Tensor | None, cache: object) -> None:
        """x, the cross-attention memory and the cache: types, shapes and dtypes, before any projection."""
        _check_sequence_call(x, self.dim, key, value, self.k_proj.in_features, self.v_proj.in_features)
        weight_dtype = self.q_proj.weight.dtype
        if x.dtype != weight_dtype and not torch.is_autocast_enabled(x.device.type):
            raise TypeError(f"x has dtype {x.dtype} but the layer's weights are {weight_dtype}; "
                            f"pass x.to({weight_dtype}) or convert the layer with .to({x.dtype})")
        _check_cache(cache)
        if key is not None and value is not None and key.shape[1] != value.shape[1]:
            raise ValueError(f"key and value must have the same length S: key {V.fmt_shape(key.shape)}, "
                             f"value {V.fmt_shape(value.shape)}")

    def _rolling_mask(self, cache: RollingKVCache, L: int, offset: int, mask: Tensor | None,
                      is_causal: bool) -> Tensor | None:
        """The (L, S) mask of new queries over a rolling cache's keys, by absolute positions."""
        if self.relative is not None or self.alibi is not None or self.t5 is not None:
            raise ValueError(f"{type(self).__name__}: a RollingKVCache works with positions None or 'rope' (its "
                             f"keys are not at positions 0..S-1), got positions={self.positions!r}")
        kv_pos = cache.call_positions[None, :]  # (1, S)
        q_pos = torch.arange(offset, offset + L, device=kv_pos.device)[:, None]  # (L, 1)
        made = kv_pos <= q_pos if is_causal else torch.ones(L, kv_pos.shape[1], dtype=torch.bool,
                                                            device=kv_pos.device)
        mod = self.mask_mod(False)
        if mod is not None:
            made = made & mod(0, 0, q_pos, kv_pos)
        return made if mask is None else mask & made

    def extra_repr(self) -> str:
        extra = "".join(f", {name}={value!r}" for name, value, default in (
            ("gate", self.gate_proj is not None, False), ("sinks", self.sink is not None, False),
            ("softcap", self.softcap, None), ("normalize", self.normalize, "softmax")) if value != default)
        return (f"dim={self.dim}, num_heads={self.num_heads}, num_kv_heads={self.num_kv_heads}, "
                f"head_dim={self.head_dim}, positions={self.positions!r}, fused_attn={self.fused_attn}{extra}")


@register("gqa", family="multi-head", paper="Ainslie et al. 2023, GQA: Training Generalized Multi-Query "
                                             "Transformer Models from Multi-Head Checkpoints")
class GroupedQueryAttention(MultiHeadAttention):
    """Like MHA with G < H key/value heads, each shared by H / G query heads (default G = H / 4)."""

    @V.checked()
    def __init__(self, dim: int, num_heads: int, num_kv_heads: int | None = None, head_dim: int | None = None, **kw):
        super().__init__(dim, num_heads, max(1, num_heads // 4) if num_kv_heads is None else num_kv_heads, head_dim,
                         **kw)


@register("mqa", family="multi-head", paper="Shazeer 2019, Fast Transformer Decoding: One Write-Head is "
                                             "All You Need")
class MultiQueryAttention(MultiHeadAttention):
    """Like MHA with one key/value head shared by all query heads (G = 1)."""

    @V.checked()
    def __init__(self, dim: int, num_heads: int, head_dim: int | None = None, **kw):
        kv_heads = kw.pop("num_kv_heads", None)  # a config written for MHA/GQA may carry it: 1 is the only value
        if kv_heads is not None:
            V.SIZE.check("num_kv_heads", kv_heads, "MultiQueryAttention")
            if kv_heads != 1:
                raise ValueError(f"MultiQueryAttention: num_kv_heads must be 1 (one key/value head shared by all "
                                 f"query heads), got {kv_heads}; use GroupedQueryAttention for {kv_heads}")
        super().__init__(dim, num_heads, 1, head_dim, **kw)


@register("gated", family="multi-head", paper="Qiu et al. 2025, Gated Attention for Large Language Models: "
                                               "Non-linearity, Sparsity, and Attention-Sink-Free")
class GatedAttention(MultiHeadAttention):
    """head_h = softmax(Q_h K_h^T / sqrt(D)) V_h * sigmoid(x W_g)_h: an elementwise, head-specific output gate."""

    @V.checked()
    def __init__(self, dim: int, num_heads: int, num_kv_heads: int | None = None, head_dim: int | None = None, **kw):
        super().__init__(dim, num_heads, num_kv_heads, head_dim, **{"gate": True, **kw})


@register("sink", family="multi-head", paper="Xiao et al. 2023, Efficient Streaming Language Models with "
                                              "Attention Sinks (a learned sink logit per head, as in gpt-oss)")
class SinkAttention(MultiHeadAttention):
    """w_ij = exp(s_ij) / (exp(z_h) + sum_k exp(s_ik)): a learned sink logit z_h per head; weights sum below one."""

    @V.checked()
    def __init__(self, dim: int, num_heads: int, num_kv_heads: int | None = None, head_dim: int | None = None, **kw):
        super().__init__(dim, num_heads, num_kv_heads, head_dim, **{"sinks": True, **kw})


@register("softcap", family="multi-head", paper="Gemma Team 2024, Gemma 2: Improving Open Language Models at a "
                                                 "Practical Size (attention logit soft-capping)")
class SoftCapAttention(MultiHeadAttention):
    """softmax(c tanh(Q_h K_h^T / (c sqrt(D)))) V_h: logits soft-capped at c (default 50, Gemma 2's)."""

    @V.checked()
    def __init__(self, dim: int, num_heads: int, num_kv_heads: int | None = None, head_dim: int | None = None, **kw):
        super().__init__(dim, num_heads, num_kv_heads, head_dim, **{"softcap": 50.0, **kw})


@register("sigmoid", family="multi-head", paper="Ramapuram et al. 2024, Theory, Analysis, and Best Practices "
                                                 "for Sigmoid Self-Attention")
class SigmoidAttention(MultiHeadAttention):
    """head_h = sigmoid(Q_h K_h^T / sqrt(D) - log n) V_h: each weight on its own, n the keys a row may attend."""

    @V.checked()
    def __init__(self, dim: int, num_heads: int, num_kv_heads: int | None = None, head_dim: int | None = None, **kw):
        super().__init__(dim, num_heads, num_kv_heads, head_dim, **{"normalize": "sigmoid", **kw})


@register("mla", family="multi-head", paper="DeepSeek-AI 2024, DeepSeek-V2: A Strong, Economical, and Efficient "
                                             "Mixture-of-Experts Language Model (multi-head latent attention)")
class MultiHeadLatentAttention(nn.Module):
    """head_h = softmax([q_h; R q'_h] . [W_UK,h c; R W_KR x] / sqrt(D + D_R)) W_UV,h c, c = W_DKV x (latent).

    Keys and values are decompressed from one low-rank latent c (``kv_latent_dim`` per token) and a single
    RoPE key of ``rope_dim`` shared by the heads carries the positions ("decoupled RoPE"), so a decoding
    cache holds only (c, R W_KR x): kv_latent_dim + rope_dim numbers per token, against MHA's 2 H D. The
    cache is a :class:`~attnzoo.core.kv_cache.KVCache` whose keys are the latents (B, 1, S, kv_latent_dim)
    and whose values are the RoPE keys (B, 1, S, rope_dim).

    Two forms, equal (a test holds them to 1e-12): the plain one decompresses K and V and runs
    MHA-style attention (the fused kernel); the absorbed one (``absorb=True``, the default with a cache)
    folds W_UK into the query and W_UV after the weighted sum, so attention runs over the latents
    themselves as one shared key/value head and nothing is decompressed per cached token:
        score_h = ([W_UK,h^T q_h; R q'_h] . [c; R W_KR x]) / sqrt(D + D_R),  head_h = W_UV,h (sum softmax c).
    Queries may be compressed too (``q_latent_dim``), as in DeepSeek-V2.
    """

    own_positions = "rope"  # its decoupled RoPE key: a model asking for rope positions gets them here
    @V.checked()
    def __init__(self, dim: int, num_heads: int, head_dim: int | None = None, *, kv_latent_dim: int | None = None,
                 rope_dim: int | None = None, q_latent_dim: int | None = None, bias: bool = False,
                 dropout_p: float = 0.0, fused_attn: bool = True):
        super().__init__()
        head_dim = _resolve_head_dim(dim, num_heads, head_dim)
        self.dim, self.num_heads, self.head_dim = dim, num_heads, head_dim
        self.kv_latent_dim = kv_latent_dim or max(1, dim // 4)
        self.rope_dim = rope_dim or max(2, head_dim // 2)
        if self.rope_dim % 2:
            raise ValueError(f"MultiHeadLatentAttention: rope_dim must be even (RoPE rotates pairs), got "
                             f"{self.rope_dim}")
        self.dropout_p, self.fused_attn, self.q_latent_dim = dropout_p, fused_attn, q_latent_dim
        H, D, C, R = num_heads, head_dim, self.kv_latent_dim, self.rope_dim
        self.q_down = nn.Linear(dim, q_latent_dim, bias=bias) if q_latent_dim else None
        q_in = q_latent_dim or dim
        self.q_proj = nn.Linear(q_in, H * (D + R), bias=bias)  # [q_h; q'_h] per head
        self.kv_down = nn.Linear(dim, C, bias=bias)  # W_DKV: the latent, all that is cached
        self.k_up = nn.Linear(C, H * D, bias=False)  # W_UK
        self.v_up = nn.Linear(C, H * D, bias=False)  # W_UV
        self.k_rope = nn.Linear(dim, R, bias=bias)  # W_KR: the shared RoPE key
        self.o_proj = nn.Linear(H * D, dim, bias=True)
        self.rope = RotaryPositions(R)

    def new_cache(self) -> KVCache:
        """A cache of latents (keys) and RoPE keys (values): kv_latent_dim + rope_dim numbers per token."""
        return KVCache()

    def cache_numbers_per_token(self) -> int:
        """Numbers a decoding cache stores per token and layer (MHA: 2 H D)."""
        return self.kv_latent_dim + self.rope_dim

    def forward(self, x: Tensor, *, key_mask: Tensor | None = None, mask: Tensor | None = None,
                is_causal: bool = False, need_weights: bool = False, cache: KVCache | None = None,
                absorb: bool | None = None) -> AttentionOutput:
        """Self-attention over x (B, L, dim); ``cache`` holds latents and RoPE keys; ``absorb`` picks the form
        (default: absorbed with a cache, plain without)."""
        self._check(x, key_mask, cache)
        B, L, _ = x.shape
        H, D, R = self.num_heads, self.head_dim, self.rope_dim
        offset = 0 if cache is None else cache.position
        q = self.q_proj(self.q_down(x) if self.q_down is not None else x).view(B, L, H, D + R).transpose(1, 2)
        q_c, q_r = q.split([D, R], dim=-1)  # (B, H, L, D), (B, H, L, R)
        latent = self.kv_down(x).unsqueeze(1)  # (B, 1, L, C)
        k_r = self.k_rope(x).unsqueeze(1)  # (B, 1, L, R)
        q_r, k_r = self.rope(q_r, k_r, q_offset=offset, k_offset=offset)
        if cache is not None:
            latent, k_r = cache.append(latent, k_r)  # (B, 1, S, C), (B, 1, S, R): all tokens so far
        S = latent.shape[2]
        if key_mask is not None:
            km = key_mask[:, None, None, :]  # (B, 1, 1, S)
            mask = km if mask is None else mask & km
        kw = dict(mask=mask, is_causal=is_causal, need_weights=need_weights, query_offset=offset,
                  dropout_p=self.dropout_p if self.training else 0.0, scale=1 / math.sqrt(D + R),
                  backend="auto" if self.fused_attn else "eager")
        if cache is not None if absorb is None else absorb:
            w_uk = self.k_up.weight.view(H, D, -1)  # (H, D, C)
            q_lat = torch.einsum("bhld,hdc->bhlc", q_c, w_uk)  # (B, H, L, C): W_UK^T q
            # one key/value head shared by all: the heads become query rows, (B, 1, H L, C + R), so nothing of
            # the S cached latents is repeated per head; the causal mask goes with each row's position
            rows = torch.cat([q_lat, q_r], -1).reshape(B, 1, H * L, -1)
            allowed = _causal_mask(L, S, x.device, offset) if is_causal else None  # (L, S), per step: unchecked body
            if mask is not None:
                allowed = mask if allowed is None else mask & allowed
            if allowed is not None:
                allowed = allowed.expand(B, H, L, S).reshape(B, 1, H * L, S)
            out = attend(rows, torch.cat([latent, k_r], -1), latent, **dict(kw, mask=allowed, is_causal=False))
            w_uv = self.v_up.weight.view(H, D, -1)  # (H, D, C)
            lat = out.output.view(B, H, L, -1)  # (B, H, L, C): each head's weighted sum of latents
            heads = torch.einsum("bhlc,hdc->bhld", lat, w_uv)  # (B, H, L, D): W_UV after the sum
            out = AttentionOutput(out.output, None if out.weights is None else out.weights.view(B, H, L, S))
        else:
            k_c = self.k_up(latent.squeeze(1)).view(B, S, H, D).transpose(1, 2)  # (B, H, S, D)
            v = self.v_up(latent.squeeze(1)).view(B, S, H, D).transpose(1, 2)  # (B, H, S, D)
            k = torch.cat([k_c, k_r.expand(B, H, S, R)], -1)  # (B, H, S, D + R)
            out = attend(torch.cat([q_c, q_r], -1), k, v, **kw)
            heads = out.output
        merged = heads.transpose(1, 2).reshape(B, L, H * D)  # (B, L, H*D)
        return AttentionOutput(self.o_proj(merged), out.weights)

    def _check(self, x: Tensor, key_mask: Tensor | None, cache: object) -> None:
        _check_sequence_call(x, self.dim)
        if cache is not None and (not isinstance(cache, KVCache) or isinstance(cache, RollingKVCache)):
            raise TypeError(f"cache must be a KVCache of latents (layer.new_cache()), got {type(cache).__name__}")
        if cache is not None and cache.keys is not None and cache.keys.shape[-1] != self.kv_latent_dim:
            raise ValueError(f"cache holds keys of {cache.keys.shape[-1]} features, not this layer's latents of "
                             f"{self.kv_latent_dim}; use one cache per layer (layer.new_cache())")
        if key_mask is not None:
            V.check_tensor("key_mask", key_mask)
            S = x.shape[1] + (0 if cache is None else cache.position)
            if key_mask.dtype != torch.bool or tuple(key_mask.shape) != (x.shape[0], S):
                raise ValueError(f"key_mask must be a boolean (B, S) = ({x.shape[0]}, {S}) tensor (True = a real "
                                 f"key, cached ones included), got {key_mask.dtype} {V.fmt_shape(key_mask.shape)}")

    def extra_repr(self) -> str:
        return (f"dim={self.dim}, num_heads={self.num_heads}, head_dim={self.head_dim}, "
                f"kv_latent_dim={self.kv_latent_dim}, rope_dim={self.rope_dim}, q_latent_dim={self.q_latent_dim}")
