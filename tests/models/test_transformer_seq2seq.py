"""The Transformer encoder-decoder: cached step decoding equals the full pass."""

import pytest
import torch

from attnzoo.models.decoding import beam_search, greedy_decode
from attnzoo.models.factory import build_seq2seq
from attnzoo.models.transformer_seq2seq import TransformerConfig, TransformerSeq2Seq


def tiny(positions="sinusoidal", **kw):
    torch.manual_seed(0)
    cfg = TransformerConfig(src_vocab=12, tgt_vocab=10, dim=16, num_heads=2, enc_layers=2, dec_layers=2,
                            positions=positions, dropout=0.0, **kw)
    return TransformerSeq2Seq(cfg).eval()


def batch():
    torch.manual_seed(1)
    src = torch.randint(4, 12, (3, 6))
    lengths = torch.tensor([6, 3, 5])
    src[torch.arange(6)[None, :] >= lengths[:, None]] = 0
    return src, lengths


@pytest.mark.parametrize("positions", ["sinusoidal", "learned", "rope", "alibi", "t5", "relative"])
def test_step_decoding_with_caches_equals_the_full_pass(positions):
    model = tiny(positions)
    src, lengths = batch()
    tgt = torch.randint(3, 10, (3, 5))
    with torch.no_grad():
        full, full_w = model(src, lengths, tgt, need_weights=True)
        memory, state = model.encode(src, lengths)
        steps = [model.step(tgt[:, t], state, memory) for t in range(5)]
    torch.testing.assert_close(torch.stack([s[0] for s in steps], 1), full, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(torch.stack([s[1] for s in steps], 1), full_w, atol=1e-5, rtol=1e-5)
    assert state.step == 5 and len(state.self_caches[0]) == 5


@pytest.mark.parametrize("norm_first", [True, False])
def test_beam_one_equals_greedy(norm_first):
    model = tiny(norm_first=norm_first)
    src, lengths = batch()
    g = greedy_decode(model, src, lengths, max_len=8)
    b = beam_search(model, src, lengths, max_len=8, beam_size=1)
    assert g.tokens == b.tokens


def test_padding_changes_nothing_and_target_is_causal():
    model = tiny()
    src, lengths = batch()
    tgt = torch.randint(3, 10, (3, 5))
    with torch.no_grad():
        logits, w = model(src, lengths, tgt, need_weights=True)
        alone, _ = model(src[1:2, :3], lengths[1:2], tgt[1:2])
        changed = tgt.clone()
        changed[:, 3:] = 3
        prefix, _ = model(src, lengths, changed)
    torch.testing.assert_close(alone[0], logits[1], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(prefix[:, :3], logits[:, :3], atol=1e-5, rtol=1e-5)  # no peeking ahead
    assert (w[1, :, 3:] == 0).all()


def test_factory_maps_attention_names_to_kv_heads():
    mqa = build_seq2seq("transformer", 12, 10, "mqa", dict(dim=16, num_heads=4, enc_layers=1, dec_layers=1))
    assert mqa.decoder[0].self_attn.num_kv_heads == 1
    gqa = build_seq2seq("transformer", 12, 10, "gqa", dict(dim=16, num_heads=4, enc_layers=1, dec_layers=1))
    assert gqa.decoder[0].self_attn.num_kv_heads == 1 and gqa.decoder[0].self_attn.num_heads == 4
    with pytest.raises(ValueError, match="does not fit the transformer"):
        build_seq2seq("transformer", 12, 10, "additive", {})
    with pytest.raises(ValueError, match="does not fit a step-wise decoder"):
        build_seq2seq("rnn", 12, 10, "mha", {})


def test_attention_maps_per_layer_and_head_match_the_last_layer_average():
    model = tiny()
    src, lengths = batch()
    tgt = torch.randint(3, 10, (3, 5))
    maps = model.attention_maps(src, lengths, tgt)
    assert maps["cross"].shape == (2, 3, 2, 5, 6) and maps["self"].shape == (2, 3, 2, 5, 5)
    _, averaged = model(src, lengths, tgt, need_weights=True)
    torch.testing.assert_close(maps["cross"][-1].mean(1), averaged)
