"""The modern stages of the core pipeline: a sink logit (normaliser), sigmoid attention (normaliser),
logit soft-capping (score_mod), and the mask_mods the chunked backend skips block by block (sliding
windows, global tokens, documents of a packed batch).

Each against its paper's equation written as a plain float64 loop, the equivalences that pin it down,
every backend that runs it against eager (outputs and gradients), gradcheck, and its bad input.
"""

import math

import pytest
import torch

from attnzoo import attend
from attnzoo.core import choose_backend
from attnzoo.core.masks import (
    and_masks,
    causal,
    create_mask,
    document,
    global_tokens,
    key_spans_of,
    or_masks,
    sliding_window,
)
from attnzoo.core.scores import ScaledDotScore, compose_score_mods, softcap

B, H, L, D, E = 2, 3, 9, 4, 5


def make(L_=L, S_=None, seed=0, grad=False):
    g = torch.Generator().manual_seed(seed)
    S_ = L_ if S_ is None else S_
    q = torch.randn(B, H, L_, D, generator=g, dtype=torch.float64)
    k = torch.randn(B, H, S_, D, generator=g, dtype=torch.float64)
    v = torch.randn(B, H, S_, E, generator=g, dtype=torch.float64)
    return tuple(t.requires_grad_(grad) for t in (q, k, v))


def loop(q, k, v, allowed, weigh):
    """out[b,h,i] = sum_j w_ij v[b,h,j] with w_row = weigh(scores of the allowed keys, h) for each row."""
    out = torch.zeros(*q.shape[:3], v.shape[-1], dtype=torch.float64)
    for b in range(q.shape[0]):
        for h in range(q.shape[1]):
            for i in range(q.shape[2]):
                keep = [j for j in range(k.shape[2]) if allowed(b, h, i, j)]
                if not keep:
                    continue
                s = [float(q[b, h, i] @ k[b, h, j]) / math.sqrt(q.shape[-1]) for j in keep]
                for w, j in zip(weigh(s, h), keep):
                    out[b, h, i] += w * v[b, h, j]
    return out


def softmax_row(s, sink=None):
    top = max(s + ([sink] if sink is not None else []))
    e = [math.exp(x - top) for x in s]
    total = sum(e) + (math.exp(sink - top) if sink is not None else 0.0)
    return [x / total for x in e]


ALL = lambda b, h, i, j: True  # noqa: E731
CAUSAL = lambda b, h, i, j: j <= i  # noqa: E731


# --------------------------------------------------------------------------- sink
@pytest.mark.parametrize("backend", ["eager", "chunked", "auto"])
@pytest.mark.parametrize("is_causal", [False, True])
def test_sink_is_one_more_key_with_a_zero_value(backend, is_causal):
    q, k, v = make()
    sink = torch.tensor([0.5, -1.0, 2.0], dtype=torch.float64)
    ref = loop(q, k, v, CAUSAL if is_causal else ALL, lambda s, h: softmax_row(s, float(sink[h])))
    out = attend(q, k, v, sink=sink, is_causal=is_causal, backend=backend, block_size=4).output
    torch.testing.assert_close(out, ref, atol=1e-12, rtol=1e-10)
    w = attend(q, k, v, sink=sink, is_causal=is_causal, need_weights=True).weights
    assert (w.sum(-1) < 1).all(), "with a sink the weights sum to less than one"


def test_a_sink_at_minus_infinity_is_softmax():
    q, k, v = make()
    sink = torch.full((H,), float("-inf"), dtype=torch.float64)
    plain = attend(q, k, v, backend="eager", need_weights=True)
    for backend in ("eager", "chunked"):
        out = attend(q, k, v, sink=sink, backend=backend, need_weights=backend == "eager")
        torch.testing.assert_close(out.output, plain.output, atol=1e-14, rtol=0)
        if out.weights is not None:
            torch.testing.assert_close(out.weights, plain.weights, atol=1e-14, rtol=0)


def test_a_fully_masked_row_with_a_sink_gives_a_zero_output_on_every_backend():
    q, k, v = make()
    mask = torch.ones(B, 1, L, L, dtype=torch.bool)
    mask[1, :, 2] = False
    sink = torch.zeros(H, dtype=torch.float64)
    for backend in ("eager", "chunked"):
        out = attend(q, k, v, sink=sink, mask=mask, backend=backend).output
        assert torch.equal(out[1, :, 2], torch.zeros_like(out[1, :, 2]))


def test_sink_gradcheck_on_the_chunked_backend():
    q, k, v = make(L_=5, grad=True)
    sink = torch.tensor([0.3, -0.2, 1.0], dtype=torch.float64, requires_grad=True)
    fn = lambda q, k, v, s: attend(q, k, v, sink=s, is_causal=True, backend="chunked", block_size=2).output  # noqa
    assert torch.autograd.gradcheck(fn, (q, k, v, sink))


# --------------------------------------------------------------------------- sigmoid
@pytest.mark.parametrize("backend", ["eager", "chunked"])
@pytest.mark.parametrize("is_causal", [False, True])
def test_sigmoid_attention_is_sigmoid_of_score_minus_log_n(backend, is_causal):
    q, k, v = make()
    ref = loop(q, k, v, CAUSAL if is_causal else ALL,
               lambda s, h: [1 / (1 + math.exp(-(x - math.log(len(s))))) for x in s])
    out = attend(q, k, v, normalize="sigmoid", is_causal=is_causal, backend=backend, block_size=4).output
    torch.testing.assert_close(out, ref, atol=1e-12, rtol=1e-10)


def test_sigmoid_gradcheck_and_auto_never_takes_the_fused_kernel():
    q, k, v = make(L_=5, grad=True)
    fn = lambda q, k, v: attend(q, k, v, normalize="sigmoid", backend="chunked", block_size=2).output  # noqa: E731
    assert torch.autograd.gradcheck(fn, (q, k, v))
    assert choose_backend("auto", ScaledDotScore(), "sigmoid", False, None) != "sdpa"


# --------------------------------------------------------------------------- soft-capping
@pytest.mark.parametrize("backend", ["eager", "chunked", "tiled", "auto"])
def test_softcap_is_cap_tanh_of_score_over_cap(backend):
    q, k, v = make()
    q = q * 6  # scores past the cap
    cap = 2.0
    ref = loop(q, k, v, CAUSAL, lambda s, h: softmax_row([cap * math.tanh(x / cap) for x in s]))
    out = attend(q, k, v, score_mod=softcap(cap), is_causal=True, backend=backend, block_size=4).output
    torch.testing.assert_close(out, ref, atol=1e-12, rtol=1e-10)


def test_softcap_with_a_huge_cap_is_the_identity_and_composes_after_a_bias():
    q, k, v = make()
    plain = attend(q, k, v, backend="eager").output
    torch.testing.assert_close(attend(q, k, v, score_mod=softcap(1e9), backend="eager").output, plain,
                               atol=1e-12, rtol=0)
    shift = lambda s, b, h, i, j: s + (i - j).abs().to(s.dtype) * -0.5  # noqa: E731
    both = compose_score_mods(shift, softcap(3.0))
    s_ref = torch.einsum("bhld,bhsd->bhls", q, k) / 2.0
    idx = torch.arange(L)
    s_ref = 3.0 * torch.tanh((s_ref - 0.5 * (idx[:, None] - idx[None, :]).abs()) / 3.0)
    torch.testing.assert_close(attend(q, k, v, score_mod=both, backend="chunked").output,
                               torch.softmax(s_ref, -1) @ v, atol=1e-12, rtol=1e-10)
    assert softcap(2.0).additive is False, "a cap bends the score: the fused kernel must not take it as a bias"


# --------------------------------------------------------------------------- mask_mods skipped by block
MODS = {
    "sliding": (sliding_window(3), lambda b, h, i, j: 0 <= i - j < 3),
    "sliding-both-ways+global": (or_masks(sliding_window(2, causal=False), global_tokens(2)),
                                 lambda b, h, i, j: abs(i - j) < 2 or i < 2 or j < 2),
}


@pytest.mark.parametrize("name", list(MODS))
@pytest.mark.parametrize("backend", ["eager", "sdpa", "chunked", "tiled"])
def test_window_and_global_mask_mods_equal_their_loop_on_every_backend(name, backend):
    mod, rule = MODS[name]
    q, k, v = make(L_=13)
    ref = loop(q, k, v, rule, lambda s, h: softmax_row(s))
    out = attend(q, k, v, mask_mod=mod, backend=backend, block_size=4).output
    torch.testing.assert_close(out, ref, atol=1e-12, rtol=1e-10)


def test_a_window_covering_the_whole_sequence_is_full_attention():
    q, k, v = make(L_=13)
    for backend in ("eager", "chunked"):
        out = attend(q, k, v, mask_mod=sliding_window(13), backend=backend, block_size=4).output
        torch.testing.assert_close(out, attend(q, k, v, is_causal=True, backend="eager").output,
                                   atol=1e-13, rtol=0)


def test_the_packed_batch_with_document_masks_equals_each_document_alone():
    lengths = [[4, 7, 2], [13]]
    q, k, v = make(L_=13, grad=True)
    ids = torch.tensor([sum(([d] * n for d, n in enumerate(row)), []) for row in lengths])
    mod = and_masks(causal, document(ids))
    for backend in ("eager", "chunked", "sdpa"):
        out = attend(q, k, v, mask_mod=mod, backend=backend, block_size=4).output
        for b, row in enumerate(lengths):
            start = 0
            for n in row:
                sl = slice(start, start + n)
                alone = attend(q[b:b + 1, :, sl], k[b:b + 1, :, sl], v[b:b + 1, :, sl], is_causal=True,
                               backend="eager").output
                torch.testing.assert_close(out[b:b + 1, :, sl], alone, atol=1e-13, rtol=0)
                start += n


def test_document_key_spans_cover_every_open_key():
    ids = torch.tensor([[0, 0, 0, 1, 1, 2, 2, 2, 2, 3], [0, 1, 1, 1, 1, 1, 1, 2, 2, 2]])
    mod = and_masks(causal, document(ids))
    dense = create_mask(mod, 2, 1, 10, 10)[:, 0]  # (B, L, S)
    for lo in range(10):
        for hi in range(lo + 1, 11):
            spans = key_spans_of(mod, lo, hi, 10)
            inside = torch.zeros(10, dtype=torch.bool)
            for a, b in spans:
                inside[a:b] = True
            assert not (dense[:, lo:hi] & ~inside).any(), (lo, hi, spans)


@pytest.mark.parametrize("backend", ["chunked", "sdpa"])
def test_mask_mod_gradients_equal_eager(backend):
    q, k, v = make(L_=13, grad=True)
    bias = torch.randn(13, 13, dtype=torch.float64, requires_grad=True)
    mod = or_masks(sliding_window(3), global_tokens(1))
    grads = []
    for b in ("eager", backend):
        out = attend(q, k, v, mask_mod=mod, bias=bias, backend=b, block_size=4).output
        grads.append(torch.autograd.grad((out * torch.linspace(-1, 1, E, dtype=torch.float64)).sum(),
                                         (q, k, v, bias)))
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=1e-10)


def test_mask_mod_gradcheck_on_the_chunked_backend():
    q, k, v = make(L_=7, grad=True)
    mod = or_masks(sliding_window(2), global_tokens(1))
    fn = lambda q, k, v: attend(q, k, v, mask_mod=mod, backend="chunked", block_size=2).output  # noqa: E731
    assert torch.autograd.gradcheck(fn, (q, k, v))


def test_auto_takes_the_block_skipping_path_for_a_narrow_window_over_a_long_sequence():
    from attnzoo.core.blockwise import skips_most_blocks as _skips_most_blocks

    assert _skips_most_blocks(sliding_window(256), (1, 8, 4096, 4096), 0)
    assert not _skips_most_blocks(sliding_window(4096), (1, 8, 4096, 4096), 0)
    assert not _skips_most_blocks(sliding_window(16), (1, 1, 64, 64), 0), "small calls stay on the fused kernel"
    assert choose_backend("auto", ScaledDotScore(), "softmax", False, None, sparse=True) == "chunked"


# --------------------------------------------------------------------------- bad input
def test_bad_sink_sigmoid_and_document_input_is_named():
    q, k, v = make()
    with pytest.raises(ValueError, match=r"sink must hold one logit per head, shape \(3,\)"):
        attend(q, k, v, sink=torch.zeros(4, dtype=torch.float64))
    with pytest.raises(TypeError, match="sink must be a floating-point tensor"):
        attend(q, k, v, sink=torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="sink= needs normalize='softmax'"):
        attend(q, k, v, sink=torch.zeros(3, dtype=torch.float64), normalize="sigmoid")
    for backend in ("sdpa", "tiled"):
        with pytest.raises(ValueError, match=f"backend='{backend}' cannot run this call: sink="):
            attend(q, k, v, sink=torch.zeros(3, dtype=torch.float64), backend=backend)
    with pytest.raises(ValueError, match="backend='sdpa' cannot run this call: normalize='sigmoid'"):
        attend(q, k, v, normalize="sigmoid", backend="sdpa")
    with pytest.raises(ValueError, match=r"doc_ids must have shape \(B, S\)"):
        document(torch.zeros(9, dtype=torch.long))
    with pytest.raises(TypeError, match="doc_ids must hold integer document ids"):
        document(torch.zeros(2, 9))
    with pytest.raises(ValueError, match="cap must be a positive finite number"):
        softcap(0.0)
    with pytest.raises(TypeError, match="mask_mod must take 4 positional arguments"):
        attend(q, k, v, mask_mod=lambda b, h, i: i > 0)
