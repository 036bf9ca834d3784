"""The registry: every mechanism by name, with its family and paper.

``@register(name, family=..., paper=...)`` (:mod:`attnzoo.mechanisms.registry`) on a
class records it; ``mechanisms()`` lists them (what ``attnzoo list`` prints) and
``create(name, ...)`` builds one.
"""

from __future__ import annotations

import difflib

# importing the family modules runs their @register decorators
from .mechanisms import (  # noqa: F401
                         content,
                         convolutional,
                         differential,
                         linear,
                         location,
                         multihead,
                         self_attention,
                         sparse,
                         visual,
)
from .mechanisms.registry import _REGISTRY, FAMILIES, MechanismInfo, register

__all__ = ["FAMILIES", "MechanismInfo", "register", "mechanisms", "get", "get_step_wise", "create"]


def mechanisms(family: str | None = None) -> list[MechanismInfo]:
    """Every registered mechanism (optionally of one family), in family then name order."""
    infos = [i for i in _REGISTRY.values() if family is None or i.family == family]
    return sorted(infos, key=lambda i: (FAMILIES.index(i.family), i.name))


def get(name: str) -> MechanismInfo:
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
