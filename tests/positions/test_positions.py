"""Positions: each against its paper, and each in its slot on every backend."""

import math

import pytest
import torch

from attnzoo import attend
from attnzoo.positions import (
    ALiBi,
    LearnedPositions,
    RelativePositions,
    RotaryPositions,
    SinusoidalPositions,
    T5RelativeBias,
    alibi_slopes,
    apply_rope,
    t5_bucket,
)


def test_alibi_slopes_equal_the_papers_for_8_and_12_heads():
    assert alibi_slopes(8).tolist() == pytest.approx([2 ** -i for i in range(1, 9)])
    # 12 heads: the 8-head slopes, then every other slope of the 16-head sequence 2^-0.5, 2^-1.5, ...
    want = [2 ** -i for i in range(1, 9)] + [2 ** -0.5, 2 ** -1.5, 2 ** -2.5, 2 ** -3.5]
    assert alibi_slopes(12).tolist() == pytest.approx(want)


def test_alibi_adds_minus_slope_times_distance():
    q, k, v = (torch.randn(1, 2, 4, 8, dtype=torch.float64) for _ in range(3))
    w = attend(q, k, v, score_mod=ALiBi(2), is_causal=True, need_weights=True).weights
    m = alibi_slopes(2).double()
    i, j = torch.arange(4)[:, None], torch.arange(4)[None, :]
    scores = q @ k.transpose(-1, -2) / math.sqrt(8) - m[None, :, None, None] * (i - j)
    want = torch.softmax(scores.masked_fill(j > i, float("-inf")), -1)
    torch.testing.assert_close(w, want)


def test_rope_score_depends_only_on_the_offset():
    torch.manual_seed(0)
    q, k = torch.randn(16, dtype=torch.float64), torch.randn(16, dtype=torch.float64)

    def rotated_dot(m, n):
        qm = apply_rope(q[None, :], torch.tensor([m]))[0]
        kn = apply_rope(k[None, :], torch.tensor([n]))[0]
        return float(qm @ kn)

    for offset in (0, 1, 5, -3):
        values = [rotated_dot(m, m + offset) for m in (0, 3, 17, 100)]
        assert max(values) - min(values) < 1e-9
    assert abs(rotated_dot(0, 0) - float(q @ k)) < 1e-12  # position 0 is the identity
    assert abs(rotated_dot(0, 1) - rotated_dot(0, 2)) > 1e-6


def test_rope_matches_the_papers_rotation_matrix():
    torch.manual_seed(0)
    x = torch.randn(3, 6, dtype=torch.float64)
    pos = torch.tensor([0, 2, 7])
    got = apply_rope(x, pos)
    for row, p in enumerate(pos.tolist()):
        R = torch.zeros(6, 6, dtype=torch.float64)
        for i in range(3):
            th = p * 10000 ** (-2 * i / 6)
            R[2 * i: 2 * i + 2, 2 * i: 2 * i + 2] = torch.tensor([[math.cos(th), -math.sin(th)],
                                                                  [math.sin(th), math.cos(th)]])
        torch.testing.assert_close(got[row], R @ x[row])
    assert torch.allclose(got.norm(dim=-1), x.norm(dim=-1))


def test_sinusoidal_matches_the_formula_and_learned_is_trainable():
    pe = SinusoidalPositions(8, max_len=50)
    x = torch.zeros(1, 50, 8)
    table = pe(x)[0]
    for p in (0, 7, 49):
        for i in range(4):
            assert table[p, 2 * i].item() == pytest.approx(math.sin(p / 10000 ** (2 * i / 8)), abs=1e-6)
            assert table[p, 2 * i + 1].item() == pytest.approx(math.cos(p / 10000 ** (2 * i / 8)), abs=1e-6)
    torch.testing.assert_close(pe(torch.zeros(1, 3, 8), offset=5)[0], table[5:8])
    learned = LearnedPositions(8, max_len=10)
    assert learned.weight.requires_grad
    with pytest.raises(ValueError, match="exceed max_len=10"):
        learned(torch.zeros(1, 4, 8), offset=8)


def test_t5_buckets_exact_near_logarithmic_far():
    rel = torch.arange(-200, 201)
    b = t5_bucket(rel, num_buckets=32, max_distance=128, bidirectional=True)
    assert b.min() >= 0 and b.max() <= 31
    assert len(set(b[(rel.abs() < 8)].tolist())) == 15  # exact buckets for |d| < 8, each side + zero
    assert b[rel == -128].item() == b[rel == -200].item() == 15  # the far bucket, keys before the query
    assert b[rel == 200].item() == 31
    # monotone in distance on each side
    left = b[(rel <= 0)].flip(0)
    assert (left[1:] >= left[:-1]).all()
    uni = t5_bucket(rel, bidirectional=False)
    assert (uni[rel > 0] == 0).all()


def test_shaw_relative_bias_matches_the_loop():
    torch.manual_seed(0)
    rel = RelativePositions(head_dim=4, max_distance=2).double()
    q = torch.randn(1, 1, 3, 4, dtype=torch.float64)
    with torch.no_grad():
        bias = rel.bias(q, key_len=5, query_offset=2)
    for i in range(3):
        for j in range(5):
            a = rel.table.detach()[min(max(j - (i + 2), -2), 2) + 2]
            assert bias[0, 0, i, j].item() == pytest.approx(float(q[0, 0, i] @ a) / 2)


@pytest.mark.parametrize("mod", [ALiBi(4), ALiBi(4, causal=False), T5RelativeBias(4)], ids=repr)
def test_score_mod_positions_run_on_every_backend(mod):
    torch.manual_seed(0)
    if isinstance(mod, T5RelativeBias):
        torch.nn.init.normal_(mod.bias.weight)
    q, k, v = (torch.randn(2, 4, 6, 8, requires_grad=True) for _ in range(3))
    outs = []
    for backend in ("eager", "sdpa"):
        out = attend(q, k, v, score_mod=mod, backend=backend).output
        outs.append((out, torch.autograd.grad(out.sum(), [q, k, v])))
    torch.testing.assert_close(outs[0][0], outs[1][0], atol=1e-5, rtol=1e-5)
    for a, b in zip(outs[0][1], outs[1][1]):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_rotary_module_rotates_q_and_k_at_their_offsets():
    rope = RotaryPositions(8)
    q, k = torch.randn(1, 2, 3, 8), torch.randn(1, 2, 5, 8)
    rq, rk = rope(q, k, q_offset=2, k_offset=0)
    torch.testing.assert_close(rq, apply_rope(q, torch.arange(2, 5)))
    torch.testing.assert_close(rk, apply_rope(k, torch.arange(5)))
