"""The modern multi-head variants that change one stage of MHA: gated output (Qiu 2025), learned sinks
(Xiao 2023 / gpt-oss), soft-capped logits (Gemma 2), sigmoid attention (Ramapuram 2024), and the sliding
window with global tokens (Longformer) with its rolling cache.

For each: the whole layer against its equation as a plain float64 loop (the layer's own projection
weights, one (batch, head, query) at a time), gradcheck, the fused and eager paths agree on outputs and
gradients, and decoding with a cache equals the full causal pass token by token.
"""

import math

import pytest
import torch

import attnzoo
from attnzoo.core.kv_cache import KVCache, RollingKVCache

DIM, HEADS, L = 8, 2, 7
NAMES = ["gated", "sink", "softcap", "sigmoid", "sliding"]
OPTIONS = {"softcap": dict(softcap=1.5), "sliding": dict(window=3, global_tokens=1)}


def build(name, **kw):
    torch.manual_seed(0)
    m = attnzoo.create(name, dim=DIM, num_heads=HEADS, **{**OPTIONS.get(name, {}), **kw}).double().eval()
    if m.sink is not None:
        with torch.no_grad():
            m.sink.copy_(torch.tensor([0.7, -0.4]))
    return m


def x_input(L_=L, scale=1.0):
    g = torch.Generator().manual_seed(1)
    return (torch.randn(2, L_, DIM, generator=g, dtype=torch.float64) * scale).requires_grad_()


def allowed_fn(m, causal):
    window, glob = getattr(m, "window", None), getattr(m, "global_tokens", 0)

    def allowed(i, j):
        if causal and j > i:
            return False
        return window is None or abs(i - j) < window or i < glob or j < glob

    return allowed


def layer_loop(m, x, causal):
    """The layer's equation, one (b, h, i) at a time, with its own weights."""
    lin = lambda layer, t: t @ layer.weight.T + layer.bias  # noqa: E731
    D = m.head_dim
    q, k, v = lin(m.q_proj, x), lin(m.k_proj, x), lin(m.v_proj, x)  # (B, L, H*D)
    heads = torch.zeros_like(q)
    allowed = allowed_fn(m, causal)
    for b in range(x.shape[0]):
        for h in range(m.num_heads):
            cols = slice(h * D, (h + 1) * D)
            for i in range(x.shape[1]):
                keys = [j for j in range(x.shape[1]) if allowed(i, j)]
                s = [float(q[b, i, cols] @ k[b, j, cols]) / math.sqrt(D) for j in keys]
                if m.softcap is not None:
                    s = [m.softcap * math.tanh(z / m.softcap) for z in s]
                if m.normalize == "sigmoid":
                    w = [1 / (1 + math.exp(-(z - math.log(len(s))))) for z in s]
                else:
                    sink = [float(m.sink[h])] if m.sink is not None else []
                    top = max(s + sink)
                    total = sum(math.exp(z - top) for z in s + sink)
                    w = [math.exp(z - top) / total for z in s]
                out = sum(wj * v[b, j, cols] for wj, j in zip(w, keys))
                if m.gate_proj is not None:
                    out = out * torch.sigmoid(lin(m.gate_proj, x[b, i])[cols])
                heads[b, i, cols] = out
    return lin(m.o_proj, heads)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("name", NAMES)
def test_the_layer_equals_its_equation_written_as_a_loop(name, causal):
    m = build(name)
    x = x_input().detach()
    ref = layer_loop(m, x, causal)
    for fused in (True, False):
        m.fused_attn = fused
        torch.testing.assert_close(m(x, is_causal=causal).output, ref, atol=1e-12, rtol=1e-10)


@pytest.mark.parametrize("name", NAMES)
def test_gradcheck(name):
    m = build(name)
    x = x_input(L_=5)
    assert torch.autograd.gradcheck(lambda x: m(x, is_causal=True).output, (x,))


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("long", [False, True], ids=["short", "long-chunked"])
def test_fused_and_eager_paths_agree_with_gradients(name, long):
    m = build(name)
    x = x_input(L_=300 if long else L)
    runs = []
    for fused in (True, False):
        m.fused_attn = fused
        m.zero_grad()
        x.grad = None
        out = m(x, is_causal=True).output
        (out * torch.linspace(-1, 1, DIM, dtype=torch.float64)).sum().backward()
        runs.append((out.detach(), x.grad.clone(), {n: p.grad.clone() for n, p in m.named_parameters()}))
    (o1, g1, p1), (o2, g2, p2) = runs
    torch.testing.assert_close(o1, o2, atol=1e-11, rtol=1e-9)
    torch.testing.assert_close(g1, g2, atol=1e-11, rtol=1e-9)
    for n in p1:
        torch.testing.assert_close(p1[n], p2[n], atol=1e-10, rtol=1e-9, msg=n)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("positions", [None, "rope"])
def test_cache_decoding_equals_the_full_pass_token_by_token(name, positions):
    m = build(name, positions=positions)
    x = x_input(L_=11).detach()
    full = m(x, is_causal=True).output
    cache = m.new_cache() if name == "sliding" else KVCache()
    steps = [m(x[:, t:t + 1], is_causal=True, cache=cache).output for t in range(x.shape[1])]
    torch.testing.assert_close(torch.cat(steps, 1), full, atol=1e-12, rtol=1e-10)
    chunks = [m(x[:, a:b], is_causal=True, cache=(c := m.new_cache() if name == "sliding" else KVCache()))
              .output for a, b in [(0, 4)]]
    chunks += [m(x[:, a:b], is_causal=True, cache=c).output for a, b in [(4, 9), (9, 11)]]
    torch.testing.assert_close(torch.cat(chunks, 1), full, atol=1e-12, rtol=1e-10)


def test_the_sliding_cache_stays_flat_in_the_sequence_length():
    m = build("sliding")
    cache = m.new_cache()
    x = x_input(L_=40).detach()
    for t in range(40):
        m(x[:, t:t + 1], is_causal=True, cache=cache)
        assert cache.length <= m.window + m.global_tokens
    assert cache.position == len(cache) == 40


def test_streaming_llm_rolling_cache_on_plain_mha_equals_the_sink_plus_window_pattern():
    """A RollingKVCache(window=w, keep_first=g) on any MHA decodes exactly what a sliding window of w with g global
    tokens computes in one causal pass (StreamingLLM's first tokens plus a window)."""
    mha = build("mha", positions="rope")
    sliding = build("sliding", positions="rope", window=4, global_tokens=2)
    sliding.load_state_dict(mha.state_dict())
    x = x_input(L_=12).detach()
    cache = RollingKVCache(4, keep_first=2)
    steps = [mha(x[:, t:t + 1], is_causal=True, cache=cache).output for t in range(12)]
    torch.testing.assert_close(torch.cat(steps, 1), sliding(x, is_causal=True).output, atol=1e-12, rtol=1e-10)


def test_a_window_covering_the_sequence_is_mha_and_a_sink_at_minus_infinity_is_mha():
    mha = build("mha")
    x = x_input().detach()
    wide = build("sliding", window=L)
    wide.load_state_dict(mha.state_dict())
    torch.testing.assert_close(wide(x, is_causal=True).output, mha(x, is_causal=True).output, atol=1e-13, rtol=0)
    sink = build("sink")
    state = dict(mha.state_dict(), sink=torch.full((HEADS,), float("-inf"), dtype=torch.float64))
    sink.load_state_dict(state)
    torch.testing.assert_close(sink(x, is_causal=True).output, mha(x, is_causal=True).output, atol=1e-13, rtol=0)


def test_a_sliding_window_over_a_long_sequence_runs_the_block_skipping_path():
    import importlib

    attend_module = importlib.import_module("attnzoo.core.attend")

    m = attnzoo.create("sliding", dim=64, num_heads=4, window=64)
    seen = []
    original = attend_module.blockwise_attention
    attend_module.blockwise_attention = lambda *a, **k: seen.append(1) or original(*a, **k)
    try:
        m(torch.randn(1, 4096, 64), is_causal=True)
    finally:
        attend_module.blockwise_attention = original
    assert seen, "backend='auto' should skip the blocks outside the window"


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="window must be a positive int"):
        attnzoo.create("sliding", dim=DIM, num_heads=HEADS, window=0)
    with pytest.raises(ValueError, match="global_tokens must be an int >= 0"):
        attnzoo.create("sliding", dim=DIM, num_heads=HEADS, global_tokens=-1)
    with pytest.raises(ValueError, match="sinks=True needs normalize='softmax'"):
        attnzoo.create("sink", dim=DIM, num_heads=HEADS, normalize="sigmoid")
    with pytest.raises(ValueError, match="softcap must be a positive finite number"):
        attnzoo.create("softcap", dim=DIM, num_heads=HEADS, softcap=0.0)
    with pytest.raises(ValueError, match="unknown normalize 'sparsemax'"):
        attnzoo.create("mha", dim=DIM, num_heads=HEADS, normalize="sparsemax")
    with pytest.raises(ValueError, match="a RollingKVCache works with positions None or 'rope'"):
        attnzoo.create("mha", dim=DIM, num_heads=HEADS, positions="alibi")(
            torch.randn(1, 2, DIM), is_causal=True, cache=RollingKVCache(4))
    with pytest.raises(ValueError, match="window must be a positive int"):
        RollingKVCache(0)
