"""Length-bucketed batches of (source ids, target ids) pairs.

Sorting by length inside large random pools keeps padding small (RNNs and
attention pay for every padded position) while the batch order stays random;
everything is drawn from a seeded generator, so epoch e of seed s is the same
sequence of batches on every run.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class Batch:
    src: Tensor  # (B, S) padded source ids
    src_lengths: Tensor  # (B,)
    tgt: Tensor  # (B, T+2) <s> y </s>, padded
    index: list[int]  # positions in the dataset (for looking words up)

    def to(self, device) -> Batch:
        return Batch(self.src.to(device), self.src_lengths.to(device), self.tgt.to(device), self.index)


def pad(seqs: Sequence[Sequence[int]], pad_id: int) -> Tensor:
    width = max(len(s) for s in seqs)
    out = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    for i, s in enumerate(seqs):
        out[i, : len(s)] = torch.as_tensor(s, dtype=torch.long)
    return out


def collate(pairs: Sequence[tuple[Sequence[int], Sequence[int]]], index: list[int], pad_id: int) -> Batch:
    src = pad([p[0] for p in pairs], pad_id)
    lengths = torch.tensor([len(p[0]) for p in pairs], dtype=torch.long)
    tgt = pad([p[1] for p in pairs], pad_id)
    return Batch(src, lengths, tgt, index)


def bucketed_batches(pairs: Sequence[tuple[Sequence[int], Sequence[int]]], batch_size: int, *, seed: int,
                     epoch: int, pad_id: int, pool_batches: int = 50) -> Iterator[Batch]:
    """One epoch: shuffle, sort pools of ``pool_batches`` batches by length, shuffle the batches."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    rng = random.Random(seed * 1_000_003 + epoch)
    order = list(range(len(pairs)))
    rng.shuffle(order)
    pool = batch_size * pool_batches
    batches = []
    for start in range(0, len(order), pool):
        chunk = sorted(order[start: start + pool], key=lambda i: (len(pairs[i][0]), len(pairs[i][1])))
        batches += [chunk[i: i + batch_size] for i in range(0, len(chunk), batch_size)]
    rng.shuffle(batches)
    for idx in batches:
        yield collate([pairs[i] for i in idx], idx, pad_id)


def num_batches(n: int, batch_size: int, pool_batches: int = 50) -> int:
    pool = batch_size * pool_batches
    full, rest = divmod(n, pool)
    return full * pool_batches + -(-rest // batch_size)


def sorted_batches(sources: Sequence[Sequence[int]], batch_size: int,
                   pad_id: int = 0) -> Iterator[tuple[list[int], Tensor, Tensor]]:
    """Inference batches in length order: (indices, src (B, S), lengths (B,))."""
    order = sorted(range(len(sources)), key=lambda i: len(sources[i]))
    for start in range(0, len(order), batch_size):
        idx = order[start: start + batch_size]
        yield idx, pad([sources[i] for i in idx], pad_id), torch.tensor([len(sources[i]) for i in idx])
