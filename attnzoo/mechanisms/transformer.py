"""Transformer blocks (Vaswani et al. 2017): encoder, decoder, and their sublayers.

Encoder block (and, causal, the LM's): Decoder block:
    x = x + Drop(SelfAttn(x))             x = x + Drop(CausalSelfAttn(x))       # cached when decoding
    x = x + Drop(FFN(x))                  x = x + Drop(CrossAttn(x, memory))    # memory projected once
                                          x = x + Drop(FFN(x))
each sublayer wrapped as
    post-norm (the paper):  x = LayerNorm(x + Drop(f(x)))
    pre-norm (Xiong 2020):  x = x + Drop(f(LayerNorm(x)))   (``norm_first=True``, trains without warm-up tricks)
and FFN(x) = W_2 act(W_1 x + b_1) + b_2.

Attention layers are :class:`~attnzoo.mechanisms.multihead.MultiHeadAttention`
(so MHA/GQA/MQA, positions and the fused kernel come with them). The
self-attention slot takes any registered multi-head, linear or sparse mechanism
by name (``self_attention="mla"|"linear"|"sliding"|...``, its own options in
``attention_options``), and a lightweight or dynamic convolution
(``self_attention="lightweight"|"dynamic"``, Wu et al. 2019): the same call,
a causal convolution in the decoder, and a
:class:`~attnzoo.mechanisms.convolutional.ConvCache` of its last K-1 inputs
instead of a KVCache when decoding (``new_self_cache(layer)`` makes the right one).

Shape legend: B batch, L target length, S source length, ``dim`` model width.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field

import torch.nn.functional as F
from torch import Tensor, nn

from ..core import validate as V
from ..core.dropout import Dropout
from ..core.kv_cache import KVCache
from . import differential, linear, sparse  # noqa: F401  (their @register: the self-attention slot's choices)
from .convolutional import ConvCache, DynamicConv, LightweightConv
from .multihead import POSITIONS, MultiHeadAttention
from .registry import _REGISTRY

#: the registered mechanisms a block's self-attention slot takes by name, besides the convolutions
SEQUENCE_FAMILIES = ("multi-head", "linear", "sparse")
SELF_ATTENTION = ("mha", "lightweight", "dynamic") + tuple(sorted(
    name for name, info in _REGISTRY.items() if info.family in SEQUENCE_FAMILIES and name != "mha"))
ACTIVATIONS = ("gelu", "relu")


@V.checked(activation=V.one_of(ACTIVATIONS), positions=V.one_of(POSITIONS), self_attention=V.one_of(SELF_ATTENTION))
@dataclass
class BlockConfig:
    dim: int = 256  # model width
    num_heads: int = 4  # query heads
    num_kv_heads: int | None = None  # key/value heads (None: = num_heads, MHA)
    ffn_dim: int | None = None  # feed-forward hidden size (None: 4 * dim)
    dropout: float = 0.1  # after attention, inside and after the FFN
    attn_dropout: float = 0.0  # on the attention weights
    norm_first: bool = True  # pre-norm (True) or the paper's post-norm (False)
    activation: str = "gelu"  # "gelu" or "relu" (the paper)
    positions: str | None = None  # "rope" | "alibi" | "t5" | "relative" for self-attention
    fused_attn: bool = True  # PyTorch's fused kernel when no weights are asked for
    self_attention: str = "mha"  # any registered multi-head/linear/sparse mechanism, or a convolution over time
    kernel_size: int = 7  # the convolution's taps (lightweight/dynamic); attn_dropout drops its kernel's taps
    attention_options: dict | None = None  # the self-attention mechanism's own options: window, kv_latent_dim, ...

    def __post_init__(self):
        if self.self_attention in ("lightweight", "dynamic") and self.positions is not None:
            raise ValueError(f"positions={self.positions!r} go into multi-head self-attention; a "
                             f"{self.self_attention} convolution sees positions through its window "
                             "(add absolute positions to the inputs instead)")


class FeedForward(nn.Module):
    """FFN(x) = W_2 act(W_1 x + b_1) + b_2."""

    @V.checked(activation=V.one_of(ACTIVATIONS))
    def __init__(self, dim: int, hidden: int, dropout: float, activation: str):
        super().__init__()
        self.up, self.down = nn.Linear(dim, hidden), nn.Linear(hidden, dim)
        self.act = F.gelu if activation == "gelu" else F.relu
        self.drop = Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.down(self.drop(self.act(self.up(x))))


class _Sublayer(nn.Module):
    """Residual + LayerNorm around one sublayer, in pre- or post-norm order."""

    def __init__(self, dim: int, dropout: float, norm_first: bool):
        super().__init__()
        self.norm, self.drop, self.norm_first = nn.LayerNorm(dim), Dropout(dropout), norm_first

    def forward(self, x: Tensor, f) -> tuple[Tensor, Tensor | None]:
        y, weights = f(self.norm(x) if self.norm_first else x)
        x = x + self.drop(y)
        return (x if self.norm_first else self.norm(x)), weights


def _attention(cfg: BlockConfig, positions: str | None) -> nn.Module:
    if cfg.self_attention in ("lightweight", "dynamic"):
        cls = LightweightConv if cfg.self_attention == "lightweight" else DynamicConv
        return cls(cfg.dim, cfg.num_heads, cfg.kernel_size, weight_dropout=cfg.attn_dropout)
    if cfg.self_attention == "mha":
        return MultiHeadAttention(cfg.dim, cfg.num_heads, cfg.num_kv_heads, dropout_p=cfg.attn_dropout,
                                  positions=positions, fused_attn=cfg.fused_attn, t5_bidirectional=True,
                                  **(cfg.attention_options or {}))
    return _registered(cfg, positions)


def _registered(cfg: BlockConfig, positions: str | None) -> nn.Module:
    """A registered sequence mechanism in the slot, given the block's options that its constructor takes."""
    cls = _REGISTRY[cfg.self_attention].cls
    params = inspect.signature(cls.__init__).parameters
    takes = lambda name: name in params or any(p.kind is p.VAR_KEYWORD for p in params.values())  # noqa: E731
    options = dict(cfg.attention_options or {})
    if positions is not None:
        if takes("positions"):
            options["positions"] = positions
        elif positions != getattr(cls, "own_positions", None):
            raise ValueError(f"self_attention={cfg.self_attention!r} takes no positions inside attention, got "
                             f"positions={positions!r}; add absolute positions to the inputs instead (the "
                             f"language model's positions='learned' or 'sinusoidal')")
    for name, value in (("num_kv_heads", cfg.num_kv_heads), ("dropout_p", cfg.attn_dropout),
                        ("fused_attn", cfg.fused_attn)):
        if takes(name) and name not in options and (value is not None and (name != "dropout_p" or value > 0)):
            options[name] = value
    return cls(cfg.dim, cfg.num_heads, **options)


def new_self_cache(layer: nn.Module) -> KVCache | ConvCache:
    """The cache a self-attention layer decodes with: its own (a convolution's ConvCache) or a KVCache."""
    return layer.new_cache() if hasattr(layer, "new_cache") else KVCache()


@dataclass
class BlockOutput:
    output: Tensor  # (B, L, dim)
    weights: dict[str, Tensor] = field(default_factory=dict)  # "self"/"cross": (B, H, L, S) when asked for


class SelfAttentionBlock(nn.Module):
    """x -> x + SelfAttn(x) -> x + FFN(x), with LayerNorm pre or post.

    The encoder block (bidirectional) and, with ``is_causal=True`` and a cache,
    the decoder-only language model's block.
    """

    def __init__(self, cfg: BlockConfig):
        super().__init__()
        self.self_attn = _attention(cfg, cfg.positions)
        self.ffn = FeedForward(cfg.dim, cfg.ffn_dim or 4 * cfg.dim, cfg.dropout, cfg.activation)
        self.attn_sub = _Sublayer(cfg.dim, cfg.dropout, cfg.norm_first)
        self.ffn_sub = _Sublayer(cfg.dim, cfg.dropout, cfg.norm_first)

    def forward(self, x: Tensor, key_mask: Tensor | None = None, need_weights: bool = False, *,
                is_causal: bool = False, cache: KVCache | ConvCache | None = None, mask_mod=None) -> BlockOutput:
        """``mask_mod``: a FlexAttention-style mask over absolute positions (a packed batch's documents)."""
        extra = {} if mask_mod is None else {"mask_mod": _check_mask_mod_slot(self.self_attn, mask_mod)}
        x, w = self.attn_sub(x, lambda h: tuple(self.self_attn(h, key_mask=key_mask, need_weights=need_weights,
                                                               is_causal=is_causal, cache=cache, **extra)))
        x, _ = self.ffn_sub(x, lambda h: (self.ffn(h), None))
        return BlockOutput(x, {"self": w} if w is not None else {})


EncoderBlock = SelfAttentionBlock


def _check_mask_mod_slot(layer: nn.Module, mask_mod):
    if "mask_mod" not in inspect.signature(layer.forward).parameters:
        raise ValueError(f"a mask_mod (a packed batch's document mask) needs softmax attention over positions; "
                         f"{type(layer).__name__} does not take one (linear attention's running sums, "
                         f"MLA's and differential attention's layers, the convolutions); use mha, gqa, mqa, "
                         f"gated, sink, softcap, sigmoid or sliding")
    return mask_mod


class DecoderBlock(nn.Module):
    """x -> x + CausalSelfAttn(x) -> x + CrossAttn(x, memory) -> x + FFN(x)."""

    @V.checked()
    def __init__(self, cfg: BlockConfig, memory_dim: int | None = None):
        super().__init__()
        self.self_attn = _attention(cfg, cfg.positions)
        self.cross_attn = MultiHeadAttention(cfg.dim, cfg.num_heads, cfg.num_kv_heads, key_dim=memory_dim,
                                             value_dim=memory_dim, dropout_p=cfg.attn_dropout,
                                             fused_attn=cfg.fused_attn)
        self.ffn = FeedForward(cfg.dim, cfg.ffn_dim or 4 * cfg.dim, cfg.dropout, cfg.activation)
        self.self_sub = _Sublayer(cfg.dim, cfg.dropout, cfg.norm_first)
        self.cross_sub = _Sublayer(cfg.dim, cfg.dropout, cfg.norm_first)
        self.ffn_sub = _Sublayer(cfg.dim, cfg.dropout, cfg.norm_first)

    def forward(self, x: Tensor, memory: Tensor | None, memory_mask: Tensor | None = None, *,
                need_weights: bool = False, self_cache: KVCache | ConvCache | None = None,
                cross_cache: KVCache | None = None) -> BlockOutput:
        """x (B, L, dim); memory (B, S, memory_dim) (may be None once cross_cache holds it)."""
        weights = {}
        x, w = self.self_sub(x, lambda h: tuple(self.self_attn(h, is_causal=True, need_weights=need_weights,
                                                               cache=self_cache)))
        if w is not None:
            weights["self"] = w
        if memory is None and (cross_cache is None or not cross_cache.static):
            raise ValueError("memory is required unless cross_cache already holds it")
        x, w = self.cross_sub(x, lambda h: tuple(self.cross_attn(h, key=memory, value=memory, key_mask=memory_mask,
                                                                 need_weights=need_weights, cache=cross_cache)))
        if w is not None:
            weights["cross"] = w
        x, _ = self.ffn_sub(x, lambda h: (self.ffn(h), None))
        return BlockOutput(x, weights)
