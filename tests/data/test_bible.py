"""The translate task's data: aligned Bible verses, the split by chapter, subword vocabularies."""

import pytest
import torch

from attnzoo.data import MissingDataError
from attnzoo.data.bible import INSTALL_HINT, Verse, clean, load_verses, split_by_chapter
from attnzoo.data.subword import Subword, words_of
from attnzoo.tasks.translate import Translation, corpus_scores


@pytest.fixture(scope="module")
def verses():
    return load_verses()  # Debian sword-text-sparv and sword-text-kjv (.ci/run installs them)


def find(verses, book, chapter, verse):
    return next(v for v in verses if (v.book, v.chapter, v.verse) == (book, chapter, verse))


def test_verses_align_by_book_chapter_and_verse(verses):
    assert len(verses) > 30_000
    gen = find(verses, "Gen", 1, 1)
    assert gen.es.startswith("En el principio") and gen.en.startswith("In the beginning")
    john = find(verses, "John", 3, 16)
    assert "Dios" in john.es and "God" in john.en and "world" in john.en
    assert all(v.es and v.en and "¶" not in v.en and "  " not in v.es for v in verses)


def test_clean_fixes_drop_capitals_and_paragraph_marks():
    assert clean("EN el principio") == "En el principio"
    assert clean("¶ And  Hamor\n came") == "And Hamor came"
    assert clean("DIOS es") == "Dios es" and clean("Y dijo DIOS") == "Y dijo DIOS"


def test_split_keeps_whole_chapters_apart_and_is_seeded(verses):
    s = split_by_chapter(verses, seed=0)
    chapters = [{v.chapter_key for v in part} for part in (s.train, s.dev, s.test)]
    assert not (chapters[0] & chapters[1]) and not (chapters[0] & chapters[2]) and not (chapters[1] & chapters[2])
    assert len(chapters[1]) == 30 and len(chapters[2]) == 60
    assert len(s.train) + len(s.dev) + len(s.test) == len(verses)
    assert split_by_chapter(verses, seed=0).test == s.test
    assert split_by_chapter(verses, seed=1).test != s.test


def test_missing_debian_packages_name_the_install_command(tmp_path, monkeypatch):
    monkeypatch.setenv("ATTNZOO_SWORD_PATH", str(tmp_path / "nothing"))
    monkeypatch.setenv("ATTNZOO_CACHE", str(tmp_path / "cache"))
    with pytest.raises(MissingDataError, match="apt-get install sword-text-sparv sword-text-kjv"):
        load_verses()
    assert "apt-get install" in INSTALL_HINT


def test_subwords_are_learned_from_the_given_side_only():
    train = ["el señor habló a moisés diciendo", "y dijo dios sea la luz", "y fue la luz"] * 20
    sw = Subword.train(train, vocab_size=60, min_frequency=1)
    vocab = sw.vocab()
    assert vocab.tokens[:4] == ["<pad>", "<s>", "</s>", "<unk>"] and len(vocab) <= 60
    assert "▁luz" in vocab and not any("xyz" in t for t in vocab.tokens)
    text = "y dijo dios sea la luz"
    assert sw.decode(sw.encode(text)) == text
    again = Subword.from_str(sw.to_str())
    assert again.encode("habló moisés") == sw.encode("habló moisés")


def test_word_alignment_groups_pieces_into_words():
    src = ["▁En", "▁el", "▁princip", "io"]
    labels = ["▁In", "▁the", "▁begin", "ning", "</s>"]
    w = torch.softmax(torch.randn(5, 4), -1)
    words, s, t = Translation("In the beginning", src, labels, w).word_alignment()
    assert s == ["En", "el", "principio"] and t == ["In", "the", "beginning", "</s>"]
    assert words.shape == (4, 3)
    torch.testing.assert_close(words.sum(-1), torch.ones(4))
    torch.testing.assert_close(words[2, 2], (w[2, 2:].sum() + w[3, 2:].sum()) / 2)
    assert words_of(["a", "▁b", "c"]) == [[0], [1, 2]]


def test_bleu_and_chrf_are_sacrebleus():
    refs = ["In the beginning God created the heaven and the earth."]
    assert corpus_scores(refs, refs)["bleu"] == 100.0
    worse = corpus_scores(["In the beginning God made the sky."], refs)
    assert 0 < worse["bleu"] < 100 and 0 < worse["chrf"] < 100
    assert Verse("Gen", 1, 1, "a", "b").chapter_key == "Gen.1"
