"""Run directories and checkpoints.

A run directory holds ``config.json`` and ``checkpoint.pt``, both carrying
``format_version``. Checkpoints hold only tensors, numbers, strings, lists and
dicts, are written atomically (temporary file in the same directory, fsync,
then rename: a run killed mid-write leaves the previous checkpoint intact) and
are read with ``torch.load(weights_only=True)``, which never executes code.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from ..fileio import atomic_write_bytes

FORMAT_VERSION = 1


class RunDirError(ValueError):
    """A run directory that cannot be read: missing, incomplete, corrupted or of another format."""


def save_checkpoint(path: str | os.PathLike, payload: dict[str, Any]) -> None:
    payload = {"format_version": FORMAT_VERSION, **payload}
    atomic_write_bytes(path, lambda f: torch.save(payload, f))


def write_json(path: str | os.PathLike, obj: Any) -> None:
    data = (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode()
    atomic_write_bytes(path, lambda f: f.write(data))


def load_run(run_dir: str | os.PathLike, map_location: str | torch.device = "cpu") -> tuple[dict, dict]:
    """(config, checkpoint) of a run directory, or a RunDirError that says what is wrong."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunDirError(f"run directory {str(run_dir)!r} does not exist; "
                          "train one with `attnzoo train g2p --out DIR`")
    cfg_path, ckpt_path = run_dir / "config.json", run_dir / "checkpoint.pt"
    for p in (cfg_path, ckpt_path):
        if not p.is_file():
            raise RunDirError(f"{str(run_dir)!r} is not a finished attnzoo run: {p.name} is missing")
    try:
        config = json.loads(cfg_path.read_text())
    except (OSError, ValueError) as e:
        raise RunDirError(f"{cfg_path} is not readable JSON ({e})") from None
    try:
        ckpt = torch.load(ckpt_path, map_location=map_location, weights_only=True)
    except Exception as e:  # truncated, corrupted, or pickled code that weights_only refuses
        raise RunDirError(f"{ckpt_path} cannot be read as an attnzoo checkpoint "
                          f"({type(e).__name__}: {str(e).splitlines()[0][:200]})") from None
    for name, obj in (("config.json", config), ("checkpoint.pt", ckpt)):
        if not isinstance(obj, dict) or "format_version" not in obj:
            raise RunDirError(f"{run_dir / name} is not an attnzoo file (no format_version)")
        if obj["format_version"] != FORMAT_VERSION:
            raise RunDirError(f"{run_dir / name} has format version {obj['format_version']}, this attnzoo "
                              f"reads version {FORMAT_VERSION}; retrain with this version")
    return config, ckpt
