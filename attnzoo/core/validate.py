"""Input checks shared by every public entry point.

Each check runs once per call (never inside a per-step loop) and raises a
``ValueError`` or ``TypeError`` that names the argument, the shape it got and
the shape it expected, and proposes the fix where one is obvious.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import numbers
import warnings
from collections.abc import Iterable, Sequence

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
    """A boolean mask, True = may attend, that broadcasts to ``target`` (shape and dtype only: no reduction,
    so it is cheap enough for every step; callers warn about an all-False mask once per sequence)."""
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


def _tracing() -> bool:
    compiler = getattr(torch, "compiler", None)
    compiling = getattr(compiler, "is_compiling", None)
    return bool(compiling is not None and compiling()) or torch.jit.is_tracing()


def warn_if_all_blocked(name: str, mask: Tensor) -> None:
    """Warn when a boolean mask blocks every key of every query of every batch item.

    A row whose keys are all masked is defined (zero weights, zero output) and
    never warned about; a mask with no True at all almost always is an inverted
    one (``nn.MultiheadAttention``'s convention, True = blocked, with no padding).
    One reduction per call; skipped while compiling or tracing.
    """
    if mask.numel() == 0 or _tracing() or bool(mask.any()):
        return
    warnings.warn(
        f"{name} of shape {fmt_shape(mask.shape)} is False everywhere: it blocks every key for every query, "
        f"so every output is zero. If it came from nn.MultiheadAttention's convention (True = blocked) it "
        f"looks inverted: True means may attend here; pass ~{name}",
        UserWarning, stacklevel=3,
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
    """A positive, finite number (bools and strings are refused with a TypeError)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a positive number, got {type(value).__name__} {value!r}")
    if not value > 0 or not math.isfinite(value):
        finite = " and finite" if isinstance(value, float) else ""
        raise ValueError(f"{name} must be positive{finite}, got {value}")


def check_token_ids(name: str, ids: object, vocab: int, legend: str = "(B, S)") -> None:
    """Integer token ids in [0, vocab): one reduction per call, never per decoding step."""
    check_tensor(name, ids)
    if torch.is_floating_point(ids) or torch.is_complex(ids) or ids.dtype == torch.bool:
        raise TypeError(f"{name} must hold integer token ids {legend}, got dtype {ids.dtype}; "
                        f"pass {name}.long()")
    if ids.numel() == 0:
        return
    lo, hi = (int(x) for x in torch.aminmax(ids))
    if lo < 0 or hi >= vocab:
        bad = lo if lo < 0 else hi
        raise ValueError(f"{name} holds token id {bad}, outside the model's vocabulary [0, {vocab}); "
                         f"encode the text with the vocabulary the model was built with")


_TYPES = {"int": (int,), "float": (int, float), "str": (str,), "bool": (bool,), "dict": (dict,),
          "list": (list,), "tuple": (list, tuple), "None": (type(None),)}
_EXAMPLES = {"int": "512", "float": "0.1", "str": "NAME", "bool": "true", "dict": '\'{"key": 1}\'',
             "list": "[1,2]", "tuple": "[1,2]"}


def check_option_types(what: str, options: dict | None, config_cls: type) -> None:
    """Each value of ``options`` (e.g. from --set KEY=VALUE) has the type its dataclass field declares.

    Fields whose annotation is not a plain union of int/float/str/bool/dict/list/None are not checked.
    Unknown keys are left to :func:`check_choice`.
    """
    annotations = {f.name: f.type if isinstance(f.type, str) else getattr(f.type, "__name__", "")
                   for f in dataclasses.fields(config_cls)}
    for key, value in (options or {}).items():
        names = [t.strip() for t in str(annotations.get(key, "")).split("|")]
        if not names or not all(t in _TYPES for t in names):
            continue
        ok = any(isinstance(value, _TYPES[t]) and not (isinstance(value, bool) and t in ("int", "float"))
                 for t in names)
        if not ok:
            wanted = " or ".join("null" if t == "None" else t for t in names)
            example = next((_EXAMPLES[t] for t in names if t in _EXAMPLES), "VALUE")
            raise TypeError(f"{what} {key} takes {wanted}, got {type(value).__name__} {value!r}; "
                            f"e.g. --set {key}={example}")
