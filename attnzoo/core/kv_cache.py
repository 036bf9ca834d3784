"""KVCache: the keys and values one attention layer has seen, for incremental decoding.

The caller creates one per layer and passes it as ``cache=``; each call
appends the new positions' keys and values (the one documented exception to
"attnzoo never changes its inputs in place": the cache is state the caller
hands over for exactly that). Storage grows by doubling, so decoding T tokens
copies O(T) rather than O(T^2) elements.

:class:`RollingKVCache` keeps only the first ``keep_first`` positions and the
last ``window`` (StreamingLLM, Xiao et al. 2023; a sliding window's cache):
its memory stays flat however long the sequence grows.

A cross-attention layer uses its cache differently: the first call stores the
projected memory, later calls reuse it (``static=True`` is set by the layer).

Shape legend: B batch, G key/value heads, S cached length, D head dim, E value dim.
"""

from __future__ import annotations

import torch
from torch import Tensor

from . import validate as V


def _check_kv(k: Tensor, v: Tensor) -> None:
    """k (B, G, L, D) and v (B, G, L, E), floating, of one dtype: shapes and types only, no reduction."""
    for name, x in (("k", k), ("v", v)):
        V.check_tensor(name, x)
        V.check_floating(name, x)
    V.check_same_dtype(k=k, v=v)
    V.check_rank("k", k, (4,), "(B, G, L, D)")
    V.check_rank("v", v, (4,), "(B, G, L, E)")
    if k.shape[:3] != v.shape[:3]:
        raise ValueError(f"k {V.fmt_shape(k.shape)} and v {V.fmt_shape(v.shape)} must agree in (B, G, L); "
                         "pass the keys and values of the same positions")


class KVCache:
    def __init__(self) -> None:
        self._k: Tensor | None = None  # (B, G, capacity, D)
        self._v: Tensor | None = None  # (B, G, capacity, E)
        self.length = 0
        self.static = False  # True: holds a cross-attention memory, reused as is

    def __len__(self) -> int:
        return self.length

    @property
    def position(self) -> int:
        """Positions appended so far: the absolute position of the next query (here, all of them are kept)."""
        return self.length

    @property
    def keys(self) -> Tensor | None:
        return None if self._k is None else self._k[:, :, : self.length]  # (B, G, S, D)

    @property
    def values(self) -> Tensor | None:
        return None if self._v is None else self._v[:, :, : self.length]  # (B, G, S, E)

    def append(self, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Add (B, G, L, D) keys and (B, G, L, E) values; return all (B, G, S + L, .) so far."""
        if self.static:
            raise ValueError("this KVCache holds a cross-attention memory, so it cannot take self-attention "
                             "positions; use a separate KVCache per layer and per self-/cross-attention")
        _check_kv(k, v)
        L = k.shape[-2]
        if self._k is not None and (k.dtype != self._k.dtype or k.device != self._k.device):
            raise TypeError(f"k has dtype {k.dtype} on {k.device} but the cached keys have dtype {self._k.dtype} "
                            f"on {self._k.device}; keep one dtype and device per cache (or start a new KVCache)")
        if self._k is None:
            cap = max(16, L)
            self._k = k.new_empty(*k.shape[:2], cap, k.shape[-1])
            self._v = v.new_empty(*v.shape[:2], cap, v.shape[-1])
        elif k.shape[:2] != self._k.shape[:2] or k.shape[-1] != self._k.shape[-1]:
            raise ValueError(f"k of shape {V.fmt_shape(k.shape)} does not continue the cached keys of shape "
                             f"{V.fmt_shape(self.keys.shape)} (B, G and D must match)")
        if self.length + L > self._k.shape[2]:  # grow by doubling
            cap = max(2 * self._k.shape[2], self.length + L)
            self._k = torch.cat([self._k[:, :, : self.length], self._k.new_empty(*self._k.shape[:2],
                                 cap - self.length, self._k.shape[-1])], dim=2)
            self._v = torch.cat([self._v[:, :, : self.length], self._v.new_empty(*self._v.shape[:2],
                                 cap - self.length, self._v.shape[-1])], dim=2)
        self._k[:, :, self.length: self.length + L] = k
        self._v[:, :, self.length: self.length + L] = v
        self.length += L
        return self.keys, self.values

    def store(self, k: Tensor, v: Tensor) -> None:
        """Hold a cross-attention memory (B, G, S, D/E) for reuse by later calls."""
        if self.length and not self.static:
            raise ValueError(f"this KVCache holds {self.length} self-attention positions; storing a cross-attention "
                             "memory would overwrite them. Use a separate KVCache per layer and per "
                             "self-/cross-attention")
        _check_kv(k, v)
        self._k, self._v, self.length, self.static = k, v, k.shape[-2], True

    def index_select_(self, index: Tensor) -> KVCache:
        """Reorder or repeat the batch rows in place (beam search)."""
        V.check_tensor("index", index)
        if index.dtype not in (torch.int64, torch.int32) or index.dim() != 1:
            raise TypeError(f"index must be a 1-D int64 tensor of batch rows, got dtype {index.dtype} and shape "
                            f"{V.fmt_shape(index.shape)}; pass index.long()")
        if self._k is not None and index.numel() and index.device.type == "cpu":  # no GPU sync per step
            lo, hi = (int(x) for x in torch.aminmax(index))  # one reduction per reorder
            if lo < 0 or hi >= self._k.shape[0]:
                raise ValueError(f"index holds row {lo if lo < 0 else hi}, outside the cache's batch of "
                                 f"{self._k.shape[0]} rows [0, {self._k.shape[0]})")
        if self._k is not None:
            self._k = self._k.index_select(0, index)
            self._v = self._v.index_select(0, index)
        return self

    def reset(self) -> None:
        self.__init__()

    def __repr__(self) -> str:
        shape = None if self._k is None else V.fmt_shape(self.keys.shape)
        return f"KVCache(length={self.length}, keys={shape}, static={self.static})"


class RollingKVCache(KVCache):
    """A KV cache that keeps the first ``keep_first`` positions (attention sinks) and the most recent ones, so
    that the next query sees ``window`` recent keys counting its own: StreamingLLM's cache (Xiao et al. 2023),
    and the exact cache of a sliding window of ``window`` keys.

    ``append`` returns every key the new queries may need (the kept ones plus all new ones) with their
    absolute positions in ``call_positions``; the layer masks by those positions (keys were rotated by
    RoPE at their absolute positions before caching; StreamingLLM re-numbers positions inside the cache
    instead, which this cache does not do). Memory: at most ``keep_first + window - 1`` positions between calls.
    """

    @V.checked(window=V.SIZE, keep_first=V.COUNT)
    def __init__(self, window: int, keep_first: int = 0) -> None:
        super().__init__()
        self.window, self.keep_first = window, keep_first
        self.seen = 0  # positions appended so far
        self.key_positions: Tensor | None = None  # (S,) absolute positions of the kept keys
        self.call_positions: Tensor | None = None  # (S',) of the keys the last append returned

    @property
    def position(self) -> int:
        return self.seen

    def __len__(self) -> int:
        """Positions decoded so far (``length``: how many are kept)."""
        return self.seen

    def append(self, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Add (B, G, L, D) keys and values; return the kept ones plus the new ones, (B, G, S', .)."""
        if self.static:
            raise ValueError("a RollingKVCache holds self-attention positions only; use a KVCache for cross-attention")
        _check_kv(k, v)
        L = k.shape[-2]
        new_pos = torch.arange(self.seen, self.seen + L, device=k.device)
        if self._k is None:
            keys, values, pos = k, v, new_pos
        else:
            if k.shape[:2] != self._k.shape[:2] or k.shape[-1] != self._k.shape[-1] or k.dtype != self._k.dtype:
                raise ValueError(f"k of shape {V.fmt_shape(k.shape)} and dtype {k.dtype} does not continue the "
                                 f"cached keys {V.fmt_shape(self._k.shape)} of dtype {self._k.dtype}")
            keys, values = torch.cat([self._k, k], dim=2), torch.cat([self._v, v], dim=2)
            pos = torch.cat([self.key_positions, new_pos])
        self.seen += L
        self.call_positions = pos
        keep = self._kept(pos.shape[0], k.device)
        self._k, self._v, self.key_positions = keys[:, :, keep], values[:, :, keep], pos[keep]
        self.length = self._k.shape[2]
        return keys, values

    def _kept(self, n: int, device: torch.device) -> slice | Tensor:
        recent = self.window - 1  # with the next query itself: ``window`` recent keys
        if n <= self.keep_first + recent:
            return slice(None)
        idx = list(range(self.keep_first)) + list(range(n - recent, n))
        return torch.tensor(idx, device=device)

    @property
    def keys(self) -> Tensor | None:
        return self._k

    @property
    def values(self) -> Tensor | None:
        return self._v

    def store(self, k: Tensor, v: Tensor) -> None:
        raise ValueError("a RollingKVCache holds self-attention positions only; use a KVCache for cross-attention")

    def reset(self) -> None:
        self.__init__(self.window, self.keep_first)

    def __repr__(self) -> str:
        return (f"RollingKVCache(window={self.window}, keep_first={self.keep_first}, seen={self.seen}, "
                f"kept={self.length})")
