"""core/dropout.py: the CPU mask drawn four elements per random number.

out = x * keep / rate, keep ~ Bernoulli(rate), rate = 1 - round(32768 p) / 32768.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from attnzoo.core import Dropout, dropout, keep_mask
from attnzoo.core.dropout import LEVEL_BITS

N = 1 << 20  # elements of the statistical checks: a keep rate's standard error is under 0.0005


def sigma(rate: float, n: int) -> float:
    return math.sqrt(rate * (1 - rate) / n)


@pytest.mark.parametrize("p", [0.05, 0.1, 0.3, 0.5, 0.9])
def test_keep_rate_is_p_rounded_to_the_draws_resolution(p):
    torch.manual_seed(0)
    keep, rate = keep_mask((N,), p)
    assert keep.dtype == torch.bool and keep.shape == (N,)
    assert rate == 1 - round(p * 2 ** LEVEL_BITS) / 2 ** LEVEL_BITS
    assert abs(rate - (1 - p)) <= 2 ** -(LEVEL_BITS + 1)
    assert abs(keep.float().mean().item() - rate) < 5 * sigma(rate, N)


def test_every_lane_of_a_draw_has_the_same_rate_and_lanes_are_independent():
    """Four elements share one 64-bit draw (the top lane without its sign bit): none may be biased or tied."""
    torch.manual_seed(1)
    p = 0.3
    keep, rate = keep_mask((N // 4, 4), p)  # column j = lane j of each draw
    k = keep.float()
    for lane in range(4):
        assert abs(k[:, lane].mean().item() - rate) < 5 * sigma(rate, N // 4), f"lane {lane}"
    centred = k - k.mean(dim=0)
    corr = (centred.T @ centred) / (N // 4) / (k.std(dim=0)[:, None] * k.std(dim=0)[None, :])  # (4, 4)
    off_diagonal = corr[~torch.eye(4, dtype=torch.bool)]
    assert off_diagonal.abs().max().item() < 5 / math.sqrt(N // 4)
    # consecutive draws are independent too (lane 3 of one draw against lane 0 of the next)
    a, b = k[:-1, 3], k[1:, 0]
    r = ((a - a.mean()) * (b - b.mean())).mean() / (a.std() * b.std())
    assert abs(r.item()) < 5 / math.sqrt(N // 4)


def test_output_is_the_equation_in_float64():
    """out = x * keep / rate, with keep the mask the same seed draws."""
    x = torch.randn(3, 7, 11, dtype=torch.float64)
    torch.manual_seed(2)
    out = dropout(x, 0.25)
    torch.manual_seed(2)
    keep, rate = keep_mask(x.shape, 0.25)
    expected = torch.where(keep, x / rate, torch.zeros((), dtype=torch.float64))
    torch.testing.assert_close(out, expected, rtol=1e-15, atol=0)


def test_unbiased_on_average():
    torch.manual_seed(3)
    x = torch.full((N,), 2.0)
    out = dropout(x, 0.1)
    rate = 1 - round(0.1 * 2 ** LEVEL_BITS) / 2 ** LEVEL_BITS
    # mean of 2 * keep / rate: standard error 2 * sigma / rate
    assert abs(out.mean().item() - 2.0) < 5 * 2 * sigma(rate, N) / rate


def test_keep_rate_matches_torch_dropout():
    torch.manual_seed(4)
    ours = (dropout(torch.ones(N), 0.2) != 0).float().mean().item()
    theirs = (F.dropout(torch.ones(N), 0.2) != 0).float().mean().item()
    assert abs(ours - theirs) < 5 * math.sqrt(2) * sigma(0.8, N)


def test_gradcheck():
    x = torch.randn(4, 6, dtype=torch.float64, requires_grad=True)

    def f(t):
        torch.manual_seed(5)  # the same mask at every evaluation
        return dropout(t, 0.4)

    assert torch.autograd.gradcheck(f, (x,))


def test_gradient_is_the_scaled_mask():
    x = torch.randn(5, 8, requires_grad=True)
    torch.manual_seed(6)
    dropout(x, 0.5).sum().backward()
    torch.manual_seed(6)
    keep, rate = keep_mask(x.shape, 0.5)
    assert torch.equal(x.grad, keep.float() / rate)


def test_reproducible_under_a_seed_and_new_at_each_call():
    x = torch.ones(64, 64)
    torch.manual_seed(7)
    a, b = dropout(x, 0.5), dropout(x, 0.5)
    torch.manual_seed(7)
    assert torch.equal(dropout(x, 0.5), a)
    assert not torch.equal(a, b)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16, torch.float64])
def test_keeps_dtype_and_shape(dtype):
    x = torch.randn(2, 3, 5).to(dtype)
    out = dropout(x, 0.5)
    assert out.dtype == dtype and out.shape == x.shape
    kept = out != 0
    torch.testing.assert_close(out[kept], (x[kept].double() * 2).to(dtype), rtol=0, atol=0)


def test_identity_when_off_and_zeros_at_one():
    x = torch.randn(3, 4)
    assert dropout(x, 0.5, training=False) is x
    assert dropout(x, 0.0) is x
    assert torch.equal(dropout(x, 1.0), torch.zeros_like(x))


def test_module_is_an_nn_dropout_and_follows_train_and_eval():
    m = Dropout(0.5)
    assert isinstance(m, nn.Dropout) and m.p == 0.5
    x = torch.ones(32, 32)
    assert torch.equal(m.eval()(x), x)
    out = m.train()(x)
    assert set(out.unique().tolist()) <= {0.0, 2.0} and 0 < (out == 0).sum() < x.numel()


@pytest.mark.parametrize("p", [-0.1, 1.5, float("nan")])
def test_bad_rate_is_refused_naming_it(p):
    with pytest.raises(ValueError, match=r"dropout: p must be a probability in \[0, 1\]"):
        dropout(torch.ones(2), p)
    with pytest.raises(ValueError, match=r"Dropout: p must be a probability in \[0, 1\]"):
        Dropout(p)
