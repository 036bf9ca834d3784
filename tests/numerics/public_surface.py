"""The public surface of attnzoo, discovered rather than listed: shared by the no-in-place test and the generated
bad-input suite, so a new public name is found by both.

``__all__`` of the packages, every public name defined in a module of ``attnzoo.models`` and in
``attnzoo.core.masks``, and every registered mechanism's class; callables from attnzoo only.
"""

from __future__ import annotations

import importlib
import pkgutil

import attnzoo
import attnzoo.models

PACKAGES = ["attnzoo", "attnzoo.core", "attnzoo.positions", "attnzoo.mechanisms"]
EXTRA_MODULES = ["attnzoo.core.masks"]
#: methods neither test treats as public entry points
SKIP_METHODS = {"extra_repr", "num_parameters", "from_dict", "to_dict", "reset"}


def public_objects() -> list:
    objs = []
    for name in PACKAGES:
        mod = importlib.import_module(name)
        objs += [getattr(mod, n) for n in mod.__all__]
    for name in EXTRA_MODULES + [f"attnzoo.models.{m.name}" for m in pkgutil.iter_modules(attnzoo.models.__path__)]:
        mod = importlib.import_module(name)
        objs += [v for n, v in vars(mod).items() if not n.startswith("_") and getattr(v, "__module__", None) == name]
    objs += [info.cls for info in attnzoo.mechanisms()]
    return [o for o in objs if callable(o) and getattr(o, "__module__", "").startswith("attnzoo")]
