"""The cases of ``attnzoo bench``: what is compared, at which sizes, against which targets.

(Named ``catalog`` rather than ``cases`` so the package's ``cases()`` function
does not shadow a submodule of the same name.)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from .contenders import (
    Factory,
    additive_contenders,
    alibi_contenders,
    decode_contenders,
    dropout_contenders,
    mha_infer_contenders,
    mha_train_contenders,
    weights_contenders,
)
from .modern import (
    linear_contenders,
    linear_decode_contenders,
    mla_decode_contenders,
    sliding_contenders,
    stage_contenders,
)


@dataclass
class Case:
    """One comparison: attnzoo (the first contender) against its peers, at each size."""

    name: str
    what: str
    sizes: list[dict]
    quick_sizes: list[dict]
    contenders: dict[str, Factory]
    flops: Callable[[dict], float] | None = None
    #: (peer, "speed" | "memory", bound): speed ratio >= bound, or memory ratio <= bound
    targets: list[tuple[str, str, float]] = field(default_factory=list)
    #: device types the targets are for (a CPU-only speed-up has none on CUDA, where both sides run one kernel)
    targets_on: tuple[str, ...] = ("cpu", "cuda")
    #: the sizes the targets are for (None: every size); a scaling case states its bound at one size
    targets_at: Callable[[dict], bool] | None = None


def _mha_flops(size: dict, train: bool = True) -> float:
    B, N, H, d = size["B"], size["N"], size["H"], size["d"]
    dim = H * d
    fwd = 4 * B * H * N * N * d + 2 * B * N * dim * dim * 4  # QK^T and AV; q, k, v and out projections
    return 3 * fwd if train else fwd


def cases() -> list[Case]:
    """Every case, in the order they run and report."""
    mha = dict(B=1, H=8, d=64)
    return [
        Case("mha-train", "multi-head self-attention, forward+backward, float32",
             [dict(mha, N=n) for n in (1024, 2048, 4096)], [dict(mha, N=256)], mha_train_contenders(),
             flops=_mha_flops,
             targets=[("nn.MultiheadAttention(need_weights=False)", "speed", 1.0), ("raw SDPA layer", "speed", 0.95)]),
        Case("mha-infer", "multi-head self-attention, inference (eval, no grad)",
             [dict(mha, N=2048)], [dict(mha, N=256)], mha_infer_contenders(),
             flops=lambda s: _mha_flops(s, train=False),
             targets=[("nn.MultiheadAttention(need_weights=False)", "speed", 2.0)]),
        Case("weights-infer", "multi-head self-attention returning per-head weights, inference",
             [dict(mha, N=2048)], [dict(mha, N=256)], weights_contenders(train=False),
             flops=lambda s: _mha_flops(s, train=False),
             targets=[("nn.MultiheadAttention(need_weights=True, average_attn_weights=False)", "speed", 1.25)]),
        Case("weights-train", "multi-head self-attention returning per-head weights, forward+backward",
             [dict(mha, N=2048)], [dict(mha, N=256)], weights_contenders(train=True),
             flops=_mha_flops,
             targets=[("nn.MultiheadAttention(need_weights=True, average_attn_weights=False)", "speed", 1.25)]),
        Case("additive", "additive (Bahdanau) attention, forward+backward, L = S = N",
             [dict(B=4, N=512, A=256)], [dict(B=2, N=128, A=64)], additive_contenders(),
             targets=[("naive broadcast additive (Keras, OpenNMT)", "memory", 1 / 8),
                      ("naive broadcast additive (Keras, OpenNMT)", "speed", 2.0)]),
        Case("alibi", "causal dot-product attention with an ALiBi score_mod, forward+backward",
             [dict(B=1, H=8, d=64, N=4096)], [dict(B=1, H=8, d=64, N=512)], alibi_contenders(),
             flops=lambda s: 3 * 4 * s["B"] * s["H"] * s["N"] * s["N"] * s["d"] / 2,
             targets=[("attnzoo eager (the reference)", "memory", 1 / 10),
                      ("attnzoo eager (the reference)", "speed", 1.0)]),
        Case("mha-train-bf16-short", "multi-head self-attention, forward+backward under bfloat16 autocast, "
             "word-length sequences (N = 16)", [dict(B=256, H=4, d=32, N=16)], [dict(B=16, H=4, d=32, N=16)],
             mha_train_contenders(bf16=True), flops=_mha_flops,
             targets=[("nn.MultiheadAttention(need_weights=False)", "speed", 1.5)], targets_on=("cpu",)),
        Case("dropout", "dropout (p = 0.1) on a bfloat16 (B, N, dim) activation, forward+backward",
             [dict(B=256, N=16, dim=512)], [dict(B=16, N=16, dim=64)], dropout_contenders(),
             targets=[("nn.Dropout", "speed", 2.0)], targets_on=("cpu",)),
        Case("decode", "greedy decoding of an LM up to its full context: the last `new` tokens, prefix already read",
             [dict(dim=256, H=4, layers=4, context=1024, new=16)], [dict(dim=64, H=4, layers=2, context=128, new=8)],
             decode_contenders(), targets=[("full recomputation per token", "speed", 5.0)]),
        *modern_cases(),
    ]


def modern_cases() -> list[Case]:
    """Linear, sliding-window and latent attention where their costs grow differently; the stage variants
    against x-transformers'."""
    heads = dict(B=1, H=8, d=64)
    layer = dict(B=1, H=8, d=64, N=2048)
    return [
        Case("linear-train", "causal attention on shared heads (d = 64, 8 heads), forward+backward, float32",
             [dict(heads, N=n) for n in (512, 2048, 8192, 16384)], [dict(heads, N=256)], linear_contenders(),
             targets=[("SDPA flash (causal softmax)", "speed", 3.0)], targets_at=lambda s: s["N"] == 8192),
        Case("linear-decode", "decoding 16 tokens after a prefix of `context`, one layer of width 512",
             [dict(H=8, d=64, context=c, new=16) for c in (512, 2048, 8192)], [dict(H=8, d=64, context=64, new=4)],
             linear_decode_contenders()),
        Case("sliding-train", "causal sliding-window attention (window w) on shared heads, forward+backward",
             [dict(heads, N=n, w=256) for n in (2048, 4096, 8192, 16384)], [dict(heads, N=512, w=64)],
             sliding_contenders(), targets=[("SDPA with a materialised window mask", "speed", 5.0)],
             targets_at=lambda s: s["N"] == 16384),
        Case("mla-decode", "decoding 16 tokens after a prefix of `context`, one layer of width 512",
             [dict(H=8, d=64, context=c, new=16) for c in (2048, 8192)], [dict(H=8, d=64, context=64, new=4)],
             mla_decode_contenders()),
        Case("sink-train", "causal self-attention with a learned sink logit per head, forward+backward",
             [layer], [dict(layer, N=128)], stage_contenders("sink", {}, {"head_learned_sink": True})),
        Case("softcap-train", "causal self-attention with logits soft-capped at 50, forward+backward",
             [layer], [dict(layer, N=128)],
             stage_contenders("softcap", {}, {"softclamp_logits": True, "logit_softclamp_value": 50.0})),
        Case("mla-train", "causal multi-head latent attention (latent 128), forward+backward",
             [layer], [dict(layer, N=128)],
             stage_contenders("mla", {"kv_latent_dim": 128}, {"use_latent_kv": True, "dim_latent_kv": 128})),
        Case("gated-train", "causal self-attention with a sigmoid output gate per head and channel, forward+backward",
             [layer], [dict(layer, N=128)], stage_contenders("gated", {}, {"output_gate": True})),
    ]
