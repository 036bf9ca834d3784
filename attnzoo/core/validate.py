"""Input checks shared by every public entry point.

Each check runs once per call (never inside a per-step loop) and raises a
``ValueError`` or ``TypeError`` that names the argument, the shape it got and
the shape it expected, and proposes the fix where one is obvious.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import inspect
import math
import numbers
import types
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

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


def check_choice(name: str, value: str, choices: Iterable[str], owner: str = "") -> None:
    """``value`` among ``choices``; else a ValueError with the closest choice (``owner``: who was called)."""
    choices = list(choices)
    if value not in choices:
        close = difflib.get_close_matches(str(value), [c for c in choices if isinstance(c, str)], n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        where = f"{owner}: " if owner else ""
        raise ValueError(f"{where}unknown {name} {value!r}; expected one of {', '.join(map(repr, choices))}{hint}")


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


# --------------------------------------------------------------------------- constructor and call arguments
def in_range(value: float, low: float | None = None, low_inclusive: bool = True, high: float | None = None,
             high_inclusive: bool = True) -> bool:
    """A finite number within the bounds (None: unbounded on that side)."""
    ok = math.isfinite(value)
    if low is not None:
        ok = ok and (value >= low if low_inclusive else value > low)
    if high is not None:
        ok = ok and (value <= high if high_inclusive else value < high)
    return ok


@dataclass(frozen=True)
class Kind:
    """What one scalar argument may hold: its Python types and, for numbers, its range; for names, its choices.

    ``checked`` reads a parameter's kind from its annotation (``int`` a :data:`SIZE`, ``float`` a finite
    :data:`REAL` or, named like a dropout rate, a :data:`PROBABILITY`, ``bool`` a :data:`FLAG`) unless the
    decorator names another; a ``str`` is checked only when given its choices with :func:`one_of`.
    """

    what: str  # how the error message says what was expected: "a positive int"
    types: tuple[type, ...]
    low: float | None = None
    low_inclusive: bool = True
    high: float | None = None
    high_inclusive: bool = True
    choices: Callable[[], Iterable[str]] | None = None  # names: called when checked (registries fill late)

    def check(self, name: str, value: object, owner: str = "") -> None:
        where = f"{owner}: " if owner else ""
        if not isinstance(value, self.types) or (isinstance(value, bool) and bool not in self.types):
            raise TypeError(f"{where}{name} must be {self.what}, got {type(value).__name__} {value!r}"
                            f"{_type_hint(name, value, self)}")
        if self.choices is not None:
            check_choice(name, value, self.choices(), owner)
            return
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            return
        if not in_range(value, self.low, self.low_inclusive, self.high, self.high_inclusive):
            raise ValueError(f"{where}{name} must be {self.what}, got {value!r}")


def _type_hint(name: str, value: object, kind: Kind) -> str:
    """The fix for a value of the wrong type: a number written as a string, a bool or float given as a size."""
    if isinstance(value, str) and kind.choices is None:
        try:
            number = int(value)
        except ValueError:
            try:
                number = float(value)
            except ValueError:
                return ""
        if not isinstance(number, kind.types):
            return ""
        return f"; pass the number {number!r}, not the string {value!r}"
    if isinstance(value, bool) and kind.types == _INT:
        return "; True and False are not sizes"
    if isinstance(value, float) and kind.types == _INT and value.is_integer():
        return f"; pass int({value!r}) = {int(value)}"
    return ""


_INT, _REAL = (numbers.Integral,), (numbers.Real,)  # numpy's ints and floats are numbers too
SIZE = Kind("a positive int", _INT, low=1)
COUNT = Kind("an int >= 0", _INT, low=0)
INT = Kind("an int", _INT)
REAL = Kind("a finite real number", _REAL)
POSITIVE = Kind("a positive finite number", _REAL, low=0, low_inclusive=False)
NONNEGATIVE = Kind("a finite number >= 0", _REAL, low=0)
PROBABILITY = Kind("a probability in [0, 1)", _REAL, low=0, high=1, high_inclusive=False)
#: a nucleus (top-p) mass: in (0, 1]
MASS = Kind("a probability mass in (0, 1]", _REAL, low=0, low_inclusive=False, high=1)
FLAG = Kind("True or False", (bool,))
#: float parameters with these names are probabilities unless the decorator says otherwise
PROBABILITY_NAMES = ("p", "dropout", "dropout_p", "attn_dropout", "weight_dropout", "label_smoothing")


def one_of(choices: Iterable[str] | Callable[[], Iterable[str]]) -> Kind:
    """A name among ``choices`` (or among what ``choices()`` returns when checked: a registry's names)."""
    get = choices if callable(choices) else (lambda c=tuple(choices): c)
    return Kind("a name", (str,), choices=get)


def kind_of(name: str, annotation: object) -> Kind | None:
    """The kind an annotation implies: ``int`` a size, ``float`` a real (a probability by its name), ``bool`` a
    flag; ``None`` allowed where the annotation says ``| None``. Anything else is left to the callee."""
    parts = _annotation_names(annotation) - {"None"}
    if parts == {"int"}:
        return SIZE
    if parts == {"float"}:
        return PROBABILITY if name in PROBABILITY_NAMES else REAL
    if parts == {"bool"}:
        return FLAG
    return None


def _optional(annotation: object, default: object) -> bool:
    """None is allowed where the annotation says ``| None`` or the default is None."""
    return "None" in _annotation_names(annotation) or default is None


def _annotation_names(annotation: object) -> set[str]:
    """{"int", "None"} for ``int | None`` written as a string (``from __future__ import annotations``) or not."""
    text = annotation.__name__ if isinstance(annotation, type) else str(annotation)
    return {p.strip().replace("NoneType", "None") for p in text.split("|")}


def checked(**kinds: Kind) -> Callable:
    """Check a function's (or a dataclass's) scalar arguments against their kinds before it runs.

    ``@checked()`` on a function or ``__init__`` checks every parameter whose annotation implies a kind
    (:func:`kind_of`) and those named in ``kinds``; on a dataclass, its fields, after its ``__post_init__``
    would see them. The kinds are kept as ``fn.__checked__`` (name -> (Kind, None allowed)) for the generated
    bad-input tests. Meant for constructors and per-call entry points, never per-step code: a check is a few
    ``isinstance`` calls per argument.
    """

    def decorate(target):
        if isinstance(target, type) and dataclasses.is_dataclass(target):
            return _checked_dataclass(target, kinds)
        params = inspect.signature(target).parameters.values()
        specs = _specs(((p.name, p.annotation, p.default) for p in params if p.name != "self"), kinds,
                       target.__qualname__)
        positional = [p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        owner = target.__qualname__.removesuffix(".__init__")

        def check(name, value):
            spec = specs.get(name)
            if spec is not None and not (value is None and spec[1]):
                spec[0].check(name, value, owner)

        @functools.wraps(target)
        def wrapper(*args, **kwargs):  # no Signature.bind: a zip and a dict walk, about a microsecond
            for name, value in zip(positional, args):
                check(name, value)
            for name, value in kwargs.items():
                check(name, value)
            return target(*args, **kwargs)

        wrapper.__checked__ = specs
        return wrapper

    return decorate


def _specs(params: Iterable[tuple[str, object, object]], kinds: dict[str, Kind], where: str) -> dict:
    specs = {}
    for name, annotation, default in params:
        kind = kinds.get(name) or kind_of(name, annotation)
        if kind is not None:
            specs[name] = (kind, _optional(annotation, default))
    unknown = set(kinds) - set(specs)
    if unknown:
        raise TypeError(f"@checked on {where} names no such parameter: {sorted(unknown)}")
    return specs


def _checked_dataclass(cls: type, kinds: dict[str, Kind]) -> type:
    specs = _specs(((f.name, f.type, f.default) for f in dataclasses.fields(cls)), kinds, cls.__qualname__)
    after = getattr(cls, "__post_init__", None)

    def __post_init__(self):
        for name, (kind, optional) in specs.items():
            value = getattr(self, name)
            if not (value is None and optional):
                kind.check(name, value, type(self).__name__)
        if after is not None:
            after(self)

    cls.__post_init__ = __post_init__
    if after is None:  # the generated __init__ was made without a call to __post_init__: add one
        init = cls.__init__

        @functools.wraps(init)
        def __init__(self, *args, **kwargs):
            init(self, *args, **kwargs)
            self.__post_init__()

        cls.__init__ = __init__
    cls.__checked__ = specs
    return cls


# --------------------------------------------------------------------------- score_mod / mask_mod
#: FlexAttention's signatures
MOD_SIGNATURES = {"score_mod": "score_mod(score, b, h, q_idx, kv_idx) -> score",
                  "mask_mod": "mask_mod(b, h, q_idx, kv_idx) -> bool tensor (True = may attend)"}
_GOOD_MODS: set = set()  # code objects and classes whose signature was checked once


def _mod_key(fn: object) -> object | None:
    """What a checked signature can be remembered by: a plain function's code (without defaults, which could
    change its arity), a bound method's function's code, a callable class; None: check every time."""
    if isinstance(fn, types.FunctionType):
        return None if fn.__defaults__ or fn.__kwdefaults__ else fn.__code__
    if isinstance(fn, types.MethodType):
        return _mod_key(fn.__func__)
    if type(fn).__module__ not in ("functools", "builtins") and "__call__" in vars(type(fn)):
        return type(fn)
    return None


def check_mod(name: str, fn: object) -> None:
    """A ``score_mod`` or ``mask_mod`` (``name``) is callable with FlexAttention's positional arguments; checked
    once per function (by its code) or callable class, not once per call."""
    key = _mod_key(fn)
    if key is not None and key in _GOOD_MODS:
        return
    if not callable(fn):
        raise TypeError(f"{name} must be a function {MOD_SIGNATURES[name]}, got {type(fn).__name__} {fn!r}")
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):  # a builtin without a signature: it will tell for itself
        return
    arity = 5 if name == "score_mod" else 4
    try:
        sig.bind(*range(arity))
    except TypeError:
        label = getattr(fn, "__qualname__", type(fn).__name__)
        raise TypeError(f"{name} must take {arity} positional arguments, {MOD_SIGNATURES[name]}, as "
                        f"FlexAttention's do; {label}{sig} cannot be called that way") from None
    if key is not None:
        _GOOD_MODS.add(key)
