"""Location-based attention: weights that depend on *where* the decoder is.

Content attention asks "which key matches this query?"; the mechanisms here
also (or only) use a position: the previous step's weights, a window centre
that moves forward, or a mixture of Gaussians sliding along the source. Every
member keeps that position in the explicit :class:`AttentionState` it hands
back (``weights``, ``cumulative``, ``position``), so beam search can reorder
it and a caller can resume from any step; nothing is hidden in the module.

    location        a_t = softmax(W_a h_t)                                   Luong 2015
    location_aware  e_ts = w^T tanh(W h_t + V k_s + U (F * a_{t-1})_s + b)   Chorowski 2015
    gmm             a_tu = sum_k alpha_tk exp(-beta_tk (kappa_tk - u)^2)     Graves 2013
    local_m         content scores inside [t - D, t + D]                     Luong 2015
    local_p         ... inside [p_t - D, p_t + D], times a Gaussian at p_t   Luong 2015
    monotonic       expected / hard monotonic alignment                     Raffel 2017

Shape legend: B batch, T decoder steps, S source length, Dq query size,
Dk key size, Dv value size, A hidden size, K mixture components,
C location-feature channels.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from ..core import validate as V
from ..core.attend import attend
from ..core.normalize import NORMALIZERS
from ..core.scores import AdditiveScore, DotScore, GeneralScore, Score
from .base import AttentionState, StepAttention
from .registry import register

_LUONG = "Luong, Pham & Manning 2015, Effective Approaches to Attention-based Neural Machine Translation"


def _positions(S: int, like: Tensor) -> Tensor:
    """Source positions 0..S-1 as a float (S,) tensor on ``like``'s device."""
    return torch.arange(S, device=like.device, dtype=torch.float32 if like.dtype != torch.float64 else like.dtype)


def _valid(keys: Tensor, key_mask: Tensor | None) -> Tensor:
    """(B, S) boolean: the real source positions."""
    if key_mask is not None:
        return key_mask
    return torch.ones(keys.shape[:2], dtype=torch.bool, device=keys.device)


def _mix(weights: Tensor, values: Tensor) -> Tensor:
    """c = sum_s a_s v_s: weights (B, S) or (B, T, S), values (B, S, Dv) -> (B, Dv) or (B, T, Dv).

    Unnormalised weights (GMM) can exceed float16's range: the sum runs in the weights' float32 (float64)
    and a float16 result saturates at +-65504 instead of becoming inf."""
    if values.dtype == torch.float16:
        out = _mix(weights, values.to(weights.dtype))
        limit = torch.finfo(torch.float16).max
        return out.clamp(-limit, limit).to(torch.float16)
    w = weights.to(values.dtype)
    if w.dim() == 2:
        return (w.unsqueeze(1) @ values).squeeze(1)  # (B, 1, S) @ (B, S, Dv) -> (B, Dv)
    return w @ values  # (B, T, Dv)


def _stat_dtype(keys: Tensor) -> torch.dtype:
    """The dtype of weights and positions carried in the state: float64 for float64 keys, else float32."""
    return torch.float64 if keys.dtype == torch.float64 else torch.float32


def _like_query(query: Tensor, context: Tensor, weights: Tensor) -> tuple[Tensor, Tensor]:
    """One-step results (B, Dv), (B, S) -> (B, 1, Dv), (B, 1, S) when the query was (B, 1, Dq)."""
    if query.dim() == 3:
        return context.unsqueeze(1), weights.unsqueeze(1)
    return context, weights


def _uniform(valid: Tensor, dtype: torch.dtype) -> Tensor:
    """(B, S) weights spread evenly over the real positions (the usual a_0)."""
    w = valid.to(dtype)
    return w / w.sum(-1, keepdim=True).clamp_min(1)


# --------------------------------------------------------------------------- Luong "location"
@register("location", family="location", paper=_LUONG)
class LuongLocationAttention(StepAttention):
    """a_t = softmax(W_a h_t) over source positions   (Luong 2015 "location").

    The weights come from the decoder state alone: row s of W_a scores source
    position s, so the source length is limited to ``max_length``. Stateless:
    T steps may run at once.
    """

    stateless = True

    @V.checked(normalize=V.one_of(NORMALIZERS))
    def __init__(self, query_dim: int, key_dim: int, value_dim: int | None = None,
                 hidden_dim: int | None = None, max_length: int = 256, normalize: str = "softmax"):
        super().__init__(query_dim, key_dim, value_dim)
        self.max_length, self.normalize = max_length, normalize
        self.position_scores = nn.Linear(query_dim, max_length)  # W_a: one output per source position

    def initial_state(self, keys, values=None, key_mask=None) -> AttentionState:
        self.check_memory(keys, values, key_mask)
        S = keys.shape[1]
        if S > self.max_length:
            raise ValueError(f"keys have source length S={S} but this 'location' attention scores at most "
                             f"max_length={self.max_length} positions; build it with max_length >= {S}")
        return AttentionState.of(self, projected_keys=keys)  # nothing to project: the keys are never scored

    def forward(self, query, keys, values, key_mask=None, state=None):
        if state is None:
            state = self.initial_state(keys, values, key_mask)
        self.check_query(query, state, key_mask, values)
        S = keys.shape[1]
        scores = self.position_scores(query)[..., :S]  # (B, [T,] S): W_a h_t, the first S positions
        mask = None if key_mask is None else (key_mask if query.dim() == 2 else key_mask[:, None, :])
        weights = NORMALIZERS[self.normalize](scores, mask)  # (B, [T,] S)
        return _mix(weights, values), weights, state.replace(weights=weights)

    def extra_repr(self):
        return super().extra_repr() + f", max_length={self.max_length}"


# --------------------------------------------------------------------------- Chorowski location-aware
@register("location_aware", family="location",
          paper="Chorowski, Bahdanau, Serdyuk, Cho & Bengio 2015, Attention-Based Models for Speech Recognition")
class LocationAwareAttention(StepAttention):
    """e_ts = w^T tanh(W h_t + V k_s + U f_ts + b), f_t = F * a_{t-1}   (Chorowski 2015, location-aware).

    The hybrid score: additive content term plus features f_t of a 1-D
    convolution (C filters of width ``kernel_size``) over the previous step's
    weights. With ``cumulative=True`` the convolution also sees the running
    sum of all previous weights (as ESPnet's and Tacotron 2's location
    layers do), which discourages attending the same place twice.
    a_0 is uniform over the real source positions; the running sum starts at
    zero and adds each step's weights a_1, a_2, ...
    """

    stateless = False

    @V.checked(normalize=V.one_of(NORMALIZERS))
    def __init__(self, query_dim: int, key_dim: int, value_dim: int | None = None,
                 hidden_dim: int | None = None, channels: int = 10, kernel_size: int = 31,
                 cumulative: bool = False, normalize: str = "softmax"):
        super().__init__(query_dim, key_dim, value_dim)
        if kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be a positive odd number (the filter is centred on "
                             f"each position), got {kernel_size}")
        self.cumulative, self.normalize = cumulative, normalize
        self.score = AdditiveScore(query_dim, key_dim, hidden_dim)  # W, V and b, w
        inputs = 2 if cumulative else 1
        self.location_conv = nn.Conv1d(inputs, channels, kernel_size, padding=kernel_size // 2, bias=False)  # F
        self.location_proj = nn.Linear(channels, self.score.hidden_dim, bias=False)  # U

    def initial_state(self, keys, values=None, key_mask=None) -> AttentionState:
        self.check_memory(keys, values, key_mask)
        a0 = _uniform(_valid(keys, key_mask), _stat_dtype(keys))
        return AttentionState.of(self, projected_keys=self.score.project_keys(keys),  # (B, S, A): V k_s + b
                              weights=a0, cumulative=torch.zeros_like(a0) if self.cumulative else None)

    def location_features(self, state: AttentionState) -> Tensor:
        """U (F * a_{t-1}): (B, S) previous weights -> (B, S, A)."""
        pk = state.projected_keys
        if pk.shape[1] == 0:  # no source positions (S = 0): no features (the convolution needs S >= 1)
            return pk.new_zeros(pk.shape[0], 0, self.score.hidden_dim)
        maps = [state.weights] + ([state.cumulative] if self.cumulative else [])
        f = self.location_conv(torch.stack(maps, 1).to(pk.dtype))  # (B, 1 or 2, S) -> (B, C, S)
        return self.location_proj(f.transpose(1, 2))  # (B, S, A)

    def forward(self, query, keys, values, key_mask=None, state=None):
        if state is None:
            state = self.initial_state(keys, values, key_mask)
        self.check_query(query, state, key_mask, values)
        q = query if query.dim() == 3 else query.unsqueeze(1)  # (B, 1, Dq)
        keys_t = state.projected_keys + self.location_features(state)  # (B, S, A): V k_s + b + U f_ts
        mask = None if key_mask is None else key_mask[:, None, :]  # (B, 1, S)
        context, weights = attend(q, keys_t, values, score=self.score, mask=mask, normalize=self.normalize,
                                  need_weights=True, backend="eager", keys_projected=True)  # (B,1,Dv), (B,1,S)
        flat = weights.squeeze(1)  # (B, S)
        cumulative = state.cumulative + flat if self.cumulative else None  # a_1 + ... + a_t
        context, weights = _like_query(query, context.squeeze(1), flat)  # (B, [1,] Dv), (B, [1,] S)
        return context, weights, state.replace(weights=flat, cumulative=cumulative)

    def extra_repr(self):
        return (super().extra_repr() + f", channels={self.location_conv.out_channels}, "
                f"kernel_size={self.location_conv.kernel_size[0]}, cumulative={self.cumulative}")


# --------------------------------------------------------------------------- Graves GMM
@register("gmm", family="location",
          paper="Graves 2013, Generating Sequences With Recurrent Neural Networks")
class GMMAttention(StepAttention):
    """a_tu = sum_k alpha_tk exp(-beta_tk (kappa_tk - u)^2), kappa_t = kappa_{t-1} + exp(k_hat_t)   (Graves 2013).

    (alpha_hat, beta_hat, k_hat) = W h_t + b, K components each; alpha = exp(alpha_hat)
    (importance), beta = exp(beta_hat) (sharpness), and the means kappa only move
    forward. u = 1..S counts source positions from one as in the paper, so the
    first step (kappa_1 = exp(k_hat_1), about 1 at initialisation) looks at the
    first position. The window weights are not normalised (the paper's
    soft window); padded positions get zero. Pre-activations are clamped to
    [-20, 20] so exp stays finite in float32.
    """

    stateless = False
    CLAMP = 20.0

    @V.checked()
    def __init__(self, query_dim: int, key_dim: int, value_dim: int | None = None,
                 hidden_dim: int | None = None, components: int = 5):
        super().__init__(query_dim, key_dim, value_dim)
        self.components = components
        self.mixture = nn.Linear(query_dim, 3 * components)  # W, b -> (alpha_hat, beta_hat, k_hat)

    def initial_state(self, keys, values=None, key_mask=None) -> AttentionState:
        self.check_memory(keys, values, key_mask)
        dtype = _stat_dtype(keys)
        kappa0 = torch.zeros(keys.shape[0], self.components, dtype=dtype, device=keys.device)  # (B, K)
        return AttentionState.of(self, projected_keys=keys, position=kappa0)

    def mixture_parameters(self, query: Tensor, kappa_prev: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """h_t (B, Dq), kappa_{t-1} (B, K) -> alpha, beta, kappa_t, each (B, K)."""
        hats = self.mixture(query).to(kappa_prev.dtype).clamp(-self.CLAMP, self.CLAMP)  # (B, 3K)
        alpha_hat, beta_hat, kappa_hat = hats.chunk(3, dim=-1)  # (B, K) each
        return alpha_hat.exp(), beta_hat.exp(), kappa_prev + kappa_hat.exp()

    def forward(self, query, keys, values, key_mask=None, state=None):
        if state is None:
            state = self.initial_state(keys, values, key_mask)
        self.check_query(query, state, key_mask, values)
        q = query.reshape(query.shape[0], -1)  # (B, Dq)
        alpha, beta, kappa = self.mixture_parameters(q, state.position)  # (B, K)
        u = _positions(keys.shape[1], kappa) + 1  # (S,) u = 1..S
        phi = alpha[:, :, None] * torch.exp(-beta[:, :, None] * (kappa[:, :, None] - u) ** 2)  # (B, K, S)
        weights = phi.sum(1)  # (B, S)
        if key_mask is not None:
            weights = weights * key_mask
        context, out_w = _like_query(query, _mix(weights, values), weights)  # (B, [1,] Dv), (B, [1,] S)
        return context, out_w, state.replace(weights=weights, position=kappa)

    def extra_repr(self):
        return super().extra_repr() + f", components={self.components}"


# --------------------------------------------------------------------------- Luong local windows
WINDOW_SCORES = ("dot", "general", "additive")  # how local-m and local-p score the keys inside the window


def _window_score(name: str, score: str, query_dim: int, key_dim: int, hidden_dim: int | None) -> Score:
    if score == "dot":
        if query_dim != key_dim:
            raise ValueError(f"{name} with score='dot' needs query_dim ({query_dim}) == key_dim ({key_dim}); "
                             "use score='general' (the default) or 'additive'")
        return DotScore()
    if score == "general":
        return GeneralScore(query_dim, key_dim)
    return AdditiveScore(query_dim, key_dim, hidden_dim)


class _LocalAttention(StepAttention):
    """Shared body of local-m and local-p: content scores inside a window of half-width D."""

    @V.checked(score=V.one_of(WINDOW_SCORES))
    def __init__(self, query_dim: int, key_dim: int, value_dim: int | None = None,
                 hidden_dim: int | None = None, window: int = 10, score: str = "general"):
        super().__init__(query_dim, key_dim, value_dim)
        self.window = window  # D
        self.score = _window_score(self.registry_name, score, query_dim, key_dim, hidden_dim)

    def initial_state(self, keys, values=None, key_mask=None) -> AttentionState:
        self.check_memory(keys, values, key_mask)
        dtype = _stat_dtype(keys)
        return AttentionState.of(self, projected_keys=self.score.project_keys(keys),
                              position=torch.zeros(keys.shape[0], dtype=dtype, device=keys.device),  # (B,)
                              extra={"lengths": _valid(keys, key_mask).sum(-1)})  # (B,) S per example, once

    def windowed(self, q: Tensor, state: AttentionState, values: Tensor, key_mask: Tensor | None,
                 centre: Tensor) -> tuple[Tensor, Tensor]:
        """Content weights inside |s - p_t| <= D: q (B, T, Dq), centre (B, T) -> weights (B, T, S)."""
        S = values.shape[1]
        s = _positions(S, centre)  # (S,)
        inside = (s - centre.unsqueeze(-1)).abs() <= self.window  # (B, T, S)
        if key_mask is not None:
            inside = inside & key_mask[:, None, :]
        _, weights = attend(q, state.projected_keys, values, score=self.score, mask=inside,
                            need_weights=True, backend="eager", keys_projected=True)  # (B, T, S)
        return weights, s

    def extra_repr(self):
        return super().extra_repr() + f", window={self.window}, score={self.score.name!r}"


@register("local_m", family="location", paper=_LUONG)
class LocalMonotonicAttention(_LocalAttention):
    """a_ts = softmax_{|s - t| <= D}(score(h_t, k_s)), window centre p_t = t   (Luong 2015 local-m).

    Assumes source and target are roughly monotonically aligned: step t looks
    at source positions t - D .. t + D (0-based), outside of which the weight is
    exactly zero. The step counter t travels in ``state.position``.
    """

    stateless = False

    def forward(self, query, keys, values, key_mask=None, state=None):
        if state is None:
            state = self.initial_state(keys, values, key_mask)
        self.check_query(query, state, key_mask, values)
        q = query.reshape(query.shape[0], 1, -1)  # (B, 1, Dq)
        centre = state.position.unsqueeze(1)  # (B, 1): p_t = t
        weights, _ = self.windowed(q, state, values, key_mask, centre)  # (B, 1, S)
        context = _mix(weights, values)  # (B, 1, Dv)
        if query.dim() == 2:
            context, weights = context.squeeze(1), weights.squeeze(1)
        return context, weights, state.replace(weights=weights.reshape(len(q), -1), position=state.position + 1)


@register("local_p", family="location", paper=_LUONG)
class LocalPredictiveAttention(_LocalAttention):
    """a_ts = softmax_{|s - p_t| <= D}(score(h_t, k_s)) exp(-(s - p_t)^2 / (2 sigma^2)), p_t = S sigmoid(v_p^T tanh(W_p h_t))   (Luong 2015 local-p).

    The centre p_t is predicted from the decoder state, S being each example's
    own source length; sigma = D / 2. The window's edges carry no gradient,
    the Gaussian does (so p_t is learned). Weights outside the window are
    exactly zero. Stateless: T steps may run at once; ``state.position`` holds
    the last p_t (for plots).
    """

    stateless = True

    @V.checked(score=V.one_of(WINDOW_SCORES))
    def __init__(self, query_dim: int, key_dim: int, value_dim: int | None = None,
                 hidden_dim: int | None = None, window: int = 10, score: str = "general"):
        super().__init__(query_dim, key_dim, value_dim, hidden_dim, window, score)
        hidden = query_dim if hidden_dim is None else hidden_dim
        self.position_hidden = nn.Linear(query_dim, hidden, bias=False)  # W_p
        self.position_out = nn.Linear(hidden, 1, bias=False)  # v_p

    def predicted_position(self, q: Tensor, lengths: Tensor) -> Tensor:
        """p_t = S sigmoid(v_p^T tanh(W_p h_t)): q (B, T, Dq), lengths (B,) -> (B, T)."""
        energy = self.position_out(torch.tanh(self.position_hidden(q))).squeeze(-1)  # (B, T)
        gate = torch.sigmoid(energy if energy.dtype == torch.float64 else energy.float())  # p_t in float32 at least
        return lengths[:, None].to(gate.dtype) * gate

    def forward(self, query, keys, values, key_mask=None, state=None):
        if state is None:
            state = self.initial_state(keys, values, key_mask)
        self.check_query(query, state, key_mask, values)
        one_step = query.dim() == 2
        q = query.unsqueeze(1) if one_step else query  # (B, T, Dq)
        centre = self.predicted_position(q, state.extra["lengths"]).to(state.position.dtype)  # (B, T)
        content, s = self.windowed(q, state, values, key_mask, centre.detach())  # (B, T, S)
        sigma = self.window / 2
        gauss = torch.exp(-((s - centre.unsqueeze(-1)) ** 2) / (2 * sigma ** 2))  # (B, T, S)
        weights = content * gauss.to(content.dtype)  # zero outside the window, as content is
        context = _mix(weights, values)  # (B, T, Dv)
        if one_step:
            context, weights = context.squeeze(1), weights.squeeze(1)
        return context, weights, state.replace(weights=weights if one_step else weights[:, -1],
                                               position=centre[:, -1])


# --------------------------------------------------------------------------- Raffel monotonic
@register("monotonic", family="location",
          paper="Raffel, Luong, Liu, Weiss & Eck 2017, Online and Linear-Time Attention by Enforcing "
                "Monotonic Alignments")
class MonotonicAttention(StepAttention):
    """p_ts = sigmoid(g v^T tanh(W h_t + V k_s + b) / |v| + r); a_ts = p_ts sum_{k<=s} a_{t-1,k} prod_{k<=l<s} (1 - p_tl)   (Raffel 2017).

    Training (``hard=False``, the default in ``train()`` mode) uses the
    expected alignment above, differentiable and computed exactly in log
    space (no division by a vanishing cumulative product); Gaussian noise of
    std ``noise_std`` is added to the energies before the sigmoid, which the
    paper uses to push p towards 0 or 1. Decoding (``hard=True``, the default
    in ``eval()`` mode) scans forward from the previous position and stops at
    the first s with p_ts > 0.5, attending to it alone; if it reaches the end
    without stopping the context is zero. The position never moves back.
    a_0 is all weight on the first position; r starts at ``initial_bias`` (-4,
    as in the paper), g at 1/sqrt(A).
    """

    stateless = False

    @V.checked(noise_std=V.NONNEGATIVE)
    def __init__(self, query_dim: int, key_dim: int, value_dim: int | None = None,
                 hidden_dim: int | None = None, initial_bias: float = -4.0, noise_std: float = 1.0,
                 hard: bool | None = None):
        super().__init__(query_dim, key_dim, value_dim)
        hidden = query_dim if hidden_dim is None else hidden_dim
        self.query_proj = nn.Linear(query_dim, hidden, bias=False)  # W
        self.key_proj = nn.Linear(key_dim, hidden, bias=True)  # V, b
        self.direction = nn.Parameter(torch.randn(hidden) / math.sqrt(hidden))  # v
        self.gain = nn.Parameter(torch.tensor(1 / math.sqrt(hidden)))  # g
        self.bias = nn.Parameter(torch.tensor(float(initial_bias)))  # r
        self.noise_std, self.hard = noise_std, hard

    def initial_state(self, keys, values=None, key_mask=None) -> AttentionState:
        self.check_memory(keys, values, key_mask)
        B, S = keys.shape[:2]
        dtype = _stat_dtype(keys)
        a0 = torch.zeros(B, S, dtype=dtype, device=keys.device)
        a0[:, :1] = 1.0  # delta at the first position (none when S = 0)
        return AttentionState.of(self, projected_keys=self.key_proj(keys), weights=a0,
                              position=torch.zeros(B, dtype=torch.long, device=keys.device))

    def energy(self, query: Tensor, state: AttentionState) -> Tensor:
        """h_t (B, Dq) -> e_t (B, S) = g v^T tanh(W h_t + V k_s + b) / |v| + r."""
        hidden = torch.tanh(self.query_proj(query)[:, None, :] + state.projected_keys)  # (B, S, A)
        v = self.gain * self.direction / self.direction.norm()  # (A,)
        return hidden @ v.to(hidden.dtype) + self.bias

    def stop_probabilities(self, query: Tensor, state: AttentionState, key_mask: Tensor | None,
                           noisy: bool) -> Tensor:
        e = self.energy(query, state).to(state.weights.dtype)  # (B, S)
        if noisy and self.noise_std > 0:
            e = e + self.noise_std * torch.randn_like(e)
        p = torch.sigmoid(e)
        return p if key_mask is None else p * key_mask  # padding never stops the scan

    @staticmethod
    def expected_alignment(p: Tensor, previous: Tensor) -> Tensor:
        """a_ts = p_ts sum_{k<=s} a_{t-1,k} prod_{l=k}^{s-1} (1 - p_tl); p, previous (B, S) -> (B, S).

        prod_{l=k}^{s-1}(1 - p_l) = exp(L_s - L_k) with L the exclusive cumulative
        sum of log(1 - p): an (S, S) lower-triangular matrix of terms <= 1, so
        nothing is divided by a vanishing product.
        """
        log_keep = torch.log1p(-p.clamp(max=1 - 1e-6))  # (B, S) log(1 - p_l)
        L = torch.cumsum(log_keep, -1) - log_keep  # (B, S) exclusive: sum_{l<s}
        S = p.shape[-1]
        lower = torch.ones(S, S, dtype=torch.bool, device=p.device).tril()  # k <= s
        diff = (L[:, :, None] - L[:, None, :]).masked_fill(~lower, float("-inf"))  # (B, S_s, S_k)
        carried = (torch.exp(diff) @ previous.unsqueeze(-1)).squeeze(-1)  # (B, S)
        return p * carried

    def forward(self, query, keys, values, key_mask=None, state=None):
        if state is None:
            state = self.initial_state(keys, values, key_mask)
        self.check_query(query, state, key_mask, values)
        q = query.reshape(query.shape[0], -1)  # (B, Dq)
        hard = (not self.training) if self.hard is None else self.hard
        p = self.stop_probabilities(q, state, key_mask, noisy=self.training and not hard)  # (B, S)
        if hard:
            S = p.shape[-1]
            s = torch.arange(S, device=p.device)
            stops = (p > 0.5) & (s >= state.position[:, None])  # (B, S) candidates at or after t_{i-1}
            first = (stops.cumsum(-1) == 0).sum(-1)  # (B,) index of the first stop; S if none (also for S = 0)
            weights = (s[None, :] == first[:, None]).to(p.dtype)  # (B, S) one-hot, or zero when no stop
            position = first
        else:
            weights = self.expected_alignment(p, state.weights)  # (B, S)
            position = state.position
        context, out_w = _like_query(query, _mix(weights, values), weights)  # (B, [1,] Dv), (B, [1,] S)
        return context, out_w, state.replace(weights=weights, position=position)

    def extra_repr(self):
        return super().extra_repr() + f", noise_std={self.noise_std}, hard={self.hard}"
