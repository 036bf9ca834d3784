"""Score functions: how much a query matches each key.

Contract shared by every score: ``(B, [H], L, Dq), (B, [H], S, Dk) -> (B, [H], L, S)``.

A score is split in three so that step-wise decoders can do the key-side work
once per source sequence instead of once per output step:

    scores = compare(project_query(q), project_keys(k))

``project_keys`` (U k, W k, k/|k|) is what ``initial_state`` caches. Scores
that are a scaled dot product after projection also give ``dot_form``, the
(q', k', scale) with ``scores = scale * q' . k'``, which lets the fused
``sdpa`` backend run them.

Shape legend: B batch, H heads, L query length, S key length,
Dq/Dk query/key feature sizes, A the additive score's hidden size.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import validate as V


class Score(nn.Module):
    """Base class: identity projections, subclasses define ``compare``."""

    name: str = "score"
    #: feature sizes the score expects (None: any, but query and key must agree)
    query_dim: int | None = None
    key_dim: int | None = None
    #: whether ``compare`` itself uses learned tensors (projections do not count: they run before it)
    compare_uses_parameters: bool = False

    def project_query(self, q: Tensor) -> Tensor:
        return q

    def project_keys(self, k: Tensor) -> Tensor:
        return k

    def compare(self, q: Tensor, k: Tensor) -> Tensor:  # (.., L, D'), (.., S, D') -> (.., L, S)
        raise NotImplementedError

    def dot_form(self, q: Tensor, k: Tensor) -> tuple[Tensor, Tensor, float] | None:
        """(q', k', scale) with compare(q, k) == scale * q' @ k'^T, or None if not a dot product."""
        return None

    def forward(self, q: Tensor, k: Tensor) -> Tensor:
        return self.compare(self.project_query(q), self.project_keys(k))


class DotScore(Score):
    """score(q, k) = q . k   (Luong 2015, "dot")."""

    name = "dot"

    def compare(self, q, k):
        return q @ k.transpose(-1, -2)  # (B, H, L, S)

    def dot_form(self, q, k):
        return q, k, 1.0


class ScaledDotScore(Score):
    """score(q, k) = q . k / sqrt(D)   (Vaswani 2017); ``scale`` overrides 1/sqrt(D)."""

    name = "scaled_dot"

    @V.checked(scale=V.POSITIVE)
    def __init__(self, scale: float | None = None):
        super().__init__()
        self.scale = scale

    def _scale(self, q: Tensor) -> float:
        return self.scale if self.scale is not None else 1.0 / math.sqrt(q.shape[-1])

    def compare(self, q, k):
        return (q @ k.transpose(-1, -2)) * self._scale(q)  # (B, H, L, S)

    def dot_form(self, q, k):
        return q, k, self._scale(q)


class GeneralScore(Score):
    """score(q, k) = q^T W_a k   (Luong 2015, "general"/bilinear).

    W_a k is computed once per source sequence (``project_keys``), after which
    the score is a plain dot product, so the fused backend applies.
    """

    name = "general"

    @V.checked()
    def __init__(self, query_dim: int, key_dim: int):
        super().__init__()
        self.query_dim, self.key_dim = query_dim, key_dim
        self.key_proj = nn.Linear(key_dim, query_dim, bias=False)  # W_a

    def project_keys(self, k):
        return self.key_proj(k)  # (B, H, S, Dq)

    def compare(self, q, k):
        return q @ k.transpose(-1, -2)  # (B, H, L, S)

    def dot_form(self, q, k):
        return q, k, 1.0


class AdditiveScore(Score):
    """score(q, k) = v^T tanh(W q + U k + b)   (Bahdanau 2015, "concat" in Luong 2015).

    U k + b is computed once per source sequence. The plain comparison
    broadcasts a (.., L, 1, A) + (.., 1, S, A) sum, the (B, H, L, S, A) tensor
    that makes additive attention expensive (in a step-wise decoder L = 1 and it
    is small). Past ``BLOCKWISE_ELEMENTS`` elements on CPU (on CUDA: past the
    device's :func:`~attnzoo.core.budget.materialise_budget`, since there the
    one broadcast kernel is 20x faster than tiles) that tensor is never made:
    :func:`attnzoo.core.additive.additive_scores` computes the scores tile by
    tile and recomputes the tiles in backward. ``blockwise`` forces one way
    (``False``: the plain expression, the reference; ``True``: the tiles).
    """

    name = "additive"
    compare_uses_parameters = True  # v

    @V.checked()
    def __init__(self, query_dim: int, key_dim: int, hidden_dim: int | None = None,
                 blockwise: bool | None = None):
        super().__init__()
        hidden_dim = query_dim if hidden_dim is None else hidden_dim
        self.blockwise = blockwise
        self.query_dim, self.key_dim, self.hidden_dim = query_dim, key_dim, hidden_dim
        self.query_proj = nn.Linear(query_dim, hidden_dim, bias=False)  # W
        self.key_proj = nn.Linear(key_dim, hidden_dim, bias=True)  # U, b
        self.energy = nn.Linear(hidden_dim, 1, bias=False)  # v

    def project_query(self, q):
        return self.query_proj(q)  # (B, H, L, A)

    def project_keys(self, k):
        return self.key_proj(k)  # (B, H, S, A)

    def compare(self, q, k):
        from .additive import BLOCKWISE_ELEMENTS, additive_scores

        lead = torch.broadcast_shapes(q.shape[:-2], k.shape[:-2])
        size = math.prod(lead) * q.shape[-2] * k.shape[-2] * q.shape[-1]  # of the (B, H, L, S, A) sum
        if self.blockwise is None and q.device.type == "cuda":
            from .budget import materialise_budget

            blockwise = 4 * size > materialise_budget(q.device)
        else:
            blockwise = self.blockwise or (self.blockwise is None and size >= BLOCKWISE_ELEMENTS)
        if blockwise:
            return additive_scores(q, k, self.energy.weight[0])  # (B, H, L, S), no (.., A) tensor
        hidden = torch.tanh(q.unsqueeze(-2) + k.unsqueeze(-3))  # (B, H, L, S, A)
        return self.energy(hidden).squeeze(-1)  # (B, H, L, S)


#: the cosine score's starting beta: beta = 1 + softplus(.) > 1
SHARPNESS = V.Kind("a finite number > 1", (float, int), low=1, low_inclusive=False)


class CosineScore(Score):
    """score(q, k) = beta * q . k / (|q| |k|)   (Graves 2014, Neural Turing Machines).

    The sharpness beta = 1 + softplus(beta_raw) >= 1 (the NTM's "oneplus") is
    learned; it starts at ``initial_sharpness``. After normalising q and k it
    is a dot product, so the fused backend applies.
    """

    name = "cosine"
    compare_uses_parameters = True  # the sharpness beta

    @V.checked(initial_sharpness=SHARPNESS, eps=V.POSITIVE)
    def __init__(self, initial_sharpness: float = 5.0, eps: float = 1e-8):
        super().__init__()
        self.eps = eps
        # inverse of 1 + softplus: x = log(exp(beta - 1) - 1)
        self.sharpness_raw = nn.Parameter(torch.tensor(math.log(math.expm1(initial_sharpness - 1))))

    @property
    def sharpness(self) -> Tensor:
        return 1 + F.softplus(self.sharpness_raw)

    def _unit(self, x: Tensor) -> Tensor:
        """x / max(|x|, eps); in float32 for 16-bit inputs, where eps = 1e-8 rounds to 0 and a zero vector
        (a padded position) would give 0/0 = NaN (found in float16 on an H100)."""
        if x.dtype in (torch.float16, torch.bfloat16):
            return self._unit(x.float()).to(x.dtype)
        return x / x.norm(dim=-1, keepdim=True).clamp_min(self.eps)

    def project_query(self, q):
        return self._unit(q)

    def project_keys(self, k):
        return self._unit(k)

    def compare(self, q, k):
        return self.sharpness.to(q.dtype) * (q @ k.transpose(-1, -2))  # (B, H, L, S)

    def dot_form(self, q, k):
        return q * self.sharpness.to(q.dtype), k, 1.0


#: parameter-free scores that ``attend(score="...")`` accepts by name
BUILTIN_SCORES = {"dot": DotScore, "scaled_dot": ScaledDotScore}


def resolve_score(score: str | Score, scale: float | None = None) -> Score:
    if isinstance(score, Score):
        return score
    if isinstance(score, str):
        if score == "scaled_dot":
            return ScaledDotScore(scale)
        if score == "dot":
            return DotScore()
        if score in ("general", "additive", "cosine"):
            raise ValueError(
                f"score={score!r} has learned parameters: build it once and pass the module, "
                f"e.g. score=attnzoo.core.scores.{type_name(score)}(...), "
                "or use the step-wise mechanism attnzoo.create(" + repr(score) + ", ...)"
            )
        from .validate import check_choice

        check_choice("score", score, list(BUILTIN_SCORES))
    raise TypeError(f"score must be a name or an attnzoo Score module, got {type(score).__name__}")


def type_name(name: str) -> str:
    return {"general": "GeneralScore", "additive": "AdditiveScore", "cosine": "CosineScore"}[name]


# --------------------------------------------------------------------------- score_mods of the scores themselves
class SoftCap:
    """Logit soft-capping (Gemma 2, Gemma Team 2024; Grok-1): ``score_mod(s) = cap * tanh(s / cap)``.

    Keeps every score in (-cap, cap) with slope 1 near zero, so no logit can run away; ``cap -> inf`` is the
    identity. Not additive (it bends the score), so the fused ``sdpa`` backend cannot take it; ``eager``,
    ``chunked`` and ``tiled`` can. Compose it after a bias with :func:`compose_score_mods`."""

    additive = False

    @V.checked(cap=V.POSITIVE)
    def __init__(self, cap: float = 50.0):
        self.cap = float(cap)

    def __call__(self, score: Tensor, b: Tensor, h: Tensor, q_idx: Tensor, kv_idx: Tensor) -> Tensor:
        return self.cap * torch.tanh(score / self.cap)

    def __repr__(self) -> str:
        return f"SoftCap(cap={self.cap:g})"


@V.checked(cap=V.POSITIVE)
def softcap(cap: float = 50.0) -> SoftCap:
    """A ``score_mod`` that soft-caps scores: ``cap * tanh(score / cap)`` (Gemma 2)."""
    return SoftCap(cap)


class ComposedScoreMod(nn.Module):
    """``score_mod`` applied one after another (left to right); an nn.Module so that learned biases inside
    (T5's table) stay parameters the chunked backend differentiates."""

    def __init__(self, *mods):
        super().__init__()
        self.mods = list(mods)
        self.learned = nn.ModuleList([m for m in mods if isinstance(m, nn.Module)])
        self.additive = all(getattr(m, "additive", False) for m in mods)

    def forward(self, score: Tensor, b: Tensor, h: Tensor, q_idx: Tensor, kv_idx: Tensor) -> Tensor:
        for mod in self.mods:
            score = mod(score, b, h, q_idx, kv_idx)
        return score


def compose_score_mods(*mods):
    """One ``score_mod`` from several (``None`` entries skipped): ``compose_score_mods(alibi, softcap(30))``
    adds ALiBi's bias, then caps. Returns None for none, the mod itself for one."""
    mods = [m for m in mods if m is not None]
    for m in mods:
        V.check_mod("score_mod", m)
    if not mods:
        return None
    return mods[0] if len(mods) == 1 else ComposedScoreMod(*mods)
