"""Evaluation metrics.

G2P scores follow the published G2P papers (Rao et al. 2015; Yao & Zweig
2015; Toshniwal & Livescu 2016; Sun et al. 2019): a word with several
reference pronunciations is scored against the one closest to the hypothesis.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import editdistance


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


__all__ = ["edit_distance", "g2p_scores"]
