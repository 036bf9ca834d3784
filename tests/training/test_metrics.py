"""Edit distance and the G2P PER/WER definition, on hand-worked examples."""

import pytest

from attnzoo.training.metrics import edit_distance, g2p_scores


@pytest.mark.parametrize(
    "a, b, expected",
    [
        ([], [], 0),
        (["AH"], [], 1),
        ([], ["AH", "B"], 2),
        (["K", "AE", "T"], ["K", "AE", "T"], 0),
        (["K", "AE", "T"], ["B", "AE", "T"], 1),  # substitution
        (["K", "AE", "T"], ["K", "T"], 1),  # deletion
        (["K", "T"], ["K", "AE", "T"], 1),  # insertion
        (["AH", "B"], ["B", "AH"], 2),
        ("kitten", "sitting", 3),
    ],
)
def test_edit_distance(a, b, expected):
    assert edit_distance(a, b) == expected
    assert edit_distance(b, a) == expected


def test_multi_character_phonemes_compare_whole():
    # "AH" vs "AA" is one substitution, not a character-level edit.
    assert edit_distance(["AH", "B"], ["AA", "B"]) == 1


def test_hyp_matching_second_reference_scores_zero():
    refs = {"either": [["IY", "DH", "ER"], ["AY", "DH", "ER", "Z"]]}
    hyps = {"either": ["AY", "DH", "ER", "Z"]}
    assert g2p_scores(hyps, refs) == {"per": 0.0, "wer": 0.0, "words": 1}


def test_one_substitution():
    scores = g2p_scores({"cat": ["K", "AE", "D"]}, {"cat": [["K", "AE", "T"]]})
    assert scores["per"] == pytest.approx(1 / 3)
    assert scores["wer"] == 1.0


def test_one_deletion():
    scores = g2p_scores({"cats": ["K", "AE", "S"]}, {"cats": [["K", "AE", "T", "S"]]})
    assert scores["per"] == pytest.approx(1 / 4)
    assert scores["wer"] == 1.0


def test_empty_and_missing_hypothesis():
    refs = {"cat": [["K", "AE", "T"]]}
    assert g2p_scores({"cat": []}, refs)["per"] == pytest.approx(1.0)
    assert g2p_scores({}, refs) == {"per": 1.0, "wer": 1.0, "words": 1}


def test_closest_reference_is_used_and_ties_take_the_first():
    # hyp = A B C D; refs: X Y (dist 4, len 2) and A B C (dist 1, len 3).
    # The closest is A B C -> per 1/3 (choosing by lowest PER ratio would differ).
    refs = {"w": [["X", "Y"], ["A", "B", "C"]]}
    assert g2p_scores({"w": ["A", "B", "C", "D"]}, refs)["per"] == pytest.approx(1 / 3)
    # hyp = A; refs B (dist 1, len 1) and A C (dist 1, len 2) tie: the first listed counts,
    # so per = 1/1 in this order and 1/2 with the references swapped.
    tie = {"w": [["B"], ["A", "C"]]}
    assert g2p_scores({"w": ["A"]}, tie)["per"] == pytest.approx(1.0)
    tie_swapped = {"w": [["A", "C"], ["B"]]}
    assert g2p_scores({"w": ["A"]}, tie_swapped)["per"] == pytest.approx(1 / 2)


def test_several_words():
    refs = {
        "cat": [["K", "AE", "T"]],
        "either": [["IY", "DH", "ER"], ["AY", "DH", "ER"]],
        "dogs": [["D", "AO", "G", "Z"]],
        "a": [["AH"], ["EY"]],
        "the": [["DH", "AH"]],
    }
    hyps = {
        "cat": ["K", "AE", "T"],          # exact:           dist 0, len 3
        "either": ["AY", "DH", "ER"],     # 2nd ref exact:   dist 0, len 3
        "dogs": ["D", "AA", "G"],         # sub + del:       dist 2, len 4
        "a": ["AE"],                      # tie, 1st ref AH: dist 1, len 1
        # "the" missing -> empty hyp:     dist 2, len 2
        "extra": ["EH", "K", "S"],        # not in refs: ignored
    }
    # PER = (0 + 0 + 2 + 1 + 2) / (3 + 3 + 4 + 1 + 2) = 5 / 13
    # WER = 3 wrong (dogs, a, the) / 5 words = 0.6
    scores = g2p_scores(hyps, refs)
    assert scores["per"] == pytest.approx(5 / 13)
    assert scores["wer"] == pytest.approx(3 / 5)
    assert scores["words"] == 5
    assert 0.0 <= scores["per"] <= 1.0 and 0.0 <= scores["wer"] <= 1.0


def test_no_words():
    assert g2p_scores({}, {}) == {"per": 0.0, "wer": 0.0, "words": 0}
