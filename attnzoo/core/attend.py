"""attend(): the one pipeline every attention mechanism runs through.

    scores  = score(q, k)                      # (B, H, L, S)
    scores  = score_mod(scores + bias, ...)    # ALiBi, relative, location terms
    scores  = scores.masked_fill(~mask, min)   # mask: True = may attend
    weights = normalize(scores)                # float32; a fully masked row -> 0
    out     = weights @ v                      # (B, H, L, E)

Backends
--------
``eager``  the reference: the lines above, literally. Runs everything.
``sdpa``   ``torch.nn.functional.scaled_dot_product_attention`` (fused
           flash / memory-efficient kernels). Valid for dot-product scores with
           softmax when no weights are asked for; a ``score_mod`` must be
           additive (``score_mod.additive = True``) so it can be materialised
           as a bias.
``chunked`` exact attention by online softmax over key blocks with a
           recomputing backward (:mod:`attnzoo.core.chunked`): memory grows with
           L x block instead of L x S, for any score, ``score_mod``, mask and sink.
           With a ``mask_mod`` or ``normalize="sigmoid"`` it runs query blocks over
           only the keys the mask_mod leaves open (:mod:`attnzoo.core.blockwise`):
           a sliding window costs L x window. Softmax or sigmoid, no dropout, no
           weights.
``tiled``  exact attention that also returns the weights, by blocks of query
           rows that stay in cache (:mod:`attnzoo.core.tiled`): the weights
           are the only L x S tensor made, forward or backward. Softmax only,
           no dropout.
``auto``   the fastest backend valid for the call: ``sdpa`` when it can run
           it (but ``chunked`` when sdpa would need a materialised ``score_mod``
           bias larger than the device's budget, and ``eager`` for bfloat16 on the CPU
           with at most ``CPU_BF16_EAGER_KEYS`` keys); with ``need_weights=True``, ``tiled`` for all but tiny calls
           on CPU; else ``chunked`` when the (B, H, L, S) scores would exceed the budget or, on the CPU, rows
           have ``CHUNKED_AUTO_KEYS`` keys or more; else ``eager``. A ``mask_mod`` that leaves most blocks
           out sends the call to ``chunked``, which skips them.
           The budget (:func:`materialise_budget`) is ``CHUNKED_AUTO_BYTES`` on CPU, where blocks that stay
           in cache win; on CUDA it is a share of the GPU's memory, and ``tiled`` is taken only past it:
           there one materialised kernel beats Python-level blocks by 3-25x (H100, ``benchmarks/``).

Masks are boolean with True = may attend (as SDPA and FlexAttention; the
opposite of ``nn.MultiheadAttention``'s masks, which you convert with ``~``).

Shape legend: B batch, H query heads, G key/value heads (H % G == 0), L query
length, S key length, D query/key size, E value size. Inputs are either 4-D
(B, H, L, D) or 3-D (B, L, D) (one head); the output has the same rank.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from . import capture as _capture
from . import validate as V
from .blockwise import blockwise_attention, skips_most_blocks
from .budget import CHUNKED_AUTO_BYTES, CUDA_MATERIALISE_SHARE, materialise_budget  # noqa: F401
from .chunked import chunked_attention
from .dropout import dropout
from .masks import MaskMod, _causal_mask, _index_grid
from .normalize import NORMALIZERS, softmax
from .scores import Score, resolve_score
from .tiled import tiled_attention

ScoreMod = Callable[[Tensor, Tensor, Tensor, Tensor, Tensor], Tensor]
BACKENDS = ("auto", "eager", "sdpa", "chunked", "tiled")
#: with need_weights=True, backend="auto" takes the tiled path from this many (query, key) pairs on (CPU)
TILED_AUTO_PAIRS = 2 ** 16
#: on the CPU, backend="auto" runs bfloat16 calls with at most this many keys eagerly instead of through SDPA:
#: PyTorch's bfloat16 CPU flash kernel is 1.6-13x slower than materialised scores there (fp32 and fp16 are not;
#: measured on a 2-core AVX512-BF16 EPYC, benchmarks/README.md "The Transformer on g2p, faster")
CPU_BF16_EAGER_KEYS = 128
#: on the CPU, a dot-product call the fused kernel cannot run (a sink, a soft-cap, sigmoid) takes the chunked
#: backend from this many keys: forward+backward 2.9x (sink) and 2.2x (softcap) faster than eager at N = 512,
#: slower below 256 (2-core Xeon, 8 heads of 64)
CHUNKED_AUTO_KEYS = 512


@dataclass
class AttentionOutput:
    """output: (B, [H], L, E); weights: (B, [H], L, S) float32, or None unless asked for."""

    output: Tensor
    weights: Tensor | None = None

    def __iter__(self) -> Iterator[Tensor | None]:  # allows `out, w = attend(...)`
        yield self.output
        yield self.weights


def sdpa_unsupported_reason(score: Score, normalize: str, need_weights: bool,
                            score_mod: ScoreMod | None, sink: bool = False) -> str | None:
    """Why the fused backend cannot run a call, or None if it can."""
    if sink:
        return "sink= (the fused kernel has no sink logit; the chunked backend runs it without the L x S matrix)"
    if normalize != "softmax":
        return f"normalize={normalize!r} (the fused kernel only computes softmax)"
    if need_weights:
        return "need_weights=True (the fused kernel does not return weights)"
    if type(score).dot_form is Score.dot_form:
        return f"score {score.name!r} is not a dot product"
    if score_mod is not None and not getattr(score_mod, "additive", False):
        return "score_mod is not marked additive (set score_mod.additive = True if it only adds a bias)"
    return None


def chunked_unsupported_reason(normalize: str, need_weights: bool, dropout_p: float) -> str | None:
    """Why the chunked backend cannot run a call, or None if it can."""
    if normalize not in ("softmax", "sigmoid"):
        return f"normalize={normalize!r} (the chunked backend runs softmax and sigmoid)"
    if need_weights:
        return "need_weights=True (the chunked backend never holds the whole weight matrix)"
    if dropout_p > 0:
        return "dropout_p > 0 (dropout on weights it never stores)"
    return None


def tiled_unsupported_reason(normalize: str, dropout_p: float, sink: bool = False) -> str | None:
    """Why the tiled backend cannot run a call, or None if it can."""
    if sink:
        return "sink= (the tiled backend has no sink column; use backend='eager' for the weights with a sink)"
    if normalize != "softmax":
        return f"normalize={normalize!r} (the tiled backend computes softmax)"
    if dropout_p > 0:
        return "dropout_p > 0 (use backend='eager' for dropout on returned weights)"
    return None


def choose_backend(backend: str, score: Score, normalize: str, need_weights: bool,
                   score_mod: ScoreMod | None, dropout_p: float = 0.0,
                   grid: tuple[int, int, int, int] | None = None, device: torch.device | None = None,
                   dtype: torch.dtype | None = None, *, sink: bool = False, sparse: bool = False) -> str:
    """The backend that runs a call; ``grid`` = (B, H, L, S), ``device`` and ``dtype`` size the work for ``auto``;
    ``sink``: a sink logit is given; ``sparse``: a mask_mod leaves most (query, key) blocks out, so the chunked
    backend that skips them wins."""
    V.check_choice("backend", backend, BACKENDS)
    reason = sdpa_unsupported_reason(score, normalize, need_weights, score_mod, sink)
    if backend == "auto":
        if sparse and chunked_unsupported_reason(normalize, need_weights, dropout_p) is None:
            return "chunked"
        pairs = 0 if grid is None else grid[0] * grid[1] * grid[2] * grid[3]
        big = 4 * pairs > materialise_budget(device)  # the (B, H, L, S) float32 scores
        short_cpu_bf16 = (dtype == torch.bfloat16 and device is not None and device.type == "cpu"
                          and grid is not None and grid[3] <= CPU_BF16_EAGER_KEYS)
        if reason is None and short_cpu_bf16 and not big:
            return "eager"
        if reason is None:
            # sdpa would take a score_mod as a materialised (B, H, L, S) bias: past the budget the
            # chunked backend computes it block by block instead
            if score_mod is not None and big and \
                    chunked_unsupported_reason(normalize, need_weights, dropout_p) is None:
                return "chunked"
            return "sdpa"
        if need_weights:
            on_cuda = device is not None and device.type == "cuda"
            if (big if on_cuda else pairs >= TILED_AUTO_PAIRS) and \
                    tiled_unsupported_reason(normalize, dropout_p, sink) is None:
                return "tiled"
            return "eager"
        long_rows = grid is not None and grid[3] >= CHUNKED_AUTO_KEYS and device is not None and \
            device.type == "cpu" and type(score).dot_form is not Score.dot_form  # a dot product with a stage
        if (big or long_rows) and chunked_unsupported_reason(normalize, need_weights, dropout_p) is None:
            return "chunked"
        return "eager"
    why = {"sdpa": reason,
           "chunked": chunked_unsupported_reason(normalize, need_weights, dropout_p),
           "tiled": tiled_unsupported_reason(normalize, dropout_p, sink)}.get(backend)
    if why is not None:
        raise ValueError(f"backend={backend!r} cannot run this call: {why}; use backend='eager' or 'auto'")
    return backend


def _neginf_bias_as_mask(mask: Tensor | None, bias: Tensor | None) -> tuple[Tensor | None, Tensor | None]:
    """An additive "-inf" in ``bias`` is a blocked key: moved into the mask (True = may attend), 0 in the bias."""
    if bias is None or not torch.isneginf(bias).any():
        return mask, bias
    blocked_free = ~torch.isneginf(bias)
    mask = blocked_free if mask is None else mask & blocked_free
    return mask, bias.masked_fill(~blocked_free, 0.0)


def _run_backend(chosen: str, score: Score, qp: Tensor, kp: Tensor, v: Tensor, mask, bias, score_mod, mask_mod,
                 sink, is_causal, normalize: str, dropout_p: float, need_weights: bool, query_offset: int,
                 block_size: int | None) -> AttentionOutput:
    """The chosen backend on projected queries and keys (B, H, L, D), (B, H, S, D) and values (B, H, S, E)."""
    if chosen == "chunked" and (mask_mod is not None or normalize != "softmax"):  # skips blocks the mask_mod blocks
        return AttentionOutput(blockwise_attention(score, qp, kp, v, mask, bias, score_mod, mask_mod, is_causal,
                                                   query_offset, normalize, sink, block_size))
    if chosen == "chunked":
        return AttentionOutput(chunked_attention(score, qp, kp, v, mask, bias, score_mod, is_causal, query_offset,
                                                 block_size, sink))
    if mask_mod is not None:  # the other backends take it as a materialised (B, H, L, S) mask
        made = mask_mod(*_index_grid(qp.shape[0], qp.shape[1], qp.shape[2], kp.shape[2], qp.device, query_offset))
        made = torch.as_tensor(made, device=qp.device).to(torch.bool)
        mask = made if mask is None else mask & made
    if chosen == "sdpa":
        return _sdpa(score, qp, kp, v, mask, bias, score_mod, dropout_p, query_offset)
    if chosen == "tiled":
        out, weights = tiled_attention(score, qp, kp, v, mask, bias, score_mod, is_causal, query_offset, block_size)
        return AttentionOutput(out, weights if need_weights else None)
    return _eager(score, qp, kp, v, mask, bias, score_mod, normalize, dropout_p, need_weights, query_offset, sink)


def attend(
    q: Tensor, k: Tensor, v: Tensor, *,
    score: str | Score = "scaled_dot",
    mask: Tensor | None = None,
    bias: Tensor | None = None,
    score_mod: ScoreMod | None = None,
    mask_mod: MaskMod | None = None,
    sink: Tensor | None = None,
    is_causal: bool = False,
    normalize: str = "softmax",
    dropout_p: float = 0.0,
    need_weights: bool = False,
    backend: str = "auto",
    scale: float | None = None,
    keys_projected: bool = False,
    query_offset: int | None = None,
    block_size: int | None = None,
) -> AttentionOutput:
    """Attention of queries ``q`` over keys ``k`` and values ``v``.

    Args:
        q: (B, H, L, D) or (B, L, D) queries.
        k: (B, G, S, D) or (B, S, D) keys (G divides H: grouped-query attention).
        v: (B, G, S, E) or (B, S, E) values.
        score: "dot", "scaled_dot" or a :class:`~attnzoo.core.scores.Score` module (general, additive, ...).
        mask: boolean, broadcastable to (B, H, L, S) (or (B, L, S)); True = may attend.
        bias: float, broadcastable to the scores; added before normalising.
        score_mod: ``score_mod(score, b, h, q_idx, kv_idx) -> score`` (FlexAttention's): ALiBi, softcap, ...
        mask_mod: ``mask_mod(b, h, q_idx, kv_idx) -> bool`` (True = may attend), and-ed with ``mask``; the
            chunked backend skips the blocks it blocks (sliding windows, documents), the others materialise it.
        sink: (H,) or scalar sink logits: one more key with a zero value (rows sum below one). Softmax only.
        is_causal: block keys after each query (bottom-right aligned, so L < S works with a KV cache).
        normalize: "softmax", "sparsemax" or "sigmoid" (:mod:`attnzoo.core.normalize`).
        dropout_p: dropout on the weights (pass 0.0 at evaluation, as with SDPA).
        need_weights: also return the (B, [H], L, S) weights.
        backend: "auto", "eager", "sdpa" or "chunked".
        scale: overrides 1/sqrt(D) for score="scaled_dot".
        keys_projected: ``k`` already went through ``score.project_keys`` (step-wise
            decoders project keys once per sequence).
        query_offset: absolute position of the first query among the keys, used by
            ``is_causal`` and as ``q_idx`` in ``score_mod``; default ``S - L``
            (bottom-right: the queries are the newest positions, as with a KV cache).
        block_size: keys per block for backend="chunked" (default: 128, fewer for the additive
            score), query rows per block for backend="tiled" (default: a block of about 2 MiB).
    """
    _check_options(score, score_mod, mask_mod, dropout_p, scale, query_offset, block_size)
    score = resolve_score(score, scale)
    recorder = _capture.active()
    asked_for_weights = need_weights
    if recorder is not None:  # attnzoo.capture() needs the weights of every call
        need_weights, backend = True, ("auto" if backend in ("sdpa", "chunked") else backend)
    q, k, v = _autocast_inputs(q, k, v)
    three_d = _check_inputs(q, k, v, mask, bias, normalize, dropout_p)
    if mask is not None and not keys_projected:  # step-wise decoders (keys_projected) warn once per sequence
        V.warn_if_all_blocked("mask", mask)
    if three_d:  # one code path: (B, L, D) -> (B, 1, L, D)
        q, k, v = q.unsqueeze(1), k.unsqueeze(1), v.unsqueeze(1)
        mask = _add_head_dim(mask)
        bias = _add_head_dim(bias)
    mask, bias = _neginf_bias_as_mask(mask, bias)
    sink = _check_sink(sink, q, normalize)
    query_offset = _query_offset(query_offset, q.shape[-2], k.shape[-2], is_causal)
    grid = (q.shape[0], q.shape[1], q.shape[2], k.shape[2])
    chosen = choose_backend(backend, score, normalize, need_weights, score_mod, dropout_p, grid, q.device, q.dtype,
                            sink=sink is not None, sparse=skips_most_blocks(mask_mod, grid, query_offset))
    if is_causal and chosen not in ("chunked", "tiled"):  # those build the causal mask block by block
        c = _causal_mask(q.shape[-2], k.shape[-2], q.device, query_offset)  # (L, S)
        mask = c if mask is None else mask & c

    _check_score_sizes(score, q, k, keys_projected)
    qp = score.project_query(q)
    kp = k if keys_projected else score.project_keys(k)
    _check_feature_sizes(score, qp, kp)
    kp, v = _expand_kv_heads(qp, kp, v)
    out = _run_backend(chosen, score, qp, kp, v, mask, bias, score_mod, mask_mod, sink, is_causal, normalize,
                       dropout_p, need_weights, query_offset, block_size)
    return _returned(out, three_d, recorder, asked_for_weights)


def _returned(out: AttentionOutput, three_d: bool, recorder, asked_for_weights: bool) -> AttentionOutput:
    """The caller's shapes back (3-D in, 3-D out); the weights to an active capture, and to the caller if asked."""
    if three_d:
        out = AttentionOutput(out.output.squeeze(1), None if out.weights is None else out.weights.squeeze(1))
    if recorder is not None:
        recorder.record(out.weights)
        if not asked_for_weights:
            out = AttentionOutput(out.output, None)
    return out


# --------------------------------------------------------------------------- backends
def _eager(score, q, k, v, mask, bias, score_mod, normalize, dropout_p, need_weights,
           query_offset=0, sink=None) -> AttentionOutput:
    scores = score.compare(q, k)  # (B, H, L, S)
    scores = scores if scores.dtype == torch.float64 else scores.float()  # biases and score_mods in float32
    if bias is not None:
        scores = scores + bias
    if score_mod is not None:
        scores = score_mod(scores, *_index_grid(*scores.shape, device=scores.device, query_offset=query_offset))
    weights = NORMALIZERS[normalize](scores, mask) if sink is None else softmax(scores, mask, sink)  # (B,H,L,S) f32
    attn = weights.to(v.dtype)
    if dropout_p > 0:
        attn = dropout(attn, dropout_p)
    out = attn @ v  # (B, H, L, E)
    return AttentionOutput(out, weights if need_weights else None)


def _sdpa(score, q, k, v, mask, bias, score_mod, dropout_p, query_offset=0) -> AttentionOutput:
    q, k, scale = score.dot_form(q, k)
    B, H, L, S = q.shape[0], q.shape[1], q.shape[2], k.shape[2]
    if score_mod is not None:  # additive: materialise score_mod(0) as a bias
        # float64 inputs keep a float64 bias (a learned T5 bias, ALiBi's irrational slopes); others: float32
        zero = torch.zeros((), dtype=torch.float64 if q.dtype == torch.float64 else torch.float32, device=q.device)
        extra = score_mod(zero, *_index_grid(B, H, L, S, device=q.device, query_offset=query_offset))
        bias = extra if bias is None else bias + extra
    row_open = None
    if mask is not None:
        row_any = mask.any(dim=-1, keepdim=True)  # (B, H, L, 1)
        if not bool(row_any.all()):  # fully masked rows: open them, zero their output after
            row_open = row_any
            mask = mask | ~row_any
    if bias is not None:
        attn_mask = bias.to(q.dtype)
        if mask is not None:
            attn_mask = attn_mask.masked_fill(~mask, float("-inf"))
    else:
        attn_mask = mask
    E = v.shape[-1]
    if q.device.type == "cpu" and E < q.shape[-1]:
        # PyTorch's CPU flash kernel needs v's head size to equal q's; otherwise it falls back to the math kernel,
        # which materialises the (B, H, L, S) matrices: zero columns on v keep the flash kernel (3.4x faster,
        # MLA's 96-wide keys over 64-wide values at N = 2048, 2-core Xeon)
        v = F.pad(v, (0, q.shape[-1] - E))
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=dropout_p, scale=scale)[..., :E]
    if row_open is not None:
        out = out * row_open.to(out.dtype)
    return AttentionOutput(out, None)


# --------------------------------------------------------------------------- helpers
def _autocast_inputs(q, k, v):
    """Under torch.autocast, mixed input dtypes are expected: bring all three to the autocast dtype."""
    if not all(isinstance(x, Tensor) and torch.is_floating_point(x) for x in (q, k, v)):
        return q, k, v  # _check_inputs names the problem
    device_type = q.device.type
    if not torch.is_autocast_enabled(device_type):
        return q, k, v
    dtype = torch.get_autocast_dtype(device_type)
    return q.to(dtype), k.to(dtype), v.to(dtype)


def _add_head_dim(x: Tensor | None) -> Tensor | None:
    """A 3-D-input mask/bias broadcasting to (B, L, S) -> one broadcasting to (B, 1, L, S)."""
    if x is None or x.dim() < 3:
        return x
    return x.unsqueeze(-3)


def _expand_kv_heads(q: Tensor, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
    """Grouped-query attention: repeat each of the G key/value heads H / G times."""
    H, G = q.shape[1], k.shape[1]
    if G == H:
        return k, v
    return k.repeat_interleave(H // G, dim=1), v.repeat_interleave(H // G, dim=1)  # (B, H, S, D)


def _check_inputs(q, k, v, mask, bias, normalize, dropout_p) -> bool:
    for name, x in (("q", q), ("k", k), ("v", v)):
        V.check_tensor(name, x)
        V.check_floating(name, x)
    V.check_rank("q", q, (3, 4), "(B, H, L, D) or (B, L, D)")
    legend = "(B, L, D)" if q.dim() == 3 else "(B, G, S, D)"
    if k.dim() != q.dim():
        raise ValueError(f"k must have the same rank as q: q is {V.fmt_shape(q.shape)}, "
                         f"k is {V.fmt_shape(k.shape)}; expected k of shape {legend.replace('L', 'S')}")
    if v.dim() != q.dim():
        raise ValueError(f"v must have the same rank as q: q is {V.fmt_shape(q.shape)}, "
                         f"v is {V.fmt_shape(v.shape)}")
    V.check_same_dtype(q=q, k=k, v=v)
    V.check_same_device(q=q, k=k, v=v)
    if not (q.shape[0] == k.shape[0] == v.shape[0]):
        raise ValueError(f"batch sizes differ: q {V.fmt_shape(q.shape)}, k {V.fmt_shape(k.shape)}, "
                         f"v {V.fmt_shape(v.shape)}; dim 0 must be B in all three")
    if k.shape[-2] != v.shape[-2]:
        raise ValueError(f"k and v must have the same length S (dim -2): k {V.fmt_shape(k.shape)}, "
                         f"v {V.fmt_shape(v.shape)}")
    if q.dim() == 4:
        H, G = q.shape[1], k.shape[1]
        if k.shape[1] != v.shape[1]:
            raise ValueError(f"k and v must have the same number of heads G (dim 1): "
                             f"k {V.fmt_shape(k.shape)}, v {V.fmt_shape(v.shape)}")
        if H % G:
            raise ValueError(f"q has {H} heads, which is not a multiple of k's {G} heads "
                             f"(q {V.fmt_shape(q.shape)}, k {V.fmt_shape(k.shape)})")
        target = (q.shape[0], H, q.shape[2], k.shape[2])
        legend = "(B, H, L, S)"
    else:
        target = (q.shape[0], q.shape[1], k.shape[1])
        legend = "(B, L, S)"
    if mask is not None:
        V.check_mask("mask", mask, target, legend)
        if mask.device != q.device:
            raise ValueError(f"mask is on {mask.device} but q is on {q.device}")
    if bias is not None:
        V.check_bias("bias", bias, target, legend)
    V.check_choice("normalize", normalize, NORMALIZERS)
    return q.dim() == 3


def _check_options(score, score_mod, mask_mod, dropout_p, scale, query_offset, block_size) -> None:
    """attend's scalar arguments and score_mod: isinstance checks and a range, no tensor work."""
    if not isinstance(score, (str, Score)):
        raise TypeError(f"score must be a name ('dot', 'scaled_dot') or a Score module, got {type(score).__name__}")
    V.PROBABILITY.check("dropout_p", dropout_p)
    for name, value, kind in (("scale", scale, V.POSITIVE), ("query_offset", query_offset, V.INT),
                              ("block_size", block_size, V.SIZE)):
        if value is not None:
            kind.check(name, value)
    if score_mod is not None:
        V.check_mod("score_mod", score_mod)
    if mask_mod is not None:
        V.check_mod("mask_mod", mask_mod)


def _check_sink(sink: object, q: Tensor, normalize: str) -> Tensor | None:
    """A sink logit per head, (H,) or a scalar -> (1, H, 1, 1) (q is (B, H, L, D) here)."""
    if sink is None:
        return None
    V.check_tensor("sink", sink)
    V.check_floating("sink", sink)
    H = q.shape[1]
    if sink.dim() > 1 or sink.numel() not in (1, H):
        raise ValueError(f"sink must hold one logit per head, shape ({H},) (H,) or a scalar, got "
                         f"{V.fmt_shape(sink.shape)}")
    if normalize != "softmax":
        raise ValueError(f"sink= needs normalize='softmax' (a sink is one more key of the softmax), got "
                         f"normalize={normalize!r}")
    return sink.reshape(1, -1, 1, 1)




def _check_score_sizes(score: Score, q: Tensor, k: Tensor, keys_projected: bool) -> None:
    """A score module built for (query_dim, key_dim) features is given tensors of those sizes."""
    for name, x, expected in (("q", q, score.query_dim), ("k", k, None if keys_projected else score.key_dim)):
        if expected is not None and x.shape[-1] != expected:
            raise ValueError(f"score {type(score).__name__} was built for {name} with {expected} features "
                             f"({'query' if name == 'q' else 'key'}_dim={expected}), but {name} has shape "
                             f"{V.fmt_shape(x.shape)}; build the score with the sizes of your tensors")


def _query_offset(query_offset: int | None, L: int, S: int, is_causal: bool) -> int:
    """The first query's position among the keys (default S - L: the newest); a causal offset that puts every
    query before the first key is warned about, as an all-False mask is."""
    if query_offset is None:
        return S - L
    if is_causal and query_offset + L <= 0:
        _warn_every_row_blocked(query_offset, L)
    return query_offset


def _warn_every_row_blocked(query_offset: int, L: int) -> None:
    warnings.warn(f"query_offset={query_offset} with is_causal=True puts all {L} queries before the first key, so "
                  f"every row is fully masked and every output is zero; query_offset is the position of the first "
                  f"query among the keys (default S - L)", UserWarning, stacklevel=4)


def _check_feature_sizes(score: Score, q: Tensor, k: Tensor) -> None:
    if q.shape[-1] != k.shape[-1]:
        raise ValueError(
            f"score {score.name!r} compares features of equal size, but the (projected) query has "
            f"{q.shape[-1]} (q {V.fmt_shape(q.shape)}) and the key {k.shape[-1]} (k {V.fmt_shape(k.shape)}); "
            "use score='general' or 'additive' to compare vectors of different sizes"
        )
