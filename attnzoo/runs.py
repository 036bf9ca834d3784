"""Deprecated: ``attnzoo.runs`` became :mod:`attnzoo.lab` (``attnzoo.load``, ``attnzoo.Run``); the image
classifier predictor moved to :mod:`attnzoo.tasks.classify`. Importing this module warns and forwards."""

from __future__ import annotations

import warnings

from .lab import Run, load

warnings.warn("attnzoo.runs is deprecated: use attnzoo.load / attnzoo.Run (attnzoo.lab); ImageClassifier is in "
              "attnzoo.tasks.classify", DeprecationWarning, stacklevel=2)


def __getattr__(name: str):
    if name == "ImageClassifier":
        from .tasks.classify import ImageClassifier

        return ImageClassifier
    raise AttributeError(f"module 'attnzoo.runs' has no attribute {name!r}")


__all__ = ["Run", "load"]  # and ImageClassifier, forwarded by __getattr__
