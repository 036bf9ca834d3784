"""Spanish -> English Bible verses for the translate task (both public domain).

* Spanish: Reina-Valera 1909, Debian's ``sword-text-sparv`` (SWORD module ``spaRV1909eb``);
* English: King James Version, Debian's ``sword-text-kjv`` (``engKJV2006eb``);

read with PyPI ``pysword`` from ``/usr/share/sword`` (or ``$ATTNZOO_SWORD_PATH``).
Both modules use the KJV versification, so verses align by (book, chapter,
verse); pairs with an empty side are dropped. The aligned pairs are cached
once as a TSV (``$ATTNZOO_CACHE``, default ``~/.cache/attnzoo``) so later
runs start in a second.

The split is by chapter with a seeded shuffle: every verse of a dev or test
chapter is kept out of training (neighbouring verses of one chapter share
names and phrasing, so a split by verse would leak).
"""

from __future__ import annotations

import csv
import io
import os
import random
import re
from dataclasses import dataclass
from pathlib import Path

from ..fileio import atomic_write_bytes
from . import MissingDataError

MODULES = {"es": "spaRV1909eb", "en": "engKJV2006eb"}
PACKAGES = "sword-text-sparv sword-text-kjv"
INSTALL_HINT = f"sudo apt-get install {PACKAGES} (and pip install pysword)"
CACHE_NAME = "bible-es-en-v1.tsv"


@dataclass(frozen=True)
class Verse:
    book: str  # OSIS abbreviation, e.g. "Gen"
    chapter: int
    verse: int
    es: str
    en: str

    @property
    def chapter_key(self) -> str:
        return f"{self.book}.{self.chapter}"


def sword_path() -> Path:
    return Path(os.environ.get("ATTNZOO_SWORD_PATH", "/usr/share/sword"))


def cache_dir() -> Path:
    return Path(os.environ.get("ATTNZOO_CACHE", Path.home() / ".cache" / "attnzoo"))


_SPACES = re.compile(r"\s+")
_PILCROW = re.compile(r"¶\s*")  # the KJV's paragraph marks
_DROP_CAP = re.compile(r"^([A-ZÁÉÍÓÚÑ]{2,})(\s+[a-záéíóúñ])")


def clean(text: str) -> str:
    """One line of plain text: whitespace collapsed; a chapter's drop-capital first
    word ("EN el principio") written as a normal capitalised word ("En el principio")."""
    text = _SPACES.sub(" ", _PILCROW.sub("", text)).strip()
    return _DROP_CAP.sub(lambda m: m.group(1).capitalize() + m.group(2), text)


def read_sword(path: Path | None = None) -> list[Verse]:
    """Every verse present in both modules, in canonical order (slow: decompresses both Bibles)."""
    path = path or sword_path()
    try:
        from pysword.modules import SwordModules
    except ImportError as e:
        raise MissingDataError(f"the translate task reads the Bibles with pysword: pip install pysword "
                               f"(and {INSTALL_HINT})") from e
    if not (path / "mods.d").is_dir():
        raise MissingDataError(f"no SWORD modules in {path}: {INSTALL_HINT}")
    modules = SwordModules(str(path))
    found = modules.parse_modules()
    missing = [m for m in MODULES.values() if m not in found]
    if missing:
        raise MissingDataError(f"SWORD module(s) {', '.join(missing)} not in {path}: {INSTALL_HINT}")
    bibles = {lang: modules.get_bible_from_module(name) for lang, name in MODULES.items()}
    verses = []
    structure = bibles["en"].get_structure()
    for testament in ("ot", "nt"):
        for book in structure.get_books()[testament]:
            for chapter in range(1, book.num_chapters + 1):
                texts = {lang: list(b.get_iter(books=[book.osis_name], chapters=[chapter], clean=True))
                         for lang, b in bibles.items()}
                for v, (es, en) in enumerate(zip(texts["es"], texts["en"]), start=1):
                    es, en = clean(es), clean(en)
                    if es and en:
                        verses.append(Verse(book.osis_name, chapter, v, es, en))
    return verses


def load_verses(path: Path | None = None, use_cache: bool = True) -> list[Verse]:
    """The aligned verses, from the TSV cache if it exists, else from the SWORD modules (then cached)."""
    cache = cache_dir() / CACHE_NAME
    if use_cache and cache.is_file():
        with cache.open(encoding="utf-8", newline="") as f:
            return [Verse(r[0], int(r[1]), int(r[2]), clean(r[3]), clean(r[4]))
                    for r in csv.reader(f, delimiter="\t")]
    verses = read_sword(path)
    if use_cache:
        buf = io.StringIO()
        w = csv.writer(buf, delimiter="\t", lineterminator="\n")
        for v in verses:
            w.writerow([v.book, v.chapter, v.verse, v.es, v.en])
        data = buf.getvalue().encode("utf-8")
        atomic_write_bytes(cache, lambda f: f.write(data))
    return verses


@dataclass
class BibleSplit:
    train: list[Verse]
    dev: list[Verse]
    test: list[Verse]
    seed: int

    def summary(self) -> dict:
        chapters = lambda vs: len({v.chapter_key for v in vs})  # noqa: E731
        return {"train_pairs": len(self.train), "dev_pairs": len(self.dev), "test_pairs": len(self.test),
                "train_chapters": chapters(self.train), "dev_chapters": chapters(self.dev),
                "test_chapters": chapters(self.test), "split_seed": self.seed}


def split_by_chapter(verses: list[Verse], seed: int = 0, dev_chapters: int = 30,
                     test_chapters: int = 60) -> BibleSplit:
    """Seeded split of whole chapters: ``test_chapters`` for test, ``dev_chapters`` for dev, the rest train."""
    keys = sorted({v.chapter_key for v in verses})
    if dev_chapters + test_chapters >= len(keys):
        raise ValueError(f"dev_chapters + test_chapters ({dev_chapters} + {test_chapters}) must leave "
                         f"chapters for training; there are {len(keys)}")
    random.Random(seed).shuffle(keys)
    test, dev = set(keys[:test_chapters]), set(keys[test_chapters: test_chapters + dev_chapters])
    return BibleSplit(train=[v for v in verses if v.chapter_key not in test | dev],
                      dev=[v for v in verses if v.chapter_key in dev],
                      test=[v for v in verses if v.chapter_key in test], seed=seed)
