"""What every task's run shares on disk: its run directory.

``RunDirectory`` writes
``config.json``, appends to ``metrics.jsonl``, saves ``checkpoint.pt``
(atomically) whenever an evaluation is the best so far, saves the training
state to ``train_state.pt`` when the trainer asks, and writes ``metrics.json``;
``RunDirectory(..., resume=state)`` reopens a run to continue it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import torch

from . import distributed
from .checkpoint import FORMAT_VERSION, TRAIN_STATE, RunDirError, save_checkpoint, write_json
from .options import ADDED_OPTIONS, RESUME_MAY_CHANGE, TrainOptions

__all__ = ["RunDirectory", "TrainOptions", "ADDED_OPTIONS", "RESUME_MAY_CHANGE", "trainer_options", "run_metrics",
           "decode_speed", "resolve_device"]


class RunDirectory:
    """One run's files: config.json, metrics.jsonl, checkpoint.pt, train_state.pt, metrics.json.

    Under torchrun only rank 0 writes (and checks a resumed run's config); on the other ranks every
    method is a no-op, so task code calls them unconditionally."""

    def __init__(self, out: str | Path, config: dict, state: Callable[[], dict], resume: dict | None = None):
        """``state()`` returns what a checkpoint holds besides the config (weights, vocabularies).

        ``resume``: the training state of the run in ``out`` to continue (from
        :func:`~attnzoo.training.checkpoint.load_train_state`); ``config`` must then
        describe the same run (the same model, data and options), else RunDirError."""
        self.path = Path(out)
        self.config = {"format_version": FORMAT_VERSION, **config}
        self.state = state
        self.writes = distributed.current().is_main  # False on ranks other than 0
        if not self.writes:
            return
        self.path.mkdir(parents=True, exist_ok=True)
        if resume is None:
            write_json(self.path / "config.json", self.config)
            (self.path / "metrics.jsonl").write_text("")
            (self.path / TRAIN_STATE).unlink(missing_ok=True)  # a former run's state must never be resumed
            return
        saved = json.loads((self.path / "config.json").read_text(encoding="utf-8"))
        now = json.loads(json.dumps(self.config))
        for key in sorted(set(saved) | set(now)):
            old, new = saved.get(key), now.get(key)
            if key == "task_config" and isinstance(old, dict) and isinstance(new, dict):
                old = {k: v for k, v in {**ADDED_OPTIONS, **old}.items() if k not in RESUME_MAY_CHANGE}
                new = {k: v for k, v in {**ADDED_OPTIONS, **new}.items() if k not in RESUME_MAY_CHANGE}
            if old != new:
                what = key
                if isinstance(old, dict) and isinstance(new, dict):
                    what = next(f"{key}.{k}" for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k))
                    old, new = old.get(what.split(".", 1)[1]), new.get(what.split(".", 1)[1])
                raise RunDirError(f"{self.path} cannot be resumed as asked: its {what} was {old!r} and would now be "
                                  f"{new!r} (a resumed run keeps its model, data and options; did the data or "
                                  "attnzoo change since it started?)")
        self.config = saved
        # the evaluations the saved state knows of: later ones (after its step) will be made again
        (self.path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in resume["records"]))

    def save(self, record: dict | None = None) -> None:
        if not self.writes:
            return
        save_checkpoint(self.path / "checkpoint.pt", {"task": self.config["task"],
                                                      "config": json.loads(json.dumps(self.config)),
                                                      "record": record or {}, **self.state()})

    def save_train_state(self, state: dict) -> None:
        """The trainer's on_checkpoint: the whole training state, atomically (a kill leaves the previous one)."""
        if not self.writes:
            return
        save_checkpoint(self.path / TRAIN_STATE, {"task": self.config["task"], "trainer": state})

    def on_record(self, record: dict, is_best: bool) -> None:
        """The trainer's callback: log every evaluation, checkpoint the best."""
        if not self.writes:
            return
        with (self.path / "metrics.jsonl").open("a") as f:
            f.write(json.dumps(record) + "\n")
        if is_best:
            self.save(record)

    def write_metrics(self, metrics: dict) -> None:
        if not self.writes:
            return
        write_json(self.path / "metrics.json", metrics)


def trainer_options(cfg: TrainOptions, run: RunDirectory) -> dict:
    """The Trainer keywords that make a task's run resumable (its checkpoints go to ``run``)."""
    return dict(on_checkpoint=run.save_train_state, checkpoint_every_minutes=cfg.checkpoint_every_minutes,
                checkpoint_every_steps=cfg.checkpoint_every_steps, eval_every_steps=cfg.eval_every_steps,
                ema_decay=cfg.ema_decay)


def run_metrics(result) -> dict:
    """What metrics.json says of how training went: stops, resumes and throughput."""
    out = {"interrupted": result.interrupted}
    if result.stopped_by:
        out["stopped_by"] = result.stopped_by
    if result.resumed_from is not None:
        out["resumed_from_step"] = result.resumed_from
    if result.items_per_second is not None:  # training throughput, evaluations excluded (this process's steps)
        out["train_items_per_second"] = round(result.items_per_second, 1)
        out["train_unit"] = result.unit
    if result.peak_bytes is not None:  # the process's peak while training (CPU: resident set; CUDA: allocated)
        out["train_peak_mib"] = round(result.peak_bytes / 2 ** 20, 1)
    return out


def decode_speed(items: int, seconds: float, unit: str) -> dict:
    """What metrics.json says of decoding: test items (words, verses, sources) decoded per second, beam
    search and scoring included."""
    return {"decode_items_per_second": round(items / max(seconds, 1e-9), 1), "decode_unit": unit}


def resolve_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was asked for but torch.cuda.is_available() is False; use --device cpu")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return distributed.device_for(name)  # under torchrun: GPU LOCAL_RANK
