"""What every task's run shares: its options' common checks, and its run directory.

``TrainOptions`` holds the options every task has (seed, budget, batch size,
learning rate, device, precision, checkpoint period) and checks them once;
tasks subclass it with their own fields. ``RunDirectory`` writes
``config.json``, appends to ``metrics.jsonl``, saves ``checkpoint.pt``
(atomically) whenever an evaluation is the best so far, saves the training
state to ``train_state.pt`` when the trainer asks, and writes ``metrics.json``;
``RunDirectory(..., resume=state)`` reopens a run to continue it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Callable

import torch

from ..config import ConfigMixin
from ..core import validate as V
from . import distributed
from .checkpoint import FORMAT_VERSION, TRAIN_STATE, RunDirError, load_run, save_checkpoint, write_json
from .trainer import check_ema_decay

DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("auto", "bf16", "fp32")


@dataclass
class TrainOptions(ConfigMixin):
    seed: int = 0  # data order, held-out selection, initialisation
    minutes: float | None = None  # wall-clock training budget (None and no epochs: the task's default)
    epochs: float | None = None  # or a fixed amount of work
    batch_size: int = 64  # examples per step
    lr: float | None = None  # peak AdamW learning rate (warm-up, cosine decay); None: the task's default
    eval_every_minutes: float = 1.0  # dev evaluation period during training
    device: str = "auto"  # auto | cpu | cuda
    precision: str = "auto"  # training matmuls: auto (bf16 where the hardware has it) | bf16 | fp32
    checkpoint_every_minutes: float = 5.0  # training state (train_state.pt) saved this often, on stop and at the end
    checkpoint_every_steps: int | None = None  # and every this many steps (for tests: minutes are too coarse)
    eval_every_steps: int | None = None  # and evaluations every this many steps (for tests: a loss curve)
    ema_decay: float = 0.0  # weight averaging: evaluate and keep an exponential moving average of the weights
    #                         with this decay per step (0: off); helps mid-run evaluations more than annealed ends

    default_minutes = 8.0  # class attributes a task overrides (not fields)
    default_lr = 1e-3

    def __post_init__(self):
        V.check_choice("device", self.device, DEVICES)
        V.check_choice("precision", self.precision, PRECISIONS)
        if self.minutes is not None and self.epochs is not None:
            raise ValueError("give --minutes or --epochs, not both")
        if self.minutes is None and self.epochs is None:
            self.minutes = self.default_minutes
        if self.lr is None:
            self.lr = self.default_lr
        check_ema_decay(self.ema_decay)
        for name in ("batch_size", "lr", "eval_every_minutes", "minutes", "epochs", "checkpoint_every_minutes",
                     "checkpoint_every_steps", "eval_every_steps"):
            if getattr(self, name) is not None:
                V.check_positive(name, getattr(self, name))


@dataclass
class Seq2SeqOptions(TrainOptions):
    """What every encoder-decoder task shares (g2p, translate)."""

    label_smoothing: float = 0.1  # regularises the output softmax
    grad_clip: float = 1.0  # max gradient norm
    beam_size: int = 5  # test decoding (dev evaluations during training are greedy)
    length_penalty: float = 1.0  # beam: score / length ** penalty
    model: str = "rnn"  # architecture: rnn | transformer | convs2s

    default_lrs = {"rnn": 1e-3, "transformer": 1e-3, "convs2s": 1e-3}  # peak lr per architecture (a task overrides)

    def __post_init__(self):
        from ..models.factory import MODELS

        V.check_choice("model", self.model, MODELS)
        if self.lr is None:
            self.lr = self.default_lrs[self.model]
        super().__post_init__()
        V.check_positive("beam_size", self.beam_size)



#: options added after runs were first saved, with the value that gives a run saved without them its behaviour
ADDED_OPTIONS = {"ema_decay": 0.0}

#: task options a resumed run may change: where it runs and how often it saves, never what it trains
RESUME_MAY_CHANGE = ("device", "checkpoint_every_minutes", "checkpoint_every_steps", "eval_every_steps")


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
    return out


def decode_speed(items: int, seconds: float, unit: str) -> dict:
    """What metrics.json says of decoding: test items (words, verses, sources) decoded per second, beam
    search and scoring included."""
    return {"decode_items_per_second": round(items / max(seconds, 1e-9), 1), "decode_unit": unit}


def load_task_run(run_dir: str | Path, task: str, build: Callable[[dict, dict], Any]) -> tuple[dict, Any]:
    """(config, build(config, checkpoint)) for a run of ``task``; RunDirError if it is not one."""
    config, ckpt = load_run(run_dir)
    if config.get("task") != task:
        raise RunDirError(f"{run_dir} is a {config.get('task')!r} run, not a {task} run")
    try:
        return config, build(config, ckpt)
    except (KeyError, TypeError, RuntimeError, ValueError) as e:
        raise RunDirError(f"{run_dir}/checkpoint.pt does not hold a {task} model "
                          f"({type(e).__name__}: {str(e).splitlines()[0][:200]})") from None


def resolve_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was asked for but torch.cuda.is_available() is False; use --device cpu")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return distributed.device_for(name)  # under torchrun: GPU LOCAL_RANK


def check_options(kind: str, options: dict | None, config_cls, fixed: set[str]) -> None:
    """Every --set KEY must be a field of the model's config (closest name proposed)."""
    known = {f.name for f in fields(config_cls)} - fixed
    for key in options or {}:
        if key not in known:
            V.check_choice(f"{kind} model option (--set KEY=VALUE)", key, sorted(known))


def kv_heads_for(attention: str, options: dict, default_heads: int) -> dict:
    """mha/gqa/mqa -> the model's num_kv_heads option."""
    options = dict(options)
    if attention == "mqa":
        options["num_kv_heads"] = 1
    elif attention == "gqa" and options.get("num_kv_heads") is None:
        options["num_kv_heads"] = max(1, options.get("num_heads", default_heads) // 4)
    return options
