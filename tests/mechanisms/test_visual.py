"""The visual family: each mechanism against a plain loop over its paper's equation (float64, tiny inputs)."""

import math

import pytest
import torch

import attnzoo
from attnzoo.mechanisms.visual import doubly_stochastic_penalty, flatten_grid
from attnzoo.registry import mechanisms

VISUAL = ["soft_spatial", "se", "cbam", "nonlocal"]
B, C, H, W = 2, 6, 3, 4
DQ, HIDDEN = 5, 7


def feature_map(H=H, W=W, seed=1, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    return scale * torch.randn(B, C, H, W, dtype=torch.float64, generator=g)


def block(name, **options):
    torch.manual_seed(0)
    m = attnzoo.create(name, channels=C, **options).double().eval()
    for p in m.parameters():  # away from the default init, so every term of the equation matters
        with torch.no_grad():
            p.add_(0.3 * torch.randn_like(p))
    return m.requires_grad_(False)  # the loops read parameters as floats; gradchecks pass their own copies


def sigmoid(v):
    return 1.0 / (1.0 + math.exp(-v))


def softmax(scores):
    m = max(scores)
    e = [math.exp(s - m) for s in scores]
    return [x / sum(e) for x in e]


def test_registry_lists_the_visual_family_with_papers_and_kinds():
    infos = {i.name: i for i in mechanisms("visual")}
    assert set(VISUAL) <= set(infos)
    assert infos["soft_spatial"].kind == "step" and infos["soft_spatial"].step_wise
    assert all(infos[n].kind == "image" and not infos[n].step_wise for n in ("se", "cbam", "nonlocal"))
    assert "Xu" in infos["soft_spatial"].paper and "Hu" in infos["se"].paper and "Woo" in infos["cbam"].paper
    assert "Wang" in infos["nonlocal"].paper and "Zhang" in infos["nonlocal"].paper
    assert "sigmoid" in infos["se"].summary and "softmax" in infos["nonlocal"].summary


# --------------------------------------------------------------------------- soft spatial (Show, Attend and Tell)
def soft_spatial(**options):
    torch.manual_seed(0)
    return attnzoo.create("soft_spatial", query_dim=DQ, key_dim=C, hidden_dim=HIDDEN, **options).double().eval()


def annotations(L=H * W):
    keys = flatten_grid(feature_map())  # (B, L, C)
    mask = torch.ones(B, L, dtype=torch.bool)
    mask[1, L - 4:] = False  # the second image's last 4 grid cells are padding
    return keys, mask


def test_flatten_grid_lists_the_cells_row_by_row():
    x = feature_map()
    a = flatten_grid(x)
    assert a.shape == (B, H * W, C)
    for i in range(H):
        for j in range(W):
            assert torch.equal(a[:, i * W + j], x[:, :, i, j])
    with pytest.raises(ValueError, match=r"features must have shape \(B, D, H, W\)"):
        flatten_grid(torch.randn(2, 3, 4))


def test_soft_spatial_matches_the_paper_equations_in_a_loop():
    attn = soft_spatial()
    keys, mask = annotations()
    h = torch.randn(B, DQ, dtype=torch.float64)
    attn.requires_grad_(False)
    ctx, w, state = attn(h, keys, keys, mask)
    Wh, Wa, ba = attn.score.query_proj.weight, attn.score.key_proj.weight, attn.score.key_proj.bias
    v, fw, fb = attn.score.energy.weight[0], attn.gate.weight[0], attn.gate.bias[0]
    for b in range(B):
        valid = [i for i in range(H * W) if mask[b, i]]
        e = []
        for i in valid:  # e_ti = w^T tanh(W_a a_i + b + W_h h)
            hidden = [math.tanh(sum(Wa[k, d] * keys[b, i, d] for d in range(C)) + ba[k]
                                + sum(Wh[k, q] * h[b, q] for q in range(DQ))) for k in range(HIDDEN)]
            e.append(sum(v[k] * hidden[k] for k in range(HIDDEN)))
        alpha = softmax([float(x) for x in e])
        beta = sigmoid(float(sum(fw[q] * h[b, q] for q in range(DQ)) + fb))
        for n, i in enumerate(valid):
            assert abs(float(w[b, i]) - alpha[n]) < 1e-12
        for d in range(C):
            z = beta * sum(alpha[n] * float(keys[b, i, d]) for n, i in enumerate(valid))
            assert abs(float(ctx[b, d]) - z) < 1e-12
        assert abs(float(state.extra["gate"][b, 0]) - beta) < 1e-12


def test_soft_spatial_weights_sum_to_one_masked_cells_get_zero_and_the_gate_is_in_0_1():
    attn = soft_spatial()
    keys, mask = annotations()
    hs = 3 * torch.randn(B, 4, DQ, dtype=torch.float64)
    state = attn.initial_state(keys, keys, mask)
    ctx_all, w_all, s_all = attn(hs, keys, keys, mask, state)  # T steps at once (stateless)
    assert w_all.shape == (B, 4, H * W) and ctx_all.shape == (B, 4, C)
    torch.testing.assert_close(w_all.sum(-1), torch.ones(B, 4, dtype=torch.float64))
    assert (w_all[1, :, -4:] == 0).all() and (w_all >= 0).all()
    gate = s_all.extra["gate"]
    assert gate.shape == (B, 4, 1) and (gate >= 0).all() and (gate <= 1).all()
    for t in range(4):  # one step at a time gives the same
        ctx, w, state = attn(hs[:, t], keys, keys, mask, state)
        torch.testing.assert_close(ctx, ctx_all[:, t])
        torch.testing.assert_close(w, w_all[:, t])
    beams = state.index_select(torch.tensor([1, 1, 0]))  # beam search reorders the gate with the rest
    assert torch.equal(beams.extra["gate"][0], state.extra["gate"][1])


def test_soft_spatial_without_gate_is_additive_attention():
    attn = soft_spatial(gate=False)
    ref = attnzoo.create("additive", query_dim=DQ, key_dim=C, hidden_dim=HIDDEN).double()
    ref.load_state_dict(attn.state_dict())
    keys, mask = annotations()
    h = torch.randn(B, DQ, dtype=torch.float64)
    got, want = attn(h, keys, keys, mask), ref(h, keys, keys, mask)
    torch.testing.assert_close(got[0], want[0])
    torch.testing.assert_close(got[1], want[1])
    assert "gate" not in got[2].extra


def test_soft_spatial_projects_the_grid_once_per_image(monkeypatch):
    attn = soft_spatial()
    keys, mask = annotations()
    calls = []
    original = attn.score.project_keys
    monkeypatch.setattr(attn.score, "project_keys", lambda k: calls.append(1) or original(k))
    state = attn.initial_state(keys, keys, mask)
    for _ in range(4):
        _, _, state = attn(torch.randn(B, DQ, dtype=torch.float64), keys, keys, mask, state)
    assert len(calls) == 1


def test_soft_spatial_gradcheck():
    attn = soft_spatial()
    keys, mask = annotations()
    h = torch.randn(B, DQ, dtype=torch.float64, requires_grad=True)
    keys = keys.detach().requires_grad_()
    assert torch.autograd.gradcheck(lambda h, k: attn(h, k, k, mask)[0], (h, keys))


def test_doubly_stochastic_penalty_is_the_formula():
    g = torch.Generator().manual_seed(3)
    weights = torch.rand(B, 5, 4, dtype=torch.float64, generator=g).softmax(-1)  # (B, T, L)
    key_mask = torch.tensor([[True] * 4, [True, True, True, False]])
    step_mask = torch.tensor([[True] * 5, [True, True, False, False, False]])
    got = doubly_stochastic_penalty(weights, key_mask, step_mask, lam=0.7, reduction="none")
    for b in range(B):
        want = 0.0
        for i in range(4):
            if key_mask[b, i]:
                want += (1 - sum(float(weights[b, t, i]) for t in range(5) if step_mask[b, t])) ** 2
        assert abs(float(got[b]) - 0.7 * want) < 1e-12
    plain = doubly_stochastic_penalty(weights)  # no masks, lambda 1, mean over the batch
    want = ((1 - weights.sum(1)) ** 2).sum(-1).mean()
    torch.testing.assert_close(plain, want)
    torch.testing.assert_close(doubly_stochastic_penalty(weights, reduction="sum"), 2 * want)
    spread = torch.full((1, 4, 4), 0.25, dtype=torch.float64)  # T = L and each cell gets 1 in total
    assert float(doubly_stochastic_penalty(spread)) == 0.0
    w = weights.clone().requires_grad_()
    assert torch.autograd.gradcheck(lambda w: doubly_stochastic_penalty(w, key_mask, step_mask), (w,))


def test_doubly_stochastic_penalty_names_bad_arguments():
    w = torch.rand(2, 5, 4)
    with pytest.raises(ValueError, match=r"weights must have shape \(B, T, L\)"):
        doubly_stochastic_penalty(torch.rand(5, 4))
    with pytest.raises(ValueError, match=r"key_mask must have shape \(B, L\) = \(2, 4\).*got \(2, 5\)"):
        doubly_stochastic_penalty(w, torch.ones(2, 5, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"step_mask must have shape \(B, T\) = \(2, 5\)"):
        doubly_stochastic_penalty(w, step_mask=torch.ones(2, 4, dtype=torch.bool))
    with pytest.raises(TypeError, match="key_mask must be boolean"):
        doubly_stochastic_penalty(w, torch.ones(2, 4))
    with pytest.raises(ValueError, match="unknown reduction 'avg'"):
        doubly_stochastic_penalty(w, reduction="avg")


# --------------------------------------------------------------------------- squeeze-and-excitation
def se_reference(m, x):
    """s_c = sigmoid(W_2 relu(W_1 z + b_1) + b_2)_c, z_c = mean over H x W; y = s_c x_c."""
    W1, b1, W2, b2 = m.fc1.weight, m.fc1.bias, m.fc2.weight, m.fc2.bias
    y, gates = torch.empty_like(x), torch.empty(x.shape[:2], dtype=x.dtype)
    for b in range(x.shape[0]):
        z = [sum(float(x[b, c, i, j]) for i in range(x.shape[2]) for j in range(x.shape[3])) / (x.shape[2] * x.shape[3])
             for c in range(C)]
        hidden = [max(0.0, sum(float(W1[k, c]) * z[c] for c in range(C)) + float(b1[k])) for k in range(W1.shape[0])]
        for c in range(C):
            s = sigmoid(sum(float(W2[c, k]) * hidden[k] for k in range(W1.shape[0])) + float(b2[c]))
            gates[b, c] = s
            y[b, c] = s * x[b, c]
    return y, gates


def test_se_matches_the_paper_in_a_loop():
    m = block("se", reduction=2)
    assert m.fc1.out_features == 3  # C / r
    x = feature_map()
    out = m(x, need_weights=True)
    y, gates = se_reference(m, x)
    torch.testing.assert_close(out.output, y, atol=1e-12, rtol=1e-12)
    torch.testing.assert_close(out.channel, gates, atol=1e-12, rtol=1e-12)
    assert out.spatial is None and out.positions is None
    torch.testing.assert_close(m(x), y, atol=1e-12, rtol=1e-12)  # need_weights=False: the tensor alone


# --------------------------------------------------------------------------- CBAM
def cbam_reference(m, x):
    """M_c = sigmoid(MLP(avg) + MLP(max)); x' = M_c x; M_s = sigmoid(conv([mean_c x'; max_c x'])); y = M_s x'."""
    W0, b0, W1, b1 = m.mlp[0].weight, m.mlp[0].bias, m.mlp[2].weight, m.mlp[2].bias
    K, bias = m.spatial.weight[0], float(m.spatial.bias[0])  # (2, k, k)
    k = K.shape[-1]
    _, _, Hh, Ww = x.shape

    def mlp(v):
        hidden = [max(0.0, sum(float(W0[j, c]) * v[c] for c in range(C)) + float(b0[j])) for j in range(W0.shape[0])]
        return [sum(float(W1[c, j]) * hidden[j] for j in range(W0.shape[0])) + float(b1[c]) for c in range(C)]

    y = torch.empty_like(x)
    m_c = torch.empty(x.shape[:2], dtype=x.dtype)
    m_s = torch.empty(x.shape[0], Hh, Ww, dtype=x.dtype)
    for b in range(x.shape[0]):
        cells = [(i, j) for i in range(Hh) for j in range(Ww)]
        avg = [sum(float(x[b, c, i, j]) for i, j in cells) / len(cells) for c in range(C)]
        peak = [max(float(x[b, c, i, j]) for i, j in cells) for c in range(C)]
        gate = [sigmoid(a + p) for a, p in zip(mlp(avg), mlp(peak))]
        m_c[b] = torch.tensor(gate, dtype=x.dtype)
        x1 = [[[gate[c] * float(x[b, c, i, j]) for j in range(Ww)] for i in range(Hh)] for c in range(C)]
        pooled = [[[sum(x1[c][i][j] for c in range(C)) / C for j in range(Ww)] for i in range(Hh)],
                  [[max(x1[c][i][j] for c in range(C)) for j in range(Ww)] for i in range(Hh)]]
        for i in range(Hh):
            for j in range(Ww):
                acc = bias
                for ch in range(2):
                    for di in range(k):
                        for dj in range(k):
                            ii, jj = i + di - k // 2, j + dj - k // 2
                            if 0 <= ii < Hh and 0 <= jj < Ww:  # zero padding
                                acc += float(K[ch, di, dj]) * pooled[ch][ii][jj]
                m_s[b, i, j] = sigmoid(acc)
                for c in range(C):
                    y[b, c, i, j] = m_s[b, i, j] * x1[c][i][j]
    return y, m_c, m_s


@pytest.mark.parametrize("kernel_size", [3, 7])
def test_cbam_matches_the_paper_in_a_loop(kernel_size):
    m = block("cbam", reduction=3, kernel_size=kernel_size)
    x = feature_map()
    out = m(x, need_weights=True)
    y, m_c, m_s = cbam_reference(m, x)
    torch.testing.assert_close(out.output, y, atol=1e-12, rtol=1e-12)
    torch.testing.assert_close(out.channel, m_c, atol=1e-12, rtol=1e-12)
    torch.testing.assert_close(out.spatial, m_s, atol=1e-12, rtol=1e-12)
    assert out.positions is None


# --------------------------------------------------------------------------- non-local / SAGAN
def conv1x1(conv, x_b):
    """A 1x1 convolution at every cell: (C_in, H, W) -> (C_out, H, W), as a loop."""
    Wt, bias = conv.weight[:, :, 0, 0], conv.bias
    out = torch.empty(Wt.shape[0], *x_b.shape[1:], dtype=x_b.dtype)
    for o in range(Wt.shape[0]):
        for i in range(x_b.shape[1]):
            for j in range(x_b.shape[2]):
                out[o, i, j] = sum(float(Wt[o, c]) * float(x_b[c, i, j]) for c in range(x_b.shape[0])) + float(bias[o])
    return out


def maxpool2_ceil(t):
    """2x2 max-pooling with ceil mode (a last odd row/column pools alone), as a loop."""
    Ch, Hh, Ww = t.shape
    out = torch.empty(Ch, (Hh + 1) // 2, (Ww + 1) // 2, dtype=t.dtype)
    for c in range(Ch):
        for i in range(out.shape[1]):
            for j in range(out.shape[2]):
                out[c, i, j] = max(float(t[c, ii, jj]) for ii in range(2 * i, min(2 * i + 2, Hh))
                                   for jj in range(2 * j, min(2 * j + 2, Ww)))
    return out


def nonlocal_reference(m, x, subsample):
    y = torch.empty_like(x)
    _, _, Hh, Ww = x.shape
    N = Hh * Ww
    weights = []
    for b in range(x.shape[0]):
        theta, phi, g = conv1x1(m.theta, x[b]), conv1x1(m.phi, x[b]), conv1x1(m.g, x[b])
        if subsample:
            phi, g = maxpool2_ceil(phi), maxpool2_ceil(g)
        q = theta.reshape(theta.shape[0], N)  # (C_k, N)
        k = phi.reshape(phi.shape[0], -1)  # (C_k, M)
        v = g.reshape(g.shape[0], -1)  # (C_i, M)
        M = k.shape[1]
        inner = torch.empty(v.shape[0], N, dtype=x.dtype)
        wb = torch.empty(N, M, dtype=x.dtype)
        for i in range(N):  # y_i = sum_j softmax_j(theta_i . phi_j) g_j
            a = softmax([sum(float(q[c, i]) * float(k[c, j]) for c in range(q.shape[0])) for j in range(M)])
            wb[i] = torch.tensor(a, dtype=x.dtype)
            for c in range(v.shape[0]):
                inner[c, i] = sum(a[j] * float(v[c, j]) for j in range(M))
        z = conv1x1(m.w_z, inner.reshape(-1, Hh, Ww))
        y[b] = x[b] + float(m.gamma) * z
        weights.append(wb)
    return y, torch.stack(weights)


@pytest.mark.parametrize("subsample", [False, True], ids=["full", "subsampled"])
@pytest.mark.parametrize("backend", ["eager", "auto"])
def test_nonlocal_matches_the_paper_in_a_loop(subsample, backend):
    m = block("nonlocal", inner_channels=4, key_channels=2, subsample=subsample, backend=backend)
    with torch.no_grad():
        m.gamma.fill_(0.7)
    x = feature_map(H=3, W=5)
    y, weights = nonlocal_reference(m, x, subsample)
    out = m(x, need_weights=True)
    M = 2 * 3 if subsample else 15  # ceil(3/2) * ceil(5/2)
    assert out.positions.shape == (B, 15, M)
    torch.testing.assert_close(out.output, y, atol=1e-12, rtol=1e-12)
    torch.testing.assert_close(out.positions, weights, atol=1e-12, rtol=1e-12)
    torch.testing.assert_close(out.positions.sum(-1), torch.ones(B, 15, dtype=torch.float64))
    torch.testing.assert_close(m(x), y, atol=1e-12, rtol=1e-12)  # the fused path (sdpa under "auto")


def test_nonlocal_batchnorm_residual_is_wangs_block():
    m = block("nonlocal", residual="batchnorm")
    x = feature_map()
    with torch.no_grad():
        m.norm.weight.fill_(1.3)
    bn = m.norm
    inner = attnzoo.attend(m.theta(x).flatten(2).transpose(1, 2), m.phi(x).flatten(2).transpose(1, 2),
                           m.g(x).flatten(2).transpose(1, 2), score="dot").output  # (B, N, C_i)
    z = m.w_z(inner.transpose(1, 2).reshape(B, -1, H, W))
    want = x + (z - bn.running_mean[:, None, None]) / torch.sqrt(bn.running_var[:, None, None] + bn.eps) \
        * bn.weight[:, None, None] + bn.bias[:, None, None]
    torch.testing.assert_close(m(x), want)


# --------------------------------------------------------------------------- the blocks' shared properties
IMAGE_BLOCKS = [("se", dict(reduction=2)), ("cbam", dict(reduction=2, kernel_size=3)),
                ("nonlocal", dict()), ("nonlocal", dict(subsample=True, residual="batchnorm"))]


@pytest.mark.parametrize("name,options", IMAGE_BLOCKS)
@pytest.mark.parametrize("size", [(3, 4), (1, 1), (5, 2)])
def test_blocks_keep_the_input_shape(name, options, size):
    m = block(name, **options)
    x = feature_map(*size)
    assert m(x).shape == x.shape
    out = m(x, need_weights=True)
    assert out.output.shape == x.shape and out.output.dtype == x.dtype
    n = size[0] * size[1]
    for got, want in ((out.channel, (B, C)), (out.spatial, (B, *size)), (out.positions, (B, n))):
        if got is not None:
            assert got.shape[:len(want)] == want
            assert (got >= 0).all() and (got <= 1).all()


@pytest.mark.parametrize("name,options", [("se", dict(residual_scale=True)), ("cbam", dict(residual_scale=True)),
                                          ("nonlocal", dict()), ("nonlocal", dict(residual="batchnorm")),
                                          ("nonlocal", dict(subsample=True))])
def test_blocks_with_their_learned_scale_at_zero_return_the_input_exactly(name, options):
    torch.manual_seed(0)
    m = attnzoo.create(name, channels=C, **options).double()  # as built: the scale starts at zero
    x = feature_map(scale=50.0)
    for mode in (m.train(), m.eval()):
        assert torch.equal(mode(x), x)
        assert torch.equal(mode(x, need_weights=True).output, x)


@pytest.mark.parametrize("name", ["se", "cbam"])
def test_residual_scale_one_is_the_papers_block(name):
    plain = block(name, reduction=2)
    scaled = attnzoo.create(name, channels=C, reduction=2, residual_scale=True).double().eval()
    state = plain.state_dict()
    state["gamma"] = torch.tensor(1.0, dtype=torch.float64)
    scaled.load_state_dict(state)
    x = feature_map()
    torch.testing.assert_close(scaled(x), plain(x))
    assert any(p is scaled.gamma for p in scaled.parameters())


@pytest.mark.parametrize("name,options", IMAGE_BLOCKS + [("se", dict(residual_scale=True))])
def test_blocks_gradcheck(name, options):
    m = block(name, **options)
    if name == "nonlocal" and options.get("residual", "gamma") == "gamma":
        with torch.no_grad():
            m.gamma.fill_(0.5)
    x = feature_map(H=3, W=3).requires_grad_()
    assert torch.autograd.gradcheck(lambda x: m(x, need_weights=True).output, (x,))
    params = [p for p in m.parameters()]
    assert torch.autograd.gradcheck(lambda *ps: torch.func.functional_call(
        m, {n: p for (n, _), p in zip(m.named_parameters(), ps)}, (x.detach(),)), tuple(
        p.detach().clone().requires_grad_() for p in params))


def test_blocks_name_bad_input():
    se = attnzoo.create("se", channels=C)
    with pytest.raises(ValueError, match=r"x must have shape \(B, 6, H, W\) \(4-D\), got 3-D shape \(2, 6, 5\)"):
        se(torch.randn(2, 6, 5))
    with pytest.raises(ValueError, match=r"x must have shape \(B, 6, H, W\) \(channels=6\), got \(2, 5, 3, 3\)"):
        se(torch.randn(2, 5, 3, 3))
    with pytest.raises(ValueError, match=r"at least one position.*got \(2, 6, 0, 3\)"):
        attnzoo.create("nonlocal", channels=C)(torch.randn(2, 6, 0, 3))
    with pytest.raises(TypeError, match="x must be a floating-point tensor"):
        se(torch.ones(2, 6, 3, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="kernel_size must be a positive odd int"):
        attnzoo.create("cbam", channels=C, kernel_size=4)
    with pytest.raises(ValueError, match="channels must be a positive int"):
        attnzoo.create("se", channels=0)
    with pytest.raises(ValueError, match="unknown residual 'bn'; .*'batchnorm'"):
        attnzoo.create("nonlocal", channels=C, residual="bn")


def test_nonlocal_attention_is_recorded_by_capture():
    m = block("nonlocal", subsample=True)
    x = feature_map(H=4, W=4)
    with attnzoo.capture(m) as maps:
        m(x)
    (name,) = list(maps)
    torch.testing.assert_close(maps.last(name), m(x, need_weights=True).positions)
