"""Boolean attention masks: True = may attend.

This is the convention of ``torch.nn.functional.scaled_dot_product_attention``
and FlexAttention, and the OPPOSITE of ``nn.MultiheadAttention``'s
``key_padding_mask``/``attn_mask`` (where True means "blocked"): convert one of
those with ``~mask``.

Masks come in two forms that compose:

* tensors, broadcastable to the scores' shape (B, H, L, S), made by
  ``padding_mask``, ``causal_mask``, ``sliding_window_mask``;
* ``mask_mod(b, h, q_idx, kv_idx) -> bool`` callables with FlexAttention's
  signature (``causal``, ``sliding_window``, ``padding``), combined with
  ``and_masks``/``or_masks``/``not_mask`` and turned into a tensor by
  ``create_mask``.

Shape legend: B batch, H heads, L query length, S key length.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from . import validate as V

MaskMod = Callable[[Tensor, Tensor, Tensor, Tensor], Tensor]


# --------------------------------------------------------------------------- tensors
@V.checked(max_len=V.COUNT)
def padding_mask(lengths: Tensor, max_len: int | None = None) -> Tensor:
    """(B,) lengths -> (B, S) boolean, True on the first ``lengths[b]`` positions."""
    _check_lengths(lengths)
    if lengths.dim() != 1:
        raise ValueError(f"lengths must have shape (B,), got {tuple(lengths.shape)}")
    max_len = int(lengths.max()) if max_len is None else max_len
    return torch.arange(max_len, device=lengths.device)[None, :] < lengths[:, None]  # (B, S)


@V.checked(query_len=V.COUNT, key_len=V.COUNT, query_offset=V.INT)
def causal_mask(query_len: int, key_len: int | None = None, device=None, query_offset: int | None = None) -> Tensor:
    """(L, S) lower-triangular mask, aligned to the bottom-right corner by default.

    Query i sits at absolute position ``query_offset + i`` (default ``S - L``),
    so with a KV cache (L < S) the new queries see every cached key and
    themselves, never the future. For L == S this is the usual lower triangle.
    """
    return _causal_mask(query_len, key_len, device, query_offset)


def _causal_mask(query_len: int, key_len: int | None, device, query_offset: int | None) -> Tensor:
    """causal_mask's body: attend (its sizes are its tensors') calls it on every causal call."""
    key_len = query_len if key_len is None else key_len
    offset = key_len - query_len if query_offset is None else query_offset
    q_idx = torch.arange(query_len, device=device)[:, None] + offset
    kv_idx = torch.arange(key_len, device=device)[None, :]
    return kv_idx <= q_idx  # (L, S)


@V.checked(query_len=V.COUNT, key_len=V.COUNT)
def sliding_window_mask(query_len: int, key_len: int | None = None, window: int = 128,
                        causal: bool = True, device=None) -> Tensor:
    """(L, S) mask keeping keys within ``window`` positions of the query (bottom-right aligned)."""
    key_len = query_len if key_len is None else key_len
    q_idx = torch.arange(query_len, device=device)[:, None] + (key_len - query_len)
    kv_idx = torch.arange(key_len, device=device)[None, :]
    dist = q_idx - kv_idx
    keep = dist.abs() < window
    if causal:
        keep = keep & (dist >= 0)
    return keep  # (L, S)


# --------------------------------------------------------------------------- mask_mods
def causal(b: Tensor, h: Tensor, q_idx: Tensor, kv_idx: Tensor) -> Tensor:
    """mask_mod: a query may attend to itself and earlier keys."""
    return q_idx >= kv_idx


@V.checked()
def sliding_window(window: int, causal: bool = True) -> MaskMod:
    """mask_mod factory: keys at most ``window - 1`` positions away (behind, if causal)."""

    def mask_mod(b, h, q_idx, kv_idx):
        dist = q_idx - kv_idx
        keep = dist.abs() < window
        return keep & (dist >= 0) if causal else keep

    return mask_mod


def padding(lengths: Tensor) -> MaskMod:
    """mask_mod factory: keys beyond each sequence's length are blocked."""
    _check_lengths(lengths)

    def mask_mod(b, h, q_idx, kv_idx):
        return kv_idx < lengths[b]

    return mask_mod


def and_masks(*mods: MaskMod) -> MaskMod:
    """A position may be attended only if every mask_mod allows it."""
    _check_mods("and_masks", mods)

    def mask_mod(b, h, q_idx, kv_idx):
        out = mods[0](b, h, q_idx, kv_idx)
        for m in mods[1:]:
            out = out & m(b, h, q_idx, kv_idx)
        return out

    return mask_mod


def or_masks(*mods: MaskMod) -> MaskMod:
    """A position may be attended if any mask_mod allows it."""
    _check_mods("or_masks", mods)

    def mask_mod(b, h, q_idx, kv_idx):
        out = mods[0](b, h, q_idx, kv_idx)
        for m in mods[1:]:
            out = out | m(b, h, q_idx, kv_idx)
        return out

    return mask_mod


def not_mask(mod: MaskMod) -> MaskMod:
    """A position may be attended where ``mod`` blocks it."""
    V.check_mod("mask_mod", mod)

    def mask_mod(b, h, q_idx, kv_idx):
        return ~mod(b, h, q_idx, kv_idx)

    return mask_mod


@V.checked(B=V.COUNT, H=V.COUNT, L=V.COUNT, S=V.COUNT, query_offset=V.INT)
def index_grid(B: int, H: int, L: int, S: int, device=None, query_offset: int = 0):
    """Broadcastable (b, h, q_idx, kv_idx) index tensors for a (B, H, L, S) grid.

    ``q_idx`` are absolute positions: ``query_offset + 0 .. L-1``.
    """
    return _index_grid(B, H, L, S, device, query_offset)


def _index_grid(B: int, H: int, L: int, S: int, device=None, query_offset: int = 0):
    """index_grid's body: attend and create_mask, whose sizes are checked or are tensors', call it."""
    b = torch.arange(B, device=device).view(B, 1, 1, 1)
    h = torch.arange(H, device=device).view(1, H, 1, 1)
    q_idx = torch.arange(L, device=device).view(1, 1, L, 1) + query_offset
    kv_idx = torch.arange(S, device=device).view(1, 1, 1, S)
    return b, h, q_idx, kv_idx


@V.checked(B=V.COUNT, H=V.COUNT, L=V.COUNT, S=V.COUNT)
def create_mask(mask_mod: MaskMod, B: int, H: int, L: int, S: int, device=None) -> Tensor:
    """Evaluate a mask_mod on the whole grid -> boolean (B, H, L, S) (broadcast dims kept at 1
    where the mask_mod does not depend on them)."""
    V.check_mod("mask_mod", mask_mod)
    out = mask_mod(*_index_grid(B, H, L, S, device))
    return torch.as_tensor(out, device=device).to(torch.bool)


def _check_lengths(lengths: object) -> None:
    V.check_tensor("lengths", lengths)
    if torch.is_floating_point(lengths) or lengths.dtype == torch.bool:
        raise TypeError(f"lengths must hold integer sequence lengths (B,), got dtype {lengths.dtype}; "
                        "pass lengths.long()")


def _check_mods(name: str, mods: tuple) -> None:
    if not mods:
        raise TypeError(f"{name} needs at least one mask_mod, got none")
    for mod in mods:
        V.check_mod("mask_mod", mod)
