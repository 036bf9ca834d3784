"""The core against the papers' equations, written as plain loops in float64."""

import math

import pytest
import torch

from attnzoo import attend
from attnzoo.core.scores import AdditiveScore, CosineScore, DotScore, GeneralScore, ScaledDotScore

torch.manual_seed(0)
B, L, S, D, E = 2, 3, 4, 5, 3


def loop_attention(q, k, v, score_fn, mask=None):
    """out[b, l] = sum_s softmax_s(score(q[b, l], k[b, s])) v[b, s], masked keys left out."""
    out = torch.zeros(q.shape[0], q.shape[1], v.shape[-1], dtype=torch.float64)
    weights = torch.zeros(q.shape[0], q.shape[1], k.shape[1], dtype=torch.float64)
    for b in range(q.shape[0]):
        for l in range(q.shape[1]):
            keep = [s for s in range(k.shape[1]) if mask is None or bool(mask[b, l, s])]
            if not keep:
                continue  # a fully masked row: zero weights, zero output
            e = torch.stack([score_fn(q[b, l], k[b, s]) for s in keep])
            a = torch.exp(e - e.max()) / torch.exp(e - e.max()).sum()
            for a_s, s in zip(a, keep):
                weights[b, l, s] = a_s
                out[b, l] += a_s * v[b, s]
    return out, weights


def make(dq=D, dk=D):
    q = torch.randn(B, L, dq, dtype=torch.float64)
    k = torch.randn(B, S, dk, dtype=torch.float64)
    v = torch.randn(B, S, E, dtype=torch.float64)
    return q, k, v


def score_cases():
    general = GeneralScore(D, 6).double()
    additive = AdditiveScore(D, 6, hidden_dim=7).double()
    cosine = CosineScore(initial_sharpness=3.0).double()
    W = general.key_proj.weight  # (Dq, Dk)
    Wq, Uk, bk, vv = (additive.query_proj.weight, additive.key_proj.weight, additive.key_proj.bias,
                      additive.energy.weight[0])
    beta = 1 + torch.nn.functional.softplus(cosine.sharpness_raw)
    return [
        ("dot", DotScore(), D, lambda qi, kj: sum(qi[d] * kj[d] for d in range(D))),
        ("scaled_dot", ScaledDotScore(), D, lambda qi, kj: sum(qi[d] * kj[d] for d in range(D)) / math.sqrt(D)),
        # Luong "general": h_t^T W_a h_s
        ("general", general, 6, lambda qi, kj: sum(qi[i] * W[i, j] * kj[j] for i in range(D) for j in range(6))),
        # Bahdanau: v^T tanh(W q + U k + b)
        ("additive", additive, 6, lambda qi, kj: sum(
            vv[a] * torch.tanh(sum(Wq[a, i] * qi[i] for i in range(D)) + sum(Uk[a, j] * kj[j] for j in range(6))
                               + bk[a]) for a in range(7))),
        # NTM: beta * cos(q, k)
        ("cosine", cosine, D, lambda qi, kj: beta * (qi @ kj) / (qi.norm() * kj.norm())),
    ]


@pytest.mark.parametrize("case", score_cases(), ids=lambda c: c[0])
def test_score_matches_loop_equation(case):
    name, score, dk, fn = case
    q, k, v = make(D, dk)
    mask = torch.rand(B, L, S) > 0.3
    mask[0, 1] = False  # one fully masked row
    got = attend(q, k, v, score=score, mask=mask, need_weights=True, backend="eager")
    want_out, want_w = loop_attention(q, k, v, fn, mask)
    torch.testing.assert_close(got.weights, want_w, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(got.output, want_out, rtol=1e-10, atol=1e-12)
    assert got.output.dtype == torch.float64


@pytest.mark.parametrize("case", score_cases(), ids=lambda c: c[0])
def test_gradcheck(case):
    name, score, dk, _ = case
    q, k, v = make(D, dk)
    mask = torch.rand(B, L, S) > 0.3
    mask[..., 0] = True
    params = [p for p in score.parameters()]

    def f(q, k, v, *ps):
        return attend(q, k, v, score=score, mask=mask, backend="eager").output

    inputs = [t.requires_grad_() for t in (q, k, v)] + params
    assert torch.autograd.gradcheck(f, inputs, eps=1e-6, atol=1e-7)


def test_four_d_heads_equal_per_head_three_d():
    q, k, v = (torch.randn(2, 3, 4, 5, dtype=torch.float64) for _ in range(3))
    out = attend(q, k, v, backend="eager").output
    for h in range(3):
        torch.testing.assert_close(out[:, h], attend(q[:, h], k[:, h], v[:, h], backend="eager").output)


def test_grouped_query_heads_share_keys():
    q = torch.randn(2, 4, 3, 5, dtype=torch.float64)
    k, v = torch.randn(2, 2, 6, 5, dtype=torch.float64), torch.randn(2, 2, 6, 5, dtype=torch.float64)
    out = attend(q, k, v, backend="eager").output
    # query heads 0,1 use kv head 0; heads 2,3 use kv head 1
    torch.testing.assert_close(out[:, 1], attend(q[:, 1], k[:, 0], v[:, 0]).output)
    torch.testing.assert_close(out[:, 2], attend(q[:, 2], k[:, 1], v[:, 1]).output)


def test_bias_and_score_mod_are_added_to_scores():
    q, k, v = make()
    bias = torch.randn(1, L, S, dtype=torch.float64)

    def score_mod(score, b, h, q_idx, kv_idx):
        return score - 0.5 * (q_idx - kv_idx).abs()

    for offset, expected_offset in ((None, S - L), (0, 0)):  # default: queries are the last L positions
        got = attend(q, k, v, score="dot", bias=bias, score_mod=score_mod, need_weights=True, query_offset=offset)
        rel = -0.5 * (torch.arange(L)[:, None] + expected_offset - torch.arange(S)[None, :]).abs()
        want = torch.softmax(q @ k.transpose(1, 2) + bias + rel, -1)
        torch.testing.assert_close(got.weights, want)


def test_neg_inf_bias_acts_as_mask_and_full_rows_are_zero():
    q, k, v = make()
    bias = torch.zeros(B, L, S, dtype=torch.float64)
    bias[:, 0, :] = float("-inf")  # the nn.MultiheadAttention float-mask style, a whole row blocked
    bias[:, 1, 2] = float("-inf")
    out = attend(q, k, v, bias=bias, need_weights=True)
    assert torch.isfinite(out.output).all()
    assert (out.weights[:, 0] == 0).all() and (out.output[:, 0] == 0).all()
    assert (out.weights[:, 1, 2] == 0).all()


def test_is_causal_is_bottom_right_aligned():
    q = torch.randn(1, 2, 4, dtype=torch.float64)
    k, v = torch.randn(1, 5, 4, dtype=torch.float64), torch.randn(1, 5, 4, dtype=torch.float64)
    w = attend(q, k, v, is_causal=True, need_weights=True).weights[0]
    # queries are the last two positions (3 and 4): query 0 sees keys 0..3, query 1 all five
    assert (w[0, 4] == 0) and (w[0, :4] > 0).all() and (w[1] > 0).all()
