"""A character vocabulary for character-level language modelling.

Ids: ``<unk>`` = 0, then every character seen in the training text, in sorted
order.  A character never seen in training encodes to :attr:`CharVocab.unk_id`
and decodes to :attr:`CharVocab.unk_char` (U+FFFD).  :meth:`CharVocab.to_list`
gives a plain ``list[str]`` (safe for ``torch.load(weights_only=True)``) and
:meth:`CharVocab.from_list` rebuilds the same vocabulary from it.
"""

from __future__ import annotations

from collections.abc import Iterable

UNK = "<unk>"


class CharVocab:
    """Maps single characters (str) to ids (int) and back."""

    unk_id = 0
    unk_char = "\ufffd"

    def __init__(self, text: str = "") -> None:
        if not isinstance(text, str):
            raise TypeError(f"text: expected str, got {type(text).__name__}")
        self._itos: list[str] = [UNK] + sorted(set(text))
        self._stoi: dict[str, int] = {c: i for i, c in enumerate(self._itos) if i != self.unk_id}

    # --- persistence -------------------------------------------------------
    def to_list(self) -> list[str]:
        """Every entry in id order, ``<unk>`` first: a plain list of str."""
        return list(self._itos)

    @classmethod
    def from_list(cls, items: list[str]) -> CharVocab:
        """The vocabulary that :meth:`to_list` described."""
        items = list(items)
        if not items or items[0] != UNK:
            got = repr(items[0]) if items else "an empty list"
            raise ValueError(f"items: expected a list starting with {UNK!r}, got {got}")
        chars = items[1:]
        bad = [c for c in chars if not isinstance(c, str) or len(c) != 1]
        if bad:
            raise ValueError(f"items: expected single characters after {UNK!r}, got {bad[0]!r}")
        if chars != sorted(set(chars)):
            raise ValueError("items: expected sorted, distinct characters after '<unk>'")
        return cls("".join(chars))

    # --- conversion --------------------------------------------------------
    def encode(self, text: str) -> list[int]:
        """One id per character of ``text``; unseen characters map to :attr:`unk_id`."""
        if not isinstance(text, str):
            raise TypeError(f"text: expected str, got {type(text).__name__}")
        get = self._stoi.get
        return [get(c, self.unk_id) for c in text]

    def decode(self, ids: Iterable[int]) -> str:
        """The text for ``ids``; :attr:`unk_id` decodes to :attr:`unk_char`."""
        out = []
        n = len(self._itos)
        for i in ids:
            i = int(i)
            if not 0 <= i < n:
                raise ValueError(f"ids: expected ids in [0, {n}), got {i}")
            out.append(self.unk_char if i == self.unk_id else self._itos[i])
        return "".join(out)

    # --- container protocol -------------------------------------------------
    @property
    def chars(self) -> list[str]:
        """The known characters in id order (without ``<unk>``)."""
        return self._itos[1:]

    def __len__(self) -> int:
        return len(self._itos)

    def __contains__(self, char: object) -> bool:
        return char in self._stoi

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CharVocab) and self._itos == other._itos

    def __repr__(self) -> str:
        return f"CharVocab({len(self)} ids)"


__all__ = ["CharVocab", "UNK"]
