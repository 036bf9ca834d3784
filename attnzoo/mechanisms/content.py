"""Content-based attention: weights from how well the query matches each key.

    e_ts   = score(h_t, k_s)                 # one of the scores below
    a_t    = normalize(e_t)  over s          # softmax (or sparsemax); masked s -> 0
    c_t    = sum_s a_ts v_s                  # the context vector

Every mechanism here uses the step-wise contract of :mod:`attnzoo.mechanisms.base`
and runs through :func:`attnzoo.attend`; the key-side projection (W_a k, U k,
k/|k|) is done once per source sequence in ``initial_state``.

Shape legend: B batch, T decoder steps, S source length, Dq query size,
Dk key size, Dv value size, A additive hidden size.
"""

from __future__ import annotations

from torch import Tensor

from ..core import validate as V
from ..core.attend import BACKENDS, attend
from ..core.normalize import NORMALIZERS
from ..core.scores import SHARPNESS, AdditiveScore, CosineScore, DotScore, GeneralScore, ScaledDotScore, Score
from .base import AttentionState, StepAttention
from .registry import register


class ContentAttention(StepAttention):
    """Shared body: ``score`` decides the family member; everything else is the core's."""

    @V.checked(normalize=V.one_of(NORMALIZERS), backend=V.one_of(BACKENDS))
    def __init__(self, score: Score, query_dim: int, key_dim: int, value_dim: int | None = None,
                 normalize: str = "softmax", backend: str = "auto"):
        super().__init__(query_dim, key_dim, value_dim)
        self.score = score
        self.normalize = normalize
        self.backend = backend

    def initial_state(self, keys: Tensor, values: Tensor | None = None,
                      key_mask: Tensor | None = None) -> AttentionState:
        self.check_memory(keys, values, key_mask)
        return AttentionState.of(self, projected_keys=self.score.project_keys(keys))  # (B, S, Dk')

    def forward(self, query: Tensor, keys: Tensor, values: Tensor, key_mask: Tensor | None = None,
                state: AttentionState | None = None) -> tuple[Tensor, Tensor, AttentionState]:
        if state is None:
            state = self.initial_state(keys, values, key_mask)
        self.check_query(query, state, key_mask, values)
        one_step = query.dim() == 2
        q = query.unsqueeze(1) if one_step else query  # (B, T, Dq)
        mask = None if key_mask is None else key_mask[:, None, :]  # (B, 1, S)
        context, weights = attend(
            q, state.projected_keys, values, score=self.score, mask=mask, normalize=self.normalize,
            need_weights=True, backend=self.backend, keys_projected=True,
        )  # (B, T, Dv), (B, T, S)
        if one_step:
            context, weights = context.squeeze(1), weights.squeeze(1)  # (B, Dv), (B, S)
        return context, weights, state.replace(weights=weights)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", normalize={self.normalize!r}"


def _same_dims(name: str, query_dim: int, key_dim: int) -> None:
    if query_dim != key_dim:
        raise ValueError(
            f"{name} attention compares query and key directly, so query_dim ({query_dim}) must equal "
            f"key_dim ({key_dim}); use 'general' or 'additive' for different sizes"
        )


@register("dot", family="content", paper="Luong, Pham & Manning 2015, Effective Approaches to "
                                          "Attention-based Neural Machine Translation")
class DotAttention(ContentAttention):
    """e_ts = h_t . k_s   (Luong 2015 "dot")."""

    @V.checked()
    def __init__(self, query_dim: int, key_dim: int, value_dim: int | None = None,
                 hidden_dim: int | None = None, **options):
        _same_dims("dot", query_dim, key_dim)
        super().__init__(DotScore(), query_dim, key_dim, value_dim, **options)


@register("scaled_dot", family="content", paper="Vaswani et al. 2017, Attention Is All You Need")
class ScaledDotAttention(ContentAttention):
    """e_ts = h_t . k_s / sqrt(d)   (Vaswani 2017)."""

    @V.checked(scale=V.POSITIVE)
    def __init__(self, query_dim: int, key_dim: int, value_dim: int | None = None,
                 hidden_dim: int | None = None, scale: float | None = None, **options):
        _same_dims("scaled_dot", query_dim, key_dim)
        super().__init__(ScaledDotScore(scale), query_dim, key_dim, value_dim, **options)


@register("general", family="content", paper="Luong, Pham & Manning 2015, Effective Approaches to "
                                              "Attention-based Neural Machine Translation")
class GeneralAttention(ContentAttention):
    """e_ts = h_t^T W_a k_s   (Luong 2015 "general", bilinear); W_a k_s computed once per sequence."""

    @V.checked()
    def __init__(self, query_dim: int, key_dim: int, value_dim: int | None = None,
                 hidden_dim: int | None = None, **options):
        super().__init__(GeneralScore(query_dim, key_dim), query_dim, key_dim, value_dim, **options)


@register("additive", family="content", paper="Bahdanau, Cho & Bengio 2015, Neural Machine Translation "
                                               "by Jointly Learning to Align and Translate")
class AdditiveAttention(ContentAttention):
    """e_ts = v^T tanh(W h_t + U k_s + b)   (Bahdanau 2015; Luong's "concat"); U k_s + b once per sequence."""

    @V.checked()
    def __init__(self, query_dim: int, key_dim: int, value_dim: int | None = None,
                 hidden_dim: int | None = None, **options):
        super().__init__(AdditiveScore(query_dim, key_dim, hidden_dim), query_dim, key_dim, value_dim, **options)


@register("cosine", family="content", paper="Graves, Wayne & Danihelka 2014, Neural Turing Machines")
class CosineAttention(ContentAttention):
    """e_ts = beta * h_t . k_s / (|h_t| |k_s|), beta = 1 + softplus(b) learned   (Graves 2014, NTM)."""

    @V.checked(initial_sharpness=SHARPNESS)
    def __init__(self, query_dim: int, key_dim: int, value_dim: int | None = None,
                 hidden_dim: int | None = None, initial_sharpness: float = 5.0, **options):
        _same_dims("cosine", query_dim, key_dim)
        super().__init__(CosineScore(initial_sharpness), query_dim, key_dim, value_dim, **options)
