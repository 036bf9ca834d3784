"""The generated bad-input suite: every public constructor and callable, every scalar argument, every wrong value.

The public surface is discovered, not listed (as tests/numerics/test_no_inplace.py does): ``__all__`` of
the packages, every public name defined in a module of ``attnzoo.models``, every registered mechanism, and
the public methods of every class found. A callable whose signature has a size, count, number, probability,
flag or name argument must go through :func:`attnzoo.core.validate.checked` (or say here why not); its
kinds, kept as ``__checked__``, give the bad values:

- a size (positive int): 0, -1, 2.5, True and "3"; a count (int >= 0): -1, 2.5, True, "3"; any int: 2.5, True, "3";
- a probability: -0.1, 1.5 and "0.1"; a positive or non-negative number: 0 or -1, nan and "0.1"; any real: nan, "0.1";
- a flag: "yes"; a name: a misspelling of one of its choices (the message must propose the right one).

Each call passes valid values for the other checked arguments and a placeholder for the rest (the checks run
before the body), and must raise ``ValueError`` or ``TypeError`` from attnzoo's own code (never from inside
torch) whose message names the argument. Registered step-wise mechanisms then take a second step with a
wrong-width query, wrong-width values, a float key mask and another mechanism's state.
"""

from __future__ import annotations

import importlib
import inspect
import math
import sys
import traceback
from pathlib import Path

import pytest
import torch

import attnzoo
import attnzoo.models
from attnzoo.core import dropout
from attnzoo.core import validate as V
from attnzoo.core.attend import BACKENDS

sys.path.insert(0, str(Path(__file__).parent / "numerics"))
from numerics_cases import B, build, step_memory, variants  # noqa: E402
from public_surface import SKIP_METHODS, public_objects  # noqa: E402

#: public callables with scalar arguments that do not go through @checked, and why
UNCHECKED = {
    "attnzoo.mechanisms.linear.LinearAttention.features": "called by forward with a bool it passes itself",
    "attnzoo.mechanisms.linear.Performer.features": "called by forward with a bool it passes itself",
    "attnzoo.mechanisms.linear.LinearState": "a decoding state made by the layer (new_cache), not by hand",
    "attnzoo.mechanisms.multihead.MultiHeadAttention.mask_mod": "an internal hook: forward passes a bool it made",
    "attnzoo.mechanisms.sparse.SlidingWindowAttention.mask_mod": "an internal hook: forward passes a bool it made",
    "attnzoo.core.attend.attend": "the hot path: its own isinstance checks (_check_options), cases below",
    "attnzoo.core.attend.choose_backend": "called by attend with checked values; backend checked by check_choice",
    "attnzoo.core.dropout.dropout": "per forward call: the same RATE kind, checked by hand (case below)",
    "attnzoo.core.dropout.keep_mask": "the same RATE check as dropout",
    "attnzoo.lab.train": "the lab's door: lab.plan checks every option against the task's config (test_lab)",
    "attnzoo.lab.load": "takes a path", "attnzoo.lab.Run": "made by lab.load and lab.train",
    "attnzoo.lab.Run.evaluate": "split checked by check_choice (tests/test_load.py)",
    "attnzoo.compare.compare": "the lab's door: checked like lab.train (tests/test_compare.py)",
    "attnzoo.compare.Comparison": "made by compare()",
    "attnzoo.mechanisms.registry.MechanismInfo": "registry metadata, made by @register",
    "attnzoo.models.decoding.Hypotheses": "a result container", "attnzoo.models.captioner.CaptionerOutput":
        "a result container", "attnzoo.core.attend.AttentionOutput": "a result container",
    "attnzoo.mechanisms.base.VisualOutput": "a result container",
    "attnzoo.mechanisms.base.AttentionState": "made by initial_state; checked by each step (cases below)",
    "attnzoo.models.convs2s.ConvS2SState": "made by encode; step counter only", "attnzoo.models.transformer_seq2seq."
    "TransformerState": "made by encode; step counter only",
    "attnzoo.models.options.check_options": "a checker itself (names of options)",
    "attnzoo.mechanisms.capture.Capture.last": "a recorded name, looked up with a KeyError-free message",
    "attnzoo.mechanisms.capture.capture": "detach: a flag read once",
    "attnzoo.mechanisms.capture.Capture": "made by capture()",
    "attnzoo.registry.create": "name checked by registry.get with the closest suggestion",
    "attnzoo.registry.mechanisms": "family checked by check_choice",
    "attnzoo.models.factory.check_model": "a checker itself",
    "attnzoo.models.cnn.check_stages": "a checker itself (lists of ints)",
    "attnzoo.models.cnn.resolve_block": "checks its name as the CLI's 'attention (the cnn's block)' (test_cnn)",
}
#: forward/step methods whose only scalar arguments are flags read per call (is_causal, need_weights, ...):
#: checking them would cost every forward an isinstance per flag for a mistake Python's truth test forgives
PER_CALL_FLAGS = ("forward", "__call__", "stop_probabilities", "decode_teacher_forced", "relative_logits")
#: str parameters that are free text, not names among choices
FREE_TEXT = {"paper", "summary", "title", "family", "kind", "task"}


# --------------------------------------------------------------------------- discovery
def resolve(qualified: str):
    parts = qualified.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
            break
        except ImportError:
            continue
    for p in parts[i:]:
        obj = getattr(obj, p)
    return obj


def discover() -> dict[str, object]:
    """qualified name -> the callable: functions, classes (their constructors) and their public methods."""
    found = {}
    for obj in public_objects():
        found[f"{obj.__module__}.{obj.__qualname__}"] = obj
        if not inspect.isclass(obj):
            continue
        for klass in obj.__mro__:
            if not klass.__module__.startswith("attnzoo"):
                continue
            for n, v in vars(klass).items():
                if (n.startswith("_") and n != "__call__") or n in SKIP_METHODS or not inspect.isfunction(v):
                    continue
                found[f"{klass.__module__}.{klass.__qualname__}.{n}"] = v
    return found


def target_of(obj):
    """What carries the checks: a function, a class's __init__, or a dataclass itself."""
    if inspect.isclass(obj):
        return obj if hasattr(obj, "__dataclass_fields__") else obj.__init__
    return obj


def scalar_params(obj) -> list[str]:
    """Parameters a check is owed: annotated int, float, bool, or str (unless free text)."""
    try:
        params = inspect.signature(obj).parameters.values()
    except (TypeError, ValueError):
        return []
    out = []
    for p in params:
        names = {t.strip() for t in str(p.annotation).split("|")} - {"None"}
        if V.kind_of(p.name, p.annotation) is not None or (names == {"str"} and p.name not in FREE_TEXT):
            out.append(p.name)
    return out


def specs_of(obj) -> dict:
    """The checked kinds of a callable; for a class whose __init__ takes **options, its bases' too (they are
    reachable through the options)."""
    target = target_of(obj)
    specs = dict(getattr(target, "__checked__", {}))
    if inspect.isclass(obj) and not hasattr(obj, "__dataclass_fields__"):
        params = inspect.signature(obj.__init__).parameters.values()
        if any(p.kind is p.VAR_KEYWORD for p in params):
            for base in obj.__mro__[1:]:
                for name, spec in getattr(vars(base).get("__init__"), "__checked__", {}).items():
                    specs.setdefault(name, spec)
    return specs


def is_per_call_flag_method(qualified: str, obj) -> bool:
    kinds = {V.kind_of(n, inspect.signature(obj).parameters[n].annotation) for n in scalar_params(obj)}
    return qualified.rsplit(".", 1)[-1] in PER_CALL_FLAGS and kinds <= {V.FLAG, V.SIZE, V.INT}


def owed() -> dict[str, object]:
    return {q: o for q, o in sorted(discover().items())
            if scalar_params(target_of(o) if not inspect.isclass(o) or not hasattr(o, "__dataclass_fields__")
                             else o) and q not in UNCHECKED and not is_per_call_flag_method(q, o)}


def test_every_public_callable_with_scalar_arguments_is_checked():
    found = owed()
    assert len(found) > 60, f"discovery found too little: {sorted(found)}"
    missing = []
    for q, obj in found.items():
        specs = specs_of(obj)
        target = obj if inspect.isclass(obj) and hasattr(obj, "__dataclass_fields__") else target_of(obj)
        unchecked = [n for n in scalar_params(target) if n not in specs]
        if not hasattr(target_of(obj), "__checked__") or unchecked:
            missing.append(f"{q} {unchecked}")
    assert not missing, f"put these through @V.checked (or give a reason in UNCHECKED): {missing}"
    stale = [q for q in UNCHECKED if q not in discover()]
    assert not stale, f"UNCHECKED names that are no longer public: {stale}"


# --------------------------------------------------------------------------- the generated cases
def bad_values(kind: V.Kind) -> list:
    if kind.choices is not None:
        return [misspelling(list(kind.choices()))]
    if kind is V.FLAG:
        return ["yes"]
    if kind.types == (V.numbers.Integral,):
        values = [2.5, True, "3"]
        if kind.low is not None:
            values = ([0] if kind.low > 0 else []) + [-1] + values
        return values
    if kind.high is not None:  # probabilities, rates, masses
        return [-0.1, 1.5, "0.1"] + ([0] if not kind.low_inclusive else [])
    if kind.low is not None:
        return [0 if not kind.low_inclusive else -1, -1, float("nan"), "0.1"]
    return [float("nan"), "0.1"]


def misspelling(choices: list) -> str:
    """A choice with two neighbouring letters swapped (or one doubled) that is not itself a choice."""
    for c in (c for c in choices if isinstance(c, str) and len(c) > 2):
        for i in range(1, len(c) - 1):
            swapped = c[:i] + c[i + 1] + c[i] + c[i + 2:]
            if swapped != c and swapped not in choices:
                return swapped
    c = next(c for c in choices if isinstance(c, str))
    return c + c[-1]


def valid_value(kind: V.Kind):
    if kind.choices is not None:
        return next(c for c in kind.choices() if c is not None)
    for candidate in (True, 2, 0.5, 3.0, 0):
        try:
            kind.check("x", candidate)
            return candidate
        except (TypeError, ValueError):
            continue
    raise AssertionError(f"no valid sample for {kind}")


PLACEHOLDER = object()  # for arguments without a kind: the checks run before anything reads them


def call_with(obj, name: str, bad):
    """obj(...) with ``name`` = ``bad``, valid checked arguments and placeholders for the rest."""
    specs = specs_of(obj)
    if inspect.isclass(obj) and hasattr(obj, "__dataclass_fields__"):
        params = [f for f in obj.__dataclass_fields__.values() if f.init]
        required = [f.name for f in params if f.default is V.dataclasses.MISSING
                    and f.default_factory is V.dataclasses.MISSING]
        args = {}
    else:
        sig = inspect.signature(target_of(obj))
        ps = [p for p in sig.parameters.values() if p.name != "self"]
        required = [p.name for p in ps if p.default is p.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
        args = {}
    for r in required:
        args[r] = valid_value(specs[r][0]) if r in specs else PLACEHOLDER
    args[name] = bad
    if not inspect.isclass(obj) and "self" in inspect.signature(obj).parameters:
        return obj(PLACEHOLDER, **args)
    return obj(**args)


def generated_cases() -> list:
    cases = []
    for q, obj in owed().items():
        for name, (kind, _) in specs_of(obj).items():
            for bad in bad_values(kind):
                cases.append(pytest.param(q, obj, name, bad, id=f"{q.removeprefix('attnzoo.')}({name}={bad!r})"))
    return cases


CASES = generated_cases()


def assert_clear(info: pytest.ExceptionInfo, name: str) -> None:
    """A ValueError/TypeError raised by attnzoo's code (not torch's, not Python's call machinery), naming ``name``."""
    assert info.type in (ValueError, TypeError), info.value
    where = traceback.extract_tb(info.tb)[-1].filename
    assert "attnzoo" in Path(where).parts and "torch" not in Path(where).parts, f"raised in {where}: {info.value}"
    assert name in str(info.value), f"the message does not name {name}: {info.value}"


@pytest.mark.parametrize("qualified,obj,name,bad", CASES)
def test_a_bad_argument_is_refused_by_name(qualified, obj, name, bad):
    with pytest.raises((ValueError, TypeError)) as info:
        call_with(obj, name, bad)
    assert_clear(info, name)
    kind = specs_of(obj)[name][0]
    if kind.choices is not None:
        assert "did you mean" in str(info.value), info.value
    if isinstance(bad, float) and math.isnan(bad):
        assert "nan" in str(info.value)


def test_the_suite_is_big_enough_and_counted_in_the_readme():
    assert len(CASES) > 500
    section = (Path(__file__).parents[1] / "README.md").read_text().split("## Bad input", 1)[1]
    assert f"{len(CASES) + len(STEP_CASES) + len(ATTEND_CASES):,} generated" in section, \
        "update the README's count of generated bad-input cases"


# --------------------------------------------------------------------------- attend: checked by hand, same kinds
def _qkv():
    return torch.randn(2, 3, 4), torch.randn(2, 5, 4), torch.randn(2, 5, 4)


ATTEND_CASES = [
    pytest.param(name, bad, id=f"attend({name}={bad!r})")
    for name, kind in (("dropout_p", V.PROBABILITY), ("scale", V.POSITIVE), ("query_offset", V.INT),
                       ("block_size", V.SIZE), ("backend", V.one_of(BACKENDS)),
                       ("normalize", V.one_of(("softmax", "sparsemax"))))
    for bad in bad_values(kind)
] + [pytest.param("score_mod", 3, id="attend(score_mod=3)"),
     pytest.param("score_mod", lambda s: s, id="attend(score_mod=1 argument)"),
     pytest.param("p", "0.1", id="dropout(p='0.1')"), pytest.param("p", 1.5, id="dropout(p=1.5)")]


@pytest.mark.parametrize("name,bad", ATTEND_CASES)
def test_attend_and_dropout_refuse_bad_arguments_by_name(name, bad):
    with pytest.raises((ValueError, TypeError)) as info:
        if name == "p":
            dropout(torch.ones(3), bad)
        else:
            options = {"backend": "chunked"} if name == "block_size" else {}
            attnzoo.attend(*_qkv(), **{**options, name: bad})
    assert_clear(info, name)


# --------------------------------------------------------------------------- step-wise: the second step
def _first_variants() -> list:
    """One (info, options) per registered step-wise mechanism."""
    seen, out = set(), []
    for p in variants(step_wise=True):
        info, options = p.values
        if info.name not in seen:
            seen.add(info.name)
            out.append((info, options))
    return out


STEP_WISE = _first_variants()
STEP_CASES = [pytest.param(info, options, what, id=f"{info.name}-{what}")
              for info, options in STEP_WISE for what in ("query", "values", "key_mask", "state")]


def _memory(m):
    keys, _, key_mask = step_memory(6, torch.float32)
    return torch.randn(B, 6, m.key_dim), torch.randn(B, 6, m.value_dim), key_mask


def _other_state(info):
    """The state of a registered step-wise mechanism of another class."""
    other = next(i for i, _ in STEP_WISE if i.cls is not info.cls)
    m = build(other, {})
    keys, values, key_mask = _memory(m)
    return m.initial_state(keys, values, key_mask)


@pytest.mark.parametrize("info,options,what", STEP_CASES)
def test_a_bad_second_step_is_refused_by_name(info, options, what):
    m = build(info, options)
    keys, values, key_mask = _memory(m)
    state = m.initial_state(keys, values, key_mask)
    query = torch.randn(B, m.query_dim)
    _, _, state = m(query, keys, values, key_mask, state)  # the first step is fine
    step = dict(query=query, keys=keys, values=values, key_mask=key_mask, state=state)
    if what == "query":
        step["query"] = torch.randn(B, m.query_dim + 1)
    elif what == "values":
        step["values"] = torch.randn(B, 6, m.value_dim + 1)
    elif what == "key_mask":
        step["key_mask"] = key_mask.float()
    else:
        step["state"] = _other_state(info)
    with pytest.raises((ValueError, TypeError)) as info_:
        m(step["query"], step["keys"], step["values"], step["key_mask"], step["state"])
    assert_clear(info_, what)
