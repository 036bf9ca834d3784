"""The tiled backend (weights returned, by blocks of query rows) against the eager reference."""

import pytest
import torch

from attnzoo import attend
from attnzoo.core.attend import choose_backend
from attnzoo.core.scores import AdditiveScore, CosineScore, DotScore, GeneralScore, ScaledDotScore
from attnzoo.positions.alibi import ALiBi
from attnzoo.positions.t5 import T5RelativeBias

B, H, L, S, D, E = 2, 3, 7, 11, 6, 4


def make_score(name):
    torch.manual_seed(0)
    return {"dot": DotScore(), "scaled_dot": ScaledDotScore(), "general": GeneralScore(D, D).double(),
            "additive": AdditiveScore(D, D, 5).double(), "cosine": CosineScore().double()}[name]


def inputs(seed=0, L=L, S=S, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(B, H, n, d, dtype=dtype, generator=g).requires_grad_()
            for n, d in ((L, D), (S, D), (S, E))]


def run(backend, q, k, v, params=(), weight_loss=True, **kw):
    """Output, weights and every gradient of a loss on the output (and on the weights, if asked)."""
    leaves = [q, k, v, kw.get("bias"), *params]
    for t in leaves:
        if t is not None:
            t.grad = None
    extra = {"block_size": kw.pop("block_size")} if "block_size" in kw and backend == "tiled" else {}
    kw.pop("block_size", None)
    out, w = attend(q, k, v, backend=backend, need_weights=True, **kw, **extra)
    loss = (out * torch.linspace(-2, 1, out.shape[-1], dtype=out.dtype)).sum()
    if weight_loss:  # e.g. a guided-attention loss: gradients flow through the returned weights too
        loss = loss + (w * torch.linspace(0, 1, w.shape[-1], dtype=w.dtype)).pow(2).sum()
    loss.backward()
    return out.detach(), w.detach(), [None if t is None or t.grad is None else t.grad.clone() for t in leaves]


def assert_same(a, b):
    (ao, aw, ag), (bo, bw, bg) = a, b
    torch.testing.assert_close(bo, ao)
    torch.testing.assert_close(bw, aw)
    for x, y in zip(ag, bg):
        assert (x is None) == (y is None)
        if x is not None:
            torch.testing.assert_close(y, x)


@pytest.mark.parametrize("name", ["dot", "scaled_dot", "general", "additive", "cosine"])
@pytest.mark.parametrize("block_size", [1, 3, 64])
@pytest.mark.parametrize("weight_loss", [False, True])
def test_every_score_equals_eager_with_masks_and_gradients(name, block_size, weight_loss):
    score = make_score(name)
    q, k, v = inputs()
    mask = torch.rand(B, 1, L, S, generator=torch.Generator().manual_seed(3)) < 0.7
    mask[0, 0, 1] = False  # a fully masked row: zero weights, zero output, no NaN in any gradient
    params = list(score.parameters())
    eager = run("eager", q, k, v, params, weight_loss, score=score, mask=mask)
    tiled = run("tiled", q, k, v, params, weight_loss, score=score, mask=mask, block_size=block_size)
    assert_same(eager, tiled)
    assert (tiled[1][0, :, 1] == 0).all() and (tiled[0][0, :, 1] == 0).all()
    assert all(g is None or torch.isfinite(g).all() for g in tiled[2])


@pytest.mark.parametrize("L_q", [1, 4, 11])
def test_causal_with_a_kv_cache_offset_equals_eager(L_q):
    q, k, v = inputs(L=L_q)
    assert_same(run("eager", q, k, v, is_causal=True), run("tiled", q, k, v, is_causal=True, block_size=2))


@pytest.mark.parametrize("shape", [(B, H, L, S), (1, H, 1, S), (L, S), (B, 1, L, 1)])
def test_bias_of_any_broadcastable_shape_gets_its_gradient(shape):
    q, k, v = inputs()
    bias = torch.randn(*shape, dtype=torch.float64, requires_grad=True)
    eager, tiled = run("eager", q, k, v, bias=bias), run("tiled", q, k, v, bias=bias, block_size=3)
    assert_same(eager, tiled)
    assert tiled[2][3].shape == bias.shape


def test_alibi_and_learned_t5_score_mods_equal_eager():
    q, k, v = inputs(L=S)
    alibi = ALiBi(H)
    assert_same(run("eager", q, k, v, score_mod=alibi, is_causal=True),
                run("tiled", q, k, v, score_mod=alibi, is_causal=True, block_size=4))
    t5 = T5RelativeBias(H, num_buckets=8, max_distance=16).double()
    eager = run("eager", q, k, v, params=list(t5.parameters()), score_mod=t5)
    tiled = run("tiled", q, k, v, params=list(t5.parameters()), score_mod=t5, block_size=4)
    assert_same(eager, tiled)
    assert tiled[2][-1].abs().sum() > 0  # the bias table learns


def test_low_precision_inputs_keep_float32_weights_close_to_eager():
    q, k, v = (t.detach().float() for t in inputs())
    for dtype, tol in ((torch.float32, 1e-5), (torch.bfloat16, 2e-2)):
        qq, kk, vv = (t.detach().to(dtype).requires_grad_() for t in (q, k, v))
        eo, ew, eg = run("eager", qq, kk, vv)
        to, tw, tg = run("tiled", qq, kk, vv, block_size=3)
        assert tw.dtype == ew.dtype == torch.float32 and to.dtype == dtype
        torch.testing.assert_close(tw, ew, atol=tol, rtol=tol)
        torch.testing.assert_close(to.float(), eo.float(), atol=tol, rtol=tol)
        for a, b in zip(eg[:3], tg[:3]):
            torch.testing.assert_close(b.float(), a.float(), atol=5 * tol, rtol=5 * tol)


def test_gradcheck_through_output_and_weights():
    q, k, v = inputs(L=3, S=4)
    mask = torch.tensor([[True, True, False, True]])

    def f(q, k, v):
        out, w = attend(q, k, v, backend="tiled", need_weights=True, mask=mask, block_size=2)
        return out, w

    assert torch.autograd.gradcheck(f, (q, k, v))


def test_auto_returns_weights_through_tiled_for_large_calls_and_eager_for_small():
    score = ScaledDotScore()
    assert choose_backend("auto", score, "softmax", True, None, grid=(1, 8, 256, 256)) == "tiled"
    assert choose_backend("auto", score, "softmax", True, None, grid=(64, 1, 1, 40)) == "eager"
    assert choose_backend("auto", score, "sparsemax", True, None, grid=(1, 8, 256, 256)) == "eager"
    with pytest.raises(ValueError, match="backend='tiled' cannot run this call: dropout_p"):
        choose_backend("tiled", score, "softmax", True, None, dropout_p=0.1)
    with pytest.raises(ValueError, match="normalize='sparsemax'"):
        choose_backend("tiled", score, "sparsemax", True, None)


def test_tiled_stores_no_score_matrix_beyond_the_weights():
    """Saved for backward: inputs and the returned weights only (no softmax input, no scores)."""
    q, k, v = (torch.randn(1, 2, 256, 16, requires_grad=True) for _ in range(3))
    saved = []

    def pack(t):
        saved.append(t)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out, w = attend(q, k, v, backend="tiled", need_weights=True, block_size=32)
    big = [t for t in saved if t.numel() >= 256 * 256]
    assert len(big) == 1 and big[0].data_ptr() == w.data_ptr()


@pytest.mark.parametrize("whole", [True, False])
def test_whole_and_blockwise_forwards_agree(monkeypatch, whole):
    """The plain dot product's forward runs as one in-place pass or by row blocks: same results."""
    from attnzoo.core import tiled

    monkeypatch.setattr(tiled, "WHOLE_FORWARD", whole)
    q, k, v = inputs(L=5)
    mask = torch.rand(B, 1, 5, S, generator=torch.Generator().manual_seed(4)) < 0.6
    mask[1, 0, 2] = False
    bias = torch.randn(1, H, 5, S, dtype=torch.float64, requires_grad=True)
    for kw in (dict(mask=mask, bias=bias), dict(is_causal=True), dict(mask=mask, is_causal=True)):
        assert_same(run("eager", q, k, v, **kw), run("tiled", q, k, v, block_size=2, **kw))
