"""The location-based family: each mechanism against a plain loop over its paper's equation."""

import math

import pytest
import torch

import attnzoo
from attnzoo.registry import mechanisms

LOCATION = ["location", "location_aware", "gmm", "local_m", "local_p", "monotonic"]
B, S, DQ, DK, DV = 2, 9, 6, 5, 4


def memory(S=S, dtype=torch.float64, seed=1):
    g = torch.Generator().manual_seed(seed)
    keys = torch.randn(B, S, DK, dtype=dtype, generator=g)
    values = torch.randn(B, S, DV, dtype=dtype, generator=g)
    mask = torch.ones(B, S, dtype=torch.bool)
    mask[1, S - 3:] = False  # the second sequence is 3 shorter
    return keys, values, mask


def queries(T, scale=1.0, seed=2):
    g = torch.Generator().manual_seed(seed)
    return scale * torch.randn(T, B, DQ, dtype=torch.float64, generator=g)


def build(name, **options):
    torch.manual_seed(0)
    defaults = {"location_aware": dict(channels=3, kernel_size=3), "local_m": dict(window=2),
                "local_p": dict(window=2), "monotonic": dict(noise_std=0.0, hard=False),
                "location": dict(max_length=12)}
    attn = attnzoo.create(name, query_dim=DQ, key_dim=DK, value_dim=DV, hidden_dim=7,
                          **{**defaults.get(name, {}), **options})
    return attn.double().eval()


def run(attn, qs, keys, values, mask, state=None):
    state = attn.initial_state(keys, values, mask) if state is None else state
    out = []
    for q in qs:
        ctx, w, state = attn(q, keys, values, mask, state)
        out.append((ctx, w, state))
    return out


# --------------------------------------------------------------------------- references (plain loops)
def softmax_over(scores, allowed):
    """softmax of a python list of scores over the allowed indices; zero elsewhere."""
    m = max(scores[s] for s in allowed)
    e = {s: math.exp(scores[s] - m) for s in allowed}
    z = sum(e.values())
    return [e[s] / z if s in e else 0.0 for s in range(len(scores))]


def mix(weights, values_b):
    return sum(w * values_b[s] for s, w in enumerate(weights))


def lengths(mask):
    return [int(m.sum()) for m in mask]


def ref_location(attn, qs, keys, values, mask):
    W, bias = attn.position_scores.weight, attn.position_scores.bias
    out = []
    for q in qs:
        step = []
        for b in range(B):
            scores = [float(W[s] @ q[b] + bias[s]) for s in range(S)]
            w = softmax_over(scores, range(lengths(mask)[b]))
            step.append((mix(w, values[b]), w))
        out.append(step)
    return out


def ref_location_aware(attn, qs, keys, values, mask):
    sc = attn.score
    Wq, Vk, bk, w_v = sc.query_proj.weight, sc.key_proj.weight, sc.key_proj.bias, sc.energy.weight[0]
    F, U = attn.location_conv.weight, attn.location_proj.weight  # (C, 1 or 2, r), (A, C)
    C, _, r = F.shape
    out, prev = [], [[1.0 / n if s < n else 0.0 for s in range(S)] for n in lengths(mask)]
    cum = [[0.0] * S for _ in range(B)]  # a_1 + ... + a_{t-1}

    def conv(c, i, x, s):  # (F_c * x)_s, zero padded, centred
        return sum(float(F[c, i, j]) * (x[s + j - r // 2] if 0 <= s + j - r // 2 < S else 0.0) for j in range(r))

    for q in qs:
        step = []
        for b in range(B):
            n = lengths(mask)[b]
            f = [[conv(c, 0, prev[b], s) + (conv(c, 1, cum[b], s) if attn.cumulative else 0.0)
                  for c in range(C)] for s in range(S)]
            scores = []
            for s in range(S):
                loc = U @ torch.tensor(f[s], dtype=torch.float64)
                scores.append(float(w_v @ torch.tanh(Wq @ q[b] + Vk @ keys[b, s] + bk + loc)))
            w = softmax_over(scores, range(n))
            step.append((mix(w, values[b]), w))
        prev = [w for _, w in step]
        cum = [[c + x for c, x in zip(cb, wb)] for cb, wb in zip(cum, prev)]
        out.append(step)
    return out


def ref_gmm(attn, qs, keys, values, mask):
    K = attn.components
    W, bias = attn.mixture.weight, attn.mixture.bias
    kappa = [[0.0] * K for _ in range(B)]
    out = []
    for q in qs:
        step = []
        for b in range(B):
            hat = (W @ q[b] + bias).tolist()
            alpha = [math.exp(x) for x in hat[:K]]
            beta = [math.exp(x) for x in hat[K:2 * K]]
            kappa[b] = [kappa[b][k] + math.exp(hat[2 * K + k]) for k in range(K)]
            w = [sum(alpha[k] * math.exp(-beta[k] * (kappa[b][k] - u) ** 2) for k in range(K))
                 if u <= lengths(mask)[b] else 0.0 for u in range(1, S + 1)]
            step.append((mix(w, values[b]), w))
        out.append(step)
    return out


def general_score(attn, q, k):
    return float(q @ (attn.score.key_proj.weight @ k))  # h_t^T W_a k_s


def ref_local_m(attn, qs, keys, values, mask):
    D, out = attn.window, []
    for t, q in enumerate(qs):
        step = []
        for b in range(B):
            allowed = [s for s in range(lengths(mask)[b]) if abs(s - t) <= D]
            scores = [general_score(attn, q[b], keys[b, s]) for s in range(S)]
            w = softmax_over(scores, allowed) if allowed else [0.0] * S
            step.append((mix(w, values[b]), w))
        out.append(step)
    return out


def ref_local_p(attn, qs, keys, values, mask):
    D, out = attn.window, []
    Wp, vp = attn.position_hidden.weight, attn.position_out.weight[0]
    for q in qs:
        step = []
        for b in range(B):
            n = lengths(mask)[b]
            p = n / (1 + math.exp(-float(vp @ torch.tanh(Wp @ q[b]))))  # S sigmoid(v_p^T tanh(W_p h_t))
            allowed = [s for s in range(n) if abs(s - p) <= D]
            scores = [general_score(attn, q[b], keys[b, s]) for s in range(S)]
            align = softmax_over(scores, allowed)
            w = [a * math.exp(-(s - p) ** 2 / (2 * (D / 2) ** 2)) for s, a in enumerate(align)]
            step.append((mix(w, values[b]), w))
        out.append(step)
    return out


def ref_monotonic(attn, qs, keys, values, mask):
    W, V, bk = attn.query_proj.weight, attn.key_proj.weight, attn.key_proj.bias
    v = attn.gain * attn.direction / attn.direction.norm()
    prev = [[1.0] + [0.0] * (S - 1) for _ in range(B)]
    out = []
    for q in qs:
        step = []
        for b in range(B):
            n = lengths(mask)[b]
            p = [1 / (1 + math.exp(-float(v @ torch.tanh(W @ q[b] + V @ keys[b, j] + bk) + attn.bias)))
                 if j < n else 0.0 for j in range(S)]
            # the paper's recurrence: q_j = (1 - p_{j-1}) q_{j-1} + a_{t-1,j};  a_tj = p_j q_j
            carry, w = 0.0, []
            for j in range(S):
                carry = (1 - p[j - 1]) * carry + prev[b][j] if j else prev[b][0]
                w.append(p[j] * carry)
            step.append((mix(w, values[b]), w))
        prev = [w for _, w in step]
        out.append(step)
    return out


REFERENCES = {"location": ref_location, "location_aware": ref_location_aware, "gmm": ref_gmm,
              "local_m": ref_local_m, "local_p": ref_local_p, "monotonic": ref_monotonic}


# --------------------------------------------------------------------------- tests
def test_registry_lists_the_location_family_as_step_wise():
    infos = {i.name: i for i in mechanisms("location")}
    assert set(infos) == set(LOCATION)
    assert all(i.step_wise for i in infos.values())
    assert "Chorowski" in infos["location_aware"].paper and "Graves" in infos["gmm"].paper
    assert "Raffel" in infos["monotonic"].paper and "kappa" in infos["gmm"].summary


CASES = [(name, {}) for name in LOCATION] + [("location_aware", {"cumulative": True})]


@pytest.mark.parametrize("name,options", CASES, ids=[n + ("-cumulative" if o else "") for n, o in CASES])
@torch.no_grad()
def test_float64_equals_plain_loop_of_the_papers_equation(name, options):
    attn = build(name, **options)
    keys, values, mask = memory()
    qs = queries(4)
    got = run(attn, qs, keys, values, mask)
    want = REFERENCES[name](attn, qs, keys, values, mask)
    for (ctx, w, _), ref in zip(got, want):
        for b in range(B):
            torch.testing.assert_close(w[b], torch.tensor(ref[b][1], dtype=torch.float64))
            torch.testing.assert_close(ctx[b], ref[b][0].to(torch.float64))


@pytest.mark.parametrize("name", LOCATION)
def test_gradcheck_over_two_steps(name):
    attn = build(name)
    keys, values, mask = memory(S=6)
    q1, q2 = (x.clone().requires_grad_() for x in queries(2))
    keys.requires_grad_()
    values.requires_grad_()

    def f(q1, q2, keys, values):
        state = attn.initial_state(keys, values, mask)
        c1, _, state = attn(q1, keys, values, mask, state)
        c2, w2, _ = attn(q2, keys, values, mask, state)
        return c1, c2, w2

    assert torch.autograd.gradcheck(f, (q1, q2, keys, values))


@pytest.mark.parametrize("name", LOCATION)
def test_state_handed_back_equals_running_from_scratch(name):
    """No hidden state: resuming from a saved state, or re-running, reproduces every step exactly."""
    attn = build(name)
    keys, values, mask = memory()
    qs = queries(5)
    first = run(attn, qs, keys, values, mask)
    again = run(attn, qs, keys, values, mask)
    resumed = run(attn, qs[2:], keys, values, mask, state=first[1][2])
    for (c, w, _), (c2, w2, _) in zip(first, again):
        assert torch.equal(c, c2) and torch.equal(w, w2)
    for (c, w, _), (c2, w2, _) in zip(first[2:], resumed):
        assert torch.equal(c, c2) and torch.equal(w, w2)


@pytest.mark.parametrize("name", LOCATION)
def test_state_index_select_reorders_the_batch(name):
    """Beam search reorders states with index_select: swapping the batch swaps the results."""
    attn = build(name)
    keys, values, mask = memory()
    qs = queries(3)
    out = run(attn, qs, keys, values, mask)
    flip = torch.tensor([1, 0])
    state = out[0][2].index_select(flip)
    c, w, _ = attn(qs[1][flip], keys[flip], values[flip], mask[flip], state)
    torch.testing.assert_close(c, out[1][0][flip])
    torch.testing.assert_close(w, out[1][1][flip])


@pytest.mark.parametrize("name", LOCATION)
def test_padding_gets_no_weight(name):
    attn = build(name)
    keys, values, mask = memory()
    for _, w, _ in run(attn, queries(4, scale=3.0), keys, values, mask):
        assert (w[~mask] == 0).all() and (w >= 0).all()


def test_gmm_means_never_move_backwards():
    attn = build("gmm", components=3)
    keys, values, mask = memory(S=30)
    state = attn.initial_state(keys, values, mask)
    for q in queries(20, scale=5.0):
        before = state.position
        _, _, state = attn(q, keys, values, mask, state)
        assert (state.position > before).all()


@pytest.mark.parametrize("name", ["local_m", "local_p"])
def test_local_windows_put_zero_weight_outside_the_window(name):
    attn = build(name, window=2)
    keys, values, mask = memory(S=20)
    state = attn.initial_state(keys, values, mask)
    s = torch.arange(20, dtype=torch.float64)
    nonzero_somewhere = False
    for t, q in enumerate(queries(12, scale=2.0)):
        centre = state.position if name == "local_m" else None
        _, w, state = attn(q, keys, values, mask, state)
        centre = torch.full((B,), float(t), dtype=torch.float64) if name == "local_m" else state.position
        outside = (s[None, :] - centre[:, None]).abs() > 2
        assert (w[outside] == 0).all()
        nonzero_somewhere |= bool((w > 0).any())
    assert nonzero_somewhere


def test_local_p_gaussian_is_centred_on_the_predicted_position():
    attn = build("local_p", window=4)
    keys, values, mask = memory(S=20)
    values = torch.ones(B, 20, DV, dtype=torch.float64)
    attn.score.key_proj.weight.data.zero_()  # equal content scores: the weights are the Gaussian alone
    _, w, state = attn(queries(1)[0], keys, values, mask)
    for b in range(B):
        p = float(state.position[b].detach())
        s = torch.arange(20, dtype=torch.float64)
        inside = (s - p).abs() <= 4
        gauss = torch.exp(-(s - p) ** 2 / (2 * 2.0 ** 2)) * inside * mask[b]
        torch.testing.assert_close(w[b], gauss / (inside & mask[b]).sum())


def test_monotonic_hard_decoding_never_moves_backwards():
    attn = build("monotonic", hard=True, initial_bias=0.0)
    keys, values, mask = memory(S=25)
    state = attn.initial_state(keys, values, mask)
    last = torch.zeros(B, dtype=torch.long)
    for q in queries(15, scale=2.0):
        _, w, state = attn(q, keys, values, mask, state)
        assert ((w == 0) | (w == 1)).all() and (w.sum(-1) <= 1).all()
        attended = w.sum(-1) > 0
        assert (state.position >= last).all()
        assert (w.argmax(-1)[attended] == state.position[attended]).all()
        last = state.position


def test_monotonic_hard_follows_the_expected_alignment_when_decisions_are_sharp():
    """With p near 0 or 1 the expected alignment is one-hot and equals the hard decision."""
    attn = build("monotonic", initial_bias=0.0)
    attn.gain.data.fill_(1e5)  # sharp sigmoids: p is 0 or 1 up to rounding
    keys, values, mask = memory()
    qs = queries(4)
    soft = run(attn, qs, keys, values, mask)
    attn.hard = True
    hard = run(attn, qs, keys, values, mask)
    for (_, ws, _), (_, wh, _) in zip(soft, hard):
        torch.testing.assert_close(ws, wh, atol=1e-5, rtol=0)  # p is clamped at 1 - 1e-6


def test_monotonic_uses_hard_decisions_in_eval_and_noise_in_training_by_default():
    attn = build("monotonic", hard=None, noise_std=1.0)
    keys, values, mask = memory()
    q = queries(1)[0]
    _, w_eval, _ = attn(q, keys, values, mask)
    assert ((w_eval == 0) | (w_eval == 1)).all()
    attn.train()
    torch.manual_seed(0)
    _, w1, _ = attn(q, keys, values, mask)
    _, w2, _ = attn(q, keys, values, mask)
    assert not torch.equal(w1, w2) and not ((w1 == 0) | (w1 == 1)).all()


@pytest.mark.parametrize("name", ["location", "local_p"])
def test_stateless_members_run_all_steps_at_once(name):
    attn = build(name)
    keys, values, mask = memory()
    qs = queries(4)
    ctx_all, w_all, _ = attn(qs.transpose(0, 1), keys, values, mask)  # (B, T, *)
    for t, (c, w, _) in enumerate(run(attn, qs, keys, values, mask)):
        torch.testing.assert_close(c, ctx_all[:, t])
        torch.testing.assert_close(w, w_all[:, t])


@pytest.mark.parametrize("name", ["location_aware", "gmm", "local_m", "monotonic"])
def test_stateful_members_refuse_several_steps_at_once(name):
    attn = build(name)
    keys, values, mask = memory()
    with pytest.raises(ValueError, match="one step at a time"):
        attn(queries(3).transpose(0, 1), keys, values, mask)


def test_bad_options_are_named():
    with pytest.raises(ValueError, match="max_length=12"):
        build("location").initial_state(*memory(S=20))
    with pytest.raises(ValueError, match="kernel_size must be a positive odd"):
        build("location_aware", kernel_size=4)
    with pytest.raises(ValueError, match="window"):
        build("local_m", window=0)
    with pytest.raises(ValueError, match="score"):
        build("local_p", score="cosine")


@pytest.mark.parametrize("name", LOCATION)
def test_float32_and_bfloat16_autocast_stay_finite(name):
    attn = build(name).float()
    keys, values, mask = (x.float() if x.is_floating_point() else x for x in memory())
    state = attn.initial_state(keys, values, mask)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        for q in queries(3, scale=50.0).float():
            ctx, w, state = attn(q, keys, values, mask, state)
            assert torch.isfinite(ctx).all() and torch.isfinite(w).all()


def test_gmm_in_float16_saturates_instead_of_overflowing():
    """GMM's window is unnormalised (alpha up to e^20): in float16 the context saturates at +-65504, never inf
    or NaN (found on an H100 with logits of 1e3; reproduced here on the CPU)."""
    torch.manual_seed(0)
    m = attnzoo.create("gmm", query_dim=8, key_dim=6).to(torch.float16)
    keys = torch.randn(3, 5, 6, dtype=torch.float16, requires_grad=True)
    state = m.initial_state(keys, keys)
    query = (torch.randn(3, 8) * 1e3).to(torch.float16).requires_grad_()
    context, weights, state = m(query, keys, keys, None, state)
    assert context.dtype == torch.float16 and torch.isfinite(context).all()
    assert weights.max() > torch.finfo(torch.float16).max  # the float32 weights really are out of float16's range
    assert context.abs().max() == torch.finfo(torch.float16).max
    context.float().sum().backward()
    assert torch.isfinite(keys.grad).all() and torch.isfinite(query.grad).all()
