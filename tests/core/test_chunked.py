"""The chunked backend against the eager reference: outputs, every gradient, memory."""

import importlib

import pytest
import torch
from torch import nn

from attnzoo import attend
from attnzoo.core.attend import choose_backend
from attnzoo.core.scores import AdditiveScore, CosineScore, DotScore, GeneralScore, ScaledDotScore
from attnzoo.positions.alibi import ALiBi
from attnzoo.positions.t5 import T5RelativeBias

attend_module = importlib.import_module("attnzoo.core.attend")  # the module (attnzoo.core.attend is the function)
budget_module = importlib.import_module("attnzoo.core.budget")
B, H, L, S, D, E = 2, 3, 5, 11, 6, 4


def scores():
    torch.manual_seed(0)
    return {"dot": DotScore(), "scaled_dot": ScaledDotScore(), "general": GeneralScore(D, D).double(),
            "additive": AdditiveScore(D, D, 7).double(), "cosine": CosineScore().double()}


def inputs(seed=0, L=L, S=S):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(B, H, L, D, dtype=torch.float64, generator=g, requires_grad=True)
    k = torch.randn(B, H, S, D, dtype=torch.float64, generator=g, requires_grad=True)
    v = torch.randn(B, H, S, E, dtype=torch.float64, generator=g, requires_grad=True)
    return q, k, v


def run_both(q, k, v, block_size, params=(), **kw):
    results = []
    for backend in ("eager", "chunked"):
        for t in (q, k, v, *params, kw.get("bias")):
            if t is not None and t.grad is not None:
                t.grad = None
        extra = {"block_size": block_size} if backend == "chunked" else {}
        out = attend(q, k, v, backend=backend, **kw, **extra).output
        (out * torch.linspace(-2, 1, out.shape[-1], dtype=out.dtype)).sum().backward()
        grads = [None if t is None or t.grad is None else t.grad.clone() for t in (q, k, v, kw.get("bias"), *params)]
        results.append((out.detach(), grads))
    return results


@pytest.mark.parametrize("name", ["dot", "scaled_dot", "general", "additive", "cosine"])
@pytest.mark.parametrize("block_size", [1, 4, 64])
def test_every_score_equals_eager_with_masks_and_gradients(name, block_size):
    score = scores()[name]
    q, k, v = inputs()
    mask = torch.rand(B, 1, L, S, generator=torch.Generator().manual_seed(3)) < 0.7
    mask[0, 0, 1] = False  # a fully masked row: zero output, zero gradient
    (eo, eg), (co, cg) = run_both(q, k, v, block_size, params=list(score.parameters()), score=score, mask=mask)
    torch.testing.assert_close(co, eo)
    assert (co[0, :, 1] == 0).all()
    for a, b in zip(eg, cg):
        assert (a is None) == (b is None)
        if a is not None:
            torch.testing.assert_close(b, a)


@pytest.mark.parametrize("L_q", [1, 5, 11])
def test_causal_with_a_kv_cache_offset_equals_eager(L_q):
    q, k, v = inputs(L=L_q)
    (eo, eg), (co, cg) = run_both(q, k, v, 3, is_causal=True)
    torch.testing.assert_close(co, eo)
    for a, b in zip(eg[:3], cg[:3]):
        torch.testing.assert_close(b, a)


@pytest.mark.parametrize("shape", [(B, H, L, S), (1, H, 1, S), (L, S), (B, 1, L, 1)])
def test_bias_of_any_broadcastable_shape_gets_its_gradient(shape):
    q, k, v = inputs()
    bias = torch.randn(*shape, dtype=torch.float64, requires_grad=True)
    (eo, eg), (co, cg) = run_both(q, k, v, 4, bias=bias)
    torch.testing.assert_close(co, eo)
    torch.testing.assert_close(cg[3], eg[3])
    assert cg[3].shape == bias.shape


@pytest.mark.parametrize("position", ["alibi", "t5"])
def test_score_mods_and_their_parameters(position):
    torch.manual_seed(1)
    mod = ALiBi(H) if position == "alibi" else T5RelativeBias(H).double()
    q, k, v = inputs()
    params = list(mod.parameters()) if isinstance(mod, nn.Module) else []
    (eo, eg), (co, cg) = run_both(q, k, v, 4, params=params, score_mod=mod, is_causal=True)
    torch.testing.assert_close(co, eo)
    for a, b in zip(eg, cg):
        if a is not None:
            torch.testing.assert_close(b, a)
    if position == "t5":
        assert cg[-1] is not None and cg[-1].abs().sum() > 0  # the learned bucket biases are trained


def test_gradcheck_additive():
    score = AdditiveScore(3, 3, 4).double()
    g = torch.Generator().manual_seed(0)
    q = torch.randn(1, 1, 3, 3, dtype=torch.float64, generator=g, requires_grad=True)
    k = torch.randn(1, 1, 5, 3, dtype=torch.float64, generator=g, requires_grad=True)
    v = torch.randn(1, 1, 5, 2, dtype=torch.float64, generator=g, requires_grad=True)
    mask = torch.tensor([True, True, False, True, True])
    assert torch.autograd.gradcheck(
        lambda q, k, v: attend(q, k, v, score=score, mask=mask, backend="chunked", block_size=2).output, (q, k, v))


def saved_bytes(fn):
    total = 0

    def pack(t):
        nonlocal total
        total += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return total


def test_backward_memory_grows_with_the_block_not_with_l_times_s():
    """What autograd keeps for backward: eager holds (B,H,L,S) weights; chunked only q, k, v, the
    output and the row log-sum-exp, so its memory grows linearly with the length."""
    def measure(n):
        q, k, v = (torch.randn(1, 2, n, 16, requires_grad=True) for _ in range(3))
        eager = saved_bytes(lambda: attend(q, k, v, backend="eager", is_causal=True))
        chunked = saved_bytes(lambda: attend(q, k, v, backend="chunked", is_causal=True))
        return eager, chunked

    (e1, c1), (e2, c2) = measure(512), measure(1024)
    weights_bytes = 2 * 1024 * 1024 * 4
    assert e2 >= weights_bytes and e2 >= 3.5 * e1  # quadratic
    assert c2 == 2 * c1 and c2 == 4 * (2 * 1024 * 16 * 4) + 2 * 1024 * 4  # q, k, v, out + lse: linear
    assert c2 < weights_bytes / 10


def test_auto_picks_chunked_only_when_the_weights_would_be_large(monkeypatch):
    additive = AdditiveScore(4, 4, 4)
    assert choose_backend("auto", additive, "softmax", False, None, 0.0, (1, 1, 8, 8)) == "eager"
    monkeypatch.setattr(budget_module, "CHUNKED_AUTO_BYTES", 100)
    assert choose_backend("auto", additive, "softmax", False, None, 0.0, (1, 1, 8, 8)) == "chunked"
    assert choose_backend("auto", additive, "softmax", True, None, 0.0, (1, 1, 8, 8)) == "eager"
    assert choose_backend("auto", DotScore(), "softmax", False, None, 0.0, (1, 1, 8, 8)) == "sdpa"


@pytest.mark.parametrize("kw,words", [
    (dict(need_weights=True), "need_weights"),
    (dict(normalize="sparsemax"), "sparsemax"),
    (dict(dropout_p=0.1), "dropout"),
])
def test_what_chunked_cannot_do_is_an_error_that_says_why(kw, words):
    q, k, v = inputs()
    with pytest.raises(ValueError, match=f"backend='chunked' cannot run this call: .*{words}"):
        attend(q, k, v, backend="chunked", **kw)


def test_a_score_mod_closing_over_a_trainable_tensor_is_refused():
    q, k, v = inputs()
    slope = torch.tensor(0.5, dtype=torch.float64, requires_grad=True)

    def sloped(score, b, h, q_idx, kv_idx):
        return score - slope * (q_idx - kv_idx).abs()

    with pytest.raises(ValueError, match="captures the trainable 'slope'"):
        attend(q, k, v, score_mod=sloped, backend="chunked")


def test_autocast_bfloat16_matches_eager_within_bf16_tolerance():
    score = AdditiveScore(D, D, 7)
    q, k, v = (x.detach().float() for x in inputs())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        e = attend(q, k, v, score=score, backend="eager").output
        qc = q.clone().requires_grad_()
        c = attend(qc, k, v, score=score, backend="chunked", block_size=4).output
        c.float().sum().backward()
    torch.testing.assert_close(c.float(), e.float(), rtol=3e-2, atol=3e-2)
    assert torch.isfinite(qc.grad).all()


@pytest.mark.parametrize("L_q", [3, 11])
def test_causal_blocks_skip_rows_yet_bias_mask_and_score_mod_gradients_match(L_q):
    """Causal calls skip the query rows a key block cannot reach; every gradient must still be exact."""
    q, k, v = inputs(L=L_q)
    bias = torch.randn(B, H, L_q, S, dtype=torch.float64, requires_grad=True)
    mask = torch.rand(B, 1, L_q, S, generator=torch.Generator().manual_seed(5)) < 0.8
    (eo, eg), (co, cg) = run_both(q, k, v, 4, bias=bias, mask=mask, score_mod=ALiBi(H), is_causal=True)
    torch.testing.assert_close(co, eo)
    for a, b in zip(eg[:4], cg[:4]):
        torch.testing.assert_close(b, a)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_cosine_score_of_a_zero_vector_is_zero_in_16_bit(dtype):
    """A zero key (e.g. a padded encoder state) projects to zero, not 0/0 = NaN (which then poisons the
    backward even where the key is masked): eps = 1e-8 is 0 in float16, so the normalisation runs in float32."""
    k = torch.zeros(1, 2, 4, dtype=dtype)
    k[0, 1] = 1
    k.requires_grad_()
    p = CosineScore().project_keys(k)
    assert torch.equal(p[0, 0], torch.zeros(4, dtype=dtype)) and torch.isfinite(p).all()
    p[0, 1].float().sum().backward()  # a padded key's projection gets no gradient from a masked score
    assert torch.isfinite(k.grad).all() and torch.equal(k.grad[0, 0], torch.zeros(4, dtype=dtype))
