"""Evaluation metrics.

G2P scores follow the published G2P papers (Rao et al. 2015; Yao & Zweig
2015; Toshniwal & Livescu 2016; Sun et al. 2019): a word with several
reference pronunciations is scored against the one closest to the hypothesis.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import editdistance
import torch
from torch import Tensor


def edit_distance(a: Sequence, b: Sequence) -> int:
    """Levenshtein distance between two sequences (of str, int, ...).

    Insertions, deletions and substitutions each cost 1; elements are compared
    whole, so ``["AH", "B"]`` vs ``["AH", "P"]`` is distance 1.
    """
    return int(editdistance.eval(list(a), list(b)))


def g2p_scores(
    hyps: Mapping[str, Sequence[str]],
    refs: Mapping[str, Sequence[Sequence[str]]],
) -> dict:
    """Phoneme and word error rates of G2P hypotheses against references.

    For each word in ``refs``, the reference pronunciation with the smallest
    edit distance to the hypothesis is chosen (ties: the first in order).

    * ``per`` = sum over words of that distance / sum over words of the
      chosen reference's length (phonemes);
    * ``wer`` = share of words whose hypothesis equals none of its references;
    * ``words`` = number of words scored (``len(refs)``).

    A word missing from ``hyps`` counts as an empty hypothesis.  Words in
    ``hyps`` but not in ``refs`` are ignored.  Rates are fractions, not
    percent: ``wer`` lies in [0, 1]; ``per`` does too unless hypotheses carry
    more insertions than the references have phonemes.  With no words (or
    only empty references) a rate is 0.0.
    """
    errors = 0
    length = 0
    wrong_words = 0
    for word, word_refs in refs.items():
        hyp = list(hyps.get(word, ()))
        candidates = [list(r) for r in word_refs]
        if not candidates:
            raise ValueError(f"refs: word {word!r} has no reference pronunciation; expected at least one")
        best_dist, best_ref = min(
            ((edit_distance(hyp, r), r) for r in candidates), key=lambda pair: pair[0]
        )
        errors += best_dist
        length += len(best_ref)
        if best_dist != 0:  # distance 0 <=> the hypothesis equals a reference
            wrong_words += 1
    n = len(refs)
    return {
        "per": errors / length if length else 0.0,
        "wer": wrong_words / n if n else 0.0,
        "words": n,
    }


def word_accuracy(hyps: Sequence[Sequence[str]], refs: Sequence[Sequence[str]]) -> float:
    """1 - word error rate: 1 - (word edit distance summed over the pairs) / (reference words), floored at 0.

    Edit-distance based (insertions, deletions and substitutions each cost 1), so
    a caption that misses one digit loses one word, not every word after it as a
    position-by-position comparison would count.
    """
    if len(hyps) != len(refs):
        raise ValueError(f"hyps and refs must pair up, got {len(hyps)} hypotheses and {len(refs)} references")
    errors = sum(edit_distance(h, r) for h, r in zip(hyps, refs))
    words = sum(len(r) for r in refs)
    return max(0.0, 1.0 - errors / words) if words else 0.0


def box_attention_share(weights: Tensor, boxes: Tensor, image_size: tuple[int, int]) -> Tensor:
    """The share of each attention map's weight that falls inside its box on the image.

    Each of the h x w grid cells covers an equal rectangle of the H x W image
    (cell (r, c): rows [r H/h, (r+1) H/h), columns [c W/w, (c+1) W/w)), and its
    weight is spread evenly over that rectangle; the share is the weight on the
    box's pixels over the map's total weight (0 for a map of zero weight).

    Args:
        weights: (..., h, w) attention maps (non-negative).
        boxes: (..., 4) boxes (top, left, bottom, right) in pixels, half-open, one per map.
        image_size: (H, W) of the image the grid covers.

    Returns:
        (...) shares in [0, 1].
    """
    if not isinstance(weights, Tensor) or weights.dim() < 2:
        raise ValueError(f"weights must be a tensor of shape (..., h, w), got "
                         f"{getattr(weights, 'shape', type(weights).__name__)}")
    if not isinstance(boxes, Tensor) or tuple(boxes.shape) != tuple(weights.shape[:-2]) + (4,):
        got = tuple(boxes.shape) if isinstance(boxes, Tensor) else type(boxes).__name__
        raise ValueError(f"boxes must have shape {tuple(weights.shape[:-2]) + (4,)} (..., 4) to match weights "
                         f"{tuple(weights.shape)} (..., h, w), got {got}")
    H, W = image_size
    h, w = weights.shape[-2:]
    w64, b64 = weights.double(), boxes.double()

    def cover(n: int, size: int, lo: Tensor, hi: Tensor) -> Tensor:
        edges = torch.arange(n + 1, dtype=torch.float64, device=weights.device) * (size / n)  # (n+1,)
        inside = (torch.minimum(hi[..., None], edges[1:]) - torch.maximum(lo[..., None], edges[:-1])).clamp_min(0)
        return inside / (size / n)  # (..., n): the share of each cell's rows (columns) inside the box

    rows = cover(h, H, b64[..., 0], b64[..., 2])  # (..., h)
    cols = cover(w, W, b64[..., 1], b64[..., 3])  # (..., w)
    inside = (w64 * rows[..., :, None] * cols[..., None, :]).sum((-2, -1))  # (...)
    total = w64.sum((-2, -1))
    return torch.where(total > 0, inside / total.clamp_min(1e-300), torch.zeros_like(total)).float()


__all__ = ["box_attention_share", "edit_distance", "g2p_scores", "word_accuracy"]
