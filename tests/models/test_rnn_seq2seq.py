"""The RNN encoder-decoder and its decoders."""

import pytest
import torch

from attnzoo.models.decoding import beam_search, greedy_decode
from attnzoo.models.rnn_seq2seq import RNNSeq2Seq, Seq2SeqConfig

ORDERS = [dict(order="luong", input_feeding=False), dict(order="luong", input_feeding=True),
          dict(order="bahdanau"), dict(order="luong", rnn="gru", dec_layers=2)]


def tiny(attention="additive", **kw):
    torch.manual_seed(0)
    cfg = Seq2SeqConfig(src_vocab=12, tgt_vocab=10, embed_dim=8, hidden_dim=8, decoder_dim=12, enc_layers=1,
                        attention=attention, attention_hidden=6, dropout=0.0, **kw)
    return RNNSeq2Seq(cfg).eval()


def batch(B=5, S=7):
    torch.manual_seed(1)
    lengths = torch.tensor([7, 3, 5, 1, 6])[:B]
    src = torch.randint(4, 12, (B, S))
    src[torch.arange(S)[None, :] >= lengths[:, None]] = 0
    return src, lengths


@pytest.mark.parametrize("kw", ORDERS, ids=str)
def test_beam_one_equals_greedy(kw):
    model = tiny(**kw)
    src, lengths = batch()
    g = greedy_decode(model, src, lengths, max_len=9)
    b = beam_search(model, src, lengths, max_len=9, beam_size=1)
    assert g.tokens == b.tokens
    for wg, wb in zip(g.weights, b.weights):
        torch.testing.assert_close(wg, wb)


LOCATION = ["location", "location_aware", "gmm", "local_m", "local_p", "monotonic"]


@pytest.mark.parametrize("attention", LOCATION)
def test_location_family_in_both_decoder_orders_beam_one_equals_greedy(attention):
    src, lengths = batch()
    for order in ("bahdanau", "luong"):
        model = tiny(attention, order=order)
        g = greedy_decode(model, src, lengths, max_len=9)
        b = beam_search(model, src, lengths, max_len=9, beam_size=1)
        assert g.tokens == b.tokens
        for i, (wg, wb) in enumerate(zip(g.weights, b.weights)):
            torch.testing.assert_close(wg, wb)
            assert wg.shape[1] == lengths[i] and (wg >= 0).all()


@pytest.mark.parametrize("attention", ["dot", "general", "additive", "cosine", "scaled_dot", "location", "local_p"])
def test_parallel_teacher_forcing_equals_step_loop(attention):
    model = tiny(attention, order="luong", input_feeding=False) if attention not in ("dot", "scaled_dot", "cosine") \
        else RNNSeq2Seq(Seq2SeqConfig(src_vocab=12, tgt_vocab=10, embed_dim=8, hidden_dim=6, decoder_dim=12,
                                      enc_layers=1, attention=attention, dropout=0.0)).eval()
    src, lengths = batch()
    tgt_in = torch.randint(3, 10, (5, 6))
    memory, state = model.encode(src, lengths)
    par_logits, par_w = model.decode_teacher_forced(tgt_in, state, memory, parallel=True)
    seq_logits, seq_w = model.decode_teacher_forced(tgt_in, state, memory, parallel=False)
    torch.testing.assert_close(par_logits, seq_logits, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(par_w, seq_w, rtol=1e-4, atol=1e-5)


def test_attention_never_looks_at_padding():
    model = tiny()
    src, lengths = batch()
    _, w = model(src, lengths, torch.randint(3, 10, (5, 4)))
    pad = torch.arange(7)[None, None, :] >= lengths[:, None, None]
    assert (w[pad.expand_as(w)] == 0).all()


def test_beam_search_finds_a_hypothesis_at_least_as_likely_as_greedy():
    model = tiny(order="bahdanau")
    src, lengths = batch()
    g = greedy_decode(model, src, lengths, max_len=9)
    b = beam_search(model, src, lengths, max_len=9, beam_size=4, length_penalty=0.0)  # raw log-prob
    for sg, sb in zip(g.scores, b.scores):
        assert sb >= sg - 1e-5


def test_padding_in_a_batch_does_not_change_a_sentence():
    model = tiny()
    src, lengths = batch()
    alone = greedy_decode(model, src[1:2, :3], lengths[1:2], max_len=9)
    together = greedy_decode(model, src, lengths, max_len=9)
    assert alone.tokens[0] == together.tokens[1]


def test_bad_model_input_is_named():
    model = tiny()
    with pytest.raises(ValueError, match="src must have shape"):
        model.encode(torch.zeros(3, dtype=torch.long), torch.tensor([1, 1, 1]))
    with pytest.raises(ValueError, match="src_lengths must be in"):
        model.encode(torch.ones(2, 3, dtype=torch.long), torch.tensor([4, 1]))
    with pytest.raises(ValueError, match="unknown order"):
        Seq2SeqConfig(src_vocab=3, tgt_vocab=3, order="sideways")


@pytest.mark.slow
def test_learns_to_reverse_sequences():
    """A real training signal: the model learns a task only attention solves well."""
    torch.manual_seed(0)
    cfg = Seq2SeqConfig(src_vocab=14, tgt_vocab=14, embed_dim=32, hidden_dim=32, decoder_dim=64, enc_layers=1,
                        attention="additive", attention_hidden=32, dropout=0.0)
    model = RNNSeq2Seq(cfg)
    opt = torch.optim.Adam(model.parameters(), lr=5e-3)

    def sample(B):
        lengths = torch.randint(3, 9, (B,))
        src = torch.randint(4, 14, (B, 8))
        src[torch.arange(8)[None, :] >= lengths[:, None]] = 0
        tgt = torch.zeros(B, 10, dtype=torch.long)
        tgt[:, 0] = 1
        for i in range(B):
            n = int(lengths[i])
            tgt[i, 1:n + 1] = src[i, :n].flip(0)
            tgt[i, n + 1] = 2
        return src, lengths, tgt

    for _ in range(400):
        src, lengths, tgt = sample(64)
        loss = model.loss(src, lengths, tgt)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    src, lengths, tgt = sample(200)
    hyps = greedy_decode(model, src, lengths, max_len=10)
    right = sum(h == tgt[i, 1:int(lengths[i]) + 1].tolist() for i, h in enumerate(hyps.tokens))
    assert right / 200 > 0.9
