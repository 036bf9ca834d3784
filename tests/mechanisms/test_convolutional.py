"""The convolutional family against plain loops over its equations (float64, tiny inputs).

Lightweight and dynamic convolutions (Wu 2019): the equation, kernels normalised over their taps,
causal windows that never look ahead, padding without influence, cached decoding equal to the full
pass, the Transformer with them in its self-attention slot. Attention-augmented convolution (Bello
2019): shapes, the attention half against a loop with 2-D relative logits. ConvS2S multi-step
attention (Gehring 2017): the scaled equation, with padding.
"""

import math

import pytest
import torch
import torch.nn.functional as F

import attnzoo
from attnzoo import KVCache
from attnzoo.mechanisms.convolutional import (
    AugmentedConv2d,
    ConvCache,
    DynamicConv,
    LightweightConv,
    MultiStepAttention,
)
from attnzoo.mechanisms.transformer import BlockConfig, DecoderBlock, EncoderBlock
from attnzoo.models.transformer_seq2seq import TransformerConfig, TransformerSeq2Seq

CONVS = [LightweightConv, DynamicConv]
F64 = dict(atol=1e-12, rtol=1e-10)


def conv(cls, dim=6, heads=3, K=3, **kw):
    torch.manual_seed(0)
    return cls(dim, heads, K, **kw).double().eval()


def inputs(B=2, L=5, dim=6, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, L, dim, generator=g, dtype=torch.float64)


# --------------------------------------------------------------------------- lightweight / dynamic
def reference_conv(m, x, causal, key_mask=None):
    """out_i = W_o [sum_k softmax(W_h(c))_k u_(i+k-P),c]_c with u = GLU(W_in x), by loops."""
    B, L, C = x.shape
    H, K = m.num_heads, m.kernel_size
    R = C // H
    P = K - 1 if causal else (K - 1) // 2
    u = x @ m.in_proj.weight.t() + m.in_proj.bias
    u = u[..., :C] * torch.sigmoid(u[..., C:])
    if key_mask is not None:
        u = torch.where(key_mask[..., None], u, torch.zeros_like(u))
    out = torch.zeros(B, L, C, dtype=x.dtype)
    kernels = torch.zeros(B, L, H, K, dtype=x.dtype)
    for b in range(B):
        for i in range(L):
            for h in range(H):
                if m.dynamic:  # f(u_i) = W^Q u_i, reshaped to H x K
                    raw = [sum(m.kernel_proj.weight[h * K + k, c] * u[b, i, c] for c in range(C)) for k in range(K)]
                    raw = torch.stack(raw)
                else:
                    raw = m.kernel[h]
                w = torch.exp(raw) / torch.exp(raw).sum()
                kernels[b, i, h] = w
                for c in range(h * R, (h + 1) * R):  # the channels of head h: floor(c H / C) = h
                    for k in range(K):
                        j = i + k - P
                        if 0 <= j < L:
                            out[b, i, c] += w[k] * u[b, j, c]
    return out @ m.o_proj.weight.t() + m.o_proj.bias, kernels


@pytest.mark.parametrize("cls", CONVS, ids=lambda c: c.__name__)
@pytest.mark.parametrize("K", [1, 3, 4])
@pytest.mark.parametrize("causal", [False, True], ids=["centred", "causal"])
def test_convolution_equals_the_loop_over_its_equation(cls, K, causal):
    m = conv(cls, K=K)
    x = inputs()
    key_mask = torch.tensor([[True] * 5, [True] * 3 + [False] * 2])
    for mask in (None, key_mask):
        got = m(x, key_mask=mask, is_causal=causal, need_weights=True)
        want, kernels = reference_conv(m, x, causal, mask)
        torch.testing.assert_close(got.output, want, **F64)
        # the banded weights: row i holds tap k at position i + k - P (zero outside the sequence and on padding)
        P = K - 1 if causal else (K - 1) // 2
        band = torch.zeros(2, 3, 5, 5, dtype=torch.float64)
        for b in range(2):
            for i in range(5):
                for k in range(K):
                    j = i + k - P
                    if 0 <= j < 5 and (mask is None or mask[b, j]):
                        band[b, :, i, j] = kernels[b, i, :, k]
        torch.testing.assert_close(got.weights, band, **F64)


@pytest.mark.parametrize("cls", CONVS, ids=lambda c: c.__name__)
@pytest.mark.parametrize("causal", [False, True], ids=["centred", "causal"])
def test_gradcheck(cls, causal):
    m = conv(cls, dim=4, heads=2, K=3)
    x = inputs(L=4, dim=4).requires_grad_()
    mask = torch.tensor([[True] * 4, [True, True, True, False]])
    assert torch.autograd.gradcheck(lambda x: m(x, key_mask=mask, is_causal=causal).output, (x,))
    assert torch.autograd.gradcheck(lambda x: m(x, is_causal=causal, need_weights=True).weights, (x,))


def test_dynamic_kernels_are_distributions_over_their_taps_per_position():
    m = conv(DynamicConv, K=4)
    u = inputs(L=7)
    w = m.kernels(u)
    assert w.shape == (2, 7, 3, 4)
    assert (w > 0).all()
    torch.testing.assert_close(w.sum(-1), torch.ones(2, 7, 3, dtype=torch.float64), **F64)
    assert not torch.allclose(w[:, 0], w[:, 1])  # one kernel per time step
    lw = conv(LightweightConv, K=4).kernels(u)
    assert lw.shape == (3, 4)
    torch.testing.assert_close(lw.sum(-1), torch.ones(3, dtype=torch.float64), **F64)


@pytest.mark.parametrize("cls", CONVS, ids=lambda c: c.__name__)
def test_causal_convolution_never_looks_ahead(cls):
    m = conv(cls, K=4)
    x = inputs(L=7)
    full = m(x, is_causal=True).output
    for t in range(7):
        changed = x.clone()
        changed[:, t:] = torch.randn_like(changed[:, t:]) * 10
        out = m(changed, is_causal=True).output
        torch.testing.assert_close(out[:, :t], full[:, :t], **F64)
        assert not torch.allclose(out[:, t], full[:, t])
    # the centred window of K = 4 covers (K - 1) // 2 = 1 position behind and K // 2 = 2 ahead
    centred = m(x).output
    changed = x.clone()
    changed[:, 4] += 1
    assert not torch.allclose(m(changed).output[:, 2], centred[:, 2])
    torch.testing.assert_close(m(changed).output[:, :2], centred[:, :2], **F64)


@pytest.mark.parametrize("cls", CONVS, ids=lambda c: c.__name__)
@pytest.mark.parametrize("causal", [False, True], ids=["centred", "causal"])
def test_masked_positions_have_no_influence(cls, causal):
    m = conv(cls, K=3)
    x = inputs(L=6)
    mask = torch.tensor([[True] * 6, [True] * 4 + [False] * 2])
    out = m(x, key_mask=mask, is_causal=causal).output
    noisy = x.clone()
    noisy[1, 4:] = 1e3 * torch.randn(2, 6, dtype=torch.float64)
    torch.testing.assert_close(m(noisy, key_mask=mask, is_causal=causal).output[1, :4], out[1, :4], **F64)
    alone = m(x[1:, :4], is_causal=causal).output  # the real part alone: padding is the zeros of the window's edge
    torch.testing.assert_close(out[1, :4], alone[0], **F64)
    # a mask in the middle: the position contributes zero
    mid = torch.ones(2, 6, dtype=torch.bool)
    mid[:, 2] = False
    noisy = x.clone()
    noisy[:, 2] = 99.0
    torch.testing.assert_close(m(noisy, key_mask=mid, is_causal=causal).output[:, [0, 1, 3, 4, 5]],
                               m(x, key_mask=mid, is_causal=causal).output[:, [0, 1, 3, 4, 5]], **F64)


@pytest.mark.parametrize("cls", CONVS, ids=lambda c: c.__name__)
@pytest.mark.parametrize("K", [1, 2, 5])
def test_incremental_decoding_with_a_cache_equals_the_full_pass(cls, K):
    m = conv(cls, K=K)
    x = inputs(L=7)
    with torch.no_grad():
        full = m(x, is_causal=True, need_weights=True)
        cache = m.new_cache()
        steps = [m(x[:, :3], is_causal=True, cache=cache, need_weights=True)]  # a prompt, then one at a time
        steps += [m(x[:, t:t + 1], is_causal=True, cache=cache, need_weights=True) for t in range(3, 7)]
    torch.testing.assert_close(torch.cat([s.output for s in steps], 1), full.output, **F64)
    for t, s in zip([3, 4, 5, 6], steps[1:]):  # weights over every position so far, zero outside the window
        torch.testing.assert_close(s.weights[:, :, 0], full.weights[:, :, t, : t + 1], **F64)
    assert len(cache) == 7 and cache.window.shape == (2, K - 1, 6)  # never more than K - 1 inputs


def test_the_cache_with_padding_and_beam_reordering():
    m = conv(DynamicConv, K=3)
    x = inputs(L=5)
    mask = torch.tensor([[True] * 5, [True, True, False, True, True]])
    full = m(x, key_mask=mask, is_causal=True).output
    cache = ConvCache()
    steps = [m(x[:, t:t + 1], key_mask=mask[:, : t + 1], is_causal=True, cache=cache).output for t in range(5)]
    torch.testing.assert_close(torch.cat(steps, 1), full, **F64)
    cache = ConvCache()
    m(x[:, :2], is_causal=True, cache=cache)
    cache.index_select_(torch.tensor([1, 1]))
    torch.testing.assert_close(m(x[[1, 1], 2:3], is_causal=True, cache=cache).output,
                               m(x[[1, 1], :3], is_causal=True).output[:, 2:], **F64)


def test_weight_dropout_drops_taps_in_training_only():
    m = conv(LightweightConv, K=5, weight_dropout=0.5).train()
    torch.manual_seed(3)
    w = m.kernels(inputs())
    assert (w == 0).any() and not torch.allclose(w.sum(-1), torch.ones(3, dtype=torch.float64))
    m.eval()
    torch.testing.assert_close(m.kernels(inputs()).sum(-1), torch.ones(3, dtype=torch.float64))


@pytest.mark.parametrize("name", ["lightweight", "dynamic"])
def test_registered_with_family_and_paper(name):
    info = attnzoo.registry.get(name)
    assert info.family == "convolutional" and "Wu et al. 2019" in info.paper and not info.step_wise
    m = attnzoo.create(name, dim=8, num_heads=2)
    assert m.kernel_size == 7 and m(torch.randn(2, 3, 8)).output.shape == (2, 3, 8)


def test_bad_input_names_the_argument():
    m = conv(LightweightConv)
    with pytest.raises(ValueError, match=r"x must have shape \(B, L, 6\).*got \(2, 5\)"):
        m(torch.randn(2, 5, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"key_mask must have shape \(B, S\) = \(2, 5\), got \(2, 4\)"):
        m(inputs(), key_mask=torch.ones(2, 4, dtype=torch.bool))
    with pytest.raises(TypeError, match="key_mask must be boolean"):
        m(inputs(), key_mask=torch.ones(2, 5))
    with pytest.raises(TypeError, match="got a KVCache; pass layer.new_cache"):
        m(inputs(), is_causal=True, cache=KVCache())
    with pytest.raises(ValueError, match="pass is_causal=True"):
        m(inputs(), cache=m.new_cache())
    with pytest.raises(TypeError, match="x has dtype torch.float32 but the layer's weights are torch.float64"):
        m(torch.randn(2, 5, 6))
    with pytest.raises(ValueError, match=r"dim \(6\) must be divisible by num_heads \(4\)"):
        LightweightConv(6, 4)
    cache = m.new_cache()
    m(inputs(), is_causal=True, cache=cache)
    with pytest.raises(ValueError, match="does not continue the cached inputs"):
        m(inputs(B=3), is_causal=True, cache=cache)


# --------------------------------------------------------------------------- in a Transformer
@pytest.mark.parametrize("kind", ["lightweight", "dynamic"])
def test_blocks_take_a_convolution_in_their_self_attention_slot(kind):
    torch.manual_seed(0)
    cfg = BlockConfig(dim=8, num_heads=2, dropout=0.0, self_attention=kind, kernel_size=3)
    enc, dec = EncoderBlock(cfg).eval(), DecoderBlock(cfg).eval()
    assert isinstance(enc.self_attn, LightweightConv) and enc.self_attn.dynamic == (kind == "dynamic")
    x, mem = torch.randn(2, 5, 8), torch.randn(2, 4, 8)
    out = enc(x, key_mask=torch.tensor([[True] * 5, [True] * 3 + [False] * 2]), need_weights=True)
    assert out.output.shape == (2, 5, 8) and out.weights["self"].shape == (2, 2, 5, 5)
    full = dec(x, mem).output
    sc, cc = dec.self_attn.new_cache(), KVCache()
    steps = [dec(x[:, t:t + 1], mem if t == 0 else None, self_cache=sc, cross_cache=cc).output for t in range(5)]
    torch.testing.assert_close(torch.cat(steps, 1), full, atol=1e-6, rtol=1e-5)
    with pytest.raises(ValueError, match="go into multi-head self-attention"):
        BlockConfig(self_attention=kind, positions="rope")


@pytest.mark.parametrize("kind", ["lightweight", "dynamic"])
def test_transformer_with_convolutions_decodes_step_by_step_as_the_full_pass(kind):
    torch.manual_seed(0)
    model = TransformerSeq2Seq(TransformerConfig(src_vocab=12, tgt_vocab=10, dim=16, num_heads=2, enc_layers=2,
                                                 dec_layers=2, dropout=0.0, self_attention=kind,
                                                 kernel_size=3)).eval()
    src = torch.randint(4, 12, (3, 6))
    lengths = torch.tensor([6, 3, 5])
    src[torch.arange(6)[None, :] >= lengths[:, None]] = 0
    tgt = torch.randint(3, 10, (3, 5))
    with torch.no_grad():
        full, full_w = model(src, lengths, tgt, need_weights=True)
        memory, state = model.encode(src, lengths)
        assert isinstance(state.self_caches[0], ConvCache)
        steps = [model.step(tgt[:, t], state, memory) for t in range(5)]
    torch.testing.assert_close(torch.stack([s[0] for s in steps], 1), full, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(torch.stack([s[1] for s in steps], 1), full_w, atol=1e-5, rtol=1e-5)
    alone, _ = model(src[1:2, :3], lengths[1:2], tgt[1:2])  # source padding changes nothing
    torch.testing.assert_close(alone[0], full[1], atol=1e-5, rtol=1e-5)


# --------------------------------------------------------------------------- attention-augmented convolution
def aaconv(relative=True, **kw):
    torch.manual_seed(0)
    kw = dict(dict(dk=4, dv=4, num_heads=2, max_size=5), **kw)
    m = AugmentedConv2d(3, 7, 3, relative=relative, **kw).double()
    if relative:
        with torch.no_grad():  # large relative embeddings, so that a wrong offset shows
            m.rel_h.normal_(0, 1.0)
            m.rel_w.normal_(0, 1.0)
    return m


def reference_aaconv_attention(m, x):
    """softmax_(y',x')(q_yx . (k_y'x' + r^W_(x'-x) + r^H_(y'-y)) / sqrt(Dk)) v_y'x' per head, by loops."""
    B, _, Y, X = x.shape
    N = m.num_heads
    dkh, dvh = m.dk // N, m.dv // N
    qkv = torch.einsum("oc,bcyx->boyx", m.qkv.weight[:, :, 0, 0], x) + m.qkv.bias[None, :, None, None]
    q, k, v = qkv[:, : m.dk], qkv[:, m.dk: 2 * m.dk], qkv[:, 2 * m.dk:]
    my, mx = m.max_size
    out = torch.zeros(B, m.dv, Y, X, dtype=x.dtype)
    weights = torch.zeros(B, N, Y * X, Y * X, dtype=x.dtype)
    for b in range(B):
        for n in range(N):
            for y in range(Y):
                for xx in range(X):
                    qv = q[b, n * dkh:(n + 1) * dkh, y, xx]
                    logits = torch.zeros(Y, X, dtype=x.dtype)
                    for y2 in range(Y):
                        for x2 in range(X):
                            key = k[b, n * dkh:(n + 1) * dkh, y2, x2]
                            if m.relative:
                                key = key + m.rel_w[x2 - xx + mx - 1] + m.rel_h[y2 - y + my - 1]
                            logits[y2, x2] = qv @ key / math.sqrt(dkh)
                    a = torch.softmax(logits.flatten(), 0)
                    weights[b, n, y * X + xx] = a
                    out[b, n * dvh:(n + 1) * dvh, y, xx] = v[b, n * dvh:(n + 1) * dvh].flatten(1) @ a
    out = torch.einsum("oc,bcyx->boyx", m.o_proj.weight[:, :, 0, 0], out) + m.o_proj.bias[None, :, None, None]
    return out, weights


@pytest.mark.parametrize("relative", [True, False])
@pytest.mark.parametrize("size", [(3, 4), (5, 2)])
def test_aaconv_is_a_convolution_then_attention_with_relative_logits(relative, size):
    m = aaconv(relative)
    x = torch.randn(2, 3, *size, dtype=torch.float64)
    got = m(x, need_weights=True)
    assert got.output.shape == (2, 7, *size) and got.weights.shape == (2, 2, size[0] * size[1], size[0] * size[1])
    torch.testing.assert_close(got.output[:, :3], F.conv2d(x, m.conv.weight, m.conv.bias, padding=1), **F64)
    want, want_w = reference_aaconv_attention(m, x)
    torch.testing.assert_close(got.output[:, 3:], want, **F64)
    torch.testing.assert_close(got.weights, want_w, **F64)


def test_aaconv_gradcheck_and_relative_embeddings_of_a_smaller_image():
    m = aaconv(max_size=(4, 3))
    x = torch.randn(1, 3, 2, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: m(x).output, (x,))
    with pytest.raises(ValueError, match=r"larger than the 4 x 3 images its relative embeddings cover"):
        m(torch.randn(1, 3, 5, 3, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"x must have shape \(B, C_in, Y, X\) = \(B, 3, Y, X\)"):
        m(torch.randn(1, 4, 2, 2, dtype=torch.float64))


def test_aaconv_defaults_and_all_attention_channels():
    m = attnzoo.create("aaconv", 8, 16)  # dv = C_out / 4, dk = 2 dv
    assert (m.dv, m.dk) == (4, 8) and m(torch.randn(2, 8, 6, 6)).output.shape == (2, 16, 6, 6)
    only = AugmentedConv2d(3, 4, dk=4, dv=4, num_heads=2)  # no convolution channels left: all attention
    assert only.conv is None and only(torch.randn(1, 3, 3, 3)).output.shape == (1, 4, 3, 3)
    with pytest.raises(ValueError, match="kernel_size must be odd"):
        AugmentedConv2d(3, 8, 4)


# --------------------------------------------------------------------------- ConvS2S multi-step attention
def multistep_case(seed=0):
    torch.manual_seed(seed)
    m = MultiStepAttention(5, 4).double()
    g = torch.Generator().manual_seed(seed + 1)
    h, tg = torch.randn(2, 3, 5, generator=g, dtype=torch.float64), torch.randn(2, 3, 4, generator=g,
                                                                                 dtype=torch.float64)
    z, e = torch.randn(2, 6, 4, generator=g, dtype=torch.float64), torch.randn(2, 6, 4, generator=g,
                                                                                dtype=torch.float64)
    mask = torch.tensor([[True] * 6, [True] * 4 + [False] * 2])
    return m, h, tg, z, e, mask


def reference_multistep(m, h, tg, z, e, mask):
    """d_i = sqrt(.5)(W_d h_i + b_d + g_i); a_ij = softmax_j(d_i . z_j);
    c_i = m sqrt(1/m) sum_j a_ij sqrt(.5)(z_j + e_j); out_i = sqrt(.5)(W_o c_i + b_o + h_i), by loops over i and j."""
    B, T, _ = h.shape
    out = torch.zeros_like(h)
    weights = torch.zeros(B, T, z.shape[1], dtype=h.dtype)
    for b in range(B):
        real = [j for j in range(z.shape[1]) if mask[b, j]]
        n = len(real)
        for i in range(T):
            d = math.sqrt(0.5) * (m.in_proj.weight @ h[b, i] + m.in_proj.bias + tg[b, i])
            scores = torch.stack([d @ z[b, j] for j in real])
            a = torch.exp(scores - scores.max())
            a = a / a.sum()
            c = sum(a[r] * math.sqrt(0.5) * (z[b, j] + e[b, j]) for r, j in enumerate(real))
            c = c * n * math.sqrt(1 / n)
            out[b, i] = math.sqrt(0.5) * (m.o_proj.weight @ c + m.o_proj.bias + h[b, i])
            weights[b, i, real] = a
    return out, weights


def test_multistep_attention_equals_the_loop_over_its_scaled_equation():
    m, h, tg, z, e, mask = multistep_case()
    got = m(h, tg, z, z + e, mask, need_weights=True)
    want, want_w = reference_multistep(m, h, tg, z, e, mask)
    torch.testing.assert_close(got.output, want, **F64)
    torch.testing.assert_close(got.weights, want_w, **F64)
    assert torch.equal(got.weights[1, :, 4:], torch.zeros(3, 2, dtype=torch.float64))
    no_mask = m(h, tg, z, z + e).output  # without a mask m is the source length
    torch.testing.assert_close(no_mask, reference_multistep(m, h, tg, z, e, torch.ones(2, 6, dtype=torch.bool))[0],
                               **F64)


def test_multistep_gradcheck_padding_and_a_fully_masked_row():
    m, h, tg, z, e, mask = multistep_case(1)
    args = tuple(t.requires_grad_() for t in (h, tg, z, e))
    assert torch.autograd.gradcheck(lambda h, tg, z, e: m(h, tg, z, z + e, mask).output, args)
    with torch.no_grad():
        out = m(h, tg, z, z + e, mask).output
        noisy = z.clone()
        noisy[1, 4:] = 1e4
        torch.testing.assert_close(m(h, tg, noisy, noisy + e, mask).output, out, **F64)
        with pytest.warns(UserWarning, match="False everywhere"):  # c = 0: the residual and bias
            none = m(h, tg, z, z + e, torch.zeros(2, 6, dtype=torch.bool)).output
        torch.testing.assert_close(none, math.sqrt(0.5) * (m.o_proj.bias + h), **F64)


def test_multistep_bad_input_names_the_argument():
    m, h, tg, z, e, mask = multistep_case()
    with pytest.raises(ValueError, match=r"target_embed must have shape \(2, 3, 4\), got \(2, 3, 5\)"):
        m(h, h, z, z + e)
    with pytest.raises(ValueError, match=r"values must have shape \(2, 6, 4\), got \(2, 5, 4\)"):
        m(h, tg, z, (z + e)[:, :5])
    with pytest.raises(ValueError, match=r"key_mask must have shape \(B, S\) = \(2, 6\)"):
        m(h, tg, z, z + e, mask[:, :5])
