"""``attnzoo.capture()``: record the attention weights of every attnzoo layer in any model.

    with attnzoo.capture(model) as maps:
        model(x)
    maps["encoder.layers.0.self_attn"]    # [(B, H, L, S) float32 weights, one per call]
    maps.last("encoder.layers.0.self_attn")
    list(maps)                            # layer names, in the order they first ran

Every call of :func:`attnzoo.attend` inside the ``with`` block is recorded,
whichever layer made it: attnzoo's own modules, a user's module that calls
``attend``; and every step of a step-wise decoder mechanism (its returned
(B, S) weights, one record per step, also for those that compute weights
without ``attend``, such as GMM). A record is named after
the innermost module running when ``attend`` was called, by its path in
``model`` if one was given (``model.named_modules()``), else
``ClassName.N`` (N counts instances in the order they first ran); a call from
outside any module is named ``"attend"``.

Capturing needs the weights, so calls that would have run the fused
``sdpa``/``chunked`` kernels run the ``tiled`` backend (or ``eager`` for
small calls) instead: outputs are equal within float tolerance, only slower.
The model's code is not changed; module hooks are installed for the ``with``
block only and removed after it. (The core holds only the context variable
that ``attend`` asks, :mod:`attnzoo.core.capture`; the naming by module and the
step-wise mechanisms' records live here, above the mechanisms.)
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from torch import Tensor, nn

from ..core.capture import recording
from .base import StepAttention


class Capture:
    """Weights recorded by name; ``maps[name]`` is the list of (B, [H], L, S) tensors of that layer."""

    def __init__(self, model: nn.Module | None = None, detach: bool = True):
        self.detach = detach
        self._names = {id(m): n or type(m).__name__ for n, m in model.named_modules()} if model is not None else {}
        self._auto: dict[int, str] = {}
        self._stack: list[nn.Module] = []
        self._maps: dict[str, list[Tensor]] = {}

    # ------------------------------------------------------------------ what users read
    def __getitem__(self, name: str) -> list[Tensor]:
        if name not in self._maps:
            raise KeyError(f"no attention was recorded under {name!r}; recorded: {', '.join(self._maps) or 'none'}")
        return self._maps[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._maps)

    def __len__(self) -> int:
        return len(self._maps)

    def __contains__(self, name: object) -> bool:
        return name in self._maps

    def items(self):
        return self._maps.items()

    def last(self, name: str) -> Tensor:
        """The weights of the most recent call of layer ``name``."""
        return self[name][-1]

    def __repr__(self) -> str:
        inner = ", ".join(f"{n!r}: {len(v)} x {tuple(v[-1].shape)}" for n, v in self._maps.items())
        return f"Capture({{{inner}}})"

    # ------------------------------------------------------------------ what attend() and the hooks call
    def record(self, weights: Tensor) -> None:
        """Called by ``attend``; inside a step-wise mechanism its returned weights are recorded instead."""
        if any(_is_step(m) for m in self._stack):
            return
        self._add(self._name_of(self._stack[-1]) if self._stack else "attend", weights)

    def _add(self, name: str, weights: Tensor) -> None:
        self._maps.setdefault(name, []).append(weights.detach() if self.detach else weights)

    def _name_of(self, module: nn.Module) -> str:
        key = id(module)
        if key in self._names:
            return self._names[key]
        if key not in self._auto:
            cls = type(module).__name__
            n = sum(1 for v in self._auto.values() if v.rsplit(".", 1)[0] == cls)
            self._auto[key] = f"{cls}.{n}"
        return self._auto[key]

    def _enter(self, module, args):
        self._stack.append(module)

    def _exit(self, module, args, output):
        if self._stack and self._stack[-1] is module:
            self._stack.pop()
        if _is_step(module) and not any(_is_step(m) for m in self._stack):
            self._add(self._name_of(module), output[1])  # (context, weights, state): every step's (B, S)


def _is_step(module: nn.Module) -> bool:
    """A step-wise (RNN-decoder) mechanism: some compute their weights without ``attend`` (GMM, location)."""
    return isinstance(module, StepAttention)


@contextmanager
def capture(model: nn.Module | None = None, *, detach: bool = True) -> Iterator[Capture]:
    """Record the attention weights of every ``attend`` call inside the block (see the module docstring).

    Args:
        model: names the records by module path (``model.named_modules()``); optional.
        detach: store detached weights (default); ``False`` keeps them in the autograd graph.
    """
    if model is not None and not isinstance(model, nn.Module):
        raise TypeError(f"capture(model) takes an nn.Module (to name the layers), got {type(model).__name__}")
    cap = Capture(model, detach)
    pre = nn.modules.module.register_module_forward_pre_hook(cap._enter)
    post = nn.modules.module.register_module_forward_hook(cap._exit)
    try:
        with recording(cap):
            yield cap
    finally:
        pre.remove()
        post.remove()
