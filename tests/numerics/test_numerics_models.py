"""Numerics of the Transformer blocks and of every model's forward pass, in every dtype.

Outputs and all parameter gradients are finite in float32, float64 and
bfloat16 (float16 on CUDA), with padding, one-token sources and fully padded
attention rows; a source of length zero is refused with a clear error (the
encoders need at least one position to summarise).
"""

import pytest
import torch
from numerics_cases import OPTIONS, assert_finite, dtype_cases

import attnzoo
from attnzoo.mechanisms.transformer import BlockConfig, DecoderBlock, EncoderBlock
from attnzoo.models.cnn import CNN, CNNConfig
from attnzoo.models.convs2s import ConvS2S, ConvS2SConfig
from attnzoo.models.lm import DecoderLM, LMConfig
from attnzoo.models.rnn_seq2seq import RNNSeq2Seq, Seq2SeqConfig
from attnzoo.models.transformer_seq2seq import TransformerConfig, TransformerSeq2Seq
from attnzoo.models.vit import ViT, ViTConfig

DTYPES = dtype_cases()
POSITIONS = [None, "rope", "alibi", "t5", "relative"]


def finite_backward(module, outputs):
    assert_finite({f"output {i}": o for i, o in enumerate(outputs)}, "forward")
    g = torch.Generator().manual_seed(0)
    loss = sum((o.float() * torch.randn(o.shape, generator=g).to(o.device)).sum() for o in outputs)
    loss.backward()
    grads = {n: p.grad for n, p in module.named_parameters() if p.grad is not None}
    assert grads
    assert_finite(grads, "backward")


def source(device, S=6):
    src = torch.tensor([[5, 6, 7, 8, 9, 4], [5, 6, 0, 0, 0, 0], [7, 0, 0, 0, 0, 0]], device=device)[:, :S]
    return src, torch.tensor([S, min(S, 2), 1], device=device)  # full, padded, a single real token


# --------------------------------------------------------------------------- blocks

@pytest.fixture(autouse=True)
def _no_cudnn_rnn():
    """cuDNN's RNN backward runs only in training mode, and these tests differentiate models in eval mode
    (found on an H100): run the RNNs with PyTorch's own kernels instead."""
    with torch.backends.cudnn.flags(enabled=False):
        yield

@pytest.mark.parametrize("device,dtype", DTYPES)
@pytest.mark.parametrize("positions", POSITIONS)
@pytest.mark.parametrize("norm_first", [True, False])
def test_encoder_and_decoder_blocks(positions, norm_first, device, dtype):
    torch.manual_seed(0)
    cfg = BlockConfig(dim=8, num_heads=2, dropout=0.0, norm_first=norm_first, positions=positions)
    enc, dec = EncoderBlock(cfg).to(device, dtype), DecoderBlock(cfg).to(device, dtype)
    x = (30 * torch.randn(3, 5, 8)).to(device, dtype)  # large activations: logits far from 0
    key_mask = torch.ones(3, 5, dtype=torch.bool, device=device)
    key_mask[1, 2:] = False
    key_mask[2] = False  # nothing to attend to
    for need_weights in (False, True):
        enc.zero_grad(), dec.zero_grad()
        e = enc(x, key_mask=key_mask, need_weights=need_weights)
        d = dec(x[:, :4], e.output, key_mask, need_weights=need_weights)
        assert e.output.dtype == dtype and d.output.dtype == dtype
        for w in list(e.weights.values()) + list(d.weights.values()):
            assert w.dtype == (torch.float64 if dtype == torch.float64 else torch.float32)
        if need_weights:
            assert torch.equal(e.weights["self"][2], torch.zeros_like(e.weights["self"][2]))
            assert torch.equal(d.weights["cross"][2], torch.zeros_like(d.weights["cross"][2]))
        finite_backward(torch.nn.ModuleList([enc, dec]), [e.output, d.output])


# --------------------------------------------------------------------------- models
@pytest.mark.parametrize("device,dtype", DTYPES)
@pytest.mark.parametrize("positions", ["sinusoidal", "learned", "rope", "alibi", "t5", "relative"])
def test_transformer_seq2seq(positions, device, dtype):
    torch.manual_seed(0)
    model = TransformerSeq2Seq(TransformerConfig(src_vocab=12, tgt_vocab=10, dim=8, num_heads=2, enc_layers=1,
                                                 dec_layers=1, dropout=0.0, positions=positions)).to(device, dtype)
    src, lengths = source(device)
    tgt = torch.randint(3, 10, (3, 4), device=device)
    logits, w = model(src, lengths, tgt, need_weights=True)
    assert logits.dtype == dtype and w.dtype == torch.float32  # head-averaged weights: float32
    assert torch.equal(w[2, :, 1:], torch.zeros_like(w[2, :, 1:]))  # padding gets no weight
    finite_backward(model, [logits, w])
    with torch.no_grad():  # the step-wise decoding path too
        memory, state = model.encode(src, lengths)
        step_logits, step_w, _ = model.step(tgt[:, 0], state, memory)
    assert torch.isfinite(step_logits).all() and torch.isfinite(step_w).all()


@pytest.mark.parametrize("device,dtype", DTYPES)
@pytest.mark.parametrize("weight_norm", [True, False])
def test_convs2s(weight_norm, device, dtype):
    torch.manual_seed(0)
    model = ConvS2S(ConvS2SConfig(src_vocab=12, tgt_vocab=10, embed_dim=8, hidden_dim=8, enc_layers=2, dec_layers=2,
                                  dropout=0.0, weight_norm=weight_norm)).to(device, dtype)
    src, lengths = source(device)
    tgt = torch.randint(3, 10, (3, 4), device=device)
    logits, w = model(src, lengths, tgt, need_weights=True)
    assert logits.dtype == dtype and w.dtype == (torch.float64 if dtype == torch.float64 else torch.float32)
    assert torch.equal(w[2, :, 1:], torch.zeros_like(w[2, :, 1:]))  # padding gets no weight
    finite_backward(model, [logits, w])
    with torch.no_grad():  # the step-wise decoding path too
        memory, state = model.encode(src, lengths)
        step_logits, step_w, _ = model.step(tgt[:, 0], state, memory)
    assert torch.isfinite(step_logits).all() and torch.isfinite(step_w).all()


@pytest.mark.parametrize("device,dtype", DTYPES)
@pytest.mark.parametrize("attention", [i.name for i in attnzoo.mechanisms() if i.step_wise])
def test_rnn_seq2seq_with_every_step_wise_mechanism(attention, device, dtype):
    torch.manual_seed(0)
    options = {k: v for k, v in OPTIONS.get(attention, {}).items() if k != "noise_std"}
    model = RNNSeq2Seq(Seq2SeqConfig(src_vocab=12, tgt_vocab=10, embed_dim=8, hidden_dim=4, decoder_dim=8,
                                     enc_layers=1, attention=attention, attention_hidden=6, dropout=0.0,
                                     attention_options=options or None)).to(device, dtype)
    model.train(attention == "monotonic")  # monotonic: the differentiable expected alignment
    src, lengths = source(device)
    logits, w = model(src, lengths, torch.randint(3, 10, (3, 4), device=device))
    assert logits.dtype == dtype and w.dtype == (torch.float64 if dtype == torch.float64 else torch.float32)
    assert torch.equal(w[2, :, 1:], torch.zeros_like(w[2, :, 1:]))  # padding gets no weight
    finite_backward(model, [logits, w])


@pytest.mark.parametrize("device,dtype", DTYPES)
@pytest.mark.parametrize("positions", ["learned", "sinusoidal", "rope", "alibi", "t5", "relative"])
def test_decoder_lm(positions, device, dtype):
    torch.manual_seed(0)
    model = DecoderLM(LMConfig(vocab=11, dim=8, num_heads=2, layers=1, dropout=0.0, context=16,
                               positions=positions)).to(device, dtype)
    for T in (1, 5):  # one token: a single key, weight exactly 1
        model.zero_grad()
        logits, ws = model(torch.randint(0, 11, (2, T), device=device), need_weights=True)
        assert logits.dtype == dtype
        if T == 1:
            assert torch.equal(ws[0], torch.ones_like(ws[0]))
        finite_backward(model, [logits])
    out = model.generate(torch.zeros(1, 2, dtype=torch.long, device=device), 3, temperature=0)
    assert out.shape == (1, 5)


@pytest.mark.parametrize("device,dtype", DTYPES)
@pytest.mark.parametrize("positions", ["learned", "rope", "alibi", "t5", "relative"])
def test_vit(positions, device, dtype):
    torch.manual_seed(0)
    model = ViT(ViTConfig(image_size=4, patch_size=2, classes=3, dim=8, num_heads=2, layers=1, dropout=0.0,
                          positions=positions)).to(device, dtype)
    for scale in (1.0, 1e3):  # large pixels: large logits
        model.zero_grad()
        logits, ws = model((scale * torch.rand(2, 1, 4, 4)).to(device, dtype), need_weights=True)
        assert logits.dtype == dtype and ws[0].dtype == (torch.float64 if dtype == torch.float64 else torch.float32)
        finite_backward(model, [logits])


@pytest.mark.parametrize("device,dtype", DTYPES)
@pytest.mark.parametrize("attention", ["none", "se", "cbam", "nonlocal"])
def test_cnn(attention, device, dtype):
    torch.manual_seed(0)
    options = {"reduction": 2} if attention in ("se", "cbam") else {}
    model = CNN(CNNConfig(image_size=8, classes=3, widths=[4, 8], depths=[1, 1], attention=attention,
                          attention_options=options, dropout=0.0)).to(device, dtype)
    maps_dtype = torch.float64 if dtype == torch.float64 else torch.float32
    for scale in (1.0, 1e3):  # large pixels: large scores in the non-local blocks
        model.zero_grad()
        logits, maps = model((scale * torch.rand(2, 1, 8, 8)).to(device, dtype), need_weights=True)
        assert logits.dtype == dtype and logits.shape == (2, 3)
        assert len(maps) == (0 if attention == "none" else 1 if attention == "nonlocal" else 2)
        for m in maps:
            assert all(w is None or w.dtype == maps_dtype for w in (m.channel, m.spatial, m.positions))
        finite_backward(model, [logits])


def test_a_source_of_length_zero_is_a_clear_error():
    torch.manual_seed(0)
    rnn = RNNSeq2Seq(Seq2SeqConfig(src_vocab=12, tgt_vocab=10, embed_dim=8, hidden_dim=4, decoder_dim=8,
                                   enc_layers=1, dropout=0.0))
    tf = TransformerSeq2Seq(TransformerConfig(src_vocab=12, tgt_vocab=10, dim=8, num_heads=2, enc_layers=1,
                                              dec_layers=1, dropout=0.0))
    cs = ConvS2S(ConvS2SConfig(src_vocab=12, tgt_vocab=10, embed_dim=8, hidden_dim=8, enc_layers=1, dec_layers=1))
    for model in (rnn, tf, cs):
        with pytest.raises(ValueError, match=r"src_lengths must be in \[1, S"):
            model(torch.zeros(2, 3, dtype=torch.long), torch.tensor([3, 0]), torch.ones(2, 2, dtype=torch.long))
