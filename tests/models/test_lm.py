"""The decoder-only language model: cached generation equals the full pass; samplers filter as promised."""

import pytest
import torch

from attnzoo.core.kv_cache import KVCache
from attnzoo.models.lm import DecoderLM, LMConfig, sample_next


def tiny(positions="rope", context=32):
    torch.manual_seed(0)
    return DecoderLM(LMConfig(vocab=11, dim=16, num_heads=2, layers=2, dropout=0.0, context=context,
                              positions=positions)).eval()


@pytest.mark.parametrize("positions", ["learned", "sinusoidal", "rope", "alibi", "t5", "relative"])
def test_cached_forward_equals_the_full_pass_token_by_token(positions):
    model = tiny(positions)
    tokens = torch.randint(0, 11, (2, 9))
    with torch.no_grad():
        full, _ = model(tokens)
        caches = [KVCache() for _ in model.blocks]
        steps = [model(tokens[:, :4], caches)[0]] + [model(tokens[:, t:t + 1], caches)[0] for t in range(4, 9)]
    torch.testing.assert_close(torch.cat(steps, 1), full, atol=1e-5, rtol=1e-5)


def test_greedy_generation_equals_argmax_of_full_passes():
    model = tiny()
    prompt = torch.randint(0, 11, (2, 3))
    out = model.generate(prompt, max_new_tokens=6, temperature=0)
    seq = prompt
    with torch.no_grad():
        for _ in range(6):
            seq = torch.cat([seq, model(seq)[0][:, -1].argmax(-1, keepdim=True)], 1)
    assert torch.equal(out, seq)


def test_generation_past_the_context_window_keeps_going():
    model = tiny(context=8)
    out = model.generate(torch.zeros(1, 3, dtype=torch.long), max_new_tokens=20, temperature=0)
    assert out.shape == (1, 23)


def test_top_k_and_top_p_keep_only_the_allowed_tokens():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    g = torch.Generator().manual_seed(0)
    seen_k = {int(sample_next(logits, 1.0, top_k=2, generator=g)) for _ in range(300)}
    assert seen_k == {0, 1}
    seen_p = {int(sample_next(logits, 1.0, top_p=0.7, generator=g)) for _ in range(300)}
    assert seen_p == {0, 1}  # 0.5 < 0.7, so the second token is needed; the third is not
    seen_all = {int(sample_next(logits, 1.0, generator=g)) for _ in range(500)}
    assert seen_all == {0, 1, 2, 3}
    assert int(sample_next(logits, 0.0)) == 0


def test_lm_learns_a_repeating_pattern():
    torch.manual_seed(0)
    model = DecoderLM(LMConfig(vocab=5, dim=32, num_heads=2, layers=1, dropout=0.0, context=16))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    data = torch.tensor([0, 1, 2, 3, 4] * 8)[None, :17].repeat(4, 1)
    for _ in range(60):
        loss = model.loss(data)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.1
    assert model.generate(torch.tensor([[0, 1, 2]]), 5, temperature=0).tolist() == [[0, 1, 2, 3, 4, 0, 1, 2]]


def test_bad_generation_arguments():
    model = tiny()
    with pytest.raises(ValueError, match="top_p"):
        model.generate(torch.zeros(1, 2, dtype=torch.long), 3, top_p=1.5)
    with pytest.raises(ValueError, match="prompt must have shape"):
        model.generate(torch.zeros(3, dtype=torch.long), 3)
