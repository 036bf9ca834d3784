"""torch.compile and torch.autocast give the eager float32 results, one test of each per family.

Families: content, location, visual (soft_spatial step-wise; se, cbam and
nonlocal over a feature map), self-attention/multi-head, convolutional, the
core ``attend`` and the Transformer and ConvS2S models. Autocast runs every mechanism of the family under
``torch.autocast("cpu", dtype=torch.bfloat16)`` with float32 modules and
inputs and compares with plain float32 within bfloat16 tolerance
(``AUTOCAST_TOL``: bfloat16 keeps 8 significant bits, about 4e-3 relative per
rounding; a few roundings in a row stay well under 5e-2); weights stay float32.

Compile uses the default ``inductor`` backend (it builds on this machine;
``dynamic=False``, tiny shapes) on one representative per family and compares
with eager within ``COMPILE_TOL`` (float32 reassociation only). The compile
tests are marked slow: each costs seconds of C++ compilation on a CPU.
"""

import inspect

import pytest
import torch
from numerics_cases import (
    CONV_IMAGE,
    CONV_MULTISTEP,
    CONV_SEQUENCE,
    DIM,
    HEADS,
    B,
    assert_finite,
    build,
    build_own,
    image_input,
    own_params,
    run_conv_image,
    run_multistep,
    run_sequence,
    step_memory,
    variants,
)

import attnzoo
from attnzoo import attend
from attnzoo.core.scores import AdditiveScore
from attnzoo.models.convs2s import ConvS2S, ConvS2SConfig
from attnzoo.models.lm import DecoderLM, LMConfig
from attnzoo.models.transformer_seq2seq import TransformerConfig, TransformerSeq2Seq
from attnzoo.positions import alibi

AUTOCAST_TOL = dict(atol=5e-2, rtol=5e-2)
COMPILE_TOL = dict(atol=1e-5, rtol=1e-5)


def bf16_autocast():
    return torch.autocast("cpu", dtype=torch.bfloat16)


def step_run(m, S=6, T=3):
    """Three decoder steps -> (contexts (T, B, Dv), weights (T, B, S)), float32 inputs."""
    keys, values, mask = step_memory(S, torch.float32)
    g = torch.Generator().manual_seed(2)
    qs = torch.randn(T, B, m.query_dim, generator=g)
    state = m.initial_state(keys, values, mask)
    ctxs, ws = [], []
    for t in range(T):
        ctx, w, state = m(qs[t], keys, values, mask, state)
        ctxs.append(ctx)
        ws.append(w)
    return torch.stack(ctxs), torch.stack(ws)


def family(name):
    return [p for p in variants(step_wise=True) if p.values[0].family == name]


# --------------------------------------------------------------------------- autocast, every mechanism
@pytest.mark.parametrize("info,options", family("content") + family("location") + family("visual"))
def test_autocast_bf16_matches_float32_step_wise(info, options):
    """content and location families, and the visual family's soft_spatial."""
    m = build(info, options)
    want_ctx, want_w = step_run(m)
    with bf16_autocast():
        ctx, w = step_run(m)
    assert w.dtype == torch.float32, "weights must stay float32 under autocast"
    assert_finite({"context": ctx, "weights": w}, "autocast")
    torch.testing.assert_close(w, want_w, **AUTOCAST_TOL)
    torch.testing.assert_close(ctx.float(), want_ctx, **AUTOCAST_TOL)


@pytest.mark.parametrize("info,options", variants(step_wise=False))
def test_autocast_bf16_matches_float32_multi_head(info, options):
    """self-attention and multi-head families, self- and cross-attention, fused and eager paths."""
    m = build(info, options)
    g = torch.Generator().manual_seed(3)
    x, mem = torch.randn(B, 5, DIM, generator=g), torch.randn(B, 7, DIM, generator=g)
    mask = torch.ones(B, 5, dtype=torch.bool)
    mask[1, 3:] = False
    for need_weights in (True, False):
        want = m(x, key_mask=mask, need_weights=need_weights)
        with bf16_autocast():
            got = m(x, key_mask=mask, need_weights=need_weights)
        torch.testing.assert_close(got.output.float(), want.output, **AUTOCAST_TOL)
        if need_weights:
            assert got.weights.dtype == torch.float32
            torch.testing.assert_close(got.weights, want.weights, **AUTOCAST_TOL)
        if "key" in inspect.signature(m.forward).parameters:  # cross-attention capable
            want = m(x, key=mem, value=mem, need_weights=need_weights).output
            with bf16_autocast():
                got = m(x, key=mem, value=mem, need_weights=need_weights).output
            torch.testing.assert_close(got.float(), want, **AUTOCAST_TOL)


@pytest.mark.parametrize("info,options", variants(kind="image"))
def test_autocast_bf16_matches_float32_visual_blocks(info, options):
    """The visual family's blocks over a feature map: output and maps, fused and eager paths."""
    m = build(info, options)
    x = image_input(torch.float32).detach()
    want = m(x, need_weights=True)
    with bf16_autocast():
        got = m(x, need_weights=True)
        fused = m(x)
    torch.testing.assert_close(got.output.float(), want.output, **AUTOCAST_TOL)
    torch.testing.assert_close(fused.float(), want.output, **AUTOCAST_TOL)
    for name in ("channel", "spatial", "positions"):
        if getattr(want, name) is not None:
            assert getattr(got, name).dtype == torch.float32, f"{name} maps must stay float32 under autocast"
            torch.testing.assert_close(getattr(got, name), getattr(want, name), **AUTOCAST_TOL)


def _own_run(name, m, options):
    """One convolutional-family run -> (output, weights) in whatever dtype autocast gives."""
    if name in ("lightweight", "dynamic"):
        mask = torch.ones(B, 6, dtype=torch.bool)
        mask[1, 4:] = False
        run = run_sequence(m, 6, torch.float32, causal=options.get("causal", False), key_mask=mask)
    elif name == "aaconv":
        run = run_conv_image(m, 3, 4, torch.float32)
    else:
        mask = torch.ones(B, 6, dtype=torch.bool)
        mask[1, 4:] = False
        run = run_multistep(m, 3, 6, torch.float32, key_mask=mask)
    return run.outputs[0].detach(), run.weights[0].detach()


@pytest.mark.parametrize("name,options", own_params(CONV_SEQUENCE + CONV_IMAGE + CONV_MULTISTEP))
def test_autocast_bf16_matches_float32_convolutional(name, options):
    """convolutional family: lightweight/dynamic (causal and centred, padding), aaconv, multistep."""
    m = build_own(name, options)
    want, want_w = _own_run(name, m, options)
    with bf16_autocast():
        got, w = _own_run(name, m, options)
    assert w.dtype == torch.float32, "weights must stay float32 under autocast"
    assert_finite({"output": got, "weights": w}, "autocast")
    torch.testing.assert_close(w, want_w, **AUTOCAST_TOL)
    torch.testing.assert_close(got.float(), want, **AUTOCAST_TOL)


def test_autocast_bf16_matches_float32_convs2s_model():
    torch.manual_seed(0)
    model = ConvS2S(ConvS2SConfig(src_vocab=12, tgt_vocab=10, embed_dim=DIM, hidden_dim=DIM, enc_layers=2,
                                  dec_layers=2, dropout=0.0)).eval()
    src, lengths = torch.randint(3, 12, (2, 5)), torch.tensor([5, 3])
    tokens = torch.randint(3, 10, (2, 6))
    want, want_w = model(src, lengths, tokens, need_weights=True)
    with bf16_autocast():
        got, w = model(src, lengths, tokens, need_weights=True)
    assert w.dtype == torch.float32
    torch.testing.assert_close(got.float(), want, **AUTOCAST_TOL)
    torch.testing.assert_close(w, want_w, **AUTOCAST_TOL)


@pytest.mark.parametrize("backend", ["eager", "sdpa", "chunked"])
def test_autocast_bf16_matches_float32_attend(backend):
    g = torch.Generator().manual_seed(4)
    q, k, v = (torch.randn(2, HEADS, 4, 8, generator=g) for _ in range(3))
    mask = torch.rand(2, 1, 4, 4, generator=g) < 0.8
    mask[0, 0, 2] = False
    kw = dict(mask=mask, score_mod=alibi(HEADS), backend=backend)
    want = attend(q, k, v, **kw).output
    with bf16_autocast():
        got = attend(q, k, v, **kw).output
    assert torch.equal(got[0, :, 2], torch.zeros_like(got[0, :, 2]))
    torch.testing.assert_close(got.float(), want, **AUTOCAST_TOL)


def test_autocast_bf16_matches_float32_transformer_models():
    torch.manual_seed(0)
    lm = DecoderLM(LMConfig(vocab=11, dim=DIM, num_heads=HEADS, layers=1, dropout=0.0, context=16)).eval()
    tf = TransformerSeq2Seq(TransformerConfig(src_vocab=12, tgt_vocab=10, dim=DIM, num_heads=HEADS, enc_layers=1,
                                              dec_layers=1, dropout=0.0)).eval()
    tokens = torch.randint(0, 10, (2, 6))
    src, lengths = torch.randint(3, 12, (2, 5)), torch.tensor([5, 3])
    for run in (lambda: lm(tokens)[0], lambda: tf(src, lengths, tokens, need_weights=True)[0]):
        want = run()
        with bf16_autocast():
            got = run()
        torch.testing.assert_close(got.float(), want, **AUTOCAST_TOL)


# --------------------------------------------------------------------------- torch.compile, one per family
def compiled(fn):
    torch._dynamo.reset()
    return torch.compile(fn, backend="inductor", dynamic=False)


@pytest.mark.slow
def test_compile_content_family():
    info = attnzoo.registry.get("additive")
    m = build(info, {})
    want = step_run(m)
    got = step_run(compiled(m))
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, **COMPILE_TOL)


@pytest.mark.slow
def test_compile_location_family():
    info = attnzoo.registry.get("location_aware")
    m = build(info, dict(channels=3, kernel_size=3, cumulative=True))
    want = step_run(m)
    got = step_run(compiled(m))
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, **COMPILE_TOL)


@pytest.mark.slow
def test_compile_visual_family():
    """soft_spatial's steps, and cbam then nonlocal over a feature map, forward and backward."""
    m = build(attnzoo.registry.get("soft_spatial"), {})
    want = step_run(m)
    got = step_run(compiled(m))
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, **COMPILE_TOL)
    blocks = torch.nn.Sequential(build(attnzoo.registry.get("cbam"), dict(reduction=2, kernel_size=3)),
                                 build(attnzoo.registry.get("nonlocal"), dict(subsample=True)))
    x = image_input(torch.float32)
    want = blocks(x)
    want_grad = torch.autograd.grad(want.square().sum(), x)[0]
    got = compiled(blocks)(x)
    got_grad = torch.autograd.grad(got.square().sum(), x)[0]
    torch.testing.assert_close(got, want, **COMPILE_TOL)
    torch.testing.assert_close(got_grad, want_grad, **COMPILE_TOL)


@pytest.mark.slow
def test_compile_multi_head_family():
    m = attnzoo.create("gqa", dim=DIM, num_heads=4, num_kv_heads=2, positions="rope").eval()
    x = torch.randn(B, 5, DIM)
    mask = torch.ones(B, 5, dtype=torch.bool)
    mask[1] = False  # a fully masked row through the fused path
    fn = compiled(lambda x: m(x, key_mask=mask, is_causal=True).output)
    want = m(x, key_mask=mask, is_causal=True).output
    torch.testing.assert_close(fn(x), want, **COMPILE_TOL)


@pytest.mark.slow
def test_compile_core_attend_forward_and_backward():
    torch.manual_seed(0)
    score = AdditiveScore(4, 4, 6)
    q, k, v = (torch.randn(2, HEADS, 3, 4, requires_grad=True) for _ in range(3))
    mask = torch.ones(2, 1, 3, 3, dtype=torch.bool)
    mask[0, 0, 1] = False

    def run(q, k, v):
        out = attend(q, k, v, score=score, mask=mask, score_mod=alibi(HEADS), backend="eager", need_weights=True)
        return out.output, out.weights

    want = run(q, k, v)
    want_grads = torch.autograd.grad(want[0].sum() + want[1].square().sum(), (q, k, v))
    got = compiled(run)(q, k, v)
    got_grads = torch.autograd.grad(got[0].sum() + got[1].square().sum(), (q, k, v))
    for a, b in zip(got + got_grads, want + want_grads):
        torch.testing.assert_close(a, b, **COMPILE_TOL)


@pytest.mark.slow
def test_compile_transformer_model():
    torch.manual_seed(0)
    lm = DecoderLM(LMConfig(vocab=11, dim=DIM, num_heads=HEADS, layers=1, dropout=0.0, context=16)).eval()
    tokens = torch.randint(0, 11, (2, 6))
    want = lm(tokens)[0]
    got = compiled(lambda t: lm(t)[0])(tokens)
    torch.testing.assert_close(got, want, **COMPILE_TOL)


@pytest.mark.slow
def test_compile_convolutional_family():
    """dynamic convolution (causal, padding, banded weights) and ConvS2S step decoding."""
    m = build_own("dynamic", dict(kernel_size=3))
    x = torch.randn(B, 5, DIM)
    mask = torch.ones(B, 5, dtype=torch.bool)
    mask[1, 3:] = False

    def run(x):
        out = m(x, key_mask=mask, is_causal=True, need_weights=True)
        return out.output, out.weights

    want = run(x)
    got = compiled(run)(x)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, **COMPILE_TOL)
    torch.manual_seed(0)
    model = ConvS2S(ConvS2SConfig(src_vocab=12, tgt_vocab=10, embed_dim=DIM, hidden_dim=DIM, enc_layers=1,
                                  dec_layers=2, dropout=0.0)).eval()
    src, lengths = torch.randint(3, 12, (2, 5)), torch.tensor([5, 3])
    with torch.no_grad():
        memory, state = model.encode(src, lengths)
        want = model.step(torch.tensor([1, 1]), state, memory)[:2]
        got = compiled(model.step)(torch.tensor([1, 1]), state, memory)[:2]
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, **COMPILE_TOL)
