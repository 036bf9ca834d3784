"""A token vocabulary with the four special tokens every sequence task uses.

Ids: ``<pad>`` = 0, ``<s>`` = 1, ``</s>`` = 2, ``<unk>`` = 3, then the
vocabulary's own tokens in sorted order.  :meth:`Vocab.to_list` gives a plain
``list[str]`` (safe for ``torch.load(weights_only=True)``) and
:meth:`Vocab.from_list` rebuilds the same vocabulary from it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

PAD, BOS, EOS, UNK = "<pad>", "<s>", "</s>", "<unk>"
SPECIALS = (PAD, BOS, EOS, UNK)


class Vocab:
    """Maps tokens (str) to ids (int) and back."""

    def __init__(self, tokens: Iterable[str] = ()) -> None:
        extra = sorted({t for t in tokens if t not in SPECIALS})
        self._itos: list[str] = list(SPECIALS) + extra
        self._stoi: dict[str, int] = {t: i for i, t in enumerate(self._itos)}

    @classmethod
    def build(cls, sequences: Iterable[Iterable[str]]) -> Vocab:
        """The vocabulary of every token that occurs in ``sequences``."""
        seen: set[str] = set()
        for seq in sequences:
            seen.update(seq)
        return cls(seen)

    # --- ids of the special tokens ---------------------------------------
    @property
    def pad_id(self) -> int:
        return 0

    @property
    def bos_id(self) -> int:
        return 1

    @property
    def eos_id(self) -> int:
        return 2

    @property
    def unk_id(self) -> int:
        return 3

    @property
    def tokens(self) -> list[str]:
        """All tokens in id order, specials first (a copy)."""
        return list(self._itos)

    def __len__(self) -> int:
        return len(self._itos)

    def __contains__(self, token: object) -> bool:
        return token in self._stoi

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Vocab) and self._itos == other._itos

    def __repr__(self) -> str:
        return f"Vocab({len(self)} tokens)"

    # --- conversion --------------------------------------------------------
    def encode(self, tokens: Iterable[str], add_bos: bool = False, add_eos: bool = False) -> list[int]:
        """Token ids for ``tokens``; unknown tokens map to :attr:`unk_id`."""
        ids = [self._stoi.get(t, self.unk_id) for t in tokens]
        if add_bos:
            ids.insert(0, self.bos_id)
        if add_eos:
            ids.append(self.eos_id)
        return ids

    def decode(self, ids: Iterable[int]) -> list[str]:
        """Tokens for ``ids``: stops at ``</s>``, skips ``<pad>`` and ``<s>``."""
        out: list[str] = []
        for i in ids:
            i = int(i)
            if i == self.eos_id:
                break
            if i in (self.pad_id, self.bos_id):
                continue
            out.append(self._itos[i] if 0 <= i < len(self._itos) else UNK)
        return out

    # --- serialization -----------------------------------------------------
    def to_list(self) -> list[str]:
        """All tokens in id order as a plain list of str (for checkpoints)."""
        return list(self._itos)

    @classmethod
    def from_list(cls, tokens: Sequence[str]) -> Vocab:
        """Rebuild a vocabulary from :meth:`to_list`'s output, ids unchanged."""
        tokens = [str(t) for t in tokens]
        if tuple(tokens[: len(SPECIALS)]) != SPECIALS:
            raise ValueError(
                f"tokens: expected a list starting with {list(SPECIALS)}, got {tokens[:len(SPECIALS)]}"
            )
        if len(set(tokens)) != len(tokens):
            raise ValueError("tokens: expected distinct tokens, got duplicates")
        vocab = cls.__new__(cls)
        vocab._itos = tokens
        vocab._stoi = {t: i for i, t in enumerate(tokens)}
        return vocab


__all__ = ["Vocab", "PAD", "BOS", "EOS", "UNK", "SPECIALS"]
