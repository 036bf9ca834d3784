"""The content-based family through the step-wise API."""

import pytest
import torch

import attnzoo
from attnzoo.registry import mechanisms

CONTENT = ["dot", "scaled_dot", "general", "additive", "cosine"]


def memory(B=2, S=6, D=8, dtype=torch.float64):
    keys = torch.randn(B, S, D, dtype=dtype)
    values = torch.randn(B, S, 5, dtype=dtype)
    mask = torch.ones(B, S, dtype=torch.bool)
    mask[1, 4:] = False
    return keys, values, mask


def build(name, D=8):
    torch.manual_seed(0)
    return attnzoo.create(name, query_dim=D, key_dim=D, value_dim=5, hidden_dim=7).double()


def test_registry_lists_every_content_mechanism_with_paper():
    infos = {i.name: i for i in mechanisms("content")}
    assert set(CONTENT) <= set(infos)
    assert "Bahdanau" in infos["additive"].paper and "tanh" in infos["additive"].summary
    assert "Graves" in infos["cosine"].paper and "Luong" in infos["general"].paper


@pytest.mark.parametrize("name", CONTENT)
def test_step_equals_attend_on_all_steps_at_once(name):
    attn = build(name)
    keys, values, mask = memory()
    queries = torch.randn(2, 4, 8, dtype=torch.float64)
    state = attn.initial_state(keys, values, mask)
    ctx_all, w_all, _ = attn(queries, keys, values, mask, state)
    for t in range(4):
        ctx, w, state = attn(queries[:, t], keys, values, mask, state)
        torch.testing.assert_close(ctx, ctx_all[:, t])
        torch.testing.assert_close(w, w_all[:, t])
        assert torch.equal(state.weights, w)
    assert (w_all[1, :, 4:] == 0).all()
    torch.testing.assert_close(w_all.sum(-1), torch.ones(2, 4, dtype=torch.float64))


@pytest.mark.parametrize("name", CONTENT)
def test_keys_are_projected_once_per_sequence(name, monkeypatch):
    attn = build(name)
    keys, values, mask = memory()
    calls = []
    original = attn.score.project_keys
    monkeypatch.setattr(attn.score, "project_keys", lambda k: calls.append(1) or original(k))
    state = attn.initial_state(keys, values, mask)
    for _ in range(5):
        _, _, state = attn(torch.randn(2, 8, dtype=torch.float64), keys, values, mask, state)
    assert len(calls) == 1


@pytest.mark.parametrize("name", CONTENT)
def test_gradcheck_through_the_mechanism(name):
    attn = build(name)
    keys, values, mask = memory()
    q = torch.randn(2, 8, dtype=torch.float64, requires_grad=True)
    keys.requires_grad_()
    values.requires_grad_()

    def f(q, keys, values):
        return attn(q, keys, values, mask)[0]

    assert torch.autograd.gradcheck(f, (q, keys, values))


def test_sparsemax_option_gives_sparse_weights():
    torch.manual_seed(0)
    attn = attnzoo.create("dot", query_dim=8, key_dim=8, normalize="sparsemax").double()
    keys, values, mask = memory(D=8)
    values = torch.randn(2, 6, 8, dtype=torch.float64)
    _, w, _ = attn(5 * torch.randn(2, 8, dtype=torch.float64), keys, values, mask)
    assert (w == 0).any()
    torch.testing.assert_close(w.sum(-1), torch.ones(2, dtype=torch.float64))


def test_cosine_sharpness_is_learned_and_starts_where_asked():
    attn = attnzoo.create("cosine", query_dim=4, key_dim=4, initial_sharpness=7.0)
    assert abs(float(attn.score.sharpness.detach()) - 7.0) < 1e-5
    assert any(p is attn.score.sharpness_raw for p in attn.parameters())


def test_state_reorders_for_beams():
    attn = build("additive")
    keys, values, mask = memory()
    state = attn.initial_state(keys, values, mask)
    idx = torch.tensor([1, 1, 0])
    re = state.index_select(idx)
    assert torch.equal(re.projected_keys[0], state.projected_keys[1])
    assert re.projected_keys.shape[0] == 3
