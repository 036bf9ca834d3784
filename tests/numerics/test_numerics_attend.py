"""Numerics of the functional core ``attnzoo.attend``, on every backend that can run each case.

Logits are built exactly (one feature, q = +-100, k = +-100 with the plain
dot score: logits of exactly +-1e4), so the expected weights are known:
a logit of 1e4 against -1e4 takes all the weight; equal logits (equal keys)
share it evenly; one key takes exactly all of it; zero keys and fully masked
rows give a zero output. Softmax runs in float32 whatever the input dtype, so
float32 weights sum to one to float32 precision even for bfloat16 inputs.
"""

import pytest
import torch
from numerics_cases import assert_finite, dtype_cases, tol, weights_dtype

from attnzoo import attend
from attnzoo.core.scores import AdditiveScore, CosineScore, GeneralScore

DTYPES = dtype_cases()
BACKENDS = ["eager", "sdpa", "chunked", "auto"]


def scores_for(name, D):
    torch.manual_seed(0)
    return {"dot": "dot", "scaled_dot": "scaled_dot", "general": GeneralScore(D, D),
            "additive": AdditiveScore(D, D, 6), "cosine": CosineScore()}[name]


def can_run(backend, score, need_weights=False, normalize="softmax"):
    if backend in ("sdpa", "chunked") and (need_weights or normalize != "softmax"):
        return False
    if backend == "sdpa" and isinstance(score, AdditiveScore):
        return False
    return True


def call(q, k, v, backend, score="dot", **kw):
    """attend with fresh leaves; returns (output, weights or None, (q, k, v) leaves)."""
    q, k, v = (x.detach().clone().requires_grad_() for x in (q, k, v))
    if isinstance(score, torch.nn.Module):
        score = score.to(device=q.device, dtype=q.dtype)
        score.zero_grad()
    out = attend(q, k, v, score=score, backend=backend, **kw)
    return out.output, out.weights, (q, k, v)


def backward_finite(output, weights, leaves, score=None):
    g = torch.Generator().manual_seed(5)
    loss = (output.float() * torch.randn(output.shape, generator=g).to(output.device)).sum()
    if weights is not None:
        loss = loss + (weights.float() * torch.randn(weights.shape, generator=g).to(weights.device)).sum()
    loss.backward()
    grads = {n: x.grad for n, x in zip("qkv", leaves) if x.grad is not None}
    if isinstance(score, torch.nn.Module):
        grads.update({n: p.grad for n, p in score.named_parameters() if p.grad is not None})
    assert grads, "no gradient"
    assert_finite(grads, "gradient")
    return grads


def exact_logits(dtype, device, logits_row):
    """q (B=1, H=1, L=1, D=1) = 100 and k = logits / 100: dot scores are exactly ``logits_row``."""
    q = torch.full((1, 1, 1, 1), 100.0, dtype=dtype, device=device)
    k = (torch.tensor(logits_row, dtype=torch.float64) / 100).view(1, 1, -1, 1).to(device=device, dtype=dtype)
    v = torch.arange(1.0, len(logits_row) + 1, dtype=dtype, device=device).view(1, 1, -1, 1) \
        * torch.tensor([1.0, -2.0], dtype=dtype, device=device)  # (1, 1, S, 2)
    return q, k, v


# --------------------------------------------------------------------------- dtypes, every score and backend
@pytest.mark.parametrize("device,dtype", DTYPES)
@pytest.mark.parametrize("score_name", ["dot", "scaled_dot", "general", "additive", "cosine"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_dtypes_finite_and_close_to_eager(backend, score_name, device, dtype):
    g = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(2, 2, 3, 4, generator=g).to(device=device, dtype=dtype),
               torch.randn(2, 2, 5, 4, generator=g).to(device=device, dtype=dtype),
               torch.randn(2, 2, 5, 3, generator=g).to(device=device, dtype=dtype))
    mask = torch.rand(2, 1, 3, 5, generator=g) < 0.7
    mask[0, 0, 1] = False  # a fully masked row
    mask = mask.to(device)
    score = scores_for(score_name, 4)
    if not can_run(backend, score):
        with pytest.raises(ValueError, match="cannot run"):
            attend(q, k, v, score=score, mask=mask, backend=backend)
        return
    out, _, leaves = call(q, k, v, backend, score, mask=mask)
    assert out.dtype == dtype and torch.isfinite(out).all()
    assert torch.equal(out[0, :, 1], torch.zeros_like(out[0, :, 1]))
    backward_finite(out, None, leaves, score)
    assert torch.equal(leaves[0].grad[0, :, 1], torch.zeros_like(leaves[0].grad[0, :, 1]))
    ref, w, _ = call(q, k, v, "eager", score, mask=mask, need_weights=True)
    assert w.dtype == weights_dtype(dtype)
    torch.testing.assert_close(out, ref, **tol(dtype))


@pytest.mark.parametrize("device,dtype", [p for p in DTYPES if "float64" not in p.id])
def test_softmax_is_float32_even_for_low_precision_inputs(device, dtype):
    g = torch.Generator().manual_seed(2)
    q, k, v = (torch.randn(1, 1, 4, 8, generator=g).to(device=device, dtype=dtype) for _ in range(3))
    _, w, _ = call(q, k, v, "eager", "scaled_dot", need_weights=True)
    assert w.dtype == torch.float32
    # float32 sums are within a few float32 ulps of 1; a bfloat16/float16 softmax would be off by ~1e-3
    assert (w.sum(-1) - 1).abs().max() < 1e-6


# --------------------------------------------------------------------------- exact +-1e4 logits
@pytest.mark.parametrize("device,dtype", DTYPES)
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("normalize", ["softmax", "sparsemax"])
def test_logits_of_plus_and_minus_1e4(backend, normalize, device, dtype):
    if not can_run(backend, "dot", normalize=normalize):
        return
    cases = [([1e4, -1e4, -1e4], [1.0, 0.0, 0.0]),  # one winner takes all
             ([-1e4, 1e4], [0.0, 1.0]),
             ([1e4, 1e4], [0.5, 0.5]),  # huge but equal: evenly shared, no overflow
             ([-1e4, -1e4, -1e4, -1e4], [0.25] * 4)]  # hugely negative but equal: no underflow to 0/0
    for logits, want_w in cases:
        q, k, v = exact_logits(dtype, device, logits)
        want_w = torch.tensor(want_w, dtype=torch.float64, device=device)
        want = (want_w[:, None] * v[0, 0].double()).sum(0).to(dtype)
        need = backend == "eager"
        out, w, leaves = call(q, k, v, backend, "dot", normalize=normalize, need_weights=need)
        torch.testing.assert_close(out[0, 0, 0], want, **tol(dtype))
        if need:
            torch.testing.assert_close(w[0, 0, 0].double(), want_w, atol=1e-6, rtol=0)
        backward_finite(out, w, leaves)


# --------------------------------------------------------------------------- equal keys, one key, no key
@pytest.mark.parametrize("device,dtype", DTYPES)
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("score_name", ["scaled_dot", "additive", "cosine"])
def test_equal_keys_give_uniform_weights(backend, score_name, device, dtype):
    score = scores_for(score_name, 4)
    g = torch.Generator().manual_seed(3)
    q = torch.randn(2, 2, 3, 4, generator=g).to(device=device, dtype=dtype)
    k = torch.randn(2, 2, 1, 4, generator=g).expand(2, 2, 5, 4).to(device=device, dtype=dtype)
    v = torch.randn(2, 2, 5, 3, generator=g).to(device=device, dtype=dtype)
    if not can_run(backend, score):
        return
    out, _, leaves = call(q, k, v, backend, score)
    want = v.double().mean(-2, keepdim=True).expand(2, 2, 3, 3).to(dtype)
    torch.testing.assert_close(out, want, **tol(dtype))
    backward_finite(out, None, leaves, score)
    if backend == "eager":
        _, w, _ = call(q, k, v, backend, score, need_weights=True)
        torch.testing.assert_close(w, torch.full_like(w, 0.2), **tol(dtype))


@pytest.mark.parametrize("device,dtype", DTYPES)
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("normalize", ["softmax", "sparsemax"])
def test_a_single_key_gets_weight_exactly_one(backend, normalize, device, dtype):
    if not can_run(backend, "scaled_dot", normalize=normalize):
        return
    g = torch.Generator().manual_seed(4)
    q = (1e3 * torch.randn(2, 2, 3, 4, generator=g)).to(device=device, dtype=dtype)  # large logits, too
    k, v = (torch.randn(2, 2, 1, 4, generator=g).to(device=device, dtype=dtype) for _ in range(2))
    out, _, leaves = call(q, k, v, backend, "scaled_dot", normalize=normalize)
    torch.testing.assert_close(out, v.expand_as(out), **tol(dtype))
    backward_finite(out, None, leaves)
    if backend == "eager":
        out, w, _ = call(q, k, v, backend, "scaled_dot", normalize=normalize, need_weights=True)
        assert torch.equal(w, torch.ones_like(w)) and torch.equal(out, v.expand_as(out))


@pytest.mark.parametrize("device,dtype", DTYPES)
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("normalize", ["softmax", "sparsemax"])
def test_zero_keys_give_a_zero_output(backend, normalize, device, dtype):
    """S = 0 is a fully masked row with no columns: zero output, (B, H, L, 0) weights."""
    if not can_run(backend, "scaled_dot", normalize=normalize):
        return
    q = torch.randn(2, 2, 3, 4).to(device=device, dtype=dtype)
    k = torch.randn(2, 2, 0, 4).to(device=device, dtype=dtype)
    v = torch.randn(2, 2, 0, 5).to(device=device, dtype=dtype)
    need = backend == "eager"
    out, w, leaves = call(q, k, v, backend, "scaled_dot", normalize=normalize, need_weights=need)
    assert out.shape == (2, 2, 3, 5) and torch.equal(out, torch.zeros_like(out))
    if need:
        assert w.shape == (2, 2, 3, 0) and w.dtype == weights_dtype(dtype)
    backward_finite(out, w, leaves)


# --------------------------------------------------------------------------- fully masked rows, three ways
def masked_three_ways(device):
    mask = torch.ones(2, 1, 4, 5, dtype=torch.bool, device=device)
    mask[1, 0, 2] = False  # a boolean mask that blocks a whole row
    bias = torch.zeros(2, 1, 4, 5, device=device)
    bias[0, 0, 0] = float("-inf")  # an additive -inf mask that blocks a whole row
    return mask, bias


@pytest.mark.parametrize("device,dtype", DTYPES)
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("normalize", ["softmax", "sparsemax"])
def test_fully_masked_rows_are_zero_with_finite_gradients(backend, normalize, device, dtype):
    if not can_run(backend, "scaled_dot", normalize=normalize):
        return
    g = torch.Generator().manual_seed(6)
    q = (100 * torch.randn(2, 2, 4, 4, generator=g)).to(device=device, dtype=dtype)
    k = (100 * torch.randn(2, 2, 5, 4, generator=g)).to(device=device, dtype=dtype)  # logits ~ 1e4
    v = torch.randn(2, 2, 5, 3, generator=g).to(device=device, dtype=dtype)
    mask, bias = masked_three_ways(device)
    need = backend == "eager"
    out, w, leaves = call(q, k, v, backend, "scaled_dot", normalize=normalize, mask=mask, bias=bias.to(dtype),
                          need_weights=need)
    dead = [(1, slice(None), 2), (0, slice(None), 0)]
    for row in dead:
        assert torch.equal(out[row], torch.zeros_like(out[row])), f"row {row}: {out[row]}"
        if need:
            assert torch.equal(w[row], torch.zeros_like(w[row]))
    assert torch.isfinite(out).all()
    backward_finite(out, w, leaves)
    for row in dead:
        assert torch.equal(leaves[0].grad[row], torch.zeros_like(leaves[0].grad[row]))

    # causal with more queries than keys (bottom-right aligned): the first L - S queries see no key
    q2 = q[:, :, :4]
    k2, v2 = k[:, :, :2], v[:, :, :2]
    out, w, leaves = call(q2, k2, v2, backend, "scaled_dot", normalize=normalize, is_causal=True, need_weights=need)
    assert torch.equal(out[:, :, :2], torch.zeros_like(out[:, :, :2]))
    assert torch.isfinite(out).all() and not torch.equal(out[:, :, 2:], torch.zeros_like(out[:, :, 2:]))
    backward_finite(out, w, leaves)
