"""Linear attention (Katharopoulos 2020) and Performer FAVOR+ (Choromanski 2021).

The layer against its equation written as a plain float64 loop; gradcheck; the chunked causal pass and the
factorised non-causal pass against the materialised (eager) reference, outputs and gradients; causal linear
attention equals its recurrent form (decoding with a LinearState, token by token and by chunks); Performer's
implied weights approach softmax attention as the number of features grows (seeded); bad input.
"""

import math

import pytest
import torch

import attnzoo
from attnzoo.core.kv_cache import KVCache
from attnzoo.mechanisms.linear import LinearState

DIM, HEADS = 8, 2


def build(name, **kw):
    torch.manual_seed(0)
    return attnzoo.create(name, dim=DIM, num_heads=HEADS, **kw).double().eval()


def x_input(L=9, seed=1, grad=False):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(2, L, DIM, generator=g, dtype=torch.float64).requires_grad_(grad)


def phi(m, x):
    """The paper's feature map, written out: elu(x) + 1, or Performer's exp(W x' - |x'|^2 / 2) / sqrt(m)."""
    if m.registry_name == "linear":
        return torch.tensor([xi + 1 if xi > 0 else math.exp(xi) for xi in x.tolist()], dtype=torch.float64)
    xs = x / m.head_dim ** 0.25
    w = m.projection.double()
    return torch.exp(w @ xs - xs @ xs / 2) / math.sqrt(m.num_features)


def layer_loop(m, x, causal, key_mask=None):
    lin = lambda layer, t: t @ layer.weight.T + layer.bias  # noqa: E731
    q, k, v = lin(m.q_proj, x), lin(m.k_proj, x), lin(m.v_proj, x)
    D = m.head_dim
    heads = torch.zeros_like(q)
    for b in range(x.shape[0]):
        for h in range(m.num_heads):
            c = slice(h * D, (h + 1) * D)
            for i in range(x.shape[1]):
                num, den = torch.zeros(D, dtype=torch.float64), 0.0
                for j in range(x.shape[1]):
                    if (causal and j > i) or (key_mask is not None and not key_mask[b, j]):
                        continue
                    sim = float(phi(m, q[b, i, c]) @ phi(m, k[b, j, c]))
                    num, den = num + sim * v[b, j, c], den + sim
                heads[b, i, c] = num / den if den > 0 else 0
    return lin(m.o_proj, heads)


@pytest.mark.parametrize("name", ["linear", "performer"])
@pytest.mark.parametrize("causal", [False, True])
def test_the_layer_equals_its_equation_written_as_a_loop(name, causal):
    m = build(name, chunk_size=4)
    x = x_input()
    mask = torch.ones(2, 9, dtype=torch.bool)
    mask[1, 6:] = False
    for key_mask in (None, mask):
        ref = layer_loop(m, x, causal, key_mask)
        for fused in (True, False):
            m.fused_attn = fused
            torch.testing.assert_close(m(x, is_causal=causal, key_mask=key_mask).output, ref, atol=1e-12, rtol=1e-10)


@pytest.mark.parametrize("name", ["linear", "performer"])
@pytest.mark.parametrize("causal", [False, True])
def test_gradcheck(name, causal):
    m = build(name, chunk_size=2)
    x = x_input(L=5, grad=True)
    assert torch.autograd.gradcheck(lambda x: m(x, is_causal=causal).output, (x,))


@pytest.mark.parametrize("name", ["linear", "performer"])
@pytest.mark.parametrize("chunk", [1, 3, 4, 64])
def test_the_chunked_causal_pass_equals_the_materialised_reference_with_gradients(name, chunk):
    m = build(name, chunk_size=chunk)
    x = x_input(L=10, grad=True)
    runs = []
    for fused in (True, False):
        m.fused_attn = fused
        m.zero_grad()
        x.grad = None
        out = m(x, is_causal=True).output
        (out * torch.linspace(-1, 1, DIM, dtype=torch.float64)).sum().backward()
        runs.append((out.detach(), x.grad.clone(), [p.grad.clone() for p in m.parameters()]))
    (o1, g1, p1), (o2, g2, p2) = runs
    torch.testing.assert_close(o1, o2, atol=1e-12, rtol=1e-10)
    torch.testing.assert_close(g1, g2, atol=1e-12, rtol=1e-10)
    for a, b in zip(p1, p2):
        torch.testing.assert_close(a, b, atol=1e-11, rtol=1e-10)


@pytest.mark.parametrize("name", ["linear", "performer"])
@pytest.mark.parametrize("fused", [True, False])
def test_causal_linear_attention_equals_its_recurrent_form(name, fused):
    m = build(name, chunk_size=4, fused_attn=fused)
    x = x_input(L=11)
    full = m(x, is_causal=True).output
    state = m.new_cache()
    steps = [m(x[:, t:t + 1], is_causal=True, cache=state).output for t in range(11)]
    torch.testing.assert_close(torch.cat(steps, 1), full, atol=1e-12, rtol=1e-10)
    assert state.position == 11 and state.kv.shape == (2, HEADS, m.features(torch.zeros(1, 1, 1, 4), False)
                                                       .shape[-1], 4), "the state does not grow with the length"
    state = m.new_cache()
    chunks = [m(x[:, a:b], is_causal=True, cache=state).output for a, b in [(0, 3), (3, 10), (10, 11)]]
    torch.testing.assert_close(torch.cat(chunks, 1), full, atol=1e-12, rtol=1e-10)
    state.index_select_(torch.tensor([1, 1, 0]))
    assert state.kv.shape[0] == 3


def test_cross_attention_sums_over_the_memory():
    m = build("linear")
    x, memory = x_input(L=4), x_input(L=6, seed=2)
    out = m(x, key=memory, value=memory, need_weights=True)
    torch.testing.assert_close(out.weights.sum(-1), torch.ones(2, HEADS, 4, dtype=torch.float64))
    assert out.weights.shape == (2, HEADS, 4, 6)


def test_performer_approaches_softmax_attention_as_the_features_grow():
    """Mean |A_performer - A_softmax| over 5 seeds of features: at m = 1024 a third or less of m = 16's, and
    under 0.003 (weights average 1/16 here), with these seeds."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, 16, 16, generator=g, dtype=torch.float64) * 0.5

    def error(m):
        errs = []
        for seed in range(5):
            torch.manual_seed(0)  # the same projections: only the random features change
            p = attnzoo.create("performer", dim=16, num_heads=1, num_features=m, seed=seed).double()
            w = p(x, need_weights=True).weights
            q, k = p._heads(p.q_proj(x)), p._heads(p.k_proj(x))
            errs.append((w - torch.softmax(q @ k.transpose(-1, -2) / 4, -1)).abs().mean().item())
        return sum(errs) / len(errs)

    few, many = error(16), error(1024)
    assert many <= few / 3 and many < 0.003, (few, many)


def test_performer_redraws_its_features_reproducibly():
    a, b = build("performer", seed=3), build("performer", seed=3)
    assert torch.equal(a.projection, b.projection)
    before = a.projection.clone()
    a.redraw()
    b.redraw()
    assert not torch.equal(a.projection, before) and torch.equal(a.projection, b.projection)
    rows = before[:a.head_dim]
    gram = rows @ rows.T
    off = gram - torch.diag(torch.diagonal(gram))
    assert off.abs().max() < 1e-4, "each block of head_dim features is orthogonal"


def test_bad_input_is_named():
    m = build("linear")
    x = x_input()
    with pytest.raises(TypeError, match="cache must be a LinearState"):
        m(x, is_causal=True, cache=KVCache())
    with pytest.raises(ValueError, match="a LinearState decodes causal self-attention"):
        m(x, cache=LinearState())
    with pytest.raises(ValueError, match="key_mask must be a boolean"):
        m(x, key_mask=torch.ones(2, 9))
    with pytest.raises(ValueError, match=r"x must have shape \(B, L, 8\)"):
        m(torch.randn(2, 9, 5, dtype=torch.float64))
    with pytest.raises(ValueError, match="num_features must be a positive int"):
        attnzoo.create("performer", dim=DIM, num_heads=HEADS, num_features=0)
    with pytest.raises(ValueError, match="chunk_size must be a positive int"):
        attnzoo.create("linear", dim=DIM, num_heads=HEADS, chunk_size=0)
