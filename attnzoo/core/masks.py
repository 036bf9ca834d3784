"""Boolean attention masks: True = may attend.

This is the convention of ``torch.nn.functional.scaled_dot_product_attention``
and FlexAttention, and the OPPOSITE of ``nn.MultiheadAttention``'s
``key_padding_mask``/``attn_mask`` (where True means "blocked"): convert one of
those with ``~mask``.

Masks come in two forms that compose:

* tensors, broadcastable to the scores' shape (B, H, L, S), made by
  ``padding_mask``, ``causal_mask``, ``sliding_window_mask``;
* ``mask_mod(b, h, q_idx, kv_idx) -> bool`` callables with FlexAttention's
  signature (``causal``, ``sliding_window``, ``global_tokens``, ``document``,
  ``padding``), combined with ``and_masks``/``or_masks``/``not_mask`` and
  turned into a tensor by ``create_mask``. Each factory also says which keys
  a block of queries may reach (``key_spans``), so the chunked backend skips
  the blocks outside them: a sliding window then costs L x window, not L x S.

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


causal.key_spans = lambda q_lo, q_hi, S: [(0, min(S, q_hi))]


@V.checked()
def sliding_window(window: int, causal: bool = True) -> MaskMod:
    """mask_mod factory: keys at most ``window - 1`` positions away (behind, if causal)."""

    def mask_mod(b, h, q_idx, kv_idx):
        dist = q_idx - kv_idx
        keep = dist.abs() < window
        return keep & (dist >= 0) if causal else keep

    def key_spans(q_lo, q_hi, S):
        return [(max(0, q_lo - window + 1), min(S, q_hi if causal else q_hi + window - 1))]

    mask_mod.key_spans = key_spans
    return mask_mod


@V.checked(count=V.COUNT)
def global_tokens(count: int) -> MaskMod:
    """mask_mod factory (Longformer's global attention, Beltagy et al. 2020): the first ``count`` positions
    attend to every key and every query attends to them. ``or_masks(sliding_window(w), global_tokens(g))``
    is Longformer's pattern."""

    def mask_mod(b, h, q_idx, kv_idx):
        return (q_idx < count) | (kv_idx < count)

    def key_spans(q_lo, q_hi, S):
        return [(0, S)] if q_lo < count else [(0, min(count, S))]

    mask_mod.key_spans = key_spans
    return mask_mod


def document(doc_ids: Tensor) -> MaskMod:
    """mask_mod factory for packed sequences: ``doc_ids`` (B, S) gives each position's document, and a query
    attends only to keys of its own document (``and_masks(causal, document(ids))`` for a packed LM batch).
    Positions are absolute (a query at position i reads ``doc_ids[:, i]``), so with a KV cache pass the ids of
    every position so far."""
    _check_doc_ids(doc_ids)

    def mask_mod(b, h, q_idx, kv_idx):
        return doc_ids[b, q_idx.clamp(0, doc_ids.shape[1] - 1)] == doc_ids[b, kv_idx]

    def key_spans(q_lo, q_hi, S):
        lo, hi = max(0, min(q_lo, S - 1)), max(1, min(q_hi, S))
        if S == 0:
            return []
        # the keys of the documents that the rows lo..hi-1 belong to, over the whole batch
        first = doc_ids[:, lo:lo + 1]
        last = doc_ids[:, hi - 1:hi]
        same_first = (doc_ids[:, :S] == first).int().argmax(dim=1)  # start of the first row's document
        after_last = doc_ids[:, :S] > last  # ids grow along a packed row: keys of later documents
        end = torch.where(after_last.any(dim=1), after_last.int().argmax(dim=1), torch.full_like(same_first, S))
        return [(int(same_first.min()), max(int(end.max()), min(S, q_hi)))]

    mask_mod.key_spans = key_spans if _nondecreasing(doc_ids) else None
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

    def key_spans(q_lo, q_hi, S):
        spans = [(0, S)]
        for m in mods:
            spans = _intersect(spans, _key_spans_of(m, q_lo, q_hi, S))
        return spans

    mask_mod.key_spans = key_spans
    return mask_mod


def or_masks(*mods: MaskMod) -> MaskMod:
    """A position may be attended if any mask_mod allows it."""
    _check_mods("or_masks", mods)

    def mask_mod(b, h, q_idx, kv_idx):
        out = mods[0](b, h, q_idx, kv_idx)
        for m in mods[1:]:
            out = out | m(b, h, q_idx, kv_idx)
        return out

    def key_spans(q_lo, q_hi, S):
        return _union([span for m in mods for span in _key_spans_of(m, q_lo, q_hi, S)])

    mask_mod.key_spans = key_spans
    return mask_mod


def not_mask(mod: MaskMod) -> MaskMod:
    """A position may be attended where ``mod`` blocks it."""
    V.check_mod("mask_mod", mod)

    def mask_mod(b, h, q_idx, kv_idx):
        return ~mod(b, h, q_idx, kv_idx)

    return mask_mod


# --------------------------------------------------------------------------- block skipping
@V.checked(q_lo=V.INT, q_hi=V.INT, S=V.COUNT)
def key_spans_of(mask_mod: MaskMod, q_lo: int, q_hi: int, S: int) -> list[tuple[int, int]]:
    """Sorted, disjoint key ranges [j0, j1) outside which ``mask_mod`` blocks every query at absolute positions
    q_lo..q_hi-1: what the chunked backend computes, skipping the rest block by block. A mask_mod says it
    through a ``key_spans(q_lo, q_hi, S)`` attribute (the factories here do); without one, every key."""
    V.check_mod("mask_mod", mask_mod)
    return _key_spans_of(mask_mod, q_lo, q_hi, S)


def _key_spans_of(mask_mod: MaskMod, q_lo: int, q_hi: int, S: int) -> list[tuple[int, int]]:
    """key_spans_of's body, called per block by the chunked backend and the combinators."""
    hint = getattr(mask_mod, "key_spans", None)
    spans = [(0, S)] if hint is None else hint(q_lo, q_hi, S)
    return [(max(0, a), min(S, b)) for a, b in spans if min(S, b) > max(0, a)]


def has_key_spans(mask_mod: MaskMod | None) -> bool:
    """True when the mask_mod can name the keys it leaves open (so blocks outside them can be skipped)."""
    return getattr(mask_mod, "key_spans", None) is not None


def _union(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for a, b in sorted(spans):
        if out and a <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        elif b > a:
            out.append((a, b))
    return out


def _intersect(xs: list[tuple[int, int]], ys: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out = []
    for a0, a1 in xs:
        for b0, b1 in ys:
            lo, hi = max(a0, b0), min(a1, b1)
            if hi > lo:
                out.append((lo, hi))
    return _union(out)


def _nondecreasing(ids: Tensor) -> bool:
    return ids.shape[1] < 2 or bool((ids[:, 1:] >= ids[:, :-1]).all())


def _check_doc_ids(doc_ids: object) -> None:
    V.check_tensor("doc_ids", doc_ids)
    if torch.is_floating_point(doc_ids) or doc_ids.dtype == torch.bool:
        raise TypeError(f"doc_ids must hold integer document ids of shape (B, S), got dtype {doc_ids.dtype}; "
                        "pass doc_ids.long()")
    if doc_ids.dim() != 2:
        raise ValueError(f"doc_ids must have shape (B, S) (one document id per position), got "
                         f"{V.fmt_shape(doc_ids.shape)}")


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
