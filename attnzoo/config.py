"""A config dataclass's round trip through JSON (config.json, checkpoints)."""

from __future__ import annotations

from dataclasses import asdict, fields


class ConfigMixin:
    """``to_dict()`` for JSON; ``from_dict()`` ignores keys of other versions instead of failing."""

    def to_dict(self) -> dict:
        return asdict(self)  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls, d: dict):
        known = {f.name for f in fields(cls)}  # type: ignore[arg-type]
        return cls(**{k: v for k, v in d.items() if k in known})
