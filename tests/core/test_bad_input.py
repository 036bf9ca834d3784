"""The shared checks of attnzoo.core.validate, beyond the cases of tests/test_bad_input_table.py.

The table holds one row per kind of bad input (attend's among them); this file
checks the edges of the checks themselves: what must not be flagged, and the
types they accept.
"""

import warnings

import pytest
import torch

from attnzoo import attend
from attnzoo.core import validate as V
from attnzoo.models.rnn_seq2seq import Seq2SeqConfig


def qkv():
    return torch.randn(2, 3, 4), torch.randn(2, 5, 4), torch.randn(2, 5, 4)


def test_an_all_false_mask_warns_once_per_call_and_still_gives_zeros():
    mask = torch.zeros(2, 1, 5, dtype=torch.bool)
    with pytest.warns(UserWarning, match=r"mask of shape \(2, 1, 5\) is False everywhere") as record:
        out = attend(*qkv(), mask=mask, need_weights=True)
    assert len([w for w in record if "False everywhere" in str(w.message)]) == 1
    assert torch.equal(out.output, torch.zeros_like(out.output)) and torch.equal(out.weights, torch.zeros(2, 3, 5))


@pytest.mark.parametrize("mask", [
    torch.tensor([[True] * 5, [False] * 5])[:, None, :],  # one batch item fully padded: defined, not a mistake
    torch.tensor([[False, False, True, True, True]] * 2)[:, None, :],  # left padding
    torch.ones(1, 1, 5, dtype=torch.bool),
])
def test_partly_blocking_masks_do_not_warn(mask):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        attend(*qkv(), mask=mask)


def test_a_fully_masked_row_with_is_causal_does_not_warn():
    q, k, v = qkv()
    mask = torch.ones(2, 3, 5, dtype=torch.bool)
    mask[:, 0] = False  # the first query sees nothing; the others see their keys
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = attend(q, k, v, mask=mask, is_causal=True, need_weights=True)
    assert torch.equal(out.weights[:, 0], torch.zeros(2, 5))


@pytest.mark.parametrize("value, exc, words", [
    ("abc", TypeError, "must be a positive number, got str 'abc'"),
    (True, TypeError, "got bool True"),
    (0, ValueError, "must be positive, got 0"),
    (float("inf"), ValueError, "must be positive and finite, got inf"),
    (float("nan"), ValueError, "got nan"),
])
def test_check_positive_refuses_non_numbers_zero_and_non_finite(value, exc, words):
    with pytest.raises(exc, match=words.replace("(", r"\(")):
        V.check_positive("width", value)


def test_check_positive_accepts_ints_and_floats():
    V.check_positive("width", 3)
    V.check_positive("lr", 1e-3)


def test_option_types_follow_the_config_annotations():
    ok = {"decoder_dim": 512, "attention_hidden": None, "dropout": 0, "input_feeding": True,
          "attention_options": {"window": 4}, "order": "bahdanau"}
    V.check_option_types("rnn model option", ok, Seq2SeqConfig)  # int | None takes None; float takes an int
    with pytest.raises(TypeError, match="attention_hidden takes int or null, got str 'x'"):
        V.check_option_types("rnn model option", {"attention_hidden": "x"}, Seq2SeqConfig)
    with pytest.raises(TypeError, match="decoder_dim takes int, got bool True"):
        V.check_option_types("rnn model option", {"decoder_dim": True}, Seq2SeqConfig)
    V.check_option_types("rnn model option", {"no_such_key": 1}, Seq2SeqConfig)  # keys are check_choice's job


def test_token_ids_accept_any_integer_dtype_and_empty_batches():
    V.check_token_ids("src", torch.tensor([[0, 9]], dtype=torch.int32), 10)
    V.check_token_ids("src", torch.zeros(0, 3, dtype=torch.long), 10)
    with pytest.raises(TypeError, match="src must hold integer token ids"):
        V.check_token_ids("src", torch.ones(1, 2, dtype=torch.bool), 10)
