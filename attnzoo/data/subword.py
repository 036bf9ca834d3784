"""Subword vocabularies (byte-pair encoding, Sennrich et al. 2016) with Hugging Face ``tokenizers``.

A :class:`Subword` model is learned from the training side only, one per
language. Words are split on whitespace and marked with "▁" at their start
(SentencePiece's convention), so ``decode(encode(text)) == text`` up to
whitespace, and pieces group back into words for the attention pictures.
Its ids put ``<pad> <s> </s> <unk>`` at 0..3, like :class:`~attnzoo.data.vocab.Vocab`;
:meth:`Subword.vocab` gives the matching ``Vocab``. It serialises to a JSON
string (``to_str``/``from_str``), safe inside a ``weights_only`` checkpoint.
"""

from __future__ import annotations

from collections.abc import Iterable

from .vocab import SPECIALS, Vocab

MARK = "▁"


def _require():
    try:
        import tokenizers
    except ImportError as e:  # pragma: no cover - a dependency of the package
        raise ImportError("subword vocabularies need Hugging Face tokenizers: pip install tokenizers") from e
    return tokenizers


class Subword:
    """A trained BPE model: text <-> pieces."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer

    @classmethod
    def train(cls, texts: Iterable[str], vocab_size: int = 4000, min_frequency: int = 2) -> Subword:
        tk = _require()
        if vocab_size <= len(SPECIALS):
            raise ValueError(f"vocab_size must be > {len(SPECIALS)} (the special tokens), got {vocab_size}")
        tok = tk.Tokenizer(tk.models.BPE(unk_token="<unk>"))
        tok.normalizer = tk.normalizers.NFC()
        tok.pre_tokenizer = tk.pre_tokenizers.Metaspace(replacement=MARK)
        tok.decoder = tk.decoders.Metaspace(replacement=MARK)
        trainer = tk.trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_frequency,
                                         special_tokens=list(SPECIALS), show_progress=False)
        tok.train_from_iterator(texts, trainer=trainer)
        return cls(tok)

    @classmethod
    def from_str(cls, text: str) -> Subword:
        return cls(_require().Tokenizer.from_str(text))

    def to_str(self) -> str:
        return self.tokenizer.to_str()

    def vocab(self) -> Vocab:
        """The pieces as a :class:`Vocab` whose ids equal the tokenizer's."""
        size = self.tokenizer.get_vocab_size()
        return Vocab.from_list([self.tokenizer.id_to_token(i) for i in range(size)])

    def encode(self, text: str) -> list[str]:
        return self.tokenizer.encode(text, add_special_tokens=False).tokens

    def decode(self, pieces: Iterable[str]) -> str:
        return self.tokenizer.decoder.decode(list(pieces)).strip()


def words_of(pieces: list[str]) -> list[list[int]]:
    """Group piece indices into words: a piece starting with "▁" opens a new word."""
    groups: list[list[int]] = []
    for i, p in enumerate(pieces):
        if p.startswith(MARK) or not groups:
            groups.append([i])
        else:
            groups[-1].append(i)
    return groups


def word_text(pieces: list[str], group: list[int]) -> str:
    return "".join(pieces[i] for i in group).replace(MARK, "") or MARK
