"""The registry: every mechanism by name, with its family and paper.

``@register(name, family=..., paper=...)`` on a class records it;
``mechanisms()`` lists them (what ``attnzoo list`` prints) and
``create(name, ...)`` builds one.
"""

from __future__ import annotations

import difflib
import inspect
from dataclasses import dataclass
from typing import Callable

FAMILIES = ("content", "location", "visual", "self-attention", "multi-head", "convolutional", "transformer")


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
        from .mechanisms.base import StepAttention

        return issubclass(self.cls, StepAttention)

    @property
    def kind(self) -> str:
        """How it is called: "step" (a decoder's (query, keys, values, key_mask, state)), "image" (a block over a
        (B, C, H, W) feature map) or "sequence" (whole sequences, (B, L, dim))."""
        from .mechanisms.base import ImageAttention

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


def _load_all() -> None:
    # importing the family modules runs their @register decorators
    from .mechanisms import content, convolutional, location, multihead, self_attention, visual  # noqa: F401


def mechanisms(family: str | None = None) -> list[MechanismInfo]:
    """Every registered mechanism (optionally of one family), in family then name order."""
    _load_all()
    infos = [i for i in _REGISTRY.values() if family is None or i.family == family]
    return sorted(infos, key=lambda i: (FAMILIES.index(i.family), i.name))


def get(name: str) -> MechanismInfo:
    _load_all()
    if name not in _REGISTRY:
        names = sorted(_REGISTRY)
        close = difflib.get_close_matches(name, names, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"unknown attention {name!r}{hint} (known: {', '.join(names)}; `attnzoo list` shows all)")
    return _REGISTRY[name]


def get_step_wise(name: str) -> MechanismInfo:
    """A mechanism for a step-wise decoder's attention slot, or an error listing the ones that fit."""
    info = get(name)
    if not info.step_wise:
        fits = ", ".join(i.name for i in mechanisms() if i.step_wise)
        raise ValueError(f"attention {name!r} ({info.family}) works on whole sequences and does not fit a "
                         f"step-wise decoder's slot; choose one of: {fits}")
    return info


def create(name: str, *args, **kwargs):
    """Build a registered mechanism: ``create("additive", query_dim=256, key_dim=512, hidden_dim=256)``."""
    return get(name).cls(*args, **kwargs)
