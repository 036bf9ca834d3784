"""Bad input gets one clear error that names the argument and the shapes."""

import pytest
import torch

import attnzoo
from attnzoo import attend


def t(*shape, dtype=torch.float32):
    return torch.randn(*shape, dtype=dtype)


@pytest.mark.parametrize("args, kwargs, exc, words", [
    ((t(2, 5), t(2, 5), t(2, 5)), {}, ValueError, ["q must have shape", "(2, 5)"]),
    ((t(2, 3, 4), t(2, 3, 4, 4), t(2, 3, 4)), {}, ValueError, ["k must have the same rank", "(2, 3, 4, 4)"]),
    ((t(2, 3, 4), t(3, 5, 4), t(3, 5, 4)), {}, ValueError, ["batch sizes differ"]),
    ((t(2, 3, 4), t(2, 5, 4), t(2, 6, 4)), {}, ValueError, ["same length S", "(2, 6, 4)"]),
    ((t(2, 3, 4), t(2, 5, 6), t(2, 5, 4)), {}, ValueError, ["query has 4", "key 6", "'general'"]),
    ((t(2, 3, 4, 8), t(2, 2, 5, 8), t(2, 2, 5, 8)), {}, ValueError, ["3 heads", "not a multiple"]),
    ((t(2, 3, 4), t(2, 5, 4), t(2, 5, 4)), {"mask": torch.ones(2, 4, dtype=torch.bool)}, ValueError,
     ["mask of shape (2, 4)", "does not broadcast", "(2, 3, 5)"]),
    ((t(2, 3, 4), t(2, 5, 4), t(2, 5, 4)), {"mask": torch.ones(2, 3, 5)}, TypeError,
     ["mask must be a boolean", "bias="]),
    ((t(2, 3, 4), t(2, 5, 4), t(2, 5, 4)), {"bias": torch.ones(3, 3)}, ValueError, ["bias of shape (3, 3)"]),
    ((t(2, 3, 4), t(2, 5, 4), t(2, 5, 4, dtype=torch.float64)), {}, TypeError, ["v has dtype torch.float64"]),
    ((t(2, 3, 4), t(2, 5, 4), t(2, 5, 4)), {"normalize": "softmx"}, ValueError, ["normalize", "'softmax'"]),
    ((t(2, 3, 4), t(2, 5, 4), t(2, 5, 4)), {"backend": "flash"}, ValueError, ["backend", "'sdpa'"]),
    ((t(2, 3, 4), t(2, 5, 4), t(2, 5, 4)), {"score": "additive"}, ValueError, ["learned parameters",
                                                                                "AdditiveScore"]),
    ((t(2, 3, 4), t(2, 5, 4), t(2, 5, 4)), {"score": "dott"}, ValueError, ["unknown score", "'dot'"]),
    ((t(2, 3, 4), t(2, 5, 4), t(2, 5, 4)), {"dropout_p": 1.5}, ValueError, ["dropout_p"]),
    (([[1.0]], t(2, 5, 4), t(2, 5, 4)), {}, TypeError, ["q must be a torch.Tensor"]),
    ((t(2, 3, 4).long(), t(2, 5, 4), t(2, 5, 4)), {}, TypeError, ["q must be a floating-point"]),
])
def test_attend_rejects_bad_input(args, kwargs, exc, words):
    with pytest.raises(exc) as e:
        attend(*args, **kwargs)
    for w in words:
        assert w in str(e.value), (w, str(e.value))


def test_unknown_attention_name_suggests_the_closest():
    with pytest.raises(ValueError, match="did you mean 'additive'"):
        attnzoo.create("additiv", query_dim=4, key_dim=4)


def test_step_mechanism_checks_memory_and_query_shapes():
    attn = attnzoo.create("additive", query_dim=4, key_dim=6)
    keys = torch.randn(2, 5, 6)
    with pytest.raises(ValueError, match=r"keys must have shape \(B, S, 6\)"):
        attn.initial_state(torch.randn(2, 5, 4))
    with pytest.raises(ValueError, match=r"key_mask must have shape \(B, S\) = \(2, 5\)"):
        attn.initial_state(keys, keys, torch.ones(2, 4, dtype=torch.bool))
    with pytest.raises(TypeError, match="key_mask must be boolean"):
        attn.initial_state(keys, keys, torch.ones(2, 5))
    state = attn.initial_state(keys, keys)
    with pytest.raises(ValueError, match=r"query must have shape \(B, Dq\) = \(2, 4\)"):
        attn(torch.randn(2, 5), keys, keys, None, state)
    with pytest.raises(ValueError, match="query_dim .4. must equal key_dim .6."):
        attnzoo.create("dot", query_dim=4, key_dim=6)
