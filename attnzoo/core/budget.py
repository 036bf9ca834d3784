"""How much memory ``backend="auto"`` lets one materialised (B, H, L, S) tensor take (read by attend() and by
the additive score, which tiles its (B, H, L, S, A) sum beyond it)."""

from __future__ import annotations

import functools

import torch

#: backend="auto" switches from eager to chunked when the (B, H, L, S) float32 scores would exceed this
#: (the additive score's (B, H, L, S, A) sum never reaches memory: it is computed in tiles, see core/additive.py)
CHUNKED_AUTO_BYTES = 256 * 2 ** 20
#: on CUDA, backend="auto" materialises a (B, H, L, S) float32 tensor while it takes at most this share of the
#: GPU's memory (eager's backward holds about three of them)
CUDA_MATERIALISE_SHARE = 1 / 16


@functools.cache
def _cuda_memory(index: int) -> int:
    return torch.cuda.get_device_properties(index).total_memory


def materialise_budget(device: torch.device | None) -> int:
    """Bytes that backend="auto" lets one materialised (B, H, L, S) tensor take on ``device``."""
    if device is not None and device.type == "cuda":
        return int(CUDA_MATERIALISE_SHARE * _cuda_memory(device.index if device.index is not None
                                                         else torch.cuda.current_device()))
    return CHUNKED_AUTO_BYTES
