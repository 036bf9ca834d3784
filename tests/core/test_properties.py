"""Property-based tests (hypothesis): random shapes, masks, dtypes and backends.

Each property runs ``EXAMPLES`` examples, derandomised so CI sees the same
ones every run (a failure found once stays found).
"""

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from attnzoo import KVCache, MultiHeadAttention, attend
from attnzoo.core.scores import AdditiveScore, CosineScore, DotScore, GeneralScore, ScaledDotScore

EXAMPLES = 200
PROPERTY = settings(max_examples=EXAMPLES, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
TOL = {torch.float32: dict(rtol=1e-4, atol=1e-5), torch.float64: dict(rtol=1e-9, atol=1e-10)}
# gradients sum in a different order per backend; float32 cosine scores of near-zero vectors amplify it
GRAD_TOL = {torch.float32: dict(rtol=1e-3, atol=1e-4), torch.float64: dict(rtol=1e-8, atol=1e-9)}


@st.composite
def problems(draw, masks=True, grouped=True):
    """Random attention inputs: q (B,H,L,D), k/v (B,G,S,D|E), a boolean mask (B,1|H,L,S) or None."""
    B, L, S = draw(st.integers(1, 3)), draw(st.integers(1, 6)), draw(st.integers(1, 8))
    G = draw(st.integers(1, 3))
    H = G * (draw(st.integers(1, 2)) if grouped else 1)
    D, E = draw(st.integers(1, 12)), draw(st.integers(1, 6))
    dtype = draw(st.sampled_from([torch.float32, torch.float64]))
    seed = draw(st.integers(0, 2 ** 31 - 1))
    scale = draw(st.sampled_from([0.1, 1.0, 4.0]))
    g = torch.Generator().manual_seed(seed)
    q = scale * torch.randn(B, H, L, D, generator=g, dtype=dtype)
    k = scale * torch.randn(B, G, S, D, generator=g, dtype=dtype)
    v = torch.randn(B, G, S, E, generator=g, dtype=dtype)
    mask = None
    if masks and draw(st.booleans()):
        heads = draw(st.sampled_from([1, H]))
        density = draw(st.sampled_from([0.2, 0.6, 0.9]))
        mask = torch.rand(B, heads, L, S, generator=g) < density  # may contain fully masked rows
    causal = draw(st.booleans())
    return q, k, v, mask, causal


def allowed(mask, causal, shape):
    """The boolean (B,H,L,S) of keys each query may attend (bottom-right causal, as attend does)."""
    B, H, L, S = shape
    ok = torch.ones(B, H, L, S, dtype=torch.bool)
    if mask is not None:
        ok = ok & mask
    if causal:
        ok = ok & (torch.arange(S)[None, :] <= torch.arange(L)[:, None] + (S - L))
    return ok


@PROPERTY
@given(problems(), st.sampled_from(["dot", "scaled_dot"]))
def test_backends_agree_on_outputs_and_gradients(problem, score):
    q, k, v, mask, causal = problem
    grads = []
    outs = []
    for backend in ("eager", "sdpa"):
        qq, kk, vv = (x.clone().requires_grad_() for x in (q, k, v))
        out = attend(qq, kk, vv, score=score, mask=mask, is_causal=causal, backend=backend).output
        (out * torch.linspace(-1, 1, out.shape[-1], dtype=out.dtype)).sum().backward()
        outs.append(out.detach())
        grads.append([qq.grad, kk.grad, vv.grad])
    torch.testing.assert_close(outs[0], outs[1], **TOL[q.dtype])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, **TOL[q.dtype])


def make_score(name, D, dtype):
    torch.manual_seed(D)
    made = {"dot": DotScore, "scaled_dot": ScaledDotScore, "general": lambda: GeneralScore(D, D),
            "additive": lambda: AdditiveScore(D, D, 5), "cosine": CosineScore}[name]()
    return made.to(dtype)


@PROPERTY
@given(problems(), st.sampled_from(["dot", "scaled_dot", "general", "additive", "cosine"]), st.integers(1, 9))
def test_chunked_equals_eager_for_every_score(problem, name, block):
    q, k, v, mask, causal = problem
    score = make_score(name, q.shape[-1], q.dtype)
    results = []
    for backend, extra in (("eager", {}), ("chunked", {"block_size": block})):
        qq, kk, vv = (x.clone().requires_grad_() for x in (q, k, v))
        score.zero_grad()
        out = attend(qq, kk, vv, score=score, mask=mask, is_causal=causal, backend=backend, **extra).output
        (out * torch.linspace(-1, 1, out.shape[-1], dtype=out.dtype)).sum().backward()
        params = [p.grad.clone() for p in score.parameters() if p.grad is not None]
        results.append((out.detach(), [qq.grad, kk.grad, vv.grad] + params))
    (eo, eg), (co, cg) = results
    torch.testing.assert_close(co, eo, **TOL[q.dtype])
    assert len(eg) == len(cg)
    for a, b in zip(eg, cg):
        torch.testing.assert_close(b, a, **GRAD_TOL[q.dtype])


@PROPERTY
@given(problems(), st.sampled_from(["softmax", "sparsemax"]))
def test_weights_are_a_distribution_over_allowed_keys_or_all_zero(problem, normalize):
    q, k, v, mask, causal = problem
    out = attend(q, k, v, mask=mask, is_causal=causal, normalize=normalize, need_weights=True, backend="eager")
    w = out.weights
    ok = allowed(mask, causal, w.shape)
    assert torch.isfinite(w).all() and torch.isfinite(out.output).all()
    assert (w >= 0).all() and (w[~ok] == 0).all()
    has_key = ok.any(-1)
    expected = has_key.to(w.dtype)  # 1 where some key is allowed, 0 for a fully masked row
    torch.testing.assert_close(w.sum(-1), expected, **TOL[torch.float32])
    assert (out.output[~has_key] == 0).all()


@PROPERTY
@given(problems(), st.sampled_from(["eager", "sdpa"]), st.sampled_from([1e4, -1e4, 3.0]))
def test_masked_keys_never_influence_the_output(problem, backend, junk):
    q, k, v, mask, causal = problem
    B, G, S, _ = k.shape
    ok_keys = torch.rand(B, 1, 1, S, generator=torch.Generator().manual_seed(S)) < 0.6  # per-key padding
    full = ok_keys if mask is None else ok_keys & mask
    base = attend(q, k, v, mask=full, is_causal=causal, backend=backend).output
    blocked = ~ok_keys.expand(B, G, 1, S).squeeze(2)  # (B, G, S)
    k2, v2 = k.clone(), v.clone()
    k2[blocked] = junk
    v2[blocked] = junk
    changed = attend(q, k2, v2, mask=full, is_causal=causal, backend=backend).output
    torch.testing.assert_close(changed, base, **TOL[q.dtype])


@PROPERTY
@given(st.integers(1, 3), st.integers(1, 7), st.sampled_from([(4, 1), (4, 2), (4, 4), (6, 3)]),
       st.booleans(), st.integers(0, 10_000))
def test_self_attention_without_positions_is_permutation_equivariant(B, L, heads, fused, seed):
    H, G = heads
    torch.manual_seed(seed)
    m = MultiHeadAttention(12, H, G, fused_attn=fused).double()
    x = torch.randn(B, L, 12, dtype=torch.float64)
    key_mask = torch.rand(B, L) < 0.7
    perm = torch.randperm(L)
    out = m(x, key_mask=key_mask).output
    out_p = m(x[:, perm], key_mask=key_mask[:, perm]).output
    torch.testing.assert_close(out_p, out[:, perm])


@PROPERTY
@given(st.integers(1, 2), st.integers(2, 9), st.sampled_from([None, "rope", "alibi", "t5", "relative"]),
       st.sampled_from([(4, 4), (4, 2), (4, 1)]), st.lists(st.integers(1, 4), min_size=1, max_size=9),
       st.integers(0, 10_000))
def test_kv_cached_decoding_equals_the_full_forward_pass(B, L, positions, heads, chunks, seed):
    """Feeding the sequence in chunks of any sizes through a KVCache gives the causal full pass."""
    H, G = heads
    torch.manual_seed(seed)
    m = MultiHeadAttention(8, H, G, positions=positions).double().eval()
    x = torch.randn(B, L, 8, dtype=torch.float64)
    full = m(x, is_causal=True).output
    cache, start, steps = KVCache(), 0, []
    for size in chunks:
        if start >= L:
            break
        steps.append(m(x[:, start:start + size], is_causal=True, cache=cache).output)
        start += size
    if start < L:
        steps.append(m(x[:, start:], is_causal=True, cache=cache).output)
    torch.testing.assert_close(torch.cat(steps, 1), full)

