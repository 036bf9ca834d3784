"""Your own data: reading pairs and text, splitting them, turning them into tokens."""

import pytest

from attnzoo.data.userdata import (
    Pair,
    Units,
    parse_pairs,
    parse_units,
    read_pairs,
    read_text,
    references,
    split_pairs,
    split_text,
)


def test_pairs_skip_blank_and_comment_lines_and_keep_line_numbers(tmp_path):
    path = tmp_path / "p.tsv"
    path.write_bytes("\ufeff# a lexicon\nhello\tHH AH L OW\r\n\n  \nworld \t W ER L D\n".encode())
    assert read_pairs(path) == [Pair("hello", "HH AH L OW", 2), Pair("world", "W ER L D", 5)]


@pytest.mark.parametrize("text, words", [
    ("a\tb\nc d\n", "p.tsv:2: expected two tab-separated columns (source<TAB>target), got no tab: 'c d'"),
    ("a\tb\tc\n", "p.tsv:1: expected two tab-separated columns (source<TAB>target), got 3 columns"),
    ("a\tb\n\t x\n", "p.tsv:2: the source column is empty"),
    ("a\t \n", "p.tsv:1: the target column is empty"),
    ("", "p.tsv has no pairs"),
    ("# only a comment\n\n", "p.tsv has no pairs"),
])
def test_malformed_pairs_name_the_line(text, words):
    with pytest.raises(ValueError) as e:
        parse_pairs(text, "p.tsv")
    assert words in str(e.value) and "\n" not in str(e.value)


def test_missing_directory_and_non_utf8_files(tmp_path):
    with pytest.raises(ValueError, match="--data .*nope.tsv': no such file"):
        read_pairs(tmp_path / "nope.tsv")
    with pytest.raises(ValueError, match="is a directory"):
        read_pairs(tmp_path)
    bad = tmp_path / "latin1.tsv"
    bad.write_bytes("a\tb\nca\xf1a\tx\n".encode("latin-1"))
    with pytest.raises(ValueError, match=r"latin1.tsv:2: not UTF-8 text \(byte 0xf1\)"):
        read_pairs(bad)


def test_split_is_seeded_by_distinct_source_with_at_least_one_dev_and_test():
    pairs = [Pair(f"w{i}", f"t{i}", i) for i in range(100)] + [Pair("w7", "other", 101)]
    a, b = split_pairs(pairs, seed=3), split_pairs(pairs, seed=3)
    assert a == b and a != split_pairs(pairs, seed=4)
    assert len(references(a.dev)) == len(references(a.test)) == 5 and len(a.train) + len(a.dev) + len(a.test) == 101
    parts = [{p.source for p in part} for part in (a.train, a.dev, a.test)]
    assert not (parts[0] & parts[1] or parts[0] & parts[2] or parts[1] & parts[2])
    assert sum(p.source == "w7" for p in (a.train if "w7" in parts[0] else a.dev if "w7" in parts[1] else a.test)) == 2
    assert "tiny" in a.warning  # 5 test sources: noisy, and said so

    tiny = split_pairs(pairs[:3], seed=0, name="t.tsv")
    assert (len(tiny.train), len(tiny.dev), len(tiny.test)) == (1, 1, 1) and "t.tsv is tiny" in tiny.warning
    assert split_pairs([Pair(f"w{i}", "t", i) for i in range(1000)]).warning == ""
    with pytest.raises(ValueError, match="t.tsv has 2 distinct sources; at least 3"):
        split_pairs([Pair("a", "x", 1), Pair("a", "y", 2), Pair("b", "z", 3)], name="t.tsv")


def test_units_split_join_and_round_trip_through_plain_state():
    assert parse_units("char") == ("char", "char") and parse_units("char,word") == ("char", "word")
    with pytest.raises(ValueError, match="did you mean 'word'"):
        parse_units("char,words")
    texts = ["the cat sat", "a cat ran", "the dog sat on the mat"] * 5
    for kind in ("char", "word", "bpe"):
        u = Units.learn(kind, texts, vocab_size=40)
        tokens = u.split("the cat sat")
        assert u.join(tokens) == "the cat sat"
        v = Units.from_state(u.to_state())
        assert v.split("the cat sat") == tokens and v.vocab() == u.vocab()
        groups, labels = u.groups(tokens)
        assert [i for g in groups for i in g] == list(range(len(tokens)))
        assert labels == {"char": list("the␣cat␣sat"), "word": ["the", "cat", "sat"],
                          "bpe": ["the", "cat", "sat"]}[kind]
    assert Units.learn("word", texts).metric_tokens("a  b") == ["a", "b"]
    assert Units.learn("char", texts).metric_tokens("a b") == ["a", " ", "b"]


def test_text_split_is_contiguous_and_refuses_too_short_text(tmp_path):
    text = "".join(chr(97 + i % 26) for i in range(1000))
    s = split_text(text, min_chars=20)
    assert s.train + s.dev + s.test == text and len(s.test) == len(s.dev) == 50
    with pytest.raises(ValueError, match="c.txt has 300 characters: too short.*at least 360 characters"):
        split_text(text[:300], min_chars=18, name="c.txt")
    (tmp_path / "e.txt").write_text(" \n")
    with pytest.raises(ValueError, match="is empty"):
        read_text(tmp_path / "e.txt")
