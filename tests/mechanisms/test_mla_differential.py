"""Multi-head latent attention (DeepSeek-V2) and differential attention (Ye et al. 2025).

Each layer against its paper's equations written as a plain float64 loop; gradcheck; fused = eager;
cache decoding equals the full causal pass; and the equivalences that pin them down: MLA's absorbed form
equals its plain form (outputs, weights, gradients) and its cache is at most a quarter of MHA's bytes per
token at the same width; differential attention with lambda = 0 is softmax attention followed by the head
norm, and its rows sum to 1 - lambda.
"""

import math

import pytest
import torch

import attnzoo
from attnzoo.core.kv_cache import KVCache
from attnzoo.mechanisms.differential import lambda_init_for
from attnzoo.positions.rope import apply_rope

DIM, HEADS, L = 16, 2, 6


def build(name, **kw):
    torch.manual_seed(0)
    return attnzoo.create(name, dim=DIM, num_heads=HEADS, **kw).double().eval()


def x_input(L_=L, grad=False, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(2, L_, DIM, generator=g, dtype=torch.float64).requires_grad_(grad)


def softmax_row(s):
    top = max(s)
    e = [math.exp(z - top) for z in s]
    return [z / sum(e) for z in e]


lin = lambda layer, t: t @ layer.weight.T + (layer.bias if layer.bias is not None else 0)  # noqa: E731


# --------------------------------------------------------------------------- MLA
def mla_loop(m, x, causal):
    """DeepSeek-V2 eqs. 9-19 per token and head: c = W_DKV x; k_h = [W_UK,h c; RoPE(W_KR x)];
    q_h = [W_UQ,h c_q; RoPE(W_QR,h c_q)]; o_h = sum_j softmax_j(q_h . k_j / sqrt(D + R)) W_UV,h c_j."""
    H, D, R = m.num_heads, m.head_dim, m.rope_dim
    pos = torch.arange(x.shape[1])
    c = lin(m.kv_down, x)  # (B, L, C)
    k_r = apply_rope(lin(m.k_rope, x), pos)  # (B, L, R)
    cq = lin(m.q_down, x) if m.q_down is not None else x
    qall = lin(m.q_proj, cq).view(x.shape[0], x.shape[1], H, D + R)
    heads = torch.zeros(x.shape[0], x.shape[1], H * D, dtype=torch.float64)
    for b in range(x.shape[0]):
        for h in range(H):
            w_uk = m.k_up.weight[h * D:(h + 1) * D]  # (D, C)
            w_uv = m.v_up.weight[h * D:(h + 1) * D]
            q_c = qall[b, :, h, :D]
            q_r = apply_rope(qall[b, :, h, D:], pos)
            for i in range(x.shape[1]):
                keys = [j for j in range(x.shape[1]) if not causal or j <= i]
                s = [float(q_c[i] @ (w_uk @ c[b, j]) + q_r[i] @ k_r[b, j]) / math.sqrt(D + R) for j in keys]
                heads[b, i, h * D:(h + 1) * D] = sum(w * (w_uv @ c[b, j]) for w, j in zip(softmax_row(s), keys))
    return lin(m.o_proj, heads)


@pytest.mark.parametrize("options", [{}, {"q_latent_dim": 6}], ids=["kv-latent", "q-latent-too"])
@pytest.mark.parametrize("causal", [False, True])
def test_mla_equals_its_equations_in_both_forms(options, causal):
    m = build("mla", **options)
    x = x_input()
    ref = mla_loop(m, x, causal)
    for absorb in (False, True):
        for fused in (True, False):
            m.fused_attn = fused
            torch.testing.assert_close(m(x, is_causal=causal, absorb=absorb).output, ref, atol=1e-12, rtol=1e-10)


def test_mla_absorbed_form_equals_the_plain_form_with_weights_and_gradients():
    m = build("mla")
    x = x_input(grad=True)
    runs = []
    for absorb in (False, True):
        m.zero_grad()
        x.grad = None
        out = m(x, is_causal=True, need_weights=True, absorb=absorb)
        (out.output.sum() + (out.weights * torch.rand(out.weights.shape, generator=torch.Generator()
                                                      .manual_seed(0), dtype=torch.float64)).sum()).backward()
        runs.append((out.output.detach(), out.weights.detach(), x.grad.clone(),
                     {n: p.grad.clone() for n, p in m.named_parameters()}))
    (o1, w1, g1, p1), (o2, w2, g2, p2) = runs
    for a, b in ((o1, o2), (w1, w2), (g1, g2)):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=1e-10)
    for n in p1:
        torch.testing.assert_close(p1[n], p2[n], atol=1e-11, rtol=1e-10, msg=n)


@pytest.mark.parametrize("absorb", [None, False])
def test_mla_latent_cache_decoding_equals_the_full_pass(absorb):
    m = build("mla")
    x = x_input(L_=9)
    full = m(x, is_causal=True).output
    cache = m.new_cache()
    steps = [m(x[:, t:t + 1], is_causal=True, cache=cache, absorb=absorb).output for t in range(9)]
    torch.testing.assert_close(torch.cat(steps, 1), full, atol=1e-12, rtol=1e-10)
    assert cache.keys.shape == (2, 1, 9, m.kv_latent_dim) and cache.values.shape == (2, 1, 9, m.rope_dim), \
        "the cache holds only the latents and the RoPE keys"


@pytest.mark.parametrize("dim,heads", [(512, 8), (256, 4), (768, 12)])
def test_mla_cache_is_at_most_a_quarter_of_mha_per_token(dim, heads):
    m = attnzoo.create("mla", dim=dim, num_heads=heads)
    mha_numbers = 2 * heads * (dim // heads)  # K and V of every head
    assert m.cache_numbers_per_token() * 4 <= mha_numbers, (m.cache_numbers_per_token(), mha_numbers)


def test_mla_gradcheck():
    m = build("mla", q_latent_dim=6)
    x = x_input(L_=4, grad=True)
    assert torch.autograd.gradcheck(lambda x: m(x, is_causal=True).output, (x,))
    assert torch.autograd.gradcheck(lambda x: m(x, is_causal=True, absorb=True).output, (x,))


# --------------------------------------------------------------------------- differential
def diff_loop(m, x, causal, memory=None):
    """Ye et al. eqs. 1-3 per head and query: (softmax(q1 k1 / sqrt(D)) - lambda softmax(q2 k2 / sqrt(D))) V,
    RMSNorm over the head's 2D channels, times (1 - lambda_init)."""
    H, D = m.num_heads, m.head_dim
    mem = x if memory is None else memory
    q = lin(m.q_proj, x).view(x.shape[0], x.shape[1], H, 2, D)
    k = lin(m.k_proj, mem).view(x.shape[0], mem.shape[1], H, 2, D)
    v = lin(m.v_proj, mem).view(x.shape[0], mem.shape[1], H, 2 * D)
    lam = float(torch.exp(m.lambda_q1 @ m.lambda_k1) - torch.exp(m.lambda_q2 @ m.lambda_k2)) + m.lambda_init
    heads = torch.zeros(x.shape[0], x.shape[1], H * 2 * D, dtype=torch.float64)
    for b in range(x.shape[0]):
        for h in range(H):
            for i in range(x.shape[1]):
                keys = [j for j in range(mem.shape[1]) if not causal or j <= i]
                a1 = softmax_row([float(q[b, i, h, 0] @ k[b, j, h, 0]) / math.sqrt(D) for j in keys])
                a2 = softmax_row([float(q[b, i, h, 1] @ k[b, j, h, 1]) / math.sqrt(D) for j in keys])
                o = sum((w1 - lam * w2) * v[b, j, h] for w1, w2, j in zip(a1, a2, keys))
                o = o / torch.sqrt((o * o).mean() + m.head_norm.eps) * m.head_norm.weight
                heads[b, i, h * 2 * D:(h + 1) * 2 * D] = o * (1 - m.lambda_init)
    return lin(m.o_proj, heads)


@pytest.mark.parametrize("causal", [False, True])
def test_differential_equals_its_equations(causal):
    m = build("differential", layer=3)
    with torch.no_grad():
        m.head_norm.weight.uniform_(0.5, 1.5)
    x = x_input()
    ref = diff_loop(m, x, causal)
    for fused in (True, False):
        m.fused_attn = fused
        torch.testing.assert_close(m(x, is_causal=causal).output, ref, atol=1e-12, rtol=1e-10)
    memory = x_input(L_=4, seed=2)
    torch.testing.assert_close(m(x, key=memory, value=memory).output, diff_loop(m, x, False, memory),
                               atol=1e-12, rtol=1e-10)


def test_differential_with_lambda_zero_is_softmax_attention_then_the_head_norm():
    m = build("differential", lambda_init=0.0)
    with torch.no_grad():
        for p in (m.lambda_q1, m.lambda_k1, m.lambda_q2, m.lambda_k2):
            p.zero_()  # lambda = e^0 - e^0 + 0 = 0
    assert float(m.lambda_()) == 0.0
    x = x_input()
    B, H, D = 2, HEADS, m.head_dim
    q = lin(m.q_proj, x).view(B, L, H, 2, D)[:, :, :, 0].transpose(1, 2)  # the first map's queries
    k = lin(m.k_proj, x).view(B, L, H, 2, D)[:, :, :, 0].transpose(1, 2)
    v = lin(m.v_proj, x).view(B, L, H, 2 * D).transpose(1, 2)
    plain = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)  # (B, H, L, 2D)
    expected = lin(m.o_proj, m.head_norm(plain).transpose(1, 2).reshape(B, L, -1))
    torch.testing.assert_close(m(x, is_causal=True).output, expected, atol=1e-12, rtol=1e-10)
    w = m(x, is_causal=True, need_weights=True).weights
    assert (w >= 0).all(), "lambda = 0: one softmax map, no negative weights"


def test_differential_rows_sum_to_one_minus_lambda_and_lambda_init_follows_depth():
    m = build("differential", layer=5)
    w = m(x_input(), is_causal=True, need_weights=True).weights
    torch.testing.assert_close(w.sum(-1), torch.full_like(w.sum(-1), 1 - float(m.lambda_())))
    assert m.lambda_init == pytest.approx(0.8 - 0.6 * math.exp(-1.2))
    assert lambda_init_for(1) == pytest.approx(0.2)


def test_differential_cache_decoding_and_gradcheck():
    m = build("differential", positions="rope")
    x = x_input(L_=8)
    full = m(x, is_causal=True).output
    cache = m.new_cache()
    steps = [m(x[:, t:t + 1], is_causal=True, cache=cache).output for t in range(8)]
    torch.testing.assert_close(torch.cat(steps, 1), full, atol=1e-12, rtol=1e-10)
    xs = x_input(L_=4, grad=True)
    assert torch.autograd.gradcheck(lambda x: m(x, is_causal=True).output, (xs,))


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="rope_dim must be even"):
        attnzoo.create("mla", dim=DIM, num_heads=HEADS, rope_dim=3)
    with pytest.raises(ValueError, match="kv_latent_dim must be a positive int"):
        attnzoo.create("mla", dim=DIM, num_heads=HEADS, kv_latent_dim=0)
    m = build("mla")
    with pytest.raises(TypeError, match="cache must be a KVCache of latents"):
        m(x_input(), cache=object())
    other = KVCache()
    other.append(torch.zeros(2, 1, 1, 3, dtype=torch.float64), torch.zeros(2, 1, 1, 2, dtype=torch.float64))
    with pytest.raises(ValueError, match="use one cache per layer"):
        m(x_input(), is_causal=True, cache=other)
    with pytest.raises(ValueError, match=r"dim \(16\) is not divisible by 2 \* num_heads \(6\)"):
        attnzoo.create("differential", dim=DIM, num_heads=3)
    with pytest.raises(ValueError, match="lambda_init must be a finite real number"):
        attnzoo.create("differential", dim=DIM, num_heads=HEADS, lambda_init=float("nan"))
    with pytest.raises(ValueError, match="decodes self-attention with a cache"):
        build("differential")(x_input(), key=x_input(), cache=KVCache())
