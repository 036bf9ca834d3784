"""Where the mechanisms register: ``@register(name, family=..., paper=...)`` on a class records it.

The lookups (``mechanisms()``, ``get()``, ``create()``) live in :mod:`attnzoo.registry`,
above this package, which imports every family module so that their decorators have run.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass

from .base import ImageAttention, StepAttention

FAMILIES = ("content", "location", "visual", "self-attention", "multi-head", "convolutional", "transformer", "linear",
            "sparse")


@dataclass(frozen=True)
class MechanismInfo:
    name: str
    family: str
    paper: str
    summary: str  # the first line of the class docstring: its equation
    cls: type

    @property
    def step_wise(self) -> bool:
        """True for decoder-side mechanisms with the (query, keys, values, key_mask, state) contract."""
        return issubclass(self.cls, StepAttention)

    @property
    def kind(self) -> str:
        """How it is called: "step" (a decoder's (query, keys, values, key_mask, state)), "image" (a block over a
        (B, C, H, W) feature map) or "sequence" (whole sequences, (B, L, dim))."""
        if self.step_wise:
            return "step"
        return "image" if issubclass(self.cls, ImageAttention) else "sequence"


_REGISTRY: dict[str, MechanismInfo] = {}


def register(name: str, *, family: str, paper: str) -> Callable[[type], type]:
    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}; expected one of {FAMILIES}")

    def deco(cls: type) -> type:
        if name in _REGISTRY and _REGISTRY[name].cls is not cls:
            raise ValueError(f"mechanism name {name!r} is already registered by {_REGISTRY[name].cls.__name__}")
        doc = inspect.getdoc(cls) or ""
        _REGISTRY[name] = MechanismInfo(name, family, paper, doc.splitlines()[0] if doc else "", cls)
        cls.registry_name = name
        return cls

    return deco
