"""The contracts shared by the mechanisms: step-wise (decoder-side) and over feature maps.

RNN and captioning decoders call every content, location and visual mechanism
the same way, with the state passed explicitly (never hidden in the module):

    state = attn.initial_state(keys, values, key_mask)   # key-side work, once per sequence
    for t in range(T):
        context, weights, state = attn(query_t, keys, values, key_mask, state)

Shape legend: B batch, T decoder steps computed at once, S source length,
Dq query size, Dk key size, Dv value size.

* ``query``: (B, Dq) for one step, or (B, T, Dq) for T steps at once (only
  mechanisms with ``stateless = True``, whose weights do not depend on the
  previous step's).
* ``keys``: (B, S, Dk); ``values``: (B, S, Dv); ``key_mask``: (B, S) boolean,
  True = a real position that may be attended (the opposite of
  ``nn.MultiheadAttention``'s ``key_padding_mask``).
* returns ``context`` (B, Dv) or (B, T, Dv), ``weights`` (B, S) or (B, T, S),
  and the next :class:`AttentionState`.

Edge cases have a defined result: a row whose keys are all masked gets zero
weights and a zero context (never NaN), and so does an empty source (S = 0:
weights of shape (B, 0)). Weights are float32 (float64 for float64 inputs),
whatever the dtype of the keys.

Blocks that attend over a CNN's feature map (squeeze-excitation, CBAM,
non-local) share :class:`ImageAttention` instead: ``forward(x)`` maps
(B, C, H, W) to (B, C, H, W), so the block drops into ``nn.Sequential`` (a
layer class passed in, as timm's ``attn_layer``), and ``forward(x,
need_weights=True)`` returns a :class:`VisualOutput` with its maps.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from ..core import validate as V


@dataclass
class AttentionState:
    """Everything a step-wise mechanism carries from one decoder step to the next.

    All tensors are batch-first, so beam search can reorder them with
    :meth:`index_select`.
    """

    projected_keys: Tensor  # (B, S, *) the key-side projection, computed once per sequence
    weights: Tensor | None = None  # (B, S) the previous step's weights
    cumulative: Tensor | None = None  # (B, S) running sum of all previous weights
    position: Tensor | None = None  # (B, *) window position / mixture means, for location families
    extra: dict[str, Tensor] = field(default_factory=dict)
    made_by: str = ""  # the class of the mechanism whose initial_state made it: another's state is refused

    @classmethod
    def of(cls, mechanism: nn.Module, **fields) -> AttentionState:
        """A state made by ``mechanism``'s initial_state (its class name recorded)."""
        return cls(made_by=type(mechanism).__name__, **fields)

    def index_select(self, index: Tensor) -> AttentionState:
        """Rows ``index`` of every tensor (reorder or repeat batch entries, e.g. for beams)."""

        def pick(x):
            return None if x is None else x.index_select(0, index)

        return AttentionState(
            projected_keys=pick(self.projected_keys),
            weights=pick(self.weights),
            cumulative=pick(self.cumulative),
            position=pick(self.position),
            extra={k: pick(v) for k, v in self.extra.items()},
            made_by=self.made_by,
        )

    def replace(self, **changes) -> AttentionState:
        return dataclasses.replace(self, **changes)


def _resolve_head_dim(dim: int, num_heads: int, head_dim: int | None) -> int:
    """A whole-sequence layer's head size: ``head_dim`` as given, else ``dim / num_heads`` if it divides."""
    if head_dim is not None:
        return head_dim
    if dim % num_heads:
        raise ValueError(f"dim ({dim}) is not divisible by num_heads ({num_heads}); pass head_dim")
    return dim // num_heads


def _check_sequence_call(x: object, dim: int, key: object = None, value: object = None,
                        key_dim: int | None = None, value_dim: int | None = None) -> None:
    """A whole-sequence layer's call: x (B, L, dim) floating, and a cross-attention memory key/value
    (B, S, key_dim / value_dim) given as a pair (value alone is refused)."""
    V.check_tensor("x", x)
    V.check_floating("x", x)
    if x.dim() != 3 or x.shape[-1] != dim:
        raise ValueError(f"x must have shape (B, L, {dim}) (B, L, dim), got {V.fmt_shape(x.shape)}")
    if value is not None and key is None:
        raise ValueError("value= was given without key=; pass both for cross-attention")
    for name, t, features in (("key", key, key_dim), ("value", value, value_dim)):
        if t is None:
            continue
        V.check_tensor(name, t)
        if t.dim() != 3 or t.shape[0] != x.shape[0] or t.shape[-1] != features:
            raise ValueError(f"{name} must have shape (B, S, {name}_dim) = ({x.shape[0]}, S, {features}), "
                             f"got {V.fmt_shape(t.shape)}")


def _check_key_mask(key_mask: Tensor, B: int, S: int, expected: str) -> None:
    """A boolean (B, S) key_mask (True = may attend); ``expected`` says where (B, S) comes from."""
    V.check_tensor("key_mask", key_mask)
    if key_mask.dtype != torch.bool:
        raise TypeError(f"key_mask must be boolean (True = may attend), got dtype {key_mask.dtype}")
    if tuple(key_mask.shape) != (B, S):
        sep = "," if expected.startswith("as") else ""
        raise ValueError(f"key_mask must have shape (B, S) = ({B}, {S}){sep} {expected}, got "
                         f"{V.fmt_shape(key_mask.shape)}")


class StepAttention(nn.Module):
    """Base class of step-wise mechanisms: ``forward(query, keys, values, key_mask, state)``."""

    registry_name: str = "?"
    #: True when the weights do not depend on earlier steps, so T steps may run at once
    stateless: bool = True

    @V.checked()
    def __init__(self, query_dim: int, key_dim: int, value_dim: int | None = None):
        super().__init__()
        self.query_dim, self.key_dim = query_dim, key_dim
        self.value_dim = key_dim if value_dim is None else value_dim

    # ---------------------------------------------------------------- checks
    def check_memory(self, keys: Tensor, values: Tensor | None, key_mask: Tensor | None) -> None:
        """Once per sequence: keys (B, S, Dk), values (B, S, Dv), key_mask (B, S) bool."""
        V.check_tensor("keys", keys)
        V.check_floating("keys", keys)
        V.check_rank("keys", keys, (3,), "(B, S, Dk)")
        if keys.shape[-1] != self.key_dim:
            raise ValueError(f"keys must have shape (B, S, {self.key_dim}) (key_dim={self.key_dim}), "
                             f"got {V.fmt_shape(keys.shape)}")
        B, S = keys.shape[:2]
        if values is not None:
            V.check_tensor("values", values)
            V.check_floating("values", values)
            if values.dim() != 3 or values.shape[:2] != (B, S) or values.shape[-1] != self.value_dim:
                raise ValueError(f"values must have shape ({B}, {S}, {self.value_dim}) (B, S, value_dim) "
                                 f"to match keys {V.fmt_shape(keys.shape)}, got {V.fmt_shape(values.shape)}")
        if key_mask is not None:
            _check_key_mask(key_mask, B, S, f"to match keys {V.fmt_shape(keys.shape)}")
            V.warn_if_all_blocked("key_mask", key_mask)  # once per sequence, not per decoding step

    def check_query(self, query: Tensor, state: AttentionState, key_mask: Tensor | None = None,
                    values: Tensor | None = None) -> None:
        """Every step: the query's shape and dtype, the state's kind, the key_mask's shape and dtype and the
        values' shape against what initial_state saw (cheap: shapes and types, no reduction)."""
        V.check_tensor("query", query)
        V.check_floating("query", query)
        if not isinstance(state, AttentionState):
            raise TypeError(f"state must be the AttentionState that this {type(self).__name__}'s initial_state(keys, "
                            f"values, key_mask) (or its previous step) returned, got {type(state).__name__}")
        if state.made_by and state.made_by != type(self).__name__:
            raise TypeError(f"state was made by a {state.made_by}, not by this {type(self).__name__}; pass the "
                            f"state returned by this mechanism's initial_state(keys, values, key_mask) (or its "
                            "previous step): each mechanism keeps its own state")
        if state.projected_keys is None:
            raise ValueError(f"state has no projected keys: pass the state returned by this {type(self).__name__}'s "
                             "initial_state(keys, values, key_mask) (or by its previous step)")
        B, S = state.projected_keys.shape[:2]
        if key_mask is not None:
            _check_key_mask(key_mask, B, S, "as given to initial_state")
        if query.dtype != state.projected_keys.dtype and not torch.is_autocast_enabled(query.device.type):
            raise TypeError(f"query has dtype {query.dtype} but the state's keys have {state.projected_keys.dtype}; "
                            f"cast one of them (e.g. query.to({state.projected_keys.dtype}))")
        if query.dim() not in (2, 3) or query.shape[-1] != self.query_dim \
                or query.shape[0] != state.projected_keys.shape[0]:
            B = state.projected_keys.shape[0]
            raise ValueError(f"query must have shape (B, Dq) = ({B}, {self.query_dim}) or (B, T, Dq), "
                             f"got {V.fmt_shape(query.shape)}")
        if query.dim() == 3 and not self.stateless and query.shape[1] != 1:
            raise ValueError(f"{type(self).__name__} depends on the previous step's weights: "
                             f"pass one step at a time, query of shape (B, Dq), got {V.fmt_shape(query.shape)}")
        if values is not None:
            V.check_tensor("values", values)
            V.check_floating("values", values)
            if values.dim() != 3 or tuple(values.shape) != (B, S, self.value_dim):
                raise ValueError(f"values must have shape (B, S, value_dim) = ({B}, {S}, {self.value_dim}), as "
                                 f"given to initial_state, got {V.fmt_shape(values.shape)}")

    # ---------------------------------------------------------------- contract
    def initial_state(self, keys: Tensor, values: Tensor | None = None,
                      key_mask: Tensor | None = None) -> AttentionState:
        raise NotImplementedError

    def forward(self, query: Tensor, keys: Tensor, values: Tensor, key_mask: Tensor | None = None,
                state: AttentionState | None = None) -> tuple[Tensor, Tensor, AttentionState]:
        raise NotImplementedError

    def extra_repr(self) -> str:
        return f"query_dim={self.query_dim}, key_dim={self.key_dim}, value_dim={self.value_dim}"


@dataclass
class VisualOutput:
    """What an :class:`ImageAttention` block returns with ``need_weights=True``.

    ``output`` (B, C, H, W) has the input's dtype; the maps are float32 (float64 for float64 inputs), None
    where the block has no such map: ``channel`` (B, C) per-channel gates, ``spatial`` (B, H, W) per-position
    gates, ``positions`` (B, H*W, M) each position's attention over the M (possibly subsampled) positions.
    """

    output: Tensor
    channel: Tensor | None = None
    spatial: Tensor | None = None
    positions: Tensor | None = None


class ImageAttention(nn.Module):
    """Base class of blocks over a feature map: ``forward(x (B, C, H, W), need_weights=False)``."""

    registry_name: str = "?"

    @V.checked()
    def __init__(self, channels: int):  # C of the (B, C, H, W) feature map
        super().__init__()
        self.channels = channels

    def check_input(self, x: Tensor) -> None:
        """x: a floating (B, C, H, W) feature map with C = channels and at least one position."""
        V.check_tensor("x", x)
        V.check_floating("x", x)
        V.check_rank("x", x, (4,), f"(B, {self.channels}, H, W)")
        if x.shape[1] != self.channels:
            raise ValueError(f"x must have shape (B, {self.channels}, H, W) (channels={self.channels}), "
                             f"got {V.fmt_shape(x.shape)}")
        if x.shape[2] * x.shape[3] == 0:
            raise ValueError(f"x must have at least one position (H, W >= 1) for {type(self).__name__} to "
                             f"pool or attend over, got {V.fmt_shape(x.shape)}")

    def forward(self, x: Tensor, need_weights: bool = False) -> Tensor | VisualOutput:
        raise NotImplementedError

    def extra_repr(self) -> str:
        return f"channels={self.channels}"
