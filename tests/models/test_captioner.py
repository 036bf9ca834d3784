"""The Show-Attend-Tell captioner: step-wise decoding equals the teacher-forced pass; the loss; the contract."""

import pytest
import torch
import torch.nn.functional as F

from attnzoo.mechanisms.visual import doubly_stochastic_penalty
from attnzoo.models.captioner import Captioner, CaptionerConfig
from attnzoo.models.decoding import beam_search, greedy_decode

IMAGES = torch.rand(3, 1, 12, 20, generator=torch.Generator().manual_seed(0))
TGT = torch.tensor([[1, 5, 6, 7, 2], [1, 8, 2, 0, 0], [1, 9, 9, 2, 0]])


def tiny(**kw):
    torch.manual_seed(0)
    options = dict(vocab=12, image_height=12, image_width=20, widths=[4, 6], depths=[1, 1], embed_dim=6,
                   decoder_dim=8, attention_hidden=5, dropout=0.0)
    return Captioner(CaptionerConfig(**{**options, **kw})).eval()


@pytest.mark.parametrize("attention", ["soft_spatial", "additive", "location_aware"])
def test_incremental_decoding_equals_the_teacher_forced_pass(attention):
    model = tiny(attention=attention)
    assert model.grid == (6, 10)
    out = model(IMAGES, TGT[:, :-1])
    memory, state = model.encode(IMAGES, torch.full((3,), 60))
    assert memory.states.shape == (3, 60, 6) and bool(memory.mask.all())
    for t in range(TGT.shape[1] - 1):
        logits, weights, state = model.step(TGT[:, t], state, memory)
        torch.testing.assert_close(logits, out.logits[:, t])
        torch.testing.assert_close(weights, out.weights[:, t])
        if attention == "soft_spatial":
            torch.testing.assert_close(state.attention.extra["gate"][:, 0], out.gates[:, t])
    assert torch.allclose(out.weights.sum(-1), torch.ones(3, 4))
    assert (out.gates is None) == (attention != "soft_spatial")


def test_the_decoder_follows_xu_2015():
    model = tiny()
    a = model.annotations(IMAGES)  # (B, L, D)
    _, state = model.encode(IMAGES)
    torch.testing.assert_close(state.h, torch.tanh(model.init_h(a.mean(1))))  # h_0 from the mean annotation
    torch.testing.assert_close(state.c, torch.tanh(model.init_c(a.mean(1))))
    # z_t = beta_t sum_i alpha_ti a_i, queried with h_{t-1}
    memory, state = model.encode(IMAGES)
    logits, alpha, nxt = model.step(TGT[:, 0], state, memory)
    beta = torch.sigmoid(model.attention.gate(state.h))  # (B, 1)
    z = beta * torch.einsum("bl,bld->bd", alpha, a)
    emb = model.embed(TGT[:, 0])
    h, c = model.cell(torch.cat([emb, z], -1), (state.h, state.c))
    torch.testing.assert_close(nxt.h, h)
    torch.testing.assert_close(logits, model.generator(emb + model.out_h(h) + model.out_z(z)))


def test_greedy_and_beam_search_run_on_images():
    model = tiny()
    lengths = torch.full((3,), 60)
    greedy = greedy_decode(model, IMAGES, lengths, max_len=6)
    one = beam_search(model, IMAGES, lengths, max_len=6, beam_size=1)
    assert greedy.tokens == one.tokens
    beam = beam_search(model, IMAGES, lengths, max_len=6, beam_size=3)
    assert all(w.shape[1] == 60 for w in beam.weights) and len(beam.tokens) == 3
    with pytest.raises(ValueError, match=r"src_lengths must be \(3,\) all equal to L = 60"):
        model.encode(IMAGES, torch.tensor([60, 59, 60]))


def test_the_loss_is_cross_entropy_plus_the_doubly_stochastic_penalty_per_word():
    model = tiny(penalty_weight=0.5)
    out = model(IMAGES, TGT[:, :-1])
    gold, real = TGT[:, 1:], TGT[:, 1:] != 0
    ce = F.cross_entropy(out.logits.reshape(-1, 12), gold.reshape(-1), ignore_index=0, reduction="sum")
    target = real.sum(1).float() / 60
    penalty = 0.5 * ((target[:, None] - (out.weights * real[:, :, None]).sum(1)) ** 2).sum()
    words = real.sum()
    torch.testing.assert_close(model.loss(IMAGES, TGT), (ce + penalty) / words)
    torch.testing.assert_close(tiny(penalty_weight=0.0).loss(IMAGES, TGT), ce / words)
    # the per-caption target shifts the value, not the gradient (each step's weights sum to 1)
    logits = torch.randn(3, 4, 60, requires_grad=True)
    grads = [torch.autograd.grad(doubly_stochastic_penalty(logits.softmax(-1), step_mask=real, target=tau,
                                                           reduction="sum"), logits)[0] for tau in (1.0, target)]
    torch.testing.assert_close(grads[0], grads[1])


def test_config_and_input_checks():
    with pytest.raises(ValueError, match="does not fit a step-wise decoder's slot"):
        tiny(attention="se")
    with pytest.raises(ValueError, match="leaves no feature grid"):
        tiny(image_height=2, widths=[4, 4, 4], depths=[1, 1, 1])
    with pytest.raises(ValueError, match="penalty_weight must be a finite number >= 0"):
        tiny(penalty_weight=-1.0)
    with pytest.raises(TypeError, match="pass images.float"):
        tiny().encode(torch.zeros(2, 1, 12, 20, dtype=torch.uint8))
    with pytest.raises(ValueError, match=r"images must have shape \(B, 1, 12, 20\)"):
        tiny().encode(torch.rand(2, 12, 20))
    with pytest.raises(ValueError, match=r"tgt_in must have shape \(B, T\) = \(3, T\)"):
        tiny()(IMAGES, TGT[:2])
