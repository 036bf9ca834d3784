"""No public function changes a caller's tensors in place.

Every tensor handed to a public callable, including the tensors inside the
state objects passed in (AttentionState, Memory, DecoderState), is cloned
first; after the call each must be ``torch.equal`` to its clone and keep its
``_version`` (the counter any in-place write, even through a view, bumps).

The public surface is discovered, not listed by hand: ``__all__`` of
``attnzoo``, ``attnzoo.core``, ``attnzoo.positions`` and ``attnzoo.mechanisms``,
every public name defined in a module of ``attnzoo.models``, ``attnzoo.core.masks``,
every registered mechanism's class, and the public methods of every class found
(through its attnzoo base classes). Each must have a case below or a reason in
``EXEMPT``; the registered mechanisms' step contract (``initial_state`` and the
step call) and whole-sequence forward run for every mechanism in the registry.

The one documented exception: a :class:`~attnzoo.KVCache` passed as ``cache=``
is appended to by design, so its tensors are not checked (everything else in
those calls is).
"""

from __future__ import annotations

import dataclasses
import inspect

import pytest
import torch
from numerics_cases import DIM, OWN_NUMERICS, B, build, build_own, image_input, step_memory, variants
from public_surface import SKIP_METHODS, public_objects
from torch import nn

import attnzoo
import attnzoo.models
from attnzoo import KVCache, attend
from attnzoo import positions as P
from attnzoo.core import Dropout, dropout, masks, normalize
from attnzoo.core.scores import AdditiveScore, CosineScore, DotScore, GeneralScore, ScaledDotScore, Score, softcap
from attnzoo.mechanisms.transformer import BlockConfig, DecoderBlock, EncoderBlock, FeedForward
from attnzoo.mechanisms.visual import doubly_stochastic_penalty, flatten_grid
from attnzoo.models import decoding
from attnzoo.models.captioner import Captioner, CaptionerConfig
from attnzoo.models.cnn import CNN, CNNConfig
from attnzoo.models.convs2s import ConvS2S, ConvS2SConfig
from attnzoo.models.lm import DecoderLM, LMConfig, sample_next
from attnzoo.models.memnet import AttentiveReader, MemN2N, MemNetConfig, ReaderConfig, check_story, position_encoding
from attnzoo.models.rnn_seq2seq import RNNSeq2Seq, Seq2SeqConfig, check_source
from attnzoo.models.transformer_seq2seq import TransformerConfig, TransformerSeq2Seq
from attnzoo.models.vit import ViT, ViTConfig


# --------------------------------------------------------------------------- the checker
def tensors_in(obj, path="arg", seen=None):
    """(path, tensor) for every tensor reachable through containers and dataclasses; KVCaches excepted."""
    seen = set() if seen is None else seen
    if id(obj) in seen or isinstance(obj, (KVCache, nn.Module)):
        return []
    seen.add(id(obj))
    if isinstance(obj, torch.Tensor):
        return [(path, obj)]
    if isinstance(obj, dict):
        return [t for k, v in obj.items() for t in tensors_in(v, f"{path}[{k!r}]", seen)]
    if isinstance(obj, (list, tuple)):
        return [t for i, v in enumerate(obj) for t in tensors_in(v, f"{path}[{i}]", seen)]
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return [t for f in dataclasses.fields(obj) for t in tensors_in(getattr(obj, f.name), f"{path}.{f.name}", seen)]
    return []


CALLS = []  # every checked call's name, for the coverage test


def check(name, fn, *args, captured=(), **kwargs):
    """Call fn(*args, **kwargs) and assert that no tensor in the arguments (or ``captured``:
    tensors a mask_mod closes over) changed."""
    found = tensors_in(list(args), "args") + tensors_in(kwargs, "kwargs") + tensors_in(list(captured), "captured")
    assert found, f"{name}: the case passes no tensor"
    before = [(p, t, t.detach().clone(), t._version) for p, t in found]
    result = fn(*args, **kwargs)
    for p, t, clone, version in before:
        assert t._version == version, f"{name} wrote into {p} in place (version {version} -> {t._version})"
        assert torch.equal(t.detach(), clone), f"{name} changed {p}"
    CALLS.append(name)
    return result


# --------------------------------------------------------------------------- tiny fixtures
def qkv(H=2, L=3, S=5, D=4, E=3, grad=False):
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, H, n, d, generator=g) for n, d in ((L, D), (S, D), (S, E)))
    return [x.requires_grad_(grad) for x in (q, k, v)]


def tiny_rnn(attention="additive", **kw):
    torch.manual_seed(0)
    return RNNSeq2Seq(Seq2SeqConfig(src_vocab=12, tgt_vocab=10, embed_dim=8, hidden_dim=4, decoder_dim=8,
                                    enc_layers=1, attention=attention, attention_hidden=6, dropout=0.0, **kw)).eval()


def tiny_transformer():
    torch.manual_seed(0)
    return TransformerSeq2Seq(TransformerConfig(src_vocab=12, tgt_vocab=10, dim=8, num_heads=2, enc_layers=1,
                                                dec_layers=1, dropout=0.0, positions="rope")).eval()


def tiny_lm():
    torch.manual_seed(0)
    return DecoderLM(LMConfig(vocab=11, dim=8, num_heads=2, layers=1, dropout=0.0, context=8)).eval()


def source():
    src = torch.tensor([[5, 6, 7, 8], [5, 6, 0, 0]])
    return src, torch.tensor([4, 2])


# --------------------------------------------------------------------------- cases, by public name
def case_attend():
    q, k, v = qkv(grad=True)
    mask = torch.rand(2, 1, 3, 5, generator=torch.Generator().manual_seed(1)) < 0.7
    mask[0, 0, 0] = False
    bias = torch.randn(2, 1, 3, 5)
    bias[1, 0, 1, :2] = float("-inf")
    for backend in ("eager", "sdpa", "chunked", "tiled", "auto"):
        for score in ("scaled_dot", "dot", AdditiveScore(4, 4, 5), GeneralScore(4, 4), CosineScore()):
            if backend == "sdpa" and isinstance(score, AdditiveScore):
                continue
            kw = dict(score=score, mask=mask, bias=bias, score_mod=P.alibi(2), is_causal=True, backend=backend,
                      need_weights=backend == "tiled")
            out = check(f"attend[{backend}]", attend, q, k, v, **kw).output
            out.sum().backward()  # the backward must not write into the inputs either
            check(f"attend[{backend}] 3-D", attend, q[:, 0], k[:, 0], v[:, 0], score=score, mask=mask[:, 0],
                  bias=bias[:, 0], backend=backend)
    check("attend[sparsemax]", attend, q, k, v, mask=mask, bias=bias, normalize="sparsemax", need_weights=True,
          backend="eager")
    sink = torch.zeros(2, requires_grad=True)
    doc = masks.document(torch.tensor([[0, 0, 1, 1, 1], [0, 1, 1, 2, 2]]))
    for backend in ("eager", "chunked"):  # the modern stages: a sink, sigmoid, a cap, a block-skipped mask_mod
        for kw in (dict(sink=sink), dict(normalize="sigmoid"), dict(score_mod=softcap(2.0)),
                   dict(mask_mod=masks.or_masks(masks.sliding_window(2), masks.global_tokens(1))),
                   dict(mask_mod=doc, sink=sink)):
            out = check(f"attend[{backend}, {sorted(kw)}]", attend, q, k, v, mask=mask, bias=bias, backend=backend,
                        block_size=2, **kw).output
            out.sum().backward()
    with torch.autocast("cpu", dtype=torch.bfloat16):  # autocast casts copies, never the caller's tensors
        check("attend[autocast]", attend, q, k, v, mask=mask, backend="eager", need_weights=True)
    # the chunked backward after the call: q, k, v and bias are still the caller's
    q2, k2, v2 = qkv(grad=True)
    b2 = torch.randn(1, 1, 3, 5, requires_grad=True)
    out = attend(q2, k2, v2, bias=b2, backend="chunked", block_size=2).output
    before = [(t, t.detach().clone(), t._version) for t in (q2, k2, v2, b2)]
    out.sum().backward()
    for t, c, ver in before:
        assert t._version == ver and torch.equal(t.detach(), c)


def case_capture():
    """Recording under attnzoo.capture() reads the weights; the layer's inputs stay the caller's."""
    x = torch.randn(2, 5, DIM, requires_grad=True)
    key_mask = torch.tensor([[True] * 5, [True] * 3 + [False] * 2])
    m = attnzoo.MultiHeadAttention(DIM, 4, 2)
    with attnzoo.capture(m) as maps:
        out = check("capture(MultiHeadAttention)", m, x, key_mask=key_mask).output
        out.sum().backward()
        check("capture(attend)", attend, *qkv(grad=True), need_weights=False)
    recorded = [w.clone() for name in maps for w in maps[name]]
    maps.last("attend")
    assert all(torch.equal(a, b) for a, b in zip(recorded, [w for name in maps for w in maps[name]]))


def case_masks():
    lengths = torch.tensor([3, 1])
    check("padding_mask", masks.padding_mask, lengths, 4)
    b, h, qi, ki = masks.index_grid(2, 1, 3, 4)
    for name, mod in [("causal", masks.causal), ("sliding_window", masks.sliding_window(2)),
                      ("padding", masks.padding(lengths)),
                      ("and_masks", masks.and_masks(masks.causal, masks.padding(lengths))),
                      ("or_masks", masks.or_masks(masks.causal, masks.sliding_window(2, causal=False))),
                      ("not_mask", masks.not_mask(masks.causal))]:
        check(f"{name} mask_mod", mod, b, h, qi, ki, captured=[lengths])
        check(f"create_mask({name})", masks.create_mask, mod, 2, 1, 3, 4, captured=[lengths])
    check("padding() factory", masks.padding, lengths)
    ids = torch.tensor([[0, 0, 1, 1], [0, 1, 1, 1]])
    for name, mod in [("document", masks.document(ids)), ("global_tokens", masks.global_tokens(1))]:
        check(f"{name} mask_mod", mod, b, h, qi, ki, captured=[ids])
        check(f"key_spans_of({name})", masks.key_spans_of, mod, 1, 3, 4, captured=[ids])
    check("document() factory", masks.document, ids)


def case_normalizers():
    scores = torch.randn(2, 3, 5, requires_grad=True)
    mask = torch.rand(2, 3, 5) < 0.6
    mask[0, 1] = False
    sink = torch.zeros(2, 3, 1, requires_grad=True)
    check("softmax with a sink", normalize.softmax, scores, mask, sink).sum().backward()
    for fn in (normalize.softmax, normalize.sparsemax, normalize.sigmoid):
        w = check(fn.__name__, fn, scores, mask)
        w.sum().backward()
        check(fn.__name__ + " (no mask)", fn, scores)
        check(fn.__name__ + " (bfloat16)", fn, scores.detach().bfloat16(), mask)


def case_dropout():
    x = torch.randn(2, 3, 5, requires_grad=True)
    torch.manual_seed(0)
    check("dropout", dropout, x, 0.3).sum().backward()
    check("Dropout.forward", Dropout(0.3), x)
    check("dropout (bfloat16)", dropout, x.detach().bfloat16(), 0.3)


def case_scores():
    q, k, _ = qkv()
    for score in (DotScore(), ScaledDotScore(), GeneralScore(4, 4), AdditiveScore(4, 4, 5), CosineScore()):
        name = type(score).__name__
        check(f"{name}.forward", score, q, k)
        check(f"{name}.project_query", score.project_query, q)
        check(f"{name}.project_keys", score.project_keys, k)
        qp, kp = score.project_query(q), score.project_keys(k)
        check(f"{name}.compare", score.compare, qp, kp)
        check(f"{name}.dot_form", score.dot_form, qp, kp)


def case_positions():
    x = torch.randn(2, 5, 8)
    for mod in (P.SinusoidalPositions(8, 16), P.LearnedPositions(8, 16)):
        check(f"{type(mod).__name__}.forward", mod, x, 2)
    q, k, _ = qkv(D=4)
    check("RotaryPositions.forward", P.RotaryPositions(4), q, k, 1, 1)
    check("apply_rope", P.apply_rope, q, torch.arange(3))
    b, h, qi, ki = masks.index_grid(2, 2, 3, 5)
    scores = torch.randn(2, 2, 3, 5)
    check("ALiBi.__call__", P.alibi(2), scores, b, h, qi, ki)
    check("ALiBi.__call__ (bidirectional)", P.ALiBi(2, causal=False), scores, b, h, qi, ki)
    check("T5RelativeBias.forward", P.T5RelativeBias(2), scores, b, h, qi, ki)
    check("t5_bucket", P.t5_bucket, ki - qi)
    check("RelativePositions.bias", P.RelativePositions(4, 2).bias, q, 5, 2)


def case_attention_state():
    keys, values, mask = step_memory(5, torch.float32)
    m = build(attnzoo.registry.get("location_aware"), dict(channels=2, kernel_size=3, cumulative=True))
    state = m.initial_state(keys, values, mask)
    _, _, state = m(torch.randn(B, m.query_dim), keys, values, mask, state)
    check("AttentionState.index_select", state.index_select, torch.tensor([1, 0, 1]))
    check("AttentionState.replace", state.replace, weights=torch.zeros(B, 5))


def case_multihead():
    x, mem = torch.randn(2, 5, DIM), torch.randn(2, 4, DIM)
    key_mask = torch.tensor([[True] * 5, [True] * 3 + [False] * 2])
    mem_mask = torch.tensor([[True] * 4, [False] * 4])
    for positions in (None, "rope", "alibi", "t5", "relative"):
        m = attnzoo.MultiHeadAttention(DIM, 4, 2, positions=positions)
        for need in (True, False):
            check("MultiHeadAttention.forward", m, x, key_mask=key_mask, mask=torch.ones(5, 5, dtype=torch.bool),
                  is_causal=True, need_weights=need)
            check("MultiHeadAttention.forward (cross)", m, x, key=mem, value=mem, key_mask=mem_mask, need_weights=need)
        cache, cross = KVCache(), KVCache()  # appended to by design; x is not
        for t in range(3):
            check("MultiHeadAttention.forward (cache)", m, x[:, t:t + 1], is_causal=True, cache=cache)
            check("MultiHeadAttention.forward (cross cache)", m, x[:, t:t + 1], key=mem if t == 0 else None,
                  value=mem if t == 0 else None, key_mask=mem_mask, cache=cross)
    check("SelfAttention.forward", attnzoo.SelfAttention(DIM, 2, positions="rope"), x, key_mask=key_mask,
          need_weights=True)


def case_blocks():
    cfg = BlockConfig(dim=DIM, num_heads=2, dropout=0.0, positions="alibi")
    x, mem = torch.randn(2, 5, DIM), torch.randn(2, 4, DIM)
    mem_mask = torch.tensor([[True] * 4, [True, False, False, False]])
    check("EncoderBlock.forward", EncoderBlock(cfg), x, key_mask=torch.ones(2, 5, dtype=torch.bool), need_weights=True)
    dec = DecoderBlock(cfg)
    check("DecoderBlock.forward", dec, x, mem, mem_mask, need_weights=True)
    sc, cc = KVCache(), KVCache()
    check("DecoderBlock.forward (caches)", dec, x[:, :1], mem, mem_mask, self_cache=sc, cross_cache=cc)
    check("DecoderBlock.forward (caches, memory reused)", dec, x[:, 1:2], None, mem_mask, self_cache=sc, cross_cache=cc)
    check("FeedForward.forward", FeedForward(DIM, 16, 0.0, "gelu"), x)


def case_rnn_seq2seq():
    src, lengths = source()
    tgt = torch.tensor([[1, 4, 5], [1, 6, 0]])
    for kw in (dict(), dict(order="bahdanau"), dict(input_feeding=True, rnn="gru")):
        model = tiny_rnn(**kw)
        check("check_source", check_source, src, lengths)
        memory, state = check("RNNSeq2Seq.encode", model.encode, src, lengths)
        check("RNNSeq2Seq.step", model.step, tgt[:, 0], state, memory)
        check("RNNSeq2Seq.decode_teacher_forced", model.decode_teacher_forced, tgt, state, memory)
        check("RNNSeq2Seq.forward", model, src, lengths, tgt)
        check("RNNSeq2Seq.loss", model.loss, src, lengths, torch.cat([tgt, torch.full((2, 1), 2)], 1))
        check("Memory.index_select", memory.index_select, torch.tensor([1, 1, 0]))
        check("DecoderState.index_select", state.index_select, torch.tensor([1, 1, 0]))
        for fn in (decoding.greedy_decode, decoding.beam_search, decoding.decode):
            check(fn.__name__, fn, model, src, lengths, 4)
        check("beam_search (beam 3)", decoding.beam_search, model, src, lengths, 4, beam_size=3)


def case_transformer_seq2seq():
    model = tiny_transformer()
    src, lengths = source()
    tgt = torch.tensor([[1, 4, 5], [1, 6, 0]])
    memory, state = check("TransformerSeq2Seq.encode", model.encode, src, lengths)
    check("TransformerSeq2Seq.step", model.step, tgt[:, 0], state, memory)  # its KVCaches grow by design
    check("TransformerState.index_select", state.index_select, torch.tensor([1, 0]))
    check("TransformerSeq2Seq.forward", model, src, lengths, tgt, need_weights=True)
    check("TransformerSeq2Seq.attention_maps", model.attention_maps, src, lengths, tgt)
    check("TransformerSeq2Seq.loss", model.loss, src, lengths, torch.cat([tgt, torch.full((2, 1), 2)], 1), 0.1)
    check("decode (beam 2)", decoding.decode, model, src, lengths, 4, beam_size=2)


def case_convolutional():
    x = torch.randn(2, 5, DIM, requires_grad=True)
    key_mask = torch.tensor([[True] * 5, [True] * 3 + [False] * 2])
    for name in ("lightweight", "dynamic"):
        m = build_own(name, dict(kernel_size=3)).train()  # weight dropout draws in training
        m.weight_dropout = 0.2
        for causal in (False, True):
            out = check(f"{name}.forward", m, x, key_mask=key_mask, is_causal=causal, need_weights=True)
            out.output.sum().backward()
        check(f"{name}.kernels", m.kernels, x)
        cache = m.new_cache()
        for t in range(3):  # the cache is appended to by design; x and the mask are not
            check(f"{name}.forward (cache)", m, x[:, t:t + 1], key_mask=key_mask[:, : t + 1], is_causal=True,
                  cache=cache, need_weights=True)
    aa = build_own("aaconv", {})
    img = torch.randn(2, 3, 3, 4, requires_grad=True)
    check("AugmentedConv2d.forward", aa, img, need_weights=True).output.sum().backward()
    check("AugmentedConv2d.relative_logits", aa.relative_logits, torch.randn(2, 2, 12, 2), 3, 4)
    ms = build_own("multistep", {})
    h, g = torch.randn(2, 3, DIM, requires_grad=True), torch.randn(2, 3, 5)
    z, v = torch.randn(2, 4, 5), torch.randn(2, 4, 5)
    for need in (True, False):
        check("MultiStepAttention.forward", ms, h, g, z, v, key_mask[:, :4], need_weights=need).output.sum().backward()


def tiny_convs2s():
    torch.manual_seed(0)
    return ConvS2S(ConvS2SConfig(src_vocab=12, tgt_vocab=10, embed_dim=6, hidden_dim=8, enc_layers=1, dec_layers=2,
                                 dropout=0.0)).eval()


def case_convs2s():
    model = tiny_convs2s()
    src, lengths = source()
    tgt = torch.tensor([[1, 4, 5], [1, 6, 0]])
    memory, state = check("ConvS2S.encode", model.encode, src, lengths)
    _, _, state = check("ConvS2S.step", model.step, tgt[:, 0], state, memory)
    check("ConvS2S.step (later)", model.step, tgt[:, 1], state, memory)
    check("ConvS2SState.index_select", state.index_select, torch.tensor([1, 0, 1]))
    check("ConvMemory.index_select", memory.index_select, torch.tensor([1, 1, 0]))
    check("ConvS2S.forward", model, src, lengths, tgt, need_weights=True)
    check("ConvS2S.attention_maps", model.attention_maps, src, lengths, tgt)
    model.train()  # the encoder's gradient scaling and dropout
    loss = check("ConvS2S.loss", model.loss, src, lengths, torch.cat([tgt, torch.full((2, 1), 2)], 1), 0.1)
    loss.backward()
    model.eval()
    for fn in (decoding.greedy_decode, decoding.beam_search):
        check(fn.__name__ + " (convs2s)", fn, model, src, lengths, 4)


def case_lm():
    model = tiny_lm()
    tokens = torch.randint(0, 11, (2, 6))
    check("DecoderLM.forward", model, tokens, need_weights=True)
    check("DecoderLM.forward (caches)", model, tokens[:, :3], [KVCache()])
    check("DecoderLM.loss", model.loss, tokens)
    check("DecoderLM.generate", model.generate, tokens[:, :2], 9, temperature=0.8, top_k=5, top_p=0.9,
          generator=torch.Generator().manual_seed(0))
    logits = torch.randn(2, 11)
    for kw in (dict(temperature=0), dict(temperature=1.0), dict(top_k=3), dict(top_p=0.5), dict(temperature=2.0)):
        check("sample_next", sample_next, logits, **kw)


def case_vit():
    model = ViT(ViTConfig(image_size=4, patch_size=2, classes=3, dim=8, num_heads=2, layers=1, dropout=0.0))
    check("ViT.forward", model, torch.rand(2, 1, 4, 4), need_weights=True)


def case_cnn():
    for attention in ("none", "se", "cbam", "nonlocal", "aaconv"):
        torch.manual_seed(0)
        model = CNN(CNNConfig(image_size=8, classes=3, widths=[4, 8], depths=[1, 1], attention=attention,
                              attention_options={"reduction": 2} if attention in ("se", "cbam") else {}))
        for mode in (model.train(), model.eval()):  # BatchNorm's running statistics are the model's, not the input's
            check(f"CNN[{attention}].forward", mode, torch.rand(2, 1, 8, 8), need_weights=True)
            if attention == "aaconv":  # the augmented convolution in the 4 x 4 stage's place
                check("AugmentedConvUnit.forward", mode.blocks["1"], torch.rand(2, 4, 4, 4), need_weights=True)


def case_captioner():
    torch.manual_seed(0)
    model = Captioner(CaptionerConfig(vocab=9, image_height=8, image_width=16, widths=[4, 6], depths=[1, 1],
                                      embed_dim=4, decoder_dim=8, attention_hidden=4, dropout=0.0))
    images, tgt = torch.rand(2, 1, 8, 16), torch.tensor([[1, 4, 5, 2], [1, 6, 2, 0]])
    for mode in (model.train(), model.eval()):  # BatchNorm's running statistics are the model's, not the input's
        check("Captioner.forward", mode, images, tgt[:, :-1])
        check("Captioner.loss", mode.loss, images, tgt)
    check("Captioner.check_images", model.check_images, images)
    check("Captioner.annotations", model.annotations, images)
    lengths = torch.full((2,), 32)
    memory, state = check("Captioner.encode", model.encode, images, lengths)
    check("Captioner.step", model.step, tgt[:, 0], state, memory)
    check("CaptionState.index_select", state.index_select, torch.tensor([1, 1, 0]))
    check("beam_search (captioner)", decoding.beam_search, model, images, lengths, 4, beam_size=2)


def case_visual_helpers():
    check("flatten_grid", flatten_grid, torch.randn(2, 3, 4, 5))
    weights = torch.rand(2, 4, 6, requires_grad=True)
    key_mask = torch.tensor([[True] * 6, [True] * 3 + [False] * 3])
    step_mask = torch.tensor([[True] * 4, [True, True, False, False]])
    for reduction in ("mean", "sum", "none"):
        out = check("doubly_stochastic_penalty", doubly_stochastic_penalty, weights, key_mask, step_mask,
                    lam=0.5, reduction=reduction)
    out.sum().backward()


def case_memnet():
    story = torch.tensor([[[4, 5, 6], [7, 5, 0], [0, 0, 0]], [[8, 4, 0], [5, 7, 6], [6, 0, 0]]])  # (B, S, W)
    question = torch.tensor([[7, 4], [5, 0]])
    check("check_story", check_story, story, question, 9, 4)
    check("position_encoding", position_encoding, story, 4, torch.float32)
    torch.manual_seed(0)
    memnet = MemN2N(MemNetConfig(vocab=9, dim=4, hops=2, memory_size=4))
    check("MemN2N.encode", memnet.encode, story, memnet.embed[0])
    logits, weights = check("MemN2N.forward", memnet, story, question)
    check("MemN2N.forward (linear start)", memnet, story, question, linear=True)
    (logits.sum() + weights.sum()).backward()
    reader = AttentiveReader(ReaderConfig(vocab=9, embed_dim=4, hidden_dim=3, dropout=0.0, memory_size=4)).eval()
    check("AttentiveReader.flatten", AttentiveReader.flatten, story)
    logits, _ = check("AttentiveReader.forward", reader, story, question)
    logits.sum().backward()


def case_location_helpers():
    keys, values, mask = step_memory(6, torch.float32)
    q = torch.randn(B, 6)
    la = build(attnzoo.registry.get("location_aware"), dict(channels=2, kernel_size=3, cumulative=True))
    s = la.initial_state(keys, values, mask)
    check("LocationAwareAttention.location_features", la.location_features, s)
    gmm = build(attnzoo.registry.get("gmm"), {})
    s = gmm.initial_state(keys, values, mask)
    check("GMMAttention.mixture_parameters", gmm.mixture_parameters, q, s.position)
    for name in ("local_m", "local_p"):
        m = build(attnzoo.registry.get(name), dict(window=2))
        s = m.initial_state(keys, values, mask)
        check(f"{type(m).__name__}.windowed", m.windowed, q[:, None], s, values, mask, torch.full((B, 1), 2.0))
        if name == "local_p":
            check("LocalPredictiveAttention.predicted_position", m.predicted_position, q[:, None], s.extra["lengths"])
    mono = build(attnzoo.registry.get("monotonic"), dict(noise_std=0.5))
    s = mono.initial_state(keys, values, mask)
    check("MonotonicAttention.energy", mono.energy, q, s)
    check("MonotonicAttention.stop_probabilities", mono.stop_probabilities, q, s, mask, True)
    check("MonotonicAttention.expected_alignment", mono.expected_alignment, torch.rand(B, 6), s.weights)


#: public name -> the case that exercises it (a case may cover several names)
CASES = {
    "attnzoo.core.attend.attend": case_attend,
    "attnzoo.mechanisms.capture.capture": case_capture, "attnzoo.mechanisms.capture.Capture.last": case_capture,
    "attnzoo.mechanisms.capture.Capture.record": case_capture,
    **{f"attnzoo.core.masks.{n}": case_masks for n in ("padding_mask", "causal", "sliding_window", "padding",
                                                       "and_masks", "or_masks", "not_mask", "create_mask")},
    "attnzoo.core.dropout.dropout": case_dropout, "attnzoo.core.dropout.Dropout.forward": case_dropout,
    "attnzoo.core.normalize.softmax": case_normalizers, "attnzoo.core.normalize.sparsemax": case_normalizers,
    "attnzoo.core.normalize.sigmoid": case_normalizers,
    **{f"attnzoo.core.masks.{n}": case_masks for n in ("document", "key_spans_of")},
    **{f"attnzoo.core.scores.{c.__name__}.{m}": case_scores
       for c in (Score, DotScore, ScaledDotScore, GeneralScore, AdditiveScore, CosineScore)
       for m in ("project_query", "project_keys", "compare", "dot_form", "forward") if m in vars(c)},
    **{f"attnzoo.positions.{n}": case_positions for n in (
        "absolute._Absolute.forward", "rope.RotaryPositions.forward",
        "rope.apply_rope", "alibi.ALiBi.__call__", "t5.T5RelativeBias.forward", "t5.t5_bucket",
        "relative.RelativePositions.bias")},
    "attnzoo.mechanisms.base.AttentionState.index_select": case_attention_state,
    "attnzoo.mechanisms.base.AttentionState.replace": case_attention_state,
    "attnzoo.mechanisms.multihead.MultiHeadAttention.forward": case_multihead,
    "attnzoo.mechanisms.self_attention.SelfAttention.forward": case_multihead,
    "attnzoo.mechanisms.transformer.SelfAttentionBlock.forward": case_blocks,
    "attnzoo.mechanisms.transformer.DecoderBlock.forward": case_blocks,
    "attnzoo.mechanisms.transformer.FeedForward.forward": case_blocks,
    **{f"attnzoo.models.rnn_seq2seq.{n}": case_rnn_seq2seq for n in (
        "check_source", "RNNSeq2Seq.encode", "RNNSeq2Seq.step", "RNNSeq2Seq.decode_teacher_forced",
        "RNNSeq2Seq.forward", "RNNSeq2Seq.loss", "Memory.index_select", "DecoderState.index_select")},
    **{f"attnzoo.models.decoding.{n}": case_rnn_seq2seq for n in ("greedy_decode", "beam_search", "decode")},
    **{f"attnzoo.models.transformer_seq2seq.TransformerSeq2Seq.{n}": case_transformer_seq2seq
       for n in ("encode", "step", "forward", "attention_maps", "loss")},
    "attnzoo.models.transformer_seq2seq.TransformerState.index_select": case_transformer_seq2seq,
    **{f"attnzoo.models.lm.{n}": case_lm for n in ("DecoderLM.forward", "DecoderLM.loss", "DecoderLM.generate",
                                                  "sample_next")},
    "attnzoo.models.vit.ViT.forward": case_vit,
    "attnzoo.models.cnn.CNN.forward": case_cnn,
    "attnzoo.models.cnn.AugmentedConvUnit.forward": case_cnn,
    **{f"attnzoo.models.captioner.{n}": case_captioner for n in (
        "Captioner.forward", "Captioner.loss", "Captioner.check_images", "Captioner.annotations",
        "Captioner.encode", "Captioner.step", "CaptionState.index_select")},
    "attnzoo.mechanisms.visual.flatten_grid": case_visual_helpers,
    "attnzoo.mechanisms.visual.doubly_stochastic_penalty": case_visual_helpers,
    **{f"attnzoo.models.memnet.{n}": case_memnet for n in (
        "check_story", "position_encoding", "MemN2N.encode", "MemN2N.forward", "AttentiveReader.flatten",
        "AttentiveReader.forward")},
    **{f"attnzoo.mechanisms.convolutional.{n}": case_convolutional for n in (
        "LightweightConv.forward", "LightweightConv.kernels", "AugmentedConv2d.forward",
        "AugmentedConv2d.relative_logits", "MultiStepAttention.forward")},
    **{f"attnzoo.models.convs2s.{n}": case_convs2s for n in (
        "ConvS2S.encode", "ConvS2S.step", "ConvS2S.forward", "ConvS2S.attention_maps", "ConvS2S.loss",
        "ConvMemory.index_select", "ConvS2SState.index_select")},
    **{f"attnzoo.mechanisms.location.{n}": case_location_helpers for n in (
        "LocationAwareAttention.location_features", "GMMAttention.mixture_parameters", "_LocalAttention.windowed",
        "LocalPredictiveAttention.predicted_position", "MonotonicAttention.energy",
        "MonotonicAttention.stop_probabilities", "MonotonicAttention.expected_alignment")},
}

#: the step contract of every registered mechanism, checked by test_registered_mechanisms_leave_inputs_alone
REGISTRY_METHODS = {"initial_state", "forward", "check_memory", "check_query", "check_input"}

#: public names that take no caller tensors, or are excepted, with the reason
EXEMPT = {
    "attnzoo.core.kv_cache.KVCache": "appended to by design (the documented exception)",
    "attnzoo.core.attend.AttentionOutput": "a result container",
    "attnzoo.core.attend.choose_backend": "takes names and sizes, no tensors",
    "attnzoo.core.dropout.keep_mask": "takes a shape and a rate, no tensors",
    "attnzoo.mechanisms.capture.Capture.items": "reads the recorded maps, takes no tensor",
    "attnzoo.registry.create": "builds a module from sizes", "attnzoo.registry.mechanisms": "lists names",
    "attnzoo.mechanisms.registry.MechanismInfo": "registry metadata",
    "attnzoo.mechanisms.base.AttentionState.of": "a constructor: wraps the tensors it is given, changes none",
    "attnzoo.core.masks.causal_mask": "takes sizes", "attnzoo.core.masks.sliding_window_mask": "takes sizes",
    "attnzoo.core.masks.index_grid": "takes sizes",
    "attnzoo.core.masks.global_tokens": "takes a count (its mask_mod has a case)",
    "attnzoo.core.kv_cache.RollingKVCache": "a cache: appended to by design (the documented exception)",
    "attnzoo.mechanisms.linear.LinearState.index_select_": "a decoding state: reordered in place by design",
    "attnzoo.mechanisms.linear.LinearAttention.new_cache": "makes an empty state, takes nothing",
    "attnzoo.mechanisms.linear.Performer.redraw": "redraws the layer's own buffer, takes nothing",
    "attnzoo.models.lm.DecoderLM.new_caches": "makes empty caches, takes nothing",
    "attnzoo.mechanisms.differential.DifferentialAttention.lambda_": "reads the layer's parameters, takes nothing",
    "attnzoo.mechanisms.differential.DifferentialAttention.new_cache": "makes an empty cache, takes nothing",
    "attnzoo.mechanisms.multihead.MultiHeadLatentAttention.new_cache": "makes an empty cache, takes nothing",
    "attnzoo.mechanisms.multihead.MultiHeadLatentAttention.cache_numbers_per_token": "a size, takes nothing",
    **{f"attnzoo.mechanisms.linear.{n}.features": "called by forward on the layer's projections (forward's case)"
       for n in ("LinearAttention", "Performer")},
    "attnzoo.core.scores.softcap": "a factory taking a number (the SoftCap it makes has a case in attend's)",
    "attnzoo.core.scores.compose_score_mods": "combines callables, takes no tensor (composed mods run in attend's)",
    "attnzoo.core.masks.has_key_spans": "reads an attribute of a mask_mod, takes no tensor",
    "attnzoo.mechanisms.multihead.MultiHeadAttention.mask_mod": "returns the layer's pattern, takes a flag",
    "attnzoo.mechanisms.sparse.SlidingWindowAttention.mask_mod": "returns the layer's pattern, takes a flag",
    "attnzoo.mechanisms.sparse.SlidingWindowAttention.new_cache": "makes an empty cache, takes nothing",
    "attnzoo.positions.alibi.alibi": "a factory (its ALiBi is checked)",
    "attnzoo.positions.alibi.alibi_slopes": "takes a head count",
    "attnzoo.positions.absolute.sinusoidal_table": "takes sizes",
    "attnzoo.positions.absolute._Absolute.table": "no arguments",
    "attnzoo.positions.absolute.SinusoidalPositions.table": "no arguments",
    "attnzoo.positions.absolute.LearnedPositions.table": "no arguments", "attnzoo.positions.absolute._Absolute.check":
        "a shape check called by forward (checked there)",
    "attnzoo.positions.relative.RelativePositions.relative_index": "takes sizes",
    "attnzoo.mechanisms.base.StepAttention.initial_state": "abstract (every registered subclass is checked)",
    "attnzoo.mechanisms.base.StepAttention.forward": "abstract (every registered subclass is checked)",
    "attnzoo.mechanisms.transformer.BlockConfig": "a config",
    "attnzoo.models.decoding.Hypotheses": "a result container",
    "attnzoo.models.factory.check_model": "takes names", "attnzoo.models.factory.build_seq2seq": "takes sizes",
    "attnzoo.models.factory.rebuild_seq2seq": "takes a config",
    "attnzoo.models.factory.restore_seq2seq": "takes a config and reads a state_dict (load_state_dict copies it)",
    "attnzoo.models.lm.LMConfig": "a config", "attnzoo.models.lm.bits_per_character": "takes a float",
    "attnzoo.models.rnn_seq2seq.Seq2SeqConfig": "a config",
    "attnzoo.models.transformer_seq2seq.TransformerConfig": "a config",
    "attnzoo.models.vit.ViTConfig": "a config",
    "attnzoo.models.cnn.CNNConfig.stages_with_block": "reads the config, takes no tensor",
    "attnzoo.models.cnn.CNN.block_stages": "no arguments",
    "attnzoo.models.cnn.resolve_block": "takes a name",
    "attnzoo.models.cnn.check_stages": "takes lists of ints",
    "attnzoo.models.cnn.conv_bn_relu": "builds layers from ints",
    "attnzoo.models.captioner.CaptionerConfig": "a config", "attnzoo.models.captioner.CaptionerOutput":
        "a result container",
    "attnzoo.mechanisms.base.VisualOutput": "a result container",
    "attnzoo.models.convs2s.ConvS2SConfig": "a config",
    "attnzoo.mechanisms.convolutional.ConvCache": "appended to by design, as KVCache (the documented exception)",
    "attnzoo.mechanisms.convolutional.LightweightConv.new_cache": "takes no tensors",
    "attnzoo.lab.load": "takes a path", "attnzoo.lab.Run.predict": "texts or images into a trained run's predictor "
    "(tests/test_load.py)", "attnzoo.lab.Run.attention": "one text or image into a trained run's predictor",
    "attnzoo.lab.Run.evaluate": "takes a split name", "attnzoo.lab.Run.report": "no arguments",
    "attnzoo.lab.train": "takes names and numbers", "attnzoo.compare.compare": "takes names and numbers",
    "attnzoo.compare.Comparison.table": "no arguments", "attnzoo.compare.Comparison.to_html": "no arguments",
    "attnzoo.compare.Comparison.to_json": "no arguments",
    "attnzoo.models.options.check_options": "takes names", "attnzoo.models.options.kv_heads_for": "takes a dict of "
    "options and returns a new one",
}


def discover() -> set[str]:
    """Every public callable's qualified name ("module.Class.method" for methods)."""
    found = set()
    for obj in public_objects():
        qual = f"{obj.__module__}.{obj.__qualname__}"
        if not inspect.isclass(obj):
            found.add(qual)
            continue
        if dataclasses.is_dataclass(obj) and not any(
                callable(v) and not n.startswith("_") for k in obj.__mro__ for n, v in vars(k).items()):
            found.add(qual)  # a plain data container
            continue
        if qual in EXEMPT:
            found.add(qual)
            continue
        for klass in obj.__mro__:
            if not klass.__module__.startswith("attnzoo"):
                continue
            for n, v in vars(klass).items():
                if (n.startswith("_") and n != "__call__") or n in SKIP_METHODS:
                    continue
                if callable(v) or isinstance(v, (staticmethod, classmethod)):
                    found.add(f"{klass.__module__}.{klass.__qualname__}.{n}")
    return found


def registry_method(name: str) -> bool:
    """A step-contract method of a registered mechanism's class (or its attnzoo bases)."""
    owners = {f"{k.__module__}.{k.__qualname__}" for info in attnzoo.mechanisms() for k in info.cls.__mro__}
    owner, _, method = name.rpartition(".")
    return method in REGISTRY_METHODS and owner in owners and name not in EXEMPT


def test_every_public_callable_has_a_no_inplace_case():
    found = discover()
    assert len(found) > 50, f"discovery found too little: {sorted(found)}"
    registered = {info.name for info in attnzoo.mechanisms() if info.family not in OWN_NUMERICS}
    assert registered and {p.values[0].name for p in variants()} == registered  # the others: cases above
    missing = sorted(n for n in found if n not in CASES and n not in EXEMPT and not registry_method(n))
    assert not missing, f"add a no-in-place case (or an EXEMPT reason) for: {missing}"
    stale = sorted(n for n in list(CASES) + list(EXEMPT) if n not in found)
    assert not stale, f"cases or exemptions for names that are no longer public: {stale}"


@pytest.mark.parametrize("case", sorted(set(CASES.values()), key=lambda f: f.__name__), ids=lambda f: f.__name__)
def test_public_callables_leave_inputs_alone(case):
    CALLS.clear()
    case()
    assert CALLS, "the case checked nothing"


@pytest.mark.parametrize("info,options", variants())
def test_registered_mechanisms_leave_inputs_alone(info, options):
    m = build(info, options)
    if info.step_wise:
        keys, values, mask = step_memory(6, torch.float32)
        keys.requires_grad_()
        state = check(f"{info.name}.initial_state", m.initial_state, keys, values, mask)
        q = torch.randn(B, m.query_dim)
        for _ in range(3):  # later steps read the state's weights, cumulative sums and positions
            ctx, w, state = check(f"{info.name} step", m, q, keys, values, mask, state)
        if ctx.requires_grad:  # (monotonic's hard decisions have no gradient)
            ctx.sum().backward()
        check(f"{info.name} step (no state)", m, q, keys, values, mask)
        if m.stateless:
            check(f"{info.name} T steps", m, torch.randn(B, 4, m.query_dim), keys, values, mask, state)
    elif info.kind == "image":
        x = image_input(torch.float32)
        for mode in (m.train(), m.eval()):  # a BatchNorm (nonlocal's "batchnorm" residual) updates only its own stats
            for need in (True, False):
                out = check(f"{info.name}.forward", mode, x, need_weights=need)
                (out.output if need else out).sum().backward()
    else:
        x = torch.randn(B, 5, DIM, requires_grad=True)
        key_mask = torch.tensor([[True] * 5, [True] * 2 + [False] * 3])
        for need in (True, False):
            out = check(f"{info.name}.forward", m, x, key_mask=key_mask, is_causal=True, need_weights=need)
            out.output.sum().backward()


def test_the_checker_catches_in_place_writes():
    x = torch.zeros(3)
    with pytest.raises(AssertionError, match="in place"):
        check("add_", lambda t: t.add_(1), x)
    with pytest.raises(AssertionError, match="in place"):  # through a view
        check("view write", lambda t: t[:1].fill_(2.0), x)
    keys, values, mask = step_memory(4, torch.float32)
    state = build(attnzoo.registry.get("location_aware"), dict(kernel_size=3)).initial_state(keys, values, mask)
    with pytest.raises(AssertionError, match=r"args\[0\]\.weights"):  # inside a state object
        check("state write", lambda s: s.weights.mul_(2), state)
