"""attnzoo.capture(): every attnzoo layer's weights, in any model, without touching its code."""

import pytest
import torch
from torch import nn

import attnzoo
from attnzoo import MultiHeadAttention, attend
from attnzoo.models.lm import DecoderLM, LMConfig
from attnzoo.models.rnn_seq2seq import RNNSeq2Seq, Seq2SeqConfig


class UsersModel(nn.Module):
    """A model written without attnzoo.capture in mind: two MHA layers and a plain MLP."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Linear(4, 16)
        self.first = MultiHeadAttention(16, 4)
        self.second = MultiHeadAttention(16, 2, num_kv_heads=1)
        self.head = nn.Sequential(nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 3))

    def forward(self, x, key_mask=None):
        h = self.embed(x)
        h = h + self.first(h, key_mask=key_mask).output
        h = h + self.second(h, key_mask=key_mask, is_causal=True).output
        return self.head(h)


def test_records_every_layer_of_a_users_model_with_the_weights_the_layer_would_return():
    torch.manual_seed(0)
    model = UsersModel().eval()
    x = torch.randn(2, 6, 4)
    key_mask = torch.tensor([[True] * 6, [True] * 4 + [False] * 2])
    plain = model(x, key_mask)
    with attnzoo.capture(model) as maps:
        captured = model(x, key_mask)
    torch.testing.assert_close(captured, plain, atol=1e-5, rtol=1e-5)  # capturing does not change the output
    assert list(maps) == ["first", "second"]
    h = model.embed(x)
    expected = model.first(h, key_mask=key_mask, need_weights=True).weights
    torch.testing.assert_close(maps.last("first"), expected)
    w2 = maps.last("second")
    assert w2.shape == (2, 2, 6, 6)
    assert (w2.triu(1) == 0).all()  # causal
    assert (w2[1, :, :, 4:] == 0).all()  # padding
    torch.testing.assert_close(w2.sum(-1), torch.ones(2, 2, 6))


def test_without_a_model_layers_are_named_by_class_and_order_and_hooks_are_removed():
    torch.manual_seed(0)
    model = UsersModel().eval()
    with attnzoo.capture() as maps:
        model(torch.randn(1, 3, 4))
        model(torch.randn(1, 3, 4))
        attend(torch.randn(1, 2, 4), torch.randn(1, 3, 4), torch.randn(1, 3, 4))
    assert list(maps) == ["MultiHeadAttention.0", "MultiHeadAttention.1", "attend"]
    assert [len(maps[n]) for n in maps] == [2, 2, 1]
    assert not nn.modules.module._global_forward_hooks and not nn.modules.module._global_forward_pre_hooks
    out = attend(torch.randn(1, 2, 4), torch.randn(1, 3, 4), torch.randn(1, 3, 4))
    assert out.weights is None and len(maps["attend"]) == 1  # nothing recorded after the block
    with pytest.raises(KeyError, match="recorded: MultiHeadAttention.0"):
        maps["decoder"]


def test_a_transformer_lm_gives_one_map_per_layer():
    torch.manual_seed(0)
    lm = DecoderLM(LMConfig(vocab=11, dim=16, num_heads=2, layers=3, dropout=0.0, context=16)).eval()
    tokens = torch.randint(0, 11, (2, 9))
    _, expected = lm(tokens, need_weights=True)
    with attnzoo.capture(lm) as maps:
        lm(tokens)
    assert len(maps) == 3
    for name, want in zip(maps, expected):
        torch.testing.assert_close(maps.last(name), want)


@pytest.mark.parametrize("attention", ["additive", "gmm"])
def test_step_wise_decoders_record_their_returned_weights(attention):
    """GMM computes its weights without attend(): the mechanism's own output is recorded."""
    torch.manual_seed(0)
    model = RNNSeq2Seq(Seq2SeqConfig(src_vocab=12, tgt_vocab=10, embed_dim=8, hidden_dim=8, decoder_dim=12,
                                     enc_layers=1, attention=attention, attention_hidden=6, dropout=0.0)).eval()
    src, lengths = torch.randint(4, 12, (2, 5)), torch.tensor([5, 5])
    tgt_in = torch.randint(3, 10, (2, 4))
    _, weights = model(src, lengths, tgt_in)
    with attnzoo.capture(model) as maps:
        model(src, lengths, tgt_in)
    assert len(maps) == 1
    (records,) = [maps[n] for n in maps]
    got = torch.cat([r.reshape(2, -1, 5) for r in records], 1)  # steps (or one parallel call) -> (B, T, S)
    torch.testing.assert_close(got, weights.reshape(2, -1, 5))


def test_capture_rejects_a_non_module():
    with pytest.raises(TypeError, match="capture\\(model\\) takes an nn.Module"):
        with attnzoo.capture(torch.randn(3)):
            pass
