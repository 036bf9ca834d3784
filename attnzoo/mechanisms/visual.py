"""Visual attention: over the positions and channels of a CNN's feature map.

    soft_spatial  z_t = beta_t sum_i alpha_ti a_i,  alpha_t = softmax_i(w^T tanh(W_a a_i + W_h h_{t-1}))   Xu 2015
    se            y = s * x,  s = sigmoid(W_2 relu(W_1 GAP(x)))                                          Hu 2018
    cbam          x' = M_c(x) * x,  y = M_s(x') * x'                                                     Woo 2018
    nonlocal      y = x + gamma W_z(softmax(theta(x)^T phi(x)) g(x))                                     Wang 2018, Zhang 2019

``soft_spatial`` is a decoder-side mechanism (a captioner's attention over the
L = H*W annotation vectors of a CNN grid) and uses the step-wise contract of
:mod:`attnzoo.mechanisms.base`; :func:`flatten_grid` turns a (B, C, H, W)
feature map into its (B, H*W, C) annotation vectors and
:func:`doubly_stochastic_penalty` is the paper's regulariser on the stacked
weights of a whole caption.

``se``, ``cbam`` and ``nonlocal`` are blocks over a feature map
(:class:`~attnzoo.mechanisms.base.ImageAttention`): ``block(x)`` maps
(B, C, H, W) to (B, C, H, W) so they drop into any CNN (a layer class passed
in, as timm's ``attn_layer``), and ``block(x, need_weights=True)`` returns a
:class:`~attnzoo.mechanisms.base.VisualOutput` with the maps a report draws:
channel gates (B, C), a spatial gate (B, H, W), or each position's weights
over the positions (B, H*W, M).

Each block can start as the identity, so it can be added to a trained network
without changing what it computes: the non-local block's learned gamma starts
at 0 (SAGAN) or its output BatchNorm's scale does (Wang 2018). Squeeze-excitation
and CBAM gate x multiplicatively (s in (0, 1)), so the papers' blocks are never
the identity; ``residual_scale=True`` gives them the same learned gamma,
``y = x + gamma (block(x) - x)``: the paper's block at gamma = 1, the identity at
gamma = 0, where it starts.

Shape legend: B batch, C channels, H x W feature map, N = H*W positions,
M positions after phi/g subsampling, C_r = C / r squeeze size, C_k theta/phi
channels, C_i g channels; for soft_spatial: T decoder steps, L = H*W
annotation vectors (keys), D annotation size, Dq decoder-state size, A hidden size.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..core import validate as V
from ..core.attend import BACKENDS, attend
from ..core.scores import AdditiveScore
from .base import AttentionState, ImageAttention, VisualOutput
from .content import ContentAttention
from .registry import register

_XU = ("Xu, Ba, Kiros, Cho, Courville, Salakhutdinov, Zemel & Bengio 2015, Show, Attend and Tell: Neural Image "
       "Caption Generation with Visual Attention")
REDUCTIONS = ("mean", "sum", "none")


def _map_dtype(x: Tensor) -> torch.dtype:
    """Maps are returned in float32 (float64 for float64 inputs), as every mechanism's weights."""
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def _blend(x: Tensor, y: Tensor, gamma: Tensor | None) -> Tensor:
    """y (no gamma), or x + gamma (y - x): y at gamma = 1, exactly x at gamma = 0."""
    if gamma is None:
        return y
    return x + gamma.to(y.dtype) * (y - x)


# --------------------------------------------------------------------------- Show, Attend and Tell
def flatten_grid(features: Tensor) -> Tensor:
    """A CNN feature map (B, D, H, W) -> its L = H*W annotation vectors a_i, (B, L, D), row by row."""
    V.check_tensor("features", features)
    V.check_rank("features", features, (4,), "(B, D, H, W)")
    return features.flatten(2).transpose(1, 2)  # (B, D, H*W) -> (B, L, D)


@register("soft_spatial", family="visual", paper=_XU)
class SoftSpatialAttention(ContentAttention):
    """z_t = beta_t sum_i alpha_ti a_i, alpha_t = softmax_i(w^T tanh(W_a a_i + W_h h)), beta_t = sigmoid(f_beta(h))   (Xu 2015).

    Soft ("deterministic") attention of a captioning decoder with state h over
    the L annotation vectors a_i of a CNN grid (the keys, (B, L, D); pass them
    as values too for the paper's z_t, see :func:`flatten_grid`). The score is
    the paper's MLP f_att (W_a a_i + b is computed once per image, in
    ``initial_state``); the gating scalar beta_t in [0, 1] (section 4.2.1)
    scales the context so the decoder can turn the image down for words such
    as "a" and "of". The returned weights are alpha_t, which sum to 1 over the
    real positions (masked positions get 0); beta_t is in ``state.extra["gate"]``
    ((B, 1), or (B, T, 1) for T steps at once). ``gate=False`` drops beta
    (z_t = sum_i alpha_ti a_i). Stateless: T steps may run at once.
    Train with :func:`doubly_stochastic_penalty` on the stacked alpha.
    """

    @V.checked()
    def __init__(self, query_dim: int, key_dim: int, value_dim: int | None = None,
                 hidden_dim: int | None = None, gate: bool = True, **options):
        super().__init__(AdditiveScore(query_dim, key_dim, hidden_dim), query_dim, key_dim, value_dim, **options)
        self.gate = nn.Linear(query_dim, 1) if gate else None  # f_beta

    def forward(self, query: Tensor, keys: Tensor, values: Tensor, key_mask: Tensor | None = None,
                state: AttentionState | None = None) -> tuple[Tensor, Tensor, AttentionState]:
        context, weights, state = super().forward(query, keys, values, key_mask, state)
        if self.gate is None:
            return context, weights, state
        beta = torch.sigmoid(self.gate(query))  # (B, [T,] 1)
        return beta.to(context.dtype) * context, weights, state.replace(extra={**state.extra, "gate": beta})

    def extra_repr(self) -> str:
        return super().extra_repr() + f", gate={self.gate is not None}"


@V.checked(lam=V.NONNEGATIVE, reduction=V.one_of(REDUCTIONS))
def doubly_stochastic_penalty(weights: Tensor, key_mask: Tensor | None = None, step_mask: Tensor | None = None,
                              *, lam: float = 1.0, target: float | Tensor = 1.0, reduction: str = "mean") -> Tensor:
    """lambda sum_i (target - sum_t alpha_ti)^2: Xu 2015's doubly stochastic regularisation (eq. 14, target 1).

    Pushes the decoder to spread its attention over every part of the image
    over the course of a caption (sum over steps t of each position's weight
    near ``target``), instead of only softmax's sum over positions being 1.

    Args:
        weights: (B, T, L) the alpha_t of every step, stacked.
        key_mask: (B, L) bool, True = a real position; padded positions are left out of the sum over i.
        step_mask: (B, T) bool, True = a real step; padded steps (after a short caption's end) do not count.
        lam: lambda, the penalty's weight in the loss.
        target: what each position's total weight is pushed towards (the paper: 1), or a (B,) tensor, one
            per caption (e.g. T_b / L: an even spread of the caption's T_b steps, so the penalty is 0 there; for
            weights that sum to 1 at each step the gradient is the same as the paper's, only the value shifts).
        reduction: "mean" over the batch (default), "sum", or "none" for the (B,) penalties.
    """
    V.check_tensor("weights", weights)
    V.check_floating("weights", weights)
    V.check_rank("weights", weights, (3,), "(B, T, L)")
    B, T, L = weights.shape
    for name, mask, want in (("key_mask", key_mask, (B, L)), ("step_mask", step_mask, (B, T))):
        if mask is None:
            continue
        V.check_tensor(name, mask)
        if mask.dtype != torch.bool:
            raise TypeError(f"{name} must be boolean (True = real), got dtype {mask.dtype}")
        if tuple(mask.shape) != want:
            legend = "(B, L)" if name == "key_mask" else "(B, T)"
            raise ValueError(f"{name} must have shape {legend} = {V.fmt_shape(want)} to match weights "
                             f"{V.fmt_shape(weights.shape)} (B, T, L), got {V.fmt_shape(mask.shape)}")
    alpha = weights if weights.dtype == torch.float64 else weights.float()
    if isinstance(target, Tensor):
        V.check_floating("target", target)
        if tuple(target.shape) != (B,):
            raise ValueError(f"target must be a float or have shape (B,) = ({B},) (one per caption), "
                             f"got {V.fmt_shape(target.shape)}")
        target = target.to(alpha.dtype)[:, None]  # (B, 1)
    if step_mask is not None:
        alpha = alpha * step_mask[:, :, None]  # (B, T, L): padded steps give nothing
    per_position = (target - alpha.sum(1)) ** 2  # (B, L)
    if key_mask is not None:
        per_position = per_position * key_mask
    penalty = lam * per_position.sum(-1)  # (B,)
    if reduction == "none":
        return penalty
    return penalty.sum() if reduction == "sum" else penalty.mean()


# --------------------------------------------------------------------------- squeeze-and-excitation
@register("se", family="visual", paper="Hu, Shen & Sun 2018, Squeeze-and-Excitation Networks")
class SqueezeExcitationAttention(ImageAttention):
    """y = s * x, s = sigmoid(W_2 relu(W_1 GAP(x))), W_1: C -> C/r, W_2: C/r -> C   (Hu 2018, squeeze-and-excitation).

    Squeeze: global average pooling summarises each channel in one number;
    excitation: a bottleneck MLP (reduction r, the paper's 16) turns the
    summary into one gate per channel, which rescales that channel.
    ``residual_scale=True``: y = x + gamma (s * x - x), gamma learned from 0
    (not in the paper: the identity at start, the paper's block at gamma = 1).
    ``need_weights=True`` returns the channel gates s (B, C).
    """

    @V.checked()
    def __init__(self, channels: int, reduction: int = 16, residual_scale: bool = False):
        super().__init__(channels)
        self.reduction = reduction
        hidden = max(1, int(channels // reduction))  # C_r: at least one unit for narrow layers
        self.fc1 = nn.Linear(channels, hidden)  # W_1
        self.fc2 = nn.Linear(hidden, channels)  # W_2
        self.gamma = nn.Parameter(torch.zeros(())) if residual_scale else None

    def forward(self, x: Tensor, need_weights: bool = False) -> Tensor | VisualOutput:
        self.check_input(x)
        z = x.mean((2, 3))  # (B, C): squeeze
        s = torch.sigmoid(self.fc2(F.relu(self.fc1(z))))  # (B, C): excitation
        y = _blend(x, s[:, :, None, None] * x, self.gamma)  # (B, C, H, W)
        if not need_weights:
            return y
        return VisualOutput(y, channel=s.to(_map_dtype(x)))

    def extra_repr(self) -> str:
        return (super().extra_repr() + f", reduction={self.reduction}, hidden={self.fc1.out_features}, "
                f"residual_scale={self.gamma is not None}")


# --------------------------------------------------------------------------- CBAM
@register("cbam", family="visual", paper="Woo, Park, Lee & Kweon 2018, CBAM: Convolutional Block Attention Module")
class ConvBlockAttention(ImageAttention):
    """x' = M_c(x) * x, y = M_s(x') * x'; M_c = sigmoid(MLP(avg x) + MLP(max x)), M_s = sigmoid(f7x7([avg_c x'; max_c x']))   (Woo 2018, CBAM).

    Channel attention first: average- and max-pooled channel descriptors
    (B, C) go through one shared MLP (C -> C/r -> C, ReLU between), are summed
    and squashed. Then spatial attention: the mean and the max over channels
    of x' give a (B, 2, H, W) map, a ``kernel_size`` x ``kernel_size``
    convolution (the paper's 7) turns it into one gate per position.
    ``residual_scale=True``: y = x + gamma (CBAM(x) - x), gamma learned from 0
    (not in the paper: the identity at start, the paper's block at gamma = 1).
    ``need_weights=True`` returns the channel gates M_c (B, C) and the spatial
    gates M_s (B, H, W).
    """

    @V.checked()
    def __init__(self, channels: int, reduction: int = 16, kernel_size: int = 7, residual_scale: bool = False):
        super().__init__(channels)
        if kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be a positive odd int (the filter is centred on each position), "
                             f"got {kernel_size!r}")
        self.reduction = reduction
        hidden = max(1, int(channels // reduction))
        self.mlp = nn.Sequential(nn.Linear(channels, hidden), nn.ReLU(), nn.Linear(hidden, channels))  # W_0, W_1
        self.spatial = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2)  # f^{7x7}
        self.gamma = nn.Parameter(torch.zeros(())) if residual_scale else None

    def forward(self, x: Tensor, need_weights: bool = False) -> Tensor | VisualOutput:
        self.check_input(x)
        avg, peak = x.mean((2, 3)), x.amax((2, 3))  # (B, C) each
        m_c = torch.sigmoid(self.mlp(avg) + self.mlp(peak))  # (B, C)
        x1 = m_c[:, :, None, None].to(x.dtype) * x  # (B, C, H, W): x'
        pooled = torch.stack([x1.mean(1), x1.amax(1)], 1)  # (B, 2, H, W): [avg; max] over channels
        m_s = torch.sigmoid(self.spatial(pooled))  # (B, 1, H, W)
        y = _blend(x, m_s.to(x1.dtype) * x1, self.gamma)  # (B, C, H, W)
        if not need_weights:
            return y
        dtype = _map_dtype(x)
        return VisualOutput(y, channel=m_c.to(dtype), spatial=m_s[:, 0].to(dtype))

    def extra_repr(self) -> str:
        return (super().extra_repr() + f", reduction={self.reduction}, "
                f"kernel_size={self.spatial.kernel_size[0]}, residual_scale={self.gamma is not None}")


# --------------------------------------------------------------------------- non-local / SAGAN
@register("nonlocal", family="visual",
          paper="Wang, Girshick, Gupta & He 2018, Non-local Neural Networks; Zhang, Goodfellow, Metaxas & Odena "
                "2019, Self-Attention Generative Adversarial Networks")
class NonLocalAttention(ImageAttention):
    """y = x + gamma W_z(softmax(theta(x)^T phi(x)) g(x)), theta, phi, g, W_z 1x1 convs, gamma learned from 0   (Wang 2018; SAGAN, Zhang 2019).

    The embedded-Gaussian non-local operation: every position i attends over
    every position j with weights softmax_j(theta(x_i) . phi(x_j)) (no
    1/sqrt(d) scale, as in both papers) and mixes g(x_j); W_z maps the result
    back to C channels, added to x. The attention runs through
    :func:`attnzoo.attend` (``score="dot"``), so its fused and memory-saving
    backends apply. ``residual="gamma"`` (default, SAGAN) scales W_z's output
    by a learned scalar starting at 0; ``residual="batchnorm"`` (Wang) puts a
    BatchNorm after W_z whose scale starts at 0; either way the block starts
    as the identity. ``subsample=True`` max-pools phi(x) and g(x) by 2 (Wang's
    trick: 4x fewer keys, M = ceil(H/2) ceil(W/2)). ``inner_channels`` C_i
    (default C/2, the paper's bottleneck) sizes g; ``key_channels`` C_k
    (default C_i; SAGAN uses C/8) sizes theta and phi.
    ``need_weights=True`` returns the (B, N, M) position weights.
    """

    @V.checked(residual=V.one_of(("gamma", "batchnorm")), backend=V.one_of(BACKENDS))
    def __init__(self, channels: int, inner_channels: int | None = None, key_channels: int | None = None,
                 subsample: bool = False, residual: str = "gamma", backend: str = "auto"):
        super().__init__(channels)
        inner = max(1, channels // 2) if inner_channels is None else inner_channels
        key_channels = inner if key_channels is None else key_channels
        self.residual, self.backend = residual, backend
        self.theta = nn.Conv2d(channels, key_channels, 1)
        self.phi = nn.Conv2d(channels, key_channels, 1)
        self.g = nn.Conv2d(channels, inner, 1)
        self.w_z = nn.Conv2d(inner, channels, 1)
        self.pool = nn.MaxPool2d(2, ceil_mode=True) if subsample else None  # ceil: odd sizes keep every row
        if residual == "gamma":
            self.gamma = nn.Parameter(torch.zeros(()))
            self.norm = None
        else:
            self.gamma = None
            self.norm = nn.BatchNorm2d(channels)
            nn.init.zeros_(self.norm.weight)

    def forward(self, x: Tensor, need_weights: bool = False) -> Tensor | VisualOutput:
        self.check_input(x)
        B, _, H, W = x.shape
        keys, vals = self.phi(x), self.g(x)  # (B, C_k, H, W), (B, C_i, H, W)
        if self.pool is not None:
            keys, vals = self.pool(keys), self.pool(vals)  # (B, *, ceil(H/2), ceil(W/2))
        q = self.theta(x).flatten(2).transpose(1, 2)  # (B, N, C_k)
        k = keys.flatten(2).transpose(1, 2)  # (B, M, C_k)
        v = vals.flatten(2).transpose(1, 2)  # (B, M, C_i)
        out, weights = attend(q, k, v, score="dot", need_weights=need_weights, backend=self.backend)  # (B, N, C_i)
        z = self.w_z(out.transpose(1, 2).reshape(B, -1, H, W))  # (B, C_i, N) -> (B, C_i, H, W) -> (B, C, H, W)
        z = self.norm(z) if self.norm is not None else self.gamma.to(z.dtype) * z
        y = x + z.to(x.dtype)
        if not need_weights:
            return y
        return VisualOutput(y, positions=weights.to(_map_dtype(x)))

    def extra_repr(self) -> str:
        return (super().extra_repr() + f", inner_channels={self.g.out_channels}, "
                f"key_channels={self.theta.out_channels}, subsample={self.pool is not None}, "
                f"residual={self.residual!r}")
