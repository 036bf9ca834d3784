"""The additive score's tiled path equals the plain expression and never holds a (B, L, S, A) tensor."""

import pytest
import torch

from attnzoo import attend
from attnzoo.core import additive
from attnzoo.core.scores import AdditiveScore


def pair(blockwise_kw=None, dtype=torch.float64, A=7):
    torch.manual_seed(0)
    plain = AdditiveScore(5, 6, A, blockwise=False).to(dtype)
    tiled = AdditiveScore(5, 6, A, blockwise=True).to(dtype)
    tiled.load_state_dict(plain.state_dict())
    return plain, tiled


@pytest.mark.parametrize("lead_q, lead_k, L, S", [((2,), (2,), 9, 13), ((2, 3), (2, 1), 1, 70), ((1,), (1,), 70, 3)])
def test_tiles_equal_the_plain_expression_in_value_and_every_gradient(monkeypatch, lead_q, lead_k, L, S):
    monkeypatch.setattr(additive, "TILE_ELEMENTS", 64)  # many tiles, ragged edges
    plain, tiled = pair()
    g = torch.Generator().manual_seed(1)
    q = torch.randn(*lead_q, L, 5, dtype=torch.float64, generator=g, requires_grad=True)
    k = torch.randn(*lead_k, S, 6, dtype=torch.float64, generator=g, requires_grad=True)
    results = []
    for score in (plain, tiled):
        q.grad = k.grad = None
        score.zero_grad()
        e = score(q, k)  # projections, then compare
        (e * torch.randn(e.shape, generator=torch.Generator().manual_seed(2), dtype=e.dtype)).sum().backward()
        results.append([e.detach(), q.grad.clone(), k.grad.clone()] + [p.grad.clone() for p in score.parameters()])
    for a, b in zip(*results):
        torch.testing.assert_close(b, a)


def test_gradcheck_of_the_tiles(monkeypatch):
    monkeypatch.setattr(additive, "TILE_ELEMENTS", 16)
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(*s, dtype=torch.float64, generator=g, requires_grad=True)
               for s in ((2, 3, 4), (2, 5, 4), (4,)))
    assert torch.autograd.gradcheck(additive.additive_scores, (q, k, v))


def test_auto_switches_to_tiles_for_large_sums_and_keeps_no_tile_for_backward(monkeypatch):
    torch.manual_seed(0)
    score = AdditiveScore(16, 16, 32)
    q, k = torch.randn(2, 64, 16, requires_grad=True), torch.randn(2, 48, 16, requires_grad=True)
    monkeypatch.setattr(additive, "BLOCKWISE_ELEMENTS", 2 * 64 * 48 * 32)  # exactly this size: tiles
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        out = attend(q, k, k, score=score).output
    assert max(t.numel() for t in saved) < 2 * 64 * 48 * 32 // 8  # nothing near the (B, L, S, A) sum
    monkeypatch.setattr(additive, "BLOCKWISE_ELEMENTS", 2 * 64 * 48 * 32 + 1)  # one more: the plain path
    saved.clear()
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        plain = attend(q, k, k, score=score).output
    assert max(t.numel() for t in saved) >= 2 * 64 * 48 * 32  # the plain path keeps its tanh
    torch.testing.assert_close(out, plain, atol=1e-5, rtol=1e-5)


def test_bfloat16_tiles_stay_close_to_float32():
    plain, tiled = pair(dtype=torch.float32)
    q, k = torch.randn(2, 20, 5), torch.randn(2, 30, 6)
    ref = plain(q, k)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = tiled(q, k)
    torch.testing.assert_close(low.float(), ref, atol=5e-2, rtol=5e-2)
