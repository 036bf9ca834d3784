"""What every model builder shares: ``--set KEY=VALUE`` keys checked against a model's config, and the
head-sharing names (``mha``, ``gqa``, ``mqa``) turned into a key/value head count."""

from __future__ import annotations

from dataclasses import fields

from ..core import validate as V
from ..registry import mechanisms


def check_options(kind: str, options: dict | None, config_cls, fixed: set[str]) -> None:
    """Every --set KEY must be a field of the model's config (closest name proposed); ``fixed`` are set by the
    task (vocabulary sizes, the attention slot) and refused."""
    known = {f.name for f in fields(config_cls)} - fixed
    for key in options or {}:
        if key not in known:
            V.check_choice(f"{kind} model option (--set KEY=VALUE)", key, sorted(known))


@V.checked(attention=V.one_of(lambda: [i.name for i in mechanisms()]))
def kv_heads_for(attention: str, options: dict, default_heads: int) -> dict:
    """mha/gqa/mqa -> the model's num_kv_heads option (gqa: a quarter of the query heads, at least one)."""
    options = dict(options)
    if attention == "mqa":
        options["num_kv_heads"] = 1
    elif attention == "gqa" and options.get("num_kv_heads") is None:
        options["num_kv_heads"] = max(1, options.get("num_heads", default_heads) // 4)
    return options
