"""Run directories and checkpoints.

A run directory holds ``config.json`` and ``checkpoint.pt`` (the best weights),
both carrying ``format_version``, and ``train_state.pt``: the whole training
state that ``attnzoo train TASK --resume DIR`` continues from (weights,
optimizer, step, data position, random states, records; see
:mod:`attnzoo.training.trainer`). Checkpoints hold only tensors, numbers, strings, lists and
dicts, are written atomically (temporary file in the same directory, fsync,
then rename: a run killed mid-write leaves the previous checkpoint intact) and
are read with ``torch.load(weights_only=True)``, which never executes code.
"""

from __future__ import annotations

import json
import os
import pickle
import warnings
import zipfile
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


def article(word: object) -> str:
    """The article before a name read aloud: "a g2p run", "an lm run", "an eval run" (a name without vowels is
    spelt letter by letter, so its first letter's name decides)."""
    word = str(word).lower()
    if not any(c in "aeiouy" for c in word):
        return "an" if word[:1] in tuple("aefhilmnorsx") else "a"
    return "an" if word[:1] in tuple("aeiou") else "a"


def _retrain(task: object) -> str:
    """How to make the run again: the task's own train command where config.json names one."""
    named = isinstance(task, str) and task.replace("-", "_").isidentifier()
    return f"`attnzoo train {task} --out DIR`" if named else "`attnzoo train TASK --out DIR`"


def _why_unreadable(path: Path, error: Exception) -> str:
    """Why torch.load(weights_only=True) failed, in words, from the file's first bytes and its zip structure."""
    try:
        size = path.stat().st_size
        with path.open("rb") as f:
            head = f.read(4)
    except OSError as e:
        return f"it cannot be opened ({e.strerror or e})"
    if size == 0:
        return "it is empty (0 bytes)"
    if head.startswith(b"PK\x03\x04"):
        if not zipfile.is_zipfile(path):
            return f"it is truncated ({size:,} bytes, its end is missing: an interrupted copy?)"
        if isinstance(error, pickle.UnpicklingError):
            return ("it holds Python objects other than tensors, numbers and strings, which attnzoo refuses to "
                    "load (torch.load(weights_only=True) never runs code from a file): it was not written by attnzoo")
        return f"it is corrupted ({type(error).__name__})"
    if head[:1] == b"\x80":
        return "it is a plain pickle or a legacy torch file, not a checkpoint written by attnzoo"
    return "it is not a PyTorch checkpoint (random or corrupted bytes, or another kind of file)"


def _check_version(path: Path, obj: object, task: object) -> None:
    if not isinstance(obj, dict) or "format_version" not in obj:
        if isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            what = "a bare state_dict (names -> tensors)"
        elif isinstance(obj, dict):
            what = "a dict without attnzoo's keys"
        else:
            what = f"a {type(obj).__name__}"
        raise RunDirError(f"{path} is not an attnzoo file (no format_version; it holds {what}); attnzoo reads the "
                          f"run directories that {_retrain(task)} writes")
    version = obj["format_version"]
    if version != FORMAT_VERSION:
        if isinstance(version, int) and version > FORMAT_VERSION:
            fix = "upgrade attnzoo (pip install -U attnzoo) to read it"
        else:
            fix = f"retrain with this version: {_retrain(task)}"
        raise RunDirError(f"{path} has format version {version!r}, this attnzoo reads version {FORMAT_VERSION}; "
                          f"{fix}")


def _read_config(run_dir: Path) -> dict:
    """config.json of a run directory (checked: present, JSON, of this format version)."""
    if run_dir.is_file():
        raise RunDirError(f"{str(run_dir)!r} is a file, not a run directory; pass the directory that holds "
                          "config.json and checkpoint.pt (the --out of `attnzoo train`)")
    if not run_dir.is_dir():
        raise RunDirError(f"run directory {str(run_dir)!r} does not exist; "
                          "train one with `attnzoo train TASK --out DIR`")
    cfg_path = run_dir / "config.json"
    if not cfg_path.is_file():
        raise RunDirError(f"{str(run_dir)!r} is not a finished attnzoo run: config.json is missing; pass the "
                          "directory that `attnzoo train --out DIR` wrote")
    try:
        config = json.loads(cfg_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise RunDirError(f"{cfg_path} is not readable JSON ({str(e).splitlines()[0][:120]}); copy it again "
                          "from the original run directory, or retrain") from e
    task = config.get("task") if isinstance(config, dict) else None
    _check_version(cfg_path, config, task)
    return config


def _load_tensors(path: Path, map_location, fix: str) -> Any:
    """torch.load(weights_only=True), or a RunDirError that says why the file is unreadable and ``fix``."""
    try:
        with warnings.catch_warnings():  # torch's note on an unknown pickle protocol: the error below says it all
            warnings.filterwarnings("ignore", message=".*pickle protocol", category=UserWarning)
            return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # truncated, corrupted, foreign, or pickled code that weights_only refuses
        raise RunDirError(f"{path} cannot be read: {_why_unreadable(path, e)}; {fix}") from e


TRAIN_STATE = "train_state.pt"


def load_train_state(run_dir: str | os.PathLike, map_location: str | torch.device = "cpu") -> tuple[dict, dict]:
    """(config, training state) of a run to resume, or a RunDirError whose one line says what is wrong and the fix.

    Read with ``torch.load(weights_only=True)`` like every checkpoint."""
    run_dir = Path(run_dir)
    config = _read_config(run_dir)
    task = config.get("task")
    path = run_dir / TRAIN_STATE
    fresh = _retrain(task).replace("--out DIR", f"--out {run_dir}")
    if not path.is_file():
        raise RunDirError(f"{str(run_dir)!r} cannot be resumed: {TRAIN_STATE} is missing (the run was stopped "
                          "before its first checkpoint, or written by an attnzoo without resumable runs); start "
                          f"it again with {fresh}")
    state = _load_tensors(path, map_location, f"the run cannot be resumed from it: copy {TRAIN_STATE} again from "
                          f"where the run was written, or start it again with {fresh}")
    _check_version(path, state, task)
    if state.get("task") != task:
        raise RunDirError(f"{str(run_dir)!r} mixes files of two runs: config.json is {article(task)} {task!r} run "
                          f"but {TRAIN_STATE} holds {article(state.get('task'))} {state.get('task')!r} run; copy "
                          "both files from the same run directory")
    if not isinstance(state.get("trainer"), dict) or "step" not in state["trainer"]:
        raise RunDirError(f"{path} holds no training state (no trainer step); it was not written by "
                          f"`attnzoo train`: start the run again with {fresh}")
    return config, state["trainer"]


def load_run(run_dir: str | os.PathLike, map_location: str | torch.device = "cpu") -> tuple[dict, dict]:
    """(config, checkpoint) of a run directory, or a RunDirError whose one line says what is wrong and the fix.

    The checkpoint is read with ``torch.load(weights_only=True)``: tensors, numbers, strings, lists and
    dicts only; a file carrying other Python objects (which could run code) is refused, never executed.
    """
    run_dir = Path(run_dir)
    config = _read_config(run_dir)
    task = config.get("task")
    ckpt_path = run_dir / "checkpoint.pt"
    if not ckpt_path.is_file():
        raise RunDirError(f"{str(run_dir)!r} is not a finished attnzoo run: checkpoint.pt is missing (training "
                          f"stopped before its first evaluation?); retrain with {_retrain(task)}")
    ckpt = _load_tensors(ckpt_path, map_location, f"copy the run directory again or retrain with {_retrain(task)}")
    _check_version(ckpt_path, ckpt, task)
    if "task" in ckpt and task is not None and ckpt["task"] != task:
        other = ckpt["task"]
        raise RunDirError(f"{str(run_dir)!r} mixes files of two runs: config.json is {article(task)} {task!r} run "
                          f"but checkpoint.pt holds {article(other)} {other!r} model; copy both files from the "
                          "same run directory")
    return config, ckpt
