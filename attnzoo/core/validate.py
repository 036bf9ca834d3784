"""Input checks shared by every public entry point.

Each check runs once per call (never inside a per-step loop) and raises a
``ValueError`` or ``TypeError`` that names the argument, the shape it got and
the shape it expected, and proposes the fix where one is obvious.
"""

from __future__ import annotations

import difflib
from typing import Iterable, Sequence

import torch
from torch import Tensor


def fmt_shape(shape: Sequence[int | str]) -> str:
    return "(" + ", ".join(str(s) for s in shape) + ")"


def check_tensor(name: str, x: object) -> Tensor:
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    return x


def check_rank(name: str, x: Tensor, ranks: Iterable[int], legend: str) -> None:
    """Raise unless ``x.dim()`` is one of ``ranks``; ``legend`` spells the expected shape."""
    ranks = tuple(ranks)
    if x.dim() not in ranks:
        raise ValueError(
            f"{name} must have shape {legend} ({' or '.join(map(str, ranks))}-D), "
            f"got {x.dim()}-D shape {fmt_shape(x.shape)}"
        )


def check_floating(name: str, x: Tensor) -> None:
    if not torch.is_floating_point(x):
        raise TypeError(
            f"{name} must be a floating-point tensor, got dtype {x.dtype}; "
            f"convert it with {name}.float()"
        )


def check_same_dtype(**tensors: Tensor) -> None:
    items = list(tensors.items())
    first_name, first = items[0]
    for name, t in items[1:]:
        if t.dtype != first.dtype:
            raise TypeError(
                f"{name} has dtype {t.dtype} but {first_name} has dtype {first.dtype}; "
                f"cast them to one dtype (e.g. {name}.to({first_name}.dtype))"
            )


def check_same_device(**tensors: Tensor) -> None:
    items = list(tensors.items())
    first_name, first = items[0]
    for name, t in items[1:]:
        if t.device != first.device:
            raise ValueError(
                f"{name} is on {t.device} but {first_name} is on {first.device}; "
                f"move them to one device (e.g. {name}.to({first_name}.device))"
            )


def broadcastable(shape: Sequence[int], target: Sequence[int]) -> bool:
    """True if ``shape`` broadcasts to ``target`` (right-aligned, no growth in rank)."""
    if len(shape) > len(target):
        return False
    for s, t in zip(reversed(shape), reversed(target)):
        if s != 1 and s != t:
            return False
    return True


def check_mask(name: str, mask: Tensor, target: Sequence[int], legend: str) -> None:
    """A boolean mask, True = may attend, that broadcasts to ``target``."""
    check_tensor(name, mask)
    if mask.dtype != torch.bool:
        hint = ""
        if torch.is_floating_point(mask):
            hint = (
                "; for an additive float mask pass it as bias=, "
                "for a 0/1 mask pass mask.bool() (True = may attend)"
            )
        else:
            hint = f"; pass {name}.bool() (True = may attend)"
        raise TypeError(f"{name} must be a boolean tensor, got dtype {mask.dtype}{hint}")
    if not broadcastable(mask.shape, target):
        raise ValueError(
            f"{name} of shape {fmt_shape(mask.shape)} does not broadcast to the scores' "
            f"shape {legend} = {fmt_shape(target)}; a key padding mask has shape (B, S) "
            f"and is passed as {name}[:, None, :] for 3-D or {name}[:, None, None, :] for 4-D inputs"
        )


def check_bias(name: str, bias: Tensor, target: Sequence[int], legend: str) -> None:
    check_tensor(name, bias)
    if bias.dtype == torch.bool:
        raise TypeError(
            f"{name} is an additive float tensor; got a boolean tensor. "
            "Pass boolean masks as mask= (True = may attend)"
        )
    if not broadcastable(bias.shape, target):
        raise ValueError(
            f"{name} of shape {fmt_shape(bias.shape)} does not broadcast to the scores' "
            f"shape {legend} = {fmt_shape(target)}"
        )


def check_choice(name: str, value: str, choices: Iterable[str]) -> None:
    choices = list(choices)
    if value not in choices:
        close = difflib.get_close_matches(str(value), [c for c in choices if isinstance(c, str)], n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"unknown {name} {value!r}; expected one of {', '.join(map(repr, choices))}{hint}")


def check_positive(name: str, value: float) -> None:
    if not value > 0:
        raise ValueError(f"{name} must be positive, got {value}")
