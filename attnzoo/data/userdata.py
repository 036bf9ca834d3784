"""Your own data: a TSV of source/target pairs (``train seq2seq --data``) or a text file (``train lm --data``).

Pairs
-----
:func:`read_pairs` reads one ``source<TAB>target`` pair per line (UTF-8);
blank lines and lines starting with ``#`` are skipped, both columns are
stripped of surrounding whitespace. A line without exactly one tab, or with an
empty column, is an error whose one line names the file and line number.

:func:`split_pairs` holds out about 5% of the *distinct sources* for dev and
5% for test (at least one each), drawn with ``random.Random(seed)``: a source
with several targets (a word with two pronunciations) keeps all of them in
one part, and is scored against the closest of them, as g2p is.

:class:`Units` turns text into the tokens a model reads and writes:
``char`` (every character, spaces included), ``word`` (split on whitespace)
or ``bpe`` (a byte-pair-encoding model learned from the training side,
:class:`~attnzoo.data.subword.Subword`). It serialises to plain lists and
strings, safe inside a ``weights_only`` checkpoint.

Text
----
:func:`read_text` reads a UTF-8 file; :func:`split_text` keeps its first 90%
for training, the next 5% for dev and the last 5% for test (contiguous, so no
window straddles two parts; the same for every seed).
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..core import validate as V
from .subword import Subword, word_text, words_of
from .vocab import Vocab

UNITS = ("char", "word", "bpe")
SPACE = "␣"  # how a space token is shown in alignment pictures


@dataclass(frozen=True)
class Pair:
    source: str
    target: str
    line: int  # 1-based line number in its file (0: not from a file)


def _read_utf8(path: str | os.PathLike, flag: str) -> str:
    p = Path(path)
    if not p.exists():
        raise ValueError(f"{flag} {str(path)!r}: no such file")
    if p.is_dir():
        raise ValueError(f"{flag} {str(path)!r} is a directory; give a file")
    data = p.read_bytes()
    try:
        return data.decode("utf-8-sig")  # a byte-order mark is not text
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise ValueError(f"{path}:{line}: not UTF-8 text (byte 0x{data[e.start]:02x}); save the file as "
                         "UTF-8") from None


def parse_pairs(text: str, name: str = "<pairs>") -> list[Pair]:
    """The pairs of a TSV's text; ``name`` is used in error messages."""
    pairs = []
    for n, raw in enumerate(text.split("\n"), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        cols = raw.rstrip("\r").split("\t")
        if len(cols) != 2:
            got = "no tab" if len(cols) == 1 else f"{len(cols)} columns"
            raise ValueError(f"{name}:{n}: expected two tab-separated columns (source<TAB>target), got {got}: "
                             f"{line[:60]!r}")
        source, target = cols[0].strip(), cols[1].strip()
        if not source or not target:
            side = "source" if not source else "target"
            raise ValueError(f"{name}:{n}: the {side} column is empty: {line[:60]!r}")
        pairs.append(Pair(source, target, n))
    if not pairs:
        raise ValueError(f"{name} has no pairs (blank lines and lines starting with '#' are skipped); write one "
                         "source<TAB>target pair per line")
    return pairs


def read_pairs(path: str | os.PathLike, flag: str = "--data") -> list[Pair]:
    """The pairs of a source<TAB>target file; ValueError (one line, with the line number) if malformed."""
    return parse_pairs(_read_utf8(path, flag), str(path))


def write_pairs(path: str | os.PathLike, pairs: Iterable[Pair]) -> None:
    Path(path).write_text("".join(f"{p.source}\t{p.target}\n" for p in pairs), encoding="utf-8")


def references(pairs: Iterable[Pair]) -> dict[str, list[str]]:
    """Source -> its targets, in file order."""
    refs: dict[str, list[str]] = {}
    for p in pairs:
        refs.setdefault(p.source, [])
        if p.target not in refs[p.source]:
            refs[p.source].append(p.target)
    return refs


@dataclass
class PairSplit:
    train: list[Pair]
    dev: list[Pair]
    test: list[Pair]
    warning: str = ""  # set when dev or test is too small for the scores to mean much

    def summary(self) -> dict:
        out = {"train_pairs": len(self.train), "dev_pairs": len(self.dev), "test_pairs": len(self.test),
               "dev_sources": len(references(self.dev)), "test_sources": len(references(self.test))}
        if self.warning:
            out["warning"] = self.warning
        return out


def split_pairs(pairs: Sequence[Pair], seed: int = 0, dev_share: float = 0.05, test_share: float = 0.05,
                name: str = "the data") -> PairSplit:
    """Seeded split by distinct source: ``test_share`` and ``dev_share`` of them (at least one each)."""
    sources = list(references(pairs))
    n = len(sources)
    if n < 3:
        raise ValueError(f"{name} has {n} distinct source{'s' if n != 1 else ''}; at least 3 are needed (one each "
                         "for training, dev and test)")
    n_test = max(1, round(n * test_share))
    n_dev = max(1, round(n * dev_share))
    if n_test + n_dev >= n:
        n_test = n_dev = 1
    order = list(sources)
    random.Random(seed).shuffle(order)
    test, dev = set(order[:n_test]), set(order[n_test:n_test + n_dev])
    split = PairSplit([p for p in pairs if p.source not in test and p.source not in dev],
                      [p for p in pairs if p.source in dev], [p for p in pairs if p.source in test])
    if min(n_test, n_dev) < 20:
        split.warning = (f"{name} is tiny ({n} distinct sources): dev has {n_dev} and test {n_test}, so their "
                         "scores are noisy")
    return split


# ----------------------------------------------------------------------------- tokens
def parse_units(units: str) -> tuple[str, str]:
    """``char`` -> (char, char); ``char,word`` -> source char, target word."""
    parts = [u.strip() for u in str(units).split(",")]
    if len(parts) == 1:
        parts *= 2
    if len(parts) != 2:
        raise ValueError(f"units must be one of {', '.join(UNITS)} or SOURCE,TARGET (e.g. char,word), got {units!r}")
    for u in parts:
        V.check_choice("units", u, UNITS)
    return parts[0], parts[1]


class Units:
    """Text <-> tokens for one side of the pairs: ``char``, ``word`` or ``bpe``."""

    def __init__(self, kind: str, vocab: Vocab | None = None, subword: Subword | None = None):
        self.kind, self.subword = kind, subword
        self._vocab = subword.vocab() if subword is not None else vocab

    @classmethod
    def learn(cls, kind: str, texts: Sequence[str], vocab_size: int = 4000) -> Units:
        if kind == "bpe":
            return cls(kind, subword=Subword.train(texts, vocab_size))
        units = cls(kind)
        units._vocab = Vocab.build(units.split(t) for t in texts)
        return units

    def vocab(self) -> Vocab:
        return self._vocab

    def split(self, text: str) -> list[str]:
        if self.kind == "char":
            return list(text)
        if self.kind == "word":
            return text.split()
        return self.subword.encode(text)

    def join(self, tokens: Sequence[str]) -> str:
        if self.kind == "char":
            return "".join(tokens)
        if self.kind == "word":
            return " ".join(tokens)
        return self.subword.decode(tokens)

    def metric_tokens(self, text: str) -> list[str]:
        """What the token error rate counts: characters for ``char``, whitespace words otherwise."""
        return list(text) if self.kind == "char" else text.split()

    def groups(self, tokens: Sequence[str]) -> tuple[list[list[int]], list[str]]:
        """Token indices grouped into display units (bpe: words; else one token each) and their labels."""
        if self.kind == "bpe":
            groups = words_of(list(tokens))
            return groups, [word_text(list(tokens), g) for g in groups]
        return [[i] for i in range(len(tokens))], [SPACE if t == " " else t for t in tokens]

    def to_state(self) -> dict:
        if self.kind == "bpe":
            return {"kind": self.kind, "subword": self.subword.to_str()}
        return {"kind": self.kind, "vocab": self._vocab.to_list()}

    @classmethod
    def from_state(cls, state: dict) -> Units:
        if state["kind"] == "bpe":
            return cls("bpe", subword=Subword.from_str(state["subword"]))
        return cls(state["kind"], vocab=Vocab.from_list(state["vocab"]))


# ----------------------------------------------------------------------------- plain text
def read_text(path: str | os.PathLike, flag: str = "--data") -> str:
    text = _read_utf8(path, flag)
    if not text.strip():
        raise ValueError(f"{path} is empty; give a UTF-8 text file to model")
    return text


@dataclass
class TextSplit:
    train: str
    dev: str
    test: str


def split_text(text: str, min_chars: int, dev_share: float = 0.05, test_share: float = 0.05,
               name: str = "the text") -> TextSplit:
    """First 90% train, next 5% dev, last 5% test; each part must hold ``min_chars`` characters."""
    n = len(text)
    n_test, n_dev = int(n * test_share), int(n * dev_share)
    need = max(min_chars / min(dev_share, test_share), min_chars * 3)
    if min(n_test, n_dev, n - n_test - n_dev) < min_chars:
        raise ValueError(f"{name} has {n:,} characters: too short, since training, dev and test (the last "
                         f"{test_share:.0%}) each need {min_chars:,} characters (one window of the model's context "
                         f"and more); give at least {int(need):,} characters or a smaller --set context=N")
    return TextSplit(text[: n - n_test - n_dev], text[n - n_test - n_dev: n - n_test], text[n - n_test:])


__all__ = ["Pair", "PairSplit", "TextSplit", "Units", "UNITS", "parse_pairs", "parse_units", "read_pairs",
           "read_text", "references", "split_pairs", "split_text", "write_pairs"]
